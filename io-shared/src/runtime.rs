//! What a driver needs from its environment: [`Runtime`].
//!
//! Everything outside the sans-IO machines comes through this one seam: tasks, the clocks,
//! timers, randomness, the blocking pool and TCP. `latchkey-smol` and `latchkey-tokio`
//! implement it in a few dozen lines each; a test can wrap either to run the drivers in
//! virtual time (a clock of its own behind [`now`](Runtime::now), [`wall`](Runtime::wall)
//! and [`sleep_until`](Runtime::sleep_until)) or with chosen randomness.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::{Instant, SystemTime};

use futures_lite::{AsyncRead, AsyncWrite};
use latchkey::ENTROPY_LEN;

/// What a driver needs from an async runtime. Every method takes `&self`, so that a wrapper
/// can change any of them.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A spawned task; dropping it cancels the task.
    type Task: Send + Sync + 'static;
    /// A listening TCP socket.
    type Listener: Send + Sync + 'static;
    /// A TCP connection (the `futures-io` traits, which both runtimes' sockets have or can
    /// be given).
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Runs `task` in the background.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> Self::Task;

    /// Lets `task` run to its end without being held.
    fn detach(&self, task: Self::Task);

    /// The monotonic clock every deadline is measured on. Default: [`Instant::now`].
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// The wall-clock time, against which token expiry is judged. Default:
    /// [`SystemTime::now`].
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    /// Completes at `deadline` on [`now`](Runtime::now)'s clock.
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send;

    /// Fresh randomness for a login's PKCE verifier and `state` (S1, S2). Default: the
    /// operating system's ([`crate::entropy::entropy`]).
    ///
    /// # Errors
    ///
    /// The OS error if its random source fails; the login is then not started.
    fn entropy(&self) -> io::Result<[u8; ENTROPY_LEN]> {
        crate::entropy::entropy()
    }

    /// Runs blocking `work` off the async threads.
    fn unblock<T, W>(&self, work: W) -> impl Future<Output = T> + Send
    where
        T: Send + 'static,
        W: FnOnce() -> T + Send + 'static;

    /// Adopts a bound std listener (already non-blocking).
    ///
    /// # Errors
    ///
    /// When the runtime cannot register it.
    fn listener(&self, listener: TcpListener) -> io::Result<Self::Listener>;

    /// Accepts the next connection.
    fn accept<'a>(
        &'a self,
        listener: &'a Self::Listener,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send + 'a;

    /// Opens a TCP connection to `address`, with Nagle's algorithm off (a request is
    /// written whole).
    fn connect(&self, address: SocketAddr)
    -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// `work`, or `None` once `deadline` (on `runtime`'s clock) passes first.
pub(crate) async fn until<R: Runtime, T>(
    runtime: &R,
    deadline: Instant,
    work: impl Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(work.await) }, async {
        runtime.sleep_until(deadline).await;
        None
    })
    .await
}
