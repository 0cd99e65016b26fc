//! Any sequence of callers, provider answers, store results and clock jumps keeps every rule
//! of a token's life.
//!
//! The model (`latchkey_tests::session_model`) is the one the quickcheck properties use:
//! `SessionSim::apply` performs a `SessionOp`, drains the session and returns `Err` on the
//! first broken rule; `settle` answers everything left and checks that every call was
//! answered and every logout deleted.
#![no_main]
#![forbid(unsafe_code)]

use arbitrary::{Arbitrary, Unstructured};
use latchkey_tests::session_model::{SessionOp, SessionSim};
use libfuzzer_sys::fuzz_target;

/// Longest operation sequence decoded from one input.
const MAX_OPS: usize = 128;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS && !u.is_empty() {
        match SessionOp::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }

    let mut sim = SessionSim::new();
    for (i, op) in ops.iter().enumerate() {
        if let Err(violation) = sim.apply(op) {
            panic!("rule broken at op {i} ({op:?}): {violation}\nops: {ops:#?}");
        }
    }
    if let Err(violation) = sim.settle() {
        panic!("rule broken while settling: {violation}\nops: {ops:#?}");
    }
});
