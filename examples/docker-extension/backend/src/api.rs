//! The extension's API, answered on the Unix socket Docker Desktop forwards the UI's
//! `ddClient.extension.vm.service` calls to. No answer ever holds a token: the backend keeps
//! them, and calls the APIs the settings allow for the UI ([`crate::proxy`]).
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /status` | the provider's state, who is signed in, the login in progress, the last error ([`Backend::status`]) |
//! | `POST /login` | `{"redirect_uri"}` (the host binary's, for a loopback redirect) → `{"authorize_url", "redirect_uri", "expires_in"}`; a new login replaces one in progress |
//! | `POST /callback` | `{"url"}`: a callback's query (from the host binary) or the deep link → `202`; `400 callback_refused`; `409 no_login` |
//! | `POST /cancel` | ends the login in progress → `{"cancelled"}` |
//! | `POST /logout` | ends a login in progress, revokes at the provider, deletes the tokens → `{"had_tokens", "revoked", "failed", "not_revoked"}` |
//! | `POST /retry` | tries to reach the provider now instead of at the next back-off step → `202` |
//! | `POST /api` | `{"url", "method", "headers", "body"}` → the API's `{"status", "headers", "body"}`, called with the access token ([`crate::proxy`]) |
//!
//! Errors are `{"error": kind, "message": words for a person}` with a fitting status.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use latchkey::{FlowError, FlowOptions, Provider, RefreshError, SessionError};
use latchkey_io::service::{Error, Login, LoginEvent, ServiceOptions};
use latchkey_io::store::{DEFAULT_KEY, FileStore, TokenStore};
use latchkey_io::transport::Transport;
use latchkey_smol::{Service, Smol, TokenSource};
use serde_json::{Value, json};
use smol::Timer;
use tracing::{info, warn};

use crate::config::{ProviderError, Redirect, Settings};
use crate::http::{Request, Response};
use crate::proxy;

/// How long a login waits for its callback (the engine's default flow lifetime).
const LOGIN_LIFETIME: Duration = Duration::from_secs(600);
/// The first wait before discovery is tried again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two discovery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Everything the API works with.
pub struct Backend {
    /// `None` when the settings could not be read: the status then says why.
    settings: Option<Arc<Settings>>,
    transport: Option<Transport>,
    store: Arc<FileStore>,
    state: Mutex<State>,
    /// Wakes the discovery loop for an attempt now.
    retry: async_channel::Sender<()>,
    retries: async_channel::Receiver<()>,
}

/// What the backend knows, changed only in single assignments under the lock.
struct State {
    provider: Upstream,
    login: Option<Pending>,
    /// Numbers logins, so that a finished login can tell whether it is still the current one.
    serial: u64,
    last_error: Option<Value>,
}

/// The identity provider, as far as the backend got with it.
enum Upstream {
    /// Discovery is under way (`attempt` 0 is the first).
    Connecting { attempt: u32 },
    /// Ready: logins and refreshes can go ahead.
    Ready {
        provider: Provider,
        source: TokenSource,
    },
    /// The last attempt failed; the next is at `retry_at` (or on `POST /retry`).
    Unreachable {
        kind: &'static str,
        message: String,
        attempts: u32,
        retry_at: SystemTime,
    },
    /// The settings cannot work; only new settings help.
    Misconfigured { message: String },
}

/// The login in progress.
struct Pending {
    serial: u64,
    login: Arc<Login>,
    /// The service of this login alone (its redirect URI is this login's).
    service: Service,
    redirect_uri: String,
    expires_at: SystemTime,
}

impl Backend {
    /// A backend for `settings` (or for none, with `misconfigured` saying why), its HTTP
    /// requests sent by `transport`.
    pub fn new(
        settings: Result<Arc<Settings>, String>,
        transport: Result<Transport, String>,
        store: Arc<FileStore>,
    ) -> Arc<Backend> {
        // Settings that were read stay known even when they cannot work, so that the status
        // still says which redirect and APIs they name.
        let (provider, transport) = match (&settings, transport) {
            (Ok(_), Ok(transport)) => (Upstream::Connecting { attempt: 0 }, Some(transport)),
            (Err(message), _) => (
                Upstream::Misconfigured {
                    message: message.clone(),
                },
                None,
            ),
            (Ok(_), Err(message)) => (Upstream::Misconfigured { message }, None),
        };
        let settings = settings.ok();
        let (retry, retries) = async_channel::bounded(1);
        Arc::new(Backend {
            settings,
            transport,
            store,
            state: Mutex::new(State {
                provider,
                login: None,
                serial: 0,
                last_error: None,
            }),
            retry,
            retries,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a plain assignment: a panic cannot leave one half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reaches the provider: discovers it (or builds it from the given endpoints), trying
    /// again with back-off (1 s, doubling, at most a minute; at once on `POST /retry`) while
    /// it is unreachable. Returns when it is ready, or when the settings cannot work.
    pub async fn connect(self: Arc<Backend>) {
        let (Some(settings), Some(transport)) = (self.settings.clone(), self.transport.clone())
        else {
            return;
        };
        let mut attempt: u32 = 0;
        loop {
            {
                let mut state = self.state();
                if !matches!(
                    state.provider,
                    Upstream::Unreachable { .. } | Upstream::Connecting { .. }
                ) {
                    return;
                }
                state.provider = Upstream::Connecting { attempt };
            }
            match settings.provider(&transport).await {
                Ok(provider) => {
                    let source = TokenSource::new(
                        Smol,
                        provider.clone(),
                        Arc::clone(&self.store) as _,
                        transport.clone(),
                    );
                    info!(attempts = attempt + 1, "the provider is ready");
                    self.state().provider = Upstream::Ready { provider, source };
                    return;
                }
                Err(ProviderError::Misconfigured(message)) => {
                    warn!(reason = %message, "the settings cannot work");
                    self.state().provider = Upstream::Misconfigured { message };
                    return;
                }
                Err(error) => {
                    let delay = backoff(attempt);
                    let (kind, message) = match error {
                        ProviderError::Unreachable(message) => ("provider_unreachable", message),
                        ProviderError::BadMetadata(message) => ("provider_metadata", message),
                        ProviderError::Misconfigured(message) => ("misconfigured", message),
                    };
                    warn!(reason = %message, retry_in = ?delay, "the provider is not ready");
                    self.state().provider = Upstream::Unreachable {
                        kind,
                        message,
                        attempts: attempt + 1,
                        retry_at: SystemTime::now() + delay,
                    };
                    attempt = attempt.saturating_add(1);
                    let _ = self.retries.try_recv();
                    futures_lite::future::or(
                        async {
                            Timer::after(delay).await;
                        },
                        async {
                            let _ = self.retries.recv().await;
                        },
                    )
                    .await;
                }
            }
        }
    }

    /// Answers one request.
    pub async fn handle(self: &Arc<Backend>, request: &Request) -> Response {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/status") => self.status().await,
            ("POST", "/login") => self.login(&request.body),
            ("POST", "/callback") => self.callback(&request.body),
            ("POST", "/cancel") => self.cancel(),
            ("POST", "/logout") => self.logout().await,
            ("POST", "/retry") => self.retry(),
            ("POST", "/api") => self.api(&request.body).await,
            (_, "/status" | "/login" | "/callback" | "/cancel" | "/logout" | "/retry" | "/api") => {
                Response::error(405, "method_not_allowed", "wrong method for this path")
            }
            _ => Response::error(404, "not_found", "no such endpoint"),
        }
    }

    /// `GET /status`:
    ///
    /// ```json
    /// {"provider": {"state": "ready", "issuer": "https://idp.example"},
    ///  "redirect": {"kind": "loopback", "uri": "http://127.0.0.1/callback",
    ///               "landing": "docker-desktop://dashboard/open"},
    ///  "logged_in": true, "identity": {"sub": "…", "email": "…"},
    ///  "expires_at": 1767225600, "scope": "openid email", "refresh_token": true,
    ///  "login": null, "login_in_progress": false, "last_error": null,
    ///  "sample_api": "https://idp.example/userinfo", "api_origins": ["https://idp.example"]}
    /// ```
    ///
    /// `provider.state` is `connecting`, `ready`, `unreachable` (with `error`, `message`,
    /// `attempts` and `retry_in` seconds) or `misconfigured` (with `message`); `login` is
    /// `{"redirect_uri", "expires_in"}` while one waits for its callback.
    async fn status(&self) -> Response {
        let store = Arc::clone(&self.store);
        let tokens = smol::unblock(move || store.load(DEFAULT_KEY)).await;
        let now = SystemTime::now();
        let mut status = {
            let state = self.state();
            json!({
                "provider": upstream_json(&state.provider, now),
                "login": state.login.as_ref().map(|pending| json!({
                    "redirect_uri": pending.redirect_uri,
                    "expires_in": seconds_until(pending.expires_at, now),
                })),
                "login_in_progress": state.login.is_some(),
                "last_error": state.last_error,
            })
        };
        if let Some(settings) = &self.settings {
            if let Some(issuer) = &settings.issuer {
                status["provider"]["issuer"] = json!(issuer);
            }
            status["redirect"] = match &settings.redirect {
                Redirect::Loopback { .. } => json!({
                    "kind": "loopback",
                    "uri": settings.redirect.uri(),
                    "landing": settings.landing,
                }),
                Redirect::App(uri) => json!({"kind": "app", "uri": uri}),
            };
            status["sample_api"] = json!(settings.sample_api);
            status["api_origins"] = json!(settings.api_origins);
        }
        match tokens {
            Ok(tokens) => {
                status["logged_in"] = tokens.is_some().into();
                if let Some(tokens) = &tokens {
                    status["expires_at"] = tokens.expires_at().map(unix_seconds).into();
                    status["scope"] = tokens.scope().into();
                    status["refresh_token"] = tokens.refresh_token().is_some().into();
                    status["identity"] = tokens
                        .identity()
                        .map_or(Value::Null, |identity| Value::Object(identity.summary()));
                }
            }
            Err(error) => {
                status["logged_in"] = false.into();
                status["store_error"] = json!({
                    "error": "store",
                    "message": format!("The token file cannot be read: {error}"),
                });
            }
        }
        Response::new(200, status)
    }

    /// The provider and settings, when the provider is ready; else the answer saying why
    /// not.
    fn ready(&self) -> Result<(Arc<Settings>, Transport, Provider, TokenSource), Response> {
        let (Some(settings), Some(transport)) = (&self.settings, &self.transport) else {
            return Err(not_ready(&self.state().provider));
        };
        match &self.state().provider {
            Upstream::Ready { provider, source } => Ok((
                Arc::clone(settings),
                transport.clone(),
                provider.clone(),
                source.clone(),
            )),
            other => Err(not_ready(other)),
        }
    }

    /// `POST /login`.
    fn login(self: &Arc<Backend>, body: &[u8]) -> Response {
        let (settings, transport, provider, _) = match self.ready() {
            Ok(ready) => ready,
            Err(refusal) => return refusal,
        };
        let asked = serde_json::from_slice::<Value>(body).ok().and_then(|body| {
            body.get("redirect_uri")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let redirect_uri = match (&settings.redirect, asked) {
            (Redirect::App(uri), _) => uri.clone(),
            (loopback, Some(uri)) if loopback.accepts(&uri) => uri,
            (loopback, asked) => {
                let message = match asked {
                    Some(uri) => format!(
                        "{uri} does not fit the registered redirect URI {}",
                        loopback.uri()
                    ),
                    None => format!(
                        "start the host binary first and send the redirect URI it listens \
                         on (registered: {})",
                        loopback.uri()
                    ),
                };
                return Response::error(400, "bad_redirect_uri", message);
            }
        };
        let config = match settings.config(provider, &redirect_uri) {
            Ok(config) => config,
            Err(error) => return Response::error(500, "misconfigured", error.to_string()),
        };
        let options = ServiceOptions::new(Arc::clone(&self.store) as _, transport);
        let service = match latchkey_smol::serve(config, options) {
            Ok(service) => service,
            Err(error) => return Response::error(500, "misconfigured", error.to_string()),
        };
        // The owner: the tokens are stored under the default key, where the token source
        // and the status read them.
        let login = match service.start(FlowOptions::new().owner(DEFAULT_KEY.to_owned())) {
            Ok(login) => Arc::new(login),
            Err(error) => return Response::error(503, "unavailable", error.to_string()),
        };
        let url = login.url().unwrap_or_default().to_owned();
        let replaced = {
            let mut state = self.state();
            state.serial += 1;
            state.last_error = None;
            let serial = state.serial;
            smol::spawn(follow(Arc::downgrade(self), serial, Arc::clone(&login))).detach();
            state.login.replace(Pending {
                serial,
                login,
                service,
                redirect_uri: redirect_uri.clone(),
                expires_at: SystemTime::now() + LOGIN_LIFETIME,
            })
        };
        if let Some(old) = replaced {
            info!("a new login replaces the one in progress");
            end(old);
        }
        info!(redirect_uri, "login started for the UI");
        Response::new(
            200,
            json!({
                "authorize_url": url,
                "redirect_uri": redirect_uri,
                "expires_in": LOGIN_LIFETIME.as_secs(),
            }),
        )
    }

    /// `POST /callback`.
    fn callback(&self, body: &[u8]) -> Response {
        let url = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|body| body.get("url").and_then(Value::as_str).map(str::to_owned));
        let Some(url) = url else {
            return Response::error(
                400,
                "bad_request",
                "send {\"url\": the callback's query or the deep link}",
            );
        };
        let state = self.state();
        let Some(pending) = &state.login else {
            return Response::error(
                409,
                "no_login",
                "No sign-in is waiting for this: it was cancelled, replaced or timed out. \
                 Press Log in to start again.",
            );
        };
        match pending.service.redirect(&url) {
            Ok(_) => {
                info!("callback accepted");
                Response::new(202, json!({"accepted": true}))
            }
            Err(Error::Callback(rejection)) => {
                warn!(%rejection, "callback refused");
                Response::error(400, "callback_refused", rejection.to_string())
            }
            Err(error) => Response::error(503, "unavailable", error.to_string()),
        }
    }

    /// `POST /cancel`.
    fn cancel(&self) -> Response {
        let pending = {
            let mut state = self.state();
            state.last_error = None;
            state.login.take()
        };
        let cancelled = pending.is_some();
        if let Some(pending) = pending {
            info!("login cancelled by the user");
            end(pending);
        }
        Response::new(200, json!({"cancelled": cancelled}))
    }

    /// `POST /retry`.
    fn retry(&self) -> Response {
        let retrying = matches!(
            self.state().provider,
            Upstream::Unreachable { .. } | Upstream::Connecting { .. }
        );
        if retrying {
            let _ = self.retry.try_send(());
        }
        Response::new(202, json!({"retrying": retrying}))
    }

    /// `POST /logout`.
    async fn logout(&self) -> Response {
        if let Some(pending) = self.state().login.take() {
            end(pending);
        }
        let source = match &self.state().provider {
            Upstream::Ready { source, .. } => Some(source.clone()),
            _ => None,
        };
        let Some(source) = source else {
            // Without the provider nothing can be revoked; the tokens are deleted anyway.
            let store = Arc::clone(&self.store);
            let had = smol::unblock(move || {
                let had = store.load(DEFAULT_KEY)?.is_some();
                store.delete(DEFAULT_KEY).map(|()| had)
            })
            .await;
            return match had {
                Ok(had_tokens) => Response::new(
                    200,
                    json!({
                        "had_tokens": had_tokens,
                        "revoked": [],
                        "failed": [],
                        "not_revoked": had_tokens.then_some(
                            "the provider cannot be reached, so the tokens were deleted here \
                             but not revoked"),
                    }),
                ),
                Err(error) => Response::error(500, "store", error.to_string()),
            };
        };
        let report = match source.logout().await {
            Ok(report) => report,
            Err(error) => return session_error(&error),
        };
        let mut revoked = Vec::new();
        let mut failed = Vec::new();
        for (kind, outcome) in &report.revocations {
            match outcome {
                Ok(()) => revoked.push(json!(kind.hint())),
                Err(error) => {
                    failed.push(json!({"token": kind.hint(), "message": error.to_string()}))
                }
            }
        }
        info!(
            had_tokens = report.had_tokens,
            fully_revoked = report.fully_revoked(),
            "logged out"
        );
        Response::new(
            200,
            json!({
                "had_tokens": report.had_tokens,
                "revoked": revoked,
                "failed": failed,
                "not_revoked": report.not_revoked.map(|reason| reason.to_string()),
            }),
        )
    }

    /// `POST /api`.
    async fn api(&self, body: &[u8]) -> Response {
        let (settings, transport, _, source) = match self.ready() {
            Ok(ready) => ready,
            Err(refusal) => return refusal,
        };
        let call = match proxy::Call::parse(body, &settings.api_origins) {
            Ok(call) => call,
            Err(refusal) => return refusal,
        };
        proxy::send(&call, &source, &transport).await
    }

    /// Stops: the login in progress is cancelled (its browser, if it is still waiting,
    /// hears nothing more).
    pub async fn shutdown(&self) {
        let pending = self.state().login.take();
        if let Some(pending) = pending {
            pending.login.cancel();
            pending.service.shutdown().await;
        }
    }
}

/// Ends a login that is no longer wanted, and its service, in the background.
fn end(pending: Pending) {
    pending.login.cancel();
    smol::spawn(pending.service.shutdown()).detach();
}

/// Waits for login `serial`'s outcome and records it, if it is still the current one.
async fn follow(backend: Weak<Backend>, serial: u64, login: Arc<Login>) {
    let result = loop {
        match login.next_event().await {
            Some(LoginEvent::Finished(result)) => break result,
            Some(_) => {}
            None => break Err(FlowError::Cancelled),
        }
    };
    let Some(backend) = backend.upgrade() else {
        return;
    };
    let mut state = backend.state();
    if state.login.as_ref().is_none_or(|p| p.serial != serial) {
        return; // replaced by a newer login, or cancelled
    }
    let Some(finished) = state.login.take() else {
        return;
    };
    match result {
        Ok(_) => info!("logged in"),
        Err(error) => {
            warn!(%error, "login failed");
            state.last_error = Some(json!({
                "error": flow_error_kind(&error),
                "message": flow_error_words(&error),
            }));
        }
    }
    drop(state);
    smol::spawn(finished.service.shutdown()).detach();
}

/// The wait before discovery attempt `attempt + 1`.
fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BACKOFF)
}

fn upstream_json(upstream: &Upstream, now: SystemTime) -> Value {
    match upstream {
        Upstream::Connecting { attempt } => json!({"state": "connecting", "attempts": attempt}),
        Upstream::Ready { .. } => json!({"state": "ready"}),
        Upstream::Unreachable {
            kind,
            message,
            attempts,
            retry_at,
        } => json!({
            "state": "unreachable",
            "error": kind,
            "message": message,
            "attempts": attempts,
            "retry_in": seconds_until(*retry_at, now),
        }),
        Upstream::Misconfigured { message } => {
            json!({"state": "misconfigured", "error": "misconfigured", "message": message})
        }
    }
}

/// The answer to a request that needs the provider while it is not ready.
fn not_ready(upstream: &Upstream) -> Response {
    match upstream {
        Upstream::Misconfigured { message } => Response::error(
            503,
            "misconfigured",
            format!("The extension's settings cannot work: {message}"),
        ),
        Upstream::Unreachable { kind, message, .. } => Response::error(
            503,
            kind,
            format!("The identity provider cannot be reached yet: {message}"),
        ),
        Upstream::Connecting { .. } | Upstream::Ready { .. } => Response::error(
            503,
            "connecting",
            "Still reaching the identity provider; try again in a moment.",
        ),
    }
}

/// A token source's failure as an answer.
pub fn session_error(error: &SessionError) -> Response {
    let message = error.to_string();
    match error {
        _ if error.login_required() => Response::error(
            401,
            "login_required",
            "You are not signed in, or your sign-in has expired: press Log in.",
        ),
        SessionError::Transport(_) => Response::error(
            502,
            "provider_unreachable",
            format!("The identity provider cannot be reached: {message}"),
        ),
        SessionError::Refresh(RefreshError::Rejected { .. } | RefreshError::BadResponse { .. }) => {
            Response::error(502, "refresh_failed", message)
        }
        _ => Response::error(500, "store", message),
    }
}

/// The `error` member for a login that failed.
fn flow_error_kind(error: &FlowError) -> &'static str {
    match error {
        FlowError::Denied(_) => "access_denied",
        FlowError::TimedOut(_) => "timeout",
        FlowError::TokenRejected { .. } => "token_rejected",
        FlowError::PushRejected { .. } => "push_rejected",
        FlowError::Transport(_) => "provider_unreachable",
        FlowError::Storage(_) => "store",
        FlowError::Cancelled | FlowError::Superseded => "cancelled",
        _ => "invalid_response",
    }
}

/// A failed login in words for the person who tried.
fn flow_error_words(error: &FlowError) -> String {
    match error {
        FlowError::Denied(_) => format!("The sign-in was declined at the provider ({error})."),
        FlowError::TimedOut(_) => {
            "The sign-in took too long and expired. Press Log in to try again.".into()
        }
        FlowError::Transport(_) => {
            format!("The identity provider could not be reached to finish signing in: {error}")
        }
        FlowError::Storage(_) => format!("The tokens could not be stored: {error}"),
        _ => format!("The sign-in failed: {error}"),
    }
}

fn seconds_until(at: SystemTime, now: SystemTime) -> u64 {
    at.duration_since(now).map_or(0, |left| left.as_secs())
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_required_is_401_and_the_network_502() {
        assert_eq!(session_error(&SessionError::NotLoggedIn).status, 401);
        let transport = SessionError::Transport(latchkey::TransportError::new(
            latchkey::TransportErrorKind::Connect,
            "refused",
        ));
        assert_eq!(session_error(&transport).status, 502);
    }

    #[test]
    fn the_back_off_doubles_from_a_second_to_a_minute() {
        let waits: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
