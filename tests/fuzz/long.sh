#!/bin/sh
# long.sh - the deep fuzz run: builds the targets with run.sh, runs the
# codec and config targets one after another for many executions, and
# merges what each run found into its committed corpus in tests/fuzz/corpus/.
#
# usage: tests/fuzz/long.sh [BUILD_DIR [RUNS [SECONDS]]]
#   BUILD_DIR  binaries, run corpora, logs and crash files (./fuzz-build)
#   RUNS       executions per target (10000000)
#   SECONDS    time cap per target, whichever comes first (1800)
#   FUZZ_TARGETS  the targets to run ("fuzz_frame fuzz_line fuzz_config")
# Exits non-zero when a target does not build or crashed.
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-./fuzz-build}
runs=${2:-10000000}
seconds=${3:-1800}
targets=${FUZZ_TARGETS:-fuzz_frame fuzz_line fuzz_config}

"$top/tests/fuzz/run.sh" "$build"
build=$(cd "$build" && pwd)
cd "$top"

crashed=0
for target in $targets; do
    seeds=tests/fuzz/corpus/${target#fuzz_}
    work="$build/long/$target"
    rm -rf "$work"
    mkdir -p "$work/grown" "$work/artifacts" "$seeds"
    cp -R "$seeds/." "$work/grown/"
    log="$work/fuzz.log"
    start=$(date +%s)
    status=0
    "$build/$target" -runs="$runs" -max_total_time="$seconds" \
        -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
        "$work/grown" > "$log" 2>&1 || status=$?
    elapsed=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    # A slow unit is reported, not counted: on a loaded machine a stalled
    # process makes any input look slow.
    crashes=$(find "$work/artifacts" -type f ! -name 'slow-unit-*' | wc -l)
    slow=$(find "$work/artifacts" -type f -name 'slow-unit-*' | wc -l)
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1
    fi
    # Only inputs that add coverage to the committed corpus are kept, so
    # it grows by what the run learned rather than by everything it tried.
    before=$(find "$seeds" -type f | wc -l)
    "$build/$target" -merge=1 -artifact_prefix="$work/artifacts/" \
        "$seeds" "$work/grown" > "$work/merge.log" 2>&1
    after=$(find "$seeds" -type f | wc -l)
    echo "fuzz $target: ${execs:-0} execs in ${elapsed} s, $crashes crashes, $slow slow units"
    echo "fuzz $target: last status: $last"
    echo "fuzz $target: corpus $before -> $after files in $seeds"
    if [ "$crashes" -ne 0 ]; then
        echo "fuzz $target: see $log and $work/artifacts" >&2
        crashed=1
    fi
done

exit "$crashed"
