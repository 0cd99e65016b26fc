//! The connection to Redis: [`Redis`], made once from a [`RedisConfig`], hands out the
//! token store, the flow directory and the key-set cache, which share its small pool of
//! synchronous connections.
//!
//! Every operation takes an idle connection, or opens one (within the connect timeout),
//! and gives it back afterwards. A connection that failed on the network is dropped with
//! every idle one (they went to the same server, which probably went away), so the next
//! call connects afresh: once Redis is back, calls work again without anyone restarting
//! anything. An operation that can safely run twice (a read, an overwrite, a
//! compare-and-set) is retried once on a new connection when an idle connection turns out
//! to have been closed while it waited; one that cannot (taking a flow record, taking the
//! refresh lock, publishing) reports the error.
//!
//! Errors name the server as `host:port`, never the password in the URL.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use latchkey::StoreError;
use redis::{
    Connection, ConnectionInfo, ConnectionLike as _, ErrorKind, IntoConnectionInfo, ProtocolVersion,
};
use redis::{RedisError, RedisResult};
use zeroize::Zeroizing;

use crate::directory::RedisDirectory;
use crate::keys::RedisKeySets;
use crate::seal::SealKeys;
use crate::store::RedisTokenStore;

/// How long opening a connection may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long Redis may take to answer a command, by default.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How many idle connections are kept open, by default.
pub const DEFAULT_MAX_IDLE: usize = 8;
/// What every key this crate writes starts with, by default.
pub const DEFAULT_PREFIX: &str = "latchkey:";

/// How to reach Redis, and how to seal what goes there; [`Redis::new`] makes the pool.
///
/// `Debug` shows neither the URL (it may hold a password) nor the keys (only their ids).
pub struct RedisConfig {
    url: Zeroizing<String>,
    keys: SealKeys,
    prefix: String,
    connect_timeout: Duration,
    io_timeout: Duration,
    max_idle: usize,
}

impl RedisConfig {
    /// The server at `url`, with the default timeouts, pool size and key prefix.
    ///
    /// `url` is `redis://[[user]:password@]host[:port][/db]` (`valkey://` is the same), or
    /// `redis+unix:///path/to/socket[?db=N&pass=…]` for a Unix socket. TLS (`rediss://`)
    /// is not supported: [`Redis::new`] refuses it.
    pub fn new(url: &str, keys: SealKeys) -> RedisConfig {
        RedisConfig {
            url: Zeroizing::new(url.to_owned()),
            keys,
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            max_idle: DEFAULT_MAX_IDLE,
        }
    }

    /// What every key starts with ([`DEFAULT_PREFIX`]): deployments sharing a server use
    /// different prefixes.
    pub fn prefix(mut self, prefix: impl Into<String>) -> RedisConfig {
        self.prefix = prefix.into();
        self
    }

    /// How long opening a connection may take ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> RedisConfig {
        self.connect_timeout = timeout;
        self
    }

    /// How long Redis may take to answer a command ([`DEFAULT_IO_TIMEOUT`]).
    pub fn io_timeout(mut self, timeout: Duration) -> RedisConfig {
        self.io_timeout = timeout;
        self
    }

    /// How many idle connections are kept open for later calls ([`DEFAULT_MAX_IDLE`]);
    /// more are opened while more calls run at once.
    pub fn max_idle(mut self, connections: usize) -> RedisConfig {
        self.max_idle = connections;
        self
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"(not shown)")
            .field("keys", &self.keys)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("max_idle", &self.max_idle)
            .finish()
    }
}

/// Why a [`RedisConfig`] was refused. No message quotes the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL is not one this crate connects to (its reason; the URL is not repeated).
    Url(String),
    /// The URL asks for TLS (`rediss://`, `valkeys://`), which this crate does not speak.
    TlsUnsupported,
    /// A timeout is zero.
    ZeroTimeout,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Url(reason) => write!(
                f,
                "the Redis URL is not redis://[[user]:password@]host[:port][/db] \
                 or redis+unix:///path: {reason}"
            ),
            ConfigError::TlsUnsupported => f.write_str(
                "rediss:// (TLS) is not supported by latchkey-redis: use redis:// on a private \
                 network or a TLS tunnel (what it stores is sealed either way)",
            ),
            ConfigError::ZeroTimeout => f.write_str("a Redis timeout must be longer than zero"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One Redis server, its pool of connections and the seal keys: cheap to clone, and every
/// clone, store, directory and key-set cache made from it shares them.
#[derive(Clone)]
pub struct Redis {
    shared: Arc<Shared>,
}

/// What the token store, the directory and the key-set cache share.
pub(crate) struct Shared {
    pub pool: Pool,
    pub keys: SealKeys,
}

impl Redis {
    /// Checks `config` and makes the pool; nothing is connected until the first call (see
    /// [`ping`](Redis::ping) to check at start-up).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for an unusable URL or timeout.
    pub fn new(config: RedisConfig) -> Result<Redis, ConfigError> {
        if config.connect_timeout.is_zero() || config.io_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        let scheme = config
            .url
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("rediss" | "valkeys") => return Err(ConfigError::TlsUnsupported),
            Some("redis" | "valkey" | "redis+unix" | "valkey+unix" | "unix") => {}
            _ => return Err(ConfigError::Url("unknown scheme".to_owned())),
        }
        let info: ConnectionInfo = config
            .url
            .as_str()
            .into_connection_info()
            // redis-rs's reasons are fixed texts that never quote the URL.
            .map_err(|error| ConfigError::Url(error.to_string()))?;
        // RESP2 whatever the URL asks: the scripts answer `nil` for "no", which RESP3
        // would turn into a boolean.
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP2);
        let server = info.addr().to_string();
        let info = info.set_redis_settings(settings);
        let client =
            redis::Client::open(info).map_err(|error| ConfigError::Url(error.to_string()))?;
        Ok(Redis {
            shared: Arc::new(Shared {
                pool: Pool {
                    client,
                    server,
                    prefix: config.prefix,
                    connect_timeout: config.connect_timeout,
                    io_timeout: config.io_timeout,
                    max_idle: config.max_idle,
                    idle: Mutex::new(Vec::new()),
                },
                keys: config.keys,
            }),
        })
    }

    /// The server as `host:port` (or the socket's path), as errors name it.
    pub fn server(&self) -> &str {
        &self.shared.pool.server
    }

    /// Asks the server for `PONG`: a health check.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] naming the server and what went wrong.
    pub fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self.shared.pool.run("PING", Retry::Safe, |connection| {
            redis::cmd("PING").query(connection)
        })?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::new(format!(
                "redis at {} answered PING with something else than PONG",
                self.shared.pool.server
            )))
        }
    }

    /// The token store: token sets sealed, and a fenced refresh lock (S57).
    pub fn token_store(&self) -> RedisTokenStore {
        RedisTokenStore::new(Arc::clone(&self.shared))
    }

    /// A flow directory: pending logins shared between replicas (S54–S56). Its listeners
    /// run until this directory and all its clones are dropped.
    pub fn directory(&self) -> RedisDirectory {
        RedisDirectory::new(Arc::clone(&self.shared))
    }

    /// The cache of ID token key sets shared between replicas.
    pub fn key_sets(&self) -> RedisKeySets {
        RedisKeySets::new(Arc::clone(&self.shared))
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("server", &self.shared.pool.server)
            .field("prefix", &self.shared.pool.prefix)
            .field("keys", &self.shared.keys)
            .finish()
    }
}

/// Whether an operation may be sent again after its connection broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Running it twice does what running it once does.
    Safe,
    /// It must run at most once.
    Never,
}

/// Connections to one server.
pub(crate) struct Pool {
    client: redis::Client,
    server: String,
    prefix: String,
    connect_timeout: Duration,
    io_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    /// `{prefix}{kind}:{name}`.
    pub fn key(&self, kind: &str, name: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + kind.len() + 1 + name.len());
        key.extend_from_slice(self.prefix.as_bytes());
        key.extend_from_slice(kind.as_bytes());
        key.push(b':');
        key.extend_from_slice(name);
        key
    }

    /// `{prefix}{name}`.
    pub fn plain_key(&self, name: &str) -> Vec<u8> {
        format!("{}{name}", self.prefix).into_bytes()
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn io_timeout(&self) -> Duration {
        self.io_timeout
    }

    /// Runs `command` on a pooled connection; `what` names it in errors.
    pub fn run<T>(
        &self,
        what: &str,
        retry: Retry,
        mut command: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let (mut connection, reused) = match self.idle().pop() {
            Some(connection) => (connection, true),
            None => (self.connect()?, false),
        };
        match command(&mut connection) {
            Ok(value) => {
                self.give_back(connection);
                Ok(value)
            }
            Err(error) if broken(&error, &connection) => {
                drop(connection);
                // Opened to the same server before it went away, most likely.
                self.idle().clear();
                // A connection that waited in the pool may have been closed by the server
                // (restarted, or timed out idle clients) before the command was sent.
                if reused && retry == Retry::Safe && !error.is_timeout() {
                    let mut connection = self.connect()?;
                    return match command(&mut connection) {
                        Ok(value) => {
                            self.give_back(connection);
                            Ok(value)
                        }
                        Err(error) => {
                            if !broken(&error, &connection) {
                                self.give_back(connection);
                            }
                            Err(self.command_failure(what, &error))
                        }
                    };
                }
                Err(self.command_failure(what, &error))
            }
            Err(error) => {
                self.give_back(connection);
                Err(self.command_failure(what, &error))
            }
        }
    }

    /// A new connection, with the read and write timeouts set.
    pub fn connect(&self) -> Result<Connection, StoreError> {
        let connection = self
            .client
            .get_connection_with_timeout(self.connect_timeout)
            .map_err(|error| self.connect_failure(&error))?;
        connection
            .set_read_timeout(Some(self.io_timeout))
            .and_then(|()| connection.set_write_timeout(Some(self.io_timeout)))
            .map_err(|error| self.connect_failure(&error))?;
        Ok(connection)
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A push or a pop cannot leave the list half-changed.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn give_back(&self, connection: Connection) {
        let mut idle = self.idle();
        if idle.len() < self.max_idle && connection.is_open() {
            idle.push(connection);
        }
    }

    fn connect_failure(&self, error: &RedisError) -> StoreError {
        let reason = if error.is_connection_refusal() {
            "connection refused".to_owned()
        } else if error.is_timeout() {
            format!("no connection within {}", seconds(self.connect_timeout))
        } else if error.kind() == ErrorKind::AuthenticationFailed
            || matches!(error.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        {
            "it refused the user or password in the URL".to_owned()
        } else {
            // I/O errors, and the server's answer to the set-up commands (SELECT): neither
            // quotes the password.
            error.to_string()
        };
        StoreError::new(format!("redis at {} unreachable: {reason}", self.server))
    }

    /// The error for `what` failing with `error` on an open connection.
    pub fn command_failure(&self, what: &str, error: &RedisError) -> StoreError {
        let server = &self.server;
        StoreError::new(if error.is_timeout() {
            format!(
                "redis at {server} did not answer {what} within {}",
                seconds(self.io_timeout)
            )
        } else if error.is_io_error() || error.is_connection_dropped() {
            format!("redis at {server}: connection lost during {what}: {error}")
        } else if let Some(code) = error.code() {
            // The server's error; our commands carry no secret it could quote.
            match error.detail() {
                Some(detail) => format!("redis at {server} refused {what}: {code} {detail}"),
                None => format!("redis at {server} refused {what}: {code}"),
            }
        } else {
            // Type and parse errors may quote the answer: leave it out.
            format!("redis at {server} gave an unexpected answer to {what}")
        })
    }

    /// The error for an answer this crate cannot use.
    pub fn unexpected(&self, what: &str) -> StoreError {
        StoreError::new(format!(
            "redis at {} gave an unexpected answer to {what}",
            self.server
        ))
    }
}

/// Whether `connection` is no use after `error`.
fn broken(error: &RedisError, connection: &Connection) -> bool {
    !connection.is_open()
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        || error.kind() == ErrorKind::Parse
}

/// `2 s`, `1.5 s`, `250 ms`.
fn seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
        format!("{} s", duration.as_secs())
    } else if duration.as_secs() > 0 {
        format!("{:.1} s", duration.as_secs_f64())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

/// Milliseconds for `PX`: at least 1, and no more than Redis takes.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, i64::MAX as u64 / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SealKeys {
        SealKeys::parse("k AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").expect("keys")
    }

    #[test]
    fn urls_are_checked_without_being_echoed() {
        for (url, expected) in [
            ("rediss://:hunter2@cache:6380", ConfigError::TlsUnsupported),
            ("valkeys://cache", ConfigError::TlsUnsupported),
        ] {
            assert_eq!(
                Redis::new(RedisConfig::new(url, keys())).err(),
                Some(expected)
            );
        }
        for url in [
            "http://:hunter2@cache",
            "hunter2",
            "redis://:hunter2@cache:6379/notadb",
            "redis://:hunter2@0.0.0.0:6379",
        ] {
            let error = Redis::new(RedisConfig::new(url, keys())).expect_err(url);
            assert!(matches!(error, ConfigError::Url(_)), "{url}: {error:?}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        let redis = Redis::new(RedisConfig::new("redis://:hunter2@cache:6380/2", keys()))
            .expect("a good URL");
        assert_eq!(redis.server(), "cache:6380");
        assert!(!format!("{redis:?}").contains("hunter2"));
        let config = RedisConfig::new("redis://:hunter2@cache", keys());
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(
            Redis::new(RedisConfig::new("redis://cache", keys()).io_timeout(Duration::ZERO)).err(),
            Some(ConfigError::ZeroTimeout)
        );
    }

    #[test]
    fn durations_read_well_and_px_stays_in_range() {
        assert_eq!(seconds(Duration::from_secs(2)), "2 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(seconds(Duration::from_millis(250)), "250 ms");
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert!(millis(Duration::MAX) < i64::MAX as u64);
    }
}
