#!/usr/bin/env python3
"""Sends each case of cases.py to nginx (port NGINX) and to the gateway (port GATEWAY) and
compares what each does: the status codes of its answers, and whether it then closes the
connection. Exits 1 when a case without a stated deviation differs, or one with a stated
deviation no longer does (the list would be stale).

Usage: diff.py NGINX_PORT GATEWAY_PORT [-v]
"""
import socket
import sys
import time

from cases import CASES


def ask(port, data):
    """The answer's status codes and how the connection ended (closed or kept)."""
    s = socket.create_connection(("127.0.0.1", port))
    out = b""
    end = "kept"
    try:
        s.sendall(data)
        # wait up to 3 s for a first byte, then until 0.3 s pass without one
        s.settimeout(3)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            if not d:
                end = "closed"
                break
            out += d
            s.settimeout(0.3)
    except (ConnectionResetError, BrokenPipeError):
        end = "closed"
    finally:
        s.close()
    codes = []
    i = 0
    while (j := out.find(b"HTTP/1.", i)) >= 0:
        codes.append(out[j + 9:j + 12].decode("latin1"))
        i = j + 12
    return (" ".join(codes) or "-") + ", " + end


def compare(name, a, b, deviation, verbose):
    """Prints how nginx's answer `a` and the gateway's `b` compare; True when unexpected:
    they differ without a stated deviation, or agree despite one."""
    same = a == b
    if same and deviation is None:
        mark = "  "
    elif not same and deviation is not None:
        mark = "~ "
    else:
        mark = "!!"
    if verbose or mark != "  ":
        note = f"  ({deviation})" if deviation and not same else ""
        print(f"{mark}{name:24} nginx: {a:14} gateway: {b}{note}")
    if mark == "!!" and same:
        print(f"   {name}: now answered as nginx does; drop its deviation")
    return mark == "!!"


def main():
    nginx, gateway = int(sys.argv[1]), int(sys.argv[2])
    verbose = "-v" in sys.argv[3:]
    bad = 0
    for name, request, deviation in CASES:
        data = request.encode("latin1")
        bad += compare(name, ask(nginx, data), ask(gateway, data), deviation, verbose)
    print(f"{len(CASES)} cases, {bad} unexpected")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
