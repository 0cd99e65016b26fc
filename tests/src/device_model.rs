//! Device logins (RFC 8628) under whatever the provider and the clock do, and the polling
//! rules (S51) checked after every step.
//!
//! A [`DeviceOp`] names its target by index, so any sequence of ops is meaningful.
//! [`DeviceSim::apply`] performs one op, drains the engine (storing every
//! [`Action::Persist`] at once) and checks every action against a model of each device
//! login: when its code arrived and expires, its current interval, its failures in a row,
//! the earliest instant its next poll may be sent, and the poll in flight.
//!
//! Time moves like a punctual driver moves it: an [`DeviceOp::Advance`] wakes the engine at
//! every [`poll_timeout`](Engine::poll_timeout) on the way, so every action happens at a
//! known instant. One that `sleep`s also jumps a copy of the engine over the whole stretch
//! at once, as a laptop waking up does, and the two must emit the same actions.
//!
//! The rules:
//!
//! - **no poll before the first interval:** no poll until the code's `interval` (at least
//!   [`MIN_INTERVAL`], [`DEFAULT_INTERVAL`] when absent, never rounded down) has passed
//!   since the code arrived;
//! - **never faster than the interval:** every later poll comes at least the current
//!   interval after the previous answer; `slow_down` makes the interval
//!   [`SLOW_DOWN_STEP`] longer (or the interval it names, if longer) for this and every
//!   later poll, and it never shrinks; after a 5xx, a 429, `temporarily_unavailable`, a
//!   transport failure or a poll abandoned at the exchange timeout, the wait is the interval
//!   doubled per failure in a row (up to [`MAX_BACKOFF`], or the interval if longer), and
//!   at least what `Retry-After` asks, as seconds or as an HTTP date;
//! - **and never slower:** a login with no poll in flight polls within a second of when
//!   its next poll is due (unless the code expires first): nobody waits for nothing;
//! - **one poll at a time:** never a poll while another of the same login is in flight;
//!   one not answered within the exchange timeout is abandoned, and its late answer
//!   changes nothing;
//! - **expiry ends it:** no poll at or after the code's expiry; the login finishes with
//!   [`DeviceError::Expired`] then, without a last poll;
//! - **every end is the right one:** `access_denied` and `authorization_declined` end a
//!   login with [`FlowError::Denied`], `expired_token` with [`DeviceError::Expired`], other
//!   errors with [`FlowError::TokenRejected`]; a device authorization answer with an error
//!   with [`DeviceError::Refused`], an unusable one (a verification URI that is not `https`,
//!   a user code with an escape sequence, garbage) with [`DeviceError::BadResponse`], a
//!   device authorization request failing in transport with [`DeviceError::Unreachable`];
//! - **what the user is shown is what the provider sent:** [`Action::ShowUserCode`] once
//!   per login, with the user code, the verification URIs (Google's `verification_url`
//!   too), the interval and the lifetime (the configuration's flow lifetime when absent);
//! - tokens are persisted before the login finishes `Ok`; every login finishes exactly once
//!   (cancelled, superseded by its owner's next login, or as above) and nothing names it
//!   afterwards; late answers change nothing; after `handle_timeout(now)`,
//!   [`poll_timeout`](Engine::poll_timeout) is later than `now`; nothing panics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latchkey::device::{DEFAULT_INTERVAL, MAX_BACKOFF, MIN_INTERVAL, SLOW_DOWN_STEP};
use latchkey::{
    Action, DeviceError, Engine, ExchangeId, FlowError, FlowId, FlowOptions, ProviderBuilder, Step,
    TransportError, TransportErrorKind,
};
use quickcheck::{Arbitrary, Gen};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::harness::{self, config_with, drain_checked, json_response, parse_response, pick};
use crate::model::fingerprint;

/// The test provider's device authorization endpoint.
pub const DEVICE_ENDPOINT: &str = "https://idp.example/device_authorization";
/// Where the test provider asks users to enter their code.
pub const VERIFICATION_URI: &str = "https://idp.example/device";
/// The user code every answer carries.
pub const USER_CODE: &str = "WDJB-MJHT";
/// The engine's exchange timeout: the deadline of the device authorization request and of
/// every poll.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The engine's flow lifetime: how long a code lives when the provider does not say.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(600);
/// The longest lifetime a generated code has, in seconds.
pub const MAX_LIFETIME_SECONDS: u16 = 1800;
/// The longest [`DeviceOp::Advance`], in milliseconds.
pub const MAX_ADVANCE_MILLIS: u32 = 30 * 60 * 1000;
/// How late a due poll may be before the model calls the login stalled.
const SLACK: Duration = Duration::from_millis(100);
/// The grant type of a poll, form-encoded.
const DEVICE_GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code";
/// The owners logins may be started for.
const OWNERS: [Option<&str>; 3] = [None, Some("alice"), Some("bob")];

/// The test provider ([`harness::provider`]: public client `latchkey-test`, `openid email`,
/// ID tokens not verified) with the device authorization endpoint [`DEVICE_ENDPOINT`].
pub fn provider() -> ProviderBuilder {
    harness::provider().device_authorization_endpoint(DEVICE_ENDPOINT)
}

// ----- literal answers -----

/// A literal HTTP response: `status`, a `Content-Type`, `headers` (each `Name: value`),
/// `body`.
pub fn answer(status: u16, content_type: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut raw = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nCache-Control: no-store\r\n"
    );
    for header in headers {
        raw.push_str(header);
        raw.push_str("\r\n");
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw.into_bytes()
}

/// A form-encoded answer, as GitHub sends unless asked for JSON.
pub fn form_response(status: u16, body: &str) -> Vec<u8> {
    answer(status, "application/x-www-form-urlencoded", &[], body)
}

/// A JSON OAuth error `code` at `status`.
pub fn oauth_error(status: u16, code: &str) -> Vec<u8> {
    json_response(status, &json!({ "error": code }).to_string())
}

/// `t` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), whole seconds, for
/// `Retry-After`.
pub fn http_date(t: SystemTime) -> String {
    let seconds = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = seconds / 86_400;
    let (hour, minute, second) = (seconds % 86_400 / 3600, seconds % 3600 / 60, seconds % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {hour:02}:{minute:02}:{second:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize]
    )
}

/// A poll's body for `device_code`, from the public test client.
pub fn poll_body(device_code: &str) -> String {
    format!("grant_type={DEVICE_GRANT}&device_code={device_code}&client_id=latchkey-test")
}

fn transport_error() -> TransportError {
    TransportError::new(TransportErrorKind::Connect, "connection refused")
}

// ----- operations -----

/// One thing the application, the provider or the clock can do.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DeviceOp {
    /// The application starts a device login, for one of three owners (the first is none):
    /// the owner's login in progress, if any, is superseded.
    Start {
        /// Index into `[none, alice, bob]`.
        owner: u8,
    },
    /// The device authorization endpoint answers a login waiting for its user code.
    Authorize {
        /// Index among the logins waiting for their user code.
        target: u8,
        /// What it answers.
        reply: CodeReply,
    },
    /// The provider answers a poll in flight (a device authorization request when no poll
    /// is and `target` is a multiple of 4), or, `late`, a request the engine no longer
    /// waits for.
    Answer {
        /// Index among the polls in flight (or the requests, or the late ones).
        target: u8,
        /// Answer a request the engine abandoned, cancelled or outlived.
        late: bool,
        /// What it answers.
        reply: DeviceReply,
    },
    /// Both clocks move forward by `millis` (taken as 1 ms to [`MAX_ADVANCE_MILLIS`]), the
    /// driver waking at every deadline; when `sleep`, a copy of the engine jumps the whole
    /// stretch at once and must do the same.
    Advance {
        /// How far.
        millis: u32,
        /// Also jump a copy over the stretch.
        sleep: bool,
    },
    /// The application cancels a login in progress.
    Cancel {
        /// Index among the logins in progress.
        login: u8,
    },
}

/// A device authorization endpoint's answer.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct CodeReply {
    /// The `interval` member.
    pub interval: Interval,
    /// The `expires_in` member.
    pub lifetime: Lifetime,
    /// The rest.
    pub shape: CodeShape,
}

/// The `interval` of a device authorization answer.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Interval {
    /// Absent: 5 s.
    Absent,
    /// JSON `null`: 5 s.
    Null,
    /// Whole seconds, a JSON number (0 is taken as 1 s).
    Seconds(u8),
    /// Tenths of a second as a fraction (`1.5`), never rounded down.
    Tenths(u8),
    /// Whole seconds as a string (`"5"`, as Google sends).
    Text(u8),
}

impl Interval {
    /// The interval the engine must use (at least 1 s).
    pub fn expected(self) -> Duration {
        let value = match self {
            Interval::Absent | Interval::Null => return DEFAULT_INTERVAL,
            Interval::Seconds(s) | Interval::Text(s) => Duration::from_secs(u64::from(s)),
            Interval::Tenths(t) => Duration::from_millis(u64::from(t) * 100),
        };
        value.max(MIN_INTERVAL)
    }

    fn json(self) -> Option<Value> {
        match self {
            Interval::Absent => None,
            Interval::Null => Some(Value::Null),
            Interval::Seconds(s) => Some(json!(s)),
            Interval::Tenths(t) => Some(json!(f64::from(t) / 10.0)),
            Interval::Text(s) => Some(json!(s.to_string())),
        }
    }

    fn form(self) -> Option<String> {
        match self {
            Interval::Absent | Interval::Null => None,
            Interval::Seconds(s) | Interval::Text(s) => Some(s.to_string()),
            Interval::Tenths(t) => Some(format!("{}.{}", t / 10, t % 10)),
        }
    }
}

/// The `expires_in` of a device authorization answer (seconds taken modulo
/// [`MAX_LIFETIME_SECONDS`] + 1).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Lifetime {
    /// Absent: the configuration's flow lifetime.
    Absent,
    /// A JSON number.
    Seconds(u16),
    /// A numeric string.
    Text(u16),
    /// `n.75`, a fraction (a lifetime is rounded down).
    Fraction(u16),
}

impl Lifetime {
    fn seconds(n: u16) -> u16 {
        n % (MAX_LIFETIME_SECONDS + 1)
    }

    /// How long the code lives.
    pub fn expected(self) -> Duration {
        match self {
            Lifetime::Absent => FLOW_LIFETIME,
            Lifetime::Seconds(n) | Lifetime::Text(n) | Lifetime::Fraction(n) => {
                Duration::from_secs(u64::from(Lifetime::seconds(n)))
            }
        }
    }

    fn json(self) -> Option<Value> {
        match self {
            Lifetime::Absent => None,
            Lifetime::Seconds(n) => Some(json!(Lifetime::seconds(n))),
            Lifetime::Text(n) => Some(json!(Lifetime::seconds(n).to_string())),
            Lifetime::Fraction(n) => Some(json!(f64::from(Lifetime::seconds(n)) + 0.75)),
        }
    }

    fn form(self) -> Option<String> {
        match self {
            Lifetime::Absent => None,
            Lifetime::Seconds(n) | Lifetime::Text(n) => Some(Lifetime::seconds(n).to_string()),
            Lifetime::Fraction(n) => Some(format!("{}.75", Lifetime::seconds(n))),
        }
    }
}

/// What a device authorization answer looks like besides its timings.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CodeShape {
    /// RFC 8628 §3.2 JSON, with or without `verification_uri_complete`.
    Standard {
        /// With `verification_uri_complete`.
        complete: bool,
    },
    /// Google's: `verification_url`, no `verification_uri_complete`.
    Google,
    /// GitHub's: form-encoded, every value a string.
    GitHubForm,
    /// A verification URI that must not be shown (S52).
    BadUri {
        /// What is wrong with it.
        which: BadUri,
        /// In `verification_uri_complete` rather than `verification_uri`.
        complete: bool,
    },
    /// A user code with a terminal escape sequence.
    BadUserCode,
    /// No `device_code`.
    MissingDeviceCode,
    /// An OAuth error: `invalid_client` at 400, or GitHub's `device_flow_disabled` at 200.
    Refused {
        /// GitHub's form at 200.
        github: bool,
    },
}

/// A verification URI that must be refused (S52).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum BadUri {
    /// `javascript:` scheme.
    Javascript,
    /// `http` on a host that is not loopback.
    HttpRemote,
    /// A space inside.
    Space,
    /// An escape sequence inside.
    Control,
    /// A non-ASCII character.
    NonAscii,
}

impl BadUri {
    /// The URI.
    pub fn uri(self) -> &'static str {
        match self {
            BadUri::Javascript => "javascript:alert(document.cookie)",
            BadUri::HttpRemote => "http://idp.example/device",
            BadUri::Space => "https://idp.example/de vice",
            BadUri::Control => "https://idp.example/device\u{1b}]8;;https://evil.example\u{7}",
            BadUri::NonAscii => "https://idp.example/d\u{e9}vice",
        }
    }
}

/// What the provider answers a request with (a poll, mostly).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DeviceReply {
    /// A device authorization answer.
    Code(CodeReply),
    /// `authorization_pending`: JSON at 400, or GitHub's form at 200.
    Pending {
        /// GitHub's form at 200.
        form: bool,
    },
    /// `slow_down`, naming an interval in seconds or not.
    SlowDown {
        /// The `interval` member (0 is taken as 1 s).
        interval: Option<u8>,
        /// GitHub's form at 200.
        form: bool,
    },
    /// The provider cannot answer now.
    Unavailable {
        /// The status.
        status: Busy,
        /// The `Retry-After` header.
        retry_after: RetryAfter,
        /// With a `temporarily_unavailable` JSON body, rather than an HTML page.
        oauth: bool,
    },
    /// The request fails in transport.
    Transport,
    /// The user declined: `access_denied`, or Entra's `authorization_declined`.
    Denied {
        /// Entra's code.
        entra: bool,
    },
    /// `expired_token`.
    ExpiredToken,
    /// `invalid_grant` at 400, or `invalid_client` at 401.
    Rejected {
        /// `invalid_client`.
        client: bool,
    },
    /// The tokens: the user approved.
    Tokens,
    /// An HTML page at a status made of `status` (200–599 but 204 and 304), then `bytes`.
    Garbage {
        /// The status, before mapping.
        status: u16,
        /// Bytes after `<html>` (`&` removed, so it is never an OAuth error).
        bytes: Vec<u8>,
    },
}

/// A status that means "not now".
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Busy {
    /// 500.
    Internal,
    /// 502.
    BadGateway,
    /// 503.
    Unavailable,
    /// 504.
    GatewayTimeout,
    /// 429.
    TooManyRequests,
}

impl Busy {
    /// The status code.
    pub fn status(self) -> u16 {
        match self {
            Busy::Internal => 500,
            Busy::BadGateway => 502,
            Busy::Unavailable => 503,
            Busy::GatewayTimeout => 504,
            Busy::TooManyRequests => 429,
        }
    }
}

/// A `Retry-After` header.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum RetryAfter {
    /// None.
    Absent,
    /// Delay seconds.
    Seconds(u8),
    /// An HTTP date this many whole seconds after the wall clock's current second.
    Date(u8),
    /// An HTTP date an hour ago: no wait.
    PastDate,
    /// `soon`: ignored.
    Unreadable,
}

impl RetryAfter {
    /// The header line and the wait it asks for, at `wall`.
    fn header(self, wall: SystemTime) -> (Option<String>, Option<Duration>) {
        let second = UNIX_EPOCH
            + Duration::from_secs(wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        let date = |at: SystemTime| {
            let wait = at.duration_since(wall).unwrap_or_default();
            (Some(format!("Retry-After: {}", http_date(at))), Some(wait))
        };
        match self {
            RetryAfter::Absent => (None, None),
            RetryAfter::Seconds(s) => (
                Some(format!("Retry-After: {s}")),
                Some(Duration::from_secs(u64::from(s))),
            ),
            RetryAfter::Date(s) => date(second + Duration::from_secs(u64::from(s))),
            RetryAfter::PastDate => date(second - Duration::from_secs(3600)),
            RetryAfter::Unreadable => (Some("Retry-After: soon".into()), None),
        }
    }
}

// ----- what the model expects -----

/// How a login must end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Ok,
    Cancelled,
    Superseded,
    Expired,
    TimedOut(Step),
    /// `Device(Unreachable)`: the device authorization request failed in transport.
    Unreachable,
    Denied(&'static str),
    /// `TokenRejected` at a poll.
    Rejected {
        status: u16,
        code: &'static str,
    },
    /// `Device(Refused)` at the device authorization request.
    Refused {
        status: u16,
        code: &'static str,
    },
    /// `Device(BadResponse)`, for any reason.
    DeviceBad {
        status: u16,
    },
    /// `BadTokenResponse`, for any reason.
    BadToken {
        status: u16,
    },
}

impl End {
    fn accepts(&self, error: &FlowError) -> bool {
        match (self, error) {
            (End::Cancelled, FlowError::Cancelled)
            | (End::Superseded, FlowError::Superseded)
            | (End::Expired, FlowError::Device(DeviceError::Expired))
            | (End::Unreachable, FlowError::Device(DeviceError::Unreachable(_))) => true,
            (End::TimedOut(expected), FlowError::TimedOut(step)) => expected == step,
            (End::Denied(code), FlowError::Denied(error)) => error.code == *code,
            (End::Rejected { status, code }, FlowError::TokenRejected { status: s, error }) => {
                s == status && error.code == *code
            }
            (
                End::Refused { status, code },
                FlowError::Device(DeviceError::Refused { status: s, error }),
            ) => s == status && error.code == *code,
            (
                End::DeviceBad { status },
                FlowError::Device(DeviceError::BadResponse { status: s, .. }),
            )
            | (End::BadToken { status }, FlowError::BadTokenResponse { status: s, .. }) => {
                s == status
            }
            _ => false,
        }
    }
}

/// What one answer means, as the model reads it.
#[derive(Debug)]
enum Meaning {
    /// A usable device authorization: what the user must be shown.
    Code(Shown),
    Pending,
    SlowDown(Option<Duration>),
    Unavailable(Option<Duration>),
    Tokens,
    End(End),
}

/// What [`Action::ShowUserCode`] must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    verification_uri: &'static str,
    complete: Option<String>,
    interval: Duration,
    lifetime: Duration,
    device_code: String,
}

/// A device login between its user code and its end.
#[derive(Debug, Clone)]
struct Poller {
    device_code: String,
    expiry: Instant,
    /// The current interval (a lower bound: the engine may round a fraction up by 1 ms).
    interval: Duration,
    failures: u32,
    /// The earliest instant of the next poll.
    due: Instant,
    /// The poll in flight and when it was sent.
    in_flight: Option<(ExchangeId, Instant)>,
}

#[derive(Debug, Clone)]
enum Phase {
    /// Waiting for its user code: the request (once emitted) and its deadline.
    Authorizing {
        exchange: Option<ExchangeId>,
        deadline: Instant,
    },
    Polling(Poller),
    /// Got `Persist`: the model stores at once.
    Persisting,
    Finished,
}

#[derive(Debug, Clone)]
struct Login {
    owner: Option<&'static str>,
    phase: Phase,
    shown: bool,
    /// How it must end, once the model knows.
    end: Option<End>,
    /// What the pending device authorization answer must show.
    expect_shown: Option<Shown>,
    /// The store confirmed its tokens.
    confirmed: bool,
}

impl Login {
    fn live(&self) -> bool {
        !matches!(self.phase, Phase::Finished)
    }

    fn in_flight(&self) -> Option<ExchangeId> {
        match &self.phase {
            Phase::Authorizing { exchange, .. } => *exchange,
            Phase::Polling(poller) => poller.in_flight.map(|(exchange, _)| exchange),
            Phase::Persisting | Phase::Finished => None,
        }
    }
}

/// An engine driven by [`DeviceOp`]s, every rule checked.
#[derive(Clone)]
pub struct DeviceSim {
    /// The engine.
    pub engine: Engine,
    /// The virtual clock.
    pub now: Instant,
    /// The wall clock.
    pub wall: SystemTime,
    logins: BTreeMap<FlowId, Login>,
    /// Requests the engine no longer waits for, to be answered late.
    late: Vec<ExchangeId>,
    /// Logins that got `Persist` and wait for the store.
    to_confirm: Vec<FlowId>,
    /// Device codes handed out.
    codes: u64,
    /// The login just started, until its `RequestDeviceCode`.
    starting: Option<FlowId>,
}

impl DeviceSim {
    /// An engine for [`provider`] on a virtual clock, with [`EXCHANGE_TIMEOUT`] and
    /// [`FLOW_LIFETIME`].
    pub fn new() -> DeviceSim {
        let config = config_with(provider().build().expect("a valid provider"))
            .exchange_timeout(EXCHANGE_TIMEOUT)
            .flow_lifetime(FLOW_LIFETIME)
            .build()
            .expect("a valid configuration");
        DeviceSim {
            engine: Engine::new(config).expect("a valid engine"),
            now: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1_790_000_000),
            logins: BTreeMap::new(),
            late: Vec::new(),
            to_confirm: Vec::new(),
            codes: 0,
            starting: None,
        }
    }

    /// Logins in progress, oldest first.
    pub fn in_progress(&self) -> Vec<FlowId> {
        self.logins
            .iter()
            .filter(|(_, login)| login.live())
            .map(|(flow, _)| *flow)
            .collect()
    }

    /// Applies `op`, drains the engine (storing every `Persist` at once) and checks what it
    /// did. Returns the actions, or the first rule broken.
    pub fn apply(&mut self, op: &DeviceOp) -> Result<Vec<Action>, String> {
        let actions = match op {
            DeviceOp::Start { owner } => self.start(pick(&OWNERS, *owner).flatten())?,
            DeviceOp::Authorize { target, reply } => {
                let waiting: Vec<(FlowId, ExchangeId)> = self
                    .logins
                    .iter()
                    .filter_map(|(flow, login)| match login.phase {
                        Phase::Authorizing {
                            exchange: Some(exchange),
                            ..
                        } => Some((*flow, exchange)),
                        _ => None,
                    })
                    .collect();
                match pick(&waiting, *target) {
                    Some((flow, exchange)) => {
                        self.answer(flow, exchange, &DeviceReply::Code(reply.clone()))?
                    }
                    None => Vec::new(),
                }
            }
            DeviceOp::Answer {
                target,
                late,
                reply,
            } => self.answer_any(*target, *late, reply)?,
            DeviceOp::Advance { millis, sleep } => {
                let millis = millis % MAX_ADVANCE_MILLIS + 1;
                self.advance(Duration::from_millis(u64::from(millis)), *sleep)?
            }
            DeviceOp::Cancel { login } => match pick(&self.in_progress(), *login) {
                Some(flow) => {
                    self.expect_end(flow, End::Cancelled);
                    self.engine.cancel(self.now, flow);
                    self.drain()?
                }
                None => Vec::new(),
            },
        };
        self.check_between()?;
        Ok(actions)
    }

    /// Lets time run out (two hours, answering nothing), then answers every request the
    /// engine no longer waits for: every login has finished, the engine holds nothing, and
    /// the late answers change nothing.
    pub fn settle(&mut self) -> Result<(), String> {
        self.advance(Duration::from_secs(2 * 3600), false)?;
        self.check_between()?;
        harness::engine_idle(&self.engine, self.now, &self.in_progress())?;
        while !self.late.is_empty() {
            self.answer_any(0, true, &DeviceReply::Tokens)?;
        }
        Ok(())
    }

    /// The model's verdict on `action` as if the engine emitted it now, judged on a copy:
    /// the simulation is unchanged. For showing that the rules bite.
    pub fn judge(&self, action: &Action) -> Result<(), String> {
        self.clone().check(action)
    }

    // ----- ops -----

    fn start(&mut self, owner: Option<&'static str>) -> Result<Vec<Action>, String> {
        let mut options = FlowOptions::new();
        if let Some(owner) = owner {
            options = options.owner(owner);
            let previous: Vec<FlowId> = self
                .logins
                .iter()
                .filter(|(_, login)| login.live() && login.owner == Some(owner))
                .map(|(flow, _)| *flow)
                .collect();
            for flow in previous {
                self.expect_end(flow, End::Superseded);
            }
        }
        let flow = self
            .engine
            .start_device(self.now, options)
            .map_err(|error| format!("start_device failed: {error:?}"))?;
        if self.logins.contains_key(&flow) {
            return Err(format!("start_device reused the id {flow}"));
        }
        self.logins.insert(
            flow,
            Login {
                owner,
                phase: Phase::Authorizing {
                    exchange: None,
                    deadline: self.now + EXCHANGE_TIMEOUT,
                },
                shown: false,
                end: None,
                expect_shown: None,
                confirmed: false,
            },
        );
        self.starting = Some(flow);
        let actions = self.drain();
        if let Some(flow) = self.starting.take() {
            return Err(format!(
                "start_device of {flow} emitted no RequestDeviceCode"
            ));
        }
        actions
    }

    fn answer_any(
        &mut self,
        target: u8,
        late: bool,
        reply: &DeviceReply,
    ) -> Result<Vec<Action>, String> {
        if late {
            if self.late.is_empty() {
                return Ok(Vec::new());
            }
            let exchange = self.late.remove(usize::from(target) % self.late.len());
            self.send_reply(exchange, reply);
            let actions = self.drain()?;
            if !actions.is_empty() {
                return Err(format!(
                    "a late answer to {exchange} changed something: {actions:?}"
                ));
            }
            return Ok(actions);
        }
        // Polls first: a device authorization request is answered here only when no poll
        // is in flight, and then one time in four (`Authorize` answers those).
        let in_flight = |polls: bool| -> Vec<(FlowId, ExchangeId)> {
            self.logins
                .iter()
                .filter(|(_, login)| matches!(login.phase, Phase::Polling(_)) == polls)
                .filter_map(|(flow, login)| login.in_flight().map(|exchange| (*flow, exchange)))
                .collect()
        };
        let mut outstanding = in_flight(true);
        if outstanding.is_empty() && target % 4 == 0 {
            outstanding = in_flight(false);
        }
        match pick(&outstanding, target) {
            Some((flow, exchange)) => self.answer(flow, exchange, reply),
            None => Ok(Vec::new()),
        }
    }

    /// Answers `exchange` of `flow` with `reply`, after deciding what it must lead to.
    fn answer(
        &mut self,
        flow: FlowId,
        exchange: ExchangeId,
        reply: &DeviceReply,
    ) -> Result<Vec<Action>, String> {
        let authorizing = matches!(self.logins[&flow].phase, Phase::Authorizing { .. });
        let meaning = self.meaning(reply, authorizing);
        let login = self.logins.get_mut(&flow).ok_or("unknown login")?;
        // Answered: the request is no longer in flight, whatever comes of it.
        match &mut login.phase {
            Phase::Authorizing { exchange, .. } => *exchange = None,
            Phase::Polling(poller) => poller.in_flight = None,
            Phase::Persisting | Phase::Finished => {}
        }
        match (&mut login.phase, meaning) {
            (Phase::Authorizing { .. }, Meaning::Code(shown)) => login.expect_shown = Some(shown),
            (Phase::Polling(poller), meaning) => {
                let now = self.now;
                let wait = match meaning {
                    Meaning::Pending => {
                        poller.failures = 0;
                        Some(poller.interval)
                    }
                    Meaning::SlowDown(named) => {
                        poller.failures = 0;
                        poller.interval =
                            (poller.interval + SLOW_DOWN_STEP).max(named.unwrap_or_default());
                        Some(poller.interval)
                    }
                    Meaning::Unavailable(retry_after) => {
                        poller.failures += 1;
                        Some(backoff(poller.interval, poller.failures, retry_after))
                    }
                    Meaning::Tokens => None,
                    Meaning::End(end) => {
                        login.end = Some(end);
                        None
                    }
                    Meaning::Code(_) => return Err("a code read as a poll answer".into()),
                };
                if let Some(wait) = wait {
                    poller.due = now + wait;
                }
            }
            (_, Meaning::End(end)) => login.end = Some(end),
            (phase, meaning) => {
                return Err(format!(
                    "the model cannot apply {meaning:?} in phase {phase:?}"
                ));
            }
        }
        self.send_reply(exchange, reply);
        let actions = self.drain()?;
        if self.logins[&flow].expect_shown.is_some() {
            return Err(format!("login {flow} got its code but showed nothing"));
        }
        Ok(actions)
    }

    /// What `reply` means to a login waiting for its code (`authorizing`) or polling.
    fn meaning(&self, reply: &DeviceReply, authorizing: bool) -> Meaning {
        // An OAuth error: refused at the device authorization endpoint, `rejected` at a poll.
        let error = |status: u16, code: &'static str, rejected: Meaning| {
            if authorizing {
                Meaning::End(End::Refused { status, code })
            } else {
                rejected
            }
        };
        let rejected = |status, code| Meaning::End(End::Rejected { status, code });
        match reply {
            DeviceReply::Code(code) => match code.shape {
                CodeShape::Refused { github } => {
                    let (status, code) = if github {
                        (200, "device_flow_disabled")
                    } else {
                        (400, "invalid_client")
                    };
                    error(status, code, rejected(status, code))
                }
                _ if !authorizing => Meaning::End(End::BadToken { status: 200 }),
                CodeShape::BadUri { .. }
                | CodeShape::BadUserCode
                | CodeShape::MissingDeviceCode => Meaning::End(End::DeviceBad { status: 200 }),
                CodeShape::Standard { complete } => Meaning::Code(Shown {
                    verification_uri: VERIFICATION_URI,
                    complete: complete.then(|| format!("{VERIFICATION_URI}?user_code={USER_CODE}")),
                    interval: code.interval.expected(),
                    lifetime: code.lifetime.expected(),
                    device_code: self.device_code(),
                }),
                CodeShape::Google => Meaning::Code(Shown {
                    verification_uri: "https://www.google.com/device",
                    complete: None,
                    interval: code.interval.expected(),
                    lifetime: code.lifetime.expected(),
                    device_code: self.device_code(),
                }),
                CodeShape::GitHubForm => Meaning::Code(Shown {
                    verification_uri: "https://github.com/login/device",
                    complete: None,
                    interval: code.interval.expected(),
                    lifetime: code.lifetime.expected(),
                    device_code: self.device_code(),
                }),
            },
            DeviceReply::Pending { form } => error(
                if *form { 200 } else { 400 },
                "authorization_pending",
                Meaning::Pending,
            ),
            DeviceReply::SlowDown { interval, form } => error(
                if *form { 200 } else { 400 },
                "slow_down",
                Meaning::SlowDown(
                    interval.map(|s| Duration::from_secs(u64::from(s)).max(MIN_INTERVAL)),
                ),
            ),
            DeviceReply::Unavailable {
                status,
                retry_after,
                oauth,
            } => {
                let (_, wait) = retry_after.header(self.wall);
                match (authorizing, oauth) {
                    (true, true) => Meaning::End(End::Refused {
                        status: status.status(),
                        code: "temporarily_unavailable",
                    }),
                    (true, false) => Meaning::End(End::DeviceBad {
                        status: status.status(),
                    }),
                    (false, _) => Meaning::Unavailable(wait),
                }
            }
            DeviceReply::Transport if authorizing => Meaning::End(End::Unreachable),
            DeviceReply::Transport => Meaning::Unavailable(None),
            DeviceReply::Denied { entra } => {
                let code = if *entra {
                    "authorization_declined"
                } else {
                    "access_denied"
                };
                error(400, code, Meaning::End(End::Denied(code)))
            }
            DeviceReply::ExpiredToken => error(400, "expired_token", Meaning::End(End::Expired)),
            DeviceReply::Rejected { client } => {
                let (status, code) = if *client {
                    (401, "invalid_client")
                } else {
                    (400, "invalid_grant")
                };
                error(status, code, rejected(status, code))
            }
            DeviceReply::Tokens if authorizing => Meaning::End(End::DeviceBad { status: 200 }),
            DeviceReply::Tokens => Meaning::Tokens,
            DeviceReply::Garbage { status, .. } => {
                let status = garbage_status(*status);
                if authorizing {
                    Meaning::End(End::DeviceBad { status })
                } else if status >= 500 || status == 429 {
                    Meaning::Unavailable(None)
                } else {
                    Meaning::End(End::BadToken { status })
                }
            }
        }
    }

    /// The device code of the next code answer.
    fn device_code(&self) -> String {
        format!(
            "GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS-{}",
            self.codes + 1
        )
    }

    /// Hands `reply` to the engine as the answer to `exchange`.
    fn send_reply(&mut self, exchange: ExchangeId, reply: &DeviceReply) {
        let raw = match reply {
            DeviceReply::Transport => {
                self.engine
                    .handle_token_failure(self.now, exchange, transport_error());
                return;
            }
            DeviceReply::Code(code) => {
                let device_code = self.device_code();
                self.codes += 1;
                code_answer(code, &device_code)
            }
            other => reply_bytes(other, self.wall, self.codes),
        };
        self.engine
            .handle_token_response(self.now, self.wall, exchange, parse_response(&raw));
    }

    /// Moves both clocks by `by`, waking the engine at every deadline on the way; when
    /// `sleep`, a copy of the engine jumps the stretch at once and must emit the same.
    fn advance(&mut self, by: Duration, sleep: bool) -> Result<Vec<Action>, String> {
        let target = self.now + by;
        let wall_target = self.wall + by;
        let jumped = sleep.then(|| {
            let mut copy = self.engine.clone();
            copy.handle_timeout(target);
            std::iter::from_fn(|| copy.poll_action()).collect::<Vec<Action>>()
        });
        let mut actions = Vec::new();
        loop {
            let at = match self.engine.poll_timeout() {
                Some(at) if at <= target => at.max(self.now),
                _ => target,
            };
            self.wall += at - self.now;
            self.now = at;
            self.expect_deadlines();
            self.engine.handle_timeout(at);
            if self.engine.poll_timeout().is_some_and(|again| again <= at) {
                return Err("poll_timeout lies in the past after handle_timeout".into());
            }
            actions.extend(self.drain()?);
            self.check_between()?;
            if at == target {
                break;
            }
        }
        self.wall = wall_target;
        if let Some(jumped) = jumped {
            let punctual: Vec<String> = actions.iter().map(fingerprint).collect();
            let jumped: Vec<String> = jumped.iter().map(fingerprint).collect();
            if punctual != jumped {
                return Err(format!(
                    "waking late gave other actions than waking on time:\n{jumped:#?}\n\
                     instead of\n{punctual:#?}"
                ));
            }
        }
        Ok(actions)
    }

    /// Before the engine handles `now`: the logins whose code expired or whose device
    /// authorization request timed out must end; polls past the exchange timeout are
    /// abandoned and backed off from.
    fn expect_deadlines(&mut self) {
        let now = self.now;
        for login in self.logins.values_mut() {
            match &mut login.phase {
                Phase::Authorizing { deadline, .. } if *deadline <= now => {
                    login
                        .end
                        .get_or_insert(End::TimedOut(Step::DeviceAuthorization));
                }
                Phase::Polling(poller) if poller.expiry <= now => {
                    login.end.get_or_insert(End::Expired);
                }
                Phase::Polling(poller) => {
                    if let Some((exchange, sent)) = poller.in_flight {
                        let abandoned = sent + EXCHANGE_TIMEOUT;
                        if abandoned <= now {
                            poller.in_flight = None;
                            poller.failures += 1;
                            poller.due =
                                abandoned + backoff(poller.interval, poller.failures, None);
                            self.late.push(exchange);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Drains the engine, checking every action, then confirms every `Persist` and drains
    /// again, until nothing is left; then every login that must have ended has.
    fn drain(&mut self) -> Result<Vec<Action>, String> {
        let mut all = Vec::new();
        loop {
            let now = self.now;
            all.extend(drain_checked(
                self,
                now,
                |sim| &mut sim.engine,
                DeviceSim::check,
            )?);
            let Some(flow) = self.to_confirm.pop() else {
                break;
            };
            if let Some(login) = self.logins.get_mut(&flow) {
                login.confirmed = true;
                login.end = Some(End::Ok);
            }
            self.engine.handle_persisted(self.now, flow, Ok(()));
        }
        for (flow, login) in &self.logins {
            if let (true, Some(end)) = (login.live(), &login.end) {
                return Err(format!(
                    "login {flow} should have ended ({end:?}) but has not"
                ));
            }
        }
        Ok(all)
    }

    /// Marks `flow` to end with `end` (a request it has in flight becomes late when it
    /// finishes).
    fn expect_end(&mut self, flow: FlowId, end: End) {
        if let Some(login) = self.logins.get_mut(&flow) {
            login.end = Some(end);
        }
    }

    /// The rules that hold between steps.
    fn check_between(&self) -> Result<(), String> {
        if self.engine.poll_timeout().is_some_and(|at| at <= self.now) {
            return Err("poll_timeout lies in the past after a drain".into());
        }
        let live = self.in_progress();
        if self.engine.flows_in_progress() != live.len() {
            return Err(format!(
                "the engine has {} flows in progress, the model {}",
                self.engine.flows_in_progress(),
                live.len()
            ));
        }
        for flow in live {
            match &self.logins[&flow].phase {
                Phase::Authorizing { exchange: None, .. } => {
                    return Err(format!("login {flow} never asked for its code"));
                }
                Phase::Polling(poller) => {
                    if poller.expiry <= self.now {
                        return Err(format!("login {flow} outlived its code"));
                    }
                    if poller.in_flight.is_none()
                        && poller.due + SLACK <= self.now
                        && poller.due < poller.expiry
                    {
                        return Err(format!(
                            "login {flow} stalled: its poll was due {:?} ago",
                            self.now - poller.due
                        ));
                    }
                }
                Phase::Persisting => {
                    return Err(format!("login {flow} waits for a store that answered"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check(&mut self, action: &Action) -> Result<(), String> {
        let now = self.now;
        match action {
            Action::RequestDeviceCode {
                flow,
                exchange,
                request,
            } => {
                if self.starting.take() != Some(*flow) {
                    return Err(format!("RequestDeviceCode for {flow}, not a new login"));
                }
                if request.request().uri() != DEVICE_ENDPOINT
                    || request.request().method() != http::Method::POST
                {
                    return Err(format!(
                        "a device authorization request to {}",
                        request.request().uri()
                    ));
                }
                if request.request().body() != b"scope=openid+email&client_id=latchkey-test" {
                    return Err(format!(
                        "a device authorization request with {:?}",
                        String::from_utf8_lossy(request.request().body())
                    ));
                }
                if let Some(Login {
                    phase: Phase::Authorizing { exchange: slot, .. },
                    ..
                }) = self.logins.get_mut(flow)
                {
                    *slot = Some(*exchange);
                }
            }
            Action::ShowUserCode {
                flow,
                authorization,
            } => {
                let login = live(&mut self.logins, *flow, "ShowUserCode")?;
                let Some(shown) = login.expect_shown.take() else {
                    return Err(format!("ShowUserCode for {flow}, which got no usable code"));
                };
                if std::mem::replace(&mut login.shown, true) {
                    return Err(format!("a second ShowUserCode for {flow}"));
                }
                let interval = authorization.interval();
                if authorization.user_code() != USER_CODE
                    || authorization.verification_uri() != shown.verification_uri
                    || authorization.verification_uri_complete() != shown.complete.as_deref()
                    || authorization.lifetime() != shown.lifetime
                    || interval < shown.interval
                    || interval > shown.interval + Duration::from_millis(1)
                {
                    return Err(format!(
                        "ShowUserCode for {flow} shows {authorization:?}, expected {shown:?}"
                    ));
                }
                let expiry = now + shown.lifetime;
                login.phase = Phase::Polling(Poller {
                    device_code: shown.device_code,
                    expiry,
                    interval: shown.interval,
                    failures: 0,
                    due: now + shown.interval,
                    in_flight: None,
                });
                if expiry <= now {
                    login.end.get_or_insert(End::Expired);
                }
            }
            Action::SendTokenRequest {
                flow,
                exchange,
                request,
            } => {
                let login = live(&mut self.logins, *flow, "SendTokenRequest")?;
                let Phase::Polling(poller) = &mut login.phase else {
                    return Err(format!("a poll for {flow}, which is not polling"));
                };
                if let Some((other, _)) = poller.in_flight {
                    return Err(format!("a poll for {flow} while {other} is in flight"));
                }
                if now < poller.due {
                    return Err(format!(
                        "a poll for {flow} {:?} too early (interval {:?}, {} failures)",
                        poller.due - now,
                        poller.interval,
                        poller.failures
                    ));
                }
                if now >= poller.expiry {
                    return Err(format!("a poll for {flow} after its code expired"));
                }
                if request.request().uri() != harness::TOKEN
                    || request.request().body() != poll_body(&poller.device_code).as_bytes()
                {
                    return Err(format!(
                        "a poll for {flow} to {} with {:?}",
                        request.request().uri(),
                        String::from_utf8_lossy(request.request().body())
                    ));
                }
                poller.in_flight = Some((*exchange, now));
            }
            Action::Persist { flow, tokens } => {
                let login = live(&mut self.logins, *flow, "Persist")?;
                if !matches!(login.phase, Phase::Polling(_)) || login.end.is_some() {
                    return Err(format!("Persist for {flow}, which got no tokens"));
                }
                if tokens.access_token().expose_secret() != "at-device" {
                    return Err(format!("Persist for {flow} with other tokens"));
                }
                login.phase = Phase::Persisting;
                self.to_confirm.push(*flow);
            }
            Action::Finished { flow, result } => {
                let login = live(&mut self.logins, *flow, "Finished")?;
                let in_flight = login.in_flight();
                match (&login.end, result) {
                    (Some(End::Ok), Ok(_)) if login.confirmed => {}
                    (Some(end), Err(error)) if end.accepts(error) => {}
                    (end, result) => {
                        return Err(format!(
                            "login {flow} finished with {result:?}, expected {end:?}"
                        ));
                    }
                }
                login.phase = Phase::Finished;
                if let Some(exchange) = in_flight {
                    self.late.push(exchange);
                }
            }
            other => return Err(format!("an action the model does not expect: {other:?}")),
        }
        Ok(())
    }
}

/// A login the model knows and that has not finished.
fn live<'l>(
    logins: &'l mut BTreeMap<FlowId, Login>,
    flow: FlowId,
    what: &str,
) -> Result<&'l mut Login, String> {
    match logins.get_mut(&flow) {
        None => Err(format!("{what} for {flow}, never started")),
        Some(login) if !login.live() => Err(format!("{what} for {flow}, finished already")),
        Some(login) => Ok(login),
    }
}

/// The wait after `failures` failures in a row: the interval doubled per failure, up to
/// [`MAX_BACKOFF`] (or the interval if longer), at least `retry_after`.
fn backoff(interval: Duration, failures: u32, retry_after: Option<Duration>) -> Duration {
    let doubled = interval
        .saturating_mul(1 << failures.min(16))
        .min(MAX_BACKOFF.max(interval));
    doubled.max(retry_after.unwrap_or_default())
}

/// The status of [`DeviceReply::Garbage`]: 200–599, but neither 204 nor 304 (which have no
/// body).
fn garbage_status(status: u16) -> u16 {
    match 200 + status % 400 {
        204 | 304 => 200,
        status => status,
    }
}

/// The literal device authorization answer of `code`, carrying `device_code`.
pub fn code_answer(code: &CodeReply, device_code: &str) -> Vec<u8> {
    let (uri, complete) = match code.shape {
        CodeShape::BadUri {
            which,
            complete: true,
        } => (VERIFICATION_URI, Some(which.uri().to_owned())),
        CodeShape::BadUri { which, .. } => (which.uri(), None),
        _ => (
            VERIFICATION_URI,
            Some(format!("{VERIFICATION_URI}?user_code={USER_CODE}")),
        ),
    };
    match code.shape {
        CodeShape::Refused { github: true } => {
            return form_response(
                200,
                "error=device_flow_disabled&error_description=Device+Flow+must+be+explicitly+\
                 enabled+for+this+App&error_uri=https%3A%2F%2Fdocs.github.com",
            );
        }
        CodeShape::Refused { github: false } => return oauth_error(400, "invalid_client"),
        CodeShape::GitHubForm => {
            let mut body = format!(
                "device_code={device_code}&user_code={USER_CODE}\
                 &verification_uri=https%3A%2F%2Fgithub.com%2Flogin%2Fdevice"
            );
            if let Some(lifetime) = code.lifetime.form() {
                body.push_str(&format!("&expires_in={lifetime}"));
            }
            if let Some(interval) = code.interval.form() {
                body.push_str(&format!("&interval={interval}"));
            }
            return form_response(200, &body);
        }
        _ => {}
    }
    let mut members = serde_json::Map::new();
    if !matches!(code.shape, CodeShape::MissingDeviceCode) {
        members.insert("device_code".into(), json!(device_code));
    }
    let user_code = match code.shape {
        CodeShape::BadUserCode => "WDJB\u{1b}[2J-MJHT",
        _ => USER_CODE,
    };
    members.insert("user_code".into(), json!(user_code));
    match code.shape {
        CodeShape::Google => {
            members.insert(
                "verification_url".into(),
                json!("https://www.google.com/device"),
            );
        }
        CodeShape::Standard { complete: false } => {
            members.insert("verification_uri".into(), json!(uri));
        }
        _ => {
            members.insert("verification_uri".into(), json!(uri));
            members.insert("verification_uri_complete".into(), json!(complete));
        }
    }
    if let Some(lifetime) = code.lifetime.json() {
        members.insert("expires_in".into(), lifetime);
    }
    if let Some(interval) = code.interval.json() {
        members.insert("interval".into(), interval);
    }
    json_response(200, &Value::Object(members).to_string())
}

/// The literal answer of `reply` (not a code, not a transport failure) at `wall`;
/// `login` numbers the tokens.
fn reply_bytes(reply: &DeviceReply, wall: SystemTime, login: u64) -> Vec<u8> {
    let error_form = |code: &str, extra: &str| {
        form_response(
            200,
            &format!(
                "error={code}&error_description=see+the+docs\
                 &error_uri=https%3A%2F%2Fdocs.github.com{extra}"
            ),
        )
    };
    match reply {
        DeviceReply::Code(_) | DeviceReply::Transport => {
            unreachable!("answered elsewhere")
        }
        DeviceReply::Pending { form: true } => error_form("authorization_pending", ""),
        DeviceReply::Pending { form: false } => oauth_error(400, "authorization_pending"),
        DeviceReply::SlowDown {
            interval,
            form: true,
        } => error_form(
            "slow_down",
            &interval.map_or(String::new(), |s| format!("&interval={s}")),
        ),
        DeviceReply::SlowDown {
            interval,
            form: false,
        } => {
            let mut body = json!({"error": "slow_down"});
            if let Some(seconds) = interval {
                body["interval"] = json!(seconds);
            }
            json_response(400, &body.to_string())
        }
        DeviceReply::Unavailable {
            status,
            retry_after,
            oauth,
        } => {
            let (header, _) = retry_after.header(wall);
            let headers: Vec<&str> = header.iter().map(String::as_str).collect();
            if *oauth {
                answer(
                    status.status(),
                    "application/json",
                    &headers,
                    r#"{"error":"temporarily_unavailable"}"#,
                )
            } else {
                answer(
                    status.status(),
                    "text/html",
                    &headers,
                    "<html><body><h1>503 Service Unavailable</h1></body></html>",
                )
            }
        }
        DeviceReply::Denied { entra: false } => oauth_error(400, "access_denied"),
        DeviceReply::Denied { entra: true } => json_response(
            400,
            r#"{"error":"authorization_declined","error_description":"AADSTS70000: The user declined.","error_codes":[70000]}"#,
        ),
        DeviceReply::ExpiredToken => oauth_error(400, "expired_token"),
        DeviceReply::Rejected { client: false } => oauth_error(400, "invalid_grant"),
        DeviceReply::Rejected { client: true } => oauth_error(401, "invalid_client"),
        DeviceReply::Tokens => json_response(
            200,
            &json!({
                "access_token": "at-device",
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": format!("rt-device-{login}"),
                "scope": "openid email",
            })
            .to_string(),
        ),
        DeviceReply::Garbage { status, bytes } => {
            let mut body = b"<html>".to_vec();
            body.extend(bytes.iter().filter(|b| **b != b'&'));
            let mut raw = format!(
                "HTTP/1.1 {} X\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n",
                garbage_status(*status),
                body.len()
            )
            .into_bytes();
            raw.extend_from_slice(&body);
            raw
        }
    }
}

impl Default for DeviceSim {
    fn default() -> DeviceSim {
        DeviceSim::new()
    }
}

impl crate::harness::OpModel for DeviceSim {
    type Op = DeviceOp;

    fn step(&mut self, op: &DeviceOp) -> Result<(), String> {
        self.apply(op).map(drop)
    }

    fn finish(&mut self) -> Result<(), String> {
        self.settle()
    }
}

// ----- quickcheck generators -----

fn choose<T: Copy>(g: &mut Gen, items: &[T]) -> T {
    *g.choose(items).expect("a non-empty list")
}

impl Arbitrary for DeviceOp {
    fn arbitrary(g: &mut Gen) -> DeviceOp {
        // Weighted so that sequences often have logins polling, answers of every kind, and
        // time crossing intervals, back-offs, exchange timeouts and expiry.
        match u8::arbitrary(g) % 24 {
            0..=1 => DeviceOp::Start {
                owner: u8::arbitrary(g),
            },
            2..=7 => DeviceOp::Authorize {
                target: u8::arbitrary(g),
                reply: CodeReply::arbitrary(g),
            },
            8..=15 => DeviceOp::Answer {
                target: u8::arbitrary(g),
                late: u8::arbitrary(g) % 8 == 0,
                reply: DeviceReply::arbitrary(g),
            },
            16..=22 => DeviceOp::Advance {
                millis: choose(
                    g,
                    &[
                        1, 100, 500, 999, 1000, 1000, 1001, 1500, 2500, 4000, 4999, 5000, 5000,
                        5001, 7500, 10_000, 15_000, 29_999, 30_000, 30_001, 60_000, 300_000,
                        900_000,
                    ],
                ) - 1,
                sleep: u8::arbitrary(g) % 4 == 0,
            },
            _ => DeviceOp::Cancel {
                login: u8::arbitrary(g),
            },
        }
    }
}

impl Arbitrary for CodeReply {
    fn arbitrary(g: &mut Gen) -> CodeReply {
        let interval = match u8::arbitrary(g) % 8 {
            0 => Interval::Absent,
            1 => Interval::Null,
            2..=4 => Interval::Seconds(choose(g, &[0, 1, 2, 3, 5, 5, 5, 10])),
            5..=6 => Interval::Tenths(choose(g, &[0, 5, 10, 11, 15, 25, 49])),
            _ => Interval::Text(choose(g, &[1, 5, 7])),
        };
        let seconds = choose(g, &[0, 1, 4, 5, 10, 30, 60, 120, 300, 900, 1800]);
        let lifetime = match u8::arbitrary(g) % 6 {
            0 => Lifetime::Absent,
            1..=3 => Lifetime::Seconds(seconds),
            4 => Lifetime::Text(seconds),
            _ => Lifetime::Fraction(seconds),
        };
        let shape = match u8::arbitrary(g) % 16 {
            0..=6 => CodeShape::Standard {
                complete: bool::arbitrary(g),
            },
            7..=8 => CodeShape::Google,
            9..=10 => CodeShape::GitHubForm,
            11..=12 => CodeShape::BadUri {
                which: choose(
                    g,
                    &[
                        BadUri::Javascript,
                        BadUri::HttpRemote,
                        BadUri::Space,
                        BadUri::Control,
                        BadUri::NonAscii,
                    ],
                ),
                complete: bool::arbitrary(g),
            },
            13 => CodeShape::BadUserCode,
            14 => CodeShape::MissingDeviceCode,
            _ => CodeShape::Refused {
                github: bool::arbitrary(g),
            },
        };
        CodeReply {
            interval,
            lifetime,
            shape,
        }
    }
}

impl Arbitrary for DeviceReply {
    fn arbitrary(g: &mut Gen) -> DeviceReply {
        match u8::arbitrary(g) % 24 {
            0..=1 => DeviceReply::Code(CodeReply::arbitrary(g)),
            2..=6 => DeviceReply::Pending {
                form: bool::arbitrary(g),
            },
            7..=9 => DeviceReply::SlowDown {
                interval: choose(g, &[None, None, Some(0), Some(3), Some(10), Some(20)]),
                form: bool::arbitrary(g),
            },
            10..=13 => DeviceReply::Unavailable {
                status: choose(
                    g,
                    &[
                        Busy::Internal,
                        Busy::BadGateway,
                        Busy::Unavailable,
                        Busy::GatewayTimeout,
                        Busy::TooManyRequests,
                    ],
                ),
                retry_after: match u8::arbitrary(g) % 5 {
                    0 => RetryAfter::Absent,
                    1 => RetryAfter::Seconds(choose(g, &[0, 1, 5, 30, 90, 120])),
                    2 => RetryAfter::Date(choose(g, &[0, 2, 30, 90])),
                    3 => RetryAfter::PastDate,
                    _ => RetryAfter::Unreadable,
                },
                oauth: bool::arbitrary(g),
            },
            14..=15 => DeviceReply::Transport,
            16 => DeviceReply::Denied {
                entra: bool::arbitrary(g),
            },
            17 => DeviceReply::ExpiredToken,
            18 => DeviceReply::Rejected {
                client: bool::arbitrary(g),
            },
            19..=21 => DeviceReply::Tokens,
            _ => DeviceReply::Garbage {
                status: u16::arbitrary(g),
                bytes: Vec::arbitrary(g),
            },
        }
    }
}
