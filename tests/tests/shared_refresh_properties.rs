//! Properties of replicas that share one token store and refresh a login once between them
//! (S57, S58): 2 to 4 sessions with `shared_refresh` on, a store with a leased, fenced
//! refresh lock, a provider that rotates refresh tokens and refuses a reused one, under any
//! interleaving of callers, store answers (late, in any order), outages, provider answers
//! (late, slow), transport failures, new logins and time, 2,000 cases each. The operations
//! and the rules are `latchkey_tests::shared_session_model`, shared with the
//! `shared_session_ops` fuzz target.

use latchkey_tests::harness::check_2000;
use latchkey_tests::shared_session_model::{
    AnyMix, CalmMix, Case, OutageMix, SharedConfig, SharedOp, SlowMix, all_at_once, run_shared,
};
use quickcheck::{Gen, QuickCheck, TestResult};

fn verdict(result: Result<(), String>) -> TestResult {
    match result {
        Ok(()) => TestResult::passed(),
        Err(violation) => TestResult::error(violation),
    }
}

/// Every rule of the model under anything: a refresh request only under the sender's own
/// live lock; no two requests in flight with one refresh token unless a lease lapsed;
/// refreshed tokens stored only fenced, and a stale fence writes nothing; callers get only
/// what the store holds; "login required" deletes only the refused tokens (the deletion is
/// fenced); every lock taken is released; one store operation at a time per replica; every
/// call answered once; every session idle in the end; no panic.
#[test]
fn s57_replicas_sharing_a_store_keep_every_rule_under_any_interleaving() {
    fn property(case: Case<AnyMix>) -> TestResult {
        verdict(case.run())
    }
    check_2000(property as fn(Case<AnyMix>) -> TestResult);
}

/// With no lease lapsing, no write failing and no rotated answer lost (the undisturbed
/// runs; the others are discarded), no call is ever told to log in again, no refresh token
/// is sent twice, and the login survives: after settling, the store holds a refresh token
/// the provider honours. The promise for a calm store: replicas refresh a login
/// once per expiry, however many ask.
#[test]
fn s57_without_lease_expiry_or_store_failure_no_call_is_told_to_log_in_again() {
    fn property(case: Case<CalmMix>) -> TestResult {
        let mut sim = latchkey_tests::shared_session_model::SharedSim::new(case.config);
        for (i, op) in case.ops.iter().enumerate() {
            if let Err(violation) = sim.apply(op) {
                return TestResult::error(format!("{violation} after op {i} ({op:?})"));
            }
            if sim.disturbed() {
                return TestResult::discard();
            }
        }
        match sim.settle() {
            Ok(()) if sim.disturbed() => TestResult::discard(),
            Ok(()) => TestResult::passed(),
            Err(violation) => TestResult::error(format!("settling: {violation}")),
        }
    }
    check_2000(property as fn(Case<CalmMix>) -> TestResult);
}

/// Any number of calls (1 to 10 per replica) on 2 to 4 replicas, all at once, over expiring
/// tokens, with the store and the provider answering in any order: exactly one refresh
/// request, and every call gets its tokens, none "login required" (the target).
#[test]
fn s57_any_number_of_replicas_asking_at_once_make_exactly_one_refresh_request() {
    fn property(calls: Vec<u8>, schedule: Vec<u8>) -> TestResult {
        verdict(all_at_once(&calls, &schedule))
    }
    check_2000(property as fn(Vec<u8>, Vec<u8>) -> TestResult);
}

/// A provider slower than the lease: every refresh outlives its lock, newer holders take
/// over, and the stale holder's fenced save writes nothing; whatever it hands out is what
/// the store holds; after its reused refresh token is refused, its fenced deletion deletes
/// nothing (`shared_refresh.rs`,
/// `s57_a_holder_whose_lease_expired_deletes_nothing_when_its_refresh_token_is_refused`).
#[test]
fn s57_a_holder_whose_lease_ran_out_stores_nothing_over_a_newer_holder() {
    fn property(case: Case<SlowMix>) -> TestResult {
        verdict(case.run())
    }
    check_2000(property as fn(Case<SlowMix>) -> TestResult);
}

/// A store often unreachable: a lock that cannot be asked for means an error and no
/// refresh request; failed saves keep the tokens; no rule of the model breaks.
#[test]
fn s58_an_unreachable_store_never_leads_to_a_refresh_without_the_lock() {
    fn property(case: Case<OutageMix>) -> TestResult {
        verdict(case.run())
    }
    check_2000(property as fn(Case<OutageMix>) -> TestResult);
}

/// The same rules over long lives: many expiries, holders coming and going.
#[test]
fn s57_the_rules_hold_over_long_lives() {
    fn property(config: u8, chunks: Vec<Vec<SharedOp>>) -> TestResult {
        let ops: Vec<SharedOp> = chunks.into_iter().flatten().collect();
        verdict(run_shared(SharedConfig::from_byte(config), &ops))
    }
    QuickCheck::new()
        .tests(200)
        .rng(Gen::new(100))
        .quickcheck(property as fn(u8, Vec<Vec<SharedOp>>) -> TestResult);
}
