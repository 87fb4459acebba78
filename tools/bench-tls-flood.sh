#!/bin/bash
# bench-tls-flood.sh - measures how well the daemon keeps serving its
# established TLS connections while a flood of new TLS handshakes arrives.
#
# It makes an ECDSA P-256 CA and server certificate, starts the daemon of
# this build tree with one TLS listener, and runs plugboard-bench twice on
# CONNECTIONS established TLS connections at pipeline 1: alone (the
# baseline), then while a second plugboard-bench opens RATE new TLS
# connections per second, each for one request. It prints both runs, the
# two p99 latencies side by side, and the daemon's CPU time (utime + stime
# of the master and the workers, from /proc/PID/stat) per request.
#
# Usage: tools/bench-tls-flood.sh [OPTIONS]
#   -r, --rate N          new TLS connections per second in the flood (2000)
#   -d, --duration SEC    seconds of each run (10)
#   -w, --workers N       daemon worker processes (1)
#   -c, --connections N   established connections (50)
#       --flood-connections N   flood connections open at once at most (500)
#       --full-handshakes       no session resumption in the flood
#   -k, --keep            keep the temporary directory (certificates,
#                         configuration, logs, JSON reports) and say where
# Environment: BUILDDIR (default .) holds daemon/plugboard,
# tools/plugboard-bench, tools/plugboard-cli and plugins/.libs. Needs
# openssl, python3 and taskset. The daemon runs on CPU 0 and the load on the
# last CPU; with three CPUs or more the flood has a CPU of its own, else it
# shares the measuring client's at the lowest priority (nice 19), so that it
# cannot delay the replies being timed. Its report says what rate it
# reached.
set -eu

BUILDDIR=$(cd "${BUILDDIR:-.}" && pwd)
SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
# free_port (below the ephemeral range, where the flood's own client
# sockets cannot hold the port), the shipped plugins and routes, and
# cpu_ticks as tools/bench.sh measures.
# shellcheck source=tools/bench-lib.sh
. "$SRCDIR/tools/bench-lib.sh"
DAEMON=$BUILDDIR/daemon/plugboard
BENCH=$BUILDDIR/tools/plugboard-bench
CLI=$BUILDDIR/tools/plugboard-cli
PLUGINS=$BUILDDIR/plugins/.libs
RATE=2000
DURATION=10
WORKERS=1
CONNECTIONS=50
FLOOD_CONNECTIONS=500
FLOOD_FLAGS=
KEEP=0

while [ $# -gt 0 ]; do
    case $1 in
    -r|--rate) RATE=$2; shift ;;
    -d|--duration) DURATION=$2; shift ;;
    -w|--workers) WORKERS=$2; shift ;;
    -c|--connections) CONNECTIONS=$2; shift ;;
    --flood-connections) FLOOD_CONNECTIONS=$2; shift ;;
    --full-handshakes) FLOOD_FLAGS=--no-resume ;;
    -k|--keep) KEEP=1 ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-tls-flood.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

for f in "$DAEMON" "$BENCH" "$CLI"; do
    [ -x "$f" ] || { echo "bench-tls-flood.sh: $f not built (set BUILDDIR)" >&2; exit 2; }
done
for tool in openssl python3 taskset; do
    command -v "$tool" >/dev/null || { echo "bench-tls-flood.sh: $tool not found" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/plugboard-tls-flood.XXXXXX")
DAEMON_PID=
BENCH_PIDS=
cleanup() {
    for p in $BENCH_PIDS $DAEMON_PID; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then
        echo "bench-tls-flood.sh: files kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The flood needs a descriptor per open connection, and so does the daemon.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

NCPU=$(nproc)
DAEMON_CPUS=0
[ "$WORKERS" -ge 2 ] && [ "$NCPU" -ge 4 ] && DAEMON_CPUS=0,1
LOAD_CPU=$((NCPU - 1))
FLOOD_CPU=$LOAD_CPU
[ "$NCPU" -ge 3 ] && FLOOD_CPU=$((NCPU - 2))

# The test certificates: a CA, and a server certificate for 127.0.0.1 and
# localhost, ECDSA P-256.
make_certificates() {
    "$SRCDIR/tests/tls/make-certs.sh" "$1" >"$1/openssl.log" 2>&1 \
        || { cat "$1/openssl.log" >&2; return 1; }
}

make_certificates "$WORK"
PORT=$(free_port)
{ shipped_plugins_and_routes "$PLUGINS"; cat <<EOF
workers = $WORKERS;
log = { level = "warning"; target = "stderr"; };
limits = { max_connections = 20000; idle_timeout = 0.0; };
listeners = (
  { name = "secure"; address = "127.0.0.1"; port = $PORT; framing = "frame";
    tls = { certificate = "$WORK/server.crt"; key = "$WORK/server.key"; min_version = "1.2"; }; }
);
EOF
} >"$WORK/plugboard.conf"

taskset -c "$DAEMON_CPUS" "$DAEMON" -f -c "$WORK/plugboard.conf" 2>"$WORK/daemon.log" &
DAEMON_PID=$!
# Ready once a search over TLS is answered, which also proves the listener
# and the certificates right before anything is measured.
ready=0
for _ in $(seq 100); do
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        echo "bench-tls-flood.sh: the daemon exited:" >&2
        cat "$WORK/daemon.log" >&2
        exit 1
    fi
    if "$CLI" -w 1 --ca "$WORK/ca.crt" 127.0.0.1 "$PORT" search morpheus \
        >"$WORK/cli.out" 2>"$WORK/cli.err"; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ "$ready" = 0 ]; then
    echo "bench-tls-flood.sh: no answer over TLS on port $PORT:" >&2
    cat "$WORK/cli.err" "$WORK/daemon.log" >&2
    exit 1
fi

TLS_FLAGS="--ca $WORK/ca.crt"

echo "bench-tls-flood.sh: daemon with $WORKERS worker(s) on CPU $DAEMON_CPUS;" \
     "$CONNECTIONS established TLS connections (CPU $LOAD_CPU), pipeline 1, $DURATION s;" \
     "flood of $RATE new TLS connections/s (CPU $FLOOD_CPU${FLOOD_FLAGS:+, full handshakes})"

# established NAME: the measuring run, its JSON report in $WORK/NAME.json.
established() {
    # shellcheck disable=SC2086
    taskset -c "$LOAD_CPU" "$BENCH" -q --json $TLS_FLAGS -c "$CONNECTIONS" -P 1 \
        -d "$DURATION" 127.0.0.1 "$PORT" >"$WORK/$1.json" 2>"$WORK/$1.err" || true
}

before=$(cpu_ticks "$DAEMON_PID")
established baseline
after=$(cpu_ticks "$DAEMON_PID")
BASELINE_TICKS=$((after - before))

before=$(cpu_ticks "$DAEMON_PID")
# shellcheck disable=SC2086
nice -n 19 taskset -c "$FLOOD_CPU" "$BENCH" -q --json $TLS_FLAGS $FLOOD_FLAGS \
    --rate "$RATE" -c "$FLOOD_CONNECTIONS" -d "$DURATION" 127.0.0.1 "$PORT" \
    >"$WORK/flood.json" 2>"$WORK/flood.err" &
BENCH_PIDS=$!
established loaded
wait "$BENCH_PIDS" || true
BENCH_PIDS=
after=$(cpu_ticks "$DAEMON_PID")
FLOOD_TICKS=$((after - before))

for run in baseline loaded flood; do
    if [ ! -s "$WORK/$run.json" ]; then
        echo "bench-tls-flood.sh: no report from the $run run:" >&2
        cat "$WORK/$run.err" "$WORK/daemon.log" >&2
        exit 1
    fi
    # The bench's own diagnostics (wrong replies, lost connections, a pace
    # that fell behind) say why figures look the way they do.
    if [ -s "$WORK/$run.err" ]; then sed "s/^/  [$run] /" "$WORK/$run.err" >&2; fi
done

python3 - "$WORK" "$BASELINE_TICKS" "$FLOOD_TICKS" "$TICKS" "$RATE" <<'EOF'
import json, os, sys
work, base_ticks, flood_ticks, hz, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
runs = {n: json.load(open(os.path.join(work, n + ".json"))) for n in ("baseline", "loaded", "flood")}

def show(title, r):
    lat = r["latency_us"]
    print(f"{title}")
    print(f"  requests      {r['requests']} in {r['seconds']:.2f} s, {r['rps']:,.1f}/s, "
          f"{r['errors']} errors ({r['connect_errors']} failed connects)")
    print(f"  latency (us)  p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  "
          f"p99.9 {lat['p999']:.1f}  max {lat['max']:.1f}")
    if r.get("new_conn"):
        print(f"  connections   {r['connections_opened']} opened, {r['connections_per_s']:,.1f}/s "
              f"(asked for {r.get('rate', 0):g}/s)")
    tls = r.get("tls")
    if tls:
        hs = tls["handshake_us"]
        print(f"  TLS           {tls['version']} {tls['cipher']}, {tls['handshakes']} handshakes, "
              f"{tls['resumed']} resumed; handshake (us) p50 {hs['p50']:.1f}  p99 {hs['p99']:.1f}  "
              f"max {hs['max']:.1f}")
    print(f"  client CPU    {r['cpu_percent']:.0f}% of one core")

def daemon(ticks, seconds, requests):
    cpu = ticks / hz
    per = cpu * 1e6 / requests if requests else float("nan")
    return cpu, per, f"{cpu:.2f} s CPU in {seconds:.1f} s ({cpu / seconds * 100:.0f}% of one core), {per:.2f} us per request"

b, l, f = runs["baseline"], runs["loaded"], runs["flood"]
show("baseline: established connections alone", b)
_, base_per, text = daemon(base_ticks, b["seconds"], b["requests"])
print(f"  daemon        {text}")
print()
show("under the flood: established connections", l)
show("under the flood: the flood", f)
seconds = max(l["seconds"], f["seconds"])
requests = l["requests"] + f["requests"]
cpu, _, text = daemon(flood_ticks, seconds, requests)
print(f"  daemon        {text} (both runs' requests)")
if f["connections_opened"] and base_per == base_per:
    extra = (cpu - base_per * l["requests"] / 1e6) * 1e6 / f["connections_opened"]
    print(f"                about {extra:.0f} us per flood connection beyond what the "
          f"established requests cost in the baseline")
print()
p99b, p99l = b["latency_us"]["p99"], l["latency_us"]["p99"]
ratio = f"{p99l / p99b:.2f}x" if p99b else "-"
print(f"p99 of the established connections: {p99b:.1f} us alone, {p99l:.1f} us under a flood of "
      f"{f['connections_per_s']:,.0f} new TLS connections/s ({ratio}); "
      f"requests/s {b['rps']:,.0f} -> {l['rps']:,.0f}")
if f["connections_per_s"] < 0.95 * rate:
    print(f"note: the flood reached {f['connections_per_s']:,.0f} of the {rate:g} connections/s asked "
          f"(its client CPU or --flood-connections may be the limit, or the daemon)")
EOF
