//! Command-line parsing, declared with clap: every option once, the help and the shell
//! completions generated from the same declarations. Secrets never come from the command
//! line itself: only the name of an environment variable or a file that holds them.
//!
//! A usage mistake is reported by [`usage_error`]: the reason and the usage on stderr,
//! nothing on stdout (not even with `--json`), exit 2.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, ArgGroup, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use latchkey_devidp::Forgery;

/// The parsed command line: the command, and how much to log (`-v`, `-vv`).
#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Log in with OAuth 2.0: authorization code + PKCE through a loopback redirect, \
             or a code entered on another device (device grant) where no browser can be \
             opened here",
    after_help = EXIT_CODES,
    // A repeated option takes its last value, as it always has.
    args_override_self = true
)]
pub struct Invocation {
    #[command(flatten)]
    verbosity: Verbosity,
    /// Without one, the help.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Invocation {
    /// How much to log: every `-v`, before the command's name and after it.
    pub fn verbose(&self) -> u8 {
        let command = match &self.command {
            Some(Command::Login(args)) => args.common.file.verbosity.verbose,
            Some(Command::Refresh(args) | Command::Logout(args)) => {
                args.common.file.verbosity.verbose
            }
            Some(Command::Token(args)) => args.common.file.verbosity.verbose,
            Some(Command::Profiles(args)) => args.file.verbosity.verbose,
            Some(Command::Proof(args)) => args.file.verbosity.verbose,
            Some(Command::DevIdp(args)) => args.verbosity.verbose,
            Some(Command::Demo { verbosity, .. }) => verbosity.verbose,
            Some(Command::Completions { .. }) | None => 0,
        };
        self.verbosity.verbose.saturating_add(command)
    }
}

/// `-v`, `-vv`: declared once, taken before the command's name and after it. (Not a
/// `global` option: clap would keep the count of one side only.)
#[derive(Debug, Args)]
pub struct Verbosity {
    /// Log each step with its duration to stderr; -vv also the engine's own events
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,
}

const EXIT_CODES: &str = "\
EXIT CODES: 0 success, 1 the operation failed (login required, provider refused, network,
  a revocation that failed although the tokens were deleted), 2 usage or configuration error";

/// The parsed command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in and store the tokens (and the provider's settings, never the secret)
    #[command(after_help = EXIT_CODES)]
    Login(Box<LoginArgs>),
    /// Refresh the stored tokens; the provider's settings come from the token file
    #[command(after_help = EXIT_CODES)]
    Refresh(SessionArgs),
    /// Revoke the stored tokens at the provider and delete them
    #[command(after_help = EXIT_CODES)]
    Logout(SessionArgs),
    /// Show the stored tokens (the access token itself only with --reveal)
    #[command(after_help = EXIT_CODES)]
    Token(TokenArgs),
    /// List the stored logins: provider, who signed in, expiry, and where the tokens are
    #[command(after_help = EXIT_CODES)]
    Profiles(ProfilesArgs),
    /// Print a DPoP proof for a request presenting the stored (DPoP-bound) access token
    #[command(after_help = EXIT_CODES)]
    Proof(ProofArgs),
    /// Print the shell completion script for SHELL to stdout
    Completions {
        /// The shell whose completion script to print
        shell: Shell,
    },
    /// Serve a development identity provider on 127.0.0.1 until interrupted
    DevIdp(DevIdpArgs),
    /// Watch a whole login against the development identity provider
    Demo {
        #[command(flatten)]
        driver: Driver,
        #[command(flatten)]
        verbosity: Verbosity,
    },
}

/// Which driver runs the command: `--runtime`, for the tests, hidden from the help.
#[derive(Debug, Args)]
pub struct Driver {
    /// The async runtime that drives the command
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Smol, hide = true)]
    pub runtime: RuntimeChoice,
}

/// Which driver runs the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeChoice {
    Smol,
    Tokio,
}

/// The token file and how to report: every command that reads it.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// Token file (default: tokens.json in the user's config directory for latchkey); it
    /// also records the provider's settings, never the secret
    #[arg(
        long,
        value_name = "PATH",
        default_value_os_t = default_store(),
        hide_default_value = true
    )]
    pub store: PathBuf,
    /// One JSON object per line on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

/// The options of every command that works on one login.
#[derive(Debug, Args)]
pub struct Common {
    #[command(flatten)]
    pub file: FileArgs,
    /// Which login: each profile keeps its own tokens in the token file
    #[arg(
        long,
        value_name = "NAME",
        default_value = DEFAULT_PROFILE,
        value_parser = profile_name
    )]
    pub profile: String,
    #[command(flatten)]
    pub secret: SecretArgs,
    #[command(flatten)]
    pub driver: Driver,
}

/// Where the browser comes back when no `--redirect-uri` says.
pub const DEFAULT_REDIRECT_URI: &str = "http://127.0.0.1:0/callback";

/// The profile of a command given no `--profile`.
pub const DEFAULT_PROFILE: &str = latchkey_io::store::DEFAULT_KEY;

/// A profile's name: 1 to 64 letters, digits, `-` and `_`, so that it names its lock files
/// as it is.
fn profile_name(text: &str) -> Result<String, String> {
    let valid = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    match valid {
        true => Ok(text.to_owned()),
        false => Err("takes 1 to 64 letters, digits, '-' and '_'".to_owned()),
    }
}

/// The client secret, for a client that has one: by the name of what holds it.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// Read the client secret from environment variable VAR
    #[arg(long, value_name = "VAR", conflicts_with = "client_secret_file")]
    client_secret_env: Option<String>,
    /// Read the client secret from a file
    #[arg(long, value_name = "PATH")]
    client_secret_file: Option<PathBuf>,
    /// Refused: a secret on the command line is visible to every local user.
    #[arg(long, value_name = "SECRET", hide = true, value_parser = refuse_secret)]
    client_secret: Option<Refused>,
    /// The client's private key for private_key_jwt (PEM, JWK or DER; RSA 2048+, P-256,
    /// P-384 or Ed25519): no shared secret
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with_all = ["client_secret_env", "client_secret_file"]
    )]
    pub client_key: Option<PathBuf>,
    /// The X.509 certificate of --client-key (PEM or DER), for providers that know the
    /// client by it (Microsoft Entra's certificate credentials): assertions name it by its
    /// SHA-256 thumbprint (x5t#S256), and an RSA key signs PS256
    #[arg(long, value_name = "PATH", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
}

impl SecretArgs {
    /// Where the client secret comes from, if anywhere.
    pub fn source(&self) -> Option<SecretSource> {
        match (&self.client_secret_env, &self.client_secret_file) {
            (Some(var), _) => Some(SecretSource::Env(var.clone())),
            (None, Some(path)) => Some(SecretSource::File(path.clone())),
            (None, None) => None,
        }
    }
}

/// What `--client-secret` never yields.
#[derive(Debug, Clone)]
pub enum Refused {}

/// Why `--client-secret` is refused; its message never holds the value.
#[derive(Debug)]
struct SecretOnCommandLine;

impl std::fmt::Display for SecretOnCommandLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "a secret on the command line is visible to every local user: \
             use --client-secret-env VAR or --client-secret-file PATH",
        )
    }
}

impl std::error::Error for SecretOnCommandLine {}

fn refuse_secret(_: &str) -> Result<Refused, SecretOnCommandLine> {
    Err(SecretOnCommandLine)
}

/// Where the client secret comes from.
#[derive(Debug)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// Where the provider's description comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum ProviderChoice {
    /// Endpoints given on the command line.
    Endpoints {
        authorization_endpoint: String,
        token_endpoint: String,
        revocation_endpoint: Option<String>,
        /// Where the keys that sign ID tokens are (`--jwks-uri`).
        jwks_uri: Option<String>,
    },
    /// Discovery from `--issuer`.
    Discover,
    /// A well-known provider.
    Preset(Preset),
}

/// The providers `--provider` knows, with what each needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Preset {
    Google,
    GitHub,
    Entra { tenant: String },
    Okta { domain: String },
    Auth0 { domain: String },
    Keycloak { base_url: String, realm: String },
    GitLab { base_url: Option<String> },
}

/// The names `--provider` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetName {
    Google,
    #[value(name = "github")]
    GitHub,
    Entra,
    Okta,
    Auth0,
    Keycloak,
    #[value(name = "gitlab")]
    GitLab,
}

/// Where the provider is described: one of its endpoints, its issuer (discovery), or a
/// well-known provider.
#[derive(Debug, Args)]
#[group(skip)]
#[command(group(
    ArgGroup::new("provider_named")
        .args(["authorization_endpoint", "token_endpoint", "issuer", "provider"])
        .required(true)
        .multiple(true)
))]
pub struct ProviderArgs {
    /// The provider's authorization endpoint (with --token-endpoint)
    #[arg(long, value_name = "URL", requires = "token_endpoint")]
    authorization_endpoint: Option<String>,
    /// The provider's token endpoint (with --authorization-endpoint)
    #[arg(long, value_name = "URL", requires = "authorization_endpoint")]
    token_endpoint: Option<String>,
    /// The provider's revocation endpoint (with the endpoints), used by logout
    #[arg(long, value_name = "URL", requires = "authorization_endpoint")]
    revocation_endpoint: Option<String>,
    /// Where the provider's ID token signing keys are (with the endpoints)
    #[arg(long, value_name = "URL", requires = "authorization_endpoint")]
    jwks_uri: Option<String>,
    /// Alone: discover the endpoints from the issuer's metadata; with the endpoints: the
    /// provider's issuer, which the callback's `iss` must match
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// The provider's device authorization endpoint, with the endpoints (or with --issuer,
    /// when its metadata lacks one)
    #[arg(long, value_name = "URL")]
    pub device_authorization_endpoint: Option<String>,
    /// The provider's pushed authorization request endpoint (RFC 9126), with the endpoints
    /// (or with --issuer, when its metadata lacks one)
    #[arg(long, value_name = "URL")]
    pub par_endpoint: Option<String>,
    /// A well-known provider, which sets the endpoints, the issuer and the key set itself
    #[arg(
        long,
        value_name = "NAME",
        value_enum,
        conflicts_with_all = [
            "authorization_endpoint", "token_endpoint", "revocation_endpoint", "jwks_uri",
            "issuer", "device_authorization_endpoint", "par_endpoint",
        ]
    )]
    provider: Option<PresetName>,
    /// The Entra tenant (--provider entra)
    #[arg(
        long,
        value_name = "T",
        requires = "provider",
        conflicts_with_all = PROVIDER_OPTIONS,
        required_if_eq("provider", "entra")
    )]
    tenant: Option<String>,
    /// The Okta or Auth0 domain (--provider okta, auth0)
    #[arg(
        long,
        value_name = "D",
        requires = "provider",
        conflicts_with_all = PROVIDER_OPTIONS,
        required_if_eq_any([("provider", "okta"), ("provider", "auth0")]),
    )]
    domain: Option<String>,
    /// The Keycloak base URL, or a self-managed GitLab's (--provider keycloak, gitlab)
    #[arg(
        long,
        value_name = "URL",
        requires = "provider",
        conflicts_with_all = PROVIDER_OPTIONS,
        required_if_eq("provider", "keycloak")
    )]
    base_url: Option<String>,
    /// The Keycloak realm (--provider keycloak)
    #[arg(
        long,
        value_name = "R",
        requires = "provider",
        conflicts_with_all = PROVIDER_OPTIONS,
        required_if_eq("provider", "keycloak")
    )]
    realm: Option<String>,
}

/// What a preset's settings (`--tenant` and the like) contradict. Declared as conflicts
/// rather than left to `requires = "provider"`: clap drops a requirement that conflicts
/// with what is given, and `--provider` conflicts with all of these.
const PROVIDER_OPTIONS: [&str; 3] = ["authorization_endpoint", "token_endpoint", "issuer"];

impl ProviderArgs {
    /// The provider the options describe. The declared requirements leave one way to read
    /// them; what only the preset's name decides (`--tenant` for entra alone, say) is
    /// checked here.
    fn choice(&self) -> Result<ProviderChoice, String> {
        if let Some(name) = self.provider {
            return self.preset(name).map(ProviderChoice::Preset);
        }
        Ok(match (&self.authorization_endpoint, &self.token_endpoint) {
            (Some(authorization_endpoint), Some(token_endpoint)) => ProviderChoice::Endpoints {
                authorization_endpoint: authorization_endpoint.clone(),
                token_endpoint: token_endpoint.clone(),
                revocation_endpoint: self.revocation_endpoint.clone(),
                jwks_uri: self.jwks_uri.clone(),
            },
            // `requires` pairs the endpoints, and the group asks for one of these.
            _ => ProviderChoice::Discover,
        })
    }

    /// The preset called `name`, with the settings it needs; any other setting is refused.
    fn preset(&self, name: PresetName) -> Result<Preset, String> {
        let required = |value: &Option<String>| value.clone().unwrap_or_default();
        let (preset, takes): (Preset, &[&str]) = match name {
            PresetName::Google => (Preset::Google, &[]),
            PresetName::GitHub => (Preset::GitHub, &[]),
            PresetName::Entra => (
                Preset::Entra {
                    tenant: required(&self.tenant),
                },
                &["--tenant"],
            ),
            PresetName::Okta => (
                Preset::Okta {
                    domain: required(&self.domain),
                },
                &["--domain"],
            ),
            PresetName::Auth0 => (
                Preset::Auth0 {
                    domain: required(&self.domain),
                },
                &["--domain"],
            ),
            PresetName::Keycloak => (
                Preset::Keycloak {
                    base_url: required(&self.base_url),
                    realm: required(&self.realm),
                },
                &["--base-url", "--realm"],
            ),
            PresetName::GitLab => (
                Preset::GitLab {
                    base_url: self.base_url.clone(),
                },
                &["--base-url"],
            ),
        };
        for (option, given) in [
            ("--tenant", self.tenant.is_some()),
            ("--domain", self.domain.is_some()),
            ("--base-url", self.base_url.is_some()),
            ("--realm", self.realm.is_some()),
        ] {
            if given && !takes.contains(&option) {
                let name = name.to_possible_value().map(|v| v.get_name().to_owned());
                return Err(format!(
                    "--provider {} takes no {option}",
                    name.unwrap_or_default()
                ));
            }
        }
        Ok(preset)
    }
}

/// `latchkey profiles`.
#[derive(Debug, Args)]
pub struct ProfilesArgs {
    #[command(flatten)]
    pub file: FileArgs,
}

/// `latchkey login`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Provider")]
pub struct LoginArgs {
    #[command(flatten)]
    pub provider_args: ProviderArgs,
    /// The client's id at the provider
    #[arg(long, value_name = "ID", help_heading = "Login options")]
    pub client_id: String,
    #[command(flatten, next_help_heading = "Login options")]
    pub common: Common,
    /// Client authentication (default: basic with a secret, private_key_jwt with
    /// --client-key, else none)
    #[arg(long, value_name = "METHOD", value_parser = AuthMethodParser)]
    pub auth_method: Option<Result<AuthMethod, String>>,
    /// What a private_key_jwt assertion names as its audience: the issuer (the default),
    /// or the URL of the endpoint it is sent to (Okta's and Entra's way; their presets
    /// choose it themselves)
    #[arg(long, value_name = "AUD", value_enum, requires = "client_key")]
    pub assertion_audience: Option<AudienceName>,
    /// Request scope S (repeatable)
    #[arg(long = "scope", value_name = "S")]
    pub scopes: Vec<String>,
    /// Ask for tokens for the API at URI (RFC 8707 resource indicator; repeatable); kept
    /// with the profile, so that refreshes ask for the same
    #[arg(long = "resource", value_name = "URI")]
    pub resources: Vec<String>,
    /// Extra authorization parameter (repeatable)
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = key_value)]
    pub params: Vec<(String, String)>,
    /// Where the browser comes back (default: http://127.0.0.1:0/callback, 0 meaning any
    /// free port); repeatable: the first whose port can be bound is used
    #[arg(long = "redirect-uri", value_name = "URI", action = ArgAction::Append)]
    redirect_uris: Vec<String>,
    /// Listen on ADDR instead of the redirect URI's host and port (one --redirect-uri)
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// Keep the tokens in the OS keychain (Keychain, Credential Manager, Secret Service);
    /// the token file keeps the provider's settings. Fails rather than write them elsewhere
    #[arg(long)]
    pub keyring: bool,
    /// Send the browser here after success (e.g. docker-desktop://dashboard/open)
    #[arg(long, value_name = "URL")]
    pub then: Option<String>,
    /// Open no browser here: a code (device grant) when the provider has one, else the URL
    /// to open elsewhere
    #[arg(long)]
    pub no_browser: bool,
    /// Sign in on another device with a code (RFC 8628 device grant); chosen by itself on
    /// SSH sessions and Linux without a display
    #[arg(long, conflicts_with = "no_device")]
    device: bool,
    /// Never the device grant: the browser, or the URL printed and the address the browser
    /// ended on pasted back
    #[arg(long)]
    no_device: bool,
    /// Push the authorization request to the provider first (PAR, RFC 9126): the browser's
    /// URL carries only a reference to it. Chosen by itself when the provider's metadata
    /// requires it
    #[arg(long)]
    pub par: bool,
    /// Bind the tokens to a key pair made for this login (DPoP, RFC 9449): a copied token
    /// is of no use without the key, which is stored with the tokens. A P-256 key (ES256)
    /// unless --dpop=ES384 or --dpop=EdDSA asks for a P-384 or an Ed25519 one
    #[arg(
        long,
        value_name = "ALG",
        value_enum,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "ES256"
    )]
    pub dpop: Option<DpopAlg>,
    /// Do NOT verify the ID token (only for a provider whose ID tokens cannot be verified);
    /// nobody's identity is recorded
    #[arg(long)]
    no_verify_id_token: bool,
    /// Upper bound on the whole login (default 300; a device login waits until its code
    /// expires)
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub timeout: Option<Duration>,
}

impl LoginArgs {
    /// Where the provider's description comes from.
    pub fn provider(&self) -> ProviderChoice {
        // `parse` has checked that the options name one.
        self.provider_args
            .choice()
            .unwrap_or(ProviderChoice::Discover)
    }

    /// How the user signs in: `--device`, `--no-device`, or chosen by the command.
    pub fn way(&self) -> Way {
        match (self.device, self.no_device) {
            (true, _) => Way::Device,
            (false, true) => Way::Browser,
            (false, false) => Way::Choose,
        }
    }

    /// Whether the ID token is verified (unless `--no-verify-id-token`).
    /// The redirect URIs to try, in order.
    pub fn redirect_uris(&self) -> Vec<&str> {
        match self.redirect_uris.as_slice() {
            [] => vec![DEFAULT_REDIRECT_URI],
            given => given.iter().map(String::as_str).collect(),
        }
    }

    pub fn verify_id_token(&self) -> bool {
        !self.no_verify_id_token
    }
}

/// `login --assertion-audience`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AudienceName {
    /// The issuer identifier
    Issuer,
    /// The URL of the endpoint the assertion is sent to
    Endpoint,
}

impl AudienceName {
    /// The library's value.
    pub fn audience(self) -> latchkey::AssertionAudience {
        match self {
            AudienceName::Issuer => latchkey::AssertionAudience::Issuer,
            AudienceName::Endpoint => latchkey::AssertionAudience::Endpoint,
        }
    }
}

/// The key pair `login --dpop` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DpopAlg {
    /// ECDSA on P-256 (the one every DPoP provider accepts)
    #[value(name = "ES256")]
    ES256,
    /// ECDSA on P-384
    #[value(name = "ES384")]
    ES384,
    /// Ed25519
    #[value(name = "EdDSA")]
    EdDSA,
}

impl DpopAlg {
    /// The algorithm the proofs are signed with.
    pub fn algorithm(self) -> latchkey::oidc::Algorithm {
        match self {
            DpopAlg::ES256 => latchkey::oidc::Algorithm::ES256,
            DpopAlg::ES384 => latchkey::oidc::Algorithm::ES384,
            DpopAlg::EdDSA => latchkey::oidc::Algorithm::EdDSA,
        }
    }
}

/// How a client authenticates at the token endpoint (`--auth-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMethod {
    /// HTTP Basic (client_secret_basic)
    Basic,
    /// In the form (client_secret_post)
    Post,
    /// A client assertion signed with --client-key (private_key_jwt)
    #[value(name = "private_key_jwt", alias = "private-key-jwt")]
    PrivateKeyJwt,
    /// A public client (none)
    None,
}

/// `--auth-method`: its values are listed in the help and the completions, yet one that is
/// none of them is kept (`Err`) and refused when the login starts, as a configuration
/// error (kind `config`, an event with `--json`), which is what it has always been.
#[derive(Debug, Clone)]
struct AuthMethodParser;

impl TypedValueParser for AuthMethodParser {
    type Value = Result<AuthMethod, String>;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let text = value.to_string_lossy();
        Ok(AuthMethod::from_str(&text, false).map_err(|_| text.into_owned()))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            AuthMethod::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}

/// How long a browser login waits without `--timeout`.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);

/// How `latchkey login` lets the user sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Chosen by the command: the browser where one can be opened, else the device grant
    /// when the provider has one, else the URL printed and the address pasted back.
    Choose,
    /// `--device`: the device authorization grant.
    Device,
    /// `--no-device`: the loopback listener, never the device grant.
    Browser,
}

/// `latchkey refresh` and `latchkey logout`: the token file and, for a confidential
/// client, its secret; everything else comes from the token file.
#[derive(Debug, Args)]
pub struct SessionArgs {
    #[command(flatten)]
    pub common: Common,
}

/// `latchkey proof`.
#[derive(Debug, Args)]
pub struct ProofArgs {
    #[command(flatten)]
    pub file: FileArgs,
    /// Which login's key and access token
    #[arg(
        long,
        value_name = "NAME",
        default_value = DEFAULT_PROFILE,
        value_parser = profile_name
    )]
    pub profile: String,
    /// The request's method (GET, POST, …)
    #[arg(long, value_name = "M")]
    pub method: String,
    /// The request's URL (its query and fragment are left out of the proof)
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The nonce the server asked for in its DPoP-Nonce header
    #[arg(long, value_name = "NONCE")]
    pub nonce: Option<String>,
}

/// `latchkey token`.
#[derive(Debug, Args)]
#[command(
    mut_arg("client_secret_env", |arg| arg.requires("fresh")),
    mut_arg("client_secret_file", |arg| arg.requires("fresh")),
    mut_arg("client_key", |arg| arg.requires("fresh"))
)]
pub struct TokenArgs {
    #[command(flatten)]
    pub common: Common,
    /// Print the access token itself: alone on stdout (the summary goes to stderr), or in
    /// the --json object
    #[arg(long)]
    pub reveal: bool,
    /// Refresh first when the access token expires within --margin
    #[arg(long)]
    fresh: bool,
    /// With --fresh: how close to its expiry a token is refreshed (default 60)
    #[arg(long, value_name = "SECS", value_parser = seconds, requires = "fresh")]
    margin: Option<Duration>,
}

impl TokenArgs {
    /// With `--fresh`: refresh first when the access token expires within this margin.
    pub fn fresh(&self) -> Option<Duration> {
        self.fresh.then(|| {
            self.margin
                .unwrap_or(latchkey::SessionOptions::default().margin)
        })
    }
}

/// How the development IdP's client authenticates (`dev-idp --auth-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DevIdpAuth {
    /// HTTP Basic (client_secret_basic)
    Basic,
    /// In the form (client_secret_post)
    Post,
    /// A client assertion signed with the key of --client-key (private_key_jwt)
    #[value(name = "private_key_jwt", alias = "private-key-jwt")]
    PrivateKeyJwt,
    /// A public client (none)
    None,
}

/// `latchkey dev-idp`.
#[derive(Debug, Args)]
pub struct DevIdpArgs {
    #[command(flatten)]
    pub verbosity: Verbosity,
    /// The port to serve on
    #[arg(long, value_name = "P", default_value_t = 9000)]
    pub port: u16,
    /// The one client's id
    #[arg(long, value_name = "ID", default_value = "latchkey-dev")]
    pub client_id: String,
    /// A development IdP's throwaway secret; real secrets never go on a command line
    #[arg(long, value_name = "S")]
    pub secret: Option<String>,
    /// How the client authenticates
    #[arg(long, value_name = "METHOD", value_enum, default_value_t = DevIdpAuth::None)]
    pub auth_method: DevIdpAuth,
    /// The client's key for private_key_jwt: the same file the client signs with (PEM,
    /// JWK or DER); only its public half is registered
    #[arg(long, value_name = "PATH")]
    pub client_key: Option<PathBuf>,
    /// Make DPoP proofs carry the server's nonce (answering use_dpop_nonce without it)
    #[arg(long)]
    pub dpop_nonce: bool,
    /// Take pushed authorization requests only (RFC 9126)
    #[arg(long)]
    pub require_par: bool,
    /// A redirect URI the client may use (repeatable; default
    /// http://127.0.0.1:8080/callback)
    #[arg(long = "redirect-uri", value_name = "URI")]
    pub redirect_uris: Vec<String>,
    /// Behave like a provider that bends the standard
    #[arg(long, value_enum)]
    pub quirk: Option<QuirkName>,
    /// How ID tokens are signed
    #[arg(long, value_name = "ALG", value_enum, default_value_t = IdTokenAlgName::RS256)]
    pub id_token_alg: IdTokenAlgName,
    /// Forge this in every ID token (for testing clients)
    #[arg(long, value_name = "WHAT", value_parser = forgery())]
    pub forge: Option<Forgery>,
}

/// The quirks `latchkey dev-idp --quirk` imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuirkName {
    /// GitHub's OAuth apps: form-encoded token responses, errors with status 200
    #[value(name = "github")]
    GitHub,
    /// GitHub apps: expiring tokens in form-encoded responses
    #[value(name = "github-app")]
    GitHubApp,
    /// Microsoft Entra: expires_in as a string
    Entra,
    /// No token_type in the token response
    NoTokenType,
}

/// The algorithms `latchkey dev-idp --id-token-alg` signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdTokenAlgName {
    #[value(name = "RS256")]
    RS256,
    #[value(name = "ES256")]
    ES256,
}

/// `--forge`: the names the development IdP knows.
fn forgery() -> impl TypedValueParser<Value = Forgery> {
    PossibleValuesParser::new(Forgery::ALL.map(Forgery::name))
        .try_map(|name| Forgery::from_name(&name).ok_or("unknown forgery"))
}

fn seconds(text: &str) -> Result<Duration, String> {
    text.parse()
        .map(Duration::from_secs)
        .map_err(|_| "takes a whole number of seconds".to_owned())
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| "takes KEY=VALUE".to_owned())
}

/// What the command line asks for, or a usage error for [`usage_error`] (which `--help`
/// and `--version` also are: [`clap::Error::print`] shows them on stdout, exit 0).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, clap::Error> {
    let args: Vec<OsString> = args.into_iter().collect();
    let invocation = Invocation::try_parse_from(&args).map_err(|error| with_usage(error, &args))?;
    if let Some(Command::Login(login)) = &invocation.command {
        let conflict = |message| {
            with_usage(
                clap::Error::raw(ErrorKind::ArgumentConflict, message),
                &args,
            )
        };
        login.provider_args.choice().map_err(conflict)?;
        if login.bind.is_some() && login.redirect_uris.len() > 1 {
            return Err(conflict(
                "--bind listens on one address: give one --redirect-uri with it".to_owned(),
            ));
        }
    }
    Ok(invocation)
}

/// `error` with the usage of the command the arguments name, where clap gave it none (a
/// value refused by its parser, a check of ours).
fn with_usage(mut error: clap::Error, args: &[OsString]) -> clap::Error {
    if error.get(ContextKind::Usage).is_some() {
        return error;
    }
    let mut command = Invocation::command();
    command.build();
    // Only `-v` comes before the command's name.
    let name = args
        .iter()
        .skip(1)
        .filter_map(|arg| arg.to_str())
        .find(|arg| !arg.starts_with('-'));
    let usage = match name.and_then(|name| command.find_subcommand_mut(name)) {
        Some(sub) => sub.render_usage(),
        None => command.render_usage(),
    };
    error.insert(ContextKind::Usage, ContextValue::StyledStr(usage));
    error
}

/// The shell completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    let mut command = without_hidden(&Invocation::command());
    clap_complete::generate(shell, &mut command, "latchkey", &mut script);
    script
}

/// `command` without its hidden options: clap_complete would offer them too, and the
/// completions must suggest neither `--runtime` nor the refused `--client-secret`.
fn without_hidden(command: &clap::Command) -> clap::Command {
    let visible = clap::Command::new(command.get_name().to_owned())
        .args(
            command
                .get_arguments()
                .filter(|arg| !arg.is_hide_set())
                .cloned(),
        )
        .subcommands(command.get_subcommands().map(without_hidden));
    match command.get_about() {
        Some(about) => visible.about(about.clone()),
        None => visible,
    }
}

/// A usage mistake as the command reports it on stderr: `latchkey: ` and the reason, then
/// the usage of the command it was made in and where to read more.
pub fn usage_error(error: &clap::Error) -> String {
    let mut text = format!("latchkey: {}\n", reason(error));
    if let Some(ContextValue::StyledStr(usage)) = error.get(ContextKind::Usage) {
        let usage = usage.to_string();
        let usage = usage.trim_start_matches("Usage:").trim();
        text.push_str(&format!("\nUSAGE: {usage}\n"));
        // "latchkey token --fresh --margin <SECS>" → "token"
        let words: Vec<&str> = usage
            .split_whitespace()
            .skip(1)
            .take_while(|word| !word.starts_with(['-', '<', '[']))
            .collect();
        let help = match words.as_slice() {
            [] => "latchkey --help".to_owned(),
            sub => format!("latchkey help {}", sub.join(" ")),
        };
        text.push_str(&format!("\n'{help}' lists every option.\n"));
    }
    text
}

/// Why `error` is a usage mistake, in one sentence.
fn reason(error: &clap::Error) -> String {
    let string = |kind| match error.get(kind) {
        Some(ContextValue::String(text)) => Some(text.as_str()),
        _ => None,
    };
    // "--runtime <RUNTIME>" → "--runtime"
    let option = |kind| string(kind).map(|arg| arg.split(' ').next().unwrap_or(arg));
    match error.kind() {
        ErrorKind::InvalidSubcommand => {
            let mut text = format!(
                "unknown command {:?}: expected {}",
                string(ContextKind::InvalidSubcommand).unwrap_or_default(),
                or_list(
                    &Invocation::command()
                        .get_subcommands()
                        .map(|sub| sub.get_name().to_owned())
                        .collect::<Vec<_>>()
                )
            );
            if let Some(ContextValue::Strings(suggested)) =
                error.get(ContextKind::SuggestedSubcommand)
            {
                text.push_str(&format!(" (did you mean {}?)", or_list(suggested)));
            }
            text
        }
        ErrorKind::InvalidValue => match error.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) => format!(
                "{} takes {}, not {:?}",
                option(ContextKind::InvalidArg).unwrap_or("the option"),
                or_list(valid),
                string(ContextKind::InvalidValue).unwrap_or_default()
            ),
            _ => first_paragraph(error),
        },
        ErrorKind::ArgumentConflict => match (
            option(ContextKind::InvalidArg),
            error.get(ContextKind::PriorArg),
        ) {
            (Some(arg), Some(ContextValue::String(prior))) => format!(
                "{arg} and {} contradict each other: give one of them",
                prior.split(' ').next().unwrap_or(prior)
            ),
            (Some(arg), Some(ContextValue::Strings(prior))) => format!(
                "{arg} contradicts {}: give one of them",
                or_list(
                    &prior
                        .iter()
                        .map(|p| p.split(' ').next().unwrap_or(p).to_owned())
                        .collect::<Vec<_>>()
                )
            ),
            _ => first_paragraph(error),
        },
        ErrorKind::ValueValidation => {
            let cause = std::error::Error::source(error).map(ToString::to_string);
            let secret = std::error::Error::source(error)
                .is_some_and(|cause| cause.is::<SecretOnCommandLine>());
            match (secret, cause) {
                // Never the value: it is the secret.
                (true, Some(cause)) => cause,
                (false, Some(cause)) => format!(
                    "{}: {cause}, not {:?}",
                    option(ContextKind::InvalidArg).unwrap_or("the option"),
                    string(ContextKind::InvalidValue).unwrap_or_default()
                ),
                (_, None) => first_paragraph(error),
            }
        }
        _ => first_paragraph(error),
    }
}

/// clap's own wording of `error`, up to its first blank line, on one line.
fn first_paragraph(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let paragraph = rendered.split("\n\n").next().unwrap_or_default();
    let paragraph = paragraph.trim_start_matches("error:").trim();
    paragraph.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `a, b or c`.
fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// `tokens.json` in the user's configuration directory for latchkey.
pub fn default_store() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let base = if cfg!(windows) {
        var("APPDATA").map(PathBuf::from)
    } else if cfg!(target_os = "macos") {
        var("HOME").map(|home| PathBuf::from(home).join("Library/Application Support"))
    } else {
        var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".config")))
    };
    base.unwrap_or_else(|| PathBuf::from("."))
        .join("latchkey")
        .join("tokens.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_invocation(line: &str) -> Result<Invocation, clap::Error> {
        parse(
            std::iter::once("latchkey")
                .chain(line.split_whitespace())
                .map(OsString::from),
        )
    }

    /// The command, or what the user is told.
    fn parse_line(line: &str) -> Result<Command, String> {
        parse_invocation(line)
            .map(|invocation| invocation.command.expect("a command"))
            .map_err(|error| usage_error(&error))
    }

    #[test]
    fn the_declarations_are_consistent() {
        Invocation::command().debug_assert();
    }

    #[test]
    fn the_completions_offer_no_hidden_option() {
        let script = String::from_utf8(completions(Shell::Bash)).expect("UTF-8");
        assert!(script.contains("--client-secret-env"), "{script}");
        assert!(!script.contains("--runtime"), "{script}");
        assert!(!script.contains("--client-secret "), "{script}");
    }

    #[test]
    fn help_after_a_command_is_that_commands_help_and_exits_0() {
        for line in [
            "--help",
            "login --help",
            "login --issuer https://idp.example -h",
            "dev-idp --help",
            "token --json --help",
            "help login",
            "--version",
        ] {
            let error = parse_invocation(line).expect_err(line);
            assert_eq!(error.exit_code(), 0, "{line}");
        }
    }

    fn provider_of(line: &str) -> Result<ProviderChoice, String> {
        match parse_line(line)? {
            Command::Login(args) => Ok(args.provider()),
            other => panic!("not a login: {other:?}"),
        }
    }

    #[test]
    fn the_provider_comes_from_endpoints_discovery_or_a_preset() {
        assert_eq!(
            provider_of(
                "login --client-id c --authorization-endpoint A --token-endpoint T \
                 --revocation-endpoint R --issuer I --jwks-uri J"
            ),
            Ok(ProviderChoice::Endpoints {
                authorization_endpoint: "A".into(),
                token_endpoint: "T".into(),
                revocation_endpoint: Some("R".into()),
                jwks_uri: Some("J".into()),
            })
        );
        assert_eq!(
            provider_of("login --client-id c --issuer https://idp.example"),
            Ok(ProviderChoice::Discover)
        );
        assert_eq!(
            provider_of("login --client-id c --provider keycloak --base-url B --realm R"),
            Ok(ProviderChoice::Preset(Preset::Keycloak {
                base_url: "B".into(),
                realm: "R".into()
            }))
        );
        assert_eq!(
            provider_of("login --client-id c --provider gitlab"),
            Ok(ProviderChoice::Preset(Preset::GitLab { base_url: None }))
        );
        assert_eq!(
            provider_of("login --client-id c --provider entra --tenant organizations"),
            Ok(ProviderChoice::Preset(Preset::Entra {
                tenant: "organizations".into()
            }))
        );
    }

    #[test]
    fn contradictory_or_incomplete_provider_options_are_refused() {
        for (line, says) in [
            ("login --client-id c", "--provider <NAME>"),
            ("login --client-id c --provider okta", "--domain"),
            (
                "login --client-id c --provider keycloak --base-url B",
                "--realm",
            ),
            (
                "login --client-id c --provider github --tenant t",
                "takes no --tenant",
            ),
            ("login --client-id c --provider nowhere", "takes google"),
            (
                "login --client-id c --provider google --token-endpoint T",
                "--provider and --token-endpoint contradict",
            ),
            (
                "login --client-id c --provider google --issuer I",
                "--issuer",
            ),
            ("login --client-id c --issuer I --domain d", "--domain"),
            (
                "login --client-id c --issuer I --revocation-endpoint R",
                "--authorization-endpoint",
            ),
            (
                "login --client-id c --provider google --jwks-uri J",
                "--jwks-uri",
            ),
            (
                "login --client-id c --issuer I --jwks-uri J",
                "--authorization-endpoint",
            ),
        ] {
            let error = provider_of(line).expect_err(line);
            assert!(error.contains(says), "{line}: {error}");
            assert!(error.contains("USAGE: latchkey login"), "{line}: {error}");
        }
    }

    #[test]
    fn verbosity_counts_every_v_anywhere() {
        let invocation = parse_invocation("-v refresh --store s -v --json").expect("valid");
        assert_eq!(invocation.verbose(), 2);
        let invocation = parse_invocation("demo -vv").expect("valid");
        assert_eq!(invocation.verbose(), 2);
        let invocation = parse_invocation("-vv dev-idp -v --port 1").expect("valid");
        assert_eq!(invocation.verbose(), 3);
        assert_eq!(parse_invocation("token").expect("valid").verbose(), 0);
    }

    #[test]
    fn token_fresh_takes_a_margin_and_a_secret_and_nothing_else_does() {
        let Ok(Command::Token(args)) =
            parse_line("token --fresh --margin 300 --client-secret-env S --runtime tokio")
        else {
            panic!("valid command line");
        };
        assert_eq!(args.fresh(), Some(Duration::from_secs(300)));
        assert!(
            matches!(args.common.secret.source(), Some(SecretSource::Env(ref var)) if var == "S")
        );
        assert_eq!(args.common.driver.runtime, RuntimeChoice::Tokio);
        let Ok(Command::Token(args)) = parse_line("token --fresh") else {
            panic!("valid command line");
        };
        assert_eq!(
            args.fresh(),
            Some(latchkey::SessionOptions::default().margin)
        );
        for line in ["token --margin 5", "token --client-secret-file F"] {
            let error = parse_line(line).unwrap_err();
            assert!(error.contains("--fresh"), "{error}");
        }
    }

    #[test]
    fn every_command_refuses_a_secret_on_the_command_line_without_echoing_it() {
        for command in ["login", "refresh", "logout", "token --fresh"] {
            for secret in ["--client-secret hunter2", "--client-secret=hunter2"] {
                let error = parse_line(&format!("{command} {secret}")).unwrap_err();
                assert!(!error.contains("hunter2"), "{error}");
                assert!(error.contains("--client-secret-file"), "{error}");
            }
        }
    }

    #[test]
    fn login_needs_both_endpoints_and_a_client_id() {
        let error =
            parse_line("login --token-endpoint http://127.0.0.1:1/t --client-id c").unwrap_err();
        assert!(error.contains("--authorization-endpoint"), "{error}");
        let error = parse_line("login --issuer https://idp.example").unwrap_err();
        assert!(error.contains("--client-id"), "{error}");
    }

    #[test]
    fn an_unknown_auth_method_is_left_for_the_login_to_refuse() {
        let Ok(Command::Login(args)) =
            parse_line("login --issuer I --client-id c --auth-method bogus")
        else {
            panic!("valid command line");
        };
        assert_eq!(args.auth_method, Some(Err("bogus".to_owned())));
        let Ok(Command::Login(args)) =
            parse_line("login --issuer I --client-id c --auth-method post")
        else {
            panic!("valid command line");
        };
        assert_eq!(args.auth_method, Some(Ok(AuthMethod::Post)));
    }

    #[test]
    fn the_assertion_audience_goes_with_a_client_key() {
        let base = "login --issuer I --client-id c";
        assert!(parse_line(&format!("{base} --assertion-audience endpoint")).is_err());
        let Ok(Command::Login(args)) = parse_line(&format!(
            "{base} --client-key k.pem --assertion-audience endpoint"
        )) else {
            panic!("valid command line");
        };
        assert_eq!(args.assertion_audience, Some(AudienceName::Endpoint));
        assert!(
            parse_line(&format!(
                "{base} --client-key k.pem --assertion-audience anyone"
            ))
            .is_err()
        );
    }

    #[test]
    fn dpop_is_es256_unless_eddsa_is_asked_for_with_an_equals_sign() {
        let dpop = |line: &str| match parse_line(line) {
            Ok(Command::Login(args)) => Ok(args.dpop),
            Ok(_) => Err("another command".to_owned()),
            Err(error) => Err(error),
        };
        let base = "login --issuer I --client-id c";
        assert_eq!(dpop(base), Ok(None));
        assert_eq!(dpop(&format!("{base} --dpop")), Ok(Some(DpopAlg::ES256)));
        assert_eq!(
            dpop(&format!("{base} --dpop --par")),
            Ok(Some(DpopAlg::ES256))
        );
        assert_eq!(
            dpop(&format!("{base} --dpop=EdDSA")),
            Ok(Some(DpopAlg::EdDSA))
        );
        assert_eq!(
            dpop(&format!("{base} --dpop=ES384")),
            Ok(Some(DpopAlg::ES384))
        );
        assert_eq!(
            dpop(&format!("{base} --dpop=ES256")),
            Ok(Some(DpopAlg::ES256))
        );
        // The value needs its `=`: a bare word after `--dpop` is not taken for one.
        assert!(dpop(&format!("{base} --dpop EdDSA")).is_err());
        let refused = dpop(&format!("{base} --dpop=RS256")).unwrap_err();
        assert!(
            refused.contains("ES256") && refused.contains("EdDSA"),
            "{refused}"
        );
    }

    #[test]
    fn a_repeated_option_takes_its_last_value() {
        let Ok(Command::Token(args)) = parse_line("token --store a --store b --json --json") else {
            panic!("valid command line");
        };
        assert_eq!(args.common.file.store, PathBuf::from("b"));
    }

    #[test]
    fn repeatable_options_accumulate() {
        let Ok(Command::Login(args)) = parse_line(
            "login --authorization-endpoint A --token-endpoint T --client-id C \
             --scope openid --scope email --param access_type=offline --param prompt=consent \
             --resource https://api.example/ --resource urn:example:billing \
             --runtime tokio --json --timeout 5",
        ) else {
            panic!("valid command line");
        };
        assert_eq!(args.scopes, ["openid", "email"]);
        assert_eq!(
            args.resources,
            ["https://api.example/", "urn:example:billing"]
        );
        assert_eq!(args.params[1], ("prompt".into(), "consent".into()));
        assert_eq!(args.common.driver.runtime, RuntimeChoice::Tokio);
        assert_eq!(args.timeout, Some(Duration::from_secs(5)));
        assert!(args.common.file.json);
    }
}
