//! The inputs and the operations every in-process measurement runs, shared by the criterion
//! benches (time) and the probe (allocations), so both measure exactly the same code.
//!
//! Both contenders get the same settings: a confidential client authenticating with HTTP
//! Basic, three scopes, the redirect URI `http://127.0.0.1:8080/callback` that the recorded
//! request was sent to, and the issuer named in its `iss` parameter.
//!
//! latchkey's operations run on one long-lived engine in steady state, as in a service:
//! [`Operation::measure`] prepares a batch of inputs (flows started, their callbacks
//! written), measures only the operation itself over the batch, then completes the flows and
//! lets time pass so that the engine forgets them. Everything a flow leaves behind is
//! therefore paid for somewhere, and only the measured step is counted. The peers and floors
//! run through the same batching.

use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey::{
    Action, ClientAuth, Config, ENTROPY_LEN, Engine, ExchangeId, FlowId, Landing, Limits, Provider,
    TokenSet,
};
use oauth2::basic::{BasicClient, BasicTokenResponse};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenUrl,
};
use secrecy::SecretString;

/// The request Chromium 156 sends to the callback (832 bytes, its real header set).
pub const CALLBACK_REQUEST: &[u8] = include_bytes!("../inputs/callback_request.http");
/// A token response shaped like Google's, with an ID token (1,491 bytes).
pub const TOKEN_RESPONSE: &[u8] = include_bytes!("../inputs/token_response.json");

/// The issuer named by the recorded callback's `iss` parameter.
pub const ISSUER: &str = "http://127.0.0.1:9010";
/// The authorization endpoint.
pub const AUTHORIZE_URL: &str = "http://127.0.0.1:9010/authorize";
/// The token endpoint of the in-process measurements (never contacted).
pub const TOKEN_URL: &str = "http://127.0.0.1:9010/token";
/// The client.
pub const CLIENT_ID: &str = "latchkey-bench";
/// Its secret, sent with HTTP Basic.
pub const CLIENT_SECRET: &str = "bench-secret";
/// The part of a flow's entropy its `state` comes from (after the verifier's 32 bytes).
const STATE_ENTROPY: std::ops::Range<usize> = 32..64;

/// The three scopes asked for: the ones the recorded token response grants.
pub const SCOPES: [&str; 3] = [
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
    "https://www.googleapis.com/auth/calendar.readonly",
];
/// The redirect URI's host, port and path, as in the recorded request.
pub const REDIRECT: (&str, u16, &str) = ("127.0.0.1", 8080, "/callback");
/// Where the browser goes after a successful login.
pub const LANDING: &str = "docker-desktop://dashboard/open";

/// The redirect URI as a string.
pub fn redirect_uri(port: u16) -> String {
    format!("http://{}:{port}{}", REDIRECT.0, REDIRECT.2)
}

/// latchkey's provider for the bench client and `token_url`.
pub fn provider(token_url: &str) -> Provider {
    Provider::builder(AUTHORIZE_URL, token_url, CLIENT_ID)
        .client_secret(SecretString::from(CLIENT_SECRET))
        .client_auth(ClientAuth::SecretBasic)
        .scopes(SCOPES)
        .issuer(ISSUER)
        .build()
        .expect("the bench provider is valid")
}

/// latchkey's configuration: the bench provider, redirect URI on `port`, the Docker landing,
/// and room for `max_connections` browsers at once.
pub fn config(token_url: &str, port: u16, max_connections: usize) -> Config {
    let mut limits = Limits::default();
    limits.max_connections = max_connections;
    Config::builder(provider(token_url))
        .redirect_uri(REDIRECT.0, port, REDIRECT.2)
        .on_success(Landing::Redirect(LANDING.into()))
        .limits(limits)
        .build()
        .expect("the bench configuration is valid")
}

/// The type of a configured oauth2-rs client (authorization and token endpoints set).
pub type Oauth2Client =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// oauth2-rs's client with the same settings.
pub fn oauth2_client(token_url: &str, redirect_port: u16) -> Oauth2Client {
    BasicClient::new(ClientId::new(CLIENT_ID.into()))
        .set_client_secret(ClientSecret::new(CLIENT_SECRET.into()))
        .set_auth_uri(AuthUrl::new(AUTHORIZE_URL.into()).expect("valid URL"))
        .set_token_uri(TokenUrl::new(token_url.into()).expect("valid URL"))
        .set_redirect_uri(RedirectUrl::new(redirect_uri(redirect_port)).expect("valid URL"))
}

/// A value of the recorded callback's query.
pub fn request_param(name: &str) -> String {
    let line = CALLBACK_REQUEST
        .split(|&b| b == b'\r')
        .next()
        .unwrap_or_default();
    let line = std::str::from_utf8(line).expect("ASCII request line");
    let target = line.split(' ').nth(1).expect("a request target");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| panic!("the recorded callback has no {name}"))
}

/// The PKCE verifier oauth2-rs's exchange sends (RFC 7636 Appendix B's).
pub const BENCH_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// The token endpoint's answer carrying [`TOKEN_RESPONSE`].
pub fn token_http_response() -> http::Response<Vec<u8>> {
    http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(TOKEN_RESPONSE.to_vec())
        .expect("a valid response")
}

/// Floor: `httparse` parsing the request head. Returns the number of headers.
pub fn floor_httparse(bytes: &[u8]) -> usize {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => request.headers.len(),
        _ => panic!("the recorded request parses"),
    }
}

/// The callback's parameters, decoded (borrowed where no decoding was needed).
#[derive(Debug, Default)]
pub struct CallbackParams<'a> {
    /// `code`.
    pub code: Option<Cow<'a, str>>,
    /// `state`.
    pub state: Option<Cow<'a, str>>,
    /// `iss`.
    pub iss: Option<Cow<'a, str>>,
}

/// Floor: `httparse`, then the query split and percent-decoded: the least any callback
/// server must do before it can look a state up.
pub fn floor_httparse_query(bytes: &[u8]) -> CallbackParams<'_> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let path = match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => request.path.expect("a request target"),
        _ => panic!("the recorded request parses"),
    };
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let mut params = CallbackParams::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "code" => params.code = Some(value),
            "state" => params.state = Some(value),
            "iss" => params.iss = Some(value),
            _ => {}
        }
    }
    params
}

/// Floor: the token body into a `serde_json::Value`.
pub fn floor_serde_value(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("valid JSON")
}

/// oauth2-rs: the token body into its `BasicTokenResponse`, the way it does internally.
pub fn oauth2_token_response(body: &[u8]) -> BasicTokenResponse {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).expect("a valid token response")
}

/// oauth2-rs: a PKCE pair, a CSRF token and the authorization URL with three scopes.
pub fn oauth2_authorize(client: &Oauth2Client) -> (oauth2::url::Url, CsrfToken, PkceCodeVerifier) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(SCOPES.map(|scope| Scope::new(scope.into())))
        .set_pkce_challenge(challenge)
        .url();
    (url, state, verifier)
}

/// oauth2-rs: `exchange_code` with the PKCE verifier, through a client closure returning
/// the canned answer.
pub fn oauth2_exchange(client: &Oauth2Client, code: &str, verifier: &str) -> BasicTokenResponse {
    let http_client =
        |_request: oauth2::HttpRequest| -> Result<oauth2::HttpResponse, std::io::Error> {
            Ok(token_http_response())
        };
    client
        .exchange_code(AuthorizationCode::new(code.into()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.into()))
        .request(&http_client)
        .expect("the canned answer parses")
}

/// Flows a batch holds at most; the engine must admit that many browser connections.
pub const BATCH: usize = 200;

/// What measures the operation's part of a batch: a timer, or an allocation counter.
pub trait Meter {
    /// The measured part begins.
    fn start(&mut self);
    /// The measured part ends.
    fn stop(&mut self);
}

/// A [`Meter`] adding up wall-clock time.
#[derive(Debug, Default)]
pub struct Timer {
    started: Option<Instant>,
    /// The time measured so far.
    pub elapsed: Duration,
}

impl Meter for Timer {
    fn start(&mut self) {
        self.started = Some(Instant::now());
    }

    fn stop(&mut self) {
        if let Some(started) = self.started.take() {
            self.elapsed += started.elapsed();
        }
    }
}

/// A long-lived engine in steady state, and everything the peers need.
pub struct Bench {
    engine: Engine,
    now: Instant,
    wall: SystemTime,
    next_entropy: u64,
    client: Oauth2Client,
    code: String,
    /// Where the recorded request's `state` value starts.
    state_at: usize,
}

impl Default for Bench {
    fn default() -> Bench {
        Bench::new()
    }
}

/// One run's input.
enum Input {
    None,
    Request(Vec<u8>),
    Body(Vec<u8>),
    Query(String),
    Exchange(ExchangeId, http::Response<Vec<u8>>),
    Flow([u8; ENTROPY_LEN], Vec<u8>, http::Response<Vec<u8>>),
}

/// One run's result, kept until the batch has been measured (dropping it is not measured).
#[allow(dead_code)] // held only to be dropped later
enum Output {
    Action(Action),
    Tokens(TokenSet),
    Started(FlowId),
    Landing(bytes::Bytes),
    Headers(usize),
    Decoded(bool, Option<String>),
    Value(serde_json::Value),
    Oauth2Tokens(BasicTokenResponse),
    Oauth2Url(oauth2::url::Url, CsrfToken, PkceCodeVerifier),
}

impl Bench {
    /// An engine for the recorded callback (port 8080, room for a batch of browsers), warmed
    /// up by one batch of whole flows.
    pub fn new() -> Bench {
        let config = config(TOKEN_URL, REDIRECT.1, 2 * BATCH);
        let state = request_param("state");
        let text = std::str::from_utf8(CALLBACK_REQUEST).expect("an ASCII request");
        let mut bench = Bench {
            engine: Engine::new(config).expect("a valid engine"),
            now: Instant::now(),
            wall: SystemTime::now(),
            next_entropy: 0,
            client: oauth2_client(TOKEN_URL, REDIRECT.1),
            code: request_param("code"),
            state_at: text.find(&state).expect("the state is in the request"),
        };
        Operation::WholeFlow.measure(&mut bench, BATCH as u64, &mut Timer::default());
        bench
    }

    /// Fresh entropy, different in the verifier's and the state's part from every earlier
    /// one.
    fn entropy(&mut self) -> [u8; ENTROPY_LEN] {
        self.next_entropy += 1;
        let mut entropy = [0x5a; ENTROPY_LEN];
        let counter = self.next_entropy.to_le_bytes();
        entropy[..8].copy_from_slice(&counter);
        entropy[STATE_ENTROPY.start..STATE_ENTROPY.start + 8].copy_from_slice(&counter);
        entropy
    }

    /// The recorded callback request, carrying the state `entropy` makes.
    fn request_for(&self, entropy: &[u8; ENTROPY_LEN]) -> Vec<u8> {
        let state = URL_SAFE_NO_PAD.encode(&entropy[STATE_ENTROPY]);
        let mut request = CALLBACK_REQUEST.to_vec();
        request[self.state_at..self.state_at + state.len()].copy_from_slice(state.as_bytes());
        request
    }

    /// Starts a flow (not measured); its callback request.
    fn waiting_flow(&mut self) -> Vec<u8> {
        let entropy = self.entropy();
        self.engine.start(self.now, entropy).expect("fresh entropy");
        self.drain();
        self.request_for(&entropy)
    }

    fn drain(&mut self) {
        while self.engine.poll_action().is_some() {}
    }

    /// Lets every deadline pass: the flows of the batch, their connections and the states
    /// they spent are forgotten.
    fn settle(&mut self) {
        self.now += Duration::from_secs(2 * 24 * 60 * 60);
        self.wall += Duration::from_secs(2 * 24 * 60 * 60);
        self.engine.handle_timeout(self.now);
        self.drain();
    }

    fn next_action(&mut self) -> Action {
        self.engine.poll_action().expect("the engine has an action")
    }

    /// latchkey: a callback request through the engine until the token request is emitted.
    fn callback(&mut self, request: &[u8]) -> Action {
        let conn = self
            .engine
            .handle_accept(self.now)
            .expect("room for a connection");
        self.engine.handle_bytes(self.now, conn, request);
        self.next_action()
    }

    /// latchkey: the token endpoint's answer into a `TokenSet`.
    fn token_response(
        &mut self,
        exchange: ExchangeId,
        response: http::Response<Vec<u8>>,
    ) -> TokenSet {
        self.engine
            .handle_token_response(self.now, self.wall, exchange, response);
        match self.next_action() {
            Action::Persist { tokens, .. } => tokens,
            other => panic!("expected tokens, got {other:?}"),
        }
    }

    /// latchkey: fresh OS randomness, a flow started, its authorization URL taken.
    fn authorize(&mut self) -> (FlowId, String) {
        let entropy = latchkey_io::entropy::entropy().expect("OS randomness");
        self.engine.start(self.now, entropy).expect("fresh entropy");
        match self.next_action() {
            Action::OpenBrowser { flow, url } => (flow, url),
            other => panic!("expected the authorization URL, got {other:?}"),
        }
    }

    /// latchkey: a callback query handed over by a UI validated, the token request built,
    /// the answer parsed into tokens.
    fn exchange(&mut self, query: &str) -> TokenSet {
        self.engine
            .handle_redirect(self.now, query)
            .expect("the callback belongs to a flow");
        let Action::SendTokenRequest { exchange, .. } = self.next_action() else {
            panic!("expected the token request");
        };
        self.token_response(exchange, token_http_response())
    }

    /// latchkey, a whole flow: start → URL → callback → token request → token response →
    /// persist → 303.
    fn whole_flow(
        &mut self,
        entropy: [u8; ENTROPY_LEN],
        request: &[u8],
        response: http::Response<Vec<u8>>,
    ) -> bytes::Bytes {
        self.engine.start(self.now, entropy).expect("fresh entropy");
        let Action::OpenBrowser { flow, url } = self.next_action() else {
            panic!("expected the authorization URL");
        };
        std::hint::black_box(url);
        let Action::SendTokenRequest { exchange, .. } = self.callback(request) else {
            panic!("expected the token request");
        };
        std::hint::black_box(self.token_response(exchange, response));
        self.engine.handle_persisted(self.now, flow, Ok(()));
        let landing = match self.next_action() {
            Action::Respond { status, bytes, .. } if status == 303 => bytes,
            other => panic!("expected the 303, got {other:?}"),
        };
        self.drain();
        landing
    }
}

/// Every operation measured in process, named as in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// latchkey: the recorded callback request until the token request is emitted.
    Callback,
    /// Floor: httparse on the same bytes.
    FloorHttparse,
    /// Floor: httparse plus the query split and percent-decoded.
    FloorQuery,
    /// latchkey: the recorded token response into a `TokenSet`.
    TokenResponse,
    /// Floor: the same body into a `serde_json::Value`.
    FloorValue,
    /// oauth2-rs: the same body into its `BasicTokenResponse`.
    Oauth2TokenResponse,
    /// latchkey: a flow started and its authorization URL built, with OS randomness.
    Authorize,
    /// oauth2-rs: PKCE pair, CSRF token and authorization URL.
    Oauth2Authorize,
    /// latchkey: callback query validated, token request built, response parsed.
    Exchange,
    /// oauth2-rs: `exchange_code` with the verifier through a canned-answer client.
    Oauth2Exchange,
    /// latchkey: the whole flow in memory.
    WholeFlow,
}

impl Operation {
    /// Every operation, in report order.
    pub const ALL: [Operation; 11] = [
        Operation::Callback,
        Operation::FloorHttparse,
        Operation::FloorQuery,
        Operation::TokenResponse,
        Operation::FloorValue,
        Operation::Oauth2TokenResponse,
        Operation::Authorize,
        Operation::Oauth2Authorize,
        Operation::Exchange,
        Operation::Oauth2Exchange,
        Operation::WholeFlow,
    ];

    /// `group/contender`, as criterion names it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Callback => "callback/latchkey",
            Operation::FloorHttparse => "callback/floor_httparse",
            Operation::FloorQuery => "callback/floor_httparse_query",
            Operation::TokenResponse => "token_response/latchkey",
            Operation::FloorValue => "token_response/floor_serde_json_value",
            Operation::Oauth2TokenResponse => "token_response/oauth2",
            Operation::Authorize => "authorize/latchkey",
            Operation::Oauth2Authorize => "authorize/oauth2",
            Operation::Exchange => "exchange/latchkey",
            Operation::Oauth2Exchange => "exchange/oauth2",
            Operation::WholeFlow => "whole_flow/latchkey",
        }
    }

    /// The operation named `name`.
    pub fn parse(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Runs the operation `iters` times in batches, `meter` measuring only the operation.
    pub fn measure(self, bench: &mut Bench, iters: u64, meter: &mut impl Meter) {
        let mut inputs = Vec::with_capacity(BATCH);
        let mut outputs = Vec::with_capacity(BATCH);
        let mut left = iters;
        while left > 0 {
            let size = left.min(BATCH as u64);
            for _ in 0..size {
                inputs.push(self.prepare(bench));
            }
            meter.start();
            for input in inputs.drain(..) {
                outputs.push(self.run(bench, input));
            }
            meter.stop();
            for output in outputs.drain(..) {
                self.finish(bench, output);
            }
            bench.settle();
            left -= size;
        }
    }

    fn prepare(self, bench: &mut Bench) -> Input {
        match self {
            Operation::Callback => Input::Request(bench.waiting_flow()),
            Operation::TokenResponse => {
                let request = bench.waiting_flow();
                let Action::SendTokenRequest { exchange, .. } = bench.callback(&request) else {
                    panic!("expected the token request");
                };
                Input::Exchange(exchange, token_http_response())
            }
            Operation::Exchange => {
                let request = bench.waiting_flow();
                let text = std::str::from_utf8(&request).expect("ASCII");
                let target = text.split(' ').nth(1).expect("a request target");
                Input::Query(target.split_once('?').expect("a query").1.to_owned())
            }
            Operation::WholeFlow => {
                let entropy = bench.entropy();
                let request = bench.request_for(&entropy);
                Input::Flow(entropy, request, token_http_response())
            }
            // The floors get a fresh copy of their input too, as latchkey does: the same
            // bytes, at a new place in memory each time.
            Operation::FloorHttparse | Operation::FloorQuery => {
                let entropy = bench.entropy();
                Input::Request(bench.request_for(&entropy))
            }
            Operation::FloorValue | Operation::Oauth2TokenResponse => {
                Input::Body(TOKEN_RESPONSE.to_vec())
            }
            Operation::Authorize | Operation::Oauth2Authorize | Operation::Oauth2Exchange => {
                Input::None
            }
        }
    }

    fn run(self, bench: &mut Bench, input: Input) -> Output {
        match (self, input) {
            (Operation::Callback, Input::Request(request)) => {
                Output::Action(bench.callback(std::hint::black_box(&request)))
            }
            (Operation::FloorHttparse, Input::Request(request)) => {
                Output::Headers(floor_httparse(std::hint::black_box(&request)))
            }
            (Operation::FloorQuery, Input::Request(request)) => {
                let params = floor_httparse_query(std::hint::black_box(&request));
                Output::Decoded(
                    params.code.is_some() && params.state.is_some(),
                    params.iss.map(Cow::into_owned),
                )
            }
            (Operation::TokenResponse, Input::Exchange(exchange, response)) => {
                Output::Tokens(bench.token_response(exchange, response))
            }
            (Operation::FloorValue, Input::Body(body)) => {
                Output::Value(floor_serde_value(std::hint::black_box(&body)))
            }
            (Operation::Oauth2TokenResponse, Input::Body(body)) => {
                Output::Oauth2Tokens(oauth2_token_response(std::hint::black_box(&body)))
            }
            (Operation::Authorize, _) => Output::Started(bench.authorize().0),
            (Operation::Oauth2Authorize, _) => {
                let (url, state, verifier) = oauth2_authorize(&bench.client);
                Output::Oauth2Url(url, state, verifier)
            }
            (Operation::Exchange, Input::Query(query)) => Output::Tokens(bench.exchange(&query)),
            (Operation::Oauth2Exchange, _) => {
                Output::Oauth2Tokens(oauth2_exchange(&bench.client, &bench.code, BENCH_VERIFIER))
            }
            (Operation::WholeFlow, Input::Flow(entropy, request, response)) => {
                Output::Landing(bench.whole_flow(entropy, &request, response))
            }
            (operation, _) => unreachable!("{operation:?} got another operation's input"),
        }
    }

    /// Ends what the run left open (the batch's end lets the rest time out).
    fn finish(self, bench: &mut Bench, output: Output) {
        if let Output::Started(flow) = output {
            bench.engine.cancel(bench.now, flow);
        }
        bench.drain();
    }
}
