//! Fresh access tokens on demand, for a program that logged a user in once and must keep
//! working: [`TokenSource`], the token lifecycle machine ([`latchkey::Session`]) and a loop
//! that carries out what it asks.
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
//! The loop is a task of its own, spawned on the first call: it owns the session, runs a
//! store that never blocks in place and one that may block on the runtime's blocking pool,
//! sends requests on the runtime's sockets, and fires the session's deadlines on the
//! runtime's clock. Callers talk to it through a channel. It ends once every clone of the
//! source is gone and the work in progress is done, so a refresh nobody waits for any more
//! is still stored.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_lite::future;
use latchkey::{
    CallId, ConfigError, DeleteReason, LogoutReport, Provider, Purpose, RequestId, SaveReason,
    Session, SessionAction, SessionError, SessionOptions, StoreError, StoreOpId, TokenSet,
};
use tracing::{Instrument, Span, debug, info, info_span, warn};

use crate::log::ProviderName;
use crate::runtime::Runtime;
use crate::store::{DEFAULT_KEY, TokenStore};
use crate::transport::{TokenResult, Transport};

/// Valid tokens on demand, refreshed when needed. Cloning shares the source (and its one
/// refresh at a time).
#[derive(Clone)]
pub struct TokenSource<R: Runtime> {
    inner: Arc<Inner<R>>,
}

struct Inner<R: Runtime> {
    runtime: R,
    provider: Provider,
    key: String,
    commands: Sender<Command>,
    /// The loop's half, until the first call spawns it.
    idle_loop: Mutex<Option<Loop<R>>>,
}

impl<R: Runtime> fmt::Debug for TokenSource<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("provider", &self.inner.provider)
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

/// What a caller asks of the loop.
enum Command {
    Tokens {
        refresh: bool,
        reply: Sender<Result<TokenSet, SessionError>>,
        span: Span,
    },
    Logout {
        reply: Sender<Result<LogoutReport, SessionError>>,
        span: Span,
    },
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
        let session = Session::new(provider);
        TokenSource::from_session(runtime, session, store, transport, DEFAULT_KEY.into())
    }

    /// A source for the tokens stored under `key`, with the session's `options` (the
    /// refresh margin, the request and call timeouts).
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
        options: SessionOptions,
    ) -> Result<TokenSource<R>, ConfigError> {
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
        let (commands, receiver) = async_channel::unbounded();
        let provider = session.provider().clone();
        let idle_loop = Loop {
            runtime: runtime.clone(),
            session,
            store,
            transport,
            key: key.clone(),
            commands: receiver,
            waiting: BTreeMap::new(),
            refreshed: false,
        };
        TokenSource {
            inner: Arc::new(Inner {
                runtime,
                provider,
                key,
                commands,
                idle_loop: Mutex::new(Some(idle_loop)),
            }),
        }
    }

    /// Tokens whose access token is valid for longer than the margin: the stored ones, or
    /// fresh ones (stored before they are returned).
    ///
    /// # Errors
    ///
    /// See [`SessionError`]; [`SessionError::login_required`] says when only a new login
    /// helps.
    pub fn tokens(&self) -> impl Future<Output = Result<TokenSet, SessionError>> + Send + 'static {
        self.ask_tokens(false, "tokens")
    }

    /// Refreshes now, whatever the expiry, and returns (and stores) the fresh tokens.
    ///
    /// # Errors
    ///
    /// As [`tokens`](TokenSource::tokens).
    pub fn refresh(&self) -> impl Future<Output = Result<TokenSet, SessionError>> + Send + 'static {
        self.ask_tokens(true, "refresh")
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
        let (reply, answer) = async_channel::bounded(1);
        let span = self.span("logout");
        let command = Command::Logout {
            reply,
            span: span.clone(),
        };
        self.ask(command, answer, span)
    }

    fn ask_tokens(
        &self,
        refresh: bool,
        operation: &'static str,
    ) -> impl Future<Output = Result<TokenSet, SessionError>> + Send + 'static {
        let (reply, answer) = async_channel::bounded(1);
        let span = self.span(operation);
        let command = Command::Tokens {
            refresh,
            reply,
            span: span.clone(),
        };
        self.ask(command, answer, span)
    }

    /// Sends `command` to the loop (spawning it on the first call) and awaits its answer.
    fn ask<T: Send + 'static>(
        &self,
        command: Command,
        answer: Receiver<Result<T, SessionError>>,
        span: Span,
    ) -> impl Future<Output = Result<T, SessionError>> + Send + 'static {
        let idle_loop = self
            .inner
            .idle_loop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let runtime = self.inner.runtime.clone();
        // The channel is unbounded and the source holds its receiver's loop: this succeeds.
        let _ = self.inner.commands.try_send(command);
        async move {
            if let Some(idle_loop) = idle_loop {
                let task = runtime.spawn(idle_loop.run());
                runtime.detach(task);
            }
            // No answer only when the runtime shut down under the loop.
            answer.recv().await.unwrap_or(Err(SessionError::Cancelled))
        }
        .instrument(span)
    }

    /// The span a call's events are logged in.
    fn span(&self, operation: &'static str) -> Span {
        let inner = &self.inner;
        info_span!("token_source", operation, provider = %ProviderName(&inner.provider), key = %inner.key)
    }
}

/// A reply waiting for its call's answer.
enum Reply {
    Tokens(Sender<Result<TokenSet, SessionError>>),
    Logout(Sender<Result<LogoutReport, SessionError>>),
}

type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A store operation's outcome.
enum Stored {
    Loaded(StoreOpId, Result<Option<TokenSet>, StoreError>),
    Saved(StoreOpId, Result<(), StoreError>),
    Deleted(StoreOpId, Result<(), StoreError>),
}

/// A request's outcome and when it was sent.
type Answered = (RequestId, Purpose, Instant, TokenResult);

/// What the loop owns.
struct Loop<R: Runtime> {
    runtime: R,
    session: Session,
    store: Arc<dyn TokenStore>,
    transport: Transport,
    key: String,
    commands: Receiver<Command>,
    /// Calls not answered yet, with their spans, in the order they were made.
    waiting: BTreeMap<CallId, (Reply, Span)>,
    /// Whether the tokens being handed out were refreshed in this piece of work.
    refreshed: bool,
}

/// What woke the loop.
enum Event {
    Command(Option<Command>),
    Stored(Stored),
    Answered(Answered),
    Deadline,
}

impl<R: Runtime> Loop<R> {
    async fn run(mut self) {
        let mut store_op: Option<Pending<Stored>> = None;
        let mut request: Option<Pending<Answered>> = None;
        let mut open = true;
        loop {
            while let Some(action) = self.session.poll_action() {
                self.execute(action, &mut store_op, &mut request);
            }
            if !open && self.session.is_idle() && store_op.is_none() {
                return;
            }
            let event = {
                let deadline = self.session.poll_timeout();
                let mut sleep = deadline.map(|at| Box::pin(self.runtime.sleep_until(at)));
                let mut next_command = std::pin::pin!(self.commands.recv());
                future::poll_fn(|cx| {
                    if let Some(pending) = &mut store_op {
                        if let Poll::Ready(stored) = pending.as_mut().poll(cx) {
                            store_op = None;
                            return Poll::Ready(Event::Stored(stored));
                        }
                    }
                    if let Some(pending) = &mut request {
                        if let Poll::Ready(answered) = pending.as_mut().poll(cx) {
                            request = None;
                            return Poll::Ready(Event::Answered(answered));
                        }
                    }
                    if open {
                        if let Poll::Ready(command) = next_command.as_mut().poll(cx) {
                            return Poll::Ready(Event::Command(command.ok()));
                        }
                    }
                    match &mut sleep {
                        Some(sleep) => sleep.as_mut().poll(cx).map(|()| Event::Deadline),
                        None => Poll::Pending,
                    }
                })
                .await
            };
            let now = self.runtime.now();
            match event {
                Event::Command(Some(command)) => self.call(now, command),
                // Every source is gone: finish the work in progress, then stop.
                Event::Command(None) => open = false,
                Event::Stored(stored) => self.stored(now, stored),
                Event::Answered((id, purpose, sent, result)) => {
                    self.answered(now, id, purpose, sent, result);
                }
                Event::Deadline => self.session.handle_timeout(now),
            }
        }
    }

    fn call(&mut self, now: Instant, command: Command) {
        let (call, reply, span) = match command {
            Command::Tokens {
                refresh,
                reply,
                span,
            } => {
                let call = if refresh {
                    self.session.refresh(now)
                } else {
                    self.session.tokens(now)
                };
                (call, Reply::Tokens(reply), span)
            }
            Command::Logout { reply, span } => {
                (self.session.logout(now), Reply::Logout(reply), span)
            }
        };
        self.waiting.insert(call, (reply, span));
    }

    /// The span of the oldest call still waiting: the work in progress is for it.
    fn span(&self) -> Span {
        self.waiting.first_key_value().map_or_else(
            || info_span!("token_source", operation = "background"),
            |(_, (_, span))| span.clone(),
        )
    }

    fn execute(
        &mut self,
        action: SessionAction,
        store_op: &mut Option<Pending<Stored>>,
        request: &mut Option<Pending<Answered>>,
    ) {
        let span = self.span();
        let _entered = span.enter();
        match action {
            SessionAction::Load { op } => {
                self.refreshed = false;
                debug!("reading the stored tokens");
                let key = self.key.clone();
                self.run_store(store_op, move |store| Stored::Loaded(op, store.load(&key)));
            }
            SessionAction::Save { op, tokens, reason } => {
                match reason {
                    SaveReason::Refreshed { rotated } => {
                        self.refreshed = true;
                        info!(rotated, "tokens refreshed; storing them");
                    }
                    SaveReason::Kept => {
                        self.refreshed = false;
                        info!("storing refreshed tokens the store refused before");
                    }
                    _ => {}
                }
                let key = self.key.clone();
                self.run_store(store_op, move |store| {
                    Stored::Saved(op, store.save(&key, &tokens))
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
                self.run_store(store_op, move |store| {
                    Stored::Deleted(op, store.delete(&key))
                });
            }
            SessionAction::Send {
                id,
                purpose,
                request: http,
            } => {
                match purpose {
                    Purpose::Refresh => info!("refreshing the tokens"),
                    Purpose::Revoke(kind) => debug!(token = kind.hint(), "revoking a token"),
                    _ => {}
                }
                let (runtime, transport) = (self.runtime.clone(), self.transport.clone());
                let sent = runtime.now();
                // A request the session gave up on is dropped here (its deadline passed).
                *request = Some(Box::pin(
                    async move {
                        let result = transport.send(&runtime, http).await;
                        (id, purpose, sent, result)
                    }
                    .instrument(span.clone()),
                ));
            }
            SessionAction::Tokens { call, result } => {
                match &result {
                    Ok(_) if !self.refreshed => debug!("the stored tokens are still valid"),
                    Ok(_) => debug!("fresh tokens handed out"),
                    Err(error) => debug!(%error, "no tokens to hand out"),
                }
                if let Some((Reply::Tokens(reply), _)) = self.waiting.remove(&call) {
                    let _ = reply.try_send(result);
                }
            }
            SessionAction::LoggedOut { call, result } => {
                if let Ok(report) = &result {
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
                if let Some((Reply::Logout(reply), _)) = self.waiting.remove(&call) {
                    let _ = reply.try_send(result);
                }
            }
            _ => debug_assert!(false, "an action this loop does not know"),
        }
    }

    /// Runs a store operation: in place for a store that never blocks (its outcome is fed
    /// back at once), on the blocking pool otherwise.
    fn run_store(
        &mut self,
        store_op: &mut Option<Pending<Stored>>,
        operation: impl FnOnce(&dyn TokenStore) -> Stored + Send + 'static,
    ) {
        debug_assert!(store_op.is_none(), "one store operation at a time");
        if !self.store.blocks() {
            let stored = operation(&*self.store);
            self.stored(self.runtime.now(), stored);
            return;
        }
        let store = Arc::clone(&self.store);
        let runtime = self.runtime.clone();
        let started = runtime.now();
        *store_op = Some(Box::pin(async move {
            let stored = runtime.unblock(move || operation(&*store)).await;
            let elapsed = runtime.now().saturating_duration_since(started);
            debug!(?elapsed, "store answered");
            stored
        }));
    }

    fn stored(&mut self, now: Instant, stored: Stored) {
        let wall = self.runtime.wall();
        match stored {
            Stored::Loaded(op, result) => self.session.handle_loaded(now, wall, op, result),
            Stored::Saved(op, result) => {
                if let Err(error) = &result {
                    let span = self.span();
                    span.in_scope(|| warn!(%error, "the store refused the tokens"));
                }
                self.session.handle_saved(now, wall, op, result);
            }
            Stored::Deleted(op, result) => self.session.handle_deleted(now, op, result),
        }
    }

    fn answered(
        &mut self,
        now: Instant,
        id: RequestId,
        purpose: Purpose,
        sent: Instant,
        result: TokenResult,
    ) {
        let elapsed: Duration = now.saturating_duration_since(sent);
        let span = self.span();
        span.in_scope(|| match (&result, purpose) {
            (Ok(response), Purpose::Revoke(kind)) => debug!(
                token = kind.hint(),
                status = response.status().as_u16(),
                ?elapsed,
                "revocation endpoint answered"
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
            (Err(error), _) => warn!(%error, ?elapsed, "the token endpoint could not be reached"),
        });
        match result {
            Ok(response) => self
                .session
                .handle_response(now, self.runtime.wall(), id, response),
            Err(error) => self.session.handle_failure(now, id, error),
        }
    }
}
