"""HTTP/2 (SPEC §2 listener `protocols`, cluster `protocol`; §3 HTTP/2 via libnghttp2; §8 metrics;
§9 drain): h2c by prior knowledge (curl, nghttp, h2load, Python h2) next to HTTP/1.1 on one port,
h2 over TLS by ALPN, h2 → HTTP/1.1 translation towards the recording upstream (every filter and
local error on h2 streams), many streams on one connection, SETTINGS_MAX_CONCURRENT_STREAMS and
REFUSED_STREAM, flow control with 16 MiB bodies, h2c and h2 (TLS, ALPN) upstreams written here
with asyncio + hyper-h2 (h2_upstream.py), floods (rapid reset, CONTINUATION, SETTINGS, PING,
empty DATA) with their `outrider_http2_connections_closed_total` reason, and GOAWAY on drain.

Clients are in h2wire.py: `H2Client` (hyper-h2 over a socket) and `RawH2` (frames by hand).
Certificates are made with `openssl` (h2wire.make_pki)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame

from conftest import _report, start_proxy
from h2_upstream import big_body
from h2wire import (H2Client, RawH2, assert_no_connection_specific, client_ctx, curl_run, describe, error_name,
                    make_pki, run_tool, server_ctx, wait_metric)
from wire import Conn

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
API_KEY = "example-key-ci-bot-6f1d2c0a"  # config/examples/api-keys: ci-bot
KEYS_FILE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "config", "examples", "api-keys"))
MiB = 1024 * 1024
CLOSED_METRIC = "outrider_http2_connections_closed_total"

# listener `protocols` as the tests give it: None leaves the key out (the default)
CLEARTEXT_H2 = [pytest.param(None, id="protocols-absent"), pytest.param(["http1", "h2c"], id="http1-h2c")]
TLS_H2 = [pytest.param(None, id="protocols-absent"), pytest.param(["http1", "h2"], id="http1-h2")]


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("h2pki"))


def tls_listener(pki, protocols=None, **extra) -> dict:
    lst = {"name": "inbound-tls", "protocols": protocols,
           "tls": {"certificate": pki.crt, "private_key": pki.key},
           "timeouts": {"header_read": "5s", "idle": "30s"}}
    lst.update(extra)
    return lst


def h11_get(port, target, headers=(), method="GET", body=None, host="test.local", timeout=10.0):
    with Conn(port, timeout) as c:
        c.request(method, target, headers=list(headers), body=body, host=host)
        return c.read_response(method, timeout=timeout)


def assert_local_error(r, status, reason):
    assert r.status == status, f"expected {status} {reason}, got {r!r}"
    assert r.header("x-outrider-error") == reason, r
    assert (r.header("content-type") or "").startswith("text/plain"), r
    assert 0 < len(r.body) < 1024, r
    assert_no_connection_specific(r)


# ---------------------------------------------------------------------------------------------
# 0. The harness on its own (no proxy): when these pass and a proxy test fails, it is the proxy


def test_harness_h2_client_and_upstream(loop_thread, pki):
    from h2_upstream import H2Upstream

    app = loop_thread.run(H2Upstream("direct").start())
    tls_app = loop_thread.run(H2Upstream("direct-tls", ssl_ctx=server_ctx(pki, ["h2"])).start())
    try:
        with H2Client(app.port, timeout=20) as c:
            assert c.settle().get(3) == 100
            r = c.get("/plain?x=1", headers=[("cookie", "a=1"), ("cookie", "b=2")])
            assert r.status == 200 and r.json()["pseudo"][":path"] == "/plain?x=1", r
            r = c.get("/trailers")
            assert r.body == b"hello h2 trailers\n" and dict(r.trailers)["x-trailer"] == "done", r
            n = 4 * MiB
            up = os.urandom(n)
            s1, s2 = c.request("POST", "/upload", body=up), c.request("GET", f"/big/{n}")
            r1, r2 = c.responses_for([s1, s2], timeout=20)
            assert r1.json() == {"bytes": n, "sha256": hashlib.sha256(up).hexdigest()} and r2.body == big_body(n)
            r = c.get("/echo", method="POST", body=b"abc", trailers=[("x-t", "1")])
            assert r.body == b"abc" and app.find("/echo").trailers == [("x-t", "1")]
            assert c.get("/refuse-once/h").reset_code == ErrorCodes.REFUSED_STREAM
            assert c.get("/refuse-once/h").status == 200
            sids = [c.request("GET", f"/slow/50/m/{i}") for i in range(60)]
            assert [x.json()["path"] for x in c.responses_for(sids)] == [f"/slow/50/m/{i}" for i in range(60)]
            # a GOAWAY naming the stream in flight: the client still reads its answer
            r = c.get("/goaway-first/200/x")
            assert r.status == 200 and c.goaway == {"error_code": 0, "last_stream_id": r.stream_id, "data": b""}, \
                (r, c.goaway)
            assert c.wait_closed(3)
        with H2Client(app.port) as c:
            with pytest.raises(ConnectionError):
                c.get("/close-conn", timeout=3)
        # the recorder flags what a proxy must not send
        with RawH2(app.port) as raw:
            raw.send(raw.preface() + raw.headers(1, [(":method", "GET"), (":path", "/bad"), (":scheme", "http"),
                                                     (":authority", "a"), ("connection", "close"), ("X-Up", "1"),
                                                     ("te", "gzip")]))
            frames = raw.read_until(lambda f: "END_STREAM" in f.flags, 5)
            assert [dict(f.fields)[":status"] for f in frames if isinstance(f, HeadersFrame)] == ["200"], describe(frames)
        problems = " | ".join(app.wellformedness_problems())
        for word in ("connection-specific field connection", "upper-case field name 'X-Up'", "te: gzip"):
            assert word in problems, problems
        # TLS with ALPN h2
        with H2Client(tls_app.port, tls_ctx=client_ctx(pki, ["h2"])) as c:
            assert c.alpn == "h2"
            r = c.get("/tls", authority="localhost")
            assert r.json()["alpn"] == "h2" and r.json()["scheme"] == "https", r
    finally:
        loop_thread.run(app.stop())
        loop_thread.run(tls_app.stop())


def test_harness_pki_and_tools(pki, tmp_path, loop_thread):
    """The openssl-made certificates verify for localhost and 127.0.0.1; curl, nghttp and
    s_client reach an h2 server with them."""
    from h2_upstream import H2Upstream

    for name in ("localhost", "127.0.0.1"):
        cp = subprocess.run(["openssl", "verify", "-CAfile", pki.ca, "-verify_hostname" if name == "localhost"
                             else "-verify_ip", name, pki.crt], capture_output=True, text=True, timeout=10)
        assert cp.returncode == 0, cp.stdout + cp.stderr
    app = loop_thread.run(H2Upstream("tools", ssl_ctx=server_ctx(pki, ["h2", "http/1.1"])).start())
    plain = loop_thread.run(H2Upstream("tools-h2c").start())
    try:
        cp, headers, body, err = curl_run(f"https://localhost:{app.port}/curl", "--http2", "--cacert", pki.ca,
                                          out_dir=tmp_path, resolve=f"localhost:{app.port}:127.0.0.1")
        assert cp.returncode == 0 and headers.startswith("HTTP/2 200"), err[-2000:]
        assert re.search(r"ALPN[:,].*server accepted.*h2", err), err[-2000:]
        cp, headers, body, err = curl_run(f"http://127.0.0.1:{plain.port}/pk", "--http2-prior-knowledge",
                                          out_dir=tmp_path)
        assert cp.returncode == 0 and headers.startswith("HTTP/2 200"), err[-2000:]
        out = _s_client(app.port, pki, "h2")
        assert "ALPN protocol: h2" in out, out[-2000:]
        cp = run_tool(["nghttp", "-v", "-t", "5", f"http://127.0.0.1:{plain.port}/nghttp"], timeout=15)
        assert cp.returncode == 0 and re.search(rb"recv \(stream_id=\d+\) :status: 200", cp.stdout), cp.stdout[-2000:]
        cp = run_tool(["h2load", "-c1", "-m10", "-n100", f"http://127.0.0.1:{plain.port}/h2load"], timeout=30)
        assert b"100 succeeded" in cp.stdout, cp.stdout[-2000:]
    finally:
        loop_thread.run(app.stop())
        loop_thread.run(plain.stop())


# ---------------------------------------------------------------------------------------------
# 1. h2c by prior knowledge on a cleartext listener


@pytest.fixture(params=CLEARTEXT_H2)
def h2c_proxy(request, proxy_factory, upstream):
    return proxy_factory(upstream=upstream, listener={"protocols": request.param})


def test_h2c_curl_prior_knowledge(h2c_proxy, upstream, tmp_path):
    cp, headers, body, err = curl_run(h2c_proxy.url("/curl/h2c?x=1"), "--http2-prior-knowledge",
                                      "-H", "x-from: curl", out_dir=tmp_path)
    assert cp.returncode == 0, err[-3000:]
    assert re.match(r"HTTP/2 200", headers), f"curl did not get an HTTP/2 200:\n{headers}\n{err[-2000:]}"
    rec = upstream.find("/curl/h2c")
    assert json.loads(body)["target"] == "/curl/h2c?x=1", body[:300]
    assert rec.header("x-from") == "curl", rec.headers
    assert rec.version == "HTTP/1.1"
    assert rec.header_all("host") == [f"127.0.0.1:{h2c_proxy.port}"], rec.headers
    # HTTP/1.1 on the same port
    r = h11_get(h2c_proxy.port, "/curl/h11")
    assert r.status == 200 and r.version == "HTTP/1.1", r
    cp, headers, body, err = curl_run(h2c_proxy.url("/curl/h11-curl"), "--http1.1", out_dir=tmp_path)
    assert cp.returncode == 0 and headers.startswith("HTTP/1.1 200"), headers + err[-2000:]


def test_h2c_nghttp(h2c_proxy, upstream):
    cp = run_tool(["nghttp", "-v", "-H", "x-from: nghttp", "-t", "10", h2c_proxy.url("/nghttp/path")], timeout=20)
    out = cp.stdout.decode(errors="replace")
    assert cp.returncode == 0, f"nghttp exit {cp.returncode}\n{out[-3000:]}\n{cp.stderr.decode(errors='replace')[-2000:]}"
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", out), out[-3000:]
    assert '"target": "/nghttp/path"' in out, out[-3000:]
    rec = upstream.find("/nghttp/path")
    assert rec.header("x-from") == "nghttp"
    # the proxy's SETTINGS as nghttp printed them
    assert re.search(r"recv SETTINGS frame <length=\d+, flags=0x00, stream_id=0>", out), out[:3000]


def test_h2c_python_h2_and_http11_same_port(h2c_proxy, upstream):
    with H2Client(h2c_proxy.port) as c:
        settings = c.settle()
        assert settings is not None, f"no SETTINGS from the proxy; frames {c.frames_in}"
        r = c.get("/py/h2", headers=[("x-from", "python-h2")])
        assert r.status == 200, r
        assert_no_connection_specific(r)
        assert r.json()["target"] == "/py/h2"
        # HTTP/1.1 on another connection to the same port while the h2 one is open
        r1 = h11_get(h2c_proxy.port, "/py/h11")
        assert r1.status == 200 and r1.json()["target"] == "/py/h11", r1
        r = c.get("/py/h2-again")
        assert r.status == 200, r
    assert upstream.find("/py/h2").header("x-from") == "python-h2"


def test_http1_only_listener_does_not_speak_h2(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"protocols": ["http1"]})
    with RawH2(p.port, timeout=5) as raw:
        raw.send(raw.preface() + raw.headers(1, raw.request_fields("/must-not-arrive")))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not raw.dead:
            try:
                raw._fill(deadline)
            except TimeoutError:
                break
        got = bytes(raw.buf)
        closed = raw.dead
    assert closed, f"an http1-only listener kept the connection open after an HTTP/2 preface; got {got[:300]!r}"
    assert got == b"" or got.startswith(b"HTTP/1.1 400") or got.startswith(b"HTTP/1.1 505"), \
        f"an http1-only listener answered an HTTP/2 preface with {got[:300]!r} (expected 400 or a close)"
    time.sleep(0.2)
    assert upstream.bytes_received == 0 and not upstream.records, \
        f"something reached the upstream: {[r.raw_head for r in upstream.records]}"
    # HTTP/1.1 works there
    r = h11_get(p.port, "/h11-only")
    assert r.status == 200


# ---------------------------------------------------------------------------------------------
# 2. h2 over TLS by ALPN


@pytest.fixture(params=TLS_H2)
def tls_h2_proxy(request, proxy_factory, upstream, pki):
    return proxy_factory(upstream=upstream, listener=tls_listener(pki, request.param))


def test_tls_curl_negotiates_h2(tls_h2_proxy, upstream, pki, tmp_path):
    port = tls_h2_proxy.port
    cp, headers, body, err = curl_run(f"https://localhost:{port}/tls/curl-h2", "--http2", "--cacert", pki.ca,
                                      out_dir=tmp_path, resolve=f"localhost:{port}:127.0.0.1")
    assert cp.returncode == 0, err[-3000:]
    assert re.search(r"ALPN[:,].*server accepted.*h2", err), f"curl did not negotiate h2:\n{err[-3000:]}"
    assert headers.startswith("HTTP/2 200"), headers
    rec = upstream.find("/tls/curl-h2")
    assert rec.header("x-forwarded-proto") == "https", rec.headers
    assert rec.header_all("host") == [f"localhost:{port}"], rec.headers


def test_tls_python_alpn_h2(tls_h2_proxy, upstream, pki):
    with H2Client(tls_h2_proxy.port, tls_ctx=client_ctx(pki, ["h2", "http/1.1"])) as c:
        assert c.alpn == "h2", f"ALPN {c.alpn!r} with h2 and http/1.1 offered"
        r = c.get("/tls/py-h2", authority="localhost")
        assert r.status == 200, r
        assert_no_connection_specific(r)
    rec = upstream.find("/tls/py-h2")
    assert rec.header("x-forwarded-proto") == "https", rec.headers
    entry = tls_h2_proxy.wait_access_log(lambda e: e.get("path") == "/tls/py-h2")
    assert entry is not None and entry["proto"] == "HTTP/2", entry


def test_tls_http11_only_client_gets_http11(tls_h2_proxy, upstream, pki):
    for alpn in (["http/1.1"], None):
        ctx = client_ctx(pki, alpn)
        raw = socket.create_connection(("127.0.0.1", tls_h2_proxy.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            want = "http/1.1" if alpn else None
            assert s.selected_alpn_protocol() == want, f"offered {alpn}: ALPN {s.selected_alpn_protocol()!r}"
            s.sendall(b"GET /tls/h11 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:300]


def test_tls_http1_only_listener_never_negotiates_h2(proxy_factory, upstream, pki):
    p = proxy_factory(upstream=upstream, listener=tls_listener(pki, ["http1"]))
    raw = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    with client_ctx(pki, ["h2", "http/1.1"]).wrap_socket(raw, server_hostname="localhost") as s:
        assert s.selected_alpn_protocol() == "http/1.1", s.selected_alpn_protocol()
        s.sendall(b"GET /tls/only-h11 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    out = _s_client(p.port, pki, "h2,http/1.1")
    assert "ALPN protocol: http/1.1" in out, out[-3000:]


def _s_client(port, pki, alpn) -> str:
    cp = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                         "-alpn", alpn, "-CAfile", pki.ca, "-brief"],
                        input=b"", capture_output=True, timeout=15)
    out = cp.stdout.decode(errors="replace") + "\n" + cp.stderr.decode(errors="replace")
    if "ALPN protocol" not in out:  # older s_client: no -brief summary line for ALPN
        cp = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                             "-alpn", alpn, "-CAfile", pki.ca], input=b"", capture_output=True, timeout=15)
        out = cp.stdout.decode(errors="replace") + "\n" + cp.stderr.decode(errors="replace")
    return out


def test_tls_s_client_alpn_h2(tls_h2_proxy, pki):
    out = _s_client(tls_h2_proxy.port, pki, "h2")
    assert "ALPN protocol: h2" in out, out[-3000:]
    assert "Verification: OK" in out or "Verify return code: 0 (ok)" in out, out[-3000:]


# ---------------------------------------------------------------------------------------------
# 3. h2 → HTTP/1.1: one proxy for the module, several routes


def _translation_routes():
    return [
        {"name": "auth", "match": {"path_prefix": "/auth"}, "cluster": "app",
         "filters": [{"auth": {"realm": "app", "api_key": {"header": "x-api-key", "keys_file": KEYS_FILE}}}]},
        {"name": "hf", "match": {"path_prefix": "/hf"}, "cluster": "app",
         "filters": [{"headers": {"request": {"set": {"x-env": "prod"}, "remove": ["x-debug"]},
                                  "response": {"set": {"x-resp": "added"}, "remove": ["x-upstream-seq"]}}}]},
        {"name": "rl", "match": {"path_prefix": "/rl"}, "cluster": "app",
         "filters": [{"rate_limit": {"requests_per_second": 1, "burst": 2, "key": "header:x-rl-key"}}]},
        {"name": "api", "match": {"path_prefix": "/api"}, "cluster": "app"},
    ]


@pytest.fixture(scope="module")
def tp(outrider_bin, tmp_path_factory, module_upstream):
    """Default protocols, max_request_body 64KiB, routes /auth /hf /rl /api (anything else: 404)."""
    p = start_proxy(outrider_bin, tmp_path_factory.mktemp("h2-translate"), upstream=module_upstream,
                    routes=_translation_routes(),
                    listener={"protocols": None, "limits": {"max_request_body": "64KiB"}})
    yield p
    problem = p.stop()
    if problem or p.proc.returncode != 0:
        _report(p)
    assert not problem, f"outrider pid {p.pid}: {problem}"


@pytest.fixture
def h2(tp):
    assert tp.alive(), "the module's proxy died in an earlier test"
    with H2Client(tp.port) as c:
        yield c


def test_h2_request_becomes_wellformed_http11(h2, tp, module_upstream):
    tag = uuid.uuid4().hex[:8]
    r = h2.get(f"/api/{tag}/a/./b//c/../d?q=1&r=%2F", authority="svc.example:8443",
               headers=[("x-custom", "value 1"), ("user-agent", "h2-itest/1"), ("accept", "*/*"),
                        ("cookie", "a=1"), ("cookie", "b=2"), ("x-multi", "one"), ("x-multi", "two")])
    assert r.status == 200, r
    assert_no_connection_specific(r)
    rec = module_upstream.find(tag)
    head = rec.raw_head.decode("latin-1")
    assert rec.method == "GET" and rec.version == "HTTP/1.1", head
    assert rec.target == f"/api/{tag}/a/b/d?q=1&r=%2F", f"path not normalized as on HTTP/1.1:\n{head}"
    assert rec.header_all("host") == ["svc.example:8443"], f"Host must come from :authority:\n{head}"
    assert not [k for k, _ in rec.headers if k.startswith(":")], f"pseudo-headers leaked upstream:\n{head}"
    assert rec.header("x-custom") == "value 1" and rec.header("user-agent") == "h2-itest/1", head
    assert rec.header_all("cookie") == ["a=1; b=2"], f"split cookie fields must be joined with '; ':\n{head}"
    assert rec.header_all("x-multi") == ["one", "two"] or rec.header_all("x-multi") == ["one, two"], head
    assert rec.header("x-forwarded-proto") == "http", head
    assert rec.header("x-forwarded-for") == "127.0.0.1", head
    assert rec.header("x-forwarded-host") == "svc.example:8443", head
    rid = rec.header("x-request-id")
    assert rid and UUID4.match(rid), head
    assert r.header_all("x-request-id") == [rid], f"x-request-id not echoed on the h2 response: {r.headers}"
    assert rec.framing == "none", f"a GET without body got {rec.framing} framing upstream:\n{head}"
    assert r.json()["target"] == rec.target
    assert r.header("x-upstream-conn") == str(rec.conn)


def test_h2_client_request_id_and_traceparent_kept(h2, module_upstream):
    tag = uuid.uuid4().hex[:8]
    tp_header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = h2.get(f"/api/rid/{tag}", headers=[("x-request-id", f"client-{tag}"), ("traceparent", tp_header)])
    assert r.status == 200, r
    rec = module_upstream.find(tag)
    assert rec.header_all("x-request-id") == [f"client-{tag}"], rec.headers
    assert r.header_all("x-request-id") == [f"client-{tag}"], r.headers
    tps = rec.header_all("traceparent")
    assert len(tps) == 1 and tps[0].split("-")[1] == "0af7651916cd43dd8448eb211c80319c", rec.headers


def test_h2_body_with_content_length(h2, module_upstream):
    tag = uuid.uuid4().hex[:8]
    payload = os.urandom(40000)
    r = h2.get(f"/api/echo/{tag}", method="POST", body=payload,
               headers=[("content-type", "application/x-test"), ("content-length", str(len(payload)))])
    assert r.status == 200, r
    assert r.body == payload, f"echo differs: {len(r.body)} bytes back of {len(payload)}"
    assert r.header("content-type") == "application/x-test"
    rec = module_upstream.find(tag)
    assert rec.framing == "content-length" and rec.header_all("content-length") == [str(len(payload))], \
        rec.raw_head.decode("latin-1")
    assert rec.body == payload


def test_h2_body_without_content_length(h2, module_upstream):
    tag = uuid.uuid4().hex[:8]
    first, second = os.urandom(20000), os.urandom(30000)
    sid = h2.request("POST", f"/api/echo/{tag}", headers=[("content-type", "application/octet-stream")],
                     body=first, end=False)
    time.sleep(0.3)  # the rest comes later: the proxy cannot know the length in advance
    h2.send_more(sid, second, end=True)
    r = h2.response(sid)
    assert r.status == 200, r
    rec = module_upstream.find(tag)
    assert rec.framing in ("chunked", "content-length"), rec.raw_head.decode("latin-1")
    assert rec.complete and rec.body == first + second, \
        f"upstream got {rec.body_len} bytes ({rec.framing}) of {len(first) + len(second)}"
    assert r.body == first + second


def test_h2_request_trailers_arrive_as_chunked_trailers(h2, module_upstream):
    tag = uuid.uuid4().hex[:8]
    payload = b"trailer test body\n" * 10
    r = h2.get(f"/api/rtrailers/{tag}", method="POST", body=payload,
               trailers=[("x-req-trailer", "t1"), ("x-sum", hashlib.sha256(payload).hexdigest())])
    assert r.status == 200, r
    rec = module_upstream.find(tag)
    head = rec.raw_head.decode("latin-1")
    assert rec.framing == "chunked", f"request trailers need a chunked body upstream:\n{head}"
    trailers = {k.lower(): v for k, v in rec.trailers}
    assert trailers.get("x-req-trailer") == "t1", f"trailers upstream: {rec.trailers}; head:\n{head}"
    assert trailers.get("x-sum") == hashlib.sha256(payload).hexdigest(), rec.trailers
    assert rec.body == payload


def test_h2_response_hop_by_hop_removed(h2, module_upstream):
    r = h2.get("/api/hop-response")
    assert r.status == 200, r
    assert_no_connection_specific(r)
    assert "x-bar" not in r.header_names(), f"a field named by the upstream's Connection reached the client: {r.headers}"
    assert r.header("x-kept") == "yes", r.headers
    assert r.body == b"hop\n"


def test_h2_chunked_upstream_body_and_trailers(h2, module_upstream):
    r = h2.get("/api/chunked", headers=[("te", "trailers")])
    assert r.status == 200, r
    assert_no_connection_specific(r)
    assert r.body == b"hello chunked world\n", r
    trailers = {k: v for k, v in r.trailers}
    assert trailers.get("x-trailer") == "done", f"upstream chunked trailers did not arrive as h2 trailers: {r!r}"
    assert trailers.get("x-checksum") == hashlib.sha256(r.body).hexdigest(), r.trailers
    rec = module_upstream.find("/api/chunked")
    assert [v.lower() for v in rec.header_all("te")] == ["trailers"], rec.headers


def test_h2_big_body_exact_and_status_passthrough(h2):
    n = 3 * MiB + 17
    r = h2.get(f"/api/big/{n}", timeout=30)
    assert r.status == 200 and len(r.body) == n, r
    assert r.body == big_body(n), "downloaded body differs"
    assert r.header("content-length") in (None, str(n)), r.headers
    r = h2.get("/api/status/503")
    assert r.status == 503 and r.body == b"status 503\n", r
    r = h2.get("/api/cookies")
    assert r.header_all("set-cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"], r.headers


@pytest.mark.parametrize("method,target,status", [("HEAD", "/api/head", 200), ("GET", "/api/status/204", 204),
                                                  ("GET", "/api/status/304", 304), ("HEAD", "/api/big/1000", 200)])
def test_h2_no_body_answers(h2, method, target, status):
    r = h2.get(target, method=method)
    assert r.status == status, r
    assert r.ended and r.body == b"", f"{method} {target} → {status} carried a body: {r!r}"
    assert_no_connection_specific(r)
    # the connection goes on
    assert h2.get("/api/after-no-body").status == 200


def test_h2_no_route_404(h2, module_upstream):
    n = len(module_upstream.records)
    r = h2.get("/nowhere/h2")
    assert_local_error(r, 404, "no_route")
    assert UUID4.match(r.header("x-request-id") or ""), r.headers
    assert len(module_upstream.records) == n
    assert h2.get("/api/after-404").status == 200, "the h2 connection should go on after a 404"


def test_h2_body_too_large_413(h2, tp, module_upstream):
    tag = uuid.uuid4().hex[:8]
    ok = h2.get(f"/api/echo/at-limit-{tag}", method="POST", body=b"x" * 65536,
                headers=[("content-length", "65536")])
    assert ok.status == 200 and len(ok.body) == 65536, ok
    r = h2.get(f"/api/echo/declared-over-{tag}", method="POST", body=b"y" * (100 * 1024),
               headers=[("content-length", str(100 * 1024))])
    assert_local_error(r, 413, "body_too_large")
    # the same without content-length: 413, or the stream reset; never a complete request upstream
    sid = h2.request("POST", f"/api/echo/streamed-over-{tag}", body=b"z" * (100 * 1024))
    r2 = h2.response(sid)
    assert r2.status == 413 or r2.reset_code is not None, r2
    if r2.status is not None:
        assert_local_error(r2, 413, "body_too_large")
    time.sleep(0.2)
    assert not any(f"declared-over-{tag}" in x.target for x in module_upstream.records), \
        "a body declared over the limit reached the upstream"
    assert not any(f"streamed-over-{tag}" in x.target and x.complete for x in module_upstream.records), \
        "the upstream received a complete request whose body was over the limit"
    with H2Client(tp.port) as c2:
        assert c2.get(f"/api/after-413-{tag}").status == 200


def test_h2_auth_401_and_identity(h2, module_upstream):
    tag = uuid.uuid4().hex[:8]
    n = len(module_upstream.records)
    r = h2.get(f"/auth/{tag}/denied")
    assert_local_error(r, 401, "unauthenticated")
    assert r.header("www-authenticate"), r.headers
    time.sleep(0.1)
    assert not [x for x in module_upstream.records[n:] if tag in x.target], "a denied request reached the app"
    r = h2.get(f"/auth/{tag}/ok", headers=[("x-api-key", API_KEY), ("x-auth-request-user", "spoofed")])
    assert r.status == 200, r
    rec = module_upstream.find(f"{tag}/ok")
    assert rec.header_all("x-auth-request-user") == ["ci-bot"], rec.headers


def test_h2_header_filter(h2, module_upstream):
    tag = uuid.uuid4().hex[:8]
    r = h2.get(f"/hf/{tag}", headers=[("x-env", "dev"), ("x-debug", "1"), ("x-other", "kept")])
    assert r.status == 200, r
    rec = module_upstream.find(tag)
    assert rec.header_all("x-env") == ["prod"], rec.headers
    assert "x-debug" not in rec.header_names() and rec.header("x-other") == "kept", rec.headers
    assert r.header_all("x-resp") == ["added"], r.headers
    assert "x-upstream-seq" not in r.header_names(), r.headers


def test_h2_rate_limit_429(h2, module_upstream):
    key = uuid.uuid4().hex
    sids = [h2.request("GET", f"/rl/{key}/{i}", headers=[("x-rl-key", key)]) for i in range(5)]
    rs = h2.responses_for(sids, timeout=10)
    statuses = [r.status for r in rs]
    assert statuses.count(200) in (2, 3) and statuses.count(429) >= 2, f"burst 2, 1/s, 5 streams at once: {statuses}"
    for r in rs:
        for h in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
            assert len(r.header_all(h)) == 1, f"{h} missing on an answer of a limited route: {r!r}"
        if r.status == 429:
            assert_local_error(r, 429, "rate_limited")
            ra = r.header("retry-after")
            assert ra and ra.isdigit() and int(ra) >= 1, r.headers
    # another key has its own bucket
    other = uuid.uuid4().hex
    assert h2.get(f"/rl/{other}", headers=[("x-rl-key", other)]).status == 200


def test_h2_access_log_one_line_per_stream(h2, tp):
    tag = uuid.uuid4().hex[:8]
    sids = [h2.request("GET", f"/api/log/{tag}/{i}", authority="log.example") for i in range(3)]
    rs = h2.responses_for(sids)
    assert [r.status for r in rs] == [200, 200, 200], rs
    h2.get(f"/nowhere/{tag}")
    deadline = time.monotonic() + 3
    while True:
        lines = [e for e in tp.access_log() if tag in str(e.get("path", ""))]
        if len(lines) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 4, f"expected one access log line per stream (4), got {len(lines)}: {lines}"
    for e in lines:
        assert e["proto"] == "HTTP/2", e
        assert e["method"] == "GET" and e["listener"] == "inbound", e
    ok = sorted(e["path"] for e in lines if e["status"] == 200)
    assert ok == [f"/api/log/{tag}/{i}" for i in range(3)], lines
    assert all(e["authority"] == "log.example" for e in lines if e["status"] == 200), lines
    rids = {e["request_id"] for e in lines if e["status"] == 200}
    assert rids == {r.header("x-request-id") for r in rs}, (rids, [r.headers for r in rs])
    assert [e["status"] for e in lines if e["path"] == f"/nowhere/{tag}"] == [404], lines


# ---------------------------------------------------------------------------------------------
# 4. Many streams on one connection; SETTINGS_MAX_CONCURRENT_STREAMS


def test_h2_100_concurrent_streams_one_connection(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"protocols": None})
    with H2Client(p.port, timeout=20) as c:
        settings = c.settle()
        assert settings and settings.get(3) == 100, \
            f"the proxy's SETTINGS must announce MAX_CONCURRENT_STREAMS=100 (default): {c.server_settings}"
        sids = [c.request("GET", f"/slow/200/many/{i}", headers=[("x-i", str(i))]) for i in range(100)]
        rs = c.responses_for(sids, timeout=20)
    bad = [(i, r) for i, r in enumerate(rs) if r.status != 200 or r.json()["target"] != f"/slow/200/many/{i}"]
    assert not bad, f"{len(bad)} of 100 streams failed or got another stream's answer: {bad[:3]}"
    recs = [r for r in upstream.complete if "/many/" in r.target]
    assert len(recs) == 100
    # they were concurrent: all heads reached the upstream within the 200 ms of the first answer
    t = sorted(r.t_head for r in recs)
    assert t[-1] - t[0] < 1.5, f"the 100 streams reached the upstream over {t[-1] - t[0]:.2f}s: not concurrent"


def test_h2load_one_connection_100_streams(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"protocols": None}, top={"access_log": {"format": "off"}})
    cp = run_tool(["h2load", "-c1", "-m100", "-n2000", "-T", "20", p.url("/h2load")], timeout=45)
    out = cp.stdout.decode(errors="replace")
    assert cp.returncode == 0, out[-3000:] + cp.stderr.decode(errors="replace")[-2000:]
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                  out)
    assert m, out[-3000:]
    assert m.group(4) == "2000" and m.group(5) == "0" and m.group(6) == "0", out[-1500:]
    assert re.search(r"status codes: 2000 2xx", out), out[-1500:]
    assert "Application protocol: h2c" in out, out[-1500:]
    assert upstream.wait_for(lambda: len([r for r in upstream.complete if r.target == "/h2load"]) == 2000, 5)


def test_max_concurrent_streams_announced_and_excess_refused(proxy_factory, upstream):
    """limits.h2_max_concurrent_streams 7: the SETTINGS frame says 7; a client that opens 8 streams
    before acknowledging it gets the 8th refused (RST_STREAM REFUSED_STREAM, nothing sent
    upstream), the 7 others answered, and the connection goes on."""
    p = proxy_factory(upstream=upstream, listener={"protocols": None, "limits": {"h2_max_concurrent_streams": 7}})
    with RawH2(p.port, timeout=10) as raw:
        out = raw.preface()
        for i in range(8):
            out += raw.headers(1 + 2 * i, raw.request_fields(f"/slow/500/mcs/{i}"))
        assert raw.send(out)
        frames = raw.read_until(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags, 5)
        first = [f for f in frames if isinstance(f, SettingsFrame) and "ACK" not in f.flags]
        assert first, f"no SETTINGS from the proxy: {describe(frames)}"
        assert first[0].settings.get(3) == 7, f"MAX_CONCURRENT_STREAMS should be 7: {describe(first)}"
        ended, reset = set(), {}

        def done(f):
            if isinstance(f, RstStreamFrame):
                reset[f.stream_id] = f.error_code
            elif "END_STREAM" in f.flags and f.stream_id:
                ended.add(f.stream_id)
            return len(ended) + len(reset) >= 8 or isinstance(f, GoAwayFrame)

        frames += raw.read_until(done, 8)
        assert not [f for f in frames if isinstance(f, GoAwayFrame)], \
            f"the connection was ended rather than the stream refused: {describe(frames)}"
        assert reset == {15: ErrorCodes.REFUSED_STREAM}, \
            f"expected stream 15 refused with REFUSED_STREAM, got resets {reset}; frames: {describe(frames)}"
        assert ended == {1, 3, 5, 7, 9, 11, 13}, describe(frames)
        statuses = [dict(f.fields).get(":status") for f in frames if isinstance(f, HeadersFrame) and f.fields]
        assert statuses.count("200") == 7, describe(frames)
        # acknowledged now; new streams work
        raw.send(raw.settings_ack() + raw.headers(17, raw.request_fields("/mcs/after")))
        more = raw.read_until(lambda f: f.stream_id == 17 and "END_STREAM" in f.flags or isinstance(f, GoAwayFrame), 5)
        assert any(f.stream_id == 17 and isinstance(f, HeadersFrame) and dict(f.fields or {}).get(":status") == "200"
                   for f in more), describe(more)
    time.sleep(0.2)
    targets = sorted(r.target for r in upstream.records if "/mcs/" in r.target)
    assert "/slow/500/mcs/7" not in targets, f"the refused stream reached the upstream: {targets}"
    assert len(targets) == 8, targets


# ---------------------------------------------------------------------------------------------
# 5. Flow control: 16 MiB each way with 65,535-byte initial windows


@pytest.fixture
def fc_proxy(proxy_factory, upstream):
    return proxy_factory(upstream=upstream, listener={"protocols": None})


def test_h2_16mib_download(fc_proxy):
    n = 16 * MiB
    with H2Client(fc_proxy.port, timeout=30) as c:
        assert c.conn.local_settings.initial_window_size == 65535
        r = c.get(f"/big/{n}", timeout=30)
        # the proxy kept within the windows (hyper-h2 raises FlowControlError otherwise)
    assert r.status == 200, r
    assert len(r.body) == n, f"received {len(r.body)} of {n} bytes"
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(big_body(n)).hexdigest(), "16 MiB download corrupted"


def test_h2_16mib_upload(fc_proxy, upstream):
    n = 16 * MiB
    payload = os.urandom(n)
    with H2Client(fc_proxy.port, timeout=30) as c:
        r = c.get("/upload/h2-16mib", method="POST", body=payload, headers=[("content-length", str(n))], timeout=30)
        # the connection window starts at 65,535: 16 MiB cannot pass without the proxy's WINDOW_UPDATEs
        assert c.frame_counts.get(8, 0) > 0, c.frame_counts
    assert r.status == 200, r
    assert r.json() == {"bytes": n, "sha256": hashlib.sha256(payload).hexdigest()}, r.body
    rec = upstream.find("/upload/h2-16mib")
    assert rec.framing == "content-length" and rec.body_len == n


def test_h2_big_streams_concurrently(fc_proxy, upstream):
    n = 6 * MiB
    ups = [os.urandom(n) for _ in range(2)]
    with H2Client(fc_proxy.port, timeout=30) as c:
        sids = [c.request("GET", f"/big/{n + i}") for i in range(2)]
        sids += [c.request("POST", f"/upload/conc-{i}", body=ups[i]) for i in range(2)]
        small = c.request("GET", "/small-meanwhile")
        rs = c.responses_for(sids + [small], timeout=30)
    for i in range(2):
        assert rs[i].status == 200 and rs[i].body == big_body(n + i), f"download {i}: {len(rs[i].body)} bytes"
        assert rs[2 + i].json() == {"bytes": n, "sha256": hashlib.sha256(ups[i]).hexdigest()}, rs[2 + i].body
    # a small stream opened last is not stuck behind the big ones
    small_r = rs[-1]
    assert small_r.status == 200, small_r
    assert small_r.t_end < max(r.t_end for r in rs[:4]), "the small stream finished after every big one"


# ---------------------------------------------------------------------------------------------
# 6. h2c upstream (cluster protocol: h2c) behind HTTP/1.1 clients


def h2c_cluster(app, **extra) -> dict:
    c = {"name": "app", "endpoints": [app.address], "connect_timeout": "1s", "protocol": "h2c"}
    c.update(extra)
    return c


@pytest.fixture
def app_proxy(proxy_factory, h2_upstream):
    app = h2_upstream("h2c-app")
    routes = [{"name": "retrying", "match": {"path_prefix": "/retry"}, "cluster": "app",
               "retry": {"attempts": 3, "on": ["refused_stream"]}},
              {"name": "default", "match": {"path_prefix": "/"}, "cluster": "app"}]
    p = proxy_factory(clusters=[h2c_cluster(app)], routes=routes, top={"workers": 1},
                      listener={"protocols": None})
    return p, app


def test_h2c_upstream_request_translation(app_proxy):
    p, app = app_proxy
    r = h11_get(p.port, "/x/h11-to-h2c?q=1", host="svc.test", headers=[
        ("Connection", "x-hop, keep-alive"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"), ("TE", "trailers"), ("X-Custom", "v"), ("Cookie", "a=1; b=2")])
    assert r.status == 200, r
    rec = app.find("/x/h11-to-h2c")
    assert rec.pseudo == {":method": "GET", ":scheme": "http", ":authority": "svc.test", ":path": "/x/h11-to-h2c?q=1"}, \
        rec.pseudo
    names = rec.header_names()
    leaked = names & {"connection", "keep-alive", "proxy-connection", "x-hop", "transfer-encoding", "upgrade"}
    assert not leaked, f"hop-by-hop fields reached the h2 app: {rec.headers}"
    assert rec.header_all("te") in ([], ["trailers"]), rec.headers
    assert rec.header("x-custom") == "v" and rec.header("x-forwarded-proto") == "http", rec.headers
    assert UUID4.match(rec.header("x-request-id") or ""), rec.headers
    assert r.header("x-request-id") == rec.header("x-request-id")
    assert rec.alpn is None and rec.complete and rec.body_len == 0
    body = r.json()
    assert body["path"] == "/x/h11-to-h2c?q=1" and body["upstream"] == "h2c-app"
    assert r.header("x-upstream-stream") == str(rec.stream_id)


def test_h2c_upstream_bodies(app_proxy):
    p, app = app_proxy
    payload = os.urandom(50000)
    r = h11_get(p.port, "/echo/cl", method="POST", body=payload, headers=[("Content-Type", "application/x-cl")])
    assert r.status == 200 and r.body == payload, r
    assert r.header("content-type") == "application/x-cl"
    rec = app.find("/echo/cl")
    assert rec.body == payload and rec.method == "POST"
    assert rec.header("content-length") in (None, "50000"), rec.headers
    # chunked from the client
    parts = [os.urandom(7000), os.urandom(1), os.urandom(20000)]
    with Conn(p.port, 10) as c:
        c.send(b"POST /echo/chunked HTTP/1.1\r\nHost: svc.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in parts:
            c.send(b"%x\r\n" % len(part) + part + b"\r\n")
            time.sleep(0.05)
        c.send(b"0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200 and r.body == b"".join(parts), r
    rec = app.find("/echo/chunked")
    assert rec.body == b"".join(parts), f"h2 app got {rec.body_len} bytes of {sum(map(len, parts))}"
    assert "transfer-encoding" not in rec.header_names(), rec.headers


def test_h2c_upstream_response_trailers_to_http11_client(app_proxy):
    p, app = app_proxy
    r = h11_get(p.port, "/trailers", headers=[("TE", "trailers")])
    assert r.status == 200, r
    assert r.body == b"hello h2 trailers\n", r
    if r.framing == "chunked":
        trailers = {k.lower(): v for k, v in r.trailers}
        assert trailers.get("x-trailer") == "done", f"chunked answer without the app's trailers: {r.trailers}"
        assert trailers.get("x-checksum") == hashlib.sha256(r.body).hexdigest(), r.trailers
    assert app.find("/trailers").header_all("te") == ["trailers"]


def test_h2c_upstream_few_connections_for_many_clients(app_proxy):
    p, app = app_proxy
    results = {}

    def one(i):
        try:
            results[i] = h11_get(p.port, f"/slow/300/mux/{i}", timeout=15)
        except Exception as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    elapsed = time.monotonic() - t0
    bad = {i: r for i, r in results.items() if not (hasattr(r, "status") and r.status == 200
                                                    and r.json()["path"] == f"/slow/300/mux/{i}")}
    assert len(results) == 50 and not bad, f"{len(bad)} failures: {list(bad.items())[:3]}"
    assert app.connections <= 2, f"50 concurrent requests used {app.connections} TCP connections to the h2c app (workers: 1)"
    recs = app.find_all("/mux/")
    per_conn = {}
    for rec in recs:
        per_conn.setdefault(rec.conn, []).append(rec.stream_id)
    assert max(len(v) for v in per_conn.values()) > 1, per_conn
    assert elapsed < 6, f"50 × 300 ms took {elapsed:.1f}s: not multiplexed"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_h2c_upstream_refused_stream_is_retried(app_proxy, method):
    """The app resets the first try with REFUSED_STREAM (nothing processed): with
    `retry.on: [refused_stream]` the proxy tries again, a POST too (SPEC §7), body replayed."""
    p, app = app_proxy
    key = uuid.uuid4().hex[:8]
    body = b"replay me" if method == "POST" else None
    r = h11_get(p.port, f"/retry/refuse-once/{key}", method=method, body=body,
                headers=[("Content-Type", "text/plain")] if body else [])
    tries = app.find_all(f"/refuse-once/{key}")
    assert r.status == 200, f"{r!r}; the app saw {[(t.method, t.reset_code, t.complete) for t in tries]}"
    assert len(tries) == 2, f"expected a refused try and a second one: {[(t.path, t.reset_code, t.complete) for t in tries]}"
    assert tries[1].complete and tries[1].body == (body or b""), tries[1]
    assert r.json()["body_len"] == len(body or b"")
    entry = p.wait_access_log(lambda e: key in str(e.get("path")))
    assert entry is not None and entry["attempts"] == 2, entry


def test_h2c_upstream_connection_closed_is_502(app_proxy):
    p, app = app_proxy
    r = h11_get(p.port, "/close-conn")
    assert r.status == 502, r
    assert r.header("x-outrider-error") in ("upstream_reset", "upstream_protocol"), r
    r = h11_get(p.port, "/after-close-conn")
    assert r.status == 200, r
    assert app.connections >= 2


def test_h2c_upstream_goaway_lets_inflight_finish(app_proxy):
    """The app sends GOAWAY(NO_ERROR) naming the stream in flight: that stream is answered, and
    the next request goes over a new connection (none is opened on the old one)."""
    p, app = app_proxy
    r = h11_get(p.port, "/goaway-first/300/inflight")
    assert r.status == 200 and r.json()["path"] == "/goaway-first/300/inflight", r
    first_conn = app.find("/goaway-first/300/inflight").conn
    time.sleep(0.3)
    r = h11_get(p.port, "/after-app-goaway")
    assert r.status == 200, r
    assert app.find("/after-app-goaway").conn != first_conn, "a new stream went over the connection the app closed"


def test_h2_client_to_h2c_upstream_end_to_end(app_proxy):
    """h2 on both sides: request trailers reach the app as trailers, response trailers come back."""
    p, app = app_proxy
    with H2Client(p.port) as c:
        r = c.get("/echo/e2e", method="POST", body=b"both sides h2", headers=[("te", "trailers")],
                  trailers=[("x-client-trailer", "c1")])
        assert r.status == 200 and r.body == b"both sides h2", r
        rec = app.find("/echo/e2e")
        assert ("x-client-trailer", "c1") in rec.trailers, f"request trailers lost between two h2 hops: {rec.trailers}"
        r = c.get("/trailers", headers=[("te", "trailers")])
        assert r.status == 200 and r.body == b"hello h2 trailers\n", r
        assert dict(r.trailers).get("x-trailer") == "done", r
        assert_no_connection_specific(r)


# ---------------------------------------------------------------------------------------------
# 7. h2 upstream over TLS (cluster protocol: h2, ALPN)


def test_h2_tls_upstream(proxy_factory, h2_upstream, pki):
    app = h2_upstream("h2-tls-app", ssl_ctx=server_ctx(pki, ["h2"]))
    p = proxy_factory(clusters=[{"name": "app", "endpoints": [app.address], "connect_timeout": "1s",
                                 "protocol": "h2", "tls": {"ca": pki.ca, "sni": "localhost"}}],
                      listener={"protocols": None})
    r = h11_get(p.port, "/tls-up/get")
    assert r.status == 200, r
    rec = app.find("/tls-up/get")
    assert rec.alpn == "h2", f"the app negotiated ALPN {rec.alpn!r}"
    # :scheme of a request originated over TLS: https (the upstream's transport) or the client's http; not constrained
    assert rec.scheme in ("https", "http") and rec.authority == "test.local", rec.pseudo
    payload = os.urandom(100000)
    r = h11_get(p.port, "/tls-up/echo", method="POST", body=payload)
    assert r.status == 200 and r.body == payload, r
    with H2Client(p.port) as c:
        r = c.get("/tls-up/from-h2")
        assert r.status == 200 and r.json()["alpn"] == "h2", r
    assert set(app.alpn_seen) == {"h2"}, app.alpn_seen


# ---------------------------------------------------------------------------------------------
# 9. Floods


class _Background:
    """Another client on its own h2 connection: GETs in a loop while a flood runs; RSS sampled."""

    def __init__(self, p):
        self.p = p
        self.stop = threading.Event()
        self.statuses = []
        self.errors = []
        self.rss_max = p.proc_status("VmRSS")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.sampler = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self.thread.start()
        self.sampler.start()
        deadline = time.monotonic() + 5
        while not self.statuses and not self.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.thread.join(10)
        self.sampler.join(5)

    def _run(self):
        i = 0
        try:
            with H2Client(self.p.port, timeout=5) as c:
                while not self.stop.is_set():
                    r = c.get(f"/bg/{i}", timeout=5)
                    self.statuses.append(r.status)
                    i += 1
                    time.sleep(0.01)
        except Exception as e:
            self.errors.append(repr(e))

    def _sample(self):
        while not self.stop.is_set():
            try:
                self.rss_max = max(self.rss_max, self.p.proc_status("VmRSS"))
            except (OSError, KeyError):
                return
            time.sleep(0.02)


@pytest.fixture
def flood_proxy(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"protocols": None}, top={"access_log": {"format": "off"}})
    with H2Client(p.port) as c:  # warm up
        for i in range(5):
            assert c.get(f"/warm/{i}").status == 200
    return p


def _assert_flood_outcome(p, raw, frames, closed, bg, rss0, reason, goaway_required):
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert closed, f"the flooding connection was not closed; frames: {describe(frames)}"
    if goaway_required:
        assert goaways, f"no GOAWAY before the close; frames: {describe(frames)}"
    for g in goaways:
        assert g.error_code != ErrorCodes.NO_ERROR, f"GOAWAY {error_name(g.error_code)} for a flood: {describe(goaways)}"
    assert p.alive(), "the proxy died"
    assert not bg.errors, f"the other client failed during the flood: {bg.errors}"
    assert bg.statuses and set(bg.statuses) == {200}, f"the other client's statuses: {bg.statuses[-20:]}"
    grew = bg.rss_max - rss0
    assert grew < 50 * MiB, f"RSS grew by {grew / MiB:.1f} MiB during the flood"
    v = wait_metric(p.admin_port, CLOSED_METRIC, 1, listener="inbound", reason=reason)
    assert v >= 1, f"{CLOSED_METRIC}{{listener=\"inbound\",reason=\"{reason}\"}} is {v}"


def test_flood_rapid_reset(flood_proxy):
    p = flood_proxy
    rss0 = p.proc_status("VmRSS")
    with _Background(p) as bg, RawH2(p.port, timeout=5) as raw:
        raw.send(raw.preface())
        sid, frames = 1, []
        t0 = time.monotonic()
        while sid < 2 * 5000 and not raw.dead and time.monotonic() - t0 < 15:
            batch = b"".join(raw.headers(s, raw.request_fields(f"/rr/{s}")) + raw.rst(s, ErrorCodes.CANCEL)
                             for s in range(sid, sid + 200, 2))
            sid += 200
            if not raw.send(batch):
                break
            try:  # look at what came back without waiting
                while True:
                    f = raw.read_frame(0.0005)
                    if f is None:
                        break
                    frames.append(f)
            except TimeoutError:
                pass
            if any(isinstance(f, GoAwayFrame) for f in frames):
                break
        more, closed = raw.drain(5)
        frames += more
        bg.stop.set()
    _assert_flood_outcome(p, raw, frames, closed, bg, rss0, "rapid_reset", goaway_required=True)
    # ENHANCE_YOUR_CALM (the proxy's own reset budget) or INTERNAL_ERROR (nghttp2's built-in
    # stream_reset_rate_limit, which says so)
    g = [f for f in frames if isinstance(f, GoAwayFrame)][0]
    assert g.error_code in (ErrorCodes.ENHANCE_YOUR_CALM, ErrorCodes.INTERNAL_ERROR), describe([g])


def test_flood_continuation(flood_proxy):
    import hpack

    p = flood_proxy
    rss0 = p.proc_status("VmRSS")
    enc = hpack.Encoder()
    fragment = enc.encode([hpack.NeverIndexedHeaderTuple(b"x-flood", b"a" * 100)])
    with _Background(p) as bg, RawH2(p.port, timeout=5) as raw:
        raw.send(raw.preface() + raw.headers(1, raw.request_fields("/cont"), end_stream=True, end_headers=False))
        sent, frames = 0, []
        t0 = time.monotonic()
        while sent < 20000 and not raw.dead and time.monotonic() - t0 < 10:
            if not raw.send(raw.continuation(1, fragment) * 100):
                break
            sent += 100
            try:
                while True:
                    f = raw.read_frame(0.0005)
                    if f is None:
                        break
                    frames.append(f)
            except TimeoutError:
                pass
        more, closed = raw.drain(5)
        frames += more
        bg.stop.set()
    _assert_flood_outcome(p, raw, frames, closed, bg, rss0, "continuation_flood", goaway_required=False)
    assert not [f for f in frames if isinstance(f, HeadersFrame) and f.stream_id == 1], \
        f"the flooded request was answered: {describe(frames)}"


def test_rapid_reset_in_one_read_reaches_no_upstream(proxy_factory, upstream):
    """Streams opened and reset by the client in the same read (the CVE-2023-44487 pattern)
    start no exchange: no routing, no upstream connection, no access-log line. Found by
    `scripts/flood.sh h2`: each reset stream used to cost an upstream connect, and a few
    attacking connections (1000 resets each before the budget closes them) took the worker
    from legitimate clients (p99 x190). A stream that is not reset is still served."""
    p = proxy_factory(upstream=upstream, listener={"protocols": None}, top={"workers": 1})
    n = 100
    with RawH2(p.port, timeout=5) as raw:
        raw.send(raw.preface())
        frames = raw.read_until(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags, 5)
        raw.answer_pings_and_settings(frames)
        conns0 = upstream.connections
        batch = b"".join(raw.headers(s, raw.request_fields(f"/rr/{s}")) + raw.rst(s, ErrorCodes.CANCEL)
                         for s in range(1, 2 * n, 2))
        raw.send(batch + raw.headers(2 * n + 1, raw.request_fields("/after-resets")))
        got = raw.read_until(lambda f: isinstance(f, HeadersFrame) and f.stream_id == 2 * n + 1, 5)
        assert any(isinstance(f, HeadersFrame) and f.stream_id == 2 * n + 1 and (":status", "200") in (f.fields or [])
                   for f in got), f"the stream that was not reset was not served: {describe(got)}"
    opened = upstream.connections - conns0
    assert opened <= 3, f"{opened} upstream connections for {n} streams reset in the same read (and 1 kept)"
    reached = [r.target for r in upstream.records if r.target.startswith("/rr/")]
    assert len(reached) <= 2, f"reset streams reached the upstream: {reached[:10]}"
    time.sleep(0.3)
    logged = [e["path"] for e in p.access_log() if e.get("path", "").startswith("/rr/")]
    assert len(logged) <= 2, f"{len(logged)} access-log lines for streams reset before they started"


@pytest.mark.parametrize("kind", ["settings", "ping"])
def test_flood_settings_ping_unread(flood_proxy, kind):
    """SETTINGS or PING frames sent without ever reading the ACKs (a small receive buffer): the
    connection is closed once the ACKs pile up, memory stays bounded."""
    p = flood_proxy
    rss0 = p.proc_status("VmRSS")
    frame = RawH2.settings() if kind == "settings" else RawH2.ping(b"floodpng")
    chunk = frame * ((1 << 20) // len(frame))
    with _Background(p) as bg, RawH2(p.port, timeout=5, rcvbuf=4096) as raw:
        raw.send(raw.preface())
        sent = 0
        t0 = time.monotonic()
        stalled = None
        while sent < 256 * MiB and time.monotonic() - t0 < 15:
            try:
                raw.sock.sendall(chunk)
            except TimeoutError as e:
                stalled = e
                break
            except OSError:
                break
            sent += len(chunk)
        elapsed = time.monotonic() - t0
        assert stalled is None, (f"the proxy stopped reading after {sent / MiB:.0f} MiB of {kind} frames "
                                 f"({elapsed:.1f}s) instead of closing the connection")
        counts, frames, closed = raw.drain_fast(10)
        bg.stop.set()
    assert closed or sent < 256 * MiB, \
        f"{sent / MiB:.0f} MiB of {kind} frames over {elapsed:.1f}s and the connection is still open"
    _assert_flood_outcome(p, raw, frames, closed, bg, rss0, "flood", goaway_required=False)


def test_flood_empty_data_frames(flood_proxy):
    p = flood_proxy
    rss0 = p.proc_status("VmRSS")
    with _Background(p) as bg, RawH2(p.port, timeout=5) as raw:
        raw.send(raw.preface() + raw.headers(1, raw.request_fields("/slow/2000/empty", method="POST"), end_stream=False))
        sent = 0
        while sent < 10000 and not raw.dead:
            if not raw.send(raw.data(1, b"") * 100):
                break
            sent += 100
        frames, closed = raw.drain(5)
        bg.stop.set()
    _assert_flood_outcome(p, raw, frames, closed, bg, rss0, "empty_frames", goaway_required=False)


def test_protocol_error_counted(proxy_factory, upstream):
    """DATA on stream 0 is a connection error: GOAWAY(PROTOCOL_ERROR), closed, counted."""
    p = proxy_factory(upstream=upstream, listener={"protocols": None})
    with RawH2(p.port, timeout=5) as raw:
        raw.send(raw.preface() + b"\x00\x00\x04\x00\x00\x00\x00\x00\x00nope")  # DATA, stream 0
        frames, closed = raw.drain(5)
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert closed and goaways and goaways[-1].error_code == ErrorCodes.PROTOCOL_ERROR, describe(frames)
    v = wait_metric(p.admin_port, CLOSED_METRIC, 1, listener="inbound", reason="protocol_error")
    assert v >= 1, f'{CLOSED_METRIC}{{listener="inbound",reason="protocol_error"}} is {v}'


def test_bad_preface_counted(proxy_factory, upstream, pki):
    """h2 chosen by ALPN, then HTTP/1.1 bytes instead of the connection preface: closed, counted,
    nothing sent upstream."""
    p = proxy_factory(upstream=upstream, listener=tls_listener(pki, None))
    with RawH2(p.port, timeout=5, tls_ctx=client_ctx(pki, ["h2"])) as raw:
        assert raw.sock.selected_alpn_protocol() == "h2"
        raw.send(b"GET /not-a-preface HTTP/1.1\r\nHost: localhost\r\n\r\n")
        frames, closed = raw.drain(5)
    assert closed, describe(frames)
    assert not any(isinstance(f, HeadersFrame) for f in frames), describe(frames)
    v = wait_metric(p.admin_port, CLOSED_METRIC, 1, listener="inbound-tls", reason="bad_preface")
    assert v >= 1, f'{CLOSED_METRIC}{{listener="inbound-tls",reason="bad_preface"}} is {v}'
    assert not [r for r in upstream.records if "not-a-preface" in r.target]


def test_reconnecting_settings_ping_flooders_do_not_starve_a_client(proxy_factory, upstream):
    """Two attackers reconnect as soon as they are closed, each time sending 256 KiB of SETTINGS
    (or PING) frames and never reading the ACKs (`scripts/flood.sh h2`'s churn floods, which
    cost a legitimate client's p99 x5-13). On one worker, a client's sequential requests
    all succeed meanwhile and none waits long; every flooding connection is closed (`flood`)."""
    p = proxy_factory(upstream=upstream, listener={"protocols": None},
                      top={"workers": 1, "access_log": {"format": "off"}})
    stop = threading.Event()
    closed = [0]
    stalled = []

    def attacker(kind):
        frame = RawH2.settings() if kind == "settings" else RawH2.ping(b"floodpng")
        batch = frame * ((256 << 10) // len(frame))
        while not stop.is_set():
            try:
                raw = RawH2(p.port, timeout=3, rcvbuf=4096)
            except OSError:
                time.sleep(0.01)
                continue
            try:
                raw.sock.sendall(raw.preface())
                while not stop.is_set():
                    raw.sock.sendall(batch)
            except TimeoutError:
                stalled.append(kind)
            except OSError:
                closed[0] += 1
            finally:
                raw.close()

    threads = [threading.Thread(target=attacker, args=(k,), daemon=True) for k in ("settings", "ping")]
    latencies, statuses = [], []
    with H2Client(p.port, timeout=5) as c:
        assert c.get("/before").status == 200
        for t in threads:
            t.start()
        time.sleep(0.3)
        t_end = time.monotonic() + 3
        i = 0
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            r = c.get(f"/legit/{i}", timeout=5)
            latencies.append(time.monotonic() - t0)
            statuses.append(r.status)
            i += 1
        stop.set()
    for t in threads:
        t.join(5)
    assert not stalled, f"flooding connections the proxy stopped reading without closing: {stalled}"
    assert set(statuses) == {200}, statuses
    latencies.sort()
    assert len(latencies) >= 30, f"only {len(latencies)} requests answered in 3 s under the floods"
    assert latencies[-1] < 1.0, f"slowest request {latencies[-1] * 1000:.0f} ms under the floods (median {latencies[len(latencies) // 2] * 1000:.1f} ms)"
    assert closed[0] >= 10, f"only {closed[0]} flooding connections closed in 3 s"
    v = wait_metric(p.admin_port, CLOSED_METRIC, 10, listener="inbound", reason="flood")
    assert v >= 10, f'{CLOSED_METRIC}{{reason="flood"}} is {v}'


# ---------------------------------------------------------------------------------------------
# 9b. Clients that take nothing: send timeout, bounded buffering (issue #9)


def _zero_window_streams(raw, paths, first_sid=1, window=1):
    """Preface with SETTINGS_INITIAL_WINDOW_SIZE `window` (the server's SETTINGS acknowledged),
    then one GET per path; returns the stream ids. The default window of one byte keeps the
    streams' exchanges running (a window of 0 holds the requests back: see
    test_zero_window_request_waits_for_its_window)."""
    raw.send(raw.preface({4: window}))
    frames = raw.read_until(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags, 5)
    raw.answer_pings_and_settings(frames)
    sids = list(range(first_sid, first_sid + 2 * len(paths), 2))
    raw.send(b"".join(raw.headers(s, raw.request_fields(p)) for s, p in zip(sids, paths)))
    return sids


def _status(frames, sid):
    for f in frames:
        if isinstance(f, HeadersFrame) and f.stream_id == sid and f.fields:
            return dict(f.fields).get(":status")
    return None


def test_zero_window_streams_reset_after_send_timeout(proxy_factory, upstream):
    """A client that never opens its flow-control window (1 byte) holds its streams for the send timeout
    (the listener's `idle`, 1 s here) and no longer: then RST_STREAM(CANCEL) for each, whether
    its exchange is still reading the app (1 MiB) or its whole answer waits in the stream's send
    buffer (2 KB). The connection itself stays up. While held, the streams count in the
    cluster's circuit breaker (max_requests 3: a fourth request gets 503 overflow); after the
    resets they do not. A client that opens its window slowly but steadily is not reset."""
    clusters = [{"name": "app", "endpoints": [f"127.0.0.1:{upstream.port}"], "connect_timeout": "1s",
                 "circuit_breaker": {"max_requests": 3}}]
    p = proxy_factory(upstream=upstream, clusters=clusters, top={"workers": 1},
                      listener={"protocols": None, "timeouts": {"idle": "1s"}})
    with RawH2(p.port, timeout=5) as raw:
        # the small answer first (its exchange ends once the 2 KB are in the stream's buffer),
        # then three that keep their exchanges waiting for room
        sids = _zero_window_streams(raw, ["/big/2000"])
        raw.read_until(lambda f: _status(raw.frames, 1), 5)
        assert p.wait_access_log(lambda e: e.get("path") == "/big/2000", 3), "the 2 KB exchange did not end"
        sids += [3, 5, 7]
        raw.send(b"".join(raw.headers(s, raw.request_fields(f"/big/{1048576 + s}")) for s in sids[1:]))
        raw.read_until(lambda f: all(_status(raw.frames, s) for s in sids), 5)
        t_heads = time.monotonic()
        assert all(_status(raw.frames, s) == "200" for s in sids), describe(raw.frames)
        # the three big exchanges are held (waiting for room): the breaker is full
        r = h11_get(p.port, "/while-held", timeout=5)
        assert_local_error(r, 503, "overflow")
        rsts = {}
        deadline = time.monotonic() + 4
        while len(rsts) < len(sids) and time.monotonic() < deadline:
            try:
                f = raw.read_frame(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            if f is None:
                break
            if isinstance(f, RstStreamFrame) and f.stream_id in sids:
                rsts[f.stream_id] = (f.error_code, time.monotonic() - t_heads)
        assert set(rsts) == set(sids), f"streams not reset within 4 s: {sorted(set(sids) - set(rsts))}; {describe(raw.frames)}"
        for sid, (code, after) in rsts.items():
            assert code == ErrorCodes.CANCEL, f"stream {sid}: RST_STREAM {error_name(code)}"
            assert 0.8 <= after <= 3.0, f"stream {sid} reset {after:.2f} s after its head (send timeout 1 s)"
        for sid in sids:
            sent = sum(len(f.data) for f in raw.frames if isinstance(f, DataFrame) and f.stream_id == sid)
            assert sent <= 1, f"stream {sid}: {sent} bytes of DATA into a 1-byte window"
        # the connection is still up: a PING is answered
        raw.send(raw.ping(b"stillup!"))
        got = raw.read_until(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags, 3)
        assert any(isinstance(f, PingFrame) and "ACK" in f.flags for f in got), describe(got)
        # the breaker is free again
        r = h11_get(p.port, "/after-resets", timeout=5)
        assert r.status == 200, r
        # a slow but steady reader (8 KiB every 0.25 s, 2.5 s in all) is never reset
        slow = sids[-1] + 2
        raw.send(raw.headers(slow, raw.request_fields("/big/1048576")))
        got_bytes, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 2.5:
            raw.send(raw.window_update(slow, 8192) + raw.window_update(0, 8192))
            end = time.monotonic() + 0.25
            while time.monotonic() < end:
                try:
                    f = raw.read_frame(max(0.01, end - time.monotonic()))
                except TimeoutError:
                    break
                assert f is not None, f"connection closed under a slow reader: {describe(raw.frames)}"
                assert not (isinstance(f, RstStreamFrame) and f.stream_id == slow), \
                    f"the slow reader was reset after {time.monotonic() - t0:.2f} s with {got_bytes} bytes read"
                if isinstance(f, DataFrame) and f.stream_id == slow:
                    got_bytes += len(f.data)
        assert got_bytes >= 40 * 1024, f"the slow reader got {got_bytes} bytes"


def test_zero_window_streams_hold_little_memory(proxy_factory, upstream):
    """200 streams (2 connections x 100) of 1 MiB answers to a client that never opens its
    window (1 byte): each held stream costs the proxy a few tens of KiB (its stream's send room and
    bookkeeping), not the upstream read buffer + exchange output + stream buffer (~210 KiB)
    it used to; the rest waits in the app's socket."""
    p = proxy_factory(upstream=upstream, listener={"protocols": None},
                      top={"workers": 1, "access_log": {"format": "off"}})
    with H2Client(p.port) as c:  # warm up, pools included
        for i in range(3):
            assert len(c.get("/big/300000").body) == 300000
    time.sleep(0.2)
    rss0 = p.proc_status("VmRSS")
    raws = [RawH2(p.port, timeout=5) for _ in range(2)]
    try:
        for raw in raws:
            sids = _zero_window_streams(raw, ["/big/1048576"] * 100)
            raw.read_until(lambda f: sum(1 for s in sids if _status(raw.frames, s)) == len(sids), 10)
            assert all(_status(raw.frames, s) == "200" for s in sids), describe(raw.frames)
        time.sleep(0.5)
        rss1 = p.proc_status("VmRSS")
        per = (rss1 - rss0) / 200
        assert per < 64 * 1024, f"RSS +{(rss1 - rss0) / MiB:.1f} MiB for 200 held streams: {per / 1024:.0f} KiB each"
        # and they are live streams: opening the window lets the bytes flow
        raw = raws[0]
        raw.send(raw.window_update(1, 1 << 20) + raw.window_update(0, 1 << 20))
        got = sum(len(f.data) for f in raw.frames if isinstance(f, DataFrame) and f.stream_id == 1)  # the first byte
        deadline = time.monotonic() + 5
        while got < (1 << 20) and time.monotonic() < deadline:
            f = raw.read_frame(max(0.01, deadline - time.monotonic()))
            if isinstance(f, DataFrame) and f.stream_id == 1:
                got += len(f.data)
        assert got == 1 << 20, f"stream 1 got {got} of 1048576 bytes after its window opened"
    finally:
        for raw in raws:
            raw.close()


def test_zero_window_request_waits_for_its_window(proxy_factory, upstream):
    """A client that announces INITIAL_WINDOW_SIZE 0 could not take a byte of any answer: its
    requests are not forwarded (the app never sees them, so a zero-window flood cannot make the
    app write 1 MiB answers into socket buffers at once) until it opens the stream's window,
    by WINDOW_UPDATE or by a new SETTINGS; a stream left shut is reset (CANCEL) after the send
    timeout (`idle`, 1 s here), still without reaching the app, and the connection stays up."""
    p = proxy_factory(upstream=upstream, top={"workers": 1},
                      listener={"protocols": None, "timeouts": {"idle": "1s"}})
    with RawH2(p.port, timeout=5) as raw:
        paths = ["/zw/a", "/zw/b", "/zw/c", "/zw/d"]
        sids = _zero_window_streams(raw, paths, window=0)
        time.sleep(0.4)
        try:
            while raw.read_frame(0.05) is not None:
                pass
        except TimeoutError:
            pass
        assert not [r.target for r in upstream.records if r.target.startswith("/zw/")], \
            [r.target for r in upstream.records]
        assert not [f for f in raw.frames if isinstance(f, HeadersFrame)], describe(raw.frames)
        # a WINDOW_UPDATE for stream 1 lets stream 1 (only) go
        raw.send(raw.window_update(sids[0], 65535))
        raw.read_until(lambda f: _status(raw.frames, sids[0]), 5)
        assert _status(raw.frames, sids[0]) == "200", describe(raw.frames)
        assert [r.target for r in upstream.records if r.target.startswith("/zw/")] == ["/zw/a"]
        # a SETTINGS that opens every stream's window lets streams 3 and 5 go
        raw.send(raw.settings({4: 65535}))
        raw.read_until(lambda f: _status(raw.frames, sids[1]) and _status(raw.frames, sids[2]), 5)
        assert _status(raw.frames, sids[1]) == "200" and _status(raw.frames, sids[2]) == "200", describe(raw.frames)
    # a stream whose window stays shut: reset after the send timeout, the app never asked
    with RawH2(p.port, timeout=5) as raw:
        sids = _zero_window_streams(raw, ["/zw/held"], window=0)
        t0 = time.monotonic()
        got = raw.read_until(lambda f: isinstance(f, RstStreamFrame) and f.stream_id == sids[0], 5)
        after = time.monotonic() - t0
        rst = [f for f in got if isinstance(f, RstStreamFrame) and f.stream_id == sids[0]]
        assert rst and rst[0].error_code == ErrorCodes.CANCEL, describe(raw.frames)
        assert 0.8 <= after <= 3.0, f"reset {after:.2f} s after the request (send timeout 1 s)"
        assert not _status(raw.frames, sids[0]), describe(raw.frames)
        raw.send(raw.ping(b"stillup!"))
        got = raw.read_until(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags, 3)
        assert any(isinstance(f, PingFrame) and "ACK" in f.flags for f in got), describe(got)
    assert not [r.target for r in upstream.records if r.target == "/zw/held"]
    # the preface, the SETTINGS and the requests in one write (handled in the read that turns
    # the connection into HTTP/2): held back all the same, stream 1 included
    with RawH2(p.port, timeout=5) as raw:
        raw.send(raw.preface({4: 0}) + b"".join(raw.headers(s, raw.request_fields(f"/zw/one-write/{s}"))
                                                for s in (1, 3, 5)))
        time.sleep(0.4)
        try:
            while raw.read_frame(0.05) is not None:
                pass
        except TimeoutError:
            pass
        assert not [f for f in raw.frames if isinstance(f, HeadersFrame)], describe(raw.frames)
    assert not [r.target for r in upstream.records if r.target.startswith("/zw/one-write/")], \
        [r.target for r in upstream.records]


def test_settings_ping_flood_closed_within_budget(proxy_factory, upstream):
    """100 PINGs (or SETTINGS, the preface's included) are the per-connection budget: all are
    acknowledged. 1,000 more in one write: GOAWAY(ENHANCE_YOUR_CALM) and the close, counted as
    `flood`, without processing the rest (nghttp2's own limit alone let a flooder that does not
    read have ~100,000 frames processed before its ACKs piled up)."""
    p = proxy_factory(upstream=upstream, listener={"protocols": None}, top={"workers": 1})
    for kind in ("ping", "settings"):
        frame = RawH2.ping(b"floodpng") if kind == "ping" else RawH2.settings()
        ack_type = PingFrame if kind == "ping" else SettingsFrame
        with RawH2(p.port, timeout=5) as raw:
            # the preface's SETTINGS and 99 more: within the budget, all acknowledged
            raw.send(raw.preface() + frame * 99)
            raw.read_until(lambda f: sum(1 for g in raw.frames if isinstance(g, ack_type) and "ACK" in g.flags) >= 100
                           if kind == "settings" else
                           sum(1 for g in raw.frames if isinstance(g, ack_type) and "ACK" in g.flags) >= 99, 5)
            assert not [f for f in raw.frames if isinstance(f, GoAwayFrame)], describe(raw.frames[-3:])
            # then 1,000 in one write: a token or two came back meanwhile (10/s), no more
            raw.send(frame * 1000)
            frames, closed = raw.drain(5)
        assert closed, f"{kind}: still open after 1,000 more frames: {describe(frames[-5:])}"
        acks = [f for f in frames if isinstance(f, ack_type) and "ACK" in f.flags]
        assert len(acks) <= 10, f"{kind}: {len(acks)} ACKs beyond the budget of 100"
        goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert goaways and goaways[-1].error_code == ErrorCodes.ENHANCE_YOUR_CALM, describe(frames[-3:])
    v = wait_metric(p.admin_port, CLOSED_METRIC, 2, listener="inbound", reason="flood")
    assert v >= 2, f'{CLOSED_METRIC}{{reason="flood"}} is {v}'


def test_client_pinging_as_it_is_served_is_not_a_flood(proxy_factory, upstream):
    """A client that sends a PING with each of 250 requests (gRPC's BDP probes are of this kind)
    in well under the 15 s that the refill alone (10/s beyond the burst of 100) would need: each
    HEADERS and DATA frame the proxy sends earns a token back, so the connection stays up and
    every PING is answered."""
    p = proxy_factory(upstream=upstream, listener={"protocols": None}, top={"workers": 1})
    with RawH2(p.port, timeout=5) as raw:
        raw.send(raw.preface())
        raw.read_until(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags, 5)
        raw.send(raw.settings_ack() + raw.window_update(0, 1 << 24))  # room for all 250 answers
        t0 = time.monotonic()
        for i in range(250):
            sid = 1 + 2 * i
            raw.send(raw.ping(i.to_bytes(8, "big")) + raw.headers(sid, raw.request_fields(f"/pinging/{i}")))
            got = raw.read_until(lambda f: isinstance(f, (DataFrame, HeadersFrame)) and f.stream_id == sid
                                 and "END_STREAM" in f.flags, 5)
            assert got and not any(isinstance(f, GoAwayFrame) for f in got), f"request {i}: {describe(got)}"
        elapsed = time.monotonic() - t0
        acks = [f for f in raw.frames if isinstance(f, PingFrame) and "ACK" in f.flags]
        assert not [f for f in raw.frames if isinstance(f, GoAwayFrame)], describe(raw.frames[-5:])
    assert elapsed < 12, f"250 requests took {elapsed:.1f} s: the test no longer outruns the refill"
    assert len(acks) >= 249, f"{len(acks)} PING ACKs for 250 PINGs"


# ---------------------------------------------------------------------------------------------
# 10. Drain: GOAWAY, the in-flight stream finishes


def test_sigterm_sends_goaway_and_finishes_inflight_stream(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"protocols": None},
                      top={"drain": {"delay": "0s", "timeout": "10s"}})
    with H2Client(p.port, timeout=10) as c:
        assert c.get("/before-drain").status == 200
        sid = c.request("GET", "/slow/1500/h2-inflight")
        assert upstream.wait_for(lambda: any("/h2-inflight" in r.target for r in upstream.records), 3), \
            "the request never reached the upstream"
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        r = c.response(sid, timeout=10)
        assert c.goaway is not None, f"no GOAWAY on drain; frames {c.frames_in[-10:]}"
        assert all(g["error_code"] == 0 for g in c.goaways), f"drain GOAWAYs must be NO_ERROR: {c.goaways}"
        assert c.goaways[-1]["last_stream_id"] >= sid, c.goaways
        assert r.status == 200 and r.json()["target"] == "/slow/1500/h2-inflight", r
        closed = c.wait_closed(5)
    assert closed, "the drained h2 connection was not closed"
    rc = p.wait_exit(10)
    assert rc == 0, f"exit code {rc} after SIGTERM"
    assert time.monotonic() - t0 < 6
    lines = [json.loads(x) for x in p.stdout().splitlines() if x.strip()]
    assert any(e.get("path") == "/slow/1500/h2-inflight" and e.get("status") == 200 and e.get("proto") == "HTTP/2"
               for e in lines), lines
