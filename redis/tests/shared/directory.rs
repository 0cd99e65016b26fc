//! The flow directory: single-use takes (S54), marks, expiry (S56) and announcements.

use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use latchkey::directory::{Announcement, Outcome, Taken};
use latchkey_io::directory::FlowDirectory;
use latchkey_redis::RedisDirectory;
use latchkey_tests::redis::{RedisServer, Reply};

use crate::common::{self, announcement_failed, flow_key, record};

const LIFETIME: Duration = Duration::from_secs(600);

#[test]
fn s54_concurrent_takes_hand_the_record_to_exactly_one() {
    let server = RedisServer::start();
    // Each thread a replica of its own, with its own pool.
    let replicas: Vec<_> = (0..32)
        .map(|_| common::redis(&server).directory())
        .collect();
    let key = flow_key(1);
    let shared = record("v".repeat(43).as_str(), "n");
    replicas[0].share(&key, &shared, LIFETIME).expect("shared");
    let barrier = Arc::new(Barrier::new(replicas.len()));
    let taken: Vec<Taken> = thread::scope(|scope| {
        let racing: Vec<_> = replicas
            .iter()
            .map(|directory| {
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || {
                    barrier.wait();
                    directory.take(&key).expect("asked")
                })
            })
            .collect();
        racing
            .into_iter()
            .map(|racer| racer.join().expect("no panic"))
            .collect()
    });
    let records: Vec<_> = taken
        .iter()
        .filter(|t| matches!(t, Taken::Record(_)))
        .collect();
    assert_eq!(records, [&Taken::Record(shared)]);
    assert_eq!(
        taken
            .iter()
            .filter(|t| **t == Taken::Spent { used: true })
            .count(),
        replicas.len() - 1
    );
    // Spending a taken record leaves it "used".
    replicas[1].spend(&key).expect("spent");
    assert_eq!(
        replicas[2].take(&key).expect("asked"),
        Taken::Spent { used: true }
    );
}

#[test]
fn marks_tell_a_used_record_from_an_ended_flow() {
    let server = RedisServer::start();
    let directory = common::redis(&server).directory();
    let (ended, missing) = (flow_key(2), flow_key(3));
    directory
        .share(&ended, &record("v", "n"), LIFETIME)
        .expect("shared");
    directory.spend(&ended).expect("spent");
    directory
        .spend(&missing)
        .expect("spending nothing succeeds");
    for _ in 0..2 {
        assert_eq!(
            directory.take(&ended).expect("asked"),
            Taken::Spent { used: false }
        );
    }
    assert_eq!(directory.take(&missing).expect("asked"), Taken::Missing);
    assert_eq!(
        common::stored(&server, &format!("latchkey:flow:{ended}")).as_deref(),
        Some(&b"ended"[..])
    );
    // Nothing is created for a key never shared.
    assert_eq!(
        common::stored(&server, &format!("latchkey:flow:{missing}")),
        None
    );
}

#[test]
fn s56_records_expire_with_their_lifetime() {
    let server = RedisServer::start();
    let directory = common::redis(&server).directory();
    let (taken, untouched) = (flow_key(4), flow_key(5));
    let lifetime = Duration::from_millis(1500);
    for key in [taken, untouched] {
        directory
            .share(&key, &record("v", "n"), lifetime)
            .expect("shared");
        let left = common::pttl(&server, &format!("latchkey:flow:{key}"));
        assert!(left > 500 && left <= 1500, "{left} ms");
    }
    assert!(matches!(
        directory.take(&taken).expect("asked"),
        Taken::Record(_)
    ));
    // The mark keeps the record's expiry.
    let left = common::pttl(&server, &format!("latchkey:flow:{taken}"));
    assert!(left > 0 && left <= 1500, "{left} ms");
    thread::sleep(Duration::from_millis(1600));
    for key in [taken, untouched] {
        assert_eq!(directory.take(&key).expect("asked"), Taken::Missing);
    }
}

/// Starts listening on `directory`; announcements arrive on the receiver.
fn listening(directory: &RedisDirectory) -> Receiver<Announcement> {
    let (heard, hearing) = channel();
    let heard = std::sync::Mutex::new(heard);
    directory
        .listen(Arc::new(move |announcement| {
            let _ = heard.lock().expect("not poisoned").send(announcement);
        }))
        .expect("listening");
    hearing
}

/// How many connections are subscribed to the announcement channel.
fn subscribers(server: &RedisServer) -> i64 {
    match common::command(server, &[b"PUBSUB", b"NUMSUB", b"latchkey:outcomes"]) {
        Reply::Array(reply) => match reply.as_slice() {
            [_, Reply::Integer(count)] => *count,
            other => panic!("PUBSUB NUMSUB: {other:?}"),
        },
        other => panic!("PUBSUB NUMSUB: {other:?}"),
    }
}

/// Waits up to five seconds for `condition`.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "{what} within 5 s");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn announcements_reach_every_replica_across_a_restart_until_dropped() {
    let mut server = RedisServer::start();
    let (a, b) = (
        common::redis(&server).directory(),
        common::redis(&server).directory(),
    );
    let (heard_a, heard_b) = (listening(&a), listening(&b));
    let stored = Announcement {
        key: flow_key(6),
        outcome: Outcome::Stored,
    };
    // Subscribed before `listen` returned: the first announcement is heard.
    b.announce(&stored).expect("announced");
    for heard in [&heard_a, &heard_b] {
        assert_eq!(
            heard.recv_timeout(Duration::from_secs(5)),
            Ok(stored.clone())
        );
    }
    // Garbage on the channel is ignored.
    common::command(
        &server,
        &[b"PUBLISH", b"latchkey:outcomes", b"not an announcement"],
    );

    server.restart();
    // The listeners reconnect by themselves: announce until both hear again.
    let mut attempt = 10;
    let (mut a_back, mut b_back) = (false, false);
    eventually("both listeners back", || {
        attempt += 1;
        // The first call after the restart may find its connection closed.
        let _ = a.announce(&announcement_failed(attempt));
        a_back |= heard_a.recv_timeout(Duration::from_millis(100)).is_ok();
        b_back |= heard_b.recv_timeout(Duration::from_millis(100)).is_ok();
        a_back && b_back
    });

    // Dropping a directory (all its clones) ends its listener.
    assert_eq!(subscribers(&server), 2);
    let clone = a.clone();
    drop(a);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(subscribers(&server), 2, "a clone still holds it");
    drop(clone);
    eventually("the listener gone", || subscribers(&server) == 1);
    drop(b);
    eventually("both listeners gone", || subscribers(&server) == 0);
}

#[test]
fn a_listener_that_panics_keeps_hearing() {
    let server = RedisServer::start();
    let directory = common::redis(&server).directory();
    let (heard, hearing) = channel();
    let heard = std::sync::Mutex::new(heard);
    directory
        .listen(Arc::new(move |announcement: Announcement| {
            let _ = heard
                .lock()
                .expect("not poisoned")
                .send(announcement.clone());
            assert_ne!(announcement.key, flow_key(7), "a listener's bug");
        }))
        .expect("listening");
    directory
        .announce(&announcement_failed(7))
        .expect("announced");
    directory
        .announce(&announcement_failed(8))
        .expect("announced");
    for expected in [7, 8] {
        let got = hearing.recv_timeout(Duration::from_secs(5)).expect("heard");
        assert_eq!(got.key, flow_key(expected));
    }
}

/// A replica may start while Redis is away: listening starts anyway, and announcements
/// are heard once Redis is back (S58).
#[test]
fn s58_a_listener_started_while_redis_is_away_hears_once_it_is_back() {
    let mut server = RedisServer::start();
    let directory = common::redis(&server).directory();
    server.stop();
    let heard = listening(&directory);
    server.restart();
    let mut attempt = 20;
    eventually("the listener subscribed once redis is back", || {
        attempt += 1;
        let _ = directory.announce(&announcement_failed(attempt));
        heard.recv_timeout(Duration::from_millis(100)).is_ok()
    });
}
