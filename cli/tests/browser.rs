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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Finished, Guard, Running, lock};
use latchkey_tests::oidc::{
    self, BASIC, GrantCounts, JWT, OidcProvider, PAR, PUBLIC, ROTATION, ROTATION_ACCESS_TOKEN_TTL,
    RegisteredClient,
};
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

/// The provider's user-info answer for `access_token`, whole (head and body).
fn userinfo(idp: &OidcProvider, access_token: &str) -> String {
    userinfo_with(idp, &format!("Authorization: Bearer {access_token}\r\n"))
}

/// The provider's user-info answer to a request with `headers` (each ending in CRLF),
/// whole.
fn userinfo_with(idp: &OidcProvider, headers: &str) -> String {
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
        "GET /me HTTP/1.1\r\nHost: {authority}\r\n{headers}Accept: application/json\r\n\
         Connection: close\r\n\r\n"
    )
    .expect("sending the user-info request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading the user-info response");
    response
}

/// The provider's user-info answer for `access_token`: the token's subject.
fn userinfo_subject(idp: &OidcProvider, access_token: &str) -> String {
    let response = userinfo(idp, access_token);
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
    assert_entry_honoured(&ended, idp, store, "default", secret);
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

// ---- several processes and profiles -----------------------------------------------------
//
// S60: processes sharing one token file. A refresh is taken under a per-profile OS lock,
// so concurrent `latchkey token --fresh` make one refresh request between them; a lock
// holder that dies releases the lock with its death; a second login for a profile is
// refused while one is under way. And profiles: several logins in one token file, listed,
// shown and logged out one at a time. The provider's test hooks count its token requests
// (`OidcProvider::grants`) and hold them back (`OidcProvider::delay_token`), so that the
// processes really overlap and a killed refresher's request is never worked on.

/// The profile of a command given no `--profile`.
const DEFAULT_PROFILE: &str = "default";

/// `latchkey ARGS --store STORE`, never near the user's own files.
fn latchkey(store: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command.args(args).arg("--store").arg(store);
    let nowhere = std::env::temp_dir().join("latchkey-browser-test-no-home");
    command
        .env_remove(SECRET_VAR)
        .env("HOME", &nowhere)
        .env("XDG_CONFIG_HOME", &nowhere)
        .env("APPDATA", &nowhere);
    command
}

/// [`login`] without `--then`, for `profile` (`None`: no `--profile`, the default one), and
/// with the provider's revocation endpoint, so that `latchkey logout` revokes.
fn login_as(
    idp: &OidcProvider,
    client: RegisteredClient,
    store: &Path,
    profile: Option<&str>,
) -> Command {
    let mut command = login(idp, client, None, store);
    let revocation_endpoint = format!("{}/token/revocation", idp.issuer());
    command.args(["--revocation-endpoint", &revocation_endpoint]);
    if let Some(profile) = profile {
        command.args(["--profile", profile]);
    }
    command
}

/// `latchkey token --fresh --margin MARGIN --reveal --json` on the `runtime` driver.
fn token_fresh(store: &Path, profile: Option<&str>, margin: Duration, runtime: &str) -> Command {
    let margin = margin.as_secs().to_string();
    let mut command = latchkey(
        store,
        &[
            "token",
            "--fresh",
            "--margin",
            &margin,
            "--reveal",
            "--json",
            "--runtime",
            runtime,
        ],
    );
    if let Some(profile) = profile {
        command.args(["--profile", profile]);
    }
    command
}

/// The entry of `profile` in the token file at `path`.
fn stored_entry(path: &Path, profile: &str) -> Map<String, Value> {
    let text = std::fs::read_to_string(path).expect("reading the token file");
    let file: Value = serde_json::from_str(&text).expect("the token file is JSON");
    match &file["tokens"][profile] {
        Value::Object(entry) => entry.clone(),
        _ => panic!("the token file has no {profile:?} entry: {text}"),
    }
}

/// A string member of a token file entry or an event.
fn text<'a>(object: &'a Map<String, Value>, key: &str) -> &'a str {
    object
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {key:?} in {object:?}"))
}

/// The status of the provider's user-info answer for `access_token` (200, or 401 for a
/// token it does not honour).
fn userinfo_status(idp: &OidcProvider, access_token: &str) -> String {
    let response = userinfo(idp, access_token);
    response.split(' ').nth(1).unwrap_or_default().to_owned()
}

/// A completed login of `profile`: the success events, and a private token file whose
/// entry for `profile` the provider honours. Gives that entry.
fn assert_profile_signed_in(
    login: Running,
    idp: &OidcProvider,
    store: &Path,
    profile: &str,
    secret: Option<&str>,
) -> Map<String, Value> {
    let ended = login.finish();
    ended.assert_code(0);
    assert_eq!(ended.event_names(), SUCCESS_EVENTS, "{}", ended.describe());
    assert_eq!(
        ended.events()[3]["refresh_token"],
        true,
        "{}",
        ended.describe()
    );
    assert_entry_honoured(&ended, idp, store, profile, secret)
}

/// The token file is private and its entry for `profile` holds tokens the provider honours
/// for the user who signed in; the command's output shows none of them (nor `secret`).
/// Gives that entry.
fn assert_entry_honoured(
    ended: &Finished,
    idp: &OidcProvider,
    store: &Path,
    profile: &str,
    secret: Option<&str>,
) -> Map<String, Value> {
    assert_private(store);
    let entry = stored_entry(store, profile);
    let access_token = text(&entry, "access_token");
    let refresh_token = text(&entry, "refresh_token");
    assert_eq!(
        userinfo_subject(idp, access_token),
        USER,
        "the stored access token of {profile} is the provider's, for the user who signed in"
    );
    let mut secrets = vec![
        ("access token", access_token),
        ("refresh token", refresh_token),
    ];
    if let Some(secret) = secret {
        secrets.push(("client secret", secret));
    }
    ended.assert_never_shows(&secrets);
    entry
}

/// Signs `profile` in with `client` through Chromium; gives the stored entry.
fn sign_in(
    idp: &OidcProvider,
    client: RegisteredClient,
    store: &Path,
    profile: Option<&str>,
) -> Map<String, Value> {
    let mut login = Running::spawn(
        "latchkey login",
        GUARD,
        login_as(idp, client, store, profile),
    );
    let (redirect_uri, url) = read_start(&mut login, idp);
    let browsed = browse(&url, &redirect_uri, false)
        .unwrap_or_else(|why| login.fail(&with_provider_state(idp, &why)));
    assert_eq!(browsed.status, 200, "{}", browsed.raw);
    assert!(browsed.page_text.contains("Signed in"), "{}", browsed.raw);
    let profile = profile.unwrap_or(DEFAULT_PROFILE);
    assert_profile_signed_in(login, idp, store, profile, client.secret)
}

/// The provider's refresh counts once every refresh request it received has ended, one
/// way or another (its bookkeeping of an answer or a disconnection may trail what the
/// client saw by a moment); as they are after 5 s if some never end.
fn settled_refresh_counts(idp: &OidcProvider) -> GrantCounts {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts = idp.refresh_counts();
        if counts.ended() == counts.requests || Instant::now() > deadline {
            return counts;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The JSON object `latchkey token --json` printed, which must have exited 0.
fn token_output(ended: &common::Finished) -> Map<String, Value> {
    ended.assert_code(0);
    assert_eq!(ended.stdout.len(), 1, "{}", ended.describe());
    match serde_json::from_str(&ended.stdout[0]) {
        Ok(Value::Object(output)) => output,
        _ => panic!("token --json printed no JSON object: {}", ended.describe()),
    }
}

/// Whether `ended` says anywhere that a login is required.
fn says_login_required(ended: &common::Finished) -> bool {
    let all = format!("{}\n{}", ended.stdout_text(), ended.stderr).to_lowercase();
    all.contains("login_required") || all.contains("login required")
}

/// The refresh lock file of `profile` next to the token file at `store`.
fn refresh_lock_file(store: &Path, profile: &str) -> PathBuf {
    let name = store.file_name().expect("a file name").to_string_lossy();
    store.with_file_name(format!(".{name}.{profile}.refresh"))
}

#[test]
fn s60_twenty_concurrent_token_fresh_make_one_refresh_request_and_print_one_token() {
    /// How many `latchkey token --fresh` run at once: half on tokio, half on smol.
    const PROCESSES: usize = 20;
    /// Their margin: between the token's life left when they start (under 6 s) and its
    /// full life (10 s), so that the old token is due and the refreshed one is not.
    const MARGIN: Duration = Duration::from_secs(6);
    /// How long the provider holds each token request back: all of them start meanwhile.
    const DELAY: Duration = Duration::from_secs(1);
    require_browser_tools();
    assert!(MARGIN < ROTATION_ACCESS_TOKEN_TTL);
    let started = Instant::now();
    let idp = OidcProvider::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = dir.path().join("tokens.json");
    let profile = "ci";
    let before = sign_in(&idp, ROTATION, &store, Some(profile));
    let old_access = text(&before, "access_token").to_owned();
    let old_refresh = text(&before, "refresh_token").to_owned();
    let expires_at = before["expires_at"].as_u64().expect("expires_at");
    eprintln!("signed in after {:?}", started.elapsed());

    // The token is due once its life left, as the file says it, is under the margin.
    let due = UNIX_EPOCH + Duration::from_secs(expires_at) - MARGIN + Duration::from_millis(500);
    if let Ok(wait) = due.duration_since(SystemTime::now()) {
        assert!(
            wait <= ROTATION_ACCESS_TOKEN_TTL,
            "the token expires at {expires_at}, more than its life from now"
        );
        std::thread::sleep(wait);
    }
    assert_eq!(idp.refresh_counts(), GrantCounts::default());
    idp.delay_token(DELAY);

    let spawned = Instant::now();
    let running: Vec<(&str, Running)> = (0..PROCESSES)
        .map(|index| {
            let runtime = if index % 2 == 0 { "tokio" } else { "smol" };
            let command = token_fresh(&store, Some(profile), MARGIN, runtime);
            (
                runtime,
                Running::spawn("latchkey token --fresh", GUARD, command),
            )
        })
        .collect();
    let spawning = spawned.elapsed();
    let ended: Vec<(&str, common::Finished)> = running
        .into_iter()
        .map(|(runtime, running)| (runtime, running.finish()))
        .collect();
    let batch = spawned.elapsed();
    let slowest = ended
        .iter()
        .map(|(_, e)| e.elapsed)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{PROCESSES} processes spawned in {spawning:?}, all ended after {batch:?} (slowest \
         {slowest:?})"
    );

    let mut new_access = None;
    let mut refreshed = 0;
    for (runtime, ended) in &ended {
        assert!(
            !says_login_required(ended),
            "{runtime}: {}",
            ended.describe()
        );
        let output = token_output(ended);
        let access = text(&output, "access_token").to_owned();
        let first = new_access.get_or_insert_with(|| access.clone());
        assert_eq!(
            &access,
            first,
            "{runtime}: every process prints the same token: {}",
            ended.describe()
        );
        assert_ne!(access, old_access, "{runtime}: {}", ended.describe());
        if output["refreshed"] == true {
            refreshed += 1;
        }
        ended.assert_never_shows(&[("refresh token", &old_refresh)]);
    }
    let new_access = new_access.expect("the processes' token");
    // Those that read the store before the refresh was stored say they refreshed; most of
    // them must have, or the test did not make them overlap.
    assert!(
        refreshed >= PROCESSES / 2,
        "only {refreshed} of {PROCESSES} started before the refresh ended: they did not overlap"
    );
    assert_eq!(
        settled_refresh_counts(&idp),
        GrantCounts {
            requests: 1,
            ok: 1,
            ..GrantCounts::default()
        },
        "the provider saw one refresh request, and no refresh failed"
    );
    let after = stored_entry(&store, profile);
    assert_eq!(text(&after, "access_token"), new_access);
    assert_ne!(text(&after, "refresh_token"), old_refresh, "rotated");
    assert!(after["expires_at"].as_u64().expect("expires_at") > expires_at);
    assert_eq!(userinfo_subject(&idp, &new_access), USER);
    eprintln!(
        "{refreshed} of {PROCESSES} said they refreshed; took {:?}",
        started.elapsed()
    );
}

#[test]
fn s60_a_refresh_lock_holder_killed_with_sigkill_does_not_block_the_next() {
    /// How long the provider holds the killed holder's refresh request back: far longer
    /// than anything after it may take.
    const HELD: Duration = Duration::from_secs(20);
    /// Longer than the token's whole life: every `token --fresh` here refreshes.
    const MARGIN: Duration = Duration::from_secs(60);
    /// How long the waiter, and the one started afterwards, may take once the holder is
    /// dead: far under [`HELD`].
    const PROMPTLY: Duration = Duration::from_secs(5);
    require_browser_tools();
    let started = Instant::now();
    let idp = OidcProvider::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = dir.path().join("tokens.json");
    let before = sign_in(&idp, ROTATION, &store, None);
    let old_access = text(&before, "access_token").to_owned();
    let old_refresh = text(&before, "refresh_token").to_owned();

    // The holder takes the lock, then sends its refresh request, which the provider holds.
    idp.delay_token(HELD);
    let mut holder = Running::spawn(
        "latchkey token --fresh (holder)",
        GUARD,
        token_fresh(&store, None, MARGIN, "smol"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while idp.refresh_counts().requests == 0 {
        let exited = lock(&holder.child).try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            holder.fail("the holder's refresh request never reached the provider");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let lock_file = refresh_lock_file(&store, DEFAULT_PROFILE);
    assert!(lock_file.is_file(), "no lock file {}", lock_file.display());

    // A second one waits for the lock meanwhile (it polls every 100 ms).
    let waiter = Running::spawn(
        "latchkey token --fresh (waiter)",
        GUARD,
        token_fresh(&store, None, MARGIN, "tokio"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    if let Ok(Some(status)) = lock(&waiter.child).try_wait() {
        panic!("the waiter did not wait for the lock: it exited {status}");
    }
    assert_eq!(
        idp.refresh_counts(),
        GrantCounts {
            requests: 1,
            ..GrantCounts::default()
        },
        "the waiter sent no refresh while the holder held the lock"
    );

    // From now on requests are answered at once; the holder's stays held until it dies.
    idp.delay_token(Duration::ZERO);
    let killed_at = Instant::now();
    let _ = lock(&holder.child).kill();
    let killed = holder.finish();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(killed.status.signal(), Some(9), "{}", killed.describe());
    }
    assert!(!killed.status.success(), "{}", killed.describe());

    // The waiter takes the lock the dead holder left, and refreshes.
    let waited = waiter.finish();
    let after_kill = killed_at.elapsed();
    let output = token_output(&waited);
    eprintln!("the waiter ended {after_kill:?} after the kill");
    assert!(
        after_kill < PROMPTLY,
        "the waiter ended {after_kill:?} after the holder was killed: {}",
        waited.describe()
    );
    let fresh = text(&output, "access_token").to_owned();
    assert_ne!(fresh, old_access, "{}", waited.describe());
    assert_eq!(output["refreshed"], true, "{}", waited.describe());
    assert_eq!(
        settled_refresh_counts(&idp),
        GrantCounts {
            requests: 2,
            ok: 1,
            dropped: 1,
            ..GrantCounts::default()
        },
        "the dead holder's request was dropped unanswered (its refresh token never rotated); \
         the waiter's succeeded"
    );
    let stored = stored_entry(&store, DEFAULT_PROFILE);
    assert_eq!(text(&stored, "access_token"), fresh);
    assert_ne!(text(&stored, "refresh_token"), old_refresh);

    // The dead holder's lock file is still there, and blocks nobody either.
    assert!(lock_file.is_file(), "no lock file {}", lock_file.display());
    let next = Running::spawn(
        "latchkey token --fresh (next)",
        GUARD,
        token_fresh(&store, None, MARGIN, "smol"),
    )
    .finish();
    let output = token_output(&next);
    assert!(next.elapsed < PROMPTLY, "{}", next.describe());
    let newest = text(&output, "access_token").to_owned();
    assert_ne!(
        newest, fresh,
        "a margin over the token's life refreshes again"
    );
    assert!(!says_login_required(&next), "{}", next.describe());
    assert_eq!(
        settled_refresh_counts(&idp),
        GrantCounts {
            requests: 3,
            ok: 2,
            dropped: 1,
            ..GrantCounts::default()
        }
    );
    assert_eq!(userinfo_subject(&idp, &newest), USER);
    eprintln!(
        "the next one took {:?}; the test {:?}",
        next.elapsed,
        started.elapsed()
    );
}

#[test]
fn s60_a_second_login_for_the_same_profile_is_refused_while_the_first_waits() {
    require_browser_tools();
    let started = Instant::now();
    let idp = OidcProvider::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = dir.path().join("tokens.json");
    let mut first = Running::spawn(
        "latchkey login (first)",
        GUARD,
        login_as(&idp, PUBLIC, &store, Some("work")),
    );
    let (redirect_uri, url) = read_start(&mut first, &idp);
    let pid = lock(&first.child).id();

    // The same profile and token file: refused at once, naming the first.
    let second = Running::spawn(
        "latchkey login (second)",
        GUARD,
        login_as(&idp, PUBLIC, &store, Some("work")),
    )
    .finish();
    second.assert_code(1);
    assert_eq!(second.event_names(), ["error"], "{}", second.describe());
    let error = &second.events()[0];
    assert_eq!(error["kind"], "login_in_progress", "{}", second.describe());
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("process {pid}")) && message.contains("work"),
        "the message names the first login's process {pid} and the profile: {}",
        second.describe()
    );
    assert!(
        second.elapsed < Duration::from_secs(10),
        "{}",
        second.describe()
    );
    let first_ended = lock(&first.child).try_wait();
    if let Ok(Some(status)) = first_ended {
        first.fail(&format!(
            "the first login ended ({status}) when the second was refused"
        ));
    }

    // Another profile of the same file meanwhile: not refused.
    let mut other = Running::spawn(
        "latchkey login (home)",
        GUARD,
        login_as(&idp, PUBLIC, &store, Some("home")),
    );
    let (other_redirect_uri, other_url) = read_start(&mut other, &idp);
    assert_ne!(other_redirect_uri, redirect_uri);

    // The first completes as if nothing had happened, then the other.
    let browsed = browse(&url, &redirect_uri, false)
        .unwrap_or_else(|why| first.fail(&with_provider_state(&idp, &why)));
    assert_eq!(browsed.status, 200, "{}", browsed.raw);
    assert!(browsed.page_text.contains("Signed in"), "{}", browsed.raw);
    let work = assert_profile_signed_in(first, &idp, &store, "work", None);
    let browsed = browse(&other_url, &other_redirect_uri, false)
        .unwrap_or_else(|why| other.fail(&with_provider_state(&idp, &why)));
    assert_eq!(browsed.status, 200, "{}", browsed.raw);
    let home = assert_profile_signed_in(other, &idp, &store, "home", None);
    assert_ne!(work["access_token"], home["access_token"]);
    assert_eq!(
        stored_entry(&store, "work"),
        work,
        "the home login left work alone"
    );

    // Once the first has ended, a login for its profile starts again.
    let mut again = Running::spawn(
        "latchkey login (again)",
        GUARD,
        login_as(&idp, PUBLIC, &store, Some("work")),
    );
    read_start(&mut again, &idp);
    drop(again);
    eprintln!("took {:?}", started.elapsed());
}

#[test]
fn profiles_two_logins_in_one_store_are_listed_shown_and_logged_out_one_at_a_time() {
    require_browser_tools();
    let started = Instant::now();
    let idp = OidcProvider::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = dir.path().join("tokens.json");
    let store_text = store.display().to_string();
    let work = sign_in(&idp, BASIC, &store, Some("work"));
    let home = sign_in(&idp, PUBLIC, &store, Some("home"));
    let work_access = text(&work, "access_token").to_owned();
    let home_access = text(&home, "access_token").to_owned();
    assert_ne!(work_access, home_access);

    // `profiles --json`: one line per profile, in order, never a secret.
    let listed = Running::spawn(
        "latchkey profiles --json",
        GUARD,
        latchkey(&store, &["profiles", "--json"]),
    )
    .finish();
    listed.assert_code(0);
    let profiles = listed.events();
    let names: Vec<&str> = profiles.iter().map(|p| text(p, "name")).collect();
    assert_eq!(names, ["home", "work"], "{}", listed.describe());
    for (profile, client, entry) in [(&profiles[0], PUBLIC, &home), (&profiles[1], BASIC, &work)] {
        let shown = listed.describe();
        assert_eq!(profile["event"], "profile", "{shown}");
        assert_eq!(profile["provider"]["issuer"], idp.issuer(), "{shown}");
        assert_eq!(
            profile["provider"]["token_endpoint"],
            idp.token_endpoint(),
            "{shown}"
        );
        assert_eq!(profile["provider"]["client_id"], client.id, "{shown}");
        assert_eq!(profile["tokens"], "file", "{shown}");
        assert_eq!(profile["store"], store_text.as_str(), "{shown}");
        assert_eq!(profile["signed_in"], true, "{shown}");
        assert_eq!(profile["refresh_token"], true, "{shown}");
        assert_eq!(profile["expires_at"], entry["expires_at"], "{shown}");
        assert!(profile["expires_at"].is_u64(), "{shown}");
        assert_eq!(profile["identity"]["sub"], USER, "{shown}");
        assert_eq!(profile["identity"]["iss"], idp.issuer(), "{shown}");
        assert!(profile.get("error").is_none(), "{shown}");
    }
    let secrets = [
        ("work's access token", work_access.as_str()),
        ("home's access token", home_access.as_str()),
        ("work's refresh token", text(&work, "refresh_token")),
        ("home's refresh token", text(&home, "refresh_token")),
        ("client secret", BASIC.secret.expect("a secret")),
    ];
    listed.assert_never_shows(&secrets);

    // The table for people: a header and a row per profile.
    let table =
        Running::spawn("latchkey profiles", GUARD, latchkey(&store, &["profiles"])).finish();
    table.assert_code(0);
    eprintln!("latchkey profiles:\n{}", table.stdout_text());
    let shown = table.describe();
    assert_eq!(table.stdout.len(), 3, "{shown}");
    assert!(table.stdout[0].starts_with("PROFILE "), "{shown}");
    for (row, name) in table.stdout[1..].iter().zip(["home", "work"]) {
        assert!(row.starts_with(&format!("{name} ")), "{shown}");
        assert!(row.contains(idp.issuer()), "{shown}");
        assert!(row.contains(USER), "{shown}");
        assert!(row.contains("expires in"), "{shown}");
        assert!(row.contains(&store_text), "{shown}");
    }
    table.assert_never_shows(&secrets);

    // Each profile's own token.
    for (profile, access) in [("work", &work_access), ("home", &home_access)] {
        let shown = Running::spawn(
            "latchkey token --reveal",
            GUARD,
            latchkey(&store, &["token", "--profile", profile, "--reveal"]),
        )
        .finish();
        shown.assert_code(0);
        assert_eq!(
            shown.stdout.last(),
            Some(access),
            "{profile}: {}",
            shown.describe()
        );
    }

    // Logging out of work leaves home alone.
    let mut logout = latchkey(
        &store,
        &[
            "logout",
            "--profile",
            "work",
            "--json",
            "--client-secret-env",
            SECRET_VAR,
        ],
    );
    logout.env(SECRET_VAR, BASIC.secret.expect("a secret"));
    let logged_out = Running::spawn("latchkey logout", GUARD, logout).finish();
    logged_out.assert_code(0);
    assert_eq!(
        logged_out.event_names(),
        ["revoked", "revoked", "logged_out"],
        "{}",
        logged_out.describe()
    );
    logged_out.assert_never_shows(&secrets);
    assert_eq!(
        userinfo_status(&idp, &work_access),
        "401",
        "work's access token was revoked"
    );
    assert_eq!(
        userinfo_subject(&idp, &home_access),
        USER,
        "home's still holds"
    );
    assert_eq!(
        stored_entry(&store, "home"),
        home,
        "home's entry is untouched"
    );

    let listed = Running::spawn(
        "latchkey profiles --json",
        GUARD,
        latchkey(&store, &["profiles", "--json"]),
    )
    .finish();
    listed.assert_code(0);
    let names: Vec<String> = listed
        .events()
        .iter()
        .map(|p| text(p, "name").to_owned())
        .collect();
    assert_eq!(names, ["home"], "{}", listed.describe());

    // work: no tokens, and the advice names its login.
    let advice = "latchkey login --profile work";
    let shown = Running::spawn(
        "latchkey token --profile work",
        GUARD,
        latchkey(&store, &["token", "--profile", "work"]),
    )
    .finish();
    shown.assert_code(1);
    assert!(shown.stderr.contains(advice), "{}", shown.describe());
    let fresh = Running::spawn(
        "latchkey token --fresh --profile work",
        GUARD,
        latchkey(&store, &["token", "--profile", "work", "--fresh", "--json"]),
    )
    .finish();
    fresh.assert_code(1);
    assert_eq!(fresh.event_names(), ["error"], "{}", fresh.describe());
    let error = &fresh.events()[0];
    assert_eq!(error["kind"], "login_required", "{}", fresh.describe());
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains(advice),
        "{}",
        fresh.describe()
    );
    eprintln!("took {:?}", started.elapsed());
}

/// `private_key_jwt` through the command: the login, a forced refresh and the logout each
/// authenticate with an assertion signed by `--client-key`, and nothing else (S63).
#[test]
fn s63_a_private_key_jwt_client_logs_in_refreshes_and_logs_out_with_its_key() {
    require_browser_tools();
    let idp = OidcProvider::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = dir.path().join("tokens.json");
    let key = format!(
        "{}/../tests/vectors/keys/p256.sec1.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut command = login_as(&idp, JWT, &store, None);
    command.args(["--auth-method", "private_key_jwt", "--client-key", &key]);
    let mut login = Running::spawn("latchkey login --client-key", GUARD, command);
    let (redirect_uri, url) = read_start(&mut login, &idp);
    let browsed = browse(&url, &redirect_uri, false)
        .unwrap_or_else(|why| login.fail(&with_provider_state(&idp, &why)));
    assert_eq!(browsed.status, 200, "{}", browsed.raw);
    let entry = assert_profile_signed_in(login, &idp, &store, DEFAULT_PROFILE, None);
    let first_access = text(&entry, "access_token").to_owned();

    // A refresh needs the key: without it, the advice names the option.
    let margin = Duration::from_secs(2 * 3600);
    let without = Running::spawn(
        "latchkey token --fresh without the key",
        GUARD,
        token_fresh(&store, None, margin, "smol"),
    )
    .finish();
    without.assert_code(2);
    assert!(
        without.describe().contains("pass --client-key PATH"),
        "{}",
        without.describe()
    );
    for runtime in ["smol", "tokio"] {
        let mut fresh = token_fresh(&store, None, margin, runtime);
        fresh.args(["--client-key", &key]);
        let ended = Running::spawn("latchkey token --fresh --client-key", GUARD, fresh).finish();
        let output = token_output(&ended);
        assert_ne!(
            text(&output, "access_token"),
            first_access,
            "{runtime}: refreshed"
        );
    }
    let refreshes = settled_refresh_counts(&idp);
    assert_eq!((refreshes.requests, refreshes.ok), (2, 2), "{refreshes:?}");

    let mut logout = latchkey(&store, &["logout", "--json", "--client-key", &key]);
    logout.env_remove(SECRET_VAR);
    let logged_out = Running::spawn("latchkey logout --client-key", GUARD, logout).finish();
    logged_out.assert_code(0);
    assert_eq!(
        logged_out.event_names(),
        ["revoked", "revoked", "logged_out"],
        "{}",
        logged_out.describe()
    );
}

/// A key the command cannot sign with is refused before any browser opens.
#[test]
fn s63_a_weak_or_missing_client_key_is_a_configuration_error() {
    let idp_free = |args: &[&str]| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = dir.path().join("tokens.json");
        let mut command = latchkey(&store, &["login", "--json", "--no-browser"]);
        command.args([
            "--authorization-endpoint",
            "https://idp.example/authorize",
            "--token-endpoint",
            "https://idp.example/token",
            "--issuer",
            "https://idp.example",
            "--client-id",
            "cli",
            "--auth-method",
            "private_key_jwt",
        ]);
        command.args(args);
        Running::spawn("latchkey login", GUARD, command).finish()
    };
    let keys = format!("{}/../tests/vectors/keys", env!("CARGO_MANIFEST_DIR"));
    for (args, says) in [
        (vec![], "--client-key"),
        (
            vec![
                "--client-key".to_owned(),
                format!("{keys}/rsa1024.pkcs8.pem"),
            ],
            "1024-bit",
        ),
        (
            vec![
                "--client-key".to_owned(),
                format!("{keys}/p256.encrypted.pem"),
            ],
            "encrypted",
        ),
        (
            vec!["--client-key".to_owned(), format!("{keys}/p256.public.pem")],
            "public key",
        ),
        (
            vec!["--client-key".to_owned(), format!("{keys}/missing.pem")],
            "cannot read",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ended = idp_free(&args);
        assert_eq!(
            ended.status.code(),
            Some(2),
            "{args:?}: {}",
            ended.describe()
        );
        let error = ended
            .events()
            .into_iter()
            .find(|event| event["event"] == "error")
            .unwrap_or_else(|| panic!("{args:?}: no error event: {}", ended.describe()));
        assert_eq!(error["kind"], "config", "{}", ended.describe());
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{args:?}: {message}");
    }
}

/// The provider's user-info answer (head and body) for `access_token` presented as a
/// DPoP-bound token with `proof`.
fn userinfo_with_proof(idp: &OidcProvider, access_token: &str, proof: &str) -> String {
    userinfo_with(
        idp,
        &format!("Authorization: DPoP {access_token}\r\nDPoP: {proof}\r\n"),
    )
}

/// `latchkey proof --json` for `GET /me`, with `nonce`: the proof.
fn proof_for_me(idp: &OidcProvider, store: &Path, nonce: Option<&str>) -> String {
    let me = format!("{}/me?page=1", idp.issuer());
    let mut command = latchkey(store, &["proof", "--json", "--method", "GET", "--url", &me]);
    if let Some(nonce) = nonce {
        command.args(["--nonce", nonce]);
    }
    let ended = Running::spawn("latchkey proof", GUARD, command).finish();
    // One object, as `token --json` prints.
    let output = &token_output(&ended);
    assert_eq!(
        output["htu"],
        format!("{}/me", idp.issuer()),
        "{}",
        ended.describe()
    );
    text(output, "proof").to_owned()
}

/// DPoP through the command: `login --dpop` stores tokens bound to a key of its own, which
/// `latchkey proof` proves possession of for the script's own request, and which a refresh
/// keeps (S61, S62).
#[test]
fn s61_a_dpop_login_through_the_command_and_its_proofs_for_a_script() {
    require_browser_tools();
    let idp = OidcProvider::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = dir.path().join("tokens.json");
    let mut command = login_as(&idp, PUBLIC, &store, None);
    command.arg("--dpop");
    let mut login = Running::spawn("latchkey login --dpop", GUARD, command);
    let (redirect_uri, url) = read_start(&mut login, &idp);
    assert!(url.contains("dpop_jkt="), "{url}");
    let browsed = browse(&url, &redirect_uri, false)
        .unwrap_or_else(|why| login.fail(&with_provider_state(&idp, &why)));
    assert_eq!(browsed.status, 200, "{}", browsed.raw);
    let ended = login.finish();
    ended.assert_code(0);
    assert_eq!(ended.event_names(), SUCCESS_EVENTS, "{}", ended.describe());
    assert_eq!(
        ended.events()[3]["token_type"],
        "DPoP",
        "{}",
        ended.describe()
    );
    let entry = stored_entry(&store, DEFAULT_PROFILE);
    let access_token = text(&entry, "access_token").to_owned();
    let stored_key = entry["dpop_key"]["pkcs8"]
        .as_str()
        .expect("the key is stored")
        .to_owned();
    ended.assert_never_shows(&[("access token", &access_token), ("DPoP key", &stored_key)]);

    // A bearer presentation of the token is refused; with a proof it is honoured, once
    // the provider's nonce is in it.
    assert!(userinfo(&idp, &access_token).starts_with("HTTP/1.1 401"));
    let first = userinfo_with_proof(&idp, &access_token, &proof_for_me(&idp, &store, None));
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");
    let nonce = first
        .lines()
        .find_map(|line| line.strip_prefix("dpop-nonce: "))
        .unwrap_or_else(|| panic!("the provider names its nonce: {first}"))
        .trim()
        .to_owned();
    let second = userinfo_with_proof(
        &idp,
        &access_token,
        &proof_for_me(&idp, &store, Some(&nonce)),
    );
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.contains(USER), "{second}");

    // `token --json` says what the tokens are; a forced refresh keeps them bound.
    let shown = Running::spawn(
        "latchkey token --json",
        GUARD,
        latchkey(&store, &["token", "--json"]),
    )
    .finish();
    assert_eq!(token_output(&shown)["token_type"], "DPoP");
    let fresh = Running::spawn(
        "latchkey token --fresh",
        GUARD,
        token_fresh(&store, None, Duration::from_secs(2 * 3600), "tokio"),
    )
    .finish();
    let output = token_output(&fresh);
    assert_eq!(output["token_type"], "DPoP", "{}", fresh.describe());
    assert_ne!(text(&output, "access_token"), access_token);
    let entry = stored_entry(&store, DEFAULT_PROFILE);
    assert_eq!(
        entry["dpop_key"]["pkcs8"],
        stored_key.as_str(),
        "the same key"
    );
}

#[test]
fn latchkey_proof_refuses_bearer_tokens_and_bad_requests() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = dir.path().join("tokens.json");
    let proof = |args: &[&str]| {
        let mut all = vec!["proof", "--json"];
        all.extend_from_slice(args);
        Running::spawn("latchkey proof", GUARD, latchkey(&store, &all)).finish()
    };
    let ended = proof(&["--method", "GET", "--url", "https://api.example/me"]);
    ended.assert_code(1);
    assert_eq!(
        ended.events()[0]["kind"],
        "login_required",
        "{}",
        ended.describe()
    );
    let ended = proof(&["--method", "GET", "--url", "/relative"]);
    ended.assert_code(2);
    assert_eq!(ended.events()[0]["kind"], "config", "{}", ended.describe());
    std::fs::write(
        &store,
        r#"{"version":1,"tokens":{"default":{"access_token":"bearer-1","token_type":"Bearer"}}}"#,
    )
    .expect("a token file");
    let ended = proof(&["--method", "GET", "--url", "https://api.example/me"]);
    ended.assert_code(1);
    assert_eq!(
        ended.events()[0]["kind"],
        "not_dpop_bound",
        "{}",
        ended.describe()
    );
}

/// `login --par`: the authorization request is pushed first (RFC 9126); the URL the
/// command prints carries only the client id and the provider's request URI, and the
/// login completes for a client whose provider requires the push.
#[test]
fn a_pushed_authorization_request_through_the_command() {
    require_browser_tools();
    let idp = OidcProvider::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = dir.path().join("tokens.json");
    let mut command = login_as(&idp, PAR, &store, None);
    command.args([
        "--par",
        "--par-endpoint",
        &format!("{}/request", idp.issuer()),
    ]);
    let mut login = Running::spawn("latchkey login --par", GUARD, command);
    let (redirect_uri, url) = read_start(&mut login, &idp);
    let query = url
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default();
    assert!(
        query.starts_with("client_id=par-client&request_uri="),
        "{url}"
    );
    assert!(!query.contains("state="), "{url}");
    let browsed = browse(&url, &redirect_uri, false)
        .unwrap_or_else(|why| login.fail(&with_provider_state(&idp, &why)));
    assert_eq!(browsed.status, 200, "{}", browsed.raw);
    assert_profile_signed_in(login, &idp, &store, DEFAULT_PROFILE, None);
}
