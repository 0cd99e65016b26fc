//! Running one scenario on both drivers, and one call through a bare [`Session`] with real
//! HTTP, shared by the driver, lifecycle, interop and hostile-load tests (each includes this
//! module with `#[macro_use] mod support;`).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime};

use latchkey::{FlowError, Session, SessionAction, TokenSet};
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::proxy::Proxy;
use latchkey_io::runtime::Runtime;
use latchkey_io::service::{Elapsed, Login, LoginEvent};
use latchkey_io::transport::Transport;
use latchkey_smol::Smol;
use latchkey_tokio::Tokio;
use smol::future;

/// Instantiates each `async fn scenario<R: Runtime>(rt: R)` as a `smol` and a `tokio` test in
/// a module of the scenario's name, each bounded by the constant `$limit` of the including
/// file. Attributes (`#[ignore = "…"]`) go on both tests.
#[allow(unused_macros)] // not every including file runs scenarios this way
macro_rules! on_both_drivers {
    ($limit:ident; $($(#[$attr:meta])* $scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                $(#[$attr])*
                fn smol() {
                    crate::support::run_smol(super::$scenario, super::$limit);
                }

                #[test]
                $(#[$attr])*
                fn tokio() {
                    crate::support::run_tokio(super::$scenario, super::$limit);
                }
            }
        )*
    };
}

/// Runs `scenario` on smol, failing it after `limit`.
pub fn run_smol<F, Fut>(scenario: F, limit: Duration)
where
    F: FnOnce(Smol) -> Fut,
    Fut: Future<Output = ()>,
{
    // `block_on` drives only the scenario; the driver's tasks run on smol's global executor.
    smol::block_on(within(&Smol, limit, "the scenario", scenario(Smol)));
}

/// Runs `scenario` on a fresh two-thread tokio runtime, failing it after `limit`.
pub fn run_tokio<F, Fut>(scenario: F, limit: Duration)
where
    F: FnOnce(Tokio) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(within(&Tokio, limit, "the scenario", scenario(Tokio)))
    }));
    // A failed scenario may leave a blocking call behind (an agent, a provider that does not
    // start): do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// `work`'s output, or a panic naming `what` once `limit` has passed.
pub async fn within<R: Runtime, T>(
    rt: &R,
    limit: Duration,
    what: &str,
    work: impl Future<Output = T>,
) -> T {
    let deadline = rt.now() + limit;
    future::or(work, async {
        rt.sleep_until(deadline).await;
        panic!("{what} did not complete within {limit:?}");
    })
    .await
}

/// Every event of `login` up to and including `Finished`, within `limit`.
#[allow(dead_code)] // not every including file reads events
pub async fn events<R: Runtime>(rt: &R, login: &Login, limit: Duration) -> Vec<LoginEvent> {
    let deadline = rt.now() + limit;
    let mut events = Vec::new();
    loop {
        match login.next_event_by(rt, deadline).await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return events,
            Err(Elapsed) => panic!("the login did not finish within {limit:?}: {events:?}"),
        }
    }
}

/// The outcome among `events`, checking that there is exactly one and that it comes last.
#[allow(dead_code)] // not every including file reads events
pub fn outcome(events: &[LoginEvent]) -> Result<TokenSet, FlowError> {
    let finished: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            LoginEvent::Finished(result) => Some(result.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1, "exactly one outcome: {events:?}");
    assert!(
        matches!(events.last(), Some(LoginEvent::Finished(_))),
        "the outcome comes last: {events:?}"
    );
    finished.into_iter().next().expect("one outcome")
}

/// Drives `session` on the calling thread until it answers a call: the store is `store`
/// (under [`DEFAULT_KEY`](latchkey_io::store::DEFAULT_KEY)), and each request goes out through
/// `send`, which may change it first. Returns the answer ([`SessionAction::Tokens`] or
/// [`SessionAction::LoggedOut`]).
#[allow(dead_code)] // not every including file drives a bare session
pub fn settle(
    session: &mut Session,
    store: &dyn latchkey_io::store::TokenStore,
    mut send: impl FnMut(http::Request<Vec<u8>>) -> latchkey_io::transport::TokenResult,
) -> SessionAction {
    use latchkey_io::store::DEFAULT_KEY;
    loop {
        let action = session
            .poll_action()
            .expect("a session with a call in progress always has something to do");
        let (now, wall) = (Instant::now(), SystemTime::now());
        match action {
            SessionAction::Load { op } => {
                session.handle_loaded(now, wall, op, store.load(DEFAULT_KEY))
            }
            SessionAction::Save { op, tokens, .. } => {
                session.handle_saved(now, wall, op, store.save(DEFAULT_KEY, &tokens));
            }
            SessionAction::Delete { op, .. } => {
                session.handle_deleted(now, op, store.delete(DEFAULT_KEY))
            }
            SessionAction::Send { id, request, .. } => {
                match send(request.finish(SystemTime::now()).expect("signed")) {
                    Ok(response) => {
                        session.handle_response(Instant::now(), SystemTime::now(), id, response)
                    }
                    Err(error) => session.handle_failure(Instant::now(), id, error),
                }
            }
            answer => return answer,
        }
    }
}

/// The kinds of token a logout sent for revocation, in order.
#[allow(dead_code)] // not every including file logs out
pub fn revoked_kinds(report: &latchkey::LogoutReport) -> Vec<latchkey::TokenKind> {
    report.revocations.iter().map(|(kind, _)| *kind).collect()
}

/// Sends `request` with `client` from a thread without a runtime.
#[allow(dead_code)] // not every including file sends requests itself
pub fn send_blocking(
    client: &latchkey_io::http::HttpClient,
    request: &http::Request<Vec<u8>>,
) -> latchkey_io::transport::TokenResult {
    smol::block_on(client.send_on(&Smol, request))
}

/// A forced refresh of `tokens` at `provider`: a fresh [`Session`] whose store (memory, its
/// own) holds `tokens`, settled with `send`. The refresh's own error when it fails; any
/// other failure (transport, store) panics.
#[allow(dead_code)] // not every including file refreshes through a bare session
pub fn refresh_with(
    provider: &latchkey::Provider,
    tokens: &TokenSet,
    send: impl FnMut(http::Request<Vec<u8>>) -> latchkey_io::transport::TokenResult,
) -> Result<TokenSet, latchkey::RefreshError> {
    let store = stored(tokens);
    let mut session = Session::new(provider.clone());
    session.refresh(Instant::now());
    match settle(&mut session, &store, send) {
        SessionAction::Tokens { result, .. } => result.map_err(|error| match error {
            latchkey::SessionError::Refresh(error) => error,
            other => panic!("the refresh failed before the provider's answer: {other:?}"),
        }),
        other => panic!("a refresh answered with {other:?}"),
    }
}

/// A logout of `tokens` at `provider`, as [`refresh_with`] refreshes; the report, after
/// checking that the (session's own) store was emptied.
#[allow(dead_code)] // not every including file logs out through a bare session
pub fn logout_with(
    provider: &latchkey::Provider,
    tokens: &TokenSet,
    send: impl FnMut(http::Request<Vec<u8>>) -> latchkey_io::transport::TokenResult,
) -> latchkey::LogoutReport {
    use latchkey_io::store::{DEFAULT_KEY, TokenStore};
    let store = stored(tokens);
    let mut session = Session::new(provider.clone());
    session.logout(Instant::now());
    let report = match settle(&mut session, &store, send) {
        SessionAction::LoggedOut { result, .. } => result.expect("the logout deleted the tokens"),
        other => panic!("a logout answered with {other:?}"),
    };
    assert!(
        store.load(DEFAULT_KEY).expect("readable").is_none(),
        "deleted"
    );
    report
}

/// A memory store holding `tokens` under the default key.
#[allow(dead_code)] // used by the helpers above only
fn stored(tokens: &TokenSet) -> latchkey_io::store::MemoryStore {
    use latchkey_io::store::{DEFAULT_KEY, TokenStore};
    let store = latchkey_io::store::MemoryStore::default();
    store.save(DEFAULT_KEY, tokens).expect("stored");
    store
}

/// A runtime whose clocks stand still until a test moves them: `R`'s tasks, sockets and
/// blocking pool, with a virtual monotonic clock, a virtual wall clock and timers on them.
/// Deadlines of hours pass in microseconds, and nothing depends on the machine's speed.
#[derive(Clone)]
#[allow(dead_code)] // not every including file runs in virtual time
pub struct Virtual<R> {
    inner: R,
    clock: std::sync::Arc<VirtualClock>,
    /// Entropy for every login instead of the operating system's, when set.
    entropy: Option<[u8; latchkey::ENTROPY_LEN]>,
    /// An address whose connections never get an answer (nothing on loopback black-holes a
    /// SYN), when set.
    silent: Option<std::net::SocketAddr>,
    /// Every connection attempt, and the virtual instant it started at.
    connections: std::sync::Arc<std::sync::Mutex<Vec<(std::net::SocketAddr, Instant)>>>,
}

/// The clocks of a [`Virtual`] runtime, and the timers waiting on them.
pub struct VirtualClock {
    state: std::sync::Mutex<ClockState>,
}

struct ClockState {
    now: Instant,
    wall: SystemTime,
    sleepers: Vec<(Instant, std::task::Waker)>,
}

#[allow(dead_code)] // not every including file runs in virtual time
impl<R: Runtime> Virtual<R> {
    /// `inner` with virtual clocks, starting now.
    pub fn new(inner: R) -> Virtual<R> {
        Virtual {
            inner,
            clock: std::sync::Arc::new(VirtualClock {
                state: std::sync::Mutex::new(ClockState {
                    now: Instant::now(),
                    wall: SystemTime::now(),
                    sleepers: Vec::new(),
                }),
            }),
            entropy: None,
            silent: None,
            connections: std::sync::Arc::default(),
        }
    }

    /// The same runtime, leaving connections to `address` pending forever.
    pub fn with_silent(mut self, address: std::net::SocketAddr) -> Virtual<R> {
        self.silent = Some(address);
        self
    }

    /// Every connection attempted so far, with the virtual instant it started at.
    pub fn connections(&self) -> Vec<(std::net::SocketAddr, Instant)> {
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The same runtime, handing every login this entropy (a broken random source).
    pub fn with_entropy(mut self, entropy: [u8; latchkey::ENTROPY_LEN]) -> Virtual<R> {
        self.entropy = Some(entropy);
        self
    }

    /// The clocks.
    pub fn clock(&self) -> &VirtualClock {
        &self.clock
    }

    /// The runtime underneath, with its real clocks (for a test's own time limits).
    pub fn real(&self) -> &R {
        &self.inner
    }
}

#[allow(dead_code)] // not every including file runs in virtual time
impl VirtualClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves both clocks `by` forward and wakes every timer now due.
    pub fn advance(&self, by: Duration) {
        let due: Vec<std::task::Waker> = {
            let mut state = self.lock();
            state.now += by;
            state.wall += by;
            let now = state.now;
            let (due, waiting) = std::mem::take(&mut state.sleepers)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            state.sleepers = waiting;
            due.into_iter().map(|(_, waker)| waker).collect()
        };
        due.into_iter().for_each(std::task::Waker::wake);
    }

    /// Moves the wall clock alone (`by` seconds, backwards when negative).
    pub fn jump_wall(&self, seconds: i64) {
        let mut state = self.lock();
        let by = Duration::from_secs(seconds.unsigned_abs());
        state.wall = if seconds >= 0 {
            state.wall + by
        } else {
            state.wall - by
        };
    }

    /// How many timers wait.
    pub fn sleepers(&self) -> usize {
        self.lock().sleepers.len()
    }
}

impl<R: Runtime> Runtime for Virtual<R> {
    type Task = R::Task;
    type Listener = R::Listener;
    type Stream = R::Stream;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> R::Task {
        self.inner.spawn(task)
    }

    fn detach(&self, task: R::Task) {
        self.inner.detach(task);
    }

    fn now(&self) -> Instant {
        self.clock.lock().now
    }

    fn wall(&self) -> SystemTime {
        self.clock.lock().wall
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send {
        let clock = std::sync::Arc::clone(&self.clock);
        std::future::poll_fn(move |cx| {
            let mut state = clock.lock();
            if state.now >= deadline {
                return std::task::Poll::Ready(());
            }
            if !state
                .sleepers
                .iter()
                .any(|(at, waker)| *at == deadline && waker.will_wake(cx.waker()))
            {
                state.sleepers.push((deadline, cx.waker().clone()));
            }
            std::task::Poll::Pending
        })
    }

    fn entropy(&self) -> std::io::Result<[u8; latchkey::ENTROPY_LEN]> {
        match self.entropy {
            Some(entropy) => Ok(entropy),
            None => self.inner.entropy(),
        }
    }

    fn unblock<T, W>(&self, work: W) -> impl Future<Output = T> + Send
    where
        T: Send + 'static,
        W: FnOnce() -> T + Send + 'static,
    {
        self.inner.unblock(work)
    }

    fn listener(&self, listener: std::net::TcpListener) -> std::io::Result<R::Listener> {
        self.inner.listener(listener)
    }

    fn accept<'a>(
        &'a self,
        listener: &'a R::Listener,
    ) -> impl Future<Output = std::io::Result<R::Stream>> + Send + 'a {
        self.inner.accept(listener)
    }

    fn connect(
        &self,
        address: std::net::SocketAddr,
    ) -> impl Future<Output = std::io::Result<R::Stream>> + Send {
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((address, self.now()));
        let silent = self.silent == Some(address);
        let connecting = self.inner.connect(address);
        async move {
            if silent {
                std::future::pending::<()>().await;
            }
            connecting.await
        }
    }
}

/// latchkey's own HTTP client, without a proxy (the tests' servers are on loopback).
#[allow(dead_code)] // not every including file sends through a service
pub fn transport() -> Transport {
    let client = HttpClient::new(HttpOptions {
        proxy: Proxy::none(),
        ..HttpOptions::default()
    })
    .expect("HTTP client");
    Transport::Builtin(client)
}
