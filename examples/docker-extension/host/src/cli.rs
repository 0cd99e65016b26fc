//! The command line, read by hand: `--name value` or `--name=value`, each option at most
//! once.

use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

use crate::redirect::{DEFAULT_LANDING, Landing, LandingError, RedirectError, RedirectUri};

/// The short usage text, shown with every usage error.
pub const USAGE: &str = "\
Usage: latchkey-callback --redirect-uri URI [--landing URL] [--timeout SECONDS]
       latchkey-callback --help | --version";

/// The full help text.
pub const HELP: &str = "\
latchkey-callback: receives the browser's sign-in redirect on a loopback port and prints it
for the Docker Desktop extension's UI to hand to the extension's backend.

Usage: latchkey-callback --redirect-uri URI [--landing URL] [--timeout SECONDS]
       latchkey-callback --help | --version

Options:
  --redirect-uri URI   The registered loopback redirect URI, http://HOST[:PORT]/PATH, where
                       HOST is 127.0.0.1 (or another 127.x.y.z), [::1] or localhost.
                       Without a port, or with port 0, the system picks a free port.
  --landing URL        Where the browser goes after its redirect
                       (default: docker-desktop://dashboard/open).
  --timeout SECONDS    How long to wait, 1 to 3600 (default: 600).
  --help               Show this text.
  --version            Show the version.

Output, one JSON object per line on standard output:
  {\"listening\":\"http://127.0.0.1:53682/callback\"}   the redirect URI to sign in with
  {\"callback\":\"?code=...&state=...\"}                 each redirect's query, as received
  {\"error\":\"port_in_use\"|\"cannot_listen\"|\"timeout\",\"message\":\"...\"}   then exit 1

It keeps listening after a redirect, so a forged one cannot end a sign-in; it stops after
16 redirects (exit 0), or at the timeout (exit 1 if no redirect came, else 0).
Usage errors exit 2.";

/// The longest wait accepted, in seconds.
const MAX_TIMEOUT: u64 = 3600;

/// The wait when none is given, in seconds.
const DEFAULT_TIMEOUT: u64 = 600;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Listen for redirects.
    Run(Options),
    /// Print the help text and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
}

/// The settings of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The loopback redirect URI to listen for.
    pub redirect: RedirectUri,
    /// Where the browser goes after its redirect.
    pub landing: Landing,
    /// How long to wait in total.
    pub timeout: Duration,
}

/// A command line that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// An argument that is not an option of this program.
    Unknown(String),
    /// An argument that is not valid Unicode.
    NotUnicode,
    /// An option given twice.
    Repeated(&'static str),
    /// An option without its value.
    MissingValue(&'static str),
    /// A value given to an option that takes none.
    UnexpectedValue(&'static str),
    /// `--redirect-uri` was not given.
    NoRedirectUri,
    /// The redirect URI was refused.
    RedirectUri(RedirectError),
    /// The landing URL was refused.
    Landing(LandingError),
    /// The timeout is not a whole number of seconds from 1 to 3600.
    Timeout,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::Unknown(arg) => write!(f, "unknown argument {arg:?}"),
            UsageError::NotUnicode => f.write_str("an argument is not valid Unicode"),
            UsageError::Repeated(name) => write!(f, "{name} is given more than once"),
            UsageError::MissingValue(name) => write!(f, "{name} needs a value"),
            UsageError::UnexpectedValue(name) => write!(f, "{name} takes no value"),
            UsageError::NoRedirectUri => f.write_str("--redirect-uri is required"),
            UsageError::RedirectUri(e) => write!(f, "--redirect-uri: {e}"),
            UsageError::Landing(e) => write!(f, "--landing: {e}"),
            UsageError::Timeout => write!(
                f,
                "--timeout must be a whole number of seconds from 1 to {MAX_TIMEOUT}"
            ),
        }
    }
}

impl std::error::Error for UsageError {}

/// Reads the arguments that follow the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let args = args
        .into_iter()
        .map(|arg| arg.into_string().map_err(|_| UsageError::NotUnicode))
        .collect::<Result<Vec<String>, UsageError>>()?;
    let mut redirect = None;
    let mut landing = None;
    let mut timeout = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let (name, slot): (&'static str, &mut Option<String>) = match name.as_str() {
            "--help" | "-h" | "--version" => {
                if inline.is_some() {
                    return Err(UsageError::UnexpectedValue(if name == "--version" {
                        "--version"
                    } else {
                        "--help"
                    }));
                }
                return Ok(if name == "--version" {
                    Command::Version
                } else {
                    Command::Help
                });
            }
            "--redirect-uri" => ("--redirect-uri", &mut redirect),
            "--landing" => ("--landing", &mut landing),
            "--timeout" => ("--timeout", &mut timeout),
            _ => return Err(UsageError::Unknown(arg)),
        };
        if slot.is_some() {
            return Err(UsageError::Repeated(name));
        }
        let value = match inline {
            Some(value) => value,
            // The next argument is the value, unless it is another option.
            None => match args.next() {
                Some(value) if !value.starts_with("--") => value,
                _ => return Err(UsageError::MissingValue(name)),
            },
        };
        *slot = Some(value);
    }
    let redirect = redirect.ok_or(UsageError::NoRedirectUri)?;
    let redirect = RedirectUri::parse(&redirect).map_err(UsageError::RedirectUri)?;
    let landing = Landing::parse(landing.as_deref().unwrap_or(DEFAULT_LANDING))
        .map_err(UsageError::Landing)?;
    let timeout = match timeout {
        Some(text) => parse_timeout(&text)?,
        None => DEFAULT_TIMEOUT,
    };
    Ok(Command::Run(Options {
        redirect,
        landing,
        timeout: Duration::from_secs(timeout),
    }))
}

/// Reads a timeout: decimal digits only, 1 to [`MAX_TIMEOUT`].
fn parse_timeout(text: &str) -> Result<u64, UsageError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UsageError::Timeout);
    }
    match text.parse::<u64>() {
        Ok(secs) if (1..=MAX_TIMEOUT).contains(&secs) => Ok(secs),
        _ => Err(UsageError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn options(args: &[&str]) -> Options {
        match run(args) {
            Ok(Command::Run(options)) => options,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_in_landing_and_timeout() {
        let options = options(&["--redirect-uri", "http://127.0.0.1/cb"]);
        assert_eq!(options.landing.as_str(), DEFAULT_LANDING);
        assert_eq!(options.timeout, Duration::from_secs(600));
        assert_eq!(options.redirect.path, "/cb");
    }

    #[test]
    fn both_value_forms_are_read() {
        let options = options(&[
            "--redirect-uri=http://localhost:8080/cb",
            "--landing",
            "https://example.com/a=b",
            "--timeout=3600",
        ]);
        assert_eq!(options.redirect.port, Some(8080));
        assert_eq!(options.landing.as_str(), "https://example.com/a=b");
        assert_eq!(options.timeout, Duration::from_secs(3600));
    }

    #[test]
    fn help_and_version_win() {
        assert_eq!(run(&["--help"]), Ok(Command::Help));
        assert_eq!(run(&["-h"]), Ok(Command::Help));
        assert_eq!(run(&["--version"]), Ok(Command::Version));
        assert_eq!(
            run(&["--redirect-uri", "http://127.0.0.1/cb", "--help"]),
            Ok(Command::Help)
        );
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        let uri = "http://127.0.0.1/cb";
        let cases: &[(&[&str], UsageError)] = &[
            (&[], UsageError::NoRedirectUri),
            (&["--timeout", "5"], UsageError::NoRedirectUri),
            (
                &["--redirect-uri"],
                UsageError::MissingValue("--redirect-uri"),
            ),
            (
                &["--redirect-uri", "--timeout", "5"],
                UsageError::MissingValue("--redirect-uri"),
            ),
            (
                &["--redirect-uri", uri, "--redirect-uri", uri],
                UsageError::Repeated("--redirect-uri"),
            ),
            (
                &["--redirect-uri=", "--redirect-uri", uri],
                UsageError::Repeated("--redirect-uri"),
            ),
            (
                &["--redirect-uri", uri, "--port", "1"],
                UsageError::Unknown("--port".into()),
            ),
            (
                &["--redirect-uri", uri, "extra"],
                UsageError::Unknown("extra".into()),
            ),
            (&["--help=yes"], UsageError::UnexpectedValue("--help")),
            (
                &["--redirect-uri", "https://127.0.0.1/cb"],
                UsageError::RedirectUri(RedirectError::Https),
            ),
            (
                &["--redirect-uri", uri, "--landing", "relative"],
                UsageError::Landing(LandingError::NoScheme),
            ),
            (
                &["--redirect-uri", uri, "--timeout", "0"],
                UsageError::Timeout,
            ),
            (
                &["--redirect-uri", uri, "--timeout", "3601"],
                UsageError::Timeout,
            ),
            (
                &["--redirect-uri", uri, "--timeout", "+5"],
                UsageError::Timeout,
            ),
            (&["--redirect-uri", uri, "--timeout="], UsageError::Timeout),
            (
                &[
                    "--redirect-uri",
                    uri,
                    "--timeout",
                    "99999999999999999999999",
                ],
                UsageError::Timeout,
            ),
        ];
        for (args, error) in cases {
            assert_eq!(run(args).as_ref(), Err(error), "{args:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn arguments_that_are_not_unicode_are_refused() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![
            OsString::from("--redirect-uri"),
            OsString::from_vec(vec![0xff]),
        ];
        assert_eq!(parse(args), Err(UsageError::NotUnicode));
    }
}
