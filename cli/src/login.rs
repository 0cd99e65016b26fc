//! `latchkey login`: one login through either driver, reported as it goes.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_lite::future;
use latchkey::keys::PrivateKey;
use latchkey::{
    ClientAuth, Config, FlowError, FlowOptions, Landing, Provider, ProviderBuilder, Step, presets,
};
use latchkey_io::discovery::discover;
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::opener::{Opener, SystemBrowser};
use latchkey_io::proxy::Proxy;
use latchkey_io::runtime::Runtime;
use latchkey_io::service::{Elapsed, Login, LoginEvent, Service, ServiceOptions};
use latchkey_io::store::{
    FileStore, LoginGuard, LoginLockError, OsKeychain, ProviderRecord, TokenLocation,
};
use latchkey_io::transport::Transport;
use secrecy::SecretString;

use crate::args::{
    AuthMethod, BROWSER_TIMEOUT, Common, LoginArgs, Preset, ProviderChoice, SecretArgs,
    SecretSource, Way,
};
use crate::paste;
use crate::report::{Place, Reporter, describe_failure};

/// How often the spinner turns while the browser is away.
const TICK: Duration = Duration::from_millis(120);

/// Why the command stops short.
pub enum Failure {
    /// Usage or configuration: exit 2.
    Config(String),
    /// The login failed: exit 1.
    Flow(FlowError),
    /// Another operation failed (refresh, logout, the store, discovery): exit 1, with the
    /// JSON error event's kind.
    Failed { kind: &'static str, message: String },
    /// `--device` with a provider that has no device authorization endpoint: exit 2.
    Unsupported(String),
}

impl Failure {
    /// Reports the failure and gives the exit code.
    pub fn report(self, reporter: &mut Reporter) -> ExitCode {
        match self {
            Failure::Config(message) => {
                reporter.error("config", &message);
                ExitCode::from(2)
            }
            Failure::Flow(error) => {
                let (kind, message) = describe_failure(&error);
                reporter.error(&kind, &message);
                ExitCode::from(1)
            }
            Failure::Failed { kind, message } => {
                reporter.error(kind, &message);
                ExitCode::from(1)
            }
            Failure::Unsupported(message) => {
                reporter.error("device_unsupported", &message);
                ExitCode::from(2)
            }
        }
    }
}

impl From<latchkey_io::service::Error> for Failure {
    fn from(error: latchkey_io::service::Error) -> Failure {
        match error {
            latchkey_io::service::Error::Flow(error) => Failure::Flow(error),
            other => Failure::Config(format!(
                "{other}; check the options (`latchkey help login`)"
            )),
        }
    }
}

/// Runs `latchkey login` on `runtime`.
pub async fn run<R: Runtime>(runtime: R, args: LoginArgs) -> ExitCode {
    let mut reporter = Reporter::new(args.common.file.json);
    match login(&runtime, &args, &mut reporter).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(&mut reporter),
    }
}

async fn login<R: Runtime>(
    runtime: &R,
    args: &LoginArgs,
    reporter: &mut Reporter,
) -> Result<(), Failure> {
    let profile = args.common.profile.as_str();
    let store = Arc::new(file_store(&args.common, args.keyring));
    // One login per profile at a time, across processes (S60): a second one would open
    // another browser tab and race the first one's tokens.
    let _login = begin_login(&store, args)?;
    // A keychain or token file that cannot be used fails now, before the browser opens.
    let probed = Arc::clone(&store);
    let key = profile.to_owned();
    let keychain = runtime
        .unblock(move || {
            probed.probe(&key)?;
            probed.location(&key)
        })
        .await
        .map_err(|error| store_failure(&error))?;
    let keychain = args.keyring || matches!(keychain, TokenLocation::Keychain { .. });
    if keychain && !args.keyring {
        reporter.note("This profile keeps its tokens in the OS keychain, as before.");
    }
    let transport = Transport::Builtin(http_client()?);
    let provider = provider(runtime, &transport, args).await?;
    if provider.requests_openid() && provider.id_token_policy().is_none() {
        reporter.warning(
            "id_token_unverified",
            "--no-verify-id-token: the ID token is NOT verified; nobody's identity is recorded, \
             and nothing in the ID token can be trusted",
        );
    }
    let record = ProviderRecord::of(&provider);
    let requested_scope = args.scopes.join(" ");
    let has_device = provider.device_authorization_endpoint().is_some();
    let way = choose_way(args, has_device, reporter)?;
    let mut options = ServiceOptions::new(Arc::clone(&store) as _, transport);
    options.bind.extend(args.bind);
    let flow = || FlowOptions::new().owner(profile);
    let (service, login, deadline, paste) = match way {
        Chosen::Device => {
            let config = config(provider, args, args.redirect_uris()[0])?;
            let service = Service::unbound(runtime.clone(), config, options)?;
            let login = service.start_device(flow())?;
            // Without --timeout, until the code expires.
            let deadline = args.timeout.map(|timeout| Instant::now() + timeout);
            (service, login, deadline, false)
        }
        Chosen::Browser { open } => {
            let service = bind_first(runtime, &provider, args, &options)?;
            reporter.listening(service.redirect_uri());
            // With PAR the parameters are pushed first; the URL comes with the answer.
            let login = service.start_async(flow()).await?;
            let url = login.url().unwrap_or_default().to_owned();
            let opened = open && {
                let url = url.clone();
                runtime
                    .unblock(move || SystemBrowser.open(&url))
                    .await
                    .is_ok()
            };
            reporter.authorize(&url, opened);
            if !opened {
                reporter.paste_prompt(service.redirect_uri());
            }
            let deadline = Instant::now() + args.timeout.unwrap_or(BROWSER_TIMEOUT);
            (service, login, Some(deadline), !opened)
        }
    };
    let json = reporter.json_mode();
    let place = Place {
        path: store.path(),
        keychain,
        profile,
    };
    let following = follow(
        runtime,
        &login,
        deadline,
        reporter,
        &requested_scope,
        &place,
    );
    let result = if paste {
        // The browser may be on another machine, where the redirect to this one's loopback
        // port fails to load: its address can be pasted here instead.
        future::or(following, async {
            paste::accept(&service, json).await;
            std::future::pending().await
        })
        .await
    } else {
        following.await
    };
    service.shutdown().await;
    result.map_err(Failure::Flow)?;
    // What `refresh` and `logout` need later, next to the tokens.
    let key = profile.to_owned();
    runtime
        .unblock(move || store.save_provider(&key, &record))
        .await
        .map_err(|error| Failure::Failed {
            kind: "store",
            message: format!(
                "recording the provider's settings: {error}; check the --store path, then log in \
                 again"
            ),
        })
}

/// Marks this login as under way for its profile, or says who is logging in already.
fn begin_login(store: &FileStore, args: &LoginArgs) -> Result<LoginGuard, Failure> {
    store
        .try_begin_login(&args.common.profile)
        .map_err(|error| match error {
            LoginLockError::InProgress { pid } => Failure::Failed {
                kind: "login_in_progress",
                message: format!(
                    "another `latchkey login` for profile {:?} is in progress{}; finish it in \
                     its browser (or press Ctrl-C where it runs), then try again",
                    args.common.profile,
                    pid.map(|pid| format!(" (process {pid})"))
                        .unwrap_or_default()
                ),
            },
            LoginLockError::Store(error) => store_failure(&error),
        })
}

/// A listening service on the first `--redirect-uri` whose port can be bound (providers
/// that register fixed loopback ports); when none can, an error naming every port.
fn bind_first<R: Runtime>(
    runtime: &R,
    provider: &Provider,
    args: &LoginArgs,
    options: &ServiceOptions,
) -> Result<Service<R>, Failure> {
    let mut refused = Vec::new();
    for redirect_uri in args.redirect_uris() {
        let config = config(provider.clone(), args, redirect_uri)?;
        match Service::bind(runtime.clone(), config, options.clone()) {
            Ok(service) => return Ok(service),
            Err(latchkey_io::service::Error::Bind { addr, source }) => {
                refused.push(format!("{addr} ({source})"));
            }
            Err(other) => return Err(other.into()),
        }
    }
    Err(Failure::Config(match refused.as_slice() {
        [one] => format!(
            "cannot listen on {one}: another program uses the port; stop it, or give \
             another --redirect-uri (port 0 for any, where the provider allows it)"
        ),
        all => format!(
            "cannot listen on any redirect URI's port: {}; stop what uses one of them, or give \
             another --redirect-uri",
            all.join(", ")
        ),
    }))
}

/// The token file of `common`, with the OS keychain for the profiles whose tokens are
/// there (and for this login's, with `keyring`).
pub fn file_store(common: &Common, keyring: bool) -> FileStore {
    FileStore::new(&common.file.store).with_keychain(Arc::new(OsKeychain::new()), keyring)
}

/// A store that could not be used, with what to do.
pub fn store_failure(error: &latchkey::StoreError) -> Failure {
    let advice = match error.to_string().contains("OS keychain") {
        true => {
            "unlock the keychain (or start one), or log in without --keyring to keep the \
             tokens in the token file"
        }
        false => "check the --store path, then try again",
    };
    Failure::Failed {
        kind: "store",
        message: format!("{error}; {advice}"),
    }
}

/// How this login lets the user sign in.
enum Chosen {
    /// The device authorization grant.
    Device,
    /// The loopback listener; the browser opened here when `open`.
    Browser { open: bool },
}

/// Picks the way in: `--device` and `--no-device` decide; otherwise the browser where one
/// can be opened, the device grant where none can and the provider has it, else the URL
/// printed and the address pasted back. The user hears why.
fn choose_way(
    args: &LoginArgs,
    has_device: bool,
    reporter: &mut Reporter,
) -> Result<Chosen, Failure> {
    let no_browser = match args.no_browser {
        true => Some("--no-browser"),
        false => paste::browser_unavailable(),
    };
    match args.way() {
        Way::Device if has_device => Ok(Chosen::Device),
        Way::Device => Err(Failure::Unsupported(
            "the provider has no device authorization endpoint: give \
             --device-authorization-endpoint, or sign in with the browser (--no-device)"
                .into(),
        )),
        Way::Browser => Ok(Chosen::Browser {
            open: no_browser.is_none(),
        }),
        Way::Choose => match no_browser {
            None => Ok(Chosen::Browser { open: true }),
            Some(reason) if has_device => {
                reporter.no_browser(reason, true);
                Ok(Chosen::Device)
            }
            Some(reason) => {
                reporter.no_browser(reason, false);
                Ok(Chosen::Browser { open: false })
            }
        },
    }
}

/// latchkey's HTTP client, through the proxy the environment names.
pub fn http_client() -> Result<HttpClient, Failure> {
    HttpClient::new(HttpOptions {
        proxy: Proxy::from_env().map_err(|e| {
            Failure::Config(format!(
                "proxy settings: {e}; fix or unset HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY"
            ))
        })?,
        ..HttpOptions::default()
    })
    .map_err(|e| {
        Failure::Config(format!(
            "TLS setup: {e}; check the system's root certificates"
        ))
    })
}

/// Reports the login's events until it ends or `deadline` passes (then it is cancelled).
/// Without a deadline, a device login waits until its code expires.
pub async fn follow<R: Runtime>(
    runtime: &R,
    login: &Login,
    deadline: Option<Instant>,
    reporter: &mut Reporter,
    requested_scope: &str,
    place: &Place<'_>,
) -> Result<(), FlowError> {
    let mut step = match login.url() {
        Some(_) => Step::Callback,
        None => Step::DeviceAuthorization,
    };
    let mut code_expires: Option<SystemTime> = None;
    loop {
        let tick = Instant::now() + TICK;
        let tick = deadline.map_or(tick, |deadline| tick.min(deadline));
        match login.next_event_by(runtime, tick).await {
            Ok(Some(event)) => {
                step = event.step().unwrap_or(step);
                match event {
                    LoginEvent::UserCode(authorization) => {
                        code_expires = Some(authorization.expires_at());
                        reporter.device_authorization(&authorization);
                    }
                    LoginEvent::Callback => reporter.callback(),
                    LoginEvent::Tokens(tokens) => reporter.token(&tokens, requested_scope),
                    LoginEvent::Stored => reporter.stored(place),
                    LoginEvent::Finished(result) => return result.map(drop),
                }
            }
            Ok(None) => return Err(FlowError::Cancelled),
            Err(Elapsed) if deadline.is_some_and(|deadline| Instant::now() >= deadline) => {
                login.cancel();
                return Err(FlowError::TimedOut(step));
            }
            // Ctrl-C: cancel properly, so a waiting browser gets the failure page and the
            // outcome is reported; the engine's Finished(Cancelled) ends the loop.
            Err(Elapsed) if crate::interrupted() => login.cancel(),
            Err(Elapsed) => match (step, code_expires) {
                (Step::Approval, Some(expires)) => {
                    let left = expires
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                        .as_secs();
                    reporter.tick(&format!(
                        "Waiting for you to approve; the code expires in {}:{:02}",
                        left / 60,
                        left % 60
                    ));
                }
                (Step::DeviceAuthorization, _) => reporter.tick("Asking the provider for a code…"),
                _ => reporter.tick("Waiting for you to sign in in the browser…"),
            },
        }
    }
}

/// The provider from the command line: its endpoints, discovered from its issuer, or a
/// preset; then the client's settings.
async fn provider<R: Runtime>(
    runtime: &R,
    transport: &Transport,
    args: &LoginArgs,
) -> Result<Provider, Failure> {
    let client_id = args.client_id.as_str();
    // The secret and the key first: a missing file is said before any request is made.
    let secret = args
        .common
        .secret
        .source()
        .map(|source| read_secret(&source))
        .transpose()?;
    let client_key = read_client_credentials(&args.common.secret)?;
    let mut provider = match &args.provider() {
        ProviderChoice::Endpoints {
            authorization_endpoint,
            token_endpoint,
            revocation_endpoint,
            jwks_uri,
        } => {
            let mut builder = Provider::builder(authorization_endpoint, token_endpoint, client_id);
            if let Some(endpoint) = &args.provider_args.device_authorization_endpoint {
                builder = builder.device_authorization_endpoint(endpoint);
            }
            if let Some(endpoint) = &args.provider_args.par_endpoint {
                builder = builder.pushed_authorization_request_endpoint(endpoint);
            }
            if let Some(endpoint) = revocation_endpoint {
                builder = builder.revocation_endpoint(endpoint);
            }
            if let Some(uri) = jwks_uri {
                builder = builder.jwks_uri(uri);
            }
            if let Some(issuer) = &args.provider_args.issuer {
                builder = builder.issuer(issuer);
            }
            builder
        }
        ProviderChoice::Discover => {
            let issuer = args.provider_args.issuer.as_deref().unwrap_or_default();
            let discovered = discover(runtime, transport, issuer, client_id)
                .await
                .map_err(|error| Failure::Failed {
                    kind: "discovery",
                    message: format!(
                        "{error}; check --issuer, or give --authorization-endpoint and \
                         --token-endpoint"
                    ),
                })?;
            let discovered = match &args.provider_args.device_authorization_endpoint {
                Some(endpoint) => discovered.device_authorization_endpoint(endpoint),
                None => discovered,
            };
            match &args.provider_args.par_endpoint {
                Some(endpoint) => discovered.pushed_authorization_request_endpoint(endpoint),
                None => discovered,
            }
        }
        ProviderChoice::Preset(preset) => preset_builder(preset, client_id),
    }
    .scopes(args.scopes.iter().cloned())
    .crypto(latchkey_io::crypto::ring())
    .verify_id_token(args.verify_id_token());
    for resource in &args.resources {
        provider = provider.resource(resource);
    }
    if let Some(alg) = args.dpop {
        provider = provider.dpop(alg.algorithm());
    }
    if args.par {
        provider = provider.push_authorization_requests(true);
    }
    for (key, value) in &args.params {
        provider = provider.param(key, value);
    }
    if let Some(secret) = secret {
        provider = provider.client_secret(secret);
    }
    if let Some(key) = client_key {
        provider = provider.client_key(key);
    }
    if let Some(audience) = args.assertion_audience {
        provider = provider.assertion_audience(audience.audience());
    }
    if let Some(method) = &args.auth_method {
        provider = provider.client_auth(match method {
            Ok(AuthMethod::Basic) => ClientAuth::SecretBasic,
            Ok(AuthMethod::Post) => ClientAuth::SecretPost,
            Ok(AuthMethod::PrivateKeyJwt) => ClientAuth::PrivateKeyJwt,
            Ok(AuthMethod::None) => ClientAuth::None,
            Err(other) => {
                return Err(Failure::Config(format!(
                    "--auth-method takes basic, post or none, not {other:?}"
                )));
            }
        });
    }
    let discovered = matches!(args.provider(), ProviderChoice::Discover);
    provider.build().map_err(|error| match error {
        latchkey::ConfigError::IdTokenVerification(_) if discovered => Failure::Config(format!(
            "provider: {error}, and the provider's metadata names none; leave out the openid \
             scope, or pass --no-verify-id-token"
        )),
        latchkey::ConfigError::IdTokenVerification(_) => Failure::Config(format!(
            "provider: {error}; give --issuer and --jwks-uri (or discover the provider with \
             --issuer alone), leave out the openid scope, or pass --no-verify-id-token"
        )),
        latchkey::ConfigError::MissingClientKey => Failure::Config(
            "--auth-method private_key_jwt needs --client-key PATH, the client's private key"
                .to_owned(),
        ),
        latchkey::ConfigError::MissingParEndpoint => Failure::Config(
            "--par needs the provider's pushed authorization request endpoint: discover it \
             with --issuer, or give --par-endpoint URL"
                .to_owned(),
        ),
        latchkey::ConfigError::AssertionNeedsIssuer => Failure::Config(
            "private_key_jwt signs its assertions for the issuer: give --issuer".to_owned(),
        ),
        error => Failure::Config(format!(
            "provider: {error}; check the provider options (`latchkey help login`)"
        )),
    })
}

fn preset_builder(preset: &Preset, client_id: &str) -> ProviderBuilder {
    match preset {
        Preset::Google => presets::google(client_id),
        Preset::GitHub => presets::github(client_id),
        Preset::Entra { tenant } => presets::entra(tenant, client_id),
        Preset::Okta { domain } => presets::okta(domain, client_id),
        Preset::Auth0 { domain } => presets::auth0(domain, client_id),
        Preset::Keycloak { base_url, realm } => presets::keycloak(base_url, realm, client_id),
        Preset::GitLab { base_url: None } => presets::gitlab(client_id),
        Preset::GitLab {
            base_url: Some(base_url),
        } => presets::gitlab_at(base_url, client_id),
    }
}

/// The engine's configuration from the command line.
fn config(provider: Provider, args: &LoginArgs, redirect_uri: &str) -> Result<Config, Failure> {
    let invalid = |what: &str, error: &dyn std::fmt::Display| {
        Failure::Config(format!(
            "{what}: {error}; check --redirect-uri, --then and --timeout (`latchkey help login`)"
        ))
    };
    let mut config = Config::builder(provider)
        .loopback_redirect_uri(redirect_uri)
        .flow_lifetime(args.timeout.unwrap_or(BROWSER_TIMEOUT));
    if let Some(then) = &args.then {
        config = config.on_success(Landing::Redirect(then.clone()));
    }
    config.build().map_err(|e| invalid("configuration", &e))
}

/// The private key of `private_key_jwt` and its certificate, when the command was given
/// them (`--client-key`, `--client-cert`). With a certificate, an RSA key signs PS256, as
/// Microsoft Entra's certificate credentials ask.
pub fn read_client_credentials(secret: &SecretArgs) -> Result<Option<PrivateKey>, Failure> {
    let Some(path) = &secret.client_key else {
        return Ok(None);
    };
    let key = read_client_key(path)?;
    let Some(certificate) = &secret.client_cert else {
        return Ok(Some(key));
    };
    let bytes = std::fs::read(certificate).map_err(|e| {
        Failure::Config(format!(
            "cannot read the client certificate from {}: {e}; check the path and that the \
             file is readable",
            certificate.display()
        ))
    })?;
    let certified = |error: latchkey::keys::KeyError| {
        Failure::Config(format!(
            "client certificate {}: {error}",
            certificate.display()
        ))
    };
    let key = key.with_certificate(&bytes).map_err(certified)?;
    let key = match key.key_type() {
        latchkey::keys::KeyType::Rsa { .. } => key
            .with_algorithm(latchkey::oidc::Algorithm::PS256)
            .map_err(certified)?,
        _ => key,
    };
    // The certificate must be the key's: checked now, before any request.
    latchkey::keys::Signer::new(key.clone(), latchkey_io::crypto::ring()).map_err(certified)?;
    Ok(Some(key))
}

/// The private key of `private_key_jwt`, read from `path` (PEM, JWK or DER) and checked
/// (S63): a weak, encrypted or public key is a configuration error naming the file.
pub fn read_client_key(path: &std::path::Path) -> Result<PrivateKey, Failure> {
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::Config(format!(
            "cannot read the client key from {}: {e}; check the path and that the file is \
             readable",
            path.display()
        ))
    })?;
    PrivateKey::parse(&bytes)
        .map_err(|e| Failure::Config(format!("client key {}: {e}", path.display())))
}

pub fn read_secret(source: &SecretSource) -> Result<SecretString, Failure> {
    let secret = match source {
        SecretSource::Env(var) => std::env::var(var).map_err(|_| {
            Failure::Config(format!(
                "environment variable {var} holds no client secret; export it, or pass \
                 --client-secret-file PATH"
            ))
        })?,
        SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
            Failure::Config(format!(
                "cannot read the client secret from {}: {e}; check the path and that the file \
                 is readable",
                path.display()
            ))
        })?,
    };
    // A trailing newline from `echo secret > file` is not part of the secret.
    Ok(SecretString::from(
        secret.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}
