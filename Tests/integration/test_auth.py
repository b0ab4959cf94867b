"""Auth filter (SPEC §4): API keys, Basic (bcrypt off the loop, {SHA}), JWT (every algorithm, the
RFC 8725 attacks), several methods in one filter, identity headers, spoofed identity headers,
allow_anonymous path tricks. Every denial is checked on both sides of the wire: the exact 401
the client got, and that the app received nothing."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import uuid

import pytest

from conftest import REPO, start_proxy, _report
from jwt_helper import (ALL_ALGS, API_KEY_PLAIN, API_KEY_SHA256, AUDIENCE, BASIC_BCRYPT, BASIC_SHA, EXAMPLES,
                        ISSUER, b64url, b64url_json, basic, bcrypt_entry, claims, forge_hmac, keys, mint,
                        mint_with, sha_entry, unsigned, write_jwks)
from wire import Conn

REALM = "app"
CH_BASIC = f'Basic realm="{REALM}"'
CH_BEARER = f'Bearer realm="{REALM}"'
CH_BEARER_INVALID = f'Bearer realm="{REALM}", error="invalid_token"'
CH_APIKEY = f'ApiKey realm="{REALM}", header="x-api-key"'
IDENTITY_HEADERS = ("x-auth-request-user", "x-auth-request-email", "x-auth-request-groups")

# A third Basic user whose password holds colons (only the first colon separates), and a
# $2b$ bcrypt user made here (the example file has $2y$).
CAROL_SHA = ("carol", "pa:ss:word")
DAVE_2B = ("dave", "dave-2b-password")


def _htpasswd(path):
    text = (EXAMPLES / "htpasswd").read_text()
    text += sha_entry(*CAROL_SHA) + "\n" + bcrypt_entry(*DAVE_2B, rounds=5) + "\n"
    path.write_text(text)
    return str(path)


def _auth(tmp, methods=("api_key", "basic", "jwt"), jwt_over=None, anonymous=True, realm=REALM):
    a = {"realm": realm}
    if anonymous:
        a["allow_anonymous"] = [{"path_prefix": "/healthz", "methods": ["GET"]}]
    if "api_key" in methods:
        a["api_key"] = {"header": "x-api-key", "keys_file": str(EXAMPLES / "api-keys")}
    if "basic" in methods:
        a["basic"] = {"htpasswd": _htpasswd(tmp / "htpasswd")}
    if "jwt" in methods:
        j = {
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "jwks_file": write_jwks(tmp / "jwks.json"),
            "algorithms": ALL_ALGS,
            "identity_claim": "sub",
            "clock_skew": "30s",
            "from": ["header:authorization", "cookie:token", "query:access_token"],
            "claims_to_headers": {"tenant": "x-tenant"},
            "forward_token": True,
        }
        j.update(jwt_over or {})
        a["jwt"] = j
    return a


def _routes(auth, extra=()):
    return [{"name": "app", "match": {"path_prefix": "/"}, "cluster": "app",
             "filters": [{"auth": auth}, *extra]}]


@pytest.fixture(scope="module")
def full(outrider_bin, tmp_path_factory, module_upstream):
    """One proxy with api_key + basic + jwt (every algorithm) + allow_anonymous /healthz GET."""
    tmp = tmp_path_factory.mktemp("auth-full")
    p = start_proxy(outrider_bin, tmp / "proxy", routes=_routes(_auth(tmp)), upstream=module_upstream)
    yield p
    problem = p.stop()
    if problem:
        _report(p)
    assert not problem, problem


def _uniq(prefix="/t"):
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def _req(p, target, headers=(), method="GET", host="test.local"):
    with p.conn() as c:
        c.request(method, target, headers=list(headers), host=host)
        return c.read_response(method=method)


def _challenges(r):
    return sorted(r.header_all("www-authenticate"))


def _passed(p, up, target, headers=(), method="GET", host="test.local"):
    """The request must reach the app: 200 from it, and its record."""
    r = _req(p, target, headers, method, host)
    assert r.status == 200, f"{target}: expected the app's 200, got {r!r}"
    rec = up.find(target.split("?")[0])
    return r, rec


def _denied(p, up, target, headers=(), method="GET", status=401, challenges=None, host="test.local"):
    """The request must be refused by the proxy, and the app must have received nothing."""
    r = _req(p, target, headers, method, host)
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status in statuses, f"{target}: expected {status}, got {r!r}"
    if r.status == 401:
        assert r.header("x-outrider-error") == "unauthenticated", r
        if challenges is not None:
            assert _challenges(r) == sorted(challenges), f"{target}: WWW-Authenticate {r.header_all('www-authenticate')}"
    DENIED_TARGETS.add(target.split("?")[0])
    time.sleep(0.03)
    leaked = [rec.raw_head for rec in list(up.records) if rec.target.split("?")[0] == target.split("?")[0]]
    assert not leaked, f"denied request {target} reached the app: {leaked}"
    return r


# Checked together at the end of the module (one wait for the access log instead of one per test):
# path → expected access-log identity (None = null), and every target the app must never see.
EXPECT_LOG: dict[str, str | None] = {}
DENIED_TARGETS: set[str] = set()

ALL_CH = [CH_BASIC, CH_BEARER, CH_APIKEY]
ALL_CH_INVALID = [CH_BASIC, CH_BEARER_INVALID, CH_APIKEY]


# ---------------------------------------------------------------------------------------------
# API keys


@pytest.mark.parametrize("how", ["plain-header", "sha256-header", "plain-bearer", "sha256-bearer"])
def test_api_key_valid(full, module_upstream, how):
    name, key = API_KEY_PLAIN if how.startswith("plain") else API_KEY_SHA256
    hdr = ("X-Api-Key", key) if how.endswith("header") else ("Authorization", f"Bearer {key}")
    t = _uniq("/apikey")
    r, rec = _passed(full, module_upstream, t, [hdr])
    assert rec.header_all("x-auth-request-user") == [name], rec.headers
    assert "x-auth-request-email" not in rec.header_names(), rec.headers
    EXPECT_LOG[t] = name


@pytest.mark.parametrize("hdrs,ch", [
    ([("x-api-key", "example-key-ci-bot-6f1d2c0b")], ALL_CH),                # one byte off
    ([("x-api-key", "example-key-ci-bot-6f1d2c0")], ALL_CH),                 # a prefix
    ([("x-api-key", "example-key-ci-bot-6f1d2c0a-extra")], ALL_CH),          # longer
    ([("x-api-key", "1752b02b6ec42cc2a2e1698cb6dd570129e7683d44d18bb89ba074c59b0f046d")], ALL_CH),  # the digest itself
    ([("x-api-key", "sha256:1752b02b6ec42cc2a2e1698cb6dd570129e7683d44d18bb89ba074c59b0f046d")], ALL_CH),
    ([("x-api-key", "ci-bot")], ALL_CH),                                        # the NAME
    ([("x-api-key", "ci-bot:example-key-ci-bot-6f1d2c0a")], ALL_CH),            # the whole line
    ([("x-other-key", API_KEY_PLAIN[1])], ALL_CH),                              # wrong header
    ([], ALL_CH),                                                               # nothing
    ([("Authorization", "Bearer example-key-nope")], ALL_CH_INVALID),           # wrong bearer
    ([("Authorization", "Token " + API_KEY_PLAIN[1])], ALL_CH),                 # wrong scheme
], ids=["off-by-one", "prefix", "longer", "digest", "sha256-form", "name", "line", "other-header", "missing",
        "bad-bearer", "token-scheme"])
def test_api_key_denied(full, module_upstream, hdrs, ch):
    t = _uniq("/apikey-denied")
    _denied(full, module_upstream, t, hdrs, challenges=ch)
    EXPECT_LOG[t] = None


def test_api_key_custom_header(proxy_factory, upstream, tmp_path):
    auth = _auth(tmp_path, methods=("api_key",))
    auth["api_key"]["header"] = "X-Service-Token"
    p = proxy_factory(upstream=upstream, routes=_routes(auth))
    ch = f'ApiKey realm="{REALM}", header="x-service-token"'
    r = _denied(p, upstream, "/custom-none", [], challenges=[ch])
    _denied(p, upstream, "/custom-default-header", [("x-api-key", API_KEY_PLAIN[1])], challenges=[ch])
    r, rec = _passed(p, upstream, "/custom-ok", [("x-service-token", API_KEY_SHA256[1])])
    assert rec.header_all("x-auth-request-user") == ["reporting"], rec.headers


def test_api_key_only_challenge(proxy_factory, upstream, tmp_path):
    p = proxy_factory(upstream=upstream, routes=_routes(_auth(tmp_path, methods=("api_key",))))
    r = _denied(p, upstream, "/only-key", [], challenges=[CH_APIKEY])
    assert r.header_all("www-authenticate") == [CH_APIKEY]
    _denied(p, upstream, "/only-key-bad", [("Authorization", "Bearer nope")], challenges=[CH_APIKEY])
    r, rec = _passed(p, upstream, "/only-key-ok", [("x-api-key", API_KEY_PLAIN[1])])
    assert rec.header_all("x-auth-request-user") == ["ci-bot"]


# ---------------------------------------------------------------------------------------------
# Basic


@pytest.mark.parametrize("user,password", [BASIC_BCRYPT, BASIC_SHA, CAROL_SHA, DAVE_2B],
                         ids=["bcrypt-2y", "sha", "sha-colons", "bcrypt-2b"])
def test_basic_valid(full, module_upstream, user, password):
    t = _uniq("/basic")
    r, rec = _passed(full, module_upstream, t, [("Authorization", basic(user, password))])
    assert rec.header_all("x-auth-request-user") == [user], rec.headers
    EXPECT_LOG[t] = user


def _b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


@pytest.mark.parametrize("value", [
    basic("alice", "wrong-password"),
    basic("alice", "alice-example-password "),
    basic("alice", ""),
    basic("Alice", "alice-example-password"),
    basic("bob", "wrong"),
    basic("bob", "bob-example-password" + "x"),
    basic("carol", "pa"),
    basic("mallory", "alice-example-password"),
    basic("", "alice-example-password"),
    "Basic !!!not-base64!!!",
    "Basic " + _b64(b"alice:alice-example-password")[:-2] + "!!",
    "Basic " + _b64(b"alicealice-example-password"),   # no colon
    "Basic " + _b64(b"bob"),                            # no colon
    "Basic ",
    "Basic",
], ids=["bcrypt-wrong", "bcrypt-trailing-space", "bcrypt-empty", "user-case", "sha-wrong", "sha-longer",
        "colon-pw-truncated", "unknown-user", "empty-user", "bad-base64", "broken-base64", "no-colon",
        "no-colon-2", "empty", "bare-scheme"])
def test_basic_denied(full, module_upstream, value):
    t = _uniq("/basic-denied")
    _denied(full, module_upstream, t, [("Authorization", value)], challenges=ALL_CH)
    EXPECT_LOG[t] = None


def test_basic_only_challenge(proxy_factory, upstream, tmp_path):
    p = proxy_factory(upstream=upstream, routes=_routes(_auth(tmp_path, methods=("basic",))))
    r = _denied(p, upstream, "/only-basic", [], challenges=[CH_BASIC])
    _denied(p, upstream, "/only-basic-bad", [("Authorization", basic("alice", "nope"))], challenges=[CH_BASIC])
    r, rec = _passed(p, upstream, "/only-basic-ok", [("Authorization", basic(*BASIC_BCRYPT))])
    assert rec.header_all("x-auth-request-user") == ["alice"]


def test_bcrypt_off_loop_concurrent_logins(proxy_factory, upstream, tmp_path):
    """100 concurrent bcrypt (cost 10) logins on 2 workers: all answered correctly, and an anonymous
    request meanwhile is answered fast (the event loops are not running bcrypt)."""
    p = proxy_factory(upstream=upstream, routes=_routes(_auth(tmp_path, methods=("basic",))), top={"workers": 2})
    n = 100
    results = [None] * n
    barrier = threading.Barrier(n + 1)

    def login(i):
        good = i % 2 == 0
        pw = BASIC_BCRYPT[1] if good else f"wrong-{i}"
        try:
            c = Conn(p.port, timeout=25)
            barrier.wait(10)
            c.request("GET", f"/login/{i}", headers=[("Authorization", basic("alice", pw))])
            r = c.read_response(timeout=25)
            c.close()
            results[i] = (good, r.status, time.monotonic())
        except Exception as e:  # noqa: BLE001
            results[i] = (good, repr(e), time.monotonic())

    threads = [threading.Thread(target=login, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    probe = Conn(p.port, timeout=5)
    barrier.wait(10)
    t0 = time.monotonic()
    lat = []
    k = 0
    while any(r is None for r in results) and time.monotonic() - t0 < 25:
        k += 1
        s = time.monotonic()
        probe.request("GET", f"/healthz/probe-{k}")
        r = probe.read_response(timeout=5)
        lat.append(time.monotonic() - s)
        assert r.status == 200, r
        time.sleep(0.005)
    in_flight_s = time.monotonic() - t0
    for t in threads:
        t.join(30)
    probe.close()
    bad = [(i, res) for i, res in enumerate(results)
           if res is None or res[1] != (200 if res[0] else 401)]
    assert not bad, f"logins answered wrongly: {bad[:10]} (of {len(bad)})"
    assert len(lat) >= 10, f"only {len(lat)} probes while logins were in flight ({in_flight_s:.2f}s)"
    lat.sort()
    print(f"probes {len(lat)} over {in_flight_s:.2f}s; p50 {lat[len(lat) // 2] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    assert p99 < 0.2, f"anonymous request p99 {p99 * 1000:.0f} ms while bcrypt ran (max {lat[-1] * 1000:.0f} ms, {len(lat)} probes)"
    # only the good logins reached the app
    got = {rec.target for rec in upstream.records if rec.target.startswith("/login/")}
    assert got == {f"/login/{i}" for i in range(0, n, 2)}, sorted(got)[:10]


# ---------------------------------------------------------------------------------------------
# JWT


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_jwt_valid_each_algorithm(full, module_upstream, alg):
    t = _uniq(f"/jwt-{alg}")
    tok = mint(alg, sub=f"user-{alg}")
    r, rec = _passed(full, module_upstream, t, [("Authorization", f"Bearer {tok}")])
    assert rec.header_all("x-auth-request-user") == [f"user-{alg}"], rec.headers
    assert rec.header_all("x-auth-request-email") == ["carol@example.com"], rec.headers
    # forward_token: true → the Authorization header reaches the app as sent
    assert rec.header_all("authorization") == [f"Bearer {tok}"], rec.headers
    EXPECT_LOG[t] = f"user-{alg}"


def sized_token(lo, hi, **claim_over):
    """A valid ES256 token whose length is in [lo, hi] (padding claim tuned)."""
    pad = (lo * 3) // 4 - 200
    for _ in range(400):
        tok = mint("ES256", pad="p" * pad, **claim_over)
        if lo <= len(tok) <= hi:
            return tok
        pad += 1 if len(tok) < lo else -1
    raise AssertionError(f"could not size a token into [{lo}, {hi}]")


def _bad_tokens():
    k = keys()
    now = int(time.time())
    good = mint("RS256")
    h, pl, sig = good.split(".")
    out = {}
    out["expired"] = mint("RS256", exp=now - 120)
    out["expired-es256"] = mint("ES256", exp=now - 31 - 5)
    out["nbf-future"] = mint("RS256", nbf=now + 120)
    out["wrong-iss"] = mint("RS256", iss="https://evil.example")
    out["iss-trailing-slash"] = mint("RS256", iss=ISSUER + "/")
    out["no-iss"] = mint("RS256", iss=None)
    out["wrong-aud"] = mint("RS256", aud="other")
    out["wrong-aud-list"] = mint("RS256", aud=["other", "x"])
    out["no-aud"] = mint("RS256", aud=None)
    out["no-sub"] = mint("RS256", sub=None)
    out["exp-string"] = mint("RS256", exp=str(now + 300))
    for casing in ("none", "None", "NONE", "nOnE"):
        out[f"alg-{casing}"] = unsigned({"alg": casing, "typ": "JWT"}, claims())
        out[f"alg-{casing}-kid-sig"] = unsigned({"alg": casing, "kid": "example-rsa"}, claims(), sig)
    out["alg-missing"] = unsigned({"typ": "JWT", "kid": "example-rsa"}, claims(), sig)
    pem = k.example_rsa_public_pem()
    out["hs256-rsa-pem-kid"] = forge_hmac(pem, {"alg": "HS256", "typ": "JWT", "kid": "example-rsa"}, claims())
    out["hs256-rsa-pem-nokid"] = forge_hmac(pem, {"alg": "HS256", "typ": "JWT"}, claims())
    out["hs256-rsa-pem-stripped"] = forge_hmac(pem.strip(), {"alg": "HS256", "kid": "example-rsa"}, claims())
    out["hs256-jwk-n-kid"] = forge_hmac(k.example_jwks["keys"][0]["n"].encode(), {"alg": "HS256", "kid": "example-rsa"}, claims())
    out["unknown-kid"] = mint_with(k.stranger_rsa, "RS256", "nope", claims())
    out["unknown-kid-real-key"] = mint_with(k.example_rsa, "RS256", "not-example-rsa", claims())
    out["stranger-key-claims-kid"] = mint_with(k.stranger_rsa, "RS256", "example-rsa", claims())
    out["stranger-key-gen-rsa"] = mint_with(k.stranger_rsa, "PS256", "gen-rsa", claims())
    out["es256-with-rsa-kid"] = mint_with(k.example_ec, "ES256", "example-rsa", claims())
    out["rs384-example-rsa-alg-pinned"] = mint_with(k.example_rsa, "RS384", "example-rsa", claims())
    tampered = json.loads(base64.urlsafe_b64decode(pl + "=" * (-len(pl) % 4)))
    tampered["sub"] = "admin"
    out["tampered-payload"] = h + "." + b64url_json(tampered) + "." + sig
    hdr = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
    hdr["kid"] = "example-ec"
    out["tampered-header"] = b64url_json(hdr) + "." + pl + "." + sig
    out["stripped-signature"] = h + "." + pl + "."
    out["no-signature-segment"] = h + "." + pl
    out["sig-truncated"] = h + "." + pl + "." + sig[:-4]
    flipped = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    flipped[-1] ^= 1
    out["sig-bitflip"] = h + "." + pl + "." + b64url(bytes(flipped))
    out["four-segments"] = good + ".x"
    out["malformed-b64-payload"] = h + "." + pl[:10] + "!*" + pl[12:] + "." + sig
    out["std-b64-alphabet"] = h + "." + pl + "." + sig[:10] + "+" + sig[11:20] + "/" + sig[21:]
    out["b64-padding"] = h + "." + pl + "=" + "." + sig
    out["header-not-json"] = b64url(b"{alg:RS256}") + "." + pl + "." + sig
    out["payload-not-object"] = forge_hmac(k.hmac, {"alg": "HS256", "kid": "gen-hs"}, ["not", "an", "object"])
    out["garbage"] = "not-a-jwt"
    out["empty-segments"] = ".."
    big = mint("RS256", pad="x" * 9000)
    assert len(big) > 8192
    out["oversized"] = big
    out["oversized-just"] = sized_token(8193, 8300)
    return out


BAD_TOKEN_IDS = list(_bad_tokens().keys())


@pytest.fixture(scope="module")
def bad_tokens():
    return _bad_tokens()


@pytest.mark.parametrize("case", BAD_TOKEN_IDS)
def test_jwt_invalid_token_denied(full, module_upstream, bad_tokens, case):
    tok = bad_tokens[case]
    t = _uniq(f"/jwt-bad-{case}")
    r = _denied(full, module_upstream, t, [("Authorization", f"Bearer {tok}")], challenges=ALL_CH_INVALID)
    assert CH_BEARER_INVALID in r.header_all("www-authenticate"), r
    EXPECT_LOG[t] = None


@pytest.mark.parametrize("case", ["expired", "alg-none", "hs256-rsa-pem-kid", "tampered-payload"])
def test_jwt_invalid_token_in_cookie_and_query_denied(full, module_upstream, bad_tokens, case):
    tok = bad_tokens[case]
    t = _uniq(f"/jwt-bad-cookie-{case}")
    _denied(full, module_upstream, t, [("Cookie", f"token={tok}")], challenges=ALL_CH_INVALID)
    t = _uniq(f"/jwt-bad-query-{case}")
    _denied(full, module_upstream, t + f"?access_token={tok}", [], challenges=ALL_CH_INVALID)


@pytest.mark.parametrize("case,over", [
    ("exp-within-skew", {"exp": -10}),
    ("nbf-within-skew", {"nbf": 10}),
    ("aud-list", {"aud": ["other", AUDIENCE]}),
    ("near-8k", None),
])
def test_jwt_accepted_edges(full, module_upstream, case, over):
    now = int(time.time())
    if over is None:
        tok = sized_token(8000, 8192, sub=f"edge-{case}")
    else:
        c = {k_: (now + v if k_ in ("exp", "nbf") else v) for k_, v in over.items()}
        tok = mint("ES256", sub=f"edge-{case}", **c)
    t = _uniq(f"/jwt-edge-{case}")
    r, rec = _passed(full, module_upstream, t, [("Authorization", f"Bearer {tok}")])
    assert rec.header_all("x-auth-request-user") == [f"edge-{case}"], rec.headers


def test_jwt_from_cookie_and_query(full, module_upstream):
    tok = mint("RS256", sub="cookie-user")
    t = _uniq("/jwt-cookie")
    r, rec = _passed(full, module_upstream, t, [("Cookie", f"theme=dark; token={tok}; other=1")])
    assert rec.header_all("x-auth-request-user") == ["cookie-user"], rec.headers
    tok = mint("ES256", sub="query-user")
    t = _uniq("/jwt-query")
    r = _req(full, f"{t}?x=1&access_token={tok}&y=2")
    assert r.status == 200, r
    rec = module_upstream.find(t)
    assert rec.header_all("x-auth-request-user") == ["query-user"], rec.headers
    # a cookie whose name merely ends in "token" is not the token
    t = _uniq("/jwt-cookie-suffix")
    _denied(full, module_upstream, t, [("Cookie", f"xtoken={mint('RS256')}")])
    t = _uniq("/jwt-query-suffix")
    _denied(full, module_upstream, t + f"?my_access_token={mint('RS256')}", [])


def test_jwt_only_from_sources_configured(proxy_factory, upstream, tmp_path):
    """from: [cookie:session, header:x-jwt] — a valid token in Authorization is not looked at."""
    auth = _auth(tmp_path, methods=("jwt",), jwt_over={"from": ["cookie:session", "header:x-jwt"]})
    p = proxy_factory(upstream=upstream, routes=_routes(auth))
    tok = mint("RS256", sub="src-user")
    _denied(p, upstream, "/src-authz", [("Authorization", f"Bearer {tok}")], challenges=[CH_BEARER])
    _denied(p, upstream, "/src-query?access_token=" + tok, [], challenges=[CH_BEARER])
    r, rec = _passed(p, upstream, "/src-cookie", [("Cookie", f"session={tok}")])
    assert rec.header_all("x-auth-request-user") == ["src-user"]
    r, rec = _passed(p, upstream, "/src-header", [("X-Jwt", tok)])
    assert rec.header_all("x-auth-request-user") == ["src-user"]
    _denied(p, upstream, "/src-header-bad", [("X-Jwt", tok[:-3] + "AAA")], challenges=[CH_BEARER_INVALID])


def test_jwt_algorithm_allow_list(proxy_factory, upstream, tmp_path):
    """algorithms: [RS256] — a correctly signed ES256 or PS256 token is refused."""
    p = proxy_factory(upstream=upstream, routes=_routes(_auth(tmp_path, methods=("jwt",),
                                                              jwt_over={"algorithms": ["RS256"]})))
    _passed(p, upstream, "/allow-rs256", [("Authorization", f"Bearer {mint('RS256')}")])
    for alg in ("ES256", "PS256", "HS256", "EdDSA"):
        _denied(p, upstream, f"/allow-{alg}", [("Authorization", f"Bearer {mint(alg)}")],
                challenges=[CH_BEARER_INVALID])
    _denied(p, upstream, "/allow-none", [], challenges=[CH_BEARER])


def test_jwt_claims_groups_email(full, module_upstream):
    tok = mint("RS256", sub="grp", groups=["admin", "dev"], tenant="acme", email="grp@example.com")
    t = _uniq("/jwt-claims")
    r, rec = _passed(full, module_upstream, t, [("Authorization", f"Bearer {tok}")])
    assert rec.header_all("x-auth-request-user") == ["grp"], rec.headers
    assert rec.header_all("x-auth-request-email") == ["grp@example.com"], rec.headers
    groups = rec.header_all("x-auth-request-groups")
    assert len(groups) == 1 and [g.strip() for g in groups[0].split(",")] == ["admin", "dev"], rec.headers
    assert rec.header_all("x-tenant") == ["acme"], rec.headers


def test_jwt_claim_header_injection(full, module_upstream):
    """CR/LF in a claim never splits the head the app receives."""
    tok = mint("RS256", sub="inj\r\nx-injected4: yes\n", tenant="acme\r\nx-injected: yes",
               email="e@x\r\nx-injected2: yes", groups=["a\r\nx-injected3: yes"])
    t = _uniq("/jwt-inject")
    r = _req(full, t, [("Authorization", f"Bearer {tok}")])
    assert r.status in (200, 401), r
    time.sleep(0.05)
    for rec in module_upstream.records:
        if rec.target == t:
            assert not {"x-injected", "x-injected2", "x-injected3", "x-injected4"} & rec.header_names(), rec.raw_head
            assert b"\r\nx-injected" not in rec.raw_head, rec.raw_head
            assert not rec.problems, rec.problems


def test_jwt_claims_to_headers_x_auth_request_email_single(proxy_factory, upstream, tmp_path):
    """auth-container.yaml maps claim email → x-auth-request-email, which the filter also sets from
    the email claim: the app must get ONE x-auth-request-email, not two."""
    auth = _auth(tmp_path, methods=("jwt",), jwt_over={"claims_to_headers": {"email": "x-auth-request-email"}})
    p = proxy_factory(upstream=upstream, routes=_routes(auth))
    tok = mint("ES256", sub="erin", email="erin@example.com")
    r, rec = _passed(p, upstream, "/email-once", [("Authorization", f"Bearer {tok}"),
                                                  ("X-Auth-Request-Email", "spoof@evil.example")])
    assert rec.header_all("x-auth-request-user") == ["erin"], rec.headers
    assert rec.header_all("x-auth-request-email") == ["erin@example.com"], rec.raw_head.decode("latin-1")


def test_jwt_identity_claim(proxy_factory, upstream, tmp_path):
    auth = _auth(tmp_path, methods=("jwt",), jwt_over={"identity_claim": "email"})
    p = proxy_factory(upstream=upstream, routes=_routes(auth))
    r, rec = _passed(p, upstream, "/idc", [("Authorization", f"Bearer {mint('RS256', sub='s1', email='frank@example.com')}")])
    assert rec.header_all("x-auth-request-user") == ["frank@example.com"], rec.headers
    e = p.wait_access_log(lambda e: e.get("path") == "/idc")
    assert e is not None and e.get("identity") == "frank@example.com", e
    # the identity claim is required
    _denied(p, upstream, "/idc-missing", [("Authorization", f"Bearer {mint('RS256', email=None)}")],
            challenges=[CH_BEARER_INVALID])


def test_jwt_forward_token_false(proxy_factory, upstream, tmp_path):
    auth = _auth(tmp_path, methods=("jwt",), jwt_over={"forward_token": False})
    p = proxy_factory(upstream=upstream, routes=_routes(auth))
    tok = mint("RS256", sub="hidden")
    r, rec = _passed(p, upstream, "/fwd-false", [("Authorization", f"Bearer {tok}"), ("X-Keep", "1")])
    assert "authorization" not in rec.header_names(), rec.headers
    assert tok.encode() not in rec.raw_head, rec.raw_head
    assert rec.header_all("x-auth-request-user") == ["hidden"]
    assert rec.header_all("x-keep") == ["1"]


def test_jwt_forward_token_true_keeps_it(full, module_upstream):
    tok = mint("ES256", sub="shown")
    t = _uniq("/fwd-true")
    r, rec = _passed(full, module_upstream, t, [("Authorization", f"Bearer {tok}")])
    assert rec.header_all("authorization") == [f"Bearer {tok}"], rec.headers


# ---------------------------------------------------------------------------------------------
# Several methods


def test_any_method_accepting_passes(full, module_upstream):
    cases = [
        # (headers, expected identity)
        ([("x-api-key", "wrong"), ("Authorization", basic(*BASIC_SHA))], "bob"),
        ([("x-api-key", API_KEY_PLAIN[1]), ("Authorization", "Bearer not.a.jwt")], "ci-bot"),
        ([("x-api-key", "wrong"), ("Authorization", f"Bearer {mint('RS256', sub='jwt-wins')}")], "jwt-wins"),
        ([("x-api-key", API_KEY_SHA256[1]), ("Authorization", basic("bob", "wrong"))], "reporting"),
        ([("Authorization", f"Bearer {API_KEY_SHA256[1]}")], "reporting"),   # bearer API key beside jwt
        ([("x-api-key", "wrong"), ("Cookie", f"token={mint('ES256', sub='cookie-wins')}")], "cookie-wins"),
    ]
    for i, (hdrs, who) in enumerate(cases):
        t = _uniq(f"/any-{i}")
        r, rec = _passed(full, module_upstream, t, hdrs)
        assert rec.header_all("x-auth-request-user") == [who], (i, rec.headers)


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer  "])
def test_bearer_scheme_case_insensitive(full, module_upstream, scheme):
    t = _uniq("/scheme")
    r, rec = _passed(full, module_upstream, t, [("Authorization", f"{scheme} {mint('RS256', sub='cs')}")])
    assert rec.header_all("x-auth-request-user") == ["cs"], rec.headers
    t = _uniq("/scheme-basic")
    r, rec = _passed(full, module_upstream, t, [("Authorization", basic(*BASIC_SHA).replace("Basic", scheme.strip().lower().replace("bearer", "basic")))])
    assert rec.header_all("x-auth-request-user") == ["bob"], rec.headers


# ---------------------------------------------------------------------------------------------
# Per-request state on keep-alive and pipelined connections


def test_keepalive_no_identity_carried_over(full, module_upstream):
    """One connection, one request after another: nothing of a request's authentication may
    leak into the next (identity, headers, a pending bcrypt outcome)."""
    seq = [
        ("ok-alice", [("Authorization", basic(*BASIC_BCRYPT))], 200, "alice"),
        ("none", [], 401, None),
        ("anon", None, 200, None),
        ("bad-alice", [("Authorization", basic("alice", "wrong"))], 401, None),
        ("key", [("x-api-key", API_KEY_PLAIN[1])], 200, "ci-bot"),
        ("none2", [("Authorization", basic("alice", ""))], 401, None),
        ("jwt", [("Authorization", f"Bearer {mint('ES256', sub='jay', groups=['g1'])}")], 200, "jay"),
        ("anon2", None, 200, None),
        ("expired", [("Authorization", f"Bearer {mint('RS256', exp=int(time.time()) - 100)}")], 401, None),
        ("alice-cached", [("Authorization", basic(*BASIC_BCRYPT))], 200, "alice"),
        ("none3", [], 401, None),
    ]
    base = _uniq("/ka")
    with full.conn() as c:
        for tag, hdrs, status, who in seq:
            t = f"/healthz{base}-{tag}" if hdrs is None else f"{base}-{tag}"
            c.request("GET", t, headers=hdrs or [])
            r = c.read_response()
            assert r.status == status, (tag, r)
            if status == 200:
                rec = module_upstream.find(t)
                got = {h: rec.header_all(h) for h in IDENTITY_HEADERS}
                assert got["x-auth-request-user"] == ([who] if who else []), (tag, rec.headers)
                if tag != "jwt":
                    assert not got["x-auth-request-groups"] and not got["x-auth-request-email"], (tag, rec.headers)
            else:
                DENIED_TARGETS.add(t)
            EXPECT_LOG[t] = who
            assert not c.eof, f"connection closed after {tag}"


def test_pipelined_with_bcrypt_pause(full, module_upstream):
    """Pipelined requests where the first waits for bcrypt off the loop: answered in order, each
    with its own identity."""
    base = _uniq("/pipe")
    reqs = [
        (f"{base}-1", [("Authorization", basic("alice", "pipelined-wrong"))], 401, None),
        (f"/healthz{base}-2", [("X-Auth-Request-User", "admin")], 200, None),
        (f"{base}-3", [("Authorization", basic(*BASIC_BCRYPT))], 200, "alice"),
        (f"{base}-4", [("x-api-key", API_KEY_SHA256[1])], 200, "reporting"),
        (f"{base}-5", [], 401, None),
        (f"{base}-6", [("Authorization", basic(*DAVE_2B))], 200, "dave"),
    ]
    raw = b""
    for t, hdrs, _, _ in reqs:
        raw += (f"GET {t} HTTP/1.1\r\nHost: test.local\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs)
                + "\r\n").encode()
    with full.conn(timeout=10) as c:
        c.send(raw)
        for t, hdrs, status, who in reqs:
            r = c.read_response()
            assert r.status == status, (t, r)
            if status == 200:
                body = r.json()
                assert body["target"] == t, f"answers out of order: expected {t}, got {body['target']}"
                users = [v for k, v in body["headers"] if k.lower() == "x-auth-request-user"]
                assert users == ([who] if who else []), (t, body["headers"])
            else:
                DENIED_TARGETS.add(t)
            EXPECT_LOG[t] = who


def test_client_gone_during_bcrypt(full, module_upstream):
    """Clients that vanish while their bcrypt check runs off the loop: the proxy stays healthy and
    nothing reaches the app for them."""
    base = _uniq("/gone")
    for i in range(20):
        c = full.conn()
        c.request("GET", f"{base}-{i}", headers=[("Authorization", basic("alice", f"gone-{i}" if i % 2 else BASIC_BCRYPT[1]))])
        c.close()
    time.sleep(1.0)
    assert full.alive()
    r, rec = _passed(full, module_upstream, f"{base}-after", [("Authorization", basic(*BASIC_BCRYPT))])
    assert rec.header_all("x-auth-request-user") == ["alice"]
    leaked = [x.target for x in module_upstream.records if x.target.startswith(base + "-") and x.target != f"{base}-after"]
    # a client that closed before its answer: the request should not be sent on (no one will read it)
    assert not [t for t in leaked if int(t.rsplit("-", 1)[1]) % 2], f"wrong-password requests reached the app: {leaked}"


def test_jwt_verified_cache_respects_exp(proxy_factory, upstream, tmp_path):
    """A token accepted once (and cached) is refused once its exp has passed (clock_skew 0)."""
    auth = _auth(tmp_path, methods=("jwt",), jwt_over={"clock_skew": "0s"})
    p = proxy_factory(upstream=upstream, routes=_routes(auth), top={"workers": 1})
    exp = int(time.time()) + 2
    tok = mint("ES256", sub="short", exp=exp)
    with p.conn() as c:
        c.request("GET", "/short-1", headers=[("Authorization", f"Bearer {tok}")])
        assert c.read_response().status == 200
        c.request("GET", "/short-2", headers=[("Authorization", f"Bearer {tok}")])
        assert c.read_response().status == 200
    while time.time() < exp + 1.1:
        time.sleep(0.1)
    _denied(p, upstream, "/short-3", [("Authorization", f"Bearer {tok}")], challenges=[CH_BEARER_INVALID])


# ---------------------------------------------------------------------------------------------
# Spoofed identity headers

SPOOF = [
    ("X-Auth-Request-User", "admin"),
    ("x-auth-request-email", "root@evil.example"),
    ("X-AUTH-REQUEST-GROUPS", "admins"),
    ("x-auth-request-preferred-username", "root"),
    ("X-Auth-Request-Access-Token", "forged"),
    ("x-auth-request-user", "admin2"),
    ("X-Tenant", "evil-tenant"),   # a claims_to_headers target
]


def _assert_no_spoof(rec, user=None, email=None, tenant=None):
    assert rec.header_all("x-auth-request-user") == ([user] if user else []), rec.raw_head.decode("latin-1")
    assert rec.header_all("x-auth-request-email") == ([email] if email else []), rec.raw_head.decode("latin-1")
    assert rec.header_all("x-tenant") == ([tenant] if tenant else []), rec.raw_head.decode("latin-1")
    for name in ("x-auth-request-groups", "x-auth-request-preferred-username", "x-auth-request-access-token"):
        assert name not in rec.header_names(), rec.raw_head.decode("latin-1")
    text = "\n".join(f"{k}: {v}" for k, v in rec.headers if k.lower() != "authorization").lower()
    for bad in ("admin", "evil", "forged", "root"):
        assert bad not in text, rec.raw_head


@pytest.mark.parametrize("how", ["api_key", "basic_sha", "basic_bcrypt", "jwt", "jwt_no_email", "anonymous",
                                 "anonymous_sub"])
def test_spoofed_identity_headers_never_reach_app(full, module_upstream, how):
    t = _uniq("/spoof")
    creds = []
    user = email = tenant = None
    if how == "api_key":
        creds, user = [("x-api-key", API_KEY_PLAIN[1])], "ci-bot"
    elif how == "basic_sha":
        creds, user = [("Authorization", basic(*BASIC_SHA))], "bob"
    elif how == "basic_bcrypt":
        creds, user = [("Authorization", basic(*BASIC_BCRYPT))], "alice"
    elif how == "jwt":
        creds, user, email, tenant = [("Authorization", f"Bearer {mint('RS256', sub='carol', tenant='acme')}")], \
            "carol", "carol@example.com", "acme"
    elif how == "jwt_no_email":
        creds, user = [("Authorization", f"Bearer {mint('ES256', sub='carol', email=None)}")], "carol"
    elif how == "anonymous":
        t = "/healthz"
    else:
        t = _uniq("/healthz")
    n = len(module_upstream.complete)
    hdrs = SPOOF[:3] + creds + SPOOF[3:]
    r = _req(full, t, hdrs)
    assert r.status == 200, r
    rec = module_upstream.next_after(n) if how == "anonymous" else module_upstream.find(t)
    if how == "anonymous":
        assert rec.target == "/healthz", rec.target
    _assert_no_spoof(rec, user, email, tenant)


@pytest.mark.parametrize("how", ["api_key", "anonymous"])
def test_spoofed_identity_headers_with_underscores(full, module_upstream, how):
    """CGI/WSGI/Rack apps read `X_Auth_Request_User` and `X-Auth-Request-User` as the same
    HTTP_X_AUTH_REQUEST_USER: the underscore spelling must not reach the app either (dropped, or
    the request refused — as Envoy's headers_with_underscores_action and nginx do)."""
    t = _uniq("/healthz/us" if how == "anonymous" else "/us")
    creds = [("x-api-key", API_KEY_PLAIN[1])] if how == "api_key" else []
    r = _req(full, t, [("X_Auth_Request_User", "admin"), ("x_auth_request_email", "root@evil.example"),
                       ("X-Auth_Request-Groups", "admins")] + creds)
    if r.status != 200:
        assert r.status == 400, r
        return
    rec = module_upstream.find(t)
    norm = {k.lower().replace("_", "-") for k, _ in rec.headers}
    spoofed = [(k, v) for k, v in rec.headers if "_" in k and k.lower().replace("_", "-").startswith("x-auth-request-")]
    assert not spoofed, f"underscore spellings of identity headers reached the app: {spoofed}"
    assert rec.header_all("x-auth-request-user") == (["ci-bot"] if how == "api_key" else []), rec.headers
    assert "x-auth-request-groups" not in norm


@pytest.mark.parametrize("creds", [[], [("x-api-key", "wrong")], [("Authorization", basic("alice", "nope"))],
                                   [("Authorization", "Bearer " + "e30.e30.")]], ids=["none", "key", "basic", "jwt"])
def test_spoofed_identity_headers_denied(full, module_upstream, creds):
    t = _uniq("/spoof-denied")
    _denied(full, module_upstream, t, SPOOF + creds)


# ---------------------------------------------------------------------------------------------
# allow_anonymous path tricks


TRICKS = [
    ("GET", "/healthz/../admin", (401,)),
    ("GET", "/healthz/%2e%2e/admin", (401, 400)),
    ("GET", "/healthz/%2E%2E/admin", (401, 400)),
    ("GET", "/healthz/.%2e/admin", (401, 400)),
    ("GET", "/healthz%2F..%2Fadmin", (400, 401)),
    ("GET", "/healthz%2f..%2fadmin", (400, 401)),
    ("GET", "/healthz%5C..%5Cadmin", (400, 401)),
    ("GET", "/healthz\\..\\admin", (400, 401)),
    ("GET", "//healthz/..//admin", (401,)),
    ("GET", "/./healthz/../admin", (401,)),
    ("GET", "/healthz/./../admin", (401,)),
    ("GET", "/healthz;/../admin", (400, 401)),
    ("GET", "/healthz/..;/admin", (400, 401)),
    ("GET", "/healthz/sub/../../admin", (401,)),
    ("GET", "/HEALTHZ", (401,)),
    ("GET", "/Healthz/sub", (401,)),
    ("GET", "/healthzx", (401,)),
    ("GET", "/healthz-admin", (401,)),
    ("GET", "/healthz.json", (401,)),
    ("GET", "/%68ealthzx", (401,)),
    ("GET", "/admin/healthz", (401,)),
    ("GET", "/admin?/healthz", (401,)),
    ("GET", "/admin#/healthz", (400, 401)),
    ("POST", "/healthz", (401,)),
    ("DELETE", "/healthz/sub", (401,)),
    ("PUT", "/healthz", (401,)),
    ("get", "/healthz", (400, 401)),
    ("GET", "http://test.local/healthz/../admin", (401,)),
]


@pytest.mark.parametrize("method,target,statuses", TRICKS, ids=[f"{m} {t}" for m, t, _ in TRICKS])
def test_allow_anonymous_tricks_denied(full, module_upstream, method, target, statuses):
    before = len(module_upstream.records)
    with full.conn() as c:
        c.request(method, target)
        r = c.read_response(method=method)
    assert r.status in statuses, f"{method} {target}: {r!r}"
    if r.status == 401:
        assert r.header("x-outrider-error") == "unauthenticated", r
        assert _challenges(r) == sorted(ALL_CH), r
    time.sleep(0.05)
    leaked = [x.raw_head for x in list(module_upstream.records)[before:]]
    assert not leaked, f"{method} {target} reached the app unauthenticated: {leaked}"


@pytest.mark.parametrize("target,upstream_target", [
    ("/healthz", "/healthz"),
    ("/healthz/", "/healthz/"),
    ("/healthz/sub", "/healthz/sub"),
    ("/healthz/sub/deeper", "/healthz/sub/deeper"),
    ("/healthz?probe=1", "/healthz?probe=1"),
    ("/%68ealthz", "/healthz"),
    ("/x/../healthz", "/healthz"),
])
def test_allow_anonymous_legit(full, module_upstream, target, upstream_target):
    n = len(module_upstream.complete)
    r = _req(full, target)
    assert r.status == 200, f"{target}: {r!r}"
    rec = module_upstream.next_after(n)
    # the app sees the normalized path and no identity
    assert rec.target == upstream_target, (target, rec.target)
    assert not {h for h in rec.header_names() if h.startswith("x-auth-request-")}, rec.headers


def test_allow_anonymous_access_log_identity_null(full, module_upstream):
    t = _uniq("/healthz")
    _passed(full, module_upstream, t)
    EXPECT_LOG[t] = None


def test_anonymous_any_method_when_methods_empty(proxy_factory, upstream, tmp_path):
    auth = _auth(tmp_path, methods=("api_key",), anonymous=False)
    auth["allow_anonymous"] = [{"path_prefix": "/public/"}]
    p = proxy_factory(upstream=upstream, routes=_routes(auth))
    for m in ("GET", "POST", "DELETE"):
        with p.conn() as c:
            c.request(m, f"/public/x-{m}", body=b"" if m == "POST" else None)
            r = c.read_response(method=m)
        assert r.status == 200, (m, r)
    _denied(p, upstream, "/publicx", [], challenges=[CH_APIKEY])
    _denied(p, upstream, "/public/../private", [], challenges=[CH_APIKEY])


def test_zz_access_log_identity_and_nothing_leaked(full, module_upstream):
    """Runs last in this module: the access log `identity` of every request above (the name, or
    null when refused or anonymous), and no refused target reached the app, even late."""
    if not EXPECT_LOG:
        pytest.skip("run with the rest of the module")
    deadline = time.monotonic() + 3
    while True:
        seen = {e.get("path"): e for e in full.access_log()}
        if all(t in seen for t in EXPECT_LOG) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    wrong = []
    for t, who in EXPECT_LOG.items():
        e = seen.get(t)
        if e is None:
            wrong.append((t, "no access log line"))
        elif e.get("identity") != who or (who is None and e.get("status") not in (200, 401)):
            wrong.append((t, e.get("status"), e.get("identity"), who))
    assert not wrong, f"access log identity wrong for {len(wrong)}: {wrong[:10]}"
    leaked = [x.raw_head[:200] for x in module_upstream.records
              if x.target.split("?")[0] in DENIED_TARGETS or x.target in DENIED_TARGETS]
    assert not leaked, f"refused requests reached the app: {leaked}"


# ---------------------------------------------------------------------------------------------
# validate the shipped example


def test_validate_auth_container_example_from_other_cwd(outrider_bin, tmp_path):
    cfg = REPO / "config" / "auth-container.yaml"
    r = subprocess.run([outrider_bin, "validate", "--config", str(cfg)], cwd=str(tmp_path), capture_output=True,
                       text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:{r.stdout}\nstderr:{r.stderr}"
