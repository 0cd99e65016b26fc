//! Pushed authorization requests (RFC 9126) in the engine: the parameters go to the
//! provider first, authenticated as token requests are, and the browser's URL carries only
//! `client_id` and the provider's `request_uri`.

use std::time::{Duration, SystemTime};

use latchkey::{
    Action, ClientAuth, ConfigError, ExchangeId, FlowError, FlowOptions, Metadata, Provider,
    ProviderRequest, Step, TransportError, TransportErrorKind,
};
use latchkey_tests::harness::{self, Harness, Replicas, query_value};
use secrecy::SecretString;

const PAR_ENDPOINT: &str = "https://idp.example/par";

fn pushing(auth: ClientAuth) -> Provider {
    let builder = harness::provider()
        .pushed_authorization_request_endpoint(PAR_ENDPOINT)
        .push_authorization_requests(true);
    match auth {
        ClientAuth::None => builder,
        auth => builder
            .client_secret(SecretString::from("s3cr3t"))
            .client_auth(auth),
    }
    .build()
    .expect("a pushing provider")
}

fn pushed(h: &mut Harness) -> (latchkey::FlowId, ExchangeId, ProviderRequest) {
    let entropy = h.entropy();
    let flow = h
        .engine
        .start_with(h.now, entropy, FlowOptions::new())
        .unwrap();
    let actions = h.drain();
    assert!(
        actions
            .iter()
            .all(|action| !matches!(action, Action::OpenBrowser { .. })),
        "no browser before the push is answered"
    );
    let (exchange, request) = actions
        .into_iter()
        .find_map(|action| match action {
            Action::PushAuthorization {
                exchange, request, ..
            } => Some((exchange, request)),
            _ => None,
        })
        .expect("a pushed authorization request");
    (flow, exchange, request)
}

fn answer(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn finished(actions: &[Action]) -> Option<&Result<latchkey::TokenSet, FlowError>> {
    actions.iter().find_map(|action| match action {
        Action::Finished { result, .. } => Some(result),
        _ => None,
    })
}

#[test]
fn the_parameters_are_pushed_and_the_browser_gets_only_client_id_and_request_uri() {
    let mut h = Harness::with(
        harness::config_with(pushing(ClientAuth::SecretBasic))
            .build()
            .unwrap(),
    );
    let (flow, exchange, request) = pushed(&mut h);
    let request = request.request();
    assert_eq!(request.method(), http::Method::POST);
    assert_eq!(request.uri(), PAR_ENDPOINT);
    assert!(
        request.headers().contains_key("authorization"),
        "authenticated as at the token endpoint"
    );
    let body = std::str::from_utf8(request.body()).unwrap();
    for name in [
        "response_type",
        "scope",
        "code_challenge_method",
        "redirect_uri",
        "state",
        "code_challenge",
        "nonce",
    ] {
        assert!(query_value(body, name).is_some(), "{name} in {body}");
    }
    assert_eq!(
        query_value(body, "client_id"),
        None,
        "Basic names the client: {body}"
    );
    let state = query_value(body, "state").unwrap();

    let uri = "urn:ietf:params:oauth:request_uri:6esc_11ACC5bwc014ltc14eY22c";
    let actions = h.token_response(
        exchange,
        &answer(
            201,
            &format!(r#"{{"request_uri":"{uri}","expires_in":60}}"#),
        ),
    );
    let url = actions
        .iter()
        .find_map(|action| match action {
            Action::OpenBrowser { flow: f, url } if *f == flow => Some(url.clone()),
            _ => None,
        })
        .expect("the browser, once the push is answered");
    assert_eq!(
        url,
        format!(
            "{}?client_id=latchkey-test&request_uri=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3A6esc_11ACC5bwc014ltc14eY22c",
            harness::AUTHORIZE
        )
    );
    // The callback carries the pushed state as ever.
    let (_, actions) = h.callback(&format!(
        "code=auth-code-1&state={state}&iss=https%3A%2F%2Fidp.example"
    ));
    assert!(
        actions
            .iter()
            .any(|action| matches!(action, Action::SendTokenRequest { .. })),
        "{actions:?}"
    );
}

#[test]
fn a_public_client_names_itself_in_the_push() {
    let mut h = Harness::with(
        harness::config_with(pushing(ClientAuth::None))
            .build()
            .unwrap(),
    );
    let (_, _, request) = pushed(&mut h);
    let body = std::str::from_utf8(request.request().body()).unwrap();
    assert_eq!(
        query_value(body, "client_id").as_deref(),
        Some("latchkey-test")
    );
    assert_eq!(body.matches("client_id=").count(), 1, "{body}");
}

#[test]
fn a_refused_unusable_failed_or_slow_push_ends_the_login() {
    let provider = pushing(ClientAuth::None);
    /// Whether the login ended as it should.
    type Expected = Box<dyn Fn(&FlowError) -> bool>;
    let cases: [(&str, Expected); 4] = [
        (
            r#"{"error":"invalid_request","error_description":"no"}"#,
            Box::new(|error| matches!(error, FlowError::PushRejected { status: 400, .. })),
        ),
        (
            r#"{"expires_in":60}"#,
            Box::new(|error| matches!(error, FlowError::BadPushResponse { .. })),
        ),
        (
            r#"{"request_uri":"urn:x","expires_in":0}"#,
            Box::new(|error| matches!(error, FlowError::BadPushResponse { .. })),
        ),
        (
            "<html>",
            Box::new(|error| matches!(error, FlowError::BadPushResponse { .. })),
        ),
    ];
    for (body, expected) in cases {
        let mut h = Harness::with(harness::config_with(provider.clone()).build().unwrap());
        let (_, exchange, _) = pushed(&mut h);
        let status = if body.contains("error") { 400 } else { 201 };
        let actions = h.token_response(exchange, &answer(status, body));
        assert!(
            actions
                .iter()
                .all(|action| !matches!(action, Action::OpenBrowser { .. })),
            "{body}"
        );
        match finished(&actions) {
            Some(Err(error)) if expected(error) => {}
            other => panic!("{body}: {other:?}"),
        }
    }

    let mut h = Harness::with(harness::config_with(provider.clone()).build().unwrap());
    let (_, exchange, _) = pushed(&mut h);
    let failure = TransportError::new(TransportErrorKind::Connect, "refused");
    h.engine.handle_token_failure(h.now, exchange, failure);
    assert!(matches!(
        finished(&h.drain()),
        Some(Err(FlowError::Transport(_)))
    ));

    let mut h = Harness::with(harness::config_with(provider).build().unwrap());
    pushed(&mut h);
    let actions = h.advance(Duration::from_secs(600));
    assert!(matches!(
        finished(&actions),
        Some(Err(FlowError::TimedOut(Step::AuthorizationPush)))
    ));
}

/// The provider's `201` with `uri`.
fn pushed_answer(uri: &str) -> http::Response<Vec<u8>> {
    harness::parse_response(&answer(
        201,
        &format!(r#"{{"request_uri":"{uri}","expires_in":60}}"#),
    ))
}

#[test]
fn a_shared_login_pushes_first_then_shares_its_record_then_opens_the_browser() {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut r = Replicas::new(pushing(ClientAuth::SecretBasic), wall);
    let flow =
        r.a.start_with(
            r.now,
            [5; latchkey::ENTROPY_LEN],
            FlowOptions::new().shared(wall),
        )
        .unwrap();
    let actions = r.drain_a();
    let [
        Action::PushAuthorization {
            exchange, request, ..
        },
    ] = &actions[..]
    else {
        panic!("the push comes first, alone: {actions:?}");
    };
    let body = String::from_utf8(request.request().body().clone()).unwrap();
    let state = query_value(&body, "state").unwrap();
    let uri = "urn:ietf:params:oauth:request_uri:shared-1";
    r.a.handle_token_response(r.now, wall, *exchange, pushed_answer(uri));
    // The record, before any browser: whichever replica the browser comes back to
    // needs it.
    let (record, url) = r.shared(flow);
    assert_eq!(query_value(&url, "request_uri").as_deref(), Some(uri));
    assert_eq!(
        query_value(&url, "state"),
        None,
        "only client_id and request_uri"
    );
    // Replica B finishes the login with the record.
    let actions = r.adopt(&state, record);
    let (_, request) = harness::token_request(&actions).expect("B exchanges the code");
    let body = String::from_utf8(request.body().clone()).unwrap();
    assert_eq!(query_value(&body, "code").as_deref(), Some("c"));

    // A record the directory refuses ends the login: no browser (S58).
    let mut r = Replicas::new(pushing(ClientAuth::SecretBasic), wall);
    let flow =
        r.a.start_with(
            r.now,
            [6; latchkey::ENTROPY_LEN],
            FlowOptions::new().shared(wall),
        )
        .unwrap();
    let [Action::PushAuthorization { exchange, .. }] = &r.drain_a()[..] else {
        panic!("pushed");
    };
    r.a.handle_token_response(r.now, wall, *exchange, pushed_answer(uri));
    r.drain_a();
    r.a.handle_flow_shared(r.now, flow, Err(latchkey::StoreError::new("redis is down")));
    let actions = r.drain_a();
    assert!(
        !actions
            .iter()
            .any(|action| matches!(action, Action::OpenBrowser { .. })),
        "{actions:?}"
    );
    assert!(matches!(
        finished(&actions),
        Some(Err(FlowError::Directory(_)))
    ));
}

#[test]
fn pushing_is_configured_with_its_endpoint_or_found_by_discovery() {
    assert_eq!(
        harness::provider()
            .push_authorization_requests(true)
            .build()
            .err(),
        Some(ConfigError::MissingParEndpoint)
    );
    let document = br#"{"issuer":"https://idp.example",
        "authorization_endpoint":"https://idp.example/authorize",
        "token_endpoint":"https://idp.example/token",
        "pushed_authorization_request_endpoint":"https://idp.example/par",
        "require_pushed_authorization_requests":true}"#;
    let metadata = Metadata::parse("https://idp.example", document).unwrap();
    let provider = metadata.provider("cli").unwrap().build().unwrap();
    assert!(provider.pushes_authorization_requests());
    assert_eq!(
        provider
            .pushed_authorization_request_endpoint()
            .map(ToString::to_string)
            .as_deref(),
        Some("https://idp.example/par")
    );
    let optional = String::from_utf8_lossy(document).replace("true", "false");
    let metadata = Metadata::parse("https://idp.example", optional.as_bytes()).unwrap();
    let provider = metadata.provider("cli").unwrap().build().unwrap();
    assert!(
        !provider.pushes_authorization_requests(),
        "offered, not required"
    );
}
