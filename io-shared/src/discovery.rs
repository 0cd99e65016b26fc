//! Describing a provider from its issuer URL alone: [`discover`] runs
//! [`latchkey::Discovery`] over a [`Transport`].

use std::fmt;
use std::time::Instant;

use latchkey::{ConfigError, Discovery, MetadataError, ProviderBuilder, TransportError};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::driver::{Runtime, Transport};

/// Fetches `issuer`'s metadata (OpenID Connect discovery, then RFC 8414) and starts a
/// provider description from it for `client_id`: endpoints, revocation endpoint, whether
/// `iss` is mandatory (S9: the document's issuer must be `issuer` exactly). Continue with
/// the client's secret and scopes, then build.
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
    let span = info_span!("discovery", issuer);
    async {
        let started = Instant::now();
        let mut discovery = Discovery::new(issuer).map_err(DiscoveryError::Issuer)?;
        loop {
            let request = discovery.request();
            debug!(location = %request.uri(), "fetching the provider's metadata");
            let response = transport.send(runtime, request).await.map_err(|error| {
                warn!(%error, "the metadata could not be fetched");
                DiscoveryError::Transport(error)
            })?;
            let status = response.status().as_u16();
            match discovery.handle_response(&response, client_id) {
                Ok(Some(builder)) => {
                    info!(elapsed = ?started.elapsed(), "provider metadata accepted");
                    return Ok(builder);
                }
                Ok(None) => debug!(status, "no metadata there; trying the next location"),
                Err(error) => {
                    warn!(status, %error, "provider metadata refused");
                    return Err(DiscoveryError::Metadata(error));
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Why [`discover`] found no usable provider description.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The issuer is not an `https` URL (or `http` on loopback) without query or fragment.
    Issuer(ConfigError),
    /// The metadata could not be fetched.
    Transport(TransportError),
    /// No document was found, or the one found cannot be trusted or used.
    Metadata(MetadataError),
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryError::Issuer(error) => write!(f, "discovery: {error}"),
            DiscoveryError::Transport(error) => {
                write!(f, "fetching the provider's metadata: {error}")
            }
            DiscoveryError::Metadata(error) => write!(f, "the provider's metadata: {error}"),
        }
    }
}

impl std::error::Error for DiscoveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DiscoveryError::Issuer(error) => Some(error),
            DiscoveryError::Transport(error) => Some(error),
            DiscoveryError::Metadata(error) => Some(error),
        }
    }
}
