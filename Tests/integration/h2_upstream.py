"""Recording HTTP/2 upstream (asyncio + hyper-h2) for Outrider's integration tests.

Speaks h2c by prior knowledge, or h2 over TLS when given an `ssl.SSLContext` (ALPN h2). It keeps,
per stream, the pseudo-headers, the regular header fields exactly as they arrived (order, case,
repeats), the body and the trailers; it counts TCP connections and records the ALPN protocol of
each. Inbound header validation by h2 is off, so that whatever the proxy sent is recorded and
checked here (`wellformedness_problems()`: upper-case names, connection-specific fields, missing
or repeated pseudo-headers, pseudo-headers after regular fields) rather than failing the
connection with a vague error.

Behaviour by path (query ignored, matched anywhere in the path like upstream_server.py):

  /slow/MS            wait MS milliseconds before the response head
  /status/NNN         answer NNN (204/304 without a body)
  /echo               answer with the request body (same content-type), content-length set
  /upload             answer {"bytes": N, "sha256": HEX} of the request body
  /big/N              N bytes (upstream_server's pattern), content-length, flow-controlled
  /trailers           200 without content-length, three DATA frames, then trailers
                      x-checksum (sha256 of the body) and x-trailer: done
  /refuse-once/KEY    the first stream naming KEY is reset with REFUSED_STREAM as soon as its
                      head arrives (nothing processed); later ones get the JSON echo
  /close-conn         close the TCP connection as soon as the head arrives, no answer
  /goaway             answer, then GOAWAY(NO_ERROR) and close shortly after
  /goaway-first/MS    GOAWAY(NO_ERROR, last stream = this one) at once, answer MS ms later,
                      then close: the stream in flight must still be read
  anything else       200 with a JSON echo: upstream, conn, stream, pseudo, headers, body_len,
                      trailers, alpn

Every answer carries `x-upstream-conn` and `x-upstream-stream`.

Run standalone:  python3 h2_upstream.py --port 8082      (records printed on stderr)
Try it:          curl --http2-prior-knowledge http://127.0.0.1:8082/hello
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

_BLOCK = bytes(j % 251 for j in range(251 * 261))  # upstream_server.py's /big pattern
CONNECTION_SPECIFIC = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
REQUEST_PSEUDO = {":method", ":scheme", ":authority", ":path"}
MAX_STORED_BODY = 32 * 1024 * 1024


def big_body(n: int) -> bytes:
    return (_BLOCK * (n // len(_BLOCK) + 1))[:n]


@dataclass
class H2Record:
    """One request stream as the app saw it."""

    conn: int
    stream_id: int
    pseudo: dict  # ":method" -> value
    headers: list  # [(name, value)] regular fields, as received
    alpn: str | None = None
    body: bytes = b""
    body_len: int = 0
    trailers: list = field(default_factory=list)
    complete: bool = False  # END_STREAM received
    reset_code: int | None = None  # the proxy reset the stream (RST_STREAM code)
    problems: list = field(default_factory=list)
    t_head: float = 0.0
    t_done: float = 0.0

    @property
    def method(self):
        return self.pseudo.get(":method")

    @property
    def path(self):
        return self.pseudo.get(":path")

    @property
    def authority(self):
        return self.pseudo.get(":authority")

    @property
    def scheme(self):
        return self.pseudo.get(":scheme")

    def header(self, name):
        v = self.header_all(name)
        return v[0] if v else None

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header_names(self):
        return {k.lower() for k, _ in self.headers}


def check_request_fields(fields: list) -> tuple[dict, list, list]:
    """Split a request header block into (pseudo, regular, problems) per RFC 9113 §8.2-8.3."""
    pseudo, regular, problems = {}, [], []
    seen_regular = False
    for name, value in fields:
        if name.startswith(":"):
            if seen_regular:
                problems.append(f"pseudo-header {name} after a regular field")
            if name in pseudo:
                problems.append(f"repeated pseudo-header {name}")
            if name not in REQUEST_PSEUDO:
                problems.append(f"unknown request pseudo-header {name}")
            pseudo[name] = value
            continue
        seen_regular = True
        if name != name.lower():
            problems.append(f"upper-case field name {name!r}")
        if name.lower() in CONNECTION_SPECIFIC:
            problems.append(f"connection-specific field {name}: {value}")
        if name.lower() == "te" and value.strip().lower() != "trailers":
            problems.append(f"te: {value} (only 'trailers' is allowed in HTTP/2)")
        if any(c in value for c in "\r\n\x00"):
            problems.append(f"CR/LF/NUL in the value of {name}")
        regular.append((name, value))
    for p in (":method", ":scheme", ":path"):
        if p not in pseudo and pseudo.get(":method") != "CONNECT":
            problems.append(f"missing {p}")
    host = [v for k, v in regular if k.lower() == "host"]
    if host and pseudo.get(":authority") is not None and host[0] != pseudo[":authority"]:
        problems.append(f"host {host[0]!r} differs from :authority {pseudo[':authority']!r}")
    return pseudo, regular, problems


def _dec(b) -> str:
    return b.decode("utf-8", "surrogateescape") if isinstance(b, (bytes, bytearray)) else str(b)


class _Stream:
    def __init__(self, rec: H2Record):
        self.rec = rec
        self.body = bytearray()
        self.hasher = hashlib.sha256()
        self.task = None


class _H2ServerProtocol(asyncio.Protocol):
    def __init__(self, app: "H2Upstream"):
        self.app = app
        self.conn_id = 0
        self.transport = None
        self.h2 = None
        self.streams: dict[int, _Stream] = {}
        self.window_event = asyncio.Event()
        self.closed = False
        self.alpn = None
        self.goaway_close = False
        self.goaway_last = None  # last stream id of the GOAWAY sent
        self.goaway_t = 0.0

    # -- plumbing ------------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.conn_id = next(self.app._conn_ids)
        with self.app.lock:
            self.app.connections += 1
            self.app.open_connections += 1
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.alpn = sslobj.selected_alpn_protocol()
        with self.app.lock:
            self.app.alpn_seen.append(self.alpn)
        self.app._protocols.add(self)
        cfg = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                        validate_inbound_headers=False, normalize_inbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.app.max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
        })
        self.h2.initiate_connection()
        self.flush()

    def flush(self):
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def connection_lost(self, exc):
        self.closed = True
        with self.app.lock:
            self.app.open_connections -= 1
        self.app._protocols.discard(self)
        self.window_event.set()
        for s in self.streams.values():
            if s.task is not None and not s.task.done():
                s.task.cancel()

    def data_received(self, data):
        with self.app.lock:
            self.app.bytes_received += len(data)
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            with self.app.lock:
                self.app.protocol_errors.append(f"conn {self.conn_id}: {e!r}")
            self.flush()
            self.transport.close()
            return
        for ev in events:
            self.handle(ev)
        self.flush()

    # -- events --------------------------------------------------------------------------------
    def handle(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            fields = [(_dec(k), _dec(v)) for k, v in ev.headers]
            pseudo, regular, problems = check_request_fields(fields)
            # (a stream crossing the GOAWAY on the wire is fine; one sent well after it is not)
            if (self.goaway_last is not None and ev.stream_id > self.goaway_last
                    and time.monotonic() - self.goaway_t > 0.2):
                problems.append(f"stream {ev.stream_id} opened after GOAWAY(last stream {self.goaway_last})")
            rec = H2Record(self.conn_id, ev.stream_id, pseudo, regular, alpn=self.alpn, problems=problems,
                           t_head=time.monotonic())
            with self.app.lock:
                self.app.records.append(rec)
            self.streams[ev.stream_id] = _Stream(rec)
            path = (pseudo.get(":path") or "").split("?", 1)[0]
            m = re.search(r"/refuse-once/([^/]+)", path)
            if m:
                with self.app.lock:
                    first = m.group(1) not in self.app.refused_keys
                    if first:
                        self.app.refused_keys.add(m.group(1))
                        self.app.refused += 1
                if first:
                    self.h2.reset_stream(ev.stream_id, ErrorCodes.REFUSED_STREAM)
                    rec.reset_code = -1  # we reset it
                    return
            if re.search(r"/close-conn(/|$)", path):
                self.closed = True
                self.transport.abort()
                return
        elif isinstance(ev, h2.events.DataReceived):
            if ev.flow_controlled_length:
                try:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    pass
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.rec.body_len += len(ev.data)
                s.hasher.update(ev.data)
                if len(s.body) < MAX_STORED_BODY:
                    s.body += ev.data
        elif isinstance(ev, h2.events.TrailersReceived):
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.rec.trailers = [(_dec(k), _dec(v)) for k, v in ev.headers]
        elif isinstance(ev, h2.events.StreamEnded):
            s = self.streams.get(ev.stream_id)
            if s is not None and s.rec.reset_code is None:
                s.rec.body = bytes(s.body)
                s.rec.complete = True
                s.rec.t_done = time.monotonic()
                s.task = asyncio.get_running_loop().create_task(self.respond(ev.stream_id, s))
        elif isinstance(ev, h2.events.StreamReset):
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.rec.reset_code = int(ev.error_code)
                if s.task is not None and not s.task.done():
                    s.task.cancel()
        elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.window_event.set()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.transport.close()

    # -- answers -------------------------------------------------------------------------------
    async def send_body(self, sid: int, data: bytes, end_stream: bool):
        view = memoryview(data)
        while view:
            if self.closed:
                raise ConnectionError("connection closed while sending")
            window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if window <= 0:
                self.window_event.clear()
                await self.window_event.wait()
                continue
            n = min(window, len(view))
            self.h2.send_data(sid, bytes(view[:n]), end_stream=end_stream and n == len(view))
            view = view[n:]
            self.flush()
            # let the transport drain before sending more (back-pressure on big bodies)
            if self.transport.get_write_buffer_size() > 1 << 20:
                await asyncio.sleep(0.001)
        if not data and end_stream:
            self.h2.end_stream(sid)
            self.flush()

    async def respond(self, sid: int, s: _Stream):
        rec = s.rec
        path = (rec.path or "").split("?", 1)[0]
        base = [("x-upstream-conn", str(self.conn_id)), ("x-upstream-stream", str(sid))]
        try:
            m = re.search(r"/goaway-first/(\d+)", path)
            if m:
                self.h2.close_connection(ErrorCodes.NO_ERROR, last_stream_id=sid)
                self.goaway_last, self.goaway_t = sid, time.monotonic()
                # hyper-h2 takes any GOAWAY as the end; the stream it lets finish still has to be answered
                self.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
                self.flush()
                await asyncio.sleep(int(m.group(1)) / 1000)
                self.goaway_close = True
            m = re.search(r"/slow/(\d+)", path)
            if m:
                await asyncio.sleep(int(m.group(1)) / 1000)
            m = re.search(r"/status/(\d{3})", path)
            if m:
                status = int(m.group(1))
                if status in (204, 304) or rec.method == "HEAD":
                    self.h2.send_headers(sid, [(":status", str(status)), *base], end_stream=True)
                    self.flush()
                    return
                body = f"status {status}\n".encode()
                self.h2.send_headers(sid, [(":status", str(status)), *base, ("content-type", "text/plain"),
                                           ("content-length", str(len(body)))])
                await self.send_body(sid, body, True)
                return
            if re.search(r"/echo(/|$)", path):
                body = rec.body
                ct = rec.header("content-type") or "application/octet-stream"
                self.h2.send_headers(sid, [(":status", "200"), *base, ("content-type", ct),
                                           ("content-length", str(len(body)))])
                await self.send_body(sid, body, True)
                return
            if re.search(r"/upload(/|$)", path):
                body = json.dumps({"bytes": rec.body_len, "sha256": s.hasher.hexdigest()}).encode()
                self.h2.send_headers(sid, [(":status", "200"), *base, ("content-type", "application/json"),
                                           ("content-length", str(len(body)))])
                await self.send_body(sid, body, True)
                return
            m = re.search(r"/big/(\d+)", path)
            if m:
                n = int(m.group(1))
                self.h2.send_headers(sid, [(":status", "200"), *base, ("content-type", "application/octet-stream"),
                                           ("content-length", str(n))], end_stream=(rec.method == "HEAD"))
                self.flush()
                if rec.method != "HEAD":
                    sent = 0
                    while sent < n:
                        k = min(len(_BLOCK), n - sent)
                        await self.send_body(sid, _BLOCK[:k], sent + k == n)
                        sent += k
                return
            if re.search(r"/trailers(/|$)", path):
                parts = [b"hello ", b"h2 ", b"trailers\n"]
                total = b"".join(parts)
                self.h2.send_headers(sid, [(":status", "200"), *base, ("content-type", "text/plain")])
                self.flush()
                for p in parts:
                    await self.send_body(sid, p, False)
                    await asyncio.sleep(0.005)
                self.h2.send_headers(sid, [("x-checksum", hashlib.sha256(total).hexdigest()),
                                           ("x-trailer", "done")], end_stream=True)
                self.flush()
                return
            body = json.dumps({
                "upstream": self.app.name, "conn": self.conn_id, "stream": sid, "pseudo": rec.pseudo,
                "method": rec.method, "path": rec.path, "authority": rec.authority, "scheme": rec.scheme,
                "headers": rec.headers, "body_len": rec.body_len, "trailers": rec.trailers, "alpn": self.alpn,
            }).encode()
            self.h2.send_headers(sid, [(":status", "200"), *base, ("content-type", "application/json"),
                                       ("content-length", str(len(body)))], end_stream=(rec.method == "HEAD"))
            self.flush()
            if rec.method != "HEAD":
                await self.send_body(sid, body, True)
            if self.goaway_close:
                asyncio.get_running_loop().call_later(0.1, self.transport.close)
            if re.search(r"/goaway(/|$)", path):
                self.h2.close_connection(ErrorCodes.NO_ERROR)
                self.goaway_last, self.goaway_t = self.h2.highest_inbound_stream_id, time.monotonic()
                self.flush()
                asyncio.get_running_loop().call_later(0.1, self.transport.close)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, ConnectionError):
            pass  # the proxy reset the stream or went away: nothing to answer
        except asyncio.CancelledError:
            pass


class H2Upstream:
    """An HTTP/2 server on 127.0.0.1 that records what it receives. Runs on a given loop."""

    def __init__(self, name: str = "h2-app", ssl_ctx=None, max_concurrent_streams: int = 100):
        self.name = name
        self.ssl_ctx = ssl_ctx
        self.max_concurrent_streams = max_concurrent_streams
        self.port = 0
        self.lock = threading.Lock()
        self.records: list[H2Record] = []
        self.connections = 0
        self.open_connections = 0
        self.bytes_received = 0
        self.alpn_seen: list = []
        self.protocol_errors: list[str] = []
        self.refused = 0
        self.refused_keys: set = set()
        self._server = None
        self._conn_ids = itertools.count(1)
        self._protocols: set = set()

    async def start(self, port: int = 0):
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _H2ServerProtocol(self), "127.0.0.1", port,
                                                ssl=self.ssl_ctx, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        if self._server is not None:
            self._server.close()
            for p in list(self._protocols):
                try:
                    p.transport.abort()
                except Exception:
                    pass
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except Exception:
                pass

    # -- inspection (test thread) --------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def complete(self) -> list[H2Record]:
        with self.lock:
            return [r for r in self.records if r.complete]

    def wait_for(self, pred, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v or time.monotonic() > deadline:
                return v
            time.sleep(0.01)

    def find(self, path_substring: str, timeout: float = 5.0, complete: bool = True) -> H2Record:
        def f():
            with self.lock:
                for r in self.records:
                    if path_substring in (r.path or "") and (r.complete or not complete):
                        return r
            return None

        r = self.wait_for(f, timeout)
        with self.lock:
            seen = [(x.path, x.complete, x.reset_code) for x in self.records]
        assert r is not None, f"{self.name}: no {'complete ' if complete else ''}stream with {path_substring!r}; saw {seen}"
        return r

    def find_all(self, path_substring: str) -> list[H2Record]:
        with self.lock:
            return [r for r in self.records if path_substring in (r.path or "")]

    def wellformedness_problems(self) -> list[str]:
        with self.lock:
            out = list(self.protocol_errors)
            for r in self.records:
                for p in r.problems:
                    out.append(f"{r.method} {(r.path or '')[:80]}: {p}")
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8082)
    args = ap.parse_args()

    async def run():
        up = await H2Upstream().start(args.port)
        print(f"h2c upstream on 127.0.0.1:{up.port}", file=sys.stderr)
        seen = 0
        while True:
            await asyncio.sleep(0.2)
            for r in up.records[seen:]:
                print(json.dumps({"conn": r.conn, "stream": r.stream_id, "pseudo": r.pseudo, "headers": r.headers,
                                  "body_len": r.body_len, "trailers": r.trailers, "complete": r.complete,
                                  "problems": r.problems}), file=sys.stderr)
            seen = len(up.records)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
