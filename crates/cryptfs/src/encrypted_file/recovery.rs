//! Crash recovery of one file: what a crash may leave behind, and how it is put
//! right (idempotently, so a crash during recovery is harmless).
//!
//! A crash can tear only slots written since the last sync, and never a block's
//! durable slot. So after a crash, a block whose newest slot fails authentication
//! while its other slot passes had a pending write torn: the torn slot is cleared
//! and the durable version is current again. Nothing here ever rewrites a slot that
//! authenticates; it only clears slots that do not, and cuts the file's end.

use std::sync::{Arc, PoisonError};

use super::meta_pages::{
    block_entries, cut_after, cut_point, read_zero_padded, reported_plain_len,
};
use super::EncryptedFile;
use crate::content::{FileCipher, VolumeKey};
use crate::format::{
    current_slot, data_offset, entry_offset, group_offset, groups_in, Slot, SlotEntry, BLOCK_SIZE,
    ENTRY_SIZE, GROUP_BLOCKS, GROUP_SIZE, HEADER_LEN,
};
use crate::storage::Storage;
use crate::Error;

/// What crash recovery found in one file (block numbers, ascending).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileRecovery {
    /// Blocks whose newest slot was torn while the other slot is intact: the torn
    /// slot is cleared and the block reads as its last durable version.
    pub repaired: Vec<u64>,
    /// Blocks whose current slot is intact but whose older slot was torn: cleared,
    /// so that a later check does not take it for tampering.
    pub stale_cleared: Vec<u64>,
    /// Blocks cut off the end of the file: trailing blocks without an intact slot
    /// (a torn extension), and every block after a block shorter than 4096 bytes
    /// (an extension whose earlier part was lost).
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

/// The state of one block after checking both slots.
struct BlockCheck {
    /// Either slot has an entry.
    present: bool,
    /// The slot with the higher generation (the one normal reads use).
    newest: Slot,
    /// The intact slot to keep (the newest that authenticates) and its header.
    intact: Option<(Slot, SlotEntry)>,
    /// A non-empty slot that fails authentication.
    torn: Option<Slot>,
}

/// What recovery will do: clear these slots' entries, then drop the blocks from
/// `keep` on (`None`: nothing to drop).
struct RecoveryPlan {
    found: FileRecovery,
    clear: Vec<(u64, Slot)>,
    drop_from: Option<(u64, u64)>,
}

/// True when a crash lost the file's header: the cipher file is shorter than a
/// header, or its header bytes are all zeros (they share one 512-byte sector, so a
/// crash keeps all or none of them). The header is written when the file gets its
/// first content and reaches the disk with the file's first sync, so a lost header
/// means nothing in the file was ever synced (`docs/format.md` §3.5). Any other
/// invalid header is damage (tampering) and stays an error.
pub fn header_lost<S: Storage>(storage: &S) -> Result<bool, Error> {
    let size = storage.size()?;
    if size == 0 {
        return Ok(false);
    }
    if size < HEADER_LEN {
        return Ok(true);
    }
    let mut header = [0u8; HEADER_LEN as usize];
    storage.read_exact_at(&mut header, 0)?;
    Ok(header.iter().all(|&b| b == 0))
}

impl<S: Storage> EncryptedFile<S> {
    /// What the mount runs on every file of a volume whose last session crashed: a
    /// file whose header was lost ([`header_lost`]) is emptied (all its blocks
    /// reported dropped), any other is opened and [recovered](EncryptedFile::recover).
    pub fn open_after_crash(
        storage: S,
        volume: Arc<VolumeKey>,
    ) -> Result<(Self, FileRecovery), Error> {
        if header_lost(&storage)? {
            let blocks = reported_plain_len(&storage)
                .unwrap_or(0)
                .div_ceil(BLOCK_SIZE)
                .max(1);
            storage.set_len(0)?;
            storage.sync_data()?;
            let found = FileRecovery {
                dropped: (0..blocks).collect(),
                ..FileRecovery::default()
            };
            return Ok((Self::open(storage, volume)?, found));
        }
        let mut file = Self::open(storage, volume)?;
        let found = file.recover()?;
        Ok((file, found))
    }

    /// Crash recovery: checks both slots of every block; clears torn slots whose
    /// block has an intact slot, drops an incomplete end of file, syncs. Run only
    /// after a crash (a dirty volume): in normal operation a current slot that
    /// fails authentication is tampering and must read as `EIO`.
    pub fn recover(&mut self) -> Result<FileRecovery, Error> {
        let plan = self.plan_recovery()?;
        let zeros = [0u8; ENTRY_SIZE as usize];
        for &(block, slot) in &plan.clear {
            self.storage
                .write_all_at(&zeros, entry_offset(block, slot))?;
        }
        if let Some((keep, blocks)) = plan.drop_from {
            cut_after(&self.storage, keep.checked_sub(1), blocks)?;
        }
        if !plan.clear.is_empty() || plan.drop_from.is_some() {
            self.storage.sync_data()?;
        }
        let len = reported_plain_len(&self.storage)?;
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        state.slots.forget();
        state.len = len;
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
            drop_from: None,
        };
        let Some(cipher) = self.state().cipher.clone() else {
            return Ok(plan);
        };
        let cipher_len = self.storage.size()?;
        let checks = self.check_blocks(&cipher, groups_in(cipher_len))?;
        // Blocks with any entry (the rest are past the end).
        let blocks = checks
            .iter()
            .rposition(|c| c.present)
            .map_or(0, |last| last as u64 + 1);
        // The file ends at its first short block: an earlier version of an extension.
        let mut end = checks[..blocks as usize]
            .iter()
            .position(|c| {
                c.intact
                    .is_some_and(|(_, e)| u64::from(e.plain_len) < BLOCK_SIZE)
            })
            .map_or(blocks, |short| short as u64 + 1);
        // Trailing blocks without an intact slot are an extension that never landed.
        while end > 0 && checks[end as usize - 1].intact.is_none() {
            end -= 1;
        }
        if end < blocks || cipher_len > cut_point(end.checked_sub(1)) {
            plan.drop_from = Some((end, blocks));
            plan.found.dropped = (end..blocks).collect();
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

    /// Checks both slots of every block of groups `0..groups`.
    fn check_blocks(&self, cipher: &FileCipher, groups: u64) -> Result<Vec<BlockCheck>, Error> {
        let mut checks = Vec::with_capacity((groups * GROUP_BLOCKS) as usize);
        let mut scratch = [0u8; BLOCK_SIZE as usize];
        let mut buf = vec![0u8; GROUP_SIZE as usize];
        for group in 0..groups {
            read_zero_padded(&self.storage, &mut buf, group_offset(group))?;
            let meta: &[u8; BLOCK_SIZE as usize] =
                buf[..BLOCK_SIZE as usize].try_into().expect("one page");
            for block in group * GROUP_BLOCKS..(group + 1) * GROUP_BLOCKS {
                let (a, b) = block_entries(meta, block);
                let mut intact = None;
                let mut torn = None;
                // Newest first, so `intact` is the newest slot that authenticates.
                let newest = current_slot(&a, &b).unwrap_or(Slot::A);
                for slot in [newest, newest.other()] {
                    let entry = if slot == Slot::A { a } else { b };
                    if entry.is_empty() {
                        continue;
                    }
                    let page_at = (data_offset(block, slot) - group_offset(group)) as usize;
                    let len = (entry.plain_len as usize).min(scratch.len());
                    let ciphertext = &buf[page_at..page_at + len];
                    match cipher.open(block, &entry, ciphertext, &mut scratch[..len]) {
                        Ok(()) if intact.is_none() => intact = Some((slot, entry)),
                        Ok(()) => {}
                        Err(_) => torn = Some(slot),
                    }
                }
                checks.push(BlockCheck {
                    present: !a.is_empty() || !b.is_empty(),
                    newest,
                    intact,
                    torn,
                });
            }
        }
        Ok(checks)
    }
}
