//! The callback servers the end-to-end measurement compares, each run as its own process
//! (`latchkey-bench serve TARGET TOKEN_URL`) so that its CPU time is its own.
//!
//! Every server listens on an ephemeral loopback port, answers the browser's callback by
//! exchanging the code at `TOKEN_URL` and redirecting the browser with a 303 to
//! [`LANDING`]. The orchestrator drives it through stdin, one
//! command per line, and reads one answer per command on stdout:
//!
//! | command   | answer |
//! |-----------|--------|
//! | `start N` | N lines, each the `state` of a login just started, then `ok` |
//! | `cpu`     | CPU time this process has used, in nanoseconds |
//! | `stats`   | `FINISHED FAILED`: logins completed with tokens, and failed |
//! | `rss`     | peak resident set size, in KiB |
//!
//! The first line a server prints is `port P`. End of input stops it.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::runtime::Runtime;
use latchkey_io::service::Service;
use latchkey_io::store::MemoryStore;
use oauth2::{AuthorizationCode, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, Scope};

use crate::fixtures::{self, LANDING, SCOPES};

/// A contender in the end-to-end measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// latchkey on smol, on smol's one executor thread (its default).
    Smol,
    /// latchkey on smol with the global executor on two threads (`SMOL_THREADS=2`), as a
    /// smol program serving many users at once runs it.
    SmolThreads,
    /// latchkey on tokio.
    Tokio,
    /// oauth2-rs 5 with reqwest, behind a small axum callback server.
    Oauth2,
    /// A bare axum server making the same two HTTP exchanges with no OAuth logic.
    Floor,
}

impl Target {
    /// The environment its server process runs with.
    pub fn environment(self) -> &'static [(&'static str, &'static str)] {
        match self {
            // Read by smol when its global executor starts.
            Target::SmolThreads => &[("SMOL_THREADS", "2")],
            _ => &[],
        }
    }

    /// Every target, in the order a round runs them.
    pub const ALL: [Target; 5] = [
        Target::Smol,
        Target::SmolThreads,
        Target::Tokio,
        Target::Oauth2,
        Target::Floor,
    ];

    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Target::Smol => "latchkey-smol",
            Target::SmolThreads => "latchkey-smol, 2 threads",
            Target::Tokio => "latchkey-tokio",
            Target::Oauth2 => "oauth2-rs + axum",
            Target::Floor => "floor (axum + reqwest)",
        }
    }

    /// The short name `serve` takes.
    pub fn arg(self) -> &'static str {
        match self {
            Target::Smol => "smol",
            Target::SmolThreads => "smol2",
            Target::Tokio => "tokio",
            Target::Oauth2 => "oauth2",
            Target::Floor => "floor",
        }
    }

    /// The target `serve` was given.
    pub fn parse(arg: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|target| target.arg() == arg)
    }
}

/// A command from the orchestrator.
enum Command {
    Start(usize),
    Cpu,
    Stats,
    Rss,
}

impl Command {
    fn parse(line: &str) -> Option<Command> {
        let mut words = line.split_whitespace();
        let command = match (words.next()?, words.next()) {
            ("start", Some(count)) => Command::Start(count.parse().ok()?),
            ("cpu", None) => Command::Cpu,
            ("stats", None) => Command::Stats,
            ("rss", None) => Command::Rss,
            _ => return None,
        };
        words.next().is_none().then_some(command)
    }
}

/// Logins completed and failed, counted by every server the same way.
#[derive(Debug, Default)]
struct Outcomes {
    finished: AtomicU64,
    failed: AtomicU64,
}

impl Outcomes {
    fn record(&self, ok: bool) {
        let counter = if ok { &self.finished } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn line(&self) -> String {
        format!(
            "{} {}",
            self.finished.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        )
    }
}

/// Reads commands from stdin on a thread of its own (stdin blocks) and hands them over;
/// the channel closes at end of input.
fn commands() -> async_channel::Receiver<Command> {
    let (sender, receiver) = async_channel::unbounded();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match Command::parse(&line) {
                Some(command) => {
                    if sender.send_blocking(command).is_err() {
                        break;
                    }
                }
                None => eprintln!("serve: unknown command {line:?}"),
            }
        }
    });
    receiver
}

/// Answers the commands that do not depend on the target.
fn answer_common(command: &Command, outcomes: &Outcomes) -> Option<String> {
    match command {
        Command::Cpu => Some(process_cpu_nanos().to_string()),
        Command::Stats => Some(outcomes.line()),
        Command::Rss => Some(peak_rss_kib().unwrap_or(0).to_string()),
        Command::Start(_) => None,
    }
}

fn say(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // The orchestrator reading this is the only consumer; if it is gone, so are we.
    let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
}

/// CPU time used by every thread of this process, dead ones included.
pub fn process_cpu_nanos() -> u128 {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    time.tv_sec as u128 * 1_000_000_000 + time.tv_nsec as u128
}

/// Peak resident set size of this process, from `/proc/self/status`.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `state` parameter of an authorization URL.
fn state_of(url: &str) -> String {
    let query = url
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "state")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// Runs `target`'s server until stdin ends.
pub fn serve(target: Target, token_url: &str) -> std::io::Result<()> {
    let listener = listener()?;
    let port = listener.local_addr()?.port();
    match target {
        Target::Smol | Target::SmolThreads => serve_smol(listener, port, token_url),
        Target::Tokio => serve_tokio(listener, port, token_url),
        Target::Oauth2 => serve_oauth2(listener, port, token_url),
        Target::Floor => serve_floor(listener, port, token_url),
    }
}

/// A listener on an ephemeral loopback port with a deep accept queue. The standard
/// library listens with a backlog of 128; a burst of 200 connections would overflow it and
/// some would wait a second to retry their SYN, whoever the server is.
pub fn listener() -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    socket.listen(4096)?;
    Ok(TcpListener::from(socket))
}

/// The latchkey service options every latchkey target uses: tokens in memory, the built-in
/// HTTP client.
fn latchkey_options() -> std::io::Result<latchkey_io::service::ServiceOptions> {
    let client = HttpClient::new(HttpOptions::default()).map_err(std::io::Error::other)?;
    Ok(latchkey_io::service::ServiceOptions::new(
        Arc::new(MemoryStore::default()),
        latchkey_io::transport::Transport::Builtin(client),
    ))
}

fn serve_smol(listener: TcpListener, port: u16, token_url: &str) -> std::io::Result<()> {
    smol::block_on(serve_latchkey(
        latchkey_smol::Smol,
        listener,
        port,
        token_url,
    ))
}

fn serve_tokio(listener: TcpListener, port: u16, token_url: &str) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve_latchkey(
        latchkey_tokio::Tokio,
        listener,
        port,
        token_url,
    ))
}

/// A latchkey service on `runtime`: each `start` starts logins, and a task per login
/// awaits its outcome, as an application would.
async fn serve_latchkey<R: Runtime>(
    runtime: R,
    listener: TcpListener,
    port: u16,
    token_url: &str,
) -> std::io::Result<()> {
    let config = fixtures::config(token_url, port, 4 * fixtures::BATCH);
    let commands = commands();
    let service =
        Service::from_listeners(runtime.clone(), config, vec![listener], latchkey_options()?)
            .map_err(std::io::Error::other)?;
    let outcomes = Arc::new(Outcomes::default());
    say(&format!("port {port}"));
    while let Ok(command) = commands.recv().await {
        if let Some(answer) = answer_common(&command, &outcomes) {
            say(&answer);
            continue;
        }
        let Command::Start(count) = command else {
            continue;
        };
        for _ in 0..count {
            let login = service
                .start(latchkey::FlowOptions::new())
                .map_err(std::io::Error::other)?;
            say(&state_of(login.url().expect("a browser login")));
            let outcomes = Arc::clone(&outcomes);
            runtime.detach(runtime.spawn(async move {
                outcomes.record(login.finished().await.is_ok());
            }));
        }
        say("ok");
    }
    service.shutdown().await;
    Ok(())
}

/// The query of the browser's callback, as axum extracts it.
#[derive(serde::Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
}

/// The oauth2-rs baseline's state: its client, the HTTP client it sends with, the logins
/// waiting for their callback (state → PKCE verifier), and the tokens obtained.
struct Baseline {
    client: fixtures::Oauth2Client,
    http: oauth2::reqwest::Client,
    pending: Mutex<HashMap<String, PkceCodeVerifier>>,
    tokens: Mutex<Vec<oauth2::basic::BasicTokenResponse>>,
    outcomes: Outcomes,
}

/// The baseline's callback handler: what a careful user of oauth2-rs writes. The state must
/// be one this server issued (and is spent), the issuer must match when sent, the code is
/// exchanged with the flow's verifier, the tokens are kept, the browser is redirected.
async fn baseline_callback(
    axum::extract::State(app): axum::extract::State<Arc<Baseline>>,
    axum::extract::Query(query): axum::extract::Query<CallbackQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let bad = |reason: &'static str| (http::StatusCode::BAD_REQUEST, reason).into_response();
    let (Some(code), Some(state)) = (query.code, query.state) else {
        return bad("code and state required");
    };
    let Some(verifier) = app.pending.lock().expect("not poisoned").remove(&state) else {
        return bad("unknown state");
    };
    if query.iss.is_some_and(|iss| iss != fixtures::ISSUER) {
        app.outcomes.record(false);
        return bad("issuer mismatch");
    }
    let result = app
        .client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&app.http)
        .await;
    match result {
        Ok(tokens) => {
            app.tokens.lock().expect("not poisoned").push(tokens);
            app.outcomes.record(true);
            axum::response::Redirect::to(LANDING).into_response()
        }
        Err(_) => {
            app.outcomes.record(false);
            (http::StatusCode::BAD_GATEWAY, "token exchange failed").into_response()
        }
    }
}

/// reqwest as oauth2-rs recommends it for token requests: no redirects followed.
fn reqwest_client() -> std::io::Result<oauth2::reqwest::Client> {
    oauth2::reqwest::Client::builder()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .map_err(std::io::Error::other)
}

fn serve_oauth2(listener: TcpListener, port: u16, token_url: &str) -> std::io::Result<()> {
    let app = Arc::new(Baseline {
        client: fixtures::oauth2_client(token_url, port),
        http: reqwest_client()?,
        pending: Mutex::new(HashMap::new()),
        tokens: Mutex::new(Vec::new()),
        outcomes: Outcomes::default(),
    });
    let router = axum::Router::new()
        .route("/callback", axum::routing::get(baseline_callback))
        .with_state(Arc::clone(&app));
    serve_axum(listener, port, router, &app.outcomes, |count| {
        for _ in 0..count {
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            let (url, state) = app
                .client
                .authorize_url(CsrfToken::new_random)
                .add_scopes(SCOPES.map(|scope| Scope::new(scope.into())))
                .set_pkce_challenge(challenge)
                .url();
            std::hint::black_box(url);
            app.pending
                .lock()
                .expect("not poisoned")
                .insert(state.secret().clone(), verifier);
            say(state.secret());
        }
    })
}

/// Serves `router` on tokio's multi-threaded runtime (a worker per core) and answers the
/// orchestrator's commands; `start(n)` starts n logins and prints their states.
fn serve_axum(
    listener: TcpListener,
    port: u16,
    router: axum::Router,
    outcomes: &Outcomes,
    mut start: impl FnMut(usize),
) -> std::io::Result<()> {
    let commands = commands();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tokio::spawn(async move { axum::serve(listener, router).await });
        say(&format!("port {port}"));
        while let Ok(command) = commands.recv().await {
            if let Some(answer) = answer_common(&command, outcomes) {
                say(&answer);
            } else if let Command::Start(count) = command {
                start(count);
                say("ok");
            }
        }
        Ok(())
    })
}

/// The floor's state: an HTTP client, where to post, and the outcomes.
struct Floor {
    http: oauth2::reqwest::Client,
    token_url: String,
    outcomes: Outcomes,
}

/// A token request body of the usual size, always the same: the floor makes the exchange
/// without any OAuth logic.
const FLOOR_BODY: &str = "grant_type=authorization_code&code=UNEqO-U-qIVYysgkmugXrOxuWkscXyHjL8f1jqQ300a&redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Fcallback&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// The floor's handler: one POST to the token endpoint, its body read, a 303.
async fn floor_callback(
    axum::extract::State(app): axum::extract::State<Arc<Floor>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let response = app
        .http
        .post(&app.token_url)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(FLOOR_BODY)
        .send()
        .await;
    let body = match response {
        Ok(response) => response.bytes().await.ok(),
        Err(_) => None,
    };
    app.outcomes.record(body.is_some());
    match body {
        Some(_) => axum::response::Redirect::to(LANDING).into_response(),
        None => (http::StatusCode::BAD_GATEWAY, "token endpoint failed").into_response(),
    }
}

fn serve_floor(listener: TcpListener, port: u16, token_url: &str) -> std::io::Result<()> {
    let app = Arc::new(Floor {
        http: reqwest_client()?,
        token_url: token_url.to_owned(),
        outcomes: Outcomes::default(),
    });
    let router = axum::Router::new()
        .route("/callback", axum::routing::get(floor_callback))
        .with_state(Arc::clone(&app));
    serve_axum(listener, port, router, &app.outcomes, |count| {
        // No OAuth logic: any state will do.
        for index in 0..count {
            say(&format!("floor{index}"));
        }
    })
}
