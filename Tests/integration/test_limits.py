"""Listener limits and timeouts (SPEC §2 listeners, §3 error table): 408, idle close, 413, 431,
414."""

import time

import pytest


def _assert_local_error(r, status, reason):
    assert r.status == status, r
    assert r.header("x-outrider-error") == reason, r
    assert (r.header("content-type") or "").startswith("text/plain"), r
    assert 0 < len(r.body) < 1024, r


def test_partial_head_gets_408_after_header_read(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"timeouts": {"header_read": "1s", "idle": "30s"}})
    with p.conn(timeout=5) as c:
        t0 = time.monotonic()
        c.send(b"GET /partial HTTP/1.1\r\nHost: a\r\nX-Half: ")
        r = c.read_response(timeout=4)
        elapsed = time.monotonic() - t0
        _assert_local_error(r, 408, "header_timeout")
        assert 0.8 <= elapsed <= 3.0, f"408 after {elapsed:.2f}s with header_read 1s"
        closed, extra = c.wait_closed(2)
        assert closed and extra == b"", "the connection must be closed after the 408"
    assert upstream.bytes_received == 0


def test_header_read_runs_from_first_byte_on_later_requests(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"timeouts": {"header_read": "1s", "idle": "30s"}})
    with p.conn(timeout=5) as c:
        c.request("GET", "/first")
        assert c.read_response().status == 200
        time.sleep(1.5)  # idle longer than header_read: still fine, the clock starts at the first byte
        c.request("GET", "/second")
        r = c.read_response()
        assert r.status == 200, r


def test_slow_but_complete_head_within_header_read(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"timeouts": {"header_read": "2s", "idle": "30s"}})
    with p.conn(timeout=5) as c:
        for piece in [b"GET /dribble HT", b"TP/1.1\r\nHo", b"st: a\r\n", b"\r\n"]:
            c.send(piece)
            time.sleep(0.2)
        r = c.read_response()
        assert r.status == 200, r
    assert upstream.last().target == "/dribble"


def test_silent_new_connection_is_closed_after_header_read(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"timeouts": {"header_read": "1s", "idle": "30s"}})
    with p.conn(timeout=5) as c:
        t0 = time.monotonic()
        closed, extra = c.wait_closed(4)
        elapsed = time.monotonic() - t0
        assert closed, "a connection that never sent a byte was kept open past header_read"
        assert elapsed >= 0.8, f"closed after {elapsed:.2f}s, before header_read (1s)"
        # either silently or with a 408
        assert extra == b"" or extra.startswith(b"HTTP/1.1 408"), extra[:200]


def test_idle_keepalive_connection_closed_silently(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"timeouts": {"header_read": "5s", "idle": "1s"}})
    with p.conn(timeout=5) as c:
        c.request("GET", "/idle")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        closed, extra = c.wait_closed(4)
        elapsed = time.monotonic() - t0
        assert closed, "idle keep-alive connection not closed within 4 s (idle: 1s)"
        assert extra == b"", f"idle close must be silent, got {extra[:200]!r}"
        assert elapsed >= 0.8, f"closed after {elapsed:.2f}s, before idle (1s)"


def test_body_over_max_request_body_content_length(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"limits": {"max_request_body": "1KiB"}})
    with p.conn() as c:
        c.request("POST", "/echo", body=b"x" * 1024)
        r = c.read_response()
        assert r.status == 200 and len(r.body) == 1024, r  # exactly at the limit is fine
    n = len(upstream.complete)
    with p.conn() as c:
        c.request("POST", "/echo/too-big", body=b"x" * 2048)
        r = c.read_response()
        _assert_local_error(r, 413, "body_too_large")
    time.sleep(0.2)
    assert not any("/too-big" in rec.target for rec in upstream.records), \
        "a body declared over the limit must be refused before anything is sent upstream"
    assert len(upstream.complete) == n


def test_body_over_max_request_body_chunked(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"limits": {"max_request_body": "1KiB"}})
    with p.conn() as c:
        c.send(b"POST /echo/chunked-too-big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):
            c.send(b"200\r\n" + b"y" * 512 + b"\r\n")
        c.send(b"0\r\n\r\n")
        r = c.read_response()
        _assert_local_error(r, 413, "body_too_large")
        closed, _ = c.wait_closed(2)
        assert closed
    time.sleep(0.2)
    assert not any(rec.complete and "/chunked-too-big" in rec.target for rec in upstream.records), \
        "the upstream received a complete request whose body was over the limit"


def test_431_header_bytes(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"limits": {"max_header_bytes": "1KiB", "max_headers": 10}})
    with p.conn() as c:
        c.request("GET", "/small", headers=[("X-A", "b" * 100)])
        assert c.read_response().status == 200
    with p.conn() as c:
        c.request("GET", "/big-head", headers=[("X-Big", "b" * 4000)])
        r = c.read_response()
        _assert_local_error(r, 431, "headers_too_large")
    time.sleep(0.2)
    assert not any("/big-head" in rec.target for rec in upstream.records)


def test_431_header_count(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"limits": {"max_header_bytes": "64KiB", "max_headers": 10}})
    with p.conn() as c:
        c.request("GET", "/few", headers=[(f"X-H{i}", "v") for i in range(5)])
        assert c.read_response().status == 200
    with p.conn() as c:
        c.request("GET", "/many", headers=[(f"X-H{i}", "v") for i in range(30)])
        r = c.read_response()
        _assert_local_error(r, 431, "headers_too_large")
    time.sleep(0.2)
    assert not any("/many" in rec.target for rec in upstream.records)


def test_414_long_target(proxy, upstream):
    ok_target = "/long/" + "a" * 8000
    with proxy.conn() as c:
        c.request("GET", ok_target)
        r = c.read_response()
        assert r.status == 200, r
    assert upstream.last().target == ok_target
    with proxy.conn() as c:
        c.request("GET", "/too-long/" + "a" * 9000)
        r = c.read_response()
        _assert_local_error(r, 414, "bad_request")
        closed, _ = c.wait_closed(2)
        assert closed, "414 must close the connection"
    time.sleep(0.2)
    assert not any("/too-long" in rec.target for rec in upstream.records)


def test_max_connections_pauses_accepting(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, top={"workers": 1}, listener={"limits": {"max_connections": 2}})
    a, b = p.conn(), p.conn()
    try:
        for c in (a, b):
            c.request("GET", "/held")
            assert c.read_response().status == 200
        third = p.conn(timeout=5)  # the kernel completes the handshake; the proxy must not serve it yet
        try:
            third.request("GET", "/third")
            with pytest.raises(TimeoutError):
                third.read_response(timeout=1)
            a.close()  # a slot frees up: the third connection is served
            r = third.read_response(timeout=3)
            assert r.status == 200, r
        finally:
            third.close()
    finally:
        a.close()
        b.close()
