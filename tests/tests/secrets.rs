//! S41: no secret appears in anything latchkey formats: `Debug` of every action, of the
//! engine at every step, of the configuration, and `Debug`/`Display` of every outcome.
//!
//! The core has no logger; what a driver or application would log is exactly these
//! formatted values, so they are what this test captures.

use latchkey::{Action, ClientAuth};
use latchkey_tests::harness::{self, Harness, json_response, query_value, token_request};

const CODE: &str = "code-SECRET-4f1d";
const ACCESS: &str = "at-SECRET-9a7c";
const REFRESH: &str = "rt-SECRET-c3e2";
const ID_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.idSECRET.sig";

/// Runs a whole flow, formatting everything on the way into one log.
fn logged_flow(h: &mut Harness, log: &mut String) -> Vec<String> {
    let capture = |h: &mut Harness, log: &mut String| -> Vec<Action> {
        let actions = h.drain();
        for action in &actions {
            log.push_str(&format!("{action:?}\n"));
            if let Action::Finished { result, .. } = action {
                match result {
                    Ok(tokens) => log.push_str(&format!("{tokens:?}\n")),
                    Err(error) => log.push_str(&format!("{error}\n{error:?}\n")),
                }
            }
        }
        log.push_str(&format!("{:?}\n{:?}\n", h.engine, h.engine.config()));
        actions
    };
    let started = h.start();
    log.push_str(&format!("{:?}\n", h.engine));
    let query = format!(
        "code={CODE}&state={}&iss=https%3A%2F%2Fidp.example",
        started.state
    );
    // Half a request sits in the connection's buffer while the engine is formatted.
    let request = harness::chromium_get(&format!("/callback?{query}"));
    let conn = h.engine.handle_accept(h.now).unwrap();
    h.engine
        .handle_bytes(h.now, conn, &request[..request.len() - 4]);
    capture(h, log);
    h.engine
        .handle_bytes(h.now, conn, &request[request.len() - 4..]);
    let actions = capture(h, log);
    let (exchange, request) = token_request(&actions).expect("token request");
    let verifier = query_value(
        std::str::from_utf8(request.body()).unwrap(),
        "code_verifier",
    )
    .unwrap();
    let body = format!(
        r#"{{"access_token":"{ACCESS}","token_type":"Bearer","expires_in":3600,"refresh_token":"{REFRESH}","id_token":"{ID_TOKEN}","scope":"openid email"}}"#
    );
    let response = harness::parse_response(&json_response(200, &body));
    h.engine
        .handle_token_response(h.now, h.wall, exchange, response);
    capture(h, log);
    h.engine.handle_persisted(h.now, started.flow, Ok(()));
    capture(h, log);
    vec![started.state, verifier]
}

fn assert_no_secret(log: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !log.contains(secret),
            "secret {secret:?} leaked into:\n{log}"
        );
    }
    assert!(log.contains("Finished"), "the log captured the flow");
}

#[test]
fn s41_no_secret_appears_in_any_formatted_value_of_a_whole_flow() {
    for auth in [ClientAuth::SecretBasic, ClientAuth::SecretPost] {
        let mut h = Harness::with(
            harness::config_with(harness::confidential(auth))
                .build()
                .unwrap(),
        );
        let mut log = String::new();
        let per_flow = logged_flow(&mut h, &mut log);
        let mut secrets = vec![CODE, ACCESS, REFRESH, ID_TOKEN, "s3cr3t-client"];
        secrets.extend(per_flow.iter().map(String::as_str));
        assert_no_secret(&log, &secrets);
        // The Basic credentials (base64 of id:secret) are redacted too.
        assert!(
            !log.contains("bGF0Y2hrZXktdGVzdDpzM2NyM3QtY2xpZW50"),
            "{auth:?}"
        );
    }
}

#[test]
fn s41_no_secret_appears_when_the_flow_fails() {
    let mut h = Harness::new();
    let started = h.start();
    let (_, _, _) = h.to_exchange(&started);
    let mut log = format!("{:?}", h.engine);
    let actions = h.advance(std::time::Duration::from_secs(31));
    for action in &actions {
        log.push_str(&format!("{action:?}"));
        if let Action::Finished {
            result: Err(error), ..
        } = action
        {
            log.push_str(&format!("{error}"));
        }
    }
    assert_no_secret(&log, &[&started.state, "auth-code-1"]);
}
