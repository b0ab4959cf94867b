"""Reload and signals (SPEC §9): SIGHUP re-reads --config (good and bad files under load, in-flight
requests, listeners added / removed / unbindable, /config and the reload counters, reload while
draining), SIGUSR1 reopens a file access log (logrotate), outbound listeners keep serving until
the inbound side has drained, and exec -> /ready timings."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Proxy, _report
from wire import Conn, free_port, to_yaml

MSG_OK = "configuration reloaded"
MSG_ERR = "configuration reload failed; keeping the running configuration"


# ---------------------------------------------------------------------------------------------
# config builders


def cluster(name, up, **extra):
    return {"name": name, "endpoints": [f"127.0.0.1:{up.port}"], "connect_timeout": "1s", **extra}


def route(name, cluster_name, prefix="/", **extra):
    return {"name": name, "match": {"path_prefix": prefix}, "cluster": cluster_name, **extra}


def gen_header(gen):
    """A response header filter naming the configuration generation that served a request."""
    return [{"headers": {"response": {"set": {"x-config-gen": str(gen)}}}}]


def listener(name, port, routes, direction="inbound"):
    return {"name": name, "address": f"127.0.0.1:{port}", "direction": direction, "protocols": ["http1"],
            "routes": routes}


def config(admin_port, listeners, clusters, **top):
    cfg = {
        "workers": 2,
        "log_level": "info",
        "admin": {"address": f"127.0.0.1:{admin_port}"},
        "access_log": {"format": "json", "path": "stdout"},
        "drain": {"delay": "0s", "timeout": "10s"},
    }
    cfg.update(top)
    cfg["listeners"] = listeners
    cfg["clusters"] = clusters
    return cfg


# ---------------------------------------------------------------------------------------------
# process helpers


@pytest.fixture
def start_cfg(outrider_bin, tmp_path):
    """start(cfg, port, admin_port) -> Proxy: writes `cfg` (a dict) as the config file and starts
    outrider on it; waits until `port` accepts. Stopped (SIGTERM, exit 0 expected) at teardown."""
    started: list[Proxy] = []

    def start(cfg, port, admin_port, wait=True):
        workdir = tmp_path / f"rproxy{len(started) + 1}"
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "outrider.yaml"
        path.write_text(to_yaml(cfg))
        p = Proxy(outrider_bin, path, port, admin_port, workdir)
        started.append(p)
        if wait:
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


def log_lines(p: Proxy) -> list[dict]:
    out = []
    text = p.stderr()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    for ln in text.splitlines():
        try:
            e = json.loads(ln)
        except ValueError:
            continue
        if isinstance(e, dict):
            out.append(e)
    return out


def wait_log(p: Proxy, pred, after: int = 0, timeout: float = 5.0) -> dict | None:
    """The first stderr log line from index `after` on that satisfies `pred`."""
    deadline = time.monotonic() + timeout
    while True:
        lines = log_lines(p)
        for e in lines[after:]:
            if pred(e):
                return e
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def write_config(p: Proxy, cfg_or_text):
    text = cfg_or_text if isinstance(cfg_or_text, str) else to_yaml(cfg_or_text)
    tmp = Path(p.config_path + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, p.config_path)


def reload(p: Proxy, cfg_or_text=None, expect="ok", timeout=5.0) -> dict:
    """Writes the config (when given), sends SIGHUP and waits for the reload's log line; returns it."""
    if cfg_or_text is not None:
        write_config(p, cfg_or_text)
    mark = len(log_lines(p))
    p.signal(signal.SIGHUP)
    line = wait_log(p, lambda e: e.get("msg") in (MSG_OK, MSG_ERR), after=mark, timeout=timeout)
    assert line is not None, f"no reload outcome logged within {timeout}s of SIGHUP; stderr:\n{p.stderr()[-3000:]}"
    want = MSG_OK if expect == "ok" else MSG_ERR
    assert line["msg"] == want, f"expected reload {expect!r}, got log line {line}; stderr:\n{p.stderr()[-3000:]}"
    assert p.alive(), "outrider exited on SIGHUP"
    return line


def admin(p: Proxy, path: str, method="GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{p.admin_port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(p: Proxy, name: str, **labels) -> float:
    """Sum of the samples of counter `name` (without _total) whose labels include `labels`."""
    status, text = admin(p, "/metrics")
    assert status == 200
    total = 0.0
    for fam in text_string_to_metric_families(text):
        if fam.name != name:
            continue
        for s in fam.samples:
            if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def get(port: int, path: str, timeout=5.0):
    with Conn(port, timeout) as c:
        c.request("GET", path)
        return c.read_response(timeout=timeout)


def refused(port: int) -> bool:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except ConnectionRefusedError:
        return True
    s.close()
    return False


def error_position_re(p: Proxy) -> re.Pattern:
    return re.compile(re.escape(p.config_path) + r":(\d+):(\d+): ")


# ---------------------------------------------------------------------------------------------
# 1. good / bad / good reloads under a running load loop


def test_reload_under_load_zero_failures(start_cfg, make_upstream):
    A, B = make_upstream("A"), make_upstream("B")
    port, admin_port = free_port(), free_port()
    clusters = [cluster("a", A), cluster("b", B)]

    def cfg(gen):
        if gen == 1:
            routes = [route("main", "a", filters=gen_header(1))]
        elif gen == 2:   # / now goes to cluster b, another header filter value
            routes = [route("main", "b", filters=gen_header(2))]
        else:            # back to a, with a rewrite of /load
            routes = [route("load", "a", prefix="/load", rewrite={"path_prefix": "/v3/load"}, filters=gen_header(3)),
                      route("main", "a", filters=gen_header(3))]
        return config(admin_port, [listener("inbound", port, routes)], clusters)

    p = start_cfg(cfg(1), port, admin_port)

    stop = threading.Event()
    lock = threading.Lock()
    records = []      # (thread, conn_serial, t_sent, t_done, gen, upstream, target)
    failures = []     # (thread, t, repr(error))

    def worker(tid: int, keepalive: bool):
        c = None
        serial = 0
        i = 0
        while not stop.is_set():
            i += 1
            target = f"/load/{tid}/{i}"
            t_sent = time.monotonic()
            try:
                if c is None:
                    c = Conn(port, 5)
                    serial += 1
                c.request("GET", target)
                r = c.read_response(timeout=5)
                t_done = time.monotonic()
                if r.status != 200:
                    raise AssertionError(f"status {r.status}: {r!r}")
                body = r.json()
                with lock:
                    records.append((tid, serial, t_sent, t_done, r.header("x-config-gen"), body["upstream"],
                                    body["target"], target))
            except Exception as e:  # counted, reported below
                with lock:
                    failures.append((tid, round(time.monotonic() - t0, 3), target, repr(e)))
                if c is not None:
                    c.close()
                c = None
            if not keepalive and c is not None:
                c.close()
                c = None
        if c is not None:
            c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(tid, True), daemon=True) for tid in range(4)]
    # a fifth client opens a new connection per request: a kept listener must not refuse anything
    threads.append(threading.Thread(target=worker, args=(4, False), daemon=True))
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        sig1 = time.monotonic()
        reload(p, cfg(2), "ok")
        seen1 = time.monotonic()
        time.sleep(1.5)

        # an invalid file: unknown key on its last line
        bad = to_yaml(cfg(2)) + "bogus_key: 1\n"
        bad_line = bad.count("\n")
        line = reload(p, bad, "error")
        pos = error_position_re(p).search(line.get("error", ""))
        assert pos, f"reload error without {p.config_path}:LINE:COL: {line}"
        assert int(pos.group(1)) == bad_line and int(pos.group(2)) == 1, (line, bad_line)
        assert metric(p, "outrider_config_reloads", result="error") == 1
        assert metric(p, "outrider_config_reloads", result="ok") == 1
        time.sleep(1.5)

        sig3 = time.monotonic()
        reload(p, cfg(3), "ok")
        seen3 = time.monotonic()
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert metric(p, "outrider_config_reloads", result="ok") == 2
    assert metric(p, "outrider_config_reloads", result="error") == 1

    total = len(records) + len(failures)
    print(f"\nload loop: {total} requests, {len(failures)} failed, "
          f"{len(records)} ok over {time.monotonic() - t0:.1f}s (4 keep-alive clients + 1 new-connection client)")
    assert not failures, f"{len(failures)} of {total} requests failed during reloads: {failures[:10]}"
    assert total > 200, f"only {total} requests in the load loop"

    wrong = []
    for tid, serial, t_sent, t_done, gen, up, upstream_target, target in records:
        if t_done < sig1:
            want = ("1", "A", target)
        elif t_sent > seen1 and t_done < sig3:
            want = ("2", "B", target)                      # the invalid reload changed nothing
        elif t_sent > seen3:
            want = ("3", "A", target.replace("/load/", "/v3/load/", 1))
        else:
            continue                                        # straddles a SIGHUP: either is fine
        if (gen, up, upstream_target) != want:
            wrong.append((tid, serial, round(t_sent - t0, 3), gen, up, upstream_target, want))
    assert not wrong, f"{len(wrong)} responses from the wrong configuration: {wrong[:10]}"

    # the same keep-alive connections carried requests of every generation
    for tid in range(4):
        by_conn = {}
        for r in records:
            if r[0] == tid:
                by_conn.setdefault(r[1], set()).add(r[4])
        assert any(gens >= {"1", "2", "3"} for gens in by_conn.values()), \
            f"keep-alive client {tid} did not see all three configurations on one connection: {by_conn}"
    assert any(r[0] == 4 and r[4] == "2" for r in records) and any(r[0] == 4 and r[4] == "3" for r in records)


# ---------------------------------------------------------------------------------------------
# 2. a request in flight across a reload finishes on the old configuration


def test_inflight_request_finishes_on_old_config(start_cfg, make_upstream):
    A, B = make_upstream("A"), make_upstream("B")
    port, admin_port = free_port(), free_port()
    clusters = [cluster("a", A), cluster("b", B)]
    p = start_cfg(config(admin_port, [listener("inbound", port, [route("main", "a", filters=gen_header(1))])], clusters),
                  port, admin_port)
    result = {}
    conn = Conn(port, 10)

    def client():
        try:
            conn.request("GET", "/slow/1000/inflight")
            result["r"] = conn.read_response(timeout=10)
        except Exception as e:
            result["e"] = e

    t = threading.Thread(target=client)
    t.start()
    try:
        assert A.wait_for(lambda: any("/inflight" in r.target for r in A.records), 3), "request never reached A"
        reload(p, config(admin_port, [listener("inbound", port, [route("main", "b", filters=gen_header(2))])], clusters))
        r = get(port, "/after-reload")                     # a new connection: new configuration
        assert r.status == 200 and r.json()["upstream"] == "B" and r.header("x-config-gen") == "2", r
        t.join(10)
        assert "e" not in result, f"in-flight request failed across the reload: {result['e']!r}"
        r = result["r"]
        assert r.status == 200, r
        assert r.json()["upstream"] == "A" and r.json()["target"] == "/slow/1000/inflight", r
        assert r.header("x-config-gen") == "1", f"in-flight response not filtered by the old config: {r.headers}"
        # the same keep-alive connection's next request uses the new configuration
        conn.request("GET", "/next-on-same-conn")
        r = conn.read_response()
        assert r.status == 200 and r.json()["upstream"] == "B" and r.header("x-config-gen") == "2", r
    finally:
        conn.close()
        t.join(10)


# ---------------------------------------------------------------------------------------------
# 3. listeners added and removed; an unbindable new listener


def test_listener_added_removed_and_unbindable(start_cfg, make_upstream):
    A = make_upstream("A")
    p1, p2, p3, admin_port = free_port(), free_port(), free_port(), free_port()
    clusters = [cluster("a", A)]
    l1 = listener("one", p1, [route("r1", "a")])
    l2 = listener("two", p2, [route("r2", "a")])
    p = start_cfg(config(admin_port, [l1], clusters), p1, admin_port)
    assert refused(p2)

    # added
    reload(p, config(admin_port, [l1, l2], clusters))
    r = get(p2, "/on-two")
    assert r.status == 200 and r.json()["target"] == "/on-two", r
    assert get(p1, "/still-on-one").status == 200

    # removed, with an exchange in flight on it
    result = {}
    conn = Conn(p1, 10)

    def client():
        try:
            conn.request("GET", "/slow/1000/removed-listener")
            result["r"] = conn.read_response(timeout=10)
        except Exception as e:
            result["e"] = e

    t = threading.Thread(target=client)
    t.start()
    try:
        assert A.wait_for(lambda: any("/removed-listener" in r.target for r in A.records), 3)
        reload(p, config(admin_port, [l2], clusters))
        time.sleep(0.1)
        assert refused(p1), f"removed listener 127.0.0.1:{p1} still accepts new connections"
        assert get(p2, "/two-after-removal").status == 200
        t.join(10)
        assert "e" not in result, f"exchange on a removed listener failed: {result['e']!r}"
        assert result["r"].status == 200, result["r"]
    finally:
        conn.close()
        t.join(10)

    # unbindable: the port is held by a socket bound without SO_REUSEPORT
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", p3))
        holder.listen(1)
        l3 = listener("three", p3, [route("r3", "a")])
        line = reload(p, config(admin_port, [l2, l3], clusters), "error")
        err = line.get("error", "")
        assert "three" in err or f":{p3}" in err, f"bind failure does not name the listener/address: {line}"
        assert re.search(r"in use", err, re.I), f"bind failure without errno text: {line}"
        assert metric(p, "outrider_config_reloads", result="error") == 1
        assert metric(p, "outrider_config_reloads", result="ok") == 2
        assert get(p2, "/two-after-bad-reload").status == 200
        assert refused(p1)
        status, body = admin(p, "/config")
        assert [l["name"] for l in json.loads(body)["listeners"]] == ["two"]
    finally:
        holder.close()
    # once the port is free the same file reloads, and the new listener serves
    reload(p)
    assert get(p3, "/on-three").status == 200
    assert get(p2, "/two-again").status == 200


def test_idle_connection_on_removed_listener_after_reload(start_cfg, make_upstream):
    """A keep-alive connection accepted on a listener that a reload removed, used again afterwards:
    the proxy must stay up (the request is served on the old config or the connection is closed),
    and the removed listener's connection is not counted under another listener."""
    A, B = make_upstream("A"), make_upstream("B")
    p1, p2, admin_port = free_port(), free_port(), free_port()
    one = listener("one", p1, [route("r1", "a")])
    two = listener("two", p2, [route("r2x", "b", prefix="/x"), route("r2y", "b", prefix="/y"), route("r2", "b")])
    p = start_cfg(config(admin_port, [one, two], [cluster("a", A), cluster("b", B)], workers=1), p1, admin_port)
    problems = []
    with Conn(p2, 3) as c:
        c.request("GET", "/first")
        r = c.read_response()
        assert r.status == 200 and r.json()["upstream"] == "B", r
        reload(p, config(admin_port, [one], [cluster("a", A)], workers=1))
        time.sleep(0.1)
        assert refused(p2)
        counted = metric(p, "outrider_downstream_connections", listener="one")
        if counted != 0:
            problems.append(f"outrider_downstream_connections_total{{listener=\"one\"}} is {counted} with no connection "
                            f"accepted on 'one' since the reload (the removed listener's connection is counted there)")
        c.request("GET", "/second")
        try:
            r = c.read_response()
        except Exception as e:  # a close is acceptable; a crash is not
            r = e
        p.wait_exit(2)           # a crash takes a moment (the Swift runtime prints a backtrace)
        if not p.alive():
            crash = [ln for ln in p.stderr().splitlines() if "crashed" in ln or "Downstream.swift" in ln][:4]
            problems.append(f"outrider died (exit {p.proc.returncode}) on a request over a connection of a listener "
                            f"removed by reload; client saw {r!r}; stderr: {crash}")
        elif not isinstance(r, Exception) and r.status == 200 and r.json()["upstream"] != "B":
            problems.append(f"request on the removed listener went to another cluster: {r!r}")
    assert not problems, "\n".join(problems)
    assert get(p1, "/one-still-serves").status == 200


# ---------------------------------------------------------------------------------------------
# 4. /config and the counters; invalid files of every kind; restart-only settings


def test_config_and_metrics_follow_reloads(start_cfg, make_upstream, tmp_path):
    A, B = make_upstream("A"), make_upstream("B")
    port, admin_port = free_port(), free_port()
    clusters = [cluster("a", A), cluster("b", B)]
    good1 = config(admin_port, [listener("inbound", port, [route("main", "a")])], clusters)
    good2 = config(admin_port, [listener("inbound", port, [route("main", "b")])], clusters)
    p = start_cfg(good1, port, admin_port)

    assert metric(p, "outrider_config_reloads", result="ok") == 0
    assert metric(p, "outrider_config_reloads", result="error") == 0
    for i in range(3):
        assert get(port, f"/before/{i}").status == 200
    assert metric(p, "outrider_requests", route="main") == 3
    assert json.loads(admin(p, "/config")[1])["listeners"][0]["routes"][0]["cluster"] == "a"

    reload(p, good2)
    cfg = json.loads(admin(p, "/config")[1])
    assert cfg["listeners"][0]["routes"][0]["cluster"] == "b", cfg
    assert metric(p, "outrider_config_reloads", result="ok") == 1
    assert metric(p, "outrider_requests", route="main") == 0, "request counters did not start over on reload"
    assert metric(p, "outrider_upstream_requests") == 0
    for i in range(2):
        assert get(port, f"/after/{i}").json()["upstream"] == "B"
    assert metric(p, "outrider_requests", route="main") == 2
    assert metric(p, "outrider_upstream_requests", endpoint=f"127.0.0.1:{B.port}") == 2

    # invalid files of each kind: nothing changes, each is counted and logged with FILE:LINE:COL
    text2 = to_yaml(good2)
    missing = str(tmp_path / "no-such-cert.pem")
    tls_listener = listener("inbound", port, [route("main", "a")])
    tls_listener["tls"] = {"certificate": missing, "private_key": missing}
    bad_files = {
        "yaml syntax": text2 + "listeners: [unclosed\n",
        "unknown key": text2 + "bogus_key: 1\n",
        "missing cluster": to_yaml(config(admin_port, [listener("inbound", port, [route("main", "nope")])], clusters)),
        "bad duration": to_yaml(config(admin_port, [listener("inbound", port, [route("main", "a")])], clusters,
                                       drain={"delay": "soon", "timeout": "10s"})),
        "unreadable certificate": to_yaml(config(admin_port, [tls_listener], clusters)),
    }
    for n, (kind, text) in enumerate(bad_files.items(), start=1):
        line = reload(p, text, "error")
        assert error_position_re(p).search(line.get("error", "")), f"{kind}: no FILE:LINE:COL in {line}"
        assert metric(p, "outrider_config_reloads", result="error") == n, kind
        assert metric(p, "outrider_config_reloads", result="ok") == 1, kind
        r = get(port, f"/bad/{n}")
        assert r.status == 200 and r.json()["upstream"] == "B", (kind, r)
        assert json.loads(admin(p, "/config")[1])["listeners"][0]["routes"][0]["cluster"] == "b", kind
    # a failed reload does not reset the counters
    assert metric(p, "outrider_requests", route="main") == 2 + len(bad_files)

    # workers / admin / access_log: warned, effective on restart only
    mark = len(log_lines(p))
    changed = config(admin_port, [listener("inbound", port, [route("main", "a")])], clusters, workers=3,
                     access_log={"format": "json", "path": "stderr"})
    reload(p, changed)
    warnings = [e for e in log_lines(p)[mark:] if e.get("level") == "warning"]
    for setting in ("workers", "access_log"):
        assert any(setting in e.get("msg", "") for e in warnings), (setting, warnings)
    assert not any("admin" in e.get("msg", "") for e in warnings), warnings
    assert metric(p, "outrider_config_reloads", result="ok") == 2
    r = get(port, "/after-restart-only-change")
    assert r.json()["upstream"] == "A"
    assert p.wait_access_log(lambda e: e.get("path") == "/after-restart-only-change", 3), \
        "access_log change applied without a restart (line not on stdout)"


def test_reload_while_draining_is_ignored(start_cfg, make_upstream):
    A, B = make_upstream("A"), make_upstream("B")
    port, admin_port = free_port(), free_port()
    clusters = [cluster("a", A), cluster("b", B)]
    p = start_cfg(config(admin_port, [listener("inbound", port, [route("main", "a")])], clusters,
                         drain={"delay": "2s", "timeout": "5s"}), port, admin_port)
    assert admin(p, "/drain", "POST")[0] == 202
    write_config(p, config(admin_port, [listener("inbound", port, [route("main", "b")])], clusters))
    mark = len(log_lines(p))
    p.signal(signal.SIGHUP)
    ignored = wait_log(p, lambda e: "SIGHUP" in e.get("msg", "") or e.get("msg") in (MSG_OK, MSG_ERR), mark, 3)
    assert ignored is not None and ignored.get("msg") not in (MSG_OK, MSG_ERR), ignored
    r = get(port, "/during-drain-delay")              # still accepting during drain.delay
    assert r.status == 200 and r.json()["upstream"] == "A", r
    assert metric(p, "outrider_config_reloads", result="ok") == 0
    assert metric(p, "outrider_config_reloads", result="error") == 0
    assert p.wait_exit(8) == 0


# ---------------------------------------------------------------------------------------------
# 5. SIGUSR1 reopens a file access log


def _file_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def test_sigusr1_reopens_access_log(start_cfg, make_upstream, tmp_path):
    A = make_upstream("A")
    port, admin_port = free_port(), free_port()
    log_path = tmp_path / "logs" / "access.log"
    log_path.parent.mkdir()
    p = start_cfg(config(admin_port, [listener("inbound", port, [route("main", "a")])], [cluster("a", A)],
                         access_log={"format": "json", "path": str(log_path)}), port, admin_port)
    phases = {"before": 20, "renamed": 10, "after": 25}
    sent = {k: [f"/{k}/{i}" for i in range(n)] for k, n in phases.items()}

    def run(paths):
        with Conn(port) as c:                          # keep-alive and new connections both
            for i, path in enumerate(paths):
                if i % 2:
                    assert get(port, path).status == 200
                else:
                    c.request("GET", path)
                    assert c.read_response().status == 200

    run(sent["before"])
    time.sleep(1.5)
    rotated = log_path.with_name("access.log.1")
    os.rename(log_path, rotated)
    run(sent["renamed"])                                # still written to the renamed file
    time.sleep(1.5)
    mark = len(log_lines(p))
    p.signal(signal.SIGUSR1)
    reopened = wait_log(p, lambda e: "reopen" in e.get("msg", ""), mark, 3)
    assert reopened is not None and reopened.get("level") != "error", (reopened, p.stderr()[-2000:])
    assert log_path.exists(), "SIGUSR1 did not create a new file at the original path"
    run(sent["after"])
    time.sleep(1.5)

    old = [e["path"] for e in _file_lines(rotated)]
    new = [e["path"] for e in _file_lines(log_path)]
    total = sum(phases.values())
    assert len(old) + len(new) == total, f"{total} requests, {len(old)} + {len(new)} log lines"
    assert sorted(old) == sorted(sent["before"] + sent["renamed"]), old
    assert sorted(new) == sorted(sent["after"]), new
    assert p.stdout() == "", "access log lines went to stdout"


# ---------------------------------------------------------------------------------------------
# 6. outbound listeners keep serving until the inbound side has drained


@pytest.mark.parametrize("workers", [1, 2])
def test_outbound_listener_serves_until_inbound_drained(start_cfg, make_upstream, workers):
    slow, fast = make_upstream("app"), make_upstream("external")
    pin, pout, admin_port = free_port(), free_port(), free_port()
    cfg = config(admin_port,
                 [listener("inbound", pin, [route("in", "app")]),
                  listener("outbound", pout, [route("out", "ext")], direction="outbound")],
                 [cluster("app", slow), cluster("ext", fast)],
                 drain={"delay": "0s", "timeout": "10s"}, workers=workers)
    p = start_cfg(cfg, pin, admin_port)
    assert get(pout, "/warm").status == 200

    result = {}

    def client():
        try:
            with Conn(pin, 10) as c:
                c.request("GET", "/slow/2000/inbound")
                result["r"] = c.read_response(timeout=10)
                result["t"] = time.monotonic()
        except Exception as e:
            result["e"] = e

    t = threading.Thread(target=client)
    t.start()
    assert slow.wait_for(lambda: any("/inbound" in r.target for r in slow.records), 3)
    t_term = time.monotonic()
    p.signal(signal.SIGTERM)

    outbound, inbound_accepted, n = [], [], 0
    time.sleep(0.1)
    while time.monotonic() - t_term < 1.5:
        n += 1
        try:
            r = get(pout, f"/out/{n}", timeout=1)
            outbound.append((round(time.monotonic() - t_term, 3), r.status, r.json().get("upstream")))
        except Exception as e:
            outbound.append((round(time.monotonic() - t_term, 3), "error", repr(e)))
        if not refused(pin):
            inbound_accepted.append(round(time.monotonic() - t_term, 3))
        time.sleep(0.05)
    t.join(10)
    bad = [o for o in outbound if o[1] != 200 or o[2] != "external"]
    assert not bad, f"{len(bad)} of {len(outbound)} outbound requests failed while inbound drained: {bad[:10]}"
    assert not inbound_accepted, f"inbound listener accepted new connections while draining at {inbound_accepted}"
    assert "e" not in result, f"in-flight inbound request failed: {result['e']!r}"
    assert result["r"].status == 200, result["r"]
    rc = p.wait_exit(5)
    t_exit = time.monotonic()
    assert rc == 0, f"exit {rc}"
    assert t_exit - result["t"] < 2.0, f"exited {t_exit - result['t']:.2f}s after the inbound request completed"


# ---------------------------------------------------------------------------------------------
# 7. exec -> /ready


def test_start_to_ready(outrider_bin, tmp_path, make_upstream):
    A = make_upstream("A")
    times = []
    for i in range(10):
        port, admin_port = free_port(), free_port()
        workdir = tmp_path / f"start{i}"
        workdir.mkdir()
        path = workdir / "outrider.yaml"
        path.write_text(to_yaml(config(admin_port, [listener("inbound", port, [route("main", "a")])],
                                       [cluster("a", A)])))
        url = f"http://127.0.0.1:{admin_port}/ready"
        t0 = time.monotonic()
        p = Proxy(outrider_bin, path, port, admin_port, workdir)
        try:
            while True:
                assert p.alive(), f"outrider exited at start: {p.stderr()[-2000:]}"
                assert time.monotonic() - t0 < 5, "not ready within 5 s"
                try:
                    with urllib.request.urlopen(url, timeout=1) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
                time.sleep(0.002)
            times.append((time.monotonic() - t0) * 1000)
            assert get(port, "/ready-check").status == 200
        finally:
            problem = p.stop()
        assert not problem, problem
    med = statistics.median(times)
    print(f"\nstart to /ready 200 over {len(times)} starts: min {min(times):.1f} ms, "
          f"median {med:.1f} ms, max {max(times):.1f} ms")
    assert med < 500, f"median start-to-ready {med:.1f} ms"
