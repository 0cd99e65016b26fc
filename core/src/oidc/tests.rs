//! The ID token rules as the machines apply them: the engine's verifying phase, the
//! key-set cache, the session's refreshed ID tokens. Signatures here are accepted by a
//! stand-in crypto provider; `latchkey-tests` checks real ones with `ring`.

// A test's virtual clock has to start somewhere.
#![allow(clippy::disallowed_methods)]

use super::*;

/// A crypto provider that accepts every signature: for tests of everything but the
/// signature itself.
#[derive(Debug)]
pub(crate) struct Accept;

impl CryptoProvider for Accept {
    fn verify(
        &self,
        _: Algorithm,
        _: &PublicKey,
        _: &[u8],
        _: &[u8],
    ) -> Result<(), SignatureError> {
        Ok(())
    }
}

// ===== fixtures =====

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

use crate::error::{TransportError, TransportErrorKind};
use crate::{
    Action, Config, DeleteReason, Engine, ExchangeId, FlowError, FlowId, Landing, Provider,
    Purpose, RefreshError, RequestId, SaveReason, Session, SessionAction, SessionError, TokenSet,
};

const ISSUER: &str = "https://idp.example";
const CLIENT_ID: &str = "cli";
const JWKS_URI: &str = "https://idp.example/jwks";
/// The Ed25519 public key `k1` of the provider's key set.
const K1_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
/// The wall-clock time every test starts at: 2026-01-01T00:00:00Z.
const WALL0: u64 = 1_767_225_600;
/// The engine's default exchange timeout, which is also its key-fetch deadline.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A provider that verifies EdDSA ID tokens with `crypto`.
fn provider_with(crypto: Arc<dyn CryptoProvider>) -> Provider {
    Provider::builder(
        "https://idp.example/authorize",
        "https://idp.example/token",
        CLIENT_ID,
    )
    .scopes(["openid", "email"])
    .issuer(ISSUER)
    .jwks_uri(JWKS_URI)
    .id_token_algorithms([Algorithm::EdDSA])
    .crypto(crypto)
    .build()
    .expect("a valid provider")
}

fn provider() -> Provider {
    provider_with(Arc::new(Accept))
}

/// A virtual clock: a monotonic start and the wall-clock time [`WALL0`] at that start.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// The monotonic and wall-clock times `seconds` after the start.
    fn at(self, seconds: u64) -> (Instant, SystemTime) {
        let elapsed = Duration::from_secs(seconds);
        (
            self.start + elapsed,
            UNIX_EPOCH + Duration::from_secs(WALL0) + elapsed,
        )
    }
}

fn unix(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS of `header` and `claims` with a 64-byte signature (which [`Accept`]
/// takes, as any of the length an Ed25519 key needs).
fn sign(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string()),
        b64(claims.to_string()),
        b64([7u8; 64])
    )
}

/// An EdDSA ID token naming key `kid`.
fn id_token_by(kid: &str, claims: &Value) -> String {
    sign(&json!({"alg": "EdDSA", "kid": kid}), claims)
}

/// An EdDSA ID token signed with key `k1`.
fn id_token(claims: &Value) -> String {
    id_token_by("k1", claims)
}

/// Valid claims for jane, issued at `wall` for an hour, carrying `nonce` if given.
fn claims_for(nonce: Option<&str>, wall: SystemTime) -> Value {
    let now = unix(wall);
    let mut claims = json!({
        "iss": ISSUER,
        "sub": "jane",
        "aud": CLIENT_ID,
        "exp": now + 3600,
        "iat": now,
        "email": "jane@example.com",
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = nonce.into();
    }
    claims
}

/// A key set with an Ed25519 key for each of `kids` (`k1` is [`K1_X`]).
fn key_set(kids: &[&str]) -> String {
    let keys: Vec<Value> = kids
        .iter()
        .zip(1u8..)
        .map(|(kid, n)| {
            let x = if *kid == "k1" {
                K1_X.to_owned()
            } else {
                b64([n; 32])
            };
            json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x})
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// An export holding the `k1` key set, fetched at `wall`.
fn export_of_k1(wall: SystemTime) -> Vec<u8> {
    let keys: Value = serde_json::from_str(&key_set(&["k1"])).expect("JSON");
    json!({"key_sets": [{"jwks_uri": JWKS_URI, "fetched_at": unix(wall), "keys": keys["keys"]}]})
        .to_string()
        .into_bytes()
}

fn response(status: u16, body: &str) -> http::Response<Vec<u8>> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec())
        .expect("a valid response")
}

/// A token response with `access` and `refresh` tokens and the ID token, if any.
fn token_body(access: &str, refresh: &str, id_token: Option<&str>) -> String {
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": refresh,
    });
    if let Some(id_token) = id_token {
        body["id_token"] = id_token.into();
    }
    body.to_string()
}

/// `at_hash` computed independently of the code under test: the left half of `hash` of the
/// access token, base64url.
fn at_hash<D: Digest>(access_token: &str) -> String {
    let digest = D::digest(access_token.as_bytes());
    b64(&digest[..digest.len() / 2])
}

fn transport_error() -> TransportError {
    TransportError::new(TransportErrorKind::Connect, "connection refused")
}

/// Checks a key-set request: a GET of the provider's `jwks_uri` asking for JSON.
fn assert_key_set_request(request: &http::Request<Vec<u8>>) {
    assert_eq!(request.method(), http::Method::GET);
    assert_eq!(request.uri(), JWKS_URI);
    assert_eq!(
        request
            .headers()
            .get(http::header::ACCEPT)
            .map(|v| v.as_bytes()),
        Some(&b"application/jwk-set+json, application/json"[..])
    );
    assert!(request.body().is_empty());
}

fn assert_jane(tokens: &TokenSet) {
    let identity = tokens.identity().expect("a verified identity");
    assert_eq!(identity.iss(), ISSUER);
    assert_eq!(identity.sub(), "jane");
    assert_eq!(identity.email(), Some("jane@example.com"));
}

// ===== the engine =====

/// What a started login needs to go on: its flow, the nonce of its authorization URL, its
/// token request and the access token the provider will issue.
struct Login {
    flow: FlowId,
    nonce: String,
    exchange: ExchangeId,
    access: String,
}

/// An engine on a virtual clock.
struct EngineBench {
    engine: Engine,
    clock: Clock,
    /// Makes every login's entropy different.
    seed: u8,
}

impl EngineBench {
    fn new() -> EngineBench {
        EngineBench::starting(Clock::new())
    }

    fn starting(clock: Clock) -> EngineBench {
        let config = Config::builder(provider())
            .redirect_uri("127.0.0.1", 8080, "/callback")
            .on_success(Landing::Redirect("app://done".into()))
            .build()
            .expect("a valid configuration");
        EngineBench {
            engine: Engine::new(config).expect("a valid engine"),
            clock,
            seed: 0,
        }
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.engine.poll_action()).collect()
    }

    /// Starts a login at `seconds` and returns its id and authorization URL.
    fn start(&mut self, seconds: u64) -> (FlowId, String) {
        self.seed += 1;
        let (now, _) = self.clock.at(seconds);
        let flow = self
            .engine
            .start(now, entropy(self.seed))
            .expect("fresh entropy");
        match &self.drain()[..] {
            [Action::OpenBrowser { flow: opened, url }] if *opened == flow => (flow, url.clone()),
            other => panic!("expected one OpenBrowser, got {other:?}"),
        }
    }

    /// Starts a login at `seconds` and brings it to its token request (the callback comes
    /// through `handle_redirect`).
    fn exchange(&mut self, seconds: u64) -> Login {
        let (flow, url) = self.start(seconds);
        let (now, _) = self.clock.at(seconds);
        let callback = format!("code=code-{}&state={}", self.seed, param(&url, "state"));
        assert_eq!(self.engine.handle_redirect(now, &callback), Ok(flow));
        Login {
            flow,
            nonce: param(&url, "nonce"),
            exchange: token_request(&self.drain()),
            access: format!("access-{}", self.seed),
        }
    }

    /// The token endpoint answers `login` at `seconds` with `id_token`.
    fn tokens(&mut self, login: &Login, seconds: u64, id_token: Option<&str>) -> Vec<Action> {
        let (now, wall) = self.clock.at(seconds);
        let body = token_body(&login.access, "refresh-1", id_token);
        self.engine
            .handle_token_response(now, wall, login.exchange, response(200, &body));
        self.drain()
    }

    /// A login at `seconds` whose ID token `make` writes (from the login and the wall-clock
    /// time), up to the actions that follow the token response.
    fn login_with(
        &mut self,
        seconds: u64,
        make: impl FnOnce(&Login, SystemTime) -> Option<String>,
    ) -> (Login, Vec<Action>) {
        let login = self.exchange(seconds);
        let (_, wall) = self.clock.at(seconds);
        let id_token = make(&login, wall);
        let actions = self.tokens(&login, seconds, id_token.as_deref());
        (login, actions)
    }

    /// A login at `seconds` with a valid ID token signed by `kid`.
    fn login_by(&mut self, kid: &str, seconds: u64) -> (Login, Vec<Action>) {
        self.login_with(seconds, |login, wall| {
            Some(id_token_by(kid, &claims_for(Some(&login.nonce), wall)))
        })
    }

    /// A login at `seconds` with a valid ID token signed by `k1`.
    fn login(&mut self, seconds: u64) -> (Login, Vec<Action>) {
        self.login_by("k1", seconds)
    }

    /// The key-set fetch `id` is answered at `seconds`.
    fn keys(&mut self, id: RequestId, seconds: u64, status: u16, body: &str) -> Vec<Action> {
        let (now, wall) = self.clock.at(seconds);
        self.engine
            .handle_keys_response(now, wall, id, response(status, body));
        self.drain()
    }

    /// The key-set fetch `id` fails at `seconds`.
    fn keys_fail(&mut self, id: RequestId, seconds: u64) -> Vec<Action> {
        let (now, _) = self.clock.at(seconds);
        self.engine.handle_keys_failure(now, id, transport_error());
        self.drain()
    }

    /// `actions` are one [`Action::Persist`] for `login`: the store confirms it at
    /// `seconds` and the flow finishes with the tokens, which are returned.
    fn store(&mut self, login: &Login, seconds: u64, actions: &[Action]) -> TokenSet {
        let (flow, tokens) = persist(actions);
        assert_eq!(flow, login.flow);
        let (now, _) = self.clock.at(seconds);
        self.engine.handle_persisted(now, flow, Ok(()));
        match &self.drain()[..] {
            [
                Action::Finished {
                    flow: finished,
                    result: Ok(_),
                },
            ] if *finished == flow => tokens,
            other => panic!("expected one successful Finished, got {other:?}"),
        }
    }

    /// A login at `seconds` whose key fetch is answered with `k1` at once: the cache is
    /// warm afterwards.
    fn warm_up(&mut self, seconds: u64) -> TokenSet {
        let (login, actions) = self.login(seconds);
        let (id, _) = fetch(&actions);
        let actions = self.keys(id, seconds, 200, &key_set(&["k1"]));
        self.store(&login, seconds, &actions)
    }
}

/// 96 bytes of entropy: the verifier's and the state's 64 from `seed`, the nonce's 32 from
/// `nonce_byte(seed)`.
fn entropy(seed: u8) -> [u8; crate::ENTROPY_LEN] {
    let mut entropy = [seed; crate::ENTROPY_LEN];
    entropy[64..].fill(nonce_byte(seed));
    entropy
}

fn nonce_byte(seed: u8) -> u8 {
    seed ^ 0x80
}

/// The value of the query parameter `name` in `url`.
fn param(url: &str, name: &str) -> String {
    let start = url
        .find(&format!("&{name}="))
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        + name.len()
        + 2;
    let rest = &url[start..];
    rest[..rest.find('&').unwrap_or(rest.len())].to_owned()
}

fn token_request(actions: &[Action]) -> ExchangeId {
    match actions {
        [Action::SendTokenRequest { exchange, .. }] => *exchange,
        other => panic!("expected one SendTokenRequest, got {other:?}"),
    }
}

/// The one action, a key-set fetch.
fn fetch(actions: &[Action]) -> (RequestId, http::Request<Vec<u8>>) {
    match actions {
        [Action::FetchKeys { id, request }] => (*id, request.clone()),
        other => panic!("expected one FetchKeys, got {other:?}"),
    }
}

/// The one action, tokens to store.
fn persist(actions: &[Action]) -> (FlowId, TokenSet) {
    match actions {
        [Action::Persist { flow, tokens }] => (*flow, tokens.clone()),
        other => panic!("expected one Persist, got {other:?}"),
    }
}

/// The one action, a flow that ended in failure.
fn failed(actions: &[Action]) -> (FlowId, FlowError) {
    match actions {
        [
            Action::Finished {
                flow,
                result: Err(error),
            },
        ] => (*flow, error.clone()),
        other => panic!("expected one failed Finished, got {other:?}"),
    }
}

/// S47, S48: with `openid`, a login sends a nonce, waits for the provider's keys, and
/// stores its tokens (with the verified identity) only once the ID token passed; the
/// browser hears last.
#[test]
fn s47_s48_a_login_stores_its_tokens_only_after_the_id_token_is_verified() {
    let mut b = EngineBench::new();
    let (now, wall) = b.clock.at(0);
    let (flow, url) = b.start(0);
    let nonce = param(&url, "nonce");
    assert_eq!(nonce.len(), 43);
    assert_eq!(nonce, b64([nonce_byte(b.seed); 32]), "entropy bytes 64..96");

    let conn = b.engine.handle_accept(now).expect("below the cap");
    let head = format!(
        "GET /callback?code=c0de&state={} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
        param(&url, "state")
    );
    b.engine.handle_bytes(now, conn, head.as_bytes());
    let exchange = token_request(&b.drain());

    let token = id_token(&claims_for(Some(&nonce), wall));
    let body = token_body("access-1", "refresh-1", Some(&token));
    b.engine
        .handle_token_response(now, wall, exchange, response(200, &body));
    let (id, request) = fetch(&b.drain());
    assert_key_set_request(&request);
    assert_eq!(b.engine.open_connections(), 1, "the browser waits");
    assert_eq!(b.engine.flows_in_progress(), 1);

    let (later, later_wall) = b.clock.at(1);
    b.engine
        .handle_keys_response(later, later_wall, id, response(200, &key_set(&["k1"])));
    let (persisted, tokens) = persist(&b.drain());
    assert_eq!(persisted, flow);
    assert_jane(&tokens);
    assert_eq!(
        tokens.id_token().map(|t| t.expose_secret().to_owned()),
        Some(token)
    );

    b.engine.handle_persisted(later, flow, Ok(()));
    match &b.drain()[..] {
        [
            Action::Respond {
                conn: answered,
                status,
                ..
            },
            Action::Finished {
                flow: finished,
                result: Ok(tokens),
            },
        ] => {
            assert_eq!((*answered, *finished), (conn, flow));
            assert_eq!(*status, http::StatusCode::SEE_OTHER);
            assert_jane(tokens);
        }
        other => panic!("expected Respond then Finished, got {other:?}"),
    }
    assert_eq!(b.engine.flows_in_progress(), 0);
}

/// S47: any number of ID tokens wait for one fetch, and are all checked when it ends.
#[test]
fn s47_flows_waiting_for_keys_share_one_fetch() {
    let mut b = EngineBench::new();
    let (first, actions) = b.login(0);
    let (id, _) = fetch(&actions);
    let (second, actions) = b.login(1);
    assert!(
        actions.is_empty(),
        "no second fetch while one is in flight: {actions:?}"
    );

    let actions = b.keys(id, 2, 200, &key_set(&["k1"]));
    let persisted: Vec<FlowId> = actions
        .iter()
        .map(|action| match action {
            Action::Persist { flow, tokens } => {
                assert_jane(tokens);
                *flow
            }
            other => panic!("expected Persist only, got {other:?}"),
        })
        .collect();
    assert_eq!(persisted, [first.flow, second.flow]);
}

/// S47: fetched keys are used for ten minutes ([`MAX_AGE`]); then they are fetched again.
#[test]
fn s47_keys_are_used_for_ten_minutes_then_fetched_again() {
    let mut b = EngineBench::new();
    b.warm_up(0);
    let just_before = MAX_AGE.as_secs() - 1;
    let (login, actions) = b.login(just_before);
    let tokens = b.store(&login, just_before, &actions); // a cache hit: no fetch
    assert_jane(&tokens);

    let (_, actions) = b.login(MAX_AGE.as_secs());
    let (_, request) = fetch(&actions);
    assert_key_set_request(&request);
}

/// S47: a key the cache lacks is fetched for at once, even right after a fetch (the
/// provider rotated its keys), but such refetches start at most once a minute.
#[test]
fn s47_an_unknown_kid_is_fetched_for_at_most_once_a_minute() {
    let mut b = EngineBench::new();
    b.warm_up(0);

    // Thirty seconds after the first fetch, a token of a rotated-in key: fetched at once.
    let (login, actions) = b.login_by("k2", 30);
    let (id, _) = fetch(&actions);
    let actions = b.keys(id, 30, 200, &key_set(&["k1", "k2"]));
    assert_jane(&b.store(&login, 30, &actions));

    // A made-up key within the minute after that refetch: refused without a fetch.
    let (login, actions) = b.login_by("k3", 30 + REFETCH_INTERVAL.as_secs() - 1);
    assert_eq!(
        failed(&actions),
        (login.flow, FlowError::IdToken(IdTokenError::UnknownKey))
    );

    // A minute after the refetch: one more fetch, which still lacks the key.
    let at = 30 + REFETCH_INTERVAL.as_secs();
    let (login, actions) = b.login_by("k3", at);
    let (id, _) = fetch(&actions);
    let actions = b.keys(id, at, 200, &key_set(&["k1", "k2"]));
    assert_eq!(
        failed(&actions),
        (login.flow, FlowError::IdToken(IdTokenError::UnknownKey))
    );

    // Known keys keep verifying meanwhile, without a fetch.
    let (login, actions) = b.login_by("k2", at + 1);
    assert_jane(&b.store(&login, at + 1, &actions));
}

/// S47: with no keys known, a failed fetch fails the waiting login and stores nothing; a
/// login within a minute of the failure fails with the same error without fetching.
#[test]
fn s47_an_unreachable_key_set_fails_the_login_when_no_keys_are_known() {
    let mut b = EngineBench::new();
    let (login, actions) = b.login(0);
    let (id, _) = fetch(&actions);
    let actions = b.keys_fail(id, 1);
    let unreachable = FlowError::IdToken(IdTokenError::KeySet(KeySetError::Transport(
        transport_error(),
    )));
    assert_eq!(failed(&actions), (login.flow, unreachable.clone()));

    // The failure was at 1 s: no fetch until a minute after it.
    let (login, actions) = b.login(REFETCH_INTERVAL.as_secs());
    assert_eq!(failed(&actions), (login.flow, unreachable));

    let (_, actions) = b.login(1 + REFETCH_INTERVAL.as_secs());
    fetch(&actions);
}

/// S47: keys past their age still verify when fetching them again fails: stale keys beat
/// no keys while the provider's key endpoint is down.
#[test]
fn s47_stale_keys_serve_when_the_refetch_fails() {
    let mut b = EngineBench::new();
    b.warm_up(0);
    let stale = MAX_AGE.as_secs() + 60;
    let (login, actions) = b.login(stale);
    let (id, _) = fetch(&actions);
    let actions = b.keys_fail(id, stale + 1);
    assert_jane(&b.store(&login, stale + 1, &actions));
}

/// S47: a key set answered with an error status fails the waiting login.
#[test]
fn s47_a_key_set_answered_with_an_error_status_fails_the_login() {
    let mut b = EngineBench::new();
    let (login, actions) = b.login(0);
    let (id, _) = fetch(&actions);
    let actions = b.keys(id, 1, 500, &key_set(&["k1"]));
    assert_eq!(
        failed(&actions),
        (
            login.flow,
            FlowError::IdToken(IdTokenError::KeySet(KeySetError::Status(500)))
        )
    );
}

/// S47: a key set that is not JSON fails the waiting login.
#[test]
fn s47_a_key_set_that_is_not_json_fails_the_login() {
    let mut b = EngineBench::new();
    let (login, actions) = b.login(0);
    let (id, _) = fetch(&actions);
    let actions = b.keys(id, 1, 200, "<html><body>Sign in</body></html>");
    assert_eq!(
        failed(&actions),
        (
            login.flow,
            FlowError::IdToken(IdTokenError::KeySet(KeySetError::NotJson))
        )
    );
}

/// S47: a fetch has the exchange timeout as its deadline, named by `poll_timeout`; past
/// it the waiting login fails and the late answer is ignored.
#[test]
fn s47_a_key_set_fetch_past_its_deadline_fails_the_login() {
    let mut b = EngineBench::new();
    let (login, actions) = b.login(5);
    let (id, _) = fetch(&actions);
    let (start, _) = b.clock.at(5);
    let deadline = start + EXCHANGE_TIMEOUT;
    assert_eq!(b.engine.poll_timeout(), Some(deadline));

    b.engine.handle_timeout(deadline - Duration::from_millis(1));
    assert!(b.drain().is_empty(), "not yet");
    b.engine.handle_timeout(deadline);
    assert_eq!(
        failed(&b.drain()),
        (
            login.flow,
            FlowError::IdToken(IdTokenError::KeySet(KeySetError::TimedOut))
        )
    );
    assert!(
        b.keys(id, 40, 200, &key_set(&["k1"])).is_empty(),
        "too late"
    );
}

/// One way an ID token (or its absence) breaks the rules, and the refusal it must get.
struct Broken {
    what: &'static str,
    id_token: fn(&Login, SystemTime) -> Option<String>,
    error: IdTokenError,
    /// Whether the check gets as far as needing the keys (else it fails on the header).
    needs_keys: bool,
}

fn broken_tokens() -> Vec<Broken> {
    /// Valid claims for `login`, changed by `change`, signed with `k1`.
    fn with(login: &Login, wall: SystemTime, change: impl FnOnce(&mut Value)) -> Option<String> {
        let mut claims = claims_for(Some(&login.nonce), wall);
        change(&mut claims);
        Some(id_token(&claims))
    }
    vec![
        Broken {
            what: "another login's nonce",
            id_token: |l, w| with(l, w, |c| c["nonce"] = "n-0S6_WzA2Mj".into()),
            error: IdTokenError::Nonce,
            needs_keys: true,
        },
        Broken {
            what: "no nonce",
            id_token: |l, w| with(l, w, |c| drop(c.as_object_mut().map(|c| c.remove("nonce")))),
            error: IdTokenError::Nonce,
            needs_keys: true,
        },
        Broken {
            what: "another issuer",
            id_token: |l, w| with(l, w, |c| c["iss"] = "https://evil.example".into()),
            error: IdTokenError::Issuer,
            needs_keys: true,
        },
        Broken {
            what: "an issuer with a trailing slash",
            id_token: |l, w| with(l, w, |c| c["iss"] = "https://idp.example/".into()),
            error: IdTokenError::Issuer,
            needs_keys: true,
        },
        Broken {
            what: "another audience",
            id_token: |l, w| with(l, w, |c| c["aud"] = "someone-else".into()),
            error: IdTokenError::Audience,
            needs_keys: true,
        },
        Broken {
            what: "several audiences and no azp",
            id_token: |l, w| with(l, w, |c| c["aud"] = json!([CLIENT_ID, "someone-else"])),
            error: IdTokenError::AuthorizedParty,
            needs_keys: true,
        },
        Broken {
            what: "no subject",
            id_token: |l, w| with(l, w, |c| drop(c.as_object_mut().map(|c| c.remove("sub")))),
            error: IdTokenError::Subject,
            needs_keys: true,
        },
        Broken {
            what: "expired beyond the leeway",
            id_token: |l, w| {
                let now = unix(w);
                with(l, w, |c| {
                    c["iat"] = (now - 3600).into();
                    c["exp"] = (now - 61).into();
                })
            },
            error: IdTokenError::Expired,
            needs_keys: true,
        },
        Broken {
            what: "issued in the future beyond the leeway",
            id_token: |l, w| with(l, w, |c| c["iat"] = (unix(w) + 61).into()),
            error: IdTokenError::NotYetValid,
            needs_keys: true,
        },
        Broken {
            what: "at_hash of another access token",
            id_token: |l, w| with(l, w, |c| c["at_hash"] = at_hash::<Sha512>("another").into()),
            error: IdTokenError::AccessTokenHash,
            needs_keys: true,
        },
        Broken {
            what: "at_hash with SHA-256 although EdDSA hashes with SHA-512",
            id_token: |l, w| {
                let hash = at_hash::<Sha256>(&l.access);
                with(l, w, |c| c["at_hash"] = hash.into())
            },
            error: IdTokenError::AccessTokenHash,
            needs_keys: true,
        },
        Broken {
            what: "no ID token",
            id_token: |_, _| None,
            error: IdTokenError::Missing,
            needs_keys: false,
        },
        Broken {
            what: "RS256, not allowed",
            id_token: |l, w| {
                let header = json!({"alg": "RS256", "kid": "k1"});
                Some(sign(&header, &claims_for(Some(&l.nonce), w)))
            },
            error: IdTokenError::Algorithm("RS256".into()),
            needs_keys: false,
        },
        Broken {
            what: "alg none",
            id_token: |l, w| {
                let claims = claims_for(Some(&l.nonce), w);
                Some(format!(
                    "{}.{}.",
                    b64(r#"{"alg":"none"}"#),
                    b64(claims.to_string())
                ))
            },
            error: IdTokenError::Algorithm("none".into()),
            needs_keys: false,
        },
    ]
}

/// S48: every rule an ID token breaks ends the login with that rule's error, and nothing
/// is stored, whether the keys had to be fetched first or were at hand.
#[test]
fn s48_every_broken_rule_ends_the_login_and_stores_nothing() {
    for case in broken_tokens() {
        let expected = FlowError::IdToken(case.error.clone());

        // A cold cache: the keys are fetched first when the check gets that far.
        let mut b = EngineBench::new();
        let (login, actions) = b.login_with(0, case.id_token);
        let actions = if case.needs_keys {
            let (id, _) = fetch(&actions);
            b.keys(id, 1, 200, &key_set(&["k1"]))
        } else {
            actions
        };
        assert_eq!(
            failed(&actions),
            (login.flow, expected.clone()),
            "{}",
            case.what
        );

        // A warm cache: refused at once.
        let mut b = EngineBench::new();
        let (now, wall) = b.clock.at(0);
        assert_eq!(
            b.engine.import_key_sets(now, wall, &export_of_k1(wall)),
            Ok(1)
        );
        let (login, actions) = b.login_with(0, case.id_token);
        assert_eq!(
            failed(&actions),
            (login.flow, expected),
            "{} (warm)",
            case.what
        );
    }
}

/// S48: `at_hash` is the left half of the access token's hash under the algorithm's own
/// hash function, SHA-512 for EdDSA; a right one passes.
#[test]
fn s48_a_matching_at_hash_passes() {
    let mut b = EngineBench::new();
    let (login, actions) = b.login_with(0, |login, wall| {
        let mut claims = claims_for(Some(&login.nonce), wall);
        claims["at_hash"] = at_hash::<Sha512>(&login.access).into();
        Some(id_token(&claims))
    });
    let (id, _) = fetch(&actions);
    let (flow, tokens) = persist(&b.keys(id, 0, 200, &key_set(&["k1"])));
    assert_eq!(flow, login.flow);
    assert_jane(&tokens);
}

/// S47: a login cancelled while it waits for keys ends at once; the fetch's deadline is
/// still kept, and its late answer only fills the cache.
#[test]
fn s47_a_login_cancelled_while_waiting_for_keys_ends_and_the_late_answer_is_ignored() {
    let mut b = EngineBench::new();
    let (login, actions) = b.login(0);
    let (id, _) = fetch(&actions);
    let (now, _) = b.clock.at(1);
    b.engine.cancel(now, login.flow);
    assert_eq!(failed(&b.drain()), (login.flow, FlowError::Cancelled));
    assert_eq!(b.engine.flows_in_progress(), 0);
    let (start, _) = b.clock.at(0);
    assert_eq!(
        b.engine.poll_timeout(),
        Some(start + EXCHANGE_TIMEOUT),
        "the fetch's deadline"
    );

    assert!(
        b.keys(id, 2, 200, &key_set(&["k1"])).is_empty(),
        "nobody waits"
    );
    let (login, actions) = b.login(3);
    let (flow, _) = persist(&actions);
    assert_eq!(flow, login.flow, "the late answer's keys are used");
}

/// S47: an engine's exported keys let another engine verify without fetching, for as long
/// as they are younger than ten minutes by the wall clock.
#[test]
fn s47_exported_keys_spare_another_engine_the_fetch_for_ten_minutes() {
    let clock = Clock::new();
    let mut a = EngineBench::starting(clock);
    a.warm_up(0);
    let export = a.engine.export_key_sets();

    let mut b = EngineBench::starting(clock);
    let (now, wall) = clock.at(300);
    assert_eq!(b.engine.import_key_sets(now, wall, &export), Ok(1));
    let (login, actions) = b.login(300);
    let (flow, tokens) = persist(&actions);
    assert_eq!(flow, login.flow);
    assert_jane(&tokens);

    let mut c = EngineBench::starting(clock);
    let (now, wall) = clock.at(MAX_AGE.as_secs());
    assert_eq!(
        c.engine.import_key_sets(now, wall, &export),
        Ok(0),
        "too old"
    );
    let (_, actions) = c.login(MAX_AGE.as_secs());
    fetch(&actions);

    for garbage in [&b"garbage"[..], b"{}", br#"{"key_sets":{}}"#, b""] {
        assert_eq!(
            c.engine.import_key_sets(now, wall, garbage),
            Err(KeySetError::NotJson),
            "{}",
            String::from_utf8_lossy(garbage)
        );
    }
}

// ===== the session =====

/// A session on a virtual clock, whose stored tokens came from a login half an hour
/// before the start.
struct SessionBench {
    session: Session,
    clock: Clock,
}

/// The nonce of the stored login.
const LOGIN_NONCE: &str = "n-login";

impl SessionBench {
    fn new() -> SessionBench {
        SessionBench {
            session: Session::new(provider()),
            clock: Clock::new(),
        }
    }

    fn drain(&mut self) -> Vec<SessionAction> {
        std::iter::from_fn(|| self.session.poll_action()).collect()
    }

    /// The claims of the stored login's ID token.
    fn login_claims(&self) -> Value {
        let (_, wall) = self.clock.at(0);
        claims_for(Some(LOGIN_NONCE), wall - Duration::from_secs(1800))
    }

    /// The stored tokens, read back as a token store would: the login's ID token and its
    /// verified identity.
    fn stored(&self) -> TokenSet {
        let (_, wall) = self.clock.at(0);
        let claims = self.login_claims();
        serde_json::from_value(json!({
            "access_token": "access-1",
            "token_type": "Bearer",
            "expires_at": unix(wall) + 1800,
            "refresh_token": "refresh-1",
            "id_token": id_token(&claims),
            "identity": claims,
        }))
        .expect("a stored token set")
    }

    /// A forced refresh at `seconds`, of `stored`, up to the refresh request.
    fn refresh(&mut self, seconds: u64, stored: TokenSet) -> RequestId {
        let (now, wall) = self.clock.at(seconds);
        self.session.refresh(now);
        let op = match &self.drain()[..] {
            [SessionAction::Load { op }] => *op,
            other => panic!("expected one Load, got {other:?}"),
        };
        self.session.handle_loaded(now, wall, op, Ok(Some(stored)));
        match &self.drain()[..] {
            [
                SessionAction::Send {
                    id,
                    purpose: Purpose::Refresh,
                    ..
                },
            ] => *id,
            other => panic!("expected one refresh Send, got {other:?}"),
        }
    }

    /// The request `id` is answered at `seconds`.
    fn answer(
        &mut self,
        id: RequestId,
        seconds: u64,
        status: u16,
        body: &str,
    ) -> Vec<SessionAction> {
        let (now, wall) = self.clock.at(seconds);
        self.session
            .handle_response(now, wall, id, response(status, body));
        self.drain()
    }

    /// The refresh `id` is answered at `seconds` with new tokens and `id_token`.
    fn refreshed(
        &mut self,
        id: RequestId,
        seconds: u64,
        id_token: Option<&str>,
    ) -> Vec<SessionAction> {
        self.answer(
            id,
            seconds,
            200,
            &token_body("access-2", "refresh-2", id_token),
        )
    }

    /// Claims of a refreshed ID token for jane, issued at `seconds`, changed by `change`.
    fn refreshed_claims(&self, seconds: u64, change: impl FnOnce(&mut Value)) -> Value {
        let (_, wall) = self.clock.at(seconds);
        let mut claims = claims_for(None, wall);
        claims["email"] = "jane.doe@example.com".into();
        change(&mut claims);
        claims
    }

    /// The store confirms save `op` at `seconds`; returns the answers.
    fn saved(&mut self, op: crate::StoreOpId, seconds: u64) -> Vec<SessionAction> {
        let (now, wall) = self.clock.at(seconds);
        self.session.handle_saved(now, wall, op, Ok(()));
        self.drain()
    }
}

/// The one action, a key-set fetch.
fn key_fetch(actions: &[SessionAction]) -> (RequestId, http::Request<Vec<u8>>) {
    match actions {
        [
            SessionAction::Send {
                id,
                purpose: Purpose::KeySet,
                request,
            },
        ] => (*id, request.request().clone()),
        other => panic!("expected one key-set Send, got {other:?}"),
    }
}

/// The one action, refreshed tokens to store.
fn saved_fresh(actions: &[SessionAction]) -> (crate::StoreOpId, TokenSet) {
    match actions {
        [
            SessionAction::Save {
                op,
                tokens,
                reason: SaveReason::Refreshed { rotated: true },
            },
        ] => (*op, tokens.clone()),
        other => panic!("expected one Save of refreshed tokens, got {other:?}"),
    }
}

fn id_token_text(tokens: &TokenSet) -> Option<String> {
    tokens.id_token().map(|t| t.expose_secret().to_owned())
}

/// S47, S49: a refreshed ID token of the same user is verified (after fetching the keys)
/// and stored with its identity.
#[test]
fn s49_a_refreshed_id_token_of_the_same_user_is_verified_and_stored() {
    let mut b = SessionBench::new();
    let id = b.refresh(0, b.stored());
    let fresh_token = id_token(&b.refreshed_claims(1, |_| {}));
    let (fetch_id, request) = key_fetch(&b.refreshed(id, 1, Some(&fresh_token)));
    assert_key_set_request(&request);

    let (op, fresh) = saved_fresh(&b.answer(fetch_id, 2, 200, &key_set(&["k1"])));
    assert_eq!(fresh.access_token().expose_secret(), "access-2");
    assert_eq!(id_token_text(&fresh), Some(fresh_token));
    let identity = fresh.identity().expect("verified");
    assert_eq!((identity.iss(), identity.sub()), (ISSUER, "jane"));
    assert_eq!(
        identity.email(),
        Some("jane.doe@example.com"),
        "the new token's claims"
    );

    match &b.saved(op, 2)[..] {
        [
            SessionAction::Tokens {
                result: Ok(tokens), ..
            },
        ] => {
            assert_eq!(tokens.identity(), fresh.identity());
        }
        other => panic!("expected the answer, got {other:?}"),
    }
}

/// S49: a refreshed ID token naming another user or another audience ends the login: the
/// stored tokens are deleted and the caller must log in again.
#[test]
fn s49_a_refreshed_id_token_of_another_user_or_audience_ends_the_login() {
    type Change = fn(&mut Value);
    let cases: [(&str, Change, IdTokenError); 2] = [
        (
            "another subject",
            |c| c["sub"] = "mallory".into(),
            IdTokenError::Subject,
        ),
        (
            "another audience",
            |c| {
                c["aud"] = json!([CLIENT_ID, "someone-else"]);
                c["azp"] = CLIENT_ID.into();
            },
            IdTokenError::Audience,
        ),
    ];
    for (what, change, error) in cases {
        let mut b = SessionBench::new();
        let id = b.refresh(0, b.stored());
        let fresh_token = id_token(&b.refreshed_claims(1, change));
        let (fetch_id, _) = key_fetch(&b.refreshed(id, 1, Some(&fresh_token)));
        let op = match &b.answer(fetch_id, 2, 200, &key_set(&["k1"]))[..] {
            [
                SessionAction::Delete {
                    op,
                    reason: DeleteReason::LoginRequired,
                },
            ] => *op,
            other => panic!("{what}: expected one Delete, got {other:?}"),
        };
        let (now, _) = b.clock.at(2);
        b.session.handle_deleted(now, op, Ok(()));
        match &b.drain()[..] {
            [
                SessionAction::Tokens {
                    result: Err(refused),
                    ..
                },
            ] => {
                assert_eq!(
                    *refused,
                    SessionError::Refresh(RefreshError::IdToken(error.clone())),
                    "{what}"
                );
                assert!(refused.login_required(), "{what}");
            }
            other => panic!("{what}: expected the answer, got {other:?}"),
        }
    }
}

/// S49: a refresh response without an ID token keeps the login's ID token and identity,
/// and needs no keys.
#[test]
fn s49_a_refresh_without_an_id_token_keeps_the_login_identity() {
    let mut b = SessionBench::new();
    let stored = b.stored();
    let id = b.refresh(0, stored.clone());
    let (op, fresh) = saved_fresh(&b.refreshed(id, 1, None));
    assert_eq!(fresh.access_token().expose_secret(), "access-2");
    assert_eq!(id_token_text(&fresh), id_token_text(&stored));
    assert_eq!(fresh.identity(), stored.identity());
    assert_eq!(
        fresh.identity().and_then(Identity::email),
        Some("jane@example.com")
    );
    assert!(matches!(
        &b.saved(op, 1)[..],
        [SessionAction::Tokens { result: Ok(_), .. }]
    ));
}

/// S49: a refresh response that repeats the login's ID token (as several providers do)
/// needs no check and keeps the identity verified with it.
#[test]
fn s49_a_refresh_repeating_the_login_id_token_keeps_its_identity() {
    let mut b = SessionBench::new();
    let stored = b.stored();
    let id = b.refresh(0, stored.clone());
    let repeated = id_token_text(&stored);
    let (op, fresh) = saved_fresh(&b.refreshed(id, 1, repeated.as_deref()));
    assert_eq!(fresh.access_token().expose_secret(), "access-2");
    assert_eq!(id_token_text(&fresh), repeated);
    assert_eq!(fresh.identity(), stored.identity());
    assert!(fresh.identity().is_some());
    assert!(matches!(
        &b.saved(op, 1)[..],
        [SessionAction::Tokens { result: Ok(_), .. }]
    ));
}

/// S47, S49: when the key set is unreachable during a refresh, the refresh still succeeds,
/// with the login's ID token and identity instead of the unverified new ones.
#[test]
fn s49_an_unreachable_key_set_during_a_refresh_keeps_the_login_identity() {
    let mut b = SessionBench::new();
    let stored = b.stored();
    let id = b.refresh(0, stored.clone());
    let fresh_token = id_token(&b.refreshed_claims(1, |_| {}));
    let (fetch_id, _) = key_fetch(&b.refreshed(id, 1, Some(&fresh_token)));
    let (now, _) = b.clock.at(2);
    b.session.handle_failure(now, fetch_id, transport_error());
    let (op, fresh) = saved_fresh(&b.drain());
    assert_eq!(fresh.access_token().expose_secret(), "access-2");
    assert_eq!(id_token_text(&fresh), id_token_text(&stored));
    assert_eq!(fresh.identity(), stored.identity());
    match &b.saved(op, 2)[..] {
        [
            SessionAction::Tokens {
                result: Ok(tokens), ..
            },
        ] => {
            assert_eq!(tokens.identity(), stored.identity());
        }
        other => panic!("expected the answer, got {other:?}"),
    }
}

/// S47, S49: a key fetch for a refresh has the request timeout as its deadline; past it
/// the refresh is stored with the login's identity and the late answer is ignored.
#[test]
fn s49_a_key_fetch_for_a_refresh_times_out_and_the_login_identity_stands() {
    let mut b = SessionBench::new();
    let stored = b.stored();
    let id = b.refresh(0, stored.clone());
    let fresh_token = id_token(&b.refreshed_claims(1, |_| {}));
    let (fetch_id, _) = key_fetch(&b.refreshed(id, 1, Some(&fresh_token)));
    let (start, _) = b.clock.at(1);
    let deadline = start + b.session.options().request_timeout;
    assert_eq!(b.session.poll_timeout(), Some(deadline));
    b.session.handle_timeout(deadline);
    let (op, fresh) = saved_fresh(&b.drain());
    assert_eq!(fresh.identity(), stored.identity());
    assert_eq!(id_token_text(&fresh), id_token_text(&stored));
    assert!(
        b.answer(fetch_id, 40, 200, &key_set(&["k1"])).is_empty(),
        "too late"
    );
    assert!(matches!(
        &b.saved(op, 40)[..],
        [SessionAction::Tokens { result: Ok(_), .. }]
    ));
}

/// S47, S49: tokens an engine stored, read back by a session with the engine's exported
/// keys, are the identity a refresh must repeat; no fetch is needed.
#[test]
fn s49_a_login_stored_and_read_back_is_the_identity_a_refresh_must_repeat() {
    let mut e = EngineBench::new();
    let tokens = e.warm_up(0);
    let stored: TokenSet =
        serde_json::from_slice(&serde_json::to_vec(&tokens).expect("serializable"))
            .expect("readable");
    assert_eq!(
        stored.identity(),
        tokens.identity(),
        "the identity survives the store"
    );

    let mut b = SessionBench {
        session: Session::new(provider()),
        clock: e.clock,
    };
    let (now, wall) = b.clock.at(60);
    assert_eq!(
        b.session
            .import_key_sets(now, wall, &e.engine.export_key_sets()),
        Ok(1)
    );
    let id = b.refresh(60, stored.clone());
    let fresh_token = id_token(&b.refreshed_claims(61, |_| {}));
    let (op, fresh) = saved_fresh(&b.refreshed(id, 61, Some(&fresh_token)));
    assert_eq!(id_token_text(&fresh), Some(fresh_token));
    assert_eq!(fresh.identity().map(Identity::sub), Some("jane"));
    assert!(matches!(
        &b.saved(op, 61)[..],
        [SessionAction::Tokens { result: Ok(_), .. }]
    ));

    // The same refresh for someone else is refused without a fetch either.
    let id = b.refresh(62, stored);
    let other = id_token(&b.refreshed_claims(63, |c| c["sub"] = "mallory".into()));
    assert!(matches!(
        &b.refreshed(id, 63, Some(&other))[..],
        [SessionAction::Delete {
            reason: DeleteReason::LoginRequired,
            ..
        }]
    ));
}

// ===== the token itself =====

/// A stand-in for a real signature that binds it to the signed bytes: the "signature" is
/// SHA-512 of the signing input (64 bytes, the length of an Ed25519 signature).
#[derive(Debug)]
struct Sha512Seal;

impl CryptoProvider for Sha512Seal {
    fn verify(
        &self,
        _: Algorithm,
        _: &PublicKey,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        if Sha512::digest(message).as_slice() == signature {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }
}

/// S46–S48: changing any one character of a valid token, in its header, payload or
/// signature, to any other printable ASCII character never yields an identity.
///
/// [`Accept`] would let changes to claims nobody checks (`email`) through: only the
/// signature binds them. So the token here is sealed with [`Sha512Seal`], which does, and
/// every part of the token is covered.
#[test]
fn s46_s47_s48_no_single_character_change_of_a_token_verifies() {
    let policy = provider_with(Arc::new(Sha512Seal))
        .id_token_policy()
        .expect("verifies")
        .clone();
    let keys = KeySet::parse(key_set(&["k1"]).as_bytes()).expect("a key set");
    let wall = UNIX_EPOCH + Duration::from_secs(WALL0);
    let mut claims = claims_for(Some(LOGIN_NONCE), wall);
    claims["at_hash"] = at_hash::<Sha512>("access-1").into();
    let signing_input = format!(
        "{}.{}",
        b64(json!({"alg": "EdDSA", "kid": "k1"}).to_string()),
        b64(claims.to_string())
    );
    let token = format!(
        "{signing_input}.{}",
        b64(Sha512::digest(signing_input.as_bytes()))
    );
    let expected = Expected {
        nonce: Some(LOGIN_NONCE),
        access_token: Some("access-1"),
        previous: None,
    };
    let identity = policy
        .verify(&keys, &token, &expected, wall)
        .expect("the original verifies");
    assert_eq!(identity.sub(), "jane");

    let mut bad_signatures = 0;
    for at in 0..token.len() {
        for replacement in b'!'..=b'~' {
            if token.as_bytes()[at] == replacement {
                continue;
            }
            let mut changed = token.clone().into_bytes();
            changed[at] = replacement;
            let changed = String::from_utf8(changed).expect("ASCII");
            match policy.verify(&keys, &changed, &expected, wall) {
                Ok(identity) => panic!("{changed} verified as {identity:?}"),
                Err(IdTokenError::Signature) => bad_signatures += 1,
                Err(_) => {}
            }
        }
    }
    // Not only malformed tokens: many readable ones were caught by the signature.
    assert!(bad_signatures > 1000, "{bad_signatures}");
}
