//! Any sequence of driver operations keeps every invariant of the operation model.
//!
//! The model (`latchkey_tests::model`) is the one the quickcheck properties use: `Sim::apply`
//! performs an `Op`, drains the engine and returns `Err` on the first violated invariant.
#![no_main]
#![forbid(unsafe_code)]

use arbitrary::{Arbitrary, Unstructured};
use latchkey_tests::model::{Op, Sim};
use libfuzzer_sys::fuzz_target;

/// Longest operation sequence decoded from one input.
const MAX_OPS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS && !u.is_empty() {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }

    let mut sim = Sim::new();
    for (i, op) in ops.iter().enumerate() {
        if let Err(violation) = sim.apply(op) {
            panic!("invariant violated at op {i} ({op:?}): {violation}\nops: {ops:#?}");
        }
    }
    if let Err(violation) = sim.run_out_the_clock() {
        panic!("invariant violated while running out the clock: {violation}\nops: {ops:#?}");
    }
    let unfinished = sim.unfinished();
    assert!(
        unfinished.is_empty(),
        "flows {unfinished:?} never finished after every timer fired\nops: {ops:#?}"
    );
});
