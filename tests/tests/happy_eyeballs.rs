//! The HTTP client's connection attempts (RFC 8305, Happy Eyeballs) in virtual time, on both
//! drivers: an address that never answers holds the next attempt back by 250 ms and no
//! longer; an address that refuses lets the next attempt start at once; the attempts stop at
//! the first connection.
//!
//! The address that never answers is simulated: a runtime whose connections to it stay
//! pending forever (nothing on loopback black-holes a SYN). Every other connection is real.

#[macro_use]
mod support;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use latchkey_io::http::connect_any;
use latchkey_io::runtime::Runtime;
use smol::future;
use support::{Virtual, within};

const SCENARIO: Duration = Duration::from_secs(20);
const STEP: Duration = Duration::from_secs(5);

on_both_drivers!(
    SCENARIO;
    an_address_that_never_answers_delays_the_next_attempt_by_250_ms,
    an_address_that_refuses_lets_the_next_attempt_start_at_once,
    the_first_connection_wins_and_later_addresses_are_not_tried,
);

/// `R` in virtual time, with connections to `silent` left pending forever, and every
/// connection attempt recorded with the virtual instant it started at.
#[derive(Clone)]
struct Blackhole<R> {
    inner: Virtual<R>,
    silent: SocketAddr,
    attempts: Arc<Mutex<Vec<(SocketAddr, Instant)>>>,
}

impl<R: Runtime> Blackhole<R> {
    fn new(rt: R, silent: SocketAddr) -> Blackhole<R> {
        Blackhole {
            inner: Virtual::new(rt),
            silent,
            attempts: Arc::default(),
        }
    }

    fn attempts(&self) -> Vec<(SocketAddr, Instant)> {
        self.attempts.lock().expect("not poisoned").clone()
    }
}

impl<R: Runtime> Runtime for Blackhole<R> {
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
        self.inner.now()
    }

    fn wall(&self) -> SystemTime {
        self.inner.wall()
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send {
        self.inner.sleep_until(deadline)
    }

    fn unblock<T, W>(&self, work: W) -> impl Future<Output = T> + Send
    where
        T: Send + 'static,
        W: FnOnce() -> T + Send + 'static,
    {
        self.inner.unblock(work)
    }

    fn listener(&self, listener: TcpListener) -> std::io::Result<R::Listener> {
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
        address: SocketAddr,
    ) -> impl Future<Output = std::io::Result<R::Stream>> + Send {
        self.attempts
            .lock()
            .expect("not poisoned")
            .push((address, self.inner.now()));
        let silent = address == self.silent;
        let connecting = self.inner.connect(address);
        async move {
            if silent {
                future::pending::<()>().await;
            }
            connecting.await
        }
    }
}

/// A listener on 127.0.0.1 that accepts (and counts) connections on a thread.
fn listening() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let address = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (address, accepted)
}

/// What `accepted` counts once it stops changing (the listener's thread takes connections
/// from the kernel a little after the client sees them made).
fn settled(accepted: &AtomicUsize) -> usize {
    std::thread::sleep(Duration::from_millis(50));
    accepted.load(Ordering::SeqCst)
}

/// A loopback port nothing listens on: connections to it are refused at once.
fn refusing() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("address")
}

async fn an_address_that_never_answers_delays_the_next_attempt_by_250_ms<R: Runtime>(rt: R) {
    let (good, accepted) = listening();
    let silent = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9));
    let rt = Blackhole::new(rt, silent);
    let started = rt.now();
    let (connected, ()) = within(
        rt.inner.real(),
        STEP,
        "the connection",
        future::zip(
            connect_any(&rt, &[silent, good], Duration::from_secs(10)),
            async {
                future::yield_now().await;
                // 249 ms: only the first attempt is out.
                rt.inner.clock().advance(Duration::from_millis(249));
                future::yield_now().await;
                assert_eq!(rt.attempts().len(), 1, "{:?}", rt.attempts());
                rt.inner.clock().advance(Duration::from_millis(1));
            },
        ),
    )
    .await;
    connected.expect("the second address connects");
    let attempts = rt.attempts();
    assert_eq!(
        attempts,
        [
            (silent, started),
            (good, started + Duration::from_millis(250))
        ]
    );
    assert_eq!(settled(&accepted), 1);
}

async fn an_address_that_refuses_lets_the_next_attempt_start_at_once<R: Runtime>(rt: R) {
    let (good, accepted) = listening();
    let refused = refusing();
    let rt = Blackhole::new(rt, SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9)));
    let started = rt.now();
    // No virtual time passes: the refusal starts the next attempt.
    within(
        rt.inner.real(),
        STEP,
        "the connection",
        connect_any(&rt, &[refused, good], Duration::from_secs(10)),
    )
    .await
    .expect("the second address connects");
    assert_eq!(rt.attempts(), [(refused, started), (good, started)]);
    assert_eq!(settled(&accepted), 1);

    // Every address refusing: the last refusal is the error.
    let failed = within(
        rt.inner.real(),
        STEP,
        "the failure",
        connect_any(&rt, &[refused, refusing()], Duration::from_secs(10)),
    )
    .await;
    match failed {
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused),
        Ok(_) => panic!("nothing listens, yet a connection was made"),
    }
}

async fn the_first_connection_wins_and_later_addresses_are_not_tried<R: Runtime>(rt: R) {
    let (good, accepted) = listening();
    let (other, other_accepted) = listening();
    let rt = Blackhole::new(rt, SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9)));
    within(
        rt.inner.real(),
        STEP,
        "the connection",
        connect_any(&rt, &[good, other], Duration::from_secs(10)),
    )
    .await
    .expect("the first address connects");
    assert_eq!(rt.attempts().len(), 1, "{:?}", rt.attempts());
    // Give a stray second attempt time to show.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(settled(&accepted), 1);
    assert_eq!(other_accepted.load(Ordering::SeqCst), 0);
}
