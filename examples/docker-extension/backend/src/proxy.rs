//! `POST /api`: the backend calls an API for the UI, with the access token, so that the
//! token never reaches the page.
//!
//! The UI sends
//!
//! ```json
//! {"url": "https://api.example.com/v1/me", "method": "GET",
//!  "headers": {"Accept": "application/json"}, "body": "…"}
//! ```
//!
//! (`method` defaults to `GET`; `headers` and `body`, a string, are optional) and gets the
//! API's answer:
//!
//! ```json
//! {"status": 200, "headers": {"content-type": "application/json"}, "body": "{…}"}
//! ```
//!
//! The rules: the URL's origin must be one of the settings' `api_origins` (`403
//! origin_not_allowed` otherwise), so a page tricked into asking cannot send the token
//! elsewhere; the UI cannot set `Authorization`, `Cookie`, `Host` or the framing headers;
//! redirects are not followed (the token would follow them); the API's answer comes back
//! with a few harmless headers only, at most 1 MiB, and with the access token blanked out
//! should the API echo it. An API answering `401` with `error="invalid_token"` to a `GET`
//! gets one more try with a freshly refreshed token.

use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use http::{Method, Request};
use latchkey::{TokenSet, TransportErrorKind};
use latchkey_io::transport::Transport;
use latchkey_smol::{Smol, TokenSource};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use tracing::info;

use crate::api::session_error;
use crate::config::origin_of;
use crate::http::Response;

/// Headers the UI may not set: credentials, and what the HTTP client frames itself.
const FORBIDDEN: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "dpop",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// The API's headers the UI gets back.
const RETURNED: &[&str] = &[
    "content-type",
    "content-language",
    "cache-control",
    "etag",
    "last-modified",
    "location",
    "retry-after",
    "www-authenticate",
    "link",
];

/// What replaces the access token in an answer that echoes it.
const BLANKED: &str = "[access token removed by the extension's backend]";

/// An API call the UI asked for, checked.
#[derive(Debug)]
pub struct Call {
    method: Method,
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

impl Call {
    /// Reads and checks the UI's request against the allowed `origins`.
    pub fn parse(body: &[u8], origins: &[String]) -> Result<Call, Response> {
        let bad = |message: String| Response::error(400, "bad_request", message);
        let Ok(Value::Object(mut call)) = serde_json::from_slice::<Value>(body) else {
            return Err(bad(
                "send {\"url\", \"method\", \"headers\", \"body\"} as a JSON object".into(),
            ));
        };
        let Some(Value::String(url)) = call.remove("url") else {
            return Err(bad("url is missing".into()));
        };
        if url.contains('#') || !url.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(format!("{url:?} is not a URL")));
        }
        let Some(origin) = origin_of(&url) else {
            return Err(bad(format!(
                "{url:?} is not an https URL (or http on loopback)"
            )));
        };
        if !origins.contains(&origin) {
            return Err(Response::error(
                403,
                "origin_not_allowed",
                format!(
                    "{origin} is not among the APIs this extension calls (api_origins in its \
                     settings)"
                ),
            ));
        }
        let method = match call.remove("method") {
            None | Some(Value::Null) => Method::GET,
            Some(Value::String(name)) => match name.to_ascii_uppercase().as_str() {
                "GET" => Method::GET,
                "POST" => Method::POST,
                "PUT" => Method::PUT,
                "PATCH" => Method::PATCH,
                "DELETE" => Method::DELETE,
                "OPTIONS" => Method::OPTIONS,
                _ => {
                    return Err(bad(format!(
                        "method {name:?} is not supported (GET, POST, PUT, PATCH, DELETE, \
                         OPTIONS)"
                    )));
                }
            },
            Some(_) => return Err(bad("method is not a string".into())),
        };
        let mut headers = Vec::new();
        match call.remove("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(given)) => {
                for (name, value) in given {
                    let Value::String(value) = value else {
                        return Err(bad(format!("header {name} is not a string")));
                    };
                    let lower = name.to_ascii_lowercase();
                    if FORBIDDEN.contains(&lower.as_str()) || lower.starts_with("proxy-") {
                        return Err(bad(format!(
                            "the header {name} is the backend's to set, not the UI's"
                        )));
                    }
                    let parsed = HeaderName::from_bytes(name.as_bytes())
                        .ok()
                        .zip(HeaderValue::from_str(&value).ok());
                    let Some(header) = parsed else {
                        return Err(bad(format!("the header {name:?} is malformed")));
                    };
                    headers.push(header);
                }
            }
            Some(_) => return Err(bad("headers is not an object".into())),
        }
        let body = match call.remove("body") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(text)) => text.into_bytes(),
            Some(_) => return Err(bad("body is not a string".into())),
        };
        if let Some(unknown) = call.keys().next() {
            return Err(bad(format!("unknown member {unknown:?}")));
        }
        Ok(Call {
            method,
            url,
            headers,
            body,
        })
    }

    /// The request, with `tokens`' access token.
    fn request(&self, tokens: &TokenSet) -> Result<Request<Vec<u8>>, Response> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.url.as_str());
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        let authorization = format!("Bearer {}", tokens.access_token().expose_secret());
        let mut value = HeaderValue::from_str(&authorization).map_err(|_| {
            Response::error(
                500,
                "bad_token",
                "the access token cannot be sent in a header",
            )
        })?;
        value.set_sensitive(true);
        builder
            .header(AUTHORIZATION, value)
            .body(self.body.clone())
            .map_err(|error| Response::error(400, "bad_request", format!("the URL: {error}")))
    }

    /// Whether the call may be sent twice.
    fn repeatable(&self) -> bool {
        self.method == Method::GET
    }
}

/// Sends `call` with a fresh access token from `source`, and answers with the API's
/// response.
pub async fn send(call: &Call, source: &TokenSource, transport: &Transport) -> Response {
    let tokens = match source.tokens().await {
        Ok(tokens) => tokens,
        Err(error) => return session_error(&error),
    };
    let mut answer = exchange(call, &tokens, transport).await;
    if answer.as_ref().is_ok_and(rejected_token) && call.repeatable() {
        info!(url = %call.url, "the API refused the access token; refreshing once");
        let tokens = match source.refresh().await {
            Ok(tokens) => tokens,
            Err(error) => return session_error(&error),
        };
        answer = exchange(call, &tokens, transport).await;
        return answer.map_or_else(|refusal| refusal, |response| reply(response, &tokens));
    }
    answer.map_or_else(|refusal| refusal, |response| reply(response, &tokens))
}

async fn exchange(
    call: &Call,
    tokens: &TokenSet,
    transport: &Transport,
) -> Result<http::Response<Vec<u8>>, Response> {
    let request = call.request(tokens)?;
    let response = transport.send(&Smol, request).await;
    info!(
        method = %call.method,
        url = %call.url,
        status = response.as_ref().map_or(0, |r| r.status().as_u16()),
        "api call"
    );
    response.map_err(|error| {
        let kind = match error.kind() {
            TransportErrorKind::Redirect => "api_redirected",
            TransportErrorKind::TooLarge => "api_answer_too_large",
            TransportErrorKind::TimedOut => "api_timed_out",
            _ => "api_unreachable",
        };
        Response::error(502, kind, format!("Calling {}: {error}", call.url))
    })
}

/// `401` with `error="invalid_token"` (RFC 6750 §3.1): the token expired early or was
/// revoked.
fn rejected_token(response: &http::Response<Vec<u8>>) -> bool {
    response.status() == 401
        && response
            .headers()
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .any(|value| value.as_bytes().windows(13).any(|w| w == b"invalid_token"))
}

/// The API's response for the UI, without the access token should it be echoed.
fn reply(response: http::Response<Vec<u8>>, tokens: &TokenSet) -> Response {
    let token = tokens.access_token().expose_secret();
    let mut headers = Map::new();
    for name in RETURNED {
        let values: Vec<&str> = response
            .headers()
            .get_all(*name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        if !values.is_empty() {
            headers.insert((*name).into(), json!(blank(&values.join(", "), token)));
        }
    }
    let status = response.status().as_u16();
    let body = match String::from_utf8(response.into_body()) {
        Ok(text) => json!(blank(&text, token)),
        Err(_) => {
            return Response::error(
                502,
                "api_answer_not_text",
                "the API answered with bytes that are not UTF-8 text",
            );
        }
    };
    Response::new(
        200,
        json!({"status": status, "headers": headers, "body": body}),
    )
}

/// `text` with every occurrence of `token` replaced.
fn blank(text: &str, token: &str) -> String {
    if token.is_empty() {
        text.to_owned()
    } else {
        text.replace(token, BLANKED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins() -> Vec<String> {
        vec!["https://api.example".into(), "http://127.0.0.1:9000".into()]
    }

    fn parse(body: Value) -> Result<Call, (u16, String)> {
        Call::parse(body.to_string().as_bytes(), &origins()).map_err(|refusal| {
            (
                refusal.status,
                refusal.body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
    }

    #[test]
    fn a_call_to_an_allowed_origin_is_read_with_its_method_headers_and_body() {
        let call = parse(json!({
            "url": "https://API.example:443/v1/items?x=1",
            "method": "post",
            "headers": {"Accept": "application/json", "X-Trace": "1"},
            "body": "{\"a\":1}"
        }))
        .expect("allowed");
        assert_eq!(call.method, Method::POST);
        assert_eq!(call.headers.len(), 2);
        assert_eq!(call.body, b"{\"a\":1}");
        assert!(!call.repeatable());
        let plain = parse(json!({"url": "http://127.0.0.1:9000/me"})).expect("loopback");
        assert_eq!(plain.method, Method::GET);
        assert!(plain.repeatable());
    }

    #[test]
    fn other_origins_credentials_and_malformed_calls_are_refused() {
        for (call, status, kind) in [
            (
                json!({"url": "https://evil.example/x"}),
                403,
                "origin_not_allowed",
            ),
            (
                json!({"url": "https://api.example.evil/x"}),
                403,
                "origin_not_allowed",
            ),
            (
                json!({"url": "https://api.example:8443/x"}),
                403,
                "origin_not_allowed",
            ),
            (json!({"url": "http://api.example/x"}), 400, "bad_request"),
            (
                json!({"url": "https://user@api.example/x"}),
                400,
                "bad_request",
            ),
            (
                json!({"url": "http://127.0.0.1:9001/x"}),
                403,
                "origin_not_allowed",
            ),
            (
                json!({"url": "https://api.example/x#f"}),
                400,
                "bad_request",
            ),
            (
                json!({"url": "https://api.example/a b"}),
                400,
                "bad_request",
            ),
            (json!({"method": "GET"}), 400, "bad_request"),
            (
                json!({"url": "https://api.example/", "method": "TRACE"}),
                400,
                "bad_request",
            ),
            (
                json!({"url": "https://api.example/", "headers": {"Authorization": "x"}}),
                400,
                "bad_request",
            ),
            (
                json!({"url": "https://api.example/", "headers": {"cookie": "x"}}),
                400,
                "bad_request",
            ),
            (
                json!({"url": "https://api.example/", "headers": {"Proxy-Foo": "x"}}),
                400,
                "bad_request",
            ),
            (
                json!({"url": "https://api.example/", "headers": {"X": "a\r\nB: c"}}),
                400,
                "bad_request",
            ),
            (
                json!({"url": "https://api.example/", "headers": {"bad name": "x"}}),
                400,
                "bad_request",
            ),
            (
                json!({"url": "https://api.example/", "body": 1}),
                400,
                "bad_request",
            ),
            (
                json!({"url": "https://api.example/", "token": "x"}),
                400,
                "bad_request",
            ),
            (json!(["https://api.example/"]), 400, "bad_request"),
        ] {
            assert_eq!(
                parse(call.clone()).err(),
                Some((status, kind.into())),
                "{call}"
            );
        }
    }

    #[test]
    fn an_echoed_token_is_blanked() {
        assert_eq!(
            blank("a tok b tok", "tok"),
            format!("a {BLANKED} b {BLANKED}")
        );
        assert_eq!(blank("nothing", ""), "nothing");
    }

    #[test]
    fn only_invalid_token_401s_are_tried_again() {
        let answer = |status: u16, challenge: Option<&str>| {
            let mut builder = http::Response::builder().status(status);
            if let Some(challenge) = challenge {
                builder = builder.header("www-authenticate", challenge);
            }
            builder.body(Vec::new()).expect("response")
        };
        assert!(rejected_token(&answer(
            401,
            Some("Bearer error=\"invalid_token\", error_description=\"expired\"")
        )));
        assert!(!rejected_token(&answer(401, Some("Bearer realm=\"x\""))));
        assert!(!rejected_token(&answer(401, None)));
        assert!(!rejected_token(&answer(
            403,
            Some("Bearer error=\"invalid_token\"")
        )));
    }
}
