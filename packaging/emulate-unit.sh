#!/bin/sh
# emulate-unit.sh - starts and stops the installed plugboard.service the way
# systemd would, on a machine without systemd (a CI container), for
# packaging/test-packages.sh. Run as root:
#
#     emulate-unit.sh STATE start|stop|restart|try-restart|status
#     emulate-unit.sh STATE exec COMMAND [ARG]...
#
# It reads /lib/systemd/system/plugboard.service and its drop-ins in
# /etc/systemd/system/plugboard.service.d/*.conf and applies, as systemd
# does before ExecStartPre= and ExecStart=:
#   User=, Group= (setpriv --reuid/--regid/--init-groups);
#   CapabilityBoundingSet=, AmbientCapabilities= (setpriv --bounding-set,
#     --inh-caps, --ambient-caps; an empty assignment resets the set);
#   NoNewPrivileges=, SystemCallFilter=, SystemCallErrorNumber=EPERM (the
#     filter as `systemd-analyze syscall-filter` expands its groups, set by
#     syscall-filter-exec, which sets no_new_privs too);
#   RestrictAddressFamilies= of AF_UNIX, AF_INET and AF_INET6 (socket() of
#     another family fails with EAFNOSUPPORT, by the same filter);
#   PrivateMounts=, ProtectProc=invisible, ProcSubset=pid (a mount
#     namespace of its own, /proc mounted in it with hidepid=invisible,
#     subset=pid);
#   UMask=;
#   RuntimeDirectory= and StateDirectory= with their modes (created under
#     /run and /var/lib, given to User= and Group=);
#   LoadCredential=ID:PATH (PATH copied, as root, into
#     /run/credentials/plugboard.service, mode 0500 and files 0400, owned by
#     User=, named in $CREDENTIALS_DIRECTORY; removed on stop).
# Not emulated: the other mount settings (ProtectSystem=, ProtectHome=,
# PrivateTmp=, PrivateDevices=, ...), RestrictNamespaces=,
# MemoryDenyWriteExecute=, LockPersonality=, the notify protocol and
# cgroups.
#
# A start runs ExecStartPre= and, if it succeeds, ExecStart= in the
# background, in its own session; STATE/pid is then the main process,
# STATE/log its output, STATE/starts gets one line per start, and
# STATE/status the main process's exit status once it has ended (and
# STATE/exits one line per exit). A stop sends SIGTERM to the main process
# and waits for it (up to 30 s). exec runs a command as the unit's Exec
# lines run, as ExecReload= would.
# SYSCALL_FILTER_EXEC names the syscall-filter-exec binary; with
# EMULATE_NO_MOUNT_NAMESPACE set (a container that allows none), the mount
# settings are left out.

set -u
state=$1
action=$2
unit=/lib/systemd/system/plugboard.service
dropins=/etc/systemd/system/plugboard.service.d

# Every assignment of the unit, then of its drop-ins, in order.
assignments() {
    {
        cat "$unit"
        for d in "$dropins"/*.conf; do
            [ -f "$d" ] && cat "$d"
        done
    } | sed -n 's/^\([A-Za-z]*\)=\(.*\)$/\1=\2/p'
}
# The last value of a single-valued setting.
setting() {
    assignments | sed -n "s/^$1=//p" | tail -n 1
}
# A capability set: the union of the assignments after the last empty one.
capabilities() {
    assignments | sed -n "s/^$1=//p" | awk '$0 == "" { caps = ""; next }
        { caps = caps " " $0 } END { print caps }' |
        tr 'A-Z' 'a-z' | tr -s ' ' '\n' | sed -n 's/^cap_/+/p' | paste -sd, -
}
expand_group() {
    for g in "$@"; do
        case $g in
            @*) systemd-analyze syscall-filter "$g" | sed -n 's/^    //p' | grep -v '^#' |
                    while read -r n; do expand_group "$n"; done ;;
            *) echo "$g" ;;
        esac
    done
}
# SystemCallFilter= as systemd applies it: the allow list of the first
# assignment, less the calls of each assignment starting with ~.
syscall_allow_list() {
    allow=
    deny=
    for f in $(assignments | sed -n 's/^SystemCallFilter=//p' | tr ' ' '\n'); do
        case $f in
            "~"*) deny="$deny ${f#\~}" ;;
            *) allow="$allow $f" ;;
        esac
    done
    [ -n "$allow" ] || return 1
    expand_group $allow | sort -u >"$state/allowed"
    expand_group $deny | sort -u >"$state/denied"
    comm -23 "$state/allowed" "$state/denied"
}

credentials=/run/credentials/plugboard.service

# Becomes a command run as the unit runs its Exec lines: user,
# capabilities, system call filter, umask, credentials.
run() {
    user=$(setting User)
    group=$(setting Group)
    [ -n "$group" ] || group=$user
    bounding=$(capabilities CapabilityBoundingSet)
    ambient=$(capabilities AmbientCapabilities)
    wrapper="setpriv --bounding-set -all${bounding:+,$bounding}"
    if [ -n "$user" ]; then
        wrapper="$wrapper --reuid $user --regid $group --init-groups --inh-caps -all${ambient:+,$ambient}"
        [ -n "$ambient" ] && wrapper="$wrapper --ambient-caps $ambient"
    fi
    if syscall_allow_list >"$state/syscalls"; then
        if [ "$(setting SystemCallErrorNumber)" != EPERM ]; then
            echo "emulate-unit.sh: only SystemCallErrorNumber=EPERM is emulated" >&2
            return 1
        fi
        families=
        for family in $(setting RestrictAddressFamilies); do
            case $family in
                AF_UNIX) families=$families,1 ;;
                AF_INET) families=$families,2 ;;
                AF_INET6) families=$families,10 ;;
                *) echo "emulate-unit.sh: RestrictAddressFamilies=$family is not emulated" >&2
                   return 1 ;;
            esac
        done
        wrapper="$wrapper ${SYSCALL_FILTER_EXEC:?}${families:+ -a ${families#,}} $state/syscalls"
    elif [ "$(setting NoNewPrivileges)" = yes ]; then
        wrapper="$wrapper --no-new-privs"
    fi
    # A mount namespace, and /proc as the unit shows it there; mounted as
    # root, before setpriv.
    proc_options=
    [ "$(setting ProtectProc)" = invisible ] && proc_options=hidepid=invisible
    [ "$(setting ProcSubset)" = pid ] && proc_options=${proc_options:+$proc_options,}subset=pid
    if [ -n "${EMULATE_NO_MOUNT_NAMESPACE:-}" ]; then
        :
    elif [ -n "$proc_options" ]; then
        printf '%s\n' '#!/bin/sh' "mount -t proc -o $proc_options proc /proc || exit 1" \
            'exec "$@"' >"$state/mount-proc"
        wrapper="unshare --mount --propagation private sh $state/mount-proc $wrapper"
    elif [ "$(setting PrivateMounts)" = yes ]; then
        wrapper="unshare --mount --propagation private $wrapper"
    fi
    mask=$(setting UMask)
    umask "${mask:-0022}"
    if [ -d "$credentials" ]; then
        CREDENTIALS_DIRECTORY=$credentials
        export CREDENTIALS_DIRECTORY
    fi
    exec $wrapper "$@"
}

start() {
    mkdir -p "$state"
    chmod 0755 "$state"
    rm -f "$state/status"
    user=$(setting User)
    group=$(setting Group)
    [ -n "$group" ] || group=$user
    owner=root:root
    [ -n "$user" ] && owner=$user:$group

    for kind in Runtime State; do
        dir=$(setting ${kind}Directory)
        [ -n "$dir" ] || continue
        mode=$(setting ${kind}DirectoryMode)
        base=/run
        [ $kind = State ] && base=/var/lib
        install -d -m "${mode:-0755}" -o "${owner%:*}" -g "${owner#*:}" "$base/$dir"
    done

    rm -rf "$credentials"
    if assignments | grep -q '^LoadCredential='; then
        install -d -m 0755 "${credentials%/*}"
        install -d -m 0700 "$credentials"
        assignments | sed -n 's/^LoadCredential=//p' | while IFS=: read -r id path; do
            install -m 0400 -o "${owner%:*}" -g "${owner#*:}" "$path" "$credentials/$id" || exit 1
        done || return 1
        chown "$owner" "$credentials"
        chmod 0500 "$credentials"
    fi

    pre=$(setting ExecStartPre)
    if [ -n "$pre" ]; then
        (run $pre) >>"$state/log" 2>&1 </dev/null || return 1
    fi
    # A session of its own, like a service, out of the caller's (dpkg's)
    # pipes; the shell waits for the daemon and writes its exit status.
    setsid sh -c 's=$1; shift; echo $$ >"$s/shell"; "$@"; echo $? >"$s/status"; cat "$s/status" >>"$s/exits"' \
        sh "$state" sh "$0" "$state" exec $(setting ExecStart) \
        </dev/null >>"$state/log" 2>&1 &
    tries=0
    while [ $tries -lt 50 ]; do
        shell=$(cat "$state/shell" 2>/dev/null)
        main=
        [ -n "$shell" ] && main=$(pgrep -P "$shell" | head -n 1)
        if [ -n "$main" ]; then
            echo "$main" >"$state/pid"
            echo "$main" >>"$state/starts"
            return 0
        fi
        sleep 0.1
        tries=$((tries + 1))
    done
    return 1
}

stop() {
    main=$(cat "$state/pid" 2>/dev/null)
    [ -n "$main" ] || return 0
    kill -TERM "$main" 2>/dev/null
    tries=0
    while [ ! -s "$state/status" ] && [ $tries -lt 300 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    rm -f "$state/pid" "$state/shell"
    rm -rf "$credentials"
    [ -s "$state/status" ]
}

case $action in
    start) start ;;
    stop) stop ;;
    restart) stop && start ;;
    try-restart) [ -s "$state/pid" ] || exit 0; stop && start ;;
    status) [ -s "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null ;;
    exec) shift 2; run "$@" ;;
    *) echo "usage: emulate-unit.sh STATE start|stop|restart|try-restart|status|exec COMMAND..." >&2; exit 64 ;;
esac
