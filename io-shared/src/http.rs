//! The token HTTP client: one request per connection, either on an async runtime's own
//! sockets ([`HttpClient::send_on`], what the drivers use) or blocking the calling thread
//! ([`HttpClient::send`]). Both run the same exchange; only the socket underneath differs.
//!
//! What it guarantees (S6, S34): `https` with certificate verification, plain `http` only to
//! loopback hosts (and only to loopback addresses), no redirects followed, a connect timeout,
//! one deadline for the whole exchange, and a cap on the response size. Error details name
//! hosts and what failed, never the request's headers or body, which hold secrets (S41).

use std::fmt;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;

use ::http::{Request, Response};
use latchkey::http1::{ReadError, ResponseReader, write_request};
use latchkey::{TransportError, TransportErrorKind, is_loopback_host};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::driver::Runtime;
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

/// An HTTP/1.1 client for token requests, on a runtime or blocking. Cloning is cheap (the
/// configuration is shared).
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

    /// Sends `request` on a new connection made with `runtime`'s sockets and reads the
    /// response, without blocking a thread (host names that are not IP addresses are
    /// resolved on the runtime's blocking pool, as the system resolver blocks).
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
    pub async fn send_on<R: Runtime>(
        &self,
        runtime: &R,
        request: &Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, TransportError> {
        let deadline = Deadline::after(self.options.timeout);
        self.exchange(&RuntimeConnector { runtime, deadline }, request)
            .await
    }

    /// [`send_on`](HttpClient::send_on), blocking the calling thread instead: for programs
    /// without an async runtime.
    ///
    /// # Errors
    ///
    /// As [`send_on`](HttpClient::send_on).
    pub fn send(&self, request: &Request<Vec<u8>>) -> Result<Response<Vec<u8>>, TransportError> {
        let deadline = Deadline::after(self.options.timeout);
        future::block_on(self.exchange(&BlockingConnector { deadline }, request))
    }

    /// The exchange, over whatever sockets `connector` makes.
    async fn exchange<C: Connector>(
        &self,
        connector: &C,
        request: &Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, TransportError> {
        let target = Target::of(request)?;
        let mut bytes = Vec::new();
        write_request(request, &mut bytes).map_err(|error| {
            TransportError::new(
                TransportErrorKind::Other,
                format!("cannot write the request: {error}"),
            )
        })?;
        let connect_timeout = self.options.connect_timeout;
        let mut wire = match self.options.proxy.for_host(target.host) {
            Some(proxy) => {
                let mut wire = connector
                    .connect(proxy.host(), proxy.port(), false, connect_timeout)
                    .await?;
                open_tunnel(&mut wire, proxy, &target).await?;
                wire
            }
            None => {
                connector
                    .connect(target.host, target.port, !target.tls, connect_timeout)
                    .await?
            }
        };
        let max = self.options.max_response_bytes;
        let response = if target.tls {
            let mut tls = TlsWire::new(wire, Arc::clone(&self.config), target.host)?;
            tls.handshake()
                .await
                .map_err(|error| tls_failure(target.host, &error))?;
            round_trip(&mut tls, &bytes, max).await?
        } else {
            round_trip(&mut wire, &bytes, max).await?
        };
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
#[derive(Debug, Clone, Copy)]
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

    /// How long one connection attempt may take: `connect_timeout`, or less if less is
    /// left.
    fn attempt_limit(&self, connect_timeout: Duration) -> Result<Duration, TransportError> {
        Ok(self
            .remaining()?
            .map_or(connect_timeout, |left| left.min(connect_timeout)))
    }

    /// Bounds the next reads and writes on `tcp` by the time left; a `TimedOut` error when
    /// none is.
    fn apply(&self, tcp: &TcpStream) -> io::Result<()> {
        let left = match self.at {
            None => None,
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Err(io::Error::from(io::ErrorKind::TimedOut)),
            },
        };
        tcp.set_read_timeout(left)?;
        tcp.set_write_timeout(left)
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
        let limit = deadline.attempt_limit(connect_timeout)?;
        match TcpStream::connect_timeout(&address, limit) {
            Ok(tcp) => return Ok(tcp),
            Err(error) => last_error = Some(error),
        }
    }
    Err(connect_failure(host, port, last_error))
}

/// Why no connection to `host:port` could be made: the last attempt's error, or no
/// address to try.
fn connect_failure(host: &str, port: u16, last_error: Option<io::Error>) -> TransportError {
    match last_error {
        Some(error) => failure(
            format_args!("connecting to {host}:{port}"),
            &error,
            TransportErrorKind::Connect,
        ),
        None => TransportError::new(
            TransportErrorKind::Connect,
            format!("{host} has no usable address"),
        ),
    }
}

/// A byte stream an exchange runs over: a TCP connection (blocking or on a runtime), or TLS
/// on top of one. Every call is bounded by the exchange's deadline.
trait Wire: Send {
    /// Reads some bytes; 0 is the end of input.
    fn read<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;
    /// Writes all of `bytes`.
    fn write_all<'a>(
        &'a mut self,
        bytes: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;
}

/// Makes the TCP connections an exchange needs.
trait Connector: Sync {
    /// The connection.
    type Wire: Wire;

    /// Connects to `host:port`, trying each resolved address in turn; with
    /// `loopback_only`, only loopback addresses (so that a `localhost` resolving elsewhere
    /// gets no plain http).
    fn connect(
        &self,
        host: &str,
        port: u16,
        loopback_only: bool,
        connect_timeout: Duration,
    ) -> impl Future<Output = Result<Self::Wire, TransportError>> + Send;
}

/// Connections on the calling thread, bounded by socket timeouts.
struct BlockingConnector {
    deadline: Deadline,
}

/// A blocking connection.
struct BlockingWire {
    tcp: TcpStream,
    deadline: Deadline,
}

impl Connector for BlockingConnector {
    type Wire = BlockingWire;

    async fn connect(
        &self,
        host: &str,
        port: u16,
        loopback_only: bool,
        connect_timeout: Duration,
    ) -> Result<BlockingWire, TransportError> {
        let tcp = open_tcp(host, port, loopback_only, connect_timeout, &self.deadline)?;
        Ok(BlockingWire {
            tcp,
            deadline: self.deadline,
        })
    }
}

impl Wire for BlockingWire {
    async fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> io::Result<usize> {
        loop {
            self.deadline.apply(&self.tcp)?;
            match self.tcp.read(buf) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    async fn write_all<'a>(&'a mut self, bytes: &'a [u8]) -> io::Result<()> {
        self.deadline.apply(&self.tcp)?;
        self.tcp.write_all(bytes)
    }
}

/// Connections on an async runtime's sockets, bounded by its timers.
struct RuntimeConnector<'r, R> {
    runtime: &'r R,
    deadline: Deadline,
}

/// A connection on an async runtime.
struct RuntimeWire<'r, R: Runtime> {
    runtime: &'r R,
    stream: R::Stream,
    deadline: Deadline,
}

impl<'r, R: Runtime> Connector for RuntimeConnector<'r, R> {
    type Wire = RuntimeWire<'r, R>;

    async fn connect(
        &self,
        host: &str,
        port: u16,
        loopback_only: bool,
        connect_timeout: Duration,
    ) -> Result<RuntimeWire<'r, R>, TransportError> {
        let addresses = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                let name = host.to_owned();
                let resolving = self.runtime.unblock(move || {
                    (name.as_str(), port)
                        .to_socket_addrs()
                        .map(Iterator::collect::<Vec<_>>)
                });
                within(self.runtime, &self.deadline, resolving)
                    .await
                    .and_then(|resolved| resolved)
                    .map_err(|error| {
                        TransportError::new(
                            TransportErrorKind::Connect,
                            format!("resolving {host}: {error}"),
                        )
                    })?
            }
        };
        let mut last_error = None;
        for address in addresses
            .into_iter()
            .filter(|address| !loopback_only || address.ip().is_loopback())
        {
            let attempt = Deadline::after(self.deadline.attempt_limit(connect_timeout)?);
            match within(self.runtime, &attempt, R::connect(address)).await {
                Ok(Ok(stream)) => {
                    return Ok(RuntimeWire {
                        runtime: self.runtime,
                        stream,
                        deadline: self.deadline,
                    });
                }
                Ok(Err(error)) | Err(error) => last_error = Some(error),
            }
        }
        Err(connect_failure(host, port, last_error))
    }
}

impl<R: Runtime> Wire for RuntimeWire<'_, R> {
    async fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> io::Result<usize> {
        within(self.runtime, &self.deadline, R::read(&mut self.stream, buf)).await?
    }

    async fn write_all<'a>(&'a mut self, bytes: &'a [u8]) -> io::Result<()> {
        within(
            self.runtime,
            &self.deadline,
            R::write_all(&mut self.stream, bytes),
        )
        .await?
    }
}

/// `work`, or a `TimedOut` error once `deadline` passes.
async fn within<R: Runtime, T>(
    runtime: &R,
    deadline: &Deadline,
    work: impl Future<Output = T> + Send,
) -> io::Result<T> {
    let Some(at) = deadline.at else {
        return Ok(work.await);
    };
    future::or(async { Ok(work.await) }, async {
        runtime.sleep_until(at).await;
        Err(io::Error::from(io::ErrorKind::TimedOut))
    })
    .await
}

/// TLS over a [`Wire`], driving rustls by hand: ciphertext in and out through the wire,
/// plaintext through rustls' reader and writer.
struct TlsWire<W> {
    wire: W,
    tls: Box<ClientConnection>,
    /// Ciphertext read from the wire and not yet taken by rustls.
    inbox: Vec<u8>,
}

impl<W: Wire> TlsWire<W> {
    fn new(wire: W, config: Arc<ClientConfig>, host: &str) -> Result<TlsWire<W>, TransportError> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            TransportError::new(
                TransportErrorKind::Other,
                format!("{host:?} is not a valid TLS server name"),
            )
        })?;
        let tls = ClientConnection::new(config, name).map_err(|error| {
            TransportError::new(TransportErrorKind::Tls, format!("TLS with {host}: {error}"))
        })?;
        Ok(TlsWire {
            wire,
            tls: Box::new(tls),
            inbox: Vec::new(),
        })
    }

    async fn handshake(&mut self) -> io::Result<()> {
        while self.tls.is_handshaking() {
            self.flush().await?;
            if !self.tls.is_handshaking() {
                break;
            }
            if !self.tls.wants_read() {
                // Nothing to send and nothing wanted: the handshake cannot go on.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the TLS handshake stalled",
                ));
            }
            self.receive().await?;
        }
        self.flush().await
    }

    /// Sends what rustls has to send.
    async fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            let mut out = Vec::new();
            self.tls.write_tls(&mut out)?;
            self.wire.write_all(&out).await?;
        }
        Ok(())
    }

    /// Hands rustls more ciphertext, reading from the wire when none is waiting; the end of
    /// input is handed over too (rustls then tells a clean close from a truncation).
    async fn receive(&mut self) -> io::Result<()> {
        if self.inbox.is_empty() {
            let mut buf = vec![0; 16 * 1024];
            let read = self.wire.read(&mut buf).await?;
            // rustls keeps asking for more during a handshake the peer walked out of.
            if read == 0 && self.tls.is_handshaking() {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            buf.truncate(read);
            self.inbox = buf;
        }
        let mut pending = &self.inbox[..];
        let taken = self.tls.read_tls(&mut pending)?;
        self.inbox.drain(..taken);
        self.tls
            .process_new_packets()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
        // Alerts and key updates rustls wants to answer with.
        self.flush().await
    }
}

impl<W: Wire> Wire for TlsWire<W> {
    async fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.receive().await?;
                }
                result => return result,
            }
        }
    }

    async fn write_all<'a>(&'a mut self, bytes: &'a [u8]) -> io::Result<()> {
        self.tls.writer().write_all(bytes)?;
        self.flush().await
    }
}

/// Writes the request, reads the response.
async fn round_trip<W: Wire>(
    wire: &mut W,
    request: &[u8],
    max_response_bytes: usize,
) -> Result<Response<Vec<u8>>, TransportError> {
    wire.write_all(request)
        .await
        .map_err(|error| failure("sending the request", &error, TransportErrorKind::Io))?;
    read_response(wire, max_response_bytes).await
}

/// Asks `proxy` (connected as `wire`) for a tunnel to `target` and reads its reply.
async fn open_tunnel<W: Wire>(
    wire: &mut W,
    proxy: &ProxyServer,
    target: &Target<'_>,
) -> Result<(), TransportError> {
    let proxy_failure = |error: &io::Error| {
        failure(
            format_args!("proxy {}:{}", proxy.host(), proxy.port()),
            error,
            TransportErrorKind::Connect,
        )
    };
    wire.write_all(&proxy.connect_request(target.host, target.port))
        .await
        .map_err(|error| proxy_failure(&error))?;
    let mut head = Vec::new();
    loop {
        // One byte at a time: the reply head has no length, and a byte read past its end
        // would belong to the tunnel. It is a few dozen bytes.
        let mut byte = 0;
        match wire.read(std::slice::from_mut(&mut byte)).await {
            Ok(0) => {
                let closed = io::Error::from(io::ErrorKind::UnexpectedEof);
                return Err(proxy_failure(&closed));
            }
            Ok(_) => head.push(byte),
            Err(error) => return Err(proxy_failure(&error)),
        }
        let check = byte == b'\n' || head.len() > MAX_CONNECT_REPLY;
        if check && proxy.connect_reply(&head)?.is_some() {
            return Ok(());
        }
    }
}

async fn read_response<W: Wire>(
    wire: &mut W,
    max_response_bytes: usize,
) -> Result<Response<Vec<u8>>, TransportError> {
    let mut reader = ResponseReader::new(max_response_bytes);
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match wire.read(&mut buffer).await {
            Ok(0) => return reader.read_eof().map_err(read_failure),
            Ok(read) => read,
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

/// A failed TLS handshake with `host`.
fn tls_failure(host: &str, error: &io::Error) -> TransportError {
    failure(
        format_args!("TLS handshake with {host}"),
        error,
        TransportErrorKind::Tls,
    )
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
