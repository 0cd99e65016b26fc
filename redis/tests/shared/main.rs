//! latchkey-redis against a real `redis-server` of each test's own (`latchkey_tests::redis`).

mod common;
mod directory;
mod outage;
mod secrets;
mod store;
