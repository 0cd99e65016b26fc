//! Token requests (RFC 6749 §4.1.3 with RFC 7636 §4.5, and §6), as [`http::Request`]s any
//! HTTP client can send.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{ClientAuth, Provider, ProviderInner};
use crate::form;
use crate::outgoing::ProviderRequest;

/// A request as actions show it in `Debug`: method, URI and headers (`http` prints
/// sensitive header values, Basic credentials, as "Sensitive"), the body by its length only,
/// since it holds codes, verifiers, secrets and tokens (S41).
pub(crate) struct Redacted<'a>(pub &'a Request<Vec<u8>>);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let request = self.0;
        f.debug_struct("Request")
            .field("method", request.method())
            .field("uri", request.uri())
            .field("headers", request.headers())
            .field(
                "body",
                &format_args!("[REDACTED {} bytes]", request.body().len()),
            )
            .finish()
    }
}

/// The grant type of a device code poll (RFC 8628 §3.4).
pub(crate) const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What a token request asks for.
pub(crate) enum Grant<'a> {
    /// Tokens for an authorization code, with the PKCE verifier (S32).
    Code {
        code: &'a str,
        /// The redirect URI, already form-encoded.
        encoded_redirect_uri: &'a str,
        verifier: &'a str,
    },
    /// Fresh tokens for a refresh token, with the scope originally granted.
    Refresh { refresh_token: &'a str },
    /// A poll for the tokens of a device authorization (RFC 8628 §3.4).
    Device { device_code: &'a str },
}

/// Builds a token request, authenticated as [`client_request`] says. Secrets travel only in
/// the body or the `Authorization` header, never in the URL (S43).
pub(crate) fn token_request(provider: &Provider, grant: Grant<'_>) -> ProviderRequest {
    let values = match &grant {
        Grant::Code {
            code,
            encoded_redirect_uri,
            verifier,
        } => code.len() + encoded_redirect_uri.len() + verifier.len(),
        Grant::Refresh { refresh_token } => refresh_token.len(),
        Grant::Device { device_code } => device_code.len() + 48,
    };
    let inner = provider.inner();
    let resources: usize = inner.resources.iter().map(|uri| uri.len() + 10).sum();
    let mut body = form_body(inner, values + resources);
    match grant {
        Grant::Code {
            code,
            encoded_redirect_uri,
            verifier,
        } => {
            body.append("grant_type", "authorization_code")
                .append("code", code)
                .append_encoded("redirect_uri", encoded_redirect_uri)
                .append("code_verifier", verifier);
        }
        Grant::Refresh { refresh_token } => {
            body.append("grant_type", "refresh_token")
                .append("refresh_token", refresh_token);
        }
        Grant::Device { device_code } => {
            body.append("grant_type", DEVICE_CODE_GRANT)
                .append("device_code", device_code);
        }
    }
    // RFC 8707 §2.2: the same resources at every grant, so that a refreshed token is for
    // the same APIs.
    for resource in &inner.resources {
        body.append("resource", resource);
    }
    client_request(provider, &inner.token_endpoint, body)
}

/// An empty form body with room for `values` bytes of values and the client's credentials,
/// so that it is allocated once when nothing needs escaping.
pub(crate) fn form_body(provider: &ProviderInner, values: usize) -> form::Serializer {
    let secret = provider
        .client_secret
        .as_ref()
        .map_or(0, |s| s.expose_secret().len());
    form::Serializer::continuing_with_room("", 96 + values + provider.client_id.len() + secret)
}

/// A POST of the form `body` to `endpoint` (the token or revocation endpoint), the client
/// authenticated by exactly the provider's one method (S33): HTTP Basic, or `client_id` and
/// `client_secret` in the body, or a client assertion added when the request is finished
/// (`private_key_jwt`), or `client_id` alone for a public client.
pub(crate) fn client_request(
    provider: &Provider,
    endpoint: &http::Uri,
    mut body: form::Serializer,
) -> ProviderRequest {
    let inner = provider.inner();
    let secret = inner
        .client_secret
        .as_ref()
        .map(ExposeSecret::expose_secret);
    // Validation guarantees a secret exactly when the method needs one.
    match (inner.auth, secret) {
        (ClientAuth::SecretBasic, Some(_)) => {}
        (ClientAuth::SecretPost, Some(secret)) => {
            body.append("client_id", &inner.client_id)
                .append("client_secret", secret);
        }
        // The assertion names the client (RFC 7521 §4.2).
        (ClientAuth::PrivateKeyJwt, _) => {}
        _ => {
            body.append("client_id", &inner.client_id);
        }
    }

    let mut request = Request::new(body.finish().into_bytes());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = endpoint.clone();
    let headers = request.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(value) = &inner.basic_authorization {
        headers.insert(AUTHORIZATION, value.clone());
    }
    match inner.auth {
        ClientAuth::PrivateKeyJwt => ProviderRequest::with_assertion(request, provider.clone()),
        _ => ProviderRequest::complete(request),
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1), computed once per
/// provider.
pub(crate) fn basic_credentials(client_id: &str, secret: &SecretString) -> HeaderValue {
    let mut pair = String::new();
    form::encode_into(&mut pair, client_id);
    pair.push(':');
    form::encode_into(&mut pair, secret.expose_secret());
    let mut value = HeaderValue::try_from(format!("Basic {}", STANDARD.encode(pair)))
        .expect("base64 output is a valid header value");
    value.set_sensitive(true);
    value
}
