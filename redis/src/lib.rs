//! # latchkey-redis
//!
//! Redis (or Valkey) for latchkey services that run as several replicas behind a load
//! balancer. One [`Redis`] — a server, a small pool of connections, and the keys that seal
//! what is stored — hands out:
//!
//! - [`RedisTokenStore`], a [`TokenStore`](latchkey_io::store::TokenStore): every
//!   replica sees the tokens any of them stored, and a fenced refresh lock lets one
//!   replica at a time refresh a login, with late writers fenced out (S57);
//! - [`RedisDirectory`], a [`FlowDirectory`](latchkey_io::directory::FlowDirectory): a
//!   login started on one replica can finish on whichever one the provider's redirect
//!   reaches, with atomic single-use takes (S54), expiry (S56), and announcements of
//!   outcomes to every replica;
//! - [`RedisKeySets`]: the provider's ID token keys, fetched by one replica, used by all.
//!
//! ```no_run
//! use std::sync::Arc;
//! use latchkey_redis::{Redis, RedisConfig, SealKeys};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = SealKeys::from_file("/etc/latchkey/seal-keys")?;
//! let redis = Redis::new(RedisConfig::new("redis://:password@cache.internal:6379/0", keys))?;
//! redis.ping()?;
//! let store = Arc::new(redis.token_store());
//! let directory = Arc::new(redis.directory());
//! // ServiceOptions { store, .. }.with_directory(directory), and so on.
//! # let _ = (store, directory);
//! # Ok(())
//! # }
//! ```
//!
//! ## Nothing secret in the clear (S55)
//!
//! Flow records (PKCE verifier, nonce), token sets and key sets are sealed with
//! AES-256-GCM under keys only the replicas hold ([`seal`]), each bound to where it is
//! stored, so that a record moved under another key does not open. Redis keys carry the
//! flow key (a digest of the `state`) or the store key (a user id, say), never a token.
//! Someone who reads the Redis server, its disk or its backups learns which logins exist,
//! not how to use them.
//!
//! ## Errors (S58)
//!
//! Every failure is a [`StoreError`](latchkey::StoreError) that names the server
//! (`host:port`, never the password) and the operation: an unreachable server within the
//! connect timeout, a slow one within the I/O timeout (2 s each by default). Once the
//! server is back, the next call reconnects; nothing has to be restarted.
//!
//! ## Why the synchronous client
//!
//! This crate uses [redis-rs](https://docs.rs/redis), the maintained and widely used Rust
//! client (Valkey speaks the same protocol), without its async half. Token stores and
//! flow directories are blocking traits: the drivers already call them from their
//! runtime's blocking pool. A synchronous connection therefore works the same under smol
//! and tokio, and keeps every async runtime out of this crate; redis-rs's `aio` would
//! bring tokio and tokio-util into smol builds for no gain.
//!
//! ## Limits
//!
//! One server, standalone or behind a proxy that looks like one (Sentinel fail-over
//! through a stable address works; Redis Cluster does not, since the scripts touch keys
//! without hash tags). No TLS: use a private network or a tunnel (what is stored is
//! sealed either way, but the password in the URL travels in the clear). Announcements
//! are Redis pub/sub: a listener that is reconnecting misses those sent meanwhile, and
//! the login they concern ends at its deadline on the replica that started it.
#![forbid(unsafe_code)]

mod client;
pub mod directory;
pub mod keys;
pub mod seal;
pub mod store;

pub use client::{
    ConfigError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, DEFAULT_MAX_IDLE, DEFAULT_PREFIX,
    Redis, RedisConfig,
};
pub use directory::RedisDirectory;
pub use keys::RedisKeySets;
pub use seal::{OpenError, SealError, SealKeyError, SealKeys};
pub use store::RedisTokenStore;
