//! Many callers, one refresh: [`CALLERS`] tasks ask for tokens at once while the stored
//! ones have expired, on tokio, and exactly one refresh request may reach the token
//! endpoint (any other count fails the run).
//!
//! - latchkey: [`TokenSource::tokens`] from every task, on a source over a memory store
//!   holding expired tokens: the first call starts the refresh, the others join it and are
//!   woken with its answer once the fresh tokens are stored.
//! - oauth2-rs: the idiomatic hand-written single flight, the tokens behind a
//!   `tokio::sync::Mutex`: each task locks it; the first finds the tokens expired and
//!   refreshes under the lock (`exchange_refresh_token` through reqwest), the others wait
//!   for the lock in turn and then clone the fresh tokens out.
//!
//! The token endpoint ([`LocalEndpoint`], its own thread, its CPU subtracted) answers the
//! refresh after [`REFRESH_DELAY`], as a provider across the internet would, so that every
//! caller arrives while the refresh is in flight. A round spawns the callers and waits for
//! all of them; it records the wall time from the first spawn until the last caller has
//! its tokens, the part of it after the endpoint answered, and the CPU of the process (less
//! the endpoint's) for the whole batch, spawning the tasks included. Each round uses a
//! fresh source (or mutex) over a shared HTTP client that was warmed up before; the two
//! sides alternate round by round.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use latchkey::TokenSet;
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::proxy::Proxy;
use latchkey_io::source::TokenSource;
use latchkey_io::store::{DEFAULT_KEY, MemoryStore, TokenStore};
use latchkey_io::transport::Transport;
use latchkey_tokio::Tokio;
use oauth2::basic::BasicTokenResponse;
use oauth2::{RefreshToken, TokenResponse};
use secrecy::SecretString;

use crate::endpoint::{EndpointOptions, LocalEndpoint};
use crate::fixtures::{self, Oauth2Client};
use crate::servers::process_cpu_nanos;

/// Callers per batch.
pub const CALLERS: usize = 1_000;
/// How long the token endpoint takes to answer the refresh.
pub const REFRESH_DELAY: Duration = Duration::from_millis(20);
/// Tokens expiring sooner than this are refreshed first (latchkey's default margin).
const MARGIN: Duration = Duration::from_secs(60);

type Error = Box<dyn std::error::Error>;

/// One side's figures, one per round.
#[derive(Debug, Clone, Default)]
pub struct WaitersSide {
    /// CPU nanoseconds of the batch (the process less the endpoint).
    pub cpu: Vec<f64>,
    /// Wall nanoseconds from the first spawn until every caller had its tokens.
    pub wall: Vec<f64>,
    /// Wall nanoseconds from the endpoint's answer until every caller had its tokens.
    pub tail: Vec<f64>,
    /// Refresh requests the token endpoint answered per batch (a run fails unless 1).
    pub refreshes: Vec<u64>,
}

impl WaitersSide {
    fn push(&mut self, batch: Batch) {
        self.cpu.push(batch.cpu);
        self.wall.push(batch.wall);
        self.tail.push(batch.tail);
        self.refreshes.push(batch.refreshes);
    }
}

/// One batch's figures.
struct Batch {
    cpu: f64,
    wall: f64,
    tail: f64,
    refreshes: u64,
}

/// Both sides.
#[derive(Debug, Clone, Default)]
pub struct WaitersResult {
    /// Callers per batch.
    pub callers: usize,
    /// latchkey's token source.
    pub latchkey: WaitersSide,
    /// oauth2-rs behind a `tokio::sync::Mutex`.
    pub oauth2: WaitersSide,
}

/// Runs `rounds` batches of [`CALLERS`] callers per side.
pub fn measure(rounds: usize, progress: &mut dyn FnMut(&str)) -> Result<WaitersResult, Error> {
    let sides = Sides::start(REFRESH_DELAY)?;
    let mut result = WaitersResult {
        callers: CALLERS,
        ..WaitersResult::default()
    };
    // A small batch each first: connections, pools, allocator.
    sides.latchkey(10)?;
    sides.oauth2(10)?;
    for round in 0..rounds {
        progress(&format!("1,000 waiters: round {} of {rounds}", round + 1));
        for side in 0..2 {
            if (round + side) % 2 == 0 {
                result.latchkey.push(sides.latchkey(CALLERS)?);
            } else {
                result.oauth2.push(sides.oauth2(CALLERS)?);
            }
        }
    }
    Ok(result)
}

/// A contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// latchkey's token source.
    Latchkey,
    /// oauth2-rs behind a `tokio::sync::Mutex`.
    Oauth2,
}

impl Side {
    /// Both, in report order.
    pub const ALL: [Side; 2] = [Side::Latchkey, Side::Oauth2];

    /// The name the heap probe prints.
    pub fn name(self) -> &'static str {
        match self {
            Side::Latchkey => "latchkey",
            Side::Oauth2 => "oauth2-rs",
        }
    }
}

/// Where [`probe_batch`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Warmed up; the callers are about to be spawned.
    Start,
    /// Every caller is waiting for the refresh (`settle` after the last spawn).
    Waiting,
    /// Every caller has its tokens and its task is gone.
    Done,
}

/// For the heap probe (which counts allocations): one warm-up batch, then one batch of
/// [`CALLERS`] through `side` with a token endpoint that answers the refresh after
/// `delay`; `at` hears each [`Moment`].
pub fn probe_batch(
    side: Side,
    delay: Duration,
    settle: Duration,
    at: &mut dyn FnMut(Moment),
) -> Result<(), Error> {
    let sides = Sides::start(delay)?;
    let Sides {
        runtime,
        endpoint,
        transport,
        client,
        http,
    } = &sides;
    match side {
        Side::Latchkey => sides.latchkey(10)?,
        Side::Oauth2 => sides.oauth2(10)?,
    };
    let refreshes = endpoint.refreshes();
    let store = Arc::new(MemoryStore::default());
    store.save(DEFAULT_KEY, &expired_tokens())?;
    let source = TokenSource::new(
        Tokio,
        fixtures::provider(&endpoint.token_url),
        store,
        transport.clone(),
    );
    let cache = Arc::new(tokio::sync::Mutex::new(Cached::expired()));
    at(Moment::Start);
    runtime.block_on(async {
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| match side {
                Side::Latchkey => {
                    let source = source.clone();
                    tokio::spawn(async move {
                        source
                            .tokens()
                            .await
                            .map(drop)
                            .map_err(|error| error.to_string())
                    })
                }
                Side::Oauth2 => {
                    let (cache, client, http) =
                        (Arc::clone(&cache), Arc::clone(client), http.clone());
                    tokio::spawn(
                        async move { oauth2_tokens(&cache, &client, &http).await.map(drop) },
                    )
                }
            })
            .collect();
        tokio::time::sleep(settle).await;
        at(Moment::Waiting);
        for task in tasks {
            task.await??;
        }
        Ok::<_, Error>(())
    })?;
    at(Moment::Done);
    let refreshes = endpoint.refreshes() - refreshes;
    if refreshes != 1 {
        return Err(format!("{}: {refreshes} refreshes, not 1", side.name()).into());
    }
    Ok(())
}

/// Tokens that need a refresh: expired an hour ago, with a refresh token.
pub fn expired_tokens() -> TokenSet {
    TokenSet::new(SecretString::from("expired-access"))
        .with_refresh_token(SecretString::from("bench-refresh-token"))
        .with_expires_at(SystemTime::now() - Duration::from_secs(3600))
}

/// Both contenders' clients, the runtime they run on and the token endpoint they ask.
struct Sides {
    runtime: tokio::runtime::Runtime,
    endpoint: LocalEndpoint,
    transport: Transport,
    client: Arc<Oauth2Client>,
    http: oauth2::reqwest::Client,
}

impl Sides {
    /// With a token endpoint that answers refreshes after `delay`.
    fn start(delay: Duration) -> Result<Sides, Error> {
        let endpoint = LocalEndpoint::start(EndpointOptions {
            pending: 0,
            refresh_delay: delay,
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let transport = Transport::Builtin(HttpClient::new(HttpOptions {
            proxy: Proxy::none(),
            ..HttpOptions::default()
        })?);
        let client = Arc::new(fixtures::oauth2_client(
            &endpoint.token_url,
            fixtures::REDIRECT.1,
        ));
        let http = oauth2::reqwest::Client::builder()
            .redirect(oauth2::reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Sides {
            runtime,
            endpoint,
            transport,
            client,
            http,
        })
    }
}

/// What oauth2-rs's caller keeps: the tokens, the refresh token, and until when the
/// access token serves.
struct Cached {
    tokens: Option<BasicTokenResponse>,
    refresh_token: RefreshToken,
    valid_until: Option<Instant>,
}

impl Cached {
    /// Only a refresh token: the access token has expired.
    fn expired() -> Cached {
        Cached {
            tokens: None,
            refresh_token: RefreshToken::new("bench-refresh-token".into()),
            valid_until: None,
        }
    }
}

impl Sides {
    /// One batch through latchkey.
    fn latchkey(&self, callers: usize) -> Result<Batch, Error> {
        let store = Arc::new(MemoryStore::default());
        store.save(DEFAULT_KEY, &expired_tokens())?;
        let source = TokenSource::new(
            Tokio,
            fixtures::provider(&self.endpoint.token_url),
            store,
            self.transport.clone(),
        );
        self.batch(
            "latchkey",
            || {
                let source = source.clone();
                async move {
                    let tokens = source.tokens().await.map_err(|error| error.to_string())?;
                    std::hint::black_box(tokens);
                    Ok(())
                }
            },
            callers,
        )
    }

    /// One batch through oauth2-rs behind a mutex.
    fn oauth2(&self, callers: usize) -> Result<Batch, Error> {
        let cache = Arc::new(tokio::sync::Mutex::new(Cached::expired()));
        self.batch(
            "oauth2-rs",
            || {
                let (cache, client, http) = (
                    Arc::clone(&cache),
                    Arc::clone(&self.client),
                    self.http.clone(),
                );
                async move {
                    let tokens = oauth2_tokens(&cache, &client, &http).await?;
                    std::hint::black_box(tokens);
                    Ok(())
                }
            },
            callers,
        )
    }

    /// Spawns `callers` tasks made by `caller` and waits for them all.
    fn batch<F>(&self, side: &str, caller: impl Fn() -> F, callers: usize) -> Result<Batch, Error>
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let refreshes = self.endpoint.refreshes();
        let (cpu, idp) = (process_cpu_nanos(), self.endpoint.cpu_nanos()?);
        let started = Instant::now();
        let done = self.runtime.block_on(async {
            let tasks: Vec<_> = (0..callers).map(|_| tokio::spawn(caller())).collect();
            for task in tasks {
                task.await??;
            }
            Ok::<_, Error>(Instant::now())
        })?;
        let spent = (process_cpu_nanos() - cpu).saturating_sub(self.endpoint.cpu_nanos()? - idp);
        let refreshes = self.endpoint.refreshes() - refreshes;
        if refreshes != 1 {
            return Err(format!(
                "{side}: {callers} callers made the token endpoint answer {refreshes} refreshes, \
                 not 1"
            )
            .into());
        }
        let answered = self
            .endpoint
            .last_refresh_answer()
            .ok_or("the endpoint kept no answer time")?;
        Ok(Batch {
            cpu: spent as f64,
            wall: (done - started).as_nanos() as f64,
            tail: done.saturating_duration_since(answered).as_nanos() as f64,
            refreshes,
        })
    }
}

/// oauth2-rs's tokens through the mutex: cloned out when valid beyond the margin,
/// refreshed under the lock otherwise.
async fn oauth2_tokens(
    cache: &tokio::sync::Mutex<Cached>,
    client: &Oauth2Client,
    http: &oauth2::reqwest::Client,
) -> Result<BasicTokenResponse, String> {
    let mut cached = cache.lock().await;
    if let (Some(tokens), Some(until)) = (&cached.tokens, cached.valid_until)
        && until > Instant::now() + MARGIN
    {
        return Ok(tokens.clone());
    }
    let fresh = client
        .exchange_refresh_token(&cached.refresh_token)
        .request_async(http)
        .await
        .map_err(|error| format!("oauth2-rs refresh: {error}"))?;
    if let Some(rotated) = fresh.refresh_token() {
        cached.refresh_token = rotated.clone();
    }
    cached.valid_until = fresh.expires_in().map(|lifetime| Instant::now() + lifetime);
    cached.tokens = Some(fresh.clone());
    Ok(fresh)
}
