//! After the login, against the development identity provider over real HTTP: discovery
//! finds the provider from its issuer (S9), a refresh rotates the refresh token, and
//! replaying a rotated one gets `invalid_grant`, which latchkey reports as "login
//! required" (S42), after which the provider has revoked the whole grant; logging out
//! revokes the tokens (S44). The drivers' token source refreshes once for a hundred
//! concurrent callers, stores before it hands out, deletes what the provider refuses
//! (S42), and carries on from the token file after a restart.
//!
//! The dev IdP's quirks shape its refresh answers too, as the real providers do: a GitHub
//! App's refresh (form body without `Accept: application/json`, `bad_refresh_token` with
//! HTTP 200 for a rotated-out token, which is "login required" like `invalid_grant`), a
//! GitHub OAuth App's refusal of any refresh, Entra's string `expires_in`, and answers
//! without `token_type`.

// The helpers that drive a bare session; this file runs no scenario on both drivers.
#[allow(dead_code, unused_macros)]
#[macro_use]
mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use latchkey::IdTokenError;
use latchkey::oidc::UserInfoError;
use latchkey::{
    ClientAuth, Config, FlowOptions, Landing, LogoutReport, NotRevoked, Provider, RefreshError,
    RevocationError, SessionError, SessionOptions, TokenKind, TokenSet, TokenType,
};
use latchkey_devidp::{DevIdp, Forgery, Quirk, agent};
use latchkey_io::http::{HttpClient, HttpOptions};
use latchkey_io::runtime::Runtime;
use latchkey_io::service::ServiceOptions;
use latchkey_io::source::{TokenSource, UserInfoFetchError};
use latchkey_io::store::{DEFAULT_KEY, FileStore, MemoryStore, TokenStore};
use latchkey_io::transport::{TokenResult, TokenTransport, Transport};
use secrecy::{ExposeSecret, SecretString};
use smol::future;

const CLIENT_ID: &str = "lifecycle";
const SECRET: &str = "lifecycle-secret";

/// The lifetime the IdP gives access tokens ([`latchkey_devidp::Config::new`]'s default).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The identity provider, with one confidential client redirecting to any loopback port.
fn idp() -> DevIdp {
    idp_with(Quirk::None)
}

/// [`idp`], imitating a real provider's `quirk`.
fn idp_with(quirk: Quirk) -> DevIdp {
    let client = latchkey_devidp::Client {
        id: CLIENT_ID.into(),
        secret: Some(SECRET.into()),
        auth: latchkey_devidp::ClientAuth::Basic,
        redirect_uris: vec!["http://127.0.0.1/callback".into()],
    };
    let mut config = latchkey_devidp::Config::new(vec![client]);
    config.quirk = quirk;
    assert_eq!(config.token_lifetime, TOKEN_LIFETIME);
    DevIdp::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("start the identity provider")
}

fn http() -> HttpClient {
    HttpClient::new(HttpOptions::default()).expect("an HTTP client")
}

/// The provider, found from the issuer alone.
fn discovered(idp: &DevIdp) -> Provider {
    let transport = Transport::Builtin(http());
    let metadata = smol::block_on(latchkey_io::discovery::metadata(
        &latchkey_smol::Smol,
        &transport,
        &idp.issuer(),
    ))
    .expect("trusted metadata");
    // `openid profile` from an OpenID provider; GitHub (which has no ID tokens) gets `repo`.
    let scopes: &[&str] = match metadata.string("jwks_uri") {
        Some(_) => &["openid", "profile"],
        None => &["repo"],
    };
    metadata
        .provider(CLIENT_ID)
        .expect("a provider description")
        .crypto(latchkey_io::crypto::ring())
        .client_secret(SecretString::from(SECRET))
        .client_auth(ClientAuth::SecretBasic)
        .scopes(scopes.iter().copied())
        .build()
        .expect("a valid provider")
}

/// A whole login through the smol driver, the dev IdP's agent as the browser.
fn login(provider: Provider) -> TokenSet {
    login_into(provider, Arc::new(MemoryStore::default()))
}

/// [`login`], the tokens stored in `store` under [`DEFAULT_KEY`].
fn login_into(provider: Provider, store: Arc<dyn TokenStore>) -> TokenSet {
    smol::block_on(async {
        let config = Config::builder(provider)
            .redirect_uri("127.0.0.1", 0, "/callback")
            .on_success(Landing::Redirect("docker-desktop://dashboard/open".into()))
            .build()
            .expect("a valid configuration");
        let options = ServiceOptions::new(store, Transport::Builtin(http()));
        let service = latchkey_smol::serve(config, options).expect("a service");
        let login = service.start(FlowOptions::new()).expect("a login");
        let url = login.url().expect("a browser login").to_owned();
        let browsing = smol::unblock(move || agent::browse(&url));
        let finished = future::or(async { Some(login.finished().await) }, async {
            smol::Timer::after(Duration::from_secs(10)).await;
            None
        });
        let tokens = finished
            .await
            .expect("the login ends in time")
            .expect("tokens");
        browsing.await.expect("the browser got its answer");
        service.shutdown().await;
        tokens
    })
}

/// A forced refresh of `tokens` through a bare session (its own store), on this thread.
fn refresh(provider: &Provider, tokens: &TokenSet) -> Result<TokenSet, RefreshError> {
    let client = http();
    support::refresh_with(provider, tokens, |request| {
        support::send_blocking(&client, &request)
    })
}

/// A logout of `tokens` through a bare session (its own store), on this thread: the refresh
/// token, then the access token, revoked at the provider.
fn logout(provider: &Provider, tokens: &TokenSet) -> LogoutReport {
    let client = http();
    support::logout_with(provider, tokens, |request| {
        support::send_blocking(&client, &request)
    })
}

fn secret(value: Option<&SecretString>) -> &str {
    value.map(ExposeSecret::expose_secret).unwrap_or_default()
}

#[test]
fn s9_discovery_describes_the_provider_from_its_issuer() {
    let idp = idp();
    let provider = discovered(&idp);
    assert_eq!(provider.issuer(), Some(idp.issuer().as_str()));
    assert_eq!(provider.token_endpoint(), idp.token_endpoint().as_str());
    assert_eq!(
        provider.revocation_endpoint().map(ToString::to_string),
        Some(idp.revocation_endpoint())
    );
}

#[test]
fn s44_logging_out_revokes_the_tokens_at_the_provider() {
    let idp = idp();
    let provider = discovered(&idp);
    let tokens = login(provider.clone());
    assert!(idp.access_token_active(tokens.access_token().expose_secret()));
    let report = logout(&provider, &tokens);
    assert_eq!(
        report.not_revoked, None,
        "a revocation endpoint: {report:?}"
    );
    assert_eq!(
        support::revoked_kinds(&report),
        [TokenKind::RefreshToken, TokenKind::AccessToken],
        "refresh token, then access token"
    );
    for (kind, outcome) in &report.revocations {
        assert_eq!(outcome, &Ok(()), "{kind:?}");
    }
    assert!(!idp.access_token_active(tokens.access_token().expose_secret()));
    let after = refresh(&provider, &tokens).expect_err("the grant is gone");
    assert!(after.login_required(), "{after:?}");
}

#[test]
fn s42_a_refresh_rotates_and_a_replayed_refresh_token_means_login_required() {
    let idp = idp();
    let provider = discovered(&idp);
    let first = login(provider.clone());
    assert!(
        first.refresh_token().is_some(),
        "the IdP issues refresh tokens"
    );

    let second = refresh(&provider, &first).expect("a fresh token set");
    assert_ne!(
        second.access_token().expose_secret(),
        first.access_token().expose_secret()
    );
    assert_ne!(secret(second.refresh_token()), "");
    assert_ne!(
        secret(second.refresh_token()),
        secret(first.refresh_token()),
        "rotated"
    );
    assert!(second.expires_at().is_some());
    assert_eq!(second.scope(), first.scope());

    // The rotated-out token again: the provider sees a replay and revokes the grant.
    let replay = refresh(&provider, &first).expect_err("a replayed refresh token");
    assert!(
        matches!(&replay, RefreshError::LoginRequired(error) if error.code == "invalid_grant"),
        "{replay:?}"
    );
    assert!(replay.login_required());
    // The newest refresh token went with the grant.
    let after = refresh(&provider, &second).expect_err("the grant is revoked");
    assert!(after.login_required(), "{after:?}");
}

/// The IdP, its provider found by discovery, a memory store, and the tokens a login stored
/// there.
fn logged_in() -> (DevIdp, Provider, Arc<MemoryStore>, TokenSet) {
    logged_in_with(Quirk::None)
}

/// [`logged_in`] at an IdP imitating `quirk`.
fn logged_in_with(quirk: Quirk) -> (DevIdp, Provider, Arc<MemoryStore>, TokenSet) {
    let idp = idp_with(quirk);
    let provider = discovered(&idp);
    let store = Arc::new(MemoryStore::default());
    let tokens = login_into(provider.clone(), store.clone());
    (idp, provider, store, tokens)
}

fn source(provider: &Provider, store: Arc<dyn TokenStore>) -> TokenSource<latchkey_smol::Smol> {
    TokenSource::new(
        latchkey_smol::Smol,
        provider.clone(),
        store,
        Transport::Builtin(http()),
    )
}

/// What `n` callers asking `source` for tokens at once get; `meanwhile` runs once they
/// all have asked.
fn at_once<R: Runtime>(
    source: &TokenSource<R>,
    n: usize,
    meanwhile: impl std::future::Future<Output = ()>,
) -> Vec<TokenSet> {
    smol::block_on(async {
        let callers: Vec<_> = (0..n).map(|_| smol::spawn(source.tokens())).collect();
        meanwhile.await;
        let mut handed_out = Vec::new();
        for caller in callers {
            handed_out.push(caller.await.expect("fresh tokens"));
        }
        handed_out
    })
}

/// Checks that the IdP saw one token request since `before`, and that every caller got
/// the set stored; returns it.
fn one_refresh_served_all(
    idp: &DevIdp,
    before: usize,
    store: &MemoryStore,
    handed_out: &[TokenSet],
) -> TokenSet {
    assert_eq!(
        idp.stats().token_requests - before,
        1,
        "one refresh for all"
    );
    let stored = store.load(DEFAULT_KEY).expect("readable").expect("stored");
    for tokens in handed_out {
        assert_eq!(
            tokens.access_token().expose_secret(),
            stored.access_token().expose_secret(),
            "every caller got the stored, refreshed set"
        );
    }
    stored
}

#[test]
fn s42_the_token_source_refreshes_once_for_a_hundred_callers_and_stores_first() {
    let (idp, provider, store, tokens) = logged_in();
    // Make the stored access token expire now: the next caller must refresh.
    let expiring = tokens.with_expires_at(SystemTime::now());
    store.save(DEFAULT_KEY, &expiring).expect("stored");
    let before = idp.stats().token_requests;

    let source = source(&provider, store.clone());
    let handed_out = at_once(&source, 100, async {});
    let stored = one_refresh_served_all(&idp, before, &store, &handed_out);
    assert_ne!(
        stored.access_token().expose_secret(),
        expiring.access_token().expose_secret()
    );
    assert_ne!(
        secret(stored.refresh_token()),
        secret(expiring.refresh_token())
    );
    assert!(idp.access_token_active(stored.access_token().expose_secret()));
}

#[test]
fn a_restarted_program_carries_on_from_the_token_file() {
    let idp = idp();
    let provider = discovered(&idp);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tokens.json");
    let tokens = login_into(provider.clone(), Arc::new(FileStore::new(&path)));

    // Another run: a new store and source on the same file.
    let source = source(&provider, Arc::new(FileStore::new(&path)));
    let before = idp.stats().token_requests;
    let valid = smol::block_on(source.tokens()).expect("the stored tokens");
    assert_eq!(
        valid.access_token().expose_secret(),
        tokens.access_token().expose_secret()
    );
    assert_eq!(
        idp.stats().token_requests,
        before,
        "still valid: no refresh"
    );
    let fresh = smol::block_on(source.refresh()).expect("a forced refresh");
    let reread = FileStore::new(&path)
        .load(DEFAULT_KEY)
        .expect("readable")
        .expect("stored");
    assert_eq!(
        reread.access_token().expose_secret(),
        fresh.access_token().expose_secret()
    );
    assert_eq!(
        secret(reread.refresh_token()),
        secret(fresh.refresh_token())
    );
}

#[test]
fn s42_a_refused_refresh_deletes_the_stored_tokens() {
    let (_idp, provider, store, tokens) = logged_in();
    // The grant ends elsewhere (another device logged out, say).
    let report = logout(&provider, &tokens);
    assert!(
        report.fully_revoked() && !report.revocations.is_empty(),
        "revoked: {report:?}"
    );
    let error = smol::block_on(source(&provider, store.clone()).refresh())
        .expect_err("the provider refuses");
    assert!(error.login_required(), "{error:?}");
    assert!(matches!(
        error,
        SessionError::Refresh(RefreshError::LoginRequired(_))
    ));
    assert!(store.load(DEFAULT_KEY).expect("readable").is_none());
    let again = smol::block_on(source(&provider, store).tokens()).expect_err("nothing stored");
    assert_eq!(again, SessionError::NotLoggedIn);
}

/// A store whose next `failures` saves fail, as a full disk would.
struct FailingSaves {
    inner: Arc<MemoryStore>,
    failures: std::sync::atomic::AtomicUsize,
}

impl TokenStore for FailingSaves {
    fn save(&self, key: &str, tokens: &TokenSet) -> Result<(), latchkey::StoreError> {
        use std::sync::atomic::Ordering;
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(latchkey::StoreError::new(
                "writing the token file: disk full",
            ));
        }
        self.inner.save(key, tokens)
    }

    fn load(&self, key: &str) -> Result<Option<TokenSet>, latchkey::StoreError> {
        self.inner.load(key)
    }

    fn delete(&self, key: &str) -> Result<(), latchkey::StoreError> {
        self.inner.delete(key)
    }
}

#[test]
fn s42_refreshed_tokens_the_store_refused_are_kept_and_stored_first_next_time() {
    let (idp, provider, memory, tokens) = logged_in();
    let store = Arc::new(FailingSaves {
        inner: Arc::clone(&memory),
        failures: 2.into(),
    });
    let source = source(&provider, store);
    let before = idp.stats().token_requests;
    // The provider rotates; the store refuses the fresh set, twice.
    let error = smol::block_on(source.refresh()).expect_err("the store refuses");
    assert!(matches!(error, SessionError::Store(_)), "{error:?}");
    let error = smol::block_on(source.tokens()).expect_err("the store refuses again");
    assert!(matches!(error, SessionError::Store(_)), "{error:?}");
    assert_eq!(idp.stats().token_requests - before, 1, "no second refresh");
    let stale = memory.load(DEFAULT_KEY).expect("readable").expect("stored");
    assert_eq!(
        secret(stale.refresh_token()),
        secret(tokens.refresh_token())
    );

    // The store works again: the kept set is stored first, then handed out.
    let kept = smol::block_on(source.tokens()).expect("the kept tokens");
    assert_eq!(
        idp.stats().token_requests - before,
        1,
        "still no second refresh"
    );
    assert_ne!(secret(kept.refresh_token()), secret(tokens.refresh_token()));
    let stored = memory.load(DEFAULT_KEY).expect("readable").expect("stored");
    assert_eq!(secret(stored.refresh_token()), secret(kept.refresh_token()));
    // Its refresh token is the live one: the next refresh works (the retired one would
    // have been a replay, and the provider would have revoked the grant).
    let next = smol::block_on(source.refresh()).expect("refreshed with the kept token");
    assert!(idp.access_token_active(next.access_token().expose_secret()));
}

#[test]
fn the_token_source_refreshes_on_tokio_too() {
    let (_idp, provider, store, tokens) = logged_in();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let source = latchkey_tokio::TokenSource::new(
        latchkey_tokio::Tokio,
        provider,
        store.clone(),
        Transport::Builtin(http()),
    );
    let fresh = runtime
        .block_on(source.refresh())
        .expect("a refresh on tokio");
    assert_ne!(
        fresh.access_token().expose_secret(),
        tokens.access_token().expose_secret()
    );
    let stored = store.load(DEFAULT_KEY).expect("readable").expect("stored");
    assert_eq!(
        stored.access_token().expose_secret(),
        fresh.access_token().expose_secret()
    );
}

#[test]
fn s44_the_token_source_logs_out_at_the_provider_and_deletes_the_tokens() {
    let (idp, provider, store, tokens) = logged_in();
    let report = smol::block_on(source(&provider, store.clone()).logout()).expect("logged out");
    assert!(report.had_tokens);
    assert!(report.fully_revoked(), "{report:?}");
    assert_eq!(
        support::revoked_kinds(&report),
        [TokenKind::RefreshToken, TokenKind::AccessToken]
    );
    assert!(store.load(DEFAULT_KEY).expect("readable").is_none());
    assert!(!idp.access_token_active(tokens.access_token().expose_secret()));
    // Nothing stored: nothing to do.
    let again = smol::block_on(source(&provider, store).logout()).expect("still fine");
    assert_eq!(again, LogoutReport::default());
}

#[test]
fn s44_a_failed_revocation_still_deletes_the_tokens_and_is_reported() {
    let (idp, _provider, store, tokens) = logged_in();
    // The same provider, but its revocation endpoint is somewhere nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let dead_port = dead.local_addr().expect("address").port();
    drop(dead);
    let unreachable = Provider::builder(
        idp.authorization_endpoint(),
        idp.token_endpoint(),
        CLIENT_ID,
    )
    .client_secret(SecretString::from(SECRET))
    .client_auth(ClientAuth::SecretBasic)
    .revocation_endpoint(format!("http://127.0.0.1:{dead_port}/revoke"))
    .build()
    .expect("a valid provider");
    let report = smol::block_on(source(&unreachable, store.clone()).logout()).expect("logged out");
    assert!(!report.fully_revoked());
    assert!(
        report
            .revocations
            .iter()
            .all(|(_, outcome)| matches!(outcome, Err(RevocationError::Transport(_)))),
        "{report:?}"
    );
    assert!(
        store.load(DEFAULT_KEY).expect("readable").is_none(),
        "deleted anyway"
    );
    assert!(idp.access_token_active(tokens.access_token().expose_secret()));

    // A provider without a revocation endpoint: deleted, and the report says why not revoked.
    let store = Arc::new(MemoryStore::default());
    store.save(DEFAULT_KEY, &tokens).expect("stored");
    let plain = Provider::builder(
        idp.authorization_endpoint(),
        idp.token_endpoint(),
        CLIENT_ID,
    )
    .client_secret(SecretString::from(SECRET))
    .build()
    .expect("a valid provider");
    let report = smol::block_on(source(&plain, store.clone()).logout()).expect("logged out");
    assert_eq!(report.not_revoked, Some(NotRevoked::NoEndpoint));
    assert!(store.load(DEFAULT_KEY).expect("readable").is_none());
}

// ---- the quirks of real providers, in refresh answers ------------------------------------

/// Refreshes `tokens` and checks what every quirk must still give: a new access token the
/// IdP accepts, a rotated refresh token, and an expiry [`TOKEN_LIFETIME`] after the answer
/// (so the answer's `expires_in` was understood, not carried over or dropped).
fn refresh_and_check_rotation(idp: &DevIdp, provider: &Provider, tokens: &TokenSet) -> TokenSet {
    let before = SystemTime::now();
    let fresh = refresh(provider, tokens).expect("a fresh token set");
    let after = SystemTime::now();
    assert_rotated(idp, tokens, &fresh);
    let expires_at = fresh.expires_at().expect("expires_in understood");
    assert!(
        before + TOKEN_LIFETIME <= expires_at && expires_at <= after + TOKEN_LIFETIME,
        "{expires_at:?} is not {TOKEN_LIFETIME:?} after the answer"
    );
    fresh
}

fn assert_rotated(idp: &DevIdp, old: &TokenSet, new: &TokenSet) {
    assert_ne!(
        new.access_token().expose_secret(),
        old.access_token().expose_secret()
    );
    assert!(idp.access_token_active(new.access_token().expose_secret()));
    assert_ne!(secret(new.refresh_token()), "", "a refresh token");
    assert_ne!(
        secret(new.refresh_token()),
        secret(old.refresh_token()),
        "rotated"
    );
}

#[test]
fn github_app_refresh_rotates_the_refresh_token_and_sets_the_expiry() {
    let idp = idp_with(Quirk::GitHubApp);
    let provider = discovered(&idp);
    let first = login(provider.clone());
    assert!(first.refresh_token().is_some() && first.expires_at().is_some());

    let second = refresh_and_check_rotation(&idp, &provider, &first);
    // GitHub's shape reached latchkey: the refresh token's lifetime, an empty scope.
    assert_eq!(
        second.extra().get("refresh_token_expires_in"),
        Some(&serde_json::Value::from(15_897_600))
    );
    assert_eq!(second.scope(), Some(""));
    // And again with the rotated token: rotation is not a one-off.
    refresh_and_check_rotation(&idp, &provider, &second);
}

#[test]
fn github_app_refresh_answered_in_a_form_body_is_understood() {
    let idp = idp_with(Quirk::GitHubApp);
    let provider = discovered(&idp);
    let first = login(provider.clone());
    // An embedder's HTTP client that drops `Accept: application/json` gets GitHub's form body.
    let client = http();
    let mut content_type = None;
    let before = SystemTime::now();
    let second = support::refresh_with(&provider, &first, |mut request| {
        assert!(request.headers_mut().remove(http::header::ACCEPT).is_some());
        let response =
            support::send_blocking(&client, &request).expect("the token endpoint answered");
        let received = response.headers()[http::header::CONTENT_TYPE]
            .to_str()
            .expect("ASCII");
        content_type = Some(received.to_owned());
        Ok(response)
    })
    .expect("a form-encoded refresh answer");
    let content_type = content_type.expect("a refresh request was sent");
    assert!(
        content_type.starts_with("application/x-www-form-urlencoded"),
        "{content_type}"
    );
    assert_rotated(&idp, &first, &second);
    let expires_at = second.expires_at().expect("expires_in understood");
    assert!(expires_at >= before + TOKEN_LIFETIME, "{expires_at:?}");
    assert_eq!(
        second.extra().get("refresh_token_expires_in"),
        Some(&serde_json::Value::from("15897600")),
        "form values are strings"
    );
}

#[test]
fn s42_github_app_replayed_refresh_token_at_http_200_means_login_required() {
    let idp = idp_with(Quirk::GitHubApp);
    let provider = discovered(&idp);
    let first = login(provider.clone());
    refresh_and_check_rotation(&idp, &provider, &first);

    let client = http();
    let mut status = None;
    let error = support::refresh_with(&provider, &first, |request| {
        let response =
            support::send_blocking(&client, &request).expect("the token endpoint answered");
        status = Some(response.status());
        Ok(response)
    })
    .expect_err("a rotated-out refresh token");
    assert_eq!(
        status.expect("a refresh request was sent"),
        200,
        "GitHub refuses with HTTP 200"
    );
    assert!(
        matches!(&error, RefreshError::LoginRequired(error) if error.code == "bad_refresh_token"),
        "{error:?}"
    );
    assert!(error.login_required());
}

#[test]
fn s42_github_app_the_token_source_deletes_tokens_whose_refresh_token_was_rotated_out() {
    let (idp, provider, store, stored) = logged_in_with(Quirk::GitHubApp);
    // Another copy of the program refreshed first; this one still holds the old set.
    refresh_and_check_rotation(&idp, &provider, &stored);

    let error = smol::block_on(source(&provider, store.clone()).refresh())
        .expect_err("the provider refuses the rotated-out refresh token");
    assert!(
        matches!(
            &error,
            SessionError::Refresh(RefreshError::LoginRequired(error))
                if error.code == "bad_refresh_token"
        ),
        "{error:?}"
    );
    assert!(error.login_required());
    assert!(
        store.load(DEFAULT_KEY).expect("readable").is_none(),
        "the dead tokens are deleted"
    );
    let again = smol::block_on(source(&provider, store).tokens()).expect_err("nothing stored");
    assert_eq!(again, SessionError::NotLoggedIn);
}

#[test]
fn github_oauth_app_tokens_have_no_refresh_token_and_any_refresh_means_login_required() {
    let idp = idp_with(Quirk::GitHub);
    let provider = discovered(&idp);
    let tokens = login(provider.clone());
    assert!(tokens.refresh_token().is_none() && tokens.expires_at().is_none());
    assert_eq!(
        refresh(&provider, &tokens).expect_err("nothing to refresh with"),
        RefreshError::NoRefreshToken
    );
    // A refresh token from elsewhere: the OAuth App refuses it the GitHub way.
    let foreign = tokens.with_refresh_token(SecretString::from("ghr_not_issued_here"));
    let error = refresh(&provider, &foreign).expect_err("refused");
    assert!(
        matches!(&error, RefreshError::LoginRequired(error) if error.code == "bad_refresh_token"),
        "{error:?}"
    );
}

#[test]
fn entra_refresh_with_string_expiry_rotates_and_sets_the_expiry() {
    let idp = idp_with(Quirk::EntraStringExpiry);
    let provider = discovered(&idp);
    let first = login(provider.clone());
    let second = refresh_and_check_rotation(&idp, &provider, &first);
    assert_eq!(
        second.extra().get("ext_expires_in"),
        Some(&serde_json::Value::from("3600")),
        "Entra's extra lifetime is kept as sent"
    );
    assert!(!second.token_type_defaulted());
}

#[test]
fn refresh_without_token_type_defaults_to_bearer_and_rotates() {
    let idp = idp_with(Quirk::NoTokenType);
    let provider = discovered(&idp);
    let first = login(provider.clone());
    assert!(first.token_type_defaulted());
    let second = refresh_and_check_rotation(&idp, &provider, &first);
    assert_eq!(second.token_type(), &TokenType::Bearer);
    assert!(
        second.token_type_defaulted(),
        "the refresh answer named no type"
    );
}

// ---- the token source's rules in time: deadlines, margins, waiting callers ----------------

/// An embedder's transport that holds every request until the test opens the gate.
struct Gated {
    client: HttpClient,
    gate: smol::channel::Receiver<()>,
}

impl TokenTransport for Gated {
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = TokenResult> + Send>> {
        let (client, gate) = (self.client.clone(), self.gate.clone());
        Box::pin(async move {
            // Closed when the test drops its sender: then every request goes.
            let _ = gate.recv().await;
            client.send_on(&latchkey_smol::Smol, &request).await
        })
    }
}

/// A transport whose requests never get an answer.
struct Silent;

impl TokenTransport for Silent {
    fn send(
        &self,
        _request: http::Request<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = TokenResult> + Send>> {
        Box::pin(std::future::pending())
    }
}

/// Tokens refreshed while callers waited serve every one of them, even when they live
/// shorter than the margin (here the IdP's hour against a two-hour margin): twenty callers
/// asking during one refresh cause one token request, not twenty.
#[test]
fn s42_tokens_refreshed_while_callers_waited_serve_them_all_even_inside_the_margin() {
    let (idp, provider, store, _tokens) = logged_in();
    let (open, gate) = smol::channel::bounded::<()>(1);
    let transport = Transport::Custom(Arc::new(Gated {
        client: http(),
        gate,
    }));
    let mut options = SessionOptions::default();
    options.margin = Duration::from_secs(2 * 3600);
    let source = TokenSource::with(
        latchkey_smol::Smol,
        provider,
        store.clone(),
        transport,
        DEFAULT_KEY,
        options,
    )
    .expect("valid options");
    let before = idp.stats().token_requests;
    let handed_out = at_once(&source, 20, async {
        // Every caller has asked before the provider answers.
        smol::Timer::after(Duration::from_millis(200)).await;
        drop(open);
    });
    one_refresh_served_all(&idp, before, &store, &handed_out);
}

/// In virtual time: the stored tokens serve until the wall clock comes within the margin
/// (60 s) of their expiry, and are refreshed from then on.
#[test]
fn the_token_source_refreshes_once_the_wall_clock_reaches_the_margin() {
    let (idp, provider, store, tokens) = logged_in();
    let rt = support::Virtual::new(latchkey_smol::Smol);
    let source = TokenSource::new(rt.clone(), provider, store, Transport::Builtin(http()));
    let before = idp.stats().token_requests;
    let access = |tokens: &TokenSet| tokens.access_token().expose_secret().to_owned();

    rt.clock().advance(TOKEN_LIFETIME - Duration::from_secs(65));
    let early = smol::block_on(source.tokens()).expect("the stored tokens");
    assert_eq!(access(&early), access(&tokens), "65 s left: still valid");
    assert_eq!(idp.stats().token_requests, before);

    rt.clock().advance(Duration::from_secs(10));
    let fresh = smol::block_on(source.tokens()).expect("refreshed tokens");
    assert_ne!(
        access(&fresh),
        access(&tokens),
        "55 s left: refreshed first"
    );
    assert_eq!(idp.stats().token_requests, before + 1);
    let expires_at = fresh.expires_at().expect("an expiry");
    let left = expires_at
        .duration_since(rt.wall())
        .expect("the new tokens expire in the future");
    assert!(
        left.as_secs().abs_diff(TOKEN_LIFETIME.as_secs()) <= 1,
        "the new expiry counts from the (virtual) time of the answer: {left:?}"
    );
}

/// In virtual time: a refresh request nobody answers fails at the session's request
/// deadline (30 s) as a timed-out transport, and the stored tokens stay.
#[test]
fn a_refresh_nobody_answers_fails_at_its_deadline_in_virtual_time() {
    let (_idp, provider, store, tokens) = logged_in();
    store
        .save(
            DEFAULT_KEY,
            &tokens.clone().with_expires_at(SystemTime::now()),
        )
        .expect("stored");
    let rt = support::Virtual::new(latchkey_smol::Smol);
    let source = TokenSource::new(
        rt.clone(),
        provider,
        store.clone(),
        Transport::Custom(Arc::new(Silent)),
    );
    let (result, ()) = smol::block_on(future::zip(source.tokens(), async {
        future::yield_now().await;
        rt.clock().advance(Duration::from_secs(30));
    }));
    match result {
        Err(SessionError::Transport(error)) => {
            assert_eq!(
                error.kind(),
                latchkey::TransportErrorKind::TimedOut,
                "{error}"
            );
        }
        other => panic!("expected a timed-out request, got {other:?}"),
    }
    let kept = store
        .load(DEFAULT_KEY)
        .expect("readable")
        .expect("still stored");
    assert_eq!(secret(kept.refresh_token()), secret(tokens.refresh_token()));
}

/// A store that takes its time: `load` waits until the test lets it go.
struct Hanging {
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl TokenStore for Hanging {
    fn save(&self, _key: &str, _tokens: &TokenSet) -> Result<(), latchkey::StoreError> {
        Ok(())
    }

    fn load(&self, _key: &str) -> Result<Option<TokenSet>, latchkey::StoreError> {
        let release = self.release.lock().unwrap_or_else(|e| e.into_inner());
        let _ = release.recv_timeout(Duration::from_secs(10));
        Ok(None)
    }

    fn delete(&self, _key: &str) -> Result<(), latchkey::StoreError> {
        Ok(())
    }
}

/// In virtual time: a caller whose store does not answer gets `TimedOut` at the call
/// deadline (60 s), and the store's late answer changes nothing.
#[test]
fn a_caller_whose_store_hangs_times_out_at_its_call_deadline_in_virtual_time() {
    let idp = idp();
    let provider = discovered(&idp);
    let (release, held) = std::sync::mpsc::channel();
    let store = Arc::new(Hanging {
        release: std::sync::Mutex::new(held),
    });
    let rt = support::Virtual::new(latchkey_smol::Smol);
    let source = TokenSource::new(rt.clone(), provider, store, Transport::Builtin(http()));
    let (result, ()) = smol::block_on(future::zip(source.tokens(), async {
        future::yield_now().await;
        rt.clock().advance(Duration::from_secs(60));
    }));
    assert_eq!(
        result.expect_err("no answer in time"),
        SessionError::TimedOut
    );
    drop(release);
    // The store answers now; the next call is served from it.
    let next = smol::block_on(source.tokens());
    assert_eq!(next.expect_err("nothing stored"), SessionError::NotLoggedIn);
}

// ----- who signed in, after the login -----

#[test]
fn s49_a_refreshed_id_token_is_verified_and_another_users_ends_the_login() {
    let (idp, provider, store, first) = logged_in_with(Quirk::None);
    assert_eq!(first.identity().map(|id| id.sub()), Some("dev-user"));
    let source = source(&provider, store.clone());
    let second = smol::block_on(source.refresh()).expect("refreshed");
    assert_ne!(
        secret(second.id_token()),
        secret(first.id_token()),
        "a new ID token"
    );
    assert_eq!(second.identity().map(|id| id.sub()), Some("dev-user"));

    // From now on the provider's refreshes name another user (OpenID Connect Core §12.2).
    idp.set_forgery(Some(Forgery::Subject));
    let error = smol::block_on(source.refresh()).expect_err("another user");
    assert!(
        matches!(
            &error,
            SessionError::Refresh(RefreshError::IdToken(IdTokenError::Subject))
        ),
        "{error:?}"
    );
    assert!(error.login_required());
    assert!(
        store.load(DEFAULT_KEY).expect("readable").is_none(),
        "the tokens no longer vouch for the user who signed in: deleted"
    );
}

#[test]
fn s50_userinfo_names_the_signed_in_user_and_an_answer_about_another_is_discarded() {
    let (idp, provider, store, _) = logged_in_with(Quirk::None);
    assert_eq!(
        provider.userinfo_endpoint().map(ToString::to_string),
        Some(idp.userinfo_endpoint())
    );
    let source = source(&provider, store);
    let claims = smol::block_on(source.userinfo()).expect("claims");
    assert_eq!(claims["sub"], "dev-user");
    assert_eq!(claims["email"], "dev-user@example.com");

    idp.set_forgery(Some(Forgery::UserInfoSubject));
    let error = smol::block_on(source.userinfo()).expect_err("another user");
    assert_eq!(error, UserInfoFetchError::UserInfo(UserInfoError::Subject));
}
