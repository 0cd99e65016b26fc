//! Checking the JWTs clients sign (RFC 7515, RFC 7517): `private_key_jwt` client
//! assertions (RFC 7523) and DPoP proofs (RFC 9449), with the key's thumbprint
//! (RFC 7638).

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// The largest JWT looked at; a client's assertion or proof is well under 4 KiB.
const MAX_JWT: usize = 16 * 1024;

/// A compact JWS, decoded but not yet checked.
pub(crate) struct Jwt<'a> {
    pub(crate) header: Map<String, Value>,
    pub(crate) claims: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> Jwt<'a> {
    /// Splits and decodes `token`: three BASE64URL parts (no padding), a JSON object header
    /// and a JSON object payload.
    pub(crate) fn decode(token: &'a str) -> Result<Jwt<'a>, &'static str> {
        if token.len() > MAX_JWT {
            return Err("the JWT is too large");
        }
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the JWT is not three dot-separated parts");
        };
        let object = |part: &str| -> Result<Map<String, Value>, &'static str> {
            let bytes = URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| "a JWT part is not BASE64URL")?;
            match serde_json::from_slice(&bytes) {
                Ok(Value::Object(members)) => Ok(members),
                _ => Err("a JWT part is not a JSON object"),
            }
        };
        Ok(Jwt {
            header: object(header)?,
            claims: object(claims)?,
            signing_input: &token[..header.len() + 1 + claims.len()],
            signature: URL_SAFE_NO_PAD
                .decode(signature)
                .map_err(|_| "the JWT signature is not BASE64URL")?,
        })
    }

    /// The header's `alg`.
    pub(crate) fn alg(&self) -> Option<&str> {
        self.header.get("alg").and_then(Value::as_str)
    }

    /// A string claim.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A numeric date claim (RFC 7519 §2), in whole seconds.
    pub(crate) fn time(&self, name: &str) -> Option<i64> {
        let value = self.claims.get(name)?;
        value
            .as_i64()
            .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
    }

    /// Checks the signature with `jwk`, a public key whose type and curve fit the header's
    /// `alg` (and whose own `alg`, if any, is that one). `none` and MACs are refused.
    pub(crate) fn verify(&self, jwk: &Map<String, Value>) -> Result<(), &'static str> {
        let alg = self.alg().ok_or("the JWT header has no alg")?;
        if jwk.get("alg").is_some_and(|a| a.as_str() != Some(alg)) {
            return Err("the key is for another alg");
        }
        let kty = jwk.get("kty").and_then(Value::as_str);
        let crv = jwk.get("crv").and_then(Value::as_str);
        let member = |name: &str| -> Result<Vec<u8>, &'static str> {
            let text = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or("a key member is missing")?;
            URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| "a key member is not BASE64URL")
        };
        let message = self.signing_input.as_bytes();
        let bad = |_| "the JWT signature does not verify";
        let rsa = |params: &'static signature::RsaParameters| {
            if kty != Some("RSA") {
                return Err("the key is not an RSA key");
            }
            let key = RsaPublicKeyComponents {
                n: member("n")?,
                e: member("e")?,
            };
            key.verify(params, message, &self.signature).map_err(bad)
        };
        let ec = |curve: &str, algorithm: &'static signature::EcdsaVerificationAlgorithm| {
            if kty != Some("EC") || crv != Some(curve) {
                return Err("the key is not on the alg's curve");
            }
            let mut point = vec![4];
            point.extend(member("x")?);
            point.extend(member("y")?);
            UnparsedPublicKey::new(algorithm, point)
                .verify(message, &self.signature)
                .map_err(bad)
        };
        match alg {
            "RS256" => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
            "RS384" => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
            "RS512" => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
            "PS256" => rsa(&signature::RSA_PSS_2048_8192_SHA256),
            "PS384" => rsa(&signature::RSA_PSS_2048_8192_SHA384),
            "PS512" => rsa(&signature::RSA_PSS_2048_8192_SHA512),
            "ES256" => ec("P-256", &signature::ECDSA_P256_SHA256_FIXED),
            "ES384" => ec("P-384", &signature::ECDSA_P384_SHA384_FIXED),
            "EdDSA" | "Ed25519" => {
                if kty != Some("OKP") || crv != Some("Ed25519") {
                    return Err("the key is not an Ed25519 key");
                }
                UnparsedPublicKey::new(&signature::ED25519, member("x")?)
                    .verify(message, &self.signature)
                    .map_err(bad)
            }
            _ => Err("the JWT alg is not an asymmetric signature the server accepts"),
        }
    }
}

/// The `jti`s of JWTs accepted (DPoP proofs, client assertions), each kept until the JWT
/// would be refused anyway: a replay is then seen (RFC 9449 §11.1, RFC 7523 §3).
#[derive(Default)]
pub(crate) struct Seen(HashMap<String, u64>);

impl Seen {
    /// Records `jti` until the Unix time `until`; `false` if it is recorded already.
    pub(crate) fn first_use(&mut self, jti: &str, now: u64, until: u64) -> bool {
        self.0.retain(|_, until| *until >= now);
        if self.0.contains_key(jti) {
            return false;
        }
        self.0.insert(jti.to_owned(), until);
        true
    }
}

/// The asymmetric algorithms [`Jwt::verify`] accepts, for metadata.
pub(crate) const ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Whether `jwk` holds private members (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2), or a
/// shared secret.
pub(crate) fn is_private(jwk: &Map<String, Value>) -> bool {
    ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]
        .iter()
        .any(|member| jwk.contains_key(*member))
}

/// The JWK SHA-256 thumbprint (RFC 7638): the required public members in lexicographic
/// order, without whitespace, hashed, BASE64URL.
pub(crate) fn thumbprint(jwk: &Map<String, Value>) -> Result<String, &'static str> {
    let text = |name: &str| -> Result<String, &'static str> {
        jwk.get(name)
            .filter(|v| v.is_string())
            .map(Value::to_string)
            .ok_or("a key member is missing")
    };
    let canonical = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, text("e")?, text("n")?),
        Some("EC") => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            text("crv")?,
            text("x")?,
            text("y")?
        ),
        Some("OKP") => format!(
            r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
            text("crv")?,
            text("x")?
        ),
        _ => return Err("the key type is not RSA, EC or OKP"),
    };
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// The keys of a registered JWK or JWK Set (RFC 7517 §5), as JSON text.
pub(crate) fn key_set(text: &str) -> Result<Vec<Map<String, Value>>, &'static str> {
    let Ok(Value::Object(members)) = serde_json::from_str::<Value>(text) else {
        return Err("not a JSON object");
    };
    let keys = match members.get("keys") {
        Some(Value::Array(keys)) => keys
            .iter()
            .map(|key| key.as_object().cloned().ok_or("a key is not an object"))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("keys is not an array"),
        None => vec![members],
    };
    if keys.is_empty() {
        return Err("no keys");
    }
    for key in &keys {
        if is_private(key) {
            return Err("a private key or a shared secret where a public key belongs");
        }
        thumbprint(key)?;
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_of_rfc7638_example() {
        // RFC 7638 §3.1.
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let jwk = jwk.as_object().expect("object");
        assert_eq!(
            thumbprint(jwk).expect("thumbprint"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn malformed_jwts_are_refused() {
        for token in [
            "",
            "a.b",
            "a.b.c.d",
            "e30.e30.!!",
            "W10.e30.",
            "e30.bm90IGpzb24.",
            "e30.e30",
        ] {
            assert!(Jwt::decode(token).is_err(), "{token:?}");
        }
        let unsigned = Jwt::decode("eyJhbGciOiJub25lIn0.e30.").expect("decodes");
        let key = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"});
        assert!(unsigned.verify(key.as_object().expect("object")).is_err());
    }

    #[test]
    fn private_keys_are_not_registered() {
        assert!(key_set(r#"{"kty":"OKP","crv":"Ed25519","x":"AA","d":"AA"}"#).is_err());
        assert!(key_set(r#"{"kty":"oct","k":"AA"}"#).is_err());
        assert!(key_set(r#"{"keys":[]}"#).is_err());
        assert_eq!(
            key_set(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"}]}"#).map(|k| k.len()),
            Ok(1)
        );
    }
}
