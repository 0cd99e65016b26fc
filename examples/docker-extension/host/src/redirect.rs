//! The two addresses the program is given: the loopback redirect URI it listens for, and the
//! landing page it sends the browser to afterwards.
//!
//! Both are checked once, at start, so that nothing the browser sends later can meet an
//! address the program would not have accepted. A redirect URI is kept in parts (host, port,
//! path); [`RedirectUri::bound_to`] fills in the port the operating system chose and gives
//! the [`Endpoint`] that requests are checked against.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The host part of a loopback redirect URI, in one of the three forms RFC 8252 §7.3 and
/// §8.3 describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopbackHost {
    /// An IPv4 literal in 127.0.0.0/8, written in its one canonical dotted form.
    V4(Ipv4Addr),
    /// The IPv6 loopback, written `[::1]`.
    V6,
    /// The name `localhost`, spelled as configured (any ASCII case); it is served on both
    /// 127.0.0.1 and ::1.
    Localhost(String),
}

impl fmt::Display for LoopbackHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoopbackHost::V4(ip) => write!(f, "{ip}"),
            LoopbackHost::V6 => f.write_str("[::1]"),
            LoopbackHost::Localhost(spelling) => f.write_str(spelling),
        }
    }
}

/// A checked loopback redirect URI: `http://HOST[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri {
    /// Where to listen.
    pub host: LoopbackHost,
    /// A fixed port, or `None` for a port the operating system picks (no port, or port 0).
    pub port: Option<u16>,
    /// The path the browser must request, starting with `/`.
    pub path: String,
}

impl RedirectUri {
    /// Checks `text` and takes it apart.
    ///
    /// Only `http` is accepted (a loopback listener has no certificate), only loopback
    /// hosts, and a path without query, fragment or dot segments, since the browser would
    /// never send those back as written.
    pub fn parse(text: &str) -> Result<RedirectUri, RedirectError> {
        if let Some(bad) = text.bytes().find(|b| !is_visible_ascii(*b)) {
            return Err(if bad == b' ' {
                RedirectError::Spaces
            } else {
                RedirectError::NotAscii
            });
        }
        let (scheme, rest) = text.split_once("://").ok_or(RedirectError::NotAbsolute)?;
        if scheme.eq_ignore_ascii_case("https") {
            return Err(RedirectError::Https);
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(RedirectError::Scheme);
        }
        if rest.contains('#') {
            return Err(RedirectError::Fragment);
        }
        if rest.contains('?') {
            return Err(RedirectError::Query);
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => return Err(RedirectError::NoPath),
        };
        if authority.contains('@') {
            return Err(RedirectError::UserInfo);
        }
        let (host, port) = split_host_port(authority)?;
        let host = parse_host(host)?;
        let port = parse_port(port)?;
        check_path(path)?;
        Ok(RedirectUri {
            host,
            port,
            path: path.to_owned(),
        })
    }

    /// The endpoint this redirect URI names once it listens on `port`.
    pub fn bound_to(&self, port: u16) -> Endpoint {
        Endpoint {
            host: self.host.clone(),
            port,
            path: self.path.clone(),
        }
    }
}

/// A redirect URI with its actual port: what the login must use, and what requests are
/// checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host as configured.
    pub host: LoopbackHost,
    /// The port listened on.
    pub port: u16,
    /// The path the browser must request.
    pub path: String,
}

impl Endpoint {
    /// Whether a request's `Host` header names this endpoint.
    ///
    /// This is the defence against DNS rebinding: a web page whose own name was made to
    /// resolve to 127.0.0.1 reaches the port, but its requests carry its own name. The name
    /// is compared without regard to ASCII case; the port must be written exactly (browsers
    /// leave it out for port 80).
    pub fn accepts_host(&self, value: &str) -> bool {
        let (name, port) = match value.rsplit_once(':') {
            // A colon inside `[::1]` is not a port separator.
            Some((name, port)) if !port.ends_with(']') => (name, Some(port)),
            _ => (value, None),
        };
        let port_matches = match port {
            Some(port) => port == self.port.to_string(),
            None => self.port == 80,
        };
        let name_matches = match &self.host {
            LoopbackHost::V4(ip) => name == ip.to_string(),
            LoopbackHost::V6 => name == "[::1]",
            LoopbackHost::Localhost(_) => name.eq_ignore_ascii_case("localhost"),
        };
        port_matches && name_matches
    }
}

impl fmt::Display for Endpoint {
    /// The redirect URI the login must use: `http://HOST:PORT/PATH`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// Why a redirect URI was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectError {
    /// It holds a byte outside visible ASCII.
    NotAscii,
    /// It holds a space.
    Spaces,
    /// It does not start with `scheme://`.
    NotAbsolute,
    /// It uses `https`, which a loopback listener cannot serve.
    Https,
    /// It uses a scheme other than `http`.
    Scheme,
    /// It has user information (`user@`).
    UserInfo,
    /// Its host is not a loopback address or `localhost`.
    NotLoopback,
    /// It writes the IPv6 loopback other than as `[::1]`.
    V6Spelling,
    /// Its port is not a number from 0 to 65535 written without leading zeros.
    Port,
    /// It has no path.
    NoPath,
    /// Its path holds a character a path may not hold, or a broken `%` escape.
    PathCharacter,
    /// Its path holds a `.` or `..` segment, which browsers remove.
    DotSegment,
    /// It has a query.
    Query,
    /// It has a fragment.
    Fragment,
}

impl fmt::Display for RedirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RedirectError::NotAscii => "the redirect URI must be plain ASCII",
            RedirectError::Spaces => "the redirect URI must not contain spaces",
            RedirectError::NotAbsolute => {
                "the redirect URI must be absolute, like http://127.0.0.1/callback"
            }
            RedirectError::Https => {
                "the redirect URI must use http, not https: a loopback listener has no certificate (RFC 8252 section 7.3)"
            }
            RedirectError::Scheme => "the redirect URI must use http",
            RedirectError::UserInfo => "the redirect URI must not contain a user name (user@)",
            RedirectError::NotLoopback => {
                "the redirect URI's host must be 127.0.0.1 (or another 127.x.y.z), [::1] or localhost"
            }
            RedirectError::V6Spelling => "write the IPv6 loopback address as [::1]",
            RedirectError::Port => {
                "the redirect URI's port must be a number from 0 to 65535 without leading zeros"
            }
            RedirectError::NoPath => {
                "the redirect URI needs a path starting with /, like http://127.0.0.1/callback"
            }
            RedirectError::PathCharacter => {
                "the redirect URI's path holds a character that must be percent-encoded, or a broken % escape"
            }
            RedirectError::DotSegment => {
                "the redirect URI's path must not contain . or .. segments"
            }
            RedirectError::Query => "the redirect URI must not have a query (?)",
            RedirectError::Fragment => "the redirect URI must not have a fragment (#)",
        })
    }
}

impl std::error::Error for RedirectError {}

/// Splits an authority into host and optional port text, minding IPv6 brackets.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), RedirectError> {
    if authority.starts_with('[') {
        let close = authority.find(']').ok_or(RedirectError::NotLoopback)?;
        let (host, after) = authority.split_at(close + 1);
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(RedirectError::NotLoopback),
            },
        };
    }
    Ok(match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// Checks the host: a 127.0.0.0/8 literal, `[::1]` or `localhost`.
fn parse_host(host: &str) -> Result<LoopbackHost, RedirectError> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(LoopbackHost::Localhost(host.to_owned()));
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match inner.parse::<Ipv6Addr>() {
            Ok(ip) if ip.is_loopback() && inner == "::1" => Ok(LoopbackHost::V6),
            Ok(ip) if ip.is_loopback() => Err(RedirectError::V6Spelling),
            _ => Err(RedirectError::NotLoopback),
        };
    }
    // Rust's parser takes only the canonical dotted quad (no leading zeros, four parts),
    // which is also how browsers write the address in the Host header.
    match host.parse::<Ipv4Addr>() {
        Ok(ip) if ip.is_loopback() => Ok(LoopbackHost::V4(ip)),
        _ => Err(RedirectError::NotLoopback),
    }
}

/// Checks the port text: absent or 0 means "the operating system picks".
fn parse_port(port: Option<&str>) -> Result<Option<u16>, RedirectError> {
    let Some(port) = port else {
        return Ok(None);
    };
    let canonical = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && (port == "0" || !port.starts_with('0'));
    if !canonical {
        return Err(RedirectError::Port);
    }
    match port.parse::<u16>() {
        Ok(0) => Ok(None),
        Ok(port) => Ok(Some(port)),
        Err(_) => Err(RedirectError::Port),
    }
}

/// Checks a path: RFC 3986 path characters, whole `%` escapes, no dot segments.
fn check_path(path: &str) -> Result<(), RedirectError> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let escape = bytes
                .get(i + 1..i + 3)
                .ok_or(RedirectError::PathCharacter)?;
            if !escape.iter().all(u8::is_ascii_hexdigit) {
                return Err(RedirectError::PathCharacter);
            }
            i += 3;
            continue;
        }
        if !(b == b'/' || is_pchar(b)) {
            return Err(RedirectError::PathCharacter);
        }
        i += 1;
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(RedirectError::DotSegment);
    }
    Ok(())
}

/// RFC 3986 `pchar` without `%`: unreserved, sub-delims, `:` and `@`.
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

/// Whether `b` is a visible ASCII character (no space, no control).
pub fn is_visible_ascii(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// Where the browser goes after its callback: an absolute URI, visible ASCII only, so it
/// can go into a `Location` header and an HTML link as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing(String);

/// The landing page when none is given: Docker Desktop's dashboard.
pub const DEFAULT_LANDING: &str = "docker-desktop://dashboard/open";

impl Landing {
    /// Checks `text`: `scheme:rest`, visible ASCII, and not a scheme that runs script.
    pub fn parse(text: &str) -> Result<Landing, LandingError> {
        if text.is_empty() {
            return Err(LandingError::Empty);
        }
        if !text.bytes().all(is_visible_ascii) {
            return Err(LandingError::NotVisibleAscii);
        }
        let (scheme, rest) = text.split_once(':').ok_or(LandingError::NoScheme)?;
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !scheme_ok || rest.is_empty() {
            return Err(LandingError::NoScheme);
        }
        // The landing also becomes a link in the page; a script URL there would run on the
        // listener's origin.
        if ["javascript", "vbscript", "data"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s))
        {
            return Err(LandingError::ScriptScheme);
        }
        Ok(Landing(text.to_owned()))
    }

    /// The landing URI as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a landing URI was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LandingError {
    /// It is empty.
    Empty,
    /// It holds a space, a control character (CR, LF, ...) or a non-ASCII byte.
    NotVisibleAscii,
    /// It does not start with a scheme (`name:`) followed by something.
    NoScheme,
    /// Its scheme is `javascript`, `vbscript` or `data`.
    ScriptScheme,
}

impl fmt::Display for LandingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LandingError::Empty => "the landing URL is empty",
            LandingError::NotVisibleAscii => {
                "the landing URL must be visible ASCII: no spaces, line breaks or other characters (percent-encode them)"
            }
            LandingError::NoScheme => {
                "the landing URL must be absolute, with a scheme, like docker-desktop://dashboard/open"
            }
            LandingError::ScriptScheme => {
                "the landing URL must not be a javascript:, vbscript: or data: URL"
            }
        })
    }
}

impl std::error::Error for LandingError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> RedirectUri {
        match RedirectUri::parse(text) {
            Ok(uri) => uri,
            Err(e) => panic!("{text} was refused: {e}"),
        }
    }

    fn refused(text: &str) -> RedirectError {
        match RedirectUri::parse(text) {
            Ok(uri) => panic!("{text} was accepted as {uri:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn ipv4_loopback_without_port_is_ephemeral() {
        let uri = ok("http://127.0.0.1/callback");
        assert_eq!(uri.host, LoopbackHost::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(uri.port, None);
        assert_eq!(uri.path, "/callback");
    }

    #[test]
    fn port_zero_is_ephemeral() {
        assert_eq!(ok("http://127.0.0.1:0/cb").port, None);
    }

    #[test]
    fn fixed_port_is_kept() {
        assert_eq!(ok("http://127.0.0.1:8080/cb").port, Some(8080));
        assert_eq!(ok("http://127.0.0.1:65535/cb").port, Some(65535));
    }

    #[test]
    fn any_127_address_is_loopback() {
        assert_eq!(
            ok("http://127.5.6.7/cb").host,
            LoopbackHost::V4(Ipv4Addr::new(127, 5, 6, 7))
        );
    }

    #[test]
    fn ipv6_loopback_and_localhost_are_accepted() {
        assert_eq!(ok("http://[::1]:9000/cb").host, LoopbackHost::V6);
        assert_eq!(ok("http://[::1]/cb").port, None);
        assert_eq!(
            ok("http://LocalHost/cb").host,
            LoopbackHost::Localhost("LocalHost".into())
        );
    }

    #[test]
    fn scheme_is_case_insensitive_and_path_may_be_just_a_slash() {
        let uri = ok("HTTP://localhost/");
        assert_eq!(uri.path, "/");
    }

    #[test]
    fn path_may_hold_escapes_and_sub_delims() {
        assert_eq!(
            ok("http://127.0.0.1/a%2Fb/c;d=e@f:g").path,
            "/a%2Fb/c;d=e@f:g"
        );
    }

    #[test]
    fn endpoint_prints_the_actual_port_and_the_configured_host() {
        let uri = ok("http://LOCALHOST/cb").bound_to(53682);
        assert_eq!(uri.to_string(), "http://LOCALHOST:53682/cb");
        assert_eq!(
            ok("http://[::1]/cb").bound_to(1).to_string(),
            "http://[::1]:1/cb"
        );
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let cases = [
            ("https://127.0.0.1/cb", RedirectError::Https),
            ("ftp://127.0.0.1/cb", RedirectError::Scheme),
            ("127.0.0.1/cb", RedirectError::NotAbsolute),
            ("http:/127.0.0.1/cb", RedirectError::NotAbsolute),
            ("http://127.0.0.1/c b", RedirectError::Spaces),
            ("http://127.0.0.1/caf\u{e9}", RedirectError::NotAscii),
            ("http://127.0.0.1/cb\r\n", RedirectError::NotAscii),
            ("http://user@127.0.0.1/cb", RedirectError::UserInfo),
            ("http://user:pw@127.0.0.1/cb", RedirectError::UserInfo),
            ("http://example.com/cb", RedirectError::NotLoopback),
            ("http://10.0.0.1/cb", RedirectError::NotLoopback),
            ("http://0.0.0.0/cb", RedirectError::NotLoopback),
            ("http://127.1/cb", RedirectError::NotLoopback),
            ("http://127.000.0.1/cb", RedirectError::NotLoopback),
            ("http://localhost./cb", RedirectError::NotLoopback),
            ("http://[::2]/cb", RedirectError::NotLoopback),
            ("http://[::1/cb", RedirectError::NotLoopback),
            ("http://[::1]x/cb", RedirectError::NotLoopback),
            ("http://::1/cb", RedirectError::NotLoopback),
            ("http://[0:0:0:0:0:0:0:1]/cb", RedirectError::V6Spelling),
            ("http://127.0.0.1:/cb", RedirectError::Port),
            ("http://127.0.0.1:080/cb", RedirectError::Port),
            ("http://127.0.0.1:65536/cb", RedirectError::Port),
            ("http://127.0.0.1:-1/cb", RedirectError::Port),
            ("http://127.0.0.1:1:2/cb", RedirectError::Port),
            ("http://127.0.0.1", RedirectError::NoPath),
            ("http://127.0.0.1:8080", RedirectError::NoPath),
            ("http://127.0.0.1/cb?x=1", RedirectError::Query),
            ("http://127.0.0.1?x=1", RedirectError::Query),
            ("http://127.0.0.1/cb#top", RedirectError::Fragment),
            ("http://127.0.0.1/a\"b", RedirectError::PathCharacter),
            ("http://127.0.0.1/a%2", RedirectError::PathCharacter),
            ("http://127.0.0.1/a%zz", RedirectError::PathCharacter),
            ("http://127.0.0.1/a/../b", RedirectError::DotSegment),
            ("http://127.0.0.1/./b", RedirectError::DotSegment),
        ];
        for (text, reason) in cases {
            assert_eq!(refused(text), reason, "{text}");
        }
    }

    #[test]
    fn host_header_must_name_the_configured_host_and_port() {
        let v4 = ok("http://127.0.0.1/cb").bound_to(5000);
        assert!(v4.accepts_host("127.0.0.1:5000"));
        assert!(!v4.accepts_host("127.0.0.1"));
        assert!(!v4.accepts_host("127.0.0.1:5001"));
        assert!(!v4.accepts_host("127.0.0.1:05000"));
        assert!(!v4.accepts_host("localhost:5000"));
        assert!(!v4.accepts_host("[::1]:5000"));
        assert!(!v4.accepts_host("evil.example:5000"));
        assert!(!v4.accepts_host(""));

        let v6 = ok("http://[::1]/cb").bound_to(5000);
        assert!(v6.accepts_host("[::1]:5000"));
        assert!(!v6.accepts_host("[::1]"));
        assert!(!v6.accepts_host("127.0.0.1:5000"));
        assert!(!v6.accepts_host("::1:5000"));

        let name = ok("http://localhost/cb").bound_to(5000);
        assert!(name.accepts_host("localhost:5000"));
        assert!(name.accepts_host("LOCALHOST:5000"));
        assert!(!name.accepts_host("localhost.:5000"));
        assert!(!name.accepts_host("127.0.0.1:5000"));
        assert!(!name.accepts_host("[::1]:5000"));
        assert!(!name.accepts_host("localhost"));
    }

    #[test]
    fn host_header_may_leave_out_port_80() {
        let uri = ok("http://127.0.0.1:80/cb").bound_to(80);
        assert!(uri.accepts_host("127.0.0.1"));
        assert!(uri.accepts_host("127.0.0.1:80"));
        let v6 = ok("http://[::1]:80/cb").bound_to(80);
        assert!(v6.accepts_host("[::1]"));
    }

    #[test]
    fn landing_accepts_absolute_uris() {
        for text in [
            DEFAULT_LANDING,
            "https://example.com/done?x=1&y=2",
            "x-app+v1.2:ok",
        ] {
            assert_eq!(
                Landing::parse(text).map(|l| l.as_str().to_owned()),
                Ok(text.into())
            );
        }
    }

    #[test]
    fn landing_refuses_relative_blank_and_script_uris() {
        let cases = [
            ("", LandingError::Empty),
            ("/relative", LandingError::NoScheme),
            ("no-scheme", LandingError::NoScheme),
            ("1http://x", LandingError::NoScheme),
            ("https:", LandingError::NoScheme),
            (":x", LandingError::NoScheme),
            ("https://a b", LandingError::NotVisibleAscii),
            ("https://a\r\nSet-Cookie:x", LandingError::NotVisibleAscii),
            ("https://caf\u{e9}", LandingError::NotVisibleAscii),
            ("https://a\tb", LandingError::NotVisibleAscii),
            ("JavaScript:alert(1)", LandingError::ScriptScheme),
            ("data:text/html,x", LandingError::ScriptScheme),
        ];
        for (text, reason) in cases {
            assert_eq!(Landing::parse(text), Err(reason), "{text:?}");
        }
    }
}
