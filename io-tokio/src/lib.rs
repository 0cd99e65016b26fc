//! latchkey on [tokio]: the loopback listener, the token request, the token store and the
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
//! Everything runs on the tokio runtime the functions are called from (`tokio::spawn`), so
//! call them inside one, with the `time` and `net` drivers enabled.
//!
//! [tokio]: https://docs.rs/tokio
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey::{Config, TokenSet};
use latchkey_io::driver::{self, Runtime};
use latchkey_io::opener::Opener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

pub use latchkey_io::driver::{
    Error, Login, LoginEvent, ServiceOptions, TokenTransport, Transport,
};

/// A login service on tokio.
pub type Service = driver::Service<Tokio>;

/// Fresh access tokens on demand, refreshed on tokio: see [`latchkey_io::source`].
pub type TokenSource = latchkey_io::source::TokenSource<Tokio>;

/// The tokio runtime the caller runs in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

/// A tokio task that is cancelled when dropped, like smol's.
#[derive(Debug)]
pub struct AbortOnDrop(Option<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

impl Runtime for Tokio {
    type Task = AbortOnDrop;
    type Listener = tokio::net::TcpListener;
    type Stream = tokio::net::TcpStream;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> AbortOnDrop {
        AbortOnDrop(Some(tokio::spawn(task)))
    }

    fn detach(mut task: AbortOnDrop) {
        task.0.take(); // a dropped JoinHandle detaches
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(deadline.into())
    }

    async fn unblock<T, W>(&self, work: W) -> T
    where
        T: Send + 'static,
        W: FnOnce() -> T + Send + 'static,
    {
        match tokio::task::spawn_blocking(work).await {
            Ok(value) => value,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Cancelled: the runtime is shutting down and nobody awaits this.
                Err(_) => std::future::pending().await,
            },
        }
    }

    fn listener(&self, listener: TcpListener) -> io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::from_std(listener)
    }

    async fn accept(listener: &tokio::net::TcpListener) -> io::Result<tokio::net::TcpStream> {
        listener.accept().await.map(|(stream, _)| stream)
    }

    fn read<'a>(
        stream: &'a mut tokio::net::TcpStream,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        stream.read(buf)
    }

    async fn connect(address: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        // A request is written whole; nothing gains from waiting for more.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn write_all(stream: &mut tokio::net::TcpStream, bytes: &[u8]) -> io::Result<()> {
        stream.write_all(bytes).await?;
        stream.flush().await
    }

    async fn write_and_shutdown(
        stream: &mut tokio::net::TcpStream,
        bytes: &[u8],
    ) -> io::Result<()> {
        stream.write_all(bytes).await?;
        stream.shutdown().await
    }
}

/// Binds the listener and starts a [`Service`] on the current tokio runtime.
pub fn serve(config: Config, options: ServiceOptions) -> Result<Service, Error> {
    Service::bind(Tokio, config, options)
}

/// Logs one user in: see [`latchkey_io::driver::login`].
pub async fn login(
    config: Config,
    options: ServiceOptions,
    opener: Arc<dyn Opener>,
    timeout: Duration,
) -> Result<TokenSet, Error> {
    driver::login(Tokio, config, options, opener, timeout).await
}
