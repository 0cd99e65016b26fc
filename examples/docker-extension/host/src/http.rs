//! The browser's side, as a computation: bytes of a request head in, a [`Verdict`] out, and
//! the bytes of the answer.
//!
//! Nothing here touches a socket. [`parse_head`] is incremental: give it everything read so
//! far and it answers "need more", a head, or an error that says which status to answer
//! with. [`judge`] decides what a parsed head is: a sign-in redirect, or a [`Refusal`].
//! A refusal never ends the program; it is an HTTP answer to whoever sent the request.

use crate::redirect::{Endpoint, Landing};

/// The largest request head read, terminating blank line included. Anything longer is
/// answered with 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// The parts of a request head this program looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'a> {
    /// The method, case as sent.
    pub method: &'a str,
    /// The request target, as sent: visible ASCII.
    pub target: &'a str,
    /// The value of the one `Host` header, without surrounding whitespace.
    pub host: Option<&'a str>,
}

/// Why a request head could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The head breaks HTTP/1.1 syntax (answer 400).
    Malformed,
    /// The head carries two `Host` headers (answer 400, RFC 9112 §3.2).
    DuplicateHost,
    /// The head is longer than [`MAX_HEAD`] (answer 431).
    TooLarge,
}

/// Reads a request head from the start of `buf`, everything received so far.
///
/// Returns `Ok(None)` while the blank line that ends the head has not arrived and `buf` is
/// still within [`MAX_HEAD`]; the caller reads more and calls again.
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead<'_>>, HeadError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if end + 4 > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    // The head without the blank line: lines separated by CRLF, the last one's CRLF being
    // the start of the blank line.
    let head = &buf[..end];
    let mut lines = CrlfLines { rest: Some(head) };
    let request_line = lines.next().ok_or(HeadError::Malformed)?;
    let (method, target) = parse_request_line(request_line)?;
    let mut host = None;
    for line in lines {
        let (name, value) = parse_header_line(line)?;
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(HeadError::DuplicateHost);
            }
            host = Some(value);
        }
    }
    Ok(Some(RequestHead {
        method,
        target,
        host,
    }))
}

/// The lines of a head, split at each CRLF. A bare CR or LF stays inside its line, where
/// the line parsers refuse it as a control character.
struct CrlfLines<'a> {
    /// What is left to split; `None` once the last line was given out.
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for CrlfLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(at) => {
                self.rest = Some(&rest[at + 2..]);
                Some(&rest[..at])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Splits `METHOD SP TARGET SP HTTP/1.x`.
fn parse_request_line(line: &[u8]) -> Result<(&str, &str), HeadError> {
    if line.iter().any(|b| !(0x20..=0x7e).contains(b)) {
        return Err(HeadError::Malformed);
    }
    let line = std::str::from_utf8(line).map_err(|_| HeadError::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) || target.is_empty() {
        return Err(HeadError::Malformed);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HeadError::Malformed);
    }
    Ok((method, target))
}

/// Splits `name: value`, trimming the value's surrounding spaces and tabs.
fn parse_header_line(line: &[u8]) -> Result<(&str, &str), HeadError> {
    let colon = line
        .iter()
        .position(|b| *b == b':')
        .ok_or(HeadError::Malformed)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // An empty name, or whitespace before the colon or at the start (obsolete line
    // folding), is refused as RFC 9112 §5.1 and §5.2 ask.
    if name.is_empty() || !name.iter().copied().all(is_token_byte) {
        return Err(HeadError::Malformed);
    }
    // Field values may hold visible ASCII, spaces, tabs and (obsolete) bytes above 0x7f.
    if value
        .iter()
        .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
    {
        return Err(HeadError::Malformed);
    }
    let name = std::str::from_utf8(name).map_err(|_| HeadError::Malformed)?;
    let value = value.trim_ascii();
    // Only the Host value is read as text; a value that is not UTF-8 is no valid Host.
    let value = std::str::from_utf8(value).unwrap_or("\u{fffd}");
    Ok((name, value))
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// A sign-in redirect: report its query (`?` included, as received), then send the
    /// browser to the landing page.
    Callback(&'a str),
    /// Anything else: answer with this refusal and close.
    Refuse(Refusal),
}

/// A request that is not a sign-in redirect, and the answer it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The head is not HTTP/1.1 (400).
    Malformed,
    /// The `Host` header is missing, repeated or names another host (400): a web page
    /// reaching the port through DNS rebinding.
    WrongHost,
    /// A method other than GET (405).
    MethodNotAllowed,
    /// A target that is not a path (400).
    NotOriginForm,
    /// A path other than the redirect URI's (404).
    NotFound,
    /// The right path without `state` and `code` or `error` (400).
    NotACallback,
    /// A head larger than [`MAX_HEAD`] (431).
    TooLarge,
    /// The listener no longer reports callbacks (503): it is about to stop.
    Ended,
}

impl Refusal {
    /// The refusal that answers a head that could not be read.
    pub fn for_head_error(error: HeadError) -> Refusal {
        match error {
            HeadError::Malformed => Refusal::Malformed,
            HeadError::DuplicateHost => Refusal::WrongHost,
            HeadError::TooLarge => Refusal::TooLarge,
        }
    }

    /// The status code and reason phrase.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::Malformed
            | Refusal::WrongHost
            | Refusal::NotOriginForm
            | Refusal::NotACallback => (400, "Bad Request"),
            Refusal::NotFound => (404, "Not Found"),
            Refusal::MethodNotAllowed => (405, "Method Not Allowed"),
            Refusal::TooLarge => (431, "Request Header Fields Too Large"),
            Refusal::Ended => (503, "Service Unavailable"),
        }
    }

    /// A few words for the diagnostics on standard error; never any of the request.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Malformed => "a request that is not HTTP/1.1",
            Refusal::WrongHost => "a request with a missing or foreign Host header",
            Refusal::MethodNotAllowed => "a request with a method other than GET",
            Refusal::NotOriginForm => "a request whose target is not a path",
            Refusal::NotFound => "a request for another path",
            Refusal::NotACallback => "a request without state and code or error",
            Refusal::TooLarge => "a request head larger than 8 KiB",
            Refusal::Ended => "a callback after the listener stopped reporting",
        }
    }

    /// The whole response: status, headers and a short page.
    pub fn response(self) -> Vec<u8> {
        let (title, text) = match self {
            Refusal::Malformed => ("Bad request", "The request could not be read."),
            Refusal::WrongHost => (
                "Bad request",
                "The request was not addressed to this sign-in listener.",
            ),
            Refusal::MethodNotAllowed => ("Method not allowed", "Only GET is served here."),
            Refusal::NotOriginForm => ("Bad request", "The request target is not a path."),
            Refusal::NotFound => (
                "Not found",
                "This address only receives the browser's return from signing in.",
            ),
            Refusal::NotACallback => (
                "This is not a sign-in redirect",
                "This address only receives the browser's return from signing in.",
            ),
            Refusal::TooLarge => (
                "Request header fields too large",
                "The request's header is larger than 8 KiB.",
            ),
            Refusal::Ended => (
                "This sign-in is no longer waiting",
                "Start the sign-in again from Docker Desktop.",
            ),
        };
        let (code, reason) = self.status();
        let allow = match self {
            Refusal::MethodNotAllowed => Some(("Allow", "GET")),
            _ => None,
        };
        response(code, reason, allow, &page(title, &format!("<p>{text}</p>")))
    }
}

/// Decides what a request is, against the endpoint it was sent to.
///
/// The `Host` header is checked first, so a page that reached the port by DNS rebinding
/// learns nothing else about it.
pub fn judge<'a>(head: &RequestHead<'a>, endpoint: &Endpoint) -> Verdict<'a> {
    match head.host {
        Some(host) if endpoint.accepts_host(host) => {}
        _ => return Verdict::Refuse(Refusal::WrongHost),
    }
    if head.method != "GET" {
        return Verdict::Refuse(Refusal::MethodNotAllowed);
    }
    if !head.target.starts_with('/') || head.target.contains('#') {
        return Verdict::Refuse(Refusal::NotOriginForm);
    }
    let (path, query) = match head.target.find('?') {
        Some(at) => head.target.split_at(at),
        None => (head.target, ""),
    };
    if path != endpoint.path {
        return Verdict::Refuse(Refusal::NotFound);
    }
    match query.strip_prefix('?') {
        Some(params) if is_callback(params) => Verdict::Callback(query),
        _ => Verdict::Refuse(Refusal::NotACallback),
    }
}

/// Whether a query (without its `?`) names the parameters of an authorization response:
/// `state`, and `code` or `error` (RFC 6749 §4.1.2). Values are not looked at: judging
/// them is the backend's work.
pub fn is_callback(params: &str) -> bool {
    let names: Vec<Vec<u8>> = params
        .split('&')
        .map(|pair| percent_decode(pair.split('=').next().unwrap_or(pair)))
        .collect();
    let has = |name: &[u8]| names.iter().any(|n| n == name);
    has(b"state") && (has(b"code") || has(b"error"))
}

/// Decodes `%XX` escapes and `+` (form encoding's space); a broken escape is kept as it is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The answer to a sign-in redirect: 303 to the landing page, with a link for browsers
/// that do not follow it (a custom scheme may need the user's permission).
pub fn redirect_response(landing: &Landing) -> Vec<u8> {
    let href = html_escape(landing.as_str());
    let body = page(
        "Sign-in received",
        &format!(
            "<p>You can close this tab and return to Docker Desktop.</p>\n\
             <p><a href=\"{href}\">Open Docker Desktop</a></p>"
        ),
    );
    response(
        303,
        "See Other",
        Some(("Location", landing.as_str())),
        &body,
    )
}

/// A small HTML page.
fn page(title: &str, content: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title></head>\n<body><h1>{title}</h1>\n{content}\n</body></html>\n"
    )
}

/// A complete response. Every answer closes the connection, is not cached, sends no
/// Referer onward, and may run no script.
fn response(code: u16, reason: &str, extra: Option<(&str, &str)>, body: &str) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {code} {reason}\r\n");
    if let Some((name, value)) = extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Cache-Control: no-store\r\n\
         Referrer-Policy: no-referrer\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: default-src 'none'\r\n\
         Connection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// Escapes text for an HTML attribute value or element content.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redirect::RedirectUri;

    fn endpoint() -> Endpoint {
        match RedirectUri::parse("http://127.0.0.1/callback") {
            Ok(uri) => uri.bound_to(5000),
            Err(e) => panic!("{e}"),
        }
    }

    fn head(bytes: &[u8]) -> RequestHead<'_> {
        match parse_head(bytes) {
            Ok(Some(head)) => head,
            other => panic!("{other:?}"),
        }
    }

    fn verdict(bytes: &[u8]) -> Verdict<'_> {
        judge(&head(bytes), &endpoint())
    }

    const CALLBACK: &[u8] =
        b"GET /callback?code=a%2Fb&state=xyz HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nUser-Agent: t\r\n\r\n";

    #[test]
    fn a_browser_request_head_is_read() {
        assert_eq!(
            head(CALLBACK),
            RequestHead {
                method: "GET",
                target: "/callback?code=a%2Fb&state=xyz",
                host: Some("127.0.0.1:5000"),
            }
        );
    }

    #[test]
    fn a_head_read_byte_by_byte_needs_more_until_the_blank_line() {
        for len in 0..CALLBACK.len() {
            assert_eq!(parse_head(&CALLBACK[..len]), Ok(None), "{len}");
        }
        assert!(matches!(parse_head(CALLBACK), Ok(Some(_))));
    }

    #[test]
    fn bytes_after_the_head_are_not_part_of_it() {
        let mut bytes = CALLBACK.to_vec();
        bytes.extend_from_slice(b"body bytes");
        assert_eq!(head(&bytes), head(CALLBACK));
    }

    #[test]
    fn a_head_without_headers_has_no_host() {
        assert_eq!(head(b"GET / HTTP/1.0\r\n\r\n").host, None);
    }

    #[test]
    fn host_value_is_trimmed_and_name_is_case_insensitive() {
        assert_eq!(
            head(b"GET / HTTP/1.1\r\nhOsT: \t127.0.0.1:5000 \r\n\r\n").host,
            Some("127.0.0.1:5000")
        );
    }

    #[test]
    fn a_head_over_the_cap_is_too_large() {
        let mut bytes = b"GET / HTTP/1.1\r\nX: ".to_vec();
        bytes.resize(MAX_HEAD, b'a');
        assert_eq!(parse_head(&bytes), Err(HeadError::TooLarge));
        bytes.truncate(MAX_HEAD - 1);
        assert_eq!(parse_head(&bytes), Ok(None));
        // Exactly at the cap, blank line included, is still read.
        bytes.truncate(MAX_HEAD - 4);
        bytes.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse_head(&bytes), Ok(Some(_))));
    }

    #[test]
    fn broken_heads_are_malformed() {
        let cases: &[&[u8]] = &[
            b"\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        ];
        for bytes in cases {
            assert_eq!(
                parse_head(bytes),
                Err(HeadError::Malformed),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn two_host_headers_are_refused() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(HeadError::DuplicateHost)
        );
    }

    #[test]
    fn a_callback_is_recognised_with_its_query_as_sent() {
        assert_eq!(
            verdict(CALLBACK),
            Verdict::Callback("?code=a%2Fb&state=xyz")
        );
        assert_eq!(
            verdict(b"GET /callback?error=access_denied&state=s HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n"),
            Verdict::Callback("?error=access_denied&state=s")
        );
    }

    #[test]
    fn the_host_header_is_checked_before_anything_else() {
        for host in ["evil.example:5000", "127.0.0.1:5001", "localhost:5000"] {
            let request = format!("POST /elsewhere HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(
                judge(&head(request.as_bytes()), &endpoint()),
                Verdict::Refuse(Refusal::WrongHost),
                "{host}"
            );
        }
        assert_eq!(
            verdict(b"GET /callback?code=1&state=2 HTTP/1.1\r\n\r\n"),
            Verdict::Refuse(Refusal::WrongHost)
        );
    }

    #[test]
    fn only_get_is_served() {
        for method in ["POST", "HEAD", "get", "OPTIONS"] {
            let request = format!(
                "{method} /callback?code=1&state=2 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n"
            );
            assert_eq!(
                judge(&head(request.as_bytes()), &endpoint()),
                Verdict::Refuse(Refusal::MethodNotAllowed),
                "{method}"
            );
        }
    }

    #[test]
    fn targets_must_be_the_configured_path() {
        let cases: &[(&[u8], Refusal)] = &[
            (b"GET http://127.0.0.1:5000/callback?code=1&state=2 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n", Refusal::NotOriginForm),
            (b"GET * HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n", Refusal::NotOriginForm),
            (b"GET /callback?code=1&state=2#x HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n", Refusal::NotOriginForm),
            (b"GET /callback/?code=1&state=2 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n", Refusal::NotFound),
            (b"GET /Callback?code=1&state=2 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n", Refusal::NotFound),
            (b"GET /favicon.ico HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n", Refusal::NotFound),
        ];
        for (bytes, refusal) in cases {
            assert_eq!(
                verdict(bytes),
                Verdict::Refuse(*refusal),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn the_right_path_without_callback_parameters_is_not_a_callback() {
        for target in [
            "/callback",
            "/callback?",
            "/callback?state=1",
            "/callback?code=1",
            "/callback?codes=1&state=2",
            "/callback?x=code&y=state",
        ] {
            let request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n");
            assert_eq!(
                judge(&head(request.as_bytes()), &endpoint()),
                Verdict::Refuse(Refusal::NotACallback),
                "{target}"
            );
        }
    }

    #[test]
    fn callback_parameter_names_may_be_escaped_or_valueless() {
        assert!(is_callback("st%61te=1&code=2"));
        assert!(is_callback("state&error"));
        assert!(is_callback("iss=x&&state=&code=c"));
        assert!(!is_callback("state%=1&code=2"));
        assert!(!is_callback(""));
    }

    #[test]
    fn the_redirect_sends_the_browser_to_the_landing_and_escapes_the_link() {
        let landing = match Landing::parse("https://example.com/?a=1&b=\"<x>\"") {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let text = String::from_utf8(redirect_response(&landing)).unwrap_or_default();
        assert!(text.starts_with("HTTP/1.1 303 See Other\r\n"), "{text}");
        assert!(text.contains("\r\nLocation: https://example.com/?a=1&b=\"<x>\"\r\n"));
        assert!(text.contains("\r\nCache-Control: no-store\r\n"));
        assert!(text.contains("\r\nReferrer-Policy: no-referrer\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.contains("href=\"https://example.com/?a=1&amp;b=&quot;&lt;x&gt;&quot;\""));
        assert!(text.contains("You can close this tab and return to Docker Desktop."));
    }

    #[test]
    fn refusals_have_their_status_and_a_matching_length() {
        let text = String::from_utf8(Refusal::MethodNotAllowed.response()).unwrap_or_default();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\n"),
            "{text}"
        );
        for refusal in [
            Refusal::Malformed,
            Refusal::NotFound,
            Refusal::TooLarge,
            Refusal::Ended,
            Refusal::NotACallback,
        ] {
            let bytes = refusal.response();
            let text = String::from_utf8_lossy(&bytes);
            let (code, _) = refusal.status();
            assert!(text.starts_with(&format!("HTTP/1.1 {code} ")), "{text}");
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
            assert!(
                head.contains(&format!("Content-Length: {}", body.len())),
                "{head}"
            );
            assert!(head.contains("Connection: close"));
        }
        let text = String::from_utf8(Refusal::NotACallback.response()).unwrap_or_default();
        assert!(text.contains("This is not a sign-in redirect"));
    }
}
