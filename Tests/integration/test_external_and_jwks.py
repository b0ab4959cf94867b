"""auth `external` (auth_request / ForwardAuth semantics, SPEC §4) and JWT keys from
`jwks_uri` (background fetch, rotation by unknown `kid`, min_refresh), through the binary."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


class Service:
    """A small HTTP service on 127.0.0.1 whose answers the test sets; records what it got."""

    def __init__(self, handler_fn):
        self.requests = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                service.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, headers, body = handler_fn(self)
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _auth_answer(request):
    token = request.headers.get("x-token")
    if token == "good":
        return 200, [("x-auth-request-user", "eve"), ("x-auth-request-email", "eve@example.com"),
                     ("x-tenant", "acme"), ("x-not-copied", "nope")], b""
    if token == "redirect":
        return 302, [("location", "https://login.example/?rd=" + request.headers.get("x-forwarded-uri", "")),
                     ("set-cookie", "csrf=1; HttpOnly")], b""
    if token == "forbidden":
        return 403, [("content-type", "text/plain")], b"not for you\n"
    if token == "boom":
        return 500, [], b""
    if token == "slow":
        time.sleep(1.0)
        return 200, [("x-auth-request-user", "slow")], b""
    return 401, [("www-authenticate", 'Bearer realm="svc"'), ("content-type", "text/plain")], b"who are you\n"


@pytest.fixture
def auth_service():
    service = Service(_auth_answer)
    yield service
    service.close()


def _external_proxy(proxy_factory, upstream, service, **external):
    settings = {"url": f"http://127.0.0.1:{service.port}/check?x=1", "timeout": "300ms",
                "headers_to_upstream": ["x-tenant"]}
    settings.update(external)
    routes = [{"name": "ext", "match": {"path_prefix": "/"}, "cluster": "app",
               "filters": [{"auth": {"external": settings}}]}]
    return proxy_factory(upstream=upstream, routes=routes)


def _get(p, path, headers):
    with p.conn() as c:
        c.request("GET", path, headers=headers, host="public.example")
        return c.read_response()


def test_external_allow_copies_headers_and_identity(proxy_factory, upstream, auth_service):
    p = _external_proxy(proxy_factory, upstream, auth_service)
    r = _get(p, "/a/../b?q=1", [("x-token", "good"), ("x-tenant", "spoofed"), ("X-Auth-Request-User", "admin"),
                               ("x-not-copied", "client")])
    assert r.status == 200, r
    rec = upstream.find("/b?q=1")
    assert rec.header_all("x-tenant") == ["acme"]                 # replaced, not appended
    assert rec.header_all("x-auth-request-user") == ["eve"]
    assert rec.header_all("x-auth-request-email") == ["eve@example.com"]
    assert rec.header_all("x-not-copied") == ["client"]           # only headers_to_upstream come from the service
    path, seen = auth_service.requests[-1]
    assert path == "/check?x=1"
    assert seen["x-forwarded-method"] == "GET"
    assert seen["x-forwarded-uri"] == "/b?q=1"                    # the normalized target
    assert seen["x-forwarded-host"] == "public.example"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-token"] == "good"                               # client headers go along
    assert "x-auth-request-user" not in seen                       # the spoof was stripped first
    assert p.wait_access_log(lambda e: e.get("identity") == "eve") is not None


@pytest.mark.parametrize("token,status", [("redirect", 302), ("forbidden", 403), ("nothing", 401)])
def test_external_denials_are_relayed(proxy_factory, upstream, auth_service, token, status):
    p = _external_proxy(proxy_factory, upstream, auth_service)
    r = _get(p, f"/deny-{token}", [("x-token", token)])
    assert r.status == status, r
    if token == "redirect":
        assert r.header("location") == "https://login.example/?rd=/deny-redirect"
        assert r.header("set-cookie") == "csrf=1; HttpOnly"
    if token == "forbidden":
        assert r.body == b"not for you\n"
    if token == "nothing":
        assert r.header("www-authenticate") == 'Bearer realm="svc"'
        assert r.body == b"who are you\n"
    time.sleep(0.1)
    assert not [rec for rec in upstream.records if f"/deny-{token}" in rec.target], "a denied request reached the app"


@pytest.mark.parametrize("mode", ["deny", "allow"])
@pytest.mark.parametrize("failure", ["boom", "slow", "unreachable"])
def test_external_failures(proxy_factory, upstream, auth_service, mode, failure):
    service = auth_service
    if failure == "unreachable":
        service = Service(_auth_answer)
        service.close()                                           # nothing listens there now
    p = _external_proxy(proxy_factory, upstream, service, failure_mode=mode)
    r = _get(p, f"/fail-{failure}-{mode}", [("x-token", failure)])
    if mode == "deny":
        assert r.status == 503, r
        assert r.header("x-outrider-error") == "auth_unavailable"
        time.sleep(0.1)
        assert not [rec for rec in upstream.records if f"/fail-{failure}" in rec.target]
    else:
        assert r.status == 200, r
        assert upstream.find(f"/fail-{failure}-{mode}").header_all("x-auth-request-user") == []


def test_external_cache_ttl(proxy_factory, upstream, auth_service):
    p = _external_proxy(proxy_factory, upstream, auth_service, cache_ttl="2s")
    before = len(auth_service.requests)
    with p.conn() as c:                                            # one connection: one worker's cache
        for i in range(5):
            c.request("GET", "/cached", headers=[("x-token", "good"), ("authorization", "Bearer same")])
            assert c.read_response().status == 200
    assert len(auth_service.requests) - before == 1, "allowed answers within cache_ttl must not ask again"
    with p.conn() as c:                                            # other credentials: asked again
        c.request("GET", "/cached", headers=[("x-token", "good"), ("authorization", "Bearer other")])
        assert c.read_response().status == 200
    assert len(auth_service.requests) - before == 2


# --------------------------------------------------------------------------------------------
# jwks_uri

class JWKSServer:
    def __init__(self, document):
        self.document = document
        self.fetches = 0

        def answer(request):
            self.fetches += 1
            return 200, [("content-type", "application/json")], json.dumps(self.document).encode()

        self.service = Service(answer)
        self.url = f"http://127.0.0.1:{self.service.port}/.well-known/jwks.json"


def _public_jwk(private_key, kid):
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
    return jwk


def _token(private_key, kid, sub="carol"):
    now = int(time.time())
    return jwt.encode({"iss": "https://issuer.example", "aud": "app", "sub": sub, "exp": now + 600},
                      private_key, algorithm="RS256", headers={"kid": kid})


def test_jwks_uri_fetch_and_rotation(proxy_factory, upstream):
    first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = JWKSServer({"keys": [_public_jwk(first, "k1")]})
    routes = [{"name": "jwt", "match": {"path_prefix": "/"}, "cluster": "app",
               "filters": [{"auth": {"jwt": {"jwks_uri": keys.url, "issuer": "https://issuer.example",
                                             "audiences": ["app"], "algorithms": ["RS256"],
                                             "min_refresh": "1s", "jwks_refresh": "1h"}}}]}]
    p = proxy_factory(upstream=upstream, routes=routes)
    deadline = time.monotonic() + 5
    while keys.fetches == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert keys.fetches >= 1, "the JWKS was not fetched at start"
    time.sleep(0.1)
    r = _get(p, "/first", [("authorization", "Bearer " + _token(first, "k1"))])
    assert r.status == 200, r

    # The issuer rotates: a token with a kid the proxy has not seen triggers a refresh.
    keys.document = {"keys": [_public_jwk(first, "k1"), _public_jwk(rotated, "k2")]}
    fetches_before = keys.fetches
    rotated_token = _token(rotated, "k2", sub="dave")
    statuses = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        statuses.append(_get(p, "/rotated", [("authorization", "Bearer " + rotated_token)]).status)
        if statuses[-1] == 200:
            break
        time.sleep(0.05)
    assert statuses[-1] == 200, f"the rotated key was never picked up: {statuses}"
    assert upstream.find("/rotated").header_all("x-auth-request-user") == ["dave"]

    # Unknown kids in a burst: at most one refresh per min_refresh (1s).
    fetches_before = keys.fetches
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for i in range(30):
        assert _get(p, f"/unknown-{i}", [("authorization", "Bearer " + _token(stranger, f"nope-{i}"))]).status == 401
    time.sleep(0.3)
    assert keys.fetches - fetches_before <= 1, f"{keys.fetches - fetches_before} refreshes for a burst of unknown kids"
    keys.service.close()
