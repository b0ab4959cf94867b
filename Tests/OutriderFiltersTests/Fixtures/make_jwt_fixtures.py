#!/usr/bin/env python3
"""Mints the JWT fixtures for Tests/OutriderFiltersTests/JOSEInteropTests.swift.

Tokens are signed by another implementation (PyJWT over pyca/cryptography), so the Swift
verifier is checked against an independent signer for every algorithm, plus an attack set.
The output, jwt_fixtures.json beside this script, is checked in: the Swift tests do not need
Python. Re-run only to change the fixtures:

    python3 -m venv .venv-test && .venv-test/bin/pip install pyjwt cryptography
    .venv-test/bin/python Tests/OutriderFiltersTests/Fixtures/make_jwt_fixtures.py

It also re-checks the RFC 7515 / RFC 8037 example signatures that JOSEVectorTests.swift
hard-codes, with pyca/cryptography, and stops if one does not verify.

Keys are random on every run, so the output changes each time; that is fine.
"""

import base64
import hashlib
import hmac
import json
import os
import sys

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, ed448, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

NOW = 1_700_000_000
SKEW = 30
ISSUER = "https://issuer.example"
AUDIENCES = ["app", "other-app"]
LATER = NOW + 3600
ALL_ALGS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
            "ES256", "ES384", "EdDSA"]


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def int_bytes(value: int, length: int = 0) -> bytes:
    length = length or (value.bit_length() + 7) // 8
    return value.to_bytes(length, "big")


# ----------------------------------------------------------------------------------------------
# RFC vectors (the same strings as JOSEVectorTests.swift), checked with pyca/cryptography.

RFC_PAYLOAD = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
RFC_A1_K = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
RFC_A1 = ("eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9." + RFC_PAYLOAD
          + ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
RFC_A2_N = ("ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ")
RFC_A2 = ("eyJhbGciOiJSUzI1NiJ9." + RFC_PAYLOAD + "."
          "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw")
RFC_A3_X = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
RFC_A3_Y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
RFC_A3 = ("eyJhbGciOiJFUzI1NiJ9." + RFC_PAYLOAD + "."
          "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q")
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037 = ("eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
           "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg")


def check_rfc_vectors() -> None:
    def split(token):
        head, payload, sig = token.split(".")
        return f"{head}.{payload}".encode(), b64u_decode(sig)

    data, sig = split(RFC_A1)
    assert hmac.compare_digest(hmac.new(b64u_decode(RFC_A1_K), data, hashlib.sha256).digest(), sig), "A.1"

    data, sig = split(RFC_A2)
    key = rsa.RSAPublicNumbers(65537, int.from_bytes(b64u_decode(RFC_A2_N), "big")).public_key()
    key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())

    data, sig = split(RFC_A3)
    key = ec.EllipticCurvePublicNumbers(int.from_bytes(b64u_decode(RFC_A3_X), "big"),
                                        int.from_bytes(b64u_decode(RFC_A3_Y), "big"), ec.SECP256R1()).public_key()
    key.verify(encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")),
               data, ec.ECDSA(hashes.SHA256()))

    data, sig = split(RFC8037)
    private = ed25519.Ed25519PrivateKey.from_private_bytes(b64u_decode(RFC8037_D))
    public_raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert public_raw == b64u_decode(RFC8037_X), "RFC 8037 x"
    assert private.sign(data) == sig, "RFC 8037 A.4 signature"  # Ed25519 is deterministic
    private.public_key().verify(sig, data)
    try:
        private.public_key().verify(sig, data + b"x")
        raise AssertionError("tampered Ed25519 input verified")
    except InvalidSignature:
        pass


# ----------------------------------------------------------------------------------------------
# Keys and the key set.

def rsa_jwk(private, kid, alg=None):
    numbers = private.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": kid, "use": "sig", "n": b64u(int_bytes(numbers.n)), "e": b64u(int_bytes(numbers.e))}
    if alg:
        jwk["alg"] = alg
    return jwk


def ec_jwk(private, kid, crv, size):
    numbers = private.public_key().public_numbers()
    return {"kty": "EC", "kid": kid, "crv": crv, "x": b64u(int_bytes(numbers.x, size)),
            "y": b64u(int_bytes(numbers.y, size))}


def pem_public(private) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rsa3072_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
rsa_pinned_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)   # JWK alg RS256
rsa_weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)     # skipped: too small
p256_key = ec.generate_private_key(ec.SECP256R1())
p384_key = ec.generate_private_key(ec.SECP384R1())
p521_key = ec.generate_private_key(ec.SECP521R1())                                 # skipped: crv
ed_key = ed25519.Ed25519PrivateKey.generate()
ed448_key = ed448.Ed448PrivateKey.generate()                                        # skipped: crv
hmac64 = os.urandom(64)
hmac32 = os.urandom(32)
hmac16 = os.urandom(16)                                                             # skipped: too short

ed_pub = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
ed448_pub = ed448_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

off_curve = ec_jwk(p256_key, "ec-off-curve", "P-256", 32)
y = int.from_bytes(b64u_decode(off_curve["y"]), "big")
off_curve["y"] = b64u(int_bytes(y ^ 1, 32))

jwks = {"keys": [
    rsa_jwk(rsa_key, "rsa-1"),
    rsa_jwk(rsa3072_key, "rsa-3072"),
    rsa_jwk(rsa_pinned_key, "rsa-pinned", alg="RS256"),
    ec_jwk(p256_key, "ec-256", "P-256", 32),
    ec_jwk(p384_key, "ec-384", "P-384", 48),
    {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64u(ed_pub)},
    {"kty": "oct", "kid": "hmac-64", "k": b64u(hmac64)},
    {"kty": "oct", "kid": "hmac-32", "k": b64u(hmac32), "alg": "HS256"},
    # Skipped, each for its own reason:
    rsa_jwk(rsa_weak_key, "rsa-1024"),
    ec_jwk(p521_key, "ec-521", "P-521", 66),
    {"kty": "OKP", "kid": "ed-448", "crv": "Ed448", "x": b64u(ed448_pub)},
    {"kty": "oct", "kid": "hmac-16", "k": b64u(hmac16)},
    dict(rsa_jwk(rsa_key, "rsa-enc"), use="enc"),
    off_curve,
    {"kty": "EC", "kid": "ec-short-x", "crv": "P-256", "x": off_curve["x"][:-2], "y": off_curve["y"]},
    {"kty": "RSA", "kid": "rsa-no-e", "n": rsa_jwk(rsa_key, "x")["n"]},
    {"kty": "oct", "kid": "hmac-alg-mismatch", "k": b64u(hmac64), "alg": "RS256"},
    {"kty": "oct", "kid": "hmac-64-for-hs512-too-short", "k": b64u(hmac32), "alg": "HS512"},
    {"kty": "PQ", "kid": "unknown-kty"},
    {"kty": "RSA", "kid": "rsa-alg-unknown", "alg": "RSA-OAEP", "n": rsa_jwk(rsa_key, "x")["n"], "e": "AQAB"},
]}
LOADED = ["rsa-1", "rsa-3072", "rsa-pinned", "ec-256", "ec-384", "ed-1", "hmac-64", "hmac-32"]
SKIPPED = ["rsa-1024", "ec-521", "ed-448", "hmac-16", "rsa-enc", "ec-off-curve", "ec-short-x", "rsa-no-e",
           "hmac-alg-mismatch", "hmac-64-for-hs512-too-short", "unknown-kty", "rsa-alg-unknown"]

SIGNING_KEYS = {
    "HS256": ("hmac-64", hmac64), "HS384": ("hmac-64", hmac64), "HS512": ("hmac-64", hmac64),
    "RS256": ("rsa-1", rsa_key), "RS384": ("rsa-3072", rsa3072_key), "RS512": ("rsa-1", rsa_key),
    "PS256": ("rsa-1", rsa_key), "PS384": ("rsa-1", rsa_key), "PS512": ("rsa-3072", rsa3072_key),
    "ES256": ("ec-256", p256_key), "ES384": ("ec-384", p384_key), "EdDSA": ("ed-1", ed_key),
}


def claims(**overrides):
    base = {"iss": ISSUER, "aud": "app", "sub": "alice", "email": "alice@example.com",
            "groups": ["admins", "dev"], "iat": NOW - 10, "exp": LATER}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(alg, payload=None, headers=None, kid="default"):
    """PyJWT-signed token; `kid` defaults to the algorithm's key, None leaves it out."""
    key_id, key = SIGNING_KEYS[alg]
    head = dict(headers or {})
    if kid == "default":
        head["kid"] = key_id
    elif kid is not None:
        head["kid"] = kid
    if isinstance(payload, (bytes, bytearray)):
        return jwt.PyJWS().encode(bytes(payload), key, algorithm=alg, headers=head)
    payload = payload if payload is not None else claims()
    try:
        return jwt.encode(payload, key, algorithm=alg, headers=head)
    except (TypeError, ValueError):
        # PyJWT's JWT layer refuses ill-typed registered claims; its JWS layer signs any bytes.
        return jwt.PyJWS().encode(json.dumps(payload, separators=(",", ":")).encode(), key, algorithm=alg,
                                  headers=head)


def raw_token(header: bytes, payload: bytes, sign) -> str:
    """A token whose header and payload bytes are exactly as given, signed by `sign(input)`."""
    signing_input = f"{b64u(header)}.{b64u(payload)}".encode()
    return signing_input.decode() + "." + b64u(sign(signing_input))


def hs256(secret):
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def rs256(private):
    return lambda data: private.sign(data, padding.PKCS1v15(), hashes.SHA256())


def es256_raw(private):
    def sign(data):
        r, s = decode_dss_signature(private.sign(data, ec.ECDSA(hashes.SHA256())))
        return int_bytes(r, 32) + int_bytes(s, 32)
    return sign


cases = []


def case(name, token, expect, **extra):
    entry = {"name": name, "token": token, "expect": expect}
    entry.update(extra)
    cases.append(entry)


# Valid tokens, one or more per algorithm.
for alg in ALL_ALGS:
    case(f"valid {alg}", mint(alg), "ok", sub="alice", exp=LATER)
    case(f"valid {alg} without kid", mint(alg, kid=None), "ok", sub="alice", exp=LATER)
for i in range(20):  # ECDSA r/s with and without high bits and leading zeros
    case(f"valid ES256 #{i}", mint("ES256", claims(jti=str(i))), "ok", sub="alice")
    case(f"valid ES384 #{i}", mint("ES384", claims(jti=str(i))), "ok", sub="alice")
case("valid HS256 with the 32-byte key pinned to HS256",
     jwt.encode(claims(), hmac32, algorithm="HS256", headers={"kid": "hmac-32"}), "ok", sub="alice")
case("valid RS256 with the pinned key", jwt.encode(claims(), rsa_pinned_key, algorithm="RS256",
                                                   headers={"kid": "rsa-pinned"}), "ok", sub="alice")
case("valid typ at+jwt", mint("RS256", headers={"typ": "at+jwt"}), "ok", sub="alice")
case("valid typ AT+JWT casing", mint("RS256", headers={"typ": "AT+JWT"}), "ok", sub="alice")
case("valid aud array with one match", mint("ES256", claims(aud=["x", "other-app"])), "ok", sub="alice")
case("valid no exp", mint("EdDSA", claims(exp=None)), "ok", sub="alice", exp=None)
case("valid exp inside the skew", mint("RS256", claims(exp=NOW - SKEW + 1)), "ok", sub="alice", exp=NOW - SKEW + 1)
case("valid nbf inside the skew", mint("RS256", claims(nbf=NOW + SKEW)), "ok", sub="alice")
case("valid fractional exp", mint("HS256", claims(exp=LATER + 0.5)), "ok", sub="alice", exp=LATER)
case("valid numeric sub", mint("HS256", claims(sub=12345)), "ok", sub="12345")
case("valid unicode claims", mint("HS256", claims(sub="żółw 🐢")), "ok", sub="żółw 🐢")
nested32 = b'{"sub":"alice","iss":"' + ISSUER.encode() + b'","aud":"app","deep":' + b"[" * 31 + b"]" * 31 + b"}"
case("valid nesting depth 32", mint("HS256", nested32), "ok", sub="alice", exp=None)

# Time.
case("expired", mint("RS256", claims(exp=NOW - 100)), "expired")
case("expired at the skew edge", mint("ES256", claims(exp=NOW - SKEW)), "expired")
case("nbf in the future", mint("RS256", claims(nbf=NOW + 100)), "notYetValid")
case("nbf just past the skew", mint("EdDSA", claims(nbf=NOW + SKEW + 1)), "notYetValid")
case("exp is a string", mint("HS256", claims(exp=str(LATER))), "malformed")
case("nbf is a string", mint("HS256", claims(nbf="0")), "malformed")

# Issuer and audience.
case("wrong iss", mint("RS256", claims(iss="https://evil.example")), "wrongIssuer")
case("missing iss", mint("RS256", claims(iss=None)), "wrongIssuer")
case("iss is not a string", mint("HS256", claims(iss=["https://issuer.example"])), "wrongIssuer")
case("wrong aud", mint("ES384", claims(aud="someone-else")), "wrongAudience")
case("wrong aud array", mint("ES384", claims(aud=["a", "b"])), "wrongAudience")
case("missing aud", mint("ES384", claims(aud=None)), "wrongAudience")
case("aud is a number", mint("HS256", claims(aud=7)), "wrongAudience")

# alg none and the allow-list.
none_payload = b64u(json.dumps(claims()).encode())
for spelling in ["none", "None", "NONE", "nOnE"]:
    head = b64u(json.dumps({"alg": spelling, "typ": "JWT"}).encode())
    case(f"alg {spelling}, empty signature", f"{head}.{none_payload}.", "algorithmNone")
    case(f"alg {spelling}, some signature", f"{head}.{none_payload}.{b64u(b'x' * 32)}", "algorithmNone")
case("alg ES512 (unsupported)", raw_token(b'{"alg":"ES512","kid":"ec-256"}', json.dumps(claims()).encode(),
                                          lambda d: b"\0" * 132), "algorithmNotAllowed")
case("alg hs256 lowercase", raw_token(b'{"alg":"hs256","kid":"hmac-64"}', json.dumps(claims()).encode(),
                                      hs256(hmac64)), "algorithmNotAllowed")
case("alg not in the configured list", mint("HS256"), "algorithmNotAllowed", algorithms=["RS256", "ES256", "EdDSA"])
case("alg missing", raw_token(b'{"kid":"hmac-64"}', json.dumps(claims()).encode(), hs256(hmac64)), "malformed")
case("alg not a string", raw_token(b'{"alg":["HS256"]}', json.dumps(claims()).encode(), hs256(hmac64)), "malformed")

# Key confusion.
rsa_pem = pem_public(rsa_key)
for label, kid in [("with the RSA kid", "rsa-1"), ("without kid", None)]:
    head = {"alg": "HS256", "typ": "JWT"}
    if kid:
        head["kid"] = kid
    token = raw_token(json.dumps(head).encode(), json.dumps(claims()).encode(), hs256(rsa_pem))
    case(f"HS256 signed with the RSA public key PEM {label}", token,
         "keyTypeMismatch" if kid else "badSignature")
    if kid:
        case(f"HS256 signed with the RSA public key PEM, HS256 not allowed", token, "algorithmNotAllowed",
             algorithms=["RS256", "PS256", "ES256"])
n_bytes = b64u_decode(rsa_jwk(rsa_key, "x")["n"])
case("HS256 signed with the RSA modulus bytes", raw_token(b'{"alg":"HS256","kid":"rsa-1"}',
                                                          json.dumps(claims()).encode(), hs256(n_bytes)),
     "keyTypeMismatch")
case("RS256 naming an HMAC kid", mint("RS256", kid="hmac-64"), "keyTypeMismatch")
case("ES256 naming the P-384 key", mint("ES256", kid="ec-384"), "keyTypeMismatch")
case("ES384 naming the P-256 key", mint("ES384", kid="ec-256"), "keyTypeMismatch")
case("EdDSA naming an EC key", mint("EdDSA", kid="ec-256"), "keyTypeMismatch")
case("PS256 with the key pinned to RS256", jwt.encode(claims(), rsa_pinned_key, algorithm="PS256",
                                                      headers={"kid": "rsa-pinned"}), "keyTypeMismatch")
case("HS512 with the 32-byte key", jwt.encode(claims(), hmac32, algorithm="HS512",
                                              headers={"kid": "hmac-32"}), "keyTypeMismatch")
case("unknown kid", mint("RS256", kid="nope"), "unknownKey")
case("kid of a skipped 1024-bit key", jwt.encode(claims(), rsa_weak_key, algorithm="RS256",
                                                 headers={"kid": "rsa-1024"}), "unknownKey")
case("kid is not a string", raw_token(b'{"alg":"HS256","kid":1}', json.dumps(claims()).encode(), hs256(hmac64)),
     "malformed")
case("RS256 signed by a key not in the set, no kid",
     jwt.encode(claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256"),
     "badSignature")
case("ES256 signed by a foreign key with our kid",
     jwt.encode(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": "ec-256"}),
     "badSignature")

# Signatures.
for alg in ALL_ALGS:
    good = mint(alg)
    head, payload, sig = good.split(".")
    forged = b64u(json.dumps(claims(sub="mallory")).encode())
    case(f"tampered payload {alg}", f"{head}.{forged}.{sig}", "badSignature")
    case(f"empty signature {alg}", f"{head}.{payload}.", "badSignature")
    case(f"stripped signature {alg}", f"{head}.{payload}", "malformed")
    raw = bytearray(b64u_decode(sig))
    raw[len(raw) // 2] ^= 0x01
    case(f"flipped signature bit {alg}", f"{head}.{payload}.{b64u(bytes(raw))}", "badSignature")
    case(f"truncated signature {alg}", f"{head}.{payload}.{b64u(bytes(raw[:-1]))}", "badSignature")

es = mint("ES256")
head, payload, sig = es.split(".")
rs = b64u_decode(sig)
der = encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))
case("ES256 signature DER-encoded instead of r||s", f"{head}.{payload}.{b64u(der)}", "badSignature")
case("ES256 signature of 63 bytes", f"{head}.{payload}.{b64u(rs[:63])}", "badSignature")
case("ES256 signature of 65 bytes", f"{head}.{payload}.{b64u(rs + bytes(1))}", "badSignature")
case("ES256 signature of 96 bytes (ES384 size)", f"{head}.{payload}.{b64u(rs + rs[:32])}", "badSignature")
case("ES256 signature all zero", f"{head}.{payload}.{b64u(bytes(64))}", "badSignature")
n_order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
r, s = int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big")
case("ES256 high-s twin of a valid signature (ECDSA malleability: still valid)",
     f"{head}.{payload}.{b64u(int_bytes(r, 32) + int_bytes(n_order - s, 32))}", "ok", sub="alice")
case("ES256 with s = n (out of range)", f"{head}.{payload}.{b64u(int_bytes(r, 32) + int_bytes(n_order, 32))}",
     "badSignature")
case("ES256 with r = 0", f"{head}.{payload}.{b64u(bytes(32) + int_bytes(s, 32))}", "badSignature")
ps = jwt.encode(claims(), rsa_key, algorithm="PS256", headers={"kid": "rsa-1"})
head, payload, _ = ps.split(".")
max_salt = rsa_key.sign(f"{head}.{payload}".encode(),
                        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
                        hashes.SHA256())
case("PS256 with a salt longer than the hash (RFC 7518 wants hash length)", f"{head}.{payload}.{b64u(max_salt)}",
     "badSignature")
pss_mgf_sha1 = rsa_key.sign(f"{head}.{payload}".encode(),
                            padding.PSS(mgf=padding.MGF1(hashes.SHA1()), salt_length=32), hashes.SHA256())
case("PS256 with MGF1-SHA1", f"{head}.{payload}.{b64u(pss_mgf_sha1)}", "badSignature")
rs256_as_ps = rsa_key.sign(f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
case("PS256 header over a PKCS#1 v1.5 signature", f"{head}.{payload}.{b64u(rs256_as_ps)}", "badSignature")

# Encoding and structure.
good = mint("RS256")
head, payload, sig = good.split(".")
case("2 parts", f"{head}.{payload}", "malformed")
case("4 parts", f"{head}.{payload}.{sig}.{sig}", "malformed")
case("5 parts (JWE shape)", f"{head}.{payload}.{sig}.{sig}.{sig}", "malformed")
case("1 part", head, "malformed")
case("empty", "", "malformed")
case("dots only", "..", "malformed")
case("padded signature", f"{head}.{payload}.{sig}" + "=" * (-len(sig) % 4 or 4), "malformed")
case("padded header", f"{head}{'=' * (-len(head) % 4 or 4)}.{payload}.{sig}", "malformed")
case("standard-alphabet signature", f"{head}.{payload}.{sig.replace('-', '+').replace('_', '/')}"
     if ("-" in sig or "_" in sig) else f"{head}.{payload}.+{sig[1:]}", "malformed")
case("bad character in payload", f"{head}.{payload[:10]}*{payload[11:]}.{sig}", "malformed")
case("space in payload", f"{head}.{payload[:10]} {payload[10:]}.{sig}", "malformed")
case("newline in signature", f"{head}.{payload}.{sig[:20]}\n{sig[20:]}", "malformed")
case("bearer prefix left in", f"Bearer {good}", "malformed")
case("signature of length 4n+1", f"{head}.{payload}.{sig + 'AAAA'[: (1 - len(sig)) % 4]}", "malformed")
# Non-canonical trailing bits: the header {"alg":"RS256"...} encodes to a length with spare bits.
hdr_bytes = b64u_decode(head)
noncanon = None
for extra in range(3):
    h = b64u(hdr_bytes + b" " * extra)
    if len(h) % 4 in (2, 3):
        last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(h[-1])
        noncanon = h[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last | 1]
        break
# Signed over the non-canonical text, so only the decoder can refuse it.
noncanon_input = f"{noncanon}.{payload}".encode()
case("non-canonical base64url trailing bits in header (signed)",
     f"{noncanon}.{payload}.{b64u(rs256(rsa_key)(noncanon_input))}", "malformed")
case("header is a JSON array", raw_token(b'["HS256"]', json.dumps(claims()).encode(), hs256(hmac64)), "malformed")
case("header is not JSON", raw_token(b"alg=HS256", json.dumps(claims()).encode(), hs256(hmac64)), "malformed")
case("payload is a JSON array (signed)", mint("HS256", b"[1,2]"), "malformed")
case("payload is not JSON (signed)", mint("HS256", b"hello"), "malformed")
case("payload with trailing garbage (signed)", mint("HS256", json.dumps(claims()).encode() + b" x"), "malformed")
case("typ JOSE", mint("RS256", headers={"typ": "JOSE"}), "malformed")
case("typ not a string", mint("RS256", headers={"typ": 1}), "malformed")
case("crit header", mint("RS256", headers={"crit": ["exp"], "exp": LATER}), "malformed")
case("crit header, b64 false", raw_token(b'{"alg":"HS256","kid":"hmac-64","b64":false,"crit":["b64"]}',
                                         json.dumps(claims()).encode(), hs256(hmac64)), "malformed")
case("embedded jwk header is ignored (key comes from the set)",
     raw_token(json.dumps({"alg": "RS256", "jwk": rsa_jwk(rsa_weak_key, "attacker")}).encode(),
               json.dumps(claims()).encode(), rs256(rsa_weak_key)), "badSignature")
case("jku header is ignored", raw_token(json.dumps({"alg": "HS256", "jku": "https://evil.example/jwks",
                                                    "kid": "evil"}).encode(),
                                        json.dumps(claims()).encode(), hs256(b"k" * 32)), "unknownKey")

big = mint("RS256", claims(pad="x" * 9000))
case("oversized token", big, "tooLarge")
case("oversized token, larger limit", big, "ok", maxTokenBytes=16384, sub="alice")

# Strict JSON inside signed tokens.
dup = (b'{"iss":"' + ISSUER.encode() + b'","aud":"app","sub":"alice","sub":"admin","exp":' + str(LATER).encode() + b"}")
case("duplicate claim names (signed)", mint("HS256", dup), "malformed")
dup_escaped = (b'{"iss":"' + ISSUER.encode() + b'","aud":"app","sub":"alice","\\u0073ub":"admin"}')
case("duplicate claim names via an escape (signed)", mint("HS256", dup_escaped), "malformed")
case("duplicate alg in header", raw_token(b'{"alg":"none","alg":"HS256","kid":"hmac-64"}',
                                          json.dumps(claims()).encode(), hs256(hmac64)), "malformed")
deep = b'{"sub":"alice","deep":' + b"[" * 40 + b"]" * 40 + b"}"
case("deeply nested payload (signed)", mint("HS256", deep), "malformed")
nested33 = b'{"sub":"alice","deep":' + b"[" * 32 + b"]" * 32 + b"}"
case("nesting depth 33 (signed)", mint("HS256", nested33), "malformed")
case("invalid UTF-8 in payload (signed)", mint("HS256", b'{"sub":"al\xffice","aud":"app"}'), "malformed")
case("overlong UTF-8 in payload (signed)", mint("HS256", b'{"sub":"\xc0\xafx","aud":"app"}'), "malformed")
case("UTF-8 surrogate in payload (signed)", mint("HS256", b'{"sub":"\xed\xa0\x80","aud":"app"}'), "malformed")
case("lone surrogate escape in payload (signed)", mint("HS256", b'{"sub":"\\ud800","aud":"app"}'), "malformed")
case("invalid UTF-8 in header", raw_token(b'{"alg":"HS256","kid":"hmac-64","x":"\xfe"}',
                                          json.dumps(claims()).encode(), hs256(hmac64)), "malformed")
case("comment in payload (signed)", mint("HS256", b'{"sub":"alice" /* hi */}'), "malformed")
case("trailing comma in payload (signed)", mint("HS256", b'{"sub":"alice",}'), "malformed")
case("NaN exp (signed)", mint("HS256", b'{"sub":"alice","exp":NaN}'), "malformed")
case("BOM before payload (signed)", mint("HS256", b"\xef\xbb\xbf" + json.dumps(claims()).encode()), "malformed")


def main() -> None:
    check_rfc_vectors()
    out = {
        "generator": "make_jwt_fixtures.py (PyJWT %s, cryptography)" % jwt.__version__,
        "now": NOW, "skew": SKEW, "issuer": ISSUER, "audiences": AUDIENCES, "algorithms": ALL_ALGS,
        "jwks": json.dumps(jwks, indent=1), "loaded": LOADED, "skipped": SKIPPED,
        "cases": cases,
    }
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jwt_fixtures.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=True)
        f.write("\n")
    print(f"RFC vectors verified; wrote {len(cases)} cases to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
