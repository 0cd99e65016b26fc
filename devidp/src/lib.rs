//! A small, spec-following OAuth 2.0 authorization server for offline development and
//! tests, plus a scripted user agent ([`agent`]) that plays the browser.
//!
//! The server implements the authorization code grant with PKCE (RFC 6749 §4.1,
//! RFC 7636, S256 only), refresh token rotation with reuse detection, client
//! authentication by exactly the registered method (RFC 6749 §2.3.1), the `iss`
//! authorization response parameter (RFC 9207) and authorization server metadata
//! (RFC 8414). [`Quirk`] imitates the deviations of real providers.
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
//! - `POST /token`: `authorization_code` and `refresh_token` grants. The form body is
//!   decoded strictly (no repeated or empty parameters, no unencoded `=`, space or
//!   non-ASCII, valid `%XX`, UTF-8); codes are single use, bound to client, redirect URI,
//!   PKCE challenge and scope; refresh tokens rotate, and replaying a rotated one (or a
//!   used code) revokes every token of that grant.
//! - `POST /revoke` (RFC 7009): with the client authenticated as at `/token`, a refresh
//!   token revokes its whole grant, an access token itself; unknown tokens get 200 too.
//! - `GET /.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`
//!   (also the RFC 8414 §3.1 / OIDC Discovery variants when the issuer has a path); the
//!   second without the revocation endpoint when
//!   [`Config::revocation_only_in_oauth_metadata`] is set.
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
#![forbid(unsafe_code)]

pub mod agent;
mod form;
mod http;
mod idtoken;
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

/// How a client authenticates at the token endpoint (RFC 6749 §2.3.1). Using another
/// method than the registered one, or two at once, is `invalid_client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`: `Authorization: Basic base64(form(id) ":" form(secret))`.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post,
    /// `none`: a public client sends only `client_id` in the body.
    None,
}

/// A deviation of a real provider to imitate at the token endpoint, in the answers to
/// both grants: the code exchange and the refresh (RFC 6749 §6).
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
    GitHub,
    /// A GitHub App with expiring user tokens: like [`Quirk::GitHub`] (form bodies unless
    /// `Accept: application/json`, errors with HTTP 200 and GitHub's codes), but both the
    /// code exchange and every refresh answer
    /// `access_token=…&expires_in=…&refresh_token=…&refresh_token_expires_in=15897600&scope=&token_type=bearer`:
    /// `expires_in` is [`Config::token_lifetime`] (GitHub says 28800), the scope is empty
    /// (a GitHub App has permissions, not scopes), and each refresh rotates the refresh
    /// token. Replaying a rotated-out one gets `bad_refresh_token` with HTTP 200.
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
}

impl Config {
    /// The defaults for `clients`: own base URL as issuer, 60 s codes, 3600 s tokens, no
    /// quirk, `iss` sent, no added scopes.
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
        }
    }

    fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        for (i, client) in self.clients.iter().enumerate() {
            let id = &client.id;
            if id.is_empty() || self.clients[..i].iter().any(|c| c.id == *id) {
                return invalid(format!("client id {id:?} is empty or repeated"));
            }
            if (client.auth == ClientAuth::None) != client.secret.is_none() {
                return invalid(format!(
                    "client {id:?}: a secret goes with Basic or Post only"
                ));
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
    /// Successful token responses.
    pub tokens_issued: usize,
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

    /// `{base}/jwks`: the key set that checks its ID tokens.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.server.base_url)
    }

    /// `{base}/userinfo`.
    pub fn userinfo_endpoint(&self) -> String {
        format!("{}/userinfo", self.server.base_url)
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
