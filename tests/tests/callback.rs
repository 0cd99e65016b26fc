//! Validating the callback, on the loopback port and forwarded by a UI: S10–S19, S45.

use std::time::Duration;

use latchkey::{
    Action, CallbackDefect, ConfigError, FlowError, FlowId, ProviderError, Rejection, Step,
};
use latchkey_tests::harness::{self, Harness, Started, response_to, token_request};

const ISS: &str = "iss=https%3A%2F%2Fidp.example";

/// The flow's outcome among `actions`, if it finished.
fn outcome(actions: &[Action], flow: FlowId) -> Option<Result<(), FlowError>> {
    actions.iter().find_map(|action| match action {
        Action::Finished { flow: f, result } if *f == flow => {
            Some(result.as_ref().map(|_| ()).map_err(Clone::clone))
        }
        _ => None,
    })
}

/// A callback that must be turned away with `status` and leave every flow as it was.
fn assert_refused_and_unchanged(h: &mut Harness, started: &Started, query: &str, status: u16) {
    let pending = h.engine.flows_in_progress();
    let (conn, actions) = h.callback(query);
    assert_eq!(
        response_to(&actions, conn).map(|r| r.status),
        Some(status),
        "{query}"
    );
    assert_eq!(
        actions.len(),
        1,
        "only the refusal for {query}: {actions:?}"
    );
    assert_eq!(h.engine.flows_in_progress(), pending);
    // The real callback still works afterwards.
    let (_, _, request) = h.clone().to_exchange(started);
    assert_eq!(request.uri(), harness::TOKEN);
}

/// The flow ends at once with `expected`, without a token request, and the browser sees
/// the failure page.
fn assert_flow_fails(query: &str, expected: FlowError) {
    let mut h = Harness::new();
    let started = h.start();
    let (conn, actions) = h.callback(&query.replace("{state}", &started.state));
    assert!(token_request(&actions).is_none(), "{query}");
    assert_eq!(
        outcome(&actions, started.flow),
        Some(Err(expected)),
        "{query}"
    );
    assert_eq!(
        response_to(&actions, conn).unwrap().status,
        200,
        "built-in failure page"
    );
}

#[test]
fn s10_wrong_missing_or_empty_state_gets_400_and_the_flow_is_unchanged() {
    let mut h = Harness::new();
    let started = h.start();
    let wrong = format!("{}x", started.state);
    let truncated = &started.state[..42];
    for query in [
        format!("code=c&state={wrong}&{ISS}"),
        format!("code=c&state={truncated}&{ISS}"),
        format!("code=c&{ISS}"),
        format!("code=c&state=&{ISS}"),
        format!("code=c&STATE={}&{ISS}", started.state),
    ] {
        assert_refused_and_unchanged(&mut h, &started, &query, 400);
    }
}

#[test]
fn s11_a_forged_error_callback_with_an_unknown_state_changes_no_flow() {
    let mut h = Harness::new();
    let started = h.start();
    assert_refused_and_unchanged(&mut h, &started, "error=access_denied&state=x", 400);
    assert_eq!(
        h.engine
            .handle_redirect(h.now, "error=access_denied&state=x"),
        Err(Rejection::UnknownState)
    );
    assert!(h.drain().is_empty());
}

#[test]
fn s12_no_token_request_is_ever_made_for_an_invalid_callback() {
    let invalid = [
        "code=c&state=nope",
        "code=c&state={state}&state={state}",
        "code=c&state={state}&iss=https%3A%2F%2Fevil.example",
        "code=c&code=d&state={state}",
        "code=c&state={state}&access_token=at",
        "state={state}",
        "code=c&error=access_denied&state={state}",
        "code=&state={state}",
        "code=c%0A&state={state}",
    ];
    for query in invalid {
        let mut h = Harness::new();
        let started = h.start();
        let (_, actions) = h.callback(&query.replace("{state}", &started.state));
        assert!(token_request(&actions).is_none(), "{query}");
    }
}

#[test]
fn s13_an_iss_naming_another_issuer_fails_the_flow() {
    assert_flow_fails(
        "code=c&state={state}&iss=https%3A%2F%2Fidp.example.evil",
        FlowError::IssuerMismatch {
            expected: harness::ISSUER.into(),
            received: Some("https://idp.example.evil".into()),
        },
    );
    // RFC 9207: the check applies to error responses too.
    assert_flow_fails(
        "error=access_denied&state={state}&iss=https%3A%2F%2Fevil.example",
        FlowError::IssuerMismatch {
            expected: harness::ISSUER.into(),
            received: Some("https://evil.example".into()),
        },
    );
}

#[test]
fn s13_iss_is_required_only_when_the_provider_always_sends_it() {
    // Not required: a callback without `iss` is accepted.
    let mut h = Harness::new();
    let started = h.start();
    let (_, actions) = h.callback(&format!("code=c&state={}", started.state));
    assert!(token_request(&actions).is_some());

    // Required: its absence fails the flow.
    let provider = harness::provider().require_iss(true).build().unwrap();
    let mut h = Harness::with(harness::config_with(provider).build().unwrap());
    let started = h.start();
    let (_, actions) = h.callback(&format!("code=c&state={}", started.state));
    assert!(token_request(&actions).is_none());
    assert_eq!(
        outcome(&actions, started.flow),
        Some(Err(FlowError::IssuerMismatch {
            expected: harness::ISSUER.into(),
            received: None
        }))
    );
}

#[test]
fn s14_repeated_code_iss_or_error_with_the_right_state_fail_closed() {
    for (query, name) in [
        ("code=a&code=b&state={state}", "code"),
        (
            "code=a&state={state}&iss=https%3A%2F%2Fidp.example&iss=https%3A%2F%2Fidp.example",
            "iss",
        ),
        (
            "error=access_denied&error=server_error&state={state}",
            "error",
        ),
    ] {
        assert_flow_fails(
            query,
            FlowError::InvalidCallback(CallbackDefect::RepeatedParameter(name)),
        );
    }
}

#[test]
fn s14_a_repeated_state_is_refused_without_touching_the_flow() {
    let mut h = Harness::new();
    let started = h.start();
    let query = format!("code=c&state={0}&state={0}", started.state);
    assert_refused_and_unchanged(&mut h, &started, &query, 400);
    assert_eq!(
        h.engine.handle_redirect(h.now, &query),
        Err(Rejection::BadState)
    );
}

#[test]
fn s15_unknown_parameters_are_ignored() {
    let mut h = Harness::new();
    let started = h.start();
    let query = format!(
        "session_state=abc&code=c&prompt=none&state={}&{ISS}&authuser=0&hd=example.com",
        started.state
    );
    let (_, actions) = h.callback(&query);
    assert!(token_request(&actions).is_some());
}

#[test]
fn s15_implicit_flow_artifacts_are_rejected() {
    for artifact in ["access_token", "id_token", "token"] {
        assert_flow_fails(
            &format!("code=c&state={{state}}&{artifact}=eyJ"),
            FlowError::InvalidCallback(CallbackDefect::ImplicitFlowArtifact(artifact)),
        );
    }
}

#[test]
fn s16_an_error_callback_with_the_right_state_ends_the_flow_without_reflecting_anything() {
    let mut h = Harness::new();
    let started = h.start();
    let query = format!(
        "error=access_denied&error_description=MARK%3Cscript%3E&error_uri=https%3A%2F%2Fevil.example%2Fx&state={}&{ISS}",
        started.state
    );
    let (conn, actions) = h.callback(&query);
    assert_eq!(
        outcome(&actions, started.flow),
        Some(Err(FlowError::Denied(ProviderError {
            code: "access_denied".into(),
            description: Some("MARK<script>".into()),
            uri: Some("https://evil.example/x".into()),
        })))
    );
    let page = response_to(&actions, conn).unwrap();
    let body = String::from_utf8(page.body).unwrap();
    assert!(!body.contains("MARK") && !body.contains("evil") && !body.contains("access_denied"));
    // error_uri is never followed: nothing but the page and the outcome.
    assert_eq!(actions.len(), 2, "{actions:?}");
}

#[test]
fn s16_an_error_callback_without_the_right_state_does_not_count() {
    let mut h = Harness::new();
    let started = h.start();
    assert_refused_and_unchanged(&mut h, &started, "error=access_denied&state=guess", 400);
    assert_refused_and_unchanged(&mut h, &started, "error=access_denied", 400);
}

#[test]
fn s17_the_right_state_with_neither_code_nor_error_fails_the_flow() {
    assert_flow_fails(
        &format!("state={{state}}&{ISS}"),
        FlowError::InvalidCallback(CallbackDefect::NeitherCodeNorError),
    );
    assert_flow_fails(
        "code=c&error=access_denied&state={state}",
        FlowError::InvalidCallback(CallbackDefect::BothCodeAndError),
    );
}

#[test]
fn s18_the_state_is_consumed_before_the_exchange_and_a_replay_gets_a_fixed_page() {
    let mut h = Harness::new();
    let started = h.start();
    let query = format!("code=c&state={}&{ISS}", started.state);
    let (held, actions) = h.callback(&query);
    let (exchange, _) = token_request(&actions).unwrap();

    // During the exchange: the replay is refused, no second token request.
    let (replay, actions) = h.callback(&query);
    let during = response_to(&actions, replay).unwrap();
    assert_eq!(during.status, 400);
    assert!(token_request(&actions).is_none());
    assert_eq!(
        h.engine.handle_redirect(h.now, &query),
        Err(Rejection::AlreadyUsed)
    );

    // After success: still refused with the same fixed page.
    let actions = h.token_response(exchange, &harness::token_ok());
    assert!(matches!(actions.as_slice(), [Action::Persist { .. }]));
    h.engine.handle_persisted(h.now, started.flow, Ok(()));
    let actions = h.drain();
    assert_eq!(response_to(&actions, held).unwrap().status, 200);
    let (again, actions) = h.callback(&query);
    assert!(token_request(&actions).is_none());
    assert_eq!(response_to(&actions, again).unwrap().body, during.body);
}

#[test]
fn s19_a_flow_expires_after_its_lifetime_and_late_callbacks_get_the_expired_page() {
    let config = harness::config()
        .flow_lifetime(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut h = Harness::with(config);
    let started = h.start();
    assert!(h.advance(Duration::from_millis(59_999)).is_empty());
    let actions = h.advance(Duration::from_millis(1));
    assert_eq!(
        outcome(&actions, started.flow),
        Some(Err(FlowError::TimedOut(Step::Callback)))
    );

    let (conn, actions) = h.callback(&format!("code=c&state={}&{ISS}", started.state));
    let page = response_to(&actions, conn).unwrap();
    assert_eq!(page.status, 410);
    assert!(token_request(&actions).is_none());
    assert_eq!(
        h.engine
            .handle_redirect(h.now, &format!("code=c&state={}", started.state)),
        Err(Rejection::Expired)
    );
}

#[test]
fn s19_the_default_lifetime_is_ten_minutes() {
    let mut h = Harness::new();
    let started = h.start();
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now + Duration::from_secs(600))
    );
    let actions = h.advance(Duration::from_secs(600));
    assert_eq!(
        outcome(&actions, started.flow),
        Some(Err(FlowError::TimedOut(Step::Callback)))
    );
}

#[test]
fn s45_no_browser_request_can_start_a_flow_or_open_a_browser() {
    let mut h = Harness::new();
    for target in [
        "/login",
        "/start",
        "/authorize?client_id=x&redirect_uri=http%3A%2F%2Fevil",
        "/callback?start=1",
        "/callback?code=c&state=s",
        "/callback?login=1&provider=google",
        "/",
    ] {
        let (_, actions) = h.send(&harness::chromium_get(target));
        assert!(
            actions.iter().all(|a| matches!(a, Action::Respond { .. })),
            "{target}: {actions:?}"
        );
    }
    assert_eq!(h.engine.flows_in_progress(), 0);
    assert_eq!(
        h.engine.handle_redirect(h.now, "code=c&state=s"),
        Err(Rejection::NoPendingFlow)
    );
    assert!(h.drain().is_empty());
}

#[test]
fn a_callback_forwarded_by_the_ui_as_a_docker_deep_link_completes_the_flow() {
    let mut h = Harness::new();
    let started = h.start();
    let deep_link = format!(
        "docker-desktop://dashboard/extension-tab?extensionId=acme%2Flogin&code=c0de&state={}&{ISS}",
        started.state
    );
    assert_eq!(
        h.engine.handle_redirect(h.now, &deep_link),
        Ok(started.flow)
    );
    let actions = h.drain();
    let (exchange, request) = token_request(&actions).expect("token request");
    let body = String::from_utf8(request.into_body()).unwrap();
    assert!(body.contains("code=c0de&redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Fcallback"));
    h.token_response(exchange, &harness::token_ok());
    h.engine.handle_persisted(h.now, started.flow, Ok(()));
    let actions = h.drain();
    assert!(
        matches!(actions.as_slice(), [Action::Finished { result: Ok(_), .. }]),
        "no HTTP response: {actions:?}"
    );
}

#[test]
fn a_forwarded_callback_accepts_a_full_redirect_uri_or_a_bare_query() {
    for form in [
        "http://127.0.0.1:8080/callback?{q}",
        "?{q}",
        "{q}",
        "{q}#ignored",
    ] {
        let mut h = Harness::new();
        let started = h.start();
        let query = format!("code=c&state={}", started.state);
        let input = form.replace("{q}", &query);
        assert_eq!(
            h.engine.handle_redirect(h.now, &input),
            Ok(started.flow),
            "{input}"
        );
        assert!(token_request(&h.drain()).is_some());
    }
    let mut h = Harness::new();
    h.start();
    assert_eq!(
        h.engine.handle_redirect(h.now, "code=c&state=%zz"),
        Err(Rejection::Malformed)
    );
    let long = format!("code=c&state={}", "a".repeat(9000));
    assert_eq!(
        h.engine.handle_redirect(h.now, &long),
        Err(Rejection::Malformed)
    );
}

#[test]
fn cancelling_a_flow_answers_its_waiting_browser_and_reports_cancelled() {
    let mut h = Harness::new();
    let started = h.start();
    let (held, _, _) = h.to_exchange(&started);
    h.engine.cancel(h.now, started.flow);
    let actions = h.drain();
    assert_eq!(response_to(&actions, held).unwrap().status, 200);
    assert_eq!(
        outcome(&actions, started.flow),
        Some(Err(FlowError::Cancelled))
    );
    // Cancelling again, or a late token answer, does nothing.
    h.engine.cancel(h.now, started.flow);
    assert!(h.drain().is_empty());
}

#[test]
fn s19_an_input_arriving_after_the_lifetime_sees_the_flow_already_expired() {
    let mut h = Harness::new();
    let started = h.start();
    // The driver never called handle_timeout: the callback itself arrives too late.
    h.now += Duration::from_secs(601);
    let (conn, actions) = h.callback(&format!("code=c&state={}&{ISS}", started.state));
    assert!(token_request(&actions).is_none());
    assert_eq!(
        outcome(&actions, started.flow),
        Some(Err(FlowError::TimedOut(Step::Callback)))
    );
    assert_eq!(response_to(&actions, conn).unwrap().status, 410);
}

#[test]
fn s19_an_expired_state_is_forgotten_one_lifetime_after_its_deadline() {
    let mut h = Harness::new();
    let started = h.start();
    // One jump past the deadline and one more lifetime: the record is gone at once.
    h.advance(Duration::from_secs(2 * 600) + Duration::from_millis(1));
    let (conn, actions) = h.callback(&format!("code=c&state={}&{ISS}", started.state));
    assert_eq!(
        response_to(&actions, conn).unwrap().status,
        404,
        "no flow, no record"
    );
}

/// Docker Desktop's deep link to an extension's tab, as registered at the provider.
const EXTENSION_TAB: &str = "docker-desktop://dashboard/extension-tab?extensionId=acme/login";

#[test]
fn s5_an_application_redirect_uri_is_sent_verbatim_and_its_deep_link_completes_the_flow() {
    let config = harness::config()
        .redirect_uri("127.0.0.1", 0, "/callback")
        .app_redirect_uri(EXTENSION_TAB)
        .build()
        .expect("a private-use scheme redirect");
    assert!(!config.listens());
    assert_eq!(config.redirect_uri(), EXTENSION_TAB);
    // Nothing to bind, so port 0 is no obstacle.
    let mut h = Harness::with(config);
    assert_eq!(h.engine.redirect_uri(), EXTENSION_TAB);
    let started = h.start();
    let encoded = "redirect_uri=docker-desktop%3A%2F%2Fdashboard%2Fextension-tab%3FextensionId%3Dacme%2Flogin";
    assert!(started.url.contains(encoded), "{}", started.url);

    // The provider appends the response to the registered URI; the UI forwards it.
    let deep_link = format!("{EXTENSION_TAB}&code=c0de&state={}&{ISS}", started.state);
    assert_eq!(
        h.engine.handle_redirect(h.now, &deep_link),
        Ok(started.flow)
    );
    let actions = h.drain();
    let (exchange, request) = token_request(&actions).expect("token request");
    let body = String::from_utf8(request.into_body()).unwrap();
    assert!(body.contains(&format!("code=c0de&{encoded}")), "{body}");
    h.token_response(exchange, &harness::token_ok());
    h.engine.handle_persisted(h.now, started.flow, Ok(()));
    assert_eq!(outcome(&h.drain(), started.flow), Some(Ok(())));
}

#[test]
fn an_application_redirect_uri_must_be_a_private_use_scheme_without_fragment() {
    for uri in [
        "http://127.0.0.1:8080/callback",
        "HTTPS://app.example/callback",
        "docker-desktop://dashboard/open#frag",
        "docker desktop://x",
        "no-scheme",
        "docker-desktop://dash board",
        "",
    ] {
        let built = harness::config().app_redirect_uri(uri).build();
        assert_eq!(
            built.err(),
            Some(ConfigError::InvalidAppRedirect),
            "{uri:?}"
        );
    }
    assert!(
        harness::config()
            .app_redirect_uri("com.example.app:/oauth2redirect")
            .build()
            .is_ok()
    );
}

#[test]
fn s10_with_an_application_redirect_a_forged_deep_link_changes_nothing() {
    let config = harness::config()
        .app_redirect_uri(EXTENSION_TAB)
        .build()
        .expect("valid");
    let mut h = Harness::with(config);
    let started = h.start();
    let forged = format!("{EXTENSION_TAB}&code=c0de&state=forged-{}", started.state);
    assert_eq!(
        h.engine.handle_redirect(h.now, &forged),
        Err(Rejection::UnknownState)
    );
    assert!(h.drain().is_empty());
    assert_eq!(h.engine.flows_in_progress(), 1);
}

#[test]
fn a_loopback_redirect_uri_given_as_one_string_is_split_into_its_parts() {
    for (uri, host, port, sent) in [
        (
            "http://127.0.0.1:8080/callback",
            "127.0.0.1",
            8080,
            "http://127.0.0.1:8080/callback",
        ),
        (
            "HTTP://localhost:0/cb",
            "localhost",
            0,
            "http://localhost:0/cb",
        ),
        (
            "http://[::1]:9000/a/b",
            "[::1]",
            9000,
            "http://[::1]:9000/a/b",
        ),
        (
            "http://127.0.0.1:8080",
            "127.0.0.1",
            8080,
            "http://127.0.0.1:8080/",
        ),
    ] {
        let config = harness::config()
            .loopback_redirect_uri(uri)
            .build()
            .unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(
            (config.redirect_host(), config.redirect_port()),
            (host, port),
            "{uri}"
        );
        assert_eq!(config.redirect_uri(), sent);
    }
    for (uri, error) in [
        (
            "https://127.0.0.1:8080/callback",
            ConfigError::InvalidRedirectUri,
        ),
        ("http://127.0.0.1/callback", ConfigError::InvalidRedirectUri),
        (
            "http://127.0.0.1:/callback",
            ConfigError::InvalidRedirectUri,
        ),
        (
            "http://127.0.0.1:80x/callback",
            ConfigError::InvalidRedirectUri,
        ),
        (
            "http://user@127.0.0.1:80/callback",
            ConfigError::InvalidRedirectUri,
        ),
        ("http://[::1/callback", ConfigError::InvalidRedirectUri),
        ("http://:8080/callback", ConfigError::InvalidRedirectUri),
        ("127.0.0.1:8080/callback", ConfigError::InvalidRedirectUri),
        (
            "http://example.com:8080/callback",
            ConfigError::RedirectNotLoopback,
        ),
        (
            "http://127.0.0.1:8080/cb?x=1",
            ConfigError::InvalidRedirectPath,
        ),
        (
            "http://127.0.0.1:8080/cb#f",
            ConfigError::InvalidRedirectPath,
        ),
    ] {
        let built = harness::config().loopback_redirect_uri(uri).build();
        assert_eq!(built.err(), Some(error), "{uri}");
    }
}
