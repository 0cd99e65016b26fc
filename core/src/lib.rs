//! # latchkey
//!
//! The OAuth 2.0 authorization-code flow with PKCE (RFC 6749, RFC 7636) for applications that
//! receive the browser's redirect on a loopback port (RFC 8252): command-line tools, desktop
//! apps, a Docker Desktop extension's backend, a service logging in many users at once; and
//! the device authorization grant (RFC 8628) for where no browser can be opened.
//!
//! This crate is the whole protocol and none of the I/O. It reads no clock, opens no socket,
//! draws no randomness and runs on no async runtime: time, bytes and entropy come in as
//! arguments, and everything the outside world must do comes out as an action. Three
//! machines share one calling contract:
//!
//! | machine | what it does | its actions |
//! |---|---|---|
//! | [`Engine`] | logins: the loopback listener, the callback, the code exchange; device logins | [`Action`] |
//! | [`Session`] | a login's tokens afterwards: hand out, refresh, log out | [`SessionAction`] |
//! | [`Discovery`] | a provider's metadata from its issuer | [`DiscoveryAction`] |
//!
//! Each has getters, commands, `handle_*` inputs that take `now`, and `poll_action` /
//! `poll_timeout` (the part they share is the [`Machine`] trait); every request and store
//! operation it asks for carries an id that its answer names; every deadline is the
//! machine's own. The drivers `latchkey-smol` and
//! `latchkey-tokio` wire them to sockets, TLS, timers, a browser and a token store; you can
//! write your own in a few lines.
//!
//! ## One flow, start to finish
//!
//! 1. [`Engine::start`] makes a fresh PKCE verifier and `state` from your entropy and emits
//!    [`Action::OpenBrowser`] with the authorization URL.
//! 2. The provider sends the browser back to `http://127.0.0.1:PORT/callback?code=…&state=…`.
//!    You feed the connection's bytes to [`Engine::handle_bytes`]; the engine checks the
//!    request (host, method, path, Fetch-Metadata, every parameter), routes it by `state`
//!    to its flow, and emits [`Action::SendTokenRequest`]. The browser's connection is held.
//! 3. You send the request and hand the answer to [`Engine::handle_token_response`]. The
//!    engine emits [`Action::Persist`] with the [`TokenSet`].
//! 4. You store the tokens and call [`Engine::handle_persisted`]. Only now does the browser
//!    get its answer (a `303` to your landing URL, or a static page), and the flow ends with
//!    [`Action::Finished`] carrying `Result<TokenSet, FlowError>`.
//!
//! Anything else the browser side sends (a favicon request, a forged callback, a web page
//! probing the port) gets a fixed HTTP answer and changes no flow.
//!
//! ## The run loop
//!
//! The engine's methods come in four families: getters; commands ([`Engine::start`],
//! [`Engine::cancel`]); inputs (`handle_*`, each taking `now`); and outputs
//! ([`Engine::poll_action`], [`Engine::poll_timeout`]).
//!
//! **After every command or input, drain [`Engine::poll_action`] until it returns `None`
//! before the next input.** Then wait for whichever comes first: the next socket event or
//! the instant [`Engine::poll_timeout`] names, which you report with
//! [`Engine::handle_timeout`]. A driver is this loop:
//!
//! ```text
//! loop {
//!     while let Some(action) = engine.poll_action() {
//!         match action {
//!             OpenBrowser { url, .. }             => launch the browser with `url` as an argument
//!             Respond { conn, bytes, .. }         => write `bytes`, close `conn`
//!             Close { conn }                      => close `conn`
//!             SendTokenRequest { exchange, request, .. }
//!                                                 => send it (see `http1`), later
//!                                                    handle_token_response / handle_token_failure
//!             FetchKeys { id, request }           => send it, later handle_keys_response /
//!                                                    handle_keys_failure (ID tokens only)
//!             RequestDeviceCode { exchange, request, .. }
//!                                                 => as SendTokenRequest (device logins)
//!             ShowUserCode { authorization, .. }  => show the user code and where to enter it
//!             Persist { flow, tokens }            => store, later handle_persisted
//!             Finished { flow, result }           => hand the result to the application
//!         }
//!     }
//!     wait for: accept → handle_accept, bytes → handle_bytes, EOF → handle_eof,
//!               poll_timeout() reached → handle_timeout
//! }
//! ```
//!
//! The inputs return nothing about the flow; everything observable comes out of
//! `poll_action`. Misuse by the driver (an id the engine never issued) is a `debug_assert!`
//! and otherwise ignored; answers that arrive too late (a token response after the flow
//! timed out) are ignored silently.
//!
//! ## A whole flow with literal bytes
//!
//! ```
//! use std::time::{Instant, SystemTime};
//! use latchkey::http1::ResponseReader;
//! use latchkey::{Action, Config, Engine, Landing, Provider};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = Provider::builder(
//!     "https://idp.example/authorize",
//!     "https://idp.example/token",
//!     "my-extension",
//! )
//! .scopes(["email"]) // with "openid", the ID token is verified too: see `oidc`
//! .issuer("https://idp.example")
//! .build()?;
//! let config = Config::builder(provider)
//!     .redirect_uri("127.0.0.1", 8080, "/callback")
//!     .on_success(Landing::Redirect("docker-desktop://dashboard/open".into()))
//!     .build()?;
//! let mut engine = Engine::new(config)?;
//! let now = Instant::now();
//!
//! // 1. Start. Real drivers fill the entropy from the operating system.
//! let flow = engine.start(now, [42; latchkey::ENTROPY_LEN])?;
//! let Some(Action::OpenBrowser { url, .. }) = engine.poll_action() else { unreachable!() };
//! assert!(url.starts_with("https://idp.example/authorize?response_type=code&client_id=my-extension"));
//! assert!(url.contains("&code_challenge_method=S256"));
//! let state = url.split("&state=").nth(1).and_then(|s| s.split('&').next()).unwrap();
//!
//! // 2. The browser comes back, its request split across two reads.
//! let conn = engine.handle_accept(now).expect("below the connection cap");
//! let request = format!(
//!     "GET /callback?code=SplxlOBeZQQYbYS6WxSbIA&state={state}&iss=https%3A%2F%2Fidp.example HTTP/1.1\r\n\
//!      Host: 127.0.0.1:8080\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Dest: document\r\n\r\n"
//! );
//! let (first, second) = request.as_bytes().split_at(20);
//! engine.handle_bytes(now, conn, first);
//! assert!(engine.poll_action().is_none());
//! engine.handle_bytes(now, conn, second);
//! let Some(Action::SendTokenRequest { exchange, request, .. }) = engine.poll_action() else {
//!     unreachable!()
//! };
//! let request = request.finish(SystemTime::now())?; // a client assertion, if any, is signed now
//! assert_eq!(request.uri(), "https://idp.example/token");
//! let body = String::from_utf8(request.into_body())?;
//! assert!(body.starts_with("grant_type=authorization_code&code=SplxlOBeZQQYbYS6WxSbIA"));
//!
//! // 3. The token endpoint answers; the reader takes its bytes as they come.
//! let json = r#"{"access_token":"2YotnFZFEjr1zCsicMWpAA","token_type":"Bearer","expires_in":3600}"#;
//! let raw = format!(
//!     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n\
//!      Content-Length: {}\r\n\r\n{json}",
//!     json.len()
//! );
//! let mut reader = ResponseReader::new(1 << 20);
//! let response = reader.read(raw.as_bytes())?.expect("complete response");
//! engine.handle_token_response(now, SystemTime::now(), exchange, response);
//!
//! // 4. Store the tokens; only then is the browser redirected.
//! let Some(Action::Persist { flow: persisted, tokens }) = engine.poll_action() else {
//!     unreachable!()
//! };
//! assert_eq!(persisted, flow);
//! assert_eq!(format!("{tokens:?}").contains("2YotnFZFEjr1zCsicMWpAA"), false);
//! assert!(engine.poll_action().is_none(), "the browser waits for the store");
//! engine.handle_persisted(now, flow, Ok(()));
//! let Some(Action::Respond { status, bytes, .. }) = engine.poll_action() else { unreachable!() };
//! assert_eq!(status, 303);
//! assert!(bytes.starts_with(b"HTTP/1.1 303 See Other\r\nLocation: docker-desktop://dashboard/open\r\n"));
//! let Some(Action::Finished { result: Ok(tokens), .. }) = engine.poll_action() else {
//!     unreachable!()
//! };
//! assert!(tokens.expires_at().is_some());
//! assert!(engine.poll_action().is_none());
//! # Ok(())
//! # }
//! ```
//!
//! ## Many users, several providers
//!
//! One engine serves any number of flows at once, each found by its `state`.
//! [`Engine::start_with`] takes [`FlowOptions`]: another [`Provider`] (each flow is judged
//! only against its own provider's issuer and token endpoint), and an owner key, so that a
//! user who starts a second login cancels the first.
//!
//! ## When the UI receives the redirect
//!
//! Some embedders never see the browser's request: their UI is the redirect target and
//! forwards what it received. [`Engine::handle_redirect`] validates that URI or query exactly
//! like the loopback callback and answers with a [`Rejection`] instead of a page.
//!
//! When the provider should send the browser to the application itself rather than to a
//! loopback port, give the registered URI to [`ConfigBuilder::app_redirect_uri`] (RFC 8252
//! §7.1; Docker Desktop's `docker-desktop://dashboard/extension-tab?extensionId=…` is one):
//! authorization and token requests carry it verbatim, no port is needed
//! ([`Config::listens`] is `false`), and the deep link the UI receives goes to
//! [`Engine::handle_redirect`].
//!
//! ## Where no browser can be opened: [`device`]
//!
//! A user on an SSH session, in a container or on a build agent signs in on another device:
//! [`Engine::start_device`] asks the provider's device authorization endpoint for a user
//! code ([`Action::RequestDeviceCode`]), hands it out with [`Action::ShowUserCode`], and
//! polls the token endpoint on its own timers, never faster than the provider allows (S51).
//! The tokens are verified, stored and handed out as after a browser login. An engine for
//! device logins only needs no listener and no port. The [`device`] module has the polling
//! rules and a whole device login with literal bytes.
//!
//! When a browser is available on another machine but the provider has no device endpoint,
//! the user can paste the address the browser ended on (the callback that could not reach
//! this machine's port) into the program, which hands it to [`Engine::handle_redirect`]:
//! judged exactly like a callback on the port, and sharing its single use (S53).
//!
//! ## Many replicas: [`directory`]
//!
//! A backend behind a load balancer starts a login on one replica and receives its
//! callback on another. Built with [`ConfigBuilder::flow_directory`] and a web redirect
//! URI ([`ConfigBuilder::web_redirect_uri`]), an engine hands each login started with
//! [`FlowOptions::shared`] to a shared store first ([`Action::ShareFlow`]), and a callback
//! for a login it does not hold takes the record from there ([`Action::TakeFlow`], one
//! atomic take: one token request however many replicas receive the callback) and adopts
//! the login; the replica that started it learns the outcome
//! ([`Action::AnnounceOutcome`], [`Engine::handle_outcome`]). The [`directory`] module has
//! the rules (S54–S58) and both replicas' bytes. A [`Session`] on a store shared by
//! replicas refreshes under the store's lock, with a fence
//! ([`SessionOptions::shared_refresh`]).
//!
//! ## After the login: [`Session`]
//!
//! An access token lives about an hour; a program that logged a user in once must keep
//! working for weeks. A [`Session`] looks after the tokens one login stored: it hands out
//! valid ones, refreshes them once for any number of waiting callers (RFC 6749 §6), stores
//! fresh tokens before anyone sees them, keeps a rotated refresh token that the store
//! refused, deletes tokens whose refresh token the provider refuses (S42), and logs out
//! (RFC 7009; S44). It has the engine's calling contract: commands answered later by an
//! action naming the call, every store operation and request named by an id its answer
//! carries, deadlines owned by the session, and the same drain rule. The rules and a diagram
//! are in the [`session`] module.
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use latchkey::http1::ResponseReader;
//! use latchkey::{Provider, Purpose, SaveReason, Session, SessionAction, TokenSet};
//! use secrecy::{ExposeSecret, SecretString};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = Provider::builder("https://idp.example/authorize", "https://idp.example/token", "cli")
//!     .revocation_endpoint("https://idp.example/revoke")
//!     .build()?;
//! let mut session = Session::new(provider);
//! let (now, wall) = (Instant::now(), SystemTime::now());
//!
//! // A caller asks for tokens; the session reads the store first.
//! let call = session.tokens(now);
//! let Some(SessionAction::Load { op }) = session.poll_action() else { unreachable!() };
//! // What is stored expires in 30 s: within the 60-second margin.
//! let stored = TokenSet::new(SecretString::from("old-access"))
//!     .with_refresh_token(SecretString::from("tGzv3JOkF0XG5Qx2TlKWIA"))
//!     .with_expires_at(wall + Duration::from_secs(30));
//! session.handle_loaded(now, wall, op, Ok(Some(stored)));
//!
//! // So it refreshes, with exactly these bytes.
//! let Some(SessionAction::Send { id, purpose: Purpose::Refresh, request }) = session.poll_action()
//! else { unreachable!() };
//! let request = request.finish(wall)?; // a client assertion, if any, is signed now
//! assert_eq!(request.uri(), "https://idp.example/token");
//! assert_eq!(request.body(), b"grant_type=refresh_token&refresh_token=tGzv3JOkF0XG5Qx2TlKWIA&client_id=cli");
//! // Anyone asking meanwhile joins this refresh: no second request.
//! let second = session.tokens(now);
//! assert!(session.poll_action().is_none());
//!
//! // The provider answers, rotating the refresh token.
//! let json = r#"{"access_token":"new-access","token_type":"Bearer","expires_in":3600,"refresh_token":"8xLOxBtZp8"}"#;
//! let raw = format!(
//!     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n\
//!      Content-Length: {}\r\n\r\n{json}",
//!     json.len()
//! );
//! let response = ResponseReader::new(1 << 20).read(raw.as_bytes())?.expect("complete");
//! session.handle_response(now, wall, id, response);
//!
//! // Stored before anyone sees them (S42)…
//! let Some(SessionAction::Save { op, tokens, reason }) = session.poll_action() else { unreachable!() };
//! assert_eq!(reason, SaveReason::Refreshed { rotated: true });
//! assert!(session.poll_action().is_none(), "the callers wait for the store");
//! session.handle_saved(now, wall, op, Ok(()));
//! // …then handed to both callers.
//! for expected in [call, second] {
//!     let Some(SessionAction::Tokens { call, result: Ok(fresh) }) = session.poll_action() else {
//!         unreachable!()
//!     };
//!     assert_eq!((call, fresh.access_token().expose_secret()), (expected, "new-access"));
//! }
//!
//! // Logging out: the refresh token is revoked first, then the access token, then the
//! // stored tokens are deleted whatever the answers (S44).
//! let call = session.logout(now);
//! let Some(SessionAction::Load { op }) = session.poll_action() else { unreachable!() };
//! session.handle_loaded(now, wall, op, Ok(Some(tokens)));
//! let Some(SessionAction::Send { id, request, .. }) = session.poll_action() else { unreachable!() };
//! let request = request.finish(wall)?; // a client assertion, if any, is signed now
//! assert_eq!(request.uri(), "https://idp.example/revoke");
//! assert_eq!(request.body(), b"token=8xLOxBtZp8&token_type_hint=refresh_token&client_id=cli");
//! let ok = ResponseReader::new(1024).read(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?.expect("complete");
//! session.handle_response(now, wall, id, ok.clone());
//! let Some(SessionAction::Send { id, request, .. }) = session.poll_action() else { unreachable!() };
//! let request = request.finish(wall)?; // a client assertion, if any, is signed now
//! assert_eq!(request.body(), b"token=new-access&token_type_hint=access_token&client_id=cli");
//! session.handle_response(now, wall, id, ok);
//! let Some(SessionAction::Delete { op, .. }) = session.poll_action() else { unreachable!() };
//! session.handle_deleted(now, op, Ok(()));
//! let Some(SessionAction::LoggedOut { call: done, result: Ok(report) }) = session.poll_action() else {
//!     unreachable!()
//! };
//! assert_eq!(done, call);
//! assert!(report.had_tokens && report.fully_revoked());
//! # Ok(())
//! # }
//! ```
//!
//! ## Who signed in: [`oidc`]
//!
//! With `openid` among a provider's scopes, every login sends a fresh `nonce`, and the ID
//! token of its code exchange is verified before anything is stored: signature with a key
//! of the provider's key set, issuer, audience, times, nonce, `at_hash` (S46–S48). The
//! engine asks for the key set with [`Action::FetchKeys`] when it needs it, keeps it ten
//! minutes and fetches again for a key it does not know; any number of logins wait for one
//! fetch. The verified claims become the tokens' [`TokenSet::identity`]. A refreshed ID
//! token must name the same user (S49). Signatures are checked by a
//! [`CryptoProvider`](oidc::CryptoProvider) the application supplies
//! ([`ProviderBuilder::crypto`]); the [`oidc`] module has the rules and an example with
//! literal bytes.
//!
//! ## Keys that sign for the client: [`keys`] and [`dpop`]
//!
//! [`keys::PrivateKey`] reads a key file (PEM, a private JWK or DER) and refuses weak or
//! mismatched keys at configuration time (S63); a [`keys::Signer`] is the key loaded by the
//! [`CryptoProvider`](crypto::CryptoProvider), which signs and supplies randomness as
//! well as verifying. A signer makes `private_key_jwt` client assertions (RFC 7523) and,
//! through [`dpop::Proof`], DPoP proofs (RFC 9449) for any request: method, URI without
//! query or fragment, time, a fresh `jti`, the provider's nonce and the hash of the token
//! presented (S61). Both modules have examples with literal bytes.
//!
//! A client without a shared secret sets [`ProviderBuilder::client_key`]
//! ([`ClientAuth::PrivateKeyJwt`]): every token, refresh, revocation and device
//! authorization request then carries an assertion (`iss` = `sub` = the client id, `aud` the
//! issuer, a minute of life, a fresh `jti`; S63). An assertion says when it was made, so the
//! machines emit their requests as [`ProviderRequest`]s and the driver signs them as they
//! leave, with its wall-clock time: [`ProviderRequest::finish`]. For other clients `finish`
//! only unwraps the request.
//!
//! With [`ProviderBuilder::dpop`], every login's tokens are bound to a key pair of its own
//! (RFC 9449): its thumbprint goes into the authorization request, each token, refresh and
//! revocation request gets a proof as it is finished, a provider asking for a nonce gets
//! one retry with it (S62), bearer tokens are refused, and the key is kept with the tokens
//! ([`TokenSet::dpop_key`]) for their refreshes and the application's own requests. The
//! [`dpop`] module has the rules.
//!
//! With [`ProviderBuilder::push_authorization_requests`] (PAR, RFC 9126; discovery turns it
//! on when the provider's metadata requires it), a login's authorization parameters go to
//! the provider first ([`Action::PushAuthorization`], authenticated as token requests are)
//! and [`Action::OpenBrowser`] follows the provider's answer with a URL that carries only
//! `client_id` and the `request_uri`.
//!
//! ## Well-known providers
//!
//! [`presets`] describes Google, GitHub, Microsoft Entra, Okta, Auth0, Keycloak and GitLab:
//! endpoints (the device authorization endpoint too), issuer, revocation endpoint, quirks,
//! and what to register at each.
//!
//! ## Discovery
//!
//! [`Discovery`] finds an issuer's metadata with the same contract: it asks for both
//! well-known documents at once (OpenID Connect's, then RFC 8414's), refuses any document
//! whose `issuer` differs by a single byte from the issuer it was fetched for (S9), and
//! merges them, so that a member only one of them lists (a revocation endpoint, say) is
//! found. [`Metadata::provider`] turns the result into a provider description: endpoints,
//! revocation and device authorization endpoints, whether `iss` is mandatory and PKCE S256
//! support.
//!
//! ## Security
//!
//! Every rule latchkey enforces has an id in the project's security requirements,
//! and a test carrying that id. In short: PKCE S256 and a 256-bit `state` on every flow;
//! callbacks accepted only with a pending flow's `state`, once, before expiry, with exactly
//! one of each parameter and the right `iss`; a browser-facing port that answers only
//! `GET` of the callback path for its own `Host`, with static pages and strict headers; a
//! token request with exactly one client authentication method; secrets that never appear in
//! `Debug` output or URLs.
//!
//! ## Logging
//!
//! With the `tracing` feature the engine emits `tracing` events at debug level, target
//! `latchkey::engine`: each flow's start, every phase change (callback accepted, tokens
//! received, stored) with the flow id, each flow's outcome, and every browser request it
//! refuses with the reason. Events carry ids, phases, statuses and error kinds, never a
//! secret (S41). The drivers log each step of a login, refresh and revocation at info level
//! whether or not this feature is on.
//!
//! ## Talking HTTP yourself
//!
//! [`Action::SendTokenRequest`] carries an [`http::Request`], so any HTTP client can send it.
//! Drivers that own a plain TCP or TLS stream use [`http1::write_request`] and
//! [`http1::ResponseReader`] and only move bytes.
#![forbid(unsafe_code)]

/// A `tracing` event with the `tracing` feature; nothing without it. Arguments must be
/// used elsewhere too, or be plain expressions, so both builds compile without warnings.
macro_rules! trace_event {
    ($($event:tt)+) => {{
        #[cfg(feature = "tracing")]
        tracing::debug!(target: "latchkey::engine", $($event)+);
    }};
}

/// A numeric id type: unique within the machine that issued it, ordered by issue.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(std::num::NonZeroU64);

        impl $name {
            /// The raw number, unique within the machine that issued it (for logs and maps);
            /// never 0, so that an `Option` of an id is no larger than the id.
            pub fn get(self) -> u64 {
                self.0.get()
            }

            /// The id numbered `count` by a machine's counter, which starts at 1 (0 is
            /// taken as 1, never issued by a counter).
            #[allow(dead_code)]
            pub(crate) fn issued(count: u64) -> $name {
                $name(std::num::NonZeroU64::new(count).unwrap_or(std::num::NonZeroU64::MIN))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

mod callback;
mod config;
pub mod crypto;
mod der;
pub mod device;
pub mod directory;
pub mod discovery;
pub mod dpop;
mod engine;
mod error;
mod exchange;
mod form;
mod grammar;
pub mod http1;
pub mod keys;
mod machine;
pub mod oidc;
mod outgoing;
mod pages;
mod par;
mod pkce;
pub mod presets;
mod refresh;
mod revoke;
pub mod session;
mod token;
mod url;

pub use callback::Rejection;
pub use config::{
    AssertionAudience, ClientAuth, Config, ConfigBuilder, ConfigError, Landing, Limits, Provider,
    ProviderBuilder,
};
pub use device::DeviceAuthorization;
pub use discovery::{Discovery, DiscoveryAction, DiscoveryError, Metadata, MetadataError};
pub use engine::{Action, ConnId, Engine, ExchangeId, FlowId, FlowOptions, StartError, TakeId};
pub use error::{
    BadTokenResponse, CallbackDefect, DeviceError, FlowError, ProviderError, Step, StoreError,
    TransportError, TransportErrorKind,
};
pub use machine::Machine;
pub use oidc::{IdTokenError, Identity, KeySetError};
pub use outgoing::ProviderRequest;
pub use pkce::ENTROPY_LEN;
pub use refresh::RefreshError;
pub use revoke::{RevocationError, TokenKind};
pub use session::{
    CallId, DeleteReason, LogoutReport, NotRevoked, Purpose, RequestId, SaveReason, Session,
    SessionAction, SessionError, SessionOptions, StoreOpId,
};
pub use token::{ScopeChange, TokenSet, TokenType};
pub use url::{UrlError, is_loopback_host};
