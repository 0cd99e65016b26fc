//! Properties of the engine's key-set cache under any interleaving of logins (tokens signed
//! by known, rotated and made-up keys, with the wrong nonce or expired), key-set answers
//! (late ones included), error statuses, garbage, transport failures, cancellations and
//! time, 2,000 cases. The operations and the rules are `latchkey_tests::keys_model`, shared
//! with the `key_cache_ops` fuzz target.

use latchkey::oidc::{MAX_AGE, REFETCH_INTERVAL};
use latchkey::{Action, FlowError, IdTokenError, KeySetError};
use latchkey_tests::harness::{check_2000, ops_hold};
use latchkey_tests::keys_model::{Claims, FETCH_TIMEOUT, KeysOp, KeysReply, KeysSim, Kid};
use quickcheck::{Gen, QuickCheck, TestResult};

/// Applies every op, then settles; the first broken rule fails the case.
fn run(ops: &[KeysOp]) -> TestResult {
    ops_hold::<KeysSim>(ops)
}

/// One fetch at a time; none within a minute of a failed one; while the keys are fresh, a
/// fetch only for an unknown `kid` and at most once a minute; only tokens signed by a key
/// of the last key set, with their own nonce and unexpired, are stored, with their
/// identity; every refusal is the one the token earns; a login that needs keys fetches,
/// waits or is decided as the rules say, and never waits for nothing; every login finishes
/// once; late answers change nothing; no deadline in the past; no panic.
#[test]
fn the_key_cache_rules_hold_under_any_interleaving() {
    fn property(ops: Vec<KeysOp>) -> TestResult {
        run(&ops)
    }
    check_2000(property as fn(Vec<KeysOp>) -> TestResult);
}

/// The same with long sequences: the cache's timings across many fetches.
#[test]
fn the_key_cache_rules_hold_over_long_runs() {
    fn property(chunks: Vec<Vec<KeysOp>>) -> TestResult {
        let ops: Vec<KeysOp> = chunks.into_iter().flatten().collect();
        run(&ops)
    }
    QuickCheck::new()
        .tests(100)
        .rng(Gen::new(50))
        .quickcheck(property as fn(Vec<Vec<KeysOp>>) -> TestResult);
}

// ===== hand-written sequences =====

fn login(key: Kid) -> KeysOp {
    KeysOp::Login {
        key,
        claims: Claims::Valid,
    }
}

fn answer(reply: KeysReply) -> KeysOp {
    KeysOp::Answer {
        newest: true,
        reply,
    }
}

fn advance(seconds: u64) -> KeysOp {
    KeysOp::Advance {
        seconds: u16::try_from(seconds).expect("at most 15 minutes"),
    }
}

/// What one op's actions amount to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    fetches: usize,
    stored: usize,
    refused: Vec<FlowError>,
}

fn tally(actions: &[Action]) -> Tally {
    let mut tally = Tally::default();
    for action in actions {
        match action {
            Action::FetchKeys { .. } => tally.fetches += 1,
            Action::Finished { result: Ok(_), .. } => tally.stored += 1,
            Action::Finished {
                result: Err(error), ..
            } => tally.refused.push(error.clone()),
            _ => {}
        }
    }
    tally
}

/// Runs `steps`, checking each op's tally, then settles.
fn script(steps: &[(KeysOp, Tally)]) {
    let mut sim = KeysSim::new();
    for (i, (op, expected)) in steps.iter().enumerate() {
        let actions = sim
            .apply(op)
            .unwrap_or_else(|violation| panic!("step {i} ({op:?}): {violation}"));
        assert_eq!(&tally(&actions), expected, "step {i} ({op:?})");
    }
    sim.settle().expect("settles");
}

fn fetches(fetches: usize) -> Tally {
    Tally {
        fetches,
        ..Tally::default()
    }
}

fn stored(stored: usize) -> Tally {
    Tally {
        stored,
        ..Tally::default()
    }
}

fn refused(error: IdTokenError) -> Tally {
    Tally {
        refused: vec![FlowError::IdToken(error)],
        ..Tally::default()
    }
}

/// Two logins wait for one fetch, and a third one joins with a rotated-in key: one
/// answer decides all three, without another fetch.
#[test]
fn logins_waiting_for_keys_share_one_fetch() {
    script(&[
        (login(Kid::K1), fetches(1)),
        (login(Kid::K1), Tally::default()),
        (login(Kid::K2), Tally::default()),
        (answer(KeysReply::K1K2), stored(3)),
        // Warm: judged at once.
        (login(Kid::K2), stored(1)),
    ]);
}

/// A made-up key is fetched for at once (the provider may have rotated), but such
/// refetches start at most once a minute; the known keys keep working meanwhile.
#[test]
fn an_unknown_kid_is_refetched_at_most_once_a_minute() {
    script(&[
        (login(Kid::K1), fetches(1)),
        (answer(KeysReply::K1), stored(1)),
        (login(Kid::K9), fetches(1)),
        (answer(KeysReply::K1), refused(IdTokenError::UnknownKey)),
        (advance(REFETCH_INTERVAL.as_secs() - 1), Tally::default()),
        (login(Kid::K9), refused(IdTokenError::UnknownKey)),
        (login(Kid::K1), stored(1)),
        (advance(1), Tally::default()),
        (login(Kid::K2), fetches(1)),
        (answer(KeysReply::K1K2), stored(1)),
    ]);
}

/// A failed refetch of stale keys serves them; within the minute after the failure no
/// fetch starts and the stale keys keep serving; then keys are fetched again.
#[test]
fn stale_keys_serve_while_the_key_endpoint_is_down() {
    script(&[
        (login(Kid::K1), fetches(1)),
        (answer(KeysReply::K1), stored(1)),
        (advance(MAX_AGE.as_secs()), Tally::default()),
        (login(Kid::K1), fetches(1)),
        (answer(KeysReply::Status(103)), stored(1)), // 503
        (advance(REFETCH_INTERVAL.as_secs() - 1), Tally::default()),
        (login(Kid::K1), stored(1)),
        (login(Kid::K2), refused(IdTokenError::UnknownKey)),
        (advance(1), Tally::default()),
        (login(Kid::K1), fetches(1)),
        (answer(KeysReply::K2), refused(IdTokenError::UnknownKey)),
    ]);
}

/// With no keys known, a fetch past its deadline fails the waiting logins with the
/// timeout, a late answer changes nothing, and for a minute after the deadline no fetch
/// starts.
#[test]
fn a_fetch_past_its_deadline_fails_the_logins_and_backs_off() {
    let timed_out = Tally {
        refused: vec![
            FlowError::IdToken(IdTokenError::KeySet(KeySetError::TimedOut)),
            FlowError::IdToken(IdTokenError::KeySet(KeySetError::TimedOut)),
        ],
        ..Tally::default()
    };
    script(&[
        (login(Kid::K1), fetches(1)),
        (advance(FETCH_TIMEOUT.as_secs() - 1), Tally::default()),
        (login(Kid::K2), Tally::default()),
        (advance(1), timed_out),
        (answer(KeysReply::K1), Tally::default()),
        (
            login(Kid::K1),
            refused(IdTokenError::KeySet(KeySetError::TimedOut)),
        ),
        (advance(REFETCH_INTERVAL.as_secs()), Tally::default()),
        (login(Kid::K1), fetches(1)),
        (
            KeysOp::Answer {
                newest: true,
                reply: KeysReply::Garbage(b"!".to_vec()),
            },
            refused(IdTokenError::KeySet(KeySetError::NotJson)),
        ),
    ]);
}

/// Tokens with another login's nonce, or expired, are refused once the keys are there;
/// a cancelled login ends at once and the fetch it started still serves the others.
#[test]
fn bad_claims_are_refused_and_cancelled_logins_end() {
    script(&[
        (
            KeysOp::Login {
                key: Kid::K1,
                claims: Claims::WrongNonce,
            },
            fetches(1),
        ),
        (
            KeysOp::Login {
                key: Kid::K1,
                claims: Claims::Expired,
            },
            Tally::default(),
        ),
        (login(Kid::K1), Tally::default()),
        (
            KeysOp::Cancel { login: 2 },
            Tally {
                refused: vec![FlowError::Cancelled],
                ..Tally::default()
            },
        ),
        (
            answer(KeysReply::K1),
            Tally {
                refused: vec![
                    FlowError::IdToken(IdTokenError::Nonce),
                    FlowError::IdToken(IdTokenError::Expired),
                ],
                ..Tally::default()
            },
        ),
    ]);
}

/// The checks bite: a second fetch while one is outstanding, a fetch within a minute of a
/// failed one, and one for a key the fresh set has are all reported by the model, not
/// taken. (The engine never does these; the model is shown them by hand.)
#[test]
fn the_model_refuses_what_the_rules_forbid() {
    let mut sim = KeysSim::new();
    let actions = sim.apply(&login(Kid::K1)).expect("the rules hold");
    let fetch = actions
        .iter()
        .find(|action| matches!(action, Action::FetchKeys { .. }))
        .expect("a fetch")
        .clone();
    let violation = sim.judge(&fetch, None).expect_err("a second fetch");
    assert!(violation.contains("outstanding"), "{violation}");

    // Fail it: no fetch for a minute.
    sim.apply(&answer(KeysReply::Transport))
        .expect("the rules hold");
    let violation = sim
        .judge(&fetch, None)
        .expect_err("a fetch after a failure");
    assert!(violation.contains("after a failed fetch"), "{violation}");

    // Fresh keys holding k1: no fetch for a k1 token.
    sim.apply(&advance(REFETCH_INTERVAL.as_secs()))
        .expect("the rules hold");
    sim.apply(&login(Kid::K1)).expect("the rules hold");
    sim.apply(&answer(KeysReply::K1)).expect("the rules hold");
    sim.apply(&login(Kid::K1)).expect("the rules hold");
    let violation = sim
        .judge(&fetch, Some(Kid::K1))
        .expect_err("a fetch for a known key");
    assert!(violation.contains("has it"), "{violation}");

    // A made-up key: one refetch, then none for a minute.
    sim.apply(&login(Kid::K9)).expect("the rules hold");
    sim.apply(&answer(KeysReply::K1)).expect("the rules hold");
    let violation = sim
        .judge(&fetch, Some(Kid::K9))
        .expect_err("a second refetch within the minute");
    assert!(
        violation.contains("after the last such refetch"),
        "{violation}"
    );
    sim.settle().expect("settles");
}
