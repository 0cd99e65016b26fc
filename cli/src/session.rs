//! `latchkey refresh`, `latchkey logout` and `latchkey token --fresh`: the stored tokens'
//! later life. The token file names the provider ([`ProviderRecord`]); the command line
//! adds only the client secret, for a client that has one.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use latchkey::{
    ConfigError, LogoutReport, NotRevoked, RefreshError, SessionError, SessionOptions, TokenSet,
};
use latchkey_io::runtime::Runtime;
use latchkey_io::source::TokenSource;
use latchkey_io::store::{FileStore, ProviderRecord, TokenLocation, TokenStore};
use latchkey_io::transport::Transport;
use secrecy::ExposeSecret;

use crate::args::{Common, DEFAULT_PROFILE, SessionArgs, TokenArgs};
use crate::login::{
    Failure, file_store, http_client, read_client_credentials, read_secret, store_failure,
};
use crate::report::{Place, Reporter};
use crate::show;

/// Runs `latchkey refresh` on `runtime`.
pub async fn refresh<R: Runtime>(runtime: R, args: SessionArgs) -> ExitCode {
    let mut reporter = Reporter::new(args.common.file.json);
    let refreshed = async {
        let source = source(&runtime, &args.common, None).await?;
        source
            .refresh()
            .await
            .map_err(|error| source_failure(error, &args.common))
    };
    match refreshed.await {
        Ok(tokens) => {
            reporter.token(&tokens, "");
            let keychain = matches!(
                file_store(&args.common, false).location(&args.common.profile),
                Ok(TokenLocation::Keychain { .. })
            );
            reporter.stored(&Place {
                path: &args.common.file.store,
                keychain,
                profile: &args.common.profile,
            });
            ExitCode::SUCCESS
        }
        Err(failure) => failure.report(&mut reporter),
    }
}

/// Runs `latchkey logout` on `runtime`: revokes what the provider lets us revoke, deletes
/// the token file's entry in any case, and reports each outcome.
pub async fn logout<R: Runtime>(runtime: R, args: SessionArgs) -> ExitCode {
    let mut reporter = Reporter::new(args.common.file.json);
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
            reporter.logged_out(
                &Place {
                    path: &args.common.file.store,
                    keychain: false,
                    profile: &args.common.profile,
                },
                report.had_tokens,
            );
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
    let store = Arc::new(file_store(&args.common, false));
    if load_record(runtime, &store, &args.common.profile)
        .await?
        .is_none()
    {
        // Tokens without a record (written by something else): nobody to revoke them at,
        // but they still go.
        let had_tokens = load_tokens(runtime, &store, &args.common.profile)
            .await?
            .is_some();
        let profile = args.common.profile.clone();
        runtime
            .unblock(move || store.delete(&profile))
            .await
            .map_err(|error| store_failure(&error))?;
        return Ok(LogoutReport {
            had_tokens,
            not_revoked: had_tokens.then_some(NotRevoked::NoEndpoint),
            ..LogoutReport::default()
        });
    }
    let source = source(runtime, &args.common, None).await?;
    source
        .logout()
        .await
        .map_err(|error| source_failure(error, &args.common))
}

/// Runs `latchkey token`, refreshing first with `--fresh`.
pub async fn token<R: Runtime>(runtime: R, args: TokenArgs) -> ExitCode {
    let Some(margin) = args.fresh() else {
        return show::run(
            &file_store(&args.common, false),
            &args.common.profile,
            args.reveal,
            args.common.file.json,
        );
    };
    let mut reporter = Reporter::new(args.common.file.json);
    let fresh = async {
        let store = Arc::new(file_store(&args.common, false));
        let before = load_tokens(&runtime, &store, &args.common.profile).await?;
        let source = source(&runtime, &args.common, Some(margin)).await?;
        let tokens = source
            .tokens()
            .await
            .map_err(|error| source_failure(error, &args.common))?;
        let refreshed = before.is_none_or(|before| {
            before.access_token().expose_secret() != tokens.access_token().expose_secret()
        });
        Ok::<_, Failure>((tokens, refreshed))
    };
    match fresh.await {
        Ok((tokens, refreshed)) => {
            show::print(&tokens, args.reveal, args.common.file.json, Some(refreshed))
        }
        Err(failure) => failure.report(&mut reporter),
    }
}

/// A token source for the tokens of `common`'s profile, for the provider recorded with
/// them.
async fn source<R: Runtime>(
    runtime: &R,
    common: &Common,
    margin: Option<Duration>,
) -> Result<TokenSource<R>, Failure> {
    let store = Arc::new(file_store(common, false));
    let profile = common.profile.as_str();
    let path = common.file.store.as_path();
    let Some(record) = load_record(runtime, &store, profile).await? else {
        return Err(match load_tokens(runtime, &store, profile).await? {
            Some(_) => Failure::Config(format!(
                "{} records no provider settings{}; run `{}` again",
                path.display(),
                for_profile(profile),
                login_command(profile)
            )),
            None => not_logged_in(common),
        });
    };
    let mut builder = record.builder();
    if let Some(secret) = &common.secret.source() {
        builder = builder.client_secret(read_secret(secret)?);
    }
    if let Some(key) = read_client_credentials(&common.secret)? {
        builder = builder.client_key(key);
    }
    let provider = builder.build().map_err(|error| match error {
        ConfigError::MissingClientKey => Failure::Config(format!(
            "client {} authenticates with private_key_jwt: pass --client-key PATH",
            record.client_id
        )),
        ConfigError::UnusedClientKey => Failure::Config(format!(
            "client {} does not authenticate with private_key_jwt: leave out --client-key",
            record.client_id
        )),
        ConfigError::ClientKey(error) => Failure::Config(format!("client key: {error}")),
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
            "the provider recorded in {}{}: {other}; run `{}` again",
            path.display(),
            for_profile(profile),
            login_command(profile)
        )),
    })?;
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
        profile,
        options,
    )
    .map_err(|error| {
        Failure::Config(format!(
            "the token source: {error}; run `{}` again",
            login_command(profile)
        ))
    })
}

async fn load_record<R: Runtime>(
    runtime: &R,
    store: &Arc<FileStore>,
    profile: &str,
) -> Result<Option<ProviderRecord>, Failure> {
    let (store, profile) = (Arc::clone(store), profile.to_owned());
    runtime
        .unblock(move || store.load_provider(&profile))
        .await
        .map_err(|error| store_failure(&error))
}

async fn load_tokens<R: Runtime>(
    runtime: &R,
    store: &Arc<FileStore>,
    profile: &str,
) -> Result<Option<TokenSet>, Failure> {
    let (store, profile) = (Arc::clone(store), profile.to_owned());
    runtime
        .unblock(move || store.load(&profile))
        .await
        .map_err(|error| store_failure(&error))
}

/// `latchkey login`, with `--profile` unless it is the default one.
pub fn login_command(profile: &str) -> String {
    match profile {
        DEFAULT_PROFILE => "latchkey login".to_owned(),
        other => format!("latchkey login --profile {other}"),
    }
}

/// " for profile NAME", unless it is the default one.
pub fn for_profile(profile: &str) -> String {
    match profile {
        DEFAULT_PROFILE => String::new(),
        other => format!(" for profile {other}"),
    }
}

fn not_logged_in(common: &Common) -> Failure {
    Failure::Failed {
        kind: "login_required",
        message: format!(
            "no tokens stored{} in {}; run `{}` first",
            for_profile(&common.profile),
            common.file.store.display(),
            login_command(&common.profile)
        ),
    }
}

/// A token source's failure as the JSON error event's kind and advice.
fn source_failure(error: SessionError, common: &Common) -> Failure {
    let login = login_command(&common.profile);
    let (kind, advice) = match &error {
        SessionError::NotLoggedIn => ("login_required", format!("run `{login}` first")),
        SessionError::Refresh(RefreshError::LoginRequired(_)) => (
            "login_required",
            format!("the stored tokens were deleted; run `{login}` again"),
        ),
        SessionError::Refresh(RefreshError::NoRefreshToken) => (
            "login_required",
            format!("the provider issued no refresh token; run `{login}` again"),
        ),
        SessionError::Refresh(RefreshError::Rejected { .. }) => (
            "token_rejected",
            "check the client secret; the stored tokens were kept".to_owned(),
        ),
        SessionError::Transport(_) => (
            "transport",
            "check your network or proxy (HTTPS_PROXY, NO_PROXY); the stored tokens were kept"
                .to_owned(),
        ),
        SessionError::Refresh(RefreshError::IdToken(_)) => (
            "id_token_invalid",
            format!("the stored tokens were deleted; run `{login}` again"),
        ),
        SessionError::Store(_) => (
            "store",
            "check the --store path (or the keychain), then try again".to_owned(),
        ),
        SessionError::TimedOut | SessionError::Cancelled => (
            "transport",
            "no answer in time; the stored tokens were kept; try again".to_owned(),
        ),
        _ => (
            "invalid_response",
            format!(
                "the provider answered something unexpected; the stored tokens were kept; try \
                 again later, or run `{login}` again"
            ),
        ),
    };
    Failure::Failed {
        kind,
        message: format!("{error}; {advice}"),
    }
}
