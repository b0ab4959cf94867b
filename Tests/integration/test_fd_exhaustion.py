"""Out of file descriptors (EMFILE): the proxy backs off accepting instead of spinning, keeps
serving the connections it has, logs at most once a second, and recovers when fds free up."""
import os
import socket
import subprocess
import time


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_emfile_backoff_and_recovery(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, top={"workers": 1})
    held = p.conn()
    held.request("GET", "/before")
    assert held.read_response().status == 200

    open_fds = len(os.listdir(f"/proc/{p.pid}/fd"))
    limit = open_fds + 4
    subprocess.run(["prlimit", f"--pid={p.pid}", f"--nofile={limit}:{limit}"], check=True)

    flood = []
    try:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=2)
            flood.append(s)
        time.sleep(0.3)
        cpu_before = _cpu_seconds(p.pid)
        time.sleep(1.5)
        spent = _cpu_seconds(p.pid) - cpu_before
        assert spent < 0.5, f"the proxy spun while out of descriptors: {spent:.2f} s CPU in 1.5 s"

        # The connection it already has is still served (its upstream connection is pooled).
        held.request("GET", "/during")
        assert held.read_response().status == 200

        paused = [ln for ln in p.stderr().splitlines() if "accept paused" in ln]
        assert 1 <= len(paused) <= 4, f"expected a few rate-limited 'accept paused' lines, got {len(paused)}"
    finally:
        for s in flood:
            s.close()

    # With descriptors free again, new clients are served.
    deadline = time.monotonic() + 5
    while True:
        try:
            with p.conn(timeout=2) as c:
                c.request("GET", "/after")
                if c.read_response().status == 200:
                    break
        except (OSError, TimeoutError):
            pass
        assert time.monotonic() < deadline, "the proxy did not recover after descriptors were freed"
        time.sleep(0.1)
    held.close()
