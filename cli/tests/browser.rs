//! Real-browser end-to-end tests: headless Chromium signs in through `latchkey login
//! --json --no-browser` at the OpenID-certified `oidc-provider`.
//!
//! Each test starts its own provider (`tests/interop/idp.mjs`), runs the command, reads its
//! `listening` and `authorize` events, and hands the authorization URL to
//! `tests/interop/browser.mjs`, which drives Chromium through playwright-core: it fills the
//! provider's login form, approves (or cancels) the consent page and reports what latchkey
//! answered on its loopback callback. The test then checks where the browser ended, the
//! command's events and exit code, and the token file.
//!
//! Missing tools (Node.js, the npm packages, Chromium) fail with installation advice; they
//! never skip. Every child process is killed after [`LIMIT`].

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Guard, Running};
use latchkey_tests::oidc::{self, BASIC, OidcProvider, PUBLIC, RegisteredClient};
use serde_json::{Map, Value};

/// Longest any child process may run before it is killed and its test fails.
const LIMIT: Duration = Duration::from_secs(60);
/// How every child is run: killed after [`LIMIT`], its output read for a bounded time.
const GUARD: Guard = Guard {
    limit: LIMIT,
    stdout_grace: Some(Duration::from_secs(2)),
    stderr_wait: Some(Duration::from_secs(5)),
};
/// What the command is told to listen on: any free port (registered without one).
const REDIRECT_URI: &str = "http://127.0.0.1:0/callback";
/// Where `--then` sends the browser after success.
const LANDING: &str = "docker-desktop://dashboard/open";
/// The environment variable that carries the client secret to the command.
const SECRET_VAR: &str = "LATCHKEY_BROWSER_TEST_SECRET";
/// The login `browser.mjs` types into the provider's form: the subject of the tokens.
const USER: &str = "alice";
/// The `--json` events of a successful login, in order.
const SUCCESS_EVENTS: [&str; 5] = ["listening", "authorize", "callback", "token", "stored"];
// ---- the tools ------------------------------------------------------------------------

/// The Chromium `browser.mjs` starts: `$LATCHKEY_CHROMIUM` or Debian's `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    std::env::var_os("LATCHKEY_CHROMIUM")
        .filter(|path| !path.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Panics with installation advice unless Node.js, the npm packages and Chromium are here.
fn require_browser_tools() {
    oidc::require_node_packages();
    let playwright = oidc::interop_dir().join("node_modules/playwright-core/package.json");
    assert!(
        playwright.is_file(),
        "the browser tests need playwright-core: run `npm ci` in {} (never `npx playwright \
         install`: Chromium comes from the system)",
        oidc::interop_dir().display()
    );
    let chromium = chromium();
    let runs = Command::new(&chromium)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output();
    assert!(
        runs.is_ok_and(|out| out.status.success()),
        "the browser tests need Chromium at {} (Debian: `apt-get install -y chromium`; or set \
         LATCHKEY_CHROMIUM to a Chromium binary)",
        chromium.display()
    );
}

// ---- the command, the browser, the provider -------------------------------------------

/// `latchkey login --json --no-browser …` for `client` at `idp`, storing into `store`.
fn login(
    idp: &OidcProvider,
    client: RegisteredClient,
    then: Option<&str>,
    store: &Path,
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command
        .args(["login", "--json", "--no-browser"])
        .args(["--authorization-endpoint", &idp.authorization_endpoint()])
        .args(["--token-endpoint", &idp.token_endpoint()])
        .args(["--issuer", idp.issuer()])
        .args(["--jwks-uri", &idp.jwks_uri()])
        .args(["--client-id", client.id])
        .args(["--scope", "openid", "--scope", "offline_access"])
        .args(["--param", "prompt=consent"])
        .args(["--redirect-uri", REDIRECT_URI])
        .arg("--store")
        .arg(store)
        .args(["--timeout", "60"])
        .env_remove(SECRET_VAR);
    if let Some(then) = then {
        command.args(["--then", then]);
    }
    if let Some(secret) = client.secret {
        command
            .args(["--client-secret-env", SECRET_VAR])
            .env(SECRET_VAR, secret);
    }
    // Should the test forget `--store`, the default path must not be the user's real file.
    let nowhere = std::env::temp_dir().join("latchkey-browser-test-no-home");
    command
        .env("HOME", &nowhere)
        .env("XDG_CONFIG_HOME", &nowhere)
        .env("APPDATA", &nowhere);
    command
}

/// What Chromium saw of latchkey's answer on the callback (`browser.mjs`'s JSON line).
#[derive(Debug)]
struct Browsed {
    status: u64,
    location: Option<String>,
    final_url: String,
    page_text: String,
    request_headers: Map<String, Value>,
    raw: String,
}

impl Browsed {
    /// A header Chromium sent to the callback (lowercase name).
    fn sent(&self, name: &str) -> Option<&str> {
        self.request_headers.get(name).and_then(Value::as_str)
    }
}

/// Runs `browser.mjs` on the authorization `url`; it waits for the callback under
/// `redirect_uri`. `Err` describes why the browser did not get there.
fn browse(url: &str, redirect_uri: &str, deny: bool) -> Result<Browsed, String> {
    let mut command = Command::new("node");
    command
        .arg(oidc::interop_dir().join("browser.mjs"))
        .args([url, redirect_uri])
        .current_dir(oidc::interop_dir())
        .env("LATCHKEY_CHROMIUM", chromium());
    if deny {
        command.arg("deny");
    }
    let ended = Running::spawn("node browser.mjs", GUARD, command).finish();
    if !ended.status.success() || ended.stdout.len() != 1 {
        return Err(format!(
            "the browser did not complete its part: {}",
            ended.describe()
        ));
    }
    let raw = ended.stdout[0].clone();
    eprintln!("browser.mjs after {:?}: {raw}", ended.elapsed);
    let Ok(Value::Object(mut result)) = serde_json::from_str::<Value>(&raw) else {
        return Err(format!("browser.mjs printed no JSON object: {raw}"));
    };
    let mut string = |key: &str| match result.remove(key) {
        Some(Value::String(value)) => Some(value),
        _ => None,
    };
    let location = string("location");
    let final_url = string("final_url").unwrap_or_default();
    let page_text = string("page_text").unwrap_or_default();
    let Some(status) = result.get("status").and_then(Value::as_u64) else {
        return Err(format!("browser.mjs printed no status: {raw}"));
    };
    let request_headers = match result.remove("request_headers") {
        Some(Value::Object(headers)) => headers,
        _ => Map::new(),
    };
    Ok(Browsed {
        status,
        location,
        final_url,
        page_text,
        request_headers,
        raw,
    })
}

/// `why` the browser failed, and whether the provider is still there: a provider that died
/// mid-login shows in the browser only as "127.0.0.1 refused to connect".
fn with_provider_state(idp: &OidcProvider, why: &str) -> String {
    let authority = idp.issuer().trim_start_matches("http://");
    match TcpStream::connect(authority) {
        Ok(_) => why.to_owned(),
        Err(e) => format!(
            "{why}\nthe provider at {} no longer accepts connections ({e}): it died during the \
             login (oidc-provider prints notices on its stdout, and dies of EPIPE if whoever \
             started it closed that pipe)",
            idp.issuer()
        ),
    }
}

/// The provider's user-info answer for `access_token`: the token's subject.
fn userinfo_subject(idp: &OidcProvider, access_token: &str) -> String {
    let authority = idp
        .issuer()
        .strip_prefix("http://")
        .expect("an http:// issuer");
    let mut stream = TcpStream::connect(authority).expect("connecting to the provider");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET /me HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {access_token}\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    )
    .expect("sending the user-info request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading the user-info response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "the provider refused the stored access token:\n{response}"
    );
    let info: Value = serde_json::from_str(body).expect("user info is JSON");
    info["sub"]
        .as_str()
        .expect("user info has a sub")
        .to_owned()
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

/// The command's `listening` and `authorize` events: the real redirect URI and the URL.
fn read_start(login: &mut Running, idp: &OidcProvider) -> (String, String) {
    let listening = login.expect_event("listening");
    let redirect_uri = listening["redirect_uri"].as_str().unwrap_or_default();
    let port = redirect_uri
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/callback"))
        .and_then(|port| port.parse::<u16>().ok());
    if port.is_none_or(|port| port == 0) {
        login.fail(&format!(
            "listening on {redirect_uri:?}, not a real loopback port"
        ));
    }
    let redirect_uri = redirect_uri.to_owned();
    let authorize = login.expect_event("authorize");
    let url = authorize["url"].as_str().unwrap_or_default().to_owned();
    if !url.starts_with(&format!("{}?", idp.authorization_endpoint())) {
        login.fail(&format!("authorize URL {url:?} is not at the provider"));
    }
    (redirect_uri, url)
}

/// Chromium's request to the callback was a top-level navigation by its own account, so
/// latchkey's Fetch-Metadata check (S23) saw real values and let it through.
fn assert_navigation(browsed: &Browsed) {
    assert_eq!(
        browsed.sent("sec-fetch-mode"),
        Some("navigate"),
        "{}",
        browsed.raw
    );
    assert_eq!(
        browsed.sent("sec-fetch-dest"),
        Some("document"),
        "{}",
        browsed.raw
    );
}

/// A completed login: the success events, a private token file the provider honours.
fn assert_signed_in(login: Running, idp: &OidcProvider, store: &Path, secret: Option<&str>) {
    let ended = login.finish();
    ended.assert_code(0);
    assert_eq!(ended.event_names(), SUCCESS_EVENTS, "{}", ended.describe());
    let events = ended.events();
    let token = &events[3];
    assert_eq!(token["token_type"], "Bearer", "{}", ended.describe());
    assert_eq!(token["refresh_token"], true, "{}", ended.describe());
    let scope = token["scope"].as_str().unwrap_or_default();
    assert!(
        scope.split(' ').any(|s| s == "offline_access"),
        "{}",
        ended.describe()
    );
    assert_eq!(events[4]["path"], store.display().to_string());

    assert!(store.is_file(), "no token file at {}", store.display());
    assert_private(store);
    let entry = stored_tokens(store);
    let access_token = entry["access_token"].as_str().expect("an access token");
    let refresh_token = entry["refresh_token"].as_str().expect("a refresh token");
    assert_eq!(
        userinfo_subject(idp, access_token),
        USER,
        "the stored access token is the provider's, for the user who signed in"
    );
    let mut secrets = vec![
        ("access token", access_token),
        ("refresh token", refresh_token),
    ];
    if let Some(secret) = secret {
        secrets.push(("client secret", secret));
    }
    ended.assert_never_shows(&secrets);
}

// ---- the tests ------------------------------------------------------------------------

#[test]
fn chromium_signs_in_through_latchkey_and_lands_on_the_then_url() {
    require_browser_tools();
    let started = Instant::now();
    let idp = OidcProvider::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = dir.path().join("tokens.json");
    let mut login = Running::spawn(
        "latchkey",
        GUARD,
        login(&idp, PUBLIC, Some(LANDING), &store),
    );
    let (redirect_uri, url) = read_start(&mut login, &idp);

    let browsed = browse(&url, &redirect_uri, false)
        .unwrap_or_else(|why| login.fail(&with_provider_state(&idp, &why)));
    assert_eq!(browsed.status, 303, "{}", browsed.raw);
    assert_eq!(
        browsed.location.as_deref(),
        Some(LANDING),
        "{}",
        browsed.raw
    );
    assert_eq!(browsed.page_text, "", "{}", browsed.raw);
    assert_navigation(&browsed);

    assert_signed_in(login, &idp, &store, None);
    eprintln!("took {:?}", started.elapsed());
}

#[test]
fn chromium_signs_in_as_a_confidential_client_and_sees_the_built_in_success_page() {
    require_browser_tools();
    let started = Instant::now();
    let idp = OidcProvider::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = dir.path().join("tokens.json");
    let mut login = Running::spawn("latchkey", GUARD, login(&idp, BASIC, None, &store));
    let (redirect_uri, url) = read_start(&mut login, &idp);

    let browsed = browse(&url, &redirect_uri, false)
        .unwrap_or_else(|why| login.fail(&with_provider_state(&idp, &why)));
    assert_eq!(browsed.status, 200, "{}", browsed.raw);
    assert_eq!(browsed.location, None, "{}", browsed.raw);
    assert!(
        browsed.final_url.starts_with(&format!("{redirect_uri}?")),
        "{}",
        browsed.raw
    );
    assert!(browsed.page_text.contains("Signed in"), "{}", browsed.raw);
    assert_navigation(&browsed);

    assert_signed_in(login, &idp, &store, BASIC.secret);
    eprintln!("took {:?}", started.elapsed());
}

#[test]
fn chromium_cancelling_consent_gets_the_failure_page_and_latchkey_exits_1() {
    require_browser_tools();
    let started = Instant::now();
    let idp = OidcProvider::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = dir.path().join("tokens.json");
    // With --then: a failure must not send the browser to the application.
    let mut login = Running::spawn(
        "latchkey",
        GUARD,
        login(&idp, PUBLIC, Some(LANDING), &store),
    );
    let (redirect_uri, url) = read_start(&mut login, &idp);

    let browsed = browse(&url, &redirect_uri, true)
        .unwrap_or_else(|why| login.fail(&with_provider_state(&idp, &why)));
    assert_eq!(browsed.status, 200, "{}", browsed.raw);
    assert_eq!(browsed.location, None, "{}", browsed.raw);
    assert!(
        browsed.final_url.starts_with(&format!("{redirect_uri}?")),
        "{}",
        browsed.raw
    );
    assert!(
        browsed.page_text.contains("Sign-in failed"),
        "{}",
        browsed.raw
    );
    assert!(!browsed.page_text.contains("Signed in"), "{}", browsed.raw);
    assert_navigation(&browsed);

    let ended = login.finish();
    ended.assert_code(1);
    assert_eq!(
        ended.event_names(),
        ["listening", "authorize", "error"],
        "{}",
        ended.describe()
    );
    let events = ended.events();
    assert_eq!(events[2]["kind"], "access_denied", "{}", ended.describe());
    assert!(!store.exists(), "a denied login wrote {}", store.display());
    eprintln!("took {:?}", started.elapsed());
}
