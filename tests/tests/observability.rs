//! What latchkey logs (issue: observability; S41): one process-wide `tracing` subscriber
//! captures everything, at trace level, while every scenario of a token's life runs over
//! real HTTP against the development identity provider, on both drivers: discovery, logins
//! (successful, denied, cancelled, with a forged callback at the listener), the token
//! source handing out, refreshing, refusing a replayed refresh token and failing to reach
//! the provider, and logging out. Then every secret that crossed the wire (each `state` and
//! `nonce`, code, verifier, client secret, access, refresh and ID token, every
//! `Authorization` header) is looked for in the log, and each step is looked for by name.
//!
//! One test in its own binary: the subscriber is global, because the drivers log from the
//! runtimes' threads.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use latchkey::{ClientAuth, Config, FlowError, FlowOptions, Landing, Provider, TokenSet};
use latchkey_devidp::{DevIdp, agent};
use latchkey_io::discovery::discover;
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::runtime::Runtime;
use latchkey_io::service::{Error, Service, ServiceOptions};
use latchkey_io::store::{DEFAULT_KEY, FileStore, MemoryStore, TokenStore};
use latchkey_io::transport::Transport;
use latchkey_tests::harness::{percent_decode, query_value};
use secrecy::{ExposeSecret, SecretString};
use tracing_subscriber::fmt::format::FmtSpan;

const CLIENT_ID: &str = "observed";
const SECRET: &str = "observed-client-SECRET-71c4";

/// The captured log.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        log.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber for the whole process: every level, spans' opening
/// and closing too.
fn capture() -> Log {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    log
}

/// The identity provider: one confidential client, any loopback port.
fn idp() -> DevIdp {
    let client = latchkey_devidp::Client {
        id: CLIENT_ID.into(),
        secret: Some(SECRET.into()),
        auth: latchkey_devidp::ClientAuth::Basic,
        redirect_uris: vec!["http://127.0.0.1/callback".into()],
    };
    DevIdp::start(
        latchkey_devidp::Config::new(vec![client]),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )
    .expect("start the identity provider")
}

fn transport() -> Transport {
    Transport::Builtin(HttpClient::new(HttpOptions::default()).expect("an HTTP client"))
}

/// Every secret seen, with what it is.
#[derive(Default)]
struct Secrets(Vec<(&'static str, String)>);

impl Secrets {
    fn add(&mut self, what: &'static str, value: &str) {
        assert!(
            value.len() >= 8,
            "{what} {value:?} is too short to look for"
        );
        self.0.push((what, value.to_owned()));
    }

    fn add_tokens(&mut self, tokens: &TokenSet) {
        self.add("access token", tokens.access_token().expose_secret());
        if let Some(refresh) = tokens.refresh_token() {
            self.add("refresh token", refresh.expose_secret());
        }
        if let Some(id_token) = tokens.id_token() {
            self.add("ID token", id_token.expose_secret());
        }
    }

    /// What crossed the wire to the identity provider: `state` of every authorization
    /// request, the secret parameters of every form, every `Authorization` header.
    fn add_wire(&mut self, idp: &DevIdp) {
        for request in idp.requests() {
            if request.target.starts_with("/authorize") {
                let state = query_value(&request.target, "state").expect("a state");
                self.add("state", &state);
                let nonce = query_value(&request.target, "nonce").expect("a nonce (openid)");
                self.add("nonce", &nonce);
            }
            let body = String::from_utf8_lossy(&request.body).into_owned();
            for pair in body.split('&') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                let what = match name {
                    "code" => "authorization code",
                    "code_verifier" => "PKCE verifier",
                    "client_secret" => "client secret",
                    "refresh_token" => "refresh token sent",
                    "token" => "token sent for revocation",
                    _ => continue,
                };
                self.add(what, &percent_decode(value));
            }
            for authorization in request.headers_named("authorization") {
                let credentials = authorization.trim_start_matches("Basic ");
                self.add("Authorization header", credentials);
            }
        }
    }
}

/// A login through `service`, the dev IdP's agent playing the browser.
async fn login<R: Runtime>(runtime: &R, service: &Service<R>) -> Result<TokenSet, Error> {
    let login = service.start(FlowOptions::new()).expect("a login");
    let url = login.url().expect("a browser login").to_owned();
    let (_, result) = futures_lite::future::zip(
        runtime.unblock(move || agent::browse(&url)),
        login.finished_within(runtime, Duration::from_secs(10)),
    )
    .await;
    result
}

fn config(provider: Provider) -> Config {
    Config::builder(provider)
        .redirect_uri("127.0.0.1", 0, "/callback")
        .on_success(Landing::Redirect("docker-desktop://dashboard/open".into()))
        .build()
        .expect("a valid configuration")
}

/// Discovery, then a successful login, a denied one, and one cancelled after a forged
/// callback reached the listener, on `runtime`.
async fn logins<R: Runtime>(
    runtime: R,
    idp: &DevIdp,
    store: Arc<dyn TokenStore>,
) -> (Provider, TokenSet) {
    let provider = discover(&runtime, &transport(), &idp.issuer(), CLIENT_ID)
        .await
        .expect("metadata")
        .client_secret(SecretString::from(SECRET))
        .client_auth(ClientAuth::SecretBasic)
        .scopes(["openid", "profile"])
        .build()
        .expect("a provider");
    let options = ServiceOptions::new(store, transport());
    let service =
        Service::bind(runtime.clone(), config(provider.clone()), options).expect("a service");
    let tokens = login(&runtime, &service).await.expect("tokens");

    idp.set_deny(true);
    let denied = login(&runtime, &service).await;
    assert!(
        matches!(denied, Err(Error::Flow(FlowError::Denied(_)))),
        "{denied:?}"
    );
    idp.set_deny(false);

    let pending = service.start(FlowOptions::new()).expect("a login");
    let forged = format!(
        "{}?code=forged-code-4411&state=forged-state-0000",
        service.redirect_uri()
    );
    let answer = runtime.unblock(move || agent::get(&forged, &[])).await;
    assert!(answer.expect("an answer").0 >= 400);
    pending.cancel();
    let cancelled = pending.finished().await;
    assert!(
        matches!(cancelled, Err(Error::Flow(FlowError::Cancelled))),
        "{cancelled:?}"
    );
    service.shutdown().await;
    (provider, tokens)
}

#[test]
fn s41_every_logged_step_of_a_tokens_life_is_free_of_secrets() {
    let log = capture();
    let idp = idp();
    let mut secrets = Secrets::default();
    secrets.add("client secret", SECRET);

    // Discovery and logins on both drivers.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = Arc::new(FileStore::new(dir.path().join("tokens.json")));
    let (provider, tokens) =
        smol::block_on(logins(latchkey_smol::Smol, &idp, Arc::clone(&file) as _));
    secrets.add_tokens(&tokens);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let memory = Arc::new(MemoryStore::default());
    let (_, tokio_tokens) = tokio.block_on(logins(
        latchkey_tokio::Tokio,
        &idp,
        Arc::clone(&memory) as _,
    ));
    secrets.add_tokens(&tokio_tokens);

    // The token source: still valid, refreshed, a replayed refresh token, logout.
    let source = latchkey_smol::TokenSource::new(
        latchkey_smol::Smol,
        provider.clone(),
        Arc::clone(&file) as _,
        transport(),
    );
    smol::block_on(async {
        let same = source.tokens().await.expect("the stored tokens");
        assert_eq!(
            same.access_token().expose_secret(),
            tokens.access_token().expose_secret()
        );
        let fresh = source.refresh().await.expect("refreshed");
        secrets.add_tokens(&fresh);

        let replay_store = Arc::new(MemoryStore::default());
        replay_store.save(DEFAULT_KEY, &tokens).expect("stored");
        let replaying = latchkey_smol::TokenSource::new(
            latchkey_smol::Smol,
            provider.clone(),
            replay_store,
            transport(),
        );
        let refused = replaying.refresh().await.expect_err("a rotated-out token");
        assert!(refused.login_required(), "{refused:?}");

        let logout = source.logout().await.expect("logged out");
        assert!(logout.fully_revoked(), "{logout:?}");
    });
    tokio.block_on(async {
        let unreachable = Provider::builder(
            "http://127.0.0.1:9/authorize",
            "http://127.0.0.1:9/token",
            CLIENT_ID,
        )
        .build()
        .expect("a provider");
        let source = latchkey_tokio::TokenSource::new(
            latchkey_tokio::Tokio,
            unreachable,
            Arc::clone(&memory) as _,
            transport(),
        );
        let failed = source.refresh().await.expect_err("nobody listens");
        assert!(
            matches!(failed, latchkey::SessionError::Transport(_)),
            "{failed:?}"
        );
    });
    secrets.add_wire(&idp);

    let text = log.text();
    for step in [
        // discovery
        "discovery",
        "provider metadata accepted",
        // a login, step by step, in its span
        "login service started",
        "login{flow=",
        "login started; waiting for the browser",
        "callback accepted; requesting tokens",
        "token endpoint answered",
        "tokens received; storing them",
        "tokens stored",
        "login finished",
        "login failed",
        "login ended",
        "browser request refused",
        "UnknownState",
        // the engine's own events (the core's `tracing` feature)
        "flow started",
        "flow moved on",
        "flow finished",
        // the token source
        "token_source{operation=\"tokens\"",
        "the stored tokens are still valid",
        "refreshing the tokens",
        "tokens refreshed",
        "rotated=true",
        "refresh refused; deleting the stored tokens",
        "the token endpoint could not be reached",
        "token revoked",
        "token=\"refresh_token\"",
        "token=\"access_token\"",
        "stored tokens deleted",
        // durations
        "elapsed=",
    ] {
        assert!(text.contains(step), "{step:?} was not logged:\n{text}");
    }
    assert!(
        secrets.0.len() >= 20,
        "too few secrets seen: {}",
        secrets.0.len()
    );
    for (what, secret) in &secrets.0 {
        assert!(
            !text.contains(secret.as_str()),
            "the {what} was logged:\n{text}"
        );
    }
}
