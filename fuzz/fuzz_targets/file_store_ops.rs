//! Any sequence of saves, deletes, loads, refresh locks, fenced writes, unlocks and dying
//! processes on one token file keeps the rules of the refresh lock and its fences (S60).
//!
//! The model (`latchkey_tests::file_store_model`) is the one the quickcheck property uses:
//! the input decodes into `FileOp`s for three stores on a fresh file; `run_file_ops` applies
//! each to the real `FileStore`s and to the model, returns `Err` on the first difference,
//! then loads every key from every store and checks that every lock is free once its
//! holder is gone.
#![no_main]
#![forbid(unsafe_code)]

use latchkey_tests::file_store_model::{FileOp, run_file_ops};
use latchkey_tests::harness::decode_ops;
use libfuzzer_sys::fuzz_target;

/// Longest operation sequence decoded from one input (each step writes a file).
const MAX_OPS: usize = 48;

fuzz_target!(|data: &[u8]| {
    let ops: Vec<FileOp> = decode_ops(data, MAX_OPS);
    if let Err(violation) = run_file_ops(&ops) {
        panic!("rule broken: {violation}\nops: {ops:#?}");
    }
});
