#!/bin/bash
# bench-http.sh - the HTTP face against nginx: `GET /health` on a plugboard
# HTTP listener next to a private nginx answering `return 200 "ok";`, both
# loaded by ApacheBench in the same run. Each row is one ab setting (50
# keep-alive connections, 1 keep-alive connection, 50 connections with a new
# one per request); the columns give each server's requests/s and its CPU
# time per request answered (utime + stime of every server process, from
# /proc/PID/stat), and the ratio of the two.
#
# plugboard runs with one worker (its master is counted too); nginx runs as
# one process (worker_processes 1; master_process off; daemon off), with
# access_log off and keepalive_requests large enough never to close a
# connection. Both are pinned to CPU 0 and ab to the last CPU.
#
# Usage: tools/bench-http.sh [OPTIONS]
#   -n, --requests N     requests per row with 50 keep-alive connections
#                        (default 500000); the other rows send N / 4
#   -r, --rounds R       rounds, alternating the servers (default 2); each
#                        cell shows its round with the least CPU per request
#       --profile SEC    then record plugboard's worker for SEC seconds under
#                        ab -k -c 50 (perf record -e cpu-clock -g) and print
#                        the top of perf report
#   -k, --keep           keep the temporary directory and say where
# Environment: BUILDDIR (default .) holds daemon/plugboard and plugins/.libs.
# Needs python3, taskset, ab and nginx (Debian: apache2-utils, nginx-light or
# nginx), and perf for --profile (Debian: linux-perf). Not part of make
# check: the numbers are recorded, not judged.
set -eu

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILDDIR=$(cd "${BUILDDIR:-.}" && pwd)
# free_port (below the ephemeral range), listening and cpu_ticks.
# shellcheck source=tools/bench-lib.sh
. "$SRCDIR/tools/bench-lib.sh"
DAEMON=$BUILDDIR/daemon/plugboard
PLUGINS=$BUILDDIR/plugins/.libs
REQUESTS=500000
ROUNDS=2
PROFILE=0
KEEP=0

while [ $# -gt 0 ]; do
    case $1 in
    -n|--requests) REQUESTS=$2; shift ;;
    -r|--rounds) ROUNDS=$2; shift ;;
    --profile) PROFILE=$2; shift ;;
    -k|--keep) KEEP=1 ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-http.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

[ -x "$DAEMON" ] || { echo "bench-http.sh: $DAEMON not built (set BUILDDIR)" >&2; exit 2; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for tool in python3 taskset ab "$NGINX"; do
    command -v "$tool" >/dev/null || { echo "bench-http.sh: $tool not found" >&2; exit 2; }
done
if [ "$PROFILE" != 0 ] && ! command -v perf >/dev/null; then
    echo "bench-http.sh: perf not found (apt-get install linux-perf)" >&2
    exit 2
fi

bench_workdir bench-http
RESULTS=$WORK/results.tsv
: >"$RESULTS"

NCPU=$(nproc)
SERVER_CPU=0
LOAD_CPU=$((NCPU - 1))

wait_health() {
    for _ in $(seq 200); do
        python3 - "$1" 2>/dev/null <<'PY' && return 0
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1)
PY
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench-http.sh: nothing answers GET /health on port $1:" >&2
    cat "$3" >&2
    exit 1
}

PB_PORT=$(free_port)
cat >"$WORK/plugboard.conf" <<EOF
plugin_dir = "$PLUGINS";
workers = 1;
log = { level = "warning"; };
limits = { idle_timeout = 0.0; };
listeners = ( { name = "http"; address = "127.0.0.1"; port = $PB_PORT; framing = "http"; } );
plugins = ( { name = "echo"; module = "echo"; } );
routes = ( { plugin = "echo"; } );
EOF
taskset -c "$SERVER_CPU" "$DAEMON" -f -c "$WORK/plugboard.conf" 2>"$WORK/plugboard.log" &
PB_PID=$!
SERVER_PIDS="$SERVER_PIDS $PB_PID"
wait_health "$PB_PORT" "$PB_PID" "$WORK/plugboard.log"

NGINX_PORT=$(free_port)
while [ "$NGINX_PORT" = "$PB_PORT" ]; do NGINX_PORT=$(free_port); done
mkdir "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 75s;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location /health { return 200 "ok"; }
    }
}
EOF
taskset -c "$SERVER_CPU" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
    2>"$WORK/nginx/stderr.log" &
NGINX_PID=$!
SERVER_PIDS="$SERVER_PIDS $NGINX_PID"
wait_health "$NGINX_PORT" "$NGINX_PID" "$WORK/nginx/stderr.log"

# run SERVER PID PORT ROW N AB_FLAGS...: one ab run, appended to $RESULTS as
# server, row, round, requests answered, failed, requests/s, CPU ticks.
run() {
    local server=$1 pid=$2 port=$3 row=$4 n=$5 before after out
    shift 5
    before=$(cpu_ticks "$pid")
    out=$(taskset -c "$LOAD_CPU" ab -q -n "$n" "$@" "http://127.0.0.1:$port/health" 2>&1) || {
        echo "bench-http.sh: ab against $server failed:" >&2
        echo "$out" >&2
        exit 1
    }
    after=$(cpu_ticks "$pid")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$row" "$ROUND" \
        "$(echo "$out" | awk '/^Complete requests/ { print $3 }')" \
        "$(echo "$out" | awk '/^Failed requests/ { n += $3 } /^Non-2xx responses/ { n += $3 } END { print n + 0 }')" \
        "$(echo "$out" | awk '/^Requests per second/ { print $4 }')" \
        "$((after - before))" >>"$RESULTS"
}

ROWS=("-k -c 50:$REQUESTS" "-k -c 1:$((REQUESTS / 4))" "-c 50:$((REQUESTS / 4))")
for ROUND in $(seq "$ROUNDS"); do
    for spec in "${ROWS[@]}"; do
        flags=${spec%%:*}
        n=${spec##*:}
        # shellcheck disable=SC2086 # the flags are words
        if [ $((ROUND % 2)) = 1 ]; then
            run plugboard "$PB_PID" "$PB_PORT" "$flags" "$n" $flags
            run nginx "$NGINX_PID" "$NGINX_PORT" "$flags" "$n" $flags
        else
            run nginx "$NGINX_PID" "$NGINX_PORT" "$flags" "$n" $flags
            run plugboard "$PB_PID" "$PB_PORT" "$flags" "$n" $flags
        fi
    done
done

python3 - "$RESULTS" "$TICKS" <<'PY'
import sys
path, tck = sys.argv[1], int(sys.argv[2])
best = {}
order = []
for line in open(path):
    server, row, rnd, n, failed, rps, ticks = line.rstrip("\n").split("\t")
    n = int(n or 0)
    us = int(ticks) / tck / max(1, n) * 1e6
    cell = (us, float(rps or 0), n, int(failed or 0))
    if row not in order:
        order.append(row)
    if (server, row) not in best or us < best[server, row][0]:
        best[server, row] = cell
print("| ab | requests | plugboard req/s | nginx req/s | plugboard CPU us/req | nginx CPU us/req | plugboard / nginx CPU |")
print("|---|---:|---:|---:|---:|---:|---:|")
for row in order:
    p, x = best["plugboard", row], best["nginx", row]
    print(f"| `{row}` | {p[2]:,} | {p[1]:,.0f} | {x[1]:,.0f} | {p[0]:.2f} | {x[0]:.2f} | "
          f"{p[0] / x[0]:.3f} |")
    for name, cell in (("plugboard", p), ("nginx", x)):
        if cell[3]:
            print(f"bench-http.sh: {name} failed {cell[3]} requests in `{row}`", file=sys.stderr)
PY

if [ "$PROFILE" != 0 ]; then
    WORKER=$(pgrep -P "$PB_PID" | head -1)
    taskset -c "$LOAD_CPU" ab -q -k -c 50 -t "$((PROFILE + 2))" -n 100000000 \
        "http://127.0.0.1:$PB_PORT/health" >/dev/null 2>&1 &
    AB_PID=$!
    sleep 1
    perf record -q -e cpu-clock -g -p "$WORKER" -o "$WORK/perf.data" -- sleep "$PROFILE" \
        >/dev/null 2>&1
    wait "$AB_PID" || true
    echo
    echo "plugboard's worker under ab -k -c 50, perf report --no-children (self):"
    perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --stdio -g none \
        2>/dev/null | grep '%' | head -25
fi
