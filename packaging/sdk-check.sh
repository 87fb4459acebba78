#!/bin/sh
# sdk-check.sh - checks that an installed Plugboard is enough on its own: the
# example plugins (hello; later, which defers; lookup, which blocks on a
# thread pool) build from the installed SDK alone, and the installed daemon
# and client serve them next to the installed plugins. Run by `make check` from
# the top build directory (automake test protocol: 0 pass, 77 skip, else fail).

set -u
umask 022

builddir=$(pwd)
srcdir=${srcdir:-.}
case $srcdir in /*) ;; *) srcdir=$builddir/$srcdir ;; esac
example=$srcdir/plugins/examples/hello

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sdk-check.XXXXXX") || exit 99
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill -KILL "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 99' HUP INT TERM

fail() {
    echo "FAIL: $*"
    for log in "$tmp"/*.log; do
        [ -s "$log" ] || continue
        echo "--- $log"
        cat "$log"
    done
    exit 1
}

for tool in pkg-config cc; do
    command -v "$tool" >/dev/null 2>&1 || { echo "SKIP: $tool not found"; exit 77; }
done

# --- Install the build tree into a staging root ----------------------------
dest=$tmp/root
echo "installing the build tree into $dest"
MAKEFLAGS= MFLAGS= ${MAKE:-make} -s install DESTDIR="$dest" >"$tmp/install.log" 2>&1 ||
    fail "make install DESTDIR=$dest"

find_one() {
    found=$(find "$dest" -path "$1" \( -type f -o -type l \) | head -n 1)
    [ -n "$found" ] || fail "nothing installed as $1"
    echo "$found"
}
daemon=$(find_one '*/sbin/plugboard') || exit 1
cli=$(find_one '*/bin/plugboard-cli') || exit 1
pc=$(find_one '*/pkgconfig/plugboard-plugin.pc') || exit 1

# Only the staged installation is visible to pkg-config.
PKG_CONFIG_LIBDIR=$(dirname "$pc")
PKG_CONFIG_PATH=
PKG_CONFIG_SYSROOT_DIR=$dest
export PKG_CONFIG_LIBDIR PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR

plugindir=$(pkg-config --variable=plugindir plugboard-plugin) ||
    fail "pkg-config --variable=plugindir plugboard-plugin"
for module in echo uppercase search first10; do
    [ -f "$plugindir/$module.so" ] || fail "plugindir $plugindir has no $module.so"
done
echo "plugindir: $plugindir"

# --- Build the example from a copy, with nothing but the SDK ---------------
mkdir "$tmp/hello" || exit 99
cp "$example/hello.c" "$example/test_hello.c" "$example/Makefile" "$tmp/hello/" || exit 99
(cd "$tmp/hello" && MAKEFLAGS= MFLAGS= ${MAKE:-make} CFLAGS='-O2 -Wall -Wextra -Werror' CPPFLAGS=-MD check) \
    >"$tmp/build.log" 2>&1 || fail "building and testing the hello example in-process (make check)"
grep -q "$dest/[^ ]*/plugboard/plugin\.h" "$tmp/hello/hello.d" ||
    fail "hello.c was not compiled against the staged plugin.h: $(cat "$tmp/hello/hello.d")"
(cd "$tmp/hello" && MAKEFLAGS= MFLAGS= ${MAKE:-make} install) >>"$tmp/build.log" 2>&1 ||
    fail "make install of the hello example"
[ -f "$plugindir/hello.so" ] || fail "make install did not put hello.so into $plugindir"
echo "built $tmp/hello/hello.so; its in-process test:"
sed -n 's/^/  /; /^  \(ok\|FAILED\) - /p' "$tmp/build.log"

# The deferring and the blocking examples, the same way.
for example_dir in async blocking; do
    cp -R "$srcdir/plugins/examples/$example_dir" "$tmp/$example_dir" || exit 99
    (cd "$tmp/$example_dir" && MAKEFLAGS= MFLAGS= ${MAKE:-make} CFLAGS='-O2 -Wall -Wextra -Werror' install) \
        >>"$tmp/build.log" 2>&1 || fail "building and installing the $example_dir example"
done
[ -f "$plugindir/later.so" ] && [ -f "$plugindir/lookup.so" ] ||
    fail "the async and blocking examples were not installed into $plugindir"
printf 'morpheus\tFollow the white rabbit.\n' >"$tmp/lookup.tsv"
echo "built and installed the later (async) and lookup (blocking) examples"

# --- Configure and start the installed daemon ------------------------------
write_config() {
    cat >"$tmp/plugboard.conf" <<CONF
plugin_dir = "$plugindir";
pidfile = "$tmp/plugboard.pid";
workers = 1;
log = { level = "info"; target = "stderr"; };
listeners = (
  { name = "app"; address = "127.0.0.1"; port = $1; framing = "frame"; }
);
plugins = (
  { name = "echo";   module = "echo"; },
  { name = "search"; module = "search";
    settings = { entries = ( ("morpheus", "Follow the white rabbit.") ); }; },
  { name = "hello";  module = "$tmp/hello/hello.so";
    settings = { greeting = "Hello"; }; },
  { name = "later";  module = "later"; settings = { max_seconds = 5; }; },
  { name = "lookup"; module = "lookup"; threads = 4;
    settings = { data_file = "lookup.tsv"; }; }
);
routes = (
  { content_type = "text/json"; action = "hello"; plugin = "hello"; },
  { content_type = "text/json"; action = "later"; plugin = "later"; },
  { content_type = "text/json"; action = "lookup"; plugin = "lookup"; },
  { content_type = "text/json"; plugin = "search"; },
  { plugin = "echo"; }
);
CONF
}

write_config 1
"$daemon" -t -c "$tmp/plugboard.conf" >"$tmp/test.log" 2>&1 ||
    fail "plugboard -t rejects the configuration"

random_port() {
    echo $((20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000))
}

# A port can be taken between choosing and binding: the daemon then exits 1,
# and another port is tried.
started=
for attempt in 1 2 3 4 5; do
    port=$(random_port)
    write_config "$port"
    PLUGBOARD_PLUGIN_DIR=/nonexistent "$daemon" -f -c "$tmp/plugboard.conf" \
        >"$tmp/daemon.log" 2>&1 &
    daemon_pid=$!
    tries=0
    while [ $tries -lt 100 ]; do
        if ! kill -0 "$daemon_pid" 2>/dev/null; then
            wait "$daemon_pid"
            status=$?
            daemon_pid=
            [ $status -eq 1 ] || fail "the daemon exited with status $status"
            break
        fi
        if "$cli" -w 1 127.0.0.1 "$port" search morpheus >/dev/null 2>&1; then
            started=yes
            break
        fi
        sleep 0.1
        tries=$((tries + 1))
    done
    [ -n "$started" ] && break
    [ -n "$daemon_pid" ] && fail "the daemon did not answer on port $port"
done
[ -n "$started" ] || fail "the daemon could not start on any port"
echo "daemon $daemon_pid answering on 127.0.0.1:$port"

# --- Ask it -----------------------------------------------------------------
answer=$("$cli" 127.0.0.1 "$port" --json '{"action": "hello", "name": "Ada"}' 2>"$tmp/cli.log") ||
    fail "plugboard-cli hello exited with status $?"
[ "$answer" = "Hello, Ada!" ] || fail "hello answered '$answer', expected 'Hello, Ada!'"
echo "hello: $answer"

answer=$("$cli" 127.0.0.1 "$port" search morpheus 2>"$tmp/cli.log") ||
    fail "plugboard-cli search exited with status $?"
[ "$answer" = "Follow the white rabbit." ] || fail "search answered '$answer'"
echo "search: $answer"

"$cli" 127.0.0.1 "$port" --json '{"action": "hello"}' >/dev/null 2>"$tmp/cli.log"
status=$?
[ $status -eq 1 ] && grep -q 'plugin_failed' "$tmp/cli.log" ||
    fail "hello without a name: status $status, expected 1 with plugin_failed"
echo "hello without a name: $(cat "$tmp/cli.log")"

answer=$("$cli" 127.0.0.1 "$port" --json '{"action": "later", "value": "deferred", "seconds": 0.2}' 2>"$tmp/cli.log") ||
    fail "plugboard-cli later exited with status $?"
[ "$answer" = "deferred" ] || fail "later answered '$answer'"
echo "later: $answer"

answer=$("$cli" 127.0.0.1 "$port" --json '{"action": "lookup", "key": "morpheus"}' 2>"$tmp/cli.log") ||
    fail "plugboard-cli lookup exited with status $?"
[ "$answer" = "Follow the white rabbit." ] || fail "lookup answered '$answer'"
echo "lookup (on a thread pool): $answer"

# --- Stop it ------------------------------------------------------------------
kill -TERM "$daemon_pid"
wait "$daemon_pid"
status=$?
daemon_pid=
[ $status -eq 0 ] || fail "the daemon exited with status $status after SIGTERM"
echo "stopped with SIGTERM, exit status 0"
exit 0
