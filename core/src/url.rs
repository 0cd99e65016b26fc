//! The little URL parsing configuration needs: absolute `http`/`https` endpoint URLs, checked
//! strictly once, so the rest of the engine can treat them as trusted strings (S6).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// An absolute `http` or `https` URL that passed [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Url<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The host as written (IPv6 literals without brackets).
    pub host: &'a str,
    /// The query without `?`, if any.
    pub query: Option<&'a str>,
}

impl Url<'_> {
    /// Whether the host is loopback: `localhost`, 127.0.0.0/8 or `::1`.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.host)
    }
}

/// Why a string is not an acceptable endpoint URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// Whitespace, control or non-ASCII characters.
    BadCharacter,
    /// The scheme is not `http` or `https` (lowercase).
    Scheme,
    /// No host, or a malformed one.
    Host,
    /// A port that is not a number in 1..=65535.
    Port,
    /// `user:password@` in the authority: credentials never go into URLs.
    UserInfo,
    /// A `#fragment`.
    Fragment,
    /// A `?query` where none may be (an issuer identifier, RFC 8414 §2).
    Query,
    /// `http` on a host that is not loopback.
    Insecure,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlError::BadCharacter => "contains whitespace, control or non-ASCII characters",
            UrlError::Scheme => "scheme must be `https` (or `http` on a loopback host)",
            UrlError::Host => "missing or malformed host",
            UrlError::Port => "malformed port",
            UrlError::UserInfo => "must not contain credentials",
            UrlError::Fragment => "must not contain a fragment",
            UrlError::Query => "must not contain a query",
            UrlError::Insecure => "plain `http` is allowed only on loopback hosts",
        })
    }
}

/// Parses an endpoint URL: `https://host[:port][/path][?query]`, or `http://` on a loopback
/// host. Rejects everything else rather than normalising it.
pub fn parse(input: &str) -> Result<Url<'_>, UrlError> {
    if !input.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(UrlError::BadCharacter);
    }
    if input.contains('#') {
        return Err(UrlError::Fragment);
    }
    let (scheme, rest) = input.split_once("://").ok_or(UrlError::Scheme)?;
    if scheme != "https" && scheme != "http" {
        return Err(UrlError::Scheme);
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(UrlError::UserInfo);
    }
    let (host, port) = split_host_port(authority)?;
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(1..) if port.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return Err(UrlError::Port),
        }
    }
    if !is_uri_path_and_query(path_and_query) {
        return Err(UrlError::BadCharacter);
    }
    let query = path_and_query.split_once('?').map(|(_, query)| query);
    let url = Url {
        scheme,
        host,
        query,
    };
    if scheme == "http" && !url.is_loopback() {
        return Err(UrlError::Insecure);
    }
    Ok(url)
}

/// RFC 3986 path and query characters: unreserved, sub-delims, `:@/?`, and `%` only as the
/// start of a `%XX` escape. (Browsers tolerate more, such as `<` or `|`; an endpoint that
/// needs them is misconfigured.)
fn is_uri_path_and_query(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'%' => bytes
            .get(i + 1..i + 3)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)),
        _ => b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?".contains(&b),
    })
}

/// Splits `host[:port]` or `[v6][:port]`, checking the host's shape.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), UrlError> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (v6, after) = bracketed.split_once(']').ok_or(UrlError::Host)?;
        v6.parse::<Ipv6Addr>().map_err(|_| UrlError::Host)?;
        return match after {
            "" => Ok((v6, None)),
            _ => Ok((v6, Some(after.strip_prefix(':').ok_or(UrlError::Port)?))),
        };
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let valid_name = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid_name {
        return Err(UrlError::Host);
    }
    Ok((host, port))
}

/// Whether `host` is loopback as S6 defines it: `localhost`, 127.0.0.0/8 or `::1`
/// (IPv6 brackets optional; IPv4-mapped forms such as `::ffff:127.0.0.1` count).
pub fn is_loopback_host(host: &str) -> bool {
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || unbracketed
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s6_https_endpoints_parse_with_port_path_and_query() {
        let url = parse("https://login.example.com:8443/oauth2/v2.0/authorize?tenant=x").unwrap();
        assert_eq!(url.scheme, "https");
        assert_eq!(url.host, "login.example.com");
        assert_eq!(url.query, Some("tenant=x"));
        assert_eq!(parse("https://example.com").unwrap().query, None);
    }

    #[test]
    fn s6_plain_http_only_on_loopback_hosts() {
        for ok in [
            "http://127.0.0.1:3000/token",
            "http://127.1.2.3/token",
            "http://localhost:8080/token",
            "http://LOCALHOST/token",
            "http://[::1]:9000/token",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for insecure in [
            "http://example.com/token",
            "http://128.0.0.1/token",
            "http://localhost.evil.com/token",
            "http://[::2]/token",
            "http://0.0.0.0/token",
        ] {
            assert_eq!(parse(insecure), Err(UrlError::Insecure), "{insecure}");
        }
    }

    #[test]
    fn s6_rejects_other_schemes_credentials_fragments_and_odd_characters() {
        let cases = [
            ("file:///etc/passwd", UrlError::Scheme),
            ("javascript://alert(1)", UrlError::Scheme),
            ("HTTPS://example.com", UrlError::Scheme),
            ("example.com/authorize", UrlError::Scheme),
            ("https://user:pw@example.com/", UrlError::UserInfo),
            ("https://example.com/a#frag", UrlError::Fragment),
            ("https://example.com/a b", UrlError::BadCharacter),
            // Found by the authorization_url fuzz target: printable but not URI characters.
            ("https://idp.example/authorize?x=<", UrlError::BadCharacter),
            ("https://idp.example/a<b>", UrlError::BadCharacter),
            ("https://idp.example/a?q=\"|^`", UrlError::BadCharacter),
            ("https://idp.example/a?q={x}", UrlError::BadCharacter),
            ("https://idp.example/a[0]", UrlError::BadCharacter),
            ("https://idp.example/a%2", UrlError::BadCharacter),
            ("https://idp.example/a%zz", UrlError::BadCharacter),
            ("https://example.com/\r\nx", UrlError::BadCharacter),
            ("https://exämple.com/", UrlError::BadCharacter),
            ("https:///path", UrlError::Host),
            ("https://ex;ample.com/", UrlError::Host),
            ("https://[::1/", UrlError::Host),
            ("https://example.com:0/", UrlError::Port),
            ("https://example.com:65536/", UrlError::Port),
            ("https://example.com:+443/", UrlError::Port),
            ("https://[::1]x/", UrlError::Port),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input), Err(expected), "{input:?}");
        }
    }
}
