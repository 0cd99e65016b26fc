//! The token file shared by processes (S60), against a model of what `FileStore` promises:
//! stores opened on one file by several "processes", two keys, and every operation of the
//! `TokenStore` refresh contract — saves, deletes, refresh locks, fenced saves and deletes,
//! unlocks with the right fence or a stale one — plus a process dying (its store dropped,
//! its OS locks gone with it). [`FileSim::apply`] runs each operation on the real file and
//! on the model and returns `Err` on the first difference.
//!
//! The rules: a key's refresh lock has one holder at a time across every store; it is free
//! again once its holder unlocks with its own fence or dies, and at no other moment; each
//! fence handed out for a key is larger than every one before it; a fenced write succeeds
//! exactly when its fence is the key's newest and nothing was written to the key since —
//! except that a file left with nothing stored is removed, fences and all, so a fenced write
//! then stores nothing (there was nothing to refresh, and a logout is not undone); every
//! load returns what the model holds; writes to one key never change the other.

use std::path::PathBuf;
use std::time::Duration;

use latchkey::TokenSet;
use latchkey_io::store::{FileStore, TokenStore};
use quickcheck::{Arbitrary, Gen};
use secrecy::{ExposeSecret, SecretString};

/// How many stores ("processes") share the file.
pub const PROCESSES: usize = 3;
/// The keys they use.
pub const KEYS: [&str; 2] = ["default", "work"];
const LEASE: Duration = Duration::from_secs(45);

/// Which store ("process") acts, on which key (both taken modulo their counts).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct At {
    /// The store.
    pub process: u8,
    /// The key.
    pub key: u8,
}

/// One step. `stale`: present an older fence of the process (or one never handed out)
/// instead of its newest.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum FileOp {
    /// A plain save (a login) of a new token set.
    Save(At),
    /// A plain delete (a logout).
    Delete(At),
    /// A load, compared with the model.
    Load(At),
    /// Tries to take the refresh lock.
    Lock(At),
    /// A fenced save.
    SaveFenced(At, bool),
    /// A fenced delete.
    DeleteFenced(At, bool),
    /// Releases the lock.
    Unlock(At, bool),
    /// The process dies: its store is dropped and opened anew.
    Die(u8),
}

impl Arbitrary for FileOp {
    fn arbitrary(g: &mut Gen) -> FileOp {
        let at = At {
            process: u8::arbitrary(g),
            key: u8::arbitrary(g),
        };
        let stale = u8::arbitrary(g) % 4 == 0;
        match u8::arbitrary(g) % 16 {
            0..=1 => FileOp::Save(at),
            2 => FileOp::Delete(at),
            3..=4 => FileOp::Load(at),
            5..=8 => FileOp::Lock(at),
            9..=10 => FileOp::SaveFenced(at, stale),
            11 => FileOp::DeleteFenced(at, stale),
            12..=14 => FileOp::Unlock(at, stale),
            _ => FileOp::Die(at.process),
        }
    }
}

/// What the model knows of a key.
#[derive(Debug, Default, Clone)]
struct KeyModel {
    /// The stored access token.
    tokens: Option<String>,
    /// The fence a fenced write must carry: the last one handed out, until any write.
    valid: Option<u64>,
    /// Who holds the refresh lock, and with which fence.
    holder: Option<(usize, u64)>,
    /// The largest fence handed out.
    largest: u64,
}

/// The real stores on one file, and the model.
pub struct FileSim {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stores: Vec<FileStore>,
    keys: [KeyModel; 2],
    /// Every fence each process was handed, per key, newest last.
    fences: Vec<[Vec<u64>; 2]>,
    /// Numbers the token sets saved.
    saved: u64,
}

impl Default for FileSim {
    fn default() -> Self {
        FileSim::new()
    }
}

impl FileSim {
    /// Stores on a fresh file in a temporary directory.
    pub fn new() -> FileSim {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("tokens.json");
        FileSim {
            stores: (0..PROCESSES).map(|_| FileStore::new(&path)).collect(),
            path,
            _dir: dir,
            keys: [KeyModel::default(), KeyModel::default()],
            fences: (0..PROCESSES).map(|_| [Vec::new(), Vec::new()]).collect(),
            saved: 0,
        }
    }

    fn tokens(&mut self) -> (TokenSet, String) {
        self.saved += 1;
        let access = format!("at-{}", self.saved);
        let tokens = TokenSet::new(SecretString::from(access.clone()))
            .with_refresh_token(SecretString::from(format!("rt-{}", self.saved)));
        (tokens, access)
    }

    /// The fence `process` would present for `key`: its newest, or (`stale`) an older one
    /// or one never handed out.
    fn fence(&self, process: usize, key: usize, stale: bool) -> u64 {
        let handed = &self.fences[process][key];
        match (stale, handed.as_slice()) {
            (false, [.., newest]) => *newest,
            (true, [older, _, ..]) => *older,
            _ => 1,
        }
    }

    /// Runs `op` on the file and the model.
    ///
    /// # Errors
    ///
    /// The first difference between them, described.
    pub fn apply(&mut self, op: FileOp) -> Result<(), String> {
        let at = |at: At| {
            (
                usize::from(at.process) % PROCESSES,
                usize::from(at.key) % KEYS.len(),
            )
        };
        match op {
            FileOp::Save(which) => {
                let (process, key) = at(which);
                let (tokens, access) = self.tokens();
                self.stores[process]
                    .save(KEYS[key], &tokens)
                    .map_err(|e| format!("save failed: {e}"))?;
                self.keys[key].tokens = Some(access);
                self.keys[key].valid = None;
            }
            FileOp::Delete(which) => {
                let (process, key) = at(which);
                self.stores[process]
                    .delete(KEYS[key])
                    .map_err(|e| format!("delete failed: {e}"))?;
                self.keys[key].tokens = None;
                self.keys[key].valid = None;
            }
            FileOp::Load(which) => {
                let (process, key) = at(which);
                self.check_load(process, key)?;
            }
            FileOp::Lock(which) => {
                let (process, key) = at(which);
                let taken = self.stores[process]
                    .lock_refresh(KEYS[key], LEASE)
                    .map_err(|e| format!("lock failed: {e}"))?;
                let model = &mut self.keys[key];
                match (taken, model.holder) {
                    (Some(fence), None) => {
                        if fence <= model.largest {
                            return Err(format!(
                                "fence {fence} is not larger than {} handed out before",
                                model.largest
                            ));
                        }
                        model.largest = fence;
                        model.valid = Some(fence);
                        model.holder = Some((process, fence));
                        self.fences[process][key].push(fence);
                    }
                    (None, Some(_)) => {}
                    (Some(fence), Some(holder)) => {
                        return Err(format!(
                            "process {process} got fence {fence} while {holder:?} holds the lock"
                        ));
                    }
                    (None, None) => {
                        return Err(format!("process {process} was refused a free lock"));
                    }
                }
            }
            FileOp::SaveFenced(which, stale) => {
                let (process, key) = at(which);
                let fence = self.fence(process, key, stale);
                let (tokens, access) = self.tokens();
                let stored = self.stores[process]
                    .save_fenced(KEYS[key], &tokens, fence)
                    .map_err(|e| format!("fenced save failed: {e}"))?;
                let model = &mut self.keys[key];
                let expected = model.valid == Some(fence);
                if stored != expected {
                    return Err(format!(
                        "fenced save with {fence} (valid: {:?}) answered {stored}",
                        model.valid
                    ));
                }
                if stored {
                    model.tokens = Some(access);
                    model.valid = None;
                }
            }
            FileOp::DeleteFenced(which, stale) => {
                let (process, key) = at(which);
                let fence = self.fence(process, key, stale);
                let deleted = self.stores[process]
                    .delete_fenced(KEYS[key], fence)
                    .map_err(|e| format!("fenced delete failed: {e}"))?;
                let model = &mut self.keys[key];
                let expected = model.valid == Some(fence);
                if deleted != expected {
                    return Err(format!(
                        "fenced delete with {fence} (valid: {:?}) answered {deleted}",
                        model.valid
                    ));
                }
                if deleted {
                    model.tokens = None;
                    model.valid = None;
                }
            }
            FileOp::Unlock(which, stale) => {
                let (process, key) = at(which);
                let fence = self.fence(process, key, stale);
                self.stores[process]
                    .unlock_refresh(KEYS[key], fence)
                    .map_err(|e| format!("unlock failed: {e}"))?;
                let model = &mut self.keys[key];
                if model.holder == Some((process, fence)) {
                    model.holder = None;
                }
            }
            FileOp::Die(process) => {
                let process = usize::from(process) % PROCESSES;
                self.stores[process] = FileStore::new(&self.path);
                for model in &mut self.keys {
                    if model.holder.is_some_and(|(holder, _)| holder == process) {
                        model.holder = None;
                    }
                }
            }
        }
        self.forget_fences_of_an_empty_file();
        Ok(())
    }

    /// A file with nothing stored is removed, its fences with it.
    fn forget_fences_of_an_empty_file(&mut self) {
        if self.keys.iter().all(|model| model.tokens.is_none()) {
            for model in &mut self.keys {
                model.valid = None;
            }
        }
    }

    fn check_load(&self, process: usize, key: usize) -> Result<(), String> {
        let loaded = self.stores[process]
            .load(KEYS[key])
            .map_err(|e| format!("load failed: {e}"))?
            .map(|tokens| tokens.access_token().expose_secret().to_owned());
        match loaded == self.keys[key].tokens {
            true => Ok(()),
            false => Err(format!(
                "{} holds {loaded:?}, the model {:?}",
                KEYS[key], self.keys[key].tokens
            )),
        }
    }

    /// Checks every key from every process, then that every lock is free once its holder
    /// dies.
    ///
    /// # Errors
    ///
    /// The first difference, described.
    pub fn settle(&mut self) -> Result<(), String> {
        for process in 0..PROCESSES {
            for key in 0..KEYS.len() {
                self.check_load(process, key)?;
            }
        }
        for process in 0..PROCESSES {
            self.apply(FileOp::Die(u8::try_from(process).unwrap_or(0)))?;
        }
        for key in 0..KEYS.len() {
            let key = u8::try_from(key).unwrap_or(0);
            self.apply(FileOp::Lock(At { process: 0, key }))?;
        }
        Ok(())
    }
}

/// Runs `ops` and settles.
///
/// # Errors
///
/// The first broken rule, described.
pub fn run_file_ops(ops: &[FileOp]) -> Result<(), String> {
    let mut sim = FileSim::new();
    for (index, op) in ops.iter().enumerate() {
        sim.apply(*op)
            .map_err(|error| format!("step {index} {op:?}: {error}"))?;
    }
    sim.settle()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_that_dies_frees_the_lock_and_its_fence_opens_nothing_after_a_save() {
        let at = |process, key| At { process, key };
        let ops = [
            FileOp::Save(at(0, 0)),
            FileOp::Lock(at(1, 0)),
            FileOp::Lock(at(2, 0)),
            FileOp::Die(1),
            FileOp::Save(at(0, 0)),
            FileOp::Lock(at(2, 0)),
            FileOp::SaveFenced(at(1, 0), false),
            FileOp::SaveFenced(at(2, 0), false),
            FileOp::Load(at(1, 0)),
        ];
        run_file_ops(&ops).expect("the rules hold");
    }
}
