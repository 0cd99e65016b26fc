//! A Redis that cannot be reached is a typed error, and work resumes when it is back (S58).

use std::time::{Duration, Instant};

use latchkey::StoreError;
use latchkey::directory::Taken;
use latchkey_io::directory::FlowDirectory;
use latchkey_io::store::TokenStore;
use latchkey_redis::{Redis, RedisConfig, SealKeys};
use latchkey_tests::redis::{RedisServer, Reply};

use crate::common::{self, OLD_KEYS, access, announcement_failed, flow_key, record, tokens};

const LIFETIME: Duration = Duration::from_secs(600);

/// Every operation of the store, the directory and the key-set cache, by name.
fn every_operation(redis: &Redis) -> Vec<(&'static str, Result<(), StoreError>)> {
    let (store, directory, key_sets) = (redis.token_store(), redis.directory(), redis.key_sets());
    let lease = Duration::from_secs(30);
    vec![
        ("ping", redis.ping()),
        ("save", store.save("bob", &tokens("a", "r"))),
        ("load", store.load("alice").map(drop)),
        ("delete", store.delete("bob")),
        ("lock_refresh", store.lock_refresh("bob", lease).map(drop)),
        (
            "save_fenced",
            store.save_fenced("bob", &tokens("a", "r"), 1).map(drop),
        ),
        ("unlock_refresh", store.unlock_refresh("bob", 1)),
        (
            "share",
            directory.share(&flow_key(9), &record("v", "n"), LIFETIME),
        ),
        ("take", directory.take(&flow_key(8)).map(drop)),
        ("spend", directory.spend(&flow_key(8))),
        ("announce", directory.announce(&announcement_failed(8))),
        ("save key sets", key_sets.save(b"{}")),
        ("load key sets", key_sets.load().map(drop)),
    ]
}

#[test]
fn s58_unreachable_redis_is_a_typed_error_and_recovery_follows() {
    let mut server = RedisServer::start();
    let redis = common::redis(&server);
    let (store, directory) = (redis.token_store(), redis.directory());
    store.save("alice", &tokens("kept", "r")).expect("saved");
    directory
        .share(&flow_key(1), &record("v", "n"), LIFETIME)
        .expect("shared");
    redis.ping().expect("up");

    server.stop();
    let named = format!("redis at 127.0.0.1:{}", server.port());
    for (operation, result) in timed(|| every_operation(&redis)) {
        let error = result.expect_err(operation);
        assert!(error.detail().starts_with(&named), "{operation}: {error}");
    }
    // Once the pool has noticed, every call says why plainly.
    let error = store.load("alice").expect_err("down");
    assert_eq!(
        error.detail(),
        format!("{named} unreachable: connection refused")
    );

    server.restart();
    for (operation, result) in every_operation(&redis) {
        result.unwrap_or_else(|error| panic!("{operation} after the restart: {error}"));
    }
    // What was stored before the crash is still there (the append-only file).
    assert_eq!(
        access(&store.load("alice").expect("load").expect("kept")),
        "kept"
    );
    assert!(matches!(
        directory.take(&flow_key(1)).expect("asked"),
        Taken::Record(_)
    ));
}

/// Runs `operations` and checks that they took under a second each on average.
fn timed<T>(operations: impl FnOnce() -> Vec<T>) -> Vec<T> {
    let started = Instant::now();
    let results = operations();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1) * u32::try_from(results.len()).expect("few"),
        "{took:?}"
    );
    results
}

#[test]
fn connections_closed_by_a_restart_are_replaced_on_the_next_call() {
    let mut server = RedisServer::start();
    let redis = common::redis(&server);
    let store = redis.token_store();
    store.save("alice", &tokens("kept", "r")).expect("saved");
    server.restart();
    // The idle connection died with the old process; the call does not notice.
    assert_eq!(
        access(&store.load("alice").expect("load").expect("kept")),
        "kept"
    );
    redis.ping().expect("up");
}

#[test]
fn errors_name_the_server_never_the_password() {
    let server = RedisServer::start();
    let password = "hunter2-redis-password";
    assert_eq!(
        common::command(
            &server,
            &[b"CONFIG", b"SET", b"requirepass", password.as_bytes()]
        ),
        Reply::Simple("OK".into())
    );
    let pool = |url: String| {
        Redis::new(RedisConfig::new(
            &url,
            SealKeys::parse(OLD_KEYS).expect("keys"),
        ))
        .expect("a pool")
    };
    let port = server.port();
    let right = pool(format!("redis://:{password}@127.0.0.1:{port}"));
    right.ping().expect("the right password");
    right
        .token_store()
        .save("alice", &tokens("a", "r"))
        .expect("saved");
    let named = format!("redis at 127.0.0.1:{port}");
    for (url, reason) in [
        (
            format!("redis://:wrong-{password}@127.0.0.1:{port}"),
            "unreachable: it refused the user or password in the URL",
        ),
        (
            format!("redis://127.0.0.1:{port}"),
            "refused PING: NOAUTH Authentication required.",
        ),
    ] {
        let error = pool(url).ping().expect_err("refused");
        assert_eq!(error.detail(), format!("{named} {reason}"));
    }
    drop(server);
    let error = right.ping().expect_err("gone");
    assert!(
        error.detail().starts_with(&named) && !error.detail().contains(password),
        "{error}"
    );
    assert!(!format!("{right:?}").contains(password));
}
