//! The guarded child-process runner shared by the end-to-end tests: a child's stdout line
//! by line as it comes, its stderr collected, a watchdog that kills it after a time limit,
//! and a `Drop` that kills it should its test panic half-way.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// Proxy variables that must not reach the children (everything here is loopback).
pub const PROXY_VARS: [&str; 8] = [
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// The `latchkey` binary with an environment that cannot reach a proxy or the user's own
/// token file (should a test forget `--store`, the default path is a scratch one).
pub fn latchkey_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    let nowhere = std::env::temp_dir().join("latchkey-cli-test-no-home");
    command
        .env("HOME", &nowhere)
        .env("XDG_CONFIG_HOME", &nowhere)
        .env("APPDATA", &nowhere);
    command
}

/// How a child is guarded: its time limit and how long reading its output may wait.
#[derive(Clone, Copy)]
pub struct Guard {
    /// Longest the child may run before the watchdog kills it and its test fails.
    pub limit: Duration,
    /// How long after `limit` reading stdout and waiting for the exit may go on; `None`:
    /// until stdout closes and the child exits (the watchdog's kill ends both).
    pub stdout_grace: Option<Duration>,
    /// How long to wait for stderr, which then shows as `<stderr still open>`; `None`:
    /// until it closes, and a stderr that cannot be read fails [`Running::finish`].
    pub stderr_wait: Option<Duration>,
}

/// A running child: its stdout line by line as it comes, its stderr collected, and a
/// watchdog that kills it after the limit. Dropping it kills the child.
pub struct Running {
    what: &'static str,
    guard: Guard,
    pub child: Arc<Mutex<Child>>,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Receiver<String>,
    killed: Arc<AtomicBool>,
    /// Dropping it stops the watchdog.
    _watchdog: Sender<()>,
    started: Instant,
}

/// A child that ended.
pub struct Finished {
    what: &'static str,
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Running {
    /// Starts `command` (called `what` in failures) without the proxy variables, its
    /// standard input empty.
    pub fn spawn(what: &'static str, guard: Guard, command: Command) -> Running {
        Running::spawn_with_stdin(what, guard, command, Stdio::null())
    }

    /// [`spawn`](Running::spawn), with a pipe to the child's standard input for the test
    /// to write to (what a user types or pastes).
    pub fn spawn_piped(
        what: &'static str,
        guard: Guard,
        command: Command,
    ) -> (Running, ChildStdin) {
        let running = Running::spawn_with_stdin(what, guard, command, Stdio::piped());
        let stdin = lock(&running.child).stdin.take().expect("piped stdin");
        (running, stdin)
    }

    fn spawn_with_stdin(
        what: &'static str,
        guard: Guard,
        mut command: Command,
        stdin: Stdio,
    ) -> Running {
        for var in PROXY_VARS {
            command.env_remove(var);
        }
        command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (line_tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap_or_else(|e| format!("<unreadable stdout line: {e}>"));
                if line_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (stderr_tx, stderr) = mpsc::channel();
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stderr_pipe.read_to_end(&mut bytes);
            let _ = stderr_tx.send(String::from_utf8_lossy(&bytes).into_owned());
        });
        let child = Arc::new(Mutex::new(child));
        let killed = Arc::new(AtomicBool::new(false));
        let (watchdog, stop) = mpsc::channel::<()>();
        {
            let (child, killed) = (child.clone(), killed.clone());
            thread::spawn(move || {
                if let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(guard.limit) {
                    killed.store(true, Ordering::SeqCst);
                    let _ = lock(&child).kill();
                }
            });
        }
        Running {
            what,
            guard,
            child,
            lines,
            stdout: Vec::new(),
            stderr,
            killed,
            _watchdog: watchdog,
            started,
        }
    }

    /// With a `stdout_grace`, the time left before the watchdog fires plus that grace for
    /// the kill to show; `None` (no bound) without.
    fn left(&self) -> Option<Duration> {
        let grace = self.guard.stdout_grace?;
        Some((self.started + self.guard.limit + grace).saturating_duration_since(Instant::now()))
    }

    /// The next line of stdout; `None` once it is closed (or, bounded, the time is up).
    pub fn next_line(&mut self) -> Option<String> {
        let line = match self.left() {
            None => self.lines.recv().ok()?,
            Some(left) => self.lines.recv_timeout(left).ok()?,
        };
        self.stdout.push(line.clone());
        Some(line)
    }

    /// The next `--json` event, which must be named `name`.
    pub fn expect_event(&mut self, name: &str) -> Map<String, Value> {
        let Some(line) = self.next_line() else {
            self.fail(&format!("stdout ended before the {name:?} event"));
        };
        let Some(event) = parse_event(&line) else {
            self.fail(&format!("stdout line is not a JSON event: {line:?}"));
        };
        if event["event"] != name {
            self.fail(&format!("expected the {name:?} event, got {line}"));
        }
        event
    }

    /// Stderr once it is closed; `None` if its reader died. With a `stderr_wait`, gives up
    /// after it with `<stderr still open>`.
    fn stderr_text(&self) -> Option<String> {
        match self.guard.stderr_wait {
            None => self.stderr.recv().ok(),
            Some(wait) => Some(
                self.stderr
                    .recv_timeout(wait)
                    .unwrap_or_else(|_| "<stderr still open>".to_owned()),
            ),
        }
    }

    /// Kills the child and fails the test, showing what it printed.
    pub fn fail(&mut self, why: &str) -> ! {
        let _ = lock(&self.child).kill();
        let killed = if self.killed.load(Ordering::SeqCst) {
            format!(" ({} killed after {:?})", self.what, self.guard.limit)
        } else {
            String::new()
        };
        panic!(
            "{why}{killed}\n{} stdout:\n{}\n{} stderr:\n{}",
            self.what,
            self.stdout.join("\n"),
            self.what,
            self.stderr_text().unwrap_or_default()
        );
    }

    /// Reads the rest of stdout and waits for the exit.
    pub fn finish(mut self) -> Finished {
        while self.next_line().is_some() {}
        let status = loop {
            // Not in the match: `fail` takes the lock again.
            let waited = lock(&self.child).try_wait();
            match waited {
                Ok(Some(status)) => break status,
                Ok(None) if self.left().is_some_and(|left| left.is_zero()) => {
                    self.fail("did not exit")
                }
                Ok(None) => {}
                Err(e) => panic!("waiting for {}: {e}", self.what),
            }
            thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        if self.killed.load(Ordering::SeqCst) {
            self.fail(&format!("{} did not finish in time", self.what));
        }
        Finished {
            what: self.what,
            status,
            stdout: std::mem::take(&mut self.stdout),
            stderr: self.stderr_text().expect("stderr reader"),
            elapsed,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that panicked half-way must not leave the child running.
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
    }
}

pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Finished {
    pub fn stdout_text(&self) -> String {
        self.stdout.join("\n")
    }

    /// Every stdout line as a `--json` event.
    pub fn events(&self) -> Vec<Map<String, Value>> {
        self.stdout
            .iter()
            .map(|line| {
                parse_event(line).unwrap_or_else(|| {
                    panic!(
                        "stdout line is not a JSON event: {line:?}\n{}",
                        self.describe()
                    )
                })
            })
            .collect()
    }

    pub fn event_names(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Asserts the exit code, showing the output otherwise.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(self.status.code(), Some(code), "{}", self.describe());
    }

    /// Asserts that none of `secrets` appears on stdout or stderr.
    pub fn assert_never_shows(&self, secrets: &[(&str, &str)]) {
        let stdout = self.stdout_text();
        for (what, secret) in secrets {
            assert!(!secret.is_empty(), "the {what} to look for is empty");
            assert!(
                !stdout.contains(secret) && !self.stderr.contains(secret),
                "the {what} leaked: {}",
                self.describe()
            );
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} exited {:?} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.status,
            self.elapsed,
            self.stdout_text(),
            self.stderr
        )
    }
}

/// A `--json` line: a JSON object with a string `event`.
pub fn parse_event(line: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(event)) if event.get("event").is_some_and(Value::is_string) => Some(event),
        _ => None,
    }
}
