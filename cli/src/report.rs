//! What the command tells its user: one JSON object per line with `--json`, short lines for
//! a person otherwise. Never a secret either way.
//!
//! For people on a terminal: a spinner on stderr while the command waits, cleared before
//! anything else is written and when the command ends; colour on a stream only when that
//! stream is a terminal, `NO_COLOR` is unset or empty (<https://no-color.org>) and `TERM` is
//! not `dumb`, and never with `--json` ([`colour`] decides it, [`Paint`] is the palette);
//! every failure ends with what to do next.

use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use latchkey::{DeviceAuthorization, DeviceError, FlowError, Step, TokenSet};
use serde_json::{Map, Value, json};

/// The stream a line goes to; colour is decided for each on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn is_terminal(self) -> bool {
        match self {
            Stream::Stdout => std::io::stdout().is_terminal(),
            Stream::Stderr => std::io::stderr().is_terminal(),
        }
    }
}

/// The palette, small on purpose: the words that matter stand out, the rest stays plain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paint {
    /// What the user must copy: the device login's user code. Bold.
    Code,
    /// What the command achieved: signed in, stored, revoked, deleted. Green.
    Success,
    /// Read this, although the command goes on: `WARNING:`, a token that stays valid, a
    /// pasted address not accepted. Yellow.
    Warning,
    /// The command stopped: `Error:`. Bold red.
    Error,
}

impl Paint {
    /// The SGR parameters that start it (`\x1b[0m` ends every one).
    fn sgr(self) -> &'static str {
        match self {
            Paint::Code => "1",
            Paint::Success => "32",
            Paint::Warning => "33",
            Paint::Error => "1;31",
        }
    }
}

/// Whether text written to `stream` may carry colour: only to a terminal, only when
/// `NO_COLOR` is absent or empty, and not on a `dumb` terminal. (`--json` never asks.)
pub fn colour(stream: Stream) -> bool {
    wants_colour(
        stream.is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    )
}

/// [`colour`]'s rule, on what it found.
fn wants_colour(terminal: bool, no_color: Option<&OsStr>, term: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty) && term.is_none_or(|term| term != "dumb")
}

/// `text` in `paint` when `stream` takes colour ([`colour`]), as it is otherwise.
pub fn painted(stream: Stream, paint: Paint, text: &str) -> String {
    match colour(stream) {
        true => format!("\x1b[{}m{text}\x1b[0m", paint.sgr()),
        false => text.to_owned(),
    }
}

/// Where a login's tokens are kept, as the `stored` and `logged_out` lines say it.
pub struct Place<'a> {
    /// The token file.
    pub path: &'a Path,
    /// Whether the tokens themselves are in the OS keychain.
    pub keychain: bool,
    /// The profile.
    pub profile: &'a str,
}

impl Place<'_> {
    /// " of profile NAME", or nothing for the default profile.
    fn of_profile(&self) -> String {
        match self.profile {
            latchkey_io::store::DEFAULT_KEY => String::new(),
            other => format!(" of profile {other}"),
        }
    }
}

/// Where events go.
pub struct Reporter {
    json: bool,
    /// Prefix lines with the time since `started` (the demo).
    timed: Option<Instant>,
    /// The spinner's frame while its line is on the screen.
    spinner: Option<usize>,
    /// The user may be typing on the terminal (a pasted address): no spinner then, which
    /// would write over what they type.
    typing: bool,
}

impl Reporter {
    pub fn new(json: bool) -> Reporter {
        Reporter {
            json,
            timed: None,
            spinner: None,
            typing: false,
        }
    }

    /// A reporter for people whose lines carry the elapsed time.
    pub fn timed(started: Instant) -> Reporter {
        Reporter {
            json: false,
            timed: Some(started),
            spinner: None,
            typing: false,
        }
    }

    /// Whether events go out as JSON lines.
    pub fn json_mode(&self) -> bool {
        self.json
    }

    /// No browser can be opened here (`reason`): the user hears what happens instead.
    /// Nothing in JSON mode, whose events say it.
    pub fn no_browser(&mut self, reason: &str, device: bool) {
        let instead = match device {
            true => "sign in on another device with a code",
            false => "open the address below on any device; the provider has no device login",
        };
        self.note(&format!(
            "No browser can be opened here ({reason}): {instead}."
        ));
    }

    /// A device login's user code and where to enter it: for people, the code framed, the
    /// address, and a QR code of the complete URI on a terminal that can show one.
    pub fn device_authorization(&mut self, authorization: &DeviceAuthorization) {
        let expires_at = unix_seconds(authorization.expires_at());
        let interval = authorization.interval();
        let mut event = Map::new();
        event.insert("event".into(), "device_authorization".into());
        event.insert(
            "verification_uri".into(),
            authorization.verification_uri().into(),
        );
        if let Some(complete) = authorization.verification_uri_complete() {
            event.insert("verification_uri_complete".into(), complete.into());
        }
        event.insert("user_code".into(), authorization.user_code().into());
        event.insert("expires_at".into(), expires_at.into());
        event.insert(
            "interval".into(),
            match interval.subsec_nanos() {
                0 => interval.as_secs().into(),
                _ => interval.as_secs_f64().into(),
            },
        );
        if self.json {
            self.emit(Value::Object(event), "");
            return;
        }
        let code = authorization.user_code();
        let width = code.chars().count() + 4;
        let mut text = format!(
            "To sign in, open {}\nand enter this code:\n\n    ┌{line}┐\n    │  {}  │\n    └{line}┘\n",
            authorization.verification_uri(),
            self.paint(Stream::Stdout, Paint::Code, code),
            line = "─".repeat(width),
        );
        let complete = authorization.verification_uri_complete();
        if let Some(complete) = complete {
            text.push_str(&format!("\nOr open {complete} (the code is in it)"));
        }
        if let Some(qr) = complete.and_then(qr_code) {
            text.push_str(", or scan:\n");
            text.push_str(&qr);
        }
        let minutes = authorization.lifetime().as_secs().div_ceil(60);
        text.push_str(&format!("\nThe code expires in {minutes} min."));
        self.line(&text);
    }

    /// Where a browser on another machine ends, and that its address may be pasted here.
    /// From now on the user may be typing on the terminal: the spinner keeps still.
    pub fn paste_prompt(&mut self, redirect_uri: &str) {
        self.typing = std::io::stdin().is_terminal();
        self.note(&format!(
            "After you sign in, the browser goes to {redirect_uri}?…\n\
             If that page does not load (the browser is on another machine), copy its address \
             from the address bar and paste it here, then press Enter."
        ));
    }

    pub fn listening(&mut self, redirect_uri: &str) {
        self.emit(
            json!({"event": "listening", "redirect_uri": redirect_uri}),
            &format!("Listening for the browser on {redirect_uri}"),
        );
    }

    pub fn authorize(&mut self, url: &str, opened: bool) {
        let line = if opened {
            format!("Opened your browser. If it did not open, visit:\n  {url}")
        } else {
            format!("Open this URL in your browser to sign in:\n  {url}")
        };
        self.emit(json!({"event": "authorize", "url": url}), &line);
    }

    pub fn callback(&mut self) {
        self.emit(
            json!({"event": "callback"}),
            "The browser came back; exchanging the code for tokens",
        );
    }

    pub fn token(&mut self, tokens: &TokenSet, requested_scope: &str) {
        let scope = tokens.scope().unwrap_or(requested_scope);
        let mut event = Map::new();
        event.insert("event".into(), "token".into());
        event.insert("token_type".into(), tokens.token_type().as_str().into());
        if let Some(expires_at) = tokens.expires_at() {
            event.insert("expires_at".into(), unix_seconds(expires_at).into());
        }
        event.insert("scope".into(), scope.into());
        event.insert(
            "refresh_token".into(),
            tokens.refresh_token().is_some().into(),
        );
        if !tokens.audience().is_empty() {
            event.insert("audience".into(), tokens.audience().into());
        }
        if let Some(identity) = tokens.identity() {
            event.insert("identity".into(), Value::Object(identity.summary()));
        }
        let line = format!(
            "Received {} token ({})",
            tokens.token_type().as_str(),
            describe_tokens(tokens)
        );
        self.emit(Value::Object(event), &line);
        if let Some(audience) = describe_audience(tokens) {
            self.note(&audience);
        }
        if let Some(identity) = tokens.identity() {
            self.note_painted(
                &format!("Signed in as {}", identity.display_name()),
                Paint::Success,
            );
        }
    }

    /// Something the user must know although the command goes on.
    pub fn warning(&mut self, kind: &str, message: &str) {
        if self.json {
            self.emit(
                json!({"event": "warning", "kind": kind, "message": message}),
                "",
            );
        } else {
            self.clear_spinner();
            let label = self.paint(Stream::Stderr, Paint::Warning, "WARNING:");
            eprintln!("{label} {message}");
        }
    }

    /// The tokens were stored, where `place` says.
    pub fn stored(&mut self, place: &Place<'_>) {
        let path = place.path.display().to_string();
        let of = place.of_profile();
        let (event, line) = match place.keychain {
            true => (
                json!({"event": "stored", "path": path, "tokens": "keychain"}),
                format!(
                    "Stored the tokens{of} in the OS keychain (the provider's settings in {path})"
                ),
            ),
            false => (
                json!({"event": "stored", "path": path}),
                format!("Stored the tokens{of} in {path}"),
            ),
        };
        self.emit_painted(event, &line, Some(Paint::Success));
    }

    pub fn revoked(&mut self, token: &str) {
        self.emit_painted(
            json!({"event": "revoked", "token": token}),
            &format!("Revoked the {} at the provider", token.replace('_', " ")),
            Some(Paint::Success),
        );
    }

    pub fn revocation_failed(&mut self, token: &str, message: &str) {
        self.emit_painted(
            json!({"event": "revocation_failed", "token": token, "message": message}),
            &format!(
                "Could not revoke the {}: {message}; it may stay valid until it expires, \
                 unless you remove this application's access in your account at the provider",
                token.replace('_', " ")
            ),
            Some(Paint::Warning),
        );
    }

    pub fn not_revoked(&mut self, message: &str) {
        self.emit_painted(
            json!({"event": "not_revoked", "message": message}),
            &format!("Nothing revoked at the provider: {message}"),
            Some(Paint::Warning),
        );
    }

    pub fn logged_out(&mut self, place: &Place<'_>, had_tokens: bool) {
        let path = place.path.display().to_string();
        let of = place.of_profile();
        let line = if had_tokens {
            format!("Deleted the stored tokens{of} from {path}")
        } else {
            format!("No tokens{of} were stored in {path}")
        };
        self.emit_painted(
            json!({"event": "logged_out", "path": path, "had_tokens": had_tokens}),
            &line,
            had_tokens.then_some(Paint::Success),
        );
    }

    /// The command stopped: `message` says why and what to do next.
    pub fn error(&mut self, kind: &str, message: &str) {
        if self.json {
            self.emit(
                json!({"event": "error", "kind": kind, "message": message}),
                "",
            );
        } else {
            self.clear_spinner();
            let label = self.paint(Stream::Stderr, Paint::Error, "Error:");
            eprintln!("{label} {message}");
        }
    }

    /// Plain progress for people (the demo's steps); nothing in JSON mode.
    pub fn note(&mut self, line: &str) {
        if !self.json {
            self.line(line);
        }
    }

    /// Advances the waiting spinner: `\r`, the frame and `waiting_for`, and the rest of the
    /// line erased (a shorter text leaves nothing of a longer one). On stderr, for people on
    /// a terminal only; not while the user may be typing there ([`paste_prompt`]), nor with
    /// `-v`, whose log lines go to stderr too and would land on the spinner's line.
    ///
    /// [`paste_prompt`]: Reporter::paste_prompt
    pub fn tick(&mut self, waiting_for: &str) {
        let stderr = std::io::stderr();
        if self.json || self.typing || !stderr.is_terminal() || tracing::dispatcher::has_been_set()
        {
            return;
        }
        const FRAMES: [&str; 4] = ["|", "/", "-", "\\"];
        let frame = self.spinner.map_or(0, |f| (f + 1) % FRAMES.len());
        self.spinner = Some(frame);
        let mut stderr = stderr.lock();
        let _ = write!(stderr, "\r{} {waiting_for}\x1b[K", FRAMES[frame]);
        let _ = stderr.flush();
    }

    /// `text` in `paint` for `stream`; plain with `--json` and wherever [`colour`] says no.
    fn paint(&self, stream: Stream, paint: Paint, text: &str) -> String {
        match self.json {
            true => text.to_owned(),
            false => painted(stream, paint, text),
        }
    }

    fn emit(&mut self, event: Value, line: &str) {
        self.emit_painted(event, line, None);
    }

    /// `event` with `--json`, otherwise `line` on stdout, in `paint` if any.
    fn emit_painted(&mut self, event: Value, line: &str, paint: Option<Paint>) {
        if self.json {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{event}");
            let _ = stdout.flush();
        } else {
            match paint {
                Some(paint) => self.note_painted(line, paint),
                None => self.line(line),
            }
        }
    }

    /// A [`note`](Reporter::note) in `paint`.
    fn note_painted(&mut self, line: &str, paint: Paint) {
        if !self.json {
            let line = self.paint(Stream::Stdout, paint, line);
            self.line(&line);
        }
    }

    /// Takes the spinner's line off the screen, so that what comes next (on stdout or
    /// stderr) starts on a clean line.
    fn clear_spinner(&mut self) {
        if self.spinner.take().is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }

    /// A line on stdout for people, after the spinner's line is cleared.
    fn line(&mut self, line: &str) {
        self.clear_spinner();
        let mut stdout = std::io::stdout().lock();
        let _ = match self.timed {
            Some(started) => {
                let millis = started.elapsed().as_secs_f64() * 1000.0;
                writeln!(stdout, "[{millis:8.1} ms] {line}")
            }
            None => writeln!(stdout, "{line}"),
        };
        let _ = stdout.flush();
    }
}

impl Drop for Reporter {
    /// The command ends on a clean line: a spinner still turning is taken away.
    fn drop(&mut self) {
        self.clear_spinner();
    }
}

/// A pasted address was refused, for `reason`; the login goes on waiting.
pub fn paste_refused(json: bool, reason: &str) {
    if json {
        let event = json!({"event": "paste_refused", "message": reason});
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{event}");
        let _ = stdout.flush();
    } else {
        let label = painted(Stream::Stderr, Paint::Warning, "Not accepted:");
        eprintln!("\r\x1b[2K{label} {reason}. Paste the address again, or keep waiting.");
    }
}

/// `uri` as a QR code of Unicode half blocks, two modules per character cell, for a
/// terminal that shows them (a `TERM` other than `dumb`, on standard output); `None`
/// elsewhere or when the URI is too long for a code that fits a terminal.
fn qr_code(uri: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let term = std::env::var("TERM").unwrap_or_default();
    if !std::io::stdout().is_terminal() || term.is_empty() || term == "dumb" {
        return None;
    }
    let code = qrcode::QrCode::with_error_correction_level(uri, qrcode::EcLevel::L).ok()?;
    // Version 10 is 57 modules, 61 columns with its quiet zone: it fits 80.
    if code.width() > 57 {
        return None;
    }
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .build(),
    )
}

/// `expires in 59 min, refresh token` and the like.
pub fn describe_tokens(tokens: &TokenSet) -> String {
    let expiry = match tokens.expires_at() {
        Some(at) => match at.duration_since(SystemTime::now()) {
            Ok(left) => format!("expires in {} min", left.as_secs() / 60),
            Err(_) => "expired".to_owned(),
        },
        None => "no expiry given".to_owned(),
    };
    let refresh = if tokens.refresh_token().is_some() {
        "refresh token"
    } else {
        "no refresh token"
    };
    format!("{expiry}, {refresh}")
}

/// `for: https://api.example.com, urn:example:billing`: the APIs the access token is for
/// (RFC 8707), when they are known.
pub fn describe_audience(tokens: &TokenSet) -> Option<String> {
    let audience = tokens.audience();
    (!audience.is_empty()).then(|| format!("for: {}", audience.join(", ")))
}

/// Unix seconds, for the JSON events.
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `kind` of the JSON error event and a message that says what to do next.
pub fn describe_failure(error: &FlowError) -> (String, String) {
    let (kind, advice) = match error {
        // Microsoft Entra's device-flow refusal says the same as `access_denied`.
        FlowError::Denied(denial) if denial.code == "authorization_declined" => {
            ("access_denied".into(), denial_advice("access_denied"))
        }
        FlowError::Denied(denial) => (denial.code.clone(), denial_advice(&denial.code)),
        FlowError::Device(DeviceError::Expired) => (
            "expired_token".into(),
            "run the command again and enter the new code before it expires",
        ),
        FlowError::Device(DeviceError::Refused { .. }) => (
            "device_rejected".into(),
            "check --client-id and that the provider allows this client the device grant \
             (GitHub: \"Enable Device Flow\" in the app's settings)",
        ),
        FlowError::Device(DeviceError::Unreachable(_)) => (
            "transport".into(),
            "check the device authorization endpoint and your network or proxy (HTTPS_PROXY, \
             NO_PROXY)",
        ),
        FlowError::Device(_) => (
            "invalid_response".into(),
            "the device authorization endpoint answered something unexpected; check \
             --device-authorization-endpoint (or the provider's metadata at --issuer), or sign \
             in with the browser (--no-device)",
        ),
        FlowError::IssuerMismatch { .. } => (
            "issuer_mismatch".into(),
            "check that --issuer is exactly the provider's issuer",
        ),
        FlowError::InvalidCallback(_)
        | FlowError::BadTokenResponse { .. }
        | FlowError::BadPushResponse { .. } => (
            "invalid_response".into(),
            "the provider answered something unexpected; check --authorization-endpoint and \
             --token-endpoint (or --issuer), then run the command again",
        ),
        FlowError::TokenRejected { .. } => (
            "token_rejected".into(),
            "check --client-id, the client secret and --auth-method",
        ),
        FlowError::PushRejected { .. } => (
            "push_rejected".into(),
            "check --client-id, --auth-method and the client's secret or --client-key, and \
             the request's --scope, --resource and --param values",
        ),
        FlowError::Transport(_) => (
            "transport".into(),
            "check --token-endpoint and your network or proxy (HTTPS_PROXY, NO_PROXY)",
        ),
        FlowError::TimedOut(Step::Callback | Step::Approval) => (
            "timeout".into(),
            "run the command again and finish signing in within --timeout",
        ),
        FlowError::TimedOut(Step::Storage) => (
            "timeout".into(),
            "check that the --store path is writable, then run the command again",
        ),
        FlowError::TimedOut(_) => (
            "timeout".into(),
            "the provider did not answer in time; check your network or proxy (HTTPS_PROXY, \
             NO_PROXY) and run the command again, with a longer --timeout if it is slow",
        ),
        FlowError::Storage(_) => ("store".into(), "check that the --store path is writable"),
        FlowError::IdToken(latchkey::IdTokenError::KeySet(_)) => (
            "id_token_invalid".into(),
            "the provider's signing keys could not be fetched; check the network and the \
             provider's key set URL (its jwks_uri)",
        ),
        FlowError::IdToken(_) => (
            "id_token_invalid".into(),
            "nothing was stored; if the provider's ID tokens cannot be verified at all, \
             --no-verify-id-token skips the check (and records no identity)",
        ),
        FlowError::Cancelled | FlowError::Superseded => {
            ("cancelled".into(), "run the command again")
        }
        _ => ("invalid_response".into(), "run the command again"),
    };
    (kind, format!("{error}; {advice}"))
}

/// What to do when the provider answered the login with the OAuth error `code`.
fn denial_advice(code: &str) -> &'static str {
    match code {
        "invalid_scope" => {
            "check the --scope values: the provider does not grant them to this client"
        }
        "unauthorized_client" | "unsupported_response_type" | "invalid_client" => {
            "check --client-id, and that the provider allows this client to sign users in \
             with a code (its application settings)"
        }
        "invalid_request" => {
            "check --client-id, that the provider registered this client's redirect URI \
             (--redirect-uri) and any --param"
        }
        "server_error" | "temporarily_unavailable" => {
            "the provider could not handle the login just now; run the command again in a moment"
        }
        "login_required"
        | "consent_required"
        | "interaction_required"
        | "account_selection_required" => {
            "run the command again and sign in (and consent) in the browser"
        }
        _ => "sign in again and approve the request, or ask the provider's administrator",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey::{ProviderError, TransportError, TransportErrorKind};

    fn denial(code: &str) -> FlowError {
        FlowError::Denied(ProviderError {
            code: code.into(),
            description: None,
            uri: None,
        })
    }

    #[test]
    fn the_audience_is_described_only_when_known() {
        let tokens = TokenSet::new(secrecy::SecretString::from("at"));
        assert_eq!(describe_audience(&tokens), None);
        let tokens = tokens.with_audience(vec![
            "https://api.example.com".into(),
            "urn:example:billing".into(),
        ]);
        assert_eq!(
            describe_audience(&tokens).as_deref(),
            Some("for: https://api.example.com, urn:example:billing")
        );
    }

    #[test]
    fn device_login_failures_have_the_documented_kinds() {
        let kind = |error: FlowError| describe_failure(&error).0;
        assert_eq!(kind(denial("access_denied")), "access_denied");
        // Microsoft Entra's word for the same.
        assert_eq!(kind(denial("authorization_declined")), "access_denied");
        assert_eq!(
            kind(FlowError::Device(DeviceError::Expired)),
            "expired_token"
        );
        let down = TransportError::new(TransportErrorKind::Connect, "refused");
        assert_eq!(
            kind(FlowError::Device(DeviceError::Unreachable(down))),
            "transport"
        );
        let refused = DeviceError::Refused {
            status: 400,
            error: ProviderError {
                code: "invalid_client".into(),
                description: None,
                uri: None,
            },
        };
        assert_eq!(kind(FlowError::Device(refused)), "device_rejected");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color_and_not_on_a_dumb_one() {
        let os = |text: &'static str| Some(OsStr::new(text));
        assert!(wants_colour(true, None, os("xterm-256color")));
        assert!(wants_colour(true, None, None));
        // no-color.org: "when present and not an empty string".
        assert!(wants_colour(true, os(""), os("xterm")));
        for no_color in ["1", "0", "false", "yes"] {
            assert!(!wants_colour(true, os(no_color), os("xterm")), "{no_color}");
        }
        assert!(!wants_colour(true, None, os("dumb")));
        assert!(!wants_colour(false, None, os("xterm")));
    }

    #[test]
    fn no_colour_in_json_mode_whatever_the_streams_are() {
        let reporter = Reporter::new(true);
        for stream in [Stream::Stdout, Stream::Stderr] {
            assert_eq!(reporter.paint(stream, Paint::Error, "Error:"), "Error:");
        }
    }

    #[test]
    fn every_flow_failure_ends_with_what_to_do_next() {
        let down = || TransportError::new(TransportErrorKind::Connect, "refused");
        let failures = [
            (denial("access_denied"), "approve the request"),
            (denial("invalid_scope"), "--scope"),
            (denial("unauthorized_client"), "--client-id"),
            (denial("invalid_request"), "--redirect-uri"),
            (denial("temporarily_unavailable"), "run the command again"),
            (denial("something_new"), "sign in again"),
            (
                FlowError::Device(DeviceError::Expired),
                "run the command again",
            ),
            (
                FlowError::Device(DeviceError::Unreachable(down())),
                "HTTPS_PROXY",
            ),
            (FlowError::Transport(down()), "--token-endpoint"),
            (FlowError::TimedOut(Step::Callback), "within --timeout"),
            (FlowError::TimedOut(Step::Approval), "within --timeout"),
            (FlowError::TimedOut(Step::TokenExchange), "network or proxy"),
            (FlowError::TimedOut(Step::KeySet), "network or proxy"),
            (FlowError::TimedOut(Step::Storage), "--store"),
            (
                FlowError::Storage(latchkey::StoreError::new("read-only")),
                "--store",
            ),
            (FlowError::Cancelled, "run the command again"),
            (
                FlowError::FailedElsewhere("gone".into()),
                "run the command again",
            ),
        ];
        for (error, next) in failures {
            let (_, message) = describe_failure(&error);
            let advice = message
                .strip_prefix(&format!("{error}; "))
                .unwrap_or_else(|| panic!("no advice after the error: {message}"));
            assert!(advice.contains(next), "{error:?}: {message}");
        }
    }

    #[test]
    fn timeouts_keep_their_kind_whatever_the_step() {
        for step in [
            Step::Callback,
            Step::TokenExchange,
            Step::Storage,
            Step::KeySet,
        ] {
            assert_eq!(describe_failure(&FlowError::TimedOut(step)).0, "timeout");
        }
        assert_eq!(
            describe_failure(&denial("invalid_scope")).0,
            "invalid_scope"
        );
    }
}
