//! The token endpoint's answer: arbitrary bytes through `http1::ResponseReader`, and the
//! response, if any, into an engine whose flow waits for exactly that answer.
//!
//! Input: the raw bytes the token endpoint sends, until it closes the connection.
//!
//! Checks:
//! - no panic;
//! - the reader gives the same outcome (response or error, `read_eof` included) whether the
//!   bytes come whole, one byte at a time, or cut at a point derived from the input;
//! - nothing larger than the cap (64 KiB) is accepted, and a reader with a small cap either
//!   refuses or returns the same response;
//! - a response that leaves the connection reusable (HTTP/1.1 keep-alive) is HTTP/1.1, ends
//!   exactly at the last byte, and is reusable read byte by byte too; one ended by the close
//!   never is;
//! - given the response, the flow either persists tokens (and, once stored, finishes `Ok`
//!   and answers the browser) or finishes with an error and answers the browser; every page
//!   carries the S28 headers.
#![no_main]
#![forbid(unsafe_code)]

mod common;

use latchkey::http1::{ReadError, ResponseReader};
use latchkey::{Action, ConnId, ExchangeId, FlowId};
use latchkey_tests::harness::Harness;
use libfuzzer_sys::fuzz_target;

/// The reader's cap.
const CAP: usize = 64 * 1024;
/// A cap most seeds exceed, to exercise the limit.
const SMALL_CAP: usize = 300;

thread_local! {
    /// The harness engine with one flow in the exchange phase.
    static BASE: (Harness, FlowId, ConnId, ExchangeId) = {
        let mut harness = Harness::new();
        let started = harness.start();
        let (conn, exchange, _) = harness.to_exchange(&started);
        (harness, started.flow, conn, exchange)
    };
}

/// A response reduced to what can be compared: status, version, headers, body.
type Summary = (u16, http::Version, Vec<(String, Vec<u8>)>, Vec<u8>);
/// What reading gave.
type Outcome = Result<Summary, ReadError>;

fn outcome(result: Result<http::Response<Vec<u8>>, ReadError>) -> Outcome {
    result.map(|response| {
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        (
            response.status().as_u16(),
            response.version(),
            headers,
            response.body().clone(),
        )
    })
}

/// Feeds `pieces` in order, stopping at the first result, then signals EOF if needed.
fn read<'a>(cap: usize, pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut reader = ResponseReader::new(cap);
    for piece in pieces {
        match reader.read(piece) {
            Ok(None) => {}
            Ok(Some(response)) => {
                assert!(matches!(reader.read(b""), Err(ReadError::Finished)));
                return outcome(Ok(response));
            }
            Err(error) => {
                assert!(
                    matches!(reader.read(b"x"), Err(again) if again == error),
                    "errors are sticky"
                );
                return Err(error);
            }
        }
    }
    outcome(reader.read_eof())
}

/// A response that leaves its connection reusable is HTTP/1.1, ends exactly at the last
/// byte (nothing after it), and is found reusable however the bytes arrive.
fn reusable_however_split(data: &[u8], response: &http::Response<Vec<u8>>) {
    assert_eq!(response.version(), http::Version::HTTP_11);
    let mut reader = ResponseReader::new(CAP);
    let last = data.len().saturating_sub(1);
    for (index, byte) in data.chunks(1).enumerate() {
        match reader.read(byte) {
            Ok(None) => assert!(index < last, "complete only after the last byte"),
            Ok(Some(_)) => {
                assert_eq!(index, last, "a reusable answer ends at the last byte");
                assert!(reader.reusable(), "reusable whole, not byte by byte");
            }
            Err(error) => panic!("whole it read, byte by byte it failed: {error}"),
        }
    }
}

fn consumed_at_least((_, _, headers, body): &Summary) -> usize {
    body.len()
        + headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>()
}

fuzz_target!(|data: &[u8]| {
    let whole = read(CAP, [data]);
    let bytewise = read(CAP, data.chunks(1));
    assert_eq!(whole, bytewise, "whole and byte-by-byte differ");
    let at = (common::fnv1a(data) % (data.len() as u64 + 1)) as usize;
    let (a, b) = data.split_at(at);
    assert_eq!(whole, read(CAP, [a, b]), "whole and split at {at} differ");

    if let Ok(response) = &whole {
        assert!(
            consumed_at_least(response) <= CAP,
            "accepted more than the cap"
        );
    }
    if let Ok(small) = read(SMALL_CAP, [data]) {
        assert!(
            consumed_at_least(&small) <= SMALL_CAP,
            "accepted more than the small cap"
        );
        assert_eq!(
            whole.as_ref(),
            Ok(&small),
            "a smaller cap changed the response"
        );
    }

    // The engine's side: read once more, since the outcome above is only a summary.
    let mut reader = ResponseReader::new(CAP);
    let response = match reader.read(data) {
        Ok(Some(response)) => {
            if reader.reusable() {
                reusable_however_split(data, &response);
            }
            response
        }
        Ok(None) => match reader.read_eof() {
            Ok(response) => {
                assert!(!reader.reusable(), "a body ended by the close ends its connection");
                response
            }
            Err(_) => return,
        },
        Err(_) => return,
    };
    let (harness, flow, conn, exchange) = BASE.with(|base| base.clone());
    let (now, wall) = (harness.now, harness.wall);
    let mut engine = harness.engine;
    engine.handle_token_response(now, wall, exchange, response);
    let mut actions: Vec<Action> = std::iter::from_fn(|| engine.poll_action()).collect();
    let persisted = matches!(actions.as_slice(), [Action::Persist { flow: f, .. }] if *f == flow);
    if persisted {
        engine.handle_persisted(now, flow, Ok(()));
        actions = std::iter::from_fn(|| engine.poll_action()).collect();
    }
    // Now the browser gets its page and the flow ends, successfully only if it persisted.
    assert_eq!(actions.len(), 2, "persisted: {persisted}, then {actions:?}");
    for action in &actions {
        match action {
            Action::Respond { conn: c, .. } => {
                assert_eq!(*c, conn);
                common::check_respond(action);
            }
            Action::Finished { flow: f, result } => {
                assert_eq!(*f, flow);
                assert_eq!(
                    result.is_ok(),
                    persisted,
                    "persisted: {persisted}, {result:?}"
                );
            }
            other => panic!("persisted: {persisted}, then {other:?}"),
        }
    }
    let finished = actions
        .iter()
        .filter(|a| matches!(a, Action::Finished { .. }))
        .count();
    assert_eq!(finished, 1, "one Finished and one Respond: {actions:?}");
    assert_eq!(engine.flows_in_progress(), 0);
    assert_eq!(engine.open_connections(), 0);
});
