#!/bin/bash
# soak.sh - runs the built daemon for a while under good load (plugboard-bench)
# while hostile peers attack it in parallel, and checks that no good request
# failed and that the worker's memory and descriptors did not grow.
#
# Usage: tests/soak.sh [SECONDS]      (default 60; not part of make check)
# The build tree is $PB_BUILD, or the current directory. Nothing is built.
# Exit status: 0 pass, 1 a check failed, 2 usage or setup error.

set -u
. "$(dirname "$0")/lib.sh"

DURATION=${1:-60}
BUILD=${PB_BUILD:-$(pwd)}
DAEMON=$BUILD/daemon/plugboard
BENCH=$BUILD/tools/plugboard-bench
PLUGINS=$BUILD/plugins/.libs
HOST=127.0.0.1
IDLE_TIMEOUT=3

die() { echo "soak: $*" >&2; exit 2; }

case $DURATION in
    ''|*[!0-9]*) die "usage: soak.sh [SECONDS]" ;;
esac
[ "$DURATION" -ge 5 ] || die "run for at least 5 seconds"
for f in "$DAEMON" "$BENCH"; do
    [ -x "$f" ] || die "$f not found: set PB_BUILD to a build tree"
done
[ -f "$PLUGINS/echo.so" ] || die "$PLUGINS/echo.so not found: set PB_BUILD to a build tree"
command -v nc >/dev/null || die "nc (netcat) is needed for the attackers"

# A sanitizer build keeps freed memory in quarantine, which would read as
# growth; without it the allocator reuses memory as a normal build does.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0:thread_local_quarantine_size_kb=0"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pbsoak.XXXXXX") || die "mktemp failed"
MASTER=
ATTACKERS=()

cleanup() {
    for pid in "${ATTACKERS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    if [ -n "$MASTER" ] && kill -0 "$MASTER" 2>/dev/null; then
        kill -KILL "$MASTER" 2>/dev/null
    fi
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 2' INT TERM


write_config() {
    cat >"$WORK/plugboard.conf" <<EOF
pidfile = "$WORK/plugboard.pid";
workers = 1;
log = { level = "info"; target = "stderr"; };
limits = { idle_timeout = $IDLE_TIMEOUT; max_pending_output = 1048576; };
listeners = (
  { name = "app";    address = "$HOST"; port = $FRAME_PORT; framing = "frame"; },
  { name = "telnet"; address = "$HOST"; port = $LINE_PORT; framing = "line"; plugin = "echo"; }
);
EOF
    shipped_plugins_and_routes "$PLUGINS" >>"$WORK/plugboard.conf"
}


start_daemon() {
    local attempt i
    for attempt in 1 2 3 4 5; do
        FRAME_PORT=$(free_port)
        LINE_PORT=$(free_port)
        [ "$FRAME_PORT" != "$LINE_PORT" ] || continue
        write_config
        "$DAEMON" -f -c "$WORK/plugboard.conf" 2>"$WORK/daemon.log" &
        MASTER=$!
        for i in $(seq 300); do
            if listening "$FRAME_PORT" && listening "$LINE_PORT"; then
                return 0
            fi
            kill -0 "$MASTER" 2>/dev/null || break
            sleep 0.1
        done
        wait "$MASTER"
        local status=$?
        MASTER=
        [ "$status" -eq 1 ] || { cat "$WORK/daemon.log" >&2; die "the daemon exited with status $status"; }
    done
    die "the daemon could not bind its ports in 5 attempts"
}

worker_pid() {
    local pids i
    for i in $(seq 100); do
        pids=$(pgrep -P "$MASTER")
        [ "$(echo "$pids" | wc -w)" -eq 1 ] && { echo "$pids"; return; }
        sleep 0.1
    done
    die "the daemon has not exactly one worker: $pids"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
fd_count() { ls "/proc/$1/fd" | wc -l; }

# A frame: u16 big-endian header length, Python-style JSON header, content.
frame_file() {  # TYPE CONTENT-FILE OUTPUT
    local size header h
    size=$(stat -c %s "$2")
    header="{\"byteorder\": \"little\", \"content-type\": \"$1\", \"content-encoding\": \"utf-8\", \"content-length\": $size}"
    h=${#header}
    { printf "\\x$(printf %02x $((h >> 8)))\\x$(printf %02x $((h & 255)))"
      printf '%s' "$header"
      cat "$2"; } >"$3"
}

raw_header() {  # HEADER-TEXT OUTPUT: a length prefix and the header, no content
    local h=${#1}
    { printf "\\x$(printf %02x $((h >> 8)))\\x$(printf %02x $((h & 255)))"
      printf '%s' "$1"; } >"$2"
}

prepare_payloads() {
    head -c 65536 /dev/zero | tr '\0' a >"$WORK/64k.txt"
    frame_file text/plain "$WORK/64k.txt" "$WORK/echo64k.frame"
    for i in $(seq 256); do cat "$WORK/echo64k.frame"; done >"$WORK/echo16m.frames"
    head -c 100000 /dev/zero | tr '\0' b >"$WORK/100k.txt"
    frame_file text/plain "$WORK/100k.txt" "$WORK/slow.frame"
    printf '\0\0' >"$WORK/bad0"
    raw_header 'not json at all' "$WORK/bad1"
    raw_header '[1, 2, 3]' "$WORK/bad2"
    raw_header '{"byteorder": "middle", "content-type": "a", "content-encoding": "b", "content-length": 0}' "$WORK/bad3"
    raw_header '{"byteorder": "little", "content-type": "a", "content-encoding": "b", "content-length": -1}' "$WORK/bad4"
    raw_header '{"byteorder": "little", "content-type": "a", "content-encoding": "b", "content-length": 1.5}' "$WORK/bad5"
    raw_header '{"byteorder": "little", "content-type": "a", "content-encoding": "b", "content-length": 99999999999}' "$WORK/bad6"
    printf '{{{{{' >"$WORK/not.json"
    frame_file text/json "$WORK/not.json" "$WORK/bad7"
}

# Each attacker loops until the deadline and counts its attacks in a file.
attack_random() {  # PORT COUNTER
    local n=0
    while [ "$(date +%s)" -lt "$DEADLINE" ]; do
        head -c 4096 /dev/urandom | nc -N -w 3 "$HOST" "$1" >/dev/null 2>&1
        n=$((n + 1)); echo "$n" >"$2"
    done
}

attack_malformed() {  # COUNTER
    local n=0 f
    while [ "$(date +%s)" -lt "$DEADLINE" ]; do
        for f in "$WORK"/bad?; do
            nc -N -w 3 "$HOST" "$FRAME_PORT" <"$f" >/dev/null 2>&1
            n=$((n + 1))
        done
        echo "$n" >"$1"
    done
}

# Trickles a 100 kB frame one byte every half second until the daemon
# closes the connection, then starts again.
attack_slowloris() {  # COUNTER
    local n=0 i
    trap '' PIPE
    while [ "$(date +%s)" -lt "$DEADLINE" ]; do
        exec 3<>"/dev/tcp/$HOST/$FRAME_PORT" || { sleep 0.5; continue; }
        n=$((n + 1)); echo "$n" >"$1"
        i=0
        while [ "$(date +%s)" -lt "$DEADLINE" ]; do
            dd if="$WORK/slow.frame" bs=1 skip=$i count=1 status=none >&3 2>/dev/null || break
            i=$((i + 1))
            sleep 0.5
        done
        exec 3>&-
    done
}

# Pipelines 16 MiB of 64 KiB echo requests (more than the kernel buffers
# hold, so the daemon has to stop reading) and never reads; the daemon's
# idle timeout or the attacker's own closes it with the replies unread.
attack_stuck() {  # COUNTER
    local n=0
    trap '' PIPE
    while [ "$(date +%s)" -lt "$DEADLINE" ]; do
        exec 3<>"/dev/tcp/$HOST/$FRAME_PORT" || { sleep 0.5; continue; }
        n=$((n + 1)); echo "$n" >"$1"
        timeout 5 cat "$WORK/echo16m.frames" >&3 2>/dev/null
        exec 3>&-
    done
}

json_number() {  # KEY FILE
    sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p" "$2" | head -n 1
}

# Good load and every attacker for $1 seconds; bench reports into
# $WORK/bench.KIND, attack counts into $WORK/n.*, exit statuses in BENCH_STATUS.
run_phase() {
    local seconds=$1 i pid
    rm -f "$WORK"/n.* "$WORK"/bench.*
    DEADLINE=$(( $(date +%s) + seconds ))
    for i in 1 2 3 4; do
        attack_random "$FRAME_PORT" "$WORK/n.random.$i" &
        ATTACKERS+=($!)
    done
    attack_random "$LINE_PORT" "$WORK/n.random.line" &
    ATTACKERS+=($!)
    attack_malformed "$WORK/n.malformed" &
    ATTACKERS+=($!)
    for i in $(seq 20); do
        attack_slowloris "$WORK/n.slowloris.$i" &
        ATTACKERS+=($!)
    done
    for i in 1 2 3 4; do
        attack_stuck "$WORK/n.stuck.$i" &
        ATTACKERS+=($!)
    done

    "$BENCH" --json -q -c 20 -d "$seconds" "$HOST" "$FRAME_PORT" \
        >"$WORK/bench.search" 2>"$WORK/bench.search.err" &
    local b1=$!
    "$BENCH" --json -q -c 4 -P 8 -k echo -s 4k -d "$seconds" "$HOST" "$FRAME_PORT" \
        >"$WORK/bench.echo" 2>"$WORK/bench.echo.err" &
    local b2=$!
    "$BENCH" --json -q -c 4 -l -d "$seconds" "$HOST" "$LINE_PORT" \
        >"$WORK/bench.line" 2>"$WORK/bench.line.err" &
    local b3=$!
    BENCH_STATUS=
    for pid in $b1 $b2 $b3; do
        wait "$pid"
        BENCH_STATUS="$BENCH_STATUS $?"
    done
    for pid in "${ATTACKERS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    ATTACKERS=()
}

# The attackers' connections close within the idle timeout; waits until
# the worker holds no more than $1 descriptors (or gives up after a while).
settle() {
    local i
    for i in $(seq $(( (IDLE_TIMEOUT + 10) * 10 ))); do
        [ "$(fd_count "$WORKER")" -le "$1" ] && return
        sleep 0.1
    done
}

start_daemon
WORKER=$(worker_pid)
prepare_payloads
FDS_IDLE=$(fd_count "$WORKER")

# Warm-up: a short run of the same traffic sizes the allocator's arenas
# (glibc keeps freed memory for reuse), so that start and end compare
# steady states rather than an untouched process with a used one.
WARMUP=$(( DURATION / 6 > 5 ? DURATION / 6 : 5 ))
run_phase "$WARMUP"
settle "$FDS_IDLE"
# A worker with nothing open hands freed memory back within a second.
sleep 2
RSS_START=$(rss_kib "$WORKER")
FDS_START=$(fd_count "$WORKER")

run_phase "$DURATION"
settle "$FDS_START"
sleep 2
RSS_END=$(rss_kib "$WORKER")
FDS_END=$(fd_count "$WORKER")

FAIL=0
REQUESTS=0
ERRORS=0
for kind in search echo line; do
    r=$(json_number requests "$WORK/bench.$kind")
    e=$(json_number errors "$WORK/bench.$kind")
    c=$(json_number connect_errors "$WORK/bench.$kind")
    if [ -z "$r" ] || [ -z "$e" ] || [ -z "$c" ]; then
        echo "soak: FAIL: plugboard-bench ($kind) gave no report:"
        cat "$WORK/bench.$kind.err"
        FAIL=1
        continue
    fi
    echo "soak: good load $kind: $r requests, $e errors, $c connect errors," \
         "$(json_number rps "$WORK/bench.$kind") requests/s," \
         "p99 $(json_number p99 "$WORK/bench.$kind") us, max $(json_number max "$WORK/bench.$kind") us"
    REQUESTS=$((REQUESTS + r))
    ERRORS=$((ERRORS + e + c))
done
[ "$BENCH_STATUS" = " 0 0 0" ] || {
    echo "soak: FAIL: plugboard-bench exit statuses$BENCH_STATUS"; FAIL=1; }

count() { cat "$WORK"/n."$1"* 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
echo "soak: bad peers: $(count random) random-byte, $(count malformed) malformed," \
     "$(count slowloris) slowloris, $(count stuck) never-reading connections"
echo "soak: ${DURATION} s after a ${WARMUP} s warm-up; good-client requests $REQUESTS, errors $ERRORS"
echo "soak: worker RSS start ${RSS_START} KiB, end ${RSS_END} KiB"
echo "soak: worker fds start $FDS_START, end $FDS_END"

[ "$ERRORS" -eq 0 ] || { echo "soak: FAIL: good clients saw $ERRORS errors" ; FAIL=1; }
if [ "$RSS_END" -gt $(( RSS_START * 12 / 10 + 2048 )) ]; then
    echo "soak: FAIL: the worker's RSS grew more than 20% + 2 MiB"
    FAIL=1
fi
[ "$FDS_END" -le "$FDS_START" ] || { echo "soak: FAIL: the worker leaked descriptors" ; FAIL=1; }
if ! kill -0 "$MASTER" 2>/dev/null || [ "$(pgrep -P "$MASTER")" != "$WORKER" ]; then
    echo "soak: FAIL: the daemon or its worker died during the run"
    FAIL=1
fi
if grep -E -q 'Sanitizer|runtime error|restarting' "$WORK/daemon.log"; then
    echo "soak: FAIL: the daemon's log has a crash or sanitizer report:"
    grep -E -A 20 'Sanitizer|runtime error|restarting' "$WORK/daemon.log"
    FAIL=1
fi

kill -TERM "$MASTER"
wait "$MASTER"
STATUS=$?
MASTER=
if [ "$STATUS" -ne 0 ]; then
    echo "soak: FAIL: the daemon exited with status $STATUS after SIGTERM"
    FAIL=1
fi

if [ "$FAIL" -ne 0 ]; then
    echo "soak: FAIL"
    exit 1
fi
echo "soak: PASS"
