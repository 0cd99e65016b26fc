//! `latchkey login --keyring` against a real Secret Service (S59): gnome-keyring on a
//! private D-Bus session bus (`latchkey_tests::secret_service`), the development identity
//! provider, and the scripted user agent as the browser. The tokens go to the keychain and
//! nowhere else; a locked, absent or unreachable keychain fails with kind `store` before the
//! browser is sent anywhere, and never falls back to the file.
//!
//! Missing tools (gnome-keyring, dbus, libsecret-tools, gdbus) fail with installation
//! advice; they never skip.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Finished, Guard, Running, latchkey_command};
use latchkey_devidp::{Client, ClientAuth, Config, DevIdp};
use latchkey_tests::secret_service::SecretService;
use serde_json::Value;

const GUARD: Guard = Guard {
    limit: Duration::from_secs(30),
    stdout_grace: None,
    stderr_wait: None,
};
const CLIENT_ID: &str = "latchkey-keychain-test";

fn start_idp() -> DevIdp {
    let client = Client {
        id: CLIENT_ID.into(),
        secret: None,
        auth: ClientAuth::None,
        redirect_uris: vec!["http://127.0.0.1/callback".into()],
    };
    DevIdp::start(Config::new(vec![client]), (Ipv4Addr::LOCALHOST, 0).into())
        .expect("starting the DevIdp")
}

/// `latchkey ARGS` on the Secret Service's bus (none when `bus` is `None`: no address and
/// no runtime directory, so that not even the user's own bus is found).
fn latchkey(bus: Option<&SecretService>, args: &[&str], store: &Path) -> Command {
    let mut command = latchkey_command();
    command.args(args).arg("--store").arg(store);
    command
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY");
    if let Some(bus) = bus {
        command.envs(bus.env());
    }
    command
}

fn login_args(idp: &DevIdp) -> Vec<String> {
    [
        "login",
        "--json",
        "--no-browser",
        "--no-device",
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
        "--scope",
        "openid",
        "--redirect-uri",
        "http://127.0.0.1:0/callback",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A login through the scripted browser; returns the finished command.
fn log_in(bus: Option<&SecretService>, idp: &DevIdp, store: &Path, extra: &[&str]) -> Finished {
    let args = login_args(idp);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(extra);
    let mut running = Running::spawn("latchkey login", GUARD, latchkey(bus, &args, store));
    running.expect_event("listening");
    let authorize = running.expect_event("authorize");
    let url = authorize["url"].as_str().unwrap_or_default().to_owned();
    latchkey_devidp::agent::browse(&url).expect("the scripted browser");
    running.finish()
}

fn run(bus: Option<&SecretService>, args: &[&str], store: &Path) -> Finished {
    Running::spawn("latchkey", GUARD, latchkey(bus, args, store)).finish()
}

/// The keychain items latchkey wrote: account → token set JSON.
fn latchkey_items(bus: &SecretService) -> BTreeMap<String, Value> {
    bus.items()
        .into_iter()
        .filter(|(attributes, _)| attributes.get("service").map(String::as_str) == Some("latchkey"))
        .map(|(attributes, secret)| {
            let account = attributes.get("username").cloned().unwrap_or_default();
            let tokens = serde_json::from_slice(&secret).expect("a token set as JSON");
            (account, tokens)
        })
        .collect()
}

/// The kind of the error event a `--json` command ended with.
fn error_kind(finished: &Finished) -> Option<String> {
    let events = finished.events();
    let last = events.last()?;
    (last["event"] == "error").then(|| last["kind"].as_str().unwrap_or_default().to_owned())
}

fn access_token(tokens: &Value) -> String {
    tokens["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

#[test]
fn s59_keyring_login_keeps_the_tokens_in_the_secret_service_and_none_in_the_file() {
    let bus = SecretService::start();
    let idp = start_idp();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens.json");

    let finished = log_in(Some(&bus), &idp, &path, &["--keyring"]);
    finished.assert_code(0);
    let events = finished.events();
    let stored = events.last().expect("events");
    assert_eq!(stored["event"], "stored", "{}", finished.describe());
    assert_eq!(stored["tokens"], "keychain", "{}", finished.describe());

    let items = latchkey_items(&bus);
    assert_eq!(items.len(), 1, "{items:?}");
    let (account, tokens) = items.iter().next().expect("one item");
    assert!(account.starts_with("default@") && account.ends_with("tokens.json"));
    let access = access_token(tokens);
    let refresh = tokens["refresh_token"].as_str().expect("a refresh token");
    let file = std::fs::read_to_string(&path).expect("the token file");
    assert!(!file.contains(&access) && !file.contains(refresh), "{file}");
    assert!(
        file.contains(&idp.token_endpoint()),
        "the provider's settings stay: {file}"
    );
    finished.assert_never_shows(&[("access token", &access), ("refresh token", refresh)]);

    // The other commands find them there.
    let shown = run(Some(&bus), &["token", "--reveal"], &path);
    shown.assert_code(0);
    assert!(
        shown.stdout_text().contains(&access),
        "{}",
        shown.describe()
    );
    let listed = run(Some(&bus), &["profiles", "--json"], &path);
    listed.assert_code(0);
    let profile = &listed.events()[0];
    assert_eq!(profile["tokens"], "keychain", "{}", listed.describe());
    assert_eq!(profile["signed_in"], true, "{}", listed.describe());
    assert_eq!(
        profile["identity"]["iss"],
        idp.issuer(),
        "{}",
        listed.describe()
    );
    let table = run(Some(&bus), &["profiles"], &path);
    assert!(
        table
            .stdout_text()
            .contains("OS keychain (the Secret Service)"),
        "{}",
        table.describe()
    );

    // A refresh replaces the item, and still writes no token to the file.
    let refreshed = run(Some(&bus), &["refresh", "--json"], &path);
    refreshed.assert_code(0);
    let items = latchkey_items(&bus);
    let renewed = access_token(&items[account]);
    assert_ne!(renewed, access);
    assert!(
        !std::fs::read_to_string(&path)
            .expect("file")
            .contains(&renewed)
    );

    // Logout deletes the item and the file's entry.
    let out = run(Some(&bus), &["logout", "--json"], &path);
    out.assert_code(0);
    assert!(latchkey_items(&bus).is_empty());
    assert!(!path.exists(), "the last profile gone, the file goes too");
}

#[test]
fn s59_a_locked_keychain_fails_closed_before_the_browser_and_writes_nothing() {
    let bus = SecretService::start();
    let idp = start_idp();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens.json");
    bus.lock();

    let args = login_args(&idp);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push("--keyring");
    let refused = run(Some(&bus), &args, &path);
    refused.assert_code(1);
    let events = refused.events();
    assert_eq!(
        events.len(),
        1,
        "no browser was sent anywhere: {}",
        refused.describe()
    );
    assert_eq!(events[0]["kind"], "store", "{}", refused.describe());
    let message = events[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("locked"), "{message}");
    assert!(message.contains("not written anywhere else"), "{message}");
    assert!(!path.exists());

    // Signed in while unlocked, then locked again: every command says so, the tokens stay.
    bus.unlock();
    log_in(Some(&bus), &idp, &path, &["--keyring"]).assert_code(0);
    let before = std::fs::read(&path).expect("file");
    bus.lock();
    for command in [
        &["token"][..],
        &["token", "--fresh", "--json"],
        &["refresh", "--json"],
        &["logout", "--json"],
    ] {
        let failed = run(Some(&bus), command, &path);
        failed.assert_code(1);
        let text = format!("{}{}", failed.stdout_text(), failed.stderr);
        assert!(
            text.contains("locked"),
            "{command:?}: {}",
            failed.describe()
        );
        if command.contains(&"--json") {
            assert_eq!(
                error_kind(&failed),
                Some("store".to_owned()),
                "{}",
                failed.describe()
            );
        }
    }
    assert_eq!(std::fs::read(&path).expect("file"), before);
    bus.unlock();
    assert_eq!(latchkey_items(&bus).len(), 1);
    run(Some(&bus), &["token"], &path).assert_code(0);
}

#[test]
fn s59_no_secret_service_fails_closed_with_the_reason() {
    let idp = start_idp();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens.json");
    let args = login_args(&idp);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push("--keyring");

    let bare = SecretService::bus_without_secret_service();
    for bus in [Some(&bare), None] {
        let refused = run(bus, &args, &path);
        refused.assert_code(1);
        assert_eq!(
            error_kind(&refused),
            Some("store".to_owned()),
            "{}",
            refused.describe()
        );
        let message = refused.events()[0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains("not available"), "{message}");
        assert!(!path.exists(), "nothing written: {}", path.display());
    }
}

#[test]
fn s59_a_keychain_profile_stays_there_and_a_file_profile_in_the_file() {
    let bus = SecretService::start();
    let idp = start_idp();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens.json");

    log_in(Some(&bus), &idp, &path, &["--keyring", "--profile", "work"]).assert_code(0);
    log_in(Some(&bus), &idp, &path, &["--profile", "home"]).assert_code(0);
    // Logging in again without --keyring keeps the work tokens in the keychain.
    let again = log_in(Some(&bus), &idp, &path, &["--profile", "work"]);
    again.assert_code(0);
    assert_eq!(again.events().last().expect("events")["tokens"], "keychain");

    let file: Value = serde_json::from_slice(&std::fs::read(&path).expect("file")).expect("JSON");
    assert!(file["tokens"].get("work").is_none(), "{file}");
    assert!(file["tokens"].get("home").is_some(), "{file}");
    let items = latchkey_items(&bus);
    assert_eq!(items.len(), 1, "{items:?}");

    let listed = run(Some(&bus), &["profiles", "--json"], &path);
    listed.assert_code(0);
    let places: BTreeMap<String, String> = listed
        .events()
        .iter()
        .map(|event| {
            (
                event["name"].as_str().unwrap_or_default().to_owned(),
                event["tokens"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(places["work"], "keychain");
    assert_eq!(places["home"], "file");

    // Without a keychain the file profile still works, the keychain one says why not.
    run(None, &["token", "--profile", "home"], &path).assert_code(0);
    let refused = run(None, &["token", "--profile", "work"], &path);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("not available"),
        "{}",
        refused.describe()
    );
}
