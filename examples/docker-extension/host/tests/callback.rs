//! Runs the built binary and talks to it over real loopback TCP, as the browser and the
//! extension's UI would.
//!
//! Waits are generous (a busy machine may be slow to start a process) and nothing asserts
//! how long anything took. "Nothing was printed" is shown without waiting for silence: a
//! marker callback is sent afterwards and must be the next line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long any one step may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// The binary under test.
const BINARY: &str = env!("CARGO_BIN_EXE_latchkey-callback");

/// A valid sign-in redirect query, with escapes that must come through untouched.
const QUERY: &str =
    "?code=Splx%2FlOBeZ%2BQQYbYS6WxSbIA&state=af0ifjsldkj&iss=https%3A%2F%2Fidp.example";

/// A running `latchkey-callback`, its output lines read on a thread.
struct Running {
    /// The process.
    child: Child,
    /// Standard output, line by line.
    lines: Receiver<String>,
    /// Standard error, whole, once the process ends.
    stderr: Option<JoinHandle<String>>,
}

impl Running {
    /// Starts the binary with `args`.
    fn start(args: &[&str]) -> Running {
        let mut child = spawn(args);
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().map(|mut stderr| {
            thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                text
            })
        });
        Running {
            child,
            lines,
            stderr,
        }
    }

    /// Starts the binary for `redirect_uri` and reads its listening line.
    fn listening(redirect_uri: &str, extra: &[&str]) -> (Running, Listening) {
        let mut args = vec!["--redirect-uri", redirect_uri];
        args.extend_from_slice(extra);
        let running = Running::start(&args);
        let listening = Listening::parse(&running.line());
        (running, listening)
    }

    /// The next line of standard output.
    fn line(&self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("the program printed a line in time")
    }

    /// Waits for the process to end by itself.
    fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait works") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the program did not exit in time"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait works").is_none()
    }

    /// Ends the process (if it still runs) and returns its standard error.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with standard output and error piped.
fn spawn(args: &[&str]) -> Child {
    Command::new(BINARY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

/// Runs the binary to its end: exit status, standard output, standard error.
fn run_to_end(args: &[&str]) -> (ExitStatus, String, String) {
    let output = spawn(args).wait_with_output().expect("the binary runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The `{"listening":...}` line, taken apart.
struct Listening {
    /// The redirect URI printed.
    uri: String,
    /// Its port.
    port: u16,
}

impl Listening {
    /// Reads a listening line; fails the test on anything else.
    fn parse(line: &str) -> Listening {
        let uri = line
            .strip_prefix("{\"listening\":\"")
            .and_then(|rest| rest.strip_suffix("\"}"))
            .unwrap_or_else(|| panic!("not a listening line: {line}"))
            .to_owned();
        let authority = uri
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        let port = authority
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {uri}"));
        Listening { uri, port }
    }

    /// `host:port` for a Host header.
    fn host(&self) -> String {
        self.uri
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned()
    }

    /// The IPv4 loopback address with this port.
    fn v4(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// The callback line the program prints for `query`.
fn callback_line(query: &str) -> String {
    format!("{{\"callback\":\"{query}\"}}")
}

/// Sends raw request bytes and reads the whole answer.
fn exchange(address: SocketAddr, request: &[u8]) -> String {
    try_exchange(address, request).expect("the request is answered")
}

/// Sends raw request bytes and reads the whole answer, or says why not.
fn try_exchange(address: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(PATIENCE))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Sends `METHOD TARGET` with a Host header and reads the answer.
fn send(address: SocketAddr, method: &str, target: &str, host: &str) -> String {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n"
    );
    exchange(address, request.as_bytes())
}

/// The status code of an answer.
fn status(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// The value of a header of an answer.
fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, value) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Shows that nothing was printed since the last line read: a marker callback must be
/// the very next line.
fn assert_nothing_printed(running: &Running, listening: &Listening) {
    let marker = "?state=marker&code=marker";
    let answer = send(
        listening.v4(),
        "GET",
        &format!("/callback{marker}"),
        &listening.host(),
    );
    assert_eq!(status(&answer), 303, "{answer}");
    assert_eq!(running.line(), callback_line(marker));
}

/// Whether this machine can listen on ::1.
fn has_ipv6() -> bool {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

#[test]
fn ephemeral_port_is_printed_and_reachable() {
    let (running, listening) = Running::listening("http://127.0.0.1/callback", &[]);
    assert_ne!(listening.port, 0);
    assert_eq!(
        listening.uri,
        format!("http://127.0.0.1:{}/callback", listening.port)
    );
    let answer = send(
        listening.v4(),
        "GET",
        &format!("/callback{QUERY}"),
        &listening.host(),
    );
    assert_eq!(status(&answer), 303, "{answer}");
    assert_eq!(running.line(), callback_line(QUERY));
}

#[test]
fn callback_is_printed_exactly_and_the_browser_is_sent_to_the_landing() {
    let landing = "https://example.com/signed-in?from=latchkey";
    let (running, listening) =
        Running::listening("http://127.0.0.1:0/callback", &["--landing", landing]);
    let answer = send(
        listening.v4(),
        "GET",
        &format!("/callback{QUERY}"),
        &listening.host(),
    );
    assert_eq!(status(&answer), 303, "{answer}");
    assert_eq!(header(&answer, "Location"), Some(landing));
    assert_eq!(header(&answer, "Cache-Control"), Some("no-store"));
    assert_eq!(header(&answer, "Referrer-Policy"), Some("no-referrer"));
    assert_eq!(header(&answer, "Connection"), Some("close"));
    assert_eq!(
        header(&answer, "Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert!(answer.contains("You can close this tab and return to Docker Desktop."));
    assert!(answer.contains(&format!("href=\"{landing}\"")));
    assert_eq!(running.line(), callback_line(QUERY));
    // The code goes to standard output once, and nowhere else.
    let stderr = running.stop();
    assert!(!stderr.contains("Splx"), "{stderr}");
}

#[test]
fn default_landing_is_docker_desktop() {
    let (running, listening) = Running::listening("http://127.0.0.1/cb", &[]);
    let answer = send(
        listening.v4(),
        "GET",
        "/cb?state=s&error=access_denied",
        &listening.host(),
    );
    assert_eq!(
        header(&answer, "Location"),
        Some("docker-desktop://dashboard/open")
    );
    assert_eq!(
        running.line(),
        callback_line("?state=s&error=access_denied")
    );
}

#[test]
fn localhost_is_served_on_ipv4_and_ipv6() {
    let (running, listening) = Running::listening("http://localhost/callback", &[]);
    assert_eq!(
        listening.uri,
        format!("http://localhost:{}/callback", listening.port)
    );
    let host = format!("localhost:{}", listening.port);
    let v4 = send(listening.v4(), "GET", "/callback?state=v4&code=1", &host);
    assert_eq!(status(&v4), 303, "{v4}");
    assert_eq!(running.line(), callback_line("?state=v4&code=1"));
    if !has_ipv6() {
        return;
    }
    let v6_address = SocketAddr::from((Ipv6Addr::LOCALHOST, listening.port));
    let v6 = send(v6_address, "GET", "/callback?state=v6&code=1", &host);
    assert_eq!(status(&v6), 303, "{v6}");
    assert_eq!(running.line(), callback_line("?state=v6&code=1"));
}

#[test]
fn ipv6_literal_is_served_on_ipv6() {
    if !has_ipv6() {
        return;
    }
    let (running, listening) = Running::listening("http://[::1]/callback", &[]);
    assert_eq!(
        listening.uri,
        format!("http://[::1]:{}/callback", listening.port)
    );
    let address = SocketAddr::from((Ipv6Addr::LOCALHOST, listening.port));
    let answer = send(
        address,
        "GET",
        "/callback?state=s&code=c",
        &listening.host(),
    );
    assert_eq!(status(&answer), 303, "{answer}");
    assert_eq!(running.line(), callback_line("?state=s&code=c"));
}

#[test]
fn busy_fixed_port_is_reported_as_port_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port for the test");
    let port = taken.local_addr().expect("its address").port();
    let (status, stdout, _) = run_to_end(&[
        "--redirect-uri",
        &format!("http://127.0.0.1:{port}/callback"),
    ]);
    assert_eq!(status.code(), Some(1));
    let line = stdout.lines().next().unwrap_or_default();
    assert!(
        line.starts_with("{\"error\":\"port_in_use\",\"message\":\""),
        "{line}"
    );
    assert!(line.contains(&format!("Port {port} ")), "{line}");
    assert!(line.contains("another program"), "{line}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    drop(taken);
}

#[test]
fn wrong_host_gets_400_and_prints_nothing() {
    let (running, listening) = Running::listening("http://127.0.0.1/callback", &[]);
    for host in [
        format!("evil.example:{}", listening.port),
        format!("localhost:{}", listening.port),
        "127.0.0.1".to_owned(),
    ] {
        let answer = send(listening.v4(), "GET", &format!("/callback{QUERY}"), &host);
        assert_eq!(status(&answer), 400, "{host}: {answer}");
    }
    let no_host = exchange(
        listening.v4(),
        format!("GET /callback{QUERY} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert_eq!(status(&no_host), 400, "{no_host}");
    assert_nothing_printed(&running, &listening);
}

#[test]
fn wrong_path_gets_404_and_prints_nothing() {
    let (running, listening) = Running::listening("http://127.0.0.1/callback", &[]);
    for target in ["/", "/favicon.ico", "/callback/", "/other?state=s&code=c"] {
        let answer = send(listening.v4(), "GET", target, &listening.host());
        assert_eq!(status(&answer), 404, "{target}: {answer}");
        assert_eq!(header(&answer, "Connection"), Some("close"));
    }
    assert_nothing_printed(&running, &listening);
}

#[test]
fn post_gets_405_with_allow_get() {
    let (running, listening) = Running::listening("http://127.0.0.1/callback", &[]);
    let answer = send(
        listening.v4(),
        "POST",
        &format!("/callback{QUERY}"),
        &listening.host(),
    );
    assert_eq!(status(&answer), 405, "{answer}");
    assert_eq!(header(&answer, "Allow"), Some("GET"));
    assert_nothing_printed(&running, &listening);
}

#[test]
fn oversized_head_gets_431() {
    let (running, listening) = Running::listening("http://127.0.0.1/callback", &[]);
    let mut request = format!(
        "GET /callback{QUERY} HTTP/1.1\r\nHost: {}\r\nX-Padding: ",
        listening.host()
    )
    .into_bytes();
    request.resize(10 * 1024, b'a');
    request.extend_from_slice(b"\r\n\r\n");
    let answer = exchange(listening.v4(), &request);
    assert_eq!(status(&answer), 431, "{answer}");
    assert_nothing_printed(&running, &listening);
}

#[test]
fn right_path_without_callback_parameters_is_not_a_sign_in_redirect() {
    let (running, listening) = Running::listening("http://127.0.0.1/callback", &[]);
    for target in ["/callback", "/callback?state=s", "/callback?code=c"] {
        let answer = send(listening.v4(), "GET", target, &listening.host());
        assert_eq!(status(&answer), 400, "{target}: {answer}");
        assert!(
            answer.contains("This is not a sign-in redirect"),
            "{answer}"
        );
    }
    assert_nothing_printed(&running, &listening);
}

#[test]
fn forged_callback_does_not_end_the_login() {
    let (mut running, listening) = Running::listening("http://127.0.0.1/callback", &[]);
    let forged = "?state=forged&code=forged";
    for query in [forged, QUERY] {
        let answer = send(
            listening.v4(),
            "GET",
            &format!("/callback{query}"),
            &listening.host(),
        );
        assert_eq!(status(&answer), 303, "{answer}");
    }
    assert_eq!(running.line(), callback_line(forged));
    assert_eq!(running.line(), callback_line(QUERY));
    // Still serving after both, and still running until the UI ends it.
    let answer = send(listening.v4(), "GET", "/", &listening.host());
    assert_eq!(status(&answer), 404, "{answer}");
    assert!(running.is_running());
    running.stop();
}

#[test]
fn sixteen_callbacks_end_the_program_with_exit_0() {
    let (mut running, listening) = Running::listening("http://127.0.0.1/callback", &[]);
    for i in 0..16 {
        let query = format!("?state=s{i}&code=c{i}");
        let answer = send(
            listening.v4(),
            "GET",
            &format!("/callback{query}"),
            &listening.host(),
        );
        assert_eq!(status(&answer), 303, "{answer}");
        assert_eq!(running.line(), callback_line(&query));
    }
    assert_eq!(running.exit_status().code(), Some(0));
}

#[test]
fn timeout_without_a_callback_prints_the_timeout_line_and_exits_1() {
    let (mut running, _listening) =
        Running::listening("http://127.0.0.1/callback", &["--timeout", "1"]);
    assert_eq!(
        running.line(),
        "{\"error\":\"timeout\",\"message\":\"No sign-in arrived within 1 second.\"}"
    );
    assert_eq!(running.exit_status().code(), Some(1));
}

#[test]
fn closed_output_ends_the_program_quietly() {
    let mut child = spawn(&["--redirect-uri", "http://127.0.0.1/callback"]);
    let stdout: ChildStdout = child.stdout.take().expect("stdout is piped");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("the listening line is read");
    // The reader is gone once the BufReader above is dropped.
    let listening = Listening::parse(first.trim_end());
    // A process that another test starts at this moment holds a copy of the pipe until it
    // executes its program, so one write may still succeed. Each callback is a new write:
    // keep sending until one fails and the program ends.
    let request = format!(
        "GET /callback{QUERY} HTTP/1.1\r\nHost: {}\r\n\r\n",
        listening.host()
    );
    let deadline = Instant::now() + PATIENCE;
    let mut answers = Vec::new();
    let status = 'ended: loop {
        answers.push(try_exchange(listening.v4(), request.as_bytes()));
        for _ in 0..25 {
            if let Some(status) = child.try_wait().expect("try_wait works") {
                break 'ended status;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            panic!("the program did not exit after its output closed: {answers:?}\n{stderr}");
        }
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn usage_errors_exit_2_with_a_message_on_stderr() {
    let uri = "http://127.0.0.1/callback";
    let cases: &[(&[&str], &str)] = &[
        (&[], "--redirect-uri is required"),
        (&["--redirect-uri"], "--redirect-uri needs a value"),
        (
            &["--redirect-uri", uri, "--redirect-uri", uri],
            "more than once",
        ),
        (&["--redirect-uri", uri, "--bogus"], "unknown argument"),
        (&["--redirect-uri", "https://127.0.0.1/callback"], "https"),
        (&["--redirect-uri", "http://example.com/callback"], "host"),
        (&["--redirect-uri", uri, "--timeout", "0"], "--timeout"),
        (&["--redirect-uri", uri, "--timeout=3601"], "--timeout"),
        (
            &["--redirect-uri", uri, "--landing", "not a url"],
            "--landing",
        ),
    ];
    for (args, words) in cases {
        let (status, stdout, stderr) = run_to_end(args);
        assert_eq!(status.code(), Some(2), "{args:?}");
        assert_eq!(stdout, "", "{args:?}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
        assert!(stderr.contains("Usage:"), "{args:?}: {stderr}");
    }
}

#[test]
fn help_and_version_exit_0() {
    let (status, stdout, _) = run_to_end(&["--help"]);
    assert_eq!(status.code(), Some(0));
    assert!(stdout.contains("--redirect-uri URI"), "{stdout}");
    let (status, stdout, _) = run_to_end(&["--version"]);
    assert_eq!(status.code(), Some(0));
    assert!(stdout.starts_with("latchkey-callback "), "{stdout}");
}
