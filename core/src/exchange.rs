//! The token request that trades an authorization code for tokens (RFC 6749 §4.1.3, RFC 7636
//! §4.5), as an [`http::Request`] any HTTP client can send.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{ClientAuth, ProviderInner};
use crate::form;

/// Builds the `authorization_code` token request (S32), authenticated by exactly the
/// provider's one method (S33). Secrets travel only in the body or the `Authorization`
/// header, never in the URL.
pub(crate) fn code_request(
    provider: &ProviderInner,
    code: &str,
    encoded_redirect_uri: &str,
    verifier: &str,
) -> Request<Vec<u8>> {
    let secret = provider
        .client_secret
        .as_ref()
        .map(ExposeSecret::expose_secret);
    // Room for the usual case, so that the body is allocated once: values that need no
    // escaping, plus the names and separators.
    let room = 96
        + code.len()
        + encoded_redirect_uri.len()
        + verifier.len()
        + provider.client_id.len()
        + secret.map_or(0, str::len);
    let mut body = form::Serializer::continuing_with_room("", room);
    body.append("grant_type", "authorization_code")
        .append("code", code)
        .append_encoded("redirect_uri", encoded_redirect_uri)
        .append("code_verifier", verifier);
    // Validation guarantees a secret exactly when the method needs one.
    match (provider.auth, secret) {
        (ClientAuth::SecretBasic, Some(_)) => {}
        (ClientAuth::SecretPost, Some(secret)) => {
            body.append("client_id", &provider.client_id)
                .append("client_secret", secret);
        }
        _ => {
            body.append("client_id", &provider.client_id);
        }
    }

    let mut request = Request::new(body.finish().into_bytes());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = provider.token_endpoint.clone();
    let headers = request.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(value) = &provider.basic_authorization {
        headers.insert(AUTHORIZATION, value.clone());
    }
    request
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
