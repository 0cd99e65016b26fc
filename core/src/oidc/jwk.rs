//! Key sets (JWKS, RFC 7517 §5): read with limits, keys chosen by the rules of S46.

use serde_json::{Map, Value, json};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::{IdTokenError, KeySetError};
use super::jws::decode;
use crate::crypto::{Algorithm, Curve, PublicKey};

/// The largest key-set body read.
pub const MAX_KEY_SET_BYTES: usize = 256 * 1024;
/// The most keys a key set may have.
pub const MAX_KEYS: usize = 100;

/// One verification key of a key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: PublicKey,
}

impl Jwk {
    /// The key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithm the key is restricted to, if the key set says.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.alg
    }

    /// The key.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// Whether this key may check a signature of `algorithm`: the key type and curve fit,
    /// and the key is not restricted to another algorithm.
    fn fits(&self, algorithm: Algorithm) -> bool {
        self.key.kind() == algorithm.key_kind() && self.alg.is_none_or(|alg| alg == algorithm)
    }

    /// Reads one member of `keys`; `None` for a key that cannot verify a signature
    /// latchkey accepts (another use, an HMAC secret, an unknown curve, a short RSA
    /// modulus, …), which is skipped rather than refused.
    fn parse(value: &Value) -> Option<Jwk> {
        let object = value.as_object()?;
        if object.get("use").is_some_and(|usage| usage != "sig") {
            return None;
        }
        if let Some(ops) = object.get("key_ops") {
            let ops = ops.as_array()?;
            if !ops.iter().any(|op| op == "verify") {
                return None;
            }
        }
        let alg = match object.get("alg") {
            None => None,
            Some(name) => Some(Algorithm::from_name(name.as_str()?)?),
        };
        let kid = match object.get("kid") {
            None => None,
            Some(kid) => Some(kid.as_str()?.to_owned()),
        };
        let key = match object.get("kty")?.as_str()? {
            "RSA" => rsa_key(object)?,
            "EC" => {
                let curve = Curve::from_name(object.get("crv")?.as_str()?)?;
                let coordinate = |name| {
                    member_bytes(object, name).filter(|bytes| bytes.len() == curve.coordinate_len())
                };
                PublicKey::Ec {
                    curve,
                    x: coordinate("x")?,
                    y: coordinate("y")?,
                }
            }
            "OKP" if object.get("crv")? == "Ed25519" => {
                PublicKey::Ed25519(member_bytes(object, "x")?.try_into().ok()?)
            }
            _ => return None,
        };
        let jwk = Jwk { kid, alg, key };
        // A key restricted to an algorithm its type cannot do is unusable.
        jwk.alg.is_none_or(|alg| jwk.fits(alg)).then_some(jwk)
    }

    /// The key as a JWK object, with only the members latchkey reads.
    fn to_json(&self) -> Value {
        let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
        let mut object = match &self.key {
            PublicKey::Rsa { n, e } => json!({"kty": "RSA", "n": b64(n), "e": b64(e)}),
            PublicKey::Ec { curve, x, y } => json!({
                "kty": "EC",
                "crv": match curve { Curve::P256 => "P-256", Curve::P384 => "P-384" },
                "x": b64(x),
                "y": b64(y),
            }),
            PublicKey::Ed25519(x) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x)}),
        };
        if let Some(map) = object.as_object_mut() {
            map.insert("use".into(), "sig".into());
            if let Some(kid) = &self.kid {
                map.insert("kid".into(), kid.as_str().into());
            }
            if let Some(alg) = self.alg {
                map.insert("alg".into(), alg.name().into());
            }
        }
        object
    }
}

/// An RSA key with a modulus of 2048 to 8192 bits and an odd exponent of at least 3 that
/// fits in 32 bits. Leading zero bytes, which RFC 7518 forbids but some providers send, are
/// dropped.
fn rsa_key(object: &Map<String, Value>) -> Option<PublicKey> {
    let n = strip_zeros(member_bytes(object, "n")?);
    let e = strip_zeros(member_bytes(object, "e")?);
    let bits = n.len() * 8 - n.first()?.leading_zeros() as usize;
    let exponent = e.iter().try_fold(0u64, |acc, byte| {
        (e.len() <= 4).then_some(acc << 8 | u64::from(*byte))
    })?;
    let usable = (2048..=8192).contains(&bits) && exponent >= 3 && exponent % 2 == 1;
    usable.then_some(PublicKey::Rsa { n, e })
}

fn strip_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|byte| **byte == 0).count();
    bytes.drain(..zeros);
    bytes
}

fn member_bytes(object: &Map<String, Value>, name: &str) -> Option<Vec<u8>> {
    decode(object.get(name)?.as_str()?)
}

/// A provider's verification keys: only the usable ones of its key set, at most
/// [`MAX_KEYS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

impl KeySet {
    /// Reads a key set document. Keys latchkey cannot use are skipped; a document that
    /// is too large, not a JSON object with a `keys` array, has more than [`MAX_KEYS`]
    /// keys, or leaves no usable key is an error (S47).
    pub fn parse(body: &[u8]) -> Result<KeySet, KeySetError> {
        if body.len() > MAX_KEY_SET_BYTES {
            return Err(KeySetError::TooLarge);
        }
        let document: Value = serde_json::from_slice(body).map_err(|_| KeySetError::NotJson)?;
        let Some(Value::Array(members)) = document.get("keys") else {
            return Err(KeySetError::NotJson);
        };
        if members.len() > MAX_KEYS {
            return Err(KeySetError::TooManyKeys);
        }
        let keys: Vec<Jwk> = members.iter().filter_map(Jwk::parse).collect();
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKey);
        }
        Ok(KeySet { keys })
    }

    /// The usable keys, in the document's order.
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// The key set as a JWKS document of its usable keys, which [`KeySet::parse`] reads
    /// back to an equal set.
    pub fn to_json(&self) -> Value {
        json!({ "keys": self.keys.iter().map(Jwk::to_json).collect::<Vec<_>>() })
    }

    /// The one key that may check a token signed with `algorithm` and naming `kid` (S46):
    /// the key type, curve and `alg` fit, `use` is `sig` and `key_ops` has `verify` (or
    /// they are absent), and the `kid` is the token's when it names one. Several fitting
    /// keys need a `kid` to choose.
    pub(crate) fn select(
        &self,
        algorithm: Algorithm,
        kid: Option<&str>,
    ) -> Result<&Jwk, IdTokenError> {
        let mut fitting = self
            .keys
            .iter()
            .filter(|key| key.fits(algorithm) && kid.is_none_or(|kid| key.kid() == Some(kid)));
        match (fitting.next(), fitting.next()) {
            (Some(key), None) => Ok(key),
            (None, _) => Err(IdTokenError::UnknownKey),
            (Some(_), Some(_)) => Err(IdTokenError::AmbiguousKey),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7517 Appendix A.1's public keys: a P-256 key and a 2048-bit RSA key.
    pub(crate) const RFC7517_A1: &str = r#"{"keys":
       [
         {"kty":"EC",
          "crv":"P-256",
          "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
          "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
          "use":"enc",
          "kid":"1"},

         {"kty":"RSA",
          "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
          "e":"AQAB",
          "alg":"RS256",
          "kid":"2011-04-29"}
       ]
     }"#;

    #[test]
    fn rfc7517_a1_encryption_keys_are_skipped_signing_keys_kept() {
        let set = KeySet::parse(RFC7517_A1.as_bytes()).unwrap();
        assert_eq!(set.keys().len(), 1, "the EC key is for encryption");
        let key = &set.keys()[0];
        assert_eq!(key.kid(), Some("2011-04-29"));
        assert_eq!(key.algorithm(), Some(Algorithm::RS256));
        assert!(matches!(key.key(), PublicKey::Rsa { n, e } if n.len() == 256 && e == &[1, 0, 1]));
    }

    #[test]
    fn s47_unusable_documents_are_errors() {
        let many = format!(
            r#"{{"keys":[{}]}}"#,
            vec![r#"{"kty":"oct","k":"c2VjcmV0"}"#; MAX_KEYS + 1].join(",")
        );
        let cases: [(&[u8], KeySetError); 7] = [
            (b"<html>", KeySetError::NotJson),
            (b"[]", KeySetError::NotJson),
            (br#"{"keys":{}}"#, KeySetError::NotJson),
            (br#"{"keys":[]}"#, KeySetError::NoUsableKey),
            (
                br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#,
                KeySetError::NoUsableKey,
            ),
            (many.as_bytes(), KeySetError::TooManyKeys),
            (&[b' '; MAX_KEY_SET_BYTES + 1], KeySetError::TooLarge),
        ];
        for (body, error) in cases {
            assert_eq!(
                KeySet::parse(body),
                Err(error),
                "{:?}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
        }
    }

    fn rsa(kid: &str, extra: &str) -> String {
        let n = URL_SAFE_NO_PAD.encode([0xc5; 256]);
        format!(r#"{{"kty":"RSA","kid":"{kid}","n":"{n}","e":"AQAB"{extra}}}"#)
    }

    fn ec(kid: &str, crv: &str, len: usize) -> String {
        let c = URL_SAFE_NO_PAD.encode(vec![7; len]);
        format!(r#"{{"kty":"EC","kid":"{kid}","crv":"{crv}","x":"{c}","y":"{c}"}}"#)
    }

    fn set(keys: &[String]) -> KeySet {
        KeySet::parse(format!(r#"{{"keys":[{}]}}"#, keys.join(",")).as_bytes()).unwrap()
    }

    #[test]
    fn s46_keys_that_cannot_verify_are_skipped() {
        let short = URL_SAFE_NO_PAD.encode([0xc5; 255]);
        let even_e = format!(
            r#"{{"kty":"RSA","n":"{}","e":"AQAA"}}"#,
            URL_SAFE_NO_PAD.encode([0xc5; 256])
        );
        let skipped = [
            rsa("use-enc", r#","use":"enc""#),
            rsa("ops-sign", r#","key_ops":["sign"]"#),
            rsa("ops-bad", r#","key_ops":"verify""#),
            rsa("alg-hs", r#","alg":"HS256""#),
            rsa("alg-es", r#","alg":"ES256""#),
            format!(r#"{{"kty":"RSA","n":"{short}","e":"AQAB"}}"#),
            even_e,
            ec("p521", "P-521", 66),
            ec("short", "P-256", 31),
            r#"{"kty":"OKP","crv":"Ed448","x":"AAAA"}"#.into(),
            r#"{"kty":"OKP","crv":"Ed25519","x":"AAAA"}"#.into(),
            r#"{"kty":"RSA","kid":7,"n":"AQAB","e":"AQAB"}"#.into(),
            r#""not an object""#.into(),
        ];
        let mut keys = skipped.to_vec();
        keys.push(rsa("ok", r#","key_ops":["verify"],"use":"sig""#));
        let set = set(&keys);
        assert_eq!(set.keys().len(), 1);
        assert_eq!(set.keys()[0].kid(), Some("ok"));
    }

    #[test]
    fn leading_zeros_of_the_modulus_are_dropped() {
        let mut n = vec![0, 0];
        n.extend([0xc5; 256]);
        let body = format!(
            r#"{{"keys":[{{"kty":"RSA","n":"{}","e":"AAEAAQ"}}]}}"#,
            URL_SAFE_NO_PAD.encode(&n)
        );
        let set = KeySet::parse(body.as_bytes()).unwrap();
        assert!(
            matches!(set.keys()[0].key(), PublicKey::Rsa { n, e } if n.len() == 256 && e == &[1, 0, 1])
        );
    }

    #[test]
    fn s46_the_key_is_chosen_by_kid_type_and_curve() {
        let set = set(&[
            rsa("r1", ""),
            rsa("r2", r#","alg":"PS256""#),
            ec("e1", "P-256", 32),
            ec("e2", "P-384", 48),
        ]);
        let kid = |algorithm, kid| set.select(algorithm, kid).map(|key| key.kid());
        assert_eq!(kid(Algorithm::RS256, Some("r1")), Ok(Some("r1")));
        assert_eq!(
            kid(Algorithm::RS256, Some("r2")),
            Err(IdTokenError::UnknownKey),
            "r2 is PS256 only"
        );
        assert_eq!(kid(Algorithm::PS256, Some("r2")), Ok(Some("r2")));
        assert_eq!(
            kid(Algorithm::RS256, None),
            Ok(Some("r1")),
            "the only RS256 key"
        );
        assert_eq!(kid(Algorithm::PS256, None), Err(IdTokenError::AmbiguousKey));
        assert_eq!(kid(Algorithm::ES256, None), Ok(Some("e1")));
        assert_eq!(kid(Algorithm::ES384, None), Ok(Some("e2")));
        assert_eq!(
            kid(Algorithm::ES256, Some("e2")),
            Err(IdTokenError::UnknownKey),
            "wrong curve"
        );
        assert_eq!(kid(Algorithm::EdDSA, None), Err(IdTokenError::UnknownKey));
        assert_eq!(
            kid(Algorithm::RS256, Some("unknown")),
            Err(IdTokenError::UnknownKey)
        );
    }

    #[test]
    fn a_key_set_survives_its_own_json() {
        let original = set(&[
            rsa("r1", r#","alg":"RS256""#),
            ec("e1", "P-384", 48),
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#
                .into(),
        ]);
        let json = serde_json::to_vec(&original.to_json()).unwrap();
        assert_eq!(KeySet::parse(&json), Ok(original));
    }
}
