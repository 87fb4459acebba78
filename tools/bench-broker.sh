#!/bin/bash
# bench-broker.sh - measures the broker plugins side by side with Redis:
# pubsub fan-out (one publisher, many subscribers of one topic) against
# redis-server's PUBLISH/SUBSCRIBE driven by the same client (each row on
# one server, then at once on the other), and the
# queue plugin's enqueue/dequeue/ack cycles on its SQLite backend and on
# its Redis backend. Each row reports messages per second and the servers'
# CPU time (utime + stime of every server process, from /proc/PID/stat)
# per delivered message or per queue operation, and the whole table is
# written into docs/benchmarks.md between the bench-broker markers.
#
# Usage: tools/bench-broker.sh [OPTIONS]
#   -d, --duration SEC   seconds measured per row (default 3)
#   -q, --quick          1 s per row
#   -o, --out FILE       where to write (default SRCDIR/docs/benchmarks.md);
#                        only the part between the bench-broker markers is
#                        replaced
#       --no-write       print the table only
#       --no-redis       skip every row that needs redis-server
#   -k, --keep           keep the temporary directory and say where
# Environment: BUILDDIR (default .) holds daemon/plugboard,
# tools/plugboard-broker-bench and plugins/.libs. Needs python3 and taskset,
# and redis-server for the comparison and the Redis backend (Debian:
# redis-server). The servers run on CPU 0, the load on the last CPU. Not
# part of make check: the numbers are recorded, not judged.
set -eu

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILDDIR=$(cd "${BUILDDIR:-.}" && pwd)
# free_port (below the ephemeral range), listening and cpu_ticks.
# shellcheck source=tools/bench-lib.sh
. "$SRCDIR/tools/bench-lib.sh"
DAEMON=$BUILDDIR/daemon/plugboard
BENCH=$BUILDDIR/tools/plugboard-broker-bench
PLUGINS=$BUILDDIR/plugins/.libs
OUT=$SRCDIR/docs/benchmarks.md
DURATION=3
WRITE=1
DO_REDIS=1
KEEP=0

while [ $# -gt 0 ]; do
    case $1 in
    -d|--duration) DURATION=$2; shift ;;
    -q|--quick) DURATION=1 ;;
    -o|--out) OUT=$2; shift ;;
    --no-write) WRITE=0 ;;
    --no-redis) DO_REDIS=0 ;;
    -k|--keep) KEEP=1 ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-broker.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

for f in "$DAEMON" "$BENCH" "$PLUGINS/pubsub.so" "$PLUGINS/queue.so"; do
    [ -e "$f" ] || { echo "bench-broker.sh: $f not built (set BUILDDIR)" >&2; exit 2; }
done
for tool in python3 taskset; do
    command -v "$tool" >/dev/null || { echo "bench-broker.sh: $tool not found" >&2; exit 2; }
done
if [ "$DO_REDIS" = 1 ] && ! command -v redis-server >/dev/null; then
    echo "bench-broker.sh: redis-server not found; skipping its rows (apt-get install redis-server)" >&2
    DO_REDIS=0
fi

bench_workdir bench-broker
RESULTS=$WORK/results.tsv
: >"$RESULTS"

# A thousand subscribers need as many descriptors, in the bench and the daemon.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

NCPU=$(nproc)
SERVER_CPU=0
LOAD_CPU=$((NCPU - 1))

wait_listening() {
    for _ in $(seq 200); do
        listening "$1" && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench-broker.sh: nothing listens on port $1:" >&2
    cat "$3" >&2
    exit 1
}

# start_redis NAME: a private redis-server without persistence on a free
# port, pinned to the servers' CPU; sets REDIS_PORT and REDIS_PID.
start_redis() {
    REDIS_PORT=$(free_port)
    taskset -c "$SERVER_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
        --appendonly no --daemonize no --maxclients 10000 --dir "$WORK" \
        >"$WORK/$1.log" 2>&1 &
    REDIS_PID=$!
    SERVER_PIDS="$SERVER_PIDS $REDIS_PID"
    wait_listening "$REDIS_PORT" "$REDIS_PID" "$WORK/$1.log"
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# start_daemon QUEUE_SETTINGS: the daemon with the pubsub and queue plugins,
# one worker, pinned to the servers' CPU; sets PORT and DAEMON_PID. Fails
# with the daemon's word when it refuses the configuration (a queue backend
# this build lacks).
start_daemon() {
    PORT=$(free_port)
    cat >"$WORK/plugboard.conf" <<EOF
plugin_dir = "$PLUGINS";
workers = 1;
log = { level = "warning"; target = "stderr"; };
limits = { max_connections = 20000; idle_timeout = 0.0; max_pending_output = 4194304; };
listeners = ( { name = "app"; address = "127.0.0.1"; port = $PORT; framing = "frame"; } );
plugins = (
  { name = "pubsub"; module = "pubsub"; },
  { name = "queue"; module = "queue"; settings = { $1 }; }
);
routes = (
  { content_type = "text/json"; action = "subscribe"; plugin = "pubsub"; },
  { content_type = "text/json"; action = "unsubscribe"; plugin = "pubsub"; },
  { content_type = "text/json"; action = "publish"; plugin = "pubsub"; },
  { content_type = "text/json"; action = "enqueue"; plugin = "queue"; },
  { content_type = "text/json"; action = "dequeue"; plugin = "queue"; },
  { content_type = "text/json"; action = "ack"; plugin = "queue"; },
  { content_type = "text/json"; action = "depth"; plugin = "queue"; }
);
EOF
    if ! "$DAEMON" -t -c "$WORK/plugboard.conf" >"$WORK/check.log" 2>&1; then
        sed '$d' "$WORK/check.log" >&2
        return 1
    fi
    taskset -c "$SERVER_CPU" "$DAEMON" -f -c "$WORK/plugboard.conf" 2>>"$WORK/daemon.log" &
    DAEMON_PID=$!
    SERVER_PIDS="$SERVER_PIDS $DAEMON_PID"
    wait_listening "$PORT" "$DAEMON_PID" "$WORK/daemon.log"
}

# run LABEL SERVER_PIDS HELPER_PIDS BENCH_ARGS...: one row. The CPU of
# SERVER_PIDS (and their children) is the server's; that of HELPER_PIDS, a
# store the daemon uses, is added to it and also shown apart.
run() {
    local label=$1 servers=$2 helpers=$3 json before helper_before after helper_after
    shift 3
    # Lists of process ids, split into words on purpose.
    # shellcheck disable=SC2086
    before=$(cpu_ticks $servers)
    # shellcheck disable=SC2086
    helper_before=$(cpu_ticks $helpers)
    json=$(timeout $((DURATION * 3 + 60)) taskset -c "$LOAD_CPU" "$BENCH" --json -d "$DURATION" \
               "$@" 2>>"$WORK/bench.log") || true
    # shellcheck disable=SC2086
    after=$(cpu_ticks $servers)
    # shellcheck disable=SC2086
    helper_after=$(cpu_ticks $helpers)
    if [ -z "$json" ]; then
        echo "bench-broker.sh: no report for $label $*:" >&2
        tail -3 "$WORK/bench.log" >&2
        return 0
    fi
    printf '%s\t%s\t%s\t%s\n' "$label" "$json" $((after - before)) \
        $((helper_after - helper_before)) >>"$RESULTS"
    python3 - "$label" "$json" $((after - before)) $((helper_after - helper_before)) "$TICKS" <<'EOF'
import json, sys
label, r, ticks, helper, hz = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cpu = (ticks + helper) / hz * 1e6
if r["benchmark"] == "fanout":
    per = cpu / r["delivered_total"] if r["delivered_total"] else 0
    print(f"  {label:<22} S={r['subscribers']:<5} {r['size']:>5} B  {r['delivered_per_s']:>12,.0f} delivered/s "
          f"{r['publishes_per_s']:>10,.0f} publishes/s  server {per:.3f} us/message  "
          f"lost {r['lost']}, errors {r['errors']}")
else:
    ops = 3 * r["cycles"]
    per = cpu / ops if ops else 0
    print(f"  {label:<22} C={r['clients']:<4} {'shared' if r['shared'] else 'own':<6} "
          f"{r['operations_per_s']:>10,.0f} operations/s  p50 cycle {r['cycle_latency_us']['p50']:,.0f} us  "
          f"server {per:.1f} us/operation  errors {r['errors']}")
EOF
}

echo "bench-broker.sh: $DURATION s per row; servers on CPU $SERVER_CPU, load on CPU $LOAD_CPU"

FANOUT_ROWS="1:64 10:64 100:64 1000:64 100:1024"
WINDOW=64

# Both servers run side by side and each row is measured on one, then at
# once on the other, so that a change in the machine's load meanwhile
# touches both alike; an idle server costs nothing to the other's row.
echo "pubsub fan-out"
start_daemon "path = \"$WORK/queue.db\";" || exit 1
if [ "$DO_REDIS" = 1 ]; then
    start_redis redis-pubsub
fi
for row in $FANOUT_ROWS; do
    run plugboard "$DAEMON_PID" "" fanout -s "${row%%:*}" -m "${row##*:}" -P "$WINDOW" 127.0.0.1 "$PORT"
    if [ "$DO_REDIS" = 1 ]; then
        run redis "$REDIS_PID" "" --redis fanout -s "${row%%:*}" -m "${row##*:}" -P "$WINDOW" \
            127.0.0.1 "$REDIS_PORT"
    fi
done
if [ "$DO_REDIS" = 1 ]; then
    stop_pid "$REDIS_PID"
fi

QUEUE_ROWS="1: 10: 10:--shared"

FILESYSTEM=$(df --output=fstype "$WORK" | tail -1)
echo "queue, SQLite backend ($FILESYSTEM under $WORK)"
for row in $QUEUE_ROWS; do
    # shellcheck disable=SC2086
    run queue-sqlite "$DAEMON_PID" "" queue -c "${row%%:*}" ${row#*:} 127.0.0.1 "$PORT"
done
stop_pid "$DAEMON_PID"

if [ "$DO_REDIS" = 1 ]; then
    echo "queue, Redis backend (a private redis-server without persistence)"
    start_redis redis-queue
    if start_daemon "backend = \"redis\"; url = \"redis://127.0.0.1:$REDIS_PORT\";"; then
        for row in $QUEUE_ROWS; do
            # shellcheck disable=SC2086
            run queue-redis "$DAEMON_PID" "$REDIS_PID" queue -c "${row%%:*}" ${row#*:} \
                127.0.0.1 "$PORT"
        done
        stop_pid "$DAEMON_PID"
    else
        echo "bench-broker.sh: skipping the Redis backend's rows" >&2
    fi
    stop_pid "$REDIS_PID"
fi

[ "$WRITE" = 1 ] || exit 0
python3 - "$RESULTS" "$OUT" "$DURATION" "$SERVER_CPU" "$LOAD_CPU" "$TICKS" "$WINDOW" \
    "$FILESYSTEM" <<'EOF'
import json, os, platform, re, sys
results, out, duration, cpu_server, cpu_load, hz, window, fs = sys.argv[1:]
hz = int(hz)
rows = []
for line in open(results):
    label, r, ticks, helper = line.rstrip("\n").split("\t")
    rows.append((label, json.loads(r), int(ticks), int(helper)))

def n(x, digits=0):
    return f"{x:,.{digits}f}"

model = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
lines = []
w = lines.append
w(f"Measured on {os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
  f"{duration} s per row. The servers ran on CPU {cpu_server}, the load on CPU {cpu_load} "
  "(`taskset`); plugboard with one worker. Server CPU is utime + stime of all the "
  "server's processes (/proc/PID/stat) during the row, divided by the messages "
  "delivered or the queue operations done.")
w("")
fanout = [x for x in rows if x[1]["benchmark"] == "fanout"]
if fanout:
    w(f"Fan-out: one publisher, S subscribers of one topic, window {window} (messages "
      "published and not yet delivered to every subscriber)"
      + ("; each row ran on plugboard, then at once on redis." if any(x[0] == "redis" for x in fanout)
         else "."))
    w("")
    w("| server | subscribers | message B | delivered/s | publishes/s | server CPU us/delivered | lost | errors |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, r, ticks, _ in fanout:
        per = ticks / hz * 1e6 / r["delivered_total"] if r["delivered_total"] else 0
        w(f"| {label} | {r['subscribers']} | {r['size']} | {n(r['delivered_per_s'])} | "
          f"{n(r['publishes_per_s'])} | {per:.3f} | {r['lost']} | {r['errors']} |")
    w("")
queue = [x for x in rows if x[1]["benchmark"] == "queue"]
if queue:
    w(f"Queue: C clients each enqueue a 64-byte message, dequeue one and ack it, on a "
      f"queue each or one shared queue. SQLite's database is on {fs}, committed "
      "synchronously; the Redis backend's redis-server keeps no persistence, and its CPU "
      "is counted in the server's (and shown apart).")
    w("")
    w("| backend | clients | queues | cycles/s | operations/s | cycle p50 us | cycle p99 us | server CPU us/operation | of which redis | errors |")
    w("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, r, ticks, helper in queue:
        ops = 3 * r["cycles"]
        per = (ticks + helper) / hz * 1e6 / ops if ops else 0
        redis = f"{helper / hz * 1e6 / ops:.1f}" if ops and label.endswith("redis") else "-"
        w(f"| {label.split('-', 1)[1]} | {r['clients']} | {'one shared' if r['shared'] else 'one each'} | "
          f"{n(r['cycles_per_s'])} | {n(r['operations_per_s'])} | {n(r['cycle_latency_us']['p50'])} | "
          f"{n(r['cycle_latency_us']['p99'])} | {per:.1f} | {redis} | {r['errors']} |")
    w("")

block = "<!-- bench-broker:begin -->\n" + "\n".join(lines) + "<!-- bench-broker:end -->"
text = open(out).read() if os.path.exists(out) else ""
if "<!-- bench-broker:begin -->" in text and "<!-- bench-broker:end -->" in text:
    text = re.sub(r"<!-- bench-broker:begin -->.*<!-- bench-broker:end -->", lambda m: block,
                  text, flags=re.S)
else:
    text = text.rstrip("\n") + "\n\n## Broker: fan-out and queues\n\n" + block + "\n"
open(out, "w").write(text)
print(f"bench-broker.sh: results written to {out}")
EOF
