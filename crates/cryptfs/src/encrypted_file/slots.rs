//! Which slot of each block holds its durable version and which a pending one:
//! what a file remembers in memory between syncs.

use std::collections::HashMap;

use crate::format::Slot;

/// Blocks whose durable slot is remembered per file (≈ 160 KiB of memory at most),
/// so that rewriting a hot block needs no read of its group's metadata page.
const DURABLE_SLOTS_CACHED: usize = 4096;

/// What a file knows in memory about its blocks' slots.
#[derive(Default)]
pub(super) struct SlotState {
    /// Blocks written since the last completed sync, with the slot and generation
    /// their pending version uses; the other slot holds the durable version, which
    /// must not be overwritten until a sync covers the pending one. Bounded by the
    /// unsynced data; emptied by every completed sync.
    pub(super) pending: HashMap<u64, (Slot, u64)>,
    /// The current (durable) slot and generation of blocks written before the last
    /// completed sync: what their metadata entries say, without reading them. Bounded
    /// (cleared when full); only ever filled from `pending` at a completed sync.
    pub(super) durable: HashMap<u64, (Slot, u64)>,
    /// A write failed since the last sync: a pending slot may not hold what was
    /// meant for it, so the next sync must not vouch for it.
    pub(super) write_failed: bool,
    /// Blocks whose pending version replaces a hole, with the hole's slot: once the
    /// new version is durable the hole's entry is cleared, so that erasing the new
    /// entry cannot make the block read as zeros again.
    pub(super) filled_holes: Vec<(u64, Slot)>,
}

impl SlotState {
    /// A sync completed: every pending version is now the durable one. Returns the
    /// hole slots those versions replaced (none after a failed write).
    pub(super) fn synced(&mut self) -> Vec<(u64, Slot)> {
        if self.durable.len() + self.pending.len() > DURABLE_SLOTS_CACHED {
            self.durable.clear();
        }
        let pending = std::mem::take(&mut self.pending);
        let filled_holes = std::mem::take(&mut self.filled_holes);
        if std::mem::take(&mut self.write_failed) {
            return Vec::new();
        }
        if pending.len() <= DURABLE_SLOTS_CACHED {
            self.durable.extend(pending);
        }
        filled_holes
    }

    /// True when a pending version replaces an older version of its block (its
    /// generation is above 1): that older version, in the other slot, is the durable
    /// one. A block's first version (slot A, generation 1) replaces nothing.
    pub(super) fn replaces_durable(&self) -> bool {
        self.pending.values().any(|&(_, generation)| generation > 1)
    }

    pub(super) fn forget(&mut self) {
        self.pending.clear();
        self.durable.clear();
        self.filled_holes.clear();
    }
}
