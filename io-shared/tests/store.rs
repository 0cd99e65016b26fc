//! The token stores: behaviour shared by both, and the file store's guarantees on disk
//! (S38, S39, S41).
//!
//! Some tests re-run this test binary as a child process (filtered to the one test, told by
//! an environment variable that it is the child): the umask is per process, and a crash
//! has to kill a process.

use std::env;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use latchkey::oidc::Algorithm;
use latchkey::{AssertionAudience, ClientAuth, ConfigError, Provider, TokenSet};
use latchkey_io::store::{DEFAULT_KEY, FileStore, MemoryStore, ProviderRecord, TokenStore};
use secrecy::{ExposeSecret, SecretString};

fn tokens(access_token: &str) -> TokenSet {
    TokenSet::new(SecretString::from(access_token))
        .with_refresh_token(SecretString::from(format!("rt-{access_token}")))
}

fn access_token(store: &dyn TokenStore, key: &str) -> Option<String> {
    let tokens = store.load(key).expect("load");
    tokens.map(|tokens| {
        let refresh = tokens
            .refresh_token()
            .expect("refresh token kept")
            .expose_secret();
        let access = tokens.access_token().expose_secret().to_owned();
        assert_eq!(refresh, format!("rt-{access}"));
        access
    })
}

fn round_trip(store: &dyn TokenStore) {
    assert_eq!(access_token(store, DEFAULT_KEY), None);
    store
        .delete(DEFAULT_KEY)
        .expect("deleting nothing succeeds");

    store.save(DEFAULT_KEY, &tokens("at-1")).expect("save");
    store.save("alice", &tokens("at-alice")).expect("save");
    store.save("bob", &tokens("at-bob")).expect("save");
    assert_eq!(access_token(store, DEFAULT_KEY).as_deref(), Some("at-1"));
    assert_eq!(access_token(store, "alice").as_deref(), Some("at-alice"));

    store.save(DEFAULT_KEY, &tokens("at-2")).expect("replace");
    assert_eq!(access_token(store, DEFAULT_KEY).as_deref(), Some("at-2"));
    assert_eq!(access_token(store, "bob").as_deref(), Some("at-bob"));

    store.delete("alice").expect("delete");
    assert_eq!(access_token(store, "alice"), None);
    assert_eq!(access_token(store, "bob").as_deref(), Some("at-bob"));
    store.delete("alice").expect("deleting again succeeds");
    assert_eq!(access_token(store, "carol"), None);
}

#[test]
fn memory_store_round_trip_with_several_keys() {
    round_trip(&MemoryStore::default());
}

#[test]
fn file_store_round_trip_with_several_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FileStore::new(dir.path().join("tokens.json"));
    round_trip(&store);
    // A fresh store on the same file sees the same tokens: they are on disk.
    let again = FileStore::new(store.path());
    assert_eq!(access_token(&again, "bob").as_deref(), Some("at-bob"));
}

#[test]
fn file_store_writes_the_documented_format() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FileStore::new(dir.path().join("tokens.json"));
    store.save(DEFAULT_KEY, &tokens("at-1")).expect("save");
    let file: serde_json::Value =
        serde_json::from_slice(&fs::read(store.path()).expect("read")).expect("JSON");
    assert_eq!(file["version"], 1);
    assert_eq!(file["tokens"][DEFAULT_KEY]["access_token"], "at-1");
    assert_eq!(file["tokens"][DEFAULT_KEY]["refresh_token"], "rt-at-1");
    // The key's fence: moved by every change (see the refresh lock).
    assert!(file["fences"][DEFAULT_KEY].as_u64().is_some(), "{file}");
    assert_eq!(file.as_object().map(|file| file.len()), Some(3));
}

#[test]
fn the_audience_is_stored_with_the_tokens_and_old_entries_load_without_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FileStore::new(dir.path().join("tokens.json"));
    let audience = vec![
        "https://api.example.com".to_owned(),
        "urn:example:billing".to_owned(),
    ];
    let api = tokens("at-api").with_audience(audience.clone());
    store.save("api", &api).expect("save");
    store.save("plain", &tokens("at-plain")).expect("save");
    let file: serde_json::Value =
        serde_json::from_slice(&fs::read(store.path()).expect("read")).expect("JSON");
    assert_eq!(
        file["tokens"]["api"]["audience"],
        serde_json::json!(audience)
    );
    assert!(file["tokens"]["plain"].get("audience").is_none(), "{file}");
    // A fresh store reads them back from the disk.
    let again = FileStore::new(store.path());
    let loaded = |key: &str| again.load(key).expect("load").expect("stored");
    assert_eq!(loaded("api").audience(), audience);
    assert!(loaded("plain").audience().is_empty());

    // An entry written before the audience was stored loads with none.
    let old = r#"{"version":1,"tokens":{"old":{"access_token":"at-old","token_type":"Bearer","token_type_defaulted":false,"refresh_token":"rt-at-old","extra":{}}}}"#;
    fs::write(store.path(), old).expect("write");
    assert_eq!(access_token(&again, "old").as_deref(), Some("at-old"));
    assert!(loaded("old").audience().is_empty());
}

#[test]
fn deleting_the_last_entry_removes_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FileStore::new(dir.path().join("tokens.json"));
    store.save("alice", &tokens("a")).expect("save");
    store.save("bob", &tokens("b")).expect("save");
    store.delete("alice").expect("delete");
    assert!(store.path().exists());
    store.delete("bob").expect("delete");
    assert!(!store.path().exists());
}

/// A confidential client of an imaginary provider, with every recorded setting in use.
fn provider() -> Provider {
    Provider::builder(
        "https://idp.example/authorize?tenant=t1",
        "https://idp.example/token",
        "cli-client",
    )
    .client_secret(SecretString::from("record-SECRET"))
    .client_auth(ClientAuth::SecretPost)
    .scopes(["openid", "offline_access"])
    .resource("https://api.example/")
    .param("prompt", "consent")
    .issuer("https://idp.example")
    .revocation_endpoint("https://idp.example/revoke")
    .jwks_uri("https://idp.example/jwks")
    .userinfo_endpoint("https://idp.example/userinfo")
    .id_token_algorithms([Algorithm::ES256, Algorithm::RS256])
    .crypto(latchkey_io::crypto::ring())
    .build()
    .expect("a valid provider")
}

#[test]
fn a_provider_record_round_trips_without_its_secret_and_rebuilds_the_provider() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FileStore::new(dir.path().join("tokens.json"));
    assert_eq!(store.load_provider(DEFAULT_KEY).expect("load"), None);
    let record = ProviderRecord::of(&provider());
    store.save_provider(DEFAULT_KEY, &record).expect("save");
    store
        .save(DEFAULT_KEY, &tokens("at-1"))
        .expect("save tokens");

    let bytes = fs::read(store.path()).expect("read");
    let file: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    let saved = &file["providers"][DEFAULT_KEY];
    assert_eq!(saved["token_endpoint"], "https://idp.example/token");
    assert_eq!(saved["revocation_endpoint"], "https://idp.example/revoke");
    assert_eq!(saved["token_endpoint_auth_method"], "client_secret_post");
    assert_eq!(
        saved["scopes"],
        serde_json::json!(["openid", "offline_access"])
    );
    assert_eq!(
        saved["resources"],
        serde_json::json!(["https://api.example/"])
    );
    assert!(!String::from_utf8_lossy(&bytes).contains("record-SECRET"));

    let loaded = FileStore::new(store.path())
        .load_provider(DEFAULT_KEY)
        .expect("load")
        .expect("recorded");
    assert_eq!(loaded, record);
    assert_eq!(
        loaded.builder().build().expect_err("needs its secret"),
        ConfigError::MissingClientSecret
    );
    let rebuilt = loaded
        .builder()
        .client_secret(SecretString::from("record-SECRET"))
        .build()
        .expect("rebuilt");
    assert_eq!(ProviderRecord::of(&rebuilt), record);
    assert_eq!(
        rebuilt.authorization_endpoint(),
        "https://idp.example/authorize?tenant=t1"
    );
    // A refresh verifies its ID token as the login did.
    let policy = rebuilt.id_token_policy().expect("verifies ID tokens");
    assert_eq!(policy.jwks_uri(), "https://idp.example/jwks");
    assert_eq!(policy.algorithms(), [Algorithm::RS256, Algorithm::ES256]);
    assert_eq!(saved["verify_id_token"], true);
    assert_eq!(
        saved["id_token_algorithms"],
        serde_json::json!(["RS256", "ES256"])
    );
}

#[test]
fn a_provider_record_from_before_id_token_verification_rebuilds_without_it() {
    // What `latchkey login` recorded before ID tokens were verified.
    let old = serde_json::json!({
        "issuer": "https://idp.example",
        "authorization_endpoint": "https://idp.example/authorize",
        "token_endpoint": "https://idp.example/token",
        "client_id": "cli-client",
        "token_endpoint_auth_method": "none",
        "scopes": ["openid"],
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens.json");
    let file = serde_json::json!({"version": 1, "tokens": {}, "providers": {DEFAULT_KEY: old}});
    fs::write(&path, file.to_string()).expect("write");
    let record = FileStore::new(&path)
        .load_provider(DEFAULT_KEY)
        .expect("readable")
        .expect("recorded");
    assert!(!record.verify_id_token);
    assert_eq!(record.assertion_audience, AssertionAudience::Issuer);
    let provider = record.builder().build().expect("rebuilt");
    assert!(provider.id_token_policy().is_none());
}

#[test]
fn a_private_key_jwt_clients_assertion_audience_is_recorded() {
    let key = latchkey::keys::Signer::generate(Algorithm::ES256, latchkey_io::crypto::ring())
        .expect("a key")
        .private_key()
        .clone();
    let provider = Provider::builder(
        "https://idp.example/authorize",
        "https://idp.example/token",
        "okta-like",
    )
    .client_key(key.clone())
    .assertion_audience(AssertionAudience::Endpoint)
    .crypto(latchkey_io::crypto::ring())
    .build()
    .expect("no issuer needed for the endpoint audience");
    let record = ProviderRecord::of(&provider);
    assert_eq!(record.assertion_audience, AssertionAudience::Endpoint);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FileStore::new(dir.path().join("tokens.json"));
    store.save_provider(DEFAULT_KEY, &record).expect("save");
    let file: serde_json::Value =
        serde_json::from_slice(&fs::read(store.path()).expect("read")).expect("JSON");
    assert_eq!(
        file["providers"][DEFAULT_KEY]["assertion_audience"],
        "endpoint"
    );
    let loaded = store
        .load_provider(DEFAULT_KEY)
        .expect("load")
        .expect("recorded");
    assert_eq!(loaded, record);
    // A later run rebuilds it with the key given again, and signs for the endpoint.
    let rebuilt = loaded.builder().client_key(key).build().expect("rebuilt");
    assert_eq!(rebuilt.assertion_audience(), AssertionAudience::Endpoint);
    // A name it does not know is an error, not a guess.
    let mut tampered = file.clone();
    tampered["providers"][DEFAULT_KEY]["assertion_audience"] = "anyone".into();
    fs::write(store.path(), tampered.to_string()).expect("write");
    let error = store.load_provider(DEFAULT_KEY).expect_err("refused");
    assert!(error.to_string().contains("assertion_audience"), "{error}");
}

#[test]
fn tokens_and_provider_records_live_side_by_side_and_go_together() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FileStore::new(dir.path().join("tokens.json"));
    let record = ProviderRecord::of(&provider());
    store.save("alice", &tokens("a")).expect("save");
    store.save_provider("alice", &record).expect("record");
    store.save("alice", &tokens("a2")).expect("save again");
    store.save_provider("bob", &record).expect("record");
    // Saving tokens keeps the record, and the other way round.
    assert_eq!(access_token(&store, "alice").as_deref(), Some("a2"));
    assert_eq!(
        store.load_provider("alice").expect("load"),
        Some(record.clone())
    );
    // Deleting a key (logging out, or a refused refresh) forgets both.
    store.delete("alice").expect("delete");
    assert_eq!(store.load_provider("alice").expect("load"), None);
    assert_eq!(access_token(&store, "alice"), None);
    assert!(store.path().exists(), "bob's record remains");
    store.delete("bob").expect("delete");
    assert!(!store.path().exists());
}

#[test]
fn s41_a_corrupt_provider_record_is_an_error_that_quotes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens.json");
    let store = FileStore::new(&path);
    for record in [
        r#""LEAKED""#,
        r#"{"default":"LEAKED"}"#,
        r#"{"default":{"token_endpoint":"LEAKED"}}"#,
        r#"{"default":{"authorization_endpoint":"a","token_endpoint":"t","client_id":"c","token_endpoint_auth_method":"LEAKED"}}"#,
        r#"{"default":{"authorization_endpoint":"a","token_endpoint":"t","client_id":"c","token_endpoint_auth_method":"none","scopes":["LEAKED",1]}}"#,
    ] {
        let content = format!(r#"{{"version":1,"tokens":{{}},"providers":{record}}}"#);
        fs::write(&path, &content).expect("plant");
        let error = store
            .load_provider(DEFAULT_KEY)
            .expect_err("corrupt")
            .to_string();
        assert!(error.contains("corrupt"), "{error}");
        assert!(!error.contains("LEAKED"), "{error}");
        assert!(store.save(DEFAULT_KEY, &tokens("new")).is_err());
        assert_eq!(fs::read_to_string(&path).expect("read"), content);
    }
}

#[test]
fn a_tampered_provider_record_is_refused_when_the_provider_is_built() {
    let record = ProviderRecord {
        token_endpoint: "http://attacker.example/token".into(),
        ..ProviderRecord::of(&provider())
    };
    let error = record
        .builder()
        .client_secret(SecretString::from("record-SECRET"))
        .build()
        .expect_err("plain http off loopback");
    assert!(matches!(error, ConfigError::InvalidUrl { .. }), "{error:?}");
}

#[test]
fn concurrent_saves_in_one_process_keep_every_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(FileStore::new(dir.path().join("tokens.json")));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for round in 0..10 {
                    let key = format!("user-{writer}");
                    store
                        .save(&key, &tokens(&format!("at-{writer}-{round}")))
                        .expect("save");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    for writer in 0..4 {
        let expected = format!("at-{writer}-9");
        assert_eq!(
            access_token(&*store, &format!("user-{writer}")),
            Some(expected)
        );
    }
}

#[test]
fn s41_store_debug_shows_no_token() {
    let store = MemoryStore::default();
    store.save(DEFAULT_KEY, &tokens("at-SECRET")).expect("save");
    let debug = format!("{store:?}");
    assert!(!debug.contains("SECRET"), "{debug}");
}

#[test]
fn s41_a_corrupt_file_is_an_error_that_quotes_nothing_and_is_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens.json");
    let store = FileStore::new(&path);
    for (content, says) in [
        (
            &br#"{"version":1,"tokens":{"default":{"access_token":"LEAKED"#[..],
            "corrupt",
        ),
        (b"", "corrupt"),
        (br#"["LEAKED"]"#, "corrupt"),
        (br#"{"version":"LEAKED","tokens":{}}"#, "corrupt"),
        (br#"{"version":1,"tokens":"LEAKED"}"#, "corrupt"),
        (
            br#"{"version":1,"tokens":{"default":{"access_token":"LEAKED\n"}}}"#,
            "corrupt",
        ),
        (
            br#"{"version":1,"tokens":{"default":{"refresh_token":"LEAKED"}}}"#,
            "corrupt",
        ),
        (
            br#"{"version":2,"tokens":{"default":"LEAKED"}}"#,
            "unsupported format version 2",
        ),
    ] {
        fs::write(&path, content).expect("plant");
        let error = store.load(DEFAULT_KEY).expect_err("corrupt").to_string();
        assert!(error.contains(says), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(!error.contains("LEAKED"), "{error}");
        // Not overwritten: it may hold tokens worth recovering, or a newer version's.
        let error = store
            .save(DEFAULT_KEY, &tokens("new"))
            .expect_err("refused")
            .to_string();
        assert!(!error.contains("LEAKED"), "{error}");
        assert_eq!(fs::read(&path).expect("read"), content);
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Runs `test` of this binary in a child process with `variable` set to `value`.
fn child(test: &str, variable: &str, value: &Path, program: Command) -> Command {
    let mut command = program;
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(variable, value);
    command
}

#[cfg(unix)]
#[test]
fn s38_token_file_is_0600_even_under_umask_000() {
    const UMASK_CHILD: &str = "LATCHKEY_IO_TEST_UMASK_CHILD";
    let exe = env::current_exe().expect("test binary");
    if let Some(dir) = env::var_os(UMASK_CHILD) {
        // The child, running under umask 000.
        let dir = Path::new(&dir);
        fs::write(dir.join("probe"), "").expect("probe");
        FileStore::new(dir.join("new").join("tokens.json"))
            .save(DEFAULT_KEY, &tokens("a"))
            .expect("save");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // The umask is per process, and tests run on threads: set it in a shell that then
    // becomes the child test.
    let mut shell = Command::new("sh");
    shell
        .args(["-c", r#"umask 000 && exec "$0" "$@""#])
        .arg(&exe);
    let status = child(
        "s38_token_file_is_0600_even_under_umask_000",
        UMASK_CHILD,
        dir.path(),
        shell,
    )
    .stdout(Stdio::null())
    .status()
    .expect("run the child");
    assert!(status.success());
    assert_eq!(
        mode(&dir.path().join("probe")),
        0o666,
        "the child ran under umask 000"
    );
    assert_eq!(mode(&dir.path().join("new")), 0o700);
    assert_eq!(mode(&dir.path().join("new").join("tokens.json")), 0o600);
}

#[cfg(unix)]
#[test]
fn s38_parent_directory_is_created_0700() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("temp dir");
    let store = FileStore::new(dir.path().join("a").join("b").join("tokens.json"));
    store.save(DEFAULT_KEY, &tokens("a")).expect("save");
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    assert_eq!(mode(&dir.path().join("a").join("b")), 0o700);
    assert_eq!(mode(store.path()), 0o600);

    // An existing parent is left alone.
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).expect("mkdir");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).expect("chmod");
    FileStore::new(shared.join("tokens.json"))
        .save(DEFAULT_KEY, &tokens("a"))
        .expect("save");
    assert_eq!(mode(&shared), 0o755);
}

#[cfg(unix)]
#[test]
fn s39_a_planted_symlink_is_not_followed_on_write_or_read() {
    use std::os::unix::fs::symlink;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens.json");
    let store = FileStore::new(&path);

    // A link to a valid token file: following it would load tokens.
    let elsewhere = FileStore::new(dir.path().join("elsewhere.json"));
    elsewhere
        .save(DEFAULT_KEY, &tokens("planted"))
        .expect("save");
    let before = fs::read(elsewhere.path()).expect("read");
    symlink(elsewhere.path(), &path).expect("plant link");
    let error = store.load(DEFAULT_KEY).expect_err("not followed");
    assert!(error.detail().contains("symbolic link"), "{error}");

    // Saving replaces the link and leaves its target alone.
    store.save(DEFAULT_KEY, &tokens("mine")).expect("save");
    assert!(fs::symlink_metadata(&path).expect("metadata").is_file());
    assert_eq!(mode(&path), 0o600);
    assert_eq!(fs::read(elsewhere.path()).expect("read"), before);
    assert_eq!(access_token(&store, DEFAULT_KEY).as_deref(), Some("mine"));

    // A dangling link does not make the save create its target.
    let victim = dir.path().join("victim");
    fs::remove_file(&path).expect("remove");
    symlink(&victim, &path).expect("plant dangling link");
    store.save(DEFAULT_KEY, &tokens("mine")).expect("save");
    assert!(!victim.exists());
    assert!(fs::symlink_metadata(&path).expect("metadata").is_file());
}

const CRASH_CHILD: &str = "LATCHKEY_IO_TEST_CRASH_CHILD";
const CRASH_READY: &str = "LATCHKEY_IO_TEST_CRASH_READY";
/// The size of each token. Smaller makes a save cycle shorter, not the share of it spent
/// writing, so small keeps many kills within a few seconds.
const BIG: usize = 64 * 1024;
/// A writer that truncates the file and writes it in place leaves a partial file during
/// about 2% of its save cycle, so 200 kills at random moments catch it almost surely.
const KILLS: usize = 200;

fn big_tokens(generation: u64) -> TokenSet {
    let marker = format!("gen{generation}-");
    tokens(&format!("{marker}{}", "x".repeat(BIG - marker.len())))
}

#[test]
fn s39_no_partial_file_after_a_crash() {
    if let (Some(path), Some(ready)) = (env::var_os(CRASH_CHILD), env::var_os(CRASH_READY)) {
        // The child: saves until it is killed, saying when the first save is done.
        let store = FileStore::new(path);
        for generation in 0.. {
            store
                .save(DEFAULT_KEY, &big_tokens(generation))
                .expect("save");
            if generation == 0 {
                fs::write(&ready, "").expect("ready marker");
            }
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens.json");
    let markers = tempfile::tempdir().expect("temp dir");
    let exe = env::current_exe().expect("test binary");
    let store = FileStore::new(&path);

    // Kills spread over two save cycles after the child's first save, timed here.
    let probe = FileStore::new(markers.path().join("probe.json"));
    probe.save(DEFAULT_KEY, &big_tokens(0)).expect("save");
    let started = Instant::now();
    probe.save(DEFAULT_KEY, &big_tokens(1)).expect("save");
    let cycle = started.elapsed();

    for round in 0..KILLS {
        let random = latchkey_io::entropy::entropy().expect("entropy")[0];
        let ready = markers.path().join(format!("ready-{round}"));
        let mut child = child(
            "s39_no_partial_file_after_a_crash",
            CRASH_CHILD,
            &path,
            Command::new(&exe),
        )
        .env(CRASH_READY, &ready)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the child");
        let started = Instant::now();
        while !ready.exists() && started.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(cycle * 2 * u32::from(random) / 255);
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        assert!(ready.exists(), "the child saved once");

        // Old or new, never partial: it parses, and the tokens are whole.
        let tokens = store
            .load(DEFAULT_KEY)
            .expect("a whole file")
            .expect("saved before");
        let access = tokens.access_token().expose_secret();
        assert_eq!(access.len(), BIG);
        assert!(access.starts_with("gen"));
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
    }

    // Kills during a save leave temporary files behind; the next save removes those old
    // enough not to belong to a save in progress.
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let temps = || {
        fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| entry.expect("entry").path())
            .filter(|entry| entry != &path && !entry.ends_with(".tokens.json.lock"))
            .collect::<Vec<_>>()
    };
    let planted = dir.path().join(".tokens.json.0123456789abcdef.tmp");
    fs::write(&planted, "left over").expect("plant");
    for temp in temps() {
        let file = fs::File::options().write(true).open(&temp).expect("open");
        file.set_modified(an_hour_ago).expect("backdate");
    }
    let young = dir.path().join(".tokens.json.fedcba9876543210.tmp");
    fs::write(&young, "in progress elsewhere").expect("plant");
    store.save(DEFAULT_KEY, &tokens("after")).expect("save");
    assert_eq!(temps(), [young]);
}
