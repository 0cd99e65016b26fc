//! The device authorization grant (RFC 8628) against hand-built requests: the device
//! authorization endpoint, polling the token endpoint, the approval page, and GitHub's
//! way of doing all three.

use std::thread;
use std::time::Duration;

use latchkey_devidp::{Config, DevIdp, IdTokenAlg, Quirk};
use serde_json::{Value, json};

mod common;
use common::*;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const ALPHABET: &str = "BCDFGHJKLMNPQRSTVWXZ";
/// A short polling interval, so tests that wait it out stay fast.
const SHORT_INTERVAL: Duration = Duration::from_millis(200);
/// Long enough that two polls in a row are always too soon.
const LONG_INTERVAL: Duration = Duration::from_secs(2);

// ---- helpers ----------------------------------------------------------------------------

fn device_idp(quirk: Quirk, interval: Duration) -> DevIdp {
    let mut config = Config::new(clients());
    config.quirk = quirk;
    config.device_interval = interval;
    start(config)
}

/// Waits out the interval of `device_idp(_, SHORT_INTERVAL)`.
fn wait_interval() {
    thread::sleep(SHORT_INTERVAL + Duration::from_millis(50));
}

/// A device authorization request of `client` for `scope`, asking for JSON (which only
/// the GitHub quirks need to be told).
fn device_request(idp: &DevIdp, client: &str, scope: Option<&str>) -> Reply {
    let fields: Vec<(&str, &str)> = scope.map(|s| ("scope", s)).into_iter().collect();
    let url = idp.device_authorization_endpoint();
    authenticated_at(&url, client, &[("Accept", "application/json")], &fields)
}

/// A granted device authorization of `client` (RFC 8628 §3.2 JSON): the whole answer.
fn device_answer(idp: &DevIdp, client: &str, scope: Option<&str>) -> Value {
    let reply = device_request(idp, client, scope);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

/// (device code, user code) of a granted device authorization.
fn device_codes(idp: &DevIdp, client: &str, scope: Option<&str>) -> (String, String) {
    let answer = device_answer(idp, client, scope);
    let text = |name: &str| answer[name].as_str().unwrap().to_owned();
    (text("device_code"), text("user_code"))
}

/// A token request of `client` with the device code grant.
fn poll(idp: &DevIdp, client: &str, device_code: &str) -> Reply {
    poll_with(idp, client, device_code, &[])
}

fn poll_with(idp: &DevIdp, client: &str, device_code: &str, headers: &[(&str, &str)]) -> Reply {
    let fields = [("grant_type", DEVICE_GRANT), ("device_code", device_code)];
    authenticated_at(&idp.token_endpoint(), client, headers, &fields)
}

/// A submission of the approval page at `url`.
fn submit(url: &str, fields: &[(&str, &str)]) -> Reply {
    post_form(url, &[], &form(fields))
}

fn approve_on_page(idp: &DevIdp, user_code: &str, user: &str) -> Reply {
    let fields = [
        ("user_code", user_code),
        ("user", user),
        ("action", "approve"),
    ];
    submit(&idp.device_verification_uri(), &fields)
}

/// The pairs of a form-encoded answer, in order.
fn form_fields(reply: &Reply) -> Vec<(String, String)> {
    query(&format!("?{}", reply.body))
}

fn names(fields: &[(String, String)]) -> Vec<&str> {
    fields.iter().map(|(name, _)| name.as_str()).collect()
}

fn is_user_code(code: &str) -> bool {
    let (first, second) = code.split_once('-').unwrap_or_default();
    [first, second]
        .iter()
        .all(|half| half.len() == 4 && half.chars().all(|c| ALPHABET.contains(c)))
}

// ---- the device authorization endpoint ------------------------------------------------

#[test]
fn device_authorization_answers_rfc8628_json_with_the_default_timing() {
    let idp = start(Config::new(clients()));
    let reply = device_request(&idp, "public-app", Some("read write"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let answer = reply.json();
    let mut members: Vec<&str> = answer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    members.sort_unstable();
    assert_eq!(
        members,
        [
            "device_code",
            "expires_in",
            "interval",
            "user_code",
            "verification_uri",
            "verification_uri_complete"
        ]
    );
    let user_code = answer["user_code"].as_str().unwrap();
    assert!(is_user_code(user_code), "{user_code}");
    assert_eq!(answer["expires_in"], 600);
    assert_eq!(answer["interval"], 5);
    let verification_uri = format!("{}/device", idp.base_url());
    assert_eq!(answer["verification_uri"], verification_uri);
    assert_eq!(idp.device_verification_uri(), verification_uri);
    assert_eq!(
        answer["verification_uri_complete"],
        format!("{verification_uri}?user_code={user_code}")
    );
    assert_eq!(
        idp.device_authorization_endpoint(),
        format!("{}/device_authorization", idp.base_url())
    );

    // Device codes are long random strings, user codes differ too.
    let again = device_answer(&idp, "public-app", None);
    let device_code = answer["device_code"].as_str().unwrap();
    assert!(device_code.len() >= 32, "{device_code}");
    assert_ne!(again["device_code"], answer["device_code"]);
    assert_ne!(again["user_code"], answer["user_code"]);
    assert_eq!(
        idp.pending_user_codes(),
        [user_code, again["user_code"].as_str().unwrap()]
    );
    assert_eq!(idp.stats().device_authorizations, 2);
}

#[test]
fn interval_and_expiry_are_sent_in_whole_seconds_rounded_up() {
    let mut config = Config::new(clients());
    config.device_interval = Duration::from_millis(1500);
    config.device_expires_in = Duration::from_millis(100);
    let idp = start(config);
    let answer = device_answer(&idp, "public-app", None);
    assert_eq!(
        (&answer["interval"], &answer["expires_in"]),
        (&json!(2), &json!(1))
    );
}

#[test]
fn device_authorization_authenticates_the_client_like_the_token_endpoint() {
    let idp = start(Config::new(clients()));
    for client in ["basic-app", "post-app", "public-app"] {
        assert_eq!(device_request(&idp, client, None).status, 200, "{client}");
    }
    let url = idp.device_authorization_endpoint();
    let auth = basic("basic-app", "wrong");
    let refused = [
        // A confidential client without its secret, or with a wrong one.
        (vec![], form(&[("client_id", "basic-app")])),
        (vec![("Authorization", auth.as_str())], String::new()),
        (
            vec![],
            form(&[("client_id", "post-app"), ("client_secret", "wrong")]),
        ),
        // A public client may not authenticate, an unknown one is unknown.
        (
            vec![],
            form(&[("client_id", "public-app"), ("client_secret", "x")]),
        ),
        (vec![], form(&[("client_id", "nobody")])),
        (vec![], String::new()),
    ];
    for (headers, body) in &refused {
        let reply = post_form(&url, headers, body);
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (401, "invalid_client"),
            "{body}"
        );
        assert!(reply.header("www-authenticate").is_some());
    }
    let bad_scope = device_request(&idp, "public-app", Some("read  write"));
    assert_eq!(
        (bad_scope.status, bad_scope.error().as_str()),
        (400, "invalid_scope")
    );
    let repeated = post_form(&url, &[], "client_id=public-app&scope=a&scope=b");
    assert_eq!(
        (repeated.status, repeated.error().as_str()),
        (400, "invalid_request")
    );
    let (status, _, body) = latchkey_devidp::agent::post(
        &url,
        &[("Content-Type", "application/json")],
        br#"{"client_id":"public-app"}"#,
    )
    .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8(body).unwrap().contains("invalid_request"));
    let page = get_reply(&url, &[]);
    assert_eq!((page.status, page.header("allow")), (405, Some("POST")));
    // None of those made a device code.
    assert_eq!(idp.stats().device_authorizations, 3);
    assert_eq!(idp.pending_user_codes().len(), 3);
}

#[test]
fn added_scopes_are_granted_to_devices_too() {
    let mut config = Config::new(clients());
    config.scopes_added = vec!["openid".into()];
    config.device_interval = Duration::ZERO;
    let idp = start(config);
    let (device_code, user_code) = device_codes(&idp, "public-app", Some("read"));
    assert!(idp.approve_device(&user_code, "dev-user"));
    let tokens = poll(&idp, "public-app", &device_code).json();
    assert_eq!(tokens["scope"], "read openid");
    assert!(tokens["id_token"].is_string());
}

// ---- polling ------------------------------------------------------------------------------

#[test]
fn approved_on_the_page_the_device_gets_tokens_and_an_id_token_without_nonce() {
    for alg in [IdTokenAlg::RS256, IdTokenAlg::ES256] {
        let mut config = Config::new(clients());
        config.device_interval = SHORT_INTERVAL;
        config.id_token_alg = alg;
        let idp = start(config);
        for client in ["basic-app", "post-app", "public-app"] {
            let answer = device_answer(&idp, client, Some("openid read"));
            let device_code = answer["device_code"].as_str().unwrap();
            let user_code = answer["user_code"].as_str().unwrap();
            assert_eq!(answer["interval"], 1);

            let pending = poll(&idp, client, device_code);
            assert_eq!(
                (pending.status, pending.error().as_str()),
                (400, "authorization_pending")
            );
            assert_eq!(pending.header("cache-control"), Some("no-store"));

            // The user follows verification_uri_complete and approves as alice.
            let complete = answer["verification_uri_complete"].as_str().unwrap();
            let page = get_reply(complete, &[]);
            assert_eq!(page.status, 200);
            assert!(
                page.body.contains(&format!("value=\"{user_code}\"")),
                "{}",
                page.body
            );
            let approved = approve_on_page(&idp, user_code, "alice");
            assert_eq!(approved.status, 200, "{}", approved.body);
            assert!(approved.body.contains("alice"));
            assert!(!idp.pending_user_codes().iter().any(|c| c == user_code));

            wait_interval();
            let reply = poll(&idp, client, device_code);
            assert_eq!(reply.status, 200, "{client}: {}", reply.body);
            assert_eq!(reply.header("content-type"), Some("application/json"));
            let tokens = reply.json();
            assert_eq!(tokens["token_type"], "Bearer");
            assert_eq!(tokens["expires_in"], 3600);
            assert_eq!(tokens["scope"], "openid read");
            assert!(tokens["refresh_token"].is_string());
            let access = tokens["access_token"].as_str().unwrap();
            assert!(idp.access_token_active(access));

            let id_token = tokens["id_token"].as_str().unwrap();
            assert!(parse_jwt(id_token).claims.get("nonce").is_none());
            let expected = Expected {
                alg,
                client,
                sub: "alice",
                nonce: None,
                access_token: access,
                auth_time: None,
            };
            assert_eq!(broken_rules(&idp, id_token, &expected), [""; 0]);
            // The checker would notice a nonce it did not expect to miss.
            let with_nonce = Expected {
                nonce: Some("n"),
                ..expected
            };
            assert_eq!(
                broken_rules(&idp, id_token, &with_nonce),
                ["nonce", "claims"]
            );

            // UserInfo and a refresh know the approving user.
            let bearer = format!("Bearer {access}");
            let userinfo = get_reply(&idp.userinfo_endpoint(), &[("Authorization", &bearer)]);
            assert_eq!(userinfo.json()["sub"], "alice");
            let refresh_token = tokens["refresh_token"].as_str().unwrap();
            let refreshed = authenticated(
                &idp,
                client,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                ],
            );
            assert_eq!(refreshed.status, 200, "{}", refreshed.body);
            let id_token = refreshed.json()["id_token"].as_str().unwrap().to_owned();
            assert_eq!(parse_jwt(&id_token).claims["sub"], "alice");
        }
        let stats = idp.stats();
        assert_eq!((stats.device_authorizations, stats.device_polls), (3, 6));
        assert_eq!(stats.tokens_issued, 6); // three device logins, three refreshes
    }
}

#[test]
fn a_device_code_yields_tokens_once() {
    let idp = device_idp(Quirk::None, SHORT_INTERVAL);
    let (device_code, user_code) = device_codes(&idp, "post-app", None);
    assert!(idp.approve_device(&user_code, "bob"));
    let tokens = poll(&idp, "post-app", &device_code).json();
    assert!(tokens["access_token"].is_string(), "{tokens}");
    assert!(
        tokens.get("id_token").is_none(),
        "no openid scope: {tokens}"
    );
    for _ in 0..2 {
        wait_interval();
        let again = poll(&idp, "post-app", &device_code);
        assert_eq!(
            (again.status, again.error().as_str()),
            (400, "invalid_grant")
        );
    }
    // The first tokens stay good: a replayed device code is not a stolen code.
    assert!(idp.access_token_active(tokens["access_token"].as_str().unwrap()));
    // And the used user code cannot be decided again.
    assert!(!idp.approve_device(&user_code, "mallory"));
    assert!(!idp.deny_device(&user_code));
}

#[test]
fn a_device_code_works_only_for_the_client_it_was_issued_to() {
    let idp = device_idp(Quirk::None, Duration::ZERO);
    let (device_code, user_code) = device_codes(&idp, "public-app", Some("read"));
    assert!(idp.approve_device(&user_code, "dev-user"));
    for other in ["basic-app", "post-app"] {
        let stolen = poll(&idp, other, &device_code);
        assert_eq!(
            (stolen.status, stolen.error().as_str()),
            (400, "invalid_grant"),
            "{other}"
        );
    }
    let unknown = poll(&idp, "public-app", "no-such-device-code");
    assert_eq!(
        (unknown.status, unknown.error().as_str()),
        (400, "invalid_grant")
    );
    let missing = authenticated(&idp, "public-app", &[("grant_type", DEVICE_GRANT)]);
    assert_eq!(
        (missing.status, missing.error().as_str()),
        (400, "invalid_request")
    );
    // The attempts spoiled nothing for the rightful client.
    let reply = poll(&idp, "public-app", &device_code);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(idp.stats().device_polls, 5);
}

#[test]
fn denied_on_the_page_the_device_gets_access_denied() {
    let idp = device_idp(Quirk::None, SHORT_INTERVAL);
    let (device_code, user_code) = device_codes(&idp, "public-app", None);
    let denied = submit(
        &idp.device_verification_uri(),
        &[
            ("user_code", &user_code),
            ("user", "alice"),
            ("action", "deny"),
        ],
    );
    assert_eq!(denied.status, 200, "{}", denied.body);
    assert!(denied.body.contains("Denied"), "{}", denied.body);
    assert!(idp.pending_user_codes().is_empty());
    for _ in 0..2 {
        let reply = poll(&idp, "public-app", &device_code);
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (400, "access_denied")
        );
    }
    // A denial is final.
    assert!(!idp.approve_device(&user_code, "alice"));
    assert!(!idp.deny_device(&user_code));
    assert_eq!(idp.stats().tokens_issued, 0);

    let (device_code, user_code) = device_codes(&idp, "public-app", None);
    assert!(idp.deny_device(&user_code.to_lowercase()));
    let reply = poll(&idp, "public-app", &device_code);
    assert_eq!(reply.error(), "access_denied");
}

#[test]
fn an_expired_device_code_gets_expired_token_and_the_page_refuses_it() {
    for quirk in [Quirk::None, Quirk::GitHub] {
        let mut config = Config::new(clients());
        config.quirk = quirk;
        config.device_expires_in = Duration::from_millis(300);
        let idp = start(config);
        let accept = [("Accept", "application/json")];
        let reply = authenticated_at(
            &idp.device_authorization_endpoint(),
            "public-app",
            &accept,
            &[],
        );
        let answer = reply.json();
        let device_code = answer["device_code"].as_str().unwrap();
        let user_code = answer["user_code"].as_str().unwrap();
        assert_eq!(answer["expires_in"], 1);
        assert_eq!(idp.pending_user_codes(), [user_code]);
        thread::sleep(Duration::from_millis(400));

        assert!(idp.pending_user_codes().is_empty());
        let page = approve_on_page(&idp, user_code, "alice");
        assert_eq!(page.status, 400, "{}", page.body);
        assert!(page.body.contains("expired"), "{}", page.body);
        assert!(!idp.approve_device(user_code, "alice"));
        assert!(!idp.deny_device(user_code));
        let reply = poll_with(&idp, "public-app", device_code, &accept);
        let status = if quirk == Quirk::None { 400 } else { 200 };
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (status, "expired_token"),
            "{quirk:?}"
        );
    }
}

#[test]
fn polling_sooner_than_the_interval_gets_slow_down_and_the_interval_grows() {
    let idp = device_idp(Quirk::None, LONG_INTERVAL);
    let (device_code, user_code) = device_codes(&idp, "public-app", None);
    // The first poll has no previous one to be too soon after.
    assert_eq!(
        poll(&idp, "public-app", &device_code).error(),
        "authorization_pending"
    );
    let fast = poll(&idp, "public-app", &device_code);
    assert_eq!((fast.status, fast.error().as_str()), (400, "slow_down"));
    // RFC 8628 has no `interval` in errors; only GitHub sends one.
    assert!(fast.json().get("interval").is_none(), "{}", fast.body);
    // Waiting the original interval is no longer enough: it grew by 5 s.
    thread::sleep(LONG_INTERVAL + Duration::from_millis(100));
    assert!(idp.approve_device(&user_code, "alice"));
    let still = poll(&idp, "public-app", &device_code);
    assert_eq!((still.status, still.error().as_str()), (400, "slow_down"));
    // Another device code of the same client keeps its own interval.
    let (other, _) = device_codes(&idp, "public-app", None);
    assert_eq!(
        poll(&idp, "public-app", &other).error(),
        "authorization_pending"
    );
    assert_eq!(idp.stats().device_polls, 4);
}

#[test]
fn slow_down_next_answers_slow_down_to_that_many_polls() {
    let idp = device_idp(Quirk::GitHub, Duration::ZERO);
    let accept = [("Accept", "application/json")];
    let approved = |client: &str| {
        let (device_code, user_code) = device_codes(&idp, client, None);
        assert!(idp.approve_device(&user_code, "dev-user"));
        device_code
    };
    let [a, b, c, d] = ["public-app", "public-app", "post-app", "post-app"].map(approved);

    idp.slow_down_next(1);
    let forced = poll_with(&idp, "public-app", &a, &accept).json();
    assert_eq!(
        (&forced["error"], &forced["interval"]),
        (&json!("slow_down"), &json!(5))
    );
    // One only: the next poll, of another code, gets its tokens.
    let tokens = poll_with(&idp, "public-app", &b, &accept).json();
    assert!(tokens["access_token"].is_string(), "{tokens}");
    // The slowed-down code's interval grew and is enforced: polling at once is too soon.
    let again = poll_with(&idp, "public-app", &a, &accept).json();
    assert_eq!(
        (&again["error"], &again["interval"]),
        (&json!("slow_down"), &json!(10))
    );

    // Errors do not use up the count.
    idp.slow_down_next(1);
    let unknown = poll_with(&idp, "post-app", "no-such-code", &accept).json();
    assert_eq!(unknown["error"], "incorrect_device_code");
    let forced = poll_with(&idp, "post-app", &c, &accept).json();
    assert_eq!(forced["error"], "slow_down");
    // Zero cancels what is left.
    idp.slow_down_next(2);
    idp.slow_down_next(0);
    let tokens = poll_with(&idp, "post-app", &d, &accept).json();
    assert!(tokens["access_token"].is_string(), "{tokens}");
}

// ---- the approval page --------------------------------------------------------------------

#[test]
fn the_approval_page_is_a_plain_form_with_the_documented_ids() {
    let idp = device_idp(Quirk::None, Duration::ZERO);
    let page = get_reply(&idp.device_verification_uri(), &[]);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    for part in [
        "<form method=\"post\" action=\"/device\">",
        "<input id=\"user_code\" name=\"user_code\" value=\"\"",
        "<input id=\"user\" name=\"user\" value=\"dev-user\">",
        "<button id=\"approve\" type=\"submit\" name=\"action\" value=\"approve\">",
        "<button id=\"deny\" type=\"submit\" name=\"action\" value=\"deny\">",
    ] {
        assert!(
            page.body.contains(part),
            "{part} missing from {}",
            page.body
        );
    }
    assert!(page.header("content-security-policy").is_some());

    // Prefilled from the query, with what the client asks for.
    let (_, user_code) = device_codes(&idp, "post-app", Some("read write"));
    let url = format!("{}?user_code={user_code}", idp.device_verification_uri());
    let page = get_reply(&url, &[]);
    assert!(
        page.body.contains(&format!("value=\"{user_code}\"")),
        "{}",
        page.body
    );
    assert!(page.body.contains("<b>post-app</b>"), "{}", page.body);
    assert!(page.body.contains("read write"), "{}", page.body);
    let bad_query = get_reply(
        &format!("{}?user_code=%zz", idp.device_verification_uri()),
        &[],
    );
    assert_eq!(bad_query.status, 400);
}

#[test]
fn the_page_matches_user_codes_loosely_and_refuses_bad_submissions_without_change() {
    let idp = device_idp(Quirk::None, Duration::ZERO);
    let (device_code, user_code) = device_codes(&idp, "public-app", Some("openid"));
    let url = idp.device_verification_uri();
    // An unused code of the right shape.
    let unused = ALPHABET
        .chars()
        .map(|c| format!("{c}{c}{c}{c}-{c}{c}{c}{c}"))
        .find(|code| *code != user_code)
        .unwrap();
    let refused = [
        vec![("user_code", unused.as_str()), ("action", "approve")],
        vec![("user_code", "nonsense"), ("action", "approve")],
        vec![("user_code", user_code.as_str())],
        vec![("user_code", user_code.as_str()), ("action", "maybe")],
        vec![("action", "approve")],
        vec![
            ("user_code", user_code.as_str()),
            ("user", "a\u{7}b"),
            ("action", "approve"),
        ],
    ];
    for fields in &refused {
        let reply = submit(&url, fields);
        assert_eq!(reply.status, 400, "{fields:?}: {}", reply.body);
        assert!(
            reply
                .header("content-type")
                .unwrap()
                .starts_with("text/html")
        );
    }
    let (status, _, _) = latchkey_devidp::agent::post(
        &url,
        &[("Content-Type", "text/plain")],
        format!("user_code={user_code}&action=approve").as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 400);
    let too_long = "x".repeat(65);
    assert!(!idp.approve_device(&user_code, &too_long));
    assert_eq!(idp.pending_user_codes(), [user_code.as_str()]);
    assert_eq!(
        poll(&idp, "public-app", &device_code).error(),
        "authorization_pending"
    );

    // Lower case, spaces for the dash, no user name: approved as dev-user.
    let typed = format!(" {} ", user_code.to_lowercase().replace('-', "  "));
    let approved = submit(
        &url,
        &[("user_code", &typed), ("user", ""), ("action", "approve")],
    );
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert!(
        approved.body.contains("<b>dev-user</b>"),
        "{}",
        approved.body
    );
    // Decided once: a second decision is refused, the first stands.
    let second = submit(&url, &[("user_code", &user_code), ("action", "deny")]);
    assert_eq!(second.status, 400);
    let tokens = poll(&idp, "public-app", &device_code).json();
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_eq!(parse_jwt(id_token).claims["sub"], "dev-user");
}

#[test]
fn the_approval_page_escapes_what_it_echoes() {
    let idp = device_idp(Quirk::None, Duration::ZERO);
    // Scope tokens may contain < > & ' (RFC 6749 §3.3), and the page shows the scope.
    let (device_code, user_code) = device_codes(&idp, "public-app", Some("openid <b>&'x"));
    let url = idp.device_verification_uri();
    let page = get_reply(&format!("{url}?user_code={user_code}"), &[]);
    assert!(
        page.body.contains("openid &lt;b&gt;&amp;&#39;x"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<b>&"), "{}", page.body);

    let hostile = "\"><script>alert(1)</script>";
    let page = get_reply(&format!("{url}?{}", form(&[("user_code", hostile)])), &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script"), "{}", page.body);

    let refused = submit(&url, &[("user_code", hostile), ("action", "approve")]);
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("&lt;script&gt;"), "{}", refused.body);
    assert!(!refused.body.contains("<script"), "{}", refused.body);

    let user = "<i>eve</i> & 'co'";
    let approved = approve_on_page(&idp, &user_code, user);
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert!(
        approved
            .body
            .contains("&lt;i&gt;eve&lt;/i&gt; &amp; &#39;co&#39;"),
        "{}",
        approved.body
    );
    assert!(!approved.body.contains("<i>"), "{}", approved.body);
    // The name itself is kept as given.
    let tokens = poll(&idp, "public-app", &device_code).json();
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_eq!(parse_jwt(id_token).claims["sub"], user);
}

// ---- GitHub ---------------------------------------------------------------------------

#[test]
fn github_device_flow_answers_in_form_bodies_with_errors_at_200() {
    for quirk in [Quirk::GitHub, Quirk::GitHubApp] {
        let idp = device_idp(quirk, LONG_INTERVAL);
        let github_endpoint = format!("{}/login/device/code", idp.base_url());
        let verification_uri = format!("{}/login/device", idp.base_url());
        assert_eq!(idp.device_verification_uri(), verification_uri);

        // Form-encoded unless JSON is asked for, at GitHub's path and the standard one.
        let fields = [("scope", "read openid")];
        let reply = authenticated_at(&github_endpoint, "public-app", &[], &fields);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            reply
                .header("content-type")
                .unwrap()
                .starts_with("application/x-www-form-urlencoded"),
            "{quirk:?}"
        );
        let answer = form_fields(&reply);
        assert_eq!(
            names(&answer),
            [
                "device_code",
                "expires_in",
                "interval",
                "user_code",
                "verification_uri"
            ]
        );
        assert_eq!(param(&answer, "interval"), Some("2"));
        assert_eq!(param(&answer, "expires_in"), Some("600"));
        assert_eq!(
            param(&answer, "verification_uri"),
            Some(verification_uri.as_str())
        );
        let user_code = param(&answer, "user_code").unwrap().to_owned();
        let device_code = param(&answer, "device_code").unwrap().to_owned();
        assert!(is_user_code(&user_code), "{user_code}");

        let accept = [("Accept", "application/json")];
        let url = idp.device_authorization_endpoint();
        let json = authenticated_at(&url, "post-app", &accept, &fields);
        assert_eq!(json.status, 200);
        let denied_answer = json.json();
        assert!(denied_answer.get("verification_uri_complete").is_none());
        assert_eq!(denied_answer["verification_uri"], verification_uri);
        assert_eq!(denied_answer["interval"], 2);

        // Errors of the device endpoint come with 200 and GitHub's words too.
        let wrong = "client_id=post-app&client_secret=wrong";
        let refused = post_form(&github_endpoint, &accept, wrong);
        assert_eq!(
            (refused.status, refused.error().as_str()),
            (200, "incorrect_client_credentials")
        );
        let bad_scope = authenticated_at(&url, "public-app", &accept, &[("scope", "a  b")]);
        assert_eq!(
            (bad_scope.status, bad_scope.error().as_str()),
            (200, "invalid_scope")
        );

        // Pending, then too soon: slow_down with the grown interval, each time.
        let pending = poll(&idp, "public-app", &device_code);
        assert_eq!(pending.status, 200);
        assert_eq!(
            names(&form_fields(&pending)),
            ["error", "error_description"]
        );
        assert_eq!(
            param(&form_fields(&pending), "error"),
            Some("authorization_pending")
        );
        let fast = poll(&idp, "public-app", &device_code);
        let fast = form_fields(&fast);
        assert_eq!(names(&fast), ["error", "error_description", "interval"]);
        assert_eq!(
            (param(&fast, "error"), param(&fast, "interval")),
            (Some("slow_down"), Some("7"))
        );
        let faster = poll_with(&idp, "public-app", &device_code, &accept).json();
        assert_eq!(
            (&faster["error"], &faster["interval"]),
            (&json!("slow_down"), &json!(12))
        );

        // Denied on GitHub's page path.
        let denied_code = denied_answer["device_code"].as_str().unwrap();
        let denied_user_code = denied_answer["user_code"].as_str().unwrap();
        let page = get_reply(&verification_uri, &[]);
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains("action=\"/login/device\""),
            "{}",
            page.body
        );
        let deny = [("user_code", denied_user_code), ("action", "deny")];
        assert_eq!(submit(&verification_uri, &deny).status, 200);
        let denied = poll_with(&idp, "post-app", denied_code, &accept);
        assert_eq!(
            (denied.status, denied.error().as_str()),
            (200, "access_denied")
        );

        // Approved on GitHub's page path. (The slowed-down code would have to wait 12 s
        // now, so a fresh code gets the tokens.)
        let approve = [("user_code", user_code.as_str()), ("action", "approve")];
        assert_eq!(submit(&verification_uri, &approve).status, 200);
        assert!(!idp.pending_user_codes().contains(&user_code));
        let (fresh, fresh_user) = device_codes_github(&idp);
        let approve = [
            ("user_code", fresh_user.as_str()),
            ("user", "octocat"),
            ("action", "approve"),
        ];
        assert_eq!(submit(&verification_uri, &approve).status, 200);
        // GitHub's token answer, form-encoded, without an ID token.
        let tokens = poll(&idp, "public-app", &fresh);
        assert_eq!(tokens.status, 200);
        let token_fields = form_fields(&tokens);
        let expected: &[&str] = match quirk {
            Quirk::GitHub => &["access_token", "scope", "token_type"],
            _ => &[
                "access_token",
                "expires_in",
                "refresh_token",
                "refresh_token_expires_in",
                "scope",
                "token_type",
            ],
        };
        assert_eq!(names(&token_fields), expected, "{}", tokens.body);
        if quirk == Quirk::GitHub {
            assert_eq!(param(&token_fields, "scope"), Some("read,openid"));
        }
        assert!(!tokens.body.contains("id_token"));
        // Used, unknown, or another client's: incorrect_device_code.
        let used = poll_with(&idp, "public-app", &fresh, &accept);
        assert_eq!(
            (used.status, used.error().as_str()),
            (200, "incorrect_device_code")
        );
        let (other, _) = device_codes_github(&idp);
        let stolen = poll_with(&idp, "post-app", &other, &accept);
        assert_eq!(
            (stolen.status, stolen.error().as_str()),
            (200, "incorrect_device_code")
        );
        let unknown = poll_with(&idp, "public-app", "nope", &accept);
        assert_eq!(unknown.error(), "incorrect_device_code");
        let wrong_secret = token_request(
            &idp,
            &accept,
            &form(&[
                ("grant_type", DEVICE_GRANT),
                ("device_code", &other),
                ("client_id", "post-app"),
                ("client_secret", "wrong"),
            ]),
        );
        assert_eq!(wrong_secret.error(), "incorrect_client_credentials");
    }
}

/// A device authorization of `public-app` at GitHub's path, asking for JSON: (device
/// code, user code).
fn device_codes_github(idp: &DevIdp) -> (String, String) {
    let url = format!("{}/login/device/code", idp.base_url());
    let accept = [("Accept", "application/json")];
    let answer = authenticated_at(&url, "public-app", &accept, &[("scope", "read openid")]).json();
    let text = |name: &str| answer[name].as_str().unwrap().to_owned();
    (text("device_code"), text("user_code"))
}

#[test]
fn github_paths_are_served_only_in_github_modes() {
    let idp = device_idp(Quirk::None, Duration::ZERO);
    let base = idp.base_url();
    let device = post_form(
        &format!("{base}/login/device/code"),
        &[],
        "client_id=public-app",
    );
    assert_eq!(device.status, 404);
    assert_eq!(get_reply(&format!("{base}/login/device"), &[]).status, 404);
    let github = device_idp(Quirk::GitHub, Duration::ZERO);
    let page = get_reply(&format!("{}/device", github.base_url()), &[]);
    assert_eq!(page.status, 200, "the standard page stays");
}

// ---- discovery and robustness -----------------------------------------------------------

#[test]
fn discovery_lists_the_device_endpoint_and_grant_except_for_github() {
    for quirk in [
        Quirk::None,
        Quirk::EntraStringExpiry,
        Quirk::GitHub,
        Quirk::GitHubApp,
    ] {
        let idp = device_idp(quirk, Duration::ZERO);
        let github = matches!(quirk, Quirk::GitHub | Quirk::GitHubApp);
        for path in [
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        ] {
            let doc = get_reply(&format!("{}{path}", idp.base_url()), &[]).json();
            let grants = doc["grant_types_supported"].as_array().unwrap();
            let lists_grant = grants.contains(&json!(DEVICE_GRANT));
            if github {
                assert!(
                    doc.get("device_authorization_endpoint").is_none(),
                    "{quirk:?}"
                );
                assert!(!lists_grant, "{quirk:?}");
            } else {
                assert_eq!(
                    doc["device_authorization_endpoint"],
                    idp.device_authorization_endpoint(),
                    "{quirk:?} {path}"
                );
                assert_eq!(
                    *grants,
                    [
                        json!("authorization_code"),
                        json!("refresh_token"),
                        json!(DEVICE_GRANT)
                    ]
                );
            }
        }
    }
}

#[test]
fn garbage_at_the_device_endpoints_never_crashes_the_server() {
    server_panics(); // installs the hook that counts them
    let idp = device_idp(Quirk::GitHub, Duration::ZERO);
    let (device_code, user_code) = device_codes(&idp, "public-app", Some("read"));
    let request = |head: &str, body: &str| {
        format!(
            "{head} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let templates = [
        request(
            "POST /device_authorization",
            "client_id=public-app&scope=read+write",
        ),
        request("POST /login/device/code", "client_id=public-app&scope=read"),
        request(
            "POST /token",
            &form(&[
                ("grant_type", DEVICE_GRANT),
                ("device_code", &device_code),
                ("client_id", "public-app"),
            ]),
        ),
        request(
            "POST /device",
            &form(&[
                ("user_code", &user_code),
                ("user", "dev-user"),
                ("action", "deny"),
            ]),
        ),
        request(&format!("GET /login/device?user_code={user_code}"), ""),
    ];
    let mut answered = 0;
    let mut sent = 0;
    for template in &templates {
        for _ in 0..60 {
            let response = raw_exchange(&idp, &mutate(template));
            sent += 1;
            answered += usize::from(!response.is_empty());
            assert!(response.is_empty() || response.starts_with(b"HTTP/1.1 "));
        }
    }
    assert_eq!(server_panics(), 0);
    assert!(answered > sent / 2, "{answered} of {sent}");
    // The server still works.
    let (device_code, user_code) = device_codes(&idp, "public-app", None);
    assert!(idp.approve_device(&user_code, "dev-user"));
    let accept = [("Accept", "application/json")];
    let tokens = poll_with(&idp, "public-app", &device_code, &accept).json();
    assert!(tokens["access_token"].is_string(), "{tokens}");
}
