//! The Docker Desktop extension example (`examples/docker-extension/`): its binaries built,
//! and run as processes, for its end-to-end tests.
//!
//! The extension is a workspace of its own (so that its folder can be copied out of the
//! repository), so its binaries are not among this workspace's: [`binaries`] builds them
//! once per test process with `cargo build --locked` in its folder, where its
//! `.cargo/config.toml` points the latchkey crates at this repository's sources.
//!
//! They run as Docker Desktop runs them: the backend minus the container, the host binary
//! as the UI runs it on the user's machine. [`Backend`] writes the settings into a
//! temporary directory of its own (with the API socket and the token file there), captures
//! the JSON log lines, speaks HTTP/1.1 to the socket as Docker Desktop forwards the UI's
//! calls, and stops the process with SIGTERM. [`Callback`] runs `latchkey-callback` and
//! reads the JSON lines it prints. Both are killed when dropped.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

/// The extension's folder.
pub fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join("docker-extension")
}

/// The extension's binaries, built.
#[derive(Debug)]
pub struct Binaries {
    /// The backend, `latchkey-extension`, which runs in the extension's container.
    pub backend: PathBuf,
    /// The host binary, `latchkey-callback`, which the UI runs on the user's machine.
    pub host: PathBuf,
}

/// Builds the extension's binaries (debug) the first time it is called in a process, and
/// returns where they are.
///
/// # Panics
///
/// When `cargo build` fails: the tests cannot run without the binaries.
pub fn binaries() -> &'static Binaries {
    static BUILT: OnceLock<Binaries> = OnceLock::new();
    BUILT.get_or_init(|| {
        let folder = folder();
        let target = folder.join("target");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args(["build", "--locked", "--bins"])
            .current_dir(&folder)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .expect("run cargo build for the extension");
        assert!(
            output.status.success(),
            "building the extension failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let debug = target.join("debug");
        Binaries {
            backend: debug.join(format!(
                "latchkey-extension{}",
                std::env::consts::EXE_SUFFIX
            )),
            host: debug.join(format!("latchkey-callback{}", std::env::consts::EXE_SUFFIX)),
        }
    })
}

/// The longest the backend or the host binary may take to start, answer or stop, and a
/// status to come about: generous, for a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The log line the backend writes once its socket is bound.
pub const READY: &str = "extension backend ready";

/// A running backend; killed when dropped.
#[derive(Debug)]
pub struct Backend {
    child: Child,
    socket: PathBuf,
    token_file: PathBuf,
    config: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    dir: TempDir,
}

/// One answer read from the socket: the status, the head as text, the body's bytes.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The status line and header fields, as received.
    pub head: String,
    /// The body.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body, parsed as JSON.
    ///
    /// # Panics
    ///
    /// When it is not JSON: every answer of the backend is.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the backend answered a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Backend {
    /// Starts the backend with `settings` and waits until its socket answers. `socket` and
    /// `token_file` are set to files in a fresh temporary directory, and with a `secret`,
    /// `client_secret_file` to a file holding it; anything else in `settings` is written as
    /// given, valid or not.
    ///
    /// # Panics
    ///
    /// When the backend cannot be started, or logs no [`READY`] line within [`PATIENCE`].
    pub fn start(mut settings: Value, secret: Option<&str>) -> Backend {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("api.sock");
        let token_file = dir.path().join("data").join("tokens.json");
        settings["socket"] = json!(socket);
        settings["token_file"] = json!(token_file);
        if let Some(secret) = secret {
            let path = dir.path().join("client_secret");
            std::fs::write(&path, format!("{secret}\n")).expect("the secret file");
            settings["client_secret_file"] = json!(path);
        }
        let config = dir.path().join("config.json");
        std::fs::write(&config, settings.to_string()).expect("the settings file");
        let mut child = Command::new(&binaries().backend)
            .arg("--config")
            .arg(&config)
            .env_remove("LATCHKEY_CONFIG")
            .env_remove("LATCHKEY_LOG")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the backend");
        let log = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stderr.take().expect("piped stderr"), Arc::clone(&log));
        let backend = Backend {
            child,
            socket,
            token_file,
            config,
            log,
            dir,
        };
        backend.wait_for_log(READY);
        backend
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The token file.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// The settings file it was started with.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Its temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The log lines written so far.
    pub fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until a log line contains `message`.
    ///
    /// # Panics
    ///
    /// After [`PATIENCE`], with the log.
    pub fn wait_for_log(&self, message: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().iter().any(|line| line.contains(message)) {
            assert!(
                Instant::now() < deadline,
                "no {message:?} in the log:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `request`, raw bytes, on a new connection to the socket and reads one answer.
    ///
    /// # Panics
    ///
    /// When the socket does not answer with a complete response within [`PATIENCE`].
    pub fn send_raw(&self, request: &[u8]) -> RawResponse {
        let mut stream = UnixStream::connect(&self.socket).expect("connect to the API socket");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        stream.write_all(request).expect("send the request");
        read_response(&mut stream).unwrap_or_else(|e| {
            panic!(
                "no answer to {:?}: {e}",
                String::from_utf8_lossy(&request[..request.len().min(200)])
            )
        })
    }

    /// One API call over the socket, as Docker Desktop forwards the UI's, with `body` as
    /// its JSON body: the whole answer.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> RawResponse {
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: backend\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send_raw(request.as_bytes())
    }

    /// [`request`](Backend::request): the status and the JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let response = self.request(method, path, body.as_ref());
        (response.status, response.json())
    }

    /// `GET /status`.
    ///
    /// # Panics
    ///
    /// Unless it answers 200.
    pub fn status(&self) -> Value {
        let (code, status) = self.call("GET", "/status", None);
        assert_eq!(code, 200, "{status}");
        status
    }

    /// Polls `GET /status` until `done` says so, for up to [`PATIENCE`].
    pub fn status_until(&self, done: impl Fn(&Value) -> bool) -> Value {
        self.status_within(PATIENCE, done)
    }

    /// Polls `GET /status` until `done` says so, for up to `patience`.
    ///
    /// # Panics
    ///
    /// When `done` still says no after `patience`, with the last status.
    pub fn status_within(&self, patience: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + patience;
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "the status stayed {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the provider is `ready`.
    pub fn until_ready(&self) -> Value {
        self.status_until(|status| status["provider"]["state"] == "ready")
    }

    /// The stored tokens of the default login: the `tokens.default` member of the token
    /// file, `None` when there is no file or no login in it.
    pub fn stored_tokens(&self) -> Option<Value> {
        let text = std::fs::read_to_string(&self.token_file).ok()?;
        let stored: Value = serde_json::from_str(&text).expect("the token file is JSON");
        stored["tokens"]
            .get("default")
            .filter(|tokens| tokens.is_object())
            .cloned()
    }

    /// Every token the default login stored, as text (the string members of
    /// [`stored_tokens`](Backend::stored_tokens) whose names end in `token`): what must never
    /// reach the UI.
    ///
    /// # Panics
    ///
    /// When no login is stored, or it lacks an access, refresh or ID token.
    pub fn stored_token_texts(&self) -> Vec<String> {
        let entry = self.stored_tokens().expect("a login in the token file");
        for kind in ["access_token", "refresh_token", "id_token"] {
            assert!(entry[kind].is_string(), "no {kind} stored: {entry}");
        }
        entry
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(name, _)| name.ends_with("token"))
            .filter_map(|(_, value)| value.as_str().map(str::to_owned))
            .collect()
    }

    /// Sends SIGTERM and waits for the exit: its code and the whole log.
    ///
    /// # Panics
    ///
    /// When it is still running after [`PATIENCE`].
    pub fn terminate(mut self) -> (Option<i32>, Vec<String>) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the backend") {
                // Let the log reader drain what was written last.
                std::thread::sleep(Duration::from_millis(200));
                return (status.code(), self.log());
            }
            assert!(Instant::now() < deadline, "the backend ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies the lines of `pipe` into `lines` until it closes.
fn collect_lines(pipe: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line);
        }
    });
}

/// Reads one HTTP/1.1 response with a `Content-Length` from `stream`.
fn read_response(stream: &mut impl Read) -> io::Result<RawResponse> {
    let mut received = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .ok_or_else(|| io::Error::other(format!("no Content-Length: {head}")))?;
            if received.len() >= end + 4 + length {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|status| status.parse().ok())
                    .ok_or_else(|| io::Error::other(format!("no status: {head}")))?;
                let body = received[end + 4..end + 4 + length].to_vec();
                return Ok(RawResponse { status, head, body });
            }
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "closed mid-response: {:?}",
                    String::from_utf8_lossy(&received)
                ),
            ));
        }
        received.extend_from_slice(&chunk[..read]);
    }
}

/// A running host binary, `latchkey-callback`; killed when dropped.
#[derive(Debug)]
pub struct Callback {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Callback {
    /// Starts `latchkey-callback --redirect-uri REDIRECT_URI [--landing LANDING]`, as the
    /// UI does with the status's `redirect.uri` and `redirect.landing`.
    pub fn start(redirect_uri: &str, landing: Option<&str>) -> Callback {
        let mut args = vec!["--redirect-uri", redirect_uri];
        if let Some(landing) = landing {
            args.extend(["--landing", landing]);
        }
        Callback::start_with(&args)
    }

    /// Starts `latchkey-callback` with `args`.
    pub fn start_with(args: &[&str]) -> Callback {
        let mut child = Command::new(&binaries().host)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the host binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect_lines(
            child.stderr.take().expect("piped stderr"),
            Arc::clone(&stderr),
        );
        Callback {
            child,
            lines,
            stderr,
        }
    }

    /// The next line it prints, parsed: a JSON object.
    ///
    /// # Panics
    ///
    /// When none comes within [`PATIENCE`], or it is not a JSON object.
    pub fn next_line(&self) -> Value {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => match serde_json::from_str::<Value>(&line) {
                Ok(value) if value.is_object() => value,
                _ => panic!("the host binary printed a line that is not a JSON object: {line}"),
            },
            Err(RecvTimeoutError::Timeout) => panic!(
                "the host binary printed nothing within {PATIENCE:?}; stderr: {:?}",
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "the host binary closed its output; stderr: {:?}",
                self.stderr()
            ),
        }
    }

    /// Reads its first line, `{"listening": URI}`, and gives the URI.
    ///
    /// # Panics
    ///
    /// When the line is anything else.
    pub fn listening(&self) -> String {
        let line = self.next_line();
        line["listening"]
            .as_str()
            .unwrap_or_else(|| panic!("not a listening line: {line}"))
            .to_owned()
    }

    /// Reads the next line, `{"callback": QUERY}`, and gives the query.
    ///
    /// # Panics
    ///
    /// When the line is anything else.
    pub fn callback(&self) -> String {
        let line = self.next_line();
        line["callback"]
            .as_str()
            .unwrap_or_else(|| panic!("not a callback line: {line}"))
            .to_owned()
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for it to exit by itself: its exit code.
    ///
    /// # Panics
    ///
    /// When it is still running after [`PATIENCE`].
    pub fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the host binary") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the host binary did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every line of `log` is a JSON object, and none holds any of `secrets` (named for the
/// message).
///
/// # Panics
///
/// Naming the line and the secret.
pub fn assert_clean_json_log(log: &[String], secrets: &[(&str, &str)]) {
    assert!(!log.is_empty(), "an empty log");
    for line in log {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|_| panic!("a log line that is not JSON: {line}"));
        assert!(parsed.is_object(), "{line}");
        for (what, secret) in secrets {
            assert!(!secret.is_empty(), "an empty {what}");
            assert!(!line.contains(secret), "the {what} was logged: {line}");
        }
    }
}
