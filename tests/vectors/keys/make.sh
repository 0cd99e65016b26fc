#!/usr/bin/env bash
# Makes the test keys of tests/tests/signing.rs with OpenSSL 3. They sign nothing real;
# run again only to add a key (the golden values in the tests name these exact keys).
set -euo pipefail
cd "$(dirname "$0")"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa2048.pkcs8.pem
openssl pkey -in rsa2048.pkcs8.pem -traditional -out rsa2048.pkcs1.pem
openssl pkcs8 -topk8 -nocrypt -in rsa2048.pkcs8.pem -outform DER -out rsa2048.pkcs8.der
openssl pkey -in rsa2048.pkcs8.pem -outform DER -traditional -out rsa2048.pkcs1.der
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa1024.pkcs8.pem
openssl ecparam -name prime256v1 -genkey -out p256.sec1.pem
openssl pkcs8 -topk8 -nocrypt -in p256.sec1.pem -out p256.pkcs8.pem
openssl pkey -in p256.pkcs8.pem -outform DER -traditional -out p256.sec1.der
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out p384.pkcs8.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out p521.pkcs8.pem
openssl genpkey -algorithm ED25519 -out ed25519.pkcs8.pem
openssl genpkey -algorithm X25519 -out x25519.pkcs8.pem
openssl pkcs8 -topk8 -in p256.pkcs8.pem -passout pass:secret -out p256.encrypted.pem
openssl pkey -in p256.pkcs8.pem -pubout -out p256.public.pem
openssl genpkey -algorithm RSA-PSS -pkeyopt rsa_keygen_bits:2048 -out rsapss.pkcs8.pem
# The same RSA and P-256 keys as private JWKs (Python's `cryptography`).
python3 - <<'PY'
import base64, json
from cryptography.hazmat.primitives.serialization import load_pem_private_key
def b64(number, length=None):
    raw = number.to_bytes(length or (number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
rsa = load_pem_private_key(open("rsa2048.pkcs8.pem", "rb").read(), None).private_numbers()
jwk = {"kty": "RSA", "kid": "rsa-1", "n": b64(rsa.public_numbers.n), "e": b64(rsa.public_numbers.e),
       "d": b64(rsa.d), "p": b64(rsa.p), "q": b64(rsa.q), "dp": b64(rsa.dmp1),
       "dq": b64(rsa.dmq1), "qi": b64(rsa.iqmp)}
json.dump(jwk, open("rsa2048.jwk.json", "w"), indent=1)
ec = load_pem_private_key(open("p256.pkcs8.pem", "rb").read(), None).private_numbers()
jwk = {"kty": "EC", "crv": "P-256", "kid": "ec-1", "alg": "ES256", "use": "sig",
       "x": b64(ec.public_numbers.x, 32), "y": b64(ec.public_numbers.y, 32),
       "d": b64(ec.private_value, 32)}
json.dump(jwk, open("p256.jwk.json", "w"), indent=1)
PY
# Self-signed certificates of three of them (Entra's certificate credentials name theirs).
for key in rsa2048 p256 ed25519; do
    openssl req -new -x509 -key "$key.pkcs8.pem" -subj "/CN=latchkey test $key" -days 36500 \
        -out "$key.cert.pem"
done
openssl x509 -in p256.cert.pem -outform DER -out p256.cert.der
