"""Lifecycle (SPEC §9): SIGTERM drains in-flight requests and exits 0; the access log is flushed
at exit; operational logs on stderr are JSON lines."""

import json
import signal
import threading
import time


def test_sigterm_finishes_inflight_request(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, top={"drain": {"delay": "0s", "timeout": "10s"}})
    result = {}

    def client():
        try:
            with p.conn(timeout=10) as c:
                c.request("GET", "/slow/1000/inflight")
                result["r"] = c.read_response(timeout=10)
        except Exception as e:  # reported below
            result["e"] = e

    t = threading.Thread(target=client)
    t.start()
    # wait until the upstream has the request, then signal
    assert upstream.wait_for(lambda: any("/inflight" in r.target for r in upstream.records), 3), \
        "the request never reached the upstream"
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    t.join(10)
    assert "e" not in result, f"in-flight request failed during drain: {result.get('e')!r}"
    r = result["r"]
    assert r.status == 200, r
    assert r.json()["target"] == "/slow/1000/inflight"
    assert (r.header("connection") or "").lower() == "close", \
        f"a response sent while draining must carry Connection: close: {r.headers}"
    rc = p.wait_exit(10)
    assert rc == 0, f"exit code {rc} after SIGTERM"
    assert time.monotonic() - t0 < 6
    # the access log line of the drained request was flushed before exit
    lines = [json.loads(ln) for ln in p.stdout().splitlines() if ln.strip()]
    assert any(e.get("path") == "/slow/1000/inflight" and e.get("status") == 200 for e in lines), lines


def test_sigterm_idle_exits_promptly(proxy, upstream):
    with proxy.conn() as c:
        c.request("GET", "/before-term")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        proxy.signal(signal.SIGTERM)
        rc = proxy.wait_exit(5)
        assert rc == 0, f"exit code {rc}"
        assert time.monotonic() - t0 < 3, "an idle proxy should exit quickly with drain.delay 0s"
        # the idle keep-alive client connection was closed
        closed, _ = c.wait_closed(1)
        assert closed
    lines = [json.loads(ln) for ln in proxy.stdout().splitlines() if ln.strip()]
    assert any(e.get("path") == "/before-term" for e in lines), "access log not flushed at exit"


def test_operational_logs_are_json_lines(proxy, upstream):
    with proxy.conn() as c:
        c.request("GET", "/x")
        assert c.read_response().status == 200
    proxy.signal(signal.SIGTERM)
    assert proxy.wait_exit(5) == 0
    err = proxy.stderr()
    bad = []
    for ln in err.splitlines():
        if not ln.strip():
            continue
        try:
            assert isinstance(json.loads(ln), dict)
        except Exception:
            bad.append(ln)
    assert not bad, f"stderr lines that are not JSON objects: {bad[:5]}"


def test_sigint_exits_zero(proxy, upstream):
    with proxy.conn() as c:
        c.request("GET", "/before-int")
        assert c.read_response().status == 200
    proxy.signal(signal.SIGINT)
    assert proxy.wait_exit(5) == 0
