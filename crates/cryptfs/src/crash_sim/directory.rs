//! A simulated directory: names of [`SimulatedDisk`]s whose changes become durable
//! when the directory is fsynced, as PostgreSQL relies on (`durable_rename`: fsync the
//! file, rename it, fsync the directory; relation files created and unlinked, the
//! unlink made durable by the directory's fsync).
//!
//! The model is what a journaling filesystem (ext4, XFS) gives: every name operation
//! is atomic, and a crash keeps the names as of the last fsync of the directory plus
//! a random-length **prefix** of the operations since — never a later operation
//! without an earlier one (a rename is never kept without the create of its source).
//! File contents crash independently of their names ([`SimulatedDisk::crash`]): an
//! inode survives with its durable bytes and a random subset of its unsynced writes,
//! whichever names it keeps.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::SimulatedDisk;

/// Which file a name leads to (stable across crashes, for checking against a model).
pub type InodeId = u64;

type Names = BTreeMap<String, (InodeId, Arc<SimulatedDisk>)>;

enum NameOp {
    Create(String, InodeId, Arc<SimulatedDisk>),
    Rename(String, String),
    Unlink(String),
}

#[derive(Default)]
struct DirState {
    durable: Names,
    current: Names,
    /// Name operations since the last fsync of the directory, in order.
    pending: Vec<NameOp>,
    next_inode: InodeId,
}

/// A directory of simulated files with crash simulation.
#[derive(Default)]
pub struct SimulatedDir {
    state: Mutex<DirState>,
}

fn apply(names: &mut Names, op: &NameOp) {
    match op {
        NameOp::Create(name, id, disk) => {
            names.insert(name.clone(), (*id, disk.clone()));
        }
        NameOp::Rename(from, to) => {
            if let Some(file) = names.remove(from) {
                names.insert(to.clone(), file);
            }
        }
        NameOp::Unlink(name) => {
            names.remove(name);
        }
    }
}

impl SimulatedDir {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, DirState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(state: &mut DirState, op: NameOp) {
        apply(&mut state.current, &op);
        state.pending.push(op);
    }

    /// Creates an empty file named `name` (`O_CREAT | O_EXCL`).
    pub fn create(&self, name: &str) -> io::Result<(InodeId, Arc<SimulatedDisk>)> {
        let mut state = self.lock();
        if state.current.contains_key(name) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        state.next_inode += 1;
        let (id, disk) = (state.next_inode, Arc::new(SimulatedDisk::new()));
        Self::record(&mut state, NameOp::Create(name.into(), id, disk.clone()));
        Ok((id, disk))
    }

    /// The file named `name`.
    pub fn open(&self, name: &str) -> io::Result<(InodeId, Arc<SimulatedDisk>)> {
        let state = self.lock();
        let (id, disk) = state.current.get(name).ok_or(io::ErrorKind::NotFound)?;
        Ok((*id, disk.clone()))
    }

    /// Renames `from` to `to`, replacing `to` if it exists (`rename(2)`).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.lock();
        if !state.current.contains_key(from) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Self::record(&mut state, NameOp::Rename(from.into(), to.into()));
        Ok(())
    }

    /// Removes the name `name`; a file still open stays usable through its handle.
    pub fn unlink(&self, name: &str) -> io::Result<()> {
        let mut state = self.lock();
        if !state.current.contains_key(name) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Self::record(&mut state, NameOp::Unlink(name.into()));
        Ok(())
    }

    /// `fsync` of the directory: every name operation so far is durable.
    pub fn sync(&self) {
        let mut state = self.lock();
        state.durable = state.current.clone();
        state.pending.clear();
    }

    /// The names and the files they lead to now.
    pub fn entries(&self) -> Vec<(String, InodeId)> {
        let state = self.lock();
        state
            .current
            .iter()
            .map(|(n, (id, _))| (n.clone(), *id))
            .collect()
    }

    /// Simulates a crash: the durable names plus a random-length prefix of the name
    /// operations since, each surviving file crashed once (see [`SimulatedDisk::crash`]).
    pub fn crash(&self, random: &mut dyn FnMut() -> u64) -> SimulatedDir {
        let state = self.lock();
        let kept = (random() % (state.pending.len() as u64 + 1)) as usize;
        let mut names = state.durable.clone();
        for op in &state.pending[..kept] {
            apply(&mut names, op);
        }
        let mut crashed: BTreeMap<InodeId, Arc<SimulatedDisk>> = BTreeMap::new();
        for (id, disk) in names.values_mut() {
            let image = crashed
                .entry(*id)
                .or_insert_with(|| Arc::new(disk.crash(random)));
            *disk = image.clone();
        }
        SimulatedDir {
            state: Mutex::new(DirState {
                durable: names.clone(),
                current: names,
                pending: Vec::new(),
                next_inode: state.next_inode,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    #[test]
    fn names_are_durable_after_the_directory_fsync_and_crash_in_order() {
        let dir = SimulatedDir::new();
        let (a, disk) = dir.create("tmp").unwrap();
        disk.write_all_at(b"data", 0).unwrap();
        disk.sync_data().unwrap();
        dir.rename("tmp", "final").unwrap();
        // Nothing pending kept: only the durable (empty) directory.
        assert!(dir.crash(&mut || 0).entries().is_empty());
        // Everything kept: the rename, never without the create before it.
        let all = dir.crash(&mut || u64::MAX - 1);
        assert_eq!(all.entries(), vec![("final".to_string(), a)]);
        dir.sync();
        let crashed = dir.crash(&mut || 1);
        assert_eq!(crashed.entries(), vec![("final".to_string(), a)]);
        assert_eq!(crashed.open("final").unwrap().1.contents(), b"data");
        dir.unlink("final").unwrap();
        assert_eq!(
            dir.crash(&mut || 0).entries().len(),
            1,
            "unlink not durable yet"
        );
        dir.sync();
        assert!(dir.crash(&mut || 1).entries().is_empty());
    }
}
