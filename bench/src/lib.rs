//! Benchmarks of latchkey against oauth2-rs and against the floor.
//!
//! `cargo run --release -p latchkey-bench` runs every measurement and prints one table (see
//! [`report`]); the pieces are:
//!
//! - `benches/inprocess.rs`: criterion timings of the core and its peers on the exact bytes
//!   in `inputs/` ([`fixtures`] builds both sides' clients from the same settings);
//! - `src/bin/probe.rs`: heap allocations per operation and bytes per pending flow, under a
//!   counting allocator;
//! - [`e2e`]: whole flows over loopback sockets through each contender's callback server,
//!   each in its own process ([`servers`]) so its CPU time is its own;
//! - [`refresh`]: CPU per refresh and per hand-out of valid tokens, each contender in its
//!   own process;
//! - [`id_token`]: CPU per ID token verification, per algorithm, against `jsonwebtoken`;
//! - [`shared`]: logins and refreshes shared by replicas through Redis against in memory
//!   (CPU, latency, Redis memory per pending flow);
//! - [`device`]: CPU per poll of the token endpoint during a device login (RFC 8628), in
//!   process and over loopback, against oauth2-rs's device flow;
//! - [`waiters`]: 1,000 callers asking for expired tokens at once, against oauth2-rs
//!   behind a `tokio::sync::Mutex` (one refresh request, wall time, CPU);
//! - [`endpoint`]: the local token and device authorization endpoint those three use, on
//!   a thread of its own so that its CPU time can be subtracted;
//! - [`footprint`]: dependency counts and clean release build times.
//!
//! Nothing here is shipped: oauth2-rs, axum and reqwest are dependencies of this package only.
#![forbid(unsafe_code)]
// A benchmark harness reads the clocks; the core's ban on them does not apply here.
#![allow(clippy::disallowed_methods)]

pub mod device;
pub mod e2e;
pub mod endpoint;
pub mod fixtures;
pub mod footprint;
pub mod id_token;
pub mod refresh;
pub mod report;
pub mod servers;
pub mod shared;
pub mod signing;
pub mod waiters;
