"""Certificate rotation without a restart (issue #5): the proxy watches the files its listener's
`tls` names; new handshakes use a replaced certificate, and a broken replacement keeps the
previous one (logged). Certificates are made here with the openssl CLI."""
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples" / "tls"


def make_self_signed(directory: Path, name: str):
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    return cert, key


def served_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def der(cert_path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert_path.read_text())


def replace_atomically(source: Path, target: Path):
    """As a Kubernetes Secret volume or cert-manager does: write aside, rename into place."""
    aside = target.with_suffix(target.suffix + ".new")
    shutil.copyfile(source, aside)
    aside.rename(target)


def wait_for(predicate, timeout=8.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_replaced_certificate_is_served_and_a_broken_one_is_not(proxy_factory, upstream, tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copyfile(EXAMPLES / "server.crt", certs / "server.crt")
    shutil.copyfile(EXAMPLES / "server.key", certs / "server.key")
    p = proxy_factory(upstream=upstream, listener={"tls": {"certificate": str(certs / "server.crt"),
                                                           "private_key": str(certs / "server.key")}})
    original = der(EXAMPLES / "server.crt")
    assert served_certificate(p.port) == original

    # A broken file: the previous certificate stays, and the log says why.
    (certs / "server.crt").write_text("not a certificate\n")
    assert wait_for(lambda: "certificates not reloaded; keeping the previous ones" in p.stderr())
    assert served_certificate(p.port) == original

    # A new pair, renamed into place: new handshakes get it, without a restart.
    new_cert, new_key = make_self_signed(tmp_path, "rotated")
    replace_atomically(new_key, certs / "server.key")
    replace_atomically(new_cert, certs / "server.crt")
    assert wait_for(lambda: served_certificate(p.port) == der(new_cert))
    assert '"msg":"certificates reloaded"' in p.stderr()
    assert p.proc.poll() is None
