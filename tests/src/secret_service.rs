//! A real Secret Service for the OS-keyring tests: `gnome-keyring-daemon` on a private D-Bus
//! session bus of the test's own, with an unlocked default (`login`) collection, all in a
//! temporary directory that stands in for `HOME`, the XDG directories and `XDG_RUNTIME_DIR`,
//! so nothing touches the real user's keyring or session.
//!
//! The bus is a `dbus-daemon` with a configuration of its own: it listens on a socket in the
//! temporary directory and knows no `.service` files, so nothing is ever started on demand.
//! Two things follow:
//! - [`SecretService::bus_without_secret_service`] is a bus on which nobody owns
//!   `org.freedesktop.secrets` (a desktop's bus would start gnome-keyring for the first caller);
//! - no unlock prompter can be started, so a client that finds the collection locked has its
//!   prompt dismissed at once instead of waiting for a person (with the `keyring` crate:
//!   `Error::NoStorageAccess`, "prompt dismissed").
//!
//! The daemon runs headless, as any user (root included), started with
//! `gnome-keyring-daemon --foreground --unlock --components=secrets` and a password on its
//! standard input: it creates the login collection with that password, makes it the default
//! and unlocks it. [`SecretService::lock`] locks it over D-Bus (`Service.Lock`);
//! [`SecretService::unlock`] gives the password back through the daemon's control socket, as
//! a login manager does. What a test stored is read back with `gdbus` and `secret-tool`
//! ([`SecretService::items`]), never through the code under test.
//!
//! Missing tools are failures with install advice, never skips: `scripts/test.sh` installs
//! them on a fresh machine.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the bus and the daemon may take to be ready.
const START: Duration = Duration::from_secs(15);
/// The longest one helper command (`gdbus`, `secret-tool`) or control-socket exchange may take.
const ANSWER: Duration = Duration::from_secs(10);
/// The login collection's password.
const PASSWORD: &str = "latchkey-test-keyring";
/// The default collection, whatever it is called.
const DEFAULT_COLLECTION: &str = "/org/freedesktop/secrets/aliases/default";
/// The Secret Service's bus name.
const SECRETS: &str = "org.freedesktop.secrets";
/// The attribute that names an item's schema.
const SCHEMA: &str = "xdg:schema";
/// The schema gnome-keyring gives items stored without one.
const GENERIC: &str = "org.freedesktop.Secret.Generic";
/// Longer socket paths do not fit a `sockaddr_un` (108 bytes) with room to spare.
const LONGEST_BASE: usize = 60;

/// The tools a Secret Service needs, and the Debian package of each.
const TOOLS: [(&str, &str); 4] = [
    ("dbus-daemon", "dbus"),
    ("gnome-keyring-daemon", "gnome-keyring"),
    ("secret-tool", "libsecret-tools"),
    ("gdbus", "libglib2.0-bin"),
];

/// Panics with installation advice unless every tool in `tools` is on `PATH`.
fn require(tools: &[(&str, &str)]) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<(&str, &str)> = tools
        .iter()
        .copied()
        .filter(|(tool, _)| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .collect();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|(tool, _)| *tool).collect();
        let packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
        panic!(
            "the keyring tests need {} on PATH (Debian: apt-get install {}; scripts/test.sh \
             installs them when run as root)",
            names.join(", "),
            packages.join(" ")
        );
    }
}

/// Panics with installation advice unless every tool the Secret Service needs is on `PATH`:
/// `dbus-daemon` (Debian's `dbus`), `gnome-keyring-daemon` (`gnome-keyring`), `secret-tool`
/// (`libsecret-tools`) and `gdbus` (`libglib2.0-bin`).
pub fn require_secret_service_tools() {
    require(&TOOLS);
}

/// A private session bus, with or without gnome-keyring on it; both are killed when dropped
/// and the temporary directory removed.
#[derive(Debug)]
pub struct SecretService {
    dir: tempfile::TempDir,
    address: String,
    bus: Child,
    keyring: Option<Child>,
}

impl SecretService {
    /// Starts a private bus and gnome-keyring on it with an unlocked default collection, and
    /// waits until the collection answers.
    ///
    /// # Panics
    ///
    /// When a tool is missing (with install advice), or the bus or the daemon does not start
    /// within fifteen seconds (with what they logged).
    pub fn start() -> SecretService {
        require(&TOOLS);
        let mut service = SecretService::bus();
        let log = service.file("keyring.log");
        let mut keyring = service
            .command("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(
                log.try_clone()
                    .expect("a second handle on the daemon's log"),
            )
            .stderr(log)
            .spawn()
            .expect("gnome-keyring-daemon starts");
        // The password is read to the end of standard input: write it, then close it.
        let mut stdin = keyring.stdin.take().expect("the daemon's standard input");
        let written = stdin.write_all(PASSWORD.as_bytes());
        drop(stdin);
        service.keyring = Some(keyring);
        if let Err(error) = written {
            panic!(
                "gnome-keyring-daemon did not take its password: {error}\n{}",
                service.log("keyring.log")
            );
        }
        let deadline = Instant::now() + START;
        loop {
            if let Some(status) = service.keyring_exit() {
                panic!(
                    "gnome-keyring-daemon exited ({status}) before its collection was ready:\n{}",
                    service.log("keyring.log")
                );
            }
            match service.locked() {
                Ok(false) => return service,
                // Still loading, or locked for good: told apart by the deadline.
                Ok(true) if Instant::now() >= deadline => panic!(
                    "gnome-keyring-daemon's default collection is still locked after {START:?}:\n{}",
                    service.log("keyring.log")
                ),
                Err(error) if Instant::now() >= deadline => panic!(
                    "gnome-keyring-daemon's default collection did not answer within {START:?}: \
                     {error}\n{}",
                    service.log("keyring.log")
                ),
                Ok(true) | Err(_) => std::thread::sleep(Duration::from_millis(25)),
            }
        }
    }

    /// A private bus with no Secret Service on it: nobody owns `org.freedesktop.secrets`,
    /// and nothing is started on demand when a client asks for it.
    ///
    /// # Panics
    ///
    /// When `dbus-daemon` is missing (with install advice) or does not start within fifteen
    /// seconds.
    pub fn bus_without_secret_service() -> SecretService {
        require(&TOOLS[..1]);
        SecretService::bus()
    }

    /// The temporary directory and the bus in it, with its address read from the daemon.
    fn bus() -> SecretService {
        let base = std::env::temp_dir();
        let base = if base.as_os_str().len() > LONGEST_BASE {
            PathBuf::from("/tmp")
        } else {
            base
        };
        let dir = tempfile::Builder::new()
            .prefix("latchkey-ss-")
            .tempdir_in(&base)
            .expect("a temporary directory for the Secret Service");
        for sub in ["home", "data", "config", "cache", "runtime"] {
            fs::create_dir(dir.path().join(sub)).expect("a directory of the private session");
        }
        // `XDG_RUNTIME_DIR` must be private to its user; gnome-keyring checks.
        fs::set_permissions(
            dir.path().join("runtime"),
            fs::Permissions::from_mode(0o700),
        )
        .expect("the runtime directory made private");
        let socket = dir.path().join("runtime/bus");
        let config = dir.path().join("bus.conf");
        fs::write(&config, bus_config(&socket)).expect("the bus configuration written");
        let log = File::create(dir.path().join("bus.log")).expect("the bus's log");
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("dbus-daemon starts");
        // The address is printed once the bus listens; the reading thread ends with the pipe.
        let stdout = bus.stdout.take().expect("the bus's standard output");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(read.map(|_| line));
        });
        let address = match receiver.recv_timeout(START) {
            Ok(Ok(line)) if !line.trim().is_empty() => line.trim().to_owned(),
            outcome => {
                let _ = bus.kill();
                let _ = bus.wait();
                panic!(
                    "dbus-daemon printed no address ({outcome:?}):\n{}",
                    fs::read_to_string(dir.path().join("bus.log")).unwrap_or_default()
                );
            }
        };
        SecretService {
            dir,
            address,
            bus,
            keyring: None,
        }
    }

    /// The bus's address, for `DBUS_SESSION_BUS_ADDRESS` (`unix:path=…,guid=…`).
    pub fn bus_address(&self) -> &str {
        &self.address
    }

    /// What a child process needs to use this bus as its session bus:
    /// `DBUS_SESSION_BUS_ADDRESS`, and `XDG_RUNTIME_DIR` (the private directory holding the
    /// bus's socket, where a client that ignores the address would look for `bus`).
    ///
    /// A test of a machine with no session bus at all removes both variables instead: without
    /// `DBUS_SESSION_BUS_ADDRESS`, zbus and libdbus try `$XDG_RUNTIME_DIR/bus`, which is
    /// `/run/user/UID/bus` on a desktop, the real user's bus.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DBUS_SESSION_BUS_ADDRESS".to_owned(), self.address.clone()),
            (
                "XDG_RUNTIME_DIR".to_owned(),
                self.runtime_dir().display().to_string(),
            ),
        ]
    }

    /// The private `XDG_RUNTIME_DIR`: the bus's socket `bus` and gnome-keyring's `keyring/`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("runtime")
    }

    /// Whether the default collection is locked, as the daemon says over D-Bus.
    ///
    /// # Panics
    ///
    /// When there is no Secret Service on the bus or it does not answer.
    pub fn is_locked(&self) -> bool {
        self.require_keyring("is_locked");
        self.locked()
            .unwrap_or_else(|error| panic!("the default collection's lock state: {error}"))
    }

    /// Locks the default collection (`org.freedesktop.Secret.Service.Lock`, which needs no
    /// prompt): its items stay listed, their secrets cannot be read or written until
    /// [`SecretService::unlock`].
    ///
    /// # Panics
    ///
    /// When there is no Secret Service on the bus, or the collection is not locked after.
    pub fn lock(&self) {
        self.require_keyring("lock");
        let reply = self
            .gdbus(&[
                "--object-path",
                "/org/freedesktop/secrets",
                "--method",
                "org.freedesktop.Secret.Service.Lock",
                &format!("['{DEFAULT_COLLECTION}']"),
            ])
            .unwrap_or_else(|error| panic!("locking the default collection: {error}"));
        assert!(
            self.is_locked(),
            "the default collection is still unlocked after Lock answered {reply:?}"
        );
    }

    /// Unlocks the default collection with its password, through gnome-keyring's control
    /// socket (what a login manager does), without any prompt.
    ///
    /// # Panics
    ///
    /// When there is no Secret Service on the bus, the daemon refuses, or the collection is
    /// still locked after.
    pub fn unlock(&self) {
        self.require_keyring("unlock");
        let control = self.runtime_dir().join("keyring/control");
        let result = control_unlock(&control, PASSWORD)
            .unwrap_or_else(|error| panic!("unlocking through {}: {error}", control.display()));
        assert_eq!(
            result, 0,
            "gnome-keyring refused to unlock the login collection (control result {result}; \
             0 is OK, 1 denied, 2 failed)"
        );
        assert!(
            !self.is_locked(),
            "the default collection is still locked after the daemon said OK"
        );
    }

    /// Every item of the default collection: its attributes and its secret's bytes, sorted.
    /// Read with `gdbus` (paths, labels, attributes) and `secret-tool search --all` (secrets),
    /// never through the code under test.
    ///
    /// gnome-keyring adds `xdg:schema=org.freedesktop.Secret.Generic` to an item that has no
    /// schema, at some point after it was written (when it reads its file back), so that one
    /// attribute is left out; any other `xdg:schema` is kept.
    ///
    /// A secret containing a line that starts `created = ` followed by a date is misread; no
    /// token or JSON document does.
    ///
    /// # Panics
    ///
    /// When there is no Secret Service on the bus, the collection is locked (call
    /// [`SecretService::unlock`] first), or a tool's answer cannot be read.
    pub fn items(&self) -> Vec<(BTreeMap<String, String>, Vec<u8>)> {
        self.require_keyring("items");
        assert!(
            !self.is_locked(),
            "items() reads secrets, which a locked collection keeps: unlock() first"
        );
        let paths = quoted_strings(&self.property(
            DEFAULT_COLLECTION,
            "org.freedesktop.Secret.Collection",
            "Items",
        ));
        let mut items: Vec<(BTreeMap<String, String>, Vec<u8>)> = paths
            .iter()
            .map(|path| {
                let attributes = self.property(path, "org.freedesktop.Secret.Item", "Attributes");
                let attributes = pairs(quoted_strings(&attributes))
                    .unwrap_or_else(|| panic!("{path}'s attributes: {attributes}"));
                let label =
                    quoted_strings(&self.property(path, "org.freedesktop.Secret.Item", "Label"))
                        .pop()
                        .unwrap_or_default();
                let secret = self.secret(path, &label, &attributes);
                let mut attributes = attributes;
                if attributes
                    .get(SCHEMA)
                    .is_some_and(|schema| schema == GENERIC)
                {
                    attributes.remove(SCHEMA);
                }
                (attributes, secret)
            })
            .collect();
        items.sort();
        items
    }

    /// One item's secret, from `secret-tool search --all` on its attributes: the output block
    /// whose header is the item's number and whose label is its label.
    fn secret(&self, path: &str, label: &str, attributes: &BTreeMap<String, String>) -> Vec<u8> {
        assert!(
            !attributes.is_empty(),
            "{path} has no attributes, so secret-tool cannot find it"
        );
        // `secret-tool search` prints attributes on standard error, the rest on standard
        // output, flushing each line: one pipe for both keeps them in order.
        let mut command = self.command("sh");
        command.args([
            "-c",
            "exec secret-tool search --all \"$@\" 2>&1",
            "secret-tool",
        ]);
        for (key, value) in attributes {
            command.arg(key).arg(value);
        }
        let (status, output) =
            run(command).unwrap_or_else(|error| panic!("secret-tool search for {path}: {error}"));
        assert!(
            status.success(),
            "secret-tool search for {path} failed ({status}): {}",
            String::from_utf8_lossy(&output)
        );
        let number = path.rsplit('/').next().unwrap_or(path);
        let header = format!("[/{number}]\nlabel = {label}\nsecret = ");
        let start = find(&output, header.as_bytes(), 0)
            .map(|at| at + header.len())
            .unwrap_or_else(|| {
                panic!(
                    "secret-tool search printed no secret for {path}: {}",
                    String::from_utf8_lossy(&output)
                )
            });
        let end = secret_end(&output, start).unwrap_or_else(|| {
            panic!(
                "secret-tool search's block for {path} has no dates after its secret: {}",
                String::from_utf8_lossy(&output)
            )
        });
        output[start..end].to_vec()
    }

    /// One D-Bus property of an object of the Secret Service, as `gdbus` prints it.
    fn property(&self, path: &str, interface: &str, name: &str) -> String {
        self.gdbus(&[
            "--object-path",
            path,
            "--method",
            "org.freedesktop.DBus.Properties.Get",
            interface,
            name,
        ])
        .unwrap_or_else(|error| panic!("{interface}.{name} of {path}: {error}"))
    }

    /// Whether the default collection is locked, or why that could not be told.
    fn locked(&self) -> Result<bool, String> {
        let reply = self.gdbus(&[
            "--object-path",
            DEFAULT_COLLECTION,
            "--method",
            "org.freedesktop.DBus.Properties.Get",
            "org.freedesktop.Secret.Collection",
            "Locked",
        ])?;
        match reply.trim() {
            "(<true>,)" => Ok(true),
            "(<false>,)" => Ok(false),
            other => Err(format!("an unexpected answer: {other}")),
        }
    }

    /// `gdbus call` to the Secret Service on this bus; its output, or why it failed.
    fn gdbus(&self, arguments: &[&str]) -> Result<String, String> {
        let mut command = self.command("gdbus");
        command
            .args(["call", "--session", "--timeout", "5", "--dest", SECRETS])
            .args(arguments);
        let (status, output) = run(command)?;
        let output = String::from_utf8_lossy(&output).into_owned();
        if status.success() {
            Ok(output)
        } else {
            Err(format!("gdbus {arguments:?} failed ({status}): {output}"))
        }
    }

    /// A command that sees only the private session: its bus, home and XDG directories.
    fn command(&self, program: &str) -> Command {
        let dir = self.dir.path();
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.join("home"))
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address);
        command
    }

    /// Panics unless gnome-keyring was started on this bus.
    fn require_keyring(&self, what: &str) {
        assert!(
            self.keyring.is_some(),
            "{what}() needs a Secret Service: this bus was started without one"
        );
    }

    /// The daemon's exit status, if it has exited.
    fn keyring_exit(&mut self) -> Option<ExitStatus> {
        self.keyring
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// A new log file in the temporary directory.
    fn file(&self, name: &str) -> File {
        File::create(self.dir.path().join(name)).expect("a log file")
    }

    /// What a daemon logged so far.
    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        for child in self.keyring.iter_mut().chain(Some(&mut self.bus)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A session bus configuration: one socket, anyone may own any name, no `.service` files
/// (nothing is started on demand).
fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// Runs `command` to its end within [`ANSWER`]: its status and its standard output followed
/// by its standard error, or why it could not run.
fn run(mut command: Command) -> Result<(ExitStatus, Vec<u8>), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("{program} did not start: {error}"))?;
    // Read both pipes while waiting, so that a long output cannot block the child.
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    })
    .collect();
    let deadline = Instant::now() + ANSWER;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("{program} did not finish within {ANSWER:?}"));
            }
            Err(error) => break Err(format!("waiting for {program}: {error}")),
        }
    };
    let mut output = Vec::new();
    for reader in readers {
        output.extend(reader.join().unwrap_or_default());
    }
    status.map(|status| (status, output))
}

/// Sends the login password to gnome-keyring's control socket (`GKD_CONTROL_OP_UNLOCK`) and
/// returns its result code (0 OK, 1 denied, 2 failed).
///
/// The protocol: one credentials byte, then a packet of big-endian words: its length (itself
/// included), the operation (1), the password's length and the password. The answer is a
/// packet of two words: its length (8) and the result.
fn control_unlock(control: &Path, password: &str) -> std::io::Result<u32> {
    let mut stream = UnixStream::connect(control)?;
    stream.set_read_timeout(Some(ANSWER))?;
    stream.set_write_timeout(Some(ANSWER))?;
    let length = u32::try_from(password.len()).map_err(std::io::Error::other)?;
    let mut packet = Vec::with_capacity(13 + password.len());
    packet.push(0);
    packet.extend_from_slice(&(12 + length).to_be_bytes());
    packet.extend_from_slice(&1u32.to_be_bytes());
    packet.extend_from_slice(&length.to_be_bytes());
    packet.extend_from_slice(password.as_bytes());
    stream.write_all(&packet)?;
    let mut answer = [0; 8];
    stream.read_exact(&mut answer)?;
    let [l0, l1, l2, l3, r0, r1, r2, r3] = answer;
    let size = u32::from_be_bytes([l0, l1, l2, l3]);
    if size != 8 {
        return Err(std::io::Error::other(format!(
            "an answer of {size} bytes, not 8"
        )));
    }
    Ok(u32::from_be_bytes([r0, r1, r2, r3]))
}

/// The strings quoted in a GVariant text (what `gdbus` prints), in order, unescaped: the
/// object paths of an `ao`, the keys and values of an `a{ss}`, one `s`.
fn quoted_strings(text: &str) -> Vec<String> {
    let mut strings = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\'' && c != '"' {
            continue;
        }
        let quote = c;
        let mut string = String::new();
        while let Some(c) = chars.next() {
            match c {
                _ if c == quote => break,
                '\\' => {
                    let escaped = match chars.next() {
                        Some('a') => Some('\u{7}'),
                        Some('b') => Some('\u{8}'),
                        Some('f') => Some('\u{c}'),
                        Some('n') => Some('\n'),
                        Some('r') => Some('\r'),
                        Some('t') => Some('\t'),
                        Some('v') => Some('\u{b}'),
                        Some('u') => hex_char(&mut chars, 4),
                        Some('U') => hex_char(&mut chars, 8),
                        other => other,
                    };
                    string.extend(escaped);
                }
                _ => string.push(c),
            }
        }
        strings.push(string);
    }
    strings
}

/// The character of the next `digits` hexadecimal digits.
fn hex_char(chars: &mut std::str::Chars<'_>, digits: usize) -> Option<char> {
    let hex: String = chars.by_ref().take(digits).collect();
    u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
}

/// Keys and values, alternating, as a map; `None` for an odd count.
fn pairs(strings: Vec<String>) -> Option<BTreeMap<String, String>> {
    if strings.len() % 2 != 0 {
        return None;
    }
    let mut map = BTreeMap::new();
    let mut strings = strings.into_iter();
    while let (Some(key), Some(value)) = (strings.next(), strings.next()) {
        map.insert(key, value);
    }
    Some(map)
}

/// Where `needle` first occurs in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| from + at)
}

/// Where a secret that `secret-tool search` printed from `start` on ends: at the first
/// `\ncreated = YYYY-MM-DD HH:MM:SS\nmodified = `.
fn secret_end(output: &[u8], start: usize) -> Option<usize> {
    const CREATED: &[u8] = b"\ncreated = ";
    // `YYYY-MM-DD HH:MM:SS`: digits except at these places.
    const DATE: &[u8] = b"0000-00-00 00:00:00";
    const MODIFIED: &[u8] = b"\nmodified = ";
    let mut from = start;
    while let Some(at) = find(output, CREATED, from) {
        let date_at = at + CREATED.len();
        let date = output
            .get(date_at..date_at + DATE.len())
            .unwrap_or_default();
        let dated = date.len() == DATE.len()
            && date.iter().zip(DATE).all(|(&byte, &shape)| {
                if shape == b'0' {
                    byte.is_ascii_digit()
                } else {
                    byte == shape
                }
            });
        if dated && output[date_at + DATE.len()..].starts_with(MODIFIED) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gvariant_strings_are_unescaped_in_order() {
        assert_eq!(
            quoted_strings(
                "(<{'service': 'latchkey', 'it\\'s': \"a \\\"b\\\" \\\\ \\n\\u00e9\"}>,)"
            ),
            ["service", "latchkey", "it's", "a \"b\" \\ \né"]
        );
        assert_eq!(
            quoted_strings("(<[objectpath '/a/1', '/a/2']>,)"),
            ["/a/1", "/a/2"]
        );
        assert!(quoted_strings("(<@ao []>,)").is_empty());
        assert_eq!(
            pairs(quoted_strings("(<@a{ss} {}>,)")),
            Some(BTreeMap::new())
        );
        assert_eq!(pairs(vec!["odd".to_owned()]), None);
    }

    #[test]
    fn a_secret_ends_at_the_dates_that_follow_it() {
        let output = b"[/1]\nlabel = x\nsecret = a\ncreated = soon\nb\n\
                       created = 2026-01-02 03:04:05\nmodified = 2026-01-02 03:04:05\n";
        let start = find(output, b"secret = ", 0).map(|at| at + 9);
        let end = start.and_then(|start| secret_end(output, start));
        assert_eq!(
            start.zip(end).map(|(start, end)| &output[start..end]),
            Some(&b"a\ncreated = soon\nb"[..])
        );
        assert_eq!(secret_end(b"secret = x\ncreated = no", 0), None);
    }
}
