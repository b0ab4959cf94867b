"""HTTP/2 test clients and helpers for the integration tests (test_http2.py, test_grpc.py).

- `H2Client`: a blocking hyper-h2 client over a socket (cleartext prior knowledge, or TLS with
  ALPN). Many streams at once, request bodies sent as flow control allows (interleaved with
  reading, so a 16 MiB upload and download can share a connection), request trailers,
  WINDOW_UPDATEs as data is read (the initial 65,535-byte windows are kept), SETTINGS frames
  recorded, GOAWAY recorded without giving up the streams still in flight (hyper-h2 alone
  treats any GOAWAY as the end of the connection; frames are fed to it one at a time and the
  state is reopened after a GOAWAY so that a graceful drain can be observed). Inbound header
  validation is off: the tests assert on what the proxy sent, with the wire contents in the
  message, rather than on an h2 exception.
- `RawH2`: frames written by hand (hyperframe + an HPACK encoder of its own) and read back
  one by one, for what a conforming client never does: streams beyond the advertised limit
  before acknowledging SETTINGS, rapid reset, CONTINUATION/SETTINGS/PING/empty-DATA floods.
- `make_pki(dir)`: a CA and a localhost/127.0.0.1 server certificate made with `openssl`.
- `metrics(admin_port)` / `metric_value(...)`: the admin port's /metrics, parsed.
- `curl_run(...)`, `nghttp_run(...)`: the command-line clients, bounded.
"""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CONNECTION_SPECIFIC = ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade")
SETTING_NAMES = {1: "HEADER_TABLE_SIZE", 2: "ENABLE_PUSH", 3: "MAX_CONCURRENT_STREAMS", 4: "INITIAL_WINDOW_SIZE",
                 5: "MAX_FRAME_SIZE", 6: "MAX_HEADER_LIST_SIZE", 8: "ENABLE_CONNECT_PROTOCOL",
                 9: "NO_RFC7540_PRIORITIES"}


def error_name(code) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"0x{int(code):x}"


def _s(b) -> str:
    return b.decode("utf-8", "surrogateescape") if isinstance(b, (bytes, bytearray)) else str(b)


def _b(x) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# A hyper-h2 client


@dataclass
class H2Response:
    stream_id: int
    status: int | None = None
    pseudo: dict = field(default_factory=dict)  # response pseudo-headers (":status")
    headers: list = field(default_factory=list)  # [(name, value)] regular fields as received
    informational: list = field(default_factory=list)  # [(status, headers)] 1xx before the final head
    body: bytes = b""
    trailers: list = field(default_factory=list)
    ended: bool = False  # END_STREAM received
    reset_code: int | None = None  # RST_STREAM from the proxy
    data_frames: int = 0
    t_end: float = 0.0  # time.monotonic() when the stream ended or was reset

    def header(self, name):
        v = self.header_all(name)
        return v[0] if v else None

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header_names(self):
        return {k.lower() for k, _ in self.headers}

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        rst = f" RST_STREAM {error_name(self.reset_code)}" if self.reset_code is not None else ""
        return (f"<H2Response stream {self.stream_id} status={self.status}{rst} ended={self.ended} "
                f"headers={self.headers!r} trailers={self.trailers!r} body[{len(self.body)}]={self.body[:200]!r}>")


class _Out:
    def __init__(self, data: bytes, trailers, end: bool):
        self.view = memoryview(data)
        self.trailers = trailers
        self.end = end


class H2Client:
    """A blocking HTTP/2 client on one TCP (or TLS) connection."""

    def __init__(self, port: int, tls_ctx: ssl.SSLContext | None = None, server_hostname: str | None = "localhost",
                 timeout: float = 10.0, host: str = "127.0.0.1", settings: dict | None = None):
        self.timeout = timeout
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = tls_ctx is not None
        if tls_ctx is not None:
            try:
                self.sock = tls_ctx.wrap_socket(raw, server_hostname=server_hostname)
            except BaseException:
                raw.close()
                raise
            self.alpn = self.sock.selected_alpn_protocol()
        else:
            self.sock = raw
            self.alpn = None
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_inbound_headers=False,
                                        normalize_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.inbuf = bytearray()
        self.responses: dict[int, H2Response] = {}
        self._bodies: dict[int, bytearray] = {}
        self._out: dict[int, _Out] = {}
        self.server_settings: list[dict] = []  # one dict per SETTINGS frame received {code: value}
        self.goaway: dict | None = None  # {"error_code", "last_stream_id", "data"} of the first GOAWAY
        self.goaways: list[dict] = []
        self.eof = False
        self.reset = False
        self.pings_acked = 0
        self.frames_in: list[tuple] = []  # (type, stream id, flags, length) of the last frames received
        self.frame_counts: dict[int, int] = {}  # frames received by type
        self._flush()

    # -- plumbing --------------------------------------------------------------------------------
    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    @property
    def dead(self) -> bool:
        return self.eof or self.reset

    def _flush(self):
        data = self.conn.data_to_send()
        if data and not self.dead:
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError) as e:
                self.reset = True
                self._last_error = e

    def _send_pending(self):
        for sid, out in list(self._out.items()):
            while out.view:
                try:
                    window = self.conn.local_flow_control_window(sid)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    del self._out[sid]
                    break
                n = min(window, self.conn.max_outbound_frame_size, len(out.view))
                if n <= 0:
                    break
                last = n == len(out.view)
                self.conn.send_data(sid, bytes(out.view[:n]), end_stream=last and out.end and not out.trailers)
                out.view = out.view[n:]
            else:
                if sid in self._out:
                    del self._out[sid]
                    try:
                        if out.trailers:
                            self.conn.send_headers(sid, [(_b(k), _b(v)) for k, v in out.trailers], end_stream=True)
                        elif out.end and not self._sent_end(sid):
                            self.conn.end_stream(sid)
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                        pass
        self._flush()

    def _sent_end(self, sid) -> bool:
        st = self.conn.streams.get(sid)
        return st is None or st.state_machine.state.name in ("HALF_CLOSED_LOCAL", "CLOSED")

    def _recv(self, deadline: float) -> bool:
        """Read what is there (wait up to the deadline); False at EOF/reset."""
        if self.dead:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for frames from the proxy")
        if not (self.tls and self.sock.pending()):
            r, _, _ = select.select([self.sock], [], [], remaining)
            if not r:
                raise TimeoutError("timed out waiting for frames from the proxy")
        try:
            self.sock.settimeout(max(0.001, remaining))
            data = self.sock.recv(1 << 20)
        except (socket.timeout, ssl.SSLWantReadError):
            return True
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.inbuf += data
        self._feed()
        return True

    def _feed(self):
        # one frame at a time: after a GOAWAY, reopen hyper-h2's state so that the streams the
        # GOAWAY lets finish can still be read
        while len(self.inbuf) >= 9:
            length = int.from_bytes(self.inbuf[:3], "big")
            if len(self.inbuf) < 9 + length:
                break
            frame = bytes(self.inbuf[: 9 + length])
            del self.inbuf[: 9 + length]
            self.frames_in.append((frame[3], int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF, frame[4], length))
            self.frame_counts[frame[3]] = self.frame_counts.get(frame[3], 0) + 1
            if len(self.frames_in) > 200:
                del self.frames_in[:100]
            events = self.conn.receive_data(frame)
            for ev in events:
                self._handle(ev)
            if self.conn.state_machine.state == ConnectionState.CLOSED and self.goaway is not None:
                self.conn.state_machine.state = ConnectionState.CLIENT_OPEN
        self._send_pending()

    def _handle(self, ev):
        if isinstance(ev, h2.events.ResponseReceived):
            r = self._resp(ev.stream_id)
            for k, v in ev.headers:
                k, v = _s(k), _s(v)
                if k.startswith(":"):
                    r.pseudo[k] = v
                else:
                    r.headers.append((k, v))
            try:
                r.status = int(r.pseudo.get(":status", ""))
            except ValueError:
                r.status = None
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            r = self._resp(ev.stream_id)
            fields = [(_s(k), _s(v)) for k, v in ev.headers]
            r.informational.append(fields)
        elif isinstance(ev, h2.events.DataReceived):
            r = self._resp(ev.stream_id)
            r.data_frames += 1
            self._bodies.setdefault(ev.stream_id, bytearray()).extend(ev.data)
            if ev.flow_controlled_length:
                try:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    pass
        elif isinstance(ev, h2.events.TrailersReceived):
            self._resp(ev.stream_id).trailers = [(_s(k), _s(v)) for k, v in ev.headers]
        elif isinstance(ev, h2.events.StreamEnded):
            r = self._resp(ev.stream_id)
            r.ended = True
            r.t_end = time.monotonic()
            r.body = bytes(self._bodies.pop(ev.stream_id, b""))
        elif isinstance(ev, h2.events.StreamReset):
            r = self._resp(ev.stream_id)
            r.reset_code = int(ev.error_code)
            r.t_end = time.monotonic()
            r.body = bytes(self._bodies.pop(ev.stream_id, b""))
            self._out.pop(ev.stream_id, None)
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.server_settings.append({int(k): v.new_value for k, v in ev.changed_settings.items()})
        elif isinstance(ev, h2.events.PingAckReceived):
            self.pings_acked += 1
        elif isinstance(ev, h2.events.ConnectionTerminated):
            g = {"error_code": int(ev.error_code), "last_stream_id": ev.last_stream_id,
                 "data": ev.additional_data or b""}
            self.goaways.append(g)
            if self.goaway is None:
                self.goaway = g

    def _resp(self, sid) -> H2Response:
        r = self.responses.get(sid)
        if r is None:
            r = self.responses[sid] = H2Response(sid)
        return r

    # -- API -------------------------------------------------------------------------------------
    def pump(self, until, timeout: float | None = None):
        """Read and send until until() is true. Raises TimeoutError with what was seen."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        self._send_pending()
        while not until():
            try:
                if not self._recv(deadline):
                    return
            except TimeoutError:
                raise TimeoutError(f"timed out after {timeout or self.timeout}s; last frames in "
                                   f"(type, stream, flags, len): {self.frames_in[-12:]}; goaway={self.goaway}")

    def settle(self, timeout: float = 5.0):
        """Wait for the server's first SETTINGS frame."""
        self.pump(lambda: self.server_settings or self.dead, timeout)
        return self.server_settings[0] if self.server_settings else None

    def request(self, method: str, path: str, headers=(), body: bytes | None = None, trailers=None,
                authority: str | None = "test.local", scheme: str | None = None, end: bool = True) -> int:
        """Open a stream; returns its id. Body and trailers go out as flow control allows."""
        sid = self.conn.get_next_available_stream_id()
        fields = [(b":method", _b(method)), (b":scheme", _b(scheme or ("https" if self.tls else "http")))]
        if authority is not None:
            fields.append((b":authority", _b(authority)))
        fields.append((b":path", _b(path)))
        fields += [(_b(k), _b(v)) for k, v in headers]
        only_head = body is None and not trailers and end
        self.conn.send_headers(sid, fields, end_stream=only_head)
        self.responses[sid] = H2Response(sid)
        if not only_head:
            self._out[sid] = _Out(body or b"", trailers, end)
        self._send_pending()
        return sid

    def send_more(self, sid: int, data: bytes, end: bool = False, trailers=None):
        """Queue more request body on an open stream (end: finish it)."""
        prev = self._out.get(sid)
        if prev is not None:
            data = bytes(prev.view) + data
        self._out[sid] = _Out(data, trailers, end)
        self._send_pending()

    def reset_stream(self, sid: int, code=ErrorCodes.CANCEL):
        self.conn.reset_stream(sid, code)
        self._out.pop(sid, None)
        self._flush()

    def ping(self, data: bytes = b"12345678"):
        self.conn.ping(data)
        self._flush()

    def done(self, sid) -> bool:
        r = self.responses.get(sid)
        return r is not None and (r.ended or r.reset_code is not None)

    def response(self, sid: int, timeout: float | None = None) -> H2Response:
        self.pump(lambda: self.done(sid) or self.dead, timeout)
        r = self.responses[sid]
        if not (r.ended or r.reset_code is not None):
            raise ConnectionError(f"connection ended (eof={self.eof} reset={self.reset} goaway={self.goaway}) "
                                  f"before stream {sid} finished: {r!r}; last frames {self.frames_in[-12:]}")
        return r

    def responses_for(self, sids, timeout: float | None = None) -> list[H2Response]:
        self.pump(lambda: all(self.done(s) for s in sids) or self.dead, timeout)
        return [self.responses[s] for s in sids]

    def get(self, path, headers=(), method="GET", body=None, trailers=None, timeout=None, **kw) -> H2Response:
        return self.response(self.request(method, path, headers, body, trailers, **kw), timeout)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        try:
            self.pump(lambda: self.dead, timeout)
        except TimeoutError:
            return False
        return True


def assert_no_connection_specific(r: H2Response):
    bad = [(k, v) for k, v in r.headers if k.lower() in CONNECTION_SPECIFIC]
    assert not bad, f"connection-specific header fields in an HTTP/2 response: {bad}; all: {r.headers}"
    upper = [k for k, _ in r.headers if k != k.lower()]
    assert not upper, f"upper-case field names in an HTTP/2 response: {upper}"


# ---------------------------------------------------------------------------------------------
# Frames by hand


class RawH2:
    """Write frames as given; read and decode what comes back, one frame at a time."""

    def __init__(self, port: int, timeout: float = 10.0, tls_ctx: ssl.SSLContext | None = None,
                 server_hostname="localhost", rcvbuf: int | None = None):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect(("127.0.0.1", port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = tls_ctx.wrap_socket(raw, server_hostname=server_hostname) if tls_ctx is not None else raw
        self.tls = tls_ctx is not None
        self.timeout = timeout
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 65536
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self._block = None  # (stream id, bytes) of a header block awaiting CONTINUATION
        self.frames: list = []  # everything read

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    @property
    def dead(self):
        return self.eof or self.reset

    def send(self, data: bytes) -> bool:
        """False when the proxy has closed or reset the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.reset = True
            return False

    # builders ----------------------------------------------------------------------------------
    def preface(self, settings: dict | None = None) -> bytes:
        f = SettingsFrame(0)
        for k, v in (settings or {}).items():
            f.settings[k] = v
        return PREFACE + f.serialize()

    @staticmethod
    def settings_ack() -> bytes:
        return SettingsFrame(0, flags=["ACK"]).serialize()

    @staticmethod
    def settings(values: dict | None = None) -> bytes:
        f = SettingsFrame(0)
        for k, v in (values or {}).items():
            f.settings[k] = v
        return f.serialize()

    def block(self, fields) -> bytes:
        return self.encoder.encode([(_b(k), _b(v)) for k, v in fields])

    def headers(self, sid: int, fields, end_stream=True, end_headers=True, block: bytes | None = None) -> bytes:
        flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
        f = HeadersFrame(sid, flags=flags)
        f.data = block if block is not None else self.block(fields)
        return f.serialize()

    def request_fields(self, path="/", method="GET", authority="test.local", scheme="http", extra=()):
        return [(":method", method), (":scheme", scheme), (":authority", authority), (":path", path), *extra]

    @staticmethod
    def continuation(sid: int, data: bytes, end_headers=False) -> bytes:
        f = ContinuationFrame(sid, flags=["END_HEADERS"] if end_headers else [])
        f.data = data
        return f.serialize()

    @staticmethod
    def data(sid: int, payload: bytes, end_stream=False) -> bytes:
        f = DataFrame(sid, flags=["END_STREAM"] if end_stream else [])
        f.data = payload
        return f.serialize()

    @staticmethod
    def rst(sid: int, code=ErrorCodes.CANCEL) -> bytes:
        return RstStreamFrame(sid, error_code=int(code)).serialize()

    @staticmethod
    def ping(opaque: bytes = b"\0" * 8, ack=False) -> bytes:
        return PingFrame(0, opaque_data=opaque, flags=["ACK"] if ack else []).serialize()

    @staticmethod
    def window_update(sid: int, inc: int) -> bytes:
        return WindowUpdateFrame(sid, window_increment=inc).serialize()

    @staticmethod
    def goaway(last=0, code=ErrorCodes.NO_ERROR) -> bytes:
        return GoAwayFrame(0, last_stream_id=last, error_code=int(code)).serialize()

    # reading -----------------------------------------------------------------------------------
    def _fill(self, deadline) -> bool:
        if self.dead:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for frames")
        if not (self.tls and self.sock.pending()):
            r, _, _ = select.select([self.sock], [], [], remaining)
            if not r:
                raise TimeoutError("timed out waiting for frames")
        try:
            data = self.sock.recv(1 << 20)
        except (socket.timeout, ssl.SSLWantReadError):
            return True
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_frame(self, timeout: float | None = None):
        """The next frame (HEADERS carry .fields once their block is complete); None at EOF/reset."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    head = memoryview(bytes(self.buf[:9]))
                    body = memoryview(bytes(self.buf[9: 9 + length]))
                    del self.buf[: 9 + length]
                    f, _ = Frame.parse_frame_header(head)
                    f.parse_body(body)
                    self._decode(f)
                    self.frames.append(f)
                    return f
            if not self._fill(deadline):
                return None

    def _decode(self, f):
        f.fields = None
        if isinstance(f, HeadersFrame):
            if "END_HEADERS" in f.flags:
                f.fields = [(_s(k), _s(v)) for k, v in self.decoder.decode(bytes(f.data), raw=True)]
            else:
                self._block = (f.stream_id, bytes(f.data), f)
        elif isinstance(f, ContinuationFrame) and self._block is not None:
            sid, data, first = self._block
            data += bytes(f.data)
            if "END_HEADERS" in f.flags:
                first.fields = [(_s(k), _s(v)) for k, v in self.decoder.decode(data, raw=True)]
                f.fields = first.fields
                self._block = None
            else:
                self._block = (sid, data, first)

    def read_until(self, pred, timeout: float) -> list:
        """Frames read until pred(frame) is true (that frame included) or EOF. TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        out = []
        while True:
            f = self.read_frame(max(0.001, deadline - time.monotonic()))
            if f is None:
                return out
            out.append(f)
            if pred(f):
                return out

    def drain(self, timeout: float) -> tuple[list, bool]:
        """Read frames until EOF (True) or until the timeout (False)."""
        out = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                f = self.read_frame(max(0.001, deadline - time.monotonic()))
                if f is None:
                    return out, True
                out.append(f)
        except TimeoutError:
            return out, False

    def drain_fast(self, timeout: float) -> tuple[dict, list, bool]:
        """Read until EOF/reset (closed=True) or the timeout, without decoding most frames: after
        a flood there may be hundreds of thousands of ACKs. Returns ({frame type: count}, the
        GOAWAY and RST_STREAM frames parsed, closed). HEADERS are counted, not HPACK-decoded."""
        counts: dict = {}
        kept = []
        deadline = time.monotonic() + timeout
        closed = False
        while True:
            pos, n = 0, len(self.buf)
            while n - pos >= 9:
                length = int.from_bytes(self.buf[pos:pos + 3], "big")
                if n - pos < 9 + length:
                    break
                ftype = self.buf[pos + 3]
                counts[ftype] = counts.get(ftype, 0) + 1
                if ftype in (3, 7):  # RST_STREAM, GOAWAY
                    f, _ = Frame.parse_frame_header(memoryview(bytes(self.buf[pos:pos + 9])))
                    f.parse_body(memoryview(bytes(self.buf[pos + 9:pos + 9 + length])))
                    f.fields = None
                    kept.append(f)
                pos += 9 + length
            del self.buf[:pos]
            try:
                if not self._fill(deadline):
                    closed = True
                    break
            except TimeoutError:
                break
        return counts, kept, closed

    def answer_pings_and_settings(self, frames):
        """Acknowledge SETTINGS among frames just read (as a conforming client would)."""
        for f in frames:
            if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                self.send(self.settings_ack())


def describe(frames, limit=20) -> str:
    """A short text of frames for assertion messages."""
    out = []
    for f in frames[-limit:]:
        name = type(f).__name__.replace("Frame", "")
        extra = ""
        if isinstance(f, GoAwayFrame):
            extra = f" {error_name(f.error_code)} last={f.last_stream_id} {bytes(f.additional_data)[:80]!r}"
        elif isinstance(f, RstStreamFrame):
            extra = f" {error_name(f.error_code)}"
        elif isinstance(f, SettingsFrame):
            extra = " " + ("ACK" if "ACK" in f.flags else
                           ",".join(f"{SETTING_NAMES.get(k, k)}={v}" for k, v in f.settings.items()))
        elif getattr(f, "fields", None):
            extra = f" {f.fields}"
        elif isinstance(f, DataFrame):
            extra = f" {len(f.data)} bytes"
        out.append(f"{name}(stream {f.stream_id}{', ' + ','.join(sorted(f.flags)) if f.flags else ''}){extra}")
    return "; ".join(out) if out else "(no frames)"


# ---------------------------------------------------------------------------------------------
# Certificates with openssl


@dataclass
class H2PKI:
    dir: Path
    ca: str
    crt: str  # localhost, 127.0.0.1 (serverAuth)
    key: str


def make_pki(d: Path) -> H2PKI:
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)

    def run(*args):
        cp = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True, timeout=30)
        assert cp.returncode == 0, f"openssl {' '.join(args)} failed:\n{cp.stderr}"

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "30", "-subj", "/O=Outrider tests/CN=Outrider h2 test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/O=Outrider tests/CN=localhost")
    (d / "server.ext").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                  "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "30", "-sha256", "-extfile", "server.ext")
    return H2PKI(d, str(d / "ca.crt"), str(d / "server.crt"), str(d / "server.key"))


def client_ctx(pki: H2PKI, alpn=("h2", "http/1.1")) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def server_ctx(pki: H2PKI, alpn=("h2",)) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.crt, pki.key)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


# ---------------------------------------------------------------------------------------------
# Admin /metrics


def metrics_text(admin_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric_value(admin_port: int, family: str, **labels) -> float:
    """The value of the sample `family` (a counter's `_total` name) with these labels; 0 when absent."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(metrics_text(admin_port)):
        for s in fam.samples:
            if s.name == family and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def wait_metric(admin_port: int, family: str, minimum: float, timeout: float = 3.0, **labels) -> float:
    deadline = time.monotonic() + timeout
    while True:
        v = metric_value(admin_port, family, **labels)
        if v >= minimum or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Command-line clients


def run_tool(cmd: list, timeout: float = 20) -> subprocess.CompletedProcess:
    env = {**os.environ, "CURL_HOME": "/nonexistent", "no_proxy": "*", "NO_PROXY": "*"}
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(k, None)
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=env)


def curl_run(url: str, *args, out_dir: Path, resolve: str | None = None, timeout: float = 20):
    """curl -v; returns (CompletedProcess, header text, body bytes, stderr text)."""
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    hfile, bfile = Path(out_dir) / f"curl-h-{tag}", Path(out_dir) / f"curl-b-{tag}"
    cmd = ["curl", "-v", "-sS", "--noproxy", "*", "--max-time", str(int(timeout) - 2), "-D", str(hfile), "-o", str(bfile)]
    if resolve:
        cmd += ["--resolve", resolve]
    cmd += [*args, url]
    cp = run_tool(cmd, timeout)
    headers = hfile.read_text(errors="replace") if hfile.exists() else ""
    body = bfile.read_bytes() if bfile.exists() else b""
    for f in (hfile, bfile):
        if f.exists():
            f.unlink()
    return cp, headers, body, cp.stderr.decode(errors="replace")
