//! The token request and what comes back: S32, S33, S35, S36, S43, and the deadlines of the
//! token exchange (S34) and of the token store.

use std::time::Duration;

use latchkey::http1::write_request;
use latchkey::{
    Action, BadTokenResponse, ClientAuth, ConfigError, ConnId, ExchangeId, FlowError, Landing,
    Provider, Step, StoreError, TokenSet, TokenType, TransportError, TransportErrorKind,
};
use latchkey_tests::harness::{
    self, Harness, Started, entropy_from, json_response, query_value, token_ok, token_request,
};
use secrecy::ExposeSecret;

/// The body of the harness's token requests up to the verifier.
const BODY_START: &str = "grant_type=authorization_code&code=auth-code-1&redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Fcallback&code_verifier=";

/// A flow driven up to its token request.
struct Exchange {
    flow: Started,
    conn: ConnId,
    id: ExchangeId,
    request: http::Request<Vec<u8>>,
}

/// A flow of `h` driven up to its token request: exactly one, and the browser is held.
fn exchange(h: &mut Harness) -> Exchange {
    let flow = h.start();
    let (conn, actions) = h.callback(&format!(
        "code=auth-code-1&state={}&iss=https%3A%2F%2Fidp.example",
        flow.state
    ));
    assert_eq!(count(&actions, is_token_request), 1, "{actions:?}");
    assert_eq!(response_bytes(&actions, conn), None);
    let (id, request) = token_request(&actions).expect("token request");
    Exchange {
        flow,
        conn,
        id,
        request,
    }
}

fn body(request: &http::Request<Vec<u8>>) -> &str {
    std::str::from_utf8(request.body()).expect("ASCII body")
}

/// RFC 4648 base64, standard (padded) or URL-safe (unpadded): enough for these tests, so
/// that expected values are derived here rather than with the code under test.
fn base64(bytes: &[u8], url_safe: bool) -> String {
    let tail: &[u8; 2] = if url_safe { b"-_" } else { b"+/" };
    let alphabet: Vec<u8> = (b'A'..=b'Z')
        .chain(b'a'..=b'z')
        .chain(b'0'..=b'9')
        .chain(tail.iter().copied())
        .collect();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
        }
        if !url_safe {
            out.extend(std::iter::repeat_n('=', 3 - chunk.len()));
        }
    }
    out
}

/// The verifier of the harness's first flow: base64url of the first 32 bytes of its entropy
/// (RFC 7636 §4.1, as `latchkey::ENTROPY_LEN` documents).
fn first_verifier() -> String {
    base64(&entropy_from(1)[..32], true)
}

/// A token endpoint answer: `status`, an optional content type, `body`.
fn http_response(status: u16, content_type: Option<&str>, body: &str) -> Vec<u8> {
    let content_type = content_type.map_or(String::new(), |t| format!("Content-Type: {t}\r\n"));
    format!(
        "HTTP/1.1 {status} X\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The raw bytes written to `conn`, if any.
fn response_bytes(actions: &[Action], conn: ConnId) -> Option<Vec<u8>> {
    actions.iter().find_map(|action| match action {
        Action::Respond { conn: c, bytes, .. } if *c == conn => Some(bytes.to_vec()),
        _ => None,
    })
}

/// The failure page of the default configuration, taken from a denied login.
fn failure_page() -> Vec<u8> {
    let mut h = Harness::new();
    let flow = h.start();
    let (conn, actions) = h.callback(&format!(
        "error=access_denied&state={}&iss=https%3A%2F%2Fidp.example",
        flow.state
    ));
    response_bytes(&actions, conn).expect("failure page")
}

/// The outcome `actions` report for `flow`: exactly one `Finished`.
fn finished(actions: &[Action], flow: &Started) -> Result<TokenSet, FlowError> {
    let mut results = actions.iter().filter_map(|action| match action {
        Action::Finished { flow: f, result } if *f == flow.flow => Some(result.clone()),
        _ => None,
    });
    let result = results.next().expect("the flow finished");
    assert!(results.next().is_none(), "finished twice");
    result
}

fn count(actions: &[Action], matches: fn(&Action) -> bool) -> usize {
    actions.iter().filter(|a| matches(a)).count()
}

fn is_token_request(action: &Action) -> bool {
    matches!(action, Action::SendTokenRequest { .. })
}

fn is_persist(action: &Action) -> bool {
    matches!(action, Action::Persist { .. })
}

/// The flow of `ex` failed: its browser got the failure page, and nothing else happens
/// afterwards, even when the clock runs on (no retry, no persist).
fn assert_failed(h: &mut Harness, ex: &Exchange, mut actions: Vec<Action>) -> FlowError {
    assert_eq!(response_bytes(&actions, ex.conn), Some(failure_page()));
    let error = finished(&actions, &ex.flow).expect_err("the flow failed");
    actions.extend(h.advance(Duration::from_secs(3600)));
    assert_eq!(count(&actions, is_token_request), 0, "never retried");
    assert_eq!(count(&actions, is_persist), 0);
    assert_eq!(h.engine.flows_in_progress(), 0);
    error
}

// ----- S32: the token request -----

#[test]
fn s32_public_client_token_request_golden_bytes() {
    let mut h = Harness::new();
    let ex = exchange(&mut h);
    let verifier = first_verifier();
    assert_eq!(verifier.len(), 43);
    assert!(
        verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    );
    assert_ne!(verifier, ex.flow.state);
    assert!(!ex.flow.url.contains(&verifier));
    let expected_body = format!("{BODY_START}{verifier}&client_id=latchkey-test");

    let request = &ex.request;
    assert_eq!(request.method(), http::Method::POST);
    assert_eq!(request.uri(), harness::TOKEN);
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
        .collect();
    assert_eq!(
        headers,
        [
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ]
    );
    assert_eq!(body(request), expected_body);
    // S5: the redirect URI is the authorization request's, byte for byte.
    assert_eq!(
        query_value(body(request), "redirect_uri"),
        query_value(&ex.flow.url, "redirect_uri")
    );

    let mut wire = Vec::new();
    write_request(request, &mut wire).expect("serializable");
    assert_eq!(
        String::from_utf8(wire).unwrap(),
        format!(
            "POST /token HTTP/1.1\r\n\
             host: idp.example\r\n\
             content-type: application/x-www-form-urlencoded\r\n\
             accept: application/json\r\n\
             content-length: {}\r\n\
             connection: close\r\n\
             \r\n\
             {expected_body}",
            expected_body.len()
        )
    );
}

// ----- S33: client authentication -----

#[test]
fn s33_exactly_one_client_authentication_method() {
    let tail = "&client_id=aaa%2F%3B%26";
    for (auth, secret, authorization, body_tail) in [
        (
            ClientAuth::SecretBasic,
            Some("bbb/;&"),
            Some("Basic YWFhJTJGJTNCJTI2OmJiYiUyRiUzQiUyNg=="),
            String::new(),
        ),
        (
            ClientAuth::SecretPost,
            Some("bbb/;&"),
            None,
            format!("{tail}&client_secret=bbb%2F%3B%26"),
        ),
        (ClientAuth::None, None, None, tail.to_owned()),
    ] {
        let mut provider =
            Provider::builder(harness::AUTHORIZE, harness::TOKEN, "aaa/;&").client_auth(auth);
        if let Some(secret) = secret {
            provider = provider.client_secret(secret.to_owned().into());
        }
        let config = harness::config_with(provider.build().unwrap()).build();
        let mut h = Harness::with(config.unwrap());
        let request = exchange(&mut h).request;

        let header = request.headers().get(http::header::AUTHORIZATION);
        assert_eq!(
            header.map(|v| v.to_str().unwrap()),
            authorization,
            "{auth:?}"
        );
        assert!(header.is_none_or(|v| v.is_sensitive()));
        let verifier = first_verifier();
        assert_eq!(body(&request), format!("{BODY_START}{verifier}{body_tail}"));
        // Never a secret (or the code) in the URL.
        assert_eq!(request.uri(), harness::TOKEN);
    }
    // The header of the basic case, derived independently.
    assert_eq!(
        base64(b"aaa%2F%3B%26:bbb%2F%3B%26", false),
        "YWFhJTJGJTNCJTI2OmJiYiUyRiUzQiUyNg=="
    );
}

#[test]
fn s33_basic_credentials_are_form_encoded_before_base64() {
    // No method named: a secret means client_secret_basic.
    let provider = harness::provider()
        .client_secret("s3cr3t+/:%&= ~!".to_owned().into())
        .build()
        .unwrap();
    assert_eq!(provider.client_auth(), ClientAuth::SecretBasic);
    let mut h = Harness::with(harness::config_with(provider).build().unwrap());
    let request = exchange(&mut h).request;
    let expected = base64(b"latchkey-test:s3cr3t%2B%2F%3A%25%26%3D+%7E%21", false);
    assert_eq!(
        request.headers()[http::header::AUTHORIZATION],
        format!("Basic {expected}").as_str()
    );
    assert!(!body(&request).contains("client_"));
}

#[test]
fn s33_config_demands_a_secret_exactly_when_the_method_uses_one() {
    let build = |auth: Option<ClientAuth>, secret: Option<&str>| {
        let mut builder = harness::provider();
        if let Some(auth) = auth {
            builder = builder.client_auth(auth);
        }
        if let Some(secret) = secret {
            builder = builder.client_secret(secret.to_owned().into());
        }
        builder.build().map(|p| p.client_auth())
    };
    use ClientAuth::{None as Public, SecretBasic, SecretPost};
    assert_eq!(
        build(Some(SecretBasic), None),
        Err(ConfigError::MissingClientSecret)
    );
    assert_eq!(
        build(Some(SecretPost), None),
        Err(ConfigError::MissingClientSecret)
    );
    assert_eq!(
        build(Some(Public), Some("s")),
        Err(ConfigError::UnusedClientSecret)
    );
    assert_eq!(build(None, Some("s")), Ok(SecretBasic));
    assert_eq!(build(None, None), Ok(Public));
}

// ----- S35: provider-shaped successes -----

/// What a provider's success must turn into.
struct Expected {
    access: &'static str,
    token_type: TokenType,
    defaulted: bool,
    expires_in: Option<u64>,
    refresh: Option<&'static str>,
    scope: Option<&'static str>,
}

fn assert_tokens(name: &str, tokens: &TokenSet, wall: std::time::SystemTime, e: &Expected) {
    assert_eq!(tokens.access_token().expose_secret(), e.access, "{name}");
    assert_eq!(tokens.token_type(), &e.token_type, "{name}");
    assert_eq!(tokens.token_type_defaulted(), e.defaulted, "{name}");
    let expires_at = e.expires_in.map(|s| wall + Duration::from_secs(s));
    assert_eq!(tokens.expires_at(), expires_at, "{name}");
    let refresh = tokens.refresh_token().map(|t| t.expose_secret());
    assert_eq!(refresh, e.refresh, "{name}");
    assert_eq!(tokens.scope(), e.scope, "{name}");
}

#[test]
fn s35_provider_shaped_successes_end_the_flow_with_tokens() {
    let bearer = |access, expires_in, refresh, scope| Expected {
        access,
        token_type: TokenType::Bearer,
        defaulted: false,
        expires_in,
        refresh,
        scope,
    };
    let cases = [
        (
            "Google",
            http_response(
                200,
                Some("application/json; charset=utf-8"),
                r#"{"access_token":"ya29.a0AfH6SM","expires_in":3599,"refresh_token":"1//0gLmRt","scope":"openid https://www.googleapis.com/auth/userinfo.email","token_type":"Bearer","id_token":"eyJhbGciOiJSUzI1NiJ9.e30.c2ln"}"#,
            ),
            bearer(
                "ya29.a0AfH6SM",
                Some(3599),
                Some("1//0gLmRt"),
                Some("openid https://www.googleapis.com/auth/userinfo.email"),
            ),
        ),
        (
            "Azure",
            http_response(
                200,
                Some("application/json"),
                r#"{"token_type":"Bearer","scope":"openid email","expires_in":"3599","ext_expires_in":"3599","access_token":"eyJ0eXAi.azure","refresh_token":"0.AXwA-azure"}"#,
            ),
            bearer(
                "eyJ0eXAi.azure",
                Some(3599),
                Some("0.AXwA-azure"),
                Some("openid email"),
            ),
        ),
        (
            "GitHub",
            http_response(
                200,
                Some("application/x-www-form-urlencoded"),
                "access_token=gho_x&scope=repo%2Cgist&token_type=bearer",
            ),
            bearer("gho_x", None, None, Some("repo,gist")),
        ),
        (
            "LinkedIn",
            http_response(
                200,
                Some("application/json"),
                r#"{"access_token":"AQV8li","expires_in":5184000,"scope":"openid,email"}"#,
            ),
            Expected {
                defaulted: true,
                ..bearer("AQV8li", Some(5_184_000), None, Some("openid,email"))
            },
        ),
        (
            "StackExchange",
            http_response(200, None, r#"{"access_token":"se(x)","expires":86399}"#),
            Expected {
                defaulted: true,
                ..bearer("se(x)", Some(86_399), None, None)
            },
        ),
    ];
    for (name, raw, expected) in cases {
        let mut h = Harness::new();
        let ex = exchange(&mut h);
        let actions = h.token_response(ex.id, &raw);
        let [Action::Persist { flow, tokens }] = &actions[..] else {
            panic!("{name}: expected exactly Persist, got {actions:?}");
        };
        assert_eq!(*flow, ex.flow.flow);
        assert_tokens(name, tokens, h.wall, &expected);

        h.engine.handle_persisted(h.now, ex.flow.flow, Ok(()));
        let actions = h.drain();
        let tokens = finished(&actions, &ex.flow).expect(name);
        assert_tokens(name, &tokens, h.wall, &expected);
        assert!(response_bytes(&actions, ex.conn).is_some_and(|page| page != failure_page()));
    }
}

// ----- S36: refusals and bad answers -----

#[test]
fn s36_refusals_and_bad_answers_fail_the_flow_once_without_retry() {
    type Check = fn(&FlowError) -> bool;
    let cases: [(&str, Option<Vec<u8>>, Check); 6] = [
        (
            "400 invalid_grant",
            Some(json_response(
                400,
                r#"{"error":"invalid_grant","error_description":"The code has expired"}"#,
            )),
            |e| {
                matches!(e, FlowError::TokenRejected { status: 400, error }
                    if error.code == "invalid_grant"
                        && error.description.as_deref() == Some("The code has expired"))
            },
        ),
        (
            "401 invalid_client",
            Some(json_response(401, r#"{"error":"invalid_client"}"#)),
            |e| {
                matches!(e, FlowError::TokenRejected { status: 401, error }
                    if error.code == "invalid_client")
            },
        ),
        (
            "GitHub 200 error",
            Some(http_response(
                200,
                Some("application/x-www-form-urlencoded"),
                "error=bad_verification_code&error_description=The+code+passed+is+incorrect+or+expired.&error_uri=https%3A%2F%2Fdocs.github.com%2Fapps",
            )),
            |e| {
                matches!(e, FlowError::TokenRejected { status: 200, error }
                    if error.code == "bad_verification_code")
            },
        ),
        (
            "500 HTML",
            Some(http_response(
                500,
                Some("text/html"),
                "<html>\n<head><title>500 Internal Server Error</title></head>\n<body>nginx</body>\n</html>\n",
            )),
            |e| {
                *e == FlowError::BadTokenResponse {
                    status: 500,
                    reason: BadTokenResponse::UnexpectedStatus,
                }
            },
        ),
        (
            "200 without access_token",
            Some(json_response(
                200,
                r#"{"token_type":"Bearer","expires_in":3600}"#,
            )),
            |e| {
                *e == FlowError::BadTokenResponse {
                    status: 200,
                    reason: BadTokenResponse::MissingAccessToken,
                }
            },
        ),
        (
            "transport failure",
            None,
            |e| matches!(e, FlowError::Transport(t) if t.kind() == TransportErrorKind::Connect),
        ),
    ];
    for (name, reply, check) in cases {
        let mut h = Harness::new();
        let ex = exchange(&mut h);
        let actions = match reply {
            Some(raw) => h.token_response(ex.id, &raw),
            None => {
                let error = TransportError::new(TransportErrorKind::Connect, "refused");
                h.engine.handle_token_failure(h.now, ex.id, error);
                h.drain()
            }
        };
        let error = assert_failed(&mut h, &ex, actions);
        assert!(check(&error), "{name}: {error:?}");
    }
}

// ----- S34: the exchange's deadline; the store -----

#[test]
fn s34_no_token_answer_within_the_exchange_timeout_fails_the_flow() {
    let mut h = Harness::new();
    let ex = exchange(&mut h);
    assert!(h.advance(Duration::from_millis(29_999)).is_empty());
    let actions = h.advance(Duration::from_millis(1));
    let error = assert_failed(&mut h, &ex, actions);
    assert_eq!(error, FlowError::TimedOut(Step::TokenExchange));
    // The late answer changes nothing.
    assert!(h.token_response(ex.id, &token_ok()).is_empty());
    let late = TransportError::new(TransportErrorKind::Io, "reset");
    h.engine.handle_token_failure(h.now, ex.id, late);
    assert!(h.drain().is_empty());
}

#[test]
fn s30_a_failed_store_ends_the_flow_with_the_failure_page() {
    let mut h = Harness::new();
    let ex = exchange(&mut h);
    assert_eq!(count(&h.token_response(ex.id, &token_ok()), is_persist), 1);
    h.engine
        .handle_persisted(h.now, ex.flow.flow, Err(StoreError::new("disk full")));
    let actions = h.drain();
    let error = assert_failed(&mut h, &ex, actions);
    assert!(
        matches!(&error, FlowError::Storage(e) if e.detail() == "disk full"),
        "{error:?}"
    );
}

#[test]
fn s30_a_store_that_never_answers_times_out() {
    let mut h = Harness::new();
    let ex = exchange(&mut h);
    h.advance(Duration::from_secs(20)); // the store's deadline counts from the tokens
    assert_eq!(count(&h.token_response(ex.id, &token_ok()), is_persist), 1);
    assert!(h.advance(Duration::from_millis(29_999)).is_empty());
    let actions = h.advance(Duration::from_millis(1));
    let error = assert_failed(&mut h, &ex, actions);
    assert_eq!(error, FlowError::TimedOut(Step::Storage));
}

// ----- S43: no bearer token in any URL -----

#[test]
fn s43_no_url_the_engine_emits_carries_a_token_or_the_code() {
    let config = harness::config()
        .on_success(Landing::Redirect("docker-desktop://dashboard/open".into()))
        .build();
    let mut h = Harness::with(config.unwrap());
    let ex = exchange(&mut h);
    let mut actions = h.token_response(ex.id, &token_ok());
    h.engine.handle_persisted(h.now, ex.flow.flow, Ok(()));
    actions.extend(h.drain());
    let tokens = finished(&actions, &ex.flow).expect("success");

    let mut wire = Vec::new();
    write_request(&ex.request, &mut wire).unwrap();
    let request_line = String::from_utf8_lossy(&wire)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let response = String::from_utf8(response_bytes(&actions, ex.conn).unwrap()).unwrap();
    let location = response
        .lines()
        .find_map(|line| line.strip_prefix("Location: "))
        .expect("a 303");
    let urls = [
        ex.flow.url.as_str(),
        &ex.request.uri().to_string(),
        &request_line,
        location,
    ];
    let access = tokens.access_token().expose_secret();
    let refresh = tokens.refresh_token().unwrap().expose_secret();
    assert_eq!((access, refresh), ("at-SECRET-1", "rt-SECRET-1"));
    for url in urls {
        for secret in [access, refresh, "auth-code-1"] {
            assert!(!url.contains(secret), "{url} contains {secret}");
        }
    }
    assert!(
        body(&ex.request).contains("code=auth-code-1"),
        "the code goes in the body"
    );
}
