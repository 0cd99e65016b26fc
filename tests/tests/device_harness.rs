//! The device authorization grant (RFC 8628) harness, proven against the OpenID-certified
//! `oidc-provider` without latchkey's engine: the device's side is hand-written HTTP (the
//! device authorization request, then polls of the token endpoint with
//! `grant_type=urn:ietf:params:oauth:grant-type:device_code`), and the user's side is the
//! scripted agent ([`oidc_agent::device`]) or headless Chromium
//! ([`oidc::device_in_chromium`]).
//!
//! Each test starts a provider of its own. Missing tools (Node.js, the npm packages,
//! Chromium) fail with installation advice; they never skip. Every request and every
//! browser has a deadline, so a failing test fails instead of hanging.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_devidp::agent;
use latchkey_tests::oidc::{
    self, BASIC, DEVICE, DEVICE_CODE_GRANT, DEVICE_GRANT_CLIENTS, ES256, OidcProvider, POST,
    PUBLIC, RegisteredClient,
};
use latchkey_tests::oidc_agent::{self, Agent, DeviceChoice, LOGIN};
use serde_json::Value;

/// oidc-provider's device code lifetime (`ttl.DeviceCode`, 10 × 60 s, in
/// `lib/helpers/defaults.js`); `idp.mjs` keeps it.
const DEVICE_CODE_LIFETIME: u64 = 600;
/// Its access token lifetime (`ttl.AccessToken`), likewise kept.
const ACCESS_TOKEN_LIFETIME: u64 = 3600;
/// The characters of its user codes (`charset: 'base-20'`), shown as `XXXX-XXXX`.
const USER_CODE_CHARACTERS: &str = "BCDFGHJKLMNPQRSTVWXZ";

// ----- the device's side, by hand -----

/// A JSON answer of the provider.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    json: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn text(&self, member: &str) -> &str {
        self.json[member].as_str().unwrap_or_default()
    }

    /// The OAuth error code of a 400 answer.
    fn error(&self) -> &str {
        assert_eq!(self.status, 400, "{self:?}");
        self.text("error")
    }
}

/// `application/x-www-form-urlencoded` for a value (RFC 6749 Appendix B).
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

/// POSTs `params` to `url` as `client` authenticates itself (RFC 6749 §2.3.1: form-encoded
/// id and secret in Basic, or both in the body; a public client sends its id), and reads
/// the JSON answer.
fn post_as(client: RegisteredClient, url: &str, params: &[(&str, &str)]) -> Answer {
    let mut fields: Vec<(&str, &str)> = params.to_vec();
    let mut headers = vec![(
        "Content-Type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    headers.push(("Accept", "application/json".to_owned()));
    match (client.method, client.secret) {
        ("client_secret_basic", Some(secret)) => {
            let pair = format!("{}:{}", form_encode(client.id), form_encode(secret));
            headers.push(("Authorization", format!("Basic {}", STANDARD.encode(pair))));
        }
        ("client_secret_post", Some(secret)) => {
            fields.push(("client_id", client.id));
            fields.push(("client_secret", secret));
        }
        _ => fields.push(("client_id", client.id)),
    }
    let body: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let (status, headers, body) = agent::post(url, &headers, body.join("&").as_bytes())
        .unwrap_or_else(|error| panic!("POST {url}: {error}"));
    let json = serde_json::from_slice(&body).unwrap_or_else(|error| {
        panic!(
            "POST {url} answered {status} without JSON ({error}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    Answer {
        status,
        headers,
        json,
    }
}

/// The device authorization request (RFC 8628 §3.1).
fn device_authorization(idp: &OidcProvider, client: RegisteredClient, scope: &str) -> Answer {
    post_as(
        client,
        &idp.device_authorization_endpoint(),
        &[("scope", scope)],
    )
}

/// A successful device authorization response (RFC 8628 §3.2).
#[derive(Debug)]
struct Authorized {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: String,
}

/// The device authorization request, which must succeed.
fn authorized(idp: &OidcProvider, client: RegisteredClient, scope: &str) -> Authorized {
    let answer = device_authorization(idp, client, scope);
    assert_eq!(answer.status, 200, "{} {answer:?}", client.id);
    Authorized {
        device_code: answer.text("device_code").to_owned(),
        user_code: answer.text("user_code").to_owned(),
        verification_uri: answer.text("verification_uri").to_owned(),
        verification_uri_complete: answer.text("verification_uri_complete").to_owned(),
    }
}

/// One poll of the token endpoint (RFC 8628 §3.4).
fn poll(idp: &OidcProvider, client: RegisteredClient, device_code: &str) -> Answer {
    post_as(
        client,
        &idp.token_endpoint(),
        &[
            ("grant_type", DEVICE_CODE_GRANT),
            ("device_code", device_code),
        ],
    )
}

/// A refresh of `refresh_token` (RFC 6749 §6).
fn refresh(idp: &OidcProvider, client: RegisteredClient, refresh_token: &str) -> Answer {
    post_as(
        client,
        &idp.token_endpoint(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
}

/// The claims of a JWS, unverified (the ID token tests verify signatures).
fn claims(jws: &str) -> Value {
    let payload = jws.split('.').nth(1).expect("a JWS has a payload");
    let bytes = URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Checks a successful token response to `client` for `user`, with an ID token when
/// `openid` was asked for; returns its refresh token. Every client with the device grant
/// also has the refresh grant, and `idp.mjs` issues refresh tokens to every such client,
/// with or without `offline_access`.
fn assert_tokens(
    idp: &OidcProvider,
    client: RegisteredClient,
    answer: &Answer,
    user: &str,
    openid: bool,
) -> String {
    assert_eq!(answer.status, 200, "{} {answer:?}", client.id);
    assert_eq!(
        answer.header("cache-control"),
        Some("no-store"),
        "{answer:?}"
    );
    assert!(!answer.text("access_token").is_empty(), "{answer:?}");
    assert_eq!(answer.text("token_type"), "Bearer", "{answer:?}");
    assert_eq!(
        answer.json["expires_in"].as_u64(),
        Some(ACCESS_TOKEN_LIFETIME),
        "{answer:?}"
    );
    let refresh_token = answer.text("refresh_token");
    assert!(!refresh_token.is_empty(), "no refresh token: {answer:?}");
    if openid {
        let claims = claims(answer.text("id_token"));
        assert_eq!(claims["sub"], user, "{claims}");
        assert_eq!(claims["aud"], client.id, "{claims}");
        assert_eq!(claims["iss"], idp.issuer(), "{claims}");
    } else {
        assert!(answer.json.get("id_token").is_none(), "{answer:?}");
    }
    refresh_token.to_owned()
}

// ----- the tests -----

#[test]
fn discovery_and_the_device_authorization_response_have_the_rfc_8628_fields() {
    let idp = OidcProvider::start();
    let (status, _, body) = agent::get(
        &format!("{}/.well-known/openid-configuration", idp.issuer()),
        &[("Accept", "application/json")],
    )
    .expect("discovery");
    assert_eq!(status, 200);
    let metadata: Value = serde_json::from_slice(&body).expect("JSON metadata");
    assert_eq!(
        metadata["device_authorization_endpoint"],
        idp.device_authorization_endpoint().as_str()
    );
    let grants = metadata["grant_types_supported"]
        .as_array()
        .expect("grants");
    assert!(
        grants.iter().any(|grant| grant == DEVICE_CODE_GRANT),
        "{grants:?}"
    );

    for client in DEVICE_GRANT_CLIENTS {
        let answer = device_authorization(&idp, client, "openid offline_access");
        assert_eq!(answer.status, 200, "{} {answer:?}", client.id);
        assert_eq!(
            answer.header("cache-control"),
            Some("no-store"),
            "{answer:?}"
        );
        let user_code = answer.text("user_code");
        let (left, right) = user_code.split_once('-').expect("XXXX-XXXX");
        assert!(
            [left, right]
                .iter()
                .all(|half| half.len() == 4
                    && half.chars().all(|c| USER_CODE_CHARACTERS.contains(c))),
            "{user_code}"
        );
        assert!(answer.text("device_code").len() >= 40, "{answer:?}");
        let verification_uri = format!("{}/device", idp.issuer());
        assert_eq!(answer.text("verification_uri"), verification_uri);
        assert_eq!(
            answer.text("verification_uri_complete"),
            format!("{verification_uri}?user_code={user_code}")
        );
        assert_eq!(
            answer.json["expires_in"].as_u64(),
            Some(DEVICE_CODE_LIFETIME)
        );
        // No `interval`: the client polls every 5 s (RFC 8628 §3.2's default).
        let mut members: Vec<&str> = answer
            .json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        members.sort_unstable();
        assert_eq!(
            members,
            [
                "device_code",
                "expires_in",
                "user_code",
                "verification_uri",
                "verification_uri_complete"
            ]
        );
    }
}

#[test]
fn public_client_polls_pending_then_gets_tokens_once_the_agent_types_the_code() {
    let idp = OidcProvider::start();
    let device = authorized(&idp, PUBLIC, "openid offline_access");

    let pending = poll(&idp, PUBLIC, &device.device_code);
    assert_eq!(pending.error(), "authorization_pending");
    assert_eq!(pending.header("cache-control"), Some("no-store"));

    let hops = oidc_agent::device(
        &device.verification_uri,
        &device.user_code,
        "carol",
        DeviceChoice::Approve,
    )
    .unwrap_or_else(|error| panic!("the agent's approval failed: {error}"));
    // Code input, code posted, confirmation posted, login, consent, success.
    assert_eq!(hops[0].url, device.verification_uri, "{hops:#?}");
    assert!(
        hops.last().is_some_and(|hop| hop.status == 200),
        "{hops:#?}"
    );

    let tokens = poll(&idp, PUBLIC, &device.device_code);
    let refresh_token = assert_tokens(&idp, PUBLIC, &tokens, "carol", true);
    assert_eq!(tokens.text("scope"), "openid offline_access");

    // The refresh token works, and rotates.
    let refreshed = refresh(&idp, PUBLIC, &refresh_token);
    let rotated = assert_tokens(&idp, PUBLIC, &refreshed, "carol", true);
    assert_ne!(rotated, refresh_token);

    // The device code is spent, and polling with it again revokes the whole grant, as a
    // replayed authorization code does: a client must stop polling once it has tokens.
    let again = poll(&idp, PUBLIC, &device.device_code);
    assert_eq!(again.error(), "invalid_grant");
    assert_eq!(refresh(&idp, PUBLIC, &rotated).error(), "invalid_grant");
}

#[test]
fn confidential_and_device_only_clients_get_tokens_through_the_complete_uri() {
    let idp = OidcProvider::start();
    for client in [BASIC, POST, DEVICE] {
        let device = authorized(&idp, client, "openid offline_access");
        assert_eq!(
            poll(&idp, client, &device.device_code).error(),
            "authorization_pending",
            "{}",
            client.id
        );
        // The page posts the code itself; the agent checks the code it shows.
        oidc_agent::approve_device(&device.verification_uri_complete, &device.user_code, LOGIN)
            .unwrap_or_else(|error| panic!("{}: {error}", client.id));
        let tokens = poll(&idp, client, &device.device_code);
        let refresh_token = assert_tokens(&idp, client, &tokens, LOGIN, true);
        assert_tokens(
            &idp,
            client,
            &refresh(&idp, client, &refresh_token),
            LOGIN,
            true,
        );
    }
}

#[test]
fn refresh_tokens_come_without_offline_access_and_id_tokens_only_with_openid() {
    let idp = OidcProvider::start();
    for (scope, openid) in [
        ("openid", true),
        ("offline_access", false),
        ("profile", false),
    ] {
        let device = authorized(&idp, DEVICE, scope);
        oidc_agent::approve_device(&device.verification_uri, &device.user_code, "dave")
            .unwrap_or_else(|error| panic!("{scope}: {error}"));
        let tokens = poll(&idp, DEVICE, &device.device_code);
        assert_tokens(&idp, DEVICE, &tokens, "dave", openid);
        assert_eq!(tokens.text("scope"), scope);
    }
}

#[test]
fn abort_on_the_confirmation_page_is_access_denied() {
    let idp = OidcProvider::start();
    let device = authorized(&idp, PUBLIC, "openid offline_access");
    oidc_agent::deny_device(&device.verification_uri, &device.user_code, LOGIN)
        .unwrap_or_else(|error| panic!("the agent's denial failed: {error}"));
    let denied = poll(&idp, PUBLIC, &device.device_code);
    assert_eq!(denied.error(), "access_denied");
    assert_eq!(
        denied.text("error_description"),
        "End-User aborted interaction"
    );
    // The denial spends the device code.
    assert_eq!(
        poll(&idp, PUBLIC, &device.device_code).error(),
        "invalid_grant"
    );
}

#[test]
fn cancel_on_the_consent_page_is_access_denied() {
    let idp = OidcProvider::start();
    let device = authorized(&idp, BASIC, "openid offline_access");
    oidc_agent::device(
        &device.verification_uri_complete,
        &device.user_code,
        LOGIN,
        DeviceChoice::CancelConsent,
    )
    .unwrap_or_else(|error| panic!("the agent's cancel failed: {error}"));
    let denied = poll(&idp, BASIC, &device.device_code);
    assert_eq!(denied.error(), "access_denied");
    assert_eq!(
        denied.text("error_description"),
        "End-User aborted interaction"
    );
}

#[test]
fn the_agent_refuses_a_wrong_code_and_a_page_showing_another_code() {
    let idp = OidcProvider::start();
    let device = authorized(&idp, PUBLIC, "openid");

    // A code the provider never issued: it says so, the agent reports it.
    let error = oidc_agent::approve_device(&device.verification_uri, "BBBB-BBBB", LOGIN)
        .expect_err("an unknown code");
    assert!(
        error.contains("The code you entered is incorrect"),
        "{error}"
    );

    // The complete URI carries the real code; the user expected another one.
    let error = oidc_agent::approve_device(&device.verification_uri_complete, "BBBB-BBBB", LOGIN)
        .expect_err("another code on the confirmation page");
    assert!(error.contains("shows the code"), "{error}");

    // Bad input is an error, not a panic.
    for (uri, code, user) in [
        ("https://127.0.0.1/device", "BBBB-BBBB", LOGIN),
        ("http://example.com/device", "BBBB-BBBB", LOGIN),
        (device.verification_uri.as_str(), "--", LOGIN),
        (device.verification_uri.as_str(), "BBBB-BBBB", " "),
    ] {
        assert!(
            oidc_agent::approve_device(uri, code, user).is_err(),
            "{uri} {code:?} {user:?}"
        );
    }

    // Nothing of that touched the login: still pending, and the right code still works,
    // typed as a person might.
    assert_eq!(
        poll(&idp, PUBLIC, &device.device_code).error(),
        "authorization_pending"
    );
    let typed = device.user_code.to_ascii_lowercase().replace('-', " ");
    oidc_agent::approve_device(&device.verification_uri, &typed, LOGIN)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_tokens(
        &idp,
        PUBLIC,
        &poll(&idp, PUBLIC, &device.device_code),
        LOGIN,
        true,
    );
}

#[test]
fn fast_polling_is_never_slowed_down() {
    let idp = OidcProvider::start();
    let device = authorized(&idp, PUBLIC, "openid");
    // oidc-provider defines `slow_down` but never sends it: every poll is pending.
    for _ in 0..20 {
        assert_eq!(
            poll(&idp, PUBLIC, &device.device_code).error(),
            "authorization_pending"
        );
    }
}

#[test]
fn clients_without_the_grant_and_other_clients_codes_are_refused() {
    let idp = OidcProvider::start();
    // Not `unauthorized_client` (RFC 6749 §5.2): oidc-provider says `invalid_request`.
    let refused = device_authorization(&idp, ES256, "openid");
    assert_eq!(refused.error(), "invalid_request");
    assert!(
        refused
            .text("error_description")
            .contains(DEVICE_CODE_GRANT),
        "{refused:?}"
    );

    let device = authorized(&idp, PUBLIC, "openid");
    assert_eq!(
        poll(&idp, POST, &device.device_code).error(),
        "invalid_grant"
    );
    assert_eq!(
        poll(&idp, PUBLIC, "not-a-device-code").error(),
        "invalid_grant"
    );
    // Polling with the grant type it does not have: `invalid_request` again.
    assert_eq!(
        poll(&idp, ES256, &device.device_code).error(),
        "invalid_request"
    );
    // None of that disturbed the login.
    assert_eq!(
        poll(&idp, PUBLIC, &device.device_code).error(),
        "authorization_pending"
    );
}

#[test]
fn an_agent_with_a_session_skips_the_login_page() {
    let idp = OidcProvider::start();
    let mut agent = Agent::new();
    let mut interaction_posts = Vec::new();
    for _ in 0..2 {
        let device = authorized(&idp, PUBLIC, "openid");
        let hops = agent
            .device(
                &device.verification_uri,
                &device.user_code,
                "erin",
                DeviceChoice::Approve,
            )
            .unwrap_or_else(|error| panic!("{error}"));
        interaction_posts.push(
            hops.iter()
                .filter(|hop| hop.method == "POST" && hop.url.contains("/interaction/"))
                .count(),
        );
        assert_tokens(
            &idp,
            PUBLIC,
            &poll(&idp, PUBLIC, &device.device_code),
            "erin",
            true,
        );
    }
    // Login and consent, then consent only (native clients are always asked).
    assert_eq!(interaction_posts, [2, 1]);
}

#[test]
fn chromium_approves_a_device_login() {
    oidc::require_browser_tools();
    let idp = OidcProvider::start();
    let device = authorized(&idp, PUBLIC, "openid offline_access");
    assert_eq!(
        poll(&idp, PUBLIC, &device.device_code).error(),
        "authorization_pending"
    );
    oidc::approve_device_in_chromium(&device.verification_uri, &device.user_code)
        .unwrap_or_else(|error| panic!("Chromium's approval failed: {error}"));
    assert_tokens(
        &idp,
        PUBLIC,
        &poll(&idp, PUBLIC, &device.device_code),
        LOGIN,
        true,
    );
}

#[test]
fn chromium_aborts_a_device_login_opened_at_the_complete_uri() {
    oidc::require_browser_tools();
    let idp = OidcProvider::start();
    let device = authorized(&idp, DEVICE, "openid");
    let ended = oidc::device_in_chromium(
        &device.verification_uri_complete,
        &device.user_code,
        LOGIN,
        DeviceChoice::Abort,
    )
    .unwrap_or_else(|error| panic!("Chromium's abort failed: {error}"));
    assert_eq!(ended.confirmed_code, device.user_code, "{ended:?}");
    assert!(
        ended
            .page_text
            .contains("The Sign-in request was interrupted"),
        "{ended:?}"
    );
    assert_eq!(
        poll(&idp, DEVICE, &device.device_code).error(),
        "access_denied"
    );
}
