"""`workers: auto` follows the cgroup v2 CPU quota (SPEC §10): a pod limited to 500m runs one
worker. The quota file is given through OUTRIDER_CGROUP_CPU_MAX, so the test does not depend on
the machine's own cgroup."""
import json
import os
import signal
import subprocess
import time

import pytest

from wire import free_port


def started_workers(outrider_bin, tmp_path, cpu_max_text):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(cpu_max_text)
    port, admin = free_port(), free_port()
    env = dict(os.environ, OUTRIDER_CGROUP_CPU_MAX=str(cpu_max))
    proc = subprocess.Popen([outrider_bin, "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
                             "--workers", "auto"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            entry = json.loads(line)
            if entry.get("msg") == "started":
                return int(entry["workers"])
        pytest.fail("no 'started' line")
    finally:
        proc.send_signal(signal.SIGINT)   # SIGINT: no drain delay
        proc.wait(10)


def allowed_cpus():
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize("text,expected", [
    ("50000 100000\n", lambda cpus: 1),                 # 500m: one worker
    ("100000 100000\n", lambda cpus: 1),                # exactly one CPU
    ("150000 100000\n", lambda cpus: min(2, cpus)),     # 1.5 CPUs round up to 2 (if allowed)
    ("max 100000\n", lambda cpus: cpus),                # no quota: the affinity mask decides
    ("garbage\n", lambda cpus: cpus),                   # unreadable quota: ignored
])
def test_workers_auto_follows_cpu_max(outrider_bin, tmp_path, text, expected):
    assert started_workers(outrider_bin, tmp_path, text) == expected(allowed_cpus())
