//! The device authorization grant (RFC 8628) in virtual time: the requests, the polling
//! rules (S51), what providers send and which of it is refused (S52), how a device login
//! ends, and how it lives beside browser logins in one engine. Every instant is set by the
//! test; nothing sleeps.

use std::time::Duration;

use latchkey::device::{DEFAULT_INTERVAL, MAX_BACKOFF, MIN_INTERVAL, SLOW_DOWN_STEP};
use latchkey::oidc::{Algorithm, IdTokenError};
use latchkey::{
    Action, BadTokenResponse, ClientAuth, Config, DeviceAuthorization, DeviceError, Engine,
    ExchangeId, FlowError, FlowId, FlowOptions, Provider, StartError, Step, StoreError,
    TransportError, TransportErrorKind,
};
use latchkey_tests::device_model::{
    self, DEVICE_ENDPOINT, USER_CODE, VERIFICATION_URI, answer, form_response, http_date,
    oauth_error, poll_body,
};
use latchkey_tests::harness::{self, Harness, json_response, parse_response, token_request};
use latchkey_tests::id_token_vectors::{self, Vectors};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const DEVICE_CODE: &str = "GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS";
const MS: Duration = Duration::from_millis(1);

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// An engine for the device-capable test provider (public client `latchkey-test`, scopes
/// `openid email`).
fn harness() -> Harness {
    harness_with(device_model::provider().build().unwrap())
}

fn harness_with(provider: Provider) -> Harness {
    Harness::with(harness::config_with(provider).build().unwrap())
}

/// The RFC 8628 §3.2 example answer, with `changes` (`None` removes a member).
fn code_with(changes: &[(&str, Option<Value>)]) -> Vec<u8> {
    let mut members = json!({
        "device_code": DEVICE_CODE,
        "user_code": USER_CODE,
        "verification_uri": VERIFICATION_URI,
        "verification_uri_complete": format!("{VERIFICATION_URI}?user_code={USER_CODE}"),
        "expires_in": 1800,
        "interval": 5,
    });
    for (name, value) in changes {
        match value {
            Some(value) => members[*name] = value.clone(),
            None => {
                members.as_object_mut().unwrap().remove(*name);
            }
        }
    }
    json_response(200, &members.to_string())
}

fn code() -> Vec<u8> {
    code_with(&[])
}

/// Starts a device login: its id, and its device authorization request.
fn start(h: &mut Harness) -> (FlowId, ExchangeId, http::Request<Vec<u8>>) {
    start_with(h, FlowOptions::new())
}

fn start_with(
    h: &mut Harness,
    options: FlowOptions,
) -> (FlowId, ExchangeId, http::Request<Vec<u8>>) {
    let flow = h
        .engine
        .start_device(h.now, options)
        .expect("a device endpoint");
    match &h.drain()[..] {
        [
            Action::RequestDeviceCode {
                flow: f,
                exchange,
                request,
            },
        ] if *f == flow => (flow, *exchange, request.request().clone()),
        other => panic!("start_device emits RequestDeviceCode alone: {other:?}"),
    }
}

/// What `actions` show the user for `flow`.
fn shown(actions: &[Action], flow: FlowId) -> DeviceAuthorization {
    match actions {
        [
            Action::ShowUserCode {
                flow: f,
                authorization,
            },
        ] if *f == flow => authorization.clone(),
        other => panic!("the code answer shows the user code alone: {other:?}"),
    }
}

/// A device login that got the code `raw`: its id and what it showed.
fn polling_with(h: &mut Harness, raw: &[u8]) -> (FlowId, DeviceAuthorization) {
    let (flow, exchange, _) = start(h);
    let actions = h.token_response(exchange, raw);
    (flow, shown(&actions, flow))
}

/// A device login that got [`code`] (interval 5 s, 30 minutes).
fn polling(h: &mut Harness) -> FlowId {
    polling_with(h, &code()).0
}

/// The flow's outcome among `actions`, if it finished.
fn outcome(actions: &[Action], flow: FlowId) -> Option<Result<(), FlowError>> {
    actions.iter().find_map(|action| match action {
        Action::Finished { flow: f, result } if *f == flow => {
            Some(result.as_ref().map(drop).map_err(Clone::clone))
        }
        _ => None,
    })
}

/// Checks that the engine polls exactly `wait` from now (its deadline says so, nothing
/// happens a millisecond before, a poll at it) and returns the poll.
fn poll_after(h: &mut Harness, wait: Duration) -> (ExchangeId, http::Request<Vec<u8>>) {
    assert_eq!(
        h.engine.poll_timeout().map(|at| at - h.now),
        Some(wait),
        "the next poll's deadline"
    );
    let early = h.advance(wait - MS);
    assert!(early.is_empty(), "nothing before {wait:?}: {early:?}");
    match &h.advance(MS)[..] {
        [
            Action::SendTokenRequest {
                exchange, request, ..
            },
        ] => (*exchange, request.request().clone()),
        other => panic!("one poll after {wait:?}, got {other:?}"),
    }
}

/// Answers poll `exchange` with `raw`; nothing may come of it but a wait.
fn keep_waiting(h: &mut Harness, exchange: ExchangeId, raw: &[u8]) {
    let actions = h.token_response(exchange, raw);
    assert!(actions.is_empty(), "{actions:?}");
}

/// The flow is over: no action, no deadline, nothing in progress, however long we wait.
fn assert_over(h: &mut Harness) {
    assert_eq!(h.engine.flows_in_progress(), 0);
    assert_eq!(h.engine.poll_timeout(), None);
    assert!(h.advance(secs(3600)).is_empty());
}

fn transport_error() -> TransportError {
    TransportError::new(TransportErrorKind::TimedOut, "no answer")
}

fn body(request: &http::Request<Vec<u8>>) -> &str {
    std::str::from_utf8(request.body()).unwrap()
}

fn tokens() -> Vec<u8> {
    json_response(
        200,
        r#"{"access_token":"at-device-1","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-device-1","scope":"openid email"}"#,
    )
}

// ===== the requests =====

#[test]
fn the_device_authorization_request_asks_for_the_scope_and_for_json() {
    let mut h = harness();
    let (_, _, request) = start(&mut h);
    assert_eq!(request.method(), http::Method::POST);
    assert_eq!(request.uri(), DEVICE_ENDPOINT);
    assert_eq!(body(&request), "scope=openid+email&client_id=latchkey-test");
    let headers = request.headers();
    assert_eq!(
        headers[http::header::CONTENT_TYPE],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(headers[http::header::ACCEPT], "application/json");
    assert!(headers.get(http::header::AUTHORIZATION).is_none());
}

#[test]
fn s33_the_device_authorization_request_and_the_polls_authenticate_like_a_token_request() {
    for auth in [
        ClientAuth::None,
        ClientAuth::SecretBasic,
        ClientAuth::SecretPost,
    ] {
        let mut builder = device_model::provider().client_auth(auth);
        if auth != ClientAuth::None {
            builder = builder.client_secret("s3cr3t-client".to_owned().into());
        }
        let mut h = harness_with(builder.build().unwrap());
        // A browser login's code exchange, for comparison.
        let started = h.start();
        let (_, _, exchange) = h.to_exchange(&started);
        let credentials = body(&exchange)
            .split_once("&client_id=")
            .map(|(_, rest)| format!("&client_id={rest}"))
            .unwrap_or_default();
        let authorization = exchange.headers().get(http::header::AUTHORIZATION);

        let (_, x, request) = start(&mut h);
        assert_eq!(
            body(&request),
            format!("scope=openid+email{credentials}"),
            "{auth:?}"
        );
        assert_eq!(
            request.headers().get(http::header::AUTHORIZATION),
            authorization,
            "{auth:?}"
        );
        assert!(
            request
                .headers()
                .get(http::header::AUTHORIZATION)
                .is_none_or(http::HeaderValue::is_sensitive)
        );
        h.token_response(x, &code());
        let (_, poll) = poll_after(&mut h, secs(5));
        assert_eq!(
            body(&poll),
            format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code\
                 &device_code={DEVICE_CODE}{credentials}"
            ),
            "{auth:?}"
        );
        assert_eq!(
            poll.headers().get(http::header::AUTHORIZATION),
            authorization
        );
        assert_eq!(poll.headers()[http::header::ACCEPT], "application/json");
        assert_eq!(poll.uri(), harness::TOKEN);
    }
}

// ===== S51: the polling rules =====

#[test]
fn s51_no_poll_before_the_first_interval() {
    let mut h = harness();
    let (flow, exchange, _) = start(&mut h);
    // The code arrives 3 s after the request: the interval counts from then.
    h.advance(secs(3));
    let authorization = shown(&h.token_response(exchange, &code()), flow);
    assert_eq!(authorization.interval(), secs(5));
    let (_, request) = poll_after(&mut h, secs(5));
    assert_eq!(body(&request), poll_body(DEVICE_CODE));
}

#[test]
fn s51_authorization_pending_keeps_the_interval() {
    let mut h = harness();
    polling(&mut h);
    let (mut exchange, _) = poll_after(&mut h, secs(5));
    for answer_after in [0, 2, 4] {
        // The wait counts from the answer, however long the poll took.
        h.advance(secs(answer_after));
        keep_waiting(&mut h, exchange, &oauth_error(400, "authorization_pending"));
        exchange = poll_after(&mut h, secs(5)).0;
    }
}

#[test]
fn s51_slow_down_adds_five_seconds_to_this_and_every_later_poll() {
    let mut h = harness();
    polling(&mut h);
    let (mut exchange, _) = poll_after(&mut h, secs(5));
    for (answer, next) in [
        ("slow_down", 10),
        ("authorization_pending", 10),
        ("slow_down", 15),
        ("slow_down", 20),
        ("authorization_pending", 20),
        ("authorization_pending", 20),
    ] {
        keep_waiting(&mut h, exchange, &oauth_error(400, answer));
        exchange = poll_after(&mut h, secs(next)).0;
    }
    assert_eq!(SLOW_DOWN_STEP, secs(5));
}

#[test]
fn s51_github_slow_down_names_the_new_interval_in_a_form_at_http_200() {
    let mut h = harness_with(
        latchkey::presets::github("Iv1.8a61f9b3a7aba766")
            .build()
            .unwrap(),
    );
    // GitHub's answers are forms unless asked otherwise, errors with HTTP 200.
    let (flow, authorization) = polling_with(
        &mut h,
        &form_response(
            200,
            "device_code=3584d83530557fdd1f46af8289938c8ef79f9dc5&user_code=WDJB-MJHT\
             &verification_uri=https%3A%2F%2Fgithub.com%2Flogin%2Fdevice&expires_in=899&interval=5",
        ),
    );
    assert_eq!(
        authorization.verification_uri(),
        "https://github.com/login/device"
    );
    assert_eq!(authorization.lifetime(), secs(899));
    let github = |code: &str, interval: &str| {
        form_response(
            200,
            &format!(
                "error={code}&error_description=Too+many+requests+have+been+made+in+the+same+\
                 timeframe.&error_uri=https%3A%2F%2Fdocs.github.com{interval}"
            ),
        )
    };
    let (exchange, request) = poll_after(&mut h, secs(5));
    assert_eq!(request.uri(), "https://github.com/login/oauth/access_token");
    // The named interval when longer than the interval plus 5 s…
    keep_waiting(&mut h, exchange, &github("slow_down", "&interval=12"));
    let (exchange, _) = poll_after(&mut h, secs(12));
    // …the interval plus 5 s when longer than the named one.
    keep_waiting(&mut h, exchange, &github("slow_down", "&interval=13"));
    let (exchange, _) = poll_after(&mut h, secs(17));
    keep_waiting(&mut h, exchange, &github("authorization_pending", ""));
    let (exchange, _) = poll_after(&mut h, secs(17));
    let actions = h.token_response(
        exchange,
        &form_response(
            200,
            "access_token=gho_16C7e42F292c6912E7710c838347Ae178B4a&token_type=bearer&scope=",
        ),
    );
    assert!(matches!(&actions[..], [Action::Persist { flow: f, .. }] if *f == flow));
}

#[test]
fn s51_5xx_and_429_back_off_doubling_up_to_a_minute() {
    let html = |status: u16| {
        answer(
            status,
            "text/html",
            &[],
            "<html><body><h1>Service Unavailable</h1></body></html>",
        )
    };
    for status in [500, 502, 503, 504, 429] {
        let mut h = harness();
        polling(&mut h);
        let (mut exchange, _) = poll_after(&mut h, secs(5));
        for wait in [10, 20, 40, 60, 60] {
            keep_waiting(&mut h, exchange, &html(status));
            exchange = poll_after(&mut h, secs(wait)).0;
        }
        // An answer resets the back-off.
        keep_waiting(&mut h, exchange, &oauth_error(400, "authorization_pending"));
        exchange = poll_after(&mut h, secs(5)).0;
        keep_waiting(&mut h, exchange, &html(status));
        poll_after(&mut h, secs(10));
    }
    assert_eq!(MAX_BACKOFF, secs(60));
}

#[test]
fn s51_temporarily_unavailable_backs_off_too() {
    let mut h = harness();
    polling(&mut h);
    let (exchange, _) = poll_after(&mut h, secs(5));
    keep_waiting(
        &mut h,
        exchange,
        &oauth_error(400, "temporarily_unavailable"),
    );
    let (exchange, _) = poll_after(&mut h, secs(10));
    // A 5xx with an OAuth error the device grant does not name waits as well.
    keep_waiting(&mut h, exchange, &oauth_error(500, "server_error"));
    poll_after(&mut h, secs(20));
}

#[test]
fn s51_a_429_with_an_oauth_error_backs_off_like_a_5xx() {
    for raw in [
        answer(
            429,
            "application/json",
            &["Retry-After: 30"],
            r#"{"error":"too_many_requests","error_description":"Too many requests"}"#,
        ),
        answer(
            429,
            "application/json",
            &["Retry-After: 30"],
            r#"{"statusCode":429,"error":"Too Many Requests","message":"Global limit has been reached"}"#,
        ),
    ] {
        let mut h = harness();
        let flow = polling(&mut h);
        let (exchange, _) = poll_after(&mut h, secs(5));
        let actions = h.token_response(exchange, &raw);
        assert_eq!(outcome(&actions, flow), None, "{actions:?}");
        poll_after(&mut h, secs(30));
    }
}

#[test]
fn s51_an_interval_longer_than_a_minute_is_the_back_off_ceiling() {
    let mut h = harness();
    polling_with(&mut h, &code_with(&[("interval", Some(json!(90)))]));
    let (exchange, _) = poll_after(&mut h, secs(90));
    keep_waiting(
        &mut h,
        exchange,
        &oauth_error(503, "temporarily_unavailable"),
    );
    poll_after(&mut h, secs(90));
}

#[test]
fn s51_retry_after_is_honoured_as_seconds_and_as_an_http_date() {
    let busy = |retry_after: &str| {
        answer(
            503,
            "text/html",
            &[&format!("Retry-After: {retry_after}")],
            "<html>busy</html>",
        )
    };
    let mut h = harness();
    polling(&mut h);
    let (exchange, _) = poll_after(&mut h, secs(5));
    keep_waiting(&mut h, exchange, &busy("120"));
    let (exchange, _) = poll_after(&mut h, secs(120));
    // 90 s from now as a date (the wall clock is on a whole second here).
    let date = http_date(h.wall + secs(90));
    keep_waiting(&mut h, exchange, &busy(&date));
    let (exchange, _) = poll_after(&mut h, secs(90));
    // Shorter than the back-off (the third failure in a row: 40 s): the back-off wins.
    keep_waiting(&mut h, exchange, &busy("1"));
    let (exchange, _) = poll_after(&mut h, secs(40));
    // A date in the past, or one that cannot be read, asks for no wait at all.
    let past = http_date(h.wall - secs(3600));
    keep_waiting(&mut h, exchange, &busy(&past));
    let (exchange, _) = poll_after(&mut h, secs(60));
    keep_waiting(&mut h, exchange, &busy("soon"));
    let (exchange, _) = poll_after(&mut h, secs(60));
    // A 429 says it the same way.
    keep_waiting(
        &mut h,
        exchange,
        &answer(429, "application/json", &["Retry-After: 75"], "{}"),
    );
    poll_after(&mut h, secs(75));
}

#[test]
fn s51_a_transport_failure_backs_off() {
    let mut h = harness();
    let flow = polling(&mut h);
    let (exchange, _) = poll_after(&mut h, secs(5));
    h.advance(secs(2));
    h.engine
        .handle_token_failure(h.now, exchange, transport_error());
    assert!(h.drain().is_empty());
    let (exchange, _) = poll_after(&mut h, secs(10));
    h.engine
        .handle_token_failure(h.now, exchange, transport_error());
    assert!(h.drain().is_empty());
    let (exchange, _) = poll_after(&mut h, secs(20));
    let actions = h.token_response(exchange, &tokens());
    assert!(matches!(&actions[..], [Action::Persist { flow: f, .. }] if *f == flow));
}

#[test]
fn s51_a_poll_slower_than_the_exchange_timeout_is_abandoned_and_its_late_answer_ignored() {
    let mut h = harness();
    let flow = polling(&mut h);
    let (slow, _) = poll_after(&mut h, secs(5));
    // Abandoned at the exchange timeout (30 s), then backed off from (10 s).
    assert_eq!(h.engine.poll_timeout(), Some(h.now + secs(30)));
    assert!(h.advance(secs(30)).is_empty());
    let (exchange, _) = poll_after(&mut h, secs(10));
    // The slow poll's answer arrives at last: the tokens of an abandoned poll are ignored.
    assert!(h.token_response(slow, &tokens()).is_empty());
    assert_eq!(h.engine.flows_in_progress(), 1);
    keep_waiting(&mut h, exchange, &oauth_error(400, "authorization_pending"));
    let (exchange, _) = poll_after(&mut h, secs(5));
    let actions = h.token_response(exchange, &tokens());
    assert!(matches!(&actions[..], [Action::Persist { flow: f, .. }] if *f == flow));
}

#[test]
fn s51_access_denied_and_entra_authorization_declined_end_the_flow_as_denied() {
    for (raw, code) in [
        (oauth_error(400, "access_denied"), "access_denied"),
        (
            json_response(
                400,
                r#"{"error":"authorization_declined","error_description":"AADSTS70000: The user declined to authorize the request.","error_codes":[70000],"timestamp":"2026-01-01 10:00:00Z","trace_id":"0d7d4a5e","correlation_id":"3f1c2b3a"}"#,
            ),
            "authorization_declined",
        ),
    ] {
        let mut h = harness();
        let flow = polling(&mut h);
        let (exchange, _) = poll_after(&mut h, secs(5));
        let actions = h.token_response(exchange, &raw);
        match outcome(&actions, flow) {
            Some(Err(FlowError::Denied(error))) => assert_eq!(error.code, code),
            other => panic!("{code}: {other:?}"),
        }
        assert_eq!(actions.len(), 1);
        assert_over(&mut h);
    }
}

#[test]
fn s51_expired_token_ends_the_flow_as_expired() {
    let mut h = harness();
    let flow = polling(&mut h);
    let (exchange, _) = poll_after(&mut h, secs(5));
    let actions = h.token_response(exchange, &oauth_error(400, "expired_token"));
    assert_eq!(
        outcome(&actions, flow),
        Some(Err(FlowError::Device(DeviceError::Expired)))
    );
    assert_over(&mut h);
}

#[test]
fn s51_the_code_expiring_ends_the_flow_without_another_poll() {
    // The next poll would fall on the expiry (10 s) or after it (8 s; due at 10 s).
    for (expires_in, ends_at) in [(10, 5), (8, 3)] {
        let mut h = harness();
        let (flow, authorization) = polling_with(
            &mut h,
            &code_with(&[("expires_in", Some(json!(expires_in)))]),
        );
        assert_eq!(authorization.lifetime(), secs(expires_in));
        assert_eq!(authorization.expires_at(), h.wall + secs(expires_in));
        let (exchange, _) = poll_after(&mut h, secs(5));
        keep_waiting(&mut h, exchange, &oauth_error(400, "authorization_pending"));
        assert!(h.advance(secs(ends_at) - MS).is_empty());
        let actions = h.advance(MS);
        assert_eq!(
            actions.len(),
            1,
            "expires_in {expires_in}: no last poll: {actions:?}"
        );
        assert_eq!(
            outcome(&actions, flow),
            Some(Err(FlowError::Device(DeviceError::Expired)))
        );
        assert_over(&mut h);
    }
}

#[test]
fn s51_a_code_that_expires_with_a_poll_in_flight_ignores_its_answer() {
    let mut h = harness();
    let (flow, _) = polling_with(&mut h, &code_with(&[("expires_in", Some(json!(20)))]));
    let (exchange, _) = poll_after(&mut h, secs(5));
    let actions = h.advance(secs(15));
    assert_eq!(
        outcome(&actions, flow),
        Some(Err(FlowError::Device(DeviceError::Expired)))
    );
    assert!(h.token_response(exchange, &tokens()).is_empty());
    assert_over(&mut h);
}

#[test]
fn s36_other_poll_errors_end_the_flow_as_token_rejected() {
    for (status, code) in [
        (400, "invalid_grant"),
        (401, "invalid_client"),
        (400, "unauthorized_client"),
        (200, "incorrect_device_code"), // GitHub, at 200
    ] {
        let mut h = harness();
        let flow = polling(&mut h);
        let (exchange, _) = poll_after(&mut h, secs(5));
        let actions = h.token_response(exchange, &oauth_error(status, code));
        match outcome(&actions, flow) {
            Some(Err(FlowError::TokenRejected { status: s, error })) => {
                assert_eq!((s, error.code.as_str()), (status, code));
            }
            other => panic!("{code}: {other:?}"),
        }
        assert_over(&mut h);
    }
}

// ===== the end =====

#[test]
fn approved_tokens_are_persisted_then_handed_out() {
    let mut h = harness();
    let flow = polling(&mut h);
    let (exchange, _) = poll_after(&mut h, secs(5));
    let actions = h.token_response(exchange, &tokens());
    let [Action::Persist { flow: f, tokens }] = &actions[..] else {
        panic!("the tokens are stored first: {actions:?}");
    };
    assert_eq!(*f, flow);
    assert_eq!(tokens.access_token().expose_secret(), "at-device-1");
    assert_eq!(
        tokens.refresh_token().map(ExposeSecret::expose_secret),
        Some("rt-device-1")
    );
    assert_eq!(tokens.expires_at(), Some(h.wall + secs(3600)));
    // Nothing more until the store answers, and no poll while it works.
    assert!(h.advance(secs(20)).is_empty());
    h.engine.handle_persisted(h.now, flow, Ok(()));
    match &h.drain()[..] {
        [
            Action::Finished {
                flow: f,
                result: Ok(tokens),
            },
        ] if *f == flow => assert_eq!(tokens.access_token().expose_secret(), "at-device-1"),
        other => panic!("{other:?}"),
    }
    assert_over(&mut h);
}

#[test]
fn rfc8707_device_tokens_are_for_the_resources_asked_for_unless_the_answer_names_others() {
    let provider = device_model::provider()
        .resource("https://api.example/")
        .build()
        .unwrap();
    for (answer, audience) in [
        (tokens(), "https://api.example/"),
        (
            json_response(
                200,
                r#"{"access_token":"at-device-1","token_type":"Bearer","resource":["urn:example:billing"]}"#,
            ),
            "urn:example:billing",
        ),
    ] {
        let mut h = harness_with(provider.clone());
        let flow = polling(&mut h);
        let (exchange, _) = poll_after(&mut h, secs(5));
        match &h.token_response(exchange, &answer)[..] {
            [Action::Persist { flow: f, tokens }] if *f == flow => {
                assert_eq!(tokens.audience(), [audience]);
            }
            other => panic!("the tokens are stored: {other:?}"),
        }
    }
}

#[test]
fn a_store_failure_ends_a_device_login_with_the_storage_error() {
    let mut h = harness();
    let flow = polling(&mut h);
    let (exchange, _) = poll_after(&mut h, secs(5));
    h.token_response(exchange, &tokens());
    h.engine
        .handle_persisted(h.now, flow, Err(StoreError::new("disk full")));
    assert!(matches!(
        outcome(&h.drain(), flow),
        Some(Err(FlowError::Storage(_)))
    ));
    assert_over(&mut h);
}

/// The ID token vectors' provider (real keys, checked with `ring`), with a device
/// endpoint.
fn vectors_harness() -> Harness {
    let vectors = Vectors::get();
    let algorithms = vectors
        .algorithms()
        .into_iter()
        .map(|name| Algorithm::from_name(name).unwrap());
    let provider = Provider::builder(harness::AUTHORIZE, harness::TOKEN, "latchkey-cli")
        .scopes(["openid", "email"])
        .issuer(vectors.issuer())
        .jwks_uri("https://idp.example/jwks")
        .id_token_algorithms(algorithms)
        .crypto(latchkey_io::crypto::ring())
        .device_authorization_endpoint(DEVICE_ENDPOINT)
        .build()
        .unwrap();
    let mut h = harness_with(provider);
    // The tokens arrive (5 s from now) when the vectors are checked.
    h.wall = vectors.checked_at() - secs(5);
    h
}

/// A device login of the vectors' provider whose tokens carry the ID token of `case`:
/// the actions after the key set arrived.
fn device_login_with_id_token(case: &str) -> (Harness, FlowId, Vec<Action>) {
    let vectors = Vectors::get();
    let mut h = vectors_harness();
    let flow = polling(&mut h);
    let (exchange, _) = poll_after(&mut h, secs(5));
    let raw = json_response(
        200,
        &json!({
            "access_token": vectors.access_token(),
            "token_type": "Bearer",
            "expires_in": 3600,
            "id_token": vectors.case(case).token,
        })
        .to_string(),
    );
    let actions = h.token_response(exchange, &raw);
    let [Action::FetchKeys { id, request }] = &actions[..] else {
        panic!("the key set is fetched first: {actions:?}");
    };
    assert_eq!(request.uri(), "https://idp.example/jwks");
    let document: Value = serde_json::from_str(id_token_vectors::DOCUMENT).unwrap();
    let keys = json_response(200, &document["keys"].to_string());
    h.engine
        .handle_keys_response(h.now, h.wall, *id, parse_response(&keys));
    let actions = h.drain();
    (h, flow, actions)
}

#[test]
fn s48_a_device_login_id_token_has_no_nonce_to_match_and_verifies() {
    // The vectors' token without a nonce (refused after a browser login, which sent one).
    let (mut h, flow, actions) = device_login_with_id_token("nonce missing");
    let [Action::Persist { flow: f, tokens }] = &actions[..] else {
        panic!("a verified ID token is stored: {actions:?}");
    };
    assert_eq!(*f, flow);
    let identity = tokens.identity().expect("the verified identity");
    assert_eq!(
        (identity.iss(), identity.sub()),
        ("https://idp.example", "248289761001")
    );
    assert_eq!(identity.email(), Some("jane@example.com"));
    h.engine.handle_persisted(h.now, flow, Ok(()));
    assert_eq!(outcome(&h.drain(), flow), Some(Ok(())));
}

#[test]
fn s48_a_device_login_id_token_for_another_audience_is_refused() {
    let (mut h, flow, actions) = device_login_with_id_token("aud of another client");
    assert_eq!(
        outcome(&actions, flow),
        Some(Err(FlowError::IdToken(IdTokenError::Audience)))
    );
    assert_eq!(actions.len(), 1, "nothing stored: {actions:?}");
    assert_over(&mut h);
}

// ===== what providers send =====

#[test]
fn google_shapes_are_read_verification_url_and_timings_as_strings() {
    let mut h = harness_with(
        latchkey::presets::google("1234-abc.apps.googleusercontent.com")
            .client_secret("GOCSPX-secret".to_owned().into())
            .build()
            .unwrap(),
    );
    let (flow, exchange, request) = start(&mut h);
    assert_eq!(request.uri(), "https://oauth2.googleapis.com/device/code");
    let raw = json_response(
        200,
        r#"{"device_code":"AH-1Ng14hOiq-5wYLLhBhxrr0d6Ft9Xnk7LtpwIAkzSyVszK7w","user_code":"GQVQ-JKEC","verification_url":"https://www.google.com/device","expires_in":"1800","interval":"5"}"#,
    );
    let authorization = shown(&h.token_response(exchange, &raw), flow);
    assert_eq!(authorization.user_code(), "GQVQ-JKEC");
    assert_eq!(
        authorization.verification_uri(),
        "https://www.google.com/device"
    );
    assert_eq!(authorization.verification_uri_complete(), None);
    assert_eq!(authorization.interval(), secs(5));
    assert_eq!(authorization.lifetime(), secs(1800));
    assert_eq!(authorization.expires_at(), h.wall + secs(1800));
    poll_after(&mut h, secs(5));
}

#[test]
fn entra_and_okta_answers_are_read() {
    let entra = json_response(
        200,
        r#"{"user_code":"FJTW3CYXB","device_code":"DAQABAAEAAAD--DLA3VO7QrddgJg7WevrQvqKrJgk7kh","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":5,"message":"To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code FJTW3CYXB to authenticate."}"#,
    );
    let mut h = harness();
    let (_, authorization) = polling_with(&mut h, &entra);
    assert_eq!(authorization.user_code(), "FJTW3CYXB");
    assert_eq!(
        authorization.verification_uri(),
        "https://microsoft.com/devicelogin"
    );
    assert_eq!(authorization.verification_uri_complete(), None);
    assert_eq!(authorization.lifetime(), secs(900));
    let okta = json_response(
        200,
        r#"{"device_code":"4ebc0594-6a1c-4e4b-b8f5-fa5e1e7ad8d0","user_code":"MHLMDJQN","verification_uri":"https://dev-1.okta.com/activate","verification_uri_complete":"https://dev-1.okta.com/activate?user_code=MHLMDJQN","expires_in":600,"interval":5}"#,
    );
    let mut h = harness();
    let (_, authorization) = polling_with(&mut h, &okta);
    assert_eq!(
        authorization.verification_uri_complete(),
        Some("https://dev-1.okta.com/activate?user_code=MHLMDJQN")
    );
    poll_after(&mut h, secs(5));
}

#[test]
fn the_device_code_is_form_encoded_in_the_poll() {
    let mut h = harness();
    polling_with(
        &mut h,
        &code_with(&[("device_code", Some(json!("a&b=c+d%e/f")))]),
    );
    let (_, request) = poll_after(&mut h, secs(5));
    assert_eq!(body(&request), poll_body("a%26b%3Dc%2Bd%25e%2Ff"));
}

#[test]
fn s51_a_code_that_expires_at_once_is_shown_and_ends_without_a_poll() {
    let mut h = harness();
    let (flow, exchange, _) = start(&mut h);
    let actions = h.token_response(exchange, &code_with(&[("expires_in", Some(json!(0)))]));
    assert_eq!(shown(&actions, flow).lifetime(), Duration::ZERO);
    // Due now: the driver's next handle_timeout ends it.
    assert_eq!(h.engine.poll_timeout(), Some(h.now));
    h.engine.handle_timeout(h.now);
    assert_eq!(
        outcome(&h.drain(), flow),
        Some(Err(FlowError::Device(DeviceError::Expired)))
    );
    assert_over(&mut h);
}

#[test]
fn s51_fractional_intervals_are_never_rounded_down() {
    for (interval, expected) in [
        (json!(1.5), Duration::from_millis(1500)),
        (json!("2.5"), Duration::from_millis(2500)),
        (json!("5"), secs(5)),
        (json!(4.0001), Duration::from_millis(4001)),
    ] {
        let mut h = harness();
        let (_, authorization) =
            polling_with(&mut h, &code_with(&[("interval", Some(interval.clone()))]));
        assert_eq!(authorization.interval(), expected, "{interval}");
        let (exchange, _) = poll_after(&mut h, expected);
        keep_waiting(&mut h, exchange, &oauth_error(400, "slow_down"));
        poll_after(&mut h, expected + secs(5));
    }
}

#[test]
fn a_missing_or_unusable_interval_means_five_seconds_and_none_is_below_one() {
    for (interval, expected) in [
        (None, DEFAULT_INTERVAL),
        (Some(Value::Null), DEFAULT_INTERVAL),
        (Some(json!("soon")), DEFAULT_INTERVAL),
        (Some(json!(0)), MIN_INTERVAL),
        (Some(json!(0.2)), MIN_INTERVAL),
        (Some(json!(-5)), MIN_INTERVAL),
    ] {
        let mut h = harness();
        let (_, authorization) =
            polling_with(&mut h, &code_with(&[("interval", interval.clone())]));
        assert_eq!(authorization.interval(), expected, "{interval:?}");
        poll_after(&mut h, expected);
    }
}

#[test]
fn a_missing_expires_in_means_the_flow_lifetime() {
    let config = harness::config_with(device_model::provider().build().unwrap())
        .flow_lifetime(secs(120))
        .build()
        .unwrap();
    let mut h = Harness::with(config);
    let (flow, authorization) = polling_with(&mut h, &code_with(&[("expires_in", None)]));
    assert_eq!(authorization.lifetime(), secs(120));
    assert_eq!(authorization.expires_at(), h.wall + secs(120));
    // Polls every 5 s, unanswered ones abandoned; the last chance is before 120 s.
    let actions = h.advance(secs(120) - MS);
    assert!(outcome(&actions, flow).is_none());
    assert_eq!(
        outcome(&h.advance(MS), flow),
        Some(Err(FlowError::Device(DeviceError::Expired)))
    );
}

#[test]
fn s52_verification_uris_are_validated() {
    let bad = [
        "javascript:alert(document.cookie)",
        "http://idp.example/device",
        "https://idp.example/de vice",
        " https://idp.example/device",
        "https://idp.example/device\t",
        "https://idp.example/device\u{1b}]8;;https://evil.example\u{7}",
        "https://idp.example/device\r\nLocation: https://evil.example",
        "https://idp.example/d\u{e9}vice",
        "https://user:password@idp.example/device",
        "file:///etc/passwd",
        "idp.example/device",
        "",
    ];
    for uri in bad {
        for member in ["verification_uri", "verification_uri_complete"] {
            let mut h = harness();
            let (flow, exchange, _) = start(&mut h);
            let actions = h.token_response(exchange, &code_with(&[(member, Some(json!(uri)))]));
            let expected = if uri.is_empty() && member == "verification_uri" {
                // An empty URI is as bad as none.
                [
                    BadTokenResponse::InvalidMember("verification_uri"),
                    BadTokenResponse::MissingMember("verification_uri"),
                ]
                .to_vec()
            } else {
                vec![BadTokenResponse::InvalidMember(match member {
                    "verification_uri" => "verification_uri",
                    _ => "verification_uri_complete",
                })]
            };
            match outcome(&actions, flow) {
                Some(Err(FlowError::Device(DeviceError::BadResponse {
                    status: 200,
                    reason,
                }))) if expected.contains(&reason) => {}
                other => panic!("{member} {uri:?}: {other:?}"),
            }
            assert_eq!(actions.len(), 1, "nothing shown for {uri:?}: {actions:?}");
            assert_over(&mut h);
        }
    }
    // What may be shown: https, and http on loopback.
    for uri in [
        "https://idp.example/device?user_code=WDJB-MJHT",
        "http://127.0.0.1:8080/device",
        "http://localhost/device",
    ] {
        let mut h = harness();
        let (_, authorization) = polling_with(
            &mut h,
            &code_with(&[("verification_uri_complete", Some(json!(uri)))]),
        );
        assert_eq!(authorization.verification_uri_complete(), Some(uri));
    }
}

#[test]
fn s52_user_codes_a_terminal_would_interpret_are_refused() {
    for user_code in [
        "WDJB\u{1b}[2J-MJHT",
        "WDJB\u{9b}2J",
        "WDJB\nMJHT",
        "WDJB\u{202e}THJM",
        "WDJB\u{7}",
        " WDJB",
        "",
    ] {
        let mut h = harness();
        let (flow, exchange, _) = start(&mut h);
        let actions = h.token_response(
            exchange,
            &code_with(&[("user_code", Some(json!(user_code)))]),
        );
        match outcome(&actions, flow) {
            Some(Err(FlowError::Device(DeviceError::BadResponse {
                reason: BadTokenResponse::InvalidMember("user_code"),
                ..
            }))) => {}
            other => panic!("{user_code:?}: {other:?}"),
        }
        assert_over(&mut h);
    }
    // Spaces inside are fine (some providers group digits).
    let mut h = harness();
    let (_, authorization) =
        polling_with(&mut h, &code_with(&[("user_code", Some(json!("123 456")))]));
    assert_eq!(authorization.user_code(), "123 456");
}

#[test]
fn a_refused_device_authorization_ends_the_flow_as_refused() {
    for (raw, status, code) in [
        (oauth_error(400, "invalid_client"), 400, "invalid_client"),
        (oauth_error(400, "invalid_scope"), 400, "invalid_scope"),
        (
            form_response(
                200,
                "error=device_flow_disabled&error_description=Device+Flow+must+be+explicitly+\
                 enabled+for+this+App&error_uri=https%3A%2F%2Fdocs.github.com",
            ),
            200,
            "device_flow_disabled",
        ),
    ] {
        let mut h = harness();
        let (flow, exchange, _) = start(&mut h);
        let actions = h.token_response(exchange, &raw);
        match outcome(&actions, flow) {
            Some(Err(FlowError::Device(DeviceError::Refused { status: s, error }))) => {
                assert_eq!((s, error.code.as_str()), (status, code));
            }
            other => panic!("{code}: {other:?}"),
        }
        assert_over(&mut h);
    }
}

#[test]
fn an_unusable_device_authorization_answer_is_a_bad_response() {
    let login_page = answer(
        200,
        "text/html; charset=utf-8",
        &[],
        "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Sign in</body></html>",
    );
    let gateway = answer(502, "text/html", &[], "<html>Bad Gateway</html>");
    let without_code = code_with(&[("device_code", None)]);
    let numeric_code = code_with(&[("device_code", Some(json!(12345)))]);
    let array = json_response(200, "[]");
    for (raw, status, reason) in [
        (login_page, 200, BadTokenResponse::Unparseable),
        (gateway, 502, BadTokenResponse::UnexpectedStatus),
        (
            without_code,
            200,
            BadTokenResponse::MissingMember("device_code"),
        ),
        (
            numeric_code,
            200,
            BadTokenResponse::InvalidMember("device_code"),
        ),
        (array, 200, BadTokenResponse::Unparseable),
    ] {
        let mut h = harness();
        let (flow, exchange, _) = start(&mut h);
        let actions = h.token_response(exchange, &raw);
        assert_eq!(
            outcome(&actions, flow),
            Some(Err(FlowError::Device(DeviceError::BadResponse {
                status,
                reason
            })))
        );
        assert_over(&mut h);
    }
}

#[test]
fn the_device_authorization_request_failing_or_timing_out_ends_the_flow() {
    let mut h = harness();
    let (flow, exchange, _) = start(&mut h);
    h.engine
        .handle_token_failure(h.now, exchange, transport_error());
    let actions = h.drain();
    assert!(
        matches!(
            outcome(&actions, flow),
            Some(Err(FlowError::Device(DeviceError::Unreachable(_))))
        ),
        "{actions:?}"
    );
    assert_over(&mut h);

    let mut h = harness();
    let (flow, exchange, _) = start(&mut h);
    assert!(h.advance(secs(30) - MS).is_empty());
    assert_eq!(
        outcome(&h.advance(MS), flow),
        Some(Err(FlowError::TimedOut(Step::DeviceAuthorization)))
    );
    // The code, late, changes nothing.
    assert!(h.token_response(exchange, &code()).is_empty());
    assert_over(&mut h);
}

#[test]
fn start_device_without_a_device_endpoint_is_refused() {
    let mut h = Harness::new();
    assert_eq!(
        h.engine.start_device(h.now, FlowOptions::new()),
        Err(StartError::NoDeviceEndpoint)
    );
    assert!(h.drain().is_empty());
    assert_eq!(h.engine.flows_in_progress(), 0);
    // Another provider of the same engine may have one.
    let options = FlowOptions::new().provider(device_model::provider().build().unwrap());
    let (_, _, request) = start_with(&mut h, options);
    assert_eq!(request.uri(), DEVICE_ENDPOINT);
}

// ===== cancel, supersede, and other flows =====

#[test]
fn a_cancelled_device_flow_ends_at_once_and_its_answers_are_ignored() {
    // Waiting for the code…
    let mut h = harness();
    let (flow, exchange, _) = start(&mut h);
    h.engine.cancel(h.now, flow);
    assert_eq!(outcome(&h.drain(), flow), Some(Err(FlowError::Cancelled)));
    assert!(h.token_response(exchange, &code()).is_empty());
    assert_over(&mut h);
    // …between polls…
    let mut h = harness();
    let flow = polling(&mut h);
    h.advance(secs(2));
    h.engine.cancel(h.now, flow);
    assert_eq!(outcome(&h.drain(), flow), Some(Err(FlowError::Cancelled)));
    assert_over(&mut h);
    // …and with a poll in flight.
    let mut h = harness();
    let flow = polling(&mut h);
    let (exchange, _) = poll_after(&mut h, secs(5));
    h.engine.cancel(h.now, flow);
    assert_eq!(outcome(&h.drain(), flow), Some(Err(FlowError::Cancelled)));
    assert!(h.token_response(exchange, &tokens()).is_empty());
    assert_over(&mut h);
}

#[test]
fn s20_a_newer_login_of_the_same_owner_supersedes_a_device_flow() {
    let mut h = harness();
    let owner = || FlowOptions::new().owner("docker-desktop");
    // A device login superseded by another…
    let (first, first_exchange, _) = start_with(&mut h, owner());
    let second = h.engine.start_device(h.now, owner()).unwrap();
    let actions = h.drain();
    assert_eq!(outcome(&actions, first), Some(Err(FlowError::Superseded)));
    assert!(matches!(
        actions.last(),
        Some(Action::RequestDeviceCode { flow, .. }) if *flow == second
    ));
    assert!(h.token_response(first_exchange, &code()).is_empty());
    assert_eq!(h.engine.flow_owner(second), Some("docker-desktop"));
    // …by a browser login…
    let entropy = h.entropy();
    let browser = h.engine.start_with(h.now, entropy, owner()).unwrap();
    let actions = h.drain();
    assert_eq!(outcome(&actions, second), Some(Err(FlowError::Superseded)));
    assert!(matches!(
        actions.last(),
        Some(Action::OpenBrowser { flow, .. }) if *flow == browser
    ));
    assert_eq!(h.engine.flows_in_progress(), 1);
    assert_eq!(h.engine.flow_owner(browser), Some("docker-desktop"));
    // …and a browser login superseded by a device login.
    let third = h.engine.start_device(h.now, owner()).unwrap();
    let actions = h.drain();
    assert_eq!(outcome(&actions, browser), Some(Err(FlowError::Superseded)));
    assert_eq!(h.engine.flows_in_progress(), 1);
    assert_eq!(h.engine.flow_owner(third), Some("docker-desktop"));
    // Another owner's login is left alone.
    start_with(&mut h, FlowOptions::new().owner("someone-else"));
    assert_eq!(h.engine.flows_in_progress(), 2);
}

#[test]
fn s20_a_polling_device_flow_is_superseded_and_its_poll_forgotten() {
    let mut h = harness();
    let owner = || FlowOptions::new().owner("cli");
    let (flow, exchange, _) = start_with(&mut h, owner());
    h.token_response(exchange, &code());
    let (poll, _) = poll_after(&mut h, secs(5));
    let newer = h.engine.start_device(h.now, owner()).unwrap();
    let actions = h.drain();
    assert_eq!(outcome(&actions, flow), Some(Err(FlowError::Superseded)));
    assert!(h.token_response(poll, &tokens()).is_empty());
    // The newer login's only deadline is its own request's.
    assert_eq!(h.engine.poll_timeout(), Some(h.now + secs(30)));
    assert_eq!(h.engine.flow_owner(newer), Some("cli"));
}

#[test]
fn an_engine_with_port_0_runs_device_flows_but_refuses_browser_logins() {
    let config = Config::builder(device_model::provider().build().unwrap())
        .build()
        .unwrap();
    assert_eq!(config.redirect_port(), 0);
    let mut h = Harness::with(config);
    let entropy = h.entropy();
    assert_eq!(
        h.engine.start(h.now, entropy),
        Err(StartError::UnresolvedRedirectPort)
    );
    assert!(h.drain().is_empty());
    let flow = polling(&mut h);
    let (exchange, _) = poll_after(&mut h, secs(5));
    h.token_response(exchange, &tokens());
    h.engine.handle_persisted(h.now, flow, Ok(()));
    assert_eq!(outcome(&h.drain(), flow), Some(Ok(())));
    // With the port known, browser logins start.
    let config = h.engine.config().clone().with_redirect_port(8080);
    let mut engine = Engine::new(config).unwrap();
    assert!(engine.start(h.now, h.entropy()).is_ok());
}

#[test]
fn s41_debug_of_device_actions_and_of_the_engine_never_shows_the_device_code() {
    let provider = device_model::provider()
        .client_secret("s3cr3t-client".to_owned().into())
        .client_auth(ClientAuth::SecretPost)
        .build()
        .unwrap();
    let mut h = harness_with(provider);
    let mut log = String::new();
    let record = |actions: &[Action], log: &mut String| {
        for action in actions {
            log.push_str(&format!("{action:?}\n"));
        }
    };
    let (flow, exchange, request) = start(&mut h);
    log.push_str(&format!(
        "{:?}",
        Action::RequestDeviceCode {
            flow,
            exchange,
            request: latchkey::ProviderRequest::complete(request),
        }
    ));
    let actions = h.token_response(exchange, &code());
    record(&actions, &mut log);
    assert!(log.contains(USER_CODE), "the user code is shown: {log}");
    let early = h.advance(secs(5));
    record(&early, &mut log);
    let (exchange, _) = token_request(&early).unwrap();
    log.push_str(&format!("{:?}", h.engine));
    let actions = h.token_response(exchange, &oauth_error(400, "slow_down"));
    record(&actions, &mut log);
    let poll = h.advance(secs(10));
    record(&poll, &mut log);
    let (exchange, _) = token_request(&poll).unwrap();
    let actions = h.token_response(exchange, &tokens());
    record(&actions, &mut log);
    h.engine.handle_persisted(h.now, flow, Ok(()));
    let actions = h.drain();
    record(&actions, &mut log);
    for secret in [DEVICE_CODE, "s3cr3t-client", "at-device-1", "rt-device-1"] {
        assert!(!log.contains(secret), "{secret} in {log}");
    }
    assert!(log.contains("REDACTED"));
}

#[test]
fn device_and_browser_flows_in_one_engine_do_not_disturb_each_other() {
    let mut h = harness();
    let browser = h.start();
    h.advance(secs(1));
    let (device, exchange, _) = start(&mut h);
    h.token_response(exchange, &code());
    // The browser's callback and token exchange happen between the polls.
    h.advance(secs(2));
    let (conn, browser_exchange, request) = h.to_exchange(&browser);
    assert!(body(&request).starts_with("grant_type=authorization_code"));
    let (poll, _) = poll_after(&mut h, secs(3));
    let actions = h.token_response(browser_exchange, &harness::token_ok());
    assert!(matches!(&actions[..], [Action::Persist { flow, .. }] if *flow == browser.flow));
    keep_waiting(&mut h, poll, &oauth_error(400, "authorization_pending"));
    h.engine.handle_persisted(h.now, browser.flow, Ok(()));
    let actions = h.drain();
    assert_eq!(outcome(&actions, browser.flow), Some(Ok(())));
    assert_eq!(
        harness::response_to(&actions, conn).map(|r| r.status),
        Some(200)
    );
    // The device login went on as if alone, and a late callback does not touch it.
    let (_, late) = h.callback(&format!("code=again&state={}", browser.state));
    assert!(token_request(&late).is_none());
    let (poll, _) = poll_after(&mut h, secs(5));
    let actions = h.token_response(poll, &tokens());
    assert!(matches!(&actions[..], [Action::Persist { flow, .. }] if *flow == device));
    h.engine.handle_persisted(h.now, device, Ok(()));
    assert_eq!(outcome(&h.drain(), device), Some(Ok(())));

    // A browser login that times out leaves a polling device login alone.
    let mut h = harness();
    let browser = h.start();
    let device = polling(&mut h);
    let mut exchange = poll_after(&mut h, secs(5)).0;
    for _ in 0..118 {
        keep_waiting(&mut h, exchange, &oauth_error(400, "authorization_pending"));
        exchange = poll_after(&mut h, secs(5)).0;
    }
    // 600 s: the browser login's lifetime ends; the device login keeps polling.
    keep_waiting(&mut h, exchange, &oauth_error(400, "authorization_pending"));
    let actions = h.advance(secs(5));
    assert!(matches!(
        outcome(&actions, browser.flow),
        Some(Err(FlowError::TimedOut(Step::Callback)))
    ));
    assert!(token_request(&actions).is_some());
    assert_eq!(h.engine.flows_in_progress(), 1);
    assert!(h.engine.flow_provider(device).is_some());
}
