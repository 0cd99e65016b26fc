//! The key-set cache the machines share: which keys are known, when to fetch again, and the
//! checks that wait for a fetch.
//!
//! The rules (S47):
//!
//! - keys are kept per key-set URI and used for [`MAX_AGE`] after they were fetched;
//! - no keys, or keys past their age, cause a fetch;
//! - a token naming a key the cache does not have causes a fetch too (the provider may have
//!   rotated its keys a second ago), but such a refetch starts at most once per
//!   [`REFETCH_INTERVAL`], so that tokens naming made-up keys cannot make latchkey hammer
//!   the provider;
//! - one fetch at most is in flight per URI, and none starts within [`REFETCH_INTERVAL`] of
//!   a failed one;
//! - every check that needs the fetch waits for it, however many there are; when it ends
//!   they are all checked again, without another fetch;
//! - a fetch that fails keeps the keys already known (stale keys beat no keys while the
//!   provider's key endpoint is down); with none known, the waiting checks fail with the
//!   fetch's error.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use http::header::ACCEPT;
use http::{HeaderValue, Method, Request};
use serde_json::{Value, json};

use super::claims::{Expected, IdTokenPolicy, Identity};
use super::error::{IdTokenError, KeySetError};
use super::jwk::KeySet;
use crate::error::TransportError;
use crate::token::{from_unix_seconds, unix_seconds};

/// How long fetched keys are used before they are fetched again.
pub const MAX_AGE: Duration = Duration::from_secs(10 * 60);
/// The least time between two refetches of one key set for a key it lacks, and between a
/// failed fetch and the next.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// The most key sets a cache holds (one per provider; imports beyond it are ignored).
const MAX_SETS: usize = 32;

/// Keys known for one key-set URI.
#[derive(Debug, Clone)]
struct Entry {
    uri: http::Uri,
    keys: Option<Cached>,
    /// The fetch in flight: its request number and deadline.
    fetch: Option<(u64, Instant)>,
    /// When the last refetch for an unknown key started.
    refetched_at: Option<Instant>,
    /// When the last fetch failed, while no fetch succeeded since.
    failed_at: Option<Instant>,
    /// Why the last fetch failed, while no fetch succeeded since.
    last_error: Option<KeySetError>,
}

impl Entry {
    fn new(uri: &http::Uri) -> Entry {
        Entry {
            uri: uri.clone(),
            keys: None,
            fetch: None,
            refetched_at: None,
            failed_at: None,
            last_error: None,
        }
    }

    fn failed(&mut self, now: Instant, error: KeySetError) {
        self.failed_at = Some(now);
        self.last_error = Some(error);
    }
}

#[derive(Debug, Clone)]
struct Cached {
    set: KeySet,
    /// When the keys reach [`MAX_AGE`]: a deadline, so that keys imported at any age need
    /// no instant before `now` (which a machine booted minutes ago may not have).
    fresh_until: Instant,
    fetched_wall: SystemTime,
}

/// What became of a check.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// Checked, with this outcome.
    Done(Result<Identity, IdTokenError>),
    /// Waiting for a fetch of this key-set URI; check again when it ends.
    Wait(String),
}

/// A fetch to send: its request number and the request.
type Fetch = (u64, Request<Vec<u8>>);

/// Key sets by URI, and the fetches in flight.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyCache {
    entries: BTreeMap<String, Entry>,
}

impl KeyCache {
    /// Checks `token` with `policy`. `fetching` is `false` for a check repeated after a
    /// fetch ended: it never starts another. A fetch to start comes back numbered
    /// `*next_id` (which then moves on); the caller sends it and reports with
    /// [`handle_response`](KeyCache::handle_response) or
    /// [`handle_failure`](KeyCache::handle_failure) by that number.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check(
        &mut self,
        now: Instant,
        wall: SystemTime,
        policy: &IdTokenPolicy,
        token: &str,
        expected: &Expected<'_>,
        fetching: bool,
        timeout: Duration,
        next_id: &mut u64,
    ) -> (Lookup, Option<Fetch>) {
        let jws = match policy.parse(token) {
            Ok(jws) => jws,
            Err(error) => return (Lookup::Done(Err(error)), None),
        };
        let key = policy.jwks_uri.to_string();
        let entry = self
            .entries
            .entry(key.clone())
            .or_insert_with(|| Entry::new(&policy.jwks_uri));
        let since = |at: Option<Instant>| at.map(|at| now.saturating_duration_since(at));
        let waiting = fetching && entry.fetch.is_some();
        let backing_off = since(entry.failed_at).is_some_and(|d| d < REFETCH_INTERVAL);
        let may_fetch = fetching && entry.fetch.is_none() && !backing_off;
        let may_refetch =
            may_fetch && since(entry.refetched_at).is_none_or(|d| d >= REFETCH_INTERVAL);
        let fresh = entry.keys.as_ref().filter(|keys| now < keys.fresh_until);
        let refetch = match fresh {
            Some(keys) => match policy.verify_parsed(jws, token, &keys.set, expected, wall) {
                Err(IdTokenError::UnknownKey) if waiting => return (Lookup::Wait(key), None),
                Err(IdTokenError::UnknownKey) if may_refetch => true,
                done => return (Lookup::Done(done), None),
            },
            // No keys, or keys past their age.
            None if waiting => return (Lookup::Wait(key), None),
            None if may_fetch => false,
            None => {
                let done = match &entry.keys {
                    // Stale keys beat none while no fetch can be made.
                    Some(stale) => policy.verify_parsed(jws, token, &stale.set, expected, wall),
                    None => Err(IdTokenError::KeySet(
                        entry.last_error.clone().unwrap_or(KeySetError::NoUsableKey),
                    )),
                };
                return (Lookup::Done(done), None);
            }
        };
        let id = *next_id;
        *next_id += 1;
        entry.fetch = Some((id, now + timeout));
        if refetch {
            entry.refetched_at = Some(now);
        }
        let mut request = Request::new(Vec::new());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = entry.uri.clone();
        request.headers_mut().insert(
            ACCEPT,
            HeaderValue::from_static("application/jwk-set+json, application/json"),
        );
        (Lookup::Wait(key), Some((id, request)))
    }

    /// Whether request number `id` is a fetch of this cache.
    pub(crate) fn owns(&self, id: u64) -> bool {
        self.entries
            .values()
            .any(|entry| entry.fetch.is_some_and(|(fetch, _)| fetch == id))
    }

    /// The answer to fetch `id`, received at `now`/`wall`. Returns the URI whose waiting
    /// checks must be repeated, `None` for an unknown or late answer.
    pub(crate) fn handle_response(
        &mut self,
        now: Instant,
        wall: SystemTime,
        id: u64,
        response: &http::Response<Vec<u8>>,
    ) -> Option<String> {
        let result = match response.status().as_u16() {
            200 => KeySet::parse(response.body()),
            status => Err(KeySetError::Status(status)),
        };
        self.finish(id, |entry| match result {
            Ok(set) => {
                entry.keys = Some(Cached {
                    set,
                    fresh_until: now + MAX_AGE,
                    fetched_wall: wall,
                });
                entry.last_error = None;
                entry.failed_at = None;
            }
            Err(error) => entry.failed(now, error),
        })
    }

    /// Fetch `id` could not be completed.
    pub(crate) fn handle_failure(
        &mut self,
        now: Instant,
        id: u64,
        error: TransportError,
    ) -> Option<String> {
        self.finish(id, |entry| entry.failed(now, KeySetError::Transport(error)))
    }

    /// Fails every fetch past its deadline; returns the URIs whose checks must be repeated.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<String> {
        let mut expired = Vec::new();
        for (key, entry) in &mut self.entries {
            if entry.fetch.is_some_and(|(_, deadline)| deadline <= now) {
                entry.fetch = None;
                entry.failed(now, KeySetError::TimedOut);
                expired.push(key.clone());
            }
        }
        expired
    }

    /// The earliest fetch deadline.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|entry| entry.fetch.map(|(_, deadline)| deadline))
            .min()
    }

    fn finish(&mut self, id: u64, update: impl FnOnce(&mut Entry)) -> Option<String> {
        let (key, entry) = self
            .entries
            .iter_mut()
            .find(|(_, entry)| entry.fetch.is_some_and(|(fetch, _)| fetch == id))?;
        entry.fetch = None;
        update(entry);
        Some(key.clone())
    }

    /// The key sets held, as a JSON document [`import`](KeyCache::import) reads: for each,
    /// its URI, when it was fetched (Unix seconds) and its usable keys. The importer drops
    /// those too old by then.
    pub(crate) fn export(&self) -> Vec<u8> {
        let sets: Vec<Value> = self
            .entries
            .values()
            .filter_map(|entry| {
                let keys = entry.keys.as_ref()?;
                Some(json!({
                    "jwks_uri": entry.uri.to_string(),
                    "fetched_at": unix_seconds(keys.fetched_wall),
                    "keys": keys.set.to_json()["keys"],
                }))
            })
            .collect();
        serde_json::to_vec(&json!({ "key_sets": sets })).unwrap_or_default()
    }

    /// Takes in key sets another process exported: each one younger than [`MAX_AGE`] by
    /// `wall` replaces what the cache has for its URI, unless the cache's copy is newer.
    /// Returns how many were taken. The fetch timing of this process is unchanged.
    ///
    /// # Errors
    ///
    /// [`KeySetError::NotJson`] when `document` is not an export; entries that cannot be
    /// used (a bad URI, no usable key, too old) are skipped.
    pub(crate) fn import(
        &mut self,
        now: Instant,
        wall: SystemTime,
        document: &[u8],
    ) -> Result<usize, KeySetError> {
        if document.len() > MAX_SETS * super::jwk::MAX_KEY_SET_BYTES {
            return Err(KeySetError::TooLarge);
        }
        let document: Value = serde_json::from_slice(document).map_err(|_| KeySetError::NotJson)?;
        let Some(Value::Array(sets)) = document.get("key_sets") else {
            return Err(KeySetError::NotJson);
        };
        let mut taken = 0;
        for set in sets {
            let Some(imported) = Imported::read(now, wall, set) else {
                continue;
            };
            let key = imported.uri.to_string();
            if !self.entries.contains_key(&key) && self.entries.len() >= MAX_SETS {
                continue;
            }
            let entry = self
                .entries
                .entry(key)
                .or_insert_with(|| Entry::new(&imported.uri));
            if entry
                .keys
                .as_ref()
                .is_some_and(|keys| keys.fresh_until >= imported.cached.fresh_until)
            {
                continue;
            }
            entry.keys = Some(imported.cached);
            entry.last_error = None;
            taken += 1;
        }
        Ok(taken)
    }
}

/// One key set of an export.
struct Imported {
    uri: http::Uri,
    cached: Cached,
}

impl Imported {
    fn read(now: Instant, wall: SystemTime, value: &Value) -> Option<Imported> {
        let uri: http::Uri = value.get("jwks_uri")?.as_str()?.parse().ok()?;
        crate::url::parse(&uri.to_string()).ok()?;
        let fetched_wall = from_unix_seconds(value.get("fetched_at")?.as_i64()?)?;
        // A time in the future (clocks of two machines differ) counts as just now.
        let age = wall.duration_since(fetched_wall).unwrap_or_default();
        if age >= MAX_AGE {
            return None;
        }
        let keys = serde_json::to_vec(&json!({ "keys": value.get("keys")? })).ok()?;
        Some(Imported {
            uri,
            cached: Cached {
                set: KeySet::parse(&keys).ok()?,
                fresh_until: now + (MAX_AGE - age),
                fetched_wall: wall.checked_sub(age)?,
            },
        })
    }
}
