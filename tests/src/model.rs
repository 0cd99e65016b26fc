//! What a driver can do to an engine, and what must hold whatever it does.
//!
//! An [`Op`] names its targets by index into the ids seen so far, so any sequence of ops is
//! meaningful. [`Sim::apply`] performs one op, drains the engine and checks every action
//! against the invariants:
//!
//! - each flow finishes exactly once, and no action names it afterwards;
//! - at most one token request per flow, and only after a callback carrying that flow's
//!   `state` was delivered;
//! - the token request's `redirect_uri` equals the authorization URL's;
//! - each connection is answered or closed at most once, and never written to afterwards;
//! - after a drain, `poll_timeout` is never in the past.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use latchkey::{
    Action, Config, ConnId, Engine, ExchangeId, FlowError, FlowId, FlowOptions, StoreError,
    TransportError, TransportErrorKind,
};
use quickcheck::{Arbitrary, Gen};

use crate::harness::{self, chromium_get, entropy_from, pick, query_value};

/// One thing a driver (or the world behind it) can do.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// Start a flow, optionally for one of a few owners.
    Start {
        /// Owner key index, if any.
        owner: Option<u8>,
    },
    /// Cancel a known flow.
    Cancel {
        /// Flow index.
        flow: u8,
    },
    /// Accept a browser connection.
    Accept,
    /// Arbitrary bytes on a known connection.
    Bytes {
        /// Connection index.
        conn: u8,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A well-formed browser request on a new connection, split in two at `split`.
    Request {
        /// What the request carries.
        kind: CallbackKind,
        /// Where to split the bytes.
        split: u16,
    },
    /// The browser closed a known connection.
    Eof {
        /// Connection index.
        conn: u8,
    },
    /// A callback forwarded by the application's UI.
    Redirect {
        /// What it carries.
        kind: CallbackKind,
    },
    /// The token endpoint answered a known exchange.
    TokenResponse {
        /// Exchange index.
        exchange: u8,
        /// What it answered.
        reply: Reply,
    },
    /// A known exchange failed in transport.
    TokenFailure {
        /// Exchange index.
        exchange: u8,
    },
    /// The store reported on a flow that asked to persist.
    Persisted {
        /// Index among flows that asked.
        flow: u8,
        /// Success or failure.
        ok: bool,
    },
    /// Time passes.
    Advance {
        /// How far, in milliseconds.
        millis: u32,
    },
}

/// The content of a browser request.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CallbackKind {
    /// A code for a known flow, with the right `iss`.
    Code(u8),
    /// `error=access_denied` for a known flow.
    Denied(u8),
    /// A code for a known flow with a foreign `iss`.
    WrongIssuer(u8),
    /// A known flow's state twice.
    RepeatedState(u8),
    /// A code with a state nobody issued.
    UnknownState(u64),
    /// Some other path.
    StrayPath(String),
}

/// A token endpoint's answer.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Reply {
    /// A good JSON token response.
    Tokens,
    /// `400 invalid_grant`.
    InvalidGrant,
    /// GitHub's style: `200` with an error.
    ErrorWith200,
    /// Arbitrary body bytes with a status.
    Garbage(u16, Vec<u8>),
}

/// What the checker knows of a flow.
#[derive(Debug, Clone, Default)]
struct FlowRecord {
    state: String,
    redirect_uri: String,
    state_delivered: bool,
    token_requests: u32,
    awaiting_persist: bool,
    finished: Option<Result<(), FlowError>>,
}

/// An engine driven by [`Op`]s with every invariant checked.
#[derive(Clone)]
pub struct Sim {
    /// The engine.
    pub engine: Engine,
    /// Virtual time.
    pub now: Instant,
    wall: SystemTime,
    starts: u64,
    flows: BTreeMap<FlowId, FlowRecord>,
    flow_order: Vec<FlowId>,
    conns: Vec<ConnId>,
    answered: BTreeSet<ConnId>,
    exchanges: Vec<ExchangeId>,
    answered_exchanges: BTreeSet<ExchangeId>,
}

impl Sim {
    /// A simulation of the default test configuration.
    pub fn new() -> Sim {
        Sim::with(harness::config().build().expect("valid test config"))
    }

    /// A simulation of `config`.
    pub fn with(config: Config) -> Sim {
        Sim {
            engine: Engine::new(config).expect("port set"),
            now: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000),
            starts: 0,
            flows: BTreeMap::new(),
            flow_order: Vec::new(),
            conns: Vec::new(),
            answered: BTreeSet::new(),
            exchanges: Vec::new(),
            answered_exchanges: BTreeSet::new(),
        }
    }

    /// Flows started so far.
    pub fn flows(&self) -> &[FlowId] {
        &self.flow_order
    }

    /// Whether `flow` finished, and how.
    pub fn outcome(&self, flow: FlowId) -> Option<&Result<(), FlowError>> {
        self.flows
            .get(&flow)
            .and_then(|record| record.finished.as_ref())
    }

    /// The state of `flow`.
    pub fn state_of(&self, flow: FlowId) -> Option<&str> {
        self.flows.get(&flow).map(|record| record.state.as_str())
    }

    /// Flows still waiting for their callback: started, no token request, not finished.
    pub fn waiting(&self) -> Vec<FlowId> {
        self.flows
            .iter()
            .filter(|(_, record)| record.finished.is_none() && record.token_requests == 0)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Flows not finished yet.
    pub fn unfinished(&self) -> Vec<FlowId> {
        self.flows
            .iter()
            .filter(|(_, record)| record.finished.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Applies `op`, drains the engine and checks the actions. Returns them, or the first
    /// violated invariant.
    pub fn apply(&mut self, op: &Op) -> Result<Vec<Action>, String> {
        match op {
            Op::Start { owner } => {
                self.starts += 1;
                let mut options = FlowOptions::new();
                if let Some(owner) = owner {
                    options = options.owner(format!("user-{}", owner % 3));
                }
                let entropy = entropy_from(self.starts);
                self.engine
                    .start_with(self.now, entropy, options)
                    .map_err(|e| format!("start failed with fresh entropy: {e}"))?;
            }
            Op::Cancel { flow } => {
                if let Some(flow) = pick(&self.flow_order, *flow) {
                    self.engine.cancel(self.now, flow);
                }
            }
            Op::Accept => {
                if let Some(conn) = self.engine.handle_accept(self.now) {
                    self.conns.push(conn);
                }
            }
            Op::Bytes { conn, bytes } => {
                if let Some(conn) = pick(&self.conns, *conn) {
                    self.engine.handle_bytes(self.now, conn, bytes);
                }
            }
            Op::Request { kind, split } => {
                if let Some(conn) = self.engine.handle_accept(self.now) {
                    self.conns.push(conn);
                    let bytes = chromium_get(&format!("/callback?{}", self.query_for(kind)));
                    let split = usize::from(*split) % (bytes.len() + 1);
                    self.engine.handle_bytes(self.now, conn, &bytes[..split]);
                    self.check_drain()?;
                    self.engine.handle_bytes(self.now, conn, &bytes[split..]);
                }
            }
            Op::Eof { conn } => {
                if let Some(conn) = pick(&self.conns, *conn) {
                    self.engine.handle_eof(self.now, conn);
                }
            }
            Op::Redirect { kind } => {
                let uri = format!(
                    "docker-desktop://dashboard/extension-tab?extensionId=x&{}",
                    self.query_for(kind)
                );
                // Accepted or rejected, the actions tell; the result is checked by properties.
                let _ = self.engine.handle_redirect(self.now, &uri);
            }
            Op::TokenResponse { exchange, reply } => {
                if let Some(exchange) = self.exchange_target(*exchange) {
                    let raw = match reply {
                        Reply::Tokens => harness::token_ok(),
                        Reply::InvalidGrant => {
                            harness::json_response(400, r#"{"error":"invalid_grant"}"#)
                        }
                        Reply::ErrorWith200 => {
                            harness::json_response(200, r#"{"error":"bad_verification_code"}"#)
                        }
                        Reply::Garbage(status, body) => harness::garbage_response(*status, body),
                    };
                    let mut reader = latchkey::http1::ResponseReader::new(1 << 20);
                    match reader.read(&raw) {
                        Ok(Some(response)) => self
                            .engine
                            .handle_token_response(self.now, self.wall, exchange, response),
                        _ => self.engine.handle_token_failure(
                            self.now,
                            exchange,
                            TransportError::new(TransportErrorKind::Protocol, "unreadable"),
                        ),
                    }
                }
            }
            Op::TokenFailure { exchange } => {
                if let Some(exchange) = self.exchange_target(*exchange) {
                    let error =
                        TransportError::new(TransportErrorKind::Connect, "connection refused");
                    self.engine.handle_token_failure(self.now, exchange, error);
                }
            }
            Op::Persisted { flow, ok } => {
                let waiting: Vec<FlowId> = self
                    .flows
                    .iter()
                    .filter(|(_, record)| record.awaiting_persist)
                    .map(|(id, _)| *id)
                    .collect();
                if let Some(flow) = pick(&waiting, *flow) {
                    if let Some(record) = self.flows.get_mut(&flow) {
                        record.awaiting_persist = false;
                    }
                    let result = if *ok {
                        Ok(())
                    } else {
                        Err(StoreError::new("disk full"))
                    };
                    self.engine.handle_persisted(self.now, flow, result);
                }
            }
            Op::Advance { millis } => {
                self.now += Duration::from_millis(u64::from(*millis));
                self.wall += Duration::from_millis(u64::from(*millis));
                self.engine.handle_timeout(self.now);
            }
        }
        self.check_drain()
    }

    /// Advances time until every timer has fired.
    pub fn run_out_the_clock(&mut self) -> Result<Vec<Action>, String> {
        let mut all = Vec::new();
        while let Some(at) = self.engine.poll_timeout() {
            let millis = at.saturating_duration_since(self.now).as_millis() + 1;
            all.extend(self.apply(&Op::Advance {
                millis: u32::try_from(millis).unwrap_or(u32::MAX),
            })?);
        }
        Ok(all)
    }

    /// Mostly an exchange still waiting for its answer; sometimes any, late answers included.
    fn exchange_target(&mut self, index: u8) -> Option<ExchangeId> {
        let exchange = if index % 4 == 0 {
            pick(&self.exchanges, index / 4)
        } else {
            let open: Vec<ExchangeId> = self
                .exchanges
                .iter()
                .filter(|x| !self.answered_exchanges.contains(x))
                .copied()
                .collect();
            pick(&open, index / 4)
        }?;
        self.answered_exchanges.insert(exchange);
        Some(exchange)
    }

    /// The query a request of `kind` carries; the flow it names counts as delivered its
    /// state from now on.
    pub fn query_for(&mut self, kind: &CallbackKind) -> String {
        let mut state_of = |index: u8| {
            let flow = pick(&self.flow_order, index)?;
            let record = self.flows.get_mut(&flow)?;
            record.state_delivered = true;
            Some(record.state.clone())
        };
        let iss = "iss=https%3A%2F%2Fidp.example";
        match kind {
            CallbackKind::Code(i) => match state_of(*i) {
                Some(state) => format!("code=c0de&state={state}&{iss}"),
                None => format!("code=c0de&state=none&{iss}"),
            },
            CallbackKind::Denied(i) => format!(
                "error=access_denied&state={}&{iss}",
                state_of(*i).unwrap_or_default()
            ),
            CallbackKind::WrongIssuer(i) => format!(
                "code=c0de&state={}&iss=https%3A%2F%2Fevil.example",
                state_of(*i).unwrap_or_default()
            ),
            CallbackKind::RepeatedState(i) => {
                let state = pick(&self.flow_order, *i)
                    .and_then(|flow| self.flows.get(&flow))
                    .map(|record| record.state.clone())
                    .unwrap_or_default();
                format!("code=c0de&state={state}&state={state}&{iss}")
            }
            CallbackKind::UnknownState(n) => format!("code=c0de&state=forged{n}&{iss}"),
            CallbackKind::StrayPath(path) => format!("x=1&path={path}"),
        }
    }

    /// Drains the engine and checks every action.
    fn check_drain(&mut self) -> Result<Vec<Action>, String> {
        let now = self.now;
        harness::drain_checked(self, now, |sim| &mut sim.engine, Sim::check)
    }

    fn check(&mut self, action: &Action) -> Result<(), String> {
        let live = |flows: &BTreeMap<FlowId, FlowRecord>, flow: &FlowId| -> Result<(), String> {
            match flows.get(flow) {
                None => Err(format!("action for unknown flow {flow}")),
                Some(record) if record.finished.is_some() => {
                    Err(format!("action for flow {flow} after it finished"))
                }
                Some(_) => Ok(()),
            }
        };
        match action {
            Action::OpenBrowser { flow, url } => {
                if self.flows.contains_key(flow) {
                    return Err(format!("flow {flow} opened twice"));
                }
                let record = FlowRecord {
                    state: query_value(url, "state").ok_or("URL without state")?,
                    redirect_uri: query_value(url, "redirect_uri")
                        .ok_or("URL without redirect_uri")?,
                    ..FlowRecord::default()
                };
                self.flows.insert(*flow, record);
                self.flow_order.push(*flow);
            }
            Action::Respond { conn, .. } | Action::Close { conn } => {
                if !self.answered.insert(*conn) {
                    return Err(format!("connection {conn} answered twice"));
                }
            }
            Action::SendTokenRequest {
                flow,
                exchange,
                request,
            } => {
                live(&self.flows, flow)?;
                let record = self.flows.get_mut(flow).ok_or("unknown flow")?;
                record.token_requests += 1;
                if record.token_requests > 1 {
                    return Err(format!("flow {flow} sent a second token request"));
                }
                if !record.state_delivered {
                    return Err(format!(
                        "flow {flow} exchanged a code without its state being delivered"
                    ));
                }
                let body =
                    std::str::from_utf8(request.request().body()).map_err(|_| "body not UTF-8")?;
                if query_value(body, "redirect_uri").as_deref()
                    != Some(record.redirect_uri.as_str())
                {
                    return Err(
                        "token request redirect_uri differs from the authorization URL's".into(),
                    );
                }
                self.exchanges.push(*exchange);
            }
            Action::FetchKeys { .. } => {
                return Err("a key-set fetch for a provider that does not verify ID tokens".into());
            }
            Action::RequestDeviceCode { .. } | Action::ShowUserCode { .. } => {
                return Err("a device-grant action in a model of browser logins".into());
            }
            Action::PushAuthorization { .. } => {
                return Err(
                    "a pushed authorization request for a provider that pushes none".into(),
                );
            }
            Action::ShareFlow { .. }
            | Action::TakeFlow { .. }
            | Action::SpendFlow { .. }
            | Action::AnnounceOutcome { .. } => {
                return Err("a flow-directory action from an engine without one".into());
            }
            Action::Persist { flow, .. } => {
                live(&self.flows, flow)?;
                let record = self.flows.get_mut(flow).ok_or("unknown flow")?;
                if record.token_requests != 1 {
                    return Err(format!("flow {flow} persists without a token request"));
                }
                record.awaiting_persist = true;
            }
            Action::Finished { flow, result } => {
                live(&self.flows, flow)?;
                let record = self.flows.get_mut(flow).ok_or("unknown flow")?;
                record.awaiting_persist = false;
                record.finished = Some(result.as_ref().map(|_| ()).map_err(Clone::clone));
            }
        }
        Ok(())
    }
}

impl Default for Sim {
    fn default() -> Sim {
        Sim::new()
    }
}

/// Everything an action says, secrets included (its `Debug` redacts them), for comparing
/// two runs.
pub fn fingerprint(action: &Action) -> String {
    match action {
        Action::OpenBrowser { flow, url } => format!("open {flow} {url}"),
        Action::Respond { conn, bytes, .. } => format!("respond {conn} {bytes:?}"),
        Action::Close { conn } => format!("close {conn}"),
        Action::SendTokenRequest {
            flow,
            exchange,
            request,
        } => format!(
            "token {flow} {exchange} {} {:?} {}",
            request.request().uri(),
            request.request().headers(),
            String::from_utf8_lossy(request.request().body())
        ),
        Action::FetchKeys { id, request } => format!("fetch {id} {}", request.uri()),
        Action::PushAuthorization {
            flow,
            exchange,
            request,
        } => format!(
            "push {flow} {exchange} {} {}",
            request.request().uri(),
            String::from_utf8_lossy(request.request().body())
        ),
        Action::RequestDeviceCode {
            flow,
            exchange,
            request,
        } => format!(
            "device {flow} {exchange} {} {}",
            request.request().uri(),
            String::from_utf8_lossy(request.request().body())
        ),
        Action::ShowUserCode {
            flow,
            authorization,
        } => format!("show {flow} {authorization:?}"),
        Action::Persist { flow, tokens } => format!("persist {flow} {tokens:?}"),
        Action::ShareFlow {
            flow,
            key,
            record,
            lifetime,
        } => format!(
            "share {flow} {key} {} {lifetime:?}",
            String::from_utf8_lossy(record.expose_bytes())
        ),
        Action::TakeFlow { flow, take, key } => format!("take {flow} {take} {key}"),
        Action::SpendFlow { key } => format!("spend {key}"),
        Action::AnnounceOutcome { announcement } => {
            format!(
                "announce {}",
                String::from_utf8_lossy(&announcement.to_bytes())
            )
        }
        Action::Finished { flow, result } => format!("finished {flow} {result:?}"),
    }
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        let index = |g: &mut Gen| u8::arbitrary(g);
        // Weighted so that sequences often reach the token exchange and storage.
        match u8::arbitrary(g) % 32 {
            0..=3 => Op::Start {
                owner: Option::<u8>::arbitrary(g),
            },
            4 => Op::Cancel { flow: index(g) },
            5..=6 => Op::Accept,
            7..=8 => Op::Bytes {
                conn: index(g),
                bytes: mutated_request(g),
            },
            9..=14 => Op::Request {
                kind: CallbackKind::arbitrary(g),
                split: u16::arbitrary(g),
            },
            15 => Op::Eof { conn: index(g) },
            16..=17 => Op::Redirect {
                kind: CallbackKind::arbitrary(g),
            },
            18..=21 => Op::TokenResponse {
                exchange: index(g),
                reply: Reply::arbitrary(g),
            },
            22 => Op::TokenFailure { exchange: index(g) },
            23..=26 => Op::Persisted {
                flow: index(g),
                ok: u8::arbitrary(g) % 4 != 0,
            },
            _ => Op::Advance {
                millis: *g
                    .choose(&[1, 500, 2_000, 9_999, 10_000, 30_001, 600_001])
                    .unwrap_or(&1),
            },
        }
    }
}

impl Arbitrary for CallbackKind {
    fn arbitrary(g: &mut Gen) -> CallbackKind {
        let i = u8::arbitrary(g);
        match u8::arbitrary(g) % 8 {
            0..=2 => CallbackKind::Code(i),
            3 => CallbackKind::Denied(i),
            4 => CallbackKind::WrongIssuer(i),
            5 => CallbackKind::RepeatedState(i),
            6 => CallbackKind::UnknownState(u64::arbitrary(g)),
            _ => CallbackKind::StrayPath(String::arbitrary(g)),
        }
    }
}

impl Arbitrary for Reply {
    fn arbitrary(g: &mut Gen) -> Reply {
        match u8::arbitrary(g) % 6 {
            0..=2 => Reply::Tokens,
            3 => Reply::InvalidGrant,
            4 => Reply::ErrorWith200,
            _ => Reply::Garbage(u16::arbitrary(g), Vec::arbitrary(g)),
        }
    }
}

/// Random bytes, or a real request with a few bytes changed, truncated or extended.
fn mutated_request(g: &mut Gen) -> Vec<u8> {
    if bool::arbitrary(g) {
        return Vec::arbitrary(g);
    }
    let mut bytes = chromium_get(
        g.choose(&["/callback?code=x&state=y", "/favicon.ico", "/"])
            .copied()
            .unwrap_or("/"),
    );
    for _ in 0..u8::arbitrary(g) % 4 {
        let at = usize::arbitrary(g) % bytes.len();
        bytes[at] = u8::arbitrary(g);
    }
    bytes.truncate(usize::arbitrary(g) % (bytes.len() + 1));
    bytes
}
