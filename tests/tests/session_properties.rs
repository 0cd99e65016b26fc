//! Properties of the token lifecycle machine ([`latchkey::Session`]) under any interleaving
//! of callers, provider answers, transport failures, store results and clock jumps (the
//! wall clock too, backwards included), 2,000 cases each. The operations and the rules are
//! `latchkey_tests::session_model`, shared with the `session_ops` fuzz target.

use latchkey_tests::harness::{check_2000, ops_hold};
use latchkey_tests::session_model::{SessionOp, SessionSim};
use quickcheck::{Gen, QuickCheck, TestResult};

/// Applies every op, then settles; the first broken rule fails the case.
fn run(ops: &[SessionOp]) -> TestResult {
    ops_hold::<SessionSim>(ops)
}

/// Never more than one refresh request in flight; the live (rotated) refresh token is
/// never lost and never replaced by a retired one; no caller receives tokens that were not
/// stored; a logout that succeeds has deleted, and every logout asked for deletes; one
/// store operation at a time; every call answered exactly once; no deadline in the past;
/// no panic.
#[test]
fn the_rules_of_a_tokens_life_hold_under_any_interleaving() {
    fn property(ops: Vec<SessionOp>) -> TestResult {
        run(&ops)
    }
    check_2000(property as fn(Vec<SessionOp>) -> TestResult);
}

/// The same with long sequences: many callers joining and leaving one refresh.
#[test]
fn the_rules_hold_over_long_lives() {
    fn property(chunks: Vec<Vec<SessionOp>>) -> TestResult {
        let ops: Vec<SessionOp> = chunks.into_iter().flatten().collect();
        run(&ops)
    }
    QuickCheck::new()
        .tests(200)
        .rng(Gen::new(100))
        .quickcheck(property as fn(Vec<Vec<SessionOp>>) -> TestResult);
}

/// A caller who asks while tokens are being refreshed gets the refreshed tokens, however
/// short they live: one refresh for everyone who waited, and no second one.
#[test]
fn callers_who_waited_for_a_refresh_are_served_by_it() {
    use latchkey_tests::session_model::{Lifetime, SessionReply};
    let mut sim = SessionSim::new();
    let mut sent = 0;
    let mut answered = 0;
    let ops = [
        SessionOp::Tokens,
        SessionOp::Store { ok: true }, // load: expires in 30 s, inside the margin
        SessionOp::Tokens,
        SessionOp::Tokens,
        SessionOp::Answer {
            request: 0,
            reply: SessionReply::Rotated(Lifetime::Short),
        },
        SessionOp::Tokens,
        SessionOp::Store { ok: true }, // save
    ];
    for op in &ops {
        for action in sim.apply(op).expect("the rules hold") {
            match action {
                latchkey::SessionAction::Send { .. } => sent += 1,
                latchkey::SessionAction::Tokens { result, .. } => {
                    assert!(result.is_ok(), "{result:?}");
                    answered += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!((sent, answered), (1, 4));
    sim.settle().expect("settles");
}
