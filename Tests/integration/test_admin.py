"""The admin listener (SPEC §8): /live, /ready, /metrics (parsed with prometheus_client's
parser), /config, /clusters, POST /drain — and the counters the data path keeps."""
import json
import os
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

SPEC_FAMILIES = {
    "outrider_downstream_connections_active": "gauge",
    "outrider_downstream_connections": "counter",        # _total
    "outrider_requests": "counter",
    "outrider_request_duration_seconds": "histogram",
    "outrider_upstream_requests": "counter",
    "outrider_upstream_connect_failures": "counter",
    "outrider_retries": "counter",
    "outrider_retry_budget_exhausted": "counter",
    "outrider_auth_denied": "counter",
    "outrider_rate_limited": "counter",
    "outrider_endpoint_healthy": "gauge",
    "outrider_config_reloads": "counter",
    "outrider_build_info": "gauge",
}
KEY = "example-key-ci-bot-6f1d2c0a"


def _admin(p, path, method="GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{p.admin_port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def _families(p):
    status, headers, text = _admin(p, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(text)}, text


def _value(families, name, **labels):
    for sample in families[name].samples:
        if all(sample.labels.get(k) == v for k, v in labels.items()) and sample.name.endswith(("_total", name)):
            return sample.value
    return 0


KEYS_FILE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "config", "examples", "api-keys"))


@pytest.fixture
def admin_proxy(proxy_factory, upstream):
    routes = [{"name": "guarded", "match": {"path_prefix": "/g"}, "cluster": "app",
               "filters": [{"rate_limit": {"requests_per_second": 1, "burst": 2}},
                           {"auth": {"api_key": {"keys_file": KEYS_FILE}}}]},
              {"name": "open", "match": {"path_prefix": "/"}, "cluster": "app"}]
    return proxy_factory(upstream=upstream, routes=routes, top={"drain": {"delay": "1s", "timeout": "5s"}})


def test_live_ready_and_every_family_from_start(admin_proxy):
    p = admin_proxy
    assert _admin(p, "/live")[0] == 200
    assert _admin(p, "/ready")[0] == 200
    families, text = _families(p)
    for name, kind in SPEC_FAMILIES.items():
        assert name in families, f"{name} missing before any traffic"
        assert families[name].type == kind, (name, families[name].type)
    # HELP and TYPE lines precede samples for every family
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            assert f"# HELP {line.split()[2]} " in text
    assert _value(families, "outrider_build_info") == 1
    assert _admin(p, "/nope")[0] == 404
    assert _admin(p, "/metrics", method="DELETE")[0] == 405


def test_counters_follow_traffic(admin_proxy):
    p = admin_proxy
    for _ in range(3):
        with p.conn() as c:
            c.request("GET", "/open/x")
            assert c.read_response().status == 200
    with p.conn() as c:
        c.request("GET", "/g/1")                          # no key: 401 (1 token left after)
        assert c.read_response().status == 401
    with p.conn() as c:
        c.request("GET", "/g/2", headers=[("x-api-key", "wrong")])
        assert c.read_response().status == 401
    with p.conn() as c:
        c.request("GET", "/g/3", headers=[("x-api-key", KEY)])
        assert c.read_response().status == 429             # burst 2 spent
    with p.conn() as c:
        c.request("GET", "/nowhere-else")
        assert c.read_response().status == 200
    families, _ = _families(p)
    assert _value(families, "outrider_requests", route="open", code="200") == 4
    assert _value(families, "outrider_requests", route="guarded", code="401") == 2
    assert _value(families, "outrider_requests", route="guarded", code="429") == 1
    assert _value(families, "outrider_auth_denied", method="none", reason="missing_credentials") == 1
    assert _value(families, "outrider_auth_denied", method="api_key", reason="invalid_credentials") == 1
    assert _value(families, "outrider_rate_limited", route="guarded") == 1
    assert _value(families, "outrider_downstream_connections", listener="inbound") >= 7
    upstream_200 = _value(families, "outrider_upstream_requests", code="200")
    assert upstream_200 == 4
    count = [s for s in families["outrider_request_duration_seconds"].samples
             if s.name.endswith("_count") and s.labels.get("route") == "open"][0].value
    assert count == 4
    status, _, body = _admin(p, "/clusters")
    clusters = json.loads(body)["clusters"]
    endpoint = clusters[0]["endpoints"][0]
    assert set(endpoint) == {"address", "healthy", "ejected", "active_connections", "idle_connections", "requests"}
    assert endpoint["requests"] == 4 and endpoint["healthy"] is True


def test_config_redacts_and_drain(admin_proxy):
    p = admin_proxy
    status, headers, body = _admin(p, "/config")
    assert status == 200
    config = json.loads(body)
    assert KEY not in body, "an API key leaked into /config"
    assert config["listeners"][0]["name"] == "inbound"
    status, _, _ = _admin(p, "/drain", method="POST")
    assert status == 202
    assert _admin(p, "/ready")[0] == 503            # at once
    with p.conn() as c:                               # still accepting during drain.delay (1s)
        c.request("GET", "/during-delay")
        assert c.read_response().status == 200
    assert p.wait_exit(8) == 0
