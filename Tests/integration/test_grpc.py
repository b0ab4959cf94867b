"""gRPC through the proxy (SPEC §3: "gRPC (h2 both sides, trailers, streaming) passes through
unchanged"): a grpcio server with generic handlers (bytes in, bytes out: no protobuf) on
127.0.0.1 behind a cluster with `protocol: h2c`, and a grpcio client on an insecure channel to
the proxy's cleartext listener (h2c by prior knowledge). Unary with initial and trailing
metadata, server streaming (order), client streaming, bidirectional ping-pong (each answer
awaited before the next message: nothing may be buffered), a non-OK status whose message needs
percent-encoding, a client deadline, 4 MiB messages. `te: trailers` must reach the server
(grpc-core refuses a request without it), so every successful call shows it did.

`test_harness_*` run the same client against the server directly: when they pass and the
others fail, the proxy is at fault."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from concurrent import futures

import grpc
import pytest

SERVICE = "outrider.test.Echo"
MiB = 1024 * 1024
OPTIONS = [("grpc.max_receive_message_length", 16 * MiB), ("grpc.max_send_message_length", 16 * MiB),
           ("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
UNICODE_MESSAGE = "nicht gefunden: Grüße ✓ 100% — 日本語 \n tab\t"


class EchoService:
    """The handlers; `seen` keeps each call's invocation metadata and peer."""

    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()

    def _note(self, method, context):
        with self.lock:
            self.seen.append((method, dict(context.invocation_metadata()), context.peer()))

    def echo(self, request: bytes, context) -> bytes:
        self._note("Echo", context)
        context.send_initial_metadata((("x-initial", "hello"),))
        context.set_trailing_metadata((("x-trailing", "done"), ("x-len", str(len(request)))))
        return request

    def count(self, request: bytes, context):
        self._note("Count", context)
        for i in range(int(request or b"100")):
            yield b"msg-%03d" % i

    def collect(self, request_iterator, context) -> bytes:
        self._note("Collect", context)
        h, n, total = hashlib.sha256(), 0, 0
        for m in request_iterator:
            h.update(m)
            n += 1
            total += len(m)
        return f"count={n};bytes={total};sha256={h.hexdigest()}".encode()

    def pingpong(self, request_iterator, context):
        self._note("PingPong", context)
        for m in request_iterator:
            yield b"pong:" + m

    def fail(self, request: bytes, context):
        self._note("Fail", context)
        context.abort(grpc.StatusCode.NOT_FOUND, UNICODE_MESSAGE)

    def slow(self, request: bytes, context) -> bytes:
        self._note("Slow", context)
        deadline = time.monotonic() + 5
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(0.02)
        return b"too late"


@pytest.fixture(scope="module")
def grpc_backend():
    svc = EchoService()
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(svc.echo),
        "Count": grpc.unary_stream_rpc_method_handler(svc.count),
        "Collect": grpc.stream_unary_rpc_method_handler(svc.collect),
        "PingPong": grpc.stream_stream_rpc_method_handler(svc.pingpong),
        "Fail": grpc.unary_unary_rpc_method_handler(svc.fail),
        "Slow": grpc.unary_unary_rpc_method_handler(svc.slow),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    assert port, "grpc server could not bind"
    server.start()
    svc.port = port
    yield svc
    server.stop(grace=0).wait(5)


@pytest.fixture(scope="module")
def grpc_proxy(outrider_bin, tmp_path_factory, grpc_backend):
    from conftest import _report, start_proxy

    p = start_proxy(outrider_bin, tmp_path_factory.mktemp("grpc"),
                    clusters=[{"name": "grpc", "endpoints": [f"127.0.0.1:{grpc_backend.port}"],
                               "connect_timeout": "1s", "protocol": "h2c"}],
                    routes=[{"name": "grpc", "match": {"path_prefix": f"/{SERVICE}"}, "cluster": "grpc",
                             "timeout": "0s"}],
                    listener={"protocols": None})
    yield p
    problem = p.stop()
    if problem or p.proc.returncode != 0:
        _report(p)
    assert not problem, f"outrider pid {p.pid}: {problem}"


class Stub:
    def __init__(self, channel):
        m = lambda name: f"/{SERVICE}/{name}"  # noqa: E731
        self.echo = channel.unary_unary(m("Echo"))
        self.count = channel.unary_stream(m("Count"))
        self.collect = channel.stream_unary(m("Collect"))
        self.pingpong = channel.stream_stream(m("PingPong"))
        self.fail = channel.unary_unary(m("Fail"))
        self.slow = channel.unary_unary(m("Slow"))


def _channel(port):
    ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS)
    grpc.channel_ready_future(ch).result(timeout=5)
    return ch


@pytest.fixture
def stub(grpc_proxy):
    """A channel to the proxy's cleartext listener."""
    assert grpc_proxy.alive(), "the module's proxy died in an earlier test"
    ch = _channel(grpc_proxy.port)
    yield Stub(ch)
    ch.close()


@pytest.fixture
def direct_stub(grpc_backend):
    ch = _channel(grpc_backend.port)
    yield Stub(ch)
    ch.close()


# ---------------------------------------------------------------------------------------------
# the calls, each against a stub (the proxy, or the backend directly)


def check_unary(stub, backend):
    payload = os.urandom(1000)
    resp, call = stub.echo.with_call(payload, timeout=10, metadata=(("x-client-meta", "c1"),))
    assert resp == payload
    assert call.code() == grpc.StatusCode.OK
    initial = dict(call.initial_metadata())
    trailing = dict(call.trailing_metadata())
    assert initial.get("x-initial") == "hello", f"initial metadata lost: {call.initial_metadata()}"
    assert trailing.get("x-trailing") == "done" and trailing.get("x-len") == "1000", \
        f"trailing metadata lost: {call.trailing_metadata()}"
    method, meta, peer = [s for s in backend.seen if s[0] == "Echo"][-1]
    assert meta.get("x-client-meta") == "c1", meta


def check_server_streaming(stub):
    got = list(stub.count(b"100", timeout=10))
    assert got == [b"msg-%03d" % i for i in range(100)], f"{len(got)} messages, first {got[:3]}, last {got[-3:]}"


def check_client_streaming(stub):
    msgs = [os.urandom(100 + i * 37) for i in range(50)]
    resp = stub.collect(iter(msgs), timeout=10)
    h = hashlib.sha256(b"".join(msgs)).hexdigest()
    assert resp == f"count=50;bytes={sum(map(len, msgs))};sha256={h}".encode(), resp


def check_pingpong(stub, rounds=20):
    q = queue.Queue()

    def requests():
        while True:
            m = q.get()
            if m is None:
                return
            yield m

    responses = stub.pingpong(requests(), timeout=20)
    try:
        for i in range(rounds):
            msg = b"ping-%d" % i
            q.put(msg)
            t0 = time.monotonic()
            got = next(responses)  # the next message is sent only after this answer
            assert got == b"pong:" + msg, (i, got)
            assert time.monotonic() - t0 < 3, f"round {i} took {time.monotonic() - t0:.2f}s"
    finally:
        q.put(None)
    assert list(responses) == []
    assert responses.code() == grpc.StatusCode.OK


def check_status(stub):
    with pytest.raises(grpc.RpcError) as ei:
        stub.fail(b"x", timeout=10)
    e = ei.value
    assert e.code() == grpc.StatusCode.NOT_FOUND, (e.code(), e.details())
    assert e.details() == UNICODE_MESSAGE, f"status message changed on the way: {e.details()!r}"


def check_deadline(stub):
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        stub.slow(b"x", timeout=0.5)
    elapsed = time.monotonic() - t0
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (ei.value.code(), ei.value.details())
    assert elapsed < 2.5, f"DEADLINE_EXCEEDED after {elapsed:.2f}s for a 0.5 s deadline"


def check_large(stub):
    payload = os.urandom(4 * MiB)
    resp = stub.echo(payload, timeout=30)
    assert len(resp) == len(payload) and hashlib.sha256(resp).digest() == hashlib.sha256(payload).digest(), \
        f"4 MiB message came back as {len(resp)} bytes, different"


# ---------------------------------------------------------------------------------------------
# harness self-checks: the client against the server, no proxy


def test_harness_direct_calls(direct_stub, grpc_backend):
    check_unary(direct_stub, grpc_backend)
    check_server_streaming(direct_stub)
    check_client_streaming(direct_stub)
    check_pingpong(direct_stub, rounds=5)
    check_status(direct_stub)
    check_deadline(direct_stub)
    check_large(direct_stub)


# ---------------------------------------------------------------------------------------------
# through the proxy


def test_grpc_unary_with_metadata(stub, grpc_backend, grpc_proxy):
    check_unary(stub, grpc_backend)
    method, meta, peer = [s for s in grpc_backend.seen if s[0] == "Echo"][-1]
    assert "127.0.0.1" in peer, peer
    entry = grpc_proxy.wait_access_log(lambda e: e.get("path") == f"/{SERVICE}/Echo")
    assert entry is not None and entry["proto"] == "HTTP/2" and entry["status"] == 200, entry


def test_grpc_server_streaming_order(stub):
    check_server_streaming(stub)


def test_grpc_client_streaming(stub):
    check_client_streaming(stub)


def test_grpc_bidi_pingpong_not_buffered(stub):
    check_pingpong(stub)


def test_grpc_error_status_and_unicode_message(stub):
    check_status(stub)


def test_grpc_client_deadline_exceeded(stub, grpc_backend):
    check_deadline(stub)
    # the proxy kept serving, and the server saw the cancellation
    assert stub.echo(b"after-deadline", timeout=5) == b"after-deadline"


def test_grpc_large_message_4mib(stub):
    check_large(stub)


def test_grpc_concurrent_calls_one_channel(stub):
    """30 calls in flight on one channel (one h2 connection to the proxy)."""
    with futures.ThreadPoolExecutor(max_workers=30) as ex:
        payloads = [os.urandom(5000 + i) for i in range(30)]
        results = list(ex.map(lambda b: stub.echo(b, timeout=10), payloads))
    assert results == payloads


def _raw_grpc(port, method, payload: bytes):
    """One gRPC call with the HTTP/2 client of h2wire: (response, {field: value} of the response
    head and trailers together, messages)."""
    from h2wire import H2Client

    with H2Client(port, timeout=10) as c:
        r = c.get(f"/{SERVICE}/{method}", method="POST", authority="grpc.test",
                  headers=[("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "5S")],
                  body=b"\x00" + len(payload).to_bytes(4, "big") + payload)
    fields = dict(r.headers)
    fields.update(dict(r.trailers))
    msgs, body = [], r.body
    while len(body) >= 5:
        n = int.from_bytes(body[1:5], "big")
        msgs.append(body[5:5 + n])
        body = body[5 + n:]
    return r, fields, msgs


@pytest.mark.parametrize("method,payload", [("Echo", b"raw bytes \x00\xff"), ("Fail", b"x")])
def test_grpc_status_fields_unchanged_on_the_wire(grpc_backend, grpc_proxy, method, payload):
    """grpc-status and the percent-encoded grpc-message as the server wrote them, byte for byte
    (compared with the same call made directly), whether they come as trailers or trailers-only."""
    d, dfields, dmsgs = _raw_grpc(grpc_backend.port, method, payload)
    p, pfields, pmsgs = _raw_grpc(grpc_proxy.port, method, payload)
    assert d.status == 200 and p.status == 200, (d, p)
    for k in ("grpc-status", "grpc-message", "content-type", "x-trailing"):
        assert pfields.get(k) == dfields.get(k), f"{k}: direct {dfields.get(k)!r}, through the proxy {pfields.get(k)!r}"
    assert pmsgs == dmsgs, (pmsgs, dmsgs)
    if method == "Fail":
        assert pfields["grpc-status"] == "5" and "%" in pfields["grpc-message"], pfields
    else:
        assert pmsgs == [payload] and pfields["grpc-status"] == "0", pfields
    assert p.trailers or p.header("grpc-status"), f"no trailers: {p!r}"
