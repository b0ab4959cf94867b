"""Request-smuggling corpus over raw sockets (SPEC §3 Strictness).

Each case: the client gets the expected status with x-outrider-error, the connection is closed,
and the upstream never receives the request. For cases whose head is bad, the upstream must
receive no byte at all. For cases whose head is fine but whose chunked body is bad, the proxy may
already have started forwarding (streaming), so the check is that the upstream never received a
complete request (the proxy must abort the upstream message, never terminate it cleanly)."""

import time

import pytest

H = b"Host: a\r\n"

# (id, payload, expected status, head_is_bad)
CORPUS = [
    ("cl-and-te", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, True),
    ("te-and-cl", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400, True),
    ("two-differing-cl", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 400, True),
    ("cl-list-differing", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 4, 5\r\n\r\nabcde", 400, True),
    ("cl-plus-sign", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: +4\r\n\r\nabcd", 400, True),
    ("cl-not-a-number", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 4a\r\n\r\nabcd", 400, True),
    ("obs-fold", b"GET /s HTTP/1.1\r\n" + H + b"X-Foo: a\r\n b\r\n\r\n", 400, True),
    ("first-header-line-folded", b"GET /s HTTP/1.1\r\n Host: a\r\n\r\n", 400, True),
    ("space-before-colon", b"GET /s HTTP/1.1\r\nHost : a\r\n\r\n", 400, True),
    ("space-before-colon-te", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400, True),
    ("bare-lf-everywhere", b"GET /s HTTP/1.1\nHost: a\n\n", 400, True),
    ("bare-lf-in-header", b"GET /s HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400, True),
    ("bare-cr-in-header", b"GET /s HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n", 400, True),
    ("nul-in-header-value", b"GET /s HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400, True),
    ("ctl-0x01-in-header-value", b"GET /s HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", 400, True),
    ("del-in-header-value", b"GET /s HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n", 400, True),
    ("nul-in-target", b"GET /s\x00x HTTP/1.1\r\n" + H + b"\r\n", 400, True),
    ("double-space-request-line", b"GET  /s HTTP/1.1\r\n" + H + b"\r\n", 400, True),
    ("trailing-space-request-line", b"GET /s HTTP/1.1 \r\n" + H + b"\r\n", 400, True),
    ("tab-in-request-line", b"GET\t/s HTTP/1.1\r\n" + H + b"\r\n", 400, True),
    ("missing-host-http11", b"GET /s HTTP/1.1\r\nX-A: b\r\n\r\n", 400, True),
    ("two-hosts", b"GET /s HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, True),
    ("http09", b"GET /s\r\n", 400, True),
    ("te-gzip-chunked", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, True),
    ("te-gzip", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nabcd", 501, True),
    ("te-chunked-chunked", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 501, True),
    ("te-two-headers", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, True),
    ("te-identity", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n", 501, True),
    # bad chunked bodies behind a valid head
    ("invalid-chunk-size", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, False),
    ("chunk-size-0x-prefix", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400, False),
    ("huge-chunk-size", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n", 400, False),
    ("chunk-ext-over-4k", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n", 400, False),
    ("chunk-missing-crlf", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400, False),
    ("chunk-size-bare-lf", b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400, False),
]


@pytest.mark.parametrize("payload,status,head_is_bad", [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_smuggling_corpus(module_proxy, module_upstream, payload, status, head_is_bad):
    p, up = module_proxy, module_upstream
    assert p.alive(), "the proxy died earlier in this module"
    bytes_before = up.bytes_received
    complete_before = len(up.complete)
    with p.conn(timeout=5) as c:
        c.send(payload)
        r = c.read_response(timeout=4)
        assert r.status == status, f"expected {status}, got {r}"
        assert r.header("x-outrider-error") == "bad_request", r
        closed, extra = c.wait_closed(2)
        assert closed, "the connection must be closed after a strictness error"
        assert extra == b"", f"bytes after the error response: {extra[:200]!r}"
    time.sleep(0.2)
    assert len(up.complete) == complete_before, (
        f"the upstream received a complete request: {up.complete[-1].raw_head[:300]!r} "
        f"body={up.complete[-1].body[:100]!r}"
    )
    if head_is_bad:
        assert up.bytes_received == bytes_before, f"{up.bytes_received - bytes_before} bytes reached the upstream"
    assert p.alive(), "the proxy process died"


def test_proxy_healthy_after_corpus(module_proxy, module_upstream):
    with module_proxy.conn() as c:
        c.request("GET", "/still-fine")
        r = c.read_response()
    assert r.status == 200, r


def test_valid_lookalikes_accepted(module_proxy, module_upstream):
    """Things that look odd but are valid must still pass (no false positives)."""
    p, up = module_proxy, module_upstream
    cases = [
        b"GET /ok-tab HTTP/1.1\r\nHost: a\r\nX-A: a\tb\r\n\r\n",           # HTAB inside a value
        b"GET /ok-ows HTTP/1.1\r\nHost: a\r\nX-A:   padded  \r\n\r\n",     # OWS around a value
        b"GET /ok-obs-text HTTP/1.1\r\nHost: a\r\nX-A: caf\xe9\r\n\r\n",    # obs-text byte
        b"POST /echo/ok-chunk-ext HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",                 # chunk ext + trailer
    ]
    for raw in cases:
        with p.conn() as c:
            c.send(raw)
            r = c.read_response()
            assert r.status == 200, f"{raw[:60]!r} -> {r}"
