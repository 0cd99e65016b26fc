//! [`RedisDirectory`]: pending logins shared by replicas on several machines (the rules
//! are in [`latchkey::directory`]).
//!
//! # Keys
//!
//! | key | value |
//! |---|---|
//! | `{prefix}flow:{flow key in hex}` | the record, sealed (kind `flow`, the flow key's 32 bytes as associated data), or a mark: `used` or `ended` |
//! | `{prefix}outcomes` | the channel announcements are published on |
//!
//! A sealed value starts with `lk1` and a mark never does, so the two cannot be confused.
//! Records and marks expire with the flow's lifetime (`PX`, and `KEEPTTL` when a mark
//! replaces a record), so a record never outlives its login (S56).
//!
//! # Taking a record (S54)
//!
//! A take reads the value and, if it is a record, opens it; then one Lua script replaces
//! the record by a `used` mark *if the value is still that record*, keeping its expiry.
//! Of any number of replicas taking the same record at once, the script succeeds for one;
//! the others find the mark. A record that does not open (sealed with a key this replica
//! lacks, during a key rotation, or altered) is an error and stays where it is, so a
//! replica that has the key can still take it.
//!
//! Should the connection break after the script ran but before its answer came back, the
//! record is taken and the caller sees an error: the login then fails as "already used"
//! rather than two replicas both redeeming the code.
//!
//! # Announcements
//!
//! Announcements are published on a channel (`PUBLISH`), and [`listen`](FlowDirectory::listen)
//! subscribes a thread of its own to it, with its own connection. When the connection
//! drops (Redis restarted, the network failed), the thread reconnects with a back-off
//! growing to a second, and pings a quiet connection so that a dead one is noticed.
//! Redis keeps no messages: one published while a listener was reconnecting is lost to
//! it, and the login it concerns ends at its deadline on the replica that started it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, LazyLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use latchkey::StoreError;
use latchkey::directory::{Announcement, FlowKey, FlowRecord, Taken};
use latchkey_io::directory::{FlowDirectory, Listener};
use redis::{Connection, Script, Value};

use crate::client::{Pool, Retry, Shared, millis};
use crate::seal::MAGIC;

/// The seal kind of flow records.
const KIND: &str = "flow";
/// What replaces a taken record.
const USED: &[u8] = b"used";
/// What replaces the record of a flow that ended before its callback.
const ENDED: &[u8] = b"ended";
/// How often a listener checks whether its directory is still there.
const POLL: Duration = Duration::from_millis(200);
/// How long a listener's connection may stay quiet before it is pinged.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// The first pause before a listener reconnects; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause between two reconnection attempts.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// How often a take reads again when the value changed under it.
const TAKE_TRIES: usize = 3;

/// KEYS: the flow key. ARGV: the record as read. 1 when it was replaced by the `used`
/// mark, else what is there now.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local value = redis.call('GET', KEYS[1])
         if value == ARGV[1] then
           redis.call('SET', KEYS[1], 'used', 'KEEPTTL')
           return 1
         end
         return value",
    )
});

/// KEYS: the flow key. Replaces a record (not a mark) by the `ended` mark.
static SPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local value = redis.call('GET', KEYS[1])
         if value and string.sub(value, 1, 3) == 'lk1' then
           redis.call('SET', KEYS[1], 'ended', 'KEEPTTL')
         end
         return 1",
    )
});

/// A flow directory in Redis; made by [`Redis::directory`](crate::Redis::directory).
/// Cheap to clone; the listeners started through any clone stop once every clone is
/// dropped.
#[derive(Clone)]
pub struct RedisDirectory {
    shared: Arc<Shared>,
    /// Listener threads hold it weakly: they end when it is gone.
    alive: Arc<()>,
}

impl std::fmt::Debug for RedisDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDirectory")
            .field("server", &self.shared.pool.server())
            .finish()
    }
}

/// What a flow key holds.
enum Held {
    Nothing,
    Used,
    Ended,
    Sealed(Vec<u8>),
}

impl RedisDirectory {
    pub(crate) fn new(shared: Arc<Shared>) -> RedisDirectory {
        RedisDirectory {
            shared,
            alive: Arc::new(()),
        }
    }

    fn flow_key(&self, key: &FlowKey) -> Vec<u8> {
        self.shared.pool.key("flow", key.to_string().as_bytes())
    }

    fn channel(&self) -> Vec<u8> {
        self.shared.pool.plain_key("outcomes")
    }

    fn held(&self, key: &FlowKey, value: Option<Vec<u8>>) -> Result<Held, StoreError> {
        Ok(match value {
            None => Held::Nothing,
            Some(value) if value == USED => Held::Used,
            Some(value) if value == ENDED => Held::Ended,
            Some(value) if value.starts_with(MAGIC) => Held::Sealed(value),
            Some(_) => {
                return Err(StoreError::new(format!(
                    "redis at {} holds something else than a flow record under flow {key}",
                    self.shared.pool.server()
                )));
            }
        })
    }
}

impl FlowDirectory for RedisDirectory {
    fn share(
        &self,
        key: &FlowKey,
        record: &FlowRecord,
        lifetime: Duration,
    ) -> Result<(), StoreError> {
        let sealed = self
            .shared
            .keys
            .seal(KIND, key.as_bytes(), record.expose_bytes())
            .map_err(|error| StoreError::new(error.to_string()))?;
        let flow = self.flow_key(key);
        self.shared
            .pool
            .run("sharing a login", Retry::Safe, |connection| {
                redis::cmd("SET")
                    .arg(&flow)
                    .arg(&sealed)
                    .arg("PX")
                    .arg(millis(lifetime))
                    .exec(connection)
            })
    }

    fn take(&self, key: &FlowKey) -> Result<Taken, StoreError> {
        let flow = self.flow_key(key);
        let pool = &self.shared.pool;
        let read: Option<Vec<u8>> =
            pool.run("reading a shared login", Retry::Safe, |connection| {
                redis::cmd("GET").arg(&flow).query(connection)
            })?;
        let mut held = self.held(key, read)?;
        for _ in 0..TAKE_TRIES {
            let sealed = match held {
                Held::Nothing => return Ok(Taken::Missing),
                Held::Used => return Ok(Taken::Spent { used: true }),
                Held::Ended => return Ok(Taken::Spent { used: false }),
                Held::Sealed(sealed) => sealed,
            };
            // Opened before it is taken: one this replica cannot open stays for others.
            let mut record = self
                .shared
                .keys
                .open(KIND, key.as_bytes(), &sealed)
                .map_err(|error| {
                    StoreError::new(format!(
                        "the record of flow {key} in redis at {} does not open: {error}",
                        pool.server()
                    ))
                })?;
            let answer: Value = pool.run("taking a shared login", Retry::Never, |connection| {
                TAKE.key(&flow).arg(&sealed).invoke(connection)
            })?;
            held = match answer {
                Value::Int(1) => {
                    return Ok(Taken::Record(FlowRecord::from_bytes(std::mem::take(
                        &mut *record,
                    ))));
                }
                Value::Nil => Held::Nothing,
                Value::BulkString(value) => self.held(key, Some(value))?,
                _ => return Err(pool.unexpected("taking a shared login")),
            };
        }
        Err(StoreError::new(format!(
            "the record of flow {key} in redis at {} kept changing while it was taken",
            pool.server()
        )))
    }

    fn spend(&self, key: &FlowKey) -> Result<(), StoreError> {
        let flow = self.flow_key(key);
        self.shared
            .pool
            .run("ending a shared login", Retry::Safe, |connection| {
                SPEND.key(&flow).invoke::<i64>(connection)
            })
            .map(drop)
    }

    fn announce(&self, announcement: &Announcement) -> Result<(), StoreError> {
        let channel = self.channel();
        let message = announcement.to_bytes();
        // Not sent twice: listeners would hear it twice.
        self.shared
            .pool
            .run("announcing an outcome", Retry::Never, |connection| {
                redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(&message)
                    .query::<i64>(connection)
            })
            .map(drop)
    }

    /// Subscribes before it returns when Redis answers, so every announcement published
    /// after it is heard (while the connection holds). When Redis cannot be reached, the
    /// subscription is retried in the background, as after any later loss: a replica
    /// starts while Redis is away.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the listener thread cannot be started.
    fn listen(&self, listener: Listener) -> Result<(), StoreError> {
        let (ready, subscribed) = sync_channel(1);
        let listening = Listening {
            shared: Arc::clone(&self.shared),
            channel: self.channel(),
            alive: Arc::downgrade(&self.alive),
            listener,
        };
        thread::Builder::new()
            .name("latchkey-redis-listener".to_owned())
            .spawn(move || listening.run(ready))
            .map_err(|error| StoreError::new(format!("starting a listener thread: {error}")))?;
        subscribed.recv().unwrap_or_else(|_| {
            Err(StoreError::new(
                "the listener thread ended before it subscribed",
            ))
        })
    }
}

/// A listener thread's state.
struct Listening {
    shared: Arc<Shared>,
    channel: Vec<u8>,
    alive: Weak<()>,
    listener: Listener,
}

impl Listening {
    fn alive(&self) -> bool {
        self.alive.strong_count() > 0
    }

    /// Subscribes, tells `ready` how that went the first time, and hears announcements
    /// until the directory is gone, reconnecting whenever the connection is lost.
    fn run(self, ready: SyncSender<Result<(), StoreError>>) {
        let mut ready = Some(ready);
        let mut pause = FIRST_PAUSE;
        while self.alive() {
            let heard = self
                .shared
                .pool
                .connect()
                .and_then(|mut connection| self.hear(&mut connection, &mut ready, &mut pause));
            match heard {
                Ok(()) => return,
                // Redis is away as the service starts: listening starts all the same and
                // hears announcements once it answers. None can be missed that matters
                // here: a shared login cannot start on this replica without Redis.
                Err(_) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                }
            }
            self.sleep(pause);
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Subscribes on `connection` and calls the listener with every announcement: `Ok`
    /// once the directory is gone, `Err` when the connection fails.
    fn hear(
        &self,
        connection: &mut Connection,
        ready: &mut Option<SyncSender<Result<(), StoreError>>>,
        pause: &mut Duration,
    ) -> Result<(), StoreError> {
        let pool: &Pool = &self.shared.pool;
        let mut pubsub = connection.as_pubsub();
        pubsub
            .subscribe(&self.channel)
            .map_err(|error| pool.command_failure("subscribing to announcements", &error))?;
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(()));
        }
        // Subscribed: should this connection fail, the next attempt comes soon.
        *pause = FIRST_PAUSE;
        let poll = |pubsub: &redis::PubSub<'_>, timeout| {
            pubsub
                .set_read_timeout(Some(timeout))
                .map_err(|error| pool.command_failure("listening for announcements", &error))
        };
        poll(&pubsub, POLL)?;
        let mut heard_at = Instant::now();
        while self.alive() {
            match pubsub.get_message() {
                Ok(message) => {
                    heard_at = Instant::now();
                    if let Some(announcement) = Announcement::parse(message.get_payload_bytes()) {
                        // A listener that panics must not end the listening.
                        let _ = catch_unwind(AssertUnwindSafe(|| (self.listener)(announcement)));
                    }
                }
                Err(error) if error.is_timeout() => {
                    if heard_at.elapsed() >= KEEPALIVE {
                        poll(&pubsub, pool.io_timeout())?;
                        pubsub.ping::<Value>().map_err(|error| {
                            pool.command_failure("pinging the announcement connection", &error)
                        })?;
                        poll(&pubsub, POLL)?;
                        heard_at = Instant::now();
                    }
                }
                Err(error) => {
                    return Err(pool.command_failure("listening for announcements", &error));
                }
            }
        }
        Ok(())
    }

    /// Sleeps for `pause`, or less once the directory is gone.
    fn sleep(&self, pause: Duration) {
        let until = Instant::now() + pause;
        while self.alive() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            thread::sleep(left.min(POLL));
        }
    }
}
