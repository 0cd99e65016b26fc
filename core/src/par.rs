//! Pushed authorization requests (RFC 9126): the authorization parameters go to the
//! provider in a POST, authenticated as token requests are, and the browser's URL carries
//! only `client_id` and the `request_uri` the provider answered with.
//!
//! The engine sends the browser the moment the answer arrives, well within the request
//! URI's `expires_in` (which must be positive; longer than an hour is taken as an hour).

use std::time::Duration;

use serde_json::Value;

use crate::config::Provider;
use crate::error::{BadTokenResponse, FlowError};
use crate::exchange;
use crate::form;
use crate::grammar::is_vschar_text;
use crate::outgoing::ProviderRequest;
use crate::token;

/// The longest `expires_in` of a request URI taken as it is (RFC 9126 §2.2 suggests 5 to
/// 600 seconds).
pub const MAX_REQUEST_URI_LIFETIME: Duration = Duration::from_secs(3600);

/// The provider's answer to a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// What the browser's URL names.
    pub request_uri: String,
    /// How long it may be used.
    pub lifetime: Duration,
}

/// The push of `url`, a whole authorization URL of `provider`: its parameters (but
/// `client_id`, which the client authentication carries) in the body, to `endpoint`.
pub(crate) fn push_request(
    provider: &Provider,
    endpoint: &http::Uri,
    url: &str,
) -> ProviderRequest {
    let start = provider.inner().authorization_endpoint_len + 1;
    let parameters: Vec<&str> = url
        .get(start..)
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("client_id="))
        .collect();
    let body = form::Serializer::continuing_with_room(&parameters.join("&"), 96);
    exchange::client_request(provider, endpoint, body)
}

/// The browser's URL for `request_uri`: the authorization endpoint (with its own query),
/// `client_id` and `request_uri` (RFC 9126 §4).
pub(crate) fn browser_url(provider: &Provider, request_uri: &str) -> String {
    let endpoint =
        &provider.inner().authorize_prefix[..provider.inner().authorization_endpoint_len];
    let (base, query) = match endpoint.split_once('?') {
        Some((base, query)) => (base, query),
        None => (endpoint, ""),
    };
    let mut url = form::Serializer::continuing(query);
    url.append("client_id", provider.client_id())
        .append("request_uri", request_uri);
    format!("{base}?{}", url.finish())
}

/// Reads the answer to a push (RFC 9126 §2.2, §2.3): `201` (or another `2xx`) with
/// `request_uri` and `expires_in`, or an OAuth error.
pub(crate) fn read_push(response: &http::Response<Vec<u8>>) -> Result<Pushed, FlowError> {
    let status = response.status().as_u16();
    let bad = |reason| FlowError::BadPushResponse { status, reason };
    let mut members = token::read_answer(response).map_err(|error| match error {
        FlowError::TokenRejected { status, error } => FlowError::PushRejected { status, error },
        FlowError::BadTokenResponse { status, reason } => {
            FlowError::BadPushResponse { status, reason }
        }
        other => other,
    })?;
    let request_uri = match members.take_extra("request_uri") {
        Some(Value::String(uri)) if is_vschar_text(&uri) && !uri.contains(' ') => uri,
        None | Some(Value::Null) => {
            return Err(bad(BadTokenResponse::MissingMember("request_uri")));
        }
        Some(_) => return Err(bad(BadTokenResponse::InvalidMember("request_uri"))),
    };
    // RFC 9126 §2.2: a positive lifetime; numeric strings are tolerated as in token
    // responses.
    let lifetime = match members.take_lifetime() {
        Some(seconds) if seconds > 0 => Duration::from_secs(seconds).min(MAX_REQUEST_URI_LIFETIME),
        Some(_) => return Err(bad(BadTokenResponse::InvalidMember("expires_in"))),
        None => return Err(bad(BadTokenResponse::MissingMember("expires_in"))),
    };
    Ok(Pushed {
        request_uri,
        lifetime,
    })
}
