"""outrider-bench (SPEC §11) against local asyncio targets whose behaviour is known: request
counts match what the target counted, the open-loop rate is held, a stalling target shows in the
corrected (open-loop) p99, status counts and error kinds, `--json`'s keys, https with
`--insecure`, and exit codes 1 (bad arguments) and 2 (nothing could connect). The same for
HTTP/2 (`--h2c`, `--h2` with `-m` streams) against a target written with the `h2` package, which
also shows the streams really are multiplexed, GOAWAYs are followed without losing a request,
and resets and timeouts count per stream.

The binary comes from OUTRIDER_BENCH_BIN, else .build/release/outrider-bench."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest

from wire import free_port

REPO = Path(__file__).resolve().parents[2]


def bench_bin_path() -> str:
    return os.environ.get("OUTRIDER_BENCH_BIN") or str(REPO / ".build" / "release" / "outrider-bench")


@pytest.fixture(scope="session")
def bench_bin() -> str:
    p = bench_bin_path()
    if not (os.path.isfile(p) and os.access(p, os.X_OK)):
        pytest.fail(f"outrider-bench binary not found at {p} (set OUTRIDER_BENCH_BIN or run scripts/test.sh)")
    return p


BIG_BODY = bytes(range(256)) * 1200   # 300 KiB


class Target:
    """A keep-alive HTTP/1.1 server that counts the requests it read completely.

    mode: ok (200, 5-byte body), big (300 KiB body), status503, chunked, close (Connection: close after each
    answer), stall (every answer due in the first half of each second waits for its second
    half), reset (answers the first request of a connection, resets on the second)."""

    def __init__(self, mode: str = "ok", ssl_context: ssl.SSLContext | None = None):
        self.mode = mode
        self.ssl_context = ssl_context
        self.count = 0
        self.connections = 0
        self.server = None
        self.port = 0
        self.t0 = time.monotonic()
        self._tasks: set[asyncio.Task] = set()

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_context, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        self.t0 = time.monotonic()
        return self

    async def stop(self):
        self.server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def url(self, path: str = "/") -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        on_connection = 0
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                self.count += 1
                on_connection += 1
                if self.mode == "reset" and on_connection % 2 == 0:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                if self.mode == "stall":
                    phase = (time.monotonic() - self.t0) % 1.0
                    if phase < 0.5:
                        await asyncio.sleep(0.5 - phase)
                if self.mode == "status503":
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
                elif self.mode == "big":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG_BODY) + BIG_BODY)
                elif self.mode == "chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n")
                elif self.mode == "close":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
                    await writer.drain()
                    writer.close()
                    return
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._tasks.discard(task)
            writer.close()


class H2Target:
    """An HTTP/2 server (prior knowledge over cleartext, or TLS with ALPN h2) that counts the
    requests it read completely, the connections, the most streams open at once on each
    connection, and the RST_STREAMs it received; it keeps the first request's head and body.

    mode: ok (200, 5-byte body), big (300 KiB body, paced by flow control), status503,
    reset (every second request of a connection gets RST_STREAM INTERNAL_ERROR instead of an
    answer), goaway (after the 50th request of a connection: GOAWAY naming it as the last, then
    close; later streams are left unprocessed), drop (every fifth request of a connection is
    never answered)."""

    def __init__(self, mode: str = "ok", ssl_context: ssl.SSLContext | None = None):
        self.mode = mode
        self.ssl_context = ssl_context
        self.count = 0
        self.connections = 0
        self.max_open: list[int] = []
        self.resets_received: list[int] = []
        self.first_head: list[tuple[str, str]] | None = None
        self.first_body = b""
        self.server = None
        self.port = 0
        self._tasks: set[asyncio.Task] = set()

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_context, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        self.server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def url(self, path: str = "/") -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        index = self.connections
        self.connections += 1
        self.max_open.append(0)
        self.resets_received.append(0)
        task = asyncio.current_task()
        self._tasks.add(task)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100})
        writer.write(conn.data_to_send())
        heads: dict[int, list] = {}
        bodies: dict[int, bytearray] = {}
        pending: dict[int, bytes] = {}   # response bytes waiting for flow-control window
        on_connection = 0
        going_away = False
        try:
            while not going_away:
                data = await reader.read(65536)
                if not data:
                    return
                ended = []
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        heads[event.stream_id] = event.headers
                        bodies[event.stream_id] = bytearray()
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                        bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                    elif isinstance(event, h2.events.StreamEnded):
                        ended.append(event.stream_id)
                    elif isinstance(event, h2.events.StreamReset):
                        self.resets_received[index] += 1
                        heads.pop(event.stream_id, None)
                        pending.pop(event.stream_id, None)
                # Streams whose request was read and not answered yet.
                self.max_open[index] = max(self.max_open[index], len(heads))
                for stream_id in ended:
                    if stream_id not in heads:
                        continue
                    head = heads.pop(stream_id)
                    body = bytes(bodies.pop(stream_id, b""))
                    self.count += 1
                    on_connection += 1
                    if self.first_head is None:
                        self.first_head, self.first_body = head, body
                    if self.mode == "reset" and on_connection % 2 == 0:
                        conn.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                    elif self.mode == "drop" and on_connection % 5 == 0:
                        pass
                    elif self.mode == "status503":
                        conn.send_headers(stream_id, [(":status", "503"), ("content-length", "4")])
                        conn.send_data(stream_id, b"busy", end_stream=True)
                    elif self.mode == "big":
                        conn.send_headers(stream_id, [(":status", "200"), ("content-length", str(len(BIG_BODY)))])
                        pending[stream_id] = BIG_BODY
                    else:
                        conn.send_headers(stream_id, [(":status", "200"), ("content-length", "5")])
                        conn.send_data(stream_id, b"hello", end_stream=True)
                    if self.mode == "goaway" and on_connection == 50:
                        # Graceful: this stream is the last one processed; later ones never were.
                        conn.close_connection(last_stream_id=stream_id)
                        going_away = True
                        break
                self._send_pending(conn, pending)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError, h2.exceptions.ProtocolError):
            return
        finally:
            self._tasks.discard(task)
            writer.close()

    @staticmethod
    def _send_pending(conn, pending: dict[int, bytes]):
        for stream_id in list(pending):
            data = pending[stream_id]
            while data:
                size = min(len(data), conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
                if size <= 0:
                    break
                conn.send_data(stream_id, data[:size], end_stream=size == len(data))
                data = data[size:]
            if data:
                pending[stream_id] = data
            else:
                del pending[stream_id]


@pytest.fixture
def make_target(loop_thread):
    made = []

    def make(mode="ok", ssl_context=None) -> Target:
        target = loop_thread.run(Target(mode, ssl_context).start())
        made.append(target)
        return target

    yield make
    for target in made:
        loop_thread.run(target.stop())


@pytest.fixture
def make_h2_target(loop_thread):
    made = []

    def make(mode="ok", ssl_context=None) -> H2Target:
        target = loop_thread.run(H2Target(mode, ssl_context).start())
        made.append(target)
        return target

    yield make
    for target in made:
        loop_thread.run(target.stop())


def run_bench(bench_bin, *args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([bench_bin, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def run_json(bench_bin, *args, expect_rc=0, timeout=60) -> dict:
    proc = run_bench(bench_bin, "--json", *args, timeout=timeout)
    assert proc.returncode == expect_rc, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json must print exactly one line: {proc.stdout!r}"
    return json.loads(lines[0])


SPEC_KEYS = {"requests", "duration_s", "rps", "bytes_per_s", "status", "errors", "latency_ms"}
LATENCY_KEYS = {"p50", "p90", "p99", "p999", "max", "mean"}


def test_request_count_matches_target(bench_bin, make_target):
    target = make_target()
    result = run_json(bench_bin, "-t", "2", "-c", "8", "-n", "2000", target.url("/count"))
    assert result["requests"] == 2000
    assert target.count == 2000
    assert result["status"] == {"200": 2000}
    assert sum(result["errors"].values()) == 0
    # 2000 answers of 43 bytes (head 38 + body 5).
    assert result["bytes_per_s"] * result["duration_s"] == pytest.approx(2000 * 43, rel=0.01)


def test_request_count_pipelined_and_chunked(bench_bin, make_target):
    target = make_target("chunked")
    result = run_json(bench_bin, "-t", "1", "-c", "4", "--pipeline", "8", "-n", "3001", target.url())
    assert result["requests"] == 3001 == target.count
    assert result["status"] == {"200": 3001}


def test_large_bodies_and_joined_short_options(bench_bin, make_target):
    target = make_target("big")
    result = run_json(bench_bin, "-t1", "-c3", "-n200", "--pipeline", "2", target.url())
    assert result["requests"] == 200 == target.count
    head = len(b"HTTP/1.1 200 OK\r\nContent-Length: 307200\r\n\r\n")
    assert result["bytes_per_s"] * result["duration_s"] == pytest.approx(200 * (head + len(BIG_BODY)), rel=0.01)


def test_connection_close_reconnects(bench_bin, make_target):
    target = make_target("close")
    result = run_json(bench_bin, "-t", "1", "-c", "4", "-n", "300", target.url())
    assert result["requests"] == 300 == target.count
    assert target.connections >= 300
    assert sum(result["errors"].values()) == 0


def test_duration_closed_loop_counts(bench_bin, make_target):
    target = make_target()
    connections = 6
    result = run_json(bench_bin, "-t", "2", "-c", str(connections), "-d", "2s", target.url())
    assert result["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert result["requests"] > 100
    # What the target read = what was answered and recorded, plus at most one request in
    # flight per connection when the run ended.
    assert result["requests"] <= target.count <= result["requests"] + connections
    assert result["rps"] == pytest.approx(result["requests"] / result["duration_s"], rel=0.01)


def test_open_loop_rate_is_held(bench_bin, make_target):
    target = make_target()
    result = run_json(bench_bin, "-t", "2", "-c", "10", "--rate", "1000", "-d", "5s", target.url())
    assert target.count == pytest.approx(5000, rel=0.02)
    assert result["requests"] == pytest.approx(5000, rel=0.02)
    assert result["rps"] == pytest.approx(1000, rel=0.02)
    # A fast target at a modest rate: the latencies are small.
    assert result["latency_ms"]["p50"] < 50


def test_open_loop_latency_shows_stalls(bench_bin, make_target):
    """The target stalls every answer for the first 500 ms of each second. Measured from the
    intended send time (coordinated omission corrected), a quarter of the requests wait 250 ms
    or more and p99 reflects the stall; a closed-loop tool counts only the few requests that
    were on the wire when each stall began and hides it."""
    target = make_target("stall")
    opened = run_json(bench_bin, "-t", "1", "-c", "4", "--rate", "200", "-d", "5s", target.url())
    assert opened["latency_ms"]["p99"] >= 400, opened
    assert opened["latency_ms"]["p50"] >= 1, opened
    assert opened["requests"] == pytest.approx(1000, rel=0.05)

    closed_target = make_target("stall")
    closed = run_json(bench_bin, "-t", "1", "-c", "4", "-d", "5s", closed_target.url())
    # The same stall seen by a closed loop: only its max shows it, p99 hides it.
    assert closed["latency_ms"]["max"] >= 400, closed
    assert closed["latency_ms"]["p99"] < 100, closed


def test_status_counts(bench_bin, make_target):
    target = make_target("status503")
    result = run_json(bench_bin, "-t", "1", "-c", "4", "-n", "500", target.url())
    assert result["status"] == {"503": 500}
    assert result["requests"] == 500 == target.count


def test_reset_connections_count_read_errors(bench_bin, make_target):
    target = make_target("reset")
    result = run_json(bench_bin, "-t", "1", "-c", "4", "-d", "1s", target.url())
    assert result["status"].get("200", 0) > 0
    assert result["errors"]["read"] > 0
    # Every second request on a connection is reset: as many errors as answers (± in flight).
    assert result["errors"]["read"] == pytest.approx(result["status"]["200"], abs=8)
    assert result["errors"]["connect"] == 0


def test_refused_is_a_connect_error_and_exit_2(bench_bin):
    port = free_port()   # nothing listens there
    started = time.monotonic()
    result = run_json(bench_bin, "-c", "3", "-d", "10s", f"http://127.0.0.1:{port}/", expect_rc=2)
    assert time.monotonic() - started < 5, "a target that refuses everything must end the run early"
    assert result["errors"]["connect"] >= 3
    assert result["requests"] == 0
    proc = run_bench(bench_bin, "-c", "1", "-n", "10", f"http://127.0.0.1:{port}/")
    assert proc.returncode == 2
    assert "could not connect" in proc.stderr and "refused" in proc.stderr.lower()


def test_unresolvable_host_exit_2(bench_bin):
    proc = run_bench(bench_bin, "-n", "1", "http://no-such-host.invalid/")
    assert proc.returncode == 2, proc.stderr


def test_json_has_every_key(bench_bin, make_target):
    target = make_target()
    result = run_json(bench_bin, "-c", "2", "-d", "500ms", "--warmup", "200ms", target.url())
    assert set(result) == SPEC_KEYS
    assert set(result["latency_ms"]) == LATENCY_KEYS
    assert set(result["errors"]) >= {"connect", "read", "write", "timeout"}
    assert all(isinstance(v, int) for v in result["errors"].values())
    assert all(isinstance(v, int) and k.isdigit() for k, v in result["status"].items())
    for key in ("duration_s", "rps", "bytes_per_s"):
        assert isinstance(result[key], (int, float))
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    # Warmup requests reached the target but are not in the result.
    assert target.count > result["requests"]


def test_human_output(bench_bin, make_target):
    target = make_target()
    proc = run_bench(bench_bin, "-c", "2", "-n", "100", "-X", "POST", "-H", "X-Test: 1", "--body", "hello", target.url())
    assert proc.returncode == 0, proc.stderr
    for word in ("requests", "req/s", "duration", "transfer", "status", "200: 100", "errors", "latency (ms)", "p99.9"):
        assert word in proc.stdout, proc.stdout
    # Not a terminal: no progress line.
    assert proc.stderr == ""
    assert target.count == 100


def test_timeouts_counted(bench_bin, make_target):
    target = make_target("stall")
    # Every request sent in the first half of a second waits up to 500 ms: a 100 ms timeout
    # expires on some.
    result = run_json(bench_bin, "-c", "2", "-d", "2s", "--timeout", "100ms", target.url())
    assert result["errors"]["timeout"] > 0
    assert result["latency_ms"]["max"] < 150


@pytest.fixture(scope="module")
def self_signed_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cert")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "2",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def self_signed(self_signed_files):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed_files)
    return context


@pytest.fixture(scope="module")
def self_signed_h2(self_signed_files):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed_files)
    context.set_alpn_protocols(["h2"])
    return context


def test_https_insecure(bench_bin, make_target, self_signed):
    target = make_target("ok", ssl_context=self_signed)
    result = run_json(bench_bin, "--insecure", "-t", "1", "-c", "4", "-n", "400", "--pipeline", "2", target.url())
    assert result["requests"] == 400 == target.count
    assert result["status"] == {"200": 400}
    # Without --insecure the self-signed certificate is refused: nothing connects.
    proc = run_bench(bench_bin, "-c", "2", "-n", "10", target.url())
    assert proc.returncode == 2
    assert "certificate" in proc.stderr


@pytest.mark.parametrize("args", [
    ["-c", "0", "http://127.0.0.1:1/"],
    ["-t", "4", "-c", "2", "http://127.0.0.1:1/"],
    ["-d", "1s", "-n", "5", "http://127.0.0.1:1/"],
    ["-d", "soon", "http://127.0.0.1:1/"],
    ["--rate", "-3", "http://127.0.0.1:1/"],
    ["--pipeline", "0", "http://127.0.0.1:1/"],
    ["-H", "NoColon", "http://127.0.0.1:1/"],
    ["ftp://127.0.0.1:1/"],
    ["http://127.0.0.1:99999/"],
    ["--no-such-flag", "http://127.0.0.1:1/"],
    [],
    ["--body", "a", "--body-file", "/etc/hostname", "http://127.0.0.1:1/"],
    ["--body-file", "/nonexistent/file", "http://127.0.0.1:1/"],
    ["--h2c", "https://127.0.0.1:1/"],
    ["--h2", "http://127.0.0.1:1/"],
    ["--h2c", "--h2", "http://127.0.0.1:1/"],
    ["--h2c", "-m", "0", "http://127.0.0.1:1/"],
    ["--h2c", "--pipeline", "2", "http://127.0.0.1:1/"],
    ["--h2c", "-H", "Connection: close", "http://127.0.0.1:1/"],
    ["h2c://127.0.0.1:1/"],
])
def test_bad_arguments_exit_1(bench_bin, args):
    proc = run_bench(bench_bin, *args)
    assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
    assert proc.stderr.strip(), "the problem must be named on stderr"
    assert proc.stdout == ""


def test_streams_need_http2(bench_bin):
    proc = run_bench(bench_bin, "-m", "10", "http://127.0.0.1:1/")
    assert proc.returncode == 1
    assert "--h2c" in proc.stderr and "--h2" in proc.stderr


# ------------------------------------------------------------------------------------ HTTP/2


def test_h2c_request_count_and_multiplexing(bench_bin, make_h2_target):
    target = make_h2_target()
    result = run_json(bench_bin, "--h2c", "-t", "2", "-c", "2", "-m", "10", "-n", "3001", target.url("/count"))
    assert result["requests"] == 3001 == target.count
    assert result["status"] == {"200": 3001}
    assert sum(result["errors"].values()) == 0
    # Two TCP connections, each with ten streams open at once (never more).
    assert target.connections == 2
    assert target.max_open == [10, 10], target.max_open


def test_h2c_one_stream_by_default(bench_bin, make_h2_target):
    target = make_h2_target()
    result = run_json(bench_bin, "--h2c", "-t", "1", "-c", "3", "-n", "300", target.url())
    assert result["requests"] == 300 == target.count
    assert target.connections == 3
    assert max(target.max_open) == 1


def test_h2c_method_headers_body(bench_bin, make_h2_target):
    target = make_h2_target()
    proc = run_bench(bench_bin, "--h2c", "-c", "1", "-m", "4", "-n", "40", "-X", "POST", "-H", "X-Test: 1",
                     "-H", "Host: app.example", "--body", "hello", target.url("/submit?x=1"))
    assert proc.returncode == 0, proc.stderr
    for word in ("HTTP/2", "4 streams each", "200: 40", "reset 0"):
        assert word in proc.stdout, proc.stdout
    assert target.count == 40
    head = dict(target.first_head)
    assert head[":method"] == "POST"
    assert head[":path"] == "/submit?x=1"
    assert head[":scheme"] == "http"
    assert head[":authority"] == "app.example"
    assert head["x-test"] == "1"
    assert head["content-length"] == "5"
    assert "host" not in head
    assert target.first_body == b"hello"


def test_h2c_large_bodies(bench_bin, make_h2_target):
    target = make_h2_target("big")
    result = run_json(bench_bin, "--h2c", "-t", "1", "-c", "2", "-m", "4", "-n", "60", target.url())
    assert result["requests"] == 60 == target.count
    assert result["status"] == {"200": 60}
    # Every body went through (frame headers add a little).
    assert result["bytes_per_s"] * result["duration_s"] >= 60 * len(BIG_BODY)


def test_h2c_duration_and_rate(bench_bin, make_h2_target):
    target = make_h2_target()
    result = run_json(bench_bin, "--h2c", "-t", "2", "-c", "2", "-m", "10", "--rate", "1000", "-d", "4s", target.url())
    assert target.count == pytest.approx(4000, rel=0.02)
    assert result["requests"] == pytest.approx(4000, rel=0.02)
    assert result["rps"] == pytest.approx(1000, rel=0.02)
    assert result["duration_s"] == pytest.approx(4.0, abs=0.05)
    assert result["latency_ms"]["p50"] < 50
    assert sum(result["errors"].values()) == 0


def test_h2c_status_counts(bench_bin, make_h2_target):
    target = make_h2_target("status503")
    result = run_json(bench_bin, "--h2c", "-t", "1", "-c", "2", "-m", "8", "-n", "500", target.url())
    assert result["status"] == {"503": 500}
    assert result["requests"] == 500 == target.count


def test_h2c_stream_resets_count_as_errors(bench_bin, make_h2_target):
    target = make_h2_target("reset")
    result = run_json(bench_bin, "--h2c", "-t", "1", "-c", "2", "-m", "6", "-n", "400", target.url())
    # Every second request of a connection is reset: half answered, half errors, nothing lost.
    assert target.count == 400
    assert result["requests"] + result["errors"]["reset"] == 400
    assert result["errors"]["reset"] == pytest.approx(200, abs=2)
    assert result["status"] == {"200": result["requests"]}
    assert result["errors"]["connect"] == result["errors"]["read"] == result["errors"]["protocol"] == 0
    # A reset stream does not cost the connection.
    assert target.connections == 2


def test_h2c_goaway_loses_no_request(bench_bin, make_h2_target):
    """The target sends GOAWAY after 50 requests per connection and closes: the streams it
    left unprocessed are sent again on a new connection, so -n stays exact and nothing counts
    as an error."""
    target = make_h2_target("goaway")
    result = run_json(bench_bin, "--h2c", "-t", "1", "-c", "2", "-m", "10", "-n", "1000", target.url())
    assert result["requests"] == 1000 == target.count
    assert sum(result["errors"].values()) == 0, result["errors"]
    assert target.connections >= 20


def test_h2c_stream_timeouts(bench_bin, make_h2_target):
    target = make_h2_target("drop")
    result = run_json(bench_bin, "--h2c", "-t", "1", "-c", "1", "-m", "4", "-d", "2s", "--timeout", "200ms", target.url())
    assert result["errors"]["timeout"] > 0
    assert result["status"].get("200", 0) > 0
    # Unanswered streams are cancelled one by one; the connection stays.
    assert target.connections == 1
    assert sum(target.resets_received) >= result["errors"]["timeout"] - 4
    # Answers come within the timeout (plus the loop's timer granularity) or not at all.
    assert result["latency_ms"]["max"] < 250


def test_h2c_json_has_every_key(bench_bin, make_h2_target):
    target = make_h2_target()
    result = run_json(bench_bin, "--h2c", "-c", "2", "-m", "5", "-d", "500ms", "--warmup", "200ms", target.url())
    assert set(result) == SPEC_KEYS
    assert set(result["latency_ms"]) == LATENCY_KEYS
    assert set(result["errors"]) >= {"connect", "read", "write", "timeout", "reset"}
    assert all(isinstance(v, int) for v in result["errors"].values())
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert target.count > result["requests"] > 0


def test_h2c_refused_exit_2(bench_bin):
    port = free_port()
    result = run_json(bench_bin, "--h2c", "-c", "2", "-m", "10", "-d", "10s", f"http://127.0.0.1:{port}/", expect_rc=2)
    assert result["errors"]["connect"] >= 2
    assert result["requests"] == 0


def test_h2_over_tls_insecure(bench_bin, make_h2_target, self_signed_h2):
    target = make_h2_target("ok", ssl_context=self_signed_h2)
    result = run_json(bench_bin, "--h2", "--insecure", "-t", "1", "-c", "2", "-m", "10", "-n", "1000", target.url())
    assert result["requests"] == 1000 == target.count
    assert result["status"] == {"200": 1000}
    assert target.connections == 2
    assert target.max_open == [10, 10], target.max_open
    # Without --insecure the self-signed certificate is refused: nothing connects.
    proc = run_bench(bench_bin, "--h2", "-c", "2", "-n", "10", target.url())
    assert proc.returncode == 2
    assert "certificate" in proc.stderr


def test_h2_needs_alpn_h2(bench_bin, make_target, self_signed):
    # An HTTP/1.1-only TLS server: ALPN does not pick h2, so no connection is usable.
    target = make_target("ok", ssl_context=self_signed)
    proc = run_bench(bench_bin, "--h2", "--insecure", "-c", "1", "-n", "10", target.url())
    assert proc.returncode == 2
    assert "ALPN" in proc.stderr
    assert target.count == 0
