//! End-to-end tests of the two async drivers, `latchkey-smol` and `latchkey-tokio`: a real
//! loopback listener, the development identity provider (`latchkey-devidp`), its scripted
//! user agent as the browser, and real token stores. S11, S18, S21 and S27 are checked here
//! against the running drivers.
//!
//! Every scenario is written once, generic over [`Runtime`], and [`on_both_drivers!`] runs
//! it on each driver. Every wait has a deadline, so a bug fails a test instead of hanging it.

#[macro_use]
mod support;

use support::{Virtual, outcome, within};

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use latchkey::{
    ClientAuth, Config, FlowError, FlowOptions, Landing, Provider, StartError, Step, TokenSet,
    TokenType, TransportError, TransportErrorKind,
};
use latchkey_devidp::agent::{self, Hop};
use latchkey_devidp::{DevIdp, Quirk};
use latchkey_io::http::HttpClient;
use latchkey_io::opener::{self, Opener};
use latchkey_io::runtime::Runtime;
use latchkey_io::service;
use latchkey_io::service::{Error, Login, LoginEvent, Service, ServiceOptions};
use latchkey_io::store::{DEFAULT_KEY, FileStore, MemoryStore, TokenStore};
use latchkey_io::transport::{TokenResult, TokenTransport, Transport};
use secrecy::{ExposeSecret, SecretString};
use smol::future;

const CLIENT_ID: &str = "latchkey-e2e";
const SECRET: &str = "e2e-client-secret";
const SCOPES: [&str; 2] = ["openid", "profile"];
const CALLBACK_PATH: &str = "/callback";
const LANDING: &str = "docker-desktop://dashboard/open";

/// The longest any one step (a browse, a login's outcome, a shutdown) may take.
const STEP: Duration = Duration::from_secs(5);
/// The longest a whole scenario may take.
const SCENARIO: Duration = Duration::from_secs(20);

// ----- running a scenario on both drivers -----

on_both_drivers!(
    SCENARIO;
    success_basic,
    success_post_file_store,
    success_none,
    user_denies,
    s11_forged_callbacks_leave_the_flow_alone,
    s18_replayed_callback_is_refused,
    timeout_waiting_for_the_callback,
    token_endpoint_rejects_the_client,
    token_error_with_http_200,
    token_endpoint_unreachable,
    s21_port_in_use_fails_at_once,
    s21_port_zero_is_resolved_and_released,
    s21_shutdown_releases_the_port_before_returning,
    s27_junk_connections_during_a_login,
    one_call_login,
    an_embedders_own_http_client_carries_the_token_request,
    shutdown_cancels_every_login,
    dropping_the_service_cancels_its_login,
    an_application_redirect_binds_nothing_and_its_deep_link_completes_the_login,
    s19_a_login_nobody_completes_ends_at_its_lifetime_in_virtual_time,
    s20_a_login_started_for_an_owner_stores_its_tokens_under_that_owner,
    a_random_source_that_repeats_itself_is_a_start_error,
);

/// Runs blocking `work` on the runtime's blocking pool, so the driver's tasks keep running.
async fn blocking<R: Runtime, T: Send + 'static>(
    rt: &R,
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    within(rt, STEP, what, rt.unblock(work)).await
}

/// The agent follows `url` like a browser.
async fn browse<R: Runtime>(rt: &R, url: &str) -> Vec<Hop> {
    let url = url.to_owned();
    blocking(rt, "the browser", move || agent::browse(&url))
        .await
        .expect("the browser's navigation")
}

/// One raw GET, as another local program would send it.
async fn get<R: Runtime>(rt: &R, url: &str, headers: &[(&str, &str)]) -> agent::Response {
    let url = url.to_owned();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    blocking(rt, "a raw GET", move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        agent::get(&url, &headers)
    })
    .await
    .expect("a raw GET")
}

/// Every event of `login` up to and including `Finished`, within [`STEP`].
async fn events<R: Runtime>(rt: &R, login: &Login) -> Vec<LoginEvent> {
    support::events(rt, login, STEP).await
}

// ----- the fixture -----

/// How the client authenticates at the token endpoint, on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    Basic,
    Post,
    Public,
}

impl Auth {
    fn at_idp(self) -> latchkey_devidp::ClientAuth {
        match self {
            Auth::Basic => latchkey_devidp::ClientAuth::Basic,
            Auth::Post => latchkey_devidp::ClientAuth::Post,
            Auth::Public => latchkey_devidp::ClientAuth::None,
        }
    }

    fn in_latchkey(self) -> ClientAuth {
        match self {
            Auth::Basic => ClientAuth::SecretBasic,
            Auth::Post => ClientAuth::SecretPost,
            Auth::Public => ClientAuth::None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreKind {
    Memory,
    File,
}

/// What a scenario varies: the client's registration at the identity provider, what
/// latchkey is told, and where tokens go.
struct Setup {
    auth: Auth,
    /// The secret the identity provider registers (latchkey always uses [`SECRET`]).
    idp_secret: &'static str,
    quirk: Quirk,
    code_lifetime: Option<Duration>,
    /// Instead of the identity provider's own token endpoint.
    token_endpoint: Option<String>,
    store: StoreKind,
    /// Instead of latchkey's own HTTP client.
    transport: Option<Transport>,
}

/// A running identity provider and a latchkey service configured for it.
struct Fixture<R: Runtime> {
    idp: DevIdp,
    service: Service<R>,
    store: Arc<dyn TokenStore>,
    /// The token file, for [`StoreKind::File`].
    store_path: Option<PathBuf>,
    port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl Setup {
    fn new(auth: Auth) -> Setup {
        Setup {
            auth,
            idp_secret: SECRET,
            quirk: Quirk::None,
            code_lifetime: None,
            token_endpoint: None,
            store: StoreKind::Memory,
            transport: None,
        }
    }

    /// The identity provider, with one client whose redirect URI is `redirect_uri`.
    fn idp(&self, redirect_uri: &str) -> DevIdp {
        let client = latchkey_devidp::Client {
            id: CLIENT_ID.into(),
            secret: (self.auth != Auth::Public).then(|| self.idp_secret.to_owned()),
            auth: self.auth.at_idp(),
            redirect_uris: vec![redirect_uri.to_owned()],
        };
        let mut config = latchkey_devidp::Config::new(vec![client]);
        config.quirk = self.quirk;
        if let Some(lifetime) = self.code_lifetime {
            config.code_lifetime = lifetime;
        }
        DevIdp::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("start the identity provider")
    }

    /// latchkey's configuration for `idp`, redirecting to 127.0.0.1:`port`.
    fn config(&self, idp: &DevIdp, port: u16) -> Config {
        let token_endpoint = self
            .token_endpoint
            .clone()
            .unwrap_or_else(|| idp.token_endpoint());
        let mut provider =
            Provider::builder(idp.authorization_endpoint(), token_endpoint, CLIENT_ID)
                .scopes(SCOPES)
                .issuer(idp.issuer())
                .require_iss(true)
                .jwks_uri(idp.jwks_uri())
                .crypto(latchkey_io::crypto::ring())
                .client_auth(self.auth.in_latchkey());
        if self.auth != Auth::Public {
            provider = provider.client_secret(SecretString::from(SECRET));
        }
        let provider = provider.build().expect("provider");
        Config::builder(provider)
            .redirect_uri("127.0.0.1", port, CALLBACK_PATH)
            .on_success(Landing::Redirect(LANDING.into()))
            .build()
            .expect("config")
    }

    fn store(
        &self,
    ) -> (
        Arc<dyn TokenStore>,
        Option<PathBuf>,
        Option<tempfile::TempDir>,
    ) {
        match self.store {
            StoreKind::Memory => (Arc::new(MemoryStore::default()), None, None),
            StoreKind::File => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let path = dir.path().join("tokens.json");
                (Arc::new(FileStore::new(&path)), Some(path), Some(dir))
            }
        }
    }

    /// Binds the listener first to learn its port, registers that exact redirect URI at the
    /// identity provider, and starts the service on the listener.
    fn start<R: Runtime>(self, rt: &R) -> Fixture<R> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the listener");
        let port = listener.local_addr().expect("local address").port();
        let redirect_uri = format!("http://127.0.0.1:{port}{CALLBACK_PATH}");
        let idp = self.idp(&redirect_uri);
        let config = self.config(&idp, port);
        let (store, store_path, dir) = self.store();
        let options = ServiceOptions::new(
            store.clone(),
            self.transport.unwrap_or_else(support::transport),
        );
        let service = Service::from_listeners(rt.clone(), config, vec![listener], options)
            .expect("start the service");
        assert_eq!(service.redirect_uri(), redirect_uri);
        Fixture {
            idp,
            service,
            store,
            store_path,
            port,
            _dir: dir,
        }
    }
}

impl<R: Runtime> Fixture<R> {
    async fn start_login(&self) -> Login {
        self.service
            .start(FlowOptions::new())
            .expect("start a login")
    }

    fn stored(&self, key: &str) -> Option<TokenSet> {
        self.store.load(key).expect("read the store")
    }

    fn token_requests(&self) -> usize {
        self.idp.stats().token_requests
    }

    /// A callback URL on the listener with `query`.
    fn callback_url(&self, query: &str) -> String {
        format!("http://127.0.0.1:{}{CALLBACK_PATH}?{query}", self.port)
    }
}

fn memory_options() -> ServiceOptions {
    ServiceOptions::new(Arc::new(MemoryStore::default()), support::transport())
}

/// A configuration whose provider is never contacted, redirecting to 127.0.0.1:`port`.
fn bare_config(port: u16) -> Config {
    let provider = Provider::builder(
        "http://127.0.0.1:9/authorize",
        "http://127.0.0.1:9/token",
        CLIENT_ID,
    )
    .build()
    .expect("provider");
    Config::builder(provider)
        .redirect_uri("127.0.0.1", port, CALLBACK_PATH)
        .build()
        .expect("config")
}

fn header<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Form-encodes `value` (unreserved characters kept).
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

/// The parameter names of a form-encoded body.
fn form_names(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split('&')
        .map(|pair| pair.split('=').next().unwrap_or_default().to_owned())
        .collect()
}

/// A port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("local address").port()
}

/// The browser's path ends with the built-in failure page (no redirect, status 200).
fn assert_failure_page(hops: &[Hop], fx_port: u16) {
    let last = hops.last().expect("at least one hop");
    assert!(
        last.url
            .starts_with(&format!("http://127.0.0.1:{fx_port}{CALLBACK_PATH}?")),
        "{hops:?}"
    );
    assert_eq!(
        (last.status, last.location.as_deref()),
        (200, None),
        "{hops:?}"
    );
}

// ----- 1. success, for each client authentication method -----

async fn success_basic<R: Runtime>(rt: R) {
    succeeds(rt, Auth::Basic, StoreKind::Memory).await;
}

async fn success_post_file_store<R: Runtime>(rt: R) {
    succeeds(rt, Auth::Post, StoreKind::File).await;
}

async fn success_none<R: Runtime>(rt: R) {
    succeeds(rt, Auth::Public, StoreKind::Memory).await;
}

async fn succeeds<R: Runtime>(rt: R, auth: Auth, store: StoreKind) {
    let fx = Setup {
        store,
        ..Setup::new(auth)
    }
    .start(&rt);
    let login = fx.start_login().await;
    assert!(
        login
            .url()
            .expect("a browser login")
            .starts_with(&fx.idp.authorization_endpoint()),
        "{}",
        login.url().expect("a browser login")
    );
    let before = SystemTime::now();

    let hops = browse(&rt, login.url().expect("a browser login")).await;
    assert_eq!(hops.len(), 2, "{hops:?}");
    assert_eq!(hops[0].status, 303, "{hops:?}");
    let callback = hops[0]
        .location
        .as_deref()
        .expect("redirect to the callback");
    assert!(
        callback.starts_with(&format!("{}?", fx.service.redirect_uri())),
        "{hops:?}"
    );
    assert_eq!(hops[1].url, callback);
    assert_eq!(
        (hops[1].status, hops[1].location.as_deref()),
        (303, Some(LANDING)),
        "{hops:?}"
    );

    let events = events(&rt, &login).await;
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
    let tokens = outcome(&events).expect("tokens");
    assert_eq!(tokens.token_type(), &TokenType::Bearer);
    let ahead = tokens
        .expires_at()
        .expect("an expiry")
        .duration_since(before)
        .expect("an expiry in the future");
    assert!(
        (Duration::from_secs(3590)..=Duration::from_secs(3610)).contains(&ahead),
        "expires in {ahead:?}"
    );
    assert!(tokens.refresh_token().is_some());
    assert!(
        fx.idp
            .access_token_active(tokens.access_token().expose_secret())
    );

    let stored = fx
        .stored(DEFAULT_KEY)
        .expect("tokens stored under the default key");
    assert_eq!(
        stored.access_token().expose_secret(),
        tokens.access_token().expose_secret()
    );
    assert_eq!(
        stored.refresh_token().map(ExposeSecret::expose_secret),
        tokens.refresh_token().map(ExposeSecret::expose_secret)
    );
    if let Some(path) = &fx.store_path {
        assert!(path.is_file(), "{} missing", path.display());
    }

    let stats = fx.idp.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (1, 1));
    let request = fx.idp.last_token_request().expect("a token request");
    let names = form_names(&request.body);
    let has = |name: &str| names.iter().any(|n| n == name);
    let authorization = request.header("authorization");
    match auth {
        Auth::Basic => {
            assert!(
                authorization.is_some_and(|value| value.starts_with("Basic ")),
                "{authorization:?}"
            );
            assert!(!has("client_secret"), "{names:?}");
        }
        Auth::Post => {
            assert_eq!(authorization, None);
            assert!(has("client_id") && has("client_secret"), "{names:?}");
        }
        Auth::Public => {
            assert_eq!(authorization, None);
            assert!(has("client_id") && !has("client_secret"), "{names:?}");
        }
    }
    within(&rt, STEP, "shutdown", fx.service.shutdown()).await;
}

// ----- 2. the user denies -----

async fn user_denies<R: Runtime>(rt: R) {
    let fx = Setup::new(Auth::Public).start(&rt);
    fx.idp.set_deny(true);
    let login = fx.start_login().await;
    let hops = browse(&rt, login.url().expect("a browser login")).await;
    assert_failure_page(&hops, fx.port);
    match outcome(&events(&rt, &login).await) {
        Err(FlowError::Denied(error)) => assert_eq!(error.code, "access_denied"),
        other => panic!("expected a denial, got {other:?}"),
    }
    assert!(fx.stored(DEFAULT_KEY).is_none());
    assert_eq!(fx.token_requests(), 0);
}

// ----- 3. S11: forged callbacks from another local client -----

async fn s11_forged_callbacks_leave_the_flow_alone<R: Runtime>(rt: R) {
    let fx = Setup::new(Auth::Basic).start(&rt);
    let login = fx.start_login().await;
    let host = format!("127.0.0.1:{}", fx.port);
    let iss = form_encode(&fx.idp.issuer());
    for query in [
        format!("code=x&state=forged&iss={iss}"),
        format!("error=access_denied&state=forged&iss={iss}"),
    ] {
        let (status, _, body) = get(&rt, &fx.callback_url(&query), &[("Host", &host)]).await;
        assert_eq!(status, 400, "{query}");
        assert!(
            String::from_utf8_lossy(&body).contains("not recognised"),
            "{query}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // The flow noticed nothing: the forgeries were judged before they were answered.
    let quiet = login.next_event_by(&rt, rt.now()).await;
    assert!(quiet.is_err(), "the forgeries reached the flow: {quiet:?}");
    assert_eq!(fx.token_requests(), 0);

    let hops = browse(&rt, login.url().expect("a browser login")).await;
    assert_eq!(
        hops.last().and_then(|hop| hop.location.as_deref()),
        Some(LANDING)
    );
    outcome(&events(&rt, &login).await).expect("the real login succeeds");
    assert_eq!(fx.token_requests(), 1);
    assert!(fx.stored(DEFAULT_KEY).is_some());
}

// ----- 4. S18: a replayed callback -----

async fn s18_replayed_callback_is_refused<R: Runtime>(rt: R) {
    let fx = Setup::new(Auth::Post).start(&rt);
    let login = fx.start_login().await;
    // The authorization request by hand, to hold on to the callback URL.
    let (status, fields, _) = get(&rt, login.url().expect("a browser login"), &[]).await;
    assert_eq!(status, 303);
    let callback = header(&fields, "location").expect("a Location").to_owned();
    assert!(callback.starts_with(&format!("{}?code=", fx.service.redirect_uri())));

    let (status, fields, _) = get(&rt, &callback, &[]).await;
    assert_eq!((status, header(&fields, "location")), (303, Some(LANDING)));
    outcome(&events(&rt, &login).await).expect("the login succeeds");

    let (status, _, body) = get(&rt, &callback, &[]).await;
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("already used"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(fx.token_requests(), 1);
}

// ----- 5. nobody comes back -----

async fn timeout_waiting_for_the_callback<R: Runtime>(rt: R) {
    // Virtual time: the five minutes pass at once.
    let rt = Virtual::new(rt);
    let fx = Setup::new(Auth::Public).start(&rt);
    let login = fx.start_login().await;
    let started = rt.now();
    let (result, ()) = within(
        rt.real(),
        STEP,
        "finished_within",
        future::zip(
            login.finished_within(&rt, Duration::from_secs(300)),
            async {
                future::yield_now().await;
                rt.clock().advance(Duration::from_secs(300));
            },
        ),
    )
    .await;
    assert!(
        matches!(
            result,
            Err(Error::Flow(FlowError::TimedOut(Step::Callback)))
        ),
        "{result:?}"
    );
    assert_eq!(rt.now() - started, Duration::from_secs(300));
    assert_eq!(fx.idp.stats().authorize_requests, 0);
}

// ----- 6. the token endpoint refuses the client -----

async fn token_endpoint_rejects_the_client<R: Runtime>(rt: R) {
    let fx = Setup {
        idp_secret: "not-the-secret-latchkey-has",
        ..Setup::new(Auth::Basic)
    }
    .start(&rt);
    let login = fx.start_login().await;
    let hops = browse(&rt, login.url().expect("a browser login")).await;
    assert_failure_page(&hops, fx.port);
    match outcome(&events(&rt, &login).await) {
        Err(FlowError::TokenRejected { status, error }) => {
            assert_eq!((status, error.code.as_str()), (401, "invalid_client"));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(fx.token_requests(), 1);
    assert!(fx.stored(DEFAULT_KEY).is_none());
}

// ----- 7. an error with HTTP 200 (GitHub) -----

async fn token_error_with_http_200<R: Runtime>(rt: R) {
    let fx = Setup {
        quirk: Quirk::GitHub,
        code_lifetime: Some(Duration::ZERO),
        ..Setup::new(Auth::Post)
    }
    .start(&rt);
    let login = fx.start_login().await;
    let hops = browse(&rt, login.url().expect("a browser login")).await;
    assert_failure_page(&hops, fx.port);
    match outcome(&events(&rt, &login).await) {
        Err(FlowError::TokenRejected { status, error }) => {
            assert_eq!(
                (status, error.code.as_str()),
                (200, "bad_verification_code")
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(fx.stored(DEFAULT_KEY).is_none());
}

// ----- 8. the token endpoint cannot be reached -----

async fn token_endpoint_unreachable<R: Runtime>(rt: R) {
    let fx = Setup {
        token_endpoint: Some(format!("http://127.0.0.1:{}/token", dead_port())),
        ..Setup::new(Auth::Public)
    }
    .start(&rt);
    let login = fx.start_login().await;
    let hops = browse(&rt, login.url().expect("a browser login")).await;
    assert_failure_page(&hops, fx.port);
    match outcome(&events(&rt, &login).await) {
        Err(FlowError::Transport(error)) => {
            assert_eq!(error.kind(), TransportErrorKind::Connect, "{error}");
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert_eq!(fx.token_requests(), 0);
    assert!(fx.stored(DEFAULT_KEY).is_none());
}

// ----- 9. S21: the port -----

async fn s21_port_in_use_fails_at_once<R: Runtime>(rt: R) {
    let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = held.local_addr().expect("local address").port();
    let started = Instant::now();
    let result = Service::bind(rt.clone(), bare_config(port), memory_options());
    let took = started.elapsed();
    match result {
        Err(Error::Bind { addr, source }) => {
            assert_eq!(source.kind(), io::ErrorKind::AddrInUse, "{source}");
            assert_eq!(addr, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
            let message = Error::Bind { addr, source }.to_string();
            assert!(
                message.contains("another program uses the port"),
                "{message}"
            );
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
    assert!(took < Duration::from_secs(1), "{took:?}");
    drop(held);
}

async fn s21_port_zero_is_resolved_and_released<R: Runtime>(rt: R) {
    // Shut down gracefully.
    let service = Service::bind(rt.clone(), bare_config(0), memory_options()).expect("bind");
    let port = service.local_addrs()[0].port();
    assert_ne!(port, 0);
    assert_eq!(
        service.local_addrs(),
        [SocketAddr::from((Ipv4Addr::LOCALHOST, port))]
    );
    assert_eq!(
        service.redirect_uri(),
        format!("http://127.0.0.1:{port}{CALLBACK_PATH}")
    );
    // It really serves that port: a callback with no login in progress gets 404 (S31).
    let (status, _, _) = get(
        &rt,
        &format!("http://127.0.0.1:{port}{CALLBACK_PATH}?code=x&state=y"),
        &[],
    )
    .await;
    assert_eq!(status, 404);
    within(&rt, STEP, "shutdown", service.shutdown()).await;
    // `s21_shutdown_releases_the_port_before_returning` is the strict version.
    rebind_soon(&rt, port, "shut down").await;

    // Merely dropped: the port is released once the runtime has dropped the tasks.
    let service = Service::bind(rt.clone(), bare_config(0), memory_options()).expect("bind");
    let port = service.local_addrs()[0].port();
    drop(service);
    rebind_soon(&rt, port, "dropped").await;
}

/// Binds 127.0.0.1:`port` within a second, or fails naming how the service ended.
async fn rebind_soon<R: Runtime>(rt: &R, port: u16, ended: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(_) => return,
            Err(error) if Instant::now() >= deadline => {
                panic!("port {port} is still held 1 s after the service was {ended}: {error}")
            }
            Err(_) => {
                rt.sleep_until(Instant::now() + Duration::from_millis(5))
                    .await
            }
        }
    }
}

/// `Service::shutdown` promises that the listener is closed when it returns, so binding the
/// port right after must succeed. Repeated, because the failure is a race.
async fn s21_shutdown_releases_the_port_before_returning<R: Runtime>(rt: R) {
    for round in 0..50 {
        let service = Service::bind(rt.clone(), bare_config(0), memory_options()).expect("bind");
        let port = service.local_addrs()[0].port();
        within(&rt, STEP, "shutdown", service.shutdown()).await;
        if let Err(error) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            panic!("round {round}: port {port} is still held after shutdown returned: {error}");
        }
    }
}

// ----- 10. S27: junk connections while a login completes -----

const JUNK_CONNECTIONS: usize = 1000;
const JUNK_PARALLEL: usize = 50;
/// Connections opened first and left idle (sending nothing) while the junk runs: with the
/// junk in flight and the real browser, still below the default cap of 64.
const JUNK_IDLE: usize = 8;

/// What the junk connections got back.
#[derive(Debug, Default)]
struct JunkReport {
    /// Answers by status.
    answered: BTreeMap<u16, usize>,
    /// Closed without an answer.
    closed: usize,
    /// Answers that a junk request must not get, or I/O failures.
    wrong: Vec<String>,
}

/// A small deterministic generator (xorshift64*), for reproducible junk.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Connection `i` of the junk: its bytes and the status it must get (`None`: any refusal or
/// none; `Some(0)`: closed without an answer).
fn junk_request(i: usize, port: u16, rng: &mut Rng) -> (Vec<u8>, Option<u16>) {
    let ours = format!("127.0.0.1:{port}");
    match i % 6 {
        0 => {
            let len = 1 + rng.below(2048);
            ((0..len).map(|_| rng.next() as u8).collect(), None)
        }
        1 => {
            let mut head =
                format!("GET /callback?code=x&state=y HTTP/1.1\r\nHost: {ours}\r\nX-Pad: ")
                    .into_bytes();
            head.resize(head.len() + 16 * 1024, b'a');
            (head, Some(431))
        }
        2 => (
            format!("GET /callback?code=x&state=y HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n")
                .into_bytes(),
            Some(421),
        ),
        3 => (
            format!(
                "OPTIONS /callback HTTP/1.1\r\nHost: {ours}\r\nOrigin: http://evil.example\r\n\
                 Access-Control-Request-Method: GET\r\n\r\n"
            )
            .into_bytes(),
            Some(405),
        ),
        4 => (Vec::new(), Some(0)),
        _ => (
            format!("GET /favicon.ico HTTP/1.1\r\nHost: {ours}\r\n\r\n").into_bytes(),
            Some(404),
        ),
    }
}

/// Sends junk connection `i` and reads what comes back: `Ok(Some(status))`, or `Ok(None)`
/// when the listener closed without answering.
fn junk_connection(i: usize, port: u16, rng: &mut Rng) -> (io::Result<Option<u16>>, Option<u16>) {
    let (bytes, expected) = junk_request(i, port, rng);
    let result = (|| {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.set_write_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(&bytes)?;
        // The end of input: a head that is incomplete is closed at once.
        stream.shutdown(Shutdown::Write)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        if answer.is_empty() {
            return Ok(None);
        }
        let status = answer
            .strip_prefix(b"HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| std::str::from_utf8(code).ok())
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| io::Error::other("not an HTTP/1.1 response"))?;
        Ok(Some(status))
    })();
    (result, expected)
}

/// [`JUNK_CONNECTIONS`] junk connections, [`JUNK_PARALLEL`] at a time, counting each one
/// started in `started`.
fn junk(port: u16, started: &AtomicUsize) -> JunkReport {
    let idle: Vec<TcpStream> = (0..JUNK_IDLE)
        .filter_map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok())
        .collect();
    let next = AtomicUsize::new(0);
    let report = Mutex::new(JunkReport::default());
    thread::scope(|scope| {
        for worker in 0..JUNK_PARALLEL {
            let (next, report) = (&next, &report);
            scope.spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1));
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= JUNK_CONNECTIONS {
                        return;
                    }
                    started.fetch_add(1, Ordering::SeqCst);
                    let (result, expected) = junk_connection(i, port, &mut rng);
                    let mut report = report.lock().unwrap_or_else(|e| e.into_inner());
                    match (result, expected) {
                        (Ok(None), None | Some(0)) => report.closed += 1,
                        (Ok(Some(status)), Some(wanted)) if status == wanted => {
                            *report.answered.entry(status).or_default() += 1;
                        }
                        (Ok(Some(status @ (400 | 404 | 405 | 421 | 431))), None) => {
                            *report.answered.entry(status).or_default() += 1;
                        }
                        (result, expected) => report
                            .wrong
                            .push(format!("junk #{i}: got {result:?}, expected {expected:?}")),
                    }
                }
            });
        }
    });
    drop(idle);
    report.into_inner().unwrap_or_else(|e| e.into_inner())
}

async fn s27_junk_connections_during_a_login<R: Runtime>(rt: R) {
    let begun = Instant::now();
    let fx = Setup::new(Auth::Basic).start(&rt);
    let login = fx.start_login().await;
    let started = Arc::new(AtomicUsize::new(0));

    let port = fx.port;
    let counter = started.clone();
    let junk = rt.unblock(move || junk(port, &counter));
    let url = login.url().expect("a browser login").to_owned();
    let browsing = rt.unblock(move || {
        // Come back in the thick of it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while started.load(Ordering::SeqCst) < JUNK_CONNECTIONS / 3 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        agent::browse(&url)
    });
    let (report, hops) = within(
        &rt,
        Duration::from_secs(10),
        "the junk and the login",
        future::zip(junk, browsing),
    )
    .await;

    let hops = hops.expect("the browser's navigation");
    assert_eq!(
        hops.last().and_then(|hop| hop.location.as_deref()),
        Some(LANDING),
        "{hops:?}"
    );
    outcome(&events(&rt, &login).await).expect("the login succeeds once");
    assert_eq!(fx.token_requests(), 1);
    assert!(fx.stored(DEFAULT_KEY).is_some());

    assert!(report.wrong.is_empty(), "{:#?}", report.wrong);
    let answered: usize = report.answered.values().sum();
    assert_eq!(answered + report.closed, JUNK_CONNECTIONS, "{report:?}");
    for (status, kind) in [(431, 1), (421, 2), (405, 3), (404, 5)] {
        let expected = (0..JUNK_CONNECTIONS).filter(|i| i % 6 == kind).count();
        assert!(
            report.answered.get(&status).copied().unwrap_or(0) >= expected,
            "{status}: {report:?}"
        );
    }
    within(&rt, STEP, "shutdown", fx.service.shutdown()).await;
    let took = begun.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
}

// ----- 11. the one-call login -----

/// Plays the browser instead of launching one: browses the URL on a thread of its own.
#[derive(Default)]
struct AgentOpener {
    browsing: Mutex<Option<JoinHandle<io::Result<Vec<Hop>>>>>,
}

impl Opener for AgentOpener {
    fn open(&self, url: &str) -> io::Result<()> {
        opener::check_url(url)?;
        let url = url.to_owned();
        let browsing = thread::spawn(move || agent::browse(&url));
        *self.browsing.lock().unwrap_or_else(|e| e.into_inner()) = Some(browsing);
        Ok(())
    }
}

async fn one_call_login<R: Runtime>(rt: R) {
    let setup = Setup::new(Auth::Basic);
    // A loopback redirect URI registered without a port accepts any (RFC 8252 §7.3): the
    // port is only known once `login` has bound it.
    let idp = setup.idp(&format!("http://127.0.0.1{CALLBACK_PATH}"));
    let config = setup.config(&idp, 0);
    let store = Arc::new(MemoryStore::default());
    let options = ServiceOptions::new(store.clone(), support::transport());
    let browser = Arc::new(AgentOpener::default());
    let tokens = within(
        &rt,
        STEP,
        "login",
        service::login(
            rt.clone(),
            config,
            options,
            browser.clone() as Arc<dyn Opener>,
            Duration::from_secs(4),
        ),
    )
    .await
    .expect("the login succeeds");
    let browsing = browser
        .browsing
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("the opener was called");
    let hops = blocking(&rt, "the browser", move || browsing.join())
        .await
        .expect("the browser thread")
        .expect("the browser's navigation");
    assert_eq!(
        hops.last().and_then(|hop| hop.location.as_deref()),
        Some(LANDING),
        "{hops:?}"
    );
    assert!(idp.access_token_active(tokens.access_token().expose_secret()));
    let stored = store.load(DEFAULT_KEY).expect("read").expect("stored");
    assert_eq!(
        stored.access_token().expose_secret(),
        tokens.access_token().expose_secret()
    );
    assert_eq!(idp.stats().token_requests, 1);
}

// ----- 12. stopping the service -----

async fn shutdown_cancels_every_login<R: Runtime>(rt: R) {
    let fx = Setup::new(Auth::Public).start(&rt);
    let a = fx
        .service
        .start(FlowOptions::new().owner("a"))
        .expect("start a");
    let b = fx
        .service
        .start(FlowOptions::new().owner("b"))
        .expect("start b");
    assert_ne!(a.url(), b.url());
    within(&rt, STEP, "shutdown", fx.service.shutdown()).await;
    for login in [a, b] {
        let result = within(&rt, STEP, "the outcome", login.finished()).await;
        assert!(matches!(result, Err(Error::Stopped)), "{result:?}");
    }
    for key in ["a", "b", DEFAULT_KEY] {
        assert!(fx.store.load(key).expect("read").is_none(), "{key}");
    }
    assert_eq!(fx.idp.stats().token_requests, 0);
}

async fn dropping_the_service_cancels_its_login<R: Runtime>(rt: R) {
    let fx = Setup::new(Auth::Public).start(&rt);
    let login = fx.start_login().await;
    drop(fx.service);
    let result = within(&rt, STEP, "the outcome", login.finished()).await;
    assert!(matches!(result, Err(Error::Stopped)), "{result:?}");
}

// ----- an embedder's own HTTP client -----

/// An embedder's client: latchkey's own, driven on a thread of its own, counting requests.
struct CountingTransport {
    client: HttpClient,
    sent: Arc<AtomicUsize>,
}

impl TokenTransport for CountingTransport {
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn Future<Output = TokenResult> + Send>> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        let client = self.client.clone();
        let (answer, answered) = smol::channel::bounded(1);
        thread::spawn(move || {
            let _ = answer.send_blocking(support::send_blocking(&client, &request));
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
}

async fn an_embedders_own_http_client_carries_the_token_request<R: Runtime>(rt: R) {
    let sent = Arc::new(AtomicUsize::new(0));
    let Transport::Builtin(client) = support::transport() else {
        unreachable!("support::transport() is latchkey's own client");
    };
    let custom = CountingTransport {
        client,
        sent: Arc::clone(&sent),
    };
    let fx = Setup {
        transport: Some(Transport::Custom(Arc::new(custom))),
        ..Setup::new(Auth::Public)
    }
    .start(&rt);
    let login = fx.start_login().await;
    let hops = browse(&rt, login.url().expect("a browser login")).await;
    assert_eq!(
        hops.last().and_then(|hop| hop.location.as_deref()),
        Some(LANDING)
    );
    assert!(outcome(&events(&rt, &login).await).is_ok());
    assert_eq!(
        sent.load(Ordering::SeqCst),
        2,
        "the embedder's client sent the token request and the key-set fetch"
    );
    assert_eq!(fx.token_requests(), 1);
    within(&rt, STEP, "shutdown", fx.service.shutdown()).await;
}

// ----- an application redirect URI (Docker Desktop's extension tab) -----

async fn an_application_redirect_binds_nothing_and_its_deep_link_completes_the_login<R: Runtime>(
    rt: R,
) {
    const TAB: &str = "docker-desktop://dashboard/extension-tab?extensionId=acme/login";
    let client = latchkey_devidp::Client {
        id: CLIENT_ID.into(),
        secret: None,
        auth: latchkey_devidp::ClientAuth::None,
        redirect_uris: vec![TAB.into()],
    };
    let idp = DevIdp::start(
        latchkey_devidp::Config::new(vec![client]),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )
    .expect("start the identity provider");
    let provider = Provider::builder(
        idp.authorization_endpoint(),
        idp.token_endpoint(),
        CLIENT_ID,
    )
    .issuer(idp.issuer())
    .build()
    .expect("provider");
    let config = Config::builder(provider)
        .app_redirect_uri(TAB)
        .build()
        .expect("config");
    let service = Service::bind(rt.clone(), config, memory_options()).expect("no port to bind");
    assert!(service.local_addrs().is_empty());
    assert_eq!(service.redirect_uri(), TAB);
    let login = service.start(FlowOptions::new()).expect("start a login");
    // The browser stops at the deep link, which only Docker Desktop can open.
    let hops = browse(&rt, login.url().expect("a browser login")).await;
    let deep_link = hops
        .last()
        .and_then(|hop| hop.location.clone())
        .expect("the provider redirects");
    assert!(
        deep_link.starts_with(&format!("{TAB}&code=")),
        "{deep_link}"
    );

    let forged = deep_link.replace("state=", "state=forged");
    assert!(matches!(
        service.redirect(&forged),
        Err(Error::Callback(latchkey::Rejection::UnknownState))
    ));
    assert_eq!(service.redirect(&deep_link).ok(), Some(login.flow()));
    let tokens = outcome(&events(&rt, &login).await).expect("tokens");
    assert!(idp.access_token_active(tokens.access_token().expose_secret()));
    let token_request = idp.last_token_request().expect("a token request");
    let body = String::from_utf8_lossy(&token_request.body).into_owned();
    assert!(
        body.contains(&format!("redirect_uri={}", form_encode(TAB))),
        "{body}"
    );
    assert!(matches!(
        service.redirect(&deep_link),
        Err(Error::Callback(latchkey::Rejection::AlreadyUsed))
    ));
    service.shutdown().await;
}

// ----- the engine's own deadlines, the owner's key, the random source -----

/// S19 through the driver's timer: a login nobody completes ends when its lifetime (ten
/// minutes by default) has passed on the runtime's clock, and a late callback then gets the
/// "expired" page without a token request. Virtual time: the ten minutes pass at once.
async fn s19_a_login_nobody_completes_ends_at_its_lifetime_in_virtual_time<R: Runtime>(rt: R) {
    let rt = Virtual::new(rt);
    let fx = Setup::new(Auth::Basic).start(&rt);
    let login = fx.start_login().await;
    let url = login.url().expect("a browser login").to_owned();
    rt.clock().advance(Duration::from_secs(599));
    let early = within(
        rt.real(),
        STEP,
        "an event",
        login.next_event_by(&rt, rt.now()),
    )
    .await;
    assert!(
        early.is_err(),
        "nothing happens before the lifetime: {early:?}"
    );
    rt.clock().advance(Duration::from_secs(1));
    let result = within(rt.real(), STEP, "the outcome", login.finished()).await;
    assert!(
        matches!(
            result,
            Err(Error::Flow(FlowError::TimedOut(Step::Callback)))
        ),
        "{result:?}"
    );
    let hops = within(
        rt.real(),
        STEP,
        "the browser",
        rt.real().unblock(move || agent::browse(&url)),
    )
    .await
    .expect("the late browser's navigation");
    let last = hops.last().expect("a hop");
    assert_eq!(last.status, 410, "{hops:?}");
    assert_eq!(fx.token_requests(), 0);
}

/// The tokens of a login started for an owner (`FlowOptions::owner`) are stored under that
/// owner's key, not the default one.
async fn s20_a_login_started_for_an_owner_stores_its_tokens_under_that_owner<R: Runtime>(rt: R) {
    let fx = Setup::new(Auth::Basic).start(&rt);
    let login = fx
        .service
        .start(FlowOptions::new().owner("alice"))
        .expect("a login for alice");
    browse(&rt, login.url().expect("a browser login")).await;
    let tokens = within(&rt, STEP, "the outcome", login.finished())
        .await
        .expect("tokens");
    let stored = fx.stored("alice").expect("stored under alice");
    assert_eq!(
        stored.access_token().expose_secret(),
        tokens.access_token().expose_secret()
    );
    assert!(
        fx.stored(DEFAULT_KEY).is_none(),
        "nothing under the default key"
    );
}

/// A random source that gives the same bytes twice cannot start a second login: the
/// engine refuses, and the service says so with `Error::Start` (no flow, no browser).
async fn a_random_source_that_repeats_itself_is_a_start_error<R: Runtime>(rt: R) {
    let rt = Virtual::new(rt).with_entropy([7; latchkey::ENTROPY_LEN]);
    let fx = Setup::new(Auth::Basic).start(&rt);
    let first = fx
        .service
        .start(FlowOptions::new())
        .expect("the first login");
    let second = fx.service.start(FlowOptions::new());
    assert!(
        matches!(second, Err(Error::Start(StartError::ReusedEntropy))),
        "{second:?}"
    );
    assert!(
        second
            .unwrap_err()
            .to_string()
            .contains("entropy was reused")
    );
    first.cancel();
}
