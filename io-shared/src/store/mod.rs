//! Where tokens are kept between runs: the [`TokenStore`] trait, [`MemoryStore`] and
//! [`FileStore`] (optionally with the secrets in the OS [`Keychain`]).
//!
//! A store holds one [`TokenSet`] per key. Programs that log in one user use
//! [`DEFAULT_KEY`]; a service logging in many users uses its own keys (user ids, say).
//! Error messages name the file and the failing operation, never a token (S41).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use latchkey::{StoreError, TokenSet};

mod file;
mod keychain;
mod record;

pub use file::{FileStore, LoginGuard, LoginLockError, StoredEntry, TokenLocation};
#[cfg(feature = "keychain")]
pub use keychain::OsKeychain;
pub use keychain::{KEYCHAIN_SERVICE, Keychain};
pub use record::ProviderRecord;

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
