//! Fresh access tokens on demand, for a program that logged a user in once and must keep
//! working: [`TokenSource`].
//!
//! The stored token set is the source of truth. While its access token expires later than
//! a margin (60 s by default) it is handed out as it is; otherwise it is refreshed first
//! ([`latchkey::Refresh`]), and the new set is stored before anyone sees it, so a rotated
//! refresh token is never lost (S42); should the store refuse it, the source keeps it and
//! stores it first on the next call, instead of falling back to the retired one. Concurrent callers share one refresh: they queue
//! for a single permit, and whoever comes after the refresh finds the fresh set stored. A
//! refresh the provider refuses because the refresh token is dead (`invalid_grant`,
//! GitHub's `bad_refresh_token`) deletes the stored tokens (S42). A program that restarts
//! reads the same store and carries on. Logging out revokes the tokens at the provider when
//! it can and deletes them in any case (S44).

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_channel::{Receiver, Sender};
use latchkey::{
    Provider, Refresh, RefreshError, Revocation, RevocationError, StoreError, TokenKind, TokenSet,
    TransportError,
};
use secrecy::ExposeSecret;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use crate::driver::{Runtime, Transport};
use crate::log::ProviderName;
use crate::store::{DEFAULT_KEY, TokenStore};

/// The margin by default: tokens expiring within a minute are refreshed first.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(60);

/// Valid tokens on demand, refreshed when needed. Cloning shares the source (and its
/// single refresh).
#[derive(Clone)]
pub struct TokenSource<R: Runtime> {
    inner: Arc<Inner<R>>,
}

struct Inner<R: Runtime> {
    runtime: R,
    provider: Provider,
    store: Arc<dyn TokenStore>,
    key: String,
    transport: Transport,
    margin: Duration,
    /// One permit, held while the stored tokens are read, refreshed and written.
    permit: (Sender<()>, Receiver<()>),
    /// Fresh tokens the store refused: with rotation the provider has already retired the
    /// stored refresh token, so these are the only live ones. The next call stores them
    /// before anything else, and hands them out only then.
    unsaved: Mutex<Option<TokenSet>>,
}

impl<R: Runtime> fmt::Debug for TokenSource<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("provider", &self.inner.provider)
            .field("key", &self.inner.key)
            .field("margin", &self.inner.margin)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> TokenSource<R> {
    /// A source for the tokens stored under [`DEFAULT_KEY`] in `store`, issued by
    /// `provider`, refreshed through `transport` when they expire within
    /// [`DEFAULT_MARGIN`].
    pub fn new(
        runtime: R,
        provider: Provider,
        store: Arc<dyn TokenStore>,
        transport: Transport,
    ) -> TokenSource<R> {
        TokenSource::with(
            runtime,
            provider,
            store,
            transport,
            DEFAULT_KEY,
            DEFAULT_MARGIN,
        )
    }

    /// A source for the tokens stored under `key`, refreshed when they expire within
    /// `margin`.
    pub fn with(
        runtime: R,
        provider: Provider,
        store: Arc<dyn TokenStore>,
        transport: Transport,
        key: impl Into<String>,
        margin: Duration,
    ) -> TokenSource<R> {
        let permit = async_channel::bounded(1);
        // The channel starts with its one permit in it.
        let _ = permit.0.try_send(());
        TokenSource {
            inner: Arc::new(Inner {
                runtime,
                provider,
                store,
                key: key.into(),
                transport,
                margin,
                permit,
                unsaved: Mutex::new(None),
            }),
        }
    }

    /// Tokens whose access token is valid for longer than the margin: the stored ones, or
    /// fresh ones (stored before they are returned).
    ///
    /// # Errors
    ///
    /// See [`SourceError`]; [`SourceError::login_required`] says when only a new login
    /// helps.
    pub fn tokens(&self) -> impl Future<Output = Result<TokenSet, SourceError>> + Send + 'static {
        get(Arc::clone(&self.inner), false).instrument(self.span("tokens"))
    }

    /// Logs out (S44): revokes the stored refresh token, then the access token, when the
    /// provider has a revocation endpoint, and deletes the stored tokens whatever the
    /// revocations' outcomes, which the report lists.
    ///
    /// # Errors
    ///
    /// [`SourceError::Store`] when the store could not be read or the tokens deleted.
    pub fn logout(&self) -> impl Future<Output = Result<Logout, SourceError>> + Send + 'static {
        logout(Arc::clone(&self.inner)).instrument(self.span("logout"))
    }

    /// Refreshes now, whatever the expiry, and returns (and stores) the fresh tokens.
    ///
    /// # Errors
    ///
    /// As [`tokens`](TokenSource::tokens).
    pub fn refresh(&self) -> impl Future<Output = Result<TokenSet, SourceError>> + Send + 'static {
        get(Arc::clone(&self.inner), true).instrument(self.span("refresh"))
    }

    /// The span an operation's events are logged in.
    fn span(&self, operation: &'static str) -> Span {
        let inner = &self.inner;
        info_span!("token_source", operation, provider = %ProviderName(&inner.provider), key = %inner.key)
    }
}

async fn get<R: Runtime>(inner: Arc<Inner<R>>, force: bool) -> Result<TokenSet, SourceError> {
    let _permit = Permit::acquire(&inner.permit).await;
    let store = |work| store_operation(inner.runtime.clone(), Arc::clone(&inner.store), work);
    let key = inner.key.clone();
    let unsaved = take_unsaved(&inner);
    let stored = match unsaved {
        // Stored now, or kept for the next call again.
        Some(fresh) => match store(StoreOp::Save(key.clone(), fresh.clone())).await {
            Ok(_) => {
                info!("refreshed tokens the store had refused are stored now");
                fresh
            }
            Err(error) => {
                keep_unsaved(&inner, fresh);
                return Err(error);
            }
        },
        None => store(StoreOp::Load(key.clone()))
            .await?
            .ok_or(SourceError::NotLoggedIn)?,
    };
    let now = SystemTime::now();
    if !force && !stored.expires_within(now, inner.margin) {
        debug!("the stored tokens are still valid");
        return Ok(stored);
    }
    let refresh = match Refresh::new(&inner.provider, &stored) {
        Ok(refresh) => refresh,
        // Nothing to refresh with: what is stored serves until it actually expires.
        Err(_) if !force && !stored.expires_within(now, Duration::ZERO) => {
            debug!("no refresh token; the stored tokens serve until they expire");
            return Ok(stored);
        }
        Err(error) => {
            warn!(%error, "cannot refresh");
            return Err(SourceError::Refresh(error));
        }
    };
    info!(forced = force, "refreshing the tokens");
    let started = Instant::now();
    let response = inner
        .transport
        .send(&inner.runtime, refresh.request())
        .await;
    let elapsed = started.elapsed();
    let response = response.map_err(|error| {
        warn!(%error, ?elapsed, "the token endpoint could not be reached");
        SourceError::Transport(error)
    })?;
    let status = response.status().as_u16();
    match refresh.handle_response(SystemTime::now(), &response) {
        Ok(fresh) => {
            let rotated = fresh.refresh_token().map(ExposeSecret::expose_secret)
                != stored.refresh_token().map(ExposeSecret::expose_secret);
            info!(status, ?elapsed, rotated, "tokens refreshed");
            if let Err(error) = store(StoreOp::Save(key, fresh.clone())).await {
                warn!(%error, "storing the refreshed tokens failed; keeping them to store first next time");
                keep_unsaved(&inner, fresh);
                return Err(error);
            }
            debug!("refreshed tokens stored");
            Ok(fresh)
        }
        Err(error @ RefreshError::LoginRequired(_)) => {
            warn!(status, ?elapsed, %error, "refresh refused; deleting the stored tokens");
            store(StoreOp::Delete(key)).await?;
            Err(SourceError::Refresh(error))
        }
        Err(error) => {
            warn!(status, ?elapsed, %error, "refresh failed");
            Err(SourceError::Refresh(error))
        }
    }
}

/// The fresh tokens a failed save left, if any (taken: the caller stores or keeps them).
fn take_unsaved<R: Runtime>(inner: &Inner<R>) -> Option<TokenSet> {
    // A plain `Option` swap: a panic elsewhere cannot leave it half-written.
    inner
        .unsaved
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

fn keep_unsaved<R: Runtime>(inner: &Inner<R>, tokens: TokenSet) {
    *inner.unsaved.lock().unwrap_or_else(PoisonError::into_inner) = Some(tokens);
}

async fn logout<R: Runtime>(inner: Arc<Inner<R>>) -> Result<Logout, SourceError> {
    let _permit = Permit::acquire(&inner.permit).await;
    let store = |work| store_operation(inner.runtime.clone(), Arc::clone(&inner.store), work);
    // Tokens the store refused are live at the provider too: revoke those.
    let unsaved = take_unsaved(&inner);
    let loaded = match unsaved {
        Some(fresh) => Some(fresh),
        None => store(StoreOp::Load(inner.key.clone())).await?,
    };
    let Some(stored) = loaded else {
        info!("no tokens stored; nothing to log out");
        return Ok(Logout::default());
    };
    let mut report = Logout {
        had_tokens: true,
        ..Logout::default()
    };
    match Revocation::for_tokens(&inner.provider, &stored) {
        Ok(revocations) => {
            for revocation in revocations {
                let started = Instant::now();
                let outcome = match inner
                    .transport
                    .send(&inner.runtime, revocation.request())
                    .await
                {
                    Ok(response) => revocation
                        .handle_response(&response)
                        .map_err(LogoutError::Revocation),
                    Err(error) => Err(LogoutError::Transport(error)),
                };
                let (token, elapsed) = (revocation.kind().hint(), started.elapsed());
                match &outcome {
                    Ok(()) => info!(token, ?elapsed, "token revoked"),
                    Err(error) => warn!(token, ?elapsed, %error, "revocation failed"),
                }
                report.revocations.push((revocation.kind(), outcome));
            }
        }
        Err(error) => {
            warn!(%error, "tokens not revoked");
            report.unrevoked = Some(error);
        }
    }
    store(StoreOp::Delete(inner.key.clone())).await?;
    info!(
        fully_revoked = report.fully_revoked(),
        "stored tokens deleted"
    );
    Ok(report)
}

/// What [`TokenSource::logout`] did. The stored tokens are gone whenever it returns `Ok`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logout {
    /// Whether tokens were stored.
    pub had_tokens: bool,
    /// Each token sent to the revocation endpoint, the refresh token first, and how it went.
    pub revocations: Vec<(TokenKind, Result<(), LogoutError>)>,
    /// Why nothing was sent for revocation, when tokens were stored but the provider has
    /// no revocation endpoint.
    pub unrevoked: Option<RevocationError>,
}

impl Logout {
    /// Whether every stored token was revoked at the provider.
    pub fn fully_revoked(&self) -> bool {
        self.unrevoked.is_none() && self.revocations.iter().all(|(_, outcome)| outcome.is_ok())
    }
}

/// Why one revocation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogoutError {
    /// The provider answered, but not with success.
    Revocation(RevocationError),
    /// The revocation endpoint could not be reached.
    Transport(TransportError),
}

impl fmt::Display for LogoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogoutError::Revocation(error) => error.fmt(f),
            LogoutError::Transport(error) => write!(f, "revoking the token: {error}"),
        }
    }
}

impl std::error::Error for LogoutError {}

/// What the source asks of its store.
enum StoreOp {
    Load(String),
    Save(String, TokenSet),
    Delete(String),
}

/// Runs `op` on the blocking pool, or in place for a store that never blocks.
async fn store_operation<R: Runtime>(
    runtime: R,
    store: Arc<dyn TokenStore>,
    op: StoreOp,
) -> Result<Option<TokenSet>, SourceError> {
    let blocks = store.blocks();
    let work = move || match op {
        StoreOp::Load(key) => store.load(&key),
        StoreOp::Save(key, tokens) => store.save(&key, &tokens).map(|()| None),
        StoreOp::Delete(key) => store.delete(&key).map(|()| None),
    };
    let result = if blocks {
        runtime.unblock(work).await
    } else {
        work()
    };
    result.map_err(SourceError::Store)
}

/// The one permit, returned when dropped (also when the caller gives up half-way).
struct Permit<'a>(&'a Sender<()>);

impl<'a> Permit<'a> {
    async fn acquire(permit: &'a (Sender<()>, Receiver<()>)) -> Permit<'a> {
        // The source holds a sender, so the channel never closes.
        let _ = permit.1.recv().await;
        Permit(&permit.0)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

/// Why a [`TokenSource`] has no tokens to give.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceError {
    /// Nothing is stored: log in first.
    NotLoggedIn,
    /// The refresh failed; [`RefreshError::LoginRequired`] also deleted the stored tokens.
    Refresh(RefreshError),
    /// The token endpoint could not be reached.
    Transport(TransportError),
    /// The store could not be read or written.
    Store(StoreError),
}

impl SourceError {
    /// Whether only a new login can give tokens now.
    pub fn login_required(&self) -> bool {
        match self {
            SourceError::NotLoggedIn => true,
            SourceError::Refresh(error) => error.login_required(),
            SourceError::Transport(_) | SourceError::Store(_) => false,
        }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::NotLoggedIn => f.write_str("login required: no tokens are stored"),
            SourceError::Refresh(error) => error.fmt(f),
            SourceError::Transport(error) => write!(f, "refreshing the tokens: {error}"),
            SourceError::Store(error) => write!(f, "the token store: {error}"),
        }
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SourceError::NotLoggedIn => None,
            SourceError::Refresh(error) => Some(error),
            SourceError::Transport(error) => Some(error),
            SourceError::Store(error) => Some(error),
        }
    }
}
