//! Properties of replicas sharing pending logins through a flow directory (S54–S58) under
//! any interleaving of shared and unshared logins started on any replica, callbacks (codes,
//! errors, foreign issuers, forged states, replays) landing on one replica or racing on
//! several, shares and takes answered in any order, late, stale or tampered, the directory
//! down and back, token answers, store reports, cancellations, "ended" marks and
//! announcements delivered or lost, and time, punctual or waking late: 2,000 cases per
//! deployment, and for DPoP-bound logins (S61). The operations and the rules are `latchkey_tests::directory_model`, shared
//! with the `directory_ops` fuzz target.

use latchkey::Action;
use latchkey_tests::directory_model::{
    CallbackKind, DirectoryOp, DirectorySim, DpopSim, LoopbackSim, Tamper, TokenReply, Via,
};
use latchkey_tests::harness::{check_2000, ops_hold};
use quickcheck::{Gen, QuickCheck, TestResult};

/// At most one token request per login across replicas, and only from the replica whose
/// take returned the record, with the record's verifier; never from a record past its
/// deadline; every take's answer leading where the rules say (503 and nothing taken when
/// the directory is down); callbacks taken, adopted or refused as the rules say; outcomes
/// announced by the adopting flow only and finishing the login where it started; "ended"
/// marks exactly for logins whose record was not taken; the browser opened only after the
/// directory confirmed; each flow finished once, as expected; late answers change nothing;
/// waking late gives the same actions; no deadline in the past; every engine idle after
/// two hours; no panic.
#[test]
fn s54_s58_the_directory_rules_hold_on_a_web_backend_under_any_interleaving() {
    fn property(ops: Vec<DirectoryOp>) -> TestResult {
        ops_hold::<DirectorySim>(&ops)
    }
    check_2000(property as fn(Vec<DirectoryOp>) -> TestResult);
}

/// The same with loopback listeners: callbacks arrive as browser connections too, split
/// anywhere, held while the directory is asked.
#[test]
fn s54_s58_the_directory_rules_hold_on_loopback_listeners_under_any_interleaving() {
    fn property(ops: Vec<DirectoryOp>) -> TestResult {
        ops_hold::<LoopbackSim>(&ops)
    }
    check_2000(property as fn(Vec<DirectoryOp>) -> TestResult);
}

/// The same with DPoP-bound logins on a web backend (S61 across replicas): the URL names
/// the login's key (`dpop_jkt`), the record carries the key (version 2, never in `Debug`),
/// the token request, on whichever replica takes the record, proves that key, and the
/// tokens stored keep it.
#[test]
fn s54_s58_s61_the_directory_rules_hold_for_dpop_logins_under_any_interleaving() {
    fn property(ops: Vec<DirectoryOp>) -> TestResult {
        ops_hold::<DpopSim>(&ops)
    }
    check_2000(property as fn(Vec<DirectoryOp>) -> TestResult);
}

/// The same with long sequences: many logins and races in one run.
#[test]
fn s54_s58_the_directory_rules_hold_over_long_runs() {
    fn property(chunks: Vec<Vec<DirectoryOp>>) -> TestResult {
        let ops: Vec<DirectoryOp> = chunks.into_iter().flatten().collect();
        ops_hold::<LoopbackSim>(&ops)
    }
    QuickCheck::new()
        .tests(100)
        .rng(Gen::new(50))
        .quickcheck(property as fn(Vec<Vec<DirectoryOp>>) -> TestResult);
}

// ===== hand-written sequences: the model's rules bite =====

/// A shared login started on replica 0, its callback raced to replicas 1 and 2, and the
/// directory answering replica 1 first: the simulation, replica 1's token request, and
/// replica 2's adopting flow.
fn race() -> (DirectorySim, Action, latchkey::FlowId) {
    let mut sim = DirectorySim::default();
    let ops = [
        DirectoryOp::Start {
            replica: 0,
            owner: 1,
            shared: true,
        },
        DirectoryOp::AnswerShare { target: 0 },
        DirectoryOp::Callback {
            login: 0,
            kind: CallbackKind::Code,
            // Bits of 5 % 7 + 1: replicas 1 and 2.
            to: 5,
            via: Via::Query,
        },
    ];
    let mut adopting = None;
    for op in &ops {
        for (replica, action) in sim.apply(op).expect("the rules hold") {
            if let (2, Action::TakeFlow { flow, .. }) = (replica, action) {
                adopting = Some(flow);
            }
        }
    }
    let answered = sim
        .apply(&DirectoryOp::AnswerTake {
            target: 0,
            tamper: Tamper::None,
        })
        .expect("the rules hold");
    let request = answered
        .into_iter()
        .find_map(|(replica, action)| {
            (replica == 1 && matches!(action, Action::SendTokenRequest { .. })).then_some(action)
        })
        .expect("replica 1 took the record");
    (
        sim,
        request,
        adopting.expect("replica 2 adopted the callback"),
    )
}

/// `verdict` is a broken rule naming `why`.
fn refused(verdict: Result<(), String>, why: &str) {
    assert!(
        verdict
            .as_ref()
            .is_err_and(|violation| violation.contains(why)),
        "{why}: {verdict:?}"
    );
}

#[test]
fn s54_the_model_refuses_a_second_token_request_for_one_login() {
    let (sim, request, _) = race();
    assert_eq!(sim.token_requests(&sim.opened()[0]), 1);
    refused(sim.judge(1, &request), "S54");
}

#[test]
fn s58_the_model_refuses_a_token_request_whose_take_has_not_returned_the_record() {
    let (mut sim, request, adopting) = race();
    let Action::SendTokenRequest {
        exchange, request, ..
    } = request
    else {
        unreachable!("a token request");
    };
    let elsewhere = Action::SendTokenRequest {
        flow: adopting,
        exchange,
        request,
    };
    refused(sim.judge(2, &elsewhere), "S58");
    // The directory then tells replica 2 the record was used, and the race settles.
    sim.apply(&DirectoryOp::AnswerTake {
        target: 0,
        tamper: Tamper::None,
    })
    .expect("the rules hold");
    for op in [
        DirectoryOp::AnswerToken {
            target: 0,
            reply: TokenReply::Tokens,
        },
        DirectoryOp::Persisted {
            target: 0,
            ok: true,
        },
        DirectoryOp::Deliver {
            target: 0,
            drop: false,
        },
    ] {
        sim.apply(&op).expect("the rules hold");
    }
    sim.settle().expect("settles");
}

#[test]
fn s56_a_stale_record_in_the_model_ends_the_adopting_flow_without_a_token_request() {
    let mut sim = DirectorySim::default();
    for op in [
        DirectoryOp::Start {
            replica: 0,
            owner: 0,
            shared: true,
        },
        DirectoryOp::AnswerShare { target: 0 },
        // The login's lifetime passes; its "ended" mark is lost.
        DirectoryOp::Advance {
            millis: 599_999,
            sleep: false,
        },
        DirectoryOp::Deliver {
            target: 0,
            drop: true,
        },
        DirectoryOp::Callback {
            login: 0,
            kind: CallbackKind::Code,
            // Bits of 1 % 7 + 1: replica 1.
            to: 1,
            via: Via::Uri,
        },
    ] {
        sim.apply(&op).expect("the rules hold");
    }
    // A directory that ignores its own expiry hands out the record all the same.
    let actions = sim
        .apply(&DirectoryOp::AnswerTake {
            target: 0,
            tamper: Tamper::Stale,
        })
        .expect("the rules hold");
    assert!(
        actions.iter().any(|(_, action)| matches!(
            action,
            Action::Finished {
                result: Err(latchkey::FlowError::Directory(
                    latchkey::directory::DirectoryError::Expired
                )),
                ..
            }
        )),
        "{actions:?}"
    );
    assert_eq!(sim.token_requests(&sim.opened()[0]), 0);
    sim.settle().expect("settles");
}
