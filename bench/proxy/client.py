"""Lock-step HTTP/1.1 client for bench/proxy/instructions.sh: CONNS keep-alive connections, each
sends REQS GET requests, one at a time, all connections in step; every answer must be a 200
with a Content-Length body. Usage: client.py PORT CONNS REQS"""
import socket
import sys

port, conns, reqs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def read_response(s, buf):
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise SystemExit("connection closed")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, v = line.split(b":", 1)
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        rest += s.recv(65536)
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"unexpected answer: {head!r}")
    return rest[length:]


socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
bufs = [b""] * conns
for _ in range(reqs):
    for s in socks:
        s.sendall(REQ)
    for j, s in enumerate(socks):
        bufs[j] = read_response(s, bufs[j])
print("done", conns * reqs)
