//! # web-backend
//!
//! latchkey's web backend example: a multi-user web service that signs its users in with
//! OAuth 2.0 and OpenID Connect, on axum, `latchkey-tokio` and `latchkey-redis`. Any number
//! of replicas run behind a load balancer and share, through Redis, the pending logins (a
//! login started on one replica finishes on whichever one the provider's redirect
//! reaches), the users' tokens, and a refresh lock (one refresh per user however many
//! replicas ask at once). Everything secret is sealed before it reaches Redis.
//!
//! This file turns the command line into the pieces ([`Args`], [`run`]); the HTTP API is in
//! [`app`]. Startup errors are one line on stderr, with exit code 2 for a configuration the
//! service cannot use and 1 for a failure at run time (discovery, the listening socket).
//! Redis need not answer at startup: `/healthz` says 503 until it does.
#![forbid(unsafe_code)]

mod app;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Uri;
use clap::{ArgAction, Parser, ValueEnum};
use latchkey::{ClientAuth, Config, Provider, Session, SessionOptions};
use latchkey_io::discovery::discover;
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::proxy::Proxy;
use latchkey_io::transport::Transport;
use latchkey_redis::{Redis, RedisConfig, SealKeyError, SealKeys};
use latchkey_tokio::{Service, ServiceOptions, Tokio};
use secrecy::SecretString;
use tracing::{info, warn};

use app::App;

/// What `--help` says after the options.
const AFTER_HELP: &str = "\
PROVIDER: --issuer URL alone discovers the endpoints from the provider's metadata; or give
  --authorization-endpoint and --token-endpoint (and --issuer, --jwks-uri to verify ID tokens).

HTTP API (`user` stands in for the application's own session):
  POST /login?user=U     200 {\"authorization_url\": \"...\"}: send the user's browser there
  GET  /callback?...     the provider's redirect: 303 to / when signed in, else an error page
  GET  /me?user=U        200 {\"signed_in\": true, \"sub\": \"...\", \"expires_at\": SECS} or {\"signed_in\": false}
  GET  /api?user=U       the provider's UserInfo answer, asked with a fresh access token
  POST /logout?user=U    200 with what was revoked at the provider
  GET  /healthz          200 when Redis answers, 503 otherwise

EXIT CODES: 0 stopped by SIGTERM or Ctrl-C, 1 failed at run time (discovery, the listening
  socket), 2 usage or configuration error (arguments, key file, Redis URL, client secret)";

/// A multi-user web backend that signs its users in with OAuth 2.0 / OpenID Connect.
///
/// Run as many replicas as you like behind a load balancer: they share pending logins,
/// tokens and refresh locks through Redis, sealed with the keys of --seal-key-file.
#[derive(Debug, Parser)]
#[command(name = "web-backend", version, after_help = AFTER_HELP)]
struct Args {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// The URL users reach the service by (the load balancer's origin, no path); the
    /// redirect URI registered at the provider is URL/callback. https, or http on loopback.
    #[arg(long, value_name = "URL")]
    public_url: String,

    /// The Redis (or Valkey) server every replica shares:
    /// `redis://[[user]:password@]host[:port][/db]` or `redis+unix:///path`.
    #[arg(long, value_name = "URL")]
    redis: String,

    /// The keys that seal everything stored in Redis: one `ID BASE64KEY` a line, the
    /// sealing key first (see the README for making and rotating them).
    #[arg(long, value_name = "PATH")]
    seal_key_file: PathBuf,

    /// The provider's issuer. Alone: discover the endpoints from its metadata. With
    /// endpoints: the issuer callbacks and ID tokens must name.
    #[arg(
        long,
        value_name = "URL",
        help_heading = "Provider",
        required_unless_present = "authorization_endpoint"
    )]
    issuer: Option<String>,

    /// The authorization endpoint (with --token-endpoint, instead of discovery).
    #[arg(
        long,
        value_name = "URL",
        help_heading = "Provider",
        requires = "token_endpoint"
    )]
    authorization_endpoint: Option<String>,

    /// The token endpoint (with --authorization-endpoint).
    #[arg(
        long,
        value_name = "URL",
        help_heading = "Provider",
        requires = "authorization_endpoint"
    )]
    token_endpoint: Option<String>,

    /// The token revocation endpoint (RFC 7009), used by /logout (with endpoints).
    #[arg(
        long,
        value_name = "URL",
        help_heading = "Provider",
        requires = "authorization_endpoint"
    )]
    revocation_endpoint: Option<String>,

    /// Where the provider's ID token signing keys are (with endpoints).
    #[arg(
        long,
        value_name = "URL",
        help_heading = "Provider",
        requires = "authorization_endpoint"
    )]
    jwks_uri: Option<String>,

    /// The UserInfo endpoint, used by /api (with endpoints).
    #[arg(
        long,
        value_name = "URL",
        help_heading = "Provider",
        requires = "authorization_endpoint"
    )]
    userinfo_endpoint: Option<String>,

    /// The client id registered at the provider.
    #[arg(long, value_name = "ID", help_heading = "Client")]
    client_id: String,

    /// Read the client secret from this file (a trailing newline is not part of it).
    #[arg(long, value_name = "PATH", help_heading = "Client")]
    client_secret_file: Option<PathBuf>,

    /// Read the client secret from this environment variable.
    #[arg(
        long,
        value_name = "VAR",
        help_heading = "Client",
        conflicts_with = "client_secret_file"
    )]
    client_secret_env: Option<String>,

    /// Client authentication at the token endpoint [default: basic with a secret, else none].
    #[arg(long, value_name = "METHOD", help_heading = "Client")]
    auth_method: Option<AuthMethod>,

    /// A scope to request; repeatable, or several separated by spaces [default: openid].
    #[arg(long = "scope", value_name = "SCOPE", help_heading = "Client")]
    scopes: Vec<String>,

    /// Refresh access tokens that expire within this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    refresh_margin: u64,

    /// Log more (debug); logs go to stderr.
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,
}

/// `--auth-method`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum AuthMethod {
    /// HTTP Basic (client_secret_basic).
    Basic,
    /// In the form body (client_secret_post).
    Post,
    /// None: a public client (PKCE only).
    None,
}

/// Why the service did not start: one line, and the exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// A configuration the service cannot use: exit 2.
    fn config(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// A failure at run time: exit 1.
    fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    // Usage errors: clap prints them with the usage and exits 2; --help exits 0.
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&Failure::runtime(format!("starting tokio: {error}"))),
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(&failure),
    }
}

fn fail(failure: &Failure) -> ExitCode {
    eprintln!("web-backend: {}", failure.message);
    ExitCode::from(failure.code)
}

/// Checks the configuration, starts the login service and serves until SIGTERM or Ctrl-C.
async fn run(args: Args) -> Result<(), Failure> {
    // Everything that needs no network first, so that a mistake is reported at once.
    let keys = SealKeys::from_file(&args.seal_key_file)
        .map_err(|error| Failure::config(seal_key_error(&args.seal_key_file, &error)))?;
    let redis = Redis::new(RedisConfig::new(&args.redis, keys))
        .map_err(|error| Failure::config(format!("--redis: {error}")))?;
    let redirect_uri = redirect_uri(&args.public_url)?;
    let secret = client_secret(&args)?;
    let transport = transport()?;
    let provider = provider(&args, &transport, secret).await?;
    let config = Config::builder(provider.clone())
        .web_redirect_uri(&redirect_uri)
        .build()
        .map_err(|error| Failure::config(format!("--public-url: {error}")))?;
    let mut session = SessionOptions::default();
    session.margin = Duration::from_secs(args.refresh_margin);
    Session::with_options(provider.clone(), session.clone())
        .map_err(|error| Failure::config(format!("--refresh-margin: {error}")))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| Failure::runtime(format!("cannot listen on {}: {error}", args.listen)))?;

    // Configured: from here on, the log says what happens (startup errors above stay one
    // line on stderr).
    log_to_stderr(args.verbose);
    let store = Arc::new(redis.token_store());
    let directory = Arc::new(redis.directory());
    // Pending logins, and the provider's ID token keys (fetched by one replica, used by
    // all), are shared through Redis too.
    let options = ServiceOptions::new(Arc::clone(&store) as _, transport.clone())
        .with_directory(directory)
        .with_key_sets(Arc::new(redis.key_sets()));
    // No listener of its own: callbacks come through this service's router.
    let service = Service::unbound(Tokio, config, options)
        .map_err(|error| Failure::config(error.to_string()))?;
    let app = Arc::new(App::new(
        service, redis, store, provider, transport, session,
    ));
    match app.ping().await {
        Ok(()) => info!(server = app.redis_server(), "redis answers"),
        Err(error) => {
            warn!(%error, "redis does not answer yet; /healthz says 503 until it does");
        }
    }
    info!(listen = %args.listen, %redirect_uri, "web-backend serving");
    axum::serve(listener, app::router(Arc::clone(&app)))
        .with_graceful_shutdown(stopped())
        .await
        .map_err(|error| Failure::runtime(format!("serving: {error}")))?;
    info!("stopping");
    // Logins still waiting for their callback end; their records stay in Redis, where
    // another replica can still complete them until they expire.
    if let Ok(app) = Arc::try_unwrap(app) {
        app.shutdown().await;
    }
    Ok(())
}

/// The key file's error, naming the file once.
fn seal_key_error(path: &Path, error: &SealKeyError) -> String {
    match error {
        SealKeyError::Unreadable { .. } => error.to_string(),
        _ => format!("{}: {error}", path.display()),
    }
}

/// `URL/callback`, for a public URL that is an origin.
fn redirect_uri(public_url: &str) -> Result<String, Failure> {
    let invalid = |why: &str| {
        Failure::config(format!(
            "--public-url must be scheme://host[:port] (https, or http on loopback): {why}"
        ))
    };
    let uri: Uri = public_url.parse().map_err(|_| invalid("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(invalid("the scheme is not http or https"));
    }
    if uri.authority().is_none() {
        return Err(invalid("no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid(
            "a path or query (serve the service at the root of its origin)",
        ));
    }
    Ok(format!("{}/callback", public_url.trim_end_matches('/')))
}

/// The client secret, from its file or environment variable, if there is one.
fn client_secret(args: &Args) -> Result<Option<SecretString>, Failure> {
    let secret = if let Some(path) = &args.client_secret_file {
        std::fs::read_to_string(path).map_err(|error| {
            Failure::config(format!(
                "cannot read the client secret from {}: {error}",
                path.display()
            ))
        })?
    } else if let Some(var) = &args.client_secret_env {
        std::env::var(var).map_err(|_| {
            Failure::config(format!("environment variable {var} holds no client secret"))
        })?
    } else {
        return Ok(None);
    };
    // `echo secret > file` adds a newline that is not part of the secret.
    Ok(Some(SecretString::from(
        secret.trim_end_matches(['\r', '\n']).to_owned(),
    )))
}

/// latchkey's HTTP client for the provider's endpoints, through the proxy the environment
/// names (`HTTPS_PROXY`, `NO_PROXY`).
fn transport() -> Result<Transport, Failure> {
    let proxy =
        Proxy::from_env().map_err(|error| Failure::config(format!("proxy settings: {error}")))?;
    let client = HttpClient::new(HttpOptions {
        proxy,
        ..HttpOptions::default()
    })
    .map_err(|error| Failure::config(format!("HTTP client: {error}")))?;
    Ok(Transport::Builtin(client))
}

/// The provider, as `latchkey login` builds it: explicit endpoints, or discovery from the
/// issuer; then the client's secret, authentication and scopes.
async fn provider(
    args: &Args,
    transport: &Transport,
    secret: Option<SecretString>,
) -> Result<Provider, Failure> {
    let client_id = args.client_id.as_str();
    let builder = match (&args.authorization_endpoint, &args.token_endpoint) {
        (Some(authorization), Some(token)) => {
            let mut builder = Provider::builder(authorization, token, client_id);
            if let Some(endpoint) = &args.revocation_endpoint {
                builder = builder.revocation_endpoint(endpoint);
            }
            if let Some(uri) = &args.jwks_uri {
                builder = builder.jwks_uri(uri);
            }
            if let Some(endpoint) = &args.userinfo_endpoint {
                builder = builder.userinfo_endpoint(endpoint);
            }
            if let Some(issuer) = &args.issuer {
                builder = builder.issuer(issuer);
            }
            builder
        }
        // clap requires --issuer without endpoints.
        _ => {
            let issuer = args.issuer.as_deref().unwrap_or_default();
            discover(&Tokio, transport, issuer, client_id)
                .await
                .map_err(|error| {
                    Failure::runtime(format!(
                        "discovery at {issuer}: {error}; check --issuer, or give \
                         --authorization-endpoint and --token-endpoint"
                    ))
                })?
        }
    };
    let mut scopes: Vec<String> = args
        .scopes
        .iter()
        .flat_map(|scope| scope.split_whitespace())
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        // `sub` comes from the verified ID token.
        scopes.push("openid".to_owned());
    }
    let mut builder = builder.scopes(scopes).crypto(latchkey_io::crypto::ring());
    if let Some(secret) = secret {
        builder = builder.client_secret(secret);
    }
    if let Some(method) = args.auth_method {
        builder = builder.client_auth(match method {
            AuthMethod::Basic => ClientAuth::SecretBasic,
            AuthMethod::Post => ClientAuth::SecretPost,
            AuthMethod::None => ClientAuth::None,
        });
    }
    builder.build().map_err(|error| match error {
        latchkey::ConfigError::IdTokenVerification(_) => Failure::config(format!(
            "provider: {error}; give --issuer and --jwks-uri with the endpoints, or discover \
             the provider with --issuer alone"
        )),
        error => Failure::config(format!("provider: {error}")),
    })
}

/// Logs to stderr: info, or debug with `-v`. No event carries a secret (S41).
fn log_to_stderr(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .init();
}

/// Completes on SIGTERM (a container or service manager stopping us) or Ctrl-C.
async fn stopped() {
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminated = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = interrupted => {}
        () = terminated => {}
    }
}
