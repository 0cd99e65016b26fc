//! latchkey on [smol]: the loopback listener, the token request, the token store and the
//! browser, wired to the sans-IO engine of [`latchkey`].
//!
//! Three ways in, from simplest to most control:
//!
//! - [`login`]: one user, one call. Binds the listener, opens the browser, waits for the
//!   outcome, releases the port.
//! - [`serve`] → [`Service`]: a listener that stays up while an application starts logins
//!   for its users and awaits each outcome ([`Login`]).
//! - [`Service::from_listeners`] with sockets you bound yourself, or [`latchkey::Engine`]
//!   directly with your own loop.
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
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use latchkey::{Config, TokenSet};
use latchkey_io::driver::{self, Runtime};
use latchkey_io::opener::Opener;

pub use latchkey_io::driver::{
    Error, Login, LoginEvent, ServiceOptions, TokenTransport, Transport,
};

/// A login service on smol.
pub type Service = driver::Service<Smol>;

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

    fn detach(task: smol::Task<()>) {
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

    async fn accept(listener: &async_net::TcpListener) -> io::Result<async_net::TcpStream> {
        listener.accept().await.map(|(stream, _)| stream)
    }

    fn read<'a>(
        stream: &'a mut async_net::TcpStream,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        stream.read(buf)
    }

    async fn connect(address: SocketAddr) -> io::Result<async_net::TcpStream> {
        let stream = async_net::TcpStream::connect(address).await?;
        // A request is written whole; nothing gains from waiting for more.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn write_all(stream: &mut async_net::TcpStream, bytes: &[u8]) -> io::Result<()> {
        stream.write_all(bytes).await?;
        stream.flush().await
    }

    async fn write_and_shutdown(stream: &mut async_net::TcpStream, bytes: &[u8]) -> io::Result<()> {
        stream.write_all(bytes).await?;
        stream.flush().await?;
        stream.shutdown(Shutdown::Write)
    }
}

/// Binds the listener and starts a [`Service`].
pub fn serve(config: Config, options: ServiceOptions) -> Result<Service, Error> {
    Service::bind(Smol, config, options)
}

/// Logs one user in: see [`latchkey_io::driver::login`].
pub async fn login(
    config: Config,
    options: ServiceOptions,
    opener: Arc<dyn Opener>,
    timeout: Duration,
) -> Result<TokenSet, Error> {
    driver::login(Smol, config, options, opener, timeout).await
}
