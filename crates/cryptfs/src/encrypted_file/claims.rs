//! Which blocks of one file the operations in flight hold: readers share blocks,
//! a writer holds its blocks alone. Writes to different blocks of one file run in
//! parallel (the kernel's writeback sends several at once); a read never sees a
//! block half written.

use std::ops::Range;

/// Every block of a file (truncation, syncs, a file's first write).
pub(super) const WHOLE_FILE: Range<u64> = 0..u64::MAX;

/// The claims held on one file. Few at a time (one per request thread at most),
/// so a list is the fastest set.
#[derive(Default)]
pub(super) struct BlockClaims {
    held: Vec<Claim>,
    next_id: u64,
}

struct Claim {
    id: u64,
    blocks: Range<u64>,
    exclusive: bool,
}

impl BlockClaims {
    /// True when a claim of `blocks` (alone if `exclusive`) must wait for one held.
    /// An empty range conflicts with nothing.
    pub(super) fn conflicts(&self, blocks: &Range<u64>, exclusive: bool) -> bool {
        !blocks.is_empty()
            && self.held.iter().any(|held| {
                (exclusive || held.exclusive)
                    && held.blocks.start < blocks.end
                    && blocks.start < held.blocks.end
            })
    }

    /// Records a claim that does not conflict; returns its id for [`BlockClaims::release`].
    pub(super) fn hold(&mut self, blocks: Range<u64>, exclusive: bool) -> u64 {
        debug_assert!(!self.conflicts(&blocks, exclusive));
        let id = self.next_id;
        self.next_id += 1;
        self.held.push(Claim {
            id,
            blocks,
            exclusive,
        });
        id
    }

    pub(super) fn release(&mut self, id: u64) {
        self.held.retain(|claim| claim.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_share_and_writers_exclude_overlapping_blocks_only() {
        let mut claims = BlockClaims::default();
        let reader = claims.hold(0..4, false);
        assert!(!claims.conflicts(&(2..6), false), "readers share");
        assert!(
            claims.conflicts(&(3..5), true),
            "a writer waits for a reader"
        );
        assert!(
            !claims.conflicts(&(4..8), true),
            "disjoint blocks do not conflict"
        );
        let writer = claims.hold(4..8, true);
        assert!(
            claims.conflicts(&(7..9), false),
            "a reader waits for a writer"
        );
        assert!(claims.conflicts(&WHOLE_FILE, false));
        assert!(
            !claims.conflicts(&(9..9), true),
            "an empty range waits for nothing"
        );
        claims.release(writer);
        assert!(!claims.conflicts(&(7..9), true));
        assert!(claims.conflicts(&WHOLE_FILE, true));
        claims.release(reader);
        assert!(!claims.conflicts(&WHOLE_FILE, true));
    }
}
