//! The extension's API, answered on the Unix socket Docker Desktop forwards the UI's
//! `ddClient.extension.vm.service` calls to:
//!
//! | Request | Answer |
//! |---|---|
//! | `POST /login` | `{"authorize_url": …}`: open it with `ddClient.host.openExternal`. A new login replaces one in progress. |
//! | `GET /status` | `{"logged_in", "identity", "expires_at", "scope", "refresh_token", "login_in_progress", "last_error", "sample_api"}`; `identity` is who signed in (`iss`, `sub`, and `email`, `email_verified`, `name`, `preferred_username` when known), from the verified ID token, never a token |
//! | `GET /token` | `{"access_token", "token_type", "expires_at"}`, refreshed first when it expires within a minute; `401 login_required` |
//! | `POST /logout` | revokes at the provider, deletes the stored tokens: `{"had_tokens", "revoked", "failed", "not_revoked"}` |
//! | `POST /callback` | `{"url": …}`: the deep link (or its query) the UI was opened with, for an application redirect URI |
//!
//! Tokens live in the backend's token file only; the UI gets an access token when it asks
//! for one and never stores it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use latchkey::SessionError;
use latchkey::{FlowError, FlowOptions, RefreshError, TokenSet};
use latchkey_io::service::{Error, Login, LoginEvent};
use latchkey_io::store::{DEFAULT_KEY, FileStore, TokenStore};
use latchkey_smol::{Service, TokenSource};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::http::{Request, Response};

/// Everything the API works with.
pub struct Backend {
    pub service: Service,
    pub source: TokenSource,
    pub store: Arc<FileStore>,
    pub sample_api: Option<String>,
    state: Mutex<LoginState>,
}

/// The login in progress, if any, and how the last one ended.
#[derive(Default)]
struct LoginState {
    pending: Option<Arc<Login>>,
    last_error: Option<Value>,
}

impl Backend {
    pub fn new(
        service: Service,
        source: TokenSource,
        store: Arc<FileStore>,
        sample_api: Option<String>,
    ) -> Arc<Backend> {
        Arc::new(Backend {
            service,
            source,
            store,
            sample_api,
            state: Mutex::new(LoginState::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, LoginState> {
        // Every update is one assignment: a panic cannot leave it half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers one request.
    pub async fn handle(self: &Arc<Backend>, request: &Request) -> Response {
        match (request.method.as_str(), request.path.as_str()) {
            ("POST", "/login") => self.login().await,
            ("GET", "/status") => self.status().await,
            ("GET", "/token") => self.token().await,
            ("POST", "/logout") => self.logout().await,
            ("POST", "/callback") => self.callback(&request.body).await,
            (_, "/login" | "/status" | "/token" | "/logout" | "/callback") => {
                Response::error(405, "method_not_allowed", "wrong method for this path")
            }
            _ => Response::error(404, "not_found", "no such endpoint"),
        }
    }

    async fn login(self: &Arc<Backend>) -> Response {
        // The owner makes the engine end an earlier login in progress (superseded).
        let login = match self
            .service
            .start(FlowOptions::new().owner(DEFAULT_KEY.to_owned()))
        {
            Ok(login) => Arc::new(login),
            Err(error) => return Response::error(503, "unavailable", error.to_string()),
        };
        let url = login.url().unwrap_or_default().to_owned();
        {
            let mut state = self.state();
            state.pending = Some(Arc::clone(&login));
            state.last_error = None;
        }
        info!(flow = login.flow().get(), "login started for the UI");
        // Weak: a login waiting for its browser must not keep the backend from stopping.
        smol::spawn(follow(Arc::downgrade(self), login)).detach();
        Response::new(200, json!({ "authorize_url": url }))
    }

    /// Stops the login service gracefully (a login in progress is cancelled, and its
    /// browser, if waiting, gets the failure page), once no request holds the backend.
    pub async fn shutdown(self: Arc<Backend>) {
        match Arc::try_unwrap(self) {
            Ok(backend) => backend.service.shutdown().await,
            Err(_) => warn!("API requests still in flight; stopping without waiting"),
        }
    }

    async fn status(&self) -> Response {
        let store = Arc::clone(&self.store);
        let tokens = match smol::unblock(move || store.load(DEFAULT_KEY)).await {
            Ok(tokens) => tokens,
            Err(error) => return Response::error(500, "store", error.to_string()),
        };
        let (login_in_progress, last_error) = {
            let state = self.state();
            (state.pending.is_some(), state.last_error.clone())
        };
        let mut status = json!({
            "logged_in": tokens.is_some(),
            "login_in_progress": login_in_progress,
            "last_error": last_error,
            "sample_api": self.sample_api,
        });
        if let Some(tokens) = &tokens {
            status["expires_at"] = tokens.expires_at().map(unix_seconds).into();
            status["scope"] = tokens.scope().into();
            status["refresh_token"] = tokens.refresh_token().is_some().into();
            status["identity"] = tokens
                .identity()
                .map_or(Value::Null, |identity| Value::Object(identity.summary()));
        }
        Response::new(200, status)
    }

    async fn token(&self) -> Response {
        match self.source.tokens().await {
            Ok(tokens) => Response::new(200, token_body(&tokens)),
            Err(error) => source_error(&error),
        }
    }

    async fn logout(&self) -> Response {
        let pending = self.state().pending.take();
        if let Some(login) = pending {
            login.cancel();
        }
        let report = match self.source.logout().await {
            Ok(report) => report,
            Err(error) => return source_error(&error),
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

    async fn callback(&self, body: &[u8]) -> Response {
        let url = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|body| body.get("url").and_then(Value::as_str).map(str::to_owned));
        let Some(url) = url else {
            return Response::error(
                400,
                "bad_request",
                "send {\"url\": the deep link or its query}",
            );
        };
        match self.service.redirect(&url) {
            Ok(flow) => {
                info!(flow = flow.get(), "callback forwarded by the UI accepted");
                Response::new(202, json!({"accepted": true}))
            }
            Err(Error::Callback(rejection)) => {
                warn!(%rejection, "callback forwarded by the UI refused");
                Response::error(400, "callback_refused", rejection.to_string())
            }
            Err(error) => Response::error(503, "unavailable", error.to_string()),
        }
    }
}

/// Waits for `login`'s outcome and records it, if the backend still runs.
async fn follow(backend: Weak<Backend>, login: Arc<Login>) {
    let flow = login.flow();
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
    let current = state.pending.as_ref().is_some_and(|p| p.flow() == flow);
    if !current {
        return; // superseded by a newer login, or cancelled by a logout
    }
    state.pending = None;
    match result {
        Ok(_) => info!(flow = flow.get(), "logged in"),
        Err(error) => {
            warn!(flow = flow.get(), %error, "login failed");
            state.last_error = Some(json!({
                "error": flow_error_kind(&error),
                "message": error.to_string(),
            }));
        }
    }
}

/// What `GET /token` answers: the access token and what the UI needs to use it.
fn token_body(tokens: &TokenSet) -> Value {
    json!({
        "access_token": tokens.access_token().expose_secret(),
        "token_type": tokens.token_type().as_str(),
        "expires_at": tokens.expires_at().map(unix_seconds),
    })
}

/// A token source's failure as an answer.
fn source_error(error: &SessionError) -> Response {
    let message = error.to_string();
    match error {
        _ if error.login_required() => Response::error(401, "login_required", message),
        SessionError::Transport(_) => Response::error(502, "provider_unreachable", message),
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
        FlowError::Transport(_) => "provider_unreachable",
        FlowError::Storage(_) => "store",
        FlowError::Cancelled | FlowError::Superseded => "cancelled",
        _ => "invalid_response",
    }
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
        assert_eq!(source_error(&SessionError::NotLoggedIn).status, 401);
        let transport = SessionError::Transport(latchkey::TransportError::new(
            latchkey::TransportErrorKind::Connect,
            "refused",
        ));
        assert_eq!(source_error(&transport).status, 502);
    }
}
