//! An engine under test: fixed configuration, a virtual clock, deterministic entropy, and
//! helpers that produce the exact bytes browsers and providers send.

use std::time::{Duration, Instant, SystemTime};

use latchkey::directory::{FlowRecord, Taken};
use latchkey::{
    Action, ClientAuth, Config, ConfigBuilder, ConnId, Engine, ExchangeId, FlowId, FlowOptions,
    Provider, ProviderBuilder,
};

/// The issuer of the test provider.
pub const ISSUER: &str = "https://idp.example";
/// The authorization endpoint of the test provider.
pub const AUTHORIZE: &str = "https://idp.example/authorize";
/// The token endpoint of the test provider.
pub const TOKEN: &str = "https://idp.example/token";
/// The loopback port the tests "bind".
pub const PORT: u16 = 8080;
/// The redirect URI the engine advertises.
pub const REDIRECT_URI: &str = "http://127.0.0.1:8080/callback";

/// A provider builder for the test IdP: public client `latchkey-test`, scopes `openid email`,
/// issuer [`ISSUER`]. Its scripted token responses carry no signed ID token, so ID token
/// verification is off here; `tests/id_tokens.rs` and the core's `oidc` tests cover it.
pub fn provider() -> ProviderBuilder {
    Provider::builder(AUTHORIZE, TOKEN, "latchkey-test")
        .scopes(["openid", "email"])
        .issuer(ISSUER)
        .verify_id_token(false)
}

/// A config builder around [`provider`] on `127.0.0.1:8080/callback`.
pub fn config() -> ConfigBuilder {
    config_with(provider().build().expect("valid test provider"))
}

/// A config builder around `provider` on `127.0.0.1:8080/callback`.
pub fn config_with(provider: Provider) -> ConfigBuilder {
    Config::builder(provider).redirect_uri("127.0.0.1", PORT, "/callback")
}

/// A confidential variant of [`provider`] using `auth`.
pub fn confidential(auth: ClientAuth) -> Provider {
    provider()
        .client_secret("s3cr3t-client".to_owned().into())
        .client_auth(auth)
        .build()
        .expect("valid confidential provider")
}

/// The test engine. `Clone` forks it, virtual clock included.
#[derive(Clone)]
pub struct Harness {
    /// The engine.
    pub engine: Engine,
    /// The virtual clock.
    pub now: Instant,
    /// The wall clock that goes with `now`.
    pub wall: SystemTime,
    entropy_counter: u64,
}

/// A started flow: its id, authorization URL and `state`.
#[derive(Debug, Clone)]
pub struct Started {
    /// The flow.
    pub flow: FlowId,
    /// The authorization URL it emitted.
    pub url: String,
    /// Its `state`, decoded from the URL.
    pub state: String,
}

impl Harness {
    /// An engine on the default test configuration.
    pub fn new() -> Harness {
        Harness::with(config().build().expect("valid test config"))
    }

    /// An engine on `config`.
    pub fn with(config: Config) -> Harness {
        Harness {
            engine: Engine::new(config).expect("port is set"),
            now: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000),
            entropy_counter: 0,
        }
    }

    /// Fresh, distinct entropy for every call.
    pub fn entropy(&mut self) -> [u8; latchkey::ENTROPY_LEN] {
        self.entropy_counter += 1;
        entropy_from(self.entropy_counter)
    }

    /// Every pending action.
    pub fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.engine.poll_action()).collect()
    }

    /// Starts a flow with the default options and returns it with its URL and state.
    pub fn start(&mut self) -> Started {
        let entropy = self.entropy();
        let flow = self.engine.start(self.now, entropy).expect("fresh entropy");
        self.started(flow)
    }

    /// Starts a flow with `options`.
    pub fn start_with(&mut self, options: FlowOptions) -> Started {
        let entropy = self.entropy();
        let flow = self
            .engine
            .start_with(self.now, entropy, options)
            .expect("fresh entropy");
        self.started(flow)
    }

    /// Reads the `OpenBrowser` action of a flow just started.
    pub fn started(&mut self, flow: FlowId) -> Started {
        let actions = self.drain();
        let url = actions
            .iter()
            .find_map(|action| match action {
                Action::OpenBrowser { flow: f, url } if *f == flow => Some(url.clone()),
                _ => None,
            })
            .expect("start emits OpenBrowser");
        let state = query_value(&url, "state").expect("URL has a state");
        Started { flow, url, state }
    }

    /// Advances the virtual clocks and fires due timers.
    pub fn advance(&mut self, by: Duration) -> Vec<Action> {
        self.now += by;
        self.wall += by;
        self.engine.handle_timeout(self.now);
        self.drain()
    }

    /// Opens a connection, sends `bytes` in one piece, and returns the actions.
    pub fn send(&mut self, bytes: &[u8]) -> (ConnId, Vec<Action>) {
        let conn = self.engine.handle_accept(self.now).expect("below the cap");
        self.engine.handle_bytes(self.now, conn, bytes);
        (conn, self.drain())
    }

    /// Sends a Chromium-style callback request for `query`.
    pub fn callback(&mut self, query: &str) -> (ConnId, Vec<Action>) {
        self.send(&chromium_get(&format!("/callback?{query}")))
    }

    /// Answers a token request with a literal response.
    pub fn token_response(&mut self, exchange: ExchangeId, raw: &[u8]) -> Vec<Action> {
        let response = parse_response(raw);
        self.engine
            .handle_token_response(self.now, self.wall, exchange, response);
        self.drain()
    }

    /// Runs a flow to the point where its token request was sent: returns the exchange and
    /// the request.
    pub fn to_exchange(
        &mut self,
        started: &Started,
    ) -> (ConnId, ExchangeId, http::Request<Vec<u8>>) {
        let query = format!(
            "code=auth-code-1&state={}&iss=https%3A%2F%2Fidp.example",
            started.state
        );
        let (conn, actions) = self.callback(&query);
        let (exchange, request) =
            token_request(&actions).expect("callback leads to a token request");
        (conn, exchange, request)
    }
}

impl Default for Harness {
    fn default() -> Harness {
        Harness::new()
    }
}

/// Distinct, well-spread entropy derived from `n` (tests only).
pub fn entropy_from(n: u64) -> [u8; latchkey::ENTROPY_LEN] {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    std::array::from_fn(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    })
}

/// A GET as Chromium 156 sends it for a top-level navigation to `target`.
pub fn chromium_get(target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\n\
         Host: 127.0.0.1:8080\r\n\
         Connection: keep-alive\r\n\
         Upgrade-Insecure-Requests: 1\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\n\
         Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8\r\n\
         Sec-Fetch-Site: cross-site\r\n\
         Sec-Fetch-Mode: navigate\r\n\
         Sec-Fetch-User: ?1\r\n\
         Sec-Fetch-Dest: document\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\n\r\n"
    )
    .into_bytes()
}

/// A raw HTTP request: `request_line`, then `headers` (each without CRLF).
pub fn raw_request(request_line: &str, headers: &[&str]) -> Vec<u8> {
    let mut out = format!("{request_line}\r\n");
    for header in headers {
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A JSON token response with `body`.
pub fn json_response(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `body` with a status made of `status` (100–599) and nothing else: what a fuzzer or a
/// property sends as a token endpoint's garbage.
pub fn garbage_response(status: u16, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\n\r\n",
        100 + status % 500,
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// A typical successful token response.
pub fn token_ok() -> Vec<u8> {
    json_response(
        200,
        r#"{"access_token":"at-SECRET-1","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-SECRET-1","scope":"openid email"}"#,
    )
}

/// Parses literal response bytes with latchkey's own reader.
pub fn parse_response(raw: &[u8]) -> http::Response<Vec<u8>> {
    let mut reader = latchkey::http1::ResponseReader::new(1 << 20);
    match reader.read(raw) {
        Ok(Some(response)) => response,
        Ok(None) => reader.read_eof().expect("complete at EOF"),
        Err(error) => panic!("test response does not parse: {error}"),
    }
}

/// The first token request among `actions`.
pub fn token_request(actions: &[Action]) -> Option<(ExchangeId, http::Request<Vec<u8>>)> {
    actions.iter().find_map(|action| match action {
        Action::SendTokenRequest {
            exchange, request, ..
        } => Some((*exchange, request.request().clone())),
        _ => None,
    })
}

/// The response written to `conn` among `actions`, parsed: status, headers, body.
pub fn response_to(actions: &[Action], conn: ConnId) -> Option<Response> {
    actions.iter().find_map(|action| match action {
        Action::Respond { conn: c, bytes, .. } if *c == conn => Some(Response::parse(bytes)),
        _ => None,
    })
}

/// A response the engine wrote, parsed.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// Parses a complete response.
    pub fn parse(bytes: &[u8]) -> Response {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_len) = response.parse(bytes).expect("valid response")
        else {
            panic!("incomplete response");
        };
        Response {
            status: response.code.expect("status"),
            headers: response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body: bytes[head_len..].to_vec(),
        }
    }

    /// The one value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        let first = values.next().map(|(_, v)| v.as_str());
        assert!(values.next().is_none(), "header {name} repeated");
        first
    }
}

/// The decoded value of `name` in the query of `url`.
pub fn query_value(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?').map_or(url, |(_, q)| q);
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        (n == name).then(|| percent_decode(v))
    })
}

/// Decodes `+` and `%XX` (test inputs are well-formed).
pub fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("utf-8")
}

/// The element of `items` that `index` names (modulo the length): how the operation
/// models turn any byte into a valid target.
pub fn pick<T: Copy>(items: &[T], index: u8) -> Option<T> {
    match items.len() {
        0 => None,
        len => items.get(usize::from(index) % len).copied(),
    }
}

/// After a model's two idle hours: every login in `unfinished` (none, if all went well)
/// is a broken rule, and so is an engine that still holds a flow or a deadline.
pub fn engine_idle<F: std::fmt::Display>(
    engine: &Engine,
    now: Instant,
    unfinished: &[F],
) -> Result<(), String> {
    if let [flow, ..] = unfinished {
        return Err(format!("login {flow} never finished"));
    }
    if engine.flows_in_progress() != 0 {
        return Err(format!(
            "the engine still has {} flows in progress",
            engine.flows_in_progress()
        ));
    }
    match engine.poll_timeout() {
        Some(at) => Err(format!(
            "a deadline {:?} after two idle hours",
            at.saturating_duration_since(now)
        )),
        None => Ok(()),
    }
}

/// Drains the machine `machine` finds in `sim` at `now`, handing every action to `check`;
/// fires the deadlines that are due and drains again, until none is. Fails when `check`
/// does, or when `poll_timeout` still lies in the past after `handle_timeout` (the contract
/// every machine keeps).
pub fn drain_checked<S, M: latchkey::Machine>(
    sim: &mut S,
    now: std::time::Instant,
    machine: fn(&mut S) -> &mut M,
    check: fn(&mut S, &M::Action) -> Result<(), String>,
) -> Result<Vec<M::Action>, String> {
    let mut all = Vec::new();
    loop {
        while let Some(action) = machine(sim).poll_action() {
            check(sim, &action)?;
            all.push(action);
        }
        let machine = machine(sim);
        match machine.poll_timeout() {
            Some(at) if at <= now => {
                machine.handle_timeout(now);
                if machine.poll_timeout().is_some_and(|again| again <= now) {
                    return Err("poll_timeout lies in the past after handle_timeout".into());
                }
            }
            _ => return Ok(all),
        }
    }
}

/// A model driven by a sequence of operations, checking its rules after each: the token
/// lifecycle and key-cache models share one runner, for their properties and fuzz targets.
pub trait OpModel: Default {
    /// One operation.
    type Op: std::fmt::Debug;
    /// Applies `op`; `Err` names the first broken rule.
    fn step(&mut self, op: &Self::Op) -> Result<(), String>;
    /// Lets everything left run out; `Err` names a broken rule.
    fn finish(&mut self) -> Result<(), String>;
}

/// Applies every op to a fresh model, then lets it finish: the first broken rule, with the
/// op that broke it.
pub fn run_ops<M: OpModel>(ops: &[M::Op]) -> Result<(), String> {
    let mut model = M::default();
    for (i, op) in ops.iter().enumerate() {
        model
            .step(op)
            .map_err(|violation| format!("{violation} after op {i} ({op:?})"))?;
    }
    model
        .finish()
        .map_err(|violation| format!("settling: {violation}"))
}

/// [`run_ops`] as a quickcheck result.
pub fn ops_hold<M: OpModel>(ops: &[M::Op]) -> quickcheck::TestResult {
    match run_ops::<M>(ops) {
        Ok(()) => quickcheck::TestResult::passed(),
        Err(violation) => quickcheck::TestResult::error(violation),
    }
}

/// Checks `property` over 2,000 passing cases of a fixed generator size (the operation
/// models' setting).
pub fn check_2000<P: quickcheck::Testable>(property: P) {
    const CASES: u64 = 2_000;
    quickcheck::QuickCheck::new()
        .tests(CASES)
        .max_tests(CASES * 20)
        .min_tests_passed(CASES)
        .rng(quickcheck::Gen::new(80))
        .quickcheck(property);
}

/// Up to `max` operations decoded from a fuzzer's bytes.
#[cfg(feature = "arbitrary")]
pub fn decode_ops<T: for<'a> arbitrary::Arbitrary<'a>>(data: &[u8], max: usize) -> Vec<T> {
    let mut input = arbitrary::Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < max && !input.is_empty() {
        match T::arbitrary(&mut input) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// Replicas of a web backend of `provider` at `https://app.example/callback`, sharing a
/// flow directory that the test plays by hand.
pub struct Replicas {
    /// The replica that starts logins.
    pub a: Engine,
    /// The replica the provider's redirect reaches.
    pub b: Engine,
    /// The clock, shared.
    pub now: Instant,
    /// The wall clock, shared.
    pub wall: SystemTime,
}

impl Replicas {
    /// Two replicas of `provider`'s backend at `wall`.
    pub fn new(provider: Provider, wall: SystemTime) -> Replicas {
        let config = Config::builder(provider)
            .web_redirect_uri("https://app.example/callback")
            .flow_directory(true)
            .build()
            .expect("a web backend with a flow directory");
        Replicas {
            a: Engine::new(config.clone()).expect("replica a"),
            b: Engine::new(config).expect("replica b"),
            now: Instant::now(),
            wall,
        }
    }

    /// Every action replica a has, in order.
    pub fn drain_a(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.a.poll_action()).collect()
    }

    /// Every action replica b has, in order.
    pub fn drain_b(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.b.poll_action()).collect()
    }

    /// Replica a's `ShareFlow` among its actions now, acknowledged as stored: the record,
    /// and the browser's URL it then opens.
    pub fn shared(&mut self, flow: FlowId) -> (FlowRecord, String) {
        let actions = self.drain_a();
        let [Action::ShareFlow { record, .. }] = &actions[..] else {
            panic!("the record goes first, alone: {actions:?}");
        };
        let record = record.clone();
        self.a.handle_flow_shared(self.now, flow, Ok(()));
        let opened = self.drain_a();
        let [Action::OpenBrowser { url, .. }] = &opened[..] else {
            panic!("then the browser: {opened:?}");
        };
        (record, url.clone())
    }

    /// Replica b gets the provider's redirect with a code for `state`, and `record` from
    /// the directory: what it does then.
    pub fn adopt(&mut self, state: &str, record: FlowRecord) -> Vec<Action> {
        self.b
            .handle_redirect(
                self.now,
                &format!("code=c&state={state}&iss=https%3A%2F%2Fidp.example"),
            )
            .expect("a callback to adopt");
        let actions = self.drain_b();
        let [Action::TakeFlow { take, .. }] = &actions[..] else {
            panic!("the record is asked for: {actions:?}");
        };
        self.b
            .handle_flow_taken(self.now, self.wall, *take, Ok(Taken::Record(record)));
        self.drain_b()
    }
}
