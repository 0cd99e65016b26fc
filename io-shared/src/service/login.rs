//! A login as its starter sees it ([`Login`]), and logging one user in with one call
//! ([`login`]).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use latchkey::{Config, DeviceAuthorization, FlowError, FlowId, FlowOptions, Step, TokenSet};

use super::mailbox::Mailbox;
use super::{Error, Service, ServiceOptions};
use crate::opener::Opener;
use crate::runtime::Runtime;

/// What happens to a login, in order; [`LoginEvent::Finished`] is always last.
#[derive(Debug, Clone)]
pub enum LoginEvent {
    /// A device login's user code and where to enter it: show them to the user. The
    /// service polls the token endpoint until the user approves.
    UserCode(DeviceAuthorization),
    /// The browser came back with a code; the token request is on its way.
    Callback,
    /// The token endpoint issued these tokens; they are being stored.
    Tokens(TokenSet),
    /// The store confirmed; the browser is being sent to the success landing.
    Stored,
    /// The outcome.
    Finished(Result<TokenSet, FlowError>),
}

impl LoginEvent {
    /// The step the login is in once this happened.
    pub fn step(&self) -> Option<Step> {
        match self {
            LoginEvent::UserCode(_) => Some(Step::Approval),
            LoginEvent::Callback => Some(Step::TokenExchange),
            LoginEvent::Tokens(_) => Some(Step::Storage),
            LoginEvent::Stored | LoginEvent::Finished(_) => None,
        }
    }
}

/// A deadline passed before the awaited event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Cancels a flow of the service a login came from.
pub(super) trait Canceller: Send + Sync {
    fn cancel(&self, flow: FlowId);
}

/// A login in progress, from [`Service::start`] or [`Service::start_device`].
pub struct Login {
    pub(super) flow: FlowId,
    pub(super) url: Option<String>,
    pub(super) events: Mailbox,
    pub(super) service: Arc<dyn Canceller>,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL carries the login's `state`.
        f.debug_struct("Login")
            .field("flow", &self.flow)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// The flow.
    pub fn flow(&self) -> FlowId {
        self.flow
    }

    /// The authorization URL to send the user's browser to; `None` for a device login,
    /// whose user code comes as [`LoginEvent::UserCode`].
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The next thing that happens to the login; `None` after [`LoginEvent::Finished`], or
    /// when the service stopped first.
    pub async fn next_event(&self) -> Option<LoginEvent> {
        self.events.recv().await
    }

    /// Cancels the login; it finishes with [`FlowError::Cancelled`].
    pub fn cancel(&self) {
        self.service.cancel(self.flow);
    }

    /// Waits for the outcome.
    ///
    /// # Errors
    ///
    /// [`Error::Flow`] when the login ended without tokens, [`Error::Stopped`] when the
    /// service stopped first.
    pub async fn finished(self) -> Result<TokenSet, Error> {
        while let Some(event) = self.next_event().await {
            if let LoginEvent::Finished(result) = event {
                return result.map_err(Error::Flow);
            }
        }
        Err(Error::Stopped)
    }

    /// The next thing that happens before `deadline` on `runtime`'s clock
    /// ([`Runtime::now`]). `Ok(None)` after [`LoginEvent::Finished`] (or when the service
    /// stopped); `Err(Elapsed)` when the deadline came first.
    pub async fn next_event_by<R: Runtime>(
        &self,
        runtime: &R,
        deadline: Instant,
    ) -> Result<Option<LoginEvent>, Elapsed> {
        future::or(async { Ok(self.next_event().await) }, async {
            runtime.sleep_until(deadline).await;
            Err(Elapsed)
        })
        .await
    }

    /// Waits for the outcome at most `timeout` on `runtime`'s clock, the whole login
    /// included; then cancels it and reports [`FlowError::TimedOut`] with the step it was in.
    ///
    /// # Errors
    ///
    /// As [`finished`](Login::finished).
    pub async fn finished_within<R: Runtime>(
        self,
        runtime: &R,
        timeout: Duration,
    ) -> Result<TokenSet, Error> {
        let deadline = runtime.now() + timeout;
        let mut step = match self.url {
            Some(_) => Step::Callback,
            None => Step::DeviceAuthorization,
        };
        loop {
            match self.next_event_by(runtime, deadline).await {
                Ok(Some(LoginEvent::Finished(result))) => return result.map_err(Error::Flow),
                Ok(Some(event)) => step = event.step().unwrap_or(step),
                Ok(None) => return Err(Error::Stopped),
                Err(Elapsed) => {
                    self.cancel();
                    return Err(Error::Flow(FlowError::TimedOut(step)));
                }
            }
        }
    }
}

/// Logs one user in: binds the listener, starts a flow, hands its URL to `opener`, waits at
/// most `timeout` for the outcome, stops the listener.
///
/// # Errors
///
/// As [`Service::bind`], [`Service::start`] and [`Login::finished`]; [`Error::Io`] when the
/// opener failed.
pub async fn login<R: Runtime>(
    runtime: R,
    config: Config,
    options: ServiceOptions,
    opener: Arc<dyn Opener>,
    timeout: Duration,
) -> Result<TokenSet, Error> {
    let service = Service::bind(runtime.clone(), config, options)?;
    let login = service.start(FlowOptions::new())?;
    let url = login.url().unwrap_or_default().to_owned();
    if let Err(error) = runtime.unblock(move || opener.open(&url)).await {
        service.shutdown().await;
        return Err(Error::Io(error));
    }
    let result = login.finished_within(&runtime, timeout).await;
    service.shutdown().await;
    result
}
