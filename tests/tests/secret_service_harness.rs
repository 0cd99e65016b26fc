//! The Secret Service the OS-keyring tests run on: gnome-keyring on a private session bus,
//! its default collection unlocked, locked and unlocked again on demand, what it holds read
//! back by `secret-tool`; and a bus with no Secret Service on it. Driven here only with
//! Debian's own clients (`secret-tool`, `gdbus`), never with the code under test.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use latchkey_tests::secret_service::SecretService;

/// `secret-tool` with the arguments, on `service`'s bus, `input` on its standard input.
fn secret_tool(service: &SecretService, arguments: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new("secret-tool")
        .args(arguments)
        .env_remove("DISPLAY")
        .envs(service.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("secret-tool starts");
    let mut stdin = child.stdin.take().expect("secret-tool's standard input");
    stdin.write_all(input).expect("secret-tool reads its input");
    drop(stdin);
    child.wait_with_output().expect("secret-tool finishes")
}

/// Stores `secret` under `service=latchkey username=USER`.
fn store(service: &SecretService, user: &str, secret: &[u8]) {
    let out = secret_tool(
        service,
        &[
            "store",
            "--label=latchkey test",
            "service",
            "latchkey",
            "username",
            user,
        ],
        secret,
    );
    assert!(
        out.status.success(),
        "secret-tool store: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The secret stored under `service=latchkey username=USER`, if `secret-tool` finds one.
fn lookup(service: &SecretService, user: &str) -> Option<Vec<u8>> {
    let out = secret_tool(
        service,
        &["lookup", "service", "latchkey", "username", user],
        b"",
    );
    out.status.success().then_some(out.stdout)
}

/// The attributes of an item stored by [`store`].
fn attributes(user: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("service".to_owned(), "latchkey".to_owned()),
        ("username".to_owned(), user.to_owned()),
    ])
}

/// The path of the bus's socket, from its `unix:path=…,guid=…` address.
fn socket_path(service: &SecretService) -> PathBuf {
    let address = service.bus_address();
    let path = address
        .strip_prefix("unix:path=")
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("not a unix:path address: {address}"));
    PathBuf::from(path)
}

#[test]
fn a_private_secret_service_stores_and_reads_back_items() {
    let service = SecretService::start();
    assert!(!service.is_locked(), "it starts unlocked");
    assert!(
        service.items().is_empty(),
        "and empty: {:?}",
        service.items()
    );
    let env = service.env();
    assert!(
        env.contains(&(
            "DBUS_SESSION_BUS_ADDRESS".to_owned(),
            service.bus_address().to_owned()
        )),
        "{env:?}"
    );
    assert!(socket_path(&service).starts_with(service.runtime_dir()));

    // Bytes that are no text, with newlines, as a token set never is but a secret may be.
    let secret = b"{\"access_token\":\"at\"}\nsecond line \xff\x00 end";
    store(&service, "acct", secret);
    store(&service, "other", b"second");
    assert_eq!(lookup(&service, "acct").as_deref(), Some(&secret[..]));
    assert_eq!(
        service.items(),
        [
            (attributes("acct"), secret.to_vec()),
            (attributes("other"), b"second".to_vec()),
        ]
    );

    // Storing again under the same attributes replaces the item.
    store(&service, "acct", b"replaced");
    assert_eq!(service.items().len(), 2);
    assert_eq!(lookup(&service, "acct").as_deref(), Some(&b"replaced"[..]));
}

#[test]
fn a_locked_collection_keeps_its_secrets_until_unlocked() {
    let service = SecretService::start();
    store(&service, "acct", b"token");

    service.lock();
    assert!(service.is_locked());
    let started = Instant::now();
    assert_eq!(lookup(&service, "acct"), None, "no secret while locked");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a locked collection answers at once, without waiting on a prompt: {:?}",
        started.elapsed()
    );
    // Locking twice is harmless.
    service.lock();

    service.unlock();
    assert!(!service.is_locked());
    assert_eq!(lookup(&service, "acct").as_deref(), Some(&b"token"[..]));
    assert_eq!(service.items(), [(attributes("acct"), b"token".to_vec())]);
    // So is unlocking twice.
    service.unlock();
}

#[test]
#[should_panic(expected = "unlock() first")]
fn the_items_of_a_locked_collection_cannot_be_read() {
    let service = SecretService::start();
    service.lock();
    let _ = service.items();
}

#[test]
fn each_secret_service_is_a_private_one() {
    let first = SecretService::start();
    let second = SecretService::start();
    assert_ne!(first.bus_address(), second.bus_address());
    store(&first, "acct", b"only in the first");
    assert_eq!(lookup(&second, "acct"), None);
    assert!(second.items().is_empty());
    assert_eq!(first.items().len(), 1);
}

#[test]
fn a_bus_without_a_secret_service_answers_that_nobody_is_there() {
    let bus = SecretService::bus_without_secret_service();
    let out = secret_tool(&bus, &["lookup", "service", "latchkey"], b"");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("org.freedesktop.secrets"),
        "nobody owns the name, and nothing is started for it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let owner = Command::new("gdbus")
        .args(["call", "--session", "--dest", "org.freedesktop.DBus"])
        .args(["--object-path", "/org/freedesktop/DBus"])
        .args(["--method", "org.freedesktop.DBus.NameHasOwner"])
        .arg("org.freedesktop.secrets")
        .envs(bus.env())
        .output()
        .expect("gdbus runs");
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "(false,)");
}

#[test]
#[should_panic(expected = "needs a Secret Service")]
fn a_bus_without_a_secret_service_cannot_be_locked() {
    SecretService::bus_without_secret_service().lock();
}

#[test]
fn dropping_it_stops_the_daemons_and_removes_its_directory() {
    let service = SecretService::start();
    let socket = socket_path(&service);
    let runtime = service.runtime_dir();
    assert!(socket.exists() && runtime.join("keyring/control").exists());
    let env = service.env();
    drop(service);
    assert!(!runtime.exists(), "{} is left behind", runtime.display());
    let out = Command::new("secret-tool")
        .args(["lookup", "service", "latchkey"])
        .envs(env)
        .output()
        .expect("secret-tool runs");
    assert!(!out.status.success(), "nothing answers on the old bus");
}
