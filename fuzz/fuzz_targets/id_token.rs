//! ID tokens and key sets from a hostile provider (or a hostile network path to it).
//!
//! Input: bytes, read three ways.
//!
//! Checks:
//! - as a key set (JWKS): no panic; a set that parses has 1 to 100 keys and survives its
//!   own JSON unchanged;
//! - as an ID token, against the vectors' provider and keys (`tests/vectors`): no panic,
//!   and it verifies only if it is one of the vectors' valid tokens, byte for byte (a
//!   fuzzer cannot forge a signature, so anything else that verifies is a bug);
//! - as the key set that answers an engine's fetch while a login's ID token waits for it:
//!   no panic, no tokens stored (the token's nonce is never the login's), and the login
//!   ends once with an ID token error and the browser answered.
#![no_main]
#![forbid(unsafe_code)]

mod common;

use latchkey::oidc::{KeySet, MAX_KEYS};
use latchkey::{Action, FlowError, Provider};
use latchkey_tests::harness::{self, Harness, json_response, parse_response};
use latchkey_tests::id_token_vectors::Vectors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let vectors = Vectors::get();

    if let Ok(set) = KeySet::parse(data) {
        assert!((1..=MAX_KEYS).contains(&set.keys().len()));
        let json = serde_json::to_vec(&set.to_json()).expect("JSON");
        assert_eq!(KeySet::parse(&json).as_ref(), Ok(&set), "the round trip changed it");
    }

    if let Ok(token) = std::str::from_utf8(data) {
        if vectors.verify(None, &vectors.keys, token).is_ok() {
            let valid = vectors
                .cases
                .iter()
                .any(|case| case.expect == "ok" && case.token == token);
            assert!(valid, "a token the vectors do not sign verified: {token:?}");
        }
    }

    key_set_answer(vectors, data);
});

/// A login whose ID token (a valid vector token, of another login's nonce) waits for the
/// key set; `body` answers the fetch.
fn key_set_answer(vectors: &Vectors, body: &[u8]) {
    let provider: Provider = vectors.provider(None);
    let mut h = Harness::with(harness::config_with(provider).build().expect("a config"));
    let started = h.start();
    let (_, exchange, _) = h.to_exchange(&started);
    let token = &vectors.cases[0].token;
    let answer = format!(
        r#"{{"access_token":"{}","token_type":"Bearer","expires_in":3600,"id_token":"{token}"}}"#,
        vectors.access_token()
    );
    let response = parse_response(&json_response(200, &answer));
    h.engine
        .handle_token_response(h.now, vectors.checked_at(), exchange, response);
    let Some(Action::FetchKeys { id, .. }) = h.engine.poll_action() else {
        panic!("the ID token waits for the key set");
    };
    let mut response = http::Response::new(body.to_vec());
    *response.status_mut() = http::StatusCode::OK;
    h.engine
        .handle_keys_response(h.now, vectors.checked_at(), id, response);
    let actions: Vec<Action> = std::iter::from_fn(|| h.engine.poll_action()).collect();
    let mut finished = 0;
    for action in &actions {
        match action {
            Action::Respond { .. } => common::check_respond(action),
            Action::Finished {
                result: Err(FlowError::IdToken(_)),
                ..
            } => finished += 1,
            other => panic!("only a refusal may follow: {other:?}"),
        }
    }
    assert_eq!(finished, 1, "{actions:?}");
    assert_eq!(h.engine.flows_in_progress(), 0);
}
