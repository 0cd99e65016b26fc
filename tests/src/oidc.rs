//! The reference identity provider: the OpenID-certified `oidc-provider` from npm, started
//! on an ephemeral loopback port by `tests/interop/idp.mjs`.
//!
//! Missing tools are failures with a message saying how to install them, never skips:
//! `scripts/test.sh` installs them on a fresh machine.
//!
//! The device authorization grant (RFC 8628) is on: [`OidcProvider::device_authorization_endpoint`]
//! for the clients in [`DEVICE_GRANT_CLIENTS`]; the user's part is played by
//! [`crate::oidc_agent::device`] over raw HTTP, or by headless Chromium with
//! [`device_in_chromium`].
//!
//! Test hooks of `idp.mjs`, for tests of several processes sharing one login:
//! [`OidcProvider::grants`] counts the token endpoint's requests by grant type, and
//! [`OidcProvider::delay_token`] holds its requests back so that concurrent clients
//! overlap; [`ROTATION`] is a client whose access tokens live 10 seconds.
//!
//! [`OidcProvider::start_on`] starts a provider on a port chosen beforehand, for a client
//! that was started offline with that issuer.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::oidc_agent::{DeviceChoice, LOGIN};

/// The interop folder: `package.json`, the lock file, `node_modules`, the scripts.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Panics with installation advice unless Node.js and the interop packages are present.
pub fn require_node_packages() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|out| out.status.success()),
        "the interop tests need Node.js 20 or later on PATH (Debian: apt-get install nodejs)"
    );
    let modules = interop_dir().join("node_modules/oidc-provider/package.json");
    assert!(
        modules.is_file(),
        "the interop tests need their npm packages: run `npm ci` in {} (scripts/test.sh does)",
        interop_dir().display()
    );
}

/// A client registered at the provider.
#[derive(Debug, Clone, Copy)]
pub struct RegisteredClient {
    /// Its id.
    pub id: &'static str,
    /// Its secret, if confidential.
    pub secret: Option<&'static str>,
    /// Its token endpoint authentication method, as OAuth names it.
    pub method: &'static str,
}

/// `client_secret_basic`; the secret needs form-encoding before base64 (RFC 6749 §2.3.1).
pub const BASIC: RegisteredClient = RegisteredClient {
    id: "basic-client",
    secret: Some("s3cr3t+/:%&= ~!"),
    method: "client_secret_basic",
};
/// `client_secret_post`.
pub const POST: RegisteredClient = RegisteredClient {
    id: "post-client",
    secret: Some("post-secret"),
    method: "client_secret_post",
};
/// A public client (`none`), PKCE required.
pub const PUBLIC: RegisteredClient = RegisteredClient {
    id: "public-client",
    secret: None,
    method: "none",
};
/// `private_key_jwt` (RFC 7523): assertions signed with `tests/vectors/keys`' RSA, P-256
/// or Ed25519 key, whose public halves are its key set.
pub const JWT: RegisteredClient = RegisteredClient {
    id: "jwt-client",
    secret: None,
    method: "private_key_jwt",
};
/// A public client whose authorization requests must be pushed (RFC 9126): a plain
/// authorization request is refused.
pub const PAR: RegisteredClient = RegisteredClient {
    id: "par-client",
    secret: None,
    method: "none",
};
/// All three client authentication methods.
pub const CLIENTS: [RegisteredClient; 3] = [BASIC, POST, PUBLIC];
/// A public client whose ID tokens are signed with ES256 (P-256).
pub const ES256: RegisteredClient = RegisteredClient {
    id: "es256-client",
    secret: None,
    method: "none",
};
/// A public client whose ID tokens are signed with EdDSA (Ed25519).
pub const EDDSA: RegisteredClient = RegisteredClient {
    id: "eddsa-client",
    secret: None,
    method: "none",
};
/// A public client for an input-constrained device: the device authorization grant and
/// refresh tokens only, no redirect URI (it cannot use the authorization code grant).
pub const DEVICE: RegisteredClient = RegisteredClient {
    id: "device-client",
    secret: None,
    method: "none",
};
/// A public client (`none`, PKCE required) whose access tokens live 10 seconds
/// ([`ROTATION_ACCESS_TOKEN_TTL`]): tests of `latchkey token --fresh` see them come within a
/// refresh margin soon after a login. Its refresh tokens rotate on every refresh, as
/// everyone's do, and reusing a rotated-out one revokes the grant: a login refreshed twice
/// from the same refresh token ends in "login required".
pub const ROTATION: RegisteredClient = RegisteredClient {
    id: "cli-rotation",
    secret: None,
    method: "none",
};
/// How long the access tokens of [`ROTATION`] live.
pub const ROTATION_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(10);
/// The clients allowed the device authorization grant (RFC 8628), one per client
/// authentication method, and the device-only client. [`ES256`] and [`EDDSA`] are not:
/// the provider answers their device authorization requests with 400 `invalid_request`.
pub const DEVICE_GRANT_CLIENTS: [RegisteredClient; 4] = [BASIC, POST, PUBLIC, DEVICE];
/// The grant type of the device access token request (RFC 8628 §3.4).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The grant type of a refresh request (RFC 6749 §6).
pub const REFRESH_TOKEN_GRANT: &str = "refresh_token";

/// What the provider's token endpoint was asked with one grant type, as
/// [`OidcProvider::grants`] reports it. Every request counts once in `requests` when its
/// body has arrived, and once more when it ends, in exactly one of the other counters;
/// one still being held back or worked on is in none of them yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantCounts {
    /// Requests received.
    pub requests: u64,
    /// Answered with a 2xx status: tokens issued.
    pub ok: u64,
    /// Answered with another status (`invalid_grant` for a rotated-out refresh token, say).
    pub error: u64,
    /// Held back by [`OidcProvider::delay_token`] when their client went away: dropped
    /// unprocessed (oidc-provider never saw them, so no refresh token rotated).
    pub dropped: u64,
    /// Their client went away while oidc-provider was working on them: they may have taken
    /// effect, and nobody got the answer.
    pub abandoned: u64,
}

impl GrantCounts {
    /// Requests that have ended, whichever way.
    pub fn ended(&self) -> u64 {
        self.ok + self.error + self.dropped + self.abandoned
    }
}

/// How long a starting provider may take to say where it listens.
const PROVIDER_START: Duration = Duration::from_secs(20);

/// A running `oidc-provider`; stopped when dropped.
#[derive(Debug)]
pub struct OidcProvider {
    child: Child,
    /// Closing it ends the provider even if this process dies without dropping us.
    _stdin: Option<ChildStdin>,
    issuer: String,
}

impl OidcProvider {
    /// Starts a provider and waits until it listens. A node process that has not said
    /// where it listens within 20 seconds is killed and started again (node has been
    /// seen to hang at startup on a loaded machine, once in many hundred starts); three
    /// failed starts are a failure.
    pub fn start() -> OidcProvider {
        OidcProvider::start_with(None)
    }

    /// [`start`](OidcProvider::start) on loopback port `port` rather than an ephemeral one:
    /// for a test whose client was given the issuer `http://127.0.0.1:PORT` before any
    /// provider listened there (an offline start). A port that is taken makes every try
    /// fail, and so this panics.
    pub fn start_on(port: u16) -> OidcProvider {
        OidcProvider::start_with(Some(port))
    }

    fn start_with(port: Option<u16>) -> OidcProvider {
        require_node_packages();
        for _ in 0..3 {
            if let Some(provider) = OidcProvider::try_start(port) {
                return provider;
            }
        }
        panic!(
            "oidc-provider did not start three times (run tests/interop/idp.mjs by hand to see why)"
        );
    }

    fn try_start(port: Option<u16>) -> Option<OidcProvider> {
        let mut command = Command::new("node");
        match port {
            Some(port) => command.env("LATCHKEY_IDP_PORT", port.to_string()),
            None => command.env_remove("LATCHKEY_IDP_PORT"),
        };
        let mut child = command
            .arg(interop_dir().join("idp.mjs"))
            .current_dir(interop_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node tests/interop/idp.mjs");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (first, line) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            let _ = first.send(read.map(|_| line));
            // oidc-provider prints notices later; a closed pipe would kill it (EPIPE).
            std::io::copy(&mut reader, &mut std::io::sink())
        });
        let started = match line.recv_timeout(PROVIDER_START) {
            Ok(Ok(line)) if !line.is_empty() => serde_json::from_str::<serde_json::Value>(&line)
                .expect("idp.mjs prints one JSON line"),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        };
        let issuer = started["issuer"].as_str().expect("issuer").to_owned();
        Some(OidcProvider {
            child,
            _stdin: stdin,
            issuer,
        })
    }

    /// The issuer, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The authorization endpoint.
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/auth", self.issuer)
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// The device authorization endpoint (RFC 8628 §3.1), `{issuer}/device/auth`. The
    /// user's page, `verification_uri`, is `{issuer}/device`.
    pub fn device_authorization_endpoint(&self) -> String {
        format!("{}/device/auth", self.issuer)
    }

    /// The key set that checks its ID tokens.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// Rotates the provider's signing keys: from now on its ID tokens name new `kid`s, and
    /// its key set lists only the new keys (see `idp.mjs`).
    pub fn rotate_keys(&self) {
        rotate_keys_at(&self.issuer);
    }

    /// What the token endpoint has been asked so far, by grant type (`refresh_token`,
    /// `authorization_code`, …; `none` for requests without one): only the grant types it
    /// has seen. Counted by `idp.mjs` for every request, failed ones included, whichever
    /// client sent it.
    pub fn grants(&self) -> BTreeMap<String, GrantCounts> {
        let body = test_hook(&self.issuer, "GET", "/__test/grants", 200);
        let all: BTreeMap<String, BTreeMap<String, u64>> =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("grant counts {body:?}: {e}"));
        all.into_iter()
            .map(|(grant_type, counts)| {
                let count = |name: &str| counts.get(name).copied().unwrap_or_default();
                let counts = GrantCounts {
                    requests: count("requests"),
                    ok: count("ok"),
                    error: count("error"),
                    dropped: count("dropped"),
                    abandoned: count("abandoned"),
                };
                (grant_type, counts)
            })
            .collect()
    }

    /// [`grants`](OidcProvider::grants) of one grant type, all zero if it was never asked.
    pub fn grant_counts(&self, grant_type: &str) -> GrantCounts {
        self.grants().remove(grant_type).unwrap_or_default()
    }

    /// The refresh requests so far: [`grant_counts`](OidcProvider::grant_counts) of
    /// [`REFRESH_TOKEN_GRANT`].
    pub fn refresh_counts(&self) -> GrantCounts {
        self.grant_counts(REFRESH_TOKEN_GRANT)
    }

    /// Holds back every token request that arrives from now on by `delay` before the
    /// provider works on it (zero: no longer), so that concurrent clients really overlap.
    /// A request whose client disconnects (or dies) while held back is dropped unprocessed
    /// and counted as [`GrantCounts::dropped`]: a killed refresher rotates nothing.
    /// Millisecond precision.
    pub fn delay_token(&self, delay: Duration) {
        test_hook(
            &self.issuer,
            "POST",
            &format!("/__test/delay-token?ms={}", delay.as_millis()),
            204,
        );
    }
}

/// [`OidcProvider::rotate_keys`] for the provider at `issuer`, from any thread.
pub fn rotate_keys_at(issuer: &str) {
    test_hook(issuer, "POST", "/__test/rotate", 204);
}

/// How long a test hook may take to answer.
const HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls one of `idp.mjs`'s test hooks (`/__test/…`) on the provider at `issuer` with an
/// empty body over plain HTTP/1.1, and gives the answer's body; panics unless it answers
/// with `status` within [`HOOK_TIMEOUT`].
fn test_hook(issuer: &str, method: &str, path: &str, status: u16) -> String {
    let address = issuer.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address)
        .unwrap_or_else(|e| panic!("connect to the provider for {method} {path}: {e}"));
    stream
        .set_read_timeout(Some(HOOK_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(HOOK_TIMEOUT)))
        .expect("socket timeouts");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    std::io::Write::write_all(&mut stream, request.as_bytes())
        .unwrap_or_else(|e| panic!("send {method} {path}: {e}"));
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("the answer to {method} {path}: {e}"));
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(
        head.starts_with(&format!("HTTP/1.1 {status} ")),
        "{method} {path} refused: {answer}"
    );
    // `idp.mjs` answers its hooks with a Content-Length, never chunked.
    body.to_owned()
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- the device flow in Chromium -----

/// The longest `device.mjs` may run; it gives up by itself after 30 s.
const CHROMIUM_LIMIT: Duration = Duration::from_secs(60);

/// The Chromium `device.mjs` (and `browser.mjs`) start: `$LATCHKEY_CHROMIUM` or Debian's
/// `/usr/bin/chromium`.
pub fn chromium() -> PathBuf {
    std::env::var_os("LATCHKEY_CHROMIUM")
        .filter(|path| !path.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Panics with installation advice unless Node.js, the npm packages (playwright-core
/// included) and Chromium ([`chromium`]) are here: the browser tests fail without them,
/// they never skip.
pub fn require_browser_tools() {
    if let Err(advice) = browser_tools() {
        panic!("{advice}");
    }
}

/// `Err` with installation advice unless the browser tools are here.
fn browser_tools() -> Result<(), String> {
    let node = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    if !node.is_ok_and(|out| out.status.success()) {
        return Err(
            "the browser tests need Node.js 20 or later on PATH (Debian: apt-get install nodejs)"
                .into(),
        );
    }
    for package in ["oidc-provider", "playwright-core"] {
        if !interop_dir()
            .join("node_modules")
            .join(package)
            .join("package.json")
            .is_file()
        {
            return Err(format!(
                "the browser tests need {package}: run `npm ci` in {} (never `npx playwright \
                 install`: Chromium comes from the system)",
                interop_dir().display()
            ));
        }
    }
    let chromium = chromium();
    let runs = Command::new(&chromium)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !runs.is_ok_and(|status| status.success()) {
        return Err(format!(
            "the browser tests need Chromium at {} (Debian: `apt-get install -y chromium`; or \
             set LATCHKEY_CHROMIUM to a Chromium binary)",
            chromium.display()
        ));
    }
    Ok(())
}

/// How a device login in Chromium ended (`device.mjs`'s JSON line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChromiumDevice {
    /// `approved` (the provider showed "Sign-in Success") or `denied` (it showed the code
    /// input page again with "The Sign-in request was interrupted").
    pub outcome: String,
    /// The code the confirmation page showed, as shown (`XXXX-XXXX`).
    pub confirmed_code: String,
    /// The URL of the last page.
    pub final_url: String,
    /// The visible text of the last page.
    pub page_text: String,
    /// Chromium's version.
    pub chromium: String,
}

/// Headless Chromium, driven by `tests/interop/device.mjs` through playwright-core, does the
/// user's part of a device login (RFC 8628 §3.3) at the provider: it opens
/// `verification_uri` (plain, or `verification_uri_complete`), types `user_code` if asked,
/// checks that the confirmation page shows that code, and then, as `choice` says, presses
/// `[ Abort ]` or confirms, signs in as `user` and approves or cancels on the consent page.
///
/// # Errors
///
/// Missing tools (with installation advice, as [`require_browser_tools`]); an empty
/// `user_code` or `user`; the script failing (its stderr: the page it was on and what it
/// showed) or running longer than 60 s; an outcome other than `choice`'s.
pub fn device_in_chromium(
    verification_uri: &str,
    user_code: &str,
    user: &str,
    choice: DeviceChoice,
) -> Result<ChromiumDevice, String> {
    browser_tools()?;
    if user_code.trim().is_empty() || user.trim().is_empty() {
        return Err("an empty user code or login".into());
    }
    let mode = match choice {
        DeviceChoice::Approve => "approve",
        DeviceChoice::Abort => "abort",
        DeviceChoice::CancelConsent => "cancel",
    };
    let mut child = Command::new("node")
        .arg(interop_dir().join("device.mjs"))
        .args([verification_uri, user_code, mode, user])
        .current_dir(interop_dir())
        .env("LATCHKEY_CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("start node device.mjs: {error}"))?;
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let deadline = Instant::now() + CHROMIUM_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(format!(
            "device.mjs ran longer than {CHROMIUM_LIMIT:?} and was killed; stderr:\n{stderr}"
        ));
    };
    if !status.success() {
        return Err(format!("device.mjs failed ({status}):\n{stderr}"));
    }
    let line = stdout.lines().find(|line| !line.trim().is_empty());
    let Some(serde_json::Value::Object(result)) =
        line.and_then(|line| serde_json::from_str(line).ok())
    else {
        return Err(format!(
            "device.mjs printed no JSON object: {stdout:?}\n{stderr}"
        ));
    };
    let text = |key: &str| {
        result
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let ended = ChromiumDevice {
        outcome: text("outcome"),
        confirmed_code: text("confirmed_code"),
        final_url: text("final_url"),
        page_text: text("page_text"),
        chromium: text("chromium"),
    };
    let wanted = match choice {
        DeviceChoice::Approve => "approved",
        DeviceChoice::Abort | DeviceChoice::CancelConsent => "denied",
    };
    if ended.outcome != wanted {
        return Err(format!(
            "Chromium's device login ended {ended:?}, not {wanted}"
        ));
    }
    Ok(ended)
}

/// Approves a device login in headless Chromium as [`LOGIN`]: [`device_in_chromium`] with
/// [`DeviceChoice::Approve`].
///
/// # Errors
///
/// As [`device_in_chromium`].
pub fn approve_device_in_chromium(verification_uri: &str, user_code: &str) -> Result<(), String> {
    device_in_chromium(verification_uri, user_code, LOGIN, DeviceChoice::Approve).map(drop)
}

/// A thread reading `pipe` to its end, lossily as UTF-8.
fn read_all<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
