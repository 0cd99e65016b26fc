//! The parts of `latchkey-callback`, the Docker Desktop extension's host binary (its
//! program and protocol are described in `src/main.rs`): [`cli`] reads the command line,
//! [`redirect`] checks the two addresses, [`listener`] opens the port, [`http`] reads
//! requests and decides on them without touching a socket, [`server`] moves the bytes, and
//! [`json`] writes the lines. They are a library so that the repository's fuzzer can feed
//! [`http::parse_head`] and [`http::judge`] whatever bytes a browser, or anything else on
//! the machine, could send.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod http;
pub mod json;
pub mod listener;
pub mod redirect;
pub mod server;

use std::io::{self, Write};

/// Writes a note for people on standard error. Failures are ignored: there is nowhere else
/// to say anything.
pub fn note(text: &str) {
    let _ = writeln!(io::stderr(), "latchkey-callback: {text}");
}
