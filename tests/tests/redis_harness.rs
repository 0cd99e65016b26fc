//! The Redis the shared-store tests run on: a server of the test's own on loopback whose
//! data survives a crash and a restart on the same port (its append-only file), and the
//! plain RESP connection tests use to look at what a store wrote.

use latchkey_tests::redis::{RedisServer, Reply};

fn bulk(text: &str) -> Reply {
    Reply::Bulk(Some(text.as_bytes().to_vec()))
}

#[test]
fn a_server_of_its_own_answers_and_keeps_its_data_across_a_crash() {
    let mut redis = RedisServer::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    let mut connection = redis.connect().expect("connect");
    assert_eq!(
        connection
            .command(&[b"SET", b"flow:1", b"sealed"])
            .expect("SET"),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        connection
            .command(&[b"SET", b"flow:2", b"short", b"PX", b"60000"])
            .expect("SET with expiry"),
        Reply::Simple("OK".into())
    );

    // A crash (SIGKILL): the port refuses connections until the restart.
    redis.stop();
    assert!(!redis.is_running());
    assert!(redis.connect().is_err(), "nothing listens after the crash");
    redis.restart();
    let mut connection = redis.connect().expect("connect after the restart");
    assert_eq!(
        connection.command(&[b"GET", b"flow:1"]).expect("GET"),
        bulk("sealed")
    );
    let ttl = connection.command(&[b"PTTL", b"flow:2"]).expect("PTTL");
    assert!(
        matches!(ttl, Reply::Integer(left) if left > 0 && left <= 60_000),
        "the expiry survives too: {ttl:?}"
    );
    assert!(redis.dir().join("appendonlydir").is_dir());
}

#[test]
fn errors_and_missing_values_are_replies_of_their_own() {
    let redis = RedisServer::start();
    let mut connection = redis.connect().expect("connect");
    assert_eq!(
        connection.command(&[b"GET", b"nothing"]).expect("GET"),
        Reply::Bulk(None)
    );
    assert!(matches!(
        connection.command(&[b"NO-SUCH-COMMAND"]).expect("an error reply"),
        Reply::Error(message) if message.starts_with("ERR")
    ));
    assert_eq!(
        connection
            .command(&[b"GETDEL", b"nothing"])
            .expect("GETDEL"),
        Reply::Bulk(None)
    );
}

#[test]
fn a_dump_shows_every_value_of_every_type() {
    let redis = RedisServer::start();
    let mut connection = redis.connect().expect("connect");
    for command in [
        &[&b"SET"[..], b"a", b"string-value"][..],
        &[b"HSET", b"b", b"field", b"hash-value"],
        &[b"RPUSH", b"c", b"list-value"],
        &[b"SADD", b"d", b"set-value"],
        &[b"ZADD", b"e", b"1", b"zset-value"],
    ] {
        connection.command(command).expect("write");
    }
    // More keys than one SCAN step returns by default.
    for n in 0..1500 {
        let key = format!("k{n}");
        connection
            .command(&[b"SET", key.as_bytes(), b"x"])
            .expect("SET");
    }
    let mut dump = redis.dump().expect("dump");
    assert_eq!(dump.len(), 1505);
    dump.sort();
    let text = |key: &[u8]| {
        let (_, value) = dump.iter().find(|(k, _)| k == key).expect("the key");
        String::from_utf8_lossy(value).into_owned()
    };
    assert_eq!(text(b"a"), "string-value\n");
    assert_eq!(text(b"b"), "field\nhash-value\n");
    assert_eq!(text(b"c"), "list-value\n");
    assert_eq!(text(b"d"), "set-value\n");
    assert_eq!(text(b"e"), "zset-value\n1\n");
}

#[test]
fn two_servers_run_side_by_side() {
    let (one, two) = (RedisServer::start(), RedisServer::start());
    assert_ne!(one.port(), two.port());
    one.connect()
        .expect("connect")
        .command(&[b"SET", b"only-here", b"1"])
        .expect("SET");
    assert_eq!(
        two.connect()
            .expect("connect")
            .command(&[b"EXISTS", b"only-here"])
            .expect("EXISTS"),
        Reply::Integer(0)
    );
}
