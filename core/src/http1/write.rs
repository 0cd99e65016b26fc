//! Serialization of a request as HTTP/1.1 bytes.

use std::fmt;

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request};

/// Why a request could not be serialized by [`write_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// The request URI has no authority (it is not an absolute URI such as
    /// `https://host/path`), so there is no `host` to send.
    NoAuthority,
    /// The request URI carries userinfo (`user:password@host`); secrets are
    /// never put into URLs.
    UserInfoInUri,
    /// A header of the request contradicts the framing this writer produces:
    /// a `content-length` that is not exactly the body length, or any
    /// `transfer-encoding`. Holds the lowercase header name.
    ConflictingHeader(&'static str),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::NoAuthority => f.write_str("request uri has no authority"),
            WriteError::UserInfoInUri => f.write_str("request uri contains userinfo"),
            WriteError::ConflictingHeader(name) => write!(f, "conflicting {name} header"),
        }
    }
}

impl std::error::Error for WriteError {}

/// Serializes `request` as HTTP/1.1 bytes, appending to `out`.
///
/// The bytes are, in order:
///
/// 1. the request line `METHOD origin-form HTTP/1.1`, where origin-form is the
///    URI's `path?query` (`/` if the path is empty); the request is always
///    written as HTTP/1.1 whatever [`Request::version`] says;
/// 2. `host: host[:port]`, exactly as in the URI authority, unless the request
///    already has a `host` header;
/// 3. the request's headers in the order [`HeaderMap`] iterates them, names in
///    lowercase;
/// 4. `content-length: N` if the request has none and the method is POST, PUT
///    or PATCH or the body is non-empty;
/// 5. `connection: close` unless the request has a `connection` header;
/// 6. an empty line, then the body.
///
/// # Errors
///
/// [`WriteError::NoAuthority`] if the URI is not absolute,
/// [`WriteError::UserInfoInUri`] if it contains `user:password@`, and
/// [`WriteError::ConflictingHeader`] if the request carries
/// `transfer-encoding` or a `content-length` other than the body length.
/// On error `out` is left unchanged.
pub fn write_request(request: &Request<Vec<u8>>, out: &mut Vec<u8>) -> Result<(), WriteError> {
    write(request, true, out)
}

/// Serializes `request` as [`write_request`] does, but for a connection that stays open
/// for the next request: no `connection: close` is added (HTTP/1.1 connections persist
/// unless told otherwise, RFC 9112 §9.3). Whether the server kept it open is the
/// response's to say ([`ResponseReader::reusable`](super::ResponseReader::reusable)).
///
/// # Errors
///
/// As [`write_request`].
pub fn write_persistent_request(
    request: &Request<Vec<u8>>,
    out: &mut Vec<u8>,
) -> Result<(), WriteError> {
    write(request, false, out)
}

fn write(request: &Request<Vec<u8>>, close: bool, out: &mut Vec<u8>) -> Result<(), WriteError> {
    let uri = request.uri();
    let authority = uri.authority().ok_or(WriteError::NoAuthority)?;
    if authority.as_str().contains('@') {
        return Err(WriteError::UserInfoInUri);
    }
    let headers = request.headers();
    if headers.contains_key(TRANSFER_ENCODING) {
        return Err(WriteError::ConflictingHeader("transfer-encoding"));
    }
    let body = request.body();
    let has_length = check_content_length(headers, body.len())?;
    let add_length = !has_length
        && (!body.is_empty()
            || matches!(
                *request.method(),
                Method::POST | Method::PUT | Method::PATCH
            ));

    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    let path = uri.path();
    out.extend_from_slice(if path.is_empty() { "/" } else { path }.as_bytes());
    if let Some(query) = uri.query() {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    if !headers.contains_key(HOST) {
        write_field(out, b"host", authority.as_str().as_bytes());
    }
    for (name, value) in headers {
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if add_length {
        write_field(out, b"content-length", body.len().to_string().as_bytes());
    }
    if close && !headers.contains_key(CONNECTION) {
        write_field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(())
}

/// Appends one `name: value` field line.
fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Checks every `content-length` value of the request against the body
/// length. Returns whether the request has a `content-length` at all.
fn check_content_length(headers: &HeaderMap, body_len: usize) -> Result<bool, WriteError> {
    let mut present = false;
    for value in headers.get_all(CONTENT_LENGTH) {
        present = true;
        let digits = value.as_bytes().trim_ascii();
        if parse_decimal(digits) != Some(body_len) {
            return Err(WriteError::ConflictingHeader("content-length"));
        }
    }
    Ok(present)
}

/// Parses a non-empty string of ASCII digits; `None` on anything else or on
/// overflow.
fn parse_decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(usize::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};

    fn written(request: &Request<Vec<u8>>) -> Result<String, WriteError> {
        let mut out = Vec::new();
        write_request(request, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn request(method: Method, uri: &str, body: &[u8]) -> Request<Vec<u8>> {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(body.to_vec())
            .unwrap()
    }

    #[test]
    fn post_token_request_with_form_body_and_basic_auth_matches_golden_bytes() {
        let body = b"grant_type=authorization_code&code=abc123\
&redirect_uri=http%3A%2F%2F127.0.0.1%3A8765%2Fcallback&code_verifier=xyz";
        let request = Request::builder()
            .method(Method::POST)
            .uri("https://auth.example.com/oauth2/token")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(AUTHORIZATION, "Basic Y2xpZW50OnNlY3JldA==")
            .header("accept", "application/json")
            .body(body.to_vec())
            .unwrap();
        let expected = "POST /oauth2/token HTTP/1.1\r\n\
host: auth.example.com\r\n\
content-type: application/x-www-form-urlencoded\r\n\
authorization: Basic Y2xpZW50OnNlY3JldA==\r\n\
accept: application/json\r\n\
content-length: 113\r\n\
connection: close\r\n\
\r\n\
grant_type=authorization_code&code=abc123\
&redirect_uri=http%3A%2F%2F127.0.0.1%3A8765%2Fcallback&code_verifier=xyz";
        assert_eq!(body.len(), 113);
        assert_eq!(written(&request).unwrap(), expected);
    }

    #[test]
    fn written_request_parses_back_with_httparse() {
        let request = Request::builder()
            .method(Method::POST)
            .uri("http://127.0.0.1:8080/token?x=1")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(b"a=b".to_vec())
            .unwrap();
        let mut out = Vec::new();
        write_request(&request, &mut out).unwrap();
        let mut fields = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Request::new(&mut fields);
        let httparse::Status::Complete(head_len) = parsed.parse(&out).unwrap() else {
            panic!("head incomplete");
        };
        assert_eq!(parsed.method, Some("POST"));
        assert_eq!(parsed.path, Some("/token?x=1"));
        assert_eq!(parsed.version, Some(1));
        let names: Vec<&str> = parsed.headers.iter().map(|h| h.name).collect();
        assert_eq!(
            names,
            ["host", "content-type", "content-length", "connection"]
        );
        assert_eq!(&out[head_len..], b"a=b");
    }

    #[test]
    fn get_without_body_has_no_content_length_and_root_path_for_empty_path() {
        let request = request(Method::GET, "https://example.com", b"");
        assert_eq!(
            written(&request).unwrap(),
            "GET / HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_persistent_request_is_the_same_bytes_without_connection_close() {
        for (method, body) in [(Method::GET, &b""[..]), (Method::POST, &b"a=b"[..])] {
            let request = request(method, "https://example.com/token", body);
            let closing = written(&request).unwrap();
            let mut out = Vec::new();
            write_persistent_request(&request, &mut out).unwrap();
            let persistent = String::from_utf8(out).unwrap();
            assert_eq!(persistent, closing.replace("connection: close\r\n", ""));
            assert!(!persistent.contains("connection"), "{persistent}");
        }
    }

    #[test]
    fn query_is_kept_in_origin_form_and_port_in_host() {
        let request = request(Method::GET, "http://127.0.0.1:8765/a/b?c=d&e=f", b"");
        assert_eq!(
            written(&request).unwrap(),
            "GET /a/b?c=d&e=f HTTP/1.1\r\nhost: 127.0.0.1:8765\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn ipv6_host_is_written_as_in_the_uri() {
        let request = request(Method::GET, "http://[::1]:9000/x", b"");
        assert_eq!(
            written(&request).unwrap(),
            "GET /x HTTP/1.1\r\nhost: [::1]:9000\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn post_and_put_with_empty_body_send_content_length_zero() {
        for method in [Method::POST, Method::PUT] {
            let text = written(&request(method.clone(), "https://h/t", b"")).unwrap();
            assert_eq!(
                text,
                format!(
                    "{method} /t HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
            );
        }
    }

    #[test]
    fn non_empty_body_of_any_method_sends_content_length() {
        let text = written(&request(Method::DELETE, "https://h/t", b"xy")).unwrap();
        assert_eq!(
            text,
            "DELETE /t HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\nconnection: close\r\n\r\nxy"
        );
    }

    #[test]
    fn existing_host_connection_and_matching_content_length_are_not_duplicated() {
        let request = Request::builder()
            .method(Method::POST)
            .uri("https://example.com/token")
            .header(HOST, "other.example")
            .header(CONTENT_LENGTH, "3")
            .header(CONNECTION, "keep-alive")
            .body(b"abc".to_vec())
            .unwrap();
        assert_eq!(
            written(&request).unwrap(),
            "POST /token HTTP/1.1\r\nhost: other.example\r\ncontent-length: 3\r\n\
connection: keep-alive\r\n\r\nabc"
        );
    }

    #[test]
    fn repeated_header_values_are_written_in_order() {
        let mut request = request(Method::GET, "https://h/", b"");
        let headers = request.headers_mut();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-b", HeaderValue::from_static("2"));
        headers.append("x-a", HeaderValue::from_static("3"));
        let text = written(&request).unwrap();
        assert!(text.contains("x-a: 1\r\nx-a: 3\r\nx-b: 2\r\n"), "{text}");
    }

    #[test]
    fn content_length_different_from_body_length_is_rejected() {
        for value in ["4", "2", "", "+3", "3, 3", "abc", "99999999999999999999999"] {
            let mut request = request(Method::POST, "https://h/t", b"abc");
            request
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from_str(value).unwrap());
            assert_eq!(
                written(&request),
                Err(WriteError::ConflictingHeader("content-length")),
                "{value:?}"
            );
        }
    }

    #[test]
    fn transfer_encoding_is_rejected() {
        let mut request = request(Method::POST, "https://h/t", b"abc");
        request
            .headers_mut()
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert_eq!(
            written(&request),
            Err(WriteError::ConflictingHeader("transfer-encoding"))
        );
    }

    #[test]
    fn userinfo_in_uri_is_rejected() {
        for uri in ["https://user:pw@h/t", "https://user@h/t", "https://@h/t"] {
            assert_eq!(
                written(&request(Method::POST, uri, b"")),
                Err(WriteError::UserInfoInUri),
                "{uri}"
            );
        }
    }

    #[test]
    fn relative_uri_is_rejected() {
        assert_eq!(
            written(&request(Method::POST, "/token", b"")),
            Err(WriteError::NoAuthority)
        );
    }

    #[test]
    fn output_is_appended_and_left_unchanged_on_error() {
        let mut out = b"prefix".to_vec();
        write_request(&request(Method::GET, "https://h/", b""), &mut out).unwrap();
        assert!(out.starts_with(b"prefixGET / HTTP/1.1\r\n"));
        let before = out.clone();
        let bad = request(Method::GET, "https://u:p@h/", b"");
        assert!(write_request(&bad, &mut out).is_err());
        assert_eq!(out, before);
    }

    #[test]
    fn error_messages_are_short_and_lowercase() {
        assert_eq!(
            WriteError::ConflictingHeader("content-length").to_string(),
            "conflicting content-length header"
        );
        assert_eq!(
            WriteError::UserInfoInUri.to_string(),
            "request uri contains userinfo"
        );
        assert_eq!(
            WriteError::NoAuthority.to_string(),
            "request uri has no authority"
        );
    }
}
