"""Header rewriting filter (SPEC §6): request and response set / add / remove, request-time
templates, and `validate` errors for unknown template variables."""

from __future__ import annotations

import re
import subprocess
import textwrap

import pytest

from jwt_helper import (ALL_ALGS, API_KEY_PLAIN, AUDIENCE, BASIC_BCRYPT, EXAMPLES, ISSUER, basic, mint,
                        write_jwks)
from wire import free_port

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _routes(*filters):
    return [{"name": "r", "match": {"path_prefix": "/"}, "cluster": "app", "filters": list(filters)}]


def _one(p, upstream, target, headers=(), host="svc.example", method="GET"):
    n = len(upstream.complete)
    with p.conn() as c:
        local_port = c.sock.getsockname()[1]
        c.request(method, target, headers=list(headers), host=host)
        r = c.read_response(method=method)
    rec = upstream.next_after(n)
    return r, rec, local_port


def test_request_set_add_remove(proxy_factory, upstream):
    hf = {"headers": {"request": {
        "set": {"x-env": "prod", "X-Static": "cost $5 {x} $"},
        "add": {"x-tag": "${client_ip}", "x-new": "added"},
        "remove": ["x-debug", "X-Secret"],
    }}}
    p = proxy_factory(upstream=upstream, routes=_routes(hf))
    r, rec, _ = _one(p, upstream, "/req", [
        ("X-Env", "dev"), ("x-env", "dev2"), ("X-ENV", "dev3"),
        ("x-tag", "client-tag"),
        ("X-Debug", "1"), ("x-debug", "2"), ("X-SECRET", "s"),
        ("x-static", "client"),
        ("x-other", "kept"),
    ])
    assert r.status == 200, r
    head = rec.raw_head.decode("latin-1")
    assert rec.header_all("x-env") == ["prod"], head
    assert rec.header_all("x-static") == ["cost $5 {x} $"], head
    assert rec.header_all("x-tag") == ["client-tag", "127.0.0.1"], head
    assert rec.header_all("x-new") == ["added"], head
    assert "x-debug" not in rec.header_names() and "x-secret" not in rec.header_names(), head
    assert rec.header_all("x-other") == ["kept"], head
    # without client copies: set and add each give exactly one value
    r, rec, _ = _one(p, upstream, "/req2")
    assert rec.header_all("x-env") == ["prod"] and rec.header_all("x-tag") == ["127.0.0.1"], rec.headers


def test_response_set_add_remove(proxy_factory, upstream):
    hf = {"headers": {"response": {
        "set": {"x-content-type-options": "nosniff", "X-Upstream-Conn": "replaced"},
        "add": {"x-multi": "added", "x-extra": "e"},
        "remove": ["X-Upstream-Seq", "x-not-there"],
    }}}
    p = proxy_factory(upstream=upstream, routes=_routes(hf))
    for target in ("/cookies", "/chunked", "/status/404", "/status/204"):
        with p.conn() as c:
            c.request("GET", target)
            r = c.read_response()
        assert r.header_all("x-content-type-options") == ["nosniff"], (target, r.headers)
        assert r.header_all("x-upstream-conn") == ["replaced"], (target, r.headers)
        assert "x-upstream-seq" not in r.header_names(), (target, r.headers)
        assert r.header_all("x-extra") == ["e"], (target, r.headers)
        if target == "/cookies":
            assert r.header_all("x-multi") == ["one", "two", "added"], r.headers
            assert r.header_all("set-cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"], r.headers
            assert r.body == b"cookies\n"
        if target == "/chunked":
            assert r.body == b"hello chunked world\n" and dict(r.trailers).get("x-trailer") == "done", r


def test_templates_rendered(proxy_factory, upstream):
    names = ["client_ip", "client_port", "request_id", "host", "scheme", "method", "path"]
    req_set = {f"x-t-{n.replace('_', '-')}": "${" + n + "}" for n in names}
    req_set["x-t-combo"] = "${method} ${path} from ${client_ip}:${client_port} $x ${scheme}://${host}"
    resp_set = {"x-r-rid": "${request_id}", "x-r-path": "${path}", "x-r-method": "${method}"}
    p = proxy_factory(upstream=upstream, routes=_routes({"headers": {"request": {"set": req_set},
                                                                    "response": {"set": resp_set}}}))
    r, rec, port = _one(p, upstream, "/a/./b//c/../d", host="svc.example", method="DELETE")
    assert r.status == 200, r
    assert rec.target == "/a/b/d", rec.target
    h = {n: rec.header_all(f"x-t-{n.replace('_', '-')}") for n in names}
    rid = r.header_all("x-request-id")
    assert len(rid) == 1 and UUID4.match(rid[0]), r.headers
    assert h == {"client_ip": ["127.0.0.1"], "client_port": [str(port)], "request_id": rid, "host": ["svc.example"],
                 "scheme": ["http"], "method": ["DELETE"], "path": ["/a/b/d"]}, rec.raw_head.decode("latin-1")
    assert rec.header_all("x-request-id") == rid, rec.headers
    assert rec.header_all("x-t-combo") == [f"DELETE /a/b/d from 127.0.0.1:{port} $x http://svc.example"], rec.headers
    assert r.header_all("x-r-rid") == rid and r.header_all("x-r-path") == ["/a/b/d"], r.headers
    assert r.header_all("x-r-method") == ["DELETE"], r.headers
    # a client's (valid) x-request-id is what ${request_id} renders
    r, rec, _ = _one(p, upstream, "/rid", [("X-Request-Id", "client-rid-42")])
    assert rec.header_all("x-t-request-id") == ["client-rid-42"], rec.headers
    assert r.header_all("x-r-rid") == ["client-rid-42"] and r.header_all("x-request-id") == ["client-rid-42"], r.headers
    # a client's copy of a templated header is replaced
    r, rec, _ = _one(p, upstream, "/spoof", [("X-T-Client-Ip", "10.0.0.1"), ("x-t-path", "/admin")])
    assert rec.header_all("x-t-client-ip") == ["127.0.0.1"] and rec.header_all("x-t-path") == ["/spoof"], rec.headers


def test_identity_template_after_api_key(proxy_factory, upstream):
    auth = {"auth": {"realm": "app", "api_key": {"header": "x-api-key", "keys_file": str(EXAMPLES / "api-keys")},
                     "basic": {"htpasswd": str(EXAMPLES / "htpasswd")}}}
    hf = {"headers": {"request": {"set": {"x-who": "${identity}", "x-who-path": "${identity}@${path}"}},
                      "response": {"set": {"x-who": "${identity}"}}}}
    p = proxy_factory(upstream=upstream, routes=_routes(auth, hf))
    r, rec, _ = _one(p, upstream, "/who", [("x-api-key", API_KEY_PLAIN[1]), ("X-Who", "admin")])
    assert r.status == 200, r
    assert rec.header_all("x-who") == ["ci-bot"], rec.headers
    assert rec.header_all("x-who-path") == ["ci-bot@/who"], rec.headers
    assert r.header_all("x-who") == ["ci-bot"], r.headers
    # Basic with bcrypt: identity known after the off-loop check resumes the chain
    r, rec, _ = _one(p, upstream, "/who-basic", [("Authorization", basic(*BASIC_BCRYPT)), ("X-Who", "admin")])
    assert r.status == 200, r
    assert rec.header_all("x-who") == ["alice"], rec.headers
    assert r.header_all("x-who") == ["alice"], r.headers


def _auth_jwt_and_key(tmp_path):
    return {"auth": {"realm": "app", "api_key": {"header": "x-api-key", "keys_file": str(EXAMPLES / "api-keys")},
                     "jwt": {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": write_jwks(tmp_path / "jwks.json"),
                             "algorithms": ["RS256", "ES256"], "claims_to_headers": {"tenant": "x-tenant"}}}}


def test_request_set_replaces_header_added_by_auth(proxy_factory, upstream, tmp_path):
    """headers after auth: `set` on a header the auth filter added replaces it — the app gets one value."""
    hf = {"headers": {"request": {"set": {"x-auth-request-user": "user:${identity}", "x-tenant": "t:${jwt.claim.tenant}"}}}}
    p = proxy_factory(upstream=upstream, routes=_routes(_auth_jwt_and_key(tmp_path), hf))
    r, rec, _ = _one(p, upstream, "/set-identity", [("x-api-key", API_KEY_PLAIN[1])])
    assert r.status == 200, r
    assert rec.header_all("x-auth-request-user") == ["user:ci-bot"], rec.raw_head.decode("latin-1")
    tok = mint("RS256", sub="carol", tenant="acme")
    r, rec, _ = _one(p, upstream, "/set-identity-jwt", [("Authorization", f"Bearer {tok}")])
    assert r.status == 200, r
    assert rec.header_all("x-auth-request-user") == ["user:carol"], rec.raw_head.decode("latin-1")
    assert rec.header_all("x-tenant") == ["t:acme"], rec.raw_head.decode("latin-1")


def test_request_remove_drops_header_added_by_auth(proxy_factory, upstream, tmp_path):
    """headers after auth: `remove` drops headers the auth filter added (identity, claims_to_headers)."""
    hf = {"headers": {"request": {"remove": ["x-auth-request-email", "x-tenant"]}}}
    p = proxy_factory(upstream=upstream, routes=_routes(_auth_jwt_and_key(tmp_path), hf))
    tok = mint("RS256", sub="carol", email="carol@example.com", tenant="acme")
    r, rec, _ = _one(p, upstream, "/remove-email", [("Authorization", f"Bearer {tok}")])
    assert r.status == 200, r
    assert rec.header_all("x-auth-request-user") == ["carol"], rec.raw_head.decode("latin-1")
    assert "x-auth-request-email" not in rec.header_names(), rec.raw_head.decode("latin-1")
    assert "x-tenant" not in rec.header_names(), rec.raw_head.decode("latin-1")


def test_jwt_claim_template(proxy_factory, upstream, tmp_path):
    auth = {"auth": {"realm": "app", "jwt": {
        "issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": write_jwks(tmp_path / "jwks.json"),
        "algorithms": ALL_ALGS, "identity_claim": "sub"}}}
    hf = {"headers": {"request": {"set": {"x-mail": "${jwt.claim.email}", "x-user": "${identity}",
                                          "x-tenant": "t=${jwt.claim.tenant}"}},
                      "response": {"add": {"x-mail": "${jwt.claim.email}"}}}}
    p = proxy_factory(upstream=upstream, routes=_routes(auth, hf))
    tok = mint("ES256", sub="carol", email="carol@example.com", tenant="acme")
    r, rec, _ = _one(p, upstream, "/claims", [("Authorization", f"Bearer {tok}"), ("X-Mail", "evil@x")])
    assert r.status == 200, r
    assert rec.header_all("x-mail") == ["carol@example.com"], rec.headers
    assert rec.header_all("x-user") == ["carol"], rec.headers
    assert rec.header_all("x-tenant") == ["t=acme"], rec.headers
    assert r.header_all("x-mail") == ["carol@example.com"], r.headers
    # a claim carrying CR LF cannot inject a header line
    tok = mint("RS256", sub="carol", email="x@y\r\nx-injected: 1")
    r, rec, _ = _one(p, upstream, "/claims-inject", [("Authorization", f"Bearer {tok}")])
    assert "x-injected" not in rec.header_names() and not rec.problems, rec.raw_head
    assert "x-injected" not in r.header_names(), r.headers


# ---------------------------------------------------------------------------------------------
# validate


BASE = """\
listeners:
  - name: l
    address: 127.0.0.1:{port}
    routes:
      - match: {{ path_prefix: / }}
        cluster: app
        filters:
          - headers:
              request:
                set:
                  x-ok: "${{client_ip}} ${{jwt.claim.email}}"
                  x-bad: {bad1}
              response:
                add:
                  x-bad2: {bad2}
clusters:
  - name: app
    endpoints: [127.0.0.1:1]
"""


def _validate(bin_path, path):
    return subprocess.run([bin_path, "validate", "--config", str(path)], capture_output=True, text=True,
                          timeout=10, stdin=subprocess.DEVNULL)


def _pos(text, needle):
    for i, ln in enumerate(text.splitlines(), 1):
        j = ln.find(needle)
        if j >= 0:
            return i, j + 1
    raise AssertionError(needle)


@pytest.mark.parametrize("bad1,bad2", [
    ('"${nope}"', '"${client_ip}"'),
    ('"x ${client_ip} ${Client_IP}"', '"${request_id}"'),
    ('"${client_ip"', '"${identity}"'),
    ('"${jwt.claim.}"', '"ok"'),
    ('"${env}"', '"ok"'),
    ('"${client_ip}"', '"${upstream_host}"'),
], ids=["unknown", "case", "unterminated", "empty-claim", "env-bare", "response-side"])
def test_validate_unknown_template_variable(outrider_bin, tmp_path, bad1, bad2):
    text = BASE.format(port=free_port(), bad1=bad1, bad2=bad2)
    path = tmp_path / "hdr.yaml"
    path.write_text(text)
    r = _validate(outrider_bin, path)
    assert r.returncode == 1, f"exit {r.returncode}: {r.stderr}"
    bad_value = bad1 if bad2 in ('"${client_ip}"', '"${request_id}"', '"${identity}"', '"ok"') else bad2
    line, col = _pos(text, bad_value)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(str(path) + ":")]
    want = re.compile(re.escape(str(path)) + rf":{line}:({col}|{col + 1}): \S")
    assert any(want.match(ln) for ln in lines), f"expected {path}:{line}:{col}: ...; got\n{r.stderr}"
    # the valid template line and the valid one on the other side are not reported
    ok_line, _ = _pos(text, "x-ok:")
    assert not any(ln.startswith(f"{path}:{ok_line}:") for ln in lines), r.stderr
    assert len(lines) == 1, r.stderr


def test_validate_reports_every_bad_template(outrider_bin, tmp_path):
    text = BASE.format(port=free_port(), bad1='"${nope1}"', bad2='"${nope2}"')
    path = tmp_path / "hdr2.yaml"
    path.write_text(text)
    r = _validate(outrider_bin, path)
    assert r.returncode == 1, r
    for needle in ('"${nope1}"', '"${nope2}"'):
        line, col = _pos(text, needle)
        assert re.search(re.escape(str(path)) + rf":{line}:({col}|{col + 1}): .*nope", r.stderr), (needle, r.stderr)


@pytest.mark.parametrize("snippet", [
    'set: { host: "x" }', 'remove: [content-length]', 'add: { transfer-encoding: chunked }',
    'set: { connection: close }', 'set: { "bad name": "x" }', 'set: { x-a: "a\\r\\nx-b: b" }',
])
def test_validate_refuses_managed_or_invalid_headers(outrider_bin, tmp_path, snippet):
    text = textwrap.dedent(f"""\
        listeners:
          - name: l
            address: 127.0.0.1:{free_port()}
            routes:
              - match: {{ path_prefix: / }}
                cluster: app
                filters:
                  - headers:
                      request: {{ {snippet} }}
        clusters:
          - name: app
            endpoints: [127.0.0.1:1]
        """)
    path = tmp_path / "m.yaml"
    path.write_text(text)
    r = _validate(outrider_bin, path)
    assert r.returncode == 1, f"{snippet}: exit {r.returncode} {r.stderr}"
    assert re.search(re.escape(str(path)) + r":9:\d+: ", r.stderr), r.stderr
