#!/bin/bash
# haproxy.sh - two plugboard daemons behind HAProxy in TCP mode, health
# checked over HTTP (`option httpchk GET /health` against each daemon's http
# listener): load through the proxy sees no error
# while one daemon reloads (SIGHUP) and the other is restarted the way an
# operator does it behind a proxy: taken out of rotation (haproxy's
# `set server ... state maint`), stopped (SIGTERM), started, put back.
# Short and bounded (about 15 s); prints "N passed, M failed"; exit 0 when
# all passed, 1 otherwise, 77 (skipped) without haproxy.
#
# Usage: BUILDDIR=path/to/build tests/haproxy.sh    (default BUILDDIR: .)
set -u
. "$(dirname "$0")/lib.sh"

BUILDDIR=$(cd "${BUILDDIR:-.}" && pwd)
DAEMON=$BUILDDIR/daemon/plugboard
CLI=$BUILDDIR/tools/plugboard-cli
BENCH=$BUILDDIR/tools/plugboard-bench
PLUGINS=$BUILDDIR/plugins/.libs
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

if [ ! -x "$HAPROXY" ]; then
    echo "haproxy.sh: haproxy not installed (apt-get install haproxy); skipped"
    exit 77
fi
for f in "$DAEMON" "$CLI" "$BENCH"; do
    [ -x "$f" ] || { echo "haproxy.sh: $f not built (set BUILDDIR)" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/plugboard-haproxy.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

passed=0 failed=0
check() {   # check NAME COMMAND...
    local name=$1
    shift
    if "$@"; then
        echo "ok: $name"
        passed=$((passed + 1))
    else
        echo "FAILED: $name"
        failed=$((failed + 1))
    fi
}


wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

PORT_A=$(free_port) PORT_B=$(free_port) PORT_P=$(free_port) PORT_ADMIN=$(free_port)
PORT_A_HTTP=$(free_port) PORT_B_HTTP=$(free_port)
declare -A DAEMON_PID

write_config() {   # write_config NAME PORT HTTP_PORT
    cat >"$WORK/$1.conf" <<EOF
plugin_dir = "$PLUGINS";
pidfile = "$WORK/$1.pid";
workers = 1;
log = { level = "info"; target = "stderr"; };
limits = { idle_timeout = 10.0; shutdown_timeout = 5.0; };
listeners = ( { name = "app"; address = "127.0.0.1"; port = $2; framing = "frame"; },
              { name = "health"; address = "127.0.0.1"; port = $3; framing = "http"; } );
plugins = ( { name = "search"; module = "search";
              settings = { entries = ( ("morpheus", "Follow the white rabbit. 🐰") ); }; } );
routes = ( { content_type = "text/json"; plugin = "search"; } );
EOF
}

start_daemon() {   # start_daemon NAME PORT
    "$DAEMON" -f -c "$WORK/$1.conf" 2>>"$WORK/$1.log" &
    DAEMON_PID[$1]=$!
    PIDS+=($!)
    wait_port "$2"
}

cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 4096
    stats socket ipv4@127.0.0.1:$PORT_ADMIN level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 20s
    timeout server 20s
    timeout check 1s
    retries 3
    option redispatch 1
frontend plugboard
    bind 127.0.0.1:$PORT_P
    default_backend daemons
backend daemons
    balance roundrobin
    # Each daemon's http listener: 200 while it serves, 503 once it stops.
    option httpchk GET /health
    http-check expect status 200
    server a 127.0.0.1:$PORT_A check port $PORT_A_HTTP inter 200ms fall 1 rise 2
    server b 127.0.0.1:$PORT_B check port $PORT_B_HTTP inter 200ms fall 1 rise 2
EOF

write_config a "$PORT_A" "$PORT_A_HTTP"
write_config b "$PORT_B" "$PORT_B_HTTP"
start_daemon a "$PORT_A" || { echo "haproxy.sh: daemon a did not start" >&2; cat "$WORK/a.log" >&2; exit 2; }
start_daemon b "$PORT_B" || { echo "haproxy.sh: daemon b did not start" >&2; cat "$WORK/b.log" >&2; exit 2; }

check "haproxy accepts the configuration" "$HAPROXY" -c -q -f "$WORK/haproxy.cfg"
"$HAPROXY" -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
wait_port "$PORT_P"
sleep 1   # both servers pass their first health checks

admin() {   # admin COMMAND: one command on haproxy's admin socket
    exec 3<>"/dev/tcp/127.0.0.1/$PORT_ADMIN" || return 1
    echo "$1" >&3
    cat <&3 >>"$WORK/admin.log"
    exec 3<&-
}

answer() { [ "$("$CLI" -w 5 127.0.0.1 "$1" search morpheus 2>&1)" = "Follow the white rabbit. 🐰" ]; }
check "a search through haproxy is answered" answer "$PORT_P"

# Load with a new connection per request, so that every request meets the
# backend choice again; meanwhile a reloads and b stops and comes back.
"$BENCH" -q --json -d 6 -c 8 --new-conn 127.0.0.1 "$PORT_P" >"$WORK/bench.json" 2>"$WORK/bench.err" &
bench=$!
sleep 1.5
kill -HUP "${DAEMON_PID[a]}"
sleep 0.5
admin "set server daemons/b state maint"
sleep 0.3   # requests already sent to b are answered
kill -TERM "${DAEMON_PID[b]}"
wait "${DAEMON_PID[b]}"
b_status=$?
start_daemon b "$PORT_B"
admin "set server daemons/b state ready"
wait "$bench"
bench_status=$?

report=$(cat "$WORK/bench.json")
requests=$(echo "$report" | sed -n 's/.*"requests": \([0-9]*\).*/\1/p')
errors=$(echo "$report" | sed -n 's/.*"errors": \([0-9]*\).*/\1/p')
connect_errors=$(echo "$report" | sed -n 's/.*"connect_errors": \([0-9]*\).*/\1/p')
echo "bench through haproxy: ${requests:-?} requests, ${errors:-?} errors, ${connect_errors:-?} connect errors"
check "b stopped cleanly (exit 0)" [ "$b_status" -eq 0 ]
check "a reloaded its configuration" grep -q "configuration reloaded" "$WORK/a.log"
check "the bench got answers" [ "${requests:-0}" -gt 0 ]
check "no errors during reload and restart" [ "$bench_status" -eq 0 -a "${errors:-1}" -eq 0 -a "${connect_errors:-1}" -eq 0 ]
check "the restarted daemon answers directly" answer "$PORT_B"
check "the reloaded daemon answers directly" answer "$PORT_A"
sleep 0.6   # b passes its health checks again
check "haproxy answers after the restart" answer "$PORT_P"

if [ "$failed" -gt 0 ]; then
    for f in a.log b.log haproxy.log admin.log bench.err; do
        echo "--- $f"
        tail -20 "$WORK/$f"
    done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
