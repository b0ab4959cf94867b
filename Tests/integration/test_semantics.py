"""Message semantics that proxies commonly get wrong (RFC 9110/9112): HEAD, 204/304 without a
body, close-delimited upstream bodies, 1xx before the final answer, repeated headers, the
client's Connection: close, and many concurrent keep-alive clients."""

import socket
import threading
import time

import pytest


def test_head_response_has_no_body(proxy, upstream):
    with proxy.conn() as c:
        c.request("HEAD", "/big/5000")
        r = c.read_response(method="HEAD")
        assert r.status == 200, r
        assert r.header("content-length") == "5000", "HEAD keeps the GET content-length"
        # the connection is still in sync: the next answer is parsed right after the head
        c.request("GET", "/after-head")
        r2 = c.read_response(timeout=3)
        assert r2.status == 200 and r2.json()["target"] == "/after-head", r2
    assert upstream.next_after(0).method == "HEAD"


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_statuses_keep_connection_in_sync(proxy, upstream, status):
    with proxy.conn() as c:
        c.request("GET", f"/status/{status}")
        r = c.read_response(timeout=3)
        assert r.status == status, r
        assert r.header("x-status") == str(status)
        assert "transfer-encoding" not in r.header_names(), f"a {status} must not be framed: {r.headers}"
        if status == 204:
            assert r.header("content-length") in (None, "0"), r.headers
        c.request("GET", "/after-bodyless")
        r2 = c.read_response(timeout=3)
        assert r2.status == 200 and r2.json()["target"] == "/after-bodyless", r2


def test_close_delimited_upstream_body(proxy, upstream):
    with proxy.conn() as c:
        c.request("GET", "/eof-body")
        r = c.read_response(timeout=5)
        assert r.status == 200, r
        assert r.body == b"close-delimited-body\n"
        if r.framing == "eof":
            closed, _ = c.wait_closed(1)
            assert closed
        else:
            # re-framed (chunked) for a 1.1 client: the client connection stays usable
            c.request("GET", "/after-eof-body")
            assert c.read_response().status == 200


def test_informational_response_then_final(proxy, upstream):
    with proxy.conn() as c:
        c.request("GET", "/early-hints")
        r = c.read_response(timeout=5)
        assert r.status == 200, r
        assert r.json()["target"] == "/early-hints"
        for info in r.informational:
            assert info.status == 103, info
        c.request("GET", "/after-hints")
        assert c.read_response().status == 200


def test_repeated_headers_preserved(proxy, upstream):
    with proxy.conn() as c:
        c.request("GET", "/cookies", headers=[("X-Multi", "first"), ("Accept", "a/b"), ("X-Multi", "second")])
        r = c.read_response()
    assert r.status == 200, r
    assert r.header_all("set-cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"], \
        f"Set-Cookie answers must stay separate lines, in order: {r.headers}"
    multi = [v.strip() for h in r.header_all("x-multi") for v in h.split(",")]
    assert multi == ["one", "two"], r.headers
    rec = upstream.last()
    sent = [v.strip() for h in rec.header_all("x-multi") for v in h.split(",")]
    assert sent == ["first", "second"], rec.headers


def test_client_connection_close(proxy, upstream):
    with proxy.conn() as c:
        c.request("GET", "/bye", headers=[("Connection", "close")])
        r = c.read_response()
        assert r.status == 200, r
        assert (r.header("connection") or "").lower() == "close", r.headers
        closed, extra = c.wait_closed(2)
        assert closed and extra == b""
    assert upstream.last().target == "/bye"


def test_many_concurrent_keepalive_clients(proxy, upstream):
    """40 connections x 25 requests with bodies, in parallel: every answer matches its request."""
    n_conn, n_req = 40, 25
    errors = []

    def client(i):
        try:
            with proxy.conn(timeout=10) as c:
                for j in range(n_req):
                    body = f"{i}:{j}".encode() * (1 + (i + j) % 7)
                    c.request("POST", f"/echo/{i}/{j}", body=body)
                    r = c.read_response(timeout=10)
                    if r.status != 200 or r.body != body:
                        errors.append((i, j, r.status, r.body[:50]))
                        return
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_conn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    assert len(upstream.complete) == n_conn * n_req
    # pooled upstream connections: far fewer than one per request
    assert upstream.connections <= n_conn + 4, f"{upstream.connections} upstream connections for {n_conn} clients"


@pytest.mark.parametrize("path", ["/plain", "/slow/200", "/chunked"])
def test_half_closed_client_still_gets_its_response(proxy, upstream, path):
    """A client that sends a complete keep-alive request and then shuts down its sending side
    (as `nc -N` or some batch clients do) still receives the full response, then EOF (nginx does
    the same)."""
    with proxy.conn() as c:
        c.send(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response()
        assert r.status == 200, r
        closed, extra = c.wait_closed(3)
        assert closed and extra == b""


def test_half_closed_client_with_partial_pipelined_head_gets_the_first_response(proxy, upstream):
    """A complete request, the start of a second one, then a half-close: the first is answered
    in full (the partial head is dropped), then the connection closes. Found by the differential
    test: the proxy used to close at once and the forwarded request's answer was lost."""
    with proxy.conn() as c:
        c.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response(timeout=3)
        assert r.status == 200 and r.json()["target"] == "/first", r
        closed, extra = c.wait_closed(3)
        assert closed and extra == b"", extra
    assert [x.target for x in upstream.complete] == ["/first"]


class TunnelTarget:
    """A CONNECT target: answers the CONNECT head with 200, then echoes bytes until EOF, then
    closes. Records what it read after the head."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.heads, self.tunneled, self.saw_eof = [], b"", False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.srv.accept()
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = conn.recv(65536)
                if not d:
                    return
                buf += d
            head, _, rest = buf.partition(b"\r\n\r\n")
            self.heads.append(head)
            conn.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            if rest:
                self.tunneled += rest
                conn.sendall(b"echo:" + rest)
            while True:
                d = conn.recv(65536)
                if not d:
                    self.saw_eof = True
                    return
                self.tunneled += d
                conn.sendall(b"echo:" + d)

    def close(self):
        self.srv.close()


def read_until(c, needle: bytes, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    try:
        while needle not in c.buf:
            if not c._fill(deadline):
                break
    except TimeoutError:
        pass
    return needle in c.buf


@pytest.mark.parametrize("half_close", [False, True])
def test_connect_tunnel_carries_bytes_sent_with_the_request(proxy_factory, half_close):
    """Bytes a client sends right behind its CONNECT head (before the 200), and a half-close sent
    with them, reach the target once the tunnel is up: no further readiness event will announce
    them. Found by the differential test: they waited until the client sent more, forever."""
    target = TunnelTarget()
    try:
        p = proxy_factory(clusters=[{"name": "app", "endpoints": [f"127.0.0.1:{target.port}"], "connect_timeout": "1s"}])
        with p.conn(timeout=3) as c:
            c.send(b"CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\nearly-bytes")
            if half_close:
                c.sock.shutdown(socket.SHUT_WR)
            r = c.read_head(timeout=3)
            assert r.status == 200, r
            assert read_until(c, b"echo:early-bytes", 3), f"the early bytes did not cross the tunnel: {c.buf!r}"
            if half_close:
                closed, _ = c.wait_closed(3)
                assert closed, "the client's half-close did not end the tunnel"
                assert target.saw_eof
            else:
                c.send(b"later")
                assert read_until(c, b"echo:later", 3), c.buf
        assert target.heads and target.heads[0].startswith(b"CONNECT h.example:443 HTTP/1.1\r\nhost: h.example:443\r\n")
    finally:
        target.close()


@pytest.mark.parametrize("target", [b"/path", b"u@h.example:443", b"http://h.example:443/", b"h.example", b"h.example:",
                                    b"h.example:44x", b":443"])
def test_connect_takes_only_the_authority_form(proxy, upstream, target):
    """RFC 9112 §3.2.3: a CONNECT target is host:port; anything else is 400 and reaches nothing
    (it used to be forwarded, with the target as the Host the app saw)."""
    with proxy.conn() as c:
        c.send(b"CONNECT " + target + b" HTTP/1.1\r\nHost: h.example:443\r\n\r\n")
        r = c.read_response(timeout=3)
        assert r.status == 400 and r.header("x-outrider-error") == "bad_request", r
    time.sleep(0.1)
    assert upstream.records == []


@pytest.mark.parametrize("target,path,host", [
    ("http://h.example", "/", "h.example"),
    ("http://h.example?q=1", "/?q=1", "h.example"),
    ("HTTPS://h.example:8443/a/../b?x", "/b?x", "h.example:8443"),
])
def test_absolute_form_without_path_is_root(proxy, upstream, target, path, host):
    """RFC 9110 §4.2.3: an empty path in an http(s) URI is "/"; the authority is the Host."""
    with proxy.conn() as c:
        c.send(f"GET {target} HTTP/1.1\r\nHost: other\r\n\r\n".encode())
        r = c.read_response(timeout=3)
        assert r.status == 200, r
    rec = upstream.last()
    assert (rec.target, rec.header("host")) == (path, host)


@pytest.mark.parametrize("target", ["http://user@h.example/", "http://user:pw@h.example/x", "http://h\"x/", "http://h{x}/",
                                    "http:///x", "http://h.example/#frag", "http://h.example?q#frag"])
def test_absolute_form_authority_must_be_a_host(proxy, upstream, target):
    """The authority of an absolute-form target becomes the Host the app sees, so it must be what
    a Host field may hold: no userinfo (RFC 9110 §4.2.4), no quotes or braces; a fragment is 400
    as in an origin-form target."""
    with proxy.conn() as c:
        c.send(f"GET {target} HTTP/1.1\r\nHost: h.example\r\n\r\n".encode())
        r = c.read_response(timeout=3)
        assert r.status == 400 and r.header("x-outrider-error") == "bad_request", r
    time.sleep(0.1)
    assert upstream.records == []
