//! Crash recovery of one file: what a crash may leave behind, and how it is put
//! right (idempotently, so a crash during recovery is harmless).
//!
//! A crash can tear only slots written since the last sync, and never a block's
//! durable slot. So after a crash, a block whose newest slot fails authentication
//! while its other slot passes had a pending write torn: the torn slot is cleared
//! and the durable version is current again. Nothing here ever rewrites a slot that
//! authenticates; it only clears slots that do not, and cuts the file's end.

use super::{open_slot, pair_headers, reported_plain_len, slot_bytes, EncryptedFile};
use crate::format::{
    current_slot, pair_offset, slot_offset, whole_pairs, Slot, SlotHeader, BLOCK_SIZE, PAIR_SIZE,
    SLOT_SIZE,
};
use crate::storage::Storage;
use crate::Error;

/// Pairs read per backing read while scanning.
const SCAN_PAIRS: u64 = 32;

/// What crash recovery found in one file (block numbers, ascending).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileRecovery {
    /// Blocks whose newest slot was torn while the other slot is intact: the torn
    /// slot is cleared and the block reads as its last durable version.
    pub repaired: Vec<u64>,
    /// Blocks whose current slot is intact but whose older slot was torn: cleared,
    /// so that a later check does not take it for tampering.
    pub stale_cleared: Vec<u64>,
    /// Blocks cut off the end of the file: a partial trailing pair (a torn
    /// extension), trailing pairs without an intact slot, and every pair after a
    /// block shorter than 4096 bytes (an extension whose earlier part was lost).
    pub dropped: Vec<u64>,
    /// Blocks with no intact slot that stay (reads of them fail with `EIO`): only
    /// tampering, or a torn write of a block created since the last sync in the
    /// middle of the file.
    pub bad: Vec<u64>,
}

impl FileRecovery {
    /// True when the file needed no change.
    pub fn is_clean(&self) -> bool {
        self.repaired.is_empty() && self.stale_cleared.is_empty() && self.dropped.is_empty()
    }
}

/// The state of one pair after checking both slots.
struct PairCheck {
    /// The slot with the higher generation (the one normal reads use).
    newest: Slot,
    /// The intact slot to keep (the newest that authenticates) and its header.
    intact: Option<(Slot, SlotHeader)>,
    /// A non-empty slot that fails authentication.
    torn: Option<Slot>,
}

/// What recovery will do: clear these slots, then cut the file to this size.
struct RecoveryPlan {
    found: FileRecovery,
    clear: Vec<(u64, Slot)>,
    cut_to: Option<u64>,
}

impl<S: Storage> EncryptedFile<S> {
    /// Crash recovery: checks both slots of every block; clears torn slots whose
    /// block has an intact slot, drops an incomplete end of file, syncs. Run only
    /// after a crash (a dirty volume): in normal operation a current slot that
    /// fails authentication is tampering and must read as `EIO`.
    pub fn recover(&mut self) -> Result<FileRecovery, Error> {
        let plan = self.plan_recovery()?;
        let zeros = vec![0u8; SLOT_SIZE as usize];
        for &(block, slot) in &plan.clear {
            self.storage
                .write_all_at(&zeros, slot_offset(block, slot))?;
        }
        if let Some(len) = plan.cut_to {
            self.storage.set_len(len)?;
        }
        if !plan.clear.is_empty() || plan.cut_to.is_some() {
            self.storage.sync_data()?;
        }
        self.slots().forget();
        self.len = reported_plain_len(&self.storage)?;
        Ok(plan.found)
    }

    /// What [`EncryptedFile::recover`] would do, without changing anything.
    pub fn check_recovery(&self) -> Result<FileRecovery, Error> {
        Ok(self.plan_recovery()?.found)
    }

    fn plan_recovery(&self) -> Result<RecoveryPlan, Error> {
        let mut plan = RecoveryPlan {
            found: FileRecovery::default(),
            clear: Vec::new(),
            cut_to: None,
        };
        if self.cipher.is_none() {
            return Ok(plan);
        }
        let (pairs, partial) = whole_pairs(self.storage.size()?);
        let checks = self.check_pairs(pairs)?;
        // The file ends at its first short block: an earlier version of an extension.
        let mut end = checks
            .iter()
            .position(|c| {
                c.intact
                    .is_some_and(|(_, h)| u64::from(h.plain_len) < BLOCK_SIZE)
            })
            .map_or(pairs, |short| short as u64 + 1);
        // Trailing pairs without an intact slot are an extension that never landed.
        while end > 0 && checks[end as usize - 1].intact.is_none() {
            end -= 1;
        }
        if end < pairs || partial {
            plan.cut_to = Some(pair_offset(end));
            plan.found.dropped = (end..pairs + u64::from(partial)).collect();
        }
        for (block, check) in (0..end).zip(&checks) {
            let Some((intact, _)) = check.intact else {
                plan.found.bad.push(block);
                continue;
            };
            if let Some(torn) = check.torn {
                plan.clear.push((block, torn));
                if torn == check.newest && torn == intact.other() {
                    plan.found.repaired.push(block);
                } else {
                    plan.found.stale_cleared.push(block);
                }
            }
        }
        Ok(plan)
    }

    /// Checks both slots of pairs `0..pairs`.
    fn check_pairs(&self, pairs: u64) -> Result<Vec<PairCheck>, Error> {
        let cipher = self.cipher()?;
        let mut checks = Vec::with_capacity(pairs as usize);
        let mut scratch = vec![0u8; BLOCK_SIZE as usize];
        let mut first = 0;
        while first < pairs {
            let count = SCAN_PAIRS.min(pairs - first);
            let mut buf = vec![0u8; (count * PAIR_SIZE) as usize];
            self.storage.read_exact_at(&mut buf, pair_offset(first))?;
            for (block, pair) in (first..).zip(buf.chunks_exact(PAIR_SIZE as usize)) {
                let (a, b) = pair_headers(pair);
                let mut intact = None;
                let mut torn = None;
                // Newest first, so `intact` is the newest slot that authenticates.
                let newest = current_slot(&a, &b).unwrap_or(Slot::A);
                for slot in [newest, newest.other()] {
                    let header = if slot == Slot::A { a } else { b };
                    if header.is_empty() {
                        continue;
                    }
                    let len = (header.plain_len as usize).min(scratch.len());
                    let opened = open_slot(
                        cipher,
                        block,
                        slot_bytes(pair, slot),
                        &header,
                        &mut scratch[..len],
                    );
                    match opened {
                        Ok(()) if intact.is_none() => intact = Some((slot, header)),
                        Ok(()) => {}
                        Err(_) => torn = Some(slot),
                    }
                }
                checks.push(PairCheck {
                    newest,
                    intact,
                    torn,
                });
            }
            first += count;
        }
        Ok(checks)
    }
}
