//! Token endpoint responses (RFC 6749 §5.1 and §5.2) and the tokens a flow obtained.
//!
//! Parsing is strict where security depends on it and tolerant where providers only differ
//! in formatting (see PROVIDERS.md):
//!
//! - an `error` member means the code was refused, at any HTTP status (S36: GitHub answers
//!   errors with 200);
//! - success is a 2xx with an `access_token` (S35); the token values must be printable
//!   ASCII, because they end up in an `Authorization` header (a CR/LF would inject headers);
//! - JSON and form-encoded bodies are both understood, whatever the `Content-Type` says;
//!   `token_type` is case-insensitive and defaults to bearer; `expires_in` may be a number
//!   or a numeric string (or `expires`, historic Facebook) and is clamped; unknown members
//!   are kept;
//! - the APIs the access token is for (its audience, RFC 8707) are the response's
//!   `resource` member when it names them (Entra ID v1 does), else the resources asked for.
//!
//! Secrets are [`SecretString`]s: `Debug` never shows them (S41). They are exposed in one
//! place only, the [`serde::Serialize`] impl used to store a [`TokenSet`].

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde_json::{Map, Value};

use crate::error::{BadTokenResponse, FlowError, ProviderError};
use crate::grammar::{is_error_code, is_vschar_text};
use crate::keys::PrivateKey;
use crate::oidc::Identity;

/// The longest token lifetime believed: `expires_in` beyond a year is clamped to a year.
const MAX_EXPIRES_IN: u64 = 365 * 24 * 60 * 60;

/// Members that must appear at most once; a repeat is an error rather than a guess.
const SINGLE_MEMBERS: [&str; 12] = [
    "access_token",
    "refresh_token",
    "token_type",
    "expires_in",
    "error",
    "scope",
    "id_token",
    // A device authorization response's (RFC 8628 §3.2), kept among the extra members.
    "device_code",
    "user_code",
    "verification_uri",
    "verification_uri_complete",
    "interval",
];

/// How an access token is to be presented (`token_type`, RFC 6749 §7.1).
///
/// Parsed case-insensitively: `bearer`, `Bearer` and `BEARER` are all [`TokenType::Bearer`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenType {
    /// A bearer token (RFC 6750).
    Bearer,
    /// A DPoP-bound token (RFC 9449).
    DPoP,
    /// Any other type, as the provider spelled it.
    Other(String),
}

impl TokenType {
    /// The type named `name`, compared case-insensitively.
    pub fn parse(name: &str) -> TokenType {
        if name.eq_ignore_ascii_case("bearer") {
            TokenType::Bearer
        } else if name.eq_ignore_ascii_case("dpop") {
            TokenType::DPoP
        } else {
            TokenType::Other(name.to_owned())
        }
    }

    /// `"Bearer"`, `"DPoP"`, or the provider's original spelling.
    pub fn as_str(&self) -> &str {
        match self {
            TokenType::Bearer => "Bearer",
            TokenType::DPoP => "DPoP",
            TokenType::Other(name) => name,
        }
    }
}

/// How the granted scope differs from the requested one.
///
/// Not an error: providers legitimately add scopes (Google adds `openid`) or expand names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeChange {
    /// Granted but not requested; sorted, without duplicates.
    pub added: Vec<String>,
    /// Requested but not granted; sorted, without duplicates.
    pub removed: Vec<String>,
}

/// The tokens a flow obtained. Secrets are `SecretString`s; `Debug` redacts them (S41).
///
/// Serializing it (for a token store) writes the secrets in clear; that is the only place
/// they are exposed.
///
/// A token set is immutable and shared: cloning it (to store it and hand it to the caller,
/// say) copies a pointer, never a secret. The secrets are zeroized when the last clone is
/// dropped.
#[derive(Clone)]
pub struct TokenSet(Arc<TokenData>);

#[derive(Clone)]
struct TokenData {
    access_token: SecretString,
    token_type: TokenType,
    token_type_defaulted: bool,
    expires_at: Option<SystemTime>,
    refresh_token: Option<SecretString>,
    scope: Option<String>,
    scope_change: Option<ScopeChange>,
    id_token: Option<SecretString>,
    identity: Option<Identity>,
    extra: Map<String, Value>,
    /// The resource indicators the access token is for (RFC 8707).
    audience: Vec<String>,
    /// The DPoP key the tokens are bound to (RFC 9449): their proofs are made with it.
    dpop_key: Option<PrivateKey>,
}

impl TokenSet {
    /// A bearer token with nothing else known about it.
    ///
    /// The value is taken as given; tokens parsed from a provider's response are checked to
    /// be non-empty printable ASCII, and a stored token set that fails that check does not
    /// deserialize.
    pub fn new(access_token: SecretString) -> TokenSet {
        TokenSet::from_data(TokenData {
            access_token,
            token_type: TokenType::Bearer,
            token_type_defaulted: false,
            expires_at: None,
            refresh_token: None,
            scope: None,
            scope_change: None,
            id_token: None,
            identity: None,
            extra: Map::new(),
            audience: Vec::new(),
            dpop_key: None,
        })
    }

    fn from_data(data: TokenData) -> TokenSet {
        TokenSet(Arc::new(data))
    }

    /// These tokens, refreshed from `previous`, with what the refresh response left out
    /// taken from it: the refresh token (not rotated), the scope (RFC 6749 §6: unchanged)
    /// and the ID token (OpenID Connect §12.2: a refresh may not repeat it). Not the
    /// audience: the refresh asked for the resources again, and the answer says its own.
    pub(crate) fn carry_over(mut self, previous: &TokenSet) -> TokenSet {
        let data = Arc::make_mut(&mut self.0);
        if data.refresh_token.is_none() {
            data.refresh_token.clone_from(&previous.0.refresh_token);
        }
        if data.scope.is_none() {
            data.scope.clone_from(&previous.0.scope);
            data.scope_change.clone_from(&previous.0.scope_change);
        }
        if data.id_token.is_none() {
            data.id_token.clone_from(&previous.0.id_token);
            data.identity.clone_from(&previous.0.identity);
        }
        // Refreshed DPoP-bound tokens are bound to the same key (RFC 9449 §5).
        data.dpop_key.clone_from(&previous.0.dpop_key);
        self
    }

    /// The same tokens, bound to `key` (DPoP): the key every proof for them is made with.
    #[must_use]
    pub fn with_dpop_key(mut self, key: PrivateKey) -> TokenSet {
        Arc::make_mut(&mut self.0).dpop_key = Some(key);
        self
    }

    /// The DPoP key the tokens are bound to, if they are (`token_type` `DPoP`): load it
    /// with [`Signer::new`](crate::keys::Signer::new) and make each request's proof with
    /// [`dpop::Proof`](crate::dpop::Proof), with the access token's `ath`. Stored with the
    /// tokens, sealed where the store seals (S61).
    pub fn dpop_key(&self) -> Option<&PrivateKey> {
        self.0.dpop_key.as_ref()
    }

    /// A DPoP proof for the application's own `method` request to `uri` presenting the
    /// access token (its hash, `ath`, is in the proof), made at `wall` with the key the
    /// tokens are bound to, loaded by `crypto`; with the server's `nonce` when it asked for
    /// one. `None` for bearer tokens. Send it as the `DPoP` header, with
    /// `Authorization: DPoP <access token>`.
    pub fn dpop_proof(
        &self,
        crypto: Arc<dyn crate::crypto::CryptoProvider>,
        method: &str,
        uri: &str,
        nonce: Option<&str>,
        wall: SystemTime,
    ) -> Option<Result<String, crate::dpop::ProofError>> {
        use crate::dpop::{Proof, ProofError};
        let key = self.dpop_key()?.clone();
        Some((|| {
            let signer = crate::keys::Signer::new(key, crypto).map_err(ProofError::Key)?;
            let mut proof =
                Proof::new(method, uri)?.access_token(self.0.access_token.expose_secret());
            if let Some(nonce) = nonce {
                proof = proof.nonce(nonce);
            }
            proof.sign(&signer, wall)
        })())
    }

    /// The same tokens with the identity their ID token was verified to carry (`None`:
    /// unverified).
    pub(crate) fn with_identity(mut self, identity: Option<Identity>) -> TokenSet {
        Arc::make_mut(&mut self.0).identity = identity;
        self
    }

    /// The same tokens, with `previous`'s ID token and identity instead of their own.
    pub(crate) fn with_id_token_of(mut self, previous: &TokenSet) -> TokenSet {
        let data = Arc::make_mut(&mut self.0);
        data.id_token.clone_from(&previous.0.id_token);
        data.identity.clone_from(&previous.0.identity);
        self
    }

    /// Whether `other` holds the same refresh token (or neither holds one).
    pub(crate) fn same_refresh_token(&self, other: &TokenSet) -> bool {
        self.0
            .refresh_token
            .as_ref()
            .map(ExposeSecret::expose_secret)
            == other
                .0
                .refresh_token
                .as_ref()
                .map(ExposeSecret::expose_secret)
    }

    /// The same tokens with `refresh_token`.
    #[must_use]
    pub fn with_refresh_token(mut self, refresh_token: SecretString) -> TokenSet {
        Arc::make_mut(&mut self.0).refresh_token = Some(refresh_token);
        self
    }

    /// The same tokens, expiring at `expires_at`.
    #[must_use]
    pub fn with_expires_at(mut self, expires_at: SystemTime) -> TokenSet {
        Arc::make_mut(&mut self.0).expires_at = Some(expires_at);
        self
    }

    /// The same tokens, for the APIs `audience` names (RFC 8707 resource indicators, see
    /// [`audience`](TokenSet::audience)), taken as given: for token sets an application
    /// builds itself. Empty says nothing is known.
    #[must_use]
    pub fn with_audience(mut self, audience: Vec<String>) -> TokenSet {
        Arc::make_mut(&mut self.0).audience = audience;
        self
    }

    /// The access token.
    pub fn access_token(&self) -> &SecretString {
        &self.0.access_token
    }

    /// The token type (bearer when the response named none; see
    /// [`token_type_defaulted`](TokenSet::token_type_defaulted)).
    pub fn token_type(&self) -> &TokenType {
        &self.0.token_type
    }

    /// Whether the response lacked `token_type` and bearer was assumed (LinkedIn, Slack,
    /// StackExchange do this).
    pub fn token_type_defaulted(&self) -> bool {
        self.0.token_type_defaulted
    }

    /// When the access token expires: the time the response was received plus `expires_in`
    /// (clamped to a year). `None` when the provider did not say.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.0.expires_at
    }

    /// Whether the access token expires at or before `now + margin`. `false` when no expiry
    /// is known.
    pub fn expires_within(&self, now: SystemTime, margin: Duration) -> bool {
        match (self.0.expires_at, now.checked_add(margin)) {
            (None, _) => false,
            (Some(expires_at), Some(deadline)) => expires_at <= deadline,
            // `now + margin` is beyond any representable time: everything expires before it.
            (Some(_), None) => true,
        }
    }

    /// The refresh token, if one was issued.
    pub fn refresh_token(&self) -> Option<&SecretString> {
        self.0.refresh_token.as_ref()
    }

    /// The granted scope exactly as the provider sent it. `None` when the response had no
    /// `scope`, which means it equals the requested scope (RFC 6749 §5.1).
    pub fn scope(&self) -> Option<&str> {
        self.0.scope.as_deref()
    }

    /// The granted scopes: [`scope`](TokenSet::scope) split on spaces and commas (GitHub
    /// separates with commas), empty pieces skipped. Empty when there is no `scope`.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        split_scopes(self.0.scope.as_deref().unwrap_or(""))
    }

    /// How the granted scope differs from the requested one, if it does.
    pub fn scope_change(&self) -> Option<&ScopeChange> {
        self.0.scope_change.as_ref()
    }

    /// The OpenID Connect ID token as received. Its claims are to be trusted only through
    /// [`identity`](TokenSet::identity).
    pub fn id_token(&self) -> Option<&SecretString> {
        self.0.id_token.as_ref()
    }

    /// Who signed in: the claims of the ID token, present only when it passed verification
    /// (see [`oidc`](crate::oidc)).
    pub fn identity(&self) -> Option<&Identity> {
        self.0.identity.as_ref()
    }

    /// Every other member of the response (`ext_expires_in`, `not-before-policy`, …), as
    /// sent (form-encoded values are strings). Values may be secrets.
    pub fn extra(&self) -> &Map<String, Value> {
        &self.0.extra
    }

    /// The APIs the access token was issued for: resource indicators (RFC 8707), such as
    /// `https://graph.microsoft.com`.
    ///
    /// The response's `resource` member when it names them (Entra ID v1 sends a string;
    /// an array of strings is read too), otherwise the resources the grant asked for
    /// ([`ProviderBuilder::resource`](crate::ProviderBuilder::resource)); empty when neither
    /// says. A `resource` member of another shape, or with a value that is not printable
    /// ASCII, is not used (it stays in [`extra`](TokenSet::extra) either way). A refresh
    /// applies the same rule to its own answer.
    pub fn audience(&self) -> &[String] {
        &self.0.audience
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Extra values may be secrets (a provider's second token, say): names only.
        let extra_names: Vec<&String> = self.0.extra.keys().collect();
        f.debug_struct("TokenSet")
            .field("access_token", &format_args!("[REDACTED]"))
            .field("token_type", &self.0.token_type)
            .field("token_type_defaulted", &self.0.token_type_defaulted)
            .field("expires_at", &self.0.expires_at)
            .field("has_refresh_token", &self.0.refresh_token.is_some())
            .field("scope", &self.0.scope)
            .field("scope_change", &self.0.scope_change)
            .field("has_id_token", &self.0.id_token.is_some())
            .field("identity", &self.0.identity)
            .field("extra", &extra_names)
            .field("audience", &self.0.audience)
            .field("dpop_key", &self.0.dpop_key)
            .finish()
    }
}

/// Parses a token endpoint response (RFC 6749 §5.1/§5.2, tolerant as PROVIDERS.md describes).
///
/// `requested_scopes` and `requested_resources` are what the grant asked for (the audience
/// when the response names none); `received_at` is when the response arrived, the base of
/// `expires_in`. Only [`FlowError::TokenRejected`] and [`FlowError::BadTokenResponse`] come
/// out of it.
pub(crate) fn parse_token_response(
    response: &http::Response<Vec<u8>>,
    requested_scopes: &[String],
    requested_resources: &[String],
    received_at: SystemTime,
) -> Result<TokenSet, FlowError> {
    let members = read_answer(response)?;
    token_set(members, requested_scopes, requested_resources, received_at).map_err(|reason| {
        FlowError::BadTokenResponse {
            status: response.status().as_u16(),
            reason,
        }
    })
}

/// Reads the body of a token or device authorization endpoint's answer: its members when
/// it is a 2xx without `error` and without a repeated member that must be single;
/// otherwise [`FlowError::TokenRejected`] (an `error` member, at any status: S36) or
/// [`FlowError::BadTokenResponse`].
pub(crate) fn read_answer(response: &http::Response<Vec<u8>>) -> Result<Members, FlowError> {
    let status = response.status();
    let bad = |reason| FlowError::BadTokenResponse {
        status: status.as_u16(),
        reason,
    };
    let Some(members) = Members::parse(response.body()) else {
        // An error page (HTML from a proxy, say) is reported by its status.
        return Err(bad(if status.is_success() {
            BadTokenResponse::Unparseable
        } else {
            BadTokenResponse::UnexpectedStatus
        }));
    };
    if members.repeated.contains(&"error") {
        return Err(bad(BadTokenResponse::RepeatedMember("error")));
    }
    match members.get("error") {
        None | Some(Value::Null) => {}
        Some(Value::String(code)) if is_error_code(code) => {
            let text = |name: &'static str| match members.get(name) {
                Some(Value::String(text)) => Some(text.clone()),
                _ => None,
            };
            return Err(FlowError::TokenRejected {
                status: status.as_u16(),
                error: ProviderError {
                    code: code.clone(),
                    description: text("error_description"),
                    uri: text("error_uri"),
                },
            });
        }
        Some(_) => return Err(bad(BadTokenResponse::InvalidMember("error"))),
    }
    if !status.is_success() {
        return Err(bad(BadTokenResponse::UnexpectedStatus));
    }
    if let Some(name) = members.repeated.first() {
        return Err(bad(BadTokenResponse::RepeatedMember(name)));
    }
    Ok(members)
}

/// Builds the token set from the members of a 2xx response without `error`.
fn token_set(
    mut members: Members,
    requested_scopes: &[String],
    requested_resources: &[String],
    received_at: SystemTime,
) -> Result<TokenSet, BadTokenResponse> {
    let access_token = match members.take("access_token") {
        None | Some(Value::Null) => return Err(BadTokenResponse::MissingAccessToken),
        Some(value) => secret(value).ok_or(BadTokenResponse::InvalidMember("access_token"))?,
    };
    let (token_type, token_type_defaulted) = match members.take("token_type") {
        None | Some(Value::Null) => (TokenType::Bearer, true),
        Some(Value::String(name)) if is_vschar_text(&name) => (TokenType::parse(&name), false),
        Some(_) => return Err(BadTokenResponse::InvalidMember("token_type")),
    };
    let refresh_token = optional_secret(&mut members, "refresh_token")?;
    let id_token = optional_secret(&mut members, "id_token")?;
    let scope = match members.take("scope") {
        None | Some(Value::Null) => None,
        Some(Value::String(scope)) => Some(scope),
        Some(_) => return Err(BadTokenResponse::InvalidMember("scope")),
    };
    let expires_at = take_lifetime(&mut members)
        .and_then(|seconds| received_at.checked_add(Duration::from_secs(seconds)));
    let scope_change = scope_change(scope.as_deref(), requested_scopes);
    let audience = named_resources(members.extra.get("resource"))
        .unwrap_or_else(|| requested_resources.to_vec());
    let extra = members.into_extra();
    Ok(TokenSet::from_data(TokenData {
        access_token,
        token_type,
        token_type_defaulted,
        expires_at,
        refresh_token,
        scope,
        scope_change,
        id_token,
        identity: None,
        extra,
        audience,
        dpop_key: None,
    }))
}

/// The resource indicators a response's `resource` member names: a string (Entra ID v1)
/// or a non-empty array of strings, each printable ASCII. `None` for anything else, which
/// is not worth failing a login over: the resources asked for are used instead.
fn named_resources(resource: Option<&Value>) -> Option<Vec<String>> {
    let uri = |value: &Value| match value {
        Value::String(uri) if is_vschar_text(uri) => Some(uri.clone()),
        _ => None,
    };
    match resource? {
        Value::Array(items) if !items.is_empty() => items.iter().map(uri).collect(),
        value => uri(value).map(|uri| vec![uri]),
    }
}

/// Removes and checks the optional secret member `name`; JSON `null` counts as absent.
fn optional_secret(
    members: &mut Members,
    name: &'static str,
) -> Result<Option<SecretString>, BadTokenResponse> {
    match members.take(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => secret(value)
            .map(Some)
            .ok_or(BadTokenResponse::InvalidMember(name)),
    }
}

/// A token value: a non-empty string of printable ASCII.
fn secret(value: Value) -> Option<SecretString> {
    match value {
        Value::String(text) if is_vschar_text(&text) => Some(SecretString::from(text)),
        _ => None,
    }
}

/// Removes and returns the lifetime in seconds, clamped, from `expires_in` or else its
/// historic alias `expires`. A value that is not numeric stays in the map (it becomes an
/// extra member): lifetimes are advisory, not worth failing a login over.
fn take_lifetime(members: &mut Members) -> Option<u64> {
    if matches!(members.get("expires_in"), Some(Value::Null)) {
        members.take("expires_in");
    }
    for name in ["expires_in", "expires"] {
        if let Some(seconds) = members.get(name).and_then(lifetime_seconds) {
            members.take(name);
            return Some(seconds);
        }
    }
    None
}

/// A lifetime from a JSON number or a numeric string: negative is 0, fractions are
/// truncated, anything above [`MAX_EXPIRES_IN`] is clamped to it.
fn lifetime_seconds(value: &Value) -> Option<u64> {
    let seconds = match value {
        Value::Number(number) => match (number.as_u64(), number.as_i64()) {
            (Some(seconds), _) => seconds,
            (None, Some(_negative)) => 0,
            (None, None) => clamp_float(number.as_f64()?)?,
        },
        Value::String(text) => {
            numeric_string_seconds(text.trim_matches(|c: char| c.is_ascii_whitespace()))?
        }
        _ => return None,
    };
    Some(seconds.min(MAX_EXPIRES_IN))
}

/// Seconds from a JSON number or a numeric string, fractions kept: for values where
/// rounding down would be wrong (a polling interval). `None` when it is neither, or not
/// finite; negative values come back as they are.
pub(crate) fn seconds_f64(value: &Value) -> Option<f64> {
    let seconds = match value {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => numeric_text(text.trim_matches(|c: char| c.is_ascii_whitespace()))?
            .parse::<f64>()
            .ok()?,
        _ => return None,
    };
    seconds.is_finite().then_some(seconds)
}

fn numeric_string_seconds(text: &str) -> Option<u64> {
    let text = numeric_text(text)?;
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(seconds);
    }
    clamp_float(text.parse::<f64>().ok()?)
}

/// `text` if it is made of digits, signs, points and exponents only: keeps `f64::from_str`
/// from accepting words such as "inf" or "NaN".
fn numeric_text(text: &str) -> Option<&str> {
    let numeric = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    numeric.then_some(text)
}

fn clamp_float(seconds: f64) -> Option<u64> {
    if seconds.is_nan() {
        None
    } else if seconds <= 0.0 {
        Some(0)
    } else if seconds >= MAX_EXPIRES_IN as f64 {
        Some(MAX_EXPIRES_IN)
    } else {
        // In range and positive: truncation is the intended rounding.
        Some(seconds as u64)
    }
}

/// Splits a scope string on spaces and commas, skipping empty pieces.
fn split_scopes(raw: &str) -> impl Iterator<Item = &str> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            // The separators are ASCII, so the cuts fall on character boundaries.
            let end = memchr::memchr2(b' ', b',', rest.as_bytes()).unwrap_or(rest.len());
            let piece = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or_default();
            if !piece.is_empty() {
                return Some(piece);
            }
        }
        None
    })
}

/// The difference between the granted and requested scope sets; `None` when the response
/// named no scope (it then equals the requested one) or the sets are equal.
fn scope_change(granted: Option<&str>, requested: &[String]) -> Option<ScopeChange> {
    let granted = granted?;
    let requested_pieces = || requested.iter().flat_map(|scope| split_scopes(scope));
    // The usual answer, the very scopes asked for, is found without allocating; the
    // requested list comes from the configuration and is short.
    let same = split_scopes(granted).all(|piece| requested_pieces().any(|r| r == piece))
        && requested_pieces().all(|r| split_scopes(granted).any(|piece| piece == r));
    if same {
        return None;
    }
    let granted: BTreeSet<&str> = split_scopes(granted).collect();
    let requested: BTreeSet<&str> = requested
        .iter()
        .flat_map(|scope| split_scopes(scope))
        .collect();
    let owned = |scopes: std::collections::btree_set::Difference<'_, &str>| {
        scopes.map(|scope| (*scope).to_owned()).collect::<Vec<_>>()
    };
    let change = ScopeChange {
        added: owned(granted.difference(&requested)),
        removed: owned(requested.difference(&granted)),
    };
    (change != ScopeChange::default()).then_some(change)
}

/// The members the parser reads, kept in fixed places; every other member goes to `extra`.
const KNOWN_MEMBERS: [&str; 10] = [
    "access_token",
    "token_type",
    "expires_in",
    "expires",
    "refresh_token",
    "id_token",
    "scope",
    "error",
    "error_description",
    "error_uri",
];

/// The members of a response body: the first occurrence of each name, plus the names of
/// [`SINGLE_MEMBERS`] that occurred more than once.
#[derive(Default)]
pub(crate) struct Members {
    /// By position in [`KNOWN_MEMBERS`].
    known: [Option<Value>; KNOWN_MEMBERS.len()],
    extra: Map<String, Value>,
    repeated: Vec<&'static str>,
}

impl Members {
    /// Sniffs and parses `body`: a JSON object if it starts with `{` (after whitespace),
    /// otherwise form-encoded. `None` when it is neither (or is JSON but not an object).
    pub(crate) fn parse(body: &[u8]) -> Option<Members> {
        let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
        let body = body.get(start..)?;
        if body.starts_with(b"{") {
            Members::parse_json_object(body)
        } else if serde_json::from_slice::<de::IgnoredAny>(body).is_ok() {
            // An array, string, number…: JSON, but not a token response.
            None
        } else {
            Members::parse_form(body)
        }
    }

    fn parse_json_object(body: &[u8]) -> Option<Members> {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let members =
            serde::Deserializer::deserialize_map(&mut deserializer, MembersVisitor).ok()?;
        deserializer.end().ok()?;
        Some(members)
    }

    fn parse_form(body: &[u8]) -> Option<Members> {
        let text = std::str::from_utf8(body)
            .ok()?
            .trim_end_matches(|c: char| c.is_ascii_whitespace());
        // Form encoding escapes control characters; a body with raw line breaks inside is
        // an error page or worse, not a form.
        if text.bytes().any(|b| b.is_ascii_control()) {
            return None;
        }
        let mut members = Members::default();
        for pair in crate::form::pairs(text) {
            let (name, value) = pair.ok()?;
            members.insert(name, Value::String(value.into_owned()));
        }
        (!members.is_empty()).then_some(members)
    }

    fn slot(name: &str) -> Option<usize> {
        KNOWN_MEMBERS.iter().position(|known| *known == name)
    }

    fn is_empty(&self) -> bool {
        self.extra.is_empty() && self.known.iter().all(Option::is_none)
    }

    /// The value of the known member `name`.
    fn get(&self, name: &'static str) -> Option<&Value> {
        self.known.get(Members::slot(name)?)?.as_ref()
    }

    /// Removes and returns the value of the known member `name`.
    fn take(&mut self, name: &'static str) -> Option<Value> {
        self.known.get_mut(Members::slot(name)?)?.take()
    }

    /// Removes and returns the value of a member that is not a token response's (a device
    /// authorization response's `user_code`, say).
    pub(crate) fn take_extra(&mut self, name: &str) -> Option<Value> {
        self.extra.remove(name)
    }

    /// Removes and returns the lifetime `expires_in` (or `expires`) in seconds, clamped;
    /// `None` when absent or not numeric.
    pub(crate) fn take_lifetime(&mut self) -> Option<u64> {
        take_lifetime(self)
    }

    fn insert(&mut self, name: Cow<'_, str>, value: Value) {
        match Members::slot(&name) {
            Some(slot) if self.known[slot].is_none() => {
                self.known[slot] = Some(value);
                return;
            }
            None if !self.extra.contains_key(&*name) => {
                self.extra.insert(name.into_owned(), value);
                return;
            }
            _ => {}
        }
        if let Some(single) = SINGLE_MEMBERS.iter().find(|single| **single == name)
            && !self.repeated.contains(single)
        {
            self.repeated.push(single);
        }
    }

    /// Every member not taken, by name.
    fn into_extra(self) -> Map<String, Value> {
        let mut extra = self.extra;
        for (name, value) in KNOWN_MEMBERS.into_iter().zip(self.known) {
            if let Some(value) = value {
                extra.insert(name.to_owned(), value);
            }
        }
        extra
    }
}

/// Reads a JSON object member by member, so that repeated names are seen (a plain `Map`
/// silently keeps the last).
struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Members, A::Error> {
        let mut members = Members::default();
        while let Some(Name(name)) = access.next_key::<Name<'de>>()? {
            let value: Value = access.next_value()?;
            members.insert(name, value);
        }
        Ok(members)
    }
}

/// A member name, borrowed from the body unless it contains escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Name<'de>, D::Error> {
        deserializer.deserialize_str(NameVisitor)
    }
}

struct NameVisitor;

impl<'de> Visitor<'de> for NameVisitor {
    type Value = Name<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Borrowed(name)))
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Owned(name.to_owned())))
    }

    fn visit_string<E: de::Error>(self, name: String) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Owned(name)))
    }
}

/// `time` as whole Unix seconds, rounded down.
pub(crate) fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            let seconds = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            0i64.saturating_sub(seconds)
                .saturating_sub(i64::from(before.subsec_nanos() > 0))
        }
    }
}

pub(crate) fn from_unix_seconds(seconds: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

/// Writes the token set for storage, secrets in clear: `access_token`, `token_type`,
/// `token_type_defaulted`, `expires_at` (whole Unix seconds), `refresh_token`, `scope`,
/// `scope_change` (`{"added": [..], "removed": [..]}`), `audience` (`[..]`), `id_token`,
/// `identity` (the verified claims), `dpop_key`, `extra`; absent optional members (and an
/// empty audience) are left out.
impl serde::Serialize for TokenSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let optional = [
            self.0.expires_at.is_some(),
            self.0.refresh_token.is_some(),
            self.0.scope.is_some(),
            self.0.scope_change.is_some(),
            !self.0.audience.is_empty(),
            self.0.id_token.is_some(),
            self.0.identity.is_some(),
            self.0.dpop_key.is_some(),
        ];
        let len = 4 + optional.iter().filter(|present| **present).count();
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("access_token", self.0.access_token.expose_secret())?;
        map.serialize_entry("token_type", self.0.token_type.as_str())?;
        map.serialize_entry("token_type_defaulted", &self.0.token_type_defaulted)?;
        if let Some(expires_at) = self.0.expires_at {
            map.serialize_entry("expires_at", &unix_seconds(expires_at))?;
        }
        if let Some(refresh_token) = &self.0.refresh_token {
            map.serialize_entry("refresh_token", refresh_token.expose_secret())?;
        }
        if let Some(scope) = &self.0.scope {
            map.serialize_entry("scope", scope)?;
        }
        if let Some(change) = &self.0.scope_change {
            let change = serde_json::json!({ "added": change.added, "removed": change.removed });
            map.serialize_entry("scope_change", &change)?;
        }
        if !self.0.audience.is_empty() {
            map.serialize_entry("audience", &self.0.audience)?;
        }
        if let Some(id_token) = &self.0.id_token {
            map.serialize_entry("id_token", id_token.expose_secret())?;
        }
        if let Some(identity) = &self.0.identity {
            map.serialize_entry("identity", identity.claims())?;
        }
        if let Some(key) = &self.0.dpop_key {
            let stored = key.to_stored();
            let written = map.serialize_entry("dpop_key", &stored);
            crate::directory::zero(stored);
            written?;
        }
        map.serialize_entry("extra", &self.0.extra)?;
        map.end()
    }
}

/// Reads what [`Serialize`](serde::Serialize) wrote. Token values are checked as in a
/// provider's response; error messages name the member, never its value. Unknown members
/// are ignored; everything but `access_token` is optional (a missing `token_type` is bearer,
/// a missing `audience` empty).
impl<'de> serde::Deserialize<'de> for TokenSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<TokenSet, D::Error> {
        let value = <Value as serde::Deserialize>::deserialize(deserializer)?;
        from_storage(value).map_err(de::Error::custom)
    }
}

fn from_storage(value: Value) -> Result<TokenSet, &'static str> {
    let Value::Object(mut map) = value else {
        return Err("a stored token set must be an object");
    };
    let access_token = match map.remove("access_token") {
        None | Some(Value::Null) => return Err("stored token set lacks `access_token`"),
        Some(value) => secret(value).ok_or("stored `access_token` is not printable ASCII")?,
    };
    let token_type = match map.remove("token_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if is_vschar_text(&name) => Some(TokenType::parse(&name)),
        Some(_) => return Err("stored `token_type` is invalid"),
    };
    let token_type_defaulted = match map.remove("token_type_defaulted") {
        None | Some(Value::Null) => token_type.is_none(),
        Some(Value::Bool(defaulted)) => defaulted,
        Some(_) => return Err("stored `token_type_defaulted` is not a boolean"),
    };
    let expires_at = match map.remove("expires_at") {
        None | Some(Value::Null) => None,
        Some(Value::Number(seconds)) => Some(
            seconds
                .as_i64()
                .and_then(from_unix_seconds)
                .ok_or("stored `expires_at` is not a representable whole number of seconds")?,
        ),
        Some(_) => return Err("stored `expires_at` is not a number"),
    };
    let stored_secret = |map: &mut Map<String, Value>, name: &str, error| match map.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => secret(value).map(Some).ok_or(error),
    };
    let refresh_token = stored_secret(
        &mut map,
        "refresh_token",
        "stored `refresh_token` is not printable ASCII",
    )?;
    let id_token = stored_secret(
        &mut map,
        "id_token",
        "stored `id_token` is not printable ASCII",
    )?;
    let scope = match map.remove("scope") {
        None | Some(Value::Null) => None,
        Some(Value::String(scope)) => Some(scope),
        Some(_) => return Err("stored `scope` is not a string"),
    };
    let identity = match map.remove("identity") {
        None | Some(Value::Null) => None,
        Some(Value::Object(claims)) => {
            Some(Identity::from_claims(claims).ok_or("stored `identity` lacks `iss` or `sub`")?)
        }
        Some(_) => return Err("stored `identity` is not an object"),
    };
    let scope_change = match map.remove("scope_change") {
        None | Some(Value::Null) => None,
        Some(Value::Object(mut change)) => Some(ScopeChange {
            added: stored_scope_list(change.remove("added"))?,
            removed: stored_scope_list(change.remove("removed"))?,
        }),
        Some(_) => return Err("stored `scope_change` is not an object"),
    };
    let audience = match map.remove("audience") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(uri) => Ok(uri),
                _ => Err("stored `audience` holds a non-string"),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("stored `audience` is not an array"),
    };
    let dpop_key = match map.remove("dpop_key") {
        None | Some(Value::Null) => None,
        Some(stored) => Some(PrivateKey::from_stored(stored)?),
    };
    let extra = match map.remove("extra") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(extra)) => extra,
        Some(_) => return Err("stored `extra` is not an object"),
    };
    Ok(TokenSet::from_data(TokenData {
        access_token,
        token_type: token_type.unwrap_or(TokenType::Bearer),
        token_type_defaulted,
        expires_at,
        refresh_token,
        scope,
        scope_change,
        id_token,
        identity,
        extra,
        audience,
        dpop_key,
    }))
}

/// A list of scope names, sorted and deduplicated.
fn stored_scope_list(value: Option<Value>) -> Result<Vec<String>, &'static str> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err("stored `scope_change` lists are not arrays"),
    };
    let mut scopes = items
        .into_iter()
        .map(|item| match item {
            Value::String(scope) => Ok(scope),
            _ => Err("stored `scope_change` lists hold a non-string"),
        })
        .collect::<Result<Vec<_>, _>>()?;
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z, when the test responses "arrive".
    fn received_at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    fn after(seconds: u64) -> Option<SystemTime> {
        Some(received_at() + Duration::from_secs(seconds))
    }

    fn response(status: u16, body: &[u8]) -> http::Response<Vec<u8>> {
        http::Response::builder()
            .status(status)
            .body(body.to_vec())
            .expect("valid test status")
    }

    fn parse_with(status: u16, body: &str, requested: &[&str]) -> Result<TokenSet, FlowError> {
        let requested: Vec<String> = requested.iter().map(|s| (*s).to_owned()).collect();
        parse_token_response(
            &response(status, body.as_bytes()),
            &requested,
            &[],
            received_at(),
        )
    }

    /// `body`, the answer to a grant that asked for `resources`.
    fn for_resources(body: &str, resources: &[&str]) -> TokenSet {
        let resources: Vec<String> = resources.iter().map(|s| (*s).to_owned()).collect();
        parse_token_response(
            &response(200, body.as_bytes()),
            &[],
            &resources,
            received_at(),
        )
        .expect("a valid token response")
    }

    fn parse(status: u16, body: &str) -> Result<TokenSet, FlowError> {
        parse_with(status, body, &[])
    }

    fn ok(body: &str) -> TokenSet {
        parse(200, body).expect("a valid token response")
    }

    fn bad(status: u16, body: &str) -> BadTokenResponse {
        match parse(status, body) {
            Err(FlowError::BadTokenResponse {
                status: reported,
                reason,
            }) => {
                assert_eq!(reported, status);
                reason
            }
            other => panic!("expected BadTokenResponse for {body:?}, got {other:?}"),
        }
    }

    fn rejected(status: u16, body: &str) -> ProviderError {
        match parse(status, body) {
            Err(FlowError::TokenRejected {
                status: reported,
                error,
            }) => {
                assert_eq!(reported, status);
                error
            }
            other => panic!("expected TokenRejected for {body:?}, got {other:?}"),
        }
    }

    fn exposed(secret: Option<&SecretString>) -> Option<&str> {
        secret.map(|secret| secret.expose_secret())
    }

    /// Copied from /work/shared/bench-inputs/token_response.json, which lies outside the
    /// repository (an `include_bytes!` of it would break any checkout elsewhere).
    const GOOGLE: &str = r#"{
  "access_token": "ya29.a0AeDClZhFhhQWxM5q8L3D-NZ6M2nb2s_obmF2zWIPxTXzvGnFq4xEBfTecYHB4hWGJgVFpg0xuIgJdDDpoTbbK7sj6Je5CmhBZIZInJWUDcwVUniVy4wR5gs9xqizgIF1k_zVqGU80P5sYzzoXE0SD3SxPrNFMSZv_ua_6JWcX7EMJy0Yyw8Lv6PyfQRxQZGzpA",
  "expires_in": 3599,
  "refresh_token": "1//05cF9h9xNuErh6QQUntgk6FsTwjf_BlAQJQoaFX2nMLLGzt6MayrTIXUy0vCgbQLzonC5VC4wrqJRAGJSKJWCUz2SklqMzIDOV2V",
  "scope": "https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile https://www.googleapis.com/auth/calendar.readonly",
  "token_type": "Bearer",
  "id_token": "eyJhbGciOiJSUzI1NiIsImtpZCI6ImM3ZTA0NDY1NjQ5ZmZhNjA2NTU3NjUwYzdlNjVmMGE4N2FlMDBmZTgiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJodHRwczovL2FjY291bnRzLmdvb2dsZS5jb20iLCJhenAiOiI0MDc0MDg3MTgxOTItOXU0Z2QwY20wcDFwdnY2bDhrM3NkdTBhOGlhOGZoNm4uYXBwcy5nb29nbGV1c2VyY29udGVudC5jb20iLCJhdWQiOiI0MDc0MDg3MTgxOTItOXU0Z2QwY20wcDFwdnY2bDhrM3NkdTBhOGlhOGZoNm4uYXBwcy5nb29nbGV1c2VyY29udGVudC5jb20iLCJzdWIiOiIxMTAxNjk0ODQ0NzQzODYyNzYzMzQiLCJlbWFpbCI6ImphbmUuZG9lQGV4YW1wbGUuY29tIiwiZW1haWxfdmVyaWZpZWQiOnRydWUsImF0X2hhc2giOiJRNTJkYmt3S2l1QmttQVdQa2ZFVERjIiwiaWF0IjoxNzY3MjI1NjAwLCJleHAiOjE3NjcyMjkyMDB9.gcF9sEbgIuI2oLADXPMSPsH2-cSzVjxOgYwEO_WIiTWoGxOR1MWqL91nlWehpMu_FjsUfVV5I_GLrtkOo4JdsUoHut0BxwVf79tXl5qPahdjLVmt6KSwHib8zaGZbe3KBatVbKc69Fv9okqyl9W0RZsh2xVXgo5zd71tf8ZPPucWcfO6zqEyzZnNc9qCIoZff2a2MNgsnUhVkDeTLKQfKy2yxkXZWrv6lXLHWwxWl9V7XYElL1D08EVHToJKa-F3AFE0t9m1Eu7Md0pCiAyfNkqloumNTRuT2fKRH_zMFprMWxW1E5l2rlsYcwF_ZmZxV2cUdIsapBb1jZCH6QxnXw"
}"#;

    const GOOGLE_SCOPES: [&str; 3] = [
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/userinfo.profile",
        "https://www.googleapis.com/auth/calendar.readonly",
    ];

    const OIDC_PROVIDER: &str = r#"{"access_token":"pSeDXf4y3tDhQTcRc8NVJPjvVfyy3bFy5Ki8bqsTLlx","expires_in":3600,"id_token":"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJl","refresh_token":"o8FRWMsV2pK4S5wUKR5C8q3jDIP7Ibh5YXjf-KFqkUu","scope":"openid offline_access","token_type":"Bearer"}"#;

    const GITHUB_FORM: &str =
        "access_token=gho_16C7e42F292c6912E7710c838347Ae178B4a&scope=repo%2Cgist&token_type=bearer";

    const AZURE_V1: &str = r#"{"token_type":"Bearer","scope":"User.Read","expires_in":"3599","ext_expires_in":"3599","expires_on":"1767229199","not_before":"1767225300","resource":"https://graph.microsoft.com","access_token":"eyJ0eXAiOiJKV1QiLCJub25jZSI6IkFRQUJBQUFBQUFCIn0.eyJhdWQiOiIwMDAwMDAwMyJ9.sig","refresh_token":"0.AAAAbWQ2dXNlcmVmcmVzaHRva2Vu","refresh_in":1800}"#;

    #[test]
    fn google_bench_input_parses_completely() {
        let tokens = parse_with(200, GOOGLE, &GOOGLE_SCOPES).expect("Google's response");
        assert!(
            tokens
                .access_token()
                .expose_secret()
                .starts_with("ya29.a0AeDClZh")
        );
        assert_eq!(tokens.token_type(), &TokenType::Bearer);
        assert!(!tokens.token_type_defaulted());
        assert_eq!(tokens.expires_at(), after(3599));
        assert!(exposed(tokens.refresh_token()).is_some_and(|t| t.starts_with("1//05cF9h9")));
        assert!(exposed(tokens.id_token()).is_some_and(|t| t.starts_with("eyJhbGciOiJSUzI1NiIs")));
        assert_eq!(tokens.scopes().collect::<Vec<_>>(), GOOGLE_SCOPES);
        assert_eq!(tokens.scope_change(), None);
        assert!(tokens.extra().is_empty());
    }

    #[test]
    fn google_adding_openid_is_reported_as_scope_change() {
        let body = r#"{"access_token":"ya29.a0AfB_byC","expires_in":3599,"scope":"https://www.googleapis.com/auth/userinfo.email openid","token_type":"Bearer","id_token":"eyJhbGciOiJSUzI1NiJ9.e30.sig"}"#;
        let tokens = parse_with(
            200,
            body,
            &["https://www.googleapis.com/auth/userinfo.email"],
        )
        .expect("a scope change is not fatal");
        assert_eq!(
            tokens.scope_change(),
            Some(&ScopeChange {
                added: vec!["openid".to_owned()],
                removed: vec![],
            })
        );
        // Fewer scopes than requested, and requests that were themselves space-separated.
        let tokens = parse_with(200, body, &["openid email", "profile", "profile"]).expect("ok");
        assert_eq!(
            tokens.scope_change(),
            Some(&ScopeChange {
                added: vec!["https://www.googleapis.com/auth/userinfo.email".to_owned()],
                removed: vec!["email".to_owned(), "profile".to_owned()],
            })
        );
    }

    #[test]
    fn absent_scope_means_the_requested_one_and_no_change() {
        let tokens = parse_with(
            200,
            r#"{"access_token":"abc","token_type":"Bearer"}"#,
            &["repo"],
        )
        .expect("ok");
        assert_eq!(tokens.scope(), None);
        assert_eq!(tokens.scopes().count(), 0);
        assert_eq!(tokens.scope_change(), None);
    }

    #[test]
    fn github_comma_scopes_are_split() {
        let json = r#"{"access_token":"gho_16C7e42F292c6912E7710c838347Ae178B4a","token_type":"bearer","scope":"repo,gist"}"#;
        for body in [json, GITHUB_FORM] {
            let tokens = parse_with(200, body, &["repo", "gist"]).expect("GitHub's response");
            assert_eq!(tokens.scope(), Some("repo,gist"));
            assert_eq!(tokens.scopes().collect::<Vec<_>>(), ["repo", "gist"]);
            assert_eq!(tokens.scope_change(), None);
        }
        let tokens = parse_with(200, json, &["repo", "user"]).expect("ok");
        assert_eq!(
            tokens.scope_change(),
            Some(&ScopeChange {
                added: vec!["gist".to_owned()],
                removed: vec!["user".to_owned()],
            })
        );
    }

    #[test]
    fn oidc_provider_shaped_response() {
        let tokens =
            parse_with(200, OIDC_PROVIDER, &["openid", "offline_access"]).expect("oidc-provider");
        assert_eq!(
            tokens.access_token().expose_secret(),
            "pSeDXf4y3tDhQTcRc8NVJPjvVfyy3bFy5Ki8bqsTLlx"
        );
        assert_eq!(tokens.token_type().as_str(), "Bearer");
        assert_eq!(tokens.expires_at(), after(3600));
        assert_eq!(
            exposed(tokens.refresh_token()),
            Some("o8FRWMsV2pK4S5wUKR5C8q3jDIP7Ibh5YXjf-KFqkUu")
        );
        assert_eq!(
            exposed(tokens.id_token()),
            Some("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJl")
        );
        assert_eq!(tokens.scope(), Some("openid offline_access"));
        assert_eq!(tokens.scope_change(), None);
        assert!(tokens.extra().is_empty());
    }

    #[test]
    fn s35_token_type_is_case_insensitive() {
        for name in ["bearer", "BEARER", "Bearer", "bEaReR"] {
            let body =
                format!(r#"{{"access_token":"2YotnFZFEjr1zCsicMWpAA","token_type":"{name}"}}"#);
            let tokens = ok(&body);
            assert_eq!(tokens.token_type(), &TokenType::Bearer, "{name}");
            assert_eq!(tokens.token_type().as_str(), "Bearer");
            assert!(!tokens.token_type_defaulted());
        }
        let dpop = ok(
            r#"{"access_token":"Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU","token_type":"dpop"}"#,
        );
        assert_eq!(dpop.token_type(), &TokenType::DPoP);
        assert_eq!(dpop.token_type().as_str(), "DPoP");
        let mac = ok("access_token=SlAV32hkKG&token_type=MAC");
        assert_eq!(mac.token_type(), &TokenType::Other("MAC".to_owned()));
        assert_eq!(mac.token_type().as_str(), "MAC");
    }

    #[test]
    fn s35_missing_token_type_is_bearer_and_recorded() {
        let linkedin = r#"{"access_token":"AQUvlL_DYEzvT2wz1QJiEPeLioeA","expires_in":5184000,"scope":"r_liteprofile"}"#;
        let slack = r#"{"ok":true,"access_token":"xoxp-23984754863-2348975623103","scope":"identify,channels:read","user_id":"U0KRQLJ9H","team_id":"T0G9PQBBK","team_name":"Example"}"#;
        let stackexchange = "access_token=(Ab12cD34eF56gH78)&expires=86400";
        for body in [linkedin, slack, stackexchange] {
            let tokens = ok(body);
            assert_eq!(tokens.token_type(), &TokenType::Bearer, "{body}");
            assert!(tokens.token_type_defaulted(), "{body}");
        }
        assert_eq!(ok(linkedin).expires_at(), after(5_184_000));
        assert_eq!(ok(slack).extra().get("ok"), Some(&Value::Bool(true)));
        assert!(ok(r#"{"access_token":"a","token_type":null}"#).token_type_defaulted());
    }

    #[test]
    fn s35_invalid_token_type_is_invalid_member() {
        for token_type in [r#""""#, "42", r#"["Bearer"]"#, r#""Bearer\r\nX-Evil: 1""#] {
            let body = format!(r#"{{"access_token":"abc","token_type":{token_type}}}"#);
            assert_eq!(
                bad(200, &body),
                BadTokenResponse::InvalidMember("token_type"),
                "{body}"
            );
        }
    }

    #[test]
    fn s35_expires_in_as_numeric_string_azure() {
        let tokens = parse_with(200, AZURE_V1, &["User.Read"]).expect("Azure AD v1");
        assert_eq!(tokens.expires_at(), after(3599));
        assert_eq!(
            tokens.extra().get("ext_expires_in"),
            Some(&Value::from("3599"))
        );
        assert_eq!(
            tokens.extra().get("expires_on"),
            Some(&Value::from("1767229199"))
        );
        assert_eq!(tokens.extra().get("refresh_in"), Some(&Value::from(1800)));
        assert!(!tokens.extra().contains_key("expires_in"));
        // Padded and fractional strings are numbers too.
        assert_eq!(
            ok(r#"{"access_token":"a","expires_in":" 60 "}"#).expires_at(),
            after(60)
        );
        assert_eq!(
            ok(r#"{"access_token":"a","expires_in":"60.9"}"#).expires_at(),
            after(60)
        );
    }

    #[test]
    fn s35_absurd_expires_in_is_clamped() {
        let year = MAX_EXPIRES_IN;
        for (expires_in, expected) in [
            ("1000000000000", year),
            ("18446744073709551615", year),
            ("1e300", year),
            (r#""99999999999999999999999999""#, year),
            (r#""1e30""#, year),
            ("-5", 0),
            (r#""-3600""#, 0),
            ("-1.5", 0),
            ("3599.9", 3599),
            ("0", 0),
        ] {
            let body = format!(r#"{{"access_token":"a","expires_in":{expires_in}}}"#);
            assert_eq!(ok(&body).expires_at(), after(expected), "{expires_in}");
        }
        assert_eq!(year, 31_536_000);
    }

    #[test]
    fn s35_expiry_overflow_gives_no_expiry() {
        // Near the end of representable time, received_at + a year does not exist.
        let Some(late) = UNIX_EPOCH.checked_add(Duration::from_secs(i64::MAX as u64 - 10)) else {
            return; // a platform whose SystemTime cannot get that late
        };
        let response = response(200, br#"{"access_token":"a","expires_in":3600}"#);
        let tokens = parse_token_response(&response, &[], &[], late).expect("ok");
        assert_eq!(tokens.expires_at(), None);
    }

    #[test]
    fn s35_non_numeric_expires_in_is_ignored_and_kept() {
        for expires_in in [
            r#""soon""#,
            "true",
            r#""inf""#,
            r#""NaN""#,
            r#"{"s":1}"#,
            r#""""#,
        ] {
            let body = format!(r#"{{"access_token":"a","expires_in":{expires_in}}}"#);
            let tokens = ok(&body);
            assert_eq!(tokens.expires_at(), None, "{expires_in}");
            assert!(tokens.extra().contains_key("expires_in"), "{expires_in}");
        }
        let tokens = ok(r#"{"access_token":"a","expires_in":null}"#);
        assert_eq!(tokens.expires_at(), None);
        assert!(tokens.extra().is_empty());
    }

    #[test]
    fn s35_unknown_members_are_kept() {
        let keycloak = r#"{"access_token":"eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln","expires_in":300,"refresh_expires_in":1800,"refresh_token":"eyJhbGciOiJIUzUxMiJ9.eyJ0eXAiOiJSZWZyZXNoIn0.c2ln","token_type":"Bearer","not-before-policy":0,"session_state":"5a8e1a9c-0b1f-4e3b-9c5d-6a2f0e1d7b3c","scope":"profile email"}"#;
        let tokens = parse_with(200, keycloak, &["profile", "email"]).expect("Keycloak");
        let names: Vec<&str> = tokens.extra().keys().map(String::as_str).collect();
        assert_eq!(names.len(), 3);
        for name in ["refresh_expires_in", "not-before-policy", "session_state"] {
            assert!(names.contains(&name), "{name}");
        }
        assert_eq!(
            tokens.extra().get("refresh_expires_in"),
            Some(&Value::from(1800))
        );
        let azure = ok(AZURE_V1);
        for name in [
            "ext_expires_in",
            "refresh_in",
            "expires_on",
            "not_before",
            "resource",
        ] {
            assert!(azure.extra().contains_key(name), "{name}");
        }
    }

    const API: &str = "https://api.example.com";

    #[test]
    fn rfc8707_entra_v1_resource_string_is_the_audience_over_the_requested_one() {
        let tokens = for_resources(AZURE_V1, &[API]);
        assert_eq!(tokens.audience(), ["https://graph.microsoft.com"]);
        // The member stays among the extra ones, as sent.
        assert_eq!(
            tokens.extra().get("resource"),
            Some(&Value::from("https://graph.microsoft.com"))
        );
        assert_eq!(ok(AZURE_V1).audience(), ["https://graph.microsoft.com"]);
        // A form body's `resource` is a string too.
        let form = for_resources("access_token=a&resource=urn%3Aexample%3Abilling", &[API]);
        assert_eq!(form.audience(), ["urn:example:billing"]);
    }

    #[test]
    fn rfc8707_a_resource_array_is_the_audience() {
        let tokens = for_resources(
            r#"{"access_token":"a","resource":["https://a.example/","urn:example:b"]}"#,
            &[API],
        );
        assert_eq!(tokens.audience(), ["https://a.example/", "urn:example:b"]);
        assert!(tokens.extra()["resource"].is_array());
    }

    #[test]
    fn rfc8707_without_a_resource_member_the_audience_is_what_was_requested() {
        let body = r#"{"access_token":"a","token_type":"Bearer"}"#;
        assert_eq!(
            for_resources(body, &[API, "urn:example:b"]).audience(),
            [API, "urn:example:b"]
        );
        let null = r#"{"access_token":"a","resource":null}"#;
        assert_eq!(for_resources(null, &[API]).audience(), [API]);
        // Neither says: nothing is known.
        assert!(ok(body).audience().is_empty());
        assert!(TokenSet::new(SecretString::from("x")).audience().is_empty());
    }

    #[test]
    fn rfc8707_a_resource_member_of_another_shape_is_not_the_audience() {
        for resource in [
            "42",
            "true",
            "{}",
            r#"{"uri":"https://a.example/"}"#,
            "[]",
            r#"["https://a.example/",7]"#,
            r#"[["https://a.example/"]]"#,
            r#""""#,
            r#""https://a.example/\u001b[2J""#,
            r#""https://\u00e9.example/""#,
            r#"["https://a.example/",""]"#,
        ] {
            let body = format!(r#"{{"access_token":"a","resource":{resource}}}"#);
            let tokens = for_resources(&body, &[API]);
            assert_eq!(tokens.audience(), [API], "{resource}");
            assert!(tokens.extra().contains_key("resource"), "{resource}");
            assert!(ok(&body).audience().is_empty(), "{resource}");
        }
    }

    #[test]
    fn rfc8707_refreshed_tokens_follow_the_rule_on_their_own_answer() {
        let previous = for_resources(
            r#"{"access_token":"old","refresh_token":"rt","resource":"https://graph.microsoft.com"}"#,
            &[API],
        );
        // No `resource` in the refresh answer: the resources asked for again.
        let fresh = for_resources(r#"{"access_token":"new"}"#, &[API]).carry_over(&previous);
        assert_eq!(fresh.audience(), [API]);
        assert_eq!(exposed(fresh.refresh_token()), Some("rt"));
        // The answer names one: it wins.
        let named = r#"{"access_token":"new","resource":["urn:example:b"]}"#;
        let fresh = for_resources(named, &[API]).carry_over(&previous);
        assert_eq!(fresh.audience(), ["urn:example:b"]);
        // Nothing asked for, nothing named: empty, whatever the previous tokens were for.
        let fresh = ok(r#"{"access_token":"new"}"#).carry_over(&previous);
        assert!(fresh.audience().is_empty());
    }

    #[test]
    fn rfc8707_the_audience_is_stored_and_old_records_load_without_one() {
        let tokens = for_resources(r#"{"access_token":"a"}"#, &[API, "urn:example:b"]);
        let stored = serde_json::to_value(&tokens).expect("serializes");
        assert_eq!(
            stored["audience"],
            serde_json::json!([API, "urn:example:b"])
        );
        assert_eq!(round_trip(&tokens).audience(), [API, "urn:example:b"]);
        let built = TokenSet::new(SecretString::from("x")).with_audience(vec![API.to_owned()]);
        assert_eq!(round_trip(&built).audience(), [API]);
        // Empty is left out, and a record without it loads with none.
        let stored = serde_json::to_value(ok(r#"{"access_token":"a"}"#)).expect("serializes");
        assert!(stored.get("audience").is_none(), "{stored}");
        let old: TokenSet = serde_json::from_str(r#"{"access_token":"a","token_type":"Bearer"}"#)
            .expect("an old record");
        assert!(old.audience().is_empty());
        // The audience is no secret: `Debug` shows it.
        assert!(format!("{built:?}").contains(API));
    }

    #[test]
    fn s35_form_encoded_body_github() {
        let tokens = parse_with(200, GITHUB_FORM, &["repo", "gist"]).expect("GitHub form body");
        assert_eq!(
            tokens.access_token().expose_secret(),
            "gho_16C7e42F292c6912E7710c838347Ae178B4a"
        );
        assert_eq!(tokens.token_type(), &TokenType::Bearer);
        assert!(!tokens.token_type_defaulted());
        assert_eq!(tokens.scope(), Some("repo,gist"));
        assert_eq!(tokens.expires_at(), None);
        // GitHub Apps with expiring tokens: numeric strings, extra members kept as strings.
        let app = "access_token=ghu_16C7e42F292c69&expires_in=28800&refresh_token=ghr_1B4a2e77838347a7E4&refresh_token_expires_in=15811200&scope=&token_type=bearer\n";
        let tokens = ok(app);
        assert_eq!(tokens.expires_at(), after(28800));
        assert_eq!(
            exposed(tokens.refresh_token()),
            Some("ghr_1B4a2e77838347a7E4")
        );
        assert_eq!(
            tokens.extra().get("refresh_token_expires_in"),
            Some(&Value::from("15811200"))
        );
        assert_eq!(tokens.scope(), Some(""));
    }

    #[test]
    fn s35_no_content_type_stackexchange_is_sniffed() {
        let form = response(200, b"access_token=Tq8rPzDOYo4uxzSXS2v0Sw))&expires=86400");
        assert!(form.headers().get(http::header::CONTENT_TYPE).is_none());
        let tokens = parse_token_response(&form, &[], &[], received_at()).expect("form sniffed");
        assert_eq!(
            tokens.access_token().expose_secret(),
            "Tq8rPzDOYo4uxzSXS2v0Sw))"
        );
        assert_eq!(tokens.expires_at(), after(86400));
        // A Content-Type that lies is ignored too, in both directions.
        let mut json = response(
            200,
            b"\r\n  {\"access_token\":\"Tq8rPzDOYo4uxzSXS2v0Sw))\",\"expires\":86400}",
        );
        json.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let tokens = parse_token_response(&json, &[], &[], received_at()).expect("JSON sniffed");
        assert_eq!(tokens.expires_at(), after(86400));
        let mut form = response(200, GITHUB_FORM.as_bytes());
        form.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        assert!(parse_token_response(&form, &[], &[], received_at()).is_ok());
    }

    #[test]
    fn s35_facebook_expires_alias() {
        let tokens = ok("access_token=EAACEdEose0cBAHZCqmJqJ6Y4dR7s&expires=5183999");
        assert_eq!(tokens.expires_at(), after(5_183_999));
        assert!(tokens.extra().is_empty());
        // With both, `expires_in` wins and `expires` is just another member.
        let tokens = ok(r#"{"access_token":"EAAC","expires_in":60,"expires":5183999}"#);
        assert_eq!(tokens.expires_at(), after(60));
        assert_eq!(tokens.extra().get("expires"), Some(&Value::from(5_183_999)));
    }

    #[test]
    fn s35_json_null_optional_members_are_absent() {
        let tokens = ok(
            r#"{"access_token":"a","token_type":"Bearer","refresh_token":null,"id_token":null,"scope":null,"error":null}"#,
        );
        assert!(tokens.refresh_token().is_none());
        assert!(tokens.id_token().is_none());
        assert_eq!(tokens.scope(), None);
    }

    #[test]
    fn s36_error_with_http_200_github_bad_verification_code() {
        let body = "error=bad_verification_code&error_description=The+code+passed+is+incorrect+or+expired.&error_uri=https%3A%2F%2Fdocs.github.com%2Fapps%2Fmanaging-oauth-apps%2Ftroubleshooting-oauth-app-access-token-request-errors%2F%23bad-verification-code";
        assert_eq!(
            rejected(200, body),
            ProviderError {
                code: "bad_verification_code".to_owned(),
                description: Some("The code passed is incorrect or expired.".to_owned()),
                uri: Some("https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code".to_owned()),
            }
        );
        let json = r#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired.","error_uri":"https://docs.github.com/"}"#;
        assert_eq!(rejected(200, json).code, "bad_verification_code");
    }

    #[test]
    fn s36_invalid_grant_400_maps_to_token_rejected() {
        let error = rejected(
            400,
            r#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#,
        );
        assert_eq!(error.code, "invalid_grant");
        assert_eq!(
            error.description.as_deref(),
            Some("grant request is invalid")
        );
        assert_eq!(error.uri, None);
        // A non-string description is dropped, the error still reported.
        let error = rejected(401, r#"{"error":"invalid_client","error_description":7}"#);
        assert_eq!(error.description, None);
    }

    #[test]
    fn s36_error_wins_over_an_access_token() {
        let error = rejected(200, r#"{"access_token":"abc","error":"invalid_grant"}"#);
        assert_eq!(error.code, "invalid_grant");
    }

    #[test]
    fn s36_malformed_error_code_is_invalid_member() {
        for error in [
            "42",
            r#""""#,
            r#""bad\"quote""#,
            r#""back\\slash""#,
            r#""line\nbreak""#,
            r#""é""#,
            "{}",
        ] {
            let body = format!(r#"{{"error":{error}}}"#);
            for status in [200, 400] {
                assert_eq!(
                    bad(status, &body),
                    BadTokenResponse::InvalidMember("error"),
                    "{body}"
                );
            }
        }
    }

    #[test]
    fn s36_repeated_error_is_repeated_member() {
        assert_eq!(
            bad(400, "error=invalid_grant&error=access_denied"),
            BadTokenResponse::RepeatedMember("error")
        );
        assert_eq!(
            bad(200, r#"{"error":"invalid_grant","error":"access_denied"}"#),
            BadTokenResponse::RepeatedMember("error")
        );
    }

    #[test]
    fn non_2xx_html_body_is_unexpected_status() {
        let html = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
        assert_eq!(bad(502, html), BadTokenResponse::UnexpectedStatus);
        assert_eq!(bad(500, ""), BadTokenResponse::UnexpectedStatus);
        assert_eq!(bad(404, "Not Found"), BadTokenResponse::UnexpectedStatus);
        // At 2xx the same page is not a token response.
        assert_eq!(bad(200, html), BadTokenResponse::Unparseable);
    }

    #[test]
    fn non_2xx_with_access_token_is_unexpected_status() {
        for status in [302, 400, 500] {
            assert_eq!(
                bad(status, OIDC_PROVIDER),
                BadTokenResponse::UnexpectedStatus
            );
        }
        assert!(parse(201, OIDC_PROVIDER).is_ok());
    }

    #[test]
    fn success_without_access_token_is_missing_access_token() {
        for body in [
            r#"{"token_type":"Bearer","expires_in":3600}"#,
            r#"{"access_token":null,"token_type":"Bearer"}"#,
            "token_type=bearer&scope=repo",
        ] {
            assert_eq!(
                bad(200, body),
                BadTokenResponse::MissingAccessToken,
                "{body}"
            );
        }
    }

    #[test]
    fn s43_access_token_with_crlf_is_invalid_member() {
        for (body, member) in [
            (r#"{"access_token":"abc\r\nX-Injected: 1"}"#, "access_token"),
            ("access_token=abc%0D%0AX-Injected%3A+1", "access_token"),
            (r#"{"access_token":""}"#, "access_token"),
            (r#"{"access_token":12345}"#, "access_token"),
            (r#"{"access_token":"t\u00f6ken"}"#, "access_token"),
            (
                r#"{"access_token":"a","refresh_token":"r\n"}"#,
                "refresh_token",
            ),
            (
                r#"{"access_token":"a","refresh_token":""}"#,
                "refresh_token",
            ),
            (r#"{"access_token":"a","id_token":["x"]}"#, "id_token"),
            (r#"{"access_token":"a","id_token":"e\u0000"}"#, "id_token"),
            (r#"{"access_token":"a","scope":["openid"]}"#, "scope"),
        ] {
            assert_eq!(
                bad(200, body),
                BadTokenResponse::InvalidMember(member),
                "{body}"
            );
        }
    }

    #[test]
    fn json_array_body_is_unparseable() {
        for body in [
            r#"[{"access_token":"abc"}]"#,
            r#""access_token""#,
            "12345",
            "null",
            "",
            " \r\n\t",
            r#"{"access_token":"abc""#,
            r#"{"access_token":"abc"} trailing"#,
            "access_token=%ZZ",
            "access_token=%FF",
            "&&&",
        ] {
            assert_eq!(bad(200, body), BadTokenResponse::Unparseable, "{body:?}");
        }
        let not_utf8 = response(200, b"access_token=\xff\xfe");
        assert!(matches!(
            parse_token_response(&not_utf8, &[], &[], received_at()),
            Err(FlowError::BadTokenResponse {
                reason: BadTokenResponse::Unparseable,
                ..
            })
        ));
    }

    #[test]
    fn repeated_members_are_refused_or_first_kept() {
        for name in SINGLE_MEMBERS.iter().filter(|name| **name != "error") {
            let form = format!("access_token=a&{name}=1&{name}=2");
            assert_eq!(
                bad(200, &form),
                BadTokenResponse::RepeatedMember(name),
                "{form}"
            );
            let json = format!(r#"{{"access_token":"a","{name}":"1","{name}":"2"}}"#);
            assert_eq!(
                bad(200, &json),
                BadTokenResponse::RepeatedMember(name),
                "{json}"
            );
        }
        let tokens = ok("access_token=a&foo=first&foo=second");
        assert_eq!(tokens.extra().get("foo"), Some(&Value::from("first")));
        let tokens = ok(r#"{"access_token":"a","foo":"first","foo":"second"}"#);
        assert_eq!(tokens.extra().get("foo"), Some(&Value::from("first")));
    }

    #[test]
    fn s41_debug_of_token_set_shows_no_secret() {
        let tokens = parse_with(200, GOOGLE, &GOOGLE_SCOPES).expect("ok");
        let with_extra = ok(
            r#"{"access_token":"at-SECRET-1","refresh_token":"rt-SECRET-2","id_token":"id-SECRET-3","other_token":"xt-SECRET-4"}"#,
        );
        for tokens in [tokens, with_extra] {
            let debug = format!("{tokens:?} {tokens:#?}");
            let mut secrets = vec![tokens.access_token().expose_secret()];
            secrets.extend(exposed(tokens.refresh_token()));
            secrets.extend(exposed(tokens.id_token()));
            for secret in secrets {
                assert!(!debug.contains(secret), "{debug}");
                assert!(!debug.contains(&secret[..8]), "{debug}");
            }
            assert!(!debug.contains("SECRET"), "{debug}");
            assert!(debug.contains("has_refresh_token: true"), "{debug}");
            assert!(debug.contains("[REDACTED]"), "{debug}");
        }
        let debug = format!(
            "{:?}",
            ok(r#"{"access_token":"a","other_token":"xt-SECRET-4"}"#)
        );
        assert!(debug.contains("other_token"), "names are shown: {debug}");
    }

    #[test]
    fn expires_within_compares_with_now_plus_margin() {
        let tokens = ok(r#"{"access_token":"a","expires_in":3600}"#);
        let now = received_at();
        assert!(!tokens.expires_within(now, Duration::from_secs(60)));
        assert!(tokens.expires_within(now, Duration::from_secs(3600)));
        assert!(tokens.expires_within(now + Duration::from_secs(3570), Duration::from_secs(60)));
        assert!(tokens.expires_within(now + Duration::from_secs(7200), Duration::ZERO));
        assert!(tokens.expires_within(now, Duration::MAX));
        let forever = ok(r#"{"access_token":"a"}"#);
        assert!(!forever.expires_within(now, Duration::MAX));
    }

    #[test]
    fn constructor_and_builders() {
        let expiry = received_at() + Duration::from_secs(90);
        let tokens = TokenSet::new(SecretString::from("at"))
            .with_refresh_token(SecretString::from("rt"))
            .with_expires_at(expiry);
        assert_eq!(tokens.access_token().expose_secret(), "at");
        assert_eq!(tokens.token_type(), &TokenType::Bearer);
        assert!(!tokens.token_type_defaulted());
        assert_eq!(exposed(tokens.refresh_token()), Some("rt"));
        assert_eq!(tokens.expires_at(), Some(expiry));
        assert_eq!(tokens.scope(), None);
        assert_eq!(tokens.scope_change(), None);
        assert!(tokens.id_token().is_none());
        assert!(tokens.extra().is_empty());
    }

    fn assert_same(a: &TokenSet, b: &TokenSet) {
        assert_eq!(
            a.access_token().expose_secret(),
            b.access_token().expose_secret()
        );
        assert_eq!(a.token_type(), b.token_type());
        assert_eq!(a.token_type_defaulted(), b.token_type_defaulted());
        assert_eq!(a.expires_at(), b.expires_at());
        assert_eq!(exposed(a.refresh_token()), exposed(b.refresh_token()));
        assert_eq!(a.scope(), b.scope());
        assert_eq!(a.scope_change(), b.scope_change());
        assert_eq!(exposed(a.id_token()), exposed(b.id_token()));
        assert_eq!(a.extra(), b.extra());
        assert_eq!(a.audience(), b.audience());
    }

    fn round_trip(tokens: &TokenSet) -> TokenSet {
        let stored = serde_json::to_string(tokens).expect("serializes");
        serde_json::from_str(&stored).expect("deserializes")
    }

    #[test]
    fn serde_round_trip_preserves_every_field() {
        let body = r#"{"access_token":"ya29.a0AfB","token_type":"bearer","expires_in":3599,"refresh_token":"1//0gF","scope":"email openid","id_token":"eyJ.e30.sig","ext_expires_in":"3599","nested":{"a":[1,2.5,null,true]}}"#;
        let tokens = parse_with(200, body, &["email", "profile"]).expect("ok");
        assert!(tokens.scope_change().is_some());
        let copy = round_trip(&tokens);
        assert_same(&tokens, &copy);

        let stored: Value = serde_json::to_value(&tokens).expect("serializes");
        assert_eq!(
            stored,
            serde_json::json!({
                "access_token": "ya29.a0AfB",
                "token_type": "Bearer",
                "token_type_defaulted": false,
                "expires_at": 1_767_225_600 + 3599,
                "refresh_token": "1//0gF",
                "scope": "email openid",
                "scope_change": { "added": ["openid"], "removed": ["profile"] },
                "id_token": "eyJ.e30.sig",
                "extra": { "ext_expires_in": "3599", "nested": { "a": [1, 2.5, null, true] } },
            })
        );

        // The other shapes: defaulted type, other type, nothing optional, a pre-epoch expiry.
        for tokens in [
            ok(r#"{"access_token":"a"}"#),
            ok(r#"{"access_token":"a","token_type":"N_A"}"#),
            TokenSet::new(SecretString::from("x")),
            TokenSet::new(SecretString::from("x"))
                .with_expires_at(UNIX_EPOCH - Duration::from_secs(5)),
        ] {
            assert_same(&tokens, &round_trip(&tokens));
        }
    }

    #[test]
    fn stored_expiry_is_rounded_down_to_whole_seconds() {
        let tokens = TokenSet::new(SecretString::from("x"))
            .with_expires_at(received_at() + Duration::from_millis(1500));
        assert_eq!(round_trip(&tokens).expires_at(), after(1));
        let tokens = TokenSet::new(SecretString::from("x"))
            .with_expires_at(UNIX_EPOCH - Duration::from_millis(1500));
        assert_eq!(
            round_trip(&tokens).expires_at(),
            Some(UNIX_EPOCH - Duration::from_secs(2))
        );
    }

    #[test]
    fn minimal_stored_token_set_deserializes() {
        let tokens: TokenSet =
            serde_json::from_str(r#"{"access_token":"gho_abc","future_field":1}"#).expect("ok");
        assert_eq!(tokens.access_token().expose_secret(), "gho_abc");
        assert_eq!(tokens.token_type(), &TokenType::Bearer);
        assert!(tokens.token_type_defaulted());
        assert_eq!(tokens.expires_at(), None);
        assert!(tokens.extra().is_empty());
    }

    #[test]
    fn s41_deserializing_a_bad_stored_token_fails_without_the_value() {
        for stored in [
            r#"{"access_token":"ya29.LEAKED\r\nX-Evil: 1","token_type":"Bearer"}"#,
            r#"{"access_token":"LEAKED-at","refresh_token":"LEAKED\u0007"}"#,
            r#"{"access_token":"LEAKED-at","id_token":""}"#,
            r#"{"access_token":["LEAKED"]}"#,
            r#"{"access_token":"LEAKED-at","expires_at":"LEAKED"}"#,
            r#"{"access_token":"LEAKED-at","expires_at":1e300}"#,
            r#"{"access_token":"LEAKED-at","token_type":"LEAKED\n"}"#,
            r#"{"access_token":"LEAKED-at","scope_change":{"added":["LEAKED",1]}}"#,
            r#"{"access_token":"LEAKED-at","extra":"LEAKED"}"#,
            r#"{"access_token":"LEAKED-at","audience":"LEAKED"}"#,
            r#"{"access_token":"LEAKED-at","audience":["https://a.example/",{"LEAKED":1}]}"#,
            r#"{"refresh_token":"LEAKED-rt"}"#,
            r#"["LEAKED"]"#,
        ] {
            let error = serde_json::from_str::<TokenSet>(stored)
                .expect_err(stored)
                .to_string();
            assert!(!error.contains("LEAKED"), "{error}");
            assert!(error.contains("stored"), "{error}");
        }
    }

    /// xorshift64: deterministic, dependency-free pseudo-randomness for the no-panic loop.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            usize::try_from(self.next() % bound.max(1) as u64).unwrap_or(0)
        }

        fn byte(&mut self) -> u8 {
            // Half the time a byte that matters to the parsers.
            const INTERESTING: &[u8] = b"{}[]\":,=&%+\r\n 0-.eE\\u";
            if self.next() % 2 == 0 {
                INTERESTING[self.below(INTERESTING.len())]
            } else {
                self.next().to_le_bytes()[0]
            }
        }
    }

    fn mutated(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
        let mut body = seed.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(body.len() + 1);
            match rng.below(5) {
                0 if at < body.len() => body[at] = rng.byte(),
                1 => body.insert(at, rng.byte()),
                2 if at < body.len() => {
                    body.remove(at);
                }
                3 => body.truncate(at),
                _ => {
                    // Duplicate a slice: repeated members, nested garbage.
                    let end = (at + rng.below(40)).min(body.len());
                    let chunk = body[at..end].to_vec();
                    let to = rng.below(body.len() + 1);
                    body.splice(to..to, chunk);
                }
            }
        }
        body
    }

    #[test]
    fn no_panic_on_10000_pseudo_random_bodies() {
        let seeds: [&[u8]; 10] = [
            GOOGLE.as_bytes(),
            OIDC_PROVIDER.as_bytes(),
            GITHUB_FORM.as_bytes(),
            AZURE_V1.as_bytes(),
            b"access_token=EAACEdEose0cBAHZCqmJqJ6Y4dR7s&expires=5183999",
            br#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#,
            b"error=bad_verification_code&error_description=The+code",
            br#"{"access_token":"a","expires_in":"1e30","scope":"a,b c","x":[[{}]]}"#,
            br#"{"access_token":"a","token_type":"DPoP","expires_in":-1.5}"#,
            br#"{"access_token":"a","resource":["https://a.example/","urn:b"]}"#,
        ];
        let statuses = [200, 200, 201, 204, 302, 400, 401, 500];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut successes = 0;
        for round in 0..10_000 {
            let body = if round % 3 == 0 {
                (0..rng.below(64)).map(|_| rng.byte()).collect()
            } else {
                let seed = seeds[rng.below(seeds.len())];
                mutated(&mut rng, seed)
            };
            let status = if rng.below(8) == 0 {
                u16::try_from(100 + rng.below(900)).unwrap_or(200)
            } else {
                statuses[rng.below(statuses.len())]
            };
            let received_at = UNIX_EPOCH
                .checked_add(Duration::from_secs(rng.next() >> rng.below(64)))
                .unwrap_or(UNIX_EPOCH);
            let requested = ["openid".to_owned(), "repo,gist".to_owned()];
            let resources = ["https://api.example/".to_owned()];
            let response = response(status, &body);
            match parse_token_response(&response, &requested, &resources, received_at) {
                Ok(tokens) => {
                    successes += 1;
                    assert!((200..300).contains(&status));
                    assert!(is_vschar_text(tokens.access_token().expose_secret()));
                    let _ = format!("{tokens:?}");
                    let _ = tokens.scopes().count();
                    assert!(!tokens.audience().is_empty(), "at least the requested one");
                    let _ = tokens.expires_within(received_at, Duration::from_secs(60));
                    assert_same(&tokens, &round_trip(&tokens));
                }
                Err(FlowError::TokenRejected { error, .. }) => assert!(is_error_code(&error.code)),
                Err(FlowError::BadTokenResponse { .. }) => {}
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        // The loop must reach the success path, not only the error paths.
        assert!(successes > 100, "{successes}");
    }
}
