//! `latchkey`: log in with OAuth 2.0 from a terminal, inspect the stored tokens, run a
//! development identity provider, or watch a whole login happen (`latchkey demo`).
#![forbid(unsafe_code)]
// A command is a driver: it reads the clocks the core may not.
#![allow(clippy::disallowed_methods)]

mod args;
mod demo;
mod login;
mod report;
mod show;

use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use args::{Command, RuntimeChoice};

/// Set by Ctrl-C; a login in progress notices it within a spinner tick and cancels.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether the user pressed Ctrl-C.
fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

fn main() -> ExitCode {
    let command = match args::parse(std::env::args_os()) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("latchkey: {error}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            print!("{}", args::USAGE);
            ExitCode::SUCCESS
        }
        Command::Login(args) => {
            // Without the handler Ctrl-C still ends the process, just less gracefully.
            let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed));
            match args.runtime {
                RuntimeChoice::Smol => smol::block_on(login::run(latchkey_smol::Smol, args)),
                RuntimeChoice::Tokio => on_tokio(login::run(latchkey_tokio::Tokio, args)),
            }
        }
        Command::Demo { runtime } => match runtime {
            RuntimeChoice::Smol => smol::block_on(demo::run(latchkey_smol::Smol)),
            RuntimeChoice::Tokio => on_tokio(demo::run(latchkey_tokio::Tokio)),
        },
        Command::Token {
            store,
            reveal,
            json,
        } => show::run(&store, reveal, json),
        Command::DevIdp(args) => demo::serve_dev_idp(args),
    }
}

/// Runs `future` on a multi-threaded tokio runtime.
fn on_tokio(future: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(error) => {
            eprintln!("latchkey: cannot start the tokio runtime: {error}");
            ExitCode::from(2)
        }
    }
}
