//! The engine and what the service knows around it, shared by every task that has an input
//! for it.
//!
//! There is no engine task. A task with an input (a connection with bytes, a token
//! response, a store's answer, the timer, the application) locks the engine, feeds the input,
//! drains every action and routes it: answers for other connections go to their mailboxes,
//! events to the logins' channels; what the task must do itself comes back as [`Work`]. The
//! lock is never held across an `await`.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use bytes::Bytes;
use futures_lite::future;
use latchkey::directory::{Announcement, FlowKey, FlowRecord, Outcome};
use latchkey::{Action, ConnId, Engine, ExchangeId, FlowError, FlowId, RequestId, TokenSet};
use latchkey::{FlowOptions, ProviderRequest, Rejection, StartError, StoreError, TakeId};
use tracing::{Instrument, Span, debug, info, warn};

use super::login::{Canceller, LoginEvent};
use super::mailbox::Postman;
use crate::alarm::Alarm;
use crate::directory::FlowDirectory;
use crate::runtime::Runtime;
use crate::store::{DEFAULT_KEY, KeySetCache, TokenStore};
use crate::transport::Transport;

/// What a connection task is told: the one answer its browser gets, or to close.
pub(super) enum ConnCommand {
    Respond(Bytes),
    Close,
}

/// A connection task, as the engine's side sees it.
struct ConnHandle<R: Runtime> {
    mailbox: Sender<ConnCommand>,
    task: Option<R::Task>,
}

/// A login in progress, as the engine's side sees it.
struct FlowHandle {
    /// Its `login` span; its steps are logged in it.
    span: Span,
    started: Instant,
    /// Its starter's events; none for a login adopted from the flow directory.
    events: Option<Postman>,
    /// Callers of [`Service::complete`](super::Service::complete) waiting for its outcome.
    waiters: Vec<Sender<Result<TokenSet, FlowError>>>,
    /// A device login: its token requests are polls, not the answer to a callback.
    device: bool,
    /// Its callback was reported: a token request sent again (with the provider's DPoP
    /// nonce) is not a second callback.
    called_back: bool,
}

struct State<R: Runtime> {
    engine: Engine,
    conns: BTreeMap<ConnId, ConnHandle<R>>,
    flows: BTreeMap<FlowId, FlowHandle>,
    /// What the timer task sleeps until.
    alarm: Alarm,
    /// Shutting down: no new logins, and ended logins are not reported (their starters
    /// hear that the service stopped).
    stopping: bool,
}

/// A token request the draining task must send.
pub(super) struct Exchange {
    pub exchange: ExchangeId,
    pub request: ProviderRequest,
    pub span: Span,
}

/// A key-set fetch the draining task must send: the ID tokens of every login waiting for it
/// are verified when it ends.
pub(super) struct Fetch {
    pub id: RequestId,
    pub request: ProviderRequest,
}

/// A record the draining task must store in the flow directory.
pub(super) struct Share {
    pub flow: FlowId,
    pub key: FlowKey,
    pub record: FlowRecord,
    pub lifetime: Duration,
}

/// Something the draining task must tell the flow directory, without an answer.
pub(super) enum Notice {
    Spend(FlowKey),
    Announce(Announcement),
}

/// Tokens the draining task must store.
pub(super) struct Persist {
    pub flow: FlowId,
    pub key: String,
    pub tokens: TokenSet,
    pub span: Span,
}

/// What a drain left for the task that drained it.
#[derive(Default)]
pub(super) struct Work {
    /// The token request of the draining task's own login, if any: sent by that task.
    pub exchange: Option<Exchange>,
    /// Token requests of other logins that fell due in the same input (device logins'
    /// polls at one timer): each sent by a task of its own, at once.
    pub others: Vec<Exchange>,
    /// Several when key sets of several providers are due at once.
    pub fetch: VecDeque<Fetch>,
    /// Several when a key set arrived for several logins at once.
    pub persist: VecDeque<Persist>,
    /// Records to take from the flow directory, for waiting callbacks.
    pub takes: VecDeque<(TakeId, FlowKey)>,
    /// Records to store in the flow directory.
    pub shares: VecDeque<Share>,
    pub notices: Vec<Notice>,
    /// The answer for the draining connection itself.
    pub answer: Option<ConnCommand>,
    /// The authorization URL of a flow just started.
    pub opened: Option<(FlowId, String)>,
}

impl Work {
    /// Adds a token request: the first is the draining task's, the others each get a task.
    fn send(&mut self, exchange: Exchange) {
        match self.exchange {
            None => self.exchange = Some(exchange),
            Some(_) => self.others.push(exchange),
        }
    }

    /// Whether something is left to send or store.
    pub fn has_io(&self) -> bool {
        self.exchange.is_some()
            || !self.others.is_empty()
            || !self.fetch.is_empty()
            || !self.persist.is_empty()
            || !self.takes.is_empty()
            || !self.shares.is_empty()
            || !self.notices.is_empty()
    }

    /// This work, following what is left of `earlier` (whose request has been taken).
    fn after(mut self, mut earlier: Work) -> Work {
        fn join<T>(mut earlier: VecDeque<T>, later: VecDeque<T>) -> VecDeque<T> {
            earlier.extend(later);
            earlier
        }
        self.others.append(&mut earlier.others);
        self.fetch = join(earlier.fetch, self.fetch);
        self.persist = join(earlier.persist, self.persist);
        self.takes = join(earlier.takes, self.takes);
        self.shares = join(earlier.shares, self.shares);
        let mut notices = earlier.notices;
        notices.append(&mut self.notices);
        self.notices = notices;
        self.answer = self.answer.or(earlier.answer);
        self
    }
}

/// The engine, its connections and logins, and the service's I/O.
pub(super) struct Shared<R: Runtime> {
    pub runtime: R,
    pub store: Arc<dyn TokenStore>,
    pub directory: Option<Arc<dyn FlowDirectory>>,
    pub key_sets: Option<Arc<dyn KeySetCache>>,
    pub transport: Transport,
    pub max_head: usize,
    state: Mutex<State<R>>,
}

impl<R: Runtime> Shared<R> {
    pub fn new(
        runtime: R,
        engine: Engine,
        store: Arc<dyn TokenStore>,
        directory: Option<Arc<dyn FlowDirectory>>,
        key_sets: Option<Arc<dyn KeySetCache>>,
        transport: Transport,
    ) -> Shared<R> {
        let max_head = engine.config().limits().max_head_bytes;
        Shared {
            runtime,
            store,
            directory,
            key_sets,
            transport,
            max_head,
            state: Mutex::new(State {
                engine,
                conns: BTreeMap::new(),
                flows: BTreeMap::new(),
                alarm: Alarm::new(),
                stopping: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<R>> {
        // The engine never panics; a panic elsewhere under the lock leaves maps that are
        // each updated in one step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Feeds an input to the engine as `me` (a connection, or nobody) and routes the
    /// actions; what `me` must do itself comes back.
    pub fn input(&self, me: Option<ConnId>, feed: impl FnOnce(&mut Engine, Instant)) -> Work {
        let now = self.runtime.now();
        let mut state = self.lock();
        feed(&mut state.engine, now);
        self.drain(&mut state, me, now)
    }

    /// Routes every pending action; re-arms the timer if the next deadline moved earlier.
    fn drain(&self, state: &mut State<R>, me: Option<ConnId>, now: Instant) -> Work {
        let mut work = Work::default();
        while let Some(action) = state.engine.poll_action() {
            match action {
                Action::OpenBrowser { flow, url } => work.opened = Some((flow, url)),
                Action::Respond {
                    conn,
                    status,
                    bytes,
                } => {
                    debug!(
                        conn = conn.get(),
                        status = status.as_u16(),
                        "answered the browser"
                    );
                    self.tell(state, me, conn, ConnCommand::Respond(bytes), &mut work);
                }
                Action::Close { conn } => {
                    debug!(conn = conn.get(), "closed a browser connection unanswered");
                    self.tell(state, me, conn, ConnCommand::Close, &mut work);
                }
                Action::SendTokenRequest {
                    flow,
                    exchange,
                    request,
                } => {
                    let span = match state.flows.get_mut(&flow) {
                        Some(handle) if handle.device => {
                            let span = handle.span.clone();
                            span.in_scope(|| debug!("polling the token endpoint"));
                            span
                        }
                        Some(handle) if handle.called_back => {
                            let span = handle.span.clone();
                            span.in_scope(|| debug!("requesting tokens again, with a DPoP nonce"));
                            span
                        }
                        handle => {
                            if let Some(handle) = handle {
                                handle.called_back = true;
                            }
                            let span = notify(state, flow, LoginEvent::Callback);
                            span.in_scope(|| info!("callback accepted; requesting tokens"));
                            span
                        }
                    };
                    work.send(Exchange {
                        exchange,
                        request,
                        span,
                    });
                }
                Action::Persist { flow, tokens } => {
                    let span = notify(state, flow, LoginEvent::Tokens(tokens.clone()));
                    span.in_scope(|| {
                        info!(
                            token_type = tokens.token_type().as_str(),
                            refresh_token = tokens.refresh_token().is_some(),
                            "tokens received; storing them"
                        );
                    });
                    let key = state
                        .engine
                        .flow_owner(flow)
                        .unwrap_or(DEFAULT_KEY)
                        .to_owned();
                    work.persist.push_back(Persist {
                        flow,
                        key,
                        tokens,
                        span,
                    });
                }
                // RFC 9126: sent as a token request is; the URL comes out of the answer's
                // drain (`Shared::push`, which `Service::start_async` waits for).
                Action::PushAuthorization {
                    flow,
                    exchange,
                    request,
                } => {
                    let span = state
                        .flows
                        .get(&flow)
                        .map_or_else(Span::none, |handle| handle.span.clone());
                    work.send(Exchange {
                        exchange,
                        request,
                        span,
                    });
                }
                Action::RequestDeviceCode {
                    flow,
                    exchange,
                    request,
                } => {
                    let span = state
                        .flows
                        .get(&flow)
                        .map_or_else(Span::none, |handle| handle.span.clone());
                    let endpoint = request.request().uri();
                    span.in_scope(|| info!(%endpoint, "requesting a user code"));
                    work.send(Exchange {
                        exchange,
                        request,
                        span,
                    });
                }
                Action::ShowUserCode {
                    flow,
                    authorization,
                } => {
                    let span = notify(state, flow, LoginEvent::UserCode(authorization.clone()));
                    span.in_scope(|| {
                        info!(
                            verification_uri = authorization.verification_uri(),
                            interval = ?authorization.interval(),
                            lifetime = ?authorization.lifetime(),
                            "user code received; waiting for the user's approval"
                        );
                    });
                }
                Action::FetchKeys { id, request } => {
                    debug!(fetch = id.get(), uri = %request.uri(), "fetching the provider's key set");
                    work.fetch.push_back(Fetch {
                        id,
                        request: ProviderRequest::complete(request),
                    });
                }
                Action::ShareFlow {
                    flow,
                    key,
                    record,
                    lifetime,
                } => work.shares.push_back(Share {
                    flow,
                    key,
                    record,
                    lifetime,
                }),
                Action::TakeFlow { flow, take, key } => {
                    // A callback for a login started elsewhere gets a span of its own.
                    state.flows.entry(flow).or_insert_with(|| FlowHandle {
                        span: tracing::info_span!("login", flow = flow.get(), adopted = true),
                        started: now,
                        events: None,
                        waiters: Vec::new(),
                        device: false,
                        called_back: false,
                    });
                    debug!(
                        take = take.get(),
                        "taking a shared login from the flow directory"
                    );
                    work.takes.push_back((take, key));
                }
                Action::SpendFlow { key } => work.notices.push(Notice::Spend(key)),
                Action::AnnounceOutcome { announcement } => {
                    work.notices.push(Notice::Announce(announcement));
                }
                Action::Finished { flow, result } => finish(state, flow, result, now),
            }
        }
        let next = state.engine.poll_timeout();
        if state.alarm.moved(next) {
            state.alarm.wake();
        }
        work
    }

    /// Hands `command` to connection `conn`: `me`'s own comes back in `work`.
    fn tell(
        &self,
        state: &mut State<R>,
        me: Option<ConnId>,
        conn: ConnId,
        command: ConnCommand,
        work: &mut Work,
    ) {
        let Some(handle) = state.conns.remove(&conn) else {
            return;
        };
        if me == Some(conn) {
            work.answer = Some(command);
        } else if handle.mailbox.try_send(command).is_err() {
            return; // the task is gone already
        }
        // The task ends by itself once it has written or closed; dropping it here would
        // cancel it mid-write (or, for `me`, cancel the running task itself).
        if let Some(task) = handle.task {
            self.runtime.detach(task);
        }
    }

    /// A browser connected: the engine takes it (or refuses it at the cap, S27), and its
    /// task is spawned with its id and mailbox, all under one lock.
    pub fn accept(
        &self,
        spawn: impl FnOnce(ConnId, Receiver<ConnCommand>) -> R::Task,
    ) -> Option<ConnId> {
        let now = self.runtime.now();
        let mut state = self.lock();
        let conn = state.engine.handle_accept(now);
        if let Some(conn) = conn {
            let (mailbox, inbox) = async_channel::bounded(1);
            let task = Some(spawn(conn, inbox));
            state.conns.insert(conn, ConnHandle { mailbox, task });
        }
        // An idle connection closed to make room, perhaps.
        let work = self.drain(&mut state, None, now);
        debug_assert!(!work.has_io());
        conn
    }

    /// Starts a flow with the engine, a browser login with `entropy` or a device login
    /// without; its login's events go to `events`. A browser login's authorization URL
    /// comes back.
    pub fn start(
        &self,
        entropy: Option<[u8; latchkey::ENTROPY_LEN]>,
        options: FlowOptions,
        events: Postman,
    ) -> Result<(FlowId, Option<String>, Work), super::Error> {
        let now = self.runtime.now();
        let mut state = self.lock();
        if state.stopping {
            return Err(super::Error::Stopped);
        }
        let started: Result<FlowId, StartError> = match entropy {
            Some(entropy) => state.engine.start_with(now, entropy, options),
            None => state.engine.start_device(now, options),
        };
        let flow = started.map_err(super::Error::Start)?;
        let span = match state.engine.flow_provider(flow) {
            Some(provider) => tracing::info_span!(
                "login",
                flow = flow.get(),
                provider = %crate::log::ProviderName(provider)
            ),
            None => Span::none(),
        };
        let device = entropy.is_none();
        span.in_scope(|| match device {
            true => info!("device login started"),
            false => info!("login started; waiting for the browser"),
        });
        state.flows.insert(
            flow,
            FlowHandle {
                span,
                started: now,
                events: Some(events),
                waiters: Vec::new(),
                device,
                called_back: false,
            },
        );
        let mut work = self.drain(&mut state, None, now);
        match work.opened.take() {
            Some((opened, url)) if opened == flow => Ok((flow, Some(url), work)),
            // A device login; a shared one, whose URL comes once the directory has it; or
            // one whose authorization request is pushed first (RFC 9126), whose URL comes
            // with the provider's answer.
            None if device || !work.shares.is_empty() || work.exchange.is_some() => {
                Ok((flow, None, work))
            }
            // The engine opens the browser in the same call that starts a flow.
            _ => {
                debug_assert!(false, "flow {flow} started without its authorization URL");
                Err(super::Error::Io(std::io::Error::other(
                    "the engine started a login without its authorization URL",
                )))
            }
        }
    }

    /// Cancels every login and stops taking new ones; their starters hear that the service
    /// stopped. Browsers waiting on a login still get their answers; connections that have
    /// not sent a callback are closed.
    pub fn stop(&self) -> Work {
        let now = self.runtime.now();
        let (work, idle) = {
            let mut state = self.lock();
            state.stopping = true;
            // The logins' channels close: their starters see `Error::Stopped`.
            let flows = std::mem::take(&mut state.flows);
            for (flow, handle) in flows {
                handle
                    .span
                    .in_scope(|| info!("login ended: the service stopped"));
                state.engine.cancel(now, flow);
            }
            let work = self.drain(&mut state, None, now);
            (work, std::mem::take(&mut state.conns))
        };
        // Dropped outside the lock: their tasks are cancelled and their sockets closed.
        drop(idle);
        work
    }

    /// Forgets everything at once (the service was dropped): the logins' channels close and
    /// the connection tasks are cancelled.
    pub fn abandon(&self) {
        let (flows, conns) = {
            let mut state = self.lock();
            state.stopping = true;
            (
                std::mem::take(&mut state.flows),
                std::mem::take(&mut state.conns),
            )
        };
        // Dropped outside the lock: a cancelled task may be dropped right here.
        drop(flows);
        drop(conns);
    }

    /// The engine's next deadline, which the timer task now sleeps until, and what wakes
    /// it earlier.
    pub fn arm_timer(&self) -> (Option<Instant>, Receiver<()>) {
        let mut state = self.lock();
        let next = state.engine.poll_timeout();
        (state.alarm.arm(next), state.alarm.woken())
    }

    /// Sends `request`, logging the answer's status (`answered`) or the failure (`failed`)
    /// with the time it took.
    async fn send(
        &self,
        request: ProviderRequest,
        answered: &'static str,
        failed: &'static str,
    ) -> crate::transport::TokenResult {
        let sent = self.runtime.now();
        // Boxed: the client's state (TLS included) is large, and a connection task should
        // not carry it from the start for a request it may never send.
        let result = Box::pin(self.transport.send_finished(&self.runtime, request)).await;
        let elapsed = self.runtime.now().saturating_duration_since(sent);
        match &result {
            Ok(response) => info!(status = response.status().as_u16(), ?elapsed, "{answered}"),
            Err(error) => warn!(%error, ?elapsed, "{failed}"),
        }
        result
    }

    /// Carries out `work` for `me`: sends the token request, fetches the key set, stores the
    /// tokens of every login the work names, and feeds each outcome back, until only `me`'s
    /// answer (if any) is left. While a token request is in flight, an answer arriving in
    /// `me`'s mailbox (the login was cancelled) ends the wait.
    pub async fn carry_out(
        self: &Arc<Self>,
        me: Option<ConnId>,
        mut work: Work,
        mailbox: Option<&Receiver<ConnCommand>>,
    ) -> Option<ConnCommand> {
        loop {
            for other in std::mem::take(&mut work.others) {
                spawn_work(
                    self,
                    Work {
                        exchange: Some(other),
                        ..Work::default()
                    },
                );
            }
            if let Some(Exchange {
                exchange,
                request,
                span,
            }) = work.exchange.take()
            {
                let sending = self
                    .send(request, "token endpoint answered", "token request failed")
                    .instrument(span);
                let result = match mailbox {
                    Some(mailbox) => {
                        let answered = future::or(async { Some(sending.await) }, async {
                            work.answer = mailbox.recv().await.ok();
                            None
                        })
                        .await;
                        match answered {
                            Some(result) => result,
                            // Ended while the request was in flight: the engine has
                            // forgotten the exchange; abandon it.
                            None => return work.answer,
                        }
                    }
                    None => sending.await,
                };
                let wall = self.runtime.wall();
                let next = self.input(me, |engine, now| match result {
                    Ok(response) => engine.handle_token_response(now, wall, exchange, response),
                    Err(error) => engine.handle_token_failure(now, exchange, error),
                });
                work = next.after(work);
                continue;
            }
            if let Some(Fetch { id, request }) = work.fetch.pop_front() {
                // Not abandoned when this login ends meanwhile: other logins may wait for
                // the same keys, and the answer fills the engine's cache.
                let result = self
                    .send(request, "key set fetched", "key-set fetch failed")
                    .await;
                let wall = self.runtime.wall();
                let fetched = result.is_ok();
                let next = self.input(me, |engine, now| match result {
                    Ok(response) => engine.handle_keys_response(now, wall, id, response),
                    Err(error) => engine.handle_keys_failure(now, id, error),
                });
                work = next.after(work);
                if fetched {
                    self.export_key_sets().await;
                }
                continue;
            }
            if let Some(Persist {
                flow,
                key,
                tokens,
                span,
            }) = work.persist.pop_front()
            {
                let started = self.runtime.now();
                let result = if self.store.blocks() {
                    let store = Arc::clone(&self.store);
                    self.runtime
                        .unblock(move || store.save(&key, &tokens))
                        .await
                } else {
                    self.store.save(&key, &tokens)
                };
                let elapsed = self.runtime.now().saturating_duration_since(started);
                span.in_scope(|| match &result {
                    Ok(()) => info!(?elapsed, "tokens stored"),
                    Err(error) => warn!(%error, ?elapsed, "storing the tokens failed"),
                });
                let next = self.input(me, |engine, now| engine.handle_persisted(now, flow, result));
                work = next.after(work);
                continue;
            }
            if let Some((take, key)) = work.takes.pop_front() {
                let result = self
                    .with_directory(move |directory| directory.take(&key))
                    .await;
                match &result {
                    Ok(taken) => debug!(take = take.get(), ?taken, "flow directory answered"),
                    Err(error) => warn!(take = take.get(), %error, "flow directory unavailable"),
                }
                let wall = self.runtime.wall();
                let next = self.input(me, |engine, now| {
                    engine.handle_flow_taken(now, wall, take, result);
                });
                work = next.after(work);
                continue;
            }
            if let Some(Share {
                flow,
                key,
                record,
                lifetime,
            }) = work.shares.pop_front()
            {
                let result = self
                    .with_directory(move |directory| directory.share(&key, &record, lifetime))
                    .await;
                if let Err(error) = &result {
                    warn!(flow = flow.get(), %error, "the flow directory did not take the login");
                }
                let next = self.input(me, |engine, now| {
                    engine.handle_flow_shared(now, flow, result);
                });
                work = next.after(work);
                continue;
            }
            for notice in std::mem::take(&mut work.notices) {
                let result = self
                    .with_directory(move |directory| match &notice {
                        Notice::Spend(key) => directory.spend(key),
                        Notice::Announce(announcement) => directory.announce(announcement),
                    })
                    .await;
                if let Err(error) = result {
                    warn!(%error, "the flow directory could not be told");
                }
            }
            // Every store done (other logins' too, when one key set served several): now
            // `me`'s own answer, if it has one.
            return work.answer;
        }
    }
}

impl<R: Runtime> Shared<R> {
    /// Runs `operation` on the flow directory, on the blocking pool.
    async fn with_directory<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&dyn FlowDirectory) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(directory) = self.directory.clone() else {
            return Err(StoreError::new("no flow directory is configured"));
        };
        // Boxed: the runtime's future, awaited through `&self`, would otherwise keep the
        // callers' futures from being `Send` for every lifetime (an axum handler's, say).
        let unblocked: Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + '_>> =
            Box::pin(self.runtime.unblock(move || operation(directory.as_ref())));
        unblocked.await
    }

    /// Stores the record of the shared flow `flow` that `work` (its start's) carries, and
    /// returns the authorization URL the engine then gives out; `None` when the flow
    /// ended instead (its login hears why).
    pub async fn share(self: &Arc<Self>, flow: FlowId, mut work: Work) -> Option<String> {
        let share = work.shares.pop_front();
        spawn_work(self, work);
        let Share {
            key,
            record,
            lifetime,
            ..
        } = share?;
        let result = self
            .with_directory(move |directory| directory.share(&key, &record, lifetime))
            .await;
        if let Err(error) = &result {
            warn!(flow = flow.get(), %error, "the flow directory did not take the login");
        }
        let mut work = self.input(None, |engine, now| {
            engine.handle_flow_shared(now, flow, result);
        });
        let opened = work.opened.take();
        spawn_work(self, work);
        opened
            .filter(|(opened, _)| *opened == flow)
            .map(|(_, url)| url)
    }

    /// Whether `flow`'s provider pushes its authorization requests (RFC 9126).
    pub fn pushes(&self, flow: FlowId) -> bool {
        self.lock()
            .engine
            .flow_provider(flow)
            .is_some_and(latchkey::Provider::pushes_authorization_requests)
    }

    /// Pushes `flow`'s authorization request (RFC 9126, the exchange `work` carries) and
    /// gives the browser's URL once the provider answered (and, for a shared flow, once
    /// the directory has its record); `None` when the push or the share failed, and the
    /// login then ends with why.
    pub async fn push(self: &Arc<Self>, flow: FlowId, mut work: Work) -> Option<String> {
        let push = work.exchange.take();
        spawn_work(self, work);
        let Exchange {
            exchange,
            request,
            span,
        } = push?;
        let result = self
            .send(
                request,
                "pushed authorization request answered",
                "pushed authorization request failed",
            )
            .instrument(span)
            .await;
        let wall = self.runtime.wall();
        let mut work = self.input(None, |engine, now| match result {
            Ok(response) => engine.handle_token_response(now, wall, exchange, response),
            Err(error) => engine.handle_token_failure(now, exchange, error),
        });
        if !work.shares.is_empty() {
            // A shared flow: its record goes to the directory before the browser goes
            // anywhere.
            return self.share(flow, work).await;
        }
        let opened = work.opened.take();
        spawn_work(self, work);
        opened
            .filter(|(opened, _)| *opened == flow)
            .map(|(_, url)| url)
    }

    /// Takes in the key sets another replica shared ([`KeySetCache`]), on this thread.
    pub fn import_key_sets(&self) {
        let Some(cache) = &self.key_sets else {
            return;
        };
        match cache.load() {
            Ok(Some(document)) => {
                let wall = self.runtime.wall();
                let mut imported = Ok(0);
                let work = self.input(None, |engine, now| {
                    imported = engine.import_key_sets(now, wall, &document);
                });
                debug_assert!(!work.has_io());
                match imported {
                    Ok(count) => debug!(count, "key sets shared by other replicas taken in"),
                    Err(error) => warn!(%error, "the shared key sets are unusable"),
                }
            }
            Ok(None) => {}
            Err(error) => warn!(%error, "the shared key sets could not be read"),
        }
    }

    /// Shares the engine's key sets with other replicas ([`KeySetCache`]).
    async fn export_key_sets(&self) {
        let Some(cache) = self.key_sets.clone() else {
            return;
        };
        let document = self.lock().engine.export_key_sets();
        if let Err(error) = self.runtime.unblock(move || cache.save(&document)).await {
            warn!(%error, "the key sets could not be shared");
        }
    }

    /// Hands a callback that reached the application to the engine; `waiter` hears how
    /// its login ends.
    pub fn redirect(
        &self,
        uri_or_query: &str,
        waiter: Option<Sender<Result<TokenSet, FlowError>>>,
    ) -> (Result<FlowId, Rejection>, Work) {
        let now = self.runtime.now();
        let mut state = self.lock();
        let verdict = state.engine.handle_redirect(now, uri_or_query);
        if let (Ok(flow), Some(waiter)) = (&verdict, waiter) {
            let handle = state.flows.entry(*flow).or_insert_with(|| FlowHandle {
                span: tracing::info_span!("login", flow = flow.get(), adopted = true),
                started: now,
                events: None,
                waiters: Vec::new(),
                device: false,
                called_back: false,
            });
            handle.waiters.push(waiter);
        }
        let work = self.drain(&mut state, None, now);
        (verdict, work)
    }

    /// Another replica announced how a login it adopted ended: the login started here
    /// finishes with it, with the tokens read back from the store. Runs on the directory's
    /// listening thread, where the store may block.
    pub fn heard(&self, announcement: Announcement) -> Work {
        let key = {
            let state = self.lock();
            let Some(flow) = state.engine.shared_flow(&announcement.key) else {
                return Work::default(); // another replica's login
            };
            state
                .engine
                .flow_owner(flow)
                .unwrap_or(DEFAULT_KEY)
                .to_owned()
        };
        let result = match announcement.outcome {
            Outcome::Stored => match self.store.load(&key) {
                Ok(Some(tokens)) => Ok(tokens),
                Ok(None) => Err(FlowError::Storage(StoreError::new(
                    "the login finished on another replica, but its tokens are not in the store",
                ))),
                Err(error) => Err(FlowError::Storage(error)),
            },
            Outcome::Failed(reason) => Err(FlowError::FailedElsewhere(reason)),
        };
        self.input(None, |engine, now| {
            engine.handle_outcome(now, &announcement.key, result);
        })
    }
}

/// Runs what a drain outside any connection left (a token request a forwarded callback
/// started, tokens whose key set arrived on the timer) on a task of its own.
pub(super) fn spawn_work<R: Runtime>(shared: &Arc<Shared<R>>, work: Work) {
    if !work.has_io() {
        return;
    }
    let task = shared.runtime.spawn({
        let shared = Arc::clone(shared);
        async move {
            shared.carry_out(None, work, None).await;
        }
    });
    shared.runtime.detach(task);
}

impl<R: Runtime> Canceller for Shared<R> {
    fn cancel(&self, flow: FlowId) {
        let work = self.input(None, |engine, now| engine.cancel(now, flow));
        debug_assert!(!work.has_io());
    }
}

/// Tells `flow`'s login of `event`; its span.
fn notify<R: Runtime>(state: &State<R>, flow: FlowId, event: LoginEvent) -> Span {
    match state.flows.get(&flow) {
        Some(handle) => {
            if let Some(events) = &handle.events {
                events.post(event);
            }
            handle.span.clone()
        }
        None => Span::none(),
    }
}

/// Reports a flow's end to its login and forgets it.
fn finish<R: Runtime>(
    state: &mut State<R>,
    flow: FlowId,
    result: Result<TokenSet, FlowError>,
    now: Instant,
) {
    let Some(handle) = state.flows.remove(&flow) else {
        return; // shutting down: its starter hears that the service stopped
    };
    let elapsed = now.saturating_duration_since(handle.started);
    handle.span.in_scope(|| match &result {
        Ok(_) => info!(?elapsed, "login finished"),
        Err(error @ (FlowError::Cancelled | FlowError::Superseded)) => {
            info!(%error, ?elapsed, "login ended");
        }
        Err(error) => warn!(%error, ?elapsed, "login failed"),
    });
    for waiter in handle.waiters {
        let _ = waiter.try_send(result.clone());
    }
    if let Some(events) = handle.events {
        if result.is_ok() {
            events.post(LoginEvent::Stored);
        }
        events.post(LoginEvent::Finished(result));
    }
}
