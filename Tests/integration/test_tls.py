"""TLS (SPEC §2 listener `tls`, cluster `tls`): termination with curl, `openssl s_client` and
Python `ssl` (TLS 1.2 and 1.3, ALPN http/1.1 only, min_version), keep-alive and pipelining over
one TLS connection, SNI certificates, mTLS with the client identity in the access log,
x-forwarded-proto, TLS origination (SNI, CA, name and chain verification, verify: false,
retry on another endpoint after a refused handshake, pooled connections reused, client
certificates), slow and silent TLS clients cut at header_read, and garbage on a TLS port.

Certificates are made once per session with `cryptography` (an EC CA, an unrelated CA, leaf
certificates for the listener, SNI, clients and upstreams). TLS upstreams are a threaded
Python `ssl` server (`TLSUpstream`) that records the SNI each handshake carried, the client
certificate, and echoes request headers and bodies."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import select
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wire import Conn, ProtocolError, free_port

SPIFFE = "spiffe://test/client"


# ---------------------------------------------------------------------------------------------
# Certificates


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Outrider tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _new_key(kind: str):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _make_ca(cn: str):
    key = _new_key("ec")
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(ca, cn: str, dns=(), ips=(), uris=(), usage="server", kind="ec"):
    ca_key, ca_cert = ca
    key = _new_key(kind)
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH] if usage == "server" else [ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    sans = ([x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            + [x509.UniformResourceIdentifier(u) for u in uris])
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


@dataclass
class Pair:
    crt: str
    key: str
    cert: x509.Certificate


@dataclass
class PKI:
    dir: Path
    ca: str  # the CA that signs everything below unless said otherwise
    ca2: str  # an unrelated CA
    server: Pair  # localhost, 127.0.0.1
    other: Pair  # other.test (RSA key)
    client: Pair  # URI spiffe://test/client, DNS client.test, CN client
    client_dns: Pair  # DNS dns-client.test only
    client_cn: Pair  # no SAN, CN cn-only-client
    client_foreign: Pair  # signed by ca2
    upstream: Pair  # upstream.test
    upstream_ip: Pair  # IP 127.0.0.1 only
    elsewhere: Pair  # elsewhere.test (a "wrong name" for an upstream.test cluster)
    upstream_foreign: Pair  # upstream.test signed by ca2
    wild: Pair  # DNS *.wild.test
    cn_only_server: Pair  # no SAN, CN cnonly.test


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    ca = _make_ca("Outrider Test CA")
    ca2 = _make_ca("Unrelated Test CA")

    def write_ca(name, pair):
        p = d / f"{name}.crt"
        p.write_bytes(pair[1].public_bytes(serialization.Encoding.PEM))
        return str(p)

    def write(name, pair) -> Pair:
        key, cert = pair
        crt_path, key_path = d / f"{name}.crt", d / f"{name}.key"
        crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return Pair(str(crt_path), str(key_path), cert)

    return PKI(
        dir=d,
        ca=write_ca("ca", ca),
        ca2=write_ca("ca2", ca2),
        server=write("server", _make_leaf(ca, "localhost", dns=["localhost"], ips=["127.0.0.1"])),
        other=write("other", _make_leaf(ca, "other.test", dns=["other.test"], kind="rsa")),
        client=write("client", _make_leaf(ca, "client", dns=["client.test"], uris=[SPIFFE], usage="client")),
        client_dns=write("client_dns", _make_leaf(ca, "dns-client", dns=["dns-client.test"], usage="client")),
        client_cn=write("client_cn", _make_leaf(ca, "cn-only-client", usage="client")),
        client_foreign=write("client_foreign", _make_leaf(ca2, "foreign", uris=["spiffe://evil/client"],
                                                          usage="client")),
        upstream=write("upstream", _make_leaf(ca, "upstream.test", dns=["upstream.test"])),
        upstream_ip=write("upstream_ip", _make_leaf(ca, "127.0.0.1", ips=["127.0.0.1"])),
        elsewhere=write("elsewhere", _make_leaf(ca, "elsewhere.test", dns=["elsewhere.test"])),
        upstream_foreign=write("upstream_foreign", _make_leaf(ca2, "upstream.test", dns=["upstream.test"])),
        wild=write("wild", _make_leaf(ca, "wildcard", dns=["*.wild.test"])),
        cn_only_server=write("cn_only_server", _make_leaf(ca, "cnonly.test")),
    )


def _sans(cert: x509.Certificate, kind) -> list:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(kind)


def _cn(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


# ---------------------------------------------------------------------------------------------
# A TLS upstream: threaded, `ssl`-wrapped, HTTP/1.1 keep-alive, records SNI and client certs


@dataclass
class TLSRecord:
    conn: int
    seq: int
    sni: str | None
    method: str
    target: str
    headers: list
    body: bytes
    peer_cert: dict | None
    tls_version: str | None
    alpn: str | None

    def header(self, name):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return None

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]


class TLSUpstream:
    """HTTPS/1.1 server on 127.0.0.1 (one thread per connection).

    /echo      answer with the request body
    /big/N     N bytes of a fixed pattern
    anything   200 with a JSON echo: name, conn, seq, sni, method, target, headers, body_len,
               peer (client certificate subject/SAN when one was presented)
    """

    def __init__(self, pair: Pair, name="tls-upstream", client_ca: str | None = None):
        self.name = name
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pair.crt, pair.key)
        self.ctx.set_alpn_protocols(["http/1.1"])
        if client_ca:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(client_ca)
        self.ctx.sni_callback = self._on_sni
        self.lock = threading.Lock()
        self.records: list[TLSRecord] = []
        self.sni_seen: list = []  # the server name of every ClientHello (None: no SNI)
        self.accepted = 0  # TCP connections
        self.handshakes = 0  # completed handshakes
        self.handshake_errors: list[str] = []
        self._socks = set()
        self._threads: list[threading.Thread] = []
        self._stop = False
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True, name=f"{name}-accept")
        self._accept_thread.start()

    def _on_sni(self, sslsock, server_name, ctx):
        with self.lock:
            self.sni_seen.append(server_name)
        try:
            sslsock.outrider_sni = server_name
        except Exception:
            pass
        return None

    def _accept_loop(self):
        while not self._stop:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                conn_id = self.accepted
                self._socks.add(s)
            t = threading.Thread(target=self._serve, args=(s, conn_id), daemon=True, name=f"{self.name}-{conn_id}")
            self._threads.append(t)
            t.start()

    def _serve(self, raw: socket.socket, conn_id: int):
        raw.settimeout(15)
        tls = None
        try:
            try:
                tls = self.ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
                with self.lock:
                    self._socks.add(tls)
                tls.do_handshake()
            except (ssl.SSLError, OSError) as e:
                with self.lock:
                    self.handshake_errors.append(f"conn {conn_id}: {e}")
                return
            with self.lock:
                self.handshakes += 1
            sni = getattr(tls, "outrider_sni", None)
            peer = tls.getpeercert() or None
            buf = b""
            seq = 0
            while True:
                while b"\r\n\r\n" not in buf:
                    data = tls.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = []
                for ln in lines[1:]:
                    k, _, v = ln.partition(":")
                    headers.append((k, v.strip()))
                hmap = {k.lower(): v for k, v in headers}
                body = b""
                if "chunked" in hmap.get("transfer-encoding", "").lower():
                    while True:
                        while b"\r\n" not in buf:
                            buf += self._recv_more(tls)
                        line, buf = buf.split(b"\r\n", 1)
                        size = int(line.split(b";")[0], 16)
                        while len(buf) < size + 2:
                            buf += self._recv_more(tls)
                        if size == 0:
                            # no trailers expected; consume the final CRLF
                            buf = buf[2:]
                            break
                        body += buf[:size]
                        buf = buf[size + 2:]
                else:
                    n = int(hmap.get("content-length", "0"))
                    while len(buf) < n:
                        buf += self._recv_more(tls)
                    body, buf = buf[:n], buf[n:]
                seq += 1
                rec = TLSRecord(conn_id, seq, sni, method, target, headers, body, peer, tls.version(),
                                tls.selected_alpn_protocol())
                with self.lock:
                    self.records.append(rec)
                path = target.split("?", 1)[0]
                m = re.search(r"/big/(\d+)", path)
                if path.endswith("/echo"):
                    out, ctype = body, hmap.get("content-type", "application/octet-stream")
                elif m:
                    out, ctype = _pattern(int(m.group(1))), "application/octet-stream"
                else:
                    peer_info = None
                    if peer:
                        peer_info = {"subject": [list(x) for x in peer.get("subject", ())],
                                     "san": [list(x) for x in peer.get("subjectAltName", ())]}
                    out = json.dumps({"upstream": self.name, "conn": conn_id, "seq": seq, "sni": sni,
                                      "method": method, "target": target, "headers": headers,
                                      "body_len": len(body), "peer": peer_info}).encode()
                    ctype = "application/json"
                resp = (f"HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {len(out)}\r\n"
                        f"x-upstream: {self.name}\r\nx-upstream-conn: {conn_id}\r\nx-upstream-seq: {seq}\r\n"
                        f"\r\n").encode() + out
                tls.sendall(resp)
                if hmap.get("connection", "").lower() == "close":
                    return
        except (OSError, ValueError, ssl.SSLError):
            return
        finally:
            for s in (tls, raw):
                if s is None:
                    continue
                try:
                    s.close()
                except OSError:
                    pass
                with self.lock:
                    self._socks.discard(s)

    @staticmethod
    def _recv_more(tls) -> bytes:
        data = tls.recv(262144)
        if not data:
            raise ConnectionError("eof inside a request")
        return data

    def stop(self):
        self._stop = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self._accept_thread.join(2)
        for t in self._threads:
            t.join(2)


def _pattern(n: int) -> bytes:
    block = bytes(range(256)) * 256
    return (block * (n // len(block) + 1))[:n]


@pytest.fixture
def tls_upstream():
    """tls_upstream(pair, name=..., client_ca=None) -> a started TLSUpstream, stopped at teardown."""
    made: list[TLSUpstream] = []

    def make(pair: Pair, name="tls-upstream", client_ca=None):
        u = TLSUpstream(pair, name, client_ca)
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


# ---------------------------------------------------------------------------------------------
# Clients


def client_ctx(pki: PKI, cert: Pair | None = None, min_v=None, max_v=None, alpn=None, ca=None,
               verify=True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(ca or pki.ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert.crt, cert.key)
    if min_v is not None:
        ctx.minimum_version = min_v
    if max_v is not None:
        ctx.maximum_version = max_v
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


class TLSConn(Conn):
    """wire.Conn over TLS: the same strict response parser on an `ssl` socket."""

    def __init__(self, port: int, ctx: ssl.SSLContext, server_hostname: str | None = "localhost",
                 timeout: float = 5.0):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.reset = False


def tls_get(p, pki, target="/", cert=None, host="localhost", headers=(), body=None, method="GET", **ctx_kw):
    with TLSConn(p.port, client_ctx(pki, cert=cert, **ctx_kw)) as c:
        c.request(method, target, host=host, headers=list(headers), body=body)
        return c.read_response(method)


def curl(port: int, path: str, *args, host="localhost", timeout=15):
    """curl -v over https://HOST:PORT/PATH with HOST resolved to 127.0.0.1. Returns
    (CompletedProcess, headers text, body bytes)."""
    outdir = Path(os.environ.get("TMPDIR", "/tmp"))
    tag = f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
    hfile, bfile = outdir / f"curl-h-{tag}", outdir / f"curl-b-{tag}"
    cmd = ["curl", "-v", "-sS", "--noproxy", "*", "--max-time", "10", "--resolve", f"{host}:{port}:127.0.0.1",
           "-D", str(hfile), "-o", str(bfile), *args, f"https://{host}:{port}{path}"]
    try:
        cp = subprocess.run(cmd, capture_output=True, timeout=timeout, text=True, errors="replace",
                            env={**os.environ, "CURL_HOME": "/nonexistent"})
        headers = hfile.read_text(errors="replace") if hfile.exists() else ""
        body = bfile.read_bytes() if bfile.exists() else b""
    finally:
        for f in (hfile, bfile):
            try:
                f.unlink()
            except FileNotFoundError:
                pass
    return cp, headers, body


def _status(headers_text: str) -> int | None:
    m = re.findall(r"^HTTP/\S+ (\d{3})", headers_text, re.M)
    return int(m[-1]) if m else None


def s_client(port: int, *args, stdin: bytes | None = None, timeout=15) -> str:
    """openssl s_client; by default sends one `Connection: close` request and waits for the
    server to close (-ign_eof), so the whole session summary is printed. stdout + stderr."""
    if stdin is None:
        stdin = b"GET /s-client HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    cp = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-ign_eof", *args],
                        input=stdin, capture_output=True, timeout=timeout)
    return cp.stdout.decode(errors="replace") + "\n" + cp.stderr.decode(errors="replace")


def tls_listener(pki: PKI, **tls) -> dict:
    t = {"certificate": pki.server.crt, "private_key": pki.server.key}
    t.update(tls)
    # HTTP/1.1 over TLS: these tests read HTTP/1.1 off the wire (curl would pick h2 by ALPN
    # otherwise); test_http2.py covers h2.
    return {"name": "inbound-tls", "tls": t, "protocols": ["http1"], "timeouts": {"header_read": "5s", "idle": "30s"}}


def client_hello_bytes(server_hostname="localhost") -> bytes:
    """A real ClientHello as a TLS client would send it first."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, hello[:20]
    return hello


@pytest.fixture
def tls_proxy(proxy_factory, upstream, pki):
    """A proxy with one TLS listener (server cert for localhost/127.0.0.1) in front of `upstream`."""
    return proxy_factory(upstream=upstream, listener=tls_listener(pki))


# ---------------------------------------------------------------------------------------------
# 1. Termination: curl (1.2 and 1.3), bodies, s_client ALPN and version, min_version


@pytest.mark.parametrize("version_args,version", [
    (["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"),
    (["--tlsv1.3"], "TLSv1.3"),
])
def test_curl_get_and_1mib_post(tls_proxy, upstream, pki, version_args, version):
    cp, headers, body = curl(tls_proxy.port, "/hello?x=1", "--cacert", pki.ca, *version_args)
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert f"SSL connection using {version}" in cp.stderr, cp.stderr[-3000:]
    assert re.search(r"ALPN.*(server accepted|accepted).*http/1\.1", cp.stderr), cp.stderr[-3000:]
    assert _status(headers) == 200, headers
    echo = json.loads(body)
    assert echo["target"] == "/hello?x=1"
    rec = upstream.find("/hello")
    assert rec.header("x-forwarded-proto") == "https", rec.headers

    payload = os.urandom(1024 * 1024)
    pfile = Path(tls_proxy.workdir) / f"payload-{version}"
    pfile.write_bytes(payload)
    cp, headers, body = curl(tls_proxy.port, "/echo", "--cacert", pki.ca, *version_args,
                             "-H", "content-type: application/octet-stream", "--data-binary", f"@{pfile}")
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert _status(headers) == 200, headers
    assert len(body) == len(payload), f"echoed {len(body)} bytes of {len(payload)}"
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(payload).hexdigest(), "1 MiB body corrupted"
    rec = upstream.find("/echo")
    assert rec.body_len == len(payload) and rec.complete


@pytest.mark.parametrize("max_v", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_large_download_over_tls(tls_proxy, pki, max_v):
    n = 8 * 1024 * 1024 + 12345
    with TLSConn(tls_proxy.port, client_ctx(pki, max_v=max_v), timeout=20) as c:
        c.request("GET", f"/big/{n}")
        r = c.read_response(timeout=20)
        assert c.sock.version() == ("TLSv1.2" if max_v == ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
    assert r.status == 200, r
    assert len(r.body) == n
    block = bytes(j % 251 for j in range(251 * 261))  # upstream_server's /big pattern
    assert r.body == (block * (n // len(block) + 1))[:n], "downloaded body differs"


@pytest.mark.parametrize("version_flag,version", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_s_client_alpn_http11_and_version(tls_proxy, pki, version_flag, version):
    out = s_client(tls_proxy.port, "-servername", "localhost", "-alpn", "h2,http/1.1", "-CAfile", pki.ca,
                   version_flag)
    assert "ALPN protocol: http/1.1" in out, out[-3000:]
    assert re.search(rf"Protocol\s*:\s*{re.escape(version)}", out), out[-3000:]
    assert f"New, {version}" in out, out[-3000:]
    assert "Verify return code: 0 (ok)" in out, out[-3000:]
    assert "HTTP/1.1 200 OK" in out, out[-3000:]


def test_python_client_offering_h2_and_http11_gets_http11(tls_proxy, pki):
    with TLSConn(tls_proxy.port, client_ctx(pki, alpn=["h2", "http/1.1"])) as c:
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        c.request("GET", "/alpn")
        assert c.read_response().status == 200


def test_keepalive_connection_keeps_working_after_its_idle_buffers_are_released(tls_proxy, upstream, pki):
    """One second into a keep-alive gap the proxy gives back the connection's TLS buffers (the
    memory BIOs are replaced): the same connection must go on, for small and large answers,
    and for a request arriving in pieces across the release."""
    with TLSConn(tls_proxy.port, client_ctx(pki)) as c:
        for round_ in range(3):
            c.request("GET", f"/idle-shrink/{round_}", host="localhost")
            r = c.read_response()
            assert r.status == 200, r
            time.sleep(1.4)
        c.request("POST", "/echo", host="localhost", body=b"x" * 300_000)
        r = c.read_response()
        assert r.status == 200 and len(r.body) > 0, r
        time.sleep(1.4)
        c.sock.sendall(b"GET /idle-shrink/split HTTP/1.1\r\nHo")
        time.sleep(1.2)
        c.sock.sendall(b"st: localhost\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
    assert [rec.target for rec in upstream.records if rec.target.startswith("/idle-shrink/")] == \
        ["/idle-shrink/0", "/idle-shrink/1", "/idle-shrink/2", "/idle-shrink/split"]


def test_tls_listener_offering_h2_prefers_it(proxy_factory, upstream, pki):
    listener = tls_listener(pki)
    listener["protocols"] = ["http1", "h2"]
    p = proxy_factory(upstream=upstream, listener=listener)
    with TLSConn(p.port, client_ctx(pki, alpn=["http/1.1", "h2"])) as c:
        assert c.sock.selected_alpn_protocol() == "h2"
    with TLSConn(p.port, client_ctx(pki, alpn=["http/1.1"])) as c:
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        c.request("GET", "/alpn-http11")
        assert c.read_response().status == 200
    cp, headers, body = curl(p.port, "/alpn-h2", "--cacert", pki.ca)
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert re.search(r"ALPN.*(server accepted|accepted).*h2", cp.stderr), cp.stderr[-3000:]
    assert headers.startswith("HTTP/2 200"), headers


def test_client_offering_only_h2_does_not_get_h2(tls_proxy, pki):
    try:
        with TLSConn(tls_proxy.port, client_ctx(pki, alpn=["h2"])) as c:
            assert c.sock.selected_alpn_protocol() in (None, ""), \
                f"ALPN {c.sock.selected_alpn_protocol()!r} negotiated: only http/1.1 is offered"
    except (ssl.SSLError, ConnectionError):
        pass  # refusing the handshake (no_application_protocol) is fine too
    out = s_client(tls_proxy.port, "-servername", "localhost", "-alpn", "h2", "-CAfile", pki.ca)
    assert "ALPN protocol: h2" not in out, out[-3000:]
    # the proxy keeps serving others
    r = tls_get(tls_proxy, pki, "/after-h2-only")
    assert r.status == 200, r
    assert tls_proxy.alive()


def test_no_alpn_client_served(tls_proxy, pki):
    with TLSConn(tls_proxy.port, client_ctx(pki)) as c:
        assert c.sock.selected_alpn_protocol() is None
        c.request("GET", "/no-alpn")
        assert c.read_response().status == 200


def test_min_version_13_refuses_tls12_client(proxy_factory, upstream, pki):
    p = proxy_factory(upstream=upstream, listener=tls_listener(pki, min_version="1.3"))
    cp, headers, body = curl(p.port, "/v12", "--cacert", pki.ca, "--tlsv1.2", "--tls-max", "1.2")
    assert cp.returncode == 35, f"curl exit {cp.returncode} (expected 35, handshake failure)\n{cp.stderr[-2000:]}"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_get(p, pki, "/v12-py", max_v=ssl.TLSVersion.TLSv1_2)
    out = s_client(p.port, "-servername", "localhost", "-tls1_2", "-CAfile", pki.ca)
    assert "Cipher is (NONE)" in out and "HTTP/1.1 200" not in out, out[-3000:]
    # TLS 1.3 is fine
    cp, headers, body = curl(p.port, "/v13", "--cacert", pki.ca, "--tlsv1.3")
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert _status(headers) == 200
    assert "SSL connection using TLSv1.3" in cp.stderr
    assert [r.target for r in upstream.complete] == ["/v13"], "a refused client reached the upstream"


def test_min_version_12_accepts_both(proxy_factory, upstream, pki):
    p = proxy_factory(upstream=upstream, listener=tls_listener(pki, min_version="1.2"))
    for max_v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        assert tls_get(p, pki, "/mv", max_v=max_v).status == 200
    # nothing older than 1.2 is accepted: a TLS 1.1 client (allowed to offer it) is refused
    out = s_client(p.port, "-servername", "localhost", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0",
                   stdin=b"GET /v11 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert "Cipher is (NONE)" in out, out[-3000:]
    assert "HTTP/1.1 200" not in out, out[-3000:]
    assert [r.target for r in upstream.complete] == ["/mv", "/mv"]


def test_relative_certificate_paths_resolve_against_config_file(proxy_factory, upstream, pki, tmp_path):
    d = tmp_path / "proxy1"  # the directory proxy_factory writes the first config into
    d.mkdir(parents=True, exist_ok=True)
    (d / "certs").mkdir(exist_ok=True)
    shutil.copy(pki.server.crt, d / "certs" / "tls.crt")
    shutil.copy(pki.server.key, d / "certs" / "tls.key")
    lst = tls_listener(pki)
    lst["tls"] = {"certificate": "certs/tls.crt", "private_key": "certs/tls.key"}
    p = proxy_factory(upstream=upstream, listener=lst)
    assert Path(p.config_path).parent == d
    assert tls_get(p, pki, "/relative").status == 200


# ---- TLS configuration errors (validate and run)


def _tls_config_text(pki, port, listener_extra="", tls_extra="", cluster_extra="", crt=None, key=None) -> str:
    return (
        "listeners:\n"
        "  - name: t\n"
        f"    address: 127.0.0.1:{port}\n"
        f"{listener_extra}"
        "    tls:\n"
        f"      certificate: {crt or pki.server.crt}\n"
        f"      private_key: {key or pki.server.key}\n"
        f"{tls_extra}"
        "    routes:\n"
        "      - match: { path_prefix: / }\n"
        "        cluster: app\n"
        "clusters:\n"
        "  - name: app\n"
        "    endpoints: [127.0.0.1:9]\n"
        f"{cluster_extra}"
    )


TLS_CONFIG_ERRORS = [
    # id, kwargs, marker (the line the error points at), words the message must hold
    ("h2c-with-tls", dict(listener_extra="    protocols: [h2c]\n"), "protocols:", ["h2c"]),
    ("missing-certificate", dict(crt="/nonexistent/nope.crt"), "certificate:", ["nope.crt"]),
    ("key-as-certificate", dict(crt="KEY"), "certificate:", ["certificate"]),
    ("min-version-1.1", dict(tls_extra='      min_version: "1.1"\n'), "min_version", ["min_version"]),
    ("missing-client-ca", dict(tls_extra="      client_ca: /nonexistent/ca.crt\n"), "client_ca", ["client_ca"]),
    ("missing-sni-certificate", dict(tls_extra="      sni_certificates: [ { certificate: /nonexistent/o.crt, "
                                              "private_key: /nonexistent/o.key } ]\n"), "sni_certificates", ["o.crt"]),
    ("missing-cluster-ca", dict(cluster_extra="    tls: { ca: /nonexistent/up-ca.crt }\n"), "tls: { ca", ["up-ca.crt"]),
    ("cluster-cert-without-key", dict(cluster_extra="    tls: { certificate: CLIENTCRT }\n"), "tls: { certificate",
     ["private_key"]),
]


@pytest.mark.parametrize("kw,marker,words", [c[1:] for c in TLS_CONFIG_ERRORS], ids=[c[0] for c in TLS_CONFIG_ERRORS])
def test_tls_config_errors_validate_and_run(outrider_bin, tmp_path, pki, kw, marker, words):
    kw = dict(kw)
    if kw.get("crt") == "KEY":
        kw["crt"] = pki.server.key
    if "cluster_extra" in kw:
        kw["cluster_extra"] = kw["cluster_extra"].replace("CLIENTCRT", pki.client.crt)
    text = _tls_config_text(pki, free_port(), **kw)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    line = 1 + next(i for i, ln in enumerate(text.splitlines()) if marker in ln)
    for cmd in (["validate", "--config", str(path)], ["run", "--config", str(path)]):
        r = subprocess.run([outrider_bin, *cmd], capture_output=True, text=True, timeout=10)
        assert r.returncode == 1, f"{cmd[0]}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
        m = re.search(rf"{re.escape(str(path))}:(\d+):(\d+):", r.stderr)
        assert m and int(m.group(1)) == line, f"{cmd[0]}: expected {path}:{line}:COL in\n{r.stderr}"
        for w in words:
            assert w in r.stderr, f"{cmd[0]}: {w!r} not in\n{r.stderr}"


def test_valid_tls_config_validates(outrider_bin, tmp_path, pki):
    path = tmp_path / "c.yaml"
    path.write_text(_tls_config_text(
        pki, free_port(),
        tls_extra=f'      client_ca: {pki.ca}\n      min_version: "1.3"\n'
                  f"      sni_certificates: [ {{ certificate: {pki.other.crt}, private_key: {pki.other.key} }} ]\n",
        cluster_extra=f"    tls: {{ sni: upstream.test, ca: {pki.ca}, verify: true, certificate: {pki.client.crt}, "
                      f"private_key: {pki.client.key} }}\n"))
    r = subprocess.run([outrider_bin, "validate", "--config", str(path)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("where", ["listener", "sni", "cluster"])
def test_private_key_not_matching_certificate_refused_by_validate_and_run(outrider_bin, tmp_path, pki, where):
    """A key that does not belong to its certificate: `run` refuses to start (exit 1, naming the
    files); `validate` must not call the same config fine (SPEC §1/§2: validate checks what
    start-up checks, certificate problems included)."""
    if where == "listener":
        text = _tls_config_text(pki, free_port(), key=pki.other.key)
    elif where == "sni":
        text = _tls_config_text(pki, free_port(), tls_extra=(
            f"      sni_certificates: [ {{ certificate: {pki.other.crt}, private_key: {pki.server.key} }} ]\n"))
    else:
        text = _tls_config_text(pki, free_port(), cluster_extra=(
            f"    tls: {{ ca: {pki.ca}, certificate: {pki.client.crt}, private_key: {pki.client_dns.key} }}\n"))
    path = tmp_path / "c.yaml"
    path.write_text(text)
    r = subprocess.run([outrider_bin, "run", "--config", str(path)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1, f"run: rc={r.returncode}\n{r.stderr}"
    assert "mismatch" in r.stderr or "does not match" in r.stderr, r.stderr
    v = subprocess.run([outrider_bin, "validate", "--config", str(path)], capture_output=True, text=True, timeout=10)
    assert v.returncode == 1, (f"validate accepts a config that run refuses (rc={v.returncode}: {v.stdout.strip()} "
                               f"{v.stderr.strip()}); run said: {r.stderr.strip()[-300:]}")
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+:", v.stderr), v.stderr


# ---------------------------------------------------------------------------------------------
# 2. Keep-alive and pipelining over one TLS connection


def test_keepalive_several_requests_one_tls_connection(tls_proxy, upstream, pki):
    import http.client

    conn = http.client.HTTPSConnection("127.0.0.1", tls_proxy.port, timeout=5,
                                       context=client_ctx(pki))
    # the certificate names localhost and 127.0.0.1: verification with the IP works too
    try:
        first_sock = None
        for i in range(6):
            body = f"payload-{i}".encode() * (i * 100)
            conn.request("POST" if i % 2 else "GET", f"/ka/{i}", body=body if i % 2 else None,
                         headers={"Host": "ka.test"})
            r = conn.getresponse()
            data = r.read()
            assert r.status == 200, (r.status, data[:300])
            echo = json.loads(data)
            assert echo["target"] == f"/ka/{i}"
            assert echo["body_len"] == (len(body) if i % 2 else 0)
            if first_sock is None:
                first_sock = conn.sock
            assert conn.sock is first_sock and conn.sock is not None, f"request {i} used a new TLS connection"
    finally:
        conn.close()
    recs = [r for r in upstream.complete if r.target.startswith("/ka/")]
    assert len(recs) == 6
    assert all(r.header("x-forwarded-proto") == "https" for r in recs)
    # the proxy's pool reused its upstream connection too
    assert len({r.conn for r in recs}) <= 2, [r.conn for r in recs]


def test_keepalive_raw_tls_conn(tls_proxy, upstream, pki):
    with TLSConn(tls_proxy.port, client_ctx(pki)) as c:
        for i in range(10):
            c.request("GET", f"/raw-ka/{i}")
            r = c.read_response()
            assert r.status == 200, r
            assert r.json()["target"] == f"/raw-ka/{i}"
            assert (r.header("connection") or "").lower() != "close"


def test_pipelined_requests_over_tls_answered_in_order(tls_proxy, upstream, pki):
    with TLSConn(tls_proxy.port, client_ctx(pki)) as c:
        body = b"z" * 3000
        c.send(b"GET /pipe/1 HTTP/1.1\r\nHost: p.test\r\n\r\n"
               b"POST /pipe/2 HTTP/1.1\r\nHost: p.test\r\nContent-Length: 3000\r\n\r\n" + body +
               b"GET /pipe/3 HTTP/1.1\r\nHost: p.test\r\n\r\n")
        targets = []
        for _ in range(3):
            r = c.read_response()
            assert r.status == 200, r
            targets.append(r.json()["target"])
        assert targets == ["/pipe/1", "/pipe/2", "/pipe/3"]
        # and the connection is still usable
        c.request("GET", "/pipe/4")
        assert c.read_response().json()["target"] == "/pipe/4"
    assert upstream.find("/pipe/2").body_len == 3000


def test_many_concurrent_tls_clients(tls_proxy, upstream, pki):
    errors = []

    def worker(i):
        try:
            with TLSConn(tls_proxy.port, client_ctx(pki), timeout=10) as c:
                for j in range(5):
                    c.request("POST", f"/conc/{i}/{j}", body=os.urandom(1000 + i))
                    r = c.read_response(timeout=10)
                    if r.status != 200 or r.json()["body_len"] != 1000 + i:
                        errors.append((i, j, r))
        except Exception as e:  # noqa: BLE001
            errors.append((i, repr(e)))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errors, errors[:5]
    assert len([r for r in upstream.complete if r.target.startswith("/conc/")]) == 100


def test_request_head_spanning_several_tls_records(tls_proxy, upstream, pki):
    big = "v" * 40000  # a 16 KiB TLS record holds at most 16384 bytes: this head spans three
    with TLSConn(tls_proxy.port, client_ctx(pki)) as c:
        c.request("GET", "/big-head", headers=[("X-Big", big)])
        r = c.read_response()
        assert r.status == 200, r
        c.request("GET", "/too-big-head", headers=[("X-Big", "w" * 70000)])  # over max_header_bytes (64 KiB)
        r = c.read_response()
        assert r.status == 431, r
    assert upstream.find("/big-head").header("x-big") == big
    assert not any(x.target == "/too-big-head" for x in upstream.records)


def _read_until(proc, needle: bytes, count: int, seen: bytearray, timeout=10.0) -> None:
    """Reads proc's stdout into `seen` until `needle` occurs `count` times."""
    deadline = time.monotonic() + timeout
    while seen.count(needle) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"waited for {count} x {needle!r}; got: {bytes(seen)[-600:]!r}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"s_client ended early: {bytes(seen)[-600:]!r}"
            seen += chunk


def test_tls13_key_updates_from_openssl_s_client(tls_proxy, upstream, pki):
    """After its handshake a TLS 1.3 connection's records are protected by Outrider itself, not
    by OpenSSL: a client's KeyUpdate, with update_requested (the proxy must answer with its
    own) and without, and requests after each on the same connection."""
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{tls_proxy.port}", "-tls1_3",
                             "-servername", "localhost", "-CAfile", pki.ca, "-verify_return_error"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = bytearray()
    try:
        for index, command in enumerate([None, b"K\n", b"k\n", b"K\n"], start=1):
            if command:
                proc.stdin.write(command)
                proc.stdin.flush()
                _read_until(proc, b"KEYUPDATE", index - 1, seen)
                time.sleep(0.2)
            proc.stdin.write(f"GET /key-update/{index} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            proc.stdin.flush()
            _read_until(proc, b"HTTP/1.1 200", index, seen)
    finally:
        proc.stdin.close()
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
    assert b"Verify return code: 0 (ok)" in seen, bytes(seen)[:2000]
    assert [r.target for r in upstream.records if r.target.startswith("/key-update/")] == \
        [f"/key-update/{i}" for i in range(1, 5)]


def test_connection_close_ends_with_close_notify(tls_proxy, pki):
    """`Connection: close`: after the response the proxy ends TLS with close_notify, so the
    client can tell a complete close from a truncation."""
    raw = socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=5)
    tls = client_ctx(pki).wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    try:
        tls.sendall(b"GET /bye HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            try:
                chunk = tls.recv(65536)
            except ssl.SSLEOFError as e:
                raise AssertionError(f"TCP closed without close_notify after {data[:60]!r}: {e}")
            if not chunk:
                break
            data += chunk
    finally:
        tls.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert b"\r\nconnection: close\r\n" in data.lower(), data[:400]


def test_http10_client_over_tls(tls_proxy, upstream, pki):
    with TLSConn(tls_proxy.port, client_ctx(pki)) as c:
        c.send(b"GET /ten HTTP/1.0\r\nHost: a\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
        closed, extra = c.wait_closed(3)
        assert closed and extra == b"", "an HTTP/1.0 request without keep-alive must end the connection"
    assert upstream.find("/ten").version == "HTTP/1.1"


def test_expect_100_continue_and_chunked_trailers_over_tls(tls_proxy, upstream, pki):
    with TLSConn(tls_proxy.port, client_ctx(pki)) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        head = c.read_head()
        assert head.status == 100, head
        c.send(b"hello")
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello", r
        c.request("GET", "/chunked", headers=[("TE", "trailers")])
        r = c.read_response()
        assert r.status == 200 and r.chunked, r
        assert {k.lower() for k, _ in r.trailers} >= {"x-checksum"}, r.trailers


def test_20mib_upload_over_tls(tls_proxy, upstream, pki):
    n = 20 * 1024 * 1024
    block = os.urandom(1024 * 1024)
    h = hashlib.sha256()
    with TLSConn(tls_proxy.port, client_ctx(pki), timeout=30) as c:
        c.send(f"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\n\r\n".encode())
        for _ in range(20):
            c.send(block)
            h.update(block)
        r = c.read_response(timeout=30)
    assert r.status == 200, r
    assert r.json() == {"bytes": n, "sha256": h.hexdigest()}


def _dribbled_exchange(port, ctx, request: bytes, delay=0.0005, timeout=15.0) -> bytes:
    """A TLS client that sends every byte of its flights (ClientHello, Finished, the request
    records) in its own TCP segment; returns the plaintext received until the server closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")

    def flush():
        data = out.read()
        for i in range(len(data)):
            sock.sendall(data[i:i + 1])
            time.sleep(delay)

    def pump() -> bool:
        d = sock.recv(65536)
        if not d:
            inc.write_eof()
            return False
        inc.write(d)
        return True

    try:
        while True:
            try:
                obj.do_handshake()
                flush()
                break
            except ssl.SSLWantReadError:
                flush()
                if not pump():
                    raise ConnectionError("closed during the handshake")
        obj.write(request)
        flush()
        got = b""
        while True:
            try:
                piece = obj.read(65536)
                if not piece:  # close_notify
                    return got
                got += piece
            except ssl.SSLWantReadError:
                if not pump():
                    return got
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return got
    finally:
        sock.close()


@pytest.mark.parametrize("max_v", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_client_sending_one_byte_per_segment(tls_proxy, upstream, pki, max_v):
    got = _dribbled_exchange(tls_proxy.port, client_ctx(pki, max_v=max_v),
                             b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world")
    assert got.startswith(b"HTTP/1.1 200"), got[:300]
    assert got.endswith(b"\r\n\r\nhello world"), got[-200:]


def test_websocket_over_tls_listener(proxy_factory, upstream, ws_echo, pki):
    from websockets.sync.client import connect

    p = proxy_factory(
        listener=tls_listener(pki),
        routes=[{"name": "ws", "match": {"path_prefix": "/ws"}, "cluster": "ws"},
                {"name": "default", "match": {"path_prefix": "/"}, "cluster": "app"}],
        clusters=[{"name": "app", "endpoints": [f"127.0.0.1:{upstream.port}"]},
                  {"name": "ws", "endpoints": [f"127.0.0.1:{ws_echo.port}"]}],
    )
    with connect(f"wss://127.0.0.1:{p.port}/ws/tls", ssl=client_ctx(pki), server_hostname="localhost",
                 open_timeout=5, close_timeout=2) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        big = os.urandom(300000)
        ws.send(big)
        assert ws.recv(timeout=5) == big
    assert ws_echo.handshakes[-1][0] == "/ws/tls"
    hs = {k.lower(): v for k, v in ws_echo.handshakes[-1][1]}
    assert hs.get("x-forwarded-proto") == "https", hs
    assert tls_get(p, pki, "/after-wss").status == 200


# ---------------------------------------------------------------------------------------------
# 3. SNI certificates


@pytest.fixture
def sni_proxy(proxy_factory, upstream, pki):
    return proxy_factory(upstream=upstream, listener=tls_listener(
        pki, sni_certificates=[{"certificate": pki.other.crt, "private_key": pki.other.key}]))


def _peer_cert(port, pki, server_hostname) -> x509.Certificate:
    ctx = client_ctx(pki, verify=False)
    with TLSConn(port, ctx, server_hostname=server_hostname) as c:
        der = c.sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def test_sni_selects_other_certificate(sni_proxy, upstream, pki):
    # verified: the client checks other.test against the chain and name
    with TLSConn(sni_proxy.port, client_ctx(pki), server_hostname="other.test") as c:
        pc = c.sock.getpeercert()
        assert ("DNS", "other.test") in pc["subjectAltName"], pc
        c.request("GET", "/sni-other", host="other.test")
        r = c.read_response()
        assert r.status == 200, r
    cert = _peer_cert(sni_proxy.port, pki, "other.test")
    assert _sans(cert, x509.DNSName) == ["other.test"]
    out = s_client(sni_proxy.port, "-servername", "other.test", "-CAfile", pki.ca, "-verify_hostname", "other.test")
    assert re.search(r"subject=.*CN\s*=\s*other\.test", out), out[-3000:]
    assert "Verify return code: 0 (ok)" in out, out[-3000:]


def test_sni_localhost_and_unknown_and_none_get_default(sni_proxy, pki):
    for name in ("localhost", "unknown.test", None):
        cert = _peer_cert(sni_proxy.port, pki, name)
        assert _sans(cert, x509.DNSName) == ["localhost"], (name, cert.subject)
    out = s_client(sni_proxy.port, "-servername", "localhost", "-CAfile", pki.ca)
    assert re.search(r"subject=.*CN\s*=\s*localhost", out), out[-3000:]
    out = s_client(sni_proxy.port, "-noservername", "-CAfile", pki.ca)
    assert re.search(r"subject=.*CN\s*=\s*localhost", out), out[-3000:]
    # verified by IP (SAN IP:127.0.0.1) without SNI
    with TLSConn(sni_proxy.port, client_ctx(pki), server_hostname="127.0.0.1") as c:
        c.request("GET", "/by-ip")
        assert c.read_response().status == 200


def test_sni_case_insensitive(sni_proxy, pki):
    cert = _peer_cert(sni_proxy.port, pki, "OTHER.Test")
    assert _sans(cert, x509.DNSName) == ["other.test"], cert.subject


def test_sni_curl_both_names(sni_proxy, upstream, pki):
    for host, cn in (("other.test", "other.test"), ("localhost", "localhost")):
        cp, headers, body = curl(sni_proxy.port, "/sni-curl", "--cacert", pki.ca, host=host)
        assert cp.returncode == 0, cp.stderr[-2000:]
        assert _status(headers) == 200
        assert re.search(rf"subject:.*CN\s*=\s*{re.escape(cn)}", cp.stderr), cp.stderr[-2000:]


def test_sni_wildcard_certificate(proxy_factory, upstream, pki):
    p = proxy_factory(upstream=upstream, listener=tls_listener(
        pki, sni_certificates=[{"certificate": pki.wild.crt, "private_key": pki.wild.key}]))
    assert _sans(_peer_cert(p.port, pki, "a.wild.test"), x509.DNSName) == ["*.wild.test"]
    with TLSConn(p.port, client_ctx(pki), server_hostname="api.wild.test") as c:
        c.request("GET", "/wild", host="api.wild.test")
        assert c.read_response().status == 200
    # a wildcard covers one label: neither the bare domain nor two labels
    for name in ("wild.test", "a.b.wild.test"):
        assert _sans(_peer_cert(p.port, pki, name), x509.DNSName) == ["localhost"], name


def test_sni_certificate_matched_by_cn_without_san(proxy_factory, upstream, pki):
    p = proxy_factory(upstream=upstream, listener=tls_listener(
        pki, sni_certificates=[{"certificate": pki.cn_only_server.crt, "private_key": pki.cn_only_server.key}]))
    assert _cn(_peer_cert(p.port, pki, "cnonly.test")) == "cnonly.test"
    assert _cn(_peer_cert(p.port, pki, "other.test")) == "localhost"


def test_sni_certificate_on_mtls_listener_still_requires_client_cert(proxy_factory, upstream, pki):
    """After SNI switched to another certificate, client certificates are still required and
    verified against client_ca, and the identity is logged."""
    p = proxy_factory(upstream=upstream, listener=tls_listener(
        pki, client_ca=pki.ca, sni_certificates=[{"certificate": pki.other.crt, "private_key": pki.other.key}]))
    for max_v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        def no_cert():
            with TLSConn(p.port, client_ctx(pki, max_v=max_v), server_hostname="other.test") as c:
                c.request("GET", "/sni-mtls-none", host="other.test")
                return c.read_response()

        _refused(no_cert)

        def foreign():
            with TLSConn(p.port, client_ctx(pki, cert=pki.client_foreign, max_v=max_v),
                         server_hostname="other.test") as c:
                c.request("GET", "/sni-mtls-foreign", host="other.test")
                return c.read_response()

        _refused(foreign)
        with TLSConn(p.port, client_ctx(pki, cert=pki.client, max_v=max_v), server_hostname="other.test") as c:
            assert ("DNS", "other.test") in c.sock.getpeercert()["subjectAltName"]
            c.request("GET", f"/sni-mtls-ok-{max_v.name}", host="other.test")
            assert c.read_response().status == 200
        e = p.wait_access_log(lambda e: e.get("path") == f"/sni-mtls-ok-{max_v.name}")
        assert e is not None and e.get("identity") == SPIFFE, e
    assert {r.target for r in upstream.complete} == {"/sni-mtls-ok-TLSv1_2", "/sni-mtls-ok-TLSv1_3"}


# ---------------------------------------------------------------------------------------------
# 4. mTLS


@pytest.fixture
def mtls_proxy(proxy_factory, upstream, pki):
    return proxy_factory(upstream=upstream, listener=tls_listener(pki, client_ca=pki.ca))


def _refused(fn):
    """fn() must not produce an HTTP response: a handshake failure, an alert on the first read,
    or the connection closed without an answer."""
    try:
        r = fn()
    except (ssl.SSLError, ConnectionError, ProtocolError, TimeoutError, OSError) as e:
        return e
    raise AssertionError(f"expected the TLS connection to be refused, got a response {r!r}")


@pytest.mark.parametrize("max_v", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_mtls_without_client_cert_refused_with_cert_ok(mtls_proxy, upstream, pki, max_v):
    err = _refused(lambda: tls_get(mtls_proxy, pki, "/no-cert", max_v=max_v))
    assert not isinstance(err, TimeoutError), f"the proxy neither answered nor closed: {err!r}"
    r = tls_get(mtls_proxy, pki, "/with-cert", cert=pki.client, max_v=max_v)
    assert r.status == 200, r
    assert [x.target for x in upstream.complete] == ["/with-cert"], "a client without a certificate got through"


def test_mtls_curl(mtls_proxy, upstream, pki):
    cp, headers, body = curl(mtls_proxy.port, "/curl-no-cert", "--cacert", pki.ca)
    assert cp.returncode in (35, 56), f"curl exit {cp.returncode}\n{cp.stderr[-2000:]}"
    assert _status(headers) is None, headers
    cp, headers, body = curl(mtls_proxy.port, "/curl-cert", "--cacert", pki.ca,
                             "--cert", pki.client.crt, "--key", pki.client.key)
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert _status(headers) == 200
    cp, headers, body = curl(mtls_proxy.port, "/curl-foreign", "--cacert", pki.ca,
                             "--cert", pki.client_foreign.crt, "--key", pki.client_foreign.key)
    assert cp.returncode in (35, 56), f"curl exit {cp.returncode}\n{cp.stderr[-2000:]}"
    assert [x.target for x in upstream.complete] == ["/curl-cert"]


def test_mtls_identity_in_access_log(mtls_proxy, upstream, pki):
    for max_v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        path = f"/who-{max_v.name}"
        r = tls_get(mtls_proxy, pki, path, cert=pki.client, max_v=max_v)
        assert r.status == 200, r
        e = mtls_proxy.wait_access_log(lambda e: e.get("path") == path)
        assert e is not None, f"no access log line for {path}: {mtls_proxy.stdout()[-2000:]}"
        assert e.get("identity") == SPIFFE, e


@pytest.mark.parametrize("which,identity", [("client_dns", "dns-client.test"), ("client_cn", "cn-only-client")])
def test_mtls_identity_falls_back_to_dns_san_then_cn(mtls_proxy, pki, which, identity):
    path = f"/who-{which}"
    r = tls_get(mtls_proxy, pki, path, cert=getattr(pki, which))
    assert r.status == 200, r
    e = mtls_proxy.wait_access_log(lambda e: e.get("path") == path)
    assert e is not None
    assert e.get("identity") == identity, e


def test_mtls_identity_per_connection_keepalive(mtls_proxy, pki):
    """Each keep-alive request is logged with its own connection's identity."""
    with TLSConn(mtls_proxy.port, client_ctx(pki, cert=pki.client)) as a, \
            TLSConn(mtls_proxy.port, client_ctx(pki, cert=pki.client_dns)) as b:
        for i in range(3):
            for c, tag in ((a, "a"), (b, "b")):
                c.request("GET", f"/ka-who/{tag}/{i}")
                assert c.read_response().status == 200
    for i in range(3):
        ea = mtls_proxy.wait_access_log(lambda e: e.get("path") == f"/ka-who/a/{i}")
        eb = mtls_proxy.wait_access_log(lambda e: e.get("path") == f"/ka-who/b/{i}")
        assert ea and ea.get("identity") == SPIFFE, ea
        assert eb and eb.get("identity") == "dns-client.test", eb


def test_identity_null_without_mtls(tls_proxy, pki):
    """On a TLS listener without client_ca, a client certificate is neither asked for nor logged."""
    r = tls_get(tls_proxy, pki, "/anon", cert=pki.client)
    assert r.status == 200
    e = tls_proxy.wait_access_log(lambda e: e.get("path") == "/anon")
    assert e is not None and e.get("identity") is None, e


@pytest.mark.parametrize("max_v", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_mtls_foreign_ca_refused(mtls_proxy, upstream, pki, max_v):
    err = _refused(lambda: tls_get(mtls_proxy, pki, "/foreign", cert=pki.client_foreign, max_v=max_v))
    assert not isinstance(err, TimeoutError), f"the proxy neither answered nor closed: {err!r}"
    assert not upstream.complete, "a client certificate from an unrelated CA got through"
    assert tls_get(mtls_proxy, pki, "/after-foreign", cert=pki.client).status == 200
    assert mtls_proxy.alive()


def test_mtls_server_cert_not_accepted_as_client_cert_from_other_ca(mtls_proxy, upstream, pki):
    """The upstream_foreign certificate (unrelated CA) is refused; a CA-signed server certificate
    (EKU serverAuth only) presented as a client certificate is refused too (purpose check)."""
    _refused(lambda: tls_get(mtls_proxy, pki, "/uf", cert=pki.upstream_foreign))
    _refused(lambda: tls_get(mtls_proxy, pki, "/server-as-client", cert=pki.upstream))
    assert not upstream.complete, [r.target for r in upstream.complete]


def _session_from(port, ctx, path, server_hostname="localhost", session=None):
    """One request on a new TLS connection; returns (status or exception, session, reused)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        tls = ctx.wrap_socket(raw, server_hostname=server_hostname, session=session)
    except (ssl.SSLError, OSError) as e:
        raw.close()
        return e, None, False
    c = TLSConn.__new__(TLSConn)
    c.sock, c.timeout, c.buf, c.eof, c.reset = tls, 5.0, b"", False, False
    try:
        c.request("GET", path)
        r = c.read_response()
        return r.status, tls.session, tls.session_reused
    except (ssl.SSLError, OSError, ProtocolError, TimeoutError) as e:
        return e, None, tls.session_reused
    finally:
        c.close()


@pytest.mark.parametrize("max_v", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_mtls_session_resumption_keeps_identity(mtls_proxy, pki, max_v):
    ctx = client_ctx(pki, cert=pki.client, max_v=max_v)
    status, sess, reused = _session_from(mtls_proxy.port, ctx, "/resume-0")
    assert status == 200 and not reused
    resumed = 0
    for i in range(1, 5):
        status, sess2, reused = _session_from(mtls_proxy.port, ctx, f"/resume-{i}", session=sess)
        assert status == 200, status
        resumed += reused
        sess = sess2 or sess
        e = mtls_proxy.wait_access_log(lambda e: e.get("path") == f"/resume-{i}")
        assert e is not None and e.get("identity") == SPIFFE, f"resumed={reused}: {e}"
    assert resumed >= 1, "no session was resumed (tickets)"


@pytest.mark.parametrize("max_v", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_session_from_plain_tls_listener_does_not_skip_client_auth(proxy_factory, upstream, pki, max_v):
    """Two listeners with the same certificate, one without and one with client_ca: a session
    made on the first (no client certificate) must not resume on the mTLS one."""
    mport = free_port()
    mtls_listener = tls_listener(pki, client_ca=pki.ca)
    mtls_listener.update(name="inbound-mtls", address=f"127.0.0.1:{mport}", direction="inbound",
                         protocols=["http1"], routes=[{"name": "m", "match": {"path_prefix": "/"}, "cluster": "app"}])
    p = proxy_factory(upstream=upstream, listener=tls_listener(pki), extra_listeners=[mtls_listener])
    ctx = client_ctx(pki, max_v=max_v)
    status, sess, _ = _session_from(p.port, ctx, "/plain-session")
    assert status == 200 and sess is not None
    # the same session still resumes where it was made
    status, _, reused = _session_from(p.port, ctx, "/plain-resume", session=sess)
    assert status == 200
    status, _, reused = _session_from(mport, ctx, "/mtls-with-plain-session", session=sess)
    assert status != 200, f"a session without a client certificate got through the mTLS listener (resumed={reused})"
    assert not any(r.target == "/mtls-with-plain-session" for r in upstream.complete)


# ---------------------------------------------------------------------------------------------
# 5. x-forwarded-proto


def test_x_forwarded_proto_https_over_tls_http_over_cleartext(proxy_factory, upstream, pki):
    tp = proxy_factory(upstream=upstream, listener=tls_listener(pki))
    cp = proxy_factory(upstream=upstream)
    r = tls_get(tp, pki, "/xfp-tls", headers=[("X-Forwarded-Proto", "http")])
    assert r.status == 200
    rec = upstream.find("/xfp-tls")
    assert rec.header_all("x-forwarded-proto") == ["https"], rec.headers
    assert rec.header_all("x-forwarded-for") == ["127.0.0.1"], rec.headers
    assert rec.header_all("x-forwarded-host") == ["localhost"], rec.headers
    with cp.conn() as c:
        c.request("GET", "/xfp-clear", headers=[("X-Forwarded-Proto", "https")])
        assert c.read_response().status == 200
    rec = upstream.find("/xfp-clear")
    assert rec.header_all("x-forwarded-proto") == ["http"], rec.headers
    e = tp.wait_access_log(lambda e: e.get("path") == "/xfp-tls")
    assert e is not None


# ---------------------------------------------------------------------------------------------
# 6. Origination


def tls_cluster(endpoints, **tls) -> dict:
    return {"name": "app", "endpoints": [e if isinstance(e, str) else e.address for e in endpoints],
            "connect_timeout": "1s", "tls": tls}


def _plain_get(p, target, headers=(), body=None, method="GET", timeout=10.0):
    with p.conn(timeout) as c:
        c.request(method, target, headers=list(headers), body=body)
        return c.read_response(method, timeout=timeout)


def _wait_stderr(p, text, timeout=3.0) -> bool:
    deadline = time.monotonic() + timeout
    while text not in p.stderr():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _assert_upstream_connect(r):
    assert r.status == 502, r
    assert r.header("x-outrider-error") == "upstream_connect", r
    assert (r.header("content-type") or "").startswith("text/plain"), r


def test_origination_sni_and_ca(proxy_factory, tls_upstream, pki):
    u = tls_upstream(pki.upstream)
    p = proxy_factory(clusters=[tls_cluster([u], sni="upstream.test", ca=pki.ca)])
    r = _plain_get(p, "/orig?q=1", headers=[("X-Custom", "abc")])
    assert r.status == 200, r
    echo = r.json()
    assert echo["sni"] == "upstream.test"
    assert echo["target"] == "/orig?q=1"
    assert ["X-Custom", "abc"] in echo["headers"] or ["x-custom", "abc"] in echo["headers"], echo["headers"]
    rec = u.records[-1]
    assert rec.sni == "upstream.test"
    assert rec.tls_version in ("TLSv1.2", "TLSv1.3")
    assert rec.alpn == "http/1.1", f"the proxy should offer ALPN http/1.1 upstream, got {rec.alpn!r}"
    assert rec.header("host") == "test.local", rec.headers
    assert u.sni_seen and set(u.sni_seen) == {"upstream.test"}, u.sni_seen


def test_origination_post_1mib_and_big_response(proxy_factory, tls_upstream, pki):
    u = tls_upstream(pki.upstream)
    p = proxy_factory(clusters=[tls_cluster([u], sni="upstream.test", ca=pki.ca)])
    payload = os.urandom(1024 * 1024 + 7)
    r = _plain_get(p, "/echo", method="POST", body=payload, headers=[("Content-Type", "application/x-test")])
    assert r.status == 200, r
    assert r.body == payload
    n = 6 * 1024 * 1024 + 3
    r = _plain_get(p, f"/big/{n}", timeout=20)
    assert r.status == 200
    assert r.body == _pattern(n)
    # chunked request body re-framed and carried over TLS
    with p.conn() as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200 and r.body == b"hello world", r


def test_origination_tls_from_tls_listener(proxy_factory, tls_upstream, pki):
    """TLS on both sides: https client → proxy → https upstream."""
    u = tls_upstream(pki.upstream)
    p = proxy_factory(clusters=[tls_cluster([u], sni="upstream.test", ca=pki.ca)], listener=tls_listener(pki))
    r = tls_get(p, pki, "/both", body=b"x" * 70000, method="POST")
    assert r.status == 200, r
    assert r.json()["body_len"] == 70000
    assert u.records[-1].header("x-forwarded-proto") == "https"


@pytest.mark.parametrize("max_v", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_slow_reader_big_download_tls_both_sides(proxy_factory, tls_upstream, pki, max_v):
    """8 MiB from a TLS upstream to a TLS client that reads slowly: back-pressure on both TLS
    connections, nothing lost, nothing stalls."""
    u = tls_upstream(pki.upstream)
    p = proxy_factory(clusters=[tls_cluster([u], sni="upstream.test", ca=pki.ca)], listener=tls_listener(pki))
    n = 8 * 1024 * 1024 + 17
    raw = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    tls = client_ctx(pki, max_v=max_v).wrap_socket(raw, server_hostname="localhost")
    try:
        tls.sendall(f"GET /big/{n} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        data = bytearray()
        t0 = time.monotonic()
        while True:
            if b"\r\n\r\n" in data and len(data) - data.index(b"\r\n\r\n") - 4 >= n:
                break
            chunk = tls.recv(32768)
            assert chunk, f"closed after {len(data)} bytes"
            data += chunk
            if len(data) < 4 * 1024 * 1024:
                time.sleep(0.0005)  # slow for the first half: the proxy's buffers fill up
            assert time.monotonic() - t0 < 30, f"stalled at {len(data)} bytes"
    except socket.timeout:
        raise AssertionError(f"the download stalled at {len(data)} of {n} body bytes")
    finally:
        tls.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert body == _pattern(n), "body differs"


def test_origination_wrong_sni_name_is_upstream_connect(proxy_factory, tls_upstream, pki):
    u = tls_upstream(pki.upstream)
    p = proxy_factory(clusters=[tls_cluster([u], sni="wrong.test", ca=pki.ca)])
    r = _plain_get(p, "/wrong-name")
    _assert_upstream_connect(r)
    assert not u.records, "a request was sent over a connection whose certificate did not match"
    assert "wrong.test" in u.sni_seen, u.sni_seen
    e = p.wait_access_log(lambda e: e.get("path") == "/wrong-name")
    assert e is not None and e["status"] == 502
    assert e["attempts"] == 2, f"a refused handshake is a connect failure, retried once by default: {e}"
    assert _wait_stderr(p, "upstream tls handshake failed"), p.stderr()[-3000:]
    err = p.stderr()
    line = next(ln for ln in err.splitlines() if "upstream tls handshake failed" in ln)
    assert u.address in line or str(u.port) in line, f"the log line should name the endpoint: {line}"
    assert re.search(r"verif|hostname|mismatch|certificate", line, re.I), f"the log line should give the reason: {line}"


def test_origination_untrusted_ca_is_upstream_connect(proxy_factory, tls_upstream, pki):
    u = tls_upstream(pki.upstream)
    p = proxy_factory(clusters=[tls_cluster([u], sni="upstream.test", ca=pki.ca2)])
    r = _plain_get(p, "/untrusted")
    _assert_upstream_connect(r)
    assert not u.records
    assert _wait_stderr(p, "upstream tls handshake failed"), p.stderr()[-2000:]


def test_origination_foreign_signed_upstream_is_upstream_connect(proxy_factory, tls_upstream, pki):
    """The upstream presents the right name signed by an unrelated CA."""
    u = tls_upstream(pki.upstream_foreign)
    p = proxy_factory(clusters=[tls_cluster([u], sni="upstream.test", ca=pki.ca)])
    _assert_upstream_connect(_plain_get(p, "/foreign-up"))
    assert not u.records


def test_origination_system_cas_do_not_trust_test_ca(proxy_factory, tls_upstream, pki):
    """tls: { sni } without ca = the system bundle, which does not know the test CA."""
    u = tls_upstream(pki.upstream)
    p = proxy_factory(clusters=[tls_cluster([u], sni="upstream.test")])
    _assert_upstream_connect(_plain_get(p, "/system-cas"))
    assert not u.records


def test_origination_verify_false_accepts_anything(proxy_factory, tls_upstream, pki):
    u1 = tls_upstream(pki.upstream_foreign, "foreign")
    p = proxy_factory(clusters=[tls_cluster([u1], sni="wrong.test", verify=False)])
    r = _plain_get(p, "/noverify")
    assert r.status == 200, r
    assert r.json()["sni"] == "wrong.test"


def test_origination_default_sni_is_endpoint_host_ip_verified(proxy_factory, tls_upstream, pki):
    """No sni: the endpoint host (127.0.0.1) is the name; an IP literal is not sent as SNI but
    verified against the IP SANs."""
    u = tls_upstream(pki.upstream_ip)
    p = proxy_factory(clusters=[tls_cluster([u], ca=pki.ca)])
    r = _plain_get(p, "/ip-name")
    assert r.status == 200, r
    assert r.json()["sni"] is None, r.json()
    # a certificate without the IP SAN is refused
    u2 = tls_upstream(pki.upstream, "named-only")
    p2 = proxy_factory(clusters=[tls_cluster([u2], ca=pki.ca)])
    _assert_upstream_connect(_plain_get(p2, "/ip-name-missing"))


def test_origination_retried_on_other_endpoint_after_bad_certificate(proxy_factory, tls_upstream, pki):
    bad = tls_upstream(pki.elsewhere, "bad")
    good = tls_upstream(pki.upstream, "good")
    p = proxy_factory(clusters=[tls_cluster([bad, good], sni="upstream.test", ca=pki.ca)])
    statuses = []
    for i in range(10):
        r = _plain_get(p, f"/two/{i}")
        statuses.append((r.status, r.header("x-outrider-error")))
        if r.status == 200:
            assert r.json()["upstream"] == "good"
    assert statuses == [(200, None)] * 10, statuses
    assert not bad.records
    assert bad.accepted >= 1, "round robin never tried the bad endpoint"
    retried = [e for e in p.access_log() if e.get("path", "").startswith("/two/") and e.get("attempts", 1) >= 2]
    assert retried, "no request was retried: the bad endpoint was never picked first"


def test_origination_pool_reuse(proxy_factory, tls_upstream, pki):
    u = tls_upstream(pki.upstream)
    p = proxy_factory(clusters=[tls_cluster([u], sni="upstream.test", ca=pki.ca)])
    for i in range(10):
        r = _plain_get(p, f"/pool/{i}")
        assert r.status == 200, r
    assert len(u.records) == 10
    assert u.accepted < 10, f"the TLS upstream accepted {u.accepted} connections for 10 sequential requests"
    assert max(r.seq for r in u.records) >= 2, "no upstream TLS connection carried two requests"
    # and on one client keep-alive connection: one upstream connection
    before = u.accepted
    with p.conn() as c:
        for i in range(10):
            c.request("GET", f"/pool-ka/{i}")
            assert c.read_response().status == 200
    assert u.accepted - before <= 1, f"{u.accepted - before} new upstream connections for one keep-alive client"


def test_origination_reconnect_after_upstream_closes_pooled_tls(proxy_factory, tls_upstream, pki):
    """The upstream closes its pooled connection (close_notify/FIN): the next request opens a new
    TLS connection and succeeds."""
    u = tls_upstream(pki.upstream)
    p = proxy_factory(clusters=[tls_cluster([u], sni="upstream.test", ca=pki.ca)])
    assert _plain_get(p, "/first").status == 200
    assert _plain_get(p, "/bye", headers=[("Connection", "close")]).status == 200  # hop-by-hop: not forwarded
    # close every server-side connection, as an upstream's idle timeout would
    with u.lock:
        socks = list(u._socks)
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    time.sleep(0.3)
    for i in range(3):
        r = _plain_get(p, f"/after-close/{i}")
        assert r.status == 200, r


def test_origination_mtls_client_certificate(proxy_factory, tls_upstream, pki):
    u = tls_upstream(pki.upstream, client_ca=pki.ca)
    p = proxy_factory(clusters=[tls_cluster([u], sni="upstream.test", ca=pki.ca,
                                            certificate=pki.client.crt, private_key=pki.client.key)])
    r = _plain_get(p, "/up-mtls")
    assert r.status == 200, r
    peer = r.json()["peer"]
    assert peer and ["URI", SPIFFE] in peer["san"], peer


@pytest.mark.parametrize("tls13", [True, False])
def test_origination_mtls_without_client_certificate_is_502(proxy_factory, tls_upstream, pki, tls13):
    u = tls_upstream(pki.upstream, client_ca=pki.ca)
    if not tls13:
        u.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    p = proxy_factory(clusters=[tls_cluster([u], sni="upstream.test", ca=pki.ca)])
    r = _plain_get(p, "/up-mtls-missing")
    assert r.status == 502, r
    # TLS 1.2: the server refuses inside the handshake (a connect failure). TLS 1.3: the client's
    # handshake is complete before the server checks, so the refusal may arrive as an alert on
    # the first read after the request was sent.
    allowed = {"upstream_connect"} if not tls13 else {"upstream_connect", "upstream_reset"}
    assert r.header("x-outrider-error") in allowed, r
    assert not u.records
    assert u.handshake_errors, "the upstream should have refused a handshake without a client certificate"


def test_origination_mtls_wrong_client_certificate_is_502(proxy_factory, tls_upstream, pki):
    u = tls_upstream(pki.upstream, client_ca=pki.ca)
    p = proxy_factory(clusters=[tls_cluster([u], sni="upstream.test", ca=pki.ca,
                                            certificate=pki.client_foreign.crt,
                                            private_key=pki.client_foreign.key)])
    r = _plain_get(p, "/up-mtls-foreign")
    assert r.status == 502, r
    assert r.header("x-outrider-error") in ("upstream_connect", "upstream_reset"), r
    assert not u.records


class _RawServer:
    """A TCP server on 127.0.0.1 running `handler(sock)` per connection in a thread."""

    def __init__(self, handler):
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self.accepted = []
        self.received = []
        self.handler = handler
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_event.is_set():
            try:
                s, _ = self.srv.accept()
            except OSError:
                continue
            self.accepted.append(s)
            threading.Thread(target=self.handler, args=(self, s), daemon=True).start()

    def close(self):
        self.stop_event.set()
        self.thread.join(2)
        self.srv.close()
        for s in self.accepted:
            try:
                s.close()
            except OSError:
                pass


def test_origination_to_plaintext_upstream_is_upstream_connect(proxy_factory, pki):
    """A cleartext HTTP server behind a tls cluster answers the ClientHello with a plain 400
    and closes (as nginx does): the handshake fails, which is a connect failure."""
    def plain_http(server, s):
        try:
            s.settimeout(3)
            server.received.append(s.recv(65536))
            s.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        except OSError:
            pass
        finally:
            s.close()

    srv = _RawServer(plain_http)
    try:
        p = proxy_factory(clusters=[{"name": "app", "endpoints": [f"127.0.0.1:{srv.port}"],
                                     "connect_timeout": "1s", "tls": {"sni": "upstream.test", "ca": pki.ca}}])
        t0 = time.monotonic()
        r = _plain_get(p, "/to-plain")
        elapsed = time.monotonic() - t0
        _assert_upstream_connect(r)
        assert elapsed < 3, elapsed
        assert srv.received and srv.received[0][:1] == b"\x16", "the proxy did not start with a ClientHello"
        assert all(b"/to-plain" not in x for x in srv.received), "the request was sent in clear"
        assert _wait_stderr(p, "upstream tls handshake failed"), p.stderr()[-2000:]
    finally:
        srv.close()


def test_origination_handshake_bounded_by_connect_timeout(proxy_factory, pki):
    """A TCP server that accepts but never answers the ClientHello: the TLS handshake is part of
    connecting, so connect_timeout bounds it and the client gets 502 upstream_connect (after the
    default retry), not the route's 504 many seconds later."""
    def silent(server, s):
        try:
            s.settimeout(15)
            while s.recv(65536):
                pass
        except OSError:
            pass

    srv = _RawServer(silent)
    try:
        p = proxy_factory(clusters=[{"name": "app", "endpoints": [f"127.0.0.1:{srv.port}"], "connect_timeout": "500ms",
                                     "tls": {"sni": "upstream.test", "ca": pki.ca}}],
                          routes=[{"name": "r", "match": {"path_prefix": "/"}, "cluster": "app", "timeout": "8s"}])
        t0 = time.monotonic()
        r = _plain_get(p, "/silent-tls", timeout=15)
        elapsed = time.monotonic() - t0
        assert srv.accepted, "the proxy never connected"
        assert r.status == 502 and r.header("x-outrider-error") == "upstream_connect", \
            f"after {elapsed:.1f}s: {r!r} (connect_timeout 500ms, route timeout 8s)"
        assert elapsed < 3, f"answered after {elapsed:.1f}s: the TLS handshake is not bounded by connect_timeout"
    finally:
        srv.close()


# ---------------------------------------------------------------------------------------------
# 7. Slow and silent TLS clients


@pytest.fixture
def slow_proxy(proxy_factory, upstream, pki):
    lst = tls_listener(pki)
    lst["timeouts"] = {"header_read": "1s", "idle": "30s"}
    return proxy_factory(upstream=upstream, listener=lst)


def _closed_within(c: Conn, t0: float, limit: float):
    closed, extra = c.wait_closed(limit + 2)
    elapsed = time.monotonic() - t0
    return closed, extra, elapsed


def test_silent_tcp_client_closed_after_header_read(slow_proxy, pki):
    c = Conn(slow_proxy.port)
    t0 = time.monotonic()
    try:
        # meanwhile another client is served
        r = tls_get(slow_proxy, pki, "/meanwhile-silent")
        assert r.status == 200
        closed, extra, elapsed = _closed_within(c, t0, 2.0)
    finally:
        c.close()
    assert closed, "a TLS connection that never sent a byte was kept open past header_read (1s)"
    assert 0.8 <= elapsed <= 2.5, f"closed after {elapsed:.2f}s with header_read 1s"
    assert not extra.startswith(b"HTTP/"), f"plaintext HTTP on a TLS port: {extra[:100]!r}"


def test_half_client_hello_closed_after_header_read(slow_proxy, pki):
    hello = client_hello_bytes()
    c = Conn(slow_proxy.port)
    t0 = time.monotonic()
    try:
        c.send(hello[: len(hello) // 2])
        r = tls_get(slow_proxy, pki, "/meanwhile-half")
        assert r.status == 200
        closed, extra, elapsed = _closed_within(c, t0, 2.0)
    finally:
        c.close()
    assert closed, "a TLS connection stuck inside its ClientHello was kept open past header_read (1s)"
    assert 0.8 <= elapsed <= 2.5, f"closed after {elapsed:.2f}s with header_read 1s"
    assert not extra.startswith(b"HTTP/"), extra[:100]


def test_tls_record_header_only_closed_after_header_read(slow_proxy, pki):
    """Five bytes: a handshake record header announcing a body that never comes."""
    c = Conn(slow_proxy.port)
    t0 = time.monotonic()
    try:
        c.send(b"\x16\x03\x01\x02\x00")
        closed, extra, elapsed = _closed_within(c, t0, 2.0)
    finally:
        c.close()
    assert closed and 0.8 <= elapsed <= 2.5, (closed, elapsed)


def test_handshake_done_but_no_request_closed_after_header_read(slow_proxy, pki):
    with TLSConn(slow_proxy.port, client_ctx(pki)) as c:
        t0 = time.monotonic()
        closed, extra, elapsed = _closed_within(c, t0, 2.0)
    assert closed, "a TLS connection that sent no request was kept open past header_read (1s)"
    assert 0.7 <= elapsed <= 2.5, f"closed after {elapsed:.2f}s"
    assert extra == b"" or extra.startswith(b"HTTP/1.1 408"), extra[:200]


def test_partial_head_over_tls_gets_408(slow_proxy, upstream, pki):
    with TLSConn(slow_proxy.port, client_ctx(pki)) as c:
        t0 = time.monotonic()
        c.send(b"GET /partial HTTP/1.1\r\nHost: a\r\nX-Half: ")
        r = c.read_response(timeout=4)
        elapsed = time.monotonic() - t0
        assert r.status == 408, r
        assert r.header("x-outrider-error") == "header_timeout", r
        assert 0.8 <= elapsed <= 3.0, elapsed
        closed, extra = c.wait_closed(2)
        assert closed and extra == b""
    assert upstream.bytes_received == 0


def test_many_slow_tls_clients_do_not_block_others(slow_proxy, pki):
    hello = client_hello_bytes()
    slow = []
    try:
        for i in range(30):
            c = Conn(slow_proxy.port)
            if i % 3 == 1:
                c.send(hello[:40])
            elif i % 3 == 2:
                c.send(hello[:-1])
            slow.append(c)
        t0 = time.monotonic()
        for i in range(5):
            assert tls_get(slow_proxy, pki, f"/others/{i}").status == 200
        assert time.monotonic() - t0 < 2.0, "serving 5 requests took longer than header_read"
        deadline = time.monotonic() + 4
        for c in slow:
            closed, _ = c.wait_closed(max(0.1, deadline - time.monotonic()))
            assert closed, "a slow TLS client outlived header_read by 3 s"
    finally:
        for c in slow:
            c.close()


# ---------------------------------------------------------------------------------------------
# 8. Garbage on the TLS port


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\x16\x03\x01\x00\x05hello-not-a-hello-at-all" + bytes(range(256)),
    bytes(range(256)) * 8,
    b"\x80\x2e\x01\x03\x01" + b"\x00" * 60,  # an SSLv2-style ClientHello
])
def test_garbage_on_tls_port_closed_then_tls_works(tls_proxy, upstream, pki, garbage):
    with Conn(tls_proxy.port) as c:
        try:
            c.send(garbage)
        except OSError:
            pass
        closed, extra = c.wait_closed(3)
    assert closed, "the proxy kept a connection open after a non-TLS first flight"
    assert not extra.startswith(b"HTTP/"), f"the proxy answered plaintext HTTP on a TLS port: {extra[:200]!r}"
    assert tls_proxy.alive()
    r = tls_get(tls_proxy, pki, "/after-garbage")
    assert r.status == 200, r
    assert [x.target for x in upstream.complete] == ["/after-garbage"]


def test_garbage_after_handshake_closes_that_connection_only(tls_proxy, upstream, pki):
    """Bytes that are not a TLS record after a completed handshake (a corrupted record)."""
    ctx = client_ctx(pki)
    raw = socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    try:
        tls.sendall(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += tls.recv(65536)
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        # write a fake application_data record straight to the TCP socket, bypassing TLS
        os.write(tls.fileno(), b"\x17\x03\x03\x00\x20" + os.urandom(32))
        got = b""
        closed = False
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3:
            try:
                chunk = tls.recv(65536)
            except (ssl.SSLError, ConnectionError):
                closed = True
                break
            except socket.timeout:
                break
            if not chunk:
                closed = True
                break
            got += chunk
        assert closed, "a connection carrying a forged TLS record was kept open"
    finally:
        tls.close()
    assert tls_get(tls_proxy, pki, "/after-bad-record").status == 200
    assert tls_proxy.alive()


def test_random_garbage_and_churn_no_crash(tls_proxy, pki):
    import random

    rng = random.Random(1234)
    hello = client_hello_bytes()
    for i in range(60):
        c = Conn(tls_proxy.port, timeout=2)
        try:
            kind = i % 4
            if kind == 0:
                c.send(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 600))))
            elif kind == 1:
                cut = rng.randint(1, len(hello) - 1)
                c.send(hello[:cut])
            elif kind == 2:
                h = bytearray(hello)
                for _ in range(5):
                    h[rng.randrange(5, len(h))] = rng.getrandbits(8)
                c.send(bytes(h))
            else:
                pass  # connect and leave at once
        except OSError:
            pass
        finally:
            c.close()
    assert tls_proxy.alive()
    for i in range(3):
        assert tls_get(tls_proxy, pki, f"/after-churn/{i}").status == 200


def test_client_renegotiation_refused(tls_proxy, upstream, pki):
    """TLS 1.2 client-initiated renegotiation (s_client's `R` command) is refused; the proxy
    keeps serving."""
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{tls_proxy.port}", "-tls1_2",
                             "-servername", "localhost", "-CAfile", pki.ca],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        proc.stdin.write(b"GET /before-reneg HTTP/1.1\r\nHost: a\r\n\r\n")
        proc.stdin.flush()
        time.sleep(0.5)
        proc.stdin.write(b"R\n")
        proc.stdin.flush()
        time.sleep(0.5)
        try:
            proc.stdin.write(b"GET /after-reneg HTTP/1.1\r\nHost: a\r\n\r\n")
            proc.stdin.flush()
            time.sleep(0.5)
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        out = proc.communicate(timeout=10)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert "RENEGOTIATING" in out, out[-2000:]
    assert out.count("HTTP/1.1 200") == 1, out[-3000:]
    assert "no renegotiation" in out, out[-3000:]
    assert not any(r.target == "/after-reneg" for r in upstream.complete)
    assert tls_proxy.alive()
    assert tls_get(tls_proxy, pki, "/after-reneg-new-conn").status == 200
