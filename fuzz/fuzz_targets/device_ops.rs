//! Any sequence of device logins, device authorization answers, poll answers, late answers,
//! cancellations and time keeps every polling rule of the device authorization grant (S51).
//!
//! The model (`latchkey_tests::device_model`) is the one the quickcheck properties use:
//! `DeviceSim::apply` performs a `DeviceOp`, drains the engine (storing every `Persist` at
//! once) and returns `Err` on the first broken rule; `settle` lets two hours pass, checks
//! that every login finished, and answers every abandoned request late.
#![no_main]
#![forbid(unsafe_code)]

use latchkey_tests::device_model::{DeviceOp, DeviceSim};
use latchkey_tests::harness::{decode_ops, run_ops};
use libfuzzer_sys::fuzz_target;

/// Longest operation sequence decoded from one input.
const MAX_OPS: usize = 128;

fuzz_target!(|data: &[u8]| {
    let ops: Vec<DeviceOp> = decode_ops(data, MAX_OPS);
    if let Err(violation) = run_ops::<DeviceSim>(&ops) {
        panic!("rule broken: {violation}\nops: {ops:#?}");
    }
});
