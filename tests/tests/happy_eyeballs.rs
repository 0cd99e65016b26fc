//! The HTTP client's connection attempts (RFC 8305, Happy Eyeballs) in virtual time, on both
//! drivers: an address that never answers holds the next attempt back by 250 ms and no
//! longer; an address that refuses lets the next attempt start at once; the attempts stop at
//! the first connection.
//!
//! The address that never answers is simulated: the virtual runtime leaves connections to
//! it pending forever (nothing on loopback black-holes a SYN). Every other connection is
//! real.

#[macro_use]
mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
    let rt = Virtual::new(rt).with_silent(silent);
    let started = rt.now();
    let (connected, ()) = within(
        rt.real(),
        STEP,
        "the connection",
        future::zip(
            connect_any(&rt, &[silent, good], Duration::from_secs(10)),
            async {
                future::yield_now().await;
                // 249 ms: only the first attempt is out.
                rt.clock().advance(Duration::from_millis(249));
                future::yield_now().await;
                assert_eq!(rt.connections().len(), 1, "{:?}", rt.connections());
                rt.clock().advance(Duration::from_millis(1));
            },
        ),
    )
    .await;
    connected.expect("the second address connects");
    let attempts = rt.connections();
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
    let rt = Virtual::new(rt);
    let started = rt.now();
    // No virtual time passes: the refusal starts the next attempt.
    within(
        rt.real(),
        STEP,
        "the connection",
        connect_any(&rt, &[refused, good], Duration::from_secs(10)),
    )
    .await
    .expect("the second address connects");
    assert_eq!(rt.connections(), [(refused, started), (good, started)]);
    assert_eq!(settled(&accepted), 1);

    // Every address refusing: the last refusal is the error.
    let failed = within(
        rt.real(),
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
    let rt = Virtual::new(rt);
    within(
        rt.real(),
        STEP,
        "the connection",
        connect_any(&rt, &[good, other], Duration::from_secs(10)),
    )
    .await
    .expect("the first address connects");
    assert_eq!(rt.connections().len(), 1, "{:?}", rt.connections());
    // Give a stray second attempt time to show.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(settled(&accepted), 1);
    assert_eq!(other_accepted.load(Ordering::SeqCst), 0);
}
