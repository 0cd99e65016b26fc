//! Any sequence of logins, key-set answers, failures, cancellations and time keeps every
//! rule of the engine's key-set cache.
//!
//! The model (`latchkey_tests::keys_model`) is the one the quickcheck properties use:
//! `KeysSim::apply` performs a `KeysOp`, drains the engine (storing every `Persist` at once)
//! and returns `Err` on the first broken rule; `settle` lets two hours pass and checks that
//! every login finished.
#![no_main]
#![forbid(unsafe_code)]

use arbitrary::{Arbitrary, Unstructured};
use latchkey_tests::keys_model::{KeysOp, KeysSim};
use libfuzzer_sys::fuzz_target;

/// Longest operation sequence decoded from one input.
const MAX_OPS: usize = 128;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS && !u.is_empty() {
        match KeysOp::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }

    let mut sim = KeysSim::new();
    for (i, op) in ops.iter().enumerate() {
        if let Err(violation) = sim.apply(op) {
            panic!("rule broken at op {i} ({op:?}): {violation}\nops: {ops:#?}");
        }
    }
    if let Err(violation) = sim.settle() {
        panic!("rule broken while settling: {violation}\nops: {ops:#?}");
    }
});
