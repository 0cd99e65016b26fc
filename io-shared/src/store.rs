//! Where tokens are kept between runs: the [`TokenStore`] trait, [`MemoryStore`] and
//! [`FileStore`].
//!
//! A store holds one [`TokenSet`] per key. Programs that log in one user use
//! [`DEFAULT_KEY`]; a service logging in many users uses its own keys (user ids, say).
//! Error messages name the file and the failing operation, never a token (S41).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use latchkey::oidc::Algorithm;
use latchkey::{ClientAuth, Provider, ProviderBuilder, StoreError, TokenSet};
use serde_json::{Map, Value, json};

/// Keeps token sets by key. Implementations may block: the drivers call a store from their
/// runtime's blocking pool unless it says it never blocks ([`blocks`](TokenStore::blocks)).
pub trait TokenStore: Send + Sync + 'static {
    /// Stores `tokens` under `key`, replacing what was there as one step: a reader sees the
    /// old entry or the new one, never a mix (S42 relies on this for rotated refresh tokens).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the tokens could not be stored; the previous entry is then kept.
    fn save(&self, key: &str, tokens: &TokenSet) -> Result<(), StoreError>;

    /// The token set stored under `key`, if any.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the store could not be read or is corrupt.
    fn load(&self, key: &str) -> Result<Option<TokenSet>, StoreError>;

    /// Removes the entry under `key`; removing an absent entry succeeds.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the store could not be updated.
    fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Whether `save`, `load` and `delete` may block the calling thread (on disk or network
    /// I/O, or on a lock held across such I/O). A store that answers `false` is called
    /// directly on the runtime, saving a handoff to the blocking pool and back for every
    /// login; it must then return in microseconds. Default: `true`.
    fn blocks(&self) -> bool {
        true
    }

    /// Whether this store is shared by several processes and keeps a refresh lock for
    /// them ([`lock_refresh`](TokenStore::lock_refresh)): a token source then takes the
    /// lock before every refresh, so that any number of processes refresh a login once
    /// between them (S57). Default: `false` (the source's own single flight suffices).
    fn shares_refresh(&self) -> bool {
        false
    }

    /// Tries to take the refresh lock of `key` for `lease` (after which it is released by
    /// itself, should its holder die). `Some(fence)`: taken, with a number larger than any
    /// fence handed out for `key` before; `None`: another process holds it.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the store could not be asked.
    fn lock_refresh(&self, key: &str, lease: Duration) -> Result<Option<u64>, StoreError> {
        let _ = (key, lease);
        Ok(Some(0))
    }

    /// Stores refreshed `tokens` under `key` if `fence` is still the newest fence of `key`
    /// and nothing was saved or deleted since it was handed out: `Ok(false)`, and nothing
    /// written, when a newer lock holder or a login got there first (S57).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the tokens could not be stored; the previous entry is kept.
    fn save_fenced(&self, key: &str, tokens: &TokenSet, fence: u64) -> Result<bool, StoreError> {
        let _ = fence;
        self.save(key, tokens).map(|()| true)
    }

    /// Deletes the tokens under `key` if `fence` is still the newest fence of `key` and
    /// nothing was saved or deleted since it was handed out: `Ok(false)`, and nothing
    /// deleted, when a newer lock holder or a login got there first (S57).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the store could not be updated.
    fn delete_fenced(&self, key: &str, fence: u64) -> Result<bool, StoreError> {
        let _ = fence;
        self.delete(key).map(|()| true)
    }

    /// Releases the refresh lock of `key` if `fence` still holds it.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the store could not be asked (the lease ends it anyway).
    fn unlock_refresh(&self, key: &str, fence: u64) -> Result<(), StoreError> {
        let _ = (key, fence);
        Ok(())
    }
}

/// Keeps the provider's key sets (an export of the engine's key cache, see
/// [`latchkey::oidc`]) where other processes find them: replicas that share one start
/// with the keys another fetched. Implementations may block; the drivers call them from
/// the blocking pool. `latchkey-redis` has one.
pub trait KeySetCache: Send + Sync + 'static {
    /// Stores an exported key-set document, replacing the one before.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when it could not be stored.
    fn save(&self, document: &[u8]) -> Result<(), StoreError>;

    /// The document stored last, if any.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when it could not be read.
    fn load(&self) -> Result<Option<Vec<u8>>, StoreError>;
}

/// The key programs that log in a single user store their tokens under.
pub const DEFAULT_KEY: &str = "default";

/// Tokens kept in memory only, lost when the process ends: for tests, and for programs that
/// log in for one run.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tokens: Mutex<BTreeMap<String, TokenSet>>,
}

impl MemoryStore {
    fn tokens(&self) -> MutexGuard<'_, BTreeMap<String, TokenSet>> {
        // Every operation is a single insert, remove or clone, so a thread that panicked while
        // holding the lock cannot have left the map half-updated.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TokenStore for MemoryStore {
    fn save(&self, key: &str, tokens: &TokenSet) -> Result<(), StoreError> {
        self.tokens().insert(key.to_owned(), tokens.clone());
        Ok(())
    }

    fn load(&self, key: &str) -> Result<Option<TokenSet>, StoreError> {
        Ok(self.tokens().get(key).cloned())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.tokens().remove(key);
        Ok(())
    }

    /// A map insert or removal under a lock held for nothing else.
    fn blocks(&self) -> bool {
        false
    }
}

/// The file format version written, and the only one read.
const VERSION: u64 = 1;

/// Temporary files older than this are leftovers of a save that crashed, and the next save
/// removes them. Younger ones may belong to a save in progress in another process.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60);

/// What a token file holds.
#[derive(Default)]
struct Contents {
    /// Token sets by key.
    tokens: BTreeMap<String, TokenSet>,
    /// Provider records by key.
    providers: BTreeMap<String, ProviderRecord>,
}

impl Contents {
    fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.providers.is_empty()
    }
}

/// Tokens kept in one JSON file:
/// `{"version":1,"tokens":{"<key>":<token set>,...},"providers":{"<key>":<record>,...}}`,
/// each token set as [`TokenSet`]'s `Serialize` writes it (secrets in clear, hence the
/// permissions), and next to it, when the program saved one, the [`ProviderRecord`] of the
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
/// - Saves in one process are serialized; concurrent saves from several processes do not
///   corrupt the file, but the last one wins and may drop another's entry.
/// - A corrupt file or one with another version is an error, and is not overwritten: it may
///   hold tokens a newer program version wrote. Remove it to start afresh.
///
/// On non-Unix systems there are no modes, and the directory is not synced.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    /// Held across each read-modify-write so that two saves in this process cannot lose one
    /// another's entry.
    lock: Mutex<()>,
}

impl FileStore {
    /// A store kept in the file at `path`. Nothing is touched until the first operation.
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    /// The token file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded state is the file, which a panicking writer leaves old or new.
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the settings of the provider whose tokens are (or will be) stored under
    /// `key`, replacing an earlier record, so that a later run can refresh or revoke them
    /// with nothing but the client secret. The tokens under `key` are left as they are.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the file could not be read or written.
    pub fn save_provider(&self, key: &str, record: &ProviderRecord) -> Result<(), StoreError> {
        let _guard = self.lock();
        let mut contents = match read_existing(&self.path)? {
            Existing::Missing | Existing::Symlink => Contents::default(),
            Existing::Contents(contents) => contents,
        };
        contents.providers.insert(key.to_owned(), record.clone());
        self.write(&contents)
    }

    /// The provider record saved under `key`, if any.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the file could not be read or is corrupt.
    pub fn load_provider(&self, key: &str) -> Result<Option<ProviderRecord>, StoreError> {
        match read_existing(&self.path)? {
            Existing::Missing => Ok(None),
            Existing::Symlink => Err(self.symlink_error()),
            Existing::Contents(mut contents) => Ok(contents.providers.remove(key)),
        }
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
        let Some(name) = path.file_name() else {
            return Err(StoreError::new(format!(
                "token file path {} does not name a file",
                path.display()
            )));
        };
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_private_dir(dir)?;
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
}

impl TokenStore for FileStore {
    fn save(&self, key: &str, tokens: &TokenSet) -> Result<(), StoreError> {
        let _guard = self.lock();
        // A planted symbolic link counts as no file: the rename replaces the link itself.
        let mut contents = match read_existing(&self.path)? {
            Existing::Missing | Existing::Symlink => Contents::default(),
            Existing::Contents(contents) => contents,
        };
        contents.tokens.insert(key.to_owned(), tokens.clone());
        self.write(&contents)
    }

    fn load(&self, key: &str) -> Result<Option<TokenSet>, StoreError> {
        // No lock: the file is only ever replaced by a rename, so this reads the old file or
        // the new one.
        match read_existing(&self.path)? {
            Existing::Missing => Ok(None),
            Existing::Symlink => Err(self.symlink_error()),
            Existing::Contents(mut contents) => Ok(contents.tokens.remove(key)),
        }
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let _guard = self.lock();
        let mut contents = match read_existing(&self.path)? {
            Existing::Missing => return Ok(()),
            // Writing no entries removes the planted link, as a save would replace it.
            Existing::Symlink => Contents::default(),
            Existing::Contents(contents) => contents,
        };
        contents.tokens.remove(key);
        contents.providers.remove(key);
        self.write(&contents)
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
    let providers = match document.get_mut("providers").map(Value::take) {
        None => BTreeMap::new(),
        Some(Value::Object(providers)) => providers
            .into_iter()
            .map(|(key, value)| match ProviderRecord::from_json(&value) {
                Ok(record) => Ok((key, record)),
                Err(reason) => Err(format!("corrupt provider record {key:?}: {reason}")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("corrupt: the provider records are not a map".to_owned()),
    };
    Ok(Contents { tokens, providers })
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
    bytes.extend_from_slice(b"}\n");
    Ok(bytes)
}

/// The settings of a provider registration that are not secret: enough to refresh or revoke
/// the tokens it issued in a later run, given the client secret again when the client has
/// one. [`FileStore::save_provider`] keeps it next to the tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    /// The issuer identifier, when known.
    pub issuer: Option<String>,
    /// The authorization endpoint.
    pub authorization_endpoint: String,
    /// The token endpoint.
    pub token_endpoint: String,
    /// The revocation endpoint (RFC 7009), when known.
    pub revocation_endpoint: Option<String>,
    /// The client id.
    pub client_id: String,
    /// How the client authenticates; anything but [`ClientAuth::None`] needs the secret.
    pub client_auth: ClientAuth,
    /// The scopes requested at login.
    pub scopes: Vec<String>,
    /// Whether ID tokens were verified at login; refreshed ones are then verified too.
    /// Records written before verification existed say `false`.
    pub verify_id_token: bool,
    /// The key set URI (`jwks_uri`), when known.
    pub jwks_uri: Option<String>,
    /// The UserInfo endpoint, when known.
    pub userinfo_endpoint: Option<String>,
    /// The ID token signing algorithms accepted, by name; empty for the default.
    pub id_token_algorithms: Vec<String>,
    /// Whether the issuer is a `{tenantid}` template.
    pub tenant_issuer: bool,
}

impl ProviderRecord {
    /// The record of `provider`'s settings (its client secret left out).
    pub fn of(provider: &Provider) -> ProviderRecord {
        ProviderRecord {
            issuer: provider.issuer().map(str::to_owned),
            authorization_endpoint: provider.authorization_endpoint().to_owned(),
            token_endpoint: provider.token_endpoint().to_string(),
            revocation_endpoint: provider.revocation_endpoint().map(ToString::to_string),
            client_id: provider.client_id().to_owned(),
            client_auth: provider.client_auth(),
            scopes: provider.scopes().to_vec(),
            verify_id_token: provider.id_token_policy().is_some(),
            jwks_uri: provider.jwks_uri().map(ToString::to_string),
            userinfo_endpoint: provider.userinfo_endpoint().map(ToString::to_string),
            id_token_algorithms: provider.id_token_policy().map_or_else(Vec::new, |policy| {
                policy
                    .algorithms()
                    .iter()
                    .map(|algorithm| algorithm.name().to_owned())
                    .collect()
            }),
            tenant_issuer: provider.tenant_issuer(),
        }
    }

    /// A provider description with these settings. Add the client secret when
    /// [`client_auth`](ProviderRecord::client_auth) needs one, then build: building
    /// validates every endpoint again, so a tampered file cannot point requests anywhere
    /// the configuration rules forbid (S6).
    pub fn builder(&self) -> ProviderBuilder {
        let mut builder = Provider::builder(
            &self.authorization_endpoint,
            &self.token_endpoint,
            &self.client_id,
        )
        .client_auth(self.client_auth)
        .scopes(self.scopes.iter().cloned());
        if let Some(issuer) = &self.issuer {
            builder = builder.issuer(issuer);
        }
        if let Some(endpoint) = &self.revocation_endpoint {
            builder = builder.revocation_endpoint(endpoint);
        }
        if let Some(uri) = &self.jwks_uri {
            builder = builder.jwks_uri(uri);
        }
        if let Some(endpoint) = &self.userinfo_endpoint {
            builder = builder.userinfo_endpoint(endpoint);
        }
        if !self.id_token_algorithms.is_empty() {
            builder = builder.id_token_algorithms(
                self.id_token_algorithms
                    .iter()
                    .filter_map(|name| Algorithm::from_name(name)),
            );
        }
        builder
            .tenant_issuer(self.tenant_issuer)
            .verify_id_token(self.verify_id_token)
            .crypto(crate::crypto::ring())
    }

    fn to_json(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": self.token_endpoint,
            "revocation_endpoint": self.revocation_endpoint,
            "client_id": self.client_id,
            "token_endpoint_auth_method": auth_method_name(self.client_auth),
            "scopes": self.scopes,
            "verify_id_token": self.verify_id_token,
            "jwks_uri": self.jwks_uri,
            "userinfo_endpoint": self.userinfo_endpoint,
            "id_token_algorithms": self.id_token_algorithms,
            "tenant_issuer": self.tenant_issuer,
        })
    }

    fn from_json(value: &Value) -> Result<ProviderRecord, String> {
        let text = |name: &str| match value.get(name) {
            Some(Value::String(text)) => Ok(Some(text.clone())),
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(format!("{name} is not a string")),
        };
        let required = |name: &str| text(name)?.ok_or_else(|| format!("{name} is missing"));
        let method = required("token_endpoint_auth_method")?;
        let client_auth = match method.as_str() {
            "client_secret_basic" => ClientAuth::SecretBasic,
            "client_secret_post" => ClientAuth::SecretPost,
            "none" => ClientAuth::None,
            _ => return Err("token_endpoint_auth_method is not one latchkey knows".to_owned()),
        };
        let list = |name: &str| match value.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("an item of {name} is not a string")),
            Some(_) => Err(format!("{name} is not a list")),
        };
        let flag = |name: &str| match value.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(_) => Err(format!("{name} is not a boolean")),
        };
        Ok(ProviderRecord {
            issuer: text("issuer")?,
            authorization_endpoint: required("authorization_endpoint")?,
            token_endpoint: required("token_endpoint")?,
            revocation_endpoint: text("revocation_endpoint")?,
            client_id: required("client_id")?,
            client_auth,
            scopes: list("scopes")?,
            verify_id_token: flag("verify_id_token")?,
            jwks_uri: text("jwks_uri")?,
            userinfo_endpoint: text("userinfo_endpoint")?,
            id_token_algorithms: list("id_token_algorithms")?,
            tenant_issuer: flag("tenant_issuer")?,
        })
    }
}

/// RFC 8414's name for a client authentication method.
fn auth_method_name(auth: ClientAuth) -> &'static str {
    match auth {
        ClientAuth::SecretBasic => "client_secret_basic",
        ClientAuth::SecretPost => "client_secret_post",
        ClientAuth::None => "none",
    }
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
