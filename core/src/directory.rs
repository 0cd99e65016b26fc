//! Pending logins that live in a store shared by several replicas: the flow directory.
//!
//! A backend that runs behind a load balancer starts a login on one replica, and the
//! provider sends the browser back to whichever replica the balancer picks. With a flow
//! directory, the engine that starts a login hands its record to the directory
//! ([`Action::ShareFlow`]) before the browser is sent anywhere, and an engine that receives
//! a callback asks the directory for the record ([`Action::TakeFlow`]) and adopts the
//! flow. Everything goes through actions and `handle_*` inputs, like the rest of the
//! engine; the directory itself (Redis in `latchkey-redis`, a map in tests) belongs to the
//! driver.
//!
//! ```text
//!  replica A                        directory                         replica B
//!  start (shared) ──ShareFlow──►  key ↦ record (expires with the flow)
//!     │ shared: OpenBrowser
//!     │                                    ◄──TakeFlow── callback (state) arrives here
//!     │                          key ↦ "used" (atomic take) ──record──► adopt, exchange,
//!     │                                                                  verify, persist
//!     ▼                                    ◄──AnnounceOutcome──          Finished
//!  handle_outcome ──► Finished
//! ```
//!
//! The rules:
//!
//! - **Single use across replicas (S54).** The take is atomic: the record is replaced by a
//!   "used" mark in the same operation (`GETDEL` or a script), so however many replicas
//!   receive one callback at once, one of them gets the record and makes the one token
//!   request; the others answer "already used". A callback for a flow the engine started
//!   itself is taken from the directory too, for the same reason.
//! - **Expiry (S56).** The record is stored for the flow's lifetime, and carries its
//!   deadline in wall-clock time: a record past its deadline is refused
//!   ([`DirectoryError::Expired`]) even when the store still returns it.
//! - **No token request without a taken record (S58).** A directory that cannot be reached
//!   ends an adopted flow with [`DirectoryError::Unavailable`] and answers the browser
//!   `503`; the record stays where it was, so the same callback works once the directory
//!   is back. A flow started here keeps waiting for its callback.
//! - **Secrets (S55).** The record holds the PKCE verifier and the nonce, and a DPoP
//!   login's private key (RFC 9449: its code is bound to that key, so the replica that
//!   exchanges it must prove the same key); the engine hands it over in the clear
//!   ([`FlowRecord::expose_bytes`]) and the directory must seal it with an AEAD, with the
//!   key ([`FlowKey::as_bytes`]) as associated data, before it leaves the process.
//! - **Pushed requests (RFC 9126).** A shared login of a provider that takes pushed
//!   requests pushes first and shares its record once the provider answered: the browser
//!   is sent only when both are done.
//! - **The replica that started the login learns its outcome.** The adopting engine emits
//!   [`Action::AnnounceOutcome`]; the directory delivers it to every replica, and the one
//!   that holds the flow ([`Engine::shared_flow`]) feeds it to
//!   [`Engine::handle_outcome`] (with the tokens read back from the shared token store on
//!   success), which finishes the flow there too.
//!
//! A flow that ends before its callback (deadline, cancel, a newer login) leaves an
//! "ended" mark behind ([`Action::SpendFlow`]), so a late callback on any replica gets the
//! "expired" answer.
//!
//! # The record
//!
//! A record is a small JSON document. Every engine of a deployment must share the
//! provider's client id, token endpoint and redirect URI, which the record names, and
//! whether its logins are DPoP-bound; a record written for another is refused
//! ([`DirectoryError::Foreign`]). A record with a DPoP key is version 2, so that an engine
//! that does not know the key refuses it rather than exchange the code without it.
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use latchkey::directory::{Announcement, FlowKey, Outcome, Taken};
//! use latchkey::{Action, Config, Engine, FlowOptions, Provider};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = Provider::builder(
//!     "https://idp.example/authorize",
//!     "https://idp.example/token",
//!     "backend",
//! )
//! .build()?;
//! let config = Config::builder(provider)
//!     .web_redirect_uri("https://app.example/callback")
//!     .flow_directory(true)
//!     .build()?;
//! let mut a = Engine::new(config.clone())?;
//! let mut b = Engine::new(config)?;
//! let (now, wall) = (Instant::now(), SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
//!
//! // Replica A starts a shared login: first the record, then the browser.
//! let flow_a = a.start_with(now, [7; latchkey::ENTROPY_LEN], FlowOptions::new().shared(wall))?;
//! let Some(Action::ShareFlow { key, record, lifetime, .. }) = a.poll_action() else { unreachable!() };
//! assert_eq!(lifetime, Duration::from_secs(600));
//! assert_eq!(key.to_string(), "dc4bf80c77473d130fa0de86ba4018fe98bb214005e6a5891d12ba91446f9e81");
//! assert_eq!(
//!     record.expose_bytes(),
//!     br#"{"client_id":"backend","deadline":1800000600000,"redirect_uri":"https://app.example/callback","token_endpoint":"https://idp.example/token","v":1,"verifier":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc"}"#
//! );
//! a.handle_flow_shared(now, flow_a, Ok(()));
//! let Some(Action::OpenBrowser { url, .. }) = a.poll_action() else { unreachable!() };
//!
//! // The provider sends the browser to replica B, which does not know the state.
//! let state = url.split("&state=").nth(1).unwrap().split('&').next().unwrap();
//! let adopted = b.handle_redirect(now, &format!("code=c&state={state}"))?;
//! let Some(Action::TakeFlow { flow, take, key: wanted }) = b.poll_action() else { unreachable!() };
//! assert_eq!(flow, adopted);
//! assert_eq!(wanted, key);
//! b.handle_flow_taken(now, wall, take, Ok(Taken::Record(record)));
//! let Some(Action::SendTokenRequest { flow, .. }) = b.poll_action() else { unreachable!() };
//! assert_eq!(flow, adopted);
//!
//! // Whatever B's login ends with is announced; A finishes its own flow with it.
//! b.cancel(now, adopted);
//! let Some(Action::AnnounceOutcome { announcement }) = b.poll_action() else { unreachable!() };
//! assert_eq!(announcement.to_bytes(), format!("{key} failed cancelled").into_bytes());
//! let heard = Announcement::parse(&announcement.to_bytes()).unwrap();
//! assert_eq!(a.shared_flow(&heard.key), Some(flow_a));
//! let Outcome::Failed(reason) = heard.outcome else { unreachable!() };
//! a.handle_outcome(now, &heard.key, Err(latchkey::FlowError::FailedElsewhere(reason)));
//! let Some(Action::Finished { flow, result: Err(_) }) = a.poll_action() else { unreachable!() };
//! assert_eq!(flow, flow_a);
//! # let _ = FlowKey::from_hex("");
//! # Ok(())
//! # }
//! ```
//!
//! [`Action::ShareFlow`]: crate::Action::ShareFlow
//! [`Action::TakeFlow`]: crate::Action::TakeFlow
//! [`Action::SpendFlow`]: crate::Action::SpendFlow
//! [`Action::AnnounceOutcome`]: crate::Action::AnnounceOutcome
//! [`Engine::shared_flow`]: crate::Engine::shared_flow
//! [`Engine::handle_outcome`]: crate::Engine::handle_outcome

use std::fmt;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::callback::Rejection;
use crate::error::StoreError;
use crate::keys::PrivateKey;
use crate::pkce::StateKey;

/// The version written in every record without a DPoP key; others are refused as
/// unreadable.
const VERSION: u64 = 1;
/// The version of a record with a DPoP key (RFC 9449), so that an engine that knows
/// nothing of it refuses the record rather than exchange the code without the key.
const VERSION_DPOP: u64 = 2;
/// The longest reason an announcement carries, in bytes (a longer one is cut).
const MAX_REASON: usize = 512;

/// Where a flow's record lives in the directory: SHA-256 of its `state`. It names the
/// record without revealing the state, and is the associated data the record is sealed
/// with (S55), so a record moved under another key no longer opens.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey([u8; 32]);

impl FlowKey {
    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key of a digest.
    pub fn from_bytes(bytes: [u8; 32]) -> FlowKey {
        FlowKey(bytes)
    }

    /// The key written as 64 lowercase hexadecimal digits, as [`Display`](fmt::Display)
    /// writes it; `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<FlowKey> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut bytes = [0; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(FlowKey(bytes))
    }

    pub(crate) fn of(state: StateKey) -> FlowKey {
        FlowKey(state.digest())
    }

    pub(crate) fn state_key(&self) -> StateKey {
        StateKey::from_digest(self.0)
    }
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlowKey({self})")
    }
}

/// A pending flow's record, in the clear: the PKCE verifier, the nonce, the DPoP key, the
/// owner, the provider it was started with and its deadline. Seal it before it leaves the process
/// (S55). `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct FlowRecord(Zeroizing<Vec<u8>>);

impl FlowRecord {
    /// A record read back from the directory (after it was opened).
    pub fn from_bytes(bytes: Vec<u8>) -> FlowRecord {
        FlowRecord(Zeroizing::new(bytes))
    }

    /// The record's bytes, to seal.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for FlowRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowRecord")
            .field("len", &self.0.len())
            .finish()
    }
}

/// What the directory held under a key when [`Action::TakeFlow`](crate::Action::TakeFlow)
/// took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The record, now replaced by a "used" mark.
    Record(FlowRecord),
    /// A mark: the record was taken already (`used`), or its flow ended before any
    /// callback came (not `used`).
    Spent {
        /// Whether a callback took it.
        used: bool,
    },
    /// Nothing: no such flow, or its record expired.
    Missing,
}

/// How an adopted flow ended, told to the replica that started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The tokens were obtained, verified and stored under the flow's owner.
    Stored,
    /// The flow ended without tokens, for this reason (the adopting replica's
    /// [`FlowError`](crate::FlowError), as text).
    Failed(String),
}

/// The outcome of an adopted flow, addressed by its key: what
/// [`Action::AnnounceOutcome`](crate::Action::AnnounceOutcome) asks the directory to
/// deliver to every replica. Not secret: it carries no token.
///
/// On the wire: the key in hexadecimal, a space, then `stored`, or `failed ` and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The flow's key.
    pub key: FlowKey,
    /// How it ended.
    pub outcome: Outcome,
}

impl Announcement {
    /// The announcement as bytes, for a message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = self.key.to_string();
        match &self.outcome {
            Outcome::Stored => text.push_str(" stored"),
            Outcome::Failed(reason) => {
                text.push_str(" failed ");
                text.push_str(reason);
            }
        }
        text.into_bytes()
    }

    /// An announcement read from a message; `None` when it is not one.
    pub fn parse(bytes: &[u8]) -> Option<Announcement> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (key, rest) = text.split_once(' ')?;
        let key = FlowKey::from_hex(key)?;
        let outcome = match rest.split_once(' ') {
            None if rest == "stored" => Outcome::Stored,
            Some(("failed", reason)) => Outcome::Failed(cut(reason)),
            _ => return None,
        };
        Some(Announcement { key, outcome })
    }
}

/// `reason` cut to [`MAX_REASON`] bytes at a character boundary, without control
/// characters.
fn cut(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Why a flow could not be adopted from the directory, or why a shared flow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The directory could not be reached or refused the operation (S58). Nothing was
    /// taken: the same callback works once it is back.
    Unavailable(StoreError),
    /// The directory has no record for this callback: no such flow, already used, or
    /// ended before its callback.
    Refused(Rejection),
    /// The record's deadline has passed, although the directory still returned it (S56).
    Expired,
    /// The record is not one this engine can read (another version, or damaged).
    Unreadable,
    /// The record was written for another client, token endpoint or redirect URI than
    /// this engine's configuration: the replicas are not configured alike.
    Foreign,
}

impl fmt::Display for DirectoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirectoryError::Unavailable(error) => {
                write!(f, "the flow directory is unavailable: {error}")
            }
            DirectoryError::Refused(rejection) => rejection.fmt(f),
            DirectoryError::Expired => f.write_str("the shared login's record has expired"),
            DirectoryError::Unreadable => f.write_str("the shared login's record is unreadable"),
            DirectoryError::Foreign => f.write_str(
                "the shared login's record names another client, token endpoint or redirect URI",
            ),
        }
    }
}

impl std::error::Error for DirectoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DirectoryError::Unavailable(error) => Some(error),
            DirectoryError::Refused(rejection) => Some(rejection),
            _ => None,
        }
    }
}

/// The contents of a record, in the clear.
pub(crate) struct Contents {
    pub client_id: String,
    pub token_endpoint: String,
    pub redirect_uri: String,
    pub verifier: Zeroizing<String>,
    pub nonce: Option<Zeroizing<String>>,
    pub owner: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub deadline: u64,
    /// The login's DPoP key: the code is bound to it (RFC 9449 §10).
    pub dpop_key: Option<PrivateKey>,
}

impl Contents {
    pub fn to_record(&self) -> FlowRecord {
        let mut object = Map::new();
        let version = match self.dpop_key {
            Some(_) => VERSION_DPOP,
            None => VERSION,
        };
        object.insert("v".into(), version.into());
        object.insert("client_id".into(), self.client_id.as_str().into());
        object.insert("token_endpoint".into(), self.token_endpoint.as_str().into());
        object.insert("redirect_uri".into(), self.redirect_uri.as_str().into());
        object.insert("verifier".into(), self.verifier.as_str().into());
        if let Some(nonce) = &self.nonce {
            object.insert("nonce".into(), nonce.as_str().into());
        }
        if let Some(owner) = &self.owner {
            object.insert("owner".into(), owner.as_str().into());
        }
        object.insert("deadline".into(), self.deadline.into());
        if let Some(key) = &self.dpop_key {
            object.insert("dpop_key".into(), key.to_stored());
        }
        let value = Value::Object(object);
        // A map of strings and integers always serializes.
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        // The secrets in `value` are dropped with it; zero its strings first.
        zero(value);
        FlowRecord::from_bytes(bytes)
    }

    pub fn read(record: &FlowRecord) -> Result<Contents, DirectoryError> {
        let value: Value = serde_json::from_slice(record.expose_bytes())
            .map_err(|_| DirectoryError::Unreadable)?;
        let read = (|| {
            let object = value.as_object()?;
            let dpop_key = match (object.get("v")?.as_u64()?, object.get("dpop_key")) {
                (VERSION, None) => None,
                (VERSION_DPOP, Some(stored)) => Some(PrivateKey::from_stored(stored.clone()).ok()?),
                _ => return None,
            };
            let text = |name: &str| object.get(name)?.as_str().map(str::to_owned);
            let optional = |name: &str| match object.get(name) {
                None => Some(None),
                Some(value) => value.as_str().map(|text| Some(text.to_owned())),
            };
            Some(Contents {
                client_id: text("client_id")?,
                token_endpoint: text("token_endpoint")?,
                redirect_uri: text("redirect_uri")?,
                verifier: Zeroizing::new(text("verifier")?),
                nonce: optional("nonce")?.map(Zeroizing::new),
                owner: optional("owner")?,
                deadline: object.get("deadline")?.as_u64()?,
                dpop_key,
            })
        })();
        zero(value);
        read.ok_or(DirectoryError::Unreadable)
    }

    /// The deadline as a wall-clock time.
    pub fn deadline(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.deadline)
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Zeroes every string in `value` before it is dropped.
pub(crate) fn zero(value: Value) {
    use zeroize::Zeroize;
    match value {
        Value::String(mut text) => text.zeroize(),
        Value::Array(items) => items.into_iter().for_each(zero),
        Value::Object(object) => object.into_iter().for_each(|(_, value)| zero(value)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_and_read_as_hex() {
        let key = FlowKey([0xab; 32]);
        let hex = key.to_string();
        assert_eq!(hex, "ab".repeat(32));
        assert_eq!(FlowKey::from_hex(&hex), Some(key));
        for bad in [
            "",
            "AB".repeat(32).as_str(),
            &"ab".repeat(31),
            &"zz".repeat(32),
        ] {
            assert_eq!(FlowKey::from_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn announcements_round_trip_and_garbage_is_refused() {
        for outcome in [
            Outcome::Stored,
            Outcome::Failed("token endpoint said no".into()),
        ] {
            let announcement = Announcement {
                key: FlowKey([1; 32]),
                outcome,
            };
            assert_eq!(
                Announcement::parse(&announcement.to_bytes()),
                Some(announcement)
            );
        }
        let key = "01".repeat(32);
        for garbage in [
            String::new(),
            key.clone(),
            format!("{key} "),
            format!("{key} stored "),
            format!("{key} done"),
            format!("{key}x stored"),
        ] {
            assert_eq!(Announcement::parse(garbage.as_bytes()), None, "{garbage:?}");
        }
        let long = format!("{key} failed {}\u{7}", "é".repeat(400));
        let Some(Announcement {
            outcome: Outcome::Failed(reason),
            ..
        }) = Announcement::parse(long.as_bytes())
        else {
            panic!("a long reason is cut, not refused");
        };
        assert!(reason.len() <= MAX_REASON && !reason.contains('\u{7}'));
    }

    #[test]
    fn records_round_trip_and_anything_else_is_unreadable() {
        let contents = Contents {
            client_id: "app".into(),
            token_endpoint: "https://idp.example/token".into(),
            redirect_uri: "https://app.example/callback".into(),
            verifier: Zeroizing::new("v".repeat(43)),
            nonce: Some(Zeroizing::new("n".repeat(43))),
            owner: Some("alice".into()),
            deadline: 1_800_000_600_000,
            dpop_key: None,
        };
        let record = contents.to_record();
        let read = Contents::read(&record).expect("round trip");
        assert_eq!(read.verifier.as_str(), contents.verifier.as_str());
        assert_eq!(read.owner.as_deref(), Some("alice"));
        assert_eq!(
            read.deadline(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_600)
        );
        for garbage in [
            &b""[..],
            b"null",
            b"{}",
            br#"{"v":2,"client_id":"a","token_endpoint":"t","redirect_uri":"r","verifier":"v","deadline":1}"#,
            br#"{"v":1,"client_id":"a","token_endpoint":"t","redirect_uri":"r","verifier":"v","deadline":-1}"#,
            br#"{"v":1,"client_id":"a","token_endpoint":"t","redirect_uri":"r","verifier":"v","owner":7,"deadline":1}"#,
        ] {
            assert!(
                Contents::read(&FlowRecord::from_bytes(garbage.to_vec())).is_err(),
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
        assert!(!format!("{record:?}").contains("vvvv"));
    }

    /// RFC 8037 §A.1's Ed25519 key.
    const ED25519: &[u8] = br#"{"kty":"OKP","crv":"Ed25519",
        "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
        "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

    #[test]
    fn a_dpop_key_travels_in_a_version_2_record_only() {
        let key = PrivateKey::parse(ED25519).expect("RFC 8037's key");
        let contents = Contents {
            client_id: "app".into(),
            token_endpoint: "https://idp.example/token".into(),
            redirect_uri: "https://app.example/callback".into(),
            verifier: Zeroizing::new("v".repeat(43)),
            nonce: None,
            owner: None,
            deadline: 1_800_000_600_000,
            dpop_key: Some(key.clone()),
        };
        let record = contents.to_record();
        let text = String::from_utf8_lossy(record.expose_bytes()).into_owned();
        assert!(text.contains(r#""v":2"#), "{text}");
        let read = Contents::read(&record).expect("round trip");
        let travelled = read.dpop_key.expect("the key travels");
        assert_eq!(travelled.pkcs8_der(), key.pkcs8_der());
        assert_eq!(travelled.algorithm(), key.algorithm());
        assert!(!format!("{record:?}").contains("nWGx"));
        // A version 1 record with a key, a version 2 one without, or a broken key: refused.
        let base = r#""client_id":"a","token_endpoint":"t","redirect_uri":"r","verifier":"v","deadline":1"#;
        let stored = key.to_stored().to_string();
        for garbage in [
            format!(r#"{{"v":1,{base},"dpop_key":{stored}}}"#),
            format!(r#"{{"v":2,{base}}}"#),
            format!(r#"{{"v":2,{base},"dpop_key":{{"alg":"ES256","pkcs8":"AAAA"}}}}"#),
            format!(r#"{{"v":2,{base},"dpop_key":"{}"}}"#, "k".repeat(8)),
        ] {
            assert!(
                Contents::read(&FlowRecord::from_bytes(garbage.into_bytes())).is_err(),
                "refused"
            );
        }
        let good = format!(r#"{{"v":2,{base},"dpop_key":{stored}}}"#);
        assert!(Contents::read(&FlowRecord::from_bytes(good.into_bytes())).is_ok());
    }
}
