//! Any sequence of callers, provider answers, store results and clock jumps keeps every rule
//! of a token's life.
//!
//! The model (`latchkey_tests::session_model`) is the one the quickcheck properties use:
//! `SessionSim::apply` performs a `SessionOp`, drains the session and returns `Err` on the
//! first broken rule; `settle` answers everything left and checks that every call was
//! answered and every logout deleted.
#![no_main]
#![forbid(unsafe_code)]

use latchkey_tests::harness::{decode_ops, run_ops};
use latchkey_tests::session_model::{SessionOp, SessionSim};
use libfuzzer_sys::fuzz_target;

/// Longest operation sequence decoded from one input.
const MAX_OPS: usize = 128;

fuzz_target!(|data: &[u8]| {
    let ops: Vec<SessionOp> = decode_ops(data, MAX_OPS);
    if let Err(violation) = run_ops::<SessionSim>(&ops) {
        panic!("rule broken: {violation}\nops: {ops:#?}");
    }
});
