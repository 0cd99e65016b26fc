//! Requests to the provider that are finished when they are sent.

use std::fmt;
use std::time::SystemTime;

use http::HeaderValue;

use crate::config::Provider;
use crate::crypto::SignatureError;
use crate::exchange::Redacted;
use crate::form;
use crate::keys::ASSERTION_TYPE;

/// A request a machine wants sent to the provider (its token, revocation, device
/// authorization or key-set endpoint), finished by the driver as it sends it.
///
/// A client assertion (`private_key_jwt`, RFC 7523) says when it was made and expires a
/// minute later, so it is signed when the request leaves, with the driver's wall-clock
/// time: [`finish`](ProviderRequest::finish). For every other client the request is
/// complete already and `finish` only unwraps it.
///
/// `Debug` shows the method, URI and headers, and the body by its length only (S41).
#[derive(Clone)]
pub struct ProviderRequest {
    request: http::Request<Vec<u8>>,
    /// The provider whose key signs the client assertion, for `private_key_jwt`.
    assertion: Option<Provider>,
}

impl ProviderRequest {
    /// A request that needs nothing more (a key-set fetch, say).
    pub fn complete(request: http::Request<Vec<u8>>) -> ProviderRequest {
        ProviderRequest {
            request,
            assertion: None,
        }
    }

    /// A request whose body gets `provider`'s client assertion when it is finished.
    pub(crate) fn with_assertion(
        request: http::Request<Vec<u8>>,
        provider: Provider,
    ) -> ProviderRequest {
        ProviderRequest {
            request,
            assertion: Some(provider),
        }
    }

    /// The request as it will be sent, less the client assertion a `private_key_jwt`
    /// client adds when [`finish`](ProviderRequest::finish)ing it.
    pub fn request(&self) -> &http::Request<Vec<u8>> {
        &self.request
    }

    /// Whether finishing signs something (a client assertion).
    pub fn is_signed(&self) -> bool {
        self.assertion.is_some()
    }

    /// The request to send now: for a `private_key_jwt` client, with
    /// `client_assertion_type` and a `client_assertion` made at `wall` (S63).
    ///
    /// # Errors
    ///
    /// The crypto provider could not sign or supply randomness. Report it as the request's
    /// failure (a [`TransportError`](crate::TransportError) of kind `Other`).
    pub fn finish(self, wall: SystemTime) -> Result<http::Request<Vec<u8>>, SignatureError> {
        let mut request = self.request;
        if let Some(provider) = self.assertion {
            let inner = provider.inner();
            // Validation guarantees both for `private_key_jwt`.
            let (Some(signer), Some(audience)) = (&inner.client_key, &inner.issuer) else {
                return Err(SignatureError::Unsupported);
            };
            let assertion = signer.client_assertion(&inner.client_id, audience, wall)?;
            let body = request.body_mut();
            let mut form = form::Serializer::continuing_with_room(
                std::str::from_utf8(body).unwrap_or_default(),
                assertion.len() + 96,
            );
            form.append("client_assertion_type", ASSERTION_TYPE)
                .append("client_assertion", &assertion);
            *body = form.finish().into_bytes();
            let length = HeaderValue::from(body.len());
            if let Some(header) = request.headers_mut().get_mut(http::header::CONTENT_LENGTH) {
                *header = length;
            }
        }
        Ok(request)
    }
}

impl fmt::Debug for ProviderRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRequest")
            .field("request", &Redacted(&self.request))
            .field("signed", &self.is_signed())
            .finish()
    }
}
