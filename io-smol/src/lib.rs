//! latchkey on [smol]: the sans-IO machines of [`latchkey`] on smol's tasks, timers and
//! sockets. Everything but the [`Runtime`] implementation below lives in [`latchkey_io`].
//!
//! Three ways in, from simplest to most control:
//!
//! - [`login`]: one user, one call. Binds the listener, opens the browser, waits for the
//!   outcome, releases the port.
//! - [`serve`] → [`Service`]: a listener that stays up while an application starts logins
//!   for its users and awaits each outcome ([`Login`]); [`TokenSource`] keeps the tokens
//!   valid afterwards.
//! - [`Service::from_listeners`] with sockets you bound yourself, or the machines directly
//!   with your own loop.
//!
//! ```no_run
//! # async fn example() -> Result<(), latchkey_smol::Error> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use latchkey::{Config, Provider};
//! use latchkey_smol::{ServiceOptions, Transport};
//! use latchkey_io::{http::{HttpClient, HttpOptions}, opener::SystemBrowser, store::FileStore};
//!
//! let provider = Provider::builder(
//!     "https://accounts.example/authorize",
//!     "https://accounts.example/token",
//!     "my-cli",
//! )
//! .scope("openid")
//! .build()?;
//! let config = Config::builder(provider).build()?; // http://127.0.0.1:<any port>/callback
//! let client = HttpClient::new(HttpOptions::default()).map_err(latchkey_smol::Error::Tls)?;
//! let options = ServiceOptions::new(
//!     Arc::new(FileStore::new("tokens.json")),
//!     Transport::Builtin(client),
//! );
//! let tokens = latchkey_smol::login(config, options, Arc::new(SystemBrowser), Duration::from_secs(300)).await?;
//! println!("signed in, token expires at {:?}", tokens.expires_at());
//! # Ok(())
//! # }
//! ```
//!
//! [smol]: https://docs.rs/smol
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey::{Config, TokenSet};
use latchkey_io::opener::Opener;
use latchkey_io::runtime::Runtime;

pub use latchkey_io::service::{Error, Login, LoginEvent, ServiceOptions};
pub use latchkey_io::transport::{TokenTransport, Transport};

/// A login service on smol.
pub type Service = latchkey_io::service::Service<Smol>;

/// Fresh access tokens on demand, refreshed on smol: see [`latchkey_io::source`].
pub type TokenSource = latchkey_io::source::TokenSource<Smol>;

/// The smol runtime: tasks on smol's global executor, blocking work on its thread pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

impl Runtime for Smol {
    type Task = smol::Task<()>;
    type Listener = async_net::TcpListener;
    type Stream = async_net::TcpStream;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> smol::Task<()> {
        smol::spawn(task)
    }

    fn detach(&self, task: smol::Task<()>) {
        task.detach();
    }

    async fn sleep_until(&self, deadline: Instant) {
        smol::Timer::at(deadline).await;
    }

    fn unblock<T, W>(&self, work: W) -> impl Future<Output = T> + Send
    where
        T: Send + 'static,
        W: FnOnce() -> T + Send + 'static,
    {
        smol::unblock(work)
    }

    fn listener(&self, listener: TcpListener) -> io::Result<async_net::TcpListener> {
        async_net::TcpListener::try_from(listener)
    }

    async fn accept<'a>(
        &'a self,
        listener: &'a async_net::TcpListener,
    ) -> io::Result<async_net::TcpStream> {
        listener.accept().await.map(|(stream, _)| stream)
    }

    async fn connect(&self, address: SocketAddr) -> io::Result<async_net::TcpStream> {
        let stream = async_net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Binds the listener and starts a [`Service`].
///
/// # Errors
///
/// As [`Service::bind`].
pub fn serve(config: Config, options: ServiceOptions) -> Result<Service, Error> {
    Service::bind(Smol, config, options)
}

/// Logs one user in: see [`latchkey_io::service::login`].
///
/// # Errors
///
/// As [`latchkey_io::service::login`].
pub async fn login(
    config: Config,
    options: ServiceOptions,
    opener: Arc<dyn Opener>,
    timeout: Duration,
) -> Result<TokenSet, Error> {
    latchkey_io::service::login(Smol, config, options, opener, timeout).await
}
