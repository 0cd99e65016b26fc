//! A real Redis for the tests of shared stores: Debian's `redis-server`, started on a free
//! loopback port with its append-only file on in a temporary directory, so that a test can
//! stop it, restart it on the same port and find its data again, as an operator's restart
//! would. [`Connection`] speaks RESP over a plain socket, for tests that look at what a store
//! wrote without trusting the code under test.
//!
//! A missing `redis-server` is a failure with install advice, never a skip: `scripts/test.sh`
//! installs it on a fresh machine.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer after it was started.
const START: Duration = Duration::from_secs(10);
/// The longest a test's command may wait for an answer.
const ANSWER: Duration = Duration::from_secs(5);

/// Panics with installation advice unless `redis-server` is on `PATH`.
pub fn require_redis() {
    let version = Command::new("redis-server").arg("--version").output();
    assert!(
        version.is_ok_and(|out| out.status.success()),
        "the shared-store tests need redis-server on PATH (Debian: apt-get install redis-server; \
         scripts/test.sh installs it when run as root)"
    );
}

/// A running `redis-server` of a test's own; killed when dropped, its directory removed.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers `PING`.
    pub fn start() -> RedisServer {
        require_redis();
        let mut dir = tempfile::tempdir().expect("a directory for the append-only file");
        // The port is free when asked; should another process take it before the server
        // binds, the server exits and another port is tried.
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                port,
                dir,
                child: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(_) => dir = server.into_dir(),
            }
        }
        panic!("redis-server did not start on a free loopback port in five tries");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the process is running (it may still be starting).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the server as a crash would (`SIGKILL`): what the append-only file holds
    /// survives, nothing else. The port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory; it reloads its data.
    ///
    /// # Panics
    ///
    /// When it does not answer within ten seconds.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(error) = self.spawn() {
            panic!(
                "redis-server did not restart on port {}: {error}",
                self.port
            );
        }
    }

    /// A fresh connection.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub fn connect(&self) -> io::Result<Connection> {
        Connection::open(self.port)
    }

    /// Every key and its value as bytes (strings, hashes' fields and values, lists' and
    /// sets' members), for tests that look for what must never be stored.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or answers something unexpected.
    pub fn dump(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut connection = self.connect()?;
        let mut dumped = Vec::new();
        let mut cursor = b"0".to_vec();
        loop {
            let reply = connection.command(&[b"SCAN", &cursor, b"COUNT", b"1000"])?;
            let Reply::Array(mut parts) = reply else {
                return Err(unexpected("SCAN", &reply));
            };
            let (Some(Reply::Array(keys)), Some(Reply::Bulk(Some(next)))) =
                (parts.pop(), parts.pop())
            else {
                return Err(unexpected("SCAN", &Reply::Array(parts)));
            };
            for key in keys {
                let Reply::Bulk(Some(key)) = key else {
                    return Err(unexpected("a key", &key));
                };
                let value = connection.value_bytes(&key)?;
                dumped.push((key, value));
            }
            if next == b"0" {
                return Ok(dumped);
            }
            cursor = next;
        }
    }

    fn spawn(&mut self) -> io::Result<()> {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + START;
        loop {
            if !self.is_running() {
                self.stop();
                return Err(io::Error::other("redis-server exited"));
            }
            if let Ok(Reply::Simple(pong)) = self.connect().and_then(|mut c| c.command(&[b"PING"]))
                && pong == "PONG"
            {
                // With the append-only file on, a restarted server answers `LOADING` until
                // its data is back; `PING` is answered only after that.
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no PONG"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn into_dir(mut self) -> tempfile::TempDir {
        self.stop();
        let placeholder = tempfile::tempdir().expect("a temporary directory");
        std::mem::replace(&mut self.dir, placeholder)
    }

    /// Its directory, where the append-only file lives.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR …`.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3 abc`, or `$-1` (none).
    Bulk(Option<Vec<u8>>),
    /// `*2 …`, or `*-1` (none, as an empty array).
    Array(Vec<Reply>),
}

/// A plain RESP connection to a test's server.
#[derive(Debug)]
pub struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn open(port: u16) -> io::Result<Connection> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        stream.set_read_timeout(Some(ANSWER))?;
        stream.set_write_timeout(Some(ANSWER))?;
        Ok(Connection {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply.
    ///
    /// # Errors
    ///
    /// I/O errors, and replies that are not RESP.
    pub fn command(&mut self, arguments: &[&[u8]]) -> io::Result<Reply> {
        let mut request = format!("*{}\r\n", arguments.len()).into_bytes();
        for argument in arguments {
            request.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
            request.extend_from_slice(argument);
            request.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&request)?;
        self.reply()
    }

    /// The bytes of `key`'s value, whatever its type: a string as it is, a hash's fields and
    /// values, a list's, set's or sorted set's members, each followed by a newline.
    fn value_bytes(&mut self, key: &[u8]) -> io::Result<Vec<u8>> {
        let kind = self.command(&[b"TYPE", key])?;
        let reply = match &kind {
            Reply::Simple(kind) if kind == "string" => self.command(&[b"GET", key])?,
            Reply::Simple(kind) if kind == "hash" => self.command(&[b"HGETALL", key])?,
            Reply::Simple(kind) if kind == "list" => {
                self.command(&[b"LRANGE", key, b"0", b"-1"])?
            }
            Reply::Simple(kind) if kind == "set" => self.command(&[b"SMEMBERS", key])?,
            Reply::Simple(kind) if kind == "zset" => {
                self.command(&[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"])?
            }
            // Gone since the scan.
            Reply::Simple(kind) if kind == "none" => Reply::Bulk(None),
            other => return Err(unexpected("TYPE", other)),
        };
        let mut bytes = Vec::new();
        flatten(&reply, &mut bytes);
        Ok(bytes)
    }

    fn reply(&mut self) -> io::Result<Reply> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        let Some(line) = line.strip_suffix(b"\r\n") else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "reply cut short",
            ));
        };
        let (&kind, rest) = line
            .split_first()
            .ok_or_else(|| io::Error::other("an empty reply line"))?;
        let text = String::from_utf8_lossy(rest).into_owned();
        let number = || {
            text.parse::<i64>()
                .map_err(|_| io::Error::other(format!("not a number: {text:?}")))
        };
        Ok(match kind {
            b'+' => Reply::Simple(text.clone()),
            b'-' => Reply::Error(text.clone()),
            b':' => Reply::Integer(number()?),
            b'$' => match usize::try_from(number()?) {
                Err(_) => Reply::Bulk(None),
                Ok(length) => {
                    let mut bulk = vec![0; length + 2];
                    self.reader.read_exact(&mut bulk)?;
                    bulk.truncate(length);
                    Reply::Bulk(Some(bulk))
                }
            },
            b'*' => match usize::try_from(number()?) {
                Err(_) => Reply::Array(Vec::new()),
                Ok(count) => Reply::Array(
                    (0..count)
                        .map(|_| self.reply())
                        .collect::<io::Result<Vec<_>>>()?,
                ),
            },
            other => {
                return Err(io::Error::other(format!(
                    "unknown reply type {:?}",
                    other as char
                )));
            }
        })
    }
}

/// Appends every byte string `reply` holds to `bytes`, each followed by a newline.
fn flatten(reply: &Reply, bytes: &mut Vec<u8>) {
    match reply {
        Reply::Simple(text) | Reply::Error(text) => bytes.extend_from_slice(text.as_bytes()),
        Reply::Integer(number) => bytes.extend_from_slice(number.to_string().as_bytes()),
        Reply::Bulk(Some(bulk)) => bytes.extend_from_slice(bulk),
        Reply::Bulk(None) => return,
        Reply::Array(items) => {
            for item in items {
                flatten(item, bytes);
            }
            return;
        }
    }
    bytes.push(b'\n');
}

fn unexpected(what: &str, reply: &Reply) -> io::Error {
    io::Error::other(format!("unexpected answer to {what}: {reply:?}"))
}
