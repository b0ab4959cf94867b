"""A pod for real (SPEC §9, §10): two network namespaces joined by a veth, Outrider as the pod's
transparent sidecar running as an unprivileged uid behind the rules `outrider iptables --apply`
installs, a real app and a real "external service".

    client namespace orcli-ID  10.77.0.1/24  ──veth──  10.77.0.2/24  pod namespace orpod-ID
      external service 10.77.0.1:9090                  app 127.0.0.1:8080 (root)
      clients (curl, a load loop)                      outrider as uid 65534: inbound 0.0.0.0:15006 -> app,
                                                         outbound 127.0.0.1:15001 (original_destination),
                                                         admin 0.0.0.0:15000

Checked: a client calling the app's port is redirected through the inbound listener; the app's
own call to 10.77.0.1:9090 is redirected through the outbound listener to its original
destination; Outrider's own connections are not redirected again (no loop: one access-log line,
one app hit, one iptables REDIRECT per connection); SIGTERM under load drops no request, keeps
the outbound listener serving while inbound requests finish, and exits 0.

Needs root (skipped otherwise). `scripts/pod-sim.sh up|down|run-demo` builds the same pod by hand.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

NOBODY = 65534
POD_IP, CLI_IP = "10.77.0.2", "10.77.0.1"
APP_PORT, EXT_PORT = 8080, 9090
DRAIN_DELAY, DRAIN_TIMEOUT = 1.0, 10.0

# The pod's app (127.0.0.1 only: inbound traffic reaches it through the sidecar). /call-out makes
# the app's own outbound call to the external service (optionally after ?sleep=MS); /slow?ms=MS
# answers late. Each request is logged (path, peer, x-forwarded-for) as a JSON line.
APP_PY = textwrap.dedent("""\
    import http.client, json, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    PORT, EXT, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    lock = threading.Lock()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 65536  # head and body in one write (flushed after each request)

        def do_GET(self):
            u = urlsplit(self.path)
            q = parse_qs(u.query)
            out = {"app": "pod-app", "path": self.path, "headers": dict(self.headers.items())}
            if u.path == "/call-out":
                time.sleep(int(q.get("sleep", ["0"])[0]) / 1000)
                host, port = EXT.rsplit(":", 1)
                try:
                    c = http.client.HTTPConnection(host, int(port), timeout=5)
                    c.request("GET", "/ext" + ("?" + u.query if u.query else ""), headers={"x-from": "pod-app"})
                    r = c.getresponse()
                    data = r.read()
                    c.close()
                    out["ext_status"] = r.status
                    out["ext"] = json.loads(data) if r.status == 200 else data.decode(errors="replace")
                except Exception as e:
                    out["ext_status"] = 0
                    out["ext"] = repr(e)
            elif u.path == "/slow":
                time.sleep(int(q.get("ms", ["500"])[0]) / 1000)
            with lock, open(LOG, "a") as f:
                f.write(json.dumps({"path": self.path, "peer": self.client_address[0],
                                    "xff": self.headers.get("x-forwarded-for")}) + "\\n")
            body = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    class S(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    S(("127.0.0.1", PORT), H).serve_forever()
    """)

# The external service, outside the pod: answers with what it received, logs it.
EXT_PY = textwrap.dedent("""\
    import json, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    HOST, PORT, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    lock = threading.Lock()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 65536

        def do_GET(self):
            rec = {"ext": True, "path": self.path, "peer": self.client_address[0],
                   "headers": dict(self.headers.items())}
            with lock, open(LOG, "a") as f:
                f.write(json.dumps(rec) + "\\n")
            body = json.dumps(rec).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    class S(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    S((HOST, PORT), H).serve_forever()
    """)

# Client load loop (in the client namespace) until STOP exists: new connections for /hello and
# /call-out, one keep-alive connection, slow ones; when LATE exists, two requests that will still
# be in flight when the listeners close. One JSON line per request at the end.
LOAD_PY = textwrap.dedent("""\
    import http.client, json, os, sys, threading, time

    HOST, PORT, LATE, STOP, OUT = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    results, lock = [], threading.Lock()
    deadline = time.time() + 30

    def one(conn, kind, path):
        t0 = time.time()
        rec = {"kind": kind, "path": path, "t0": t0}
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            rec["status"] = r.status
            rec["connection"] = r.getheader("connection")
            ok = r.status == 200
            if ok:
                j = json.loads(body)
                ok = j.get("path") == path
                if path.startswith("/call-out"):
                    rec["ext_status"] = j.get("ext_status")
                    ok = ok and j.get("ext_status") == 200
                    if not ok:
                        rec["ext"] = j.get("ext")
            else:
                rec["body"] = body[:200].decode(errors="replace")
            rec["ok"] = ok
        except Exception as e:
            rec["ok"] = False
            rec["error"] = repr(e)
            conn.close()
        rec["t1"] = time.time()
        with lock:
            results.append(rec)

    def worker(kind, make_path, pause, keep_alive):
        n = 0
        conn = http.client.HTTPConnection(HOST, PORT, timeout=15) if keep_alive else None
        while not os.path.exists(STOP) and time.time() < deadline:
            n += 1
            c = conn or http.client.HTTPConnection(HOST, PORT, timeout=15)
            one(c, kind, make_path(n))
            if not keep_alive:
                c.close()
            time.sleep(pause)
        if conn:
            conn.close()

    def late():
        # when LATE appears (inside drain.delay): one slow request, and one whose outbound call
        # starts only after the inbound listener closed; both still in flight at that moment
        while not os.path.exists(LATE) and time.time() < deadline:
            time.sleep(0.002)
        ts = [threading.Thread(target=one, args=(http.client.HTTPConnection(HOST, PORT, timeout=15), k, p))
              for k, p in (("late-slow", "/slow?ms=1000&load=late-slow"),
                           ("late-call-out", "/call-out?sleep=1000&load=late-co"))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    kinds = [
        ("hello-new-conn", lambda n: f"/hello?load=new-{n}", 0.012, False),
        ("hello-keep-alive", lambda n: f"/hello?load=ka-{n}", 0.012, True),
        ("call-out-new-conn", lambda n: f"/call-out?load=co-{n}", 0.012, False),
        ("slow", lambda n: f"/slow?ms=300&load=slow-{n}", 0.0, False),
        ("slow-call-out", lambda n: f"/call-out?sleep=300&load=slowco-{n}", 0.0, False),
    ]
    threads = [threading.Thread(target=worker, args=k) for k in kinds] + [threading.Thread(target=late)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(OUT, "w") as f:
        for rec in sorted(results, key=lambda r: r["t0"]):
            f.write(json.dumps(rec) + "\\n")
    """)


def _env():
    # nothing here may go through an HTTP proxy of the host
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def _run(args, timeout=20, check=False):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=_env(),
                       stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} -> exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    text = text[: text.rfind("\n") + 1]  # a line still being written
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


class Pod:
    def __init__(self, ident: str, workdir: Path, bin_path: str):
        self.id = ident
        self.pod_ns, self.cli_ns = f"orpod-{ident}", f"orcli-{ident}"
        self.pod_if, self.cli_if = f"orp-{ident}", f"orc-{ident}"
        self.dir = workdir
        self.bin = bin_path
        self.procs: dict[str, subprocess.Popen] = {}
        self._files = []
        self.namespaces: list[str] = []
        self.access_log_path = workdir / "access.log"
        self.app_log_path = workdir / "app.log"
        self.ext_log_path = workdir / "ext.log"
        self.config_path = workdir / "outrider.yaml"

    # --- processes ---------------------------------------------------------------------------

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        out = open(self.dir / f"{name}.stdout", "wb")
        err = open(self.dir / f"{name}.stderr", "wb")
        self._files += [out, err]
        p = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=_env(), cwd=str(self.dir))
        self.procs[name] = p
        return p

    @property
    def outrider(self) -> subprocess.Popen:
        return self.procs["outrider"]

    def in_pod(self, *args, **kw):
        return _run(["ip", "netns", "exec", self.pod_ns, *map(str, args)], **kw)

    def in_cli(self, *args, **kw):
        return _run(["ip", "netns", "exec", self.cli_ns, *map(str, args)], **kw)

    def curl(self, path: str, host: str = POD_IP, port: int = APP_PORT, ns: str | None = None,
             max_time: float = 5.0):
        """GET from the client namespace (default): (curl exit, HTTP status, body)."""
        r = _run(["ip", "netns", "exec", ns or self.cli_ns, "curl", "-sS", "--noproxy", "*",
                  "-m", str(max_time), "-o", "-", "-w", "\n%{http_code}", f"http://{host}:{port}{path}"],
                 timeout=max_time + 5)
        body, _, code = r.stdout.rpartition("\n")
        return r.returncode, int(code or 0), body if r.returncode == 0 else r.stderr.strip()

    # --- observations --------------------------------------------------------------------------

    def access_log(self) -> list[dict]:
        return _jsonl(self.access_log_path)

    def app_log(self) -> list[dict]:
        return _jsonl(self.app_log_path)

    def ext_log(self) -> list[dict]:
        return _jsonl(self.ext_log_path)

    def wait_access(self, pred, timeout=3.0) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.access_log():
                if pred(e):
                    return e
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def nat_counters(self) -> dict[str, int]:
        """Packets that hit each REDIRECT rule (a nat rule sees the first packet of a connection)."""
        r = self.in_pod("iptables-save", "-c", "-t", "nat", check=True)
        out = {}
        for ln in r.stdout.splitlines():
            if " -j REDIRECT " in ln and ln.startswith("["):
                counters, rule = ln[1:].split("] ", 1)
                out[rule.split()[1]] = int(counters.split(":")[0])
        return out

    def report(self) -> str:
        def tail(name, n=3000):
            p = self.dir / name
            return p.read_text(errors="replace")[-n:] if p.exists() else "(none)"
        rc = {k: p.poll() for k, p in self.procs.items()}
        return (f"\n--- pod {self.pod_ns} / {self.cli_ns}, exits {rc}\n--- outrider stderr:\n{tail('outrider.stderr')}"
                f"\n--- access log (tail):\n{tail('access.log')}\n--- app stderr:\n{tail('app.stderr', 1000)}"
                f"\n--- ext stderr:\n{tail('ext.stderr', 1000)}")

    # --- teardown ------------------------------------------------------------------------------

    def cleanup(self):
        for p in self.procs.values():  # only what this fixture started, by its Popen (pid)
            if p.poll() is None:
                p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for f in self._files:
            f.close()
        for ns in reversed(self.namespaces):  # the pod's veth end goes with it, and its peer
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait_http(pod: Pod, ns: str, url_host: str, port: int, path: str, want=None, timeout=5.0, proc=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        last = pod.curl(path, host=url_host, port=port, ns=ns, max_time=1)
        if last[0] == 0 and (want is None or last[1] == want):
            return
        time.sleep(0.05)
    raise AssertionError(f"http://{url_host}:{port}{path} in {ns} not answering ({last}){pod.report()}")


def _config(pod: Pod) -> str:
    return textwrap.dedent(f"""\
        workers: 1
        log_level: info
        admin: {{ address: 0.0.0.0:15000 }}
        access_log: {{ format: json, path: {pod.access_log_path} }}
        drain: {{ delay: {DRAIN_DELAY:g}s, timeout: {DRAIN_TIMEOUT:g}s }}
        listeners:
          - name: inbound
            address: 0.0.0.0:15006
            direction: inbound
            protocols: [http1]
            routes:
              - name: app
                match: {{ path_prefix: / }}
                cluster: app
          - name: outbound
            address: 127.0.0.1:15001
            direction: outbound
            protocols: [http1]
            original_destination: true
            routes:
              - name: passthrough
                match: {{ path_prefix: / }}
                cluster: passthrough
        clusters:
          - name: app
            endpoints: [127.0.0.1:{APP_PORT}]
            connect_timeout: 1s
          - name: passthrough          # the original destination replaces this endpoint
            endpoints: [127.0.0.1:9]
            connect_timeout: 1s
        """)


@pytest.fixture(scope="module")
def pod(outrider_bin):
    if os.geteuid() != 0:
        pytest.skip("the pod simulation needs root (network namespaces, veth, iptables)")
    for tool in ("ip", "iptables-restore", "iptables-save", "setpriv", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"'{tool}' is not installed (scripts/install-deps.sh installs iproute2, iptables, curl)")
    existing = _run(["ip", "netns", "list"]).stdout
    ident = next(i for i in (secrets.token_hex(2) for _ in range(50))
                 if f"orpod-{i}" not in existing and f"orcli-{i}" not in existing)
    workdir = Path(tempfile.mkdtemp(prefix=f"outrider-pod-{ident}-"))
    workdir.chmod(0o755)
    p = Pod(ident, workdir, outrider_bin)
    try:
        for ns in (p.pod_ns, p.cli_ns):
            r = _run(["ip", "netns", "add", ns])
            if r.returncode != 0:
                pytest.skip(f"cannot create a network namespace (ip netns add: {r.stderr.strip()})")
            p.namespaces.append(ns)
        r = _run(["ip", "link", "add", p.pod_if, "type", "veth", "peer", "name", p.cli_if])
        if r.returncode != 0:
            pytest.skip(f"cannot create a veth pair (ip link add: {r.stderr.strip()})")
        _run(["ip", "link", "set", p.pod_if, "netns", p.pod_ns], check=True)
        _run(["ip", "link", "set", p.cli_if, "netns", p.cli_ns], check=True)
        _run(["ip", "-n", p.pod_ns, "addr", "add", f"{POD_IP}/24", "dev", p.pod_if], check=True)
        _run(["ip", "-n", p.cli_ns, "addr", "add", f"{CLI_IP}/24", "dev", p.cli_if], check=True)
        for ns, dev in ((p.pod_ns, p.pod_if), (p.cli_ns, p.cli_if)):
            _run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            _run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        probe = p.in_pod("iptables-save", "-t", "nat")
        if probe.returncode != 0 and "Table does not exist" not in probe.stderr:
            pytest.skip(f"iptables does not work in a namespace here: {probe.stderr.strip()}")

        # the binary and its config must be usable by the unprivileged uid
        bin_path = outrider_bin
        if _run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
                 bin_path, "version"]).returncode != 0:
            bin_path = str(workdir / "outrider")
            shutil.copy(outrider_bin, bin_path)
            os.chmod(bin_path, 0o755)
            _run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
                  bin_path, "version"], check=True)
        p.bin = bin_path
        (workdir / "app.py").write_text(APP_PY)
        (workdir / "ext.py").write_text(EXT_PY)
        (workdir / "load.py").write_text(LOAD_PY)
        p.config_path.write_text(_config(p))
        p.config_path.chmod(0o644)
        p.access_log_path.touch()
        os.chown(p.access_log_path, NOBODY, NOBODY)
        _run([bin_path, "validate", "--config", p.config_path], check=True)

        # the init container's job first, as in a pod
        r = p.in_pod(bin_path, "iptables", "--inbound-port", "15006", "--outbound-port", "15001",
                     "--uid", NOBODY, "--apply")
        assert r.returncode == 0, f"outrider iptables --apply failed in {p.pod_ns}: {r}"

        ext = p.start("ext", ["ip", "netns", "exec", p.cli_ns, sys.executable, str(workdir / "ext.py"),
                              CLI_IP, str(EXT_PORT), str(p.ext_log_path)])
        app = p.start("app", ["ip", "netns", "exec", p.pod_ns, sys.executable, str(workdir / "app.py"),
                              str(APP_PORT), f"{CLI_IP}:{EXT_PORT}", str(p.app_log_path)])
        # `ip netns exec` and setpriv both exec: the Popen pid is outrider's own
        out = p.start("outrider", ["ip", "netns", "exec", p.pod_ns, "setpriv", f"--reuid={NOBODY}",
                                   f"--regid={NOBODY}", "--clear-groups", "--", bin_path, "run",
                                   "--config", str(p.config_path)])
        _wait_http(p, p.cli_ns, CLI_IP, EXT_PORT, "/", proc=ext)
        _wait_http(p, p.pod_ns, "127.0.0.1", APP_PORT, "/", proc=app)
        # the admin port is not redirected: reachable from outside the pod
        _wait_http(p, p.cli_ns, POD_IP, 15000, "/ready", want=200, proc=out)
        assert os.path.realpath(f"/proc/{out.pid}/exe") == os.path.realpath(bin_path), p.report()
        uids = next(ln for ln in Path(f"/proc/{out.pid}/status").read_text().splitlines() if ln.startswith("Uid:"))
        assert uids.split()[1:] == [str(NOBODY)] * 4, f"outrider is not running as uid {NOBODY}: {uids}"
        p.app_log_path.write_text("")  # forget the start-up probes
        p.ext_log_path.write_text("")
        yield p
    finally:
        p.cleanup()


def _tag() -> str:
    return secrets.token_hex(4)


# --- traffic through the sidecar --------------------------------------------------------------


def test_inbound_to_app_port_goes_through_sidecar(pod):
    """A client calling 10.77.0.2:8080 (the app's port, where nothing listens on the pod IP)
    is redirected to the inbound listener, which forwards to the app on 127.0.0.1:8080."""
    path = f"/hello?t={_tag()}"
    rc, status, body = pod.curl(path)
    assert rc == 0 and status == 200, f"curl http://{POD_IP}:{APP_PORT}{path}: {rc} {status} {body}{pod.report()}"
    j = json.loads(body)
    assert j["app"] == "pod-app" and j["path"] == path, j
    h = {k.lower(): v for k, v in j["headers"].items()}
    assert h.get("x-forwarded-for") == CLI_IP, f"the request did not come through the sidecar: {h}"
    assert h.get("x-request-id"), h
    e = pod.wait_access(lambda e: e.get("path") == path)
    assert e is not None, f"no access-log line for {path}{pod.report()}"
    assert e["listener"] == "inbound" and e["status"] == 200, e
    assert e["upstream"] == f"127.0.0.1:{APP_PORT}", e
    assert e["client"].startswith(CLI_IP + ":"), e
    assert e["authority"] == f"{POD_IP}:{APP_PORT}", e
    hits = [h for h in pod.app_log() if h["path"] == path]
    assert len(hits) == 1 and hits[0]["peer"] == "127.0.0.1", hits


def test_outbound_call_goes_to_original_destination(pod):
    """The app's own call to 10.77.0.1:9090 is redirected to the outbound listener (127.0.0.1:15001),
    which forwards it to the original destination read with SO_ORIGINAL_DST, not to the
    cluster's dummy endpoint 127.0.0.1:9."""
    tag = _tag()
    rc, status, body = pod.curl(f"/call-out?t={tag}")
    assert rc == 0 and status == 200, f"{rc} {status} {body}{pod.report()}"
    j = json.loads(body)
    assert j.get("ext_status") == 200, f"the app's outbound call failed: {j.get('ext')}{pod.report()}"
    seen = j["ext"]
    assert seen["path"] == f"/ext?t={tag}", seen
    assert seen["peer"] == POD_IP, seen  # the proxy's connection leaves the pod from its IP
    h = {k.lower(): v for k, v in seen["headers"].items()}
    assert h.get("x-forwarded-for") == POD_IP, f"the app's call did not go through the sidecar: {h}"
    assert h.get("host") == f"{CLI_IP}:{EXT_PORT}", h
    assert h.get("x-from") == "pod-app", h
    assert h.get("x-forwarded-host") == f"{CLI_IP}:{EXT_PORT}", h
    assert h.get("x-request-id") and h.get("traceparent"), h
    out = pod.wait_access(lambda e: e.get("path") == f"/ext?t={tag}")
    assert out is not None, f"no access-log line for the outbound call{pod.report()}"
    assert out["listener"] == "outbound" and out["status"] == 200, out
    assert out["upstream"] == f"{CLI_IP}:{EXT_PORT}", out
    assert out["route"] == "passthrough" and out["authority"] == f"{CLI_IP}:{EXT_PORT}", out
    assert out["client"].startswith(POD_IP + ":"), out
    assert out["request_id"] == h["x-request-id"], (out, h)
    inb = pod.wait_access(lambda e: e.get("path") == f"/call-out?t={tag}")
    assert inb is not None and inb["listener"] == "inbound" and inb["status"] == 200, inb
    ext_hits = [r for r in pod.ext_log() if r["path"] == f"/ext?t={tag}"]
    assert len(ext_hits) == 1, ext_hits


def test_no_redirect_loop(pod):
    """Outrider's own connections (uid 65534) are not redirected: each request is seen once by
    the app, once by the external service, logged once per hop, and each client connection
    hits a REDIRECT rule exactly once."""
    a, b = f"/hello?t={_tag()}", f"/call-out?t={_tag()}"
    before_log = len(pod.access_log())
    before = pod.nat_counters()
    for path in (a, b):
        rc, status, body = pod.curl(path)
        assert rc == 0 and status == 200, f"{path}: {rc} {status} {body}{pod.report()}"
    ext_path = "/ext?" + b.split("?", 1)[1]
    assert pod.wait_access(lambda e: e.get("path") == b), pod.report()
    time.sleep(0.5)  # anything looping would keep adding lines
    new = pod.access_log()[before_log:]
    assert sorted((e["listener"], e["path"]) for e in new) == sorted(
        [("inbound", a), ("inbound", b), ("outbound", ext_path)]), new
    assert [h["path"] for h in pod.app_log()].count(a) == 1
    assert [h["path"] for h in pod.app_log()].count(b) == 1
    assert [r["path"] for r in pod.ext_log()].count(ext_path) == 1
    after = pod.nat_counters()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    # two client connections redirected inbound, one app connection redirected outbound;
    # the proxy's connections to 127.0.0.1:8080 and to 10.77.0.1:9090 hit no REDIRECT
    assert delta == {"OUTRIDER_IN_REDIRECT": 2, "OUTRIDER_REDIRECT": 1}, (delta, before, after)


# --- drain under load (kills the sidecar: keep last) ----------------------------------------


def test_drain_under_load(pod):
    """SIGTERM while clients in the client namespace call the app's port at ~150 req/s:
    /ready turns 503, new connections are still accepted for drain.delay, requests in flight
    when the listeners close (slow ones, and slow ones whose outbound call starts only then)
    finish, exit 0 within drain.timeout. The loop stops at SIGTERM + delay/2, so every request
    it made got a connection before the listeners closed: none may fail."""
    late, stop, results_path = pod.dir / "load.late", pod.dir / "load.stop", pod.dir / "load.jsonl"
    load = pod.start("load", ["ip", "netns", "exec", pod.cli_ns, sys.executable, str(pod.dir / "load.py"),
                              POD_IP, str(APP_PORT), str(late), str(stop), str(results_path)])
    time.sleep(2.0)
    assert load.poll() is None, f"load loop exited early: {(pod.dir / 'load.stderr').read_text()}"
    t_term = time.time()
    pod.outrider.send_signal(signal.SIGTERM)
    rc, status, ready_body = pod.curl("/ready", port=15000, max_time=1)
    t_ready = time.time() - t_term
    time.sleep(max(0.0, t_term + DRAIN_DELAY * 0.3 - time.time()))
    late.touch()
    time.sleep(max(0.0, t_term + DRAIN_DELAY / 2 - time.time()))
    stop.touch()
    try:
        exit_code = pod.outrider.wait(DRAIN_DELAY + DRAIN_TIMEOUT + 2)
    except subprocess.TimeoutExpired:
        exit_code = None
    t_exit = time.time() - t_term
    load.wait(20)
    results = _jsonl(results_path)

    # after exit nothing listens on 15006: a new connection to the app's port is refused
    after_rc, after_status, after_body = pod.curl("/after-exit", max_time=2)

    failures = [r for r in results if not r["ok"]]
    before_term = [r for r in results if r["t0"] < t_term]
    after_term = [r for r in results if r["t0"] >= t_term]
    in_flight_at_close = [r for r in results if r["t0"] < t_term + DRAIN_DELAY < r["t1"]]
    duration = max(r["t1"] for r in results) - min(r["t0"] for r in results) if results else 0
    summary = (f"{len(results)} requests in {duration:.2f}s ({len(results) / max(duration, 1e-9):.0f} req/s): "
               f"{len(before_term)} started before SIGTERM, {len(after_term)} after; "
               f"{len(in_flight_at_close)} in flight when the listeners closed; {len(failures)} failed; "
               f"/ready {status} after {t_ready * 1000:.0f} ms; exit {exit_code} after {t_exit:.2f}s; "
               f"request after exit: curl exit {after_rc} ({after_body})")
    print("\ndrain:", summary)

    assert exit_code == 0, f"outrider exit {exit_code} ({summary}){pod.report()}"
    assert DRAIN_DELAY <= t_exit <= DRAIN_DELAY + DRAIN_TIMEOUT, summary
    assert rc == 0 and status == 503, f"/ready during drain: {rc} {status} {ready_body}"
    assert len(before_term) >= 100 and len(after_term) >= 20, summary
    assert not failures, f"{summary}\nfailed: {json.dumps(failures[:10], indent=1)}{pod.report()}"
    late_reqs = [r for r in results if r["kind"].startswith("late-")]
    assert len(late_reqs) == 2 and all(r["t0"] < t_term + DRAIN_DELAY < r["t1"] for r in late_reqs), \
        f"the late requests were not in flight when the listeners closed: {late_reqs} (SIGTERM at {t_term})"
    # the late /call-out made its outbound call ~0.3 s after the inbound listener closed: the
    # outbound listener kept accepting while an inbound request was still in flight
    assert after_rc == 7, f"expected connection refused after exit, got curl exit {after_rc} {after_status}"

    # every request was logged exactly once, on the right listener, and reached the app once
    log = pod.access_log()
    inbound = [e["path"] for e in log if e["listener"] == "inbound" and "load=" in e["path"]]
    assert sorted(inbound) == sorted(r["path"] for r in results), summary
    outbound = [e for e in log if e["listener"] == "outbound" and "load=" in e["path"]]
    calls = [r for r in results if r["path"].startswith("/call-out")]
    assert len(outbound) == len(calls) and all(e["status"] == 200 for e in outbound), \
        f"{len(outbound)} outbound access-log lines for {len(calls)} calls out ({summary})"
    assert all(e["upstream"] == f"{CLI_IP}:{EXT_PORT}" for e in outbound), outbound[:3]
    app_paths = [h["path"] for h in pod.app_log() if "load=" in h["path"]]
    assert sorted(app_paths) == sorted(r["path"] for r in results), summary
