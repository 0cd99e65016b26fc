//! The token HTTP client: one blocking request per connection, for the drivers' blocking
//! pools (see [the crate docs](crate#why-the-http-client-blocks)).
//!
//! What it guarantees (S6, S34): `https` with certificate verification, plain `http` only to
//! loopback hosts (and only to loopback addresses), no redirects followed, a connect timeout,
//! one deadline for the whole exchange, and a cap on the response size. Error details name
//! hosts and what failed, never the request's headers or body, which hold secrets (S41).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::{Request, Response};
use latchkey::http1::{ReadError, ResponseReader, write_request};
use latchkey::{TransportError, TransportErrorKind, is_loopback_host};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::proxy::{MAX_CONNECT_REPLY, Proxy, ProxyServer};
use crate::tls::{Roots, TlsError, client_config};

/// How [`HttpClient`] connects and how long it waits.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The longest wait for one TCP connection (each resolved address is tried in turn);
    /// must not be zero. Default: 10 s.
    pub connect_timeout: Duration,
    /// The longest a whole exchange may take: connecting, the proxy tunnel, the TLS
    /// handshake, sending and reading. Name resolution uses the system resolver, which has
    /// its own timeouts and cannot be interrupted. Default: 30 s.
    pub timeout: Duration,
    /// The largest response accepted, head and body. Default: 1 MiB.
    pub max_response_bytes: usize,
    /// The certificate authorities trusted. Default: [`Roots::WebPki`].
    pub roots: Roots,
    /// The HTTPS proxy. Default: [`Proxy::none()`]; programs that honour `HTTPS_PROXY`
    /// pass [`Proxy::from_env()`], so that a library never reads the environment behind its
    /// caller's back.
    pub proxy: Proxy,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            max_response_bytes: 1 << 20,
            roots: Roots::WebPki,
            proxy: Proxy::none(),
        }
    }
}

/// A blocking HTTP/1.1 client for token requests. Cloning is cheap (the configuration is
/// shared).
#[derive(Clone)]
pub struct HttpClient {
    config: Arc<ClientConfig>,
    options: Arc<HttpOptions>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The rustls configuration is long and follows from `options.roots`.
        f.debug_struct("HttpClient")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client with `options`.
    ///
    /// # Errors
    ///
    /// A [`TlsError`] if the TLS configuration cannot be built from `options.roots`.
    pub fn new(options: HttpOptions) -> Result<HttpClient, TlsError> {
        Ok(HttpClient {
            config: client_config(&options.roots)?,
            options: Arc::new(options),
        })
    }

    /// Sends `request` on a new connection and reads the response, blocking the thread.
    ///
    /// The request is written with [`latchkey::http1::write_request`], the response read with
    /// [`ResponseReader`] (length-delimited, chunked or close-delimited).
    ///
    /// # Errors
    ///
    /// A [`TransportError`] whose kind says what failed:
    /// [`Other`](TransportErrorKind::Other) for a request this client refuses to send (plain
    /// `http` to a host that is not loopback, another scheme, a URI without host);
    /// [`Connect`](TransportErrorKind::Connect) when resolving, connecting or the proxy
    /// failed; [`Tls`](TransportErrorKind::Tls) for the handshake and certificate
    /// verification; [`TimedOut`](TransportErrorKind::TimedOut) when a timeout passed;
    /// [`Io`](TransportErrorKind::Io) when the connection failed later;
    /// [`Protocol`](TransportErrorKind::Protocol) for a malformed response;
    /// [`TooLarge`](TransportErrorKind::TooLarge) for a response over the cap; and
    /// [`Redirect`](TransportErrorKind::Redirect) for any 3xx, which is never followed.
    pub fn send(&self, request: &Request<Vec<u8>>) -> Result<Response<Vec<u8>>, TransportError> {
        let deadline = Deadline::after(self.options.timeout);
        let target = Target::of(request)?;
        let mut bytes = Vec::new();
        write_request(request, &mut bytes).map_err(|error| {
            TransportError::new(
                TransportErrorKind::Other,
                format!("cannot write the request: {error}"),
            )
        })?;
        let mut stream = self.connect(&target, &deadline)?;
        deadline.apply(stream.tcp())?;
        stream
            .write_all(&bytes)
            .and_then(|()| stream.flush())
            .map_err(|error| failure("sending the request", &error, TransportErrorKind::Io))?;
        let response = read_response(&mut stream, self.options.max_response_bytes, &deadline)?;
        if response.status().is_redirection() {
            return Err(TransportError::new(
                TransportErrorKind::Redirect,
                format!(
                    "{} answered {}; redirects are not followed",
                    target.host,
                    response.status()
                ),
            ));
        }
        Ok(response)
    }

    /// A connection to `target`, through the proxy if one applies, with TLS set up when the
    /// scheme is `https`.
    fn connect(&self, target: &Target<'_>, deadline: &Deadline) -> Result<Stream, TransportError> {
        let connect_timeout = self.options.connect_timeout;
        let tcp = match self.options.proxy.for_host(target.host) {
            Some(proxy) => {
                let mut tcp =
                    open_tcp(proxy.host(), proxy.port(), false, connect_timeout, deadline)?;
                open_tunnel(&mut tcp, proxy, target, deadline)?;
                tcp
            }
            None => open_tcp(
                target.host,
                target.port,
                !target.tls,
                connect_timeout,
                deadline,
            )?,
        };
        if !target.tls {
            return Ok(Stream::Plain(tcp));
        }
        let host = target.host;
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            TransportError::new(
                TransportErrorKind::Other,
                format!("{host:?} is not a valid TLS server name"),
            )
        })?;
        let connection =
            ClientConnection::new(Arc::clone(&self.config), name).map_err(|error| {
                TransportError::new(TransportErrorKind::Tls, format!("TLS with {host}: {error}"))
            })?;
        let mut tls = StreamOwned::new(connection, tcp);
        while tls.conn.is_handshaking() {
            deadline.apply(&tls.sock)?;
            tls.conn.complete_io(&mut tls.sock).map_err(|error| {
                failure(
                    format_args!("TLS handshake with {host}"),
                    &error,
                    TransportErrorKind::Tls,
                )
            })?;
        }
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// Where a request goes.
struct Target<'a> {
    /// Without brackets.
    host: &'a str,
    port: u16,
    tls: bool,
}

impl Target<'_> {
    fn of(request: &Request<Vec<u8>>) -> Result<Target<'_>, TransportError> {
        let refuse = |detail: String| TransportError::new(TransportErrorKind::Other, detail);
        let uri = request.uri();
        let host = uri
            .host()
            .ok_or_else(|| refuse("the request URI has no host".to_owned()))?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tls = match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => true,
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => {
                if !is_loopback_host(host) {
                    return Err(refuse(format!(
                        "plain http to a non-loopback host refused ({host}); use https"
                    )));
                }
                false
            }
            _ => {
                return Err(refuse(
                    "the request URI is neither https nor http".to_owned(),
                ));
            }
        };
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target { host, port, tls })
    }
}

/// The end of the time allowed for one exchange.
struct Deadline {
    /// `None` when the timeout is too large to represent: no limit.
    at: Option<Instant>,
    timeout: Duration,
}

impl Deadline {
    fn after(timeout: Duration) -> Deadline {
        Deadline {
            at: Instant::now().checked_add(timeout),
            timeout,
        }
    }

    /// The time left (`None`: unlimited), or a `TimedOut` error when none is.
    fn remaining(&self) -> Result<Option<Duration>, TransportError> {
        let Some(at) = self.at else {
            return Ok(None);
        };
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TransportError::new(
                TransportErrorKind::TimedOut,
                format!("the exchange took longer than {:?}", self.timeout),
            ));
        }
        Ok(Some(left))
    }

    /// Bounds the next reads and writes on `tcp` by the time left.
    fn apply(&self, tcp: &TcpStream) -> Result<(), TransportError> {
        let left = self.remaining()?;
        tcp.set_read_timeout(left)
            .and_then(|()| tcp.set_write_timeout(left))
            .map_err(|error| failure("setting socket timeouts", &error, TransportErrorKind::Io))
    }
}

/// Connects to `host:port`, trying each resolved address in turn; with `loopback_only`,
/// only loopback addresses (so that a `localhost` resolving elsewhere gets no plain http).
fn open_tcp(
    host: &str,
    port: u16,
    loopback_only: bool,
    connect_timeout: Duration,
    deadline: &Deadline,
) -> Result<TcpStream, TransportError> {
    let addresses = (host, port).to_socket_addrs().map_err(|error| {
        TransportError::new(
            TransportErrorKind::Connect,
            format!("resolving {host}: {error}"),
        )
    })?;
    let mut last_error = None;
    for address in addresses.filter(|address| !loopback_only || address.ip().is_loopback()) {
        let limit = deadline
            .remaining()?
            .map_or(connect_timeout, |left| left.min(connect_timeout));
        match TcpStream::connect_timeout(&address, limit) {
            Ok(tcp) => return Ok(tcp),
            Err(error) => last_error = Some(error),
        }
    }
    Err(match last_error {
        Some(error) => failure(
            format_args!("connecting to {host}:{port}"),
            &error,
            TransportErrorKind::Connect,
        ),
        None => TransportError::new(
            TransportErrorKind::Connect,
            format!("{host} has no usable address"),
        ),
    })
}

/// Asks `proxy` (connected as `tcp`) for a tunnel to `target` and reads its reply.
fn open_tunnel(
    tcp: &mut TcpStream,
    proxy: &ProxyServer,
    target: &Target<'_>,
    deadline: &Deadline,
) -> Result<(), TransportError> {
    let proxy_failure = |error: &io::Error| {
        failure(
            format_args!("proxy {}:{}", proxy.host(), proxy.port()),
            error,
            TransportErrorKind::Connect,
        )
    };
    deadline.apply(tcp)?;
    tcp.write_all(&proxy.connect_request(target.host, target.port))
        .map_err(|error| proxy_failure(&error))?;
    let mut head = Vec::new();
    loop {
        // One byte at a time: the reply head has no length, and a byte read past its end
        // would belong to the tunnel. It is a few dozen bytes.
        let mut byte = 0;
        deadline.apply(tcp)?;
        match tcp.read(std::slice::from_mut(&mut byte)) {
            Ok(0) => {
                let closed = io::Error::from(io::ErrorKind::UnexpectedEof);
                return Err(proxy_failure(&closed));
            }
            Ok(_) => head.push(byte),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(proxy_failure(&error)),
        }
        let check = byte == b'\n' || head.len() > MAX_CONNECT_REPLY;
        if check && proxy.connect_reply(&head)?.is_some() {
            return Ok(());
        }
    }
}

fn read_response(
    stream: &mut Stream,
    max_response_bytes: usize,
    deadline: &Deadline,
) -> Result<Response<Vec<u8>>, TransportError> {
    let mut reader = ResponseReader::new(max_response_bytes);
    let mut buffer = vec![0; 16 * 1024];
    loop {
        deadline.apply(stream.tcp())?;
        let read = match stream.read(&mut buffer) {
            Ok(0) => return reader.read_eof().map_err(read_failure),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            // rustls reports a TLS peer that closes without close_notify this way, and many
            // servers do. A framed body cut short is still an error of the reader's.
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return reader.read_eof().map_err(read_failure);
            }
            Err(error) => {
                return Err(failure(
                    "reading the response",
                    &error,
                    TransportErrorKind::Io,
                ));
            }
        };
        if let Some(response) = reader.read(&buffer[..read]).map_err(read_failure)? {
            return Ok(response);
        }
    }
}

fn read_failure(error: ReadError) -> TransportError {
    let kind = match error {
        ReadError::TooLarge { .. } => TransportErrorKind::TooLarge,
        _ => TransportErrorKind::Protocol,
    };
    TransportError::new(kind, format!("reading the response: {error}"))
}

/// A transport error for an I/O `error` while doing `what`: a socket timeout is
/// `TimedOut`, an error from rustls is `Tls`, anything else `otherwise`.
fn failure(
    what: impl fmt::Display,
    error: &io::Error,
    otherwise: TransportErrorKind,
) -> TransportError {
    // A read timeout is `WouldBlock` on Unix and `TimedOut` on Windows.
    if matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        return TransportError::new(TransportErrorKind::TimedOut, format!("{what}: timed out"));
    }
    let tls = error
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>());
    let kind = if tls {
        TransportErrorKind::Tls
    } else {
        otherwise
    };
    TransportError::new(kind, format!("{what}: {error}"))
}

/// A connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    // Boxed: a rustls connection is over a kilobyte.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buffer),
            Stream::Tls(tls) => tls.read(buffer),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(bytes),
            Stream::Tls(tls) => tls.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s6_loopback_hosts() {
        for host in [
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "127.255.0.9",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "example.com",
            "localhost.example.com",
            "128.0.0.1",
            "0.0.0.0",
            "::",
            "127.1",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
