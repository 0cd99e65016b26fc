//! Whole flows over loopback sockets: a scripted browser sends the recorded Chromium
//! callback request (its state replaced by a live one) to each contender's callback server
//! ([`crate::servers`], one process each), which exchanges the code at a token endpoint
//! that answers at once with the recorded token response, and redirects the browser.
//!
//! The targets are interleaved round by round (A B C D, then B C D A, …) so that drift in
//! the machine's speed hits all of them alike. Per target and mode (one flow at a time, or
//! [`Plan::concurrent`] at once) it records the browser's latency (connect to the 303's
//! head), flows per second, and the CPU time the callback server's process spent per flow
//! (`CLOCK_PROCESS_CPUTIME_ID`, read by the server itself before and after each chunk,
//! once every flow of the chunk has finished on its side).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::fixtures::{CALLBACK_REQUEST, LANDING, TOKEN_RESPONSE};
use crate::servers::Target;

/// How much to run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Rounds; every target runs once per round in each mode.
    pub rounds: usize,
    /// Flows one after another, per target and round.
    pub sequential: usize,
    /// Flows at once, per target and round.
    pub concurrent: usize,
}

impl Plan {
    /// The published measurement: 2,000 sequential flows and rounds of 200 concurrent ones
    /// per target.
    pub const FULL: Plan = Plan {
        rounds: 10,
        sequential: 200,
        concurrent: 200,
    };

    /// A smoke run.
    pub const QUICK: Plan = Plan {
        rounds: 2,
        sequential: 20,
        concurrent: 20,
    };
}

/// What one target did in one mode, over every round.
#[derive(Debug, Clone, Default)]
pub struct ModeResult {
    /// Flows completed with a correct 303.
    pub flows: usize,
    /// Flows that failed (wrong status, wrong location, I/O error).
    pub failures: usize,
    /// Wall time of every chunk together.
    pub wall: Duration,
    /// The server's CPU time over every chunk, in nanoseconds.
    pub cpu_nanos: u128,
    /// Per round: the server's CPU nanoseconds per flow.
    pub cpu_per_flow_by_round: Vec<f64>,
    /// Every flow's latency.
    pub latencies: Vec<Duration>,
}

impl ModeResult {
    /// Flows per second of wall time.
    pub fn flows_per_second(&self) -> f64 {
        self.flows as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }

    /// CPU microseconds per flow over the whole run.
    pub fn cpu_micros_per_flow(&self) -> f64 {
        self.cpu_nanos as f64 / 1_000.0 / (self.flows + self.failures).max(1) as f64
    }

    /// The latency at quantile `q` (0..=1).
    pub fn latency(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }
}

/// Everything measured for one target.
#[derive(Debug, Clone)]
pub struct TargetResult {
    /// The target.
    pub target: Target,
    /// One flow at a time.
    pub sequential: ModeResult,
    /// Many at once.
    pub concurrent: ModeResult,
    /// The server's peak RSS at the end, in KiB.
    pub peak_rss_kib: u64,
}

/// A callback server process.
struct Server {
    target: Target,
    child: Child,
    /// `None` once closed, which stops the server.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl Server {
    fn spawn(program: &Path, target: Target, token_url: &str) -> std::io::Result<Server> {
        // `LATCHKEY_BENCH_WRAP="valgrind --tool=callgrind"` runs each server under a
        // profiler: the words of the variable come first, the server's command after.
        let wrap = std::env::var("LATCHKEY_BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut command = match words.next() {
            Some(first) => {
                let mut command = Command::new(first);
                command.args(words).arg(program);
                command
            }
            None => Command::new(program),
        };
        let mut child = command
            .args(["serve", target.arg(), token_url])
            .envs(target.environment().iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| broken("no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| broken("no stdout"))?);
        let mut server = Server {
            target,
            child,
            stdin: Some(stdin),
            stdout,
            port: 0,
        };
        let line = server.line()?;
        server.port = line
            .strip_prefix("port ")
            .and_then(|port| port.parse().ok())
            .ok_or_else(|| broken(&format!("{} said {line:?}", target.name())))?;
        Ok(server)
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(broken(&format!("{} exited", self.target.name())));
        }
        Ok(line.trim_end().to_owned())
    }

    fn ask(&mut self, command: &str) -> std::io::Result<String> {
        let stdin = self.stdin.as_mut().ok_or_else(|| broken("stdin closed"))?;
        writeln!(stdin, "{command}")?;
        stdin.flush()?;
        self.line()
    }

    /// Starts `count` logins; their states.
    fn start(&mut self, count: usize) -> std::io::Result<Vec<String>> {
        let stdin = self.stdin.as_mut().ok_or_else(|| broken("stdin closed"))?;
        writeln!(stdin, "start {count}")?;
        stdin.flush()?;
        let mut states = Vec::with_capacity(count);
        loop {
            let line = self.line()?;
            if line == "ok" {
                return Ok(states);
            }
            states.push(line);
        }
    }

    fn cpu_nanos(&mut self) -> std::io::Result<u128> {
        let answer = self.ask("cpu")?;
        answer
            .parse()
            .map_err(|_| broken(&format!("cpu: {answer:?}")))
    }

    /// Logins finished and failed so far.
    fn stats(&mut self) -> std::io::Result<(u64, u64)> {
        let answer = self.ask("stats")?;
        let mut numbers = answer.split(' ').map(str::parse::<u64>);
        match (numbers.next(), numbers.next()) {
            (Some(Ok(finished)), Some(Ok(failed))) => Ok((finished, failed)),
            _ => Err(broken(&format!("stats: {answer:?}"))),
        }
    }

    /// Waits until the server has seen `total` logins end (5 s at most).
    fn settle(&mut self, total: u64) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let (finished, failed) = self.stats()?;
            if finished + failed >= total {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(broken(&format!(
            "{}: logins did not finish",
            self.target.name()
        )))
    }

    fn peak_rss_kib(&mut self) -> std::io::Result<u64> {
        let answer = self.ask("rss")?;
        answer
            .parse()
            .map_err(|_| broken(&format!("rss: {answer:?}")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing stdin stops the server (and lets a profiler wrapping it write its
        // profile); kill it if it lingers.
        self.stdin = None;
        let until = Instant::now() + std::time::Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn broken(detail: &str) -> std::io::Error {
    std::io::Error::other(detail.to_owned())
}

/// The recorded request for `port`, carrying `state`.
pub fn browser_request(port: u16, state: &str) -> Vec<u8> {
    let text = std::str::from_utf8(CALLBACK_REQUEST).expect("an ASCII request");
    let start = text.find("state=").expect("a state") + "state=".len();
    let end = start
        + text[start..]
            .find('&')
            .expect("more parameters after the state");
    let request = format!("{}{state}{}", &text[..start], &text[end..]);
    request
        .replacen(
            "Host: 127.0.0.1:8080",
            &format!("Host: 127.0.0.1:{port}"),
            1,
        )
        .into_bytes()
}

/// One browser visit: connect, send the callback, read the answer's head. The latency, or
/// why the visit failed.
pub fn visit(port: u16, request: &[u8]) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .map_err(|error| format!("connect: {error}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|error| error.to_string())?;
    stream
        .write_all(request)
        .map_err(|error| format!("write: {error}"))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0; 1024];
    loop {
        let read = stream
            .read(&mut buf)
            .map_err(|error| format!("read: {error}"))?;
        if read == 0 {
            return Err("closed before the response head".into());
        }
        head.extend_from_slice(&buf[..read]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let elapsed = started.elapsed();
                let location = response
                    .headers
                    .iter()
                    .find(|header| header.name.eq_ignore_ascii_case("location"))
                    .map(|header| header.value);
                return match (response.code, location) {
                    (Some(303), Some(location)) if location == LANDING.as_bytes() => Ok(elapsed),
                    (code, _) => Err(format!("answered {code:?}")),
                };
            }
            Ok(httparse::Status::Partial) => {}
            Err(error) => return Err(format!("bad response: {error}")),
        }
    }
}

/// The token endpoint: answers every POST at once with the recorded token response.
pub struct TokenEndpoint {
    /// Its URL.
    pub url: String,
    /// Requests answered.
    pub requests: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

impl TokenEndpoint {
    /// Starts it on an ephemeral loopback port.
    pub fn start() -> std::io::Result<TokenEndpoint> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let requests = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&requests);
        let listener = crate::servers::listener()?;
        let url = format!("http://{}/token", listener.local_addr()?);
        listener.set_nonblocking(true)?;
        let _guard = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let router = axum::Router::new().route(
            "/token",
            axum::routing::post(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                async {
                    (
                        [
                            (http::header::CONTENT_TYPE, "application/json"),
                            (http::header::CACHE_CONTROL, "no-store"),
                        ],
                        TOKEN_RESPONSE,
                    )
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, router).await });
        Ok(TokenEndpoint {
            url,
            requests,
            _runtime: runtime,
        })
    }
}

/// A whole end-to-end run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Per target.
    pub targets: Vec<TargetResult>,
    /// Token requests the token endpoint answered: one per flow, for every target.
    pub token_requests: u64,
}

/// Runs `plan` against every target, each served by `program serve TARGET TOKEN_URL` (the
/// `latchkey-bench` binary); `progress` hears what is going on. `LATCHKEY_BENCH_ONLY=tokio,floor`
/// (any of `smol`, `smol2`, `tokio`, `oauth2`, `floor`) runs only those targets, for profiling;
/// `LATCHKEY_BENCH_WRAP` names a command each server runs under (a profiler).
pub fn run(plan: Plan, program: &Path, progress: &mut dyn FnMut(&str)) -> std::io::Result<Run> {
    let endpoint = TokenEndpoint::start()?;
    let only = std::env::var("LATCHKEY_BENCH_ONLY").ok();
    let targets: Vec<Target> = Target::ALL
        .into_iter()
        .filter(|target| {
            only.as_deref()
                .is_none_or(|only| only.split(',').any(|name| name == target.arg()))
        })
        .collect();
    let mut servers = targets
        .iter()
        .copied()
        .map(|target| Server::spawn(program, target, &endpoint.url))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut results: Vec<TargetResult> = targets
        .into_iter()
        .map(|target| TargetResult {
            target,
            sequential: ModeResult::default(),
            concurrent: ModeResult::default(),
            peak_rss_kib: 0,
        })
        .collect();
    let mut ended = vec![0u64; servers.len()];
    for round in 0..plan.rounds {
        progress(&format!(
            "end to end: round {} of {}",
            round + 1,
            plan.rounds
        ));
        for offset in 0..servers.len() {
            let index = (round + offset) % servers.len();
            let server = &mut servers[index];
            let result = &mut results[index];
            for concurrent in [false, true] {
                let count = if concurrent {
                    plan.concurrent
                } else {
                    plan.sequential
                };
                let mode = if concurrent {
                    &mut result.concurrent
                } else {
                    &mut result.sequential
                };
                ended[index] += count as u64;
                chunk(server, count, concurrent, ended[index], mode)?;
            }
        }
    }
    for (server, result) in servers.iter_mut().zip(&mut results) {
        result.peak_rss_kib = server.peak_rss_kib()?;
    }
    Ok(Run {
        targets: results,
        token_requests: endpoint.requests.load(Ordering::Relaxed),
    })
}

/// Runs `count` flows on `server`, one at a time or all at once, into `mode`.
fn chunk(
    server: &mut Server,
    count: usize,
    concurrent: bool,
    ended_after: u64,
    mode: &mut ModeResult,
) -> std::io::Result<()> {
    let port = server.port;
    let requests: Vec<Vec<u8>> = server
        .start(count)?
        .iter()
        .map(|state| browser_request(port, state))
        .collect();
    let cpu_before = server.cpu_nanos()?;
    let (outcomes, wall): (Vec<Result<Duration, String>>, Duration) = if concurrent {
        // Every browser thread is ready before the clock starts.
        let barrier = Arc::new(Barrier::new(requests.len() + 1));
        std::thread::scope(|scope| {
            let visits: Vec<_> = requests
                .iter()
                .map(|request| {
                    let barrier = Arc::clone(&barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        visit(port, request)
                    })
                })
                .collect();
            barrier.wait();
            let started = Instant::now();
            let outcomes = visits
                .into_iter()
                .map(|visit| visit.join().unwrap_or_else(|_| Err("panicked".into())))
                .collect();
            (outcomes, started.elapsed())
        })
    } else {
        let started = Instant::now();
        let outcomes = requests
            .iter()
            .map(|request| visit(port, request))
            .collect();
        (outcomes, started.elapsed())
    };
    server.settle(ended_after)?;
    let cpu = server.cpu_nanos()?.saturating_sub(cpu_before);
    mode.wall += wall;
    mode.cpu_nanos += cpu;
    mode.cpu_per_flow_by_round.push(cpu as f64 / count as f64);
    for outcome in outcomes {
        match outcome {
            Ok(latency) => {
                mode.flows += 1;
                mode.latencies.push(latency);
            }
            Err(error) => {
                mode.failures += 1;
                if mode.failures <= 3 {
                    eprintln!("{}: {error}", server.target.name());
                }
            }
        }
    }
    Ok(())
}
