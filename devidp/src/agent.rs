//! A scripted user agent: a minimal blocking HTTP/1.1 client that plays the browser in
//! tests. Plain `http://` to loopback addresses (`127.0.0.0/8`, `::1`, `localhost`) only.
//!
//! Every request has a 30 s deadline and a 1 MiB response cap, sends
//! `Connection: close`, and understands `Content-Length`, chunked and close-delimited
//! bodies.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Deadline for one request, from connecting to the end of the response.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response accepted.
const MAX_RESPONSE: usize = 1024 * 1024;
/// Redirects followed by [`browse`].
const MAX_REDIRECTS: usize = 10;

const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                          Chrome/138.0.0.0 Safari/537.36";
const ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,\
                      image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";

/// One navigation step of [`browse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The URL requested.
    pub url: String,
    /// The response status.
    pub status: u16,
    /// For a redirect (301, 302, 303, 307, 308): the `Location`, resolved against `url`.
    pub location: Option<String>,
    /// How long the request took.
    pub elapsed: Duration,
}

/// A response: status, header fields in order, body (chunked coding removed).
pub type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// Follows a browser's path: GET `url`, then follow redirect `Location`s (absolute or
/// relative) while they are `http://` to loopback, up to 10 redirects. Stops at the
/// first non-redirect response or at a `Location` with another scheme (e.g.
/// `docker-desktop://dashboard/open`) or host, which is recorded in the last [`Hop`] but
/// not fetched. When the redirect limit is hit, the last hop is a redirect.
///
/// Sends Chromium-like navigation headers: `Sec-Fetch-Site` is `none` for the first
/// request and `same-origin`, `same-site` or `cross-site` relative to the previous hop.
pub fn browse(url: &str) -> io::Result<Vec<Hop>> {
    let mut hops: Vec<Hop> = Vec::new();
    let mut current = Url::parse(url)?;
    let mut previous: Option<Url> = None;
    loop {
        let site = match &previous {
            None => "none",
            Some(p) if p.authority == current.authority => "same-origin",
            Some(p) if p.host == current.host => "same-site",
            Some(_) => "cross-site",
        };
        let headers = [
            ("Upgrade-Insecure-Requests", "1"),
            ("User-Agent", USER_AGENT),
            ("Accept", ACCEPT),
            ("Sec-Fetch-Site", site),
            ("Sec-Fetch-Mode", "navigate"),
            ("Sec-Fetch-User", "?1"),
            ("Sec-Fetch-Dest", "document"),
            ("Accept-Language", "en-US,en;q=0.9"),
        ];
        let started = Instant::now();
        let (status, fields, _) = exchange("GET", &current, &headers, &[])?;
        let location = match status {
            301 | 302 | 303 | 307 | 308 => header(&fields, "location").map(|l| current.resolve(l)),
            _ => None,
        };
        hops.push(Hop {
            url: current.text.clone(),
            status,
            location: location.clone(),
            elapsed: started.elapsed(),
        });
        let next = location.filter(|_| hops.len() <= MAX_REDIRECTS);
        match next.and_then(|next| Url::parse(&next).ok()) {
            Some(next) => previous = Some(std::mem::replace(&mut current, next)),
            None => return Ok(hops),
        }
    }
}

/// One raw GET of `url` with the given extra header fields (`Host` and `Connection:
/// close` are added unless given); returns status, header fields and body. For tests
/// that forge requests.
pub fn get(url: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    exchange("GET", &Url::parse(url)?, headers, &[])
}

/// One raw POST of `body` to `url` with the given extra header fields (`Host`,
/// `Content-Length` and `Connection: close` are added unless given), e.g. a hand-built
/// token request.
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Response> {
    exchange("POST", &Url::parse(url)?, headers, body)
}

/// Resolves `reference` (a `Location` value or a form `action`) against the `http://`
/// loopback URL `base`, as [`browse`] resolves `Location`s: absolute references are kept,
/// `//host…`, `/path`, `?query` and relative paths are joined to `base` (no dot-segment
/// removal), and an empty or fragment-only reference gives `base` without its fragment.
///
/// # Errors
///
/// `base` is not an `http://` URL to a loopback host.
pub fn resolve(base: &str, reference: &str) -> io::Result<String> {
    Ok(Url::parse(base)?.resolve(reference))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_owned())
}

fn bad_response(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

fn header<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn is_http(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}

/// An `http://` URL split for sending.
#[derive(Clone, Debug)]
struct Url {
    /// The URL as given, without a fragment.
    text: String,
    /// `host[:port]` as written, for `Host`.
    authority: String,
    /// The host, IPv6 without brackets.
    host: String,
    port: u16,
    /// Path and query, at least `/`.
    target: String,
}

impl Url {
    fn parse(url: &str) -> io::Result<Url> {
        if !is_http(url) {
            return Err(invalid("only http:// URLs are supported"));
        }
        let text = url.split('#').next().unwrap_or_default();
        let rest = &text[7..];
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        let target = match target.strip_prefix('?') {
            Some(_) => format!("/{target}"),
            None if target.is_empty() => "/".to_owned(),
            None => target.to_owned(),
        };
        if authority.contains('@') || target.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(invalid("URL with user info, spaces or non-ASCII"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| invalid("bad IPv6 host"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            None => 80,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| invalid("bad port"))?
            }
            Some(_) => return Err(invalid("bad port")),
        };
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(invalid("only loopback hosts are allowed"));
        }
        Ok(Url {
            text: text.to_owned(),
            authority: authority.to_owned(),
            host: host.to_ascii_lowercase(),
            port,
            target,
        })
    }

    /// Resolves a `Location` value against this URL (no dot-segment removal).
    fn resolve(&self, location: &str) -> String {
        let scheme_len = location.find([':', '/', '?', '#']);
        let has_scheme = scheme_len.is_some_and(|i| {
            location.as_bytes()[i] == b':'
                && location.as_bytes()[0].is_ascii_alphabetic()
                && location[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        });
        let path = self.target.split('?').next().unwrap_or("/");
        if has_scheme {
            location.to_owned()
        } else if location.starts_with("//") {
            format!("http:{location}")
        } else if location.starts_with('/') {
            format!("http://{}{location}", self.authority)
        } else if location.starts_with('?') {
            format!("http://{}{path}{location}", self.authority)
        } else if location.is_empty() || location.starts_with('#') {
            self.text.clone()
        } else {
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            format!("http://{}{dir}{location}", self.authority)
        }
    }

    /// The loopback addresses of the host, tried in order like a browser would.
    fn addresses(&self) -> io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .filter(|a| a.ip().is_loopback())
            .collect();
        match addrs.is_empty() {
            true => Err(invalid("the host does not resolve to a loopback address")),
            false => Ok(addrs),
        }
    }
}

fn exchange(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let deadline = Instant::now() + TIMEOUT;
    let given = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {} HTTP/1.1\r\n", url.target);
    if !given("host") {
        head.push_str(&format!("Host: {}\r\n", url.authority));
    }
    for (name, value) in headers {
        if [name, value].iter().any(|s| s.contains(['\r', '\n'])) {
            return Err(invalid("a header contains CR or LF"));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" && !given("content-length") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !given("connection") {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);

    let mut stream = connect(url, deadline)?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.write_all(&request)?;
    let mut buf = Vec::new();
    let mut chunk = [0; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(response) = parse_response(&buf, n == 0)? {
            return Ok(response);
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if buf.len() > MAX_RESPONSE {
            return Err(bad_response("response too large"));
        }
    }
}

fn connect(url: &Url, deadline: Instant) -> io::Result<TcpStream> {
    let mut last = io::Error::from(io::ErrorKind::NotFound);
    for addr in url.addresses()? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The response once `buf` holds all of it (`eof`: the server closed).
fn parse_response(buf: &[u8], eof: bool) -> io::Result<Option<Response>> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(bad_response("malformed response head")),
    };
    let status = parsed.code.unwrap_or_default();
    let fields: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let rest = &buf[head_len..];
    let chunked = header(&fields, "transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let length = header(&fields, "content-length").map(|v| v.trim().parse::<usize>());
    let body = if matches!(status, 204 | 304) {
        Some(Vec::new())
    } else if chunked {
        dechunk(rest)?
    } else if let Some(length) = length {
        let length = length.map_err(|_| bad_response("bad Content-Length"))?;
        rest.get(..length).map(<[u8]>::to_vec)
    } else if eof {
        Some(rest.to_vec())
    } else {
        None
    };
    Ok(body.map(|body| (status, fields, body)))
}

/// Decodes a chunked body; `None` while incomplete. Trailers are ignored.
fn dechunk(mut rest: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&rest[..line_end]);
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad_response("bad chunk size"))?;
        if size == 0 {
            return Ok(Some(body));
        }
        if size > MAX_RESPONSE {
            return Err(bad_response("chunk too large"));
        }
        rest = &rest[line_end + 2..];
        match rest.get(..size + 2) {
            Some(chunk) if chunk.ends_with(b"\r\n") => body.extend_from_slice(&chunk[..size]),
            Some(_) => return Err(bad_response("chunk not followed by CRLF")),
            None => return Ok(None),
        }
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_urls_only() {
        let url = Url::parse("http://127.0.0.1:8080?x=1#frag").unwrap();
        assert_eq!(
            (url.authority.as_str(), url.port, url.target.as_str()),
            ("127.0.0.1:8080", 8080, "/?x=1")
        );
        let url = Url::parse("HTTP://[::1]/cb").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.target.as_str()),
            ("::1", 80, "/cb")
        );
        for bad in [
            "https://127.0.0.1/",
            "http://example.com/",
            "http://10.0.0.1/",
            "http://u@127.0.0.1/",
            "http://127.0.0.1:x/",
            "http://127.0.0.1:99999/",
            "http://127.0.0.1/a b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves_locations() {
        let base = Url::parse("http://127.0.0.1:1/a/b?q=1").unwrap();
        for (location, expected) in [
            ("http://localhost:2/x", "http://localhost:2/x"),
            (
                "docker-desktop://dashboard/open",
                "docker-desktop://dashboard/open",
            ),
            ("com.example.app:/cb?code=1", "com.example.app:/cb?code=1"),
            ("//127.0.0.2/y", "http://127.0.0.2/y"),
            ("/c", "http://127.0.0.1:1/c"),
            ("?r=2", "http://127.0.0.1:1/a/b?r=2"),
            ("c/d", "http://127.0.0.1:1/a/c/d"),
            ("c:d/e", "c:d/e"),
            ("./c?x=a:b", "http://127.0.0.1:1/a/./c?x=a:b"),
        ] {
            assert_eq!(base.resolve(location), expected, "{location}");
        }
    }

    #[test]
    fn resolves_against_a_base_url() {
        let base = "http://127.0.0.1:9/auth/U?x=1#f";
        for (reference, expected) in [
            ("/interaction/V", "http://127.0.0.1:9/interaction/V"),
            ("V", "http://127.0.0.1:9/auth/V"),
            ("?y", "http://127.0.0.1:9/auth/U?y"),
            ("docker-desktop://x", "docker-desktop://x"),
            ("//[::1]:8/c", "http://[::1]:8/c"),
            ("", "http://127.0.0.1:9/auth/U?x=1"),
        ] {
            assert_eq!(resolve(base, reference).unwrap(), expected, "{reference}");
        }
        assert!(resolve("http://example.com/", "/x").is_err());
        assert!(resolve("https://127.0.0.1/", "/x").is_err());
    }

    #[test]
    fn parses_responses() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(parse_response(full, false).unwrap().unwrap().2, b"abc");
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab", false)
                .unwrap()
                .is_none()
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked, false).unwrap().unwrap().2, b"abcde");
        let close = b"HTTP/1.1 200 OK\r\n\r\nxyz";
        assert!(parse_response(close, false).unwrap().is_none());
        assert_eq!(parse_response(close, true).unwrap().unwrap().2, b"xyz");
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false
            )
            .is_err()
        );
    }
}
