//! Command-line parsing. Secrets never come from the command line itself: only the name of
//! an environment variable or a file that holds them.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

/// The parsed command line: the command, and how much to log (`-v`, `-vv`).
#[derive(Debug)]
pub struct Invocation {
    pub command: Command,
    pub verbosity: u8,
}

/// The parsed command.
#[derive(Debug)]
pub enum Command {
    Login(Box<LoginArgs>),
    Refresh(SessionArgs),
    Logout(SessionArgs),
    Token(TokenArgs),
    DevIdp(DevIdpArgs),
    Demo { runtime: RuntimeChoice },
    Help,
}

/// Which driver runs the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeChoice {
    Smol,
    Tokio,
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

#[derive(Debug)]
pub struct LoginArgs {
    pub provider: ProviderChoice,
    pub issuer: Option<String>,
    pub client_id: String,
    pub secret: Option<SecretSource>,
    pub auth_method: Option<String>,
    pub scopes: Vec<String>,
    pub params: Vec<(String, String)>,
    pub redirect_uri: String,
    pub bind: Option<SocketAddr>,
    pub then: Option<String>,
    pub store: PathBuf,
    pub no_browser: bool,
    /// How the user signs in: `--device`, `--no-device`, or chosen by the command.
    pub way: Way,
    pub device_authorization_endpoint: Option<String>,
    /// `--no-verify-id-token` turns ID token verification off.
    pub verify_id_token: bool,
    /// `--timeout`; without it a browser login waits [`BROWSER_TIMEOUT`] and a device login
    /// until its code expires.
    pub timeout: Option<Duration>,
    pub runtime: RuntimeChoice,
    pub json: bool,
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
/// client, its secret.
#[derive(Debug)]
pub struct SessionArgs {
    pub store: PathBuf,
    pub secret: Option<SecretSource>,
    pub runtime: RuntimeChoice,
    pub json: bool,
}

/// `latchkey token`.
#[derive(Debug)]
pub struct TokenArgs {
    pub store: PathBuf,
    pub reveal: bool,
    pub json: bool,
    /// Refresh first when the access token expires within this margin.
    pub fresh: Option<Duration>,
    pub secret: Option<SecretSource>,
    pub runtime: RuntimeChoice,
}

#[derive(Debug)]
pub struct DevIdpArgs {
    pub port: u16,
    pub client_id: String,
    pub secret: Option<String>,
    pub auth_method: String,
    pub redirect_uris: Vec<String>,
    pub quirk: Option<String>,
    pub id_token_alg: Option<String>,
    pub forge: Option<String>,
}

pub const USAGE: &str = "\
latchkey: log in with OAuth 2.0: authorization code + PKCE through a loopback redirect, or
a code entered on another device (device grant) where no browser can be opened here

USAGE:
  latchkey login PROVIDER --client-id ID [OPTIONS]
  latchkey refresh [--store PATH] [SECRET] [--runtime smol|tokio] [--json]
  latchkey logout  [--store PATH] [SECRET] [--runtime smol|tokio] [--json]
  latchkey token   [--store PATH] [--reveal] [--json] [--fresh [--margin SECS] [SECRET]]
  latchkey dev-idp [--port P] [--client-id ID] [--client-secret S] [--auth-method M]
                   [--redirect-uri URI]... [--quirk github|github-app|entra|no-token-type]
                   [--id-token-alg RS256|ES256] [--forge signature|alg-none|unknown-key|
                    issuer|audience|expired|not-yet-valid|nonce|at-hash|subject|userinfo-subject]
  latchkey demo [--runtime smol|tokio]
  Every command takes -v (steps, timings) or -vv (everything) to log to stderr.

PROVIDER, one of:
  --authorization-endpoint URL --token-endpoint URL [--revocation-endpoint URL]
      [--jwks-uri URL]         where the provider's ID token signing keys are
  --issuer URL                 alone: discover the endpoints from the issuer's metadata
  --provider google|github|entra|okta|auth0|keycloak|gitlab
      --tenant T (entra)  --domain D (okta, auth0)  --base-url URL (keycloak; gitlab
      self-managed)  --realm R (keycloak)

LOGIN OPTIONS:
  --issuer ISS                 with endpoints: the provider's issuer; the callback's `iss` must match it
  --client-secret-env VAR      read the client secret from environment variable VAR
  --client-secret-file PATH    read the client secret from a file
  --auth-method basic|post|none  client authentication (default: basic with a secret, else none)
  --scope S                    request scope S (repeatable)
  --param KEY=VALUE            extra authorization parameter (repeatable)
  --redirect-uri URI           default http://127.0.0.1:0/callback (0: any free port)
  --bind ADDR                  listen on ADDR instead of the redirect URI's host and port
  --then URL                   send the browser here after success (e.g. docker-desktop://dashboard/open)
  --store PATH                 token file (default: the user's config directory); it also
                               records the provider's settings, never the secret
  --device                     sign in on another device with a code (RFC 8628 device grant);
                               chosen by itself on SSH sessions and Linux without a display
  --device-authorization-endpoint URL  the provider's device endpoint, with endpoints
                               (or with --issuer, when its metadata lacks one)
  --no-device                  never the device grant: the browser, or the URL printed and
                               the address the browser ended on pasted back
  --no-browser                 open no browser here: a code (device grant) when the provider
                               has one, else the URL to open elsewhere
  --no-verify-id-token         do NOT verify the ID token (only for a provider whose ID
                               tokens cannot be verified); nobody's identity is recorded
  --timeout SECS               upper bound on the whole login (default 300; a device login
                               waits until its code expires)
  --runtime smol|tokio         driver (default smol)
  --json                       one JSON event per line on stdout

SECRET: --client-secret-env VAR or --client-secret-file PATH, for a client that has one.
  refresh and logout read everything else from the token file.
  token --fresh refreshes first when the access token expires within --margin (default 60).

EXIT CODES: 0 success, 1 the operation failed (login required, provider refused, network,
  a revocation that failed although the tokens were deleted), 2 usage or configuration error
";

/// Parses the process arguments, program name first.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, lexopt::Error> {
    let args: Vec<OsString> = args.into_iter().collect();
    // `latchkey login --help` and the like: the usage, whatever else the line says.
    if args
        .iter()
        .skip(1)
        .any(|arg| arg == "--help" || arg == "-h")
    {
        return Ok(Invocation {
            command: Command::Help,
            verbosity: 0,
        });
    }
    let mut parser = lexopt::Parser::from_iter(args);
    let mut verbosity: u8 = 0;
    let name = loop {
        match parser.next()? {
            Some(Short('v') | Long("verbose")) => verbosity = verbosity.saturating_add(1),
            Some(Value(name)) => break Some(name),
            Some(Long("help") | Short('h')) | None => break None,
            Some(other) => return Err(other.unexpected()),
        }
    };
    let mut options = Options {
        parser: &mut parser,
        verbosity: &mut verbosity,
    };
    let command = match name.as_ref().map(|name| name.to_str()) {
        None | Some(Some("help")) => Command::Help,
        Some(Some("login")) => Command::Login(Box::new(parse_login(&mut options)?)),
        Some(Some("refresh")) => parse_session(&mut options).map(Command::Refresh)?,
        Some(Some("logout")) => parse_session(&mut options).map(Command::Logout)?,
        Some(Some("token")) => parse_token(&mut options).map(Command::Token)?,
        Some(Some("dev-idp")) => parse_dev_idp(&mut options).map(Command::DevIdp)?,
        Some(Some("demo")) => parse_demo(&mut options)?,
        Some(_) => {
            return Err(lexopt::Error::from(format!(
                "unknown command {:?}: expected login, refresh, logout, token, dev-idp or demo",
                name.unwrap_or_default()
            )));
        }
    };
    Ok(Invocation { command, verbosity })
}

/// The parser, and the verbosity every command's options may raise.
struct Options<'a> {
    parser: &'a mut lexopt::Parser,
    verbosity: &'a mut u8,
}

impl Options<'_> {
    /// Counts one more `-v`.
    fn verbose(&mut self) {
        *self.verbosity = self.verbosity.saturating_add(1);
    }

    fn string(&mut self) -> Result<String, lexopt::Error> {
        self.parser.value()?.string()
    }

    fn path(&mut self) -> Result<PathBuf, lexopt::Error> {
        Ok(self.parser.value()?.into())
    }

    fn runtime(&mut self) -> Result<RuntimeChoice, lexopt::Error> {
        match self.string()?.as_str() {
            "smol" => Ok(RuntimeChoice::Smol),
            "tokio" => Ok(RuntimeChoice::Tokio),
            other => Err(lexopt::Error::from(format!(
                "--runtime takes smol or tokio, not {other:?}"
            ))),
        }
    }

    fn seconds(&mut self) -> Result<Duration, lexopt::Error> {
        Ok(Duration::from_secs(self.parser.value()?.parse()?))
    }
}

/// `--client-secret`, refused with the alternatives (and without echoing the value).
fn secret_on_command_line() -> lexopt::Error {
    lexopt::Error::from(
        "a secret on the command line is visible to every local user: \
         use --client-secret-env VAR or --client-secret-file PATH",
    )
}

fn parse_login(options: &mut Options) -> Result<LoginArgs, lexopt::Error> {
    let mut authorization_endpoint = None;
    let mut token_endpoint = None;
    let mut revocation_endpoint = None;
    let mut jwks_uri = None;
    let mut preset = None;
    let (mut tenant, mut domain, mut base_url, mut realm) = (None, None, None, None);
    let mut client_id = None;
    let mut way = None;
    let mut args = LoginArgs {
        provider: ProviderChoice::Discover,
        issuer: None,
        client_id: String::new(),
        secret: None,
        auth_method: None,
        scopes: Vec::new(),
        params: Vec::new(),
        redirect_uri: "http://127.0.0.1:0/callback".into(),
        bind: None,
        then: None,
        store: default_store(),
        no_browser: false,
        way: Way::Choose,
        device_authorization_endpoint: None,
        verify_id_token: true,
        timeout: None,
        runtime: RuntimeChoice::Smol,
        json: false,
    };
    while let Some(arg) = options.parser.next()? {
        match arg {
            Short('v') | Long("verbose") => options.verbose(),
            Long("authorization-endpoint") => authorization_endpoint = Some(options.string()?),
            Long("token-endpoint") => token_endpoint = Some(options.string()?),
            Long("revocation-endpoint") => revocation_endpoint = Some(options.string()?),
            Long("jwks-uri") => jwks_uri = Some(options.string()?),
            Long("provider") => preset = Some(options.string()?),
            Long("tenant") => tenant = Some(options.string()?),
            Long("domain") => domain = Some(options.string()?),
            Long("base-url") => base_url = Some(options.string()?),
            Long("realm") => realm = Some(options.string()?),
            Long("issuer") => args.issuer = Some(options.string()?),
            Long("client-id") => client_id = Some(options.string()?),
            Long("client-secret-env") => args.secret = Some(SecretSource::Env(options.string()?)),
            Long("client-secret-file") => args.secret = Some(SecretSource::File(options.path()?)),
            Long("client-secret") => return Err(secret_on_command_line()),
            Long("auth-method") => args.auth_method = Some(options.string()?),
            Long("scope") => args.scopes.push(options.string()?),
            Long("param") => {
                let pair = options.string()?;
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| lexopt::Error::from("--param takes KEY=VALUE"))?;
                args.params.push((key.to_owned(), value.to_owned()));
            }
            Long("redirect-uri") => args.redirect_uri = options.string()?,
            Long("bind") => args.bind = Some(options.parser.value()?.parse()?),
            Long("then") => args.then = Some(options.string()?),
            Long("store") => args.store = options.path()?,
            Long("no-browser") => args.no_browser = true,
            Long("device") => way = Some(way_once(way, Way::Device)?),
            Long("no-device") => way = Some(way_once(way, Way::Browser)?),
            Long("device-authorization-endpoint") => {
                args.device_authorization_endpoint = Some(options.string()?);
            }
            Long("no-verify-id-token") => args.verify_id_token = false,
            Long("timeout") => args.timeout = Some(options.seconds()?),
            Long("runtime") => args.runtime = options.runtime()?,
            Long("json") => args.json = true,
            other => return Err(other.unexpected()),
        }
    }
    args.client_id = client_id.ok_or_else(|| missing("--client-id"))?;
    args.way = way.unwrap_or(Way::Choose);
    let preset_settings = [&tenant, &domain, &base_url, &realm];
    if preset.is_none() && preset_settings.iter().any(|setting| setting.is_some()) {
        return Err(lexopt::Error::from(
            "--tenant, --domain, --base-url and --realm go with --provider",
        ));
    }
    args.provider = match (preset, authorization_endpoint, token_endpoint) {
        (Some(name), None, None) => {
            if revocation_endpoint.is_some()
                || args.issuer.is_some()
                || jwks_uri.is_some()
                || args.device_authorization_endpoint.is_some()
            {
                return Err(lexopt::Error::from(
                    "--provider sets the endpoints, the issuer and the key set itself",
                ));
            }
            ProviderChoice::Preset(preset_named(&name, tenant, domain, base_url, realm)?)
        }
        (Some(_), _, _) => {
            return Err(lexopt::Error::from(
                "--provider sets the endpoints itself: leave out --authorization-endpoint \
                 and --token-endpoint",
            ));
        }
        (None, Some(authorization_endpoint), Some(token_endpoint)) => ProviderChoice::Endpoints {
            authorization_endpoint,
            token_endpoint,
            revocation_endpoint,
            jwks_uri,
        },
        (None, None, None)
            if args.issuer.is_some() && revocation_endpoint.is_none() && jwks_uri.is_none() =>
        {
            ProviderChoice::Discover
        }
        (None, Some(_), None) => return Err(missing("--token-endpoint")),
        (None, None, Some(_)) => return Err(missing("--authorization-endpoint")),
        (None, None, None) => {
            return Err(lexopt::Error::from(
                "name the provider: --authorization-endpoint and --token-endpoint, \
                 --issuer URL (discovery), or --provider NAME",
            ));
        }
    };
    Ok(args)
}

/// `--device` or `--no-device`, given once.
fn way_once(seen: Option<Way>, way: Way) -> Result<Way, lexopt::Error> {
    match seen {
        Some(seen) if seen != way => Err(lexopt::Error::from(
            "--device and --no-device contradict each other",
        )),
        _ => Ok(way),
    }
}

fn missing(option: &str) -> lexopt::Error {
    lexopt::Error::MissingValue {
        option: Some(option.to_owned()),
    }
}

/// The preset called `name`, with the settings it needs; any other setting is refused.
fn preset_named(
    name: &str,
    tenant: Option<String>,
    domain: Option<String>,
    base_url: Option<String>,
    realm: Option<String>,
) -> Result<Preset, lexopt::Error> {
    let required = |value: Option<String>, option: &str| {
        value.ok_or_else(|| lexopt::Error::from(format!("--provider {name} needs {option}")))
    };
    let preset = match name {
        "google" => Preset::Google,
        "github" => Preset::GitHub,
        "entra" => Preset::Entra {
            tenant: required(tenant.clone(), "--tenant")?,
        },
        "okta" => Preset::Okta {
            domain: required(domain.clone(), "--domain")?,
        },
        "auth0" => Preset::Auth0 {
            domain: required(domain.clone(), "--domain")?,
        },
        "keycloak" => Preset::Keycloak {
            base_url: required(base_url.clone(), "--base-url")?,
            realm: required(realm.clone(), "--realm")?,
        },
        "gitlab" => Preset::GitLab {
            base_url: base_url.clone(),
        },
        other => {
            return Err(lexopt::Error::from(format!(
                "--provider takes google, github, entra, okta, auth0, keycloak or gitlab, \
                 not {other:?}"
            )));
        }
    };
    let used = |option: &str| {
        matches!(
            (option, &preset),
            ("--tenant", Preset::Entra { .. })
                | ("--domain", Preset::Okta { .. } | Preset::Auth0 { .. })
                | (
                    "--base-url",
                    Preset::Keycloak { .. } | Preset::GitLab { .. }
                )
                | ("--realm", Preset::Keycloak { .. })
        )
    };
    for (option, given) in [
        ("--tenant", tenant.is_some()),
        ("--domain", domain.is_some()),
        ("--base-url", base_url.is_some()),
        ("--realm", realm.is_some()),
    ] {
        if given && !used(option) {
            return Err(lexopt::Error::from(format!(
                "--provider {name} takes no {option}"
            )));
        }
    }
    Ok(preset)
}

fn parse_session(options: &mut Options) -> Result<SessionArgs, lexopt::Error> {
    let mut args = SessionArgs {
        store: default_store(),
        secret: None,
        runtime: RuntimeChoice::Smol,
        json: false,
    };
    while let Some(arg) = options.parser.next()? {
        match arg {
            Short('v') | Long("verbose") => options.verbose(),
            Long("store") => args.store = options.path()?,
            Long("client-secret-env") => args.secret = Some(SecretSource::Env(options.string()?)),
            Long("client-secret-file") => args.secret = Some(SecretSource::File(options.path()?)),
            Long("client-secret") => return Err(secret_on_command_line()),
            Long("runtime") => args.runtime = options.runtime()?,
            Long("json") => args.json = true,
            other => return Err(other.unexpected()),
        }
    }
    Ok(args)
}

fn parse_token(options: &mut Options) -> Result<TokenArgs, lexopt::Error> {
    let mut args = TokenArgs {
        store: default_store(),
        reveal: false,
        json: false,
        fresh: None,
        secret: None,
        runtime: RuntimeChoice::Smol,
    };
    let (mut fresh, mut margin) = (false, None);
    while let Some(arg) = options.parser.next()? {
        match arg {
            Short('v') | Long("verbose") => options.verbose(),
            Long("store") => args.store = options.path()?,
            Long("reveal") => args.reveal = true,
            Long("json") => args.json = true,
            Long("fresh") => fresh = true,
            Long("margin") => margin = Some(options.seconds()?),
            Long("client-secret-env") => args.secret = Some(SecretSource::Env(options.string()?)),
            Long("client-secret-file") => args.secret = Some(SecretSource::File(options.path()?)),
            Long("client-secret") => return Err(secret_on_command_line()),
            Long("runtime") => args.runtime = options.runtime()?,
            other => return Err(other.unexpected()),
        }
    }
    if !fresh && (margin.is_some() || args.secret.is_some()) {
        return Err(lexopt::Error::from(
            "--margin and the client secret only matter with --fresh",
        ));
    }
    if fresh {
        args.fresh = Some(margin.unwrap_or(latchkey::SessionOptions::default().margin));
    }
    Ok(args)
}

fn parse_dev_idp(options: &mut Options) -> Result<DevIdpArgs, lexopt::Error> {
    let mut args = DevIdpArgs {
        port: 9000,
        client_id: "latchkey-dev".into(),
        secret: None,
        auth_method: "none".into(),
        redirect_uris: Vec::new(),
        quirk: None,
        id_token_alg: None,
        forge: None,
    };
    while let Some(arg) = options.parser.next()? {
        match arg {
            Short('v') | Long("verbose") => options.verbose(),
            Long("port") => args.port = options.parser.value()?.parse()?,
            Long("client-id") => args.client_id = options.string()?,
            // A development IdP's throwaway secret; real secrets never go on a command line.
            Long("client-secret") => args.secret = Some(options.string()?),
            Long("auth-method") => args.auth_method = options.string()?,
            Long("redirect-uri") => args.redirect_uris.push(options.string()?),
            Long("quirk") => args.quirk = Some(options.string()?),
            Long("id-token-alg") => args.id_token_alg = Some(options.string()?),
            Long("forge") => args.forge = Some(options.string()?),
            other => return Err(other.unexpected()),
        }
    }
    Ok(args)
}

fn parse_demo(options: &mut Options) -> Result<Command, lexopt::Error> {
    let mut runtime = RuntimeChoice::Smol;
    while let Some(arg) = options.parser.next()? {
        match arg {
            Short('v') | Long("verbose") => options.verbose(),
            Long("runtime") => runtime = options.runtime()?,
            other => return Err(other.unexpected()),
        }
    }
    Ok(Command::Demo { runtime })
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

    fn parse_invocation(line: &str) -> Result<Invocation, lexopt::Error> {
        parse(
            std::iter::once("latchkey")
                .chain(line.split_whitespace())
                .map(OsString::from),
        )
    }

    fn parse_line(line: &str) -> Result<Command, lexopt::Error> {
        parse_invocation(line).map(|invocation| invocation.command)
    }

    #[test]
    fn help_after_a_command_is_the_usage() {
        for line in [
            "--help",
            "login --help",
            "login --issuer https://idp.example -h",
            "dev-idp --help",
            "token --json --help",
        ] {
            assert!(matches!(parse_line(line), Ok(Command::Help)), "{line}");
        }
    }

    fn provider_of(line: &str) -> Result<ProviderChoice, String> {
        match parse_line(line) {
            Ok(Command::Login(args)) => Ok(args.provider),
            Ok(other) => panic!("not a login: {other:?}"),
            Err(error) => Err(error.to_string()),
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
            ("login --client-id c", "name the provider"),
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
                "sets the endpoints",
            ),
            ("login --client-id c --provider google --issuer I", "issuer"),
            (
                "login --client-id c --issuer I --domain d",
                "go with --provider",
            ),
            (
                "login --client-id c --issuer I --revocation-endpoint R",
                "name the provider",
            ),
            (
                "login --client-id c --provider google --jwks-uri J",
                "key set",
            ),
            (
                "login --client-id c --issuer I --jwks-uri J",
                "name the provider",
            ),
        ] {
            let error = provider_of(line).expect_err(line);
            assert!(error.contains(says), "{line}: {error}");
        }
    }

    #[test]
    fn verbosity_counts_every_v_anywhere() {
        let invocation = parse_invocation("-v refresh --store s -v --json").expect("valid");
        assert_eq!(invocation.verbosity, 2);
        let invocation = parse_invocation("demo -vv").expect("valid");
        assert_eq!(invocation.verbosity, 2);
        assert_eq!(parse_invocation("token").expect("valid").verbosity, 0);
    }

    #[test]
    fn token_fresh_takes_a_margin_and_a_secret_and_nothing_else_does() {
        let Ok(Command::Token(args)) =
            parse_line("token --fresh --margin 300 --client-secret-env S --runtime tokio")
        else {
            panic!("valid command line");
        };
        assert_eq!(args.fresh, Some(Duration::from_secs(300)));
        assert!(matches!(args.secret, Some(SecretSource::Env(ref var)) if var == "S"));
        let Ok(Command::Token(args)) = parse_line("token --fresh") else {
            panic!("valid command line");
        };
        assert_eq!(args.fresh, Some(latchkey::SessionOptions::default().margin));
        let error = parse_line("token --margin 5").unwrap_err().to_string();
        assert!(error.contains("--fresh"), "{error}");
    }

    #[test]
    fn refresh_and_logout_refuse_a_secret_on_the_command_line() {
        for command in ["refresh", "logout", "token --fresh"] {
            let error = parse_line(&format!("{command} --client-secret hunter2"))
                .unwrap_err()
                .to_string();
            assert!(!error.contains("hunter2"), "{error}");
            assert!(error.contains("--client-secret-file"), "{error}");
        }
    }

    #[test]
    fn login_needs_its_endpoints_and_client_id() {
        let error = parse_line("login --token-endpoint http://127.0.0.1:1/t --client-id c")
            .unwrap_err()
            .to_string();
        assert!(error.contains("--authorization-endpoint"), "{error}");
    }

    #[test]
    fn a_secret_on_the_command_line_is_refused_with_the_alternatives() {
        let error = parse_line("login --client-secret hunter2")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--client-secret-env") && !error.contains("hunter2"),
            "{error}"
        );
    }

    #[test]
    fn repeatable_options_accumulate() {
        let Ok(Command::Login(args)) = parse_line(
            "login --authorization-endpoint A --token-endpoint T --client-id C \
             --scope openid --scope email --param access_type=offline --param prompt=consent \
             --runtime tokio --json --timeout 5",
        ) else {
            panic!("valid command line");
        };
        assert_eq!(args.scopes, ["openid", "email"]);
        assert_eq!(args.params[1], ("prompt".into(), "consent".into()));
        assert_eq!(args.runtime, RuntimeChoice::Tokio);
        assert_eq!(args.timeout, Some(Duration::from_secs(5)));
        assert!(args.json);
    }
}
