"""Resilience (SPEC §2 clusters, §7 retry and load balancing, §8 /clusters and metrics): retries
(conditions, idempotency, replay, per-try timeouts, backoff, budget), load-balancing policies
(round_robin, least_request, ring_hash, maglev), active health checks, outlier ejection, circuit
breaking, DNS re-resolution, and a chaos run (an endpoint killed and restarted under load).

The upstreams are `BehavingUpstream`s: recording upstreams whose behaviour (status, scripted
statuses, delay, reset, health status) is set per instance by the test while the proxy runs."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import statistics
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from upstream_server import MAX_HEAD, RecordingUpstream
from wire import Conn, dead_port, free_port, to_yaml

HEALTH = "/healthz"


# ---------------------------------------------------------------------------------------------
# A recording upstream with per-instance behaviour


class BehavingUpstream(RecordingUpstream):
    """A RecordingUpstream whose answers the test sets while it runs (attributes are read by the
    loop thread for every request):

      status         status of ordinary answers (200: RecordingUpstream's path behaviours, e.g. /echo)
      script         statuses answered first, one per request, before `status` applies
      delay          seconds to wait before answering (after the body was read)
      mode           None | "reset" (read the whole request, then RST) | "eof" (read it, then FIN)
                     | "cut" (a 200 head announcing 1000 bytes, 100 of them, then RST)
      health_status  status of GET /healthz;  health_delay: seconds before that answer

    Every answer carries `x-upstream-name`. Requests to /healthz are kept apart from `hits()`."""

    def __init__(self, name: str, host: str = "127.0.0.1"):
        super().__init__(name)
        self.host = host
        self.status = 200
        self.script: list[int] = []
        self.delay = 0.0
        self.mode: str | None = None
        self.health_status = 200
        self.health_delay = 0.0

    async def start(self, port: int = 0):
        self._server = await asyncio.start_server(self._handle, self.host, port, limit=MAX_HEAD,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def hits(self, prefix: str = "") -> list:
        """Requests other than health checks (whose head was read), optionally by path prefix."""
        return [r for r in list(self.records) if r.path != HEALTH and r.path.startswith(prefix)]

    def health_checks(self) -> list:
        return [r for r in list(self.records) if r.path == HEALTH]

    def _head(self, rec, status, headers, reason=None):
        return super()._head(rec, status, [("x-upstream-name", self.name), *headers], reason)

    async def _respond(self, rec, path, writer, sock, hasher) -> bool:
        if path == HEALTH:
            if self.health_delay:
                await asyncio.sleep(self.health_delay)
            body = b"health\n"
            writer.write(self._head(rec, self.health_status,
                                    [("content-type", "text/plain"), ("content-length", len(body))]) + body)
            await writer.drain()
            return True
        status = self.script.pop(0) if self.script else self.status
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if self.mode == "eof":
            writer.close()
            return False
        if self.mode == "cut":
            writer.write(self._head(rec, 200, [("content-type", "application/octet-stream"),
                                               ("content-length", 1000)]) + b"c" * 100)
            await writer.drain()
            await asyncio.sleep(0.1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if status != 200:
            body = f"status {status} from {self.name}\n".encode()
            writer.write(self._head(rec, status, [("content-type", "text/plain"), ("content-length", len(body))])
                         + self._body(rec, body))
            await writer.drain()
            return True
        return await super()._respond(rec, path, writer, sock, hasher)


@pytest.fixture
def ups(loop_thread):
    """ups(name, host="127.0.0.1", port=0, **behaviour) -> a started BehavingUpstream.
    At teardown every one is stopped and must have received only well-formed requests."""
    made: list[BehavingUpstream] = []

    def make(name, host="127.0.0.1", port=0, **behaviour):
        up = BehavingUpstream(name, host)
        for k, v in behaviour.items():
            assert hasattr(up, k), k
            setattr(up, k, v)
        loop_thread.run(up.start(port))
        made.append(up)
        return up

    yield make
    problems = []
    for up in made:
        problems += [f"{up.name}: {p}" for p in up.wellformedness_problems()]
        loop_thread.run(up.stop())
    assert not problems, f"the proxy sent malformed requests upstream: {problems}"


def kill(loop_thread, up: BehavingUpstream):
    """Close the listener and every connection (RST)."""
    loop_thread.run(up.stop())


def revive(loop_thread, up: BehavingUpstream):
    """Listen again on the same address."""
    deadline = time.monotonic() + 5
    while True:
        try:
            loop_thread.run(up.start(up.port))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Config, client and admin helpers


def cluster(name, endpoints, **kw) -> dict:
    c = {"name": name, "endpoints": [e if isinstance(e, str) else e.address for e in endpoints],
         "connect_timeout": "1s"}
    c.update(kw)
    return c


def route(name, prefix, cluster_name, **kw) -> dict:
    r = {"name": name, "match": {"path_prefix": prefix}, "cluster": cluster_name}
    r.update(kw)
    return r


def call(p, method="GET", target="/", headers=(), body=None, timeout=10.0):
    """One request on a fresh connection; the response gets an `elapsed` attribute (seconds)."""
    t0 = time.monotonic()
    with p.conn(timeout) as c:
        c.request(method, target, headers=list(headers), body=body)
        r = c.read_response(method, timeout=timeout)
    r.elapsed = time.monotonic() - t0
    return r


def concurrently(fn, n, timeout=20.0) -> list:
    """Run fn(i) for i in range(n) in n threads started together; results in order (an exception
    is returned as the result)."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        try:
            barrier.wait(5)
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            results[i] = e

    ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
    return results


def admin(p, path) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{p.admin_port}{path}", timeout=5) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as e:
        raise AssertionError(f"admin {path}: {e.code} {e.read()[:300]!r}")


def metric(p, sample_name, **labels) -> float:
    """Sum of the samples named sample_name (e.g. outrider_retries_total) whose labels include
    `labels`."""
    total = 0.0
    for fam in text_string_to_metric_families(admin(p, "/metrics")):
        for s in fam.samples:
            if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def metric_samples(p, sample_name) -> list:
    return [(s.labels, s.value) for fam in text_string_to_metric_families(admin(p, "/metrics"))
            for s in fam.samples if s.name == sample_name]


def endpoints(p, cluster_name) -> dict:
    """{address: endpoint object} of one cluster in GET /clusters."""
    doc = json.loads(admin(p, "/clusters"))
    for c in doc["clusters"]:
        if c["name"] == cluster_name:
            return {e["address"]: e for e in c["endpoints"]}
    raise AssertionError(f"cluster {cluster_name!r} not in /clusters: {doc}")


def wait_until(pred, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def logs(p, prefix, n, timeout=5.0) -> list:
    """The access log entries whose path starts with prefix, once there are at least n."""
    wait_until(lambda: len([e for e in p.access_log() if str(e.get("path", "")).startswith(prefix)]) >= n,
               timeout, 0.05)
    return [e for e in p.access_log() if str(e.get("path", "")).startswith(prefix)]


def assert_local_error(r, status, reason):
    assert r.status == status, r
    assert r.header("x-outrider-error") == reason, r


# ---------------------------------------------------------------------------------------------
# 1. Default retry on connect failure


def test_connect_failure_to_one_of_two_endpoints_is_retried_by_default(proxy_factory, ups):
    live = ups("live")
    dead = f"127.0.0.1:{dead_port()}"  # nothing listens there
    p = proxy_factory(clusters=[cluster("app", [dead, live])])
    n = 20
    for i in range(n):
        r = call(p, target=f"/cf/{i}")
        assert r.status == 200, f"request {i}: {r}"
        assert r.header("x-upstream-name") == "live", r
    assert len(live.hits("/cf/")) == n
    failures = metric(p, "outrider_upstream_connect_failures_total", cluster="app", endpoint=dead)
    entries = logs(p, "/cf/", n)
    attempts = [e["attempts"] for e in entries]
    assert len(attempts) == n and set(attempts) <= {1, 2}, attempts
    retried = attempts.count(2)
    assert retried >= 1, f"round robin over two endpoints never picked the dead one first: {attempts}"
    assert failures == retried, (
        f"outrider_upstream_connect_failures_total{{endpoint={dead}}} = {failures}, "
        f"but {retried} requests needed a second try")
    assert metric(p, "outrider_retries_total", cluster="app", reason="connect_failure") == retried
    assert metric(p, "outrider_upstream_connect_failures_total", endpoint=live.address) == 0


# ---------------------------------------------------------------------------------------------
# 2. Retry on gateway errors; what each `on` condition covers


def test_get_retried_on_503(proxy_factory, ups):
    flaky = ups("flaky", script=[503])              # 503 on its first hit, then 200
    a, b = ups("a", status=503), ups("b")           # a always 503
    x, y = ups("x", status=503), ups("y", status=503)
    retry = {"attempts": 2, "on": ["gateway_error"]}
    p = proxy_factory(
        routes=[route("flaky", "/flaky", "flaky", retry=retry),
                route("pair", "/pair", "pair", retry=retry),
                route("all503", "/all503", "all503", retry=retry)],
        clusters=[cluster("flaky", [flaky]), cluster("pair", [a, b]), cluster("all503", [x, y])],
    )
    # one endpoint: the retry goes to the same one (no other is available)
    r = call(p, target="/flaky/1")
    assert r.status == 200, r
    assert len(flaky.hits()) == 2
    (e,) = logs(p, "/flaky/", 1)
    assert e["attempts"] == 2 and e["status"] == 200, e

    # two endpoints, one always 503: every client sees 200 from b
    # (on one keep-alive connection: a dropped 503 must not leave bytes behind)
    n = 10
    with p.conn() as c:
        for i in range(n):
            c.request("GET", f"/pair/{i}")
            r = c.read_response()
            assert r.status == 200 and r.header("x-upstream-name") == "b", f"request {i}: {r}"
            assert r.json()["target"] == f"/pair/{i}", r
    assert len(b.hits()) == n
    assert len(a.hits()) >= 1, "round robin never picked the 503 endpoint first"
    entries = logs(p, "/pair/", n)
    assert sorted(e["attempts"] for e in entries).count(2) == len(a.hits()), \
        (len(a.hits()), [e["attempts"] for e in entries])

    # tries run out: the last upstream 503 is relayed as is, and each try went to another endpoint
    r = call(p, target="/all503/z")
    assert r.status == 503, r
    assert r.header("x-outrider-error") is None, f"an upstream 503 is not a proxy error: {r}"
    assert r.body in (b"status 503 from x\n", b"status 503 from y\n"), r
    assert (len(x.hits()), len(y.hits())) == (1, 1), "the retry did not go to the endpoint not yet tried"
    (e,) = logs(p, "/all503/", 1)
    assert e["attempts"] == 2 and e["status"] == 503, e

    assert metric(p, "outrider_retries_total", cluster="flaky", reason="gateway_error") == 1
    assert metric(p, "outrider_retries_total", cluster="pair", reason="gateway_error") == len(a.hits())
    assert metric(p, "outrider_retries_total", cluster="all503", reason="gateway_error") == 1


RETRY_CASES = [
    # (route prefix, upstream status on the first try, retried?)
    ("/gw", 502, True), ("/gw", 503, True), ("/gw", 504, True), ("/gw", 500, False), ("/gw", 409, False),
    ("/5xx", 500, True), ("/5xx", 503, True), ("/5xx", 501, True), ("/5xx", 404, False),
    ("/codes", 409, True), ("/codes", 503, False), ("/codes", 500, False),
    ("/dflt", 503, True), ("/dflt", 500, False),           # `retry:` without `on`
    ("/none", 503, False), ("/none", 502, False),          # no `retry`: connect failures only
]


def test_retry_conditions(proxy_factory, ups):
    u = ups("u")
    p = proxy_factory(
        routes=[route("gw", "/gw", "app", retry={"attempts": 2, "on": ["gateway_error"]}),
                route("5xx", "/5xx", "app", retry={"attempts": 2, "on": ["5xx"]}),
                route("codes", "/codes", "app", retry={"attempts": 2, "on": ["retriable_status_codes"],
                                                       "retriable_status_codes": [409]}),
                route("dflt", "/dflt", "app", retry={"attempts": 2}),
                route("none", "/none", "app")],
        clusters=[cluster("app", [u])],
    )
    problems = []
    for prefix, status, retried in RETRY_CASES:
        u.script = [status]
        before = len(u.hits())
        r = call(p, target=f"{prefix}/{status}")
        got_hits = len(u.hits()) - before
        want = (200, 2) if retried else (status, 1)
        if (r.status, got_hits) != want:
            problems.append(f"GET {prefix}/{status}: first try {status} -> client {r.status}, "
                            f"{got_hits} upstream tries; expected {want[0]} after {want[1]}")
        u.script = []
    assert not problems, "\n".join(problems)
    assert metric(p, "outrider_retries_total", cluster="app", reason="gateway_error") >= 4
    assert metric(p, "outrider_retries_total", cluster="app", reason="retriable_status_codes") == 1


# ---------------------------------------------------------------------------------------------
# 3. Non-idempotent methods


def test_post_not_retried_after_503(proxy_factory, ups):
    bad = ups("bad", status=503)
    bad2, good = ups("bad2", status=503), ups("good")
    good2 = ups("good2")
    dead = f"127.0.0.1:{dead_port()}"
    retry = {"attempts": 3, "on": ["gateway_error", "5xx"]}
    p = proxy_factory(
        routes=[route("one", "/one", "one", retry=retry),
                route("pair", "/pair", "pair", retry=retry),
                route("deadpair", "/deadpair", "deadpair",
                      retry={"attempts": 3, "on": ["connect_failure", "gateway_error", "5xx"]})],
        clusters=[cluster("one", [bad]), cluster("pair", [bad2, good]), cluster("deadpair", [dead, good2])],
    )
    for i, method in enumerate(["POST", "PATCH"]):
        r = call(p, method, f"/one/{method}", body=b"payload=1", headers=[("content-type", "text/plain")])
        assert r.status == 503 and r.header("x-outrider-error") is None, r
        assert len(bad.hits()) == i + 1, f"{method} was retried after a 503: the endpoint got {len(bad.hits())} requests"
    # the same route does retry a GET (control)
    r = call(p, "GET", "/one/get")
    assert r.status == 503
    assert len(bad.hits("/one/get")) == 3, "GET control: expected 3 tries"
    e = [e for e in logs(p, "/one/", 3) if e["method"] == "POST"][0]
    assert e["attempts"] == 1, e

    # two endpoints: a POST that met the 503 endpoint sees its 503
    statuses = [call(p, "POST", f"/pair/{i}", body=b"x" * 10).status for i in range(6)]
    assert len(bad2.hits()) >= 1, "round robin never picked the 503 endpoint"
    assert statuses.count(503) == len(bad2.hits()), (statuses, len(bad2.hits()))
    assert statuses.count(200) == len(good.hits()) and len(statuses) == 6, statuses

    # ... but a POST *is* retried on connect failure (nothing was sent)
    for i in range(6):
        r = call(p, "POST", f"/deadpair/{i}", body=b"y" * 10)
        assert r.status == 200 and r.header("x-upstream-name") == "good2", f"POST {i}: {r}"
    assert [r.body for r in good2.hits()] == [b"y" * 10] * 6


# ---------------------------------------------------------------------------------------------
# 4. Replay of a buffered body after a reset, and no replay of a body over max_replay_body


def test_put_body_replayed_after_reset_unless_over_max_replay_body(proxy_factory, ups):
    a = ups("a", mode="reset")          # reads the whole request, then RST
    b = ups("b")                        # /echo answers the body
    retry = {"attempts": 2, "on": ["reset"], "max_replay_body": "1KiB"}
    p = proxy_factory(
        routes=[route("pair", "/pair", "pair", retry=retry), route("only", "/only", "only", retry=retry)],
        clusters=[cluster("pair", [a, b]), cluster("only", [a])],
    )
    rng = random.Random(7)
    bodies = []
    for i in range(6):
        body = bytes(rng.randrange(256) for _ in range(800))
        bodies.append(body)
        r = call(p, "PUT", f"/pair/echo/{i}", body=body, headers=[("content-type", "application/octet-stream")])
        assert r.status == 200, f"PUT {i}: {r}"
        assert r.header("x-upstream-name") == "b", r
        assert r.body == body, f"PUT {i}: the echo is not the body sent ({len(r.body)} of {len(body)} bytes)"
    a_pair = a.hits("/pair/")
    assert len(a_pair) >= 1, "round robin never picked the resetting endpoint first"
    for rec in a_pair:  # the first try carried the whole body too
        i = int(rec.path.rsplit("/", 1)[1])
        assert rec.complete and rec.body == bodies[i], rec.target
    assert len(b.hits("/pair/")) == 6
    entries = logs(p, "/pair/", 6)
    assert [e["attempts"] for e in entries].count(2) == len(a_pair)

    # one endpoint that resets: a small PUT is replayed (2 tries, then 502)...
    r = call(p, "PUT", "/only/small", body=b"s" * 800)
    assert_local_error(r, 502, "upstream_reset")
    assert len(a.hits("/only/small")) == 2, "a PUT within max_replay_body was not replayed"
    assert all(rec.body == b"s" * 800 for rec in a.hits("/only/small"))
    # ...a chunked one too, re-framed with the whole body each time
    with p.conn() as c:
        c.request("PUT", "/only/chunked", headers=[("Transfer-Encoding", "chunked")])
        c.send(b"5\r\nhello\r\n7\r\n chunks\r\n0\r\n\r\n")
        r = c.read_response()
    assert_local_error(r, 502, "upstream_reset")
    recs = a.hits("/only/chunked")
    assert len(recs) == 2, "a chunked PUT within max_replay_body was not replayed"
    assert all(rec.complete and rec.body == b"hello chunks" for rec in recs), [rec.body for rec in recs]
    # ...a 200 KiB PUT (max_replay_body 1KiB) is not
    big = bytes(rng.randrange(256) for _ in range(200 * 1024))
    r = call(p, "PUT", "/only/big", body=big, timeout=15)
    assert_local_error(r, 502, "upstream_reset")
    assert len(a.hits("/only/big")) == 1, "a PUT whose body exceeded max_replay_body was retried"
    e = [e for e in logs(p, "/only/big", 1)][0]
    assert e["attempts"] == 1, e

    # a POST is not replayed after a reset either (non-idempotent)
    statuses = [call(p, "POST", f"/pair/echo/post{i}", body=b"p" * 100).status for i in range(6)]
    a_post = [rec for rec in a.hits("/pair/echo/post")]
    assert len(a_post) >= 1
    assert statuses.count(502) == len(a_post), (statuses, len(a_post))


def test_no_retry_once_the_response_began(proxy_factory, ups):
    """SPEC §7: a request whose response has begun reaching the client is never retried."""
    cut = ups("cut", mode="cut")
    p = proxy_factory(
        routes=[route("cut", "/", "app", retry={"attempts": 3, "on": ["reset", "gateway_error", "5xx"]})],
        clusters=[cluster("app", [cut])],
    )
    with p.conn() as c:
        c.request("GET", "/cut/1")
        head = c.read_head()
        assert head.status == 200 and head.header("content-length") == "1000", head
        closed, got = c.wait_closed(5)
    assert closed, "the client connection stayed open after the upstream reset inside the body"
    assert len(got) < 1000 and not got.strip(b"c"), f"{len(got)} bytes after the head: {got[:80]!r}"
    assert len(cut.hits()) == 1, f"the request was retried after its response began: {len(cut.hits())} tries"


# ---------------------------------------------------------------------------------------------
# 5. Per-try timeout and the route timeout over all tries


def test_per_try_timeout_and_route_timeout(proxy_factory, ups):
    slow, fast = ups("slow", delay=2.0), ups("fast")
    s1, s2 = ups("s1", delay=3.0), ups("s2", delay=3.0)
    p = proxy_factory(
        routes=[route("pt", "/pt", "pt", timeout="5s",
                      retry={"attempts": 2, "on": ["gateway_error"], "per_try_timeout": "200ms"}),
                route("bothroute", "/both-route", "both", timeout="1s",
                      retry={"attempts": 5, "on": ["gateway_error"], "per_try_timeout": "400ms",
                             "backoff": {"base": "10ms", "max": "20ms"}}),
                route("bothtries", "/both-tries", "both", timeout="5s",
                      retry={"attempts": 2, "on": ["reset"], "per_try_timeout": "200ms"})],
        clusters=[cluster("pt", [slow, fast]), cluster("both", [s1, s2])],
    )
    for i in range(6):
        r = call(p, target=f"/pt/{i}")
        assert r.status == 200 and r.header("x-upstream-name") == "fast", f"request {i}: {r}"
        assert r.elapsed < 1.2, f"request {i} took {r.elapsed:.2f}s (per_try_timeout 200ms, slow endpoint 2s)"
    n_slow = len(slow.hits("/pt/"))
    assert n_slow >= 1, "round robin never picked the slow endpoint first"
    assert metric(p, "outrider_retries_total", cluster="pt", reason="per_try_timeout") == n_slow
    assert [e["attempts"] for e in logs(p, "/pt/", 6)].count(2) == n_slow

    # both slow, route timeout 1s before the 5 tries of 400ms ran out: 504 at the route timeout
    r = call(p, target="/both-route/x")
    assert_local_error(r, 504, "upstream_timeout")
    assert 0.9 <= r.elapsed <= 1.8, f"504 after {r.elapsed:.2f}s with a route timeout of 1s"
    tries = len(s1.hits("/both-route")) + len(s2.hits("/both-route"))
    assert 2 <= tries <= 3, f"{tries} tries of 400ms within a 1s route timeout"

    # both slow, tries run out first (2 × 200ms): 504 upstream_timeout at ~0.4s
    r = call(p, target="/both-tries/x")
    assert_local_error(r, 504, "upstream_timeout")
    assert 0.35 <= r.elapsed <= 1.2, f"504 after {r.elapsed:.2f}s with 2 tries of 200ms"
    assert (len(s1.hits("/both-tries")), len(s2.hits("/both-tries"))) == (1, 1)
    (e,) = logs(p, "/both-tries", 1)
    assert e["attempts"] == 2 and e["status"] == 504, e


# ---------------------------------------------------------------------------------------------
# 6. Backoff (full jitter) visible in timing


def test_backoff_full_jitter_in_timing(proxy_factory, ups):
    ok = ups("ok")
    e1, e2 = ups("e1", status=503), ups("e2", status=503)
    p = proxy_factory(
        routes=[route("fast", "/fast", "fast"),
                route("bo", "/bo", "bo", retry={"attempts": 4, "on": ["gateway_error"],
                                                "backoff": {"base": "100ms", "max": "400ms"},
                                                "budget": {"ratio": 1.0, "min_per_second": 100}})],
        clusters=[cluster("fast", [ok]), cluster("bo", [e1, e2])],
    )
    n = 20
    call(p, target="/fast/warm")
    base = [call(p, target=f"/fast/{i}").elapsed for i in range(n)]
    durations = []
    for i in range(n):
        r = call(p, target=f"/bo/{i}")
        assert r.status == 503 and r.header("x-outrider-error") is None, r
        durations.append(r.elapsed)
    baseline = statistics.mean(base)
    extra = [d - baseline for d in durations]
    mean_extra = statistics.mean(extra)
    print(f"backoff: baseline {baseline * 1000:.1f} ms, retried requests mean {statistics.mean(durations) * 1000:.0f} ms "
          f"(min {min(durations) * 1000:.0f}, max {max(durations) * 1000:.0f}, "
          f"stdev {statistics.pstdev(durations) * 1000:.0f}); expected extra ≈ 350 ms")
    assert len(e1.hits()) + len(e2.hits()) == 4 * n
    assert all(e["attempts"] == 4 for e in logs(p, "/bo/", n))
    caps = 0.1 + 0.2 + 0.4
    assert max(durations) < caps + 0.6, f"a request took {max(durations):.3f}s; backoff caps sum to {caps}s"
    assert 0.1 < mean_extra < 0.65, f"mean extra latency {mean_extra * 1000:.0f} ms (full jitter: ≈ 350 ms)"
    assert statistics.pstdev(durations) > 0.03, f"no jitter: {durations}"


# ---------------------------------------------------------------------------------------------
# 7. Retry budget


def test_retry_budget_stops_a_retry_storm(proxy_factory, ups):
    e1, e2 = ups("e1", status=503), ups("e2", status=503)
    p = proxy_factory(
        routes=[route("storm", "/", "storm",
                      retry={"attempts": 5, "on": ["gateway_error"], "backoff": {"base": "1ms", "max": "2ms"},
                             "budget": {"ratio": 0.2, "min_per_second": 0}})],
        clusters=[cluster("storm", [e1, e2])],
    )
    n = 200

    def client(k):
        with p.conn(10) as c:
            for i in range(n // 4):
                c.request("GET", f"/storm/{k}/{i}")
                r = c.read_response()
                assert r.status == 503, r
        return True

    assert concurrently(client, 4, 60) == [True] * 4
    hits = len(e1.hits()) + len(e2.hits())
    retries = metric(p, "outrider_retries_total", cluster="storm")
    exhausted = metric(p, "outrider_retry_budget_exhausted_total", cluster="storm")
    print(f"budget: {n} requests -> {hits} upstream tries, retries_total {retries}, exhausted {exhausted}")
    assert hits > n, "no retry at all within a 20% budget"
    assert hits <= n + 0.2 * n + 6, f"{hits} upstream tries for {n} requests with a 20% retry budget"
    assert retries == hits - n
    assert exhausted > 0


# ---------------------------------------------------------------------------------------------
# 8. Round robin


def test_round_robin_smooth_and_even(proxy_factory, ups):
    eps = [ups(f"e{i}") for i in range(3)]
    p = proxy_factory(clusters=[cluster("app", eps, lb={"policy": "round_robin"})])
    # one keep-alive connection (one worker): every 3 consecutive requests meet the 3 endpoints
    with p.conn() as c:
        seq = []
        for i in range(30):
            c.request("GET", f"/seq/{i}")
            seq.append(c.read_response().header("x-upstream-name"))
    for i in range(0, 30, 3):
        assert sorted(seq[i:i + 3]) == ["e0", "e1", "e2"], f"not smooth: {seq}"
    before = {u.name: len(u.hits()) for u in eps}
    for i in range(300):
        assert call(p, target=f"/rr/{i}").status == 200
    counts = {u.name: len(u.hits()) - before[u.name] for u in eps}
    print(f"round robin over 300 new connections: {counts}")
    assert all(90 <= v <= 110 for v in counts.values()), counts


def test_random_policy_spreads(proxy_factory, ups):
    eps = [ups(f"e{i}") for i in range(3)]
    p = proxy_factory(clusters=[cluster("app", eps, lb={"policy": "random"})])
    with p.conn() as c:
        seq = []
        for i in range(300):
            c.request("GET", f"/rnd/{i}")
            seq.append(c.read_response().header("x-upstream-name"))
    counts = {u.name: seq.count(u.name) for u in eps}
    print(f"random over 300 requests: {counts}")
    assert all(60 <= v <= 140 for v in counts.values()), counts
    triples = [tuple(sorted(seq[i:i + 3])) for i in range(0, 300, 3)]
    assert sum(t == ("e0", "e1", "e2") for t in triples) < 60, "random looks like round robin"


# ---------------------------------------------------------------------------------------------
# 9. Consistent hashing


HASH_KEYS = {"header": "header:x-user", "cookie": "cookie:sid", "client_ip": "client_ip"}


def _key_headers(kind, user) -> list:
    if kind == "header":
        return [("x-user", user)]
    if kind == "cookie":
        return [("cookie", f"theme=dark; sid={user}; lang=en")]
    return []


def _users(kind, n=400) -> list:
    if kind == "client_ip":  # distinct loopback source addresses
        return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(n)]
    return [f"user-{i:04d}-{random.Random(i).randrange(1 << 30):x}" for i in range(n)]


def _src_conn(p, src, timeout=10.0) -> Conn:
    """A client connection from the source address src (for the client_ip key)."""
    c = Conn.__new__(Conn)
    c.sock = socket.create_connection(("127.0.0.1", p.port), timeout=timeout, source_address=(src, 0))
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.timeout, c.buf, c.eof, c.reset = timeout, b"", False, False
    return c


def _map_users(p, kind, users, conns=4) -> dict:
    """user -> endpoint name; header/cookie keys over `conns` keep-alive connections, client_ip
    keys over one connection per source address."""
    out = {}
    if kind == "client_ip":
        for u in users:
            with _src_conn(p, u) as c:
                c.request("GET", f"/h/{u}")
                r = c.read_response()
            assert r.status == 200, r
            out[u] = r.header("x-upstream-name")
        return out
    cs = [p.conn(10) for _ in range(conns)]
    try:
        for i, u in enumerate(users):
            c = cs[i % conns]
            c.request("GET", f"/h/{u}", headers=_key_headers(kind, u))
            r = c.read_response()
            assert r.status == 200, r
            out[u] = r.header("x-upstream-name")
    finally:
        for c in cs:
            c.close()
    return out


def _fresh(p, kind, u):
    if kind == "client_ip":
        return _map_users(p, kind, [u])[u]
    return call(p, target=f"/h/{u}", headers=_key_headers(kind, u)).header("x-upstream-name")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["header", "cookie", "client_ip"])
@pytest.mark.parametrize("policy,moved_range,survivor_moved_max", [
    ("ring_hash", (0.10, 0.45), 0.0),
    ("maglev", (0.10, 0.50), 0.15),
], ids=["ring_hash", "maglev"])
def test_consistent_hashing_sticks_and_remaps_minimally(proxy_factory, ups, policy, moved_range, survivor_moved_max,
                                                        kind):
    eps = [ups(f"e{i}") for i in range(4)]
    lb = {"policy": policy, "key": HASH_KEYS[kind]}
    p4 = proxy_factory(clusters=[cluster("app", eps, lb=lb)])
    users = _users(kind)
    # the same key three times in a row on one connection
    u0 = users[0]
    with (_src_conn(p4, u0) if kind == "client_ip" else p4.conn()) as c:
        seq = []
        for i in range(3):
            c.request("GET", f"/h/{u0}/{i}", headers=_key_headers(kind, u0))
            seq.append(c.read_response().header("x-upstream-name"))
    assert len(set(seq)) == 1, f"{policy} {HASH_KEYS[kind]}: one key, one connection, endpoints {seq}"
    first = _map_users(p4, kind, users)
    shuffled = list(users)
    random.Random(1).shuffle(shuffled)
    second = _map_users(p4, kind, shuffled, conns=7)
    unstable = [u for u in users if first[u] != second[u]]
    assert not unstable, (f"{policy} {HASH_KEYS[kind]}: {len(unstable)} of {len(users)} keys changed endpoint "
                          f"between two passes: {[(u, first[u], second[u]) for u in unstable[:5]]}")
    # a few more on fresh connections (each may land on another worker)
    for u in users[:20]:
        assert _fresh(p4, kind, u) == first[u], u
    per = {e.name: sum(1 for u in users if first[u] == e.name) for e in eps}
    assert all(v >= 40 for v in per.values()), f"{policy}: keys per endpoint with 4 endpoints: {per}"
    # no key: still answered
    assert call(p4, target="/h/nokey").status == 200

    # the same config without e1
    removed = eps[1]
    p3 = proxy_factory(clusters=[cluster("app", [e for e in eps if e is not removed], lb=lb)])
    after = _map_users(p3, kind, users)
    moved = [u for u in users if first[u] != after[u]]
    on_removed = [u for u in users if first[u] == removed.name]
    survivors_moved = [u for u in moved if first[u] != removed.name]
    frac = len(moved) / len(users)
    print(f"{policy} {HASH_KEYS[kind]}: keys per endpoint {per}; removing {removed.name} moved "
          f"{len(moved)}/{len(users)} = {frac:.3f} (on the removed endpoint: {len(on_removed)}; "
          f"others moved: {len(survivors_moved)})")
    assert all(after[u] != removed.name for u in users)
    assert set(on_removed) <= set(moved)
    assert moved_range[0] <= frac <= moved_range[1], f"{policy}: moved fraction {frac:.3f} not in {moved_range}"
    assert len(survivors_moved) <= survivor_moved_max * len(users), (
        f"{policy}: {len(survivors_moved)} keys that were not on the removed endpoint moved: "
        f"{[(u, first[u], after[u]) for u in survivors_moved[:5]]}")


def _validate(outrider_bin, tmp_path, lb) -> subprocess.CompletedProcess:
    cfg = {
        "admin": {"address": f"127.0.0.1:{free_port()}"},
        "listeners": [{"name": "inbound", "address": f"127.0.0.1:{free_port()}",
                       "routes": [{"match": {"path_prefix": "/"}, "cluster": "app"}]}],
        "clusters": [{"name": "app", "endpoints": ["127.0.0.1:8080", "127.0.0.1:8081"], "lb": lb}],
    }
    path = tmp_path / f"lb-{lb['policy']}-{'key' if 'key' in lb else 'nokey'}.yaml"
    path.write_text(to_yaml(cfg))
    return subprocess.run([outrider_bin, "validate", "--config", str(path)], capture_output=True, text=True,
                          timeout=10, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("lb,ok", [
    ({"policy": "ring_hash", "key": "header:x-user"}, True),
    ({"policy": "maglev", "key": "cookie:sid"}, True),
    ({"policy": "ring_hash", "key": "client_ip"}, True),
    ({"policy": "ring_hash"}, False),
    ({"policy": "maglev"}, False),
    ({"policy": "round_robin", "key": "header:x-user"}, False),
    ({"policy": "least_request", "key": "client_ip"}, False),
    ({"policy": "random"}, True),
    ({"policy": "least_request"}, True),
], ids=["ring_hash-header", "maglev-cookie", "ring_hash-client_ip", "ring_hash-no-key", "maglev-no-key",
        "round_robin-key", "least_request-key", "random", "least_request"])
def test_hash_key_required_exactly_for_hashing_policies(outrider_bin, tmp_path, lb, ok):
    r = _validate(outrider_bin, tmp_path, lb)
    if ok:
        assert r.returncode == 0, f"{lb}: rc={r.returncode} stderr={r.stderr}"
    else:
        assert r.returncode == 1, f"{lb} should be refused: rc={r.returncode} stderr={r.stderr}"
        assert ":" in r.stderr and "key" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------
# 10. Least request


def test_least_request_avoids_the_slow_endpoint(proxy_factory, ups):
    slow = ups("slow", delay=0.3)
    f1, f2 = ups("f1", delay=0.01), ups("f2", delay=0.01)
    p = proxy_factory(clusters=[cluster("app", [slow, f1, f2], lb={"policy": "least_request"})])
    stop_at = time.monotonic() + 3.0

    def client(k):
        n = 0
        with p.conn(10) as c:
            while time.monotonic() < stop_at:
                c.request("GET", f"/lr/{k}/{n}")
                r = c.read_response()
                assert r.status == 200, r
                n += 1
        return n

    results = concurrently(client, 30, 30)
    errors = [r for r in results if not isinstance(r, int)]
    assert not errors, errors[:3]
    counts = {u.name: len(u.hits("/lr/")) for u in (slow, f1, f2)}
    total = sum(counts.values())
    share = counts["slow"] / total
    print(f"least_request: {counts} (slow share {share:.3f})")
    assert total == sum(results)
    assert share < 0.20, f"the slow endpoint got {share:.1%} of {total} requests: {counts}"
    assert counts["f1"] > 0 and counts["f2"] > 0


# ---------------------------------------------------------------------------------------------
# 11. Outlier ejection


def _eject_state(p, up) -> bool:
    return endpoints(p, "app")[up.address]["ejected"]


@pytest.mark.timeout(90)
def test_outlier_ejection_and_return(proxy_factory, ups):
    bad = ups("bad", status=503)
    g1, g2 = ups("g1"), ups("g2")
    p = proxy_factory(
        top={"workers": 1},
        routes=[route("r", "/", "app", retry={"attempts": 1})],
        clusters=[cluster("app", [g1, bad, g2], outlier_detection={
            "consecutive_failures": 3, "base_ejection": "2s", "max_ejected_percent": 50})],
    )
    assert _eject_state(p, bad) is False
    assert metric(p, "outrider_endpoint_healthy", cluster="app", endpoint=bad.address) == 1
    t_eject = None
    for i in range(15):
        r = call(p, target=f"/burst/{i}")
        if r.status == 503:
            assert r.header("x-upstream-name") == "bad", r
            t_eject = time.monotonic()
    assert len(bad.hits()) == 3, f"3 consecutive 503s should eject: the bad endpoint got {len(bad.hits())} of 15"
    ep = endpoints(p, "app")
    assert ep[bad.address]["ejected"] is True, ep
    assert ep[g1.address]["ejected"] is False and ep[g2.address]["ejected"] is False, ep
    assert metric(p, "outrider_endpoint_healthy", cluster="app", endpoint=bad.address) == 0

    # no traffic during the ejection; measure when it comes back
    t_back = None
    i = 0
    while time.monotonic() < t_eject + 5:
        r = call(p, target=f"/during/{i}")
        i += 1
        if r.status != 200:
            t_back = time.monotonic()
            assert r.header("x-upstream-name") == "bad", r
            break
        time.sleep(0.01)
    assert t_back is not None, "the bad endpoint got no traffic 5 s after a 2 s ejection"
    away = t_back - t_eject
    print(f"outlier: first ejection lasted {away:.2f}s (base_ejection 2s)")
    assert 1.8 <= away <= 3.5, f"ejected for {away:.2f}s with base_ejection 2s"
    assert _eject_state(p, bad) is False

    # failures again: ejected again, now for 2 × base_ejection
    for j in range(15):
        call(p, target=f"/again/{j}")
        if _eject_state(p, bad):
            break
    t_eject2 = time.monotonic()
    assert _eject_state(p, bad) is True, "not ejected again after more consecutive 503s"
    n_bad = len(bad.hits())
    k = 0
    while time.monotonic() < t_eject2 + 2.8:  # past base_ejection: the second ejection is longer
        r = call(p, target=f"/second/{k}")
        k += 1
        assert r.status == 200, f"{time.monotonic() - t_eject2:.2f}s into the second ejection: {r}"
        time.sleep(0.02)
    assert len(bad.hits()) == n_bad
    assert _eject_state(p, bad) is True, "the second ejection did not last longer than base_ejection"


def test_outlier_max_ejected_percent_and_panic(proxy_factory, ups):
    bads = [ups(f"b{i}", status=503) for i in range(3)]
    good = ups("good")
    q1, q2 = ups("q1", status=503), ups("q2", status=503)
    p = proxy_factory(
        top={"workers": 1},
        routes=[route("mx", "/mx", "app", retry={"attempts": 1}),
                route("panic", "/panic", "panic", retry={"attempts": 1})],
        clusters=[cluster("app", [*bads, good], outlier_detection={
                      "consecutive_failures": 2, "base_ejection": "30s", "max_ejected_percent": 50}),
                  cluster("panic", [q1, q2], outlier_detection={
                      "consecutive_failures": 2, "base_ejection": "30s", "max_ejected_percent": 100})],
    )
    for i in range(40):
        call(p, target=f"/mx/{i}")
    ep = endpoints(p, "app")
    ejected = sorted(a for a, e in ep.items() if e["ejected"])
    assert len(ejected) == 2, f"max_ejected_percent 50 of 4 endpoints: ejected {ejected} ({ep})"
    assert good.address not in ejected
    still = [b for b in bads if b.address not in ejected][0]
    n = len(still.hits())
    for i in range(8):
        call(p, target=f"/mx/more/{i}")
    assert len(still.hits()) > n, "the bad endpoint that may not be ejected got no traffic"

    # every endpoint ejected (100% allowed): panic mode, traffic still reaches them
    for i in range(10):
        call(p, target=f"/panic/{i}")
    before = len(q1.hits()) + len(q2.hits())
    for i in range(10):
        r = call(p, target=f"/panic/after/{i}")
        assert r.status == 503 and r.header("x-outrider-error") is None, \
            f"with every endpoint ejected, requests should still go to them (panic): {r}"
    assert len(q1.hits()) + len(q2.hits()) == before + 10


# ---------------------------------------------------------------------------------------------
# 12. Active health checks


def _healthy(p, up):
    return endpoints(p, "app")[up.address]["healthy"]


@pytest.mark.timeout(90)
def test_health_check_down_and_up(proxy_factory, ups):
    a, b = ups("a"), ups("b")
    p = proxy_factory(clusters=[cluster("app", [a, b], health_check={
        "path": HEALTH, "interval": "200ms", "timeout": "100ms", "healthy_threshold": 1, "unhealthy_threshold": 2})])
    assert wait_until(lambda: len(a.health_checks()) >= 2 and len(b.health_checks()) >= 2, 3), \
        "no health checks reached the endpoints"
    assert all(r.method == "GET" for r in a.health_checks())
    assert _healthy(p, a) and _healthy(p, b)

    def traffic(tag, n=20):
        before = {u.name: len(u.hits()) for u in (a, b)}
        for i in range(n):
            r = call(p, target=f"/{tag}/{i}")
            assert r.status == 200, f"{tag} {i}: {r}"
        return {u.name: len(u.hits()) - before[u.name] for u in (a, b)}

    got = traffic("both-up")
    assert got["a"] > 0 and got["b"] > 0, got

    a.health_status = 500
    t0 = time.monotonic()
    assert wait_until(lambda: _healthy(p, a) is False, 4), "a failing /healthz did not make the endpoint unhealthy"
    print(f"health: unhealthy after {time.monotonic() - t0:.2f}s")
    assert time.monotonic() - t0 < 2.0
    assert metric(p, "outrider_endpoint_healthy", cluster="app", endpoint=a.address) == 0
    assert metric(p, "outrider_endpoint_healthy", cluster="app", endpoint=b.address) == 1
    time.sleep(0.3)  # every worker has seen it
    got = traffic("a-down")
    assert got == {"a": 0, "b": 20}, f"an unhealthy endpoint got traffic: {got}"

    a.health_status = 200
    t0 = time.monotonic()
    assert wait_until(lambda: _healthy(p, a) is True, 4), "a recovered /healthz did not bring the endpoint back"
    print(f"health: healthy again after {time.monotonic() - t0:.2f}s")
    assert time.monotonic() - t0 < 2.0
    assert metric(p, "outrider_endpoint_healthy", cluster="app", endpoint=a.address) == 1
    time.sleep(0.3)
    got = traffic("a-up")
    assert got["a"] >= 5, f"the recovered endpoint gets little traffic: {got}"

    # a /healthz slower than the check timeout counts as a failure
    a.health_delay = 0.3
    assert wait_until(lambda: _healthy(p, a) is False, 4), "a /healthz slower than the timeout kept the endpoint healthy"
    a.health_delay = 0.0
    assert wait_until(lambda: _healthy(p, a) is True, 4)

    # every endpoint unhealthy: panic mode, traffic goes to all of them
    a.health_status = b.health_status = 503
    assert wait_until(lambda: not _healthy(p, a) and not _healthy(p, b), 4)
    time.sleep(0.3)
    got = traffic("panic")
    assert got["a"] > 0 and got["b"] > 0, f"panic mode should spread traffic over every endpoint: {got}"


# ---------------------------------------------------------------------------------------------
# 13. Circuit breaker


def test_circuit_breaker_overflow(proxy_factory, ups):
    slow = ups("slow", delay=1.0)
    slow2 = ups("slow2", delay=1.0)
    p = proxy_factory(
        top={"workers": 1},
        routes=[route("mr", "/mr", "mr"), route("mc", "/mc", "mc")],
        clusters=[cluster("mr", [slow], circuit_breaker={"max_connections": 100, "max_pending": 100, "max_requests": 2}),
                  cluster("mc", [slow2], circuit_breaker={"max_connections": 1, "max_pending": 1, "max_requests": 100})],
    )

    def burst(prefix, n):
        rs = concurrently(lambda i: call(p, target=f"{prefix}/{i}", timeout=10), n)
        errors = [r for r in rs if isinstance(r, BaseException)]
        assert not errors, errors
        return rs

    rs = burst("/mr", 5)
    ok = [r for r in rs if r.status == 200]
    over = [r for r in rs if r.status == 503]
    print(f"circuit breaker max_requests 2: {[r.status for r in rs]}")
    assert len(ok) == 2 and len(over) == 3, [(r.status, r.header("x-outrider-error")) for r in rs]
    for r in over:
        assert_local_error(r, 503, "overflow")
        assert r.elapsed < 0.8, f"an overflow answer took {r.elapsed:.2f}s (should not wait for the slow upstream)"
    assert len(slow.hits()) == 2
    assert call(p, target="/mr/after").status == 200  # the breaker closes again

    rs = burst("/mc", 3)
    print(f"circuit breaker max_connections 1: {[r.status for r in rs]}")
    assert sorted(r.status for r in rs) == [200, 503, 503], [(r.status, r.header("x-outrider-error")) for r in rs]
    for r in rs:
        if r.status == 503:
            assert_local_error(r, 503, "overflow")
    assert slow2.connections == 1


# ---------------------------------------------------------------------------------------------
# 14. DNS re-resolution (through /etc/hosts)

DNS_NAME = "outrider-dns-test.invalid"


@pytest.fixture
def hosts_file():
    """set(ip): map DNS_NAME to ip in /etc/hosts (written in place). The exact original content is
    put back at teardown."""
    path = "/etc/hosts"
    if os.geteuid() != 0 or not os.access(path, os.W_OK):
        pytest.skip("needs a writable /etc/hosts (root)")
    with open(path, "rb") as f:
        original = f.read()

    def set_ip(ip):
        text = original if original.endswith(b"\n") or not original else original + b"\n"
        with open(path, "wb") as f:  # in place: /etc/hosts may be a bind mount
            f.write(text + f"{ip} {DNS_NAME}\n".encode())

    try:
        yield set_ip
    finally:
        with open(path, "wb") as f:
            f.write(original)


def _two_hosts_same_port(ups):
    for _ in range(20):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
        s.close()
        try:
            old = ups("old", host="127.0.0.2", port=port)
        except OSError:
            continue
        try:
            new = ups("new", host="127.0.0.3", port=port)
        except OSError:
            continue
        return old, new, port
    raise AssertionError("could not bind 127.0.0.2 and 127.0.0.3 on one port")


def test_dns_change_is_picked_up(proxy_factory, ups, hosts_file):
    old, new, port = _two_hosts_same_port(ups)
    hosts_file("127.0.0.2")
    p = proxy_factory(clusters=[cluster("app", [f"{DNS_NAME}:{port}"], dns_refresh="200ms")])
    with p.conn(10) as c:
        for i in range(5):
            c.request("GET", f"/dns/old/{i}")
            r = c.read_response()
            assert r.status == 200 and r.header("x-upstream-name") == "old", r
        hosts_file("127.0.0.3")
        t0 = time.monotonic()
        switched = None
        i = 0
        while time.monotonic() < t0 + 5:
            c.request("GET", f"/dns/switch/{i}")
            r = c.read_response()
            assert r.status == 200, r
            i += 1
            if r.header("x-upstream-name") == "new":
                switched = time.monotonic() - t0
                break
            time.sleep(0.05)
        print(f"dns: switched to the new address after {switched}s (dns_refresh 200ms)")
        assert switched is not None, "requests still reach the old address 5 s after the hosts entry changed"
        assert switched < 3.0, f"switched after {switched:.2f}s with dns_refresh 200ms"
        # from now on, nothing to the old address (its pooled connections are not reused)
        n_old = len(old.hits())
        for j in range(10):
            c.request("GET", f"/dns/after/{j}")
            r = c.read_response()
            assert r.status == 200 and r.header("x-upstream-name") == "new", f"request {j} after the switch: {r}"
    for j in range(10):
        assert call(p, target=f"/dns/fresh/{j}").header("x-upstream-name") == "new"
    assert len(old.hits()) == n_old


# ---------------------------------------------------------------------------------------------
# 15. Chaos: an endpoint dies and comes back under load


@pytest.mark.timeout(90)
def test_chaos_endpoint_killed_and_restarted_under_load(proxy_factory, ups, loop_thread):
    eps = [ups(f"c{i}", delay=0.005) for i in range(3)]
    victim = eps[1]
    p = proxy_factory(
        routes=[route("chaos", "/", "app",
                      retry={"attempts": 3, "on": ["connect_failure", "reset", "gateway_error"],
                             "backoff": {"base": "5ms", "max": "50ms"}})],
        clusters=[cluster("app", eps, outlier_detection={
            "consecutive_failures": 3, "base_ejection": "1s", "max_ejected_percent": 50})],
    )
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"requests": 0, "errors": 0}
    samples = []

    def client(k):
        with httpx.Client(base_url=p.url(), timeout=5.0, trust_env=False) as hc:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = hc.get(f"/chaos/{k}/{i}")
                    ok = r.status_code == 200
                    detail = f"{r.status_code} {r.headers.get('x-outrider-error')}"
                except httpx.HTTPError as e:
                    ok, detail = False, repr(e)
                with lock:
                    counts["requests"] += 1
                    if not ok:
                        counts["errors"] += 1
                        if len(samples) < 10:
                            samples.append((round(time.monotonic() - t_start, 2), detail))
        return True

    t_start = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    kill(loop_thread, victim)
    t_kill = time.monotonic()
    n_at_kill = len(victim.hits())
    time.sleep(1.5)
    revive(loop_thread, victim)
    t_revive = time.monotonic()
    n_at_revive = len(victim.hits())
    time.sleep(3.5)
    stop.set()
    for t in threads:
        t.join(10)
    elapsed = time.monotonic() - t_start
    retries = metric_samples(p, "outrider_retries_total")
    connect_failures = metric(p, "outrider_upstream_connect_failures_total", endpoint=victim.address)
    ejected_now = endpoints(p, "app")[victim.address]["ejected"]
    print(f"chaos: {counts['requests']} requests in {elapsed:.1f}s, {counts['errors']} client-visible errors "
          f"(first: {samples}); victim killed at {t_kill - t_start:.1f}s, restarted at {t_revive - t_start:.1f}s; "
          f"victim requests before kill {n_at_kill}, after restart {len(victim.hits()) - n_at_revive}; "
          f"connect failures to victim {connect_failures:.0f}; retries {[(s[0].get('reason'), s[1]) for s in retries if s[1]]}; "
          f"victim ejected at the end: {ejected_now}")
    assert counts["requests"] > 200, counts
    assert counts["errors"] == 0, f"{counts['errors']} client-visible errors: {samples}"
    assert n_at_kill > 0
    assert sum(v for _, v in retries) > 0, "killing an endpoint under load caused no retry at all"
    assert len(victim.hits()) > n_at_revive, "the restarted endpoint got no traffic within 3.5 s"
