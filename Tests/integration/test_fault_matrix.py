"""The fault matrix (issue #9, hardening): every way an upstream can fail, over an HTTP/1.1 and an
h2c cluster, for an idempotent (GET) and a non-idempotent (POST) request, and every stage at
which a client can go away — with the answer SPEC §3/§7 require and nothing leaked.

Upstreams are fault_upstream.py's (`/f/KIND` in the path picks the fault). One proxy (one
worker, so one pool) serves the whole module, as a long-running sidecar would; every case is
followed by a leak check (`Rig.assert_clean`):

- the proxy's open descriptors, less the TCP connections the upstreams still see open, equal
  the figure measured once at start-up (listener, epoll, eventfd, log files...): no client or
  upstream socket outlives its exchange;
- no client connection is counted active (`outrider_downstream_connections_active`);
- `/clusters`: no endpoint has an active connection left, and the idle ones are exactly the
  connections the upstream still holds open (a pooled connection the app closed is dropped);
- a new request on each cluster is answered 200 (the pool hands out a connection that works,
  or opens one).

Expectations (route `timeout` 1500ms, `retry: {attempts: 2, on: [connect_failure,
refused_stream, reset, gateway_error], per_try_timeout: 400ms}`):

- refused connect: 502 `upstream_connect`, tried twice whatever the method;
- reset / early close / invalid answer before the response head: 502 `upstream_reset` or
  `upstream_protocol`; a GET is tried again, a POST is not (its body reached the app). On an
  HTTP/1.1 connection taken from the pool, a reset before any response byte is the stale-pool
  race (README "Upstream pool"): one more, uncounted try for a GET — never for a POST;
- no head within the per-try timeout (stall, a head dribbled a byte at a time): the GET is tried
  again, then 504 `upstream_timeout`; the POST gets 504 after one try;
- the response already begun: never retried; the client gets the head and what arrived, then
  the connection closes (HTTP/2 client: RST_STREAM) — a truncated body never looks complete;
- HTTP/2 only: a stream above the app's GOAWAY was not processed: tried again for any method
  (`refused_stream`).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
import urllib.request

import pytest
from h2.errors import ErrorCodes
from prometheus_client.parser import text_string_to_metric_families

from conftest import _report, start_proxy
from fault_upstream import FaultUpstream, H2FaultUpstream
from h2wire import H2Client
from wire import Conn, ProtocolError, dead_port

RETRY = {"attempts": 2, "on": ["connect_failure", "refused_stream", "reset", "gateway_error"],
         "per_try_timeout": "400ms", "backoff": {"base": "5ms", "max": "10ms"},
         "budget": {"ratio": 1.0, "min_per_second": 1000}}
PER_TRY = 0.4
ROUTE_TIMEOUT = "1500ms"
ROUTES = ("h1", "h2", "dead1", "dead2")  # route /NAME -> cluster NAME


# ---------------------------------------------------------------------------------------------
# The rig: two fault upstreams, two dead ports, one proxy


class Rig:
    def __init__(self, proxy, fh1: FaultUpstream, fh2: H2FaultUpstream):
        self.p = proxy
        self.fh1 = fh1
        self.fh2 = fh2
        self.seq = 0
        self.fixed_fds = None

    # -- observation ---------------------------------------------------------------------------
    def fds(self) -> int:
        """The proxy's descriptors, less connections to its admin port: the admin thread closes
        its client socket after the answer has left, so the one this rig's last question used
        can still be open (CLOSE_WAIT) when the next sample is taken — taken into the start-up
        figure, every later check would be one off."""
        pid = self.p.pid
        admin = set()
        for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
            if not os.path.exists(table):
                continue
            with open(table) as f:
                for line in f.read().splitlines()[1:]:
                    fields = line.split()
                    listening = fields[3] == "0A"
                    if int(fields[1].rsplit(":", 1)[1], 16) == self.p.admin_port and not listening:
                        admin.add(f"socket:[{fields[9]}]")
        count = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") not in admin:
                    count += 1
            except FileNotFoundError:  # closed since the listing
                pass
        return count

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.p.admin_port}{path}", timeout=5) as r:
            return r.read().decode()

    def clusters(self) -> dict:
        doc = json.loads(self.admin("/clusters"))
        return {c["name"]: c["endpoints"][0] for c in doc["clusters"]}

    def metric(self, name: str, **labels) -> float:
        total = 0.0
        for fam in text_string_to_metric_families(self.admin("/metrics")):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def retries(self, cluster: str) -> dict:
        out = {}
        for fam in text_string_to_metric_families(self.admin("/metrics")):
            for s in fam.samples:
                if s.name == "outrider_retries_total" and s.labels.get("cluster") == cluster and s.value:
                    out[s.labels["reason"]] = s.value
        return out

    def key(self, proto: str, fault: str, tag: str = "") -> str:
        self.seq += 1
        return f"/{proto}/f/{fault}/c{self.seq}{tag}"

    def log(self, path: str, timeout=3.0) -> dict:
        e = self.p.wait_access_log(lambda e: e.get("path") == path, timeout)
        assert e is not None, f"no access log line for {path}"
        return e

    # -- the leak check --------------------------------------------------------------------------
    def _state(self) -> dict:
        fds = self.fds()
        cl = self.clusters()
        return {
            "fds": fds,
            "upstream_open": {"h1": self.fh1.open_connections, "h2": self.fh2.open_connections},
            "clusters": {k: (v["active_connections"], v["idle_connections"]) for k, v in cl.items()},
            "downstream_active": self.metric("outrider_downstream_connections_active"),
        }

    def _problems(self, s: dict) -> list:
        out = []
        if s["downstream_active"] != 0:
            out.append(f"{s['downstream_active']:.0f} client connections still counted active")
        for name in ("dead1", "dead2"):
            if s["clusters"][name] != (0, 0):
                out.append(f"cluster {name} (nothing listens) reports (active, idle) {s['clusters'][name]}")
        for name in ("h1", "h2"):
            active, idle = s["clusters"][name]
            if active != 0:
                out.append(f"cluster {name}: {active} active upstream connections with no request in flight")
            if idle != s["upstream_open"][name]:
                out.append(f"cluster {name}: {idle} idle pooled connections, but the app sees "
                           f"{s['upstream_open'][name]} open")
        extra = s["fds"] - sum(s["upstream_open"].values())
        if self.fixed_fds is not None and extra != self.fixed_fds:
            out.append(f"{s['fds']} descriptors open: {extra} besides the {sum(s['upstream_open'].values())} upstream "
                       f"connections, {self.fixed_fds} at start-up ({sorted(os.listdir(f'/proc/{self.p.pid}/fd'))})")
        return out

    def settle(self, timeout=4.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            s = self._state()
            problems = self._problems(s)
            if not problems or time.monotonic() > deadline:
                return s, problems
            time.sleep(0.05)

    def assert_clean(self, what: str = ""):
        s, problems = self.settle()
        assert not problems, f"after {what}: " + "; ".join(problems) + f"\nstate {s}"
        # and the pool hands out working connections (or opens them)
        for proto in ("h1", "h2"):
            with Conn(self.p.port, 5) as c:
                c.request("GET", f"/{proto}/f/ok/after")
                r = c.read_response()
            assert r.status == 200 and r.body == b"ok", f"after {what}: a new request to {proto} got {r}"
        s, problems = self.settle()
        assert not problems, f"after {what} and a request per cluster: " + "; ".join(problems) + f"\nstate {s}"
        assert self.p.alive()


@pytest.fixture(scope="module")
def rig(outrider_bin, tmp_path_factory, loop_thread):
    fh1 = loop_thread.run(FaultUpstream("fault-h1").start())
    fh2 = loop_thread.run(H2FaultUpstream("fault-h2").start())
    routes = [{"name": name, "match": {"path_prefix": f"/{name}"}, "cluster": name, "timeout": ROUTE_TIMEOUT,
               "retry": RETRY} for name in ROUTES]
    clusters = [
        {"name": "h1", "endpoints": [fh1.address], "connect_timeout": "500ms"},
        {"name": "h2", "endpoints": [fh2.address], "connect_timeout": "500ms", "protocol": "h2c"},
        {"name": "dead1", "endpoints": [f"127.0.0.1:{dead_port()}"], "connect_timeout": "500ms"},
        {"name": "dead2", "endpoints": [f"127.0.0.1:{dead_port()}"], "connect_timeout": "500ms", "protocol": "h2c"},
    ]
    p = start_proxy(outrider_bin, tmp_path_factory.mktemp("faults"), routes=routes, clusters=clusters,
                    top={"workers": 1}, listener={"protocols": None,
                                                   "timeouts": {"header_read": "2s", "idle": "5s"}})
    rig = Rig(p, fh1, fh2)
    try:
        rig.assert_clean("start-up")  # warms both pools
        s, problems = rig.settle()
        rig.fixed_fds = s["fds"] - sum(s["upstream_open"].values())
        yield rig
        # nothing accumulated over the whole matrix
        s, problems = rig.settle()
        assert not problems, "at the end of the module: " + "; ".join(problems)
    finally:
        problem = p.stop()
        if problem or p.proc.returncode != 0:
            _report(p)
        loop_thread.run(fh1.stop())
        loop_thread.run(fh2.stop())
    assert not problem, problem
    bad = fh1.wellformedness_problems() + fh2.wellformedness_problems()
    assert not bad, f"the proxy sent malformed requests upstream: {bad}"


# ---------------------------------------------------------------------------------------------
# 1. The upstream fault matrix (HTTP/1.1 client)

# (fault, expectation). Expectations:
#   ("local", status, reason, retried)  a proxy error; retried: the GET is tried again (the POST never,
#                                       except where noted by "any": connect failure, refused stream)
#   ("cut", body_seen)                  the head went out; the connection closes before the body ends
#                                       body_seen: bytes of body the client must have seen first
#                                       (None: the head and body may not have left at all)
#   ("ok", body)                        a normal answer despite the misbehaviour
H1_FAULTS = [
    ("refuse", ("local", 502, "upstream_connect", "any")),
    ("reset-before-head", ("local", 502, "upstream_reset", True)),
    ("close-mid-head", ("local", 502, "upstream_protocol", True)),
    ("stall", ("local", 504, "upstream_timeout", True)),
    ("trickle-head/40", ("local", 504, "upstream_timeout", True)),
    ("bad-status", ("local", 502, "upstream_protocol", True)),
    ("bad-cl", ("local", 502, "upstream_protocol", True)),
    ("cl-te", ("local", 502, "upstream_protocol", True)),
    ("reset-mid-body", ("cut", 100)),
    ("close-mid-body", ("cut", 100)),
    ("bad-chunk", ("cut", None)),
    ("huge-chunk-ext", ("cut", None)),
    ("trickle-body/30", ("ok", b"abcdefghijklmnopqrst")),
    ("big-head/90", ("ok", b"ok")),
    ("big-head/150", ("local", 502, "upstream_protocol", True)),
]
H2_FAULTS = [
    ("refuse", ("local", 502, "upstream_connect", "any")),
    ("reset-before-head", ("local", 502, "upstream_reset", True)),
    ("close-mid-head", ("local", 502, "upstream_reset", True)),
    ("goaway-unprocessed", ("local", 502, "upstream_reset", "any")),
    ("goaway-error", ("local", 502, "upstream_reset", True)),
    ("stall", ("local", 504, "upstream_timeout", True)),
    ("bad-status", ("local", 502, "upstream_protocol", True)),
    ("no-status", ("local", 502, "upstream_protocol", True)),
    ("invalid-frame", ("local", 502, "upstream_protocol", True)),
    ("invalid-frame-hold", ("local", 502, "upstream_protocol", True)),
    ("reset-mid-body", ("cut", 100)),
    ("close-mid-body", ("cut", 100)),
    ("cl-mismatch", ("cut", None)),
    ("trickle-body/30", ("ok", b"abcdefghijklmnopqrst")),
    ("big-head/90", ("ok", b"ok")),
    ("big-head/150", ("local", 502, "upstream_protocol", True)),
]
# the access log's `error` for a response cut after its head
CUT_ERROR = {"reset-mid-body": "upstream_reset", "close-mid-body": "upstream_reset", "bad-chunk": "upstream_protocol",
             "huge-chunk-ext": "upstream_protocol", "cl-mismatch": "upstream_protocol"}
RETRY_REASON = {"upstream_connect": "connect_failure", "upstream_reset": "reset", "upstream_protocol": "reset",
                "upstream_timeout": "per_try_timeout"}

MATRIX = ([pytest.param("h1", f, e, m, id=f"h1-{f.replace('/', '')}-{m}") for f, e in H1_FAULTS for m in ("GET", "POST")]
          + [pytest.param("h2", f, e, m, id=f"h2c-{f.replace('/', '')}-{m}") for f, e in H2_FAULTS for m in ("GET", "POST")])


def _hits(rig, proto, key) -> int:
    return (rig.fh1 if proto == "h1" else rig.fh2).hits(key)


@pytest.mark.parametrize("proto,fault,expect,method", MATRIX)
def test_upstream_fault(rig, proto, fault, expect, method):
    route = proto if fault != "refuse" else {"h1": "dead1", "h2": "dead2"}[proto]
    key = rig.key(route, fault, f"/{method}")
    body = b"p" * 300 if method == "POST" else None
    retries_before = rig.retries(route)
    t0 = time.monotonic()
    with Conn(rig.p.port, 6) as c:
        c.request(method, key, body=body, headers=[("content-type", "text/plain")] if body else [])
        if expect[0] == "local":
            r = c.read_response(method, timeout=5)
            elapsed = time.monotonic() - t0
            _, status, reason, retried = expect
            assert (r.status, r.header("x-outrider-error")) == (status, reason), \
                f"{proto} {fault} {method}: expected {status} {reason}, got {r!r}"
            assert (r.header("content-type") or "").startswith("text/plain") and 0 < len(r.body) < 1024, r
            if r.header("connection") != "close":  # the client connection is still usable
                c.request("GET", f"/{proto}/f/ok/same-conn")
                assert c.read_response().status == 200
        elif expect[0] == "cut":
            try:
                head = c.read_head(timeout=5)
            except ProtocolError as e:  # closed before a byte of the response left
                assert expect[1] is None, f"{proto} {fault}: the head never reached the client ({e})"
                assert c.buf == b"" and c.eof, c.buf
            else:
                assert head.status == 200, head
                closed, _ = c.wait_closed(3)
                assert closed, f"{proto} {fault}: the client connection stayed open after the upstream failed mid-body"
                got = c.buf  # everything after the head
                if expect[1] is not None:
                    assert got == b"b" * expect[1], f"{proto} {fault}: {len(got)} body bytes before the close: {got[:60]!r}"
                cl = head.header("content-length")
                if cl is not None:
                    assert len(got) < int(cl), "a truncated body reached the client as complete"
                else:
                    assert not got.endswith(b"0\r\n\r\n"), f"a cut chunked body was ended cleanly: {got[-40:]!r}"
        else:
            r = c.read_response(method, timeout=5)
            assert r.status == 200 and r.body == expect[1], r
            if fault.startswith("big-head/"):  # 90 fields of 200 bytes: under max_headers / max_header_bytes
                big = [k for k, v in r.headers if k.lower().startswith("x-big-") and v == "v" * 200]
                assert len(big) == 90, f"{len(big)} of the app's 90 x-big-* fields reached the client"
    e = rig.log(key)
    hits = _hits(rig, proto, key)
    retries = {k: v - retries_before.get(k, 0) for k, v in rig.retries(route).items() if v - retries_before.get(k, 0)}

    if expect[0] == "local":
        _, status, reason, retried = expect
        assert e["status"] == status and e["error"] == reason, e
        # the first try of an HTTP/1.1 GET went over the pooled connection (rig.assert_clean left
        # one): a reset before any response byte may be the stale-pool race, tried once more
        stale = proto == "h1" and reason == "upstream_reset" and method == "GET"
        if retried == "any" or (retried and method == "GET"):
            tries = 2 + (1 if stale else 0)
        else:
            tries = 1
        assert e["attempts"] == tries, f"{proto} {fault} {method}: expected {tries} tries, log says {e}"
        want_hits = 0 if fault == "refuse" else tries
        assert hits == want_hits, f"{proto} {fault} {method}: the app saw {hits} requests, expected {want_hits}"
        want_reason = "refused_stream" if fault == "goaway-unprocessed" else RETRY_REASON[reason]
        assert retries == ({want_reason: tries - 1} if tries > 1 else {}), \
            f"outrider_retries_total{{cluster={route}}} grew by {retries}"
        if status == 504:
            want = PER_TRY * tries
            assert want - 0.1 <= elapsed <= want + 0.5, f"504 after {elapsed:.2f}s, expected ≈{want}s ({tries} tries)"
    elif expect[0] == "cut":
        assert hits == 1 and e["attempts"] == 1 and not retries, \
            f"a response that had begun was tried again: hits {hits}, log {e}, retries {retries}"
        assert e["error"] == CUT_ERROR[fault], e
    else:
        assert hits == 1 and e["attempts"] == 1 and e["status"] == 200 and not retries, (hits, e, retries)
    rig.assert_clean(f"{proto} {fault} {method}")


@pytest.mark.parametrize("method,idempotent", [("GET", True), ("DELETE", True), ("POST", False), ("PATCH", False)])
def test_stale_pool_retry_only_for_idempotent_requests(rig, method, idempotent):
    """A body-less request on a pooled HTTP/1.1 connection that the app reads and then resets:
    from the proxy's side that is the stale-pool race (README), tried once more on a fresh
    connection — but only for an idempotent method. The app did get the POST; sending it again
    would run it twice (SPEC §7: non-idempotent requests are repeated only when nothing was
    sent). The route's own policy (`on: reset`) adds one try for the idempotent ones."""
    key = rig.key("h1", "reset-before-head", f"/stale-{method}")
    with Conn(rig.p.port, 5) as c:
        c.request("GET", "/h1/f/ok/prime")  # this keep-alive exchange leaves the pooled connection
        assert c.read_response().status == 200
        c.request(method, key, headers=[("content-length", "0")] if method != "GET" else [])
        r = c.read_response(method)
    assert (r.status, r.header("x-outrider-error")) == (502, "upstream_reset"), r
    hits = rig.fh1.hits(key)
    e = rig.log(key)
    want = 3 if idempotent else 1
    assert hits == want and e["attempts"] == want, \
        f"{method}: the app received it {hits} times (log attempts {e['attempts']}), expected {want}"
    rig.assert_clean(f"stale {method}")


# ---------------------------------------------------------------------------------------------
# 2. The same faults seen by an HTTP/2 client


H2_CLIENT_CASES = [
    ("h1", "reset-before-head", ("local", 502, "upstream_reset")),
    ("h1", "bad-status", ("local", 502, "upstream_protocol")),
    ("h1", "stall", ("local", 504, "upstream_timeout")),
    ("h1", "reset-mid-body", ("cut",)),
    ("h1", "close-mid-body", ("cut",)),
    ("h2", "reset-before-head", ("local", 502, "upstream_reset")),
    ("h2", "invalid-frame", ("local", 502, "upstream_protocol")),
    ("h2", "stall", ("local", 504, "upstream_timeout")),
    ("h2", "reset-mid-body", ("cut",)),
    ("h2", "close-mid-body", ("cut",)),
    ("dead1", "refuse", ("local", 502, "upstream_connect")),
    ("dead2", "refuse", ("local", 502, "upstream_connect")),
]


@pytest.mark.parametrize("route,fault,expect", [pytest.param(*c, id=f"{c[0]}-{c[1]}") for c in H2_CLIENT_CASES])
def test_upstream_fault_h2_client(rig, route, fault, expect):
    """A stream's failure stays on its stream: the client's connection carries on."""
    key = rig.key(route, fault, "/h2client")
    with H2Client(rig.p.port, timeout=6) as c:
        r = c.get(key, timeout=5)
        if expect[0] == "local":
            assert (r.status, r.header("x-outrider-error")) == expect[1:], f"{route} {fault}: {r!r}"
            assert r.ended and r.reset_code is None, r
        else:
            assert r.status == 200 and r.reset_code is not None and not r.ended, \
                f"{route} {fault}: a stream cut upstream must end with RST_STREAM, not END_STREAM: {r!r}"
            assert r.body == b"b" * 100, r
        # the connection is fine: another stream on it is answered
        r2 = c.get(f"/{route if not route.startswith('dead') else 'h1'}/f/ok/next", timeout=5)
        assert r2.status == 200 and r2.body == b"ok", r2
        assert not c.dead and c.goaway is None, "a stream's upstream failure ended the client's HTTP/2 connection"
    e = rig.log(key)
    assert e["proto"] == "HTTP/2", e
    rig.assert_clean(f"h2 client {route} {fault}")


# ---------------------------------------------------------------------------------------------
# 3. Upstream failures while the request body is still arriving, and Expect: 100-continue


def _send_in_background(c: Conn, data: bytes):
    def run():
        try:
            c.sock.sendall(data)
        except OSError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _send_until_cut(c: Conn, until: float):
    """Goes on writing after the answer, as a client busy uploading does. `result` gets the time
    a write was refused (the proxy closed: a reset or EPIPE), or the unexpected error."""
    result = []

    def run():
        chunk = b"u" * 16384
        while time.monotonic() < until:
            try:
                c.sock.send(chunk)
            except TimeoutError:  # the socket's timeout (wait_closed sets it), not the proxy
                continue
            except ConnectionError:
                result.append(time.monotonic())
                return
            except OSError as e:
                result.append(e)
                return
            time.sleep(0.01)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


@pytest.mark.parametrize("after", ["stops", "keeps-sending"])
@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_upstream_resets_mid_upload(rig, proto, after):
    """The app resets after 64 KiB of a 2 MiB upload. The client sends 256 KiB and holds the
    rest back until it has the answer, so the body is certainly unread when the proxy answers:
    502 upstream_reset (a PUT is idempotent but its body is over max_replay_body's 64 KiB
    default: not tried again) with `connection: close`, then the lingering close: the FIN at
    once and, while the client goes on writing, its bytes discarded for the linger time (2 s)
    and the connection closed — never left to the listener's idle timeout (5 s)."""
    key = rig.key(proto, "reset-mid-upload")
    size = 2 * 1024 * 1024
    with Conn(rig.p.port, 6) as c:
        c.send(f"PUT {key} HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n".encode() + b"u" * 262144)
        r = c.read_response(timeout=5)
        answered = time.monotonic()
        assert (r.status, r.header("x-outrider-error"), r.header("connection")) == (502, "upstream_reset", "close"), r
        if after == "keeps-sending":
            t, cut = _send_until_cut(c, answered + 6)
        closed, _ = c.wait_closed(3)
        assert closed, "the client connection stayed open with its body unread"
        if after == "keeps-sending":
            t.join(7)
            assert cut, "the proxy still took the client's bytes 6 s after its 502 (linger is 2 s)"
            assert isinstance(cut[0], float), f"writing after the 502: {cut[0]!r}"
            assert cut[0] - answered < 3.5, f"closed {cut[0] - answered:.2f}s after the 502: not the 2 s linger"
        c.close()
    e = rig.log(key)
    assert e["status"] == 502 and e["attempts"] == 1 and e["bytes_in"] < size, e
    assert _hits(rig, proto, key) == 1
    rig.assert_clean(f"{proto} reset mid-upload, client {after}")


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_upstream_resets_after_the_whole_upload(rig, proto):
    """The app takes the whole 2 MiB body, then resets without answering. The proxy had read the
    request to its end, so after its 502 the connection is in step with the client: no
    `connection: close`, and the next request on it is answered."""
    key = rig.key(proto, "reset-before-head", "/upload")
    size = 2 * 1024 * 1024
    with Conn(rig.p.port, 6) as c:
        c.send(f"PUT {key} HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n".encode())
        t = _send_in_background(c, b"u" * size)
        r = c.read_response(timeout=5)
        t.join(5)
        assert (r.status, r.header("x-outrider-error"), r.header("connection")) == (502, "upstream_reset", None), r
        c.request("GET", f"/{proto}/f/ok/after-upload")
        assert c.read_response(timeout=5).status == 200
    e = rig.log(key)
    assert e["status"] == 502 and e["attempts"] == 1 and e["bytes_in"] == size, e
    assert _hits(rig, proto, key) == 1
    rig.assert_clean(f"{proto} reset after the whole upload")


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_upstream_resets_mid_upload_sent_at_once(rig, proto):
    """The mid-upload reset with the 2 MiB written in one go: a race between the app's reset and
    the proxy reading the body. An HTTP/1.1 app's socket buffers (loopback autotuning) take the
    whole body before the app, reset after its first 64 KiB, gets scheduled: under CPU load
    the proxy has often read the request to its end by then (an h2c app's stream window keeps
    the body back). Either answer is right as long as it matches what was read: a body read
    whole gets a 502 that keeps the connection; a body cut short gets `connection: close` and
    the close at once (the two tests above make each case certain)."""
    key = rig.key(proto, "reset-mid-upload", "/at-once")
    size = 2 * 1024 * 1024
    with Conn(rig.p.port, 6) as c:
        c.send(f"PUT {key} HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n".encode())
        t = _send_in_background(c, b"u" * size)
        r = c.read_response(timeout=5)
        assert (r.status, r.header("x-outrider-error")) == (502, "upstream_reset"), r
        kept = r.header("connection") != "close"
        if kept:
            t.join(5)
            c.request("GET", f"/{proto}/f/ok/after-upload")
            assert c.read_response(timeout=5).status == 200
        else:
            closed, _ = c.wait_closed(3)
            assert closed, "the client connection stayed open with its body unread"
            c.close()
            t.join(5)
    e = rig.log(key)
    assert e["status"] == 502 and e["attempts"] == 1, e
    assert (e["bytes_in"] == size) == kept, f"a 502 {'kept' if kept else 'closed'} the connection, log {e}"
    assert _hits(rig, proto, key) == 1
    rig.assert_clean(f"{proto} reset mid-upload, body sent at once")


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_upstream_stalls_mid_upload(rig, proto):
    """The app never reads a 4 MiB body (HTTP/1.1: socket buffers fill; h2: the stream window
    stays shut) nor answers: 504 at the per-try timeout (a POST: one try); the client
    connection closes when its body was not read to the end."""
    key = rig.key(proto, "stall-unread" if proto == "h1" else "stall", "/upload")
    size = 4 * 1024 * 1024
    with Conn(rig.p.port, 6) as c:
        t0 = time.monotonic()
        c.send(f"POST {key} HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n".encode())
        t = _send_in_background(c, b"s" * size)
        r = c.read_response(timeout=5)
        elapsed = time.monotonic() - t0
        assert (r.status, r.header("x-outrider-error")) == (504, "upstream_timeout"), r
        assert elapsed < PER_TRY + 0.6, f"504 after {elapsed:.2f}s"
        t.join(5)
        e = rig.log(key)
        if e["bytes_in"] < size:  # the body was not read to its end: the connection must close
            assert r.header("connection") == "close", r
            closed, _ = c.wait_closed(3)
            assert closed, "the client connection stayed open with its body unread"
        else:  # socket buffers took the whole body: the connection is still good
            c.request("GET", f"/{proto}/f/ok/after-stall")
            assert c.read_response().status == 200
        c.close()
    rig.assert_clean(f"{proto} stall mid-upload")


@pytest.mark.parametrize("route,expect", [("h1", (504, "upstream_timeout")), ("h2", (504, "upstream_timeout")),
                                          ("dead1", (502, "upstream_connect"))])
def test_expect_100_continue_never_answered_upstream(rig, route, expect):
    """`Expect: 100-continue` towards an app that never answers: Outrider sends 100 once the
    upstream is there (the app never sees Expect), the body goes up, then 504. With no upstream
    at all: 502 without a 100, the body never read, the connection closed."""
    key = rig.key(route, "stall" if route != "dead1" else "refuse", "/expect")
    body = b"e" * 5000
    with Conn(rig.p.port, 6) as c:
        c.send(f"POST {key} HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
        if route == "dead1":
            r = c.read_response(timeout=5)
            assert (r.status, r.header("x-outrider-error")) == expect, r
            assert not r.informational, f"100 Continue sent with no upstream: {r.informational}"
            closed, _ = c.wait_closed(3)
            assert closed, "the body was never read: the connection must close"
        else:
            interim = c.read_head(timeout=3)
            assert interim.status == 100, interim
            c.send(body)
            r = c.read_response(timeout=5)
            assert (r.status, r.header("x-outrider-error")) == expect, r
    if route == "h1":
        rec = rig.fh1.find(key)
        assert rec.header("expect") is None and rec.body == body, rec.headers
    rig.assert_clean(f"{route} expect-100")


# ---------------------------------------------------------------------------------------------
# 4. Clients that go away at every stage (HTTP/1.1 and HTTP/2 clients, both kinds of cluster)


def _rst_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


STAGES = ["mid-head", "mid-upload", "waiting", "mid-download"]


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_h1_client_goes_away(rig, proto, stage, how):
    up = rig.fh1 if proto == "h1" else rig.fh2
    key = rig.key(proto, {"mid-head": "ok", "mid-upload": "ok", "waiting": "stall",
                          "mid-download": "trickle-body"}[stage], f"/{stage}-{how}")
    if stage == "mid-download":
        key = key.replace("trickle-body", "trickle-body/100")
    c = Conn(rig.p.port, 6)
    if stage == "mid-head":
        c.send(f"GET {key} HTTP/1.1\r\nHost: a\r\nX-Partial: ".encode())
        time.sleep(0.1)
    elif stage == "mid-upload":
        c.send(f"POST {key} HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n".encode() + b"x" * 100000)
        assert up.wait_for(lambda: up.hits(key) == 1, 3), "the upload never reached the app"
    elif stage == "waiting":
        c.request("GET", key)
        assert up.wait_for(lambda: up.hits(key) == 1, 3)
    else:
        c.request("GET", key)
        head = c.read_head(timeout=3)
        assert head.status == 200
        c._fill(time.monotonic() + 2)  # a byte or two of the dribbled body
    if how == "rst":
        _rst_close(c.sock)
    else:
        c.close()
    time.sleep(0.1)
    if stage == "mid-head":
        assert up.hits(key) == 0
    else:
        e = rig.log(key, timeout=4)
        if stage == "mid-upload":
            # FIN: the body ended short of its content-length (400, as nginx); RST: 499
            want = {("fin",): (400, "bad_request"), ("rst",): (499, "client_closed")}[(how,)]
            assert (e["status"], e["error"]) == want, e
            recs = [r for r in (rig.fh1.records if proto == "h1" else rig.fh2.records) if key in (r.path or "")]
            assert recs and not recs[0].complete, "an upload whose client vanished was completed upstream"
        elif stage == "waiting" and how == "fin":
            # a FIN alone is a half-close (README): the exchange goes on to its own end
            assert (e["status"], e["error"]) == (504, "upstream_timeout"), e
        elif stage == "waiting":
            assert (e["status"], e["error"]) == (499, "client_closed"), e
            assert e["duration_ms"] < 300, f"the abandoned exchange was noticed only after {e['duration_ms']} ms"
        else:
            # the head had gone out: the status stays, the log says the client left
            assert (e["status"], e["error"]) == (200, "client_closed"), e
            assert e["bytes_out"] < 20, e
    rig.assert_clean(f"{proto} client gone {stage} ({how})")


@pytest.mark.parametrize("how", ["rst_stream", "tcp_close"])
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_h2_client_goes_away(rig, proto, stage, how):
    """An HTTP/2 client cancels a stream (RST_STREAM CANCEL: its connection goes on and serves
    another stream) or drops its TCP connection, at each stage of an exchange."""
    up = rig.fh1 if proto == "h1" else rig.fh2
    key = rig.key(proto, {"mid-head": "ok", "mid-upload": "ok", "waiting": "stall",
                          "mid-download": "trickle-body/100"}[stage], f"/h2-{stage}-{how}")
    c = H2Client(rig.p.port, timeout=6)
    try:
        c.settle()
        if stage == "mid-head":
            # a HEADERS frame without END_HEADERS; the CONTINUATION never comes
            sid = c.conn.get_next_available_stream_id()
            block = c.conn.encoder.encode([(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", key)])
            c.sock.sendall(struct.pack(">I", len(block))[1:] + bytes([1, 0]) + struct.pack(">I", sid) + block)
            time.sleep(0.1)
            how_now = "tcp_close"  # the stream cannot be reset by hyper-h2 in this state
        else:
            how_now = how
            if stage == "mid-upload":
                sid = c.request("POST", key, headers=[("content-length", "1000000")], body=b"x" * 30000, end=False)
                assert up.wait_for(lambda: up.hits(key) == 1, 3), "the upload never reached the app"
            elif stage == "waiting":
                sid = c.request("GET", key)
                assert up.wait_for(lambda: up.hits(key) == 1, 3)
            else:
                sid = c.request("GET", key)
                c.pump(lambda: c.responses[sid].data_frames > 0, 3)
        if how_now == "rst_stream":
            c.reset_stream(sid, ErrorCodes.CANCEL)
            r = c.get(f"/{proto}/f/ok/after-cancel", timeout=5)
            assert r.status == 200 and r.body == b"ok", f"the connection did not survive a cancelled stream: {r!r}"
        else:
            _rst_close(c.sock) if stage == "waiting" else c.sock.close()
    finally:
        c.close()
    time.sleep(0.1)
    if stage == "mid-head":
        assert up.hits(key) == 0
    else:
        e = rig.log(key)
        want = (200, "client_closed") if stage == "mid-download" else (499, "client_closed")
        assert (e["status"], e["error"]) == want, e
        assert e["duration_ms"] < 400, f"the abandoned stream was noticed only after {e['duration_ms']} ms"
        if stage == "mid-upload":
            recs = [r for r in (rig.fh1.records if proto == "h1" else rig.fh2.records) if key in (r.path or "")]
            assert recs and not recs[0].complete, "an upload whose client vanished was completed upstream"
    rig.assert_clean(f"h2 client gone {stage} ({how}) towards {proto}")


# ---------------------------------------------------------------------------------------------
# 5. Half-closed clients, 1-byte writes, big heads, never-reading clients


@pytest.mark.parametrize("proto", ["h1", "h2"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_half_closed_client_towards_each_cluster(rig, proto, method):
    """The client shuts down its sending side right after the request (POST: after its body);
    the answer of a slow upstream (trickled over 0.3 s) still arrives whole, then EOF."""
    key = rig.key(proto, "trickle-body/15", f"/half-{method}")
    with Conn(rig.p.port, 6) as c:
        c.request(method, key, body=b"h" * 2000 if method == "POST" else None)
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response(method, timeout=5)
        assert r.status == 200 and r.body == b"abcdefghijklmnopqrst", r
        closed, extra = c.wait_closed(3)
        assert closed and extra == b"", extra
    rig.assert_clean(f"half-closed {method} to {proto}")


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_one_byte_writes_big_head_and_chunk_extension(rig, proto):
    """A request with 90 headers and 20 KiB of header bytes written one byte per send, with a
    chunked body whose chunk extension is 3 KiB (under the 4 KiB line limit): forwarded intact
    (extension dropped), while a request goes through the same pool meanwhile."""
    key = rig.key(proto, "ok", "/bytewise")
    hdrs = "".join(f"X-H{i}: {'v' * 220}\r\n" for i in range(90))
    raw = (f"POST {key} HTTP/1.1\r\nHost: a\r\n{hdrs}Transfer-Encoding: chunked\r\n\r\n").encode() \
        + b"5;" + b"e" * 3000 + b"\r\nhello\r\n0\r\n\r\n"
    with Conn(rig.p.port, 10) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(raw)):
            c.sock.send(raw[i:i + 1])
        r = c.read_response(timeout=5)
        assert r.status == 200 and r.body == b"ok", r
    if proto == "h1":
        rec = rig.fh1.find(key)
        assert rec.body == b"hello" and b"eee" not in rec.raw_body_prefix, rec.raw_body_prefix[:100]
        assert len([k for k, _ in rec.headers if k.lower().startswith("x-h")]) == 90
    else:
        rec = rig.fh2.find(key)
        assert rec.body == b"hello" and len([k for k, _ in rec.headers if k.startswith("x-h")]) == 90
    rig.assert_clean(f"byte-wise big head to {proto}")


def test_never_reading_clients_keep_memory_bounded(rig):
    """20 HTTP/1.1 clients and one HTTP/2 client with 10 streams ask for 32 MiB each and never
    read: back-pressure stops the upstreams; the proxy's resident memory grows by a bounded
    amount (its per-connection buffers), not by what the upstreams could send. Then the clients
    go away and everything is given back."""
    for _ in range(3):  # warm the buffer pool
        with Conn(rig.p.port) as c:
            c.request("GET", "/h1/big/1000000")
            assert len(c.read_response().body) == 1000000
    rss0 = rig.p.proc_status("VmRSS")
    size = 32 * 1024 * 1024
    conns = []
    for i in range(20):
        c = Conn(rig.p.port, 5)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.request("GET", f"/{'h1' if i % 2 == 0 else 'h2'}/big/{size}/unread{i}")
        conns.append(c)
    h2c = H2Client(rig.p.port, timeout=5)
    h2c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for i in range(10):
        h2c.request("GET", f"/{'h1' if i % 2 == 0 else 'h2'}/big/{size}/h2unread{i}")
    try:
        time.sleep(1.5)  # the upstreams push as fast as the proxy lets them
        rss1 = rig.p.proc_status("VmRSS")
        time.sleep(0.5)
        rss2 = rig.p.proc_status("VmRSS")
        grow = max(rss1, rss2) - rss0
        print(f"never-reading clients: RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} -> {rss2 / 2**20:.1f} MiB")
        assert grow < 24 * 2**20, f"RSS grew {grow / 2**20:.1f} MiB with 30 never-reading streams of 32 MiB"
        assert rss2 - rss1 < 4 * 2**20, f"RSS still growing: {rss1 / 2**20:.1f} -> {rss2 / 2**20:.1f} MiB"
    finally:
        for c in conns:
            _rst_close(c.sock)
        _rst_close(h2c.sock)
    rig.assert_clean("never-reading clients")
