#!/usr/bin/env python3
"""Upstream answers of every shape, proxied by nginx and by the gateway, compared.

A raw backend on BACKEND_PORT answers a request for `/u/<name>` with the bytes of the case
of that name, then closes the connection. For each case a client asks each proxy for it
(and, on the same connection, for `/u/ok` after it, to see the connection still works) and
the answers' status codes and the connection's end are compared, as diff.py compares the
answers to raw requests (headers and bodies are not compared: crates/proxy/tests/
upstream_answers.rs checks those). A deviation, where stated, says why the gateway answers
otherwise.

Kong 3.10 runs nginx 1.27, which refuses (502, `invalid_header`) answers that nginx 1.22, the
one Debian ships and this harness runs, takes: a second Content-Length, even an equal one,
one that is not a number, one beside Transfer-Encoding, a second Transfer-Encoding, a coding
other than `chunked` (ngx_http_upstream_process_content_length and _transfer_encoding,
1.23.0). The gateway answers as 1.27 does; with an nginx older than 1.23 those cases are
expected to differ (NGINX_1_22), with a newer one to agree.

Usage: upstream.py BACKEND_PORT NGINX_PORT GATEWAY_PORT [-v]
"""
import re
import socket
import subprocess
import sys
import threading
import time

from diff import ask, compare


def nginx_version():
    """The (major, minor) of the nginx on PATH, (0, 0) if unknown."""
    try:
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
    except OSError:
        return (0, 0)
    m = re.search(r"nginx/(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


STRICTER = "stricter than nginx: an answer that cannot be read exactly is a 502"
BAD_BODY = ("a chunked body is read as it is passed on: the head is already out when a chunk "
            "turns out invalid, and the connection is closed (nginx had sent nothing yet)")
UNASKED_101 = ("a 101 answering a request that asked for no protocol switch is a 502 (nginx passes "
               "it on, with what follows as its body: proxy::is_websocket)")
INTERIM = ("an interim 1xx other than 101 (100, 103) is read past to the final answer (nginx "
           "1.27, which sends no Expect, takes it for the final answer, and passes what follows "
           "as its body until the upstream closes)")
# Kong's nginx (1.27) refuses these as the gateway does; only an nginx before 1.23 takes them.
NGINX_1_22 = (None if nginx_version() >= (1, 23) else
              "Kong's nginx 1.27 refuses this answer with 502, as the gateway does; "
              "nginx 1.22 (Debian's) takes it")

# name -> (raw answer, deviation)
CASES = {
    "ok": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", None),
    "no reason": (b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", None),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", None),
    "close-delimited": (b"HTTP/1.1 200 OK\r\n\r\nok", None),
    "http/1.0": (b"HTTP/1.0 200 OK\r\n\r\nok", None),
    "lengths differ": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", NGINX_1_22),
    "lengths equal": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", NGINX_1_22),
    "length and chunked": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", NGINX_1_22),
    "chunked and length": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n", NGINX_1_22),
    "length not a number": (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nok", NGINX_1_22),
    "gzip coding": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", NGINX_1_22),
    "gzip, chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", NGINX_1_22),
    "chunked twice": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", NGINX_1_22),
    "CHUNKED": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n2\r\nok\r\n0\r\n\r\n", None),
    "LF chunk lines": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\n3 ext\nabc\r\n0\n\n", None),
    "bad chunk": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n", BAD_BODY),
    "short body": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", None),
    "obs-fold": (b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\nContent-Length: 2\r\n\r\nok", None),
    "no colon": (b"HTTP/1.1 200 OK\r\nX-A\r\nContent-Length: 2\r\n\r\nok", STRICTER),
    "space before colon": (b"HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 2\r\n\r\nok", None),
    "LF line ends": (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", None),
    "NUL in value": (b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", None),
    "status abc": (b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok", STRICTER),
    "status 99": (b"HTTP/1.1 099 X\r\nContent-Length: 2\r\n\r\nok", STRICTER),
    "status 600": (b"HTTP/1.1 600 X\r\nContent-Length: 2\r\n\r\nok", None),
    "HTTP/2.0 line": (b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", STRICTER),
    "not HTTP": (b"hello\r\n\r\n", STRICTER),
    "empty": (b"", None),
    "interim then final": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", INTERIM),
    "103 then final": (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", INTERIM),
    "http/1.0 keep-alive": (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", None),
    "hidden headers": (b"HTTP/1.1 200 OK\r\nX-Pad: x\r\nX-Accel-Expires: 1\r\nX-Accel-Charset: utf-8\r\nContent-Length: 2\r\n\r\nok", None),
    "204 with length": (b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok", None),
    "304": (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 2\r\n\r\n", None),
    "404": (b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno", None),
    "503": (b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\n\r\nno", None),
    "101 not asked": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nok", UNASKED_101),
    "connection close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", None),
    "3 KiB header": (b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 3000 + b"\r\nContent-Length: 2\r\n\r\nok", None),
    # past nginx's default proxy_buffer_size (one page, 4k; Kong sets none)
    "5 KiB header": (b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 5000 + b"\r\nContent-Length: 2\r\n\r\nok", None),
    "150 headers": (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"Content-Length: 2\r\n\r\nok", None),
}


def serve(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)

    def one(c):
        try:
            c.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head:
                d = c.recv(65536)
                if not d:
                    return
                head += d
            path = head.split(b" ", 2)[1].decode("latin1")
            name = path.rsplit("/u/", 1)[-1].replace("%20", " ")
            answer, _ = CASES.get(name, CASES["ok"])
            c.sendall(answer)
            time.sleep(0.05)
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()


def main():
    backend, nginx, gateway = (int(a) for a in sys.argv[1:4])
    verbose = "-v" in sys.argv[4:]
    threading.Thread(target=serve, args=(backend,), daemon=True).start()
    time.sleep(0.2)
    bad = 0
    for name, (_, deviation) in CASES.items():
        path = name.replace(" ", "%20")
        req = (f"GET /u/{path} HTTP/1.1\r\nHost: h\r\n\r\n"
               f"GET /u/ok HTTP/1.1\r\nHost: h\r\n\r\n").encode("latin1")
        bad += compare(name, ask(nginx, req), ask(gateway, req), deviation, verbose)
    print(f"{len(CASES)} upstream cases, {bad} unexpected")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
