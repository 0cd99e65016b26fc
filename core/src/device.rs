//! Logging in where no browser can be opened: the device authorization grant (RFC 8628).
//!
//! A user on an SSH session, in a container or on a build agent signs in on another device.
//! [`Engine::start_device`](crate::Engine::start_device) asks the provider's device
//! authorization endpoint for a code ([`Action::RequestDeviceCode`]); the answer becomes
//! [`Action::ShowUserCode`] with a [`DeviceAuthorization`]: the user code and where to enter
//! it. Meanwhile the engine polls the token endpoint ([`Action::SendTokenRequest`], answered
//! as for a code exchange) on its own timers, and the tokens it finally gets are verified,
//! stored and handed out exactly as after a browser login.
//!
//! ```text
//!  start_device ──► Authorizing ──code──► Polling ──tokens──► (Verifying) ──► Persisting ──► Ok
//!                       │                 │  ▲  │
//!                       │                 │  └──┘ authorization_pending: wait `interval`
//!                       │                 │       slow_down: `interval` + 5 s from now on
//!                       │                 │       5xx, 429, transport: back off
//!                       │                 ▼
//!                       │      Err(Denied | Device(Expired) | TokenRejected | …)
//!                       ▼
//!     Err(Device(Refused | BadResponse | Unreachable) | TimedOut)
//! ```
//!
//! ## The polling rules (S51)
//!
//! - The first poll waits one `interval` after the code arrived (default
//!   [`DEFAULT_INTERVAL`]; never less than [`MIN_INTERVAL`]); every later poll waits at least
//!   one `interval` after the previous answer.
//! - `authorization_pending`: poll again after `interval`.
//! - `slow_down`: `interval` grows by [`SLOW_DOWN_STEP`] for this and every later poll, or
//!   to the `interval` the answer names (GitHub sends one), whichever is longer.
//! - A 5xx or 429 answer (with an OAuth error other than the ones below, or none),
//!   `temporarily_unavailable` at any status, or a poll that failed or took longer than the
//!   exchange timeout: wait `interval` doubled for each failure in a row (up to
//!   [`MAX_BACKOFF`], or `interval` if longer), and at least as long as `Retry-After` says.
//! - `access_denied` (and Microsoft Entra's `authorization_declined`) ends the flow with
//!   [`FlowError::Denied`]; `expired_token` with [`DeviceError::Expired`], and so does the
//!   code's `expires_in` passing, without a last poll; any other error ends it with
//!   [`FlowError::TokenRejected`].
//!
//! ## What providers send
//!
//! JSON or form-encoded answers alike (GitHub answers forms unless asked for JSON, and
//! reports every error with HTTP 200); Google's `verification_url` for `verification_uri`;
//! `interval` and `expires_in` as numbers, numeric strings or fractions (an interval is
//! never rounded down); no `verification_uri_complete`. Strict where it matters: the
//! verification URIs must be `https` URLs (or `http` on loopback) without whitespace or
//! control characters (S52), and the user code printable ASCII, since both are shown to the
//! user, opened or drawn as a QR code.
//!
//! ## A device login with literal bytes
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use latchkey::http1::ResponseReader;
//! use latchkey::{Action, Config, Engine, FlowOptions, Provider};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = Provider::builder("https://idp.example/authorize", "https://idp.example/token", "tv")
//!     .device_authorization_endpoint("https://idp.example/device_authorization")
//!     .scopes(["profile"])
//!     .build()?;
//! // Device logins need no listener: the redirect port may stay unresolved.
//! let mut engine = Engine::new(Config::builder(provider).build()?)?;
//! let (start, wall) = (Instant::now(), SystemTime::now());
//! let answer = |json: &str, status: &str| {
//!     let raw = format!(
//!         "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
//!         json.len()
//!     );
//!     ResponseReader::new(1 << 16).read(raw.as_bytes()).map(Option::unwrap)
//! };
//!
//! let flow = engine.start_device(start, FlowOptions::new())?;
//! let Some(Action::RequestDeviceCode { exchange, request, .. }) = engine.poll_action() else {
//!     unreachable!()
//! };
//! let request = request.finish(wall)?; // a client assertion, if any, is signed now
//! assert_eq!(request.uri(), "https://idp.example/device_authorization");
//! assert_eq!(request.body(), b"scope=profile&client_id=tv");
//! let code = r#"{"device_code":"GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS",
//!     "user_code":"WDJB-MJHT","verification_uri":"https://idp.example/device",
//!     "expires_in":1800,"interval":5}"#;
//! engine.handle_token_response(start, wall, exchange, answer(code, "200 OK")?);
//! let Some(Action::ShowUserCode { authorization, .. }) = engine.poll_action() else {
//!     unreachable!()
//! };
//! assert_eq!(authorization.user_code(), "WDJB-MJHT");
//! assert_eq!(authorization.verification_uri(), "https://idp.example/device");
//! assert_eq!(authorization.interval(), Duration::from_secs(5));
//!
//! // Nothing happens before the first interval has passed (S51).
//! assert_eq!(engine.poll_timeout(), Some(start + Duration::from_secs(5)));
//! engine.handle_timeout(start + Duration::from_secs(4));
//! assert!(engine.poll_action().is_none());
//!
//! // Then the token endpoint is polled; the user has not approved yet.
//! let now = start + Duration::from_secs(5);
//! engine.handle_timeout(now);
//! let Some(Action::SendTokenRequest { exchange, request, .. }) = engine.poll_action() else {
//!     unreachable!()
//! };
//! let request = request.finish(wall)?; // a client assertion, if any, is signed now
//! assert_eq!(
//!     request.body(),
//!     b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code\
//!       &device_code=GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS&client_id=tv"
//! );
//! let pending = r#"{"error":"authorization_pending"}"#;
//! engine.handle_token_response(now, wall, exchange, answer(pending, "400 Bad Request")?);
//! assert_eq!(engine.poll_timeout(), Some(now + Duration::from_secs(5)));
//!
//! // Approved: the tokens are stored, then handed out, as after a browser login.
//! let now = now + Duration::from_secs(5);
//! engine.handle_timeout(now);
//! let Some(Action::SendTokenRequest { exchange, .. }) = engine.poll_action() else {
//!     unreachable!()
//! };
//! let tokens = r#"{"access_token":"2YotnFZFEjr1zCsicMWpAA","token_type":"Bearer","expires_in":3600}"#;
//! engine.handle_token_response(now, wall, exchange, answer(tokens, "200 OK")?);
//! let Some(Action::Persist { .. }) = engine.poll_action() else { unreachable!() };
//! engine.handle_persisted(now, flow, Ok(()));
//! let Some(Action::Finished { result: Ok(_), .. }) = engine.poll_action() else {
//!     unreachable!()
//! };
//! # Ok(())
//! # }
//! ```
//!
//! [`Action::RequestDeviceCode`]: crate::Action::RequestDeviceCode
//! [`Action::ShowUserCode`]: crate::Action::ShowUserCode
//! [`Action::SendTokenRequest`]: crate::Action::SendTokenRequest
//! [`FlowError::Denied`]: crate::FlowError::Denied
//! [`FlowError::TokenRejected`]: crate::FlowError::TokenRejected

use std::fmt;
use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use secrecy::SecretString;
use serde_json::Value;

use crate::config::Provider;
use crate::error::{BadTokenResponse, DeviceError, FlowError};
use crate::exchange;
use crate::grammar::is_vschar_text;
use crate::outgoing::ProviderRequest;
use crate::token::{self, Members, TokenSet};
use crate::url;

/// The polling interval when the provider names none (RFC 8628 §3.2).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest interval latchkey polls at, whatever the provider says.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How much `slow_down` adds to the interval (RFC 8628 §3.5).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// The longest wait after failures in a row, unless the interval or `Retry-After` is longer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The longest a device code is believed to live (and the longest interval); longer values
/// are clamped to it.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest user code accepted, in bytes.
const MAX_USER_CODE: usize = 64;

/// What the user needs to approve a device login elsewhere: the code to enter and where.
/// Emitted once per device flow with [`Action::ShowUserCode`](crate::Action::ShowUserCode).
///
/// Every value has been checked (S52): the URIs are `https` URLs (or `http` on a loopback
/// host) of printable ASCII, safe to print, open or draw as a QR code; the user code is
/// printable ASCII. The device code itself, a secret, never leaves the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuthorization {
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_at: SystemTime,
    lifetime: Duration,
    interval: Duration,
}

impl DeviceAuthorization {
    /// The code the user enters at [`verification_uri`](Self::verification_uri).
    pub fn user_code(&self) -> &str {
        &self.user_code
    }

    /// Where the user enters the code.
    pub fn verification_uri(&self) -> &str {
        &self.verification_uri
    }

    /// The verification URI with the code already in it, when the provider sent one: the
    /// one to open or draw as a QR code.
    pub fn verification_uri_complete(&self) -> Option<&str> {
        self.verification_uri_complete.as_deref()
    }

    /// When the code expires (wall clock); the flow ends with [`DeviceError::Expired`] then.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// How long the code lives from when it arrived.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The polling interval the provider asked for (at least [`MIN_INTERVAL`]).
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// A device authorization as the engine keeps it: what the user sees, and the device code.
pub(crate) struct DeviceGrant {
    pub authorization: DeviceAuthorization,
    pub device_code: SecretString,
}

impl fmt::Debug for DeviceGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceGrant")
            .field("authorization", &self.authorization)
            .finish_non_exhaustive()
    }
}

/// The device authorization request (RFC 8628 §3.1): the scope and the resources (RFC
/// 8707), authenticated like the token requests (S33).
pub(crate) fn authorization_request(provider: &Provider, endpoint: &http::Uri) -> ProviderRequest {
    let inner = provider.inner();
    let scope = inner.scopes.join(" ");
    let mut body = exchange::form_body(inner, scope.len());
    if !scope.is_empty() {
        body.append("scope", &scope);
    }
    for resource in &inner.resources {
        body.append("resource", resource);
    }
    exchange::client_request(provider, endpoint, body)
}

/// Reads the device authorization response (RFC 8628 §3.2), received at `wall`; a missing
/// `expires_in` means `default_lifetime`.
pub(crate) fn read_authorization(
    response: &http::Response<Vec<u8>>,
    wall: SystemTime,
    default_lifetime: Duration,
) -> Result<DeviceGrant, FlowError> {
    let status = response.status().as_u16();
    let bad = |reason| FlowError::Device(DeviceError::BadResponse { status, reason });
    let mut members = token::read_answer(response).map_err(|error| match error {
        FlowError::TokenRejected { status, error } => {
            FlowError::Device(DeviceError::Refused { status, error })
        }
        FlowError::BadTokenResponse { status, reason } => {
            FlowError::Device(DeviceError::BadResponse { status, reason })
        }
        other => other,
    })?;
    let device_code = match members.take_extra("device_code") {
        Some(Value::String(code)) if is_vschar_text(&code) => SecretString::from(code),
        None | Some(Value::Null) => {
            return Err(bad(BadTokenResponse::MissingMember("device_code")));
        }
        Some(_) => return Err(bad(BadTokenResponse::InvalidMember("device_code"))),
    };
    let user_code = match members.take_extra("user_code") {
        Some(Value::String(code)) if is_user_code(&code) => code,
        None | Some(Value::Null) => return Err(bad(BadTokenResponse::MissingMember("user_code"))),
        Some(_) => return Err(bad(BadTokenResponse::InvalidMember("user_code"))),
    };
    // Google says `verification_url`.
    let verification_uri = match (
        members.take_extra("verification_uri"),
        members.take_extra("verification_url"),
    ) {
        (Some(Value::String(uri)), _) | (None | Some(Value::Null), Some(Value::String(uri))) => uri,
        (None | Some(Value::Null), None | Some(Value::Null)) => {
            return Err(bad(BadTokenResponse::MissingMember("verification_uri")));
        }
        _ => return Err(bad(BadTokenResponse::InvalidMember("verification_uri"))),
    };
    if url::parse(&verification_uri).is_err() {
        return Err(bad(BadTokenResponse::InvalidMember("verification_uri")));
    }
    let verification_uri_complete = match members.take_extra("verification_uri_complete") {
        None | Some(Value::Null) => None,
        Some(Value::String(uri)) if url::parse(&uri).is_ok() => Some(uri),
        Some(_) => {
            return Err(bad(BadTokenResponse::InvalidMember(
                "verification_uri_complete",
            )));
        }
    };
    let lifetime = members
        .take_lifetime()
        .map_or(default_lifetime, Duration::from_secs)
        .min(MAX_LIFETIME);
    let interval = members
        .take_extra("interval")
        .and_then(|value| interval_of(&value))
        .unwrap_or(DEFAULT_INTERVAL);
    Ok(DeviceGrant {
        authorization: DeviceAuthorization {
            user_code,
            verification_uri,
            verification_uri_complete,
            expires_at: wall.checked_add(lifetime).unwrap_or(wall),
            lifetime,
            interval,
        },
        device_code,
    })
}

/// What one poll's answer means.
#[derive(Debug)]
pub(crate) enum Poll {
    /// The tokens: the user approved.
    Tokens(TokenSet),
    /// `authorization_pending`: ask again after the interval.
    Pending,
    /// `slow_down`, with the interval the answer names, if any.
    SlowDown(Option<Duration>),
    /// The provider could not answer now (5xx, 429, `temporarily_unavailable`), with how
    /// long `Retry-After` asks to wait, if it says.
    Unavailable(Option<Duration>),
    /// The flow ends.
    Fail(FlowError),
}

/// Reads the answer to a device code poll (RFC 8628 §3.5), received at `wall`, to a
/// grant that asked for `requested_scopes` and `requested_resources`.
pub(crate) fn read_poll(
    response: &http::Response<Vec<u8>>,
    requested_scopes: &[String],
    requested_resources: &[String],
    wall: SystemTime,
) -> Poll {
    let answer = token::parse_token_response(response, requested_scopes, requested_resources, wall);
    let error = match answer {
        Ok(tokens) => return Poll::Tokens(tokens),
        Err(error) => error,
    };
    let status = response.status();
    let unavailable = || Poll::Unavailable(retry_after(response.headers().get(RETRY_AFTER), wall));
    match error {
        FlowError::TokenRejected { error, .. } => match error.code.as_str() {
            "authorization_pending" => Poll::Pending,
            "slow_down" => Poll::SlowDown(
                Members::parse(response.body())
                    .and_then(|mut members| members.take_extra("interval"))
                    .and_then(|value| interval_of(&value)),
            ),
            "access_denied" | "authorization_declined" => Poll::Fail(FlowError::Denied(error)),
            "expired_token" => Poll::Fail(FlowError::Device(DeviceError::Expired)),
            "temporarily_unavailable" => unavailable(),
            _ if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS => {
                unavailable()
            }
            _ => Poll::Fail(FlowError::TokenRejected {
                status: status.as_u16(),
                error,
            }),
        },
        FlowError::BadTokenResponse {
            reason: BadTokenResponse::UnexpectedStatus,
            ..
        } if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS => {
            unavailable()
        }
        error => Poll::Fail(error),
    }
}

/// An interval from a number or numeric string of seconds, fractions kept (never rounded
/// down, S51), at least [`MIN_INTERVAL`] and at most [`MAX_LIFETIME`]. `None` when it is not
/// a number.
fn interval_of(value: &Value) -> Option<Duration> {
    let seconds = token::seconds_f64(value)?;
    let clamped = seconds.clamp(MIN_INTERVAL.as_secs_f64(), MAX_LIFETIME.as_secs_f64());
    // Whole milliseconds, rounded up.
    Some(Duration::from_millis((clamped * 1000.0).ceil() as u64))
}

/// Whether `code` is fit to show: 1 to 64 bytes of printable ASCII, spaces inside allowed.
fn is_user_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_USER_CODE
        && code.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        && !code.starts_with(' ')
        && !code.ends_with(' ')
}

/// How long a `Retry-After` header (RFC 9110 §10.2.3) asks to wait from `wall`: delay
/// seconds, or an HTTP date. `None` when absent or unreadable.
pub(crate) fn retry_after(value: Option<&http::HeaderValue>, wall: SystemTime) -> Option<Duration> {
    let text = value?.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = text.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(MAX_LIFETIME));
    }
    let at = http_date(text)?;
    Some(
        at.duration_since(wall)
            .unwrap_or_default()
            .min(MAX_LIFETIME),
    )
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form HTTP senders must use.
fn http_date(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    if bytes.len() != 29 || &bytes[3..5] != b", " || !text.ends_with(" GMT") {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let day = number(5..7)?;
    let month = MONTHS.iter().position(|m| Some(*m) == text.get(8..11))? as u64 + 1;
    let year = number(12..16)?;
    let (hour, minute, second) = (number(17..19)?, number(20..22)?, number(23..25)?);
    if [
        &text[7..8],
        &text[11..12],
        &text[16..17],
        &text[19..20],
        &text[22..23],
    ] != [" ", " ", " ", ":", ":"]
        || !(1..=31).contains(&day)
        || year < 1970
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = (era * 146_097 + day_of_era).checked_sub(719_468)?;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_read_exactly() {
        let at = http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
        let leap = http_date("Thu, 29 Feb 2024 00:00:00 GMT").unwrap();
        assert_eq!(
            leap.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_709_164_800
        );
        for bad in [
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT ",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "",
        ] {
            assert_eq!(http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn intervals_are_never_rounded_down() {
        let of = |json: &str| interval_of(&serde_json::from_str(json).unwrap());
        assert_eq!(of("5"), Some(Duration::from_secs(5)));
        assert_eq!(of("\"5\""), Some(Duration::from_secs(5)));
        assert_eq!(of("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(of("\"2.0001\""), Some(Duration::from_millis(2001)));
        assert_eq!(of("0"), Some(MIN_INTERVAL));
        assert_eq!(of("-3"), Some(MIN_INTERVAL));
        assert_eq!(of("1e300"), Some(MAX_LIFETIME));
        assert_eq!(of("\"soon\""), None);
        assert_eq!(of("true"), None);
    }

    #[test]
    fn user_codes_are_printable() {
        assert!(is_user_code("WDJB-MJHT"));
        assert!(is_user_code("123 456"));
        for bad in [
            "",
            " WDJB",
            "WDJB ",
            "WD\u{1b}[2J",
            "WDJB\nMJHT",
            "WDJ\u{e9}",
        ] {
            assert!(!is_user_code(bad), "{bad:?}");
        }
        assert!(!is_user_code(&"A".repeat(65)));
    }
}
