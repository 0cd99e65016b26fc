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
    code: &SecretString,
    redirect_uri: &str,
    verifier: &SecretString,
) -> Request<Vec<u8>> {
    let mut body = form::Serializer::default();
    body.append("grant_type", "authorization_code")
        .append("code", code.expose_secret())
        .append("redirect_uri", redirect_uri)
        .append("code_verifier", verifier.expose_secret());
    let secret = provider
        .client_secret
        .as_ref()
        .map(ExposeSecret::expose_secret);
    // Validation guarantees a secret exactly when the method needs one.
    let basic = match (provider.auth, secret) {
        (ClientAuth::SecretBasic, Some(secret)) => {
            Some(basic_credentials(&provider.client_id, secret))
        }
        (ClientAuth::SecretPost, Some(secret)) => {
            body.append("client_id", &provider.client_id)
                .append("client_secret", secret);
            None
        }
        _ => {
            body.append("client_id", &provider.client_id);
            None
        }
    };

    let mut request = Request::new(body.finish().into_bytes());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = provider.token_endpoint.clone();
    let headers = request.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(value) = basic {
        headers.insert(AUTHORIZATION, value);
    }
    request
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn basic_credentials(client_id: &str, secret: &str) -> HeaderValue {
    let mut pair = String::new();
    form::encode_into(&mut pair, client_id);
    pair.push(':');
    form::encode_into(&mut pair, secret);
    let mut value = HeaderValue::try_from(format!("Basic {}", STANDARD.encode(pair)))
        .expect("base64 output is a valid header value");
    value.set_sensitive(true);
    value
}
