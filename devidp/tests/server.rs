//! The server against the scripted user agent and hand-built token requests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_devidp::{Config, DevIdp, Forgery, IdTokenAlg, Quirk, agent};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

mod common;
use common::*;

const STATE: &str = "st+ate/1 ~&=";

// ---- helpers ----------------------------------------------------------------------------

fn idp() -> DevIdp {
    start(Config::new(clients()))
}

/// A fresh (verifier, S256 challenge).
fn pkce() -> (String, String) {
    let mut bytes = [0; 32];
    getrandom::fill(&mut bytes).unwrap();
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn authz_params<'a>(client: &'a str, challenge: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", STATE),
        ("scope", "read write"),
    ]
}

/// Browses to the authorization endpoint; returns the parameters of the single redirect.
fn authorize(idp: &DevIdp, params: &[(&str, &str)]) -> Vec<(String, String)> {
    let hops = agent::browse(&format!(
        "{}?{}",
        idp.authorization_endpoint(),
        form(params)
    ))
    .unwrap();
    assert_eq!(hops.len(), 1, "{hops:?}");
    assert_eq!(hops[0].status, 303);
    let location = hops[0].location.as_deref().unwrap();
    let redirect = params.iter().find(|(k, _)| *k == "redirect_uri").unwrap().1;
    assert!(location.starts_with(&format!("{redirect}?")), "{location}");
    query(location)
}

/// Runs the authorization request for `client`; returns (code, verifier).
fn code_for(idp: &DevIdp, client: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    let params = authorize(idp, &authz_params(client, &challenge));
    assert_eq!(param(&params, "state"), Some(STATE));
    assert_eq!(param(&params, "iss"), Some(idp.issuer().as_str()));
    (param(&params, "code").unwrap().to_owned(), verifier)
}

fn grant_fields<'a>(code: &'a str, verifier: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ]
}

fn redeem(idp: &DevIdp, client: &str, code: &str, verifier: &str) -> Reply {
    authenticated(idp, client, &grant_fields(code, verifier))
}

fn refresh(idp: &DevIdp, client: &str, token: &str) -> Reply {
    authenticated(
        idp,
        client,
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
}

// ---- the code flow ----------------------------------------------------------------------

#[test]
fn code_flow_succeeds_for_each_auth_method() {
    let idp = idp();
    for client in ["basic-app", "post-app", "public-app"] {
        let (code, verifier) = code_for(&idp, client);
        let reply = redeem(&idp, client, &code, &verifier);
        assert_eq!(reply.status, 200, "{client}: {}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(reply.header("connection"), Some("close"));
        let body = reply.json();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["scope"], "read write");
        assert!(body["refresh_token"].is_string());
        assert!(idp.access_token_active(body["access_token"].as_str().unwrap()));

        let sent = idp.last_token_request().unwrap();
        assert_eq!(sent.method, "POST");
        assert_eq!(
            sent.header("authorization").is_some(),
            client == "basic-app"
        );
        assert!(
            String::from_utf8(sent.body)
                .unwrap()
                .contains(&format!("code={code}"))
        );
    }
    let stats = idp.stats();
    assert_eq!((stats.authorize_requests, stats.codes_issued), (3, 3));
    assert_eq!((stats.token_requests, stats.tokens_issued), (3, 3));
}

/// (code issued to, Basic credentials, authentication fields in the body)
type Case<'a> = (
    &'a str,
    Option<(&'a str, &'a str)>,
    &'a [(&'a str, &'a str)],
);

#[test]
fn wrong_auth_method_is_invalid_client() {
    let idp = idp();
    let basic_app = Some(("basic-app", ODD_SECRET));
    let post_app = Some(("post-app", POST_SECRET));
    let cases: [Case; 10] = [
        // A Basic client sending its secret in the body.
        (
            "basic-app",
            None,
            &[("client_id", "basic-app"), ("client_secret", ODD_SECRET)],
        ),
        // A Post client using Basic, and using both at once.
        ("post-app", post_app, &[]),
        (
            "post-app",
            post_app,
            &[("client_id", "post-app"), ("client_secret", POST_SECRET)],
        ),
        // A public client authenticating, in the body or with an empty Basic password.
        (
            "public-app",
            None,
            &[("client_id", "public-app"), ("client_secret", "x")],
        ),
        ("public-app", Some(("public-app", "")), &[]),
        // A confidential client not authenticating at all.
        ("post-app", None, &[("client_id", "post-app")]),
        // A wrong secret, an unknown client, no client at all.
        (
            "post-app",
            None,
            &[("client_id", "post-app"), ("client_secret", "nope")],
        ),
        ("post-app", None, &[("client_id", "nobody")]),
        ("post-app", None, &[]),
        // Basic disagreeing with client_id in the body.
        ("basic-app", basic_app, &[("client_id", "post-app")]),
    ];
    for (client, credentials, body_auth) in cases {
        let (code, verifier) = code_for(&idp, client);
        let authorization = credentials.map(|(id, secret)| basic(id, secret));
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|a| ("Authorization", a.as_str()))
            .collect();
        let mut fields = grant_fields(&code, &verifier).to_vec();
        fields.extend_from_slice(body_auth);
        let reply = token_request(&idp, &headers, &form(&fields));
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (401, "invalid_client"),
            "{client} {credentials:?} {body_auth:?}"
        );
        assert!(reply.header("www-authenticate").is_some());
        // The code is still good with the registered method.
        assert_eq!(redeem(&idp, client, &code, &verifier).status, 200);
    }
    // Basic with the same client_id repeated in the body is fine.
    let (code, verifier) = code_for(&idp, "basic-app");
    let mut fields = grant_fields(&code, &verifier).to_vec();
    fields.push(("client_id", "basic-app"));
    let authorization = basic("basic-app", ODD_SECRET);
    let reply = token_request(&idp, &[("Authorization", &authorization)], &form(&fields));
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn basic_credentials_must_be_form_encoded() {
    let idp = idp();
    let (code, verifier) = code_for(&idp, "basic-app");
    let body = form(&grant_fields(&code, &verifier));
    let raw = format!(
        "Basic {}",
        STANDARD.encode(format!("basic-app:{ODD_SECRET}"))
    );
    let reply = token_request(&idp, &[("Authorization", &raw)], &body);
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (401, "invalid_client")
    );
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Basic realm=\"devidp\"")
    );
    let encoded = basic("basic-app", ODD_SECRET);
    assert!(encoded.len() > raw.len());
    let reply = token_request(&idp, &[("Authorization", &encoded)], &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn wrong_verifier_is_invalid_grant() {
    let idp = idp();
    let (code, verifier) = code_for(&idp, "public-app");
    let (other, _) = pkce();
    for wrong in [other.as_str(), "short", &verifier[1..]] {
        let reply = redeem(&idp, "public-app", &code, wrong);
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (400, "invalid_grant")
        );
    }
    let missing = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT),
    ];
    assert_eq!(
        authenticated(&idp, "public-app", &missing).error(),
        "invalid_request"
    );
    assert_eq!(redeem(&idp, "public-app", &code, &verifier).status, 200);
}

#[test]
fn code_reuse_is_invalid_grant_and_revokes_tokens() {
    let idp = idp();
    let (code, verifier) = code_for(&idp, "post-app");
    let first = redeem(&idp, "post-app", &code, &verifier).json();
    let access = first["access_token"].as_str().unwrap();
    assert!(idp.access_token_active(access));
    let again = redeem(&idp, "post-app", &code, &verifier);
    assert_eq!(
        (again.status, again.error().as_str()),
        (400, "invalid_grant")
    );
    assert!(!idp.access_token_active(access));
    let reply = refresh(&idp, "post-app", first["refresh_token"].as_str().unwrap());
    assert_eq!(reply.error(), "invalid_grant");
}

#[test]
fn code_is_bound_to_client_and_lifetime() {
    let mut config = Config::new(clients());
    config.code_lifetime = Duration::from_millis(200);
    let idp = start(config);
    let (code, verifier) = code_for(&idp, "public-app");
    assert_eq!(
        redeem(&idp, "post-app", &code, &verifier).error(),
        "invalid_grant"
    );
    assert_eq!(
        redeem(&idp, "public-app", "no-such-code", &verifier).error(),
        "invalid_grant"
    );
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        redeem(&idp, "public-app", &code, &verifier).error(),
        "invalid_grant"
    );
}

#[test]
fn redirect_uri_mismatch_at_token_is_invalid_grant() {
    let idp = idp();
    let (code, verifier) = code_for(&idp, "public-app");
    for wrong in [
        OTHER_REDIRECT,
        "com.example.app:/callback/",
        "COM.example.app:/callback",
    ] {
        let grant = [
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", wrong),
            ("code_verifier", &verifier),
        ];
        let reply = authenticated(&idp, "public-app", &grant);
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (400, "invalid_grant"),
            "{wrong}"
        );
    }
    assert_eq!(redeem(&idp, "public-app", &code, &verifier).status, 200);
}

#[test]
fn portless_loopback_redirect_uri_accepts_any_port() {
    let idp = idp();
    let (verifier, challenge) = pkce();
    let with_port = "http://127.0.0.1:4567/other";
    let mut params = authz_params("public-app", &challenge);
    params
        .iter_mut()
        .find(|(k, _)| *k == "redirect_uri")
        .unwrap()
        .1 = with_port;
    let url = format!("{}?{}", idp.authorization_endpoint(), form(&params));
    let (status, headers, _) = agent::get(&url, &[]).unwrap();
    assert_eq!(status, 303);
    let location = &headers.iter().find(|(n, _)| n == "Location").unwrap().1;
    assert!(location.starts_with(&format!("{with_port}?code=")));
    let code = param(&query(location), "code").unwrap().to_owned();
    // The token request must repeat the port too.
    for (uri, status) in [
        (OTHER_REDIRECT, 400),
        ("http://127.0.0.1:4568/other", 400),
        (with_port, 200),
    ] {
        let grant = [
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", uri),
            ("code_verifier", &verifier),
        ];
        assert_eq!(
            authenticated(&idp, "public-app", &grant).status,
            status,
            "{uri}"
        );
    }
}

// ---- authorization endpoint errors ------------------------------------------------------

#[test]
fn bad_client_or_redirect_uri_gets_an_error_page_not_a_redirect() {
    let idp = idp();
    let (_, challenge) = pkce();
    let cases: [&[(&str, &str)]; 5] = [
        &[("redirect_uri", "http://127.0.0.1/evil")],
        &[("redirect_uri", "com.example.app:/callback?x=1")],
        &[("redirect_uri", "")],
        &[("client_id", "nobody")],
        &[("client_id", "")],
    ];
    for overrides in cases {
        let mut params = authz_params("public-app", &challenge);
        for (k, v) in overrides {
            params.iter_mut().find(|(name, _)| name == k).unwrap().1 = v;
        }
        let url = format!("{}?{}", idp.authorization_endpoint(), form(&params));
        let (status, headers, body) = agent::get(&url, &[]).unwrap();
        assert_eq!(status, 400, "{overrides:?}");
        assert!(
            !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("location"))
        );
        assert!(String::from_utf8(body).unwrap().contains("<h1>400"));
    }
    // A malformed query, and a repeated parameter, are not trusted either.
    for bad in [
        "client_id=public-app&client_id=public-app",
        "client_id=public%ZZ",
        "a",
    ] {
        let (status, _, _) =
            agent::get(&format!("{}?{bad}", idp.authorization_endpoint()), &[]).unwrap();
        assert_eq!(status, 400);
    }
    assert_eq!(idp.stats().codes_issued, 0);
}

#[test]
fn pkce_problems_redirect_with_invalid_request() {
    let idp = idp();
    let (_, challenge) = pkce();
    let cases: [(&str, &str, &str); 6] = [
        ("code_challenge_method", "plain", "invalid_request"),
        ("code_challenge_method", "", "invalid_request"),
        ("code_challenge_method", "S512", "invalid_request"),
        ("code_challenge", "", "invalid_request"),
        ("code_challenge", "too-short", "invalid_request"),
        ("response_type", "token", "unsupported_response_type"),
    ];
    for (name, value, error) in cases {
        let mut params = authz_params("public-app", &challenge);
        params.iter_mut().find(|(k, _)| *k == name).unwrap().1 = value;
        let reply = authorize(&idp, &params);
        assert_eq!(param(&reply, "error"), Some(error), "{name}={value}");
        assert!(param(&reply, "error_description").is_some());
        assert_eq!(param(&reply, "state"), Some(STATE));
        assert_eq!(param(&reply, "iss"), Some(idp.issuer().as_str()));
        assert_eq!(param(&reply, "code"), None);
    }
    let mut params = authz_params("public-app", &challenge);
    params.iter_mut().find(|(k, _)| *k == "scope").unwrap().1 = "a  b";
    assert_eq!(
        param(&authorize(&idp, &params), "error"),
        Some("invalid_scope")
    );
    params.retain(|(k, _)| *k != "scope");
    assert!(
        param(&authorize(&idp, &params), "code").is_some(),
        "no scope is fine"
    );
}

#[test]
fn deny_switch_redirects_access_denied() {
    let idp = idp();
    let (_, challenge) = pkce();
    let mut params = authz_params("public-app", &challenge);
    params.push(("login_hint", "deny"));
    let by_hint = authorize(&idp, &params);
    params.pop();
    idp.set_deny(true);
    let by_switch = authorize(&idp, &params);
    for reply in [by_hint, by_switch] {
        assert_eq!(param(&reply, "error"), Some("access_denied"));
        assert!(param(&reply, "error_description").is_some());
        assert_eq!(param(&reply, "state"), Some(STATE));
        assert_eq!(param(&reply, "iss"), Some(idp.issuer().as_str()));
        assert_eq!(param(&reply, "code"), None);
    }
    idp.set_deny(false);
    assert!(param(&authorize(&idp, &params), "code").is_some());
}

// ---- refresh ----------------------------------------------------------------------------

#[test]
fn refresh_tokens_rotate_and_reuse_revokes_the_grant() {
    let idp = idp();
    let (code, verifier) = code_for(&idp, "basic-app");
    let first = redeem(&idp, "basic-app", &code, &verifier).json();
    let r1 = first["refresh_token"].as_str().unwrap();

    let second = refresh(&idp, "basic-app", r1);
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.header("cache-control"), Some("no-store"));
    let second = second.json();
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2);
    assert_ne!(first["access_token"], second["access_token"]);
    assert_eq!(second["scope"], "read write");

    // Narrowing the scope is allowed, widening is not; another client may not use it.
    let narrow = [
        ("grant_type", "refresh_token"),
        ("refresh_token", r2),
        ("scope", "read"),
    ];
    let third = authenticated(&idp, "basic-app", &narrow).json();
    assert_eq!(third["scope"], "read");
    let r3 = third["refresh_token"].as_str().unwrap();
    let wide = [
        ("grant_type", "refresh_token"),
        ("refresh_token", r3),
        ("scope", "read admin"),
    ];
    assert_eq!(
        authenticated(&idp, "basic-app", &wide).error(),
        "invalid_scope"
    );
    assert_eq!(refresh(&idp, "post-app", r3).error(), "invalid_grant");

    // Replaying a rotated token fails and revokes the whole grant.
    let replay = refresh(&idp, "basic-app", r1);
    assert_eq!(
        (replay.status, replay.error().as_str()),
        (400, "invalid_grant")
    );
    assert_eq!(refresh(&idp, "basic-app", r3).error(), "invalid_grant");
    assert!(!idp.access_token_active(third["access_token"].as_str().unwrap()));
}

// ---- quirks -----------------------------------------------------------------------------

fn quirky(quirk: Quirk) -> DevIdp {
    let mut config = Config::new(clients());
    config.quirk = quirk;
    start(config)
}

#[test]
fn github_quirk_answers_in_form_bodies_and_errors_with_200() {
    let idp = quirky(Quirk::GitHub);
    let (code, verifier) = code_for(&idp, "post-app");
    let reply = redeem(&idp, "post-app", &code, &verifier);
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("application/x-www-form-urlencoded")
    );
    let fields = query(&format!("?{}", reply.body));
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["access_token", "scope", "token_type"]);
    assert!(
        reply.body.contains("&scope=read%2Cwrite&token_type=bearer"),
        "{}",
        reply.body
    );

    let (code, verifier) = code_for(&idp, "post-app");
    let grant = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", &verifier),
        ("client_id", "post-app"),
        ("client_secret", POST_SECRET),
    ]);
    let reply = token_request(
        &idp,
        &[("Accept", "text/html, application/json;q=0.9")],
        &grant,
    );
    let body = reply.json();
    assert_eq!(
        (body["token_type"].as_str(), body["scope"].as_str()),
        (Some("bearer"), Some("read,write"))
    );
    assert!(body.get("refresh_token").is_none() && body.get("expires_in").is_none());

    let reply = token_request(&idp, &[], &grant);
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .body
            .starts_with("error=bad_verification_code&error_description="),
        "{}",
        reply.body
    );
    let reply = token_request(&idp, &[("Accept", "application/json")], &grant);
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (200, "bad_verification_code")
    );
}

#[test]
fn entra_quirk_sends_string_expiry() {
    let idp = quirky(Quirk::EntraStringExpiry);
    let (code, verifier) = code_for(&idp, "public-app");
    let body = redeem(&idp, "public-app", &code, &verifier).json();
    assert_eq!(body["expires_in"], "3600");
    assert_eq!(body["ext_expires_in"], "3600");
    assert_eq!(body["token_type"], "Bearer");
}

#[test]
fn no_token_type_quirk_omits_token_type() {
    let idp = quirky(Quirk::NoTokenType);
    let (code, verifier) = code_for(&idp, "public-app");
    let body = redeem(&idp, "public-app", &code, &verifier).json();
    assert!(body.get("token_type").is_none(), "{body}");
    assert_eq!(body["expires_in"], 3600);
    assert!(body["access_token"].is_string() && body["refresh_token"].is_string());
}

#[test]
fn added_scopes_are_granted() {
    let mut config = Config::new(clients());
    config.scopes_added = vec!["openid".into(), "read".into()];
    let idp = start(config);
    let (code, verifier) = code_for(&idp, "public-app");
    assert_eq!(
        redeem(&idp, "public-app", &code, &verifier).json()["scope"],
        "read write openid"
    );
}

// ---- metadata, strictness, iss ----------------------------------------------------------

#[test]
fn metadata_documents() {
    let idp = idp();
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let (status, _, body) = agent::get(&format!("{}{path}", idp.base_url()), &[]).unwrap();
        assert_eq!(status, 200);
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["issuer"], idp.base_url());
        assert_eq!(doc["authorization_endpoint"], idp.authorization_endpoint());
        assert_eq!(doc["token_endpoint"], idp.token_endpoint());
        assert_eq!(
            doc["code_challenge_methods_supported"],
            serde_json::json!(["S256"])
        );
        assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
        let methods = serde_json::json!([
            "client_secret_basic",
            "client_secret_post",
            "none",
            "private_key_jwt"
        ]);
        assert_eq!(doc["token_endpoint_auth_methods_supported"], methods);
        assert_eq!(doc["revocation_endpoint_auth_methods_supported"], methods);
        assert_eq!(
            doc["introspection_endpoint_auth_methods_supported"],
            methods
        );
        assert_eq!(doc["introspection_endpoint"], idp.introspection_endpoint());
        assert_eq!(
            doc["pushed_authorization_request_endpoint"],
            idp.pushed_authorization_request_endpoint()
        );
        assert_eq!(doc["require_pushed_authorization_requests"], false);
        for member in [
            "dpop_signing_alg_values_supported",
            "token_endpoint_auth_signing_alg_values_supported",
        ] {
            let algs = doc[member].as_array().unwrap();
            assert!(algs.contains(&"ES256".into()) && algs.contains(&"EdDSA".into()));
            assert!(
                !algs.iter().any(|a| a == "none" || a == "HS256"),
                "{member}"
            );
        }
    }
    let (status, _, _) = agent::get(&format!("{}/favicon.ico", idp.base_url()), &[]).unwrap();
    assert_eq!(status, 404);
}

#[test]
fn the_revocation_endpoint_can_be_listed_in_the_rfc8414_document_only() {
    let mut config = Config::new(clients());
    config.revocation_only_in_oauth_metadata = true;
    let idp = start(config);
    let document = |path: &str| -> Value {
        let (status, _, body) = agent::get(&format!("{}{path}", idp.base_url()), &[]).unwrap();
        assert_eq!(status, 200, "{path}");
        serde_json::from_slice(&body).unwrap()
    };
    let oidc = document("/.well-known/openid-configuration");
    let oauth = document("/.well-known/oauth-authorization-server");
    assert_eq!(oidc["revocation_endpoint"], Value::Null);
    assert_eq!(oauth["revocation_endpoint"], idp.revocation_endpoint());
    assert_eq!(oidc["token_endpoint"], oauth["token_endpoint"]);
}

#[test]
fn configured_issuer_and_no_iss() {
    let mut config = Config::new(clients());
    config.issuer = Some("http://idp.test/realms/dev".into());
    config.send_iss = false;
    let idp = start(config);
    assert_eq!(idp.issuer(), "http://idp.test/realms/dev");
    for path in [
        "/.well-known/oauth-authorization-server/realms/dev",
        "/realms/dev/.well-known/openid-configuration",
    ] {
        let (status, _, body) = agent::get(&format!("{}{path}", idp.base_url()), &[]).unwrap();
        assert_eq!(status, 200, "{path}");
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["issuer"], "http://idp.test/realms/dev");
        assert_eq!(doc["authorization_response_iss_parameter_supported"], false);
    }
    let (_, challenge) = pkce();
    let reply = authorize(&idp, &authz_params("public-app", &challenge));
    assert!(param(&reply, "code").is_some());
    assert_eq!(param(&reply, "iss"), None);
}

#[test]
fn token_requests_are_decoded_strictly() {
    let idp = idp();
    let (code, verifier) = code_for(&idp, "public-app");
    let good = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", &verifier),
        ("client_id", "public-app"),
    ]);
    let cases = [
        (format!("{good}&code={code}"), "invalid_request"),
        (format!("{good}&"), "invalid_request"),
        (format!("{good}&x=a b"), "invalid_request"),
        (format!("{good}&x=a=b"), "invalid_request"),
        (format!("{good}&x=%G0"), "invalid_request"),
        (
            good.replace("authorization_code", "password"),
            "unsupported_grant_type",
        ),
        (
            good.replace("grant_type=authorization_code&", ""),
            "invalid_request",
        ),
    ];
    for (body, error) in &cases {
        assert_eq!(&token_request(&idp, &[], body).error(), error, "{body}");
    }
    let (status, _, body) = agent::post(
        &idp.token_endpoint(),
        &[("Content-Type", "application/json")],
        good.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8(body).unwrap().contains("invalid_request"));
    let (status, headers, _) = agent::get(&idp.token_endpoint(), &[]).unwrap();
    assert_eq!(status, 405);
    assert!(headers.iter().any(|(n, v)| n == "Allow" && v == "POST"));
    // Raw ':' and '/' are not form-serializer output but decode unambiguously: accepted.
    let raw = good.replace("%3A%2F", ":/");
    let content_type = (
        "Content-Type",
        "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
    );
    let reply = token_request(&idp, &[content_type], &raw);
    assert_eq!(reply.status, 200, "{}", reply.body);
}

// ---- the user agent ---------------------------------------------------------------------

/// A loopback "app": answers `/callback` with a relative redirect to `/done`, then `/done`
/// with 200; returns the two request heads.
fn app_listener() -> (String, thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/callback", listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        let mut heads = Vec::new();
        for reply in [
            "303 See Other\r\nLocation: done",
            "200 OK\r\nContent-Type: text/plain",
        ] {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            heads.push(String::from_utf8(head).unwrap());
            let response =
                format!("HTTP/1.1 {reply}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            stream.write_all(response.as_bytes()).unwrap();
        }
        heads
    });
    (url, handle)
}

#[test]
fn browse_follows_the_redirect_chain_to_a_loopback_app() {
    let (callback, app) = app_listener();
    let mut clients = clients();
    clients[2].redirect_uris.push(callback.clone());
    let idp = start(Config::new(clients));
    let (_, challenge) = pkce();
    let mut params = authz_params("public-app", &challenge);
    params
        .iter_mut()
        .find(|(k, _)| *k == "redirect_uri")
        .unwrap()
        .1 = &callback;
    let url = format!(
        "{}?{}#fragment",
        idp.authorization_endpoint(),
        form(&params)
    );
    let hops = agent::browse(&url).unwrap();

    let statuses: Vec<u16> = hops.iter().map(|h| h.status).collect();
    assert_eq!(statuses, [303, 303, 200]);
    assert_eq!(hops[0].url, url.split('#').next().unwrap());
    assert!(hops[1].url.starts_with(&format!("{callback}?code=")));
    let done = callback.replace("/callback", "/done");
    assert_eq!(hops[1].location.as_deref(), Some(done.as_str()));
    assert_eq!(
        (hops[2].url.as_str(), hops[2].location.as_deref()),
        (done.as_str(), None)
    );

    let first = &idp.requests()[0];
    assert_eq!(first.header("sec-fetch-site"), Some("none"));
    assert_eq!(first.header("sec-fetch-mode"), Some("navigate"));
    assert_eq!(first.header("sec-fetch-dest"), Some("document"));
    assert!(first.header("user-agent").unwrap().contains("Chrome/"));
    assert!(first.header("host").unwrap().starts_with("127.0.0.1:"));
    let heads = app.join().unwrap();
    assert!(
        heads[0].contains("\r\nSec-Fetch-Site: same-site\r\n"),
        "{}",
        heads[0]
    );
    assert!(heads[1].starts_with("GET /done HTTP/1.1\r\n"));
    assert!(heads[1].contains("\r\nSec-Fetch-Site: same-origin\r\n"));
}

#[test]
fn browse_stops_before_leaving_loopback() {
    let mut clients = clients();
    clients[2]
        .redirect_uris
        .push("http://example.com/cb".into());
    let idp = start(Config::new(clients));
    let (_, challenge) = pkce();
    let mut params = authz_params("public-app", &challenge);
    params
        .iter_mut()
        .find(|(k, _)| *k == "redirect_uri")
        .unwrap()
        .1 = "http://example.com/cb";
    let hops = agent::browse(&format!(
        "{}?{}",
        idp.authorization_endpoint(),
        form(&params)
    ))
    .unwrap();
    assert_eq!(hops.len(), 1);
    assert!(
        hops[0]
            .location
            .as_deref()
            .unwrap()
            .starts_with("http://example.com/cb?code=")
    );
}

#[test]
fn agent_refuses_other_hosts_and_schemes() {
    for url in [
        "https://127.0.0.1/",
        "http://example.com/",
        "http://192.0.2.1/",
        "ftp://127.0.0.1/",
    ] {
        assert!(agent::browse(url).is_err(), "{url}");
        assert!(agent::get(url, &[]).is_err(), "{url}");
    }
    assert!(agent::get("http://127.0.0.1:1/", &[("X", "a\r\nInjected: 1")]).is_err());
}

// ---- robustness -------------------------------------------------------------------------

#[test]
fn port_is_released_after_drop() {
    let idp = idp();
    let addr = idp.local_addr();
    let (code, verifier) = code_for(&idp, "public-app");
    assert_eq!(redeem(&idp, "public-app", &code, &verifier).status, 200);
    drop(idp);
    let rebound = TcpListener::bind(addr).expect("port still held after drop");
    drop(rebound);

    let idp = DevIdp::start(Config::new(clients()), addr).expect("restart on the same port");
    assert_eq!(idp.local_addr(), addr);
    idp.shutdown();
    TcpListener::bind(addr).expect("port still held after shutdown");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(DevIdp::start(Config::new(clients()), taken.local_addr().unwrap()).is_err());
}

#[test]
fn garbage_never_crashes_the_server() {
    server_panics(); // installs the hook that counts them
    let idp = idp();
    let (_, challenge) = pkce();
    let authz = format!(
        "GET /authorize?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        form(&authz_params("public-app", &challenge))
    );
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", "abc"),
        ("redirect_uri", REDIRECT),
        ("code_verifier", &challenge),
        ("client_id", "public-app"),
    ]);
    let token = format!(
        "POST /token HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        basic("basic-app", ODD_SECRET),
        body.len()
    );
    let mut samples: Vec<Vec<u8>> = [
        "", "\r\n\r\n", "GET\r\n\r\n", "GET / HTTP/1.1\r\n\r\n", "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HTTP/9.9\r\nHost: x\r\n\r\n", "GET /\r\n\r\n",
        "POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nshort",
        "POST /token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n",
        "POST /token HTTP/1.1\r\nHost: x\r\nAuthorization: Basic\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n",
        "POST /token HTTP/1.1\r\nHost: x\r\nAuthorization: Basic !!!!\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n",
        "POST /token HTTP/1.1\r\nHost: x\r\nAuthorization: Basic w6k=\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n",
        "GET /authorize?%ff=%ff HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    samples.push(
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(20_000)
        )
        .into_bytes(),
    );
    samples.push(format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(100)).into_bytes());
    samples.push(b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n".to_vec());
    for _ in 0..100 {
        samples.push(random_bytes(random_below(3000)));
        samples.push(mutate(authz.as_bytes()));
        samples.push(mutate(token.as_bytes()));
    }
    let mut answered = 0;
    for sample in &samples {
        let response = raw_exchange(&idp, sample);
        answered += usize::from(!response.is_empty());
        assert!(
            response.is_empty() || response.starts_with(b"HTTP/1.1 "),
            "{:?}",
            String::from_utf8_lossy(sample)
        );
    }
    // Connections that open and close without a byte, or stall half-way, are harmless too.
    for _ in 0..20 {
        drop(TcpStream::connect(idp.local_addr()).unwrap());
    }
    let mut stalled = TcpStream::connect(idp.local_addr()).unwrap();
    stalled.write_all(b"GET /authorize?client").unwrap();

    let (code, verifier) = code_for(&idp, "public-app");
    assert_eq!(redeem(&idp, "public-app", &code, &verifier).status, 200);
    assert_eq!(server_panics(), 0);
    assert!(
        answered > samples.len() / 2,
        "{answered} of {}",
        samples.len()
    );
    assert!(idp.stats().requests > 30, "{:?}", idp.stats());
}

// ---- OpenID Connect ---------------------------------------------------------------------

const NONCE: &str = "n-0S6_WzA2Mj";

fn oidc_idp(alg: IdTokenAlg) -> DevIdp {
    let mut config = Config::new(clients());
    config.id_token_alg = alg;
    start(config)
}

/// Authorizes `client` for `scope`, with `nonce` and `login_hint` when given; returns
/// (code, verifier).
fn oidc_code(
    idp: &DevIdp,
    client: &str,
    scope: &str,
    nonce: Option<&str>,
    hint: Option<&str>,
) -> (String, String) {
    let (verifier, challenge) = pkce();
    let mut params = authz_params(client, &challenge);
    params.retain(|(k, _)| *k != "scope");
    params.push(("scope", scope));
    params.extend(nonce.map(|n| ("nonce", n)));
    params.extend(hint.map(|h| ("login_hint", h)));
    let reply = authorize(idp, &params);
    (param(&reply, "code").unwrap().to_owned(), verifier)
}

/// A whole login of `client` (authorization and code exchange); the token response.
fn oidc_login(
    idp: &DevIdp,
    client: &str,
    scope: &str,
    nonce: Option<&str>,
    hint: Option<&str>,
) -> Value {
    let (code, verifier) = oidc_code(idp, client, scope, nonce, hint);
    let reply = redeem(idp, client, &code, &verifier);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

/// The token response's ID token, decoded.
fn id_token_of(body: &Value) -> Jwt {
    parse_jwt(
        body["id_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}")),
    )
}

fn kids(keys: &[Value]) -> Vec<&str> {
    keys.iter().map(|k| k["kid"].as_str().unwrap()).collect()
}

/// A login's ID token in every detail, for `alg`, with a non-default token lifetime.
fn check_login_id_token(alg: IdTokenAlg, hint: Option<&str>) {
    let mut config = Config::new(clients());
    config.id_token_alg = alg;
    config.token_lifetime = Duration::from_secs(1800);
    let idp = start(config);
    let before = unix_now();
    let body = oidc_login(&idp, "basic-app", "openid email", Some(NONCE), hint);
    let after = unix_now();
    assert_eq!(body["scope"], "openid email");
    let access = body["access_token"].as_str().unwrap();
    let token = body["id_token"].as_str().unwrap();
    let jwt = parse_jwt(token);
    let sub = hint.unwrap_or("dev-user");

    // The header names the algorithm and a published key of its type, which verifies.
    let header = jwt.header.as_object().unwrap();
    let mut names: Vec<&str> = header.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["alg", "kid", "typ"], "{}", jwt.header);
    assert_eq!(jwt.header["alg"], alg_name(alg));
    assert_eq!(jwt.header["typ"], "JWT");
    let keys = jwks(&idp);
    let key = keys
        .iter()
        .find(|k| k["kid"] == jwt.header["kid"])
        .unwrap_or_else(|| panic!("kid {} not in {keys:?}", jwt.header["kid"]));
    let (kty, signature_len) = match alg {
        IdTokenAlg::RS256 => ("RSA", 256),
        IdTokenAlg::ES256 => ("EC", 64),
    };
    assert_eq!(key["kty"], kty);
    assert_eq!(key["use"], "sig");
    assert_eq!(jwt.signature.len(), signature_len);
    assert!(verifies(key, jwt.input.as_bytes(), &jwt.signature));
    // The check can fail: another payload, or the key of the other type, does not verify.
    let other_input = jwt.input.replacen('.', ".e", 1);
    assert!(!verifies(key, other_input.as_bytes(), &jwt.signature));
    for other in keys.iter().filter(|k| k["kid"] != jwt.header["kid"]) {
        assert!(!verifies(other, jwt.input.as_bytes(), &jwt.signature));
    }

    // The claims, exactly.
    let claims = &jwt.claims;
    let iat = claims["iat"].as_u64().unwrap();
    assert!((before..=after).contains(&iat), "{claims}");
    let auth_time = claims["auth_time"].as_u64().unwrap();
    assert!((before..=iat).contains(&auth_time), "{claims}");
    let mut expected = profile(sub);
    let members = expected.as_object_mut().unwrap();
    members.insert("iss".into(), json!(idp.issuer()));
    members.insert("aud".into(), json!("basic-app"));
    members.insert("iat".into(), json!(iat));
    members.insert("exp".into(), json!(iat + 1800));
    members.insert("auth_time".into(), json!(auth_time));
    members.insert("nonce".into(), json!(NONCE));
    members.insert("at_hash".into(), json!(at_hash(access)));
    assert_eq!(*claims, expected);
    assert_ne!(
        claims["at_hash"],
        at_hash(body["refresh_token"].as_str().unwrap())
    );

    let honest = Expected {
        alg,
        client: "basic-app",
        sub,
        nonce: Some(NONCE),
        access_token: access,
        auth_time: Some(auth_time),
    };
    assert_eq!(broken_rules(&idp, token, &honest), [""; 0]);
    // The rule checker can fail too.
    let wrong = Expected {
        client: "post-app",
        nonce: Some("other"),
        ..honest
    };
    assert_eq!(broken_rules(&idp, token, &wrong), ["aud", "nonce"]);
}

#[test]
fn openid_login_returns_an_rs256_id_token_verified_by_the_key_set() {
    check_login_id_token(IdTokenAlg::RS256, Some("alice"));
}

#[test]
fn es256_id_tokens_verify_with_the_p256_key_and_default_user() {
    check_login_id_token(IdTokenAlg::ES256, None);
}

#[test]
fn no_id_token_without_openid_scope_unless_added() {
    let idp = idp();
    let body = oidc_login(&idp, "public-app", "read email", Some(NONCE), Some("al"));
    assert!(body.get("id_token").is_none(), "{body}");
    let refreshed = refresh(&idp, "public-app", body["refresh_token"].as_str().unwrap());
    assert!(
        refreshed.json().get("id_token").is_none(),
        "{}",
        refreshed.body
    );
    // `openid` must be a scope of its own, not a part of one.
    let body = oidc_login(&idp, "public-app", "openid2 xopenid", None, None);
    assert!(body.get("id_token").is_none(), "{body}");

    // A provider that adds `openid` by itself (like Google) sends an ID token anyway.
    let mut config = Config::new(clients());
    config.scopes_added = vec!["openid".into()];
    let idp = start(config);
    let body = oidc_login(&idp, "public-app", "read", None, Some("al"));
    assert_eq!(body["scope"], "read openid");
    assert_eq!(id_token_of(&body).claims["sub"], "al");
}

#[test]
fn refresh_gives_a_new_id_token_for_the_same_user_without_nonce() {
    for alg in [IdTokenAlg::RS256, IdTokenAlg::ES256] {
        let idp = oidc_idp(alg);
        let login = oidc_login(&idp, "post-app", "openid", Some(NONCE), Some("bob"));
        let first = id_token_of(&login);
        let auth_time = first.claims["auth_time"].as_u64().unwrap();

        let refreshed = refresh(&idp, "post-app", login["refresh_token"].as_str().unwrap());
        assert_eq!(refreshed.status, 200, "{}", refreshed.body);
        let refreshed = refreshed.json();
        let access = refreshed["access_token"].as_str().unwrap();
        let token = refreshed["id_token"].as_str().unwrap();
        assert_ne!(token, login["id_token"].as_str().unwrap());
        let expected = Expected {
            alg,
            client: "post-app",
            sub: "bob",
            nonce: None,
            access_token: access,
            auth_time: Some(auth_time),
        };
        assert_eq!(broken_rules(&idp, token, &expected), [""; 0], "{alg:?}");
        assert!(parse_jwt(token).claims.get("nonce").is_none());
        assert_eq!(parse_jwt(token).header["kid"], first.header["kid"]);

        // After a rotation the next refresh is signed by the new current key.
        let (rsa, ec) = idp.rotate_keys().unwrap();
        let current = match alg {
            IdTokenAlg::RS256 => rsa,
            IdTokenAlg::ES256 => ec,
        };
        let again = refresh(
            &idp,
            "post-app",
            refreshed["refresh_token"].as_str().unwrap(),
        );
        let again = again.json();
        let token = again["id_token"].as_str().unwrap();
        assert_eq!(parse_jwt(token).header["kid"], current.as_str());
        let expected = Expected {
            access_token: again["access_token"].as_str().unwrap(),
            ..expected
        };
        assert_eq!(broken_rules(&idp, token, &expected), [""; 0], "{alg:?}");
    }
}

#[test]
fn rotated_keys_sign_new_tokens_and_the_key_set_keeps_one_previous_key() {
    for alg in [IdTokenAlg::RS256, IdTokenAlg::ES256] {
        let idp = oidc_idp(alg);
        let kid_of = |idp: &DevIdp| -> (String, String) {
            let body = oidc_login(idp, "public-app", "openid", None, None);
            let token = body["id_token"].as_str().unwrap().to_owned();
            let kid = parse_jwt(&token).header["kid"].as_str().unwrap().to_owned();
            (kid, token)
        };
        let initial = jwks(&idp);
        assert_eq!(initial.len(), 2, "{initial:?}");
        let types: Vec<&str> = initial.iter().map(|k| k["kty"].as_str().unwrap()).collect();
        assert_eq!(types, ["RSA", "EC"]);
        let (kid1, token1) = kid_of(&idp);
        assert!(kids(&initial).contains(&kid1.as_str()));
        let (rsa1, ec1) = (kids(&initial)[0].to_owned(), kids(&initial)[1].to_owned());

        let (rsa2, ec2) = idp.rotate_keys().unwrap();
        let (kid2, token2) = kid_of(&idp);
        let new = match alg {
            IdTokenAlg::RS256 => &rsa2,
            IdTokenAlg::ES256 => &ec2,
        };
        assert_eq!(&kid2, new);
        assert_ne!(kid1, kid2);
        let keys = jwks(&idp);
        let mut listed = kids(&keys);
        listed.sort_unstable();
        let mut wanted = vec![rsa1.as_str(), rsa2.as_str(), ec1.as_str(), ec2.as_str()];
        wanted.sort_unstable();
        assert_eq!(listed, wanted);
        let count = |kty: &str| keys.iter().filter(|k| k["kty"] == kty).count();
        assert_eq!((count("RSA"), count("EC")), (2, 2));
        // Both the new and the previous token still verify by their kid.
        for (kid, token) in [(&kid1, &token1), (&kid2, &token2)] {
            let jwt = parse_jwt(token);
            let key = keys.iter().find(|k| k["kid"] == kid.as_str()).unwrap();
            assert!(verifies(key, jwt.input.as_bytes(), &jwt.signature), "{kid}");
        }

        let (rsa3, ec3) = idp.rotate_keys().unwrap();
        let (kid3, _) = kid_of(&idp);
        assert_eq!(
            &kid3,
            match alg {
                IdTokenAlg::RS256 => &rsa3,
                IdTokenAlg::ES256 => &ec3,
            }
        );
        let mut listed = kids(&jwks(&idp))
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>();
        listed.sort_unstable();
        let mut wanted = vec![rsa2.clone(), rsa3.clone(), ec2.clone(), ec3.clone()];
        wanted.sort_unstable();
        assert_eq!(listed, wanted, "{alg:?}");
        assert!(!listed.contains(&kid1) && !listed.contains(&rsa1) && !listed.contains(&ec1));
        let all = [&rsa1, &rsa2, &rsa3, &ec1, &ec2, &ec3];
        for (i, kid) in all.iter().enumerate() {
            assert!(!all[..i].contains(kid), "kid {kid} reused");
        }
    }
}

#[test]
fn each_forgery_breaks_exactly_its_rule() {
    for alg in [IdTokenAlg::RS256, IdTokenAlg::ES256] {
        let idp = oidc_idp(alg);
        for forgery in Forgery::ALL {
            // (at login, at refresh): a refresh has no nonce, and a login's user is
            // whoever signs in, so `Subject` forges refreshes only, though on from the start.
            let (at_login, at_refresh): (&[&str], &[&str]) = match forgery {
                Forgery::Signature => (&["signature"], &["signature"]),
                Forgery::AlgNone => (&["alg"], &["alg"]),
                Forgery::UnknownKey => (&["kid"], &["kid"]),
                Forgery::Issuer => (&["iss"], &["iss"]),
                Forgery::Audience => (&["aud"], &["aud"]),
                Forgery::Expired => (&["exp"], &["exp"]),
                Forgery::NotYetValid => (&["iat", "nbf"], &["iat", "nbf"]),
                Forgery::Nonce => (&["nonce"], &[]),
                Forgery::AccessTokenHash => (&["at_hash"], &["at_hash"]),
                Forgery::Subject => (&[], &["sub"]),
                Forgery::UserInfoSubject => (&[], &[]),
            };
            let case = format!("{forgery:?} with {alg:?}");
            idp.set_forgery(Some(forgery));
            let login = oidc_login(&idp, "public-app", "openid", Some(NONCE), Some("erin"));
            let access = login["access_token"].as_str().unwrap();
            let token = login["id_token"].as_str().unwrap();
            let expected = Expected {
                alg,
                client: "public-app",
                sub: "erin",
                nonce: Some(NONCE),
                access_token: access,
                auth_time: None,
            };
            assert_eq!(broken_rules(&idp, token, &expected), at_login, "{case}");
            check_forged_form(&idp, forgery, token);
            idp.set_forgery(Some(forgery));

            let refreshed = refresh(&idp, "public-app", login["refresh_token"].as_str().unwrap());
            let refreshed = refreshed.json();
            let access = refreshed["access_token"].as_str().unwrap();
            let token = refreshed["id_token"].as_str().unwrap();
            let expected = Expected {
                nonce: None,
                access_token: access,
                ..expected
            };
            assert_eq!(broken_rules(&idp, token, &expected), at_refresh, "{case}");
            check_forged_form(&idp, forgery, token);

            // UserInfo is honest but under its own forgery, which changes `sub` only.
            let info = get_reply(
                &idp.userinfo_endpoint(),
                &[("Authorization", &format!("Bearer {access}"))],
            );
            assert_eq!(info.status, 200, "{case}");
            let mut wanted = profile("erin");
            if forgery == Forgery::UserInfoSubject {
                assert_ne!(info.json()["sub"], "erin");
                wanted["sub"] = info.json()["sub"].clone();
            }
            assert_eq!(info.json(), wanted, "{case}");
            idp.set_forgery(None);
        }

        // Back to honest tokens and answers.
        let login = oidc_login(&idp, "public-app", "openid", Some(NONCE), Some("erin"));
        let access = login["access_token"].as_str().unwrap();
        let expected = Expected {
            alg,
            client: "public-app",
            sub: "erin",
            nonce: Some(NONCE),
            access_token: access,
            auth_time: None,
        };
        let token = login["id_token"].as_str().unwrap();
        assert_eq!(broken_rules(&idp, token, &expected), [""; 0]);
        let info = get_reply(
            &idp.userinfo_endpoint(),
            &[("Authorization", &format!("Bearer {access}"))],
        );
        assert_eq!(info.json(), profile("erin"));
    }
}

/// The form of a forged token beyond the rule it breaks: `alg: none` has no signature, an
/// unknown key's signature is checked by no published key, a broken signature is one of
/// the right length.
fn check_forged_form(idp: &DevIdp, forgery: Forgery, token: &str) {
    let jwt = parse_jwt(token);
    match forgery {
        Forgery::AlgNone => {
            assert_eq!(jwt.header, json!({"alg": "none", "typ": "JWT"}));
            assert!(token.ends_with('.') && jwt.signature.is_empty(), "{token}");
        }
        Forgery::UnknownKey => {
            let keys = jwks(idp);
            assert!(!kids(&keys).contains(&jwt.header["kid"].as_str().unwrap()));
            assert!(!jwt.signature.is_empty());
            for key in &keys {
                if key["alg"] == jwt.header["alg"] {
                    assert!(!verifies(key, jwt.input.as_bytes(), &jwt.signature));
                }
            }
        }
        Forgery::Signature => {
            let len = if jwt.header["alg"] == "RS256" {
                256
            } else {
                64
            };
            assert_eq!(jwt.signature.len(), len);
        }
        Forgery::NotYetValid => {
            let now = unix_now();
            assert!(jwt.claims["iat"].as_u64().unwrap() > now + 600);
            assert!(jwt.claims["nbf"].as_u64().unwrap() > now + 600);
            assert!(jwt.claims["exp"].as_u64().unwrap() > now);
        }
        Forgery::Expired => {
            assert!(jwt.claims["exp"].as_u64().unwrap() + 600 < unix_now());
        }
        _ => assert!(jwt.claims.get("nbf").is_none()),
    }
}

#[test]
fn forgery_names_round_trip() {
    let mut names = Vec::new();
    for forgery in Forgery::ALL {
        assert_eq!(Forgery::from_name(forgery.name()), Some(forgery));
        assert!(!names.contains(&forgery.name()), "{forgery:?}");
        names.push(forgery.name());
    }
    assert_eq!(Forgery::from_name("Signature"), None);
    assert_eq!(Forgery::from_name(""), None);
    assert_eq!(Forgery::from_name("alg_none"), None);
}

#[test]
fn userinfo_needs_an_active_bearer_access_token() {
    let idp = idp();
    let login = oidc_login(&idp, "public-app", "openid", None, Some("carol"));
    let access = login["access_token"].as_str().unwrap();
    let bearer = format!("Bearer {access}");

    let reply = get_reply(&idp.userinfo_endpoint(), &[("Authorization", &bearer)]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), profile("carol"));
    assert_eq!(id_token_of(&login).claims["sub"], reply.json()["sub"]);

    let refresh_token = login["refresh_token"].as_str().unwrap();
    let refresh_bearer = format!("Bearer {refresh_token}");
    let basic_auth = basic("public-app", "x");
    let refused: [&[(&str, &str)]; 5] = [
        &[],
        &[("Authorization", "Bearer unknown-token")],
        &[("Authorization", &refresh_bearer)],
        &[("Authorization", &basic_auth)],
        &[("Authorization", "Bearer ")],
    ];
    for headers in refused {
        let reply = get_reply(&idp.userinfo_endpoint(), headers);
        assert_eq!(reply.status, 401, "{headers:?}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\""),
            "{headers:?}"
        );
    }
    // In a query or form body the token does not count either.
    let reply = get_reply(
        &format!("{}?access_token={access}", idp.userinfo_endpoint()),
        &[],
    );
    assert_eq!(reply.status, 401);

    let (status, headers, _) = agent::post(
        &idp.userinfo_endpoint(),
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(status, 405);
    assert!(headers.iter().any(|(n, v)| n == "Allow" && v == "GET"));

    // A revoked access token is refused.
    let (status, _, _) = agent::post(
        &idp.revocation_endpoint(),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form(&[("token", access), ("client_id", "public-app")]).as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200);
    let reply = get_reply(&idp.userinfo_endpoint(), &[("Authorization", &bearer)]);
    assert_eq!(reply.status, 401);

    // So is an expired one.
    let mut config = Config::new(clients());
    config.token_lifetime = Duration::from_secs(1);
    let idp = start(config);
    let login = oidc_login(&idp, "public-app", "openid", None, Some("carol"));
    let bearer = format!("Bearer {}", login["access_token"].as_str().unwrap());
    let reply = get_reply(&idp.userinfo_endpoint(), &[("Authorization", &bearer)]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    thread::sleep(Duration::from_millis(1100));
    let reply = get_reply(&idp.userinfo_endpoint(), &[("Authorization", &bearer)]);
    assert_eq!(reply.status, 401);
}

#[test]
fn github_quirks_have_no_openid_connect() {
    for quirk in [Quirk::GitHub, Quirk::GitHubApp] {
        let idp = quirky(quirk);
        for path in [
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        ] {
            let doc = get_reply(&format!("{}{path}", idp.base_url()), &[]).json();
            assert_eq!(doc["token_endpoint"], idp.token_endpoint(), "{quirk:?}");
            for member in [
                "jwks_uri",
                "userinfo_endpoint",
                "id_token_signing_alg_values_supported",
            ] {
                assert!(doc.get(member).is_none(), "{quirk:?} {path}: {member}");
            }
        }

        for accept in [None, Some("application/json")] {
            let (code, verifier) = oidc_code(&idp, "post-app", "openid read", Some(NONCE), None);
            let grant = form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
                ("client_id", "post-app"),
                ("client_secret", POST_SECRET),
            ]);
            let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
            let reply = token_request(&idp, &headers, &grant);
            assert_eq!(reply.status, 200, "{}", reply.body);
            assert!(reply.body.contains("access_token"), "{}", reply.body);
            assert!(
                !reply.body.contains("id_token"),
                "{quirk:?}: {}",
                reply.body
            );
            if quirk == Quirk::GitHubApp && accept.is_some() {
                let refresh_token = reply.json()["refresh_token"].as_str().unwrap().to_owned();
                let refreshed = token_request(
                    &idp,
                    &headers,
                    &form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &refresh_token),
                        ("client_id", "post-app"),
                        ("client_secret", POST_SECRET),
                    ]),
                );
                assert_eq!(refreshed.status, 200, "{}", refreshed.body);
                assert!(refreshed.json()["access_token"].is_string());
                assert!(
                    refreshed.json().get("id_token").is_none(),
                    "{}",
                    refreshed.body
                );
            }
        }
    }
}

#[test]
fn discovery_lists_the_key_set_userinfo_and_signing_algorithm() {
    for alg in [IdTokenAlg::RS256, IdTokenAlg::ES256] {
        let idp = oidc_idp(alg);
        for path in [
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        ] {
            let doc = get_reply(&format!("{}{path}", idp.base_url()), &[]).json();
            assert_eq!(doc["jwks_uri"], idp.jwks_uri());
            assert_eq!(doc["jwks_uri"], format!("{}/jwks", idp.base_url()));
            assert_eq!(doc["userinfo_endpoint"], idp.userinfo_endpoint());
            assert_eq!(
                doc["userinfo_endpoint"],
                format!("{}/userinfo", idp.base_url())
            );
            assert_eq!(
                doc["id_token_signing_alg_values_supported"],
                json!([alg_name(alg)]),
                "{path}"
            );
        }
        // The listed key set is served, with well-formed keys, to GET only.
        for key in jwks(&idp) {
            assert_eq!(key["use"], "sig");
            match key["kty"].as_str().unwrap() {
                "RSA" => {
                    assert_eq!(key["alg"], "RS256");
                    assert_eq!(b64(&key["n"]).len(), 256);
                    assert_eq!(b64(&key["e"]), [1, 0, 1]);
                }
                "EC" => {
                    assert_eq!(
                        (&key["alg"], &key["crv"]),
                        (&json!("ES256"), &json!("P-256"))
                    );
                    assert_eq!((b64(&key["x"]).len(), b64(&key["y"]).len()), (32, 32));
                }
                other => panic!("{other}"),
            }
        }
        let (status, headers, _) = agent::post(&idp.jwks_uri(), &[], b"").unwrap();
        assert_eq!(status, 405);
        assert!(headers.iter().any(|(n, v)| n == "Allow" && v == "GET"));
    }
}
