//! The browser-facing loopback port: S22–S31.
//!
//! Every response any test here provokes goes through [`assert_s28_headers`] (see
//! [`Listener`]), so the protective headers (S28), `Connection: close` (S26) and the absence
//! of CORS headers (S23) are checked on all of them.

use std::time::Duration;

use latchkey::{Action, ConfigBuilder, ConfigError, ConnId, ExchangeId, Landing, Limits};
use latchkey_tests::harness::{
    self, Harness, Response, Started, chromium_get, json_response, raw_request, token_ok,
    token_request,
};

const HOST: &str = "Host: 127.0.0.1:8080";
/// The real callback of a flow; `STATE` stands for the flow's state (see [`fill`]).
const CODE: &str = "code=auth-code-1&state=STATE&iss=https%3A%2F%2Fidp.example";
const DENIED: &str = "error=access_denied&state=STATE&iss=https%3A%2F%2Fidp.example";
const CALLBACK: &str = "/callback?code=auth-code-1&state=STATE&iss=https%3A%2F%2Fidp.example";
const SUCCESS_URL: &str = "docker-desktop://dashboard/open";
const FAILURE_URL: &str = "docker-desktop://dashboard/login-failed";
const LIFETIME: Duration = Duration::from_secs(600);

/// S28 (and S23, S26): the headers every response of the browser-facing port carries.
fn assert_s28_headers(r: &Response) {
    let header = |name: &str| {
        r.header(name)
            .unwrap_or_else(|| panic!("{} response lacks {name}: {:?}", r.status, r.headers))
    };
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("pragma"), "no-cache");
    assert_eq!(header("referrer-policy"), "no-referrer");
    let csp = header("content-security-policy");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    for directive in [
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ] {
        assert!(
            csp.split(';').any(|d| d.trim() == directive),
            "{csp} lacks {directive}"
        );
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("x-frame-options"), "DENY");
    let html = r.body.starts_with(b"<!doctype html>");
    assert_eq!(header("content-type").starts_with("text/html"), html);
    assert_eq!(header("content-length"), r.body.len().to_string());
    assert_eq!(header("connection"), "close");
    assert!(
        !r.headers
            .iter()
            .any(|(n, _)| n.starts_with("access-control-")),
        "CORS header in {:?}",
        r.headers
    );
}

/// A [`Harness`] whose every response is checked with [`assert_s28_headers`].
struct Listener(Harness);

impl Listener {
    fn new() -> Listener {
        Listener(Harness::new())
    }

    fn with(config: ConfigBuilder) -> Listener {
        Listener(Harness::with(config.build().expect("valid config")))
    }

    fn start(&mut self) -> Started {
        self.0.start()
    }

    /// Every pending action, each response checked.
    fn drain(&mut self) -> Vec<Action> {
        checked(self.0.drain())
    }

    fn accept(&mut self) -> ConnId {
        self.0
            .engine
            .handle_accept(self.0.now)
            .expect("below the cap")
    }

    fn feed(&mut self, conn: ConnId, bytes: &[u8]) -> Vec<Action> {
        self.0.engine.handle_bytes(self.0.now, conn, bytes);
        self.drain()
    }

    fn send(&mut self, bytes: &[u8]) -> (ConnId, Vec<Action>) {
        let conn = self.accept();
        (conn, self.feed(conn, bytes))
    }

    fn callback(&mut self, query: &str) -> (ConnId, Vec<Action>) {
        self.send(&chromium_get(&format!("/callback?{query}")))
    }

    fn advance(&mut self, by: Duration) -> Vec<Action> {
        checked(self.0.advance(by))
    }

    fn until_exchange(&mut self, flow: &Started) -> (ConnId, ExchangeId) {
        let (conn, actions) = self.callback(&CODE.replace("STATE", &flow.state));
        let (exchange, _) = token_request(&actions).expect("callback leads to a token request");
        (conn, exchange)
    }

    fn token_response(&mut self, exchange: ExchangeId, raw: &[u8]) -> Vec<Action> {
        checked(self.0.token_response(exchange, raw))
    }

    fn persisted(&mut self, flow: &Started) -> Vec<Action> {
        self.0
            .engine
            .handle_persisted(self.0.now, flow.flow, Ok(()));
        self.drain()
    }
}

fn checked(actions: Vec<Action>) -> Vec<Action> {
    for action in &actions {
        if let Action::Respond { status, bytes, .. } = action {
            let response = Response::parse(bytes);
            assert_eq!(response.status, status.as_u16());
            assert_s28_headers(&response);
        }
    }
    actions
}

/// The raw bytes of the one response written to `conn`.
fn response_bytes(actions: &[Action], conn: ConnId) -> Vec<u8> {
    let mut responses = actions.iter().filter_map(|action| match action {
        Action::Respond { conn: c, bytes, .. } if *c == conn => Some(bytes.to_vec()),
        _ => None,
    });
    let first = responses
        .next()
        .unwrap_or_else(|| panic!("no response to {conn}: {actions:?}"));
    assert!(responses.next().is_none(), "{conn} answered twice");
    first
}

/// The one response written to `conn`, parsed.
fn response(actions: &[Action], conn: ConnId) -> Response {
    Response::parse(&response_bytes(actions, conn))
}

fn responds_to(actions: &[Action], conn: ConnId) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Respond { conn: c, .. } if *c == conn))
}

/// `template` with every `STATE` replaced by `state`.
fn fill(template: &[u8], state: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.windows(5).position(|w| w == b"STATE") {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(state.as_bytes());
        rest = &rest[at + 5..];
    }
    out.extend_from_slice(rest);
    out
}

/// `GET target` with exactly `headers`.
fn get(target: &str, headers: &[&str]) -> Vec<u8> {
    raw_request(&format!("GET {target} HTTP/1.1"), headers)
}

/// "Flow unchanged": what a refused request caused (`actions`) holds no token request, no
/// persist and no end of a flow, and `flow`'s real callback, on a new connection, still leads
/// to its token request.
fn assert_flow_unchanged(l: &mut Listener, flow: &Started, actions: &[Action]) {
    for action in actions {
        assert!(
            !matches!(
                action,
                Action::SendTokenRequest { .. } | Action::Persist { .. } | Action::Finished { .. }
            ),
            "a refused request changed a flow: {action:?}"
        );
    }
    let (conn, actions) = l.callback(&CODE.replace("STATE", &flow.state));
    let (_, request) = token_request(&actions).expect("the real callback still works");
    assert!(
        request
            .body()
            .starts_with(b"grant_type=authorization_code&code=auth-code-1&")
    );
    assert!(!responds_to(&actions, conn), "the real callback is held");
}

/// Sends `bytes` to `l`, where `flow` waits: answered at once with `status`, flow unchanged.
fn refused(l: &mut Listener, flow: &Started, bytes: &[u8], status: u16) -> Response {
    let (conn, actions) = l.send(bytes);
    let r = response(&actions, conn);
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(bytes));
    assert_flow_unchanged(l, flow, &actions);
    r
}

/// [`refused`] on a fresh default listener, `STATE` in `template` being its flow's state.
fn assert_refused(template: &[u8], status: u16) -> Response {
    let mut l = Listener::new();
    let flow = l.start();
    refused(&mut l, &flow, &fill(template, &flow.state), status)
}

/// `template` (with the state of a flow of `l`) is taken as that flow's callback: it leads to
/// the token request and the connection is held.
fn assert_accepted_by(l: &mut Listener, template: &[u8]) {
    let flow = l.start();
    let (conn, actions) = l.send(&fill(template, &flow.state));
    let (_, request) = token_request(&actions)
        .unwrap_or_else(|| panic!("refused: {}", String::from_utf8_lossy(template)));
    assert!(
        request
            .body()
            .starts_with(b"grant_type=authorization_code&code=auth-code-1&")
    );
    assert!(!responds_to(&actions, conn));
}

fn assert_accepted(template: &[u8]) {
    assert_accepted_by(&mut Listener::new(), template);
}

/// A config whose flows end with a 303 to [`SUCCESS_URL`] or [`FAILURE_URL`].
fn redirecting() -> ConfigBuilder {
    harness::config()
        .on_success(Landing::Redirect(SUCCESS_URL.into()))
        .on_failure(Landing::Redirect(FAILURE_URL.into()))
}

/// Runs a flow of `config` through the callback `query` (`STATE` filled in), answering a
/// token request with `tokens` and a persist with success; returns the browser's response.
fn outcome_bytes(config: ConfigBuilder, query: &str, tokens: &[u8]) -> Vec<u8> {
    let mut l = Listener::with(config);
    let flow = l.start();
    let (conn, mut actions) = l.callback(&query.replace("STATE", &flow.state));
    if let Some((exchange, _)) = token_request(&actions) {
        actions.extend(l.token_response(exchange, tokens));
        if actions.iter().any(|a| matches!(a, Action::Persist { .. })) {
            actions.extend(l.persisted(&flow));
        }
    }
    response_bytes(&actions, conn)
}

fn outcome(config: ConfigBuilder, query: &str, tokens: &[u8]) -> Response {
    Response::parse(&outcome_bytes(config, query, tokens))
}

fn invalid_grant() -> Vec<u8> {
    json_response(
        400,
        r#"{"error":"invalid_grant","error_description":"code expired"}"#,
    )
}

/// The first response of a fresh default listener with one flow to `template`.
fn first_response(template: &[u8]) -> Response {
    let mut l = Listener::new();
    let flow = l.start();
    let (conn, actions) = l.send(&fill(template, &flow.state));
    response(&actions, conn)
}

/// A request head of `len` bytes for the real callback, padded by one header; `complete`
/// ends it with the blank line.
fn padded_head(state: &str, len: usize, complete: bool) -> Vec<u8> {
    let mut head = fill(
        format!("GET {CALLBACK} HTTP/1.1\r\n{HOST}\r\nX-Pad: ").as_bytes(),
        state,
    );
    let end: &[u8] = if complete { b"\r\n\r\n" } else { b"" };
    head.resize(len - end.len(), b'a');
    head.extend_from_slice(end);
    assert_eq!(head.len(), len);
    head
}

// ----- S22: Host allow-list -----

#[test]
fn s22_loopback_names_of_the_port_are_accepted() {
    for host in [
        "127.0.0.1:8080",
        "localhost:8080",
        "LOCALHOST:8080",
        "[::1]:8080",
    ] {
        assert_accepted(&get(CALLBACK, &[&format!("Host: {host}")]));
    }
}

#[test]
fn s22_the_redirect_hosts_own_name_is_accepted() {
    for (redirect_host, host) in [
        ("localhost", "localhost:8080"),
        ("127.0.0.2", "127.0.0.2:8080"),
        ("::1", "[::1]:8080"),
    ] {
        let mut l =
            Listener::with(harness::config().redirect_uri(redirect_host, 8080, "/callback"));
        assert_accepted_by(&mut l, &get(CALLBACK, &[&format!("Host: {host}")]));
        assert_accepted_by(&mut l, &get(CALLBACK, &[HOST]));
    }
}

#[test]
fn s22_missing_or_repeated_host_gets_400_and_flow_unchanged() {
    assert_refused(&get(CALLBACK, &[]), 400);
    assert_refused(&get(CALLBACK, &[HOST, HOST]), 400);
    assert_refused(&get(CALLBACK, &[HOST, "host: evil.example"]), 400);
}

#[test]
fn s22_foreign_host_gets_421_and_flow_unchanged() {
    for host in [
        "evil.example",
        "evil.example:8080",
        "127.0.0.1:9999",
        "127.0.0.1",
        "localhost",
        "localhost.evil.example:8080",
        "127.0.0.1:8080.evil.example",
        "127.0.0.2:8080",
        "0.0.0.0:8080",
        "[::1]",
    ] {
        assert_refused(&get(CALLBACK, &[&format!("Host: {host}")]), 421);
    }
}

// ----- S23: Fetch-Metadata, no CORS -----

#[test]
fn s23_fetch_metadata_other_than_a_navigation_gets_403_and_flow_unchanged() {
    for fetch in [
        &["Sec-Fetch-Mode: cors"][..],
        &["Sec-Fetch-Mode: no-cors"],
        &["Sec-Fetch-Dest: image"],
        &["Sec-Fetch-Dest: empty"],
        &["Sec-Fetch-Mode: cors", "Sec-Fetch-Dest: empty"],
        &["Sec-Fetch-Mode: no-cors", "Sec-Fetch-Dest: image"],
        &["Sec-Fetch-Mode: navigate", "Sec-Fetch-Dest: iframe"],
        &["Sec-Fetch-Mode: navigate", "Sec-Fetch-Dest: empty"],
    ] {
        let headers = [&[HOST, "Origin: https://evil.example"][..], fetch].concat();
        assert_refused(&get(CALLBACK, &headers), 403);
    }
}

#[test]
fn s23_a_request_without_fetch_metadata_is_accepted() {
    assert_accepted(&get(
        CALLBACK,
        &[HOST, "User-Agent: curl/8.5.0", "Accept: */*"],
    ));
}

#[test]
fn s23_options_preflight_gets_405_allow_get_and_no_cors_headers() {
    let preflight = raw_request(
        &format!("OPTIONS {CALLBACK} HTTP/1.1"),
        &[
            HOST,
            "Origin: https://evil.example",
            "Access-Control-Request-Method: GET",
            "Access-Control-Request-Headers: x-probe",
            "Sec-Fetch-Mode: cors",
            "Sec-Fetch-Dest: empty",
        ],
    );
    let r = assert_refused(&preflight, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    assert!(
        !r.headers
            .iter()
            .any(|(n, _)| n.starts_with("access-control-"))
    );
}

// ----- S24: one route -----

#[test]
fn s24_paths_other_than_the_callback_get_404_and_flow_unchanged() {
    for target in [
        "/favicon.ico",
        "/token",
        "/login",
        "/",
        "/callback/../x",
        "/callback/",
        "/callback/?code=auth-code-1&state=STATE",
        "/Callback?code=auth-code-1&state=STATE",
        "/%63allback?code=auth-code-1&state=STATE",
        "/callbackx?code=auth-code-1&state=STATE",
        "//callback?code=auth-code-1&state=STATE",
        "/callback;x?code=auth-code-1&state=STATE",
    ] {
        assert_refused(&chromium_get(target), 404);
    }
}

#[test]
fn s24_methods_other_than_get_get_405_and_flow_unchanged() {
    for method in ["POST", "PUT", "DELETE", "HEAD", "PATCH", "TRACE", "get"] {
        let request = raw_request(
            &format!("{method} {CALLBACK} HTTP/1.1"),
            &[HOST, "Content-Length: 0"],
        );
        let r = assert_refused(&request, 405);
        assert_eq!(r.header("allow"), Some("GET"), "{method}");
    }
}

// ----- S25: request target -----

#[test]
fn s25_only_origin_form_targets_are_served() {
    for (line, status) in [
        (
            "GET http://127.0.0.1:8080/callback?code=auth-code-1&state=STATE HTTP/1.1",
            400,
        ),
        ("GET 127.0.0.1:8080 HTTP/1.1", 400),
        ("GET callback?code=auth-code-1&state=STATE HTTP/1.1", 400),
        ("GET * HTTP/1.1", 400),
        ("OPTIONS * HTTP/1.1", 405), // the method is judged first
        ("GET /callback?code=auth-code-1&state=STATE#x HTTP/1.1", 400),
    ] {
        assert_refused(&raw_request(line, &[HOST]), status);
    }
}

#[test]
fn s25_undecodable_queries_get_400_and_flow_unchanged() {
    for query in [
        &b"code=%zz&state=STATE"[..],
        b"code=auth-code-1&state=STATE&x=%",
        b"code=auth-code-1&state=STATE&x=%4",
        b"code=%FF&state=STATE",
        b"code=auth-code-1&state=STATE&x=%C3",
        b"code=auth-code-1&state=STATE&x=\xff",
        b"code=auth-code-1%00&state=STATE",
        b"code=auth-code-1&state=STATE&error_description=a%0D%0Ab",
        b"code=auth-code-1&state=STATE&x=a%0Ab",
        b"code=auth-code-1&state=STATE&x=a%7Fb",
        b"code=auth\tcode&state=STATE",
        b"code=auth-code-1&state=STATE&x=a\tb",
    ] {
        let mut request = b"GET /callback?".to_vec();
        request.extend_from_slice(query);
        request.extend_from_slice(format!(" HTTP/1.1\r\n{HOST}\r\n\r\n").as_bytes());
        assert_refused(&request, 400);
    }
}

// ----- S26: limits -----

#[test]
fn s26_an_oversized_head_gets_431_once_and_nothing_after() {
    let mut l = Listener::new();
    let flow = l.start();
    let conn = l.accept();
    let mut actions = l.feed(conn, &padded_head(&flow.state, 8 * 1024 + 1, false));
    assert_eq!(response(&actions, conn).status, 431);
    for more in [&b"aaaa"[..], b"\r\n\r\n", &chromium_get("/callback")] {
        let later = l.feed(conn, more);
        assert!(later.is_empty(), "{later:?}");
        actions.extend(later);
    }
    assert!(l.advance(Duration::from_secs(11)).is_empty());
    assert_flow_unchanged(&mut l, &flow, &actions);
}

#[test]
fn s26_a_head_fed_byte_by_byte_gets_431_as_soon_as_it_reaches_8_kib() {
    let mut l = Listener::new();
    let flow = l.start();
    let conn = l.accept();
    let mut all = Vec::new();
    let mut answered_after = None;
    for (i, byte) in padded_head(&flow.state, 9000, false).iter().enumerate() {
        let actions = l.feed(conn, std::slice::from_ref(byte));
        if !actions.is_empty() {
            assert!(answered_after.is_none(), "answered twice");
            assert_eq!(response(&actions, conn).status, 431);
            answered_after = Some(i + 1);
        }
        all.extend(actions);
    }
    assert_eq!(answered_after, Some(8 * 1024));
    assert_flow_unchanged(&mut l, &flow, &all);
}

#[test]
fn s26_a_complete_head_of_exactly_8_kib_is_served_one_byte_more_is_not() {
    let mut l = Listener::new();
    let flow = l.start();
    let (conn, actions) = l.send(&padded_head(&flow.state, 8 * 1024, true));
    assert!(token_request(&actions).is_some(), "{actions:?}");
    assert!(!responds_to(&actions, conn));
    let mut l = Listener::new();
    let flow = l.start();
    refused(
        &mut l,
        &flow,
        &padded_head(&flow.state, 8 * 1024 + 1, true),
        431,
    );
}

#[test]
fn s26_a_callback_fed_byte_by_byte_is_served_when_its_head_ends() {
    let mut l = Listener::new();
    let flow = l.start();
    let conn = l.accept();
    let request = fill(&chromium_get(CALLBACK), &flow.state);
    for (i, byte) in request.iter().enumerate() {
        let actions = l.feed(conn, std::slice::from_ref(byte));
        let last = i + 1 == request.len();
        assert_eq!(token_request(&actions).is_some(), last, "after byte {i}");
        assert!(!responds_to(&actions, conn));
    }
}

#[test]
fn s26_more_than_64_headers_get_431() {
    let extra: Vec<String> = (1..=64).map(|i| format!("X-Header-{i}: y")).collect();
    let headers: Vec<&str> = std::iter::once(HOST)
        .chain(extra.iter().map(String::as_str))
        .collect();
    assert_eq!(headers.len(), 65);
    assert_refused(&get(CALLBACK, &headers), 431);
    assert_accepted(&get(CALLBACK, &headers[..64]));
}

#[test]
fn s26_a_request_body_gets_400_and_flow_unchanged() {
    for (header, body) in [
        ("Content-Length: 5", "hello"),
        ("Transfer-Encoding: chunked", "5\r\nhello\r\n0\r\n\r\n"),
    ] {
        let mut request = get(CALLBACK, &[HOST, header]);
        request.extend_from_slice(body.as_bytes());
        assert_refused(&request, 400);
    }
    assert_accepted(&get(CALLBACK, &[HOST, "Content-Length: 0"]));
}

#[test]
fn s26_pipelined_requests_after_the_callback_are_ignored() {
    let mut l = Listener::new();
    let flow = l.start();
    let mut bytes = fill(&chromium_get(CALLBACK), &flow.state);
    bytes.extend(chromium_get("/favicon.ico"));
    bytes.extend(fill(
        &chromium_get(&CALLBACK.replace("auth-code-1", "auth-code-2")),
        &flow.state,
    ));
    let (conn, mut actions) = l.send(&bytes);
    let (exchange, request) = token_request(&actions).expect("the first request is served");
    assert!(
        request
            .body()
            .starts_with(b"grant_type=authorization_code&code=auth-code-1&")
    );
    assert!(!responds_to(&actions, conn));
    actions.extend(l.feed(conn, &chromium_get("/favicon.ico")));
    actions.extend(l.token_response(exchange, &token_ok()));
    actions.extend(l.persisted(&flow));
    let token_requests = actions
        .iter()
        .filter(|a| matches!(a, Action::SendTokenRequest { .. }))
        .count();
    assert_eq!(token_requests, 1);
    assert_eq!(response(&actions, conn).status, 200); // exactly one response
}

// ----- S27: slow clients, connection cap -----

#[test]
fn s27_silent_and_slow_connections_are_closed_at_the_header_deadline() {
    let mut l = Listener::new();
    let flow = l.start();
    let silent = l.accept();
    let slow = l.accept();
    let partial = fill(
        format!("GET {CALLBACK} HTTP/1.1\r\n").as_bytes(),
        &flow.state,
    );
    let mut actions = l.feed(slow, &partial);
    actions.extend(l.advance(Duration::from_millis(9_900)));
    // Trickling bytes does not extend the deadline.
    actions.extend(l.feed(slow, format!("{HOST}\r\n").as_bytes()));
    assert!(actions.is_empty(), "{actions:?}");
    let closed = l.advance(Duration::from_millis(100));
    assert_eq!(closed.len(), 2, "{closed:?}");
    for conn in [silent, slow] {
        assert!(
            closed
                .iter()
                .any(|a| matches!(a, Action::Close { conn: c } if *c == conn))
        );
    }
    assert_eq!(l.0.engine.open_connections(), 0);
    assert_flow_unchanged(&mut l, &flow, &closed);
}

#[test]
fn s27_at_the_cap_the_oldest_waiting_connection_makes_room_for_the_browser() {
    let mut limits = Limits::default();
    limits.max_connections = 2;
    let mut l = Listener::with(harness::config().limits(limits));
    let flow = l.start();
    let slow = l.accept();
    let _slower = l.accept();
    // A burst of new connections does not push out ones still arriving…
    assert_eq!(l.0.engine.handle_accept(l.0.now), None);
    assert!(l.advance(Duration::from_millis(999)).is_empty());
    assert_eq!(l.0.engine.handle_accept(l.0.now), None);
    // …but once slow clients have held every slot for a second, the oldest makes room.
    assert!(l.advance(Duration::from_millis(1)).is_empty());
    let browser = l.0.engine.handle_accept(l.0.now).expect("room is made");
    let evicted = l.0.drain();
    assert!(
        matches!(evicted.as_slice(), [Action::Close { conn }] if *conn == slow),
        "{evicted:?}"
    );
    let actions = l.feed(
        browser,
        &chromium_get(&CALLBACK.replace("STATE", &flow.state)),
    );
    assert!(token_request(&actions).is_some(), "{actions:?}");
}

#[test]
fn s27_when_every_connection_is_held_by_a_flow_a_new_one_is_refused() {
    let mut limits = Limits::default();
    limits.max_connections = 2;
    let mut l = Listener::with(harness::config().limits(limits));
    let (first, second) = (l.start(), l.start());
    let (held, _) = l.until_exchange(&first);
    let (also_held, _) = l.until_exchange(&second);
    assert_eq!(l.0.engine.handle_accept(l.0.now), None);
    assert!(l.0.drain().is_empty(), "held connections are never evicted");
    assert_eq!(l.0.engine.open_connections(), 2);
    assert_ne!(held, also_held);
}

#[test]
fn s27_a_held_callback_has_no_header_deadline() {
    let mut l = Listener::with(harness::config().exchange_timeout(Duration::from_secs(60)));
    let flow = l.start();
    let (conn, exchange) = l.until_exchange(&flow);
    let waited = l.advance(Duration::from_secs(20));
    assert!(waited.is_empty(), "{waited:?}");
    assert_eq!(l.0.engine.open_connections(), 1);
    l.token_response(exchange, &token_ok());
    let actions = l.persisted(&flow);
    assert_eq!(response(&actions, conn).status, 200);
}

// ----- S28: protective headers on every response -----

#[test]
fn s28_every_response_carries_the_protective_headers() {
    type Case = (&'static str, u16, fn() -> Response);
    let cases: [Case; 22] = [
        ("success page", 200, || {
            outcome(harness::config(), CODE, &token_ok())
        }),
        ("success redirect", 303, || {
            outcome(redirecting(), CODE, &token_ok())
        }),
        ("failure page, denied", 200, || {
            outcome(harness::config(), DENIED, b"")
        }),
        ("failure page, token refused", 200, || {
            outcome(harness::config(), CODE, &invalid_grant())
        }),
        ("failure redirect", 303, || {
            outcome(redirecting(), DENIED, b"")
        }),
        ("missing Host", 400, || first_response(&get(CALLBACK, &[]))),
        ("request body", 400, || {
            first_response(&get(CALLBACK, &[HOST, "Transfer-Encoding: chunked"]))
        }),
        ("malformed query", 400, || {
            first_response(&chromium_get("/callback?code=%zz&state=STATE"))
        }),
        ("unknown state", 400, || {
            first_response(&chromium_get("/callback?code=c&state=forged"))
        }),
        ("missing state", 400, || {
            first_response(&chromium_get("/callback?code=c"))
        }),
        ("replayed callback", 400, || {
            let mut l = Listener::new();
            let flow = l.start();
            l.until_exchange(&flow);
            let (conn, actions) = l.callback(&CODE.replace("STATE", &flow.state));
            response(&actions, conn)
        }),
        ("not a navigation", 403, || {
            first_response(&get(CALLBACK, &[HOST, "Sec-Fetch-Mode: cors"]))
        }),
        ("favicon", 404, || {
            first_response(&chromium_get("/favicon.ico"))
        }),
        ("no pending flow", 404, || {
            let (conn, actions) = Listener::new().callback("code=c&state=s");
            response(&actions, conn)
        }),
        ("POST", 405, || {
            first_response(&raw_request(&format!("POST {CALLBACK} HTTP/1.1"), &[HOST]))
        }),
        ("OPTIONS", 405, || {
            first_response(&raw_request("OPTIONS * HTTP/1.1", &[HOST]))
        }),
        ("expired: cancelled", 410, || {
            let mut l = Listener::new();
            let flow = l.start();
            l.0.engine.cancel(l.0.now, flow.flow);
            l.drain();
            let (conn, actions) = l.callback(&CODE.replace("STATE", &flow.state));
            response(&actions, conn)
        }),
        ("expired: lifetime", 410, || {
            let mut l = Listener::new();
            let flow = l.start();
            l.advance(LIFETIME);
            let (conn, actions) = l.callback(&CODE.replace("STATE", &flow.state));
            response(&actions, conn)
        }),
        ("foreign host", 421, || {
            first_response(&get(CALLBACK, &["Host: evil.example"]))
        }),
        ("oversized head", 431, || {
            let mut l = Listener::new();
            let (conn, actions) = l.send(&padded_head("x", 8 * 1024 + 1, false));
            response(&actions, conn)
        }),
        ("too many headers", 431, || {
            let extra: Vec<String> = (0..64).map(|i| format!("X-{i}: y")).collect();
            let headers: Vec<&str> = std::iter::once(HOST)
                .chain(extra.iter().map(String::as_str))
                .collect();
            first_response(&get(CALLBACK, &headers))
        }),
        ("HEAD", 405, || {
            first_response(&raw_request(&format!("HEAD {CALLBACK} HTTP/1.1"), &[HOST]))
        }),
    ];
    for (name, status, run) in cases {
        let r = run();
        assert_eq!(r.status, status, "{name}");
        assert_s28_headers(&r); // again, though `Listener` checked it already
        let csp = r.header("content-security-policy").unwrap_or_default();
        if status == 303 {
            assert!(r.body.is_empty(), "{name}");
        } else {
            // The built-in page's one inline style is allowed by hash, nothing else is.
            let body = String::from_utf8(r.body.clone()).expect("UTF-8 page");
            assert!(body.starts_with("<!doctype html>"), "{name}");
            assert_eq!(body.matches("<style").count(), 1, "{name}");
            assert_eq!(body.matches("</style>").count(), 1, "{name}");
            assert!(!body.contains("style="), "{name}");
            assert!(csp.contains("style-src 'sha256-"), "{name}: {csp}");
        }
    }
}

// ----- S29: static pages -----

#[test]
fn s29_pages_reflect_nothing_from_the_request() {
    // The marker, and a script tag around it, percent-encoded and raw.
    const MARK: &str = "xss%3Cscript%3Eq7ZxMark";
    let with_mark = |query: &str| {
        format!("{query}&q7ZxMark={MARK}&error_uri=https%3A%2F%2Fevil.example%2F{MARK}")
    };
    let responses = [
        outcome(
            harness::config(),
            &with_mark(&format!("{DENIED}&error_description={MARK}")),
            b"",
        ),
        outcome(harness::config(), &with_mark(CODE), &token_ok()),
        outcome(harness::config(), &with_mark(CODE), &invalid_grant()),
        first_response(&chromium_get("/q7ZxMark<script>alert(1)</script>")),
        first_response(&chromium_get(&format!(
            "/callback?{}",
            with_mark("code=c&state=q7ZxMark")
        ))),
        first_response(&chromium_get(&format!(
            "/callback?{}&x=%zz",
            with_mark(CODE)
        ))),
        first_response(&get(
            &format!("/callback?{}", with_mark(CODE)),
            &["Host: q7ZxMark.evil.example"],
        )),
        first_response(&get(
            &format!("/callback?{}", with_mark(CODE)),
            &[HOST, "Sec-Fetch-Dest: q7ZxMark"],
        )),
        {
            let (conn, actions) = Listener::new().callback(&with_mark("code=c&state=q7ZxMark"));
            response(&actions, conn)
        },
    ];
    for r in responses {
        let body = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
        for needle in ["q7zxmark", "<script", "evil", "http://", "https://", "src="] {
            assert!(
                !body.contains(needle),
                "{} page contains {needle}",
                r.status
            );
        }
        for (name, value) in &r.headers {
            assert!(
                !value.to_ascii_lowercase().contains("q7zxmark"),
                "{name}: {value}"
            );
        }
    }
}

#[test]
fn s29_the_failure_page_is_the_same_whatever_the_error() {
    let failure = |query: &str, tokens: &[u8]| outcome_bytes(harness::config(), query, tokens);
    let pages = [
        failure(&format!("{DENIED}&error_description=User+said+no"), b""),
        failure(
            "error=server_error&error_description=Other&error_uri=https%3A%2F%2Fidp.example%2Fe&state=STATE",
            b"",
        ),
        failure(
            "error=invalid_scope&state=STATE&iss=https%3A%2F%2Fother.example",
            b"",
        ),
        failure(CODE, &invalid_grant()),
        failure(CODE, &json_response(500, "oops")),
    ];
    for page in &pages {
        assert_eq!(page, &pages[0], "{}", String::from_utf8_lossy(page));
    }
    assert_ne!(
        pages[0],
        outcome_bytes(harness::config(), CODE, &token_ok())
    );
}

// ----- S30: constant landing -----

#[test]
fn s30_success_redirects_to_the_constant_url_only_after_the_store_confirmed() {
    let mut l = Listener::with(redirecting());
    let flow = l.start();
    // The request offers targets of its own; none is ever used.
    let query = format!(
        "{}&redirect_uri=https%3A%2F%2Fevil.example&return_to=https%3A%2F%2Fevil.example&next=%2F%2Fevil.example",
        CODE.replace("STATE", &flow.state)
    );
    let (conn, actions) = l.callback(&query);
    let (exchange, _) = token_request(&actions).expect("token request");
    let stored = l.token_response(exchange, &token_ok());
    assert!(stored.iter().any(|a| matches!(a, Action::Persist { .. })));
    assert!(
        !responds_to(&stored, conn),
        "no answer before the store confirmed"
    );
    assert!(!stored.iter().any(|a| matches!(a, Action::Finished { .. })));

    let actions = l.persisted(&flow);
    let r = response(&actions, conn);
    assert_eq!(r.status, 303);
    let location = r.header("location").expect("location");
    assert_eq!(location, SUCCESS_URL);
    for secret in ["auth-code-1", flow.state.as_str(), "SECRET", "evil"] {
        assert!(!location.contains(secret));
    }
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Finished { result: Ok(_), .. }))
    );
}

#[test]
fn s30_by_default_success_is_the_built_in_200_page() {
    let r = outcome(harness::config(), CODE, &token_ok());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("location"), None);
    assert!(String::from_utf8_lossy(&r.body).contains("<h1>Signed in</h1>"));
}

#[test]
fn s30_failures_use_the_failure_landing() {
    for (query, tokens) in [(DENIED, Vec::new()), (CODE, invalid_grant())] {
        let r = outcome(redirecting(), query, &tokens);
        assert_eq!(r.status, 303);
        assert_eq!(r.header("location"), Some(FAILURE_URL));
    }
}

#[test]
fn s30_a_landing_must_be_an_absolute_uri_of_visible_ascii() {
    for bad in [
        "docker-desktop://dashboard/open now",
        "docker-desktop://dashboard/open\n",
        "docker-desktop://dashboard\r\nSet-Cookie: a=b",
        "docker-desktop://dash\tboard",
        "dashboard/open",
        "/dashboard",
        "//evil.example/x",
        "1app://x",
        "app:",
        "",
    ] {
        for config in [
            harness::config().on_success(Landing::Redirect(bad.into())),
            harness::config().on_failure(Landing::Redirect(bad.into())),
        ] {
            assert_eq!(
                config.build().err(),
                Some(ConfigError::InvalidLanding),
                "{bad:?}"
            );
        }
    }
    assert!(redirecting().build().is_ok());
}

// ----- S31: no pending flow -----

#[test]
fn s31_a_callback_without_any_flow_ever_gets_404_and_changes_nothing() {
    let mut l = Listener::new();
    for query in ["code=c&state=s", "error=access_denied&state=s", "code=c"] {
        let (conn, actions) = l.callback(query);
        let status = response(&actions, conn).status;
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert_eq!(l.0.engine.flows_in_progress(), 0);
        assert_eq!(status, if query.contains("state") { 404 } else { 400 });
    }
}

#[test]
fn s31_once_every_flow_ended_and_was_forgotten_callbacks_get_404() {
    let mut l = Listener::new();
    let done = l.start();
    let cancelled = l.start();
    let expired = l.start();
    let (_, exchange) = l.until_exchange(&done);
    l.token_response(exchange, &token_ok());
    l.persisted(&done);
    l.0.engine.cancel(l.0.now, cancelled.flow);
    l.drain();
    l.advance(LIFETIME); // `expired` times out
    l.advance(2 * LIFETIME);
    assert_eq!(l.0.engine.flows_in_progress(), 0);
    for flow in [&done, &cancelled, &expired] {
        let (conn, actions) = l.callback(&CODE.replace("STATE", &flow.state));
        assert_eq!(response(&actions, conn).status, 404);
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert_eq!(l.0.engine.flows_in_progress(), 0);
    }
}

#[test]
fn s27_a_request_completed_after_the_header_deadline_is_not_served() {
    let mut h = Harness::new();
    let flow = h.start();
    let conn = h.engine.handle_accept(h.now).unwrap();
    // The driver never called handle_timeout: the bytes themselves arrive too late.
    h.now += Duration::from_secs(11);
    let callback = CALLBACK.replace("STATE", &flow.state);
    h.engine.handle_bytes(h.now, conn, &chromium_get(&callback));
    let actions = h.drain();
    assert!(
        matches!(actions.as_slice(), [Action::Close { conn: c }] if *c == conn),
        "{actions:?}"
    );
    assert_eq!(h.engine.flows_in_progress(), 1, "the flow still waits");
    let (_, _, request) = h.to_exchange(&flow);
    assert_eq!(request.uri(), harness::TOKEN);
}

/// Found by the callback_request fuzz target: httparse skips leading blank lines, so these
/// bytes were refused at once when whole but left waiting when split. A head is now judged
/// only once complete, identically however it arrives.
#[test]
fn s26_a_head_is_judged_only_once_complete_however_its_bytes_arrive() {
    let bytes: &[u8] = b"\n\netch keep-alive\r\n\r\n";
    // The status each chunk's feeding produced, if any.
    let run = |chunks: &[&[u8]]| -> Vec<Option<u16>> {
        let mut l = Listener::new();
        let conn = l.accept();
        chunks
            .iter()
            .map(|chunk| {
                l.feed(conn, chunk).iter().find_map(|action| match action {
                    Action::Respond {
                        conn: c, status, ..
                    } if *c == conn => Some(status.as_u16()),
                    _ => None,
                })
            })
            .collect()
    };
    assert_eq!(run(&[bytes]), [Some(400)]);
    for split in 1..bytes.len() {
        let (head, tail) = bytes.split_at(split);
        assert_eq!(run(&[head, tail]), [None, Some(400)], "split at {split}");
    }
}
