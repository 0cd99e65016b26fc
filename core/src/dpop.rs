//! DPoP (RFC 9449): tokens bound to a key the client holds, so that a copied token is of
//! no use without the key.
//!
//! Every request that gets or uses a bound token carries a `DPoP` header: a proof, a JWS
//! of `typ` `dpop+jwt` signed with the client's key, whose public half is in its header.
//! The proof names the request (`htm`, the method; `htu`, the URI without query or
//! fragment), when it was made (`iat`), a unique `jti`, the provider's latest nonce when
//! it asked for one, and, where a token is presented, `ath`, the token's SHA-256 (S61).
//!
//! With [`ProviderBuilder::dpop`](crate::ProviderBuilder::dpop) the machines do this for
//! every login:
//!
//! - the login gets a key pair of its own, made by the crypto provider; its thumbprint is
//!   the authorization request's `dpop_jkt`, which binds the code to it (RFC 9449 §10);
//! - every token request (code exchange, device poll, refresh) and revocation carries a
//!   proof, made when the driver [`finish`](crate::ProviderRequest::finish)es the request;
//! - a `use_dpop_nonce` answer is answered by sending the request once more, with the nonce
//!   of its `DPoP-Nonce` header; a second refusal ends the request (S62); the latest nonce
//!   goes into the next proof;
//! - tokens must come back with `token_type` `DPoP`: bearer tokens are refused
//!   ([`BadTokenResponse::NotDpopBound`](crate::BadTokenResponse::NotDpopBound)), and the
//!   key is kept with the tokens ([`TokenSet::dpop_key`](crate::TokenSet::dpop_key)),
//!   stored, and used for their refreshes and revocations.
//!
//! [`Proof`] makes a proof for any request: what the machines send to the provider, and
//! what an application sends to its own API with a bound access token.
//!
//! ```
//! # use std::sync::Arc;
//! # use std::time::{Duration, UNIX_EPOCH};
//! # use latchkey::crypto::{Algorithm, CryptoProvider, PublicKey, SignatureError, SigningKey};
//! # use latchkey::keys::{PrivateKey, Signer};
//! use latchkey::dpop::Proof;
//!
//! # /// A stand-in for `latchkey_io::crypto::ring()`: signatures of sevens, random zeros.
//! # #[derive(Debug)]
//! # struct Toy(PublicKey);
//! # impl CryptoProvider for Toy {
//! #     fn verify(&self, _: Algorithm, _: &PublicKey, _: &[u8], _: &[u8]) -> Result<(), SignatureError> { Ok(()) }
//! #     fn signing_key(&self, _: &PrivateKey) -> Result<Arc<dyn SigningKey>, SignatureError> {
//! #         Ok(Arc::new(Toy(self.0.clone())))
//! #     }
//! #     fn fill_random(&self, bytes: &mut [u8]) -> Result<(), SignatureError> { bytes.fill(0); Ok(()) }
//! # }
//! # impl SigningKey for Toy {
//! #     fn algorithm(&self) -> Algorithm { Algorithm::EdDSA }
//! #     fn public_key(&self) -> &PublicKey { &self.0 }
//! #     fn sign(&self, _: &[u8]) -> Result<Vec<u8>, SignatureError> { Ok(vec![7; 64]) }
//! # }
//! # let public = PublicKey::Ed25519(*b"\xd7\x5a\x98\x01\x82\xb1\x0a\xb7\xd5\x4b\xfe\xd3\xc9\x64\x07\x3a\x0e\xe1\x72\xf3\xda\xa6\x23\x25\xaf\x02\x1a\x68\xf7\x07\x51\x1a");
//! // RFC 8037 §A.1's key, loaded by a crypto provider.
//! let key = PrivateKey::parse(br#"{"kty":"OKP","crv":"Ed25519",
//!     "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
//!     "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#)?;
//! let signer = Signer::new(key, Arc::new(Toy(public)))?;
//! assert_eq!(signer.thumbprint(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
//!
//! let proof = Proof::new("GET", "https://api.example/me?page=2#top")?
//!     .access_token("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU")
//!     .sign(&signer, UNIX_EPOCH + Duration::from_secs(1_767_225_600))?;
//! // {"alg":"EdDSA","jwk":{"crv":"Ed25519","kty":"OKP","x":"11qY…URo"},"typ":"dpop+jwt"} .
//! // {"ath":"fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo","htm":"GET",
//! //  "htu":"https://api.example/me","iat":1767225600,"jti":"AAAAAAAAAAAAAAAAAAAAAA"}
//! assert_eq!(proof.split('.').nth(1), Some(
//!     "eyJhdGgiOiJmVUh5TzJyMlozRFo1M0VzTnJXQmIweFdYb2FOeTU5SWlLQ0Fxa3NtUUVvIiwiaHRtIjoiR0VU\
//!      IiwiaHR1IjoiaHR0cHM6Ly9hcGkuZXhhbXBsZS9tZSIsImlhdCI6MTc2NzIyNTYwMCwianRpIjoiQUFBQUFB\
//!      QUFBQUFBQUFBQUFBQUFBQSJ9"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::crypto::SignatureError;
use crate::keys::{KeyError, Signer, unix_seconds};

/// The request header that carries a proof.
pub const HEADER: &str = "DPoP";

/// The response header with which a provider hands out a nonce (RFC 9449 §8).
pub const NONCE_HEADER: &str = "DPoP-Nonce";

/// The longest nonce kept from a provider.
pub const MAX_NONCE_LEN: usize = 512;

/// Why a proof cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProofError {
    /// The URI is not an absolute `http` or `https` URI.
    Uri,
    /// The method is not an HTTP method token.
    Method,
    /// The nonce is not `1*NQCHAR` (RFC 9449 §8.1) or is longer than [`MAX_NONCE_LEN`].
    Nonce,
    /// The crypto provider could not sign or supply randomness.
    Signature(SignatureError),
    /// The key the tokens are bound to cannot be loaded by the crypto provider.
    Key(KeyError),
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProofError::Uri => f.write_str("the URI is not an absolute http or https URI"),
            ProofError::Method => f.write_str("the method is not an HTTP method"),
            ProofError::Nonce => f.write_str("the DPoP nonce has characters a nonce cannot have"),
            ProofError::Signature(error) => write!(f, "the proof could not be signed: {error}"),
            ProofError::Key(error) => write!(f, "the DPoP key cannot be used: {error}"),
        }
    }
}

impl std::error::Error for ProofError {}

impl From<SignatureError> for ProofError {
    fn from(error: SignatureError) -> ProofError {
        ProofError::Signature(error)
    }
}

/// A DPoP proof to be made for one request.
#[derive(Debug, Clone)]
pub struct Proof<'a> {
    method: &'a str,
    htu: String,
    access_token: Option<&'a str>,
    nonce: Option<&'a str>,
}

impl<'a> Proof<'a> {
    /// A proof for a `method` request to `uri`. The query and fragment are left out of
    /// `htu` (RFC 9449 §4.2).
    pub fn new(method: &'a str, uri: &str) -> Result<Proof<'a>, ProofError> {
        if http::Method::from_bytes(method.as_bytes()).is_err() {
            return Err(ProofError::Method);
        }
        Ok(Proof {
            method,
            htu: target_uri(uri)?,
            access_token: None,
            nonce: None,
        })
    }

    /// The request presents `token` (an API call, a revocation of a bound token): the
    /// proof carries its hash, `ath`.
    pub fn access_token(mut self, token: &'a str) -> Proof<'a> {
        self.access_token = Some(token);
        self
    }

    /// The provider's (or resource server's) latest nonce.
    pub fn nonce(mut self, nonce: &'a str) -> Proof<'a> {
        self.nonce = Some(nonce);
        self
    }

    /// The `htu` the proof will carry.
    pub fn htu(&self) -> &str {
        &self.htu
    }

    /// Signs the proof with `signer` at `wall`, with a fresh `jti`.
    pub fn sign(&self, signer: &Signer, wall: SystemTime) -> Result<String, ProofError> {
        if let Some(nonce) = self.nonce
            && !is_nonce(nonce)
        {
            return Err(ProofError::Nonce);
        }
        let mut header = Map::new();
        header.insert("typ".into(), "dpop+jwt".into());
        header.insert("jwk".into(), Value::Object(signer.public_jwk().clone()));
        let mut claims = Map::new();
        claims.insert("jti".into(), signer.jti()?.into());
        claims.insert("htm".into(), self.method.into());
        claims.insert("htu".into(), self.htu.as_str().into());
        claims.insert("iat".into(), unix_seconds(wall).into());
        if let Some(token) = self.access_token {
            claims.insert("ath".into(), ath(token).into());
        }
        if let Some(nonce) = self.nonce {
            claims.insert("nonce".into(), nonce.into());
        }
        Ok(signer.jws(header, &claims, false)?)
    }
}

/// The provider's nonce in `response`'s `DPoP-Nonce` header, if it sent a usable one.
pub(crate) fn nonce_of(response: &http::Response<Vec<u8>>) -> Option<String> {
    let nonce = response.headers().get(NONCE_HEADER)?.to_str().ok()?;
    is_nonce(nonce).then(|| nonce.to_owned())
}

/// Whether `response` refuses a proof for lacking the provider's nonce (RFC 9449 §8): the
/// error `use_dpop_nonce`, with a nonce to use.
pub(crate) fn asks_for_nonce(response: &http::Response<Vec<u8>>) -> Option<String> {
    if !matches!(response.status().as_u16(), 400 | 401) {
        return None;
    }
    let nonce = nonce_of(response)?;
    let in_body = serde_json::from_slice::<Value>(response.body())
        .ok()
        .is_some_and(|body| body["error"] == "use_dpop_nonce");
    let in_header = response
        .headers()
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .any(|value| {
            const ERROR: &[u8] = b"error=\"use_dpop_nonce\"";
            value.as_bytes().windows(ERROR.len()).any(|w| w == ERROR)
        });
    (in_body || in_header).then_some(nonce)
}

/// `ath`: the base64url SHA-256 of the access token's ASCII bytes (RFC 9449 §4.2).
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// Whether `nonce` may be sent back: `1*NQCHAR` (`%x21 / %x23-5B / %x5D-7E`), at most
/// [`MAX_NONCE_LEN`] bytes.
pub fn is_nonce(nonce: &str) -> bool {
    nonce.len() <= MAX_NONCE_LEN && crate::grammar::is_scope_token(nonce)
}

/// The target URI without query and fragment: `scheme://authority/path` (a proof's `htu`,
/// and a client assertion's audience when that is the endpoint).
pub(crate) fn target_uri(uri: &str) -> Result<String, ProofError> {
    let uri = uri.split('#').next().unwrap_or_default();
    let parsed: http::Uri = uri.parse().map_err(|_| ProofError::Uri)?;
    let scheme = match parsed.scheme_str() {
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => "https",
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => "http",
        _ => return Err(ProofError::Uri),
    };
    let authority = parsed.authority().ok_or(ProofError::Uri)?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(ProofError::Uri);
    }
    let path = match parsed.path() {
        "" => "/",
        path => path,
    };
    Ok(format!("{scheme}://{authority}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s61_htu_has_no_query_or_fragment() {
        for (uri, expected) in [
            ("https://as.example/token", "https://as.example/token"),
            ("https://as.example/token?x=1", "https://as.example/token"),
            ("https://as.example/token?x=1#f", "https://as.example/token"),
            ("https://as.example/token#f", "https://as.example/token"),
            ("HTTPS://as.example:8443", "https://as.example:8443/"),
            ("http://127.0.0.1:9000/a/b/", "http://127.0.0.1:9000/a/b/"),
        ] {
            assert_eq!(Proof::new("POST", uri).unwrap().htu(), expected, "{uri}");
        }
        for uri in [
            "/token",
            "ftp://as.example/",
            "https://",
            "https://u:p@as.example/",
            "",
        ] {
            assert_eq!(
                Proof::new("POST", uri).err(),
                Some(ProofError::Uri),
                "{uri}"
            );
        }
        assert_eq!(
            Proof::new("GE T", "https://a/").err(),
            Some(ProofError::Method)
        );
        assert_eq!(Proof::new("", "https://a/").err(), Some(ProofError::Method));
    }

    #[test]
    fn nonces_are_nqchar() {
        assert!(is_nonce("eyJ7S_zG.eyJH0-Z.HX4w-7v"));
        for bad in [
            "",
            "a b",
            "a\"b",
            "a\\b",
            "é",
            &"n".repeat(MAX_NONCE_LEN + 1),
        ] {
            assert!(!is_nonce(bad), "{bad:?}");
        }
    }

    #[test]
    fn ath_is_rfc9449_s7_1s_example() {
        // RFC 9449 §7.1: the access token and its `ath`.
        assert_eq!(
            ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }
}
