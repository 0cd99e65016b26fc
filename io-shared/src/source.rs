//! Fresh access tokens on demand, for a program that logged a user in once and must keep
//! working: [`TokenSource`], the token lifecycle machine ([`latchkey::Session`]) and the
//! I/O it asks for.
//!
//! Every rule is the session's: the stored tokens are the source of truth; they are handed
//! out while they expire later than the margin (60 s by default) and refreshed first
//! otherwise, once for any number of concurrent callers; fresh tokens are stored before
//! anyone sees them, and kept to be stored first next time if the store refuses them (S42);
//! a refresh token the provider refuses (`invalid_grant`, GitHub's `bad_refresh_token`)
//! deletes the stored tokens; logging out revokes the tokens when the provider can and
//! deletes them in any case (S44). A program that restarts reads the same store and carries
//! on.
//!
//! How it runs: the session is shared, and whoever has an input for it (a caller with a
//! call, a store operation or a request that finished, the timer) feeds it and drains its
//! actions. A store that never blocks is called in place, so handing out valid tokens from
//! memory happens entirely in the caller's task. A store that may block runs on the
//! runtime's blocking pool and each request on a task of its own: they finish and feed
//! their outcome back even if every caller has given up, so a refresh nobody waits for any
//! more is still stored. A timer task exists while the session has a deadline.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use futures_lite::future;
use latchkey::oidc::{UserInfoError, read_userinfo, userinfo_request};
use latchkey::{
    CallId, ConfigError, DeleteReason, LogoutReport, Provider, Purpose, SaveReason, Session,
    SessionAction, SessionError, SessionOptions, StoreError, StoreOpId, TokenSet, TransportError,
};
use serde_json::{Map, Value};
use tracing::{Instrument, Span, debug, info, info_span, warn};

use crate::alarm::{self, Alarm};
use crate::jobs::{Carried, Job};
use crate::log::ProviderName;
use crate::runtime::Runtime;
use crate::store::{DEFAULT_KEY, KeySetCache, TokenStore};
use crate::transport::{TokenResult, Transport};

/// Why [`TokenSource::userinfo`] gave no claims.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserInfoFetchError {
    /// No valid tokens (see [`SessionError::login_required`]).
    Session(SessionError),
    /// The request could not be completed.
    Transport(TransportError),
    /// The answer was refused, or there was nothing to ask with.
    UserInfo(UserInfoError),
}

impl From<UserInfoError> for UserInfoFetchError {
    fn from(error: UserInfoError) -> UserInfoFetchError {
        UserInfoFetchError::UserInfo(error)
    }
}

impl fmt::Display for UserInfoFetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserInfoFetchError::Session(error) => error.fmt(f),
            UserInfoFetchError::Transport(error) => write!(f, "UserInfo request failed: {error}"),
            UserInfoFetchError::UserInfo(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for UserInfoFetchError {}

/// Valid tokens on demand, refreshed when needed. Cloning shares the source (and its one
/// refresh at a time).
#[derive(Clone)]
pub struct TokenSource<R: Runtime> {
    inner: Arc<Inner<R>>,
}

impl<R: Runtime> fmt::Debug for TokenSource<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("provider", &self.inner.provider)
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

/// An answer to a call: tokens, or a logout's report.
enum Answer {
    Tokens(Result<TokenSet, SessionError>),
    LoggedOut(Result<LogoutReport, SessionError>),
}

/// A call not answered yet, or answered and not yet taken by its caller.
struct Waiting {
    answer: Option<Answer>,
    /// Wakes the caller once the answer is here.
    waker: Option<Waker>,
    span: Span,
}

struct State {
    session: Session,
    calls: BTreeMap<CallId, Waiting>,
    /// Whether the tokens being handed out were refreshed in this piece of work.
    refreshed: bool,
    /// What the timer task sleeps until, while there is one.
    alarm: Alarm,
}

struct Inner<R: Runtime> {
    runtime: R,
    provider: Provider,
    store: Arc<dyn TokenStore>,
    /// Where key sets are shared with other processes, once set.
    key_sets: OnceLock<Arc<dyn KeySetCache>>,
    transport: Transport,
    key: String,
    state: Mutex<State>,
}

impl<R: Runtime> TokenSource<R> {
    /// A source for the tokens stored under [`DEFAULT_KEY`] in `store`, issued by
    /// `provider`, refreshed through `transport` when they expire within a minute.
    pub fn new(
        runtime: R,
        provider: Provider,
        store: Arc<dyn TokenStore>,
        transport: Transport,
    ) -> TokenSource<R> {
        let mut options = SessionOptions::default();
        options.shared_refresh = store.shares_refresh();
        // The default timeouts are valid.
        let session = Session::with_options(provider.clone(), options)
            .unwrap_or_else(|_| Session::new(provider));
        TokenSource::from_session(runtime, session, store, transport, DEFAULT_KEY.into())
    }

    /// A source for the tokens stored under `key`, with the session's `options` (the
    /// refresh margin, the request and call timeouts). A store shared by several processes
    /// ([`TokenStore::shares_refresh`]) turns [`SessionOptions::shared_refresh`] on.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidLimit`] for options [`Session::with_options`] refuses.
    pub fn with(
        runtime: R,
        provider: Provider,
        store: Arc<dyn TokenStore>,
        transport: Transport,
        key: impl Into<String>,
        mut options: SessionOptions,
    ) -> Result<TokenSource<R>, ConfigError> {
        options.shared_refresh |= store.shares_refresh();
        let session = Session::with_options(provider, options)?;
        Ok(TokenSource::from_session(
            runtime,
            session,
            store,
            transport,
            key.into(),
        ))
    }

    fn from_session(
        runtime: R,
        session: Session,
        store: Arc<dyn TokenStore>,
        transport: Transport,
        key: String,
    ) -> TokenSource<R> {
        TokenSource {
            inner: Arc::new(Inner {
                runtime,
                provider: session.provider().clone(),
                store,
                key_sets: OnceLock::new(),
                transport,
                key,
                state: Mutex::new(State {
                    session,
                    calls: BTreeMap::new(),
                    refreshed: false,
                    alarm: Alarm::new(),
                }),
            }),
        }
    }

    /// Shares the provider's key sets with other processes through `cache` (the one a
    /// login service of the same deployment uses, see
    /// [`ServiceOptions::key_sets`](crate::service::ServiceOptions::key_sets)): the keys
    /// stored there are taken in now, on this thread, and every fetch this source makes
    /// (to verify a refreshed ID token) is stored there. Clones share the cache; the first
    /// call sets it, and later calls change nothing.
    pub fn share_key_sets(&self, cache: Arc<dyn KeySetCache>) {
        if self.inner.key_sets.set(Arc::clone(&cache)).is_err() {
            return;
        }
        match cache.load() {
            Ok(Some(document)) => {
                let wall = self.inner.runtime.wall();
                let now = self.inner.runtime.now();
                let imported = self
                    .inner
                    .lock()
                    .session
                    .import_key_sets(now, wall, &document);
                match imported {
                    Ok(count) => debug!(count, "key sets shared by other processes taken in"),
                    Err(error) => warn!(%error, "the shared key sets are unusable"),
                }
            }
            Ok(None) => {}
            Err(error) => warn!(%error, "the shared key sets could not be read"),
        }
    }

    /// A DPoP proof for the application's own `method` request to `uri` with `tokens`
    /// (from [`tokens`](TokenSource::tokens)): made now, with the key they are bound to and
    /// the hash of their access token; `nonce` when the server answered `401` with a
    /// `DPoP-Nonce` header. Send it as the `DPoP` header with
    /// `Authorization: DPoP <access token>`. `None` for bearer tokens.
    ///
    /// # Errors
    ///
    /// The URI, method or nonce cannot be in a proof, or the provider's crypto provider
    /// cannot load the key or sign.
    pub fn dpop_proof(
        &self,
        tokens: &TokenSet,
        method: &str,
        uri: &str,
        nonce: Option<&str>,
    ) -> Option<Result<String, latchkey::dpop::ProofError>> {
        let crypto = self
            .inner
            .provider
            .crypto()
            .cloned()
            .unwrap_or_else(crate::crypto::ring);
        tokens.dpop_proof(crypto, method, uri, nonce, self.inner.runtime.wall())
    }

    /// Tokens whose access token is valid for longer than the margin: the stored ones, or
    /// fresh ones (stored before they are returned).
    ///
    /// # Errors
    ///
    /// See [`SessionError`]; [`SessionError::login_required`] says when only a new login
    /// helps.
    pub fn tokens(&self) -> impl Future<Output = Result<TokenSet, SessionError>> + Send + 'static {
        let answer = self.ask("tokens", |session, now| session.tokens(now));
        async move {
            match answer.await {
                Answer::Tokens(result) => result,
                // Only when the call was lost (it cannot be).
                Answer::LoggedOut(_) => Err(SessionError::Cancelled),
            }
        }
    }

    /// Refreshes now, whatever the expiry, and returns (and stores) the fresh tokens.
    ///
    /// # Errors
    ///
    /// As [`tokens`](TokenSource::tokens).
    pub fn refresh(&self) -> impl Future<Output = Result<TokenSet, SessionError>> + Send + 'static {
        let answer = self.ask("refresh", |session, now| session.refresh(now));
        async move {
            match answer.await {
                Answer::Tokens(result) => result,
                Answer::LoggedOut(_) => Err(SessionError::Cancelled),
            }
        }
    }

    /// The signed-in user's claims at the provider's UserInfo endpoint (OpenID Connect Core
    /// §5.3), asked with valid tokens ([`tokens`](TokenSource::tokens)). An answer about
    /// another user than the stored identity is discarded (S50).
    ///
    /// # Errors
    ///
    /// See [`UserInfoFetchError`].
    pub fn userinfo(
        &self,
    ) -> impl Future<Output = Result<Map<String, Value>, UserInfoFetchError>> + Send + 'static {
        let tokens = self.tokens();
        let inner = Arc::clone(&self.inner);
        async move {
            let tokens = tokens.await.map_err(UserInfoFetchError::Session)?;
            let request = userinfo_request(&inner.provider, &tokens)?;
            let response = inner
                .transport
                .send(&inner.runtime, request)
                .await
                .map_err(UserInfoFetchError::Transport)?;
            let identity = tokens.identity().ok_or(UserInfoError::NoIdentity)?;
            let claims = read_userinfo(&response, identity);
            if let Err(error) = &claims {
                warn!(%error, "UserInfo refused");
            }
            Ok(claims?)
        }
    }

    /// Logs out (S44): revokes the stored refresh token, then the access token, when the
    /// provider has a revocation endpoint, and deletes the stored tokens whatever the
    /// revocations' outcomes, which the report lists.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the stored tokens could not be deleted.
    pub fn logout(
        &self,
    ) -> impl Future<Output = Result<LogoutReport, SessionError>> + Send + 'static {
        let answer = self.ask("logout", |session, now| session.logout(now));
        async move {
            match answer.await {
                Answer::LoggedOut(result) => result,
                Answer::Tokens(Err(error)) => Err(error),
                Answer::Tokens(Ok(_)) => Err(SessionError::Cancelled),
            }
        }
    }

    /// Makes a call in the caller's task and awaits its answer.
    fn ask(
        &self,
        operation: &'static str,
        call: impl FnOnce(&mut Session, Instant) -> CallId + Send + 'static,
    ) -> impl Future<Output = Answer> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        let span = info_span!(
            "token_source",
            operation,
            provider = %ProviderName(&inner.provider),
            key = %inner.key
        );
        async move {
            let (id, jobs) = inner.call(call);
            let waiting = Caller {
                inner: Arc::clone(&inner),
                id,
            };
            // The I/O the call started runs here while the caller waits; whatever is still
            // running when the caller stops waiting (or gives up) goes on elsewhere. Valid
            // tokens from a store that never blocks are here at the first look.
            let mut carried = Carried::new(&inner.runtime, jobs);
            carried
                .until(future::poll_fn(|cx| waiting.answer(cx)))
                .await
        }
        .instrument(span)
    }
}

/// A store operation's outcome.
enum Stored {
    Loaded(StoreOpId, Result<Option<TokenSet>, StoreError>),
    Saved(StoreOpId, Result<(), StoreError>),
    SavedFenced(StoreOpId, Result<bool, StoreError>),
    Locked(StoreOpId, Result<Option<u64>, StoreError>),
    Deleted(StoreOpId, Result<(), StoreError>),
    DeletedFenced(StoreOpId, Result<bool, StoreError>),
    /// Nothing to report (a lock released).
    Nothing,
}

impl<R: Runtime> Inner<R> {
    /// Makes a call and carries out what it asks; the I/O still to do comes back.
    fn call(
        self: &Arc<Self>,
        call: impl FnOnce(&mut Session, Instant) -> CallId,
    ) -> (CallId, Vec<Job>) {
        let now = self.runtime.now();
        let mut state = self.lock();
        let id = call(&mut state.session, now);
        let waiting = Waiting {
            answer: None,
            waker: None,
            span: Span::current(),
        };
        state.calls.insert(id, waiting);
        let jobs = self.drain(&mut state);
        (id, jobs)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The session never panics; the maps are each updated in one step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Feeds an input to the session and drains it: the I/O it asks for next.
    fn input(self: &Arc<Self>, feed: impl FnOnce(&mut State, Instant)) -> Vec<Job> {
        let now = self.runtime.now();
        let mut state = self.lock();
        feed(&mut state, now);
        self.drain(&mut state)
    }

    /// Carries out every action: a store that never blocks in place (its outcome fed back
    /// at once), answers to their callers; other I/O comes back as jobs that feed their
    /// outcome back. Then makes sure a timer task watches the next deadline.
    fn drain(self: &Arc<Self>, state: &mut State) -> Vec<Job> {
        let mut jobs = Vec::new();
        while let Some(action) = state.session.poll_action() {
            let span = oldest_span(state);
            let _entered = span.enter();
            match action {
                SessionAction::Load { op } => {
                    state.refreshed = false;
                    debug!("reading the stored tokens");
                    let key = self.key.clone();
                    self.run_store(state, &mut jobs, move |store| {
                        Stored::Loaded(op, store.load(&key))
                    });
                }
                SessionAction::Save { op, tokens, reason } => {
                    match reason {
                        SaveReason::Refreshed { rotated } => {
                            state.refreshed = true;
                            info!(rotated, "tokens refreshed; storing them");
                        }
                        SaveReason::Kept => {
                            state.refreshed = false;
                            info!("storing refreshed tokens the store refused before");
                        }
                        _ => {}
                    }
                    let key = self.key.clone();
                    self.run_store(state, &mut jobs, move |store| {
                        Stored::Saved(op, store.save(&key, &tokens))
                    });
                }
                SessionAction::SaveFenced {
                    op,
                    tokens,
                    reason,
                    fence,
                } => {
                    if let SaveReason::Refreshed { rotated } = reason {
                        state.refreshed = true;
                        info!(
                            rotated,
                            fence, "tokens refreshed; storing them under the lock"
                        );
                    }
                    let key = self.key.clone();
                    self.run_store(state, &mut jobs, move |store| {
                        Stored::SavedFenced(op, store.save_fenced(&key, &tokens, fence))
                    });
                }
                SessionAction::Lock { op, lease } => {
                    debug!(?lease, "taking the refresh lock");
                    let key = self.key.clone();
                    self.run_store(state, &mut jobs, move |store| {
                        Stored::Locked(op, store.lock_refresh(&key, lease))
                    });
                }
                SessionAction::Unlock { fence } => {
                    debug!(fence, "releasing the refresh lock");
                    let key = self.key.clone();
                    self.run_store(state, &mut jobs, move |store| {
                        if let Err(error) = store.unlock_refresh(&key, fence) {
                            warn!(%error, "the refresh lock could not be released; its lease ends it");
                        }
                        Stored::Nothing
                    });
                }
                SessionAction::DeleteFenced { op, fence, .. } => {
                    warn!(
                        fence,
                        "refresh refused; deleting the stored tokens under the lock"
                    );
                    let key = self.key.clone();
                    self.run_store(state, &mut jobs, move |store| {
                        Stored::DeletedFenced(op, store.delete_fenced(&key, fence))
                    });
                }
                SessionAction::Delete { op, reason } => {
                    match reason {
                        DeleteReason::LoginRequired => {
                            warn!("refresh refused; deleting the stored tokens");
                        }
                        DeleteReason::Logout => debug!("deleting the stored tokens"),
                        _ => {}
                    }
                    let key = self.key.clone();
                    self.run_store(state, &mut jobs, move |store| {
                        Stored::Deleted(op, store.delete(&key))
                    });
                }
                SessionAction::Send {
                    id,
                    purpose,
                    request,
                } => {
                    match purpose {
                        Purpose::Refresh => info!("refreshing the tokens"),
                        Purpose::Revoke(kind) => debug!(token = kind.hint(), "revoking a token"),
                        Purpose::KeySet => {
                            let uri = request.request().uri();
                            debug!(%uri, "fetching the provider's key set");
                        }
                        _ => {}
                    }
                    let inner = Arc::clone(self);
                    let sending = async move {
                        let sent = inner.runtime.now();
                        let result = inner.transport.send_finished(&inner.runtime, request).await;
                        let elapsed = inner.runtime.now().saturating_duration_since(sent);
                        log_answer(&result, purpose, elapsed);
                        let wall = inner.runtime.wall();
                        let fetched = purpose == Purpose::KeySet && result.is_ok();
                        let next = inner.input(|state, now| match result {
                            Ok(response) => state.session.handle_response(now, wall, id, response),
                            Err(error) => state.session.handle_failure(now, id, error),
                        });
                        if fetched {
                            inner.export_key_sets().await;
                        }
                        next
                    };
                    jobs.push(Job::new(sending.instrument(span.clone())));
                }
                SessionAction::Tokens { call, result } => {
                    match &result {
                        Ok(_) if !state.refreshed => debug!("the stored tokens are still valid"),
                        Ok(_) => debug!("fresh tokens handed out"),
                        Err(error) => debug!(%error, "no tokens to hand out"),
                    }
                    deliver(state, call, Answer::Tokens(result));
                }
                SessionAction::LoggedOut { call, result } => {
                    if let Ok(report) = &result {
                        log_logout(report);
                    }
                    deliver(state, call, Answer::LoggedOut(result));
                }
                _ => debug_assert!(false, "an action this driver does not know"),
            }
        }
        self.watch_deadline(state);
        jobs
    }

    /// Stores the session's key sets in the shared cache, if there is one.
    async fn export_key_sets(&self) {
        let Some(cache) = self.key_sets.get().cloned() else {
            return;
        };
        let document = self.lock().session.export_key_sets();
        let saving: Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> =
            Box::pin(self.runtime.unblock(move || cache.save(&document)));
        if let Err(error) = saving.await {
            warn!(%error, "the key sets could not be shared");
        }
    }

    /// Runs a store operation: in place for a store that never blocks, its outcome fed back
    /// at once; on the blocking pool otherwise, from a task that feeds it back.
    fn run_store(
        self: &Arc<Self>,
        state: &mut State,
        jobs: &mut Vec<Job>,
        operation: impl FnOnce(&dyn TokenStore) -> Stored + Send + 'static,
    ) {
        if !self.store.blocks() {
            let stored = operation(&*self.store);
            self.stored(state, self.runtime.now(), stored);
            return;
        }
        let inner = Arc::clone(self);
        let storing = async move {
            let store = Arc::clone(&inner.store);
            let started = inner.runtime.now();
            let stored = inner.runtime.unblock(move || operation(&*store)).await;
            let elapsed = inner.runtime.now().saturating_duration_since(started);
            debug!(?elapsed, "the store answered");
            inner.input(|state, now| inner.stored(state, now, stored))
        };
        jobs.push(Job::new(storing.instrument(Span::current())));
    }

    fn stored(&self, state: &mut State, now: Instant, stored: Stored) {
        let wall = self.runtime.wall();
        match stored {
            Stored::Loaded(op, result) => state.session.handle_loaded(now, wall, op, result),
            Stored::Saved(op, result) => {
                if let Err(error) = &result {
                    warn!(%error, "the store refused the tokens");
                }
                state.session.handle_saved(now, wall, op, result);
            }
            Stored::SavedFenced(op, result) => {
                match &result {
                    Ok(false) => info!("another process stored newer tokens first"),
                    Err(error) => warn!(%error, "the store refused the tokens"),
                    Ok(true) => {}
                }
                state.session.handle_saved_fenced(now, op, result);
            }
            Stored::Locked(op, result) => {
                match &result {
                    Ok(None) => debug!("another process holds the refresh lock"),
                    Err(error) => warn!(%error, "the refresh lock could not be taken"),
                    Ok(Some(_)) => {}
                }
                state.session.handle_locked(now, op, result);
            }
            Stored::Deleted(op, result) => state.session.handle_deleted(now, op, result),
            Stored::DeletedFenced(op, result) => {
                if let Ok(false) = result {
                    info!("another process stored newer tokens first; nothing deleted");
                }
                state.session.handle_deleted_fenced(now, op, result);
            }
            Stored::Nothing => {}
        }
    }

    /// Starts a timer task when the session has a deadline and none watches it, or wakes
    /// the one there is when the deadline moved earlier.
    fn watch_deadline(self: &Arc<Self>, state: &mut State) {
        // No deadline armed: no timer task runs.
        let watched = state.alarm.armed().is_some();
        if !state.alarm.moved(state.session.poll_timeout()) {
            return;
        }
        if watched {
            state.alarm.wake();
        } else {
            let task = self.runtime.spawn(timer(Arc::clone(self)));
            self.runtime.detach(task);
        }
    }
}

/// Fires the session's deadlines while it has any, then ends. The I/O a deadline leads to
/// (the next call's work) runs here meanwhile.
async fn timer<R: Runtime>(inner: Arc<Inner<R>>) {
    let mut carried = Carried::new(&inner.runtime, Vec::new());
    loop {
        let (deadline, woken) = {
            let mut state = inner.lock();
            let next = state.session.poll_timeout();
            match state.alarm.arm(next) {
                Some(deadline) => (deadline, state.alarm.woken()),
                None => return,
            }
        };
        if carried
            .until(alarm::sleep(&inner.runtime, Some(deadline), &woken))
            .await
        {
            carried.extend(inner.input(|state, now| state.session.handle_timeout(now)));
        }
    }
}

/// Keeps `answer` for its caller and wakes it. A caller that gave up left no entry.
fn deliver(state: &mut State, call: CallId, answer: Answer) {
    if let Some(waiting) = state.calls.get_mut(&call) {
        waiting.answer = Some(answer);
        if let Some(waker) = waiting.waker.take() {
            waker.wake();
        }
    }
}

/// A caller waiting for the answer to its call. Dropped early (the caller gave up), it
/// takes its entry away, so that the answer has nowhere to wait.
struct Caller<R: Runtime> {
    inner: Arc<Inner<R>>,
    id: CallId,
}

impl<R: Runtime> Caller<R> {
    fn answer(&self, cx: &mut Context<'_>) -> Poll<Answer> {
        let mut state = self.inner.lock();
        let Some(waiting) = state.calls.get_mut(&self.id) else {
            return Poll::Ready(Answer::Tokens(Err(SessionError::Cancelled)));
        };
        match waiting.answer.take() {
            Some(answer) => {
                state.calls.remove(&self.id);
                Poll::Ready(answer)
            }
            None => {
                waiting.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<R: Runtime> Drop for Caller<R> {
    fn drop(&mut self) {
        self.inner.lock().calls.remove(&self.id);
    }
}

/// The span of the oldest call not answered yet: the work in progress is for it.
fn oldest_span(state: &State) -> Span {
    state.calls.first_key_value().map_or_else(
        || info_span!("token_source", operation = "background"),
        |(_, waiting)| waiting.span.clone(),
    )
}

fn log_answer(result: &TokenResult, purpose: Purpose, elapsed: std::time::Duration) {
    match (result, purpose) {
        (Ok(response), Purpose::Revoke(kind)) => debug!(
            token = kind.hint(),
            status = response.status().as_u16(),
            ?elapsed,
            "revocation endpoint answered"
        ),
        (Ok(response), Purpose::KeySet) => debug!(
            status = response.status().as_u16(),
            ?elapsed,
            "key set fetched"
        ),
        (Ok(response), _) => {
            info!(
                status = response.status().as_u16(),
                ?elapsed,
                "token endpoint answered"
            );
        }
        (Err(error), Purpose::Revoke(_)) => {
            warn!(%error, ?elapsed, "the revocation endpoint could not be reached");
        }
        (Err(error), Purpose::KeySet) => {
            warn!(%error, ?elapsed, "the provider's key set could not be fetched");
        }
        (Err(error), _) => warn!(%error, ?elapsed, "the token endpoint could not be reached"),
    }
}

fn log_logout(report: &LogoutReport) {
    for (kind, outcome) in &report.revocations {
        match outcome {
            Ok(()) => info!(token = kind.hint(), "token revoked"),
            Err(error) => warn!(token = kind.hint(), %error, "revocation failed"),
        }
    }
    if let Some(reason) = &report.not_revoked {
        warn!(%reason, "tokens not revoked");
    }
    info!(
        fully_revoked = report.fully_revoked(),
        "stored tokens deleted"
    );
}
