//! Test support shared by latchkey's scenario tests, property tests and fuzz targets.
//!
//! - [`harness`]: a configured engine with a virtual clock and helpers that speak literal
//!   bytes (a browser's request, a provider's token response).
//! - [`model`]: the operations a driver can perform ([`model::Op`]), how to apply them, and
//!   the invariants every sequence of them must keep ([`model::Sim`]). The quickcheck
//!   properties and the cargo-fuzz targets share this one definition.
#![forbid(unsafe_code)]

pub mod harness;
pub mod model;
