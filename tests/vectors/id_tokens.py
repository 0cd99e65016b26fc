#!/usr/bin/env python3
"""Writes id_tokens.json: signed ID tokens for every algorithm latchkey accepts and for
every way an ID token must be refused, with the key set that checks them.

The JSON file is what the tests read; this script only documents how its bytes were made
(run it again and the PSS and ECDSA signatures differ, which changes no test). Needs the
`cryptography` package.
"""
import base64, hashlib, hmac, json, pathlib
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://idp.example"
CLIENT = "latchkey-cli"
NONCE = "n-0S6_WzA2Mj"
ACCESS = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
IAT = 1767225600  # 2026-01-01T00:00:00Z; the tests check at IAT + 400
EXP = IAT + 3600


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n: int, length: int = 0) -> bytes:
    return n.to_bytes(max(length, (n.bit_length() + 7) // 8), "big")


rsa1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
p256 = ec.generate_private_key(ec.SECP256R1())
p256_other = ec.generate_private_key(ec.SECP256R1())
p384 = ec.generate_private_key(ec.SECP384R1())
ed = ed25519.Ed25519PrivateKey.generate()


def rsa_jwk(key, kid):
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "sig", "n": b64(uint(numbers.n)), "e": b64(uint(numbers.e))}


def ec_jwk(key, kid, crv, size):
    numbers = key.public_key().public_numbers()
    return {"kty": "EC", "kid": kid, "crv": crv, "x": b64(uint(numbers.x, size)), "y": b64(uint(numbers.y, size))}


def ed_jwk(key, kid):
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(raw)}


SIGNERS = {
    "RS256": (rsa1, "rsa-1"), "RS384": (rsa1, "rsa-1"), "RS512": (rsa1, "rsa-1"),
    "PS256": (rsa1, "rsa-1"), "PS384": (rsa1, "rsa-1"), "PS512": (rsa1, "rsa-1"),
    "ES256": (p256, "ec-256"), "ES384": (p384, "ec-384"), "EdDSA": (ed, "ed-1"),
}
HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def signature(alg, key, signing_input):
    if alg == "EdDSA":
        return key.sign(signing_input)
    hash_ = HASHES[alg[2:]]()
    if alg.startswith("RS"):
        return key.sign(signing_input, padding.PKCS1v15(), hash_)
    if alg.startswith("PS"):
        return key.sign(signing_input, padding.PSS(mgf=padding.MGF1(hash_), salt_length=hash_.digest_size), hash_)
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hash_)))
    size = 32 if alg == "ES256" else 48
    return uint(r, size) + uint(s, size)


def at_hash(alg, token=ACCESS):
    digest = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}[
        "512" if alg == "EdDSA" else alg[2:]](token.encode()).digest()
    return b64(digest[: len(digest) // 2])


def claims(alg="RS256", **changes):
    base = {"iss": ISSUER, "sub": "248289761001", "aud": CLIENT, "exp": EXP, "iat": IAT,
            "nonce": NONCE, "at_hash": at_hash(alg), "email": "jane@example.com",
            "email_verified": True, "name": "Jane Doe"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(alg, payload, key=None, kid=None, header=None):
    default_key, default_kid = SIGNERS[alg]
    head = {"alg": alg, "kid": kid or default_kid, "typ": "JWT"} if header is None else header
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(signature(alg, key or default_key, signing_input.encode()))}"


cases = []


def case(name, token, expect, **options):
    cases.append({"name": name, "token": token, "expect": expect, **options})


for alg in SIGNERS:
    case(f"{alg} signed by the provider", sign(alg, claims(alg)), "ok")

rs = lambda **changes: sign("RS256", claims(**changes))
case("iss of another issuer", rs(iss="https://evil.example"), "issuer")
case("iss with a trailing slash", rs(iss=ISSUER + "/"), "issuer")
case("iss missing", rs(iss=None), "issuer")
case("sub missing", rs(sub=None), "subject")
case("sub empty", rs(sub=""), "subject")
case("aud of another client", rs(aud="other-client"), "audience")
case("aud missing", rs(aud=None), "audience")
case("several audiences without azp", rs(aud=[CLIENT, "api"]), "azp")
case("several audiences with azp of another client", rs(aud=[CLIENT, "api"], azp="api"), "azp")
case("several audiences with azp of this client", rs(aud=[CLIENT, "api"], azp=CLIENT), "ok")
case("azp of another client", rs(azp="other-client"), "azp")
case("expired an hour ago", rs(exp=IAT - 3600), "expired")
case("expired 61 s before the check (leeway 60 s)", rs(exp=IAT + 400 - 61), "expired")
case("expired 59 s before the check: within the leeway", rs(exp=IAT + 400 - 59), "ok")
case("exp missing", rs(exp=None), "expired")
case("exp a string", rs(exp=str(EXP)), "expired")
case("iat an hour ahead", rs(iat=IAT + 4000), "not_yet_valid")
case("iat missing", rs(iat=None), "not_yet_valid")
case("nbf an hour ahead", rs(nbf=IAT + 4000), "not_yet_valid")
case("nbf in the past", rs(nbf=IAT), "ok")
case("nonce of another login", rs(nonce="another-login"), "nonce")
case("nonce missing", rs(nonce=None), "nonce")
case("at_hash of another access token", rs(at_hash=at_hash("RS256", "another")), "at_hash")
case("at_hash absent", rs(at_hash=None), "ok")
case("auth_time older than max_age", rs(auth_time=IAT - 1000), "auth_time", max_age=300)
case("auth_time missing with max_age", rs(), "auth_time", max_age=300)
case("auth_time within max_age", rs(auth_time=IAT), "ok", max_age=600)
case("signed by a key the provider does not publish", sign("RS256", claims(), key=rsa2, kid="rsa-2"), "key")
case("signed by another key under the provider's kid", sign("RS256", claims(), key=rsa2), "signature")
case("ES256 signed by another P-256 key", sign("ES256", claims("ES256"), key=p256_other), "signature")
case("RS256 naming the EC key", sign("RS256", claims(), kid="ec-256"), "key")
case("no kid, one RSA key fits", sign("RS256", claims(), header={"alg": "RS256"}), "ok")
case("typ at+jwt", sign("RS256", claims(), header={"alg": "RS256", "kid": "rsa-1", "typ": "at+jwt"}), "malformed")
case("crit extension", sign("RS256", claims(), header={"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1}), "malformed")
unsecured = f"{b64(json.dumps({'alg': 'none'}).encode())}.{b64(json.dumps(claims()).encode())}."
case("alg none", unsecured, "algorithm")
# The classic confusion: HS256 with the RSA public key as the HMAC secret.
public_n = rsa_jwk(rsa1, "rsa-1")["n"].encode()
hs_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': 'rsa-1'}).encode())}.{b64(json.dumps(claims()).encode())}"
case("HS256 keyed with the public key", f"{hs_input}.{b64(hmac.new(public_n, hs_input.encode(), hashlib.sha256).digest())}", "algorithm")
case("ES384 not in the allow-list", sign("ES384", claims("ES384")), "algorithm", algorithms=["RS256", "ES256"])
case("encrypted (five parts)", "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", "malformed")

# Microsoft's multi-tenant issuer.
tenant = "9188040d-6c67-4c5b-b112-36a304b66dad"
template = "https://login.microsoftonline.com/{tenantid}/v2.0"
entra = lambda tid=tenant: sign("RS256", claims(iss=f"https://login.microsoftonline.com/{tenant}/v2.0", tid=tid))
case("tenant issuer with its own tid", entra(), "ok", issuer=template, tenant_issuer=True)
case("a tenant's token for the common issuer, no template", entra(), "issuer",
     issuer="https://login.microsoftonline.com/common/v2.0")
case("tenant issuer with another tenant's tid", entra(tid="72f988bf-86f1-41af-91ab-2d7cd011db47"), "issuer", issuer=template, tenant_issuer=True)

keys = {"keys": [
    rsa_jwk(rsa1, "rsa-1"),
    ec_jwk(p256, "ec-256", "P-256", 32),
    ec_jwk(p384, "ec-384", "P-384", 48),
    ed_jwk(ed, "ed-1"),
    {"kty": "oct", "kid": "hmac", "k": b64(b"a shared secret latchkey never uses")},
]}
rotated = {"keys": [rsa_jwk(rsa2, "rsa-2")]}

document = {
    "issuer": ISSUER, "client_id": CLIENT, "nonce": NONCE, "access_token": ACCESS,
    "checked_at": IAT + 400, "algorithms": list(SIGNERS), "keys": keys, "rotated_keys": rotated,
    "cases": cases,
}
out = pathlib.Path(__file__).with_name("id_tokens.json")
out.write_text(json.dumps(document, indent=1) + "\n")
print(f"{len(cases)} cases -> {out}")
