//! Pending logins shared by replicas through a flow directory, engine by engine and byte by
//! byte: one token request per login however many replicas get its callback (S54), records
//! that never show their secrets (S55) and expire with their login (S56), no token request
//! without a taken record and an unreachable directory that is a `503` and loses nothing
//! (S58); what every answer to a take leads to, foreign and tampered records, the cap on
//! callbacks waiting for the directory, "ended" marks, outcomes announced to the replica
//! that started the login, and the web redirect URI a backend configures. The replicas
//! share `latchkey_io`'s in-memory directory, driven by hand; every instant is set by the
//! test.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latchkey::directory::{Announcement, DirectoryError, FlowKey, FlowRecord, Outcome, Taken};
use latchkey::{
    Action, Config, ConfigError, Engine, FlowError, FlowId, FlowOptions, Provider, Rejection, Step,
    StoreError, TakeId, TokenSet,
};
use latchkey_io::directory::{FlowDirectory, MemoryDirectory};
use latchkey_tests::directory_model::{
    Deployment, EXCHANGE_TIMEOUT, FLOW_LIFETIME, TAMPERED_VERIFIER, WEB_REDIRECT_URI,
};
use latchkey_tests::harness::{
    self, chromium_get, entropy_from, json_response, parse_response, query_value, response_to,
    token_ok, token_request,
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const ISS: &str = "iss=https%3A%2F%2Fidp.example";
const MS: Duration = Duration::from_millis(1);

/// Replicas of one configuration on one clock, sharing one directory.
struct Cluster {
    engines: Vec<Engine>,
    now: Instant,
    wall: SystemTime,
    directory: MemoryDirectory,
    starts: u64,
}

/// A shared login whose browser was opened.
struct Login {
    flow: FlowId,
    key: FlowKey,
    record: FlowRecord,
    state: String,
}

impl Login {
    /// The provider's redirect with a code, as its query.
    fn code(&self) -> String {
        format!("code=c0de&state={}&{ISS}", self.state)
    }

    /// The verifier its record carries.
    fn verifier(&self) -> String {
        record_json(&self.record)["verifier"]
            .as_str()
            .expect("a verifier")
            .to_owned()
    }
}

impl Cluster {
    fn new(config: Config, replicas: usize) -> Cluster {
        Cluster {
            engines: (0..replicas)
                .map(|_| Engine::new(config.clone()).expect("a valid engine"))
                .collect(),
            now: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1_790_000_000),
            directory: MemoryDirectory::new(),
            starts: 0,
        }
    }

    /// Web backends at `https://app.example/callback`.
    fn web(replicas: usize) -> Cluster {
        Cluster::new(Deployment::Web.config(), replicas)
    }

    /// Loopback listeners on `127.0.0.1:8080`.
    fn loopback(replicas: usize) -> Cluster {
        Cluster::new(Deployment::Loopback.config(), replicas)
    }

    fn drain(&mut self, r: usize) -> Vec<Action> {
        std::iter::from_fn(|| self.engines[r].poll_action()).collect()
    }

    /// Starts a shared login on replica `r`: its record stored, its browser opened.
    fn login(&mut self, r: usize, options: FlowOptions) -> Login {
        self.starts += 1;
        let flow = self.engines[r]
            .start_with(
                self.now,
                entropy_from(self.starts),
                options.shared(self.wall),
            )
            .expect("fresh entropy");
        let actions = self.drain(r);
        let [
            Action::ShareFlow {
                key,
                record,
                lifetime,
                ..
            },
        ] = &actions[..]
        else {
            panic!("a shared start emits ShareFlow alone: {actions:?}");
        };
        self.directory
            .share(key, record, *lifetime)
            .expect("in memory");
        self.engines[r].handle_flow_shared(self.now, flow, Ok(()));
        let opened = self.drain(r);
        let [Action::OpenBrowser { url, .. }] = &opened[..] else {
            panic!("a stored record opens the browser: {opened:?}");
        };
        Login {
            flow,
            key: *key,
            record: record.clone(),
            state: query_value(url, "state").expect("a state"),
        }
    }

    /// Hands `query` to replica `r`, which adopts it: the adopting flow and its take.
    fn adopt(&mut self, r: usize, query: &str) -> (FlowId, TakeId, FlowKey) {
        let flow = self.engines[r]
            .handle_redirect(self.now, query)
            .expect("adopted");
        match &self.drain(r)[..] {
            [Action::TakeFlow { flow: f, take, key }] if *f == flow => (flow, *take, *key),
            other => panic!("a callback to adopt emits TakeFlow alone: {other:?}"),
        }
    }

    /// Replica `r` gets the directory's answer to `take` of `key`, taken from it now.
    fn answer(&mut self, r: usize, take: TakeId, key: &FlowKey) -> Vec<Action> {
        let result = self.directory.take(key);
        self.answer_with(r, take, result)
    }

    fn answer_with(
        &mut self,
        r: usize,
        take: TakeId,
        result: Result<Taken, StoreError>,
    ) -> Vec<Action> {
        self.engines[r].handle_flow_taken(self.now, self.wall, take, result);
        self.drain(r)
    }

    /// Replica `r` gets the tokens for its token request among `actions` and stores them:
    /// what it does then.
    fn complete(&mut self, r: usize, actions: &[Action]) -> Vec<Action> {
        let (exchange, _) = token_request(actions).expect("a token request");
        let response = parse_response(&token_ok());
        self.engines[r].handle_token_response(self.now, self.wall, exchange, response);
        let stored = self.drain(r);
        let [Action::Persist { flow, .. }] = &stored[..] else {
            panic!("tokens are stored first: {stored:?}");
        };
        self.engines[r].handle_persisted(self.now, *flow, Ok(()));
        self.drain(r)
    }

    /// Both clocks move by `by`; every replica's actions.
    fn advance(&mut self, by: Duration) -> Vec<Vec<Action>> {
        self.now += by;
        self.wall += by;
        (0..self.engines.len())
            .map(|r| {
                self.engines[r].handle_timeout(self.now);
                self.drain(r)
            })
            .collect()
    }
}

/// The record as JSON.
fn record_json(record: &FlowRecord) -> Value {
    serde_json::from_slice(record.expose_bytes()).expect("a record is JSON")
}

/// How each flow among `actions` finished: its access token, or the error.
fn finished(actions: &[Action]) -> Vec<(FlowId, Result<String, FlowError>)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Finished { flow, result } => Some((
                *flow,
                result
                    .as_ref()
                    .map(|tokens| tokens.access_token().expose_secret().to_owned())
                    .map_err(Clone::clone),
            )),
            _ => None,
        })
        .collect()
}

fn token_requests(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|action| matches!(action, Action::SendTokenRequest { .. }))
        .count()
}

fn refused(rejection: Rejection) -> FlowError {
    FlowError::Directory(DirectoryError::Refused(rejection))
}

/// The token request's `code_verifier`.
fn verifier_sent(actions: &[Action]) -> Option<String> {
    let (_, request) = token_request(actions)?;
    let body = String::from_utf8(request.body().clone()).expect("a form");
    query_value(&body, "code_verifier")
}

// ===== S54: one token request per login =====

#[test]
fn s54_one_callback_at_three_replicas_makes_one_token_request() {
    let mut c = Cluster::web(3);
    let login = c.login(0, FlowOptions::new().owner("alice"));
    // The browser's redirect reaches all three replicas before the directory answers any.
    let takes: Vec<_> = (0..3).map(|r| c.adopt(r, &login.code())).collect();
    assert!(takes.iter().all(|(_, _, key)| *key == login.key));
    let mut requests = 0;
    let mut winner = Vec::new();
    for r in [2, 0, 1] {
        let (flow, take, key) = takes[r];
        let actions = c.answer(r, take, &key);
        requests += token_requests(&actions);
        if r == 2 {
            assert_eq!(token_requests(&actions), 1, "{actions:?}");
            winner = actions;
        } else {
            assert_eq!(
                finished(&actions),
                vec![(flow, Err(refused(Rejection::AlreadyUsed)))]
            );
        }
    }
    assert_eq!(requests, 1);
    // The winner exchanges, stores and announces; the login's replica finishes with it.
    let done = c.complete(2, &winner);
    let announcement = done
        .iter()
        .find_map(|action| match action {
            Action::AnnounceOutcome { announcement } => Some(announcement.clone()),
            _ => None,
        })
        .expect("an announcement");
    assert_eq!(
        announcement.to_bytes(),
        format!("{} stored", login.key).into_bytes()
    );
    assert_eq!(c.engines[1].shared_flow(&login.key), None);
    assert_eq!(c.engines[0].shared_flow(&login.key), Some(login.flow));
    let tokens = TokenSet::new("at-SECRET-1".to_owned().into());
    c.engines[0].handle_outcome(c.now, &login.key, Ok(tokens));
    assert_eq!(
        finished(&c.drain(0)),
        vec![(login.flow, Ok("at-SECRET-1".into()))]
    );
    assert!(
        c.engines
            .iter()
            .all(|engine| engine.flows_in_progress() == 0)
    );
}

#[test]
fn s54_a_callback_for_an_own_shared_flow_is_taken_from_the_directory_first() {
    let mut c = Cluster::loopback(1);
    let login = c.login(0, FlowOptions::new());
    let conn = c.engines[0].handle_accept(c.now).expect("below the cap");
    let request = chromium_get(&format!("/callback?{}", login.code()));
    c.engines[0].handle_bytes(c.now, conn, &request);
    // Not straight to the token endpoint: a new flow takes the record; the browser waits.
    let actions = c.drain(0);
    let [Action::TakeFlow { flow, take, key }] = &actions[..] else {
        panic!("the callback takes the record first: {actions:?}");
    };
    let adopting = *flow;
    assert_ne!(adopting, login.flow);
    assert_eq!(*key, login.key);
    assert_eq!(c.engines[0].flows_in_progress(), 2);
    assert_eq!(c.engines[0].open_connections(), 1);
    let actions = c.answer(0, *take, key);
    assert_eq!(token_requests(&actions), 1, "{actions:?}");
    assert_eq!(verifier_sent(&actions), Some(login.verifier()));
    // Stored once; the login finishes with the very tokens, the browser sees success.
    let done = c.complete(0, &actions);
    let kinds: Vec<String> = done
        .iter()
        .map(|action| match action {
            Action::AnnounceOutcome { announcement } => {
                format!("announce {:?}", announcement.outcome)
            }
            Action::Finished { flow, result } => format!("finished {flow} {}", result.is_ok()),
            Action::Respond { status, .. } => format!("respond {status}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "announce Stored".to_owned(),
            format!("finished {} true", login.flow),
            "respond 200 OK".to_owned(),
            format!("finished {adopting} true"),
        ]
    );
    assert_eq!(
        finished(&done),
        vec![
            (login.flow, Ok("at-SECRET-1".into())),
            (adopting, Ok("at-SECRET-1".into()))
        ]
    );
    let page = response_to(&done, conn).expect("the browser's answer");
    assert_eq!(page.status, 200);
    assert_eq!(c.engines[0].shared_flow(&login.key), None);
}

#[test]
fn s54_a_replay_after_success_is_refused_everywhere() {
    let mut c = Cluster::web(3);
    let login = c.login(0, FlowOptions::new());
    let (_, take, key) = c.adopt(1, &login.code());
    let exchanged = c.answer(1, take, &key);
    c.complete(1, &exchanged);
    c.engines[0].handle_outcome(
        c.now,
        &login.key,
        Ok(TokenSet::new("at-SECRET-1".to_owned().into())),
    );
    assert_eq!(finished(&c.drain(0)).len(), 1);
    // Where the login ran and where it was started, the state is known to be spent.
    for r in [0, 1] {
        assert_eq!(
            c.engines[r].handle_redirect(c.now, &login.code()),
            Err(Rejection::AlreadyUsed),
            "replica {r}"
        );
        assert!(c.drain(r).is_empty());
    }
    // Elsewhere the directory says so, once; then the replica knows it too.
    let (flow, take, key) = c.adopt(2, &login.code());
    let actions = c.answer(2, take, &key);
    assert_eq!(token_requests(&actions), 0);
    assert_eq!(
        finished(&actions),
        vec![(flow, Err(refused(Rejection::AlreadyUsed)))]
    );
    assert_eq!(
        c.engines[2].handle_redirect(c.now, &login.code()),
        Err(Rejection::AlreadyUsed)
    );
}

// ===== S55: the record's secrets =====

/// A log captured from `tracing`.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    /// The process's log from now on, every level: a global subscriber (a scoped one misses
    /// events whose callsites other tests' threads register meanwhile). Other tests' lines
    /// land in it too.
    fn capture() -> Log {
        static LOG: OnceLock<Log> = OnceLock::new();
        LOG.get_or_init(|| {
            let log = Log::default();
            let writer = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
            log
        })
        .clone()
    }

    fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        log.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn s55_the_record_is_redacted_in_debug_and_the_action_log() {
    // ID tokens verified: the record carries the nonce too.
    let provider = Provider::builder(harness::AUTHORIZE, harness::TOKEN, "latchkey-test")
        .scopes(["openid", "email"])
        .issuer(harness::ISSUER)
        .jwks_uri("https://idp.example/jwks")
        .crypto(latchkey_io::crypto::ring())
        .build()
        .expect("a valid provider");
    let config = Config::builder(provider)
        .web_redirect_uri(WEB_REDIRECT_URI)
        .flow_directory(true)
        .build()
        .expect("a valid configuration");
    let mut c = Cluster::new(config, 2);
    let log = Log::capture();
    let code = "SplxlOBeZQQYbYS6WxSbIA";
    let mut seen = Vec::new();
    let flow = c.engines[0]
        .start_with(c.now, entropy_from(1), FlowOptions::new().shared(c.wall))
        .expect("fresh entropy");
    let shared = c.drain(0);
    seen.extend(shared.clone());
    let Some(Action::ShareFlow { key, record, .. }) = shared.first() else {
        panic!("a shared start shares first");
    };
    c.directory
        .share(key, record, FLOW_LIFETIME)
        .expect("in memory");
    c.engines[0].handle_flow_shared(c.now, flow, Ok(()));
    let opened = c.drain(0);
    seen.extend(opened.clone());
    let Some(Action::OpenBrowser { url, .. }) = opened.first() else {
        panic!("then opens the browser");
    };
    let login = Login {
        flow,
        key: *key,
        record: record.clone(),
        state: query_value(url, "state").expect("a state"),
    };
    let query = format!("code={code}&state={}&{ISS}", login.state);
    let adopting = c.engines[1]
        .handle_redirect(c.now, &query)
        .expect("adopted");
    let taking = c.drain(1);
    seen.extend(taking.clone());
    let [Action::TakeFlow { take, key, .. }] = &taking[..] else {
        panic!("{taking:?}");
    };
    let exchanged = c.answer(1, *take, key);
    assert_eq!(token_requests(&exchanged), 1);
    seen.extend(exchanged);
    c.engines[1].cancel(c.now, adopting);
    seen.extend(c.drain(1));
    let contents = record_json(&login.record);
    let secrets = [
        (
            "verifier",
            contents["verifier"].as_str().expect("a verifier"),
        ),
        ("nonce", contents["nonce"].as_str().expect("a nonce")),
        ("state", login.state.as_str()),
        ("code", code),
    ];
    assert_eq!(
        format!("{:?}", login.record),
        format!(
            "FlowRecord {{ len: {} }}",
            login.record.expose_bytes().len()
        )
    );
    let actions: Vec<String> = seen.iter().map(|action| format!("{action:?}")).collect();
    let log = log.text();
    assert!(
        log.contains("flow started") && log.contains("flow finished"),
        "the log was captured: {log}"
    );
    for (what, secret) in secrets {
        assert!(secret.len() >= 20, "{what} is long enough to look for");
        for action in &actions {
            assert!(!action.contains(secret), "{what} in {action}");
        }
        assert!(!log.contains(secret), "{what} in the log");
    }
    assert!(actions.iter().any(|action| action.starts_with("ShareFlow")));
    assert!(actions.iter().any(|action| action.starts_with("TakeFlow")));
}

// ===== S56: expiry =====

#[test]
fn s56_a_record_past_its_deadline_is_refused_even_when_returned() {
    let mut c = Cluster::web(2);
    let login = c.login(0, FlowOptions::new());
    let deadline = c.wall + FLOW_LIFETIME;
    assert_eq!(
        record_json(&login.record)["deadline"],
        json!(deadline.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64)
    );
    // Replica 1 gets the callback late, and a store that ignores its own expiry still
    // hands out the record.
    c.advance(FLOW_LIFETIME - MS);
    let (flow, take, _) = c.adopt(1, &login.code());
    c.now += MS;
    let mut in_time = c.engines[1].clone();
    in_time.handle_flow_taken(
        c.now,
        deadline - MS,
        take,
        Ok(Taken::Record(login.record.clone())),
    );
    let accepted: Vec<Action> = std::iter::from_fn(|| in_time.poll_action()).collect();
    assert_eq!(
        token_requests(&accepted),
        1,
        "a millisecond before: {accepted:?}"
    );
    c.engines[1].handle_flow_taken(c.now, deadline, take, Ok(Taken::Record(login.record)));
    let actions = c.drain(1);
    assert_eq!(token_requests(&actions), 0);
    assert_eq!(
        finished(&actions),
        vec![(flow, Err(FlowError::Directory(DirectoryError::Expired)))]
    );
}

#[test]
fn s56_the_record_expires_with_the_flow_lifetime() {
    let lifetime = Duration::from_secs(300);
    let config = Config::builder(harness::provider().build().expect("a valid provider"))
        .web_redirect_uri(WEB_REDIRECT_URI)
        .flow_directory(true)
        .flow_lifetime(lifetime)
        .build()
        .expect("a valid configuration");
    let mut c = Cluster::new(config, 1);
    let flow = c.engines[0]
        .start_with(
            c.now,
            [7; latchkey::ENTROPY_LEN],
            FlowOptions::new().owner("alice").shared(c.wall),
        )
        .expect("fresh entropy");
    let actions = c.drain(0);
    let [
        Action::ShareFlow {
            key,
            record,
            lifetime: kept,
            ..
        },
    ] = &actions[..]
    else {
        panic!("{actions:?}");
    };
    assert_eq!(*kept, lifetime);
    // 1,790,000,000 s plus 300 s, in milliseconds.
    assert_eq!(
        record_json(record),
        json!({
            "v": 1,
            "client_id": "latchkey-test",
            "token_endpoint": "https://idp.example/token",
            "redirect_uri": "https://app.example/callback",
            "verifier": "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc",
            "owner": "alice",
            "deadline": 1_790_000_300_000_u64,
        })
    );
    let key = *key;
    c.engines[0].handle_flow_shared(c.now, flow, Ok(()));
    assert_eq!(c.drain(0).len(), 1);
    assert!(c.advance(lifetime - MS)[0].is_empty());
    let ended = c.advance(MS).remove(0);
    assert!(matches!(ended[0], Action::SpendFlow { key: spent } if spent == key));
    assert_eq!(
        finished(&ended),
        vec![(flow, Err(FlowError::TimedOut(Step::Callback)))]
    );
}

// ===== S58: an unreachable directory, no token request without a taken record =====

#[test]
fn s58_an_unreachable_directory_refuses_with_503_and_the_same_callback_works_later() {
    let mut c = Cluster::loopback(2);
    let login = c.login(0, FlowOptions::new());
    let request = chromium_get(&format!("/callback?{}", login.code()));
    let conn = c.engines[1].handle_accept(c.now).expect("below the cap");
    c.engines[1].handle_bytes(c.now, conn, &request);
    let actions = c.drain(1);
    let [Action::TakeFlow { flow, take, .. }] = &actions[..] else {
        panic!("{actions:?}");
    };
    let flow = *flow;
    let down = Err(StoreError::new("connection refused"));
    let actions = c.answer_with(1, *take, down);
    let Some(Action::Respond { bytes, .. }) = actions.first() else {
        panic!("{actions:?}");
    };
    assert!(
        bytes.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"),
        "{}",
        String::from_utf8_lossy(bytes)
    );
    assert_eq!(token_requests(&actions), 0);
    assert!(matches!(
        &finished(&actions)[..],
        [(f, Err(FlowError::Directory(DirectoryError::Unavailable(_))))] if *f == flow
    ));
    // The login still waits where it started; nothing was taken.
    assert_eq!(c.engines[0].shared_flow(&login.key), Some(login.flow));
    // The directory is back: the very same request completes.
    c.advance(Duration::from_secs(5));
    let again = c.engines[1].handle_accept(c.now).expect("below the cap");
    c.engines[1].handle_bytes(c.now, again, &request);
    let actions = c.drain(1);
    let [Action::TakeFlow { take, key, .. }] = &actions[..] else {
        panic!("{actions:?}");
    };
    let actions = c.answer(1, *take, key);
    assert_eq!(verifier_sent(&actions), Some(login.verifier()));
    let done = c.complete(1, &actions);
    let page = response_to(&done, again).expect("the browser's answer");
    assert_eq!(page.status, 200);
}

#[test]
fn s58_no_token_request_without_a_taken_record() {
    let answers: [(Option<Result<Taken, StoreError>>, FlowError); 5] = [
        (
            Some(Ok(Taken::Spent { used: true })),
            refused(Rejection::AlreadyUsed),
        ),
        (
            Some(Ok(Taken::Spent { used: false })),
            refused(Rejection::Expired),
        ),
        (Some(Ok(Taken::Missing)), refused(Rejection::UnknownState)),
        (
            Some(Err(StoreError::new("timeout"))),
            FlowError::Directory(DirectoryError::Unavailable(StoreError::new("timeout"))),
        ),
        // No answer within the exchange timeout.
        (None, FlowError::TimedOut(Step::Directory)),
    ];
    for (answer, expected) in answers {
        // On the replica that started the login and on another one.
        for r in [0, 1] {
            let mut c = Cluster::web(2);
            let login = c.login(0, FlowOptions::new());
            let (flow, take, _) = c.adopt(r, &login.code());
            let actions = match answer.clone() {
                Some(result) => c.answer_with(r, take, result),
                None => c.advance(EXCHANGE_TIMEOUT).remove(r),
            };
            assert_eq!(token_requests(&actions), 0, "{answer:?} at {r}");
            assert_eq!(
                finished(&actions),
                vec![(flow, Err(expected.clone()))],
                "{answer:?} at {r}"
            );
            assert_eq!(
                c.engines[0].shared_flow(&login.key),
                Some(login.flow),
                "the login still waits"
            );
        }
    }
}

#[test]
fn s58_a_failed_share_ends_the_login_before_any_browser_is_opened() {
    let mut c = Cluster::web(1);
    let flow = c.engines[0]
        .start_with(c.now, entropy_from(1), FlowOptions::new().shared(c.wall))
        .expect("fresh entropy");
    let shared = c.drain(0);
    assert!(
        matches!(&shared[..], [Action::ShareFlow { .. }]),
        "{shared:?}"
    );
    c.engines[0].handle_flow_shared(c.now, flow, Err(StoreError::new("connection refused")));
    let actions = c.drain(0);
    assert!(
        !actions
            .iter()
            .any(|action| matches!(action, Action::OpenBrowser { .. })),
        "{actions:?}"
    );
    assert!(matches!(
        &finished(&actions)[..],
        [(f, Err(FlowError::Directory(DirectoryError::Unavailable(_))))] if *f == flow
    ));
    // A directory that does not answer in time ends it too; its late answer changes
    // nothing.
    let flow = c.engines[0]
        .start_with(c.now, entropy_from(2), FlowOptions::new().shared(c.wall))
        .expect("fresh entropy");
    assert_eq!(c.drain(0).len(), 1);
    assert!(c.advance(EXCHANGE_TIMEOUT - MS)[0].is_empty());
    let actions = c.advance(MS).remove(0);
    assert!(
        !actions
            .iter()
            .any(|action| matches!(action, Action::OpenBrowser { .. }))
    );
    assert_eq!(
        finished(&actions),
        vec![(flow, Err(FlowError::TimedOut(Step::Directory)))]
    );
    c.engines[0].handle_flow_shared(c.now, flow, Ok(()));
    assert!(c.drain(0).is_empty());
}

// ===== what a record may be =====

#[test]
fn foreign_records_end_the_adopting_flow_without_a_token_request() {
    let other_client = Provider::builder(harness::AUTHORIZE, harness::TOKEN, "other-client")
        .scopes(["openid", "email"])
        .issuer(harness::ISSUER)
        .verify_id_token(false)
        .build()
        .expect("a valid provider");
    let other_endpoint = Provider::builder(
        harness::AUTHORIZE,
        "https://idp.example/other-token",
        "latchkey-test",
    )
    .scopes(["openid", "email"])
    .issuer(harness::ISSUER)
    .verify_id_token(false)
    .build()
    .expect("a valid provider");
    let web = |provider: Provider| {
        Config::builder(provider)
            .web_redirect_uri(WEB_REDIRECT_URI)
            .flow_directory(true)
            .build()
            .expect("a valid configuration")
    };
    let foreign = [
        web(other_client),
        web(other_endpoint),
        // Another redirect URI: a loopback deployment.
        Deployment::Loopback.config(),
    ];
    for config in foreign {
        let mut elsewhere = Cluster::new(config, 1);
        let login = elsewhere.login(0, FlowOptions::new());
        let mut c = Cluster::web(1);
        let (flow, take, _) = c.adopt(0, &login.code());
        let actions = c.answer_with(0, take, Ok(Taken::Record(login.record.clone())));
        assert_eq!(token_requests(&actions), 0);
        assert_eq!(
            finished(&actions),
            vec![(flow, Err(FlowError::Directory(DirectoryError::Foreign)))],
            "{}",
            String::from_utf8_lossy(login.record.expose_bytes())
        );
    }
}

#[test]
fn unreadable_records_end_the_adopting_flow_without_a_token_request() {
    let mut c = Cluster::web(1);
    let login = c.login(0, FlowOptions::new());
    let good = record_json(&login.record);
    let changed = |name: &str, value: Value| {
        let mut record = good.clone();
        record[name] = value;
        serde_json::to_vec(&record).expect("JSON")
    };
    let without = |name: &str| {
        let mut record = good.clone();
        record.as_object_mut().expect("an object").remove(name);
        serde_json::to_vec(&record).expect("JSON")
    };
    let unreadable = [
        b"".to_vec(),
        b"null".to_vec(),
        b"\x93sealed under another key".to_vec(),
        changed("v", json!(2)),
        changed("deadline", json!("soon")),
        changed("owner", json!(7)),
        without("verifier"),
        without("deadline"),
    ];
    for bytes in unreadable {
        let mut c = c_clone(&c);
        let (flow, take, _) = c.adopt(0, &login.code());
        let record = FlowRecord::from_bytes(bytes.clone());
        let actions = c.answer_with(0, take, Ok(Taken::Record(record)));
        assert_eq!(token_requests(&actions), 0);
        assert_eq!(
            finished(&actions),
            vec![(flow, Err(FlowError::Directory(DirectoryError::Unreadable)))],
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

/// A copy of the cluster's engines and clocks, with an empty directory.
fn c_clone(c: &Cluster) -> Cluster {
    Cluster {
        engines: c.engines.clone(),
        now: c.now,
        wall: c.wall,
        directory: MemoryDirectory::new(),
        starts: c.starts,
    }
}

#[test]
fn a_record_tampered_in_its_verifier_is_used_only_when_well_formed() {
    let mut c = Cluster::web(2);
    let login = c.login(0, FlowOptions::new());
    let with_verifier = |verifier: Value| {
        let mut record = record_json(&login.record);
        record["verifier"] = verifier;
        FlowRecord::from_bytes(serde_json::to_vec(&record).expect("JSON"))
    };
    // Well-formed: the flow goes on with it (the provider will refuse the code).
    let mut well_formed = c_clone(&c);
    let (_, take, _) = well_formed.adopt(1, &login.code());
    let actions = well_formed.answer_with(
        1,
        take,
        Ok(Taken::Record(with_verifier(json!(TAMPERED_VERIFIER)))),
    );
    assert_eq!(verifier_sent(&actions).as_deref(), Some(TAMPERED_VERIFIER));
    // Anything else is not a verifier this engine wrote.
    let malformed = [
        json!(&TAMPERED_VERIFIER[..42]),
        json!(format!("{TAMPERED_VERIFIER}x")),
        json!(format!("{}+/", &TAMPERED_VERIFIER[..41])),
        json!(format!("{}=", &TAMPERED_VERIFIER[..42])),
        json!(""),
        json!(7),
    ];
    for verifier in malformed {
        let mut c = c_clone(&c);
        let (flow, take, _) = c.adopt(1, &login.code());
        let actions = c.answer_with(1, take, Ok(Taken::Record(with_verifier(verifier.clone()))));
        assert_eq!(token_requests(&actions), 0, "{verifier}");
        assert_eq!(
            finished(&actions),
            vec![(flow, Err(FlowError::Directory(DirectoryError::Unreadable)))],
            "{verifier}"
        );
    }
}

// ===== the cap on callbacks waiting for the directory =====

#[test]
fn s58_the_1025th_concurrent_unknown_state_callback_is_told_to_try_again() {
    let mut c = Cluster::loopback(1);
    let forged = |n: u32| format!("code=c0de&state=forged-{n}&{ISS}");
    for n in 0..1024 {
        c.engines[0]
            .handle_redirect(c.now, &forged(n))
            .expect("below the cap");
    }
    let takes: Vec<(TakeId, FlowKey)> = c
        .drain(0)
        .into_iter()
        .filter_map(|action| match action {
            Action::TakeFlow { take, key, .. } => Some((take, key)),
            _ => None,
        })
        .collect();
    assert_eq!(takes.len(), 1024);
    assert_eq!(
        c.engines[0].handle_redirect(c.now, &forged(1024)),
        Err(Rejection::Unavailable)
    );
    assert!(c.drain(0).is_empty());
    let conn = c.engines[0].handle_accept(c.now).expect("below the cap");
    let request = chromium_get(&format!("/callback?{}", forged(1024)));
    c.engines[0].handle_bytes(c.now, conn, &request);
    let actions = c.drain(0);
    let page = response_to(&actions, conn).expect("an answer at once");
    assert_eq!(page.status, 503);
    assert_eq!(actions.len(), 1);
    // One take answered: room for one more.
    let (take, key) = takes[0];
    c.answer(0, take, &key);
    c.engines[0]
        .handle_redirect(c.now, &forged(1024))
        .expect("room again");
}

// ===== "ended" marks =====

#[test]
fn an_own_shared_login_that_ends_before_its_callback_leaves_an_ended_mark() {
    let mut c = Cluster::web(2);
    let cancelled = c.login(0, FlowOptions::new());
    let superseded = c.login(0, FlowOptions::new().owner("alice"));
    let timed_out = c.login(0, FlowOptions::new().owner("bob"));
    let spent = |actions: &[Action]| -> Vec<FlowKey> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::SpendFlow { key } => Some(*key),
                _ => None,
            })
            .collect()
    };
    let mut marks = Vec::new();
    c.engines[0].cancel(c.now, cancelled.flow);
    let actions = c.drain(0);
    assert_eq!(spent(&actions), vec![cancelled.key]);
    assert_eq!(
        finished(&actions),
        vec![(cancelled.flow, Err(FlowError::Cancelled))]
    );
    marks.extend(spent(&actions));
    c.engines[0]
        .start_with(
            c.now,
            entropy_from(99),
            FlowOptions::new().owner("alice").shared(c.wall),
        )
        .expect("fresh entropy");
    let actions = c.drain(0);
    assert_eq!(spent(&actions), vec![superseded.key]);
    assert_eq!(
        finished(&actions),
        vec![(superseded.flow, Err(FlowError::Superseded))]
    );
    marks.extend(spent(&actions));
    let actions = c.advance(FLOW_LIFETIME).remove(0);
    assert!(spent(&actions).contains(&timed_out.key), "{actions:?}");
    assert!(
        finished(&actions).contains(&(timed_out.flow, Err(FlowError::TimedOut(Step::Callback))))
    );
    marks.extend(spent(&actions));
    // The directory keeps each mark until the record would have expired (in real time
    // here): a late callback on another replica is told the login expired.
    for key in &marks {
        c.directory.spend(key).expect("in memory");
    }
    for login in [&cancelled, &superseded] {
        let (flow, take, key) = c.adopt(1, &login.code());
        let actions = c.answer(1, take, &key);
        assert_eq!(
            finished(&actions),
            vec![(flow, Err(refused(Rejection::Expired)))]
        );
    }
}

// ===== outcomes =====

#[test]
fn an_announced_outcome_finishes_the_login_where_it_started() {
    let mut c = Cluster::web(2);
    // Stored elsewhere: the login finishes with the tokens read back, without storing.
    let stored = c.login(0, FlowOptions::new().owner("alice"));
    let (_, take, key) = c.adopt(1, &stored.code());
    let exchanged = c.answer(1, take, &key);
    let done = c.complete(1, &exchanged);
    let Some(Action::AnnounceOutcome { announcement }) = done.first() else {
        panic!("{done:?}");
    };
    let heard = Announcement::parse(&announcement.to_bytes()).expect("an announcement");
    assert_eq!(heard.outcome, Outcome::Stored);
    let holder = c.engines[0].shared_flow(&heard.key);
    assert_eq!(holder, Some(stored.flow));
    let tokens = TokenSet::new("at-read-back".to_owned().into());
    c.engines[0].handle_outcome(c.now, &heard.key, Ok(tokens));
    assert_eq!(
        finished(&c.drain(0)),
        vec![(stored.flow, Ok("at-read-back".into()))]
    );
    // Failed elsewhere: the login fails with the reason.
    let failed = c.login(0, FlowOptions::new());
    let (_, take, key) = c.adopt(1, &failed.code());
    let exchanged = c.answer(1, take, &key);
    let (exchange, _) = token_request(&exchanged).expect("a token request");
    let rejected = json_response(400, r#"{"error":"invalid_grant"}"#);
    c.engines[1].handle_token_response(c.now, c.wall, exchange, parse_response(&rejected));
    let done = c.drain(1);
    let Some(Action::AnnounceOutcome { announcement }) = done.first() else {
        panic!("{done:?}");
    };
    let [(_, Err(error))] = &finished(&done)[..] else {
        panic!("{done:?}");
    };
    let reason = error.to_string();
    assert_eq!(
        announcement.to_bytes(),
        format!("{} failed {reason}", failed.key).into_bytes()
    );
    let heard = Announcement::parse(&announcement.to_bytes()).expect("an announcement");
    let Outcome::Failed(said) = heard.outcome else {
        panic!("{heard:?}");
    };
    c.engines[0].handle_outcome(c.now, &heard.key, Err(FlowError::FailedElsewhere(said)));
    assert_eq!(
        finished(&c.drain(0)),
        vec![(failed.flow, Err(FlowError::FailedElsewhere(reason)))]
    );
}

#[test]
fn an_announcement_for_a_key_nobody_holds_changes_nothing() {
    let mut c = Cluster::web(2);
    let login = c.login(0, FlowOptions::new());
    let unknown = FlowKey::from_bytes([9; 32]);
    let outcomes = || {
        [
            Ok(TokenSet::new("at-forged".to_owned().into())),
            Err(FlowError::FailedElsewhere("forged".into())),
        ]
    };
    for result in outcomes() {
        c.engines[0].handle_outcome(c.now, &unknown, result.clone());
        // Replica 1 does not hold the login.
        c.engines[1].handle_outcome(c.now, &login.key, result);
    }
    assert!(c.drain(0).is_empty() && c.drain(1).is_empty());
    assert_eq!(c.engines[0].shared_flow(&unknown), None);
    assert_eq!(c.engines[1].shared_flow(&login.key), None);
    assert_eq!(c.engines[0].shared_flow(&login.key), Some(login.flow));
    // Once the login ended, its own key is nobody's either.
    c.engines[0].cancel(c.now, login.flow);
    assert_eq!(finished(&c.drain(0)).len(), 1);
    for result in outcomes() {
        c.engines[0].handle_outcome(c.now, &login.key, result);
    }
    assert!(c.drain(0).is_empty());
}

// ===== configuration =====

#[test]
fn web_redirect_uris_must_be_https_or_loopback_http_without_fragment_or_userinfo() {
    let build = |uri: &str| {
        Config::builder(harness::provider().build().expect("a valid provider"))
            .web_redirect_uri(uri)
            .flow_directory(true)
            .build()
    };
    for good in [
        "https://app.example/callback",
        "https://app.example:8443/auth/callback?tenant=7",
        "HTTPS://APP.EXAMPLE/callback",
        "http://127.0.0.1:8080/callback",
        "http://localhost/callback",
        "http://[::1]:9000/callback",
    ] {
        let config = build(good).unwrap_or_else(|error| panic!("{good}: {error}"));
        let engine = Engine::new(config).expect("a valid engine");
        assert_eq!(engine.redirect_uri(), good);
    }
    for bad in [
        "http://app.example/callback",
        "http://10.0.0.7/callback",
        "https://app.example/callback#done",
        "https://user@app.example/callback",
        "https://user:secret@app.example/callback",
        "ftp://app.example/callback",
        "app.example/callback",
        "https:///callback",
        "https://app .example/callback",
        "docker-desktop://dashboard/callback",
    ] {
        assert_eq!(
            build(bad).err(),
            Some(ConfigError::InvalidAppRedirect),
            "{bad}"
        );
    }
}
