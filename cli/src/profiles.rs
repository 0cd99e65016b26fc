//! `latchkey profiles`: every login in the token file, with its provider, who signed in,
//! when its access token expires, and where its tokens are.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use latchkey_io::store::{FileStore, Keychain, OsKeychain, StoredEntry, TokenLocation};
use serde_json::{Map, Value, json};

use crate::args::ProfilesArgs;
use crate::report::unix_seconds;

/// Runs `latchkey profiles`.
pub fn run(args: &ProfilesArgs) -> ExitCode {
    let path = &args.file.store;
    let store = FileStore::new(path).with_keychain(Arc::new(OsKeychain::new()), false);
    let entries = match store.entries() {
        Ok(entries) => entries,
        Err(error) => {
            let message = format!("{error}; check the --store path");
            if args.file.json {
                println!(
                    "{}",
                    json!({"event": "error", "kind": "store", "message": message})
                );
            } else {
                eprintln!("Error: {message}");
            }
            return ExitCode::from(1);
        }
    };
    let now = SystemTime::now();
    if args.file.json {
        for entry in &entries {
            println!("{}", Value::Object(event(entry, &store)));
        }
        return ExitCode::SUCCESS;
    }
    if entries.is_empty() {
        println!(
            "No logins are stored in {}; log in with `latchkey login` (add --profile NAME to \
             keep several).",
            path.display()
        );
        return ExitCode::SUCCESS;
    }
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|entry| {
            [
                entry.key.clone(),
                provider(entry),
                who(entry),
                expiry(entry, now),
                place(entry, &store),
            ]
        })
        .collect();
    let header = [
        "PROFILE",
        "PROVIDER",
        "SIGNED IN AS",
        "ACCESS TOKEN",
        "TOKENS IN",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text
    };
    println!("{}", line(header));
    for row in &rows {
        println!("{}", line(row.each_ref().map(String::as_str)));
    }
    ExitCode::SUCCESS
}

/// The JSON object of one profile.
fn event(entry: &StoredEntry, store: &FileStore) -> Map<String, Value> {
    let mut event = Map::new();
    event.insert("event".into(), "profile".into());
    event.insert("name".into(), entry.key.clone().into());
    event.insert(
        "provider".into(),
        entry.provider.as_ref().map_or(Value::Null, |record| {
            json!({
                "issuer": record.issuer,
                "token_endpoint": record.token_endpoint,
                "client_id": record.client_id,
            })
        }),
    );
    let (location, account) = match &entry.location {
        TokenLocation::File => ("file", None),
        TokenLocation::Keychain { account } => ("keychain", Some(account)),
        TokenLocation::Nowhere => ("none", None),
    };
    event.insert("tokens".into(), location.into());
    event.insert("store".into(), store.path().display().to_string().into());
    if let Some(account) = account {
        event.insert("keychain_account".into(), account.clone().into());
    }
    match &entry.tokens {
        Ok(Some(tokens)) => {
            event.insert("signed_in".into(), true.into());
            event.insert(
                "expires_at".into(),
                tokens.expires_at().map(unix_seconds).into(),
            );
            event.insert(
                "refresh_token".into(),
                tokens.refresh_token().is_some().into(),
            );
            event.insert(
                "identity".into(),
                tokens
                    .identity()
                    .map_or(Value::Null, |identity| Value::Object(identity.summary())),
            );
        }
        Ok(None) => {
            event.insert("signed_in".into(), false.into());
        }
        Err(error) => {
            event.insert("signed_in".into(), Value::Null);
            event.insert("error".into(), error.to_string().into());
        }
    }
    event
}

/// The provider, by its issuer where known, else its token endpoint.
fn provider(entry: &StoredEntry) -> String {
    match &entry.provider {
        Some(record) => record
            .issuer
            .clone()
            .unwrap_or_else(|| record.token_endpoint.clone()),
        None => "(not recorded)".to_owned(),
    }
}

fn who(entry: &StoredEntry) -> String {
    match &entry.tokens {
        Ok(Some(tokens)) => tokens.identity().map_or_else(
            || "-".to_owned(),
            |identity| identity.display_name().to_owned(),
        ),
        Ok(None) => "(signed out)".to_owned(),
        Err(_) => "?".to_owned(),
    }
}

fn expiry(entry: &StoredEntry, now: SystemTime) -> String {
    let tokens = match &entry.tokens {
        Ok(Some(tokens)) => tokens,
        Ok(None) => return "-".to_owned(),
        Err(_) => return "unreadable".to_owned(),
    };
    let refresh = match tokens.refresh_token() {
        Some(_) => ", refreshable",
        None => "",
    };
    let when = match tokens.expires_at() {
        None => "no expiry given".to_owned(),
        Some(at) => match at.duration_since(now) {
            Ok(left) => format!("expires in {}", minutes(left.as_secs())),
            Err(past) => format!("expired {} ago", minutes(past.duration().as_secs())),
        },
    };
    format!("{when}{refresh}")
}

fn minutes(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds} s"),
        60..7200 => format!("{} min", seconds / 60),
        _ => format!("{} h", seconds / 3600),
    }
}

fn place(entry: &StoredEntry, store: &FileStore) -> String {
    match (&entry.location, &entry.tokens) {
        (TokenLocation::Keychain { .. }, Err(error)) => {
            format!(
                "OS keychain ({}), unreadable: {error}",
                OsKeychain::new().name()
            )
        }
        (TokenLocation::Keychain { .. }, _) => {
            format!("OS keychain ({})", OsKeychain::new().name())
        }
        (_, Err(error)) => format!("{}, unreadable: {error}", store.path().display()),
        (TokenLocation::File, _) => store.path().display().to_string(),
        (TokenLocation::Nowhere, _) => "nowhere (signed out)".to_owned(),
    }
}
