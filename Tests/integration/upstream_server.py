"""Recording HTTP/1.1 upstream for Outrider's integration tests.

Speaks HTTP/1.1 at the byte level (asyncio streams) so that tests can assert on
exactly what the proxy put on the wire: the raw request head, the body framing,
the decoded body, and how many TCP connections were used.

Behaviour is chosen by the request path (query ignored, matched anywhere in the
path so that rewritten prefixes still work):

  /status/NNN      answer with status NNN
  /slow/MS         wait MS milliseconds before sending the response head
  /chunked         chunked response with trailers (x-checksum, x-trailer)
  /big/N           N bytes of body (content-length), streamed with back-pressure
  /close           answer with "Connection: close", then close
  /close-after     answer keep-alive, then close the connection ~100 ms later
  /reset           read the request, then close with RST (SO_LINGER 0), no answer
  /eof             read the request, then close cleanly (FIN), no answer
  /garbage         answer with bytes that are not HTTP, then close
  /echo            answer with the request body (same content-type)
  /upload          stream the body, answer {"bytes": N, "sha256": HEX}
  /hop-response    answer with hop-by-hop headers (Connection: x-bar, X-Bar, Keep-Alive, ...)
  /eof-body        answer without content-length or chunked: the body ends when the connection closes
  /early-hints     send "103 Early Hints" before the 200
  /slow-body/MS    send the head at once and the body MS milliseconds later
  /cookies         answer with two Set-Cookie headers
  /dribble-response  a chunked answer with a trailer, written one byte at a time
  /bad-response/K  an invalid answer of kind K (cl-te, two-cl, bad-name, space-before-colon,
                   bare-lf, nul, bad-status, bad-chunk), then close
HEAD requests get the head only; 204 and 304 answers have no body.
  anything else    200 with a JSON echo of method, target, headers, body length

Every response carries `x-upstream-conn` (connection number, 1-based) and
`x-upstream-seq` (request number on that connection, 1-based).

Run standalone:  python3 upstream_server.py --port 8081   (records printed on stderr)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import re
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

MAX_HEAD = 1024 * 1024
MAX_STORED_BODY = 1024 * 1024
TCHAR = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class BadRequest(Exception):
    pass


@dataclass
class Record:
    """One request as the upstream saw it."""

    conn: int
    seq: int
    raw_head: bytes
    method: str
    target: str
    version: str
    headers: list  # [(name, value)] as str, original case, in order
    framing: str  # "chunked" | "content-length" | "none"
    body: bytes = b""  # decoded body (first MAX_STORED_BODY bytes)
    body_len: int = 0
    raw_body_prefix: bytes = b""  # body bytes as on the wire (first 64 KiB)
    complete: bool = False  # the whole body was received
    aborted: bool = False  # the connection ended inside the body
    trailers: list = field(default_factory=list)
    problems: list = field(default_factory=list)  # well-formedness violations seen
    t_head: float = 0.0
    t_done: float = 0.0

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str):
        vals = self.header_all(name)
        return vals[0] if vals else None

    def header_all(self, name: str) -> list:
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header_names(self) -> set:
        return {k.lower() for k, _ in self.headers}


def _check_head(raw: bytes) -> list:
    """Return the list of RFC 9112 violations in a request head produced by the proxy."""
    problems = []
    body = raw[:-4] if raw.endswith(b"\r\n\r\n") else raw
    if b"\r\n" not in raw and b"\n" in raw:
        problems.append("head without CRLF line ends")
    lines = body.split(b"\r\n")
    for ln in lines:
        if b"\n" in ln or b"\r" in ln:
            problems.append(f"bare CR/LF inside line {ln[:80]!r}")
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in ln):
            problems.append(f"control byte in line {ln[:80]!r}")
    rl = lines[0].split(b" ")
    if len(rl) != 3 or not rl[0] or not rl[1] or not re.match(rb"^HTTP/1\.[01]$", rl[2]):
        problems.append(f"malformed request line {lines[0][:120]!r}")
    names = []
    for ln in lines[1:]:
        if ln[:1] in (b" ", b"\t"):
            problems.append(f"obs-fold line {ln[:80]!r}")
            continue
        if b":" not in ln:
            problems.append(f"header line without colon {ln[:80]!r}")
            continue
        name, _ = ln.split(b":", 1)
        if not TCHAR.match(name):
            problems.append(f"invalid header name {name[:80]!r}")
        names.append(name.lower())
    if names.count(b"host") != 1:
        problems.append(f"{names.count(b'host')} Host headers")
    if b"content-length" in names and b"transfer-encoding" in names:
        problems.append("both Content-Length and Transfer-Encoding")
    if names.count(b"content-length") > 1:
        problems.append("several Content-Length headers")
    return problems


def _parse_head(raw: bytes):
    text = raw[:-4].decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest(f"request line {lines[0]!r}")
    method, target, version = parts
    headers = []
    for ln in lines[1:]:
        if ":" not in ln:
            raise BadRequest(f"header line {ln!r}")
        k, v = ln.split(":", 1)
        headers.append((k, v.strip(" \t")))
    return method, target, version, headers


_BLOCK = bytes(j % 251 for j in range(251 * 261))  # 65511 bytes, a whole number of periods


BAD_RESPONSES = {
    "cl-te": b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-cl": b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
    "bad-name": b"HTTP/1.1 200 OK\r\nbad name: x\r\ncontent-length: 2\r\n\r\nok",
    "space-before-colon": b"HTTP/1.1 200 OK\r\ncontent-length : 2\r\n\r\nok",
    "bare-lf": b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok",
    "nul": b"HTTP/1.1 200 OK\r\nx-a: a\x00b\r\ncontent-length: 2\r\n\r\nok",
    "bad-status": b"HTTP/1.1 2000 OK\r\ncontent-length: 2\r\n\r\nok",
    "bad-chunk": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n",
}


class RecordingUpstream:
    """An HTTP/1.1 server on 127.0.0.1 that records what it receives. Runs on a given loop."""

    def __init__(self, name: str = "upstream"):
        self.name = name
        self.port = 0
        self.records: list[Record] = []  # every request whose head was parsed, in arrival order
        self.connections = 0  # TCP connections accepted
        self.open_connections = 0
        self.bytes_received = 0
        self.parse_errors: list[str] = []
        self._server = None
        self._conn_ids = itertools.count(1)
        self._writers = set()
        self._lock = threading.Lock()

    # -- inspection (called from the test thread) ------------------------------------------
    @property
    def complete(self) -> list[Record]:
        return [r for r in list(self.records) if r.complete]

    def wait_for(self, pred, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if time.monotonic() > deadline:
                return v
            time.sleep(0.01)

    def wait_requests(self, n: int, timeout: float = 5.0) -> list[Record]:
        self.wait_for(lambda: len(self.complete) >= n, timeout)
        return self.complete

    def next_after(self, n: int, timeout: float = 5.0) -> Record:
        """The first complete request after the first n (wait for it)."""
        recs = self.wait_requests(n + 1, timeout)
        assert len(recs) > n, f"{self.name}: expected a new request, have {len(recs)} (targets {[r.target for r in recs]})"
        return recs[n]

    def last(self, timeout: float = 5.0) -> Record:
        recs = self.wait_requests(1, timeout)
        assert recs, f"{self.name}: no complete request recorded"
        return recs[-1]

    def find(self, path_substring: str, timeout: float = 5.0) -> Record:
        def f():
            for r in self.complete:
                if path_substring in r.target:
                    return r
            return None

        r = self.wait_for(f, timeout)
        assert r is not None, (
            f"{self.name}: no request with {path_substring!r} in its target; "
            f"saw {[x.target for x in self.records]}"
        )
        return r

    def wellformedness_problems(self) -> list[str]:
        out = list(self.parse_errors)
        for r in list(self.records):
            for p in r.problems:
                out.append(f"{r.method} {r.target[:80]}: {p}")
        return out

    # -- server ---------------------------------------------------------------------------------
    async def start(self, port: int = 0):
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", port, limit=MAX_HEAD, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                try:
                    w.transport.abort()
                except Exception:
                    pass
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except Exception:
                pass

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            return await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if e.partial:
                self.bytes_received += len(e.partial)
                self.parse_errors.append(f"connection ended inside a head: {e.partial[:120]!r}")
            return None
        except asyncio.LimitOverrunError:
            self.parse_errors.append("head over 1 MiB")
            return None

    async def _body_pieces(self, reader, rec: Record):
        """Yield decoded body pieces; fills rec.trailers; raises on malformed framing."""
        if rec.framing == "content-length":
            remaining = int(rec.header("content-length"))
            while remaining > 0:
                data = await reader.read(min(remaining, 256 * 1024))
                if not data:
                    raise asyncio.IncompleteReadError(b"", remaining)
                self.bytes_received += len(data)
                remaining -= len(data)
                if len(rec.raw_body_prefix) < 65536:
                    rec.raw_body_prefix += data[: 65536 - len(rec.raw_body_prefix)]
                yield data
        elif rec.framing == "chunked":
            while True:
                line = await reader.readuntil(b"\r\n")
                self.bytes_received += len(line)
                if len(rec.raw_body_prefix) < 65536:
                    rec.raw_body_prefix += line
                size_txt = line[:-2].split(b";", 1)[0].strip()
                if not re.match(rb"^[0-9A-Fa-f]{1,16}$", size_txt):
                    raise BadRequest(f"bad chunk size line {line[:80]!r}")
                size = int(size_txt, 16)
                if size == 0:
                    break
                remaining = size
                while remaining > 0:
                    data = await reader.read(min(remaining, 256 * 1024))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", remaining)
                    self.bytes_received += len(data)
                    remaining -= len(data)
                    if len(rec.raw_body_prefix) < 65536:
                        rec.raw_body_prefix += data[: 65536 - len(rec.raw_body_prefix)]
                    yield data
                crlf = await reader.readexactly(2)
                self.bytes_received += 2
                if crlf != b"\r\n":
                    raise BadRequest(f"chunk data not followed by CRLF: {crlf!r}")
            while True:  # trailer section
                line = await reader.readuntil(b"\r\n")
                self.bytes_received += len(line)
                if line == b"\r\n":
                    break
                k, _, v = line[:-2].decode("latin-1").partition(":")
                rec.trailers.append((k, v.strip()))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        conn = next(self._conn_ids)
        self.connections += 1
        self.open_connections += 1
        self._writers.add(writer)
        sock = writer.get_extra_info("socket")
        seq = 0
        try:
            while True:
                raw = await self._read_head(reader)
                if raw is None:
                    return
                self.bytes_received += len(raw)
                seq += 1
                try:
                    method, target, version, headers = _parse_head(raw)
                except BadRequest as e:
                    self.parse_errors.append(f"unparseable head {raw[:200]!r}: {e}")
                    writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    return
                rec = Record(conn, seq, raw, method, target, version, headers, "none", t_head=time.monotonic())
                rec.problems = _check_head(raw)
                te = rec.header_all("transfer-encoding")
                if te:
                    if [t.strip().lower() for t in ",".join(te).split(",")] != ["chunked"]:
                        rec.problems.append(f"unexpected transfer-encoding {te!r}")
                    rec.framing = "chunked"
                elif rec.header("content-length") is not None:
                    rec.framing = "content-length"
                    if not re.fullmatch(r"[0-9]{1,18}", rec.header("content-length")):
                        rec.problems.append(f"invalid content-length {rec.header('content-length')!r}")
                        self.records.append(rec)
                        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        return
                self.records.append(rec)
                path = target.split("?", 1)[0]

                if (rec.header("expect") or "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()

                upload = re.search(r"/upload(/|$)", path) is not None
                hasher = hashlib.sha256()
                stored = bytearray()
                try:
                    async for piece in self._body_pieces(reader, rec):
                        rec.body_len += len(piece)
                        if upload:
                            hasher.update(piece)
                        elif len(stored) < MAX_STORED_BODY:
                            stored += piece[: MAX_STORED_BODY - len(stored)]
                except (asyncio.IncompleteReadError, ConnectionError):
                    # the proxy aborted the message (legitimate when the client's body was bad)
                    rec.body = bytes(stored)
                    rec.aborted = True
                    return
                except BadRequest as e:
                    rec.body = bytes(stored)
                    rec.problems.append(str(e))
                    writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    return
                rec.body = bytes(stored)
                rec.complete = True
                rec.t_done = time.monotonic()

                keep = await self._respond(rec, path, writer, sock, hasher)
                if not keep:
                    return
                if (rec.header("connection") or "").lower().find("close") >= 0 or version == "HTTP/1.0":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            try:
                if not writer.transport.is_closing():
                    writer.close()
            except Exception:
                pass

    def _head(self, rec: Record, status: int, headers: list, reason: str | None = None) -> bytes:
        reason = reason or {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(status, "Status")
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines.append(f"x-upstream-conn: {rec.conn}")
        lines.append(f"x-upstream-seq: {rec.seq}")
        for k, v in headers:
            lines.append(f"{k}: {v}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @staticmethod
    def _body(rec: Record, body: bytes) -> bytes:
        return b"" if rec.method == "HEAD" else body

    def _echo_json(self, rec: Record) -> bytes:
        return json.dumps(
            {
                "upstream": self.name,
                "conn": rec.conn,
                "seq": rec.seq,
                "method": rec.method,
                "target": rec.target,
                "version": rec.version,
                "headers": rec.headers,
                "body_len": rec.body_len,
            }
        ).encode()

    async def _respond(self, rec, path, writer, sock, hasher) -> bool:
        """Write the response; return False when the connection must end."""
        m = re.search(r"/slow/(\d+)", path)
        if m:
            await asyncio.sleep(int(m.group(1)) / 1000.0)

        if re.search(r"/reset(/|$)", path):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if re.search(r"/eof(/|$)", path):
            writer.close()
            return False
        if re.search(r"/garbage(/|$)", path):
            writer.write(b"THIS IS NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()
            writer.close()
            return False

        m = re.search(r"/bad-response/([a-z-]+)", path)
        if m:
            writer.write(BAD_RESPONSES[m.group(1)])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            return False

        if re.search(r"/dribble-response(/|$)", path):
            raw = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n"
                   b"trailer: x-t\r\n\r\n5;ext=1\r\nhello\r\n8\r\n dribble\r\n0\r\nx-t: end\r\n\r\n")
            for i in range(len(raw)):
                writer.write(raw[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0.001)
            return True

        m = re.search(r"/status/(\d{3})", path)
        if m:
            status = int(m.group(1))
            if status in (204, 304):
                writer.write(self._head(rec, status, [("x-status", status)]))
            else:
                body = f"status {status}\n".encode()
                writer.write(self._head(rec, status, [("content-type", "text/plain"), ("content-length", len(body))])
                             + self._body(rec, body))
            await writer.drain()
            return True

        if re.search(r"/eof-body(/|$)", path):
            writer.write(self._head(rec, 200, [("content-type", "text/plain")]))
            await writer.drain()
            for part in (b"close-", b"delimited-", b"body\n"):
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.02)
            writer.close()
            return False

        if re.search(r"/early-hints(/|$)", path):
            writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)

        m = re.search(r"/slow-body/(\d+)", path)
        if m:
            body = b"slow body\n"
            writer.write(self._head(rec, 200, [("content-type", "text/plain"), ("content-length", len(body))]))
            await writer.drain()
            await asyncio.sleep(int(m.group(1)) / 1000.0)
            writer.write(self._body(rec, body))
            await writer.drain()
            return True

        if re.search(r"/cookies(/|$)", path):
            body = b"cookies\n"
            writer.write(self._head(rec, 200, [("set-cookie", "a=1; Path=/"), ("x-multi", "one"),
                                              ("set-cookie", "b=2; Path=/; HttpOnly"), ("x-multi", "two"),
                                              ("content-length", len(body))]) + self._body(rec, body))
            await writer.drain()
            return True

        if re.search(r"/chunked(/|$)", path):
            parts = [b"hello ", b"chunked ", b"world\n"]
            total = b"".join(parts)
            out = self._head(
                rec, 200, [("content-type", "text/plain"), ("transfer-encoding", "chunked"), ("trailer", "x-checksum, x-trailer")]
            )
            writer.write(out)
            for p in parts:
                writer.write(b"%x\r\n%s\r\n" % (len(p), p))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(
                b"0\r\nx-checksum: " + hashlib.sha256(total).hexdigest().encode() + b"\r\nx-trailer: done\r\n\r\n"
            )
            await writer.drain()
            return True

        m = re.search(r"/big/(\d+)", path)
        if m:
            n = int(m.group(1))
            writer.write(self._head(rec, 200, [("content-type", "application/octet-stream"), ("content-length", n)]))
            if rec.method == "HEAD":
                await writer.drain()
                return True
            sent = 0
            while sent < n:
                k = min(len(_BLOCK), n - sent)
                writer.write(_BLOCK[:k])
                sent += k
                await writer.drain()
            return True

        if re.search(r"/upload(/|$)", path):
            body = json.dumps({"bytes": rec.body_len, "sha256": hasher.hexdigest()}).encode()
            writer.write(self._head(rec, 200, [("content-type", "application/json"), ("content-length", len(body))]) + body)
            await writer.drain()
            return True

        if re.search(r"/echo(/|$)", path):
            ct = rec.header("content-type") or "application/octet-stream"
            writer.write(self._head(rec, 200, [("content-type", ct), ("content-length", len(rec.body))]) + rec.body)
            await writer.drain()
            return True

        if re.search(r"/hop-response(/|$)", path):
            body = b"hop\n"
            writer.write(
                self._head(
                    rec,
                    200,
                    [
                        ("connection", "x-bar"),
                        ("x-bar", "must-not-reach-client"),
                        ("keep-alive", "timeout=5"),
                        ("proxy-connection", "keep-alive"),
                        ("x-kept", "yes"),
                        ("content-type", "text/plain"),
                        ("content-length", len(body)),
                    ],
                )
                + body
            )
            await writer.drain()
            return True

        body = self._echo_json(rec)
        close = re.search(r"/close(/|$)", path) is not None
        hdrs = [("content-type", "application/json"), ("content-length", len(body))]
        if close:
            hdrs.append(("connection", "close"))
        writer.write(self._head(rec, 200, hdrs) + self._body(rec, body))
        await writer.drain()
        if close:
            writer.close()
            return False
        if re.search(r"/close-after(/|$)", path):
            asyncio.get_running_loop().call_later(0.1, writer.close)
        return True


class WebSocketEcho:
    """A WebSocket echo server (the `websockets` library) recording handshake request headers."""

    def __init__(self):
        self.port = 0
        self.handshakes = []  # list of (path, [(name, value)])
        self.open = 0  # WebSocket connections currently open
        self._server = None

    async def start(self):
        from websockets.asyncio.server import serve

        async def handler(ws):
            self.open += 1
            try:
                async for msg in ws:
                    await ws.send(msg)
            except Exception:
                pass
            finally:
                self.open -= 1

        def process_request(connection, request):
            self.handshakes.append((request.path, list(request.headers.raw_items())))
            return None

        self._server = await serve(handler, "127.0.0.1", 0, process_request=process_request)
        self.port = self._server.sockets[0].getsockname()[1] if hasattr(self._server, "sockets") else None
        if not self.port:
            self.port = list(self._server.server.sockets)[0].getsockname()[1]
        return self

    async def stop(self):
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except Exception:
                pass


class LoopThread:
    """An asyncio loop in a daemon thread; servers run there, tests call into it."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="upstream-loop", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--ws-port", type=int, default=0, help="also start a WebSocket echo (0 = off)")
    args = ap.parse_args()

    async def run():
        up = await RecordingUpstream().start(args.port)
        print(f"recording upstream on 127.0.0.1:{up.port}", file=sys.stderr)
        seen = 0
        while True:
            await asyncio.sleep(0.2)
            for r in up.records[seen:]:
                print(
                    json.dumps(
                        {
                            "conn": r.conn,
                            "seq": r.seq,
                            "head": r.raw_head.decode("latin-1"),
                            "framing": r.framing,
                            "body_len": r.body_len,
                            "complete": r.complete,
                            "problems": r.problems,
                        }
                    ),
                    file=sys.stderr,
                )
            seen = len(up.records)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
