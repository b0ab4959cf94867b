"""Always-on headers (SPEC §6) and hop-by-hop handling (SPEC §3)."""

import re

import pytest

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def _one(p, upstream, target, headers=(), host="svc.example"):
    n = len(upstream.complete)
    with p.conn() as c:
        c.request("GET", target, host=host, headers=list(headers))
        r = c.read_response()
    assert r.status == 200, r
    recs = upstream.wait_requests(n + 1)
    rec = recs[-1]
    assert rec.target == target
    return r, rec


def test_forwarded_headers_added(proxy, upstream):
    r, rec = _one(proxy, upstream, "/fwd")
    assert rec.header_all("x-forwarded-for") == ["127.0.0.1"], rec.headers
    assert rec.header_all("x-forwarded-proto") == ["http"], rec.headers
    assert rec.header_all("x-forwarded-host") == ["svc.example"], rec.headers


def test_forwarded_headers_append_and_override(proxy, upstream):
    r, rec = _one(proxy, upstream, "/fwd2", headers=[
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
    ])
    xff = ", ".join(rec.header_all("x-forwarded-for"))
    assert re.fullmatch(r"203\.0\.113\.7,\s*127\.0\.0\.1", xff), rec.headers
    assert rec.header_all("x-forwarded-proto") == ["http"], rec.headers
    assert rec.header_all("x-forwarded-host") == ["svc.example"], rec.headers


def test_forwarded_headers_off(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, listener={"forwarded_headers": False})
    r, rec = _one(p, upstream, "/nofwd")
    names = rec.header_names()
    assert not {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"} & names, rec.headers
    # a client's own header passes unchanged: the proxy adds nothing
    r, rec = _one(p, upstream, "/nofwd2", headers=[("X-Forwarded-For", "198.51.100.1")])
    assert rec.header_all("x-forwarded-for") == ["198.51.100.1"], rec.headers
    # request id and traceparent are always on
    assert rec.header("x-request-id") and rec.header("traceparent")


def test_request_id_kept_and_echoed(proxy, upstream):
    r, rec = _one(proxy, upstream, "/rid", headers=[("X-Request-Id", "abc-123-client")])
    assert rec.header_all("x-request-id") == ["abc-123-client"], rec.headers
    assert r.header_all("x-request-id") == ["abc-123-client"], r.headers


def test_request_id_generated_and_echoed(proxy, upstream):
    r1, rec1 = _one(proxy, upstream, "/rid-gen1")
    r2, rec2 = _one(proxy, upstream, "/rid-gen2")
    for r, rec in ((r1, rec1), (r2, rec2)):
        ids = rec.header_all("x-request-id")
        assert len(ids) == 1 and UUID4.match(ids[0]), f"not a UUID v4: {ids}"
        assert r.header_all("x-request-id") == ids, r.headers
    assert rec1.header("x-request-id") != rec2.header("x-request-id")


def test_traceparent_propagated(proxy, upstream):
    sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r, rec = _one(proxy, upstream, "/trace", headers=[("traceparent", sent), ("tracestate", "vendor=abc")])
    got = rec.header_all("traceparent")
    assert len(got) == 1, rec.headers
    m = TRACEPARENT.match(got[0])
    assert m, f"invalid traceparent upstream: {got[0]!r}"
    assert m.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736", "trace-id must be kept"
    assert m.group(2) != "0" * 16
    assert m.group(3) == "01", "sampled flag must be kept"
    assert rec.header_all("tracestate") == ["vendor=abc"]


@pytest.mark.parametrize("sent", [None, "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"])
def test_traceparent_started(proxy, upstream, sent):
    hs = [("traceparent", sent)] if sent else []
    r, rec = _one(proxy, upstream, "/trace-start", headers=hs)
    got = rec.header_all("traceparent")
    assert len(got) == 1, rec.headers
    m = TRACEPARENT.match(got[0])
    assert m, f"invalid traceparent upstream: {got[0]!r}"
    assert m.group(1) != "0" * 32 and m.group(2) != "0" * 16


def test_hop_by_hop_request_headers_removed(proxy, upstream):
    r, rec = _one(proxy, upstream, "/hop", headers=[
        ("Connection", "keep-alive, X-Foo"),
        ("X-Foo", "secret"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers, deflate;q=0.5"),
        ("Upgrade", "websocket"),
        ("X-End-To-End", "kept"),
    ])
    names = rec.header_names()
    for h in ("x-foo", "keep-alive", "proxy-connection", "upgrade"):
        assert h not in names, f"hop-by-hop {h} forwarded: {rec.headers}"
    for v in rec.header_all("connection"):
        assert "x-foo" not in v.lower(), rec.headers
    te = [v.strip().lower() for v in ",".join(rec.header_all("te")).split(",") if v.strip()]
    assert te in ([], ["trailers"]), f"TE other than trailers forwarded: {rec.headers}"
    assert rec.header("x-end-to-end") == "kept"


def test_te_other_than_trailers_not_forwarded(proxy, upstream):
    r, rec = _one(proxy, upstream, "/hop-te", headers=[("TE", "deflate")])
    assert "te" not in rec.header_names(), rec.headers


def test_hop_by_hop_response_headers_removed(proxy, upstream):
    with proxy.conn() as c:
        c.request("GET", "/hop-response")
        r = c.read_response()
        assert r.status == 200, r
        names = r.header_names()
        assert "x-bar" not in names, f"header named by upstream Connection forwarded: {r.headers}"
        assert "keep-alive" not in names and "proxy-connection" not in names, r.headers
        for v in r.header_all("connection"):
            assert "x-bar" not in v.lower()
        assert r.header("x-kept") == "yes"
        assert r.body == b"hop\n"
        # still usable
        c.request("GET", "/after-hop")
        assert c.read_response().status == 200
