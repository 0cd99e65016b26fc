//! JWS Compact Serialization (RFC 7515 §7.1), read for verification: the header judged,
//! the payload and signature decoded. Nothing here trusts the token; the key comes from
//! the provider's key set, never from the header (`jwk`, `jku`, `x5u` and `x5c` are
//! ignored).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::error::IdTokenError;
use super::json;
use crate::crypto::Algorithm;

/// The longest ID token read: generous for tokens full of group claims, small enough that
/// a hostile token costs little.
pub(crate) const MAX_TOKEN_LEN: usize = 64 * 1024;

/// A compact JWS, decoded.
#[derive(Debug)]
pub(crate) struct Jws {
    pub algorithm: Algorithm,
    pub kid: Option<String>,
    /// The length of the signing input, `BASE64URL(header) '.' BASE64URL(payload)`: the
    /// token's prefix the signature covers.
    pub signed_len: usize,
    pub claims: Map<String, Value>,
    pub signature: Vec<u8>,
}

impl Jws {
    /// Reads `token`, accepting only the algorithms in `allowed`.
    pub(crate) fn parse(token: &str, allowed: &[Algorithm]) -> Result<Jws, IdTokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(IdTokenError::Malformed("longer than 64 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdTokenError::Malformed(if token.split('.').count() == 5 {
                "an encrypted (JWE) token; only signed tokens are supported"
            } else {
                "not a compact JWS (three base64url parts)"
            }));
        };
        let header = decode(header)
            .and_then(|bytes| json::unique_object(&bytes))
            .ok_or(IdTokenError::Malformed(
                "header is not a base64url JSON object",
            ))?;
        let algorithm = match header.get("alg") {
            Some(Value::String(name)) => Algorithm::from_name(name)
                .filter(|algorithm| allowed.contains(algorithm))
                .ok_or_else(|| IdTokenError::Algorithm(truncated(name)))?,
            _ => return Err(IdTokenError::Malformed("header has no `alg`")),
        };
        // RFC 7515 §4.1.11: extensions the recipient does not understand make the token
        // invalid, and latchkey understands none.
        if header.contains_key("crit") {
            return Err(IdTokenError::Malformed("header has `crit` extensions"));
        }
        match header.get("typ") {
            None => {}
            Some(Value::String(typ))
                if typ.eq_ignore_ascii_case("JWT")
                    || typ.eq_ignore_ascii_case("application/jwt") => {}
            // `at+jwt` (an access token, RFC 9068), `logout+jwt`, …: not an ID token.
            Some(_) => return Err(IdTokenError::Malformed("`typ` is not JWT")),
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(IdTokenError::Malformed("`kid` is not a string")),
        };
        let claims = decode(payload)
            .and_then(|bytes| json::unique_object(&bytes))
            .ok_or(IdTokenError::Malformed(
                "payload is not a base64url JSON object",
            ))?;
        let signature = decode(signature)
            .filter(|bytes| !bytes.is_empty())
            .ok_or(IdTokenError::Malformed("signature is not base64url"))?;
        Ok(Jws {
            algorithm,
            kid,
            signed_len: token.len() - signature_len(token),
            claims,
            signature,
        })
    }
}

/// The length of the last part and the dot before it.
fn signature_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

/// base64url without padding, canonical only (the base64 crate refuses padding and
/// non-zero trailing bits), so one token has exactly one spelling.
pub(crate) fn decode(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part).ok()
}

/// A hostile value, cut short enough to quote in an error.
fn truncated(name: &str) -> String {
    name.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        URL_SAFE_NO_PAD.encode(text)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    const RS256: &[Algorithm] = &[Algorithm::RS256];

    #[test]
    fn a_compact_jws_is_read() {
        let jws = Jws::parse(
            &token(
                r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#,
                r#"{"sub":"a"}"#,
            ),
            RS256,
        )
        .unwrap();
        assert_eq!(jws.algorithm, Algorithm::RS256);
        assert_eq!(jws.kid.as_deref(), Some("k1"));
        assert_eq!(jws.claims["sub"], "a");
        assert_eq!(jws.signature, b"sig");
    }

    #[test]
    fn s46_none_hmac_and_unlisted_algorithms_are_refused() {
        for alg in ["none", "HS256", "HS512", "ES256", "rs256", "RS256 "] {
            let header = format!(r#"{{"alg":"{alg}"}}"#);
            assert_eq!(
                Jws::parse(&token(&header, "{}"), RS256).unwrap_err(),
                IdTokenError::Algorithm(alg.into()),
                "{alg}"
            );
        }
        // `alg: none` with the empty signature RFC 7519 §6.1 gives it.
        let unsecured = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}"));
        assert!(matches!(
            Jws::parse(&unsecured, RS256),
            Err(IdTokenError::Algorithm(_))
        ));
    }

    #[test]
    fn malformed_tokens_are_refused_with_a_reason() {
        let header = r#"{"alg":"RS256"}"#;
        let cases = [
            (String::new(), "not a compact JWS"),
            ("a.b".into(), "not a compact JWS"),
            ("a.b.c.d".into(), "not a compact JWS"),
            ("a.b.c.d.e".into(), "encrypted"),
            (format!("{}=.{}.c2ln", b64(header), b64("{}")), "header"),
            (format!("{}.{}.", b64(header), b64("{}")), "signature"),
            (format!("{}.{}.c2ln=", b64(header), b64("{}")), "signature"),
            (token(r#"{"alg":"RS256","alg":"RS256"}"#, "{}"), "header"),
            (token(r#"{"kid":"k"}"#, "{}"), "`alg`"),
            (
                token(r#"{"alg":"RS256","crit":["b64"],"b64":false}"#, "{}"),
                "crit",
            ),
            (token(r#"{"alg":"RS256","typ":"at+jwt"}"#, "{}"), "typ"),
            (token(r#"{"alg":"RS256","kid":7}"#, "{}"), "kid"),
            (token(header, r#"{"sub":"a","sub":"b"}"#), "payload"),
            (token(header, "[]"), "payload"),
            (format!("{}.!!.c2ln", b64(header)), "payload"),
            ("x".repeat(MAX_TOKEN_LEN + 1), "64 KiB"),
        ];
        for (token, reason) in cases {
            match Jws::parse(&token, RS256) {
                Err(IdTokenError::Malformed(why)) => {
                    assert!(why.contains(reason), "{token:?}: {why}")
                }
                other => panic!("{token:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn keys_offered_in_the_header_are_ignored() {
        let header = r#"{"alg":"RS256","jwk":{"kty":"RSA"},"jku":"https://evil.example/keys","x5u":"https://evil.example/c"}"#;
        let jws = Jws::parse(&token(header, "{}"), RS256).unwrap();
        assert_eq!(jws.kid, None);
    }

    #[test]
    fn the_signing_input_is_the_token_up_to_the_last_dot() {
        let token = token(r#"{"alg":"RS256"}"#, "{}");
        let jws = Jws::parse(&token, RS256).unwrap();
        assert_eq!(&token[jws.signed_len..], ".c2ln");
    }
}
