#!/bin/sh
# test-packages.sh - builds the Debian packages, lints them, installs them on
# this machine, runs the installed daemon the way its systemd unit does, and
# purges them again, leaving the machine as it was. Run as root from the top
# build directory: SRCDIR/packaging/test-packages.sh. Ends with "N passed, M failed".

set -u
umask 022

builddir=$(pwd)
out=$builddir/packaging/out
conf=/etc/plugboard/plugboard.conf
unit=/lib/systemd/system/plugboard.service
port=65432
passed=0
failed=0

pass() { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "FAILED - $*"; }
check() {
    description=$1
    shift
    if "$@"; then pass "$description"; else fail "$description"; fi
}
finish() {
    echo "$passed passed, $failed failed"
    [ $failed -eq 0 ]
    exit $?
}

[ "$(id -u)" -eq 0 ] || { echo "test-packages.sh: run as root" >&2; exit 2; }
[ -f "$builddir/Makefile" ] || { echo "test-packages.sh: run from the top build directory" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-packages.XXXXXX") || exit 2
daemon_pid=
run_dir_existed=no
[ -e /run/plugboard ] && run_dir_existed=yes
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill -KILL "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
    fi
    if dpkg-query -W -f='${Status}\n' plugboard plugboard-dev 2>/dev/null | grep -qv 'not-installed'; then
        DEBIAN_FRONTEND=noninteractive apt-get purge -y plugboard plugboard-dev >/dev/null 2>&1
    fi
    [ $run_dir_existed = no ] && rm -rf /run/plugboard
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 2' HUP INT TERM

# --- The machine must start clean -------------------------------------------
if dpkg-query -W -f='${Status}\n' plugboard plugboard-dev 2>/dev/null | grep -q 'ok installed' ||
   getent passwd plugboard >/dev/null || getent group plugboard >/dev/null || [ -e /etc/plugboard ]; then
    echo "test-packages.sh: plugboard is already installed (or its user or /etc/plugboard exist); purge it first" >&2
    trap - EXIT
    rm -rf "$tmp"
    exit 2
fi
dpkg-query -W -f='${Package}\n' | sort >"$tmp/packages.before"

# --- Build and lint -----------------------------------------------------------
echo "building the packages (log: $tmp/build.log)"
if DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-nocheck}" make deb >"$tmp/build.log" 2>&1; then
    pass "make deb"
else
    tail -n 40 "$tmp/build.log"
    fail "make deb"
    finish
fi
ls "$out"/plugboard_*.deb "$out"/plugboard-dev_*.deb >/dev/null 2>&1
check "both packages built" [ $? -eq 0 ]

lintian --tag-display-limit 0 "$out"/*.changes >"$tmp/lintian.log" 2>&1
echo "--- lintian:"
cat "$tmp/lintian.log"
echo "---"
check "lintian reports no errors" test -z "$(grep '^E: ' "$tmp/lintian.log")"

# --- Install --------------------------------------------------------------------
if DEBIAN_FRONTEND=noninteractive apt-get install -y "$out"/plugboard_*.deb "$out"/plugboard-dev_*.deb \
        >"$tmp/install.log" 2>&1; then
    pass "apt-get install"
else
    cat "$tmp/install.log"
    fail "apt-get install"
    finish
fi

check "system user plugboard with home /nonexistent" \
    test "$(getent passwd plugboard | cut -d: -f6)" = /nonexistent
uid=$(id -u plugboard 2>/dev/null)
gid=$(getent group plugboard | cut -d: -f3)
check "system group plugboard, the user's primary group" \
    test -n "$gid" -a "$(id -g plugboard 2>/dev/null)" = "$gid"
check "a system uid ($uid)" test -n "$uid" -a "${uid:-1000}" -lt 1000
check "$conf is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' plugboard | grep -q ' $conf '"
check "the packaged config sets user and group" \
    sh -c "grep -q '^user = \"plugboard\";' $conf && grep -q '^group = \"plugboard\";' $conf"
# Only the master, as root, reads TLS keys: the directory is root's alone.
check "/etc/plugboard/tls is root:root, mode 750" \
    test "$(stat -c %U:%G:%a /etc/plugboard/tls 2>/dev/null)" = root:root:750
check "the plugboard user cannot list /etc/plugboard/tls" \
    sh -c "! setpriv --reuid=plugboard --regid=plugboard --clear-groups ls /etc/plugboard/tls >/dev/null 2>&1"
check "README.Debian is installed" sh -c "ls /usr/share/doc/plugboard/README.Debian* >/dev/null 2>&1"
check "the Grafana dashboard is installed, uncompressed and valid JSON" \
    python3 -m json.tool /usr/share/doc/plugboard/plugboard-dashboard.json /dev/null
plugindir=$(pkg-config --variable=plugindir plugboard-plugin)
has_shipped_plugins() {
    for module in echo uppercase search first10; do
        [ -f "$plugindir/$module.so" ] || return 1
    done
}
check "pkg-config plugindir ($plugindir) holds the shipped plugins" has_shipped_plugins
check "no libtool archives installed" test -z "$(dpkg -L plugboard plugboard-dev | grep '\.la$')"
check "the example plugin source ships in plugboard-dev" \
    test -f /usr/share/doc/plugboard-dev/examples/hello/hello.c

# The shipped example builds against the system SDK alone.
cp -R /usr/share/doc/plugboard-dev/examples/hello "$tmp/hello"
check "the shipped example builds with the installed SDK" \
    sh -c "cd '$tmp/hello' && make CFLAGS='-O2 -Wall -Wextra -Werror' >'$tmp/hello.log' 2>&1"

/usr/sbin/plugboard -t -c $conf >"$tmp/t.out" 2>&1
status=$?
cat "$tmp/t.out"
check "plugboard -t accepts the installed configuration" \
    test $status -eq 0 -a "$(cat "$tmp/t.out")" = "$conf: configuration OK"

# With the binaries and man pages installed, verify checks everything the
# unit names (commands and man: links), not only its syntax.
systemd-analyze verify "$unit" >"$tmp/verify.log" 2>&1
status=$?
cat "$tmp/verify.log"
check "systemd-analyze verify $unit is clean" test $status -eq 0 -a ! -s "$tmp/verify.log"

# --- Run it as the unit does ------------------------------------------------------
# No systemd here: apply the unit's capability bounding set and
# NoNewPrivileges with setpriv, create its RuntimeDirectory, run ExecStartPre,
# then ExecStart as root so that the workers drop to the plugboard user.
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$unit" | tr 'A-Z' 'a-z' | sed 's/cap_/+/g; s/ /,/g')
check "the unit has a capability bounding set ($caps)" test -n "$caps"
if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
    fail "port $port is free (something else listens on it)"
    finish
fi
install -d -m 0755 /run/plugboard
setpriv --no-new-privs --bounding-set="-all,$caps" /usr/sbin/plugboard -f -c $conf >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!

ask() {
    /usr/bin/plugboard-cli -w 2 "$@" 2>>"$tmp/cli.log"
}
wait_for() {
    expected=$1
    shift
    tries=0
    while [ $tries -lt 100 ]; do
        kill -0 "$daemon_pid" 2>/dev/null || return 1
        [ "$(ask "$@")" = "$expected" ] && return 0
        sleep 0.1
        tries=$((tries + 1))
    done
    return 1
}
if wait_for "Follow the white rabbit. 🐰" 127.0.0.1 $port search morpheus; then
    pass "plugboard-cli 127.0.0.1 $port search morpheus answers"
else
    cat "$tmp/daemon.log" "$tmp/cli.log"
    fail "plugboard-cli 127.0.0.1 $port search morpheus answers"
fi

status_field() {
    sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status" | tr -s '[:space:]' ' ' | sed 's/ $//'
}
children() {
    for stat in /proc/[0-9]*/stat; do
        set -- $(sed 's/^.*) //' "$stat" 2>/dev/null)
        [ "${2:-}" = "$daemon_pid" ] && basename "$(dirname "$stat")"
    done
}
check_workers() {
    workers=$(children)
    [ -n "$workers" ] || { echo "no worker processes"; return 1; }
    for w in $workers; do
        echo "worker $w: Uid $(status_field "$w" Uid), Gid $(status_field "$w" Gid), Groups '$(status_field "$w" Groups)'"
        [ "$(status_field "$w" Uid)" = "$uid $uid $uid $uid" ] || return 1
        [ "$(status_field "$w" Gid)" = "$gid $gid $gid $gid" ] || return 1
        [ -z "$(status_field "$w" Groups)" ] || return 1
    done
}
check "the master runs as root" test "$(status_field "$daemon_pid" Uid)" = "0 0 0 0"
echo "master $daemon_pid: CapBnd $(status_field "$daemon_pid" CapBnd), NoNewPrivs $(status_field "$daemon_pid" NoNewPrivs)"
check "the workers run as plugboard:plugboard" check_workers
check "the Unix socket belongs to plugboard:plugboard" \
    test "$(stat -c %U:%G:%a /run/plugboard/plugboard.sock 2>/dev/null)" = plugboard:plugboard:660
check "plugboard-cli -u /run/plugboard/plugboard.sock search ring answers" \
    test "$(ask -u /run/plugboard/plugboard.sock search ring)" = "In the caves beneath the Misty Mountains. 💍"
check "the line listener echoes" test "$(ask 127.0.0.1 65433 --line hello)" = hello
check "stats answers on the Unix socket, with refused_by" \
    sh -c "/usr/bin/plugboard-cli -w 2 -u /run/plugboard/plugboard.sock stats --json | grep -q '\"refused_by\": {\"busy\": 0'"

# --- Reload -------------------------------------------------------------------------
# As `systemctl reload` does: check the edited file, then SIGHUP.
cp -p $conf "$tmp/plugboard.conf.orig"
sed -i 's/^\( *entries = ( \)("morpheus"/\1("neo", "The One."), ("morpheus"/' $conf
check "the edited configuration adds an entry" grep -q '"neo", "The One."' $conf
check "plugboard -t accepts the edited configuration" sh -c "/usr/sbin/plugboard -t -c $conf >/dev/null"
kill -HUP "$daemon_pid"
if wait_for "The One." 127.0.0.1 $port search neo; then
    pass "after SIGHUP the new entry answers"
else
    cat "$tmp/daemon.log"
    fail "after SIGHUP the new entry answers"
fi
check "after SIGHUP search morpheus still answers" \
    test "$(ask 127.0.0.1 $port search morpheus)" = "Follow the white rabbit. 🐰"
check "after SIGHUP the workers still run as plugboard:plugboard" check_workers
cp -p "$tmp/plugboard.conf.orig" $conf

# --- TLS ------------------------------------------------------------------------------
# A key in /etc/plugboard/tls readable by root alone serves TLS from workers
# that run as plugboard, under the unit's capability bounding set: the master
# reads it. A renewed certificate is taken up on SIGHUP; a key that does not
# match its certificate fails the reload, and the old certificate goes on.
tls=/etc/plugboard/tls
tls_port=65443
failed_from=
failed_to=
tls_ask() {
    (printf '%s\n' "$1"; sleep 1) |
        openssl s_client -quiet -no_ign_eof -verify_return_error -verify_ip 127.0.0.1 \
            -CAfile "$tls/server.crt" -connect 127.0.0.1:$tls_port 2>>"$tmp/tls.log"
}
tls_serial() {
    openssl s_client -connect 127.0.0.1:$tls_port </dev/null 2>>"$tmp/tls.log" |
        openssl x509 -noout -serial 2>>"$tmp/tls.log"
}
# Waits until the daemon serves the certificate with serial $1.
wait_for_serial() {
    tries=0
    while [ $tries -lt 100 ]; do
        kill -0 "$daemon_pid" 2>/dev/null || return 1
        [ "$(tls_serial)" = "$1" ] && return 0
        sleep 0.1
        tries=$((tries + 1))
    done
    return 1
}
new_certificate() {
    openssl req -x509 -new -key "$tls/server.key" -days 2 -subj "/CN=127.0.0.1" \
        -addext "subjectAltName=IP:127.0.0.1" -out "$tls/server.crt" 2>>"$tmp/tls.log" &&
        openssl x509 -in "$tls/server.crt" -noout -serial
}
if ! command -v openssl >/dev/null; then
    fail "openssl is installed, for the TLS checks"
elif ss -Hltn "sport = :$tls_port" 2>/dev/null | grep -q .; then
    fail "port $tls_port is free (something else listens on it)"
else
    cp -p $conf "$tmp/plugboard.conf.orig"
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out "$tls/server.key" 2>>"$tmp/tls.log")
    serial=$(new_certificate)
    check "a key and certificate in $tls (key root:root, mode 600)" \
        test -n "$serial" -a "$(stat -c %U:%G:%a "$tls/server.key")" = root:root:600
    # A TLS line listener to echo, its files relative to the configuration.
    sed -i 's|^listeners = ($|&\n  { name = "tls"; address = "127.0.0.1"; port = '$tls_port'; framing = "line"; plugin = "echo";\n    tls = { certificate = "tls/server.crt"; key = "tls/server.key"; }; },|' $conf
    check "the edited configuration adds a TLS listener" grep -q 'key = "tls/server.key"' $conf
    check "plugboard -t accepts the TLS listener" sh -c "/usr/sbin/plugboard -t -c $conf >/dev/null"
    kill -HUP "$daemon_pid"
    if wait_for_serial "$serial"; then
        pass "after SIGHUP the TLS listener serves the certificate"
    else
        cat "$tmp/daemon.log" "$tmp/tls.log"
        fail "after SIGHUP the TLS listener serves the certificate"
    fi
    check "a line sent over TLS comes back, the certificate verified" \
        test "$(tls_ask hello)" = hello
    check "after SIGHUP the workers still run as plugboard:plugboard" check_workers

    renewed=$(new_certificate)
    kill -HUP "$daemon_pid"
    if [ -n "$renewed" ] && [ "$renewed" != "$serial" ] && wait_for_serial "$renewed"; then
        pass "a renewed certificate is served after SIGHUP"
    else
        cat "$tmp/daemon.log" "$tmp/tls.log"
        fail "a renewed certificate is served after SIGHUP"
    fi

    cp -p "$tls/server.key" "$tmp/server.key"
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out "$tls/server.key" 2>>"$tmp/tls.log")
    check "plugboard -t refuses a key that does not match the certificate" \
        sh -c "! /usr/sbin/plugboard -t -c $conf >/dev/null 2>&1"
    failed_from=$(($(wc -l <"$tmp/daemon.log") + 1))
    kill -HUP "$daemon_pid"
    tries=0
    while [ $tries -lt 100 ] && ! tail -n +$failed_from "$tmp/daemon.log" | grep -q 'reload failed'; do
        sleep 0.1
        tries=$((tries + 1))
    done
    failed_to=$(wc -l <"$tmp/daemon.log")
    check "a SIGHUP with the mismatched key fails the reload" \
        sh -c "sed -n '${failed_from},${failed_to}p' '$tmp/daemon.log' | grep -q 'does not match the key'"
    check "after the failed reload the renewed certificate is still served" \
        test "$(tls_serial)" = "$renewed"
    check "after the failed reload a line over TLS still comes back" \
        test "$(tls_ask again)" = again
    cp -p "$tmp/server.key" "$tls/server.key"
    cp -p "$tmp/plugboard.conf.orig" $conf
fi

# --- Stop -----------------------------------------------------------------------------
kill -TERM "$daemon_pid"
wait "$daemon_pid"
status=$?
daemon_pid=
check "SIGTERM stops the daemon with exit status 0" test $status -eq 0
# The reload failed on purpose above logged errors; no other line may.
if [ -n "$failed_from" ]; then
    sed -i "${failed_from},${failed_to}d" "$tmp/daemon.log"
fi
if grep -qi 'error' "$tmp/daemon.log"; then
    echo "--- daemon log:"
    cat "$tmp/daemon.log"
fi
check "the daemon logged no errors" sh -c "! grep -q ': error: ' '$tmp/daemon.log'"
# Without CAP_FOWNER the master may not chmod the socket it gave the
# plugboard user; a reload that keeps the mode must not try.
check "reloads left the Unix socket's mode alone" \
    sh -c "! grep -q 'cannot change the mode' '$tmp/daemon.log'"
[ $run_dir_existed = no ] && rm -rf /run/plugboard

# --- Purge ------------------------------------------------------------------------------
if DEBIAN_FRONTEND=noninteractive apt-get purge -y plugboard plugboard-dev >"$tmp/purge.log" 2>&1; then
    pass "apt-get purge"
else
    cat "$tmp/purge.log"
    fail "apt-get purge"
fi
check "the user plugboard is gone" sh -c "! getent passwd plugboard >/dev/null"
check "the group plugboard is gone" sh -c "! getent group plugboard >/dev/null"
check "/etc/plugboard is gone" test ! -e /etc/plugboard
check "the binaries are gone" sh -c "! ls /usr/sbin/plugboard /usr/bin/plugboard-cli /usr/bin/plugboard-bench $plugindir >/dev/null 2>&1"
check "the SDK is gone" sh -c "! ls /usr/include/plugboard /usr/share/doc/plugboard-dev >/dev/null 2>&1"

# Dependencies pulled in by the install go too.
dpkg-query -W -f='${Package}\n' | sort >"$tmp/packages.after"
extra=$(comm -13 "$tmp/packages.before" "$tmp/packages.after")
if [ -n "$extra" ]; then
    echo "removing the dependencies the install added: $extra"
    DEBIAN_FRONTEND=noninteractive apt-get purge -y $extra >>"$tmp/purge.log" 2>&1
fi
dpkg-query -W -f='${Package}\n' | sort >"$tmp/packages.after"
check "the installed package set is as before" cmp -s "$tmp/packages.before" "$tmp/packages.after"

finish
