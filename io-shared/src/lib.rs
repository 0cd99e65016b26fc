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
//! - [`discovery`]: a provider described from its issuer URL alone.
//! - [`source`]: fresh access tokens on demand, refreshed once for all concurrent callers
//!   and stored before they are handed out (S42).
//!
//! ## One HTTP client, two kinds of socket
//!
//! [`http::HttpClient`] runs its exchange (proxy tunnel, TLS, request, response) once, in
//! async code over a small byte-stream abstraction. The drivers call
//! [`send_on`](http::HttpClient::send_on) with their runtime, so a token request runs on the
//! runtime's own sockets and timers and never waits for a blocking-pool thread (a handoff
//! that cost tens of microseconds of CPU per login on the benchmark machine). Programs without
//! a runtime call [`send`](http::HttpClient::send), which runs the same code on blocking
//! sockets. Host names are resolved by the system resolver, on the runtime's blocking pool,
//! because it blocks; IP addresses need no resolving.
//!
//! ## Logging
//!
//! Everything here reports to [`tracing`](https://docs.rs/tracing): a `login` span per flow
//! (flow id, provider) with an event per step (callback accepted, token endpoint answered,
//! tokens stored, finished) and its duration; `refresh`, `logout` and `discovery` spans with
//! their outcomes and durations; refused connections at debug level. No event carries a
//! secret (S41). Install any subscriber to see them; without one they cost next to nothing.
#![forbid(unsafe_code)]

pub mod discovery;
pub mod driver;
pub mod entropy;
pub mod http;
mod log;
pub mod opener;
pub mod proxy;
pub mod source;
pub mod store;
pub mod tls;
