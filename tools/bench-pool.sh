#!/bin/bash
# bench-pool.sh - a blocking plugin on a thread pool next to a fast one:
# search over 50 connections, alone and then while a handler that sleeps
# 50 ms per request (threads = 4) is kept busy by 8 more connections.
# Prints requests/s and latency of both, and the server's CPU per search
# request with the pool idle and busy. The test plugin comes from
# `make check` (tests/fixtures/.libs/runtime.so).
#
# Usage: BUILDDIR=. tools/bench-pool.sh [SECONDS]   (default 10 per run)
set -eu

BUILDDIR=$(cd "${BUILDDIR:-.}" && pwd)
DAEMON=$BUILDDIR/daemon/plugboard
BENCH=$BUILDDIR/tools/plugboard-bench
FIXTURE=$BUILDDIR/tests/fixtures/.libs/runtime.so
SECONDS_PER_RUN=${1:-10}
for f in "$DAEMON" "$BENCH" "$FIXTURE"; do
    [ -e "$f" ] || { echo "bench-pool.sh: $f not built (make check builds the fixture)" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/plugboard-pool.XXXXXX")
DAEMON_PID=
cleanup() {
    [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/plugboard.conf" <<CONF
plugin_dir = "$BUILDDIR/plugins/.libs";
workers = 1;
log = { level = "warning"; };
limits = { idle_timeout = 0.0; };
listeners = ( { name = "app"; address = "127.0.0.1"; port = $PORT; } );
plugins = (
  { name = "search"; module = "search";
    settings = { entries = ( ("morpheus", "Follow the white rabbit. 🐰") ); }; },
  { name = "blocking"; module = "$FIXTURE"; threads = 4; }
);
routes = (
  { content_type = "text/json"; action = "sleep"; plugin = "blocking"; },
  { content_type = "text/json"; plugin = "search"; }
);
CONF
taskset -c 0 "$DAEMON" -f -c "$WORK/plugboard.conf" 2>"$WORK/daemon.log" &
DAEMON_PID=$!
for _ in $(seq 100); do
    "$BUILDDIR/tools/plugboard-cli" -w 1 127.0.0.1 "$PORT" search morpheus >/dev/null 2>&1 && break
    sleep 0.05
done

cpu_ticks() {
    local total=0 p
    for p in $DAEMON_PID $(pgrep -P "$DAEMON_PID" || true); do
        total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$total"
}

# search RUN_NAME: 50 connections of search, its report in $WORK/RUN_NAME.json
search() {
    local before after
    before=$(cpu_ticks)
    taskset -c 1 "$BENCH" -q --json -c 50 -d "$SECONDS_PER_RUN" 127.0.0.1 "$PORT" >"$WORK/$1.json"
    after=$(cpu_ticks)
    echo $((after - before)) >"$WORK/$1.ticks"
}

search idle
taskset -c 1 "$BENCH" -q --json -c 8 -d "$((SECONDS_PER_RUN + 2))" -k json \
    --content '{"action": "sleep", "value": "slept", "delay": 0.05}' \
    127.0.0.1 "$PORT" >"$WORK/sleep.json" &
SLEEP_PID=$!
sleep 1
search busy
wait "$SLEEP_PID"

python3 - "$WORK" "$(getconf CLK_TCK)" <<'PY'
import json, sys
work, tck = sys.argv[1], int(sys.argv[2])
def load(name):
    return json.load(open(f"{work}/{name}.json"))
def cpu_us(name, report):
    ticks = int(open(f"{work}/{name}.ticks").read())
    return ticks / tck / max(1, report["requests"]) * 1e6
runs = [("search, pool idle", "idle"), ("search, pool busy", "busy")]
print("| run | requests/s | p50 ms | p99 ms | errors | server CPU us/req |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for title, name in runs:
    r = load(name)
    print(f"| {title} | {r['rps']:.0f} | {r['latency_us']['p50'] / 1000:.3f} | "
          f"{r['latency_us']['p99'] / 1000:.3f} | {r['errors']} | {cpu_us(name, r):.2f} |")
s = load("sleep")
print(f"| sleep 50 ms on threads = 4, 8 connections | {s['rps']:.1f} | "
      f"{s['latency_us']['p50'] / 1000:.1f} | {s['latency_us']['p99'] / 1000:.1f} | {s['errors']} | |")
print()
print(f"search throughput, pool busy / pool idle: {load('busy')['rps'] / load('idle')['rps']:.3f}")
PY
