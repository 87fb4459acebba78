#!/usr/bin/env python3
"""tls-client.py - a TLS client for the tests, written with Python's ssl
module only, so that it shares no code with the daemon.

    tls-client.py [options] HOST PORT

connects, does the handshake, writes one status line to --status-fd (if
given), then relays bytes: what comes on stdin goes over TLS, what comes
over TLS goes to stdout. The tests give it a socket for stdin and stdout,
so that to them the TLS connection looks like a plain one. It exits when
the server closes (or the handshake or a read fails: the reason goes to
stderr), or when stdout is gone.

The status line is

    OK VERSION PEER-CN      the handshake succeeded (PEER-CN: the commonName
                            of the server's certificate, "-" when none)
    FAIL REASON             it did not

    tls-client.py --client-hello

writes a ClientHello (the first flight of a handshake with this module's
defaults) to stdout, and exits.

    tls-client.py --resume N [options] HOST PORT

connects N + 1 times one after the other, each time offering the session
of the first connection (the later ones to --resume-port if given); each
sends one line ("resume\n") and reads one line back, for a server that
echoes lines, or with --ask JSON sends a text/json frame of that content
and reads the reply frame. The status line is then

    RESUMED K N LAST        K of the N later connections resumed; LAST: the
                            content of the last reply ("-" for lines)
    FAIL REASON             a connection failed

With --hold, the status line after the first connection is "OK VERSION
PEER-CN"; it then waits for a line on stdin before the others, and writes
the RESUMED line to stdout.
"""

import argparse
import json
import os
import select
import socket
import ssl
import sys

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def client_hello():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    sys.stdout.buffer.write(outgoing.read())
    sys.stdout.buffer.flush()


def peer_cn(tls):
    cert = tls.getpeercert()
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return "-"


def relay(tls):
    """Until the server closes, stdout goes away or an error."""
    tls.setblocking(False)
    to_server = b""
    local_open = True
    while True:
        readers = [tls]
        if local_open and len(to_server) < (1 << 20):
            readers.append(0)
        writers = [tls] if to_server else []
        if tls.pending() == 0:
            readable, _, _ = select.select(readers, writers, [])
        else:
            readable = [tls]
        if tls in readable or tls.pending():
            while True:
                try:
                    data = tls.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    break
                except (ssl.SSLError, OSError) as e:
                    print("tls-client: read: %s" % e, file=sys.stderr)
                    return
                if not data:
                    print("tls-client: the server closed", file=sys.stderr)
                    return
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(1, view):]
                except OSError:
                    return
        if 0 in readable:
            try:
                data = os.read(0, 65536)
            except OSError:
                data = b""
            if data:
                to_server += data
            else:
                local_open = False
        if to_server:
            try:
                sent = tls.send(to_server)
                to_server = to_server[sent:]
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except (ssl.SSLError, OSError) as e:
                print("tls-client: write: %s" % e, file=sys.stderr)
                return


def recv_exact(tls, n):
    got = b""
    while len(got) < n:
        data = tls.recv(n - len(got))
        if not data:
            raise OSError("the server closed in the middle of a reply")
        got += data
    return got


def exchange(tls, ask):
    """One line ("resume\\n") and its echo, or with ask a text/json frame
    and its reply, whose content is returned."""
    if ask is None:
        tls.sendall(b"resume\n")
        got = b""
        while not got.endswith(b"\n"):
            data = tls.recv(4096)
            if not data:
                raise OSError("the server closed before answering the line")
            got += data
        return "-"
    body = ask.encode()
    header = json.dumps({"byteorder": sys.byteorder, "content-type": "text/json",
                         "content-encoding": "utf-8",
                         "content-length": len(body)}).encode()
    tls.sendall(len(header).to_bytes(2, "big") + header + body)
    length = int.from_bytes(recv_exact(tls, 2), "big")
    header = json.loads(recv_exact(tls, length))
    return recv_exact(tls, header["content-length"]).decode()


def resume(context, args, report):
    """The first connection's session offered to args.resume more (on
    args.resume_port if given)."""
    session = None
    resumed = 0
    last = "-"
    try:
        for i in range(args.resume + 1):
            port = args.resume_port if i > 0 and args.resume_port else args.port
            raw = socket.create_connection((args.host, port), timeout=args.timeout)
            with context.wrap_socket(raw, server_hostname=args.servername,
                                     session=session) as tls:
                # Under TLS 1.3 the ticket comes after the handshake: the
                # exchange reads it.
                last = exchange(tls, args.ask)
                if i == 0:
                    session = tls.session
                    if args.hold:
                        report("OK %s %s" % (tls.version(), peer_cn(tls)))
                elif tls.session_reused:
                    resumed += 1
            if i == 0 and args.hold:
                sys.stdin.buffer.readline()
        result = "RESUMED %d %d %s" % (resumed, args.resume, last)
    except (ssl.SSLError, OSError, ValueError) as e:
        result = "FAIL %s" % str(e).replace("\n", " ")
    if args.hold:
        os.write(1, result.encode() + b"\n")
    else:
        report(result)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host", nargs="?")
    p.add_argument("port", nargs="?", type=int)
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--servername", default="localhost")
    p.add_argument("--min", choices=VERSIONS)
    p.add_argument("--max", choices=VERSIONS)
    p.add_argument("--status-fd", type=int)
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--client-hello", action="store_true")
    p.add_argument("--resume", type=int)
    p.add_argument("--hold", action="store_true")
    p.add_argument("--resume-port", type=int)
    p.add_argument("--ask")
    args = p.parse_args()
    if args.client_hello:
        client_hello()
        return 0
    if args.host is None or args.port is None:
        p.error("HOST and PORT are required")

    status = os.fdopen(args.status_fd, "w") if args.status_fd is not None else None

    def report(line):
        if status:
            status.write(line + "\n")
            status.flush()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = VERSIONS[args.min or "1.2"]
    if args.max:
        context.maximum_version = VERSIONS[args.max]
    if args.ca:
        context.load_verify_locations(cafile=args.ca)
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    if args.resume is not None:
        resume(context, args, report)
        return 0
    raw = socket.create_connection((args.host, args.port), timeout=args.timeout)
    try:
        tls = context.wrap_socket(raw, server_hostname=args.servername)
    except (ssl.SSLError, OSError) as e:
        report("FAIL %s" % str(e).replace("\n", " "))
        print("tls-client: handshake: %s" % e, file=sys.stderr)
        return 1
    report("OK %s %s" % (tls.version(), peer_cn(tls)))
    relay(tls)
    try:
        tls.close()
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
