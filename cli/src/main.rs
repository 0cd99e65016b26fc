//! `latchkey`: log in with OAuth 2.0 from a terminal, refresh, inspect and revoke the stored
//! tokens, run a development identity provider, or watch a whole login happen
//! (`latchkey demo`).
#![forbid(unsafe_code)]
// A command is a driver: it reads the clocks the core may not.
#![allow(clippy::disallowed_methods)]

mod args;
mod demo;
mod login;
mod paste;
mod profiles;
mod proof;
mod report;
mod session;
mod show;

use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use args::{Command, Invocation, RuntimeChoice};
use clap::CommandFactory as _;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Set by Ctrl-C; a login in progress notices it within a spinner tick and cancels.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether the user pressed Ctrl-C.
fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

fn main() -> ExitCode {
    let invocation = match args::parse(std::env::args_os()) {
        Ok(invocation) => invocation,
        // `--help`, `help COMMAND` and `--version`: on stdout, exit 0.
        Err(shown) if shown.exit_code() == 0 => {
            let _ = shown.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprint!("{}", args::usage_error(&error));
            return ExitCode::from(2);
        }
    };
    log_to_stderr(invocation.verbose());
    let Some(command) = invocation.command else {
        let _ = Invocation::command().print_help();
        return ExitCode::SUCCESS;
    };
    match command {
        Command::Login(args) => {
            let args = *args;
            // Without the handler Ctrl-C still ends the process, just less gracefully.
            let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed));
            match args.common.driver.runtime {
                RuntimeChoice::Smol => smol::block_on(login::run(latchkey_smol::Smol, args)),
                RuntimeChoice::Tokio => on_tokio(login::run(latchkey_tokio::Tokio, args)),
            }
        }
        Command::Demo { driver, .. } => match driver.runtime {
            RuntimeChoice::Smol => smol::block_on(demo::run(latchkey_smol::Smol)),
            RuntimeChoice::Tokio => on_tokio(demo::run(latchkey_tokio::Tokio)),
        },
        Command::Refresh(args) => match args.common.driver.runtime {
            RuntimeChoice::Smol => smol::block_on(session::refresh(latchkey_smol::Smol, args)),
            RuntimeChoice::Tokio => on_tokio(session::refresh(latchkey_tokio::Tokio, args)),
        },
        Command::Logout(args) => match args.common.driver.runtime {
            RuntimeChoice::Smol => smol::block_on(session::logout(latchkey_smol::Smol, args)),
            RuntimeChoice::Tokio => on_tokio(session::logout(latchkey_tokio::Tokio, args)),
        },
        Command::Token(args) => match args.common.driver.runtime {
            RuntimeChoice::Smol => smol::block_on(session::token(latchkey_smol::Smol, args)),
            RuntimeChoice::Tokio => on_tokio(session::token(latchkey_tokio::Tokio, args)),
        },
        Command::Profiles(args) => profiles::run(&args),
        Command::Proof(args) => proof::run(&args),
        Command::Completions { shell } => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(&args::completions(shell))
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Command::DevIdp(args) => demo::serve_dev_idp(args),
    }
}

/// `-v`: each step of a login, refresh or logout with its duration; `-vv`: also the
/// engine's phase changes, refused browser requests and connections. To stderr, so stdout
/// stays the command's output (and `--json`'s events).
fn log_to_stderr(verbosity: u8) {
    let level = match verbosity {
        0 => return,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(Targets::new().with_target("latchkey", level));
    // Fails only if a subscriber is already installed, which nothing here does.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Runs `future` on a multi-threaded tokio runtime.
fn on_tokio(future: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(error) => {
            eprintln!(
                "latchkey: cannot start the tokio runtime: {error}; run the command again with \
                 --runtime smol"
            );
            ExitCode::from(2)
        }
    }
}
