//! Building the authorization request and the rules around it: S1–S8, S20.

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey::{
    Action, ClientAuth, Config, ConfigError, ENTROPY_LEN, Engine, FlowError, FlowOptions, Landing,
    Provider, StartError, TokenSet, UrlError,
};
use latchkey_tests::harness::{
    self, Harness, entropy_from, query_value, response_to, token_request,
};
use sha2::{Digest, Sha256};

/// Every `(name, value)` of the URL's query, decoded.
fn query_pairs(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                harness::percent_decode(name),
                harness::percent_decode(value),
            )
        })
        .collect()
}

fn body_value(request: &http::Request<Vec<u8>>, name: &str) -> Option<String> {
    query_value(std::str::from_utf8(request.body()).unwrap(), name)
}

fn assert_all_distinct(values: &[String]) {
    let unique: std::collections::BTreeSet<&String> = values.iter().collect();
    assert_eq!(unique.len(), values.len(), "a value repeats");
}

fn unreserved(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

#[test]
fn s1_every_flow_uses_s256_and_the_challenge_matches_the_verifier_sent_later() {
    let mut h = Harness::new();
    let started = h.start();
    assert_eq!(
        query_value(&started.url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let challenge = query_value(&started.url, "code_challenge").unwrap();
    let (_, _, request) = h.to_exchange(&started);
    let verifier = body_value(&request, "code_verifier").unwrap();

    assert!(verifier.len() >= 43 && unreserved(&verifier), "{verifier}");
    assert_eq!(
        challenge,
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    );
    assert!(
        !started.url.contains(&verifier),
        "the verifier never goes into the URL"
    );
    assert!(!started.url.contains("code_verifier"));
}

#[test]
fn s1_verifiers_are_fresh_per_flow() {
    let mut h = Harness::new();
    let challenges: Vec<String> = (0..50)
        .map(|_| query_value(&h.start().url, "code_challenge").unwrap())
        .collect();
    assert_all_distinct(&challenges);
}

#[test]
fn s2_state_is_256_random_bits_fresh_per_flow() {
    let mut h = Harness::new();
    let states: Vec<String> = (0..50).map(|_| h.start().state).collect();
    for state in &states {
        // 43 base64url characters carry 256 bits.
        assert_eq!(state.len(), 43);
        assert!(unreserved(state));
    }
    assert_all_distinct(&states);
}

#[test]
fn s2_reused_entropy_is_refused() {
    let mut h = Harness::new();
    let entropy = entropy_from(99);
    h.engine.start(h.now, entropy).unwrap();
    assert_eq!(
        h.engine.start(h.now, entropy),
        Err(latchkey::StartError::ReusedEntropy)
    );
}

#[test]
fn s3_state_depends_on_entropy_alone_never_on_owner_or_provider() {
    let other = Provider::builder(
        "https://other.example/auth",
        "https://other.example/token",
        "c",
    )
    .build()
    .unwrap();
    let state_for = |options: FlowOptions| {
        let mut h = Harness::new();
        let flow = h
            .engine
            .start_with(h.now, entropy_from(7), options)
            .unwrap();
        h.started(flow).state
    };
    let plain = state_for(FlowOptions::new());
    let owned = state_for(FlowOptions::new().owner("alice@example.com"));
    let elsewhere = state_for(FlowOptions::new().provider(other));
    assert_eq!(plain, owned);
    assert_eq!(plain, elsewhere);
    assert!(!owned.contains("alice"));
}

#[test]
fn s4_authorization_url_keeps_the_endpoint_query_and_adds_each_parameter_once() {
    let provider = Provider::builder(
        "https://login.example/oauth2/authorize?tenant=contoso&p=B2C_1_signin",
        harness::TOKEN,
        "client-1",
    )
    .scopes(["openid", "offline_access", "api://x/read"])
    .param("access_type", "offline")
    .param("prompt", "consent")
    .verify_id_token(false)
    .build()
    .unwrap();
    let mut h = Harness::with(harness::config_with(provider).build().unwrap());
    let url = h.start().url;

    assert!(
        url.starts_with("https://login.example/oauth2/authorize?tenant=contoso&p=B2C_1_signin&")
    );
    assert!(!url.contains('#'));
    let pairs = query_pairs(&url);
    let names: Vec<String> = pairs.iter().map(|(n, _)| n.clone()).collect();
    assert_all_distinct(&names);
    let expected = [
        ("tenant", "contoso"),
        ("p", "B2C_1_signin"),
        ("response_type", "code"),
        ("client_id", "client-1"),
        ("scope", "openid offline_access api://x/read"),
        ("access_type", "offline"),
        ("prompt", "consent"),
        ("code_challenge_method", "S256"),
        ("redirect_uri", harness::REDIRECT_URI),
    ];
    for (name, value) in expected {
        assert!(
            pairs.iter().any(|(n, v)| n == name && v == value),
            "{name}={value} missing from {url}"
        );
    }
    assert_eq!(
        pairs.len(),
        expected.len() + 3,
        "plus state, code_challenge and (with openid) nonce"
    );
    let nonce = pairs
        .iter()
        .find(|(name, _)| name == "nonce")
        .expect("a nonce");
    assert_eq!(nonce.1.len(), 43, "256 bits, base64url");
}

#[test]
fn s4_a_parameter_that_would_appear_twice_is_a_config_error() {
    let endpoint_with = |query: &str| {
        Provider::builder(
            format!("https://idp.example/authorize?{query}"),
            harness::TOKEN,
            "c",
        )
        .build()
    };
    assert_eq!(
        endpoint_with("client_id=other").unwrap_err(),
        ConfigError::DuplicateParameter("client_id".into())
    );
    assert_eq!(
        endpoint_with("state=fixed").unwrap_err(),
        ConfigError::DuplicateParameter("state".into())
    );
    let extra = |name: &str| harness::provider().param(name, "x").build();
    for reserved in [
        "state",
        "redirect_uri",
        "code_challenge_method",
        "response_type",
        "scope",
        "nonce",
    ] {
        assert_eq!(
            extra(reserved).unwrap_err(),
            ConfigError::DuplicateParameter(reserved.into())
        );
    }
    let twice = harness::provider()
        .param("prompt", "login")
        .param("prompt", "consent")
        .build();
    assert_eq!(
        twice.unwrap_err(),
        ConfigError::DuplicateParameter("prompt".into())
    );
    let fragment =
        Provider::builder("https://idp.example/authorize#x", harness::TOKEN, "c").build();
    assert_eq!(
        fragment.unwrap_err(),
        ConfigError::InvalidUrl {
            field: "authorization endpoint",
            reason: UrlError::Fragment
        }
    );
}

#[test]
fn s5_token_request_redirect_uri_is_byte_identical_to_the_authorization_urls() {
    for (host, path, expected) in [
        ("127.0.0.1", "/callback", "http://127.0.0.1:8080/callback"),
        (
            "localhost",
            "/oauth/callback",
            "http://localhost:8080/oauth/callback",
        ),
        ("::1", "/cb", "http://[::1]:8080/cb"),
    ] {
        let config = harness::config()
            .redirect_uri(host, 8080, path)
            .build()
            .unwrap();
        let mut h = Harness::with(config);
        assert_eq!(h.engine.redirect_uri(), expected);
        let started = h.start();
        let sent = query_value(&started.url, "redirect_uri").unwrap();
        let request_line = format!(
            "GET {path}?code=c&state={}&iss=https%3A%2F%2Fidp.example HTTP/1.1",
            started.state
        );
        let host_header = format!(
            "Host: {}",
            expected
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap()
        );
        let (_, actions) = h.send(&harness::raw_request(&request_line, &[&host_header]));
        let (_, request) = token_request(&actions).expect("token request");
        assert_eq!(sent, expected);
        assert_eq!(body_value(&request, "redirect_uri").unwrap(), sent);
    }
}

#[test]
fn s6_endpoints_must_be_https_except_on_loopback() {
    let build = |authorize: &str, token: &str| Provider::builder(authorize, token, "c").build();
    assert!(build("http://127.0.0.1:3000/auth", "http://localhost:3000/token").is_ok());
    assert!(build("https://idp.example/auth", "http://[::1]:3000/token").is_ok());
    for (authorize, token, field) in [
        (
            "http://idp.example/auth",
            harness::TOKEN,
            "authorization endpoint",
        ),
        (
            harness::AUTHORIZE,
            "http://idp.example/token",
            "token endpoint",
        ),
        (
            "http://192.168.1.10/auth",
            harness::TOKEN,
            "authorization endpoint",
        ),
    ] {
        assert_eq!(
            build(authorize, token).unwrap_err(),
            ConfigError::InvalidUrl {
                field,
                reason: UrlError::Insecure
            }
        );
    }
    for bad in [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "https://idp.example/auth\n--flag",
        "https://idp.example/auth; rm -rf ~",
        "https://idp.example/a b",
        "",
    ] {
        assert!(build(bad, harness::TOKEN).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn s6_the_url_to_open_is_https_and_free_of_whitespace_and_controls() {
    let provider = harness::provider()
        .param("login_hint", "ada lovelace <ada@example.com>")
        .param("ui_locales", "de ü")
        .build()
        .unwrap();
    let mut h = Harness::with(harness::config_with(provider).build().unwrap());
    let url = h.start().url;
    assert!(url.starts_with("https://"));
    assert!(url.bytes().all(|b| b.is_ascii_graphic()), "{url}");
    let control = harness::provider().param("login_hint", "a\nb").build();
    assert_eq!(
        control.unwrap_err(),
        ConfigError::InvalidParameter("login_hint".into())
    );
}

#[test]
fn s6_bad_configuration_is_a_typed_error_never_a_panic() {
    let provider = || harness::provider().build().unwrap();
    let cases: Vec<(Result<Config, ConfigError>, ConfigError)> = vec![
        (
            harness::config()
                .redirect_uri("example.com", 8080, "/callback")
                .build(),
            ConfigError::RedirectNotLoopback,
        ),
        (
            harness::config()
                .redirect_uri("0.0.0.0", 8080, "/callback")
                .build(),
            ConfigError::RedirectNotLoopback,
        ),
        (
            harness::config()
                .redirect_uri("127.0.0.1", 8080, "callback")
                .build(),
            ConfigError::InvalidRedirectPath,
        ),
        (
            harness::config()
                .redirect_uri("127.0.0.1", 8080, "/cb?x=1")
                .build(),
            ConfigError::InvalidRedirectPath,
        ),
        (
            harness::config()
                .on_success(Landing::Redirect("not a url".into()))
                .build(),
            ConfigError::InvalidLanding,
        ),
        (
            harness::config()
                .flow_lifetime(std::time::Duration::ZERO)
                .build(),
            ConfigError::InvalidLimit("flow lifetime"),
        ),
    ];
    for (result, expected) in cases {
        assert_eq!(result.unwrap_err(), expected);
    }
    let builders = [
        (
            Provider::builder(harness::AUTHORIZE, harness::TOKEN, "").build(),
            ConfigError::InvalidClientId,
        ),
        (
            harness::provider().scope("two words").build(),
            ConfigError::InvalidScope("two words".into()),
        ),
        (
            Provider::builder(harness::AUTHORIZE, harness::TOKEN, "c")
                .require_iss(true)
                .build(),
            ConfigError::IssRequiresIssuer,
        ),
        (
            harness::provider()
                .client_auth(ClientAuth::SecretPost)
                .build(),
            ConfigError::MissingClientSecret,
        ),
    ];
    for (result, expected) in builders {
        assert_eq!(result.unwrap_err(), expected);
    }
    // An engine without its port starts device logins only: a browser login needs the port
    // in its redirect URI.
    let unbound = Config::builder(provider()).build().unwrap();
    let mut engine = Engine::new(unbound.clone()).unwrap();
    assert_eq!(
        engine.start(Instant::now(), [7; ENTROPY_LEN]).unwrap_err(),
        StartError::UnresolvedRedirectPort
    );
    assert!(engine.poll_action().is_none());
    let mut engine = Engine::new(unbound.with_redirect_port(49152)).unwrap();
    assert!(engine.start(Instant::now(), [7; ENTROPY_LEN]).is_ok());
}

#[test]
fn s7_each_flow_is_judged_against_its_own_providers_record() {
    let other = Provider::builder(
        "https://b.example/authorize",
        "https://b.example/token",
        "b-client",
    )
    .issuer("https://b.example")
    .build()
    .unwrap();
    let mut h = Harness::new();
    let a = h.start();
    let b = h.start_with(FlowOptions::new().provider(other.clone()));
    let b_flow = b.flow;
    assert!(b.url.starts_with("https://b.example/authorize?"));

    // Flow B's callback naming A's issuer is a mix-up: it fails, no token request.
    let (_, actions) = h.callback(&format!(
        "code=x&state={}&iss=https%3A%2F%2Fidp.example",
        b.state
    ));
    assert!(token_request(&actions).is_none());
    assert!(actions.iter().any(|action| matches!(
        action,
        Action::Finished { flow, result: Err(FlowError::IssuerMismatch { expected, .. }) }
            if *flow == b_flow && expected == "https://b.example"
    )));

    // Flow A goes to A's token endpoint; a fresh B flow goes to B's.
    let (_, _, request) = h.to_exchange(&a);
    assert_eq!(request.uri(), harness::TOKEN);
    let b2 = h.start_with(FlowOptions::new().provider(other));
    let (_, actions) = h.callback(&format!(
        "code=x&state={}&iss=https%3A%2F%2Fb.example",
        b2.state
    ));
    let (_, request) = token_request(&actions).unwrap();
    assert_eq!(request.uri(), "https://b.example/token");
    assert_eq!(
        body_value(&request, "client_id").as_deref(),
        Some("b-client")
    );
}

#[test]
fn s8_a_client_secret_never_turns_pkce_off() {
    for auth in [ClientAuth::SecretBasic, ClientAuth::SecretPost] {
        let mut h = Harness::with(
            harness::config_with(harness::confidential(auth))
                .build()
                .unwrap(),
        );
        let started = h.start();
        assert_eq!(
            query_value(&started.url, "code_challenge_method").as_deref(),
            Some("S256")
        );
        assert!(query_value(&started.url, "code_challenge").is_some());
        let (_, _, request) = h.to_exchange(&started);
        assert!(body_value(&request, "code_verifier").is_some(), "{auth:?}");
    }
}

#[test]
fn s20_a_new_login_for_the_same_owner_supersedes_the_previous_one() {
    let mut h = Harness::new();
    let start = |h: &mut Harness, owner: &str| {
        let entropy = h.entropy();
        let flow = h
            .engine
            .start_with(h.now, entropy, FlowOptions::new().owner(owner))
            .unwrap();
        let actions = h.drain();
        (flow, actions)
    };
    let (first, _) = start(&mut h, "alice");
    let (bob, _) = start(&mut h, "bob");
    let (second, actions) = start(&mut h, "alice");

    assert!(matches!(
        actions.first(),
        Some(Action::Finished { flow, result: Err(FlowError::Superseded) }) if *flow == first
    ));
    assert!(matches!(actions.get(1), Some(Action::OpenBrowser { flow, .. }) if *flow == second));
    assert_eq!(
        h.engine.flows_in_progress(),
        2,
        "bob's flow and alice's new one"
    );
    h.engine.cancel(h.now, bob);
    assert_eq!(h.engine.flows_in_progress(), 1);
}

#[test]
fn s20_the_superseded_flows_callback_gets_the_expired_page_and_no_token_request() {
    let mut h = Harness::new();
    let first = h.start_with(FlowOptions::new().owner("alice"));
    let second = h.start_with(FlowOptions::new().owner("alice"));

    let (conn, actions) = h.callback(&format!(
        "code=x&state={}&iss=https%3A%2F%2Fidp.example",
        first.state
    ));
    assert!(token_request(&actions).is_none());
    assert_eq!(response_to(&actions, conn).unwrap().status, 410);
    let (_, _, request) = h.to_exchange(&second);
    assert_eq!(request.uri(), harness::TOKEN);
}

#[test]
fn the_provider_gives_back_its_authorization_endpoint_as_configured() {
    for endpoint in [
        "https://idp.example/authorize",
        "https://idp.example/authorize?tenant=a%20b&x=1",
        "http://127.0.0.1:9000/auth",
    ] {
        let provider = Provider::builder(endpoint, "https://idp.example/token", "client")
            .scopes(["openid"])
            .param("prompt", "consent")
            .verify_id_token(false)
            .build()
            .expect("a valid provider");
        assert_eq!(provider.authorization_endpoint(), endpoint);
    }
    let trailing = Provider::builder("https://idp.example/a?", "https://idp.example/t", "c")
        .build()
        .expect("a valid provider");
    assert_eq!(trailing.authorization_endpoint(), "https://idp.example/a");
}

#[test]
fn rfc8707_resources_go_to_the_authorization_code_refresh_and_device_requests() {
    let provider = harness::provider()
        .resource("https://api.example/")
        .resource("urn:example:billing")
        .revocation_endpoint("https://idp.example/revoke")
        .device_authorization_endpoint("https://idp.example/device")
        .build()
        .unwrap();
    assert_eq!(
        provider.resources(),
        ["https://api.example/", "urn:example:billing"]
    );
    let mut h = Harness::with(harness::config_with(provider.clone()).build().unwrap());
    let started = h.start();
    let resources: Vec<String> = query_pairs(&started.url)
        .into_iter()
        .filter(|(name, _)| name == "resource")
        .map(|(_, value)| value)
        .collect();
    assert_eq!(resources, ["https://api.example/", "urn:example:billing"]);

    let body =
        |request: &http::Request<Vec<u8>>| String::from_utf8(request.body().clone()).unwrap();
    let (_, _, exchange) = h.to_exchange(&started);
    assert!(
        body(&exchange).ends_with(
            "&resource=https%3A%2F%2Fapi.example%2F&resource=urn%3Aexample%3Abilling&client_id=latchkey-test"
        ),
        "{}",
        body(&exchange)
    );

    let device = h
        .engine
        .start_device(h.now, FlowOptions::new())
        .expect("a device endpoint");
    let request = h
        .drain()
        .into_iter()
        .find_map(|action| match action {
            Action::RequestDeviceCode { flow, request, .. } if flow == device => Some(request),
            _ => None,
        })
        .expect("a device authorization request");
    assert_eq!(
        body(request.request()),
        "scope=openid+email&resource=https%3A%2F%2Fapi.example%2F&resource=urn%3Aexample%3Abilling&client_id=latchkey-test"
    );
}

#[test]
fn rfc8707_a_resource_is_an_absolute_uri_without_fragment() {
    for bad in [
        "api.example",
        "/relative",
        "https://api.example/#frag",
        "https://api example/",
        "1http://x/",
        "",
    ] {
        assert_eq!(
            harness::provider().resource(bad).build().err(),
            Some(ConfigError::InvalidResource(bad.to_owned())),
            "{bad:?}"
        );
    }
    // Resources are set with `resource`, never as a free parameter.
    assert_eq!(
        harness::provider()
            .param("resource", "https://api.example/")
            .build()
            .err(),
        Some(ConfigError::DuplicateParameter("resource".into()))
    );
}

#[test]
fn rfc8707_the_tokens_of_a_login_remember_the_apis_they_are_for() {
    let with_resources = harness::provider()
        .resource("https://api.example/")
        .resource("urn:example:billing")
        .build()
        .unwrap();
    // A whole login whose token endpoint answers `body`: the tokens it stores.
    let login = |provider: &Provider, body: &str| -> TokenSet {
        let mut h = Harness::with(harness::config_with(provider.clone()).build().unwrap());
        let started = h.start();
        let (_, exchange, _) = h.to_exchange(&started);
        h.token_response(exchange, &harness::json_response(200, body))
            .into_iter()
            .find_map(|action| match action {
                Action::Persist { flow, tokens } if flow == started.flow => Some(tokens),
                _ => None,
            })
            .expect("the login stores its tokens")
    };
    let plain = r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600}"#;
    assert_eq!(
        login(&with_resources, plain).audience(),
        ["https://api.example/", "urn:example:billing"]
    );
    // Entra ID v1 names the API in its answer: that wins, and stays among the extras.
    let entra =
        r#"{"access_token":"at-2","token_type":"Bearer","resource":"https://graph.microsoft.com"}"#;
    let tokens = login(&with_resources, entra);
    assert_eq!(tokens.audience(), ["https://graph.microsoft.com"]);
    assert_eq!(tokens.extra()["resource"], "https://graph.microsoft.com");
    // A `resource` that names nothing usable is no reason to fail the login.
    let junk = r#"{"access_token":"at-3","token_type":"Bearer","resource":{"uri":1}}"#;
    assert_eq!(
        login(&with_resources, junk).audience(),
        ["https://api.example/", "urn:example:billing"]
    );
    // Nothing asked for, nothing named: nothing known.
    let without = harness::provider().build().unwrap();
    assert!(login(&without, plain).audience().is_empty());
}
