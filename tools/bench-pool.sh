#!/bin/bash
# bench-pool.sh - what a thread pool costs: the same handler (the test
# plugin's, answering {"result": V} at once) run inline on the worker's loop
# and on a pool of `threads = 4`, each behind its own listener of one
# daemon, loaded in turn by plugboard-bench over 50 connections at pipeline
# 1 and 16. Prints requests/s and the server's CPU time per request
# (utime + stime of the master and its worker, threads included, from
# /proc/PID/stat) for both, and the pool's extra CPU per request.
#
# With --busy it measures instead a blocking handler next to a fast one:
# search over 50 connections, alone and then while a handler that sleeps
# 50 ms per request (threads = 4) is kept busy by 8 more connections, with
# requests/s, latency and server CPU per search request of both runs.
#
# Usage: BUILDDIR=. tools/bench-pool.sh [OPTIONS] [SECONDS]
#   SECONDS              seconds per run (default 10)
#   -r, --rounds R       rounds, alternating inline and pool (default 3);
#                        each cell shows its round with the least CPU per
#                        request
#   -t, --threads N      the pool's threads (default 4)
#       --busy           the blocking-handler measurement described above
# The servers run on CPU 0, the load on the last CPU. The test plugin comes
# from `make check` (tests/fixtures/.libs/runtime.so). Needs python3 and
# taskset. Not part of make check: the numbers are recorded, not judged.
set -eu

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILDDIR=$(cd "${BUILDDIR:-.}" && pwd)
# free_port (below the ephemeral range), listening and cpu_ticks.
# shellcheck source=tools/bench-lib.sh
. "$SRCDIR/tools/bench-lib.sh"
DAEMON=$BUILDDIR/daemon/plugboard
BENCH=$BUILDDIR/tools/plugboard-bench
FIXTURE=$BUILDDIR/tests/fixtures/.libs/runtime.so
SECONDS_PER_RUN=10
ROUNDS=3
THREADS=4
BUSY=0
while [ $# -gt 0 ]; do
    case $1 in
    -r|--rounds) ROUNDS=$2; shift ;;
    -t|--threads) THREADS=$2; shift ;;
    --busy) BUSY=1 ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench-pool.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    *) SECONDS_PER_RUN=$1 ;;
    esac
    shift
done
for f in "$DAEMON" "$BENCH" "$FIXTURE"; do
    [ -e "$f" ] || { echo "bench-pool.sh: $f not built (make check builds the fixture)" >&2; exit 2; }
done
for tool in python3 taskset; do
    command -v "$tool" >/dev/null || { echo "bench-pool.sh: $tool not found" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/plugboard-pool.XXXXXX")
DAEMON_PID=
cleanup() {
    [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SERVER_CPU=0
LOAD_CPU=$(($(nproc) - 1))

start_daemon() {
    taskset -c "$SERVER_CPU" "$DAEMON" -f -c "$WORK/plugboard.conf" 2>"$WORK/daemon.log" &
    DAEMON_PID=$!
    for _ in $(seq 200); do
        listening "$1" && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench-pool.sh: the daemon does not listen on port $1:" >&2
    cat "$WORK/daemon.log" >&2
    exit 1
}

if [ "$BUSY" = 0 ]; then
    INLINE_PORT=$(free_port)
    POOL_PORT=$(free_port)
    while [ "$POOL_PORT" = "$INLINE_PORT" ]; do POOL_PORT=$(free_port); done
    cat >"$WORK/plugboard.conf" <<CONF
workers = 1;
log = { level = "warning"; };
limits = { idle_timeout = 0.0; };
listeners = (
  { name = "inline"; address = "127.0.0.1"; port = $INLINE_PORT; plugin = "inline"; },
  { name = "pool"; address = "127.0.0.1"; port = $POOL_PORT; plugin = "pool"; }
);
plugins = (
  { name = "inline"; module = "$FIXTURE"; },
  { name = "pool"; module = "$FIXTURE"; threads = $THREADS; }
);
routes = ( );
CONF
    start_daemon "$POOL_PORT"
    RESULTS=$WORK/results.tsv
    : >"$RESULTS"
    # run NAME PORT PIPELINE: one bench run, appended to $RESULTS.
    run() {
        local before after
        before=$(cpu_ticks "$DAEMON_PID")
        taskset -c "$LOAD_CPU" "$BENCH" -q --json -c 50 -P "$3" -d "$SECONDS_PER_RUN" -k json \
            --content '{"action": "answer", "value": "x"}' 127.0.0.1 "$2" >"$WORK/run.json"
        after=$(cpu_ticks "$DAEMON_PID")
        printf '%s\t%s\t%s\t%s\n' "$1" "$3" "$((after - before))" \
            "$(tr -d '\n' <"$WORK/run.json")" >>"$RESULTS"
    }
    for round in $(seq "$ROUNDS"); do
        for pipeline in 1 16; do
            if [ $((round % 2)) = 1 ]; then
                run inline "$INLINE_PORT" "$pipeline"
                run pool "$POOL_PORT" "$pipeline"
            else
                run pool "$POOL_PORT" "$pipeline"
                run inline "$INLINE_PORT" "$pipeline"
            fi
        done
    done
    python3 - "$RESULTS" "$TICKS" "$THREADS" <<'PY'
import json, sys
path, tck, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
best = {}
for line in open(path):
    name, pipeline, ticks, report = line.rstrip("\n").split("\t", 3)
    r = json.loads(report)
    us = int(ticks) / tck / max(1, r["requests"]) * 1e6
    if (name, pipeline) not in best or us < best[name, pipeline][0]:
        best[name, pipeline] = (us, r["rps"], r["errors"])
print(f"| conns | pipeline | inline req/s | threads = {threads} req/s | "
      "inline CPU us/req | pool CPU us/req | pool - inline us/req |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for pipeline in ("1", "16"):
    i, p = best["inline", pipeline], best["pool", pipeline]
    print(f"| 50 | {pipeline} | {i[1]:,.0f} | {p[1]:,.0f} | {i[0]:.2f} | {p[0]:.2f} | "
          f"{p[0] - i[0]:+.2f} |")
    for name, cell in (("inline", i), ("pool", p)):
        if cell[2]:
            print(f"bench-pool.sh: {cell[2]} errors on {name} at pipeline {pipeline}",
                  file=sys.stderr)
PY
    exit 0
fi

PORT=$(free_port)
cat >"$WORK/plugboard.conf" <<CONF
plugin_dir = "$BUILDDIR/plugins/.libs";
workers = 1;
log = { level = "warning"; };
limits = { idle_timeout = 0.0; };
listeners = ( { name = "app"; address = "127.0.0.1"; port = $PORT; } );
plugins = (
  { name = "search"; module = "search";
    settings = { entries = ( ("morpheus", "Follow the white rabbit. 🐰") ); }; },
  { name = "blocking"; module = "$FIXTURE"; threads = $THREADS; }
);
routes = (
  { content_type = "text/json"; action = "sleep"; plugin = "blocking"; },
  { content_type = "text/json"; plugin = "search"; }
);
CONF
start_daemon "$PORT"

# search RUN_NAME: 50 connections of search, its report in $WORK/RUN_NAME.json
search() {
    local before after
    before=$(cpu_ticks "$DAEMON_PID")
    taskset -c "$LOAD_CPU" "$BENCH" -q --json -c 50 -d "$SECONDS_PER_RUN" 127.0.0.1 "$PORT" >"$WORK/$1.json"
    after=$(cpu_ticks "$DAEMON_PID")
    echo $((after - before)) >"$WORK/$1.ticks"
}

search idle
taskset -c "$LOAD_CPU" "$BENCH" -q --json -c 8 -d "$((SECONDS_PER_RUN + 2))" -k json \
    --content '{"action": "sleep", "value": "slept", "delay": 0.05}' \
    127.0.0.1 "$PORT" >"$WORK/sleep.json" &
SLEEP_PID=$!
sleep 1
search busy
wait "$SLEEP_PID"

python3 - "$WORK" "$TICKS" "$THREADS" <<'PY'
import json, sys
work, tck, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
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
print(f"| sleep 50 ms on threads = {threads}, 8 connections | {s['rps']:.1f} | "
      f"{s['latency_us']['p50'] / 1000:.1f} | {s['latency_us']['p99'] / 1000:.1f} | {s['errors']} | |")
print()
print(f"search throughput, pool busy / pool idle: {load('busy')['rps'] / load('idle')['rps']:.3f}")
PY
