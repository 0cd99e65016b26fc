//! Logins shared by replicas, through the running drivers: three services, each with its
//! own engine, share a flow directory and a token store the way replicas behind a load
//! balancer share Redis (here the in-process [`MemoryDirectory`], which keeps the same
//! contract; `latchkey-redis` has its own tests against a real server). The development
//! identity provider issues real codes and verified ID tokens; the provider's redirect is
//! handed to whichever replica the test picks, as a load balancer would.
//!
//! Every scenario runs on both drivers ([`on_both_drivers!`]).

#[macro_use]
mod support;

use support::within;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use latchkey::directory::{Announcement, DirectoryError, FlowKey, FlowRecord, Taken};
use latchkey::{
    Config, FlowError, FlowOptions, Provider, Rejection, SessionOptions, StoreError, TokenSet,
};
use latchkey_devidp::{DevIdp, agent};
use latchkey_io::directory::{FlowDirectory, Listener, MemoryDirectory};
use latchkey_io::runtime::Runtime;
use latchkey_io::service::{Error, Login, LoginEvent, Service, ServiceOptions};
use latchkey_io::source::TokenSource;
use latchkey_io::store::{KeySetCache, MemoryStore, TokenStore};
use secrecy::{ExposeSecret, SecretString};

const CLIENT_ID: &str = "replicated-backend";
const SECRET: &str = "replicated-secret";
const STEP: Duration = Duration::from_secs(5);
const SCENARIO: Duration = Duration::from_secs(20);

on_both_drivers!(
    SCENARIO;
    s54_a_login_started_on_one_replica_finishes_on_another,
    s54_one_callback_at_three_replicas_at_once_makes_one_token_request,
    a_login_that_fails_on_another_replica_fails_where_it_started,
    s58_a_directory_that_cannot_be_reached_fails_clearly_and_loses_nothing,
    a_replica_started_later_verifies_with_the_keys_another_fetched,
    a_token_source_verifies_a_refreshed_id_token_with_the_shared_keys,
    s61_a_dpop_login_pushed_on_one_replica_is_bound_on_another,
);

/// Key sets shared in memory, as in Redis.
#[derive(Default)]
struct SharedKeySets(std::sync::Mutex<Option<Vec<u8>>>);

impl KeySetCache for SharedKeySets {
    fn save(&self, document: &[u8]) -> Result<(), StoreError> {
        *self.0.lock().expect("not poisoned") = Some(document.to_vec());
        Ok(())
    }

    fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.lock().expect("not poisoned").clone())
    }
}

/// A flow directory that can be switched off, as Redis going away.
#[derive(Clone, Default)]
struct Switchable {
    inner: MemoryDirectory,
    down: Arc<AtomicBool>,
}

impl Switchable {
    fn check(&self) -> Result<(), StoreError> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(StoreError::new("the directory is down")),
            false => Ok(()),
        }
    }
}

impl FlowDirectory for Switchable {
    fn share(
        &self,
        key: &FlowKey,
        record: &FlowRecord,
        lifetime: Duration,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.share(key, record, lifetime)
    }

    fn take(&self, key: &FlowKey) -> Result<Taken, StoreError> {
        self.check()?;
        self.inner.take(key)
    }

    fn spend(&self, key: &FlowKey) -> Result<(), StoreError> {
        self.check()?;
        self.inner.spend(key)
    }

    fn announce(&self, announcement: &Announcement) -> Result<(), StoreError> {
        self.check()?;
        self.inner.announce(announcement)
    }

    fn listen(&self, listener: Listener) -> Result<(), StoreError> {
        self.inner.listen(listener)
    }
}

/// Three replicas of one backend and the identity provider they log users in with.
struct Replicas<R: Runtime> {
    idp: DevIdp,
    replicas: Vec<Service<R>>,
    store: Arc<MemoryStore>,
    directory: Switchable,
    key_sets: Arc<SharedKeySets>,
    config: Config,
}

impl<R: Runtime> Replicas<R> {
    fn start(rt: &R) -> Replicas<R> {
        Replicas::start_with(rt, false)
    }

    /// With `sender_constrained`, the provider takes pushed requests only (RFC 9126) and
    /// binds tokens to DPoP keys with nonces (RFC 9449), and the backend does both.
    fn start_with(rt: &R, sender_constrained: bool) -> Replicas<R> {
        // The public URL users reach the backend by: nothing needs to listen there, the
        // test hands each redirect to a replica itself.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}/callback");
        let client = latchkey_devidp::Client {
            id: CLIENT_ID.into(),
            secret: Some(SECRET.into()),
            auth: latchkey_devidp::ClientAuth::Basic,
            redirect_uris: vec![redirect_uri.clone()],
        };
        let mut idp_config = latchkey_devidp::Config::new(vec![client]);
        idp_config.dpop_nonce = sender_constrained;
        idp_config.require_pushed_authorization_requests = sender_constrained;
        let idp = DevIdp::start(idp_config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("start the identity provider");
        let mut provider = Provider::builder(
            idp.authorization_endpoint(),
            idp.token_endpoint(),
            CLIENT_ID,
        )
        .client_secret(SecretString::from(SECRET))
        .scopes(["openid", "profile"])
        .issuer(idp.issuer())
        .jwks_uri(idp.jwks_uri())
        .crypto(latchkey_io::crypto::ring());
        if sender_constrained {
            provider = provider
                .dpop(latchkey::oidc::Algorithm::ES256)
                .pushed_authorization_request_endpoint(idp.pushed_authorization_request_endpoint())
                .push_authorization_requests(true);
        }
        let provider = provider.build().expect("provider");
        let config = Config::builder(provider)
            .web_redirect_uri(&redirect_uri)
            .build()
            .expect("config");
        let mut fx = Replicas {
            idp,
            replicas: Vec::new(),
            store: Arc::new(MemoryStore::default()),
            directory: Switchable::default(),
            key_sets: Arc::default(),
            config,
        };
        for _ in 0..3 {
            fx.add_replica(rt);
        }
        fx
    }

    /// Starts one more replica sharing everything with the others.
    fn add_replica(&mut self, rt: &R) {
        let options = ServiceOptions::new(self.store.clone(), support::transport())
            .with_directory(Arc::new(self.directory.clone()))
            .with_key_sets(self.key_sets.clone());
        let replica =
            Service::unbound(rt.clone(), self.config.clone(), options).expect("a replica");
        self.replicas.push(replica);
    }

    /// Requests for the provider's key set so far.
    fn key_set_fetches(&self) -> usize {
        let jwks = self.idp.jwks_uri();
        let path = jwks.trim_start_matches(&self.idp.base_url());
        self.idp
            .requests()
            .iter()
            .filter(|request| request.target == path)
            .count()
    }

    /// Starts a shared login for `user` on replica `on`; the provider's redirect (the
    /// callback URL the browser would follow) comes back with it.
    async fn login(&self, rt: &R, on: usize, user: &str) -> (Login, String) {
        let login = within(
            rt,
            STEP,
            "a shared login starts",
            self.replicas[on].start_shared(FlowOptions::new().owner(user)),
        )
        .await
        .expect("a shared login");
        let url = format!(
            "{}&login_hint={user}",
            login.url().expect("an authorization URL")
        );
        let (status, fields, _) = rt
            .unblock(move || agent::get(&url, &[]))
            .await
            .expect("the provider answers");
        assert_eq!(status, 303, "{fields:?}");
        let callback = fields
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("location"))
            .map(|(_, value)| value.clone())
            .expect("a redirect to the callback");
        (login, callback)
    }

    fn stored(&self, user: &str) -> Option<TokenSet> {
        self.store.load(user).expect("the store")
    }

    async fn shutdown(self, rt: &R) {
        for replica in self.replicas {
            within(rt, STEP, "a replica stops", replica.shutdown()).await;
        }
    }
}

/// How `login` ends, within [`STEP`].
async fn finished<R: Runtime>(rt: &R, login: &Login) -> Result<TokenSet, FlowError> {
    support::outcome(&support::events(rt, login, STEP).await)
}

/// S54 and the outcome's way back: a login started on replica 0 whose redirect reaches
/// replica 1 is adopted there (one token request, tokens verified and stored under the
/// user), replica 0's login resolves with the same tokens, and replica 2 sees the user
/// signed in. A replay of the callback anywhere is refused and changes nothing.
async fn s54_a_login_started_on_one_replica_finishes_on_another<R: Runtime>(rt: R) {
    let fx = Replicas::start(&rt);
    let (login, callback) = fx.login(&rt, 0, "alice").await;

    let tokens = within(
        &rt,
        STEP,
        "replica 1 completes",
        fx.replicas[1].complete(&callback),
    )
    .await
    .expect("replica 1 completes the login");
    assert_eq!(
        tokens.identity().map(|identity| identity.sub()),
        Some("alice"),
        "the ID token was verified on the adopting replica"
    );
    let started_here = finished(&rt, &login)
        .await
        .expect("replica 0's login resolves");
    assert_eq!(
        started_here.access_token().expose_secret(),
        tokens.access_token().expose_secret()
    );
    let stored = fx.stored("alice").expect("tokens stored under the user");
    assert_eq!(
        stored.access_token().expose_secret(),
        tokens.access_token().expose_secret()
    );
    assert_eq!(fx.idp.stats().token_requests, 1);

    for replica in &fx.replicas {
        let replay = within(&rt, STEP, "a replay", replica.complete(&callback)).await;
        assert!(
            matches!(
                replay,
                Err(Error::Callback(Rejection::AlreadyUsed))
                    | Err(Error::Flow(FlowError::Directory(DirectoryError::Refused(
                        Rejection::AlreadyUsed
                    ))))
            ),
            "{replay:?}"
        );
    }
    assert_eq!(
        fx.idp.stats().token_requests,
        1,
        "replays reach no provider"
    );
    fx.shutdown(&rt).await;
}

/// S61 across replicas: a login whose request is pushed (RFC 9126) and whose tokens are
/// DPoP-bound starts on replica 0; its record carries the login's key, so replica 1, which
/// gets the redirect, proves that key (answering the provider's nonce) and the tokens are
/// bound to it, for replica 0's login and in the shared store alike.
async fn s61_a_dpop_login_pushed_on_one_replica_is_bound_on_another<R: Runtime>(rt: R) {
    let fx = Replicas::start_with(&rt, true);
    let (login, callback) = fx.login(&rt, 0, "carol").await;
    let url = login.url().expect("an authorization URL");
    assert!(url.contains("request_uri="), "{url}");
    assert!(!url.contains("state="), "pushed: {url}");
    assert_eq!(fx.idp.stats().pushed_authorizations, 1);

    let tokens = within(
        &rt,
        STEP,
        "replica 1 completes",
        fx.replicas[1].complete(&callback),
    )
    .await
    .expect("replica 1 completes the DPoP login");
    assert_eq!(*tokens.token_type(), latchkey::TokenType::DPoP);
    let key = tokens.dpop_key().expect("bound to the login's key");
    let thumbprint = latchkey::keys::Signer::new(key.clone(), latchkey_io::crypto::ring())
        .expect("a usable key")
        .thumbprint()
        .to_owned();
    let stats = fx.idp.stats();
    assert!(stats.dpop_nonce_challenges >= 1, "{stats:?}");
    assert_eq!(
        (stats.token_requests, stats.tokens_issued),
        (2, 1),
        "{stats:?}"
    );
    // The code was bound to the URL's key; the token request proved the same one.
    let proofs: Vec<String> = fx
        .idp
        .requests()
        .iter()
        .filter(|request| request.target == "/token")
        .filter_map(|request| request.header("dpop").map(str::to_owned))
        .collect();
    assert_eq!(proofs.len(), 2, "one proof per attempt");
    for proof in &proofs {
        let header = proof.split('.').next().unwrap_or_default();
        let header: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .expect("base64url"),
        )
        .expect("a JSON header");
        let jwk = match &header["jwk"] {
            serde_json::Value::Object(jwk) => jwk.clone(),
            other => panic!("a jwk: {other}"),
        };
        let public = latchkey::keys::Signer::new(key.clone(), latchkey_io::crypto::ring())
            .expect("a usable key")
            .public_jwk()
            .clone();
        assert_eq!(jwk, public, "the login's key");
    }
    let started_here = finished(&rt, &login)
        .await
        .expect("replica 0's login resolves");
    assert_eq!(
        started_here.access_token().expose_secret(),
        tokens.access_token().expose_secret()
    );
    let stored = fx.stored("carol").expect("tokens stored under the user");
    let stored_key = stored.dpop_key().expect("stored with the key");
    assert_eq!(stored_key.pkcs8_der(), key.pkcs8_der());
    // The provider's view: the access token is bound to that key (`cnf.jkt`).
    let credentials = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{CLIENT_ID}:{SECRET}"),
    );
    let introspection = fx.idp.introspection_endpoint();
    let body = format!("token={}", tokens.access_token().expose_secret());
    let (status, _, answer) = rt
        .unblock(move || {
            agent::post(
                &introspection,
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Authorization", &format!("Basic {credentials}")),
                ],
                body.as_bytes(),
            )
        })
        .await
        .expect("the provider answers");
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("JSON");
    assert_eq!(answer["active"], true);
    assert_eq!(answer["cnf"]["jkt"], thumbprint.as_str());
    fx.shutdown(&rt).await;
}

/// S54: the same callback handed to the three replicas at once gives one token request,
/// one success and two refusals "already used".
async fn s54_one_callback_at_three_replicas_at_once_makes_one_token_request<R: Runtime>(rt: R) {
    let fx = Replicas::start(&rt);
    let (login, callback) = fx.login(&rt, 2, "bob").await;
    let outcomes = within(
        &rt,
        STEP,
        "three replicas at once",
        futures_lite::future::zip(
            fx.replicas[0].complete(&callback),
            futures_lite::future::zip(
                fx.replicas[1].complete(&callback),
                fx.replicas[2].complete(&callback),
            ),
        ),
    )
    .await;
    let (a, (b, c)) = outcomes;
    let outcomes = [a, b, c];
    let successes = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    assert_eq!(successes, 1, "{outcomes:?}");
    for refused in outcomes.iter().filter_map(|outcome| outcome.as_ref().err()) {
        assert!(
            matches!(
                refused,
                Error::Callback(Rejection::AlreadyUsed)
                    | Error::Flow(FlowError::Directory(DirectoryError::Refused(
                        Rejection::AlreadyUsed
                    )))
            ),
            "{refused:?}"
        );
    }
    assert_eq!(fx.idp.stats().token_requests, 1);
    assert!(finished(&rt, &login).await.is_ok());
    fx.shutdown(&rt).await;
}

/// A login whose callback carries the provider's error, handed to another replica: it
/// fails there, and the replica that started it hears why.
async fn a_login_that_fails_on_another_replica_fails_where_it_started<R: Runtime>(rt: R) {
    let fx = Replicas::start(&rt);
    fx.idp.set_deny(true);
    let (login, callback) = fx.login(&rt, 0, "carol").await;
    let adopted = within(&rt, STEP, "replica 1", fx.replicas[1].complete(&callback)).await;
    assert!(
        matches!(adopted, Err(Error::Flow(FlowError::Denied(_)))),
        "{adopted:?}"
    );
    let started_here = finished(&rt, &login).await;
    assert!(
        matches!(&started_here, Err(FlowError::FailedElsewhere(reason)) if reason.contains("access_denied")),
        "{started_here:?}"
    );
    assert_eq!(fx.idp.stats().token_requests, 0);
    assert!(fx.stored("carol").is_none());
    fx.shutdown(&rt).await;
}

/// S58: with the directory unreachable a shared login cannot start (a clear error, no URL
/// handed out), and a callback cannot be adopted (no token request, nothing taken); once
/// the directory is back, the very same callback completes the login.
async fn s58_a_directory_that_cannot_be_reached_fails_clearly_and_loses_nothing<R: Runtime>(rt: R) {
    let fx = Replicas::start(&rt);
    fx.directory.down.store(true, Ordering::SeqCst);
    let refused = within(
        &rt,
        STEP,
        "a start without the directory",
        fx.replicas[0].start_shared(FlowOptions::new().owner("dave")),
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(Error::Flow(FlowError::Directory(
                DirectoryError::Unavailable(_)
            )))
        ),
        "{refused:?}"
    );

    fx.directory.down.store(false, Ordering::SeqCst);
    let (login, callback) = fx.login(&rt, 0, "dave").await;
    fx.directory.down.store(true, Ordering::SeqCst);
    let unavailable = within(&rt, STEP, "a callback", fx.replicas[1].complete(&callback)).await;
    assert!(
        matches!(
            unavailable,
            Err(Error::Flow(FlowError::Directory(
                DirectoryError::Unavailable(_)
            )))
        ),
        "{unavailable:?}"
    );
    assert_eq!(
        fx.idp.stats().token_requests,
        0,
        "no token request without the record"
    );

    fx.directory.down.store(false, Ordering::SeqCst);
    let tokens = within(
        &rt,
        STEP,
        "the same callback",
        fx.replicas[1].complete(&callback),
    )
    .await
    .expect("the login completes once the directory is back");
    let started_here = finished(&rt, &login).await.expect("the login resolves");
    assert_eq!(
        started_here.access_token().expose_secret(),
        tokens.access_token().expose_secret()
    );
    assert_eq!(fx.idp.stats().token_requests, 1);
    assert!(matches!(
        login.next_event().await,
        None | Some(LoginEvent::Finished(_))
    ));
    fx.shutdown(&rt).await;
}

/// The key-set cache: replica 0 fetches the provider's keys to verify a login's ID token
/// and shares them; a replica started afterwards takes them in at start, and verifies
/// the next login's ID token without fetching them again.
async fn a_replica_started_later_verifies_with_the_keys_another_fetched<R: Runtime>(rt: R) {
    let mut fx = Replicas::start(&rt);
    let (login, callback) = fx.login(&rt, 0, "erin").await;
    within(
        &rt,
        STEP,
        "replica 0 completes",
        fx.replicas[0].complete(&callback),
    )
    .await
    .expect("the login completes");
    assert!(finished(&rt, &login).await.is_ok());
    assert_eq!(fx.key_set_fetches(), 1);
    assert!(fx.key_sets.load().expect("memory").is_some(), "shared");

    // The new replica reads the shared keys as it starts.
    fx.add_replica(&rt);
    let (login, callback) = fx.login(&rt, 3, "frank").await;
    let tokens = within(
        &rt,
        STEP,
        "replica 3 completes",
        fx.replicas[3].complete(&callback),
    )
    .await
    .expect("the login completes");
    assert_eq!(
        tokens.identity().map(|identity| identity.sub()),
        Some("frank")
    );
    assert!(finished(&rt, &login).await.is_ok());
    assert_eq!(fx.key_set_fetches(), 1, "the shared keys served");
    fx.shutdown(&rt).await;
}

/// The key-set cache serves token sources too: a login's keys, shared by the replica that
/// fetched them, verify the ID token a refresh brings on any replica without a fetch; a
/// fetch a source makes itself is shared in turn.
async fn a_token_source_verifies_a_refreshed_id_token_with_the_shared_keys<R: Runtime>(rt: R) {
    let fx = Replicas::start(&rt);
    let (login, callback) = fx.login(&rt, 0, "grace").await;
    within(
        &rt,
        STEP,
        "replica 0 completes",
        fx.replicas[0].complete(&callback),
    )
    .await
    .expect("the login completes");
    assert!(finished(&rt, &login).await.is_ok());
    assert_eq!(fx.key_set_fetches(), 1);

    let source = TokenSource::with(
        rt.clone(),
        fx.config.provider().clone(),
        fx.store.clone(),
        support::transport(),
        "grace",
        SessionOptions::default(),
    )
    .expect("a token source");
    source.share_key_sets(fx.key_sets.clone());
    let before = fx.stored("grace").expect("stored");
    let fresh = within(&rt, STEP, "a refresh", source.refresh())
        .await
        .expect("refreshed");
    assert_ne!(
        fresh.access_token().expose_secret(),
        before.access_token().expose_secret()
    );
    assert_ne!(
        fresh.id_token().map(ExposeSecret::expose_secret),
        before.id_token().map(ExposeSecret::expose_secret),
        "the refresh brought a new ID token"
    );
    assert_eq!(
        fresh.identity().map(|identity| identity.sub()),
        Some("grace")
    );
    assert_eq!(fx.key_set_fetches(), 1, "verified with the shared keys");

    // A source with an empty cache fetches, and shares what it fetched.
    *fx.key_sets.0.lock().expect("not poisoned") = None;
    let other = TokenSource::with(
        rt.clone(),
        fx.config.provider().clone(),
        fx.store.clone(),
        support::transport(),
        "grace",
        SessionOptions::default(),
    )
    .expect("a token source");
    other.share_key_sets(fx.key_sets.clone());
    within(&rt, STEP, "another refresh", other.refresh())
        .await
        .expect("refreshed");
    assert_eq!(fx.key_set_fetches(), 2);
    // Shared once the fetch's answer is in, by the job that carried it.
    let deadline = rt.now() + STEP;
    while fx.key_sets.load().expect("memory").is_none() {
        assert!(
            rt.now() < deadline,
            "the fetched keys shared again within {STEP:?}"
        );
        rt.sleep_until(rt.now() + Duration::from_millis(10)).await;
    }
    fx.shutdown(&rt).await;
}
