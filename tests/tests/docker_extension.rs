//! The Docker Desktop extension's backend end to end, as Docker Desktop runs it minus the
//! container: the process with its settings, secret file, API socket and token file in a
//! temporary directory ([`latchkey_tests::extension`]). The UI's calls go to the
//! socket as Docker Desktop forwards them; a scripted browser signs in at the provider.
//!
//! Against oidc-provider (the reference, OpenID Certified), with the loopback redirect: the
//! real host binary, `latchkey-callback`, listens for the browser on a free port and prints
//! the callback, which the test forwards to the backend as the UI would. Logins, the API
//! proxy and its refusals, cancelling and replacing logins, logout revoking at the provider,
//! an offline start and its recovery, a fixed port in use, SIGTERM; and that no answer on the
//! socket ever carries a token. Against the development identity provider: Docker
//! Desktop's newer pattern, an application redirect URI whose deep link the UI forwards.
//! Settings that cannot work keep the backend serving its status; a company CA file lets it
//! reach an https issuer that CA signed.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_devidp::{DevIdp, agent};
use latchkey_tests::extension::{Backend, Callback, READY, RawResponse, assert_clean_json_log};
use latchkey_tests::oidc::{self, OidcProvider, RegisteredClient};
use latchkey_tests::oidc_agent::{self, Choice, Hop};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{Value, json};

/// Where the host binary sends the browser after its callback, by default.
const LANDING: &str = "docker-desktop://dashboard/open";
/// Docker Desktop's deep link to the extension's tab.
const TAB: &str = "docker-desktop://dashboard/extension-tab?extensionId=latchkey/oauth-example";
/// What the backend puts in place of an access token an API echoes.
const BLANKED: &str = "[access token removed by the extension's backend]";

// ----- settings and logins -----

/// Settings for `client` at oidc-provider, discovered from the issuer, with its userinfo
/// endpoint as the sample API (so the issuer's origin is the one API origin allowed).
fn oidc_settings(idp: &OidcProvider, client: RegisteredClient) -> Value {
    json!({
        "issuer": idp.issuer(),
        "client_id": client.id,
        "scopes": ["openid", "profile"],
        "sample_api": format!("{}/me", idp.issuer()),
    })
}

/// A backend for `client` at `idp` with `settings`' extra members, its provider ready.
fn ready_backend(idp: &OidcProvider, client: RegisteredClient, extra: Value) -> Backend {
    let mut settings = oidc_settings(idp, client);
    if let (Value::Object(settings), Value::Object(extra)) = (&mut settings, extra) {
        settings.extend(extra);
    }
    let backend = Backend::start(settings, client.secret);
    backend.until_ready();
    backend
}

/// The host binary started as the UI starts it, from the status's `redirect`, and the
/// redirect URI it listens on.
fn host_binary(backend: &Backend) -> (Callback, String) {
    let status = backend.status();
    assert_eq!(status["redirect"]["kind"], "loopback", "{status}");
    let uri = status["redirect"]["uri"].as_str().expect("a redirect URI");
    let landing = status["redirect"]["landing"].as_str().expect("a landing");
    let host = Callback::start(uri, Some(landing));
    let listening = host.listening();
    (host, listening)
}

/// `POST /login` with `redirect_uri`: the authorization URL.
fn start_login(backend: &Backend, redirect_uri: &str) -> String {
    let (code, login) = backend.call(
        "POST",
        "/login",
        Some(json!({ "redirect_uri": redirect_uri })),
    );
    assert_eq!(code, 200, "{login}");
    assert_eq!(login["redirect_uri"], redirect_uri, "{login}");
    login["authorize_url"]
        .as_str()
        .expect("an authorization URL")
        .to_owned()
}

/// The user signs in at `url` and approves; the provider sends the browser to the host
/// binary at `redirect_uri`, which sends it on to the landing and prints the callback. The
/// browser's hops and the printed query.
fn sign_in_to_host(url: &str, host: &Callback, redirect_uri: &str) -> (Vec<Hop>, String) {
    let hops = oidc_agent::sign_in(url, Choice::Approve).expect("the user signs in");
    let hop = oidc_agent::callback(&hops, redirect_uri)
        .unwrap_or_else(|| panic!("the browser never reached the host binary: {hops:?}"));
    assert_eq!(hop.status, 303, "{hops:?}");
    assert_eq!(hop.location.as_deref(), Some(LANDING), "{hops:?}");
    let query = host.callback();
    assert_eq!(
        Some(query.as_str()),
        hop.url.strip_prefix(redirect_uri),
        "the host binary prints the query the browser brought"
    );
    (hops, query)
}

/// A whole login through the host binary, as the UI drives it: `POST /login`, the browser,
/// the printed callback forwarded to `POST /callback`, until the status says logged in.
/// The callback's query.
fn log_in(backend: &Backend, host: &Callback, redirect_uri: &str) -> String {
    let url = start_login(backend, redirect_uri);
    let (_, query) = sign_in_to_host(&url, host, redirect_uri);
    let (code, accepted) = backend.call("POST", "/callback", Some(json!({ "url": query })));
    assert_eq!(code, 202, "{accepted}");
    backend.status_until(|status| status["logged_in"] == true);
    query
}

/// The tokens in the token file.
#[derive(Debug)]
struct Tokens {
    access: String,
    refresh: String,
    id: String,
}

fn stored(backend: &Backend) -> Tokens {
    let tokens = backend.stored_tokens().expect("stored tokens");
    let text = |name: &str| {
        tokens[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} stored: {tokens}"))
            .to_owned()
    };
    Tokens {
        access: text("access_token"),
        refresh: text("refresh_token"),
        id: text("id_token"),
    }
}

/// The provider's userinfo answer for `access_token`.
fn userinfo(idp: &OidcProvider, access_token: &str) -> (u16, Value) {
    let authorization = format!("Bearer {access_token}");
    let (status, _, body) = agent::get(
        &format!("{}/me", idp.issuer()),
        &[("Authorization", authorization.as_str())],
    )
    .expect("the userinfo endpoint answers");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// `POST /api` with `call`: the status and the answer.
fn api(backend: &Backend, call: Value) -> (u16, Value) {
    backend.call("POST", "/api", Some(call))
}

fn assert_private(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
}

/// A loopback port nothing listens on (free a moment ago).
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("address").port()
}

// ----- a test API -----

/// One request an [`ApiServer`] received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How an [`ApiServer`] answers: given the request and how many requests for the same path
/// came before it, the whole HTTP response.
type Answer = dyn Fn(&Seen, usize) -> String + Send + Sync;

/// An HTTP/1.1 API on a loopback port of the test's own (over TLS when given a server
/// configuration): it records every request and answers as told, one request per
/// connection. Stopped when dropped.
struct ApiServer {
    port: u16,
    scheme: &'static str,
    host: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl ApiServer {
    fn start(answer: impl Fn(&Seen, usize) -> String + Send + Sync + 'static) -> ApiServer {
        ApiServer::serve(None, Arc::new(answer))
    }

    fn serve(tls: Option<Arc<ServerConfig>>, answer: Arc<Answer>) -> ApiServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("address").port();
        // Over TLS the name is the certificate's.
        let (scheme, host) = match tls {
            Some(_) => ("https", "localhost"),
            None => ("http", "127.0.0.1"),
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (record, stopped) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (record, answer, tls) = (Arc::clone(&record), Arc::clone(&answer), tls.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    match tls {
                        None => serve_one(stream, &record, &*answer),
                        Some(config) => {
                            let Ok(connection) = ServerConnection::new(config) else {
                                return;
                            };
                            let mut stream = StreamOwned::new(connection, stream);
                            serve_one(&mut stream, &record, &*answer);
                            stream.conn.send_close_notify();
                            let _ = stream.flush();
                        }
                    }
                });
            }
        });
        ApiServer {
            port,
            scheme,
            host,
            seen,
            stop,
        }
    }

    fn origin(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// Reads one request from `stream`, records it and writes `answer`'s response.
fn serve_one(mut stream: impl Read + Write, record: &Mutex<Vec<Seen>>, answer: &Answer) {
    let mut received = Vec::new();
    let mut chunk = [0; 4096];
    let seen = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = request.parse(&received) {
            let headers: Vec<(String, String)> = request
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if received.len() >= head + length {
                break Seen {
                    method: request.method.unwrap_or_default().to_owned(),
                    target: request.path.unwrap_or_default().to_owned(),
                    headers,
                    body: received[head..head + length].to_vec(),
                };
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(read) => received.extend_from_slice(&chunk[..read]),
        }
    };
    let path = seen.target.split('?').next().unwrap_or_default().to_owned();
    let before = {
        let mut all = record.lock().unwrap_or_else(PoisonError::into_inner);
        let before = all
            .iter()
            .filter(|s| s.target.split('?').next() == Some(path.as_str()))
            .count();
        all.push(seen.clone());
        before
    };
    let answer = answer(&seen, before);
    // A response to HEAD has the head only (its Content-Length is the GET's).
    let answer = match answer.find("\r\n\r\n") {
        Some(end) if seen.method == "HEAD" => &answer[..end + 4],
        _ => answer.as_str(),
    };
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.flush();
}

/// An HTTP/1.1 response with `headers`, a `Content-Length` and `Connection: close`.
fn response(status: u16, headers: &[(&str, &str)], body: &str) -> String {
    let mut text = format!("HTTP/1.1 {status} Whatever\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    text
}

/// An API that echoes the request's `Authorization` in its body and in the headers the
/// backend passes on (`WWW-Authenticate`, `Link`, `Location`); `/denied` answers 401
/// `insufficient_scope` (not retried) with the same echoes.
fn echo_server() -> ApiServer {
    ApiServer::start(|seen, _| {
        let authorization = seen.header("authorization").unwrap_or("none").to_owned();
        let status = if seen.target.starts_with("/denied") {
            401
        } else {
            200
        };
        let challenge = format!("Bearer error=\"insufficient_scope\", echo=\"{authorization}\"");
        let link = format!("<http://127.0.0.1/next?auth={authorization}>; rel=\"next\"");
        let location = format!("/elsewhere?auth={authorization}");
        let body = json!({
            "you_sent": authorization,
            "method": seen.method,
            "target": seen.target,
            "body": String::from_utf8_lossy(&seen.body),
        })
        .to_string();
        response(
            status,
            &[
                ("Content-Type", "application/json"),
                ("WWW-Authenticate", &challenge),
                ("Link", &link),
                ("Location", &location),
                ("X-Echo", &authorization),
            ],
            &body,
        )
    })
}

// ----- the forms a secret can take -----

/// `secret` as it could appear in an answer: as is; percent-encoded (upper- and lower-case
/// hex); base64 and base64url, padded or not, alone and at each alignment within longer
/// text (the part of the encoding that only the secret's bytes decide).
fn encodings(secret: &str) -> BTreeSet<String> {
    let mut forms = BTreeSet::from([secret.to_owned()]);
    let upper = percent_encode(secret);
    forms.insert(lower_hex(&upper));
    forms.insert(upper);
    for engine in [&STANDARD, &URL_SAFE_NO_PAD] {
        forms.insert(engine.encode(secret));
        for prefix in [&b""[..], b"x", b"xy"] {
            let encoded = engine.encode([prefix, secret.as_bytes()].concat());
            let encoded = encoded.trim_end_matches('=');
            let start = if prefix.is_empty() { 0 } else { 4 };
            let end = encoded.len().saturating_sub(4);
            if end > start + 16 {
                forms.insert(encoded[start..end].to_owned());
            }
        }
    }
    forms
}

/// `percent_encoded` with its `%XX` escapes in lower-case hex.
fn lower_hex(percent_encoded: &str) -> String {
    let mut out = String::new();
    let mut rest = percent_encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..(at + 3).min(rest.len())];
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[(at + 3).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// No form of any of `secrets` is in the head or body of `answer`.
fn assert_no_secret(what: &str, answer: &RawResponse, secrets: &[(&str, &str)]) {
    let text = format!(
        "{}\r\n\r\n{}",
        answer.head,
        String::from_utf8_lossy(&answer.body)
    );
    for (name, secret) in secrets {
        for form in encodings(secret) {
            assert!(
                !text.contains(&form),
                "the answer to {what} carries the {name} (as {form:?}):\n{text}"
            );
        }
    }
}

// ----- the tests -----

/// The forms [`assert_no_secret`] looks for find a token however an answer might encode it:
/// percent-encoded, or base64 or base64url at any offset within longer text.
#[test]
fn the_secret_forms_find_a_token_encoded_inside_longer_text() {
    let token = "AbC.d-e_f~g/h+i=j k%l:m;n@o?p#q&r";
    let forms = encodings(token);
    let found = |text: &str| forms.iter().any(|form| text.contains(form.as_str()));
    for prefix in ["", "a", "ab", "abc", "Authorization: Bearer "] {
        let text = format!("{prefix}{token} and more");
        assert!(found(&text), "raw");
        for engine in [&STANDARD, &URL_SAFE_NO_PAD] {
            assert!(found(&engine.encode(&text)), "base64 after {prefix:?}");
        }
        let percent = format!("{prefix}?t={}", percent_encode(token));
        assert!(found(&percent), "percent-encoded");
        assert!(found(&lower_hex(&percent)), "percent-encoded, lower case");
    }
    assert!(!found("nothing of it here, not even AbC.d-e_f"));
}

/// `text` with every byte outside the unreserved characters as `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// S30, S38, S40, S44: the loopback pattern end to end, through the real host binary. The
/// browser's redirect reaches the host binary, which sends it on to Docker Desktop and prints
/// the callback; the backend, given that callback, signs in with the verified identity,
/// calls the API with the token for the UI, keeps the tokens in a private file, and on
/// logout revokes them at the provider.
#[test]
fn s44_logs_in_through_the_host_binary_calls_the_api_and_logout_revokes_at_oidc_provider() {
    let idp = OidcProvider::start();
    let backend = ready_backend(&idp, oidc::BASIC, json!({}));
    let status = backend.status();
    assert_eq!(
        status["redirect"],
        json!({"kind": "loopback", "uri": "http://127.0.0.1/callback", "landing": LANDING}),
        "{status}"
    );
    assert_eq!(status["provider"]["issuer"], idp.issuer(), "{status}");
    assert_eq!(status["logged_in"], false, "{status}");
    assert_eq!(status["login"], Value::Null, "{status}");
    assert_eq!(status["sample_api"], format!("{}/me", idp.issuer()));
    assert_eq!(status["api_origins"], json!([idp.issuer()]));

    // No login without the URI the host binary listens on, nor with one that does not fit.
    let (code, refused) = backend.call("POST", "/login", Some(json!({})));
    assert_eq!((code, &refused["error"]), (400, &json!("bad_redirect_uri")));
    let (code, refused) = backend.call(
        "POST",
        "/login",
        Some(json!({"redirect_uri": "http://localhost:4000/callback"})),
    );
    assert_eq!((code, &refused["error"]), (400, &json!("bad_redirect_uri")));

    let (host, redirect_uri) = host_binary(&backend);
    assert!(
        redirect_uri.starts_with("http://127.0.0.1:") && redirect_uri.ends_with("/callback"),
        "{redirect_uri}"
    );
    let url = start_login(&backend, &redirect_uri);
    assert!(url.starts_with(&format!("{}/auth?", idp.issuer())), "{url}");
    let waiting = backend.status();
    assert_eq!(waiting["login_in_progress"], true, "{waiting}");
    assert_eq!(waiting["login"]["redirect_uri"], redirect_uri, "{waiting}");
    assert!(
        waiting["login"]["expires_in"]
            .as_u64()
            .is_some_and(|s| s > 0 && s <= 600)
    );

    let (_, query) = sign_in_to_host(&url, &host, &redirect_uri);
    let code_sent = latchkey_tests::harness::query_value(&query, "code").expect("a code");
    let (code, accepted) = backend.call("POST", "/callback", Some(json!({ "url": query })));
    assert_eq!(code, 202, "{accepted}");
    let status = backend.status_until(|status| status["logged_in"] == true);
    assert_eq!(status["login_in_progress"], false, "{status}");
    assert_eq!(status["login"], Value::Null, "{status}");
    assert_eq!(status["last_error"], Value::Null, "{status}");
    assert_eq!(status["refresh_token"], true, "{status}");
    // Who signed in, from the verified ID token: the UI says "Signed in as alice".
    assert_eq!(status["identity"]["sub"], oidc_agent::LOGIN, "{status}");
    assert_eq!(status["identity"]["iss"], idp.issuer(), "{status}");

    // The UI's "Call the API": the backend calls userinfo with the token.
    let (code, answer) = api(&backend, json!({"url": status["sample_api"]}));
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], 200, "{answer}");
    let me: Value = serde_json::from_str(answer["body"].as_str().expect("a body")).expect("JSON");
    assert_eq!(me["sub"], oidc_agent::LOGIN, "{answer}");

    let tokens = stored(&backend);
    assert_private(backend.token_file());
    assert_eq!(userinfo(&idp, &tokens.access).0, 200);

    let (code, report) = backend.call("POST", "/logout", None);
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["had_tokens"], true, "{report}");
    assert_eq!(
        report["revoked"],
        json!(["refresh_token", "access_token"]),
        "{report}"
    );
    assert_eq!(report["failed"], json!([]), "{report}");
    assert_eq!(report["not_revoked"], Value::Null, "{report}");
    assert_eq!(
        userinfo(&idp, &tokens.access).0,
        401,
        "revoked at the provider"
    );
    assert!(!backend.token_file().exists());
    assert_eq!(backend.status()["logged_in"], false);
    let (code, refused) = api(&backend, json!({"url": status["sample_api"]}));
    assert_eq!((code, &refused["error"]), (401, &json!("login_required")));

    let (exit, log) = backend.terminate();
    assert_eq!(exit, Some(0), "{}", log.join("\n"));
    assert_clean_json_log(
        &log,
        &[
            ("access token", &tokens.access),
            ("refresh token", &tokens.refresh),
            ("ID token", &tokens.id),
            ("authorization code", &code_sent),
            ("client secret", oidc::BASIC.secret.expect("a secret")),
        ],
    );
}

/// S41, S64: no answer on the socket carries a token. Every endpoint is called, with every
/// method, unknown paths, the old `/token`, malformed requests and error cases, and `/api`
/// to an allowed API that echoes the `Authorization` header in its body and in the headers
/// the backend passes on; no head or body holds the access, refresh or ID token, raw or
/// percent-, base64- or base64url-encoded.
#[test]
fn s64_no_answer_on_the_socket_carries_a_token_in_any_encoding() {
    let idp = OidcProvider::start();
    let echo = echo_server();
    let backend = ready_backend(
        &idp,
        oidc::BASIC,
        json!({"api_origins": [idp.issuer(), echo.origin()]}),
    );
    let (host, redirect_uri) = host_binary(&backend);
    log_in(&backend, &host, &redirect_uri);
    let tokens = stored(&backend);
    let secrets = [
        ("access token", tokens.access.as_str()),
        ("refresh token", tokens.refresh.as_str()),
        ("ID token", tokens.id.as_str()),
    ];
    let sample = format!("{}/me", idp.issuer());

    let mut answers: Vec<(String, RawResponse)> = Vec::new();
    let mut call = |method: &str, path: &str, body: Option<Value>| {
        let answer = backend.request(method, path, body.as_ref());
        let label = format!("{method} {path} {}", body.unwrap_or_default());
        answers.push((label, answer.clone()));
        answer
    };
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"] {
        for path in [
            "/status",
            "/status?verbose=1",
            "/token",
            "/token?format=json",
            "/tokens",
            "/",
            "/admin",
            "/login",
            "/callback",
            "/cancel",
            "/retry",
            "/logout/../token",
            "/api/",
        ] {
            call(method, path, None);
        }
    }
    assert_eq!(call("GET", "/token", None).status, 404);
    assert_eq!(call("GET", "/status", None).status, 200);

    // Logins started, refused, cancelled; callbacks refused.
    assert_eq!(call("POST", "/login", Some(json!({}))).status, 400);
    let other = json!({"redirect_uri": "http://evil.example/callback"});
    assert_eq!(call("POST", "/login", Some(other)).status, 400);
    let login = json!({ "redirect_uri": redirect_uri });
    assert_eq!(call("POST", "/login", Some(login)).status, 200);
    let forged = json!({"url": "?code=forged&state=forged"});
    assert_eq!(call("POST", "/callback", Some(forged.clone())).status, 400);
    assert_eq!(call("POST", "/callback", Some(json!({}))).status, 400);
    assert_eq!(call("POST", "/cancel", None).status, 200);
    assert_eq!(call("POST", "/cancel", None).status, 200);
    assert_eq!(call("POST", "/callback", Some(forged)).status, 409);
    assert_eq!(call("POST", "/retry", None).status, 202);

    // The API proxy, allowed and refused.
    let allowed = [
        json!({"url": sample}),
        json!({"url": echo.url("/v1/me")}),
        json!({"url": echo.url("/v1/items?x=1"), "method": "POST", "body": "{\"a\":1}",
               "headers": {"Content-Type": "application/json", "X-Test": "1"}}),
        json!({"url": echo.url("/v1/items/1"), "method": "put", "body": "x"}),
        json!({"url": echo.url("/v1/items/1"), "method": "DELETE"}),
        json!({"url": echo.url("/denied")}),
        json!({"url": echo.url("/denied"), "method": "PATCH", "body": "y"}),
    ];
    for body in allowed {
        let answer = call("POST", "/api", Some(body.clone()));
        assert_eq!(answer.status, 200, "{body}: {}", answer.json());
        let answer = answer.json();
        let echoed = answer["body"].as_str().expect("the API's body");
        if body["url"] != sample {
            assert!(echoed.contains(BLANKED), "{answer}");
            assert!(
                answer["headers"]["www-authenticate"]
                    .as_str()
                    .is_some_and(|h| h.contains(BLANKED)),
                "{answer}"
            );
        }
    }
    for refused in [
        json!({"url": echo.url("/x"), "headers": {"Authorization": "Bearer mine"}}),
        json!({"url": echo.url("/x"), "headers": {"cookie": "a=b"}}),
        json!({"url": "http://127.0.0.1:9/x"}),
        json!({"url": echo.url("/x#fragment")}),
        json!({"url": echo.url("/x"), "token": "please"}),
        json!({"url": echo.url("/x"), "method": "TRACE"}),
        json!({"method": "GET"}),
        json!("not an object"),
    ] {
        let answer = call("POST", "/api", Some(refused.clone()));
        assert!((400..500).contains(&answer.status), "{refused}");
    }
    // Malformed requests.
    let raw: [&[u8]; 4] = [
        b"GARBAGE\r\n\r\n",
        b"POST /api HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /api HTTP/1.1\r\nContent-Length: 999999\r\n\r\n",
        b"POST /api HTTP/1.1\r\nContent-Length: 3\r\n\r\n{{{",
    ];
    for request in raw {
        let answer = backend.send_raw(request);
        assert!((400..500).contains(&answer.status), "{}", answer.head);
        answers.push((String::from_utf8_lossy(request).into_owned(), answer));
    }
    // The echo server did see the token: the checks below are not empty.
    let authorizations: Vec<String> = echo
        .seen()
        .iter()
        .filter_map(|seen| seen.header("authorization").map(str::to_owned))
        .collect();
    assert!(
        authorizations.contains(&format!("Bearer {}", tokens.access)),
        "{authorizations:?}"
    );

    let mut call = |method: &str, path: &str, body: Option<Value>| {
        let answer = backend.request(method, path, body.as_ref());
        answers.push((format!("{method} {path} (logged out)"), answer.clone()));
        answer
    };
    assert_eq!(call("POST", "/logout", None).status, 200);
    assert_eq!(call("GET", "/status", None).status, 200);
    assert_eq!(
        call("POST", "/api", Some(json!({"url": sample}))).status,
        401
    );

    for (what, answer) in &answers {
        assert_no_secret(what, answer, &secrets);
    }
    assert!(answers.len() > 100, "{} answers", answers.len());
    let (exit, log) = backend.terminate();
    assert_eq!(exit, Some(0));
    assert_clean_json_log(&log, &secrets);
}

/// S43, S64: the API proxy's refusals end to end. Before a login, `login_required`; an
/// origin not allowed (even the allowed API's port under another host name) is refused and
/// never contacted; the UI cannot set `Authorization` or `Cookie`; an API's 401
/// `invalid_token` to a GET gets exactly one refresh at the provider and one more request
/// with the new token, while a POST is not repeated; the token is only ever in the
/// `Authorization` header.
#[test]
fn s64_the_api_proxy_refuses_what_is_not_allowed_and_refreshes_once_on_invalid_token() {
    let idp = OidcProvider::start();
    let flaky = ApiServer::start(|seen, before| {
        let rejected = seen.target.starts_with("/always") || before == 0;
        if rejected {
            response(
                401,
                &[("WWW-Authenticate", "Bearer error=\"invalid_token\"")],
                "expired",
            )
        } else {
            response(200, &[("Content-Type", "text/plain")], "welcome")
        }
    });
    let elsewhere = echo_server();
    let backend = ready_backend(
        &idp,
        oidc::BASIC,
        json!({"api_origins": [idp.issuer(), flaky.origin()]}),
    );
    let (code, refused) = api(&backend, json!({"url": flaky.url("/flaky")}));
    assert_eq!((code, &refused["error"]), (401, &json!("login_required")));
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("Log in"))
    );
    assert!(flaky.seen().is_empty(), "not called without a login");

    let (host, redirect_uri) = host_binary(&backend);
    log_in(&backend, &host, &redirect_uri);
    let before = stored(&backend);

    for url in [
        elsewhere.url("/v1/me"),
        format!("http://localhost:{}/flaky", flaky.port),
        format!("http://127.0.0.2:{}/flaky", flaky.port),
        "https://evil.example/".to_owned(),
    ] {
        let (code, refused) = api(&backend, json!({ "url": url }));
        assert_eq!(
            (code, &refused["error"]),
            (403, &json!("origin_not_allowed")),
            "{url}"
        );
    }
    for header in [
        "Authorization",
        "authorization",
        "Cookie",
        "Proxy-Authorization",
    ] {
        let (code, refused) = api(
            &backend,
            json!({"url": flaky.url("/flaky"), "headers": { header: "Bearer the-ui's" }}),
        );
        assert_eq!(
            (code, &refused["error"]),
            (400, &json!("bad_request")),
            "{header}"
        );
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains(header))
        );
    }
    assert!(elsewhere.seen().is_empty(), "another origin was called");
    assert!(flaky.seen().is_empty(), "a refused call was sent");
    assert_eq!(idp.refresh_counts().requests, 0);

    // A GET refused with invalid_token: one refresh, one more try.
    let (code, answer) = api(&backend, json!({"url": flaky.url("/flaky")}));
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], "welcome", "{answer}");
    let after = stored(&backend);
    assert_ne!(after.access, before.access, "refreshed");
    let refreshes = idp.refresh_counts();
    assert_eq!((refreshes.requests, refreshes.ok), (1, 1), "{refreshes:?}");
    let seen = flaky.seen();
    let sent: Vec<Option<&str>> = seen.iter().map(|s| s.header("authorization")).collect();
    assert_eq!(
        sent,
        [
            Some(format!("Bearer {}", before.access).as_str()),
            Some(format!("Bearer {}", after.access).as_str()),
        ]
    );

    // A POST is not repeated: the API's 401 comes back as it is.
    let (code, answer) = api(
        &backend,
        json!({"url": flaky.url("/always"), "method": "POST", "body": "{}"}),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], 401, "{answer}");
    assert_eq!(flaky.seen().len(), 3);
    assert_eq!(idp.refresh_counts().requests, 1, "no refresh for a POST");
    // A GET refused again after the refresh is not refreshed twice.
    let (_, answer) = api(&backend, json!({"url": flaky.url("/always")}));
    assert_eq!(answer["status"], 401, "{answer}");
    assert_eq!(flaky.seen().len(), 5);
    assert_eq!(idp.refresh_counts().requests, 2, "one refresh per call");

    for seen in flaky.seen() {
        for token in [&before.access, &after.access] {
            assert!(
                !seen.target.contains(token.as_str()),
                "a token in a URL: {seen:?}"
            );
        }
    }
}

/// Started while the provider cannot be reached, the backend answers on its socket at once,
/// says in words why it cannot log in yet and when it will try again, and once the provider
/// is up, `POST /retry` makes it ready and a login works, with no exit or restart.
#[test]
fn an_offline_start_serves_the_status_at_once_and_recovers_on_retry() {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut backend = Backend::start(
        json!({
            "issuer": issuer,
            "client_id": oidc::BASIC.id,
            "scopes": ["openid"],
            "sample_api": format!("{issuer}/me"),
        }),
        oidc::BASIC.secret,
    );
    let first = backend.status();
    assert!(
        ["connecting", "unreachable"].contains(&first["provider"]["state"].as_str().unwrap_or("")),
        "{first}"
    );
    let status = backend.status_until(|status| status["provider"]["state"] == "unreachable");
    let provider = &status["provider"];
    assert_eq!(provider["error"], "provider_unreachable", "{status}");
    assert!(
        provider["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{status}"
    );
    assert!(
        provider["attempts"].as_u64().is_some_and(|n| n >= 1),
        "{status}"
    );
    assert!(
        provider["retry_in"].as_u64().is_some_and(|s| s <= 60),
        "{status}"
    );
    assert_eq!(provider["issuer"], issuer.as_str(), "{status}");

    let (code, refused) = backend.call(
        "POST",
        "/login",
        Some(json!({"redirect_uri": "http://127.0.0.1:4000/callback"})),
    );
    assert_eq!(
        (code, &refused["error"]),
        (503, &json!("provider_unreachable"))
    );
    let words = refused["message"].as_str().expect("words");
    assert!(words.contains("cannot be reached"), "{words}");
    let (code, refused) = api(&backend, json!({"url": format!("{issuer}/me")}));
    assert_eq!(
        (code, &refused["error"]),
        (503, &json!("provider_unreachable"))
    );
    let (code, report) = backend.call("POST", "/logout", None);
    assert_eq!(
        (code, &report["had_tokens"]),
        (200, &json!(false)),
        "{report}"
    );

    let idp = OidcProvider::start_on(port);
    assert_eq!(idp.issuer(), issuer);
    let (code, retrying) = backend.call("POST", "/retry", None);
    assert_eq!(
        (code, &retrying["retrying"]),
        (202, &json!(true)),
        "{retrying}"
    );
    backend.until_ready();
    let (code, retrying) = backend.call("POST", "/retry", None);
    assert_eq!(
        (code, &retrying["retrying"]),
        (202, &json!(false)),
        "ready already"
    );

    let (host, redirect_uri) = host_binary(&backend);
    log_in(&backend, &host, &redirect_uri);
    let status = backend.status();
    assert_eq!(status["identity"]["sub"], oidc_agent::LOGIN, "{status}");
    assert!(backend.running(), "the backend exited");
    let starts = backend
        .log()
        .iter()
        .filter(|l| l.contains("extension backend ready"))
        .count();
    assert_eq!(starts, 1, "started once");
}

/// Started offline, the backend reaches the provider by itself, at the next step of its
/// back-off, once the provider is up.
#[test]
fn an_offline_start_recovers_by_itself_within_the_back_off() {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut backend = Backend::start(
        json!({"issuer": issuer, "client_id": oidc::PUBLIC.id}),
        None,
    );
    backend.status_until(|status| status["provider"]["state"] == "unreachable");
    let _idp = OidcProvider::start_on(port);
    let status = backend.status();
    // The next attempt is at most the back-off's longest step away.
    let retry_in = status["provider"]["retry_in"].as_u64().unwrap_or(0);
    let ready = backend.status_within(Duration::from_secs(retry_in + 30), |status| {
        status["provider"]["state"] == "ready"
    });
    assert_eq!(ready["provider"]["issuer"], issuer.as_str(), "{ready}");
    let (code, login) = backend.call(
        "POST",
        "/login",
        Some(json!({"redirect_uri": "http://127.0.0.1:4000/callback"})),
    );
    assert_eq!(code, 200, "{login}");
    assert!(backend.running(), "the backend exited");
    let starts = backend.log().iter().filter(|l| l.contains(READY)).count();
    assert_eq!(starts, 1, "started once");
}

/// S11, S12, S18, S20: a login cancelled with `POST /cancel` leaves no login and no error,
/// and its callback, arriving later, is refused with `no_login`; a second `POST /login`
/// replaces the first, whose callback is then refused, and only the newest completes, with
/// one code exchanged in all.
#[test]
fn s20_a_cancelled_or_replaced_login_refuses_its_callback_and_the_newest_completes() {
    let idp = OidcProvider::start();
    let backend = ready_backend(&idp, oidc::PUBLIC, json!({}));
    let (host, redirect_uri) = host_binary(&backend);
    let (code, body) = backend.call("POST", "/cancel", None);
    assert_eq!((code, &body["cancelled"]), (200, &json!(false)));

    let cancelled = start_login(&backend, &redirect_uri);
    assert_eq!(backend.status()["login_in_progress"], true);
    let (code, body) = backend.call("POST", "/cancel", None);
    assert_eq!((code, &body["cancelled"]), (200, &json!(true)));
    let status = backend.status();
    assert_eq!(status["login"], Value::Null, "{status}");
    assert_eq!(status["login_in_progress"], false, "{status}");
    assert_eq!(status["last_error"], Value::Null, "{status}");
    let (_, late) = sign_in_to_host(&cancelled, &host, &redirect_uri);
    let (code, refused) = backend.call("POST", "/callback", Some(json!({ "url": late })));
    assert_eq!(
        (code, &refused["error"]),
        (409, &json!("no_login")),
        "{refused}"
    );
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("Log in"))
    );
    let status = backend.status();
    assert_eq!(status["last_error"], Value::Null, "{status}");
    assert_eq!(status["logged_in"], false, "{status}");

    let replaced = start_login(&backend, &redirect_uri);
    let newest = start_login(&backend, &redirect_uri);
    assert_ne!(replaced, newest);
    let (_, stale) = sign_in_to_host(&replaced, &host, &redirect_uri);
    let (code, refused) = backend.call("POST", "/callback", Some(json!({ "url": stale })));
    assert_eq!(
        (code, &refused["error"]),
        (400, &json!("callback_refused")),
        "{refused}"
    );
    let status = backend.status();
    assert_eq!(
        status["login_in_progress"], true,
        "the newest still waits: {status}"
    );
    assert_eq!(status["logged_in"], false, "{status}");

    let (_, query) = sign_in_to_host(&newest, &host, &redirect_uri);
    let (code, accepted) = backend.call("POST", "/callback", Some(json!({ "url": query })));
    assert_eq!(code, 202, "{accepted}");
    let status = backend.status_until(|status| status["logged_in"] == true);
    assert_eq!(status["last_error"], Value::Null, "{status}");
    let exchanged = idp.grant_counts("authorization_code");
    assert_eq!(exchanged.requests, 1, "{exchanged:?}");
}

/// The development identity provider with a public client whose redirect URI is the
/// extension's tab.
fn dev_idp() -> DevIdp {
    let client = latchkey_devidp::Client {
        id: "docker-extension".into(),
        secret: None,
        auth: latchkey_devidp::ClientAuth::None,
        redirect_uris: vec![TAB.into()],
    };
    DevIdp::start(
        latchkey_devidp::Config::new(vec![client]),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )
    .expect("start the development identity provider")
}

/// The backend for [`dev_idp`]'s client, with the extension tab as its redirect URI.
fn deep_link_backend(idp: &DevIdp) -> Backend {
    let backend = Backend::start(
        json!({
            "authorization_endpoint": idp.authorization_endpoint(),
            "token_endpoint": idp.token_endpoint(),
            "revocation_endpoint": idp.revocation_endpoint(),
            "issuer": idp.issuer(),
            "client_id": "docker-extension",
            "redirect_uri": TAB,
        }),
        None,
    );
    backend.until_ready();
    backend
}

/// Starts a login (with no body: the app redirect needs no host binary) and signs in with
/// the scripted browser, which stops at the deep link only Docker Desktop could open: that
/// link.
fn deep_link_after_signing_in(backend: &Backend) -> String {
    let (code, login) = backend.call("POST", "/login", None);
    assert_eq!(code, 200, "{login}");
    assert_eq!(login["redirect_uri"], TAB, "{login}");
    let url = login["authorize_url"].as_str().expect("a URL");
    let hops = agent::browse(url).expect("the browser");
    let deep_link = hops
        .last()
        .and_then(|hop| hop.location.clone())
        .expect("the provider redirects to the tab");
    assert!(deep_link.starts_with(&format!("{TAB}&")), "{deep_link}");
    deep_link
}

/// S10, S18, S53: Docker Desktop's deep-link pattern against the development identity
/// provider: the provider sends the browser to the extension's tab, the UI forwards what it
/// finds there, the backend exchanges it. A forged state and a replay are refused, with one
/// token request in all.
#[test]
fn s53_the_extension_tab_deep_link_forwarded_by_the_ui_completes_the_login() {
    let idp = dev_idp();
    let backend = deep_link_backend(&idp);
    let status = backend.status();
    assert_eq!(
        status["redirect"],
        json!({"kind": "app", "uri": TAB}),
        "{status}"
    );
    let deep_link = deep_link_after_signing_in(&backend);
    assert!(
        deep_link.starts_with(&format!("{TAB}&code=")),
        "{deep_link}"
    );
    assert_eq!(backend.status()["login"]["redirect_uri"], TAB);

    let forged = deep_link.replace("state=", "state=x");
    let (code, refused) = backend.call("POST", "/callback", Some(json!({ "url": forged })));
    assert_eq!((code, &refused["error"]), (400, &json!("callback_refused")));
    let (code, body) = backend.call("POST", "/callback", Some(json!({"nothing": 1})));
    assert_eq!(
        (code, &body["error"]),
        (400, &json!("bad_request")),
        "{body}"
    );
    assert_eq!(idp.stats().token_requests, 0);

    // What the UI finds in its location when Docker Desktop opens the tab.
    let query = &deep_link[deep_link.find('?').expect("a query")..];
    let (code, accepted) = backend.call("POST", "/callback", Some(json!({ "url": query })));
    assert_eq!(code, 202, "{accepted}");
    let status = backend.status_until(|status| status["logged_in"] == true);
    assert_eq!(status["last_error"], Value::Null, "{status}");
    let access = backend.stored_tokens().expect("tokens")["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned();
    assert!(idp.access_token_active(&access));
    let (code, replayed) = backend.call("POST", "/callback", Some(json!({ "url": query })));
    assert!(
        [(400, "callback_refused"), (409, "no_login")]
            .contains(&(code, replayed["error"].as_str().unwrap_or(""))),
        "{code} {replayed}"
    );
    assert_eq!(idp.stats().token_requests, 1, "one exchange");

    let (code, report) = backend.call("POST", "/logout", None);
    assert_eq!(code, 200, "{report}");
    assert!(!idp.access_token_active(&access), "revoked");
}

/// A login the user declines is reported in words in `last_error`; requests the API does
/// not have are refused (404, or 405 for a known path), `/token` included; a logout with
/// nothing stored still answers.
#[test]
fn a_denied_login_is_reported_in_words_and_unknown_requests_are_refused() {
    let idp = dev_idp();
    let backend = deep_link_backend(&idp);
    idp.set_deny(true);
    let deep_link = deep_link_after_signing_in(&backend);
    let (code, body) = backend.call("POST", "/callback", Some(json!({ "url": deep_link })));
    assert_eq!(code, 202, "{body}");
    let status = backend.status_until(|status| status["login_in_progress"] == false);
    assert_eq!(status["logged_in"], false, "{status}");
    assert_eq!(status["last_error"]["error"], "access_denied", "{status}");
    let words = status["last_error"]["message"].as_str().expect("words");
    assert!(words.contains("declined"), "{words}");

    for (method, path, expected) in [
        ("GET", "/login", 405),
        ("GET", "/logout", 405),
        ("GET", "/api", 405),
        ("POST", "/status", 405),
        ("DELETE", "/callback", 405),
        ("GET", "/token", 404),
        ("POST", "/token", 404),
        ("DELETE", "/token", 404),
        ("GET", "/admin", 404),
        ("POST", "/", 404),
    ] {
        let (code, body) = backend.call(method, path, None);
        assert_eq!(code, expected, "{method} {path}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (code, report) = backend.call("POST", "/logout", None);
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["had_tokens"], false);
    // A new login clears the error.
    idp.set_deny(false);
    let (code, _) = backend.call("POST", "/login", None);
    assert_eq!(code, 200);
    assert_eq!(backend.status()["last_error"], Value::Null);
}

/// S6: settings that cannot work do not stop the backend: it serves its socket, the status
/// says `misconfigured` with words naming the problem, and requests that need the provider
/// are refused with those words. `--check` exits 1 with the message for the mistakes it can
/// see without the network.
#[test]
fn s6_bad_settings_keep_the_backend_serving_and_the_status_names_the_problem() {
    let idp = OidcProvider::start();
    let dir = tempfile::tempdir().expect("a directory");
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    let missing_secret = dir.path().join("missing_secret");
    let base = || json!({"issuer": idp.issuer(), "client_id": oidc::BASIC.id});
    let with = |name: &str, value: Value| {
        let mut settings = base();
        settings[name] = value;
        settings
    };
    // The settings and the words the status and `--check` say.
    let cases = [
        (
            with("scope", json!(["openid"])),
            "unknown setting \"scope\"",
        ),
        (
            with("client_secret", json!("LEAKED-SECRET")),
            "client_secret_file",
        ),
        (with("listen", json!("0.0.0.0:8080")), "host binary"),
        (
            with("client_secret_file", json!(missing_secret)),
            "missing_secret",
        ),
        (with("ca_file", json!(not_pem)), "ca_file"),
    ];
    for (settings, words) in cases {
        let mut backend = Backend::start(settings.clone(), None);
        let status = backend.status_until(|status| status["provider"]["state"] == "misconfigured");
        let message = status["provider"]["message"].as_str().expect("words");
        assert!(message.contains(words), "{settings}: {message}");
        assert!(!status.to_string().contains("LEAKED"), "{status}");
        assert_eq!(status["logged_in"], false, "{status}");

        let (code, refused) = backend.call(
            "POST",
            "/login",
            Some(json!({"redirect_uri": "http://127.0.0.1:4000/callback"})),
        );
        assert_eq!(
            (code, &refused["error"]),
            (503, &json!("misconfigured")),
            "{settings}"
        );
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains(words))
        );
        let (code, refused) = api(&backend, json!({"url": format!("{}/me", idp.issuer())}));
        assert_eq!((code, &refused["error"]), (503, &json!("misconfigured")));
        let (code, retrying) = backend.call("POST", "/retry", None);
        assert_eq!((code, &retrying["retrying"]), (202, &json!(false)));
        let (code, _) = backend.call("POST", "/callback", Some(json!({"url": "?code=a&state=b"})));
        assert_eq!(code, 409);
        assert!(backend.running(), "{settings}: exited");
        assert!(!backend.log().join("\n").contains("LEAKED"));

        // What `--check` passes starts: it reads the files the settings name too.
        let output = std::process::Command::new(&latchkey_tests::extension::binaries().backend)
            .arg("--check")
            .arg("--config")
            .arg(backend.config())
            .output()
            .expect("run --check");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{settings}: {stderr}");
        assert!(stderr.contains(words), "{stderr}");
        assert!(!stderr.contains("LEAKED"), "{stderr}");
        let (exit, log) = backend.terminate();
        assert_eq!(exit, Some(0), "{}", log.join("\n"));
        assert_clean_json_log(&log, &[("client secret", "LEAKED-SECRET")]);
    }
}

/// S21: a fixed redirect port that another program holds stops the host binary at once with
/// `port_in_use` naming the port; the backend, which listens on no port, carries on.
#[test]
fn s21_a_fixed_redirect_port_in_use_stops_the_host_binary_and_the_backend_carries_on() {
    let idp = OidcProvider::start();
    let busy = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = busy.local_addr().expect("address").port();
    let fixed = format!("http://127.0.0.1:{port}/callback");
    let mut backend = ready_backend(&idp, oidc::PUBLIC, json!({"redirect_uri": fixed}));
    let status = backend.status();
    assert_eq!(status["redirect"]["uri"], fixed.as_str(), "{status}");

    let mut host = Callback::start(&fixed, Some(LANDING));
    let line = host.next_line();
    assert_eq!(line["error"], "port_in_use", "{line}");
    let message = line["message"].as_str().expect("words");
    assert!(message.contains(&port.to_string()), "{message}");
    assert_eq!(host.exit_code(), Some(1));

    assert!(backend.running());
    assert_eq!(backend.status()["provider"]["state"], "ready");
    // Only the fixed port is accepted for a login.
    let (code, refused) = backend.call(
        "POST",
        "/login",
        Some(json!({"redirect_uri": format!("http://127.0.0.1:{}/callback", free_port())})),
    );
    assert_eq!((code, &refused["error"]), (400, &json!("bad_redirect_uri")));
    start_login(&backend, &fixed);
    drop(busy);
}

/// S21: with the default settings the redirect port is whatever is free, so port 8080 being
/// held by another program (here the test, unless something else holds it already) changes
/// nothing: the whole login works.
#[test]
fn s21_port_8080_held_by_another_program_changes_nothing_for_the_default_settings() {
    let _held = TcpListener::bind((Ipv4Addr::LOCALHOST, 8080));
    let idp = OidcProvider::start();
    let backend = ready_backend(&idp, oidc::PUBLIC, json!({}));
    let (host, redirect_uri) = host_binary(&backend);
    assert!(!redirect_uri.contains(":8080/"), "{redirect_uri}");
    log_in(&backend, &host, &redirect_uri);
    assert_eq!(backend.status()["identity"]["sub"], oidc_agent::LOGIN);
}

/// S41: SIGTERM (`docker stop`) while a login waits for its callback: the backend exits 0
/// promptly, removes its socket file, stores nothing, and its log is JSON lines without the
/// login's state or the client secret.
#[test]
fn s41_sigterm_during_a_login_exits_cleanly_and_removes_the_socket() {
    let idp = OidcProvider::start();
    let backend = ready_backend(&idp, oidc::BASIC, json!({}));
    let url = start_login(&backend, "http://127.0.0.1:4000/callback");
    let state = latchkey_tests::harness::query_value(&url, "state").expect("a state");
    let socket = backend.socket().to_owned();
    let token_file = backend.token_file().to_owned();
    let (exit, log) = backend.terminate();
    assert_eq!(exit, Some(0), "{}", log.join("\n"));
    assert!(!socket.exists(), "the socket file is removed");
    assert!(!token_file.exists());
    for message in ["\"stopping\"", "\"stopped\""] {
        assert!(
            log.iter().any(|line| line.contains(message)),
            "{}",
            log.join("\n")
        );
    }
    assert_clean_json_log(
        &log,
        &[
            ("state", &state),
            ("client secret", oidc::BASIC.secret.expect("a secret")),
        ],
    );
}

/// A CA of the test's own, and a server configuration for `localhost` signed by it: the CA
/// certificate (PEM) and the configuration.
fn company_ca() -> (String, Arc<ServerConfig>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let certificate = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![certificate.der().clone()], key)
            .expect("server config");
    (ca.pem(), Arc::new(config))
}

/// An https issuer at `https://localhost:PORT` whose certificate `config` holds: it serves
/// its metadata at both well-known locations, and 404 for everything else.
fn https_issuer(config: Arc<ServerConfig>) -> ApiServer {
    ApiServer::serve(
        Some(config),
        Arc::new(|seen: &Seen, _| {
            let issuer = format!("https://{}", seen.header("host").unwrap_or_default());
            if seen.target.starts_with("/.well-known/") {
                let metadata = json!({
                    "issuer": issuer,
                    "authorization_endpoint": format!("{issuer}/auth"),
                    "token_endpoint": format!("{issuer}/token"),
                    "response_types_supported": ["code"],
                    "code_challenge_methods_supported": ["S256"],
                });
                response(
                    200,
                    &[("Content-Type", "application/json")],
                    &metadata.to_string(),
                )
            } else {
                response(404, &[], "")
            }
        }),
    )
}

/// S34: with `ca_file` naming a company CA (PEM), the backend trusts it besides the public
/// roots and discovers an https issuer whose certificate that CA signed; without it, the same
/// issuer is unreachable with a message saying why.
#[test]
fn s34_a_company_ca_file_lets_the_backend_reach_an_https_issuer_it_signed() {
    let (ca, config) = company_ca();
    let server = https_issuer(config);
    let issuer = server.origin();
    let dir = tempfile::tempdir().expect("a directory");
    let ca_file = dir.path().join("company-ca.pem");
    std::fs::write(&ca_file, &ca).expect("write the CA");
    let settings = json!({"issuer": issuer, "client_id": "extension"});

    let mut trusting = settings.clone();
    trusting["ca_file"] = json!(ca_file);
    let backend = Backend::start(trusting, None);
    let status = backend.until_ready();
    assert_eq!(status["provider"]["issuer"], issuer.as_str(), "{status}");
    let url = start_login(&backend, "http://127.0.0.1:4000/callback");
    assert!(url.starts_with(&format!("{issuer}/auth?")), "{url}");

    let untrusting = Backend::start(settings, None);
    let status = untrusting.status_until(|status| status["provider"]["state"] == "unreachable");
    let message = status["provider"]["message"].as_str().expect("words");
    assert!(
        message.to_ascii_lowercase().contains("certificate"),
        "{message}"
    );
    assert!(
        server
            .seen()
            .iter()
            .all(|seen| seen.target.starts_with("/.well-known/")),
        "only metadata was asked for"
    );
}
