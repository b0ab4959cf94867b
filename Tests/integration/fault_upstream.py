"""Fault-injecting upstreams for the fault matrix (test_fault_matrix.py).

Both servers record like their parents (upstream_server.RecordingUpstream for HTTP/1.1,
h2_upstream.H2Upstream for h2c / h2) and misbehave when the request path contains
`/f/KIND` (matched anywhere in the path, so route prefixes and rewrites do not matter); any
other path is answered normally. Every fault acts after the whole request was read (the app
"processed" it), unless its description says otherwise. `hits(KEY)` counts the requests whose
head reached the app with KEY in the path; `open_connections` are the TCP connections the proxy
still holds to it.

A refused connection needs no server: `wire.dead_port()` is a port bound and never listening.

HTTP/1.1 (`FaultUpstream`):

  /f/ok                  200, 2-byte body "ok"
  /f/reset-before-head   RST (SO_LINGER 0), nothing answered
  /f/reset-mid-body      head (content-length 1000) + 100 body bytes, then RST
  /f/stall               no answer; the connection is held until the proxy closes it
  /f/stall-unread        reads the head only (never the body), no answer
  /f/reset-mid-upload    reads the head and 64 KiB of the body, then RST (no answer)
  /f/trickle-head/MS     a valid 200 (content-length 2), written a byte every MS ms
  /f/trickle-body/MS     the head at once, then a 20-byte body a byte every MS ms
  /f/bad-status          "HTTP/1.1 2x0 OK" (garbage status line)
  /f/bad-cl              content-length: 12abc
  /f/cl-te               content-length and transfer-encoding: chunked together
  /f/bad-chunk           a valid chunked head and first chunk, then the chunk size "zz"
  /f/close-mid-head      half a head, then FIN
  /f/close-mid-body      head (content-length 1000) + 100 body bytes, then FIN
  /f/huge-chunk-ext      a chunked answer whose first chunk line carries a 16 KiB extension
  /f/big-head/N          200 "ok" with N extra header fields x-big-I of 200 bytes each

HTTP/2 (`H2FaultUpstream`, h2c or h2 over TLS):

  /f/ok                  200, "ok"
  /f/reset-before-head   RST_STREAM(INTERNAL_ERROR) once the request ended, no HEADERS
  /f/reset-mid-body      HEADERS (content-length 1000), DATA of 100 bytes, RST_STREAM(INTERNAL_ERROR)
  /f/stall               no answer (the stream stays open)
  /f/trickle-body/MS     HEADERS at once, then a 20-byte body in 1-byte DATA frames every MS ms
  /f/reset-mid-upload    RST_STREAM(INTERNAL_ERROR) once 64 KiB of the request body arrived
  /f/close-mid-head      the TCP connection is closed (FIN) as soon as the head arrives
  /f/close-mid-body      HEADERS (content-length 1000), DATA of 100 bytes, then FIN
  /f/goaway-unprocessed  GOAWAY(NO_ERROR, last stream 0) and close: the stream was not processed
  /f/goaway-error        GOAWAY(INTERNAL_ERROR, last stream = this one) and close
  /f/bad-status          HEADERS with `:status: 2x0`
  /f/no-status           HEADERS without `:status`
  /f/invalid-frame       a DATA frame on stream 0 (a connection error, RFC 9113 §6.1)
  /f/invalid-frame-hold  the same, then the connection is kept open (the proxy's GOAWAY ignored)
  /f/cl-mismatch         HEADERS (content-length 10) and 5 bytes of DATA with END_STREAM
  /f/big-head/N          200 "ok" with N extra header fields x-big-I of 200 bytes each
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct

import h2.events
from h2.errors import ErrorCodes

from h2_upstream import H2Upstream, _H2ServerProtocol
from upstream_server import MAX_HEAD, RecordingUpstream

FAULT = re.compile(r"/f/([a-z0-9-]+)(?:/(\d+))?")


def fault_of(path: str):
    m = FAULT.search(path or "")
    if not m:
        return None, None
    return m.group(1), int(m.group(2)) if m.group(2) else None


def _rst(sock, transport):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# ---------------------------------------------------------------------------------------------
# HTTP/1.1


class FaultUpstream(RecordingUpstream):
    """RecordingUpstream plus the `/f/KIND` faults above."""

    def __init__(self, name: str = "fault-h1"):
        super().__init__(name)
        self._readers = {}
        self._writer_of = {}

    def hits(self, key: str) -> int:
        return sum(1 for r in list(self.records) if key in r.target)

    async def start(self, port: int = 0):
        self._server = await asyncio.start_server(self._handle_with_reader, "127.0.0.1", port, limit=MAX_HEAD,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle_with_reader(self, reader, writer):
        self._readers[writer] = reader
        self._writer_of[reader] = writer
        try:
            await self._handle(reader, writer)
        finally:
            self._readers.pop(writer, None)
            self._writer_of.pop(reader, None)

    async def _body_pieces(self, reader, rec):
        # stall-unread: take the head, never the body (the proxy's body waits in socket buffers)
        if fault_of(rec.path)[0] == "stall-unread":
            await self._hold(reader)
            return
        upload_reset = fault_of(rec.path)[0] == "reset-mid-upload"
        got = 0
        async for piece in super()._body_pieces(reader, rec):
            got += len(piece)
            yield piece
            if upload_reset and got >= 65536:
                writer = self._writer_of[reader]
                _rst(writer.get_extra_info("socket"), writer.transport)
                raise ConnectionResetError("reset mid-upload")

    async def _hold(self, reader):
        """Keep the connection without answering until the peer closes it."""
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.CancelledError):
            pass
        raise ConnectionResetError("peer closed a stalled connection")

    async def _respond(self, rec, path, writer, sock, hasher) -> bool:
        kind, arg = fault_of(path)
        if kind is None:
            return await super()._respond(rec, path, writer, sock, hasher)
        reader = self._readers.get(writer)
        if kind == "ok":
            writer.write(self._head(rec, 200, [("content-type", "text/plain"), ("content-length", 2)])
                         + self._body(rec, b"ok"))
            await writer.drain()
            return True
        if kind == "reset-before-head":
            _rst(sock, writer.transport)
            return False
        if kind in ("reset-mid-body", "close-mid-body"):
            writer.write(self._head(rec, 200, [("content-type", "application/octet-stream"),
                                               ("content-length", 1000)]) + b"b" * 100)
            await writer.drain()
            await asyncio.sleep(0.1)
            if kind == "reset-mid-body":
                _rst(sock, writer.transport)
            else:
                writer.close()
            return False
        if kind == "stall":
            await self._hold(reader)
            return False
        if kind == "trickle-head":
            raw = self._head(rec, 200, [("content-type", "text/plain"), ("content-length", 2)]) + b"ok"
            for i in range(len(raw)):
                writer.write(raw[i:i + 1])
                await writer.drain()
                await asyncio.sleep((arg or 50) / 1000)
            return True
        if kind == "trickle-body":
            body = b"abcdefghijklmnopqrst"
            writer.write(self._head(rec, 200, [("content-type", "text/plain"), ("content-length", len(body))]))
            await writer.drain()
            for i in range(len(body)):
                await asyncio.sleep((arg or 50) / 1000)
                writer.write(body[i:i + 1])
                await writer.drain()
            return True
        if kind == "big-head":
            big = [(f"x-big-{i}", "v" * 200) for i in range(arg)]
            writer.write(self._head(rec, 200, [*big, ("content-type", "text/plain"), ("content-length", 2)])
                         + self._body(rec, b"ok"))
            await writer.drain()
            return True
        if kind == "huge-chunk-ext":
            writer.write(self._head(rec, 200, [("content-type", "text/plain"), ("transfer-encoding", "chunked")])
                         + b"5;ext=" + b"e" * 16384 + b"\r\nhello\r\n0\r\n\r\n")
            await writer.drain()
            return True
        raw = {
            "bad-status": b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\nok",
            "bad-cl": b"HTTP/1.1 200 OK\r\ncontent-length: 12abc\r\n\r\nok",
            "cl-te": b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "bad-chunk": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n",
            "close-mid-head": b"HTTP/1.1 200 OK\r\ncontent-type: text/pl",
        }.get(kind)
        if raw is None:
            raise AssertionError(f"unknown HTTP/1.1 fault {kind!r}")
        writer.write(raw)
        await writer.drain()
        if kind == "close-mid-head":
            writer.close()
            return False
        await asyncio.sleep(0.05)
        writer.close()
        return False


# ---------------------------------------------------------------------------------------------
# HTTP/2


class _H2FaultProtocol(_H2ServerProtocol):
    def connection_made(self, transport):
        super().connection_made(transport)
        # let bad response fields (":status: 2x0", no ":status") out as written
        self.h2.config.validate_outbound_headers = False
        self.h2.config.normalize_outbound_headers = False

    hold_open = False
    terminated = False
    # This side sent GOAWAY (a goaway-* fault) and hyper-h2 considers the connection closed:
    # frames the proxy sent before it saw the GOAWAY (the ACK of our SETTINGS, when the request
    # came on a new connection) are legal and would only make hyper-h2 raise. Dropped.
    goaway_sent = False

    def data_received(self, data):
        if self.goaway_sent:
            return
        if not self.hold_open:
            return super().data_received(data)
        # invalid-frame-hold: one frame at a time, so that what follows the proxy's GOAWAY is
        # read and dropped rather than fed to a hyper-h2 connection that considers itself closed
        self._held = getattr(self, "_held", b"") + data
        while len(self._held) >= 9 and not self.terminated:
            n = 9 + int.from_bytes(self._held[:3], "big")
            if len(self._held) < n:
                return
            frame, self._held = self._held[:n], self._held[n:]
            super().data_received(frame)
        if self.terminated and self._held:
            self.app.after_goaway.append(self._held)
            self._held = b""

    def handle(self, ev):
        if isinstance(ev, h2.events.ConnectionTerminated) and self.hold_open:
            self.terminated = True  # invalid-frame-hold: ignore the proxy's GOAWAY, keep the connection
            return
        if isinstance(ev, h2.events.RequestReceived):
            path = ""
            for k, v in ev.headers:
                if k in (b":path", ":path"):
                    path = v.decode() if isinstance(v, bytes) else v
            with self.app.lock:
                self.app.heads.append(path)
            kind, _ = fault_of(path)
            if kind == "close-mid-head":
                super().handle(ev)
                self.closed = True
                self.transport.close()
                return
            if kind == "goaway-unprocessed":
                super().handle(ev)
                self.goaway_sent = True
                self.h2.close_connection(ErrorCodes.NO_ERROR, last_stream_id=0)
                self.flush()
                self.closed = True
                self.transport.close()
                return
        super().handle(ev)
        if isinstance(ev, h2.events.DataReceived):
            st = self.streams.get(ev.stream_id)
            if (st is not None and st.rec.reset_code is None and st.rec.body_len >= 65536
                    and fault_of(st.rec.path or "")[0] == "reset-mid-upload"):
                st.rec.reset_code = -1
                self.h2.reset_stream(ev.stream_id, ErrorCodes.INTERNAL_ERROR)
                self.flush()

    def _raw(self, data: bytes):
        if not self.closed:
            self.transport.write(data)

    async def respond(self, sid, s):
        kind, arg = fault_of(s.rec.path or "")
        if kind is None:
            return await super().respond(sid, s)
        base = [("x-upstream-conn", str(self.conn_id)), ("x-upstream-stream", str(sid))]
        try:
            if kind == "ok":
                self.h2.send_headers(sid, [(":status", "200"), *base, ("content-length", "2")])
                await self.send_body(sid, b"ok", True)
            elif kind == "big-head":
                big = [(f"x-big-{i}", "v" * 200) for i in range(arg)]
                self.h2.send_headers(sid, [(":status", "200"), *base, *big, ("content-length", "2")])
                await self.send_body(sid, b"ok", True)
            elif kind == "reset-before-head":
                self.h2.reset_stream(sid, ErrorCodes.INTERNAL_ERROR)
                self.flush()
            elif kind in ("reset-mid-body", "close-mid-body"):
                self.h2.send_headers(sid, [(":status", "200"), *base, ("content-length", "1000")])
                await self.send_body(sid, b"b" * 100, False)
                await asyncio.sleep(0.1)
                if kind == "reset-mid-body":
                    self.h2.reset_stream(sid, ErrorCodes.INTERNAL_ERROR)
                    self.flush()
                else:
                    self.closed = True
                    self.transport.close()
            elif kind == "stall":
                await asyncio.Event().wait()  # until the stream is reset or the connection lost
            elif kind == "trickle-body":
                body = b"abcdefghijklmnopqrst"
                self.h2.send_headers(sid, [(":status", "200"), *base, ("content-length", str(len(body)))])
                self.flush()
                for i in range(len(body)):
                    await asyncio.sleep((arg or 50) / 1000)
                    await self.send_body(sid, body[i:i + 1], i == len(body) - 1)
            elif kind == "goaway-error":
                self.goaway_sent = True
                self.h2.close_connection(ErrorCodes.INTERNAL_ERROR, last_stream_id=sid)
                self.flush()
                await asyncio.sleep(0.05)
                self.closed = True
                self.transport.close()
            elif kind == "bad-status":
                self.h2.send_headers(sid, [(":status", "2x0"), *base, ("content-length", "2")])
                await self.send_body(sid, b"ok", True)
            elif kind == "no-status":
                self.h2.send_headers(sid, [*base, ("content-length", "2")])
                await self.send_body(sid, b"ok", True)
            elif kind in ("invalid-frame", "invalid-frame-hold"):
                self.hold_open = kind == "invalid-frame-hold"
                self.flush()
                self._raw(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"x")  # DATA, stream 0
                await asyncio.sleep(3 if self.hold_open else 0.5)
                self.closed = True
                self.transport.close()
            elif kind == "cl-mismatch":
                self.h2.send_headers(sid, [(":status", "200"), *base, ("content-length", "10")])
                await self.send_body(sid, b"short", True)
            else:
                raise AssertionError(f"unknown HTTP/2 fault {kind!r}")
        except Exception:
            pass  # the proxy reset the stream or went away


class H2FaultUpstream(H2Upstream):
    """H2Upstream plus the `/f/KIND` HTTP/2 faults above."""

    def __init__(self, name: str = "fault-h2", ssl_ctx=None, max_concurrent_streams: int = 100):
        super().__init__(name, ssl_ctx, max_concurrent_streams)
        self.heads: list[str] = []  # :path of every stream whose head arrived
        self.after_goaway: list[bytes] = []  # what the proxy sent after its GOAWAY (invalid-frame-hold)

    async def start(self, port: int = 0):
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _H2FaultProtocol(self), "127.0.0.1", port,
                                                ssl=self.ssl_ctx, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def hits(self, key: str) -> int:
        with self.lock:
            return sum(1 for p in self.heads if key in p)
