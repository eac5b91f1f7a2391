"""Raw HTTP/1 requests sent alike to nginx (as a reverse proxy) and to the gateway.

Kong's proxy is nginx, so what nginx answers to a request's bytes (refuse it, and how; or
pass it on) is what a Kong user's clients see. Each case is (name, bytes, deviation): the
deviation is None where the gateway must answer as nginx does, else why it knowingly
answers otherwise (stricter parsing, or a Kong setting nginx's defaults lack).
"""

H = "Host: h\r\n"

# Deviations, each said once.
STRICTER = "stricter than nginx (RFC 9112): refused with Kong's 400"
BODY_LIMIT = ("nginx's default client_max_body_size is 1m; Kong's is 0 (no limit), "
              "so the gateway waits for the announced body")
HEADER_COUNT = "the gateway limits a head to 100 headers (nginx has no count limit)"
HTTP09 = "HTTP/0.9 is not served (nginx answers with a bare body)"
VERSION = "only HTTP/1.0 and 1.1 request lines are served (nginx takes 1.x as 1.1, 2.0 as 505)"

CASES = [
    ("plain", f"GET / HTTP/1.1\r\n{H}\r\n", None),
    ("pipelined", f"GET / HTTP/1.1\r\n{H}\r\nGET / HTTP/1.1\r\n{H}\r\n", None),
    ("pipelined close", f"GET / HTTP/1.1\r\n{H}Connection: close\r\n\r\nGET / HTTP/1.1\r\n{H}\r\n", None),
    ("http/1.0 keep-alive", f"GET / HTTP/1.0\r\n{H}Connection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n{H}\r\n", None),
    ("head", f"HEAD / HTTP/1.1\r\n{H}\r\n", None),
    ("leading crlf", f"\r\n\r\nGET / HTTP/1.1\r\n{H}\r\n", None),
    ("leading space", f" GET / HTTP/1.1\r\n{H}\r\n", None),
    ("expect 100", f"POST / HTTP/1.1\r\n{H}Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc", None),
    ("get with body", f"GET / HTTP/1.1\r\n{H}Content-Length: 3\r\n\r\nabc", None),
    # lengths
    ("cl + te", f"POST / HTTP/1.1\r\n{H}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", None),
    ("cl twice, same", f"POST / HTTP/1.1\r\n{H}Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", None),
    ("cl twice, different", f"POST / HTTP/1.1\r\n{H}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", None),
    ("cl list", f"POST / HTTP/1.1\r\n{H}Content-Length: 3, 3\r\n\r\nabc", None),
    ("cl plus", f"POST / HTTP/1.1\r\n{H}Content-Length: +3\r\n\r\nabc", None),
    ("cl negative", f"POST / HTTP/1.1\r\n{H}Content-Length: -1\r\n\r\n", None),
    ("cl hex", f"POST / HTTP/1.1\r\n{H}Content-Length: 0x3\r\n\r\nabc", None),
    ("cl inner space", f"POST / HTTP/1.1\r\n{H}Content-Length: 1 2\r\n\r\n" + "a" * 12, None),
    ("cl trailing space", f"POST / HTTP/1.1\r\n{H}Content-Length: 3 \r\n\r\nabc", None),
    ("cl empty", f"POST / HTTP/1.1\r\n{H}Content-Length: \r\n\r\n", None),
    ("cl over 2^63", f"POST / HTTP/1.1\r\n{H}Content-Length: 99999999999999999999\r\n\r\n", None),
    ("cl 2^63-1", f"POST / HTTP/1.1\r\n{H}Content-Length: 9223372036854775807\r\n\r\nabc", BODY_LIMIT),
    # transfer codings
    ("te gzip, chunked", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", None),
    ("te chunked, gzip", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", None),
    ("te identity", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: identity\r\n\r\n", None),
    ("te xchunked", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", None),
    ("te Chunked", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: Chunked\r\n\r\n0\r\n\r\n", None),
    ("te twice", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", None),
    ("te on 1.0", f"POST / HTTP/1.0\r\n{H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", None),
    ("te space before colon", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", None),
    # chunks
    ("chunk extension", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n", None),
    ("chunk size not hex", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", None),
    ("chunk size negative", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n", None),
    ("chunk size overflow", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n", None),
    ("chunk data too long", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", None),
    ("chunk lines end in LF", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", STRICTER),
    ("chunk size then space", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n", None),
    ("chunk trailer", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", None),
    ("chunk size 0x", f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", None),
    # header lines
    ("obs-fold", f"GET / HTTP/1.1\r\n{H}X-A: 1\r\n  2\r\n\r\n", None),
    ("space before colon", f"GET / HTTP/1.1\r\n{H}X-A : 1\r\n\r\n", None),
    ("empty name", f"GET / HTTP/1.1\r\n{H}: 1\r\n\r\n", None),
    ("no colon", f"GET / HTTP/1.1\r\n{H}X-A\r\n\r\n", STRICTER),
    ("bare CR in value", f"GET / HTTP/1.1\r\n{H}X-A: a\rb\r\n\r\n", None),
    ("NUL in value", f"GET / HTTP/1.1\r\n{H}X-A: a\x00b\r\n\r\n", None),
    ("control byte in value", f"GET / HTTP/1.1\r\n{H}X-A: a\x01b\r\n\r\n", STRICTER),
    ("DEL in value", f"GET / HTTP/1.1\r\n{H}X-A: a\x7fb\r\n\r\n", STRICTER),
    ("UTF-8 value", f"GET / HTTP/1.1\r\n{H}X-A: \xc3\xa9\r\n\r\n", None),
    ("control byte in name", f"GET / HTTP/1.1\r\n{H}X\x01A: a\r\n\r\n", None),
    ("UTF-8 name", f"GET / HTTP/1.1\r\n{H}X\xc3\xa9: a\r\n\r\n", STRICTER + " (nginx drops the header)"),
    ("underscore in name", f"GET / HTTP/1.1\r\n{H}X_A: a\r\n\r\n", None),
    ("lines end in LF", "GET / HTTP/1.1\nHost: h\n\n", None),
    ("lines end in CR", "GET / HTTP/1.1\rHost: h\r\r", None),
    # host
    ("no host, 1.1", "GET / HTTP/1.1\r\n\r\n", None),
    ("no host, 1.0", "GET / HTTP/1.0\r\n\r\n", None),
    ("two hosts", f"GET / HTTP/1.1\r\n{H}{H}\r\n", None),
    ("host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", None),
    ("host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", None),
    ("host empty", "GET / HTTP/1.1\r\nHost: \r\n\r\n", None),
    ("host bad port", "GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", None),
    ("host IPv6", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", None),
    ("host trailing dot", "GET / HTTP/1.1\r\nHost: a.\r\n\r\n", None),
    ("host ..", "GET / HTTP/1.1\r\nHost: a..b\r\n\r\n", None),
    ("host underscore", "GET / HTTP/1.1\r\nHost: a_b\r\n\r\n", None),
    # request line
    ("absolute-form", "GET http://x/ HTTP/1.1\r\nHost: y\r\n\r\n", None),
    ("absolute-form https", "GET https://x/ HTTP/1.1\r\nHost: y\r\n\r\n", None),
    ("absolute-form ftp", "GET ftp://x/ HTTP/1.1\r\nHost: y\r\n\r\n", None),
    ("asterisk-form", f"OPTIONS * HTTP/1.1\r\n{H}\r\n", None),
    ("asterisk GET", f"GET * HTTP/1.1\r\n{H}\r\n", None),
    ("no leading slash", f"GET a HTTP/1.1\r\n{H}\r\n", None),
    ("CONNECT authority", "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", None),
    ("CONNECT path", f"CONNECT /x HTTP/1.1\r\n{H}\r\n", None),
    ("TRACE", f"TRACE / HTTP/1.1\r\n{H}\r\n", None),
    ("lower-case method", f"get / HTTP/1.1\r\n{H}\r\n", None),
    ("unknown method", f"FOO / HTTP/1.1\r\n{H}\r\n", None),
    ("digit in method", f"G3T / HTTP/1.1\r\n{H}\r\n", None),
    ("underscore in method", f"G_T / HTTP/1.1\r\n{H}\r\n", None),
    ("HTTP/1.2", f"GET / HTTP/1.2\r\n{H}\r\n", VERSION),
    ("HTTP/2.0", f"GET / HTTP/2.0\r\n{H}\r\n", VERSION),
    ("HTTP/1.10", f"GET / HTTP/1.10\r\n{H}\r\n", VERSION),
    ("HTTP/01.1", f"GET / HTTP/01.1\r\n{H}\r\n", None),
    ("lower-case http", f"GET / http/1.1\r\n{H}\r\n", None),
    ("HTTP/0.9", "GET /\r\n", HTTP09),
    ("two spaces", f"GET  / HTTP/1.1\r\n{H}\r\n", STRICTER),
    ("tab separator", f"GET\t/ HTTP/1.1\r\n{H}\r\n", None),
    ("space before CRLF", f"GET / HTTP/1.1 \r\n{H}\r\n", STRICTER),
    # paths
    ("space in path", f"GET /a b HTTP/1.1\r\n{H}\r\n", None),
    ("NUL in path", f"GET /a\x00b HTTP/1.1\r\n{H}\r\n", None),
    ("control byte in path", f"GET /a\x01b HTTP/1.1\r\n{H}\r\n", None),
    ("DEL in path", f"GET /a\x7fb HTTP/1.1\r\n{H}\r\n", None),
    ("UTF-8 path", f"GET /\xc3\xa9 HTTP/1.1\r\n{H}\r\n", None),
    ("fragment", f"GET /a#b HTTP/1.1\r\n{H}\r\n", None),
    ("%00", f"GET /a%00b HTTP/1.1\r\n{H}\r\n", None),
    ("%zz", f"GET /a%zzb HTTP/1.1\r\n{H}\r\n", None),
    ("/../a", f"GET /../a HTTP/1.1\r\n{H}\r\n", None),
    ("/a/../../b", f"GET /a/../../b HTTP/1.1\r\n{H}\r\n", None),
    ("/a/..", f"GET /a/.. HTTP/1.1\r\n{H}\r\n", None),
    ("/%2e%2e/a", f"GET /%2e%2e/a HTTP/1.1\r\n{H}\r\n", None),
    ("/a%2F..%2F..%2Fb", f"GET /a%2F..%2F..%2Fb HTTP/1.1\r\n{H}\r\n", None),
    ("..  after ?", f"GET /a?/../../b HTTP/1.1\r\n{H}\r\n", None),
    ("backslash", f"GET /a\\b HTTP/1.1\r\n{H}\r\n", None),
    ("quote", f"GET /a\"b HTTP/1.1\r\n{H}\r\n", None),
    ("braces", f"GET /a{{b}} HTTP/1.1\r\n{H}\r\n", None),
    # sizes (nginx's buffers: 1k, then 4 x 8k)
    ("header line 7000", f"GET / HTTP/1.1\r\n{H}X-A: {'a' * 7000}\r\n\r\n", None),
    ("header line 9000", f"GET / HTTP/1.1\r\n{H}X-A: {'a' * 9000}\r\n\r\n", None),
    ("request line 9000", f"GET /{'a' * 9000} HTTP/1.1\r\n{H}\r\n", None),
    ("five lines of 6000", f"GET / HTTP/1.1\r\n{H}" + "".join(f"X-{i}: {'a' * 6000}\r\n" for i in range(5)) + "\r\n", None),
    ("four lines of 6000", f"GET / HTTP/1.1\r\n{H}" + "".join(f"X-{i}: {'a' * 6000}\r\n" for i in range(4)) + "\r\n", None),
    ("90 headers", f"GET / HTTP/1.1\r\n{H}" + "".join(f"X-{i}: a\r\n" for i in range(90)) + "\r\n", None),
    ("150 headers", f"GET / HTTP/1.1\r\n{H}" + "".join(f"X-{i}: a\r\n" for i in range(150)) + "\r\n", HEADER_COUNT),
    ("upgrade h2c", f"GET / HTTP/1.1\r\n{H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", None),
]
