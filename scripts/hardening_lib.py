"""Shared by scripts/soak.py and scripts/flood.py (imported, not run): free ports, processes
started in their own sessions and stopped by PID, /proc accounting of the proxy (RSS, open fds,
CPU time, context switches), the proxy's /metrics, the nginx app, outrider-bench runs.

Everything listens on 127.0.0.1 only. Nothing here stops a process it did not start.
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Tests" / "integration"))
from wire import to_yaml  # noqa: E402  (the integration tests' YAML writer)

HZ = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ ports ---
def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def dead_port() -> tuple[socket.socket, int]:
    """A bound, never-listening socket: connects to its port are refused for as long as the
    caller keeps the socket."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, alive=lambda: True) -> bool:
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


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's RLIMIT_NOFILE (children inherit it); root may raise the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -------------------------------------------------------------------------------- processes ---
class Procs:
    """Processes started here, each in its own session; stopped by PID (TERM, then KILL)."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, cmd: list, cpu: str | None = None, env=None, stdout=None) -> subprocess.Popen:
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(cpu), *cmd]
        out = stdout if stdout is not None else open(self.workdir / f"{name}.out", "wb")
        err = open(self.workdir / f"{name}.err", "wb")
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                             env=env, cwd=str(self.workdir))
        p.name = name
        self.started.append(p)
        return p

    def stop(self, p: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 10.0):
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        return p.returncode

    def stop_all(self):
        for p in reversed(self.started):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                log(f"stopping {p.name} (pid {p.pid}): {e!r}")


# ------------------------------------------------------------------------------- accounting ---
def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmHWM:"):
                return int(ln.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of all the process's threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches summed over the process's threads (each loop
    wake-up from epoll_wait is one voluntary switch)."""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for ln in f:
                    if ln.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        n += int(ln.split()[1])
        except OSError:
            pass
    return n


def thread_wakeups(pid: int, name_prefix: str) -> int:
    """Voluntary context switches (wake-ups from epoll_wait and the like) of the threads whose
    name starts with name_prefix (the workers are outrider-w0, outrider-w1, ...)."""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if not open(f"/proc/{pid}/task/{tid}/comm").read().startswith(name_prefix):
                continue
            for ln in open(f"/proc/{pid}/task/{tid}/status"):
                if ln.startswith("voluntary_ctxt_switches:"):
                    n += int(ln.split()[1])
        except OSError:
            pass
    return n


# ---------------------------------------------------------------------------------- metrics ---
def metrics_text(admin_port: int, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=timeout) as r:
        return r.read().decode()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def metric_sum(text: str, family: str, **labels) -> float:
    """Sum of the samples of `family` whose labels include `labels`."""
    total = 0.0
    for ln in text.splitlines():
        if not ln.startswith(family):
            continue
        m = _SAMPLE.match(ln)
        if not m or m.group(1) != family:
            continue
        lab = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(lab.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


# ------------------------------------------------------------------------------------ nginx ---
def write_nginx_app(workdir: Path, port: int) -> Path:
    """The app: nginx, 1 worker, keep-alive, one fixed answer per path (so a client can tell
    which request an answer belongs to), a 1 MiB file for flow-control tests."""
    d = Path(workdir) / "app"
    (d / "www").mkdir(parents=True, exist_ok=True)
    big = d / "www" / "big.bin"
    if not big.exists():
        big.write_bytes(os.urandom(1 << 20))
    os.chmod(workdir, 0o755)
    for p in (d, d / "www", big):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    conf = d / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
worker_rlimit_nofile 65536;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    client_max_body_size 1m;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {d}/www;
        location = /ka {{ return 200 "ka\\n"; }}
        location = /close {{ return 200 "close\\n"; }}
        location = /chunked {{ return 200 "chunked\\n"; }}
        location /missing {{ return 404 "app-404\\n"; }}
        location = /big.bin {{ default_type application/octet-stream; }}
        location / {{ return 200 "hello\\n"; }}
    }}
}}
""")
    return conf


def start_nginx(procs: Procs, workdir: Path, cpu=None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = write_nginx_app(workdir, port)
    p = procs.start("nginx-app", ["nginx", "-e", "stderr", "-p", str(conf.parent), "-c", str(conf),
                                  "-g", "daemon off;"], cpu=cpu)
    if not wait_port(port, 10, lambda: p.poll() is None):
        raise RuntimeError(f"nginx did not listen on {port}: {(workdir / 'nginx-app.err').read_text()[-2000:]}")
    return p, port


# ------------------------------------------------------------------------------------ proxy ---
class Proxy:
    def __init__(self, proc, port, admin_port, config_path, stderr_path):
        self.proc, self.pid, self.port, self.admin_port = proc, proc.pid, port, admin_port
        self.config_path, self.stderr_path = config_path, stderr_path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        return Path(self.stderr_path).read_text(errors="replace")


def start_proxy(procs: Procs, bin_path: str, workdir: Path, listener: dict, clusters: list, routes: list,
                top: dict | None = None, cpu=None, name="outrider") -> Proxy:
    port, admin = free_port(), free_port()
    lst = {"name": "inbound", "address": f"127.0.0.1:{port}", "direction": "inbound"}
    lst.update(listener)
    lst["routes"] = routes
    cfg = {"workers": 2, "log_level": "info", "admin": {"address": f"127.0.0.1:{admin}"},
           "access_log": {"format": "off"}, "drain": {"delay": "0s", "timeout": "10s"}}
    cfg.update(top or {})
    cfg["listeners"] = [lst]
    cfg["clusters"] = clusters
    path = Path(workdir) / f"{name}.yaml"
    path.write_text(to_yaml(cfg))
    p = procs.start(name, [bin_path, "run", "--config", str(path)], cpu=cpu, stdout=subprocess.DEVNULL)
    if not wait_port(port, 10, lambda: p.poll() is None) or not wait_port(admin, 5, lambda: p.poll() is None):
        raise RuntimeError(f"outrider did not start: {(Path(workdir) / (name + '.err')).read_text()[-3000:]}")
    return Proxy(p, port, admin, path, Path(workdir) / f"{name}.err")


# ------------------------------------------------------------------------------------ bench ---
def bench(bench_bin: str, url: str, duration: str, conns: int, rate: int | None = None, h2c=False, streams=1,
          cpu=None, timeout="5s", extra=()) -> dict:
    """One outrider-bench run, its --json result."""
    cmd = [bench_bin, url, "-c", str(conns), "-t", "1", "-d", duration, "--timeout", timeout, "--json", *extra]
    if rate:
        cmd += ["--rate", str(rate)]
    if h2c:
        cmd += ["--h2c", "-m", str(streams)]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"outrider-bench exited {r.returncode}: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def bench_errors(res: dict) -> int:
    """Requests that did not get a 2xx, plus socket errors and timeouts."""
    bad = sum(v for k, v in res.get("status", {}).items() if not str(k).startswith("2"))
    return bad + sum(res.get("errors", {}).values())


def machine_line() -> str:
    model = ""
    try:
        for ln in open("/proc/cpuinfo"):
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {model or 'unknown CPU'}, Linux {os.uname().release}"


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"
