//! The token HTTP client against local servers on 127.0.0.1: framing, redirects, size cap,
//! timeouts, TLS verification, and the CONNECT proxy (S6, S34, S41). No network is used.
//!
//! Every scenario runs twice, on each runtime's own sockets ([`HttpClient::send_on`] with
//! smol and with tokio), each against a fresh server.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use http::{Request, Response};
use latchkey::{TransportError, TransportErrorKind};
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::proxy::Proxy;
use latchkey_io::tls::Roots;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// In every request; no error detail may contain it (S41).
const SECRET: &str = "SECRET-code-verifier";

fn token_request(uri: &str) -> Request<Vec<u8>> {
    Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Basic {SECRET}"))
        .body(format!("grant_type=authorization_code&code_verifier={SECRET}").into_bytes())
        .expect("request")
}

fn client(options: HttpOptions) -> HttpClient {
    HttpClient::new(options).expect("client")
}

/// How `send` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Smol,
    Tokio,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Smol) };
}

/// Runs `scenario` once per [`Mode`].
fn every_mode(scenario: impl Fn()) {
    for mode in [Mode::Smol, Mode::Tokio] {
        MODE.set(mode);
        scenario();
    }
}

fn send(client: &HttpClient, uri: &str) -> Result<Response<Vec<u8>>, TransportError> {
    let request = token_request(uri);
    let result = match MODE.get() {
        Mode::Smol => smol::block_on(client.send_on(&latchkey_smol::Smol, &request)),
        Mode::Tokio => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(client.send_on(&latchkey_tokio::Tokio, &request)),
    };
    if let Err(error) = &result {
        assert!(!error.to_string().contains(SECRET), "{error}");
    }
    result
}

fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    (listener, port)
}

/// Reads one request: the head, then as many body bytes as `content-length` says.
fn read_request(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map_or(0, |value| value.trim().parse().expect("content-length"));
            if bytes.len() >= end + 4 + length {
                return Ok(bytes);
            }
        }
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Ok(bytes);
        }
        bytes.extend_from_slice(&buffer[..read]);
    }
}

/// A plain server answering one connection with `response`; returns the request it read.
fn serve_once(response: &'static [u8]) -> (u16, JoinHandle<Vec<u8>>) {
    let (listener, port) = listener();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let request = read_request(&mut stream).expect("request");
        // The client may hang up early (a response over the cap); that is its business.
        let _ = stream.write_all(response);
        request
    });
    (port, server)
}

/// The response a default client reads from a server on `host` answering `response`.
fn answered(response: &'static [u8], host: &str) -> Response<Vec<u8>> {
    let (port, _server) = serve_once(response);
    send(
        &client(HttpOptions::default()),
        &format!("http://{host}:{port}/token"),
    )
    .expect("response")
}

#[test]
fn plain_http_to_loopback_with_content_length() {
    every_mode(|| {
        let (port, server) =
        serve_once(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 22\r\n\r\n{\"access_token\":\"at\"}\n");
        let response = send(
            &client(HttpOptions::default()),
            &format!("http://127.0.0.1:{port}/token"),
        )
        .expect("response");
        assert_eq!(response.status(), 200);
        assert_eq!(response.body(), b"{\"access_token\":\"at\"}\n");
        let request = String::from_utf8(server.join().expect("server")).expect("ascii");
        assert!(request.starts_with("POST /token HTTP/1.1\r\n"), "{request}");
        assert!(
            request.ends_with(&format!("code_verifier={SECRET}")),
            "{request}"
        );
    });
}

#[test]
fn chunked_response_body_is_decoded() {
    every_mode(|| {
        let response = answered(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            "localhost",
        );
        assert_eq!(response.body(), b"hello world");
    });
}

#[test]
fn close_delimited_response_body_ends_at_eof() {
    every_mode(|| {
        let response = answered(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"access_token\":\"at\"}",
            "127.0.0.1",
        );
        assert_eq!(response.body(), b"{\"access_token\":\"at\"}");
    });
}

#[test]
fn s34_a_redirect_is_an_error_and_not_followed() {
    every_mode(|| {
        let (elsewhere, elsewhere_port) = listener();
        elsewhere.set_nonblocking(true).expect("nonblocking");
        let location: &'static str = format!(
        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{elsewhere_port}/token\r\nContent-Length: 0\r\n\r\n"
    )
    .leak();
        let (port, _server) = serve_once(location.as_bytes());
        let error = send(
            &client(HttpOptions::default()),
            &format!("http://127.0.0.1:{port}/token"),
        )
        .expect_err("redirect");
        assert_eq!(error.kind(), TransportErrorKind::Redirect, "{error}");
        assert!(error.detail().contains("302"), "{error}");
        let followed = elsewhere.accept();
        assert_eq!(
            followed.map(|_| ()).map_err(|error| error.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
    });
}

#[test]
fn s34_a_response_over_the_cap_is_too_large() {
    every_mode(|| {
        let body = "x".repeat(4096);
        let response: &'static str = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .leak();
        let (port, _server) = serve_once(response.as_bytes());
        let options = HttpOptions {
            max_response_bytes: 1024,
            ..HttpOptions::default()
        };
        let error = send(&client(options), &format!("http://127.0.0.1:{port}/token"))
            .expect_err("too large");
        assert_eq!(error.kind(), TransportErrorKind::TooLarge, "{error}");
    });
}

/// Sends to the server on `port` with a 300 ms timeout, which must pass; how long it took.
fn times_out_after_300_ms(port: u16) -> Duration {
    let options = HttpOptions {
        timeout: Duration::from_millis(300),
        ..HttpOptions::default()
    };
    let started = Instant::now();
    let error =
        send(&client(options), &format!("http://127.0.0.1:{port}/token")).expect_err("timeout");
    assert_eq!(error.kind(), TransportErrorKind::TimedOut, "{error}");
    started.elapsed()
}

#[test]
fn s34_a_server_that_never_answers_times_out() {
    every_mode(|| {
        let (listener, port) = listener();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            // Hold the connection open, answering nothing, until the client gives up.
            let _ = io::copy(&mut stream, &mut io::sink());
        });
        let elapsed = times_out_after_300_ms(port);
        assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    });
}

#[test]
fn s34_a_trickling_server_is_cut_off_by_the_total_timeout() {
    every_mode(|| {
        let (listener, port) = listener();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            read_request(&mut stream).expect("request");
            // One byte every 50 ms resets any per-read timeout, not the deadline.
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                .iter()
                .cycle()
            {
                thread::sleep(Duration::from_millis(50));
                if stream.write_all(&[*byte]).is_err() {
                    break;
                }
            }
        });
        let elapsed = times_out_after_300_ms(port);
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    });
}

#[test]
fn connection_refused_is_a_connect_error() {
    every_mode(|| {
        let (listener, port) = listener();
        drop(listener);
        let error = send(
            &client(HttpOptions::default()),
            &format!("http://127.0.0.1:{port}/token"),
        )
        .expect_err("refused");
        assert_eq!(error.kind(), TransportErrorKind::Connect, "{error}");
        assert!(
            error.detail().contains(&format!("127.0.0.1:{port}")),
            "{error}"
        );
    });
}

#[test]
fn s6_plain_http_to_a_non_loopback_host_is_refused_without_connecting() {
    every_mode(|| {
        // A proxy that would be used if anything connected: it is never listened on.
        let (listener, proxy_port) = listener();
        listener.set_nonblocking(true).expect("nonblocking");
        let proxy = Proxy::from_values(Some(&format!("http://127.0.0.1:{proxy_port}")), None)
            .expect("proxy");
        let client = client(HttpOptions {
            proxy,
            ..HttpOptions::default()
        });
        for uri in [
            "http://example.com/token",
            "http://localhost.example.com/token",
            "http://10.0.0.1/token",
            "http://[fe80::1]/token",
        ] {
            let error = send(&client, uri).expect_err(uri);
            assert_eq!(error.kind(), TransportErrorKind::Other, "{error}");
            assert!(error.detail().contains("plain http"), "{error}");
        }
        let error = send(&client, "ftp://example.com/token").expect_err("ftp");
        assert_eq!(error.kind(), TransportErrorKind::Other, "{error}");
        let connected = listener.accept();
        assert_eq!(
            connected.map(|_| ()).map_err(|error| error.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
    });
}

#[test]
fn loopback_requests_bypass_the_proxy() {
    every_mode(|| {
        let (dead, dead_port) = listener();
        drop(dead);
        let proxy = Proxy::from_values(Some(&format!("http://127.0.0.1:{dead_port}")), None)
            .expect("proxy");
        let (port, _server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let client = client(HttpOptions {
            proxy,
            ..HttpOptions::default()
        });
        let response = send(&client, &format!("http://localhost:{port}/token")).expect("direct");
        assert_eq!(response.body(), b"ok");
    });
}

/// A test CA and a TLS server configuration for `names`, signed by it.
fn tls_server(names: &[&str]) -> (Vec<u8>, Arc<ServerConfig>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let certificate = CertificateParams::new(names)
        .expect("params")
        .signed_by(&key, &ca)
        .expect("certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![certificate.der().clone()], key)
            .expect("server config");
    (ca.pem().into_bytes(), Arc::new(config))
}

/// A TLS server answering one connection with `response`; returns the request it read, or
/// `None` if the handshake failed.
fn serve_tls_once(
    config: Arc<ServerConfig>,
    response: &'static [u8],
) -> (u16, JoinHandle<Option<Vec<u8>>>) {
    let (listener, port) = listener();
    let server = thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        let mut tls = StreamOwned::new(ServerConnection::new(config).expect("connection"), tcp);
        let request = read_request(&mut tls).ok()?;
        tls.write_all(response).ok()?;
        tls.conn.send_close_notify();
        tls.flush().ok()?;
        Some(request)
    });
    (port, server)
}

const TOKEN_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: 22\r\n\r\n{\"access_token\":\"at\"}\n";

#[test]
fn s34_tls_with_the_given_ca_succeeds() {
    every_mode(|| {
        let (ca, config) = tls_server(&["localhost"]);
        let (port, server) = serve_tls_once(config, TOKEN_RESPONSE);
        let client = client(HttpOptions {
            roots: Roots::Pem(ca),
            ..HttpOptions::default()
        });
        let response = send(&client, &format!("https://localhost:{port}/token")).expect("response");
        assert_eq!(response.body(), b"{\"access_token\":\"at\"}\n");
        let request = server.join().expect("server").expect("handshake");
        assert!(request.starts_with(b"POST /token HTTP/1.1\r\n"));
    });
}

#[test]
fn s34_a_company_ca_added_to_the_public_roots_is_trusted() {
    every_mode(|| {
        let (ca, config) = tls_server(&["localhost"]);
        let (port, server) = serve_tls_once(config, TOKEN_RESPONSE);
        let client = client(HttpOptions {
            roots: Roots::WebPkiAnd(ca),
            ..HttpOptions::default()
        });
        let response = send(&client, &format!("https://localhost:{port}/token")).expect("response");
        assert_eq!(response.body(), b"{\"access_token\":\"at\"}\n");
        server.join().expect("server").expect("handshake");
    });
}

#[test]
fn a_server_hanging_up_during_the_tls_handshake_is_a_tls_error() {
    every_mode(|| {
        let (listener, port) = listener();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut hello = [0; 512];
            let _ = stream.read(&mut hello);
            // Gone without a word.
        });
        let started = Instant::now();
        let error = send(
            &client(HttpOptions::default()),
            &format!("https://localhost:{port}/token"),
        )
        .expect_err("no handshake");
        assert_eq!(error.kind(), TransportErrorKind::Tls, "{error}");
        assert!(started.elapsed() < Duration::from_secs(5), "{error}");
        server.join().expect("server");
    });
}

#[test]
fn s34_tls_verification_is_on_with_webpki_roots() {
    every_mode(|| {
        let (_ca, config) = tls_server(&["localhost"]);
        let (port, server) = serve_tls_once(config, TOKEN_RESPONSE);
        let error = send(
            &client(HttpOptions::default()),
            &format!("https://localhost:{port}/token"),
        )
        .expect_err("unknown CA");
        assert_eq!(error.kind(), TransportErrorKind::Tls, "{error}");
        assert_eq!(server.join().expect("server"), None, "no request was sent");
    });
}

#[test]
fn s34_tls_verification_checks_the_host_name() {
    every_mode(|| {
        let (ca, config) = tls_server(&["idp.test"]);
        let (port, server) = serve_tls_once(config, TOKEN_RESPONSE);
        let client = client(HttpOptions {
            roots: Roots::Pem(ca),
            ..HttpOptions::default()
        });
        let error =
            send(&client, &format!("https://localhost:{port}/token")).expect_err("wrong name");
        assert_eq!(error.kind(), TransportErrorKind::Tls, "{error}");
        assert_eq!(server.join().expect("server"), None, "no request was sent");
    });
}

/// A CONNECT proxy for one connection: returns the CONNECT head it read. With `refuse`, it
/// answers that instead of opening the tunnel; otherwise it tunnels to 127.0.0.1:`target`
/// whatever host was asked for (the test host names do not resolve).
fn connect_proxy(target: u16, refuse: Option<&'static [u8]>) -> (u16, JoinHandle<String>) {
    let (listener, port) = listener();
    let proxy = thread::spawn(move || {
        let (mut client, _) = listener.accept().expect("accept");
        let head = String::from_utf8(read_request(&mut client).expect("CONNECT")).expect("ascii");
        if let Some(refusal) = refuse {
            client.write_all(refusal).expect("refuse");
            return head;
        }
        let mut server = TcpStream::connect(("127.0.0.1", target)).expect("target");
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .expect("established");
        let (mut client_read, mut server_write) = (
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
        );
        let upstream = thread::spawn(move || {
            let _ = io::copy(&mut client_read, &mut server_write);
            let _ = server_write.shutdown(std::net::Shutdown::Write);
        });
        let _ = io::copy(&mut server, &mut client);
        let _ = client.shutdown(std::net::Shutdown::Write);
        upstream.join().expect("upstream");
        head
    });
    (port, proxy)
}

#[test]
fn https_through_a_connect_proxy_with_credentials() {
    every_mode(|| {
        let (ca, config) = tls_server(&["idp.test"]);
        let (server_port, server) = serve_tls_once(config, TOKEN_RESPONSE);
        let (proxy_port, proxy) = connect_proxy(server_port, None);
        let client = client(HttpOptions {
            roots: Roots::Pem(ca),
            proxy: Proxy::from_values(
                Some(&format!("http://user:pw@127.0.0.1:{proxy_port}")),
                None,
            )
            .expect("proxy"),
            ..HttpOptions::default()
        });
        let response =
            send(&client, &format!("https://idp.test:{server_port}/token")).expect("response");
        assert_eq!(response.body(), b"{\"access_token\":\"at\"}\n");
        // The client keeps the tunnel for its next request; the proxy ends when it closes.
        drop(client);
        let head = proxy.join().expect("proxy");
        assert!(
            head.starts_with(&format!("CONNECT idp.test:{server_port} HTTP/1.1\r\n")),
            "{head}"
        );
        // base64("user:pw")
        assert!(
            head.contains("\r\nProxy-Authorization: Basic dXNlcjpwdw==\r\n"),
            "{head}"
        );
        assert!(!head.contains(SECRET), "the proxy sees no request: {head}");
        assert!(server.join().expect("server").is_some());
    });
}

#[test]
fn a_proxy_refusing_connect_is_a_connect_error_with_its_status() {
    every_mode(|| {
        let (proxy_port, proxy) = connect_proxy(
            0,
            Some(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
            ),
        );
        let client = client(HttpOptions {
            proxy: Proxy::from_values(Some(&format!("127.0.0.1:{proxy_port}")), None)
                .expect("proxy"),
            ..HttpOptions::default()
        });
        let error = send(&client, "https://idp.test/token").expect_err("refused");
        assert_eq!(error.kind(), TransportErrorKind::Connect, "{error}");
        assert!(error.detail().contains("407"), "{error}");
        assert!(
            proxy
                .join()
                .expect("proxy")
                .starts_with("CONNECT idp.test:443 HTTP/1.1\r\n")
        );
    });
}

#[test]
fn s41_client_debug_shows_no_proxy_credentials() {
    every_mode(|| {
        let proxy = Proxy::from_values(Some("http://alice:SECRET-pw@proxy.corp:3128"), None)
            .expect("proxy");
        let client = client(HttpOptions {
            proxy,
            ..HttpOptions::default()
        });
        let debug = format!("{client:?}");
        assert!(
            !debug.contains("SECRET") && !debug.contains("alice"),
            "{debug}"
        );
        assert!(debug.contains("proxy.corp"), "{debug}");
    });
}

/// What a scripted server does with one request on a connection.
#[derive(Debug, Clone, Copy)]
enum Turn {
    /// Answers with these bytes and waits for the next request.
    Answer(&'static [u8]),
    /// Reads the request and closes without a byte of answer, as a server closing an idle
    /// connection at that very moment does.
    Drop,
    /// Answers part of a response, then closes.
    Cut(&'static [u8]),
}

/// A plain server taking one connection per script, each request on it handled by the
/// script's next turn; the connection is closed after the last. Returns the requests each
/// connection carried.
fn serve_scripts(scripts: Vec<Vec<Turn>>) -> (u16, JoinHandle<Vec<Vec<String>>>) {
    let (listener, port) = listener();
    let server = thread::spawn(move || {
        let mut seen = Vec::new();
        for script in scripts {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut requests = Vec::new();
            for turn in script {
                let request = read_request(&mut stream).expect("request");
                if request.is_empty() {
                    break;
                }
                requests.push(String::from_utf8(request).expect("ascii"));
                match turn {
                    Turn::Answer(bytes) => stream.write_all(bytes).expect("answer"),
                    Turn::Drop => break,
                    Turn::Cut(bytes) => {
                        stream.write_all(bytes).expect("part of an answer");
                        break;
                    }
                }
            }
            seen.push(requests);
        }
        seen
    });
    (port, server)
}

/// Sends the token request to `uri` `times` times in a row on one runtime (kept connections
/// belong to the runtime whose sockets they are).
fn send_in_a_row(
    client: &HttpClient,
    uri: &str,
    times: usize,
) -> Vec<Result<Response<Vec<u8>>, TransportError>> {
    async fn sends<R: latchkey_io::runtime::Runtime>(
        client: &HttpClient,
        runtime: R,
        request: &Request<Vec<u8>>,
        times: usize,
    ) -> Vec<Result<Response<Vec<u8>>, TransportError>> {
        let mut results = Vec::new();
        for _ in 0..times {
            results.push(client.send_on(&runtime, request).await);
        }
        results
    }
    let request = token_request(uri);
    match MODE.get() {
        Mode::Smol => smol::block_on(sends(client, latchkey_smol::Smol, &request, times)),
        Mode::Tokio => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(sends(client, latchkey_tokio::Tokio, &request, times)),
    }
}

const KEPT: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 22\r\n\r\n{\"access_token\":\"at\"}\n";

#[test]
fn a_connection_the_server_keeps_open_carries_the_next_request() {
    every_mode(|| {
        let (port, server) = serve_scripts(vec![vec![Turn::Answer(KEPT); 3]]);
        let client = client(HttpOptions::default());
        let results = send_in_a_row(&client, &format!("http://127.0.0.1:{port}/token"), 3);
        for result in results {
            assert_eq!(
                result.expect("answered").body(),
                b"{\"access_token\":\"at\"}\n"
            );
        }
        drop(client);
        let seen = server.join().expect("server");
        assert_eq!(seen.len(), 1, "one connection: {seen:?}");
        assert_eq!(seen[0].len(), 3);
        for request in &seen[0] {
            assert!(!request.contains("connection: close"), "{request}");
        }
    });
}

#[test]
fn a_connection_is_not_kept_when_the_server_closes_or_the_options_say_no() {
    let close: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}";
    let short: &[u8] = b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\n{}";
    let old: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    for (answer, options) in [
        (close, HttpOptions::default()),
        (short, HttpOptions::default()),
        (old, HttpOptions::default()),
        (
            KEPT,
            HttpOptions {
                idle_timeout: Duration::ZERO,
                ..HttpOptions::default()
            },
        ),
        (
            KEPT,
            HttpOptions {
                max_idle: 0,
                ..HttpOptions::default()
            },
        ),
    ] {
        every_mode(|| {
            // The server would take a second request on the first connection: the client
            // must not send one there.
            let (port, server) = serve_scripts(vec![
                vec![Turn::Answer(answer), Turn::Answer(answer)],
                vec![Turn::Answer(answer), Turn::Answer(answer)],
            ]);
            let client = client(options.clone());
            let results = send_in_a_row(&client, &format!("http://127.0.0.1:{port}/token"), 2);
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            drop(client);
            let seen = server.join().expect("server");
            assert_eq!(
                seen.iter().map(Vec::len).collect::<Vec<_>>(),
                [1, 1],
                "{}",
                String::from_utf8_lossy(answer)
            );
        });
    }
}

#[test]
fn a_kept_connection_the_server_closed_is_replaced_before_or_after_sending() {
    every_mode(|| {
        // Closed right after its answer: noticed before the next request is written (or,
        // should the close come late, when it fails unanswered).
        let (port, server) =
            serve_scripts(vec![vec![Turn::Answer(KEPT)], vec![Turn::Answer(KEPT)]]);
        let kept = client(HttpOptions::default());
        let results = send_in_a_row(&kept, &format!("http://127.0.0.1:{port}/token"), 2);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        drop(kept);
        let seen = server.join().expect("server");
        assert_eq!(seen.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);

        // Closed as the request arrives: sent once more on a new connection.
        let (port, server) = serve_scripts(vec![
            vec![Turn::Answer(KEPT), Turn::Drop],
            vec![Turn::Answer(KEPT)],
        ]);
        let kept = client(HttpOptions::default());
        let results = send_in_a_row(&kept, &format!("http://127.0.0.1:{port}/token"), 2);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        drop(kept);
        let seen = server.join().expect("server");
        assert_eq!(seen.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    });
}

#[test]
fn a_kept_connection_that_fails_mid_answer_is_an_error_and_not_sent_again() {
    every_mode(|| {
        let (port, server) = serve_scripts(vec![
            vec![
                Turn::Answer(KEPT),
                Turn::Cut(b"HTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\n{\"acc"),
            ],
            vec![Turn::Answer(KEPT)],
        ]);
        let client = client(HttpOptions::default());
        let mut results = send_in_a_row(&client, &format!("http://127.0.0.1:{port}/token"), 2);
        let error = results.pop().expect("two").expect_err("cut short");
        assert_eq!(error.kind(), TransportErrorKind::Protocol, "{error}");
        assert!(results[0].is_ok());
        drop(client);
        // The server's second script never sees a connection: unblock it.
        let _ = TcpStream::connect(("127.0.0.1", port));
        let seen = server.join().expect("server");
        assert_eq!(seen[0].len(), 2, "{seen:?}");
        assert!(seen[1].is_empty(), "not sent again: {seen:?}");
    });
}
