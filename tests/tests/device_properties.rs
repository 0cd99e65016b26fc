//! Properties of the device authorization grant (RFC 8628) under any interleaving of device
//! logins, device authorization answers of every shape, poll answers (pending, `slow_down`
//! with and without an interval, 5xx and 429 with and without `Retry-After`, transport
//! failures, denials, expiry, tokens, garbage), late answers, cancellations, owners
//! starting again and time, punctual or waking late: 2,000 cases. The operations and the
//! rules (S51) are `latchkey_tests::device_model`, shared with the `device_ops` fuzz target.

use std::time::Duration;

use latchkey::device::{MAX_BACKOFF, SLOW_DOWN_STEP};
use latchkey::{Action, DeviceError, FlowError};
use latchkey_tests::device_model::{
    Busy, CodeReply, CodeShape, DeviceOp, DeviceReply, DeviceSim, EXCHANGE_TIMEOUT, Interval,
    Lifetime, RetryAfter,
};
use latchkey_tests::harness::{check_2000, ops_hold};
use quickcheck::{Gen, QuickCheck, TestResult};

/// Applies every op, then settles; the first broken rule fails the case.
fn run(ops: &[DeviceOp]) -> TestResult {
    ops_hold::<DeviceSim>(ops)
}

/// No poll before the first interval; every poll at least the current interval after the
/// previous answer, the interval growing by 5 s at each `slow_down` and backing off after
/// failures as `Retry-After` and the doubling rule say; never slower than that either;
/// one poll in flight per login; no poll at or after expiry, which ends the login; every
/// end the one its answer earns; what the user is shown is what the provider sent; tokens
/// stored before `Ok`; each login finishes once and nothing names it afterwards; late
/// answers change nothing; waking late gives the same actions as waking on time; no
/// deadline in the past; no panic.
#[test]
fn s51_the_polling_rules_hold_under_any_interleaving() {
    fn property(ops: Vec<DeviceOp>) -> TestResult {
        run(&ops)
    }
    check_2000(property as fn(Vec<DeviceOp>) -> TestResult);
}

/// The same with long sequences: many polls, slow-downs and back-offs in one login's life.
#[test]
fn s51_the_polling_rules_hold_over_long_runs() {
    fn property(chunks: Vec<Vec<DeviceOp>>) -> TestResult {
        let ops: Vec<DeviceOp> = chunks.into_iter().flatten().collect();
        run(&ops)
    }
    QuickCheck::new()
        .tests(100)
        .rng(Gen::new(50))
        .quickcheck(property as fn(Vec<Vec<DeviceOp>>) -> TestResult);
}

// ===== hand-written sequences: the model's rules bite =====

fn code(interval: Interval, lifetime: Lifetime) -> DeviceOp {
    DeviceOp::Authorize {
        target: 0,
        reply: CodeReply {
            interval,
            lifetime,
            shape: CodeShape::Standard { complete: true },
        },
    }
}

fn reply(reply: DeviceReply) -> DeviceOp {
    DeviceOp::Answer {
        target: 0,
        late: false,
        reply,
    }
}

fn advance(millis: u32) -> DeviceOp {
    DeviceOp::Advance {
        millis: millis - 1,
        sleep: false,
    }
}

/// The polls and the ends among `actions`.
fn polls(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|action| matches!(action, Action::SendTokenRequest { .. }))
        .count()
}

fn ends(actions: &[Action]) -> Vec<Result<(), FlowError>> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Finished { result, .. } => {
                Some(result.as_ref().map(drop).map_err(Clone::clone))
            }
            _ => None,
        })
        .collect()
}

/// Runs `steps`, checking how many polls each op made, then settles.
fn script(steps: &[(DeviceOp, usize)]) -> DeviceSim {
    let mut sim = DeviceSim::new();
    for (i, (op, expected)) in steps.iter().enumerate() {
        let actions = sim
            .apply(op)
            .unwrap_or_else(|violation| panic!("step {i} ({op:?}): {violation}"));
        assert_eq!(polls(&actions), *expected, "step {i} ({op:?}): {actions:?}");
    }
    sim
}

#[test]
fn s51_slow_downs_accumulate_in_the_model() {
    let pending = || reply(DeviceReply::Pending { form: false });
    let slow = || {
        reply(DeviceReply::SlowDown {
            interval: None,
            form: false,
        })
    };
    let mut sim = script(&[
        (DeviceOp::Start { owner: 0 }, 0),
        (code(Interval::Seconds(5), Lifetime::Seconds(900)), 0),
        (advance(4_999), 0),
        (advance(1), 1),
        (slow(), 0),
        (advance(9_999), 0),
        (advance(1), 1),
        (slow(), 0),
        (advance(14_999), 0),
        (advance(1), 1),
        (pending(), 0),
        // The interval stays 15 s after a pending answer.
        (advance(14_999), 0),
        (advance(1), 1),
    ]);
    sim.settle().expect("settles");
    assert_eq!(SLOW_DOWN_STEP, Duration::from_secs(5));
}

#[test]
fn s51_back_off_doubles_to_a_minute_and_honours_retry_after_in_the_model() {
    let busy = |retry_after| {
        reply(DeviceReply::Unavailable {
            status: Busy::Unavailable,
            retry_after,
            oauth: false,
        })
    };
    let mut sim = script(&[
        (DeviceOp::Start { owner: 0 }, 0),
        (code(Interval::Seconds(5), Lifetime::Absent), 0),
        (advance(5_000), 1),
        (busy(RetryAfter::Absent), 0),
        (advance(9_999), 0),
        (advance(1), 1), // 10 s
        (busy(RetryAfter::Absent), 0),
        (advance(19_999), 0),
        (advance(1), 1), // 20 s
        (busy(RetryAfter::Absent), 0),
        (advance(40_000), 1), // 40 s
        (busy(RetryAfter::Absent), 0),
        (advance(59_999), 0),
        (advance(1), 1), // 60 s, not 80
        (busy(RetryAfter::Seconds(90)), 0),
        (advance(89_999), 0),
        (advance(1), 1), // Retry-After beats the back-off
    ]);
    sim.settle().expect("settles");
    assert_eq!(MAX_BACKOFF, Duration::from_secs(60));
}

#[test]
fn s51_an_abandoned_poll_backs_off_and_its_late_answer_changes_nothing_in_the_model() {
    let mut sim = script(&[
        (DeviceOp::Start { owner: 0 }, 0),
        (code(Interval::Seconds(5), Lifetime::Absent), 0),
        (advance(5_000), 1),
        // Not answered within the exchange timeout: abandoned at 35 s, next poll at 45 s.
        (advance(EXCHANGE_TIMEOUT.as_millis() as u32 + 9_999), 0),
        (advance(1), 1),
        (
            DeviceOp::Answer {
                target: 0,
                late: true,
                reply: DeviceReply::Tokens,
            },
            0,
        ),
        (reply(DeviceReply::Pending { form: true }), 0),
    ]);
    sim.settle().expect("settles");
}

#[test]
fn s51_the_code_expiring_ends_the_login_without_a_last_poll_in_the_model() {
    let mut sim = DeviceSim::new();
    for op in [
        DeviceOp::Start { owner: 0 },
        code(Interval::Seconds(5), Lifetime::Seconds(9)),
        advance(5_000),
        reply(DeviceReply::Pending { form: false }),
    ] {
        sim.apply(&op).expect("the rules hold");
    }
    // The next poll would be at 10 s; the code expires at 9 s.
    let actions = sim.apply(&advance(10_000)).expect("the rules hold");
    assert_eq!(polls(&actions), 0);
    assert_eq!(
        ends(&actions),
        vec![Err(FlowError::Device(DeviceError::Expired))]
    );
    sim.settle().expect("settles");
}

/// The first poll among `actions`.
fn first_poll(actions: Vec<Action>) -> Action {
    actions
        .into_iter()
        .find(|action| matches!(action, Action::SendTokenRequest { .. }))
        .expect("a poll")
}

#[test]
fn s51_the_model_refuses_polls_that_come_too_early_or_overlap() {
    let mut sim = DeviceSim::new();
    sim.apply(&DeviceOp::Start { owner: 0 }).unwrap();
    sim.apply(&code(Interval::Seconds(5), Lifetime::Seconds(900)))
        .unwrap();
    // The engine's first poll, 5 s later, from a fork.
    let mut fork = sim.clone();
    let poll = first_poll(fork.apply(&advance(5_000)).unwrap());
    let refused = |sim: &DeviceSim, action: &Action, why: &str| {
        let verdict = sim.judge(action);
        assert!(
            verdict
                .as_ref()
                .is_err_and(|violation| violation.contains(why)),
            "{why}: {verdict:?}"
        );
    };
    // Before the first interval has passed.
    refused(&sim, &poll, "too early");
    // While that poll is in flight.
    refused(&fork, &poll, "in flight");
    // 5 s after a slow_down (10 s are due): a poll that would follow a pending answer.
    let mut pending = fork.clone();
    pending
        .apply(&reply(DeviceReply::Pending { form: false }))
        .unwrap();
    let after_pending = first_poll(pending.apply(&advance(5_000)).unwrap());
    let mut slowed = fork.clone();
    slowed
        .apply(&reply(DeviceReply::SlowDown {
            interval: None,
            form: false,
        }))
        .unwrap();
    slowed.apply(&advance(5_000)).unwrap();
    refused(&slowed, &after_pending, "too early");
    // 10 s after a 503 that asked for 60 s.
    let mut busy = fork.clone();
    busy.apply(&reply(DeviceReply::Unavailable {
        status: Busy::Unavailable,
        retry_after: RetryAfter::Seconds(60),
        oauth: false,
    }))
    .unwrap();
    busy.apply(&advance(10_000)).unwrap();
    let mut failed = fork.clone();
    failed
        .apply(&reply(DeviceReply::Unavailable {
            status: Busy::Unavailable,
            retry_after: RetryAfter::Absent,
            oauth: false,
        }))
        .unwrap();
    let after_failure = first_poll(failed.apply(&advance(10_000)).unwrap());
    refused(&busy, &after_failure, "too early");
}

#[test]
fn s51_the_model_refuses_ends_the_answers_did_not_earn() {
    let mut sim = DeviceSim::new();
    sim.apply(&DeviceOp::Start { owner: 0 }).unwrap();
    sim.apply(&code(Interval::Seconds(5), Lifetime::Seconds(900)))
        .unwrap();
    let flow = sim.in_progress()[0];
    let poll = sim.apply(&advance(5_000)).unwrap();
    assert_eq!(polls(&poll), 1);
    // Tokens handed out that were never stored.
    let unstored = Action::Finished {
        flow,
        result: Ok(latchkey::TokenSet::new("at-device".to_owned().into())),
    };
    assert!(sim.judge(&unstored).is_err());
    // An end while the provider said to keep waiting.
    sim.apply(&reply(DeviceReply::Pending { form: false }))
        .unwrap();
    let expired = Action::Finished {
        flow,
        result: Err(FlowError::Device(DeviceError::Expired)),
    };
    assert!(sim.judge(&expired).is_err());
    sim.settle().expect("settles");
}
