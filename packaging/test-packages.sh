#!/bin/sh
# test-packages.sh - builds the Debian packages, lints them, installs them on
# this machine, runs the installed daemon the way its systemd unit does, and
# purges them again; then installs the 0.1.0 package, starts it, upgrades it
# to the new one with the daemon running, and purges that, leaving the
# machine as it was. Run as root from the top build directory:
# SRCDIR/packaging/test-packages.sh. Ends with "N passed, M failed".
#
# There is no systemd here (a CI container): emulate-unit.sh starts the
# daemon as systemd would start the installed unit, with its user, group,
# capabilities, umask, directories, credentials and system call filter (the
# filter through syscall-filter-exec, built here with libseccomp).

set -u
umask 022

builddir=$(pwd)
srcdir=$(cd "$(dirname "$0")/.." && pwd)
out=$builddir/packaging/out
fixture=$srcdir/packaging/fixtures/plugboard_0.1.0-1_amd64.deb
dropins=/etc/systemd/system/plugboard.service.d
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
# The daemon, as the plugboard user, reads the system call list in here.
chmod 0711 "$tmp"
state=$tmp/unit
daemon_pid=
run_dir_existed=no
[ -e /run/plugboard ] && run_dir_existed=yes
credentials_existed=no
[ -e /run/credentials ] && credentials_existed=yes
systemd_dir_made=no
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill -KILL "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
    fi
    if [ -s "$state/pid" ]; then
        kill -KILL "$(cat "$state/pid")" 2>/dev/null
    fi
    [ -n "${build_tree_pid:-}" ] && kill -KILL "$build_tree_pid" 2>/dev/null
    if dpkg-query -W -f='${Status}\n' plugboard plugboard-dev 2>/dev/null | grep -qv 'not-installed'; then
        DEBIAN_FRONTEND=noninteractive apt-get purge -y plugboard plugboard-dev >/dev/null 2>&1
    fi
    rm -rf "$dropins"
    [ $systemd_dir_made = yes ] && rmdir /run/systemd/system /run/systemd 2>/dev/null
    [ $run_dir_existed = no ] && rm -rf /run/plugboard
    rm -rf /run/credentials/plugboard.service
    [ $credentials_existed = no ] && rm -rf /run/credentials
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

# PrivateMounts=, ProtectProc= and ProcSubset= take a mount namespace,
# which a container may not allow.
if ! unshare --mount --propagation private true 2>/dev/null; then
    EMULATE_NO_MOUNT_NAMESPACE=1
    export EMULATE_NO_MOUNT_NAMESPACE
    echo "no mount namespace here: PrivateMounts=, ProtectProc= and ProcSubset= are not emulated"
fi

# Starts, stops, or runs a command as, the installed unit (emulate-unit.sh).
unit_do() {
    SYSCALL_FILTER_EXEC=$tmp/syscall-filter-exec sh "$srcdir/packaging/emulate-unit.sh" "$state" "$@"
}

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

check "syscall-filter-exec builds (libseccomp)" \
    cc -O2 -Wall -Wextra -Werror -o "$tmp/syscall-filter-exec" \
        "$srcdir/packaging/syscall-filter-exec.c" -lseccomp

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

# --- The unit -------------------------------------------------------------------
check "the unit runs as User=plugboard, Group=plugboard" \
    sh -c "grep -qx 'User=plugboard' $unit && grep -qx 'Group=plugboard' $unit"
check "the unit's capability bounding set is empty, and it has no ambient set" \
    sh -c "grep -qx 'CapabilityBoundingSet=' $unit && ! grep -q '^AmbientCapabilities=' $unit"
check "the unit names no CAP_SETUID, CAP_SETGID, CAP_CHOWN or CAP_KILL" \
    sh -c "! grep -Eq 'CAP_(SETUID|SETGID|CHOWN|KILL)' $unit"
check "systemd creates /run/plugboard and /var/lib/plugboard (RuntimeDirectory=, StateDirectory=)" \
    sh -c "grep -qx 'RuntimeDirectory=plugboard' $unit && grep -qx 'StateDirectory=plugboard' $unit && ! grep -q '^ReadWritePaths=' $unit"
check "the unit filters system calls: @system-service less @privileged and @resources, EPERM" \
    sh -c "grep -qx 'SystemCallFilter=@system-service' $unit && grep -qx 'SystemCallFilter=~@privileged @resources' $unit && grep -qx 'SystemCallErrorNumber=EPERM' $unit"

# The exposure systemd-analyze rates the unit at (0.0 safest, 10.0 least).
exposure() {
    systemd-analyze security --offline=true "$1" 2>>"$tmp/security.log" |
        sed -n 's/^.*Overall exposure level for [^:]*: \([0-9.]*\).*$/\1/p'
}
figure=$(exposure "$unit")
echo "systemd-analyze security --offline=true $unit: exposure ${figure:-?}"
check "the unit's exposure (${figure:-none}) is 1.2 or less" \
    awk -v e="${figure:-99}" 'BEGIN { exit !(e + 0 <= 1.2) }'

examples=/usr/share/doc/plugboard/examples
check "the example drop-ins are installed" \
    test -f $examples/tls-credentials.conf -a -f $examples/privileged-ports.conf
# The unit as an operator with a TLS listener on port 853 has it.
mkdir -p "$tmp/units/plugboard.service.d"
cp "$unit" "$tmp/units/"
cp $examples/tls-credentials.conf $examples/privileged-ports.conf "$tmp/units/plugboard.service.d/"
figure=$(exposure "$tmp/units/plugboard.service")
echo "with tls-credentials.conf and privileged-ports.conf: exposure ${figure:-?}"
check "with the example drop-ins, the exposure (${figure:-none}) is 1.4 or less" \
    awk -v e="${figure:-99}" 'BEGIN { exit !(e + 0 <= 1.4) }'

# --- Run it as the unit does ------------------------------------------------------
# emulate-unit.sh reads the installed unit and the example drop-ins, as
# systemd would: master and workers run as plugboard, with
# CAP_NET_BIND_SERVICE alone (privileged-ports.conf) and the unit's system
# call filter, the TLS files handed over in $CREDENTIALS_DIRECTORY
# (tls-credentials.conf), ExecStartPre's `plugboard -t` first.
tls=/etc/plugboard/tls
tls_port=
for candidate in 853 993 995 992 990; do
    if ! ss -Hltn "sport = :$candidate" 2>/dev/null | grep -q .; then
        tls_port=$candidate
        break
    fi
done
for p in $port 65433; do
    if ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
        fail "port $p is free (something else listens on it)"
        finish
    fi
done
check "a port below 1024 is free for TLS (${tls_port:-none})" test -n "$tls_port"
new_certificate() {
    openssl req -x509 -new -key "$tls/server.key" -days 2 -subj "/CN=127.0.0.1" \
        -addext "subjectAltName=IP:127.0.0.1" -out "$tls/server.crt" 2>>"$tmp/tls.log" &&
        openssl x509 -in "$tls/server.crt" -noout -serial
}
(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$tls/server.key" 2>>"$tmp/tls.log")
serial=$(new_certificate)
check "a key and certificate in $tls (key root:root, mode 600)" \
    test -n "$serial" -a "$(stat -c %U:%G:%a "$tls/server.key" 2>/dev/null)" = root:root:600
cp -p $conf "$tmp/plugboard.conf.orig"
sed -i 's|^listeners = ($|&\n  { name = "tls"; address = "127.0.0.1"; port = '"${tls_port:-853}"'; framing = "line"; plugin = "echo";\n    tls = { certificate = "${CREDENTIALS_DIRECTORY}/plugboard.crt"; key = "${CREDENTIALS_DIRECTORY}/plugboard.key"; }; },|' $conf
check "the edited configuration adds a TLS listener on port ${tls_port:-853}, its files credentials" \
    grep -q 'key = "${CREDENTIALS_DIRECTORY}/plugboard.key"' $conf
mkdir -p "$dropins"
cp $examples/tls-credentials.conf $examples/privileged-ports.conf "$dropins/"

if unit_do start; then
    pass "the unit starts (ExecStartPre, then ExecStart)"
else
    cat "$state/log"
    fail "the unit starts (ExecStartPre, then ExecStart)"
    finish
fi
daemon=$(cat "$state/pid")
check "ExecStartPre's plugboard -t, as plugboard with the credentials, accepted the configuration" \
    grep -qx "$conf: configuration OK" "$state/log"

ask() {
    /usr/bin/plugboard-cli -w 2 "$@" 2>>"$tmp/cli.log"
}
wait_for() {
    expected=$1
    shift
    tries=0
    while [ $tries -lt 100 ]; do
        kill -0 "$daemon" 2>/dev/null || return 1
        [ "$(ask "$@")" = "$expected" ] && return 0
        sleep 0.1
        tries=$((tries + 1))
    done
    return 1
}
if wait_for "Follow the white rabbit. 🐰" 127.0.0.1 $port search morpheus; then
    pass "plugboard-cli 127.0.0.1 $port search morpheus answers"
else
    cat "$state/log" "$tmp/cli.log"
    fail "plugboard-cli 127.0.0.1 $port search morpheus answers"
fi

status_field() {
    sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status" | tr -s '[:space:]' ' ' | sed 's/ $//'
}
children() {
    for stat in /proc/[0-9]*/stat; do
        set -- $(sed 's/^.*) //' "$stat" 2>/dev/null)
        [ "${2:-}" = "$daemon" ] && basename "$(dirname "$stat")"
    done
}
# Processes $@ run as plugboard:plugboard, with no other group than it.
run_as_plugboard() {
    [ $# -gt 0 ] || { echo "no process"; return 1; }
    for p in "$@"; do
        echo "pid $p: Uid $(status_field "$p" Uid), Gid $(status_field "$p" Gid), Groups '$(status_field "$p" Groups)'"
        [ "$(status_field "$p" Uid)" = "$uid $uid $uid $uid" ] || return 1
        [ "$(status_field "$p" Gid)" = "$gid $gid $gid $gid" ] || return 1
        case "$(status_field "$p" Groups)" in "" | "$gid") ;; *) return 1 ;; esac
    done
}
check_workers() {
    run_as_plugboard $(children)
}
check "the master runs as plugboard:plugboard" run_as_plugboard "$daemon"
check "the workers run as plugboard:plugboard" check_workers
echo "master $daemon: CapEff $(status_field "$daemon" CapEff), CapAmb $(status_field "$daemon" CapAmb), CapBnd $(status_field "$daemon" CapBnd), NoNewPrivs $(status_field "$daemon" NoNewPrivs), Seccomp $(status_field "$daemon" Seccomp)"
check "the master holds CAP_NET_BIND_SERVICE alone, no_new_privs and a seccomp filter" \
    test "$(status_field "$daemon" CapEff)" = 0000000000000400 -a \
         "$(status_field "$daemon" CapBnd)" = 0000000000000400 -a \
         "$(status_field "$daemon" NoNewPrivs)" = 1 -a "$(status_field "$daemon" Seccomp)" = 2
# ProtectProc=invisible, ProcSubset=pid: in the daemon's mount namespace,
# its user sees its own processes in /proc, and nothing but processes.
proc_view() {
    nsenter -t "$daemon" -m setpriv --reuid plugboard --regid plugboard --clear-groups \
        sh -c 'for p in /proc/[0-9]*; do stat -c %U "$p"; done | sort -u; ls /proc/meminfo 2>/dev/null'
}
if [ -n "${EMULATE_NO_MOUNT_NAMESPACE:-}" ]; then
    echo "not checked - the daemon's /proc (no mount namespace in this container)"
else
    check "the daemon's /proc shows the plugboard user its own processes only" \
        test "$(proc_view)" = plugboard
fi
# RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6, by the same filter.
families() {
    unit_do exec python3 -c 'import errno, socket
socket.socket(socket.AF_UNIX); socket.socket(socket.AF_INET); socket.socket(socket.AF_INET6)
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
except OSError as e:
    raise SystemExit(e.errno != errno.EAFNOSUPPORT)
raise SystemExit(1)'
}
check "as the unit, Unix, IPv4 and IPv6 sockets open and a netlink socket does not" families
check "/run/plugboard is plugboard's" \
    test "$(stat -c %U:%G /run/plugboard 2>/dev/null)" = plugboard:plugboard
check "the Unix socket belongs to plugboard:plugboard" \
    test "$(stat -c %U:%G:%a /run/plugboard/plugboard.sock 2>/dev/null)" = plugboard:plugboard:660
check "plugboard-cli -u /run/plugboard/plugboard.sock search ring answers" \
    test "$(ask -u /run/plugboard/plugboard.sock search ring)" = "In the caves beneath the Misty Mountains. 💍"
check "the line listener echoes" test "$(ask 127.0.0.1 65433 --line hello)" = hello
check "stats answers on the Unix socket, with refused_by" \
    sh -c "/usr/bin/plugboard-cli -w 2 -u /run/plugboard/plugboard.sock stats --json | grep -q '\"refused_by\": {\"busy\": 0'"
check "a message enqueued on the Unix socket" \
    test "$(ask -u /run/plugboard/plugboard.sock --json '{"action": "enqueue", "queue": "jobs", "message": "one"}')" = '{"result": "enqueued", "id": "1"}'
# StateDirectory= and UMask=0027: the database is plugboard's, not world-readable.
check "/var/lib/plugboard/queue.db is plugboard:plugboard, mode 640" \
    test "$(stat -c %U:%G:%a /var/lib/plugboard/queue.db 2>/dev/null)" = plugboard:plugboard:640

tls_ask() {
    (printf '%s\n' "$1"; sleep 1) |
        openssl s_client -quiet -no_ign_eof -verify_return_error -verify_ip 127.0.0.1 \
            -CAfile "$tls/server.crt" -connect 127.0.0.1:$tls_port 2>>"$tmp/tls.log"
}
tls_serial() {
    openssl s_client -connect 127.0.0.1:$tls_port </dev/null 2>>"$tmp/tls.log" |
        openssl x509 -noout -serial 2>>"$tmp/tls.log"
}
check "a line sent over TLS to port $tls_port comes back, the certificate verified" \
    test "$(tls_ask hello)" = hello

# --- Reload -------------------------------------------------------------------------
# As `systemctl reload` does: ExecReload's check, as the unit, then SIGHUP.
sed -i 's/^\( *entries = ( \)("morpheus"/\1("neo", "The One."), ("morpheus"/' $conf
check "the edited configuration adds an entry" grep -q '"neo", "The One."' $conf
exec_reload_check() {
    unit_do exec /usr/sbin/plugboard -t -c $conf >/dev/null
}
check "ExecReload's plugboard -t, as the unit, accepts the edited configuration" exec_reload_check
kill -HUP "$daemon"
if wait_for "The One." 127.0.0.1 $port search neo; then
    pass "after SIGHUP the new entry answers"
else
    cat "$state/log"
    fail "after SIGHUP the new entry answers"
fi
check "after SIGHUP search morpheus still answers" \
    test "$(ask 127.0.0.1 $port search morpheus)" = "Follow the white rabbit. 🐰"
check "after SIGHUP a line over TLS still comes back" test "$(tls_ask again)" = again
check "after SIGHUP the workers still run as plugboard:plugboard" check_workers

# --- A worker dies ----------------------------------------------------------------------
victim=$(children | head -n 1)
kill -KILL "$victim"
replaced() {
    tries=0
    while [ $tries -lt 100 ]; do
        workers=$(children)
        if [ -n "$workers" ] && ! echo "$workers" | grep -qx "$victim"; then
            return 0
        fi
        sleep 0.1
        tries=$((tries + 1))
    done
    return 1
}
check "a worker killed with SIGKILL is replaced by a new one" replaced
check "the new worker runs as plugboard:plugboard" check_workers
check "after the new worker started search neo answers" wait_for "The One." 127.0.0.1 $port search neo
check "after the new worker started a line over TLS comes back" test "$(tls_ask more)" = more

# --- A renewed certificate -----------------------------------------------------------------
# systemd copies credentials when the service starts: a reload serves the
# copies it has, a restart the renewed files.
renewed=$(new_certificate)
kill -HUP "$daemon"
sleep 0.5
check "after SIGHUP the credential copy's certificate is still served" \
    test -n "$renewed" -a "$(tls_serial)" = "$serial"
old_daemon=$daemon
if unit_do restart; then
    pass "the unit restarts"
else
    cat "$state/log"
    fail "the unit restarts"
fi
daemon=$(cat "$state/pid" 2>/dev/null)
check "the restart stopped the old daemon with exit status 0" \
    sh -c "! kill -0 $old_daemon 2>/dev/null && test \"\$(sed -n 1p '$state/exits')\" = 0"
wait_for "The One." 127.0.0.1 $port search neo >/dev/null
check "after the restart the renewed certificate is served" test "$(tls_serial)" = "$renewed"
check "after the restart the enqueued message is still there" \
    sh -c "/usr/bin/plugboard-cli -w 2 -u /run/plugboard/plugboard.sock --json '{\"action\": \"dequeue\", \"queue\": \"jobs\"}' | grep -q '\"message\": \"one\"'"

# --- Stop -----------------------------------------------------------------------------
unit_do stop
check "SIGTERM stops the daemon with exit status 0" test "$(cat "$state/status" 2>/dev/null)" = 0
if grep -qi 'error' "$state/log"; then
    echo "--- daemon log:"
    cat "$state/log"
fi
# The worker killed above is the one error expected.
check "the daemon logged no other errors" \
    sh -c "! grep ': error: ' '$state/log' | grep -qv '(pid $victim) killed by signal 9'"
check "reloads left the Unix socket's mode alone" \
    sh -c "! grep -q 'cannot change the mode' '$state/log'"
check "the daemon said nothing about privileges it did not change" \
    sh -c "! grep -q 'not started as root' '$state/log'"
rm -rf "$dropins"
cp -p "$tmp/plugboard.conf.orig" $conf

# --- Started as root, outside systemd -----------------------------------------------------
# The classic start: the master stays root, the workers drop to the user
# and group of plugboard.conf.
/usr/sbin/plugboard -f -c $conf >"$tmp/root.log" 2>&1 &
daemon_pid=$!
daemon=$daemon_pid
if wait_for "Follow the white rabbit. 🐰" 127.0.0.1 $port search morpheus; then
    pass "started as root, plugboard answers"
else
    cat "$tmp/root.log"
    fail "started as root, plugboard answers"
fi
check "started as root, the master runs as root" test "$(status_field "$daemon" Uid)" = "0 0 0 0"
check "started as root, the workers run as plugboard:plugboard" check_workers
kill -TERM "$daemon_pid"
wait "$daemon_pid"
status=$?
daemon_pid=
check "started as root, SIGTERM stops the daemon with exit status 0" test $status -eq 0
[ $run_dir_existed = no ] && rm -rf /run/plugboard

# --- Purge ------------------------------------------------------------------------------
purge() {
    if DEBIAN_FRONTEND=noninteractive apt-get purge -y plugboard plugboard-dev >"$tmp/purge.log" 2>&1; then
        pass "$1: apt-get purge"
    else
        cat "$tmp/purge.log"
        fail "$1: apt-get purge"
    fi
    check "$1: the user plugboard is gone" sh -c "! getent passwd plugboard >/dev/null"
    check "$1: the group plugboard is gone" sh -c "! getent group plugboard >/dev/null"
    check "$1: /etc/plugboard and /var/lib/plugboard are gone" test ! -e /etc/plugboard -a ! -e /var/lib/plugboard
    check "$1: the binaries are gone" sh -c "! ls /usr/sbin/plugboard /usr/bin/plugboard-cli /usr/bin/plugboard-bench $plugindir >/dev/null 2>&1"
    check "$1: the SDK is gone" sh -c "! ls /usr/include/plugboard /usr/share/doc/plugboard-dev >/dev/null 2>&1"
    check "$1: no unit, enablement link or deb-systemd-helper state is left" \
        sh -c "! ls /lib/systemd/system/plugboard.service /etc/systemd/system/*/plugboard.service /var/lib/systemd/deb-systemd-helper-enabled/plugboard.service* /var/lib/systemd/deb-systemd-helper-enabled/*/plugboard.service >/dev/null 2>&1"
}
purge "new install"

# --- Upgrade from 0.1.0, the daemon running ------------------------------------------------
# Without systemd, the packages' maintainer scripts skip their systemd
# steps. To run them as on a systemd machine, /run/systemd/system is made
# to exist for the while, and deb-systemd-invoke and systemctl, first on
# the PATH apt gives dpkg, are stand-ins (which ignore policy-rc.d): systemctl only records its calls;
# deb-systemd-invoke records its calls and starts, stops or restarts the
# daemon with emulate-unit.sh, from whichever unit is installed then (the
# 0.1.0 unit runs the master as root, the new one as plugboard). What is
# checked: the postinst of the new package restarts the service exactly
# once (no stop, one restart, the daemon's pid changed once), no dpkg
# prompt blocks (stdin is /dev/null, --force-confdef --force-confold as an
# unattended upgrade), the modified conffile is kept, the state in
# /var/lib/plugboard survives, and purging then cleans the machine.
fakebin=$tmp/fakebin
mkdir -p "$fakebin"
cat >"$fakebin/systemctl" <<EOF_STUB
#!/bin/sh
echo "systemctl \$*" >>"$tmp/invoked"
EOF_STUB
cat >"$fakebin/deb-systemd-invoke" <<EOF_STUB
#!/bin/sh
echo "deb-systemd-invoke \$*" >>"$tmp/invoked"
[ "\$2" = plugboard.service ] || exit 0
SYSCALL_FILTER_EXEC=$tmp/syscall-filter-exec exec sh "$srcdir/packaging/emulate-unit.sh" "$state" "\$1"
EOF_STUB
chmod 0755 "$fakebin/systemctl" "$fakebin/deb-systemd-invoke"
if [ ! -d /run/systemd/system ]; then
    mkdir -p /run/systemd/system
    systemd_dir_made=yes
fi
rm -rf "$state"
: >"$tmp/invoked"
# apt runs dpkg, and so the maintainer scripts, with DPkg::Path as PATH.
with_stand_ins() {
    DEBIAN_FRONTEND=noninteractive timeout 600 \
        apt-get -o DPkg::Path="$fakebin:/usr/sbin:/usr/bin:/sbin:/bin" "$@" </dev/null
}

check "the 0.1.0 package is in the tree ($fixture)" test -f "$fixture"
if with_stand_ins install -y "$fixture" >"$tmp/install01.log" 2>&1; then
    pass "apt-get install the 0.1.0 package"
else
    cat "$tmp/install01.log"
    fail "apt-get install the 0.1.0 package"
    finish
fi
check "its postinst started the service" grep -qx 'deb-systemd-invoke start plugboard.service' "$tmp/invoked"
daemon=$(cat "$state/pid" 2>/dev/null)
check "0.1.0 answers search morpheus" wait_for "Follow the white rabbit. 🐰" 127.0.0.1 $port search morpheus
first=$daemon

# State as the new package keeps it: a file of the administrator's, and a
# queue database written by a worker running as plugboard (a build-tree
# daemon started as root; 0.1.0 has no queue plugin).
install -d -m 0750 -o plugboard -g plugboard /var/lib/plugboard
echo "kept across the upgrade" >/var/lib/plugboard/note.txt
cat >"$tmp/queue.conf" <<EOF_CONF
user = "plugboard";
group = "plugboard";
listeners = ( { name = "local"; path = "$tmp/queue.sock"; mode = "0600"; framing = "frame"; } );
plugins = ( { name = "queue"; module = "queue"; settings = { path = "/var/lib/plugboard/queue.db"; }; } );
routes = ( { plugin = "queue"; } );
EOF_CONF
PLUGBOARD_PLUGIN_DIR=$builddir/plugins/.libs "$builddir/daemon/plugboard" -f -c "$tmp/queue.conf" \
    >"$tmp/queue.log" 2>&1 &
build_tree_pid=$!
tries=0
enqueued=
while [ $tries -lt 50 ] && [ -z "$enqueued" ]; do
    enqueued=$("$builddir/tools/plugboard-cli" -w 2 -u "$tmp/queue.sock" --json \
        '{"action": "enqueue", "queue": "kept", "message": "from before the upgrade"}' 2>/dev/null)
    [ -n "$enqueued" ] || sleep 0.1
    tries=$((tries + 1))
done
kill -TERM $build_tree_pid
wait $build_tree_pid
build_tree_pid=
check "a queue database in /var/lib/plugboard holds a message" \
    test "$enqueued" = '{"result": "enqueued", "id": "1"}' -a -s /var/lib/plugboard/queue.db
(cd /var/lib/plugboard && sha256sum note.txt queue.db) >"$tmp/state.sums"

# The administrator's change to the conffile.
sed -i 's/^\( *entries = ( \)("morpheus"/\1("neo", "The One."), ("morpheus"/' $conf
kill -HUP "$daemon"
check "0.1.0 serves the modified configuration" wait_for "The One." 127.0.0.1 $port search neo

if with_stand_ins install -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "$out"/plugboard_*.deb >"$tmp/upgrade.log" 2>&1; then
    pass "apt-get upgrades to the new package, unattended"
else
    cat "$tmp/upgrade.log"
    fail "apt-get upgrades to the new package, unattended"
fi
echo "--- maintainer scripts' service calls:"
cat "$tmp/invoked"
echo "---"
check "the new package is installed" \
    test "$(dpkg-query -W -f='${Version}' plugboard 2>/dev/null)" = "$(dpkg-deb -f "$(ls "$out"/plugboard_*.deb | head -n 1)" Version)"
check "the upgrade restarted the service once and stopped it never" \
    test "$(grep -c '^deb-systemd-invoke restart plugboard.service$' "$tmp/invoked")" = 1 -a \
         "$(grep -c '^deb-systemd-invoke stop' "$tmp/invoked")" = 0
daemon=$(cat "$state/pid" 2>/dev/null)
check "the daemon's pid changed once (two starts: the install, the upgrade)" \
    sh -c "test \$(wc -l <'$state/starts') -eq 2 && test '$(sed -n 2p "$state/starts")' = '$daemon' && test '$daemon' != '$first' && ! kill -0 $first 2>/dev/null"
check "the 0.1.0 daemon stopped with exit status 0" test "$(sed -n 1p "$state/exits" 2>/dev/null)" = 0
check "the modified conffile is kept" grep -q '"neo", "The One."' $conf
check "the new conffile is beside it as plugboard.conf.dpkg-dist" test -f $conf.dpkg-dist
check "the new daemon serves the kept configuration" wait_for "The One." 127.0.0.1 $port search neo
check "the new master runs as plugboard:plugboard" run_as_plugboard "$daemon"
check "the new workers run as plugboard:plugboard" check_workers
check "/var/lib/plugboard is plugboard:plugboard, mode 750" \
    test "$(stat -c %U:%G:%a /var/lib/plugboard)" = plugboard:plugboard:750
check "the state in /var/lib/plugboard is unchanged" \
    sh -c "cd /var/lib/plugboard && sha256sum -c --quiet '$tmp/state.sums'"
# The administrator merges the new conffile, which has the queue plugin.
cp $conf.dpkg-dist $conf
kill -HUP "$daemon"
check "with the new conffile, the message queued before the upgrade is dequeued" \
    sh -c "for i in 1 2 3 4 5 6 7 8 9 10; do /usr/bin/plugboard-cli -w 2 -u /run/plugboard/plugboard.sock --json '{\"action\": \"dequeue\", \"queue\": \"kept\"}' 2>/dev/null | grep -q '\"message\": \"from before the upgrade\"' && exit 0; sleep 0.2; done; exit 1"
unit_do stop
check "the upgraded daemon stops with exit status 0" test "$(cat "$state/status" 2>/dev/null)" = 0
: >"$tmp/invoked"
purge "upgrade"
if [ $systemd_dir_made = yes ]; then
    rmdir /run/systemd/system /run/systemd 2>/dev/null
    systemd_dir_made=no
fi
[ $run_dir_existed = no ] && rm -rf /run/plugboard

# Dependencies pulled in by the installs go too.
dpkg-query -W -f='${Package}\n' | sort >"$tmp/packages.after"
extra=$(comm -13 "$tmp/packages.before" "$tmp/packages.after")
if [ -n "$extra" ]; then
    echo "removing the dependencies the installs added: $extra"
    DEBIAN_FRONTEND=noninteractive apt-get purge -y $extra >>"$tmp/purge.log" 2>&1
fi
dpkg-query -W -f='${Package}\n' | sort >"$tmp/packages.after"
check "the installed package set is as before" cmp -s "$tmp/packages.before" "$tmp/packages.after"

finish
