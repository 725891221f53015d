//! A simulated disk that loses and tears unsynced writes, for crash-consistency tests.
//!
//! Writes and size changes go to a pending list; `sync_data` makes them durable.
//! [`SimulatedDisk::crash`] keeps the durable image plus a random subset of the
//! pending operations, each write torn at 512-byte sector granularity — what a
//! power cut can leave behind on a real disk and page cache. [`SimulatedDir`] adds
//! the names: a directory whose creations, renames and unlinks become durable with
//! its own fsync.

mod directory;

use std::io;
use std::sync::Mutex;

use crate::storage::Storage;

pub use directory::{InodeId, SimulatedDir};

/// Sector size at which in-flight writes may tear.
pub const SECTOR: usize = 512;

enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

struct State {
    durable: Vec<u8>,
    /// What reads see: durable plus every pending operation.
    current: Vec<u8>,
    pending: Vec<Pending>,
    /// Syncs fail (and make nothing durable): a crash during a sync.
    fail_syncs: bool,
    /// Completed syncs, for tests of what costs a sync.
    syncs: u64,
}

/// An in-memory [`Storage`] with crash simulation.
pub struct SimulatedDisk {
    state: Mutex<State>,
}

impl Default for SimulatedDisk {
    fn default() -> Self {
        Self::new()
    }
}

impl SimulatedDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::from_bytes(Vec::new())
    }

    /// A disk whose durable content is `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self {
            state: Mutex::new(State {
                current: bytes.clone(),
                durable: bytes,
                pending: Vec::new(),
                fail_syncs: false,
                syncs: 0,
            }),
        }
    }

    /// Everything reads currently see.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().current.clone()
    }

    /// Simulates a crash: returns a disk holding the durable image plus a random
    /// subset of the pending operations (in order), each write's sectors kept or
    /// lost independently. `random` supplies the decisions.
    pub fn crash(&self, random: &mut dyn FnMut() -> u64) -> SimulatedDisk {
        let state = self.lock();
        let mut image = state.durable.clone();
        for op in &state.pending {
            match op {
                Pending::SetLen(len) => {
                    if random() & 1 == 0 {
                        resize_zeroed(&mut image, *len as usize);
                    }
                }
                Pending::Write { offset, data } => {
                    let offset = *offset as usize;
                    for (i, sector) in data.chunks(SECTOR).enumerate() {
                        if random() & 1 == 0 {
                            apply_write(&mut image, offset + i * SECTOR, sector);
                        }
                    }
                }
            }
        }
        SimulatedDisk::from_bytes(image)
    }

    /// How many syncs have completed on this disk.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Makes every later sync fail without making anything durable, so that a
    /// crash can hit an operation (such as crash recovery) before its sync.
    pub fn fail_syncs(&self, fail: bool) {
        self.lock().fail_syncs = fail;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn apply_write(image: &mut Vec<u8>, offset: usize, data: &[u8]) {
    let end = offset + data.len();
    if image.len() < end {
        resize_zeroed(image, end);
    }
    image[offset..end].copy_from_slice(data);
}

/// `Vec::resize(len, 0)` via a zeroed allocation and one copy: keeps the
/// thousand-seed crash test fast in unoptimised builds.
fn resize_zeroed(image: &mut Vec<u8>, len: usize) {
    if len <= image.len() {
        image.truncate(len);
    } else {
        let mut grown = vec![0u8; len];
        grown[..image.len()].copy_from_slice(image);
        *image = grown;
    }
}

fn to_usize(value: u64) -> io::Result<usize> {
    usize::try_from(value).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl Storage for SimulatedDisk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let state = self.lock();
        let start = to_usize(offset)?;
        let end = start + buf.len();
        if end > state.current.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        buf.copy_from_slice(&state.current[start..end]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.lock();
        let start = to_usize(offset)?;
        apply_write(&mut state.current, start, buf);
        state.pending.push(Pending::Write {
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.lock().current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        resize_zeroed(&mut state.current, to_usize(len)?);
        state.pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.lock();
        if state.fail_syncs {
            return Err(io::Error::other("simulated crash before the sync"));
        }
        state.durable = state.current.clone();
        state.pending.clear();
        state.syncs += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_survives_unsynced_may_tear() {
        let disk = SimulatedDisk::new();
        disk.write_all_at(&[1; 1024], 0).unwrap();
        disk.sync_data().unwrap();
        disk.write_all_at(&[2; 1024], 0).unwrap();
        // Decisions: keep the first sector of the second write, lose the second.
        let mut decisions = [0u64, 1].into_iter().cycle();
        let crashed = disk.crash(&mut || decisions.next().unwrap());
        let image = crashed.contents();
        assert_eq!(&image[..512], &[2; 512][..]);
        assert_eq!(&image[512..], &[1; 512][..]);
        // Losing everything unsynced gives the durable image back.
        let crashed = disk.crash(&mut || 1);
        assert_eq!(crashed.contents(), vec![1; 1024]);
    }
}
