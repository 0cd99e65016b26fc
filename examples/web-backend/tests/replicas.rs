//! Three replicas of the web backend as separate processes, behind a round-robin proxy that
//! is their public URL, with one real `redis-server` (append-only file on) and the
//! reference identity provider, oidc-provider from npm (its `web-backend` client: access
//! tokens live 5 s, refresh tokens rotate). The replicas send their back-channel requests
//! (token, UserInfo, key set, revocation) through a recording proxy, which counts token
//! requests and yields the tokens to look for in Redis.
//!
//! The scripted browser ([`oidc_agent`]) signs in at the provider; the balancer can hold the
//! provider's redirect back (answering it itself), so that a test can deliver the callback
//! to the replica of its choice, or to several at once.
//!
//! Every wait has a deadline (the HTTP clients' own timeouts, and polling loops that give
//! up), and every process is killed when its owner is dropped.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use latchkey_devidp::agent;
use latchkey_tests::oidc::OidcProvider;
use latchkey_tests::oidc_agent::{self, Choice, LOGIN};
use latchkey_tests::redis::RedisServer;
use serde_json::Value;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_web-backend");
const CLIENT_ID: &str = "web-backend";
const SECRET: &str = "web-backend-secret";
/// How long a replica may take to answer its first request.
const START: Duration = Duration::from_secs(20);
/// How long a relayed connection may stay silent.
const RELAY_IDLE: Duration = Duration::from_secs(30);
/// The longest any polling loop waits for what it polls for.
const PATIENCE: Duration = Duration::from_secs(20);

// ----- the scenarios -----

#[test]
fn a_login_started_on_one_replica_finishes_on_another_and_a_third_sees_the_user_signed_in() {
    let world = World::start();
    let url = world.start_login(0, "ada");
    let callback = world.sign_in_held(&url, Choice::Approve);

    let answer = world.get(1, &callback);
    assert_eq!(answer.status, 303, "{}", answer.text());
    assert_eq!(answer.header("location"), Some("/"));
    assert_eq!(answer.header("cache-control"), Some("no-store"));

    let me = world.get(2, "/me?user=ada").json();
    assert_eq!(me["signed_in"], true, "{me}");
    assert_eq!(me["sub"], LOGIN, "{me}");
    // The provider's access tokens live 5 s.
    let expires_at = me["expires_at"].as_u64().expect("an expiry");
    assert!(
        (unix_now() - 30..=unix_now() + 6).contains(&expires_at),
        "{me}"
    );
    assert!(me.get("access_token").is_none() && !me.to_string().contains("eyJ"));
    // Another user of the same replicas is not signed in.
    assert_eq!(world.get(2, "/me?user=bea").json()["signed_in"], false);
    // The replica that started the login heard how it ended (through Redis pub/sub).
    world.replicas[0].wait_for_log("a login started here finished");
}

#[test]
fn s54_one_callback_at_three_replicas_at_once_makes_one_token_request_one_303_and_two_refusals() {
    let world = World::start();
    let url = world.start_login(0, "cai");
    let callback = world.sign_in_held(&url, Choice::Approve);
    let code = query_param(&callback, "code").expect("a code");

    let start = Arc::new(Barrier::new(3));
    let answers: Vec<Answer> = (0..3)
        .map(|replica| {
            let (start, address, callback) = (
                Arc::clone(&start),
                world.replicas[replica].address,
                callback.clone(),
            );
            thread::spawn(move || {
                start.wait();
                Answer::get(address, &callback)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|thread| thread.join().expect("a callback thread"))
        .collect();

    let mut statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [303, 400, 400], "{answers:#?}");
    assert_eq!(
        world
            .recorder
            .count(&["grant_type=authorization_code", &format!("code={code}")]),
        1,
        "token requests for the code"
    );
    let refusal = answers.iter().find(|answer| answer.status == 400).unwrap();
    assert!(
        refusal.text().contains("cannot be used"),
        "{}",
        refusal.text()
    );
    assert!(
        !refusal.text().contains(&code),
        "the page reflects its input"
    );
    assert_eq!(world.get(1, "/me?user=cai").json()["signed_in"], true);
}

#[test]
fn s54_a_callback_replayed_after_success_is_refused_by_every_replica() {
    let world = World::start();
    let url = world.start_login(2, "dov");
    let callback = world.sign_in_held(&url, Choice::Approve);
    let code = query_param(&callback, "code").expect("a code");
    assert_eq!(world.get(0, &callback).status, 303);

    for replica in 0..3 {
        let replay = world.get(replica, &callback);
        assert_eq!(replay.status, 400, "replica {replica}: {}", replay.text());
        assert!(!replay.text().contains(&code));
    }
    assert_eq!(
        world
            .recorder
            .count(&["grant_type=authorization_code", &format!("code={code}")]),
        1
    );
    assert_eq!(world.get(1, "/me?user=dov").json()["sub"], LOGIN);
}

#[test]
fn a_declined_sign_in_is_answered_400_and_signs_no_one_in() {
    let world = World::start();
    let url = world.start_login(1, "ema");
    let callback = world.sign_in_held(&url, Choice::Deny);
    assert!(callback.contains("error=access_denied"), "{callback}");

    let answer = world.get(2, &callback);
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(
        !answer.text().contains("access_denied"),
        "the page reflects its input"
    );
    assert_eq!(world.get(0, "/me?user=ema").json()["signed_in"], false);
    assert_eq!(world.recorder.count(&["grant_type=authorization_code"]), 0);
}

#[test]
fn logout_on_any_replica_revokes_both_tokens_and_signs_the_user_out_everywhere() {
    let world = World::start();
    world.sign_in_through_balancer("oto");
    assert_eq!(world.get(0, "/api?user=oto").status, 200);

    let logout = world.post(1, "/logout?user=oto");
    assert_eq!(logout.status, 200, "{}", logout.text());
    assert_eq!(
        logout.json(),
        serde_json::json!({
            "had_tokens": true,
            "revoked": ["refresh_token", "access_token"],
            "not_revoked": [],
            "fully_revoked": true,
        })
    );
    assert_eq!(world.recorder.count(&["POST /token/revocation "]), 2);
    for replica in 0..3 {
        let me = world.get(replica, "/me?user=oto").json();
        assert_eq!(me, serde_json::json!({ "signed_in": false }));
        let api = world.get(replica, "/api?user=oto");
        assert_eq!(api.status, 401, "replica {replica}: {}", api.text());
        assert_eq!(api.json(), serde_json::json!({ "error": "login_required" }));
    }
    let again = world.post(2, "/logout?user=oto").json();
    assert_eq!(again["had_tokens"], false, "{again}");
}

#[test]
fn s57_thirty_concurrent_api_calls_after_expiry_make_one_refresh_request_and_thirty_answers() {
    let world = World::start();
    world.sign_in_through_balancer("eve");
    world.wait_until_expired("eve");
    assert_eq!(world.recorder.count(&["grant_type=refresh_token"]), 0);
    // The refresh takes a second: every replica gets its calls while it is in flight.
    world.recorder.delay_refreshes(Duration::from_secs(1));

    let start = Arc::new(Barrier::new(30));
    let balancer = world.balancer.address();
    let answers: Vec<Answer> = (0..30)
        .map(|_| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                Answer::get(balancer, "/api?user=eve")
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|thread| thread.join().expect("an API call thread"))
        .collect();

    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json()["sub"], LOGIN);
    }
    assert_eq!(
        world.recorder.count(&["grant_type=refresh_token"]),
        1,
        "refresh requests"
    );
    let me = world.get(0, "/me?user=eve").json();
    assert!(me["expires_at"].as_u64().unwrap_or(0) >= unix_now(), "{me}");
}

#[test]
fn s58_logins_pending_while_redis_restarts_still_complete() {
    let mut world = World::start();
    let first = world.start_login(0, "fay");
    let second = world.start_login(1, "gus");
    let first_callback = world.sign_in_held(&first, Choice::Approve);
    let second_callback = world.sign_in_held(&second, Choice::Approve);

    world.redis.restart();

    // Each callback reaches a replica that did not start its login.
    let answer = world.get(2, &first_callback);
    assert_eq!(answer.status, 303, "{}", answer.text());
    let answer = world.get(0, &second_callback);
    assert_eq!(answer.status, 303, "{}", answer.text());
    for user in ["fay", "gus"] {
        let me = world.get(1, &format!("/me?user={user}")).json();
        assert_eq!(me["signed_in"], true, "{user}: {me}");
        assert_eq!(me["sub"], LOGIN);
    }
}

#[test]
fn s58_with_redis_stopped_every_replica_answers_503_without_panicking_and_recovers_after_restart() {
    let mut world = World::start();
    world.sign_in_through_balancer("hal");
    let pending = world.start_login(1, "ivy");
    let pending_callback = world.sign_in_held(&pending, Choice::Approve);

    world.redis.stop();
    for replica in 0..3 {
        let health = world.get(replica, "/healthz");
        assert_eq!(health.status, 503, "replica {replica}");
        assert_eq!(health.json()["redis"], "unreachable");
        let login = world.post(replica, "/login?user=jon");
        assert_eq!(login.status, 503, "replica {replica}: {}", login.text());
        assert_eq!(login.json(), serde_json::json!({ "error": "unavailable" }));
        let api = world.get(replica, "/api?user=hal");
        assert_eq!(api.status, 503, "replica {replica}: {}", api.text());
        assert_eq!(api.json(), serde_json::json!({ "error": "unavailable" }));
        let me = world.get(replica, "/me?user=hal");
        assert_eq!(me.status, 503, "replica {replica}: {}", me.text());
    }
    // The callback cannot be judged without Redis: "try again", and nothing is taken.
    let answer = world.get(2, &pending_callback);
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(answer.text().contains("try again"), "{}", answer.text());
    let code = query_param(&pending_callback, "code").expect("a code");
    let exchanges = |world: &World| {
        let code = format!("code={code}");
        world
            .recorder
            .count(&["grant_type=authorization_code", code.as_str()])
    };
    assert_eq!(
        exchanges(&world),
        0,
        "a token request without a taken record"
    );

    world.redis.restart();
    for replica in 0..3 {
        world.wait_for(replica, "/healthz", 200);
    }
    // The same callback works now, on another replica.
    let answer = world.get(0, &pending_callback);
    assert_eq!(answer.status, 303, "{}", answer.text());
    assert_eq!(exchanges(&world), 1);
    assert_eq!(world.get(2, "/me?user=ivy").json()["signed_in"], true);
    for replica in 0..3 {
        let api = world.get(replica, "/api?user=hal");
        assert_eq!(api.status, 200, "replica {replica}: {}", api.text());
        assert_eq!(api.json()["sub"], LOGIN);
    }
    world.sign_in_through_balancer("jon");
    for replica in &mut world.replicas {
        assert!(replica.is_running(), "a replica exited:\n{}", replica.log());
        assert!(!replica.log().contains("panicked"), "{}", replica.log());
    }
}

#[test]
fn s55_redis_holds_no_token_code_verifier_nonce_or_state_in_any_encoding() {
    let world = World::start();
    let mut urls = Vec::new();
    // A login through the balancer, one whose callback reaches another replica directly,
    // and one still pending.
    urls.push(world.sign_in_through_balancer("kim"));
    let url = world.start_login(0, "lea");
    let callback = world.sign_in_held(&url, Choice::Approve);
    assert_eq!(world.get(2, &callback).status, 303);
    urls.push(url);
    urls.push(world.start_login(1, "max"));
    // Refreshed tokens too.
    world.wait_until_expired("kim");
    assert_eq!(world.get(1, "/api?user=kim").status, 200);
    assert_eq!(world.recorder.count(&["grant_type=refresh_token"]), 1);

    let mut secrets = world.recorder.secrets();
    for url in &urls {
        for name in ["nonce", "state"] {
            let value = query_param(url, name).expect(name);
            secrets.push((name.to_owned(), value));
        }
    }
    for kind in [
        "code",
        "code_verifier",
        "access_token",
        "refresh_token",
        "id_token",
        "nonce",
        "state",
    ] {
        let count = secrets.iter().filter(|(found, _)| found == kind).count();
        let least = match kind {
            "code" | "code_verifier" => 2,
            _ => 3,
        };
        assert!(count >= least, "only {count} {kind} recorded");
    }

    let dump = world.redis.dump().expect("the values stored in Redis");
    let keys: Vec<String> = dump
        .iter()
        .map(|(key, _)| String::from_utf8_lossy(key).into_owned())
        .collect();
    for expected in [
        "latchkey:tokens:kim",
        "latchkey:tokens:lea",
        "latchkey:fence:kim",
    ] {
        assert!(keys.iter().any(|key| key == expected), "{keys:?}");
    }
    assert!(keys.iter().any(|key| key.starts_with("latchkey:flow:")));
    let leaks = scan(&dump, &secrets);
    assert!(leaks.is_empty(), "secrets found in Redis: {leaks:#?}");
}

#[test]
fn s64_no_answer_to_the_browser_carries_a_token_in_any_encoding() {
    let world = World::start();
    let user = "pia";
    let url = world.start_login(0, user);
    let callback = world.sign_in_held(&url, Choice::Approve);
    let finished = raw_exchange(world.replicas[1].address, "GET", &callback);
    assert_eq!(status_of(&finished), 303, "{}", lossy(&finished));
    let mut answers = vec![(format!("replica 1: GET {callback}"), finished)];
    // The sweep's first `/api` call refreshes, so that refreshed tokens are looked for too.
    world.wait_until_expired(user);
    answers.extend(world.browser_sweep(user, &callback, true));
    assert!(world.recorder.count(&["grant_type=refresh_token"]) >= 1);
    let logout = raw_exchange(
        world.replicas[2].address,
        "POST",
        &format!("/logout?user={user}"),
    );
    assert_eq!(status_of(&logout), 200, "{}", lossy(&logout));
    assert_eq!(json_of(&logout)["had_tokens"], true);
    answers.push((format!("replica 2: POST /logout?user={user}"), logout));
    answers.extend(world.browser_sweep(user, &callback, false));

    // Every token the provider issued: the first ones and the refreshed ones.
    let tokens: Vec<(String, String)> = world
        .recorder
        .secrets()
        .into_iter()
        .filter(|(kind, _)| ["access_token", "refresh_token", "id_token"].contains(&kind.as_str()))
        .collect();
    for (kind, least) in [("access_token", 2), ("refresh_token", 2), ("id_token", 1)] {
        let count = tokens
            .iter()
            .filter(|(found, token)| found == kind && token.len() >= 16)
            .count();
        assert!(count >= least, "only {count} {kind} recorded");
    }
    // The scan finds a token planted in an answer, raw or encoded, in its head or its body.
    for (kind, token) in &tokens {
        let token = token.as_bytes();
        for form in [
            token.to_vec(),
            STANDARD.encode(token).into_bytes(),
            URL_SAFE_NO_PAD.encode(token).into_bytes(),
            percent_encode(token).into_bytes(),
        ] {
            for planted in [
                [
                    b"HTTP/1.1 303 See Other\r\nlocation: /#t=",
                    &form[..],
                    b"\r\n\r\n",
                ]
                .concat(),
                [b"HTTP/1.1 200 OK\r\n\r\n{\"t\":\"", &form[..], b"\"}"].concat(),
            ] {
                let sample = [(b"planted".to_vec(), planted)];
                let secret = [(kind.clone(), lossy(token))];
                assert_eq!(scan(&sample, &secret).len(), 1, "{kind}: {sample:?}");
            }
        }
    }

    // Each answer as it came (head and body), and its body with any chunked coding removed.
    let dump: Vec<(Vec<u8>, Vec<u8>)> = answers
        .iter()
        .flat_map(|(label, answer)| {
            let body = body_of(answer).unwrap_or_default();
            [
                (label.clone().into_bytes(), answer.clone()),
                (label.clone().into_bytes(), body),
            ]
        })
        .collect();
    let leaks = scan(&dump, &tokens);
    assert!(
        leaks.is_empty(),
        "tokens in answers to the browser: {leaks:#?}"
    );
}

#[test]
fn startup_errors_are_one_line_with_exit_code_2_for_configuration_and_1_for_discovery() {
    let dir = tempfile::tempdir().expect("a directory");
    let keys = write_keys(dir.path());
    let bad_keys = dir.path().join("bad.keys");
    std::fs::write(&bad_keys, "k1 not-base64\n").expect("write");
    let redis = unreachable_redis();
    let nowhere = unreachable_provider();
    for (args, code, says) in [
        (
            [standalone(0, &bad_keys, &redis), endpoints(&nowhere)].concat(),
            2,
            "bad.keys: seal keys, line 1",
        ),
        (
            [
                standalone(0, &keys, "http://cache:6379"),
                endpoints(&nowhere),
            ]
            .concat(),
            2,
            "--redis",
        ),
        (
            [
                standalone(0, &keys, &redis),
                strings(&["--issuer", &nowhere]),
            ]
            .concat(),
            1,
            "discovery",
        ),
    ] {
        let (status, stderr) = run_to_exit(&args);
        assert_eq!(status, Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("web-backend: ") && stderr.contains(says),
            "{stderr}"
        );
    }
}

#[test]
fn a_replica_started_while_redis_is_down_says_503_then_serves_once_redis_answers() {
    let dir = tempfile::tempdir().expect("a directory");
    let keys = write_keys(dir.path());
    let mut redis = RedisServer::start();
    redis.stop();
    let port = free_port();
    let args = [
        standalone(port, &keys, &redis.url()),
        endpoints(&unreachable_provider()),
    ]
    .concat();
    let mut replica = Replica::start(&args, port, dir.path().join("replica.log"));
    let address = replica.address;
    assert_eq!(Answer::get(address, "/healthz").status, 503);
    let login = Answer::post(address, "/login?user=ned");
    assert_eq!(login.status, 503, "{}", login.text());

    redis.restart();
    poll_status(address, "/healthz", 200);
    let login = Answer::post(address, "/login?user=ned");
    assert_eq!(login.status, 200, "{}", login.text());
    assert!(replica.is_running(), "{}", replica.log());
}

#[test]
fn the_issuer_alone_is_enough_the_provider_is_discovered() {
    let dir = tempfile::tempdir().expect("a directory");
    let keys = write_keys(dir.path());
    let redis = RedisServer::start();
    let idp = OidcProvider::start();
    let port = free_port();
    let args = [
        standalone(port, &keys, &redis.url()),
        strings(&["--issuer", idp.issuer()]),
    ]
    .concat();
    let replica = Replica::start(&args, port, dir.path().join("replica.log"));
    let login = Answer::post(replica.address, "/login?user=ned").json();
    let url = login["authorization_url"].as_str().expect("a URL");
    assert!(url.starts_with(&format!("{}/auth?", idp.issuer())), "{url}");
    assert_eq!(query_param(url, "client_id").as_deref(), Some(CLIENT_ID));
    assert!(query_param(url, "scope").is_some_and(|scope| scope == "openid"));
}

#[test]
fn users_that_cannot_be_store_keys_are_refused_with_400() {
    let dir = tempfile::tempdir().expect("a directory");
    let keys = write_keys(dir.path());
    let port = free_port();
    let args = [
        standalone(port, &keys, &unreachable_redis()),
        endpoints(&unreachable_provider()),
    ]
    .concat();
    let replica = Replica::start(&args, port, dir.path().join("replica.log"));
    let long = format!("/me?user={}", "u".repeat(129));
    for (method, target, error) in [
        ("GET", "/me", "user_required"),
        ("GET", "/api?user=", "user_required"),
        ("POST", "/login", "user_required"),
        ("POST", "/logout?user=%00x", "invalid_user"),
        ("GET", "/api?user=a%0Ab", "invalid_user"),
        ("GET", long.as_str(), "invalid_user"),
    ] {
        let answer = match method {
            "GET" => Answer::get(replica.address, target),
            _ => Answer::post(replica.address, target),
        };
        assert_eq!(answer.status, 400, "{method} {target}: {}", answer.text());
        assert_eq!(answer.json()["error"], error, "{method} {target}");
    }
}

#[test]
fn the_secret_scan_finds_every_encoding_it_looks_for() {
    let secret = "eyJhbGciOiJSUzI1NiJ9.eyJub25jZSI6Im4ifQ.c2lnbmF0dXJlLWJ5dGVz".to_owned();
    let secrets = vec![("id_token".to_owned(), secret.clone())];
    for encoded in encodings(secret.as_bytes()) {
        let mut value = b"lk1 sealed ".to_vec();
        value.extend_from_slice(&encoded);
        let dump = vec![(b"latchkey:tokens:x".to_vec(), value)];
        assert_eq!(scan(&dump, &secrets).len(), 1, "{encoded:?}");
    }
    let clean = vec![(b"latchkey:tokens:x".to_vec(), b"lk1 sealed".to_vec())];
    assert!(scan(&clean, &secrets).is_empty());
}

// ----- the world: Redis, the provider, the recorder, the balancer, three replicas -----

/// Everything a scenario runs against; every process ends when it is dropped.
struct World {
    replicas: Vec<Replica>,
    balancer: Balancer,
    recorder: Recorder,
    redis: RedisServer,
    _idp: OidcProvider,
    _dir: TempDir,
}

impl World {
    fn start() -> World {
        let redis = RedisServer::start();
        let idp = OidcProvider::start();
        let issuer = idp.issuer().to_owned();
        let recorder = Recorder::start(address_of(&issuer));
        let back = format!("http://{}", recorder.address());
        let balancer = Balancer::start();
        let dir = tempfile::tempdir().expect("a directory");
        let keys = write_keys(dir.path());
        let secret = dir.path().join("client-secret");
        std::fs::write(&secret, format!("{SECRET}\n")).expect("write the client secret");
        let replicas: Vec<Replica> = (0..3)
            .map(|index| {
                let port = free_port();
                let args = strings(&[
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--public-url",
                    &format!("http://{}", balancer.address()),
                    "--redis",
                    &redis.url(),
                    "--seal-key-file",
                    keys.to_str().expect("a UTF-8 path"),
                    "--issuer",
                    &issuer,
                    // The browser goes to the provider itself; the back channel through
                    // the recorder.
                    "--authorization-endpoint",
                    &format!("{issuer}/auth"),
                    "--token-endpoint",
                    &format!("{back}/token"),
                    "--jwks-uri",
                    &format!("{back}/jwks"),
                    "--userinfo-endpoint",
                    &format!("{back}/me"),
                    "--revocation-endpoint",
                    &format!("{back}/token/revocation"),
                    "--client-id",
                    CLIENT_ID,
                    "--client-secret-file",
                    secret.to_str().expect("a UTF-8 path"),
                    "--scope",
                    "openid profile",
                    // The provider's access tokens live 5 s.
                    "--refresh-margin",
                    "1",
                ]);
                Replica::start(&args, port, dir.path().join(format!("replica-{index}.log")))
            })
            .collect();
        balancer.serve(replicas.iter().map(|replica| replica.address).collect());
        World {
            replicas,
            balancer,
            recorder,
            redis,
            _idp: idp,
            _dir: dir,
        }
    }

    fn get(&self, replica: usize, target: &str) -> Answer {
        Answer::get(self.replicas[replica].address, target)
    }

    fn post(&self, replica: usize, target: &str) -> Answer {
        Answer::post(self.replicas[replica].address, target)
    }

    /// `POST /login?user=…` on `replica`: the authorization URL.
    fn start_login(&self, replica: usize, user: &str) -> String {
        let answer = self.post(replica, &format!("/login?user={user}"));
        assert_eq!(answer.status, 200, "{}", answer.text());
        let url = answer.json()["authorization_url"]
            .as_str()
            .expect("an authorization URL")
            .to_owned();
        assert!(
            url.contains("nonce=") && url.contains("code_challenge="),
            "{url}"
        );
        url
    }

    /// Signs in at `url` (approving or declining as `choice` says) with the balancer
    /// holding the provider's redirect back: the callback's path and query, delivered to
    /// no replica yet.
    fn sign_in_held(&self, url: &str, choice: Choice) -> String {
        self.balancer.hold.store(true, Ordering::SeqCst);
        let hops = oidc_agent::sign_in(url, choice);
        self.balancer.hold.store(false, Ordering::SeqCst);
        let hops = hops.expect("signing in at the provider");
        let redirect_uri = format!("http://{}/callback", self.balancer.address());
        let hop = oidc_agent::callback(&hops, &redirect_uri).expect("the provider's redirect");
        assert_eq!(hop.status, 204, "the balancer held the callback: {hops:#?}");
        hop.url
            .strip_prefix(&format!("http://{}", self.balancer.address()))
            .expect("the public URL")
            .to_owned()
    }

    /// A whole login through the public URL, as users do: `POST /login` and the callback
    /// both reach whichever replica the balancer picks. The authorization URL.
    fn sign_in_through_balancer(&self, user: &str) -> String {
        let balancer = self.balancer.address();
        let answer = Answer::post(balancer, &format!("/login?user={user}"));
        assert_eq!(answer.status, 200, "{}", answer.text());
        let url = answer.json()["authorization_url"]
            .as_str()
            .expect("an authorization URL")
            .to_owned();
        let hops = oidc_agent::sign_in(&url, Choice::Approve).expect("signing in");
        let redirect_uri = format!("http://{balancer}/callback");
        let hop = oidc_agent::callback(&hops, &redirect_uri).expect("the provider's redirect");
        assert_eq!(hop.status, 303, "{hops:#?}");
        assert_eq!(hop.location, Some(format!("http://{balancer}/")));
        url
    }

    /// Waits until `user`'s access token has expired, as `/me` tells.
    fn wait_until_expired(&self, user: &str) {
        let me = self.get(0, &format!("/me?user={user}")).json();
        let expires_at = me["expires_at"].as_u64().expect("an expiry");
        assert!(
            expires_at <= unix_now() + 10,
            "a short-lived access token: {me}"
        );
        let deadline = Instant::now() + PATIENCE;
        while unix_now() <= expires_at {
            assert!(Instant::now() < deadline, "the access token never expired");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `target` on `replica` until it answers `status`.
    fn wait_for(&self, replica: usize, target: &str, status: u16) {
        poll_status(self.replicas[replica].address, target, status);
    }

    /// Every method at every route the browser can reach, and at paths and methods that
    /// are no route, on every replica: `(what was asked, the answer as it came)`. The
    /// routes are asked for `user`, whose login `callback` already finished (it is
    /// replayed), with and without `user` signed in (`POST /logout` only once signed out,
    /// so that the sweep does not sign them out).
    fn browser_sweep(&self, user: &str, callback: &str, signed_in: bool) -> Vec<(String, Vec<u8>)> {
        const METHODS: [&str; 8] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
        ];
        let mut answers = Vec::new();
        for (replica, address) in self
            .replicas
            .iter()
            .map(|replica| replica.address)
            .enumerate()
        {
            // A callback with the state of a real pending login and a made-up code.
            let pending = self.start_login(replica, "forger");
            let state = query_param(&pending, "state").expect("a state");
            let mut targets: Vec<String> = [
                "/",
                "/me?user={user}",
                "/api?user={user}",
                "/healthz",
                "/login?user={user}",
                "/logout?user={user}",
                "/callback",
                "/callback?code=forged&state=forged",
                "/token?user={user}",
                "/tokens/{user}",
                "/me/token?user={user}",
                "/api/token?user={user}",
                "/.well-known/openid-configuration",
                "/%2e%2e/me?user={user}",
            ]
            .iter()
            .map(|target| target.replace("{user}", user))
            .collect();
            targets.push(callback.to_owned());
            targets.push(format!("/callback?code=forged&state={state}"));
            for target in &targets {
                let path = target.split('?').next().unwrap_or_default();
                let route = match path {
                    "/" | "/me" | "/api" | "/healthz" | "/callback" => Some("GET"),
                    "/login" | "/logout" => Some("POST"),
                    _ => None,
                };
                for method in METHODS {
                    if signed_in && method == "POST" && path == "/logout" {
                        continue;
                    }
                    let answer = raw_exchange(address, method, target);
                    let status = status_of(&answer);
                    let asked = format!("replica {replica}: {method} {target}");
                    match route {
                        None => assert_eq!(status, 404, "{asked}: {}", lossy(&answer)),
                        Some(allowed)
                            if method != allowed && !(method == "HEAD" && allowed == "GET") =>
                        {
                            assert_eq!(status, 405, "{asked}: {}", lossy(&answer));
                        }
                        Some(_) if method == "GET" && path == "/api" => {
                            let expected = if signed_in { 200 } else { 401 };
                            assert_eq!(status, expected, "{asked}: {}", lossy(&answer));
                        }
                        Some(_) if method == "GET" && path == "/me" => {
                            assert_eq!(json_of(&answer)["signed_in"], signed_in, "{asked}");
                        }
                        Some(_) => assert!(status >= 200, "{asked}: {}", lossy(&answer)),
                    }
                    answers.push((asked, answer));
                }
            }
        }
        answers
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if thread::panicking() {
            for (index, replica) in self.replicas.iter().enumerate() {
                eprintln!("----- replica {index} -----\n{}", replica.log());
            }
        }
    }
}

/// The seal key file: one random key.
fn write_keys(dir: &Path) -> PathBuf {
    let mut key = [0; 32];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut key))
        .expect("random bytes");
    let path = dir.join("seal.keys");
    std::fs::write(&path, format!("k1 {}\n", STANDARD.encode(key))).expect("write the keys");
    path
}

/// The arguments of a replica on its own, listening on `port` (0 for tests that expect it
/// to stop before it listens).
fn standalone(port: u16, keys: &Path, redis: &str) -> Vec<String> {
    strings(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--public-url",
        "http://127.0.0.1:8080",
        "--client-id",
        CLIENT_ID,
        "--seal-key-file",
        keys.to_str().expect("a UTF-8 path"),
        "--redis",
        redis,
    ])
}

/// Explicit endpoints at `issuer` (no discovery, nothing asked at startup).
fn endpoints(issuer: &str) -> Vec<String> {
    strings(&[
        "--issuer",
        issuer,
        "--authorization-endpoint",
        &format!("{issuer}/auth"),
        "--token-endpoint",
        &format!("{issuer}/token"),
        "--jwks-uri",
        &format!("{issuer}/jwks"),
    ])
}

/// A provider URL where nothing listens.
fn unreachable_provider() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// A Redis URL where nothing listens.
fn unreachable_redis() -> String {
    format!("redis://127.0.0.1:{}", free_port())
}

/// One `web-backend` process; killed when dropped.
struct Replica {
    child: Child,
    address: SocketAddr,
    log: PathBuf,
}

impl Replica {
    /// Starts the binary with `args` (listening on `port`), its stderr in `log`, and waits
    /// until it answers.
    fn start(args: &[String], port: u16, log: PathBuf) -> Replica {
        let child = Command::new(BINARY)
            .args(args)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("a log file"))
            .spawn()
            .expect("start web-backend");
        let mut replica = Replica {
            child,
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            log,
        };
        let deadline = Instant::now() + START;
        while TcpStream::connect_timeout(&replica.address, Duration::from_millis(200)).is_err() {
            assert!(
                replica.is_running(),
                "web-backend exited:\n{}",
                replica.log()
            );
            assert!(
                Instant::now() < deadline,
                "web-backend did not listen:\n{}",
                replica.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        replica
    }

    /// Waits until the replica's log says `text`.
    fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "never logged {text:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary until it exits (within [`START`]): its exit code and stderr.
fn run_to_exit(args: &[String]) -> (Option<i32>, String) {
    let mut child = Command::new(BINARY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start web-backend");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + START;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for web-backend") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("web-backend {args:?} did not exit");
        }
        thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap_or_default())
}

// ----- HTTP from the tests' side -----

/// One response from a replica or the balancer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn get(address: SocketAddr, target: &str) -> Answer {
        Answer::from(
            agent::get(&format!("http://{address}{target}"), &[]),
            target,
        )
    }

    fn post(address: SocketAddr, target: &str) -> Answer {
        Answer::from(
            agent::post(&format!("http://{address}{target}"), &[], b""),
            target,
        )
    }

    fn from(response: std::io::Result<agent::Response>, target: &str) -> Answer {
        let (status, headers, body) =
            response.unwrap_or_else(|error| panic!("{target}: no answer: {error}"));
        Answer {
            status,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text()))
    }
}

/// `method target` as a browser sends it (no body), and the answer as it came: head and
/// body, bytes for bytes.
fn raw_exchange(address: SocketAddr, method: &str, target: &str) -> Vec<u8> {
    let asked = format!("{method} {target}");
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .unwrap_or_else(|error| panic!("{asked}: cannot connect: {error}"));
    let _ = stream.set_read_timeout(Some(PATIENCE));
    let _ = stream.set_write_timeout(Some(PATIENCE));
    let length = match method {
        "POST" | "PUT" | "PATCH" | "DELETE" => "Content-Length: 0\r\n",
        _ => "",
    };
    let request =
        format!("{asked} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{length}\r\n");
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|error| panic!("{asked}: cannot send: {error}"));
    let mut answer = Vec::new();
    if let Err(error) = stream.read_to_end(&mut answer) {
        panic!("{asked}: no whole answer ({error}): {}", lossy(&answer));
    }
    answer
}

/// The status of a raw answer; 0 when it is not an HTTP/1.1 answer.
fn status_of(answer: &[u8]) -> u16 {
    answer
        .strip_prefix(b"HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

/// The JSON body of a raw answer.
fn json_of(answer: &[u8]) -> Value {
    let body = body_of(answer).unwrap_or_default();
    serde_json::from_slice(&body).unwrap_or_else(|_| panic!("not JSON: {}", lossy(answer)))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Polls `target` at `address` until it answers `status`.
fn poll_status(address: SocketAddr, target: &str, status: u16) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = Answer::get(address, target);
        if answer.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{target} still answers {}: {}",
            answer.status,
            answer.text()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

// ----- relays: the balancer and the recorder -----

/// A loopback listener that hands each connection to `serve` on a thread of its own;
/// it stops accepting when dropped.
struct Relay {
    address: SocketAddr,
    stopped: Arc<AtomicBool>,
}

impl Relay {
    fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Relay {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        let stopped = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stopped);
        let serve = Arc::new(serve);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let serve = Arc::clone(&serve);
                thread::spawn(move || serve(stream));
            }
        });
        Relay { address, stopped }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees it should stop.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
    }
}

/// The load balancer, the replicas' public URL: one replica per connection, in turn, by
/// plain TCP forwarding. While `hold` is set it answers the provider's redirect back
/// (`GET /callback?…`) itself with 204, so that the test can deliver it.
struct Balancer {
    relay: Relay,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    hold: Arc<AtomicBool>,
}

impl Balancer {
    fn start() -> Balancer {
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let hold = Arc::new(AtomicBool::new(false));
        let next = AtomicUsize::new(0);
        let (serving, holding) = (Arc::clone(&backends), Arc::clone(&hold));
        let relay = Relay::start(move |mut client| {
            let head = read_head(&mut client);
            if holding.load(Ordering::SeqCst) && head.starts_with(b"GET /callback?") {
                let _ = client.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
                return;
            }
            let backend = {
                let backends = serving.lock().unwrap_or_else(PoisonError::into_inner);
                if backends.is_empty() {
                    return;
                }
                backends[next.fetch_add(1, Ordering::SeqCst) % backends.len()]
            };
            forward(client, backend, &head, None, Duration::ZERO);
        });
        Balancer {
            relay,
            backends,
            hold,
        }
    }

    fn address(&self) -> SocketAddr {
        self.relay.address
    }

    fn serve(&self, backends: Vec<SocketAddr>) {
        *self.backends.lock().unwrap_or_else(PoisonError::into_inner) = backends;
    }
}

/// Both directions of one relayed connection.
#[derive(Default)]
struct Exchange {
    request: Vec<u8>,
    response: Vec<u8>,
}

/// A proxy in front of the provider's back channel that keeps a copy of every request and
/// response, one of each per connection: it adds `connection: close` to every request, and
/// latchkey's HTTP client keeps no connection the server closes.
struct Recorder {
    relay: Relay,
    exchanges: Arc<Mutex<Vec<Arc<Mutex<Exchange>>>>>,
    /// How long the provider's answers to refresh requests are held back.
    refresh_delay: Arc<Mutex<Duration>>,
}

impl Recorder {
    fn start(upstream: SocketAddr) -> Recorder {
        let exchanges: Arc<Mutex<Vec<Arc<Mutex<Exchange>>>>> = Arc::default();
        let refresh_delay: Arc<Mutex<Duration>> = Arc::default();
        let (recording, delaying) = (Arc::clone(&exchanges), Arc::clone(&refresh_delay));
        let relay = Relay::start(move |mut client| {
            // The provider is asked to close after its answer, so that the client opens a
            // connection per request and each recorded exchange is one of them.
            let head = close_after_answer(&read_head(&mut client));
            let exchange = Arc::new(Mutex::new(Exchange::default()));
            lock(&recording).push(Arc::clone(&exchange));
            let delay = *lock(&delaying);
            forward(client, upstream, &head, Some(exchange), delay);
        });
        Recorder {
            relay,
            exchanges,
            refresh_delay,
        }
    }

    /// Holds the provider's answers to refresh requests back for `delay` from now on.
    fn delay_refreshes(&self, delay: Duration) {
        *lock(&self.refresh_delay) = delay;
    }

    fn address(&self) -> SocketAddr {
        self.relay.address
    }

    /// Copies of the exchanges so far.
    fn exchanges(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        lock(&self.exchanges)
            .iter()
            .map(|exchange| {
                let exchange = lock(exchange);
                (exchange.request.clone(), exchange.response.clone())
            })
            .collect()
    }

    /// How many requests contain every one of `needles`.
    fn count(&self, needles: &[&str]) -> usize {
        self.exchanges()
            .iter()
            .filter(|(request, _)| {
                needles
                    .iter()
                    .all(|needle| contains(request, needle.as_bytes()))
            })
            .count()
    }

    /// Every code, verifier and refresh token the replicas sent, and every token the
    /// provider issued: `(kind, value)`.
    fn secrets(&self) -> Vec<(String, String)> {
        let mut secrets = Vec::new();
        for (request, response) in self.exchanges() {
            if let Some(body) = body_of(&request) {
                for (name, value) in form_fields(&String::from_utf8_lossy(&body)) {
                    if ["code", "code_verifier", "refresh_token"].contains(&name.as_str()) {
                        secrets.push((name, value));
                    }
                }
            }
            let Some(body) = body_of(&response) else {
                continue;
            };
            if let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(&body) {
                for name in ["access_token", "refresh_token", "id_token"] {
                    if let Some(token) = answer.get(name).and_then(Value::as_str) {
                        secrets.push((name.to_owned(), token.to_owned()));
                    }
                }
            }
        }
        secrets
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `head` with `connection: close` after its request line.
fn close_after_answer(head: &[u8]) -> Vec<u8> {
    let Some(line_end) = head.windows(2).position(|pair| pair == b"\r\n") else {
        return head.to_vec();
    };
    let (line, rest) = head.split_at(line_end + 2);
    [line, b"connection: close\r\n", rest].concat()
}

/// Reads a request's head (through the blank line), or what came before the connection
/// went quiet.
fn read_head(client: &mut TcpStream) -> Vec<u8> {
    let _ = client.set_read_timeout(Some(RELAY_IDLE));
    let mut head = Vec::new();
    let mut buffer = [0; 4096];
    while !contains(&head, b"\r\n\r\n") && head.len() < 64 * 1024 {
        match client.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
    }
    head
}

/// Relays `client` to `upstream` (`head`, already read, first) and back until both sides
/// are done; `record` keeps a copy of each direction, and the answer to a refresh request
/// it records is held back for `refresh_delay`.
fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    head: &[u8],
    record: Option<Arc<Mutex<Exchange>>>,
    refresh_delay: Duration,
) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        return;
    };
    for stream in [&client, &server] {
        let _ = stream.set_read_timeout(Some(RELAY_IDLE));
        let _ = stream.set_write_timeout(Some(RELAY_IDLE));
    }
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let recording = record.clone();
    let head = head.to_vec();
    let upload = thread::spawn(move || {
        if let Some(record) = &recording {
            lock(record).request.extend_from_slice(&head);
        }
        if server_out.write_all(&head).is_ok() {
            pump(&mut client_in, &mut server_out, |bytes| {
                if let Some(record) = &recording {
                    lock(record).request.extend_from_slice(bytes);
                }
            });
        }
        let _ = server_out.shutdown(Shutdown::Write);
    });
    let (mut server_in, mut client_out) = (server, client);
    let mut answered = false;
    pump(&mut server_in, &mut client_out, |bytes| {
        if let Some(record) = &record {
            let mut exchange = lock(record);
            // A slow refresh, so that every replica asks while it is in flight.
            if !answered && contains(&exchange.request, b"grant_type=refresh_token") {
                drop(exchange);
                thread::sleep(refresh_delay);
                exchange = lock(record);
            }
            answered = true;
            exchange.response.extend_from_slice(bytes);
        }
    });
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = upload.join();
}

/// Copies `from` to `to` until either ends, showing every piece to `seen` first.
fn pump(from: &mut TcpStream, to: &mut TcpStream, mut seen: impl FnMut(&[u8])) {
    let mut buffer = [0; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                seen(&buffer[..read]);
                if to.write_all(&buffer[..read]).is_err() {
                    return;
                }
            }
        }
    }
}

// ----- reading what was recorded -----

/// The body of an HTTP/1.1 message (chunked coding removed).
fn body_of(message: &[u8]) -> Option<Vec<u8>> {
    let end = message
        .windows(4)
        .position(|window| window == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&message[..end]).to_ascii_lowercase();
    let body = &message[end + 4..];
    let chunked = head
        .split("\r\n")
        .any(|line| line.starts_with("transfer-encoding:") && line.contains("chunked"));
    Some(if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    })
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = bytes.windows(2).position(|window| window == b"\r\n") {
        let size = String::from_utf8_lossy(&bytes[..end]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16);
        let Ok(size) = size else { break };
        let start = end + 2;
        if size == 0 || bytes.len() < start + size {
            break;
        }
        body.extend_from_slice(&bytes[start..start + size]);
        bytes = &bytes[(start + size + 2).min(bytes.len())..];
    }
    body
}

/// `application/x-www-form-urlencoded` fields, decoded.
fn form_fields(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (percent_decode(name), percent_decode(value)))
        .collect()
}

/// The value of `name` in `url`'s query.
fn query_param(url: &str, name: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    form_fields(query)
        .into_iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => decoded.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                let digits = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
                match digits.and_then(|digits| u8::from_str_radix(digits, 16).ok()) {
                    Some(byte) => {
                        decoded.push(byte);
                        index += 2;
                    }
                    None => decoded.push(b'%'),
                }
            }
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

// ----- the scan for secrets -----

/// Every form `secret` could take in a stored value: as it is, in standard and URL-safe
/// base64 (with and without padding), in hex (both cases) and percent-encoded; and for a
/// value that is itself base64url (a verifier, each part of a JWT), the bytes it encodes,
/// raw and in hex.
fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![secret.to_vec()];
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        forms.push(engine.encode(secret).into_bytes());
    }
    forms.push(hex(secret).into_bytes());
    forms.push(hex(secret).to_uppercase().into_bytes());
    forms.push(percent_encode(secret).into_bytes());
    for part in secret.split(|byte| *byte == b'.') {
        if let Ok(decoded) = URL_SAFE_NO_PAD.decode(part)
            && decoded.len() >= 16
        {
            forms.push(hex(&decoded).into_bytes());
            forms.push(decoded);
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

/// Where each secret (in each encoding) occurs in `dump`'s keys and values: `(kind, key)`.
fn scan(dump: &[(Vec<u8>, Vec<u8>)], secrets: &[(String, String)]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (kind, secret) in secrets {
        for form in encodings(secret.as_bytes()) {
            for (key, value) in dump {
                if contains(key, &form) || contains(value, &form) {
                    found.push((kind.clone(), String::from_utf8_lossy(key).into_owned()));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

// ----- small things -----

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|&item| item.to_owned()).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// `host:port` of an `http://host:port` URL.
fn address_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("an http://IP:PORT URL")
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}
