//! `latchkey-callback`: the Docker Desktop extension's host binary.
//!
//! Docker Desktop copies it to the user's machine; the extension's UI runs it with
//! `ddClient.extension.host.cli.exec("latchkey-callback", args, {stream: ...})` and reads
//! its standard output line by line. It listens on a loopback port for the browser's
//! OAuth redirect (RFC 8252 §7.3) and prints each redirect's query, which the UI hands to
//! the extension's backend. The backend holds the PKCE verifier and judges the callback;
//! this program never sees a token and never judges a code.
//!
//! ```text
//! latchkey-callback --redirect-uri URI [--landing URL] [--timeout SECONDS]
//! latchkey-callback --help | --version
//! ```
//!
//! Standard output carries one JSON object per line, flushed at once:
//!
//! ```text
//! {"listening":"http://127.0.0.1:53682/callback"}  once bound: the redirect URI to use
//! {"callback":"?code=...&state=..."}               each redirect, query as received
//! {"error":"port_in_use","message":"..."}          a fixed port is busy; exit 1
//! {"error":"cannot_listen","message":"..."}        listening failed otherwise; exit 1
//! {"error":"timeout","message":"..."}              no redirect in time; exit 1
//! ```
//!
//! The program keeps listening after a redirect, because a page that guessed the port could
//! send a forged one first; the UI ends the process when the login ends. It stops by itself
//! after 16 redirects (exit 0), when standard output is closed (exit 0), or at the timeout
//! (exit 1 with the timeout line if no redirect came, else exit 0 silently). Usage errors
//! go to standard error with exit status 2. Standard error also carries notes for people,
//! never a query.
//!
//! The parts are in the crate's library ([`latchkey_callback`]), where the fuzzer reaches
//! them too.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use latchkey_callback::cli::{self, Command, Options};
use latchkey_callback::json::Line;
use latchkey_callback::server::{Reporter, Server, Stop};
use latchkey_callback::{listener, note};

/// Exit status for an error reported on standard output.
const EXIT_FAILURE: u8 = 1;
/// Exit status for a command line that cannot be run.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(options)) => run(options),
        Ok(Command::Help) => print_text(cli::HELP),
        Ok(Command::Version) => print_text(concat!(
            env!("CARGO_PKG_NAME"),
            " ",
            env!("CARGO_PKG_VERSION")
        )),
        Err(error) => {
            note(&format!("{error}\n{}\nTry --help for more.", cli::USAGE));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Prints `text` on standard output for `--help` and `--version`.
fn print_text(text: &str) -> ExitCode {
    // A closed output is not worth a failure here either.
    let _ = writeln!(io::stdout(), "{text}");
    ExitCode::SUCCESS
}

/// Listens, prints and waits; the exit status follows the module docs.
fn run(options: Options) -> ExitCode {
    let mut reporter = Reporter::new(io::stdout());
    let bound = match listener::bind(&options.redirect) {
        Ok(bound) => bound,
        Err(error) => {
            note(&error.to_string());
            let message = error.message(&options.redirect);
            // If standard output is closed too, the exit status alone tells.
            let _ = reporter.line(&Line::Error {
                kind: error.kind(),
                message: &message,
            });
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if bound.without_ipv6 {
        note("IPv6 is not available on this machine: localhost is served on 127.0.0.1 only");
    }
    let endpoint = options.redirect.bound_to(bound.port);
    if reporter
        .line(&Line::Listening(&endpoint.to_string()))
        .is_err()
    {
        return ExitCode::SUCCESS;
    }
    let deadline = Instant::now() + options.timeout;

    // The accepting threads start only now, so that no callback line can come before the
    // listening line; connections made meanwhile wait in the system's queue.
    let (stop_sender, stop) = mpsc::channel();
    let server = Arc::new(Server::new(
        endpoint,
        options.landing,
        reporter,
        stop_sender,
    ));
    for listener in bound.listeners {
        if let Err(error) = server.spawn_acceptor(listener) {
            let message = format!("Cannot start listening for the browser's redirect: {error}.");
            let _ = server.reporter().line(&Line::Error {
                kind: "cannot_listen",
                message: &message,
            });
            return ExitCode::from(EXIT_FAILURE);
        }
    }

    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match stop.recv_timeout(left) {
            Ok(Stop::Finished | Stop::OutputClosed) => return ExitCode::SUCCESS,
            Err(RecvTimeoutError::Timeout) => {}
            // Cannot happen while `server` holds the sender; wait out the time anyway.
            Err(RecvTimeoutError::Disconnected) => thread::sleep(left),
        }
    }
    let message = format!(
        "No sign-in arrived within {}.",
        human_duration(options.timeout)
    );
    if server.reporter().time_out(&message) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

/// A duration in words: whole minutes when it is some, else seconds.
fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (n, unit) = if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(600)), "10 minutes");
        assert_eq!(human_duration(Duration::from_secs(60)), "1 minute");
        assert_eq!(human_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(human_duration(Duration::from_secs(90)), "90 seconds");
    }
}
