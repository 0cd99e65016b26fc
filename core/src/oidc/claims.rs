//! The rules an ID token's claims must satisfy (OpenID Connect Core §3.1.3.7 and §12.2),
//! and the verified identity they give.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::error::IdTokenError;
use super::json::numeric_date;
use super::jwk::KeySet;
use super::jws::Jws;
use crate::crypto::{Algorithm, CryptoProvider, PublicKey, SignatureError};

/// Who signed in: the claims of an ID token that passed every check.
///
/// `iss` and `sub` together name the user (OpenID Connect Core §5.7: only this pair is a
/// stable identifier; an email address can change hands). The other getters are the
/// standard claims applications show; [`claims`](Identity::claims) has them all.
#[derive(Clone, PartialEq)]
pub struct Identity(Arc<Map<String, Value>>);

impl Identity {
    /// The identity in `claims`, which must have non-empty `iss` and `sub` strings. Used to
    /// read back an identity that was verified before (from a token store); it checks
    /// nothing else.
    pub fn from_claims(claims: Map<String, Value>) -> Option<Identity> {
        let nonempty = |name| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        (nonempty("iss") && nonempty("sub")).then(|| Identity(Arc::new(claims)))
    }

    /// The issuer.
    pub fn iss(&self) -> &str {
        self.string("iss").unwrap_or_default()
    }

    /// The subject: the user's id at the issuer.
    pub fn sub(&self) -> &str {
        self.string("sub").unwrap_or_default()
    }

    /// `email`, if present.
    pub fn email(&self) -> Option<&str> {
        self.string("email")
    }

    /// `email_verified`, if present: a JSON boolean, or the strings `"true"` and `"false"`
    /// that some providers send.
    pub fn email_verified(&self) -> Option<bool> {
        match self.0.get("email_verified")? {
            Value::Bool(verified) => Some(*verified),
            Value::String(text) if text == "true" => Some(true),
            Value::String(text) if text == "false" => Some(false),
            _ => None,
        }
    }

    /// `name`, if present.
    pub fn name(&self) -> Option<&str> {
        self.string("name")
    }

    /// `preferred_username`, if present.
    pub fn preferred_username(&self) -> Option<&str> {
        self.string("preferred_username")
    }

    /// What to call the user: the email, else the name, else the preferred username, else
    /// the subject.
    pub fn display_name(&self) -> &str {
        self.email()
            .or(self.name())
            .or(self.preferred_username())
            .unwrap_or(self.sub())
    }

    /// The claims to show who signed in, as JSON: `iss` and `sub`, and `email`,
    /// `email_verified`, `name` and `preferred_username` when the token has them (with
    /// `email_verified` read as [`email_verified`](Identity::email_verified) does).
    pub fn summary(&self) -> Map<String, Value> {
        let mut summary = Map::new();
        summary.insert("iss".into(), self.iss().into());
        summary.insert("sub".into(), self.sub().into());
        for name in ["email", "name", "preferred_username"] {
            if let Some(value) = self.string(name) {
                summary.insert(name.into(), value.into());
            }
        }
        if let Some(verified) = self.email_verified() {
            summary.insert("email_verified".into(), verified.into());
        }
        summary
    }

    /// Every claim of the token, as JSON.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.0
    }

    /// A string claim.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.0.get(name)?.as_str()
    }

    /// The audiences, as sent (a string or an array of strings).
    fn audiences(&self) -> Vec<&str> {
        audiences(self.0.get("aud")).unwrap_or_default()
    }
}

/// Names the user only by issuer and subject.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("iss", &self.iss())
            .field("sub", &self.sub())
            .finish_non_exhaustive()
    }
}

/// What a particular ID token is checked against besides the provider's rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expected<'a> {
    /// The `nonce` the authorization request carried; the token must carry it too.
    pub nonce: Option<&'a str>,
    /// The access token issued with the ID token; checked against `at_hash` when present.
    pub access_token: Option<&'a str>,
    /// For a refreshed ID token: the identity verified at login, whose `iss`, `sub` and
    /// `aud` the new token must repeat (OpenID Connect Core §12.2, S49). No `nonce` and no
    /// `auth_time` age check apply then.
    pub previous: Option<&'a Identity>,
}

/// How a provider's ID tokens are verified: set up by
/// [`ProviderBuilder`](crate::ProviderBuilder) when `openid` is requested, read with
/// [`Provider::id_token_policy`](crate::Provider::id_token_policy).
#[derive(Clone)]
pub struct IdTokenPolicy {
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) jwks_uri: http::Uri,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) leeway: Duration,
    pub(crate) tenant_issuer: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) crypto: Arc<dyn CryptoProvider>,
}

impl fmt::Debug for IdTokenPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdTokenPolicy")
            .field("issuer", &self.issuer)
            .field("jwks_uri", &self.jwks_uri)
            .field("algorithms", &self.algorithms)
            .field("leeway", &self.leeway)
            .field("tenant_issuer", &self.tenant_issuer)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl IdTokenPolicy {
    /// Where the provider publishes its keys.
    pub fn jwks_uri(&self) -> &http::Uri {
        &self.jwks_uri
    }

    /// The signing algorithms accepted (S46).
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// The clock leeway for `exp`, `iat`, `nbf` and `auth_time`.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Verifies `token` with a key of `keys`, at wall-clock time `wall`: the signature
    /// (S46, S47), then every claim (S48, and S49 for a refreshed token).
    pub fn verify(
        &self,
        keys: &KeySet,
        token: &str,
        expected: &Expected<'_>,
        wall: SystemTime,
    ) -> Result<Identity, IdTokenError> {
        let jws = self.parse(token)?;
        self.verify_parsed(jws, token, keys, expected, wall)
    }

    /// Reads `token` and checks its header against the allow-list: the part of the check
    /// that needs no key.
    pub(crate) fn parse(&self, token: &str) -> Result<Jws, IdTokenError> {
        Jws::parse(token, &self.algorithms)
    }

    /// The rest of [`verify`](IdTokenPolicy::verify) for a token [`parse`] read.
    pub(crate) fn verify_parsed(
        &self,
        jws: Jws,
        token: &str,
        keys: &KeySet,
        expected: &Expected<'_>,
        wall: SystemTime,
    ) -> Result<Identity, IdTokenError> {
        let key = keys.select(jws.algorithm, jws.kid.as_deref())?;
        self.check_signature(&jws, token, key.key())?;
        self.check_claims(jws, expected, wall)
    }

    fn check_signature(&self, jws: &Jws, token: &str, key: &PublicKey) -> Result<(), IdTokenError> {
        let length = match key {
            PublicKey::Rsa { n, .. } => n.len(),
            PublicKey::Ec { curve, .. } => 2 * curve.coordinate_len(),
            PublicKey::Ed25519(_) => 64,
        };
        let signed = token.as_bytes().get(..jws.signed_len).unwrap_or_default();
        if jws.signature.len() != length {
            return Err(IdTokenError::Signature);
        }
        match self
            .crypto
            .verify(jws.algorithm, key, signed, &jws.signature)
        {
            Ok(()) => Ok(()),
            Err(SignatureError::Unsupported) => {
                Err(IdTokenError::Algorithm(jws.algorithm.name().into()))
            }
            Err(_) => Err(IdTokenError::Signature),
        }
    }

    /// OpenID Connect Core §3.1.3.7 steps 2–13 (the signature is step 6), and §12.2 for a
    /// refreshed token.
    fn check_claims(
        &self,
        jws: Jws,
        expected: &Expected<'_>,
        wall: SystemTime,
    ) -> Result<Identity, IdTokenError> {
        let claims = &jws.claims;
        let string = |name| claims.get(name).and_then(Value::as_str);

        let iss = string("iss").ok_or(IdTokenError::Issuer)?;
        if !issuer_matches(
            &self.issuer,
            self.tenant_issuer,
            iss,
            Some(string("tid").unwrap_or_default()),
        ) {
            return Err(IdTokenError::Issuer);
        }
        let sub = string("sub")
            .filter(|sub| !sub.is_empty())
            .ok_or(IdTokenError::Subject)?;
        let audiences = audiences(claims.get("aud")).ok_or(IdTokenError::Audience)?;
        if !audiences.contains(&self.client_id.as_str()) {
            return Err(IdTokenError::Audience);
        }
        match claims.get("azp") {
            None if audiences.len() > 1 => return Err(IdTokenError::AuthorizedParty),
            None => {}
            Some(azp) if azp == self.client_id.as_str() => {}
            Some(_) => return Err(IdTokenError::AuthorizedParty),
        }
        if let Some(previous) = expected.previous {
            if iss != previous.iss() {
                return Err(IdTokenError::Issuer);
            }
            if sub != previous.sub() {
                return Err(IdTokenError::Subject);
            }
            let mut before = previous.audiences();
            let mut now = audiences.clone();
            before.sort_unstable();
            now.sort_unstable();
            if before != now {
                return Err(IdTokenError::Audience);
            }
        }

        let now = wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let leeway = self.leeway.as_secs();
        let date = |name| claims.get(name).map(numeric_date);
        match date("exp") {
            Some(Some(exp)) if now <= exp.saturating_add(leeway) => {}
            _ => return Err(IdTokenError::Expired),
        }
        match date("iat") {
            Some(Some(iat)) if iat <= now.saturating_add(leeway) => {}
            _ => return Err(IdTokenError::NotYetValid),
        }
        match date("nbf") {
            None => {}
            Some(Some(nbf)) if nbf <= now.saturating_add(leeway) => {}
            Some(_) => return Err(IdTokenError::NotYetValid),
        }
        if let Some(nonce) = expected.nonce {
            let sent = string("nonce").ok_or(IdTokenError::Nonce)?;
            if !constant_time_eq(sent.as_bytes(), nonce.as_bytes()) {
                return Err(IdTokenError::Nonce);
            }
        }
        if let (Some(max_age), None) = (self.max_age, expected.previous) {
            match date("auth_time") {
                Some(Some(at)) if now <= at.saturating_add(max_age).saturating_add(leeway) => {}
                _ => return Err(IdTokenError::AuthTime),
            }
        }
        if let (Some(at_hash), Some(access_token)) = (claims.get("at_hash"), expected.access_token)
        {
            let at_hash = at_hash.as_str().ok_or(IdTokenError::AccessTokenHash)?;
            if at_hash != access_token_hash(jws.algorithm, access_token) {
                return Err(IdTokenError::AccessTokenHash);
            }
        }
        Ok(Identity(Arc::new(jws.claims)))
    }
}

/// `iss` byte-equal to `issuer`; with the multi-tenant opt-in (`template`), `issuer`'s
/// `{tenantid}` replaced by `tid` (an ID token's own claim), or by any tenant id when `tid`
/// is `None` (a callback's `iss`, which comes with no claims).
pub(crate) fn issuer_matches(issuer: &str, template: bool, iss: &str, tid: Option<&str>) -> bool {
    if iss == issuer {
        return true;
    }
    let Some((before, after)) = issuer.split_once("{tenantid}").filter(|_| template) else {
        return false;
    };
    let Some(tenant) = iss
        .strip_prefix(before)
        .and_then(|rest| rest.strip_suffix(after))
    else {
        return false;
    };
    is_tenant_id(tenant) && tid.is_none_or(|tid| tid == tenant)
}

/// A tenant id: a GUID or similar, letters, digits and dashes, so that substituting it
/// cannot change the issuer's structure.
fn is_tenant_id(tid: &str) -> bool {
    !tid.is_empty()
        && tid.len() <= 64
        && tid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
fn audiences(aud: Option<&Value>) -> Option<Vec<&str>> {
    match aud? {
        Value::String(one) => Some(vec![one.as_str()]),
        Value::Array(many) if !many.is_empty() => many.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// `at_hash` of `access_token`: the left half of its hash under `algorithm`'s hash
/// function, base64url (OpenID Connect Core §3.1.3.6).
pub(crate) fn access_token_hash(algorithm: Algorithm, access_token: &str) -> String {
    let bytes = access_token.as_bytes();
    let digest: Vec<u8> = match algorithm.hash_bits() {
        256 => Sha256::digest(bytes).to_vec(),
        384 => Sha384::digest(bytes).to_vec(),
        _ => Sha512::digest(bytes).to_vec(),
    };
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// Equality whose time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenID Connect Core §A.3's access token and its RS256 `at_hash`.
    #[test]
    fn at_hash_of_the_specification_example() {
        assert_eq!(
            access_token_hash(
                Algorithm::RS256,
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn identity_getters() {
        let claims = serde_json::json!({
            "iss": "https://idp.example", "sub": "248289761001", "email": "jane@example.com",
            "email_verified": "true", "name": "Jane Doe", "preferred_username": "j.doe",
        });
        let identity = Identity::from_claims(claims.as_object().unwrap().clone()).unwrap();
        assert_eq!(identity.display_name(), "jane@example.com");
        assert_eq!(identity.email_verified(), Some(true));
        assert_eq!(identity.preferred_username(), Some("j.doe"));
        assert_eq!(
            Value::Object(identity.summary()),
            serde_json::json!({
                "iss": "https://idp.example", "sub": "248289761001", "email": "jane@example.com",
                "email_verified": true, "name": "Jane Doe", "preferred_username": "j.doe",
            })
        );
        assert_eq!(
            format!("{identity:?}"),
            r#"Identity { iss: "https://idp.example", sub: "248289761001", .. }"#
        );
        let bare = serde_json::json!({"iss": "i", "sub": "s"});
        assert_eq!(
            Identity::from_claims(bare.as_object().unwrap().clone())
                .unwrap()
                .display_name(),
            "s"
        );
        for bad in [
            serde_json::json!({"iss": "i"}),
            serde_json::json!({"iss": "i", "sub": ""}),
            serde_json::json!({"iss": 1, "sub": "s"}),
        ] {
            assert!(Identity::from_claims(bad.as_object().unwrap().clone()).is_none());
        }
    }

    #[test]
    fn s48_a_tenant_template_only_by_opt_in_and_only_with_the_tokens_own_tenant() {
        let template = "https://login.microsoftonline.com/{tenantid}/v2.0";
        let tid = "9188040d-6c67-4c5b-b112-36a304b66dad";
        let iss = format!("https://login.microsoftonline.com/{tid}/v2.0");
        assert!(issuer_matches(template, true, &iss, Some(tid)));
        assert!(
            issuer_matches(template, true, &iss, None),
            "a callback names no tid"
        );
        assert!(
            !issuer_matches(template, false, &iss, Some(tid)),
            "no opt-in"
        );
        assert!(!issuer_matches(
            template,
            true,
            &iss,
            Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
        ));
        for forged in [
            "https://login.microsoftonline.com/evil.example/v2.0",
            "https://login.microsoftonline.com/a/b/v2.0",
            "https://login.microsoftonline.com//v2.0",
            "https://evil.example/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
        ] {
            assert!(!issuer_matches(template, true, forged, None), "{forged}");
        }
        assert!(issuer_matches(
            "https://idp.example",
            false,
            "https://idp.example",
            None
        ));
        assert!(!issuer_matches(
            "https://idp.example",
            true,
            "https://idp.example/",
            None
        ));
    }

    #[test]
    fn equality_is_by_content() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
