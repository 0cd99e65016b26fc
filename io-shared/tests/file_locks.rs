//! The token file shared by several processes (S60) and the OS keychain behind it (S59):
//! the refresh lock, its fences, the login mark, saves from several processes at once, and
//! token sets kept in a keychain. Processes here are this test binary run again as a child;
//! the real Secret Service is exercised through the `latchkey` command's tests.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use latchkey::{StoreError, TokenSet};
use latchkey_io::store::{
    FileStore, Keychain, LoginLockError, ProviderRecord, TokenLocation, TokenStore,
};
use secrecy::{ExposeSecret, SecretString};

const LEASE: Duration = Duration::from_secs(45);
/// Set in a child: the token file it works on.
const CHILD_STORE: &str = "LATCHKEY_FILE_LOCKS_STORE";
/// Set in a child: the key it saves under (the many-writers test).
const CHILD_KEY: &str = "LATCHKEY_FILE_LOCKS_KEY";

fn tokens(access_token: &str) -> TokenSet {
    TokenSet::new(SecretString::from(access_token))
        .with_refresh_token(SecretString::from(format!("rt-{access_token}")))
}

fn access_token(store: &dyn TokenStore, key: &str) -> Option<String> {
    store
        .load(key)
        .expect("load")
        .map(|tokens| tokens.access_token().expose_secret().to_owned())
}

fn temp_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens.json");
    (dir, path)
}

/// This test binary running only `test`, as a child with `CHILD_STORE` set to `store`.
fn child(test: &str, store: &Path) -> Command {
    let mut command = Command::new(env::current_exe().expect("test binary"));
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_STORE, store)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// Waits for `child` to print `line` on stdout.
fn wait_for_line(child: &mut Child, line: &str) {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            // libtest may have written "test <name> ... " on the same line first.
            Some(Ok(read)) if read.trim_end().ends_with(line) => return,
            Some(Ok(_)) => {}
            other => panic!("the child ended before saying {line:?}: {other:?}"),
        }
    }
}

#[test]
fn s60_the_refresh_lock_excludes_every_other_holder_until_released() {
    let (_dir, path) = temp_store();
    let first = FileStore::new(&path);
    let second = FileStore::new(&path);
    first.save("default", &tokens("at-1")).expect("save");
    assert!(first.shares_refresh() && second.shares_refresh());

    let fence = first.lock_refresh("default", LEASE).expect("lock");
    let fence = fence.expect("a free lock is taken");
    assert_eq!(second.lock_refresh("default", LEASE).expect("lock"), None);
    // The same store is no second holder either (two sources on one store).
    assert_eq!(first.lock_refresh("default", LEASE).expect("lock"), None);
    // Another key has a lock of its own.
    assert!(second.lock_refresh("work", LEASE).expect("lock").is_some());

    // Unlocking with another fence releases nothing.
    first.unlock_refresh("default", fence + 1).expect("unlock");
    assert_eq!(second.lock_refresh("default", LEASE).expect("lock"), None);
    first.unlock_refresh("default", fence).expect("unlock");
    let next = second.lock_refresh("default", LEASE).expect("lock");
    assert!(
        next.is_some_and(|next| next > fence),
        "{next:?} after {fence}"
    );
}

#[test]
fn s60_a_lock_whose_holder_was_killed_is_free_at_once() {
    if let Some(store) = env::var_os(CHILD_STORE) {
        let store = FileStore::new(PathBuf::from(store));
        store
            .lock_refresh("default", LEASE)
            .expect("lock")
            .expect("free in the child");
        let _login = store.try_begin_login("default").expect("login mark");
        println!("locked");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let (_dir, path) = temp_store();
    let store = FileStore::new(&path);
    store.save("default", &tokens("at-1")).expect("save");
    let mut holder = child("s60_a_lock_whose_holder_was_killed_is_free_at_once", &path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the holder");
    wait_for_line(&mut holder, "locked");
    assert_eq!(store.lock_refresh("default", LEASE).expect("lock"), None);
    match store.try_begin_login("default") {
        Err(LoginLockError::InProgress { pid }) => assert_eq!(pid, Some(holder.id())),
        other => panic!("expected the child's login mark, got {other:?}"),
    }

    // SIGKILL: no chance to unlock anything.
    holder.kill().expect("kill");
    holder.wait().expect("reap");
    assert!(
        store
            .lock_refresh("default", LEASE)
            .expect("lock")
            .is_some()
    );
    assert!(store.try_begin_login("default").is_ok());
}

#[test]
fn s60_a_second_login_for_the_same_key_is_refused_naming_the_first() {
    let (_dir, path) = temp_store();
    let store = FileStore::new(&path);
    let guard = store.try_begin_login("default").expect("first login");
    match FileStore::new(&path).try_begin_login("default") {
        Err(error @ LoginLockError::InProgress { pid: Some(pid) }) => {
            assert_eq!(pid, std::process::id());
            assert!(error.to_string().contains(&pid.to_string()), "{error}");
        }
        other => panic!("expected InProgress, got {other:?}"),
    }
    // Another profile logs in meanwhile.
    let other = store.try_begin_login("work").expect("another key");
    drop(guard);
    drop(other);
    assert!(store.try_begin_login("default").is_ok());
}

#[test]
fn s60_fenced_writes_lose_to_a_login_stored_in_between() {
    let (_dir, path) = temp_store();
    let refresher = FileStore::new(&path);
    let login = FileStore::new(&path);
    refresher.save("default", &tokens("at-1")).expect("save");

    let fence = refresher.lock_refresh("default", LEASE).expect("lock");
    let fence = fence.expect("free");
    login
        .save("default", &tokens("at-login"))
        .expect("a login saves");
    assert!(
        !refresher
            .save_fenced("default", &tokens("at-refreshed"), fence)
            .expect("fenced save")
    );
    assert!(
        !refresher
            .delete_fenced("default", fence)
            .expect("fenced delete")
    );
    assert_eq!(access_token(&login, "default").as_deref(), Some("at-login"));
    refresher.unlock_refresh("default", fence).expect("unlock");

    // Undisturbed, the fenced save stores, and a second one with the same fence does not.
    let fence = refresher.lock_refresh("default", LEASE).expect("lock");
    let fence = fence.expect("free");
    assert!(
        refresher
            .save_fenced("default", &tokens("at-2"), fence)
            .expect("fenced save")
    );
    assert!(
        !refresher
            .save_fenced("default", &tokens("at-3"), fence)
            .expect("fenced save")
    );
    assert_eq!(access_token(&login, "default").as_deref(), Some("at-2"));
    refresher.unlock_refresh("default", fence).expect("unlock");

    let fence = refresher.lock_refresh("default", LEASE).expect("lock");
    assert!(
        refresher
            .delete_fenced("default", fence.expect("free"))
            .expect("fenced delete")
    );
    assert_eq!(access_token(&login, "default"), None);
}

#[test]
fn s60_fences_keep_growing_when_the_last_logout_removes_the_file() {
    let (_dir, path) = temp_store();
    let store = FileStore::new(&path);
    store.save("default", &tokens("at-1")).expect("save");
    let fence = store.lock_refresh("default", LEASE).expect("lock");
    let fence = fence.expect("free");
    store.unlock_refresh("default", fence).expect("unlock");
    store.delete("default").expect("delete");
    assert!(!path.exists(), "the last logout removes the file");
    store.save("default", &tokens("at-2")).expect("save");
    let next = store.lock_refresh("default", LEASE).expect("lock");
    assert!(
        next.is_some_and(|next| next > fence),
        "{next:?} after {fence}"
    );
    // The old fence opens nothing.
    assert!(
        !store
            .save_fenced("default", &tokens("stale"), fence)
            .expect("fenced save")
    );
}

#[test]
fn s60_processes_saving_different_keys_at_once_keep_every_entry() {
    const WRITERS: usize = 4;
    const SAVES: usize = 15;
    if let (Some(store), Some(key)) = (env::var_os(CHILD_STORE), env::var(CHILD_KEY).ok()) {
        let store = FileStore::new(PathBuf::from(store));
        for save in 0..SAVES {
            store
                .save(&format!("{key}-{save}"), &tokens(&format!("{key}-{save}")))
                .expect("save");
        }
        return;
    }
    let (_dir, path) = temp_store();
    let writers: Vec<Child> = (0..WRITERS)
        .map(|writer| {
            child(
                "s60_processes_saving_different_keys_at_once_keep_every_entry",
                &path,
            )
            .env(CHILD_KEY, format!("w{writer}"))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn a writer")
        })
        .collect();
    for mut writer in writers {
        assert!(writer.wait().expect("wait").success(), "a writer failed");
    }
    let store = FileStore::new(&path);
    let entries = store.entries().expect("entries");
    assert_eq!(entries.len(), WRITERS * SAVES, "every process's every key");
    for writer in 0..WRITERS {
        for save in 0..SAVES {
            let key = format!("w{writer}-{save}");
            assert_eq!(access_token(&store, &key), Some(key.clone()));
        }
    }
}

/// A keychain in memory that refuses secrets over `limit` bytes, or everything when
/// `locked`, as the platforms' stores do.
#[derive(Default)]
struct FakeKeychain {
    items: Mutex<BTreeMap<String, Vec<u8>>>,
    limit: Option<usize>,
    locked: Mutex<bool>,
}

impl FakeKeychain {
    fn items(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refuse_while_locked(&self) -> Result<(), StoreError> {
        match *self.locked.lock().unwrap_or_else(PoisonError::into_inner) {
            true => Err(StoreError::new("the fake keychain is locked")),
            false => Ok(()),
        }
    }
}

impl Keychain for FakeKeychain {
    fn name(&self) -> &str {
        "the fake keychain"
    }

    fn set(&self, account: &str, secret: &[u8]) -> Result<(), StoreError> {
        self.refuse_while_locked()?;
        if self.limit.is_some_and(|limit| secret.len() > limit) {
            return Err(StoreError::new(format!(
                "the fake keychain refuses {} bytes",
                secret.len()
            )));
        }
        self.items().insert(account.to_owned(), secret.to_owned());
        Ok(())
    }

    fn get(&self, account: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.refuse_while_locked()?;
        Ok(self.items().get(account).cloned())
    }

    fn delete(&self, account: &str) -> Result<(), StoreError> {
        self.refuse_while_locked()?;
        self.items().remove(account);
        Ok(())
    }
}

fn record() -> ProviderRecord {
    let provider = latchkey::Provider::builder(
        "https://idp.example/authorize",
        "https://idp.example/token",
        "cli",
    )
    .build()
    .expect("provider");
    ProviderRecord::of(&provider)
}

#[test]
fn s59_tokens_in_the_keychain_never_reach_the_file() {
    let (_dir, path) = temp_store();
    let keychain = Arc::new(FakeKeychain::default());
    let store = FileStore::new(&path).with_keychain(keychain.clone(), true);
    store.save_provider("default", &record()).expect("record");
    store.save("default", &tokens("at-secret-1")).expect("save");

    let file = fs::read_to_string(&path).expect("read");
    assert!(!file.contains("at-secret-1"), "{file}");
    assert!(
        file.contains("idp.example/token"),
        "the record stays in the file"
    );
    let account = match store.location("default").expect("location") {
        TokenLocation::Keychain { account } => account,
        other => panic!("expected the keychain, got {other:?}"),
    };
    assert!(account.starts_with("default@") && account.ends_with("tokens.json"));
    assert!(keychain.items().contains_key(&account));
    assert_eq!(
        access_token(&store, "default").as_deref(),
        Some("at-secret-1")
    );

    // A store without `new_entries` keeps a keychain login where it is...
    let later = FileStore::new(&path).with_keychain(keychain.clone(), false);
    later.save("default", &tokens("at-secret-2")).expect("save");
    assert!(
        !fs::read_to_string(&path)
            .expect("read")
            .contains("at-secret-2")
    );
    assert_eq!(
        access_token(&later, "default").as_deref(),
        Some("at-secret-2")
    );
    // ...and a file login in the file.
    later.save("work", &tokens("at-file")).expect("save");
    assert_eq!(
        later.location("work").expect("location"),
        TokenLocation::File
    );

    // A store that does not use the keychain says where the tokens are, and writes none.
    let without = FileStore::new(&path);
    let error = without.load("default").expect_err("keychain tokens");
    assert!(error.to_string().contains("OS keychain"), "{error}");
    without
        .save("default", &tokens("at-plain"))
        .expect_err("no silent fallback to the file");
    assert!(
        !fs::read_to_string(&path)
            .expect("read")
            .contains("at-plain")
    );

    // Logout removes the item and the file's entry.
    later.delete("default").expect("delete");
    assert!(keychain.items().is_empty());
    assert_eq!(
        later.location("default").expect("location"),
        TokenLocation::Nowhere
    );
}

#[test]
fn s59_a_keychain_that_refuses_is_an_error_and_the_previous_tokens_stay() {
    let (_dir, path) = temp_store();
    let keychain = Arc::new(FakeKeychain {
        limit: Some(600),
        ..FakeKeychain::default()
    });
    let store = FileStore::new(&path).with_keychain(keychain.clone(), true);
    store.save("default", &tokens("at-small")).expect("save");

    let big = "x".repeat(2048);
    let error = store.save("default", &tokens(&big)).expect_err("too big");
    assert!(error.to_string().contains("refuses"), "{error}");
    assert_eq!(access_token(&store, "default").as_deref(), Some("at-small"));
    assert!(!fs::read_to_string(&path).expect("read").contains(&big));

    // Locked: reads, writes and deletes fail; nothing changes.
    *keychain.locked.lock().expect("lock") = true;
    assert!(store.load("default").is_err());
    assert!(store.save("default", &tokens("at-new")).is_err());
    assert!(store.delete("default").is_err());
    let entries = store.entries().expect("the file still lists them");
    assert_eq!(entries.len(), 1);
    assert!(entries[0].tokens.is_err());
    *keychain.locked.lock().expect("lock") = false;
    assert_eq!(access_token(&store, "default").as_deref(), Some("at-small"));
}

#[test]
fn entries_list_every_key_with_its_provider_and_location() {
    let (_dir, path) = temp_store();
    let keychain = Arc::new(FakeKeychain::default());
    let store = FileStore::new(&path);
    assert!(store.entries().expect("no file").is_empty());
    store.save_provider("work", &record()).expect("record");
    store.save("work", &tokens("at-work")).expect("save");
    store.save_provider("pending", &record()).expect("record");
    FileStore::new(&path)
        .with_keychain(keychain, true)
        .save("home", &tokens("at-home"))
        .expect("save");
    let entries = store.entries().expect("entries");
    let keys: Vec<&str> = entries.iter().map(|entry| entry.key.as_str()).collect();
    assert_eq!(keys, ["home", "pending", "work"]);
    assert!(matches!(
        entries[0].location,
        TokenLocation::Keychain { .. }
    ));
    assert!(entries[0].tokens.is_err(), "this store has no keychain");
    assert!(entries[0].provider.is_none());
    assert_eq!(entries[1].location, TokenLocation::Nowhere);
    assert!(matches!(entries[1].tokens, Ok(None)));
    assert_eq!(entries[2].location, TokenLocation::File);
    assert_eq!(entries[2].provider, Some(record()));
    assert!(matches!(&entries[2].tokens, Ok(Some(_))));
}
