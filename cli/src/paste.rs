//! Logging in when no browser can be opened here: telling such a session apart, and taking
//! the address the browser ended on, pasted into the terminal.
//!
//! On an SSH session the user's browser is on another machine, where the provider's redirect
//! to this machine's loopback port fails to load. The address in that browser's bar still
//! holds the callback: pasted here, it is judged exactly like a callback on the port
//! ([`Service::redirect`], S53), and shares its single use with the port, which stays open
//! meanwhile: whichever arrives first wins, the other is refused.

use std::io::BufRead;

use latchkey_io::runtime::Runtime;
use latchkey_io::service::{Error, Service};

use crate::report;

/// Why no browser can be opened on this machine, if that is so: an SSH session, or Linux
/// (and the BSDs) without a graphical display.
pub fn browser_unavailable() -> Option<&'static str> {
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    if set("SSH_CONNECTION") || set("SSH_CLIENT") || set("SSH_TTY") {
        return Some("this is an SSH session");
    }
    if cfg!(not(any(target_os = "macos", windows))) && !set("DISPLAY") && !set("WAYLAND_DISPLAY") {
        return Some("there is no display");
    }
    None
}

/// Takes pasted addresses from standard input until it ends, handing each to `service`.
/// Refusals are reported and the login goes on waiting; an accepted one shows up as the
/// login's callback event.
pub async fn accept<R: Runtime>(service: &Service<R>, json: bool) {
    let (lines, pasted) = async_channel::bounded::<String>(1);
    // A thread of its own: a read of the terminal cannot be cancelled, and a runtime's
    // blocking pool may wait for it at shutdown. It ends with the process.
    let reader = std::thread::Builder::new()
        .name("latchkey-paste".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines.send_blocking(line).is_err() {
                    break;
                }
            }
        });
    if reader.is_err() {
        return;
    }
    while let Ok(line) = pasted.recv().await {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Err(reason) = judge(line, service.redirect_uri()) {
            report::paste_refused(json, &reason);
            continue;
        }
        match service.redirect(line) {
            Ok(_) => {}
            Err(Error::Callback(rejection)) => report::paste_refused(json, &rejection.to_string()),
            Err(error) => report::paste_refused(json, &error.to_string()),
        }
    }
}

/// Whether `line` is the redirect URI with a query: anything else (another site's address,
/// a bare code) is not what the browser ended on.
fn judge(line: &str, redirect_uri: &str) -> Result<(), String> {
    match line.strip_prefix(redirect_uri) {
        Some(rest) if rest.starts_with('?') => Ok(()),
        _ => Err(format!(
            "that is not the address the browser ended on: it starts with {redirect_uri}?"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_redirect_uri_with_a_query_is_taken() {
        let redirect = "http://127.0.0.1:4000/callback";
        assert!(judge("http://127.0.0.1:4000/callback?code=a&state=b", redirect).is_ok());
        for other in [
            "http://127.0.0.1:4000/callback",
            "http://127.0.0.1:4000/callbackx?code=a",
            "http://127.0.0.1:40000/callback?code=a",
            "https://evil.example/?http://127.0.0.1:4000/callback?code=a",
            "code=a&state=b",
        ] {
            assert!(judge(other, redirect).is_err(), "{other}");
        }
    }
}
