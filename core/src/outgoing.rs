//! Requests to the provider that are finished when they are sent.

use std::fmt;
use std::time::SystemTime;

use http::HeaderValue;

use crate::config::{AssertionAudience, Provider};
use crate::crypto::SignatureError;
use crate::dpop::{self, Proof, ProofError};
use crate::exchange::Redacted;
use crate::form;
use crate::keys::{ASSERTION_TYPE, Signer};

/// A request a machine wants sent to the provider (its token, revocation, device
/// authorization or key-set endpoint), finished by the driver as it sends it.
///
/// A client assertion (`private_key_jwt`, RFC 7523) and a DPoP proof (RFC 9449) say when
/// they were made and are accepted for a minute or so, so they are signed when the request
/// leaves, with the driver's wall-clock time: [`finish`](ProviderRequest::finish). For
/// every other request `finish` only unwraps it.
///
/// `Debug` shows the method, URI and headers, and the body by its length only (S41).
#[derive(Clone)]
pub struct ProviderRequest {
    request: http::Request<Vec<u8>>,
    /// The provider whose key signs the client assertion, for `private_key_jwt`.
    assertion: Option<Provider>,
    /// The key of a DPoP proof in the `DPoP` header, and the provider's nonce.
    dpop: Option<Box<DpopProof>>,
}

#[derive(Clone)]
struct DpopProof {
    signer: Signer,
    nonce: Option<String>,
}

impl ProviderRequest {
    /// A request that needs nothing more (a key-set fetch, say).
    pub fn complete(request: http::Request<Vec<u8>>) -> ProviderRequest {
        ProviderRequest {
            request,
            assertion: None,
            dpop: None,
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
            dpop: None,
        }
    }

    /// The same request with a DPoP proof made with `signer` (and the provider's `nonce`,
    /// when it gave one) when it is finished.
    pub(crate) fn with_dpop(mut self, signer: Signer, nonce: Option<String>) -> ProviderRequest {
        self.dpop = Some(Box::new(DpopProof { signer, nonce }));
        self
    }

    /// A copy whose DPoP proof carries `nonce` (the retry of S62); `None` for a request
    /// without DPoP.
    pub(crate) fn with_nonce(&self, nonce: &str) -> Option<ProviderRequest> {
        let mut again = self.clone();
        again.dpop.as_mut()?.nonce = Some(nonce.to_owned());
        Some(again)
    }

    /// Whether the request carries a DPoP proof.
    pub fn has_dpop(&self) -> bool {
        self.dpop.is_some()
    }

    /// The request as it will be sent, less the client assertion a `private_key_jwt`
    /// client adds when [`finish`](ProviderRequest::finish)ing it.
    pub fn request(&self) -> &http::Request<Vec<u8>> {
        &self.request
    }

    /// Whether finishing signs something (a client assertion or a DPoP proof).
    pub fn is_signed(&self) -> bool {
        self.assertion.is_some() || self.dpop.is_some()
    }

    /// The request to send now: for a `private_key_jwt` client, with
    /// `client_assertion_type` and a `client_assertion` made at `wall` (S63); for a DPoP
    /// login, with a `DPoP` header, a proof of the method and URI made at `wall` (S61).
    ///
    /// # Errors
    ///
    /// The crypto provider could not sign or supply randomness. Report it as the request's
    /// failure (a [`TransportError`](crate::TransportError) of kind `Other`).
    pub fn finish(self, wall: SystemTime) -> Result<http::Request<Vec<u8>>, SignatureError> {
        let mut request = self.request;
        if let Some(provider) = self.assertion {
            let inner = provider.inner();
            let endpoint;
            // Validation guarantees the key, and the issuer when it is the audience.
            let audience = match inner.assertion_audience {
                AssertionAudience::Issuer => inner.issuer.as_deref(),
                AssertionAudience::Endpoint => {
                    endpoint = dpop::target_uri(&request.uri().to_string()).ok();
                    endpoint.as_deref()
                }
            };
            let (Some(signer), Some(audience)) = (&inner.client_key, audience) else {
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
        if let Some(dpop) = self.dpop {
            let uri = request.uri().to_string();
            let mut proof = Proof::new(request.method().as_str(), &uri).map_err(unsigned)?;
            if let Some(nonce) = &dpop.nonce {
                proof = proof.nonce(nonce);
            }
            let proof = proof.sign(&dpop.signer, wall).map_err(unsigned)?;
            let value = HeaderValue::try_from(proof).map_err(|_| SignatureError::Unsupported)?;
            request.headers_mut().insert(dpop::HEADER, value);
        }
        Ok(request)
    }
}

/// A proof that cannot be made: the provider's refusal, or (never, for the validated
/// endpoints and nonces the machines use) a URI, method or nonce a proof cannot carry.
fn unsigned(error: ProofError) -> SignatureError {
    match error {
        ProofError::Signature(error) => error,
        _ => SignatureError::Unsupported,
    }
}

impl fmt::Debug for ProviderRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRequest")
            .field("request", &Redacted(&self.request))
            .field("assertion", &self.assertion.is_some())
            .field("dpop", &self.dpop.is_some())
            .finish()
    }
}
