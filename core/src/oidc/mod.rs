//! Who signed in: OpenID Connect ID tokens, verified (OpenID Connect Core §3.1.3.7).
//!
//! When a provider's scopes include `openid`, every login sends a fresh `nonce` and the ID
//! token of the code exchange is checked before anything is stored; a refreshed ID token is
//! checked too, against the identity of the login (§12.2). What passes becomes the
//! [`Identity`] of the [`TokenSet`](crate::TokenSet); what fails ends the login with
//! [`FlowError::IdToken`](crate::FlowError::IdToken), and nothing is stored.
//!
//! The checks, in order:
//!
//! 1. a compact JWS whose `alg` is in the allow-list (the provider's
//!    `id_token_signing_alg_values_supported`, RS256 by default; never `none`, never an
//!    HMAC algorithm), with no `crit` extension and no `typ` other than JWT (S46);
//! 2. a key of the provider's own key set chosen by `kid`, key type, `use`/`key_ops` and
//!    curve; a `kid` is needed when several fit; keys the token offers are ignored (S46);
//! 3. the signature, by the application's [`CryptoProvider`] (S47);
//! 4. `iss` byte-equal to the issuer (Microsoft's `{tenantid}` template only by opt-in),
//!    `sub`, `aud` containing the client id, `azp` when there are several audiences, `exp`,
//!    `iat` and `nbf` within the leeway of the wall clock, the `nonce` of the login,
//!    `auth_time` when `max_age` was requested, `at_hash` when present (S48); for a
//!    refreshed token, the stored identity's `iss`, `sub` and `aud` (S49).
//!
//! UserInfo (§5.3) is a request the application makes when it wants more than the ID
//! token says: [`userinfo_request`] builds it, [`read_userinfo`] reads the answer and
//! discards it unless it names the same user (S50).
//!
//! The key set is fetched by the driver, as every request is: the machines emit the
//! request, keep the keys for ten minutes, fetch again for a key they do not know at most
//! once a minute, and let any number of checks wait for one fetch. The rules are in the
//! [`cache`](self#the-key-set-cache) section below.
//!
//! # Verifying a token yourself
//!
//! [`IdTokenPolicy::verify`] runs every check with a [`KeySet`] you hold:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use latchkey::oidc::{Algorithm, CryptoProvider, Expected, KeySet, PublicKey, SignatureError};
//! use latchkey::{IdTokenError, Provider};
//!
//! /// A stand-in for a real provider such as `latchkey_io::crypto::ring()`: it accepts
//! /// one signature.
//! #[derive(Debug)]
//! struct Toy;
//! impl CryptoProvider for Toy {
//!     fn verify(&self, _: Algorithm, _: &PublicKey, _: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
//!         if signature == [7; 64] { Ok(()) } else { Err(SignatureError::Invalid) }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = Provider::builder("https://idp.example/authorize", "https://idp.example/token", "cli")
//!     .scopes(["openid", "email"])
//!     .issuer("https://idp.example")
//!     .jwks_uri("https://idp.example/jwks")
//!     .id_token_algorithms([Algorithm::EdDSA])
//!     .crypto(Arc::new(Toy))
//!     .build()?;
//! let keys = KeySet::parse(br#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1",
//!     "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#)?;
//!
//! // {"alg":"EdDSA","kid":"k1"} . {"iss":"https://idp.example","sub":"jane","aud":"cli",
//! //   "exp":1767229200,"iat":1767225600,"nonce":"n-0S6_WzA2Mj","email":"jane@example.com"}
//! let token = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.\
//!     eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwic3ViIjoiamFuZSIsImF1ZCI6ImNsaSIsImV4cCI6MTc2NzIyOTIwMCwiaWF0IjoxNzY3MjI1NjAwLCJub25jZSI6Im4tMFM2X1d6QTJNaiIsImVtYWlsIjoiamFuZUBleGFtcGxlLmNvbSJ9.\
//!     BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBw";
//! let policy = provider.id_token_policy().expect("openid is requested");
//! let at = |seconds| UNIX_EPOCH + Duration::from_secs(seconds);
//! let login = Expected { nonce: Some("n-0S6_WzA2Mj"), ..Expected::default() };
//!
//! let identity = policy.verify(&keys, token, &login, at(1767226000))?;
//! assert_eq!((identity.iss(), identity.sub()), ("https://idp.example", "jane"));
//! assert_eq!(identity.display_name(), "jane@example.com");
//!
//! // An hour and two minutes later it has expired (60 s of leeway).
//! assert_eq!(policy.verify(&keys, token, &login, at(1767229261)), Err(IdTokenError::Expired));
//! // Another login's nonce: refused.
//! let other = Expected { nonce: Some("another"), ..Expected::default() };
//! assert_eq!(policy.verify(&keys, token, &other, at(1767226000)), Err(IdTokenError::Nonce));
//! # Ok(())
//! # }
//! ```
//!
//! # The key-set cache
//!
//! [`Engine`](crate::Engine) and [`Session`](crate::Session) each keep one, for every
//! provider they verify for:
//!
//! - keys are used for [`MAX_AGE`] (ten minutes) after they were fetched; none, or older
//!   ones, are fetched;
//! - a token naming a key the cache lacks is fetched for at once (the provider may have
//!   rotated its keys a second ago), but such refetches start at most once per
//!   [`REFETCH_INTERVAL`] (a minute), so tokens naming made-up keys cannot make latchkey
//!   hammer the provider; nor does a fetch start within a minute of a failed one;
//! - every check that needs a fetch waits for it, however many there are; when it ends
//!   they are all checked again without another fetch;
//! - a failed fetch keeps the keys already known; with none known, the waiting checks
//!   fail with [`IdTokenError::KeySet`];
//! - a key set has at most [`MAX_KEYS`] keys and [`MAX_KEY_SET_BYTES`] bytes.
//!
//! `export_key_sets` and `import_key_sets` on both machines move the cache between
//! processes and replicas, so that a fleet fetches a provider's keys once per ten minutes.

mod cache;
mod claims;
mod error;
mod json;
mod jwk;
mod jws;
mod userinfo;

pub use crate::crypto::{Algorithm, CryptoProvider, Curve, PublicKey, SignatureError};
pub(crate) use cache::{KeyCache, Lookup};
pub use cache::{MAX_AGE, REFETCH_INTERVAL};
pub(crate) use claims::issuer_matches;
pub use claims::{Expected, IdTokenPolicy, Identity};
pub use error::{IdTokenError, KeySetError};
pub(crate) use json::unique_object;
pub use jwk::{Jwk, KeySet, MAX_KEY_SET_BYTES, MAX_KEYS};
pub use userinfo::{UserInfoError, read_userinfo, userinfo_request};

#[cfg(test)]
pub(crate) mod tests;
