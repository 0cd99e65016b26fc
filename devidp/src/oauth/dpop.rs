//! DPoP (RFC 9449): the proofs sent to the token, revocation, pushed authorization and
//! UserInfo endpoints, checked as §4.3 says, and the server's nonce (§8, §9).
//!
//! A proof is a JWT with `typ` `dpop+jwt`, an asymmetric `alg` and the public `jwk` that
//! signed it; its claims name the request (`htm`, `htu` without query or fragment), when
//! it was made (`iat`, within a minute of the server's clock), a `jti` never seen before,
//! with a token the token's hash (`ath`), and, when [`crate::Config::dpop_nonce`] is set,
//! the server's current `nonce`. What it proves is the key's thumbprint (RFC 7638), to
//! which the tokens it gets are bound.

use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{Failure, Server, random_token};
use crate::idtoken::unix_now;
use crate::jws::{self, Jwt};
use crate::{RecordedRequest, http::Response};

/// How far a proof's `iat` may be from the server's clock, in seconds.
const IAT_WINDOW: u64 = 60;

/// Why a proof was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ProofError {
    /// It breaks a rule of RFC 9449 §4.3: `invalid_dpop_proof`.
    Invalid(&'static str),
    /// It lacks the current nonce: `use_dpop_nonce`, with the nonce to use.
    UseNonce(String),
}

impl ProofError {
    /// The token endpoint's answer (RFC 9449 §5, §8): 400 with the error, and the nonce
    /// in a `DPoP-Nonce` header.
    pub(super) fn at_token_endpoint(self) -> Failure {
        match self {
            ProofError::Invalid(why) => Failure::new(400, "invalid_dpop_proof", why),
            ProofError::UseNonce(nonce) => Failure {
                nonce: Some(nonce),
                ..Failure::new(
                    400,
                    "use_dpop_nonce",
                    "the DPoP proof must carry the server's nonce",
                )
            },
        }
    }

    /// A resource server's answer (RFC 9449 §7.1, §9): 401 with a `DPoP` challenge.
    pub(super) fn at_resource(self) -> Response {
        let (error, nonce) = match self {
            ProofError::Invalid(_) => ("invalid_dpop_proof", None),
            ProofError::UseNonce(nonce) => ("use_dpop_nonce", Some(nonce)),
        };
        let response = challenge(error);
        match nonce {
            Some(nonce) => response.with("DPoP-Nonce", nonce),
            None => response,
        }
    }
}

/// A 401 with `WWW-Authenticate: DPoP error="…"` (RFC 9449 §7.1).
pub(super) fn challenge(error: &str) -> Response {
    Response::new(401, "application/json", format!(r#"{{"error":"{error}"}}"#)).with(
        "WWW-Authenticate",
        format!(r#"DPoP algs="{}", error="{error}""#, jws::ALGS.join(" ")),
    )
}

impl Server {
    /// The request's DPoP proof for `path`, checked: the thumbprint of the key that made
    /// it, or `None` without a `DPoP` header. `access_token` is the token the request
    /// presents, whose hash the proof's `ath` must be.
    pub(super) fn dpop_proof(
        &self,
        request: &RecordedRequest,
        path: &str,
        access_token: Option<&str>,
    ) -> Result<Option<String>, ProofError> {
        let mut proofs = request.headers_named("dpop");
        let Some(proof) = proofs.next() else {
            return Ok(None);
        };
        if proofs.next().is_some() {
            return Err(ProofError::Invalid("more than one DPoP header"));
        }
        let jwt = Jwt::decode(proof).map_err(ProofError::Invalid)?;
        if jwt.header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
            return Err(ProofError::Invalid("the proof's typ is not dpop+jwt"));
        }
        let jwk = jwt
            .header
            .get("jwk")
            .and_then(Value::as_object)
            .ok_or(ProofError::Invalid("the proof's header has no jwk"))?;
        if jws::is_private(jwk) {
            return Err(ProofError::Invalid("the proof's jwk holds a private key"));
        }
        jwt.verify(jwk).map_err(ProofError::Invalid)?;
        let jkt = jws::thumbprint(jwk).map_err(ProofError::Invalid)?;
        if jwt.text("htm") != Some(request.method.as_str()) {
            return Err(ProofError::Invalid("htm is not the request's method"));
        }
        let htu = jwt
            .text("htu")
            .ok_or(ProofError::Invalid("htu is missing"))?;
        let htu = htu.split(['?', '#']).next().unwrap_or(htu);
        if htu != format!("{}{path}", self.base_url) {
            return Err(ProofError::Invalid("htu is not the request's URI"));
        }
        let now = unix_now();
        let iat = jwt
            .time("iat")
            .and_then(|iat| u64::try_from(iat).ok())
            .ok_or(ProofError::Invalid("iat is missing"))?;
        if iat.abs_diff(now) > IAT_WINDOW {
            return Err(ProofError::Invalid("iat is too far from the server's time"));
        }
        let jti = jwt
            .text("jti")
            .filter(|jti| !jti.is_empty() && jti.len() <= 256)
            .ok_or(ProofError::Invalid("jti is missing"))?;
        if let Some(token) = access_token {
            let hash = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
            if jwt.text("ath") != Some(hash.as_str()) {
                return Err(ProofError::Invalid("ath is not the access token's hash"));
            }
        }
        let mut st = self.lock();
        if self.config.dpop_nonce && jwt.text("nonce") != Some(st.dpop_nonce.as_str()) {
            st.stats.dpop_nonce_challenges += 1;
            return Err(ProofError::UseNonce(st.dpop_nonce.clone()));
        }
        if !st.proof_jtis.first_use(jti, now, iat + IAT_WINDOW) {
            return Err(ProofError::Invalid("the proof's jti was used before"));
        }
        st.stats.dpop_proofs += 1;
        Ok(Some(jkt))
    }

    /// A new nonce, from now on the only one accepted.
    pub(crate) fn rotate_dpop_nonce(&self) -> io::Result<String> {
        let nonce = random_token().ok_or_else(|| io::Error::other("no randomness available"))?;
        self.lock().dpop_nonce.clone_from(&nonce);
        Ok(nonce)
    }
}
