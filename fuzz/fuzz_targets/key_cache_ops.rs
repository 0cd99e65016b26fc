//! Any sequence of logins, key-set answers, failures, cancellations and time keeps every
//! rule of the engine's key-set cache.
//!
//! The model (`latchkey_tests::keys_model`) is the one the quickcheck properties use:
//! `KeysSim::apply` performs a `KeysOp`, drains the engine (storing every `Persist` at once)
//! and returns `Err` on the first broken rule; `settle` lets two hours pass and checks that
//! every login finished.
#![no_main]
#![forbid(unsafe_code)]

use latchkey_tests::harness::{decode_ops, run_ops};
use latchkey_tests::keys_model::{KeysOp, KeysSim};
use libfuzzer_sys::fuzz_target;

/// Longest operation sequence decoded from one input.
const MAX_OPS: usize = 128;

fuzz_target!(|data: &[u8]| {
    let ops: Vec<KeysOp> = decode_ops(data, MAX_OPS);
    if let Err(violation) = run_ops::<KeysSim>(&ops) {
        panic!("rule broken: {violation}\nops: {ops:#?}");
    }
});
