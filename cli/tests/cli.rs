//! End-to-end tests of the `latchkey` binary: each test runs the real command against the
//! development identity provider, plays the user's browser with the scripted user agent
//! when the command prints its `authorize` event, and checks the JSON events, the exit
//! code and the token file.
//!
//! Every child process is killed after [`LIMIT`], so a hanging command fails its test
//! instead of hanging the suite. No test opens a real browser (`--no-browser`) or touches
//! the user's own token file (`--store` in a temporary directory, `HOME` pointed away).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Finished, Guard, Running, latchkey_command, lock};
use latchkey_devidp::agent::{self, Hop};
use latchkey_devidp::{Client, ClientAuth, Config, DevIdp, Forgery, IdTokenAlg, Quirk};
use serde_json::{Map, Value};
use tempfile::TempDir;

/// Longest any one command may run before it is killed and its test fails.
const LIMIT: Duration = Duration::from_secs(20);
/// The client registered at every test's identity provider.
const CLIENT_ID: &str = "latchkey-cli-test";
/// Its secret (for the `basic` and `post` clients).
const SECRET: &str = "cli-test-secret-9f3b2c71";
/// The environment variable that carries the secret to the child.
const SECRET_VAR: &str = "LATCHKEY_CLI_TEST_SECRET";
/// Registered without a port: the identity provider accepts any port (RFC 8252 §7.3).
const REGISTERED_REDIRECT_URI: &str = "http://127.0.0.1/callback";
/// The same on the IPv6 loopback.
const REGISTERED_REDIRECT_URI_V6: &str = "http://[::1]/callback";
/// What the command is told to listen on: any free port.
const REDIRECT_URI: &str = "http://127.0.0.1:0/callback";
/// Where `--then` sends the browser after success.
const LANDING: &str = "docker-desktop://dashboard/open";
/// The success sequence of `--json` events.
const SUCCESS_EVENTS: [&str; 5] = ["listening", "authorize", "callback", "token", "stored"];

// ---- running the command ------------------------------------------------------------

/// `latchkey ARGS` with an environment that cannot reach the user's files or a proxy.
fn latchkey<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = latchkey_command();
    command.args(args).env_remove(SECRET_VAR);
    command
}

/// How every command is run: killed after [`LIMIT`], its output read until it closes.
const GUARD: Guard = Guard {
    limit: LIMIT,
    stdout_grace: None,
    stderr_wait: None,
};

/// Runs a command that needs no browser to its end.
fn run(command: Command) -> Finished {
    Running::spawn("latchkey", GUARD, command).finish()
}

impl Finished {
    /// The last event, which must be an error of `kind`; returns its message.
    fn error(&self, kind: &str) -> String {
        let events = self.events();
        let Some(last) = events.last() else {
            panic!("no events; stderr:\n{}", self.stderr);
        };
        assert_eq!(last["event"], "error", "{}", self.describe());
        assert_eq!(last["kind"], kind, "{}", self.describe());
        let errors = events.iter().filter(|e| e["event"] == "error").count();
        assert_eq!(errors, 1, "exactly one error event: {}", self.describe());
        last["message"]
            .as_str()
            .unwrap_or_else(|| panic!("error message is a string: {}", self.describe()))
            .to_owned()
    }
}

// ---- the identity provider and a login against it -----------------------------------

/// A development identity provider with one client that authenticates with `auth` (a
/// secret for `Basic` and `Post`) and accepts the loopback redirect URI on any port.
fn start_idp(auth: ClientAuth) -> DevIdp {
    start_idp_with(auth, |_| {})
}

fn start_idp_with(auth: ClientAuth, adjust: impl FnOnce(&mut Config)) -> DevIdp {
    let client = Client {
        id: CLIENT_ID.into(),
        secret: (auth != ClientAuth::None).then(|| SECRET.to_owned()),
        auth,
        redirect_uris: vec![
            REGISTERED_REDIRECT_URI.into(),
            REGISTERED_REDIRECT_URI_V6.into(),
        ],
    };
    let mut config = Config::new(vec![client]);
    adjust(&mut config);
    DevIdp::start(config, (Ipv4Addr::LOCALHOST, 0).into()).expect("starting the DevIdp")
}

/// A temporary directory and the token file path in it (not yet created).
fn store() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("tokens.json");
    (dir, path)
}

/// `latchkey login --json` against `idp` (its issuer and key set too), scopes
/// `openid profile`, no browser, storing in `store`; `extra` adds or repeats options (the
/// last repetition wins).
fn login(idp: &DevIdp, store: &Path, extra: &[&str]) -> Command {
    login_scoped(idp, store, &["openid", "profile"], extra)
}

/// [`login`] with other scopes.
fn login_scoped(idp: &DevIdp, store: &Path, scopes: &[&str], extra: &[&str]) -> Command {
    let mut command = latchkey([
        "login",
        "--json",
        "--no-browser",
        "--authorization-endpoint",
        &idp.authorization_endpoint(),
        "--token-endpoint",
        &idp.token_endpoint(),
        "--issuer",
        &idp.issuer(),
        "--jwks-uri",
        &idp.jwks_uri(),
        "--client-id",
        CLIENT_ID,
    ]);
    // A repeated --redirect-uri is a list to try in order: the test's own replaces this.
    if !extra.contains(&"--redirect-uri") {
        command.args(["--redirect-uri", REDIRECT_URI]);
    }
    for scope in scopes {
        command.args(["--scope", scope]);
    }
    command.arg("--store").arg(store).args(extra);
    command
}

/// How the child learns the client secret.
#[derive(Clone, Copy, Debug)]
enum SecretVia {
    Env,
    File,
    Nothing,
}

/// Adds `--client-secret-env` or `--client-secret-file` (written in `dir`) for `secret`.
fn pass_secret(command: &mut Command, via: SecretVia, secret: &str, dir: &Path) {
    match via {
        SecretVia::Env => {
            command
                .arg("--client-secret-env")
                .arg(SECRET_VAR)
                .env(SECRET_VAR, secret);
        }
        SecretVia::File => {
            let file = dir.join("client-secret");
            // As `echo SECRET > file` writes it: the newline is not part of the secret.
            std::fs::write(&file, format!("{secret}\n")).expect("writing the secret file");
            command.arg("--client-secret-file").arg(file);
        }
        SecretVia::Nothing => {}
    }
}

/// A login that got as far as the browser.
struct Browsed {
    finished: Finished,
    /// `redirect_uri` of the `listening` event.
    redirect_uri: String,
    /// `url` of the `authorize` event.
    url: String,
    /// The user agent's path, or why it failed.
    hops: std::io::Result<Vec<Hop>>,
}

/// Runs `command` (a `login --json`), plays the browser on its authorization URL, and
/// waits for the end.
fn login_with_browser(command: Command) -> Browsed {
    login_playing(command, |_, url| agent::browse(url))
}

/// Runs `command` (a `login --json`); once it has announced its redirect URI and
/// authorization URL, `browser(redirect_uri, url)` plays the user; then waits for the end.
fn login_playing(
    command: Command,
    browser: impl FnOnce(&str, &str) -> std::io::Result<Vec<Hop>>,
) -> Browsed {
    let mut running = Running::spawn("latchkey", GUARD, command);
    let listening = running.expect_event("listening");
    let redirect_uri = listening["redirect_uri"]
        .as_str()
        .expect("redirect_uri is a string")
        .to_owned();
    let authorize = running.expect_event("authorize");
    let url = authorize["url"]
        .as_str()
        .expect("url is a string")
        .to_owned();
    let hops = browser(&redirect_uri, &url);
    Browsed {
        finished: running.finish(),
        redirect_uri,
        url,
        hops,
    }
}

/// Plays a user who never comes back from the provider.
fn never_browse(_redirect_uri: &str, _url: &str) -> std::io::Result<Vec<Hop>> {
    Ok(Vec::new())
}

/// A token endpoint that answers its first request with `response` (raw HTTP), or never
/// answers it when `None`; its URL.
fn fake_token_endpoint(response: Option<&'static str>) -> String {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a port");
    let url = format!(
        "http://{}/token",
        listener.local_addr().expect("local address")
    );
    thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(LIMIT));
        // Read the whole request (headers, then Content-Length bytes) before answering.
        let mut request = Vec::new();
        let mut buf = [0; 4096];
        let complete = |request: &[u8]| {
            let text = String::from_utf8_lossy(request);
            let Some(end) = text.find("\r\n\r\n") else {
                return false;
            };
            let length = text[..end]
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            request.len() >= end + 4 + length
        };
        while !complete(&request) {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        match response {
            Some(response) => {
                let _ = stream.write_all(response.as_bytes());
            }
            // Hold the connection open, silent, until the client gives up.
            None => while matches!(stream.read(&mut buf), Ok(n) if n > 0) {},
        }
    });
    url
}

/// The raw value of `name` in `url`'s query.
fn query_param(url: &str, name: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// The default entry of the token file at `path`.
fn stored_tokens(path: &Path) -> Map<String, Value> {
    let text = std::fs::read_to_string(path).expect("reading the token file");
    let file: Value = serde_json::from_str(&text).expect("the token file is JSON");
    match &file["tokens"]["default"] {
        Value::Object(entry) => entry.clone(),
        _ => panic!("the token file has no default entry"),
    }
}

fn entry_string(entry: &Map<String, Value>, key: &str) -> String {
    entry[key]
        .as_str()
        .unwrap_or_else(|| panic!("token file entry lacks {key}"))
        .to_owned()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[cfg(unix)]
fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .expect("token file metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "token file mode {:o}", mode & 0o7777);
}

#[cfg(not(unix))]
fn assert_private(_path: &Path) {}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a port");
    listener.local_addr().expect("local address").port()
}

// ---- 1. a successful login in JSON --------------------------------------------------

/// A whole `--json` login with the client authenticating by `auth_method`: the events, the
/// token file, and no secret anywhere in the output.
fn assert_json_login_succeeds(auth_method: Option<&str>, runtime: &str, via: SecretVia) {
    let auth = match auth_method {
        Some("post") => ClientAuth::Post,
        Some("none") => ClientAuth::None,
        _ => ClientAuth::Basic,
    };
    let idp = start_idp(auth);
    let (dir, path) = store();
    let mut command = login(&idp, &path, &["--runtime", runtime]);
    if let Some(method) = auth_method {
        command.args(["--auth-method", method]);
    }
    pass_secret(&mut command, via, SECRET, dir.path());
    let before = now_unix();
    let browsed = login_with_browser(command);
    let after = now_unix();
    let finished = &browsed.finished;

    finished.assert_code(0);
    assert_eq!(
        finished.event_names(),
        SUCCESS_EVENTS,
        "{}",
        finished.describe()
    );
    let events = finished.events();

    // listening: the real port, not 0.
    let port = browsed
        .redirect_uri
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/callback"))
        .and_then(|port| port.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("redirect_uri {:?}", browsed.redirect_uri));
    assert_ne!(port, 0);
    assert_eq!(events[0].len(), 2, "listening: {:?}", events[0]);
    assert!(
        browsed.url.starts_with(&idp.authorization_endpoint()),
        "{}",
        browsed.url
    );
    assert_eq!(
        events[2].len(),
        1,
        "callback carries nothing: {:?}",
        events[2]
    );

    // token: exactly these members, no secret among them.
    let token = &events[3];
    let mut keys: Vec<&str> = token.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "event",
            "expires_at",
            "identity",
            "refresh_token",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(token["token_type"], "Bearer");
    // Who signed in, from the verified ID token: never the token itself.
    assert_eq!(
        token["identity"],
        serde_json::json!({
            "iss": idp.issuer(),
            "sub": "dev-user",
            "email": "dev-user@example.com",
            "email_verified": true,
            "name": "Dev User dev-user",
            "preferred_username": "dev-user",
        })
    );
    let expires_at = token["expires_at"]
        .as_u64()
        .unwrap_or_else(|| panic!("expires_at is an integer: {token:?}"));
    assert!(
        (before + 3600 - 5..=after + 3600 + 5).contains(&expires_at),
        "expires_at {expires_at} not about now + 3600 ({before})"
    );
    assert_eq!(token["scope"], "openid profile");
    assert_eq!(token["refresh_token"], true);

    // stored: the --store path, a private file.
    assert_eq!(events[4]["path"], path.display().to_string());
    assert_eq!(events[4].len(), 2, "stored: {:?}", events[4]);
    assert!(path.is_file());
    assert_private(&path);
    let entry = stored_tokens(&path);
    let access_token = entry_string(&entry, "access_token");
    let refresh_token = entry_string(&entry, "refresh_token");
    assert!(
        idp.access_token_active(&access_token),
        "the stored access token is the one the provider issued"
    );

    // The browser came back through the listener and was shown a page.
    let hops = browsed.hops.as_ref().expect("the user agent's path");
    let callback = hops
        .iter()
        .find(|hop| hop.url.starts_with(&browsed.redirect_uri))
        .unwrap_or_else(|| panic!("the browser never reached the callback: {hops:?}"));
    let code = query_param(&callback.url, "code").expect("the callback carried a code");
    let state = query_param(&browsed.url, "state").expect("the authorization URL has a state");

    // S41: no secret on stdout or stderr. The state is in the authorization URL by
    // necessity, and nowhere else.
    finished.assert_never_shows(&[
        ("access token", &access_token),
        ("refresh token", &refresh_token),
        ("client secret", SECRET),
        ("authorization code", &code),
    ]);
    let elsewhere = finished
        .stdout
        .iter()
        .enumerate()
        .any(|(i, line)| i != 1 && line.contains(&state));
    assert!(
        !elsewhere && !finished.stderr.contains(&state),
        "the state is repeated outside the authorization URL: {}",
        finished.describe()
    );
    drop(dir);
}

#[test]
fn json_login_with_basic_auth_on_smol_reports_each_step_and_stores_the_tokens() {
    assert_json_login_succeeds(Some("basic"), "smol", SecretVia::Env);
}

#[test]
fn json_login_with_post_auth_on_smol_reports_each_step_and_stores_the_tokens() {
    assert_json_login_succeeds(Some("post"), "smol", SecretVia::File);
}

#[test]
fn json_login_as_public_client_on_smol_reports_each_step_and_stores_the_tokens() {
    assert_json_login_succeeds(Some("none"), "smol", SecretVia::Nothing);
}

#[test]
fn json_login_with_basic_auth_on_tokio_reports_each_step_and_stores_the_tokens() {
    assert_json_login_succeeds(Some("basic"), "tokio", SecretVia::File);
}

#[test]
fn json_login_with_post_auth_on_tokio_reports_each_step_and_stores_the_tokens() {
    assert_json_login_succeeds(Some("post"), "tokio", SecretVia::Env);
}

#[test]
fn json_login_as_public_client_on_tokio_reports_each_step_and_stores_the_tokens() {
    assert_json_login_succeeds(Some("none"), "tokio", SecretVia::Nothing);
}

#[test]
fn auth_method_defaults_to_basic_when_a_secret_is_given() {
    assert_json_login_succeeds(None, "smol", SecretVia::Env);
}

#[test]
fn json_token_event_has_no_expires_at_when_the_provider_gives_no_lifetime() {
    // GitHub's token responses have no expires_in and no refresh token.
    let idp = start_idp_with(ClientAuth::None, |config| config.quirk = Quirk::GitHub);
    let (_dir, path) = store();
    // GitHub has no OpenID Connect: no `openid`, no identity.
    let browsed = login_with_browser(login_scoped(&idp, &path, &["repo"], &[]));
    let finished = &browsed.finished;
    finished.assert_code(0);
    assert_eq!(
        finished.event_names(),
        SUCCESS_EVENTS,
        "{}",
        finished.describe()
    );
    let token = &finished.events()[3];
    assert!(!token.contains_key("expires_at"), "{token:?}");
    assert!(!token.contains_key("identity"), "{token:?}");
    assert_eq!(token["refresh_token"], false);
    assert_eq!(token["token_type"], "Bearer");
}

#[test]
fn human_login_output_names_the_steps_without_secrets() {
    let idp = start_idp(ClientAuth::Basic);
    let (dir, path) = store();
    // Without --json, but still with --no-browser: the URL is printed for the user.
    let mut command = latchkey([
        "login",
        "--no-browser",
        "--authorization-endpoint",
        &idp.authorization_endpoint(),
        "--token-endpoint",
        &idp.token_endpoint(),
        "--client-id",
        CLIENT_ID,
        "--redirect-uri",
        REDIRECT_URI,
    ]);
    command.arg("--store").arg(&path);
    pass_secret(&mut command, SecretVia::Env, SECRET, dir.path());
    let mut running = Running::spawn("latchkey", GUARD, command);
    let url = loop {
        let Some(line) = running.next_line() else {
            running.fail("stdout ended before the authorization URL");
        };
        if let Some(url) = line.trim().strip_prefix(&idp.authorization_endpoint()) {
            break format!("{}{url}", idp.authorization_endpoint());
        }
    };
    agent::browse(&url).expect("the user agent's path");
    let finished = running.finish();
    finished.assert_code(0);
    let stdout = finished.stdout_text();
    assert!(stdout.contains("Received Bearer token"), "{stdout}");
    assert!(
        stdout.contains(&format!("Stored the tokens in {}", path.display())),
        "{stdout}"
    );
    let entry = stored_tokens(&path);
    finished.assert_never_shows(&[
        ("access token", &entry_string(&entry, "access_token")),
        ("refresh token", &entry_string(&entry, "refresh_token")),
        ("client secret", SECRET),
    ]);
}

#[test]
fn json_login_listens_on_the_ipv6_loopback_when_asked() {
    if TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, 0)).is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let command = login(&idp, &path, &["--redirect-uri", "http://[::1]:0/callback"]);
    let browsed = login_with_browser(command);
    browsed.finished.assert_code(0);
    assert_eq!(browsed.finished.event_names(), SUCCESS_EVENTS);
    let port = browsed
        .redirect_uri
        .strip_prefix("http://[::1]:")
        .and_then(|rest| rest.strip_suffix("/callback"))
        .and_then(|port| port.parse::<u16>().ok());
    assert!(
        port.is_some_and(|port| port != 0),
        "{}",
        browsed.redirect_uri
    );
}

// ---- 2. latchkey token ----------------------------------------------------------------

/// A token file written by a real login (public client), and its access and refresh token.
fn logged_in() -> (TempDir, PathBuf, String, String) {
    let idp = start_idp(ClientAuth::None);
    let (dir, path) = store();
    let browsed = login_with_browser(login(&idp, &path, &[]));
    browsed.finished.assert_code(0);
    let entry = stored_tokens(&path);
    let access = entry_string(&entry, "access_token");
    let refresh = entry_string(&entry, "refresh_token");
    (dir, path, access, refresh)
}

fn token_command(path: &Path, extra: &[&str]) -> Finished {
    let mut command = latchkey(["token", "--store"]);
    command.arg(path).args(extra);
    run(command)
}

#[test]
fn token_shows_type_expiry_and_refresh_without_the_access_token() {
    let (_dir, path, access, refresh) = logged_in();
    let shown = token_command(&path, &[]);
    shown.assert_code(0);
    let stdout = shown.stdout_text();
    assert!(stdout.contains("Bearer token"), "{stdout}");
    assert!(stdout.contains("expires in 59 min"), "{stdout}");
    assert!(stdout.contains("refresh token"), "{stdout}");
    assert!(stdout.contains("scope: openid profile"), "{stdout}");
    assert!(!stdout.contains("for: "), "{stdout}");
    shown.assert_never_shows(&[("access token", &access), ("refresh token", &refresh)]);
}

#[test]
fn token_reveal_prints_the_access_token_and_only_it() {
    let (_dir, path, access, refresh) = logged_in();
    let shown = token_command(&path, &["--reveal"]);
    shown.assert_code(0);
    // `TOKEN=$(latchkey token --reveal)` gets the token and nothing else.
    assert_eq!(
        shown.stdout,
        std::slice::from_ref(&access),
        "the access token alone on stdout: {}",
        shown.describe()
    );
    assert!(
        shown.stderr.contains("Bearer token"),
        "{}",
        shown.describe()
    );
    shown.assert_never_shows(&[("refresh token", &refresh)]);
}

#[test]
fn token_json_is_one_json_object_with_the_token_only_when_revealed() {
    let (_dir, path, access, refresh) = logged_in();
    let hidden = token_command(&path, &["--json"]);
    hidden.assert_code(0);
    assert_eq!(hidden.stdout.len(), 1, "{}", hidden.describe());
    let summary: Map<String, Value> =
        serde_json::from_str(&hidden.stdout[0]).expect("token --json prints a JSON object");
    assert_eq!(summary["token_type"], "Bearer");
    let expires_at = summary["expires_at"].as_u64().expect("integer expires_at");
    assert!(expires_at > now_unix() + 3500, "{summary:?}");
    assert_eq!(summary["scope"], "openid profile");
    assert_eq!(summary["refresh_token"], true);
    assert!(!summary.contains_key("access_token"), "{summary:?}");
    // No resource was asked for, and the provider named none.
    assert!(!summary.contains_key("audience"), "{summary:?}");
    hidden.assert_never_shows(&[("access token", &access), ("refresh token", &refresh)]);

    let revealed = token_command(&path, &["--json", "--reveal"]);
    revealed.assert_code(0);
    assert_eq!(revealed.stdout.len(), 1, "{}", revealed.describe());
    let summary: Map<String, Value> =
        serde_json::from_str(&revealed.stdout[0]).expect("token --json prints a JSON object");
    assert_eq!(summary["access_token"], access.as_str());
    revealed.assert_never_shows(&[("refresh token", &refresh)]);
}

#[test]
fn token_shows_the_apis_the_access_token_is_for() {
    let (_dir, path) = store();
    let access = "at-audience-5e1f0c";
    let file = serde_json::json!({
        "version": 1,
        "tokens": { "default": {
            "access_token": access,
            "token_type": "Bearer",
            "audience": ["https://api.example.com", "urn:example:billing"],
        } },
    });
    std::fs::write(&path, file.to_string()).expect("writing the token file");

    let shown = token_command(&path, &[]);
    shown.assert_code(0);
    let stdout = shown.stdout_text();
    assert!(
        stdout.contains("\nfor: https://api.example.com, urn:example:billing"),
        "{stdout}"
    );
    shown.assert_never_shows(&[("access token", access)]);

    let json = token_command(&path, &["--json"]);
    json.assert_code(0);
    assert_eq!(json.stdout.len(), 1, "{}", json.describe());
    let summary: Map<String, Value> =
        serde_json::from_str(&json.stdout[0]).expect("token --json prints a JSON object");
    assert_eq!(
        summary["audience"],
        serde_json::json!(["https://api.example.com", "urn:example:billing"])
    );
    json.assert_never_shows(&[("access token", access)]);
}

#[test]
fn token_without_a_token_file_exits_1_and_advises_to_log_in() {
    let (_dir, path) = store();
    let shown = token_command(&path, &[]);
    shown.assert_code(1);
    assert!(
        shown.stderr.contains("latchkey login"),
        "{}",
        shown.describe()
    );
    assert!(!path.exists());
}

#[test]
fn token_with_a_corrupt_token_file_exits_1_without_quoting_it() {
    let (_dir, path) = store();
    let content = "{\"version\":1,\"tokens\": not-json corrupt-secret-77c1";
    std::fs::write(&path, content).expect("writing the token file");
    for extra in [&[][..], &["--reveal"], &["--json"]] {
        let shown = token_command(&path, extra);
        shown.assert_code(1);
        assert!(shown.stderr.contains("corrupt"), "{}", shown.describe());
        shown.assert_never_shows(&[("file content", "corrupt-secret-77c1")]);
    }
}

// ---- 3.–7. failed logins: exit 1 ------------------------------------------------------

/// Asserts a failed login: the events are the success sequence cut short (before
/// `stored`), then one error; nothing was stored.
fn assert_failed_login(finished: &Finished, path: &Path, kind: &str) -> String {
    finished.assert_code(1);
    let message = finished.error(kind);
    let names = finished.event_names();
    let before_error = &names[..names.len() - 1];
    assert!(
        before_error.len() <= 4 && before_error.iter().zip(SUCCESS_EVENTS).all(|(a, b)| a == b),
        "events before the error: {names:?}"
    );
    assert!(!path.exists(), "nothing is stored after a failure");
    message
}

#[test]
fn denied_login_reports_access_denied_and_exits_1() {
    let idp = start_idp(ClientAuth::None);
    idp.set_deny(true);
    let (_dir, path) = store();
    let browsed = login_with_browser(login(&idp, &path, &[]));
    let message = assert_failed_login(&browsed.finished, &path, "access_denied");
    assert!(message.contains("access_denied"), "{message}");
    assert_eq!(idp.stats().token_requests, 0);
}

#[test]
fn issuer_mismatch_is_reported_and_exits_1_without_redeeming_the_code() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let browsed = login_with_browser(login(&idp, &path, &["--issuer", "https://other.example"]));
    let message = assert_failed_login(&browsed.finished, &path, "issuer_mismatch");
    assert!(message.contains("https://other.example"), "{message}");
    assert_eq!(
        idp.stats().token_requests,
        0,
        "a code from the wrong issuer is never sent to the token endpoint"
    );
}

#[test]
fn wrong_client_secret_is_token_rejected_with_invalid_client_and_exits_1() {
    let idp = start_idp(ClientAuth::Basic);
    let (dir, path) = store();
    let wrong = "not-the-secret-5d1e";
    let mut command = login(&idp, &path, &["--auth-method", "basic"]);
    pass_secret(&mut command, SecretVia::Env, wrong, dir.path());
    let browsed = login_with_browser(command);
    let finished = &browsed.finished;
    let message = assert_failed_login(finished, &path, "token_rejected");
    assert!(message.contains("invalid_client"), "{message}");
    finished.assert_never_shows(&[("client secret", wrong)]);
}

#[test]
fn unreachable_token_endpoint_is_a_transport_error_and_exits_1() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let token_endpoint = format!("http://127.0.0.1:{}/token", closed_port());
    let browsed = login_with_browser(login(&idp, &path, &["--token-endpoint", &token_endpoint]));
    assert_failed_login(&browsed.finished, &path, "transport");
}

/// `--timeout 1` while the browser never comes back: a `timeout` error within ~3 s.
fn assert_login_times_out_waiting_for_the_browser(runtime: &str) {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let command = login(&idp, &path, &["--timeout", "1", "--runtime", runtime]);
    let finished = login_playing(command, never_browse).finished;
    assert_failed_login(&finished, &path, "timeout");
    assert!(
        finished.elapsed < Duration::from_secs(3),
        "timed out after {:?}",
        finished.elapsed
    );
    assert_eq!(idp.stats().authorize_requests, 0);
}

#[test]
fn login_times_out_when_the_browser_never_comes_back() {
    assert_login_times_out_waiting_for_the_browser("smol");
}

#[test]
fn login_times_out_when_the_browser_never_comes_back_on_tokio() {
    assert_login_times_out_waiting_for_the_browser("tokio");
}

#[test]
fn login_times_out_when_the_token_endpoint_never_answers() {
    // --timeout bounds the whole login, the code exchange included.
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let token_endpoint = fake_token_endpoint(None);
    let command = login(
        &idp,
        &path,
        &["--timeout", "2", "--token-endpoint", &token_endpoint],
    );
    let browsed = login_playing(command, |_, url| {
        // The callback's answer waits for the exchange; do not wait for it here.
        let url = url.to_owned();
        thread::spawn(move || agent::browse(&url));
        Ok(Vec::new())
    });
    let finished = &browsed.finished;
    assert_failed_login(finished, &path, "timeout");
    assert!(
        finished.elapsed < Duration::from_secs(4),
        "timed out after {:?}",
        finished.elapsed
    );
}

#[test]
fn unusable_token_response_is_an_invalid_response_and_exits_1() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let token_endpoint = fake_token_endpoint(Some(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 19\r\n\
         Connection: close\r\n\r\n<html>hello</html>\n",
    ));
    let browsed = login_with_browser(login(&idp, &path, &["--token-endpoint", &token_endpoint]));
    assert_failed_login(&browsed.finished, &path, "invalid_response");
}

#[test]
fn unwritable_store_is_a_store_error_and_exits_1() {
    let idp = start_idp(ClientAuth::None);
    let (dir, _) = store();
    // The token file's parent "directory" is a regular file.
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "").expect("writing a file");
    let path = blocker.join("tokens.json");
    // Found before the browser is sent anywhere: the user signs in for nothing otherwise.
    let finished = run(login(&idp, &path, &[]));
    let message = assert_failed_login(&finished, &path, "store");
    assert_eq!(finished.event_names(), ["error"]);
    assert!(message.contains("not-a-directory"), "{message}");
}

#[test]
fn a_forged_callback_with_the_wrong_state_does_not_end_the_login() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let browsed = login_playing(login(&idp, &path, &[]), |redirect_uri, url| {
        // Another page fires a request at the listener first.
        let forged = format!("{redirect_uri}?code=forged-code&state=forged-state");
        let (status, _, _) = agent::get(&forged, &[])?;
        assert!(status >= 400, "a forged callback got {status}");
        agent::browse(url)
    });
    let finished = &browsed.finished;
    finished.assert_code(0);
    assert_eq!(
        finished.event_names(),
        SUCCESS_EVENTS,
        "{}",
        finished.describe()
    );
    assert!(path.is_file());
}

#[test]
fn store_creates_missing_directories_privately() {
    let idp = start_idp(ClientAuth::None);
    let (dir, _) = store();
    let path = dir
        .path()
        .join("config")
        .join("latchkey")
        .join("tokens.json");
    let browsed = login_with_browser(login(&idp, &path, &[]));
    browsed.finished.assert_code(0);
    assert_private(&path);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let parent = path.parent().expect("parent directory");
        let mode = std::fs::metadata(parent)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "directory mode {:o}", mode & 0o7777);
    }
}

/// Ctrl-C while waiting for the browser: the `cancelled` error event and exit 1.
#[cfg(unix)]
#[test]
fn interrupted_login_reports_cancelled_and_exits_1() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let mut running = Running::spawn("latchkey", GUARD, login(&idp, &path, &[]));
    running.expect_event("listening");
    running.expect_event("authorize");
    let pid = lock(&running.child).id().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("running kill");
    assert!(sent.success(), "sending SIGINT to {pid}");
    let finished = running.finish();
    assert_failed_login(&finished, &path, "cancelled");
    assert!(
        finished.elapsed < Duration::from_secs(5),
        "took {:?}",
        finished.elapsed
    );
}

// ---- 8. usage and configuration errors: exit 2 ----------------------------------------

/// Asserts a usage error caught while parsing: exit 2, the reason and usage on stderr,
/// nothing on stdout.
fn assert_usage_error(finished: &Finished, mentions: &str) {
    finished.assert_code(2);
    assert!(finished.stdout.is_empty(), "{}", finished.describe());
    assert!(
        finished.stderr.contains(mentions) && finished.stderr.contains("USAGE"),
        "{}",
        finished.describe()
    );
}

/// Asserts a configuration error in `--json` mode: exit 2, quickly, and a single `config`
/// error event (no listener was announced); returns its message.
fn assert_config_error(finished: &Finished) -> String {
    finished.assert_code(2);
    assert_eq!(finished.event_names(), ["error"], "{}", finished.describe());
    assert!(
        finished.elapsed < Duration::from_secs(5),
        "took {:?}",
        finished.elapsed
    );
    finished.error("config")
}

#[test]
fn missing_client_id_is_a_usage_error() {
    let finished = run(latchkey([
        "login",
        "--json",
        "--authorization-endpoint",
        "http://127.0.0.1:1/authorize",
        "--token-endpoint",
        "http://127.0.0.1:1/token",
    ]));
    assert_usage_error(&finished, "--client-id");
}

#[test]
fn client_secret_on_the_command_line_is_refused_without_echoing_it() {
    for secret in [
        &["--client-secret", "hunter2"][..],
        &["--client-secret=hunter2"],
    ] {
        let mut command = latchkey([
            "login",
            "--json",
            "--authorization-endpoint",
            "http://127.0.0.1:1/authorize",
            "--token-endpoint",
            "http://127.0.0.1:1/token",
            "--client-id",
            CLIENT_ID,
        ]);
        command.args(secret);
        let finished = run(command);
        assert_usage_error(&finished, "--client-secret-env");
        finished.assert_never_shows(&[("secret", "hunter2")]);
    }
}

#[test]
fn malformed_arguments_are_usage_errors() {
    for (args, mentions) in [
        (&["frobnicate"][..], "unknown command"),
        (&["login", "--no-such-option"], "--no-such-option"),
        (&["login", "--timeout", "soon"], "soon"),
        (&["login", "--runtime", "async-std"], "smol or tokio"),
        (&["login", "--param", "no-equals-sign"], "KEY=VALUE"),
        (&["token", "--revel"], "--revel"),
        (&["demo", "--runtime", "rayon"], "smol or tokio"),
    ] {
        let finished = run(latchkey(args));
        assert_usage_error(&finished, mentions);
    }
}

#[test]
fn unknown_auth_method_is_a_config_error() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let finished = run(login(&idp, &path, &["--auth-method", "bogus"]));
    let message = assert_config_error(&finished);
    assert!(message.contains("bogus"), "{message}");
}

#[test]
fn https_redirect_uri_is_a_config_error() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let finished = run(login(
        &idp,
        &path,
        &["--redirect-uri", "https://example.com/cb"],
    ));
    assert_config_error(&finished);
}

#[test]
fn unset_secret_variable_and_unreadable_secret_file_are_config_errors() {
    let idp = start_idp(ClientAuth::Basic);
    let (dir, path) = store();
    let missing_file = dir.path().join("no-such-secret");
    let missing_file = missing_file.to_str().expect("UTF-8 temporary path");
    for extra in [
        ["--client-secret-env", "LATCHKEY_CLI_TEST_UNSET_VARIABLE"],
        ["--client-secret-file", missing_file],
    ] {
        let finished = run(login(&idp, &path, &extra));
        assert_config_error(&finished);
    }
}

#[test]
fn redirect_port_in_use_is_a_config_error() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a port");
    let port = taken.local_addr().expect("local address").port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let finished = run(login(&idp, &path, &["--redirect-uri", &redirect_uri]));
    let message = assert_config_error(&finished);
    assert!(message.contains(&port.to_string()), "{message}");
    drop(taken);
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a port");
    listener.local_addr().expect("local address").port()
}

#[test]
fn repeated_redirect_uris_fall_back_to_the_first_port_that_can_be_bound() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let taken: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a port"))
        .collect();
    let mut uris: Vec<String> = taken
        .iter()
        .map(|listener| {
            let port = listener.local_addr().expect("local address").port();
            format!("http://127.0.0.1:{port}/callback")
        })
        .collect();
    let free = free_port();
    uris.push(format!("http://127.0.0.1:{free}/callback"));
    uris.push(format!("http://127.0.0.1:{}/callback", free_port()));
    let mut extra = Vec::new();
    for uri in &uris {
        extra.extend(["--redirect-uri", uri.as_str()]);
    }
    let browsed = login_with_browser(login(&idp, &path, &extra));
    browsed.finished.assert_code(0);
    assert_eq!(browsed.finished.event_names(), SUCCESS_EVENTS);
    assert_eq!(
        browsed.redirect_uri, uris[2],
        "the first free one, in order"
    );
    assert!(
        browsed.url.contains(&format!("127.0.0.1%3A{free}")),
        "{}",
        browsed.url
    );
    drop(taken);
}

#[test]
fn no_bindable_redirect_uri_is_a_config_error_naming_every_port() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let taken: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a port"))
        .collect();
    let ports: Vec<u16> = taken
        .iter()
        .map(|listener| listener.local_addr().expect("local address").port())
        .collect();
    let uris: Vec<String> = ports
        .iter()
        .map(|port| format!("http://127.0.0.1:{port}/callback"))
        .collect();
    let mut extra = Vec::new();
    for uri in &uris {
        extra.extend(["--redirect-uri", uri.as_str()]);
    }
    let finished = run(login(&idp, &path, &extra));
    let message = assert_config_error(&finished);
    for port in ports {
        assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    }
    assert!(message.contains("--redirect-uri"), "{message}");
    assert_eq!(
        finished.event_names(),
        ["error"],
        "no browser was sent anywhere"
    );
    drop(taken);
}

// ---- 9. latchkey demo -----------------------------------------------------------------

fn assert_demo_completes(extra: &[&str]) {
    let mut command = latchkey(["demo"]);
    command.args(extra);
    let running = Running::spawn("latchkey", GUARD, command);
    let pid = lock(&running.child).id();
    let finished = running.finish();
    finished.assert_code(0);
    let stdout = finished.stdout_text();
    assert!(
        finished
            .stdout
            .iter()
            .any(|line| line.contains("-> 303 docker-desktop://dashboard/open")),
        "{stdout}"
    );
    assert!(
        finished.stdout.iter().any(|line| line.contains("0600")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("code=") && !stdout.contains("state="),
        "the demo redacts codes and states: {stdout}"
    );
    // The demo's token file does not outlive it.
    let workdir = std::env::temp_dir().join(format!("latchkey-demo-{pid}"));
    assert!(!workdir.exists(), "{} left behind", workdir.display());
}

#[test]
fn demo_completes_a_login_on_smol() {
    assert_demo_completes(&[]);
}

#[test]
fn demo_completes_a_login_on_tokio() {
    assert_demo_completes(&["--runtime", "tokio"]);
}

// ---- 10. --then -----------------------------------------------------------------------

#[test]
fn then_sends_the_browser_to_the_landing_url_after_success() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let browsed = login_with_browser(login(&idp, &path, &["--then", LANDING]));
    browsed.finished.assert_code(0);
    assert_eq!(browsed.finished.event_names(), SUCCESS_EVENTS);
    let hops = browsed.hops.expect("the user agent's path");
    let last = hops.last().expect("at least one hop");
    assert!(last.url.starts_with(&browsed.redirect_uri), "{hops:?}");
    assert_eq!(last.status, 303, "{hops:?}");
    assert_eq!(last.location.as_deref(), Some(LANDING), "{hops:?}");
}

#[test]
fn then_is_not_followed_after_a_denial() {
    let idp = start_idp(ClientAuth::None);
    idp.set_deny(true);
    let (_dir, path) = store();
    let browsed = login_with_browser(login(&idp, &path, &["--then", LANDING]));
    assert_failed_login(&browsed.finished, &path, "access_denied");
    let hops = browsed.hops.expect("the user agent's path");
    let last = hops.last().expect("at least one hop");
    assert!(last.url.starts_with(&browsed.redirect_uri), "{hops:?}");
    assert_ne!(last.location.as_deref(), Some(LANDING), "{hops:?}");
}

// ---- 11. discovery, presets, refresh, logout, token --fresh, -v -------------------------

/// `latchkey login --json` against `idp` named by its issuer alone (discovery).
fn login_discovering(idp: &DevIdp, store: &Path, extra: &[&str]) -> Command {
    let mut command = latchkey([
        "login",
        "--json",
        "--no-browser",
        "--no-device",
        "--issuer",
        &idp.issuer(),
        "--client-id",
        CLIENT_ID,
        "--redirect-uri",
        REDIRECT_URI,
        "--scope",
        "openid",
    ]);
    command.arg("--store").arg(store).args(extra);
    command
}

/// A confidential client logged in through discovery: the identity provider, the token
/// directory and path.
fn discovered_login() -> (DevIdp, TempDir, PathBuf) {
    discovered_login_at(start_idp(ClientAuth::Basic))
}

/// [`discovered_login`] at `idp`.
fn discovered_login_at(idp: DevIdp) -> (DevIdp, TempDir, PathBuf) {
    let (dir, path) = store();
    let mut command = login_discovering(&idp, &path, &[]);
    pass_secret(&mut command, SecretVia::Env, SECRET, dir.path());
    let browsed = login_with_browser(command);
    browsed.finished.assert_code(0);
    assert_eq!(browsed.finished.event_names(), SUCCESS_EVENTS);
    (idp, dir, path)
}

/// `latchkey SUBCOMMAND --json --store PATH`, the secret passed as `via`.
fn session(subcommand: &str, path: &Path, via: SecretVia, extra: &[&str]) -> Finished {
    let mut command = latchkey([subcommand, "--json"]);
    command.arg("--store").arg(path).args(extra);
    let dir = path.parent().expect("the store is in a directory");
    pass_secret(&mut command, via, SECRET, dir);
    run(command)
}

/// The provider record in the token file at `path`.
fn stored_provider(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("reading the token file");
    let file: Value = serde_json::from_str(&text).expect("the token file is JSON");
    file["providers"]["default"].clone()
}

#[test]
fn login_with_the_issuer_alone_discovers_the_endpoints_and_records_them_without_the_secret() {
    let (idp, _dir, path) = discovered_login();
    let record = stored_provider(&path);
    assert_eq!(record["issuer"], idp.issuer());
    assert_eq!(record["token_endpoint"], idp.token_endpoint());
    assert_eq!(record["revocation_endpoint"], idp.revocation_endpoint());
    assert_eq!(
        record["authorization_endpoint"],
        idp.authorization_endpoint()
    );
    assert_eq!(record["client_id"], CLIENT_ID);
    assert_eq!(record["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(record["scopes"], serde_json::json!(["openid"]));
    let file = std::fs::read_to_string(&path).expect("reading the token file");
    assert!(!file.contains(SECRET), "the client secret is never stored");
}

#[test]
fn discovery_from_an_issuer_that_does_not_answer_is_a_discovery_error() {
    let (_dir, path) = store();
    let issuer = format!("http://127.0.0.1:{}", closed_port());
    let finished = run(latchkey([
        "login",
        "--json",
        "--no-browser",
        "--issuer",
        &issuer,
        "--client-id",
        CLIENT_ID,
        "--store",
        path.to_str().expect("UTF-8 path"),
    ]));
    finished.assert_code(1);
    let message = finished.error("discovery");
    assert!(message.contains("--issuer"), "{message}");
    assert!(!path.exists());
}

/// Starts a login with `--provider …` and returns the authorization URL it announced
/// (the login then times out: nobody plays the browser, and no real provider is reached).
fn preset_authorization_url(preset: &[&str]) -> String {
    let (_dir, path) = store();
    let mut command = latchkey([
        "login",
        "--json",
        "--no-browser",
        "--no-device",
        "--timeout",
        "1",
    ]);
    command
        .args(["--client-id", CLIENT_ID, "--redirect-uri", REDIRECT_URI])
        .args(preset)
        .arg("--store")
        .arg(&path);
    let browsed = login_playing(command, never_browse);
    browsed.finished.assert_code(1);
    browsed.url
}

#[test]
fn login_with_a_preset_sends_the_browser_to_that_providers_endpoint() {
    let google = preset_authorization_url(&["--provider", "google", "--scope", "openid"]);
    assert!(
        google.starts_with("https://accounts.google.com/o/oauth2/v2/auth?"),
        "{google}"
    );
    assert_eq!(
        query_param(&google, "access_type").as_deref(),
        Some("offline")
    );
    let entra = preset_authorization_url(&["--provider", "entra", "--tenant", "contoso.com"]);
    assert!(
        entra.starts_with("https://login.microsoftonline.com/contoso.com/oauth2/v2.0/authorize?"),
        "{entra}"
    );
    let keycloak = preset_authorization_url(&[
        "--provider",
        "keycloak",
        "--base-url",
        "https://sso.example.com/",
        "--realm",
        "team",
    ]);
    assert!(
        keycloak.starts_with("https://sso.example.com/realms/team/protocol/openid-connect/auth?"),
        "{keycloak}"
    );
}

fn assert_refresh_rotates_with_only_the_store_and_the_secret(runtime: &str, via: SecretVia) {
    let (idp, _dir, path) = discovered_login();
    let before = stored_tokens(&path);
    let refreshed = session("refresh", &path, via, &["--runtime", runtime]);
    refreshed.assert_code(0);
    assert_eq!(
        refreshed.event_names(),
        ["token", "stored"],
        "{}",
        refreshed.describe()
    );
    let after = stored_tokens(&path);
    let access = entry_string(&after, "access_token");
    let refresh = entry_string(&after, "refresh_token");
    assert_ne!(access, entry_string(&before, "access_token"));
    assert_ne!(refresh, entry_string(&before, "refresh_token"));
    assert!(
        idp.access_token_active(&access),
        "the fresh token is the provider's"
    );
    refreshed.assert_never_shows(&[
        ("access token", &access),
        ("refresh token", &refresh),
        ("client secret", SECRET),
    ]);
    assert_eq!(
        stored_provider(&path)["client_id"],
        CLIENT_ID,
        "the record stays"
    );
}

#[test]
fn refresh_on_smol_rotates_the_tokens_with_only_the_store_and_the_secret() {
    assert_refresh_rotates_with_only_the_store_and_the_secret("smol", SecretVia::Env);
}

#[test]
fn refresh_on_tokio_rotates_the_tokens_with_only_the_store_and_the_secret_file() {
    assert_refresh_rotates_with_only_the_store_and_the_secret("tokio", SecretVia::File);
}

#[test]
fn refresh_of_a_confidential_client_without_its_secret_is_a_config_error_that_keeps_the_tokens() {
    let (_idp, _dir, path) = discovered_login();
    let before = std::fs::read(&path).expect("reading the token file");
    let refreshed = session("refresh", &path, SecretVia::Nothing, &[]);
    refreshed.assert_code(2);
    let message = refreshed.error("config");
    assert!(message.contains("--client-secret-env"), "{message}");
    assert_eq!(
        std::fs::read(&path).expect("reading the token file"),
        before
    );
}

#[test]
fn s42_refresh_with_a_rotated_out_refresh_token_is_login_required_and_deletes_the_tokens() {
    let (idp, _dir, path) = discovered_login();
    let old_file = std::fs::read(&path).expect("reading the token file");
    session("refresh", &path, SecretVia::Env, &[]).assert_code(0);
    let rotated = entry_string(&stored_tokens(&path), "access_token");
    // Another copy of the old file (a backup, a second machine) replays the old token.
    std::fs::write(&path, &old_file).expect("restoring the old file");
    let replayed = session("refresh", &path, SecretVia::Env, &[]);
    replayed.assert_code(1);
    let message = replayed.error("login_required");
    assert!(message.contains("latchkey login"), "{message}");
    assert!(!path.exists(), "the dead tokens are deleted");
    assert!(
        !idp.access_token_active(&rotated),
        "the provider revoked the grant on the replay"
    );
    let again = session("refresh", &path, SecretVia::Env, &[]);
    again.assert_code(1);
    again.error("login_required");
}

#[test]
fn s44_logout_revokes_both_tokens_at_the_provider_and_deletes_them() {
    let (idp, _dir, path) = discovered_login();
    let access = entry_string(&stored_tokens(&path), "access_token");
    let finished = session("logout", &path, SecretVia::File, &["--runtime", "tokio"]);
    finished.assert_code(0);
    assert_eq!(
        finished.event_names(),
        ["revoked", "revoked", "logged_out"],
        "{}",
        finished.describe()
    );
    let events = finished.events();
    assert_eq!(events[0]["token"], "refresh_token");
    assert_eq!(events[1]["token"], "access_token");
    assert_eq!(events[2]["had_tokens"], true);
    assert!(!path.exists());
    assert!(!idp.access_token_active(&access));
    // Logging out again finds nothing and still succeeds.
    let again = session("logout", &path, SecretVia::File, &[]);
    again.assert_code(0);
    assert_eq!(again.event_names(), ["logged_out"]);
    assert_eq!(again.events()[0]["had_tokens"], false);
}

/// django-oauth-toolkit lists its revocation endpoint only in the RFC 8414 document, not
/// the OpenID Connect one: discovery reads both (S9 in each), so a login from the issuer
/// alone records it, and logging out revokes there.
#[test]
fn s9_s44_a_revocation_endpoint_only_rfc8414_lists_is_found_and_logout_revokes_there() {
    let idp = start_idp_with(ClientAuth::Basic, |config| {
        config.revocation_only_in_oauth_metadata = true;
    });
    let (idp, _dir, path) = discovered_login_at(idp);
    assert_eq!(
        stored_provider(&path)["revocation_endpoint"],
        idp.revocation_endpoint()
    );
    let access = entry_string(&stored_tokens(&path), "access_token");
    let finished = session("logout", &path, SecretVia::Env, &[]);
    finished.assert_code(0);
    assert_eq!(
        finished.event_names(),
        ["revoked", "revoked", "logged_out"],
        "{}",
        finished.describe()
    );
    assert!(!idp.access_token_active(&access));
}

#[test]
fn s44_logout_without_a_revocation_endpoint_deletes_the_tokens_and_says_nothing_was_revoked() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    login_with_browser(login(&idp, &path, &[]))
        .finished
        .assert_code(0);
    let access = entry_string(&stored_tokens(&path), "access_token");
    let finished = session("logout", &path, SecretVia::Nothing, &[]);
    finished.assert_code(0);
    assert_eq!(finished.event_names(), ["not_revoked", "logged_out"]);
    assert!(!path.exists());
    assert!(
        idp.access_token_active(&access),
        "nothing was sent to the provider"
    );
}

#[test]
fn s44_a_failed_revocation_still_deletes_the_tokens_is_reported_and_exits_1() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let unreachable = format!("http://127.0.0.1:{}/revoke", closed_port());
    let command = login(&idp, &path, &["--revocation-endpoint", &unreachable]);
    login_with_browser(command).finished.assert_code(0);
    let finished = session("logout", &path, SecretVia::Nothing, &[]);
    finished.assert_code(1);
    assert_eq!(
        finished.event_names(),
        ["revocation_failed", "revocation_failed", "logged_out"],
        "{}",
        finished.describe()
    );
    assert!(!path.exists(), "deleted here whatever the provider said");
}

/// The one JSON object `latchkey token --json` prints.
fn shown_tokens(finished: &Finished) -> Value {
    serde_json::from_str(&finished.stdout_text())
        .unwrap_or_else(|_| panic!("one JSON object: {}", finished.describe()))
}

#[test]
fn token_fresh_refreshes_only_within_the_margin() {
    let (_idp, _dir, path) = discovered_login();
    let first = stored_tokens(&path);
    let still_valid = session("token", &path, SecretVia::Env, &["--fresh", "--reveal"]);
    still_valid.assert_code(0);
    let shown = &shown_tokens(&still_valid);
    assert_eq!(shown["refreshed"], false, "{}", still_valid.describe());
    assert_eq!(shown["access_token"], first["access_token"]);
    // The tokens live an hour: a two-hour margin makes them due.
    let due = session(
        "token",
        &path,
        SecretVia::Env,
        &["--fresh", "--margin", "7200", "--reveal"],
    );
    due.assert_code(0);
    let shown = &shown_tokens(&due);
    assert_eq!(shown["refreshed"], true, "{}", due.describe());
    let stored = stored_tokens(&path);
    assert_eq!(shown["access_token"], stored["access_token"]);
    assert_ne!(stored["refresh_token"], first["refresh_token"]);
}

#[test]
fn verbose_commands_log_each_step_to_stderr_and_never_a_secret() {
    let idp = start_idp(ClientAuth::Basic);
    let (dir, path) = store();
    let mut command = login_discovering(&idp, &path, &["-vv"]);
    pass_secret(&mut command, SecretVia::Env, SECRET, dir.path());
    let browsed = login_with_browser(command);
    let finished = &browsed.finished;
    finished.assert_code(0);
    let stderr = &finished.stderr;
    for step in [
        "provider metadata accepted",
        "login started",
        "callback accepted; requesting tokens",
        "token endpoint answered",
        "tokens stored",
        "login finished",
        // -vv: the engine's own events too.
        "flow moved on",
    ] {
        assert!(stderr.contains(step), "no {step:?} in:\n{stderr}");
    }
    let hops = browsed.hops.as_ref().expect("the user agent's path");
    let callback = hops
        .iter()
        .find(|hop| hop.url.starts_with(&browsed.redirect_uri))
        .expect("the browser reached the callback");
    let code = query_param(&callback.url, "code").expect("a code");
    let state = query_param(&browsed.url, "state").expect("a state");
    let before = stored_tokens(&path);

    let refreshed = session("refresh", &path, SecretVia::Env, &["-v"]);
    refreshed.assert_code(0);
    assert!(
        refreshed.stderr.contains("tokens refreshed"),
        "{}",
        refreshed.stderr
    );
    let after = stored_tokens(&path);
    let logged_out = session("logout", &path, SecretVia::Env, &["-v"]);
    logged_out.assert_code(0);
    assert!(
        logged_out.stderr.contains("token revoked"),
        "{}",
        logged_out.stderr
    );

    for run in [finished, &refreshed, &logged_out] {
        assert!(!run.stderr.contains(&state), "state in:\n{}", run.stderr);
        run.assert_never_shows(&[
            ("client secret", SECRET),
            ("authorization code", &code),
            ("access token", &entry_string(&before, "access_token")),
            ("refresh token", &entry_string(&before, "refresh_token")),
            (
                "refreshed access token",
                &entry_string(&after, "access_token"),
            ),
            (
                "refreshed refresh token",
                &entry_string(&after, "refresh_token"),
            ),
        ]);
    }
}

// ---- 12. ID token verification ----------------------------------------------------------

/// The development identity provider's user as an `identity` member shows it.
fn dev_user_identity(idp: &DevIdp) -> Value {
    serde_json::json!({
        "iss": idp.issuer(),
        "sub": "dev-user",
        "email": "dev-user@example.com",
        "email_verified": true,
        "name": "Dev User dev-user",
        "preferred_username": "dev-user",
    })
}

/// What people are told after a verified login of the development user.
const SIGNED_IN: &str = "Signed in as dev-user@example.com";

/// `latchkey login` against `idp`'s endpoints and issuer as a public client, scopes
/// `openid profile`, no browser, storing in `store`; `--json` when `json`, `--jwks-uri`
/// when `jwks`; `extra` adds options.
fn openid_login(idp: &DevIdp, store: &Path, json: bool, jwks: bool, extra: &[&str]) -> Command {
    let mut command = latchkey([
        "login",
        "--no-browser",
        "--authorization-endpoint",
        &idp.authorization_endpoint(),
        "--token-endpoint",
        &idp.token_endpoint(),
        "--issuer",
        &idp.issuer(),
        "--client-id",
        CLIENT_ID,
        "--redirect-uri",
        REDIRECT_URI,
        "--scope",
        "openid",
        "--scope",
        "profile",
    ]);
    if json {
        command.arg("--json");
    }
    if jwks {
        command.args(["--jwks-uri", &idp.jwks_uri()]);
    }
    command.arg("--store").arg(store).args(extra);
    command
}

/// Runs a login without `--json` at `idp`: reads stdout until it prints the authorization
/// URL, plays the browser there, then waits for the end.
fn human_login(idp: &DevIdp, command: Command) -> Finished {
    let mut running = Running::spawn("latchkey", GUARD, command);
    let url = loop {
        let Some(line) = running.next_line() else {
            running.fail("stdout ended before the authorization URL");
        };
        if let Some(url) = line.trim().strip_prefix(&idp.authorization_endpoint()) {
            break format!("{}{url}", idp.authorization_endpoint());
        }
    };
    agent::browse(&url).expect("the user agent's path");
    running.finish()
}

/// Whether `finished` printed exactly `line` on stdout.
fn printed_line(finished: &Finished, line: &str) -> bool {
    finished
        .stdout
        .iter()
        .any(|printed| printed.trim_end() == line)
}

/// The `token` event of a successful `--json` login.
fn token_event(finished: &Finished) -> Map<String, Value> {
    finished
        .events()
        .into_iter()
        .find(|event| event["event"] == "token")
        .unwrap_or_else(|| panic!("no token event: {}", finished.describe()))
}

/// Asserts that the token file at `path` holds no tokens; it need not exist at all.
fn assert_no_tokens(path: &Path) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
        Err(error) => panic!("reading the token file {}: {error}", path.display()),
    };
    let file: Value = serde_json::from_str(&text).expect("the token file is JSON");
    match &file["tokens"] {
        Value::Null => {}
        Value::Object(tokens) => assert!(
            tokens.is_empty(),
            "tokens were stored although the ID token was refused: {:?}",
            tokens.keys().collect::<Vec<_>>()
        ),
        other => panic!("the token file's tokens are not an object: {other}"),
    }
}

/// Asserts a `--json` login refused for its ID token: exit 1, the events up to `callback`
/// and then exactly one `id_token_invalid` error, no tokens stored, the code redeemed
/// exactly once. Returns the error's message.
fn assert_id_token_refused(idp: &DevIdp, finished: &Finished, path: &Path) -> String {
    finished.assert_code(1);
    let message = finished.error("id_token_invalid");
    assert_eq!(
        finished.event_names(),
        ["listening", "authorize", "callback", "error"],
        "a refused token is neither reported nor stored: {}",
        finished.describe()
    );
    assert_no_tokens(path);
    assert_eq!(
        idp.stats().token_requests,
        1,
        "the code is exchanged exactly once: {}",
        finished.describe()
    );
    message
}

/// The word each forged ID token's refusal must name.
const REFUSAL_REASONS: [(Forgery, &str); 9] = [
    (Forgery::Signature, "signature"),
    (Forgery::AlgNone, "algorithm"),
    (Forgery::UnknownKey, "key"),
    (Forgery::Issuer, "issuer"),
    (Forgery::Audience, "audience"),
    (Forgery::Expired, "expired"),
    (Forgery::NotYetValid, "not yet valid"),
    (Forgery::Nonce, "nonce"),
    (Forgery::AccessTokenHash, "at_hash"),
];

/// A login on `runtime` whose ID token is forged to fail `forgery`'s check: refused, and
/// the message names that reason and no other.
fn assert_forged_id_token_refused(forgery: Forgery, runtime: &str) {
    let (_, reason) = REFUSAL_REASONS
        .into_iter()
        .find(|(forged, _)| *forged == forgery)
        .expect("a reason for every forgery tested");
    let idp = start_idp(ClientAuth::None);
    idp.set_forgery(Some(forgery));
    let (_dir, path) = store();
    let browsed = login_with_browser(login(&idp, &path, &["--runtime", runtime]));
    let message = assert_id_token_refused(&idp, &browsed.finished, &path);
    let lower = message.to_lowercase();
    assert!(
        lower.contains(reason),
        "{forgery:?}: the message does not name {reason:?}: {message}"
    );
    // "key" may well appear next to another reason; every other word names another check.
    for (other, word) in REFUSAL_REASONS {
        if other != forgery && word != "key" {
            assert!(
                !lower.contains(word),
                "{forgery:?}: the message names {word:?} too: {message}"
            );
        }
    }
}

#[test]
fn s47_an_id_token_with_a_broken_signature_is_refused_and_nothing_is_stored() {
    assert_forged_id_token_refused(Forgery::Signature, "smol");
}

#[test]
fn s46_an_unsigned_id_token_alg_none_is_refused_for_its_algorithm() {
    assert_forged_id_token_refused(Forgery::AlgNone, "tokio");
}

#[test]
fn s47_an_id_token_signed_by_an_unpublished_key_is_refused_for_its_key() {
    assert_forged_id_token_refused(Forgery::UnknownKey, "tokio");
}

#[test]
fn s48_an_id_token_of_another_issuer_is_refused() {
    assert_forged_id_token_refused(Forgery::Issuer, "smol");
}

#[test]
fn s48_an_id_token_for_another_client_is_refused_for_its_audience() {
    assert_forged_id_token_refused(Forgery::Audience, "smol");
}

#[test]
fn an_expired_id_token_is_refused() {
    assert_forged_id_token_refused(Forgery::Expired, "smol");
}

#[test]
fn an_id_token_not_yet_valid_is_refused() {
    assert_forged_id_token_refused(Forgery::NotYetValid, "tokio");
}

#[test]
fn s48_an_id_token_with_another_logins_nonce_is_refused() {
    assert_forged_id_token_refused(Forgery::Nonce, "smol");
}

#[test]
fn an_id_token_whose_at_hash_is_of_another_access_token_is_refused() {
    assert_forged_id_token_refused(Forgery::AccessTokenHash, "smol");
}

#[test]
fn token_shows_the_identity_the_verified_login_recorded() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let browsed = login_with_browser(login(&idp, &path, &[]));
    browsed.finished.assert_code(0);
    let identity = token_event(&browsed.finished)["identity"].clone();
    assert_eq!(identity, dev_user_identity(&idp));

    let shown = token_command(&path, &["--json"]);
    shown.assert_code(0);
    assert_eq!(
        shown_tokens(&shown)["identity"],
        identity,
        "{}",
        shown.describe()
    );

    let shown = token_command(&path, &[]);
    shown.assert_code(0);
    assert!(printed_line(&shown, SIGNED_IN), "{}", shown.describe());
}

#[test]
fn human_login_says_who_signed_in() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let finished = human_login(&idp, openid_login(&idp, &path, false, true, &[]));
    finished.assert_code(0);
    assert!(
        printed_line(&finished, SIGNED_IN),
        "{}",
        finished.describe()
    );
    assert!(
        !finished.stderr.contains("WARNING"),
        "a verified login warns of nothing: {}",
        finished.describe()
    );
    stored_tokens(&path);
}

#[test]
fn no_verify_id_token_warns_first_in_json_and_records_no_identity() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let command = login(&idp, &path, &["--no-verify-id-token"]);
    let mut running = Running::spawn("latchkey", GUARD, command);
    let warning = running.expect_event("warning");
    running.expect_event("listening");
    let authorize = running.expect_event("authorize");
    let url = authorize["url"]
        .as_str()
        .expect("url is a string")
        .to_owned();
    agent::browse(&url).expect("the user agent's path");
    let finished = running.finish();
    finished.assert_code(0);
    assert_eq!(warning["kind"], "id_token_unverified", "{warning:?}");
    let message = warning["message"].as_str().unwrap_or_default();
    assert!(
        message.to_lowercase().contains("not verified"),
        "the warning says what is not done: {message:?}"
    );
    let mut expected = vec!["warning"];
    expected.extend(SUCCESS_EVENTS);
    assert_eq!(finished.event_names(), expected, "{}", finished.describe());
    let token = token_event(&finished);
    assert!(!token.contains_key("identity"), "{token:?}");
    stored_tokens(&path);

    let shown = token_command(&path, &["--json"]);
    shown.assert_code(0);
    assert!(
        shown_tokens(&shown).get("identity").is_none(),
        "{}",
        shown.describe()
    );
}

#[test]
fn no_verify_id_token_warns_people_on_stderr_and_needs_no_key_set() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    // No --jwks-uri: the rare provider that needs --no-verify-id-token has none.
    let command = openid_login(&idp, &path, false, false, &["--no-verify-id-token"]);
    let finished = human_login(&idp, command);
    finished.assert_code(0);
    assert!(
        finished
            .stderr
            .lines()
            .any(|line| line.starts_with("WARNING:")),
        "{}",
        finished.describe()
    );
    assert!(
        !finished.stdout_text().contains("Signed in as"),
        "nobody's identity is known: {}",
        finished.describe()
    );
    stored_tokens(&path);
}

/// A development identity provider that signs ID tokens with ES256.
fn start_es256_idp() -> DevIdp {
    start_idp_with(ClientAuth::None, |config| {
        config.id_token_alg = IdTokenAlg::ES256;
    })
}

#[test]
fn s46_an_es256_id_token_verifies_when_discovery_lists_es256() {
    let idp = start_es256_idp();
    let (_dir, path) = store();
    let browsed = login_with_browser(login_discovering(&idp, &path, &[]));
    let finished = &browsed.finished;
    finished.assert_code(0);
    assert_eq!(
        finished.event_names(),
        SUCCESS_EVENTS,
        "{}",
        finished.describe()
    );
    assert_eq!(token_event(finished)["identity"], dev_user_identity(&idp));
}

#[test]
fn s46_an_es256_id_token_is_refused_for_its_algorithm_when_only_rs256_is_allowed() {
    let idp = start_es256_idp();
    let (_dir, path) = store();
    // Endpoints given by hand: the allow-list is the default, RS256 alone.
    let browsed = login_with_browser(login(&idp, &path, &[]));
    let message = assert_id_token_refused(&idp, &browsed.finished, &path);
    assert!(
        message.to_lowercase().contains("algorithm") && message.contains("ES256"),
        "{message}"
    );
}

#[test]
fn s47_logins_before_and_after_a_key_rotation_both_verify() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let first = login_with_browser(login(&idp, &path, &[])).finished;
    first.assert_code(0);
    assert_eq!(token_event(&first)["identity"], dev_user_identity(&idp));
    let first_access = entry_string(&stored_tokens(&path), "access_token");

    // Twice: the key that signed the first login's token is no longer published at all.
    idp.rotate_keys().expect("rotating the keys");
    idp.rotate_keys().expect("rotating the keys");
    let second = login_with_browser(login(&idp, &path, &[])).finished;
    second.assert_code(0);
    assert_eq!(
        second.event_names(),
        SUCCESS_EVENTS,
        "{}",
        second.describe()
    );
    assert_eq!(token_event(&second)["identity"], dev_user_identity(&idp));
    let second_access = entry_string(&stored_tokens(&path), "access_token");
    assert_ne!(
        second_access, first_access,
        "the second login's tokens are stored"
    );
    let key_set_fetches = idp
        .requests()
        .iter()
        .filter(|request| request.target == "/jwks")
        .count();
    assert!(
        key_set_fetches >= 2,
        "each login fetched the key set: {key_set_fetches}"
    );
}

#[test]
fn openid_with_endpoints_but_no_jwks_uri_is_a_config_error_that_names_the_ways_out() {
    let idp = start_idp(ClientAuth::None);
    let (_dir, path) = store();
    let with_issuer = openid_login(&idp, &path, true, false, &[]);
    let mut without_issuer = latchkey([
        "login",
        "--json",
        "--no-browser",
        "--authorization-endpoint",
        &idp.authorization_endpoint(),
        "--token-endpoint",
        &idp.token_endpoint(),
        "--client-id",
        CLIENT_ID,
        "--scope",
        "openid",
    ]);
    without_issuer.arg("--store").arg(&path);
    for command in [with_issuer, without_issuer] {
        let finished = run(command);
        let message = assert_config_error(&finished);
        assert!(
            message.contains("--jwks-uri") && message.contains("--no-verify-id-token"),
            "{message}"
        );
    }
    assert!(!path.exists());
    assert_eq!(idp.stats().requests, 0, "nothing was asked of the provider");
}

#[test]
fn s49_a_refresh_whose_id_token_names_another_user_deletes_the_tokens_and_says_so() {
    let (idp, _dir, path) = discovered_login();
    idp.set_forgery(Some(Forgery::Subject));
    let finished = session("refresh", &path, SecretVia::Env, &[]);
    finished.assert_code(1);
    let events = finished.events();
    let [error] = events.as_slice() else {
        panic!("one error event: {}", finished.describe());
    };
    assert_eq!(error["event"], "error");
    assert_eq!(error["kind"], "id_token_invalid", "{error:?}");
    let message = error["message"].as_str().expect("a message");
    assert!(message.contains("subject"), "{message}");
    assert!(message.contains("deleted"), "{message}");
    assert_no_tokens(&path);
}

// ---- 13. private_key_jwt, DPoP and pushed requests against the dev IdP -----------------

/// The key fixture `name` of the workspace's test vectors.
fn key_fixture(name: &str) -> String {
    format!(
        "{}/../tests/vectors/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The public half of the P-256 fixture, as a JWK (the private one without `d`).
fn p256_public_jwk() -> String {
    let text = std::fs::read_to_string(key_fixture("p256.jwk.json")).expect("reading the JWK");
    let mut jwk: Map<String, Value> = serde_json::from_str(&text).expect("the fixture is a JWK");
    assert!(jwk.remove("d").is_some(), "the fixture is a private JWK");
    Value::Object(jwk).to_string()
}

/// The second client of the sender-constrained identity provider: a resource server that
/// introspects tokens, authenticating with `client_secret_post`.
const INTROSPECTOR: &str = "introspector";
const INTROSPECTOR_SECRET: &str = "introspector-secret-61d0e8";

/// A development identity provider whose client ([`CLIENT_ID`]) authenticates with
/// `private_key_jwt` and the public key `jwk`, that requires DPoP nonces and pushed
/// authorization requests, and that has [`INTROSPECTOR`] as a second client.
fn start_sender_constrained_idp(jwk: String) -> DevIdp {
    let client = Client {
        id: CLIENT_ID.into(),
        secret: None,
        auth: ClientAuth::PrivateKeyJwt { jwk },
        redirect_uris: vec![REGISTERED_REDIRECT_URI.into()],
    };
    let introspector = Client {
        id: INTROSPECTOR.into(),
        secret: Some(INTROSPECTOR_SECRET.into()),
        auth: ClientAuth::Post,
        redirect_uris: Vec::new(),
    };
    let mut config = Config::new(vec![client, introspector]);
    config.dpop_nonce = true;
    config.require_pushed_authorization_requests = true;
    DevIdp::start(config, (Ipv4Addr::LOCALHOST, 0).into()).expect("starting the DevIdp")
}

/// `text` encoded for an `application/x-www-form-urlencoded` body: every byte but the
/// unreserved ones as `%XX`.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The decoded value of `name` in a form body or query (`%XX` and `+` decoded).
fn form_param(form: &str, name: &str) -> Option<String> {
    form.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| {
            let bytes = value.as_bytes();
            let mut decoded = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'%' if i + 2 < bytes.len() => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII");
                        decoded.push(u8::from_str_radix(hex, 16).expect("a %XX escape"));
                        i += 3;
                    }
                    b'+' => {
                        decoded.push(b' ');
                        i += 1;
                    }
                    byte => {
                        decoded.push(byte);
                        i += 1;
                    }
                }
            }
            String::from_utf8(decoded).expect("UTF-8")
        })
}

/// The names of `url`'s query parameters, sorted.
fn query_names(url: &str) -> Vec<String> {
    let (_, query) = url.split_once('?').unwrap_or((url, ""));
    let mut names: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map_or(pair, |(name, _)| name)
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

/// Asserts that the authorization URL `url` (of `authorization_endpoint`) only refers to
/// a pushed request: `client_id` and `request_uri`, nothing else (RFC 9126 §4).
fn assert_pushed_authorization_url(authorization_endpoint: &str, url: &str, client_id: &str) {
    let query = url
        .strip_prefix(&format!("{authorization_endpoint}?"))
        .unwrap_or_else(|| panic!("not at {authorization_endpoint}: {url}"));
    assert_eq!(query_names(url), ["client_id", "request_uri"], "{url}");
    assert_eq!(form_param(query, "client_id").as_deref(), Some(client_id));
    let request_uri = form_param(query, "request_uri").expect("request_uri");
    assert!(
        request_uri.starts_with("urn:ietf:params:oauth:request_uri:"),
        "{url}"
    );
}

/// What the introspection endpoint of `idp` says of `token`, asked by [`INTROSPECTOR`].
fn introspect(idp: &DevIdp, token: &str) -> Map<String, Value> {
    let body = format!(
        "token={}&client_id={INTROSPECTOR}&client_secret={}",
        form_encode(token),
        form_encode(INTROSPECTOR_SECRET)
    );
    let (status, _, answer) = agent::post(
        &idp.introspection_endpoint(),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .expect("introspecting");
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(status, 200, "introspection answered {status}: {text}");
    match serde_json::from_str(&text) {
        Ok(Value::Object(answer)) => answer,
        _ => panic!("introspection answered no JSON object: {text}"),
    }
}

/// The value of the response header `name` (case-insensitive).
fn response_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// The one JSON object `latchkey proof --json` printed: the proof, its `htu` and `jkt`.
fn dpop_proof(path: &Path, method: &str, url: &str, nonce: Option<&str>) -> Map<String, Value> {
    let mut command = latchkey(["proof", "--json", "--method", method, "--url", url]);
    if let Some(nonce) = nonce {
        command.args(["--nonce", nonce]);
    }
    command.arg("--store").arg(path);
    let finished = run(command);
    finished.assert_code(0);
    assert_eq!(finished.stdout.len(), 1, "{}", finished.describe());
    match serde_json::from_str(&finished.stdout[0]) {
        Ok(Value::Object(proof)) => proof,
        _ => panic!("proof --json prints a JSON object: {}", finished.describe()),
    }
}

fn json_string<'a>(object: &'a Map<String, Value>, key: &str) -> &'a str {
    object[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {object:?}"))
}

#[test]
fn a_dpop_login_with_private_key_jwt_and_pushed_requests_against_the_dev_idp() {
    let idp = start_sender_constrained_idp(p256_public_jwk());
    let key = key_fixture("p256.pkcs8.pem");
    let (_dir, path) = store();
    // No --par: the provider's metadata requires pushed requests, which turns them on.
    let command = login_discovering(
        &idp,
        &path,
        &[
            "--auth-method",
            "private_key_jwt",
            "--client-key",
            &key,
            "--dpop",
        ],
    );
    let browsed = login_with_browser(command);
    let finished = &browsed.finished;
    finished.assert_code(0);
    assert_eq!(
        finished.event_names(),
        SUCCESS_EVENTS,
        "{}",
        finished.describe()
    );
    assert_eq!(
        token_event(finished)["token_type"],
        "DPoP",
        "{}",
        finished.describe()
    );
    assert_pushed_authorization_url(&idp.authorization_endpoint(), &browsed.url, CLIENT_ID);

    let stats = idp.stats();
    assert_eq!(stats.pushed_authorizations, 1, "{stats:?}");
    assert!(
        stats.client_assertions >= 2,
        "at /par and /token: {stats:?}"
    );
    assert!(stats.dpop_nonce_challenges >= 1, "{stats:?}");
    assert!(stats.dpop_proofs >= 1, "{stats:?}");
    assert_eq!(stats.tokens_issued, 1, "{stats:?}");

    // The code exchange: a proof and an assertion, no secret.
    let exchange = idp.last_token_request().expect("a token request");
    let body = String::from_utf8(exchange.body.clone()).expect("a UTF-8 form");
    assert!(exchange.header("DPoP").is_some(), "{exchange:?}");
    assert!(exchange.header("Authorization").is_none(), "{exchange:?}");
    assert_eq!(
        form_param(&body, "grant_type").as_deref(),
        Some("authorization_code")
    );
    assert!(form_param(&body, "client_assertion").is_some(), "{body}");
    assert_eq!(
        form_param(&body, "client_assertion_type").as_deref(),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        "{body}"
    );
    assert!(form_param(&body, "client_secret").is_none(), "{body}");

    let shown = token_command(&path, &["--json"]);
    shown.assert_code(0);
    assert_eq!(
        shown_tokens(&shown)["token_type"],
        "DPoP",
        "{}",
        shown.describe()
    );
    let revealed = token_command(&path, &["--reveal"]);
    revealed.assert_code(0);
    let [access] = revealed.stdout.as_slice() else {
        panic!("the access token alone on stdout: {}", revealed.describe());
    };
    assert_eq!(*access, entry_string(&stored_tokens(&path), "access_token"));

    // The provider bound the token to the login's key.
    let introspected = introspect(&idp, access);
    assert_eq!(introspected["active"], true, "{introspected:?}");
    assert_eq!(introspected["token_type"], "DPoP", "{introspected:?}");
    assert_eq!(introspected["client_id"], CLIENT_ID, "{introspected:?}");
    let jkt = introspected["cnf"]["jkt"]
        .as_str()
        .unwrap_or_else(|| panic!("no cnf.jkt: {introspected:?}"))
        .to_owned();
    assert!(!jkt.is_empty());

    // The token works at UserInfo with a proof of that key, and only with one.
    let userinfo = idp.userinfo_endpoint();
    let proof = dpop_proof(&path, "GET", &userinfo, Some(&idp.dpop_nonce()));
    assert_eq!(json_string(&proof, "jkt"), jkt, "{proof:?}");
    assert_eq!(json_string(&proof, "htu"), userinfo, "{proof:?}");
    let dpop_authorization = format!("DPoP {access}");
    let (status, _, answer) = agent::get(
        &userinfo,
        &[
            ("Authorization", &dpop_authorization),
            ("DPoP", json_string(&proof, "proof")),
        ],
    )
    .expect("calling UserInfo");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status, 200, "{answer}");
    let claims: Value = serde_json::from_str(&answer).expect("UserInfo answers JSON");
    assert_eq!(claims["sub"], "dev-user", "{answer}");

    let bearer = format!("Bearer {access}");
    let (status, _, answer) =
        agent::get(&userinfo, &[("Authorization", &bearer)]).expect("calling UserInfo");
    assert_eq!(
        status, 401,
        "a DPoP-bound token as a bearer token: {answer:?}"
    );

    // Without the server's nonce, the proof is answered with a challenge that names it.
    let stale = dpop_proof(&path, "GET", &userinfo, None);
    let (status, headers, _) = agent::get(
        &userinfo,
        &[
            ("Authorization", &dpop_authorization),
            ("DPoP", json_string(&stale, "proof")),
        ],
    )
    .expect("calling UserInfo");
    assert_eq!(status, 401);
    assert_eq!(
        response_header(&headers, "DPoP-Nonce"),
        Some(idp.dpop_nonce().as_str())
    );

    // The provider moves to a new nonce. The refresh (a new process, which knows no nonce)
    // is challenged, and retries with the new one: the provider accepts no other.
    let before = idp.stats();
    let old_nonce = idp.dpop_nonce();
    let new_nonce = idp.rotate_dpop_nonce().expect("rotating the nonce");
    assert_ne!(old_nonce, new_nonce);
    let refreshed = session(
        "refresh",
        &path,
        SecretVia::Nothing,
        &["--client-key", &key],
    );
    refreshed.assert_code(0);
    assert_eq!(
        refreshed.event_names(),
        ["token", "stored"],
        "{}",
        refreshed.describe()
    );
    assert_eq!(
        refreshed.events()[0]["token_type"],
        "DPoP",
        "{}",
        refreshed.describe()
    );
    let after = idp.stats();
    assert!(
        after.dpop_nonce_challenges > before.dpop_nonce_challenges,
        "the old nonce was challenged: {before:?} -> {after:?}"
    );
    assert!(
        after.client_assertions > before.client_assertions,
        "{after:?}"
    );
    assert_eq!(after.tokens_issued, before.tokens_issued + 1, "{after:?}");
    let refresh_request = idp.last_token_request().expect("a token request");
    let body = String::from_utf8(refresh_request.body.clone()).expect("a UTF-8 form");
    assert_eq!(
        form_param(&body, "grant_type").as_deref(),
        Some("refresh_token")
    );
    assert!(
        refresh_request.header("DPoP").is_some(),
        "{refresh_request:?}"
    );
    assert!(form_param(&body, "client_secret").is_none(), "{body}");

    let entry = stored_tokens(&path);
    let fresh_access = entry_string(&entry, "access_token");
    let fresh_refresh = entry_string(&entry, "refresh_token");
    assert_ne!(fresh_access, *access);
    let introspected = introspect(&idp, &fresh_access);
    assert_eq!(introspected["active"], true, "{introspected:?}");
    assert_eq!(introspected["token_type"], "DPoP", "{introspected:?}");
    assert_eq!(
        introspected["cnf"]["jkt"],
        jkt.as_str(),
        "the same key: {introspected:?}"
    );

    // Logging out revokes at the provider.
    let logged_out = session("logout", &path, SecretVia::Nothing, &["--client-key", &key]);
    logged_out.assert_code(0);
    assert_eq!(
        logged_out.event_names(),
        ["revoked", "revoked", "logged_out"],
        "{}",
        logged_out.describe()
    );
    assert!(!path.exists());
    for (what, token) in [("access", &fresh_access), ("refresh", &fresh_refresh)] {
        let introspected = introspect(&idp, token);
        assert_eq!(
            introspected["active"], false,
            "the {what} token after logout: {introspected:?}"
        );
    }
    for finished in [&refreshed, &logged_out] {
        finished.assert_never_shows(&[
            ("access token", &fresh_access),
            ("refresh token", &fresh_refresh),
        ]);
    }
}

/// `latchkey dev-idp` serving in the background, killed when dropped (a test that panics
/// half-way included).
struct ServedDevIdp {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
    /// What it printed so far.
    stdout: Vec<String>,
}

/// How long `latchkey dev-idp` may take to print its banner.
const BANNER_DEADLINE: Duration = Duration::from_secs(15);

impl ServedDevIdp {
    fn spawn(args: &[&str]) -> ServedDevIdp {
        use std::io::BufRead as _;
        use std::process::Stdio;
        let mut command = latchkey(["dev-idp"]);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawning latchkey dev-idp");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (line_tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (stderr_tx, stderr) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            let _ = stderr_tx.send(text);
        });
        ServedDevIdp {
            child,
            lines,
            stderr,
            stdout: Vec::new(),
        }
    }

    /// Reads stdout up to the banner's last line (`redirect URIs:`): `Ok` with the banner,
    /// or `Err` with stderr if the command exited first. Fails the test after
    /// [`BANNER_DEADLINE`].
    fn banner(&mut self) -> Result<Vec<String>, String> {
        use std::sync::mpsc::RecvTimeoutError;
        let deadline = std::time::Instant::now() + BANNER_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let last = line.trim_start().starts_with("redirect URIs:");
                    self.stdout.push(line);
                    if last {
                        return Ok(self.stdout.clone());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.child.wait();
                    let stderr = self
                        .stderr
                        .recv_timeout(BANNER_DEADLINE)
                        .unwrap_or_default();
                    return Err(format!(
                        "stdout:\n{}\nstderr:\n{stderr}",
                        self.stdout.join("\n")
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!(
                        "latchkey dev-idp printed no banner within {BANNER_DEADLINE:?}; stdout:\n{}",
                        self.stdout.join("\n")
                    );
                }
            }
        }
    }
}

impl Drop for ServedDevIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The banner's line that starts with `label`, its whitespace runs made single spaces.
fn banner_line(banner: &[String], label: &str) -> String {
    banner
        .iter()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .find(|line| line.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in the banner:\n{}", banner.join("\n")))
}

/// `latchkey login --json` at the `latchkey dev-idp` of `issuer` with the private key
/// `key` and DPoP, storing in `store`.
fn dev_idp_key_login(issuer: &str, key: &str, store: &Path, extra: &[&str]) -> Command {
    let mut command = latchkey([
        "login",
        "--no-browser",
        "--no-device",
        "--issuer",
        issuer,
        "--client-id",
        "latchkey-dev",
        "--auth-method",
        "private_key_jwt",
        "--client-key",
        key,
        "--dpop",
        "--scope",
        "openid",
        "--redirect-uri",
        REDIRECT_URI,
    ]);
    command.arg("--store").arg(store).args(extra);
    command
}

#[test]
fn latchkey_dev_idp_serves_a_private_key_jwt_client_with_required_pushed_requests() {
    let key = key_fixture("ed25519.pkcs8.pem");
    let (served, banner, port) = (0..3)
        .find_map(|_| {
            // Free a moment ago; should another program take it first, try another.
            let port = free_port();
            let mut served = ServedDevIdp::spawn(&[
                "--port",
                &port.to_string(),
                "--auth-method",
                "private_key_jwt",
                "--client-key",
                &key,
                "--require-par",
                "--dpop-nonce",
                "--redirect-uri",
                REGISTERED_REDIRECT_URI,
            ]);
            match served.banner() {
                Ok(banner) => Some((served, banner, port)),
                Err(output) if output.contains("cannot serve") => None,
                Err(output) => panic!("latchkey dev-idp exited:\n{output}"),
            }
        })
        .expect("latchkey dev-idp could start on one of three ports");
    let shown = banner.join("\n");
    let issuer = format!("http://127.0.0.1:{port}");
    assert!(
        banner[0].contains("Development identity provider"),
        "{shown}"
    );
    assert_eq!(banner_line(&banner, "issuer:"), format!("issuer: {issuer}"));
    assert_eq!(
        banner_line(&banner, "pushed requests (PAR):"),
        format!("pushed requests (PAR): {issuer}/par (required)")
    );
    assert_eq!(
        banner_line(&banner, "introspection:"),
        format!("introspection: {issuer}/introspect")
    );
    assert_eq!(
        banner_line(&banner, "client id:"),
        "client id: latchkey-dev (private_key_jwt)"
    );
    assert!(banner_line(&banner, "DPoP:").contains("nonce"), "{shown}");
    assert_eq!(
        banner_line(&banner, "redirect URIs:"),
        format!("redirect URIs: {REGISTERED_REDIRECT_URI}")
    );

    // The client with its registered key.
    let (_dir, path) = store();
    let browsed = login_with_browser(dev_idp_key_login(&issuer, &key, &path, &["--json"]));
    let finished = &browsed.finished;
    finished.assert_code(0);
    assert_eq!(
        finished.event_names(),
        SUCCESS_EVENTS,
        "{}",
        finished.describe()
    );
    assert_pushed_authorization_url(&format!("{issuer}/authorize"), &browsed.url, "latchkey-dev");
    let summary = token_command(&path, &["--json"]);
    summary.assert_code(0);
    assert_eq!(
        shown_tokens(&summary)["token_type"],
        "DPoP",
        "{}",
        summary.describe()
    );

    // Another key: the provider refuses the client, before any browser is involved.
    let other_key = key_fixture("p256.pkcs8.pem");
    let (_other_dir, other_path) = store();
    let refused = run(dev_idp_key_login(
        &issuer,
        &other_key,
        &other_path,
        &["--json", "--timeout", "10"],
    ));
    refused.assert_code(1);
    let events = refused.events();
    let last = events
        .last()
        .unwrap_or_else(|| panic!("no events: {}", refused.describe()));
    assert_eq!(last["event"], "error", "{}", refused.describe());
    // The push was refused, not a code: no code exists yet.
    assert_eq!(last["kind"], "push_rejected", "{}", refused.describe());
    let message = last["message"].as_str().unwrap_or_default();
    assert!(message.contains("invalid_client"), "{}", refused.describe());
    assert!(
        message.starts_with("pushed authorization request endpoint refused the request"),
        "{}",
        refused.describe()
    );
    assert!(
        !refused.event_names().iter().any(|name| name == "authorize"),
        "no browser for a refused push: {}",
        refused.describe()
    );
    assert_no_tokens(&other_path);

    let refused = run(dev_idp_key_login(
        &issuer,
        &other_key,
        &other_path,
        &["--timeout", "10"],
    ));
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("invalid_client"),
        "{}",
        refused.describe()
    );
    assert_no_tokens(&other_path);
    drop(served);
}

#[test]
fn latchkey_dev_idp_refuses_a_client_key_it_cannot_use_with_exit_2() {
    // Should the command serve after all, it would never exit: the guard kills it and the
    // test fails.
    let quick = Guard {
        limit: Duration::from_secs(10),
        stdout_grace: None,
        stderr_wait: None,
    };
    let p256 = key_fixture("p256.pkcs8.pem");
    let rsa1024 = key_fixture("rsa1024.pkcs8.pem");
    let dir = tempfile::tempdir().expect("temporary directory");
    let missing = dir.path().join("no-such-key.pem");
    let missing = missing.to_str().expect("UTF-8 temporary path");
    for (args, mentions) in [
        (
            &["--auth-method", "private_key_jwt"][..],
            &["--client-key"][..],
        ),
        (&["--client-key", &p256], &["private_key_jwt"]),
        (
            &[
                "--auth-method",
                "post",
                "--secret",
                "s3",
                "--client-key",
                &p256,
            ],
            &["private_key_jwt"],
        ),
        (
            &["--auth-method", "private_key_jwt", "--client-key", &rsa1024],
            &[rsa1024.as_str(), "too short"],
        ),
        (
            &["--auth-method", "private_key_jwt", "--client-key", missing],
            &[missing],
        ),
    ] {
        let mut command = latchkey(["dev-idp", "--port", "0"]);
        command.args(args);
        let finished = Running::spawn("latchkey dev-idp", quick, command).finish();
        finished.assert_code(2);
        assert!(
            finished.stdout.is_empty(),
            "no banner: {}",
            finished.describe()
        );
        for mention in mentions {
            assert!(
                finished.stderr.contains(mention),
                "{args:?}: stderr does not name {mention:?}: {}",
                finished.describe()
            );
        }
    }
}

#[test]
fn a_client_certificate_is_named_in_every_assertion_and_an_rsa_key_signs_ps256() {
    let text = std::fs::read_to_string(key_fixture("rsa2048.jwk.json")).expect("the JWK");
    let mut jwk: Map<String, Value> = serde_json::from_str(&text).expect("a JWK");
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        jwk.remove(private);
    }
    let idp = start_sender_constrained_idp(Value::Object(jwk).to_string());
    let (_dir, path) = store();
    let key = key_fixture("rsa2048.pkcs8.pem");
    let cert = key_fixture("rsa2048.cert.pem");
    let browsed = login_with_browser(login_discovering(
        &idp,
        &path,
        &[
            "--auth-method",
            "private_key_jwt",
            "--client-key",
            &key,
            "--client-cert",
            &cert,
        ],
    ));
    browsed.finished.assert_code(0);
    // Every assertion the provider saw (the push and the code exchange) names the
    // certificate and is PS256.
    let assertions: Vec<Value> = idp
        .requests()
        .iter()
        .filter(|request| request.method == "POST")
        .filter_map(|request| {
            let body = String::from_utf8_lossy(&request.body).into_owned();
            let assertion = body
                .split('&')
                .find_map(|pair| pair.strip_prefix("client_assertion="))?
                .to_owned();
            let header = assertion.split('.').next()?.to_owned();
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()
        })
        .collect();
    assert!(assertions.len() >= 2, "{assertions:?}");
    for header in &assertions {
        assert_eq!(header["alg"], "PS256", "{header}");
        assert_eq!(
            header["x5t#S256"].as_str().map(str::len),
            Some(43),
            "{header}"
        );
    }
    // Another key's certificate, or no certificate at all, is a configuration error that
    // names the file, before any request.
    let (_other_dir, other_path) = store();
    let before = idp.stats().requests;
    let mismatched = run(login_discovering(
        &idp,
        &other_path,
        &[
            "--client-key",
            &key,
            "--client-cert",
            &key_fixture("p256.cert.pem"),
        ],
    ));
    mismatched.assert_code(2);
    assert!(
        mismatched.stdout_text().contains("p256.cert.pem")
            && mismatched
                .stdout_text()
                .contains("not the certificate of this key"),
        "{}",
        mismatched.describe()
    );
    let not_a_cert = run(login_discovering(
        &idp,
        &other_path,
        &["--client-key", &key, "--client-cert", &key],
    ));
    not_a_cert.assert_code(2);
    assert!(
        not_a_cert.stdout_text().contains("unusable certificate"),
        "{}",
        not_a_cert.describe()
    );
    assert_eq!(idp.stats().requests, before, "nothing was sent");
    let without_key = run(latchkey([
        "login",
        "--issuer",
        "http://127.0.0.1:1",
        "--client-id",
        "c",
        "--client-cert",
        &cert,
    ]));
    without_key.assert_code(2);
}
