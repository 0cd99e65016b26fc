//! # latchkey-io
//!
//! What latchkey's drivers (`latchkey-smol`, `latchkey-tokio`) share: everything the
//! sans-IO machines of [`latchkey`] ask for, written once for every async runtime. Each
//! machine has its driver here, a loop that carries out the machine's actions and feeds it
//! their outcomes:
//!
//! | machine | driver | what it does |
//! |---|---|---|
//! | [`latchkey::Engine`] | [`service`] | the loopback listener, logins, token requests, storing the tokens |
//! | [`latchkey::Session`] | [`source`] | valid tokens on demand, refreshes, logout |
//! | [`latchkey::Discovery`] | [`discovery`] | a provider from its issuer URL |
//!
//! and what the drivers use:
//!
//! - [`runtime`]: the one seam to the async runtime ([`runtime::Runtime`]): tasks, the
//!   clocks, timers, randomness, the blocking pool, TCP.
//! - [`transport`]: how requests are sent: [`http::HttpClient`], or the embedder's client.
//! - [`http`]: the HTTP client: https only (plain http to loopback), no redirects,
//!   timeouts, a response size cap (S6, S34), Happy Eyeballs, TLS with `futures-rustls`.
//! - [`proxy`]: `HTTPS_PROXY`/`NO_PROXY` handling and the `CONNECT` exchange.
//! - [`tls`]: the rustls client configuration, always verifying certificates, against
//!   Mozilla's roots or CA certificates you supply (S34).
//! - [`store`]: where tokens are kept, [`store::TokenStore`], with an in-memory store and a
//!   file store that writes atomically with private permissions (S38, S39), is shared
//!   safely by several processes with a refresh lock that dies with its holder (S60), and
//!   can keep the secrets in the OS keychain (S59; `store::OsKeychain` with the feature
//!   `keychain`).
//! - [`opener`]: handing the authorization URL to the system browser as one process
//!   argument, never through a shell (S6).
//! - [`entropy`]: the 64 random bytes each flow starts from, from the operating system.
//!
//! ## Logging
//!
//! Everything here reports to [`tracing`](https://docs.rs/tracing): a `login` span per flow
//! (flow id, provider) with an event per step (callback accepted, token endpoint answered,
//! tokens stored, finished) and its duration; `token_source` spans for handing out,
//! refreshing and logging out; a `discovery` span; refused connections at debug level. No
//! event carries a secret (S41). Install any subscriber to see them; without one they cost
//! next to nothing.
#![forbid(unsafe_code)]

mod alarm;
pub mod crypto;
pub mod directory;
pub mod discovery;
pub mod entropy;
pub mod http;
mod jobs;
mod log;
pub mod opener;
pub mod proxy;
pub mod runtime;
pub mod service;
pub mod source;
pub mod store;
pub mod tls;
pub mod transport;
