//! Replicas sharing one token store refresh a login once between them (S57), and never
//! without the store's refresh lock (S58): scenarios with literal provider bytes, the
//! sessions' actions checked one by one. The store is the model's
//! (`latchkey_tests::shared_session_model::ModelStore`): one token set, a fence counter and
//! a leased lock, as `io-shared`'s `TokenStore` documents them.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latchkey::{
    CallId, ConfigError, DeleteReason, Purpose, RequestId, SaveReason, Session, SessionAction,
    SessionError, SessionOptions, StoreError, StoreOpId, TokenSet, TransportError,
    TransportErrorKind,
};
use latchkey_tests::harness::parse_response;
use latchkey_tests::shared_session_model::{ModelStore, provider, tokens};
use secrecy::ExposeSecret;

/// The provider rotates `refresh-0` into `refresh-1`.
const ROTATED_1: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: application/json\r\n\
Cache-Control: no-store\r\n\
Content-Length: 95\r\n\
\r\n\
{\"access_token\":\"access-1\",\"token_type\":\"Bearer\",\"expires_in\":3600,\"refresh_token\":\"refresh-1\"}";

/// The provider answers a second refresh: `refresh-2`.
const ROTATED_2: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: application/json\r\n\
Cache-Control: no-store\r\n\
Content-Length: 95\r\n\
\r\n\
{\"access_token\":\"access-2\",\"token_type\":\"Bearer\",\"expires_in\":3600,\"refresh_token\":\"refresh-2\"}";

/// The provider refuses a refresh token used before (rotation with reuse detection).
const INVALID_GRANT: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: application/json\r\n\
Cache-Control: no-store\r\n\
Content-Length: 25\r\n\
\r\n\
{\"error\":\"invalid_grant\"}";

/// The provider is down for a moment.
const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";

/// The refresh request every scenario expects first, byte for byte.
const REFRESH_0: &str = "grant_type=refresh_token&refresh_token=refresh-0&client_id=replicas&client_secret=replica-secret";

/// Sessions on `n` replicas over one store, at a virtual instant and wall-clock time.
struct Bench {
    replicas: Vec<Session>,
    store: ModelStore,
    now: Instant,
    wall: SystemTime,
}

/// Options with the shared refresh on, the rest default (a 45-second lease, a 100 ms retry,
/// a 30-second request timeout).
fn shared() -> SessionOptions {
    let mut options = SessionOptions::default();
    options.shared_refresh = true;
    options
}

impl Bench {
    /// `n` replicas with `options` over a store holding `access-0`/`refresh-0`, expiring
    /// `expires_in` seconds from now (negative: already expired).
    fn new(n: usize, options: SessionOptions, expires_in: i64) -> Bench {
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let expires = if expires_in >= 0 {
            wall + Duration::from_secs(expires_in.unsigned_abs())
        } else {
            wall - Duration::from_secs(expires_in.unsigned_abs())
        };
        let session = Session::with_options(provider(), options).expect("valid options");
        Bench {
            replicas: vec![session; n],
            store: ModelStore::holding(Some(tokens("access-0", "refresh-0", expires))),
            now: Instant::now(),
            wall,
        }
    }

    fn drain(&mut self, r: usize) -> Vec<SessionAction> {
        std::iter::from_fn(|| self.replicas[r].poll_action()).collect()
    }

    fn lease(&self, r: usize) -> Duration {
        self.replicas[r].options().lock_lease
    }

    /// A caller on replica `r` asks for tokens: the replica's first action.
    fn tokens(&mut self, r: usize) -> (CallId, Vec<SessionAction>) {
        let call = self.replicas[r].tokens(self.now);
        (call, self.drain(r))
    }

    /// A caller on replica `r` asks for a refresh whatever the expiry.
    fn refresh(&mut self, r: usize) -> (CallId, Vec<SessionAction>) {
        let call = self.replicas[r].refresh(self.now);
        (call, self.drain(r))
    }

    /// The store reads the tokens for replica `r`.
    fn loaded(&mut self, r: usize, op: StoreOpId) -> Vec<SessionAction> {
        let result = self.store.load();
        self.replicas[r].handle_loaded(self.now, self.wall, op, result);
        self.drain(r)
    }

    /// The store takes (or refuses) the lock for replica `r`.
    fn locked(&mut self, r: usize, op: StoreOpId) -> Vec<SessionAction> {
        let result = self.store.lock(self.now, self.lease(r));
        self.replicas[r].handle_locked(self.now, op, result);
        self.drain(r)
    }

    /// The store performs replica `r`'s fenced save.
    fn saved_fenced(&mut self, r: usize, save: &FencedSave) -> Vec<SessionAction> {
        let result = self.store.save_fenced(&save.tokens, save.fence);
        self.replicas[r].handle_saved_fenced(self.now, save.op, result);
        self.drain(r)
    }

    /// The store deletes the tokens for replica `r` if `fence` is still the newest.
    fn deleted_fenced(&mut self, r: usize, op: StoreOpId, fence: u64) -> Vec<SessionAction> {
        let result = self.store.delete_fenced(fence);
        self.replicas[r].handle_deleted_fenced(self.now, op, result);
        self.drain(r)
    }

    /// The provider's literal answer to replica `r`'s request.
    fn answer(&mut self, r: usize, id: RequestId, raw: &[u8]) -> Vec<SessionAction> {
        self.replicas[r].handle_response(self.now, self.wall, id, parse_response(raw));
        self.drain(r)
    }

    /// Both clocks move `by`; every replica's due deadlines fire.
    fn advance(&mut self, by: Duration) -> Vec<Vec<SessionAction>> {
        self.now += by;
        self.wall += by;
        (0..self.replicas.len())
            .map(|r| {
                self.replicas[r].handle_timeout(self.now);
                self.drain(r)
            })
            .collect()
    }

    /// Replica `r` from a call to its refresh request: loads the (expiring) tokens, takes
    /// the lock, loads them again under it and sends the request. Returns the request and
    /// the lock's fence.
    fn lock_and_send(&mut self, r: usize, first: &[SessionAction]) -> (RequestId, u64) {
        let op = load(first);
        let op = lock(&self.loaded(r, op));
        let op = load(&self.locked(r, op));
        let fence = self.store.holder(self.now).expect("the lock was taken");
        let (id, body) = sent(&self.loaded(r, op));
        assert_eq!(body, REFRESH_0);
        (id, fence)
    }
}

/// A fenced save asked for.
struct FencedSave {
    op: StoreOpId,
    tokens: TokenSet,
    fence: u64,
}

fn load(actions: &[SessionAction]) -> StoreOpId {
    match actions {
        [SessionAction::Load { op }] => *op,
        other => panic!("expected one Load, got {other:?}"),
    }
}

fn lock(actions: &[SessionAction]) -> StoreOpId {
    match actions {
        [SessionAction::Lock { op, .. }] => *op,
        other => panic!("expected one Lock, got {other:?}"),
    }
}

/// The one refresh request among `actions`, and its body.
fn sent(actions: &[SessionAction]) -> (RequestId, String) {
    match actions {
        [
            SessionAction::Send {
                id,
                purpose: Purpose::Refresh,
                request,
            },
        ] => {
            assert_eq!(request.request().uri(), "https://idp.example/token");
            let body = String::from_utf8(request.request().body().clone()).expect("a form body");
            (*id, body)
        }
        other => panic!("expected one refresh request, got {other:?}"),
    }
}

fn fenced_save(actions: &[SessionAction]) -> FencedSave {
    match actions {
        [
            SessionAction::SaveFenced {
                op,
                tokens,
                reason: SaveReason::Refreshed { rotated: true },
                fence,
            },
        ] => FencedSave {
            op: *op,
            tokens: tokens.clone(),
            fence: *fence,
        },
        other => panic!("expected one fenced save of rotated tokens, got {other:?}"),
    }
}

/// The answers among `actions`: each call's access token, or its error.
fn answers(actions: &[SessionAction]) -> Vec<(CallId, Result<String, SessionError>)> {
    actions
        .iter()
        .filter_map(|action| match action {
            SessionAction::Tokens { call, result } => Some((
                *call,
                result
                    .as_ref()
                    .map(|tokens| tokens.access_token().expose_secret().to_owned())
                    .map_err(Clone::clone),
            )),
            _ => None,
        })
        .collect()
}

/// The fences released among `actions`.
fn unlocks(actions: &[SessionAction]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|action| match action {
            SessionAction::Unlock { fence } => Some(*fence),
            _ => None,
        })
        .collect()
}

fn stored_access(store: &ModelStore) -> Option<String> {
    store
        .tokens
        .as_ref()
        .map(|tokens| tokens.access_token().expose_secret().to_owned())
}

#[test]
fn s57_thirty_calls_on_three_replicas_make_one_refresh_request() {
    let mut b = Bench::new(3, shared(), -1);
    let mut calls = Vec::new();
    // The driver's queue: every action each replica asked for, in order.
    let mut queue: VecDeque<(usize, SessionAction)> = VecDeque::new();
    for i in 0..30 {
        let (call, actions) = b.tokens(i % 3);
        calls.push(call);
        queue.extend(actions.into_iter().map(|action| (i % 3, action)));
    }
    let mut requests = Vec::new();
    let mut served = Vec::new();
    while !queue.is_empty() || b.replicas.iter().any(|session| !session.is_idle()) {
        let Some((r, action)) = queue.pop_front() else {
            // Nothing to do but wait for a back-off to end.
            let at = b.replicas.iter().filter_map(Session::poll_timeout).min();
            let wait = at.expect("a busy replica waits for something") - b.now;
            for (r, actions) in b.advance(wait).into_iter().enumerate() {
                queue.extend(actions.into_iter().map(|action| (r, action)));
            }
            continue;
        };
        let next = match action {
            SessionAction::Load { op } => b.loaded(r, op),
            SessionAction::Lock { op, .. } => b.locked(r, op),
            SessionAction::SaveFenced {
                op, tokens, fence, ..
            } => b.saved_fenced(r, &FencedSave { op, tokens, fence }),
            SessionAction::Unlock { fence } => {
                b.store.unlock(fence).expect("the store is up");
                Vec::new()
            }
            SessionAction::Send { id, request, .. } => {
                requests.push(String::from_utf8(request.request().body().clone()).expect("a form"));
                b.answer(r, id, ROTATED_1)
            }
            SessionAction::Tokens { call, result } => {
                let tokens = result.expect("every call is served");
                served.push((call, tokens.access_token().expose_secret().to_owned()));
                Vec::new()
            }
            other => panic!("unexpected {other:?}"),
        };
        queue.extend(next.into_iter().map(|action| (r, action)));
    }
    assert_eq!(
        requests,
        [REFRESH_0],
        "one refresh request for thirty calls"
    );
    assert_eq!(served.len(), 30);
    assert!(served.iter().all(|(_, access)| access == "access-1"));
    assert_eq!(stored_access(&b.store).as_deref(), Some("access-1"));
    assert_eq!(b.store.holder(b.now), None, "the lock is free again");
}

#[test]
fn s57_a_replica_that_finds_the_lock_held_reads_the_tokens_the_holder_stored() {
    let mut b = Bench::new(2, shared(), 30);
    let (first, actions) = b.tokens(0);
    let (id, fence) = b.lock_and_send(0, &actions);

    // Replica 1 finds the tokens inside the margin too, but the lock held: it waits.
    let (second, actions) = b.tokens(1);
    let op = lock(&b.loaded(1, load(&actions)));
    assert!(b.locked(1, op).is_empty(), "no refresh, no answer yet");
    let retry = b.replicas[1].poll_timeout().expect("a back-off");
    assert_eq!(retry, b.now + Duration::from_millis(100));

    // The holder's refresh is stored with its fence, answered, and the lock released.
    let save = fenced_save(&b.answer(0, id, ROTATED_1));
    assert_eq!(save.fence, fence);
    let actions = b.saved_fenced(0, &save);
    assert_eq!(answers(&actions), [(first, Ok("access-1".to_owned()))]);
    assert_eq!(unlocks(&actions), [fence]);
    b.store.unlock(fence).expect("the store is up");

    // After the back-off, replica 1 reads what the holder stored and hands it out.
    let actions = b.advance(Duration::from_millis(100)).remove(1);
    let actions = b.loaded(1, load(&actions));
    assert_eq!(answers(&actions), [(second, Ok("access-1".to_owned()))]);
    assert_eq!(actions.len(), 1, "no lock, no request: {actions:?}");
    assert!(b.replicas[1].is_idle());
}

#[test]
fn s57_a_holder_whose_lease_expired_writes_nothing_and_hands_out_the_newer_tokens() {
    // A lease shorter than the refresh: the holder's request outlives it.
    let mut options = shared();
    options.lock_lease = Duration::from_secs(5);
    let mut b = Bench::new(2, options, -1);
    let (slow, actions) = b.tokens(0);
    let (slow_id, old_fence) = b.lock_and_send(0, &actions);

    b.advance(Duration::from_secs(6));
    let (quick, actions) = b.tokens(1);
    let (quick_id, new_fence) = b.lock_and_send(1, &actions);
    assert!(new_fence > old_fence);
    let save = fenced_save(&b.answer(1, quick_id, ROTATED_1));
    let actions = b.saved_fenced(1, &save);
    assert_eq!(answers(&actions), [(quick, Ok("access-1".to_owned()))]);
    assert_eq!(unlocks(&actions), [new_fence]);

    // The provider lets the reused refresh token through (a reuse grace period, as several
    // providers allow): the stale holder has fresh tokens, and its fenced save writes
    // nothing over the newer holder's.
    let save = fenced_save(&b.answer(0, slow_id, ROTATED_2));
    assert_eq!(save.fence, old_fence);
    let actions = b.saved_fenced(0, &save);
    assert_eq!(stored_access(&b.store).as_deref(), Some("access-1"));
    // It reads the store instead, and hands out what it holds.
    let [SessionAction::Unlock { fence }, SessionAction::Load { op }] = actions[..] else {
        panic!("expected a release and a read, got {actions:?}");
    };
    assert_eq!(fence, old_fence);
    let actions = b.loaded(0, op);
    assert_eq!(answers(&actions), [(slow, Ok("access-1".to_owned()))]);
    assert!(b.replicas[0].is_idle());
}

#[test]
fn s57_a_holder_overtaken_by_a_new_login_hands_out_the_login_and_releases_the_lock() {
    let mut b = Bench::new(1, shared(), -1);
    let (call, actions) = b.tokens(0);
    let (id, fence) = b.lock_and_send(0, &actions);
    // The user logs in again elsewhere while the refresh is on its way.
    let login = tokens("access-9", "refresh-9", b.wall + Duration::from_secs(3600));
    b.store.save(&login).expect("the store is up");

    let save = fenced_save(&b.answer(0, id, ROTATED_1));
    let actions = b.saved_fenced(0, &save);
    assert_eq!(stored_access(&b.store).as_deref(), Some("access-9"));
    // The lock is still this replica's (a login takes no lock): it is released at once.
    let [
        SessionAction::Unlock { fence: released },
        SessionAction::Load { op },
    ] = actions[..]
    else {
        panic!("expected a release and a read, got {actions:?}");
    };
    assert_eq!(released, fence);
    b.store.unlock(released).expect("the store is up");
    assert_eq!(b.store.holder(b.now), None);
    let actions = b.loaded(0, op);
    assert_eq!(answers(&actions), [(call, Ok("access-9".to_owned()))]);
    assert!(unlocks(&actions).is_empty(), "released once");
}

#[test]
fn s57_a_forced_refresh_while_another_replica_refreshes_is_served_by_its_tokens() {
    // Valid tokens: only forced refreshes refresh them.
    let mut b = Bench::new(2, shared(), 3600);
    let (first, actions) = b.refresh(0);
    let (id, fence) = b.lock_and_send(0, &actions);

    let (forced, actions) = b.refresh(1);
    let op = lock(&b.loaded(1, load(&actions)));
    assert!(b.locked(1, op).is_empty(), "the lock is held: wait");

    let save = fenced_save(&b.answer(0, id, ROTATED_1));
    let actions = b.saved_fenced(0, &save);
    assert_eq!(answers(&actions), [(first, Ok("access-1".to_owned()))]);
    b.store.unlock(fence).expect("the store is up");

    // Refreshed after the call was made: that serves it, no second request.
    let actions = b.advance(Duration::from_millis(100)).remove(1);
    let actions = b.loaded(1, load(&actions));
    assert_eq!(answers(&actions), [(forced, Ok("access-1".to_owned()))]);
    assert_eq!(actions.len(), 1, "no second refresh: {actions:?}");
}

#[test]
fn s57_the_lock_is_released_when_the_work_ends() {
    /// How the work ends, once the refresh request is out; the actions that end it.
    type Ending = fn(&mut Bench, RequestId) -> Vec<SessionAction>;
    let endings: [(&str, Ending); 7] = [
        ("stored", |b, id| {
            let save = fenced_save(&b.answer(0, id, ROTATED_1));
            b.saved_fenced(0, &save)
        }),
        ("transport failure", |b, id| {
            let refused = TransportError::new(TransportErrorKind::Connect, "refused");
            b.replicas[0].handle_failure(b.now, id, refused);
            b.drain(0)
        }),
        ("provider unavailable", |b, id| b.answer(0, id, UNAVAILABLE)),
        ("request timed out", |b, _| {
            b.advance(Duration::from_secs(30)).remove(0)
        }),
        ("store refused the save", |b, id| {
            let save = fenced_save(&b.answer(0, id, ROTATED_1));
            let full = StoreError::new("out of memory");
            b.replicas[0].handle_saved_fenced(b.now, save.op, Err(full));
            b.drain(0)
        }),
        ("refresh token refused", |b, id| {
            let actions = b.answer(0, id, INVALID_GRANT);
            let [SessionAction::DeleteFenced { op, reason, fence }] = actions[..] else {
                panic!("expected a fenced deletion, got {actions:?}");
            };
            assert_eq!(reason, DeleteReason::LoginRequired);
            b.deleted_fenced(0, op, fence)
        }),
        ("store unreachable on the save", |b, id| {
            let save = fenced_save(&b.answer(0, id, ROTATED_1));
            b.store.up = false;
            b.saved_fenced(0, &save)
        }),
    ];
    for (ending, end) in endings {
        let mut b = Bench::new(1, shared(), -1);
        let (call, actions) = b.tokens(0);
        let (id, fence) = b.lock_and_send(0, &actions);
        let actions = end(&mut b, id);
        let [(answered, _)] = answers(&actions)[..] else {
            panic!("{ending}: expected one answer, got {actions:?}");
        };
        assert_eq!(answered, call, "{ending}");
        assert_eq!(unlocks(&actions), [fence], "{ending}: released once");
        assert!(
            matches!(actions.last(), Some(SessionAction::Unlock { .. })),
            "{ending}: released as the work ends: {actions:?}"
        );
        assert!(b.replicas[0].is_idle(), "{ending}");
    }

    // Before the request too: the store fails the read under the lock.
    let mut b = Bench::new(1, shared(), -1);
    let (call, actions) = b.tokens(0);
    let op = lock(&b.loaded(0, load(&actions)));
    let op = load(&b.locked(0, op));
    let fence = b.store.holder(b.now).expect("taken");
    b.replicas[0].handle_loaded(b.now, b.wall, op, Err(StoreError::new("timed out")));
    let actions = b.drain(0);
    let [(answered, Err(SessionError::Store(_)))] = answers(&actions)[..] else {
        panic!("expected a store error, got {actions:?}");
    };
    assert_eq!(answered, call);
    assert_eq!(unlocks(&actions), [fence]);

    // And when the read under the lock finds the tokens refreshed already.
    let mut b = Bench::new(1, shared(), -1);
    let (call, actions) = b.tokens(0);
    let op = lock(&b.loaded(0, load(&actions)));
    let op = load(&b.locked(0, op));
    let fence = b.store.holder(b.now).expect("taken");
    let fresh = tokens("access-1", "refresh-1", b.wall + Duration::from_secs(3600));
    b.store.tokens = Some(fresh);
    let actions = b.loaded(0, op);
    assert_eq!(answers(&actions), [(call, Ok("access-1".to_owned()))]);
    assert_eq!(unlocks(&actions), [fence]);
}

#[test]
fn s57_a_lease_that_ran_out_before_the_refresh_was_sent_is_taken_again() {
    let mut b = Bench::new(2, shared(), -1);
    let (call, actions) = b.tokens(0);
    let op = lock(&b.loaded(0, load(&actions)));
    let op = load(&b.locked(0, op));
    let first = b.store.holder(b.now).expect("taken");

    // The read under the lock comes back after the lease (a stalled process, a slow
    // store); meanwhile replica 1 took the lock.
    b.advance(b.lease(0));
    let (_, actions) = b.tokens(1);
    let op1 = lock(&b.loaded(1, load(&actions)));
    let op1 = load(&b.locked(1, op1));
    let second = b.store.holder(b.now).expect("taken by replica 1");
    assert!(second > first);

    // Replica 0 sends nothing under the lapsed lease: it asks for the lock again.
    let actions = b.loaded(0, op);
    let [
        SessionAction::Unlock { fence },
        SessionAction::Lock { op, .. },
    ] = actions[..]
    else {
        panic!("expected a release and a new lock, got {actions:?}");
    };
    assert_eq!(fence, first);
    b.store.unlock(fence).expect("the store is up");
    assert!(b.locked(0, op).is_empty(), "held by replica 1: wait");

    // Replica 1 refreshes and stores; replica 0 reads its tokens after the back-off.
    let (id, body) = sent(&b.loaded(1, op1));
    assert_eq!(body, REFRESH_0);
    let save = fenced_save(&b.answer(1, id, ROTATED_1));
    assert_eq!(save.fence, second);
    b.saved_fenced(1, &save);
    b.store.unlock(second).expect("the store is up");
    let actions = b.advance(Duration::from_millis(100)).remove(0);
    let actions = b.loaded(0, load(&actions));
    assert_eq!(answers(&actions), [(call, Ok("access-1".to_owned()))]);
}

#[test]
fn s58_no_refresh_request_without_the_lock() {
    // The store cannot be asked for the lock: a store error, and no request.
    let mut b = Bench::new(1, shared(), -1);
    let (call, actions) = b.tokens(0);
    let op = lock(&b.loaded(0, load(&actions)));
    let unreachable = StoreError::new("connection refused");
    b.replicas[0].handle_locked(b.now, op, Err(unreachable.clone()));
    let actions = b.drain(0);
    assert_eq!(
        answers(&actions),
        [(call, Err(SessionError::Store(unreachable)))]
    );
    assert_eq!(
        actions.len(),
        1,
        "no request, nothing to release: {actions:?}"
    );
    assert!(b.replicas[0].is_idle());
    assert_eq!(b.replicas[0].poll_timeout(), None);

    // Nor when the store is down from the start: the read fails, nothing else is asked.
    b.store.up = false;
    let (call, actions) = b.tokens(0);
    let actions = b.loaded(0, load(&actions));
    let [(answered, Err(SessionError::Store(_)))] = answers(&actions)[..] else {
        panic!("expected a store error, got {actions:?}");
    };
    assert_eq!(answered, call);
    assert_eq!(actions.len(), 1, "{actions:?}");

    // The store back: the next call refreshes, under the lock.
    b.store.up = true;
    let (_, actions) = b.tokens(0);
    b.lock_and_send(0, &actions);
}

#[test]
fn s57_a_session_without_shared_refresh_never_locks() {
    let mut b = Bench::new(1, SessionOptions::default(), -1);
    let (call, actions) = b.tokens(0);
    let (id, body) = sent(&b.loaded(0, load(&actions)));
    assert_eq!(body, REFRESH_0);
    let actions = b.answer(0, id, ROTATED_1);
    let [
        SessionAction::Save {
            op,
            ref tokens,
            reason: SaveReason::Refreshed { rotated: true },
        },
    ] = actions[..]
    else {
        panic!("expected a plain save, got {actions:?}");
    };
    b.store.save(tokens).expect("the store is up");
    b.replicas[0].handle_saved(b.now, b.wall, op, Ok(()));
    let actions = b.drain(0);
    assert_eq!(answers(&actions), [(call, Ok("access-1".to_owned()))]);
    assert_eq!(actions.len(), 1, "no lock to release: {actions:?}");
    assert_eq!(b.store.lock, None, "never locked");
}

#[test]
fn s57_a_lock_lease_or_retry_of_zero_or_over_a_day_is_refused() {
    let cases = [
        (Duration::ZERO, Duration::from_millis(100), "lock lease"),
        (Duration::from_secs(45), Duration::ZERO, "lock retry"),
        (
            Duration::from_secs(2 * 86_400),
            Duration::from_millis(100),
            "lock lease",
        ),
        (Duration::from_secs(45), Duration::MAX, "lock retry"),
    ];
    for (lease, retry, name) in cases {
        let mut options = shared();
        options.lock_lease = lease;
        options.lock_retry = retry;
        assert!(
            matches!(
                Session::with_options(provider(), options),
                Err(ConfigError::InvalidLimit(limit)) if limit == name
            ),
            "{lease:?} {retry:?}"
        );
    }
}

/// S57: a holder whose lease ran out, overtaken by a newer holder that already stored
/// rotated tokens, has its reused refresh token refused. Its deletion is fenced: it
/// deletes nothing, reads the store and hands out the newer holder's tokens, instead of
/// telling every replica "login required" while the login is alive.
#[test]
fn s57_a_holder_whose_lease_expired_deletes_nothing_when_its_refresh_token_is_refused() {
    let mut options = shared();
    options.lock_lease = Duration::from_secs(5);
    let mut b = Bench::new(2, options, -1);
    let (slow, actions) = b.tokens(0);
    let (slow_id, _) = b.lock_and_send(0, &actions);
    b.advance(Duration::from_secs(6));
    let (_, actions) = b.tokens(1);
    let (quick_id, _) = b.lock_and_send(1, &actions);
    let save = fenced_save(&b.answer(1, quick_id, ROTATED_1));
    b.saved_fenced(1, &save);
    assert_eq!(stored_access(&b.store).as_deref(), Some("access-1"));

    // The provider refuses the stale holder's reused refresh token.
    let mut actions = b.answer(0, slow_id, INVALID_GRANT);
    match actions[..] {
        [SessionAction::DeleteFenced { op, fence, .. }] => actions = b.deleted_fenced(0, op, fence),
        _ => panic!("a fenced deletion under the lock: {actions:?}"),
    }
    assert_eq!(
        stored_access(&b.store).as_deref(),
        Some("access-1"),
        "the newer holder's tokens survive"
    );
    let answered = answers(&actions);
    assert!(
        answered
            .iter()
            .all(|(call, result)| *call == slow && result.as_deref() == Ok("access-1")),
        "{answered:?}"
    );
}
