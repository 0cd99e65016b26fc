//! Provider descriptions from authorization server metadata (RFC 8414, OpenID Connect
//! Discovery 1.0): the document at `{issuer}/.well-known/oauth-authorization-server` or
//! `{issuer}/.well-known/openid-configuration`.
//!
//! [`Discovery`] is the sans-IO machine that fetches both well-known documents and merges
//! them; [`Metadata`] decides whether a document may be trusted for an issuer (S9), and
//! what provider it describes.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use http::header::ACCEPT;
use http::{HeaderValue, Method, Request};
use serde_json::{Map, Value};

use crate::config::{ConfigError, Provider, ProviderBuilder};
use crate::error::{TransportError, TransportErrorKind};
use crate::oidc::Algorithm;
use crate::session::RequestId;
use crate::url::{self, UrlError};

/// Why a metadata document cannot describe the expected issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataError {
    /// The document is not a JSON object.
    NotJson,
    /// The document's `issuer` is not exactly the issuer it was fetched for (S9; RFC 8414
    /// §3.3): it may come from another server, or from a proxy rewriting hostnames.
    IssuerMismatch {
        /// The issuer the document was fetched for.
        expected: String,
        /// What the document says, if anything.
        found: Option<String>,
    },
    /// A required member is missing or not a string (named).
    Missing(&'static str),
    /// `code_challenge_methods_supported` is present and lacks `S256`.
    NoS256,
    /// A metadata location answered with this HTTP status.
    Status(u16),
    /// No metadata location had a document.
    NotFound,
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::NotJson => f.write_str("metadata is not a JSON object"),
            MetadataError::IssuerMismatch { expected, found } => write!(
                f,
                "metadata issuer {found:?} is not exactly the expected {expected:?}"
            ),
            MetadataError::Missing(name) => write!(f, "metadata lacks `{name}`"),
            MetadataError::NoS256 => f.write_str("provider does not support PKCE S256"),
            MetadataError::Status(status) => write!(f, "metadata request answered HTTP {status}"),
            MetadataError::NotFound => {
                f.write_str("no metadata at the issuer's well-known locations")
            }
        }
    }
}

impl std::error::Error for MetadataError {}

/// Why discovery found no usable metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The issuer is not an `https` URL (or `http` on loopback) without query or fragment.
    Issuer(ConfigError),
    /// A metadata location could not be reached, or did not answer in time.
    Transport(TransportError),
    /// No document was found, or one cannot be trusted (S9).
    Metadata(MetadataError),
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryError::Issuer(error) => write!(f, "discovery: {error}"),
            DiscoveryError::Transport(error) => {
                write!(f, "fetching the provider's metadata: {error}")
            }
            DiscoveryError::Metadata(error) => write!(f, "the provider's metadata: {error}"),
        }
    }
}

impl std::error::Error for DiscoveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DiscoveryError::Issuer(error) => Some(error),
            DiscoveryError::Transport(error) => Some(error),
            DiscoveryError::Metadata(error) => Some(error),
        }
    }
}

/// An issuer's metadata document, its `issuer` checked to be exactly the issuer it was
/// fetched for (S9).
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    issuer: String,
    document: Map<String, Value>,
}

impl Metadata {
    /// Reads `document`, fetched from `issuer`'s well-known location.
    ///
    /// # Errors
    ///
    /// [`MetadataError::NotJson`] when it is not a JSON object, and
    /// [`MetadataError::IssuerMismatch`] when its `issuer` differs from `issuer` by a single
    /// byte (S9; RFC 8414 §3.3).
    pub fn parse(issuer: &str, document: &[u8]) -> Result<Metadata, MetadataError> {
        let document: Map<String, Value> =
            serde_json::from_slice(document).map_err(|_| MetadataError::NotJson)?;
        let found = document.get("issuer").and_then(Value::as_str);
        if found != Some(issuer) {
            return Err(MetadataError::IssuerMismatch {
                expected: issuer.to_owned(),
                found: found.map(str::to_owned),
            });
        }
        Ok(Metadata {
            issuer: issuer.to_owned(),
            document,
        })
    }

    /// Fills the members this document lacks from `other`, a document of the same issuer
    /// (its OpenID Connect and RFC 8414 documents differ at some providers: one may list a
    /// revocation endpoint the other leaves out). Members present here win.
    pub fn fill_from(&mut self, other: &Metadata) {
        debug_assert_eq!(self.issuer, other.issuer, "documents of one issuer only");
        for (name, value) in &other.document {
            if !self.document.contains_key(name) {
                self.document.insert(name.clone(), value.clone());
            }
        }
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A member of the document, as sent.
    pub fn get(&self, member: &str) -> Option<&Value> {
        self.document.get(member)
    }

    /// A string member of the document.
    pub fn string(&self, member: &str) -> Option<&str> {
        self.get(member).and_then(Value::as_str)
    }

    /// Starts a provider description for `client_id`: endpoints (the revocation and
    /// UserInfo endpoints too, when listed), issuer, key set (`jwks_uri`) and the ID token
    /// algorithms latchkey accepts among `id_token_signing_alg_values_supported` filled in,
    /// `iss` required when the document says the provider sends it
    /// (`authorization_response_iss_parameter_supported`, RFC 9207). With `openid` among
    /// the scopes, add a [`crypto`](ProviderBuilder::crypto) provider.
    /// Continue with the client's settings, then [`build`](ProviderBuilder::build), which
    /// validates the endpoints like any others (S6).
    ///
    /// # Errors
    ///
    /// [`MetadataError::Missing`] without an authorization or token endpoint, and
    /// [`MetadataError::NoS256`] when `code_challenge_methods_supported` lacks `S256`.
    pub fn provider(&self, client_id: impl Into<String>) -> Result<ProviderBuilder, MetadataError> {
        let authorization = self
            .string("authorization_endpoint")
            .ok_or(MetadataError::Missing("authorization_endpoint"))?;
        let token = self
            .string("token_endpoint")
            .ok_or(MetadataError::Missing("token_endpoint"))?;
        if let Some(methods) = self.get("code_challenge_methods_supported") {
            let listed = methods
                .as_array()
                .is_some_and(|methods| methods.iter().any(|m| m.as_str() == Some("S256")));
            if !listed {
                return Err(MetadataError::NoS256);
            }
        }
        let sends_iss = self
            .get("authorization_response_iss_parameter_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut builder = Provider::builder(authorization, token, client_id)
            .issuer(&self.issuer)
            .require_iss(sends_iss);
        if let Some(revocation) = self.string("revocation_endpoint") {
            builder = builder.revocation_endpoint(revocation);
        }
        if let Some(par) = self.string("pushed_authorization_request_endpoint") {
            // RFC 9126 §5: a provider that requires pushed requests says so.
            let required = self.get("require_pushed_authorization_requests")
                == Some(&serde_json::Value::Bool(true));
            builder = builder
                .pushed_authorization_request_endpoint(par)
                .push_authorization_requests(required);
        }
        if let Some(device) = self.string("device_authorization_endpoint") {
            builder = builder.device_authorization_endpoint(device);
        }
        if let Some(jwks_uri) = self.string("jwks_uri") {
            builder = builder.jwks_uri(jwks_uri);
        }
        if let Some(userinfo) = self.string("userinfo_endpoint") {
            builder = builder.userinfo_endpoint(userinfo);
        }
        // The algorithms latchkey accepts among those listed; `none` and HMAC never are
        // (S46). Absent, the default RS256 stands.
        if let Some(listed) = self.get("id_token_signing_alg_values_supported") {
            let names = listed.as_array().map(Vec::as_slice).unwrap_or_default();
            builder = builder.id_token_algorithms(
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(Algorithm::from_name),
            );
        }
        Ok(builder)
    }
}

impl Provider {
    /// Starts a provider description from one of `issuer`'s metadata documents:
    /// [`Metadata::parse`], then [`Metadata::provider`].
    ///
    /// # Errors
    ///
    /// What those two refuse.
    pub fn from_metadata(
        issuer: &str,
        document: &[u8],
        client_id: impl Into<String>,
    ) -> Result<ProviderBuilder, MetadataError> {
        Metadata::parse(issuer, document)?.provider(client_id)
    }
}

/// Something the driver must do for a [`Discovery`]. Drained with
/// [`Discovery::poll_action`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DiscoveryAction {
    /// Send this `GET` and report with [`Discovery::handle_response`] or
    /// [`Discovery::handle_failure`]. Follow no redirects.
    Send {
        /// Names the answer.
        id: RequestId,
        /// The request.
        request: Request<Vec<u8>>,
    },
    /// Discovery is over; the last action.
    Finished {
        /// Both documents merged (the OpenID Connect one's members win), or why there is
        /// no usable document.
        result: Result<Metadata, DiscoveryError>,
    },
}

/// What one well-known location gave.
#[derive(Debug, Clone)]
enum Answer {
    Found(Metadata),
    /// 404 or 410: nothing there.
    Absent,
    Failed(DiscoveryError),
}

/// One well-known location.
#[derive(Debug, Clone)]
struct Location {
    uri: http::Uri,
    /// The request in flight and its deadline, once sent.
    request: Option<(RequestId, Instant)>,
    answer: Option<Answer>,
}

/// Finding `issuer`'s metadata, sans-IO: both well-known locations, the OpenID Connect one
/// (`{issuer}/.well-known/openid-configuration`) and RFC 8414's
/// (`/.well-known/oauth-authorization-server` inserted before the issuer's path), are
/// fetched at once and their documents merged, so that a member only one of them lists (the
/// revocation endpoint, at some providers) is found. Each document's `issuer` must be the
/// issuer exactly (S9); a document naming another issuer fails discovery, whichever
/// location it came from. A location that has no document (404, 410) or fails while the
/// other has one is passed over.
///
/// The calling contract is [`Session`](crate::Session)'s: [`start`](Discovery::start), then
/// drain [`poll_action`](Discovery::poll_action) after every input, answer each
/// [`DiscoveryAction::Send`] with [`handle_response`](Discovery::handle_response) or
/// [`handle_failure`](Discovery::handle_failure), and call
/// [`handle_timeout`](Discovery::handle_timeout) at [`poll_timeout`](Discovery::poll_timeout).
///
/// ```
/// use std::time::Instant;
/// use latchkey::discovery::{Discovery, DiscoveryAction};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut discovery = Discovery::new("https://idp.example")?;
/// let now = Instant::now();
/// discovery.start(now);
/// let mut sent = Vec::new();
/// while let Some(DiscoveryAction::Send { id, request }) = discovery.poll_action() {
///     sent.push((id, request.uri().to_string()));
/// }
/// assert_eq!(sent[0].1, "https://idp.example/.well-known/openid-configuration");
/// assert_eq!(sent[1].1, "https://idp.example/.well-known/oauth-authorization-server");
///
/// // The OpenID Connect document lacks the revocation endpoint; RFC 8414's has it.
/// let oidc = br#"{"issuer":"https://idp.example","authorization_endpoint":"https://idp.example/authorize","token_endpoint":"https://idp.example/token"}"#;
/// let oauth = br#"{"issuer":"https://idp.example","revocation_endpoint":"https://idp.example/revoke"}"#;
/// discovery.handle_response(now, sent[0].0, http::Response::new(oidc.to_vec()));
/// assert!(discovery.poll_action().is_none(), "waits for the other document");
/// discovery.handle_response(now, sent[1].0, http::Response::new(oauth.to_vec()));
/// let Some(DiscoveryAction::Finished { result: Ok(metadata) }) = discovery.poll_action() else {
///     unreachable!()
/// };
/// let provider = metadata.provider("my-cli")?.build()?;
/// assert_eq!(provider.revocation_endpoint().map(|uri| uri.to_string()).as_deref(),
///            Some("https://idp.example/revoke"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Discovery {
    issuer: String,
    request_timeout: Duration,
    /// The OpenID Connect location, then RFC 8414's.
    locations: [Location; 2],
    finished: bool,
    actions: VecDeque<DiscoveryAction>,
    next_id: u64,
}

impl Discovery {
    /// Discovery for `issuer`, an `https` URL (or `http` on loopback) without query or
    /// fragment; each request may take 30 s.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidUrl`] for any other issuer.
    pub fn new(issuer: impl Into<String>) -> Result<Discovery, ConfigError> {
        Discovery::with_timeout(issuer, Duration::from_secs(30))
    }

    /// [`new`](Discovery::new), each request taking at most `request_timeout`.
    ///
    /// # Errors
    ///
    /// As [`new`](Discovery::new), and [`ConfigError::InvalidLimit`] for a timeout that is
    /// zero or longer than a day.
    pub fn with_timeout(
        issuer: impl Into<String>,
        request_timeout: Duration,
    ) -> Result<Discovery, ConfigError> {
        if request_timeout.is_zero() || request_timeout > Duration::from_secs(24 * 60 * 60) {
            return Err(ConfigError::InvalidLimit("request timeout"));
        }
        let issuer = issuer.into();
        let invalid = |reason| ConfigError::InvalidUrl {
            field: "issuer",
            reason,
        };
        let parsed = url::parse(&issuer).map_err(invalid)?;
        if parsed.query.is_some() {
            return Err(invalid(UrlError::Query));
        }
        let authority_start = issuer.find("://").map_or(0, |at| at + 3);
        let path_start = issuer[authority_start..]
            .find('/')
            .map_or(issuer.len(), |at| authority_start + at);
        let (origin, path) = issuer.split_at(path_start);
        let path = path.trim_end_matches('/');
        let location = |text: String| {
            let uri = text
                .parse::<http::Uri>()
                .map_err(|_| invalid(UrlError::Host))?;
            Ok(Location {
                uri,
                request: None,
                answer: None,
            })
        };
        let locations = [
            location(format!("{origin}{path}/.well-known/openid-configuration"))?,
            location(format!(
                "{origin}/.well-known/oauth-authorization-server{path}"
            ))?,
        ];
        Ok(Discovery {
            issuer,
            request_timeout,
            locations,
            finished: false,
            actions: VecDeque::new(),
            next_id: 1,
        })
    }

    /// The issuer being discovered.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Whether [`DiscoveryAction::Finished`] has been emitted.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Starts: emits a [`DiscoveryAction::Send`] for each location. Later calls do nothing.
    pub fn start(&mut self, now: Instant) {
        let deadline = now + self.request_timeout;
        for index in 0..self.locations.len() {
            if self.locations[index].request.is_some() {
                continue;
            }
            let id = RequestId::from_raw(self.next_id);
            self.next_id += 1;
            let location = &mut self.locations[index];
            location.request = Some((id, deadline));
            let mut request = Request::new(Vec::new());
            *request.method_mut() = Method::GET;
            *request.uri_mut() = location.uri.clone();
            request
                .headers_mut()
                .insert(ACCEPT, HeaderValue::from_static("application/json"));
            self.actions
                .push_back(DiscoveryAction::Send { id, request });
        }
    }

    /// The answer to [`DiscoveryAction::Send`] `id`.
    pub fn handle_response(
        &mut self,
        now: Instant,
        id: RequestId,
        response: http::Response<Vec<u8>>,
    ) {
        self.handle_timeout(now);
        let issuer = &self.issuer;
        let answer = match response.status().as_u16() {
            200 => match Metadata::parse(issuer, response.body()) {
                Ok(metadata) => Answer::Found(metadata),
                Err(error) => Answer::Failed(DiscoveryError::Metadata(error)),
            },
            404 | 410 => Answer::Absent,
            status => Answer::Failed(DiscoveryError::Metadata(MetadataError::Status(status))),
        };
        self.answered(id, answer);
    }

    /// [`DiscoveryAction::Send`] `id` could not be completed.
    pub fn handle_failure(&mut self, now: Instant, id: RequestId, error: TransportError) {
        self.handle_timeout(now);
        self.answered(id, Answer::Failed(DiscoveryError::Transport(error)));
    }

    /// Time passed: a request past its deadline counts as failed.
    pub fn handle_timeout(&mut self, now: Instant) {
        for index in 0..self.locations.len() {
            let location = &self.locations[index];
            if let (Some((id, deadline)), None) = (location.request, &location.answer) {
                if deadline <= now {
                    let timed_out = TransportError::new(
                        TransportErrorKind::TimedOut,
                        format!("no answer within {:?}", self.request_timeout),
                    );
                    self.answered(id, Answer::Failed(DiscoveryError::Transport(timed_out)));
                }
            }
        }
    }

    /// The next thing to do, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<DiscoveryAction> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Discovery::handle_timeout) must be called next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.locations
            .iter()
            .filter(|location| location.answer.is_none())
            .filter_map(|location| location.request.map(|(_, deadline)| deadline))
            .min()
    }

    /// Records a location's answer; finishes once both have one.
    fn answered(&mut self, id: RequestId, answer: Answer) {
        let Some(location) = self
            .locations
            .iter_mut()
            .find(|location| location.request.is_some_and(|(sent, _)| sent == id))
        else {
            debug_assert!(id.get() < self.next_id, "request {id} was never issued");
            return;
        };
        if location.answer.is_some() || self.finished {
            return; // late: its deadline passed already
        }
        location.answer = Some(answer);
        let [Some(first), Some(second)] = self.locations.each_ref().map(|l| l.answer.clone())
        else {
            return;
        };
        self.finished = true;
        let result = merge(first, second);
        self.actions.push_back(DiscoveryAction::Finished { result });
    }
}

/// The outcome of both locations: the documents found, merged (the first's members win); a
/// document naming another issuer fails it all (S9); without a document, the first
/// location's failure, or the second's, or "not found".
fn merge(first: Answer, second: Answer) -> Result<Metadata, DiscoveryError> {
    for answer in [&first, &second] {
        if let Answer::Failed(
            error @ DiscoveryError::Metadata(MetadataError::IssuerMismatch { .. }),
        ) = answer
        {
            return Err(error.clone());
        }
    }
    match (first, second) {
        (Answer::Found(mut first), Answer::Found(second)) => {
            first.fill_from(&second);
            Ok(first)
        }
        (Answer::Found(found), _) | (_, Answer::Found(found)) => Ok(found),
        (Answer::Failed(error), _) | (_, Answer::Failed(error)) => Err(error),
        (Answer::Absent, Answer::Absent) => Err(DiscoveryError::Metadata(MetadataError::NotFound)),
    }
}

#[cfg(test)]
// A test's virtual clock has to start somewhere.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    /// Shaped like oidc-provider's `/.well-known/openid-configuration`, abridged.
    const OIDC_PROVIDER: &str = r#"{
        "issuer": "http://localhost:3000",
        "authorization_endpoint": "http://localhost:3000/auth",
        "token_endpoint": "http://localhost:3000/token",
        "revocation_endpoint": "http://localhost:3000/token/revocation",
        "device_authorization_endpoint": "http://localhost:3000/device/auth",
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "response_types_supported": ["code"]
    }"#;

    fn answer(status: u16, body: &str) -> http::Response<Vec<u8>> {
        http::Response::builder()
            .status(status)
            .body(body.as_bytes().to_vec())
            .expect("a valid response")
    }

    /// The two requests a started discovery sends: (id, URI).
    fn started(discovery: &mut Discovery, now: Instant) -> Vec<(RequestId, String)> {
        discovery.start(now);
        let mut sent = Vec::new();
        while let Some(action) = discovery.poll_action() {
            match action {
                DiscoveryAction::Send { id, request } => {
                    assert_eq!(request.method(), Method::GET);
                    assert_eq!(request.headers()[ACCEPT], "application/json");
                    sent.push((id, request.uri().to_string()));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        sent
    }

    /// Answers both locations and returns the outcome.
    fn outcome(
        issuer: &str,
        first: Result<http::Response<Vec<u8>>, TransportError>,
        second: Result<http::Response<Vec<u8>>, TransportError>,
    ) -> Result<Metadata, DiscoveryError> {
        let now = Instant::now();
        let mut discovery = Discovery::new(issuer).expect("a valid issuer");
        let sent = started(&mut discovery, now);
        for ((id, _), answer) in sent.into_iter().zip([first, second]) {
            match answer {
                Ok(response) => discovery.handle_response(now, id, response),
                Err(error) => discovery.handle_failure(now, id, error),
            }
        }
        match discovery.poll_action() {
            Some(DiscoveryAction::Finished { result }) => {
                assert!(discovery.poll_action().is_none());
                assert!(discovery.is_finished());
                result
            }
            other => panic!("expected the outcome, got {other:?}"),
        }
    }

    fn unreachable() -> TransportError {
        TransportError::new(TransportErrorKind::Connect, "connection refused")
    }

    #[test]
    fn the_well_known_locations_are_oidc_and_rfc8414_fetched_at_once() {
        for (issuer, oidc, oauth) in [
            (
                "https://idp.example",
                "https://idp.example/.well-known/openid-configuration",
                "https://idp.example/.well-known/oauth-authorization-server",
            ),
            (
                "https://idp.example/realms/dev/",
                "https://idp.example/realms/dev/.well-known/openid-configuration",
                "https://idp.example/.well-known/oauth-authorization-server/realms/dev",
            ),
            (
                "http://127.0.0.1:3000",
                "http://127.0.0.1:3000/.well-known/openid-configuration",
                "http://127.0.0.1:3000/.well-known/oauth-authorization-server",
            ),
        ] {
            let mut discovery = Discovery::new(issuer).expect(issuer);
            let sent = started(&mut discovery, Instant::now());
            let uris: Vec<&str> = sent.iter().map(|(_, uri)| uri.as_str()).collect();
            assert_eq!(uris, [oidc, oauth]);
            discovery.start(Instant::now());
            assert!(discovery.poll_action().is_none(), "started once");
        }
        assert_eq!(
            outcome(
                "https://idp.example",
                Ok(answer(404, "")),
                Ok(answer(410, ""))
            )
            .unwrap_err(),
            DiscoveryError::Metadata(MetadataError::NotFound)
        );
    }

    #[test]
    fn s6_issuers_are_checked_before_anything_is_fetched() {
        for (issuer, reason) in [
            ("http://idp.example", UrlError::Insecure),
            ("https://idp.example?x=1", UrlError::Query),
            ("https://idp.example#f", UrlError::Fragment),
        ] {
            assert_eq!(
                Discovery::new(issuer).unwrap_err(),
                ConfigError::InvalidUrl {
                    field: "issuer",
                    reason
                },
                "{issuer}"
            );
        }
        assert!(matches!(
            Discovery::new("idp.example"),
            Err(ConfigError::InvalidUrl {
                field: "issuer",
                ..
            })
        ));
    }

    #[test]
    fn an_issuer_with_a_query_is_reported_as_a_query() {
        let query = ConfigError::InvalidUrl {
            field: "issuer",
            reason: UrlError::Query,
        };
        assert_eq!(
            Discovery::new("https://idp.example/?tenant=x").unwrap_err(),
            query
        );
        let built = Provider::builder("https://idp.example/a", "https://idp.example/t", "cli")
            .issuer("https://idp.example?tenant=x")
            .build();
        assert_eq!(built.unwrap_err(), query);
        assert_eq!(UrlError::Query.to_string(), "must not contain a query");
    }

    #[test]
    fn s9_discovery_trusts_only_the_issuers_own_documents() {
        let both = outcome(
            "http://localhost:3000",
            Ok(answer(200, OIDC_PROVIDER)),
            Ok(answer(200, OIDC_PROVIDER)),
        )
        .expect("trusted");
        let provider = both.provider("app").unwrap().build().expect("valid");
        assert_eq!(provider.issuer(), Some("http://localhost:3000"));
        assert_eq!(
            provider
                .device_authorization_endpoint()
                .map(ToString::to_string)
                .as_deref(),
            Some("http://localhost:3000/device/auth")
        );
        // Another issuer's document in either place fails discovery, even beside a good one.
        let elsewhere = OIDC_PROVIDER.replace("localhost:3000\",", "localhost:4000\",");
        for (first, second) in [
            (OIDC_PROVIDER, elsewhere.as_str()),
            (elsewhere.as_str(), OIDC_PROVIDER),
        ] {
            let error = outcome(
                "http://localhost:3000",
                Ok(answer(200, first)),
                Ok(answer(200, second)),
            )
            .expect_err("a foreign issuer");
            assert!(
                matches!(
                    error,
                    DiscoveryError::Metadata(MetadataError::IssuerMismatch { .. })
                ),
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_member_only_the_rfc8414_document_lists_is_found() {
        // django-oauth-toolkit's shape: the revocation endpoint only in RFC 8414's document.
        let oidc = r#"{"issuer":"https://idp.example","authorization_endpoint":"https://idp.example/o/authorize/","token_endpoint":"https://idp.example/o/token/","jwks_uri":"https://idp.example/o/.well-known/jwks.json"}"#;
        let oauth = r#"{"issuer":"https://idp.example","authorization_endpoint":"https://idp.example/elsewhere","token_endpoint":"https://idp.example/o/token/","revocation_endpoint":"https://idp.example/o/revoke_token/"}"#;
        let metadata = outcome(
            "https://idp.example",
            Ok(answer(200, oidc)),
            Ok(answer(200, oauth)),
        )
        .expect("both documents");
        assert_eq!(
            metadata.string("revocation_endpoint"),
            Some("https://idp.example/o/revoke_token/")
        );
        assert_eq!(
            metadata.string("authorization_endpoint"),
            Some("https://idp.example/o/authorize/"),
            "the OpenID Connect document wins where both speak"
        );
        assert_eq!(
            metadata.string("jwks_uri"),
            Some("https://idp.example/o/.well-known/jwks.json")
        );
        let provider = metadata.provider("app").unwrap().build().unwrap();
        assert_eq!(
            provider
                .revocation_endpoint()
                .map(ToString::to_string)
                .as_deref(),
            Some("https://idp.example/o/revoke_token/")
        );
    }

    #[test]
    fn one_document_is_enough_when_the_other_location_has_none_or_fails() {
        for second in [
            Ok(answer(404, "")),
            Ok(answer(500, "oops")),
            Ok(answer(200, "<html>a catch-all page</html>")),
            Err(unreachable()),
        ] {
            let metadata = outcome(
                "http://localhost:3000",
                Ok(answer(200, OIDC_PROVIDER)),
                second,
            )
            .expect("the OpenID Connect document");
            assert_eq!(metadata.issuer(), "http://localhost:3000");
        }
        let metadata = outcome(
            "http://localhost:3000",
            Ok(answer(404, "")),
            Ok(answer(200, OIDC_PROVIDER)),
        )
        .expect("the RFC 8414 document alone");
        assert!(metadata.provider("app").is_ok());
    }

    #[test]
    fn without_any_document_the_first_failure_is_reported() {
        assert_eq!(
            outcome(
                "https://idp.example",
                Ok(answer(500, "")),
                Err(unreachable())
            )
            .unwrap_err(),
            DiscoveryError::Metadata(MetadataError::Status(500))
        );
        assert_eq!(
            outcome(
                "https://idp.example",
                Ok(answer(404, "")),
                Err(unreachable())
            )
            .unwrap_err(),
            DiscoveryError::Transport(unreachable())
        );
        assert_eq!(
            outcome(
                "https://idp.example",
                Ok(answer(200, "[]")),
                Ok(answer(404, ""))
            )
            .unwrap_err(),
            DiscoveryError::Metadata(MetadataError::NotJson)
        );
    }

    #[test]
    fn a_location_that_does_not_answer_in_time_counts_as_failed() {
        let now = Instant::now();
        let mut discovery =
            Discovery::with_timeout("http://localhost:3000", Duration::from_secs(5)).unwrap();
        let sent = started(&mut discovery, now);
        assert_eq!(discovery.poll_timeout(), Some(now + Duration::from_secs(5)));
        discovery.handle_response(now, sent[0].0, answer(200, OIDC_PROVIDER));
        assert_eq!(discovery.poll_timeout(), Some(now + Duration::from_secs(5)));
        discovery.handle_timeout(now + Duration::from_secs(5));
        let Some(DiscoveryAction::Finished { result: Ok(_) }) = discovery.poll_action() else {
            panic!("the first document is enough");
        };
        assert_eq!(discovery.poll_timeout(), None);
        // The late answer changes nothing.
        discovery.handle_response(now + Duration::from_secs(6), sent[1].0, answer(404, ""));
        assert!(discovery.poll_action().is_none());
        assert!(Discovery::with_timeout("https://idp.example", Duration::ZERO).is_err());
    }

    #[test]
    fn s9_metadata_for_the_exact_issuer_describes_the_provider() {
        let provider =
            Provider::from_metadata("http://localhost:3000", OIDC_PROVIDER.as_bytes(), "app")
                .unwrap()
                .build()
                .unwrap();
        assert_eq!(provider.issuer(), Some("http://localhost:3000"));
        assert_eq!(provider.token_endpoint(), "http://localhost:3000/token");
        assert_eq!(
            provider
                .revocation_endpoint()
                .map(ToString::to_string)
                .as_deref(),
            Some("http://localhost:3000/token/revocation")
        );
        assert!(
            provider.inner().require_iss,
            "the document says `iss` is always sent"
        );
        assert!(
            provider
                .inner()
                .authorize_prefix
                .starts_with("http://localhost:3000/auth?")
        );
    }

    #[test]
    fn s9_metadata_naming_any_other_issuer_is_refused() {
        for expected in [
            "http://localhost:3000/",
            "http://LOCALHOST:3000",
            "http://127.0.0.1:3000",
            "https://localhost:3000",
            "http://localhost:3000/realms/x",
        ] {
            assert_eq!(
                Provider::from_metadata(expected, OIDC_PROVIDER.as_bytes(), "app").unwrap_err(),
                MetadataError::IssuerMismatch {
                    expected: expected.into(),
                    found: Some("http://localhost:3000".into())
                }
            );
        }
        let anonymous =
            r#"{"authorization_endpoint":"https://a/x","token_endpoint":"https://a/t"}"#;
        assert!(matches!(
            Provider::from_metadata("https://a", anonymous.as_bytes(), "app"),
            Err(MetadataError::IssuerMismatch { found: None, .. })
        ));
    }

    #[test]
    fn metadata_without_s256_or_endpoints_or_json_is_refused() {
        let plain_only = OIDC_PROVIDER.replace(r#"["S256"]"#, r#"["plain"]"#);
        let no_token = OIDC_PROVIDER.replace("token_endpoint", "x_endpoint");
        let issuer = "http://localhost:3000";
        assert_eq!(
            Provider::from_metadata(issuer, plain_only.as_bytes(), "a").unwrap_err(),
            MetadataError::NoS256
        );
        assert_eq!(
            Provider::from_metadata(issuer, no_token.as_bytes(), "a").unwrap_err(),
            MetadataError::Missing("token_endpoint")
        );
        assert_eq!(
            Provider::from_metadata(issuer, b"<html>", "a").unwrap_err(),
            MetadataError::NotJson
        );
    }

    #[test]
    fn s6_endpoints_from_metadata_are_validated_like_configured_ones() {
        let insecure = r#"{"issuer":"https://idp.example","authorization_endpoint":"http://idp.example/auth","token_endpoint":"https://idp.example/token"}"#;
        let builder =
            Provider::from_metadata("https://idp.example", insecure.as_bytes(), "a").unwrap();
        assert!(builder.build().is_err());
    }
}
