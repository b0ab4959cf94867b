"""Byte-level HTTP/1.1 client, tiny YAML writer and port helpers for the integration tests."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


_held_dead_ports = []


def dead_port() -> int:
    """A port nothing listens on and nothing else can take while the tests run: bound, never
    listening (a connect is refused), and held open."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    _held_dead_ports.append(s)
    return s.getsockname()[1]


def wait_port(port: int, timeout: float = 5.0, alive=lambda: True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


# ---------------------------------------------------------------------------------------------
# YAML: block style, strings JSON-quoted (a JSON string is a valid YAML double-quoted scalar).


def _scalar(v) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))


def to_yaml(obj, indent: int = 0) -> str:
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                out.append(f"{pad}{k}:\n{to_yaml(v, indent + 2)}")
            elif isinstance(v, list) and v:
                out.append(f"{pad}{k}:\n{to_yaml(v, indent + 2)}")
            elif isinstance(v, dict):
                out.append(f"{pad}{k}: {{}}\n")
            elif isinstance(v, list):
                out.append(f"{pad}{k}: []\n")
            else:
                out.append(f"{pad}{k}: {_scalar(v)}\n")
        return "".join(out)
    if isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 2)
                # put the first line after the dash
                first, _, rest = body.partition("\n")
                out.append(f"{pad}- {first.lstrip()}\n{rest}")
            else:
                out.append(f"{pad}- {_scalar(item) if not isinstance(item, (dict, list)) else ('{}' if isinstance(item, dict) else '[]')}\n")
        return "".join(out)
    return pad + _scalar(obj) + "\n"


# ---------------------------------------------------------------------------------------------
# Raw HTTP/1.1 client


class ProtocolError(Exception):
    pass


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list  # [(name, value)]
    body: bytes = b""
    trailers: list = field(default_factory=list)
    raw_head: bytes = b""
    chunked: bool = False
    framing: str = ""  # "content-length" | "chunked" | "eof" | "none"
    informational: list = field(default_factory=list)  # 1xx responses seen before this one

    def header(self, name: str):
        v = self.header_all(name)
        return v[0] if v else None

    def header_all(self, name: str) -> list:
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header_names(self) -> set:
        return {k.lower() for k, _ in self.headers}

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} body={self.body[:200]!r}>"


class Conn:
    """A client TCP connection that sends raw bytes and parses responses strictly."""

    def __init__(self, port: int, timeout: float = 5.0, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.reset = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def request(self, method: str, target: str, headers=None, body: bytes | None = None, host: str = "test.local"):
        hs = [("Host", host)] if host is not None else []
        hs += list(headers or [])
        if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hs):
            hs.append(("Content-Length", str(len(body))))
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs) + "\r\n"
        self.send(head.encode("latin-1") + (body or b""))

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into buf; False on EOF/reset."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for bytes from the proxy")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            raise TimeoutError("timed out waiting for bytes from the proxy")
        except ConnectionResetError:
            self.eof = True
            self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_until(self, sep: bytes, deadline: float, limit: int = 1 << 20) -> bytes:
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out, self.buf = self.buf[: i + len(sep)], self.buf[i + len(sep):]
                return out
            if len(self.buf) > limit:
                raise ProtocolError("line/head too long")
            if not self._fill(deadline):
                raise ProtocolError(f"connection closed while waiting for {sep!r}; have {self.buf[:200]!r}")

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ProtocolError(f"connection closed with {n - len(self.buf)} body bytes missing")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self, timeout: float | None = None) -> Response:
        deadline = time.monotonic() + (timeout or self.timeout)
        raw = self._read_until(b"\r\n\r\n", deadline)
        text = raw[:-4].decode("latin-1")
        lines = text.split("\r\n")
        for ln in lines:
            if "\n" in ln or "\r" in ln:
                raise ProtocolError(f"bare CR/LF in response head {raw[:300]!r}")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {lines[0]!r}")
        headers = []
        for ln in lines[1:]:
            if ":" not in ln or ln[:1] in (" ", "\t"):
                raise ProtocolError(f"bad response header line {ln!r}")
            k, v = ln.split(":", 1)
            if k != k.strip():
                raise ProtocolError(f"whitespace around header name {ln!r}")
            headers.append((k, v.strip(" \t")))
        return Response(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers, raw_head=raw)

    def read_response(self, method: str = "GET", timeout: float | None = None, allow_1xx: bool = False,
                      max_body: int = 1 << 26, stream_to=None) -> Response:
        deadline = time.monotonic() + (timeout or self.timeout)
        infos = []
        while True:
            resp = self.read_head(max(0.001, deadline - time.monotonic()))
            if 100 <= resp.status < 200 and resp.status != 101 and not allow_1xx:
                infos.append(resp)
                continue
            break
        resp.informational = infos
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            resp.framing = "none"
            return resp
        te = resp.header_all("transfer-encoding")
        cl = resp.header_all("content-length")
        if te:
            if cl:
                raise ProtocolError(f"response has both transfer-encoding and content-length: {resp.headers}")
            if [t.strip().lower() for t in ",".join(te).split(",")][-1] != "chunked":
                raise ProtocolError(f"unexpected response transfer-encoding {te}")
            resp.chunked = True
            resp.framing = "chunked"
            body = bytearray()
            while True:
                line = self._read_until(b"\r\n", deadline, limit=8192)
                size_txt = line[:-2].split(b";", 1)[0].strip()
                try:
                    size = int(size_txt, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size line in response {line!r}")
                if size == 0:
                    break
                data = self._read_exact(size, deadline)
                if stream_to is not None:
                    stream_to(data)
                elif len(body) < max_body:
                    body += data
                if self._read_exact(2, deadline) != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
            while True:
                line = self._read_until(b"\r\n", deadline, limit=65536)
                if line == b"\r\n":
                    break
                k, _, v = line[:-2].decode("latin-1").partition(":")
                resp.trailers.append((k.strip(), v.strip()))
            resp.body = bytes(body)
            return resp
        if cl:
            if len(set(x.strip() for x in cl)) != 1:
                raise ProtocolError(f"several content-lengths {cl}")
            n = int(cl[0])
            resp.framing = "content-length"
            if stream_to is None:
                resp.body = self._read_exact(n, deadline)
            else:
                left = n
                while left > 0:
                    if not self.buf and not self._fill(deadline):
                        raise ProtocolError(f"connection closed with {left} body bytes missing")
                    piece, self.buf = self.buf[:left], self.buf[left:]
                    left -= len(piece)
                    stream_to(piece)
            return resp
        # read until EOF
        resp.framing = "eof"
        while self._fill(deadline):
            pass
        resp.body, self.buf = self.buf, b""
        return resp

    def wait_closed(self, timeout: float = 3.0) -> tuple[bool, bytes]:
        """Wait for the peer to close. Returns (closed, bytes received meanwhile)."""
        deadline = time.monotonic() + timeout
        start = len(self.buf)
        got = b""
        while True:
            try:
                if not self._fill(deadline):
                    got = self.buf[start:]
                    return True, got
            except TimeoutError:
                return False, self.buf[start:]


def header_of(headers, name):
    n = name.lower()
    for k, v in headers:
        if k.lower() == n:
            return v
    return None
