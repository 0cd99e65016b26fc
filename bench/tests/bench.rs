//! The benchmark harness measures what it claims: the published inputs, every operation
//! doing its real work, and every end-to-end contender completing real flows.

use std::path::Path;

use latchkey_bench::device::{self, DevicePlan};
use latchkey_bench::e2e::{self, Plan};
use latchkey_bench::fixtures::{Bench, CALLBACK_REQUEST, Operation, TOKEN_RESPONSE, Timer};
use latchkey_bench::servers::Target;
use latchkey_bench::{shared, waiters};

#[test]
fn the_inputs_are_the_published_bytes() {
    assert_eq!(CALLBACK_REQUEST.len(), 832);
    assert_eq!(TOKEN_RESPONSE.len(), 1491);
    // Where the team's copy is at hand, the repository's must be identical.
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench-inputs");
    if shared.is_dir() {
        let read = |name: &str| std::fs::read(shared.join(name)).expect("readable input");
        assert_eq!(read("callback_request.http"), CALLBACK_REQUEST);
        assert_eq!(read("token_response.json"), TOKEN_RESPONSE);
    }
}

/// Each operation checks its own result (a token request, tokens, a 303 to the landing…)
/// and panics otherwise; running them all proves they do their work.
#[test]
fn every_in_process_operation_does_its_work() {
    let mut bench = Bench::new();
    for operation in Operation::ALL {
        let mut timer = Timer::default();
        operation.measure(&mut bench, 5, &mut timer);
        assert!(
            !timer.elapsed.is_zero(),
            "{} measured nothing",
            operation.name()
        );
    }
}

#[test]
fn every_end_to_end_target_completes_real_flows() {
    let plan = Plan {
        rounds: 1,
        sequential: 3,
        concurrent: 4,
    };
    let program = Path::new(env!("CARGO_BIN_EXE_latchkey-bench"));
    let run = e2e::run(plan, program, &mut |_| {}).expect("the run completes");
    assert_eq!(run.targets.len(), Target::ALL.len());
    for result in &run.targets {
        let name = result.target.name();
        assert_eq!(result.sequential.flows, 3, "{name}");
        assert_eq!(result.concurrent.flows, 4, "{name}");
        assert_eq!(
            result.sequential.failures + result.concurrent.failures,
            0,
            "{name}"
        );
        assert!(
            result.sequential.cpu_nanos > 0,
            "{name}: no CPU time measured"
        );
    }
    // One code exchange per flow, whoever served it.
    assert_eq!(run.token_requests, 7 * Target::ALL.len() as u64);
}

#[test]
fn a_browser_request_carries_the_state_and_port() {
    let request = e2e::browser_request(4242, "s-t-a-t-e");
    let text = String::from_utf8(request).expect("ASCII");
    assert!(text.starts_with(
        "GET /callback?code=UNEqO-U-qIVYysgkmugXrOxuWkscXyHjL8f1jqQ300a&state=s-t-a-t-e&iss="
    ));
    assert!(text.contains("\r\nHost: 127.0.0.1:4242\r\n"));
    assert!(text.ends_with("\r\n\r\n"));
}

/// Both sides of the device measurement complete every login with exactly the planned
/// polls (the measurement fails otherwise), in process and over loopback.
#[test]
fn the_device_measurement_polls_as_planned_on_both_sides() {
    let plan = DevicePlan {
        rounds: 2,
        logins: 5,
        rounds_end_to_end: 1,
        logins_end_to_end: 2,
    };
    let result = device::measure(plan, &mut |_| {}).expect("every device login completes");
    for (name, figures, rounds) in [
        ("engine", &result.engine, 2),
        ("oauth2-rs", &result.oauth2, 2),
        ("service", &result.service, 1),
        ("oauth2-rs + reqwest", &result.oauth2_reqwest, 1),
        ("oauth2-rs + reqwest, sleeping", &result.oauth2_sleeping, 1),
    ] {
        assert_eq!(figures.len(), rounds, "{name}");
        assert!(
            figures.iter().all(|&nanos| nanos > 0.0),
            "{name}: no CPU time measured"
        );
    }
}

/// A thousand callers of an expired token set cause one refresh request, through latchkey
/// and through the mutex it is compared with.
#[test]
fn a_thousand_waiters_cause_one_refresh_on_both_sides() {
    let result = waiters::measure(1, &mut |_| {}).expect("every caller gets tokens");
    assert_eq!(result.callers, 1_000);
    for side in [&result.latchkey, &result.oauth2] {
        assert_eq!(side.refreshes, [1]);
        assert_eq!(side.cpu.len(), 1);
    }
}

/// The refreshes through Redis and in memory are measured beside the logins.
#[test]
fn refreshes_through_redis_are_measured_beside_the_logins() {
    let result = shared::measure(1, 3, 10).expect("the shared measurement completes");
    let refresh = &result.refresh;
    for (name, figures) in [
        ("memory CPU", &refresh.memory_cpu),
        ("Redis CPU", &refresh.redis_cpu),
        ("memory latency", &refresh.memory_latency),
        ("Redis latency", &refresh.redis_latency),
    ] {
        assert_eq!(figures.len(), 1, "{name}");
        assert!(figures[0] > 0.0, "{name}: nothing measured");
    }
    assert!(result.redis_bytes_per_pending > 0.0);
}

/// Every signing job is measured for every contender, each JWS checked first.
#[test]
fn proofs_and_assertions_are_measured_for_every_contender() {
    let results = latchkey_bench::signing::run(1, 5, &mut |_| {}).expect("every JWS verifies");
    assert_eq!(results.len(), 4);
    for result in &results {
        assert_eq!(
            result.nanos.len(),
            latchkey_bench::signing::CONTENDERS.len()
        );
        for figures in &result.nanos {
            assert_eq!(figures.len(), 1, "{}", result.what);
            assert!(figures[0] > 0.0, "{}: nothing measured", result.what);
        }
    }
}
