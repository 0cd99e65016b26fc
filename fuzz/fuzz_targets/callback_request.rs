//! The browser-facing port: arbitrary bytes on up to four connections to an engine with two
//! pending flows.
//!
//! Input: the bytes of each connection, separated by two NUL bytes (`\0\0`); the fourth
//! connection takes everything after the third separator. A seed that is one plain HTTP
//! request is one connection.
//!
//! Checks:
//! - no panic;
//! - feeding each connection's bytes whole, or in three pieces cut at points derived from the
//!   input, gives the same actions (compared with `model::fingerprint`, secrets included);
//! - each connection is answered (`Respond`) or closed (`Close`) at most once;
//! - every `Respond` parses as an HTTP response with the S28 headers and an exact
//!   `Content-Length`;
//! - a `SendTokenRequest` only for a flow whose `state` some connection carried (raw or
//!   percent-encoded), and at most one per flow.
#![no_main]
#![forbid(unsafe_code)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use latchkey::{Action, FlowId};
use latchkey_tests::harness::Harness;
use latchkey_tests::model::fingerprint;
use libfuzzer_sys::fuzz_target;

/// Separates connections in the input.
const SEPARATOR: &[u8] = b"\0\0";
/// Most connections per input.
const MAX_CONNS: usize = 4;

thread_local! {
    /// The harness engine (127.0.0.1:8080) with two pending flows, started from the fixed
    /// entropy `entropy_from(1)` and `entropy_from(2)`: their states are the same in every run
    /// and can appear in seed files.
    static BASE: (Harness, Vec<(FlowId, String)>) = {
        let mut harness = Harness::new();
        let flows = (0..2)
            .map(|_| {
                let started = harness.start();
                (started.flow, started.state)
            })
            .collect();
        (harness, flows)
    };
}

fn connections(data: &[u8]) -> Vec<&[u8]> {
    let mut conns = Vec::new();
    let mut rest = data;
    while conns.len() + 1 < MAX_CONNS {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                conns.push(&rest[..at]);
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    conns.push(rest);
    conns
}

fn drain(engine: &mut latchkey::Engine) -> Vec<Action> {
    std::iter::from_fn(|| engine.poll_action()).collect()
}

fn same(whole: &[Action], split: &[Action], context: &str) {
    let whole: Vec<String> = whole.iter().map(fingerprint).collect();
    let split: Vec<String> = split.iter().map(fingerprint).collect();
    assert_eq!(whole, split, "whole and split input differ ({context})");
}

fuzz_target!(|data: &[u8]| {
    let (harness, flows) = BASE.with(|base| base.clone());
    let now = harness.now;
    let mut whole = harness.engine.clone();
    let mut split = harness.engine;
    let conns = connections(data);
    let mut hash = common::fnv1a(data);

    let mut actions = Vec::new();
    let mut ids = Vec::new();
    for (i, bytes) in conns.iter().enumerate() {
        let conn = whole.handle_accept(now).expect("below the connection cap");
        assert_eq!(split.handle_accept(now), Some(conn));
        ids.push(conn);

        whole.handle_bytes(now, conn, bytes);
        let a = usize::from(hash as u16) % (bytes.len() + 1);
        let b = usize::from((hash >> 16) as u16) % (bytes.len() + 1);
        hash = hash.rotate_right(32);
        let (a, b) = (a.min(b), a.max(b));
        for piece in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
            split.handle_bytes(now, conn, piece);
        }
        let got = drain(&mut whole);
        same(
            &got,
            &drain(&mut split),
            &format!("bytes of connection {i}"),
        );
        actions.extend(got);
    }
    for &conn in &ids {
        whole.handle_eof(now, conn);
        split.handle_eof(now, conn);
    }
    let got = drain(&mut whole);
    same(&got, &drain(&mut split), "end of input");
    actions.extend(got);
    let later = now + Duration::from_secs(24 * 60 * 60);
    whole.handle_timeout(later);
    split.handle_timeout(later);
    let got = drain(&mut whole);
    same(&got, &drain(&mut split), "every timer fired");
    actions.extend(got);

    let mut answered = BTreeMap::new();
    let mut exchanged = BTreeMap::new();
    for action in &actions {
        match action {
            Action::Respond { conn, .. } | Action::Close { conn } => {
                *answered.entry(*conn).or_insert(0) += 1;
                assert_eq!(answered[conn], 1, "connection {conn} answered twice");
                common::check_respond(action);
            }
            Action::SendTokenRequest { flow, .. } => {
                *exchanged.entry(*flow).or_insert(0) += 1;
                assert_eq!(exchanged[flow], 1, "flow {flow} sent two token requests");
                let (_, state) = flows
                    .iter()
                    .find(|(id, _)| id == flow)
                    .expect("token request for a pending flow");
                let carried = conns.iter().any(|bytes| {
                    common::contains(bytes, state.as_bytes())
                        || common::contains(&common::percent_decode_lossy(bytes), state.as_bytes())
                });
                assert!(
                    carried,
                    "flow {flow} exchanged a code without its state being sent"
                );
            }
            Action::OpenBrowser { .. } => panic!("browser bytes started a flow"),
            Action::Persist { .. } => panic!("tokens without a token response"),
            Action::FetchKeys { .. } => panic!("a key-set fetch without an ID token"),
            Action::RequestDeviceCode { .. } | Action::ShowUserCode { .. } => {
                panic!("browser bytes started a device login")
            }
            Action::PushAuthorization { .. } => panic!("browser bytes pushed a login"),
            Action::ShareFlow { .. }
            | Action::TakeFlow { .. }
            | Action::SpendFlow { .. }
            | Action::AnnounceOutcome { .. } => {
                panic!("a flow-directory action from an engine without one")
            }
            Action::Finished { .. } => {}
        }
    }
});
