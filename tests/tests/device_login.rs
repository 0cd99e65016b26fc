//! Logging in where no browser can be opened, end to end on both drivers: the device
//! authorization grant (RFC 8628) against the development identity provider's device
//! endpoint (its own rules and GitHub's quirks), and a callback pasted by the user sharing
//! its single use with the loopback port (S53).
//!
//! Polls run in real time at the shortest interval latchkey accepts (one second); the
//! expiry scenario runs in virtual time.

#[macro_use]
mod support;

use support::{Virtual, within};

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use latchkey::{
    Config, DeviceError, FlowError, FlowOptions, Provider, Rejection, StartError, Step, TokenSet,
};
use latchkey_devidp::agent;
use latchkey_devidp::{Client, ClientAuth, DevIdp, Quirk};
use latchkey_io::runtime::Runtime;
use latchkey_io::service::{Error, Login, LoginEvent, Service, ServiceOptions};
use latchkey_io::store::{DEFAULT_KEY, MemoryStore, TokenStore};

const CLIENT_ID: &str = "latchkey-device";
const CALLBACK_PATH: &str = "/callback";
/// The longest one step may take: a poll comes every second.
const STEP: Duration = Duration::from_secs(10);
const SCENARIO: Duration = Duration::from_secs(30);

on_both_drivers!(
    SCENARIO;
    a_device_login_stores_verified_tokens_once_the_user_approves,
    a_device_login_the_user_denies_ends_with_access_denied,
    a_device_login_against_githubs_quirks,
    s51_a_device_login_nobody_approves_expires_without_polling_on_in_virtual_time,
    a_provider_without_a_device_endpoint_cannot_start_a_device_login,
    s53_a_pasted_callback_and_the_browsers_share_one_token_request,
    s53_a_forged_or_malformed_paste_changes_nothing,
    device_logins_whose_polls_fall_due_together_all_poll_at_once,
);

/// The development identity provider with one public client, redirecting to `redirect_uri`.
fn idp(quirk: Quirk, redirect_uri: &str, expires_in: Duration) -> DevIdp {
    let client = Client {
        id: CLIENT_ID.into(),
        secret: None,
        auth: ClientAuth::None,
        redirect_uris: vec![redirect_uri.to_owned()],
    };
    let mut config = latchkey_devidp::Config::new(vec![client]);
    config.quirk = quirk;
    // The provider asks for no interval (latchkey then polls every second, its minimum)
    // and does not enforce one.
    config.device_interval = Duration::ZERO;
    config.device_expires_in = expires_in;
    DevIdp::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("start the IdP")
}

/// latchkey's provider description of `idp`: with its device endpoint (unless `device` is
/// false), and ID tokens verified where the IdP publishes OpenID Connect.
fn provider(idp: &DevIdp, openid: bool, device: bool) -> Provider {
    let mut builder = Provider::builder(
        idp.authorization_endpoint(),
        idp.token_endpoint(),
        CLIENT_ID,
    )
    .issuer(idp.issuer())
    .jwks_uri(idp.jwks_uri())
    .crypto(latchkey_io::crypto::ring())
    .scopes(if openid { vec!["openid"] } else { vec!["repo"] });
    if device {
        builder = builder.device_authorization_endpoint(idp.device_authorization_endpoint());
    }
    builder.build().expect("provider")
}

/// A service with no listener (device logins need none), storing into `store`.
fn unbound<R: Runtime>(rt: &R, provider: Provider, store: Arc<MemoryStore>) -> Service<R> {
    let config = Config::builder(provider).build().expect("config");
    Service::unbound(
        rt.clone(),
        config,
        ServiceOptions::new(store, support::transport()),
    )
    .expect("start the service")
}

/// The login's first event, which must be its user code.
async fn user_code<R: Runtime>(rt: &R, login: &Login) -> latchkey::DeviceAuthorization {
    match within(rt, STEP, "the user code", login.next_event()).await {
        Some(LoginEvent::UserCode(authorization)) => authorization,
        other => panic!("expected the user code first, got {other:?}"),
    }
}

/// The rest of the login's events, up to its outcome.
async fn rest<R: Runtime>(
    rt: &R,
    login: &Login,
) -> (Vec<&'static str>, Result<TokenSet, FlowError>) {
    let mut names = Vec::new();
    loop {
        match within(rt, STEP, "the next event", login.next_event()).await {
            Some(LoginEvent::Tokens(_)) => names.push("tokens"),
            Some(LoginEvent::Stored) => names.push("stored"),
            Some(LoginEvent::Finished(result)) => return (names, result),
            other => panic!("unexpected event {other:?}"),
        }
    }
}

/// A device login started against an identity provider of its own, up to its user code.
struct Device<R: Runtime> {
    idp: DevIdp,
    store: Arc<MemoryStore>,
    service: Service<R>,
    login: Login,
    authorization: latchkey::DeviceAuthorization,
}

impl<R: Runtime> Device<R> {
    /// Its codes live `expires_in`; ID tokens are verified unless the IdP plays GitHub,
    /// which publishes no OpenID Connect.
    async fn start(rt: &R, quirk: Quirk, expires_in: Duration) -> Device<R> {
        let idp = idp(quirk, "http://127.0.0.1:1/callback", expires_in);
        let store = Arc::new(MemoryStore::default());
        let openid = quirk == Quirk::None;
        let service = unbound(rt, provider(&idp, openid, true), Arc::clone(&store));
        let login = service
            .start_device(FlowOptions::new())
            .expect("a device login");
        assert_eq!(login.url(), None, "a device login has no authorization URL");
        let authorization = user_code(rt, &login).await;
        Device {
            idp,
            store,
            service,
            login,
            authorization,
        }
    }
}

/// Approves `code` as `user` at `idp`, as the user does on their phone.
fn approve(idp: &DevIdp, code: &str, user: &str) {
    assert!(
        idp.approve_device(code, user),
        "the IdP knows the user code"
    );
}

async fn a_device_login_stores_verified_tokens_once_the_user_approves<R: Runtime>(rt: R) {
    let Device {
        idp,
        store,
        service,
        login,
        authorization,
    } = Device::start(&rt, Quirk::None, Duration::from_secs(600)).await;
    assert_eq!(
        authorization.verification_uri(),
        format!("{}/device", idp.base_url())
    );
    assert_eq!(
        authorization.verification_uri_complete(),
        Some(
            format!(
                "{}/device?user_code={}",
                idp.base_url(),
                authorization.user_code()
            )
            .as_str()
        )
    );
    assert_eq!(authorization.interval(), Duration::from_secs(1));
    let left = authorization
        .expires_at()
        .duration_since(SystemTime::now())
        .expect("in the future");
    assert!(left > Duration::from_secs(590), "{left:?}");
    // The user takes a moment: the provider says `authorization_pending` meanwhile.
    rt.sleep_until(rt.now() + Duration::from_millis(1500)).await;
    approve(&idp, authorization.user_code(), "alice");
    let (events, result) = rest(&rt, &login).await;
    assert_eq!(events, ["tokens", "stored"]);
    let tokens = result.expect("tokens");
    let identity = tokens.identity().expect("the verified ID token's identity");
    assert_eq!(identity.sub(), "alice");
    let stored = store
        .load(DEFAULT_KEY)
        .expect("store")
        .expect("stored tokens");
    assert_eq!(stored.identity().map(|i| i.sub()), Some("alice"));
    let stats = idp.stats();
    assert!(stats.device_polls >= 2, "polled while pending: {stats:?}");
    assert_eq!(stats.tokens_issued, 1);
    service.shutdown().await;
}

async fn a_device_login_the_user_denies_ends_with_access_denied<R: Runtime>(rt: R) {
    let Device {
        idp,
        store,
        service,
        login,
        authorization,
    } = Device::start(&rt, Quirk::None, Duration::from_secs(600)).await;
    assert!(idp.deny_device(authorization.user_code()));
    let (events, result) = rest(&rt, &login).await;
    assert!(events.is_empty(), "{events:?}");
    match result {
        Err(FlowError::Denied(error)) => assert_eq!(error.code, "access_denied"),
        other => panic!("expected access_denied, got {other:?}"),
    }
    assert!(store.load(DEFAULT_KEY).expect("store").is_none());
    service.shutdown().await;
}

/// GitHub answers forms unless asked for JSON, reports `authorization_pending` with HTTP
/// 200, sends no `verification_uri_complete`, and publishes no OpenID Connect.
async fn a_device_login_against_githubs_quirks<R: Runtime>(rt: R) {
    let Device {
        idp,
        service,
        login,
        authorization,
        ..
    } = Device::start(&rt, Quirk::GitHub, Duration::from_secs(900)).await;
    assert_eq!(
        authorization.verification_uri(),
        format!("{}/login/device", idp.base_url())
    );
    assert_eq!(authorization.verification_uri_complete(), None);
    rt.sleep_until(rt.now() + Duration::from_millis(1500)).await;
    approve(&idp, authorization.user_code(), "octocat");
    let (events, result) = rest(&rt, &login).await;
    assert_eq!(events, ["tokens", "stored"]);
    assert!(result.expect("tokens").identity().is_none());
    assert!(idp.stats().device_polls >= 2);
    service.shutdown().await;
}

/// S51: once `expires_in` has passed the login ends as expired, and the provider is not
/// polled on: in virtual time, a ten-minute code costs at most one poll a second.
async fn s51_a_device_login_nobody_approves_expires_without_polling_on_in_virtual_time<
    R: Runtime,
>(
    rt: R,
) {
    let rt = Virtual::new(rt);
    let Device {
        idp,
        service,
        login,
        authorization,
        ..
    } = within(
        rt.real(),
        STEP,
        "the user code",
        Device::start(&rt, Quirk::None, Duration::from_secs(30)),
    )
    .await;
    assert_eq!(authorization.lifetime(), Duration::from_secs(30));
    // Nothing before the first interval (S51).
    rt.clock().advance(Duration::from_millis(999));
    let early = within(
        rt.real(),
        STEP,
        "an event",
        login.next_event_by(&rt, rt.now()),
    )
    .await;
    assert!(early.is_err(), "{early:?}");
    assert_eq!(
        idp.stats().device_polls,
        0,
        "no poll before the first interval"
    );
    rt.clock().advance(Duration::from_secs(31));
    let result = within(rt.real(), STEP, "the outcome", login.finished()).await;
    assert!(
        matches!(
            result,
            Err(Error::Flow(FlowError::Device(DeviceError::Expired)))
        ),
        "{result:?}"
    );
    assert!(idp.stats().device_polls <= 1, "{:?}", idp.stats());
    service.shutdown().await;
}

/// Ten device logins on one service, their polls due at the same instant (virtual time):
/// one timer fires for all, and every one of them polls then, each on its own task, not
/// one now and the others after a back-off.
async fn device_logins_whose_polls_fall_due_together_all_poll_at_once<R: Runtime>(rt: R) {
    const LOGINS: usize = 10;
    let rt = Virtual::new(rt);
    let idp = idp(
        Quirk::None,
        "http://127.0.0.1:1/callback",
        Duration::from_secs(600),
    );
    let store = Arc::new(MemoryStore::default());
    let service = unbound(&rt, provider(&idp, true, true), store);
    let mut logins = Vec::new();
    for _ in 0..LOGINS {
        let login = service
            .start_device(FlowOptions::new())
            .expect("a device login");
        within(rt.real(), STEP, "the user code", user_code(&rt, &login)).await;
        logins.push(login);
    }
    assert_eq!(idp.stats().device_polls, 0);
    // Every first poll is due one interval (a second) after its code arrived.
    rt.clock().advance(Duration::from_secs(1));
    let polled = within(rt.real(), STEP, "ten polls", async {
        loop {
            let polls = idp.stats().device_polls;
            if polls >= LOGINS {
                return polls;
            }
            rt.real()
                .sleep_until(rt.real().now() + Duration::from_millis(5))
                .await;
        }
    })
    .await;
    assert_eq!(
        polled, LOGINS,
        "one poll each, and no more before the next interval"
    );
    for login in &logins {
        login.cancel();
    }
    service.shutdown().await;
}

async fn a_provider_without_a_device_endpoint_cannot_start_a_device_login<R: Runtime>(rt: R) {
    let idp = idp(
        Quirk::None,
        "http://127.0.0.1:1/callback",
        Duration::from_secs(600),
    );
    let service = unbound(&rt, provider(&idp, true, false), Arc::default());
    let started = service.start_device(FlowOptions::new());
    assert!(
        matches!(started, Err(Error::Start(StartError::NoDeviceEndpoint))),
        "{started:?}"
    );
    // An unbound service cannot start a browser login either: it has no port.
    let started = service.start(FlowOptions::new());
    assert!(
        matches!(
            started,
            Err(Error::Start(StartError::UnresolvedRedirectPort))
        ),
        "{started:?}"
    );
    assert_eq!(idp.stats().requests, 0);
    service.shutdown().await;
}

/// A browser login whose callback the test delivers itself: the service on a listener, and
/// the IdP's redirect back to it.
struct Pasting<R: Runtime> {
    idp: DevIdp,
    service: Service<R>,
    login: Login,
    /// Where the provider sent the browser back: the address to paste.
    callback: String,
}

impl<R: Runtime> Pasting<R> {
    async fn start(rt: &R) -> Pasting<R> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("address").port();
        let redirect_uri = format!("http://127.0.0.1:{port}{CALLBACK_PATH}");
        let idp = idp(Quirk::None, &redirect_uri, Duration::from_secs(600));
        let config = Config::builder(provider(&idp, true, false))
            .redirect_uri("127.0.0.1", port, CALLBACK_PATH)
            .build()
            .expect("config");
        let options = ServiceOptions::new(Arc::new(MemoryStore::default()), support::transport());
        let service = Service::from_listeners(rt.clone(), config, vec![listener], options)
            .expect("start the service");
        let login = service.start(FlowOptions::new()).expect("a login");
        // The user signs in on another machine; its browser is sent back to this one's
        // port, which it cannot reach there. The address bar shows where it went.
        let url = login.url().expect("a browser login").to_owned();
        let (_, fields, _) = within(
            rt,
            STEP,
            "the sign-in",
            rt.unblock(move || agent::get(&url, &[])),
        )
        .await
        .expect("the authorization request");
        let callback = fields
            .into_iter()
            .find_map(|(name, value)| name.eq_ignore_ascii_case("location").then_some(value))
            .expect("the IdP redirects back");
        assert!(callback.starts_with(&redirect_uri), "{callback}");
        Pasting {
            idp,
            service,
            login,
            callback,
        }
    }
}

/// S53: whichever arrives first, the pasted address or the browser's own request, makes the
/// one token request; the other is refused as already used.
async fn s53_a_pasted_callback_and_the_browsers_share_one_token_request<R: Runtime>(rt: R) {
    // The paste first, then the browser (it reached the port after all).
    let fx = Pasting::start(&rt).await;
    let flow = fx
        .service
        .redirect(&fx.callback)
        .expect("the paste is accepted");
    assert_eq!(flow, fx.login.flow());
    let callback = fx.callback.clone();
    let (status, _, _) = within(
        &rt,
        STEP,
        "the browser",
        rt.unblock(move || agent::get(&callback, &[])),
    )
    .await
    .expect("the browser's request");
    assert!(status >= 400, "the browser's callback is refused: {status}");
    let again = fx.service.redirect(&fx.callback);
    assert!(
        matches!(again, Err(Error::Callback(Rejection::AlreadyUsed))),
        "a second paste is refused: {again:?}"
    );
    let tokens = within(&rt, STEP, "the outcome", fx.login.finished()).await;
    assert!(tokens.is_ok(), "{tokens:?}");
    assert_eq!(fx.idp.stats().token_requests, 1);
    fx.service.shutdown().await;

    // The browser first, then the paste.
    let fx = Pasting::start(&rt).await;
    let callback = fx.callback.clone();
    let hops = within(
        &rt,
        STEP,
        "the browser",
        rt.unblock(move || agent::browse(&callback)),
    )
    .await
    .expect("the browser's request");
    assert_eq!(hops[0].status, 200, "{hops:?}");
    let tokens = within(&rt, STEP, "the outcome", fx.login.finished()).await;
    assert!(tokens.is_ok(), "{tokens:?}");
    let pasted = fx.service.redirect(&fx.callback);
    assert!(
        matches!(pasted, Err(Error::Callback(Rejection::AlreadyUsed))),
        "the paste after the browser is refused: {pasted:?}"
    );
    assert_eq!(fx.idp.stats().token_requests, 1);
    fx.service.shutdown().await;
}

/// S53: a paste is judged like a callback on the port: another `state`, no state or a
/// repeated one is turned away; the login's state with a defect ends the login; a spent
/// state is refused.
async fn s53_a_forged_or_malformed_paste_changes_nothing<R: Runtime>(rt: R) {
    let fx = Pasting::start(&rt).await;
    let (base, query) = fx.callback.split_once('?').expect("a query");
    let state = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("state="))
        .expect("a state");
    // Another state, or none: turned away, the login goes on waiting.
    for paste in [
        format!("{base}?code=forged&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        format!("{base}?code=forged"),
        format!("{base}?state={state}&state={state}&code=forged"),
    ] {
        let refused = fx.service.redirect(&paste);
        assert!(
            matches!(refused, Err(Error::Callback(_))),
            "{paste}: {refused:?}"
        );
    }
    // The login's state with a repeated code: judged by the login, which it ends (S15), as
    // the same request on the port would.
    let judged = fx.service.redirect(&format!("{base}?{query}&code=second"));
    assert_eq!(judged.ok(), Some(fx.login.flow()));
    let outcome = within(&rt, STEP, "the outcome", fx.login.finished()).await;
    assert!(
        matches!(outcome, Err(Error::Flow(FlowError::InvalidCallback(_)))),
        "{outcome:?}"
    );
    // Its state is spent: the real address, pasted now, is refused.
    let late = fx.service.redirect(&fx.callback);
    assert!(
        matches!(late, Err(Error::Callback(Rejection::AlreadyUsed))),
        "{late:?}"
    );
    assert_eq!(fx.idp.stats().token_requests, 0);
    fx.service.shutdown().await;
}

/// The step a device login waits in is named after the approval (for timeouts).
#[test]
fn a_device_logins_steps_are_named() {
    assert_eq!(
        LoginEvent::UserCode(dummy_authorization()).step(),
        Some(Step::Approval)
    );
}

/// A device authorization as the engine hands it out, from a literal answer.
fn dummy_authorization() -> latchkey::DeviceAuthorization {
    use latchkey::http1::ResponseReader;
    use latchkey::{Action, Engine};
    let provider = Provider::builder("https://idp.example/a", "https://idp.example/t", "c")
        .device_authorization_endpoint("https://idp.example/d")
        .build()
        .expect("provider");
    let mut engine =
        Engine::new(Config::builder(provider).build().expect("config")).expect("engine");
    let now = std::time::Instant::now();
    engine
        .start_device(now, FlowOptions::new())
        .expect("device login");
    let Some(Action::RequestDeviceCode { exchange, .. }) = engine.poll_action() else {
        panic!("a device authorization request");
    };
    let body = r#"{"device_code":"d","user_code":"U","verification_uri":"https://idp.example/v"}"#;
    let raw = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = ResponseReader::new(4096)
        .read(raw.as_bytes())
        .expect("read")
        .expect("whole");
    engine.handle_token_response(now, SystemTime::now(), exchange, response);
    let Some(Action::ShowUserCode { authorization, .. }) = engine.poll_action() else {
        panic!("the user code");
    };
    authorization
}
