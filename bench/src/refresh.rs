//! After the login: the CPU a program spends per refresh, and per hand-out of tokens that
//! are still valid, through each contender, each in its own process
//! (`latchkey-bench refresh-client TARGET TOKEN_URL COUNT`) so that its CPU time is its own.
//!
//! The token endpoint is the end-to-end measurement's ([`crate::e2e::TokenEndpoint`]): it
//! answers every request at once with the recorded token response. A client process runs
//! `COUNT` forced refreshes one after another, then `COUNT` hand-outs of the fresh tokens,
//! and prints the CPU nanoseconds each loop took (`CLOCK_PROCESS_CPUTIME_ID`, read around
//! the loop only). The targets are interleaved round by round, and the report gives the
//! median over rounds.
//!
//! - latchkey (smol, tokio): a token source over a memory store; `refresh()` then `tokens()`.
//! - oauth2-rs: `exchange_refresh_token` with reqwest (which keeps its connection to the
//!   token endpoint open between requests, as applications using it do), the tokens kept in
//!   a `Mutex` by the caller; a hand-out clones them out of it.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use latchkey::TokenSet;
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::runtime::Runtime;
use latchkey_io::source::TokenSource;
use latchkey_io::store::{DEFAULT_KEY, MemoryStore, TokenStore};
use latchkey_io::transport::Transport;
use oauth2::{RefreshToken, TokenResponse};
use secrecy::SecretString;

use crate::e2e::TokenEndpoint;
use crate::fixtures;
use crate::servers::process_cpu_nanos;

/// A contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// latchkey's token source on smol.
    Smol,
    /// latchkey's token source on tokio.
    Tokio,
    /// oauth2-rs 5 with reqwest.
    Oauth2,
}

impl Client {
    /// Every contender, in round order.
    pub const ALL: [Client; 3] = [Client::Smol, Client::Tokio, Client::Oauth2];

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Client::Smol => "latchkey-smol",
            Client::Tokio => "latchkey-tokio",
            Client::Oauth2 => "oauth2-rs + reqwest",
        }
    }

    /// The short name `refresh-client` takes.
    pub fn arg(self) -> &'static str {
        match self {
            Client::Smol => "smol",
            Client::Tokio => "tokio",
            Client::Oauth2 => "oauth2",
        }
    }

    /// The contender `refresh-client` was given.
    pub fn parse(arg: &str) -> Option<Client> {
        Client::ALL.into_iter().find(|client| client.arg() == arg)
    }
}

/// What one contender measured, per round.
#[derive(Debug, Clone)]
pub struct ClientResult {
    /// The contender.
    pub client: Client,
    /// CPU nanoseconds per refresh, one figure per round.
    pub refresh_nanos: Vec<f64>,
    /// CPU nanoseconds per hand-out of valid tokens, one figure per round.
    pub handout_nanos: Vec<f64>,
}

/// The median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Runs `rounds` rounds of `count` refreshes and hand-outs per contender, each round in a
/// fresh process of `program` (the `latchkey-bench` binary).
pub fn run(
    rounds: usize,
    count: usize,
    program: &Path,
    progress: &mut dyn FnMut(&str),
) -> std::io::Result<Vec<ClientResult>> {
    let endpoint = TokenEndpoint::start()?;
    let mut results: Vec<ClientResult> = Client::ALL
        .into_iter()
        .map(|client| ClientResult {
            client,
            refresh_nanos: Vec::new(),
            handout_nanos: Vec::new(),
        })
        .collect();
    for round in 0..rounds {
        progress(&format!("refresh: round {} of {rounds}", round + 1));
        for offset in 0..results.len() {
            let result = &mut results[(round + offset) % Client::ALL.len()];
            let output = Command::new(program)
                .args([
                    "refresh-client",
                    result.client.arg(),
                    &endpoint.url,
                    &count.to_string(),
                ])
                .output()?;
            let text = String::from_utf8_lossy(&output.stdout);
            let figures: Vec<f64> = text
                .split_whitespace()
                .filter_map(|word| word.parse().ok())
                .collect();
            let [refresh, handout] = figures[..] else {
                return Err(std::io::Error::other(format!(
                    "refresh-client {}: {text:?} {}",
                    result.client.arg(),
                    String::from_utf8_lossy(&output.stderr)
                )));
            };
            result.refresh_nanos.push(refresh / count as f64);
            result.handout_nanos.push(handout / count as f64);
        }
    }
    Ok(results)
}

/// The client process: `count` refreshes, then `count` hand-outs; prints the CPU
/// nanoseconds of each loop.
pub fn client(client: Client, token_url: &str, count: usize) -> std::io::Result<()> {
    let (refresh, handout) = match client {
        Client::Smol => smol::block_on(latchkey(latchkey_smol::Smol, token_url, count))?,
        Client::Tokio => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(latchkey(latchkey_tokio::Tokio, token_url, count))?,
        Client::Oauth2 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(oauth2_client(token_url, count))?,
    };
    println!("{refresh} {handout}");
    Ok(())
}

/// Tokens that need a refresh: expired an hour ago, with a refresh token.
fn expired_tokens() -> TokenSet {
    TokenSet::new(SecretString::from("expired-access"))
        .with_refresh_token(SecretString::from("bench-refresh-token"))
        .with_expires_at(SystemTime::now() - Duration::from_secs(3600))
}

async fn latchkey<R: Runtime>(
    runtime: R,
    token_url: &str,
    count: usize,
) -> std::io::Result<(u128, u128)> {
    let store = Arc::new(MemoryStore::default());
    store
        .save(DEFAULT_KEY, &expired_tokens())
        .map_err(std::io::Error::other)?;
    let client = HttpClient::new(HttpOptions::default()).map_err(std::io::Error::other)?;
    let source = TokenSource::new(
        runtime,
        fixtures::provider(token_url),
        store,
        Transport::Builtin(client),
    );
    // One of each first, so that lazy set-up is not measured.
    source.refresh().await.map_err(std::io::Error::other)?;
    source.tokens().await.map_err(std::io::Error::other)?;
    let started = process_cpu_nanos();
    for _ in 0..count {
        let tokens = source.refresh().await.map_err(std::io::Error::other)?;
        std::hint::black_box(tokens);
    }
    let refresh = process_cpu_nanos() - started;
    let started = process_cpu_nanos();
    for _ in 0..count {
        let tokens = source.tokens().await.map_err(std::io::Error::other)?;
        std::hint::black_box(tokens);
    }
    Ok((refresh, process_cpu_nanos() - started))
}

async fn oauth2_client(token_url: &str, count: usize) -> std::io::Result<(u128, u128)> {
    let client = fixtures::oauth2_client(token_url, fixtures::REDIRECT.1);
    let http = oauth2::reqwest::Client::builder()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .map_err(std::io::Error::other)?;
    let stored = Mutex::new(RefreshToken::new("bench-refresh-token".into()));
    let refresh_once = || async {
        let refresh_token = stored.lock().expect("not poisoned").clone();
        let tokens = client
            .exchange_refresh_token(&refresh_token)
            .request_async(&http)
            .await
            .map_err(std::io::Error::other)?;
        if let Some(rotated) = tokens.refresh_token() {
            *stored.lock().expect("not poisoned") = rotated.clone();
        }
        Ok::<_, std::io::Error>(tokens)
    };
    let kept = Mutex::new(refresh_once().await?);
    let started = process_cpu_nanos();
    for _ in 0..count {
        let tokens = refresh_once().await?;
        *kept.lock().expect("not poisoned") = tokens;
    }
    let refresh = process_cpu_nanos() - started;
    let started = process_cpu_nanos();
    for _ in 0..count {
        let tokens = kept.lock().expect("not poisoned").clone();
        std::hint::black_box(tokens);
    }
    Ok((refresh, process_cpu_nanos() - started))
}
