"""auth `oidc` (SPEC §4): the oauth2-proxy style login flow against a real OpenID provider
(Authlib, `oidc_provider.py`) on loopback, driven by a scripted browser (httpx following the
redirects and posting the provider's login form)."""
from __future__ import annotations

import base64
import re
import signal
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

    def __init__(self, proxy_factory, upstream, provider: Provider, methods=("client_secret_basic",), listener=None,
                 **oidc):
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
        self.proxy = proxy_factory(upstream=upstream, routes=routes,
                                   listener={"address": f"127.0.0.1:{self.port}", **(listener or {})}, wait=False)
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


# --------------------------------------------------------------------------------------------
# Login


def test_login_redirects_to_the_provider_and_back(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    page, hops = b.get(env.base + "/app/page?x=1&y=two")
    first = hops[0][1]
    assert first.status_code == 302
    assert "x-outrider-error" not in first.headers
    assert first.headers["cache-control"] == "no-store"
    loc = urlparse(first.headers["location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == provider.issuer + "/authorize"
    q = parse_qs(loc.query)
    assert q["response_type"] == ["code"] and q["client_id"] == [CLIENT_ID]
    assert q["redirect_uri"] == [env.redirect_url]
    assert q["scope"] == ["openid email profile"]
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
    assert len(q["state"][0]) >= 43 and len(q["nonce"][0]) >= 43 and q["state"] != q["nonce"]
    csrf = [c for c in set_cookie_lines(first) if c.startswith("_oauth2_proxy_csrf=")]
    assert len(csrf) == 1
    attrs = [a.strip().lower() for a in csrf[0].split(";")[1:]]
    assert "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs and "max-age=900" in attrs
    assert "secure" not in attrs, "plain HTTP on loopback: no Secure (SPEC §4)"
    # The state and the PKCE verifier are not readable from the cookie.
    assert q["state"][0] not in csrf[0] and q["nonce"][0] not in csrf[0]
    assert page.status_code == 200 and "Sign in" in page.text

    final, back = b.submit_login(page, "alice", "alice-pw")
    statuses = [r.status_code for _, r in back]
    assert statuses == [302, 302, 200], [(u, r.status_code) for u, r in back]
    callback = back[1][1]
    assert urlparse(back[1][0]).path == "/oauth2/callback"
    assert callback.headers["location"] == "/app/page?x=1&y=two"
    cookies = set_cookie_lines(callback)
    session = [c for c in cookies if c.startswith("_oauth2_proxy=")]
    assert len(session) == 1
    attrs = [a.strip().lower() for a in session[0].split(";")[1:]]
    assert "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs
    assert f"max-age={168 * 3600}" in attrs
    assert any(c.startswith("_oauth2_proxy_csrf=;") and "Max-Age=0" in c for c in cookies), cookies
    # The app saw who it is, and not the session cookie.
    assert final.status_code == 200
    saw = app_saw(final)
    assert saw["x-auth-request-user"] == "alice@example.com"
    assert saw["x-auth-request-email"] == "alice@example.com"
    assert saw["x-auth-request-groups"] == "dev,ops"
    assert saw["x-auth-request-preferred-username"] == "alice"
    assert "_oauth2_proxy" not in saw.get("cookie", "")
    assert "authorization" not in saw and "x-auth-request-access-token" not in saw
    assert [e[1:] for e in provider.token_events()] == [("authorization_code", "client_secret_basic")]
    b.close()


def test_session_is_reused_without_the_provider(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    final, _ = b.login()
    assert final.status_code == 200
    logins = len(provider.token_events())
    for i in range(5):
        r, hops = b.get(env.base + f"/again/{i}", headers={"x-auth-request-user": "mallory", "X_Auth_Request_Email": "m@evil"})
        assert len(hops) == 1 and r.status_code == 200
        saw = app_saw(r)
        assert saw["x-auth-request-user"] == "alice@example.com"
        assert saw["x-auth-request-email"] == "alice@example.com"
        assert "x_auth_request_email" not in saw
    assert len(provider.token_events()) == logins
    # Other cookies reach the app; ours do not.
    r = b.client.get(env.base + "/with-cookies", headers={"cookie": f"a=1; _oauth2_proxy={b.cookie('_oauth2_proxy')}; b=2"})
    assert r.status_code == 200
    assert app_saw(r)["cookie"] == "a=1; b=2"
    b.close()


def test_anonymous_paths_and_other_methods_next_to_oidc(proxy_factory, upstream, provider, tmp_path):
    """allow_anonymous skips the login (the proxy's cookies are still not forwarded); an API key
    next to oidc is accepted as before and is no reason for a redirect."""
    keys = tmp_path / "keys"
    keys.write_text("ci:ci-key-123456\n")
    env = Env(proxy_factory, upstream, provider, auth_extra={
        "allow_anonymous": [{"path_prefix": "/healthz"}],
        "api_key": {"header": "x-api-key", "keys_file": str(keys)}})
    r = httpx.get(env.base + "/healthz", headers={"accept": "text/html", "cookie": "_oauth2_proxy_0=abc; _oauth2_proxy_csrf=x; k=v"})
    assert r.status_code == 200
    saw = app_saw(r)
    assert saw["cookie"] == "k=v" and "x-auth-request-user" not in saw
    r = httpx.get(env.base + "/api", headers={"accept": "text/html", "x-api-key": "ci-key-123456"})
    assert r.status_code == 200 and app_saw(r)["x-auth-request-user"] == "ci"
    r = httpx.get(env.base + "/api", headers={"accept": "application/json"})
    assert r.status_code == 401
    assert r.headers.get_list("www-authenticate") == ['Bearer realm="app"', 'ApiKey realm="app", header="x-api-key"']


def test_api_requests_get_401_not_a_redirect(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider)
    r = httpx.get(env.base + "/api/x", headers={"accept": "application/json"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="app"'
    assert r.headers["x-outrider-error"] == "unauthenticated"
    assert httpx.get(env.base + "/api/x").status_code == 401  # no Accept at all
    # A POST from a browser cannot be replayed after a login: 401 too.
    assert httpx.post(env.base + "/form", headers={"accept": "text/html"}, content=b"x=1").status_code == 401
    assert upstream.complete == []


def test_client_secret_post(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider, methods=("client_secret_post",), token_endpoint_auth="post")
    b = env.browser()
    final, _ = b.login(path="/p")
    assert final.status_code == 200 and app_saw(final)["x-auth-request-user"] == "alice@example.com"
    assert [e[1:] for e in provider.token_events()] == [("authorization_code", "client_secret_post")]
    b.close()


def test_wrong_client_auth_method_fails_the_login(proxy_factory, upstream, provider):
    """The provider only takes client_secret_post; the proxy sends basic: the login fails
    with 403 and no session."""
    env = Env(proxy_factory, upstream, provider, methods=("client_secret_post",))
    b = env.browser()
    final, hops = b.login(path="/p")
    assert final.status_code == 403, [(u, r.status_code) for u, r in hops]
    assert "token endpoint refused" in final.text
    assert b.cookie("_oauth2_proxy") is None
    b.close()


def test_user_without_email_is_identified_by_sub(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    final, _ = b.login(user="bob")
    saw = app_saw(final)
    assert saw["x-auth-request-user"] == "bob-sub-2"
    assert "x-auth-request-email" not in saw and "x-auth-request-groups" not in saw
    b.close()


# --------------------------------------------------------------------------------------------
# Attacks


def test_unverified_email_cannot_log_in_as_its_owner(proxy_factory, upstream, provider):
    """A user whose provider reports email_verified: false for alice's address is refused: the
    app must never see x-auth-request-user: alice@example.com for him (oauth2-proxy refuses too)."""
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    final, hops = b.login(user="mallory")
    assert final.status_code == 403, (final.status_code, final.text[:200])
    assert not [r for r in upstream.records if b"alice@example.com" in r.raw_head], "the app saw the claimed email"
    assert b.cookie("_oauth2_proxy") is None and b.cookie("_oauth2_proxy_0") is None
    b.close()
    # alice herself, verified, still gets in
    b = env.browser()
    final, _ = b.login(user="alice")
    assert app_saw(final)["x-auth-request-user"] == "alice@example.com"
    b.close()


def test_session_of_one_client_is_not_accepted_by_another(proxy_factory, upstream, provider):
    """Two oidc routes with different client_ids share one cookie_secret (one Kubernetes Secret):
    a session made for client B must not open route A."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    provider.add_client("client-a", "secret-a", [base + "/oauth2/callback"], ("client_secret_basic",))
    provider.add_client("client-b", "secret-b", [base + "/b/oauth2/callback"], ("client_secret_basic",))
    def oidc(client, secret, callback):
        return {"auth": {"realm": "app", "oidc": {"issuer": provider.issuer, "client_id": client, "client_secret": secret,
                                                   "redirect_url": base + callback, "cookie_secret": COOKIE_SECRET}}}
    routes = [
        {"name": "b", "match": {"path_prefix": "/b"}, "cluster": "app", "filters": [oidc("client-b", "secret-b", "/b/oauth2/callback")]},
        {"name": "a", "match": {"path_prefix": "/"}, "cluster": "app", "filters": [oidc("client-a", "secret-a", "/oauth2/callback")]},
    ]
    p = proxy_factory(upstream=upstream, routes=routes, listener={"address": f"127.0.0.1:{port}"}, wait=False)
    p.port = port
    p.wait_ready()
    deadline = time.monotonic() + 10
    while httpx.get(base + "/b/x", headers={"accept": "text/html"}, timeout=5).status_code != 302:
        assert time.monotonic() < deadline, "discovery never loaded"
        time.sleep(0.1)
    client = httpx.Client(timeout=10, headers={"accept": "text/html"})
    r = client.get(base + "/b/page")
    hops = 0
    while r.status_code in (301, 302, 303) and hops < 10:
        r = client.get(httpx.URL(str(r.request.url)).join(r.headers["location"]))
        hops += 1
    m = re.search(r'<form method="post" action="([^"]+)"', r.text)
    assert m, r.text[:300]
    r = client.post(httpx.URL(str(r.request.url)).join(m.group(1).replace("&amp;", "&")),
                    data={"username": "alice", "password": USERS["alice"].password})
    while r.status_code in (301, 302, 303) and hops < 20:
        r = client.get(httpx.URL(str(r.request.url)).join(r.headers["location"]))
        hops += 1
    assert r.status_code == 200 and app_saw(r)["x-auth-request-user"] == "alice@example.com", (r.status_code, r.text[:200])
    # the same browser, with client B's session cookie, on route A: a new login, not a session
    r = client.get(base + "/a-page", follow_redirects=False)
    assert r.status_code == 302 and "client_id=client-a" in r.headers["location"], (r.status_code, r.headers)
    api = client.get(base + "/a-page", headers={"accept": "application/json"}, follow_redirects=False)
    assert api.status_code == 401
    client.close()


def test_tampered_cookie_is_refused(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    b.login()
    good = b.cookie("_oauth2_proxy")
    assert good
    for position in (0, 5, len(good) // 2, len(good) - 3, len(good) - 1):
        flipped = good[:position] + ("A" if good[position] != "A" else "B") + good[position + 1:]
        r = httpx.get(env.base + "/x", headers={"cookie": f"_oauth2_proxy={flipped}", "accept": "application/json"})
        assert r.status_code == 401, position
        r = httpx.get(env.base + "/x", headers={"cookie": f"_oauth2_proxy={flipped}", "accept": "text/html"})
        assert r.status_code == 302 and urlparse(r.headers["location"]).path == "/authorize"
    for junk in ("", "x", "%%%", good[:20], good + "AAAA", "A" * 5000):
        r = httpx.get(env.base + "/x", headers={"cookie": f"_oauth2_proxy={junk}"})
        assert r.status_code == 401
    # The CSRF cookie's sealed value is no session (the cookie name is authenticated data).
    page, hops = b.get(env.base + "/y", follow=False)
    csrf = b.cookie("_oauth2_proxy_csrf")
    r = httpx.get(env.base + "/x", headers={"cookie": f"_oauth2_proxy={csrf}"})
    assert r.status_code == 401
    # The good cookie still works: nothing was poisoned.
    r = httpx.get(env.base + "/x", headers={"cookie": f"_oauth2_proxy={good}"})
    assert r.status_code == 200
    assert app_saw(r)["x-auth-request-user"] == "alice@example.com"
    b.close()


def test_cookie_sealed_with_another_secret_is_refused(proxy_factory, upstream, provider, tmp_path):
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    b.login()
    good = b.cookie("_oauth2_proxy")
    other = Env(proxy_factory, upstream, Provider(), cookie_secret=base64.b64encode(bytes(range(1, 33))).decode())
    r = httpx.get(other.base + "/x", headers={"cookie": f"_oauth2_proxy={good}"})
    assert r.status_code == 401
    other.provider.close()
    b.close()


def test_replayed_state_is_refused(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    page, _ = b.get(env.base + "/start-here")
    csrf = b.cookie("_oauth2_proxy_csrf")
    m = re.search(r'action="([^"]+)"', page.text)
    action = httpx.URL(str(page.request.url)).join(m.group(1).replace("&amp;", "&"))
    r = b.client.post(action, data={"username": "alice", "password": "alice-pw"})
    assert r.status_code == 302
    callback = r.headers["location"]
    assert callback.startswith(env.redirect_url + "?")
    first = b.client.get(callback)
    assert first.status_code == 302 and first.headers["location"] == "/start-here"
    assert len(provider.token_events("authorization_code")) == 1
    # The same callback again, with the CSRF cookie the browser had: refused before the provider hears of it.
    replay = httpx.get(callback, headers={"cookie": f"_oauth2_proxy_csrf={csrf}"})
    assert replay.status_code == 403, replay.text
    assert "replayed" in replay.text
    assert "_oauth2_proxy=" not in " ".join(set_cookie_lines(replay)).replace("_oauth2_proxy_csrf=", "")
    assert len(provider.token_events("authorization_code")) == 1
    b.close()


def test_callback_state_must_match_the_login_cookie(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    page, hops = b.get(env.base + "/p")
    state = parse_qs(urlparse(hops[0][1].headers["location"]).query)["state"][0]
    csrf = b.cookie("_oauth2_proxy_csrf")
    # Wrong state with the right cookie; right state without the cookie; another browser's cookie.
    r = httpx.get(env.redirect_url + "?code=abc&state=" + state[:-2] + "xx", headers={"cookie": f"_oauth2_proxy_csrf={csrf}"})
    assert r.status_code == 403 and "state does not match" in r.text
    r = httpx.get(env.redirect_url + "?code=abc&state=" + state)
    assert r.status_code == 403 and "login cookie" in r.text
    other = env.browser()
    other.get(env.base + "/q", follow=False)
    r = httpx.get(env.redirect_url + "?code=abc&state=" + state,
                  headers={"cookie": f"_oauth2_proxy_csrf={other.cookie('_oauth2_proxy_csrf')}"})
    assert r.status_code == 403
    # A provider error is shown, not followed.
    r = httpx.get(env.redirect_url + "?error=access_denied&state=" + state, headers={"cookie": f"_oauth2_proxy_csrf={csrf}"})
    assert r.status_code == 403 and "access_denied" in r.text
    assert provider.token_events() == []
    b.close()
    other.close()


@pytest.mark.parametrize("rd", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "\\\\evil.example",
                                "/\t/evil.example", "%2F%2Fevil.example", "/\r\nlocation: https://evil.example",
                                "evil.example", "javascript:alert(1)", "http:evil.example", "/\u00e9vil"])
def test_open_redirects_are_refused(proxy_factory, upstream, provider, rd):
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    page, hops = b.get(env.base + "/oauth2/start?rd=" + quote(rd, safe=""))
    assert hops[0][1].status_code == 302
    final, back = b.submit_login(page, "alice", "alice-pw")
    assert back[1][1].headers["location"] == "/", rd
    assert final.status_code == 200
    r = b.client.get(env.base + "/oauth2/sign_out?rd=" + quote(rd, safe=""))
    assert r.status_code == 302 and r.headers["location"] == "/"
    b.close()


def test_start_with_a_relative_rd(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    page, _ = b.get(env.base + "/oauth2/start?rd=" + quote("/deep/link?a=1&b=%2F", safe=""))
    final, back = b.submit_login(page, "alice", "alice-pw")
    assert back[1][1].headers["location"] == "/deep/link?a=1&b=%2F"
    assert final.status_code == 200
    b.close()


# --------------------------------------------------------------------------------------------
# Session lifetime


def test_refresh_with_cookie_refresh(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider, cookie_refresh="2s")
    b = env.browser()
    b.login()
    first = b.cookie("_oauth2_proxy")
    time.sleep(2.3)
    r, _ = b.get(env.base + "/after")
    assert r.status_code == 200 and app_saw(r)["x-auth-request-user"] == "alice@example.com"
    assert [e[1:] for e in provider.token_events("refresh_token")] == [("refresh_token", "client_secret_basic")]
    assert any(c.startswith("_oauth2_proxy=") for c in set_cookie_lines(r))
    second = b.cookie("_oauth2_proxy")
    assert second and second != first
    # The refreshed session carries the new refresh token: the next refresh works too.
    time.sleep(2.3)
    r, _ = b.get(env.base + "/later")
    assert r.status_code == 200
    assert len(provider.token_events("refresh_token")) == 2
    assert b.cookie("_oauth2_proxy") != second
    # No refresh within cookie_refresh.
    r, _ = b.get(env.base + "/soon")
    assert r.status_code == 200 and not set_cookie_lines(r)
    assert len(provider.token_events("refresh_token")) == 2
    b.close()


def test_refresh_before_the_tokens_expire(proxy_factory, upstream, provider):
    # Token times are whole seconds: 8 s tokens are refreshed in their last 2 s (a quarter).
    provider.access_token_lifetime = 8
    provider.id_token_lifetime = 8
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    b.login()
    r, _ = b.get(env.base + "/fresh")
    assert r.status_code == 200 and not provider.token_events("refresh_token")
    time.sleep(6.5)   # within a quarter of the lifetime of the expiry
    r, _ = b.get(env.base + "/near-expiry")
    assert r.status_code == 200
    assert len(provider.token_events("refresh_token")) == 1
    time.sleep(2.5)   # past the first tokens' expiry: the refreshed session is still good
    r, hops = b.get(env.base + "/past-first-expiry")
    assert len(hops) == 1 and r.status_code == 200
    b.close()


def test_refused_refresh_keeps_the_session_until_its_tokens_expire(proxy_factory, upstream, provider):
    provider.access_token_lifetime = 8
    provider.id_token_lifetime = 8
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    b.login()
    with provider.lock:
        for t in provider.refresh_tokens.values():
            t.revoked = True
    time.sleep(6.5)   # in the last quarter: a refresh is tried, and refused
    r, hops = b.get(env.base + "/refresh-refused")
    assert len(hops) == 1 and r.status_code == 200, "the tokens are still valid"
    assert len(provider.token_events("refresh_token")) == 1
    assert not set_cookie_lines(r)
    time.sleep(2.0)
    page, hops = b.get(env.base + "/expired-now")
    assert hops[0][1].status_code == 302 and "Sign in" in page.text
    b.close()


def test_expired_tokens_without_refresh_token_need_a_new_login(proxy_factory, upstream, provider):
    provider.access_token_lifetime = 2
    provider.id_token_lifetime = 2
    provider.issue_refresh_tokens = False
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    b.login()
    assert b.get(env.base + "/now")[0].status_code == 200
    time.sleep(2.5)
    api = httpx.get(env.base + "/api", headers={"cookie": f"_oauth2_proxy={b.cookie('_oauth2_proxy')}"})
    assert api.status_code == 401
    page, hops = b.get(env.base + "/later")
    assert hops[0][1].status_code == 302 and "Sign in" in page.text
    final, _ = b.submit_login(page, "alice", "alice-pw")
    assert final.status_code == 200
    assert len(provider.token_events("authorization_code")) == 2
    b.close()


def test_expired_cookie_needs_a_new_login(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider, cookie_expire="2s")
    b = env.browser()
    final, back = b.login()
    session = [c for c in set_cookie_lines(back[1][1]) if c.startswith("_oauth2_proxy=")][0]
    assert "Max-Age=2" in session
    old = b.cookie("_oauth2_proxy")
    time.sleep(2.5)
    # Even a client that keeps the cookie past Max-Age gets nowhere: the expiry is sealed inside.
    r = httpx.get(env.base + "/x", headers={"cookie": f"_oauth2_proxy={old}"})
    assert r.status_code == 401
    page, hops = b.get(env.base + "/y")
    assert hops[0][1].status_code == 302 and "Sign in" in page.text
    b.close()


def test_sign_out(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    b.login()
    old = b.cookie("_oauth2_proxy")
    r = b.client.get(env.base + "/oauth2/sign_out?rd=/bye")
    assert r.status_code == 302 and r.headers["location"] == "/bye"
    cleared = set_cookie_lines(r)
    assert any(c.startswith("_oauth2_proxy=;") and "Max-Age=0" in c for c in cleared), cleared
    assert b.cookie("_oauth2_proxy") is None
    page, hops = b.get(env.base + "/again")
    assert hops[0][1].status_code == 302 and "Sign in" in page.text
    # Cookie sessions are stateless: a copy kept elsewhere lasts until it expires (as in oauth2-proxy).
    assert httpx.get(env.base + "/x", headers={"cookie": f"_oauth2_proxy={old}"}).status_code == 200
    b.close()


def test_sign_out_at_the_provider(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider, end_session=True,
              post_logout_redirect_url="http://127.0.0.1:1/signed-out")
    b = env.browser()
    b.login()
    r = b.client.get(env.base + "/oauth2/sign_out")
    assert r.status_code == 302
    loc = urlparse(r.headers["location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == provider.issuer + "/logout"
    q = parse_qs(loc.query)
    assert q["client_id"] == [CLIENT_ID]
    assert q["post_logout_redirect_uri"] == ["http://127.0.0.1:1/signed-out"]
    hint = q["id_token_hint"][0]
    claims = jwt.decode(hint, options={"verify_signature": False})
    assert claims["sub"] == "alice-sub-1" and claims["aud"] in (CLIENT_ID, [CLIENT_ID])
    r2 = b.client.get(r.headers["location"])
    assert r2.status_code == 302 and r2.headers["location"] == "http://127.0.0.1:1/signed-out"
    assert b.cookie("_oauth2_proxy") is None
    b.close()


# --------------------------------------------------------------------------------------------
# Endpoints for other proxies and the app


def test_oauth2_auth_for_auth_request(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider)
    r = httpx.get(env.base + "/oauth2/auth", headers={"accept": "text/html"})
    assert r.status_code == 401, "never a redirect: nginx auth_request wants 202 or 401"
    assert r.headers["www-authenticate"] == 'Bearer realm="app"'
    assert r.headers["x-outrider-error"] == "unauthenticated"
    b = env.browser()
    b.login()
    r = b.client.get(env.base + "/oauth2/auth")
    assert r.status_code == 202
    assert r.headers["x-auth-request-user"] == "alice@example.com"
    assert r.headers["x-auth-request-email"] == "alice@example.com"
    assert r.headers["x-auth-request-groups"] == "dev,ops"
    assert "x-outrider-error" not in r.headers
    # A bearer ID token from the provider too.
    token = provider.mint_id_token(USERS["bob"], CLIENT_ID)
    r = httpx.get(env.base + "/oauth2/auth", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 202 and r.headers["x-auth-request-user"] == "bob-sub-2"
    r = httpx.get(env.base + "/oauth2/auth", headers={"authorization": f"Bearer {token[:-4]}AAAA"})
    assert r.status_code == 401
    assert not [r for r in upstream.complete if r.path.startswith("/oauth2")], "/oauth2/* is answered by the proxy"
    b.close()


def test_userinfo(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider)
    assert httpx.get(env.base + "/oauth2/userinfo").status_code == 401
    b = env.browser()
    b.login()
    r = b.client.get(env.base + "/oauth2/userinfo")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {"user": "alice@example.com", "email": "alice@example.com", "groups": ["dev", "ops"],
                        "preferredUsername": "alice"}
    b.close()


def test_bearer_tokens_for_api_clients(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider, extra_audiences=["api"])
    alice = USERS["alice"]
    ok = provider.mint_id_token(alice, CLIENT_ID)
    r = httpx.get(env.base + "/api", headers={"authorization": f"Bearer {ok}", "accept": "application/json"})
    assert r.status_code == 200
    saw = app_saw(r)
    assert saw["x-auth-request-user"] == "alice@example.com" and saw["x-auth-request-groups"] == "dev,ops"
    assert saw["authorization"] == f"Bearer {ok}"
    assert httpx.get(env.base + "/api", headers={"authorization": "Bearer " + provider.mint_id_token(alice, "api")}).status_code == 200
    other_key = Provider()
    bad = {
        "wrong audience": provider.mint_id_token(alice, "someone-else"),
        "expired": provider.mint_id_token(alice, CLIENT_ID, lifetime=-120),
        "other issuer's key": other_key.mint_id_token(alice, CLIENT_ID, extra={"iss": provider.issuer}),
        "wrong issuer": provider.mint_id_token(alice, CLIENT_ID, extra={"iss": "http://127.0.0.1:1"}),
        "hs256 with the client secret": jwt.encode({"iss": provider.issuer, "aud": CLIENT_ID, "sub": "x",
                                                    "exp": int(time.time()) + 60}, CLIENT_SECRET * 2, algorithm="HS256"),
        "alg none": jwt.encode({"iss": provider.issuer, "aud": CLIENT_ID, "sub": "x"}, None, algorithm="none") + "x",
        "email_verified false": provider.mint_id_token(alice, CLIENT_ID, extra={"email_verified": False}),
        "email_verified \"false\"": provider.mint_id_token(alice, CLIENT_ID, extra={"email_verified": "false"}),
        "no exp": provider.mint_id_token(alice, CLIENT_ID, extra={"exp": None}),
    }
    other_key.close()
    for why, token in bad.items():
        r = httpx.get(env.base + "/api", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 401, why
        assert r.headers["www-authenticate"] == 'Bearer realm="app", error="invalid_token"', why
    b = env.browser()
    r = b.client.get(env.base + "/page", headers={"authorization": f"Bearer {bad['expired']}"})
    assert r.status_code == 401, "a browser presenting a bad token is refused, not redirected"
    b.close()


def test_access_token_and_authorization_header_to_the_app(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider, pass_access_token=True, set_authorization_header=True)
    b = env.browser()
    final, _ = b.login()
    saw = app_saw(final)
    assert provider.tokens.get(saw["x-auth-request-access-token"]) is not None
    assert saw["authorization"].startswith("Bearer ")
    keys = httpx.get(provider.issuer + "/jwks").json()["keys"]
    claims = jwt.decode(saw["authorization"][7:], jwt.PyJWK(keys[0]).key, algorithms=["RS256"], audience=CLIENT_ID)
    assert claims["email"] == "alice@example.com"
    # The client's own Authorization header is replaced.
    r, _ = b.get(env.base + "/x", headers={"authorization": "Basic Zm9vOmJhcg=="})
    assert app_saw(r)["authorization"] == saw["authorization"]
    b.close()


def test_big_session_is_split_and_rejoined(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    final, back = b.login(user="big")
    cookies = set_cookie_lines(back[1][1])
    pieces = [c for c in cookies if re.match(r"_oauth2_proxy_\d+=", c)]
    assert len(pieces) >= 2, [c[:40] for c in cookies]
    assert all(len(c.encode()) <= 4096 for c in cookies)
    assert not any(c.startswith("_oauth2_proxy=") for c in cookies)
    saw = app_saw(final)
    assert saw["x-auth-request-user"] == "big@example.com"
    assert len(saw["x-auth-request-groups"].split(",")) == 180
    r, hops = b.get(env.base + "/again")
    assert len(hops) == 1 and app_saw(r)["x-auth-request-user"] == "big@example.com"
    # A missing piece is no session.
    parts = {c.name: c.value for c in b.client.cookies.jar if c.name.startswith("_oauth2_proxy_")
             and c.name[len("_oauth2_proxy_"):].isdigit()}
    only_first = httpx.get(env.base + "/x", headers={"cookie": f"_oauth2_proxy_0={parts['_oauth2_proxy_0']}"})
    assert only_first.status_code == 401
    # Logging in as someone with a small session clears the pieces.
    b.client.get(env.base + "/oauth2/sign_out")
    assert not [c for c in b.client.cookies.jar if c.name.startswith("_oauth2_proxy")]
    final, back = b.login(user="alice")
    assert app_saw(final)["x-auth-request-user"] == "alice@example.com"
    b.close()


def test_reload_keeps_logins_and_sessions(proxy_factory, upstream, provider):
    """SIGHUP with the same provider: the new configuration starts with the provider's metadata
    (no 503 window), and sessions sealed before the reload stay valid."""
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    b.login()
    provider.discovery_delay = 2.0   # the new configuration's own fetch is slow
    for _ in range(2):
        before = env.proxy.stderr().count("configuration reloaded")
        env.proxy.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while env.proxy.stderr().count("configuration reloaded") == before:
            assert time.monotonic() < deadline, "no reload"
            time.sleep(0.01)
        r = httpx.get(env.base + "/oauth2/start")
        assert r.status_code == 302, r.text
        r, hops = b.get(env.base + "/after-reload")
        assert len(hops) == 1 and app_saw(r)["x-auth-request-user"] == "alice@example.com"
    b.close()


def test_provider_down_at_start_gives_503_then_recovers(proxy_factory, upstream):
    port = free_port()
    env_port = free_port()
    routes = [{"name": "app", "match": {"path_prefix": "/"}, "cluster": "app", "filters": [{"auth": {"oidc": {
        "issuer": f"http://127.0.0.1:{port}", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "redirect_url": f"http://127.0.0.1:{env_port}/oauth2/callback", "cookie_secret": COOKIE_SECRET}}}]}]
    p = proxy_factory(upstream=upstream, routes=routes, listener={"address": f"127.0.0.1:{env_port}"}, wait=False)
    p.port = env_port
    p.wait_ready()
    r = httpx.get(p.url("/page"), headers={"accept": "text/html"})
    assert r.status_code == 503 and r.headers["x-outrider-error"] == "auth_unavailable"
    assert "discovery" in r.text
    late = Provider(port=port)
    late.add_client(CLIENT_ID, CLIENT_SECRET, [f"http://127.0.0.1:{env_port}/oauth2/callback"], ["client_secret_basic"])
    deadline = time.monotonic() + 10
    while httpx.get(p.url("/page"), headers={"accept": "text/html"}).status_code != 302:
        assert time.monotonic() < deadline, "no recovery after the provider came up"
        time.sleep(0.2)
    late.close()


TLS = Path(__file__).resolve().parents[2] / "config" / "examples" / "tls"


def test_https_provider_with_ca_file(proxy_factory, upstream):
    """The provider over HTTPS (the example certificate for 127.0.0.1, its CA in `ca_file`):
    discovery and JWKS from the background thread, the code exchange and the refresh from the
    worker's loop through the non-blocking TLS client."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(TLS / "server.crt", TLS / "server.key")
    provider = Provider(ssl_context=server_ctx)
    try:
        assert provider.issuer.startswith("https://127.0.0.1:")
        env = Env(proxy_factory, upstream, provider, ca_file=str(TLS / "ca.crt"), cookie_refresh="2s")
        trust = ssl.create_default_context(cafile=str(TLS / "ca.crt"))
        b = env.browser(verify=trust)
        final, hops = b.login()
        assert final.status_code == 200, [(u, r.status_code) for u, r in hops]
        assert app_saw(final)["x-auth-request-user"] == "alice@example.com"
        time.sleep(2.3)
        r, _ = b.get(env.base + "/after-refresh")
        assert r.status_code == 200
        assert [e[1] for e in provider.token_events()] == ["authorization_code", "refresh_token"]
        b.close()
    finally:
        provider.close()


def test_https_provider_with_an_untrusted_certificate(proxy_factory, upstream):
    """Without `ca_file` the example CA is not trusted: discovery never succeeds, logins get 503."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(TLS / "server.crt", TLS / "server.key")
    provider = Provider(ssl_context=server_ctx)
    try:
        port = free_port()
        provider.add_client(CLIENT_ID, CLIENT_SECRET, [f"http://127.0.0.1:{port}/oauth2/callback"], ["client_secret_basic"])
        routes = [{"name": "app", "match": {"path_prefix": "/"}, "cluster": "app", "filters": [{"auth": {"oidc": {
            "issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "redirect_url": f"http://127.0.0.1:{port}/oauth2/callback", "cookie_secret": COOKIE_SECRET}}}]}]
        p = proxy_factory(upstream=upstream, routes=routes, listener={"address": f"127.0.0.1:{port}"}, wait=False)
        p.port = port
        p.wait_ready()
        time.sleep(1.0)
        r = httpx.get(p.url("/page"), headers={"accept": "text/html"})
        assert r.status_code == 503
        assert "oidc discovery failed" in p.stderr()
    finally:
        provider.close()


def test_over_http2(proxy_factory, upstream, provider):
    """The same answers on h2c streams: the redirect with its cookie, a session, /oauth2/auth."""
    from h2wire import H2Client

    env = Env(proxy_factory, upstream, provider, listener={"protocols": ["http1", "h2c"]})
    b = env.browser()
    b.login()
    session = b.cookie("_oauth2_proxy")
    with H2Client(env.port) as c:
        r = c.get("/page", headers=[("accept", "text/html")])
        assert r.status == 302
        assert r.header("location").startswith(provider.issuer + "/authorize?")
        assert any(v.startswith("_oauth2_proxy_csrf=") for v in r.header_all("set-cookie"))
        r = c.get("/page", headers=[("cookie", "other=1"), ("cookie", f"_oauth2_proxy={session}")])
        assert r.status == 200
        echo = r.json()
        headers = {k.lower(): v for k, v in (echo["headers"] if isinstance(echo["headers"], list) else echo["headers"].items())}
        assert headers["x-auth-request-user"] == "alice@example.com"
        assert "_oauth2_proxy" not in headers.get("cookie", "")
        r = c.get("/oauth2/auth", headers=[("cookie", f"_oauth2_proxy={session}")])
        assert r.status == 202 and r.header("x-auth-request-user") == "alice@example.com"
    b.close()


def test_untrusted_input_never_crashes_the_proxy(proxy_factory, upstream, provider):
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    b.get(env.base + "/p", follow=False)
    csrf = b.cookie("_oauth2_proxy_csrf")
    junk_cookies = [
        "_oauth2_proxy=" + "A" * 60000,
        "; ".join(f"_oauth2_proxy_{i}=" + "B" * 3000 for i in range(18)),
        "_oauth2_proxy_0=%%%; _oauth2_proxy_1=\\; _oauth2_proxy=",
        "_oauth2_proxy",
        "=; ;;; =x; _oauth2_proxy==",
        f"_oauth2_proxy={csrf}; _oauth2_proxy_csrf={csrf}",
        "_oauth2_proxy_csrf=" + "C" * 50000,
    ]
    targets = ["/x", "/oauth2/auth", "/oauth2/userinfo", "/oauth2/sign_out?rd=%", "/oauth2/start?rd=%ZZ%",
               "/oauth2/start?rd", "/oauth2/start?rd=&rd=/a", "/oauth2/callback", "/oauth2/callback?state",
               "/oauth2/callback?state=&code=", "/oauth2/callback?code=" + "x" * 5000 + "&state=y",
               "/oauth2/callback?error=%00%0d%0aset-cookie:x", "/oauth2/callback?state=%ff%fe&code=%C0%AF"]
    for cookie in junk_cookies:
        for target in targets:
            r = httpx.get(env.base + target, headers={"cookie": cookie, "accept": "text/html"})
            assert r.status_code in (200, 202, 302, 400, 401, 403, 431), (cookie[:40], target, r.status_code)
            assert "set-cookie: x" not in "\n".join(f"{k}: {v}" for k, v in r.headers.multi_items()).lower()
    for garbage_token in ("a.b.c", "..", "x" * 9000 + ".y.z", "e30.e30.", "eyJhbGciOiJub25lIn0.e30.", "%.%.%"):
        r = httpx.get(env.base + "/api", headers={"authorization": "Bearer " + garbage_token})
        assert r.status_code == 401
    assert env.proxy.alive()
    final, _ = b.login()
    assert final.status_code == 200 and app_saw(final)["x-auth-request-user"] == "alice@example.com"
    b.close()


def test_signing_key_rotation(proxy_factory, upstream, provider):
    """The provider rotates its signing key: a token naming the unknown `kid` makes the proxy
    fetch the JWKS again (at most every 10 s), after which new tokens and logins verify; a
    session made before the rotation is unaffected."""
    env = Env(proxy_factory, upstream, provider)
    b = env.browser()
    b.login()
    fetches = env.proxy.stderr().count("oidc provider discovered")
    provider.rotate_key("key-2")
    token = provider.mint_id_token(USERS["alice"], CLIENT_ID)
    r = httpx.get(env.base + "/api", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 401
    deadline = time.monotonic() + 15
    while httpx.get(env.base + "/api", headers={"authorization": f"Bearer {token}"}).status_code != 200:
        assert time.monotonic() < deadline, "the JWKS was not fetched again after an unknown kid"
        time.sleep(0.25)
    assert env.proxy.stderr().count("oidc provider discovered") > fetches
    r, hops = b.get(env.base + "/old-session")
    assert len(hops) == 1 and r.status_code == 200
    other = env.browser()
    final, _ = other.login(user="bob")
    assert final.status_code == 200 and app_saw(final)["x-auth-request-user"] == "bob-sub-2"
    b.close()
    other.close()
