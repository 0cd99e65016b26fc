//! Any sequence of callers on several replicas, store answers (late, in any order), outages,
//! provider answers, failures, new logins and time keeps every rule of a refresh shared by
//! replicas (S57, S58).
//!
//! The model (`latchkey_tests::shared_session_model`) is the one the quickcheck properties
//! use: the first byte chooses the setup (`SharedConfig::from_byte`: 2 to 4 replicas, the
//! provider's latency, the lease), the rest decodes into `SharedOp`s; `run_shared` applies
//! them, returns `Err` on the first broken rule, then settles and checks that every call was
//! answered, every session is idle and every lock taken was released.
#![no_main]
#![forbid(unsafe_code)]

use latchkey_tests::harness::decode_ops;
use latchkey_tests::shared_session_model::{SharedConfig, SharedOp, run_shared};
use libfuzzer_sys::fuzz_target;

/// Longest operation sequence decoded from one input.
const MAX_OPS: usize = 192;

fuzz_target!(|data: &[u8]| {
    let Some((&setup, rest)) = data.split_first() else {
        return;
    };
    let config = SharedConfig::from_byte(setup);
    let ops: Vec<SharedOp> = decode_ops(rest, MAX_OPS);
    if let Err(violation) = run_shared(config, &ops) {
        panic!("rule broken: {violation}\nconfig: {config:?}\nops: {ops:#?}");
    }
});
