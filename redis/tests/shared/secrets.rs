//! Nothing secret in the clear, and sealed values bound to where they are stored (S55).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use latchkey::directory::Taken;
use latchkey_io::directory::FlowDirectory;
use latchkey_io::store::TokenStore;
use latchkey_tests::redis::RedisServer;

use crate::common::{self, ROTATED_KEYS, access, flow_key, record, tokens};

const LIFETIME: Duration = Duration::from_secs(600);

/// The ways `secret` could be written: as it is, in base64 and base64url (at each of the
/// three alignments it could have inside a longer encoded text), in hexadecimal and
/// percent-encoded.
fn encodings(secret: &str) -> Vec<(String, Vec<u8>)> {
    let bytes = secret.as_bytes();
    let mut found = vec![
        ("raw".to_owned(), bytes.to_vec()),
        ("hex".to_owned(), hex(bytes).into_bytes()),
        ("HEX".to_owned(), hex(bytes).to_uppercase().into_bytes()),
        ("percent".to_owned(), percent(bytes).into_bytes()),
    ];
    for (name, engine) in [
        ("base64", &STANDARD),
        ("base64 unpadded", &STANDARD_NO_PAD),
        ("base64url", &URL_SAFE),
        ("base64url unpadded", &URL_SAFE_NO_PAD),
    ] {
        for shift in 0..3 {
            let mut shifted = vec![0; shift];
            shifted.extend_from_slice(bytes);
            let text = engine.encode(&shifted);
            // Drop the characters the leading zeros and the tail's padding touch.
            let skip = if shift == 0 { 0 } else { 4 };
            let core = &text.as_bytes()[skip..text.len() - 4];
            found.push((format!("{name}, shifted by {shift}"), core.to_vec()));
        }
    }
    found
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn percent(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn s55_no_secret_reaches_redis_in_any_encoding() {
    let server = RedisServer::start();
    let redis = common::redis(&server);
    let access_token = "at/SECRET+access.token~0123456789abcdefghij";
    let refresh_token = "rt/SECRET+refresh.token~0123456789abcdefgh";
    let verifier = "VERIFIER-secret_0123456789abcdefghijklmnopq";
    let nonce = "NONCE-secret_0123456789abcdefghijklmnopqrst";
    let store = redis.token_store();
    store
        .save("alice@example.com", &tokens(access_token, refresh_token))
        .expect("saved");
    let fence = store
        .lock_refresh("alice@example.com", LIFETIME)
        .expect("asked")
        .expect("free");
    assert!(
        store
            .save_fenced(
                "alice@example.com",
                &tokens(access_token, refresh_token),
                fence
            )
            .expect("saved")
    );
    // A DPoP-bound login's private key is as secret as its tokens.
    let dpop_key = latchkey::keys::Signer::generate(
        latchkey::oidc::Algorithm::ES256,
        latchkey_io::crypto::ring(),
    )
    .expect("a key")
    .private_key()
    .clone();
    let pkcs8 = URL_SAFE_NO_PAD.encode(dpop_key.pkcs8_der());
    store
        .save(
            "bob@example.com",
            &tokens(access_token, refresh_token).with_dpop_key(dpop_key),
        )
        .expect("saved");
    let directory = redis.directory();
    directory
        .share(&flow_key(1), &record(verifier, nonce), LIFETIME)
        .expect("shared");
    directory
        .share(&flow_key(2), &record(verifier, nonce), LIFETIME)
        .expect("shared");
    assert!(matches!(
        directory.take(&flow_key(2)).expect("taken"),
        Taken::Record(_)
    ));
    directory
        .share(&flow_key(3), &record(verifier, nonce), LIFETIME)
        .expect("shared");
    directory.spend(&flow_key(3)).expect("spent");

    let dump = server.dump().expect("dumped");
    assert_eq!(
        dump.len(),
        8,
        "two tokens, two fences, a lock, three flows: {dump:?}"
    );
    for secret in [
        access_token,
        refresh_token,
        verifier,
        nonce,
        &pkcs8[pkcs8.len() - 48..],
    ] {
        for (encoding, needle) in encodings(secret) {
            for (key, value) in &dump {
                let key_text = String::from_utf8_lossy(key);
                assert!(
                    !contains(key, &needle),
                    "{secret} ({encoding}) in key {key_text}"
                );
                assert!(
                    !contains(value, &needle),
                    "{secret} ({encoding}) in {key_text}'s value"
                );
            }
        }
    }
    // Every value that is not a counter, a lock or a mark is sealed.
    for (key, value) in &dump {
        let key = String::from_utf8_lossy(key);
        if key.contains(":tokens:") || value.len() > 16 {
            assert!(value.starts_with(b"lk1"), "{key}");
        }
    }
}

#[test]
fn s55_a_record_moved_under_another_key_does_not_open() {
    let server = RedisServer::start();
    let redis = common::redis(&server);
    let directory = redis.directory();
    let (original, other) = (flow_key(1), flow_key(2));
    directory
        .share(&original, &record("v", "n"), LIFETIME)
        .expect("shared");
    let sealed = common::stored(&server, &format!("latchkey:flow:{original}")).expect("stored");
    let moved = format!("latchkey:flow:{other}");
    common::command(&server, &[b"SET", moved.as_bytes(), &sealed]);
    let error = directory
        .take(&other)
        .expect_err("a moved record does not open");
    assert!(error.detail().contains("fails authentication"), "{error}");
    // Nothing was taken: the moved copy is still there, and the original still opens.
    assert_eq!(common::stored(&server, &moved), Some(sealed.clone()));
    assert!(matches!(
        directory.take(&original).expect("asked"),
        Taken::Record(_)
    ));

    // A token set copied to another user does not open either.
    let store = redis.token_store();
    store.save("alice", &tokens("alice's", "r")).expect("saved");
    let alices = common::stored(&server, "latchkey:tokens:alice").expect("stored");
    common::command(&server, &[b"SET", b"latchkey:tokens:mallory", &alices]);
    let error = store.load("mallory").expect_err("moved tokens do not open");
    assert!(
        error.detail().contains("\"mallory\"") && error.detail().contains("fails authentication"),
        "{error}"
    );

    // Nor does a token set pass for a flow record, or the other way round.
    common::command(&server, &[b"SET", moved.as_bytes(), &alices]);
    assert!(directory.take(&other).is_err());
    common::command(&server, &[b"SET", b"latchkey:tokens:alice", &sealed]);
    assert!(store.load("alice").is_err());
}

#[test]
fn s55_rotated_keys_open_old_records_and_seal_with_the_first() {
    let server = RedisServer::start();
    let (old, rotated) = (
        common::redis(&server),
        common::redis_with(&server, ROTATED_KEYS),
    );
    old.token_store()
        .save("alice", &tokens("before", "r"))
        .expect("saved");
    old.directory()
        .share(&flow_key(1), &record("v", "n"), LIFETIME)
        .expect("shared");

    // A replica with the new key reads what the old key sealed...
    assert_eq!(
        access(
            &rotated
                .token_store()
                .load("alice")
                .expect("opens")
                .expect("stored")
        ),
        "before"
    );
    assert!(matches!(
        rotated.directory().take(&flow_key(1)).expect("asked"),
        Taken::Record(_)
    ));
    // ... and seals with the new one.
    rotated
        .token_store()
        .save("alice", &tokens("after", "r"))
        .expect("saved");
    rotated
        .directory()
        .share(&flow_key(2), &record("v", "n"), LIFETIME)
        .expect("shared");
    for key in [
        "latchkey:tokens:alice".to_owned(),
        format!("latchkey:flow:{}", flow_key(2)),
    ] {
        assert!(
            common::stored(&server, &key)
                .expect("stored")
                .starts_with(b"lk1\x03new"),
            "{key}"
        );
    }
    // A replica not given the new key yet names the key it lacks, and takes nothing: the
    // record stays for a replica that can open it.
    let error = old
        .token_store()
        .load("alice")
        .expect_err("sealed with an unknown key");
    assert!(error.detail().contains("key id \"new\""), "{error}");
    let error = old
        .directory()
        .take(&flow_key(2))
        .expect_err("sealed with an unknown key");
    assert!(error.detail().contains("key id \"new\""), "{error}");
    assert!(matches!(
        rotated.directory().take(&flow_key(2)).expect("asked"),
        Taken::Record(_)
    ));
}

#[test]
fn key_sets_are_sealed_for_their_integrity_and_expire_with_max_age() {
    let server = RedisServer::start();
    let redis = common::redis(&server);
    let key_sets = redis.key_sets();
    assert_eq!(key_sets.load().expect("asked"), None);
    let document = br#"{"https://idp.example/jwks":{"fetched":1900000000,"keys":[]}}"#;
    key_sets.save(document).expect("saved");
    assert_eq!(
        common::redis(&server)
            .key_sets()
            .load()
            .expect("asked")
            .as_deref(),
        Some(&document[..])
    );
    let left = common::pttl(&server, "latchkey:keysets");
    let max_age = i64::try_from(latchkey::oidc::MAX_AGE.as_millis()).expect("fits");
    assert!(left > max_age - 5_000 && left <= max_age, "{left} ms");
    assert!(
        common::stored(&server, "latchkey:keysets")
            .expect("stored")
            .starts_with(b"lk1")
    );
    // Keys planted by someone who can write to Redis but lacks the seal keys are refused.
    common::command(&server, &[b"SET", b"latchkey:keysets", document]);
    let error = key_sets.load().expect_err("not sealed");
    assert!(error.detail().contains("do not open"), "{error}");
}
