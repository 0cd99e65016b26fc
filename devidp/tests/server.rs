//! The server against the scripted user agent and hand-built token requests.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_devidp::{Client, ClientAuth, Config, DevIdp, Quirk, agent};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// A private-use scheme: `browse` records the redirect but does not follow it.
const REDIRECT: &str = "com.example.app:/callback";
const OTHER_REDIRECT: &str = "http://127.0.0.1/other";
/// Exercises the form-encoding of Basic credentials (RFC 6749 §2.3.1).
const ODD_SECRET: &str = "+/:%&= ~!";
const POST_SECRET: &str = "post-secret";
const STATE: &str = "st+ate/1 ~&=";

// ---- helpers ----------------------------------------------------------------------------

/// RFC 3986 unreserved characters stay, everything else is `%XX` (unlike the server's
/// WHATWG serializer, so the server must accept either).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn form(pairs: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    pairs.join("&")
}

fn dec(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap());
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).unwrap()
}

/// The decoded query parameters of `url`.
fn query(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (dec(k), dec(v))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn clients() -> Vec<Client> {
    let client = |id: &str, secret: Option<&str>, auth| Client {
        id: id.into(),
        secret: secret.map(Into::into),
        auth,
        redirect_uris: vec![REDIRECT.into(), OTHER_REDIRECT.into()],
    };
    vec![
        client("basic-app", Some(ODD_SECRET), ClientAuth::Basic),
        client("post-app", Some(POST_SECRET), ClientAuth::Post),
        client("public-app", None, ClientAuth::None),
    ]
}

fn start(config: Config) -> DevIdp {
    DevIdp::start(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

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

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

fn token_request(idp: &DevIdp, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    let (status, headers, body) =
        agent::post(&idp.token_endpoint(), &all, body.as_bytes()).unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

/// A token request authenticated as `client` is registered; `fields` is the grant.
fn authenticated(idp: &DevIdp, client: &str, fields: &[(&str, &str)]) -> Reply {
    let mut fields = fields.to_vec();
    let auth;
    let headers: &[(&str, &str)] = match client {
        "basic-app" => {
            auth = basic(client, ODD_SECRET);
            &[("Authorization", auth.as_str())]
        }
        "post-app" => {
            fields.extend([("client_id", client), ("client_secret", POST_SECRET)]);
            &[]
        }
        _ => {
            fields.push(("client_id", client));
            &[]
        }
    };
    token_request(idp, headers, &form(&fields))
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
        let methods = doc["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap();
        assert_eq!(methods.len(), 3);
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

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

fn random_below(n: usize) -> usize {
    random_bytes(4)
        .iter()
        .fold(0usize, |acc, &b| acc << 8 | usize::from(b))
        % n.max(1)
}

/// Replaces a few bytes of `input` with random ones, biased towards syntax characters.
fn mutate(input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=random_below(4) {
        let pos = random_below(out.len());
        let special = b"%&=+?:/\r\n \0\xff";
        out[pos] = match random_below(2) {
            0 => special[random_below(special.len())],
            _ => random_bytes(1)[0],
        };
    }
    out
}

/// Sends raw bytes and reads whatever comes back.
fn raw_exchange(idp: &DevIdp, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(idp.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response
}

#[test]
fn garbage_never_crashes_the_server() {
    // A panic would only end its connection thread; count them to see it.
    static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if thread::current().name() == Some("devidp-conn") {
            SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
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
    assert_eq!(SERVER_PANICS.load(Ordering::SeqCst), 0);
    assert!(
        answered > samples.len() / 2,
        "{answered} of {}",
        samples.len()
    );
    assert!(idp.stats().requests > 30, "{:?}", idp.stats());
}
