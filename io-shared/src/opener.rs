//! Handing the authorization URL to a browser.
//!
//! The URL comes from configuration or a provider's metadata, so it is checked with
//! [`check_url`] and passed to the opener program as one argument, never through a shell
//! (S6; mcp-remote's CVE-2025-6514 was a provider URL run by a shell).

use std::io;
use std::process::{Command, Stdio};
use std::thread;

/// Something that shows the user the authorization URL. The drivers call it from their
/// blocking pools.
pub trait Opener: Send + Sync + 'static {
    /// Opens `url`, or arranges for the user to see it.
    ///
    /// # Errors
    ///
    /// The I/O error if the URL could not be handed over; the program then shows the URL
    /// for the user to open by hand.
    fn open(&self, url: &str) -> io::Result<()>;
}

/// The system's default browser: `xdg-open URL` on Linux and the BSDs, `open URL` on macOS,
/// `rundll32 url.dll,FileProtocolHandler URL` on Windows.
///
/// The URL must pass [`check_url`]. The opener program is started with no standard input or
/// output and is not waited for (a thread reaps it when it exits); success means it was
/// started, not that a browser appeared.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemBrowser;

impl Opener for SystemBrowser {
    fn open(&self, url: &str) -> io::Result<()> {
        check_url(url)?;
        let mut child = opener_command(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // xdg-open may wait for the browser to exit; reaping it on a thread of its own
        // returns at once and leaves no zombie. Its exit status is of no use: it tells
        // nothing about whether the user saw the page.
        thread::spawn(move || child.wait());
        Ok(())
    }
}

#[cfg(target_os = "macos")]
fn opener_command(url: &str) -> Command {
    let mut command = Command::new("open");
    command.arg(url);
    command
}

#[cfg(windows)]
fn opener_command(url: &str) -> Command {
    let mut command = Command::new("rundll32");
    command.arg("url.dll,FileProtocolHandler").arg(url);
    command
}

#[cfg(not(any(target_os = "macos", windows)))]
fn opener_command(url: &str) -> Command {
    let mut command = Command::new("xdg-open");
    command.arg(url);
    command
}

/// Opens nothing: for programs that print the URL or forward it to a UI themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportOnly;

impl Opener for ReportOnly {
    fn open(&self, _url: &str) -> io::Result<()> {
        Ok(())
    }
}

/// Checks that `url` is safe to hand to an opener program (S6): it starts with `http://` or
/// `https://` (any case) followed by something, and consists of printable ASCII only.
///
/// That excludes `file:`, `javascript:` and other schemes; a leading `-` that the opener
/// would take for an option; whitespace and control characters, which could split or
/// smuggle arguments; and non-ASCII look-alikes. Real authorization URLs are
/// percent-encoded, so they pass.
///
/// # Errors
///
/// An [`io::ErrorKind::InvalidInput`] error saying which rule failed. It never quotes the
/// URL, which carries the flow's `state` (S41).
pub fn check_url(url: &str) -> io::Result<()> {
    let refuse = |reason| Err(io::Error::new(io::ErrorKind::InvalidInput, reason));
    let after_scheme = ["https://", "http://"].into_iter().find_map(|scheme| {
        let prefix = url.get(..scheme.len())?;
        prefix
            .eq_ignore_ascii_case(scheme)
            .then(|| &url[scheme.len()..])
    });
    match after_scheme {
        None => refuse("refusing to open a URL that is not http or https"),
        Some("") => refuse("refusing to open a URL without a host"),
        Some(_) if !url.bytes().all(|b| b.is_ascii_graphic()) => {
            refuse("refusing to open a URL with whitespace, control or non-ASCII characters")
        }
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTHORIZATION_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth?response_type=code&client_id=123-abc.apps.googleusercontent.com&redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Fcallback&scope=openid%20email&state=Zm9vYmFyYmF6cXV4&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256";

    #[test]
    fn s6_real_authorization_urls_pass() {
        for url in [
            AUTHORIZATION_URL,
            "http://127.0.0.1:8080/authorize?x=1",
            "HTTPS://idp.example/authorize",
        ] {
            check_url(url).expect(url);
        }
    }

    #[test]
    fn s6_dangerous_urls_are_refused() {
        for url in [
            "file:///etc/passwd",
            "javascript:alert(1)",
            "-a https://idp.example/",
            "--help",
            "https://idp.example/a b",
            "https://idp.example/\n--x",
            "https://idp.example/\0",
            "https://idp.example/\t",
            "https://idp.exаmple/",
            "https://",
            "ftp://idp.example/",
            "httpsx://idp.example/",
            "",
            " https://idp.example/",
        ] {
            let error = check_url(url).expect_err(url);
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{url:?}");
        }
    }

    #[test]
    fn s41_refusal_does_not_quote_the_url() {
        let url = format!("{AUTHORIZATION_URL} ");
        let error = check_url(&url).expect_err("space").to_string();
        assert!(!error.contains("Zm9vYmFy"), "{error}");
    }

    #[test]
    fn s6_system_browser_checks_the_url_before_starting_anything() {
        // Had it started the opener, the error would be the spawn's, not InvalidInput.
        for url in ["file:///etc/passwd", "--version"] {
            let error = SystemBrowser.open(url).expect_err(url);
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{url}");
        }
    }

    #[test]
    fn report_only_opens_nothing_and_succeeds() {
        ReportOnly
            .open("javascript:alert(1)")
            .expect("report only never fails");
    }
}
