//! Replicas behind a load balancer sharing pending logins through a flow directory, and the
//! directory's rules (S54–S58) checked after every step.
//!
//! [`DirectorySim`] runs [`REPLICAS`] engines of one configuration with the flow directory
//! on (a web backend's redirect URI, or loopback listeners on one port: [`Deployment`]), a
//! model directory they share, a token store, the provider and one clock. The directory
//! takes atomically (the record is replaced by a "used" mark in the same step, an "ended"
//! mark stays), forgets entries at their expiry by the model clock, and can be down (every
//! operation then fails, nothing changes). A [`DirectoryOp`] names its target by index, so
//! any sequence of ops is meaningful: logins started on any replica, shared or not, for
//! an owner or not; the provider's callback (a code, an error, a foreign `iss`, a forged
//! state; again and again) delivered to one replica or to several before any take is
//! answered, forwarded as a query or a URI or, on loopback, as a browser's connection
//! split in two; shares and takes answered in any order and late, the directory up or
//! down, records returned stale, foreign, unreadable or with another verifier; token
//! requests answered with tokens, `invalid_grant` or a transport failure; stores
//! confirming or failing; cancellations; "ended" marks and announcements delivered,
//! dropped or lost; time moving as a punctual or a sleepy driver wakes.
//!
//! The rules:
//!
//! - **one token request per login, across replicas (S54):** at most one token request per
//!   `state`, ever, on all replicas together;
//! - **no token request without a taken record (S58):** a shared login's token request
//!   comes from the replica where a take of its record just returned the record, for the
//!   flow that took it, with the record's verifier (whatever the record says, when it is
//!   well-formed); a callback for a shared login never goes straight to the token
//!   endpoint, not even on the replica that started it;
//! - **expired records are refused (S56):** a record returned past its deadline (the
//!   directory ignoring its own expiry) ends the adopting flow with
//!   [`DirectoryError::Expired`], without a token request; a record's deadline is the wall
//!   clock at the start plus the flow lifetime, and it is shared for that lifetime;
//! - **what a take answers decides (S58):** "used", "ended" and nothing end the adopting
//!   flow with the matching refusal (the replica that started the login keeps waiting for
//!   the outcome); an unreachable directory (or one that does not answer within the
//!   exchange timeout) answers the browser `503` and ends the adopting flow with
//!   [`DirectoryError::Unavailable`] (or a directory timeout), and the login's flow keeps
//!   waiting: nothing is taken, so the same callback works later; a foreign or unreadable
//!   record ends the adopting flow with that error;
//! - **the callback goes where the rules say:** a login the replica started and not shared
//!   is judged at once; a shared login the replica started and that still waits, or a state
//!   the replica holds nothing for (or has forgotten, a flow lifetime after it was spent),
//!   is adopted by a new flow that takes the record; a state the replica spent is refused;
//!   a take's key is the login's;
//! - **the replica that started a login learns its outcome:** an adopting flow that read its
//!   record announces how it ended (`stored` only once the store confirmed, or the error's
//!   text) and no other flow announces; a login started on the adopting replica itself
//!   finishes at once with the very same result; an announcement delivered to the replica
//!   that holds the login ([`Engine::shared_flow`], which names exactly its shared flows
//!   still in progress) finishes it at once with that outcome; an announcement for a key
//!   nobody holds changes nothing;
//! - **"ended" marks:** a replica's own shared login that ends other than by its outcome
//!   (deadline, cancel, a newer login, a failed share) leaves an "ended" mark
//!   ([`Action::SpendFlow`]), and only such a login does;
//! - **shares:** a shared start emits the record and no browser; the browser is opened
//!   only once the directory confirmed, never after a failed share (which ends the login);
//!   the record is what the login needs (client, token endpoint, redirect URI, verifier,
//!   owner, deadline), and the actions' `Debug` never shows the verifier (S55);
//! - each flow finishes exactly once, as the model expects, and nothing names it after;
//!   deadlines fire when due (and not before); a connection is answered once, with `503`
//!   exactly when the directory could not be asked; late answers change nothing; waking
//!   late gives the same actions as waking on time; after `handle_timeout(now)`,
//!   [`poll_timeout`](Engine::poll_timeout) is later than `now`; after two idle hours
//!   every engine is idle (no flow, no timer, no connection); nothing panics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latchkey::directory::{Announcement, DirectoryError, FlowKey, FlowRecord, Outcome, Taken};
use latchkey::{
    Action, Config, ConnId, Engine, ExchangeId, FlowError, FlowId, FlowOptions, Rejection, Step,
    StoreError, TakeId, TokenSet, TransportError, TransportErrorKind,
};
use quickcheck::{Arbitrary, Gen};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::harness::{
    self, chromium_get, drain_checked, entropy_from, json_response, parse_response, query_value,
};
use crate::model::fingerprint;

/// How many engines share the directory.
pub const REPLICAS: usize = 3;
/// The redirect URI of the web deployment.
pub const WEB_REDIRECT_URI: &str = "https://app.example/callback";
/// The engines' exchange timeout: how long a share, a take, a token request or a store
/// may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The engines' flow lifetime, and the records'.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(600);
/// The longest [`DirectoryOp::Advance`], in milliseconds.
pub const MAX_ADVANCE_MILLIS: u32 = 20 * 60 * 1000;
/// A well-formed PKCE verifier no login has: what [`Tamper::Verifier`] writes.
pub const TAMPERED_VERIFIER: &str = "tamperedtamperedtamperedtamperedtampered123";
/// The code every callback carries.
pub const CODE: &str = "c0de";
/// The owners logins may be started for.
const OWNERS: [Option<&str>; 3] = [None, Some("alice"), Some("bob")];
/// The `iss` of the test provider, form-encoded.
const ISS: &str = "iss=https%3A%2F%2Fidp.example";
/// Where the token store keeps the tokens of a login without an owner.
const NO_OWNER: &str = "default";

/// Where the provider sends the browser back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Deployment {
    /// A web backend at [`WEB_REDIRECT_URI`]: callbacks are handed to
    /// [`Engine::handle_redirect`].
    Web,
    /// Loopback listeners on `127.0.0.1:8080` (the same port on every replica): callbacks
    /// arrive as browser connections, or forwarded.
    Loopback,
}

impl Deployment {
    /// The configuration every replica shares: the test provider ([`harness::provider`]),
    /// this redirect URI, the flow directory on, [`EXCHANGE_TIMEOUT`], [`FLOW_LIFETIME`].
    pub fn config(self) -> Config {
        self.config_of(harness::provider().build().expect("a valid provider"))
    }

    /// [`config`](Deployment::config) with logins DPoP-bound (ES256, RFC 9449): each
    /// login's key travels in its record.
    pub fn dpop_config(self) -> Config {
        let provider = harness::provider()
            .dpop(latchkey::crypto::Algorithm::ES256)
            .crypto(latchkey_io::crypto::ring())
            .build()
            .expect("a valid DPoP provider");
        self.config_of(provider)
    }

    fn config_of(self, provider: latchkey::Provider) -> Config {
        let builder = match self {
            Deployment::Web => Config::builder(provider).web_redirect_uri(WEB_REDIRECT_URI),
            Deployment::Loopback => harness::config_with(provider),
        };
        builder
            .flow_directory(true)
            .exchange_timeout(EXCHANGE_TIMEOUT)
            .flow_lifetime(FLOW_LIFETIME)
            .build()
            .expect("a valid configuration")
    }

    /// The redirect URI.
    pub fn redirect_uri(self) -> &'static str {
        match self {
            Deployment::Web => WEB_REDIRECT_URI,
            Deployment::Loopback => harness::REDIRECT_URI,
        }
    }
}

// ----- operations -----

/// One thing the application, the browser, the directory, the provider, the store or the
/// clock can do.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DirectoryOp {
    /// A replica starts a login for one of three owners (the first is none), shared
    /// through the directory or not; the owner's login in progress there is superseded.
    Start {
        /// The replica.
        replica: u8,
        /// Index into `[none, alice, bob]`.
        owner: u8,
        /// Shared through the directory.
        shared: bool,
    },
    /// The provider sends the browser back, to the replicas of `to` (a set of replicas,
    /// each getting the callback before any take is answered).
    Callback {
        /// Index among the logins whose browser was opened (not for a forged state).
        login: u8,
        /// What the callback carries.
        kind: CallbackKind,
        /// The replicas, as the bits of `to % 7 + 1`.
        to: u8,
        /// How it arrives.
        via: Via,
    },
    /// The directory answers a share (one the engine may no longer wait for).
    AnswerShare {
        /// Index among the shares not answered yet.
        target: u8,
    },
    /// The directory answers a take (one the engine may no longer wait for).
    AnswerTake {
        /// Index among the takes not answered yet.
        target: u8,
        /// What happens to a record on its way.
        tamper: Tamper,
    },
    /// The provider answers a token request (one the engine may no longer wait for).
    AnswerToken {
        /// Index among the token requests not answered yet.
        target: u8,
        /// What it answers.
        reply: TokenReply,
    },
    /// The token store reports on a `Persist` (one the engine may no longer wait for).
    Persisted {
        /// Index among the `Persist`s not reported yet.
        target: u8,
        /// Stored, or failed.
        ok: bool,
    },
    /// The directory goes down or comes back: while down, every share, take, "ended" mark
    /// and announcement fails.
    Directory {
        /// Reachable.
        up: bool,
    },
    /// A replica's application cancels a flow in progress (an adopting one too).
    Cancel {
        /// The replica.
        replica: u8,
        /// Index among its flows in progress.
        flow: u8,
    },
    /// The directory delivers an "ended" mark or an announcement, or loses it.
    Deliver {
        /// Index among the messages not delivered yet.
        target: u8,
        /// Lost on the way.
        drop: bool,
    },
    /// The clock moves forward by `millis` (taken as 1 ms to [`MAX_ADVANCE_MILLIS`]), each
    /// replica woken at every deadline; when `sleep`, copies of the engines jump the whole
    /// stretch at once and must do the same.
    Advance {
        /// How far.
        millis: u32,
        /// Also jump copies over the stretch.
        sleep: bool,
    },
}

/// What a callback carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CallbackKind {
    /// A code, with the provider's `iss`.
    Code,
    /// `error=access_denied`.
    Denied,
    /// A code with another provider's `iss`.
    WrongIssuer,
    /// A code with a state nobody issued (one of four).
    Forged(u8),
}

/// How a callback reaches a replica.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Via {
    /// Its query, forwarded.
    Query,
    /// The whole redirect URI, forwarded.
    Uri,
    /// On loopback, a browser's connection, its bytes split in two at `split`; the whole
    /// URI on the web.
    Connection {
        /// Where the bytes are split.
        split: u16,
    },
}

/// What happens to a record between the directory and the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Tamper {
    /// Nothing.
    None,
    /// The directory ignores its own expiry: an expired entry is returned as if alive.
    Stale,
    /// It names another client.
    Foreign,
    /// It opened but is not a record (another version).
    Unreadable,
    /// Its verifier is replaced: by [`TAMPERED_VERIFIER`], or by something that is not a
    /// verifier.
    Verifier {
        /// By [`TAMPERED_VERIFIER`].
        well_formed: bool,
    },
}

/// A token endpoint's answer.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TokenReply {
    /// Tokens.
    Tokens,
    /// `400 invalid_grant`.
    InvalidGrant,
    /// The request failed in transport.
    Transport,
}

// ----- what the model expects -----

/// How a flow must end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Ok,
    Cancelled,
    Superseded,
    TimedOut(Step),
    Directory(DirEnd),
    Denied,
    IssuerMismatch,
    Rejected,
    Transport,
    Storage,
    /// Finished by an announcement.
    Elsewhere(Outcome),
}

/// A [`DirectoryError`], as the model expects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirEnd {
    Unavailable,
    Refused(Rejection),
    Expired,
    Foreign,
    Unreadable,
}

impl End {
    fn accepts(&self, result: &Result<TokenSet, FlowError>) -> bool {
        let error = match (self, result) {
            (End::Ok | End::Elsewhere(Outcome::Stored), Ok(_)) => return true,
            (_, Ok(_)) => return false,
            (_, Err(error)) => error,
        };
        match (self, error) {
            (End::Cancelled, FlowError::Cancelled)
            | (End::Superseded, FlowError::Superseded)
            | (End::Denied, FlowError::Denied(_))
            | (End::IssuerMismatch, FlowError::IssuerMismatch { .. })
            | (End::Rejected, FlowError::TokenRejected { .. })
            | (End::Transport, FlowError::Transport(_))
            | (End::Storage, FlowError::Storage(_)) => true,
            (End::TimedOut(expected), FlowError::TimedOut(step)) => expected == step,
            // From another replica, the reason; from an adopting flow here, its very error.
            (End::Elsewhere(Outcome::Failed(expected)), FlowError::FailedElsewhere(reason)) => {
                expected == reason
            }
            (End::Elsewhere(Outcome::Failed(expected)), error) => *expected == error.to_string(),
            (End::Directory(expected), FlowError::Directory(error)) => {
                matches!(
                    (expected, error),
                    (DirEnd::Unavailable, DirectoryError::Unavailable(_))
                        | (DirEnd::Expired, DirectoryError::Expired)
                        | (DirEnd::Foreign, DirectoryError::Foreign)
                        | (DirEnd::Unreadable, DirectoryError::Unreadable)
                ) || matches!(
                    (expected, error),
                    (DirEnd::Refused(wanted), DirectoryError::Refused(got)) if wanted == got
                )
            }
            _ => false,
        }
    }
}

/// A flow the replica started.
#[derive(Debug, Clone)]
struct Own {
    owner: Option<&'static str>,
    shared: bool,
    /// The end of its lifetime.
    until: Instant,
}

/// A record an adopting flow read.
#[derive(Debug, Clone)]
struct Read {
    owner: Option<String>,
    verifier: String,
}

#[derive(Debug, Clone)]
enum Phase {
    /// A shared start's record on its way to the directory.
    Sharing,
    Waiting,
    /// A callback waits for the take `take`.
    Taking {
        take: TakeId,
        kind: CallbackKind,
        conn: Option<ConnId>,
    },
    Exchanging {
        exchange: ExchangeId,
    },
    Persisting,
    Finished,
}

/// A flow on one replica, as the model knows it.
#[derive(Debug, Clone)]
struct Flow {
    /// Its state: known once its browser was opened (started here) or from the callback
    /// (adopting).
    state: Option<String>,
    /// Its record's key.
    key: Option<FlowKey>,
    /// Started here; `None` for a flow adopting a callback.
    own: Option<Own>,
    phase: Phase,
    /// When its phase times out.
    deadline: Instant,
    /// How it must end, once the model knows.
    end: Option<End>,
    expect_share: bool,
    expect_open: bool,
    expect_token: bool,
    expect_persist: bool,
    /// The verifier its token request must carry, when known.
    verifier: Option<String>,
    /// A take of its record returned the record.
    took: bool,
    /// Started here: its outcome finished it.
    settled: bool,
    /// Adopting: the login's flow on this same replica, finished with this flow's result.
    origin: Option<FlowId>,
    /// How it finished: the access token, or the error.
    finished_with: Option<Result<String, FlowError>>,
    /// Adopting: the record it read.
    read: Option<Read>,
    announced: Option<Outcome>,
    spent: bool,
    /// The store confirmed its tokens.
    persisted: bool,
}

impl Flow {
    fn new(phase: Phase, deadline: Instant) -> Flow {
        Flow {
            state: None,
            key: None,
            own: None,
            phase,
            deadline,
            end: None,
            expect_share: false,
            expect_open: false,
            expect_token: false,
            expect_persist: false,
            verifier: None,
            took: false,
            settled: false,
            origin: None,
            finished_with: None,
            read: None,
            announced: None,
            spent: false,
            persisted: false,
        }
    }

    fn live(&self) -> bool {
        !matches!(self.phase, Phase::Finished)
    }

    fn is_shared(&self) -> bool {
        self.own.as_ref().is_none_or(|own| own.shared)
    }

    /// Where its tokens are stored.
    fn owner(&self) -> String {
        let owner = match (&self.own, &self.read) {
            (Some(own), _) => own.owner.map(str::to_owned),
            (None, Some(read)) => read.owner.clone(),
            (None, None) => None,
        };
        owner.unwrap_or_else(|| NO_OWNER.to_owned())
    }

    /// The callback of `kind` judged: a code goes to the token endpoint with `verifier`.
    fn judged(&mut self, kind: CallbackKind, verifier: Option<String>) {
        match kind {
            CallbackKind::Code | CallbackKind::Forged(_) => {
                self.expect_token = true;
                self.verifier = verifier;
            }
            CallbackKind::Denied => self.end = Some(End::Denied),
            CallbackKind::WrongIssuer => self.end = Some(End::IssuerMismatch),
        }
    }
}

/// One engine and what the model knows of it.
#[derive(Clone)]
pub struct Replica {
    /// The engine.
    pub engine: Engine,
    flows: BTreeMap<FlowId, Flow>,
    /// States it spent, and when: it refuses their callbacks for a flow lifetime.
    memory: BTreeMap<String, Instant>,
    /// Its connections, and whether each was answered.
    conns: BTreeMap<ConnId, bool>,
}

impl Replica {
    fn remembers(&self, state: &str, now: Instant) -> bool {
        self.memory
            .get(state)
            .is_some_and(|at| *at + FLOW_LIFETIME > now)
    }

    /// Spends `state` at `now` for replays, as a take's answer does: not while a login
    /// started here still waits under it, nor again while it is remembered.
    fn remember(&mut self, state: &str, now: Instant) {
        let waiting = self
            .flows
            .values()
            .any(|flow| flow.live() && flow.own.is_some() && flow.state.as_deref() == Some(state));
        if !waiting && !self.remembers(state, now) {
            self.memory.insert(state.to_owned(), now);
        }
    }

    fn live_flow(&mut self, flow: FlowId, what: &str) -> Result<&mut Flow, String> {
        match self.flows.get_mut(&flow) {
            None => Err(format!("{what} for {flow}, which the model does not know")),
            Some(record) if !record.live() => Err(format!("{what} for {flow} after it finished")),
            Some(record) => Ok(record),
        }
    }

    /// Its own shared flow in progress under `key`.
    fn holder(&self, key: &FlowKey) -> Option<FlowId> {
        self.flows
            .iter()
            .find(|(_, flow)| flow.live() && flow.own.is_some() && flow.key.as_ref() == Some(key))
            .map(|(id, _)| *id)
    }
}

/// What a directory entry holds.
#[derive(Debug, Clone)]
enum Entry {
    Record(Vec<u8>),
    Used,
    Ended,
}

/// Where a callback must go, by the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A new flow adopts the login and takes its record.
    Adopt,
    /// The replica's own login, not shared: judged at once.
    Judge(FlowId),
    Refuse,
}

/// A callback being delivered.
#[derive(Debug, Clone)]
struct Delivery {
    replica: usize,
    state: String,
    kind: CallbackKind,
    conn: Option<ConnId>,
    expect: Expect,
    took: Option<FlowId>,
}

#[derive(Debug, Clone)]
struct PendingShare {
    replica: usize,
    flow: FlowId,
    key: FlowKey,
    record: FlowRecord,
    lifetime: Duration,
}

#[derive(Debug, Clone)]
struct PendingTake {
    replica: usize,
    flow: FlowId,
    take: TakeId,
    key: FlowKey,
}

#[derive(Debug, Clone)]
struct PendingExchange {
    replica: usize,
    flow: FlowId,
    exchange: ExchangeId,
}

#[derive(Debug, Clone)]
struct PendingPersist {
    replica: usize,
    flow: FlowId,
    tokens: TokenSet,
}

#[derive(Debug, Clone)]
enum Message {
    Spend(FlowKey),
    Announce(Announcement),
}

/// Replicas, their directory, their token store and the provider, driven by
/// [`DirectoryOp`]s, every rule checked.
#[derive(Clone)]
pub struct DirectorySim {
    deployment: Deployment,
    /// Whether logins are DPoP-bound: then every login's key thumbprint, by state.
    dpop: Option<BTreeMap<String, String>>,
    /// The engines.
    pub replicas: Vec<Replica>,
    /// The clock.
    pub now: Instant,
    /// The wall clock, the same on every replica.
    pub wall: SystemTime,
    up: bool,
    directory: BTreeMap<FlowKey, (Entry, Instant)>,
    /// The shared token store, by owner.
    store: BTreeMap<String, TokenSet>,
    /// The states of the logins whose browser was opened, in that order.
    opened: Vec<String>,
    /// Every key seen, and its state.
    keys: BTreeMap<FlowKey, String>,
    /// Token requests per state, on all replicas together.
    exchanged: BTreeMap<String, u32>,
    shares: Vec<PendingShare>,
    takes: Vec<PendingTake>,
    exchanges: Vec<PendingExchange>,
    persists: Vec<PendingPersist>,
    messages: Vec<Message>,
    starts: u64,
    tokens: u64,
    /// The replica being drained.
    current: usize,
    delivering: Option<Delivery>,
    /// Connections that must be answered with this status in the current step.
    statuses: BTreeMap<(usize, ConnId), u16>,
}

impl DirectorySim {
    /// [`REPLICAS`] engines of `deployment`'s configuration, an empty directory that is up,
    /// and the clocks.
    pub fn new(deployment: Deployment) -> DirectorySim {
        DirectorySim::with_config(deployment, deployment.config(), false)
    }

    /// [`new`](DirectorySim::new) with DPoP-bound logins: a login's URL carries its key's
    /// thumbprint (`dpop_jkt`), its record the key (version 2), its token request a proof
    /// of that key wherever it is made, and its tokens the key (S61).
    pub fn dpop(deployment: Deployment) -> DirectorySim {
        DirectorySim::with_config(deployment, deployment.dpop_config(), true)
    }

    fn with_config(deployment: Deployment, config: Config, dpop: bool) -> DirectorySim {
        let replica = Replica {
            engine: Engine::new(config).expect("a valid engine"),
            flows: BTreeMap::new(),
            memory: BTreeMap::new(),
            conns: BTreeMap::new(),
        };
        DirectorySim {
            deployment,
            dpop: dpop.then(BTreeMap::new),
            replicas: vec![replica; REPLICAS],
            now: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1_790_000_000),
            up: true,
            directory: BTreeMap::new(),
            store: BTreeMap::new(),
            opened: Vec::new(),
            keys: BTreeMap::new(),
            exchanged: BTreeMap::new(),
            shares: Vec::new(),
            takes: Vec::new(),
            exchanges: Vec::new(),
            persists: Vec::new(),
            messages: Vec::new(),
            starts: 0,
            tokens: 0,
            current: 0,
            delivering: None,
            statuses: BTreeMap::new(),
        }
    }

    /// The states of the logins whose browser was opened, oldest first.
    pub fn opened(&self) -> &[String] {
        &self.opened
    }

    /// Token requests made for `state`, on all replicas together.
    pub fn token_requests(&self, state: &str) -> u32 {
        self.exchanged.get(state).copied().unwrap_or(0)
    }

    /// Applies `op`, drains the engines it touched and checks what they did. Returns the
    /// actions with the replica that emitted each, or the first rule broken.
    pub fn apply(&mut self, op: &DirectoryOp) -> Result<Vec<(usize, Action)>, String> {
        let actions = match *op {
            DirectoryOp::Start {
                replica,
                owner,
                shared,
            } => {
                let owner = OWNERS[usize::from(owner) % OWNERS.len()];
                self.start(usize::from(replica) % REPLICAS, owner, shared)?
            }
            DirectoryOp::Callback {
                login,
                kind,
                to,
                via,
            } => self.callback(login, kind, to, via)?,
            DirectoryOp::AnswerShare { target } => self.answer_share(target)?,
            DirectoryOp::AnswerTake { target, tamper } => self.answer_take(target, tamper)?,
            DirectoryOp::AnswerToken { target, reply } => self.answer_token(target, reply)?,
            DirectoryOp::Persisted { target, ok } => self.persisted(target, ok)?,
            DirectoryOp::Directory { up } => {
                self.up = up;
                Vec::new()
            }
            DirectoryOp::Cancel { replica, flow } => {
                self.cancel(usize::from(replica) % REPLICAS, flow)?
            }
            DirectoryOp::Deliver { target, drop } => self.deliver(target, drop)?,
            DirectoryOp::Advance { millis, sleep } => {
                let millis = millis % MAX_ADVANCE_MILLIS + 1;
                self.advance(Duration::from_millis(u64::from(millis)), sleep)?
            }
        };
        self.check_between()?;
        Ok(actions)
    }

    /// Lets two idle hours pass: every flow has finished and every engine is idle. Then
    /// answers every share, take, token request and store report the engines no longer
    /// wait for, and delivers every message: none changes anything.
    pub fn settle(&mut self) -> Result<(), String> {
        self.advance(Duration::from_secs(2 * 3600), false)?;
        self.check_between()?;
        for (r, replica) in self.replicas.iter().enumerate() {
            let unfinished: Vec<FlowId> = replica
                .flows
                .iter()
                .filter(|(_, flow)| flow.live())
                .map(|(id, _)| *id)
                .collect();
            harness::engine_idle(&replica.engine, self.now, &unfinished)
                .map_err(|violation| format!("replica {r}: {violation}"))?;
            if replica.engine.open_connections() != 0 {
                return Err(format!("replica {r} still holds a connection"));
            }
        }
        let mut late = Vec::new();
        while !self.shares.is_empty() {
            late.extend(self.answer_share(0)?);
        }
        while !self.takes.is_empty() {
            late.extend(self.answer_take(0, Tamper::None)?);
        }
        while !self.exchanges.is_empty() {
            late.extend(self.answer_token(0, TokenReply::Tokens)?);
        }
        while !self.persists.is_empty() {
            late.extend(self.persisted(0, true)?);
        }
        while !self.messages.is_empty() {
            late.extend(self.deliver(0, false)?);
        }
        if !late.is_empty() {
            return Err(format!("late answers changed something: {late:?}"));
        }
        self.check_between()
    }

    /// The model's verdict on `action` as if replica `replica` emitted it now, judged on a
    /// copy: the simulation is unchanged. For showing that the rules bite.
    pub fn judge(&self, replica: usize, action: &Action) -> Result<(), String> {
        let mut copy = self.clone();
        copy.current = replica;
        copy.check(action)
    }

    // ----- ops -----

    fn start(
        &mut self,
        r: usize,
        owner: Option<&'static str>,
        shared: bool,
    ) -> Result<Vec<(usize, Action)>, String> {
        if owner.is_some() {
            for flow in self.replicas[r].flows.values_mut() {
                if flow.live() && flow.own.as_ref().is_some_and(|own| own.owner == owner) {
                    flow.end = Some(End::Superseded);
                }
            }
        }
        self.starts += 1;
        let mut options = FlowOptions::new();
        if let Some(owner) = owner {
            options = options.owner(owner);
        }
        if shared {
            options = options.shared(self.wall);
        }
        let flow = self.replicas[r]
            .engine
            .start_with(self.now, entropy_from(self.starts), options)
            .map_err(|error| format!("start failed with fresh entropy: {error}"))?;
        if self.replicas[r].flows.contains_key(&flow) {
            return Err(format!("replica {r} reused the flow id {flow}"));
        }
        let until = self.now + FLOW_LIFETIME;
        // A login not shared opens its browser at once, and waits from then on.
        let deadline = if shared {
            (self.now + EXCHANGE_TIMEOUT).min(until)
        } else {
            until
        };
        let mut record = Flow::new(Phase::Sharing, deadline);
        record.own = Some(Own {
            owner,
            shared,
            until,
        });
        record.expect_share = shared;
        record.expect_open = !shared;
        self.replicas[r].flows.insert(flow, record);
        self.drain(r)
    }

    fn callback(
        &mut self,
        login: u8,
        kind: CallbackKind,
        to: u8,
        via: Via,
    ) -> Result<Vec<(usize, Action)>, String> {
        let state = match kind {
            CallbackKind::Forged(n) => format!("forged-{}", n % 4),
            _ if self.opened.is_empty() => return Ok(Vec::new()),
            _ => self.opened[usize::from(login) % self.opened.len()].clone(),
        };
        let query = match kind {
            CallbackKind::Code | CallbackKind::Forged(_) => {
                format!("code={CODE}&state={state}&{ISS}")
            }
            CallbackKind::Denied => format!("error=access_denied&state={state}&{ISS}"),
            CallbackKind::WrongIssuer => {
                format!("code={CODE}&state={state}&iss=https%3A%2F%2Fevil.example")
            }
        };
        let mask = to % 7 + 1;
        let mut actions = Vec::new();
        for r in (0..REPLICAS).filter(|r| mask & (1 << r) != 0) {
            actions.extend(self.deliver_callback(r, &state, kind, &query, via)?);
        }
        Ok(actions)
    }

    /// Where a callback for `state` must go at replica `r`.
    fn predict(&self, r: usize, state: &str) -> Expect {
        let replica = &self.replicas[r];
        let started_here = replica.flows.iter().find(|(_, flow)| {
            flow.live() && flow.own.is_some() && flow.state.as_deref() == Some(state)
        });
        match started_here {
            Some((id, flow)) => match (&flow.phase, &flow.own) {
                (Phase::Waiting, Some(own)) if !own.shared => Expect::Judge(*id),
                (Phase::Waiting, Some(_)) => Expect::Adopt,
                _ => Expect::Refuse,
            },
            None if replica.remembers(state, self.now) => Expect::Refuse,
            None => Expect::Adopt,
        }
    }

    fn deliver_callback(
        &mut self,
        r: usize,
        state: &str,
        kind: CallbackKind,
        query: &str,
        via: Via,
    ) -> Result<Vec<(usize, Action)>, String> {
        let now = self.now;
        let connection = match (via, self.deployment) {
            (Via::Connection { split }, Deployment::Loopback) => {
                match self.replicas[r].engine.handle_accept(now) {
                    Some(conn) => {
                        self.replicas[r].conns.insert(conn, false);
                        Some((conn, split))
                    }
                    None => return Ok(Vec::new()),
                }
            }
            _ => None,
        };
        let expect = self.predict(r, state);
        if let Expect::Judge(flow) = expect {
            let replica = &mut self.replicas[r];
            replica.memory.insert(state.to_owned(), now);
            if let Some(flow) = replica.flows.get_mut(&flow) {
                flow.judged(kind, None);
            }
        }
        self.delivering = Some(Delivery {
            replica: r,
            state: state.to_owned(),
            kind,
            conn: connection.map(|(conn, _)| conn),
            expect,
            took: None,
        });
        let mut actions = Vec::new();
        let redirected = match connection {
            Some((conn, split)) => {
                let bytes = chromium_get(&format!("/callback?{query}"));
                let split = usize::from(split) % (bytes.len() + 1);
                self.replicas[r]
                    .engine
                    .handle_bytes(now, conn, &bytes[..split]);
                actions.extend(self.drain(r)?);
                self.replicas[r]
                    .engine
                    .handle_bytes(now, conn, &bytes[split..]);
                None
            }
            None => {
                let target = match via {
                    Via::Query => query.to_owned(),
                    _ => format!("{}?{query}", self.deployment.redirect_uri()),
                };
                Some(self.replicas[r].engine.handle_redirect(now, &target))
            }
        };
        actions.extend(self.drain(r)?);
        let delivery = self.delivering.take().ok_or("the delivery vanished")?;
        let answered = |sim: &DirectorySim| {
            connection.is_some_and(|(conn, _)| sim.replicas[r].conns.get(&conn) == Some(&true))
        };
        let what = format!("a {kind:?} callback for {state} at replica {r}");
        match (expect, delivery.took) {
            (Expect::Adopt, None) => {
                return Err(format!(
                    "{what} was refused ({redirected:?}); the model expected {expect:?}"
                ));
            }
            (Expect::Adopt, Some(flow)) => {
                if redirected.is_some_and(|result| result != Ok(flow)) {
                    return Err(format!(
                        "{what} took for {flow} but returned {redirected:?}"
                    ));
                }
                if answered(self) {
                    return Err(format!(
                        "{what} waits for the directory but its connection was answered"
                    ));
                }
            }
            (Expect::Judge(flow), _) => {
                if redirected.is_some_and(|result| result != Ok(flow)) {
                    return Err(format!("{what} belongs to {flow} but got {redirected:?}"));
                }
            }
            (Expect::Refuse, _) => {
                if let Some(Ok(flow)) = redirected {
                    return Err(format!("{what} must be refused, but went to {flow}"));
                }
                if connection.is_some() && !answered(self) {
                    return Err(format!(
                        "{what} must be refused, but its connection is held"
                    ));
                }
            }
        }
        Ok(actions)
    }

    fn answer_share(&mut self, target: u8) -> Result<Vec<(usize, Action)>, String> {
        if self.shares.is_empty() {
            return Ok(Vec::new());
        }
        let share = self.shares.remove(usize::from(target) % self.shares.len());
        let r = share.replica;
        let result = if self.up {
            let record = Entry::Record(share.record.expose_bytes().to_vec());
            self.directory
                .insert(share.key, (record, self.now + share.lifetime));
            Ok(())
        } else {
            Err(StoreError::new("the flow directory is unreachable"))
        };
        let waits = match self.replicas[r].flows.get_mut(&share.flow) {
            Some(flow) if matches!(flow.phase, Phase::Sharing) => {
                match result {
                    Ok(()) => flow.expect_open = true,
                    Err(_) => flow.end = Some(End::Directory(DirEnd::Unavailable)),
                }
                true
            }
            _ => false,
        };
        self.replicas[r]
            .engine
            .handle_flow_shared(self.now, share.flow, result);
        let actions = self.drain(r)?;
        late(waits, "share answer", actions)
    }

    fn answer_take(&mut self, target: u8, tamper: Tamper) -> Result<Vec<(usize, Action)>, String> {
        if self.takes.is_empty() {
            return Ok(Vec::new());
        }
        let pending = self.takes.remove(usize::from(target) % self.takes.len());
        let r = pending.replica;
        let (result, original) = if self.up {
            match self.take(pending.key, tamper == Tamper::Stale) {
                Taken::Record(record) => {
                    let original = record.expose_bytes().to_vec();
                    let sent = FlowRecord::from_bytes(tampered(&original, tamper));
                    (Ok(Taken::Record(sent)), Some(original))
                }
                other => (Ok(other), None),
            }
        } else {
            (
                Err(StoreError::new("the flow directory is unreachable")),
                None,
            )
        };
        let waits = self.expect_taken(&pending, &result, original.as_deref(), tamper)?;
        self.replicas[r]
            .engine
            .handle_flow_taken(self.now, self.wall, pending.take, result);
        let actions = self.drain(r)?;
        late(waits, "take answer", actions)
    }

    /// What the directory's answer to `pending` must lead to; `false` when the engine no
    /// longer waits for it.
    fn expect_taken(
        &mut self,
        pending: &PendingTake,
        result: &Result<Taken, StoreError>,
        original: Option<&[u8]>,
        tamper: Tamper,
    ) -> Result<bool, String> {
        let (now, wall) = (self.now, self.wall);
        let replica = &mut self.replicas[pending.replica];
        let Some(flow) = replica.flows.get_mut(&pending.flow) else {
            return Ok(false);
        };
        let (kind, conn) = match flow.phase {
            Phase::Taking { take, kind, conn } if take == pending.take => (kind, conn),
            _ => return Ok(false),
        };
        let state = flow
            .state
            .clone()
            .ok_or("a take for a flow without a state")?;
        if flow.own.is_some() {
            return Err(format!("a take for {}, a login started here", pending.flow));
        }
        let refused = |rejection| Some(End::Directory(DirEnd::Refused(rejection)));
        let status = match result {
            Ok(Taken::Record(_)) => {
                flow.took = true;
                let original = original.ok_or("a record without its bytes")?;
                match read_record(original, tamper, wall) {
                    Ok(read) => {
                        let verifier = read.verifier.clone();
                        flow.read = Some(read);
                        flow.judged(kind, Some(verifier));
                        replica.remember(&state, now);
                        None
                    }
                    Err(error) => {
                        flow.end = Some(End::Directory(error));
                        Some(if error == DirEnd::Expired { 410 } else { 400 })
                    }
                }
            }
            Ok(Taken::Spent { used }) => {
                replica.remember(&state, now);
                let flow = replica.flows.get_mut(&pending.flow).ok_or("vanished")?;
                if *used {
                    flow.end = refused(Rejection::AlreadyUsed);
                    Some(400)
                } else {
                    flow.end = refused(Rejection::Expired);
                    Some(410)
                }
            }
            Ok(Taken::Missing) => {
                flow.end = refused(Rejection::UnknownState);
                Some(400)
            }
            Err(_) => {
                flow.end = Some(End::Directory(DirEnd::Unavailable));
                Some(503)
            }
        };
        if let (Some(conn), Some(status)) = (conn, status) {
            self.statuses.insert((pending.replica, conn), status);
        }
        Ok(true)
    }

    /// The directory's atomic take of `key`: the record (replaced by a "used" mark,
    /// keeping its expiry), a mark, or nothing. `stale`: an expired entry counts as alive.
    fn take(&mut self, key: FlowKey, stale: bool) -> Taken {
        let now = self.now;
        let Some((entry, expires)) = self.directory.get_mut(&key) else {
            return Taken::Missing;
        };
        if *expires <= now && !stale {
            self.directory.remove(&key);
            return Taken::Missing;
        }
        let taken = match entry {
            Entry::Record(bytes) => Taken::Record(FlowRecord::from_bytes(bytes.clone())),
            Entry::Used => Taken::Spent { used: true },
            Entry::Ended => Taken::Spent { used: false },
        };
        if !matches!(entry, Entry::Ended) {
            *entry = Entry::Used;
        }
        taken
    }

    fn answer_token(
        &mut self,
        target: u8,
        reply: TokenReply,
    ) -> Result<Vec<(usize, Action)>, String> {
        if self.exchanges.is_empty() {
            return Ok(Vec::new());
        }
        let pending = self
            .exchanges
            .remove(usize::from(target) % self.exchanges.len());
        let r = pending.replica;
        let waits = match self.replicas[r].flows.get_mut(&pending.flow) {
            Some(flow) if matches!(flow.phase, Phase::Exchanging { exchange } if exchange == pending.exchange) =>
            {
                match reply {
                    TokenReply::Tokens => flow.expect_persist = true,
                    TokenReply::InvalidGrant => flow.end = Some(End::Rejected),
                    TokenReply::Transport => flow.end = Some(End::Transport),
                }
                true
            }
            _ => false,
        };
        let engine = &mut self.replicas[r].engine;
        match reply {
            TokenReply::Tokens => {
                self.tokens += 1;
                let n = self.tokens;
                let token_type = if self.dpop.is_some() {
                    "DPoP"
                } else {
                    "Bearer"
                };
                let raw = json_response(
                    200,
                    &format!(
                        r#"{{"access_token":"at-{n}","token_type":"{token_type}","expires_in":3600,"refresh_token":"rt-{n}","scope":"openid email"}}"#
                    ),
                );
                engine.handle_token_response(
                    self.now,
                    self.wall,
                    pending.exchange,
                    parse_response(&raw),
                );
            }
            TokenReply::InvalidGrant => {
                let raw = json_response(400, r#"{"error":"invalid_grant"}"#);
                engine.handle_token_response(
                    self.now,
                    self.wall,
                    pending.exchange,
                    parse_response(&raw),
                );
            }
            TokenReply::Transport => engine.handle_token_failure(
                self.now,
                pending.exchange,
                TransportError::new(TransportErrorKind::Connect, "connection refused"),
            ),
        }
        let actions = self.drain(r)?;
        late(waits, "token answer", actions)
    }

    fn persisted(&mut self, target: u8, ok: bool) -> Result<Vec<(usize, Action)>, String> {
        if self.persists.is_empty() {
            return Ok(Vec::new());
        }
        let pending = self
            .persists
            .remove(usize::from(target) % self.persists.len());
        let r = pending.replica;
        let waits = match self.replicas[r].flows.get_mut(&pending.flow) {
            Some(flow) if matches!(flow.phase, Phase::Persisting) => {
                if ok {
                    flow.end = Some(End::Ok);
                    flow.persisted = true;
                    self.store.insert(flow.owner(), pending.tokens.clone());
                } else {
                    flow.end = Some(End::Storage);
                }
                true
            }
            _ => false,
        };
        let result = if ok {
            Ok(())
        } else {
            Err(StoreError::new("disk full"))
        };
        self.replicas[r]
            .engine
            .handle_persisted(self.now, pending.flow, result);
        let actions = self.drain(r)?;
        late(waits, "store report", actions)
    }

    fn cancel(&mut self, r: usize, index: u8) -> Result<Vec<(usize, Action)>, String> {
        let replica = &mut self.replicas[r];
        let live: Vec<FlowId> = replica
            .flows
            .iter()
            .filter(|(_, flow)| flow.live())
            .map(|(id, _)| *id)
            .collect();
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let flow = live[usize::from(index) % live.len()];
        if let Some(record) = replica.flows.get_mut(&flow) {
            record.end = Some(End::Cancelled);
        }
        replica.engine.cancel(self.now, flow);
        self.drain(r)
    }

    fn deliver(&mut self, target: u8, drop: bool) -> Result<Vec<(usize, Action)>, String> {
        if self.messages.is_empty() {
            return Ok(Vec::new());
        }
        let message = self
            .messages
            .remove(usize::from(target) % self.messages.len());
        if drop || !self.up {
            return Ok(Vec::new());
        }
        match message {
            Message::Spend(key) => {
                if let Some((entry @ Entry::Record(_), _)) = self.directory.get_mut(&key) {
                    *entry = Entry::Ended;
                }
                Ok(Vec::new())
            }
            Message::Announce(announcement) => {
                let mut actions = Vec::new();
                for r in 0..REPLICAS {
                    actions.extend(self.hear(r, &announcement)?);
                }
                Ok(actions)
            }
        }
    }

    /// Replica `r` hears `announcement`; the one that holds the login finishes it.
    fn hear(
        &mut self,
        r: usize,
        announcement: &Announcement,
    ) -> Result<Vec<(usize, Action)>, String> {
        let replica = &mut self.replicas[r];
        let holder = replica.holder(&announcement.key);
        let named = replica.engine.shared_flow(&announcement.key);
        if named != holder {
            return Err(format!(
                "replica {r} names {named:?} as the holder of {}, the model {holder:?}",
                announcement.key
            ));
        }
        let result = match (&announcement.outcome, holder) {
            (Outcome::Stored, Some(flow)) => {
                let owner = replica.flows[&flow].owner();
                match self.store.get(&owner) {
                    Some(tokens) => Ok(tokens.clone()),
                    None => {
                        return Err(format!(
                            "{} announced stored, but the store has nothing for {owner}",
                            announcement.key
                        ));
                    }
                }
            }
            (Outcome::Stored, None) => Ok(TokenSet::new("at-nobody".to_owned().into())),
            (Outcome::Failed(reason), _) => Err(FlowError::FailedElsewhere(reason.clone())),
        };
        if let Some(flow) = holder.and_then(|flow| replica.flows.get_mut(&flow)) {
            flow.end = Some(End::Elsewhere(announcement.outcome.clone()));
            flow.settled = true;
        }
        replica
            .engine
            .handle_outcome(self.now, &announcement.key, result);
        let actions = self.drain(r)?;
        if holder.is_none() && !actions.is_empty() {
            return Err(format!(
                "an announcement for a login replica {r} does not hold changed something: \
                 {actions:?}"
            ));
        }
        Ok(actions)
    }

    /// Moves the clocks by `by`, waking every replica at every deadline on the way; when
    /// `sleep`, copies jump the stretch at once and must emit the same.
    fn advance(&mut self, by: Duration, sleep: bool) -> Result<Vec<(usize, Action)>, String> {
        let target = self.now + by;
        let wall_target = self.wall + by;
        let jumped: Option<Vec<Vec<String>>> = sleep.then(|| {
            self.replicas
                .iter()
                .map(|replica| {
                    let mut copy = replica.engine.clone();
                    copy.handle_timeout(target);
                    std::iter::from_fn(|| copy.poll_action())
                        .map(|action| fingerprint(&action))
                        .collect()
                })
                .collect()
        });
        let mut punctual: Vec<Vec<String>> = vec![Vec::new(); REPLICAS];
        let mut actions = Vec::new();
        loop {
            let next = self
                .replicas
                .iter()
                .filter_map(|replica| replica.engine.poll_timeout())
                .min();
            let at = match next {
                Some(at) if at <= target => at.max(self.now),
                _ => target,
            };
            self.wall += at - self.now;
            self.now = at;
            self.expect_deadlines();
            for (r, seen) in punctual.iter_mut().enumerate() {
                self.replicas[r].engine.handle_timeout(at);
                if self.replicas[r]
                    .engine
                    .poll_timeout()
                    .is_some_and(|again| again <= at)
                {
                    return Err(format!(
                        "replica {r}: poll_timeout lies in the past after handle_timeout"
                    ));
                }
                let drained = self.drain(r)?;
                seen.extend(drained.iter().map(|(_, action)| fingerprint(action)));
                actions.extend(drained);
            }
            self.check_between()?;
            if at == target {
                break;
            }
        }
        self.wall = wall_target;
        if let Some(jumped) = jumped {
            for (r, (jumped, punctual)) in jumped.iter().zip(&punctual).enumerate() {
                if jumped != punctual {
                    return Err(format!(
                        "replica {r} waking late gave other actions than waking on time:\n\
                         {jumped:#?}\ninstead of\n{punctual:#?}"
                    ));
                }
            }
        }
        Ok(actions)
    }

    /// Before the engines handle `now`: the flows whose deadline came must end; a callback
    /// whose take did not come back in time is told to try again.
    fn expect_deadlines(&mut self) {
        let now = self.now;
        for (r, replica) in self.replicas.iter_mut().enumerate() {
            for flow in replica.flows.values_mut() {
                if !flow.live() || flow.deadline > now || flow.end.is_some() {
                    continue;
                }
                let step = match &flow.phase {
                    Phase::Sharing => Step::Directory,
                    Phase::Waiting => Step::Callback,
                    Phase::Taking { conn, .. } => {
                        // Nothing was taken here: the browser is told to try again.
                        if let Some(conn) = conn {
                            self.statuses.insert((r, *conn), 503);
                        }
                        Step::Directory
                    }
                    Phase::Exchanging { .. } => Step::TokenExchange,
                    Phase::Persisting => Step::Storage,
                    Phase::Finished => continue,
                };
                flow.end = Some(End::TimedOut(step));
            }
        }
    }

    /// Drains replica `r`, checking every action.
    fn drain(&mut self, r: usize) -> Result<Vec<(usize, Action)>, String> {
        self.current = r;
        let now = self.now;
        let actions = drain_checked(
            self,
            now,
            |sim| &mut sim.replicas[sim.current].engine,
            DirectorySim::check,
        )?;
        Ok(actions.into_iter().map(|action| (r, action)).collect())
    }

    /// The rules that hold between steps.
    fn check_between(&self) -> Result<(), String> {
        if let Some(((r, conn), status)) = self.statuses.iter().next() {
            return Err(format!(
                "connection {conn} on replica {r} was not answered {status}"
            ));
        }
        for (r, replica) in self.replicas.iter().enumerate() {
            let engine = &replica.engine;
            if engine.poll_timeout().is_some_and(|at| at <= self.now) {
                return Err(format!("replica {r}: poll_timeout lies in the past"));
            }
            let live = replica.flows.values().filter(|flow| flow.live()).count();
            if engine.flows_in_progress() != live {
                return Err(format!(
                    "replica {r} has {} flows in progress, the model {live}",
                    engine.flows_in_progress()
                ));
            }
            let open = replica
                .conns
                .values()
                .filter(|answered| !**answered)
                .count();
            if engine.open_connections() != open {
                return Err(format!(
                    "replica {r} holds {} connections, the model {open}",
                    engine.open_connections()
                ));
            }
            for (id, flow) in &replica.flows {
                let named = flow.key.and_then(|key| engine.shared_flow(&key));
                if !flow.live() {
                    if named == Some(*id) {
                        return Err(format!("replica {r} still names {id} as shared"));
                    }
                    continue;
                }
                let what = format!("flow {id} on replica {r}");
                if let Some(end) = &flow.end {
                    return Err(format!("{what} should have ended ({end:?}) but has not"));
                }
                for (expected, action) in [
                    (flow.expect_share, "shared its record"),
                    (flow.expect_open, "opened the browser"),
                    (flow.expect_token, "sent its token request"),
                    (flow.expect_persist, "asked to store its tokens"),
                ] {
                    if expected {
                        return Err(format!("{what} should have {action}"));
                    }
                }
                if flow.deadline <= self.now {
                    return Err(format!("{what} outlived its deadline"));
                }
                if flow.own.as_ref().is_some_and(|own| own.shared)
                    && flow.key.is_some()
                    && named != Some(*id)
                {
                    return Err(format!("{what} is shared, but shared_flow names {named:?}"));
                }
                if let Some(read) = &flow.read {
                    if engine.flow_owner(*id) != read.owner.as_deref() {
                        return Err(format!(
                            "{what} read the owner {:?}, the engine says {:?}",
                            read.owner,
                            engine.flow_owner(*id)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check(&mut self, action: &Action) -> Result<(), String> {
        let r = self.current;
        let (now, wall) = (self.now, self.wall);
        let uri = self.deployment.redirect_uri();
        match action {
            Action::ShareFlow {
                flow,
                key,
                record,
                lifetime,
            } => {
                let debug = format!("{action:?}");
                let replica = &mut self.replicas[r];
                let state = replica.live_flow(*flow, "ShareFlow")?;
                if !std::mem::take(&mut state.expect_share) {
                    return Err(format!(
                        "ShareFlow for {flow}, not a shared login just started"
                    ));
                }
                if *lifetime != FLOW_LIFETIME {
                    return Err(format!("ShareFlow for {flow} for {lifetime:?}"));
                }
                let value: Value = serde_json::from_slice(record.expose_bytes())
                    .map_err(|_| format!("the record of {flow} is not JSON"))?;
                let verifier = value["verifier"].as_str().unwrap_or_default().to_owned();
                if verifier.len() != 43
                    || !verifier
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(format!(
                        "the record of {flow} has the verifier {verifier:?}"
                    ));
                }
                if debug.contains(&verifier) {
                    return Err(format!("ShareFlow's Debug shows the verifier: {debug}"));
                }
                let own = state.own.as_ref().ok_or("ShareFlow for an adopting flow")?;
                let mut expected = json!({
                    "v": 1,
                    "client_id": "latchkey-test",
                    "token_endpoint": harness::TOKEN,
                    "redirect_uri": uri,
                    "verifier": verifier,
                    "deadline": unix_millis(wall + FLOW_LIFETIME),
                });
                if let Some(owner) = own.owner {
                    expected["owner"] = json!(owner);
                }
                if self.dpop.is_some() {
                    let stored = &value["dpop_key"];
                    let pkcs8 = stored["pkcs8"].as_str().unwrap_or_default();
                    if stored["alg"] != "ES256" || pkcs8.len() < 64 || debug.contains(pkcs8) {
                        return Err(format!(
                            "S55/S61: the record of {flow} carries the DPoP key {stored} (or \
                             shows it in Debug)"
                        ));
                    }
                    expected["v"] = json!(2);
                    expected["dpop_key"] = stored.clone();
                }
                if value != expected {
                    return Err(format!(
                        "the record of {flow} is {value}, expected {expected}"
                    ));
                }
                state.key = Some(*key);
                if self.keys.contains_key(key) || self.shares.iter().any(|share| share.key == *key)
                {
                    return Err(format!("ShareFlow for {flow} under a key in use: {key}"));
                }
                self.shares.push(PendingShare {
                    replica: r,
                    flow: *flow,
                    key: *key,
                    record: record.clone(),
                    lifetime: *lifetime,
                });
            }
            Action::OpenBrowser { flow, url } => {
                let state = self.replicas[r].live_flow(*flow, "OpenBrowser")?;
                if !std::mem::take(&mut state.expect_open) {
                    return Err(format!(
                        "OpenBrowser for {flow}, whose record the directory did not confirm"
                    ));
                }
                if query_value(url, "redirect_uri").as_deref() != Some(uri) {
                    return Err(format!("OpenBrowser for {flow} with another redirect URI"));
                }
                let text = query_value(url, "state").ok_or("an authorization URL without state")?;
                let jkt = query_value(url, "dpop_jkt");
                match (&mut self.dpop, jkt) {
                    (Some(jkts), Some(jkt)) => {
                        jkts.insert(text.clone(), jkt);
                    }
                    (None, None) => {}
                    (Some(_), None) => {
                        return Err(format!("S61: the URL of {flow} lacks dpop_jkt"));
                    }
                    (None, Some(_)) => return Err(format!("a dpop_jkt in the URL of {flow}")),
                }
                let own = state
                    .own
                    .as_ref()
                    .ok_or("OpenBrowser for an adopting flow")?;
                state.deadline = own.until;
                state.phase = Phase::Waiting;
                state.state = Some(text.clone());
                if let Some(key) = state.key {
                    if self.keys.insert(key, text.clone()).is_some() {
                        return Err(format!("the key of {flow} names another login"));
                    }
                }
                self.opened.push(text);
            }
            Action::TakeFlow { flow, take, key } => {
                let Some(delivery) = self.delivering.as_mut().filter(|d| d.replica == r) else {
                    return Err(format!("TakeFlow for {flow} without a callback"));
                };
                if delivery.took.replace(*flow).is_some() {
                    return Err(format!("a second TakeFlow for one callback, for {flow}"));
                }
                let phase = Phase::Taking {
                    take: *take,
                    kind: delivery.kind,
                    conn: delivery.conn,
                };
                let state = delivery.state.clone();
                let replica = &mut self.replicas[r];
                match delivery.expect {
                    Expect::Adopt if !replica.flows.contains_key(flow) => {
                        let mut record = Flow::new(phase, now + EXCHANGE_TIMEOUT);
                        record.state = Some(state.clone());
                        record.key = Some(*key);
                        replica.flows.insert(*flow, record);
                        match self.keys.get(key) {
                            Some(known) if *known != state => {
                                return Err(format!("TakeFlow for {state} under {known}'s key"));
                            }
                            Some(_) => {}
                            None => {
                                if self.keys.values().any(|known| *known == state) {
                                    return Err(format!("TakeFlow for {state} under a new key"));
                                }
                                self.keys.insert(*key, state);
                            }
                        }
                    }
                    expect => {
                        return Err(format!(
                            "TakeFlow for {flow}; the model expected {expect:?} for {state}"
                        ));
                    }
                }
                self.takes.push(PendingTake {
                    replica: r,
                    flow: *flow,
                    take: *take,
                    key: *key,
                });
            }
            Action::SendTokenRequest {
                flow,
                exchange,
                request,
            } => {
                let state = self.replicas[r].live_flow(*flow, "SendTokenRequest")?;
                if state.is_shared() && !state.took {
                    return Err(format!(
                        "S58: a token request for {flow} without a taken record"
                    ));
                }
                if state.own.is_none() && state.read.is_none() {
                    return Err(format!(
                        "S56: a token request for {flow} from a record it could not use"
                    ));
                }
                let login = state
                    .state
                    .clone()
                    .ok_or("a token request without a state")?;
                if self.exchanged.get(&login).is_some_and(|count| *count > 0) {
                    return Err(format!("S54: a second token request for {login}"));
                }
                if !std::mem::take(&mut state.expect_token) {
                    return Err(format!("a token request for {flow} nobody expected"));
                }
                let body =
                    std::str::from_utf8(request.request().body()).map_err(|_| "body not UTF-8")?;
                if request.request().uri() != harness::TOKEN
                    || query_value(body, "code").as_deref() != Some(CODE)
                    || query_value(body, "redirect_uri").as_deref() != Some(uri)
                {
                    return Err(format!("a token request for {flow} with {body}"));
                }
                if let Some(verifier) = &state.verifier {
                    if query_value(body, "code_verifier").as_ref() != Some(verifier) {
                        return Err(format!(
                            "the token request of {flow} carries another verifier than {verifier}"
                        ));
                    }
                }
                match &self.dpop {
                    Some(jkts) => {
                        let sent = request
                            .clone()
                            .finish(wall)
                            .map_err(|error| format!("the proof of {flow}: {error}"))?;
                        let proven = proof_thumbprint(&sent).ok_or(format!(
                            "S61: the token request of {flow} has no valid proof"
                        ))?;
                        if jkts.get(&login) != Some(&proven) {
                            return Err(format!(
                                "S61: the token request of {flow} proves another key than the \
                                 URL's dpop_jkt"
                            ));
                        }
                    }
                    None if request.has_dpop() => {
                        return Err(format!("a DPoP proof in the token request of {flow}"));
                    }
                    None => {}
                }
                state.phase = Phase::Exchanging {
                    exchange: *exchange,
                };
                state.deadline = now + EXCHANGE_TIMEOUT;
                *self.exchanged.entry(login).or_default() += 1;
                self.exchanges.push(PendingExchange {
                    replica: r,
                    flow: *flow,
                    exchange: *exchange,
                });
            }
            Action::Persist { flow, tokens } => {
                let state = self.replicas[r].live_flow(*flow, "Persist")?;
                if !std::mem::take(&mut state.expect_persist) {
                    return Err(format!("Persist for {flow}, which got no tokens"));
                }
                if !tokens.access_token().expose_secret().starts_with("at-") {
                    return Err(format!("Persist for {flow} with other tokens"));
                }
                if let Some(jkts) = &self.dpop {
                    let jkt = tokens.dpop_key().and_then(|key| {
                        latchkey::keys::Signer::new(key.clone(), latchkey_io::crypto::ring())
                            .ok()
                            .map(|signer| signer.thumbprint().to_owned())
                    });
                    let login = state.state.as_ref();
                    if jkt.is_none() || login.and_then(|login| jkts.get(login)) != jkt.as_ref() {
                        return Err(format!(
                            "S61: Persist for {flow} without the key its code is bound to"
                        ));
                    }
                }
                state.phase = Phase::Persisting;
                state.deadline = now + EXCHANGE_TIMEOUT;
                self.persists.push(PendingPersist {
                    replica: r,
                    flow: *flow,
                    tokens: tokens.clone(),
                });
            }
            Action::Respond { conn, .. } | Action::Close { conn } => {
                match self.replicas[r].conns.get_mut(conn) {
                    None => return Err(format!("an answer on {conn}, never accepted")),
                    Some(true) => return Err(format!("{conn} answered twice")),
                    Some(answered) => *answered = true,
                }
                let status = match action {
                    Action::Respond { status, .. } => Some(status.as_u16()),
                    _ => None,
                };
                match self.statuses.remove(&(r, *conn)) {
                    Some(expected) if status != Some(expected) => {
                        return Err(format!(
                            "{conn} answered {status:?}, the model expected {expected}"
                        ));
                    }
                    None if status == Some(503) => {
                        return Err(format!("{conn} answered 503 although nothing failed"));
                    }
                    _ => {}
                }
            }
            Action::SpendFlow { key } => {
                let replica = &mut self.replicas[r];
                let Some(flow) = replica.holder(key) else {
                    return Err(format!("SpendFlow for {key}, no login of replica {r}"));
                };
                let state = replica.live_flow(flow, "SpendFlow")?;
                if state.end.is_none() {
                    return Err(format!("SpendFlow for {flow}, which is not ending"));
                }
                if state.settled {
                    return Err(format!("SpendFlow for {flow}, which ended by its outcome"));
                }
                if std::mem::replace(&mut state.spent, true) {
                    return Err(format!("a second SpendFlow for {flow}"));
                }
                self.messages.push(Message::Spend(*key));
            }
            Action::AnnounceOutcome { announcement } => {
                let key = announcement.key;
                let replica = &mut self.replicas[r];
                let Some((&id, state)) = replica.flows.iter_mut().find(|(_, flow)| {
                    flow.live() && flow.own.is_none() && flow.key == Some(key) && flow.end.is_some()
                }) else {
                    return Err(format!("an announcement for {key}, no adopting flow here"));
                };
                if state.read.is_none() {
                    return Err(format!("{id} announces, but never read its record"));
                }
                if state.announced.is_some() {
                    return Err(format!("{id} announces twice"));
                }
                let stored = announcement.outcome == Outcome::Stored;
                if stored != (state.end == Some(End::Ok)) || (stored && !state.persisted) {
                    return Err(format!(
                        "{id} announces {:?}, ending {:?}",
                        announcement.outcome, state.end
                    ));
                }
                state.announced = Some(announcement.outcome.clone());
                // The login started here ends at once, with this flow's result.
                let origin = replica.holder(&key);
                if let Some(origin) = origin {
                    let login = replica.live_flow(origin, "a local outcome")?;
                    login.end = Some(End::Elsewhere(announcement.outcome.clone()));
                    login.settled = true;
                }
                if let Some(state) = replica.flows.get_mut(&id) {
                    state.origin = origin;
                }
                self.messages.push(Message::Announce(announcement.clone()));
            }
            Action::Finished { flow, result } => {
                let replica = &mut self.replicas[r];
                let state = replica.live_flow(*flow, "Finished")?;
                let Some(end) = state.end.take() else {
                    return Err(format!("{flow} finished unexpectedly with {result:?}"));
                };
                if !end.accepts(result) {
                    return Err(format!("{flow} finished with {result:?}, expected {end:?}"));
                }
                let finished_with = result
                    .as_ref()
                    .map(|tokens| tokens.access_token().expose_secret().to_owned())
                    .map_err(Clone::clone);
                state.finished_with = Some(finished_with.clone());
                state.phase = Phase::Finished;
                if state.own.is_none() && state.read.is_some() {
                    let expected = match result {
                        Ok(_) => Outcome::Stored,
                        Err(error) => Outcome::Failed(error.to_string()),
                    };
                    if state.announced.as_ref() != Some(&expected) {
                        return Err(format!(
                            "{flow} finished with {result:?} but announced {:?}",
                            state.announced
                        ));
                    }
                }
                if state.own.as_ref().is_some_and(|own| own.shared) {
                    let by_outcome = matches!(end, End::Elsewhere(_));
                    if state.spent == by_outcome {
                        return Err(format!(
                            "{flow} ended with {result:?}: an ended mark {}",
                            if by_outcome {
                                "for a login that ended by its outcome"
                            } else {
                                "is missing"
                            }
                        ));
                    }
                }
                let (origin, spent) = (
                    state.origin,
                    state.own.is_some().then(|| state.state.clone()),
                );
                if let Some(Some(text)) = spent {
                    replica.remember(&text, now);
                }
                if let Some(origin) = origin {
                    let same = replica
                        .flows
                        .get(&origin)
                        .and_then(|login| login.finished_with.as_ref());
                    if same != Some(&finished_with) {
                        return Err(format!(
                            "{origin}, the login {flow} adopted here, finished with {same:?}, \
                             not {finished_with:?}"
                        ));
                    }
                }
            }
            other => return Err(format!("an action the model does not expect: {other:?}")),
        }
        Ok(())
    }
}

/// `actions`, unless the answer that caused them came after the engine stopped waiting
/// for it.
fn late(
    waits: bool,
    what: &str,
    actions: Vec<(usize, Action)>,
) -> Result<Vec<(usize, Action)>, String> {
    if !waits && !actions.is_empty() {
        return Err(format!("a late {what} changed something: {actions:?}"));
    }
    Ok(actions)
}

/// Milliseconds since the Unix epoch.
fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The record `original` as it reaches the engine.
pub fn tampered(original: &[u8], tamper: Tamper) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<Value>(original) else {
        return original.to_vec();
    };
    match tamper {
        Tamper::None | Tamper::Stale => return original.to_vec(),
        Tamper::Foreign => value["client_id"] = json!("another-client"),
        Tamper::Unreadable => value["v"] = json!(99),
        Tamper::Verifier { well_formed } => {
            value["verifier"] = json!(if well_formed {
                TAMPERED_VERIFIER
            } else {
                "not a verifier"
            })
        }
    }
    serde_json::to_vec(&value).unwrap_or_default()
}

/// What an adopting flow must make of `original` after `tamper`, at `wall`.
fn read_record(original: &[u8], tamper: Tamper, wall: SystemTime) -> Result<Read, DirEnd> {
    if tamper == Tamper::Unreadable {
        return Err(DirEnd::Unreadable);
    }
    let value: Value = serde_json::from_slice(original).map_err(|_| DirEnd::Unreadable)?;
    let deadline = value["deadline"].as_u64().ok_or(DirEnd::Unreadable)?;
    if UNIX_EPOCH + Duration::from_millis(deadline) <= wall {
        return Err(DirEnd::Expired);
    }
    let verifier = match tamper {
        Tamper::Foreign => return Err(DirEnd::Foreign),
        Tamper::Verifier { well_formed: false } => return Err(DirEnd::Unreadable),
        Tamper::Verifier { well_formed: true } => TAMPERED_VERIFIER.to_owned(),
        _ => value["verifier"].as_str().unwrap_or_default().to_owned(),
    };
    Ok(Read {
        owner: value["owner"].as_str().map(str::to_owned),
        verifier,
    })
}

impl Default for DirectorySim {
    fn default() -> DirectorySim {
        DirectorySim::new(Deployment::Web)
    }
}

impl crate::harness::OpModel for DirectorySim {
    type Op = DirectoryOp;

    fn step(&mut self, op: &DirectoryOp) -> Result<(), String> {
        self.apply(op).map(drop)
    }

    fn finish(&mut self) -> Result<(), String> {
        self.settle()
    }
}

/// [`DirectorySim`] on the web deployment with DPoP-bound logins
/// ([`DirectorySim::dpop`]), for [`run_ops`](crate::harness::run_ops).
#[derive(Clone)]
pub struct DpopSim(pub DirectorySim);

impl Default for DpopSim {
    fn default() -> DpopSim {
        DpopSim(DirectorySim::dpop(Deployment::Web))
    }
}

impl crate::harness::OpModel for DpopSim {
    type Op = DirectoryOp;

    fn step(&mut self, op: &DirectoryOp) -> Result<(), String> {
        self.0.step(op)
    }

    fn finish(&mut self) -> Result<(), String> {
        self.0.settle()
    }
}

/// The RFC 7638 thumbprint of the key in the DPoP proof of `request` (a P-256 `jwk`), when
/// the proof is made for a POST to the token endpoint.
fn proof_thumbprint(request: &http::Request<Vec<u8>>) -> Option<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let proof = request.headers().get("dpop")?.to_str().ok()?;
    let part = |i: usize| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(proof.split('.').nth(i)?).ok()?).ok()
    };
    let (header, claims) = (part(0)?, part(1)?);
    if header["typ"] != "dpop+jwt" || claims["htm"] != "POST" || claims["htu"] != harness::TOKEN {
        return None;
    }
    let coordinate = |name: &str| URL_SAFE_NO_PAD.decode(header["jwk"][name].as_str()?).ok();
    let public = latchkey::crypto::PublicKey::Ec {
        curve: latchkey::crypto::Curve::P256,
        x: coordinate("x")?,
        y: coordinate("y")?,
    };
    Some(latchkey::keys::thumbprint(&public))
}

/// [`DirectorySim`] on the [`Deployment::Loopback`] deployment, for
/// [`run_ops`](crate::harness::run_ops).
#[derive(Clone)]
pub struct LoopbackSim(pub DirectorySim);

impl Default for LoopbackSim {
    fn default() -> LoopbackSim {
        LoopbackSim(DirectorySim::new(Deployment::Loopback))
    }
}

impl crate::harness::OpModel for LoopbackSim {
    type Op = DirectoryOp;

    fn step(&mut self, op: &DirectoryOp) -> Result<(), String> {
        self.0.step(op)
    }

    fn finish(&mut self) -> Result<(), String> {
        self.0.settle()
    }
}

// ----- quickcheck generators -----

impl Arbitrary for DirectoryOp {
    fn arbitrary(g: &mut Gen) -> DirectoryOp {
        let index = |g: &mut Gen| u8::arbitrary(g);
        // Weighted so that logins are shared and opened, callbacks land on one replica or
        // several, takes are answered (often in a race), and logins reach the token
        // endpoint, the store and the announcement.
        match u8::arbitrary(g) % 30 {
            0..=2 => DirectoryOp::Start {
                replica: index(g),
                owner: index(g),
                shared: u8::arbitrary(g) % 6 != 0,
            },
            3..=7 => DirectoryOp::Callback {
                login: index(g),
                kind: CallbackKind::arbitrary(g),
                to: index(g),
                via: Via::arbitrary(g),
            },
            8..=11 => DirectoryOp::AnswerShare { target: index(g) },
            12..=17 => DirectoryOp::AnswerTake {
                target: index(g),
                tamper: Tamper::arbitrary(g),
            },
            18..=20 => DirectoryOp::AnswerToken {
                target: index(g),
                reply: TokenReply::arbitrary(g),
            },
            21..=22 => DirectoryOp::Persisted {
                target: index(g),
                ok: u8::arbitrary(g) % 5 != 0,
            },
            23 => DirectoryOp::Directory {
                up: u8::arbitrary(g) % 3 != 0,
            },
            24 => DirectoryOp::Cancel {
                replica: index(g),
                flow: index(g),
            },
            25..=26 => DirectoryOp::Deliver {
                target: index(g),
                drop: u8::arbitrary(g) % 5 == 0,
            },
            _ => DirectoryOp::Advance {
                millis: *g
                    .choose(&[
                        1, 500, 1_000, 10_000, 29_999, 30_000, 30_001, 60_000, 300_000, 599_999,
                        600_000, 600_001, 1_200_000,
                    ])
                    .unwrap_or(&1)
                    - 1,
                sleep: u8::arbitrary(g) % 4 == 0,
            },
        }
    }
}

impl Arbitrary for CallbackKind {
    fn arbitrary(g: &mut Gen) -> CallbackKind {
        match u8::arbitrary(g) % 10 {
            0..=6 => CallbackKind::Code,
            7 => CallbackKind::Denied,
            8 => CallbackKind::WrongIssuer,
            _ => CallbackKind::Forged(u8::arbitrary(g)),
        }
    }
}

impl Arbitrary for Via {
    fn arbitrary(g: &mut Gen) -> Via {
        match u8::arbitrary(g) % 4 {
            0 => Via::Query,
            1 => Via::Uri,
            _ => Via::Connection {
                split: u16::arbitrary(g),
            },
        }
    }
}

impl Arbitrary for Tamper {
    fn arbitrary(g: &mut Gen) -> Tamper {
        match u8::arbitrary(g) % 16 {
            0..=10 => Tamper::None,
            11..=12 => Tamper::Stale,
            13 => Tamper::Foreign,
            14 => Tamper::Unreadable,
            _ => Tamper::Verifier {
                well_formed: bool::arbitrary(g),
            },
        }
    }
}

impl Arbitrary for TokenReply {
    fn arbitrary(g: &mut Gen) -> TokenReply {
        match u8::arbitrary(g) % 6 {
            0..=3 => TokenReply::Tokens,
            4 => TokenReply::InvalidGrant,
            _ => TokenReply::Transport,
        }
    }
}
