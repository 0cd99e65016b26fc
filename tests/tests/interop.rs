//! Interop tests against a real, independent, OpenID-certified identity provider: the npm
//! package `oidc-provider` (see `latchkey_tests::oidc`), with its development login and
//! consent pages played by `latchkey_tests::oidc_agent`.
//!
//! Each test starts a provider of its own and a latchkey service with its real loopback
//! listener, on both drivers (`smol` and `tokio`), and signs in through the provider's
//! pages. Its clients cover the four client authentication methods (`private_key_jwt`
//! with RSA, P-256 and Ed25519 keys), DPoP with nonces required, and a client that must
//! push its authorization requests (PAR).
//!
//! Every wait has a deadline, so a failing test fails instead of hanging.

#[macro_use]
mod support;

use support::{outcome, within};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use latchkey::dpop::Proof;
use latchkey::keys::{PrivateKey, Signer};
use latchkey::oidc::Algorithm;
use latchkey::{
    ClientAuth, Config, FlowError, FlowOptions, Landing, LogoutReport, Provider, RefreshError,
    TokenKind, TokenSet, TokenType, TransportError, TransportErrorKind,
};
use latchkey_io::discovery::discover;
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::proxy::Proxy;
use latchkey_io::runtime::Runtime;
use latchkey_io::service::{Login, LoginEvent, Service, ServiceOptions};
use latchkey_io::store::{DEFAULT_KEY, MemoryStore, TokenStore};
use latchkey_io::transport::{TokenResult, TokenTransport, Transport};
use latchkey_tests::oidc::{
    self, BASIC, EDDSA, ES256, JWT, OidcProvider, PAR, POST, PUBLIC, RegisteredClient,
};
use latchkey_tests::oidc_agent::{self, Choice, Hop};
use secrecy::{ExposeSecret, SecretString};
use smol::future;

const SCOPES: [&str; 2] = ["openid", "offline_access"];
const CALLBACK_PATH: &str = "/callback";
const LANDING: &str = "docker-desktop://dashboard/open";
/// oidc-provider's default access token lifetime (`ttl.AccessToken`, 60 × 60 s, in
/// `lib/helpers/defaults.js`); `idp.mjs` keeps it.
const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The longest a provider may take to start: node's startup and two instances' RSA keys,
/// on a machine busy with other tests (a hang detector, not a speed requirement).
const START: Duration = Duration::from_secs(30);
/// The longest the outcome may take once the browser has its answer (latchkey answers the
/// browser only after the token request and the store, so it is immediate).
const OUTCOME: Duration = Duration::from_secs(15);
/// The longest a whole scenario may take.
const SCENARIO: Duration = Duration::from_secs(60);
/// oidc-provider names no polling interval: latchkey polls every 5 s (RFC 8628's default).
const DEVICE_POLL: Duration = Duration::from_secs(5);
/// The longest a device login's scenario may take: a browser, then two polls.
const DEVICE_SCENARIO: Duration = Duration::from_secs(90);

// ----- running a scenario on both drivers -----

on_both_drivers!(
    SCENARIO;
    basic_client_signs_in,
    post_client_signs_in,
    public_client_signs_in,
    user_denies_consent,
    iss_of_another_provider_is_a_mix_up,
    replayed_code_is_refused,
    basic_secret_without_form_encoding_is_refused,
    s9_s42_s44_discovery_refresh_rotation_reuse_and_revocation,
    s46_s47_es256_and_eddsa_id_tokens_verify,
    s47_a_key_rotation_between_two_logins_is_followed,
    s63_a_private_key_jwt_client_signs_in_refreshes_and_logs_out,
    s63_an_assertion_signed_with_an_unregistered_key_is_refused,
    s61_s62_a_dpop_bound_login_refresh_and_logout,
    a_par_client_signs_in_with_its_request_pushed_first,
);

on_both_drivers!(
    DEVICE_SCENARIO;
    s51_a_device_login_approved_on_another_device,
    a_device_login_aborted_on_another_device_is_access_denied,
);

/// A device login approved in headless Chromium, once (on smol): the browser is the slow
/// part, not the driver.
#[test]
fn a_device_login_approved_in_headless_chromium() {
    support::run_smol(device_login_in_chromium, DEVICE_SCENARIO);
}

// ----- the fixture -----

/// A running oidc-provider, started on the blocking pool.
async fn provider<R: Runtime>(rt: &R) -> OidcProvider {
    within(
        rt,
        START,
        "oidc-provider's start",
        rt.unblock(OidcProvider::start),
    )
    .await
}

/// latchkey's own HTTP client, without a proxy, with a deadline well inside the scenario's.
fn http_client() -> HttpClient {
    HttpClient::new(HttpOptions {
        proxy: Proxy::none(),
        timeout: Duration::from_secs(5),
        ..HttpOptions::default()
    })
    .expect("HTTP client")
}

/// latchkey's configuration for `client`, sending the browser to `authorization_endpoint`
/// and the code to `token_endpoint`, expecting `issuer` in the callback. The redirect URI
/// has port 0: the service binds an ephemeral port, which the provider accepts because
/// loopback redirect URIs match on any port (RFC 8252 §7.3).
fn config(
    client: RegisteredClient,
    authorization_endpoint: String,
    token_endpoint: String,
    issuer: &str,
) -> Config {
    let auth = match client.method {
        "client_secret_basic" => ClientAuth::SecretBasic,
        "client_secret_post" => ClientAuth::SecretPost,
        "none" => ClientAuth::None,
        other => panic!("no latchkey method for {other}"),
    };
    let mut provider = Provider::builder(authorization_endpoint, token_endpoint, client.id)
        .scopes(SCOPES)
        // oidc-provider issues a refresh token for `offline_access` only with consent.
        .param("prompt", "consent")
        .issuer(issuer)
        .require_iss(true)
        .jwks_uri(format!("{issuer}/jwks"))
        .crypto(latchkey_io::crypto::ring())
        .client_auth(auth);
    if let Some(secret) = client.secret {
        provider = provider.client_secret(SecretString::from(secret));
    }
    Config::builder(provider.build().expect("provider"))
        .redirect_uri("127.0.0.1", 0, CALLBACK_PATH)
        .on_success(Landing::Redirect(LANDING.into()))
        .build()
        .expect("config")
}

/// A latchkey service on an ephemeral loopback port, storing into memory.
struct Fixture<R: Runtime> {
    service: Service<R>,
    store: Arc<MemoryStore>,
}

impl<R: Runtime> Fixture<R> {
    /// A service for `client` at `idp`, with its own HTTP client as the transport.
    fn new(rt: &R, idp: &OidcProvider, client: RegisteredClient) -> Fixture<R> {
        Fixture::with(
            rt,
            config(
                client,
                idp.authorization_endpoint(),
                idp.token_endpoint(),
                idp.issuer(),
            ),
            Transport::Builtin(http_client()),
        )
    }

    fn with(rt: &R, config: Config, transport: Transport) -> Fixture<R> {
        let store = Arc::new(MemoryStore::default());
        let options = ServiceOptions::new(store.clone(), transport);
        let service = Service::bind(rt.clone(), config, options).expect("start the service");
        let port = service.local_addrs()[0].port();
        assert_eq!(
            service.redirect_uri(),
            format!("http://127.0.0.1:{port}{CALLBACK_PATH}")
        );
        Fixture { service, store }
    }

    async fn start_login(&self) -> Login {
        self.service
            .start_async(FlowOptions::new())
            .await
            .expect("start a login")
    }

    fn stored(&self) -> Option<TokenSet> {
        self.store.load(DEFAULT_KEY).expect("read the store")
    }

    async fn shutdown(self, rt: &R) {
        within(rt, OUTCOME, "shutdown", self.service.shutdown()).await;
    }
}

/// The agent signs in at `url` on the blocking pool, within its own deadline. `idp` is the
/// provider `url` belongs to, to tell a provider that died from other failures.
async fn sign_in<R: Runtime>(rt: &R, idp: &OidcProvider, url: &str, choice: Choice) -> Vec<Hop> {
    let url = url.to_owned();
    let limit = oidc_agent::TIMEOUT + Duration::from_secs(1);
    let result = within(
        rt,
        limit,
        "the browser",
        rt.unblock(move || oidc_agent::sign_in(&url, choice)),
    )
    .await;
    result.unwrap_or_else(|error| {
        let address = idp.issuer().trim_start_matches("http://");
        let alive = std::net::TcpStream::connect(address).is_ok();
        let hint = if alive {
            ""
        } else {
            "\n(oidc-provider no longer accepts connections: it has exited)"
        };
        panic!("the browser's sign-in failed: {error}{hint}")
    })
}

/// Every event of `login` up to and including `Finished`, within [`OUTCOME`].
async fn events<R: Runtime>(rt: &R, login: &Login) -> Vec<LoginEvent> {
    support::events(rt, login, OUTCOME).await
}

/// The provider's redirect back to latchkey: `redirect_uri?{query}`, with `query` starting
/// with `first_parameter=` and naming `issuer` in `iss`.
fn callback_hop<'a>(
    hops: &'a [Hop],
    redirect_uri: &str,
    first_parameter: &str,
    issuer: &str,
) -> &'a Hop {
    let hop = oidc_agent::callback(hops, redirect_uri)
        .unwrap_or_else(|| panic!("no request to {redirect_uri}: {hops:#?}"));
    let query = hop.url.split_once('?').map_or("", |(_, query)| query);
    assert!(
        query.starts_with(&format!("{first_parameter}=")),
        "{hops:#?}"
    );
    let iss = format!("iss={}", form_encode(issuer));
    assert!(query.split('&').any(|pair| pair == iss), "{hops:#?}");
    hop
}

/// The browser's path ends at the callback with latchkey's built-in failure page.
fn assert_failure_page(hops: &[Hop], callback: &Hop) {
    let last = hops.last().expect("at least one hop");
    assert_eq!(last, callback, "the callback is the last hop: {hops:#?}");
    assert_eq!(
        (last.method, last.status, last.location.as_deref()),
        ("GET", 200, None),
        "{hops:#?}"
    );
}

/// Form-encodes `value` (unreserved characters kept), as oidc-provider encodes `iss`.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The access token's claims at the provider's userinfo endpoint (`/me`): proof that the
/// provider takes the token latchkey received as its own.
async fn userinfo<R: Runtime>(rt: &R, idp: &OidcProvider, tokens: &TokenSet) -> serde_json::Value {
    let request = http::Request::get(format!("{}/me", idp.issuer()))
        .header(
            "authorization",
            format!("Bearer {}", tokens.access_token().expose_secret()),
        )
        .body(Vec::new())
        .expect("userinfo request");
    let client = http_client();
    let response = within(
        rt,
        OUTCOME,
        "the userinfo request",
        client.send_on(rt, &request),
    )
    .await
    .expect("the userinfo response");
    assert_eq!(
        response.status(),
        200,
        "{}",
        String::from_utf8_lossy(response.body())
    );
    serde_json::from_slice(response.body()).expect("userinfo JSON")
}

// ----- custom transports -----

/// Runs blocking `work` on a thread of its own and hands its answer to latchkey.
fn on_a_thread(
    work: impl FnOnce() -> TokenResult + Send + 'static,
) -> Pin<Box<dyn Future<Output = TokenResult> + Send>> {
    let (answer, answered) = smol::channel::bounded(1);
    thread::spawn(move || {
        let _ = answer.send_blocking(work());
    });
    Box::pin(async move {
        answered.recv().await.unwrap_or_else(|_| {
            Err(TransportError::new(
                TransportErrorKind::Other,
                "transport thread ended",
            ))
        })
    })
}

/// A copy of `request` (`http::Request` is not `Clone`).
fn copy(request: &http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    let mut copy = http::Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// latchkey's own client, counting the requests it is given (those for `only`, when set).
struct Counting {
    client: HttpClient,
    sent: Arc<AtomicUsize>,
    only: Option<String>,
}

impl TokenTransport for Counting {
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = TokenResult> + Send>> {
        if self
            .only
            .as_ref()
            .is_none_or(|uri| request.uri().to_string() == *uri)
        {
            self.sent.fetch_add(1, Ordering::SeqCst);
        }
        let client = self.client.clone();
        on_a_thread(move || support::send_blocking(&client, &request))
    }
}

/// An attacker who intercepted the token request: redeems the code first, then lets the
/// identical request through, and latchkey gets the answer to that replay.
struct Replaying {
    client: HttpClient,
    /// The status of the attacker's redemption.
    first: Arc<Mutex<Option<u16>>>,
}

impl TokenTransport for Replaying {
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = TokenResult> + Send>> {
        let client = self.client.clone();
        let first = Arc::clone(&self.first);
        on_a_thread(move || {
            let stolen = support::send_blocking(&client, &copy(&request))?;
            let issued = serde_json::from_slice::<serde_json::Value>(stolen.body())
                .is_ok_and(|json| json["access_token"].is_string());
            *first.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(stolen.status().as_u16()).filter(|_| issued);
            support::send_blocking(&client, &request)
        })
    }
}

/// Replaces the form-encoded credentials in a Basic `Authorization` header with the raw
/// client id and secret, as a client that skips RFC 6749 §2.3.1's encoding would send them.
struct UnencodedBasic {
    client: HttpClient,
    client_id: &'static str,
    secret: &'static str,
    /// Whether latchkey's header was the form-encoded one.
    encoded: Arc<Mutex<Option<bool>>>,
}

impl TokenTransport for UnencodedBasic {
    fn send(
        &self,
        mut request: http::Request<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = TokenResult> + Send>> {
        use base64::Engine as _;
        let base64 = base64::engine::general_purpose::STANDARD;
        // latchkey's credentials: form-encoded (not raw), decoding to the id and secret.
        let pair = request
            .headers()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Basic "))
            .and_then(|credentials| base64.decode(credentials).ok())
            .and_then(|pair| String::from_utf8(pair).ok());
        let encoded = pair
            .as_deref()
            .and_then(|pair| pair.split_once(':'))
            .is_some_and(|(id, secret)| {
                !secret.contains(' ')
                    && form_decode(id).as_deref() == Some(self.client_id)
                    && form_decode(secret).as_deref() == Some(self.secret)
            });
        *self.encoded.lock().unwrap_or_else(|e| e.into_inner()) = Some(encoded);
        let raw = format!(
            "Basic {}",
            base64.encode(format!("{}:{}", self.client_id, self.secret))
        );
        request
            .headers_mut()
            .insert("authorization", raw.parse().expect("a valid header value"));
        let client = self.client.clone();
        on_a_thread(move || support::send_blocking(&client, &request))
    }
}

/// Decodes one form-encoded component (`+` is a space); `None` if malformed.
fn form_decode(value: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let mut rest = value.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(rest.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &rest[2..];
            }
            _ => bytes.push(byte),
        }
    }
    String::from_utf8(bytes).ok()
}

// ----- 1. a successful sign-in, for each client authentication method -----

async fn basic_client_signs_in<R: Runtime>(rt: R) {
    // The secret `s3cr3t+/:%&= ~!` is accepted only because latchkey form-encodes the
    // client id and secret before base64 (RFC 6749 §2.3.1): oidc-provider decodes both
    // with `decodeURIComponent` (`+` read as a space), so the raw secret would either fail
    // to decode (`%&=`) or turn `+` into a space. See
    // `basic_secret_without_form_encoding_is_refused` for the provider refusing it.
    signs_in(rt, BASIC).await;
}

async fn post_client_signs_in<R: Runtime>(rt: R) {
    signs_in(rt, POST).await;
}

async fn public_client_signs_in<R: Runtime>(rt: R) {
    signs_in(rt, PUBLIC).await;
}

async fn signs_in<R: Runtime>(rt: R, client: RegisteredClient) {
    let idp = provider(&rt).await;
    let fx = Fixture::new(&rt, &idp, client);
    let login = fx.start_login().await;
    assert!(
        login
            .url()
            .expect("a browser login")
            .starts_with(&format!("{}?", idp.authorization_endpoint())),
        "{}",
        login.url().expect("a browser login")
    );
    let before = SystemTime::now();
    let hops = sign_in(
        &rt,
        &idp,
        login.url().expect("a browser login"),
        Choice::Approve,
    )
    .await;
    let after = SystemTime::now();

    let events = events(&rt, &login).await;
    if let Err(error) = outcome(&events) {
        panic!("the login failed: {error:?}\nhops: {hops:#?}");
    }
    assert!(
        matches!(
            events.as_slice(),
            [
                LoginEvent::Callback,
                LoginEvent::Tokens(_),
                LoginEvent::Stored,
                LoginEvent::Finished(Ok(_))
            ]
        ),
        "{events:?}"
    );
    // The provider sent the browser back with a code and its issuer (RFC 9207); latchkey
    // answered with a redirect to the landing, and the browser stopped there. The user saw
    // both the login and the consent page.
    let callback = callback_hop(&hops, fx.service.redirect_uri(), "code", idp.issuer());
    assert_eq!(hops.last(), Some(callback), "{hops:#?}");
    assert_eq!(
        (
            callback.method,
            callback.status,
            callback.location.as_deref()
        ),
        ("GET", 303, Some(LANDING)),
        "{hops:#?}"
    );
    let posts = hops.iter().filter(|hop| hop.method == "POST").count();
    assert_eq!(posts, 2, "a login and a consent form: {hops:#?}");

    let tokens = outcome(&events).expect("tokens");
    assert_eq!(tokens.token_type(), &TokenType::Bearer);
    let expires_at = tokens.expires_at().expect("an expiry");
    let ahead = expires_at
        .duration_since(before)
        .expect("an expiry in the future");
    assert!(
        ahead > Duration::ZERO && ahead <= Duration::from_secs(2 * 3600),
        "expires in {ahead:?}"
    );
    // `expires_in` is whole seconds, counted from the provider's clock.
    let slack = Duration::from_secs(2);
    assert!(
        expires_at >= before + ACCESS_TOKEN_LIFETIME - slack
            && expires_at <= after + ACCESS_TOKEN_LIFETIME + slack,
        "expires in {ahead:?} from the sign-in's start, {ACCESS_TOKEN_LIFETIME:?} expected"
    );
    assert!(tokens.refresh_token().is_some(), "no refresh token");
    assert!(tokens.id_token().is_some(), "no ID token for scope openid");
    // Its RS256 signature, issuer, audience, nonce, times and at_hash were checked.
    let identity = tokens.identity().expect("a verified identity");
    assert_eq!(
        (identity.iss(), identity.sub()),
        (idp.issuer(), oidc_agent::LOGIN)
    );
    assert_eq!(identity.claims()["aud"], client.id);
    let mut scopes: Vec<&str> = tokens.scopes().collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["offline_access", "openid"]);

    // Stored before the browser heard of success, exactly what the login returned.
    let stored = fx.stored().expect("tokens stored under the default key");
    assert_eq!(
        stored.access_token().expose_secret(),
        tokens.access_token().expose_secret()
    );
    assert_eq!(
        stored.refresh_token().map(ExposeSecret::expose_secret),
        tokens.refresh_token().map(ExposeSecret::expose_secret)
    );
    assert_eq!(
        stored.id_token().map(ExposeSecret::expose_secret),
        tokens.id_token().map(ExposeSecret::expose_secret)
    );
    assert_eq!(stored.token_type(), tokens.token_type());
    assert_eq!(stored.expires_at(), tokens.expires_at());
    assert_eq!(stored.scope(), tokens.scope());

    // The provider knows the access token: it is alice's.
    let claims = userinfo(&rt, &idp, &tokens).await;
    assert_eq!(claims["sub"], oidc_agent::LOGIN, "{claims}");
    fx.shutdown(&rt).await;
}

// ----- 2. the user cancels on the consent page -----

async fn user_denies_consent<R: Runtime>(rt: R) {
    let idp = provider(&rt).await;
    let sent = Arc::new(AtomicUsize::new(0));
    let transport = Counting {
        client: http_client(),
        sent: Arc::clone(&sent),
        only: None,
    };
    let fx = Fixture::with(
        &rt,
        config(
            POST,
            idp.authorization_endpoint(),
            idp.token_endpoint(),
            idp.issuer(),
        ),
        Transport::Custom(Arc::new(transport)),
    );
    let login = fx.start_login().await;
    let hops = sign_in(
        &rt,
        &idp,
        login.url().expect("a browser login"),
        Choice::Deny,
    )
    .await;
    match outcome(&events(&rt, &login).await) {
        Err(FlowError::Denied(error)) => assert_eq!(error.code, "access_denied", "{error:?}"),
        other => panic!("expected a denial, got {other:?}"),
    }
    let callback = callback_hop(&hops, fx.service.redirect_uri(), "error", idp.issuer());
    assert_failure_page(&hops, callback);
    assert_eq!(sent.load(Ordering::SeqCst), 0, "a token request was sent");
    assert!(fx.stored().is_none());
    fx.shutdown(&rt).await;
}

// ----- 3. a mix-up: the callback names another issuer (RFC 9207) -----

async fn iss_of_another_provider_is_a_mix_up<R: Runtime>(rt: R) {
    // Two providers. latchkey believes it talks to B, but the authorization request goes
    // to A, so A's callback names A.
    let (a, b) = future::zip(provider(&rt), provider(&rt)).await;
    assert_ne!(a.issuer(), b.issuer());
    let sent = Arc::new(AtomicUsize::new(0));
    let transport = Counting {
        client: http_client(),
        sent: Arc::clone(&sent),
        only: None,
    };
    let fx = Fixture::with(
        &rt,
        config(
            POST,
            a.authorization_endpoint(),
            a.token_endpoint(),
            b.issuer(),
        ),
        Transport::Custom(Arc::new(transport)),
    );
    let login = fx.start_login().await;
    let hops = sign_in(
        &rt,
        &a,
        login.url().expect("a browser login"),
        Choice::Approve,
    )
    .await;
    match outcome(&events(&rt, &login).await) {
        Err(FlowError::IssuerMismatch { expected, received }) => {
            assert_eq!(expected, b.issuer());
            assert_eq!(received.as_deref(), Some(a.issuer()));
        }
        other => panic!("expected an issuer mismatch, got {other:?}"),
    }
    let callback = callback_hop(&hops, fx.service.redirect_uri(), "code", a.issuer());
    assert_failure_page(&hops, callback);
    assert_eq!(
        sent.load(Ordering::SeqCst),
        0,
        "the code went to the token endpoint"
    );
    assert!(fx.stored().is_none());
    fx.shutdown(&rt).await;
}

// ----- 4. the code was redeemed by someone else first -----

async fn replayed_code_is_refused<R: Runtime>(rt: R) {
    let idp = provider(&rt).await;
    let first = Arc::new(Mutex::new(None));
    let transport = Replaying {
        client: http_client(),
        first: Arc::clone(&first),
    };
    let fx = Fixture::with(
        &rt,
        config(
            PUBLIC,
            idp.authorization_endpoint(),
            idp.token_endpoint(),
            idp.issuer(),
        ),
        Transport::Custom(Arc::new(transport)),
    );
    let login = fx.start_login().await;
    let hops = sign_in(
        &rt,
        &idp,
        login.url().expect("a browser login"),
        Choice::Approve,
    )
    .await;
    match outcome(&events(&rt, &login).await) {
        Err(FlowError::TokenRejected { status, error }) => {
            assert_eq!(
                (status, error.code.as_str()),
                (400, "invalid_grant"),
                "{error:?}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let callback = callback_hop(&hops, fx.service.redirect_uri(), "code", idp.issuer());
    assert_failure_page(&hops, callback);
    assert_eq!(
        *first.lock().unwrap_or_else(|e| e.into_inner()),
        Some(200),
        "the attacker's redemption issued tokens"
    );
    assert!(fx.stored().is_none());
    fx.shutdown(&rt).await;
}

// ----- 5. why the Basic secret must be form-encoded -----

async fn basic_secret_without_form_encoding_is_refused<R: Runtime>(rt: R) {
    let idp = provider(&rt).await;
    let encoded = Arc::new(Mutex::new(None));
    let transport = UnencodedBasic {
        client: http_client(),
        client_id: BASIC.id,
        secret: BASIC.secret.expect("a confidential client"),
        encoded: Arc::clone(&encoded),
    };
    let fx = Fixture::with(
        &rt,
        config(
            BASIC,
            idp.authorization_endpoint(),
            idp.token_endpoint(),
            idp.issuer(),
        ),
        Transport::Custom(Arc::new(transport)),
    );
    let login = fx.start_login().await;
    let hops = sign_in(
        &rt,
        &idp,
        login.url().expect("a browser login"),
        Choice::Approve,
    )
    .await;
    match outcome(&events(&rt, &login).await) {
        // `decodeURIComponent` throws on `%&=`: "client_id and client_secret in the
        // authorization header are not properly encoded".
        Err(FlowError::TokenRejected { status, error }) => {
            assert_eq!(
                (status, error.code.as_str()),
                (400, "invalid_request"),
                "{error:?}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let callback = callback_hop(&hops, fx.service.redirect_uri(), "code", idp.issuer());
    assert_failure_page(&hops, callback);
    assert_eq!(
        *encoded.lock().unwrap_or_else(|e| e.into_inner()),
        Some(true),
        "latchkey sent form-encoded Basic credentials"
    );
    assert!(fx.stored().is_none());
    fx.shutdown(&rt).await;
}

/// The provider found from its issuer alone, for `client`, with the scenario's scopes.
async fn discovered<R: Runtime>(rt: &R, idp: &OidcProvider, client: RegisteredClient) -> Provider {
    let transport = Transport::Builtin(http_client());
    let builder = discover(rt, &transport, idp.issuer(), client.id)
        .await
        .expect("trusted metadata");
    let builder = builder
        .scopes(SCOPES)
        .param("prompt", "consent")
        .client_auth(match client.method {
            "client_secret_basic" => ClientAuth::SecretBasic,
            "client_secret_post" => ClientAuth::SecretPost,
            _ => ClientAuth::None,
        });
    match client.secret {
        Some(secret) => builder.client_secret(SecretString::from(secret)),
        None => builder,
    }
    .build()
    .expect("a valid provider")
}

/// A whole login of `provider` through the provider's own pages; its tokens.
async fn logged_in<R: Runtime>(rt: &R, idp: &OidcProvider, provider: &Provider) -> TokenSet {
    let config = Config::builder(provider.clone())
        .redirect_uri("127.0.0.1", 0, CALLBACK_PATH)
        .on_success(Landing::Redirect(LANDING.into()))
        .build()
        .expect("config");
    let fx = Fixture::with(rt, config, Transport::Builtin(http_client()));
    let login = fx.start_login().await;
    sign_in(
        rt,
        idp,
        login.url().expect("a browser login"),
        Choice::Approve,
    )
    .await;
    let tokens = outcome(&events(rt, &login).await).expect("tokens");
    fx.shutdown(rt).await;
    tokens
}

/// Sends a request on `rt`'s sockets from a thread of `rt`'s blocking pool, where a bare
/// session is driven (see [`refreshed`]).
fn sender<R: Runtime>(
    rt: &R,
) -> impl FnMut(http::Request<Vec<u8>>) -> TokenResult + Send + 'static {
    let (rt, client) = (rt.clone(), http_client());
    move |request| future::block_on(client.send_on(&rt, &request))
}

/// A forced refresh of `tokens` through a bare session (its own store), driven on `rt`'s
/// blocking pool.
async fn refreshed<R: Runtime>(
    rt: &R,
    provider: &Provider,
    tokens: &TokenSet,
) -> Result<TokenSet, RefreshError> {
    let (provider, tokens, send) = (provider.clone(), tokens.clone(), sender(rt));
    let refreshing = rt.unblock(move || support::refresh_with(&provider, &tokens, send));
    within(rt, OUTCOME, "the refresh", refreshing).await
}

/// A logout of `tokens` through a bare session (its own store), as [`refreshed`]: the
/// report, and the URI of each request it sent.
async fn logged_out<R: Runtime>(
    rt: &R,
    provider: &Provider,
    tokens: &TokenSet,
) -> (LogoutReport, Vec<String>) {
    let (provider, tokens, mut send) = (provider.clone(), tokens.clone(), sender(rt));
    let logging_out = rt.unblock(move || {
        let mut uris = Vec::new();
        let report = support::logout_with(&provider, &tokens, |request| {
            uris.push(request.uri().to_string());
            send(request)
        });
        (report, uris)
    });
    within(rt, OUTCOME, "the logout", logging_out).await
}

async fn s9_s42_s44_discovery_refresh_rotation_reuse_and_revocation<R: Runtime>(rt: R) {
    let idp = provider(&rt).await;
    let provider = discovered(&rt, &idp, BASIC).await;
    assert_eq!(provider.issuer(), Some(idp.issuer()));
    assert_eq!(provider.token_endpoint(), idp.token_endpoint().as_str());
    let revocation_endpoint = provider
        .revocation_endpoint()
        .map(ToString::to_string)
        .expect("oidc-provider lists its revocation endpoint");

    // Rotation, then the rotated-out refresh token replayed (S42).
    let first = logged_in(&rt, &idp, &provider).await;
    let second = refreshed(&rt, &provider, &first)
        .await
        .expect("a refresh with a fresh refresh token");
    // The refresh's ID token (RS256 is deterministic: within the login's second it is the
    // same bytes) stands for the login's user (S49).
    let (before, after) = (first.identity(), second.identity());
    assert!(second.id_token().is_some());
    assert_eq!(
        after.map(|id| (id.iss(), id.sub())),
        before.map(|id| (id.iss(), id.sub())),
        "the same user after the refresh"
    );
    let secret = |tokens: &TokenSet| {
        tokens
            .refresh_token()
            .map(|token| token.expose_secret().to_owned())
    };
    assert!(secret(&second).is_some());
    assert_ne!(secret(&second), secret(&first), "rotated");
    assert_eq!(
        userinfo(&rt, &idp, &second).await["sub"],
        userinfo(&rt, &idp, &first).await["sub"]
    );
    let replay = refreshed(&rt, &provider, &first)
        .await
        .expect_err("a replayed refresh token");
    assert!(
        matches!(&replay, RefreshError::LoginRequired(error) if error.code == "invalid_grant"),
        "{replay:?}"
    );
    let after = refreshed(&rt, &provider, &second)
        .await
        .expect_err("the provider revoked the grant on the replay");
    assert!(after.login_required(), "{after:?}");

    // Logging out (S44): both tokens revoked at the provider.
    let tokens = logged_in(&rt, &idp, &provider).await;
    let (report, uris) = logged_out(&rt, &provider, &tokens).await;
    assert_eq!(report.not_revoked, None, "revocable: {report:?}");
    assert_eq!(
        support::revoked_kinds(&report),
        [TokenKind::RefreshToken, TokenKind::AccessToken]
    );
    assert_eq!(uris, [revocation_endpoint.as_str(); 2]);
    for (kind, outcome) in &report.revocations {
        assert_eq!(outcome, &Ok(()), "{kind:?}");
    }
    let after = refreshed(&rt, &provider, &tokens)
        .await
        .expect_err("the refresh token is revoked");
    assert!(after.login_required(), "{after:?}");
}

// ----- private_key_jwt (RFC 7523) -----

/// [`JWT`] found from the issuer, authenticating with `key`.
async fn discovered_with_key<R: Runtime>(rt: &R, idp: &OidcProvider, key: PrivateKey) -> Provider {
    let transport = Transport::Builtin(http_client());
    discover(rt, &transport, idp.issuer(), JWT.id)
        .await
        .expect("trusted metadata")
        .scopes(SCOPES)
        .param("prompt", "consent")
        .client_key(key)
        .build()
        .expect("a valid provider")
}

fn test_key(file: &str) -> PrivateKey {
    let path = format!("{}/vectors/keys/{file}", env!("CARGO_MANIFEST_DIR"));
    PrivateKey::parse(&std::fs::read(&path).expect("a test key")).expect("a usable key")
}

async fn s63_a_private_key_jwt_client_signs_in_refreshes_and_logs_out<R: Runtime>(rt: R) {
    let idp = provider(&rt).await;
    // Every key type: the code exchange is authenticated by its assertion alone.
    for file in ["rsa2048.jwk.json", "ed25519.pkcs8.pem"] {
        let provider = discovered_with_key(&rt, &idp, test_key(file)).await;
        let tokens = logged_in(&rt, &idp, &provider).await;
        assert!(tokens.refresh_token().is_some(), "{file}");
    }
    // The refresh and both revocations too.
    let provider = discovered_with_key(&rt, &idp, test_key("p256.sec1.pem")).await;
    assert_eq!(provider.client_auth(), ClientAuth::PrivateKeyJwt);
    let tokens = logged_in(&rt, &idp, &provider).await;
    let fresh = refreshed(&rt, &provider, &tokens)
        .await
        .expect("a refresh authenticated by an assertion");
    let (report, _) = logged_out(&rt, &provider, &fresh).await;
    assert_eq!(report.not_revoked, None, "revocable: {report:?}");
    for (kind, outcome) in &report.revocations {
        assert_eq!(outcome, &Ok(()), "{kind:?}");
    }
    let after = refreshed(&rt, &provider, &fresh)
        .await
        .expect_err("the refresh token is revoked");
    assert!(after.login_required(), "{after:?}");
}

async fn s63_an_assertion_signed_with_an_unregistered_key_is_refused<R: Runtime>(rt: R) {
    let idp = provider(&rt).await;
    let stranger = Signer::generate(Algorithm::ES256, latchkey_io::crypto::ring())
        .expect("a fresh key")
        .private_key()
        .clone();
    let provider = discovered_with_key(&rt, &idp, stranger).await;
    let config = Config::builder(provider)
        .redirect_uri("127.0.0.1", 0, CALLBACK_PATH)
        .build()
        .expect("config");
    let fx = Fixture::with(&rt, config, Transport::Builtin(http_client()));
    let login = fx.start_login().await;
    sign_in(
        &rt,
        &idp,
        login.url().expect("a browser login"),
        Choice::Approve,
    )
    .await;
    match outcome(&events(&rt, &login).await) {
        Err(FlowError::TokenRejected { error, .. }) => assert_eq!(error.code, "invalid_client"),
        other => panic!("expected invalid_client, got {other:?}"),
    }
    assert!(fx.stored().is_none());
    fx.shutdown(&rt).await;
}

// ----- pushed authorization requests (RFC 9126) -----

async fn a_par_client_signs_in_with_its_request_pushed_first<R: Runtime>(rt: R) {
    let idp = provider(&rt).await;
    let transport = Transport::Builtin(http_client());
    let discovered = discover(&rt, &transport, idp.issuer(), PAR.id)
        .await
        .expect("trusted metadata")
        .scopes(SCOPES)
        .param("prompt", "consent");
    // The provider offers PAR without requiring it of everyone: discovery finds the
    // endpoint and leaves pushing off.
    let plain = discovered.build().expect("a provider");
    assert!(plain.pushed_authorization_request_endpoint().is_some());
    assert!(!plain.pushes_authorization_requests());
    let provider = discover(&rt, &transport, idp.issuer(), PAR.id)
        .await
        .expect("trusted metadata")
        .scopes(SCOPES)
        .param("prompt", "consent")
        .push_authorization_requests(true)
        .build()
        .expect("a pushing provider");

    let config = Config::builder(provider)
        .redirect_uri("127.0.0.1", 0, CALLBACK_PATH)
        .build()
        .expect("config");
    let fx = Fixture::with(&rt, config, Transport::Builtin(http_client()));
    let login = fx.start_login().await;
    let url = login
        .url()
        .expect("the URL, once the request is pushed")
        .to_owned();
    let query = url
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default();
    let names: Vec<&str> = query
        .split('&')
        .filter_map(|pair| pair.split_once('=').map(|(name, _)| name))
        .collect();
    assert_eq!(names, ["client_id", "request_uri"], "{url}");
    sign_in(&rt, &idp, &url, Choice::Approve).await;
    let tokens = outcome(&events(&rt, &login).await).expect("tokens");
    assert!(tokens.refresh_token().is_some());
    fx.shutdown(&rt).await;

    // Without the push, the provider refuses this client.
    let config = Config::builder(plain)
        .redirect_uri("127.0.0.1", 0, CALLBACK_PATH)
        .build()
        .expect("config");
    let fx = Fixture::with(&rt, config, Transport::Builtin(http_client()));
    let login = fx.start_login().await;
    sign_in(&rt, &idp, login.url().expect("a URL"), Choice::Approve).await;
    match outcome(&events(&rt, &login).await) {
        Err(FlowError::Denied(error)) => assert_eq!(error.code, "invalid_request"),
        other => panic!("expected the provider's refusal, got {other:?}"),
    }
    assert!(fx.stored().is_none());
    fx.shutdown(&rt).await;
}

// ----- DPoP (RFC 9449) -----

/// `POST /token/introspection` of `token` by [`PUBLIC`], which it was issued to.
async fn introspected<R: Runtime>(rt: &R, idp: &OidcProvider, token: &str) -> serde_json::Value {
    let body = format!("token={}&client_id={}", form_encode(token), PUBLIC.id);
    let request = http::Request::post(format!("{}/token/introspection", idp.issuer()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.into_bytes())
        .expect("an introspection request");
    let response = within(
        rt,
        OUTCOME,
        "introspection",
        http_client().send_on(rt, &request),
    )
    .await
    .expect("the introspection response");
    assert_eq!(
        response.status(),
        200,
        "{}",
        String::from_utf8_lossy(response.body())
    );
    serde_json::from_slice(response.body()).expect("introspection JSON")
}

/// `GET /me` presenting `tokens` as `scheme` (`DPoP` with a proof made with `signer`, the
/// provider's nonce asked for once; or `Bearer`): the status.
async fn userinfo_as<R: Runtime>(
    rt: &R,
    idp: &OidcProvider,
    tokens: &TokenSet,
    signer: Option<&Signer>,
) -> u16 {
    let uri = format!("{}/me", idp.issuer());
    let token = tokens.access_token().expose_secret();
    let mut nonce: Option<String> = None;
    for _ in 0..2 {
        let mut request = http::Request::get(&uri);
        request = match signer {
            Some(signer) => {
                let mut proof = Proof::new("GET", &uri).expect("a URI").access_token(token);
                if let Some(nonce) = &nonce {
                    proof = proof.nonce(nonce);
                }
                let proof = proof.sign(signer, SystemTime::now()).expect("a proof");
                request
                    .header("authorization", format!("DPoP {token}"))
                    .header("dpop", proof)
            }
            None => request.header("authorization", format!("Bearer {token}")),
        };
        let request = request.body(Vec::new()).expect("a userinfo request");
        let response = within(rt, OUTCOME, "userinfo", http_client().send_on(rt, &request))
            .await
            .expect("the userinfo response");
        match response.headers().get("dpop-nonce") {
            Some(next) if response.status() == 401 && nonce.is_none() && signer.is_some() => {
                nonce = Some(next.to_str().expect("a nonce").to_owned());
            }
            _ => return response.status().as_u16(),
        }
    }
    401
}

async fn s61_s62_a_dpop_bound_login_refresh_and_logout<R: Runtime>(rt: R) {
    let idp = provider(&rt).await;
    let transport = Transport::Builtin(http_client());
    let provider = discover(&rt, &transport, idp.issuer(), PUBLIC.id)
        .await
        .expect("trusted metadata")
        .scopes(SCOPES)
        .param("prompt", "consent")
        .dpop(Algorithm::ES256)
        .build()
        .expect("a DPoP provider");
    // The code exchange's first proof has no nonce: oidc-provider asks for one (S62).
    let tokens = logged_in(&rt, &idp, &provider).await;
    assert_eq!(*tokens.token_type(), TokenType::DPoP);
    let exchanges = idp.grant_counts("authorization_code");
    assert_eq!(
        (exchanges.requests, exchanges.ok, exchanges.error),
        (2, 1, 1),
        "use_dpop_nonce, then the retry with the nonce"
    );
    let key = tokens.dpop_key().expect("the login's key").clone();
    let signer = Signer::new(key, latchkey_io::crypto::ring()).expect("the key loads");
    let token = tokens.access_token().expose_secret().to_owned();
    let introspection = introspected(&rt, &idp, &token).await;
    assert_eq!(introspection["active"], true, "{introspection}");
    assert_eq!(introspection["token_type"], "DPoP", "{introspection}");
    assert_eq!(
        introspection["cnf"]["jkt"],
        signer.thumbprint(),
        "bound to the login's key: {introspection}"
    );
    // The application's own request with a proof from the token source's key; a thief
    // presenting it as a bearer token is refused.
    assert_eq!(userinfo_as(&rt, &idp, &tokens, Some(&signer)).await, 200);
    assert_eq!(userinfo_as(&rt, &idp, &tokens, None).await, 401);

    let fresh = refreshed(&rt, &provider, &tokens)
        .await
        .expect("a refresh with a proof");
    assert_eq!(*fresh.token_type(), TokenType::DPoP);
    let refreshes = idp.refresh_counts();
    assert_eq!(refreshes.ok, 1, "{refreshes:?}");
    let introspection = introspected(&rt, &idp, fresh.access_token().expose_secret()).await;
    assert_eq!(
        introspection["cnf"]["jkt"],
        signer.thumbprint(),
        "the same key"
    );

    let (report, _) = logged_out(&rt, &provider, &fresh).await;
    assert_eq!(report.not_revoked, None, "revocable: {report:?}");
    for (kind, outcome) in &report.revocations {
        assert_eq!(outcome, &Ok(()), "{kind:?}");
    }
    let introspection = introspected(&rt, &idp, fresh.access_token().expose_secret()).await;
    assert_eq!(introspection["active"], false, "revoked: {introspection}");
}

// ----- 7. ID tokens of every algorithm, and a key rotation -----

/// The `alg` and `kid` of an ID token's header.
fn header(tokens: &TokenSet) -> (String, String) {
    use base64::Engine as _;
    let token = tokens.id_token().expect("an ID token").expose_secret();
    let header = token.split('.').next().expect("a header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url");
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    let field = |name: &str| json[name].as_str().expect("a string").to_owned();
    (field("alg"), field("kid"))
}

async fn s46_s47_es256_and_eddsa_id_tokens_verify<R: Runtime>(rt: R) {
    let idp = provider(&rt).await;
    for (client, alg) in [(ES256, "ES256"), (EDDSA, "EdDSA")] {
        // Discovery lists RS256, ES256 and EdDSA: all three are allowed.
        let provider = discovered(&rt, &idp, client).await;
        let tokens = logged_in(&rt, &idp, &provider).await;
        assert_eq!(header(&tokens).0, alg);
        let identity = tokens.identity().expect("a verified identity");
        assert_eq!(
            (identity.iss(), identity.sub()),
            (idp.issuer(), oidc_agent::LOGIN)
        );
        assert_eq!(identity.claims()["aud"], client.id);
    }
}

async fn s47_a_key_rotation_between_two_logins_is_followed<R: Runtime>(rt: R) {
    let idp = provider(&rt).await;
    let fetched = Arc::new(AtomicUsize::new(0));
    let transport = Counting {
        client: http_client(),
        sent: Arc::clone(&fetched),
        only: Some(idp.jwks_uri()),
    };
    // One service: one engine, one key cache, for every login.
    let fx = Fixture::with(
        &rt,
        config(
            PUBLIC,
            idp.authorization_endpoint(),
            idp.token_endpoint(),
            idp.issuer(),
        ),
        Transport::Custom(Arc::new(transport)),
    );
    let mut kids = Vec::new();
    for rotate in [false, true, false] {
        if rotate {
            let issuer = idp.issuer().to_owned();
            rt.unblock(move || oidc::rotate_keys_at(&issuer)).await;
        }
        let login = fx.start_login().await;
        sign_in(
            &rt,
            &idp,
            login.url().expect("a browser login"),
            Choice::Approve,
        )
        .await;
        let tokens = outcome(&events(&rt, &login).await).expect("tokens");
        let identity = tokens.identity().expect("a verified identity");
        assert_eq!(identity.sub(), oidc_agent::LOGIN);
        kids.push(header(&tokens).1);
    }
    assert_eq!(kids, ["a-rsa", "b-rsa", "b-rsa"]);
    // Fetched for the first login, again for the new key at once, not for the third.
    assert_eq!(fetched.load(Ordering::SeqCst), 2);
    fx.shutdown(&rt).await;
}

// ----- the device authorization grant (RFC 8628) -----

/// A device login for `client`, discovered, on a service without a listener: the service,
/// the login, and its user code.
async fn device_login<R: Runtime>(
    rt: &R,
    idp: &OidcProvider,
    client: RegisteredClient,
) -> (
    Service<R>,
    Login,
    latchkey::DeviceAuthorization,
    Arc<MemoryStore>,
) {
    let provider = discovered(rt, idp, client).await;
    assert_eq!(
        provider
            .device_authorization_endpoint()
            .map(ToString::to_string),
        Some(idp.device_authorization_endpoint()),
        "discovery reads the device endpoint"
    );
    let store = Arc::new(MemoryStore::default());
    let options = ServiceOptions::new(Arc::clone(&store) as _, Transport::Builtin(http_client()));
    let config = Config::builder(provider).build().expect("config");
    let service = Service::unbound(rt.clone(), config, options).expect("service");
    let login = service
        .start_device(FlowOptions::new())
        .expect("a device login");
    let authorization = match within(rt, OUTCOME, "the user code", login.next_event()).await {
        Some(LoginEvent::UserCode(authorization)) => authorization,
        other => panic!("expected the user code, got {other:?}"),
    };
    // What oidc-provider sends (RFC 8628 §3.2), as latchkey hands it out.
    assert_eq!(
        authorization.verification_uri(),
        format!("{}/device", idp.issuer())
    );
    assert!(authorization.verification_uri_complete().is_some());
    assert_eq!(authorization.interval(), DEVICE_POLL);
    (service, login, authorization, store)
}

/// How the user acts on another device: at a verification URI, with the user code.
type Elsewhere = fn(&str, &str) -> Result<(), String>;

/// The user acts on another device (`elsewhere`, given the plain verification URI or the
/// complete one) within `limit`.
async fn on_another_device<R: Runtime>(
    rt: &R,
    authorization: &latchkey::DeviceAuthorization,
    complete: bool,
    limit: Duration,
    elsewhere: Elsewhere,
) {
    let uri = match complete {
        true => authorization.verification_uri_complete(),
        false => Some(authorization.verification_uri()),
    };
    let (uri, code) = (
        uri.expect("oidc-provider sends both URIs").to_owned(),
        authorization.user_code().to_owned(),
    );
    within(
        rt,
        limit,
        "the other device",
        rt.unblock(move || elsewhere(&uri, &code)),
    )
    .await
    .expect("the user's part on the other device");
}

/// S51 against oidc-provider: the user approves on another device (the scripted agent
/// types the code, signs in and consents) while latchkey polls at the provider's pace; the
/// verified tokens are stored, with a refresh token.
async fn s51_a_device_login_approved_on_another_device<R: Runtime>(rt: R) {
    let idp = provider(&rt).await;
    let (service, login, authorization, store) = device_login(&rt, &idp, BASIC).await;
    let started = rt.now();
    on_another_device(&rt, &authorization, false, OUTCOME * 3, |uri, code| {
        oidc_agent::approve_device(uri, code, oidc_agent::LOGIN)
    })
    .await;
    let tokens = within(&rt, DEVICE_POLL * 3, "the outcome", login.finished())
        .await
        .expect("tokens");
    assert!(
        rt.now() - started >= DEVICE_POLL,
        "no poll before the first interval"
    );
    assert_eq!(
        tokens.identity().map(|identity| identity.sub()),
        Some(oidc_agent::LOGIN)
    );
    assert!(tokens.refresh_token().is_some());
    let stored = store.load(DEFAULT_KEY).expect("store").expect("stored");
    assert_eq!(
        stored.access_token().expose_secret(),
        tokens.access_token().expose_secret()
    );
    service.shutdown().await;
}

/// The user aborts on the confirmation page: the next poll gets `access_denied`.
async fn a_device_login_aborted_on_another_device_is_access_denied<R: Runtime>(rt: R) {
    let idp = provider(&rt).await;
    let (service, login, authorization, store) = device_login(&rt, &idp, PUBLIC).await;
    on_another_device(&rt, &authorization, true, OUTCOME * 3, |uri, code| {
        oidc_agent::deny_device(uri, code, oidc_agent::LOGIN)
    })
    .await;
    let result = within(&rt, DEVICE_POLL * 3, "the outcome", login.finished()).await;
    match result {
        Err(latchkey_io::service::Error::Flow(FlowError::Denied(error))) => {
            assert_eq!(error.code, "access_denied");
        }
        other => panic!("expected access_denied, got {other:?}"),
    }
    assert!(store.load(DEFAULT_KEY).expect("store").is_none());
    service.shutdown().await;
}

/// The approval done by headless Chromium at the complete verification URI.
async fn device_login_in_chromium<R: Runtime>(rt: R) {
    oidc::require_browser_tools();
    let idp = provider(&rt).await;
    let (service, login, authorization, store) = device_login(&rt, &idp, PUBLIC).await;
    let chromium = Duration::from_secs(30);
    on_another_device(
        &rt,
        &authorization,
        true,
        chromium,
        oidc::approve_device_in_chromium,
    )
    .await;
    let tokens = within(&rt, DEVICE_POLL * 3, "the outcome", login.finished())
        .await
        .expect("tokens");
    assert_eq!(
        tokens.identity().map(|identity| identity.sub()),
        Some(oidc_agent::LOGIN)
    );
    assert!(store.load(DEFAULT_KEY).expect("store").is_some());
    service.shutdown().await;
}
