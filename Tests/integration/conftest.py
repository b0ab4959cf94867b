"""Fixtures: a loop thread for helper servers, a fresh recording upstream per test, a WebSocket
echo, and a factory that starts the real `outrider` binary with a config written into tmp_path."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from upstream_server import LoopThread, RecordingUpstream, WebSocketEcho
from wire import Conn, free_port, to_yaml, wait_port

REPO = Path(__file__).resolve().parents[2]


def outrider_bin_path() -> str:
    return os.environ.get("OUTRIDER_BIN") or str(REPO / ".build" / "release" / "outrider")


@pytest.fixture(scope="session")
def outrider_bin() -> str:
    p = outrider_bin_path()
    if not (os.path.isfile(p) and os.access(p, os.X_OK)):
        pytest.fail(f"outrider binary not found at {p} (set OUTRIDER_BIN or run scripts/test.sh)")
    return p


@pytest.fixture(scope="session")
def loop_thread():
    lt = LoopThread()
    yield lt
    lt.close()


def _new_upstream(loop_thread, name):
    return loop_thread.run(RecordingUpstream(name).start())


@pytest.fixture
def upstream(loop_thread):
    """A fresh recording upstream for this test. At teardown, every request head the proxy
    sent it must have been well-formed HTTP/1.1 (re-framed, CRLF, one Host, no CL+TE...)."""
    up = _new_upstream(loop_thread, "upstream")
    yield up
    problems = up.wellformedness_problems()
    loop_thread.run(up.stop())
    assert not problems, f"the proxy sent malformed requests upstream: {problems}"


@pytest.fixture
def make_upstream(loop_thread):
    made = []

    def make(name="extra"):
        up = _new_upstream(loop_thread, name)
        made.append(up)
        return up

    yield make
    for up in made:
        loop_thread.run(up.stop())


@pytest.fixture
def h2_upstream(loop_thread):
    """h2_upstream(name="h2-app", ssl_ctx=None) -> a started H2Upstream (h2_upstream.py: h2c, or h2
    over TLS with an ssl context). At teardown, every stream the proxy opened on it must have been
    a well-formed HTTP/2 request (pseudo-headers, lower-case names, no connection-specific fields)."""
    from h2_upstream import H2Upstream

    made = []

    def make(name="h2-app", ssl_ctx=None, max_concurrent_streams=100):
        up = loop_thread.run(H2Upstream(name, ssl_ctx, max_concurrent_streams).start())
        made.append(up)
        return up

    yield make
    problems = []
    for up in made:
        problems += [f"{up.name}: {p}" for p in up.wellformedness_problems()]
        loop_thread.run(up.stop())
    assert not problems, f"the proxy sent malformed HTTP/2 requests upstream: {problems}"


@pytest.fixture
def ws_echo(loop_thread):
    ws = loop_thread.run(WebSocketEcho().start())
    yield ws
    loop_thread.run(ws.stop())


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class Proxy:
    def __init__(self, bin_path, config_path, port, admin_port, workdir, extra_args=()):
        self.config_path = str(config_path)
        self.port = port
        self.admin_port = admin_port
        self.workdir = Path(workdir)
        self.stdout_path = self.workdir / "outrider.stdout"
        self.stderr_path = self.workdir / "outrider.stderr"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.cmd = [bin_path, "run", "--config", self.config_path, *extra_args]
        self.proc = subprocess.Popen(self.cmd, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
                                     cwd=str(self.workdir))
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout=5.0):
        # The admin listener starts on its own thread, a moment after the data listeners: a
        # test that talks to it first waits for it too (on a loaded machine the gap shows).
        ports = [self.port]
        if self.admin_port and f"127.0.0.1:{self.admin_port}" in Path(self.config_path).read_text():
            ports.append(self.admin_port)
        for port in ports:
            if not wait_port(port, timeout, self.alive):
                rc = self.proc.poll()
                raise AssertionError(
                    f"outrider did not accept on 127.0.0.1:{port} within {timeout}s (exit={rc})\n"
                    f"config:\n{Path(self.config_path).read_text()}\nstderr:\n{self.stderr()[-4000:]}"
                )

    def conn(self, timeout=5.0) -> Conn:
        return Conn(self.port, timeout)

    def url(self, path="/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stdout(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.stderr_path.read_text(errors="replace")

    def access_log(self) -> list[dict]:
        """Every complete stdout line, parsed; each must be a JSON object."""
        text = self.stdout()
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # a line still being written
        out = []
        for ln in text.splitlines():
            if not ln.strip():
                continue
            try:
                e = json.loads(ln)
            except ValueError:
                raise AssertionError(f"access log line is not JSON: {ln[:300]!r}")
            assert isinstance(e, dict), f"access log line is not a JSON object: {ln[:300]!r}"
            out.append(e)
        return out

    def wait_access_log(self, pred, timeout=3.0) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.access_log():
                if pred(e):
                    return e
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def proc_status(self, field: str) -> int:
        """A kB field of /proc/PID/status (VmRSS, VmHWM) in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for ln in f:
                if ln.startswith(field + ":"):
                    return int(ln.split()[1]) * 1024
        raise KeyError(field)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=10.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> str | None:
        """SIGTERM, then SIGKILL after 5 s. Returns a complaint when the exit was not clean."""
        problem = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                problem = "did not exit within 5 s of SIGTERM (drain.delay 0s, no request in flight): killed"
            if problem is None and self.proc.returncode != 0:
                problem = f"exited {self.proc.returncode} on SIGTERM (expected 0)"
        self._out.close()
        self._err.close()
        return problem


def start_proxy(bin_path, workdir: Path, routes=None, clusters=None, listener=None, top=None, upstream=None,
                extra_args=(), wait=True, extra_listeners=None) -> Proxy:
    """Write a config into workdir and start outrider on free ports.

    routes/clusters replace the defaults (one route "/" -> cluster "app" -> `upstream`);
    listener/top are deep-merged into the listener and top-level mappings (a listener key given
    as None is removed: `listener={"protocols": None}` leaves the protocols to the default);
    extra_listeners (complete listener mappings, routes included) follow the first listener.
    """
    port, admin_port = free_port(), free_port()
    if clusters is None:
        assert upstream is not None, "pass upstream= or clusters="
        clusters = [{"name": "app", "endpoints": [f"127.0.0.1:{upstream.port}"], "connect_timeout": "1s"}]
    if routes is None:
        routes = [{"name": "default", "match": {"path_prefix": "/"}, "cluster": "app"}]
    lst = {
        "name": "inbound",
        "address": f"127.0.0.1:{port}",
        "direction": "inbound",
        "protocols": ["http1"],
    }
    lst = _deep_merge(lst, listener or {})
    # a key given as None is left out (e.g. {"protocols": None}: the listener's default protocols)
    lst = {k: v for k, v in lst.items() if v is not None}
    lst["routes"] = routes
    cfg = {
        "workers": 2,
        "log_level": "info",
        "admin": {"address": f"127.0.0.1:{admin_port}"},
        "access_log": {"format": "json", "path": "stdout"},
        "drain": {"delay": "0s", "timeout": "10s"},
    }
    cfg = _deep_merge(cfg, top or {})
    cfg["listeners"] = [lst] + list(extra_listeners or [])
    cfg["clusters"] = clusters
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "outrider.yaml"
    cfg_path.write_text(to_yaml(cfg))
    p = Proxy(bin_path, cfg_path, port, admin_port, workdir, extra_args)
    if wait:
        try:
            p.wait_ready()
        except BaseException:
            p.stop()
            raise
    return p


def _report(p: Proxy):
    # shown by pytest only when the test failed
    print(f"--- outrider pid {p.pid} exit={p.proc.returncode} config {p.config_path}")
    print(Path(p.config_path).read_text())
    print("--- stderr (tail)\n" + p.stderr()[-3000:])
    print("--- stdout (tail)\n" + p.stdout()[-2000:])


@pytest.fixture
def proxy_factory(outrider_bin, tmp_path):
    """start(routes=None, clusters=None, listener={}, top={}, upstream=None, extra_args=(), wait=True,
    extra_listeners=None) -> Proxy"""
    started: list[Proxy] = []

    def start(**kw):
        p = start_proxy(outrider_bin, tmp_path / f"proxy{len(started) + 1}", **kw)
        started.append(p)
        return p

    yield start
    problems = []
    for p in started:
        problem = p.stop()
        _report(p)
        if problem:
            problems.append(f"outrider pid {p.pid}: {problem}")
    assert not problems, "; ".join(problems)


@pytest.fixture
def proxy(proxy_factory, upstream):
    """A proxy with the default config in front of `upstream`."""
    return proxy_factory(upstream=upstream)


@pytest.fixture(scope="module")
def module_upstream(loop_thread):
    """A recording upstream shared by a module's tests (compare counters before/after)."""
    up = _new_upstream(loop_thread, "upstream")
    yield up
    problems = up.wellformedness_problems()
    loop_thread.run(up.stop())
    assert not problems, f"the proxy sent malformed requests upstream: {problems}"


@pytest.fixture(scope="module")
def module_proxy(outrider_bin, tmp_path_factory, module_upstream):
    """One proxy with the default config shared by a module's tests (for large parametrized sets)."""
    p = start_proxy(outrider_bin, tmp_path_factory.mktemp("mproxy"), upstream=module_upstream)
    yield p
    problem = p.stop()
    if problem or p.proc.returncode != 0:
        _report(p)
    assert not problem, f"outrider pid {p.pid}: {problem}"
