//! What a person sees on a terminal: the real `latchkey` run inside tmux (a 120×40 pane),
//! its screen read back with `tmux capture-pane` (`-e` for the colour escapes), against the
//! development identity provider (`latchkey dev-idp` in a window of its own, or the same
//! server in this process when the test must approve or deny a device code).
//!
//! Checked: the spinner while a login waits (it turns, it keeps to one line, a shorter text
//! leaves nothing of a longer one, nothing else lands on its line, nothing is left of it
//! when the command ends); the success lines; colour on a terminal, never with `NO_COLOR`
//! (an empty `NO_COLOR` does not count), never on a stream that is not a terminal, never
//! with `--json`; an `Error:` with what to do next for every failure tried.
//!
//! Every test has its own tmux server (`-L`, a unique socket name), killed when the test
//! ends however it ends; every wait has a deadline. tmux is required: without it the tests
//! fail and say how to install it.
#![cfg(unix)]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use latchkey_devidp::agent;
use latchkey_devidp::{Client, ClientAuth, Config, DevIdp};
use serde_json::Value;
use tempfile::TempDir;

/// Longest any one thing may take to show on the screen.
const WAIT: Duration = Duration::from_secs(20);
/// How often the screen is read while waiting.
const POLL: Duration = Duration::from_millis(30);
/// Comfortably more than two of the spinner's ticks (120 ms): long enough for a spinner
/// that should not be there to show.
const TICKS: Duration = Duration::from_millis(400);
/// A login that outlives its test ends by itself after this (`--timeout`).
const LOGIN_TIMEOUT: &str = "60";
/// The client `latchkey dev-idp` registers by default, a public one.
const DEV_CLIENT_ID: &str = "latchkey-dev";
/// The client of the identity providers started in this process.
const CLIENT_ID: &str = "latchkey-terminal-test";
/// What a browser login shows while it waits.
const WAITING_FOR_BROWSER: &str = "Waiting for you to sign in in the browser…";
/// What a device login shows while it waits, before the time left.
const WAITING_FOR_APPROVAL: &str = "Waiting for you to approve; the code expires in ";
/// The spinner's frames.
const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
/// How the palette's words look on the screen.
const PLAIN: Look = Look {
    bold: false,
    fg: None,
};
const BOLD: Look = Look {
    bold: true,
    fg: None,
};
const GREEN: Look = Look {
    bold: false,
    fg: Some(2),
};
const YELLOW: Look = Look {
    bold: false,
    fg: Some(3),
};
const BOLD_RED: Look = Look {
    bold: true,
    fg: Some(1),
};

// ---- tmux ---------------------------------------------------------------------------

/// A tmux server of one test, with session `t`; every program runs in a window of its own,
/// followed by an `[exited N]` line. Dropping it kills the server and what runs in it.
struct Tmux {
    socket: String,
    dir: TempDir,
    env: Vec<(String, OsString)>,
    /// The server's socket, once it runs (tmux leaves the file behind).
    socket_path: Option<PathBuf>,
}

/// How the programs in a [`Tmux`] are run.
#[derive(Clone, Copy, Default)]
struct Env {
    /// `NO_COLOR`'s value; unset when `None`.
    no_color: Option<&'static str>,
}

impl Tmux {
    /// A server named after `test`, its windows 120×40, their environment: a display and a
    /// `xdg-open` (and `BROWSER`) that only records the URL it is given (see
    /// [`Tmux::opened`]), a `HOME` that is not the user's, no proxy, `NO_COLOR` as `env`
    /// says.
    fn new(test: &str, env: Env) -> Tmux {
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        require_tmux();
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket = format!(
            "latchkey-test-{}-{}-{test}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::SeqCst)
        );
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("creating bin/");
        let opener = bin.join("xdg-open");
        let opened = dir.path().join("opened");
        std::fs::write(
            &opener,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$1\" > '{0}.part' && mv '{0}.part' '{0}'\n",
                opened.display()
            ),
        )
        .expect("writing the fake xdg-open");
        set_executable(&opener);
        std::fs::write(
            dir.path().join("tmux.conf"),
            "set -g default-size 120x40\nset -g history-limit 10000\n",
        )
        .expect("writing tmux.conf");
        let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .expect("PATH");
        let home = dir.path().join("home");
        let mut vars: Vec<(String, OsString)> = vec![
            ("PATH".into(), path),
            ("HOME".into(), home.clone().into()),
            ("XDG_CONFIG_HOME".into(), home.into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("TERM".into(), "xterm-256color".into()),
            ("DISPLAY".into(), ":99".into()),
            ("BROWSER".into(), opener.into()),
        ];
        if let Some(no_color) = env.no_color {
            vars.push(("NO_COLOR".into(), no_color.into()));
        }
        Tmux {
            socket,
            dir,
            env: vars,
            socket_path: None,
        }
    }

    /// `tmux ARGS` on this server, in this test's environment only.
    fn tmux(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .env_clear()
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .arg("-u")
            .arg("-f")
            .arg(self.dir.path().join("tmux.conf"))
            .args(["-L", &self.socket]);
        command
    }

    /// Runs `tmux ARGS`, which must succeed; its stdout.
    fn run_tmux(&self, args: &[&str]) -> String {
        let output = self
            .tmux()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running tmux {args:?}: {e}"));
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts `latchkey ARGS` in the window `window` of a terminal of its own; `redirect`
    /// (shell syntax, such as `2>FILE`) is added to its command line.
    fn start(&mut self, window: &str, args: &[&str], redirect: &str) {
        // What a person's shell would do: run it, then the prompt on a line of its own. The
        // window stays open a while afterwards for its screen to be read.
        let script = format!("\"$@\" {redirect}; echo \"[exited $?]\"; exec sleep 120");
        let started = self.socket_path.is_some();
        let mut tmux_args: Vec<&str> = if started {
            vec!["new-window", "-d", "-t", "t:", "-n", window]
        } else {
            vec![
                "new-session",
                "-d",
                "-s",
                "t",
                "-n",
                window,
                "-x",
                "120",
                "-y",
                "40",
            ]
        };
        tmux_args.extend(["sh", "-c", &script, "sh", env!("CARGO_BIN_EXE_latchkey")]);
        tmux_args.extend(args);
        self.run_tmux(&tmux_args);
        if !started {
            let path = self.run_tmux(&["display-message", "-p", "#{socket_path}"]);
            self.socket_path = Some(PathBuf::from(path.trim_end()));
        }
    }

    /// The screen of `window` and what scrolled off it, wrapped lines joined, lines
    /// trimmed at the end; with `escapes`, the colour and attribute escapes as well.
    fn capture(&self, window: &str, escapes: bool) -> String {
        let target = format!("t:{window}");
        let mut args = vec!["capture-pane", "-p", "-J", "-S", "-", "-t", &target];
        if escapes {
            args.push("-e");
        }
        let text = self.run_tmux(&args);
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        lines.join("\n").trim_end().to_owned()
    }

    fn screen(&self, window: &str) -> String {
        self.capture(window, false)
    }

    /// The screen of `window` with how each character is drawn.
    fn styled(&self, window: &str) -> Styled {
        Styled::parse(&self.capture(window, true))
    }

    /// Every window's screen, for a failure's message.
    fn screens(&self) -> String {
        let windows = self.run_tmux(&["list-windows", "-t", "t", "-F", "#{window_name}"]);
        windows
            .lines()
            .map(|window| format!("---- window {window}:\n{}\n", self.screen(window)))
            .collect()
    }

    /// Reads `window`'s screen until `done` holds for it (and returns it); fails the test,
    /// showing every window, when that takes longer than [`WAIT`].
    fn wait_for(&self, window: &str, what: &str, mut done: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen(window);
            if done(&screen) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{what}: not on the screen after {WAIT:?}\n{}",
                    self.screens()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Waits for the program in `window` to end; its exit code and the final screen.
    fn exit(&self, window: &str) -> (i32, String) {
        let screen = self.wait_for(window, "the end of the command", |screen| {
            exit_code(screen).is_some()
        });
        let code = exit_code(&screen).expect("an exit line");
        (code, screen)
    }

    /// Types `text` into `window`, then Enter.
    fn type_line(&self, window: &str, text: &str) {
        let target = format!("t:{window}");
        self.run_tmux(&["send-keys", "-t", &target, "-l", "--", text]);
        self.run_tmux(&["send-keys", "-t", &target, "Enter"]);
    }

    /// The URL the fake browser opener was given, once it was.
    fn opened(&self, window: &str) -> String {
        let file = self.dir.path().join("opened");
        self.wait_for(window, "the browser opened", |_| file.exists());
        let url = std::fs::read_to_string(&file).expect("reading the opened URL");
        url.trim_end().to_owned()
    }

    /// A file in this test's directory.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // The windows' programs get SIGHUP; a test that failed half-way leaves nothing.
        let _ = self.tmux().arg("kill-server").output();
        if let Some(socket_path) = &self.socket_path {
            let _ = std::fs::remove_file(socket_path);
        }
    }
}

/// Fails, with the advice to install it, when there is no tmux.
fn require_tmux() {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "these tests drive latchkey in tmux, which is not installed: apt-get install tmux \
         (Debian, Ubuntu), or your system's tmux package"
    );
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("making it executable");
}

// ---- reading a screen ---------------------------------------------------------------

/// The code of the `[exited N]` line, if the command ended.
fn exit_code(screen: &str) -> Option<i32> {
    screen.lines().find_map(|line| {
        line.strip_prefix("[exited ")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
}

/// Asserts that the command ended with `code` on a line of its own: the `[exited N]` line
/// starts at the left margin, so the command's last line (a spinner's included) ended.
fn assert_exit(screen: &str, code: i32) {
    let exit = format!("[exited {code}]");
    assert!(
        screen.lines().any(|line| line == exit),
        "no line {exit:?} on its own:\n{screen}"
    );
}

/// The lines that are a spinner frame, a space and then `text`: (frame, the rest).
fn spinner_lines<'s>(screen: &'s str, text: &str) -> Vec<(char, &'s str)> {
    screen
        .lines()
        .filter_map(|line| {
            let mut chars = line.chars();
            let frame = chars.next().filter(|c| FRAMES.contains(c))?;
            let rest = chars.as_str().strip_prefix(' ')?;
            rest.starts_with(text).then_some((frame, rest))
        })
        .collect()
}

/// Waits until the spinner showing `text` has shown two different frames, each time on
/// exactly one line; returns the last screen.
fn assert_spinner_turns(tmux: &Tmux, window: &str, text: &str) -> String {
    let mut frames = BTreeSet::new();
    tmux.wait_for(window, &format!("a turning spinner {text:?}"), |screen| {
        let lines = spinner_lines(screen, text);
        assert!(
            lines.len() <= 1,
            "the spinner writes one line, over and over, not one per tick:\n{screen}"
        );
        frames.extend(lines.iter().map(|(frame, _)| *frame));
        frames.len() >= 2
    })
}

/// Asserts that nothing of a spinner or of the waiting texts is left on the screen.
fn assert_no_spinner(screen: &str) {
    for text in [
        WAITING_FOR_BROWSER,
        WAITING_FOR_APPROVAL,
        "Asking the provider",
    ] {
        assert!(
            !screen.contains(text),
            "{text:?} is still on the screen:\n{screen}"
        );
    }
}

/// Asserts that `expected` appear on the screen in that order, each in a line after the
/// previous one's.
fn assert_in_order(screen: &str, expected: &[&str]) {
    let lines: Vec<&str> = screen.lines().collect();
    let mut from = 0;
    for text in expected {
        match lines[from..].iter().position(|line| line.contains(text)) {
            Some(at) => from += at + 1,
            None => panic!("{text:?} is not on the screen (in this order):\n{screen}"),
        }
    }
}

/// The one line of `screen` that contains `text`.
fn line_with<'s>(screen: &'s str, text: &str) -> &'s str {
    let lines: Vec<&str> = screen.lines().filter(|line| line.contains(text)).collect();
    match lines.as_slice() {
        [line] => line,
        _ => panic!("{} lines with {text:?}:\n{screen}", lines.len()),
    }
}

/// How a character is drawn: bold or not, and its foreground colour (0–7, 8–15 bright,
/// 16 anything else), if not the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Look {
    bold: bool,
    fg: Option<u8>,
}

/// A screen read with `capture-pane -e`: each line's characters and how each is drawn.
/// tmux writes only the changes from one character to the next, across lines too.
struct Styled {
    escaped: String,
    lines: Vec<Vec<(char, Look)>>,
}

impl Styled {
    fn parse(escaped: &str) -> Styled {
        let mut look = PLAIN;
        let mut lines = Vec::new();
        for text in escaped.lines() {
            let mut line = Vec::new();
            let mut chars = text.chars();
            while let Some(c) = chars.next() {
                if c != '\x1b' {
                    line.push((c, look));
                    continue;
                }
                // A control sequence: ESC [ parameters final-byte; only SGR (`m`) matters.
                assert_eq!(
                    chars.next(),
                    Some('['),
                    "an escape that is not CSI: {text:?}"
                );
                let mut parameters = String::new();
                let end = loop {
                    match chars.next() {
                        Some(c) if c.is_ascii_digit() || c == ';' => parameters.push(c),
                        other => break other,
                    }
                };
                if end == Some('m') {
                    look = sgr(look, &parameters);
                }
            }
            lines.push(line);
        }
        Styled {
            escaped: escaped.to_owned(),
            lines,
        }
    }

    /// How each character of `text` is drawn, where it first appears on the screen.
    fn looks(&self, text: &str) -> Vec<Look> {
        let wanted: Vec<char> = text.chars().collect();
        self.lines
            .iter()
            .find_map(|line| {
                line.windows(wanted.len())
                    .find(|window| window.iter().map(|(c, _)| *c).eq(wanted.iter().copied()))
                    .map(|window| window.iter().map(|(_, look)| *look).collect())
            })
            .unwrap_or_else(|| panic!("{text:?} is not on the screen: {:?}", self.escaped))
    }

    /// Asserts that all of `text` (where it first appears) is drawn as `look`.
    fn assert_look(&self, text: &str, look: Look) {
        let looks = self.looks(text);
        assert!(
            looks.iter().all(|drawn| *drawn == look),
            "{text:?} is not all {look:?} but {looks:?}; the screen: {:?}",
            self.escaped
        );
    }
}

/// `look` after the SGR sequence with `parameters`.
fn sgr(mut look: Look, parameters: &str) -> Look {
    let numbers: Vec<u16> = parameters
        .split(';')
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    let mut numbers = numbers.into_iter();
    while let Some(n) = numbers.next() {
        match n {
            0 => look = PLAIN,
            1 => look.bold = true,
            22 => look.bold = false,
            30..=37 => look.fg = Some((n - 30) as u8),
            90..=97 => look.fg = Some((n - 90 + 8) as u8),
            39 => look.fg = None,
            // 256 colours (5;n) or direct colour (2;r;g;b): none of the palette's.
            38 => {
                let skip = match numbers.next() {
                    Some(5) => 1,
                    Some(2) => 3,
                    _ => 0,
                };
                numbers.by_ref().take(skip).for_each(drop);
                look.fg = Some(16);
            }
            48 => {
                let skip = match numbers.next() {
                    Some(5) => 1,
                    Some(2) => 3,
                    _ => 0,
                };
                numbers.by_ref().take(skip).for_each(drop);
            }
            _ => {}
        }
    }
    look
}

/// Asserts that the screen (read with escapes) carries none.
fn assert_no_escapes(escaped: &str) {
    assert!(
        !escaped.contains('\x1b'),
        "escape sequences on the screen: {escaped:?}"
    );
}

// ---- identity providers ---------------------------------------------------------------

/// `latchkey dev-idp` in the window `idp`, as a person starts it, on a free port, for the
/// public client on any loopback port; returns the issuer it prints.
fn start_dev_idp(tmux: &mut Tmux) -> String {
    for _ in 0..3 {
        // Free a moment ago; should another program take it first, try another.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port()
            .to_string();
        let window = format!("idp-{port}");
        tmux.start(
            &window,
            &[
                "dev-idp",
                "--port",
                &port,
                "--redirect-uri",
                "http://127.0.0.1/callback",
            ],
            "",
        );
        let screen = tmux.wait_for(&window, "the identity provider's start", |screen| {
            screen.contains("redirect URIs:") || exit_code(screen).is_some()
        });
        if exit_code(&screen).is_some() {
            continue;
        }
        assert!(
            screen.contains("Development identity provider (Ctrl-C to stop)"),
            "{screen}"
        );
        let issuer = screen
            .lines()
            .find_map(|line| line.trim().strip_prefix("issuer:"))
            .unwrap_or_else(|| panic!("no issuer on the screen:\n{screen}"))
            .trim()
            .to_owned();
        assert_eq!(issuer, format!("http://127.0.0.1:{port}"));
        return issuer;
    }
    panic!("latchkey dev-idp could not start:\n{}", tmux.screens());
}

/// The development identity provider in this process, with its device grant: codes live
/// `expires_in`, no polling interval asked for (latchkey then polls every second).
fn start_idp(expires_in: Duration) -> DevIdp {
    let client = Client {
        id: CLIENT_ID.into(),
        secret: None,
        auth: ClientAuth::None,
        redirect_uris: vec!["http://127.0.0.1/callback".into()],
    };
    let mut config = Config::new(vec![client]);
    config.device_interval = Duration::ZERO;
    config.device_expires_in = expires_in;
    DevIdp::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("start the IdP")
}

/// The one user code waiting for a decision, once there is one.
fn pending_code(idp: &DevIdp, tmux: &Tmux, window: &str) -> String {
    tmux.wait_for(window, "a device code at the provider", |_| {
        !idp.pending_user_codes().is_empty()
    });
    let codes = idp.pending_user_codes();
    assert_eq!(codes.len(), 1, "{codes:?}");
    codes[0].clone()
}

/// Waits until the provider was polled `polls` times for the device code.
fn wait_for_polls(idp: &DevIdp, tmux: &Tmux, window: &str, polls: usize) {
    tmux.wait_for(window, "the provider polled", |_| {
        idp.stats().device_polls >= polls
    });
}

/// `login --device` against `idp` for `store`, with `extra` options.
fn device_login<'a>(idp: &'a str, store: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "login",
        "--device",
        "--issuer",
        idp,
        "--client-id",
        CLIENT_ID,
        "--scope",
        "openid",
        "--store",
        store,
        "--timeout",
        LOGIN_TIMEOUT,
    ];
    args.extend(extra);
    args
}

// ---- a browser login against `latchkey dev-idp` -------------------------------------

/// A person's session: `latchkey dev-idp` in one window, `latchkey login --issuer` in
/// another, the browser opened (the fake opener records the URL; the test then plays the
/// browser). Returns the final screen, read with escapes.
fn browser_login(test: &str, env: Env) -> Styled {
    let mut tmux = Tmux::new(test, env);
    let issuer = start_dev_idp(&mut tmux);
    let store = tmux.file("tokens.json");
    let store_text = store.display().to_string();
    tmux.start(
        "login",
        &[
            "login",
            "--issuer",
            &issuer,
            "--client-id",
            DEV_CLIENT_ID,
            "--scope",
            "openid",
            "--scope",
            "email",
            "--redirect-uri",
            "http://127.0.0.1:0/callback",
            "--store",
            &store_text,
            "--timeout",
            LOGIN_TIMEOUT,
        ],
        "",
    );
    let url = tmux.opened("login");
    let waiting = assert_spinner_turns(&tmux, "login", WAITING_FOR_BROWSER);
    assert_in_order(
        &waiting,
        &[
            "Listening for the browser on http://127.0.0.1:",
            "Opened your browser. If it did not open, visit:",
            &format!("  {url}"),
        ],
    );
    // The spinner is the last line: nothing is written after it while it turns.
    let last = waiting.lines().last().unwrap_or_default();
    assert_eq!(
        spinner_lines(last, WAITING_FOR_BROWSER).len(),
        1,
        "{waiting}"
    );
    assert_eq!(
        spinner_lines(&waiting, WAITING_FOR_BROWSER)[0].1,
        WAITING_FOR_BROWSER,
        "nothing after the spinner's text:\n{waiting}"
    );

    let hops = agent::browse(&url).expect("the browser's way back");
    assert!(
        hops.iter().any(|hop| hop.url.contains("/callback?")),
        "{hops:?}"
    );
    let (code, screen) = tmux.exit("login");
    assert_exit(&screen, 0);
    assert_in_order(
        &screen,
        &[
            "Listening for the browser on http://127.0.0.1:",
            "Opened your browser. If it did not open, visit:",
            "The browser came back; exchanging the code for tokens",
            "Received Bearer token (expires in ",
            "Signed in as ",
            &format!("Stored the tokens in {store_text}"),
            "[exited 0]",
        ],
    );
    assert_eq!(code, 0, "{screen}");
    assert_no_spinner(&screen);
    // The lines replacing the spinner's start at the left margin.
    assert!(
        screen
            .lines()
            .any(|line| line == "The browser came back; exchanging the code for tokens"),
        "{screen}"
    );
    assert!(store.exists(), "the tokens were stored");
    tmux.styled("login")
}

#[test]
fn a_browser_login_shows_a_turning_spinner_then_the_success_lines_in_green() {
    let screen = browser_login("browser-colour", Env::default());
    screen.assert_look("Signed in as dev-user@example.com", GREEN);
    screen.assert_look("Stored the tokens in /", GREEN);
    // The other lines stay plain.
    for plain in [
        "Listening for the browser on http://127.0.0.1:",
        "Opened your browser. If it did not open, visit:",
        "The browser came back; exchanging the code for tokens",
        "Received Bearer token (",
        "[exited 0]",
    ] {
        screen.assert_look(plain, PLAIN);
    }
}

#[test]
fn no_color_keeps_every_escape_off_the_screen_and_the_words_on_it() {
    let screen = browser_login(
        "browser-no-color",
        Env {
            no_color: Some("1"),
        },
    );
    assert_no_escapes(&screen.escaped);
}

#[test]
fn an_empty_no_color_is_as_good_as_none() {
    // no-color.org: NO_COLOR counts "when present and not an empty string".
    let screen = browser_login("browser-empty-no-color", Env { no_color: Some("") });
    screen.assert_look("Stored the tokens in /", GREEN);
}

// ---- device logins ------------------------------------------------------------------

#[test]
fn a_device_login_shows_the_code_in_bold_and_a_countdown_that_turns_and_never_garbles() {
    // 603 s: the countdown starts at 10:0x and then, a line shorter, at 9:59.
    let idp = start_idp(Duration::from_secs(603));
    let mut tmux = Tmux::new("device", Env::default());
    let store = tmux.file("tokens.json").display().to_string();
    let issuer = idp.issuer();
    tmux.start("login", &device_login(&issuer, &store, &[]), "");
    let code = pending_code(&idp, &tmux, "login");

    let screen = assert_spinner_turns(&tmux, "login", WAITING_FOR_APPROVAL);
    assert_in_order(
        &screen,
        &[
            &format!("To sign in, open {}/device", idp.base_url()),
            "and enter this code:",
            &format!("│  {code}  │"),
            &format!("Or open {}/device?user_code={code}", idp.base_url()),
            "The code expires in 11 min.",
            WAITING_FOR_APPROVAL,
        ],
    );
    let styled = tmux.styled("login");
    styled.assert_look(&code, BOLD);
    styled.assert_look("│  ", PLAIN);
    styled.assert_look("and enter this code:", PLAIN);

    // Ten minutes and more left, then less: the text gets a character shorter, and the
    // line must not keep the longer one's last character.
    let countdown = |screen: &str| -> Option<String> {
        let lines = spinner_lines(screen, WAITING_FOR_APPROVAL);
        lines
            .first()
            .map(|(_, rest)| rest[WAITING_FOR_APPROVAL.len()..].to_owned())
    };
    tmux.wait_for("login", "ten minutes and more left", |screen| {
        countdown(screen).is_some_and(|left| left.starts_with("10:0"))
    });
    let screen = tmux.wait_for("login", "less than ten minutes left", |screen| {
        countdown(screen).is_some_and(|left| left.starts_with("9:"))
    });
    let left = countdown(&screen).expect("the countdown");
    let well_formed =
        left.len() == 4 && left.starts_with("9:") && left[2..].chars().all(|c| c.is_ascii_digit());
    assert!(
        well_formed,
        "the countdown reads {left:?}: the longer text's end was left on the line:\n{screen}"
    );

    assert!(idp.approve_device(&code, "alice"));
    let (exit, screen) = tmux.exit("login");
    assert_eq!(exit, 0, "{screen}");
    assert_exit(&screen, 0);
    assert_in_order(
        &screen,
        &[
            "and enter this code:",
            "Received Bearer token (",
            "Signed in as alice",
            &format!("Stored the tokens in {store}"),
            "[exited 0]",
        ],
    );
    assert_no_spinner(&screen);
    assert!(
        screen
            .lines()
            .any(|line| line.starts_with("Received Bearer token (")),
        "the line that replaced the spinner starts at the margin:\n{screen}"
    );
}

#[test]
fn a_refused_device_login_ends_with_a_red_error_that_says_what_to_do() {
    let idp = start_idp(Duration::from_secs(600));
    let mut tmux = Tmux::new("device-denied", Env::default());
    let store = tmux.file("tokens.json").display().to_string();
    let issuer = idp.issuer();
    tmux.start("login", &device_login(&issuer, &store, &[]), "");
    let code = pending_code(&idp, &tmux, "login");
    assert_spinner_turns(&tmux, "login", WAITING_FOR_APPROVAL);
    assert!(idp.deny_device(&code));
    let (exit, screen) = tmux.exit("login");
    assert_eq!(exit, 1, "{screen}");
    assert_exit(&screen, 1);
    assert_no_spinner(&screen);
    // At the margin, where the spinner was; what happened, then what to do next.
    let error = line_with(&screen, "Error:");
    assert!(
        error.starts_with("Error: authorization denied: \"access_denied\"")
            && error.ends_with(
                "; sign in again and approve the request, or ask the provider's administrator"
            ),
        "{error:?}"
    );
    let styled = tmux.styled("login");
    styled.assert_look("Error:", BOLD_RED);
    // Only the label.
    styled.assert_look(&error["Error:".len()..], PLAIN);
    assert!(!Path::new(&store).exists(), "nothing was stored");
}

#[test]
fn no_color_keeps_the_user_code_and_the_error_plain() {
    let idp = start_idp(Duration::from_secs(600));
    let mut tmux = Tmux::new(
        "device-no-color",
        Env {
            no_color: Some("1"),
        },
    );
    let store = tmux.file("tokens.json").display().to_string();
    let issuer = idp.issuer();
    tmux.start("login", &device_login(&issuer, &store, &[]), "");
    let code = pending_code(&idp, &tmux, "login");
    // Colour is not motion: the spinner still turns.
    assert_spinner_turns(&tmux, "login", WAITING_FOR_APPROVAL);
    assert!(idp.deny_device(&code));
    let (exit, screen) = tmux.exit("login");
    assert_eq!(exit, 1, "{screen}");
    assert!(screen.contains(&format!("│  {code}  │")), "{screen}");
    assert!(
        screen
            .lines()
            .any(|line| line.starts_with("Error: authorization denied")),
        "{screen}"
    );
    assert_no_escapes(&tmux.capture("login", true));
}

#[test]
fn with_verbose_logs_on_the_terminal_no_spinner_shares_their_lines() {
    let idp = start_idp(Duration::from_secs(600));
    let mut tmux = Tmux::new("device-verbose", Env::default());
    let store = tmux.file("tokens.json").display().to_string();
    let issuer = idp.issuer();
    tmux.start("login", &device_login(&issuer, &store, &["-v"]), "");
    let code = pending_code(&idp, &tmux, "login");
    // The log lines are the progress: a spinner would have turned by the first poll.
    wait_for_polls(&idp, &tmux, "login", 1);
    assert_no_spinner(&tmux.screen("login"));
    assert!(idp.approve_device(&code, "alice"));
    let (exit, screen) = tmux.exit("login");
    assert_eq!(exit, 0, "{screen}");
    assert_no_spinner(&screen);
    assert!(
        screen.lines().any(|line| line.contains("INFO")),
        "-v logs to the terminal:\n{screen}"
    );
    assert!(
        screen
            .lines()
            .any(|line| line.starts_with(&format!("Stored the tokens in {store}"))),
        "{screen}"
    );
}

#[test]
fn json_in_a_terminal_is_json_lines_only_without_spinner_or_colour() {
    let idp = start_idp(Duration::from_secs(600));
    let mut tmux = Tmux::new("json", Env::default());
    let store = tmux.file("tokens.json").display().to_string();
    let issuer = idp.issuer();
    tmux.start("login", &device_login(&issuer, &store, &["--json"]), "");
    let code = pending_code(&idp, &tmux, "login");
    // A poll comes a second after the code: the spinner would have turned by then.
    wait_for_polls(&idp, &tmux, "login", 1);
    let waiting = tmux.capture("login", true);
    assert_no_escapes(&waiting);
    assert_no_spinner(&waiting);
    assert!(idp.approve_device(&code, "alice"));
    let (exit, screen) = tmux.exit("login");
    assert_eq!(exit, 0, "{screen}");
    assert_no_escapes(&tmux.capture("login", true));
    let events: Vec<String> = screen
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with("[exited "))
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(event)) => event["event"].as_str().unwrap_or_default().to_owned(),
            _ => panic!("not a JSON event: {line:?}\n{screen}"),
        })
        .collect();
    assert_eq!(
        events,
        ["device_authorization", "token", "stored"],
        "{screen}"
    );
    assert!(screen.contains(&code), "{screen}");
}

#[test]
fn colour_and_spinner_follow_the_stream_that_is_a_terminal() {
    let idp = start_idp(Duration::from_secs(600));
    let issuer = idp.issuer();

    // stdout to a file, stderr on the terminal: the code plain in the file; the spinner
    // and the red error on the screen.
    let mut tmux = Tmux::new("streams-stdout", Env::default());
    let store = tmux.file("tokens.json").display().to_string();
    let out = tmux.file("out.txt");
    let redirect = format!(">'{}'", out.display());
    tmux.start("login", &device_login(&issuer, &store, &[]), &redirect);
    let code = pending_code(&idp, &tmux, "login");
    assert_spinner_turns(&tmux, "login", WAITING_FOR_APPROVAL);
    assert!(idp.deny_device(&code));
    let (exit, _) = tmux.exit("login");
    assert_eq!(exit, 1);
    tmux.styled("login").assert_look("Error:", BOLD_RED);
    let written = std::fs::read_to_string(&out).expect("reading stdout's file");
    assert!(written.contains(&format!("│  {code}  │")), "{written}");
    assert!(
        !written.contains('\x1b') && !written.contains('\r'),
        "{written:?}"
    );
    drop(tmux);

    // stderr to a file, stdout on the terminal: the code bold on the screen, no spinner
    // anywhere, the error plain in the file.
    let mut tmux = Tmux::new("streams-stderr", Env::default());
    let err = tmux.file("err.txt");
    let redirect = format!("2>'{}'", err.display());
    let polls = idp.stats().device_polls;
    tmux.start("login", &device_login(&issuer, &store, &[]), &redirect);
    let code = pending_code(&idp, &tmux, "login");
    wait_for_polls(&idp, &tmux, "login", polls + 1);
    tmux.styled("login").assert_look(&code, BOLD);
    assert_no_spinner(&tmux.screen("login"));
    assert!(idp.deny_device(&code));
    let (exit, screen) = tmux.exit("login");
    assert_eq!(exit, 1, "{screen}");
    assert!(!screen.contains("Error:"), "{screen}");
    let written = std::fs::read_to_string(&err).expect("reading stderr's file");
    assert!(
        written.starts_with("Error: authorization denied"),
        "{written:?}"
    );
    assert!(
        !written.contains('\x1b') && !written.contains('\r'),
        "{written:?}"
    );
}

// ---- the address pasted into the terminal --------------------------------------------

#[test]
fn while_the_user_may_paste_the_spinner_keeps_still_and_what_is_typed_stays_readable() {
    let idp = start_idp(Duration::from_secs(600));
    let mut tmux = Tmux::new("paste", Env::default());
    let store = tmux.file("tokens.json").display().to_string();
    let (authorization_endpoint, token_endpoint) =
        (idp.authorization_endpoint(), idp.token_endpoint());
    tmux.start(
        "login",
        &[
            "login",
            "--no-browser",
            "--authorization-endpoint",
            &authorization_endpoint,
            "--token-endpoint",
            &token_endpoint,
            "--client-id",
            CLIENT_ID,
            "--scope",
            "profile",
            "--redirect-uri",
            "http://127.0.0.1:0/callback",
            "--store",
            &store,
            "--timeout",
            LOGIN_TIMEOUT,
        ],
        "",
    );
    let screen = tmux.wait_for("login", "the paste prompt", |screen| {
        screen.contains("then press Enter.")
    });
    assert_in_order(
        &screen,
        &[
            "No browser can be opened here (--no-browser)",
            "Open this URL in your browser to sign in:",
            &format!("  {authorization_endpoint}?"),
            "paste it here, then press Enter.",
        ],
    );
    let url = screen
        .lines()
        .find_map(|line| line.strip_prefix("  "))
        .filter(|url| url.starts_with(&authorization_endpoint))
        .expect("the authorization URL")
        .to_owned();

    // Something that is not the address: refused, in yellow, and the login goes on.
    tmux.type_line("login", "not the address");
    let screen = tmux.wait_for("login", "the refusal", |screen| {
        screen.contains("Not accepted:")
    });
    let styled = tmux.styled("login");
    styled.assert_look("Not accepted:", YELLOW);
    styled.assert_look(" that is not the address the browser ended on", PLAIN);
    assert!(
        screen.lines().any(|line| line.starts_with("Not accepted:")),
        "{screen}"
    );

    // The browser is on another machine; its address bar shows where it went.
    let (_, fields, _) = agent::get(&url, &[]).expect("the sign-in");
    let callback = fields
        .into_iter()
        .find_map(|(name, value)| name.eq_ignore_ascii_case("location").then_some(value))
        .expect("redirected back");
    let target = "t:login";
    tmux.run_tmux(&["send-keys", "-t", target, "-l", "--", &callback]);
    tmux.wait_for("login", "the address typed", |screen| {
        screen.contains(&callback)
    });
    // A spinner turning now would write over the address.
    thread::sleep(TICKS);
    let typed = tmux.screen("login");
    assert!(typed.contains(&callback), "{typed}");
    assert_no_spinner(&typed);
    tmux.run_tmux(&["send-keys", "-t", target, "Enter"]);

    let (exit, screen) = tmux.exit("login");
    assert_eq!(exit, 0, "{screen}");
    assert_in_order(
        &screen,
        &[
            &callback,
            "The browser came back; exchanging the code for tokens",
            "Received Bearer token (",
            &format!("Stored the tokens in {store}"),
            "[exited 0]",
        ],
    );
}

// ---- failures before any login ------------------------------------------------------

/// `latchkey token ARGS` for a token file that does not exist; the final screen with
/// escapes, after checking the exit code and that the advice is there.
fn token_without_tokens(test: &str, env: Env, extra: &[&str]) -> Styled {
    let mut tmux = Tmux::new(test, env);
    let store = tmux.file("missing/tokens.json").display().to_string();
    let mut args = vec!["token", "--store", &store];
    args.extend(extra);
    tmux.start("token", &args, "");
    let (exit, screen) = tmux.exit("token");
    assert_eq!(exit, 1, "{screen}");
    assert_exit(&screen, 1);
    assert!(
        screen.contains(&format!(
            "no tokens stored in {store}; run `latchkey login` first"
        )),
        "{screen}"
    );
    tmux.styled("token")
}

#[test]
fn token_fresh_without_tokens_is_a_red_error_that_says_to_log_in() {
    let screen = token_without_tokens("fresh-missing", Env::default(), &["--fresh"]);
    screen.assert_look("Error:", BOLD_RED);
    screen.assert_look(" no tokens stored in ", PLAIN);
}

#[test]
fn token_fresh_without_tokens_under_no_color_is_plain() {
    let screen = token_without_tokens(
        "fresh-missing-no-color",
        Env {
            no_color: Some("1"),
        },
        &["--fresh"],
    );
    assert_no_escapes(&screen.escaped);
    assert!(
        screen
            .escaped
            .lines()
            .any(|line| line.starts_with("Error: no tokens stored in ")),
        "{}",
        screen.escaped
    );
}

#[test]
fn token_without_tokens_says_to_log_in() {
    token_without_tokens("token-missing", Env::default(), &[]);
}
