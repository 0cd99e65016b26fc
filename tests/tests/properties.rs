//! Properties of the engine under arbitrary sequences of driver operations, 1,000+ cases
//! each. The operations and the invariant checker are `latchkey_tests::model`, shared with
//! the fuzz targets.

use std::time::Duration;

use latchkey::{Action, FlowError};
use latchkey_tests::harness::chromium_get;
use latchkey_tests::model::{CallbackKind, Op, Sim, fingerprint};
use quickcheck::{Gen, QuickCheck, TestResult, Testable};

const CASES: u64 = 1_000;

fn check<P: Testable>(property: P) {
    QuickCheck::new()
        .tests(CASES)
        .max_tests(CASES * 20)
        .min_tests_passed(CASES)
        .rng(Gen::new(60))
        .quickcheck(property);
}

/// Applies every op; the first violated invariant fails the case.
fn run(ops: &[Op]) -> Result<Sim, TestResult> {
    let mut sim = Sim::new();
    for op in ops {
        if let Err(violation) = sim.apply(op) {
            return Err(TestResult::error(format!("{violation} after {op:?}")));
        }
    }
    Ok(sim)
}

/// Each flow finishes exactly once and nothing but connection answers name it afterwards; at
/// most one token request per flow, only after its state was delivered; the token request's
/// `redirect_uri` equals the authorization URL's; every connection is answered at most once;
/// `poll_timeout` never lies in the past after a drain; nothing panics. Then, with the clock
/// run out, every flow has finished.
#[test]
fn invariants_hold_for_any_sequence_of_driver_operations() {
    fn property(ops: Vec<Op>) -> TestResult {
        let mut sim = match run(&ops) {
            Ok(sim) => sim,
            Err(failure) => return failure,
        };
        if let Err(violation) = sim.run_out_the_clock() {
            return TestResult::error(violation);
        }
        match sim.unfinished().as_slice() {
            [] => TestResult::passed(),
            left => TestResult::error(format!("flows never finished: {left:?}")),
        }
    }
    check(property as fn(Vec<Op>) -> TestResult);
}

/// The browser's bytes split at any points give the same actions as the bytes in one piece.
#[test]
fn any_split_of_the_browsers_bytes_gives_the_same_actions_as_the_whole() {
    fn property(
        ops: Vec<Op>,
        kind: CallbackKind,
        raw: Option<Vec<u8>>,
        cuts: Vec<u16>,
    ) -> TestResult {
        let Ok(mut sim) = run(&ops) else {
            return TestResult::discard();
        };
        let Some(conn) = sim.engine.handle_accept(sim.now) else {
            return TestResult::discard();
        };
        // A well-formed request for some flow (or a forged one), or arbitrary bytes.
        let bytes =
            raw.unwrap_or_else(|| chromium_get(&format!("/callback?{}", sim.query_for(&kind))));
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|c| usize::from(*c) % (bytes.len() + 1))
            .collect();
        points.sort_unstable();

        let (mut whole, mut split) = (sim.engine.clone(), sim.engine);
        whole.handle_bytes(sim.now, conn, &bytes);
        let mut start = 0;
        for point in points.into_iter().chain([bytes.len()]) {
            split.handle_bytes(sim.now, conn, &bytes[start..point]);
            start = point;
        }
        let drain = |engine: &mut latchkey::Engine| -> Vec<String> {
            std::iter::from_fn(|| engine.poll_action())
                .map(|a| fingerprint(&a))
                .collect()
        };
        let (a, b) = (drain(&mut whole), drain(&mut split));
        if a == b {
            TestResult::passed()
        } else {
            TestResult::error(format!("whole {a:?}\nsplit {b:?}"))
        }
    }
    check(property as fn(Vec<Op>, CallbackKind, Option<Vec<u8>>, Vec<u16>) -> TestResult);
}

/// A callback whose state belongs to no pending flow gets an HTTP refusal and nothing else:
/// no token request, no flow finished, and every waiting flow still completes afterwards.
#[test]
fn a_callback_with_a_state_no_pending_flow_has_changes_nothing() {
    fn property(ops: Vec<Op>, forged: String, via_ui: bool) -> TestResult {
        let Ok(mut sim) = run(&ops) else {
            return TestResult::discard();
        };
        if sim
            .flows()
            .iter()
            .any(|flow| sim.state_of(*flow) == Some(forged.as_str()))
        {
            return TestResult::discard();
        }
        let query = format!(
            "code=c&state={}&iss=https%3A%2F%2Fidp.example",
            encode(&forged)
        );
        let flows_before = sim.engine.flows_in_progress();
        let actions: Vec<Action> = if via_ui {
            if sim.engine.handle_redirect(sim.now, &query).is_ok() {
                return TestResult::error("forged state accepted");
            }
            std::iter::from_fn(|| sim.engine.poll_action()).collect()
        } else {
            let Some(conn) = sim.engine.handle_accept(sim.now) else {
                return TestResult::discard();
            };
            sim.engine
                .handle_bytes(sim.now, conn, &chromium_get(&format!("/callback?{query}")));
            let actions: Vec<Action> = std::iter::from_fn(|| sim.engine.poll_action()).collect();
            if !matches!(actions.as_slice(), [Action::Respond { conn: c, status, .. }] if *c == conn && status.is_client_error())
            {
                return TestResult::error(format!("forged callback produced {actions:?}"));
            }
            actions
        };
        if via_ui && !actions.is_empty() {
            return TestResult::error(format!("forged redirect produced {actions:?}"));
        }
        if sim.engine.flows_in_progress() != flows_before {
            return TestResult::error("a flow changed");
        }
        for flow in sim.waiting() {
            let Some(index) = sim.flows().iter().position(|f| *f == flow) else {
                continue;
            };
            let Ok(index) = u8::try_from(index) else {
                continue;
            };
            let mut fork = sim.clone();
            match fork.apply(&Op::Redirect {
                kind: CallbackKind::Code(index),
            }) {
                Ok(actions)
                    if actions.iter().any(
                        |a| matches!(a, Action::SendTokenRequest { flow: f, .. } if *f == flow),
                    ) => {}
                other => {
                    return TestResult::error(format!(
                        "flow {flow} no longer completes: {other:?}"
                    ));
                }
            }
        }
        TestResult::passed()
    }
    check(property as fn(Vec<Op>, String, bool) -> TestResult);
}

/// Advancing past the flow lifetime finishes every flow still waiting for its callback with
/// `TimedOut`, and every other unfinished flow with a timeout too.
#[test]
fn advancing_past_the_lifetime_always_finishes_with_timed_out() {
    fn property(ops: Vec<Op>) -> TestResult {
        let Ok(mut sim) = run(&ops) else {
            return TestResult::discard();
        };
        let waiting = sim.waiting();
        let unfinished = sim.unfinished();
        let lifetime = Duration::from_secs(600);
        let millis = u32::try_from(lifetime.as_millis() + 1).unwrap_or(u32::MAX);
        if let Err(violation) = sim.apply(&Op::Advance { millis }) {
            return TestResult::error(violation);
        }
        for flow in unfinished {
            match sim.outcome(flow) {
                Some(Err(FlowError::TimedOut(step))) => {
                    if waiting.contains(&flow) && *step != latchkey::Step::Callback {
                        return TestResult::error(format!("{flow} timed out at {step:?}"));
                    }
                }
                other => return TestResult::error(format!("{flow} ended with {other:?}")),
            }
        }
        TestResult::passed()
    }
    check(property as fn(Vec<Op>) -> TestResult);
}

fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
