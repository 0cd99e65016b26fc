//! `latchkey demo` and `latchkey dev-idp`: the development identity provider, alone or with
//! a whole login against it through the real listener, with a built-in user agent playing
//! the browser.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use latchkey::keys::Signer;
use latchkey::{Config, FlowOptions, Landing, Provider};
use latchkey_devidp::{Client, ClientAuth, DevIdp, IdTokenAlg, Quirk, agent};
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::proxy::Proxy;
use latchkey_io::runtime::Runtime;
use latchkey_io::service::{Service, ServiceOptions};
use latchkey_io::store::FileStore;
use latchkey_io::transport::Transport;

use crate::args::{DevIdpArgs, DevIdpAuth, IdTokenAlgName, QuirkName};
use crate::login::{Failure, follow, read_client_key};
use crate::report::{Place, Reporter, describe_tokens};

const CLIENT_ID: &str = "latchkey-demo";
const LANDING: &str = "docker-desktop://dashboard/open";

/// Runs the demo on `runtime`.
pub async fn run<R: Runtime>(runtime: R) -> ExitCode {
    let mut reporter = Reporter::timed(Instant::now());
    let workdir = std::env::temp_dir().join(format!("latchkey-demo-{}", std::process::id()));
    let result = demo(&runtime, &mut reporter, &workdir).await;
    // The token file holds real (if throwaway) secrets: never leave it behind.
    let _ = std::fs::remove_dir_all(&workdir);
    match result {
        Ok(()) => {
            reporter.note("Demo complete; the temporary token file was removed.");
            ExitCode::SUCCESS
        }
        Err(failure) => failure.report(&mut reporter),
    }
}

async fn demo<R: Runtime>(
    runtime: &R,
    reporter: &mut Reporter,
    workdir: &Path,
) -> Result<(), Failure> {
    let io = |what: &str, error: std::io::Error| Failure::Config(format!("{what}: {error}"));
    // Bind first, so the identity provider can register the exact redirect URI.
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| io("binding the listener", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| io("binding the listener", e))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");

    let client = Client {
        id: CLIENT_ID.into(),
        secret: None,
        auth: ClientAuth::None,
        redirect_uris: vec![redirect_uri],
    };
    let idp = DevIdp::start(
        latchkey_devidp::Config::new(vec![client]),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )
    .map_err(|e| io("starting the identity provider", e))?;
    reporter.note(&format!(
        "Development identity provider at {}",
        idp.base_url()
    ));

    let provider = Provider::builder(
        idp.authorization_endpoint(),
        idp.token_endpoint(),
        CLIENT_ID,
    )
    .scopes(["openid", "profile"])
    .issuer(idp.issuer())
    .require_iss(true)
    .jwks_uri(idp.jwks_uri())
    .crypto(latchkey_io::crypto::ring())
    .build()
    .map_err(|e| Failure::Config(e.to_string()))?;
    let config = Config::builder(provider)
        .redirect_uri("127.0.0.1", port, "/callback")
        .on_success(Landing::Redirect(LANDING.into()))
        .build()
        .map_err(|e| Failure::Config(e.to_string()))?;
    let store_path = workdir.join("tokens.json");
    let http = HttpClient::new(HttpOptions {
        proxy: Proxy::none(),
        ..HttpOptions::default()
    })
    .map_err(|e| Failure::Config(e.to_string()))?;
    let options = ServiceOptions::new(
        Arc::new(FileStore::new(&store_path)),
        Transport::Builtin(http),
    );
    let service = Service::from_listeners(runtime.clone(), config, vec![listener], options)?;
    reporter.listening(service.redirect_uri());

    let login = service.start(FlowOptions::new())?;
    reporter.note("Started a login; the built-in user agent follows the authorization URL");
    let url = login.url().unwrap_or_default().to_owned();
    let browsing = runtime.unblock(move || agent::browse(&url));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (hops, outcome) = future::zip(
        browsing,
        follow(
            runtime,
            &login,
            Some(deadline),
            reporter,
            "openid profile",
            &Place {
                path: &store_path,
                keychain: false,
                profile: latchkey_io::store::DEFAULT_KEY,
            },
        ),
    )
    .await;
    service.shutdown().await;
    idp.shutdown();
    outcome.map_err(Failure::Flow)?;
    let hops = hops.map_err(|e| io("the user agent", e))?;
    for hop in &hops {
        let target = hop
            .location
            .as_deref()
            .map(redact_query)
            .unwrap_or_default();
        reporter.note(&format!(
            "browser: GET {} -> {} {target} ({:.1} ms)",
            redact_query(&hop.url),
            hop.status,
            hop.elapsed.as_secs_f64() * 1000.0
        ));
    }
    if hops.last().and_then(|hop| hop.location.as_deref()) != Some(LANDING) {
        return Err(Failure::Config(format!(
            "the browser did not end on {LANDING}"
        )));
    }

    let tokens = latchkey_io::store::TokenStore::load(
        &FileStore::new(&store_path),
        latchkey_io::store::DEFAULT_KEY,
    )
    .map_err(|e| Failure::Config(e.to_string()))?
    .ok_or_else(|| Failure::Config("the token file is empty".into()))?;
    reporter.note(&format!(
        "Summary: {} token, {}; file mode {}",
        tokens.token_type().as_str(),
        describe_tokens(&tokens),
        file_mode(&store_path)
    ));
    Ok(())
}

/// A URL with its query (codes, states) left out.
fn redact_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_owned(),
    }
}

#[cfg(unix)]
fn file_mode(path: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map_or_else(
        |e| e.to_string(),
        |m| format!("{:04o}", m.permissions().mode() & 0o7777),
    )
}

#[cfg(not(unix))]
fn file_mode(_path: &Path) -> String {
    "(not applicable)".into()
}

/// The dev IdP client's authentication: for `private_key_jwt`, the public half of the key
/// in `--client-key`, checked as a client's would be.
fn dev_idp_auth(args: &DevIdpArgs) -> Result<ClientAuth, String> {
    let auth = match args.auth_method {
        DevIdpAuth::Basic => ClientAuth::Basic,
        DevIdpAuth::Post => ClientAuth::Post,
        DevIdpAuth::None => ClientAuth::None,
        DevIdpAuth::PrivateKeyJwt => {
            let Some(path) = &args.client_key else {
                return Err(
                    "--auth-method private_key_jwt needs --client-key PATH, the \
                            client's key (only its public half is registered)"
                        .into(),
                );
            };
            let key = read_client_key(path).map_err(|failure| match failure {
                Failure::Config(message) => message,
                _ => format!("cannot read the client key from {}", path.display()),
            })?;
            let signer = Signer::new(key, latchkey_io::crypto::ring())
                .map_err(|e| format!("client key {}: {e}", path.display()))?;
            let jwk = serde_json::Value::Object(signer.public_jwk().clone()).to_string();
            return Ok(ClientAuth::PrivateKeyJwt { jwk });
        }
    };
    if args.client_key.is_some() {
        return Err("--client-key goes with --auth-method private_key_jwt".into());
    }
    Ok(auth)
}

/// `latchkey dev-idp`: serves the development identity provider until interrupted.
pub fn serve_dev_idp(args: DevIdpArgs) -> ExitCode {
    let auth = match dev_idp_auth(&args) {
        Ok(auth) => auth,
        Err(message) => {
            eprintln!("latchkey: {message}");
            return ExitCode::from(2);
        }
    };
    let quirk = match args.quirk {
        None => Quirk::None,
        Some(QuirkName::GitHub) => Quirk::GitHub,
        Some(QuirkName::GitHubApp) => Quirk::GitHubApp,
        Some(QuirkName::Entra) => Quirk::EntraStringExpiry,
        Some(QuirkName::NoTokenType) => Quirk::NoTokenType,
    };
    let redirect_uris = if args.redirect_uris.is_empty() {
        vec!["http://127.0.0.1:8080/callback".to_owned()]
    } else {
        args.redirect_uris
    };
    let auth_name = auth.name();
    let client = Client {
        id: args.client_id.clone(),
        secret: args.secret,
        auth,
        redirect_uris: redirect_uris.clone(),
    };
    let alg = match args.id_token_alg {
        IdTokenAlgName::RS256 => IdTokenAlg::RS256,
        IdTokenAlgName::ES256 => IdTokenAlg::ES256,
    };
    let forgery = args.forge;
    let mut config = latchkey_devidp::Config::new(vec![client]);
    config.quirk = quirk;
    config.id_token_alg = alg;
    config.dpop_nonce = args.dpop_nonce;
    config.require_pushed_authorization_requests = args.require_par;
    let idp = match DevIdp::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, args.port))) {
        Ok(idp) => idp,
        Err(error) => {
            eprintln!(
                "latchkey: cannot serve on 127.0.0.1:{}: {error}; choose another --port",
                args.port
            );
            return ExitCode::from(2);
        }
    };
    idp.set_forgery(forgery);
    println!("Development identity provider (Ctrl-C to stop)");
    println!("  issuer:                 {}", idp.issuer());
    println!("  authorization endpoint: {}", idp.authorization_endpoint());
    println!("  token endpoint:         {}", idp.token_endpoint());
    println!("  key set (jwks_uri):     {}", idp.jwks_uri());
    println!(
        "  device endpoint:        {} (approve codes at {})",
        idp.device_authorization_endpoint(),
        idp.device_verification_uri()
    );
    if quirk != Quirk::GitHub && quirk != Quirk::GitHubApp {
        let required = if args.require_par { " (required)" } else { "" };
        println!(
            "  pushed requests (PAR):  {}{required}",
            idp.pushed_authorization_request_endpoint()
        );
        println!("  introspection:          {}", idp.introspection_endpoint());
        if args.dpop_nonce {
            println!("  DPoP:                   proofs must carry the server's nonce");
        }
    }
    if let Some(forgery) = forgery {
        println!(
            "  ID tokens forged:       {} (for testing clients)",
            forgery.name()
        );
    }
    println!(
        "  client id:              {} ({})",
        args.client_id, auth_name
    );
    println!("  redirect URIs:          {}", redirect_uris.join(", "));
    loop {
        std::thread::park();
    }
}
