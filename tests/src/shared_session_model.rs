//! Replicas of one service sharing one token store (S57, S58): what callers on each replica,
//! the store, the provider and the clock can do to their [`latchkey::Session`]s, and what
//! must hold whatever they do.
//!
//! Each replica runs its own session with [`SessionOptions::shared_refresh`] on. They share
//! one [`ModelStore`], which keeps the refresh lock as a lease by the model clock and a fence
//! counter that every lock taken, every plain save and every delete increments (as the Redis
//! store does), and one [`ModelProvider`], which rotates refresh tokens and refuses one used
//! before with `invalid_grant` (as providers with rotation do). A [`SharedOp`] names its
//! replica, store operation and request by index, so any sequence of ops is meaningful.
//! Store operations take effect when the store answers them, in any order across replicas
//! and as late as the ops say; the provider answers after [`SharedConfig::latency`].
//! [`SharedSim::apply`] performs one op, drains every session and checks each action:
//!
//! - **no refresh without the lock (S57, S58):** a refresh request is sent only by a
//!   replica whose lock the store holds, its lease not over;
//! - **one request per refresh token:** no two refresh requests in flight carry the same
//!   refresh token unless a lease lapsed, and none carries a refresh token the provider
//!   already retired unless the run was disturbed (see below);
//! - **fenced writes:** refreshed tokens are stored only with
//!   [`SessionAction::SaveFenced`] and the fence of the replica's own lock; a plain save
//!   carries only tokens kept after a failed save; the store writes a fenced save only when
//!   its fence is still the newest, so a holder whose lease lapsed writes nothing;
//! - **deliver what is stored:** every token set handed to a caller is the one the store
//!   holds at that moment (never tokens the store overwrote first);
//! - **a dead login deletes only dead tokens:** a deletion for "login required" is fenced
//!   ([`SessionAction::DeleteFenced`]) and removes the tokens whose refresh token the
//!   provider refused that replica, or nothing: a holder whose lease lapsed deletes nothing
//!   a newer holder stored (checked in undisturbed runs: an answer a session gave up on may
//!   have retired the stored refresh token, which is then rightly deleted);
//! - **no "login required" without a cause:** unless a lease lapsed while its holder still
//!   worked under it, a write failed in the store, or the provider rotated a refresh token
//!   for a request whose session had stopped waiting (a *disturbed* run), no call is told to
//!   log in again, and after settling the store holds tokens whose refresh token the provider
//!   honours;
//! - **locks end with the work:** a replica never asks for the lock while it holds it, and
//!   every lock it took is released ([`SessionAction::Unlock`] with its fence) by the time
//!   its session is idle;
//! - one store operation at a time per replica; every call answered exactly once; after a
//!   drain, `poll_timeout` is never in the past; after settling every session is idle;
//!   nothing panics.
//!
//! [`all_at_once`] is the issue's target on its own: any number of calls on any number of
//! replicas, with the store and the provider answering in any order, make exactly one
//! refresh request, and every call gets its tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latchkey::{
    CallId, ClientAuth, DeleteReason, Provider, Purpose, RequestId, SaveReason, Session,
    SessionAction, SessionOptions, StoreError, StoreOpId, TokenSet, TransportError,
    TransportErrorKind,
};
use quickcheck::{Arbitrary, Gen};
use secrecy::{ExposeSecret, SecretString};

use crate::harness::{drain_checked, json_response, parse_response, pick, query_value};
use crate::session_model::Lifetime;

/// How long a refresh request may take (the sessions' `request_timeout`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call waits for its answer (the sessions' `call_timeout`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a session that found the lock held waits before it reads the store again.
pub const LOCK_RETRY: Duration = Duration::from_millis(500);
/// How long the first stored tokens live: inside the default 60-second margin, so the first
/// calls refresh them.
pub const FIRST_LIFETIME: Duration = Duration::from_secs(30);

/// How a run of replicas is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedConfig {
    /// How many replicas share the store (2 to 4).
    pub replicas: usize,
    /// How long the provider takes to answer: the clock moves this far before each answer.
    /// Longer than `lease`, every lease runs out while its refresh is on the way.
    pub latency: Duration,
    /// The refresh lock's lease.
    pub lease: Duration,
    /// The furthest one [`SharedOp::Advance`] moves the clock.
    pub max_step: Duration,
}

impl SharedConfig {
    /// A calm run: a quick provider, a 15-second lease, the clock moving a second at most
    /// at a time.
    pub fn calm(replicas: usize) -> SharedConfig {
        SharedConfig {
            replicas: replicas.clamp(2, 4),
            latency: Duration::ZERO,
            lease: Duration::from_secs(15),
            max_step: Duration::from_secs(1),
        }
    }

    /// A provider slower than the lease (7 s against 5 s, within the 10-second request
    /// timeout): every refresh outlives its lock.
    pub fn slow(replicas: usize) -> SharedConfig {
        SharedConfig {
            replicas: replicas.clamp(2, 4),
            latency: Duration::from_secs(7),
            lease: Duration::from_secs(5),
            max_step: Duration::from_secs(3600),
        }
    }

    /// Any setup, chosen by one byte (how the fuzz target reads its first byte): 2 to 4
    /// replicas, a provider answering at once, in 2 s or in 7 s, a 15-second or a 5-second
    /// lease, any clock step.
    pub fn from_byte(byte: u8) -> SharedConfig {
        let latencies = [0, 2, 7];
        let leases = [15, 5];
        SharedConfig {
            replicas: 2 + usize::from(byte % 3),
            latency: Duration::from_secs(latencies[usize::from(byte / 3 % 3)]),
            lease: Duration::from_secs(leases[usize::from(byte / 9 % 2)]),
            max_step: Duration::from_secs(3600),
        }
    }

    /// The options every replica's session runs with.
    pub fn options(&self) -> SessionOptions {
        let mut options = SessionOptions::default();
        options.request_timeout = REQUEST_TIMEOUT;
        options.call_timeout = CALL_TIMEOUT;
        options.shared_refresh = true;
        options.lock_lease = self.lease;
        options.lock_retry = LOCK_RETRY;
        options
    }
}

/// One thing a caller, the store, the provider or the clock can do.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum SharedOp {
    /// A caller on a replica asks for valid tokens.
    Tokens {
        /// Replica index.
        replica: u8,
    },
    /// A caller on a replica asks for a refresh whatever the expiry.
    Refresh {
        /// Replica index.
        replica: u8,
    },
    /// A caller on a replica gives up on a call.
    Cancel {
        /// Replica index.
        replica: u8,
        /// Call index among the replica's calls.
        call: u8,
    },
    /// The store performs and answers one operation a replica asked for (the one that
    /// expects an answer, or a release of the lock).
    Store {
        /// Replica index among those with an operation outstanding.
        replica: u8,
        /// Operation index among the replica's outstanding ones.
        item: u8,
    },
    /// The provider answers a refresh request (any replica's, from the newest), after its
    /// latency.
    Answer {
        /// Request index, from the newest.
        request: u8,
        /// What it does.
        reply: ProviderReply,
    },
    /// A refresh request fails before it reaches the provider.
    Fail {
        /// Request index, from the newest.
        request: u8,
    },
    /// The clock moves forward (both clocks, by at most [`SharedConfig::max_step`]).
    Advance {
        /// How far, in milliseconds.
        millis: u32,
    },
    /// The store becomes unreachable: every operation fails until it is back.
    StoreDown,
    /// The store is reachable again.
    StoreUp,
    /// The user logs in again somewhere: tokens of a new grant replace the stored ones with
    /// a plain save.
    Relogin,
}

/// What the provider does with a refresh request.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ProviderReply {
    /// Its job: new tokens with a new refresh token living this long, or `invalid_grant`
    /// when the refresh token was used before.
    Grant(Lifetime),
    /// `503`: nothing happened.
    Unavailable,
}

// ----- the store -----

/// The store the replicas share: one token set, a fence counter and a refresh lock, as
/// `io-shared`'s `TokenStore` documents them.
#[derive(Debug, Clone)]
pub struct ModelStore {
    /// The stored tokens.
    pub tokens: Option<TokenSet>,
    /// The newest fence handed out or consumed by a plain write.
    pub counter: u64,
    /// The lock: its holder's fence and when its lease ends.
    pub lock: Option<(u64, Instant)>,
    /// Whether the store can be reached.
    pub up: bool,
}

impl ModelStore {
    /// A reachable store holding `tokens`.
    pub fn holding(tokens: Option<TokenSet>) -> ModelStore {
        ModelStore {
            tokens,
            counter: 0,
            lock: None,
            up: true,
        }
    }

    fn reach(&self) -> Result<(), StoreError> {
        if self.up {
            Ok(())
        } else {
            Err(StoreError::new("the store cannot be reached"))
        }
    }

    /// Reads the tokens.
    pub fn load(&self) -> Result<Option<TokenSet>, StoreError> {
        self.reach()?;
        Ok(self.tokens.clone())
    }

    /// Writes `tokens`, fencing out every lock taken before.
    pub fn save(&mut self, tokens: &TokenSet) -> Result<(), StoreError> {
        self.reach()?;
        self.tokens = Some(tokens.clone());
        self.counter += 1;
        Ok(())
    }

    /// Deletes the tokens, fencing out every lock taken before.
    pub fn delete(&mut self) -> Result<(), StoreError> {
        self.reach()?;
        self.tokens = None;
        self.counter += 1;
        Ok(())
    }

    /// Deletes the tokens if `fence` is the newest and nothing was written since:
    /// `Ok(false)`, nothing deleted, otherwise.
    pub fn delete_fenced(&mut self, fence: u64) -> Result<bool, StoreError> {
        self.reach()?;
        if self.counter != fence {
            return Ok(false);
        }
        self.tokens = None;
        self.counter += 1;
        Ok(true)
    }

    /// The fence of the lock's holder at `now`, if its lease runs.
    pub fn holder(&self, now: Instant) -> Option<u64> {
        self.lock
            .filter(|&(_, until)| until > now)
            .map(|(fence, _)| fence)
    }

    /// Takes the lock for `lease` unless someone holds it: the new fence, or `None`.
    pub fn lock(&mut self, now: Instant, lease: Duration) -> Result<Option<u64>, StoreError> {
        self.reach()?;
        if self.holder(now).is_some() {
            return Ok(None);
        }
        self.counter += 1;
        self.lock = Some((self.counter, now + lease));
        Ok(Some(self.counter))
    }

    /// Writes `tokens` if `fence` is still the newest fence: `Ok(false)` and nothing written
    /// otherwise.
    pub fn save_fenced(&mut self, tokens: &TokenSet, fence: u64) -> Result<bool, StoreError> {
        self.reach()?;
        if fence != self.counter {
            return Ok(false);
        }
        self.tokens = Some(tokens.clone());
        Ok(true)
    }

    /// Releases the lock if `fence` still holds it.
    pub fn unlock(&mut self, fence: u64) -> Result<(), StoreError> {
        self.reach()?;
        if self.lock.is_some_and(|(held, _)| held == fence) {
            self.lock = None;
        }
        Ok(())
    }
}

// ----- the provider -----

/// A provider that rotates refresh tokens: each refresh retires the token it was given and
/// issues `refresh-{n}`; a retired or unknown token gets `invalid_grant`.
#[derive(Debug, Clone, Default)]
pub struct ModelProvider {
    live: BTreeSet<String>,
    retired: BTreeSet<String>,
    issued: u32,
}

/// What the provider did with a refresh request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// Retired the refresh token and issued these (access, refresh) tokens.
    Rotated(String, String),
    /// Refused the refresh token.
    Refused,
}

impl ModelProvider {
    /// A provider that issued `refresh-0`.
    pub fn new() -> ModelProvider {
        let mut provider = ModelProvider::default();
        provider.live.insert("refresh-0".into());
        provider
    }

    /// Whether `refresh` is a refresh token the provider would honour.
    pub fn honours(&self, refresh: &str) -> bool {
        self.live.contains(refresh)
    }

    /// Whether `refresh` was retired by a refresh.
    pub fn retired(&self, refresh: &str) -> bool {
        self.retired.contains(refresh)
    }

    /// A new login: tokens of a new grant, valid for an hour from `wall`.
    pub fn login(&mut self, wall: SystemTime) -> TokenSet {
        let (access, refresh) = self.issue();
        tokens(&access, &refresh, wall + Duration::from_secs(3600))
    }

    /// Handles a refresh with `refresh`, answering with tokens that live `lifetime`: what it
    /// did and the literal response bytes.
    pub fn refresh(&mut self, refresh: Option<&str>, lifetime: Lifetime) -> (Refreshed, Vec<u8>) {
        let Some(refresh) = refresh.filter(|refresh| self.live.remove(*refresh)) else {
            let refused = json_response(400, r#"{"error":"invalid_grant"}"#);
            return (Refreshed::Refused, refused);
        };
        self.retired.insert(refresh.to_owned());
        let (access, refresh) = self.issue();
        let mut body = format!(
            r#"{{"access_token":"{access}","token_type":"Bearer","refresh_token":"{refresh}""#
        );
        match lifetime {
            Lifetime::Expired => body.push_str(r#","expires_in":0"#),
            Lifetime::Short => body.push_str(r#","expires_in":30"#),
            Lifetime::Hour => body.push_str(r#","expires_in":3600"#),
            Lifetime::Unknown => {}
        }
        body.push('}');
        (
            Refreshed::Rotated(access, refresh),
            json_response(200, &body),
        )
    }

    fn issue(&mut self) -> (String, String) {
        self.issued += 1;
        let n = self.issued;
        let refresh = format!("refresh-{n}");
        self.live.insert(refresh.clone());
        (format!("access-{n}"), refresh)
    }
}

/// A provider for the sessions (the model provider's answers carry no ID token).
pub fn provider() -> Provider {
    Provider::builder(
        "https://idp.example/authorize",
        "https://idp.example/token",
        "replicas",
    )
    .client_secret(SecretString::from("replica-secret"))
    .client_auth(ClientAuth::SecretPost)
    .build()
    .expect("a valid provider")
}

/// A token set: `access`, `refresh`, expiring at `expires`.
pub fn tokens(access: &str, refresh: &str, expires: SystemTime) -> TokenSet {
    TokenSet::new(SecretString::from(access))
        .with_refresh_token(SecretString::from(refresh))
        .with_expires_at(expires)
}

fn refresh_of(tokens: &TokenSet) -> Option<String> {
    tokens
        .refresh_token()
        .map(|secret| secret.expose_secret().to_owned())
}

/// Whether two token sets are the same tokens.
fn same(a: &TokenSet, b: &TokenSet) -> bool {
    a.access_token().expose_secret() == b.access_token().expose_secret()
        && refresh_of(a) == refresh_of(b)
}

// ----- the replicas -----

/// A store operation a replica asked for that expects an answer.
#[derive(Debug, Clone)]
enum Asked {
    Load(StoreOpId),
    Save(StoreOpId, TokenSet),
    SaveFenced(StoreOpId, TokenSet, u64),
    Lock(StoreOpId, Duration),
    DeleteFenced(StoreOpId, u64),
}

#[derive(Debug, Clone)]
struct Replica {
    session: Session,
    /// The store operation it waits for.
    asked: Option<Asked>,
    /// Lock releases asked for and not performed yet.
    unlocks: Vec<u64>,
    /// The fence of the lock it took, until it asks to release it.
    holding: Option<u64>,
    /// Calls made, and whether each was answered.
    calls: BTreeMap<CallId, bool>,
    call_order: Vec<CallId>,
    /// The refresh token the provider last refused this replica.
    refused: Option<String>,
}

/// A refresh request sent and not answered yet.
#[derive(Debug, Clone)]
struct Outstanding {
    replica: usize,
    id: RequestId,
    refresh: Option<String>,
    /// When its session stops waiting for it.
    deadline: Instant,
}

/// Replicas driven by [`SharedOp`]s with every rule checked.
#[derive(Debug, Clone)]
pub struct SharedSim {
    config: SharedConfig,
    start: Instant,
    start_wall: SystemTime,
    now: Instant,
    /// The shared store.
    pub store: ModelStore,
    /// The provider.
    pub provider: ModelProvider,
    replicas: Vec<Replica>,
    requests: Vec<Outstanding>,
    /// The replica being drained.
    current: usize,
    /// Actions since the last [`SharedSim::apply`] returned, with their replica.
    log: Vec<(usize, SessionAction)>,
    /// A lease ran out while its holder still worked under it.
    lapsed: bool,
    /// A save or delete failed in the store.
    write_failed: bool,
    /// The provider rotated a refresh token for a request its session no longer waited for.
    answer_lost: bool,
    refresh_requests: usize,
}

impl SharedSim {
    /// `config.replicas` replicas over a store holding `access-0`/`refresh-0`, which expire
    /// in [`FIRST_LIFETIME`] (inside the margin).
    pub fn new(config: SharedConfig) -> SharedSim {
        let config = SharedConfig {
            replicas: config.replicas.clamp(2, 4),
            ..config
        };
        let options = config.options();
        let start_wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let first = tokens("access-0", "refresh-0", start_wall + FIRST_LIFETIME);
        let replica = Replica {
            session: Session::with_options(provider(), options).expect("valid options"),
            asked: None,
            unlocks: Vec::new(),
            holding: None,
            calls: BTreeMap::new(),
            call_order: Vec::new(),
            refused: None,
        };
        let start = Instant::now();
        SharedSim {
            config,
            start,
            start_wall,
            now: start,
            store: ModelStore::holding(Some(first)),
            provider: ModelProvider::new(),
            replicas: vec![replica; config.replicas],
            requests: Vec::new(),
            current: 0,
            log: Vec::new(),
            lapsed: false,
            write_failed: false,
            answer_lost: false,
            refresh_requests: 0,
        }
    }

    /// The setup.
    pub fn config(&self) -> SharedConfig {
        self.config
    }

    /// The virtual monotonic clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The wall-clock time that goes with [`now`](SharedSim::now).
    pub fn wall(&self) -> SystemTime {
        self.start_wall + self.now.duration_since(self.start)
    }

    /// Replica `replica`'s session.
    pub fn session(&self, replica: usize) -> &Session {
        &self.replicas[replica].session
    }

    /// Refresh requests sent so far, by all replicas.
    pub fn refresh_requests(&self) -> usize {
        self.refresh_requests
    }

    /// Whether a lease lapsed under its holder, a write failed, or the provider rotated a
    /// refresh token for a request nobody waited for: the rules that need none of these
    /// (no "login required", each refresh token used once) are off from then on.
    pub fn disturbed(&self) -> bool {
        self.lapsed || self.write_failed || self.answer_lost
    }

    /// Whether a lease lapsed while its holder still worked under it.
    pub fn lapsed(&self) -> bool {
        self.lapsed
    }

    /// Calls made and not answered, with their replica.
    pub fn unanswered(&self) -> Vec<(usize, CallId)> {
        self.replicas
            .iter()
            .enumerate()
            .flat_map(|(r, replica)| {
                replica
                    .calls
                    .iter()
                    .filter(|(_, answered)| !**answered)
                    .map(move |(call, _)| (r, *call))
            })
            .collect()
    }

    /// Whether replica `r` waits for the store or a release of its is to be performed.
    pub fn waits_for_store(&self, r: usize) -> bool {
        let replica = &self.replicas[r];
        replica.asked.is_some() || !replica.unlocks.is_empty()
    }

    /// Whether any replica waits for the store or a release is to be performed.
    pub fn store_pending(&self) -> bool {
        (0..self.replicas.len()).any(|r| self.waits_for_store(r))
    }

    /// Refresh requests not answered yet.
    pub fn requests_pending(&self) -> usize {
        self.requests.len()
    }

    /// Applies `op`, drains every session and checks what they did. Returns the actions
    /// with their replica, or the first rule broken.
    pub fn apply(&mut self, op: &SharedOp) -> Result<Vec<(usize, SessionAction)>, String> {
        match *op {
            SharedOp::Tokens { replica } => {
                let r = self.index(replica);
                let call = self.replicas[r].session.tokens(self.now);
                self.made(r, call)?;
            }
            SharedOp::Refresh { replica } => {
                let r = self.index(replica);
                let call = self.replicas[r].session.refresh(self.now);
                self.made(r, call)?;
            }
            SharedOp::Cancel { replica, call } => {
                let r = self.index(replica);
                if let Some(call) = pick(&self.replicas[r].call_order, call) {
                    self.replicas[r].session.cancel(self.now, call);
                }
            }
            SharedOp::Store { replica, item } => {
                let waiting: Vec<usize> = (0..self.replicas.len())
                    .filter(|&r| self.waits_for_store(r))
                    .collect();
                if let Some(r) = pick(&waiting, replica) {
                    self.perform(r, item)?;
                }
            }
            SharedOp::Answer { request, reply } => self.answer(request, reply)?,
            SharedOp::Fail { request } => {
                if let Some(out) = self.take_request(request) {
                    let error = TransportError::new(TransportErrorKind::Connect, "refused");
                    self.replicas[out.replica]
                        .session
                        .handle_failure(self.now, out.id, error);
                }
            }
            SharedOp::Advance { millis } => {
                let by = Duration::from_millis(u64::from(millis)).min(self.config.max_step);
                self.advance(by)?;
            }
            SharedOp::StoreDown => self.store.up = false,
            SharedOp::StoreUp => self.store.up = true,
            SharedOp::Relogin => {
                let fresh = self.provider.login(self.wall());
                // A login elsewhere that cannot reach the store stores nothing.
                let _ = self.store.save(&fresh);
            }
        }
        self.drain_all()?;
        Ok(std::mem::take(&mut self.log))
    }

    /// Finishes everything: the store comes back and answers, outstanding requests fail,
    /// time runs on until nothing is left. Then every session must be idle, every call
    /// answered, every lock released, and, in an undisturbed run, the store must hold
    /// tokens the provider honours.
    pub fn settle(&mut self) -> Result<(), String> {
        self.store.up = true;
        for _ in 0..100_000 {
            if self.store_pending() {
                self.apply(&SharedOp::Store {
                    replica: 0,
                    item: 0,
                })?;
            } else if !self.requests.is_empty() {
                self.apply(&SharedOp::Fail { request: 0 })?;
            } else if let Some(at) = self.next_timeout() {
                self.advance(at.saturating_duration_since(self.now))?;
                self.drain_all()?;
                self.log.clear();
            } else {
                break;
            }
        }
        for (r, replica) in self.replicas.iter().enumerate() {
            if !replica.session.is_idle() {
                return Err(format!("replica {r} is still busy after everything ended"));
            }
            if let Some(fence) = replica.holding {
                return Err(format!(
                    "replica {r} never released the lock it took with fence {fence}"
                ));
            }
        }
        if let [(r, call), ..] = self.unanswered()[..] {
            return Err(format!("call {call} on replica {r} was never answered"));
        }
        if !self.disturbed() {
            let stored = self.store.tokens.as_ref().and_then(refresh_of);
            if !stored.as_deref().is_some_and(|t| self.provider.honours(t)) {
                return Err(format!(
                    "undisturbed, and yet the login is lost: the store holds refresh token \
                     {stored:?}, which the provider does not honour"
                ));
            }
        }
        Ok(())
    }

    fn index(&self, replica: u8) -> usize {
        usize::from(replica) % self.replicas.len()
    }

    fn made(&mut self, r: usize, call: CallId) -> Result<(), String> {
        let replica = &mut self.replicas[r];
        if replica.calls.insert(call, false).is_some() {
            return Err(format!("call id {call} issued twice on replica {r}"));
        }
        replica.call_order.push(call);
        Ok(())
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.replicas
            .iter()
            .filter_map(|replica| replica.session.poll_timeout())
            .min()
    }

    /// The request `index` names among those outstanding, from the newest.
    fn take_request(&mut self, index: u8) -> Option<Outstanding> {
        let len = self.requests.len();
        if len == 0 {
            return None;
        }
        let at = len - 1 - usize::from(index) % len;
        Some(self.requests.remove(at))
    }

    /// The store performs operation `item` of replica `r` and answers it.
    fn perform(&mut self, r: usize, item: u8) -> Result<(), String> {
        let now = self.now;
        let wall = self.wall();
        let replica = &mut self.replicas[r];
        let answerable = usize::from(replica.asked.is_some());
        let count = answerable + replica.unlocks.len();
        if count == 0 {
            return Ok(());
        }
        let at = usize::from(item) % count;
        if at >= answerable {
            let fence = replica.unlocks.remove(at - answerable);
            // A release the store cannot perform leaves the lock to its lease.
            let _ = self.store.unlock(fence);
            return Ok(());
        }
        let Some(asked) = replica.asked.take() else {
            return Ok(());
        };
        match asked {
            Asked::Load(op) => {
                let result = self.store.load();
                self.replicas[r]
                    .session
                    .handle_loaded(now, wall, op, result);
            }
            Asked::Save(op, tokens) => {
                let result = self.store.save(&tokens);
                self.write_failed |= result.is_err();
                self.replicas[r].session.handle_saved(now, wall, op, result);
            }
            Asked::SaveFenced(op, tokens, fence) => {
                let newest = self.store.counter;
                let result = self.store.save_fenced(&tokens, fence);
                if result == Ok(true) && fence != newest {
                    return Err(format!(
                        "a fenced save with stale fence {fence} (newest {newest}) was written"
                    ));
                }
                self.write_failed |= result.is_err();
                self.replicas[r]
                    .session
                    .handle_saved_fenced(now, op, result);
            }
            Asked::Lock(op, lease) => {
                let before = self.store.counter;
                let result = self.store.lock(now, lease);
                if let Ok(Some(fence)) = result {
                    if fence <= before {
                        return Err(format!("fence {fence} handed out again"));
                    }
                    self.replicas[r].holding = Some(fence);
                }
                self.replicas[r].session.handle_locked(now, op, result);
            }
            Asked::DeleteFenced(op, fence) => {
                let stored = self.store.tokens.as_ref().and_then(refresh_of);
                let result = self.store.delete_fenced(fence);
                let deleted = matches!(result, Ok(true));
                // A provider's answer the session gave up on may have retired the stored
                // refresh token (a disturbed run): deleting it then is right, whatever this
                // replica's own refusal was.
                if deleted
                    && stored.is_some()
                    && stored != self.replicas[r].refused
                    && !self.disturbed()
                {
                    return Err(format!(
                        "replica {r} deletes the stored tokens (refresh token {stored:?}) \
                         under fence {fence}, but the provider refused {:?}",
                        self.replicas[r].refused
                    ));
                }
                self.write_failed |= result.is_err();
                self.replicas[r]
                    .session
                    .handle_deleted_fenced(now, op, result);
            }
        }
        Ok(())
    }

    /// The provider answers request `index` after its latency.
    fn answer(&mut self, index: u8, reply: ProviderReply) -> Result<(), String> {
        if self.requests.is_empty() {
            return Ok(());
        }
        if !self.config.latency.is_zero() {
            self.advance(self.config.latency)?;
        }
        let Some(out) = self.take_request(index) else {
            return Ok(());
        };
        let raw = match reply {
            ProviderReply::Grant(lifetime) => {
                let (did, raw) = self.provider.refresh(out.refresh.as_deref(), lifetime);
                match did {
                    Refreshed::Rotated(..) if out.deadline <= self.now => self.answer_lost = true,
                    Refreshed::Refused => self.replicas[out.replica].refused = out.refresh,
                    Refreshed::Rotated(..) => {}
                }
                raw
            }
            ProviderReply::Unavailable => b"HTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n".to_vec(),
        };
        let (now, wall) = (self.now, self.wall());
        self.replicas[out.replica]
            .session
            .handle_response(now, wall, out.id, parse_response(&raw));
        Ok(())
    }

    /// Moves both clocks `by`, stopping at every deadline on the way so that each fires at
    /// its instant, and notes a lease that ran out under its holder.
    fn advance(&mut self, by: Duration) -> Result<(), String> {
        let target = self.now + by;
        while let Some(at) = self.next_timeout().filter(|at| *at <= target) {
            self.move_clock(at)?;
        }
        self.move_clock(target)
    }

    fn move_clock(&mut self, at: Instant) -> Result<(), String> {
        let at = at.max(self.now);
        // Before the deadlines due now fire: a lease that ended earlier lapsed.
        self.note_lapse(|until| until < at);
        self.now = at;
        for r in 0..self.replicas.len() {
            self.replicas[r].session.handle_timeout(at);
        }
        self.drain_all()?;
        // A lease that ends now, its holder still holding, is free for anyone from now.
        self.note_lapse(|until| until <= at);
        Ok(())
    }

    fn note_lapse(&mut self, over: impl Fn(Instant) -> bool) {
        if let Some((fence, until)) = self.store.lock {
            let held = self
                .replicas
                .iter()
                .any(|replica| replica.holding == Some(fence));
            if held && over(until) {
                self.lapsed = true;
            }
        }
    }

    fn drain_all(&mut self) -> Result<(), String> {
        for r in 0..self.replicas.len() {
            self.current = r;
            let now = self.now;
            let actions = drain_checked(
                self,
                now,
                |sim| &mut sim.replicas[sim.current].session,
                SharedSim::check,
            )
            .map_err(|violation| format!("replica {r}: {violation}"))?;
            self.log
                .extend(actions.into_iter().map(|action| (r, action)));
        }
        Ok(())
    }

    /// Replica `r` asks the store for `asked`: one such operation at a time.
    fn ask(&mut self, r: usize, asked: Asked) -> Result<(), String> {
        let replica = &mut self.replicas[r];
        if let Some(before) = &replica.asked {
            return Err(format!(
                "{asked:?} while {before:?} is under way: one store operation at a time"
            ));
        }
        replica.asked = Some(asked);
        Ok(())
    }

    /// Checks one action of the replica being drained.
    fn check(&mut self, action: &SessionAction) -> Result<(), String> {
        let r = self.current;
        let now = self.now;
        match action {
            SessionAction::Load { op } => self.ask(r, Asked::Load(*op))?,
            SessionAction::Lock { op, lease } => {
                if *lease != self.config.lease {
                    return Err(format!("a lock for {lease:?}, not the configured lease"));
                }
                if let Some(fence) = self.replicas[r].holding {
                    return Err(format!(
                        "asks for the lock while holding it (fence {fence})"
                    ));
                }
                self.ask(r, Asked::Lock(*op, *lease))?;
            }
            SessionAction::Save { op, tokens, reason } => {
                if *reason != SaveReason::Kept {
                    return Err(format!("saves {reason:?} tokens without the lock's fence"));
                }
                self.ask(r, Asked::Save(*op, tokens.clone()))?;
            }
            SessionAction::SaveFenced {
                op,
                tokens,
                reason,
                fence,
            } => {
                let holding = self.replicas[r].holding;
                if holding != Some(*fence) {
                    return Err(format!(
                        "a fenced save with fence {fence} while holding {holding:?}"
                    ));
                }
                if !matches!(reason, SaveReason::Refreshed { .. }) {
                    return Err(format!("a fenced save of {reason:?} tokens"));
                }
                self.ask(r, Asked::SaveFenced(*op, tokens.clone(), *fence))?;
            }
            SessionAction::Unlock { fence } => {
                let replica = &mut self.replicas[r];
                if replica.holding != Some(*fence) {
                    return Err(format!(
                        "releases fence {fence} while holding {:?}",
                        replica.holding
                    ));
                }
                replica.holding = None;
                replica.unlocks.push(*fence);
            }
            SessionAction::Delete { reason, .. } => {
                return Err(format!(
                    "a deletion for {reason:?} without the lock's fence"
                ));
            }
            SessionAction::DeleteFenced { op, reason, fence } => {
                if *reason != DeleteReason::LoginRequired {
                    return Err(format!("a fenced deletion for {reason:?}"));
                }
                let holding = self.replicas[r].holding;
                if holding != Some(*fence) {
                    return Err(format!(
                        "a fenced deletion with fence {fence} while holding {holding:?}"
                    ));
                }
                self.ask(r, Asked::DeleteFenced(*op, *fence))?;
            }
            SessionAction::Send {
                id,
                purpose,
                request,
            } => {
                if *purpose != Purpose::Refresh {
                    return Err(format!("a {purpose:?} request"));
                }
                let holding = self.replicas[r].holding;
                let holder = self.store.holder(now);
                if holding.is_none() || holding != holder {
                    return Err(format!(
                        "a refresh request without the lock: holding {holding:?}, the store's \
                         live lock {holder:?} (S57, S58)"
                    ));
                }
                let body = String::from_utf8_lossy(request.request().body());
                let refresh = query_value(&body, "refresh_token");
                let twin = self
                    .requests
                    .iter()
                    .find(|out| out.deadline > now && out.refresh == refresh);
                if let Some(twin) = twin.filter(|_| !self.lapsed) {
                    return Err(format!(
                        "a second refresh request with {refresh:?} while replica {}'s is in \
                         flight, no lease having lapsed",
                        twin.replica
                    ));
                }
                let retired = refresh.as_deref().is_some_and(|t| self.provider.retired(t));
                if retired && !self.disturbed() {
                    return Err(format!(
                        "a refresh request with {refresh:?}, which an earlier refresh retired"
                    ));
                }
                self.refresh_requests += 1;
                self.requests.push(Outstanding {
                    replica: r,
                    id: *id,
                    refresh,
                    deadline: now + REQUEST_TIMEOUT,
                });
            }
            SessionAction::Tokens { call, result } => {
                match self.replicas[r].calls.get_mut(call) {
                    None => return Err(format!("an answer to call {call}, never made")),
                    Some(true) => return Err(format!("call {call} answered twice")),
                    Some(answered) => *answered = true,
                }
                match result {
                    Ok(tokens) => {
                        if !self.store.tokens.as_ref().is_some_and(|s| same(s, tokens)) {
                            return Err(format!("call {call} got tokens the store does not hold"));
                        }
                    }
                    Err(error) if error.login_required() && !self.disturbed() => {
                        return Err(format!(
                            "call {call} told to log in again ({error}) in an undisturbed run"
                        ));
                    }
                    Err(_) => {}
                }
            }
            other => return Err(format!("an action the model does not expect: {other:?}")),
        }
        Ok(())
    }
}

/// Applies every op to fresh replicas set up by `config`, then settles: the first broken
/// rule, with the op that broke it.
pub fn run_shared(config: SharedConfig, ops: &[SharedOp]) -> Result<(), String> {
    let mut sim = SharedSim::new(config);
    for (i, op) in ops.iter().enumerate() {
        sim.apply(op)
            .map_err(|violation| format!("{violation} after op {i} ({op:?})"))?;
    }
    sim.settle()
        .map_err(|violation| format!("settling: {violation}"))
}

/// The issue's target: `calls[r]` calls for tokens (1 to 10 each) on each replica at once,
/// all finding the stored tokens inside the margin; then the store and the provider answer
/// whatever is outstanding in the order `schedule` picks (the clock moving only when nothing
/// is outstanding, so no lease lapses). Exactly one refresh request must be sent, and every
/// call must get the tokens it brought.
pub fn all_at_once(calls: &[u8], schedule: &[u8]) -> Result<(), String> {
    let replicas = calls.len().clamp(2, 4);
    let mut sim = SharedSim::new(SharedConfig::calm(replicas));
    let mut made = 0;
    for r in 0..replicas {
        let count = 1 + calls.get(r).copied().unwrap_or(0) % 10;
        for _ in 0..count {
            sim.apply(&SharedOp::Tokens { replica: r as u8 })?;
            made += 1;
        }
    }
    let mut served = 0;
    let mut picks = schedule.iter().copied().cycle();
    for _ in 0..100_000 {
        let store_items = (0..replicas).filter(|&r| sim.waits_for_store(r)).count();
        let choices = store_items + sim.requests.len();
        let actions = if choices == 0 {
            let Some(at) = sim.next_timeout() else {
                break;
            };
            let millis = at.saturating_duration_since(sim.now).as_millis();
            sim.apply(&SharedOp::Advance {
                millis: u32::try_from(millis).unwrap_or(u32::MAX),
            })?
        } else {
            let pick = usize::from(picks.next().unwrap_or(0)) % choices;
            let op = if pick < store_items {
                SharedOp::Store {
                    replica: pick as u8,
                    item: picks.next().unwrap_or(0),
                }
            } else {
                SharedOp::Answer {
                    request: (pick - store_items) as u8,
                    reply: ProviderReply::Grant(Lifetime::Hour),
                }
            };
            sim.apply(&op)?
        };
        for (r, action) in actions {
            if let SessionAction::Tokens { call, result } = action {
                match result {
                    Ok(tokens) if tokens.access_token().expose_secret() == "access-1" => {
                        served += 1;
                    }
                    other => return Err(format!("call {call} on replica {r} got {other:?}")),
                }
            }
        }
    }
    if sim.refresh_requests != 1 {
        return Err(format!(
            "{made} calls on {replicas} replicas made {} refresh requests",
            sim.refresh_requests
        ));
    }
    if served != made {
        return Err(format!("{served} of {made} calls served"));
    }
    sim.settle()
}

// ----- generating operations -----

/// How a case's setup and operations are drawn.
pub trait Mix: Clone + fmt::Debug + Send + 'static {
    /// The setup.
    fn config(g: &mut Gen) -> SharedConfig;
    /// One operation.
    fn op(g: &mut Gen) -> SharedOp;
}

/// Anything: any setup, any clock step, the store going down and up.
#[derive(Debug, Clone)]
pub struct AnyMix;

/// A calm run ([`SharedConfig::calm`]): the store always up, the clock moving a second at
/// most at a time.
#[derive(Debug, Clone)]
pub struct CalmMix;

/// The store often unreachable (S58).
#[derive(Debug, Clone)]
pub struct OutageMix;

/// A provider slower than the lease ([`SharedConfig::slow`]): every refresh outlives its
/// lock.
#[derive(Debug, Clone)]
pub struct SlowMix;

fn replicas(g: &mut Gen) -> usize {
    2 + usize::from(u8::arbitrary(g) % 3)
}

/// The common weighting: often enough refreshes, late answers and lock contention.
fn any_op(g: &mut Gen) -> SharedOp {
    let replica = u8::arbitrary(g);
    let index = |g: &mut Gen| u8::arbitrary(g) % 4;
    match u8::arbitrary(g) % 32 {
        0..=6 => SharedOp::Tokens { replica },
        7..=8 => SharedOp::Refresh { replica },
        9 => SharedOp::Cancel {
            replica,
            call: u8::arbitrary(g),
        },
        10..=20 => SharedOp::Store {
            replica,
            item: index(g),
        },
        21..=25 => SharedOp::Answer {
            request: index(g),
            reply: ProviderReply::arbitrary(g),
        },
        26 => SharedOp::Fail { request: index(g) },
        27..=29 => SharedOp::Advance {
            millis: *g
                .choose(&[
                    1, 500, 1_000, 4_999, 5_000, 7_000, 10_000, 15_000, 31_000, 3_600_000,
                ])
                .unwrap_or(&1),
        },
        30 => {
            if bool::arbitrary(g) {
                SharedOp::StoreDown
            } else {
                SharedOp::StoreUp
            }
        }
        _ => {
            if u8::arbitrary(g) % 4 == 0 {
                SharedOp::Relogin
            } else {
                SharedOp::StoreUp
            }
        }
    }
}

impl Mix for AnyMix {
    fn config(g: &mut Gen) -> SharedConfig {
        SharedConfig::from_byte(u8::arbitrary(g))
    }

    fn op(g: &mut Gen) -> SharedOp {
        any_op(g)
    }
}

impl Mix for CalmMix {
    fn config(g: &mut Gen) -> SharedConfig {
        SharedConfig::calm(replicas(g))
    }

    fn op(g: &mut Gen) -> SharedOp {
        match any_op(g) {
            SharedOp::StoreDown => SharedOp::StoreUp,
            op => op,
        }
    }
}

impl Mix for OutageMix {
    fn config(g: &mut Gen) -> SharedConfig {
        SharedConfig::from_byte(u8::arbitrary(g))
    }

    fn op(g: &mut Gen) -> SharedOp {
        match u8::arbitrary(g) % 8 {
            0 => SharedOp::StoreDown,
            1 => SharedOp::StoreUp,
            _ => any_op(g),
        }
    }
}

impl Mix for SlowMix {
    fn config(g: &mut Gen) -> SharedConfig {
        SharedConfig::slow(replicas(g))
    }

    fn op(g: &mut Gen) -> SharedOp {
        any_op(g)
    }
}

/// A setup and the operations to run on it, drawn by `M`.
#[derive(Clone)]
pub struct Case<M> {
    /// The setup.
    pub config: SharedConfig,
    /// The operations.
    pub ops: Vec<SharedOp>,
    mix: PhantomData<M>,
}

impl<M> Case<M> {
    /// [`run_shared`] on this case.
    pub fn run(&self) -> Result<(), String> {
        run_shared(self.config, &self.ops)
    }
}

impl<M> fmt::Debug for Case<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("config", &self.config)
            .field("ops", &self.ops)
            .finish()
    }
}

impl<M: Mix> Arbitrary for Case<M> {
    fn arbitrary(g: &mut Gen) -> Case<M> {
        let len = usize::arbitrary(g) % (g.size() + 1);
        Case {
            config: M::config(g),
            ops: (0..len).map(|_| M::op(g)).collect(),
            mix: PhantomData,
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Case<M>>> {
        let config = self.config;
        Box::new(self.ops.shrink().map(move |ops| Case {
            config,
            ops,
            mix: PhantomData,
        }))
    }
}

impl Arbitrary for SharedOp {
    fn arbitrary(g: &mut Gen) -> SharedOp {
        any_op(g)
    }
}

impl Arbitrary for ProviderReply {
    fn arbitrary(g: &mut Gen) -> ProviderReply {
        let lifetime = *g
            .choose(&[
                Lifetime::Expired,
                Lifetime::Short,
                Lifetime::Hour,
                Lifetime::Hour,
                Lifetime::Unknown,
            ])
            .unwrap_or(&Lifetime::Hour);
        if u8::arbitrary(g) % 5 == 0 {
            ProviderReply::Unavailable
        } else {
            ProviderReply::Grant(lifetime)
        }
    }
}
