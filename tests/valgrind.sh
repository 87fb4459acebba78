#!/bin/bash
# valgrind.sh - runs the built daemon (master, workers and the check
# children that create plugin instances for the master) under valgrind's
# memcheck, drives it through the six reference exchanges, the wire errors
# (bad_frame, bad_json, too_large, busy), a line listener, an HTTP listener
# (one connection held open across everything after), two reloads (in
# place, and one that replaces the worker), stops it with SIGTERM, and
# fails on any memory error or any block left allocated at exit
# in any process: leaked, or still reachable. A pool or cache the daemon
# forgets to free on the way out is reachable through a static pointer, so
# "definitely lost" alone would never see it; every library the daemon uses
# frees what it allocated once closed, but for GnuTLS's tables, set up by a
# library constructor (tests/valgrind.supp says why).
#
# Usage: tests/valgrind.sh      (not part of make check)
# The build tree is $PB_BUILD, or the current directory; it must be built
# without --enable-sanitizers. Nothing is built.
# Exit status: 0 clean, 1 a check failed, 2 usage or setup error.

set -u
. "$(dirname "$0")/lib.sh"

BUILD=${PB_BUILD:-$(pwd)}
SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
DAEMON=$BUILD/daemon/plugboard
CLI=$BUILD/tools/plugboard-cli
PLUGINS=$BUILD/plugins/.libs
VECTORS=$SRCDIR/tests/vectors/seed-exchanges.json
HOST=127.0.0.1

die() { echo "valgrind: $*" >&2; exit 2; }

for f in "$DAEMON" "$CLI"; do
    [ -x "$f" ] || die "$f not found: set PB_BUILD to a build tree"
done
[ -f "$PLUGINS/echo.so" ] || die "$PLUGINS/echo.so not found: set PB_BUILD to a build tree"
[ -f "$VECTORS" ] || die "$VECTORS not found"
command -v valgrind >/dev/null || die "valgrind is not installed"
command -v nc >/dev/null || die "nc (netcat) is needed"
if nm "$DAEMON" 2>/dev/null | grep -q __asan_init; then
    die "$DAEMON is built with sanitizers, which valgrind cannot run"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pbvg.XXXXXX") || die "mktemp failed"
MASTER=
HELD=()

cleanup() {
    if [ -n "$MASTER" ] && kill -0 "$MASTER" 2>/dev/null; then
        kill -KILL "$MASTER" 2>/dev/null
        wait "$MASTER" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

FAIL=0
fail() { echo "valgrind: FAIL: $*"; FAIL=1; }



# max_connections is small so that `busy` is cheap to provoke, and not
# smaller than the probes of start_daemon (up to one per listener and
# round, accepted all at once by a worker slow to start under valgrind)
# plus the first exchange.
MAX_CONNECTIONS=8

write_config() {
    cat >"$WORK/plugboard.conf" <<EOF
pidfile = "$WORK/plugboard.pid";
workers = 1;
log = { level = "info"; target = "stderr"; };
limits = { max_connections = $MAX_CONNECTIONS; max_message_bytes = 65536; shutdown_timeout = 30; };
listeners = (
  { name = "app";    address = "$HOST"; port = $FRAME_PORT; framing = "frame"; },
  { name = "telnet"; address = "$HOST"; port = $LINE_PORT; framing = "line"; plugin = "echo"; },
  { name = "web";    address = "$HOST"; port = $HTTP_PORT; framing = "http"; }${EXTRA_LISTENER:-}
);
EOF
    shipped_plugins_and_routes "$PLUGINS" >>"$WORK/plugboard.conf"
}

start_daemon() {
    local attempt i status
    for attempt in 1 2 3 4 5; do
        FRAME_PORT=$(free_port)
        LINE_PORT=$(free_port)
        HTTP_PORT=$(free_port)
        [ "$FRAME_PORT" != "$LINE_PORT" ] && [ "$HTTP_PORT" != "$FRAME_PORT" ] \
            && [ "$HTTP_PORT" != "$LINE_PORT" ] || continue
        write_config
        rm -f "$WORK"/vg.*.log
        valgrind --leak-check=full --show-leak-kinds=all --errors-for-leak-kinds=all \
            --error-exitcode=99 --trace-children=yes \
            --suppressions="$SRCDIR/tests/valgrind.supp" \
            --log-file="$WORK/vg.%p.log" \
            "$DAEMON" -f -c "$WORK/plugboard.conf" 2>"$WORK/daemon.log" &
        MASTER=$!
        for i in $(seq 600); do
            if listening "$FRAME_PORT" && listening "$LINE_PORT" && listening "$HTTP_PORT"; then
                return 0
            fi
            kill -0 "$MASTER" 2>/dev/null || break
            sleep 0.1
        done
        wait "$MASTER"
        status=$?
        MASTER=
        [ "$status" -eq 1 ] || { cat "$WORK/daemon.log" "$WORK"/vg.*.log >&2; die "the daemon exited with status $status"; }
    done
    die "the daemon could not bind its ports in 5 attempts"
}

hex_to_file() {  # HEX FILE
    printf "$(printf '%s' "$1" | sed 's/../\\x&/g')" >"$2"
}

file_to_hex() {
    od -An -v -tx1 "$1" | tr -d ' \n'
}

vector() {  # NAME FIELD
    sed -n "/\"name\": \"$1\"/,/}/p" "$VECTORS" | sed -n "s/.*\"$2\": \"\([0-9a-f]*\)\".*/\1/p"
}

# Sends FILE on a new connection, half-closes, and returns everything the
# daemon sent until it closed.
exchange() {  # FILE PORT OUTPUT
    nc -N -w 30 "$HOST" "$2" <"$1" >"$3" 2>/dev/null
}

# The daemon's reply header carries this host's byte order.
host_reply_hex() {
    local hex=$1
    if [ "$(printf '\1\0' | od -An -tu2 | tr -d ' ')" = 1 ]; then
        echo "$hex"
        return
    fi
    hex_to_file "$hex" "$WORK/little"
    local h=$(( 0x${hex:0:4} - 3 ))
    { printf "\\x$(printf %02x $((h >> 8)))\\x$(printf %02x $((h & 255)))"
      tail -c +3 "$WORK/little" | sed 's/"byteorder": "little"/"byteorder": "big"/'; } >"$WORK/big"
    file_to_hex "$WORK/big"
}

# The reply is an error frame with this code, then the connection closed.
expect_error_code() {  # WHAT OUTPUT CODE
    if ! grep -q "\"code\": \"$3\"}" "$2"; then
        fail "$1: no $3 error frame in the reply: $(file_to_hex "$2")"
    fi
}

raw_header() {  # HEADER-TEXT OUTPUT
    local h=${#1}
    { printf "\\x$(printf %02x $((h >> 8)))\\x$(printf %02x $((h & 255)))"
      printf '%s' "$1"; } >"$2"
}

start_daemon
echo "valgrind: daemon under valgrind on $HOST:$FRAME_PORT (frame), :$LINE_PORT (line) and :$HTTP_PORT (http)"

for name in search_morpheus search_ring search_dog_emoji search_no_match \
            invalid_action_fly binary_first10; do
    request=$(vector "$name" request_hex)
    reply=$(vector "$name" reply_hex)
    [ -n "$request" ] && [ -n "$reply" ] || die "$VECTORS: no exchange $name"
    hex_to_file "$request" "$WORK/request"
    exchange "$WORK/request" "$FRAME_PORT" "$WORK/reply"
    if [ "$(file_to_hex "$WORK/reply")" = "$(host_reply_hex "$reply")" ]; then
        echo "valgrind: $name: reply byte for byte as the reference"
    else
        fail "$name: reply $(file_to_hex "$WORK/reply")"
    fi
done

printf '\0\0' >"$WORK/h0"
exchange "$WORK/h0" "$FRAME_PORT" "$WORK/reply"
expect_error_code "header length 0" "$WORK/reply" bad_frame
raw_header '{"byteorder": "middle", "content-type": "a", "content-encoding": "b", "content-length": 0}' "$WORK/middle"
exchange "$WORK/middle" "$FRAME_PORT" "$WORK/reply"
expect_error_code "byteorder middle" "$WORK/reply" bad_frame
raw_header 'not json' "$WORK/notjson"
exchange "$WORK/notjson" "$FRAME_PORT" "$WORK/reply"
expect_error_code "header not JSON" "$WORK/reply" bad_frame
raw_header '{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", "content-length": 5}' "$WORK/badjson"
printf '{{{{{' >>"$WORK/badjson"
exchange "$WORK/badjson" "$FRAME_PORT" "$WORK/reply"
expect_error_code "content not JSON" "$WORK/reply" bad_json
raw_header '{"byteorder": "little", "content-type": "text/plain", "content-encoding": "utf-8", "content-length": 1000000}' "$WORK/big"
exchange "$WORK/big" "$FRAME_PORT" "$WORK/reply"
expect_error_code "content-length over the limit" "$WORK/reply" too_large
echo "valgrind: bad_frame, bad_json and too_large replies checked"

if out=$("$CLI" -w 30 "$HOST" "$FRAME_PORT" --json '{"action": "upper", "value": "straße"}'); then
    [ "$out" = "STRASSE" ] || fail "uppercase: got '$out'"
else
    fail "plugboard-cli uppercase request failed"
fi

printf 'hello\r\nworld\n' >"$WORK/lines"
exchange "$WORK/lines" "$LINE_PORT" "$WORK/reply"
if [ "$(cat "$WORK/reply")" = "$(printf 'hello\nworld')" ]; then
    echo "valgrind: line listener echoed two lines"
else
    fail "line listener replied $(file_to_hex "$WORK/reply")"
fi

MORPHEUS='{"action": "search", "value": "morpheus"}'
printf 'GET /health HTTP/1.1\r\nHost: v\r\n\r\nGET /metrics HTTP/1.1\r\nHost: v\r\n\r\nPOST / HTTP/1.1\r\nHost: v\r\nContent-Type: text/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "${#MORPHEUS}" "$MORPHEUS" >"$WORK/http"
exchange "$WORK/http" "$HTTP_PORT" "$WORK/reply"
if [ "$(grep -c '^HTTP/1.1 200 OK' "$WORK/reply")" = 3 ] && grep -q 'Follow the white rabbit' "$WORK/reply"; then
    echo "valgrind: HTTP listener answered health, metrics and a posted search"
else
    fail "HTTP listener replied $(file_to_hex "$WORK/reply")"
fi
# Held open, waiting for a request, through the reload in place.
exec {HTTP_HELD}<>"/dev/tcp/$HOST/$HTTP_PORT" || die "cannot connect"

# Waits until the daemon's log holds $2 lines matching $1.
wait_log() {  # PATTERN COUNT
    local i
    for i in $(seq 600); do
        [ "$(grep -c "$1" "$WORK/daemon.log")" -ge "$2" ] && return 0
        sleep 0.1
    done
    return 1
}

# A reload in place (the worker prepares the master's text and switches),
# then one that adds a listener (a new worker; the old one retires).
kill -HUP "$MASTER"
wait_log "configuration reloaded" 1 || fail "the reload in place never completed"
printf 'GET /health HTTP/1.1\r\nHost: v\r\n\r\n' >&"$HTTP_HELD"
[ "$(timeout 30 head -c 15 <&"$HTTP_HELD")" = "HTTP/1.1 200 OK" ] \
    || fail "the HTTP connection held across the reload in place was not served"
exec {HTTP_HELD}>&-
EXTRA_PORT=$(free_port)
EXTRA_LISTENER=",
  { name = \"extra\"; address = \"$HOST\"; port = $EXTRA_PORT; framing = \"frame\"; }"
write_config
kill -HUP "$MASTER"
wait_log "configuration reloaded" 2 || fail "the reload adding a listener never completed"
wait_log "replaced worker" 1 || fail "the retired worker never exited"
hex_to_file "$(vector search_morpheus request_hex)" "$WORK/request"
exchange "$WORK/request" "$EXTRA_PORT" "$WORK/reply"
if [ "$(file_to_hex "$WORK/reply")" = "$(host_reply_hex "$(vector search_morpheus reply_hex)")" ]; then
    echo "valgrind: two reloads, the new listener answers"
else
    fail "new listener replied $(file_to_hex "$WORK/reply")"
fi

# Hold every connection slot with a served connection (one of them HTTP,
# left open through the stop), then one more is refused with busy.
exec {HTTP_HELD}<>"/dev/tcp/$HOST/$HTTP_PORT" || die "cannot connect"
printf 'GET /health HTTP/1.1\r\nHost: v\r\n\r\n' >&"$HTTP_HELD"
[ "$(timeout 30 head -c 15 <&"$HTTP_HELD")" = "HTTP/1.1 200 OK" ] \
    || fail "an HTTP connection to the new worker was not served"
for i in $(seq $((MAX_CONNECTIONS - 1))); do
    exec {fd}<>"/dev/tcp/$HOST/$FRAME_PORT" || die "cannot connect"
    HELD+=("$fd")
done
hex_to_file "$(vector search_morpheus request_hex)" "$WORK/request"
for fd in "${HELD[@]}"; do
    cat "$WORK/request" >&"$fd"
    timeout 30 head -c "$(( $(vector search_morpheus reply_hex | wc -c) / 2 ))" <&"$fd" >"$WORK/reply"
    [ -s "$WORK/reply" ] || fail "a held connection was not served"
done
nc -w 30 "$HOST" "$FRAME_PORT" </dev/null >"$WORK/reply" 2>/dev/null
expect_error_code "connection over max_connections" "$WORK/reply" busy
for fd in "${HELD[@]}"; do
    exec {fd}>&-
done
echo "valgrind: busy checked"

kill -TERM "$MASTER"
wait "$MASTER"
STATUS=$?
MASTER=
[ "$STATUS" -eq 0 ] || fail "the daemon under valgrind exited with status $STATUS (99: valgrind found errors)"

LOGS=("$WORK"/vg.*.log)
[ -e "${LOGS[0]}" ] || die "valgrind wrote no log"
[ "${#LOGS[@]}" -ge 3 ] || fail "only ${#LOGS[@]} valgrind log(s): wanted the master's and both workers'"
for log in "${LOGS[@]}"; do
    pid=${log##*/vg.}
    pid=${pid%.log}
    summary=$(grep -E 'ERROR SUMMARY:' "$log" | tail -n 1 | sed 's/^==[0-9]*== //')
    in_use=$(grep -E 'in use at exit:' "$log" | tail -n 1 | sed 's/^==[0-9]*== *//')
    echo "valgrind: process $pid: ${summary:-no summary (killed?)}; ${in_use:-in use at exit: unknown}"
    # Leaks of every kind, still reachable included, count as errors here.
    case $summary in
        "ERROR SUMMARY: 0 errors"*) ;;
        *) fail "process $pid: valgrind reported errors or blocks left at exit"; cat "$log" ;;
    esac
done
if grep -E -q 'Sanitizer|runtime error|restarting' "$WORK/daemon.log"; then
    fail "the daemon's log reports a crash"
fi

if [ "$FAIL" -ne 0 ]; then
    echo "valgrind: FAIL"
    exit 1
fi
echo "valgrind: PASS"
