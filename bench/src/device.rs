//! Device logins (RFC 8628): the CPU time one poll of the token endpoint costs while the
//! user has not approved yet, through latchkey and through oauth2-rs 5's device flow.
//!
//! Each device login here polls [`POLLS`] times: `authorization_pending` until the last
//! poll, which brings the tokens ([`DEVICE_TOKENS`]). The device code itself is asked for
//! before the clock starts on both sides; the figure is the CPU of every poll of the login,
//! the last one's tokens included, divided by the number of polls.
//!
//! In process, no sockets: both sides get a clone of the same `http::Response` per poll.
//!
//! - latchkey: one long-lived [`Engine`]; a round starts `count` device logins and answers
//!   their device-code requests, then, on the clock, moves its virtual time on by the
//!   interval the provider named, so that the engine's timers fire
//!   ([`Engine::handle_timeout`]): each due login emits its token request
//!   ([`Action::SendTokenRequest`], the request built: form body, HTTP Basic), gets the
//!   answer ([`Engine::handle_token_response`]: status, JSON, `authorization_pending`
//!   recognised, next poll scheduled one interval later); the last poll's tokens are
//!   parsed, persisted ([`Action::Persist`], confirmed at once) and handed out
//!   ([`Action::Finished`]). The engine enforces the interval (at least one second) on
//!   virtual time, so nothing sleeps.
//! - oauth2-rs: `exchange_device_access_token(..).request(client, sleep, None)` per login,
//!   with a sleep that returns at once and an HTTP client closure that answers each
//!   request with the clone: each poll builds the request, reads the clock (its expiry
//!   check), deserialises the answer into its error type, and loops.
//!
//! Over loopback, against [`LocalEndpoint`] (its own thread; its CPU is subtracted):
//!
//! - latchkey: a tokio [`Service`] (built-in HTTP client, tokens in memory) runs `count`
//!   device logins side by side, their starts spread over half a second (as users come);
//!   the clock starts once each has shown its user code and stops once each has finished.
//!   The service waits the interval (1 s) between polls, as the RFC requires, on real
//!   time; its CPU while waiting is counted too. A round that takes far longer than its
//!   polls (a poll not sent when due) is reported as a warning.
//! - oauth2-rs: `count` tasks on the same runtime, starting to poll as spread out as
//!   latchkey's logins, each polling through reqwest, once with a sleep that returns at
//!   once (so it polls as fast as the endpoint answers), once with `tokio::time::sleep` of
//!   the interval, as a program would, so that both sides wake up from idle for every poll.
//!
//! The sides take turns round by round (each round starts with another); the report gives
//! the median of the per-round ratios.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use latchkey::{Action, Config, Engine, FlowOptions, Provider};
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::proxy::Proxy;
use latchkey_io::service::{LoginEvent, Service, ServiceOptions};
use latchkey_io::store::MemoryStore;
use latchkey_io::transport::Transport;
use latchkey_tokio::Tokio;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, ClientId, ClientSecret, DeviceAuthorizationUrl, EndpointNotSet, EndpointSet, Scope,
    StandardDeviceAuthorizationResponse, TokenUrl,
};
use secrecy::SecretString;

use crate::endpoint::{DEVICE_TOKENS, EndpointOptions, LocalEndpoint, PENDING};
use crate::fixtures::{AUTHORIZE_URL, CLIENT_ID, CLIENT_SECRET, ISSUER, SCOPES, TOKEN_URL};
use crate::servers::process_cpu_nanos;

/// Polls per device login in process: nine `authorization_pending`, then the tokens.
pub const POLLS: u32 = 10;
/// Polls per device login over loopback (each waits one second in latchkey's service).
pub const POLLS_END_TO_END: u32 = 3;
/// The device authorization endpoint of the in-process measurement (never contacted).
const DEVICE_URL: &str = "http://127.0.0.1:9010/device";
/// The interval the in-process device-code answer names.
const INTERVAL: Duration = Duration::from_secs(5);
/// Over loopback, the service's logins start spread over this much time.
const STAGGER: Duration = Duration::from_millis(500);
/// How long the service's polls of one login take: the endpoint names an interval of 1 s.
const EXPECTED_POLLING: Duration = Duration::from_secs(POLLS_END_TO_END as u64);

type Error = Box<dyn std::error::Error>;

/// How much to run.
#[derive(Debug, Clone, Copy)]
pub struct DevicePlan {
    /// Rounds in process.
    pub rounds: usize,
    /// Device logins per side and round in process.
    pub logins: usize,
    /// Rounds over loopback.
    pub rounds_end_to_end: usize,
    /// Device logins at once per side and round over loopback.
    pub logins_end_to_end: usize,
}

/// CPU nanoseconds per poll, one figure per round, per side and setting.
#[derive(Debug, Clone, Default)]
pub struct DeviceResult {
    /// Device logins per side and round in process, of [`POLLS`] polls each.
    pub logins: usize,
    /// latchkey's engine, in process.
    pub engine: Vec<f64>,
    /// oauth2-rs with a canned-answer client, in process.
    pub oauth2: Vec<f64>,
    /// Device logins per side and round over loopback, of [`POLLS_END_TO_END`] polls each.
    pub logins_end_to_end: usize,
    /// latchkey's tokio service over loopback (the endpoint's CPU subtracted).
    pub service: Vec<f64>,
    /// oauth2-rs + reqwest over loopback, polling as fast as the endpoint answers (the
    /// endpoint's CPU subtracted).
    pub oauth2_reqwest: Vec<f64>,
    /// The same, sleeping the interval (1 s) between polls as latchkey does.
    pub oauth2_sleeping: Vec<f64>,
}

/// Runs both measurements.
pub fn measure(plan: DevicePlan, progress: &mut dyn FnMut(&str)) -> Result<DeviceResult, Error> {
    let mut result = DeviceResult {
        logins: plan.logins,
        logins_end_to_end: plan.logins_end_to_end,
        ..DeviceResult::default()
    };
    let mut engine = EngineSide::new()?;
    let oauth2 = Oauth2Side::new()?;
    // One round each first: lazily built state is not per-poll cost.
    engine.round(plan.logins.min(100))?;
    oauth2.round(plan.logins.min(100))?;
    for round in 0..plan.rounds {
        for side in 0..2 {
            if (round + side) % 2 == 0 {
                result.engine.push(engine.round(plan.logins)?);
            } else {
                result.oauth2.push(oauth2.round(plan.logins)?);
            }
        }
    }
    progress(&format!(
        "device polls in process: {} rounds measured",
        plan.rounds
    ));
    end_to_end(plan, &mut result, progress)?;
    Ok(result)
}

/// The bench provider with a device authorization endpoint.
pub fn provider(token_url: &str, device_url: &str) -> Result<Provider, Error> {
    Ok(Provider::builder(AUTHORIZE_URL, token_url, CLIENT_ID)
        .client_secret(SecretString::from(CLIENT_SECRET))
        .client_auth(latchkey::ClientAuth::SecretBasic)
        .scopes(SCOPES)
        .issuer(ISSUER)
        .device_authorization_endpoint(device_url)
        .build()?)
}

/// oauth2-rs's client with the same settings and a device authorization endpoint.
type DeviceClient =
    BasicClient<EndpointSet, EndpointSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

fn oauth2_client(token_url: &str, device_url: &str) -> Result<DeviceClient, Error> {
    Ok(BasicClient::new(ClientId::new(CLIENT_ID.into()))
        .set_client_secret(ClientSecret::new(CLIENT_SECRET.into()))
        .set_auth_uri(AuthUrl::new(AUTHORIZE_URL.into())?)
        .set_token_uri(TokenUrl::new(token_url.into())?)
        .set_device_authorization_url(DeviceAuthorizationUrl::new(device_url.into())?))
}

fn scopes() -> impl Iterator<Item = Scope> {
    SCOPES.into_iter().map(|scope| Scope::new(scope.into()))
}

fn json_response(status: u16, body: &str) -> Result<http::Response<Vec<u8>>, Error> {
    Ok(http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body.as_bytes().to_vec())?)
}

/// The canned answers of the in-process measurement.
struct Answers {
    code: http::Response<Vec<u8>>,
    pending: http::Response<Vec<u8>>,
    tokens: http::Response<Vec<u8>>,
}

impl Answers {
    fn new() -> Result<Answers, Error> {
        let code = format!(
            r#"{{"device_code":"GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS","user_code":"WDJB-MJHT","verification_uri":"https://idp.example/device","expires_in":1800,"interval":{}}}"#,
            INTERVAL.as_secs()
        );
        Ok(Answers {
            code: json_response(200, &code)?,
            pending: json_response(400, PENDING)?,
            tokens: json_response(200, DEVICE_TOKENS)?,
        })
    }
}

/// latchkey's engine in steady state, on virtual time.
struct EngineSide {
    engine: Engine,
    now: Instant,
    wall: SystemTime,
    answers: Answers,
}

impl EngineSide {
    fn new() -> Result<EngineSide, Error> {
        // Device logins need no listener: the redirect port may stay unresolved.
        let config = Config::builder(provider(TOKEN_URL, DEVICE_URL)?).build()?;
        Ok(EngineSide {
            engine: Engine::new(config)?,
            now: Instant::now(),
            wall: SystemTime::now(),
            answers: Answers::new()?,
        })
    }

    /// `count` device logins polled to the end; CPU nanoseconds per poll.
    fn round(&mut self, count: usize) -> Result<f64, Error> {
        let engine = &mut self.engine;
        for _ in 0..count {
            engine.start_device(self.now, FlowOptions::new())?;
            let Some(Action::RequestDeviceCode { exchange, .. }) = engine.poll_action() else {
                return Err("expected the device-code request".into());
            };
            engine.handle_token_response(self.now, self.wall, exchange, self.answers.code.clone());
            let Some(Action::ShowUserCode { .. }) = engine.poll_action() else {
                return Err("expected the user code".into());
            };
        }
        let mut polls = 0u64;
        let mut finished = 0usize;
        let started = process_cpu_nanos();
        for poll in 1..=POLLS {
            self.now += INTERVAL;
            self.wall += INTERVAL;
            engine.handle_timeout(self.now);
            let answer = if poll == POLLS {
                &self.answers.tokens
            } else {
                &self.answers.pending
            };
            while let Some(action) = engine.poll_action() {
                match action {
                    Action::SendTokenRequest {
                        exchange, request, ..
                    } => {
                        std::hint::black_box(request);
                        polls += 1;
                        engine.handle_token_response(self.now, self.wall, exchange, answer.clone());
                    }
                    Action::Persist { flow, tokens } => {
                        std::hint::black_box(tokens);
                        engine.handle_persisted(self.now, flow, Ok(()));
                    }
                    Action::Finished { result, .. } => {
                        std::hint::black_box(result?);
                        finished += 1;
                    }
                    other => return Err(format!("unexpected {other:?}").into()),
                }
            }
        }
        let spent = process_cpu_nanos() - started;
        if finished != count || polls != count as u64 * u64::from(POLLS) {
            return Err(format!(
                "latchkey: {finished} of {count} device logins finished after {polls} polls"
            )
            .into());
        }
        Ok(spent as f64 / polls as f64)
    }
}

/// oauth2-rs's device flow with a client closure answering from memory.
struct Oauth2Side {
    client: DeviceClient,
    details: StandardDeviceAuthorizationResponse,
    answers: Answers,
}

impl Oauth2Side {
    fn new() -> Result<Oauth2Side, Error> {
        let client = oauth2_client(TOKEN_URL, DEVICE_URL)?;
        let answers = Answers::new()?;
        let code = |_request: oauth2::HttpRequest| -> Result<oauth2::HttpResponse, std::io::Error> {
            Ok(answers.code.clone())
        };
        let details = client
            .exchange_device_code()
            .add_scopes(scopes())
            .request(&code)
            .map_err(|error| format!("oauth2-rs device code: {error}"))?;
        Ok(Oauth2Side {
            client,
            details,
            answers,
        })
    }

    /// `count` device logins polled to the end; CPU nanoseconds per poll.
    fn round(&self, count: usize) -> Result<f64, Error> {
        let calls = std::cell::Cell::new(0u64);
        let http = |_request: oauth2::HttpRequest| -> Result<oauth2::HttpResponse, std::io::Error> {
            let call = calls.get() + 1;
            calls.set(call);
            Ok(if call.is_multiple_of(u64::from(POLLS)) {
                self.answers.tokens.clone()
            } else {
                self.answers.pending.clone()
            })
        };
        let started = process_cpu_nanos();
        for _ in 0..count {
            let tokens = self
                .client
                .exchange_device_access_token(&self.details)
                .request(&http, |_| {}, None)
                .map_err(|error| format!("oauth2-rs device poll: {error}"))?;
            std::hint::black_box(tokens);
        }
        let spent = process_cpu_nanos() - started;
        let polls = calls.get();
        if polls != count as u64 * u64::from(POLLS) {
            return Err(format!("oauth2-rs: {polls} polls for {count} device logins").into());
        }
        Ok(spent as f64 / polls as f64)
    }
}

/// The loopback half: latchkey's tokio service against oauth2-rs + reqwest.
fn end_to_end(
    plan: DevicePlan,
    result: &mut DeviceResult,
    progress: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let endpoint = LocalEndpoint::start(EndpointOptions {
        pending: POLLS_END_TO_END - 1,
        refresh_delay: Duration::ZERO,
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let config = Config::builder(provider(&endpoint.token_url, &endpoint.device_url)?).build()?;
    let client = HttpClient::new(HttpOptions {
        proxy: Proxy::none(),
        ..HttpOptions::default()
    })?;
    let options = ServiceOptions::new(Arc::new(MemoryStore::default()), Transport::Builtin(client));
    let service = runtime.block_on(async { Service::unbound(Tokio, config, options) })?;
    let oauth2 = Arc::new(oauth2_client(&endpoint.token_url, &endpoint.device_url)?);
    let http = oauth2::reqwest::Client::builder()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    let count = plan.logins_end_to_end;
    let warm_up = count.min(10);
    latchkey_round(&runtime, &service, &endpoint, warm_up)?;
    oauth2_round(&runtime, &oauth2, &http, &endpoint, warm_up, false)?;
    for round in 0..plan.rounds_end_to_end {
        progress(&format!(
            "device polls over loopback: round {} of {}",
            round + 1,
            plan.rounds_end_to_end
        ));
        for side in 0..3 {
            match (round + side) % 3 {
                0 => {
                    let nanos = latchkey_round(&runtime, &service, &endpoint, count)?;
                    result.service.push(nanos);
                }
                1 => {
                    let nanos = oauth2_round(&runtime, &oauth2, &http, &endpoint, count, false)?;
                    result.oauth2_reqwest.push(nanos);
                }
                _ => {
                    let nanos = oauth2_round(&runtime, &oauth2, &http, &endpoint, count, true)?;
                    result.oauth2_sleeping.push(nanos);
                }
            }
        }
    }
    runtime.block_on(service.shutdown());
    Ok(())
}

/// CPU of this process less the endpoint's, read together.
fn client_cpu(endpoint: &LocalEndpoint) -> Result<(u128, u128), Error> {
    Ok((process_cpu_nanos(), endpoint.cpu_nanos()?))
}

fn per_poll(
    endpoint: &LocalEndpoint,
    before: (u128, u128),
    polls_before: u64,
    count: usize,
    side: &str,
) -> Result<f64, Error> {
    let (process, idp) = client_cpu(endpoint)?;
    let polls = endpoint.polls() - polls_before;
    let expected = count as u64 * u64::from(POLLS_END_TO_END);
    if polls != expected {
        return Err(format!(
            "{side}: the token endpoint saw {polls} polls for {count} device logins of \
             {POLLS_END_TO_END}"
        )
        .into());
    }
    let spent = (process - before.0).saturating_sub(idp - before.1);
    Ok(spent as f64 / polls as f64)
}

fn latchkey_round(
    runtime: &tokio::runtime::Runtime,
    service: &Service<Tokio>,
    endpoint: &LocalEndpoint,
    count: usize,
) -> Result<f64, Error> {
    let started = Instant::now();
    let logins = runtime.block_on(async {
        let mut logins = Vec::with_capacity(count);
        for index in 0..count {
            // Started apart, so that no two polls fall due together (see the module docs).
            let at = started + STAGGER.mul_f64(index as f64 / count as f64);
            tokio::time::sleep_until(at.into()).await;
            logins.push(service.start_device(FlowOptions::new())?);
        }
        for login in &logins {
            loop {
                match login.next_event().await {
                    Some(LoginEvent::UserCode(_)) => break,
                    Some(LoginEvent::Finished(result)) => {
                        return Err(format!("a device login ended early: {result:?}").into());
                    }
                    Some(_) => {}
                    None => return Err("the service stopped".into()),
                }
            }
        }
        Ok::<_, Error>(logins)
    })?;
    let before = client_cpu(endpoint)?;
    let polls_before = endpoint.polls();
    runtime.block_on(async {
        for login in logins {
            std::hint::black_box(login.finished().await?);
        }
        Ok::<_, Error>(())
    })?;
    let took = started.elapsed();
    if took > STAGGER + EXPECTED_POLLING + Duration::from_secs(5) {
        eprintln!(
            "latchkey-bench: warning: {count} device logins through the service took {took:?}: \
             polls that fell due together were probably lost and retried after the exchange \
             timeout (see the device module's docs)"
        );
    }
    per_poll(endpoint, before, polls_before, count, "latchkey")
}

/// oauth2-rs's round: `count` device logins at once, each sleeping the interval between
/// polls when `sleeping`, not at all otherwise.
fn oauth2_round(
    runtime: &tokio::runtime::Runtime,
    client: &Arc<DeviceClient>,
    http: &oauth2::reqwest::Client,
    endpoint: &LocalEndpoint,
    count: usize,
    sleeping: bool,
) -> Result<f64, Error> {
    let details = runtime.block_on(async {
        let mut tasks = Vec::with_capacity(count);
        for _ in 0..count {
            let (client, http) = (Arc::clone(client), http.clone());
            tasks.push(tokio::spawn(async move {
                client
                    .exchange_device_code()
                    .add_scopes(scopes())
                    .request_async(&http)
                    .await
                    .map_err(|error| format!("oauth2-rs device code: {error}"))
            }));
        }
        let mut details: Vec<StandardDeviceAuthorizationResponse> = Vec::with_capacity(count);
        for task in tasks {
            details.push(task.await??);
        }
        Ok::<_, Error>(details)
    })?;
    let before = client_cpu(endpoint)?;
    let polls_before = endpoint.polls();
    runtime.block_on(async {
        let started = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(count);
        for (index, details) in details.into_iter().enumerate() {
            let (client, http) = (Arc::clone(client), http.clone());
            // Spread as latchkey's logins are, so that neither side polls in bursts.
            let at = started + STAGGER.mul_f64(index as f64 / count as f64);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let request = client.exchange_device_access_token(&details);
                let answer = if sleeping {
                    request.request_async(&http, tokio::time::sleep, None).await
                } else {
                    request
                        .request_async(&http, |_| std::future::ready(()), None)
                        .await
                };
                answer
                    .map(drop)
                    .map_err(|error| format!("oauth2-rs device poll: {error}"))
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok::<_, Error>(())
    })?;
    per_poll(endpoint, before, polls_before, count, "oauth2-rs")
}
