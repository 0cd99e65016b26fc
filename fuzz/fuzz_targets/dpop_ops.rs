//! Any sequence of DPoP logins, token endpoint answers (nonce demands with usable,
//! unusable or no nonces, bound and bearer tokens, refusals, garbage), transport failures
//! and time keeps the rules of S61 and S62: every request proves possession of its login's
//! key, one retry with the nonce asked for and never a third, the newest nonce used, only
//! bound tokens stored.
//!
//! The first byte chooses the machine: the engine's logins (`DpopSim`), or a session
//! refreshing stored bound tokens (`DpopSessionSim`). The models
//! (`latchkey_tests::dpop_model`) are the ones the quickcheck properties use.
#![no_main]
#![forbid(unsafe_code)]

use latchkey_tests::dpop_model::{DpopOp, DpopSessionOp, DpopSessionSim, DpopSim};
use latchkey_tests::harness::{decode_ops, run_ops};
use libfuzzer_sys::fuzz_target;

/// Longest operation sequence decoded from one input.
const MAX_OPS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((choice, data)) = data.split_first() else {
        return;
    };
    if choice % 2 == 0 {
        let ops: Vec<DpopOp> = decode_ops(data, MAX_OPS);
        if let Err(violation) = run_ops::<DpopSim>(&ops) {
            panic!("rule broken: {violation}\nops: {ops:#?}");
        }
    } else {
        let ops: Vec<DpopSessionOp> = decode_ops(data, MAX_OPS);
        if let Err(violation) = run_ops::<DpopSessionSim>(&ops) {
            panic!("rule broken: {violation}\nops: {ops:#?}");
        }
    }
});
