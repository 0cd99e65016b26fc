//! Heap allocations per operation and heap bytes per pending flow, under a counting
//! allocator (which is why this is its own program: the timings run without it).
//!
//! `probe` prints one JSON object per line, read by `latchkey-bench`:
//! `{"kind":"allocs","name":…,"allocations":…,"reallocations":…,"bytes":…}` per operation,
//! and `{"kind":"memory","name":…,"flows":…,"bytes_per_flow":…,"peak_rss_kib":…}` per
//! pending-flow scenario, each run in a child process (`probe memory SCENARIO`) so that
//! the peak RSS is that scenario's, and
//! `{"kind":"waiters","name":…,"callers":…,"waiting_bytes":…,"allocations":…,"bytes":…}`
//! per side of the 1,000-waiters measurement ([`latchkey_bench::waiters`]), each in a child
//! process too (`probe waiters SIDE`): the heap held while every caller waits for the
//! refresh (more than before the callers were spawned), and the allocations and bytes
//! allocated over the whole batch, spawning the tasks included. `probe waiters` runs both. `probe repeat OPERATION N` runs one operation N
//! times (after one warm-up batch) and nothing else, for `valgrind --tool=callgrind` or
//! `perf record`.
#![forbid(unsafe_code)]
#![allow(clippy::disallowed_methods)]

use std::alloc::System;
use std::process::ExitCode;
use std::sync::Arc;

use latchkey::ENTROPY_LEN;
use latchkey_bench::fixtures::{self, BATCH, Bench, Meter, Operation, Timer};
use latchkey_bench::waiters::{self, CALLERS, Moment, Side};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Runs per allocation measurement: whole batches, so that every run is alike.
const RUNS: u64 = 2 * BATCH as u64;

/// Pending flows in the memory measurement.
const PENDING: usize = 100_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => {
            allocations();
            memory();
            waiters();
            ExitCode::SUCCESS
        }
        ["waiters"] => {
            waiters();
            ExitCode::SUCCESS
        }
        ["waiters", side] => match Side::ALL.into_iter().find(|s| s.name() == side) {
            Some(side) => {
                waiters_side(side);
                ExitCode::SUCCESS
            }
            None => usage(),
        },
        ["memory", scenario] => match memory_scenario(scenario) {
            Some(()) => ExitCode::SUCCESS,
            None => usage(),
        },
        ["repeat", operation, count] => match (Operation::parse(operation), count.parse()) {
            (Some(operation), Ok(count)) => {
                operation.measure(&mut Bench::new(), count, &mut Timer::default());
                ExitCode::SUCCESS
            }
            _ => usage(),
        },
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: probe [repeat OPERATION N | memory {} | waiters [latchkey|oauth2-rs]]\noperations: {}",
        SCENARIOS.join("|"),
        Operation::ALL.map(Operation::name).join(", ")
    );
    ExitCode::from(2)
}

/// A [`Meter`] adding up the allocator's activity.
#[derive(Default)]
struct Allocations {
    region: Option<Region<'static, System>>,
    allocations: usize,
    reallocations: usize,
    bytes: usize,
}

impl Meter for Allocations {
    fn start(&mut self) {
        self.region = Some(Region::new(GLOBAL));
    }

    fn stop(&mut self) {
        if let Some(region) = self.region.take() {
            let change = region.change();
            self.allocations += change.allocations;
            self.reallocations += change.reallocations;
            self.bytes += change.bytes_allocated;
        }
    }
}

/// Allocations per run of each operation.
fn allocations() {
    let mut bench = Bench::new();
    for operation in Operation::ALL {
        // Once first: lazily initialised state (thread-local RNGs) is not per-run cost.
        operation.measure(&mut bench, BATCH as u64, &mut Timer::default());
        let mut meter = Allocations::default();
        operation.measure(&mut bench, RUNS, &mut meter);
        let per_run = |count: usize| count as f64 / RUNS as f64;
        println!(
            "{}",
            json!({
                "kind": "allocs",
                "name": operation.name(),
                "allocations": per_run(meter.allocations),
                "reallocations": per_run(meter.reallocations),
                "bytes": per_run(meter.bytes).round(),
            })
        );
    }
}

/// The pending-flow scenarios, each measured in a process of its own so that its peak RSS
/// is its own.
const SCENARIOS: [&str; 3] = ["engine", "service", "oauth2"];

/// Runs every memory scenario in a child process and passes its line on.
fn memory() {
    let program = std::env::current_exe().expect("this program's path");
    for scenario in SCENARIOS {
        let output = std::process::Command::new(&program)
            .args(["memory", scenario])
            .output()
            .expect("the probe runs");
        assert!(output.status.success(), "memory {scenario} failed");
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }
}

/// Heap bytes per pending flow, with 100,000 pending, and this process's peak RSS: in the
/// engine alone, in a running service (the tokio driver, the caller holding each `Login`),
/// or in oauth2-rs's state map.
fn memory_scenario(scenario: &str) -> Option<()> {
    let now = std::time::Instant::now();
    match scenario {
        "engine" => {
            let entropies: Vec<[u8; ENTROPY_LEN]> = (0..PENDING).map(distinct_entropy).collect();
            let config = fixtures::config(fixtures::TOKEN_URL, 8080, 64);
            let mut engine = latchkey::Engine::new(config).expect("a valid engine");
            let (bytes, ()) = live_bytes(|| {
                for entropy in &entropies {
                    engine.start(now, *entropy).expect("distinct entropy");
                    while engine.poll_action().is_some() {}
                }
            });
            report_memory("latchkey engine", bytes, engine.flows_in_progress());
        }
        "service" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async {
                let config = fixtures::config(fixtures::TOKEN_URL, 0, 64);
                let options = latchkey_tokio::ServiceOptions::new(
                    Arc::new(latchkey_io::store::MemoryStore::default()),
                    latchkey_tokio::Transport::Custom(Arc::new(NeverCalled)),
                );
                let service = latchkey_tokio::serve(config, options).expect("a service");
                let mut logins = Vec::with_capacity(PENDING);
                let region = Region::new(GLOBAL);
                for _ in 0..PENDING {
                    let login = service
                        .start(latchkey::FlowOptions::new())
                        .expect("a login");
                    logins.push(login);
                }
                let change = region.change();
                let handles = PENDING * std::mem::size_of::<latchkey_tokio::Login>();
                let bytes = net_bytes(&change) - handles as i64;
                report_memory(
                    "latchkey-tokio service (with each Login)",
                    bytes,
                    logins.len(),
                );
                drop(logins);
                service.shutdown().await;
            });
        }
        "oauth2" => {
            let client = fixtures::oauth2_client(fixtures::TOKEN_URL, fixtures::REDIRECT.1);
            let mut pending = std::collections::HashMap::new();
            let (bytes, ()) = live_bytes(|| {
                for _ in 0..PENDING {
                    let (url, state, verifier) = fixtures::oauth2_authorize(&client);
                    drop(url);
                    pending.insert(state.secret().clone(), verifier);
                }
            });
            report_memory(
                "oauth2-rs state map (HashMap<state, verifier>)",
                bytes,
                pending.len(),
            );
        }
        _ => return None,
    }
    Some(())
}

/// Runs each side of the waiters' heap measurement in a child process and passes its
/// line on.
fn waiters() {
    let program = std::env::current_exe().expect("this program's path");
    for side in Side::ALL {
        let output = std::process::Command::new(&program)
            .args(["waiters", side.name()])
            .output()
            .expect("the probe runs");
        assert!(output.status.success(), "waiters {} failed", side.name());
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }
}

/// One side of the waiters' heap measurement: the endpoint answers the refresh after
/// 300 ms; 150 ms after the callers were spawned, every one of them is waiting.
fn waiters_side(side: Side) {
    let mut region = None;
    let mut waiting = 0;
    let mut total = None;
    waiters::probe_batch(
        side,
        std::time::Duration::from_millis(300),
        std::time::Duration::from_millis(150),
        &mut |moment| match moment {
            Moment::Start => region = Some(Region::new(GLOBAL)),
            Moment::Waiting => {
                waiting = region
                    .as_ref()
                    .map_or(0, |region| net_bytes(&region.change()));
            }
            Moment::Done => total = region.as_ref().map(Region::change),
        },
    )
    .expect("the batch completes with one refresh");
    let total = total.expect("the batch ended");
    println!(
        "{}",
        json!({
            "kind": "waiters",
            "name": side.name(),
            "callers": CALLERS,
            "waiting_bytes": waiting,
            "allocations": total.allocations + total.reallocations,
            "bytes": total.bytes_allocated,
        })
    );
}

/// Entropy that differs in both halves for every `index`.
fn distinct_entropy(index: usize) -> [u8; ENTROPY_LEN] {
    let mut entropy = [0x33; ENTROPY_LEN];
    entropy[..8].copy_from_slice(&(index as u64).to_le_bytes());
    entropy[ENTROPY_LEN / 2..ENTROPY_LEN / 2 + 8].copy_from_slice(&(index as u64).to_le_bytes());
    entropy
}

/// Heap bytes still allocated after `work` that were not before.
fn live_bytes<T>(work: impl FnOnce() -> T) -> (i64, T) {
    let region = Region::new(GLOBAL);
    let value = work();
    (net_bytes(&region.change()), value)
}

/// Bytes allocated and not freed (the counters already include reallocations' growth
/// and shrinkage).
fn net_bytes(stats: &stats_alloc::Stats) -> i64 {
    stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
}

fn report_memory(name: &str, bytes: i64, flows: usize) {
    assert_eq!(flows, PENDING, "{name}: every flow is pending");
    println!(
        "{}",
        json!({
            "kind": "memory",
            "name": name,
            "flows": flows,
            "bytes_per_flow": (bytes as f64 / flows as f64).round(),
            "peak_rss_kib": peak_rss_kib(),
        })
    );
}

/// Peak resident set size of this process, from `/proc/self/status`.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A token transport the memory measurement never reaches (no browser comes back).
struct NeverCalled;

impl latchkey_tokio::TokenTransport for NeverCalled {
    fn send(
        &self,
        _request: http::Request<Vec<u8>>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = latchkey_io::transport::TokenResult> + Send>,
    > {
        Box::pin(async {
            Err(latchkey::TransportError::new(
                latchkey::TransportErrorKind::Connect,
                "the memory measurement sends no token requests",
            ))
        })
    }
}
