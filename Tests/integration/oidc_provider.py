"""A real OpenID Connect provider for the OIDC tests, built on Authlib's authorization server
(authorization code with PKCE required, OpenID Connect ID tokens signed RS256, refresh tokens,
client_secret_basic and client_secret_post) in a small Flask app with a login form.

It serves, on 127.0.0.1:
  /.well-known/openid-configuration   discovery
  /jwks                               the public signing key (RS256)
  /authorize                          GET: the login form; POST: checks the password, then
                                      Authlib answers with the redirect carrying the code
  /token                              Authlib's token endpoint (authorization_code, refresh_token)
  /userinfo                           claims for an access token
  /logout                             end-session endpoint: records id_token_hint, redirects to
                                      post_logout_redirect_uri

Nothing in the proxy is mocked: Outrider discovers this provider, fetches its keys, redirects
the browser to it, exchanges codes and refreshes tokens at it.

Run standalone:  python3 oidc_provider.py --port 9000   (users alice/alice-pw, bob/bob-pw, big/big-pw)
"""

from __future__ import annotations

import argparse
import html
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlparse, parse_qs, urlunparse

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.models import AuthorizationCodeMixin, ClientMixin, TokenMixin
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify, redirect, request
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey
from werkzeug.serving import WSGIRequestHandler, make_server


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


def new_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


@dataclass
class User:
    id: str
    password: str
    email: str | None
    name: str
    groups: list = field(default_factory=list)
    # False: the provider lets users set an email it never checked (the "nOAuth" case).
    email_verified: bool = True

    def get_user_id(self):
        return self.id


USERS = {
    "alice": User("alice-sub-1", "alice-pw", "alice@example.com", "alice", ["dev", "ops"]),
    "bob": User("bob-sub-2", "bob-pw", None, "bob", []),
    # claims alice's address without having proven it
    "mallory": User("mallory-sub-4", "mallory-pw", "alice@example.com", "mallory", [], email_verified=False),
    # enough groups that the ID token, and so the session, is well over 4 KiB
    "big": User("big-sub-3", "big-pw", "big@example.com", "big", [f"group-{i:04d}-{'x' * 24}" for i in range(180)]),
}


class Client(ClientMixin):
    def __init__(self, client_id, client_secret, redirect_uris, auth_methods):
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = redirect_uris
        self.auth_methods = auth_methods

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope):
        allowed = {"openid", "email", "profile", "groups", "offline_access"}
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        if endpoint == "token":
            return method in self.auth_methods
        return True

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in ("authorization_code", "refresh_token")


class AuthorizationCode(AuthorizationCodeMixin):
    def __init__(self, code, client_id, redirect_uri, scope, user, nonce, code_challenge, code_challenge_method):
        self.code = code
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.scope = scope
        self.user = user
        self.nonce = nonce
        self.code_challenge = code_challenge
        self.code_challenge_method = code_challenge_method
        self.auth_time = int(time.time())

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return self.auth_time

    def get_acr(self):
        return None

    def get_amr(self):
        return None


class Token(TokenMixin):
    def __init__(self, client_id, user, scope, access_token, refresh_token, expires_in):
        self.client_id = client_id
        self.user = user
        self.scope = scope
        self.access_token = access_token
        self.refresh_token = refresh_token
        self.expires_in = expires_in
        self.issued_at = int(time.time())
        self.revoked = False

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def is_expired(self):
        return False  # refresh tokens do not expire here; access tokens are checked at /userinfo

    def is_revoked(self):
        return self.revoked


class Provider:
    """One provider on 127.0.0.1 (a thread of this process). Settings may change between tests:
    token lifetimes, whether refresh tokens are issued, the signing key."""

    def __init__(self, clients: dict[str, tuple[str, list[str], list[str]]] | None = None,
                 access_token_lifetime=3600, id_token_lifetime=3600, issue_refresh_tokens=True, port=0,
                 ssl_context=None):
        self.lock = threading.Lock()
        self.access_token_lifetime = access_token_lifetime
        self.id_token_lifetime = id_token_lifetime
        self.issue_refresh_tokens = issue_refresh_tokens
        self.discovery_delay = 0.0   # seconds the discovery document takes (a slow provider)
        self.codes: dict[str, AuthorizationCode] = {}
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, Token] = {}
        self.events: list[tuple] = []   # ("token", grant_type, auth_method), ("logout", hint), ("login", user)
        self.key = new_key("key-1")
        self.clients: dict[str, Client] = {}
        for client_id, (secret, redirect_uris, methods) in (clients or {}).items():
            self.clients[client_id] = Client(client_id, secret, redirect_uris, methods)
        self.app = self._make_app()
        self.server = make_server("127.0.0.1", port, self.app, threaded=True, request_handler=QuietHandler,
                                  ssl_context=ssl_context)
        self.port = self.server.server_port
        self.issuer = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def add_client(self, client_id, secret, redirect_uris, methods=("client_secret_basic", "client_secret_post")):
        self.clients[client_id] = Client(client_id, secret, list(redirect_uris), list(methods))

    def rotate_key(self, kid):
        self.key = new_key(kid)

    def token_events(self, grant_type=None):
        with self.lock:
            return [e for e in self.events if e[0] == "token" and (grant_type is None or e[1] == grant_type)]

    def mint_id_token(self, user: User, audience, nonce=None, lifetime=None, key=None, extra=None):
        """An ID token as this provider signs them (for API clients presenting a bearer token)."""
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user.id, "aud": audience, "iat": now,
                  "exp": now + (lifetime if lifetime is not None else self.id_token_lifetime)}
        if user.email:
            claims["email"] = user.email
        if user.groups:
            claims["groups"] = user.groups
        if nonce:
            claims["nonce"] = nonce
        claims.update(extra or {})
        signing = key or self.key
        header = {"alg": "RS256", "kid": signing.kid}
        return jose_jwt.encode(header, claims, signing)

    # -- the Flask app --------------------------------------------------------------------

    def _make_app(self):
        provider = self
        app = Flask("outrider-test-oidc-provider")
        app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"authorization_code": 3600, "refresh_token": 3600}

        def query_client(client_id):
            return provider.clients.get(client_id)

        def save_token(token, req):
            t = Token(req.client.get_client_id(), req.user, token.get("scope", ""), token["access_token"],
                      token.get("refresh_token"), token.get("expires_in", 0))
            with provider.lock:
                provider.tokens[t.access_token] = t
                if t.refresh_token:
                    provider.refresh_tokens[t.refresh_token] = t

        server = AuthorizationServer(app, query_client=query_client, save_token=save_token)

        def expires_in(client, grant_type):
            return provider.access_token_lifetime

        from authlib.oauth2.rfc6750 import BearerTokenGenerator

        def gen_token(*args, **kwargs):
            return secrets.token_urlsafe(32)

        server.register_token_generator("default", BearerTokenGenerator(gen_token, gen_token, expires_in))

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

            def save_authorization_code(self, code, req):
                data = req.payload.data
                ac = AuthorizationCode(code, req.client.get_client_id(), data.get("redirect_uri"),
                                       req.scope, req.user, data.get("nonce"),
                                       data.get("code_challenge"), data.get("code_challenge_method"))
                with provider.lock:
                    provider.codes[code] = ac
                return ac

            def query_authorization_code(self, code, client):
                with provider.lock:
                    ac = provider.codes.get(code)
                if ac and ac.client_id == client.get_client_id():
                    return ac
                return None

            def delete_authorization_code(self, authorization_code):
                with provider.lock:
                    provider.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code):
                return authorization_code.user

            def generate_token(self, *args, **kwargs):
                token = super().generate_token(*args, **kwargs)
                if not provider.issue_refresh_tokens:
                    token.pop("refresh_token", None)
                return token

        class OIDCCode(OpenIDCode):
            def exists_nonce(self, nonce, req):
                with provider.lock:
                    return any(c.nonce == nonce for c in provider.codes.values())

            def resolve_client_private_key(self, client):
                return provider.key

            def get_client_algorithm(self, client):
                return "RS256"

            def get_encode_header(self, client):
                return {"alg": "RS256", "kid": provider.key.kid}

            def get_client_claims(self, client):
                return {"iss": provider.issuer, "aud": [client.get_client_id()],
                        "exp": int(time.time()) + provider.id_token_lifetime}

            def generate_user_info(self, user, scope):
                info = UserInfo(sub=user.id, name=user.name, preferred_username=user.name)
                if user.email:
                    info["email"] = user.email
                    info["email_verified"] = user.email_verified
                if user.groups:
                    info["groups"] = user.groups
                return info

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
            INCLUDE_NEW_REFRESH_TOKEN = True

            def authenticate_refresh_token(self, refresh_token):
                with provider.lock:
                    t = provider.refresh_tokens.get(refresh_token)
                if t and not t.revoked:
                    return t
                return None

            def authenticate_user(self, credential):
                return credential.user

            def revoke_old_credential(self, credential):
                with provider.lock:
                    credential.revoked = True

        server.register_grant(CodeGrant, [OIDCCode(require_nonce=True), CodeChallenge(required=True)])
        server.register_grant(RefreshGrant)

        @app.get("/.well-known/openid-configuration")
        def discovery():
            time.sleep(provider.discovery_delay)
            base = provider.issuer
            return jsonify({
                "issuer": base,
                "authorization_endpoint": base + "/authorize",
                "token_endpoint": base + "/token",
                "jwks_uri": base + "/jwks",
                "userinfo_endpoint": base + "/userinfo",
                "end_session_endpoint": base + "/logout",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile", "groups", "offline_access"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
            })

        @app.get("/jwks")
        def jwks():
            public = provider.key.as_dict(private=False)
            return jsonify({"keys": [public]})

        @app.route("/authorize", methods=["GET", "POST"])
        def authorize():
            if request.method == "GET":
                try:
                    server.get_consent_grant(end_user=None)
                except Exception as e:  # an invalid request: Authlib's error as the page
                    return f"invalid authorization request: {html.escape(str(e))}", 400
                action = "/authorize?" + request.query_string.decode()
                return (
                    "<!doctype html><html><body><h1>Sign in</h1>"
                    f'<form method="post" action="{html.escape(action, quote=True)}">'
                    '<input name="username"><input name="password" type="password">'
                    '<button type="submit">Sign in</button></form></body></html>'
                )
            user = USERS.get(request.form.get("username", ""))
            if not user or not secrets.compare_digest(user.password, request.form.get("password", "")):
                return "wrong user name or password", 401
            with provider.lock:
                provider.events.append(("login", user.name))
            grant = server.get_consent_grant(end_user=user)
            return server.create_authorization_response(grant=grant, grant_user=user)

        @app.post("/token")
        def token():
            grant_type = request.form.get("grant_type", "")
            method = "client_secret_basic" if request.headers.get("Authorization", "").startswith("Basic ") else (
                "client_secret_post" if "client_secret" in request.form else "none")
            with provider.lock:
                provider.events.append(("token", grant_type, method))
            return server.create_token_response()

        @app.get("/userinfo")
        def userinfo():
            auth = request.headers.get("Authorization", "")
            with provider.lock:
                t = provider.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
            if not t or t.issued_at + t.expires_in < time.time():
                return jsonify({"error": "invalid_token"}), 401
            return jsonify({"sub": t.user.id, "email": t.user.email})

        @app.get("/logout")
        def logout():
            with provider.lock:
                provider.events.append(("logout", request.args.get("id_token_hint"), request.args.get("client_id")))
            after = request.args.get("post_logout_redirect_uri")
            if after:
                return redirect(after)
            return "signed out at the provider\n"

        return app


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--client", default="outrider")
    parser.add_argument("--secret", default="outrider-secret")
    parser.add_argument("--redirect", default="http://127.0.0.1:4180/oauth2/callback")
    args = parser.parse_args()
    p = Provider({args.client: (args.secret, [args.redirect], ["client_secret_basic", "client_secret_post"])}, port=args.port)
    print(f"issuer {p.issuer}", flush=True)
    try:
        p.thread.join()
    except KeyboardInterrupt:
        p.close()


if __name__ == "__main__":
    main()
