//! `latchkey login` where no browser can be opened: the device grant (`--device`, or chosen
//! by itself on an SSH session or without a display), its JSON events, errors and exit
//! codes; and, for a provider without a device endpoint, the authorization URL printed and
//! the address the browser ended on pasted back (S53). Against the development identity
//! provider, in its own rules and GitHub's.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Finished, Guard, Running, latchkey_command};
use latchkey_devidp::agent;
use latchkey_devidp::{Client, ClientAuth, Config, DevIdp, Quirk};
use serde_json::{Map, Value};
use tempfile::TempDir;

const CLIENT_ID: &str = "latchkey-device-test";
const LIMIT: Duration = Duration::from_secs(20);
const GUARD: Guard = Guard {
    limit: LIMIT,
    stdout_grace: None,
    stderr_wait: None,
};

/// The development identity provider with one public client for any loopback port, its
/// device codes living `expires_in`, asking for no polling interval (latchkey then polls
/// every second, its shortest).
fn start_idp(quirk: Quirk, expires_in: Duration) -> DevIdp {
    let client = Client {
        id: CLIENT_ID.into(),
        secret: None,
        auth: ClientAuth::None,
        redirect_uris: vec!["http://127.0.0.1/callback".into()],
    };
    let mut config = Config::new(vec![client]);
    config.quirk = quirk;
    config.device_interval = Duration::ZERO;
    config.device_expires_in = expires_in;
    DevIdp::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("start the IdP")
}

/// `latchkey login ARGS --client-id … --store …` with an environment that reaches no proxy
/// and no user file, on a machine that can open a browser unless the test says otherwise.
fn login(store: &Path, args: &[&str]) -> Command {
    let mut command = latchkey_command();
    command
        .arg("login")
        .args(args)
        .args(["--client-id", CLIENT_ID])
        .arg("--store")
        .arg(store);
    for var in ["SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"] {
        command.env_remove(var);
    }
    command.env("DISPLAY", ":99");
    command
}

fn store() -> (TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("tokens.json");
    (dir, path)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn text<'e>(event: &'e Map<String, Value>, name: &str) -> &'e str {
    event[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} is a string in {event:?}"))
}

impl LastError for Finished {
    fn last_error(&self, kind: &str) -> String {
        let events = self.events();
        let last = events
            .last()
            .unwrap_or_else(|| panic!("{}", self.describe()));
        assert_eq!(last["event"], "error", "{}", self.describe());
        assert_eq!(last["kind"], kind, "{}", self.describe());
        text(last, "message").to_owned()
    }
}

trait LastError {
    /// The last event, which must be an error of `kind`: its message.
    fn last_error(&self, kind: &str) -> String;
}

#[test]
fn login_device_shows_the_code_then_stores_verified_tokens_once_approved() {
    let idp = start_idp(Quirk::None, Duration::from_secs(600));
    let (_dir, path) = store();
    let command = login(
        &path,
        &[
            "--json",
            "--device",
            "--issuer",
            &idp.issuer(),
            "--scope",
            "openid",
        ],
    );
    let mut running = Running::spawn("latchkey", GUARD, command);
    let shown = running.expect_event("device_authorization");
    let code = text(&shown, "user_code").to_owned();
    assert_eq!(
        text(&shown, "verification_uri"),
        format!("{}/device", idp.base_url())
    );
    assert_eq!(
        text(&shown, "verification_uri_complete"),
        format!("{}/device?user_code={code}", idp.base_url())
    );
    assert_eq!(shown["interval"], 1);
    let expires_at = shown["expires_at"].as_u64().expect("Unix seconds");
    assert!(
        (unix_now() + 590..=unix_now() + 601).contains(&expires_at),
        "{expires_at}"
    );
    assert!(idp.approve_device(&code, "alice"));
    let token = running.expect_event("token");
    assert_eq!(token["identity"]["sub"], "alice");
    running.expect_event("stored");
    let finished = running.finish();
    finished.assert_code(0);
    assert_eq!(
        finished.event_names(),
        ["device_authorization", "token", "stored"],
        "no listener, no browser"
    );
    let file = std::fs::read_to_string(&path).expect("the token file");
    assert!(file.contains("access_token"), "{file}");
}

#[test]
fn login_device_denied_is_access_denied_with_exit_code_1() {
    let idp = start_idp(Quirk::None, Duration::from_secs(600));
    let (_dir, path) = store();
    let command = login(&path, &["--json", "--device", "--issuer", &idp.issuer()]);
    let mut running = Running::spawn("latchkey", GUARD, command);
    let shown = running.expect_event("device_authorization");
    assert!(idp.deny_device(text(&shown, "user_code")));
    let finished = running.finish();
    finished.assert_code(1);
    let message = finished.last_error("access_denied");
    assert!(message.contains("approve"), "{message}");
    assert!(!path.exists(), "nothing stored");
}

#[test]
fn login_device_nobody_approves_is_expired_token_with_exit_code_1() {
    let idp = start_idp(Quirk::None, Duration::from_secs(2));
    let (_dir, path) = store();
    let finished = Running::spawn(
        "latchkey",
        GUARD,
        login(&path, &["--json", "--device", "--issuer", &idp.issuer()]),
    )
    .finish();
    finished.assert_code(1);
    assert_eq!(finished.event_names(), ["device_authorization", "error"]);
    let message = finished.last_error("expired_token");
    assert!(message.contains("expired"), "{message}");
    // Polled at most once a second for the code's two seconds.
    assert!(idp.stats().device_polls <= 2, "{:?}", idp.stats());
}

#[test]
fn login_device_without_a_device_endpoint_is_device_unsupported_with_exit_code_2() {
    let idp = start_idp(Quirk::None, Duration::from_secs(600));
    let (_dir, path) = store();
    let finished = Running::spawn(
        "latchkey",
        GUARD,
        login(
            &path,
            &[
                "--json",
                "--device",
                "--authorization-endpoint",
                &idp.authorization_endpoint(),
                "--token-endpoint",
                &idp.token_endpoint(),
            ],
        ),
    )
    .finish();
    finished.assert_code(2);
    let message = finished.last_error("device_unsupported");
    assert!(
        message.contains("--device-authorization-endpoint"),
        "{message}"
    );
    assert_eq!(idp.stats().requests, 0);
}

/// GitHub: form-encoded answers, errors with HTTP 200, no `verification_uri_complete`, the
/// endpoint given by hand.
#[test]
fn login_device_against_githubs_quirks() {
    let idp = start_idp(Quirk::GitHub, Duration::from_secs(900));
    let (_dir, path) = store();
    let device_endpoint = format!("{}/login/device/code", idp.base_url());
    let command = login(
        &path,
        &[
            "--json",
            "--device",
            "--authorization-endpoint",
            &idp.authorization_endpoint(),
            "--token-endpoint",
            &idp.token_endpoint(),
            "--device-authorization-endpoint",
            &device_endpoint,
            "--scope",
            "repo",
        ],
    );
    let mut running = Running::spawn("latchkey", GUARD, command);
    let shown = running.expect_event("device_authorization");
    assert!(
        shown.get("verification_uri_complete").is_none(),
        "{shown:?}"
    );
    assert_eq!(
        text(&shown, "verification_uri"),
        format!("{}/login/device", idp.base_url())
    );
    // Let one poll meet `authorization_pending` (at HTTP 200) first.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(idp.approve_device(text(&shown, "user_code"), "octocat"));
    running.expect_event("token");
    running.expect_event("stored");
    running.finish().assert_code(0);
    assert!(idp.stats().device_polls >= 2, "{:?}", idp.stats());
}

#[test]
fn on_an_ssh_session_login_chooses_the_device_grant_and_says_why() {
    let idp = start_idp(Quirk::None, Duration::from_secs(600));
    let (_dir, path) = store();
    let mut command = login(&path, &["--issuer", &idp.issuer(), "--scope", "openid"]);
    command.env("SSH_CONNECTION", "192.0.2.1 50000 192.0.2.2 22");
    let mut running = Running::spawn("latchkey", GUARD, command);
    let mut shown = Vec::new();
    let code = loop {
        let line = running.next_line().expect("the code is shown");
        shown.push(line.clone());
        if let Some(code) = line.trim().strip_prefix('│') {
            break code
                .trim_matches(|c: char| c == '│' || c.is_whitespace())
                .to_owned();
        }
    };
    assert!(idp.approve_device(&code, "bob"));
    let finished = running.finish();
    finished.assert_code(0);
    let out = finished.stdout_text();
    assert!(out.contains("this is an SSH session"), "{out}");
    assert!(
        out.contains(&format!("To sign in, open {}/device", idp.base_url())),
        "{out}"
    );
    assert!(out.contains("The code expires in 10 min."), "{out}");
    assert!(out.contains("Signed in as bob@example.com"), "{out}");
    assert!(
        !out.contains("\u{1b}["),
        "no terminal codes when not on a terminal: {out}"
    );
}

#[test]
fn without_a_display_login_chooses_the_device_grant_and_no_device_keeps_the_listener() {
    let idp = start_idp(Quirk::None, Duration::from_secs(600));
    let (_dir, path) = store();
    let mut command = login(&path, &["--json", "--issuer", &idp.issuer()]);
    command.env_remove("DISPLAY").env_remove("WAYLAND_DISPLAY");
    let mut running = Running::spawn("latchkey", GUARD, command);
    running.expect_event("device_authorization");
    drop(running);

    // `--no-device`: the loopback listener, the URL printed for another device.
    let mut command = login(
        &path,
        &[
            "--json",
            "--no-device",
            "--issuer",
            &idp.issuer(),
            "--timeout",
            "1",
        ],
    );
    command.env("SSH_TTY", "/dev/pts/7");
    let finished = Running::spawn("latchkey", GUARD, command).finish();
    assert_eq!(
        finished.event_names(),
        ["listening", "authorize", "error"],
        "{}",
        finished.describe()
    );
    finished.last_error("timeout");
}

#[test]
fn device_and_no_device_together_are_a_usage_error() {
    let (_dir, path) = store();
    let finished = Running::spawn(
        "latchkey",
        GUARD,
        login(
            &path,
            &["--device", "--no-device", "--issuer", "https://idp.example"],
        ),
    )
    .finish();
    finished.assert_code(2);
    assert!(
        finished.stderr.contains("contradict"),
        "{}",
        finished.describe()
    );
}

/// S53: without a device endpoint and without a browser here, the URL is printed and the
/// address the browser ended on elsewhere is pasted back: garbage and another login's
/// address are refused, the login goes on waiting; the real one completes it.
#[test]
fn no_browser_without_a_device_endpoint_takes_the_pasted_address() {
    let idp = start_idp(Quirk::None, Duration::from_secs(600));
    let (_dir, path) = store();
    let command = login(
        &path,
        &[
            "--json",
            "--no-browser",
            "--authorization-endpoint",
            &idp.authorization_endpoint(),
            "--token-endpoint",
            &idp.token_endpoint(),
        ],
    );
    let (mut running, mut stdin) = Running::spawn_piped("latchkey", GUARD, command);
    let listening = running.expect_event("listening");
    let redirect_uri = text(&listening, "redirect_uri").to_owned();
    let authorize = running.expect_event("authorize");
    // The user signs in on another machine; the redirect to this one's port fails there,
    // and the address bar shows where it went.
    let (_, fields, _) = agent::get(text(&authorize, "url"), &[]).expect("the sign-in");
    let callback = fields
        .into_iter()
        .find_map(|(name, value)| name.eq_ignore_ascii_case("location").then_some(value))
        .expect("redirected back");
    assert!(
        callback.starts_with(&format!("{redirect_uri}?")),
        "{callback}"
    );

    let forged_state = callback.replace("state=", "state=X");
    for paste in [
        "not a URL at all",
        "https://evil.example/callback?code=x&state=y",
        &forged_state,
    ] {
        writeln!(stdin, "{paste}").expect("typing");
        let refused = running.expect_event("paste_refused");
        assert!(!text(&refused, "message").is_empty());
    }
    writeln!(stdin, "  {callback}  ").expect("pasting");
    running.expect_event("callback");
    running.expect_event("token");
    running.expect_event("stored");
    let finished = running.finish();
    finished.assert_code(0);
    assert_eq!(idp.stats().token_requests, 1);
}

/// S52: a verification URI the provider made up to fool the user's terminal (escape
/// sequences) or browser (`javascript:`) is never shown: the login fails before anything is
/// printed or opened, and the provider is not polled.
#[test]
fn s52_a_hostile_verification_uri_is_never_shown() {
    use std::io::Read;
    use std::net::TcpListener;
    let answers = [
        r#"{"device_code":"d","user_code":"WDJB-MJHT","verification_uri":"https://idp.example/device\u001b[2J"}"#,
        r#"{"device_code":"d","user_code":"WDJB-MJHT","verification_uri":"javascript:alert(1)"}"#,
        r#"{"device_code":"d","user_code":"WDJB-MJHT","verification_uri":"http://idp.example/device"}"#,
        r#"{"device_code":"d","user_code":"WDJB\u001b]0;pwned\u0007","verification_uri":"https://idp.example/device"}"#,
        r#"{"device_code":"d","user_code":"WDJB-MJHT","verification_uri":"https://idp.example/device","verification_uri_complete":"https://idp.example/device?user_code=WDJB MJHT"}"#,
    ];
    for answer in answers {
        // A device endpoint that answers once, with `answer`.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let endpoint = format!("http://{}/device", listener.local_addr().expect("address"));
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("the device request");
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{answer}",
                answer.len()
            );
            stream.write_all(response.as_bytes()).expect("the answer");
        });
        let (_dir, path) = store();
        let finished = Running::spawn(
            "latchkey",
            GUARD,
            login(
                &path,
                &[
                    "--device",
                    "--authorization-endpoint",
                    "https://idp.example/authorize",
                    "--token-endpoint",
                    "https://idp.example/token",
                    "--device-authorization-endpoint",
                    &endpoint,
                ],
            ),
        )
        .finish();
        server.join().expect("the fake device endpoint");
        finished.assert_code(1);
        let shown = format!("{}{}", finished.stdout_text(), finished.stderr);
        assert!(!shown.contains('\u{1b}'), "{shown:?}");
        assert!(!shown.contains("enter this code"), "{shown}");
        assert!(
            shown.contains("unusable device authorization response"),
            "{shown}"
        );
    }
}
