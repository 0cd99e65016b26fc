//! The driver loop, written once for every async runtime.
//!
//! One task owns the [`Engine`]. It drains the engine's actions, carries each out, then waits
//! for whichever comes first: an event from the tasks it started or the engine's next
//! deadline. Around it:
//!
//! - an accept task per listening socket, handing each connection to the engine task;
//! - a task per browser connection, forwarding its bytes and writing the engine's answer;
//! - a short-lived task per token request, on the runtime's sockets;
//! - a short-lived task per save to a store that blocks, on the runtime's blocking pool (a
//!   store that never blocks is called in place).
//!
//! The runtime-specific part is the [`Runtime`] trait: spawning, sleeping, the blocking pool
//! and TCP. `latchkey-smol` and `latchkey-tokio` implement it and re-export this module's
//! API with their runtime filled in.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use bytes::Bytes;
use futures_lite::future;
use latchkey::{
    Action, Config, ConfigError, ConnId, Engine, ExchangeId, FlowError, FlowId, FlowOptions,
    Rejection, Step, StoreError, TokenSet, TransportError,
};
use tracing::{Instrument, Span, debug, info, info_span, warn};

use crate::entropy::entropy;
use crate::http::HttpClient;
use crate::log::ProviderName;
use crate::opener::Opener;
use crate::store::{DEFAULT_KEY, TokenStore};
use crate::tls::TlsError;

/// How long a connection may linger after its answer was written, waiting for the browser
/// to close first (closing with unread input would reset the connection and could lose
/// the answer).
const LINGER: Duration = Duration::from_secs(2);

/// What a driver needs from an async runtime.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A spawned task; dropping it cancels the task.
    type Task: Send + Sync + 'static;
    /// A listening TCP socket.
    type Listener: Send + Sync + 'static;
    /// A TCP connection.
    type Stream: Send + 'static;

    /// Runs `task` in the background.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> Self::Task;
    /// Lets `task` run to its end without being held.
    fn detach(task: Self::Task);
    /// Completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send;
    /// Runs blocking `work` off the async threads.
    fn unblock<T, W>(&self, work: W) -> impl Future<Output = T> + Send
    where
        T: Send + 'static,
        W: FnOnce() -> T + Send + 'static;
    /// Adopts a bound std listener.
    fn listener(&self, listener: TcpListener) -> io::Result<Self::Listener>;
    /// Accepts the next connection.
    fn accept(listener: &Self::Listener) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Reads some bytes; 0 is the end of input.
    fn read<'a>(
        stream: &'a mut Self::Stream,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;
    /// Opens a TCP connection to `address`.
    fn connect(address: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Writes all of `bytes`.
    fn write_all<'a>(
        stream: &'a mut Self::Stream,
        bytes: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;
    /// Writes all of `bytes`, then shuts the writing half down.
    fn write_and_shutdown<'a>(
        stream: &'a mut Self::Stream,
        bytes: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;
}

/// The answer to a token request, or why there is none.
pub type TokenResult = Result<http::Response<Vec<u8>>, TransportError>;

/// An HTTP client of the embedder's own for the token request.
pub trait TokenTransport: Send + Sync + 'static {
    /// Sends `request` and returns the response. Follow no redirects (S34).
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = TokenResult> + Send>>;
}

/// How token requests are sent.
#[derive(Clone)]
pub enum Transport {
    /// latchkey's own HTTP/1.1 client, on the runtime's sockets.
    Builtin(HttpClient),
    /// The embedder's client.
    Custom(Arc<dyn TokenTransport>),
}

impl Transport {
    /// Sends `request` (to the token or revocation endpoint) and returns the answer.
    pub async fn send<R: Runtime>(
        &self,
        runtime: &R,
        request: http::Request<Vec<u8>>,
    ) -> TokenResult {
        match self {
            Transport::Builtin(client) => client.send_on(runtime, &request).await,
            Transport::Custom(custom) => custom.send(request).await,
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Builtin(client) => f.debug_tuple("Builtin").field(client).finish(),
            Transport::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// Where a service listens, where tokens go, and how they are fetched.
#[derive(Clone)]
pub struct ServiceOptions {
    /// Addresses to listen on. Empty: the redirect URI's own host and port, and for
    /// `localhost` both 127.0.0.1 and ::1 (S21). A container binds `0.0.0.0:8080` here while
    /// the redirect URI stays `http://localhost:8080/callback`.
    pub bind: Vec<SocketAddr>,
    /// Where tokens are stored before the browser hears of success.
    pub store: Arc<dyn TokenStore>,
    /// How token requests are sent.
    pub transport: Transport,
}

impl ServiceOptions {
    /// Default binding, `store`, and `transport`.
    pub fn new(store: Arc<dyn TokenStore>, transport: Transport) -> ServiceOptions {
        ServiceOptions {
            bind: Vec::new(),
            store,
            transport,
        }
    }
}

/// Why a driver could not log in.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The flow ended without tokens.
    Flow(FlowError),
    /// The configuration cannot work.
    Config(ConfigError),
    /// The listener could not bind (S21): the port is in use, or the address is not local.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// TLS could not be set up.
    Tls(TlsError),
    /// Another I/O failure (entropy, the browser opener, a listener).
    Io(io::Error),
    /// A callback handed to [`Service::redirect`] was turned away; no login changed.
    Callback(Rejection),
    /// The service has stopped.
    Stopped,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Flow(error) => write!(f, "login failed: {error}"),
            Error::Config(error) => write!(f, "invalid configuration: {error}"),
            Error::Bind { addr, source } => {
                write!(f, "cannot listen on {addr}: {source}")?;
                if source.kind() == io::ErrorKind::AddrInUse {
                    f.write_str(
                        " (another program uses the port: choose another port, or 0 for any)",
                    )?;
                }
                Ok(())
            }
            Error::Tls(error) => write!(f, "TLS setup failed: {error}"),
            Error::Io(error) => write!(f, "I/O error: {error}"),
            Error::Callback(rejection) => write!(f, "callback refused: {rejection}"),
            Error::Stopped => f.write_str("the login service has stopped"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Flow(error) => Some(error),
            Error::Config(error) => Some(error),
            Error::Bind { source, .. } | Error::Io(source) => Some(source),
            Error::Tls(error) => Some(error),
            Error::Callback(rejection) => Some(rejection),
            Error::Stopped => None,
        }
    }
}

impl From<FlowError> for Error {
    fn from(error: FlowError) -> Error {
        Error::Flow(error)
    }
}

impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Error {
        Error::Config(error)
    }
}

/// What happens to a login, in order; [`LoginEvent::Finished`] is always last.
#[derive(Debug, Clone)]
pub enum LoginEvent {
    /// The browser came back with a code; the token request is on its way.
    Callback,
    /// The token endpoint issued these tokens; they are being stored.
    Tokens(TokenSet),
    /// The store confirmed; the browser is being sent to the success landing.
    Stored,
    /// The outcome.
    Finished(Result<TokenSet, FlowError>),
}

/// A login in progress, from [`Service::start`].
#[derive(Debug)]
pub struct Login {
    flow: FlowId,
    url: String,
    events: Receiver<LoginEvent>,
    commands: Sender<Command>,
}

impl Login {
    /// The flow.
    pub fn flow(&self) -> FlowId {
        self.flow
    }

    /// The authorization URL to send the user's browser to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next thing that happens to the login; `None` after [`LoginEvent::Finished`].
    pub async fn next_event(&self) -> Option<LoginEvent> {
        self.events.recv().await.ok()
    }

    /// Cancels the login; it finishes with [`FlowError::Cancelled`].
    pub async fn cancel(&self) {
        let _ = self.commands.send(Command::Cancel(self.flow)).await;
    }

    /// Waits for the outcome. A service that stopped first gives [`FlowError::Cancelled`].
    pub async fn finished(self) -> Result<TokenSet, FlowError> {
        while let Some(event) = self.next_event().await {
            if let LoginEvent::Finished(result) = event {
                return result;
            }
        }
        Err(FlowError::Cancelled)
    }

    /// The next thing that happens before `deadline`. `Ok(None)` after
    /// [`LoginEvent::Finished`] (or when the service stopped); `Err(Elapsed)` when the
    /// deadline came first.
    pub async fn next_event_by<R: Runtime>(
        &self,
        runtime: &R,
        deadline: Instant,
    ) -> Result<Option<LoginEvent>, Elapsed> {
        future::or(async { Ok(self.next_event().await) }, async {
            runtime.sleep_until(deadline).await;
            Err(Elapsed)
        })
        .await
    }

    /// Waits for the outcome at most `timeout`, the whole login included; then cancels it
    /// and reports [`FlowError::TimedOut`] with the step it was in.
    pub async fn finished_within<R: Runtime>(
        self,
        runtime: &R,
        timeout: Duration,
    ) -> Result<TokenSet, FlowError> {
        let deadline = Instant::now() + timeout;
        let mut step = Step::Callback;
        loop {
            match self.next_event_by(runtime, deadline).await {
                Ok(Some(LoginEvent::Finished(result))) => return result,
                Ok(Some(event)) => step = event.step().unwrap_or(step),
                Ok(None) => return Err(FlowError::Cancelled),
                Err(Elapsed) => {
                    self.cancel().await;
                    return Err(FlowError::TimedOut(step));
                }
            }
        }
    }
}

impl LoginEvent {
    /// The step the login is in once this happened.
    pub fn step(&self) -> Option<Step> {
        match self {
            LoginEvent::Callback => Some(Step::TokenExchange),
            LoginEvent::Tokens(_) => Some(Step::Storage),
            LoginEvent::Stored | LoginEvent::Finished(_) => None,
        }
    }
}

/// A deadline passed before the awaited event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// A running login service: the loopback listener stays up and any number of logins come
/// and go (one per user of a backend, say). Dropping it stops everything and releases the
/// port; [`shutdown`](Service::shutdown) does so gracefully.
pub struct Service<R: Runtime> {
    redirect_uri: String,
    local_addrs: Vec<SocketAddr>,
    commands: Sender<Command>,
    stopped: Receiver<()>,
    _task: R::Task,
}

impl<R: Runtime> fmt::Debug for Service<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("redirect_uri", &self.redirect_uri)
            .field("local_addrs", &self.local_addrs)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Service<R> {
    /// Binds the listener and starts the service. A port already in use fails at once
    /// (S21). A redirect URI with port 0 gets the port the system chose. A configuration
    /// with an application redirect URI ([`Config::listens`] is `false`) binds nothing:
    /// its callbacks come through [`redirect`](Service::redirect).
    pub fn bind(runtime: R, config: Config, options: ServiceOptions) -> Result<Service<R>, Error> {
        let listeners = if config.listens() {
            bind_all(&config, &options.bind)?
        } else {
            Vec::new()
        };
        Service::from_listeners(runtime, config, listeners, options)
    }

    /// Starts the service on listeners the caller bound (its `bind` option is ignored). A
    /// redirect URI with port 0 gets the first listener's port. Without listeners only a
    /// configuration with an application redirect URI can work.
    pub fn from_listeners(
        runtime: R,
        config: Config,
        listeners: Vec<TcpListener>,
        options: ServiceOptions,
    ) -> Result<Service<R>, Error> {
        let local_addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()
            .map_err(Error::Io)?;
        let config = match local_addrs.first() {
            Some(first) if config.redirect_port() == 0 => config.with_redirect_port(first.port()),
            Some(_) => config,
            None if !config.listens() => config,
            None => {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "no listener to serve on",
                )));
            }
        };
        let listeners = listeners
            .into_iter()
            .map(|listener| {
                listener.set_nonblocking(true)?;
                runtime.listener(listener)
            })
            .collect::<io::Result<Vec<_>>>()
            .map_err(Error::Io)?;
        let engine = Engine::new(config)?;
        let redirect_uri = engine.redirect_uri().to_owned();
        info!(%redirect_uri, listening = ?local_addrs, "login service started");
        let (commands, command_rx) = async_channel::bounded(64);
        // Closed once the engine task and every connection task have ended.
        let (alive, stopped) = async_channel::bounded(1);
        let driver = Driver {
            alive: alive.clone(),
            runtime: runtime.clone(),
            engine,
            events: async_channel::bounded(1024),
            store: options.store,
            transport: options.transport,
            conns: BTreeMap::new(),
            flows: BTreeMap::new(),
            shutting_down: false,
        };
        let task = runtime.spawn(async move {
            driver.run(listeners, command_rx).await;
            drop(alive);
        });
        Ok(Service {
            redirect_uri,
            local_addrs,
            commands,
            stopped,
            _task: task,
        })
    }

    /// The redirect URI, with its real port.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The addresses the listener is bound to.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Starts a login. Its tokens are stored under `options`' owner, or
    /// [`DEFAULT_KEY`] without one.
    pub async fn start(&self, options: FlowOptions, owner: Option<String>) -> Result<Login, Error> {
        let (reply, answer) = async_channel::bounded(1);
        let command = Command::Start {
            options,
            owner,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::Stopped)?;
        let (flow, url, events) = answer.recv().await.map_err(|_| Error::Stopped)??;
        Ok(Login {
            flow,
            url,
            events,
            commands: self.commands.clone(),
        })
    }

    /// Hands over a callback that reached the application some other way than the
    /// listener: the deep link an application redirect URI brought to the UI, or a
    /// callback query forwarded from elsewhere. It is judged exactly like one on the
    /// loopback port (S10–S20); `Ok` names the login it completes, whose outcome arrives
    /// as usual.
    ///
    /// # Errors
    ///
    /// [`Error::Callback`] when it was turned away (no login changed), [`Error::Stopped`]
    /// when the service has stopped.
    pub async fn redirect(&self, uri_or_query: &str) -> Result<FlowId, Error> {
        let (reply, answer) = async_channel::bounded(1);
        let command = Command::Redirect {
            uri_or_query: uri_or_query.to_owned(),
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::Stopped)?;
        answer
            .recv()
            .await
            .map_err(|_| Error::Stopped)?
            .map_err(Error::Callback)
    }

    /// Stops gracefully: every login in progress is cancelled (browsers waiting on one get
    /// the failure landing), the listener is closed, and answers still being written are
    /// given a moment to reach their browsers.
    pub async fn shutdown(self) {
        if self.commands.send(Command::Shutdown).await.is_ok() {
            let _ = self.stopped.recv().await;
        }
    }
}

/// Logs one user in: binds the listener, starts a flow, hands its URL to `opener`, waits at
/// most `timeout` for the outcome, stops the listener.
pub async fn login<R: Runtime>(
    runtime: R,
    config: Config,
    options: ServiceOptions,
    opener: Arc<dyn Opener>,
    timeout: Duration,
) -> Result<TokenSet, Error> {
    let service = Service::bind(runtime.clone(), config, options)?;
    let login = service.start(FlowOptions::new(), None).await?;
    let url = login.url().to_owned();
    if let Err(error) = runtime.unblock(move || opener.open(&url)).await {
        service.shutdown().await;
        return Err(Error::Io(error));
    }
    let result = login.finished_within(&runtime, timeout).await;
    service.shutdown().await;
    result.map_err(Error::Flow)
}

/// Binds every listening address; the defaults share one port.
fn bind_all(config: &Config, bind: &[SocketAddr]) -> Result<Vec<TcpListener>, Error> {
    let port = config.redirect_port();
    let defaults = default_bind_addrs(config.redirect_host(), port);
    let addrs = if bind.is_empty() { &defaults } else { bind };
    let mut listeners: Vec<TcpListener> = Vec::new();
    let mut bound_port = port;
    for (index, addr) in addrs.iter().enumerate() {
        // A second default address shares the first one's (possibly ephemeral) port.
        let mut addr = *addr;
        if bind.is_empty() && addr.port() == 0 {
            addr.set_port(bound_port);
        }
        match TcpListener::bind(addr) {
            Ok(listener) => {
                bound_port = listener.local_addr().map_err(Error::Io)?.port();
                listeners.push(listener);
            }
            // ::1 may not exist (IPv6 disabled): the IPv4 listener is enough then.
            Err(_) if bind.is_empty() && index > 0 => {}
            Err(source) => return Err(Error::Bind { addr, source }),
        }
    }
    Ok(listeners)
}

/// The redirect host's own address, or both loopback addresses for `localhost`.
fn default_bind_addrs(host: &str, port: u16) -> Vec<SocketAddr> {
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    match unbracketed.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => vec![
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        ],
    }
}

enum Command {
    Start {
        options: FlowOptions,
        owner: Option<String>,
        reply: Sender<StartReply>,
    },
    Cancel(FlowId),
    Redirect {
        uri_or_query: String,
        reply: Sender<Result<FlowId, Rejection>>,
    },
    Shutdown,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Start { .. } => f.write_str("Start"),
            Command::Cancel(flow) => write!(f, "Cancel({flow})"),
            // The query holds a code and a state: never shown.
            Command::Redirect { .. } => f.write_str("Redirect"),
            Command::Shutdown => f.write_str("Shutdown"),
        }
    }
}

enum Event<S> {
    Accepted(S),
    Bytes(ConnId, Vec<u8>),
    Eof(ConnId),
    TokenResponse(ExchangeId, TokenResult),
    Stored(FlowId, Result<(), StoreError>),
    Command(Command),
    Deadline,
    /// Every command sender is gone.
    Orphaned,
}

enum ConnCommand {
    Respond(Bytes),
}

struct ConnHandle<R: Runtime> {
    commands: Sender<ConnCommand>,
    task: R::Task,
}

type StartReply = Result<(FlowId, String, Receiver<LoginEvent>), Error>;

struct FlowHandle {
    owner: Option<String>,
    /// The flow's `login` span; its steps are logged in it.
    span: Span,
    started: Instant,
    events: Sender<LoginEvent>,
    /// The caller of `start`, waiting for the flow's URL, and the receiver it will get.
    waiting: Option<(Sender<StartReply>, Receiver<LoginEvent>)>,
}

type Channel<T> = (Sender<T>, Receiver<T>);

/// The engine task's state.
struct Driver<R: Runtime> {
    runtime: R,
    /// Held by the engine task and every connection task; see `Service::stopped`.
    alive: Sender<()>,
    engine: Engine,
    /// Every task reports here; only the engine task receives.
    events: Channel<Event<R::Stream>>,
    store: Arc<dyn TokenStore>,
    transport: Transport,
    conns: BTreeMap<ConnId, ConnHandle<R>>,
    flows: BTreeMap<FlowId, FlowHandle>,
    shutting_down: bool,
}

impl<R: Runtime> Driver<R> {
    async fn run(mut self, listeners: Vec<R::Listener>, commands: Receiver<Command>) {
        let _accepting: Vec<R::Task> = listeners
            .into_iter()
            .map(|listener| {
                let listening = Listening {
                    listener,
                    _alive: self.alive.clone(),
                };
                self.runtime
                    .spawn(accept_loop::<R>(listening, self.events.0.clone()))
            })
            .collect();
        loop {
            self.drain().await;
            if self.shutting_down && self.flows.is_empty() {
                return;
            }
            let deadline = self.engine.poll_timeout();
            let event = future::or(
                future::or(
                    async { self.events.1.recv().await.unwrap_or(Event::Orphaned) },
                    async {
                        commands
                            .recv()
                            .await
                            .map_or(Event::Orphaned, Event::Command)
                    },
                ),
                async {
                    match deadline {
                        Some(at) => self.runtime.sleep_until(at).await,
                        None => future::pending().await,
                    }
                    Event::Deadline
                },
            )
            .await;
            if !self.handle(event).await {
                return;
            }
        }
    }

    /// Feeds one event to the engine. `false`: stop now.
    async fn handle(&mut self, event: Event<R::Stream>) -> bool {
        let now = Instant::now();
        match event {
            Event::Accepted(stream) => match self.engine.handle_accept(now) {
                Some(conn) => {
                    debug!(conn = conn.get(), "browser connected");
                    self.adopt(conn, stream);
                }
                None => {
                    // Over the connection cap (S27).
                    debug!("browser connection dropped: at the connection cap");
                    drop(stream);
                }
            },
            Event::Bytes(conn, bytes) => self.engine.handle_bytes(now, conn, &bytes),
            Event::Eof(conn) => self.engine.handle_eof(now, conn),
            Event::TokenResponse(exchange, Ok(response)) => {
                let wall = std::time::SystemTime::now();
                self.engine
                    .handle_token_response(now, wall, exchange, response);
            }
            Event::TokenResponse(exchange, Err(error)) => {
                self.engine.handle_token_failure(now, exchange, error);
            }
            Event::Stored(flow, result) => self.engine.handle_persisted(now, flow, result),
            Event::Deadline => self.engine.handle_timeout(now),
            Event::Command(Command::Start {
                options,
                owner,
                reply,
            }) => {
                if let Err(error) = self.start(now, options, owner, reply.clone()) {
                    let _ = reply.send(Err(error)).await;
                }
            }
            Event::Command(Command::Cancel(flow)) => self.engine.cancel(now, flow),
            Event::Command(Command::Redirect {
                uri_or_query,
                reply,
            }) => {
                let verdict = self.engine.handle_redirect(now, &uri_or_query);
                match verdict {
                    Ok(flow) => debug!(flow = flow.get(), "forwarded callback accepted"),
                    Err(rejection) => debug!(?rejection, "forwarded callback refused"),
                }
                let _ = reply.try_send(verdict);
            }
            Event::Command(Command::Shutdown) => {
                self.shutting_down = true;
                for flow in self.flows.keys().copied().collect::<Vec<_>>() {
                    self.engine.cancel(now, flow);
                }
            }
            Event::Orphaned => return false,
        }
        true
    }

    /// Starts a flow; its `OpenBrowser` action answers `reply`.
    fn start(
        &mut self,
        now: Instant,
        options: FlowOptions,
        owner: Option<String>,
        reply: Sender<StartReply>,
    ) -> Result<(), Error> {
        if self.shutting_down {
            return Err(Error::Stopped);
        }
        let entropy = entropy().map_err(Error::Io)?;
        let options = match &owner {
            Some(owner) => options.owner(owner.clone()),
            None => options,
        };
        let flow = self
            .engine
            .start_with(now, entropy, options)
            .map_err(|error| Error::Io(io::Error::other(error)))?;
        let span = match self.engine.flow_provider(flow) {
            Some(provider) => {
                info_span!("login", flow = flow.get(), provider = %ProviderName(provider))
            }
            None => Span::none(),
        };
        span.in_scope(|| info!("login started; waiting for the browser"));
        let (events, receiver) = async_channel::unbounded();
        let waiting = Some((reply, receiver));
        self.flows.insert(
            flow,
            FlowHandle {
                owner,
                span,
                started: now,
                events,
                waiting,
            },
        );
        Ok(())
    }

    /// Carries out every pending action.
    async fn drain(&mut self) {
        while let Some(action) = self.engine.poll_action() {
            self.execute(action).await;
        }
    }

    async fn execute(&mut self, action: Action) {
        match action {
            // The caller of `start` decides what to do with the URL.
            Action::OpenBrowser { flow, url } => {
                let waiting = self.flows.get_mut(&flow).and_then(|h| h.waiting.take());
                if let Some((reply, receiver)) = waiting {
                    let _ = reply.send(Ok((flow, url, receiver))).await;
                }
            }
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
                if let Some(handle) = self.conns.remove(&conn) {
                    let _ = handle.commands.try_send(ConnCommand::Respond(bytes));
                    R::detach(handle.task); // it ends by itself after writing
                }
            }
            Action::Close { conn } => {
                debug!(conn = conn.get(), "closed a browser connection unanswered");
                self.conns.remove(&conn); // dropping the task closes the socket
            }
            Action::SendTokenRequest {
                flow,
                exchange,
                request,
            } => {
                self.notify(flow, LoginEvent::Callback).await;
                let span = self.span_of(flow);
                span.in_scope(|| info!("callback accepted; requesting tokens"));
                let events = self.events.0.clone();
                let runtime = self.runtime.clone();
                let transport = self.transport.clone();
                let sending = async move {
                    let sent = Instant::now();
                    let result = transport.send(&runtime, request).await;
                    let elapsed = sent.elapsed();
                    match &result {
                        Ok(response) => info!(
                            status = response.status().as_u16(),
                            ?elapsed,
                            "token endpoint answered"
                        ),
                        Err(error) => warn!(%error, ?elapsed, "token request failed"),
                    }
                    let _ = events.send(Event::TokenResponse(exchange, result)).await;
                };
                R::detach(self.runtime.spawn(sending.instrument(span)));
            }
            Action::Persist { flow, tokens } => {
                self.notify(flow, LoginEvent::Tokens(tokens.clone())).await;
                let key = self
                    .flows
                    .get(&flow)
                    .and_then(|handle| handle.owner.clone())
                    .unwrap_or_else(|| DEFAULT_KEY.to_owned());
                let span = self.span_of(flow);
                span.in_scope(|| {
                    info!(
                        token_type = tokens.token_type().as_str(),
                        refresh_token = tokens.refresh_token().is_some(),
                        "tokens received; storing them"
                    );
                });
                if !self.store.blocks() {
                    // Answered at once; the next `drain` carries the outcome out.
                    let started = Instant::now();
                    let result = self.store.save(&key, &tokens);
                    span.in_scope(|| log_stored(&result, started));
                    self.engine.handle_persisted(Instant::now(), flow, result);
                    return;
                }
                let store = Arc::clone(&self.store);
                let events = self.events.0.clone();
                let runtime = self.runtime.clone();
                let saving = async move {
                    let started = Instant::now();
                    let result = runtime.unblock(move || store.save(&key, &tokens)).await;
                    log_stored(&result, started);
                    let _ = events.send(Event::Stored(flow, result)).await;
                };
                R::detach(self.runtime.spawn(saving.instrument(span)));
            }
            Action::Finished { flow, result } => {
                if result.is_ok() {
                    self.notify(flow, LoginEvent::Stored).await;
                }
                if let Some(handle) = self.flows.remove(&flow) {
                    let elapsed = handle.started.elapsed();
                    handle.span.in_scope(|| match &result {
                        Ok(_) => info!(?elapsed, "login finished"),
                        Err(error @ (FlowError::Cancelled | FlowError::Superseded)) => {
                            info!(%error, ?elapsed, "login ended");
                        }
                        Err(error) => warn!(%error, ?elapsed, "login failed"),
                    });
                    let _ = handle.events.send(LoginEvent::Finished(result)).await;
                }
            }
        }
    }

    /// The `login` span of `flow` (a disabled span once it finished).
    fn span_of(&self, flow: FlowId) -> Span {
        self.flows
            .get(&flow)
            .map_or_else(Span::none, |handle| handle.span.clone())
    }

    async fn notify(&self, flow: FlowId, event: LoginEvent) {
        if let Some(handle) = self.flows.get(&flow) {
            let _ = handle.events.send(event).await;
        }
    }

    /// Starts the task that serves connection `conn`.
    fn adopt(&mut self, conn: ConnId, stream: R::Stream) {
        let (commands, command_rx) = async_channel::bounded(1);
        let max_head = self.engine.config().limits().max_head_bytes;
        let task = self.runtime.spawn(serve_connection(
            self.runtime.clone(),
            self.alive.clone(),
            stream,
            conn,
            self.events.0.clone(),
            command_rx,
            max_head,
        ));
        self.conns.insert(conn, ConnHandle { commands, task });
    }
}

/// Logs how saving a flow's tokens went.
fn log_stored(result: &Result<(), StoreError>, started: Instant) {
    let elapsed = started.elapsed();
    match result {
        Ok(()) => info!(?elapsed, "tokens stored"),
        Err(error) => warn!(%error, ?elapsed, "storing the tokens failed"),
    }
}

/// A listener and the token that keeps `Service::shutdown` waiting for it. Fields drop in
/// order: the socket is closed before the token goes.
struct Listening<L> {
    listener: L,
    _alive: Sender<()>,
}

async fn accept_loop<R: Runtime>(
    listening: Listening<R::Listener>,
    events: Sender<Event<R::Stream>>,
) {
    loop {
        match R::accept(&listening.listener).await {
            Ok(stream) => {
                if events.send(Event::Accepted(stream)).await.is_err() {
                    return;
                }
            }
            // Out of file descriptors, a connection reset before accept: keep listening, but
            // do not spin.
            Err(_) => future::yield_now().await,
        }
    }
}

/// Forwards the browser's bytes (no more than a request head's worth) until the engine
/// answers, then writes the answer and lingers until the browser closes.
async fn serve_connection<R: Runtime>(
    runtime: R,
    _alive: Sender<()>,
    mut stream: R::Stream,
    conn: ConnId,
    events: Sender<Event<R::Stream>>,
    commands: Receiver<ConnCommand>,
    max_head: usize,
) {
    enum Next {
        Read(io::Result<usize>),
        Command(Option<ConnCommand>),
    }
    let mut buf = vec![0; 4096];
    let mut forwarded = 0;
    let mut reading = true;
    let answer = loop {
        let next = if reading {
            future::or(async { Next::Command(commands.recv().await.ok()) }, async {
                Next::Read(R::read(&mut stream, &mut buf).await)
            })
            .await
        } else {
            Next::Command(commands.recv().await.ok())
        };
        match next {
            Next::Read(Ok(0) | Err(_)) => {
                reading = false;
                let _ = events.send(Event::Eof(conn)).await;
            }
            Next::Read(Ok(n)) => {
                // Past a head's worth the engine has answered or will: stop reading.
                forwarded += n;
                reading = forwarded <= max_head;
                let bytes = buf.get(..n).unwrap_or_default().to_vec();
                let _ = events.send(Event::Bytes(conn, bytes)).await;
            }
            Next::Command(Some(ConnCommand::Respond(bytes))) => break bytes,
            Next::Command(None) => return, // the engine dropped us: close
        }
    };
    if R::write_and_shutdown(&mut stream, &answer).await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    future::or(
        async { while let Ok(1..) = R::read(&mut stream, &mut buf).await {} },
        runtime.sleep_until(deadline),
    )
    .await;
}
