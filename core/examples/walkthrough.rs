//! A whole login through the sans-IO engine, with a scripted browser and identity provider
//! standing in for the network. Prints every action the engine asks for.
//!
//! ```sh
//! cargo run -p latchkey --example walkthrough
//! ```

// This program plays the driver, and drivers read the clocks the core may not.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use latchkey::http1::{ResponseReader, write_request};
use latchkey::{Action, Config, Engine, ExchangeId, FlowId, Landing, Provider};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider = Provider::builder(
        "https://idp.example/authorize",
        "https://idp.example/token",
        "docker-extension",
    )
    // Without `openid`: an ID token would be verified, which needs a crypto provider and the
    // provider's keys (see the `oidc` module's example).
    .scopes(["email", "offline_access"])
    .issuer("https://idp.example")
    .build()?;
    let config = Config::builder(provider)
        .redirect_uri("127.0.0.1", 8080, "/callback")
        .on_success(Landing::Redirect("docker-desktop://dashboard/open".into()))
        .build()?;
    let mut engine = Engine::new(config)?;
    let now = Instant::now();

    println!("redirect URI: {}", engine.redirect_uri());
    engine.start(now, entropy())?;

    // The run loop: drain every action, let the (scripted) world react, feed the reactions
    // back one input at a time, draining after each.
    let mut inputs = VecDeque::new();
    loop {
        while let Some(action) = engine.poll_action() {
            println!("engine: {action:?}");
            react(action, &mut inputs)?;
        }
        let Some(input) = inputs.pop_front() else {
            break;
        };
        match input {
            Input::Browse(target) => browse(&mut engine, now, &target),
            Input::TokenResponse(exchange, response) => {
                engine.handle_token_response(now, SystemTime::now(), exchange, response);
            }
            Input::Stored(flow) => engine.handle_persisted(now, flow, Ok(())),
        }
    }
    Ok(())
}

/// What the world does next.
enum Input {
    Browse(String),
    TokenResponse(ExchangeId, http::Response<Vec<u8>>),
    Stored(FlowId),
}

/// How a browser, an identity provider and a token store answer each action.
fn react(action: Action, inputs: &mut VecDeque<Input>) -> Result<(), Box<dyn std::error::Error>> {
    match action {
        Action::OpenBrowser { url, .. } => {
            let state = url
                .split("&state=")
                .nth(1)
                .and_then(|s| s.split('&').next())
                .ok_or("no state in the URL")?;
            // The browser asks for the favicon first: a fixed 404, the flow keeps waiting.
            inputs.push_back(Input::Browse("/favicon.ico".into()));
            // After the login, the provider redirects it back with the code.
            inputs.push_back(Input::Browse(format!(
                "/callback?code=SplxlOBeZQQYbYS6WxSbIA&state={state}&iss=https%3A%2F%2Fidp.example"
            )));
        }
        Action::SendTokenRequest {
            exchange, request, ..
        } => {
            // Finished as it leaves: a private_key_jwt client's assertion is signed now.
            let request = request.finish(SystemTime::now())?;
            let mut bytes = Vec::new();
            write_request(&request, &mut bytes)?;
            println!("  token request: {} bytes on the wire", bytes.len());
            let body = r#"{"access_token":"2YotnFZFEjr1zCsicMWpAA","token_type":"bearer","expires_in":"3599","refresh_token":"tGzv3JOkF0XG5Qx2TlKWIA","scope":"email offline_access"}"#;
            let raw = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let response = ResponseReader::new(1 << 20)
                .read(raw.as_bytes())?
                .ok_or("incomplete response")?;
            inputs.push_back(Input::TokenResponse(exchange, response));
        }
        Action::Persist { flow, tokens } => {
            println!(
                "  storing tokens: type {}, refresh token {}",
                tokens.token_type().as_str(),
                if tokens.refresh_token().is_some() {
                    "present"
                } else {
                    "absent"
                }
            );
            inputs.push_back(Input::Stored(flow));
        }
        Action::Respond {
            conn,
            status,
            bytes,
        } => {
            let location = String::from_utf8_lossy(&bytes)
                .lines()
                .find_map(|line| line.strip_prefix("Location: ").map(str::to_owned))
                .unwrap_or_default();
            println!("  browser connection {conn} gets {status} {location}");
        }
        Action::Close { conn } => println!("  connection {conn} closed"),
        Action::FetchKeys { request, .. } => {
            return Err(format!(
                "no ID token to verify, yet asked to fetch {}",
                request.uri()
            )
            .into());
        }
        Action::RequestDeviceCode { .. } | Action::ShowUserCode { .. } => {
            return Err("a browser login does not use the device grant".into());
        }
        Action::PushAuthorization { .. } => {
            return Err("this provider does not push its authorization requests".into());
        }
        Action::ShareFlow { .. }
        | Action::TakeFlow { .. }
        | Action::SpendFlow { .. }
        | Action::AnnounceOutcome { .. } => {
            return Err("this engine has no flow directory".into());
        }
        Action::Finished { flow, result } => match result {
            Ok(tokens) => println!("flow {flow}: signed in, {tokens:?}"),
            Err(error) => println!("flow {flow}: failed: {error}"),
        },
    }
    Ok(())
}

/// A browser GET of `target` on a new connection, split into two reads.
fn browse(engine: &mut Engine, now: Instant, target: &str) {
    let Some(conn) = engine.handle_accept(now) else {
        return;
    };
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Dest: document\r\n\r\n"
    );
    let (a, b) = request.as_bytes().split_at(request.len() / 2);
    engine.handle_bytes(now, conn, a);
    engine.handle_bytes(now, conn, b);
}

/// Demo entropy. Real drivers use the operating system's random source.
fn entropy() -> [u8; latchkey::ENTROPY_LEN] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
}
