//! latchkey on [tokio]: the sans-IO machines of [`latchkey`] on tokio's tasks, timers and
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
//! Everything runs on the tokio runtime the functions are called from (`tokio::spawn`), so
//! call them inside one, with the `time` and `net` drivers enabled. Its clock is tokio's,
//! so a test with tokio's time paused runs the drivers in virtual time.
//!
//! [tokio]: https://docs.rs/tokio
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use latchkey::{Config, TokenSet};
use latchkey_io::opener::Opener;
use latchkey_io::runtime::Runtime;
use tokio::io::{AsyncRead as _, AsyncWrite as _, ReadBuf};
use tokio::task::JoinHandle;

pub use latchkey_io::service::{Error, Login, LoginEvent, ServiceOptions};
pub use latchkey_io::transport::{TokenTransport, Transport};

/// A login service on tokio.
pub type Service = latchkey_io::service::Service<Tokio>;

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

/// A tokio TCP connection with the `futures-io` traits the drivers use.
#[derive(Debug)]
pub struct TcpStream(tokio::net::TcpStream);

impl futures_lite::AsyncRead for TcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        Pin::new(&mut self.0)
            .poll_read(cx, &mut buf)
            .map_ok(|()| buf.filled().len())
    }
}

impl futures_lite::AsyncWrite for TcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    /// Shuts the writing half down.
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Runtime for Tokio {
    type Task = AbortOnDrop;
    type Listener = tokio::net::TcpListener;
    type Stream = TcpStream;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> AbortOnDrop {
        AbortOnDrop(Some(tokio::spawn(task)))
    }

    fn detach(&self, mut task: AbortOnDrop) {
        task.0.take(); // a dropped JoinHandle detaches
    }

    /// Tokio's clock: virtual when the test paused time.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
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

    async fn accept<'a>(&'a self, listener: &'a tokio::net::TcpListener) -> io::Result<TcpStream> {
        listener.accept().await.map(|(stream, _)| TcpStream(stream))
    }

    async fn connect(&self, address: SocketAddr) -> io::Result<TcpStream> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(TcpStream(stream))
    }
}

/// Binds the listener and starts a [`Service`] on the current tokio runtime.
///
/// # Errors
///
/// As [`Service::bind`].
pub fn serve(config: Config, options: ServiceOptions) -> Result<Service, Error> {
    Service::bind(Tokio, config, options)
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
    latchkey_io::service::login(Tokio, config, options, opener, timeout).await
}
