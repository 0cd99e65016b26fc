//! [`FileStore`]: tokens in one JSON file, shared safely by every process that uses it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use latchkey::{StoreError, TokenSet};
use serde_json::{Map, Value};

use super::TokenStore;
use super::keychain::Keychain;
use super::record::ProviderRecord;

/// The file format version written, and the only one read.
const VERSION: u64 = 1;

/// Temporary files older than this are leftovers of a save that crashed, and the next save
/// removes them. Younger ones may belong to a save in progress in another process.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60);

/// What a token file holds.
#[derive(Default)]
struct Contents {
    /// Token sets kept in the file, by key.
    tokens: BTreeMap<String, TokenSet>,
    /// Provider records by key.
    providers: BTreeMap<String, ProviderRecord>,
    /// Keys whose tokens are in the OS keychain, with the keychain account that holds them.
    keychain: BTreeMap<String, String>,
    /// The newest fence of each key: moved by every change to its tokens and by every
    /// refresh lock taken on it.
    fences: BTreeMap<String, u64>,
}

impl Contents {
    /// Whether nothing is left worth a file (fences alone are not: see [`next_fence`]).
    fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.providers.is_empty() && self.keychain.is_empty()
    }

    /// Moves `key`'s fence on, and returns the new one.
    fn move_fence(&mut self, key: &str) -> u64 {
        let fence = next_fence(self.fences.get(key).copied());
        self.fences.insert(key.to_owned(), fence);
        fence
    }

    /// Whether `fence` is still `key`'s newest.
    fn fence_holds(&self, key: &str, fence: u64) -> bool {
        self.fences.get(key) == Some(&fence)
    }
}

/// A fence larger than `last` and than the current time in microseconds since 1970: the
/// clock part keeps fences growing when the file, and with it every recorded fence, was
/// removed in between (the last logout deletes the file).
fn next_fence(last: Option<u64>) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        });
    last.map_or(0, |last| last.saturating_add(1)).max(now)
}

/// Where a key's tokens are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// In the token file itself.
    File,
    /// In the OS keychain, under this account of the keychain's `latchkey` service.
    Keychain {
        /// The keychain account.
        account: String,
    },
    /// Nowhere: the file has the key's provider record only.
    Nowhere,
}

/// One key of a token file, as [`FileStore::entries`] lists it.
#[derive(Debug)]
pub struct StoredEntry {
    /// The key (for the `latchkey` command, the profile's name).
    pub key: String,
    /// The provider that issued the tokens, when recorded.
    pub provider: Option<ProviderRecord>,
    /// Where the tokens are.
    pub location: TokenLocation,
    /// The tokens, read from where they are; an error when that could not be read (a
    /// locked keychain, say).
    pub tokens: Result<Option<TokenSet>, StoreError>,
}

/// How a [`FileStore`] uses the OS keychain.
struct KeychainUse {
    keychain: Arc<dyn Keychain>,
    /// Whether saves move tokens not yet in the keychain into it.
    new_entries: bool,
}

/// Tokens kept in one JSON file, optionally with the secrets themselves in the OS keychain:
/// `{"version":1,"tokens":{"<key>":<token set>,...},"providers":{"<key>":<record>,...},
/// "keychain":{"<key>":"<account>",...},"fences":{"<key>":<number>,...}}`. Each token set
/// is written as [`TokenSet`]'s `Serialize` writes it (secrets in clear, hence the
/// permissions); next to it, when the program saved one, the [`ProviderRecord`] of the
/// provider that issued it.
///
/// - The file is created with mode `0600`, also under `umask 000`; a missing parent
///   directory is created with mode `0700`, an existing one is left alone (S38).
/// - Every change writes a new file next to the old one (a randomly named temporary file,
///   created exclusively and never through a symbolic link, `0600`), syncs it, renames it
///   over the old one and syncs the directory. A crash at any point leaves the old file or
///   the new one, never a partial one (S39). A crash can leave the temporary file behind;
///   the next save removes those older than a minute.
/// - A symbolic link planted at the path is never followed: [`load`](TokenStore::load)
///   fails, and [`save`](TokenStore::save) replaces the link itself (S39).
/// - Deleting a key removes its tokens and its provider record; deleting the last entry
///   removes the file.
/// - A corrupt file or one with another version is an error, and is not overwritten: it may
///   hold tokens a newer program version wrote. Remove it to start afresh.
///
/// **Several processes** (S60). Every change is a read-modify-write under an exclusive OS
/// file lock on `.<name>.lock` next to the file, so processes changing different keys never
/// lose one another's entries. The store keeps a refresh lock per key
/// ([`shares_refresh`](TokenStore::shares_refresh) is `true`): an OS lock on
/// `.<name>.<key>.refresh`, which the operating system releases when its holder exits or is
/// killed, so a dead holder never blocks anyone (its lease is not needed: a live holder
/// keeps the lock until it unlocks). A token source over this store refreshes a login once
/// however many processes ask at once, and their fenced saves refuse to overwrite what a
/// login stored in between; a file left with nothing stored is removed with its fences, so
/// a refresh finishing after the last logout stores nothing (the logout stands).
/// [`try_begin_login`](FileStore::try_begin_login) keeps a
/// second login for the same key from starting while one is under way. The lock files are
/// empty (a login's holds its process id) and stay in place: removing a lock file another
/// process may be opening would break the exclusion.
///
/// **The OS keychain** (S59), with [`with_keychain`](FileStore::with_keychain): the token
/// sets of some keys live in the keychain (one item per key, the account recorded in the
/// file), the rest of the file as before. A keychain that cannot be used is an error,
/// never a reason to write the tokens to the file instead.
///
/// On non-Unix systems there are no modes, and the directory is not synced.
pub struct FileStore {
    path: PathBuf,
    keychain: Option<KeychainUse>,
    /// The refresh locks this store holds, by key: the fence handed out and the locked file.
    refreshing: Mutex<BTreeMap<String, (u64, File)>>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .field(
                "keychain",
                &self.keychain.as_ref().map(|used| used.keychain.name()),
            )
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// A store kept in the file at `path`. Nothing is touched until the first operation.
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore {
            path: path.into(),
            keychain: None,
            refreshing: Mutex::default(),
        }
    }

    /// Keeps token sets in `keychain`: those the file says are there, and, with
    /// `new_entries`, every token set saved from now on (moved out of the file). Without a
    /// keychain, a key whose tokens are in one is an error.
    #[must_use]
    pub fn with_keychain(mut self, keychain: Arc<dyn Keychain>, new_entries: bool) -> FileStore {
        self.keychain = Some(KeychainUse {
            keychain,
            new_entries,
        });
        self
    }

    /// The token file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the settings of the provider whose tokens are (or will be) stored under
    /// `key`, replacing an earlier record, so that a later run can refresh or revoke them
    /// with nothing but the client secret. The tokens under `key` are left as they are.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the file could not be read or written.
    pub fn save_provider(&self, key: &str, record: &ProviderRecord) -> Result<(), StoreError> {
        self.update(|contents| {
            contents.providers.insert(key.to_owned(), record.clone());
            Ok(((), true))
        })
    }

    /// The provider record saved under `key`, if any.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the file could not be read or is corrupt.
    pub fn load_provider(&self, key: &str) -> Result<Option<ProviderRecord>, StoreError> {
        Ok(self
            .read()?
            .and_then(|mut contents| contents.providers.remove(key)))
    }

    /// Where the tokens of `key` are kept.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the file could not be read or is corrupt.
    pub fn location(&self, key: &str) -> Result<TokenLocation, StoreError> {
        Ok(self
            .read()?
            .map_or(TokenLocation::Nowhere, |contents| location(&contents, key)))
    }

    /// Checks that the tokens of `key` can be kept where they would go: the file can be
    /// read, and when they are (or would be) in the keychain, the keychain can be read and
    /// written (a throwaway item is stored and removed when there is no token set yet). A
    /// program calls it before it asks the user to sign in, so that a locked or absent
    /// keychain is reported before the work it would lose.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] saying what cannot be used.
    pub fn probe(&self, key: &str) -> Result<(), StoreError> {
        let contents = self.read()?.unwrap_or_default();
        let Some(account) = self.keychain_account(&contents, key) else {
            return Ok(());
        };
        let keychain = self.keychain(key)?;
        if keychain.get(&account)?.is_some() {
            return Ok(());
        }
        // Reading an absent item works on a locked keychain too: only a write tells. A
        // throwaway item of its own, so that no token set is ever touched.
        let probe = format!("{account} (probe)");
        keychain.set(&probe, b"probe")?;
        keychain.delete(&probe)
    }

    /// Every key of the file, in order, with its provider record, where its tokens are,
    /// and the tokens themselves.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the file could not be read or is corrupt; a token set that
    /// cannot be read (from a locked keychain, say) is an error of its entry only.
    pub fn entries(&self) -> Result<Vec<StoredEntry>, StoreError> {
        let Some(mut contents) = self.read()? else {
            return Ok(Vec::new());
        };
        let mut keys: Vec<String> = contents
            .tokens
            .keys()
            .chain(contents.providers.keys())
            .chain(contents.keychain.keys())
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys
            .into_iter()
            .map(|key| {
                let location = location(&contents, &key);
                let tokens = self.read_tokens(&mut contents, &key);
                StoredEntry {
                    provider: contents.providers.remove(&key),
                    location,
                    tokens,
                    key,
                }
            })
            .collect())
    }

    /// Marks a login for `key` as under way until the guard is dropped (or the process
    /// ends, however it ends): a second login for the same key, in this process or another,
    /// is refused meanwhile, naming the process that holds it.
    ///
    /// # Errors
    ///
    /// [`LoginLockError::InProgress`] while another login holds it;
    /// [`LoginLockError::Store`] if the lock file could not be opened.
    pub fn try_begin_login(&self, key: &str) -> Result<LoginGuard, LoginLockError> {
        let path = self.lock_path(key, "login")?;
        let mut file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LoginLockError::InProgress { pid });
            }
            Err(TryLockError::Error(error)) => {
                return Err(LoginLockError::Store(failed("locking", &path, &error)));
            }
        }
        // Who holds it, for the message of the login refused; a lock without it still
        // holds.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()))
            .and_then(|()| file.flush());
        Ok(LoginGuard { _file: file })
    }

    /// The path of a lock file next to the token file: `.<name>.lock` for the file's own
    /// lock, `.<name>.<key>.<kind>` for a key's.
    fn lock_path(&self, key: &str, kind: &str) -> Result<PathBuf, StoreError> {
        let (dir, name) = self.dir_and_name()?;
        create_private_dir(dir)?;
        let mut file = OsString::from(".");
        file.push(name);
        file.push(format!(".{}.{kind}", key_tag(key)));
        Ok(dir.join(file))
    }

    fn dir_and_name(&self) -> Result<(&Path, &OsStr), StoreError> {
        let Some(name) = self.path.file_name() else {
            return Err(StoreError::new(format!(
                "token file path {} does not name a file",
                self.path.display()
            )));
        };
        let dir = self
            .path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok((dir, name))
    }

    /// The file's contents; `None` when there is no file.
    fn read(&self) -> Result<Option<Contents>, StoreError> {
        match read_existing(&self.path)? {
            Existing::Missing => Ok(None),
            Existing::Symlink => Err(self.symlink_error()),
            Existing::Contents(contents) => Ok(Some(contents)),
        }
    }

    /// Runs `change` on the file's contents under the file's exclusive lock, and writes
    /// them back when it says so.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Contents) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let (dir, name) = self.dir_and_name()?;
        create_private_dir(dir)?;
        let mut lock_name = OsString::from(".");
        lock_name.push(name);
        lock_name.push(".lock");
        let lock_path = dir.join(lock_name);
        let lock = open_lock_file(&lock_path)?;
        lock.lock()
            .map_err(|error| failed("locking", &lock_path, &error))?;
        // A planted symbolic link counts as no file: the rename replaces the link itself.
        let mut contents = match read_existing(&self.path)? {
            Existing::Missing | Existing::Symlink => Contents::default(),
            Existing::Contents(contents) => contents,
        };
        let (result, write) = change(&mut contents)?;
        if write {
            self.write(&contents)?;
        }
        // Closing the file releases the lock.
        drop(lock);
        Ok(result)
    }

    /// Puts `tokens` under `key`: into the keychain when the key's tokens are there (or new
    /// ones go there), else into the file.
    fn put_tokens(
        &self,
        contents: &mut Contents,
        key: &str,
        tokens: &TokenSet,
    ) -> Result<(), StoreError> {
        let Some(account) = self.keychain_account(contents, key) else {
            contents.tokens.insert(key.to_owned(), tokens.clone());
            return Ok(());
        };
        let keychain = self.keychain(key)?;
        let bytes = serde_json::to_vec(tokens).map_err(|_| {
            StoreError::new(format!("serializing tokens for {}", self.path.display()))
        })?;
        keychain.set(&account, &bytes)?;
        contents.tokens.remove(key);
        contents.keychain.insert(key.to_owned(), account);
        Ok(())
    }

    /// The keychain account `key`'s tokens are kept under, or would be on the next save;
    /// `None` when they belong in the file.
    fn keychain_account(&self, contents: &Contents, key: &str) -> Option<String> {
        match (contents.keychain.get(key), &self.keychain) {
            (Some(account), _) => Some(account.clone()),
            (None, Some(used)) if used.new_entries => Some(self.account(key)),
            (None, _) => None,
        }
    }

    /// The tokens under `key`, from wherever they are.
    fn read_tokens(
        &self,
        contents: &mut Contents,
        key: &str,
    ) -> Result<Option<TokenSet>, StoreError> {
        let Some(account) = contents.keychain.get(key) else {
            return Ok(contents.tokens.remove(key));
        };
        let Some(bytes) = self.keychain(key)?.get(account)? else {
            // Removed from the keychain by hand: logged out.
            return Ok(None);
        };
        // TokenSet's deserializer never puts a value into its error message.
        serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            StoreError::new(format!(
                "the keychain item of {key:?} is not a token set: {error}"
            ))
        })
    }

    /// Removes `key`'s tokens, from the keychain too.
    fn take_tokens(&self, contents: &mut Contents, key: &str) -> Result<(), StoreError> {
        if let Some(account) = contents.keychain.get(key) {
            self.keychain(key)?.delete(account)?;
            contents.keychain.remove(key);
        }
        contents.tokens.remove(key);
        Ok(())
    }

    fn keychain(&self, key: &str) -> Result<&dyn Keychain, StoreError> {
        match &self.keychain {
            Some(used) => Ok(&*used.keychain),
            None => Err(StoreError::new(format!(
                "the tokens of {key:?} in {} are in the OS keychain, which this program does \
                 not use",
                self.path.display()
            ))),
        }
    }

    /// The keychain account of `key`: the key and the file, so that two token files never
    /// share an item.
    fn account(&self, key: &str) -> String {
        let path = std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone());
        format!("{key}@{}", path.display())
    }

    fn symlink_error(&self) -> StoreError {
        StoreError::new(format!(
            "token file {} is a symbolic link, which is never followed",
            self.path.display()
        ))
    }

    /// Replaces the file with `contents`, or removes it when they are empty.
    fn write(&self, contents: &Contents) -> Result<(), StoreError> {
        let path = &self.path;
        let (dir, name) = self.dir_and_name()?;
        remove_stale_temps(dir, name);
        if contents.is_empty() {
            match fs::remove_file(path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => {
                    return Err(failed("removing", path, &error));
                }
                _ => {}
            }
        } else {
            let bytes = serialize(contents).map_err(|_| {
                StoreError::new(format!("serializing tokens for {}", path.display()))
            })?;
            let temp = dir.join(temp_name(name)?);
            let written = write_new_file(&temp, &bytes).and_then(|()| {
                fs::rename(&temp, path).map_err(|error| {
                    failed(&format!("renaming {} over", temp.display()), path, &error)
                })
            });
            if written.is_err() {
                // Best effort: the save already failed, and the error to report is that one.
                let _ = fs::remove_file(&temp);
            }
            written?;
        }
        sync_dir(dir)
    }

    fn refreshing(&self) -> MutexGuard<'_, BTreeMap<String, (u64, File)>> {
        // Every operation is a single insert or removal.
        self.refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn location(contents: &Contents, key: &str) -> TokenLocation {
    match (
        contents.keychain.get(key),
        contents.tokens.contains_key(key),
    ) {
        (Some(account), _) => TokenLocation::Keychain {
            account: account.clone(),
        },
        (None, true) => TokenLocation::File,
        (None, false) => TokenLocation::Nowhere,
    }
}

/// A key as part of a lock file's name: itself when it is short and made of letters,
/// digits, `-` and `_`; otherwise `h` and a 64-bit FNV-1a hash of it (two keys sharing a
/// lock file only wait for each other).
fn key_tag(key: &str) -> String {
    let plain = (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if plain {
        return key.to_owned();
    }
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("h{hash:016x}")
}

/// Opens (creating it `0600`, never through a symbolic link) a lock file.
fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    let mut options = no_follow();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map_err(|error| failed("opening lock file", path, &error))
}

/// A login under way for one key of a [`FileStore`] ([`FileStore::try_begin_login`]);
/// dropping it ends the mark.
#[derive(Debug)]
pub struct LoginGuard {
    _file: File,
}

/// Why [`FileStore::try_begin_login`] did not begin.
#[derive(Debug)]
pub enum LoginLockError {
    /// Another login for the key is under way, in the process named when known.
    InProgress {
        /// The process id of the login under way.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    Store(StoreError),
}

impl From<StoreError> for LoginLockError {
    fn from(error: StoreError) -> LoginLockError {
        LoginLockError::Store(error)
    }
}

impl fmt::Display for LoginLockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginLockError::InProgress { pid: Some(pid) } => {
                write!(f, "another login is in progress (process {pid})")
            }
            LoginLockError::InProgress { pid: None } => f.write_str("another login is in progress"),
            LoginLockError::Store(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for LoginLockError {}

impl TokenStore for FileStore {
    fn save(&self, key: &str, tokens: &TokenSet) -> Result<(), StoreError> {
        self.update(|contents| {
            self.put_tokens(contents, key, tokens)?;
            contents.move_fence(key);
            Ok(((), true))
        })
    }

    fn load(&self, key: &str) -> Result<Option<TokenSet>, StoreError> {
        // No lock: the file is only ever replaced by a rename, so this reads the old file or
        // the new one.
        match self.read()? {
            None => Ok(None),
            Some(mut contents) => self.read_tokens(&mut contents, key),
        }
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        if fs::symlink_metadata(&self.path)
            .is_err_and(|error| error.kind() == io::ErrorKind::NotFound)
        {
            return Ok(());
        }
        self.update(|contents| {
            self.take_tokens(contents, key)?;
            contents.providers.remove(key);
            contents.move_fence(key);
            Ok(((), true))
        })
    }

    /// Processes share the file: a refresh is taken under the key's refresh lock.
    fn shares_refresh(&self) -> bool {
        true
    }

    /// Takes `key`'s refresh lock, an OS file lock that ends with its holder: `lease` is not
    /// needed (see [`FileStore`]).
    fn lock_refresh(&self, key: &str, _lease: Duration) -> Result<Option<u64>, StoreError> {
        if self.refreshing().contains_key(key) {
            return Ok(None);
        }
        let path = self.lock_path(key, "refresh")?;
        let file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(error)) => return Err(failed("locking", &path, &error)),
        }
        // The file is unlocked again when `file` is dropped on an error here.
        let fence = self.update(|contents| Ok((contents.move_fence(key), true)))?;
        let mut refreshing = self.refreshing();
        if refreshing.contains_key(key) {
            // Another source in this process took it meanwhile (only possible where the OS
            // lock is per process rather than per open file).
            return Ok(None);
        }
        refreshing.insert(key.to_owned(), (fence, file));
        Ok(Some(fence))
    }

    fn save_fenced(&self, key: &str, tokens: &TokenSet, fence: u64) -> Result<bool, StoreError> {
        self.update(|contents| {
            if !contents.fence_holds(key, fence) {
                return Ok((false, false));
            }
            self.put_tokens(contents, key, tokens)?;
            contents.move_fence(key);
            Ok((true, true))
        })
    }

    fn delete_fenced(&self, key: &str, fence: u64) -> Result<bool, StoreError> {
        self.update(|contents| {
            if !contents.fence_holds(key, fence) {
                return Ok((false, false));
            }
            self.take_tokens(contents, key)?;
            contents.providers.remove(key);
            contents.move_fence(key);
            Ok((true, true))
        })
    }

    fn unlock_refresh(&self, key: &str, fence: u64) -> Result<(), StoreError> {
        let mut refreshing = self.refreshing();
        if refreshing.get(key).is_some_and(|(held, _)| *held == fence) {
            // Closing the file releases the lock.
            refreshing.remove(key);
        }
        Ok(())
    }
}

/// What is at the token file's path.
enum Existing {
    Missing,
    Symlink,
    Contents(Contents),
}

fn read_existing(path: &Path) -> Result<Existing, StoreError> {
    let mut file = match no_follow().read(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Existing::Missing),
        Err(error) => {
            // O_NOFOLLOW fails with ELOOP on Linux and macOS but EMLINK on FreeBSD; asking the
            // file system is portable.
            if fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink()) {
                return Ok(Existing::Symlink);
            }
            return Err(failed("opening", path, &error));
        }
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|error| failed("reading", path, &error))?;
    parse(&bytes)
        .map(Existing::Contents)
        .map_err(|reason| StoreError::new(format!("token file {}: {reason}", path.display())))
}

/// Parses the file's bytes. The reason given on failure never quotes the file's content,
/// which may hold tokens (S41).
fn parse(bytes: &[u8]) -> Result<Contents, String> {
    let mut document: Value = serde_json::from_slice(bytes).map_err(|error| {
        format!(
            "corrupt: not JSON (line {}, column {})",
            error.line(),
            error.column()
        )
    })?;
    match document.get("version").and_then(Value::as_u64) {
        Some(VERSION) => {}
        Some(version) => return Err(format!("unsupported format version {version}")),
        None => return Err("corrupt: no format version".to_owned()),
    }
    let Some(Value::Object(tokens)) = document.get_mut("tokens").map(Value::take) else {
        return Err("corrupt: no token map".to_owned());
    };
    let tokens = tokens
        .into_iter()
        .map(|(key, value)| match serde_json::from_value(value) {
            Ok(tokens) => Ok((key, tokens)),
            // TokenSet's deserializer never puts a value into its error message.
            Err(error) => Err(format!("corrupt entry {key:?}: {error}")),
        })
        .collect::<Result<_, _>>()?;
    // Files written before provider records existed have none.
    let providers = optional_map(&mut document, "providers", |key, value| {
        ProviderRecord::from_json(value)
            .map_err(|reason| format!("corrupt provider record {key:?}: {reason}"))
    })?;
    // Files written before the keychain and fences existed have neither.
    let keychain = optional_map(&mut document, "keychain", |key, value| match value {
        Value::String(account) => Ok(account.clone()),
        _ => Err(format!(
            "corrupt: the keychain account of {key:?} is not a string"
        )),
    })?;
    let fences = optional_map(&mut document, "fences", |key, value| {
        value
            .as_u64()
            .ok_or_else(|| format!("corrupt: the fence of {key:?} is not a number"))
    })?;
    Ok(Contents {
        tokens,
        providers,
        keychain,
        fences,
    })
}

/// The map called `name` in `document`, each value read by `read`; empty when absent.
fn optional_map<T>(
    document: &mut Value,
    name: &str,
    read: impl Fn(&str, &Value) -> Result<T, String>,
) -> Result<BTreeMap<String, T>, String> {
    match document.get_mut(name).map(Value::take) {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(key, value)| read(key, value).map(|read| (key.clone(), read)))
            .collect(),
        Some(_) => Err(format!("corrupt: {name} is not a map")),
    }
}

fn serialize(contents: &Contents) -> serde_json::Result<Vec<u8>> {
    let mut bytes = format!("{{\"version\":{VERSION},\"tokens\":").into_bytes();
    serde_json::to_writer(&mut bytes, &contents.tokens)?;
    if !contents.providers.is_empty() {
        let providers: Map<String, Value> = contents
            .providers
            .iter()
            .map(|(key, record)| (key.clone(), record.to_json()))
            .collect();
        bytes.extend_from_slice(b",\"providers\":");
        serde_json::to_writer(&mut bytes, &providers)?;
    }
    if !contents.keychain.is_empty() {
        bytes.extend_from_slice(b",\"keychain\":");
        serde_json::to_writer(&mut bytes, &contents.keychain)?;
    }
    if !contents.fences.is_empty() {
        bytes.extend_from_slice(b",\"fences\":");
        serde_json::to_writer(&mut bytes, &contents.fences)?;
    }
    bytes.extend_from_slice(b"}\n");
    Ok(bytes)
}

/// Open options that refuse to go through a symbolic link at the last path component.
fn no_follow() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options
}

/// Creates `dir` (and missing ancestors) with mode `0700`; an existing directory is left
/// as it is. The umask can only take permissions away, so this is never more open.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|error| failed("creating directory", dir, &error))
}

/// `.<name>.<16 random hex digits>.tmp`: hidden, and unguessable so that nobody can plant
/// something at it in advance (the exclusive create would fail on it anyway).
fn temp_name(name: &OsStr) -> Result<OsString, StoreError> {
    let random = getrandom::u64()
        .map_err(|error| StoreError::new(format!("drawing a temporary file name: {error}")))?;
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".{random:016x}.tmp"));
    Ok(temp)
}

fn is_temp_name(candidate: &OsStr, name: &OsStr) -> bool {
    let rest = candidate.as_encoded_bytes().strip_prefix(b".");
    let rest = rest.and_then(|rest| rest.strip_prefix(name.as_encoded_bytes()));
    let rest = rest.and_then(|rest| rest.strip_prefix(b"."));
    let random = rest.and_then(|rest| rest.strip_suffix(b".tmp"));
    random.is_some_and(|random| random.len() == 16 && random.iter().all(u8::is_ascii_hexdigit))
}

/// Removes temporary files that crashed saves left in `dir`. Best effort: a leftover only
/// wastes space, so failing to remove one must not fail the save.
fn remove_stale_temps(dir: &Path, name: &OsStr) {
    let Ok(listing) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in listing.flatten() {
        if !is_temp_name(&entry.file_name(), name) {
            continue;
        }
        // DirEntry::metadata does not follow symbolic links.
        let stale = entry.metadata().is_ok_and(|meta| {
            meta.is_file()
                && meta.modified().is_ok_and(|modified| {
                    now.duration_since(modified)
                        .is_ok_and(|age| age > STALE_TEMP_AGE)
                })
        });
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Creates `path` exclusively with mode `0600` (the exclusive create also refuses a
/// symbolic link planted there), writes `bytes` and syncs them to disk.
fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut options = no_follow();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|error| failed("creating", path, &error))?;
    file.write_all(bytes)
        .map_err(|error| failed("writing", path, &error))?;
    file.sync_all()
        .map_err(|error| failed("syncing", path, &error))
}

/// Makes the rename durable: without it a power loss can bring back the old file.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| failed("syncing directory", dir, &error))
}

/// Windows cannot open a directory as a `File`; its rename is journaled instead.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

fn failed(operation: &str, path: &Path, error: &io::Error) -> StoreError {
    StoreError::new(format!("{operation} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognized_and_nothing_else() {
        let name = OsStr::new("tokens.json");
        let temp = temp_name(name).expect("random name");
        assert!(is_temp_name(&temp, name), "{temp:?}");
        assert_ne!(temp, temp_name(name).expect("random name"));
        for other in [
            "tokens.json",
            ".tokens.json.tmp",
            ".tokens.json.0123456789abcdeg.tmp",
            ".tokens.json.0123456789abcdef0.tmp",
            ".other.json.0123456789abcdef.tmp",
            "x.tokens.json.0123456789abcdef.tmp",
        ] {
            assert!(!is_temp_name(OsStr::new(other), name), "{other}");
        }
        assert!(is_temp_name(
            OsStr::new(".tokens.json.0123456789abcdef.tmp"),
            name
        ));
    }
}
