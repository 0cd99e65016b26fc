//! What the command tells its user: one JSON object per line with `--json`, short lines for
//! a person otherwise. Never a secret either way.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use latchkey::{FlowError, TokenSet};
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
        FlowError::Denied(denial) => (
            denial.code.clone(),
            "sign in again and approve the request, or ask the provider's administrator",
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
