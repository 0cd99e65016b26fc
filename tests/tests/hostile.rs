//! Bounded hostile-load tests of the two async drivers, `latchkey-smol` and `latchkey-tokio`:
//! a slowloris crowd and a flood of junk requests against the loopback listener while a
//! real login (the development identity provider and its scripted user agent) completes.
//!
//! Everything is bounded: connection counts are fixed, every loop has a deadline, every
//! wait is raced against one, and the tests stop by themselves. Network traffic is loopback
//! only.
//!
//! Both tests measure the whole process (its resident memory, its open file descriptors),
//! so they take [`SERIAL`] before their runtime exists and run one at a time; other test
//! binaries are other processes.
//!
//! The third hostile scenario, a token-writing process killed with SIGKILL 200 times, is
//! `s39_no_partial_file_after_a_crash` in `io-shared/tests/store.rs`.

#[macro_use]
mod support;

use support::within;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use latchkey::{ClientAuth, Config, FlowError, FlowOptions, Landing, Limits, Provider, TokenSet};
use latchkey_devidp::DevIdp;
use latchkey_devidp::agent;
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::proxy::Proxy;
use latchkey_io::runtime::Runtime;
use latchkey_io::service::{Elapsed, Login, LoginEvent, Service, ServiceOptions};
use latchkey_io::store::{DEFAULT_KEY, MemoryStore, TokenStore};
use latchkey_io::transport::Transport;
use smol::future;

const CLIENT_ID: &str = "latchkey-hostile";
const SCOPES: [&str; 2] = ["openid", "profile"];
const CALLBACK_PATH: &str = "/callback";
const LANDING: &str = "docker-desktop://dashboard/open";

/// The longest any one step (a login's outcome, a shutdown) may take.
const STEP: Duration = Duration::from_secs(5);
/// The longest a whole scenario may take.
const SCENARIO: Duration = Duration::from_secs(60);

/// Held by each test for its whole duration, taken before its runtime is built: the memory
/// and file descriptor counts are process-wide, so the tests must not overlap, and a test
/// waiting for its turn must not hold a runtime's descriptors meanwhile (a tokio runtime
/// built while another test counted was once seen as nine descriptors leaked).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `test` alone.
fn serially(test: impl FnOnce()) {
    // A test that failed while holding it leaves nothing half-done for the next.
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    test();
}

// ----- running a scenario on both drivers, one test at a time -----

mod slowloris {
    #[test]
    fn smol() {
        super::serially(|| crate::support::run_smol(super::slowloris, super::SCENARIO));
    }

    #[test]
    fn tokio() {
        super::serially(|| crate::support::run_tokio(super::slowloris, super::SCENARIO));
    }
}

mod flood {
    #[test]
    fn smol() {
        super::serially(|| crate::support::run_smol(super::flood, super::SCENARIO));
    }

    #[test]
    fn tokio() {
        super::serially(|| crate::support::run_tokio(super::flood, super::SCENARIO));
    }
}

// ----- the fixture -----

/// A running identity provider and a latchkey service configured for it.
struct Fixture<R: Runtime> {
    idp: DevIdp,
    service: Service<R>,
    store: Arc<MemoryStore>,
    port: u16,
}

/// Binds the listener first to learn its port, registers that redirect URI for a public
/// client at the identity provider, and starts the service on the listener with `limits`.
fn start<R: Runtime>(rt: &R, limits: Limits) -> Fixture<R> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the listener");
    let port = listener.local_addr().expect("local address").port();
    let client = latchkey_devidp::Client {
        id: CLIENT_ID.into(),
        secret: None,
        auth: latchkey_devidp::ClientAuth::None,
        redirect_uris: vec![format!("http://127.0.0.1:{port}{CALLBACK_PATH}")],
    };
    let idp = DevIdp::start(
        latchkey_devidp::Config::new(vec![client]),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )
    .expect("start the identity provider");
    let provider = Provider::builder(
        idp.authorization_endpoint(),
        idp.token_endpoint(),
        CLIENT_ID,
    )
    .scopes(SCOPES)
    .issuer(idp.issuer())
    .require_iss(true)
    .jwks_uri(idp.jwks_uri())
    .crypto(latchkey_io::crypto::ring())
    .client_auth(ClientAuth::None)
    .build()
    .expect("provider");
    let config = Config::builder(provider)
        .redirect_uri("127.0.0.1", port, CALLBACK_PATH)
        .on_success(Landing::Redirect(LANDING.into()))
        .limits(limits)
        .build()
        .expect("config");
    let client = HttpClient::new(HttpOptions {
        proxy: Proxy::none(),
        ..HttpOptions::default()
    })
    .expect("HTTP client");
    let store = Arc::new(MemoryStore::default());
    let options = ServiceOptions::new(store.clone(), Transport::Builtin(client));
    let service = Service::from_listeners(rt.clone(), config, vec![listener], options)
        .expect("start the service");
    Fixture {
        idp,
        service,
        store,
        port,
    }
}

/// Every event of `login` up to and including `Finished`, within [`STEP`].
async fn events<R: Runtime>(rt: &R, login: &Login) -> Vec<LoginEvent> {
    let deadline = Instant::now() + STEP;
    let mut events = Vec::new();
    loop {
        match login.next_event_by(rt, deadline).await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return events,
            Err(Elapsed) => panic!("the login did not finish within {STEP:?}: {events:?}"),
        }
    }
}

/// Checks that the browser was sent to `landing`, that the login finished exactly once and successfully,
/// with exactly one token request at the identity provider, and that the tokens are stored.
async fn assert_one_success<R: Runtime>(
    rt: &R,
    fx: &Fixture<R>,
    login: &Login,
    landing: Option<&str>,
) {
    assert_eq!(landing, Some(LANDING), "where the browser ended");
    let events = events(rt, login).await;
    let finished: Vec<&Result<TokenSet, FlowError>> = events
        .iter()
        .filter_map(|event| match event {
            LoginEvent::Finished(result) => Some(result),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1, "exactly one outcome: {events:?}");
    assert!(finished[0].is_ok(), "the login succeeds: {events:?}");
    assert_eq!(fx.idp.stats().token_requests, 1);
    assert!(
        fx.store
            .load(DEFAULT_KEY)
            .expect("read the store")
            .is_some()
    );
}

// ----- process measurements (Linux /proc; `None` elsewhere) -----

/// The resident set size in KiB.
fn vm_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|line| line.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The number of open file descriptors.
fn fd_count() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

// ----- 1. slowloris -----

/// Slow connections: a pool of [`SLOW_THREADS`] threads of [`SLOW_PER_THREAD`] sockets each.
const SLOW_THREADS: usize = 10;
const SLOW_PER_THREAD: usize = 50;
const SLOW: usize = SLOW_THREADS * SLOW_PER_THREAD;
/// The time a connection has to deliver its head, shortened from 10 s to keep this short.
const SLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// Each slow connection sends one byte of this every second; it never ends a head.
const DRIP: &[u8] = b"GET /callback?code=slow&state=slow HTTP/1.1\r\nHost: 127.0.0.1\r\n";
/// How often each slow thread checks its sockets.
const SLOW_POLL: Duration = Duration::from_millis(10);
/// Timing slack between the client's clock and the server's accept.
const SLACK: Duration = Duration::from_millis(50);
/// Resident memory the test may add to the process.
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// One slow connection as its client saw it.
#[derive(Debug)]
struct Slow {
    connected: Instant,
    /// When the server closed (end of input or reset), if it did.
    closed: Option<Instant>,
    /// Bytes the server sent (it must send none: a late head is closed, not answered).
    received: usize,
}

/// Opens [`SLOW_PER_THREAD`] connections, counting each in `connected`, then drips a byte a
/// second on each until the server has closed them all or the thread's deadline passes.
fn slow_thread(port: u16, connected: &AtomicUsize) -> (Vec<Slow>, Vec<String>) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut errors = Vec::new();
    let mut socks = Vec::with_capacity(SLOW_PER_THREAD);
    for _ in 0..SLOW_PER_THREAD {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .and_then(|stream| stream.set_nonblocking(true).map(|()| stream));
        match stream {
            Ok(stream) => {
                let now = Instant::now();
                let slow = Slow {
                    connected: now,
                    closed: None,
                    received: 0,
                };
                // (socket, record, bytes sent, next drip)
                socks.push((stream, slow, 0_usize, now));
                connected.fetch_add(1, Ordering::SeqCst);
            }
            Err(error) => errors.push(format!("connect: {error}")),
        }
    }
    // Nothing can outlive its header deadline by seconds.
    let hard = Instant::now() + SLOW_HEADER_TIMEOUT + Duration::from_secs(4);
    let mut buf = [0; 1024];
    loop {
        let now = Instant::now();
        let mut open = 0;
        for (stream, slow, sent, next_drip) in &mut socks {
            if slow.closed.is_some() {
                continue;
            }
            match stream.read(&mut buf) {
                Ok(0) => slow.closed = Some(now),
                Ok(n) => slow.received += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => slow.closed = Some(now), // reset
            }
            if slow.closed.is_none() && now >= *next_drip {
                match stream.write(&DRIP[*sent % DRIP.len()..][..1]) {
                    Ok(_) => *sent += 1,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => slow.closed = Some(now), // the server is gone
                }
                *next_drip += Duration::from_secs(1);
            }
            if slow.closed.is_none() {
                open += 1;
            }
        }
        if open == 0 || now >= hard {
            break;
        }
        thread::sleep(SLOW_POLL);
    }
    (
        socks.into_iter().map(|(_, slow, _, _)| slow).collect(),
        errors,
    )
}

/// [`SLOW`] slow connections from [`SLOW_THREADS`] threads.
fn slow_pool(port: u16, connected: &AtomicUsize) -> (Vec<Slow>, Vec<String>) {
    thread::scope(|scope| {
        let threads: Vec<_> = (0..SLOW_THREADS)
            .map(|_| scope.spawn(|| slow_thread(port, connected)))
            .collect();
        let mut all = (Vec::new(), Vec::new());
        for thread in threads {
            let (slow, errors) = thread.join().expect("a slow thread");
            all.0.extend(slow);
            all.1.extend(errors);
        }
        all
    })
}

/// 500 connections that each send a byte a second do not keep a login out: with the
/// connection cap above the crowd (1,024), every slow connection is held until its header
/// deadline and closed then, not before, and the browser's callback completes meanwhile.
/// Memory stays bounded: the engine buffers at most `max_head_bytes` per connection and
/// holds at most `max_connections`. (At a cap below the crowd, the engine's eviction of
/// connections that waited past a grace period is what lets the browser in: see the
/// listener tests.)
async fn slowloris<R: Runtime>(rt: R) {
    let begun = Instant::now();
    let rss_before = vm_rss_kib();
    let mut limits = Limits::default();
    limits.header_timeout = SLOW_HEADER_TIMEOUT;
    limits.max_connections = 1024;
    let cap = limits.max_connections;
    let fx = start(&rt, limits);
    let login = fx.service.start(FlowOptions::new()).expect("start a login");

    let connected = Arc::new(AtomicUsize::new(0));
    let (port, counter) = (fx.port, connected.clone());
    let pool = rt.unblock(move || slow_pool(port, &counter));
    let url = login.url().expect("a browser login").to_owned();
    let browser = rt.unblock(move || {
        // Come once the crowd is in and has held its slots past the engine's grace period
        // (a second), as a slowloris does: from then on the oldest slow client makes room.
        let started = Instant::now();
        while (connected.load(Ordering::SeqCst) < SLOW
            || started.elapsed() < Duration::from_secs(2))
            && started.elapsed() < Duration::from_secs(6)
        {
            thread::sleep(Duration::from_millis(5));
        }
        let crowd = connected.load(Ordering::SeqCst);
        let rss_crowded = vm_rss_kib();
        let browsing = Instant::now();
        let hops = agent::browse(&url);
        (hops, browsing.elapsed(), crowd, rss_crowded, vm_rss_kib())
    });
    let ((slow, errors), (hops, browse_took, crowd, rss_crowded, rss_logged_in)) = within(
        &rt,
        Duration::from_secs(12),
        "the slow crowd and the login",
        future::zip(pool, browser),
    )
    .await;

    // The login.
    let hops = hops.expect("the browser's navigation");
    assert_eq!(
        crowd, SLOW,
        "the browser came with the whole crowd connected"
    );
    assert!(
        browse_took < SLOW_HEADER_TIMEOUT,
        "the browser waited {browse_took:?}: it should not wait for slow heads to time out"
    );
    let landing = hops.last().and_then(|hop| hop.location.as_deref());
    assert_one_success(&rt, &fx, &login, landing).await;

    // The slow connections.
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(slow.len(), SLOW);
    let last_connect = slow
        .iter()
        .map(|s| s.connected)
        .max()
        .expect("slow connections");
    let open: Vec<&Slow> = slow.iter().filter(|s| s.closed.is_none()).collect();
    assert!(open.is_empty(), "{} never closed: {open:?}", open.len());
    let all_closed_by = last_connect + SLOW_HEADER_TIMEOUT + Duration::from_secs(2);
    let late_closes = slow
        .iter()
        .filter(|s| s.closed.is_some_and(|closed| closed > all_closed_by))
        .count();
    assert_eq!(
        late_closes, 0,
        "closed later than the header timeout + 2 s after the last connect"
    );
    let answered: usize = slow.iter().map(|s| s.received).sum();
    assert_eq!(answered, 0, "a head that never ends gets no answer");
    // Closed before their header deadline: only evictions, one per accept beyond the cap
    // (the slow connections and the browser's callback).
    let early = slow
        .iter()
        .filter(|s| {
            s.closed
                .is_some_and(|closed| closed + SLACK < s.connected + SLOW_HEADER_TIMEOUT)
        })
        .count();
    let max_evictions = (SLOW + 1).saturating_sub(cap);
    assert!(
        early <= max_evictions,
        "{early} closed before their header deadline, at most {max_evictions} evicted"
    );
    let survivors: Vec<Duration> = slow
        .iter()
        .filter_map(|s| s.closed.map(|closed| closed - s.connected))
        .filter(|lived| *lived + SLACK >= SLOW_HEADER_TIMEOUT)
        .collect();
    let longest = survivors.iter().max().copied().unwrap_or_default();

    within(&rt, STEP, "shutdown", fx.service.shutdown()).await;
    let rss_after = vm_rss_kib();
    let took = begun.elapsed();
    eprintln!(
        "slowloris: {SLOW} slow connections, {early} closed early (evicted), {} at their \
         deadline (longest lived {longest:?}); browse took {browse_took:?}; VmRSS KiB before \
         {rss_before:?}, crowded {rss_crowded:?}, logged in {rss_logged_in:?}, after \
         {rss_after:?}; took {took:?}",
        survivors.len()
    );
    if let Some(before) = rss_before {
        for (when, rss) in [
            ("crowded", rss_crowded),
            ("logged in", rss_logged_in),
            ("after", rss_after),
        ] {
            let rss = rss.expect("VmRSS");
            assert!(
                rss.saturating_sub(before) < RSS_BOUND_KIB,
                "VmRSS grew from {before} KiB to {rss} KiB ({when})"
            );
        }
    }
    assert!(took < Duration::from_secs(15), "{took:?}");
}

// ----- 2. flood -----

const FLOOD: usize = 20_000;
const FLOOD_THREADS: usize = 8;
/// Junk connections each flooding thread keeps open at once.
const FLOOD_IN_FLIGHT: usize = 64;
/// The longest one junk connection may take, connect to close.
const FLOOD_CONN_LIMIT: Duration = Duration::from_secs(5);
/// No junk connection starts after this; all are done [`FLOOD_CONNECT_TIMEOUT`] +
/// [`FLOOD_CONN_LIMIT`] later.
const FLOOD_START_LIMIT: Duration = Duration::from_secs(15);
/// How long a junk connect may take. Under the flood the listen backlog can overflow and
/// the kernel drops SYNs (`ListenOverflows` in /proc/net/netstat); the client retransmits
/// after 1 s and 3 s, so give it both.
const FLOOD_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Junk connects that may fail even so: dropped SYNs are the kernel's, not latchkey's.
const FLOOD_CONNECT_FAILURES: usize = FLOOD / 1000;
/// Open file descriptors the test may leave behind (closes are asynchronous).
const FD_TOLERANCE: usize = 8;

/// A small deterministic generator (xorshift64*), for reproducible junk.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const KINDS: [&str; 6] = [
    "random bytes",
    "oversized head",
    "wrong Host",
    "OPTIONS",
    "/favicon.ico",
    "truncated head",
];

/// Junk request `i`: its kind, its bytes, and the one status it may get (`None`: any 4xx;
/// `Some(0)`: none, the connection is closed). Being closed without an answer is always
/// allowed: at the cap the engine evicts connections still reading.
fn junk_request(i: usize, port: u16, rng: &mut Rng) -> (usize, Vec<u8>, Option<u16>) {
    let ours = format!("127.0.0.1:{port}");
    let kind = i % KINDS.len();
    let (bytes, expected) = match kind {
        0 => {
            let len = 1 + rng.below(2048);
            ((0..len).map(|_| rng.next() as u8).collect(), None)
        }
        1 => {
            // Beyond the 8 KiB head limit, and it does end.
            let mut head =
                format!("GET /callback?code=x&state=y HTTP/1.1\r\nHost: {ours}\r\nX-Pad: ")
                    .into_bytes();
            head.resize(head.len() + 9 * 1024 + rng.below(8 * 1024), b'a');
            head.extend_from_slice(b"\r\n\r\n");
            (head, Some(431))
        }
        2 => (
            format!("GET /callback?code=x&state=y HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n")
                .into_bytes(),
            Some(421),
        ),
        3 => (
            format!(
                "OPTIONS /callback HTTP/1.1\r\nHost: {ours}\r\nOrigin: http://evil.example\r\n\
                 Access-Control-Request-Method: GET\r\n\r\n"
            )
            .into_bytes(),
            Some(405),
        ),
        4 => (
            format!("GET /favicon.ico HTTP/1.1\r\nHost: {ours}\r\n\r\n").into_bytes(),
            Some(404),
        ),
        _ => {
            let head = format!(
                "GET /callback?code=x&state=y HTTP/1.1\r\nHost: {ours}\r\nUser-Agent: junk\r\n\r\n"
            );
            // Anything short of the blank line that ends it.
            let cut = rng.below(head.len() - 2);
            (head.as_bytes()[..cut].to_vec(), Some(0))
        }
    };
    (kind, bytes, expected)
}

/// What the junk got back.
#[derive(Debug, Default)]
struct FloodReport {
    /// Answers by kind and status.
    answered: BTreeMap<(&'static str, u16), usize>,
    /// Closed (end of input) without an answer.
    closed: usize,
    /// Reset without an answer.
    reset: usize,
    /// Still open at [`FLOOD_CONN_LIMIT`].
    stalled: usize,
    /// Could not connect.
    connect_failed: usize,
    /// The first few reasons.
    connect_errors: Vec<String>,
    /// Never started ([`FLOOD_START_LIMIT`] passed).
    not_started: usize,
    /// Answers a junk request must not get (2xx, 3xx, not HTTP, not the kind's status).
    wrong: usize,
    /// The first few of `wrong`.
    examples: Vec<String>,
}

impl FloodReport {
    fn total(&self) -> usize {
        self.answered.values().sum::<usize>()
            + self.closed
            + self.reset
            + self.stalled
            + self.connect_failed
            + self.not_started
    }

    fn wrong(&mut self, what: String) {
        self.wrong += 1;
        if self.examples.len() < 20 {
            self.examples.push(what);
        }
    }

    fn merge(&mut self, other: FloodReport) {
        for (key, n) in other.answered {
            *self.answered.entry(key).or_default() += n;
        }
        self.closed += other.closed;
        self.reset += other.reset;
        self.stalled += other.stalled;
        self.connect_failed += other.connect_failed;
        self.connect_errors.extend(other.connect_errors);
        self.not_started += other.not_started;
        self.wrong += other.wrong;
        for example in other.examples {
            if self.examples.len() < 20 {
                self.examples.push(example);
            }
        }
    }

    /// Records how junk request `i` ended: `answer` is what came back, `reset` whether the
    /// connection was reset rather than closed.
    fn record(&mut self, junk: &Junk, answer: &[u8], reset: bool) {
        let kind = KINDS[junk.kind];
        if answer.is_empty() {
            if reset {
                self.reset += 1;
            } else {
                self.closed += 1;
            }
            return;
        }
        let status = answer
            .strip_prefix(b"HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| std::str::from_utf8(code).ok())
            .and_then(|code| code.parse::<u16>().ok());
        let Some(status) = status else {
            if reset && answer.len() < 12 {
                self.reset += 1; // a status line cut short by the reset
            } else {
                let start = String::from_utf8_lossy(&answer[..answer.len().min(40)]).into_owned();
                self.wrong(format!("junk #{} ({kind}): not HTTP: {start:?}", junk.i));
            }
            return;
        };
        *self.answered.entry((kind, status)).or_default() += 1;
        let fits = match junk.expected {
            None => (400..500).contains(&status),
            Some(expected) => status == expected,
        };
        if !fits {
            self.wrong(format!(
                "junk #{} ({kind}): got {status}, expected {:?}",
                junk.i, junk.expected
            ));
        }
    }
}

/// One junk connection in flight.
struct Junk {
    i: usize,
    kind: usize,
    expected: Option<u16>,
    stream: TcpStream,
    bytes: Vec<u8>,
    written: usize,
    /// Everything written and the writing half shut: now reading the answer.
    reading: bool,
    answer: Vec<u8>,
    deadline: Instant,
}

/// How a step of a junk connection went.
enum Progress {
    Idle,
    Moved,
    /// Ended: reset or not.
    Done(bool),
}

impl Junk {
    /// One nonblocking step: write some, or read some.
    fn step(&mut self, buf: &mut [u8]) -> Progress {
        if !self.reading {
            match self.stream.write(&self.bytes[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The server answered early (431) or evicted us: read what there is.
                Err(_) => self.written = self.bytes.len(),
            }
            if self.written == self.bytes.len() {
                // The end of input: an incomplete head is closed at once.
                let _ = self.stream.shutdown(Shutdown::Write);
                self.reading = true;
            }
            return Progress::Moved;
        }
        match self.stream.read(buf) {
            Ok(0) => Progress::Done(false),
            Ok(n) => {
                if self.answer.len() < 64 * 1024 {
                    self.answer.extend_from_slice(&buf[..n]);
                }
                Progress::Moved
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Progress::Idle
            }
            Err(_) => Progress::Done(true),
        }
    }
}

/// A flooding thread: takes junk request numbers from `next` until [`FLOOD`], keeping
/// [`FLOOD_IN_FLIGHT`] connections open at once, counting each started in `started`.
fn flood_thread(
    worker: usize,
    port: u16,
    next: &AtomicUsize,
    started: &AtomicUsize,
    stop_starting: Instant,
) -> FloodReport {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1));
    let mut report = FloodReport::default();
    let mut in_flight: Vec<Junk> = Vec::with_capacity(FLOOD_IN_FLIGHT);
    let mut exhausted = false;
    let mut buf = vec![0; 16 * 1024];
    loop {
        while !exhausted && in_flight.len() < FLOOD_IN_FLIGHT {
            if Instant::now() >= stop_starting {
                exhausted = true;
                break;
            }
            let i = next.fetch_add(1, Ordering::SeqCst);
            if i >= FLOOD {
                exhausted = true;
                break;
            }
            started.fetch_add(1, Ordering::SeqCst);
            let (kind, bytes, expected) = junk_request(i, port, &mut rng);
            let stream = TcpStream::connect_timeout(&addr, FLOOD_CONNECT_TIMEOUT)
                .and_then(|stream| stream.set_nonblocking(true).map(|()| stream));
            match stream {
                Ok(stream) => in_flight.push(Junk {
                    i,
                    kind,
                    expected,
                    stream,
                    bytes,
                    written: 0,
                    reading: false,
                    answer: Vec::new(),
                    deadline: Instant::now() + FLOOD_CONN_LIMIT,
                }),
                Err(error) => {
                    report.connect_failed += 1;
                    if report.connect_errors.len() < 5 {
                        report.connect_errors.push(format!("junk #{i}: {error}"));
                    }
                }
            }
        }
        if exhausted && in_flight.is_empty() {
            break;
        }
        let mut moved = false;
        let now = Instant::now();
        in_flight.retain_mut(|junk| match junk.step(&mut buf) {
            Progress::Done(reset) => {
                let answer = std::mem::take(&mut junk.answer);
                report.record(junk, &answer, reset);
                moved = true;
                false
            }
            Progress::Moved => {
                moved = true;
                true
            }
            Progress::Idle if now >= junk.deadline => {
                report.stalled += 1;
                false
            }
            Progress::Idle => true,
        });
        if !moved {
            thread::sleep(Duration::from_micros(500));
        }
    }
    report
}

/// [`FLOOD`] junk requests from [`FLOOD_THREADS`] threads.
fn flood_pool(port: u16, started: &AtomicUsize) -> FloodReport {
    let next = AtomicUsize::new(0);
    let stop_starting = Instant::now() + FLOOD_START_LIMIT;
    let mut report = thread::scope(|scope| {
        let threads: Vec<_> = (0..FLOOD_THREADS)
            .map(|worker| {
                let next = &next;
                scope.spawn(move || flood_thread(worker, port, next, started, stop_starting))
            })
            .collect();
        let mut report = FloodReport::default();
        for thread in threads {
            report.merge(thread.join().expect("a flooding thread"));
        }
        report
    });
    report.not_started = FLOOD.saturating_sub(started.load(Ordering::SeqCst));
    report
}

/// 20,000 junk requests, up to 512 at once, while one real login completes in the middle:
/// the login succeeds exactly once, no junk request is ever answered 2xx or 3xx, and once
/// everything has stopped the process holds no more file descriptors than before.
///
/// The flood is far above the connection cap (64), so the browser's connection can be
/// refused while junk holds every slot; the browser then reloads the callback URL, as a
/// user reloads a page that failed, up to [`FLOOD_RELOADS`] times.
async fn flood<R: Runtime>(rt: R) {
    flood_with(rt, FLOOD_RELOADS).await;
}

/// Reloads of the callback the browser of [`flood`] may make, [`FLOOD_RELOAD_PAUSE`] apart.
const FLOOD_RELOADS: usize = 100;
const FLOOD_RELOAD_PAUSE: Duration = Duration::from_millis(20);
/// What a browser's top-level navigation says about itself.
const NAVIGATION: [(&str, &str); 4] = [
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-Dest", "document"),
    ("Sec-Fetch-Site", "cross-site"),
    ("User-Agent", "latchkey-hostile-test"),
];

/// What the browser of [`flood_with`] saw.
#[derive(Debug)]
struct Browsed {
    /// The junk requests started when it came.
    came_at: usize,
    /// The callback's answer: status and `Location`.
    answer: Option<(u16, Option<String>)>,
    /// Why each failed callback request failed.
    failed: Vec<String>,
    /// From the authorization request to the answer.
    took: Duration,
    /// Whether the junk was still running at the last callback request.
    during_the_flood: bool,
}

/// The authorization request at the identity provider, then the callback it redirects to,
/// reloaded up to `reloads` times while the listener drops it.
fn navigate(url: &str, reloads: usize, flood_over: &AtomicBool) -> Browsed {
    let began = Instant::now();
    let mut browsed = Browsed {
        came_at: 0,
        answer: None,
        failed: Vec::new(),
        took: Duration::ZERO,
        during_the_flood: false,
    };
    let location = |fields: &[(String, String)]| {
        fields
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("location"))
            .map(|(_, value)| value.clone())
    };
    let (status, fields, _) = agent::get(url, &NAVIGATION).expect("the authorization request");
    assert_eq!(
        status, 303,
        "the identity provider redirects to the callback"
    );
    let callback = location(&fields).expect("the callback URL");
    for attempt in 0..=reloads {
        if attempt > 0 {
            thread::sleep(FLOOD_RELOAD_PAUSE);
        }
        browsed.during_the_flood = !flood_over.load(Ordering::SeqCst);
        match agent::get(&callback, &NAVIGATION) {
            Ok((status, fields, _)) => {
                browsed.answer = Some((status, location(&fields)));
                break;
            }
            Err(error) => browsed.failed.push(error.to_string()),
        }
    }
    browsed.took = began.elapsed();
    browsed
}

async fn flood_with<R: Runtime>(rt: R, reloads: usize) {
    let begun = Instant::now();
    let fds_before = fd_count();
    let rss_before = vm_rss_kib();
    let fx = start(&rt, Limits::default());
    let login = fx.service.start(FlowOptions::new()).expect("start a login");

    let started = Arc::new(AtomicUsize::new(0));
    let flood_over = Arc::new(AtomicBool::new(false));
    let (port, counter, over) = (fx.port, started.clone(), flood_over.clone());
    let junk = rt.unblock(move || {
        let report = flood_pool(port, &counter);
        over.store(true, Ordering::SeqCst);
        report
    });
    let url = login.url().expect("a browser login").to_owned();
    let browser = rt.unblock(move || {
        // Come back in the thick of it.
        let waiting = Instant::now();
        while started.load(Ordering::SeqCst) < FLOOD / 2 && waiting.elapsed() < FLOOD_START_LIMIT {
            thread::sleep(Duration::from_millis(1));
        }
        let came_at = started.load(Ordering::SeqCst);
        Browsed {
            came_at,
            ..navigate(&url, reloads, &flood_over)
        }
    });
    let (report, browsed) = within(
        &rt,
        FLOOD_START_LIMIT + FLOOD_CONNECT_TIMEOUT + FLOOD_CONN_LIMIT + Duration::from_secs(2),
        "the flood and the login",
        future::zip(junk, browser),
    )
    .await;
    let flooded = begun.elapsed();
    let rss_flooded = vm_rss_kib();

    assert!(
        browsed.came_at < FLOOD,
        "the login came during the flood: {browsed:?}"
    );
    // One code, one token request: the callbacks the listener dropped never reached the
    // engine.
    assert_eq!(fx.idp.stats().codes_issued, 1);
    let Some((status, landing)) = &browsed.answer else {
        panic!(
            "the callback failed {} times: {browsed:?}",
            browsed.failed.len()
        );
    };
    assert!(matches!(status, 302 | 303), "{browsed:?}");
    assert_one_success(&rt, &fx, &login, landing.as_deref()).await;
    let Fixture { idp, service, .. } = fx;
    within(&rt, STEP, "shutdown", service.shutdown()).await;
    drop(idp);
    drop(login);

    eprintln!(
        "flood: {browsed:?}; flood took {flooded:?}; VmRSS KiB before {rss_before:?}, \
         after {rss_flooded:?}; {report:#?}"
    );
    assert_eq!(report.total(), FLOOD, "{report:#?}");
    assert_eq!(report.wrong, 0, "{report:#?}");
    assert_eq!(report.not_started, 0, "{report:#?}");
    assert_eq!(report.stalled, 0, "{report:#?}");
    assert!(
        report.connect_failed <= FLOOD_CONNECT_FAILURES,
        "{report:#?}"
    );
    // The listener really answered each kind of well-formed junk, not just dropped it.
    for (kind, status) in [
        ("oversized head", 431),
        ("wrong Host", 421),
        ("OPTIONS", 405),
        ("/favicon.ico", 404),
    ] {
        assert!(
            report.answered.contains_key(&(kind, status)),
            "no {kind} was answered {status}: {report:#?}"
        );
    }

    // No descriptor leaked: the service, the identity provider and every junk socket are
    // gone; closes are asynchronous, so give them 2 s.
    if let Some(before) = fds_before {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut after = fd_count().expect("fd count");
        while after > before + FD_TOLERANCE && Instant::now() < deadline {
            rt.sleep_until(Instant::now() + Duration::from_millis(20))
                .await;
            after = fd_count().expect("fd count");
        }
        eprintln!("flood: open fds before {before}, after {after}");
        assert!(
            after <= before + FD_TOLERANCE,
            "{after} fds open after the flood, {before} before"
        );
    }
    let took = begun.elapsed();
    assert!(took < Duration::from_secs(30), "{took:?}");
}
