//! The [`Engine`]: every pending flow and every browser connection, as one state machine.
//!
//! A flow moves through these phases; every arrow is taken in `Engine::advance` and nowhere
//! else:
//!
//! ```text
//!   start ──► Waiting ──callback with code──► Exchanging ──tokens──► Persisting ──stored──► Ok(TokenSet)
//!               │                                 │    │ ID token needs    ▲   │
//!               │                                 │    ▼ the key set       │   │
//!               │                                 │  Verifying ──verified──┘   │
//!               │ error / iss mismatch /          │ rejected / malformed /     │ store failed /
//!               │ bad callback / deadline /       │ transport / ID token       │ deadline /
//!               │ cancel / superseded             │ invalid / deadline /       │ cancel
//!               │                                 │ cancel                     │
//!               └─────────────────────────────────┴────────────────────────────┴────► Err(FlowError)
//! ```
//!
//! With `openid` requested, the ID token is verified between the exchange and the store
//! ([`crate::oidc`]): at once when the engine's key cache has the provider's keys, after
//! [`Action::FetchKeys`] otherwise. A token that fails ends the flow; nothing is stored.
//!
//! A device login ([`Engine::start_device`]) starts `Authorizing` (its user code is on its
//! way), then is `Polling` until the tokens come, and from there goes through `Verifying`
//! and `Persisting` like a browser login; its diagram and rules are in [`crate::device`].
//!
//! A login shared with other replicas ([`crate::directory`]) starts `Sharing` (its record
//! on its way to the flow directory; the browser is sent to the provider afterwards), then
//! waits for its callback; a callback for it, on any replica, starts a new flow `Taking`
//! the record from the directory, which adopts the login and goes on to `Exchanging`.
//!
//! A browser connection is `Reading` its request head until it is answered at once (a
//! refusal, or a callback that ends its flow) or `Held` by the flow its callback started,
//! which answers it when the flow finishes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::callback::{Callback, Rejection};
use crate::config::{Config, ConfigError, Provider};
use crate::device::{self, DeviceAuthorization, DeviceGrant, Poll};
use crate::directory::{
    self, Announcement, Contents, DirectoryError, FlowKey, FlowRecord, Outcome, Taken,
};
use crate::dpop;
use crate::error::{BadTokenResponse, DeviceError, FlowError, Step, StoreError, TransportError};
use crate::exchange;
use crate::form;
use crate::keys::{KeyError, Signer};
use crate::oidc::{Expected, IdTokenError, KeyCache, KeySetError, Lookup};
use crate::outgoing::ProviderRequest;
use crate::pages::{Page, Pages, Refusal};
use crate::pkce::{ENTROPY_LEN, FlowSecrets, Nonce, StateKey, Verifier};
use crate::session::RequestId;
use crate::token::{self, TokenSet, TokenType};

/// Most headers a browser request may carry (S26).
const MAX_HEADERS: usize = 64;
/// Most callbacks that may wait for the flow directory at once: beyond, a callback for a
/// flow this engine does not hold is answered "try again" (S58).
const MAX_TAKES: usize = 1024;

id_type!(
    /// Identifies a flow: one login, from [`Engine::start`] to [`Action::Finished`].
    FlowId
);
id_type!(
    /// Identifies a browser connection accepted with [`Engine::handle_accept`].
    ConnId
);
id_type!(
    /// Identifies one request to the provider's token or device authorization endpoint
    /// ([`Action::SendTokenRequest`], [`Action::RequestDeviceCode`]).
    ExchangeId
);
id_type!(
    /// Identifies one take from the flow directory ([`Action::TakeFlow`]).
    TakeId
);

/// Something the driver must do. Drained with [`Engine::poll_action`].
///
/// `Debug` hides every secret: the `state` in the authorization URL and the token request's
/// body (code, verifier, client secret) are redacted (S41).
#[derive(Clone)]
pub enum Action {
    /// Send the user's browser to `url`, the authorization URL of `flow`: open it with the
    /// system browser as a process argument (never through a shell), or hand it to the
    /// user's UI. The URL contains only validated configuration and fresh random values.
    OpenBrowser {
        /// The flow the URL belongs to.
        flow: FlowId,
        /// The authorization URL.
        url: String,
    },
    /// Write `bytes` to the connection, then close it. Every response carries
    /// `Connection: close`; nothing more will be read from or written to `conn`.
    Respond {
        /// The connection.
        conn: ConnId,
        /// The response's status, for logs and tests (it is also in `bytes`).
        status: StatusCode,
        /// The complete HTTP/1.1 response.
        bytes: Bytes,
    },
    /// Close the connection without writing anything (header deadline, early end of input,
    /// or a refused connection).
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Send this token request and report the outcome with
    /// [`Engine::handle_token_response`] or [`Engine::handle_token_failure`]. Follow no
    /// redirects (S34). The engine's exchange deadline applies; the driver's own timeouts may
    /// be shorter.
    SendTokenRequest {
        /// The flow whose code is being exchanged.
        flow: FlowId,
        /// Names this exchange in the answer.
        exchange: ExchangeId,
        /// The request: [`finish`](ProviderRequest::finish) it as it is sent (see
        /// [`crate::http1`] to send it).
        request: ProviderRequest,
    },
    /// Send this device authorization request (RFC 8628 §3.1) of a flow started with
    /// [`Engine::start_device`], and report the outcome with
    /// [`Engine::handle_token_response`] or [`Engine::handle_token_failure`], as for a
    /// token request. Follow no redirects.
    RequestDeviceCode {
        /// The device flow.
        flow: FlowId,
        /// Names this request in the answer.
        exchange: ExchangeId,
        /// The request: [`finish`](ProviderRequest::finish) it as it is sent.
        request: ProviderRequest,
    },
    /// Send this pushed authorization request (RFC 9126) of a flow whose provider pushes
    /// them, and report the outcome with [`Engine::handle_token_response`] or
    /// [`Engine::handle_token_failure`], as for a token request. The browser is sent to the
    /// provider ([`Action::OpenBrowser`]) once the provider has answered with its
    /// `request_uri`. Follow no redirects.
    PushAuthorization {
        /// The flow.
        flow: FlowId,
        /// Names this request in the answer.
        exchange: ExchangeId,
        /// The request: [`finish`](ProviderRequest::finish) it as it is sent.
        request: ProviderRequest,
    },
    /// Show the user where to approve the device flow `flow` and the code to enter there
    /// (print it, draw the complete URI as a QR code, open it on a device that has a
    /// browser). The engine polls the token endpoint meanwhile with
    /// [`Action::SendTokenRequest`]; the flow ends with [`Action::Finished`] as usual.
    ShowUserCode {
        /// The device flow.
        flow: FlowId,
        /// The user code, the verification URIs, when the code expires.
        authorization: DeviceAuthorization,
    },
    /// Fetch the provider's key set (JWKS) with this `GET`, and report with
    /// [`Engine::handle_keys_response`] or [`Engine::handle_keys_failure`]. Follow no
    /// redirects. ID tokens of any number of flows wait for one fetch.
    FetchKeys {
        /// Names this fetch in the answer.
        id: RequestId,
        /// The request.
        request: http::Request<Vec<u8>>,
    },
    /// Store these tokens, then report with [`Engine::handle_persisted`]. The browser is told
    /// of success only after the store confirmed.
    Persist {
        /// The flow that obtained them.
        flow: FlowId,
        /// The tokens.
        tokens: TokenSet,
    },
    /// Store the record of the shared flow `flow` in the flow directory under `key`,
    /// sealed (S55), to expire after `lifetime`; then report with
    /// [`Engine::handle_flow_shared`]. The browser is sent to the provider only after the
    /// directory confirmed ([`crate::directory`]).
    ShareFlow {
        /// The flow.
        flow: FlowId,
        /// Where the record goes.
        key: FlowKey,
        /// The record, in the clear.
        record: FlowRecord,
        /// How long the directory keeps it: the flow's lifetime.
        lifetime: Duration,
    },
    /// Take the record under `key` from the flow directory atomically (it is replaced by a
    /// "used" mark in the same operation, S54), open it, and report what was there with
    /// [`Engine::handle_flow_taken`]. The callback that asked for it waits meanwhile.
    TakeFlow {
        /// The flow the callback belongs to: one of this engine's, or one being adopted.
        flow: FlowId,
        /// Names this take in the answer.
        take: TakeId,
        /// The record's key.
        key: FlowKey,
    },
    /// The shared flow whose record is under `key` ended before any callback: replace the
    /// record by an "ended" mark (keeping its expiry), so that a late callback on any
    /// replica is told the login expired. Nothing is reported back.
    SpendFlow {
        /// The record's key.
        key: FlowKey,
    },
    /// A flow adopted from the directory ended here: deliver this to every replica, so
    /// that the one that started it ([`Engine::shared_flow`]) finishes it too
    /// ([`Engine::handle_outcome`]). Nothing is reported back.
    AnnounceOutcome {
        /// The flow's key and how it ended.
        announcement: Announcement,
    },
    /// The flow ended; it is the last action that names `flow`.
    Finished {
        /// The flow.
        flow: FlowId,
        /// Its outcome.
        result: Result<TokenSet, FlowError>,
    },
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::OpenBrowser { flow, url } => f
                .debug_struct("OpenBrowser")
                .field("flow", flow)
                .field("url", &redact(url))
                .finish(),
            Action::Respond {
                conn,
                status,
                bytes,
            } => f
                .debug_struct("Respond")
                .field("conn", conn)
                .field("status", status)
                .field("len", &bytes.len())
                .finish(),
            Action::Close { conn } => f.debug_struct("Close").field("conn", conn).finish(),
            Action::SendTokenRequest {
                flow,
                exchange,
                request,
            } => f
                .debug_struct("SendTokenRequest")
                .field("flow", flow)
                .field("exchange", exchange)
                .field("request", request)
                .finish(),
            Action::RequestDeviceCode {
                flow,
                exchange,
                request,
            } => f
                .debug_struct("RequestDeviceCode")
                .field("flow", flow)
                .field("exchange", exchange)
                .field("request", request)
                .finish(),
            Action::PushAuthorization {
                flow,
                exchange,
                request,
            } => f
                .debug_struct("PushAuthorization")
                .field("flow", flow)
                .field("exchange", exchange)
                .field("request", request)
                .finish(),
            Action::ShowUserCode {
                flow,
                authorization,
            } => f
                .debug_struct("ShowUserCode")
                .field("flow", flow)
                .field("authorization", authorization)
                .finish(),
            Action::FetchKeys { id, request } => f
                .debug_struct("FetchKeys")
                .field("id", id)
                .field("uri", request.uri())
                .finish(),
            Action::Persist { flow, tokens } => f
                .debug_struct("Persist")
                .field("flow", flow)
                .field("tokens", tokens)
                .finish(),
            Action::ShareFlow {
                flow,
                key,
                record,
                lifetime,
            } => f
                .debug_struct("ShareFlow")
                .field("flow", flow)
                .field("key", key)
                .field("record", record)
                .field("lifetime", lifetime)
                .finish(),
            Action::TakeFlow { flow, take, key } => f
                .debug_struct("TakeFlow")
                .field("flow", flow)
                .field("take", take)
                .field("key", key)
                .finish(),
            Action::SpendFlow { key } => f.debug_struct("SpendFlow").field("key", key).finish(),
            Action::AnnounceOutcome { announcement } => f
                .debug_struct("AnnounceOutcome")
                .field("announcement", announcement)
                .finish(),
            Action::Finished { flow, result } => f
                .debug_struct("Finished")
                .field("flow", flow)
                .field("result", result)
                .finish(),
        }
    }
}

/// `url` with the values of its `state` and `nonce` parameters replaced.
fn redact(url: &str) -> String {
    let mut url = url.to_owned();
    for name in ["&state=", "&nonce="] {
        if let Some(start) = url.find(name).map(|at| at + name.len()) {
            let end = url[start..].find('&').map_or(url.len(), |end| start + end);
            url.replace_range(start..end, "[REDACTED]");
        }
    }
    url
}

/// Options for [`Engine::start_with`].
#[derive(Debug, Clone, Default)]
pub struct FlowOptions {
    provider: Option<Provider>,
    owner: Option<String>,
    shared: Option<SystemTime>,
}

impl FlowOptions {
    /// Default options: the configuration's provider, no owner.
    pub fn new() -> FlowOptions {
        FlowOptions::default()
    }

    /// Log in with this provider instead of the configuration's.
    pub fn provider(mut self, provider: Provider) -> FlowOptions {
        self.provider = Some(provider);
        self
    }

    /// The user this login is for. Starting a flow for an owner who already has one pending
    /// ends the older flow with [`FlowError::Superseded`] (S20).
    pub fn owner(mut self, owner: impl Into<String>) -> FlowOptions {
        self.owner = Some(owner.into());
        self
    }

    /// Share this browser login with other replicas through the flow directory
    /// ([`crate::directory`]): its record is stored first ([`Action::ShareFlow`]) and the
    /// browser is sent to the provider once the directory confirmed. `wall` is the current
    /// wall-clock time, from which the record's deadline is computed (S56). Ignored by
    /// [`Engine::start_device`].
    pub fn shared(mut self, wall: SystemTime) -> FlowOptions {
        self.shared = Some(wall);
        self
    }
}

/// Why [`Engine::start`] refused to start a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartError {
    /// The entropy produced a `state` the engine has already seen: the driver's random
    /// source repeats itself, and a flow started from it would not be secure.
    ReusedEntropy,
    /// A browser login needs the redirect URI's port, and the configuration's is still 0:
    /// bind the listener first and give its port to [`Config::with_redirect_port`].
    UnresolvedRedirectPort,
    /// [`Engine::start_device`]: the provider has no device authorization endpoint.
    NoDeviceEndpoint,
    /// The crypto provider could not make the login's DPoP key.
    DpopKey(KeyError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::ReusedEntropy => f.write_str("entropy was reused: the state is not fresh"),
            StartError::UnresolvedRedirectPort => {
                f.write_str("the redirect URI's port is not known yet: bind the listener first")
            }
            StartError::NoDeviceEndpoint => {
                f.write_str("the provider has no device authorization endpoint")
            }
            StartError::DpopKey(error) => write!(f, "no DPoP key for the login: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

/// One login in progress.
#[derive(Debug, Clone)]
struct Flow {
    provider: Provider,
    /// A browser login's `state` and PKCE verifier; `None` for a device login.
    browser: Option<(StateKey, Verifier)>,
    /// The nonce the authorization request carried, when the ID token is verified.
    nonce: Option<Nonce>,
    /// A flow whose record is in the flow directory (boxed: few flows are shared).
    share: Option<Box<Share>>,
    /// The login's DPoP key, when its tokens are bound to one (RFC 9449).
    dpop: Option<Signer>,
    owner: Option<String>,
    /// When the current phase times out.
    deadline: Instant,
    phase: Phase,
}

/// A flow's place in the flow directory.
#[derive(Debug, Clone, Copy)]
struct Share {
    key: FlowKey,
    /// Adopted from the directory (started elsewhere): its outcome is announced.
    adopted: bool,
    /// The record was taken, or is known to be gone: nothing to mark when the flow ends.
    settled: bool,
}

/// A shared flow's authorization URL, held until its record is in the directory.
#[derive(Debug, Clone)]
struct Sharing {
    url: String,
    /// When the browser must have been sent (the flow's lifetime from its start).
    until: Instant,
}

/// Tokens whose ID token waits for the provider's key set (the cache entry `key_set`).
#[derive(Debug, Clone)]
struct Verifying {
    tokens: TokenSet,
    received: SystemTime,
    key_set: String,
    conn: Option<ConnId>,
}

#[derive(Debug, Clone)]
enum Phase {
    /// A shared flow's record is on its way to the directory; the browser is sent to the
    /// provider once it is there, by this instant at the latest.
    Sharing(Box<Sharing>),
    /// The authorization request is being pushed (RFC 9126); the browser is sent once the
    /// provider answers (a shared flow's once its `record` is in the directory too), and
    /// must have come back by `until`.
    Pushing {
        exchange: ExchangeId,
        until: Instant,
        record: Option<Box<(FlowKey, FlowRecord)>>,
    },
    /// Waiting for the browser's callback.
    Waiting,
    /// A callback for a shared flow (started here or elsewhere) waits for the flow's
    /// record to be taken from the directory, to adopt the flow (S54).
    Taking {
        take: TakeId,
        /// The callback's query, judged once the record is here.
        query: SecretString,
        conn: Option<ConnId>,
    },
    /// A device login's authorization request is on its way.
    Authorizing { exchange: ExchangeId },
    /// A device login waits for the user's approval, polling the token endpoint.
    Polling(Box<Polling>),
    /// The code is being exchanged; the callback's connection, if any, waits for the outcome.
    Exchanging {
        exchange: ExchangeId,
        conn: Option<ConnId>,
    },
    /// The ID token waits for the provider's key set.
    Verifying(Box<Verifying>),
    /// The tokens are being stored.
    Persisting {
        tokens: TokenSet,
        conn: Option<ConnId>,
    },
}

/// A device login between its user code and its tokens (the rules are in [`crate::device`]).
#[derive(Debug, Clone)]
struct Polling {
    device_code: SecretString,
    interval: Duration,
    /// Failed polls in a row (transport, 5xx, 429).
    failures: u32,
    /// When its `Timer::Poll` fires: the next poll, or the in-flight poll's deadline.
    timer: Instant,
    /// The poll on its way, if any.
    in_flight: Option<ExchangeId>,
}

impl Polling {
    /// Sets the next poll after an answer without tokens, by the rules of S51.
    fn schedule(&mut self, now: Instant, answer: &Poll) {
        let wait = match *answer {
            Poll::SlowDown(named) => {
                self.failures = 0;
                let slower =
                    (self.interval + device::SLOW_DOWN_STEP).max(named.unwrap_or_default());
                self.interval = slower.min(device::MAX_LIFETIME);
                self.interval
            }
            Poll::Unavailable(retry_after) => {
                self.failures = self.failures.saturating_add(1);
                let doubled = self
                    .interval
                    .saturating_mul(1 << self.failures.min(16))
                    .min(device::MAX_BACKOFF.max(self.interval));
                doubled.max(retry_after.unwrap_or_default())
            }
            Poll::Pending | Poll::Tokens(_) | Poll::Fail(_) => {
                self.failures = 0;
                self.interval
            }
        };
        self.timer = now.checked_add(wait).unwrap_or(now + device::MAX_LIFETIME);
    }
}

/// What happens to a flow; `Engine::advance` applies it.
enum Event<'q> {
    /// A callback with this flow's state, judged: the code to exchange, or why the flow ends.
    Callback {
        verdict: Result<&'q str, FlowError>,
        conn: Option<ConnId>,
    },
    /// The token endpoint answered (parsed, the ID token verified), or could not be
    /// reached, or the ID token was refused.
    TokenResponse(Result<TokenSet, FlowError>),
    /// The ID token waits for a fetch of this key set.
    AwaitKeys {
        tokens: TokenSet,
        received: SystemTime,
        key_set: String,
    },
    Persisted(Result<(), StoreError>),
    /// The answer to a pushed authorization request, read.
    PushAnswered(Result<crate::par::Pushed, FlowError>),
    /// A device login's authorization answer, read.
    DeviceAuthorized(Result<DeviceGrant, FlowError>),
    /// A device login's poll timer fired.
    PollDue,
    /// A device login's poll was answered without tokens, or failed (`Unavailable(None)`).
    Polled(Poll),
    Deadline,
    /// The application cancelled, or a newer flow replaced this one.
    Abort(FlowError),
    /// The directory stored the record, or could not.
    Shared(Result<(), StoreError>),
    /// The directory's answer to the take, at this wall-clock time.
    Taken {
        result: Result<Taken, StoreError>,
        wall: SystemTime,
    },
    /// Another replica adopted this flow and finished it.
    Elsewhere(Result<TokenSet, FlowError>),
}

/// Where a flow goes from `Engine::advance`.
enum Next {
    /// Into this phase, timing out at this instant.
    Stay(Phase, Instant),
    /// Nowhere: it ends with this outcome, answering this browser connection if any.
    Finish(Result<TokenSet, FlowError>, Option<ConnId>),
}

/// What a `state` the engine has issued points to.
#[derive(Debug, Clone, Copy)]
enum StateEntry {
    Pending(FlowId),
    /// Spent states are remembered for one flow lifetime, to answer replays and late
    /// callbacks with a clear page.
    Spent {
        used: bool,
    },
}

#[derive(Clone)]
struct Conn {
    head: Vec<u8>,
    /// How much of `head` has been searched for the blank line that ends it.
    scanned: usize,
    /// `None` once the request is complete and held by a flow.
    deadline: Option<Instant>,
}

/// Only the size of a partial head: it may hold a callback's code and state.
impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("head_len", &self.head.len())
            .field("deadline", &self.deadline)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Flow(FlowId),
    /// A device login's next poll, or its in-flight poll's deadline.
    Poll(FlowId),
    Conn(ConnId),
}

/// The sans-IO OAuth engine. See the [crate documentation](crate) for the run loop.
///
/// Methods come in four families: getters; commands ([`start`](Engine::start),
/// [`cancel`](Engine::cancel)); inputs (`handle_*`); outputs
/// ([`poll_action`](Engine::poll_action), [`poll_timeout`](Engine::poll_timeout)). After any
/// command or input, drain `poll_action` until it returns `None`, then wait until the next
/// input or `poll_timeout`.
#[derive(Debug, Clone)]
pub struct Engine {
    config: Config,
    redirect_uri: String,
    /// `redirect_uri`, form-encoded once for every authorization and token request.
    encoded_redirect_uri: String,
    /// `Host` values accepted on the loopback port, lowercase (S22).
    allowed_hosts: [String; 4],
    pages: Pages,
    flows: BTreeMap<FlowId, Flow>,
    states: BTreeMap<StateKey, StateEntry>,
    owners: BTreeMap<String, FlowId>,
    conns: BTreeMap<ConnId, Conn>,
    exchanges: BTreeMap<ExchangeId, FlowId>,
    /// DPoP token requests not yet answered, to be sent once more with the provider's
    /// nonce should it ask for one (S62).
    dpop_retries: BTreeMap<ExchangeId, ProviderRequest>,
    /// The latest DPoP nonce of each token endpoint, for the next proof.
    dpop_nonces: BTreeMap<String, String>,
    takes: BTreeMap<TakeId, FlowId>,
    /// This engine's shared flows by their state, for outcomes announced by other replicas.
    shared: BTreeMap<StateKey, FlowId>,
    keys: KeyCache,
    timers: BTreeSet<(Instant, Timer)>,
    /// Spent states and when to forget them, in that order: each is due one flow lifetime
    /// after it was spent.
    forget: VecDeque<(Instant, StateKey)>,
    actions: VecDeque<Action>,
    next_id: u64,
}

impl Engine {
    /// An engine for `config`. Browser logins need the redirect port known (bind first);
    /// an engine for device logins only ([`Engine::start_device`]) may leave it 0.
    pub fn new(config: Config) -> Result<Engine, ConfigError> {
        let redirect = &config.redirect;
        let port = redirect.port;
        let allowed_hosts = [
            format!("{}:{port}", redirect.host.to_ascii_lowercase()),
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        let redirect_uri = config.redirect_uri();
        Ok(Engine {
            encoded_redirect_uri: form::encode(&redirect_uri),
            redirect_uri,
            allowed_hosts,
            pages: Pages::new(&config.on_success, &config.on_failure),
            config,
            flows: BTreeMap::new(),
            states: BTreeMap::new(),
            owners: BTreeMap::new(),
            conns: BTreeMap::new(),
            exchanges: BTreeMap::new(),
            dpop_retries: BTreeMap::new(),
            dpop_nonces: BTreeMap::new(),
            takes: BTreeMap::new(),
            shared: BTreeMap::new(),
            keys: KeyCache::default(),
            timers: BTreeSet::new(),
            forget: VecDeque::new(),
            actions: VecDeque::new(),
            next_id: 1,
        })
    }

    // ----- getters -----

    /// The redirect URI, exactly as sent in every authorization and token request (S5).
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Flows started and not yet finished.
    pub fn flows_in_progress(&self) -> usize {
        self.flows.len()
    }

    /// The provider `flow` was started with, while it is in progress.
    pub fn flow_provider(&self, flow: FlowId) -> Option<&Provider> {
        self.flows.get(&flow).map(|flow| &flow.provider)
    }

    /// The owner `flow` was started for ([`FlowOptions::owner`]), while it is in progress.
    pub fn flow_owner(&self, flow: FlowId) -> Option<&str> {
        self.flows.get(&flow)?.owner.as_deref()
    }

    /// Browser connections accepted and not yet answered or closed.
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// The flow this engine started and shared under `key`, while it waits for its
    /// callback: an outcome announced for `key` ([`Action::AnnounceOutcome`] on another
    /// replica) belongs to it.
    pub fn shared_flow(&self, key: &FlowKey) -> Option<FlowId> {
        self.shared.get(&key.state_key()).copied()
    }

    // ----- commands -----

    /// Starts a login with the configuration's provider. `entropy` must come from a
    /// cryptographically secure source, fresh for every call.
    ///
    /// Emits [`Action::OpenBrowser`] with the authorization URL.
    pub fn start(
        &mut self,
        now: Instant,
        entropy: [u8; ENTROPY_LEN],
    ) -> Result<FlowId, StartError> {
        self.start_with(now, entropy, FlowOptions::new())
    }

    /// Starts a login with options (another provider, an owner).
    pub fn start_with(
        &mut self,
        now: Instant,
        entropy: [u8; ENTROPY_LEN],
        options: FlowOptions,
    ) -> Result<FlowId, StartError> {
        self.handle_timeout(now);
        if self.config.redirect.port == 0 && self.config.listens() {
            return Err(StartError::UnresolvedRedirectPort);
        }
        let secrets = FlowSecrets::new(&entropy);
        let state = StateKey::of(secrets.state());
        if self.states.contains_key(&state) {
            return Err(StartError::ReusedEntropy);
        }
        let provider = options
            .provider
            .clone()
            .unwrap_or_else(|| self.config.provider.clone());
        let dpop = dpop_key(&provider)?;
        self.supersede(now, &options);
        let id = FlowId::issued(self.fresh_id());
        // Room for the parameters, so that the URL is allocated once.
        let room = 208 + self.encoded_redirect_uri.len();
        let mut url =
            form::Serializer::continuing_with_room(&provider.inner().authorize_prefix, room);
        url.append_encoded("redirect_uri", &self.encoded_redirect_uri)
            .append("state", secrets.state())
            .append("code_challenge", secrets.challenge());
        if provider.requests_openid() {
            url.append("nonce", secrets.nonce.as_str());
        }
        // RFC 9449 §10: the authorization code is bound to the login's key.
        if let Some(signer) = &dpop {
            url.append("dpop_jkt", signer.thumbprint());
        }
        let url = url.finish();
        if let Some(owner) = &options.owner {
            self.owners.insert(owner.clone(), id);
        }
        let until = now + self.config.flow_lifetime;
        let nonce = provider
            .id_token_policy()
            .is_some()
            .then_some(secrets.nonce);
        let pushed = match provider.pushed_authorization_request_endpoint() {
            Some(endpoint) if provider.pushes_authorization_requests() => {
                Some(crate::par::push_request(&provider, endpoint, &url))
            }
            _ => None,
        };
        // A shared flow's record: everything another replica needs to finish the login.
        let record = options.shared.map(|wall| {
            let contents = Contents {
                client_id: provider.client_id().to_owned(),
                token_endpoint: provider.token_endpoint().to_string(),
                redirect_uri: self.redirect_uri.clone(),
                verifier: Zeroizing::new(secrets.verifier.as_str().to_owned()),
                nonce: nonce
                    .as_ref()
                    .map(|nonce| Zeroizing::new(nonce.as_str().to_owned())),
                owner: options.owner.clone(),
                deadline: directory::unix_millis(wall + self.config.flow_lifetime),
                dpop_key: dpop.as_ref().map(|signer| signer.private_key().clone()),
            };
            (FlowKey::of(state), contents.to_record())
        });
        let share = record.as_ref().map(|(key, _)| {
            self.shared.insert(state, id);
            Box::new(Share {
                key: *key,
                adopted: false,
                settled: false,
            })
        });
        let (phase, deadline) = match (record, pushed) {
            // Pushed first: the record is shared once the URL is known (RFC 9126 §4).
            (record, Some(request)) => {
                let exchange = ExchangeId::issued(self.fresh_id());
                self.exchanges.insert(exchange, id);
                self.actions.push_back(Action::PushAuthorization {
                    flow: id,
                    exchange,
                    request,
                });
                let deadline = (now + self.config.exchange_timeout).min(until);
                let record = record.map(Box::new);
                (
                    Phase::Pushing {
                        exchange,
                        until,
                        record,
                    },
                    deadline,
                )
            }
            (record, None) => self.send_browser(now, id, url, until, record),
        };
        self.states.insert(state, StateEntry::Pending(id));
        self.timers.insert((deadline, Timer::Flow(id)));
        self.flows.insert(
            id,
            Flow {
                provider,
                browser: Some((state, secrets.verifier)),
                nonce,
                share,
                dpop,
                owner: options.owner,
                deadline,
                phase,
            },
        );
        trace_event!(
            flow = id.get(),
            shared = self.flows.get(&id).is_some_and(|flow| flow.share.is_some()),
            "flow started"
        );
        Ok(id)
    }

    /// Starts a device login (RFC 8628) for a user who approves on another device: no
    /// browser here, no listener. `options` as for [`start_with`](Engine::start_with).
    ///
    /// Emits [`Action::RequestDeviceCode`]; its answer becomes [`Action::ShowUserCode`],
    /// then the engine polls the token endpoint by itself (the rules are in
    /// [`crate::device`]) until the tokens come, the user declines or the code expires.
    ///
    /// # Errors
    ///
    /// [`StartError::NoDeviceEndpoint`] when the provider has no device authorization
    /// endpoint.
    pub fn start_device(
        &mut self,
        now: Instant,
        options: FlowOptions,
    ) -> Result<FlowId, StartError> {
        self.handle_timeout(now);
        let provider = options
            .provider
            .clone()
            .unwrap_or_else(|| self.config.provider.clone());
        let Some(endpoint) = provider.device_authorization_endpoint() else {
            return Err(StartError::NoDeviceEndpoint);
        };
        let request = device::authorization_request(&provider, endpoint);
        let dpop = dpop_key(&provider)?;
        self.supersede(now, &options);
        let id = FlowId::issued(self.fresh_id());
        let exchange = ExchangeId::issued(self.fresh_id());
        if let Some(owner) = &options.owner {
            self.owners.insert(owner.clone(), id);
        }
        let deadline = now + self.config.exchange_timeout;
        self.timers.insert((deadline, Timer::Flow(id)));
        self.exchanges.insert(exchange, id);
        self.flows.insert(
            id,
            Flow {
                provider,
                browser: None,
                nonce: None,
                share: None,
                dpop,
                owner: options.owner,
                deadline,
                phase: Phase::Authorizing { exchange },
            },
        );
        self.actions.push_back(Action::RequestDeviceCode {
            flow: id,
            exchange,
            request,
        });
        trace_event!(
            flow = id.get(),
            "device flow started; requesting a user code"
        );
        Ok(id)
    }

    /// Ends the pending flow of `options`' owner, if any (S20).
    fn supersede(&mut self, now: Instant, options: &FlowOptions) {
        if let Some(previous) = options
            .owner
            .as_ref()
            .and_then(|owner| self.owners.get(owner).copied())
        {
            self.advance(now, previous, Event::Abort(FlowError::Superseded));
        }
    }

    /// Cancels a flow: it finishes with [`FlowError::Cancelled`], and a browser waiting on it
    /// gets the failure landing. Unknown or finished flows are ignored.
    pub fn cancel(&mut self, now: Instant, flow: FlowId) {
        self.handle_timeout(now);
        self.advance(now, flow, Event::Abort(FlowError::Cancelled));
    }

    // ----- inputs: the browser side -----

    /// A browser connection was accepted. Returns its id, or `None` when it must be dropped.
    ///
    /// At the connection cap (S27) the oldest connection that has waited at least a grace
    /// period for its request head (a second, or half the header timeout if shorter) is
    /// closed to make room ([`Action::Close`]): slow clients cannot keep the real browser
    /// out, and a burst of new connections cannot push out one that is still arriving. When
    /// no connection qualifies, the new one is refused.
    pub fn handle_accept(&mut self, now: Instant) -> Option<ConnId> {
        self.handle_timeout(now);
        let limits = &self.config.limits;
        if self.conns.len() >= limits.max_connections {
            let grace = (limits.header_timeout / 2).min(Duration::from_secs(1));
            // Accepted at or before `now - grace` means a deadline at or before this.
            let waited_long_enough = now + limits.header_timeout - grace;
            // Ids grow with time: the first qualifying connection is the oldest.
            let oldest = self
                .conns
                .iter()
                .find(|(_, conn)| conn.deadline.is_some_and(|at| at <= waited_long_enough))
                .map(|(id, _)| *id);
            let Some(oldest) = oldest else {
                trace_event!(
                    connections = self.conns.len(),
                    "connection refused: at the cap and none has waited long enough"
                );
                return None;
            };
            trace_event!(
                conn = oldest.get(),
                "oldest idle connection closed to make room"
            );
            self.close(oldest);
        }
        let id = ConnId::issued(self.fresh_id());
        let deadline = now + self.config.limits.header_timeout;
        self.conns.insert(
            id,
            Conn {
                head: Vec::new(),
                scanned: 0,
                deadline: Some(deadline),
            },
        );
        self.timers.insert((deadline, Timer::Conn(id)));
        Some(id)
    }

    /// Bytes arrived on a browser connection, split anywhere. Bytes after a complete request
    /// head are ignored.
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.handle_timeout(now);
        let max_head = self.config.limits.max_head_bytes;
        let Some(state) = self.conns.get_mut(&conn) else {
            self.debug_assert_issued(conn.get());
            return;
        };
        if state.deadline.is_none() {
            return; // already complete: pipelined bytes are ignored (S26)
        }
        // The usual case, a whole head in the first read, is judged where it lies.
        if state.head.is_empty() {
            match head_end(bytes, 0) {
                Some(end) if end <= max_head => {
                    self.on_head(now, conn, &bytes[..end]);
                    return;
                }
                Some(_) => {
                    self.refuse(conn, Refusal::HeadTooLarge);
                    return;
                }
                None => {}
            }
        }
        let take = bytes.len().min(max_head.saturating_sub(state.head.len()));
        state.head.extend_from_slice(&bytes[..take]);
        let from = state.scanned;
        state.scanned = state.head.len();
        // The head is judged only once it is complete, so its bytes give the same answer
        // however they are split.
        match head_end(&state.head, from) {
            Some(end) => {
                let mut head = std::mem::take(&mut state.head);
                head.truncate(end);
                self.on_head(now, conn, &head);
            }
            None if state.head.len() >= max_head => self.refuse(conn, Refusal::HeadTooLarge),
            None => {}
        }
    }

    /// The browser closed its side. A connection without a complete request is closed; one
    /// held by a flow still gets the flow's outcome.
    pub fn handle_eof(&mut self, now: Instant, conn: ConnId) {
        self.handle_timeout(now);
        match self.conns.get(&conn) {
            Some(state) if state.deadline.is_some() => self.close(conn),
            Some(_) => {}
            None => self.debug_assert_issued(conn.get()),
        }
    }

    /// A callback that reached the application some other way than the loopback port: a
    /// full redirect URI, a deep link such as
    /// `docker-desktop://dashboard/extension-tab?extensionId=…&code=…&state=…`, or just its
    /// query. Validated exactly like the loopback callback, without an HTTP response.
    ///
    /// `Ok(flow)`: the callback belongs to `flow`, whose outcome arrives as
    /// [`Action::Finished`]. `Err`: it was turned away and changed nothing.
    pub fn handle_redirect(
        &mut self,
        now: Instant,
        uri_or_query: &str,
    ) -> Result<FlowId, Rejection> {
        self.handle_timeout(now);
        let without_fragment = uri_or_query.split('#').next().unwrap_or_default();
        let query = match without_fragment.split_once('?') {
            Some((_, query)) => query,
            None => without_fragment,
        };
        self.on_callback(now, query, None)
    }

    // ----- inputs: the token endpoint and the store -----

    /// The token endpoint answered. `wall` is the current wall-clock time, from which the
    /// tokens' absolute expiry is computed. Answers to exchanges that no longer matter (the
    /// flow timed out or was cancelled) are ignored.
    pub fn handle_token_response(
        &mut self,
        now: Instant,
        wall: SystemTime,
        exchange: ExchangeId,
        response: http::Response<Vec<u8>>,
    ) {
        self.handle_timeout(now);
        let retry = self.dpop_retries.remove(&exchange);
        let Some(flow_id) = self.exchanges.remove(&exchange) else {
            self.debug_assert_issued(exchange.get());
            return;
        };
        let Some(flow) = self.flows.get(&flow_id) else {
            return;
        };
        if flow.dpop.is_some() {
            if let Some(nonce) = dpop::nonce_of(&response) {
                let endpoint = flow.provider.token_endpoint().to_string();
                self.dpop_nonces.insert(endpoint, nonce);
            }
            // S62: once per request, with the nonce the provider asked for.
            let again = retry.and_then(|retry| retry.with_nonce(&dpop::asks_for_nonce(&response)?));
            if let Some(request) = again {
                trace_event!(flow = flow_id.get(), "the provider asked for a DPoP nonce");
                self.exchanges.insert(exchange, flow_id);
                self.actions.push_back(Action::SendTokenRequest {
                    flow: flow_id,
                    exchange,
                    request,
                });
                return;
            }
        }
        let (scopes, resources) = (flow.provider.scopes(), flow.provider.resources());
        let event = match &flow.phase {
            Phase::Pushing { .. } => Event::PushAnswered(crate::par::read_push(&response)),
            Phase::Authorizing { .. } => Event::DeviceAuthorized(device::read_authorization(
                &response,
                wall,
                self.config.flow_lifetime,
            )),
            Phase::Polling(_) => match device::read_poll(&response, scopes, resources, wall) {
                Poll::Tokens(tokens) => match bound(flow, tokens, &response) {
                    Ok(tokens) => self.verify(now, flow_id, tokens, wall, true),
                    Err(error) => Event::TokenResponse(Err(error)),
                },
                Poll::Fail(error) => Event::TokenResponse(Err(error)),
                answer => Event::Polled(answer),
            },
            _ => match token::parse_token_response(&response, scopes, resources, wall)
                .and_then(|tokens| bound(flow, tokens, &response))
            {
                Ok(tokens) => self.verify(now, flow_id, tokens, wall, true),
                Err(error) => Event::TokenResponse(Err(error)),
            },
        };
        self.advance(now, flow_id, event);
    }

    /// The token request (or device authorization request) could not be completed. A code
    /// exchange is never retried; a device login's poll is, after a back-off.
    pub fn handle_token_failure(
        &mut self,
        now: Instant,
        exchange: ExchangeId,
        error: TransportError,
    ) {
        self.handle_timeout(now);
        self.dpop_retries.remove(&exchange);
        let Some(flow) = self.exchanges.remove(&exchange) else {
            self.debug_assert_issued(exchange.get());
            return;
        };
        let event = match self.flows.get(&flow).map(|flow| &flow.phase) {
            Some(Phase::Polling(_)) => Event::Polled(Poll::Unavailable(None)),
            Some(Phase::Authorizing { .. }) => {
                Event::TokenResponse(Err(FlowError::Device(DeviceError::Unreachable(error))))
            }
            Some(Phase::Pushing { .. }) => Event::PushAnswered(Err(FlowError::Transport(error))),
            _ => Event::TokenResponse(Err(FlowError::Transport(error))),
        };
        self.advance(now, flow, event);
    }

    /// The answer to [`Action::FetchKeys`] `id`, received at `now`/`wall`. Every flow
    /// waiting for the key set is verified again. Late answers are ignored.
    pub fn handle_keys_response(
        &mut self,
        now: Instant,
        wall: SystemTime,
        id: RequestId,
        response: http::Response<Vec<u8>>,
    ) {
        self.handle_timeout(now);
        match self.keys.handle_response(now, wall, id.get(), &response) {
            Some(key_set) => self.keys_arrived(now, &key_set),
            None => self.debug_assert_issued(id.get()),
        }
    }

    /// [`Action::FetchKeys`] `id` could not be completed. The flows waiting for it are
    /// verified with the keys the engine had before, or fail with
    /// [`IdTokenError::KeySet`].
    pub fn handle_keys_failure(&mut self, now: Instant, id: RequestId, error: TransportError) {
        self.handle_timeout(now);
        match self.keys.handle_failure(now, id.get(), error) {
            Some(key_set) => self.keys_arrived(now, &key_set),
            None => self.debug_assert_issued(id.get()),
        }
    }

    /// The key sets the engine holds, as a document for
    /// [`import_key_sets`](Engine::import_key_sets) in another engine or session, another
    /// process or another replica (see [`crate::oidc`]).
    pub fn export_key_sets(&self) -> Vec<u8> {
        self.keys.export()
    }

    /// Takes in key sets another machine exported; those younger than
    /// [`oidc::MAX_AGE`](crate::oidc::MAX_AGE) by `wall` are used as if fetched then.
    /// Returns how many were taken.
    ///
    /// # Errors
    ///
    /// [`KeySetError::NotJson`] or [`KeySetError::TooLarge`] when `document` is not an
    /// export.
    pub fn import_key_sets(
        &mut self,
        now: Instant,
        wall: SystemTime,
        document: &[u8],
    ) -> Result<usize, KeySetError> {
        self.keys.import(now, wall, document)
    }

    /// The flow directory stored the record of [`Action::ShareFlow`] (`Ok`): the browser
    /// is sent to the provider ([`Action::OpenBrowser`]). `Err`: the flow ends with
    /// [`DirectoryError::Unavailable`].
    pub fn handle_flow_shared(
        &mut self,
        now: Instant,
        flow: FlowId,
        result: Result<(), StoreError>,
    ) {
        self.handle_timeout(now);
        self.advance(now, flow, Event::Shared(result));
    }

    /// What the flow directory held for [`Action::TakeFlow`] `take`, read at `now`/`wall`
    /// (the record opened; a record that did not open is a `StoreError`). A record goes on
    /// to the token request; anything else answers the waiting callback and changes no
    /// other replica's flow. Late answers are ignored.
    pub fn handle_flow_taken(
        &mut self,
        now: Instant,
        wall: SystemTime,
        take: TakeId,
        result: Result<Taken, StoreError>,
    ) {
        self.handle_timeout(now);
        let Some(flow) = self.takes.remove(&take) else {
            self.debug_assert_issued(take.get());
            return;
        };
        self.advance(now, flow, Event::Taken { result, wall });
    }

    /// Another replica adopted the shared flow under `key` and finished it: `Ok` with the
    /// tokens it stored (read back from the shared token store) or the error it ended
    /// with (an announced [`Outcome::Failed`] is [`FlowError::FailedElsewhere`]). The
    /// flow finishes here with that result, without storing anything. Keys of flows this
    /// engine does not hold are ignored.
    pub fn handle_outcome(
        &mut self,
        now: Instant,
        key: &FlowKey,
        result: Result<TokenSet, FlowError>,
    ) {
        self.handle_timeout(now);
        if let Some(flow) = self.shared_flow(key) {
            self.advance(now, flow, Event::Elsewhere(result));
        }
    }

    /// The store finished with the tokens of [`Action::Persist`].
    pub fn handle_persisted(&mut self, now: Instant, flow: FlowId, result: Result<(), StoreError>) {
        self.handle_timeout(now);
        self.advance(now, flow, Event::Persisted(result));
    }

    /// Time passed: fires every deadline at or before `now`, in order, each at its own
    /// instant. Every other input does this first too, so a late input never sees state
    /// that should already have expired.
    pub fn handle_timeout(&mut self, now: Instant) {
        for key_set in self.keys.handle_timeout(now) {
            self.keys_arrived(now, &key_set);
        }
        loop {
            let timer = self.timers.first().copied().filter(|&(at, _)| at <= now);
            let forget = self.forget.front().copied().filter(|&(at, _)| at <= now);
            match (timer, forget) {
                (Some((at, timer)), forget) if forget.is_none_or(|(due, _)| at <= due) => {
                    self.timers.remove(&(at, timer));
                    match timer {
                        Timer::Flow(flow) => self.advance(at, flow, Event::Deadline),
                        Timer::Poll(flow) => self.advance(at, flow, Event::PollDue),
                        Timer::Conn(conn) => self.close(conn),
                    }
                }
                (_, Some((_, state))) => {
                    self.forget.pop_front();
                    self.states.remove(&state);
                }
                (_, None) => break,
            }
        }
    }

    // ----- outputs -----

    /// The next thing to do, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Engine::handle_timeout) must be called next, if ever. After
    /// `handle_timeout(now)` it is always later than `now`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|&(at, _)| at);
        let forget = self.forget.front().map(|&(at, _)| at);
        timer
            .into_iter()
            .chain(forget)
            .chain(self.keys.poll_timeout())
            .min()
    }

    // ----- internals -----

    /// Sends the browser of flow `id` to `url`, which must come back by `until`; a shared
    /// flow's `record` goes to the directory first, and the browser once it is there. The
    /// phase the flow then waits in, and until when.
    fn send_browser(
        &mut self,
        now: Instant,
        id: FlowId,
        url: String,
        until: Instant,
        record: Option<(FlowKey, FlowRecord)>,
    ) -> (Phase, Instant) {
        match record {
            Some((key, record)) => {
                self.actions.push_back(Action::ShareFlow {
                    flow: id,
                    key,
                    record,
                    lifetime: self.config.flow_lifetime,
                });
                let deadline = (now + self.config.exchange_timeout).min(until);
                (Phase::Sharing(Box::new(Sharing { url, until })), deadline)
            }
            None => {
                self.actions
                    .push_back(Action::OpenBrowser { flow: id, url });
                (Phase::Waiting, until)
            }
        }
    }

    /// The one place a flow changes phase.
    fn advance(&mut self, now: Instant, id: FlowId, event: Event<'_>) {
        // The flow stays in place unless it finishes.
        let Some(flow) = self.flows.get_mut(&id) else {
            return; // finished already: late answers and stale timers are normal
        };
        let deadline = flow.deadline;
        let state = flow.browser.as_ref().map(|(state, _)| *state);
        // The match below decides the real next phase.
        let phase = std::mem::replace(&mut flow.phase, Phase::Waiting);
        let poll_timer = phase.poll_timer();
        let next = match (phase, event) {
            (Phase::Waiting, Event::Callback { verdict, conn }) => {
                if let Some(state) = state {
                    self.spend_state(now, state, true); // consumed before the exchange (S18)
                }
                self.exchange_code(now, id, verdict, conn)
            }
            (Phase::Sharing(sharing), Event::Shared(Ok(()))) => {
                let Sharing { url, until } = *sharing;
                self.actions
                    .push_back(Action::OpenBrowser { flow: id, url });
                Next::Stay(Phase::Waiting, until)
            }
            (Phase::Sharing(_), Event::Shared(Err(error))) => Next::Finish(
                Err(FlowError::Directory(DirectoryError::Unavailable(error))),
                None,
            ),
            (Phase::Pushing { until, record, .. }, Event::PushAnswered(Ok(pushed))) => {
                let Some(flow) = self.flows.get(&id) else {
                    return;
                };
                let url = crate::par::browser_url(&flow.provider, &pushed.request_uri);
                trace_event!(flow = id.get(), "authorization request pushed");
                let (phase, deadline) =
                    self.send_browser(now, id, url, until, record.map(|record| *record));
                Next::Stay(phase, deadline)
            }
            (Phase::Pushing { .. }, Event::PushAnswered(Err(error))) => {
                Next::Finish(Err(error), None)
            }
            (Phase::Taking { query, conn, .. }, Event::Taken { result, wall }) => {
                self.taken(now, id, result, wall, query.expose_secret(), conn)
            }
            (Phase::Waiting, Event::Elsewhere(result)) => {
                if let Some(state) = state {
                    self.spend_state(now, state, true);
                }
                self.settle(id);
                Next::Finish(result, None)
            }
            // The flow's own callback came here after all, or it is on its way: the
            // announcement is late or foreign.
            (phase, Event::Elsewhere(_)) => Next::Stay(phase, deadline),
            (Phase::Authorizing { .. }, Event::DeviceAuthorized(Ok(grant))) => {
                let DeviceGrant {
                    authorization,
                    device_code,
                } = grant;
                let interval = authorization.interval();
                let expiry = now
                    .checked_add(authorization.lifetime())
                    .unwrap_or(now + device::MAX_LIFETIME);
                trace_event!(
                    flow = id.get(),
                    interval_ms = interval.as_millis() as u64,
                    "user code received; polling"
                );
                self.actions.push_back(Action::ShowUserCode {
                    flow: id,
                    authorization,
                });
                let polling = Polling {
                    device_code,
                    interval,
                    failures: 0,
                    // S51: the first poll waits one interval.
                    timer: now + interval,
                    in_flight: None,
                };
                Next::Stay(Phase::Polling(Box::new(polling)), expiry)
            }
            (
                Phase::Authorizing { .. },
                Event::DeviceAuthorized(Err(error)) | Event::TokenResponse(Err(error)),
            ) => Next::Finish(Err(error), None),
            (Phase::Polling(mut polling), Event::PollDue) => match polling.in_flight.take() {
                None => {
                    let Some(flow) = self.flows.get(&id) else {
                        return;
                    };
                    let grant = exchange::Grant::Device {
                        device_code: polling.device_code.expose_secret(),
                    };
                    let request = exchange::token_request(&flow.provider, grant);
                    polling.in_flight = Some(self.send_token_request(id, request));
                    polling.timer = now + self.config.exchange_timeout;
                    Next::Stay(Phase::Polling(polling), deadline)
                }
                // The poll took longer than an exchange may: forget it, back off.
                Some(late) => {
                    self.forget(late);
                    polling.schedule(now, &Poll::Unavailable(None));
                    Next::Stay(Phase::Polling(polling), deadline)
                }
            },
            (Phase::Polling(mut polling), Event::Polled(answer)) => {
                polling.in_flight = None;
                polling.schedule(now, &answer);
                Next::Stay(Phase::Polling(polling), deadline)
            }
            (Phase::Polling(polling), Event::Deadline) => {
                if let Some(exchange) = polling.in_flight {
                    self.forget(exchange);
                }
                Next::Finish(Err(FlowError::Device(DeviceError::Expired)), None)
            }
            (
                phase @ (Phase::Exchanging { .. } | Phase::Verifying(_) | Phase::Polling(_)),
                Event::TokenResponse(Ok(tokens)),
            ) => {
                self.actions.push_back(Action::Persist {
                    flow: id,
                    tokens: tokens.clone(),
                });
                let deadline = now + self.config.exchange_timeout;
                let conn = phase.conn();
                Next::Stay(Phase::Persisting { tokens, conn }, deadline)
            }
            (
                phase @ (Phase::Exchanging { .. } | Phase::Verifying(_) | Phase::Polling(_)),
                Event::TokenResponse(Err(error)),
            ) => Next::Finish(Err(error), phase.conn()),
            (
                phase @ (Phase::Exchanging { .. } | Phase::Polling(_)),
                Event::AwaitKeys {
                    tokens,
                    received,
                    key_set,
                },
            ) => {
                let deadline = now + self.config.exchange_timeout;
                let phase = Phase::Verifying(Box::new(Verifying {
                    tokens,
                    received,
                    key_set,
                    conn: phase.conn(),
                }));
                Next::Stay(phase, deadline)
            }
            (Phase::Persisting { tokens, conn }, Event::Persisted(Ok(()))) => {
                Next::Finish(Ok(tokens), conn)
            }
            (Phase::Persisting { conn, .. }, Event::Persisted(Err(error))) => {
                Next::Finish(Err(FlowError::Storage(error)), conn)
            }
            // The directory did not answer in time: nothing was taken here, the callback
            // is told to try again.
            (Phase::Taking { take, conn, .. }, Event::Deadline) => {
                self.takes.remove(&take);
                if let Some(conn) = conn {
                    self.refuse(conn, Refusal::Callback(Rejection::Unavailable));
                }
                Next::Finish(Err(FlowError::TimedOut(Step::Directory)), None)
            }
            (phase, Event::Deadline) => {
                self.forget_exchange(&phase);
                Next::Finish(Err(FlowError::TimedOut(phase.step())), phase.conn())
            }
            (phase, Event::Abort(error)) => {
                self.forget_exchange(&phase);
                Next::Finish(Err(error), phase.conn())
            }
            // An input that does not fit the phase (a persist report while exchanging, …) is
            // driver misuse: ignore it.
            (phase, _) => {
                debug_assert!(false, "flow {id}: event does not fit phase {phase:?}");
                Next::Stay(phase, deadline)
            }
        };
        let next_poll_timer = match &next {
            Next::Stay(phase, _) => phase.poll_timer(),
            Next::Finish(..) => None,
        };
        if next_poll_timer != poll_timer {
            if let Some(at) = poll_timer {
                self.timers.remove(&(at, Timer::Poll(id)));
            }
            if let Some(at) = next_poll_timer {
                self.timers.insert((at, Timer::Poll(id)));
            }
        }
        match next {
            Next::Stay(phase, next_deadline) => {
                trace_event!(flow = id.get(), step = %phase.step(), "flow moved on");
                if next_deadline != deadline {
                    self.timers.remove(&(deadline, Timer::Flow(id)));
                    self.timers.insert((next_deadline, Timer::Flow(id)));
                }
                if let Some(flow) = self.flows.get_mut(&id) {
                    flow.deadline = next_deadline;
                    flow.phase = phase;
                }
            }
            Next::Finish(result, conn) => {
                if let Some(flow) = self.flows.remove(&id) {
                    self.finish(now, id, flow, conn, result);
                }
            }
        }
    }

    /// A judged callback of flow `id`: the code goes to the token endpoint, or the flow
    /// ends.
    fn exchange_code(
        &mut self,
        now: Instant,
        id: FlowId,
        verdict: Result<&str, FlowError>,
        conn: Option<ConnId>,
    ) -> Next {
        let code = match verdict {
            Ok(code) => code,
            Err(error) => return Next::Finish(Err(error), conn),
        };
        let Some((flow, Some((_, verifier)))) = self
            .flows
            .get(&id)
            .map(|flow| (flow, flow.browser.as_ref()))
        else {
            return Next::Finish(Err(FlowError::Cancelled), conn);
        };
        let grant = exchange::Grant::Code {
            code,
            encoded_redirect_uri: &self.encoded_redirect_uri,
            verifier: verifier.as_str(),
        };
        let request = exchange::token_request(&flow.provider, grant);
        let exchange = self.send_token_request(id, request);
        let deadline = now + self.config.exchange_timeout;
        Next::Stay(Phase::Exchanging { exchange, conn }, deadline)
    }

    /// Asks the directory for the record under `key`, for flow `id`.
    fn take(&mut self, id: FlowId, key: FlowKey) -> TakeId {
        let take = TakeId::issued(self.fresh_id());
        self.takes.insert(take, id);
        self.actions.push_back(Action::TakeFlow {
            flow: id,
            take,
            key,
        });
        take
    }

    /// Notes that flow `id`'s record was taken or is gone: nothing to mark when it ends.
    fn settle(&mut self, id: FlowId) {
        if let Some(share) = self
            .flows
            .get_mut(&id)
            .and_then(|flow| flow.share.as_deref_mut())
        {
            share.settled = true;
        }
    }

    /// A callback for a shared flow: one this engine started, or (with a flow directory)
    /// a `state` it does not hold. A new flow takes the record from the directory (S54)
    /// and adopts the login; the flow that started it, here or on another replica, learns
    /// the outcome when the adopted flow ends.
    fn adopt(
        &mut self,
        now: Instant,
        state: StateKey,
        query: &str,
        conn: Option<ConnId>,
    ) -> Result<FlowId, Rejection> {
        if self.takes.len() >= MAX_TAKES {
            return Err(Rejection::Unavailable);
        }
        let id = FlowId::issued(self.fresh_id());
        let key = FlowKey::of(state);
        let take = self.take(id, key);
        let deadline = now + self.config.exchange_timeout;
        self.timers.insert((deadline, Timer::Flow(id)));
        self.flows.insert(
            id,
            Flow {
                // Until the record names its provider.
                provider: self.config.provider.clone(),
                browser: None,
                nonce: None,
                share: Some(Box::new(Share {
                    key,
                    adopted: true,
                    settled: true,
                })),
                // Until the record brings the login's DPoP key, if it has one.
                dpop: None,
                owner: None,
                deadline,
                phase: Phase::Taking {
                    take,
                    query: SecretString::from(query),
                    conn,
                },
            },
        );
        trace_event!(flow = id.get(), "unknown state; asking the flow directory");
        Ok(id)
    }

    /// The directory answered the take of the adopting flow `id`, whose callback is
    /// `query`.
    fn taken(
        &mut self,
        now: Instant,
        id: FlowId,
        result: Result<Taken, StoreError>,
        wall: SystemTime,
        query: &str,
        conn: Option<ConnId>,
    ) -> Next {
        let Some(key) = self
            .flows
            .get(&id)
            .and_then(|flow| flow.share.as_deref().copied())
            .map(|s| s.key)
        else {
            return Next::Finish(Err(FlowError::Cancelled), conn);
        };
        let state = key.state_key();
        let record = match result {
            Ok(Taken::Record(record)) => self.adopt_record(id, &record, wall),
            Ok(Taken::Spent { used }) => {
                self.remember_spent(now, state, used);
                Err(DirectoryError::Refused(match used {
                    true => Rejection::AlreadyUsed,
                    false => Rejection::Expired,
                }))
            }
            Ok(Taken::Missing) => Err(DirectoryError::Refused(Rejection::UnknownState)),
            Err(error) => Err(DirectoryError::Unavailable(error)),
        };
        if let Err(error) = record {
            let rejection = match &error {
                DirectoryError::Refused(rejection) => *rejection,
                DirectoryError::Unavailable(_) => Rejection::Unavailable,
                DirectoryError::Expired => Rejection::Expired,
                _ => Rejection::UnknownState,
            };
            if let Some(conn) = conn {
                self.refuse(conn, Refusal::Callback(rejection));
            }
            return Next::Finish(Err(FlowError::Directory(error)), None);
        }
        // The record is taken: this callback is the login's one (S18).
        self.remember_spent(now, state, true);
        let Some(flow) = self.flows.get(&id) else {
            return Next::Finish(Err(FlowError::Cancelled), conn);
        };
        // The query was parsed once already, to find the state.
        let verdict = Callback::parse(query, self.config.limits.max_head_bytes)
            .map_err(|rejection| FlowError::Directory(DirectoryError::Refused(rejection)))
            .and_then(|callback| {
                let code = callback.judge(flow.provider.inner())?;
                Ok(Zeroizing::new(code.to_owned()))
            });
        match verdict {
            Ok(code) => self.exchange_code(now, id, Ok(&code), conn),
            Err(error) => Next::Finish(Err(error), conn),
        }
    }

    /// Remembers `state` as spent for replays, unless a flow of this engine still waits
    /// under it (it learns its outcome from the adopted flow).
    fn remember_spent(&mut self, now: Instant, state: StateKey, used: bool) {
        if let std::collections::btree_map::Entry::Vacant(entry) = self.states.entry(state) {
            entry.insert(StateEntry::Spent { used });
            self.forget
                .push_back((now + self.config.flow_lifetime, state));
        }
    }

    /// Makes the record the adopted flow `id`'s own: its secrets, owner and deadline
    /// (S56), checked against this engine's configuration.
    fn adopt_record(
        &mut self,
        id: FlowId,
        record: &FlowRecord,
        wall: SystemTime,
    ) -> Result<(), DirectoryError> {
        let contents = Contents::read(record)?;
        if contents.deadline() <= wall {
            return Err(DirectoryError::Expired);
        }
        let provider = &self.config.provider;
        if contents.client_id != provider.client_id()
            || contents.token_endpoint != provider.token_endpoint().to_string()
            || contents.redirect_uri != self.redirect_uri
        {
            return Err(DirectoryError::Foreign);
        }
        let verifier = Verifier::from_text(&contents.verifier).ok_or(DirectoryError::Unreadable)?;
        let nonce = match (provider.id_token_policy(), &contents.nonce) {
            (Some(_), Some(nonce)) => {
                Some(Nonce::from_text(nonce).ok_or(DirectoryError::Unreadable)?)
            }
            (Some(_), None) => return Err(DirectoryError::Foreign),
            (None, _) => None,
        };
        // A DPoP login's code is bound to its key (RFC 9449 §10): the key travels with the
        // record, and every replica of a DPoP deployment has one.
        let dpop = match (provider.dpop(), contents.dpop_key) {
            (Some(_), Some(key)) => {
                let crypto = provider.inner().crypto.clone();
                let crypto = crypto.ok_or(DirectoryError::Foreign)?;
                Some(Signer::new(key, crypto).map_err(|_| DirectoryError::Unreadable)?)
            }
            (None, None) => None,
            _ => return Err(DirectoryError::Foreign),
        };
        let Some(flow) = self.flows.get_mut(&id) else {
            return Err(DirectoryError::Unreadable);
        };
        flow.dpop = dpop;
        let state = flow.share.as_ref().map(|share| share.key.state_key());
        let Some(state) = state else {
            return Err(DirectoryError::Unreadable);
        };
        flow.browser = Some((state, verifier));
        flow.nonce = nonce;
        flow.owner = contents.owner;
        Ok(())
    }

    /// Ends a flow (already removed from `flows`): answers its browser, reports the outcome.
    fn finish(
        &mut self,
        now: Instant,
        id: FlowId,
        flow: Flow,
        conn: Option<ConnId>,
        result: Result<TokenSet, FlowError>,
    ) {
        self.timers.remove(&(flow.deadline, Timer::Flow(id)));
        // A flow that ends before its callback leaves an "expired" record behind (S19).
        if let Some((state, _)) = flow.browser {
            self.spend_state(now, state, false);
        }
        if let Some(owner) = &flow.owner {
            if self.owners.get(owner) == Some(&id) {
                self.owners.remove(owner);
            }
        }
        if let Some(share) = flow.share.as_deref().copied() {
            if share.adopted {
                // Only a flow that was adopted (its record read) is announced.
                if flow.browser.is_some() {
                    let outcome = match &result {
                        Ok(_) => Outcome::Stored,
                        Err(error) => Outcome::Failed(error.to_string()),
                    };
                    let announcement = Announcement {
                        key: share.key,
                        outcome,
                    };
                    self.actions
                        .push_back(Action::AnnounceOutcome { announcement });
                    // Started here: it ends now, with the very result.
                    if let Some(origin) = self.shared_flow(&share.key) {
                        self.advance(now, origin, Event::Elsewhere(result.clone()));
                    }
                }
            } else {
                self.shared.remove(&share.key.state_key());
                if !share.settled {
                    self.actions.push_back(Action::SpendFlow { key: share.key });
                }
            }
        }
        if let Some(conn) = conn {
            let page = self.pages.landing(result.is_ok()).clone();
            self.respond(conn, page);
        }
        #[cfg(feature = "tracing")]
        match &result {
            Ok(_) => trace_event!(flow = id.get(), "flow finished: tokens stored"),
            Err(error) => trace_event!(flow = id.get(), %error, "flow finished without tokens"),
        }
        self.actions
            .push_back(Action::Finished { flow: id, result });
    }

    /// Marks a pending state as spent, to be forgotten one flow lifetime later. Spent states
    /// stay as they are.
    fn spend_state(&mut self, now: Instant, state: StateKey, used: bool) {
        if let Some(entry @ StateEntry::Pending(_)) = self.states.get_mut(&state) {
            let forget_at = now + self.config.flow_lifetime;
            *entry = StateEntry::Spent { used };
            self.forget.push_back((forget_at, state));
        }
    }

    /// Verifies the ID token of `tokens`, received at `received`, for flow `id`, when its
    /// provider verifies ID tokens: the event that decides the flow's next phase. A fetch
    /// the check needs becomes [`Action::FetchKeys`] (only when `fetching`).
    fn verify(
        &mut self,
        now: Instant,
        id: FlowId,
        tokens: TokenSet,
        received: SystemTime,
        fetching: bool,
    ) -> Event<'static> {
        let Some(flow) = self.flows.get(&id) else {
            return Event::TokenResponse(Err(FlowError::Cancelled));
        };
        let Some(policy) = flow.provider.id_token_policy() else {
            return Event::TokenResponse(Ok(tokens));
        };
        let Some(id_token) = tokens.id_token() else {
            return Event::TokenResponse(Err(FlowError::IdToken(IdTokenError::Missing)));
        };
        let expected = Expected {
            nonce: flow.nonce.as_ref().map(Nonce::as_str),
            access_token: Some(tokens.access_token().expose_secret()),
            previous: None,
        };
        let (lookup, fetch) = self.keys.check(
            now,
            received,
            policy,
            id_token.expose_secret(),
            &expected,
            fetching,
            self.config.exchange_timeout,
            &mut self.next_id,
        );
        if let Some((fetch, request)) = fetch {
            self.actions.push_back(Action::FetchKeys {
                id: RequestId::from_raw(fetch),
                request,
            });
        }
        match lookup {
            Lookup::Done(Ok(identity)) => {
                Event::TokenResponse(Ok(tokens.with_identity(Some(identity))))
            }
            Lookup::Done(Err(error)) => Event::TokenResponse(Err(FlowError::IdToken(error))),
            Lookup::Wait(key_set) => Event::AwaitKeys {
                tokens,
                received,
                key_set,
            },
        }
    }

    /// Forgets an exchange whose answer no longer matters.
    fn forget(&mut self, exchange: ExchangeId) {
        self.exchanges.remove(&exchange);
        self.dpop_retries.remove(&exchange);
    }

    /// Asks the driver to send `request`, a token request of flow `id`, under a fresh
    /// exchange id its answer will name. A DPoP login's request gets its proof.
    fn send_token_request(&mut self, id: FlowId, request: ProviderRequest) -> ExchangeId {
        let exchange = ExchangeId::issued(self.fresh_id());
        self.exchanges.insert(exchange, id);
        let dpop = self.flows.get(&id).and_then(|flow| {
            let nonce = self
                .dpop_nonces
                .get(&flow.provider.token_endpoint().to_string());
            Some((flow.dpop.clone()?, nonce.cloned()))
        });
        let request = match dpop {
            Some((signer, nonce)) => {
                let request = request.with_dpop(signer, nonce);
                self.dpop_retries.insert(exchange, request.clone());
                request
            }
            None => request,
        };
        self.actions.push_back(Action::SendTokenRequest {
            flow: id,
            exchange,
            request,
        });
        exchange
    }

    /// A fetch of `key_set` ended: every flow waiting for it is verified again.
    fn keys_arrived(&mut self, now: Instant, key_set: &str) {
        let waiting: Vec<(FlowId, TokenSet, SystemTime)> = self
            .flows
            .iter()
            .filter_map(|(id, flow)| match &flow.phase {
                Phase::Verifying(verifying) if verifying.key_set == key_set => {
                    Some((*id, verifying.tokens.clone(), verifying.received))
                }
                _ => None,
            })
            .collect();
        for (id, tokens, received) in waiting {
            let event = match self.verify(now, id, tokens, received, false) {
                // Checked again without fetching, a token never waits twice.
                Event::AwaitKeys { .. } => Event::TokenResponse(Err(FlowError::IdToken(
                    IdTokenError::KeySet(KeySetError::NoUsableKey),
                ))),
                event => event,
            };
            self.advance(now, id, event);
        }
    }

    fn forget_exchange(&mut self, phase: &Phase) {
        if let Phase::Taking { take, .. } = phase {
            self.takes.remove(take);
        }
        let exchange = match phase {
            Phase::Exchanging { exchange, .. }
            | Phase::Authorizing { exchange }
            | Phase::Pushing { exchange, .. } => Some(exchange),
            Phase::Polling(polling) => polling.in_flight.as_ref(),
            _ => None,
        };
        if let Some(&exchange) = exchange {
            self.forget(exchange);
        }
    }

    /// A callback query, from the loopback port (`conn`) or forwarded by the application.
    fn on_callback(
        &mut self,
        now: Instant,
        query: &str,
        conn: Option<ConnId>,
    ) -> Result<FlowId, Rejection> {
        let callback = Callback::parse(query, self.config.limits.max_head_bytes)?;
        let state = StateKey::of(callback.state()?);
        match self.states.get(&state) {
            Some(&StateEntry::Pending(id)) => {
                let flow = self.flows.get(&id).ok_or(Rejection::UnknownState)?;
                if flow.share.is_some() {
                    return match flow.phase {
                        Phase::Waiting => self.adopt(now, state, query, conn),
                        // The browser was not sent anywhere yet: not a callback of ours.
                        _ => Err(Rejection::UnknownState),
                    };
                }
                let verdict = callback.judge(flow.provider.inner());
                self.advance(now, id, Event::Callback { verdict, conn });
                Ok(id)
            }
            Some(StateEntry::Spent { used: true }) => Err(Rejection::AlreadyUsed),
            Some(StateEntry::Spent { used: false }) => Err(Rejection::Expired),
            None if self.config.flow_directory => self.adopt(now, state, query, conn),
            None if self.flows.is_empty() => Err(Rejection::NoPendingFlow),
            None => Err(Rejection::UnknownState),
        }
    }

    /// A connection's complete request head: answer it, or hand it to a flow.
    fn on_head(&mut self, now: Instant, conn: ConnId, head: &[u8]) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        // Complete: no more header deadline; the callback's flow decides when to answer.
        if let Some(deadline) = state.deadline.take() {
            self.timers.remove(&(deadline, Timer::Conn(conn)));
        }
        match self.read_request(head) {
            Ok(query) => {
                if let Err(rejection) = self.on_callback(now, query, Some(conn)) {
                    self.refuse(conn, Refusal::Callback(rejection));
                }
            }
            Err(refusal) => self.refuse(conn, refusal),
        }
    }

    /// Checks a complete request head against S22–S26: `Ok(query)` for a well-formed `GET`
    /// of the callback path.
    fn read_request<'h>(&self, head: &'h [u8]) -> Result<&'h str, Refusal> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            // `head_end` found the blank line httparse disagrees with: not a valid head.
            Ok(httparse::Status::Partial) => return Err(Refusal::BadRequest),
            Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
            Err(_) => return Err(Refusal::BadRequest),
        }
        // One pass over the headers; a header that must appear at most once and appears
        // twice is an error (checked in the order below).
        let mut host = Seen::Absent;
        let mut content_length = Seen::Absent;
        let mut transfer_encoding = Seen::Absent;
        let mut fetch_mode = Seen::Absent;
        let mut fetch_dest = Seen::Absent;
        for header in request.headers.iter() {
            let name = header.name;
            let slot = match name.len() {
                4 if name.eq_ignore_ascii_case("host") => &mut host,
                14 if name.eq_ignore_ascii_case("content-length") => &mut content_length,
                14 if name.eq_ignore_ascii_case("sec-fetch-mode") => &mut fetch_mode,
                14 if name.eq_ignore_ascii_case("sec-fetch-dest") => &mut fetch_dest,
                17 if name.eq_ignore_ascii_case("transfer-encoding") => &mut transfer_encoding,
                _ => continue,
            };
            slot.add(header.value);
        }
        // S22: DNS rebinding defence.
        let host = host.single()?.ok_or(Refusal::BadRequest)?;
        if !self
            .allowed_hosts
            .iter()
            .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(host))
        {
            return Err(Refusal::MisdirectedHost);
        }
        // S23, S24: GET only; OPTIONS (CORS preflight) included in the refusal.
        if request.method != Some("GET") {
            return Err(Refusal::MethodNotAllowed);
        }
        // S26: no request body.
        let has_body = content_length
            .single()?
            .is_some_and(|length| length != b"0")
            || transfer_encoding.single()?.is_some();
        // S25: origin-form only.
        let target = request.path.unwrap_or_default();
        if has_body || !target.starts_with('/') || target.contains('#') {
            return Err(Refusal::BadRequest);
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path != self.config.redirect.path {
            return Err(Refusal::NotFound);
        }
        // S23: when the browser says what this is, it must be a top-level navigation.
        for (seen, wanted) in [(fetch_mode, "navigate"), (fetch_dest, "document")] {
            if seen
                .single()?
                .is_some_and(|value| !value.eq_ignore_ascii_case(wanted.as_bytes()))
            {
                return Err(Refusal::NotNavigation);
            }
        }
        Ok(query)
    }

    fn refuse(&mut self, conn: ConnId, refusal: Refusal) {
        trace_event!(conn = conn.get(), ?refusal, "browser request refused");
        let page = self.pages.refusal(refusal).clone();
        self.respond(conn, page);
    }

    /// Answers and forgets a connection.
    fn respond(&mut self, conn: ConnId, page: Page) {
        self.drop_conn(conn);
        self.actions.push_back(Action::Respond {
            conn,
            status: page.status,
            bytes: page.bytes,
        });
    }

    /// Closes and forgets a connection.
    fn close(&mut self, conn: ConnId) {
        self.drop_conn(conn);
        self.actions.push_back(Action::Close { conn });
    }

    fn drop_conn(&mut self, conn: ConnId) {
        if let Some(Conn {
            deadline: Some(deadline),
            ..
        }) = self.conns.remove(&conn)
        {
            self.timers.remove(&(deadline, Timer::Conn(conn)));
        }
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Ids the engine never issued are driver bugs; ids it issued and has since forgotten
    /// (a late answer after a timeout) are normal.
    fn debug_assert_issued(&self, id: u64) {
        debug_assert!(id < self.next_id, "id {id} was never issued by this engine");
    }
}

/// Where the request head in `buf` ends, just past its blank line, if it has arrived;
/// blank lines before the request line are skipped (RFC 9112 §2.2). `scanned`: how much of
/// `buf` an earlier call already searched.
fn head_end(buf: &[u8], scanned: usize) -> Option<usize> {
    let start = buf.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    // A blank line is `\n\n` or `\n\r\n`: back up two bytes to catch one split across calls.
    let from = scanned.saturating_sub(2).max(start);
    let rest = buf.get(from..)?;
    memchr::memchr_iter(b'\n', rest).find_map(|i| match rest.get(i + 1..) {
        Some([b'\n', ..]) => Some(from + i + 2),
        Some([b'\r', b'\n', ..]) => Some(from + i + 3),
        _ => None,
    })
}

/// How often a header that must appear at most once was seen.
#[derive(Clone, Copy)]
enum Seen<'h> {
    Absent,
    Once(&'h [u8]),
    Repeated,
}

impl<'h> Seen<'h> {
    fn add(&mut self, value: &'h [u8]) {
        *self = match self {
            Seen::Absent => Seen::Once(value),
            Seen::Once(_) | Seen::Repeated => Seen::Repeated,
        };
    }

    /// The value, if the header appeared at most once.
    fn single(self) -> Result<Option<&'h [u8]>, Refusal> {
        match self {
            Seen::Absent => Ok(None),
            Seen::Once(value) => Ok(Some(value)),
            Seen::Repeated => Err(Refusal::BadRequest),
        }
    }
}

impl Phase {
    /// What the flow waits for in this phase.
    fn step(&self) -> Step {
        match self {
            Phase::Sharing(_) | Phase::Taking { .. } => Step::Directory,
            Phase::Waiting => Step::Callback,
            Phase::Pushing { .. } => Step::AuthorizationPush,
            Phase::Authorizing { .. } => Step::DeviceAuthorization,
            Phase::Polling(_) => Step::Approval,
            Phase::Exchanging { .. } => Step::TokenExchange,
            Phase::Verifying(_) => Step::KeySet,
            Phase::Persisting { .. } => Step::Storage,
        }
    }

    /// When this phase's `Timer::Poll` fires, if it has one.
    fn poll_timer(&self) -> Option<Instant> {
        match self {
            Phase::Polling(polling) => Some(polling.timer),
            _ => None,
        }
    }

    /// The browser connection waiting for this flow's outcome.
    fn conn(&self) -> Option<ConnId> {
        match self {
            Phase::Sharing(_)
            | Phase::Pushing { .. }
            | Phase::Waiting
            | Phase::Authorizing { .. }
            | Phase::Polling(_) => None,
            Phase::Verifying(verifying) => verifying.conn,
            Phase::Taking { conn, .. }
            | Phase::Exchanging { conn, .. }
            | Phase::Persisting { conn, .. } => *conn,
        }
    }
}

/// A new DPoP key for a login of `provider`, when its tokens are DPoP-bound.
fn dpop_key(provider: &Provider) -> Result<Option<Signer>, StartError> {
    let (Some(algorithm), Some(crypto)) = (provider.dpop(), provider.inner().crypto.clone()) else {
        return Ok(None);
    };
    Signer::generate(algorithm, crypto)
        .map(Some)
        .map_err(StartError::DpopKey)
}

/// `tokens` of a DPoP login, checked to be bound (`token_type` `DPoP`, S61) and given the
/// login's key; other logins' tokens as they are.
fn bound(
    flow: &Flow,
    tokens: TokenSet,
    response: &http::Response<Vec<u8>>,
) -> Result<TokenSet, FlowError> {
    match &flow.dpop {
        None => Ok(tokens),
        Some(signer) if *tokens.token_type() == TokenType::DPoP => {
            Ok(tokens.with_dpop_key(signer.private_key().clone()))
        }
        Some(_) => Err(FlowError::BadTokenResponse {
            status: response.status().as_u16(),
            reason: BadTokenResponse::NotDpopBound,
        }),
    }
}
