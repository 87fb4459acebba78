# bench-lib.sh - helpers for the benchmark scripts, sourced by bash after
# SRCDIR is set: free_port and listening (from tests/lib.sh), wait_port,
# cpu_ticks, the server CPU that every figure is divided by, and
# bench_workdir, the temporary directory a run works in.

# shellcheck source=tests/lib.sh
. "$SRCDIR/tests/lib.sh"

# Waits (5 s at most) until something accepts on loopback port $1.
wait_port() {
    for _ in $(seq 100); do
        listening "$1" && return 0
        sleep 0.05
    done
    echo "$(basename "$0"): nothing listens on port $1" >&2
    return 1
}

# utime + stime, in clock ticks, of the processes given and their children
# (a daemon's master and workers).
cpu_ticks() {
    local total=0 p
    for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
        [ -r "/proc/$p/stat" ] || continue
        total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$total"
}
TICKS=$(getconf CLK_TCK)

# bench_workdir NAME: makes WORK, a temporary directory; at exit the
# processes in SERVER_PIDS are stopped and WORK removed, or kept and named
# when KEEP is 1.
bench_workdir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/plugboard-$1.XXXXXX")
    SERVER_PIDS=
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    for p in $SERVER_PIDS; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then
        echo "$(basename "$0"): files kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
