//! The HTTP client for the machines' requests, on an async runtime's own sockets, its
//! connections kept open for the next request to the same place.
//!
//! What it guarantees (S6, S34): `https` with certificate verification, plain `http` only to
//! loopback hosts (and only to loopback addresses), no redirects followed, a connect timeout
//! per attempt, one deadline for the whole exchange, and a cap on the response size. Error
//! details name hosts and what failed, never the request's headers or body, which hold
//! secrets (S41).
//!
//! How it connects ([`connect`]): a host name is resolved by the system resolver on the
//! runtime's blocking pool; its addresses are tried as Happy Eyeballs does (RFC 8305):
//! address families interleaved, starting with the resolver's first choice, the next attempt
//! started 250 ms after the previous one or at once when it fails, the first connection
//! made winning. Through an HTTPS proxy, the `CONNECT` reply is read in chunks and any bytes
//! after its head are handed on to the tunnel. TLS is `futures-rustls` over the connection.
//! The request is written with [`latchkey::http1::write_persistent_request`] and the
//! response read with [`ResponseReader`] (length-delimited, chunked or close-delimited).
//!
//! Connections persist (RFC 9112 §9.3): after a response the server kept open (framed,
//! HTTP/1.1, no `connection: close`, nothing sent beyond it), the connection waits for the
//! next request to the same scheme, host and port, at most
//! [`idle_timeout`](HttpOptions::idle_timeout) or what the server's `keep-alive: timeout=N`
//! allows, whichever is shorter, and at most [`max_idle`](HttpOptions::max_idle) of them.
//! A connection is checked before it is used (a peer that closed it, or sent anything
//! unasked, gets it dropped); a request on a kept connection that fails before a byte of
//! answer arrives (the server closed it at that very moment) is sent once more on a new
//! one. Only connections that answered whole are kept, so no response can be read by the
//! wrong request, and a connection is only ever reused for the host it was verified for.
//! Expired connections are closed when the client next sends or keeps one, or when it is
//! dropped: a client left unused holds at most `max_idle` sockets meanwhile.
//!
//! A program without an async runtime sends a request with, for example,
//! `smol::block_on(client.send_on(&latchkey_smol::Smol, &request))`.

use std::any::{Any, TypeId};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ::http::{Request, Response};
use futures_lite::future;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use latchkey::http1::{ReadError, ResponseReader, write_persistent_request};
use latchkey::{TransportError, TransportErrorKind, is_loopback_host};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::proxy::{MAX_CONNECT_REPLY, Proxy, ProxyServer};
use crate::runtime::{Runtime, until};
use crate::tls::{Roots, TlsError, client_config};

/// RFC 8305 §5's recommended Connection Attempt Delay.
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// How [`HttpClient`] connects and how long it waits.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The longest one TCP connection attempt may take; must not be zero. Default: 10 s.
    pub connect_timeout: Duration,
    /// The longest a whole exchange may take: resolving, connecting, the proxy tunnel, the
    /// TLS handshake, sending and reading. Default: 30 s.
    pub timeout: Duration,
    /// The largest response accepted, head and body. Default: 1 MiB.
    pub max_response_bytes: usize,
    /// The certificate authorities trusted. Default: [`Roots::WebPki`].
    pub roots: Roots,
    /// The HTTPS proxy. Default: [`Proxy::none()`]; programs that honour `HTTPS_PROXY`
    /// pass [`Proxy::from_env()`], so that a library never reads the environment behind its
    /// caller's back.
    pub proxy: Proxy,
    /// The longest a connection is kept open, unused, for the next request to the same
    /// place; a server's shorter `keep-alive: timeout` wins. Zero: a new connection for
    /// every request. Default: 30 s.
    pub idle_timeout: Duration,
    /// The most connections kept open, unused, at once (all hosts together). Default: 32.
    pub max_idle: usize,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            max_response_bytes: 1 << 20,
            roots: Roots::WebPki,
            proxy: Proxy::none(),
            idle_timeout: Duration::from_secs(30),
            max_idle: 32,
        }
    }
}

/// An HTTP/1.1 client for the machines' requests. Cloning is cheap (the configuration is
/// shared).
#[derive(Clone)]
pub struct HttpClient {
    tls: TlsConnector,
    options: Arc<HttpOptions>,
    /// Shared by the clones.
    idle: Arc<Mutex<Vec<Idle>>>,
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
        let config: Arc<ClientConfig> = client_config(&options.roots)?;
        Ok(HttpClient {
            tls: TlsConnector::from(config),
            options: Arc::new(options),
            idle: Arc::default(),
        })
    }

    /// The options.
    pub fn options(&self) -> &HttpOptions {
        &self.options
    }

    /// Sends `request` on a kept connection to the same place, or a new one made with
    /// `runtime`'s sockets, and reads the response.
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
        let target = Target::of(request)?;
        let mut bytes = Vec::new();
        write_persistent_request(request, &mut bytes).map_err(|error| {
            TransportError::new(
                TransportErrorKind::Other,
                format!("cannot write the request: {error}"),
            )
        })?;
        let exchange = self.exchange(runtime, &target, &bytes);
        let response = match runtime.now().checked_add(self.options.timeout) {
            Some(deadline) => until(runtime, deadline, exchange)
                .await
                .unwrap_or_else(|| {
                    Err(TransportError::new(
                        TransportErrorKind::TimedOut,
                        format!(
                            "no answer from {} within {:?}",
                            target.host, self.options.timeout
                        ),
                    ))
                })?,
            None => exchange.await?,
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

    /// Sends on a kept connection if there is one that is still open (and once more on a
    /// new one if it turns out closed before answering), else on a new one; keeps the
    /// connection afterwards if the server did.
    async fn exchange<R: Runtime>(
        &self,
        runtime: &R,
        target: &Target<'_>,
        request: &[u8],
    ) -> Result<Response<Vec<u8>>, TransportError> {
        let max = self.options.max_response_bytes;
        if let Some(mut wire) = self.kept::<R>(runtime, target) {
            match round_trip(&mut wire, request, max).await {
                Ok((response, reusable)) => {
                    self.keep(runtime, target, wire, &response, reusable);
                    return Ok(response);
                }
                Err(Failed { error, answered }) if answered => return Err(error),
                Err(_) => {} // closed by the server meanwhile: nothing was done
            }
        }
        let mut wire = self.open(runtime, target).await?;
        let (response, reusable) = round_trip(&mut wire, request, max)
            .await
            .map_err(|failed| failed.error)?;
        self.keep(runtime, target, wire, &response, reusable);
        Ok(response)
    }

    /// Connects (through the proxy, if any) and secures.
    async fn open<R: Runtime>(
        &self,
        runtime: &R,
        target: &Target<'_>,
    ) -> Result<Wire<R>, TransportError> {
        let connect_timeout = self.options.connect_timeout;
        let wire = match self.options.proxy.for_host(target.host) {
            Some(proxy) => {
                let stream =
                    connect(runtime, proxy.host(), proxy.port(), false, connect_timeout).await?;
                open_tunnel(stream, proxy, target).await?
            }
            None => {
                let stream = connect(
                    runtime,
                    target.host,
                    target.port,
                    !target.tls,
                    connect_timeout,
                )
                .await?;
                Prefixed::new(Vec::new(), stream)
            }
        };
        if !target.tls {
            return Ok(Wire::Plain(wire));
        }
        let name = ServerName::try_from(target.host.to_owned()).map_err(|_| {
            TransportError::new(
                TransportErrorKind::Other,
                format!("{:?} is not a valid TLS server name", target.host),
            )
        })?;
        let tls = self.tls.connect(name, wire).await.map_err(|error| {
            failure(
                format_args!("TLS handshake with {}", target.host),
                &error,
                TransportErrorKind::Tls,
            )
        })?;
        Ok(Wire::Tls(Box::new(tls)))
    }

    /// A kept connection to `target` that is still open. Expired ones are dropped on the way.
    fn kept<R: Runtime>(&self, runtime: &R, target: &Target<'_>) -> Option<Wire<R>> {
        let now = runtime.now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|kept| kept.until > now);
        let runtime_id = TypeId::of::<R>();
        while let Some(index) = idle
            .iter()
            .rposition(|kept| kept.runtime == runtime_id && kept.target.is(target))
        {
            let kept = idle.swap_remove(index);
            let Ok(mut wire) = kept.wire.downcast::<Wire<R>>() else {
                continue;
            };
            if still_open(&mut wire) {
                return Some(*wire);
            }
        }
        None
    }

    /// Keeps `wire` for the next request to `target` if the server kept it open, for as
    /// long as both sides allow.
    fn keep<R: Runtime>(
        &self,
        runtime: &R,
        target: &Target<'_>,
        wire: Wire<R>,
        response: &Response<Vec<u8>>,
        reusable: bool,
    ) {
        let lifetime = keep_alive_timeout(response).map_or(self.options.idle_timeout, |server| {
            // A second short of the server's limit, so that it is not closing as we send.
            server
                .saturating_sub(Duration::from_secs(1))
                .min(self.options.idle_timeout)
        });
        if !reusable || lifetime.is_zero() || self.options.max_idle == 0 {
            return;
        }
        let now = runtime.now();
        let Some(until) = now.checked_add(lifetime) else {
            return;
        };
        // Expired ones are dropped here and when a request looks for one: a client left
        // unused keeps at most `max_idle` sockets until it is used again or dropped.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|kept| kept.until > now);
        if idle.len() >= self.options.max_idle {
            // The one kept longest goes: the newest is the likeliest to be open still.
            idle.remove(0);
        }
        idle.push(Idle {
            target: Place::of(target),
            runtime: TypeId::of::<R>(),
            until,
            wire: Box::new(wire),
        });
    }
}

/// A connection kept open for the next request.
struct Idle {
    target: Place,
    /// The runtime whose sockets it is made of.
    runtime: TypeId,
    until: Instant,
    /// A `Wire<R>` of that runtime.
    wire: Box<dyn Any + Send>,
}

/// Where a kept connection goes: a request to the same scheme, host and port may use it.
struct Place {
    host: String,
    port: u16,
    tls: bool,
}

impl Place {
    fn of(target: &Target<'_>) -> Place {
        Place {
            host: target.host.to_owned(),
            port: target.port,
            tls: target.tls,
        }
    }

    fn is(&self, target: &Target<'_>) -> bool {
        self.port == target.port
            && self.tls == target.tls
            && self.host.eq_ignore_ascii_case(target.host)
    }
}

/// The server's `keep-alive: timeout=N`, if it sent one.
fn keep_alive_timeout(response: &Response<Vec<u8>>) -> Option<Duration> {
    let value = response.headers().get("keep-alive")?.to_str().ok()?;
    value.split(',').find_map(|parameter| {
        let (name, seconds) = parameter.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("timeout")
            .then(|| seconds.trim().parse().ok().map(Duration::from_secs))?
    })
}

/// Whether a kept connection is still open: the server has neither closed it nor sent
/// anything since (a read now would have to wait).
fn still_open<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut context = Context::from_waker(Waker::noop());
    let mut byte = [0];
    matches!(
        Pin::new(stream).poll_read(&mut context, &mut byte),
        Poll::Pending
    )
}

/// A connection, plain or secured.
enum Wire<R: Runtime> {
    Plain(Prefixed<R::Stream>),
    Tls(Box<TlsStream<Prefixed<R::Stream>>>),
}

impl<R: Runtime> AsyncRead for Wire<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Wire::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Wire::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<R: Runtime> AsyncWrite for Wire<R> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Wire::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Wire::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Wire::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(stream) => Pin::new(stream).poll_close(cx),
            Wire::Tls(stream) => Pin::new(stream.as_mut()).poll_close(cx),
        }
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

/// Connects to `host:port`, trying its addresses as Happy Eyeballs does (RFC 8305); with
/// `loopback_only`, only loopback addresses (so that a `localhost` resolving elsewhere gets
/// no plain http). Each attempt may take `connect_timeout`.
///
/// # Errors
///
/// A [`Connect`](TransportErrorKind::Connect) error: resolution failed, no address was
/// usable, or every attempt failed (the last failure is named).
pub async fn connect<R: Runtime>(
    runtime: &R,
    host: &str,
    port: u16,
    loopback_only: bool,
    connect_timeout: Duration,
) -> Result<R::Stream, TransportError> {
    let addresses = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            let name = host.to_owned();
            runtime
                .unblock(move || {
                    (name.as_str(), port)
                        .to_socket_addrs()
                        .map(Iterator::collect::<Vec<_>>)
                })
                .await
                .map_err(|error| {
                    TransportError::new(
                        TransportErrorKind::Connect,
                        format!("resolving {host}: {error}"),
                    )
                })?
        }
    };
    let addresses = interleave_families(
        addresses
            .into_iter()
            .filter(|address| !loopback_only || address.ip().is_loopback())
            .collect(),
    );
    if addresses.is_empty() {
        return Err(TransportError::new(
            TransportErrorKind::Connect,
            format!("{host} has no usable address"),
        ));
    }
    connect_any(runtime, &addresses, connect_timeout)
        .await
        .map_err(|error| {
            failure(
                format_args!("connecting to {host}:{port}"),
                &error,
                TransportErrorKind::Connect,
            )
        })
}

/// Connects to the first of `addresses` to accept, trying them in order as Happy Eyeballs
/// does (RFC 8305 §5): each attempt starts 250 ms after the previous one, or at once when
/// the previous one fails, and may take `connect_timeout`; the first connection made wins
/// and the other attempts are dropped.
///
/// # Errors
///
/// The last attempt's error when every attempt failed, or [`io::ErrorKind::InvalidInput`]
/// when there is no address.
pub async fn connect_any<R: Runtime>(
    runtime: &R,
    addresses: &[SocketAddr],
    connect_timeout: Duration,
) -> io::Result<R::Stream> {
    race(runtime, addresses, connect_timeout)
        .await
        .map_err(|error| {
            error.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))
        })
}

/// RFC 8305 §4: the addresses with their families alternating, starting with the family of
/// the resolver's first choice, each family in the resolver's order.
fn interleave_families(addresses: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addresses.first() else {
        return addresses;
    };
    let preferred_v6 = first.is_ipv6();
    let (preferred, other): (Vec<SocketAddr>, Vec<SocketAddr>) = addresses
        .iter()
        .partition(|address| address.is_ipv6() == preferred_v6);
    let mut interleaved = Vec::with_capacity(addresses.len());
    let (mut preferred, mut other) = (preferred.into_iter(), other.into_iter());
    loop {
        match (preferred.next(), other.next()) {
            (None, None) => return interleaved,
            (first, second) => interleaved.extend(first.into_iter().chain(second)),
        }
    }
}

type Attempt<'a, S> = Pin<Box<dyn Future<Output = io::Result<S>> + Send + 'a>>;

/// Connection attempts to `addresses` in order, each started [`ATTEMPT_DELAY`] after the
/// previous one or as soon as it fails, until one connects. `Err(None)`: nothing to try.
async fn race<R: Runtime>(
    runtime: &R,
    addresses: &[SocketAddr],
    connect_timeout: Duration,
) -> Result<R::Stream, Option<io::Error>> {
    let attempt = |address: SocketAddr| async move {
        let deadline = runtime.now() + connect_timeout;
        until(runtime, deadline, runtime.connect(address))
            .await
            .unwrap_or_else(|| Err(io::Error::from(io::ErrorKind::TimedOut)))
    };
    // The usual case, an IP address or a name with one address, needs no race.
    if let [address] = addresses {
        return attempt(*address).await.map_err(Some);
    }
    let mut waiting = addresses.iter().copied();
    let mut attempts: Vec<Attempt<'_, R::Stream>> = Vec::new();
    let mut last_error = None;
    loop {
        if attempts.is_empty() {
            match waiting.next() {
                Some(address) => attempts.push(Box::pin(attempt(address))),
                None => return Err(last_error),
            }
        }
        let mut delay = (waiting.len() > 0)
            .then(|| Box::pin(runtime.sleep_until(runtime.now() + ATTEMPT_DELAY)));
        enum Next<S> {
            Connected(S),
            Failed(usize, io::Error),
            StartAnother,
        }
        let next = future::poll_fn(|cx: &mut Context<'_>| {
            for (index, attempt) in attempts.iter_mut().enumerate() {
                if let Poll::Ready(outcome) = attempt.as_mut().poll(cx) {
                    return Poll::Ready(match outcome {
                        Ok(stream) => Next::Connected(stream),
                        Err(error) => Next::Failed(index, error),
                    });
                }
            }
            match &mut delay {
                Some(delay) => delay.as_mut().poll(cx).map(|()| Next::StartAnother),
                None => Poll::Pending,
            }
        })
        .await;
        match next {
            Next::Connected(stream) => return Ok(stream),
            Next::Failed(index, error) => {
                drop(attempts.remove(index));
                last_error = Some(error);
                // A failure starts the next attempt at once.
                if let Some(address) = waiting.next() {
                    attempts.push(Box::pin(attempt(address)));
                }
            }
            Next::StartAnother => {
                if let Some(address) = waiting.next() {
                    attempts.push(Box::pin(attempt(address)));
                }
            }
        }
    }
}

/// Asks `proxy` (connected as `stream`) for a tunnel to `target`: the reply head is read in
/// chunks, and the bytes after it, which belong to the tunnel, are handed on with it.
async fn open_tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    proxy: &ProxyServer,
    target: &Target<'_>,
) -> Result<Prefixed<S>, TransportError> {
    let proxy_failure = |error: &io::Error| {
        failure(
            format_args!("proxy {}:{}", proxy.host(), proxy.port()),
            error,
            TransportErrorKind::Connect,
        )
    };
    stream
        .write_all(&proxy.connect_request(target.host, target.port))
        .await
        .map_err(|error| proxy_failure(&error))?;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0; 1024];
    loop {
        let read = match stream.read(&mut chunk).await {
            Ok(0) => {
                return Err(proxy_failure(&io::Error::from(
                    io::ErrorKind::UnexpectedEof,
                )));
            }
            Ok(read) => read,
            Err(error) => return Err(proxy_failure(&error)),
        };
        head.extend_from_slice(&chunk[..read]);
        // The cap is on the head alone: bytes after it may run past the cap.
        let scanned = head.len().min(MAX_CONNECT_REPLY);
        match proxy.connect_reply(&head[..scanned])? {
            Some(len) => {
                let tunnel_bytes = head.split_off(len);
                return Ok(Prefixed::new(tunnel_bytes, stream));
            }
            None if scanned == MAX_CONNECT_REPLY => {
                return Err(TransportError::new(
                    TransportErrorKind::Protocol,
                    format!(
                        "proxy {}:{}: reply to CONNECT longer than {MAX_CONNECT_REPLY} bytes",
                        proxy.host(),
                        proxy.port()
                    ),
                ));
            }
            None => {}
        }
    }
}

/// A stream whose first bytes were read already: `prefix`, then the stream.
struct Prefixed<S> {
    prefix: Vec<u8>,
    taken: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            taken: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let left = this.prefix.get(this.taken..).unwrap_or_default();
        if left.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        this.taken += n;
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A round trip that failed, and whether any of the answer had arrived.
struct Failed {
    error: TransportError,
    answered: bool,
}

/// Writes the request, reads the response; and whether the connection may carry the next.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    max_response_bytes: usize,
) -> Result<(Response<Vec<u8>>, bool), Failed> {
    let unanswered = |error| Failed {
        error,
        answered: false,
    };
    let sent = async {
        stream.write_all(request).await?;
        stream.flush().await
    };
    sent.await.map_err(|error| {
        unanswered(failure(
            "sending the request",
            &error,
            TransportErrorKind::Io,
        ))
    })?;
    let mut reader = ResponseReader::new(max_response_bytes);
    let mut buffer = vec![0; 16 * 1024];
    let mut answered = false;
    loop {
        let read = match stream.read(&mut buffer).await {
            Ok(0) => {
                let response = reader.read_eof().map_err(|error| Failed {
                    error: read_failure(error),
                    answered,
                })?;
                return Ok((response, false));
            }
            Ok(read) => read,
            // rustls reports a TLS peer that closes without close_notify this way, and many
            // servers do. A framed body cut short is still an error of the reader's.
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                let response = reader.read_eof().map_err(|error| Failed {
                    error: read_failure(error),
                    answered,
                })?;
                return Ok((response, false));
            }
            Err(error) => {
                return Err(Failed {
                    error: failure("reading the response", &error, TransportErrorKind::Io),
                    answered,
                });
            }
        };
        answered = true;
        let chunk = buffer.get(..read).unwrap_or_default();
        let read = reader.read(chunk).map_err(|error| Failed {
            error: read_failure(error),
            answered,
        })?;
        if let Some(response) = read {
            return Ok((response, reader.reusable()));
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

/// A transport error for an I/O `error` while doing `what`: a timeout is `TimedOut`, an
/// error from rustls is `Tls`, anything else `otherwise`.
fn failure(
    what: impl fmt::Display,
    error: &io::Error,
    otherwise: TransportErrorKind,
) -> TransportError {
    if error.kind() == io::ErrorKind::TimedOut {
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

    /// A stream that gives its reads in the chunks given, and keeps what is written.
    struct Scripted {
        reads: std::collections::VecDeque<Vec<u8>>,
        written: Vec<u8>,
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let Some(mut chunk) = self.reads.pop_front() else {
                return Poll::Ready(Ok(0));
            };
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.reads.push_front(chunk.split_off(n));
            }
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn tunnel(reads: &[&[u8]]) -> Result<(Vec<u8>, Vec<u8>), TransportError> {
        let proxy = Proxy::from_values(Some("http://proxy.example:3128"), None).expect("a proxy");
        let server = proxy.for_host("idp.example").expect("proxied");
        let target = Target {
            host: "idp.example",
            port: 443,
            tls: true,
        };
        let stream = Scripted {
            reads: reads.iter().map(|chunk| chunk.to_vec()).collect(),
            written: Vec::new(),
        };
        future::block_on(async {
            let mut tunnel = open_tunnel(stream, server, &target).await?;
            let mut after = Vec::new();
            tunnel
                .read_to_end(&mut after)
                .await
                .expect("the tunnel reads");
            Ok((tunnel.inner.written.clone(), after))
        })
    }

    #[test]
    fn the_connect_reply_is_read_in_chunks_and_what_follows_it_goes_to_the_tunnel() {
        let (written, after) = tunnel(&[
            b"HTTP/1.1 200 Connection established\r\nVia: sq",
            b"uid\r\n\r\n\x16\x03\x03",
            b"server hello",
        ])
        .expect("a tunnel");
        assert!(
            written.starts_with(b"CONNECT idp.example:443 HTTP/1.1\r\n"),
            "{written:?}"
        );
        assert_eq!(after, b"\x16\x03\x03server hello");
        // The head ending exactly at a chunk's end leaves nothing behind.
        let (_, after) = tunnel(&[b"HTTP/1.1 200 OK\r\n\r\n"]).expect("a tunnel");
        assert!(after.is_empty());
    }

    #[test]
    fn a_connect_reply_that_never_ends_or_refuses_is_an_error() {
        let endless = vec![b'x'; MAX_CONNECT_REPLY + 10];
        let mut reply = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        reply.extend_from_slice(&endless);
        let error = tunnel(&[&reply]).expect_err("too long");
        assert_eq!(error.kind(), TransportErrorKind::Protocol, "{error}");
        let error =
            tunnel(&[b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"]).expect_err("refused");
        assert_eq!(error.kind(), TransportErrorKind::Connect, "{error}");
        let error = tunnel(&[b"HTTP/1.1 200 OK\r\n"]).expect_err("cut short");
        assert_eq!(error.kind(), TransportErrorKind::Connect, "{error}");
    }

    #[test]
    fn families_alternate_starting_with_the_resolvers_first_choice() {
        let v6 = |n: u16| SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, n], 443));
        let v4 = |n: u8| SocketAddr::from(([192, 0, 2, n], 443));
        assert_eq!(
            interleave_families(vec![v6(1), v6(2), v6(3), v4(1), v4(2)]),
            [v6(1), v4(1), v6(2), v4(2), v6(3)]
        );
        assert_eq!(
            interleave_families(vec![v4(1), v4(2), v6(1)]),
            [v4(1), v6(1), v4(2)]
        );
        assert_eq!(interleave_families(vec![v4(1)]), [v4(1)]);
        assert!(interleave_families(Vec::new()).is_empty());
    }
}
