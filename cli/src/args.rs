//! Command-line parsing. Secrets never come from the command line itself: only the name of
//! an environment variable or a file that holds them.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

/// The parsed command.
#[derive(Debug)]
pub enum Command {
    Login(LoginArgs),
    Token {
        store: PathBuf,
        reveal: bool,
        json: bool,
    },
    DevIdp(DevIdpArgs),
    Demo {
        runtime: RuntimeChoice,
    },
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

#[derive(Debug)]
pub struct LoginArgs {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
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
    pub timeout: Duration,
    pub runtime: RuntimeChoice,
    pub json: bool,
}

#[derive(Debug)]
pub struct DevIdpArgs {
    pub port: u16,
    pub client_id: String,
    pub secret: Option<String>,
    pub auth_method: String,
    pub redirect_uris: Vec<String>,
    pub quirk: Option<String>,
}

pub const USAGE: &str = "\
latchkey: log in with OAuth 2.0 (authorization code + PKCE) through a loopback redirect

USAGE:
  latchkey login --authorization-endpoint URL --token-endpoint URL --client-id ID [OPTIONS]
  latchkey token [--store PATH] [--reveal] [--json]
  latchkey dev-idp [--port P] [--client-id ID] [--client-secret S] [--auth-method M]
                   [--redirect-uri URI]... [--quirk github|entra|no-token-type]
  latchkey demo [--runtime smol|tokio]

LOGIN OPTIONS:
  --issuer ISS                 the provider's issuer; the callback's `iss` must match it
  --client-secret-env VAR      read the client secret from environment variable VAR
  --client-secret-file PATH    read the client secret from a file
  --auth-method basic|post|none  client authentication (default: basic with a secret, else none)
  --scope S                    request scope S (repeatable)
  --param KEY=VALUE            extra authorization parameter (repeatable)
  --redirect-uri URI           default http://127.0.0.1:0/callback (0: any free port)
  --bind ADDR                  listen on ADDR instead of the redirect URI's host and port
  --then URL                   send the browser here after success (e.g. docker-desktop://dashboard/open)
  --store PATH                 token file (default: the user's config directory)
  --no-browser                 print the URL instead of opening a browser
  --timeout SECS               upper bound on the whole login (default 300)
  --runtime smol|tokio         driver (default smol)
  --json                       one JSON event per line on stdout

EXIT CODES: 0 success, 1 the login failed, 2 usage or configuration error
";

/// Parses the process arguments, program name first.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, lexopt::Error> {
    let mut parser = lexopt::Parser::from_iter(args);
    let Some(arg) = parser.next()? else {
        return Ok(Command::Help);
    };
    match arg {
        Value(command) => match command.to_str() {
            Some("login") => parse_login(&mut parser).map(Command::Login),
            Some("token") => parse_token(&mut parser),
            Some("dev-idp") => parse_dev_idp(&mut parser).map(Command::DevIdp),
            Some("demo") => parse_demo(&mut parser),
            Some("help") => Ok(Command::Help),
            _ => Err(lexopt::Error::from(format!(
                "unknown command {command:?}: expected login, token, dev-idp or demo"
            ))),
        },
        Long("help") | Short('h') => Ok(Command::Help),
        other => Err(other.unexpected()),
    }
}

fn parse_login(parser: &mut lexopt::Parser) -> Result<LoginArgs, lexopt::Error> {
    let mut authorization_endpoint = None;
    let mut token_endpoint = None;
    let mut client_id = None;
    let mut args = LoginArgs {
        authorization_endpoint: String::new(),
        token_endpoint: String::new(),
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
        timeout: Duration::from_secs(300),
        runtime: RuntimeChoice::Smol,
        json: false,
    };
    while let Some(arg) = parser.next()? {
        match arg {
            Long("authorization-endpoint") => authorization_endpoint = Some(string(parser)?),
            Long("token-endpoint") => token_endpoint = Some(string(parser)?),
            Long("issuer") => args.issuer = Some(string(parser)?),
            Long("client-id") => client_id = Some(string(parser)?),
            Long("client-secret-env") => args.secret = Some(SecretSource::Env(string(parser)?)),
            Long("client-secret-file") => {
                args.secret = Some(SecretSource::File(parser.value()?.into()));
            }
            Long("client-secret") => {
                return Err(lexopt::Error::from(
                    "a secret on the command line is visible to every local user: \
                     use --client-secret-env VAR or --client-secret-file PATH",
                ));
            }
            Long("auth-method") => args.auth_method = Some(string(parser)?),
            Long("scope") => args.scopes.push(string(parser)?),
            Long("param") => {
                let pair = string(parser)?;
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| lexopt::Error::from("--param takes KEY=VALUE"))?;
                args.params.push((key.to_owned(), value.to_owned()));
            }
            Long("redirect-uri") => args.redirect_uri = string(parser)?,
            Long("bind") => args.bind = Some(parser.value()?.parse()?),
            Long("then") => args.then = Some(string(parser)?),
            Long("store") => args.store = parser.value()?.into(),
            Long("no-browser") => args.no_browser = true,
            Long("timeout") => args.timeout = Duration::from_secs(parser.value()?.parse()?),
            Long("runtime") => args.runtime = runtime(parser)?,
            Long("json") => args.json = true,
            other => return Err(other.unexpected()),
        }
    }
    let missing = |name: &str| lexopt::Error::MissingValue {
        option: Some(name.to_owned()),
    };
    args.authorization_endpoint =
        authorization_endpoint.ok_or_else(|| missing("--authorization-endpoint"))?;
    args.token_endpoint = token_endpoint.ok_or_else(|| missing("--token-endpoint"))?;
    args.client_id = client_id.ok_or_else(|| missing("--client-id"))?;
    Ok(args)
}

fn parse_token(parser: &mut lexopt::Parser) -> Result<Command, lexopt::Error> {
    let (mut store, mut reveal, mut json) = (default_store(), false, false);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("store") => store = parser.value()?.into(),
            Long("reveal") => reveal = true,
            Long("json") => json = true,
            other => return Err(other.unexpected()),
        }
    }
    Ok(Command::Token {
        store,
        reveal,
        json,
    })
}

fn parse_dev_idp(parser: &mut lexopt::Parser) -> Result<DevIdpArgs, lexopt::Error> {
    let mut args = DevIdpArgs {
        port: 9000,
        client_id: "latchkey-dev".into(),
        secret: None,
        auth_method: "none".into(),
        redirect_uris: Vec::new(),
        quirk: None,
    };
    while let Some(arg) = parser.next()? {
        match arg {
            Long("port") => args.port = parser.value()?.parse()?,
            Long("client-id") => args.client_id = string(parser)?,
            // A development IdP's throwaway secret; real secrets never go on a command line.
            Long("client-secret") => args.secret = Some(string(parser)?),
            Long("auth-method") => args.auth_method = string(parser)?,
            Long("redirect-uri") => args.redirect_uris.push(string(parser)?),
            Long("quirk") => args.quirk = Some(string(parser)?),
            other => return Err(other.unexpected()),
        }
    }
    Ok(args)
}

fn parse_demo(parser: &mut lexopt::Parser) -> Result<Command, lexopt::Error> {
    let mut choice = RuntimeChoice::Smol;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("runtime") => choice = runtime(parser)?,
            other => return Err(other.unexpected()),
        }
    }
    Ok(Command::Demo { runtime: choice })
}

fn runtime(parser: &mut lexopt::Parser) -> Result<RuntimeChoice, lexopt::Error> {
    match string(parser)?.as_str() {
        "smol" => Ok(RuntimeChoice::Smol),
        "tokio" => Ok(RuntimeChoice::Tokio),
        other => Err(lexopt::Error::from(format!(
            "--runtime takes smol or tokio, not {other:?}"
        ))),
    }
}

fn string(parser: &mut lexopt::Parser) -> Result<String, lexopt::Error> {
    parser.value()?.string()
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

    fn parse_line(line: &str) -> Result<Command, lexopt::Error> {
        parse(
            std::iter::once("latchkey")
                .chain(line.split_whitespace())
                .map(OsString::from),
        )
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
        assert_eq!(args.timeout, Duration::from_secs(5));
        assert!(args.json);
    }
}
