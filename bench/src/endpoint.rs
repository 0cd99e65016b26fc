//! A local identity provider for the measurements after the login: a token endpoint and a
//! device authorization endpoint on loopback, on a thread of their own, whose CPU time can
//! be read and subtracted from the process's so that a figure is the client's alone.
//!
//! - `POST /device`: a fresh device code (`dc-1`, `dc-2`, …) with interval 1 s (the
//!   shortest latchkey polls at) and a loopback verification URI;
//! - `POST /token` with `grant_type=urn:ietf:params:oauth:grant-type:device_code`:
//!   `authorization_pending` (HTTP 400, JSON) the first [`EndpointOptions::pending`] times
//!   a device code is polled, then [`DEVICE_TOKENS`];
//! - `POST /token` with any other grant (a refresh, a code exchange): the recorded token
//!   response ([`TOKEN_RESPONSE`]) after [`EndpointOptions::refresh_delay`], as a provider
//!   that takes that long to answer would.
//!
//! Every request is counted by grant; the moment of the latest refresh answer is kept.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::fixtures::TOKEN_RESPONSE;

/// The tokens a device login ends with: an access token, a refresh token, no ID token
/// (the bench provider asks for no `openid` scope).
pub const DEVICE_TOKENS: &str = r#"{"access_token":"ya29.device-bench-access-token-0123456789abcdefghijklmnopqrstuvwxyz","token_type":"Bearer","expires_in":3599,"refresh_token":"1//device-bench-refresh-token-0123456789abcdefghijklmnopqrstuvwxyz","scope":"https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile https://www.googleapis.com/auth/calendar.readonly"}"#;

/// The answer to a device-code poll the user has not approved yet (RFC 8628 §3.5).
pub const PENDING: &str = r#"{"error":"authorization_pending"}"#;

/// How the endpoint behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointOptions {
    /// Polls of each device code answered `authorization_pending` before its tokens.
    pub pending: u32,
    /// How long a refresh (any grant but the device code's) waits before its answer.
    pub refresh_delay: Duration,
}

/// Requests answered so far, by grant.
#[derive(Debug, Default)]
struct Counts {
    device_codes: AtomicU64,
    polls: AtomicU64,
    refreshes: AtomicU64,
}

struct State {
    options: EndpointOptions,
    base: String,
    counts: Counts,
    /// Device codes not yet answered with tokens, and how many pending answers each has left.
    devices: Mutex<HashMap<String, u32>>,
    last_refresh_answer: Mutex<Option<Instant>>,
}

/// The running endpoint; stopped when dropped.
pub struct LocalEndpoint {
    /// The token endpoint's URL.
    pub token_url: String,
    /// The device authorization endpoint's URL.
    pub device_url: String,
    state: Arc<State>,
    /// Asks the endpoint's thread for its CPU time; `None` once stopping.
    cpu: Option<tokio::sync::mpsc::UnboundedSender<std::sync::mpsc::SyncSender<u128>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalEndpoint {
    /// Starts it on an ephemeral loopback port, on a thread of its own.
    pub fn start(options: EndpointOptions) -> std::io::Result<LocalEndpoint> {
        let listener = crate::servers::listener()?;
        let address: SocketAddr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let base = format!("http://{address}");
        let state = Arc::new(State {
            options,
            base: base.clone(),
            counts: Counts::default(),
            devices: Mutex::new(HashMap::new()),
            last_refresh_answer: Mutex::new(None),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (cpu, mut asks) =
            tokio::sync::mpsc::unbounded_channel::<std::sync::mpsc::SyncSender<u128>>();
        let served = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("bench-idp".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let router = axum::Router::new()
                        .route("/token", axum::routing::post(token))
                        .route("/device", axum::routing::post(device))
                        .with_state(served);
                    tokio::spawn(async move { axum::serve(listener, router).await });
                    // Answered on this thread, after whatever it was doing: its CPU so far.
                    while let Some(reply) = asks.recv().await {
                        let _ = reply.send(thread_cpu_nanos());
                    }
                });
            })?;
        Ok(LocalEndpoint {
            token_url: format!("{base}/token"),
            device_url: format!("{base}/device"),
            state,
            cpu: Some(cpu),
            thread: Some(thread),
        })
    }

    /// CPU time the endpoint's thread has used, in nanoseconds. Blocks until that thread
    /// answers: call it outside async code, or from a blocking context.
    pub fn cpu_nanos(&self) -> std::io::Result<u128> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.cpu
            .as_ref()
            .and_then(|cpu| cpu.send(reply).ok())
            .ok_or_else(|| std::io::Error::other("the endpoint stopped"))?;
        answer
            .recv()
            .map_err(|_| std::io::Error::other("the endpoint stopped"))
    }

    /// Device codes issued so far.
    pub fn device_codes(&self) -> u64 {
        self.state.counts.device_codes.load(Ordering::Relaxed)
    }

    /// Device-code polls answered so far.
    pub fn polls(&self) -> u64 {
        self.state.counts.polls.load(Ordering::Relaxed)
    }

    /// Refreshes (requests of any other grant) answered so far.
    pub fn refreshes(&self) -> u64 {
        self.state.counts.refreshes.load(Ordering::Relaxed)
    }

    /// When the latest refresh answer was handed to the HTTP server to send.
    pub fn last_refresh_answer(&self) -> Option<Instant> {
        *self
            .state
            .last_refresh_answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for LocalEndpoint {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop, and the runtime with it.
        self.cpu = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// CPU time the calling thread has used.
pub fn thread_cpu_nanos() -> u128 {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    time.tv_sec as u128 * 1_000_000_000 + time.tv_nsec as u128
}

type Answer = (
    http::StatusCode,
    [(http::HeaderName, &'static str); 2],
    &'static [u8],
);

fn json(status: http::StatusCode, body: &'static [u8]) -> Answer {
    (
        status,
        [
            (http::header::CONTENT_TYPE, "application/json"),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}

async fn token(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    body: String,
) -> Answer {
    let mut grant = None;
    let mut device_code = None;
    for (key, value) in form_urlencoded::parse(body.as_bytes()) {
        match &*key {
            "grant_type" => grant = Some(value.into_owned()),
            "device_code" => device_code = Some(value.into_owned()),
            _ => {}
        }
    }
    if grant.as_deref() == Some("urn:ietf:params:oauth:grant-type:device_code") {
        state.counts.polls.fetch_add(1, Ordering::Relaxed);
        let mut devices = state.devices.lock().unwrap_or_else(PoisonError::into_inner);
        let code = device_code.unwrap_or_default();
        return match devices.get_mut(&code) {
            Some(0) => {
                devices.remove(&code);
                json(http::StatusCode::OK, DEVICE_TOKENS.as_bytes())
            }
            Some(left) => {
                *left -= 1;
                json(http::StatusCode::BAD_REQUEST, PENDING.as_bytes())
            }
            None => json(
                http::StatusCode::BAD_REQUEST,
                br#"{"error":"invalid_grant"}"#,
            ),
        };
    }
    if !state.options.refresh_delay.is_zero() {
        tokio::time::sleep(state.options.refresh_delay).await;
    }
    state.counts.refreshes.fetch_add(1, Ordering::Relaxed);
    *state
        .last_refresh_answer
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    json(http::StatusCode::OK, TOKEN_RESPONSE)
}

async fn device(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
) -> (
    http::StatusCode,
    [(http::HeaderName, &'static str); 2],
    String,
) {
    let number = state.counts.device_codes.fetch_add(1, Ordering::Relaxed) + 1;
    let code = format!("dc-{number}");
    state
        .devices
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(code.clone(), state.options.pending);
    let body = format!(
        r#"{{"device_code":"{code}","user_code":"WDJB-MJHT","verification_uri":"{}/verify","expires_in":1800,"interval":1}}"#,
        state.base
    );
    (
        http::StatusCode::OK,
        [
            (http::header::CONTENT_TYPE, "application/json"),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}
