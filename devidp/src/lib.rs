//! A small, spec-following OAuth 2.0 authorization server for offline development and
//! tests, plus a scripted user agent ([`agent`]) that plays the browser.
//!
//! The server implements the authorization code grant with PKCE (RFC 6749 §4.1,
//! RFC 7636, S256 only), the device authorization grant (RFC 8628) with an approval
//! page, refresh token rotation with reuse detection, client authentication by exactly
//! the registered method (RFC 6749 §2.3.1), `private_key_jwt` included (RFC 7523), the
//! `iss` authorization response parameter (RFC 9207), authorization server metadata
//! (RFC 8414), OpenID Connect ID tokens and UserInfo, DPoP-bound tokens (RFC 9449), pushed
//! authorization requests (RFC 9126), resource indicators (RFC 8707) and token
//! introspection (RFC 7662). [`Quirk`] imitates the deviations of real providers.
//!
//! It is plain `std`: a thread per connection, HTTP/1.1, `Connection: close`, loopback.
//! It is independent of the `latchkey` crate on purpose, so it can catch its mistakes.
//!
//! Endpoints, relative to [`DevIdp::base_url`]:
//!
//! - `GET /authorize`: approves at once with a `303` to the redirect URI carrying `code`,
//!   `state` and `iss`. An unknown client or unregistered `redirect_uri` gets a `400` page,
//!   never a redirect (redirect URIs compare exactly, except the port of a loopback IP URI
//!   registered without one, RFC 8252 §7.3). PKCE `plain`, or none, is refused by
//!   redirecting with `error=invalid_request`.
//!
//!   **Denial:** a valid request with `login_hint=deny`, or any valid request while
//!   [`DevIdp::set_deny`] is on, is redirected with `error=access_denied` (plus
//!   `error_description`, `state`, `iss`) instead, as if the user had pressed "deny".
//!
//!   With `request_uri` (and `client_id`), the parameters are those the client pushed to
//!   `/par`, and only those; a `request_uri` works once, for its client, within
//!   [`Config::request_uri_lifetime`]. Without one, a request is refused (`400` page)
//!   when [`Config::require_pushed_authorization_requests`] is set. `resource` may be
//!   repeated (RFC 8707; an absolute URI without fragment, else `invalid_target`);
//!   `dpop_jkt` (RFC 9449 §10) binds the code to that DPoP key.
//! - `POST /token`: `authorization_code`, `refresh_token` and
//!   `urn:ietf:params:oauth:grant-type:device_code` grants. The form body is decoded
//!   strictly (no repeated or empty parameters, no unencoded `=`, space or non-ASCII,
//!   valid `%XX`, UTF-8); codes are single use, bound to client, redirect URI, PKCE
//!   challenge and scope; refresh tokens rotate, and replaying a rotated one (or a used
//!   code) revokes every token of that grant.
//!
//!   **DPoP:** with a valid `DPoP` proof (RFC 9449 §4.3: `typ` `dpop+jwt`, an asymmetric
//!   `alg` and public `jwk`, `htm`, `htu` without query or fragment, `iat` within a
//!   minute, a `jti` never seen, and the server's nonce when [`Config::dpop_nonce`] is
//!   set) the access token is bound to the proof's key and answered with `token_type`
//!   `DPoP`; a public client's refresh token is bound too, so refreshing needs the same
//!   key. A bad proof is `invalid_dpop_proof`; a missing or old nonce `use_dpop_nonce`
//!   with the nonce in a `DPoP-Nonce` header. A code asked for with `dpop_jkt` needs that
//!   key's proof (`invalid_grant` otherwise).
//!
//!   **Resources:** `resource` parameters may narrow the grant's resources (one not in it
//!   is `invalid_target`); the token is for them, or for all of the grant's.
//! - `POST /device_authorization` (RFC 8628 §3.1; in the GitHub quirk modes also
//!   `POST /login/device/code`): with the client authenticated as at `/token` and an
//!   optional `scope`, answers `device_code`, `user_code` (`WDJB-MJHT`: eight letters of
//!   `BCDFGHJKLMNPQRSTVWXZ`), `verification_uri` (`{base}/device`),
//!   `verification_uri_complete` (`{base}/device?user_code=WDJB-MJHT`), `expires_in`
//!   ([`Config::device_expires_in`]) and `interval` ([`Config::device_interval`]).
//!   Errors are RFC 6749 §5.2 JSON: `invalid_client` (401), `invalid_request`,
//!   `invalid_scope`.
//!
//!   Polling `/token` with the device code (by the client it was issued to) answers, all
//!   with 400: `authorization_pending` until the user decides; `slow_down` for a poll
//!   sooner than the interval after the previous one (or while
//!   [`DevIdp::slow_down_next`] has polls left), which grows that code's interval by
//!   5 s; `access_denied` once denied; `expired_token` after `expires_in`. Once approved,
//!   the next poll gets the same token response as a code exchange, with an ID token
//!   for the approving user (no `nonce`) when the scope has `openid`; after that the
//!   device code, like an unknown one or one of another client, is `invalid_grant`.
//! - `GET /device` (in the GitHub quirk modes also `/login/device`): the approval page, a
//!   plain form for scripts and headless browsers: `<input id="user_code"
//!   name="user_code">` (prefilled from `?user_code=`), `<input id="user" name="user"
//!   value="dev-user">`, and two submit buttons `id="approve"` and `id="deny"` sending
//!   `action=approve` or `action=deny`. `POST /device` with that form records the
//!   decision and answers a `200` page; an unknown, expired or already decided code gets
//!   a `400` page and changes nothing. User codes match ignoring case, dashes and spaces;
//!   everything echoed is HTML-escaped. [`DevIdp::approve_device`] and
//!   [`DevIdp::deny_device`] do the same without the page.
//! - `POST /revoke` (RFC 7009): with the client authenticated as at `/token` (and a DPoP
//!   proof, if sent, checked as there), a refresh token revokes its whole grant, an access
//!   token itself; unknown tokens get 200 too.
//! - `POST /par` (RFC 9126): the authorization request's parameters, with the client
//!   authenticated as at `/token`, checked as `/authorize` would, answered `201` with a
//!   `request_uri` and its `expires_in`. A DPoP proof sent here binds the code as
//!   `dpop_jkt` does. Not served in the GitHub quirk modes.
//! - `POST /introspect` (RFC 7662): for any authenticated client, `{"active":false}` or,
//!   for an active token, `client_id`, `scope`, `sub`, `iat`, `exp`, `token_type`
//!   (`Bearer`, `DPoP` or `refresh_token`), `aud` (its resources) and `cnf.jkt` (the DPoP
//!   key it is bound to).
//! - `GET /.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`
//!   (also the RFC 8414 §3.1 / OIDC Discovery variants when the issuer has a path); the
//!   second without the revocation endpoint when
//!   [`Config::revocation_only_in_oauth_metadata`] is set. Both list the
//!   `device_authorization_endpoint` and the device code grant in
//!   `grant_types_supported`, except in the GitHub quirk modes.
//! - `GET /jwks` and `GET /userinfo`: the keys that check ID tokens, and the claims of
//!   the user an access token was issued to: a bearer token as `Bearer`, a bound one as
//!   `DPoP` with a proof of its key (with `ath`); refusals are `401` with a
//!   `WWW-Authenticate` challenge of the token's scheme.
//!
//! Clients registered with [`ClientAuth::PrivateKeyJwt`] authenticate at every endpoint
//! above that authenticates clients with a `client_assertion` signed by their key.
//! Metadata lists the PAR, introspection and DPoP members, and `private_key_jwt` among the
//! authentication methods. [`Stats`] counts pushed requests, accepted proofs, nonce
//! challenges and accepted assertions, so tests can see the server's side.
//!
//! ```
//! use latchkey_devidp::{Client, ClientAuth, Config, DevIdp, agent};
//!
//! let client = Client {
//!     id: "app".into(),
//!     secret: None,
//!     auth: ClientAuth::None,
//!     redirect_uris: vec!["com.example.app:/done".into()],
//! };
//! let idp = DevIdp::start(Config::new(vec![client]), "127.0.0.1:0".parse().unwrap())?;
//! let url = format!(
//!     "{}?response_type=code&client_id=app&redirect_uri=com.example.app%3A%2Fdone\
//!      &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\
//!      &code_challenge_method=S256&state=xyz",
//!     idp.authorization_endpoint()
//! );
//! let hops = agent::browse(&url)?;
//! let location = hops[0].location.as_deref().unwrap();
//! assert!(location.starts_with("com.example.app:/done?code="));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The device flow, with the user's approval given programmatically:
//!
//! ```
//! use std::time::Duration;
//! use latchkey_devidp::{Client, ClientAuth, Config, DevIdp, agent};
//! use serde_json::Value;
//!
//! let client = Client {
//!     id: "tv".into(),
//!     secret: None,
//!     auth: ClientAuth::None,
//!     redirect_uris: Vec::new(),
//! };
//! let mut config = Config::new(vec![client]);
//! config.device_interval = Duration::ZERO; // poll at will, to keep the example short
//! let idp = DevIdp::start(config, "127.0.0.1:0".parse().unwrap())?;
//! let form = [("Content-Type", "application/x-www-form-urlencoded")];
//! let json = |body: &[u8]| serde_json::from_slice::<Value>(body).unwrap();
//!
//! let request = b"client_id=tv&scope=openid";
//! let (status, _, body) = agent::post(&idp.device_authorization_endpoint(), &form, request)?;
//! assert_eq!(status, 200);
//! let answer = json(&body);
//! assert_eq!(answer["verification_uri"], idp.device_verification_uri());
//! let user_code = answer["user_code"].as_str().unwrap();
//! let poll = format!(
//!     "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code\
//!      &device_code={}&client_id=tv",
//!     answer["device_code"].as_str().unwrap()
//! );
//!
//! let (status, _, body) = agent::post(&idp.token_endpoint(), &form, poll.as_bytes())?;
//! assert_eq!((status, json(&body)["error"].as_str()), (400, Some("authorization_pending")));
//!
//! // The user enters the code at `verification_uri` and approves (or a test does this).
//! assert!(idp.approve_device(user_code, "alice"));
//! let (status, _, body) = agent::post(&idp.token_endpoint(), &form, poll.as_bytes())?;
//! assert_eq!(status, 200);
//! let tokens = json(&body);
//! assert!(tokens["access_token"].is_string() && tokens["id_token"].is_string());
//! # Ok::<(), std::io::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod agent;
mod form;
mod http;
mod idtoken;
mod jws;
mod keys;
mod oauth;

pub use idtoken::{Forgery, IdTokenAlg};

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use oauth::Server;

/// Connections served at once; more are answered `503` and closed.
const MAX_CONNECTIONS: usize = 256;

/// A registered client.
#[derive(Clone, Debug)]
pub struct Client {
    /// The `client_id`.
    pub id: String,
    /// The client secret; required for [`ClientAuth::Basic`] and [`ClientAuth::Post`],
    /// absent for [`ClientAuth::None`].
    pub secret: Option<String>,
    /// The one authentication method this client must use at the token endpoint.
    pub auth: ClientAuth,
    /// The registered redirect URIs; an authorization request must name one exactly,
    /// except that a loopback IP URI registered without a port (`http://127.0.0.1/cb`,
    /// `http://[::1]/cb`) accepts any port (RFC 8252 §7.3). No fragments.
    pub redirect_uris: Vec<String>,
}

/// How a client authenticates at the token endpoint (RFC 6749 §2.3.1), and at every
/// endpoint that authenticates clients as it does (revocation, device authorization,
/// pushed authorization requests, introspection). Using another method than the
/// registered one, or two at once, is `invalid_client`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`: `Authorization: Basic base64(form(id) ":" form(secret))`.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post,
    /// `none`: a public client sends only `client_id` in the body.
    None,
    /// `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core §9): a
    /// `client_assertion` JWT signed with the private half of `jwk`, checked for its
    /// signature (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA; never `none` or a
    /// MAC), `iss` = `sub` = the client id, an `aud` naming the issuer, the token
    /// endpoint or the endpoint called, an `exp` in the future and at most five minutes
    /// away, and a `jti` not seen before.
    PrivateKeyJwt {
        /// The client's public key: a JWK or a JWK Set (RFC 7517), as JSON text. With
        /// several keys, the assertion's `kid` picks one, or each is tried.
        jwk: String,
    },
}

impl ClientAuth {
    /// The method's name in metadata (`client_secret_basic`, `client_secret_post`,
    /// `none`, `private_key_jwt`).
    pub fn name(&self) -> &'static str {
        match self {
            ClientAuth::Basic => "client_secret_basic",
            ClientAuth::Post => "client_secret_post",
            ClientAuth::None => "none",
            ClientAuth::PrivateKeyJwt { .. } => "private_key_jwt",
        }
    }
}

/// A deviation of a real provider to imitate at the token endpoint, in the answers to
/// every grant: the code exchange, the refresh (RFC 6749 §6) and the device code
/// (RFC 8628 §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Quirk {
    /// Follow RFC 6749.
    #[default]
    None,
    /// A GitHub OAuth App: token responses are form-encoded
    /// (`access_token=…&scope=repo%2Cgist&token_type=bearer`, comma-separated scope, no
    /// `expires_in`, no refresh token) unless the request has `Accept: application/json`;
    /// errors come with HTTP 200 and GitHub's codes: `bad_verification_code` for an
    /// `invalid_grant` of the code exchange, `bad_refresh_token` for one of a refresh
    /// (which always fails here, as no refresh token is issued),
    /// `incorrect_client_credentials` for `invalid_client`.
    ///
    /// The device flow behaves as GitHub's: the device authorization endpoint is also at
    /// `/login/device/code` and answers in form bodies too (`device_code`, `expires_in`,
    /// `interval`, `user_code`, `verification_uri` = `{base}/login/device`, where the
    /// approval page is also served; no `verification_uri_complete`), errors included
    /// (`incorrect_client_credentials`, `invalid_scope`… with HTTP 200). Polls are
    /// answered with HTTP 200 too: `authorization_pending`, `slow_down` (with the new
    /// `interval` in seconds), `access_denied`, `expired_token`, and
    /// `incorrect_device_code` for an `invalid_grant`. No metadata lists the device
    /// endpoint.
    GitHub,
    /// A GitHub App with expiring user tokens: like [`Quirk::GitHub`] (form bodies unless
    /// `Accept: application/json`, errors with HTTP 200 and GitHub's codes), but both the
    /// code exchange and every refresh answer
    /// `access_token=…&expires_in=…&refresh_token=…&refresh_token_expires_in=15897600&scope=&token_type=bearer`:
    /// `expires_in` is [`Config::token_lifetime`] (GitHub says 28800), the scope is empty
    /// (a GitHub App has permissions, not scopes), and each refresh rotates the refresh
    /// token. Replaying a rotated-out one gets `bad_refresh_token` with HTTP 200. The
    /// device flow is GitHub's as for [`Quirk::GitHub`], with this token answer.
    GitHubApp,
    /// Entra ID / Azure AD v1: `expires_in` and `ext_expires_in` are strings (`"3600"`),
    /// in refresh answers too.
    EntraStringExpiry,
    /// LinkedIn, Slack and others: no `token_type` member, in refresh answers too.
    NoTokenType,
}

impl Quirk {
    /// Whether this is one of GitHub's ways: form bodies unless JSON is asked for, errors
    /// with HTTP 200 and GitHub's error codes.
    fn is_github(self) -> bool {
        matches!(self, Quirk::GitHub | Quirk::GitHubApp)
    }
}

/// Server configuration; [`Config::new`] gives the defaults.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The registered clients; ids must be unique.
    pub clients: Vec<Client>,
    /// The issuer identifier; `None` means [`DevIdp::base_url`]. Set it to provoke an
    /// issuer mismatch, or to an URL with a path to imitate Keycloak realms.
    pub issuer: Option<String>,
    /// How long an authorization code can be redeemed (default 60 s).
    pub code_lifetime: Duration,
    /// Access token lifetime, reported as `expires_in` (default 3600 s).
    pub token_lifetime: Duration,
    /// The provider deviation to imitate (default [`Quirk::None`]).
    pub quirk: Quirk,
    /// Whether the authorization response carries `iss` (RFC 9207; default `true`).
    pub send_iss: bool,
    /// Scopes added to every grant beyond those requested, e.g. `["openid"]` like Google,
    /// so a client must report a scope change (default none).
    pub scopes_added: Vec<String>,
    /// List the revocation endpoint only in the RFC 8414 document, not in the OpenID
    /// Connect one, as django-oauth-toolkit does (default `false`).
    pub revocation_only_in_oauth_metadata: bool,
    /// The algorithm ID tokens are signed with (default RS256).
    pub id_token_alg: IdTokenAlg,
    /// The device flow's polling interval (RFC 8628 §3.2 `interval`; default 5 s): a poll
    /// of a device code sooner than this after the previous one gets `slow_down`, and
    /// every `slow_down` adds 5 s to that device code's interval. Sent as whole seconds,
    /// rounded up (so a client that waits what it is told is never too early), but
    /// enforced exactly: tests can use e.g. 100 ms. Zero turns the check off.
    pub device_interval: Duration,
    /// How long a device code and its user code are valid (RFC 8628 §3.2 `expires_in`;
    /// default 600 s); sent as whole seconds, rounded up. After that, polls get
    /// `expired_token` and the page refuses the user code.
    pub device_expires_in: Duration,
    /// Whether DPoP proofs must carry the server's nonce (RFC 9449 §8, §9; default
    /// `false`): a proof without it, or with an old one, is answered `use_dpop_nonce`
    /// with the current nonce in a `DPoP-Nonce` header, which every token response also
    /// carries. [`DevIdp::rotate_dpop_nonce`] changes it.
    pub dpop_nonce: bool,
    /// Whether authorization requests must be pushed first (RFC 9126 §5;
    /// `require_pushed_authorization_requests` in metadata; default `false`): `/authorize`
    /// without a `request_uri` is refused.
    pub require_pushed_authorization_requests: bool,
    /// How long a pushed request's `request_uri` can be used (RFC 9126 §2.2
    /// `expires_in`; default 60 s); sent as whole seconds, rounded up.
    pub request_uri_lifetime: Duration,
}

impl Config {
    /// The defaults for `clients`: own base URL as issuer, 60 s codes, 3600 s tokens, no
    /// quirk, `iss` sent, no added scopes, RS256 ID tokens, device codes valid for 600 s
    /// and polled every 5 s, DPoP without nonces, pushed authorization requests allowed
    /// (not required) with request URIs valid for 60 s.
    pub fn new(clients: Vec<Client>) -> Config {
        Config {
            clients,
            issuer: None,
            code_lifetime: Duration::from_secs(60),
            token_lifetime: Duration::from_secs(3600),
            quirk: Quirk::None,
            send_iss: true,
            scopes_added: Vec::new(),
            revocation_only_in_oauth_metadata: false,
            id_token_alg: IdTokenAlg::RS256,
            device_interval: Duration::from_secs(5),
            device_expires_in: Duration::from_secs(600),
            dpop_nonce: false,
            require_pushed_authorization_requests: false,
            request_uri_lifetime: Duration::from_secs(60),
        }
    }

    fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        for (i, client) in self.clients.iter().enumerate() {
            let id = &client.id;
            if id.is_empty() || self.clients[..i].iter().any(|c| c.id == *id) {
                return invalid(format!("client id {id:?} is empty or repeated"));
            }
            let secret = matches!(client.auth, ClientAuth::Basic | ClientAuth::Post);
            if secret != client.secret.is_some() {
                return invalid(format!(
                    "client {id:?}: a secret goes with Basic or Post only"
                ));
            }
            if let ClientAuth::PrivateKeyJwt { jwk } = &client.auth {
                if let Err(why) = jws::key_set(jwk) {
                    return invalid(format!("client {id:?}: its public key: {why}"));
                }
            }
            for uri in &client.redirect_uris {
                if uri.is_empty() || uri.contains('#') || !uri.bytes().all(|b| b.is_ascii_graphic())
                {
                    return invalid(format!("client {id:?}: bad redirect URI {uri:?}"));
                }
            }
        }
        Ok(())
    }
}

/// A request the server received, as sent (header names as the client spelled them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The method, e.g. `POST`.
    pub method: String,
    /// The request target, path and query, e.g. `/token`.
    pub target: String,
    /// The header fields in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).next()
    }

    /// All values of the header `name` (case-insensitive).
    pub fn headers_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Counters since the server started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Well-formed HTTP requests received.
    pub requests: usize,
    /// Requests to `/authorize`.
    pub authorize_requests: usize,
    /// Authorization codes issued.
    pub codes_issued: usize,
    /// Requests to `/token`.
    pub token_requests: usize,
    /// Successful token responses (of every grant).
    pub tokens_issued: usize,
    /// Device codes issued by the device authorization endpoint (RFC 8628 §3.2).
    pub device_authorizations: usize,
    /// Token requests with the device code grant, whatever the answer (pending,
    /// `slow_down`, tokens, errors).
    pub device_polls: usize,
    /// Authorization requests pushed (RFC 9126) and given a `request_uri`.
    pub pushed_authorizations: usize,
    /// DPoP proofs accepted (RFC 9449), at every endpoint.
    pub dpop_proofs: usize,
    /// Proofs answered `use_dpop_nonce` for lacking the current nonce.
    pub dpop_nonce_challenges: usize,
    /// `private_key_jwt` client assertions accepted (RFC 7523).
    pub client_assertions: usize,
}

/// A running server. Dropping it (or [`DevIdp::shutdown`]) stops accepting and releases
/// the port; requests already being served are finished.
pub struct DevIdp {
    server: Arc<Server>,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl DevIdp {
    /// Binds `bind` (port 0 picks a free port) and starts serving on a background thread.
    /// Fails on a bind error or an inconsistent `config`.
    pub fn start(config: Config, bind: SocketAddr) -> io::Result<DevIdp> {
        config.validate()?;
        let listener = TcpListener::bind(bind)?;
        let local = listener.local_addr()?;
        let server = Arc::new(Server::new(config, format!("http://{}", reachable(local)))?);
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (server, stop) = (server.clone(), stop.clone());
            thread::Builder::new()
                .name("devidp-accept".into())
                .spawn(move || accept_loop(listener, server, stop))?
        };
        Ok(DevIdp {
            server,
            local,
            stop,
            accept: Some(accept),
        })
    }

    /// `http://IP:PORT` of the listener, e.g. `http://127.0.0.1:40123`.
    pub fn base_url(&self) -> String {
        self.server.base_url.clone()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The issuer identifier: [`Config::issuer`] or the base URL.
    pub fn issuer(&self) -> String {
        self.server.issuer.clone()
    }

    /// `{base}/authorize`.
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/authorize", self.server.base_url)
    }

    /// `{base}/token`.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.server.base_url)
    }

    /// `{base}/revoke`.
    pub fn revocation_endpoint(&self) -> String {
        format!("{}/revoke", self.server.base_url)
    }

    /// `{base}/par`: the pushed authorization request endpoint (RFC 9126).
    pub fn pushed_authorization_request_endpoint(&self) -> String {
        format!("{}/par", self.server.base_url)
    }

    /// `{base}/introspect`: the introspection endpoint (RFC 7662).
    pub fn introspection_endpoint(&self) -> String {
        format!("{}/introspect", self.server.base_url)
    }

    /// The DPoP nonce proofs must carry when [`Config::dpop_nonce`] is set.
    pub fn dpop_nonce(&self) -> String {
        self.server.lock().dpop_nonce.clone()
    }

    /// Replaces the DPoP nonce (as providers do every few minutes) and returns the new
    /// one: the next proof with the old nonce is answered `use_dpop_nonce`.
    pub fn rotate_dpop_nonce(&self) -> io::Result<String> {
        self.server.rotate_dpop_nonce()
    }

    /// `{base}/jwks`: the key set that checks its ID tokens.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.server.base_url)
    }

    /// `{base}/userinfo`.
    pub fn userinfo_endpoint(&self) -> String {
        format!("{}/userinfo", self.server.base_url)
    }

    /// `{base}/device_authorization`: the device authorization endpoint (RFC 8628 §3.1),
    /// in every mode. The GitHub quirk modes also serve it at GitHub's
    /// `{base}/login/device/code`.
    pub fn device_authorization_endpoint(&self) -> String {
        format!("{}/device_authorization", self.server.base_url)
    }

    /// The `verification_uri` the device authorization endpoint hands out, where the
    /// approval page is: `{base}/device`, or `{base}/login/device` in the GitHub quirk
    /// modes (which serve the page at both).
    pub fn device_verification_uri(&self) -> String {
        self.server.verification_uri()
    }

    /// Approves the pending device code of `user_code` as the user `user` (an empty name
    /// means `dev-user`), as the approval page's "Approve" does: the next poll in time
    /// gets tokens, with `sub` = `user` in the ID token. The code is matched ignoring
    /// case, dashes and spaces.
    ///
    /// Returns `false`, changing nothing, for an unknown or expired code, one already
    /// approved or denied, or a user name longer than 64 characters or with control
    /// characters.
    pub fn approve_device(&self, user_code: &str, user: &str) -> bool {
        self.server.decide_device(user_code, Some(user)).is_ok()
    }

    /// Denies the pending device code of `user_code`, as the approval page's "Deny" does:
    /// polls get `access_denied`. Returns `false`, changing nothing, for an unknown or
    /// expired code or one already approved or denied.
    pub fn deny_device(&self, user_code: &str) -> bool {
        self.server.decide_device(user_code, None).is_ok()
    }

    /// The user codes (`WDJB-MJHT`) that await the user's decision and have not expired,
    /// oldest first: what a test approves when the client under test keeps its user code
    /// to itself.
    pub fn pending_user_codes(&self) -> Vec<String> {
        self.server.pending_user_codes()
    }

    /// Answers the next `polls` device code polls `slow_down`, however slowly they come,
    /// to test a client's slow-down handling; replaces any count still left, `0` cancels.
    ///
    /// Only polls that would otherwise get `authorization_pending` or tokens count (not
    /// errors such as `access_denied`). Each such `slow_down` grows the device code's
    /// interval by 5 s like any other, and the grown interval is enforced: a client that
    /// does not wait longer gets `slow_down` again.
    pub fn slow_down_next(&self, polls: usize) {
        self.server.slow_down_next(polls);
    }

    /// Makes a new current signing key for each algorithm: ID tokens from now on name a
    /// new `kid`; the key set lists it and the previous one. Returns the new RSA and EC
    /// key ids.
    pub fn rotate_keys(&self) -> io::Result<(String, String)> {
        self.server
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .rotate()
    }

    /// From now on, ID tokens (or UserInfo answers) are forged to fail `forgery`'s check;
    /// `None` goes back to honest ones.
    pub fn set_forgery(&self, forgery: Option<Forgery>) {
        *self
            .server
            .forgery
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = forgery;
    }

    /// While on, every valid authorization request is denied (`error=access_denied`), as
    /// if the user pressed "deny". Per request, `login_hint=deny` does the same.
    pub fn set_deny(&self, deny: bool) {
        self.server.deny_all.store(deny, Ordering::SeqCst);
    }

    /// Counters of requests, codes and tokens.
    pub fn stats(&self) -> Stats {
        self.server.lock().stats
    }

    /// The most recent requests (up to 1024), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.lock().log.iter().cloned().collect()
    }

    /// The last request to `/token`, exactly as received.
    pub fn last_token_request(&self) -> Option<RecordedRequest> {
        self.server.lock().last_token_request.clone()
    }

    /// Whether `access_token` was issued and is neither expired nor revoked (tokens are
    /// revoked when their authorization code is reused or a rotated refresh token is
    /// replayed).
    pub fn access_token_active(&self, access_token: &str) -> bool {
        self.server.access_token_active(access_token)
    }

    /// Stops the server and releases the port; the same as dropping it.
    pub fn shutdown(self) {}
}

impl Drop for DevIdp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own, then wait until the
        // listener is closed.
        let woken = TcpStream::connect_timeout(&reachable(self.local), Duration::from_secs(2));
        if let (Ok(_), Some(accept)) = (woken, self.accept.take()) {
            let _ = accept.join();
        }
    }
}

/// The address to connect to for a listener on `addr` (loopback for a wildcard bind).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Releases a connection slot when its thread ends (or fails to start).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, server: Arc<Server>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else {
            thread::sleep(Duration::from_millis(10)); // e.g. out of file descriptors
            continue;
        };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = stream.set_nonblocking(true);
            let _ = http::Response::page(503, "Too many connections.").write_to(&mut &stream);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(active.clone());
        let server = server.clone();
        let _ = thread::Builder::new()
            .name("devidp-conn".into())
            .spawn(move || {
                let _slot = slot;
                http::serve(stream, |request| server.handle(request));
            });
    }
}
