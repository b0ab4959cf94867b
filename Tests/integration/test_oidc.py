"""auth `oidc` (SPEC §4): the oauth2-proxy style login flow against a real OpenID provider
(Authlib, `oidc_provider.py`) on loopback, driven by a scripted browser (httpx following the
redirects and posting the provider's login form)."""
from __future__ import annotations

import base64
import re
import ssl
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlparse

import httpx
import jwt
import pytest

from oidc_provider import USERS, Provider
from wire import free_port

CLIENT_ID = "outrider"
CLIENT_SECRET = "outrider-client-secret"
COOKIE_SECRET = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture
def provider():
    p = Provider()
    yield p
    p.close()


class Env:
    """A provider and an Outrider whose route `/` has an `auth` filter with `oidc` in front of the
    recording upstream."""

    def __init__(self, proxy_factory, upstream, provider: Provider, methods=("client_secret_basic",), **oidc):
        self.provider = provider
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.redirect_url = self.base + "/oauth2/callback"
        provider.add_client(CLIENT_ID, CLIENT_SECRET, [self.redirect_url], methods)
        settings = {
            "issuer": provider.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_url": self.redirect_url,
            "cookie_secret": COOKIE_SECRET,
        }
        settings.update(oidc)
        extra = settings.pop("auth_extra", {})
        auth = {"realm": "app", "oidc": settings, **extra}
        routes = [{"name": "app", "match": {"path_prefix": "/"}, "cluster": "app", "filters": [{"auth": auth}]}]
        self.proxy = proxy_factory(upstream=upstream, routes=routes, listener={"address": f"127.0.0.1:{self.port}"},
                                   wait=False)
        self.proxy.port = self.port
        self.proxy.wait_ready()
        self.upstream = upstream
        self.wait_discovered()

    def wait_discovered(self, timeout=10.0):
        """Until the proxy has the provider's metadata: /oauth2/start redirects instead of 503."""
        deadline = time.monotonic() + timeout
        while True:
            r = httpx.get(self.base + "/oauth2/start", timeout=5)
            if r.status_code == 302:
                return
            assert r.status_code == 503, (r.status_code, r.text)
            assert time.monotonic() < deadline, "the proxy never loaded the provider's discovery document"
            time.sleep(0.1)

    def browser(self, verify=True) -> "Browser":
        return Browser(self, verify)


class Browser:
    """A browser: a cookie jar, Accept: text/html, redirects followed one hop at a time."""

    def __init__(self, env: Env, verify=True):
        self.env = env
        self.client = httpx.Client(timeout=10, headers={"accept": "text/html,application/xhtml+xml"}, verify=verify)

    def close(self):
        self.client.close()

    def get(self, url, headers=None, follow=True):
        """The final response and every hop [(url, response)]."""
        hops = []
        r = self.client.get(url, headers=headers)
        hops.append((str(r.request.url), r))
        while follow and r.status_code in (301, 302, 303, 307) and len(hops) < 10:
            r = self.client.get(httpx.URL(str(r.request.url)).join(r.headers["location"]), headers=headers)
            hops.append((str(r.request.url), r))
        return r, hops

    def submit_login(self, form_page: httpx.Response, user: str, password: str):
        """Posts the provider's login form, then follows the redirects back through the proxy."""
        m = re.search(r'<form method="post" action="([^"]+)"', form_page.text)
        assert m, f"no login form: {form_page.text[:300]}"
        action = httpx.URL(str(form_page.request.url)).join(m.group(1).replace("&amp;", "&"))
        r = self.client.post(action, data={"username": user, "password": password})
        hops = [(str(action), r)]
        while r.status_code in (301, 302, 303) and len(hops) < 10:
            r = self.client.get(httpx.URL(str(r.request.url)).join(r.headers["location"]))
            hops.append((str(r.request.url), r))
        return r, hops

    def login(self, path="/app/page?x=1", user="alice"):
        page, hops = self.get(self.env.base + path)
        assert page.status_code == 200 and "Sign in" in page.text, (page.status_code, page.text[:200])
        assert hops[0][1].status_code == 302
        return self.submit_login(page, user, USERS[user].password)

    def cookie(self, name):
        for c in self.client.cookies.jar:
            if c.name == name:
                return c.value
        return None

    def set_cookie(self, name, value):
        for c in list(self.client.cookies.jar):
            if c.name == name:
                self.client.cookies.jar.clear(c.domain, c.path, c.name)
        self.client.cookies.set(name, value, domain="127.0.0.1", path="/")


def app_saw(response: httpx.Response) -> dict:
    """The recording upstream's JSON echo: the headers the app received (lower-case names)."""
    echo = response.json()
    return {k.lower(): v for k, v in echo["headers"]} if isinstance(echo["headers"], list) else {
        k.lower(): v for k, v in echo["headers"].items()}


def set_cookie_lines(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


# --------------------------------------------------------------------------------------------
# The provider by itself: if these fail, look at the harness, not at the proxy.


def test_harness_provider_alone(provider):
    """Discovery, JWKS, login form, code with PKCE, token exchange (basic and post), refresh,
    refresh-token rotation, PKCE enforced — plain httpx, no proxy."""
    redirect = "http://127.0.0.1:1/cb"
    provider.add_client("c1", "s1", [redirect], ["client_secret_basic", "client_secret_post"])
    with httpx.Client(timeout=10) as c:
        doc = c.get(provider.issuer + "/.well-known/openid-configuration").json()
        assert doc["issuer"] == provider.issuer
        keys = c.get(doc["jwks_uri"]).json()["keys"]
        assert keys and keys[0]["kty"] == "RSA" and "d" not in keys[0]

        nonces = iter(range(100))

        def authorize(verifier):
            nonce = f"n-{next(nonces)}"
            challenge = base64.urlsafe_b64encode(__import__("hashlib").sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            q = {"response_type": "code", "client_id": "c1", "redirect_uri": redirect, "scope": "openid email",
                 "state": "st", "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"}
            form = c.get(doc["authorization_endpoint"] + "?" + urlencode(q))
            assert form.status_code == 200 and "<form" in form.text
            bad = c.post(doc["authorization_endpoint"] + "?" + urlencode(q), data={"username": "alice", "password": "x"})
            assert bad.status_code == 401
            r = c.post(doc["authorization_endpoint"] + "?" + urlencode(q), data={"username": "alice", "password": "alice-pw"})
            assert r.status_code == 302, r.text
            loc = urlparse(r.headers["location"])
            params = parse_qs(loc.query)
            assert params["state"] == ["st"]
            return params["code"][0]

        verifier = "v" * 50
        code = authorize(verifier)
        # PKCE is required: the wrong verifier is refused.
        r = c.post(doc["token_endpoint"], data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
                                                 "code_verifier": "w" * 50}, auth=("c1", "s1"))
        assert r.status_code == 400, r.text
        code = authorize(verifier)
        r = c.post(doc["token_endpoint"], data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
                                                 "code_verifier": verifier}, auth=("c1", "s1"))
        assert r.status_code == 200, r.text
        tokens = r.json()
        jwk = jwt.PyJWK(keys[0])
        claims = jwt.decode(tokens["id_token"], jwk.key, algorithms=["RS256"], audience="c1", issuer=provider.issuer)
        assert claims["sub"] == "alice-sub-1" and claims["email"] == "alice@example.com" and claims["nonce"] == "n-1"
        assert claims["groups"] == ["dev", "ops"]
        # A code works once.
        r2 = c.post(doc["token_endpoint"], data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
                                                  "code_verifier": verifier}, auth=("c1", "s1"))
        assert r2.status_code == 400
        # client_secret_post, and a refresh that rotates the refresh token.
        r = c.post(doc["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                                 "client_id": "c1", "client_secret": "s1"})
        assert r.status_code == 200, r.text
        assert r.json()["access_token"] != tokens["access_token"]
        r = c.post(doc["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                   auth=("c1", "s1"))
        assert r.status_code == 400, "a used refresh token must be refused"
        # The wrong secret is refused.
        code = authorize(verifier)
        r = c.post(doc["token_endpoint"], data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
                                                 "code_verifier": verifier}, auth=("c1", "nope"))
        assert r.status_code == 401
    assert [e[2] for e in provider.token_events()] == ["client_secret_basic", "client_secret_basic",
                                                        "client_secret_basic", "client_secret_post",
                                                        "client_secret_basic", "client_secret_basic"]
