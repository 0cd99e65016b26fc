//! Logins and refreshes shared by replicas: what the flow directory and the token store
//! cost when they live in Redis (`latchkey-redis`, a real `redis-server` on loopback)
//! against in memory (`MemoryDirectory`, `MemoryStore`), in one process.
//!
//! A login here is the backend's whole part of it, through the same tokio service:
//! [`Service::start_shared`] (the record sealed and stored before the URL exists), then the
//! callback handed to [`Service::complete`] (the record taken and opened, the code
//! exchanged at the local token endpoint, the tokens sealed and stored, the outcome
//! announced).
//!
//! A refresh is [`TokenSource::refresh`] on tokio, whatever the expiry, one after another.
//! Over [`MemoryStore`]: the request, then the fresh tokens stored. Over
//! [`RedisTokenStore`](latchkey_redis::RedisTokenStore), which replicas share, so one of
//! them refreshes at a time (S57): the refresh lock taken (a Lua script: counter
//! incremented, lock set with its lease), the stored tokens read again under it (sealed:
//! opened), the request, the fresh tokens sealed and saved only if the fence still holds
//! (a Lua script), the lock released (a Lua script); a store that may block runs on the
//! runtime's blocking pool.
//!
//! The two arms alternate round by round; each round runs `count` logins (or refreshes)
//! one after another and reads around them the CPU time of this process less the token
//! endpoint's ([`LocalEndpoint`] runs on a thread of its own), the median wall time of
//! one, and for the Redis arm the server's own CPU time (`/proc/PID/stat`). Redis's memory
//! per pending flow is `used_memory` (`INFO memory`) after `pending` shared logins that
//! nobody completes, less before, divided by `pending`.

use std::sync::Arc;
use std::time::Instant;

use latchkey::{Config, FlowOptions, Provider};
use latchkey_io::directory::{FlowDirectory, MemoryDirectory};
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::proxy::Proxy;
use latchkey_io::service::{Service, ServiceOptions};
use latchkey_io::source::TokenSource;
use latchkey_io::store::{DEFAULT_KEY, MemoryStore, TokenStore};
use latchkey_io::transport::Transport;
use latchkey_redis::{Redis, RedisConfig, SealKeys};
use latchkey_tests::redis::{RedisServer, Reply};
use latchkey_tokio::Tokio;

use crate::endpoint::{EndpointOptions, LocalEndpoint};
use crate::fixtures;
use crate::servers::process_cpu_nanos;
use crate::waiters::expired_tokens;

/// What was measured, per arm.
#[derive(Debug, Clone, Default)]
pub struct SharedResult {
    /// CPU nanoseconds of this process (less the token endpoint) per login, one figure per
    /// round: in memory.
    pub memory_cpu: Vec<f64>,
    /// The same through Redis.
    pub redis_cpu: Vec<f64>,
    /// redis-server's CPU nanoseconds per login, per round.
    pub server_cpu: Vec<f64>,
    /// Median wall time per login, per round: in memory.
    pub memory_latency: Vec<f64>,
    /// The same through Redis.
    pub redis_latency: Vec<f64>,
    /// Bytes of Redis memory per pending flow.
    pub redis_bytes_per_pending: f64,
    /// Refreshes through the token source, per arm.
    pub refresh: RefreshResult,
}

/// Refreshes through [`TokenSource`]: in memory against through Redis.
#[derive(Debug, Clone, Default)]
pub struct RefreshResult {
    /// CPU nanoseconds of this process (less the token endpoint) per refresh, one figure
    /// per round: in memory.
    pub memory_cpu: Vec<f64>,
    /// The same through Redis.
    pub redis_cpu: Vec<f64>,
    /// redis-server's CPU nanoseconds per refresh, per round.
    pub server_cpu: Vec<f64>,
    /// Median wall time per refresh, per round: in memory.
    pub memory_latency: Vec<f64>,
    /// The same through Redis.
    pub redis_latency: Vec<f64>,
}

type Error = Box<dyn std::error::Error>;

/// Runs the measurement: `rounds` rounds of `count` logins per arm, and `pending` pending
/// flows for the memory figure.
pub fn measure(rounds: usize, count: usize, pending: usize) -> Result<SharedResult, Error> {
    let server = RedisServer::start();
    let endpoint = LocalEndpoint::start(EndpointOptions::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let keys = SealKeys::parse(&format!("bench {}\n", "A".repeat(43) + "="))?;
    let redis = Redis::new(RedisConfig::new(&server.url(), keys))?;
    let config = config(&endpoint.token_url)?;
    let mut result = SharedResult::default();
    let memory: (Arc<dyn FlowDirectory>, Arc<dyn TokenStore>) = (
        Arc::new(MemoryDirectory::new()),
        Arc::new(MemoryStore::default()),
    );
    let shared: (Arc<dyn FlowDirectory>, Arc<dyn TokenStore>) =
        (Arc::new(redis.directory()), Arc::new(redis.token_store()));
    let memory = runtime.block_on(async { service(&config, memory) })?;
    let through_redis = runtime.block_on(async { service(&config, shared) })?;
    let server_pid = server_pid(&server)?;
    // One warm-up round each: connections, TLS-free HTTP client pools, allocator.
    runtime.block_on(logins(&memory, count.min(50)))?;
    runtime.block_on(logins(&through_redis, count.min(50)))?;
    for _ in 0..rounds {
        let cpu = client_cpu(&endpoint)?;
        let latency = runtime.block_on(logins(&memory, count))?;
        result
            .memory_cpu
            .push(spent_since(&endpoint, cpu)? / count as f64);
        result.memory_latency.push(latency);

        let server_before = server_cpu_nanos(server_pid)?;
        let cpu = client_cpu(&endpoint)?;
        let latency = runtime.block_on(logins(&through_redis, count))?;
        result
            .redis_cpu
            .push(spent_since(&endpoint, cpu)? / count as f64);
        result
            .server_cpu
            .push((server_cpu_nanos(server_pid)? - server_before) as f64 / count as f64);
        result.redis_latency.push(latency);
    }
    result.refresh = refreshes(&runtime, &endpoint, &redis, server_pid, rounds, count)?;
    let mut held = Vec::with_capacity(pending);
    for i in 0..pending {
        let login = runtime.block_on(
            through_redis.start_shared(FlowOptions::new().owner(format!("pending-{i}"))),
        )?;
        held.push(login);
    }
    result.redis_bytes_per_pending = bytes_per_flow_record(&server, pending)?;
    drop(held);
    runtime.block_on(async {
        memory.shutdown().await;
        through_redis.shutdown().await;
    });
    Ok(result)
}

/// CPU time of this process and of the token endpoint's thread, read together.
fn client_cpu(endpoint: &LocalEndpoint) -> Result<(u128, u128), Error> {
    Ok((process_cpu_nanos(), endpoint.cpu_nanos()?))
}

/// CPU nanoseconds this process spent since `before`, less the token endpoint's.
fn spent_since(endpoint: &LocalEndpoint, before: (u128, u128)) -> Result<f64, Error> {
    let (process, idp) = client_cpu(endpoint)?;
    Ok((process - before.0).saturating_sub(idp - before.1) as f64)
}

/// The refresh measurement: `rounds` rounds of `count` forced refreshes per arm.
fn refreshes(
    runtime: &tokio::runtime::Runtime,
    endpoint: &LocalEndpoint,
    redis: &Redis,
    server_pid: u32,
    rounds: usize,
    count: usize,
) -> Result<RefreshResult, Error> {
    let memory: Arc<dyn TokenStore> = Arc::new(MemoryStore::default());
    let shared: Arc<dyn TokenStore> = Arc::new(redis.token_store());
    let transport = Transport::Builtin(HttpClient::new(HttpOptions {
        proxy: Proxy::none(),
        ..HttpOptions::default()
    })?);
    let source = |store: Arc<dyn TokenStore>| -> Result<TokenSource<Tokio>, Error> {
        store.save(DEFAULT_KEY, &expired_tokens())?;
        Ok(TokenSource::new(
            Tokio,
            fixtures::provider(&endpoint.token_url),
            store,
            transport.clone(),
        ))
    };
    let memory = source(memory)?;
    let through_redis = source(shared)?;
    runtime.block_on(refresh_times(&memory, count.min(50)))?;
    runtime.block_on(refresh_times(&through_redis, count.min(50)))?;
    let mut result = RefreshResult::default();
    for _ in 0..rounds {
        let cpu = client_cpu(endpoint)?;
        let latency = runtime.block_on(refresh_times(&memory, count))?;
        result
            .memory_cpu
            .push(spent_since(endpoint, cpu)? / count as f64);
        result.memory_latency.push(latency);

        let server_before = server_cpu_nanos(server_pid)?;
        let cpu = client_cpu(endpoint)?;
        let latency = runtime.block_on(refresh_times(&through_redis, count))?;
        result
            .redis_cpu
            .push(spent_since(endpoint, cpu)? / count as f64);
        result
            .server_cpu
            .push((server_cpu_nanos(server_pid)? - server_before) as f64 / count as f64);
        result.redis_latency.push(latency);
    }
    Ok(result)
}

/// `count` forced refreshes one after another; the median wall time of one, in
/// nanoseconds.
async fn refresh_times(source: &TokenSource<Tokio>, count: usize) -> Result<f64, Error> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        std::hint::black_box(source.refresh().await?);
        times.push(started.elapsed().as_nanos() as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// A provider whose token endpoint is `token_url`, for a backend at a web redirect URI.
fn config(token_url: &str) -> Result<Config, Error> {
    let provider = Provider::builder("http://127.0.0.1:9/authorize", token_url, "bench").build()?;
    Ok(Config::builder(provider)
        .web_redirect_uri("http://127.0.0.1:9/callback")
        .build()?)
}

fn service(
    config: &Config,
    (directory, store): (Arc<dyn FlowDirectory>, Arc<dyn TokenStore>),
) -> Result<Service<Tokio>, Error> {
    let client = HttpClient::new(HttpOptions {
        proxy: Proxy::none(),
        ..HttpOptions::default()
    })?;
    let options = ServiceOptions::new(store, Transport::Builtin(client)).with_directory(directory);
    Ok(Service::unbound(Tokio, config.clone(), options)?)
}

/// `count` logins one after another; the median wall time of one, in nanoseconds.
async fn logins(service: &Service<Tokio>, count: usize) -> Result<f64, Error> {
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        let login = service
            .start_shared(FlowOptions::new().owner(format!("user-{i}")))
            .await?;
        let url = login.url().ok_or("a login without a URL")?;
        let state = url
            .split("&state=")
            .nth(1)
            .and_then(|rest| rest.split('&').next())
            .ok_or("no state in the URL")?;
        service
            .complete(&format!("code=bench&state={state}"))
            .await?;
        login.finished().await?;
        times.push(started.elapsed().as_nanos() as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// redis-server's process id, from `INFO server`.
fn server_pid(server: &RedisServer) -> Result<u32, Error> {
    let info = info(server, b"server")?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .ok_or_else(|| "INFO server names no process_id".into())
}

/// Bytes in use, from `INFO memory`.
/// What Redis holds per pending flow: `MEMORY USAGE` (key, value and expiry) of every flow
/// record, averaged. Exact, unlike a difference of `used_memory`, which client buffers and
/// expiring keys move in either direction meanwhile.
fn bytes_per_flow_record(server: &RedisServer, pending: usize) -> Result<f64, Error> {
    let mut connection = server.connect()?;
    let keys = match connection.command(&[b"KEYS", b"latchkey:flow:*"])? {
        Reply::Array(keys) => keys,
        other => return Err(format!("KEYS answered {other:?}").into()),
    };
    if keys.len() < pending {
        return Err(format!("{} flow records for {pending} pending logins", keys.len()).into());
    }
    let mut total = 0;
    for key in &keys {
        let Reply::Bulk(Some(key)) = key else {
            return Err(format!("KEYS listed {key:?}").into());
        };
        match connection.command(&[b"MEMORY", b"USAGE", key, b"SAMPLES", b"0"])? {
            Reply::Integer(bytes) => total += bytes,
            other => return Err(format!("MEMORY USAGE answered {other:?}").into()),
        }
    }
    Ok(total as f64 / keys.len() as f64)
}

fn info(server: &RedisServer, section: &[u8]) -> Result<String, Error> {
    match server.connect()?.command(&[b"INFO", section])? {
        Reply::Bulk(Some(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        other => Err(format!("INFO answered {other:?}").into()),
    }
}

/// CPU time (user + system) of process `pid`, in nanoseconds, from `/proc/PID/stat`.
fn server_cpu_nanos(pid: u32) -> Result<u128, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are plain numbers.
    let after_name = stat.rsplit_once(')').ok_or("unreadable /proc stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15, the 12th and 13th after the name.
    let ticks: u128 = fields
        .get(11..13)
        .ok_or("short /proc stat")?
        .iter()
        .map(|field| field.parse::<u128>())
        .sum::<Result<u128, _>>()?;
    // Linux reports these in USER_HZ, 100 on every architecture it runs the bench on.
    Ok(ticks * 10_000_000)
}
