//! The login service: the engine ([`latchkey::Engine`]) on a runtime's sockets, timers and
//! tasks, written once for every runtime.
//!
//! - [`Service`]: a loopback listener that stays up while an application starts logins
//!   ([`Service::start`]) and awaits each one's outcome ([`Login`]);
//! - [`login`]: one user, one call.
//!
//! How it runs: the engine is shared by the tasks that have an input for it, and each of
//! them feeds its input, drains the engine's actions, routes what belongs to others and
//! carries out its own (`shared`). A task accepts on each listener; each browser connection
//! gets a task that reads its request and, when it is a callback, sends the token request,
//! stores the tokens and writes the answer itself (`connection`); one timer task calls the
//! engine when its next deadline comes (`timer`). Where the listener is bound is decided in
//! `bind`.

mod bind;
mod connection;
mod login;
mod mailbox;
mod shared;
mod timer;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use async_channel::Receiver;
use latchkey::{
    Config, ConfigError, Engine, FlowError, FlowId, FlowOptions, Rejection, StartError, TokenSet,
};
use tracing::{debug, info};

pub use login::{Elapsed, Login, LoginEvent, login};

use crate::directory::FlowDirectory;
use crate::runtime::Runtime;
use crate::store::{KeySetCache, TokenStore};
use crate::tls::TlsError;
use crate::transport::Transport;
use connection::Listening;
use shared::Shared;

/// Where a service listens, where tokens go, and how they are fetched.
#[derive(Clone)]
pub struct ServiceOptions {
    /// Addresses to listen on. Empty: the redirect URI's own host and port, and for
    /// `localhost` both 127.0.0.1 and ::1 (S21). A container binds `0.0.0.0:8080` here while
    /// the redirect URI stays `http://localhost:8080/callback`.
    pub bind: Vec<SocketAddr>,
    /// Where tokens are stored before the browser hears of success: under the login's owner
    /// ([`FlowOptions::owner`]), or [`DEFAULT_KEY`](crate::store::DEFAULT_KEY).
    pub store: Arc<dyn TokenStore>,
    /// How token requests are sent.
    pub transport: Transport,
    /// Where pending logins are shared with other replicas ([`crate::directory`]), if
    /// anywhere: logins started with [`Service::start_shared`] go there, and callbacks for
    /// logins this service does not hold are looked up there.
    pub directory: Option<Arc<dyn FlowDirectory>>,
    /// Where the provider's key sets are shared with other replicas, if anywhere: read
    /// when the service starts (on the thread that starts it), written after every fetch.
    pub key_sets: Option<Arc<dyn KeySetCache>>,
}

impl ServiceOptions {
    /// Default binding, `store`, and `transport`.
    pub fn new(store: Arc<dyn TokenStore>, transport: Transport) -> ServiceOptions {
        ServiceOptions {
            bind: Vec::new(),
            store,
            transport,
            directory: None,
            key_sets: None,
        }
    }

    /// The same options with the provider's key sets shared through `cache`.
    pub fn with_key_sets(mut self, cache: Arc<dyn KeySetCache>) -> ServiceOptions {
        self.key_sets = Some(cache);
        self
    }

    /// The same options with pending logins shared through `directory`.
    pub fn with_directory(mut self, directory: Arc<dyn FlowDirectory>) -> ServiceOptions {
        self.directory = Some(directory);
        self
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
    /// The engine refused to start a login.
    Start(StartError),
    /// TLS could not be set up.
    Tls(TlsError),
    /// Another I/O failure (entropy, the browser opener, a listener).
    Io(io::Error),
    /// A callback handed to [`Service::redirect`] was turned away; no login changed.
    Callback(Rejection),
    /// The service has stopped (shut down or dropped) before the login finished.
    Stopped,
    /// The provider pushes its authorization requests (RFC 9126): start the login with
    /// [`Service::start_async`], which waits for the provider's answer.
    Pushed,
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
            Error::Start(error) => write!(f, "cannot start a login: {error}"),
            Error::Tls(error) => write!(f, "TLS setup failed: {error}"),
            Error::Io(error) => write!(f, "I/O error: {error}"),
            Error::Callback(rejection) => write!(f, "callback refused: {rejection}"),
            Error::Stopped => f.write_str("the login service has stopped"),
            Error::Pushed => f.write_str(
                "the provider pushes its authorization requests: start the login with start_async",
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Flow(error) => Some(error),
            Error::Config(error) => Some(error),
            Error::Bind { source, .. } | Error::Io(source) => Some(source),
            Error::Start(error) => Some(error),
            Error::Tls(error) => Some(error),
            Error::Callback(rejection) => Some(rejection),
            Error::Stopped | Error::Pushed => None,
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

/// A running login service: the loopback listener stays up and any number of logins come
/// and go (one per user of a backend, say). Dropping it stops everything and releases the
/// port; [`shutdown`](Service::shutdown) does so gracefully.
pub struct Service<R: Runtime> {
    shared: Arc<Shared<R>>,
    redirect_uri: String,
    local_addrs: Vec<SocketAddr>,
    /// Closed once every listener and connection task has ended.
    stopped: Receiver<()>,
    accepting: Vec<R::Task>,
    timer: Option<R::Task>,
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
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] when an address cannot be bound, [`Error::Config`] and
    /// [`Error::Io`] as [`from_listeners`](Service::from_listeners).
    pub fn bind(runtime: R, config: Config, options: ServiceOptions) -> Result<Service<R>, Error> {
        let listeners = if config.listens() {
            bind::bind_all(&config, &options.bind)?
        } else {
            Vec::new()
        };
        Service::from_listeners(runtime, config, listeners, options)
    }

    /// Starts the service without a listener: for device logins
    /// ([`start_device`](Service::start_device)) and callbacks handed to
    /// [`redirect`](Service::redirect). Browser logins with a loopback redirect cannot
    /// start on it until a port is known.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the engine refuses the configuration.
    pub fn unbound(
        runtime: R,
        config: Config,
        options: ServiceOptions,
    ) -> Result<Service<R>, Error> {
        Service::start_on(runtime, config, Vec::new(), Vec::new(), options)
    }

    /// Starts the service on listeners the caller bound (its `bind` option is ignored). A
    /// redirect URI with port 0 gets the first listener's port. Without listeners only a
    /// configuration with an application redirect URI can work.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the engine refuses the configuration, [`Error::Io`] when a
    /// listener cannot be adopted (or none is given for a loopback redirect).
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
        Service::start_on(runtime, config, listeners, local_addrs, options)
    }

    /// Starts the engine, the accept loops on `listeners` (adopted already) and the timer.
    fn start_on(
        runtime: R,
        config: Config,
        listeners: Vec<R::Listener>,
        local_addrs: Vec<SocketAddr>,
        options: ServiceOptions,
    ) -> Result<Service<R>, Error> {
        let sharing = options.directory.is_some();
        let engine = Engine::new(config.with_flow_directory(sharing))?;
        let redirect_uri = engine.redirect_uri().to_owned();
        info!(%redirect_uri, listening = ?local_addrs, sharing, "login service started");
        let shared = Arc::new(Shared::new(
            runtime.clone(),
            engine,
            options.store,
            options.directory.clone(),
            options.key_sets.clone(),
            options.transport,
        ));
        // Before the first login, so that it can use them.
        shared.import_key_sets();
        if let Some(directory) = &options.directory {
            let heard = Arc::downgrade(&shared);
            directory
                .listen(Arc::new(move |announcement| {
                    if let Some(shared) = heard.upgrade() {
                        let work = shared.heard(announcement);
                        shared::spawn_work(&shared, work);
                    }
                }))
                .map_err(|error| Error::Io(io::Error::other(error)))?;
        }
        let (alive, stopped) = async_channel::bounded(1);
        let accepting = listeners
            .into_iter()
            .map(|listener| {
                let listening = Listening {
                    listener,
                    alive: alive.clone(),
                };
                runtime.spawn(connection::accept_loop(Arc::clone(&shared), listening))
            })
            .collect();
        let timer = runtime.spawn(timer::run(Arc::clone(&shared)));
        Ok(Service {
            shared,
            redirect_uri,
            local_addrs,
            stopped,
            accepting,
            timer: Some(timer),
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

    /// Starts a login: `options` name another provider or the user it is for, whose key
    /// its tokens are stored under ([`FlowOptions::owner`]; without one,
    /// [`DEFAULT_KEY`](crate::store::DEFAULT_KEY)). A second login for the same owner
    /// ends the first (S20). The authorization URL is [`Login::url`]. The login stays in
    /// this service: one whose callback may reach another replica starts with
    /// [`start_shared`](Service::start_shared).
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] after [`shutdown`](Service::shutdown), [`Error::Io`] when the
    /// runtime has no randomness, [`Error::Start`] when the engine refuses.
    pub fn start(&self, options: FlowOptions) -> Result<Login, Error> {
        let entropy = self.shared.runtime.entropy().map_err(Error::Io)?;
        let login = self.begin(Some(entropy), options)?;
        if login.url.is_none() && self.shared.pushes(login.flow) {
            // Its authorization request is pushed first (RFC 9126): the URL comes with the
            // provider's answer, which only `start_async` waits for.
            login.cancel();
            return Err(Error::Pushed);
        }
        Ok(login)
    }

    /// Starts a login as [`start`](Service::start) does; when its provider pushes
    /// authorization requests (RFC 9126), the parameters go to the provider first and the
    /// [`Login`] comes with the URL the provider's answer makes.
    ///
    /// # Errors
    ///
    /// [`Error::Flow`] when the push was refused or failed; as [`start`](Service::start)
    /// otherwise.
    pub async fn start_async(&self, options: FlowOptions) -> Result<Login, Error> {
        let entropy = self.shared.runtime.entropy().map_err(Error::Io)?;
        let (events, receiver) = mailbox::mailbox();
        let (flow, url, work) = self.shared.start(Some(entropy), options, events)?;
        let url = match url {
            Some(url) => {
                self.spawn_work(work);
                Some(url)
            }
            None => self.shared.push(flow, work).await,
        };
        self.login_at(flow, url, receiver).await
    }

    /// Starts a device login (RFC 8628) for a user who approves on another device: the
    /// user code and where to enter it arrive as [`LoginEvent::UserCode`], then the tokens
    /// as for any login. The service polls the token endpoint by itself. `options` as for
    /// [`start`](Service::start). Needs no listener: a service for device logins only can
    /// be started with [`unbound`](Service::unbound).
    ///
    /// # Errors
    ///
    /// [`Error::Start`] with [`StartError::NoDeviceEndpoint`] when the provider has no device
    /// authorization endpoint; [`Error::Stopped`] after [`shutdown`](Service::shutdown).
    pub fn start_device(&self, options: FlowOptions) -> Result<Login, Error> {
        self.begin(None, options)
    }

    fn begin(
        &self,
        entropy: Option<[u8; latchkey::ENTROPY_LEN]>,
        options: FlowOptions,
    ) -> Result<Login, Error> {
        let (events, receiver) = mailbox::mailbox();
        let (flow, url, work) = self.shared.start(entropy, options, events)?;
        self.spawn_work(work);
        Ok(Login {
            flow,
            url,
            events: receiver,
            service: Arc::clone(&self.shared) as _,
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
    /// [`Error::Callback`] when it was turned away (no login changed).
    pub fn redirect(&self, uri_or_query: &str) -> Result<FlowId, Error> {
        let (verdict, work) = self.shared.redirect(uri_or_query, None);
        match &verdict {
            Ok(flow) => debug!(flow = flow.get(), "forwarded callback accepted"),
            Err(rejection) => debug!(?rejection, "forwarded callback refused"),
        }
        self.spawn_work(work);
        verdict.map_err(Error::Callback)
    }

    /// Hands over a callback like [`redirect`](Service::redirect), and waits for the
    /// login it completes to end: what a web backend's callback route does before it
    /// answers the browser. With a flow directory this may be a login another replica
    /// started.
    ///
    /// # Errors
    ///
    /// [`Error::Callback`] when it was turned away; [`Error::Flow`] when the login ended
    /// without tokens; [`Error::Stopped`] when the service stopped first.
    pub async fn complete(&self, uri_or_query: &str) -> Result<TokenSet, Error> {
        let (waiter, outcome) = async_channel::bounded(1);
        let (verdict, work) = self.shared.redirect(uri_or_query, Some(waiter));
        self.spawn_work(work);
        let flow = verdict.map_err(Error::Callback)?;
        debug!(
            flow = flow.get(),
            "forwarded callback accepted; waiting for its login"
        );
        match outcome.recv().await {
            Ok(result) => result.map_err(Error::Flow),
            Err(_) => Err(Error::Stopped),
        }
    }

    /// Starts a browser login shared with other replicas through the service's flow
    /// directory ([`ServiceOptions::directory`]): the provider's redirect may reach any
    /// of them, and this [`Login`] learns the outcome wherever it lands. The URL comes
    /// once the directory has stored the login's record (sealed, S55), after the provider
    /// took the pushed authorization request (RFC 9126) when the provider pushes them. A
    /// DPoP login's key travels in the record, so the replica that gets the redirect binds
    /// the tokens to it.
    ///
    /// # Errors
    ///
    /// [`Error::Flow`] with [`DirectoryError::Unavailable`](latchkey::directory::DirectoryError)
    /// when the directory could not store the record, or the push's error; as
    /// [`start`](Service::start) otherwise.
    pub async fn start_shared(&self, options: FlowOptions) -> Result<Login, Error> {
        let entropy = self.shared.runtime.entropy().map_err(Error::Io)?;
        let (events, receiver) = mailbox::mailbox();
        let options = options.shared(self.shared.runtime.wall());
        let (flow, _, work) = self.shared.start(Some(entropy), options, events)?;
        // The record goes first (after the push, when the provider takes pushed requests);
        // the URL comes out of the answer's drain.
        let url = match self.shared.pushes(flow) {
            true => self.shared.push(flow, work).await,
            false => self.shared.share(flow, work).await,
        };
        self.login_at(flow, url, receiver).await
    }

    /// Stops gracefully: every login in progress ends (its starter hears
    /// [`Error::Stopped`], a browser waiting on it gets the failure landing), the listener
    /// is closed, and answers still being written are given a moment to reach their
    /// browsers.
    pub async fn shutdown(mut self) {
        let work = self.shared.stop();
        self.spawn_work(work);
        self.accepting.clear();
        self.timer.take();
        let _ = self.stopped.recv().await;
    }

    /// The login `flow` once its URL is known; without one (the directory did not take its
    /// record, the push failed), the error it ended with.
    async fn login_at(
        &self,
        flow: FlowId,
        url: Option<String>,
        receiver: mailbox::Mailbox,
    ) -> Result<Login, Error> {
        match url {
            Some(url) => Ok(Login {
                flow,
                url: Some(url),
                events: receiver,
                service: Arc::clone(&self.shared) as _,
            }),
            None => loop {
                match receiver.recv().await {
                    Some(LoginEvent::Finished(Err(error))) => break Err(Error::Flow(error)),
                    Some(_) => {}
                    None => break Err(Error::Stopped),
                }
            },
        }
    }

    /// Runs what a drain outside any connection left (a token request a forwarded callback
    /// started) on a task of its own.
    fn spawn_work(&self, work: shared::Work) {
        shared::spawn_work(&self.shared, work);
    }
}

impl<R: Runtime> Drop for Service<R> {
    fn drop(&mut self) {
        self.accepting.clear();
        self.timer.take();
        self.shared.abandon();
    }
}
