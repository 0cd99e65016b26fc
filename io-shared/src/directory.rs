//! Where replicas share pending logins: the [`FlowDirectory`] trait the service drives
//! (the rules are in [`latchkey::directory`]), and [`MemoryDirectory`], which shares them
//! between the services of one process (tests, and a model of what a shared store must do).
//! `latchkey-redis` has the one for replicas on several machines.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use latchkey::StoreError;
use latchkey::directory::{Announcement, FlowKey, FlowRecord, Taken};

/// Receives the announcements of every replica ([`FlowDirectory::listen`]).
pub type Listener = Arc<dyn Fn(Announcement) + Send + Sync>;

/// A store of pending flows shared by replicas. Implementations may block: the service
/// calls them from the runtime's blocking pool, like a [`TokenStore`](crate::store::TokenStore).
///
/// Records are handed over in the clear; an implementation that stores them outside the
/// process must seal them, with the key's bytes as associated data (S55).
pub trait FlowDirectory: Send + Sync + 'static {
    /// Stores `record` under `key`, to expire after `lifetime` (S56).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the record may not have been stored.
    fn share(
        &self,
        key: &FlowKey,
        record: &FlowRecord,
        lifetime: Duration,
    ) -> Result<(), StoreError>;

    /// Takes the record under `key` and leaves a "used" mark in its place, keeping its
    /// expiry, as one atomic step (S54): of any number of concurrent takes, one gets the
    /// record.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the directory could not be asked, or the record did not open:
    /// nothing was taken then.
    fn take(&self, key: &FlowKey) -> Result<Taken, StoreError>;

    /// Replaces the record under `key`, if it was not taken, by an "ended" mark, keeping
    /// its expiry.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the directory could not be updated.
    fn spend(&self, key: &FlowKey) -> Result<(), StoreError>;

    /// Delivers `announcement` to every replica's listener, this one's included.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when it could not be sent.
    fn announce(&self, announcement: &Announcement) -> Result<(), StoreError>;

    /// Calls `listener` with every announcement from now on, from a thread or task of the
    /// directory's own, until the directory is dropped; it keeps listening across lost
    /// connections.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when listening could not start.
    fn listen(&self, listener: Listener) -> Result<(), StoreError>;
}

/// A flow directory in memory, shared by every service given a clone of it: replicas in
/// one process. Records expire with their lifetime, marks too.
#[derive(Clone, Default)]
pub struct MemoryDirectory {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    entries: BTreeMap<FlowKey, (Entry, Instant)>,
    listeners: Vec<Listener>,
}

#[derive(Clone)]
enum Entry {
    Record(FlowRecord),
    Used,
    Ended,
}

impl std::fmt::Debug for MemoryDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDirectory")
            .field("entries", &self.lock().entries.len())
            .finish()
    }
}

impl MemoryDirectory {
    /// An empty directory.
    pub fn new() -> MemoryDirectory {
        MemoryDirectory::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records and marks not yet expired.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        let inner = self.lock();
        inner.entries.values().filter(|(_, at)| *at > now).count()
    }

    /// Whether nothing unexpired is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FlowDirectory for MemoryDirectory {
    fn share(
        &self,
        key: &FlowKey,
        record: &FlowRecord,
        lifetime: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.entries.retain(|_, (_, at)| *at > now);
        let expires = now
            .checked_add(lifetime)
            .ok_or_else(|| StoreError::new("lifetime too long"))?;
        inner
            .entries
            .insert(*key, (Entry::Record(record.clone()), expires));
        Ok(())
    }

    fn take(&self, key: &FlowKey) -> Result<Taken, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let Some((entry, _)) = inner.entries.get_mut(key).filter(|(_, at)| *at > now) else {
            return Ok(Taken::Missing);
        };
        let taken = match entry {
            Entry::Record(record) => Taken::Record(record.clone()),
            Entry::Used => Taken::Spent { used: true },
            Entry::Ended => Taken::Spent { used: false },
        };
        *entry = match entry {
            Entry::Ended => Entry::Ended,
            _ => Entry::Used,
        };
        Ok(taken)
    }

    fn spend(&self, key: &FlowKey) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some((entry @ Entry::Record(_), _)) = inner.entries.get_mut(key) {
            *entry = Entry::Ended;
        }
        Ok(())
    }

    fn announce(&self, announcement: &Announcement) -> Result<(), StoreError> {
        let listeners = self.lock().listeners.clone();
        for listener in listeners {
            listener(announcement.clone());
        }
        Ok(())
    }

    fn listen(&self, listener: Listener) -> Result<(), StoreError> {
        self.lock().listeners.push(listener);
        Ok(())
    }
}
