"""Rate limit filter (SPEC §5): a token bucket per key for the whole process (all workers), 429
`rate_limited` with Retry-After, RateLimit-* headers on every answer of the route, separate
buckets per key (client_ip, header:NAME, identity)."""

from __future__ import annotations

import threading
import time

from jwt_helper import API_KEY_PLAIN, API_KEY_SHA256, EXAMPLES
from wire import Conn

RL_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


def _routes(*filters):
    return [{"name": "limited", "match": {"path_prefix": "/"}, "cluster": "app", "filters": list(filters)}]


def _rl(rps, burst, key="client_ip"):
    return {"rate_limit": {"requests_per_second": rps, "burst": burst, "key": key}}


def _auth(anonymous=False):
    a = {"realm": "app", "api_key": {"header": "x-api-key", "keys_file": str(EXAMPLES / "api-keys")}}
    if anonymous:
        a["allow_anonymous"] = [{"path_prefix": "/healthz", "methods": ["GET"]}]
    return {"auth": a}


def _get(p, target, headers=(), method="GET"):
    with p.conn() as c:
        c.request(method, target, headers=list(headers))
        return c.read_response(method=method)


def _int_header(r, name):
    vals = r.header_all(name)
    assert len(vals) == 1, f"expected exactly one {name}: {r.headers}"
    assert vals[0].isdigit(), f"{name} is not a non-negative integer: {vals[0]!r}"
    return int(vals[0])


def _assert_rl_headers(r, limit=None):
    lim = _int_header(r, "ratelimit-limit")
    rem = _int_header(r, "ratelimit-remaining")
    _int_header(r, "ratelimit-reset")
    if limit is not None:
        assert lim == limit, r.headers
    assert rem <= lim, r.headers
    return rem


def _assert_429(r, upstream=None, target=None):
    assert r.status == 429, r
    assert r.header("x-outrider-error") == "rate_limited", r
    ra = r.header_all("retry-after")
    assert len(ra) == 1 and ra[0].isdigit() and int(ra[0]) >= 1, f"Retry-After {ra}"
    _assert_rl_headers(r)
    assert _int_header(r, "ratelimit-remaining") == 0, r.headers
    if upstream is not None:
        time.sleep(0.05)
        assert not [x for x in upstream.records if x.target == target], f"429'd {target} reached the app"
    return int(ra[0])


def test_rate_is_process_wide(proxy_factory, upstream):
    """2 workers, 16 connections hammering for ~3 s: 200s ≈ burst + rps × elapsed (±10%)."""
    rps, burst = 20, 10
    p = proxy_factory(upstream=upstream, routes=_routes(_rl(rps, burst)), top={"workers": 2,
                      "access_log": {"format": "off"}})
    duration = 3.0
    lock = threading.Lock()
    counts = {"ok": 0, "limited": 0, "other": []}
    stamps = []
    start = threading.Event()

    def hammer(i):
        c = Conn(p.port, timeout=5)
        start.wait(5)
        t_end = time.monotonic() + duration
        j = 0
        while time.monotonic() < t_end:
            j += 1
            s = time.monotonic()
            try:
                c.request("GET", f"/rl/{i}/{j}")
                r = c.read_response()
            except Exception as e:  # noqa: BLE001
                with lock:
                    counts["other"].append(repr(e))
                c.close()
                c = Conn(p.port, timeout=5)
                continue
            with lock:
                stamps.append(s)
                if r.status == 200:
                    counts["ok"] += 1
                    if not all(r.header(h) for h in RL_HEADERS):
                        counts["other"].append(f"200 without RateLimit-*: {r.headers}")
                elif r.status == 429:
                    counts["limited"] += 1
                    if not (r.header("retry-after") or "").isdigit() or r.header("x-outrider-error") != "rate_limited":
                        counts["other"].append(f"bad 429: {r.headers}")
                else:
                    counts["other"].append(r.status)
            if r.header("connection") == "close":
                c.close()
                c = Conn(p.port, timeout=5)
        c.close()

    threads = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(16)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    start.set()
    for t in threads:
        t.join(duration + 10)
    elapsed = max(stamps) - min(stamps)
    expected = burst + rps * elapsed
    ok = counts["ok"]
    print(f"{ok} passed, {counts['limited']} limited in {elapsed:.2f}s; expected {expected:.1f}")
    assert not counts["other"], counts["other"][:5]
    assert counts["limited"] > 5 * ok, f"the load did not exceed the limit: {counts}"
    assert abs(ok - expected) <= 0.1 * expected, (
        f"{ok} requests passed in {elapsed:.2f}s; expected {expected:.0f} ± 10% "
        f"(rps {rps}, burst {burst}; {counts['limited']} limited)")
    time.sleep(0.2)
    assert len(upstream.complete) == ok, f"app got {len(upstream.complete)} requests, clients saw {ok} 200s"


def test_burst_exact_across_workers(proxy_factory, upstream):
    """A near-zero refill: 60 simultaneous requests on 30 connections over 2 workers, exactly
    `burst` pass (the bucket is one, shared, updated atomically)."""
    burst = 20
    p = proxy_factory(upstream=upstream, routes=_routes(_rl("0.01", burst)), top={"workers": 2})
    conns = [Conn(p.port, timeout=5) for _ in range(30)]
    barrier = threading.Barrier(30)
    statuses = []
    lock = threading.Lock()

    def go(c, i):
        barrier.wait(5)
        for j in range(2):
            c.request("GET", f"/burst/{i}/{j}")
            r = c.read_response()
            with lock:
                statuses.append(r.status)

    threads = [threading.Thread(target=go, args=(c, i), daemon=True) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for c in conns:
        c.close()
    assert len(statuses) == 60, statuses
    assert statuses.count(200) == burst, f"{statuses.count(200)} passed, burst is {burst}: {sorted(statuses)}"
    assert statuses.count(429) == 60 - burst
    time.sleep(0.1)
    assert len(upstream.records) == burst


def test_429_answer_and_retry_after(proxy_factory, upstream):
    burst = 3
    p = proxy_factory(upstream=upstream, routes=_routes(_rl(1, burst)))
    remaining = []
    with p.conn() as c:
        for i in range(burst):
            c.request("GET", f"/ok/{i}")
            r = c.read_response()
            assert r.status == 200, r
            remaining.append(_assert_rl_headers(r, limit=burst))
            _int_header(r, "ratelimit-reset")
        assert remaining == [burst - 1 - i for i in range(burst)], remaining
        c.request("GET", "/limited/1")
        r = c.read_response()
        retry = _assert_429(r, upstream, "/limited/1")
        assert _int_header(r, "ratelimit-limit") == burst
        assert r.header("retry-after") and retry <= 2, r.headers
        # the keep-alive connection survives a 429
        c.request("GET", "/limited/2")
        r = c.read_response()
        _assert_429(r, upstream, "/limited/2")
    # honouring Retry-After gets a request through
    time.sleep(retry + 0.1)
    r = _get(p, "/after-retry")
    assert r.status == 200, r
    _assert_rl_headers(r, limit=burst)
    assert upstream.find("/after-retry")


def test_ratelimit_headers_on_every_answer(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, routes=_routes(_rl(100, 1000)))
    for target, method, status in [("/status/500", "GET", 500), ("/status/404", "GET", 404),
                                   ("/status/204", "GET", 204), ("/status/304", "GET", 304),
                                   ("/chunked", "GET", 200), ("/plain", "HEAD", 200),
                                   ("/status/302", "POST", 302)]:
        with p.conn() as c:
            c.request(method, target, body=b"x" if method == "POST" else None)
            r = c.read_response(method=method)
        assert r.status == status, (target, r)
        _assert_rl_headers(r, limit=1000)


def test_ratelimit_headers_on_proxy_errors(proxy_factory, upstream):
    """An answer the proxy makes after the limiter (502: the app refused the connection) is still
    an answer on the route: RateLimit-* present."""
    from wire import free_port
    dead = free_port()
    p = proxy_factory(routes=_routes(_rl(100, 1000)),
                      clusters=[{"name": "app", "endpoints": [f"127.0.0.1:{dead}"], "connect_timeout": "1s"}])
    r = _get(p, "/dead")
    assert r.status == 502 and r.header("x-outrider-error") == "upstream_connect", r
    _assert_rl_headers(r, limit=1000)


def test_ratelimit_before_auth_401_carries_headers(proxy_factory, upstream):
    """rate_limit first, then auth: the 401 carries RateLimit-*, and counts against the bucket."""
    p = proxy_factory(upstream=upstream, routes=_routes(_rl(1, 2), _auth()))
    for i in range(2):
        r = _get(p, f"/unauth/{i}")
        assert r.status == 401 and r.header("x-outrider-error") == "unauthenticated", r
        assert r.header_all("www-authenticate") == ['ApiKey realm="app", header="x-api-key"'], r.headers
        assert _assert_rl_headers(r, limit=2) == 1 - i
    r = _get(p, "/unauth/2", [("x-api-key", API_KEY_PLAIN[1])])
    _assert_429(r, upstream, "/unauth/2")
    time.sleep(0.05)
    assert not upstream.records, [x.target for x in upstream.records]


def test_ratelimit_before_bcrypt_auth_counts_once(proxy_factory, upstream):
    """rate_limit, then Basic auth whose bcrypt check pauses the chain: each request takes one token
    (the resumed chain does not pass the limiter again) and its answer carries RateLimit-*."""
    from jwt_helper import BASIC_BCRYPT, basic
    auth = {"auth": {"realm": "app", "basic": {"htpasswd": str(EXAMPLES / "htpasswd")}}}
    burst = 4
    p = proxy_factory(upstream=upstream, routes=_routes(_rl("0.01", burst), auth), top={"workers": 1})
    seen = []
    with p.conn(timeout=10) as c:
        for i, pw in enumerate([BASIC_BCRYPT[1], "wrong-1", BASIC_BCRYPT[1] + "x", BASIC_BCRYPT[1]]):
            c.request("GET", f"/bc/{i}", headers=[("Authorization", basic("alice", pw))])
            r = c.read_response()
            seen.append((r.status, _assert_rl_headers(r, limit=burst)))
        c.request("GET", "/bc/limited", headers=[("Authorization", basic(*BASIC_BCRYPT))])
        r = c.read_response()
        _assert_429(r, upstream, "/bc/limited")
    assert seen == [(200, 3), (401, 2), (401, 1), (200, 0)], seen


def test_header_key_separate_buckets(proxy_factory, upstream):
    burst = 3
    p = proxy_factory(upstream=upstream, routes=_routes(_rl("0.2", burst, "header:x-tenant")))

    def run(tag, headers):
        out = []
        for i in range(burst + 1):
            r = _get(p, f"/t/{tag}/{i}", headers)
            out.append(r.status)
            if r.status == 429:
                _assert_429(r, upstream, f"/t/{tag}/{i}")
            else:
                _assert_rl_headers(r, limit=burst)
        return out

    want = [200] * burst + [429]
    assert run("a", [("X-Tenant", "alpha")]) == want
    assert run("b", [("X-Tenant", "beta")]) == want
    assert run("a2", [("x-tenant", "alpha")]) == [429] * (burst + 1)
    # no header: the client's address is the key (its own bucket, not a way around the limit)
    assert run("none", []) == want
    assert run("none2", []) == [429] * (burst + 1)
    assert run("c", [("X-Tenant", "gamma")]) == want


def test_identity_key_separate_users(proxy_factory, upstream):
    burst = 2
    p = proxy_factory(upstream=upstream,
                      routes=_routes(_auth(anonymous=True), _rl("0.2", burst, "identity")))

    def run(tag, headers, n=burst + 1):
        return [_get(p, f"/u/{tag}/{i}", headers).status for i in range(n)]

    want = [200] * burst + [429]
    assert run("ci", [("x-api-key", API_KEY_PLAIN[1])]) == want
    # a spoofed identity header changes nothing: still ci-bot's (empty) bucket
    assert run("ci-spoof", [("x-api-key", API_KEY_PLAIN[1]), ("X-Auth-Request-User", "reporting")], 2) == [429, 429]
    assert run("rep", [("x-api-key", API_KEY_SHA256[1])]) == want
    # unauthenticated: 401 from auth (before the limiter), never 429
    assert run("anon", [], 4) == [401] * 4
    # anonymous paths are limited by client address, separately from the users
    assert [_get(p, f"/healthz/{i}").status for i in range(burst + 1)] == want
    time.sleep(0.05)
    assert sorted(x.target for x in upstream.records) == sorted(
        ["/u/ci/0", "/u/ci/1", "/u/rep/0", "/u/rep/1", "/healthz/0", "/healthz/1"])


def test_validate_rejects_identity_key_without_auth(outrider_bin, tmp_path):
    import subprocess

    from wire import free_port, to_yaml
    cfg = {
        "listeners": [{"name": "l", "address": f"127.0.0.1:{free_port()}", "routes": _routes(_rl(1, 1, "identity"))}],
        "clusters": [{"name": "app", "endpoints": ["127.0.0.1:1"]}],
    }
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg))
    r = subprocess.run([outrider_bin, "validate", "--config", str(path)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1, r
    assert str(path) + ":" in r.stderr and "identity" in r.stderr, r.stderr
