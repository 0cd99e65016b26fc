//! `private_key_jwt` client authentication (RFC 7523 §2.2, §3; RFC 7521 §4.2; OpenID
//! Connect Core §9): the client signs a short-lived JWT about itself with a key whose
//! public half was registered.

use serde_json::Value;

use super::{Failure, Server, invalid_client};
use crate::form::Params;
use crate::idtoken::unix_now;
use crate::jws::{self, Jwt};
use crate::{Client, ClientAuth};

/// The one `client_assertion_type` (RFC 7523 §2.2).
pub(super) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The longest an assertion may live from now, in seconds: a longer one is a replayable
/// credential.
const MAX_LIFETIME: u64 = 300;
/// How far ahead of the server's clock `iat` and `nbf` may be, in seconds.
const SKEW: u64 = 60;

impl Server {
    /// The client `assertion` authenticates, checked, for a request to `path`: `iss` =
    /// `sub` = a `private_key_jwt` client (and the body's `client_id`, if any), signed by
    /// its registered key, `aud` naming the issuer, the token endpoint or `path`'s URL,
    /// unexpired, living at most five minutes, with a `jti` not used before.
    pub(super) fn assertion_client(
        &self,
        params: &Params,
        assertion: &str,
        path: &str,
    ) -> Result<&Client, Failure> {
        if params.get("client_assertion_type") != Some(ASSERTION_TYPE) {
            return Err(invalid_client(
                "client_assertion_type is not urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
        let jwt = Jwt::decode(assertion).map_err(invalid_client)?;
        let id = jwt
            .text("sub")
            .ok_or(invalid_client("the client assertion has no sub"))?;
        if jwt.text("iss") != Some(id) {
            return Err(invalid_client("the client assertion's iss is not its sub"));
        }
        if params.get("client_id").is_some_and(|body| body != id) {
            return Err(invalid_client(
                "client_id in the body differs from the client assertion's sub",
            ));
        }
        let client = self.client(id).ok_or(invalid_client("unknown client"))?;
        let ClientAuth::PrivateKeyJwt { jwk } = &client.auth else {
            return Err(super::wrong_method(client));
        };
        let keys = jws::key_set(jwk).map_err(invalid_client)?;
        let kid = jwt.header.get("kid").and_then(Value::as_str);
        let named: Vec<_> = keys
            .iter()
            .filter(|key| kid.is_some() && key.get("kid").and_then(Value::as_str) == kid)
            .collect();
        let candidates = if named.is_empty() {
            keys.iter().collect()
        } else {
            named
        };
        if !candidates.iter().any(|key| jwt.verify(key).is_ok()) {
            return Err(invalid_client(
                "the client assertion is not signed by the client's registered key",
            ));
        }
        let accepted = [
            self.issuer.clone(),
            format!("{}/token", self.base_url),
            format!("{}{path}", self.base_url),
        ];
        let names_us = |aud: &Value| {
            aud.as_str()
                .is_some_and(|a| accepted.iter().any(|u| u == a))
        };
        let aud_ok = match jwt.claims.get("aud") {
            Some(Value::Array(auds)) => auds.iter().any(names_us),
            Some(aud) => names_us(aud),
            None => false,
        };
        if !aud_ok {
            return Err(invalid_client(
                "the client assertion's aud names neither the issuer nor this endpoint",
            ));
        }
        let now = unix_now();
        let exp = jwt
            .time("exp")
            .and_then(|exp| u64::try_from(exp).ok())
            .ok_or(invalid_client("the client assertion has no exp"))?;
        if exp <= now {
            return Err(invalid_client("the client assertion has expired"));
        }
        if exp > now + MAX_LIFETIME {
            return Err(invalid_client(
                "the client assertion lives longer than five minutes",
            ));
        }
        let ahead = |name| {
            jwt.time(name)
                .is_some_and(|t| t > i64::try_from(now + SKEW).unwrap_or(i64::MAX))
        };
        if ahead("iat") || ahead("nbf") {
            return Err(invalid_client("the client assertion is not valid yet"));
        }
        let jti = jwt
            .text("jti")
            .filter(|jti| !jti.is_empty() && jti.len() <= 256)
            .ok_or(invalid_client("the client assertion has no jti"))?;
        let mut st = self.lock();
        if !st
            .assertion_jtis
            .first_use(&format!("{id} {jti}"), now, exp)
        {
            return Err(invalid_client("the client assertion was used before"));
        }
        st.stats.client_assertions += 1;
        Ok(client)
    }
}
