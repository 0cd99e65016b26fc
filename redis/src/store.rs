//! [`RedisTokenStore`]: token sets shared by every replica, sealed, with a refresh lock
//! that lets one replica at a time refresh a login and fences out the rest (S57).
//!
//! # Keys
//!
//! | key | value |
//! |---|---|
//! | `{prefix}tokens:{key}` | the token set as JSON, sealed (kind `tokens`, the store key as associated data) |
//! | `{prefix}fence:{key}` | a counter: the newest fence |
//! | `{prefix}lock:{key}` | the lock holder's fence, with the lease as its expiry |
//!
//! No key contains a token, and no value holds one in the clear (S55).
//!
//! # The refresh lock, and why it is fenced
//!
//! A lease-based lock alone cannot keep two replicas from refreshing at once: a holder
//! that stalls (a long garbage-collection pause, a slow token endpoint, a suspended VM)
//! past its lease loses the lock without knowing it, a second replica takes it and
//! refreshes, and the first one then wakes up and writes its older tokens over the newer
//! ones. With rotating refresh tokens that overwrite logs everyone out, because the
//! refresh token it writes was already used.
//!
//! So every lock comes with a fence, a number from a counter that only grows, and the
//! tokens are written back only if the counter still holds that number
//! ([`save_fenced`](TokenStore::save_fenced)): anything that happened in between (another
//! replica took the lock, a login saved new tokens, a logout deleted them) moved the
//! counter on, and the late write is refused. Each step is one Lua script, so nothing
//! runs between its check and its write:
//!
//! - `lock_refresh`: if nobody holds the lock, increment the counter, store the new fence
//!   in the lock with the lease as its expiry (`PX`), and return it; otherwise `nil`.
//! - `save_fenced`: write the tokens if the counter equals the fence; otherwise nothing.
//! - `save` and `delete`: write or delete the tokens and increment the counter, so that a
//!   login or a logout beats a refresh that was in flight.
//! - `unlock_refresh`: delete the lock if it still holds the fence (a holder whose lease
//!   ran out must not release its successor's lock).
//!
//! The counters never expire, so a fence is never handed out twice for a key; they cost a
//! few bytes per key ever stored.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use latchkey::{StoreError, TokenSet};
use latchkey_io::store::TokenStore;
use redis::Script;
use zeroize::Zeroizing;

use crate::client::{Retry, Shared, millis};

/// The seal kind of token sets.
const KIND: &str = "tokens";

/// KEYS: tokens, fence. ARGV: sealed tokens.
static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "redis.call('SET', KEYS[1], ARGV[1])
         redis.call('INCR', KEYS[2])
         return 1",
    )
});

/// KEYS: tokens, fence.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "redis.call('DEL', KEYS[1])
         redis.call('INCR', KEYS[2])
         return 1",
    )
});

/// KEYS: lock, fence. ARGV: lease in milliseconds. The new fence, or nil.
static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return false end
         local fence = redis.call('INCR', KEYS[2])
         redis.call('SET', KEYS[1], fence, 'PX', ARGV[1])
         return fence",
    )
});

/// KEYS: tokens, fence. ARGV: sealed tokens, fence. 1 when written, 0 when not.
static SAVE_FENCED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
         redis.call('SET', KEYS[1], ARGV[1])
         return 1",
    )
});

/// KEYS: tokens, fence. ARGV: fence. 1 when deleted, 0 when not.
static DELETE_FENCED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
         redis.call('DEL', KEYS[1])
         redis.call('INCR', KEYS[2])
         return 1",
    )
});

/// KEYS: lock. ARGV: fence.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
         return 1",
    )
});

/// Token sets in Redis, shared by every replica given the same server, prefix and seal
/// keys; made by [`Redis::token_store`](crate::Redis::token_store). Cheap to clone.
#[derive(Clone)]
pub struct RedisTokenStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTokenStore")
            .field("server", &self.shared.pool.server())
            .finish()
    }
}

impl RedisTokenStore {
    pub(crate) fn new(shared: Arc<Shared>) -> RedisTokenStore {
        RedisTokenStore { shared }
    }

    fn keys(&self, key: &str) -> (Vec<u8>, Vec<u8>) {
        let pool = &self.shared.pool;
        (
            pool.key("tokens", key.as_bytes()),
            pool.key("fence", key.as_bytes()),
        )
    }

    fn seal(&self, key: &str, tokens: &TokenSet) -> Result<Vec<u8>, StoreError> {
        let json = Zeroizing::new(serde_json::to_vec(tokens).map_err(|error| {
            StoreError::new(format!("serializing the token set for {key:?}: {error}"))
        })?);
        self.shared
            .keys
            .seal(KIND, key.as_bytes(), &json)
            .map_err(|error| StoreError::new(error.to_string()))
    }
}

impl TokenStore for RedisTokenStore {
    fn save(&self, key: &str, tokens: &TokenSet) -> Result<(), StoreError> {
        let sealed = self.seal(key, tokens)?;
        let (tokens, fence) = self.keys(key);
        self.shared
            .pool
            .run("saving tokens", Retry::Safe, |connection| {
                SAVE.key(&tokens)
                    .key(&fence)
                    .arg(&sealed)
                    .invoke::<i64>(connection)
            })
            .map(drop)
    }

    fn load(&self, key: &str) -> Result<Option<TokenSet>, StoreError> {
        let (tokens, _) = self.keys(key);
        let sealed: Option<Vec<u8>> =
            self.shared
                .pool
                .run("loading tokens", Retry::Safe, |connection| {
                    redis::cmd("GET").arg(&tokens).query(connection)
                })?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let json = self
            .shared
            .keys
            .open(KIND, key.as_bytes(), &sealed)
            .map_err(|error| {
                StoreError::new(format!(
                    "the token set stored in redis at {} for {key:?} does not open: {error}",
                    self.shared.pool.server()
                ))
            })?;
        // It opened, so this crate sealed it: a set it cannot read comes from another
        // version. TokenSet's deserializer never puts a value into its error message.
        serde_json::from_slice(&json).map(Some).map_err(|error| {
            StoreError::new(format!(
                "the token set stored in redis at {} for {key:?} is not one this version reads: {error}",
                self.shared.pool.server()
            ))
        })
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let (tokens, fence) = self.keys(key);
        self.shared
            .pool
            .run("deleting tokens", Retry::Safe, |connection| {
                DELETE.key(&tokens).key(&fence).invoke::<i64>(connection)
            })
            .map(drop)
    }

    /// Network I/O.
    fn blocks(&self) -> bool {
        true
    }

    /// Replicas share it: one of them refreshes a login at a time.
    fn shares_refresh(&self) -> bool {
        true
    }

    fn lock_refresh(&self, key: &str, lease: Duration) -> Result<Option<u64>, StoreError> {
        let pool = &self.shared.pool;
        let (lock, fence) = (
            pool.key("lock", key.as_bytes()),
            pool.key("fence", key.as_bytes()),
        );
        // Never sent twice: a second try could find the lock its first try took.
        pool.run("taking the refresh lock", Retry::Never, |connection| {
            LOCK.key(&lock)
                .key(&fence)
                .arg(millis(lease))
                .invoke::<Option<u64>>(connection)
        })
    }

    fn save_fenced(&self, key: &str, tokens: &TokenSet, fence: u64) -> Result<bool, StoreError> {
        let sealed = self.seal(key, tokens)?;
        let (tokens, fence_key) = self.keys(key);
        // A compare-and-set that leaves the counter alone: safe to send twice.
        let written =
            self.shared
                .pool
                .run("saving refreshed tokens", Retry::Safe, |connection| {
                    SAVE_FENCED
                        .key(&tokens)
                        .key(&fence_key)
                        .arg(&sealed)
                        .arg(fence)
                        .invoke::<i64>(connection)
                })?;
        Ok(written == 1)
    }

    fn delete_fenced(&self, key: &str, fence: u64) -> Result<bool, StoreError> {
        let (tokens, fence_key) = self.keys(key);
        // It moves the counter on: sent twice, the second would say "not deleted".
        let deleted =
            self.shared
                .pool
                .run("deleting refused tokens", Retry::Never, |connection| {
                    DELETE_FENCED
                        .key(&tokens)
                        .key(&fence_key)
                        .arg(fence)
                        .invoke::<i64>(connection)
                })?;
        Ok(deleted == 1)
    }

    fn unlock_refresh(&self, key: &str, fence: u64) -> Result<(), StoreError> {
        let lock = self.shared.pool.key("lock", key.as_bytes());
        self.shared
            .pool
            .run("releasing the refresh lock", Retry::Safe, |connection| {
                UNLOCK.key(&lock).arg(fence).invoke::<i64>(connection)
            })
            .map(drop)
    }
}
