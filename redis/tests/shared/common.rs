//! What the tests share: seal keys, a pool on a test's server, known token sets and
//! records, and raw access to the server.

use std::time::{Duration, SystemTime};

use latchkey::TokenSet;
use latchkey::directory::{FlowKey, FlowRecord};
use latchkey_redis::{Redis, RedisConfig, SealKeys};
use latchkey_tests::redis::{RedisServer, Reply};
use secrecy::SecretString;

/// A key file with one key, `old`.
pub const OLD_KEYS: &str = "old AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n";
/// A key file after a rotation: `new` seals, `old` still opens.
pub const ROTATED_KEYS: &str = "# rotated\nnew AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\nold AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n";

/// A pool on `server` sealing with [`OLD_KEYS`].
pub fn redis(server: &RedisServer) -> Redis {
    redis_with(server, OLD_KEYS)
}

/// A pool on `server` sealing with `keys`.
pub fn redis_with(server: &RedisServer, keys: &str) -> Redis {
    let keys = SealKeys::parse(keys).expect("test keys");
    Redis::new(RedisConfig::new(&server.url(), keys)).expect("a pool")
}

/// A token set with these tokens.
pub fn tokens(access: &str, refresh: &str) -> TokenSet {
    TokenSet::new(SecretString::from(access))
        .with_refresh_token(SecretString::from(refresh))
        .with_expires_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000))
}

/// The access token of `tokens`.
pub fn access(tokens: &TokenSet) -> String {
    use secrecy::ExposeSecret;
    tokens.access_token().expose_secret().to_owned()
}

/// A flow key made of `byte`.
pub fn flow_key(byte: u8) -> FlowKey {
    FlowKey::from_bytes([byte; 32])
}

/// A record like the engine's, with this verifier and nonce.
pub fn record(verifier: &str, nonce: &str) -> FlowRecord {
    FlowRecord::from_bytes(
        format!(
            r#"{{"client_id":"backend","deadline":1900000600000,"nonce":"{nonce}","redirect_uri":"https://app.example/callback","token_endpoint":"https://idp.example/token","v":1,"verifier":"{verifier}"}}"#
        )
        .into_bytes(),
    )
}

/// Runs one command on a connection of the test's own.
pub fn command(server: &RedisServer, arguments: &[&[u8]]) -> Reply {
    server
        .connect()
        .and_then(|mut connection| connection.command(arguments))
        .expect("the test's own connection")
}

/// The value of `key` as stored, if any.
pub fn stored(server: &RedisServer, key: &str) -> Option<Vec<u8>> {
    match command(server, &[b"GET", key.as_bytes()]) {
        Reply::Bulk(value) => value,
        other => panic!("GET {key}: {other:?}"),
    }
}

/// The milliseconds `key` has left; negative when it has no expiry or does not exist.
pub fn pttl(server: &RedisServer, key: &str) -> i64 {
    match command(server, &[b"PTTL", key.as_bytes()]) {
        Reply::Integer(left) => left,
        other => panic!("PTTL {key}: {other:?}"),
    }
}

/// An announcement that flow `byte` failed.
pub fn announcement_failed(byte: u8) -> latchkey::directory::Announcement {
    latchkey::directory::Announcement {
        key: flow_key(byte),
        outcome: latchkey::directory::Outcome::Failed(format!("attempt {byte}")),
    }
}
