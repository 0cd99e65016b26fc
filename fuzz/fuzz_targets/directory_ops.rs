//! Any sequence of shared logins on three replicas, callbacks landing on one replica or
//! racing on several, shares and takes answered in any order, late, stale or tampered, the
//! flow directory going down and back, token answers, store reports, cancellations,
//! "ended" marks and announcements delivered or lost, and time keeps every rule of the
//! flow directory (S54–S58).
//!
//! The model (`latchkey_tests::directory_model`) is the one the quickcheck properties use:
//! the first byte picks the deployment (web backends, loopback listeners whose callbacks
//! arrive as browser connections, or web backends whose logins are DPoP-bound), the rest
//! decodes to `DirectoryOp`s; `DirectorySim::apply`
//! returns `Err` on the first broken rule, and `settle` lets two hours pass, checks that
//! every engine is idle, and answers everything left late.
#![no_main]
#![forbid(unsafe_code)]

use latchkey_tests::directory_model::{DirectoryOp, DirectorySim, DpopSim, LoopbackSim};
use latchkey_tests::harness::{decode_ops, run_ops};
use libfuzzer_sys::fuzz_target;

/// Longest operation sequence decoded from one input.
const MAX_OPS: usize = 128;

fuzz_target!(|data: &[u8]| {
    let Some((deployment, rest)) = data.split_first() else {
        return;
    };
    let ops: Vec<DirectoryOp> = decode_ops(rest, MAX_OPS);
    let verdict = match deployment % 3 {
        0 => run_ops::<DirectorySim>(&ops),
        1 => run_ops::<LoopbackSim>(&ops),
        _ => run_ops::<DpopSim>(&ops),
    };
    if let Err(violation) = verdict {
        panic!("rule broken: {violation}\nops: {ops:#?}");
    }
});
