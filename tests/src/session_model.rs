//! What callers, a provider, a store and the clocks can do to a token lifecycle machine
//! ([`latchkey::Session`]), and what must hold whatever they do.
//!
//! A [`SessionOp`] names its target by index, so any sequence of ops is meaningful.
//! [`SessionSim::apply`] performs one op, drains the session and checks every action
//! against a model of the store and the provider:
//!
//! - **one refresh in flight:** a refresh request is never sent while another one the
//!   session still waits for (its deadline not passed) is out;
//! - **no rotated refresh token is lost:** the refresh token of the last refresh answer the
//!   session accepted (or of the first login) is the one every later refresh request and
//!   every save carries, and after each step it is in the store, or in a save under way, or
//!   held by the session to be stored first next time, until the tokens are deleted;
//! - **persist before deliver:** every token set handed to a caller is the one the store
//!   holds at that moment;
//! - **logout always deletes:** a logout that answers `Ok` has deleted the stored tokens,
//!   and every logout asked for deletes them once the store answers;
//! - one store operation at a time; each call answered exactly once; after a drain,
//!   `poll_timeout` is never in the past; nothing panics.
//!
//! Time runs on two clocks: the monotonic one only forward, the wall clock forward and
//! backward.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latchkey::http1::ResponseReader;
use latchkey::{
    CallId, ClientAuth, DeleteReason, Provider, Purpose, RequestId, SaveReason, Session,
    SessionAction, SessionError, SessionOptions, StoreError, StoreOpId, TokenSet, TransportError,
    TransportErrorKind,
};
use quickcheck::{Arbitrary, Gen};

use crate::harness::{drain_checked, garbage_response, json_response, pick};
use secrecy::{ExposeSecret, SecretString};

/// One thing a caller, the provider, the store or the clocks can do.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum SessionOp {
    /// A caller asks for valid tokens.
    Tokens,
    /// A caller asks for a refresh whatever the expiry.
    Refresh,
    /// A caller asks to log out.
    Logout,
    /// A caller gives up on a call.
    Cancel {
        /// Call index.
        call: u8,
    },
    /// The store answers the operation it was asked for.
    Store {
        /// Whether it succeeds.
        ok: bool,
    },
    /// The provider answers an outstanding request (mostly the newest; sometimes an older
    /// one, late).
    Answer {
        /// Request index, from the newest.
        request: u8,
        /// What it answers.
        reply: SessionReply,
    },
    /// An outstanding request fails in transport.
    Fail {
        /// Request index, from the newest.
        request: u8,
    },
    /// Both clocks move forward.
    Advance {
        /// How far, in milliseconds.
        millis: u32,
    },
    /// The wall clock alone jumps, forward or backward (NTP, a suspended laptop, a user).
    WallJump {
        /// By how many seconds.
        seconds: i32,
    },
    /// The user logs in again, once the tokens are gone: new tokens in the store.
    Relogin,
}

/// What the provider answers.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum SessionReply {
    /// New tokens with a new refresh token (rotation).
    Rotated(Lifetime),
    /// New tokens without a refresh token: the old one stays valid.
    NotRotated(Lifetime),
    /// `400 invalid_grant`: the refresh token is dead.
    InvalidGrant,
    /// GitHub's `bad_refresh_token` with HTTP 200.
    BadRefreshTokenAt200,
    /// `401 invalid_client`.
    Rejected,
    /// `200` with an empty body (a revocation's success).
    Empty,
    /// `503`.
    Unavailable,
    /// Arbitrary body bytes with a status.
    Garbage(u16, Vec<u8>),
}

/// How long answered tokens live.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Lifetime {
    /// `expires_in: 0`.
    Expired,
    /// Shorter than the refresh margin (30 s against 60 s).
    Short,
    /// An hour.
    Hour,
    /// No `expires_in`.
    Unknown,
}

/// What the store was asked to do and has not answered yet.
#[derive(Debug, Clone)]
enum StoreAsk {
    Load(StoreOpId),
    Save(StoreOpId, TokenSet),
    Delete(StoreOpId),
}

/// A request sent and not answered yet.
#[derive(Debug, Clone)]
struct Outstanding {
    id: RequestId,
    purpose: Purpose,
    /// When the session stops waiting for it.
    deadline: Instant,
}

/// A session driven by [`SessionOp`]s with every rule checked.
#[derive(Clone)]
pub struct SessionSim {
    /// The session.
    pub session: Session,
    options: SessionOptions,
    now: Instant,
    wall: SystemTime,
    /// What the store holds.
    stored: Option<TokenSet>,
    asked: Option<StoreAsk>,
    outstanding: Vec<Outstanding>,
    /// The live refresh token: the last one the session accepted (or logged in with), until
    /// the tokens are deleted or it is sent for revocation.
    newest: Option<String>,
    /// The live refresh token was sent for revocation (a logout): whatever tokens are left
    /// are dead, and no rule says which refresh token they carry until a new one is issued.
    retired: bool,
    /// Calls made, and whether each was answered.
    calls: BTreeMap<CallId, (Kind, bool)>,
    call_order: Vec<CallId>,
    /// Logouts asked for and deletions for a logout acknowledged.
    logouts: usize,
    logout_deletions: usize,
    issued: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tokens,
    Logout,
}

fn provider() -> Provider {
    Provider::builder(
        "https://idp.example/authorize",
        "https://idp.example/token",
        "sim",
    )
    .client_secret(SecretString::from("sim-secret"))
    .client_auth(ClientAuth::SecretPost)
    .revocation_endpoint("https://idp.example/revoke")
    .build()
    .expect("a valid provider")
}

fn exposed(secret: Option<&SecretString>) -> Option<String> {
    secret.map(|secret| secret.expose_secret().to_owned())
}

/// Whether two token sets are the same tokens.
fn same(a: &TokenSet, b: &TokenSet) -> bool {
    a.access_token().expose_secret() == b.access_token().expose_secret()
        && exposed(a.refresh_token()) == exposed(b.refresh_token())
}

impl SessionSim {
    /// A session over a store holding tokens that expire in 30 s (inside the margin), with
    /// short timeouts so that sequences reach them.
    pub fn new() -> SessionSim {
        let mut options = SessionOptions::default();
        options.request_timeout = Duration::from_secs(10);
        options.call_timeout = Duration::from_secs(20);
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let first = TokenSet::new(SecretString::from("access-0"))
            .with_refresh_token(SecretString::from("refresh-0"))
            .with_expires_at(wall + Duration::from_secs(30));
        SessionSim {
            session: Session::with_options(provider(), options.clone()).expect("valid options"),
            options,
            now: Instant::now(),
            wall,
            stored: Some(first),
            asked: None,
            outstanding: Vec::new(),
            newest: Some("refresh-0".into()),
            retired: false,
            calls: BTreeMap::new(),
            call_order: Vec::new(),
            logouts: 0,
            logout_deletions: 0,
            issued: 0,
        }
    }

    /// Calls made and not answered.
    pub fn unanswered(&self) -> Vec<CallId> {
        self.calls
            .iter()
            .filter(|(_, (_, answered))| !answered)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Applies `op`, drains the session and checks what it did. Returns the actions, or the
    /// first rule broken.
    pub fn apply(&mut self, op: &SessionOp) -> Result<Vec<SessionAction>, String> {
        match op {
            SessionOp::Tokens => {
                let call = self.session.tokens(self.now);
                self.made(call, Kind::Tokens)?;
            }
            SessionOp::Refresh => {
                let call = self.session.refresh(self.now);
                self.made(call, Kind::Tokens)?;
            }
            SessionOp::Logout => {
                let call = self.session.logout(self.now);
                self.made(call, Kind::Logout)?;
                self.logouts += 1;
            }
            SessionOp::Cancel { call } => {
                if let Some(call) = pick(&self.call_order, *call) {
                    self.session.cancel(self.now, call);
                }
            }
            SessionOp::Store { ok } => self.store_answers(*ok),
            SessionOp::Answer { request, reply } => {
                if let Some(outstanding) = self.take_request(*request) {
                    let raw = self.reply_bytes(reply);
                    match ResponseReader::new(1 << 20).read(&raw) {
                        Ok(Some(response)) => self.session.handle_response(
                            self.now,
                            self.wall,
                            outstanding.id,
                            response,
                        ),
                        _ => self.session.handle_failure(
                            self.now,
                            outstanding.id,
                            TransportError::new(TransportErrorKind::Protocol, "unreadable"),
                        ),
                    }
                }
            }
            SessionOp::Fail { request } => {
                if let Some(outstanding) = self.take_request(*request) {
                    let error = TransportError::new(TransportErrorKind::Connect, "refused");
                    self.session.handle_failure(self.now, outstanding.id, error);
                }
            }
            SessionOp::Advance { millis } => {
                let by = Duration::from_millis(u64::from(*millis));
                self.now += by;
                self.wall += by;
                self.session.handle_timeout(self.now);
            }
            SessionOp::WallJump { seconds } => {
                let by = Duration::from_secs(u64::from(seconds.unsigned_abs()));
                self.wall = if *seconds >= 0 {
                    self.wall + by
                } else {
                    self.wall.checked_sub(by).unwrap_or(UNIX_EPOCH)
                };
            }
            SessionOp::Relogin => {
                if self.newest.is_none() && self.stored.is_none() {
                    self.issued += 1;
                    let refresh = format!("refresh-{}", self.issued);
                    self.stored = Some(
                        TokenSet::new(SecretString::from(format!("access-{}", self.issued)))
                            .with_refresh_token(SecretString::from(refresh.clone()))
                            .with_expires_at(self.wall + Duration::from_secs(3600)),
                    );
                    self.newest = Some(refresh);
                    self.retired = false;
                }
            }
        }
        self.check_drain()
    }

    /// Finishes everything: the store answers, outstanding requests fail, time runs on
    /// until nothing is left. Then every call must have been answered, every logout must
    /// have deleted, and the live refresh token must be stored or held.
    pub fn settle(&mut self) -> Result<(), String> {
        for _ in 0..10_000 {
            if self.asked.is_some() {
                self.apply(&SessionOp::Store { ok: true })?;
            } else if !self.outstanding.is_empty() {
                self.apply(&SessionOp::Fail { request: 0 })?;
            } else if let Some(at) = self.session.poll_timeout() {
                let millis = at.saturating_duration_since(self.now).as_millis() + 1;
                self.apply(&SessionOp::Advance {
                    millis: u32::try_from(millis).unwrap_or(u32::MAX),
                })?;
            } else {
                break;
            }
        }
        if !self.session.is_idle() {
            return Err("the session is still busy after everything was answered".into());
        }
        if let [call, ..] = self.unanswered()[..] {
            return Err(format!("call {call} was never answered"));
        }
        if self.logout_deletions < self.logouts {
            return Err(format!(
                "{} logouts asked for, {} deletions for them",
                self.logouts, self.logout_deletions
            ));
        }
        Ok(())
    }

    fn made(&mut self, call: CallId, kind: Kind) -> Result<(), String> {
        if self.calls.insert(call, (kind, false)).is_some() {
            return Err(format!("call id {call} issued twice"));
        }
        self.call_order.push(call);
        Ok(())
    }

    /// The request `index` names among those outstanding, from the newest.
    fn take_request(&mut self, index: u8) -> Option<Outstanding> {
        let len = self.outstanding.len();
        if len == 0 {
            return None;
        }
        let at = len - 1 - usize::from(index) % len;
        Some(self.outstanding.remove(at))
    }

    fn store_answers(&mut self, ok: bool) {
        let Some(asked) = self.asked.take() else {
            return;
        };
        let failure = || StoreError::new("the store failed");
        match asked {
            StoreAsk::Load(op) => {
                let result = if ok {
                    Ok(self.stored.clone())
                } else {
                    Err(failure())
                };
                self.session.handle_loaded(self.now, self.wall, op, result);
            }
            StoreAsk::Save(op, tokens) => {
                let result = if ok {
                    self.stored = Some(tokens);
                    Ok(())
                } else {
                    Err(failure())
                };
                self.session.handle_saved(self.now, self.wall, op, result);
            }
            StoreAsk::Delete(op) => {
                let result = if ok {
                    self.stored = None;
                    self.newest = None;
                    self.retired = false;
                    Ok(())
                } else {
                    Err(failure())
                };
                self.session.handle_deleted(self.now, op, result);
            }
        }
    }

    fn reply_bytes(&mut self, reply: &SessionReply) -> Vec<u8> {
        let tokens = |sim: &mut SessionSim, rotated: bool, lifetime: Lifetime| {
            sim.issued += 1;
            let n = sim.issued;
            let mut body = format!(r#"{{"access_token":"access-{n}","token_type":"Bearer""#);
            match lifetime {
                Lifetime::Expired => body.push_str(r#","expires_in":0"#),
                Lifetime::Short => body.push_str(r#","expires_in":30"#),
                Lifetime::Hour => body.push_str(r#","expires_in":3600"#),
                Lifetime::Unknown => {}
            }
            if rotated {
                body.push_str(&format!(r#","refresh_token":"refresh-{n}""#));
            }
            body.push('}');
            json_response(200, &body)
        };
        match reply {
            SessionReply::Rotated(lifetime) => tokens(self, true, *lifetime),
            SessionReply::NotRotated(lifetime) => tokens(self, false, *lifetime),
            SessionReply::InvalidGrant => json_response(400, r#"{"error":"invalid_grant"}"#),
            SessionReply::BadRefreshTokenAt200 => {
                json_response(200, r#"{"error":"bad_refresh_token"}"#)
            }
            SessionReply::Rejected => json_response(401, r#"{"error":"invalid_client"}"#),
            SessionReply::Empty => b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            SessionReply::Unavailable => b"HTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n".to_vec(),
            SessionReply::Garbage(status, body) => garbage_response(*status, body),
        }
    }

    /// Drains the session and checks every action, then the rules that hold between steps.
    fn check_drain(&mut self) -> Result<Vec<SessionAction>, String> {
        let now = self.now;
        let actions = drain_checked(self, now, |sim| &mut sim.session, SessionSim::check)?;
        self.check_held()?;
        Ok(actions)
    }

    /// The live refresh token is stored, being saved, or held by the session.
    fn check_held(&self) -> Result<(), String> {
        let Some(newest) = &self.newest else {
            return Ok(());
        };
        let in_store = self
            .stored
            .as_ref()
            .is_some_and(|tokens| exposed(tokens.refresh_token()).as_ref() == Some(newest));
        let being_saved = matches!(&self.asked, Some(StoreAsk::Save(_, tokens))
            if exposed(tokens.refresh_token()).as_ref() == Some(newest));
        if in_store || being_saved || self.session.holds_unsaved_tokens() {
            Ok(())
        } else {
            Err(format!(
                "the live refresh token {newest} is neither stored nor held"
            ))
        }
    }

    fn check(&mut self, action: &SessionAction) -> Result<(), String> {
        let one_at_a_time = |asked: &Option<StoreAsk>| match asked {
            Some(_) => Err("a second store operation while one is under way".to_owned()),
            None => Ok(()),
        };
        match action {
            SessionAction::Load { op } => {
                one_at_a_time(&self.asked)?;
                self.asked = Some(StoreAsk::Load(*op));
            }
            SessionAction::Save { op, tokens, reason } => {
                one_at_a_time(&self.asked)?;
                let refresh = exposed(tokens.refresh_token());
                if let SaveReason::Refreshed { rotated: true } = reason {
                    // The provider's answer the session accepted: its refresh token is the
                    // live one from now on.
                    self.newest = refresh.clone();
                    self.retired = false;
                }
                if refresh != self.newest && !self.retired {
                    return Err(format!(
                        "saving refresh token {refresh:?} while {:?} is the live one",
                        self.newest
                    ));
                }
                self.asked = Some(StoreAsk::Save(*op, tokens.clone()));
            }
            SessionAction::Delete { op, reason } => {
                one_at_a_time(&self.asked)?;
                if *reason == DeleteReason::Logout {
                    // Counted when asked for; the store's answer may fail, but the session
                    // asked (a failed deletion is reported to the caller).
                    self.logout_deletions += 1;
                }
                self.asked = Some(StoreAsk::Delete(*op));
            }
            SessionAction::Send {
                id,
                purpose,
                request,
            } => {
                if *purpose == Purpose::Refresh {
                    let live = self
                        .outstanding
                        .iter()
                        .filter(|out| out.purpose == Purpose::Refresh && out.deadline > self.now)
                        .count();
                    if live > 0 {
                        return Err("a second refresh request while one is in flight".into());
                    }
                    let body = String::from_utf8_lossy(request.request().body());
                    let sent = crate::harness::query_value(&body, "refresh_token");
                    if sent != self.newest && !self.retired {
                        return Err(format!(
                            "refreshing with {sent:?} while {:?} is the live refresh token",
                            self.newest
                        ));
                    }
                }
                if *purpose == Purpose::Revoke(latchkey::TokenKind::RefreshToken) {
                    let body = String::from_utf8_lossy(request.request().body());
                    if crate::harness::query_value(&body, "token") == self.newest {
                        // Logging out ends the live grant on purpose.
                        self.newest = None;
                        self.retired = true;
                    }
                }
                self.outstanding.push(Outstanding {
                    id: *id,
                    purpose: *purpose,
                    deadline: self.now + self.options.request_timeout,
                });
            }
            SessionAction::Tokens { call, result } => {
                self.answered(*call, Kind::Tokens)?;
                if let Ok(tokens) = result {
                    match &self.stored {
                        Some(stored) if same(stored, tokens) => {}
                        _ => return Err(format!("call {call} got tokens that are not stored")),
                    }
                }
            }
            SessionAction::LoggedOut { call, result } => {
                self.answered(*call, Kind::Logout)?;
                if result.is_ok() && self.stored.is_some() {
                    return Err(format!("logout {call} answered while tokens are stored"));
                }
                if let Err(error) = result {
                    if !matches!(
                        error,
                        SessionError::Store(_) | SessionError::TimedOut | SessionError::Cancelled
                    ) {
                        return Err(format!("logout {call} failed with {error}"));
                    }
                }
            }
            other => return Err(format!("an action the model does not know: {other:?}")),
        }
        Ok(())
    }

    fn answered(&mut self, call: CallId, kind: Kind) -> Result<(), String> {
        match self.calls.get_mut(&call) {
            None => Err(format!("an answer to call {call}, never made")),
            Some((_, true)) => Err(format!("call {call} answered twice")),
            Some((made, _)) if *made != kind => Err(format!("call {call} answered the wrong way")),
            Some((_, answered)) => {
                *answered = true;
                Ok(())
            }
        }
    }
}

impl Default for SessionSim {
    fn default() -> SessionSim {
        SessionSim::new()
    }
}

impl Arbitrary for SessionOp {
    fn arbitrary(g: &mut Gen) -> SessionOp {
        let index = |g: &mut Gen| u8::arbitrary(g) % 4;
        // Weighted so that sequences often reach refreshes, rotations and failed saves.
        match u8::arbitrary(g) % 32 {
            0..=5 => SessionOp::Tokens,
            6..=7 => SessionOp::Refresh,
            8 => SessionOp::Logout,
            9 => SessionOp::Cancel {
                call: u8::arbitrary(g),
            },
            10..=17 => SessionOp::Store {
                ok: u8::arbitrary(g) % 4 != 0,
            },
            18..=23 => SessionOp::Answer {
                request: index(g),
                reply: SessionReply::arbitrary(g),
            },
            24 => SessionOp::Fail { request: index(g) },
            25..=28 => SessionOp::Advance {
                millis: *g
                    .choose(&[1, 1_000, 9_999, 10_000, 20_001, 31_000, 3_600_000])
                    .unwrap_or(&1),
            },
            29..=30 => SessionOp::WallJump {
                seconds: *g
                    .choose(&[-7_200, -60, -1, 1, 29, 31, 59, 61, 3_600, 86_400])
                    .unwrap_or(&1),
            },
            _ => SessionOp::Relogin,
        }
    }
}

impl Arbitrary for SessionReply {
    fn arbitrary(g: &mut Gen) -> SessionReply {
        let lifetime = *g
            .choose(&[
                Lifetime::Expired,
                Lifetime::Short,
                Lifetime::Hour,
                Lifetime::Unknown,
            ])
            .unwrap_or(&Lifetime::Hour);
        match u8::arbitrary(g) % 12 {
            0..=3 => SessionReply::Rotated(lifetime),
            4..=5 => SessionReply::NotRotated(lifetime),
            6 => SessionReply::InvalidGrant,
            7 => SessionReply::BadRefreshTokenAt200,
            8 => SessionReply::Rejected,
            9 => SessionReply::Empty,
            10 => SessionReply::Unavailable,
            _ => SessionReply::Garbage(u16::arbitrary(g), Vec::arbitrary(g)),
        }
    }
}

impl crate::harness::OpModel for SessionSim {
    type Op = SessionOp;

    fn step(&mut self, op: &SessionOp) -> Result<(), String> {
        self.apply(op).map(drop)
    }

    fn finish(&mut self) -> Result<(), String> {
        self.settle()
    }
}
