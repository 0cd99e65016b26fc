//! The token store: round trips, prefixes, and the fenced refresh lock (S57).

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use latchkey_io::store::TokenStore;
use latchkey_redis::{Redis, RedisConfig, SealKeys};
use latchkey_tests::redis::RedisServer;

use crate::common::{self, OLD_KEYS, access, tokens};

#[test]
fn token_sets_round_trip_and_deletes_remove_them() {
    let server = RedisServer::start();
    let store = common::redis(&server).token_store();
    assert!(store.blocks() && store.shares_refresh());
    assert_eq!(store.load("alice").expect("load").map(|t| access(&t)), None);
    store.save("alice", &tokens("a1", "r1")).expect("save");
    store.save("bob", &tokens("b1", "r1")).expect("save");
    let loaded = store.load("alice").expect("load").expect("stored");
    assert_eq!(access(&loaded), "a1");
    assert_eq!(loaded.expires_at(), tokens("a1", "r1").expires_at());
    store.save("alice", &tokens("a2", "r2")).expect("save");
    assert_eq!(
        store
            .load("alice")
            .expect("load")
            .map(|t| access(&t))
            .as_deref(),
        Some("a2")
    );
    store.delete("alice").expect("delete");
    store
        .delete("alice")
        .expect("deleting an absent entry succeeds");
    assert!(store.load("alice").expect("load").is_none());
    assert!(store.load("bob").expect("load").is_some());
    assert!(common::stored(&server, "latchkey:tokens:bob").is_some_and(|v| v.starts_with(b"lk1")));
}

#[test]
fn prefixes_keep_deployments_apart() {
    let server = RedisServer::start();
    let other = Redis::new(
        RedisConfig::new(&server.url(), SealKeys::parse(OLD_KEYS).expect("keys"))
            .prefix("staging/"),
    )
    .expect("a pool")
    .token_store();
    let store = common::redis(&server).token_store();
    store
        .save("alice", &tokens("production", "r"))
        .expect("save");
    other.save("alice", &tokens("staging", "r")).expect("save");
    assert_eq!(
        access(&store.load("alice").expect("load").expect("stored")),
        "production"
    );
    assert_eq!(
        access(&other.load("alice").expect("load").expect("stored")),
        "staging"
    );
    assert!(common::stored(&server, "staging/tokens:alice").is_some());
}

#[test]
fn s57_one_lock_holder_at_a_time() {
    let server = RedisServer::start();
    let replicas: Vec<_> = (0..16)
        .map(|_| common::redis(&server).token_store())
        .collect();
    let lease = Duration::from_secs(30);
    let barrier = Arc::new(Barrier::new(replicas.len()));
    let fences: Vec<Option<u64>> = thread::scope(|scope| {
        let racing: Vec<_> = replicas
            .iter()
            .map(|store| {
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || {
                    barrier.wait();
                    store.lock_refresh("alice", lease).expect("asked")
                })
            })
            .collect();
        racing
            .into_iter()
            .map(|racer| racer.join().expect("no panic"))
            .collect()
    });
    let held: Vec<u64> = fences.iter().flatten().copied().collect();
    assert_eq!(held.len(), 1, "{fences:?}");
    let first = held[0];
    // Another login's lock is independent.
    assert!(
        replicas[0]
            .lock_refresh("bob", lease)
            .expect("asked")
            .is_some()
    );
    // Releasing with another fence leaves the lock where it is.
    replicas[1]
        .unlock_refresh("alice", first + 1)
        .expect("asked");
    assert_eq!(
        replicas[2].lock_refresh("alice", lease).expect("asked"),
        None
    );
    replicas[1].unlock_refresh("alice", first).expect("asked");
    let second = replicas[2]
        .lock_refresh("alice", lease)
        .expect("asked")
        .expect("free again");
    assert!(second > first, "{second} > {first}");
    // The lock holds the holder's fence, with the lease as its expiry.
    assert_eq!(
        common::stored(&server, "latchkey:lock:alice"),
        Some(second.to_string().into_bytes())
    );
    let left = common::pttl(&server, "latchkey:lock:alice");
    assert!(left > 25_000 && left <= 30_000, "{left} ms");
}

#[test]
fn s57_a_holder_whose_lease_expired_cannot_overwrite_newer_tokens() {
    let server = RedisServer::start();
    let (a, b) = (
        common::redis(&server).token_store(),
        common::redis(&server).token_store(),
    );
    a.save("alice", &tokens("login", "r0")).expect("save");

    // A takes the lock and stalls past its lease; B takes over and refreshes.
    let stale = a
        .lock_refresh("alice", Duration::from_millis(150))
        .expect("asked")
        .expect("free");
    thread::sleep(Duration::from_millis(300));
    let fresh = b
        .lock_refresh("alice", Duration::from_secs(30))
        .expect("asked")
        .expect("expired");
    assert!(fresh > stale);
    assert!(
        b.save_fenced("alice", &tokens("by-b", "r2"), fresh)
            .expect("written")
    );
    // A wakes up: its write is refused, so is a delete after its refresh token was
    // refused (B had rotated it), and its unlock leaves B's lock alone.
    assert!(
        !a.save_fenced("alice", &tokens("by-a", "r1"), stale)
            .expect("asked")
    );
    assert!(!a.delete_fenced("alice", stale).expect("asked"));
    a.unlock_refresh("alice", stale).expect("asked");
    assert_eq!(
        a.lock_refresh("alice", Duration::from_secs(30))
            .expect("asked"),
        None
    );
    assert_eq!(
        access(&a.load("alice").expect("load").expect("stored")),
        "by-b"
    );
    b.unlock_refresh("alice", fresh).expect("asked");

    // A login that saves while a refresh is in flight wins over the refresh.
    let fence = a
        .lock_refresh("alice", Duration::from_secs(30))
        .expect("asked")
        .expect("free");
    b.save("alice", &tokens("new-login", "r3")).expect("save");
    assert!(
        !a.save_fenced("alice", &tokens("refreshed", "r4"), fence)
            .expect("asked")
    );
    assert_eq!(
        access(&a.load("alice").expect("load").expect("stored")),
        "new-login"
    );
    a.unlock_refresh("alice", fence).expect("asked");

    // So does a logout: the refresh does not bring the tokens back.
    let fence = a
        .lock_refresh("alice", Duration::from_secs(30))
        .expect("asked")
        .expect("free");
    b.delete("alice").expect("delete");
    assert!(
        !a.save_fenced("alice", &tokens("refreshed", "r5"), fence)
            .expect("asked")
    );
    assert!(a.load("alice").expect("load").is_none());
    a.unlock_refresh("alice", fence).expect("asked");

    // Undisturbed, the holder writes, as often as it needs to.
    let fence = a
        .lock_refresh("alice", Duration::from_secs(30))
        .expect("asked")
        .expect("free");
    assert!(
        a.save_fenced("alice", &tokens("refreshed", "r6"), fence)
            .expect("written")
    );
    assert!(
        a.save_fenced("alice", &tokens("again", "r7"), fence)
            .expect("written")
    );
    assert_eq!(
        access(&b.load("alice").expect("load").expect("stored")),
        "again"
    );
}

/// The holder of the lock deletes tokens whose refresh token was refused, and only then.
#[test]
fn s57_the_holder_deletes_refused_tokens() {
    let server = RedisServer::start();
    let store = common::redis(&server).token_store();
    store.save("carol", &tokens("old", "r0")).expect("save");
    let fence = store
        .lock_refresh("carol", Duration::from_secs(30))
        .expect("asked")
        .expect("free");
    assert!(store.delete_fenced("carol", fence).expect("deleted"));
    assert!(store.load("carol").expect("load").is_none());
    // The delete moved the fence on: the same fence deletes nothing more.
    store
        .save("carol", &tokens("new login", "r1"))
        .expect("save");
    assert!(!store.delete_fenced("carol", fence).expect("asked"));
    assert!(store.load("carol").expect("load").is_some());
}
