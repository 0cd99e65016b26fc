//! [`RedisKeySets`]: the provider's ID token signing keys, shared between replicas so that
//! one fetch serves them all.
//!
//! The document is what [`Engine::export_key_sets`](latchkey::Engine::export_key_sets) or
//! [`Session::export_key_sets`](latchkey::Session::export_key_sets) returns, and what
//! their `import_key_sets` takes: public keys, and when they were fetched. It is stored at
//! `{prefix}keysets` for [`MAX_AGE`] (after which the engines would fetch again anyway).
//!
//! Nothing in it is secret, but it decides which signatures an ID token is checked
//! against: whoever could write it could have replicas accept ID tokens they signed
//! themselves. So it is sealed like everything else (kind `keysets`, the Redis key as
//! associated data), for its integrity rather than its secrecy, and a document that does
//! not open is an error, never imported.

use std::sync::Arc;

use latchkey::StoreError;
use latchkey::oidc::MAX_AGE;

use latchkey_io::store::KeySetCache;

use crate::client::{Retry, Shared, millis};

/// The seal kind of key-set documents.
const KIND: &str = "keysets";

/// The key-set cache in Redis; made by [`Redis::key_sets`](crate::Redis::key_sets). Cheap
/// to clone.
#[derive(Clone)]
pub struct RedisKeySets {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisKeySets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKeySets")
            .field("server", &self.shared.pool.server())
            .finish()
    }
}

impl RedisKeySets {
    pub(crate) fn new(shared: Arc<Shared>) -> RedisKeySets {
        RedisKeySets { shared }
    }

    /// Stores an exported key-set document for [`MAX_AGE`], replacing the one before.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when it could not be stored.
    pub fn save(&self, document: &[u8]) -> Result<(), StoreError> {
        let key = self.shared.pool.plain_key("keysets");
        let sealed = self
            .shared
            .keys
            .seal(KIND, &key, document)
            .map_err(|error| StoreError::new(error.to_string()))?;
        self.shared
            .pool
            .run("saving key sets", Retry::Safe, |connection| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&sealed)
                    .arg("PX")
                    .arg(millis(MAX_AGE))
                    .exec(connection)
            })
    }

    /// The key-set document stored last, if it has not expired.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when it could not be read, or does not open.
    pub fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.shared.pool.plain_key("keysets");
        let sealed: Option<Vec<u8>> =
            self.shared
                .pool
                .run("loading key sets", Retry::Safe, |connection| {
                    redis::cmd("GET").arg(&key).query(connection)
                })?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let mut document = self
            .shared
            .keys
            .open(KIND, &key, &sealed)
            .map_err(|error| {
                StoreError::new(format!(
                    "the key sets stored in redis at {} do not open: {error}",
                    self.shared.pool.server()
                ))
            })?;
        Ok(Some(std::mem::take(&mut *document)))
    }
}

impl KeySetCache for RedisKeySets {
    fn save(&self, document: &[u8]) -> Result<(), StoreError> {
        RedisKeySets::save(self, document)
    }

    fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        RedisKeySets::load(self)
    }
}
