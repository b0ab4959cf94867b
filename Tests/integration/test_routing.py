"""Routing (segment-aware prefixes, host wildcards, methods, headers, 404), rewrites, and path
normalization (SPEC §2 Routing)."""

import time

import pytest


def _route_config(a, b):
    routes = [
        {"name": "api", "match": {"path_prefix": "/api"}, "cluster": "a"},
        {"name": "wild", "match": {"path_prefix": "/", "host": "*.example.com"}, "cluster": "b"},
        {"name": "writes", "match": {"path_prefix": "/m", "methods": ["POST", "PUT"]}, "cluster": "a"},
        {"name": "canary", "match": {"path_prefix": "/h", "headers": {"x-env": "canary"}}, "cluster": "b"},
    ]
    clusters = [
        {"name": "a", "endpoints": [f"127.0.0.1:{a.port}"]},
        {"name": "b", "endpoints": [f"127.0.0.1:{b.port}"]},
    ]
    return routes, clusters


def _get(p, method, target, host="plain.test", headers=(), body=None):
    with p.conn() as c:
        c.request(method, target, host=host, headers=list(headers), body=body)
        return c.read_response()


def _assert_no_route(r):
    assert r.status == 404, r
    assert r.header("x-outrider-error") == "no_route", r
    assert (r.header("content-type") or "").startswith("text/plain"), r
    assert 0 < len(r.body) < 1024


CASES = [
    # (method, target, host, headers, expected: "a" | "b" | 404)
    ("GET", "/api", "plain.test", [], "a"),
    ("GET", "/api/", "plain.test", [], "a"),
    ("GET", "/api/users?id=1", "plain.test", [], "a"),
    ("GET", "/apix", "plain.test", [], 404),
    ("GET", "/apix", "foo.example.com", [], "b"),
    ("GET", "/anything", "foo.example.com:8443", [], "b"),
    ("GET", "/anything", "FOO.Example.COM", [], "b"),
    ("GET", "/anything", "example.com", [], 404),
    ("GET", "/anything", "fooexample.com", [], 404),
    ("POST", "/m", "plain.test", [], "a"),
    ("PUT", "/m/1", "plain.test", [], "a"),
    ("GET", "/m", "plain.test", [], 404),
    ("DELETE", "/m", "plain.test", [], 404),
    ("GET", "/h", "plain.test", [("X-Env", "canary")], "b"),
    ("GET", "/h/x", "plain.test", [("x-env", "prod")], 404),
    ("GET", "/h", "plain.test", [], 404),
    ("GET", "/hx", "plain.test", [("x-env", "canary")], 404),
]


@pytest.fixture(scope="module")
def routed(outrider_bin, loop_thread, tmp_path_factory):
    from conftest import start_proxy
    from upstream_server import RecordingUpstream

    a = loop_thread.run(RecordingUpstream("a").start())
    b = loop_thread.run(RecordingUpstream("b").start())
    routes, clusters = _route_config(a, b)
    p = start_proxy(outrider_bin, tmp_path_factory.mktemp("routed"), routes=routes, clusters=clusters)
    yield p, a, b
    problem = p.stop()
    loop_thread.run(a.stop())
    loop_thread.run(b.stop())
    assert not problem, f"outrider pid {p.pid}: {problem}"


@pytest.mark.parametrize("method,target,host,headers,expected", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}-{len(c[3])}" for c in CASES])
def test_route_matching(routed, method, target, host, headers, expected):
    p, a, b = routed
    assert p.alive(), "the proxy died earlier in this module"
    before = {"a": a.bytes_received, "b": b.bytes_received}
    n = {"a": len(a.complete), "b": len(b.complete)}
    body = b"x" if method in ("POST", "PUT") else None
    r = _get(p, method, target, host, headers, body)
    if expected == 404:
        _assert_no_route(r)
        time.sleep(0.2)
        assert a.bytes_received == before["a"] and b.bytes_received == before["b"], \
            "a 404 no_route request reached an upstream"
    else:
        assert r.status == 200, r
        assert r.json()["upstream"] == expected, r.json()
        other = "b" if expected == "a" else "a"
        assert {"a": a, "b": b}[other].bytes_received == before[other]
        up = {"a": a, "b": b}[expected]
        recs = up.wait_requests(n[expected] + 1)
        assert recs[-1].target == target
        assert recs[-1].method == method


def test_rewrite_path_prefix_and_host(proxy_factory, upstream):
    p = proxy_factory(
        upstream=upstream,
        routes=[
            {"name": "old", "match": {"path_prefix": "/old"}, "rewrite": {"path_prefix": "/new", "host": "app.internal"},
             "cluster": "app"},
            {"name": "default", "match": {"path_prefix": "/"}, "cluster": "app"},
        ],
    )
    r = _get(p, "GET", "/old/x/y?q=1", host="public.example:8080")
    assert r.status == 200, r
    rec = upstream.next_after(0)
    assert rec.target == "/new/x/y?q=1"
    assert rec.header_all("host") == ["app.internal"]
    assert rec.header_all("x-forwarded-host") == ["public.example:8080"], rec.headers

    r = _get(p, "GET", "/old", host="public.example")
    assert r.status == 200, r
    assert upstream.next_after(1).target == "/new"

    # segment-aware: /oldies is not under /old, goes to the default route untouched
    r = _get(p, "GET", "/oldies", host="public.example")
    assert r.status == 200
    rec = upstream.next_after(2)
    assert rec.target == "/oldies"
    assert rec.header_all("host") == ["public.example"]


def test_matching_sees_normalized_path(proxy_factory, make_upstream):
    a, b = make_upstream("a"), make_upstream("b")
    p = proxy_factory(
        routes=[
            {"name": "api", "match": {"path_prefix": "/api"}, "cluster": "a"},
            {"name": "rest", "match": {"path_prefix": "/"}, "cluster": "b"},
        ],
        clusters=[{"name": "a", "endpoints": [f"127.0.0.1:{a.port}"]},
                  {"name": "b", "endpoints": [f"127.0.0.1:{b.port}"]}],
    )
    r = _get(p, "GET", "/x/../api/y")
    assert r.status == 200 and r.json()["upstream"] == "a", r
    assert a.last().target == "/api/y"
    r = _get(p, "GET", "/%61pi/z")  # %61 = 'a', unreserved
    assert r.status == 200 and r.json()["upstream"] == "a", r
    assert a.find("/api/z").target == "/api/z"


NORMALIZE_OK = [
    ("/a/./b/../c", "/a/c"),
    ("//x", "/x"),
    ("/a//b///c", "/a/b/c"),
    ("/%7Euser", "/~user"),
    ("/%7euser", "/~user"),
    ("/a%2Db%5Fc%2Ed", "/a-b_c.d"),
    ("/a/b/.", "/a/b/"),
    ("/a/b/..", "/a/"),
    ("/a%20b", "/a%20b"),  # space is not unreserved: stays escaped
    ("/a/./b?x=/../&y=%2F", "/a/b?x=/../&y=%2F"),  # the query is not touched
]


@pytest.mark.parametrize("sent,expected", NORMALIZE_OK)
def test_path_normalization(module_proxy, module_upstream, sent, expected):
    assert module_proxy.alive(), "the proxy died earlier in this module"
    n = len(module_upstream.complete)
    r = _get(module_proxy, "GET", sent)
    assert r.status == 200, r
    recs = module_upstream.wait_requests(n + 1)
    assert len(recs) == n + 1
    assert recs[-1].target == expected


NORMALIZE_BAD = ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5cb", "/a\\b", "/../x", "/..", "/a/../../b", "/./../x"]


@pytest.mark.parametrize("sent", NORMALIZE_BAD)
def test_path_normalization_refused(module_proxy, module_upstream, sent):
    assert module_proxy.alive(), "the proxy died earlier in this module"
    before = module_upstream.bytes_received
    r = _get(module_proxy, "GET", sent)
    assert r.status == 400, r
    assert r.header("x-outrider-error") == "bad_request", r
    time.sleep(0.2)
    assert module_upstream.bytes_received == before, "a refused path reached the upstream"
