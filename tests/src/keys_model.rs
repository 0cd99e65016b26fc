//! Logins whose ID tokens go through the engine's key-set cache ([`latchkey::oidc`]), and
//! what must hold whatever the provider's key endpoint and the clock do.
//!
//! A [`KeysOp`] names its target by index, so any sequence of ops is meaningful.
//! [`KeysSim::apply`] performs one op, drains the engine, answers every
//! [`Action::Persist`] at once, and checks every action against a model of what the cache
//! must know: the key set last fetched successfully and when, when the last refetch for an
//! unknown `kid` started, when the last fetch failed, and which fetch is in flight.
//!
//! - **one fetch at a time:** no [`Action::FetchKeys`] while another one is outstanding (an
//!   answered, failed or timed-out fetch is no longer outstanding);
//! - **back off after a failure:** no fetch within [`REFETCH_INTERVAL`] after a failed one
//!   (an error status, a body that is not a key set, a transport failure, the deadline
//!   passing: such a fetch failed at its deadline);
//! - **made-up keys cannot hammer the provider:** while the last key set is fresh (younger
//!   than [`MAX_AGE`]) a fetch can only be for a `kid` it lacks, and such refetches start
//!   at most once per [`REFETCH_INTERVAL`]; no fetch at all for a `kid` the fresh set has;
//! - **only verified tokens are stored:** an [`Action::Persist`] only for a login whose token
//!   names a key of the last key set fetched successfully, carries its own nonce and has not
//!   expired, with the identity it names; stale keys only within a minute of a failed fetch;
//! - **every refusal is the right one:** a login ends with the error its token earns from the
//!   last key set (`UnknownKey`, `Nonce`, `Expired`), or the last fetch's error while no key
//!   set was ever fetched; a decision with stale keys or none only within a minute of a
//!   failed fetch;
//! - **nobody waits for nothing:** a login that needs keys fetches them when nothing stops it,
//!   waits for the fetch in flight, or is decided at once; no login waits while no fetch is
//!   in flight;
//! - every login finishes exactly once, nothing names it afterwards, and one that was
//!   persisted finishes `Ok`; a late answer to a fetch changes nothing; after a drain
//!   `poll_timeout` is never in the past; nothing panics.
//!
//! For the last rules, which say when a fetch *must* start or a login *may* be decided with
//! stale keys, a fetch that timed out counts as failed from the input that noticed its
//! deadline had passed, as in the engine: after a long sleep, the minute of backing off
//! starts at the wake-up. (The "no fetch within a minute" rule counts from the deadline,
//! which is earlier, so it holds either way.)
//!
//! Signatures are accepted by a stand-in crypto provider ([`AcceptAnySignature`]): the
//! tokens are built here, naming `k1`, `k2` or the made-up `k9`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latchkey::oidc::{
    Algorithm, CryptoProvider, MAX_AGE, PublicKey, REFETCH_INTERVAL, SignatureError,
};
use latchkey::{
    Action, Engine, ExchangeId, FlowError, FlowId, IdTokenError, KeySetError, Provider, RequestId,
    TransportError, TransportErrorKind,
};
use quickcheck::{Arbitrary, Gen};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::harness::{
    self, AUTHORIZE, ISSUER, TOKEN, config_with, drain_checked, entropy_from, json_response,
    parse_response, pick, query_value,
};

/// The provider's key-set URI.
pub const JWKS_URI: &str = "https://idp.example/jwks";
/// The client id the tokens are issued to.
pub const CLIENT_ID: &str = "latchkey-test";
/// The engine's exchange timeout, which is also the deadline of a key-set fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest [`KeysOp::Advance`].
pub const MAX_ADVANCE_SECONDS: u16 = 15 * 60;
/// A nonce no login sent.
const FOREIGN_NONCE: &str = "n-0S6_WzA2Mj";

/// A crypto provider that accepts every signature: the model is about which keys the cache
/// has, not about signatures.
#[derive(Debug)]
pub struct AcceptAnySignature;

impl CryptoProvider for AcceptAnySignature {
    fn verify(
        &self,
        _: Algorithm,
        _: &PublicKey,
        _: &[u8],
        _: &[u8],
    ) -> Result<(), SignatureError> {
        Ok(())
    }
}

/// One thing a user, the provider or the clock can do.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum KeysOp {
    /// A login starts, its callback arrives and the token endpoint answers with an ID token
    /// signed (for the stand-in) by `key`.
    Login {
        /// The key the token's header names.
        key: Kid,
        /// What the token claims.
        claims: Claims,
    },
    /// The key-set endpoint answers the oldest or the newest fetch the driver has not
    /// answered yet (an old one may be past its deadline: a late answer).
    Answer {
        /// The newest, else the oldest.
        newest: bool,
        /// What it answers.
        reply: KeysReply,
    },
    /// Both clocks move forward by `seconds` (taken as 1 s to [`MAX_ADVANCE_SECONDS`]).
    Advance {
        /// How far.
        seconds: u16,
    },
    /// The application cancels a login in progress.
    Cancel {
        /// Index among the logins in progress.
        login: u8,
    },
}

/// The key a token names in its header (`kid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Kid {
    /// `k1`, in the key sets {k1} and {k1, k2}.
    K1,
    /// `k2`, rotated in: in {k1, k2} and {k2}.
    K2,
    /// `k9`, in no key set: a made-up key.
    K9,
}

impl Kid {
    /// The `kid` string.
    pub fn name(self) -> &'static str {
        match self {
            Kid::K1 => "k1",
            Kid::K2 => "k2",
            Kid::K9 => "k9",
        }
    }
}

/// What an ID token claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Claims {
    /// Everything right: the login's nonce, issued now, for an hour.
    Valid,
    /// A nonce the login did not send.
    WrongNonce,
    /// Expired an hour ago.
    Expired,
}

/// What the key-set endpoint answers.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum KeysReply {
    /// A key set with `k1`.
    K1,
    /// A key set with `k1` and `k2`.
    K1K2,
    /// A key set with `k2` only (`k1` rotated out).
    K2,
    /// An error status (taken as 400–599).
    Status(u16),
    /// `200` with a body that is not JSON (an HTML page, then these bytes).
    Garbage(Vec<u8>),
    /// The request fails in transport.
    Transport,
}

/// A login the model knows.
#[derive(Debug, Clone)]
struct Login {
    kid: Kid,
    claims: Claims,
    /// The nonce of its authorization URL.
    nonce: String,
    /// The ID token its token response carried.
    id_token: String,
    exchange: Option<ExchangeId>,
    cancelled: bool,
    /// It got `Persist`, and the store has (or has not yet) confirmed.
    persisted: bool,
    confirmed: bool,
    finished: bool,
}

/// A fetch the driver has not answered: its id and its deadline.
#[derive(Debug, Clone, Copy)]
struct Sent {
    id: RequestId,
    deadline: Instant,
}

/// The key set last fetched successfully, and when.
#[derive(Debug, Clone, Copy)]
struct Good {
    kids: &'static [&'static str],
    at: Instant,
}

/// What a login's token response must lead to, from the model's state before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The token is judged at once (persisted or refused), without a fetch.
    Decide,
    /// A fetch starts and the login waits for it.
    Fetch,
    /// The login waits for the fetch in flight.
    Wait,
}

/// An engine driven by [`KeysOp`]s, every rule checked.
#[derive(Clone)]
pub struct KeysSim {
    /// The engine.
    pub engine: Engine,
    now: Instant,
    wall: SystemTime,
    entropy: u64,
    logins: BTreeMap<FlowId, Login>,
    /// Fetches not answered by the driver, oldest first (timed-out ones stay, to be
    /// answered late).
    sent: Vec<Sent>,
    /// The fetch the engine waits for.
    in_flight: Option<Sent>,
    good: Option<Good>,
    /// When the last refetch for an unknown `kid` started.
    refetched_at: Option<Instant>,
    /// When the last fetch failed (for a timeout, its deadline), and when the engine learnt
    /// of it (for a timeout, the first input at or after the deadline), while no fetch
    /// succeeded since.
    failed_at: Option<Instant>,
    noticed_at: Option<Instant>,
    /// Why the last fetch failed, while no fetch succeeded since.
    last_error: Option<KeySetError>,
    /// The login whose token response is being handled (the only place a fetch starts).
    current: Option<FlowId>,
    /// The authorization URL of the login just started.
    opened: Option<(FlowId, String)>,
    /// Fetches started during the current op.
    fetches_started: usize,
    /// Logins that got `Persist` and wait for the store.
    to_confirm: Vec<FlowId>,
}

/// The test provider: `openid` only, EdDSA ID tokens checked with [`AcceptAnySignature`]
/// against the key set at [`JWKS_URI`].
pub fn provider() -> Provider {
    Provider::builder(AUTHORIZE, TOKEN, CLIENT_ID)
        .scopes(["openid"])
        .issuer(ISSUER)
        .jwks_uri(JWKS_URI)
        .id_token_algorithms([Algorithm::EdDSA])
        .crypto(Arc::new(AcceptAnySignature))
        .build()
        .expect("a valid provider")
}

/// Base64url without padding (RFC 4648 §5).
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS naming `kid`, with `claims` and a 64-byte signature (the length an
/// Ed25519 key needs; the stand-in accepts it).
pub fn id_token(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "EdDSA", "kid": kid});
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(&[7; 64])
    )
}

/// A key set with an Ed25519 key for each of `kids`.
pub fn key_set(kids: &[&str]) -> String {
    let keys: Vec<Value> = kids
        .iter()
        .map(|kid| {
            let x = match *kid {
                "k1" => "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".to_owned(),
                "k2" => b64url(&[2; 32]),
                _ => b64url(&[9; 32]),
            };
            json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x, "use": "sig"})
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn unix(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn since(now: Instant, at: Option<Instant>) -> Option<Duration> {
    at.map(|at| now.saturating_duration_since(at))
}

impl KeysSim {
    /// An engine for [`provider`] with no keys, on a virtual clock.
    pub fn new() -> KeysSim {
        let config = config_with(provider())
            .exchange_timeout(FETCH_TIMEOUT)
            .build()
            .expect("a valid configuration");
        KeysSim {
            engine: Engine::new(config).expect("the port is set"),
            now: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1_790_000_000),
            entropy: 0,
            logins: BTreeMap::new(),
            sent: Vec::new(),
            in_flight: None,
            good: None,
            refetched_at: None,
            failed_at: None,
            noticed_at: None,
            last_error: None,
            current: None,
            opened: None,
            fetches_started: 0,
            to_confirm: Vec::new(),
        }
    }

    /// Logins started and not finished, oldest first.
    pub fn in_progress(&self) -> Vec<FlowId> {
        self.logins
            .iter()
            .filter(|(_, login)| !login.finished)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Applies `op`, drains the engine (answering every `Persist` at once) and checks what
    /// it did. Returns the actions, or the first rule broken.
    pub fn apply(&mut self, op: &KeysOp) -> Result<Vec<Action>, String> {
        self.fetches_started = 0;
        let actions = match op {
            KeysOp::Login { key, claims } => self.login(*key, *claims)?,
            KeysOp::Answer { newest, reply } => self.answer(*newest, reply)?,
            KeysOp::Advance { seconds } => {
                let seconds = (seconds % (MAX_ADVANCE_SECONDS + 1)).max(1);
                self.advance(Duration::from_secs(u64::from(seconds)))?
            }
            KeysOp::Cancel { login } => {
                let mut actions = Vec::new();
                if let Some(flow) = pick(&self.in_progress(), *login) {
                    if let Some(login) = self.logins.get_mut(&flow) {
                        login.cancelled = true;
                    }
                    self.engine.cancel(self.now, flow);
                    actions = self.drain()?;
                    if !self.logins[&flow].finished {
                        return Err(format!("cancelled login {flow} did not finish"));
                    }
                }
                actions
            }
        };
        self.check_between()?;
        Ok(actions)
    }

    /// Lets time run out (two hours, answering nothing): then every login has finished and
    /// the engine holds nothing.
    pub fn settle(&mut self) -> Result<(), String> {
        self.fetches_started = 0;
        self.advance(Duration::from_secs(2 * 3600))?;
        self.check_between()?;
        harness::engine_idle(&self.engine, self.now, &self.in_progress())?;
        Ok(())
    }

    /// The model's verdict on `action` as if the engine emitted it now (while handling the
    /// token response of a login whose token names `during_login`, if given), judged on a
    /// copy: the simulation is unchanged. For showing that the rules bite.
    pub fn judge(&self, action: &Action, during_login: Option<Kid>) -> Result<(), String> {
        let mut copy = self.clone();
        if let Some(kid) = during_login {
            let flow = copy
                .logins
                .iter()
                .find(|(_, login)| login.kid == kid)
                .map(|(flow, _)| *flow)
                .ok_or_else(|| format!("no login with a token naming {kid:?}"))?;
            copy.current = Some(flow);
        }
        copy.check(action)
    }

    // ----- ops -----

    fn login(&mut self, kid: Kid, claims: Claims) -> Result<Vec<Action>, String> {
        self.entropy += 1;
        let flow = self
            .engine
            .start(self.now, entropy_from(self.entropy))
            .map_err(|error| format!("start failed: {error:?}"))?;
        let mut actions = self.drain()?;
        let url = match self.opened.take() {
            Some((opened, url)) if opened == flow => url,
            other => return Err(format!("start of {flow} opened {other:?}")),
        };
        let nonce = query_value(&url, "nonce").ok_or("no nonce in the authorization URL")?;
        let state = query_value(&url, "state").ok_or("no state in the authorization URL")?;
        let wall = unix(self.wall);
        let mut payload = json!({
            "iss": ISSUER,
            "sub": "jane",
            "aud": CLIENT_ID,
            "exp": wall + 3600,
            "iat": wall,
            "nonce": nonce,
            "email": "jane@example.com",
        });
        match claims {
            Claims::Valid => {}
            Claims::WrongNonce => payload["nonce"] = FOREIGN_NONCE.into(),
            Claims::Expired => {
                payload["exp"] = (wall - 3600).into();
                payload["iat"] = (wall - 7200).into();
            }
        }
        let token = id_token(kid.name(), &payload);
        self.logins.insert(
            flow,
            Login {
                kid,
                claims,
                nonce,
                id_token: token.clone(),
                exchange: None,
                cancelled: false,
                persisted: false,
                confirmed: false,
                finished: false,
            },
        );

        let callback = format!(
            "code=code-{}&state={state}&iss=https%3A%2F%2Fidp.example",
            self.entropy
        );
        match self.engine.handle_redirect(self.now, &callback) {
            Ok(called) if called == flow => {}
            other => return Err(format!("the callback of {flow} gave {other:?}")),
        }
        actions.extend(self.drain()?);
        let exchange = self.logins[&flow]
            .exchange
            .ok_or_else(|| format!("no token request for {flow}"))?;

        let expect = self.expect(kid);
        let body = json!({
            "access_token": format!("access-{}", self.entropy),
            "token_type": "Bearer",
            "expires_in": 3600,
            "id_token": token,
        });
        let response = parse_response(&json_response(200, &body.to_string()));
        self.current = Some(flow);
        self.engine
            .handle_token_response(self.now, self.wall, exchange, response);
        let drained = self.drain();
        self.current = None;
        actions.extend(drained?);

        let decided = self.logins[&flow].finished;
        match (expect, decided, self.fetches_started) {
            (Expect::Decide, true, 0) | (Expect::Fetch, false, 1) | (Expect::Wait, false, 0) => {
                Ok(actions)
            }
            (expect, decided, fetches) => Err(format!(
                "login {flow} ({kid:?}, {claims:?}) should {expect:?}; decided: {decided}, \
                 fetches started: {fetches}"
            )),
        }
    }

    fn answer(&mut self, newest: bool, reply: &KeysReply) -> Result<Vec<Action>, String> {
        if self.sent.is_empty() {
            return Ok(Vec::new());
        }
        let sent = self
            .sent
            .remove(if newest { self.sent.len() - 1 } else { 0 });
        let live = self.in_flight.is_some_and(|f| f.id == sent.id);
        // What the endpoint answers (`None`: a transport failure), and what the cache must
        // make of it: the key set, or the error.
        let (raw, outcome): (
            Option<Vec<u8>>,
            Result<&'static [&'static str], KeySetError>,
        ) = match reply {
            KeysReply::K1 => (Some(json_response(200, &key_set(&["k1"]))), Ok(&["k1"])),
            KeysReply::K1K2 => (
                Some(json_response(200, &key_set(&["k1", "k2"]))),
                Ok(&["k1", "k2"]),
            ),
            KeysReply::K2 => (Some(json_response(200, &key_set(&["k2"]))), Ok(&["k2"])),
            KeysReply::Status(status) => {
                let status = 400 + status % 200;
                let raw = json_response(status, r#"{"error":"unavailable"}"#);
                (Some(raw), Err(KeySetError::Status(status)))
            }
            KeysReply::Garbage(bytes) => {
                let mut body = b"<html><body>Sign in".to_vec();
                body.extend_from_slice(bytes);
                let mut raw = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                raw.extend_from_slice(&body);
                (Some(raw), Err(KeySetError::NotJson))
            }
            KeysReply::Transport => (None, Err(KeySetError::Transport(transport_error()))),
        };
        if live {
            self.in_flight = None;
            match outcome {
                Ok(kids) => {
                    self.good = Some(Good { kids, at: self.now });
                    self.failed_at = None;
                    self.noticed_at = None;
                    self.last_error = None;
                }
                Err(error) => {
                    self.failed_at = Some(self.now);
                    self.noticed_at = Some(self.now);
                    self.last_error = Some(error);
                }
            }
        }
        match raw {
            Some(raw) => {
                self.engine
                    .handle_keys_response(self.now, self.wall, sent.id, parse_response(&raw))
            }
            None => self
                .engine
                .handle_keys_failure(self.now, sent.id, transport_error()),
        }
        let actions = self.drain()?;
        if !live && !actions.is_empty() {
            return Err(format!(
                "a late answer to fetch {} changed something: {actions:?}",
                sent.id
            ));
        }
        Ok(actions)
    }

    fn advance(&mut self, by: Duration) -> Result<Vec<Action>, String> {
        self.now += by;
        self.wall += by;
        if let Some(fetch) = self.in_flight.filter(|f| f.deadline <= self.now) {
            // The deadline passed; the engine learns of it at this input.
            self.in_flight = None;
            self.failed_at = Some(fetch.deadline);
            self.noticed_at = Some(self.now);
            self.last_error = Some(KeySetError::TimedOut);
        }
        self.engine.handle_timeout(self.now);
        self.drain()
    }

    // ----- the model -----

    /// The last key set, while it is fresh.
    fn fresh(&self) -> Option<Good> {
        self.good.filter(|good| self.now < good.at + MAX_AGE)
    }

    /// Whether a fetch failed less than a minute ago (as the engine noticed it).
    fn backing_off(&self) -> bool {
        since(self.now, self.noticed_at).is_some_and(|d| d < REFETCH_INTERVAL)
    }

    /// What a token naming `kid` must lead to, now.
    fn expect(&self, kid: Kid) -> Expect {
        let fresh = self.fresh();
        if fresh.is_some_and(|good| good.kids.contains(&kid.name())) {
            return Expect::Decide;
        }
        if self.in_flight.is_some() {
            return Expect::Wait;
        }
        if self.backing_off() {
            return Expect::Decide;
        }
        let refetch_allowed =
            since(self.now, self.refetched_at).is_none_or(|d| d >= REFETCH_INTERVAL);
        match fresh {
            Some(_) if !refetch_allowed => Expect::Decide,
            _ => Expect::Fetch,
        }
    }

    /// Drains the engine, checking every action, then confirms every `Persist` and drains
    /// again, until nothing is left.
    fn drain(&mut self) -> Result<Vec<Action>, String> {
        let mut all = Vec::new();
        loop {
            let now = self.now;
            all.extend(drain_checked(
                self,
                now,
                |sim| &mut sim.engine,
                KeysSim::check,
            )?);
            let Some(flow) = self.to_confirm.pop() else {
                return Ok(all);
            };
            if let Some(login) = self.logins.get_mut(&flow) {
                login.confirmed = true;
            }
            self.engine.handle_persisted(self.now, flow, Ok(()));
            let after = drain_checked(self, now, |sim| &mut sim.engine, KeysSim::check)?;
            let finished_ok = after.iter().any(|action| {
                matches!(action, Action::Finished { flow: f, result: Ok(_) } if *f == flow)
            });
            if !finished_ok {
                return Err(format!(
                    "login {flow} was stored but did not finish Ok: {after:?}"
                ));
            }
            all.extend(after);
        }
    }

    /// The rules that hold between ops.
    fn check_between(&self) -> Result<(), String> {
        if let Some(at) = self.engine.poll_timeout() {
            if at <= self.now {
                return Err("poll_timeout lies in the past after a drain".into());
            }
        }
        let waiting = self.in_progress();
        if !waiting.is_empty() && self.in_flight.is_none() {
            return Err(format!(
                "logins {waiting:?} wait while no key-set fetch is in flight"
            ));
        }
        if self.engine.flows_in_progress() != waiting.len() {
            return Err(format!(
                "the engine has {} flows in progress, the model {}",
                self.engine.flows_in_progress(),
                waiting.len()
            ));
        }
        Ok(())
    }

    fn check(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::OpenBrowser { flow, url } => {
                if self.logins.contains_key(flow) || self.opened.is_some() {
                    return Err(format!("OpenBrowser for {flow}, not a new login"));
                }
                self.opened = Some((*flow, url.clone()));
            }
            Action::SendTokenRequest { flow, exchange, .. } => {
                let login = self.live(*flow, "SendTokenRequest")?;
                if login.exchange.replace(*exchange).is_some() {
                    return Err(format!("a second token request for {flow}"));
                }
            }
            Action::FetchKeys { id, request } => self.check_fetch(*id, request)?,
            Action::Persist { flow, tokens } => {
                let decided_with = self.check_decision(*flow)?;
                let login = &self.logins[flow];
                if login.cancelled || login.persisted {
                    return Err(format!(
                        "Persist for {flow}, cancelled or persisted already"
                    ));
                }
                if !decided_with.is_some_and(|kids| kids.contains(&login.kid.name())) {
                    return Err(format!(
                        "Persist for {flow}, whose token names {:?}, not in the last key set \
                         {decided_with:?}",
                        login.kid
                    ));
                }
                if login.claims != Claims::Valid {
                    return Err(format!(
                        "Persist for {flow}, whose token is {:?}",
                        login.claims
                    ));
                }
                if tokens.id_token().map(|t| t.expose_secret()) != Some(login.id_token.as_str()) {
                    return Err(format!("Persist for {flow} with another ID token"));
                }
                let identity = tokens.identity().ok_or("Persist without an identity")?;
                if (identity.iss(), identity.sub()) != (ISSUER, "jane") {
                    return Err(format!("Persist for {flow} with identity {identity:?}"));
                }
                let nonce = identity.string("nonce");
                if nonce != Some(login.nonce.as_str()) {
                    return Err(format!("Persist for {flow} with nonce {nonce:?}"));
                }
                if let Some(login) = self.logins.get_mut(flow) {
                    login.persisted = true;
                }
                self.to_confirm.push(*flow);
            }
            Action::Finished { flow, result } => {
                let login = self.live(*flow, "Finished")?.clone();
                match result {
                    Ok(tokens) if login.confirmed => {
                        if tokens.identity().is_none() {
                            return Err(format!("login {flow} finished Ok without an identity"));
                        }
                    }
                    Ok(_) => return Err(format!("login {flow} finished Ok but was never stored")),
                    Err(error) if login.persisted => {
                        return Err(format!("login {flow}, stored, finished with {error}"));
                    }
                    Err(FlowError::Cancelled) if login.cancelled => {}
                    Err(error) => self.check_refusal(*flow, &login, error)?,
                }
                if let Some(login) = self.logins.get_mut(flow) {
                    login.finished = true;
                }
            }
            other => return Err(format!("an action the model does not expect: {other:?}")),
        }
        Ok(())
    }

    /// A login the model knows and that has not finished.
    fn live(&mut self, flow: FlowId, what: &str) -> Result<&mut Login, String> {
        match self.logins.get_mut(&flow) {
            None => Err(format!("{what} for {flow}, never started")),
            Some(login) if login.finished => Err(format!("{what} for {flow}, finished already")),
            Some(login) => Ok(login),
        }
    }

    fn check_fetch(
        &mut self,
        id: RequestId,
        request: &http::Request<Vec<u8>>,
    ) -> Result<(), String> {
        if request.method() != http::Method::GET || request.uri() != JWKS_URI {
            return Err(format!(
                "a key-set fetch of {} {}",
                request.method(),
                request.uri()
            ));
        }
        if let Some(outstanding) = self.in_flight {
            return Err(format!(
                "FetchKeys {id} while fetch {} is outstanding",
                outstanding.id
            ));
        }
        if let Some(d) = since(self.now, self.failed_at).filter(|d| *d < REFETCH_INTERVAL) {
            return Err(format!("FetchKeys {id} {d:?} after a failed fetch"));
        }
        let kid = self
            .current
            .map(|flow| self.logins[&flow].kid)
            .ok_or_else(|| format!("FetchKeys {id} outside a token response"))?;
        if let Some(fresh) = self.fresh() {
            if fresh.kids.contains(&kid.name()) {
                return Err(format!(
                    "FetchKeys {id} for {kid:?} while the fresh key set {:?} has it",
                    fresh.kids
                ));
            }
            if let Some(d) = since(self.now, self.refetched_at).filter(|d| *d < REFETCH_INTERVAL) {
                return Err(format!(
                    "FetchKeys {id} for the unknown {kid:?} {d:?} after the last such refetch"
                ));
            }
            self.refetched_at = Some(self.now);
        }
        let sent = Sent {
            id,
            deadline: self.now + FETCH_TIMEOUT,
        };
        self.in_flight = Some(sent);
        self.sent.push(sent);
        self.fetches_started += 1;
        Ok(())
    }

    /// Checks that login `flow` may be decided now (persisted or refused for its token):
    /// with fresh keys, or with stale keys or none within a minute of a failed fetch.
    /// Returns the key set the decision must use.
    fn check_decision(&mut self, flow: FlowId) -> Result<Option<&'static [&'static str]>, String> {
        self.live(flow, "a decision")?;
        if self.fresh().is_none() && !self.backing_off() {
            return Err(format!(
                "login {flow} decided with stale keys or none, and no fetch failed in the last \
                 minute (keys: {:?})",
                self.good
            ));
        }
        Ok(self.good.map(|good| good.kids))
    }

    /// Checks that `error` is what the token of `login` earns from the last key set.
    fn check_refusal(
        &mut self,
        flow: FlowId,
        login: &Login,
        error: &FlowError,
    ) -> Result<(), String> {
        let kids = self.check_decision(flow)?;
        let expected = match kids {
            None => IdTokenError::KeySet(
                self.last_error
                    .clone()
                    .ok_or("no key set and no failed fetch")?,
            ),
            Some(kids) if !kids.contains(&login.kid.name()) => IdTokenError::UnknownKey,
            Some(_) => match login.claims {
                Claims::WrongNonce => IdTokenError::Nonce,
                Claims::Expired => IdTokenError::Expired,
                Claims::Valid => {
                    return Err(format!(
                        "login {flow}, valid and signed by a known key, failed with {error}"
                    ));
                }
            },
        };
        match error {
            FlowError::IdToken(got) if *got == expected => Ok(()),
            _ => Err(format!(
                "login {flow} ({:?}, {:?}) failed with {error:?}, expected {expected:?}",
                login.kid, login.claims
            )),
        }
    }
}

fn transport_error() -> TransportError {
    TransportError::new(TransportErrorKind::Connect, "connection refused")
}

impl Default for KeysSim {
    fn default() -> KeysSim {
        KeysSim::new()
    }
}

impl Arbitrary for KeysOp {
    fn arbitrary(g: &mut Gen) -> KeysOp {
        // Weighted so that sequences often have logins waiting, answers of every kind, and
        // time crossing the fetch deadline, the minute and the ten minutes.
        match u8::arbitrary(g) % 24 {
            0..=9 => KeysOp::Login {
                key: *g
                    .choose(&[Kid::K1, Kid::K1, Kid::K1, Kid::K2, Kid::K2, Kid::K9])
                    .unwrap_or(&Kid::K1),
                claims: *g
                    .choose(&[
                        Claims::Valid,
                        Claims::Valid,
                        Claims::Valid,
                        Claims::Valid,
                        Claims::WrongNonce,
                        Claims::Expired,
                    ])
                    .unwrap_or(&Claims::Valid),
            },
            10..=17 => KeysOp::Answer {
                newest: u8::arbitrary(g) % 4 != 0,
                reply: KeysReply::arbitrary(g),
            },
            18..=22 => KeysOp::Advance {
                seconds: *g
                    .choose(&[
                        1, 5, 29, 30, 31, 59, 60, 61, 90, 300, 540, 599, 600, 601, 900,
                    ])
                    .unwrap_or(&1),
            },
            _ => KeysOp::Cancel {
                login: u8::arbitrary(g),
            },
        }
    }
}

impl Arbitrary for KeysReply {
    fn arbitrary(g: &mut Gen) -> KeysReply {
        match u8::arbitrary(g) % 20 {
            0..=5 => KeysReply::K1,
            6..=10 => KeysReply::K1K2,
            11..=13 => KeysReply::K2,
            14..=15 => KeysReply::Status(u16::arbitrary(g)),
            16..=17 => KeysReply::Garbage(Vec::arbitrary(g)),
            _ => KeysReply::Transport,
        }
    }
}

impl crate::harness::OpModel for KeysSim {
    type Op = KeysOp;

    fn step(&mut self, op: &KeysOp) -> Result<(), String> {
        self.apply(op).map(drop)
    }

    fn finish(&mut self) -> Result<(), String> {
        self.settle()
    }
}
