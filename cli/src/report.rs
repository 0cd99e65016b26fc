//! What the command tells its user: one JSON object per line with `--json`, short lines for
//! a person otherwise. Never a secret either way.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use latchkey::{DeviceAuthorization, DeviceError, FlowError, TokenSet};
use serde_json::{Map, Value, json};

/// Where events go.
pub struct Reporter {
    json: bool,
    /// Prefix lines with the time since `started` (the demo).
    timed: Option<Instant>,
    spinner: Option<usize>,
}

impl Reporter {
    pub fn new(json: bool) -> Reporter {
        Reporter {
            json,
            timed: None,
            spinner: None,
        }
    }

    /// A reporter for people whose lines carry the elapsed time.
    pub fn timed(started: Instant) -> Reporter {
        Reporter {
            json: false,
            timed: Some(started),
            spinner: None,
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
        let bold = |text: &str| match std::io::stdout().is_terminal() {
            true => format!("\x1b[1m{text}\x1b[0m"),
            false => text.to_owned(),
        };
        let mut text = format!(
            "To sign in, open {}\nand enter this code:\n\n    ┌{line}┐\n    │  {}  │\n    └{line}┘\n",
            authorization.verification_uri(),
            bold(code),
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
    pub fn paste_prompt(&mut self, redirect_uri: &str) {
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
        if let Some(identity) = tokens.identity() {
            event.insert("identity".into(), Value::Object(identity.summary()));
        }
        let line = format!(
            "Received {} token ({})",
            tokens.token_type().as_str(),
            describe_tokens(tokens)
        );
        self.emit(Value::Object(event), &line);
        if let Some(identity) = tokens.identity() {
            self.note(&format!("Signed in as {}", identity.display_name()));
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
            eprintln!("WARNING: {message}");
        }
    }

    pub fn stored(&mut self, path: &Path) {
        let path = path.display().to_string();
        self.emit(
            json!({"event": "stored", "path": path}),
            &format!("Stored the tokens in {path}"),
        );
    }

    pub fn revoked(&mut self, token: &str) {
        self.emit(
            json!({"event": "revoked", "token": token}),
            &format!("Revoked the {} at the provider", token.replace('_', " ")),
        );
    }

    pub fn revocation_failed(&mut self, token: &str, message: &str) {
        self.emit(
            json!({"event": "revocation_failed", "token": token, "message": message}),
            &format!(
                "Could not revoke the {}: {message}; it may stay valid until it expires",
                token.replace('_', " ")
            ),
        );
    }

    pub fn not_revoked(&mut self, message: &str) {
        self.emit(
            json!({"event": "not_revoked", "message": message}),
            &format!("Nothing revoked at the provider: {message}"),
        );
    }

    pub fn logged_out(&mut self, path: &Path, had_tokens: bool) {
        let path = path.display().to_string();
        let line = if had_tokens {
            format!("Deleted the stored tokens from {path}")
        } else {
            format!("No tokens were stored in {path}")
        };
        self.emit(
            json!({"event": "logged_out", "path": path, "had_tokens": had_tokens}),
            &line,
        );
    }

    pub fn error(&mut self, kind: &str, message: &str) {
        if self.json {
            self.emit(
                json!({"event": "error", "kind": kind, "message": message}),
                "",
            );
        } else {
            self.clear_spinner();
            eprintln!("Error: {message}");
        }
    }

    /// Plain progress for people (the demo's steps); nothing in JSON mode.
    pub fn note(&mut self, line: &str) {
        if !self.json {
            self.line(line);
        }
    }

    /// Advances the waiting spinner (people on a terminal only).
    pub fn tick(&mut self, waiting_for: &str) {
        let stderr = std::io::stderr();
        if self.json || !stderr.is_terminal() {
            return;
        }
        const FRAMES: [&str; 4] = ["|", "/", "-", "\\"];
        let frame = self.spinner.map_or(0, |f| (f + 1) % FRAMES.len());
        self.spinner = Some(frame);
        let _ = write!(stderr.lock(), "\r{} {waiting_for}", FRAMES[frame]);
    }

    fn emit(&mut self, event: Value, line: &str) {
        if self.json {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{event}");
            let _ = stdout.flush();
        } else {
            self.line(line);
        }
    }

    fn clear_spinner(&mut self) {
        if self.spinner.take().is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }

    fn line(&mut self, line: &str) {
        self.clear_spinner();
        match self.timed {
            Some(started) => {
                let millis = started.elapsed().as_secs_f64() * 1000.0;
                println!("[{millis:8.1} ms] {line}");
            }
            None => println!("{line}"),
        }
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
        eprintln!("\r\x1b[2KNot accepted: {reason}. Paste the address again, or keep waiting.");
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

/// Unix seconds, for the JSON events.
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `kind` of the JSON error event and a message that says what to do next.
pub fn describe_failure(error: &FlowError) -> (String, String) {
    let (kind, advice) = match error {
        // Microsoft Entra's device-flow refusal says the same as `access_denied`.
        FlowError::Denied(denial) if denial.code == "authorization_declined" => (
            "access_denied".into(),
            "sign in again and approve the request, or ask the provider's administrator",
        ),
        FlowError::Denied(denial) => (
            denial.code.clone(),
            "sign in again and approve the request, or ask the provider's administrator",
        ),
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
            "the device authorization endpoint answered something unexpected; check it",
        ),
        FlowError::IssuerMismatch { .. } => (
            "issuer_mismatch".into(),
            "check that --issuer is exactly the provider's issuer",
        ),
        FlowError::InvalidCallback(_) | FlowError::BadTokenResponse { .. } => (
            "invalid_response".into(),
            "the provider answered something unexpected; check the endpoints",
        ),
        FlowError::TokenRejected { .. } => (
            "token_rejected".into(),
            "check --client-id, the client secret and --auth-method",
        ),
        FlowError::Transport(_) => (
            "transport".into(),
            "check --token-endpoint and your network or proxy (HTTPS_PROXY, NO_PROXY)",
        ),
        FlowError::TimedOut(_) => (
            "timeout".into(),
            "run the command again and finish signing in within --timeout",
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
}
