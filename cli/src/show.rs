//! `latchkey token`: what is stored, without the secret unless asked.

use std::process::ExitCode;

use latchkey::TokenSet;
use latchkey_io::store::{FileStore, TokenStore};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::report::{Reporter, describe_audience, describe_tokens, unix_seconds};
use crate::session::{for_profile, login_command};

/// Prints the token set stored for `profile`.
pub fn run(store: &FileStore, profile: &str, reveal: bool, json: bool) -> ExitCode {
    let (kind, message) = match store.load(profile) {
        Ok(Some(tokens)) => return print(&tokens, reveal, json, None),
        Ok(None) => (
            "login_required",
            format!(
                "no tokens stored{} in {}; run `{}` first",
                for_profile(profile),
                store.path().display(),
                login_command(profile)
            ),
        ),
        Err(error) => (
            "store",
            format!("{error}; check the --store path (or the keychain), then try again"),
        ),
    };
    if json {
        // `latchkey token --json` prints one object, the tokens' summary; failures go to
        // stderr, as they always have.
        eprintln!("latchkey: {message}");
    } else {
        Reporter::new(false).error(kind, &message);
    }
    ExitCode::from(1)
}

/// Prints `tokens`: a summary, and with `reveal` the access token alone on stdout (the
/// summary then on stderr). `refreshed` (with `--fresh`) says whether they are newer than
/// the tokens stored when the command started: refreshed by this command, or by another
/// one at the same moment whose refresh it waited for.
pub fn print(tokens: &TokenSet, reveal: bool, json: bool, refreshed: Option<bool>) -> ExitCode {
    if json {
        let mut summary = json!({
            "token_type": tokens.token_type().as_str(),
            "expires_at": tokens.expires_at().map(unix_seconds),
            "scope": tokens.scope(),
            "refresh_token": tokens.refresh_token().is_some(),
        });
        if !tokens.audience().is_empty() {
            summary["audience"] = tokens.audience().into();
        }
        if let Some(refreshed) = refreshed {
            summary["refreshed"] = refreshed.into();
        }
        if let Some(identity) = tokens.identity() {
            summary["identity"] = serde_json::Value::Object(identity.summary());
        }
        if reveal {
            summary["access_token"] = tokens.access_token().expose_secret().into();
        }
        println!("{summary}");
    } else {
        let refreshed = match refreshed {
            Some(true) => " (just refreshed)",
            _ => "",
        };
        let mut summary = Vec::new();
        if let Some(identity) = tokens.identity() {
            summary.push(format!("Signed in as {}", identity.display_name()));
        }
        summary.push(format!(
            "{} token, {}{refreshed}",
            tokens.token_type().as_str(),
            describe_tokens(tokens)
        ));
        if let Some(scope) = tokens.scope() {
            summary.push(format!("scope: {scope}"));
        }
        summary.extend(describe_audience(tokens));
        if reveal {
            // `TOKEN=$(latchkey token --reveal)`: the token alone on stdout, what it is on
            // stderr for the person watching.
            for line in summary {
                eprintln!("{line}");
            }
            println!("{}", tokens.access_token().expose_secret());
        } else {
            for line in summary {
                println!("{line}");
            }
        }
    }
    ExitCode::SUCCESS
}
