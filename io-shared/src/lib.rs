//! # latchkey-io
//!
//! What latchkey's drivers (`latchkey-smol`, `latchkey-tokio`) share: everything a login
//! needs from the outside world that does not depend on the async runtime. The core crate
//! [`latchkey`] is sans-IO; this crate supplies the I/O it asks for.
//!
//! - [`entropy`]: the 64 random bytes each flow starts from, from the operating system.
//! - [`store`]: where tokens are kept, [`store::TokenStore`], with an in-memory store and a
//!   file store that writes atomically with private permissions (S38, S39).
//! - [`tls`]: the rustls client configuration, always verifying certificates, against
//!   Mozilla's roots or CA certificates you supply (S34).
//! - [`proxy`]: `HTTPS_PROXY`/`NO_PROXY` handling and the `CONNECT` exchange.
//! - [`http`]: the token HTTP client: https only (plain http to loopback), no redirects,
//!   timeouts and a response size cap (S6, S34).
//! - [`opener`]: handing the authorization URL to the system browser as one process
//!   argument, never through a shell (S6).
//! - [`driver`]: the driver loop's runtime-independent half.
//!
//! ## Why the HTTP client blocks
//!
//! [`http::HttpClient::send`] is blocking, and the drivers run it on their runtime's blocking
//! pool (`smol::unblock`, `tokio::task::spawn_blocking`). That gives one implementation for
//! both runtimes instead of two async TLS stacks to keep in step; a login makes a handful of
//! requests, so a pool thread per request costs nothing that matters; and both runtimes
//! resolve host names on their blocking pools anyway, because the system resolver blocks.
#![forbid(unsafe_code)]

pub mod driver;
pub mod entropy;
pub mod http;
pub mod opener;
pub mod proxy;
pub mod store;
pub mod tls;
