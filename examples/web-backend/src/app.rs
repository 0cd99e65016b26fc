//! The HTTP API: one axum router over the login service, the token store and one token
//! source per user.
//!
//! `user` in the query stands in for the application's own session (a cookie, a JWT): a
//! real backend takes it from there, never from the request's parameters. It is the key
//! the user's tokens are stored under in Redis.
//!
//! Every answer is fixed by the service: no request input is echoed back, and nothing the
//! service answers ever carries a token.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::UNIX_EPOCH;

use axum::Router;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use latchkey::directory::DirectoryError;
use latchkey::oidc::UserInfoError;
use latchkey::{FlowError, FlowOptions, Provider, Rejection, SessionError, SessionOptions};
use latchkey_io::source::UserInfoFetchError;
use latchkey_io::store::TokenStore;
use latchkey_io::transport::Transport;
use latchkey_redis::{Redis, RedisTokenStore};
use latchkey_tokio::{Error, Service, TokenSource, Tokio};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

/// The longest `user`, in bytes.
const MAX_USER: usize = 128;
/// How many users' token sources are kept at most; past that the map starts again (the
/// sources still in use carry on, and Redis's refresh lock keeps refreshes single even
/// when two sources of one user meet).
const MAX_SOURCES: usize = 10_000;

/// What every handler shares.
pub struct App {
    service: Service,
    redis: Redis,
    store: Arc<RedisTokenStore>,
    provider: Provider,
    transport: Transport,
    session: SessionOptions,
    /// One token source per user, so that concurrent requests for a user on this replica
    /// share one refresh without asking Redis for the lock each.
    sources: Mutex<BTreeMap<String, TokenSource>>,
}

impl App {
    pub fn new(
        service: Service,
        redis: Redis,
        store: Arc<RedisTokenStore>,
        provider: Provider,
        transport: Transport,
        session: SessionOptions,
    ) -> App {
        App {
            service,
            redis,
            store,
            provider,
            transport,
            session,
            sources: Mutex::new(BTreeMap::new()),
        }
    }

    /// `PING`, off the async threads (the Redis client is synchronous).
    pub async fn ping(&self) -> Result<(), latchkey::StoreError> {
        let redis = self.redis.clone();
        tokio::task::spawn_blocking(move || redis.ping())
            .await
            .unwrap_or_else(|_| Err(latchkey::StoreError::new("the health check panicked")))
    }

    /// Redis as `host:port`.
    pub fn redis_server(&self) -> &str {
        self.redis.server()
    }

    /// Ends the logins waiting for their callback here.
    pub async fn shutdown(self) {
        self.service.shutdown().await;
    }

    /// The user's token source.
    fn source(&self, user: &str) -> Option<TokenSource> {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(source) = sources.get(user) {
            return Some(source.clone());
        }
        if sources.len() >= MAX_SOURCES {
            sources.clear();
        }
        // The options were checked at startup.
        let source = TokenSource::with(
            Tokio,
            self.provider.clone(),
            Arc::clone(&self.store) as _,
            self.transport.clone(),
            user,
            self.session.clone(),
        )
        .ok()?;
        sources.insert(user.to_owned(), source.clone());
        drop(sources);
        // A new source verifies refreshed ID tokens with the keys the replicas share, and
        // shares what it fetches: a Redis read, off the runtime's own threads.
        tokio::task::block_in_place(|| source.share_key_sets(Arc::new(self.redis.key_sets())));
        Some(source)
    }
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/callback", get(callback))
        .route("/me", get(me))
        .route("/api", get(api))
        .route("/logout", post(logout))
        .route("/healthz", get(healthz))
        .with_state(app)
}

/// `?user=U`.
#[derive(Deserialize)]
struct UserQuery {
    user: Option<String>,
}

impl UserQuery {
    /// The user, or the 400 answer: missing, empty, longer than [`MAX_USER`] bytes, or
    /// with a control character.
    #[allow(clippy::result_large_err)]
    fn user(&self) -> Result<&str, Response> {
        match self.user.as_deref() {
            None | Some("") => Err(error(StatusCode::BAD_REQUEST, "user_required")),
            Some(user) if user.len() > MAX_USER || user.chars().any(char::is_control) => {
                Err(error(StatusCode::BAD_REQUEST, "invalid_user"))
            }
            Some(user) => Ok(user),
        }
    }
}

/// Where the browser lands after signing in (a real application's own page).
async fn home() -> Response {
    page(
        StatusCode::OK,
        "web-backend",
        "latchkey's web backend example. Its API is JSON: POST /login, GET /me, GET /api, \
         POST /logout.",
    )
}

/// `POST /login?user=U`: starts a login shared with every replica. Its record (sealed) is
/// in Redis before the URL exists, so the provider's redirect may reach any replica.
async fn login(State(app): State<Arc<App>>, Query(query): Query<UserQuery>) -> Response {
    let user = match query.user() {
        Ok(user) => user,
        Err(answer) => return answer,
    };
    // A second login for the same user on this replica ends the first (S20).
    match app
        .service
        .start_shared(FlowOptions::new().owner(user))
        .await
    {
        Ok(login) => {
            let url = login.url().unwrap_or_default().to_owned();
            // This replica learns the outcome wherever the callback lands; only the log
            // hears it here (the tokens are in the store for every replica).
            tokio::spawn(async move {
                match login.finished().await {
                    Ok(_) => info!("a login started here finished"),
                    Err(error) => info!(%error, "a login started here ended without tokens"),
                }
            });
            json(StatusCode::OK, json!({ "authorization_url": url }))
        }
        Err(Error::Flow(FlowError::Directory(DirectoryError::Unavailable(reason)))) => {
            warn!(%reason, "cannot share a login: redis is unavailable");
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        Err(other) => {
            warn!(error = %other, "cannot start a login");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

/// `GET /callback?code=…&state=…`: the provider's redirect, for a login started on any
/// replica. The record is taken from Redis atomically, so however many replicas get the
/// same callback, one exchanges the code (S54); this answer waits for that login's end.
async fn callback(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let error = match app.service.complete(&query).await {
        Ok(_) => {
            // A clean URL, so the code stays out of the address bar and history.
            let mut answer = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
            secure(&mut answer);
            return answer;
        }
        Err(error) => error,
    };
    debug!(%error, "callback not completed");
    match callback_failure(&error) {
        CallbackFailure::Refused => page(
            StatusCode::BAD_REQUEST,
            "Sign-in not completed",
            "This sign-in link cannot be used: it was used already, has expired, was \
             declined, or is not one of ours. Please start signing in again.",
        ),
        CallbackFailure::Unavailable => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            "Signing in is unavailable for a moment. Please try again shortly (reloading \
             this page is fine).",
        ),
        CallbackFailure::Failed => page(
            StatusCode::BAD_GATEWAY,
            "Sign-in failed",
            "Signing in with the identity provider failed. Please start signing in again.",
        ),
    }
}

/// How a callback that did not sign anyone in is answered.
enum CallbackFailure {
    /// 400: unknown, used, expired, declined, or malformed.
    Refused,
    /// 503: Redis is unreachable; the same callback works once it is back.
    Unavailable,
    /// 502: the provider or the token store failed after the callback was accepted.
    Failed,
}

fn callback_failure(error: &Error) -> CallbackFailure {
    match error {
        Error::Callback(Rejection::Unavailable)
        | Error::Flow(FlowError::Directory(DirectoryError::Unavailable(_))) => {
            CallbackFailure::Unavailable
        }
        Error::Callback(_)
        | Error::Flow(
            FlowError::Directory(_)
            | FlowError::Denied(_)
            | FlowError::InvalidCallback(_)
            | FlowError::IssuerMismatch { .. }
            | FlowError::Cancelled
            | FlowError::Superseded,
        ) => CallbackFailure::Refused,
        _ => CallbackFailure::Failed,
    }
}

/// `GET /me?user=U`: whether the user has tokens, whose they are and until when the access
/// token lasts; read from the store as it is (no refresh).
async fn me(State(app): State<Arc<App>>, Query(query): Query<UserQuery>) -> Response {
    let user = match query.user() {
        Ok(user) => user.to_owned(),
        Err(answer) => return answer,
    };
    let store = Arc::clone(&app.store);
    let loaded = tokio::task::spawn_blocking(move || store.load(&user)).await;
    match loaded {
        Ok(Ok(Some(tokens))) => {
            let expires_at = tokens
                .expires_at()
                .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                .map(|since| since.as_secs());
            json(
                StatusCode::OK,
                json!({
                    "signed_in": true,
                    "sub": tokens.identity().map(|identity| identity.sub()),
                    "expires_at": expires_at,
                }),
            )
        }
        Ok(Ok(None)) => json(StatusCode::OK, json!({ "signed_in": false })),
        Ok(Err(reason)) => {
            warn!(%reason, "cannot read the tokens");
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// `GET /api?user=U`: the provider's UserInfo answer, asked with an access token that is
/// valid beyond the margin. An expiring token is refreshed first, once for every request
/// of every replica: the first takes Redis's refresh lock, the others wait and read what
/// it stored (S57).
async fn api(State(app): State<Arc<App>>, Query(query): Query<UserQuery>) -> Response {
    let user = match query.user() {
        Ok(user) => user,
        Err(answer) => return answer,
    };
    let Some(source) = app.source(user) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    };
    match source.userinfo().await {
        Ok(claims) => json(StatusCode::OK, Value::Object(claims)),
        Err(failure) => {
            debug!(%failure, "no UserInfo answer");
            let (status, code) = api_failure(&failure);
            error(status, code)
        }
    }
}

fn api_failure(failure: &UserInfoFetchError) -> (StatusCode, &'static str) {
    match failure {
        UserInfoFetchError::Session(error) if error.login_required() => {
            (StatusCode::UNAUTHORIZED, "login_required")
        }
        UserInfoFetchError::Session(SessionError::Store(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        UserInfoFetchError::Session(SessionError::TimedOut) => {
            (StatusCode::GATEWAY_TIMEOUT, "timeout")
        }
        UserInfoFetchError::Session(SessionError::Transport(_))
        | UserInfoFetchError::Transport(_) => (StatusCode::BAD_GATEWAY, "provider_unreachable"),
        UserInfoFetchError::Session(_) => (StatusCode::BAD_GATEWAY, "refresh_failed"),
        UserInfoFetchError::UserInfo(UserInfoError::NoEndpoint) => {
            (StatusCode::NOT_IMPLEMENTED, "no_userinfo_endpoint")
        }
        _ => (StatusCode::BAD_GATEWAY, "userinfo_failed"),
    }
}

/// `POST /logout?user=U`: revokes the refresh token, then the access token, at the provider
/// (when it has a revocation endpoint), and deletes them from the store whatever the
/// provider said (S44).
async fn logout(State(app): State<Arc<App>>, Query(query): Query<UserQuery>) -> Response {
    let user = match query.user() {
        Ok(user) => user,
        Err(answer) => return answer,
    };
    let Some(source) = app.source(user) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    };
    match source.logout().await {
        Ok(report) => {
            let (revoked, failed): (Vec<_>, Vec<_>) = report
                .revocations
                .iter()
                .partition(|(_, outcome)| outcome.is_ok());
            let hints = |list: Vec<&(latchkey::TokenKind, _)>| {
                list.into_iter()
                    .map(|(kind, _)| kind.hint())
                    .collect::<Vec<_>>()
            };
            json(
                StatusCode::OK,
                json!({
                    "had_tokens": report.had_tokens,
                    "revoked": hints(revoked),
                    "not_revoked": hints(failed),
                    "fully_revoked": report.fully_revoked(),
                }),
            )
        }
        Err(SessionError::Store(reason)) => {
            warn!(%reason, "cannot delete the tokens");
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        Err(other) => {
            warn!(error = %other, "logout failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

/// `GET /healthz`: 200 when Redis answers `PING`, 503 otherwise (a load balancer then
/// sends no one here).
async fn healthz(State(app): State<Arc<App>>) -> Response {
    match app.ping().await {
        Ok(()) => json(StatusCode::OK, json!({ "redis": "ok" })),
        Err(reason) => {
            debug!(%reason, "health check failed");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "redis": "unreachable" }),
            )
        }
    }
}

/// A JSON answer, never cached: it may carry an authorization URL.
fn json(status: StatusCode, body: Value) -> Response {
    let mut answer = (status, Json(body)).into_response();
    secure(&mut answer);
    answer
}

/// `{"error": code}`.
fn error(status: StatusCode, code: &'static str) -> Response {
    json(status, json!({ "error": code }))
}

/// A fixed HTML page.
fn page(status: StatusCode, title: &'static str, text: &'static str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         </head>\n<body><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    let mut answer = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    secure(&mut answer);
    answer
}

/// Not cached, and no `Referer` from the callback's page (its URL holds the code).
fn secure(answer: &mut Response) {
    let headers = answer.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}
