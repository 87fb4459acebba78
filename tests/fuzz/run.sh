#!/bin/sh
# run.sh - builds the libFuzzer targets with clang and, given a duration,
# runs each on a copy of its corpus and reports executions and crashes.
#
# usage: tests/fuzz/run.sh [BUILD_DIR [SECONDS]]
#   BUILD_DIR  where binaries, corpus copies and crash files go (./fuzz-build)
#   SECONDS    run every target this long; without it, only build
# Exits non-zero when a target does not build or any target crashed.
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-./fuzz-build}
duration=${2:-}
mkdir -p "$build"
build=$(cd "$build" && pwd)

CC=${CC:-clang}
# The version configure would define, which the statistics report.
version=$(sed -n 's/^AC_INIT(\[[^]]*\], *\[\([^]]*\)\].*/\1/p' "$top/configure.ac")
CFLAGS="-std=gnu11 -D_GNU_SOURCE -DPACKAGE_VERSION=\"${version:-0}\" -pthread -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"

# target | sources, relative to the top of the tree | pkg-config packages
targets='
fuzz_frame|tests/fuzz/fuzz_frame.c daemon/frame.c daemon/frame_fast.c daemon/json_fast.c daemon/json_dump.c daemon/buffer.c daemon/error.c|jansson
fuzz_line|tests/fuzz/fuzz_line.c daemon/line.c daemon/frame.c daemon/frame_fast.c daemon/json_dump.c daemon/buffer.c daemon/error.c|jansson
fuzz_config|tests/fuzz/fuzz_config.c daemon/config.c daemon/access.c daemon/diag.c daemon/log.c daemon/buffer.c daemon/error.c daemon/json_dump.c|libconfig jansson
fuzz_plugin_echo|tests/fuzz/fuzz_plugin.c plugins/echo/echo.c PLUGIN_HOST|libconfig jansson
fuzz_plugin_uppercase|tests/fuzz/fuzz_plugin.c plugins/uppercase/uppercase.c PLUGIN_HOST -lunistring|libconfig jansson
fuzz_plugin_search|tests/fuzz/fuzz_plugin.c plugins/search/search.c PLUGIN_HOST|libconfig jansson
fuzz_plugin_first10|tests/fuzz/fuzz_plugin.c plugins/first10/first10.c PLUGIN_HOST|libconfig jansson
'

# What a plugin handler needs of the daemon: the host services and the
# instance start-up, with what they call.
plugin_host="daemon/plugin_host.c daemon/plugin_loader.c daemon/reply.c
  daemon/pool.c daemon/codec.c daemon/config.c daemon/access.c daemon/diag.c daemon/log.c
  daemon/buffer.c daemon/error.c daemon/json_dump.c daemon/frame.c
  daemon/frame_fast.c daemon/json_fast.c daemon/line.c daemon/shared.c -lev"

cd "$top"

while IFS='|' read -r target sources packages; do
    [ -n "$target" ] || continue
    main=${sources%% *}
    if [ ! -f "$main" ]; then
        echo "fuzz $target: skipped, $main does not exist"
        rm -f "$build/$target"
        continue
    fi
    sources=$(printf '%s' "$sources" | sed "s|PLUGIN_HOST|$(echo $plugin_host)|")
    # shellcheck disable=SC2046,SC2086  # the lists are meant to split into words
    if ! $CC $CFLAGS -I include -I daemon $(pkg-config --cflags $packages) \
            $sources $(pkg-config --libs $packages) -o "$build/$target"; then
        echo "fuzz $target: build failed" >&2
        exit 1
    fi
done <<EOF
$targets
EOF

[ -n "$duration" ] || exit 0

crashed=0
while IFS='|' read -r target sources packages; do
    if [ -z "$target" ] || [ ! -x "$build/$target" ]; then
        continue
    fi
    corpus="$build/corpus/$target"
    artifacts="$build/artifacts/$target"
    rm -rf "$corpus" "$artifacts"
    mkdir -p "$corpus" "$artifacts"
    seeds=tests/fuzz/corpus/${target#fuzz_}
    case $target in fuzz_plugin_*) seeds=tests/fuzz/corpus/plugin ;; esac
    if [ -d "$seeds" ]; then
        cp -R "$seeds/." "$corpus/"
    fi
    log="$build/$target.log"
    status=0
    "$build/$target" -max_total_time="$duration" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" > "$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ -z "$execs" ]; then
        execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    fi
    crashes=$(find "$artifacts" -type f | wc -l)
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1
    fi
    echo "fuzz $target: ${execs:-0} execs, $crashes crashes"
    if [ "$crashes" -ne 0 ]; then
        echo "fuzz $target: see $log and $artifacts" >&2
        crashed=1
    fi
done <<EOF
$targets
EOF

exit "$crashed"
