"""Process faults under load (issue #9): the app SIGKILLed and restarted on its port, a storm of
SIGHUP reloads, and the listener's certificate files rewritten again and again, each while
clients keep requesting. Real processes on 127.0.0.1: the app is fault_app.py in a process of
its own, the load is Python clients (one timeline entry per request) and outrider-bench.

Each test is sized to finish in about 15 s. OUTRIDER_FAULTS_FULL=1 runs the full-size versions
(scripts/faults.sh: 5 kill/restart cycles, 100 SIGHUPs, 100 certificate rewrites). Every test
prints one line `FAULTS-FIGURES {json}` with its figures."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import Proxy, _report
from wire import Conn, free_port, to_yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FULL = os.environ.get("OUTRIDER_FAULTS_FULL") == "1"
SPEC_FAILURES = {(502, "upstream_connect"), (502, "upstream_reset"), (502, "upstream_protocol"),
                 (503, "no_healthy_upstream"), (503, "overflow")}


def figures(name: str, **values):
    print(f"FAULTS-FIGURES {json.dumps({'test': name, 'full': FULL, **values})}", flush=True)


def bench_bin() -> str:
    p = os.environ.get("OUTRIDER_BENCH_BIN") or str(REPO / ".build" / "release" / "outrider-bench")
    if not (os.path.isfile(p) and os.access(p, os.X_OK)):
        pytest.fail(f"outrider-bench not found at {p} (set OUTRIDER_BENCH_BIN)")
    return p


# ---------------------------------------------------------------------------------------------
# processes


class App:
    """fault_app.py in its own process on a fixed port."""

    def __init__(self, port: int):
        self.port = port
        self.proc = None

    def start(self, timeout=5.0):
        self.proc = subprocess.Popen([sys.executable, str(HERE / "fault_app.py"), "--port", str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()  # "ready PORT" once it listens
        assert line.startswith("ready"), f"fault_app did not start: {line!r}"
        return self

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def app_factory():
    apps: list[App] = []

    def make(port=None):
        a = App(port or free_port()).start()
        apps.append(a)
        return a

    yield make
    for a in apps:
        a.stop()


def proxy_config(port, admin_port, app_port, tls=None, gen=0, workers=2):
    listener = {"name": "inbound", "address": f"127.0.0.1:{port}", "direction": "inbound",
                "routes": [{"name": "main", "match": {"path_prefix": "/"}, "cluster": "app",
                            "filters": [{"headers": {"response": {"set": {"x-config-gen": str(gen)}}}}]}]}
    if tls:
        listener["tls"] = tls
    else:
        listener["protocols"] = ["http1"]
    return {
        "workers": workers,
        "admin": {"address": f"127.0.0.1:{admin_port}"},
        "access_log": {"format": "off"},
        "drain": {"delay": "0s", "timeout": "5s"},
        "listeners": [listener],
        "clusters": [{"name": "app", "endpoints": [f"127.0.0.1:{app_port}"], "connect_timeout": "1s",
                      "pool": {"idle_timeout": "1s"}}],
    }


@pytest.fixture
def start_proxy_cfg(outrider_bin, tmp_path):
    started: list[Proxy] = []

    def start(cfg, port, admin_port):
        workdir = tmp_path / f"fproxy{len(started) + 1}"
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "outrider.yaml"
        path.write_text(to_yaml(cfg))
        p = Proxy(outrider_bin, path, port, admin_port, workdir)
        started.append(p)
        p.wait_ready()
        return p

    yield start
    problems = []
    for p in started:
        problem = p.stop()
        _report(p)
        if problem:
            problems.append(f"outrider pid {p.pid}: {problem}")
    assert not problems, "; ".join(problems)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def idle_fds(pid: int) -> int:
    """Descriptors of an idle proxy, once the readiness probe's connection has gone."""
    time.sleep(0.5)
    return fd_count(pid)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise KeyError("VmRSS")


def wait_fds(pid: int, want: int, timeout: float) -> int:
    """Polls the proxy's open descriptors until they are back to `want` (idle pools closed)."""
    deadline = time.monotonic() + timeout
    n = fd_count(pid)
    while n != want and time.monotonic() < deadline:
        time.sleep(0.1)
        n = fd_count(pid)
    return n


def stderr_lines(p: Proxy) -> list[dict]:
    out = []
    for ln in p.stderr().splitlines():
        try:
            e = json.loads(ln)
        except ValueError:
            continue
        if isinstance(e, dict):
            out.append(e)
    return out


def count_log(p: Proxy, msg: str) -> int:
    return sum(1 for e in stderr_lines(p) if e.get("msg") == msg)


class ClientLoad:
    """Python keep-alive clients, one timeline entry per request: (t_sent, t_done, outcome), where
    outcome is a status code with the proxy's x-outrider-error, or an exception name. A client
    whose connection ends reconnects."""

    def __init__(self, port: int, clients: int, path: str = "/load"):
        self.port, self.path = port, path
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.timeline: list[tuple[float, float, object]] = []
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(clients)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop_event.set()
        for t in self.threads:
            t.join(10)

    def _run(self, k):
        conn = None
        i = 0
        while not self.stop_event.is_set():
            i += 1
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = Conn(self.port, timeout=5)
                conn.request("GET", f"{self.path}/{k}/{i}")
                r = conn.read_response(timeout=5)
                outcome = (r.status, r.header("x-outrider-error"))
                if (r.header("connection") or "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is an outcome
                outcome = type(e).__name__
                if conn is not None:
                    conn.close()
                conn = None
            with self.lock:
                self.timeline.append((t0, time.monotonic(), outcome))
        if conn is not None:
            conn.close()


def run_bench(url: str, seconds: float, connections: int, extra=()) -> subprocess.Popen:
    return subprocess.Popen([bench_bin(), url, "-c", str(connections), "-t", "1", "-d", f"{seconds}s", "--json",
                             "--timeout", "5s", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def bench_result(proc: subprocess.Popen, timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"outrider-bench exit {proc.returncode}: {err[-2000:]}"
    return json.loads(out)


# ---------------------------------------------------------------------------------------------
# 1. the app SIGKILLed mid-load and restarted on the same port


def test_app_sigkilled_and_restarted_under_load(start_proxy_cfg, app_factory):
    cycles, down_s, up_s = (5, 2.0, 3.0) if FULL else (2, 1.5, 2.0)
    grace = 0.5  # after the app listens again, in-flight answers from the down period still arrive
    app = app_factory()
    port, admin_port = free_port(), free_port()
    p = start_proxy_cfg(proxy_config(port, admin_port, app.port), port, admin_port)
    fds_idle = idle_fds(p.pid)
    windows = []  # (t_kill, t_up)
    with ClientLoad(port, clients=4) as load:
        time.sleep(1.5)
        for _ in range(cycles):
            t_kill = time.monotonic()
            app.kill()
            time.sleep(down_s)
            app.start()  # same port
            t_up = time.monotonic()
            windows.append((t_kill, t_up))
            time.sleep(up_s)
            assert p.alive(), "the proxy died"
    timeline = sorted(load.timeline)
    assert p.alive(), "the proxy died"

    def in_window(t0, t1):
        return any(t1 >= k and t0 <= u + grace for k, u in windows)

    failures = [(round(t0 - timeline[0][0], 2), o) for t0, t1, o in timeline if o != (200, None)]
    outside = [(round(t0 - timeline[0][0], 2), o) for t0, t1, o in timeline if o != (200, None) and not in_window(t0, t1)]
    not_spec = [f for f in failures if f[1] not in SPEC_FAILURES]
    per_cycle = []
    for n, (k, u) in enumerate(windows):
        next_kill = windows[n + 1][0] if n + 1 < len(windows) else float("inf")
        during = [o for t0, t1, o in timeline if t1 >= k and t0 <= u]
        after = [o for t0, t1, o in timeline if u + grace < t0 and t1 < next_kill]
        per_cycle.append({"down_s": round(u - k, 2), "requests_while_down": len(during),
                          "failed_while_down": sum(o != (200, None) for o in during),
                          "ok_after_restart": sum(o == (200, None) for o in after)})
    kinds: dict[str, int] = {}
    for _, o in failures:
        kinds[str(o)] = kinds.get(str(o), 0) + 1
    last_second = [o for t0, t1, o in timeline if t0 > timeline[-1][0] - 1.0]
    fds_end = wait_fds(p.pid, fds_idle, 5.0)
    figures("app_sigkill", cycles=cycles, requests=len(timeline), failures=len(failures), failure_kinds=kinds,
            failures_outside_down_windows=len(outside), per_cycle=per_cycle, fds_idle_before=fds_idle,
            fds_idle_after=fds_end, proxy_alive=p.alive())
    assert not not_spec, f"failures that SPEC §3 does not name for a dead app: {not_spec[:10]}"
    assert not outside, f"failures outside the down windows {windows}: {outside[:10]}"
    for c in per_cycle:
        assert c["failed_while_down"] > 0, f"no request failed while the app was down: is it really killed? {per_cycle}"
        assert c["ok_after_restart"] > 20, f"no recovery after the restart: {per_cycle}"
    assert last_second and all(o == (200, None) for o in last_second)
    assert fds_end == fds_idle, f"descriptors: {fds_idle} before the load, {fds_end} after it (a leak)"


# ---------------------------------------------------------------------------------------------
# 2. a SIGHUP storm under steady load


def test_reload_storm_under_load(start_proxy_cfg, app_factory):
    reloads = 100 if FULL else 30
    app = app_factory()
    port, admin_port = free_port(), free_port()
    p = start_proxy_cfg(proxy_config(port, admin_port, app.port, gen=0), port, admin_port)
    fds_idle = idle_fds(p.pid)
    bench = run_bench(f"http://127.0.0.1:{port}/storm", 60, 8)
    try:
        time.sleep(1.5)  # warm: pools, buffers
        rss_before = rss_kib(p.pid)
        rss_samples = [rss_before]
        t0 = time.monotonic()
        for i in range(1, reloads + 1):
            tmp = Path(p.config_path + ".tmp")
            tmp.write_text(to_yaml(proxy_config(port, admin_port, app.port, gen=i)))
            os.replace(tmp, p.config_path)
            p.signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while count_log(p, "configuration reloaded") < i:
                assert time.monotonic() < deadline, f"reload {i} not done within 5 s: {p.stderr()[-2000:]}"
                assert count_log(p, "configuration reload failed; keeping the running configuration") == 0, p.stderr()[-2000:]
                time.sleep(0.005)
            if i % 10 == 0:
                rss_samples.append(rss_kib(p.pid))
            time.sleep(0.03)  # spread the storm over the load: each reload meets requests in flight
        storm_s = time.monotonic() - t0
        time.sleep(1.0)  # under load with the last configuration
        with Conn(port) as c:
            c.request("GET", "/after-storm")
            r = c.read_response()
        assert r.status == 200 and r.header("x-config-gen") == str(reloads), r
        rss_after = rss_kib(p.pid)
    finally:
        bench.send_signal(signal.SIGINT)  # ends the run early; it still prints its result
    result = bench_result(bench, 15)
    fds_end = wait_fds(p.pid, fds_idle, 5.0)
    rss_settled = rss_kib(p.pid)
    non2xx = {k: v for k, v in result["status"].items() if not k.startswith("2")}
    errors = {k: v for k, v in result["errors"].items() if v}
    figures("reload_storm", reloads=reloads, storm_seconds=round(storm_s, 2), requests=result["requests"],
            rps=round(result["rps"]), non_2xx=non2xx, socket_errors=errors, p99_ms=result["latency_ms"]["p99"],
            max_ms=result["latency_ms"]["max"], rss_kib_before=rss_before, rss_kib_every_10=rss_samples,
            rss_kib_after=rss_after, rss_kib_idle_after=rss_settled, fds_idle_before=fds_idle, fds_idle_after=fds_end)
    assert result["requests"] > 1000, result
    assert not non2xx and not errors, f"failed requests during the reload storm: {non2xx} {errors}"
    assert rss_after - rss_before < 4096, f"RSS grew {rss_after - rss_before} KiB over {reloads} reloads: {rss_samples}"
    assert fds_end == fds_idle, f"descriptors: {fds_idle} before, {fds_end} after the storm"


# ---------------------------------------------------------------------------------------------
# 3. certificate files rewritten again and again under TLS load


def make_pair(directory: Path, name: str) -> tuple[bytes, bytes]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    return cert.read_bytes(), key.read_bytes()


def der_digest(pem: bytes) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode())).hexdigest()[:16]


class HandshakeLoad:
    """Clients that open a new TLS connection for every request: handshake, GET, 200, close.
    Records the certificate each handshake got and every failure."""

    def __init__(self, port: int, clients: int):
        self.port = port
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[str] = []
        self.seen: list[tuple[float, str]] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop_event.set()
        for t in self.threads:
            t.join(10)

    def one(self) -> str:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
            with self.ctx.wrap_socket(raw, server_hostname="localhost") as s:
                cert = hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()[:16]
                s.sendall(b"GET /tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    data += d
                if not data.startswith(b"HTTP/1.1 200 "):
                    raise AssertionError(f"answer {data[:120]!r}")
                return cert

    def _run(self):
        while not self.stop_event.is_set():
            try:
                cert = self.one()
                with self.lock:
                    self.ok += 1
                    self.seen.append((time.monotonic(), cert))
            except Exception as e:  # noqa: BLE001 - every failure is counted
                with self.lock:
                    self.failures.append(repr(e)[:200])


def test_cert_rotation_under_load(start_proxy_cfg, app_factory, tmp_path):
    rewrites = 100 if FULL else 20
    pairs_dir = tmp_path / "pairs"
    pairs_dir.mkdir()
    pairs = [make_pair(pairs_dir, f"gen{i}") for i in range(3)]
    final = make_pair(pairs_dir, "final")
    live = tmp_path / "live"
    live.mkdir()
    crt, key = live / "server.crt", live / "server.key"
    crt.write_bytes(pairs[0][0])
    key.write_bytes(pairs[0][1])
    app = app_factory()
    port, admin_port = free_port(), free_port()
    tls = {"certificate": str(crt), "private_key": str(key)}
    p = start_proxy_cfg(proxy_config(port, admin_port, app.port, tls=tls), port, admin_port)

    def install(pair, atomic: bool):
        # the key first, then the certificate: in between the files do not match, and that
        # state must never be served (the previous context stays)
        for path, data in ((key, pair[1]), (crt, pair[0])):
            if atomic:  # as a Kubernetes Secret volume or cert-manager: write aside, rename
                aside = path.with_suffix(".new")
                aside.write_bytes(data)
                os.replace(aside, path)
            else:  # rewritten in place (cp, an editor)
                with open(path, "wb") as f:
                    f.write(data)

    bench = run_bench(f"https://127.0.0.1:{port}/bench", 60, 4, extra=("--insecure",))
    try:
        with HandshakeLoad(port, clients=2) as hs:
            time.sleep(1.0)
            t0 = time.monotonic()
            for i in range(1, rewrites + 1):
                install(pairs[i % len(pairs)], atomic=i % 2 == 0)
                p.signal(signal.SIGHUP)  # SPEC §9: SIGHUP re-reads certificates
                time.sleep(0.25)
            install(final, atomic=True)
            p.signal(signal.SIGHUP)
            want = der_digest(final[0])
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with hs.lock:
                    if hs.seen and hs.seen[-1][1] == want:
                        break
                time.sleep(0.05)
            time.sleep(0.5)
            rotation_s = time.monotonic() - t0
        assert p.alive(), "the proxy died"
    finally:
        bench.send_signal(signal.SIGINT)
    result = bench_result(bench, 15)
    served_after = hs.one()
    distinct = sorted({c for _, c in hs.seen})
    known = {der_digest(c) for c, _ in pairs} | {want}
    non2xx = {k: v for k, v in result["status"].items() if not k.startswith("2")}
    errors = {k: v for k, v in result["errors"].items() if v}
    reload_ok = count_log(p, "configuration reloaded")
    reload_err = count_log(p, "configuration reload failed; keeping the running configuration")
    figures("cert_rotation", rewrites=rewrites, seconds=round(rotation_s, 2), handshakes_ok=hs.ok,
            handshake_failures=len(hs.failures), distinct_certs_served=len(distinct), bench_requests=result["requests"],
            bench_rps=round(result["rps"]), bench_non_2xx=non2xx, bench_errors=errors, reloads_ok=reload_ok,
            reloads_refused=reload_err, final_cert_served=served_after == want)
    assert not hs.failures, f"{len(hs.failures)} failed handshakes/requests: {hs.failures[:5]}"
    assert not non2xx and not errors, f"bench: {non2xx} {errors}"
    assert hs.ok > 50, hs.ok
    assert set(distinct) <= known, f"a certificate that was never installed was served: {distinct}"
    assert len(distinct) >= 3, f"the rotation was not seen by new handshakes: {distinct}"
    assert served_after == want, "the last certificate installed is not the one served"
