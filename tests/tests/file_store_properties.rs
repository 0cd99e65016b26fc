//! Properties of the token file shared by processes (S60): any sequence of saves, deletes,
//! loads, refresh locks, fenced writes and unlocks (right or stale fences) from three stores
//! on one file, and processes dying, keeps the rules of `latchkey_tests::file_store_model`
//! (shared with the `file_store_ops` fuzz target): one lock holder per key, free again
//! exactly when its holder unlocks or dies, fences that only grow, fenced writes that
//! succeed exactly when nothing was written since their lock, loads that return what was
//! stored, keys that never touch each other.

use latchkey_tests::file_store_model::{FileOp, run_file_ops};
use quickcheck::{QuickCheck, TestResult};

#[test]
fn s60_stores_sharing_one_file_keep_the_lock_and_fence_rules_under_any_sequence() {
    fn property(ops: Vec<FileOp>) -> TestResult {
        match run_file_ops(&ops) {
            Ok(()) => TestResult::passed(),
            Err(violation) => TestResult::error(violation),
        }
    }
    // Each step writes and syncs a file: 300 sequences of up to 40 steps.
    QuickCheck::new()
        .tests(300)
        .rng(quickcheck::Gen::new(40))
        .quickcheck(property as fn(Vec<FileOp>) -> TestResult);
}
