//! Describing a provider from its issuer URL alone: [`discover`] runs the
//! [`latchkey::Discovery`] machine over a [`Transport`], both well-known documents at once.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use futures_lite::future;
use latchkey::{Discovery, DiscoveryAction, Metadata, ProviderBuilder, RequestId};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::runtime::Runtime;
use crate::transport::{TokenResult, Transport};

pub use latchkey::DiscoveryError;

type Fetch<'a> = Pin<Box<dyn Future<Output = (RequestId, TokenResult)> + Send + 'a>>;

/// Fetches `issuer`'s metadata (OpenID Connect discovery and RFC 8414, merged) and starts
/// a provider description from it for `client_id`: endpoints, revocation endpoint, whether
/// `iss` is mandatory (S9: each document's issuer must be `issuer` exactly), the key set
/// and signing algorithms of its ID tokens, with [`crate::crypto::ring`] to verify them.
/// Continue with the client's secret and scopes, then build.
///
/// # Errors
///
/// See [`DiscoveryError`].
pub async fn discover<R: Runtime>(
    runtime: &R,
    transport: &Transport,
    issuer: &str,
    client_id: &str,
) -> Result<ProviderBuilder, DiscoveryError> {
    let metadata = metadata(runtime, transport, issuer).await?;
    let builder = metadata.provider(client_id).map_err(|error| {
        warn!(issuer, %error, "the provider's metadata cannot describe a provider");
        DiscoveryError::Metadata(error)
    })?;
    Ok(builder.crypto(crate::crypto::ring()))
}

/// Fetches and merges `issuer`'s metadata documents.
///
/// # Errors
///
/// See [`DiscoveryError`].
pub async fn metadata<R: Runtime>(
    runtime: &R,
    transport: &Transport,
    issuer: &str,
) -> Result<Metadata, DiscoveryError> {
    let span = info_span!("discovery", issuer);
    async {
        let started = runtime.now();
        let mut discovery = Discovery::new(issuer).map_err(DiscoveryError::Issuer)?;
        discovery.start(started);
        let mut fetches: Vec<Fetch<'_>> = Vec::new();
        loop {
            while let Some(action) = discovery.poll_action() {
                match action {
                    DiscoveryAction::Send { id, request } => {
                        debug!(location = %request.uri(), "fetching the provider's metadata");
                        fetches.push(Box::pin(async move {
                            (id, transport.send(runtime, request).await)
                        }));
                    }
                    DiscoveryAction::Finished { result } => {
                        let elapsed = runtime.now().saturating_duration_since(started);
                        match &result {
                            Ok(_) => info!(?elapsed, "provider metadata accepted"),
                            Err(error) => warn!(%error, ?elapsed, "provider metadata refused"),
                        }
                        return result;
                    }
                    _ => debug_assert!(false, "an action this loop does not know"),
                }
            }
            let deadline = discovery.poll_timeout();
            let mut sleep = deadline.map(|at| Box::pin(runtime.sleep_until(at)));
            let answered = future::poll_fn(|cx| {
                for index in 0..fetches.len() {
                    if let Poll::Ready(answer) = fetches[index].as_mut().poll(cx) {
                        drop(fetches.swap_remove(index));
                        return Poll::Ready(Some(answer));
                    }
                }
                match &mut sleep {
                    Some(sleep) => sleep.as_mut().poll(cx).map(|()| None),
                    None => Poll::Pending,
                }
            })
            .await;
            let now = runtime.now();
            match answered {
                Some((id, Ok(response))) => {
                    debug!(
                        status = response.status().as_u16(),
                        "metadata location answered"
                    );
                    discovery.handle_response(now, id, response);
                }
                Some((id, Err(error))) => {
                    debug!(%error, "metadata location unreachable");
                    discovery.handle_failure(now, id, error);
                }
                None => discovery.handle_timeout(now),
            }
        }
    }
    .instrument(span)
    .await
}
