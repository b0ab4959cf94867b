"""HTTP/1.1 behaviour through the proxy: plain GET, access log, keep-alive, pipelining, chunked
in both directions, trailers, Expect: 100-continue, HTTP/1.0 clients, WebSocket."""

import hashlib
import re
import time

import pytest

from wire import Conn

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ACCESS_FIELDS = [
    "ts", "listener", "route", "cluster", "client", "method", "authority", "path", "proto", "status",
    "bytes_in", "bytes_out", "duration_ms", "upstream", "upstream_ms", "attempts", "request_id",
    "identity", "error",
]


def test_plain_get_and_access_log(proxy, upstream):
    with proxy.conn() as c:
        c.request("GET", "/hello/world?x=1&y=%20z", host="app.test", headers=[("User-Agent", "itest/1")])
        r = c.read_response()
    assert r.status == 200, r
    body = r.json()
    assert body["upstream"] == "upstream"
    rec = upstream.last()
    assert rec.method == "GET"
    assert rec.target == "/hello/world?x=1&y=%20z"
    assert rec.version == "HTTP/1.1"
    assert rec.header_all("host") == ["app.test"], rec.headers
    assert rec.header("user-agent") == "itest/1"
    assert rec.framing == "none", "a GET without a body must not get a body framing upstream"
    # the upstream's own headers come back
    assert r.header("x-upstream-conn") == str(rec.conn)
    assert r.header("content-type") == "application/json"

    entry = proxy.wait_access_log(lambda e: e.get("path", "").startswith("/hello/world"), timeout=3)
    assert entry is not None, f"no access log line for /hello/world within 3 s; stdout={proxy.stdout()[:2000]!r}"
    missing = [f for f in ACCESS_FIELDS if f not in entry]
    assert not missing, f"access log line lacks {missing}: {entry}"
    assert entry["listener"] == "inbound"
    assert entry["route"] == "default"
    assert entry["cluster"] == "app"
    assert entry["method"] == "GET"
    assert entry["authority"] == "app.test"
    assert entry["status"] == 200
    assert str(entry["proto"]).lower() in ("http/1.1", "http1", "http1.1"), entry["proto"]
    assert str(entry["client"]).startswith("127.0.0.1"), entry["client"]
    assert entry["upstream"] == f"127.0.0.1:{upstream.port}"
    assert entry["attempts"] == 1
    assert isinstance(entry["bytes_out"], int) and entry["bytes_out"] >= len(r.body)
    assert isinstance(entry["bytes_in"], int) and entry["bytes_in"] >= 0
    assert isinstance(entry["duration_ms"], (int, float)) and entry["duration_ms"] >= 0
    assert isinstance(entry["upstream_ms"], (int, float)) and entry["upstream_ms"] >= 0
    assert entry["request_id"] == r.header("x-request-id")
    assert entry["ts"]
    assert not entry["error"], entry


def test_keepalive_reuses_client_and_upstream_connections(proxy, upstream):
    with proxy.conn() as c:
        for i in range(5):
            c.request("GET", f"/ka/{i}")
            r = c.read_response()
            assert r.status == 200, r
            assert r.header("connection") is None or "close" not in r.header("connection").lower()
            assert not c.eof
    recs = upstream.wait_requests(5)
    assert [r.path for r in recs] == [f"/ka/{i}" for i in range(5)]
    assert upstream.connections == 1, (
        f"5 sequential requests on one client connection used {upstream.connections} upstream connections"
    )
    assert [r.seq for r in recs] == [1, 2, 3, 4, 5]
    # new client connections (possibly on the other worker) still use pooled upstream connections
    for i in range(6):
        with proxy.conn() as c:
            c.request("GET", f"/ka2/{i}")
            assert c.read_response().status == 200
    upstream.wait_requests(11)
    assert upstream.connections <= 2, f"11 sequential requests used {upstream.connections} upstream connections (2 workers)"


def test_pipelined_requests_answered_in_order(proxy, upstream):
    with proxy.conn() as c:
        c.send(
            b"GET /slow/300/p1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /p2 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /echo/p3 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        )
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
    assert r1.status == 200 and r1.json()["target"] == "/slow/300/p1", r1
    assert r2.status == 200 and r2.json()["target"] == "/p2", r2
    assert r3.status == 200 and r3.body == b"hello", r3
    paths = [r.path for r in upstream.wait_requests(3)]
    assert sorted(paths) == sorted(["/slow/300/p1", "/p2", "/echo/p3"])


def test_chunked_request_body_is_reframed(proxy, upstream):
    with proxy.conn() as c:
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
            b"6\r\nhello \r\n"
            b"5;ext=1\r\nworld\r\n"
            b"0\r\n\r\n"
        )
        r = c.read_response()
    assert r.status == 200, r
    assert r.body == b"hello world"
    rec = upstream.last()
    assert rec.body == b"hello world"
    assert rec.framing in ("chunked", "content-length")
    if rec.framing == "content-length":
        assert rec.header_all("content-length") == ["11"]
        assert rec.header("transfer-encoding") is None
    else:
        assert rec.header_all("transfer-encoding") == ["chunked"]
        assert rec.header("content-length") is None


def test_large_chunked_request_body(proxy, upstream):
    data = bytes(range(256)) * 1024  # 256 KiB
    with proxy.conn() as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(data), 10000):
            piece = data[i:i + 10000]
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        c.send(b"0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    assert r.json() == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_chunked_response_with_trailers(proxy, upstream):
    with proxy.conn() as c:
        c.request("GET", "/chunked", headers=[("TE", "trailers")])
        r = c.read_response()
    assert r.status == 200, r
    assert r.chunked, f"response framing was {r.framing}; trailers need chunked framing"
    assert r.body == b"hello chunked world\n"
    trailers = {k.lower(): v for k, v in r.trailers}
    assert trailers.get("x-trailer") == "done", r.trailers
    assert trailers.get("x-checksum") == hashlib.sha256(r.body).hexdigest()
    # TE: trailers is the one TE value that is forwarded (hop-by-hop exception)
    rec = upstream.last()
    assert [v.lower() for v in rec.header_all("te")] == ["trailers"], rec.headers


def test_expect_100_continue(proxy, upstream):
    with proxy.conn() as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        interim = c.read_head(timeout=3)
        assert interim.status == 100, f"expected 100 Continue before the body was sent, got {interim}"
        c.send(b"0123456789")
        r = c.read_response()
    assert r.status == 200, r
    assert r.body == b"0123456789"
    rec = upstream.last()
    assert rec.body == b"0123456789"


def test_http10_client(proxy, upstream):
    # with Host
    with proxy.conn() as c:
        c.send(b"GET /h10 HTTP/1.0\r\nHost: a\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
        assert r.version in ("HTTP/1.0", "HTTP/1.1")
        assert r.json()["target"] == "/h10"
        closed, extra = c.wait_closed(3)
        assert closed and extra == b"", "HTTP/1.0 request without keep-alive: the proxy must close"
    # without Host (legal in 1.0): the upstream still gets exactly one Host
    with proxy.conn() as c:
        c.send(b"GET /h10-nohost HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
    rec = upstream.find("/h10-nohost")
    assert len(rec.header_all("host")) == 1, rec.headers
    # a chunked upstream response must not reach a 1.0 client chunked
    with proxy.conn() as c:
        c.send(b"GET /chunked HTTP/1.0\r\nHost: a\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
        assert not r.chunked, "chunked transfer-coding sent to an HTTP/1.0 client"
        assert r.body == b"hello chunked world\n"


def test_websocket_echo(proxy_factory, upstream, ws_echo):
    from websockets.sync.client import connect

    p = proxy_factory(
        routes=[
            {"name": "ws", "match": {"path_prefix": "/ws"}, "cluster": "ws"},
            {"name": "default", "match": {"path_prefix": "/"}, "cluster": "app"},
        ],
        clusters=[
            {"name": "app", "endpoints": [f"127.0.0.1:{upstream.port}"]},
            {"name": "ws", "endpoints": [f"127.0.0.1:{ws_echo.port}"]},
        ],
    )
    with connect(f"ws://127.0.0.1:{p.port}/ws/chat", open_timeout=5, close_timeout=2) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00\x01binary\xff")
        assert ws.recv(timeout=5) == b"\x00\x01binary\xff"
        big = "x" * 200000
        ws.send(big)
        assert ws.recv(timeout=5) == big
    assert ws_echo.handshakes and ws_echo.handshakes[-1][0] == "/ws/chat"
    names = {k.lower() for k, _ in ws_echo.handshakes[-1][1]}
    assert "upgrade" in names and "sec-websocket-key" in names
    # the proxy still serves plain HTTP after
    with p.conn() as c:
        c.request("GET", "/after-ws")
        assert c.read_response().status == 200


def _ws_handshake(port):
    import base64
    import os

    c = Conn(port, timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    c.send(
        f"GET /ws/raw HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = c.read_head()
    assert head.status == 101, head
    assert (head.header("upgrade") or "").lower() == "websocket", head.headers
    return c


def test_websocket_close_propagates_both_ways(proxy_factory, ws_echo):
    p = proxy_factory(clusters=[{"name": "app", "endpoints": [f"127.0.0.1:{ws_echo.port}"]}])
    # the upstream closes TCP right after the close handshake: the client must see EOF promptly.
    # Repeated because a missed EOF can depend on how the close frame and the FIN are batched.
    for i in range(25):
        c = _ws_handshake(p.port)
        mask = b"\x01\x02\x03\x04"
        c.send(b"\x81\x82" + mask + bytes(a ^ b for a, b in zip(b"hi", mask)))  # text "hi"
        echo = c._read_until(b"hi", time.monotonic() + 2)
        assert echo == b"\x81\x02hi", echo
        c.send(b"\x88\x82" + mask + bytes(a ^ b for a, b in zip(b"\x03\xe8", mask)))  # Close 1000
        t0 = time.monotonic()
        closed, got = c.wait_closed(2)
        elapsed = time.monotonic() - t0
        c.close()
        assert got.startswith(b"\x88\x02\x03\xe8"), f"try {i}: close frame not relayed: {got!r}"
        assert closed and elapsed < 1.0, (
            f"try {i}: the upstream closed the tunnel but the client connection stayed open "
            f"{elapsed:.1f}s (EOF not propagated)"
        )
    # a client that goes away is seen by the upstream
    deadline = time.monotonic() + 2
    while ws_echo.open and time.monotonic() < deadline:
        time.sleep(0.02)
    c = _ws_handshake(p.port)
    deadline = time.monotonic() + 2
    while ws_echo.open != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ws_echo.open == 1
    c.close()
    deadline = time.monotonic() + 2
    while ws_echo.open and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ws_echo.open == 0, "the client closed the tunnel but the upstream connection stayed open"
