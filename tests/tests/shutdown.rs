//! A program that ends while a token source still has store work in flight: the tokio
//! runtime drops the task carrying that work, and nothing spawns another in its place
//! (which the shutting-down runtime would drop at once, and so on until the stack
//! overflowed: seen as `latchkey refresh --runtime tokio` aborting after its output).
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use latchkey::{Provider, SessionOptions, StoreError, TokenSet};
use latchkey_io::source::TokenSource;
use latchkey_io::store::{MemoryStore, TokenStore};
use latchkey_io::transport::{TokenResult, TokenTransport, Transport};
use secrecy::{ExposeSecret, SecretString};

/// A store shared by processes whose unlock takes a while: the unlock is still running
/// when the caller has its tokens and the program ends.
struct SlowUnlock(MemoryStore);

impl TokenStore for SlowUnlock {
    fn save(&self, key: &str, tokens: &TokenSet) -> Result<(), StoreError> {
        self.0.save(key, tokens)
    }

    fn load(&self, key: &str) -> Result<Option<TokenSet>, StoreError> {
        self.0.load(key)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.delete(key)
    }

    fn shares_refresh(&self) -> bool {
        true
    }

    fn unlock_refresh(&self, _key: &str, _fence: u64) -> Result<(), StoreError> {
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }
}

/// A token endpoint that answers every refresh at once.
struct Refreshes;

impl TokenTransport for Refreshes {
    fn send(
        &self,
        _request: http::Request<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = TokenResult> + Send>> {
        Box::pin(async {
            Ok(http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(
                    br#"{"access_token":"at-2","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-2"}"#
                        .to_vec(),
                )
                .expect("a response"))
        })
    }
}

#[test]
fn a_runtime_dropped_while_the_refresh_lock_is_released_ends_cleanly() {
    let store = Arc::new(SlowUnlock(MemoryStore::default()));
    let expired = TokenSet::new(SecretString::from("at-1"))
        .with_refresh_token(SecretString::from("rt-1"))
        .with_expires_at(SystemTime::now() - Duration::from_secs(60));
    store.save("default", &expired).expect("save");
    let provider = Provider::builder(
        "https://idp.example/authorize",
        "https://idp.example/token",
        "cli",
    )
    .build()
    .expect("provider");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let tokens = runtime.block_on(async {
        let source = TokenSource::with(
            latchkey_tokio::Tokio,
            provider,
            store.clone(),
            Transport::Custom(Arc::new(Refreshes)),
            "default",
            SessionOptions::default(),
        )
        .expect("source");
        source.tokens().await.expect("refreshed tokens")
    });
    assert_eq!(tokens.access_token().expose_secret(), "at-2");
    // The unlock is still sleeping on the blocking pool; the task waiting for it goes.
    drop(runtime);
    assert_eq!(
        store
            .load("default")
            .expect("load")
            .map(|tokens| tokens.access_token().expose_secret().to_owned())
            .as_deref(),
        Some("at-2")
    );
}
