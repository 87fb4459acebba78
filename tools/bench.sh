#!/bin/bash
# bench.sh - runs plugboard's fixed benchmark matrix side by side with
# redis-server PING, tools/minimal-server (the floor: the least work a
# server of the frame protocol must do) and the guide's Python server,
# measures the memory of idle connections, and writes the results into
# docs/benchmarks.md, with a summary of plugboard's server CPU per request
# against redis and the floor. Search over TLS is measured against
# plugboard without TLS and redis PING over TLS, with certificates made at
# run time by openssl. A shared listening socket and a reuseport listener
# are measured with 1 and 2 workers, all on the server's one CPU.
#
# Usage: tools/bench.sh [OPTIONS]
#   -q, --quick          1 s per cell instead of 3 (about a minute in all)
#   -d, --duration SEC   seconds per cell
#   -o, --out FILE       where to write (default SRCDIR/docs/benchmarks.md);
#                        only the part between the bench markers is replaced
#       --before BUILD   also run a short before/after comparison against
#                        another build tree (its daemon/plugboard and
#                        plugins/.libs; or a daemon binary alone, which then
#                        loads this tree's plugins)
#       --no-redis, --no-python, --no-memory, --no-minimal   skip those parts
#       --no-tls         skip the TLS rows
#       --scale N        only the scaling rows: a shared socket and reuseport
#                        with 1, 2, 4 ... N workers on CPUs 0..workers-1, one
#                        load generator (50 connections) on each CPU from N
#                        up; needs more than N CPUs
# Environment: BUILDDIR (default .) holds daemon/plugboard,
# tools/plugboard-bench, tools/minimal-server and plugins/.libs. Needs taskset, python3 and, for
# the comparison, redis-server and redis-benchmark (Debian: redis-server,
# redis-tools); the TLS rows need openssl, and redis built with TLS (as
# Debian's is) for its TLS rows. Not part of make check: the numbers are
# recorded, not judged.
set -eu

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILDDIR=$(cd "${BUILDDIR:-.}" && pwd)
DAEMON=$BUILDDIR/daemon/plugboard
BENCH=$BUILDDIR/tools/plugboard-bench
MINIMAL=$BUILDDIR/tools/minimal-server
PLUGINS=$BUILDDIR/plugins/.libs
OUT=$SRCDIR/docs/benchmarks.md
DURATION=3
BEFORE=
BEFORE_PLUGINS=
DO_REDIS=1 DO_PYTHON=1 DO_MEMORY=1 DO_TLS=1 DO_MINIMAL=1 DO_MATRIX=1 SCALE=0
IDLE_CONNECTIONS=10000

while [ $# -gt 0 ]; do
    case $1 in
    -q|--quick) DURATION=1 ;;
    -d|--duration) DURATION=$2; shift ;;
    -o|--out) OUT=$2; shift ;;
    --before)
        if [ -d "$2" ]; then
            BEFORE=$(cd "$2" && pwd)/daemon/plugboard
            BEFORE_PLUGINS=$(cd "$2" && pwd)/plugins/.libs
        else
            BEFORE=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
        fi
        shift ;;
    --no-redis) DO_REDIS=0 ;;
    --no-python) DO_PYTHON=0 ;;
    --no-memory) DO_MEMORY=0 ;;
    --no-minimal) DO_MINIMAL=0 ;;
    --scale) SCALE=$2; shift ;;
    --no-tls) DO_TLS=0 ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

for f in "$DAEMON" "$BENCH"; do
    [ -x "$f" ] || { echo "bench.sh: $f not built (set BUILDDIR)" >&2; exit 2; }
done
if [ "$DO_REDIS" = 1 ] && ! command -v redis-server >/dev/null; then
    echo "bench.sh: redis-server not found; skipping redis (apt-get install redis-server redis-tools)" >&2
    DO_REDIS=0
fi
if [ "$DO_MINIMAL" = 1 ] && [ ! -x "$MINIMAL" ]; then
    echo "bench.sh: $MINIMAL not built (make tools/minimal-server); skipping it" >&2
    DO_MINIMAL=0
fi
if [ "$DO_TLS" = 1 ] && ! command -v openssl >/dev/null; then
    echo "bench.sh: openssl not found; skipping the TLS rows" >&2
    DO_TLS=0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/plugboard-bench.XXXXXX")
RESULTS=$WORK/results.tsv
: >"$RESULTS"
PIDS=
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Idle connections and deep pipelines need descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The servers and the load generator never share a core.
NCPU=$(nproc)
if [ "$SCALE" -gt 0 ]; then
    if ! [ "$SCALE" -lt "$NCPU" ]; then
        echo "bench.sh: --scale $SCALE needs more than $SCALE CPUs (this machine has $NCPU)" >&2
        exit 2
    fi
    # Only the scaling rows.
    DO_MATRIX=0 DO_REDIS=0 DO_PYTHON=0 DO_MEMORY=0 DO_TLS=0 DO_MINIMAL=0
fi
BENCH_CPU=$((NCPU - 1))
SERVER_CPU=0
if [ "$NCPU" -ge 3 ]; then SERVER_CPUS_2=0,1; else SERVER_CPUS_2=0; fi

# free_port (below the ephemeral range), wait_port, cpu_ticks, TICKS.
# shellcheck source=tools/bench-lib.sh
. "$SRCDIR/tools/bench-lib.sh"

# The test certificates in TLS_DIR: a CA, and a server certificate for
# 127.0.0.1 and localhost, ECDSA P-256.
TLS_DIR=$WORK/tls
make_certificates() {
    mkdir -p "$TLS_DIR" && "$SRCDIR/tests/tls/make-certs.sh" "$TLS_DIR" >"$TLS_DIR/openssl.log" 2>&1
}
if [ "$DO_TLS" = 1 ] && ! make_certificates; then
    echo "bench.sh: cannot make certificates ($(tail -1 "$TLS_DIR/openssl.log")); skipping the TLS rows" >&2
    DO_TLS=0
fi

SERVER_PID=
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# start_daemon BINARY WORKERS CPUS [PLUGIN_DIR [tls]]
# (REUSEPORT=1: the listener is a reuseport one, a socket per worker)
start_daemon() {
    PORT=$(free_port)
    local tls= http= reuseport=
    [ -n "${REUSEPORT:-}" ] && reuseport="reuseport = true;"
    [ -n "${HTTP_PORT:-}" ] && http=",
              { name = \"http\"; address = \"127.0.0.1\"; port = $HTTP_PORT; framing = \"http\"; }"
    [ "${5:-}" = tls ] && tls="tls = { certificate = \"$TLS_DIR/server.crt\"; key = \"$TLS_DIR/server.key\"; };"
    cat >"$WORK/plugboard.conf" <<EOF
plugin_dir = "${4:-$PLUGINS}";
workers = $2;
log = { level = "warning"; target = "stderr"; };
limits = { max_connections = 20000; max_message_bytes = 2097152;
           idle_timeout = 0.0; max_pending_output = 4194304; };
listeners = ( { name = "app"; address = "127.0.0.1"; port = $PORT; framing = "frame"; $reuseport $tls }$http );
plugins = (
  { name = "echo"; module = "echo"; },
  { name = "search"; module = "search";
    settings = { entries = ( ("morpheus", "Follow the white rabbit. 🐰"),
                             ("ring", "In the caves beneath the Misty Mountains. 💍"),
                             ("🐶", "🐾 Playing ball! 🏐") ); }; },
  { name = "first10"; module = "first10"; }
);
routes = (
  { content_type = "text/json"; plugin = "search"; },
  { content_type = "text/plain"; plugin = "echo"; },
  { plugin = "first10"; }
);
EOF
    if [ -n "$tls" ] && ! "$1" -t -c "$WORK/plugboard.conf" >>"$WORK/daemon.log" 2>&1; then
        echo "bench.sh: this daemon takes no TLS listener; skipping its TLS rows" >&2
        return 1
    fi
    taskset -c "$3" "$1" -f -c "$WORK/plugboard.conf" 2>>"$WORK/daemon.log" &
    SERVER_PID=$!
    PIDS="$PIDS $SERVER_PID"
    wait_port "$PORT"
}

# record SERVER WORKERS KIND SIZE CONNS PIPELINE NEWCONN RPS MBIN MBOUT P50 P99 ERRORS CPU_US
record() {
    (IFS=$'\t'; echo "$*") >>"$RESULTS"
    printf '  %-10s w%s %-7s %8s c=%-5s P=%-3s %-8s %12s req/s  server %s us/req\n' \
        "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "${14}"
}

# pb SERVER_LABEL WORKERS KIND SIZE CONNS PIPELINE NEWCONN
# (PB_FLAGS: more plugboard-bench options, such as TLS's)
PB_FLAGS=
pb() {
    local flags="-k $3 -c $5 -P $6 $PB_FLAGS"
    [ "$3" = search ] || flags="$flags -s $4"
    [ "$7" = new-conn ] && flags="$flags --new-conn"
    local before after json
    before=$(cpu_ticks "$SERVER_PID")
    # shellcheck disable=SC2086
    json=$(timeout $((DURATION + 60)) taskset -c "$BENCH_CPU" "$BENCH" -q --json \
               -d "$DURATION" $flags 127.0.0.1 "$PORT" 2>>"$WORK/bench.log") || true
    after=$(cpu_ticks "$SERVER_PID")
    echo "$json" >>"$WORK/bench.json"
    [ -n "$json" ] || { echo "bench.sh: no report for $*" >&2; return 0; }
    local fields
    fields=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1]); ticks = int(sys.argv[2]); hz = int(sys.argv[3])
cpu = ticks / hz * 1e6 / r["requests"] if r["requests"] else 0
print(r["rps"], r["mb_per_s_in"], r["mb_per_s_out"], r["latency_us"]["p50"],
      r["latency_us"]["p99"], r["errors"] + r["connect_errors"], "%.2f" % cpu)
' "$json" $((after - before)) "$TICKS")
    # shellcheck disable=SC2086
    record "$1" "$2" "$3" "$4" "$5" "$6" "$7" $fields
}

# redis CONNS PIPELINE KEEPALIVE(1|0)
# (REDIS_LABEL: the server column; REDIS_FLAGS: more redis-benchmark options)
REDIS_LABEL=redis
REDIS_FLAGS=
redis() {
    local n=20000 csv before after rps
    [ "$3" = 0 ] && n=5000
    # A first short run sizes the measured one to about DURATION seconds.
    # shellcheck disable=SC2086
    rps=$(taskset -c "$BENCH_CPU" redis-benchmark -h 127.0.0.1 -p "$PORT" $REDIS_FLAGS -c "$1" \
              -P "$2" -k "$3" -n "$n" -t ping_mbulk --csv 2>/dev/null | awk -F'"' '/PING/ { print int($4) }')
    n=$(( ${rps:-10000} * DURATION ))
    [ "$n" -ge "$1" ] || n=$1
    before=$(cpu_ticks "$SERVER_PID")
    # shellcheck disable=SC2086
    csv=$(timeout $((DURATION * 5 + 60)) taskset -c "$BENCH_CPU" redis-benchmark -h 127.0.0.1 \
              -p "$PORT" $REDIS_FLAGS -c "$1" -P "$2" -k "$3" -n "$n" -t ping_mbulk --csv \
              2>/dev/null | grep PING) || true
    [ -n "$csv" ] || { echo "bench.sh: no report from redis-benchmark for $REDIS_LABEL $*" >&2; return 0; }
    after=$(cpu_ticks "$SERVER_PID")
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    local f
    f=$(echo "$csv" | python3 -c '
import csv, sys
row = next(csv.reader(sys.stdin)); n = int(sys.argv[1]); ticks = int(sys.argv[2]); hz = int(sys.argv[3])
print(row[1], "-", "-", float(row[4]) * 1000, float(row[6]) * 1000, 0, "%.2f" % (ticks / hz * 1e6 / n))
' "$n" $((after - before)) "$TICKS")
    local mode=keep
    [ "$3" = 0 ] && mode=new-conn
    # shellcheck disable=SC2086
    record "$REDIS_LABEL" 1 ping - "$1" "$2" "$mode" $f
}

# Resident memory of the worker for IDLE_CONNECTIONS idle connections.
# memory [FILE]: into $WORK/memory.tsv, or FILE.
memory() {
    local worker rss0 rss1 holder to=${1:-$WORK/memory.tsv}
    worker=$(pgrep -P "$SERVER_PID" | head -1)
    rss0=$(awk '/VmRSS/ { print $2 }' "/proc/$worker/status")
    mkfifo "$WORK/hold"
    python3 -c '
import socket, sys
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(int(sys.argv[2]))]
print("ready", flush=True)
open(sys.argv[3]).read()
' "$PORT" "$IDLE_CONNECTIONS" "$WORK/hold" >"$WORK/holder.out" &
    holder=$!
    for _ in $(seq 600); do grep -q ready "$WORK/holder.out" 2>/dev/null && break; sleep 0.1; done
    sleep 1
    rss1=$(awk '/VmRSS/ { print $2 }' "/proc/$worker/status")
    echo done >"$WORK/hold"
    wait "$holder" || true
    local per=$(( (rss1 - rss0) * 1024 / IDLE_CONNECTIONS ))
    echo "  $IDLE_CONNECTIONS idle connections: worker RSS $rss0 kB -> $rss1 kB, $per bytes each"
    printf 'memory\t%s\t%s\t%s\t%s\n' "$IDLE_CONNECTIONS" "$rss0" "$rss1" "$per" >"$to"
}

# One shared socket against a socket per worker (reuseport), 1 and 2
# workers, every worker on the one server CPU: a second worker on the same
# core must not cost CPU per request. Two alternating rounds; the summary
# takes each cell's lower figure.
listeners_rows() {
    local round listener w p
    for round in 1 2; do
        for listener in shared reuseport; do
            for w in 1 2; do
                local rp=
                [ "$listener" = reuseport ] && rp=1
                REUSEPORT=$rp start_daemon "$DAEMON" "$w" "$SERVER_CPU"
                for p in 16 1; do pb "$listener" "$w" search - 50 "$p" keep; done
                pb "$listener" "$w" search - 50 1 new-conn
                stop_server
            done
        done
    done
}

# --scale N: a shared socket and reuseport with 1, 2, 4 ... N workers on
# CPUs 0..workers-1, loaded by one plugboard-bench per remaining CPU (50
# connections each); requests and req/s are their sums.
# pb_multi SERVER_LABEL WORKERS PIPELINE NEWCONN
pb_multi() {
    local cpus=() c i before after flags="-k search -P $3"
    for ((c = SCALE; c < NCPU; c++)); do cpus+=("$c"); done
    [ "$4" = new-conn ] && flags="$flags --new-conn"
    local loads=()
    before=$(cpu_ticks "$SERVER_PID")
    for i in "${!cpus[@]}"; do
        # shellcheck disable=SC2086
        timeout $((DURATION + 60)) taskset -c "${cpus[$i]}" "$BENCH" -q --json -d "$DURATION" \
            -c 50 $flags 127.0.0.1 "$PORT" >"$WORK/multi.$i.json" 2>>"$WORK/bench.log" &
        loads+=($!)
    done
    wait "${loads[@]}" || true
    after=$(cpu_ticks "$SERVER_PID")
    local fields
    fields=$(python3 -c '
import json, sys
ticks = int(sys.argv[1]); hz = int(sys.argv[2])
rs = [json.loads(open(f).read()) for f in sys.argv[3:] if open(f).read().strip()]
n = sum(r["requests"] for r in rs)
if not rs:
    sys.exit(1)
print(sum(r["rps"] for r in rs), sum(r["mb_per_s_in"] for r in rs),
      sum(r["mb_per_s_out"] for r in rs), max(r["latency_us"]["p50"] for r in rs),
      max(r["latency_us"]["p99"] for r in rs),
      sum(r["errors"] + r["connect_errors"] for r in rs), "%.2f" % (ticks / hz * 1e6 / n if n else 0))
' $((after - before)) "$TICKS" "$WORK"/multi.*.json) || { echo "bench.sh: no report for $*" >&2; return 0; }
    rm -f "$WORK"/multi.*.json
    # shellcheck disable=SC2086
    record "$1" "$2" search - $((50 * ${#cpus[@]})) "$3" "$4" $fields
}

scale_rows() {
    local listener w p counts=
    for ((w = 1; w < SCALE; w *= 2)); do counts="$counts $w"; done
    counts="$counts $SCALE"
    for listener in shared reuseport; do
        for w in $counts; do
            local rp=
            [ "$listener" = reuseport ] && rp=1
            REUSEPORT=$rp start_daemon "$DAEMON" "$w" "0-$((w - 1))"
            for p in 16 1; do pb_multi "scale-$listener" "$w" "$p" keep; done
            pb_multi "scale-$listener" "$w" 1 new-conn
            stop_server
        done
    done
}

echo "bench.sh: $DURATION s per cell; server on CPU $SERVER_CPU (2 workers: $SERVER_CPUS_2), load on CPU $BENCH_CPU"

if [ "$DO_MATRIX" = 1 ]; then
    echo "plugboard, 1 worker"
    start_daemon "$DAEMON" 1 "$SERVER_CPU"
    # First, while the worker's heap is fresh: no freed memory to hide growth.
    if [ "$DO_MEMORY" = 1 ]; then memory; fi
    for kind in search "binary 64" "binary 4k" "echo 64" "echo 4k"; do
        set -- $kind
        for p in 1 16; do pb plugboard 1 "$1" "${2:--}" 50 "$p" keep; done
    done
    for kind in "binary 1M" "echo 64k" "echo 1M"; do
        set -- $kind
        for p in 1 16; do pb plugboard 1 "$1" "$2" 1 "$p" keep; done
    done
    for c in 1 1000; do
        for p in 1 16; do pb plugboard 1 search - "$c" "$p" keep; done
    done
    pb plugboard 1 search - 50 1 new-conn
    pb plugboard 1 binary 64 50 1 new-conn
    stop_server

    echo "plugboard, 2 workers"
    start_daemon "$DAEMON" 2 "$SERVER_CPUS_2"
    for c in 1 50 1000; do
        for p in 1 16; do pb plugboard 2 search - "$c" "$p" keep; done
    done
    pb plugboard 2 search - 50 1 new-conn
    stop_server
    listeners_rows
fi
if [ "$SCALE" -gt 0 ]; then
    echo "scaling: 1 to $SCALE workers on CPUs 0-$((SCALE - 1)), load on CPUs $SCALE-$((NCPU - 1))"
    scale_rows
fi

# What a Prometheus server scraping /metrics every 100 ms costs the daemon:
# the search at pipeline 16 without and with a scraper (on the load's CPU),
# in two alternating rounds.
scrape() {
    taskset -c "$BENCH_CPU" python3 - "$HTTP_PORT" "$WORK/scrapes" <<'PYSCRAPE' &
import http.client, sys, time
# One kept-alive connection, as Prometheus scrapes.
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
n = 0
while True:
    start = time.monotonic()
    conn.request("GET", "/metrics")
    conn.getresponse().read()
    n += 1
    open(sys.argv[2], "w").write(str(n))
    time.sleep(max(0.0, 0.1 - (time.monotonic() - start)))
PYSCRAPE
    SCRAPER_PID=$!
    PIDS="$PIDS $SCRAPER_PID"
}
# The daemon's own CPU per scrape, on an idle daemon: SCRAPES scrapes as
# fast as one connection goes, against the growth of the server's ticks.
scrape_cost() {
    local before after
    before=$(cpu_ticks "$SERVER_PID")
    taskset -c "$BENCH_CPU" python3 - "$HTTP_PORT" 2000 <<'PYSCRAPE'
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
for _ in range(int(sys.argv[2])):
    conn.request("GET", "/metrics")
    conn.getresponse().read()
PYSCRAPE
    after=$(cpu_ticks "$SERVER_PID")
    echo "$(( (after - before) * 1000000 / TICKS / 2000 ))" >"$WORK/scrape-cost"
    echo "  one scrape costs the idle daemon $(cat "$WORK/scrape-cost") us of CPU"
}
if [ "$DO_MATRIX" = 1 ]; then
    echo "plugboard, 1 worker, /metrics scraped every 100 ms or not"
    HTTP_PORT=$(free_port)
    start_daemon "$DAEMON" 1 "$SERVER_CPU"
    for round in 1 2; do
        pb unscraped 1 search - 50 16 keep
        scrape
        pb scraped 1 search - 50 16 keep
        kill "$SCRAPER_PID" 2>/dev/null || true
        wait "$SCRAPER_PID" 2>/dev/null || true
        echo "  scraper: $(cat "$WORK/scrapes" 2>/dev/null || echo 0) scrapes in the row"
    done
    scrape_cost
    stop_server
    HTTP_PORT=
fi

if [ "$DO_TLS" = 1 ]; then
    echo "plugboard over TLS, 1 worker"
    if start_daemon "$DAEMON" 1 "$SERVER_CPU" "$PLUGINS" tls; then
        PB_FLAGS="--ca $TLS_DIR/ca.crt"
        for p in 16 1; do pb plugboard-tls 1 search - 50 "$p" keep; done
        PB_FLAGS=
        stop_server
    fi
fi

if [ "$DO_REDIS" = 1 ]; then
    echo "redis-server PING"
    PORT=$(free_port)
    taskset -c "$SERVER_CPU" redis-server --bind 127.0.0.1 --port "$PORT" --save '' \
        --appendonly no --daemonize no --maxclients 10000 >"$WORK/redis.log" 2>&1 &
    SERVER_PID=$!
    PIDS="$PIDS $SERVER_PID"
    wait_port "$PORT"
    for c in 1 50 1000; do
        for p in 1 16; do redis "$c" "$p" 1; done
    done
    redis 50 1 0
    stop_server

    if [ "$DO_TLS" = 1 ]; then
        echo "redis-server PING over TLS"
        PORT=$(free_port)
        taskset -c "$SERVER_CPU" redis-server --bind 127.0.0.1 --port 0 --tls-port "$PORT" \
            --tls-cert-file "$TLS_DIR/server.crt" --tls-key-file "$TLS_DIR/server.key" \
            --tls-ca-cert-file "$TLS_DIR/ca.crt" --tls-auth-clients no --save '' \
            --appendonly no --daemonize no --maxclients 10000 >"$WORK/redis-tls.log" 2>&1 &
        SERVER_PID=$!
        PIDS="$PIDS $SERVER_PID"
        # A redis built without TLS refuses the --tls-* directives and exits.
        sleep 0.5
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "bench.sh: redis-server has no TLS ($(grep -m1 -i -e error -e bad "$WORK/redis-tls.log")); skipping redis over TLS" >&2
            SERVER_PID=
        elif ! redis-benchmark --help 2>&1 | grep -q -e --tls; then
            echo "bench.sh: redis-benchmark has no --tls; skipping redis over TLS" >&2
            stop_server
        else
            wait_port "$PORT"
            REDIS_LABEL=redis-tls REDIS_FLAGS="--tls --cacert $TLS_DIR/ca.crt"
            for p in 16 1; do redis 50 "$p" 1; done
            REDIS_LABEL=redis REDIS_FLAGS=
            stop_server
        fi
    fi
fi

if [ "$DO_MINIMAL" = 1 ]; then
    echo "minimal-server (the floor)"
    PORT=$(free_port)
    taskset -c "$SERVER_CPU" "$MINIMAL" "$PORT" >"$WORK/minimal.log" 2>&1 &
    SERVER_PID=$!
    PIDS="$PIDS $SERVER_PID"
    wait_port "$PORT"
    for p in 16 1; do pb minimal 1 search - 50 "$p" keep; done
    pb minimal 1 search - 50 1 new-conn
    stop_server
fi

if [ "$DO_PYTHON" = 1 ]; then
    echo "the guide's Python server"
    PORT=$(free_port)
    taskset -c "$SERVER_CPU" python3 "$SRCDIR/tools/bench-guide-server.py" -q 127.0.0.1 "$PORT" \
        >"$WORK/python.log" 2>&1 &
    SERVER_PID=$!
    PIDS="$PIDS $SERVER_PID"
    wait_port "$PORT"
    pb python 1 search - 1 1 new-conn
    pb python 1 search - 50 1 new-conn
    pb python 1 binary 64 50 1 new-conn
    stop_server
fi

if [ -n "$BEFORE" ]; then
    echo "before/after: $BEFORE against $DAEMON"
    for round in 1 2; do
        for build in before after; do
            bin=$DAEMON plugins=$PLUGINS
            [ "$build" = before ] && bin=$BEFORE plugins=${BEFORE_PLUGINS:-$PLUGINS}
            start_daemon "$bin" 1 "$SERVER_CPU" "$plugins"
            # Idle memory first, on the fresh worker, as for the main rows.
            if [ "$DO_MEMORY" = 1 ] && [ "$round" = 1 ]; then
                rm -f "$WORK/hold"
                memory "$WORK/memory-$build.tsv"
            fi
            pb "$build" 1 search - 50 16 keep
            pb "$build" 1 search - 50 1 keep
            pb "$build" 1 search - 1 1 keep
            pb "$build" 1 echo 4k 50 1 keep
            pb "$build" 1 echo 64k 1 16 keep
            pb "$build" 1 search - 50 1 new-conn
            stop_server
        done
    done
fi

python3 - "$RESULTS" "$WORK/memory.tsv" "$OUT" "$DURATION" "$BEFORE" "$SERVER_CPU" \
    "$SERVER_CPUS_2" "$BENCH_CPU" <<'EOF'
import os, platform, re, subprocess, sys
results, memory, out, duration, before, cpu1, cpu2, cpub = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(results) if l.strip()]
cols = "server workers kind size conns pipeline mode rps mbin mbout p50 p99 errors cpu".split()
rows = [dict(zip(cols, r)) for r in rows]

def find(server, kind, conns, pipeline, mode, workers="1", size=None):
    hits = [r for r in rows if r["server"] == server and r["kind"] == kind
            and r["conns"] == str(conns) and r["pipeline"] == str(pipeline)
            and r["mode"] == mode and r["workers"] == workers
            and (size is None or r["size"] == size)]
    return hits

def best_rps(hits):
    return max(float(r["rps"]) for r in hits) if hits else None

def fmt(x, digits=0):
    try:
        return f"{float(x):,.{digits}f}"
    except ValueError:
        return x

model = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
lines = []
w = lines.append
w(f"Measured on {os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
  f"{duration} s per cell. Servers ran on CPU {cpu1} (plugboard with 2 workers: "
  f"CPUs {cpu2}), the load generators on CPU {cpub} (`taskset`). "
  "Server CPU is utime + stime of all the server's processes "
  "(/proc/PID/stat) during the cell, divided by the requests answered.")
w("")
w("| server | workers | kind | size | conns | pipeline | mode | requests/s | MB/s in | MB/s out | p50 us | p99 us | errors | server CPU us/req |")
w("|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    if r["server"] in ("before", "after"):
        continue
    w(f"| {r['server']} | {r['workers']} | {r['kind']} | {r['size']} | {r['conns']} | "
      f"{r['pipeline']} | {r['mode']} | {fmt(r['rps'])} | {fmt(r['mbin'], 1)} | "
      f"{fmt(r['mbout'], 1)} | {fmt(r['p50'])} | {fmt(r['p99'])} | {r['errors']} | {r['cpu']} |")
w("")

def cpu(server, kind, pipeline, mode, workers="1"):
    """The cell's server CPU per request; of several rounds, the lowest."""
    hits = [float(r["cpu"]) for r in find(server, kind, 50, pipeline, mode, workers)
            if r["cpu"] not in ("", "-")]
    return min(hits) if hits else None

def show(v):
    return f"{v:.2f}" if v is not None else "-"

def times(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "-"

cells = [("search P=16", 16, "keep"), ("search P=1", 1, "keep"),
         ("new connection per request", 1, "new-conn")]
if any(cpu(s, k, p, m) is not None for s, k in (("redis", "ping"), ("minimal", "search"))
       for _, p, m in cells):
    w("Server CPU per request (us), plugboard against redis-server answering PING and "
      "tools/minimal-server (the floor: one thread, epoll, a pre-encoded answer), "
      "50 connections, 1 worker:")
    w("")
    w("| cell | plugboard | redis PING | minimal server | plugboard / redis | plugboard / minimal |")
    w("|---|---:|---:|---:|---:|---:|")
    for label, p, mode in cells:
        pb, rd, mn = (cpu("plugboard", "search", p, mode), cpu("redis", "ping", p, mode),
                      cpu("minimal", "search", p, mode))
        w(f"| {label} | {show(pb)} | {show(rd)} | {show(mn)} | {times(pb, rd)} | {times(pb, mn)} |")
    w("")

if any(find(s, "search", 50, 16, "keep", "2") for s in ("shared", "reuseport")):
    w(f"One shared listening socket against a socket per worker (reuseport), server CPU per "
      f"request (us) with 1 and 2 workers, every worker on CPU {cpu1} "
      "(search, 50 connections; the lower of two alternating rounds):")
    w("")
    w("| listener | cell | 1 worker | 2 workers | 2 / 1 | req/s 1 worker | 2 workers |")
    w("|---|---|---:|---:|---:|---:|---:|")
    for listener in ("shared", "reuseport"):
        for label, p, mode in cells:
            one, two = cpu(listener, "search", p, mode, "1"), cpu(listener, "search", p, mode, "2")
            r1 = best_rps(find(listener, "search", 50, p, mode, "1"))
            r2 = best_rps(find(listener, "search", 50, p, mode, "2"))
            w(f"| {listener} | {label} | {show(one)} | {show(two)} | {times(two, one)} | "
              f"{fmt(r1) if r1 is not None else '-'} | {fmt(r2) if r2 is not None else '-'} |")
    w("")

scale = [r for r in rows if r["server"].startswith("scale-")]
if scale:
    w("Scaling (`--scale`): workers on CPUs 0 to workers - 1, one load generator with 50 "
      "connections on each other CPU; requests/s summed over them:")
    w("")
    w("| listener | workers | cell | conns | requests/s | / 1 worker | server CPU us/req | errors |")
    w("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in scale:
        base = [b for b in scale if b["server"] == r["server"] and b["workers"] == "1"
                and b["pipeline"] == r["pipeline"] and b["mode"] == r["mode"]]
        ratio = float(r["rps"]) / float(base[0]["rps"]) if base and float(base[0]["rps"]) else 0
        cell = "new-conn" if r["mode"] == "new-conn" else f"P={r['pipeline']}"
        w(f"| {r['server'][6:]} | {r['workers']} | search {cell} | {r['conns']} | {fmt(r['rps'])} | "
          f"{ratio:.2f}x | {r['cpu']} | {r['errors']} |")
    w("")

if os.path.exists(memory):
    _, n, rss0, rss1, per = open(memory).read().split()
    w(f"Idle connections: {n} connections raised the worker's RSS from {rss0} kB "
      f"to {rss1} kB: **{per} bytes per connection**.")
    w("")
sides = [os.path.join(os.path.dirname(memory), f"memory-{b}.tsv") for b in ("before", "after")]
if all(os.path.exists(f) for f in sides):
    per = [open(f).read().split()[4] for f in sides]
    w(f"Idle connections before/after (`--before`, each on a fresh worker of its own daemon): "
      f"{per[0]} bytes per connection before, {per[1]} after.")
    w("")

w("Targets, as ratios within this run:")
w("")
w("| target | measured | met |")
w("|---|---|---|")
def ratio(label, a, b, want):
    if a is None or b is None or b == 0:
        w(f"| {label} | not measured | - |")
        return
    q = a / b
    w(f"| {label} | {a:,.0f} / {b:,.0f} = {q:.2f}x | {'yes' if q >= want else 'no'} |")
ratio("search 50 conns P=16 >= 1.0x redis PING -P 16",
      best_rps(find("plugboard", "search", 50, 16, "keep")),
      best_rps(find("redis", "ping", 50, 16, "keep")), 1.0)
ratio("search 50 conns P=1 >= 1.0x redis PING -P 1",
      best_rps(find("plugboard", "search", 50, 1, "keep")),
      best_rps(find("redis", "ping", 50, 1, "keep")), 1.0)
ratio("new connection per request >= 1.5x the guide's Python server (search, 50 conns)",
      best_rps(find("plugboard", "search", 50, 1, "new-conn")),
      best_rps(find("python", "search", 50, 1, "new-conn")), 1.5)
echo = find("plugboard", "echo", 1, 16, "keep", size="64k")
if echo:
    mb = min(float(echo[0]["mbin"]), float(echo[0]["mbout"]))
    w(f"| echo 64 KiB >= 1 GB/s each way (1 conn, P=16) | {mb:,.0f} MB/s in, "
      f"{float(echo[0]['mbout']):,.0f} MB/s out | {'yes' if mb >= 1000 else 'no'} |")
if os.path.exists(memory):
    per = int(open(memory).read().split()[4])
    w(f"| 10 000 idle connections <= 1 KiB RSS each | {per} bytes | {'yes' if per <= 1024 else 'no'} |")
w("")

plain = [r for r in rows if r["server"] == "unscraped"]
scraped = [r for r in rows if r["server"] == "scraped"]
if plain and scraped:
    w("Scraping `/metrics` every 100 ms (search, 50 connections, pipeline 16, 1 worker with an "
      "http listener; a Python scraper on the load's CPU), two alternating rounds:")
    w("")
    w("| round | server CPU us/req unscraped | scraped | scraped / unscraped | req/s unscraped | scraped |")
    w("|---:|---:|---:|---:|---:|---:|")
    for i, (u, s) in enumerate(zip(plain, scraped), 1):
        cu, cs = float(u["cpu"]), float(s["cpu"])
        w(f"| {i} | {cu:.2f} | {cs:.2f} | {cs / cu if cu else 0:.3f}x | {fmt(u['rps'])} | {fmt(s['rps'])} |")
    tu = sum(float(r["cpu"]) for r in plain) / len(plain)
    ts = sum(float(r["cpu"]) for r in scraped) / len(scraped)
    w(f"| mean | {tu:.2f} | {ts:.2f} | {ts / tu if tu else 0:.3f}x | | |")
    w("")
    cost_file = os.path.join(os.path.dirname(results), "scrape-cost")
    if os.path.exists(cost_file):
        cost = int(open(cost_file).read())
        busy = tu * sum(float(r["rps"]) for r in plain) / len(plain) / 1e6
        w(f"On the idle daemon one scrape costs {cost} us of server CPU (2000 scrapes on one "
          f"connection): 10 a second add {cost * 10 / 1e6 / busy * 100:.2f} % to the "
          f"{busy:.2f} CPU-seconds a second the unscraped rows kept the server busy. The "
          "scraped rows' difference includes the scraper's own CPU, taken from the load "
          "generator's core.")
        w("")

tls_rows = [(p, find("plugboard", "search", 50, p, "keep"), find("plugboard-tls", "search", 50, p, "keep"),
             find("redis-tls", "ping", 50, p, "keep")) for p in (16, 1)]
if any(t or r for _, _, t, r in tls_rows):
    w("TLS (search, 50 connections, 1 worker; redis answering PING over TLS). "
      "Server CPU per request is the figure to compare; requests/s follow:")
    w("")
    w("| pipeline | server CPU us/req: plugboard / plugboard TLS / redis TLS | "
      "plugboard TLS / plain | plugboard TLS / redis TLS | req/s: plugboard / plugboard TLS / redis TLS |")
    w("|---|---:|---:|---:|---:|")
    def cpu_of(row):
        return float(row[0]["cpu"]) if row and row[0]["cpu"] not in ("", "-") else None
    def q(a, b):
        return f"{a / b:.2f}x" if a is not None and b else "-"
    def show(v, f="{:.2f}"):
        return f.format(v) if v is not None else "-"
    for p, plain, tls, rtls in tls_rows:
        a, t, r = cpu_of(plain), cpu_of(tls), cpu_of(rtls)
        rps = " / ".join(fmt(x) if x is not None else "-"
                         for x in (best_rps(plain), best_rps(tls), best_rps(rtls)))
        w(f"| {p} | {show(a)} / {show(t)} / {show(r)} | {q(t, a)} | {q(t, r)} | {rps} |")
    w("")

pairs = [r for r in rows if r["server"] in ("before", "after")]
if pairs:
    w(f"Before/after (`--before {os.path.basename(before)}`), 1 worker, two alternating rounds, "
      "best round shown:")
    w("")
    w("| kind | size | conns | pipeline | mode | before req/s | after req/s | ratio | before CPU us/req | after CPU us/req |")
    w("|---|---|---|---|---|---:|---:|---:|---:|---:|")
    seen = []
    for r in pairs:
        key = (r["kind"], r["size"], r["conns"], r["pipeline"], r["mode"])
        if key in seen:
            continue
        seen.append(key)
        def pick(server):
            hits = [x for x in pairs if x["server"] == server and
                    (x["kind"], x["size"], x["conns"], x["pipeline"], x["mode"]) == key]
            return max(hits, key=lambda x: float(x["rps"])) if hits else None
        b, a = pick("before"), pick("after")
        if b is None or a is None:
            continue
        w(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {fmt(b['rps'])} | "
          f"{fmt(a['rps'])} | {float(a['rps']) / max(float(b['rps']), 1):.2f}x | {b['cpu']} | {a['cpu']} |")
    w("")

block = "<!-- bench:begin -->\n" + "\n".join(lines) + "\n<!-- bench:end -->"
text = open(out).read() if os.path.exists(out) else ""
if "<!-- bench:begin -->" in text and "<!-- bench:end -->" in text:
    text = re.sub(r"<!-- bench:begin -->.*<!-- bench:end -->", lambda m: block, text, flags=re.S)
else:
    text = "# Benchmarks\n\n" + block + "\n"
open(out, "w").write(text)
print(f"bench.sh: results written to {out}")
EOF
