//! DPoP logins (RFC 9449) under whatever the token endpoint answers, and the rules of S61
//! and S62 checked after every step.
//!
//! A [`DpopOp`] names its target by index, so any sequence of ops is meaningful. The
//! provider's answers are every shape that matters: a demand for a nonce (with a usable
//! nonce, an unusable one, or none), bound tokens, bearer tokens, a refusal, garbage, a
//! transport failure; and time passes.
//!
//! The rules:
//!
//! - **every request proves possession of the login's key:** each token request's `DPoP`
//!   header verifies (ring, with the key of its own `jwk` header), that key's thumbprint is
//!   the `dpop_jkt` of the login's authorization URL, `htm` is `POST`, `htu` the token
//!   endpoint, `iat` the wall-clock time it was finished at, and no `jti` repeats;
//! - **one retry, with the nonce asked for (S62):** a second request for one code comes
//!   only after a `use_dpop_nonce` answer with a usable `DPoP-Nonce`, carries that nonce,
//!   and there is never a third;
//! - **the newest nonce is used:** a first request carries the latest usable nonce any
//!   answer gave, or none before the first;
//! - **only bound tokens (S61):** tokens are stored only after an answer with `token_type`
//!   `DPoP`, with the login's key; bearer tokens end the login with
//!   [`BadTokenResponse::NotDpopBound`];
//! - every login ends exactly once, and nothing names it afterwards; late answers change
//!   nothing; nothing panics.
//!
//! [`DpopSessionSim`] holds the same rules for the refreshes of stored bound tokens
//! ([`DpopSessionOp`]): every refresh request proves possession of the tokens' key, one
//! retry with the nonce asked for, the newest nonce used, only bound tokens stored, and
//! with the same key; every call is answered once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey::crypto::{Algorithm, Curve, PublicKey};
use latchkey::{
    Action, BadTokenResponse, ExchangeId, FlowError, FlowId, ProviderRequest, TokenType,
    TransportError, TransportErrorKind, keys,
};
use quickcheck::{Arbitrary, Gen};
use serde_json::{Map, Value};

use crate::harness::{self, Harness, OpModel, query_value};

/// One thing that happens.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DpopOp {
    /// A DPoP login starts and its browser comes back: a token request follows.
    Login,
    /// The token endpoint answers request `target` (an index into those in flight).
    Answer {
        /// Which request.
        target: u8,
        /// How.
        reply: DpopReply,
    },
    /// Request `target` fails in transport.
    Fail {
        /// Which request.
        target: u8,
    },
    /// Time passes.
    Advance {
        /// How long, in seconds.
        seconds: u8,
    },
}

/// What the token endpoint answers.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DpopReply {
    /// `400 use_dpop_nonce`, with a usable `DPoP-Nonce` (numbered), an unusable one, or
    /// none.
    AskNonce(NonceHeader),
    /// `200` with DPoP-bound tokens, and maybe a new nonce.
    Bound(Option<u8>),
    /// `200` with bearer tokens.
    Bearer,
    /// `400 invalid_grant`.
    Refused,
    /// Not a token response.
    Garbage,
}

/// A `DPoP-Nonce` header of an answer.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum NonceHeader {
    /// A usable nonce, `n-<number>`.
    Usable(u8),
    /// One a proof cannot carry (a space and a quote in it).
    Unusable,
    /// None.
    Missing,
}

/// A request in flight.
struct InFlight {
    flow: FlowId,
    exchange: ExchangeId,
}

/// What the model knows of a login.
#[derive(Default)]
struct Login {
    /// The `dpop_jkt` of its authorization URL.
    jkt: String,
    /// Token requests sent for its code.
    requests: u32,
    /// The usable nonce its last answer asked for, when that answer was `use_dpop_nonce`.
    asked: Option<String>,
    ended: bool,
    /// Its last answer was bound tokens.
    bound_answer: bool,
    persisted: bool,
}

/// The engine under test and the model beside it.
pub struct DpopSim {
    h: Harness,
    logins: BTreeMap<FlowId, Login>,
    in_flight: Vec<InFlight>,
    /// Requests of logins that ended before they were answered.
    late: Vec<InFlight>,
    /// The latest usable nonce any answer carried.
    latest_nonce: Option<String>,
    jtis: BTreeSet<String>,
}

impl Default for DpopSim {
    fn default() -> DpopSim {
        let provider = harness::provider()
            .dpop(Algorithm::ES256)
            .crypto(latchkey_io::crypto::ring())
            .build()
            .expect("a DPoP provider");
        DpopSim {
            h: Harness::with(harness::config_with(provider).build().expect("a config")),
            logins: BTreeMap::new(),
            in_flight: Vec::new(),
            late: Vec::new(),
            latest_nonce: None,
            jtis: BTreeSet::new(),
        }
    }
}

impl OpModel for DpopSim {
    type Op = DpopOp;

    fn step(&mut self, op: &DpopOp) -> Result<(), String> {
        match *op {
            DpopOp::Login => {
                let started = self.h.start();
                let jkt = query_value(&started.url, "dpop_jkt").ok_or("no dpop_jkt")?;
                if self.logins.values().any(|login| login.jkt == jkt) {
                    return Err("two logins share a key".into());
                }
                self.logins.insert(
                    started.flow,
                    Login {
                        jkt,
                        ..Login::default()
                    },
                );
                let query = format!(
                    "code=code-{}&state={}&iss=https%3A%2F%2Fidp.example",
                    started.flow.get(),
                    started.state
                );
                let (_, actions) = self.h.callback(&query);
                self.check(actions)
            }
            DpopOp::Answer { target, reply } => {
                let Some(request) = self.take(target) else {
                    return Ok(());
                };
                let login = self.logins.entry(request.flow).or_default();
                login.asked = None;
                login.bound_answer = matches!(reply, DpopReply::Bound(_));
                let nonce = match reply {
                    DpopReply::AskNonce(header) => header_nonce(header),
                    DpopReply::Bound(Some(n)) => Some(format!("n-{n}")),
                    _ => None,
                };
                if let (DpopReply::AskNonce(NonceHeader::Usable(n)), Some(login)) =
                    (reply, self.logins.get_mut(&request.flow))
                {
                    login.asked = Some(format!("n-{n}"));
                }
                if let Some(nonce) = nonce.as_ref().filter(|nonce| !nonce.contains(' ')) {
                    self.latest_nonce = Some(nonce.clone());
                }
                let raw = answer(reply, nonce.as_deref());
                let actions = self.h.token_response(request.exchange, &raw);
                self.check(actions)
            }
            DpopOp::Fail { target } => {
                let Some(request) = self.take(target) else {
                    return Ok(());
                };
                if let Some(login) = self.logins.get_mut(&request.flow) {
                    login.asked = None;
                    login.bound_answer = false;
                }
                let failure = TransportError::new(TransportErrorKind::Io, "reset");
                self.h
                    .engine
                    .handle_token_failure(self.h.now, request.exchange, failure);
                let actions = self.h.drain();
                self.check(actions)
            }
            DpopOp::Advance { seconds } => {
                let actions = self.h.advance(Duration::from_secs(seconds.into()));
                self.check(actions)
            }
        }
    }

    fn finish(&mut self) -> Result<(), String> {
        let actions = self.h.advance(Duration::from_secs(3600));
        self.check(actions)?;
        // The requests of ended logins are answered late: nothing changes.
        for request in std::mem::take(&mut self.late) {
            let raw = answer(DpopReply::Bound(None), None);
            let actions = self.h.token_response(request.exchange, &raw);
            if !actions.is_empty() {
                return Err(format!("a late answer did something: {actions:?}"));
            }
        }
        match self.logins.iter().find(|(_, login)| !login.ended) {
            Some((flow, _)) => Err(format!("login {flow} never ended")),
            None => Ok(()),
        }
    }
}

impl DpopSim {
    /// The request in flight at `target` (modulo their number), taken out.
    fn take(&mut self, target: u8) -> Option<InFlight> {
        if self.in_flight.is_empty() {
            return None;
        }
        let index = usize::from(target) % self.in_flight.len();
        Some(self.in_flight.remove(index))
    }

    fn check(&mut self, actions: Vec<Action>) -> Result<(), String> {
        for action in actions {
            match action {
                Action::SendTokenRequest {
                    flow,
                    exchange,
                    request,
                } => {
                    self.check_request(flow, request)?;
                    self.in_flight.push(InFlight { flow, exchange });
                }
                Action::Persist { flow, tokens } => {
                    let login = self.logins.get_mut(&flow).ok_or("tokens of no login")?;
                    if !login.bound_answer || *tokens.token_type() != TokenType::DPoP {
                        return Err(format!("unbound tokens stored for {flow}"));
                    }
                    let key = tokens.dpop_key().ok_or("stored tokens without their key")?;
                    let signer = keys::Signer::new(key.clone(), latchkey_io::crypto::ring())
                        .map_err(|error| error.to_string())?;
                    if signer.thumbprint() != login.jkt {
                        return Err("stored tokens bound to another key".into());
                    }
                    login.persisted = true;
                    self.h.engine.handle_persisted(self.h.now, flow, Ok(()));
                    let more = self.h.drain();
                    self.check(more)?;
                }
                Action::Finished { flow, result } => {
                    let login = self.logins.get_mut(&flow).ok_or("end of no login")?;
                    if std::mem::replace(&mut login.ended, true) {
                        return Err(format!("login {flow} ended twice"));
                    }
                    let (ended, live) = std::mem::take(&mut self.in_flight)
                        .into_iter()
                        .partition(|request| request.flow == flow);
                    self.in_flight = live;
                    self.late.extend::<Vec<InFlight>>(ended);
                    match &result {
                        Ok(_) if !login.persisted => {
                            return Err("a login ended Ok without storing".into());
                        }
                        Err(FlowError::BadTokenResponse {
                            reason: BadTokenResponse::NotDpopBound,
                            ..
                        }) if login.bound_answer => {
                            return Err("bound tokens called unbound".into());
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The rules of one token request.
    fn check_request(&mut self, flow: FlowId, request: ProviderRequest) -> Result<(), String> {
        let latest = self.latest_nonce.clone();
        let login = self.logins.get_mut(&flow).ok_or("a request of no login")?;
        if login.ended {
            return Err(format!("a request for ended login {flow}"));
        }
        login.requests += 1;
        let expected_nonce = match login.requests {
            1 => latest,
            2 => Some(
                login
                    .asked
                    .take()
                    .ok_or("a second request without a nonce demand")?,
            ),
            n => return Err(format!("request {n} for one code")),
        };
        let sent = request
            .finish(self.h.wall)
            .map_err(|error| error.to_string())?;
        let (claims, key) = verified_proof(&sent)?;
        if keys::thumbprint(&key) != login.jkt {
            return Err("a proof with another key than the login's".into());
        }
        let expected = [
            ("htm", Value::from("POST")),
            ("htu", Value::from(harness::TOKEN)),
            ("iat", Value::from(unix(self.h.wall))),
        ];
        for (name, value) in expected {
            if claims.get(name) != Some(&value) {
                return Err(format!("proof {name} is {:?}", claims.get(name)));
            }
        }
        let nonce = claims
            .get("nonce")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if nonce != expected_nonce {
            return Err(format!(
                "proof nonce {nonce:?}, expected {expected_nonce:?}"
            ));
        }
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .ok_or("no jti")?
            .to_owned();
        if !self.jtis.insert(jti) {
            return Err("a jti repeated".into());
        }
        Ok(())
    }
}

fn unix(wall: std::time::SystemTime) -> u64 {
    wall.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn header_nonce(header: NonceHeader) -> Option<String> {
    match header {
        NonceHeader::Usable(n) => Some(format!("n-{n}")),
        NonceHeader::Unusable => Some("a \"bad\" nonce".into()),
        NonceHeader::Missing => None,
    }
}

/// The raw answer for `reply`, with `nonce` as its `DPoP-Nonce` header.
fn answer(reply: DpopReply, nonce: Option<&str>) -> Vec<u8> {
    let (status, body) = match reply {
        DpopReply::AskNonce(_) => (400, r#"{"error":"use_dpop_nonce"}"#),
        DpopReply::Bound(_) => (
            200,
            r#"{"access_token":"at","token_type":"DPoP","expires_in":3600}"#,
        ),
        DpopReply::Bearer => (
            200,
            r#"{"access_token":"at","token_type":"Bearer","expires_in":3600}"#,
        ),
        DpopReply::Refused => (400, r#"{"error":"invalid_grant"}"#),
        DpopReply::Garbage => (200, "<html>"),
    };
    let header = nonce.map_or(String::new(), |nonce| format!("DPoP-Nonce: {nonce}\r\n"));
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{header}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The claims of `request`'s `DPoP` header, its signature checked by ring with the P-256
/// key of its own `jwk` header, and that key.
fn verified_proof(
    request: &http::Request<Vec<u8>>,
) -> Result<(Map<String, Value>, PublicKey), String> {
    let proof = request
        .headers()
        .get("dpop")
        .ok_or("a token request without a proof")?
        .to_str()
        .map_err(|_| "a proof that is not text")?;
    let parts: Vec<&str> = proof.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err("a proof that is not a compact JWS".into());
    };
    let json = |part: &str| -> Result<Map<String, Value>, String> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let (header, claims) = (json(header)?, json(claims)?);
    if header.get("typ") != Some(&Value::from("dpop+jwt")) {
        return Err("a proof without typ dpop+jwt".into());
    }
    let coordinate = |name: &str| -> Result<Vec<u8>, String> {
        let text = header["jwk"][name]
            .as_str()
            .ok_or("a jwk without its point")?;
        URL_SAFE_NO_PAD.decode(text).map_err(|e| e.to_string())
    };
    let key = PublicKey::Ec {
        curve: Curve::P256,
        x: coordinate("x")?,
        y: coordinate("y")?,
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| e.to_string())?;
    let input = &proof.as_bytes()[..parts[0].len() + 1 + parts[1].len()];
    latchkey_io::crypto::ring()
        .verify(Algorithm::ES256, &key, input, &signature)
        .map_err(|error| format!("a proof that does not verify: {error}"))?;
    Ok((claims, key))
}

/// One thing that happens to a session holding DPoP-bound tokens.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DpopSessionOp {
    /// A caller asks for freshly refreshed tokens.
    Refresh,
    /// The refresh request in flight, if any, is answered.
    Answer(DpopReply),
    /// The refresh request in flight, if any, fails in transport.
    Fail,
    /// Time passes, in seconds.
    Advance(u8),
}

/// A session over a store of DPoP-bound tokens, and the model beside it.
pub struct DpopSessionSim {
    session: latchkey::session::Session,
    now: std::time::Instant,
    wall: std::time::SystemTime,
    /// What the store holds.
    stored: Option<latchkey::TokenSet>,
    /// The key the stored tokens were bound to.
    key_der: Vec<u8>,
    /// The thumbprint of the key the tokens are bound to.
    jkt: String,
    /// The refresh request in flight: its id, how many times it was sent, and when it
    /// times out.
    in_flight: Option<(latchkey::RequestId, u32, std::time::Instant)>,
    /// The usable nonce the last answer demanded.
    asked: Option<String>,
    latest_nonce: Option<String>,
    /// The last answer gave bound tokens.
    bound_answer: bool,
    calls: BTreeSet<latchkey::session::CallId>,
    jtis: BTreeSet<String>,
}

impl Default for DpopSessionSim {
    fn default() -> DpopSessionSim {
        let provider = harness::provider()
            .dpop(Algorithm::ES256)
            .crypto(latchkey_io::crypto::ring())
            .build()
            .expect("a DPoP provider");
        let signer =
            keys::Signer::generate(Algorithm::ES256, latchkey_io::crypto::ring()).expect("a key");
        let wall = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let stored = latchkey::TokenSet::new(secrecy::SecretString::from("at-0"))
            .with_refresh_token(secrecy::SecretString::from("rt-0"))
            .with_expires_at(wall + Duration::from_secs(3600))
            .with_dpop_key(signer.private_key().clone());
        DpopSessionSim {
            session: latchkey::session::Session::new(provider),
            now: std::time::Instant::now(),
            wall,
            key_der: signer.private_key().pkcs8_der().to_vec(),
            stored: Some(stored),
            jkt: signer.thumbprint().to_owned(),
            in_flight: None,
            asked: None,
            latest_nonce: None,
            bound_answer: false,
            calls: BTreeSet::new(),
            jtis: BTreeSet::new(),
        }
    }
}

impl OpModel for DpopSessionSim {
    type Op = DpopSessionOp;

    fn step(&mut self, op: &DpopSessionOp) -> Result<(), String> {
        match *op {
            DpopSessionOp::Refresh => {
                let call = self.session.refresh(self.now);
                self.calls.insert(call);
            }
            DpopSessionOp::Answer(reply) => {
                let Some((id, ..)) = self.in_flight else {
                    return Ok(());
                };
                self.asked = None;
                self.bound_answer = matches!(reply, DpopReply::Bound(_));
                let nonce = match reply {
                    DpopReply::AskNonce(header) => header_nonce(header),
                    DpopReply::Bound(Some(n)) => Some(format!("n-{n}")),
                    _ => None,
                };
                if let DpopReply::AskNonce(NonceHeader::Usable(n)) = reply {
                    self.asked = Some(format!("n-{n}"));
                }
                if let Some(nonce) = nonce.as_ref().filter(|nonce| !nonce.contains(' ')) {
                    self.latest_nonce = Some(nonce.clone());
                }
                let response = crate::harness::parse_response(&answer(reply, nonce.as_deref()));
                let before = self.in_flight;
                self.session
                    .handle_response(self.now, self.wall, id, response);
                self.drain()?;
                // Not sent again (with a nonce): that request is over.
                if self.in_flight == before {
                    self.in_flight = None;
                }
                return Ok(());
            }
            DpopSessionOp::Fail => {
                let Some((id, ..)) = self.in_flight.take() else {
                    return Ok(());
                };
                self.asked = None;
                let failure = TransportError::new(TransportErrorKind::Io, "reset");
                self.session.handle_failure(self.now, id, failure);
            }
            DpopSessionOp::Advance(seconds) => {
                let by = Duration::from_secs(seconds.into());
                self.now += by;
                self.wall += by;
                if self
                    .in_flight
                    .is_some_and(|(.., deadline)| deadline <= self.now)
                {
                    self.in_flight = None;
                    self.asked = None;
                }
                self.session.handle_timeout(self.now);
            }
        }
        self.drain()
    }

    fn finish(&mut self) -> Result<(), String> {
        self.now += Duration::from_secs(3600);
        self.wall += Duration::from_secs(3600);
        self.session.handle_timeout(self.now);
        self.drain()?;
        match self.calls.first() {
            Some(call) => Err(format!("call {call:?} never answered")),
            None => Ok(()),
        }
    }
}

impl DpopSessionSim {
    fn drain(&mut self) -> Result<(), String> {
        use latchkey::session::SessionAction;
        while let Some(action) = self.session.poll_action() {
            match action {
                SessionAction::Load { op } => {
                    let stored = self.stored.clone();
                    self.session
                        .handle_loaded(self.now, self.wall, op, Ok(stored));
                }
                // The refresh token was refused: the tokens are dead (S42).
                SessionAction::Delete { op, .. } => {
                    self.stored = None;
                    self.session.handle_deleted(self.now, op, Ok(()));
                }
                SessionAction::Save { op, tokens, .. } => {
                    if !self.bound_answer || *tokens.token_type() != TokenType::DPoP {
                        return Err("unbound tokens stored".into());
                    }
                    let key = tokens.dpop_key().ok_or("stored tokens without their key")?;
                    if key.pkcs8_der() != self.key_der {
                        return Err("refreshed tokens bound to another key".into());
                    }
                    self.stored = Some(tokens);
                    self.session.handle_saved(self.now, self.wall, op, Ok(()));
                }
                SessionAction::Send { id, request, .. } => self.check_send(id, request)?,
                SessionAction::Tokens { call, result } => {
                    if !self.calls.remove(&call) {
                        return Err(format!("call {call:?} answered twice"));
                    }
                    if let Ok(tokens) = &result
                        && tokens.dpop_key().is_none()
                    {
                        return Err("tokens handed out without their key".into());
                    }
                }
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        Ok(())
    }

    fn check_send(
        &mut self,
        id: latchkey::RequestId,
        request: ProviderRequest,
    ) -> Result<(), String> {
        let (sent, deadline) = match self.in_flight {
            None => {
                let timeout = latchkey::SessionOptions::default().request_timeout;
                (1, self.now + timeout)
            }
            Some((current, ..)) if current != id => {
                return Err("two refresh requests in flight".into());
            }
            Some((_, sent, deadline)) => (sent + 1, deadline),
        };
        let expected_nonce = match sent {
            1 => self.latest_nonce.clone(),
            2 => Some(
                self.asked
                    .take()
                    .ok_or("a second request without a nonce demand")?,
            ),
            n => return Err(format!("request {n} for one refresh")),
        };
        self.in_flight = Some((id, sent, deadline));
        let request = request
            .finish(self.wall)
            .map_err(|error| error.to_string())?;
        let (claims, key) = verified_proof(&request)?;
        if keys::thumbprint(&key) != self.jkt {
            return Err("a refresh proof with another key than the tokens'".into());
        }
        if claims.get("htu") != Some(&Value::from(harness::TOKEN)) {
            return Err(format!("refresh proof htu {:?}", claims.get("htu")));
        }
        let nonce = claims
            .get("nonce")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if nonce != expected_nonce {
            return Err(format!(
                "proof nonce {nonce:?}, expected {expected_nonce:?}"
            ));
        }
        let jti = claims.get("jti").and_then(Value::as_str).ok_or("no jti")?;
        if !self.jtis.insert(jti.to_owned()) {
            return Err("a jti repeated".into());
        }
        Ok(())
    }
}

impl Arbitrary for DpopSessionOp {
    fn arbitrary(g: &mut Gen) -> DpopSessionOp {
        match u8::arbitrary(g) % 8 {
            0..=1 => DpopSessionOp::Refresh,
            2..=5 => DpopSessionOp::Answer(DpopReply::arbitrary(g)),
            6 => DpopSessionOp::Fail,
            _ => DpopSessionOp::Advance(*g.choose(&[1, 10, 29, 30, 31, 120]).unwrap_or(&1)),
        }
    }
}

impl Arbitrary for DpopOp {
    fn arbitrary(g: &mut Gen) -> DpopOp {
        match u8::arbitrary(g) % 10 {
            0..=1 => DpopOp::Login,
            2..=7 => DpopOp::Answer {
                target: u8::arbitrary(g),
                reply: DpopReply::arbitrary(g),
            },
            8 => DpopOp::Fail {
                target: u8::arbitrary(g),
            },
            _ => DpopOp::Advance {
                seconds: *g.choose(&[1, 10, 29, 30, 31, 120]).unwrap_or(&1),
            },
        }
    }
}

impl Arbitrary for DpopReply {
    fn arbitrary(g: &mut Gen) -> DpopReply {
        let nonce = u8::arbitrary(g) % 4;
        match u8::arbitrary(g) % 8 {
            0..=2 => DpopReply::AskNonce(match u8::arbitrary(g) % 4 {
                0 => NonceHeader::Unusable,
                1 => NonceHeader::Missing,
                _ => NonceHeader::Usable(nonce),
            }),
            3..=4 => DpopReply::Bound(bool::arbitrary(g).then_some(nonce)),
            5 => DpopReply::Bearer,
            6 => DpopReply::Refused,
            _ => DpopReply::Garbage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_demand_then_bound_tokens_is_one_stored_login() {
        let mut sim = DpopSim::default();
        let ops = [
            DpopOp::Login,
            DpopOp::Answer {
                target: 0,
                reply: DpopReply::AskNonce(NonceHeader::Usable(7)),
            },
            DpopOp::Answer {
                target: 0,
                reply: DpopReply::Bound(None),
            },
        ];
        for op in &ops {
            sim.step(op).unwrap();
        }
        sim.finish().unwrap();
        let login = sim.logins.values().next().unwrap();
        assert_eq!((login.requests, login.persisted), (2, true));
    }
}
