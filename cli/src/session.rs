//! `latchkey refresh`, `latchkey logout` and `latchkey token --fresh`: the stored tokens'
//! later life. The token file names the provider ([`ProviderRecord`]); the command line
//! adds only the client secret, for a client that has one.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use latchkey::{
    ConfigError, LogoutReport, NotRevoked, RefreshError, SessionError, SessionOptions, TokenSet,
};
use latchkey_io::runtime::Runtime;
use latchkey_io::source::TokenSource;
use latchkey_io::store::{DEFAULT_KEY, FileStore, ProviderRecord, TokenStore};
use latchkey_io::transport::Transport;
use secrecy::ExposeSecret;

use crate::args::{SecretSource, SessionArgs, TokenArgs};
use crate::login::{Failure, http_client, read_secret};
use crate::report::Reporter;
use crate::show;

/// Runs `latchkey refresh` on `runtime`.
pub async fn refresh<R: Runtime>(runtime: R, args: SessionArgs) -> ExitCode {
    let mut reporter = Reporter::new(args.common.json);
    let refreshed = async {
        let source = source(
            &runtime,
            &args.common.store,
            args.common.secret.source().as_ref(),
            None,
        )
        .await?;
        source.refresh().await.map_err(source_failure)
    };
    match refreshed.await {
        Ok(tokens) => {
            reporter.token(&tokens, "");
            reporter.stored(&args.common.store);
            ExitCode::SUCCESS
        }
        Err(failure) => failure.report(&mut reporter),
    }
}

/// Runs `latchkey logout` on `runtime`: revokes what the provider lets us revoke, deletes
/// the token file's entry in any case, and reports each outcome.
pub async fn logout<R: Runtime>(runtime: R, args: SessionArgs) -> ExitCode {
    let mut reporter = Reporter::new(args.common.json);
    match log_out(&runtime, &args).await {
        Ok(report) => {
            for (kind, outcome) in &report.revocations {
                match outcome {
                    Ok(()) => reporter.revoked(kind.hint()),
                    Err(error) => reporter.revocation_failed(kind.hint(), &error.to_string()),
                }
            }
            if let Some(reason) = &report.not_revoked {
                reporter.not_revoked(&reason.to_string());
            }
            reporter.logged_out(&args.common.store, report.had_tokens);
            if report.fully_revoked() || report.not_revoked == Some(NotRevoked::NoEndpoint) {
                ExitCode::SUCCESS
            } else {
                // Deleted here, but possibly still valid at the provider: say so.
                ExitCode::from(1)
            }
        }
        Err(failure) => failure.report(&mut reporter),
    }
}

async fn log_out<R: Runtime>(runtime: &R, args: &SessionArgs) -> Result<LogoutReport, Failure> {
    let store = FileStore::new(&args.common.store);
    if load_record(runtime, &args.common.store).await?.is_none() {
        // Tokens without a record (written by something else): nobody to revoke them at,
        // but they still go.
        let had_tokens = load_tokens(runtime, &args.common.store).await?.is_some();
        runtime
            .unblock(move || store.delete(DEFAULT_KEY))
            .await
            .map_err(|error| store_failure(&error))?;
        return Ok(LogoutReport {
            had_tokens,
            not_revoked: had_tokens.then_some(NotRevoked::NoEndpoint),
            ..LogoutReport::default()
        });
    }
    let source = source(
        runtime,
        &args.common.store,
        args.common.secret.source().as_ref(),
        None,
    )
    .await?;
    source.logout().await.map_err(source_failure)
}

/// Runs `latchkey token`, refreshing first with `--fresh`.
pub async fn token<R: Runtime>(runtime: R, args: TokenArgs) -> ExitCode {
    let Some(margin) = args.fresh() else {
        return show::run(&args.common.store, args.reveal, args.common.json);
    };
    let mut reporter = Reporter::new(args.common.json);
    let fresh = async {
        let before = load_tokens(&runtime, &args.common.store).await?;
        let source = source(
            &runtime,
            &args.common.store,
            args.common.secret.source().as_ref(),
            Some(margin),
        )
        .await?;
        let tokens = source.tokens().await.map_err(source_failure)?;
        let refreshed = before.is_none_or(|before| {
            before.access_token().expose_secret() != tokens.access_token().expose_secret()
        });
        Ok::<_, Failure>((tokens, refreshed))
    };
    match fresh.await {
        Ok((tokens, refreshed)) => {
            show::print(&tokens, args.reveal, args.common.json, Some(refreshed))
        }
        Err(failure) => failure.report(&mut reporter),
    }
}

/// A token source for the tokens in `path`, for the provider recorded there.
async fn source<R: Runtime>(
    runtime: &R,
    path: &Path,
    secret: Option<&SecretSource>,
    margin: Option<Duration>,
) -> Result<TokenSource<R>, Failure> {
    let Some(record) = load_record(runtime, path).await? else {
        return Err(match load_tokens(runtime, path).await? {
            Some(_) => Failure::Config(format!(
                "{} records no provider settings; run `latchkey login` again",
                path.display()
            )),
            None => not_logged_in(path),
        });
    };
    let mut builder = record.builder();
    if let Some(secret) = secret {
        builder = builder.client_secret(read_secret(secret)?);
    }
    let provider = builder.build().map_err(|error| match error {
        ConfigError::MissingClientSecret => Failure::Config(format!(
            "client {} authenticates with its secret: pass --client-secret-env VAR or \
             --client-secret-file PATH",
            record.client_id
        )),
        ConfigError::UnusedClientSecret => Failure::Config(format!(
            "client {} is a public client: leave out the client secret",
            record.client_id
        )),
        other => Failure::Config(format!(
            "the provider recorded in {}: {other}",
            path.display()
        )),
    })?;
    let store = Arc::new(FileStore::new(path));
    let transport = Transport::Builtin(http_client()?);
    let mut options = SessionOptions::default();
    if let Some(margin) = margin {
        options.margin = margin;
    }
    TokenSource::with(
        runtime.clone(),
        provider,
        store,
        transport,
        DEFAULT_KEY,
        options,
    )
    .map_err(|error| Failure::Config(format!("the token source: {error}")))
}

async fn load_record<R: Runtime>(
    runtime: &R,
    path: &Path,
) -> Result<Option<ProviderRecord>, Failure> {
    let store = FileStore::new(path);
    runtime
        .unblock(move || store.load_provider(DEFAULT_KEY))
        .await
        .map_err(|error| store_failure(&error))
}

async fn load_tokens<R: Runtime>(runtime: &R, path: &Path) -> Result<Option<TokenSet>, Failure> {
    let store = FileStore::new(path);
    runtime
        .unblock(move || store.load(DEFAULT_KEY))
        .await
        .map_err(|error| store_failure(&error))
}

fn not_logged_in(path: &Path) -> Failure {
    Failure::Failed {
        kind: "login_required",
        message: format!(
            "no tokens stored in {}; run `latchkey login` first",
            path.display()
        ),
    }
}

fn store_failure(error: &latchkey::StoreError) -> Failure {
    Failure::Failed {
        kind: "store",
        message: format!("{error}; check the --store path"),
    }
}

/// A token source's failure as the JSON error event's kind and advice.
fn source_failure(error: SessionError) -> Failure {
    let (kind, advice) = match &error {
        SessionError::NotLoggedIn => ("login_required", "run `latchkey login` first"),
        SessionError::Refresh(RefreshError::LoginRequired(_)) => (
            "login_required",
            "the stored tokens were deleted; run `latchkey login` again",
        ),
        SessionError::Refresh(RefreshError::NoRefreshToken) => (
            "login_required",
            "the provider issued no refresh token; run `latchkey login` again",
        ),
        SessionError::Refresh(RefreshError::Rejected { .. }) => (
            "token_rejected",
            "check the client secret; the stored tokens were kept",
        ),
        SessionError::Transport(_) => (
            "transport",
            "check your network or proxy (HTTPS_PROXY, NO_PROXY); the stored tokens were kept",
        ),
        SessionError::Refresh(RefreshError::IdToken(_)) => (
            "id_token_invalid",
            "the stored tokens were deleted; run `latchkey login` again",
        ),
        SessionError::Store(_) => ("store", "check the --store path"),
        SessionError::TimedOut | SessionError::Cancelled => (
            "transport",
            "no answer in time; the stored tokens were kept",
        ),
        _ => (
            "invalid_response",
            "the provider answered something unexpected; the stored tokens were kept",
        ),
    };
    Failure::Failed {
        kind,
        message: format!("{error}; {advice}"),
    }
}
