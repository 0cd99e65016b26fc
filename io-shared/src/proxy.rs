//! HTTPS proxies: which one a host is reached through (`HTTPS_PROXY`, `NO_PROXY`), and the
//! `CONNECT` exchange that opens a tunnel through it.
//!
//! Only `http://` proxies are supported: the client opens a plain TCP connection to the
//! proxy, asks it to `CONNECT` to the token endpoint, and speaks TLS with the endpoint
//! inside that tunnel, so the proxy sees neither the request nor the tokens.

use std::env::{self, VarError};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use latchkey::{TransportError, TransportErrorKind};
use secrecy::{ExposeSecret, SecretString};

use latchkey::is_loopback_host;

/// The longest reply head to `CONNECT` accepted from a proxy.
pub const MAX_CONNECT_REPLY: usize = 8 * 1024;

/// The HTTPS proxy to use, if any, and the hosts reached without it.
#[derive(Debug, Clone)]
pub struct Proxy {
    server: Option<ProxyServer>,
    bypass: Vec<Bypass>,
}

impl Proxy {
    /// The proxy the environment names, as curl reads it: the first non-empty of
    /// `https_proxy`, `HTTPS_PROXY`, `all_proxy`, `ALL_PROXY`, and the first non-empty of
    /// `no_proxy`, `NO_PROXY`. `HTTP_PROXY` is not read: plain http only ever goes to
    /// loopback hosts, which are never proxied. See [`Proxy::from_values`] for the syntax.
    ///
    /// # Errors
    ///
    /// A [`ProxyError`] if the chosen proxy variable is not valid Unicode, not a URL, or
    /// names a scheme other than `http`. A setting that is wrong is reported rather than
    /// ignored: silently going direct would fail later and more obscurely behind a firewall.
    pub fn from_env() -> Result<Proxy, ProxyError> {
        let https_proxy = first_set(&["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"])?;
        let no_proxy = first_set(&["no_proxy", "NO_PROXY"])?;
        Proxy::from_values(https_proxy.as_deref(), no_proxy.as_deref())
    }

    /// The proxy given by the values of `HTTPS_PROXY` and `NO_PROXY`.
    ///
    /// `https_proxy` is `[http://][user:password@]host[:port][/]`; the port defaults to 80,
    /// user and password are percent-decoded and sent as `Proxy-Authorization: Basic`. An
    /// empty value means no proxy.
    ///
    /// `no_proxy` is a comma-separated list of hosts reached directly, compared
    /// case-insensitively: `*` (every host); a domain `example.com`, `.example.com` or
    /// `*.example.com`, each matching `example.com` and its subdomains; an IP address; a
    /// network such as `10.0.0.0/8` or `fd00::/8`. A `:port` on an entry is ignored. Entries
    /// that are none of these match nothing.
    ///
    /// # Errors
    ///
    /// [`ProxyError::UnsupportedScheme`] for a scheme other than `http`,
    /// [`ProxyError::Malformed`] for anything else that does not fit the syntax.
    pub fn from_values(
        https_proxy: Option<&str>,
        no_proxy: Option<&str>,
    ) -> Result<Proxy, ProxyError> {
        let server = match https_proxy.map(str::trim).filter(|url| !url.is_empty()) {
            Some(url) => Some(ProxyServer::parse(url)?),
            None => None,
        };
        let bypass = no_proxy
            .into_iter()
            .flat_map(|list| list.split(','))
            .filter_map(Bypass::parse)
            .collect();
        Ok(Proxy { server, bypass })
    }

    /// No proxy: every host is reached directly.
    pub fn none() -> Proxy {
        Proxy {
            server: None,
            bypass: Vec::new(),
        }
    }

    /// The proxy to reach `host` through, or `None` to connect directly: when there is no
    /// proxy, when `NO_PROXY` matches, and always for loopback hosts (a proxy cannot reach
    /// this machine's loopback interface). `host` is a URI's host; IPv6 addresses may be in
    /// brackets.
    pub fn for_host(&self, host: &str) -> Option<&ProxyServer> {
        let server = self.server.as_ref()?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let direct = is_loopback_host(&host) || self.bypass.iter().any(|rule| rule.matches(&host));
        (!direct).then_some(server)
    }
}

/// A `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bypass {
    /// `*`.
    All,
    /// A domain, lowercase, without leading dot: matches itself and its subdomains.
    Domain(String),
    /// An address (prefix = its full length) or a network.
    Network { address: IpAddr, prefix: u32 },
}

impl Bypass {
    fn parse(entry: &str) -> Option<Bypass> {
        let entry = entry.trim();
        let host = match entry.strip_prefix('[') {
            Some(bracketed) => bracketed.split(']').next().unwrap_or(bracketed),
            // One colon separates a port; more make an IPv6 address.
            None => match entry.split_once(':') {
                Some((host, port)) if !port.contains(':') => host,
                _ => entry,
            },
        };
        if host.is_empty() {
            return None;
        }
        if host == "*" {
            return Some(Bypass::All);
        }
        if let Ok(address) = host.parse::<IpAddr>() {
            return Some(Bypass::Network {
                address,
                prefix: address_bits(address),
            });
        }
        if let Some((address, prefix)) = host.split_once('/') {
            let address = address.parse::<IpAddr>().ok()?;
            let prefix = prefix
                .parse()
                .ok()
                .filter(|prefix| *prefix <= address_bits(address))?;
            return Some(Bypass::Network { address, prefix });
        }
        let domain = host
            .trim_start_matches('*')
            .trim_start_matches('.')
            .trim_end_matches('.');
        Some(Bypass::Domain(domain.to_ascii_lowercase()))
    }

    /// Whether `host` (lowercase, without brackets or trailing dot) is reached directly.
    fn matches(&self, host: &str) -> bool {
        match self {
            Bypass::All => true,
            Bypass::Domain(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|head| head.is_empty() || head.ends_with('.')),
            Bypass::Network { address, prefix } => host
                .parse::<IpAddr>()
                .is_ok_and(|host| in_network(host, *address, *prefix)),
        }
    }
}

fn address_bits(address: IpAddr) -> u32 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn in_network(host: IpAddr, network: IpAddr, prefix: u32) -> bool {
    // The host `::ffff:10.1.2.3` is the IPv4 host 10.1.2.3. The network keeps its family,
    // so that `prefix` never exceeds its length.
    match (host.to_canonical(), network) {
        (IpAddr::V4(host), IpAddr::V4(network)) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(host) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(host), IpAddr::V6(network)) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(host) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

fn first_set(names: &[&'static str]) -> Result<Option<String>, ProxyError> {
    for &variable in names {
        match env::var(variable) {
            Ok(value) if !value.trim().is_empty() => return Ok(Some(value)),
            Ok(_) | Err(VarError::NotPresent) => {}
            Err(VarError::NotUnicode(_)) => return Err(ProxyError::NotUnicode { variable }),
        }
    }
    Ok(None)
}

/// An `http://` proxy. `Debug` shows whether it has credentials, never them (S41).
#[derive(Clone)]
pub struct ProxyServer {
    host: String,
    port: u16,
    /// The whole `Proxy-Authorization` value, `Basic <base64 of user:password>`.
    authorization: Option<SecretString>,
}

impl ProxyServer {
    fn parse(url: &str) -> Result<ProxyServer, ProxyError> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
            {
                return Err(ProxyError::UnsupportedScheme {
                    scheme: scheme.to_ascii_lowercase(),
                });
            }
            Some(_) => {
                return Err(ProxyError::Malformed {
                    reason: "invalid scheme",
                });
            }
            // curl takes a bare `host:port` as an http proxy, and so do many configurations.
            None => url,
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(ProxyError::Malformed {
                reason: "a path, query or fragment (percent-encode those characters in a password)",
            });
        }
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (host, port) = split_host_port(host_port)?;
        let authorization = match userinfo {
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let malformed = || ProxyError::Malformed {
                    reason: "bad percent-encoding in the credentials",
                };
                let user = percent_decode(user).ok_or_else(malformed)?;
                let password = percent_decode(password).ok_or_else(malformed)?;
                let basic = STANDARD.encode(format!("{user}:{password}"));
                Some(SecretString::from(format!("Basic {basic}")))
            }
            None => None,
        };
        Ok(ProxyServer {
            host,
            port,
            authorization,
        })
    }

    /// The proxy's host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request asking the proxy for a tunnel to `host:port`: the `CONNECT` line, `Host`,
    /// and `Proxy-Authorization` when the proxy URL had credentials (so the bytes may hold
    /// the proxy password: write them to the proxy and drop them). `host` is a URI's host,
    /// which cannot contain line breaks; IPv6 addresses may be in brackets.
    pub fn connect_request(&self, host: &str, port: u16) -> Vec<u8> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(authorization) = &self.authorization {
            request.push_str("Proxy-Authorization: ");
            request.push_str(authorization.expose_secret());
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request.into_bytes()
    }

    /// Checks the proxy's reply to `CONNECT`, given the bytes read so far.
    ///
    /// `Ok(None)`: the reply head is not complete yet; read more. `Ok(Some(len))`: the proxy
    /// answered 2xx and the tunnel is open; the head is `len` bytes long and any bytes after
    /// it already belong to the tunnel.
    ///
    /// # Errors
    ///
    /// A [`TransportError`] of kind [`Connect`](TransportErrorKind::Connect) naming the
    /// status when the proxy refused (such as 407, authentication required), and of kind
    /// [`Protocol`](TransportErrorKind::Protocol) when the reply is malformed or its head is
    /// longer than [`MAX_CONNECT_REPLY`].
    pub fn connect_reply(&self, bytes: &[u8]) -> Result<Option<usize>, TransportError> {
        let proxy = format!("proxy {}:{}", self.host, self.port);
        if bytes.len() > MAX_CONNECT_REPLY {
            return Err(TransportError::new(
                TransportErrorKind::Protocol,
                format!("{proxy}: reply to CONNECT longer than {MAX_CONNECT_REPLY} bytes"),
            ));
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut reply = httparse::Response::new(&mut headers);
        match reply.parse(bytes) {
            Ok(httparse::Status::Partial) => Ok(None),
            Ok(httparse::Status::Complete(len)) => match reply.code.unwrap_or_default() {
                200..=299 => Ok(Some(len)),
                status => Err(TransportError::new(
                    TransportErrorKind::Connect,
                    format!("{proxy} answered {status} to CONNECT"),
                )),
            },
            Err(_) => Err(TransportError::new(
                TransportErrorKind::Protocol,
                format!("{proxy}: malformed reply to CONNECT"),
            )),
        }
    }
}

impl fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("has_credentials", &self.authorization.is_some())
            .finish()
    }
}

/// `host[:port]` or `[ipv6][:port]`; the port defaults to 80.
fn split_host_port(text: &str) -> Result<(String, u16), ProxyError> {
    let malformed = |reason| ProxyError::Malformed { reason };
    let (host, port) = match text.strip_prefix('[') {
        Some(bracketed) => {
            let (address, rest) = bracketed
                .split_once(']')
                .ok_or(malformed("unclosed '[' in the host"))?;
            address
                .parse::<Ipv6Addr>()
                .map_err(|_| malformed("invalid IPv6 address"))?;
            let port = match rest {
                "" => None,
                rest => Some(rest.strip_prefix(':').ok_or(malformed("invalid port"))?),
            };
            (address, port)
        }
        None => {
            let (host, port) = match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            };
            let valid = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !valid {
                return Err(malformed("invalid host"));
            }
            (host, port)
        }
    };
    let port = match port {
        None | Some("") => 80,
        Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => {
            port.parse().map_err(|_| malformed("port out of range"))?
        }
        Some(_) => return Err(malformed("invalid port")),
    };
    Ok((host.to_owned(), port))
}

/// `%XX`-decodes `text`; `None` on a bad escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let (&high, &low) = (tail.first()?, tail.get(1)?);
            let digit = |b: u8| char::from(b).to_digit(16);
            bytes.push(u8::try_from(digit(high)? * 16 + digit(low)?).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// Why a proxy setting was refused. Messages never quote the setting: a proxy URL may hold
/// a password.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyError {
    /// An environment variable is not valid Unicode.
    NotUnicode {
        /// The variable's name.
        variable: &'static str,
    },
    /// The proxy URL's scheme is not `http`: only `CONNECT` over plain TCP to the proxy is
    /// supported.
    UnsupportedScheme {
        /// The scheme, lowercase.
        scheme: String,
    },
    /// The proxy URL does not fit `[http://][user:password@]host[:port][/]`.
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotUnicode { variable } => write!(f, "{variable} is not valid Unicode"),
            ProxyError::UnsupportedScheme { scheme } => write!(
                f,
                "unsupported proxy scheme {scheme:?}: only http:// proxies are supported"
            ),
            ProxyError::Malformed { reason } => write!(f, "malformed proxy URL: {reason}"),
        }
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_no_proxy(no_proxy: &str) -> Proxy {
        Proxy::from_values(Some("http://proxy.corp:3128"), Some(no_proxy)).expect("valid")
    }

    fn proxied(proxy: &Proxy, host: &str) -> bool {
        proxy.for_host(host).is_some()
    }

    #[test]
    fn proxy_url_forms() {
        for (url, host, port) in [
            ("http://proxy.corp:3128", "proxy.corp", 3128),
            ("HTTP://Proxy.Corp:3128/", "Proxy.Corp", 3128),
            ("proxy.corp:8080", "proxy.corp", 8080),
            ("http://proxy.corp", "proxy.corp", 80),
            ("http://10.0.0.1:3128", "10.0.0.1", 3128),
            ("http://[fd00::1]:3128", "fd00::1", 3128),
            ("http://[fd00::1]", "fd00::1", 80),
            ("  http://u:p@proxy.corp:1  ", "proxy.corp", 1),
        ] {
            let proxy = Proxy::from_values(Some(url), None).expect(url);
            let server = proxy.for_host("idp.example").expect(url);
            assert_eq!((server.host(), server.port()), (host, port), "{url}");
        }
    }

    #[test]
    fn no_value_means_no_proxy() {
        for value in [None, Some(""), Some("  ")] {
            let proxy = Proxy::from_values(value, None).expect("valid");
            assert!(!proxied(&proxy, "idp.example"));
        }
        assert!(!proxied(&Proxy::none(), "idp.example"));
    }

    #[test]
    fn other_schemes_are_unsupported() {
        for (url, scheme) in [
            ("https://proxy.corp:3128", "https"),
            ("socks5://proxy.corp:1080", "socks5"),
            ("SOCKS5H://proxy.corp", "socks5h"),
        ] {
            assert_eq!(
                Proxy::from_values(Some(url), None).expect_err(url),
                ProxyError::UnsupportedScheme {
                    scheme: scheme.into()
                }
            );
        }
    }

    #[test]
    fn s41_malformed_proxy_urls_are_refused_without_quoting_them() {
        for url in [
            "http://",
            "http://user:SECRET@",
            "http://proxy.corp:99999",
            "http://proxy.corp:+80",
            "http://proxy.corp:port",
            "http://proxy.corp/path",
            "http://user:SEC/RET@proxy.corp",
            "http://user:SECRET%zz@proxy.corp",
            "http://user:SECRET%ff@proxy.corp",
            "http://[fd00::1",
            "http://[SECRET]:80",
            "http://a b:80",
            "http://fd00::1:80:x",
            "://proxy.corp",
            "ht tp://SECRET@proxy.corp",
        ] {
            let error = Proxy::from_values(Some(url), None).expect_err(url);
            assert!(
                matches!(error, ProxyError::Malformed { .. }),
                "{url}: {error:?}"
            );
            assert!(!error.to_string().contains("SEC"), "{error}");
        }
    }

    #[test]
    fn s41_debug_shows_that_there_are_credentials_not_them() {
        let proxy = Proxy::from_values(Some("http://alice:SECRET-pw@proxy.corp:3128"), None)
            .expect("valid");
        let debug = format!("{proxy:?}");
        assert!(
            !debug.contains("SECRET") && !debug.contains("alice"),
            "{debug}"
        );
        assert!(debug.contains("has_credentials: true"), "{debug}");
    }

    #[test]
    fn connect_request_bytes() {
        let proxy = Proxy::from_values(Some("http://al%40ice:p%3Aw%20d@proxy.corp:3128"), None)
            .expect("valid");
        let server = proxy.for_host("idp.example").expect("proxied");
        let request = String::from_utf8(server.connect_request("idp.example", 443)).expect("ascii");
        // base64("al@ice:p:w d")
        assert_eq!(
            request,
            "CONNECT idp.example:443 HTTP/1.1\r\nHost: idp.example:443\r\n\
             Proxy-Authorization: Basic YWxAaWNlOnA6dyBk\r\n\r\n"
        );
        let plain = Proxy::from_values(Some("proxy.corp:3128"), None).expect("valid");
        let server = plain.for_host("idp.example").expect("proxied");
        assert_eq!(
            server.connect_request("[2001:db8::1]", 8443),
            b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n"
        );
        assert_eq!(
            server.connect_request("2001:db8::1", 8443),
            server.connect_request("[2001:db8::1]", 8443)
        );
    }

    #[test]
    fn connect_reply_needs_the_whole_head_and_a_2xx() {
        let proxy = with_no_proxy("");
        let server = proxy.for_host("idp.example").expect("proxied");
        let ok = b"HTTP/1.1 200 Connection established\r\nVia: squid\r\n\r\n";
        for end in 0..ok.len() {
            assert_eq!(server.connect_reply(&ok[..end]), Ok(None), "{end}");
        }
        assert_eq!(server.connect_reply(ok), Ok(Some(ok.len())));
        assert_eq!(
            server.connect_reply(b"HTTP/1.0 204 OK\r\n\r\n\x16\x03"),
            Ok(Some(19))
        );

        let error = server
            .connect_reply(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            .expect_err("407");
        assert_eq!(error.kind(), TransportErrorKind::Connect);
        assert!(error.detail().contains("407"), "{error}");
        assert!(error.detail().contains("proxy.corp:3128"), "{error}");

        let error = server
            .connect_reply(b"SSH-2.0-OpenSSH\r\n\r\n")
            .expect_err("garbage");
        assert_eq!(error.kind(), TransportErrorKind::Protocol);
        let mut long = b"HTTP/1.1 200 OK\r\n".to_vec();
        while long.len() <= MAX_CONNECT_REPLY {
            long.extend_from_slice(b"X-Padding: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n");
        }
        let error = server.connect_reply(&long).expect_err("too long");
        assert_eq!(error.kind(), TransportErrorKind::Protocol);
    }

    #[test]
    fn no_proxy_matches_exact_hosts_and_domain_suffixes_case_insensitively() {
        let proxy =
            with_no_proxy("example.com, .corp.internal,*.dev.test ,Login.Microsoftonline.com.");
        for host in [
            "example.com",
            "EXAMPLE.com",
            "idp.example.com",
            "a.b.example.com",
            "example.com.",
            "corp.internal",
            "sso.corp.internal",
            "dev.test",
            "x.dev.test",
            "login.microsoftonline.com",
        ] {
            assert!(!proxied(&proxy, host), "{host} should be direct");
        }
        for host in [
            "notexample.com",
            "example.com.evil",
            "com",
            "internal",
            "microsoftonline.com",
        ] {
            assert!(proxied(&proxy, host), "{host} should be proxied");
        }
    }

    #[test]
    fn no_proxy_matches_ip_literals_and_networks() {
        let proxy =
            with_no_proxy("10.0.0.0/8,192.168.1.7,fd00::/8,[2001:db8::1]:443,172.16.0.0/33");
        for host in [
            "10.1.2.3",
            "192.168.1.7",
            "fd12::5",
            "[fd12::5]",
            "[2001:db8::1]",
            "::ffff:10.9.9.9",
        ] {
            assert!(!proxied(&proxy, host), "{host} should be direct");
        }
        for host in [
            "11.0.0.1",
            "192.168.1.8",
            "fe80::1",
            "2001:db8::2",
            "172.16.0.1",
            "10.example",
        ] {
            assert!(proxied(&proxy, host), "{host} should be proxied");
        }
        assert!(!proxied(&with_no_proxy("0.0.0.0/0"), "203.0.113.9"));
        // An IPv4-mapped network stays IPv6 (and its prefix stays in range).
        assert!(proxied(&with_no_proxy("::ffff:10.0.0.0/104"), "10.1.2.3"));
    }

    #[test]
    fn no_proxy_star_and_ports() {
        assert!(!proxied(&with_no_proxy("*"), "idp.example"));
        assert!(!proxied(&with_no_proxy("idp.example:443"), "idp.example"));
        assert!(proxied(&with_no_proxy(" , ,"), "idp.example"));
    }

    #[test]
    fn loopback_hosts_are_never_proxied() {
        let proxy = with_no_proxy("");
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "[::1]",
        ] {
            assert!(!proxied(&proxy, host), "{host}");
        }
        assert!(proxied(&proxy, "128.0.0.1"));
    }
}
