//! The backend of latchkey's Docker Desktop extension example.
//!
//! It runs in the extension's container. Docker Desktop forwards the UI's
//! `ddClient.extension.vm.service` calls to its Unix socket ([`api`]); the provider sends the
//! user's browser back to its loopback listener on port 8080 (published on the host as
//! `127.0.0.1:8080`), or, with an application redirect URI, the UI forwards the deep link it
//! was opened with. It exchanges the code, keeps the tokens in a file on a volume, refreshes
//! and revokes them, and hands the UI an access token when asked.
//!
//! ```text
//! latchkey-extension [--config PATH] [--check]
//! ```
//!
//! The settings come from `--config`, else `$LATCHKEY_CONFIG`, else
//! `/etc/latchkey/config.json`; `--check` only reads and checks them (no network) and exits.
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
use latchkey_io::service::ServiceOptions;
use latchkey_io::store::FileStore;
use latchkey_io::transport::Transport;
use latchkey_smol::{Smol, TokenSource};
use tracing::level_filters::LevelFilter;
use tracing::{error, info, warn};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use api::Backend;
use config::{Settings, SetupError};
use http::{Connection, Next, Response};

fn main() -> ExitCode {
    log_json();
    let (path, check) = match arguments(std::env::args().skip(1)) {
        Ok(arguments) => arguments,
        Err(SetupError(message)) => {
            eprintln!(
                "latchkey-extension: {message}\nusage: latchkey-extension [--config PATH] [--check]"
            );
            return ExitCode::from(2);
        }
    };
    if check {
        return match Settings::read(&path) {
            Ok(_) => {
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
            error!(%message, "cannot start");
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
    let settings = Settings::read(path)?;
    let proxy = Proxy::from_env().map_err(|e| SetupError(format!("proxy settings: {e}")))?;
    let client = HttpClient::new(HttpOptions {
        proxy,
        ..HttpOptions::default()
    })
    .map_err(|e| SetupError(format!("TLS: {e}")))?;
    let transport = Transport::Builtin(client);
    let provider = settings.provider(&transport).await?;
    let config = settings.config(provider.clone())?;
    let store = Arc::new(FileStore::new(&settings.token_file));
    let mut options = ServiceOptions::new(Arc::clone(&store) as _, transport.clone());
    options.bind.clone_from(&settings.listen);
    let service = latchkey_smol::serve(config, options).map_err(|e| SetupError(e.to_string()))?;
    let source = TokenSource::new(Smol, provider, Arc::clone(&store) as _, transport);
    let listener = bind_socket(&settings.socket)?;
    info!(
        socket = %settings.socket.display(),
        redirect_uri = service.redirect_uri(),
        listening = ?service.local_addrs(),
        token_file = %settings.token_file.display(),
        "extension backend ready"
    );
    let backend = Backend::new(service, source, store, settings.sample_api.clone());

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
    let _ = std::fs::remove_file(&settings.socket);
    // Requests in flight end here; a login in progress is cancelled by the shutdown, and
    // a browser waiting on its callback gets the failure page.
    for connection in connections {
        connection.cancel().await;
    }
    backend.shutdown().await;
    info!("stopped");
    Ok(())
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
