//! The extension's backend as a process, as Docker Desktop runs it, minus the container: its
//! settings file, client secret file, API socket and token file in a temporary directory,
//! its callback listener on a free loopback port. The UI's calls go to the socket as Docker
//! Desktop would forward them; a scripted browser signs in at the identity provider.
//!
//! Against oidc-provider (the reference, OpenID Certified): discovery, login through the
//! loopback listener, the token handed out and accepted by the provider's userinfo
//! endpoint, a second login superseding the first, logout revoking at the provider, clean
//! shutdown on SIGTERM, and logs without secrets. Against the development identity provider:
//! Docker Desktop's newer pattern, an application redirect URI whose deep link the UI
//! forwards to `POST /callback`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use latchkey_devidp::{DevIdp, agent};
use latchkey_tests::oidc::{self, OidcProvider};
use latchkey_tests::oidc_agent::{self, Choice};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The longest the backend may take to start, answer, or stop.
const PATIENCE: Duration = Duration::from_secs(10);
/// Docker Desktop's deep link to the extension's tab.
const TAB: &str = "docker-desktop://dashboard/extension-tab?extensionId=latchkey/oauth-example";

/// A running backend; killed when dropped.
struct Backend {
    child: Child,
    socket: PathBuf,
    token_file: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl Backend {
    /// Starts the backend with `settings` (the socket, token file and secret file are
    /// filled in, in a fresh directory) and waits until it is ready.
    fn start(mut settings: Value, secret: Option<&str>) -> Backend {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("api.sock");
        let token_file = dir.path().join("data").join("tokens.json");
        settings["socket"] = json!(socket);
        settings["token_file"] = json!(token_file);
        if let Some(secret) = secret {
            let path = dir.path().join("client_secret");
            std::fs::write(&path, format!("{secret}\n")).expect("the secret file");
            settings["client_secret_file"] = json!(path);
        }
        let config = dir.path().join("config.json");
        std::fs::write(&config, settings.to_string()).expect("the settings file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_latchkey-extension"))
            .arg("--config")
            .arg(&config)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the backend");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                lines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        let backend = Backend {
            child,
            socket,
            token_file,
            log,
            _dir: dir,
        };
        backend.wait_for_log("extension backend ready");
        backend
    }

    /// The port of the callback listener, from the "ready" log line.
    fn callback_port(&self) -> u16 {
        let ready = self
            .log()
            .into_iter()
            .find(|line| line.contains("extension backend ready"))
            .expect("the ready line");
        let ready: Value = serde_json::from_str(&ready).expect("JSON");
        let listening = ready["fields"]["listening"].as_str().expect("addresses");
        listening
            .trim_matches(['[', ']'])
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or_else(|| panic!("one address: {listening}"))
    }

    fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn wait_for_log(&self, message: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().iter().any(|line| line.contains(message)) {
            assert!(
                Instant::now() < deadline,
                "no {message:?} in the log:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One API call over the socket, as Docker Desktop forwards the UI's: status and JSON.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut stream = UnixStream::connect(&self.socket).expect("connect to the API socket");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: backend\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send the request");
        read_response(&mut stream)
    }

    /// Polls `GET /status` until `done` says so.
    fn status_until(&self, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, body) = self.call("GET", "/status", None);
            assert_eq!(status, 200, "{body}");
            if done(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "status stayed {body}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(mut self) -> (Option<i32>, Vec<String>) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the backend") {
                // Let the log reader drain what was written last.
                std::thread::sleep(Duration::from_millis(100));
                return (status.code(), self.log());
            }
            assert!(Instant::now() < deadline, "the backend ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` from `stream`.
fn read_response(stream: &mut UnixStream) -> (u16, Value) {
    let mut received = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let read = stream.read(&mut chunk).expect("read the response");
        assert!(read > 0, "connection closed mid-response");
        received.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&received).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .and_then(|value| value.parse().ok())
            .expect("a Content-Length");
        if body.len() < length {
            continue;
        }
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|status| status.parse().ok())
            .expect("a status");
        return (status, serde_json::from_str(body).expect("a JSON body"));
    }
}

/// Settings for oidc-provider's `basic-client`, discovered from the issuer.
fn oidc_settings(idp: &OidcProvider) -> Value {
    json!({
        "issuer": idp.issuer(),
        "client_id": oidc::BASIC.id,
        "scopes": ["openid", "profile"],
        "redirect_uri": "http://127.0.0.1:0/callback",
        // As in the container: every interface (published on the host's loopback only).
        "listen": "0.0.0.0:0",
        "sample_api": format!("{}/me", idp.issuer()),
    })
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

/// Every line is a JSON object, and none holds any of `secrets`.
fn assert_clean_json_log(log: &[String], secrets: &[(&str, &str)]) {
    assert!(!log.is_empty());
    for line in log {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|_| panic!("a log line that is not JSON: {line}"));
        assert!(parsed.is_object(), "{line}");
        for (what, secret) in secrets {
            assert!(!line.contains(secret), "the {what} was logged: {line}");
        }
    }
}

#[test]
fn logs_in_through_the_loopback_listener_hands_out_a_token_and_logs_out_against_oidc_provider() {
    let idp = OidcProvider::start();
    let backend = Backend::start(oidc_settings(&idp), oidc::BASIC.secret);
    let status = backend.status_until(|_| true);
    assert_eq!(status["logged_in"], false, "{status}");
    assert_eq!(status["sample_api"], format!("{}/me", idp.issuer()));
    let (code, body) = backend.call("GET", "/token", None);
    assert_eq!((code, &body["error"]), (401, &json!("login_required")));

    // The callback listener answers nothing but the callback (S21–S31).
    let port = backend.callback_port();
    let (status, _, _) = agent::get(&format!("http://127.0.0.1:{port}/"), &[]).expect("GET /");
    assert_eq!(status, 404);
    let forged = format!("http://127.0.0.1:{port}/callback?code=c&state=s");
    let (status, _, _) = agent::get(&forged, &[]).expect("a forged callback");
    assert!((400..500).contains(&status), "{status}");

    // A second login replaces the first: only the newest URL can complete.
    let (code, first) = backend.call("POST", "/login", None);
    assert_eq!(code, 200, "{first}");
    let (code, second) = backend.call("POST", "/login", None);
    assert_eq!(code, 200, "{second}");
    let url = second["authorize_url"]
        .as_str()
        .expect("an authorization URL");
    assert!(url.starts_with(&format!("{}/auth?", idp.issuer())), "{url}");
    assert_ne!(first["authorize_url"], second["authorize_url"]);
    let replaced = first["authorize_url"].as_str().expect("a URL");
    let hops = oidc_agent::sign_in(replaced, Choice::Approve).expect("the user signs in");
    let last = hops.last().expect("hops");
    assert_ne!(
        last.status, 303,
        "the replaced login cannot complete: {hops:?}"
    );
    let status = backend.status_until(|_| true);
    assert_eq!(status["logged_in"], false, "{status}");
    assert_eq!(status["login_in_progress"], true, "{status}");

    let hops = oidc_agent::sign_in(url, Choice::Approve).expect("the user signs in");
    let last = hops.last().expect("hops");
    assert_eq!(last.status, 303, "{hops:?}");
    assert_eq!(
        last.location.as_deref(),
        Some("docker-desktop://dashboard/open"),
        "{hops:?}"
    );
    let status = backend.status_until(|status| status["logged_in"] == true);
    assert_eq!(status["login_in_progress"], false);
    assert_eq!(status["refresh_token"], true);
    assert_eq!(status["last_error"], Value::Null);
    // Who signed in, from the verified ID token: the UI says "Signed in as alice".
    assert_eq!(
        status["identity"],
        json!({"iss": idp.issuer(), "sub": oidc_agent::LOGIN}),
        "{status}"
    );

    let (code, token) = backend.call("GET", "/token", None);
    assert_eq!(code, 200, "{token}");
    let access_token = token["access_token"].as_str().expect("an access token");
    let (_, status) = backend.call("GET", "/status", None);
    assert!(
        !status.to_string().contains(access_token),
        "the status carries no token: {status}"
    );
    let (code, me) = userinfo(&idp, access_token);
    assert_eq!(code, 200, "{me}");
    assert_eq!(me["sub"], oidc_agent::LOGIN);
    let stored = std::fs::read_to_string(&backend.token_file).expect("the token file");
    let stored: Value = serde_json::from_str(&stored).expect("JSON");
    let refresh_token = stored["tokens"]["default"]["refresh_token"]
        .as_str()
        .expect("a stored refresh token")
        .to_owned();
    let code_sent = oidc_agent::callback(&hops, "http://127.0.0.1")
        .or_else(|| hops.iter().find(|hop| hop.url.contains("code=")))
        .and_then(|hop| latchkey_tests::harness::query_value(&hop.url, "code"))
        .expect("the callback's code");
    assert_private(&backend.token_file);

    let (code, report) = backend.call("POST", "/logout", None);
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["had_tokens"], true);
    assert_eq!(report["revoked"], json!(["refresh_token", "access_token"]));
    assert_eq!(report["failed"], json!([]));
    assert_eq!(
        userinfo(&idp, access_token).0,
        401,
        "revoked at the provider"
    );
    assert!(!backend.token_file.exists());
    assert_eq!(backend.status_until(|_| true)["logged_in"], false);
    let (code, body) = backend.call("GET", "/token", None);
    assert_eq!((code, &body["error"]), (401, &json!("login_required")));

    let socket = backend.socket.clone();
    let (exit, log) = backend.terminate();
    assert_eq!(exit, Some(0), "{}", log.join("\n"));
    assert!(!socket.exists(), "the socket file is removed");
    assert!(
        log.iter().any(|line| line.contains("\"stopped\"")),
        "{}",
        log.join("\n")
    );
    assert_clean_json_log(
        &log,
        &[
            ("access token", access_token),
            ("refresh token", &refresh_token),
            ("authorization code", &code_sent),
            ("client secret", oidc::BASIC.secret.expect("a secret")),
        ],
    );
}

#[test]
fn sigterm_during_a_login_cancels_it_and_exits_cleanly() {
    let idp = OidcProvider::start();
    let backend = Backend::start(oidc_settings(&idp), oidc::BASIC.secret);
    let (code, _) = backend.call("POST", "/login", None);
    assert_eq!(code, 200);
    let (exit, log) = backend.terminate();
    assert_eq!(exit, Some(0), "{}", log.join("\n"));
    assert!(
        log.iter().any(|line| line.contains("login ended")),
        "{}",
        log.join("\n")
    );
}

/// The development identity provider with a public client whose redirect URI is the
/// extension's tab.
fn dev_idp() -> DevIdp {
    dev_idp_issuing(Duration::from_secs(3600))
}

/// [`dev_idp`], its access tokens living `lifetime`.
fn dev_idp_issuing(lifetime: Duration) -> DevIdp {
    let client = latchkey_devidp::Client {
        id: "docker-extension".into(),
        secret: None,
        auth: latchkey_devidp::ClientAuth::None,
        redirect_uris: vec![TAB.into()],
    };
    let mut config = latchkey_devidp::Config::new(vec![client]);
    config.token_lifetime = lifetime;
    DevIdp::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("start the development identity provider")
}

/// The backend for [`dev_idp`]'s client, with the extension tab as its redirect URI.
fn deep_link_backend(idp: &DevIdp) -> Backend {
    Backend::start(
        json!({
            "authorization_endpoint": idp.authorization_endpoint(),
            "token_endpoint": idp.token_endpoint(),
            "revocation_endpoint": idp.revocation_endpoint(),
            "issuer": idp.issuer(),
            "client_id": "docker-extension",
            "redirect_uri": TAB,
        }),
        None,
    )
}

/// Starts a login and signs in with the scripted browser, which stops at the deep link
/// only Docker Desktop could open: that link.
fn deep_link_after_signing_in(backend: &Backend) -> String {
    let (_, login) = backend.call("POST", "/login", None);
    let url = login["authorize_url"].as_str().expect("a URL");
    let hops = agent::browse(url).expect("the browser");
    let deep_link = hops
        .last()
        .and_then(|hop| hop.location.clone())
        .expect("the provider redirects to the tab");
    assert!(deep_link.starts_with(&format!("{TAB}&")), "{deep_link}");
    deep_link
}

#[test]
fn the_ui_forwards_the_extension_tab_deep_link_and_the_login_completes() {
    let idp = dev_idp();
    let backend = deep_link_backend(&idp);
    let ready = backend.log().join("\n");
    assert!(
        ready.contains("\"listening\":\"[]\""),
        "binds no port: {ready}"
    );
    let deep_link = deep_link_after_signing_in(&backend);
    assert!(
        deep_link.starts_with(&format!("{TAB}&code=")),
        "{deep_link}"
    );

    let forged = deep_link.replace("state=", "state=x");
    let (code, refused) = backend.call("POST", "/callback", Some(json!({ "url": forged })));
    assert_eq!((code, &refused["error"]), (400, &json!("callback_refused")));
    let (code, body) = backend.call("POST", "/callback", Some(json!({"nothing": 1})));
    assert_eq!(code, 400, "{body}");

    // What the UI finds in its location when Docker Desktop opens the tab.
    let query = &deep_link[deep_link.find('?').expect("a query")..];
    let (code, accepted) = backend.call("POST", "/callback", Some(json!({ "url": query })));
    assert_eq!(code, 202, "{accepted}");
    backend.status_until(|status| status["logged_in"] == true);
    let (_, token) = backend.call("GET", "/token", None);
    let access_token = token["access_token"].as_str().expect("an access token");
    assert!(idp.access_token_active(access_token));
    let (code, replayed) = backend.call("POST", "/callback", Some(json!({ "url": query })));
    assert_eq!(
        (code, &replayed["error"]),
        (400, &json!("callback_refused"))
    );
}

#[test]
fn a_denied_login_is_reported_in_the_status_and_unknown_requests_are_refused() {
    let idp = dev_idp();
    let backend = deep_link_backend(&idp);
    idp.set_deny(true);
    let deep_link = deep_link_after_signing_in(&backend);
    let (code, body) = backend.call("POST", "/callback", Some(json!({ "url": deep_link })));
    assert_eq!(code, 202, "{body}");
    let status = backend.status_until(|status| status["login_in_progress"] == false);
    assert_eq!(status["logged_in"], false);
    assert_eq!(status["last_error"]["error"], "access_denied", "{status}");

    for (method, path, expected) in [
        ("GET", "/login", 405),
        ("DELETE", "/token", 405),
        ("GET", "/admin", 404),
        ("POST", "/", 404),
    ] {
        let (code, body) = backend.call(method, path, None);
        assert_eq!(code, expected, "{method} {path}: {body}");
    }
    // A logout with nothing stored and no revocation endpoint still answers.
    let (code, report) = backend.call("POST", "/logout", None);
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["had_tokens"], false);
}

#[test]
fn bad_settings_stop_the_backend_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"issuer":"https://idp.example","client_id":"c","client_secret":"LEAKED"}"#,
    )
    .expect("settings");
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey-extension"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run the backend");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("client_secret_file"), "{stderr}");
    assert!(!stderr.contains("LEAKED"), "{stderr}");
}

fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// The UI in headless Chromium, with a `ddClient` stand-in wired to the backend's socket
/// (`tests/interop/extension-ui.mjs`), opened with `deep_link_query` if given: its output,
/// parsed.
fn run_ui(socket: &Path, deep_link_query: Option<&str>) -> Value {
    oidc::require_node_packages();
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui");
    let chromium =
        std::env::var_os("LATCHKEY_CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the UI test needs Chromium at {} (Debian: `apt-get install -y chromium`; or set \
         LATCHKEY_CHROMIUM)",
        Path::new(&chromium).display()
    );
    let output = Command::new("node")
        .arg(oidc::interop_dir().join("extension-ui.mjs"))
        .arg(&ui)
        .arg(socket)
        .args(deep_link_query)
        .current_dir(oidc::interop_dir())
        .env("LATCHKEY_CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .output()
        .expect("run node extension-ui.mjs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "extension-ui.mjs failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("extension-ui.mjs prints one JSON object")
}

#[test]
fn the_ui_in_chromium_logs_in_calls_the_api_and_logs_out_without_storing_a_token() {
    let idp = OidcProvider::start();
    let backend = Backend::start(oidc_settings(&idp), oidc::BASIC.secret);
    let seen = run_ui(&backend.socket, None);

    let signed_in = seen["signed_in"].as_str().expect("text");
    // The page names who signed in (the ID token's subject), from the status API.
    assert!(
        signed_in.starts_with(&format!("Signed in as {}", oidc_agent::LOGIN)),
        "{seen}"
    );
    assert!(signed_in.contains("scope: openid profile"), "{seen}");
    let api_result = seen["api_result"].as_str().expect("text");
    assert!(api_result.starts_with("200"), "{seen}");
    assert!(
        api_result.contains(&format!("\"sub\": \"{}\"", oidc_agent::LOGIN)),
        "{seen}"
    );
    assert_eq!(
        seen["storage"],
        json!({"local_storage": 0, "session_storage": 0, "cookies": ""}),
        "the page stores nothing"
    );
    assert_eq!(seen["signed_out"], "Not signed in.");
    let logout = seen["logout_result"].as_str().expect("text");
    assert!(
        logout.contains("Revoked: refresh_token, access_token."),
        "{seen}"
    );
    assert_eq!(seen["page_errors"], json!([]), "{seen}");

    // The token the page used was the provider's, and is revoked now.
    let tokens = seen["access_tokens"].as_array().expect("a list");
    assert_eq!(tokens.len(), 1, "{seen}");
    let access_token = tokens[0].as_str().expect("a token");
    assert_eq!(userinfo(&idp, access_token).0, 401);
    assert!(!backend.token_file.exists());
}

#[test]
fn the_ui_in_chromium_opened_by_the_extension_tab_deep_link_forwards_it_and_signs_in() {
    let idp = dev_idp();
    let backend = deep_link_backend(&idp);
    let deep_link = deep_link_after_signing_in(&backend);
    // Docker Desktop opens the tab with the deep link's query.
    let query = &deep_link[deep_link.find('?').expect("a query")..];
    let seen = run_ui(&backend.socket, Some(query));
    let signed_in = seen["signed_in"].as_str().expect("text");
    assert!(signed_in.starts_with("Signed in"), "{seen}");
    assert_eq!(
        seen["location_search"], "",
        "the code left the address bar: {seen}"
    );
    assert_eq!(
        seen["storage"],
        json!({"local_storage": 0, "session_storage": 0, "cookies": ""})
    );
    assert_eq!(seen["signed_out"], "Not signed in.");
    assert_eq!(seen["page_errors"], json!([]), "{seen}");
    assert!(!backend.token_file.exists(), "logged out");
}

#[test]
fn get_token_refreshes_a_token_that_expires_within_a_minute() {
    // Tokens that live 30 s are always due: every GET /token refreshes first.
    let idp = dev_idp_issuing(Duration::from_secs(30));
    let backend = deep_link_backend(&idp);
    let deep_link = deep_link_after_signing_in(&backend);
    let (code, _) = backend.call("POST", "/callback", Some(json!({ "url": deep_link })));
    assert_eq!(code, 202);
    backend.status_until(|status| status["logged_in"] == true);
    let stored = std::fs::read_to_string(&backend.token_file).expect("the token file");
    let (_, first) = backend.call("GET", "/token", None);
    let (_, second) = backend.call("GET", "/token", None);
    let (first, second) = (
        first["access_token"].as_str().expect("a token"),
        second["access_token"].as_str().expect("a token"),
    );
    assert_ne!(first, second, "refreshed each time");
    assert!(!stored.contains(first), "not the token from the login");
    assert!(idp.access_token_active(second));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (_, status) = backend.call("GET", "/status", None);
    let expires_at = status["expires_at"].as_u64().expect("an expiry");
    assert!((now + 25..=now + 35).contains(&expires_at), "{status}");
}
