//! The life of a login's tokens after the login: [`Session`], the sans-IO machine that hands
//! out valid tokens, refreshes them, and logs out.
//!
//! A session looks after the tokens one login stored under one key. Callers ask for tokens
//! ([`Session::tokens`]), for a refresh whatever the expiry ([`Session::refresh`]) or for a
//! logout ([`Session::logout`]); each call gets a [`CallId`] and, later, exactly one answer
//! ([`SessionAction::Tokens`] or [`SessionAction::LoggedOut`]). In between, the session asks
//! the driver to read, write or delete the stored tokens and to send refresh and revocation
//! requests, each with an id its answer names.
//!
//! Work runs one piece at a time, calls in the order they came:
//!
//! ```text
//!               ┌──────── kept tokens? ───────┐
//!   tokens() ──►│                             ▼
//!   refresh()   Load ──► stored ─────────► StoreKept ──► stored
//!               │          │                               │
//!               │          ▼                               ▼
//!               │    valid beyond the margin, no refresh() asked ──► answer every caller
//!               │          │ otherwise
//!               │          ▼
//!               │    Refresh ──► fresh ──► StoreFresh ──► answer every caller with them
//!               │          │                   │ refused: keep them, store them first next time
//!               │          └─► refresh token dead ──► Delete ──► "login required"
//!   logout() ──► (kept tokens, or Load) ──► Revoke refresh token ──► Revoke access token
//!                                                       ──► Delete (always) ──► the report
//! ```
//!
//! The rules it keeps:
//!
//! - **One refresh for everyone.** Calls that arrive while tokens are being loaded or
//!   refreshed join that work and get its answer; at most one request is ever in flight.
//! - **Tokens refreshed after a call serve it**, even when they live shorter than the
//!   margin (a provider handing out 30-second tokens with a 60-second margin does not make
//!   every waiting caller refresh again).
//! - **Persist before deliver.** Fresh tokens reach a caller only after the store confirmed
//!   them. A store that refuses them does not lose them: with rotation the provider has
//!   already retired the stored refresh token, so the session keeps the fresh set and stores
//!   it first on the next call (S42).
//! - **A dead refresh token ends the login.** `invalid_grant` (or GitHub's
//!   `bad_refresh_token`, sent with HTTP 200) deletes the stored tokens and answers
//!   "login required" (S42).
//! - **A refreshed ID token is verified before it is stored** (OpenID Connect Core §12.2,
//!   S49), when the provider verifies ID tokens: the same checks as at login, without a
//!   nonce, and the `iss`, `sub` and `aud` of the stored identity. One that fails ends the
//!   login like a dead refresh token (the tokens no longer vouch for the user who signed
//!   in); one that cannot be checked because the key set is unreachable is dropped, and the
//!   fresh tokens keep the login's ID token and identity.
//! - **One refresh across processes, when the store is shared** (S57,
//!   [`SessionOptions::shared_refresh`]). Replicas behind a load balancer share one store
//!   and each runs its own session. Before a refresh, the session takes the store's
//!   refresh lock ([`SessionAction::Lock`], a lease that ends by itself should its holder
//!   die) and reads the tokens again under it: another replica may have refreshed them a
//!   moment ago, and those serve. A session that finds the lock held waits
//!   ([`SessionOptions::lock_retry`]) and reads the store again, until the tokens are
//!   fresh or the lock is free. The refreshed tokens are stored with the lock's fence
//!   ([`SessionAction::SaveFenced`]): a holder whose lease ran out while its request was
//!   slow, and was overtaken by a newer holder or a new login, writes nothing and reads
//!   what they stored instead; a refresh token refused under the lock deletes the tokens
//!   under the same fence ([`SessionAction::DeleteFenced`]), so a holder overtaken that way
//!   deletes nothing and hands out the newer tokens. The lock is released when the work ends
//!   ([`SessionAction::Unlock`]). A store that cannot be asked for the lock is an error
//!   and no refresh is sent (S58). With rotation on, any number of replicas asking at once
//!   cause one refresh request, and none of them sees "login required".
//! - **Logout deletes, always.** The refresh token is revoked first (it ends the grant at
//!   most providers), then the access token, when the provider has a revocation endpoint;
//!   the stored tokens are deleted whatever the revocations said, and the report says what
//!   happened (S44).
//! - **The core owns the deadlines.** Every request has one ([`SessionOptions::request_timeout`])
//!   and every call too ([`SessionOptions::call_timeout`]). Work in progress is never
//!   abandoned because its caller gave up: a refresh whose caller timed out is still stored.
//!   Store operations have no deadline of their own: a write cannot be abandoned safely (it
//!   could land after a newer one), so the session waits for the store's answer before it
//!   touches the store again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use secrecy::ExposeSecret;

use crate::config::{ConfigError, Provider};
use crate::dpop;
use crate::error::{StoreError, TransportError, TransportErrorKind};
use crate::oidc::{Expected, IdTokenError, KeyCache, KeySetError, Lookup};
use crate::outgoing::ProviderRequest;
use crate::refresh::{Refresh, RefreshError};
use crate::revoke::{Revocation, RevocationError, TokenKind};
use crate::token::TokenSet;

id_type!(
    /// Identifies a call ([`Session::tokens`], [`Session::refresh`], [`Session::logout`]) and
    /// its answer.
    CallId
);
id_type!(
    /// Identifies an HTTP request a machine asked the driver to send, and its answer.
    RequestId
);
id_type!(
    /// Identifies an operation on the token store ([`SessionAction::Load`],
    /// [`SessionAction::Save`], [`SessionAction::Delete`]) and its answer.
    StoreOpId
);

impl RequestId {
    /// The id numbered `raw`, for the other machines that send requests.
    pub(crate) fn from_raw(raw: u64) -> RequestId {
        RequestId::issued(raw)
    }
}

/// The longest any duration in [`SessionOptions`] may be: deadlines are `now + duration`,
/// and a bound keeps that sum from overflowing.
const LONGEST: Duration = Duration::from_secs(24 * 60 * 60);

/// How a [`Session`] decides and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Tokens that expire within this margin are refreshed before they are handed out.
    /// Default 60 s.
    pub margin: Duration,
    /// The longest a refresh or revocation request may take before it counts as failed
    /// (a transport error of kind [`TransportErrorKind::TimedOut`]); its answer is then
    /// ignored. Give the HTTP client a timeout no longer than this. Default 30 s.
    pub request_timeout: Duration,
    /// The longest a call waits for its answer before it gets [`SessionError::TimedOut`].
    /// The work it waited for goes on. Default 60 s.
    pub call_timeout: Duration,
    /// The store is shared by several processes (replicas) and keeps a refresh lock
    /// ([`SessionAction::Lock`]): every refresh happens under it, so that any number of
    /// sessions, in any number of processes, refresh a login once between them (S57).
    /// Default `false`.
    pub shared_refresh: bool,
    /// How long a refresh lock is held at most, should its holder die: longer than a
    /// refresh takes. The refresh request goes out only while the lease runs, counted from
    /// when the lock was asked for; a lease that may have ended before is taken again.
    /// Default 45 s.
    pub lock_lease: Duration,
    /// How long a session that found the lock held waits before it reads the store again.
    /// Default 100 ms.
    pub lock_retry: Duration,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            margin: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(60),
            shared_refresh: false,
            lock_lease: Duration::from_secs(45),
            lock_retry: Duration::from_millis(100),
        }
    }
}

/// What a refresh or revocation request is for, so that a driver can log it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Purpose {
    /// A refresh (`grant_type=refresh_token`) at the token endpoint.
    Refresh,
    /// A revocation of this token at the revocation endpoint (RFC 7009).
    Revoke(TokenKind),
    /// A fetch of the provider's key set, to verify a refreshed ID token.
    KeySet,
}

/// Why tokens are being saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaveReason {
    /// The provider just issued them in a refresh; `rotated` when their refresh token
    /// replaces the stored one.
    Refreshed {
        /// Whether the refresh token changed.
        rotated: bool,
    },
    /// An earlier save of refreshed tokens failed; these are they, stored before anything
    /// else happens.
    Kept,
}

/// Why the stored tokens are being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeleteReason {
    /// The provider refused the refresh token, or its refreshed ID token failed
    /// verification: the tokens are dead (S42, S49).
    LoginRequired,
    /// The user logs out (S44).
    Logout,
}

/// Something the driver must do for a [`Session`]. Drained with
/// [`Session::poll_action`].
///
/// `Debug` hides every secret: tokens are redacted, request bodies shown by length (S41).
#[derive(Clone)]
#[non_exhaustive]
pub enum SessionAction {
    /// Read the stored tokens and report with [`Session::handle_loaded`].
    Load {
        /// Names the answer.
        op: StoreOpId,
    },
    /// Store `tokens` in place of the stored ones, as one step, and report with
    /// [`Session::handle_saved`].
    Save {
        /// Names the answer.
        op: StoreOpId,
        /// The tokens.
        tokens: TokenSet,
        /// Why.
        reason: SaveReason,
    },
    /// Take the store's refresh lock of these tokens for `lease` (see
    /// [`SessionOptions::shared_refresh`]) and report with [`Session::handle_locked`]:
    /// `Some(fence)` when taken, `None` when another process holds it.
    Lock {
        /// Names the answer.
        op: StoreOpId,
        /// How long the lock lasts unless released.
        lease: Duration,
    },
    /// Store refreshed `tokens` in place of the stored ones, as [`SessionAction::Save`]
    /// does, but only if `fence` is still the newest fence handed out and nothing was
    /// stored or deleted since (S57); report with [`Session::handle_saved_fenced`].
    SaveFenced {
        /// Names the answer.
        op: StoreOpId,
        /// The tokens.
        tokens: TokenSet,
        /// Why.
        reason: SaveReason,
        /// The fence the lock was taken with.
        fence: u64,
    },
    /// Release the refresh lock taken with `fence`, if it is still held with it. Nothing is
    /// reported back (the lease ends it anyway).
    Unlock {
        /// The fence the lock was taken with.
        fence: u64,
    },
    /// Delete the stored tokens the refresh lock taken with `fence` was for, as
    /// [`SessionAction::Delete`] does, but only if `fence` is still the newest fence handed
    /// out and nothing was stored or deleted since (S57); report with
    /// [`Session::handle_deleted_fenced`].
    DeleteFenced {
        /// Names the answer.
        op: StoreOpId,
        /// Why.
        reason: DeleteReason,
        /// The fence the lock was taken with.
        fence: u64,
    },
    /// Delete the stored tokens and report with [`Session::handle_deleted`].
    Delete {
        /// Names the answer.
        op: StoreOpId,
        /// Why.
        reason: DeleteReason,
    },
    /// Send this request and report with [`Session::handle_response`] or
    /// [`Session::handle_failure`]. Follow no redirects (S34).
    Send {
        /// Names the answer.
        id: RequestId,
        /// What it is for.
        purpose: Purpose,
        /// The request: [`finish`](ProviderRequest::finish) it as it is sent (see
        /// [`crate::http1`] to send it).
        request: ProviderRequest,
    },
    /// The answer to a [`Session::tokens`] or [`Session::refresh`] call; the last action
    /// that names `call`.
    Tokens {
        /// The call.
        call: CallId,
        /// Tokens that were stored, or why there are none.
        result: Result<TokenSet, SessionError>,
    },
    /// The answer to a [`Session::logout`] call; the last action that names `call`.
    LoggedOut {
        /// The call.
        call: CallId,
        /// What logging out did, or why the stored tokens could not be deleted.
        result: Result<LogoutReport, SessionError>,
    },
}

impl fmt::Debug for SessionAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionAction::Load { op } => f.debug_struct("Load").field("op", op).finish(),
            SessionAction::Save { op, tokens, reason } => f
                .debug_struct("Save")
                .field("op", op)
                .field("tokens", tokens)
                .field("reason", reason)
                .finish(),
            SessionAction::Lock { op, lease } => f
                .debug_struct("Lock")
                .field("op", op)
                .field("lease", lease)
                .finish(),
            SessionAction::SaveFenced {
                op,
                tokens,
                reason,
                fence,
            } => f
                .debug_struct("SaveFenced")
                .field("op", op)
                .field("tokens", tokens)
                .field("reason", reason)
                .field("fence", fence)
                .finish(),
            SessionAction::Unlock { fence } => {
                f.debug_struct("Unlock").field("fence", fence).finish()
            }
            SessionAction::DeleteFenced { op, reason, fence } => f
                .debug_struct("DeleteFenced")
                .field("op", op)
                .field("reason", reason)
                .field("fence", fence)
                .finish(),
            SessionAction::Delete { op, reason } => f
                .debug_struct("Delete")
                .field("op", op)
                .field("reason", reason)
                .finish(),
            SessionAction::Send {
                id,
                purpose,
                request,
            } => f
                .debug_struct("Send")
                .field("id", id)
                .field("purpose", purpose)
                .field("request", request)
                .finish(),
            SessionAction::Tokens { call, result } => f
                .debug_struct("Tokens")
                .field("call", call)
                .field("result", result)
                .finish(),
            SessionAction::LoggedOut { call, result } => f
                .debug_struct("LoggedOut")
                .field("call", call)
                .field("result", result)
                .finish(),
        }
    }
}

/// Why a call got no tokens (or, for a logout, why the stored tokens were not deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// Nothing is stored: log in first.
    NotLoggedIn,
    /// The refresh failed. [`RefreshError::LoginRequired`] also deleted the stored tokens;
    /// [`RefreshError::NoRefreshToken`] means the tokens expired and cannot be renewed.
    Refresh(RefreshError),
    /// The token endpoint could not be reached, or did not answer within
    /// [`SessionOptions::request_timeout`] (kind [`TransportErrorKind::TimedOut`]).
    Transport(TransportError),
    /// The store could not be read, written or cleared. Refreshed tokens it refused are
    /// kept and stored first on the next call.
    Store(StoreError),
    /// The call waited [`SessionOptions::call_timeout`] without an answer. The work it
    /// waited for goes on.
    TimedOut,
    /// The call was cancelled ([`Session::cancel`]).
    Cancelled,
}

impl SessionError {
    /// Whether only a new login can give tokens now.
    pub fn login_required(&self) -> bool {
        match self {
            SessionError::NotLoggedIn => true,
            SessionError::Refresh(error) => error.login_required(),
            _ => false,
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::NotLoggedIn => f.write_str("login required: no tokens are stored"),
            SessionError::Refresh(error) => error.fmt(f),
            SessionError::Transport(error) => write!(f, "refreshing the tokens: {error}"),
            SessionError::Store(error) => write!(f, "the token store: {error}"),
            SessionError::TimedOut => f.write_str("no answer in time"),
            SessionError::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Refresh(error) => Some(error),
            SessionError::Transport(error) => Some(error),
            SessionError::Store(error) => Some(error),
            _ => None,
        }
    }
}

/// Why stored tokens were not sent for revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotRevoked {
    /// The provider has no revocation endpoint.
    NoEndpoint,
    /// The stored tokens could not be read, so nothing could be revoked; they were deleted.
    Unreadable(StoreError),
}

impl fmt::Display for NotRevoked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotRevoked::NoEndpoint => f.write_str("the provider has no token revocation endpoint"),
            NotRevoked::Unreadable(error) => {
                write!(f, "the stored tokens could not be read: {error}")
            }
        }
    }
}

/// What a logout did. The stored tokens are gone whenever a logout answers `Ok`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogoutReport {
    /// Whether tokens were stored (or kept after a failed save).
    pub had_tokens: bool,
    /// Each token sent for revocation, the refresh token first, and how it went.
    pub revocations: Vec<(TokenKind, Result<(), RevocationError>)>,
    /// Why stored tokens were not sent for revocation, if they were not.
    pub not_revoked: Option<NotRevoked>,
}

impl LogoutReport {
    /// Whether every stored token was revoked at the provider (true when none was stored).
    pub fn fully_revoked(&self) -> bool {
        self.not_revoked.is_none() && self.revocations.iter().all(|(_, outcome)| outcome.is_ok())
    }
}

/// One call, waiting for its answer unless it was answered early (a logout's work goes on
/// once asked for, even if its caller gave up before it started).
#[derive(Debug, Clone)]
struct Call {
    id: CallId,
    kind: CallKind,
    deadline: Instant,
    waiting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// Valid tokens, refreshed if they expire within the margin.
    Tokens,
    /// Freshly refreshed tokens, whatever the expiry.
    Refresh,
    Logout,
}

/// The work in progress. Everything outstanding (one store operation or one request at
/// most) is named here, so an answer is matched against exactly one thing.
#[derive(Debug, Clone)]
enum Work {
    Idle,
    /// Handing out tokens to `calls` (tokens and refresh calls).
    Tokens {
        calls: Vec<Call>,
        step: TokensStep,
    },
    /// Logging out for `call`, if it is still waiting.
    Logout {
        call: Option<Call>,
        report: LogoutReport,
        step: LogoutStep,
    },
}

#[derive(Debug, Clone)]
enum TokensStep {
    Loading(StoreOpId),
    /// Storing the tokens an earlier failed save left.
    StoringKept(StoreOpId, TokenSet),
    Refreshing {
        id: RequestId,
        deadline: Instant,
        refresh: Box<Refresh>,
    },
    /// The refreshed ID token waits for the provider's key set (the cache entry `key_set`).
    VerifyingFresh {
        previous: TokenSet,
        fresh: TokenSet,
        received: SystemTime,
        key_set: String,
    },
    StoringFresh(StoreOpId, TokenSet),
    /// Taking the store's refresh lock before a refresh.
    Locking(StoreOpId),
    /// Another process holds the refresh lock: the stored tokens are read again once
    /// [`SessionOptions::lock_retry`] has passed.
    Backoff,
    /// Deleting tokens whose refresh token the provider refused.
    DeletingDead(StoreOpId, RefreshError),
}

#[derive(Debug, Clone)]
enum LogoutStep {
    Loading(StoreOpId),
    Revoking {
        id: RequestId,
        deadline: Instant,
        current: Box<Revocation>,
        /// The revocations still to send, in order.
        next: VecDeque<Revocation>,
    },
    Deleting(StoreOpId),
}

/// What an answer reports, as the work sees it. Answers after which expiry is judged
/// carry the wall-clock time they arrived at.
enum Event {
    Loaded(StoreOpId, Result<Option<TokenSet>, StoreError>, SystemTime),
    Saved(StoreOpId, Result<(), StoreError>, SystemTime),
    Deleted(StoreOpId, Result<(), StoreError>),
    Locked(StoreOpId, Result<Option<u64>, StoreError>),
    /// The answer to a fenced delete: `Ok(false)` when a newer fence got there first.
    DeletedFenced(StoreOpId, Result<bool, StoreError>),
    /// The answer to a fenced save: `Ok(false)` when a newer fence got there first.
    SavedFenced(StoreOpId, Result<bool, StoreError>),
    /// The back-off after a held lock is over.
    RetryDue,
    /// A request's outcome: the response and when it arrived, or why there is none (a
    /// deadline included).
    Answered(RequestId, Result<Received, TransportError>),
}

/// A response and the wall-clock time it arrived at (the base of `expires_in`).
type Received = (http::Response<Vec<u8>>, SystemTime);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Call(CallId),
    Request(RequestId),
    /// The end of a back-off after the refresh lock was held elsewhere.
    Retry,
}

/// The stored tokens of one login, kept valid: the sans-IO token lifecycle. See the
/// [module documentation](crate::session) for the rules it keeps, and the
/// [crate documentation](crate) for a whole exchange with literal bytes.
///
/// Methods come in the same four families as [`Engine`](crate::Engine)'s: getters;
/// commands ([`tokens`](Session::tokens), [`refresh`](Session::refresh),
/// [`logout`](Session::logout), [`cancel`](Session::cancel)); inputs (`handle_*`, each
/// taking `now`, and the wall-clock time where expiry is judged); outputs
/// ([`poll_action`](Session::poll_action), [`poll_timeout`](Session::poll_timeout)).
/// **After any command or input, drain `poll_action` until it returns `None`**, then wait
/// for the next answer or `poll_timeout`.
///
/// Every [`SessionAction::Load`], [`Save`](SessionAction::Save),
/// [`Delete`](SessionAction::Delete) and [`Send`](SessionAction::Send) expects exactly one
/// answer. An answer the session no longer waits for (a response after its request's
/// deadline) is ignored; an id it never issued is driver misuse, a `debug_assert!` and
/// otherwise ignored.
#[derive(Debug, Clone)]
pub struct Session {
    provider: Provider,
    options: SessionOptions,
    /// Calls not yet taken up by work, in arrival order.
    queue: VecDeque<Call>,
    work: Work,
    /// Refreshed tokens the store refused: the only live ones when the provider rotates.
    kept: Option<TokenSet>,
    /// The fence of the refresh lock this session holds, while it holds it.
    fence: Option<u64>,
    /// The earliest the lease of the lock asked for last can end: when it was asked for,
    /// plus the lease (the store starts the lease later than that, never earlier).
    lease_end: Option<Instant>,
    /// The tokens a refresh was about to replace when the lock was found held: whatever
    /// the store holds instead afterwards was refreshed by another process.
    stale: Option<TokenSet>,
    keys: KeyCache,
    /// DPoP requests not yet answered, to be sent once more with the provider's nonce
    /// should it ask for one (S62).
    dpop_retries: BTreeMap<RequestId, (Purpose, ProviderRequest)>,
    /// The provider's latest DPoP nonce, for the next proof.
    dpop_nonce: Option<String>,
    timers: BTreeSet<(Instant, Timer)>,
    actions: VecDeque<SessionAction>,
    next_id: u64,
}

impl Session {
    /// A session for tokens issued by `provider`, with default options.
    pub fn new(provider: Provider) -> Session {
        Session::build(provider, SessionOptions::default())
    }

    /// A session with `options`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidLimit`] when a timeout, the lock lease or the lock retry is
    /// zero or longer than a day.
    pub fn with_options(
        provider: Provider,
        options: SessionOptions,
    ) -> Result<Session, ConfigError> {
        // The margin is only ever added to the wall-clock time with a check; the timeouts
        // become deadlines, `now + timeout`, and are bounded so that the sum cannot overflow.
        for (name, timeout) in [
            ("request timeout", options.request_timeout),
            ("call timeout", options.call_timeout),
            // Zero would make a refresh take the lock again and again (or poll the store
            // without a pause), for good.
            ("lock lease", options.lock_lease),
            ("lock retry", options.lock_retry),
        ] {
            if timeout.is_zero() || timeout > LONGEST {
                return Err(ConfigError::InvalidLimit(name));
            }
        }
        Ok(Session::build(provider, options))
    }

    fn build(provider: Provider, options: SessionOptions) -> Session {
        Session {
            provider,
            options,
            queue: VecDeque::new(),
            work: Work::Idle,
            kept: None,
            fence: None,
            lease_end: None,
            stale: None,
            keys: KeyCache::default(),
            dpop_retries: BTreeMap::new(),
            dpop_nonce: None,
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
            next_id: 1,
        }
    }

    // ----- getters -----

    /// The provider the tokens come from.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// The options.
    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    /// Calls made and not yet answered.
    pub fn calls_waiting(&self) -> usize {
        let working = match &self.work {
            Work::Idle => 0,
            Work::Tokens { calls, .. } => calls.len(),
            Work::Logout { call, .. } => usize::from(call.is_some()),
        };
        self.queue.iter().filter(|call| call.waiting).count() + working
    }

    /// Whether nothing is in progress: no store operation or request outstanding, no call
    /// waiting. A driver may stop once its session is idle and nobody can call any more.
    pub fn is_idle(&self) -> bool {
        matches!(self.work, Work::Idle) && self.queue.is_empty()
    }

    /// Whether refreshed tokens the store refused are held, to be stored first on the next
    /// call. They are lost if the session is dropped now.
    pub fn holds_unsaved_tokens(&self) -> bool {
        self.kept.is_some()
    }

    // ----- commands -----

    /// Asks for tokens that stay valid longer than the margin: the stored ones, or fresh
    /// ones, stored before they are handed out. Answered with [`SessionAction::Tokens`].
    pub fn tokens(&mut self, now: Instant) -> CallId {
        self.call(now, CallKind::Tokens)
    }

    /// Asks for freshly refreshed tokens whatever the stored ones' expiry (after a resource
    /// server refused the access token, say). A refresh that completes after this call
    /// answers it. Answered with [`SessionAction::Tokens`].
    pub fn refresh(&mut self, now: Instant) -> CallId {
        self.call(now, CallKind::Refresh)
    }

    /// Asks for a logout (S44): the stored refresh token, then the access token, revoked
    /// when the provider has a revocation endpoint, and the stored tokens deleted whatever
    /// the revocations' outcomes. Calls made before it are answered first; calls made after
    /// it find nothing stored. Once asked for, the logout happens even if its call is
    /// cancelled or times out first. Answered with [`SessionAction::LoggedOut`].
    pub fn logout(&mut self, now: Instant) -> CallId {
        self.call(now, CallKind::Logout)
    }

    /// Answers `call` with [`SessionError::Cancelled`] now. The work it waited for goes on
    /// (a logout included). Unknown or answered calls are ignored.
    pub fn cancel(&mut self, now: Instant, call: CallId) {
        self.handle_timeout(now);
        self.drop_call(call, SessionError::Cancelled);
    }

    // ----- inputs -----

    /// The store read the tokens of [`SessionAction::Load`] `op`: `Ok(None)` when nothing is
    /// stored. `wall` is the current wall-clock time, against which expiry is judged.
    pub fn handle_loaded(
        &mut self,
        now: Instant,
        wall: SystemTime,
        op: StoreOpId,
        result: Result<Option<TokenSet>, StoreError>,
    ) {
        self.input(now, Event::Loaded(op, result, wall));
    }

    /// The store finished [`SessionAction::Save`] `op`. `wall`: as for
    /// [`handle_loaded`](Session::handle_loaded).
    pub fn handle_saved(
        &mut self,
        now: Instant,
        wall: SystemTime,
        op: StoreOpId,
        result: Result<(), StoreError>,
    ) {
        self.input(now, Event::Saved(op, result, wall));
    }

    /// The store answered [`SessionAction::Lock`] `op`: `Some(fence)` when the lock was
    /// taken, `None` when another process holds it.
    pub fn handle_locked(
        &mut self,
        now: Instant,
        op: StoreOpId,
        result: Result<Option<u64>, StoreError>,
    ) {
        self.input(now, Event::Locked(op, result));
    }

    /// The store finished [`SessionAction::SaveFenced`] `op`: `Ok(true)` when stored,
    /// `Ok(false)` when a newer lock holder (or a login) stored or deleted tokens first and
    /// nothing was written; those are read and handed out instead.
    pub fn handle_saved_fenced(
        &mut self,
        now: Instant,
        op: StoreOpId,
        result: Result<bool, StoreError>,
    ) {
        self.input(now, Event::SavedFenced(op, result));
    }

    /// The store finished [`SessionAction::DeleteFenced`] `op`: `Ok(true)` when deleted,
    /// `Ok(false)` when a newer lock holder (or a login) stored or deleted tokens first and
    /// nothing was deleted; those are read and handed out instead.
    pub fn handle_deleted_fenced(
        &mut self,
        now: Instant,
        op: StoreOpId,
        result: Result<bool, StoreError>,
    ) {
        self.input(now, Event::DeletedFenced(op, result));
    }

    /// The store finished [`SessionAction::Delete`] `op`; deleting what was not there
    /// succeeds.
    pub fn handle_deleted(&mut self, now: Instant, op: StoreOpId, result: Result<(), StoreError>) {
        self.input(now, Event::Deleted(op, result));
    }

    /// The answer to [`SessionAction::Send`] `id` arrived. `wall` is the current wall-clock
    /// time, the base of the new tokens' expiry.
    pub fn handle_response(
        &mut self,
        now: Instant,
        wall: SystemTime,
        id: RequestId,
        response: http::Response<Vec<u8>>,
    ) {
        if self.keys.owns(id.get()) {
            self.handle_timeout(now);
            if let Some(key_set) = self.keys.handle_response(now, wall, id.get(), &response) {
                self.keys_arrived(now, &key_set);
            }
            return;
        }
        self.handle_timeout(now);
        if let Some(nonce) = dpop::nonce_of(&response) {
            self.dpop_nonce = Some(nonce);
        }
        // S62: once per request, with the nonce the provider asked for.
        if let Some((purpose, retry)) = self.dpop_retries.remove(&id)
            && let Some(request) =
                dpop::asks_for_nonce(&response).and_then(|nonce| retry.with_nonce(&nonce))
        {
            trace_event!(request = id.get(), "the provider asked for a DPoP nonce");
            self.actions.push_back(SessionAction::Send {
                id,
                purpose,
                request,
            });
            return;
        }
        self.input(now, Event::Answered(id, Ok((response, wall))));
    }

    /// [`SessionAction::Send`] `id` could not be completed.
    pub fn handle_failure(&mut self, now: Instant, id: RequestId, error: TransportError) {
        if self.keys.owns(id.get()) {
            self.handle_timeout(now);
            if let Some(key_set) = self.keys.handle_failure(now, id.get(), error) {
                self.keys_arrived(now, &key_set);
            }
            return;
        }
        self.dpop_retries.remove(&id);
        self.input(now, Event::Answered(id, Err(error)));
    }

    /// The key sets the session holds, as a document for `import_key_sets` in another
    /// session or engine, process or replica (see [`crate::oidc`]).
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

    /// Time passed: every deadline at or before `now` fires, in order. Every other input
    /// does this first too.
    pub fn handle_timeout(&mut self, now: Instant) {
        for key_set in self.keys.handle_timeout(now) {
            self.keys_arrived(now, &key_set);
        }
        while let Some(&(at, timer)) = self.timers.first().filter(|(at, _)| *at <= now) {
            self.timers.remove(&(at, timer));
            match timer {
                Timer::Call(call) => self.drop_call(call, SessionError::TimedOut),
                Timer::Request(id) => {
                    self.dpop_retries.remove(&id);
                    let timed_out = TransportError::new(
                        TransportErrorKind::TimedOut,
                        format!("no answer within {:?}", self.options.request_timeout),
                    );
                    self.advance(at, Event::Answered(id, Err(timed_out)));
                }
                Timer::Retry => self.advance(at, Event::RetryDue),
            }
        }
    }

    // ----- outputs -----

    /// The next thing to do, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<SessionAction> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Session::handle_timeout) must be called next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|&(at, _)| at);
        timer.into_iter().chain(self.keys.poll_timeout()).min()
    }

    // ----- internals -----

    fn call(&mut self, now: Instant, kind: CallKind) -> CallId {
        self.handle_timeout(now);
        let id = CallId::issued(self.fresh_id());
        let deadline = now + self.options.call_timeout;
        self.timers.insert((deadline, Timer::Call(id)));
        let call = Call {
            id,
            kind,
            deadline,
            waiting: true,
        };
        trace_event!(call = id.get(), kind = ?kind, "session call");
        match &mut self.work {
            // Joins the tokens being loaded or refreshed, unless a logout waits before it.
            Work::Tokens { calls, .. } if kind != CallKind::Logout && self.queue.is_empty() => {
                calls.push(call);
            }
            _ => self.queue.push_back(call),
        }
        self.take_up_work(now);
        id
    }

    fn input(&mut self, now: Instant, event: Event) {
        self.handle_timeout(now);
        self.advance(now, event);
    }

    /// The one place the work changes step.
    fn advance(&mut self, now: Instant, event: Event) {
        let work = std::mem::replace(&mut self.work, Work::Idle);
        self.work = match work {
            Work::Idle => {
                self.unexpected(&event);
                Work::Idle
            }
            Work::Tokens { calls, step } => self.advance_tokens(now, calls, step, event),
            Work::Logout { call, report, step } => {
                self.advance_logout(now, call, report, step, event)
            }
        };
        self.release_lock();
        self.take_up_work(now);
    }

    /// Releases the refresh lock once the work that took it is over.
    fn release_lock(&mut self) {
        if matches!(self.work, Work::Tokens { .. }) {
            return;
        }
        self.stale = None;
        self.unlock();
    }

    /// Releases the refresh lock this session holds, if it holds one.
    fn unlock(&mut self) {
        if let Some(fence) = self.fence.take() {
            trace_event!(fence, "releasing the refresh lock");
            self.actions.push_back(SessionAction::Unlock { fence });
        }
    }

    fn advance_tokens(
        &mut self,
        now: Instant,
        calls: Vec<Call>,
        step: TokensStep,
        event: Event,
    ) -> Work {
        match (step, event) {
            (TokensStep::Loading(op), Event::Loaded(answered, result, wall)) if op == answered => {
                match result {
                    Ok(Some(tokens)) => self.decide(now, wall, calls, tokens),
                    Ok(None) => self.answer_all(calls, Err(SessionError::NotLoggedIn)),
                    Err(error) => self.answer_all(calls, Err(SessionError::Store(error))),
                }
            }
            (TokensStep::StoringKept(op, tokens), Event::Saved(answered, result, wall))
                if op == answered =>
            {
                match result {
                    Ok(()) => self.decide(now, wall, calls, tokens),
                    Err(error) => {
                        self.kept = Some(tokens);
                        self.answer_all(calls, Err(SessionError::Store(error)))
                    }
                }
            }
            (
                TokensStep::Refreshing {
                    id,
                    deadline,
                    refresh,
                },
                Event::Answered(answered, outcome),
            ) if id == answered => {
                self.timers.remove(&(deadline, Timer::Request(id)));
                let (response, wall) = match outcome {
                    Ok(received) => received,
                    Err(error) => {
                        trace_event!(request = id.get(), %error, "refresh request failed");
                        return self.answer_all(calls, Err(SessionError::Transport(error)));
                    }
                };
                match refresh.handle_response(wall, &response) {
                    Ok(fresh) => {
                        let previous = refresh.previous().clone();
                        self.check_refreshed(now, wall, calls, previous, fresh, true)
                    }
                    Err(error @ RefreshError::LoginRequired(_)) => {
                        trace_event!(%error, "refresh token refused; deleting the tokens");
                        self.delete_dead(calls, error)
                    }
                    Err(error) => self.answer_all(calls, Err(SessionError::Refresh(error))),
                }
            }
            (TokensStep::StoringFresh(op, fresh), Event::Saved(answered, result, _))
                if op == answered =>
            {
                match result {
                    // Everyone waiting asked before these tokens existed: they serve them
                    // all, however short they live.
                    Ok(()) => self.answer_all(calls, Ok(fresh)),
                    Err(error) => {
                        trace_event!(%error, "store refused refreshed tokens; keeping them");
                        self.kept = Some(fresh);
                        self.answer_all(calls, Err(SessionError::Store(error)))
                    }
                }
            }
            (TokensStep::Locking(op), Event::Locked(answered, result)) if op == answered => {
                match result {
                    // Taken: read the tokens again under it, another process may have
                    // refreshed them just before.
                    Ok(Some(fence)) => {
                        trace_event!(fence, "refresh lock taken");
                        self.fence = Some(fence);
                        self.load(calls)
                    }
                    Ok(None) => {
                        trace_event!("refresh lock held elsewhere; waiting");
                        let at = now + self.options.lock_retry;
                        self.timers.insert((at, Timer::Retry));
                        Work::Tokens {
                            calls,
                            step: TokensStep::Backoff,
                        }
                    }
                    // No refresh without the lock (S58).
                    Err(error) => self.answer_all(calls, Err(SessionError::Store(error))),
                }
            }
            (TokensStep::Backoff, Event::RetryDue) => self.load(calls),
            (TokensStep::StoringFresh(op, fresh), Event::SavedFenced(answered, result))
                if op == answered =>
            {
                match result {
                    Ok(true) => self.answer_all(calls, Ok(fresh)),
                    // A newer holder or a login stored tokens after the lock was lost:
                    // those are the live ones.
                    Ok(false) => {
                        trace_event!("refresh lock lost before the save; reading the store");
                        // Still held when a login, not a newer holder, got there first.
                        self.unlock();
                        self.stale = None;
                        self.load(calls)
                    }
                    Err(error) => {
                        trace_event!(%error, "store refused refreshed tokens; keeping them");
                        self.kept = Some(fresh);
                        self.answer_all(calls, Err(SessionError::Store(error)))
                    }
                }
            }
            (TokensStep::DeletingDead(op, refused), Event::DeletedFenced(answered, result))
                if op == answered =>
            {
                match result {
                    Ok(true) => self.answer_all(calls, Err(SessionError::Refresh(refused))),
                    // The refresh token was refused because another replica had rotated
                    // it after this one's lease ran out: its tokens are the live ones.
                    Ok(false) => {
                        trace_event!("newer tokens were stored; reading them");
                        self.unlock();
                        self.stale = None;
                        self.load(calls)
                    }
                    Err(error) => self.answer_all(calls, Err(SessionError::Store(error))),
                }
            }
            (TokensStep::DeletingDead(op, refused), Event::Deleted(answered, result))
                if op == answered =>
            {
                let error = match result {
                    Ok(()) => SessionError::Refresh(refused),
                    Err(error) => SessionError::Store(error),
                };
                self.answer_all(calls, Err(error))
            }
            (step, event) => {
                self.unexpected(&event);
                Work::Tokens { calls, step }
            }
        }
    }

    /// Refreshed tokens, `fresh`, replacing `previous`: their ID token verified when it is
    /// new and the provider verifies ID tokens, then stored. `fetching`: whether the check
    /// may ask for the key set (not when it is repeated after a fetch).
    fn check_refreshed(
        &mut self,
        now: Instant,
        wall: SystemTime,
        calls: Vec<Call>,
        previous: TokenSet,
        fresh: TokenSet,
        fetching: bool,
    ) -> Work {
        let provider = self.provider.clone();
        let new_id_token = fresh
            .id_token()
            .filter(|token| {
                let old = previous.id_token().map(ExposeSecret::expose_secret);
                old != Some(token.expose_secret())
            })
            .map(ExposeSecret::expose_secret);
        let Some(id_token) = new_id_token else {
            // No ID token, or the login's own repeated: the identity verified with it stays
            // (`carry_over` keeps it only when the response has no ID token at all).
            let fresh = fresh.with_id_token_of(&previous);
            return self.save_fresh(calls, &previous, fresh);
        };
        let Some(policy) = provider.id_token_policy() else {
            return self.save_fresh(calls, &previous, fresh);
        };
        let expected = Expected {
            nonce: None,
            access_token: Some(fresh.access_token().expose_secret()),
            previous: previous.identity(),
        };
        let (lookup, fetch) = self.keys.check(
            now,
            wall,
            policy,
            id_token,
            &expected,
            fetching,
            self.options.request_timeout,
            &mut self.next_id,
        );
        if let Some((id, request)) = fetch {
            trace_event!(request = id, "fetching the key set");
            self.actions.push_back(SessionAction::Send {
                id: RequestId::issued(id),
                purpose: Purpose::KeySet,
                request: ProviderRequest::complete(request),
            });
        }
        match lookup {
            Lookup::Done(Ok(identity)) => {
                let fresh = fresh.with_identity(Some(identity));
                self.save_fresh(calls, &previous, fresh)
            }
            // The key set is out of reach: the login's identity still stands.
            Lookup::Done(Err(IdTokenError::KeySet(_))) => {
                let fresh = fresh.with_id_token_of(&previous);
                self.save_fresh(calls, &previous, fresh)
            }
            Lookup::Done(Err(error)) => {
                trace_event!(%error, "refreshed ID token refused; deleting the tokens");
                self.delete_dead(calls, RefreshError::IdToken(error))
            }
            Lookup::Wait(key_set) => Work::Tokens {
                calls,
                step: TokensStep::VerifyingFresh {
                    previous,
                    fresh,
                    received: wall,
                    key_set,
                },
            },
        }
    }

    /// Stores refreshed tokens; the calls get them once the store confirmed.
    fn save_fresh(&mut self, calls: Vec<Call>, previous: &TokenSet, fresh: TokenSet) -> Work {
        let rotated = !fresh.same_refresh_token(previous);
        trace_event!(rotated, "tokens refreshed; storing them");
        let op = self.store_op();
        let reason = SaveReason::Refreshed { rotated };
        let tokens = fresh.clone();
        self.actions.push_back(match self.fence {
            Some(fence) => SessionAction::SaveFenced {
                op,
                tokens,
                reason,
                fence,
            },
            None => SessionAction::Save { op, tokens, reason },
        });
        Work::Tokens {
            calls,
            step: TokensStep::StoringFresh(op, fresh),
        }
    }

    /// Reads the stored tokens again for `calls`.
    fn load(&mut self, calls: Vec<Call>) -> Work {
        let op = self.store_op();
        self.actions.push_back(SessionAction::Load { op });
        Work::Tokens {
            calls,
            step: TokensStep::Loading(op),
        }
    }

    /// Deletes tokens that can no longer be refreshed; the calls then learn why.
    fn delete_dead(&mut self, calls: Vec<Call>, error: RefreshError) -> Work {
        let op = self.store_op();
        let reason = DeleteReason::LoginRequired;
        // Under the lock, only if nobody stored newer tokens since it was taken (S57).
        self.actions.push_back(match self.fence {
            Some(fence) => SessionAction::DeleteFenced { op, reason, fence },
            None => SessionAction::Delete { op, reason },
        });
        Work::Tokens {
            calls,
            step: TokensStep::DeletingDead(op, error),
        }
    }

    /// A fetch of `key_set` ended: a refreshed ID token waiting for it is checked again.
    fn keys_arrived(&mut self, now: Instant, key_set: &str) {
        let waits = matches!(
            &self.work,
            Work::Tokens { step: TokensStep::VerifyingFresh { key_set: waits_for, .. }, .. }
                if waits_for == key_set
        );
        if !waits {
            return;
        }
        let Work::Tokens {
            calls,
            step:
                TokensStep::VerifyingFresh {
                    previous,
                    fresh,
                    received,
                    ..
                },
        } = std::mem::replace(&mut self.work, Work::Idle)
        else {
            return;
        };
        self.work = self.check_refreshed(now, received, calls, previous, fresh, false);
        self.release_lock();
        self.take_up_work(now);
    }

    /// Loaded (or just stored) `tokens`: hand them out, or refresh them first.
    fn decide(
        &mut self,
        now: Instant,
        wall: SystemTime,
        calls: Vec<Call>,
        tokens: TokenSet,
    ) -> Work {
        let forced = calls.iter().any(|call| call.kind == CallKind::Refresh);
        if !forced && !tokens.expires_within(wall, self.options.margin) {
            trace_event!(calls = calls.len(), "stored tokens are valid");
            return self.answer_all(calls, Ok(tokens));
        }
        // Refreshed by another process while this one waited for the lock: they serve a
        // forced refresh too.
        let refreshed_elsewhere = self.stale.as_ref().is_some_and(|stale| {
            stale.access_token().expose_secret() != tokens.access_token().expose_secret()
        });
        if refreshed_elsewhere {
            trace_event!("tokens refreshed by another process");
            return self.answer_all(calls, Ok(tokens));
        }
        // A lease that may have ended while the tokens were read under it keeps nobody
        // away any more: no refresh under it, the lock is taken again (S57).
        if self.fence.is_some() && self.lease_end.is_some_and(|end| now >= end) {
            trace_event!("the refresh lock's lease may have ended; taking it again");
            self.unlock();
        }
        if self.options.shared_refresh && self.fence.is_none() && tokens.refresh_token().is_some() {
            self.stale = Some(tokens);
            self.lease_end = Some(now + self.options.lock_lease);
            let op = self.store_op();
            self.actions.push_back(SessionAction::Lock {
                op,
                lease: self.options.lock_lease,
            });
            return Work::Tokens {
                calls,
                step: TokensStep::Locking(op),
            };
        }
        match Refresh::new(&self.provider, &tokens) {
            Ok(refresh) => {
                let id = RequestId::issued(self.fresh_id());
                let deadline = now + self.options.request_timeout;
                self.timers.insert((deadline, Timer::Request(id)));
                trace_event!(request = id.get(), forced, "refreshing the tokens");
                self.send(id, Purpose::Refresh, refresh.request());
                Work::Tokens {
                    calls,
                    step: TokensStep::Refreshing {
                        id,
                        deadline,
                        refresh: Box::new(refresh),
                    },
                }
            }
            // Nothing to refresh with: the tokens serve plain `tokens` calls until they
            // actually expire.
            Err(error) => {
                let still_valid = !tokens.expires_within(wall, Duration::ZERO);
                for call in calls {
                    let result = match call.kind {
                        CallKind::Tokens if still_valid => Ok(tokens.clone()),
                        _ => Err(SessionError::Refresh(error.clone())),
                    };
                    self.answer(call, result);
                }
                Work::Idle
            }
        }
    }

    fn advance_logout(
        &mut self,
        now: Instant,
        call: Option<Call>,
        mut report: LogoutReport,
        step: LogoutStep,
        event: Event,
    ) -> Work {
        let step = match (step, event) {
            (LogoutStep::Loading(op), Event::Loaded(answered, result, _)) if op == answered => {
                match result {
                    Ok(Some(tokens)) => self.revoke(now, &mut report, &tokens),
                    Ok(None) => self.delete_for_logout(),
                    Err(error) => {
                        report.not_revoked = Some(NotRevoked::Unreadable(error));
                        self.delete_for_logout()
                    }
                }
            }
            (
                LogoutStep::Revoking {
                    id,
                    deadline,
                    current,
                    mut next,
                },
                Event::Answered(answered, outcome),
            ) if id == answered => {
                self.timers.remove(&(deadline, Timer::Request(id)));
                let outcome = match outcome {
                    Ok((response, _)) => current.handle_response(&response),
                    Err(error) => Err(RevocationError::Transport(error)),
                };
                trace_event!(
                    token = current.kind().hint(),
                    ok = outcome.is_ok(),
                    "revocation answered"
                );
                report.revocations.push((current.kind(), outcome));
                match next.pop_front() {
                    Some(revocation) => self.send_revocation(now, revocation, next),
                    None => self.delete_for_logout(),
                }
            }
            (LogoutStep::Deleting(op), Event::Deleted(answered, result)) if op == answered => {
                trace_event!(ok = result.is_ok(), "logged out");
                if let Some(call) = call {
                    let result = result.map(|()| report).map_err(SessionError::Store);
                    self.reply(
                        &call,
                        SessionAction::LoggedOut {
                            call: call.id,
                            result,
                        },
                    );
                }
                return Work::Idle;
            }
            (step, event) => {
                self.unexpected(&event);
                step
            }
        };
        Work::Logout { call, report, step }
    }

    /// Starts revoking `tokens`, or goes straight to deleting them.
    fn revoke(&mut self, now: Instant, report: &mut LogoutReport, tokens: &TokenSet) -> LogoutStep {
        report.had_tokens = true;
        match Revocation::for_tokens(&self.provider, tokens) {
            Ok(revocations) => {
                let mut next: VecDeque<Revocation> = revocations.into();
                match next.pop_front() {
                    Some(first) => self.send_revocation(now, first, next),
                    None => self.delete_for_logout(),
                }
            }
            Err(_) => {
                report.not_revoked = Some(NotRevoked::NoEndpoint);
                self.delete_for_logout()
            }
        }
    }

    fn send_revocation(
        &mut self,
        now: Instant,
        revocation: Revocation,
        next: VecDeque<Revocation>,
    ) -> LogoutStep {
        let id = RequestId::issued(self.fresh_id());
        let deadline = now + self.options.request_timeout;
        self.timers.insert((deadline, Timer::Request(id)));
        self.send(id, Purpose::Revoke(revocation.kind()), revocation.request());
        LogoutStep::Revoking {
            id,
            deadline,
            current: Box::new(revocation),
            next,
        }
    }

    /// Asks the driver to send `request`; a DPoP request gets the provider's latest nonce
    /// and is kept for one retry with a new one (S62).
    fn send(&mut self, id: RequestId, purpose: Purpose, request: ProviderRequest) {
        let request = match &self.dpop_nonce {
            Some(nonce) => request.with_nonce(nonce).unwrap_or(request),
            None => request,
        };
        if request.has_dpop() {
            self.dpop_retries.insert(id, (purpose, request.clone()));
        }
        self.actions.push_back(SessionAction::Send {
            id,
            purpose,
            request,
        });
    }

    fn delete_for_logout(&mut self) -> LogoutStep {
        let op = self.store_op();
        self.actions.push_back(SessionAction::Delete {
            op,
            reason: DeleteReason::Logout,
        });
        LogoutStep::Deleting(op)
    }

    /// Starts the next piece of work when there is none.
    fn take_up_work(&mut self, now: Instant) {
        if !matches!(self.work, Work::Idle) {
            return;
        }
        let Some(first) = self.queue.pop_front() else {
            return;
        };
        self.work = if first.kind == CallKind::Logout {
            let mut report = LogoutReport::default();
            // Tokens a failed save left are the live ones: revoke those.
            let step = match self.kept.take() {
                Some(kept) => self.revoke(now, &mut report, &kept),
                None => {
                    let op = self.store_op();
                    self.actions.push_back(SessionAction::Load { op });
                    LogoutStep::Loading(op)
                }
            };
            Work::Logout {
                call: first.waiting.then_some(first),
                report,
                step,
            }
        } else {
            let mut calls = vec![first];
            while let Some(next) = self.queue.front() {
                if next.kind == CallKind::Logout {
                    break;
                }
                calls.extend(self.queue.pop_front());
            }
            let op = self.store_op();
            let step = match self.kept.take() {
                Some(kept) => {
                    self.actions.push_back(SessionAction::Save {
                        op,
                        tokens: kept.clone(),
                        reason: SaveReason::Kept,
                    });
                    TokensStep::StoringKept(op, kept)
                }
                None => {
                    self.actions.push_back(SessionAction::Load { op });
                    TokensStep::Loading(op)
                }
            };
            Work::Tokens { calls, step }
        };
    }

    /// Answers every call with `result`; the work is done.
    fn answer_all(&mut self, calls: Vec<Call>, result: Result<TokenSet, SessionError>) -> Work {
        for call in calls {
            self.answer(call, result.clone());
        }
        Work::Idle
    }

    fn answer(&mut self, call: Call, result: Result<TokenSet, SessionError>) {
        self.reply(
            &call,
            SessionAction::Tokens {
                call: call.id,
                result,
            },
        );
    }

    /// Emits `answer`, the last action that names `call`, and forgets its deadline.
    fn reply(&mut self, call: &Call, answer: SessionAction) {
        self.timers.remove(&(call.deadline, Timer::Call(call.id)));
        self.actions.push_back(answer);
    }

    /// Takes `call` out of wherever it waits and answers it with `error`. A logout not
    /// started yet stays queued without its caller: asked for once, it happens.
    fn drop_call(&mut self, id: CallId, error: SessionError) {
        let queued = self
            .queue
            .iter()
            .position(|call| call.id == id && call.waiting);
        let taken = if let Some(at) = queued {
            match self.queue.get_mut(at) {
                Some(call) if call.kind == CallKind::Logout => {
                    call.waiting = false;
                    Some(call.clone())
                }
                _ => self.queue.remove(at),
            }
        } else {
            match &mut self.work {
                Work::Tokens { calls, .. } => calls
                    .iter()
                    .position(|call| call.id == id)
                    .map(|at| calls.remove(at)),
                Work::Logout { call, .. } if call.as_ref().is_some_and(|c| c.id == id) => {
                    call.take()
                }
                _ => None,
            }
        };
        let Some(call) = taken else {
            self.debug_assert_issued(id.get());
            return;
        };
        trace_event!(call = id.get(), %error, "session call ended unanswered");
        let answer = match call.kind {
            CallKind::Logout => SessionAction::LoggedOut {
                call: id,
                result: Err(error),
            },
            CallKind::Tokens | CallKind::Refresh => SessionAction::Tokens {
                call: id,
                result: Err(error),
            },
        };
        self.reply(&call, answer);
    }

    /// An answer the work does not wait for: late (its deadline passed) or misuse.
    fn unexpected(&self, event: &Event) {
        let id = match event {
            Event::Loaded(op, ..)
            | Event::Saved(op, ..)
            | Event::Deleted(op, _)
            | Event::Locked(op, _)
            | Event::SavedFenced(op, _)
            | Event::DeletedFenced(op, _) => op.get(),
            Event::Answered(id, _) => id.get(),
            // A back-off's timer always finds its work.
            Event::RetryDue => return,
        };
        self.debug_assert_issued(id);
    }

    fn store_op(&mut self) -> StoreOpId {
        StoreOpId::issued(self.fresh_id())
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn debug_assert_issued(&self, id: u64) {
        debug_assert!(
            id < self.next_id,
            "id {id} was never issued by this session"
        );
    }
}

#[cfg(test)]
// A test's virtual clock has to start somewhere.
#[allow(clippy::disallowed_methods)]
mod tests {
    use std::time::UNIX_EPOCH;

    use secrecy::{ExposeSecret, SecretString};

    use super::*;
    use crate::revoke::tests::provider;

    const ALIVE: &str = r#"{"access_token":"access-2","token_type":"Bearer","expires_in":3600,"refresh_token":"refresh-2"}"#;

    /// A session at a fixed instant and wall-clock time, with what it asked for collected.
    struct Bench {
        session: Session,
        now: Instant,
        wall: SystemTime,
    }

    impl Bench {
        fn new() -> Bench {
            Bench::with(provider(true), SessionOptions::default())
        }

        fn with(provider: Provider, options: SessionOptions) -> Bench {
            Bench {
                session: Session::with_options(provider, options).expect("valid options"),
                now: Instant::now(),
                wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            }
        }

        fn drain(&mut self) -> Vec<SessionAction> {
            std::iter::from_fn(|| self.session.poll_action()).collect()
        }

        /// Tokens expiring `seconds` from now.
        fn tokens(&self, access: &str, refresh: Option<&str>, seconds: u64) -> TokenSet {
            let tokens = TokenSet::new(SecretString::from(access))
                .with_expires_at(self.wall + Duration::from_secs(seconds));
            match refresh {
                Some(refresh) => tokens.with_refresh_token(SecretString::from(refresh)),
                None => tokens,
            }
        }

        fn loaded(&mut self, op: StoreOpId, tokens: Option<TokenSet>) -> Vec<SessionAction> {
            self.session
                .handle_loaded(self.now, self.wall, op, Ok(tokens));
            self.drain()
        }

        fn saved(&mut self, op: StoreOpId, result: Result<(), StoreError>) -> Vec<SessionAction> {
            self.session.handle_saved(self.now, self.wall, op, result);
            self.drain()
        }

        fn deleted(&mut self, op: StoreOpId, result: Result<(), StoreError>) -> Vec<SessionAction> {
            self.session.handle_deleted(self.now, op, result);
            self.drain()
        }

        fn answer(&mut self, id: RequestId, status: u16, body: &str) -> Vec<SessionAction> {
            let response = http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(body.as_bytes().to_vec())
                .expect("a valid response");
            self.session
                .handle_response(self.now, self.wall, id, response);
            self.drain()
        }
    }

    fn load_op(actions: &[SessionAction]) -> StoreOpId {
        match actions {
            [SessionAction::Load { op }] => *op,
            other => panic!("expected one Load, got {other:?}"),
        }
    }

    fn sent(actions: &[SessionAction]) -> (RequestId, Purpose, String) {
        match actions {
            [
                SessionAction::Send {
                    id,
                    purpose,
                    request,
                },
            ] => (
                *id,
                *purpose,
                String::from_utf8(request.request().body().clone()).expect("a form body"),
            ),
            other => panic!("expected one Send, got {other:?}"),
        }
    }

    fn save(actions: &[SessionAction]) -> (StoreOpId, TokenSet, SaveReason) {
        match actions {
            [SessionAction::Save { op, tokens, reason }] => (*op, tokens.clone(), *reason),
            other => panic!("expected one Save, got {other:?}"),
        }
    }

    fn delete(actions: &[SessionAction]) -> (StoreOpId, DeleteReason) {
        match actions {
            [SessionAction::Delete { op, reason }] => (*op, *reason),
            other => panic!("expected one Delete, got {other:?}"),
        }
    }

    /// The answers among `actions`: each call's access token, or its error.
    fn answers(actions: &[SessionAction]) -> Vec<(CallId, Result<String, SessionError>)> {
        actions
            .iter()
            .map(|action| match action {
                SessionAction::Tokens { call, result } => (
                    *call,
                    result
                        .as_ref()
                        .map(|tokens| tokens.access_token().expose_secret().to_owned())
                        .map_err(Clone::clone),
                ),
                other => panic!("expected answers only, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn valid_tokens_are_handed_out_as_stored() {
        let mut b = Bench::new();
        let call = b.session.tokens(b.now);
        let op = load_op(&b.drain());
        assert_eq!(b.session.calls_waiting(), 1);
        let stored = b.tokens("access-1", Some("refresh-1"), 3600);
        let actions = b.loaded(op, Some(stored));
        assert_eq!(answers(&actions), [(call, Ok("access-1".to_owned()))]);
        assert!(b.session.is_idle());
        assert_eq!(b.session.poll_timeout(), None, "no deadline left");
    }

    #[test]
    fn nothing_stored_means_not_logged_in() {
        let mut b = Bench::new();
        let call = b.session.tokens(b.now);
        let op = load_op(&b.drain());
        let actions = b.loaded(op, None);
        assert_eq!(answers(&actions), [(call, Err(SessionError::NotLoggedIn))]);
        assert!(SessionError::NotLoggedIn.login_required());
    }

    #[test]
    fn s42_s33_expiring_tokens_are_refreshed_stored_and_only_then_handed_out() {
        let mut b = Bench::new();
        let call = b.session.tokens(b.now);
        let op = load_op(&b.drain());
        let actions = b.loaded(op, Some(b.tokens("access-1", Some("refresh-1"), 59)));
        let (id, purpose, body) = sent(&actions);
        assert_eq!(purpose, Purpose::Refresh);
        assert_eq!(
            body,
            "grant_type=refresh_token&refresh_token=refresh-1&client_id=cli&client_secret=s3cr3t"
        );
        let actions = b.answer(id, 200, ALIVE);
        let (op, fresh, reason) = save(&actions);
        assert_eq!(reason, SaveReason::Refreshed { rotated: true });
        assert_eq!(fresh.access_token().expose_secret(), "access-2");
        assert_eq!(
            fresh.expires_at(),
            Some(b.wall + Duration::from_secs(3600)),
            "expiry from the wall-clock time of the answer"
        );
        let actions = b.saved(op, Ok(()));
        assert_eq!(answers(&actions), [(call, Ok("access-2".to_owned()))]);
    }

    #[test]
    fn one_refresh_serves_every_caller_waiting_and_every_caller_joining() {
        let mut b = Bench::new();
        let early: Vec<CallId> = (0..3).map(|_| b.session.tokens(b.now)).collect();
        let op = load_op(&b.drain());
        let actions = b.loaded(op, Some(b.tokens("access-1", Some("refresh-1"), 10)));
        let (id, ..) = sent(&actions);
        let during: Vec<CallId> = (0..3).map(|_| b.session.tokens(b.now)).collect();
        let forced = b.session.refresh(b.now);
        assert!(
            b.drain().is_empty(),
            "no second request while one is in flight"
        );
        let (op, ..) = save(&b.answer(id, 200, ALIVE));
        let late = b.session.tokens(b.now);
        assert!(b.drain().is_empty());
        let actions = b.saved(op, Ok(()));
        let answered: Vec<CallId> = answers(&actions)
            .into_iter()
            .map(|(call, _)| call)
            .collect();
        let mut expected = early;
        expected.extend(during);
        expected.extend([forced, late]);
        assert_eq!(answered, expected);
        assert!(
            answers(&actions)
                .iter()
                .all(|(_, r)| r.as_deref() == Ok("access-2"))
        );
    }

    #[test]
    fn tokens_refreshed_after_a_call_serve_it_even_when_they_live_shorter_than_the_margin() {
        let mut b = Bench::new();
        let calls: Vec<CallId> = (0..5).map(|_| b.session.tokens(b.now)).collect();
        let op = load_op(&b.drain());
        let (id, ..) = sent(&b.loaded(op, Some(b.tokens("access-1", Some("refresh-1"), 5))));
        let short = r#"{"access_token":"access-2","token_type":"Bearer","expires_in":30}"#;
        let (op, ..) = save(&b.answer(id, 200, short));
        let actions = b.saved(op, Ok(()));
        assert_eq!(
            answers(&actions).len(),
            calls.len(),
            "every waiting caller served"
        );
        // A call made afterwards finds them inside the margin and refreshes.
        b.session.tokens(b.now);
        let op = load_op(&b.drain());
        let stored = b.tokens("access-2", Some("refresh-1"), 30);
        let (_, purpose, _) = sent(&b.loaded(op, Some(stored)));
        assert_eq!(purpose, Purpose::Refresh);
    }

    #[test]
    fn s42_refreshed_tokens_the_store_refuses_are_kept_and_stored_first_next_time() {
        let mut b = Bench::new();
        let first = b.session.tokens(b.now);
        let op = load_op(&b.drain());
        let (id, ..) = sent(&b.loaded(op, Some(b.tokens("access-1", Some("refresh-1"), 0))));
        let (op, ..) = save(&b.answer(id, 200, ALIVE));
        let full = StoreError::new("disk full");
        let actions = b.saved(op, Err(full.clone()));
        assert_eq!(
            answers(&actions),
            [(first, Err(SessionError::Store(full.clone())))]
        );
        assert!(b.session.holds_unsaved_tokens());

        // Next call: the kept set is stored before anything is read; the store refuses again.
        let second = b.session.tokens(b.now);
        let (op, kept, reason) = save(&b.drain());
        assert_eq!(reason, SaveReason::Kept);
        assert_eq!(
            kept.refresh_token()
                .map(|t| t.expose_secret().to_owned())
                .as_deref(),
            Some("refresh-2")
        );
        let actions = b.saved(op, Err(full.clone()));
        assert_eq!(
            answers(&actions),
            [(second, Err(SessionError::Store(full)))]
        );

        // And again: stored now, and valid, so handed out without a second refresh.
        let third = b.session.tokens(b.now);
        let (op, _, reason) = save(&b.drain());
        assert_eq!(reason, SaveReason::Kept);
        let actions = b.saved(op, Ok(()));
        assert_eq!(answers(&actions), [(third, Ok("access-2".to_owned()))]);
        assert!(!b.session.holds_unsaved_tokens());
    }

    #[test]
    fn s42_a_refused_refresh_token_deletes_the_tokens_and_means_login_required() {
        for (status, body) in [
            (400, r#"{"error":"invalid_grant"}"#),
            (200, r#"{"error":"bad_refresh_token"}"#),
        ] {
            let mut b = Bench::new();
            let call = b.session.refresh(b.now);
            let op = load_op(&b.drain());
            let (id, ..) = sent(&b.loaded(op, Some(b.tokens("access-1", Some("refresh-1"), 3600))));
            let (op, reason) = delete(&b.answer(id, status, body));
            assert_eq!(reason, DeleteReason::LoginRequired);
            let actions = b.deleted(op, Ok(()));
            let [(answered, Err(error))] = &answers(&actions)[..] else {
                panic!("{actions:?}");
            };
            assert_eq!(*answered, call);
            assert!(error.login_required(), "{error}");
        }
    }

    #[test]
    fn other_refusals_and_failures_keep_the_stored_tokens() {
        let mut b = Bench::new();
        b.session.tokens(b.now);
        let op = load_op(&b.drain());
        let (id, ..) = sent(&b.loaded(op, Some(b.tokens("access-1", Some("refresh-1"), 0))));
        let actions = b.answer(id, 401, r#"{"error":"invalid_client"}"#);
        let [(_, Err(SessionError::Refresh(RefreshError::Rejected { status: 401, .. })))] =
            &answers(&actions)[..]
        else {
            panic!("{actions:?}");
        };

        b.session.tokens(b.now);
        let op = load_op(&b.drain());
        let (id, ..) = sent(&b.loaded(op, Some(b.tokens("access-1", Some("refresh-1"), 0))));
        let refused = TransportError::new(TransportErrorKind::Connect, "refused");
        b.session.handle_failure(b.now, id, refused.clone());
        let actions = b.drain();
        assert_eq!(
            answers(&actions)[0].1,
            Err(SessionError::Transport(refused))
        );
    }

    #[test]
    fn a_request_past_its_deadline_fails_and_its_late_answer_is_ignored() {
        let mut b = Bench::new();
        b.session.tokens(b.now);
        let op = load_op(&b.drain());
        let (id, ..) = sent(&b.loaded(op, Some(b.tokens("access-1", Some("refresh-1"), 0))));
        let deadline = b.now + Duration::from_secs(30);
        assert_eq!(b.session.poll_timeout(), Some(deadline));
        b.session.handle_timeout(deadline);
        let actions = b.drain();
        let [(_, Err(SessionError::Transport(error)))] = &answers(&actions)[..] else {
            panic!("{actions:?}");
        };
        assert_eq!(error.kind(), TransportErrorKind::TimedOut);
        b.now = deadline + Duration::from_secs(1);
        assert!(b.answer(id, 200, ALIVE).is_empty(), "too late");
        assert!(b.session.is_idle());
    }

    #[test]
    fn a_caller_that_times_out_is_answered_and_the_refresh_is_still_stored() {
        let options = SessionOptions {
            call_timeout: Duration::from_secs(5),
            ..SessionOptions::default()
        };
        let mut b = Bench::with(provider(true), options);
        let call = b.session.tokens(b.now);
        let op = load_op(&b.drain());
        let (id, ..) = sent(&b.loaded(op, Some(b.tokens("access-1", Some("refresh-1"), 0))));
        b.now += Duration::from_secs(5);
        b.session.handle_timeout(b.now);
        assert_eq!(answers(&b.drain()), [(call, Err(SessionError::TimedOut))]);
        let (op, fresh, _) = save(&b.answer(id, 200, ALIVE));
        assert_eq!(fresh.access_token().expose_secret(), "access-2");
        assert!(b.saved(op, Ok(())).is_empty(), "nobody left to answer");
        assert!(b.session.is_idle());
    }

    #[test]
    fn a_cancelled_call_is_answered_at_once() {
        let mut b = Bench::new();
        let call = b.session.tokens(b.now);
        let op = load_op(&b.drain());
        b.session.cancel(b.now, call);
        assert_eq!(answers(&b.drain()), [(call, Err(SessionError::Cancelled))]);
        b.session.cancel(b.now, call);
        assert!(b.drain().is_empty(), "answered once");
        assert!(b.loaded(op, None).is_empty());
    }

    #[test]
    fn without_a_refresh_token_tokens_serve_until_they_expire() {
        let mut b = Bench::new();
        let plain = b.session.tokens(b.now);
        let forced = b.session.refresh(b.now);
        let op = load_op(&b.drain());
        let actions = b.loaded(op, Some(b.tokens("access-1", None, 30)));
        assert_eq!(
            answers(&actions),
            [
                (plain, Ok("access-1".to_owned())),
                (
                    forced,
                    Err(SessionError::Refresh(RefreshError::NoRefreshToken))
                )
            ]
        );
        let expired = b.session.tokens(b.now);
        let op = load_op(&b.drain());
        let actions = b.loaded(op, Some(b.tokens("access-1", None, 0)));
        assert_eq!(
            answers(&actions),
            [(
                expired,
                Err(SessionError::Refresh(RefreshError::NoRefreshToken))
            )]
        );
    }

    #[test]
    fn s44_logout_revokes_the_refresh_token_then_the_access_token_then_deletes() {
        let mut b = Bench::new();
        let call = b.session.logout(b.now);
        let op = load_op(&b.drain());
        let (id, purpose, body) =
            sent(&b.loaded(op, Some(b.tokens("access-1", Some("refresh-1"), 3600))));
        assert_eq!(purpose, Purpose::Revoke(TokenKind::RefreshToken));
        assert_eq!(
            body,
            "token=refresh-1&token_type_hint=refresh_token&client_id=cli&client_secret=s3cr3t"
        );
        let (id2, purpose, body) = sent(&b.answer(id, 200, ""));
        assert_eq!(purpose, Purpose::Revoke(TokenKind::AccessToken));
        assert_eq!(
            body,
            "token=access-1&token_type_hint=access_token&client_id=cli&client_secret=s3cr3t"
        );
        let (op, reason) = delete(&b.answer(id2, 503, ""));
        assert_eq!(reason, DeleteReason::Logout);
        let actions = b.deleted(op, Ok(()));
        let [
            SessionAction::LoggedOut {
                call: answered,
                result: Ok(report),
            },
        ] = &actions[..]
        else {
            panic!("{actions:?}");
        };
        assert_eq!(*answered, call);
        assert!(report.had_tokens);
        assert_eq!(
            report.revocations,
            [
                (TokenKind::RefreshToken, Ok(())),
                (TokenKind::AccessToken, Err(RevocationError::Unavailable))
            ]
        );
        assert!(!report.fully_revoked());
    }

    #[test]
    fn s44_logout_deletes_whatever_happens() {
        // No revocation endpoint.
        let mut b = Bench::with(provider(false), SessionOptions::default());
        b.session.logout(b.now);
        let op = load_op(&b.drain());
        let (op, _) = delete(&b.loaded(op, Some(b.tokens("access-1", None, 3600))));
        let [
            SessionAction::LoggedOut {
                result: Ok(report), ..
            },
        ] = &b.deleted(op, Ok(()))[..]
        else {
            panic!()
        };
        assert_eq!(report.not_revoked, Some(NotRevoked::NoEndpoint));

        // Unreadable tokens: deleted all the same, and said so.
        let mut b = Bench::new();
        b.session.logout(b.now);
        let op = load_op(&b.drain());
        b.session
            .handle_loaded(b.now, b.wall, op, Err(StoreError::new("corrupt")));
        let (op, _) = delete(&b.drain());
        let [
            SessionAction::LoggedOut {
                result: Ok(report), ..
            },
        ] = &b.deleted(op, Ok(()))[..]
        else {
            panic!()
        };
        assert_eq!(
            report.not_revoked,
            Some(NotRevoked::Unreadable(StoreError::new("corrupt")))
        );

        // Nothing stored: still a deletion, and a report of nothing.
        b.session.logout(b.now);
        let op = load_op(&b.drain());
        let (op, _) = delete(&b.loaded(op, None));
        let [
            SessionAction::LoggedOut {
                result: Ok(report), ..
            },
        ] = &b.deleted(op, Ok(()))[..]
        else {
            panic!()
        };
        assert_eq!(*report, LogoutReport::default());

        // A store that cannot delete is the one failure a logout reports.
        b.session.logout(b.now);
        let op = load_op(&b.drain());
        let (op, _) = delete(&b.loaded(op, None));
        let actions = b.deleted(op, Err(StoreError::new("read-only")));
        let [
            SessionAction::LoggedOut {
                result: Err(SessionError::Store(_)),
                ..
            },
        ] = &actions[..]
        else {
            panic!("{actions:?}")
        };
    }

    #[test]
    fn s44_logout_revokes_the_kept_tokens_a_failed_save_left() {
        let mut b = Bench::new();
        b.session.refresh(b.now);
        let op = load_op(&b.drain());
        let (id, ..) = sent(&b.loaded(op, Some(b.tokens("access-1", Some("refresh-1"), 3600))));
        let (op, ..) = save(&b.answer(id, 200, ALIVE));
        b.saved(op, Err(StoreError::new("disk full")));
        b.session.logout(b.now);
        let (_, purpose, body) = sent(&b.drain());
        assert_eq!(purpose, Purpose::Revoke(TokenKind::RefreshToken));
        assert!(body.starts_with("token=refresh-2&"), "{body}");
    }

    #[test]
    fn calls_after_a_logout_wait_for_it_and_find_nothing() {
        let mut b = Bench::new();
        let before = b.session.tokens(b.now);
        let op = load_op(&b.drain());
        let logout = b.session.logout(b.now);
        let after = b.session.tokens(b.now);
        assert!(b.drain().is_empty());
        let actions = b.loaded(op, Some(b.tokens("access-1", None, 3600)));
        // The first call is answered, and the logout starts by reading the store.
        let [
            SessionAction::Tokens {
                call,
                result: Ok(_),
            },
            SessionAction::Load { op },
        ] = &actions[..]
        else {
            panic!("{actions:?}");
        };
        assert_eq!(*call, before);
        let (op, _) = delete(&b.loaded(*op, None));
        let actions = b.deleted(op, Ok(()));
        let [
            SessionAction::LoggedOut { call, .. },
            SessionAction::Load { op },
        ] = &actions[..]
        else {
            panic!("{actions:?}");
        };
        assert_eq!(*call, logout);
        assert_eq!(
            answers(&b.loaded(*op, None)),
            [(after, Err(SessionError::NotLoggedIn))]
        );
    }

    #[test]
    fn options_are_checked() {
        for options in [
            SessionOptions {
                request_timeout: Duration::ZERO,
                ..SessionOptions::default()
            },
            SessionOptions {
                call_timeout: Duration::ZERO,
                ..SessionOptions::default()
            },
            SessionOptions {
                request_timeout: Duration::from_secs(2 * 24 * 3600),
                ..SessionOptions::default()
            },
        ] {
            assert!(matches!(
                Session::with_options(provider(true), options),
                Err(ConfigError::InvalidLimit(_))
            ));
        }
        let no_margin = SessionOptions {
            margin: Duration::ZERO,
            ..SessionOptions::default()
        };
        assert!(Session::with_options(provider(true), no_margin).is_ok());
        // Tokens that must stay valid for a week are refreshed unless they do.
        let week = SessionOptions {
            margin: Duration::from_secs(7 * 24 * 3600),
            ..SessionOptions::default()
        };
        let mut b = Bench::with(provider(true), week);
        b.session.tokens(b.now);
        let op = load_op(&b.drain());
        let (_, purpose, _) =
            sent(&b.loaded(op, Some(b.tokens("access-1", Some("refresh-1"), 3600))));
        assert_eq!(purpose, Purpose::Refresh);
    }

    #[test]
    fn s41_actions_name_no_secret() {
        let mut b = Bench::new();
        b.session.tokens(b.now);
        let op = load_op(&b.drain());
        let mut seen = format!(
            "{:?}",
            b.loaded(op, Some(b.tokens("access-1", Some("refresh-1"), 0)))
        );
        seen.push_str(&format!("{:?}", b.session));
        for secret in ["access-1", "refresh-1", "s3cr3t"] {
            assert!(!seen.contains(secret), "{seen}");
        }
    }
}
