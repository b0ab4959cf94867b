"""Helpers for the auth tests: mint JWTs (PyJWT + the example keys in config/examples/, plus keys
generated once per process), build JWKS documents, forge broken tokens byte by byte, and make
htpasswd / API key files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "config" / "examples"
ISSUER = "https://issuer.example"
AUDIENCE = "app"

# config/examples/README.md
API_KEY_PLAIN = ("ci-bot", "example-key-ci-bot-6f1d2c0a")
API_KEY_SHA256 = ("reporting", "example-key-reporting-93ab41e7")
BASIC_BCRYPT = ("alice", "alice-example-password")
BASIC_SHA = ("bob", "bob-example-password")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def _int_b64(n: int, length: int | None = None) -> str:
    length = length or (n.bit_length() + 7) // 8
    return b64url(n.to_bytes(length, "big"))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Keys:
    """The example keys and generated ones; `jwks()` publishes their public halves."""

    def __init__(self):
        self.example_rsa_pem = (EXAMPLES / "jwt-private" / "example-rsa.pem").read_bytes()
        self.example_ec_pem = (EXAMPLES / "jwt-private" / "example-ec.pem").read_bytes()
        self.example_rsa = serialization.load_pem_private_key(self.example_rsa_pem, None)
        self.example_ec = serialization.load_pem_private_key(self.example_ec_pem, None)
        self.example_jwks = json.loads((EXAMPLES / "jwks.json").read_text())
        # generated: an RSA key usable by every RS*/PS* algorithm (no "alg" member), an EC P-384
        # key, an Ed25519 key, an HMAC secret long enough for HS512; and keys NOT in the JWKS.
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec384 = ec.generate_private_key(ec.SECP384R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.hmac = hashlib.sha512(b"outrider-integration-hmac-secret").digest()  # 64 bytes
        self.stranger_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    # kid → (signing key, algorithms)
    def signer(self, alg: str):
        if alg == "RS256":
            return self.example_rsa, "example-rsa"
        if alg == "ES256":
            return self.example_ec, "example-ec"
        if alg in ("RS384", "RS512", "PS256", "PS384", "PS512"):
            return self.rsa, "gen-rsa"
        if alg == "ES384":
            return self.ec384, "gen-ec384"
        if alg == "EdDSA":
            return self.ed, "gen-ed"
        if alg in ("HS256", "HS384", "HS512"):
            return self.hmac, "gen-hs"
        raise ValueError(alg)

    def jwks(self) -> dict:
        keys = list(self.example_jwks["keys"])
        pub = self.rsa.public_key().public_numbers()
        keys.append({"kty": "RSA", "kid": "gen-rsa", "use": "sig", "n": _int_b64(pub.n), "e": _int_b64(pub.e)})
        p384 = self.ec384.public_key().public_numbers()
        keys.append({"kty": "EC", "kid": "gen-ec384", "use": "sig", "crv": "P-384",
                     "x": _int_b64(p384.x, 48), "y": _int_b64(p384.y, 48)})
        raw = self.ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        keys.append({"kty": "OKP", "kid": "gen-ed", "use": "sig", "crv": "Ed25519", "x": b64url(raw)})
        keys.append({"kty": "oct", "kid": "gen-hs", "use": "sig", "k": b64url(self.hmac)})
        return {"keys": keys}

    def example_rsa_public_pem(self) -> bytes:
        return self.example_rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


_KEYS: Keys | None = None


def keys() -> Keys:
    global _KEYS
    if _KEYS is None:
        _KEYS = Keys()
    return _KEYS


ALL_ALGS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
            "ES256", "ES384", "EdDSA"]


def claims(**over) -> dict:
    now = int(time.time())
    c = {"iss": ISSUER, "aud": AUDIENCE, "sub": "carol", "email": "carol@example.com",
         "iat": now, "exp": now + 300}
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def mint(alg: str = "RS256", kid: str | None = "__default__", headers: dict | None = None, **claim_over) -> str:
    """A valid token for `alg` signed with the matching key (kid chosen to match unless given)."""
    key, default_kid = keys().signer(alg)
    h = dict(headers or {})
    if kid == "__default__":
        h["kid"] = default_kid
    elif kid is not None:
        h["kid"] = kid
    return pyjwt.encode(claims(**claim_over), key, algorithm=alg, headers=h or None)


def mint_with(key, alg: str, kid: str | None, payload: dict) -> str:
    return pyjwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def forge_hmac(secret: bytes, header: dict, payload: dict, digest=hashlib.sha256) -> str:
    """A JWS signed by hand (PyJWT refuses a PEM as an HMAC secret, which is the point)."""
    signing_input = b64url_json(header) + "." + b64url_json(payload)
    sig = hmac.new(secret, signing_input.encode(), digest).digest()
    return signing_input + "." + b64url(sig)


def unsigned(header: dict, payload: dict, signature: str = "") -> str:
    return b64url_json(header) + "." + b64url_json(payload) + "." + signature


def write_jwks(path: Path, jwks: dict | None = None) -> str:
    path.write_text(json.dumps(jwks or keys().jwks(), indent=2))
    return str(path)


def bcrypt_entry(user: str, password: str, rounds: int = 4) -> str:
    import bcrypt

    return f"{user}:" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds, prefix=b"2b")).decode()


def sha_entry(user: str, password: str) -> str:
    return f"{user}:{{SHA}}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
