//! The backend of latchkey's Docker Desktop extension example.
//!
//! It runs in the extension's container. Docker Desktop forwards the UI's
//! `ddClient.extension.vm.service` calls to its Unix socket ([`api`]). It listens on no TCP
//! port: the browser's redirect reaches the extension's host binary on the user's machine
//! (any free loopback port), or opens the extension's tab through Docker Desktop's deep
//! link, and the UI forwards the callback here. It exchanges the code, keeps the tokens in
//! a file on a volume, refreshes and revokes them, and calls APIs for the UI with them
//! ([`proxy`]): no token ever leaves it.
//!
//! ```text
//! latchkey-extension [--config PATH] [--check]
//! ```
//!
//! The settings come from `--config`, else `$LATCHKEY_CONFIG`, else
//! `/etc/latchkey/config.json`; `--check` only reads and checks them (no network) and exits.
//! The socket is bound before anything else: the provider is reached in the background, with
//! back-off, and settings that cannot work are reported in the status rather than by exiting
//! (a container that exits is restarted in a loop, and its UI could only say "no backend").
//!
//! Logs are JSON lines on stderr (`LATCHKEY_LOG=debug` for more), never with a secret (S41).
//! SIGTERM (`docker stop`) and Ctrl-C stop it cleanly: a login in progress is cancelled, the
//! socket file removed.
#![forbid(unsafe_code)]
// A driver program: it reads the clocks the core may not.
#![allow(clippy::disallowed_methods)]

mod api;
mod config;
mod http;
mod proxy;

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use async_net::unix::{UnixListener, UnixStream};
use futures_lite::future;
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::proxy::Proxy;
use latchkey_io::store::FileStore;
use latchkey_io::transport::Transport;
use tracing::level_filters::LevelFilter;
use tracing::{error, info, warn};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use api::Backend;
use config::{Settings, SetupError};
use http::{Connection, Next, Response};

/// What `--help` prints.
const HELP: &str = "\
The backend of a Docker Desktop extension that signs its user in with OAuth 2.0.

Usage: latchkey-extension [--config PATH] [--check]

Options:
  --config PATH  the settings (default: $LATCHKEY_CONFIG, else /etc/latchkey/config.json)
  --check        only read and check the settings (no network), then exit
  --help         print this and exit
  --version      print the version and exit

It serves the extension's API on the settings' socket; logs are JSON lines on stderr
(LATCHKEY_LOG=debug for more).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Wherever they are: `docker run IMAGE --help` comes after the entry point's `--config`.
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|arg| arg == "--version" || arg == "-V") {
        println!("latchkey-extension {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    log_json();
    let (path, check) = match arguments(args.into_iter()) {
        Ok(arguments) => arguments,
        Err(SetupError(message)) => {
            eprintln!(
                "latchkey-extension: {message}\nusage: latchkey-extension [--config PATH] [--check] (--help for more)"
            );
            return ExitCode::from(2);
        }
    };
    if check {
        // The files the settings name are read too: what passes here starts.
        let checked = Settings::read(&path).and_then(|settings| {
            settings.read_files()?;
            transport(&settings).map(drop)
        });
        return match checked {
            Ok(()) => {
                println!("{}: the settings are valid", path.display());
                ExitCode::SUCCESS
            }
            Err(SetupError(message)) => {
                eprintln!("latchkey-extension: {message}");
                ExitCode::from(1)
            }
        };
    }
    match smol::block_on(run(&path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(SetupError(message)) => {
            error!(reason = %message, "cannot start");
            ExitCode::from(1)
        }
    }
}

/// JSON lines on stderr: what container log collectors expect.
fn log_json() {
    let level = match std::env::var("LATCHKEY_LOG").as_deref() {
        Ok("debug") => LevelFilter::DEBUG,
        Ok("trace") => LevelFilter::TRACE,
        Ok("warn") => LevelFilter::WARN,
        _ => LevelFilter::INFO,
    };
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(io::stderr)
        .with_filter(Targets::new().with_target("latchkey", level));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// The settings' path (`--config PATH`, else `$LATCHKEY_CONFIG`, else
/// `/etc/latchkey/config.json`) and whether only to check them (`--check`).
fn arguments(mut args: impl Iterator<Item = String>) -> Result<(PathBuf, bool), SetupError> {
    let mut path = std::env::var_os("LATCHKEY_CONFIG")
        .map_or_else(|| PathBuf::from("/etc/latchkey/config.json"), PathBuf::from);
    let mut check = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--config" => {
                path = args
                    .next()
                    .ok_or_else(|| SetupError("--config needs a path".into()))?
                    .into();
            }
            other => return Err(SetupError(format!("unknown argument {other:?}"))),
        }
    }
    Ok((path, check))
}

async fn run(path: &Path) -> Result<(), SetupError> {
    // Bad settings do not stop the backend: a container that exits is restarted in a loop
    // while the UI could only show a transport error. It serves its socket and says what is
    // wrong in the status instead.
    let settings = Settings::read(path);
    let socket = match &settings {
        Ok(settings) => settings.socket.clone(),
        Err(_) => Settings::socket_hint(path),
    };
    let token_file = match &settings {
        Ok(settings) => settings.token_file.clone(),
        Err(_) => PathBuf::from(config::DEFAULT_TOKEN_FILE),
    };
    let transport = match &settings {
        Ok(settings) => settings
            .read_files()
            .and_then(|()| transport(settings))
            .map_err(|SetupError(message)| message),
        Err(SetupError(message)) => Err(message.clone()),
    };
    if let Err(message) = &transport {
        error!(reason = %message, "the settings cannot work; serving the status only");
    }
    let listener = bind_socket(&socket)?;
    let store = Arc::new(FileStore::new(&token_file));
    let backend = Backend::new(
        settings
            .map(Arc::new)
            .map_err(|SetupError(message)| message),
        transport,
        store,
    );
    info!(
        socket = %socket.display(),
        token_file = %token_file.display(),
        "extension backend ready"
    );
    // Offline at start is normal: the provider is reached in the background, with back-off.
    let connecting = smol::spawn(Arc::clone(&backend).connect());

    let (stop, stopping) = async_channel::bounded(1);
    ctrlc::set_handler(move || {
        let _ = stop.try_send(());
    })
    .map_err(|e| SetupError(format!("installing the signal handler: {e}")))?;

    let mut connections: Vec<smol::Task<()>> = Vec::new();
    loop {
        let next = future::or(async { Some(listener.accept().await) }, async {
            let _ = stopping.recv().await;
            None
        })
        .await;
        match next {
            Some(Ok((stream, _))) => {
                connections.retain(|task| !task.is_finished());
                connections.push(smol::spawn(serve(Arc::clone(&backend), stream)));
            }
            Some(Err(error)) => warn!(%error, "accepting on the socket failed"),
            None => break,
        }
    }

    info!("stopping");
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    connecting.cancel().await;
    for connection in connections {
        connection.cancel().await;
    }
    // A login in progress is cancelled.
    backend.shutdown().await;
    info!("stopped");
    Ok(())
}

/// How the backend reaches the provider and the APIs: latchkey's HTTP client, through
/// `HTTPS_PROXY` if set, trusting the public roots and the settings' `ca_file`.
fn transport(settings: &Settings) -> Result<Transport, SetupError> {
    let proxy = Proxy::from_env().map_err(|e| SetupError(format!("proxy settings: {e}")))?;
    let client = HttpClient::new(HttpOptions {
        proxy,
        roots: settings.roots()?,
        ..HttpOptions::default()
    })
    .map_err(|e| SetupError(format!("ca_file: {e}")))?;
    Ok(Transport::Builtin(client))
}

/// Binds the API socket, replacing a stale socket file a previous run left behind (but
/// never anything else).
fn bind_socket(path: &Path) -> Result<UnixListener, SetupError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| {
                SetupError(format!("removing the stale socket {}: {e}", path.display()))
            })?;
        }
        Ok(_) => {
            return Err(SetupError(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        Err(_) => {}
    }
    UnixListener::bind(path)
        .map_err(|e| SetupError(format!("listening on {}: {e}", path.display())))
}

/// Answers the requests of one API connection.
async fn serve(backend: Arc<Backend>, stream: UnixStream) {
    let mut connection = Connection::new(stream);
    loop {
        let request = match connection.next().await {
            Ok(Next::Request(request)) => request,
            Ok(Next::Closed) | Err(_) => return,
            Ok(Next::Refuse(response)) => {
                warn!(status = response.status, "malformed API request");
                let _ = connection.answer(&response, true).await;
                return;
            }
        };
        let started = Instant::now();
        let response: Response = backend.handle(&request).await;
        info!(
            method = %request.method,
            path = %request.path,
            status = response.status,
            elapsed = ?started.elapsed(),
            "api"
        );
        if connection.answer(&response, false).await.is_err() {
            return;
        }
    }
}
