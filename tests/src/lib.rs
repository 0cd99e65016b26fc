//! Test support shared by latchkey's scenario tests, property tests and fuzz targets.
//!
//! - [`harness`]: a configured engine with a virtual clock and helpers that speak literal
//!   bytes (a browser's request, a provider's token response).
//! - [`model`]: the operations a driver can perform ([`model::Op`]), how to apply them, and
//!   the invariants every sequence of them must keep ([`model::Sim`]). The quickcheck
//!   properties and the cargo-fuzz targets share this one definition.
//! - [`session_model`]: the same for the token lifecycle machine ([`latchkey::Session`]):
//!   callers, a provider, a store and two clocks ([`session_model::SessionOp`]), and the
//!   rules of a token's life checked after every step ([`session_model::SessionSim`]).
//! - [`shared_session_model`]: the same for replicas sharing one store (S57, S58): several
//!   sessions with `shared_refresh` on, a store with a leased, fenced refresh lock, and a
//!   provider that rotates refresh tokens ([`shared_session_model::SharedOp`]), with
//!   single-flight and fencing checked after every step ([`shared_session_model::SharedSim`]).
//! - [`keys_model`]: the same for logins whose ID tokens go through the engine's key-set
//!   cache: logins signed by known and made-up keys, key-set answers, failures, timeouts and
//!   time ([`keys_model::KeysOp`]), and the cache's rules checked after every step
//!   ([`keys_model::KeysSim`]).
//! - [`device_model`]: the same for device logins (RFC 8628): logins started and
//!   superseded, the provider answering codes of every shape, pending, `slow_down`,
//!   unavailability with `Retry-After`, denials, expiry, tokens, garbage, and time
//!   ([`device_model::DeviceOp`]), with the polling rules (S51) checked after every step
//!   ([`device_model::DeviceSim`]).
//! - [`directory_model`]: the same for replicas sharing pending logins through a flow
//!   directory: shared logins started anywhere, callbacks landing on one replica or racing
//!   on several, takes and shares answered in any order, late, stale, tampered or failing,
//!   the directory down and back, announcements delivered or lost, and time
//!   ([`directory_model::DirectoryOp`]), with S54–S58 checked after every step
//!   ([`directory_model::DirectorySim`]).
//! - [`dpop_model`]: the same for DPoP logins (RFC 9449): logins, token endpoint answers
//!   demanding nonces (usable or not), bound and bearer tokens, refusals, garbage,
//!   transport failures and time ([`dpop_model::DpopOp`]), with S61 and S62 checked after
//!   every step ([`dpop_model::DpopSim`]); and for a session refreshing stored bound tokens
//!   ([`dpop_model::DpopSessionSim`]).
//! - [`file_store_model`]: the token file shared by processes (S60): stores opened on one
//!   file saving, deleting, locking, writing fenced and dying ([`file_store_model::FileOp`]),
//!   checked against a model of the refresh lock and its fences ([`file_store_model::FileSim`]).
//! - [`id_token_vectors`]: signed ID tokens of every algorithm and every refusal, with the
//!   provider and keys that judge them.
//! - [`redis`]: a real `redis-server` of a test's own (append-only file on, restartable on
//!   its port) and a plain RESP connection to look at what a shared store wrote.
//! - [`secret_service`]: a real Secret Service (gnome-keyring on a private D-Bus session bus
//!   of a test's own, its default collection unlocked, lockable and unlockable), and a bus
//!   with none, for the OS-keyring tests; what was stored is read back with `secret-tool`.
//! - [`extension`]: the Docker Desktop extension example, built from its own workspace, and
//!   its backend and host binary run as processes: the backend's settings, socket calls and
//!   log, the host binary's output lines.
//! - [`oidc`]: the reference identity provider, the OpenID-certified `oidc-provider` from
//!   npm, started on loopback for the interop tests.
#![forbid(unsafe_code)]

pub mod device_model;
pub mod directory_model;
pub mod dpop_model;
pub mod extension;
pub mod file_store_model;
pub mod harness;
pub mod id_token_vectors;
pub mod keys_model;
pub mod model;
pub mod oidc;
pub mod oidc_agent;
pub mod redis;
pub mod secret_service;
pub mod session_model;
pub mod shared_session_model;
