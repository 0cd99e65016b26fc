//! The Docker Desktop extension's UI (`examples/docker-extension/ui/`) in headless Chromium,
//! as Docker Desktop runs it: loaded from a file (no http origin), with a strict stand-in
//! for the `ddClient` Docker Desktop injects (`tests/interop/extension-ui.mjs`). Its service
//! calls reach the real backend's socket, its host binary is the real `latchkey-callback`,
//! its `openExternal` opens a page in the same browser where the user signs in at
//! oidc-provider (or the development identity provider, for the deep-link redirect).
//!
//! Each test runs one of the script's scenarios and checks what the page showed: the
//! words for every state, that no token ever reached the page (service answers, text,
//! console, storage), that the host binary is stopped when a login ends, and the
//! screenshots the extension's marketplace listing uses
//! (`examples/docker-extension/screenshots/`; `LATCHKEY_UPDATE_SCREENSHOTS=1` refreshes
//! them).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use latchkey_devidp::{DevIdp, agent};
use latchkey_tests::extension::{self, Backend};
use latchkey_tests::oidc::{self, OidcProvider};
use serde_json::{Value, json};

/// The longest `extension-ui.mjs` may run (it gives up by itself after 90 s).
const SCRIPT_LIMIT: Duration = Duration::from_secs(150);
/// Docker Desktop's deep link to the extension's tab.
const TAB: &str = "docker-desktop://dashboard/extension-tab?extensionId=latchkey/oauth-example";
/// The screenshots the `screenshots` scenario takes, by file name (without `.png`).
const SCREENSHOTS: [&str; 4] = [
    "signed-out-light",
    "waiting-dark",
    "signed-in-light",
    "signed-in-dark",
];

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs scenario `scenario` of `extension-ui.mjs` against `backend`, with `extra`
/// arguments. Each pause line the script prints is handed to `at_pause` (its name and the
/// line), and answered once that returns. Returns the script's report.
fn run_ui(
    scenario: &str,
    backend: &Backend,
    extra: &[(&str, OsString)],
    at_pause: impl FnMut(&str, &Value),
) -> Value {
    run_script(
        scenario,
        backend.socket(),
        &|| backend.log().join("\n"),
        extra,
        at_pause,
    )
}

/// [`run_ui`] with the backend's socket at `socket` (whether or not anything answers
/// there), and its log from `log` for failure messages.
fn run_script(
    scenario: &str,
    socket: &Path,
    log: &dyn Fn() -> String,
    extra: &[(&str, OsString)],
    mut at_pause: impl FnMut(&str, &Value),
) -> Value {
    oidc::require_browser_tools();
    let binaries = extension::binaries();
    let ui = extension::folder().join("ui");
    let mut command = Command::new("node");
    command
        .arg(oidc::interop_dir().join("extension-ui.mjs"))
        .arg(scenario)
        .arg("--ui")
        .arg(&ui)
        .arg("--socket")
        .arg(socket)
        .arg("--host-binary")
        .arg(&binaries.host);
    for (name, value) in extra {
        command.arg(format!("--{name}")).arg(value);
    }
    let child = command
        .current_dir(oidc::interop_dir())
        .env("LATCHKEY_CHROMIUM", oidc::chromium())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node extension-ui.mjs");
    let mut child = Killed(child);
    let mut stdin = child.0.stdin.take().expect("piped stdin");
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut stderr = child.0.stderr.take().expect("piped stderr");
    let (lines, line) = mpsc::channel();
    std::thread::spawn(move || {
        for read in BufReader::new(stdout).lines() {
            let Ok(read) = read else { return };
            if lines.send(read).is_err() {
                return;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let report = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(text) = line.recv_timeout(left) else {
            let _ = child.0.kill();
            let status = child.0.wait();
            panic!(
                "extension-ui.mjs {scenario} ended ({status:?}) without a report:\n{}\nbackend log:\n{}",
                errors.join().unwrap_or_default(),
                log()
            );
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            panic!("extension-ui.mjs printed a line that is not JSON: {text}");
        };
        match value["pause"].as_str() {
            Some(name) => {
                at_pause(name, &value);
                writeln!(stdin, "continue").expect("answer the script");
            }
            None => break value,
        }
    };
    drop(stdin);
    let status = child.0.wait().expect("wait for node");
    assert!(
        status.success(),
        "extension-ui.mjs {scenario} failed: {}",
        errors.join().unwrap_or_default()
    );
    report
}

/// Settings for oidc-provider's `basic-client` at `issuer`, calling `sample_api`.
fn oidc_settings(issuer: &str, sample_api: &str) -> Value {
    json!({
        "issuer": issuer,
        "client_id": oidc::BASIC.id,
        "scopes": ["openid", "email", "profile", "offline_access"],
        "sample_api": sample_api,
    })
}

/// The provider's userinfo endpoint, from its discovery document.
fn userinfo_endpoint(issuer: &str) -> String {
    let (status, _, body) = agent::get(&format!("{issuer}/.well-known/openid-configuration"), &[])
        .expect("fetch the discovery document");
    assert_eq!(status, 200);
    let metadata: Value = serde_json::from_slice(&body).expect("JSON metadata");
    metadata["userinfo_endpoint"]
        .as_str()
        .expect("a userinfo endpoint")
        .to_owned()
}

/// A backend for a fresh oidc-provider, with the default loopback redirect URI (or
/// `redirect_uri`).
fn oidc_backend(redirect_uri: Option<&str>) -> (OidcProvider, Backend) {
    let idp = OidcProvider::start();
    let mut settings = oidc_settings(idp.issuer(), &userinfo_endpoint(idp.issuer()));
    if let Some(uri) = redirect_uri {
        settings["redirect_uri"] = json!(uri);
    }
    let backend = Backend::start(settings, oidc::BASIC.secret);
    (idp, backend)
}

/// The text step `step` of the report showed in part `part` (`status`, `error`, …).
fn shown<'a>(report: &'a Value, step: &str, part: &str) -> &'a str {
    report["steps"][step][part]
        .as_str()
        .unwrap_or_else(|| panic!("step {step} showed no {part}: {}", report["steps"][step]))
}

/// The labels of the buttons step `step` showed.
fn buttons(report: &Value, step: &str) -> Vec<String> {
    report["steps"][step]["buttons"]
        .as_array()
        .unwrap_or_else(|| panic!("no step {step}"))
        .iter()
        .map(|button| button["label"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The service calls of the report to `method path`, in order.
fn calls<'a>(report: &'a Value, method: &str, path: &str) -> Vec<&'a Value> {
    report["service"]
        .as_array()
        .expect("service calls")
        .iter()
        .filter(|call| call["method"] == method && call["path"] == path)
        .collect()
}

/// The page stored nothing anywhere it could have.
fn assert_stores_nothing(report: &Value) {
    let storage = &report["storage"];
    for (what, empty) in [
        ("local_storage", json!(0)),
        ("session_storage", json!(0)),
        ("cookies", json!("")),
        ("indexed_db", json!([])),
        ("cache_storage", json!([])),
    ] {
        let value = &storage[what];
        let unavailable = value
            .as_str()
            .is_some_and(|text| text.starts_with("unavailable"));
        assert!(
            *value == empty || unavailable,
            "the page stored something in {what}: {storage}"
        );
    }
}

/// The page ran without errors of its own.
fn assert_no_page_errors(report: &Value) {
    assert_eq!(
        report["page_errors"],
        json!([]),
        "{}",
        report["page_errors"]
    );
    let console_errors: Vec<&Value> = report["console"]
        .as_array()
        .expect("console messages")
        .iter()
        .filter(|message| message["type"] == "error")
        .collect();
    assert!(console_errors.is_empty(), "{console_errors:?}");
}

/// The host process the UI started (the only one).
fn the_host_process(report: &Value) -> &Value {
    let execs = report["execs"].as_array().expect("exec calls");
    assert_eq!(execs.len(), 1, "one host process: {execs:?}");
    &execs[0]
}

#[test]
fn the_ui_signs_in_through_the_host_binary_calls_the_api_and_logs_out_without_seeing_a_token() {
    // Port 8080, a favourite of local servers, is taken: the host binary's ephemeral port
    // does not care. (If something else holds it already, so much the better.)
    let _busy = TcpListener::bind((Ipv4Addr::LOCALHOST, 8080)).ok();
    let (_idp, backend) = oidc_backend(None);
    let mut tokens = Vec::new();
    let report = run_ui("login", &backend, &[], |name, _| {
        assert_eq!(name, "signed_in");
        tokens = backend.stored_token_texts();
    });

    assert_eq!(shown(&report, "signed_out", "status"), "Not signed in.");
    assert_eq!(buttons(&report, "signed_out"), ["Log in"]);
    assert!(
        shown(&report, "waiting", "status")
            .starts_with("Waiting for you to sign in in your browser… "),
        "{}",
        report["steps"]["waiting"]
    );
    assert_eq!(
        buttons(&report, "waiting"),
        ["Open the sign-in page again", "Cancel"]
    );

    // A forged redirect to the host binary is refused by the backend, quietly, and the
    // login goes on.
    let forged = calls(&report, "POST", "/callback");
    assert_eq!(
        forged.len(),
        2,
        "the forged and the real callback: {forged:?}"
    );
    assert_eq!(
        forged[0]["request"],
        r#"{"url":"?code=forged&state=forged"}"#
    );
    assert_eq!(forged[0]["status"], 400);
    assert_eq!(forged[1]["status"], 202);
    assert!(
        shown(&report, "after_forged", "status").starts_with("Waiting for you to sign in"),
        "{}",
        report["steps"]["after_forged"]
    );
    assert_eq!(report["steps"]["after_forged"]["error"], Value::Null);
    assert_eq!(
        shown(&report, "after_forged", "note"),
        "An answer that does not belong to this sign-in reached the page and was ignored."
    );

    // The host binary was asked for the settings' redirect URI and landing, and its port
    // went into the login.
    let host = the_host_process(&report);
    assert_eq!(host["cmd"], "latchkey-callback");
    assert_eq!(
        host["args"],
        json!([
            "--redirect-uri",
            "http://127.0.0.1/callback",
            "--landing",
            "docker-desktop://dashboard/open"
        ])
    );
    let login = calls(&report, "POST", "/login");
    assert_eq!(login.len(), 1);
    let asked: Value =
        serde_json::from_str(login[0]["request"].as_str().expect("a body")).expect("JSON");
    let listening = asked["redirect_uri"].as_str().expect("a redirect URI");
    assert!(
        listening.starts_with("http://127.0.0.1:") && listening.ends_with("/callback"),
        "{listening}"
    );
    assert_ne!(listening, "http://127.0.0.1:8080/callback");
    assert_eq!(report["opened"].as_array().map(Vec::len), Some(1));

    assert_eq!(shown(&report, "signed_in", "status"), "Signed in as alice.");
    let details = shown(&report, "signed_in", "details");
    assert!(details.contains("Access token valid until"), "{details}");
    assert!(
        details.contains("automatic (the backend holds a refresh token)"),
        "{details}"
    );
    assert!(details.contains("openid"), "{details}");
    assert_eq!(buttons(&report, "signed_in"), ["Call the API", "Log out"]);

    // The API answered through the backend: the userinfo of who signed in.
    let result = shown(&report, "api", "result");
    assert!(result.contains("answered HTTP 200."), "{result}");
    assert!(result.contains("\"sub\": \"alice\""), "{result}");

    let signed_out = shown(&report, "signed_out_again", "result");
    assert!(
        signed_out.contains("Signed out. Revoked at the provider: refresh token and access token."),
        "{signed_out}"
    );
    assert_eq!(
        shown(&report, "signed_out_again", "status"),
        "Not signed in."
    );

    // The login's end closed the host binary, and it stopped listening.
    assert_eq!(host["closed_by_ui"], true, "{host}");
    assert_eq!(host["exited"], true, "{host}");
    assert_eq!(report["helper_accepting_after"], false);

    // No token anywhere the page could reach: the backend's answers, the page's text and
    // HTML at every step, the console, storage, toasts.
    assert_eq!(tokens.len(), 3, "access, refresh and ID token");
    assert!(calls(&report, "GET", "/status").len() > 3);
    let seen = report.to_string();
    for token in &tokens {
        assert!(token.len() >= 16, "a real token: {token}");
        assert!(!seen.contains(token.as_str()), "a token reached the page");
    }
    assert_stores_nothing(&report);
    assert_no_page_errors(&report);
    assert_eq!(
        report["toasts"],
        json!([
            {"kind": "success", "message": "Signed in as alice."},
            {"kind": "success", "message": "Signed out."}
        ])
    );
    assert!(!backend.token_file().exists(), "logged out");
}

/// The development identity provider with a public client whose redirect URI is the
/// extension's tab, and a backend for it.
fn deep_link_backend() -> (DevIdp, Backend) {
    let client = latchkey_devidp::Client {
        id: "docker-extension".into(),
        secret: None,
        auth: latchkey_devidp::ClientAuth::None,
        redirect_uris: vec![TAB.into()],
    };
    let idp = DevIdp::start(
        latchkey_devidp::Config::new(vec![client]),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )
    .expect("start the development identity provider");
    let backend = Backend::start(
        json!({
            "authorization_endpoint": idp.authorization_endpoint(),
            "token_endpoint": idp.token_endpoint(),
            "revocation_endpoint": idp.revocation_endpoint(),
            "jwks_uri": idp.jwks_uri(),
            "issuer": idp.issuer(),
            "client_id": "docker-extension",
            "scopes": ["openid"],
            "redirect_uri": TAB,
            "sample_api": idp.userinfo_endpoint(),
        }),
        None,
    );
    (idp, backend)
}

#[test]
fn the_ui_opened_by_the_extension_tab_deep_link_forwards_the_callback_and_signs_in() {
    let (idp, backend) = deep_link_backend();
    let mut tokens = Vec::new();
    let report = run_ui("deep-link", &backend, &[], |name, _| {
        assert_eq!(name, "signed_in");
        tokens = backend.stored_token_texts();
    });

    // No host binary for an application redirect: Docker Desktop's deep link brings the
    // browser back.
    assert_eq!(report["execs"], json!([]));
    assert_eq!(calls(&report, "POST", "/login")[0]["request"], "{}");
    let deep_link = report["deep_link"].as_str().expect("the deep link");
    assert!(
        deep_link.starts_with(&format!("{TAB}&code=")),
        "{deep_link}"
    );
    assert!(shown(&report, "waiting", "status").starts_with("Waiting for you to sign in"));

    // The tab was opened with the deep link's query: forwarded whole, then taken out of
    // the address.
    let forwarded = calls(&report, "POST", "/callback");
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    let query = &deep_link[deep_link.find('?').expect("a query")..];
    assert_eq!(forwarded[0]["request"], json!({ "url": query }).to_string());
    assert_eq!(forwarded[0]["status"], 202);
    let search = report["steps"]["signed_in"]["search"]
        .as_str()
        .expect("the address");
    assert!(
        !search.contains("code=") && !search.contains("state="),
        "the callback left the address: {search}"
    );
    // The ID token's email names who signed in.
    assert_eq!(
        shown(&report, "signed_in", "status"),
        "Signed in as dev-user@example.com."
    );
    let result = shown(&report, "api", "result");
    assert!(result.contains("answered HTTP 200."), "{result}");
    assert!(result.contains("\"sub\": \"dev-user\""), "{result}");
    assert!(shown(&report, "signed_out_again", "result").contains("Signed out."));

    let seen = report.to_string();
    assert!(!tokens.is_empty());
    for token in &tokens {
        assert!(!seen.contains(token.as_str()), "a token reached the page");
    }
    assert_stores_nothing(&report);
    assert_no_page_errors(&report);
    assert!(!backend.token_file().exists(), "logged out");
    drop(idp);
}

#[test]
fn cancelling_a_login_in_the_ui_stops_the_host_binary_and_ends_the_login() {
    let (_idp, backend) = oidc_backend(None);
    let report = run_ui("cancel", &backend, &[], |name, _| {
        panic!("no pause expected, got {name}")
    });

    assert!(shown(&report, "waiting", "status").starts_with("Waiting for you to sign in"));
    // "Open the sign-in page again" opened the same page.
    let opened = report["opened"].as_array().expect("opened pages");
    assert_eq!(opened.len(), 2, "{opened:?}");
    assert_eq!(opened[0], opened[1]);
    assert_eq!(calls(&report, "POST", "/cancel").len(), 1);
    assert_eq!(shown(&report, "cancelled", "status"), "Not signed in.");
    assert_eq!(buttons(&report, "cancelled"), ["Log in"]);

    let host = the_host_process(&report);
    assert_eq!(host["closed_by_ui"], true, "{host}");
    assert_eq!(host["exited"], true, "{host}");
    assert_eq!(
        report["helper_accepting_after"], false,
        "the port is closed"
    );
    let status = backend.status();
    assert_eq!(status["login"], Value::Null, "{status}");
    assert_eq!(status["login_in_progress"], false, "{status}");
    assert_eq!(status["last_error"], Value::Null, "{status}");
    assert_no_page_errors(&report);
}

#[test]
fn the_ui_says_the_provider_is_unreachable_and_try_now_leads_to_log_in_once_it_is_up() {
    // A port with nothing behind it, for now.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let backend = Backend::start(
        oidc_settings(&issuer, &format!("{issuer}/me")),
        oidc::BASIC.secret,
    );
    let mut idp = None;
    let report = run_ui("offline", &backend, &[], |name, _| {
        assert_eq!(name, "unreachable");
        idp = Some(OidcProvider::start_on(port));
    });

    let provider = shown(&report, "unreachable", "provider");
    assert!(
        provider.starts_with(&format!("Can't reach {issuer}: ")),
        "{provider}"
    );
    assert!(provider.contains("Trying again "), "{provider}");
    let labels = buttons(&report, "unreachable");
    assert!(labels.contains(&"Try now".to_owned()), "{labels:?}");
    assert!(!labels.contains(&"Log in".to_owned()), "{labels:?}");

    // Try now asked the backend to retry at once (unless its own next attempt was quicker
    // and the button had gone).
    if report["pressed_try_now"] == true {
        let retries = calls(&report, "POST", "/retry");
        assert!(!retries.is_empty());
        assert_eq!(retries[0]["status"], 202);
    }
    assert_eq!(
        shown(&report, "recovered", "provider"),
        format!("Connected to {issuer}.")
    );
    assert_eq!(buttons(&report, "recovered"), ["Log in"]);
    assert_no_page_errors(&report);
    drop(idp);
}

#[test]
fn a_sign_in_declined_at_the_provider_is_shown_in_words() {
    let (_idp, backend) = oidc_backend(None);
    let report = run_ui("denied", &backend, &[], |name, _| {
        panic!("no pause expected, got {name}")
    });
    let error = shown(&report, "denied", "error");
    assert!(
        error.starts_with("The last sign-in failed: The sign-in was declined at the provider"),
        "{error}"
    );
    assert!(error.contains("access_denied"), "{error}");
    assert_eq!(shown(&report, "denied", "status"), "Not signed in.");
    assert_eq!(buttons(&report, "denied"), ["Log in"]);
    let host = the_host_process(&report);
    assert_eq!(host["closed_by_ui"], true, "{host}");
    assert_eq!(backend.status()["last_error"]["error"], "access_denied");
    assert_no_page_errors(&report);
}

#[test]
fn a_busy_fixed_port_is_reported_in_words_and_no_login_starts() {
    let busy = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port to occupy");
    let port = busy.local_addr().expect("its address").port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let (_idp, backend) = oidc_backend(Some(&redirect_uri));
    let report = run_ui("port-busy", &backend, &[], |name, _| {
        panic!("no pause expected, got {name}")
    });

    let host = the_host_process(&report);
    assert_eq!(host["exit_code"], 1, "{host}");
    let said: Value = serde_json::from_str(
        host["stdout_lines"][0]
            .as_str()
            .expect("the host binary's line"),
    )
    .expect("JSON");
    assert_eq!(said["error"], "port_in_use", "{host}");
    let message = said["message"].as_str().expect("words");

    // The host binary's own words, which say what to do, as a sentence.
    let error = shown(&report, "port_busy", "error");
    assert!(message.contains(&port.to_string()), "{message}");
    assert!(
        error.starts_with(message.trim_end_matches('.')),
        "{error} does not say {message}"
    );
    assert_eq!(buttons(&report, "port_busy"), ["Log in"]);
    assert!(
        calls(&report, "POST", "/login").is_empty(),
        "no login started"
    );
    assert_eq!(backend.status()["login_in_progress"], false);
    assert_no_page_errors(&report);
    drop(busy);
}

#[test]
fn settings_that_cannot_work_are_shown_in_words_without_a_log_in_button() {
    let idp = OidcProvider::start();
    let mut settings = oidc_settings(idp.issuer(), &format!("{}/me", idp.issuer()));
    settings["client_secret_file"] = json!("/nonexistent/latchkey/client_secret");
    let backend = Backend::start(settings, None);
    let report = run_ui("misconfigured", &backend, &[], |name, _| {
        panic!("no pause expected, got {name}")
    });
    let provider = shown(&report, "misconfigured", "provider");
    assert!(
        provider.starts_with("The extension's settings cannot work: "),
        "{provider}"
    );
    assert!(
        provider.contains("/nonexistent/latchkey/client_secret"),
        "{provider}"
    );
    assert!(
        provider.ends_with(
            "Fix the extension's settings (its config.json), then restart the extension."
        ),
        "{provider}"
    );
    assert_eq!(buttons(&report, "misconfigured"), Vec::<String>::new());
    assert_no_page_errors(&report);
}

#[test]
fn a_backend_that_does_not_answer_is_shown_in_words_and_tried_again() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let socket = dir.path().join("nobody.sock");
    let report = run_script("no-backend", &socket, &String::new, &[], |name, _| {
        panic!("no pause expected, got {name}")
    });
    let error = shown(&report, "no_backend", "error");
    assert!(
        error.starts_with("Docker Desktop could not reach the extension's backend: "),
        "{error}"
    );
    assert!(error.ends_with("Trying again…"), "{error}");
    assert!(!error.contains("[object"), "{error}");
    assert_eq!(
        shown(&report, "no_backend", "provider"),
        "Unknown until the extension's backend answers."
    );
    assert_eq!(buttons(&report, "no_backend"), Vec::<String>::new());
    assert_no_page_errors(&report);
}

/// The width and height of a PNG, and the bytes of its image data, after checking its
/// signature and chunk structure.
fn png_facts(png: &[u8]) -> (u32, u32, usize) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG signature");
    let mut at = 8;
    let (mut size, mut data) = (None, 0);
    while at + 12 <= png.len() {
        let length = u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind = &png[at + 4..at + 8];
        let body = &png[at + 8..at + 8 + length];
        match kind {
            b"IHDR" => {
                let number = |from: usize| {
                    u32::from_be_bytes(body[from..from + 4].try_into().expect("4 bytes"))
                };
                size = Some((number(0), number(4)));
            }
            b"IDAT" => data += length,
            b"IEND" => {
                let (width, height) = size.expect("an IHDR chunk");
                return (width, height, data);
            }
            _ => {}
        }
        at += 12 + length;
    }
    panic!("no IEND chunk: a truncated PNG");
}

/// A marketplace screenshot: a 2400×1600 PNG with a real picture in it (a blank or
/// single-colour one compresses to a few kilobytes).
fn assert_screenshot(path: &Path) -> Vec<u8> {
    let png = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (width, height, data) = png_facts(&png);
    assert_eq!((width, height), (2400, 1600), "{}", path.display());
    assert!(
        png.len() > 20_000 && data > 15_000,
        "{} is nearly empty ({} bytes)",
        path.display(),
        png.len()
    );
    png
}

/// Where the committed screenshots are.
fn screenshot_folder() -> PathBuf {
    extension::folder().join("screenshots")
}

#[test]
fn the_screenshots_show_the_signed_in_page_in_light_and_dark() {
    let (_idp, backend) = oidc_backend(None);
    let folder = tempfile::tempdir().expect("a temporary directory");
    let report = run_ui(
        "screenshots",
        &backend,
        &[("screenshots", folder.path().into())],
        |name, _| panic!("no pause expected, got {name}"),
    );
    assert_eq!(shown(&report, "signed_in", "status"), "Signed in as alice.");
    let taken = report["screenshots"].as_array().expect("screenshots");
    assert_eq!(taken.len(), SCREENSHOTS.len(), "{taken:?}");
    let pictures: Vec<Vec<u8>> = SCREENSHOTS
        .iter()
        .map(|name| assert_screenshot(&folder.path().join(format!("{name}.png"))))
        .collect();
    assert_ne!(pictures[2], pictures[3], "light and dark differ");
    assert_no_page_errors(&report);

    if std::env::var_os("LATCHKEY_UPDATE_SCREENSHOTS").is_some_and(|value| value == "1") {
        std::fs::create_dir_all(screenshot_folder()).expect("the screenshot folder");
        // Renamed into place whole: the test of the committed screenshots may be reading.
        for name in SCREENSHOTS {
            let partial = screenshot_folder().join(format!(".{name}.png.partial"));
            std::fs::copy(folder.path().join(format!("{name}.png")), &partial)
                .expect("copy a screenshot");
            std::fs::rename(&partial, screenshot_folder().join(format!("{name}.png")))
                .expect("put a screenshot in place");
        }
    }
}

#[test]
fn the_committed_screenshots_are_2400_by_1600_pngs() {
    let light = assert_screenshot(&screenshot_folder().join("signed-in-light.png"));
    let dark = assert_screenshot(&screenshot_folder().join("signed-in-dark.png"));
    assert_ne!(light, dark);
    for name in SCREENSHOTS {
        assert_screenshot(&screenshot_folder().join(format!("{name}.png")));
    }
}

#[test]
fn the_ddclient_stand_in_refuses_what_docker_desktop_refuses() {
    let (_idp, backend) = oidc_backend(None);
    let report = run_ui("strict", &backend, &[], |name, _| {
        panic!("no pause expected, got {name}")
    });
    let checks = &report["checks"];

    // A file page: an opaque origin, no http.
    assert_eq!(checks["protocol"], "file:", "{checks}");
    let origin = checks["origin"].as_str().expect("an origin");
    assert!(origin == "null" || origin == "file://", "{checks}");
    assert_eq!(checks["platform"], std::env::consts::OS, "{checks}");

    // openExternal: http and https only.
    for attempt in [
        "open_deep_link",
        "open_javascript",
        "open_file",
        "open_relative",
    ] {
        assert_eq!(checks[attempt]["ok"], false, "{attempt}: {checks}");
        assert_eq!(checks[attempt]["is_error"], true, "{attempt}: {checks}");
    }
    assert_eq!(report["opened"], json!([]));
    assert_eq!(report["refused_open"].as_array().map(Vec::len), Some(4));

    // exec: the shipped host binary only, by its name.
    for attempt in ["exec_other", "exec_path"] {
        assert_eq!(checks[attempt]["ok"], false, "{attempt}: {checks}");
        assert!(
            checks[attempt]["message"]
                .as_str()
                .is_some_and(|m| m.contains("not a binary this extension ships")),
            "{attempt}: {checks}"
        );
    }
    assert_eq!(checks["exec_other_streamed"]["event"], "error", "{checks}");
    // The host binary itself runs; a non-zero exit rejects with its result.
    assert_eq!(checks["exec_helper_help"]["ok"], true, "{checks}");
    assert!(
        checks["exec_helper_help"]["value"]["stdout"]
            .as_str()
            .is_some_and(|help| help.contains("--redirect-uri")),
        "{checks}"
    );
    assert_eq!(checks["exec_helper_bad"]["ok"], false, "{checks}");
    assert_eq!(checks["exec_helper_bad"]["code"], 2, "{checks}");

    // Service calls: a non-2xx answer rejects with a ServiceError carrying the body.
    let not_found = &checks["not_found"];
    assert_eq!(not_found["ok"], false, "{checks}");
    assert_eq!(
        not_found["is_error"], false,
        "a plain ServiceError object: {checks}"
    );
    assert_eq!(not_found["name"], "ServiceError", "{checks}");
    assert_eq!(not_found["status_code"], 404, "{checks}");
    let body: Value =
        serde_json::from_str(not_found["message"].as_str().expect("the body")).expect("JSON");
    assert_eq!(body["error"], "not_found");
    assert_eq!(checks["wrong_method"]["status_code"], 405, "{checks}");
    assert_eq!(
        checks["request_status"],
        json!({"ok": true, "value": "ready"})
    );
    // The page's own policy allows no fetch.
    assert_eq!(checks["fetch"]["ok"], false, "{checks}");
}
