//! Which blocks of one file the operations in flight hold: readers share blocks,
//! a writer holds its blocks alone. Writes to different blocks of one file run in
//! parallel (the kernel's writeback sends several at once); a read never sees a
//! block half written.

use std::ops::Range;

/// Every block of a file (truncation, syncs, a file's first write).
pub(super) const WHOLE_FILE: Range<u64> = 0..u64::MAX;

/// The claims held on one file, and those waiting. Few at a time (one per request
/// thread at most), so lists are the fastest sets.
///
/// Waiting claims queue in arrival order: a claim also waits for every earlier
/// waiting claim it conflicts with, so a stream of overlapping reads cannot starve a
/// write, nor writes a truncation.
#[derive(Default)]
pub(super) struct BlockClaims {
    held: Vec<Claim>,
    waiting: Vec<Claim>,
    next_id: u64,
}

struct Claim {
    id: u64,
    blocks: Range<u64>,
    exclusive: bool,
}

impl Claim {
    /// True when this claim and one of `blocks` (alone if `exclusive`) cannot be
    /// held together. An empty range conflicts with nothing.
    fn conflicts(&self, blocks: &Range<u64>, exclusive: bool) -> bool {
        (exclusive || self.exclusive)
            && !self.blocks.is_empty()
            && !blocks.is_empty()
            && self.blocks.start < blocks.end
            && blocks.start < self.blocks.end
    }
}

impl BlockClaims {
    /// Holds `blocks` (alone if `exclusive`) unless that conflicts with a claim held
    /// or with an earlier waiting one: then the claim waits in the queue and `Err`
    /// gives its ticket, to pass on the next try (with the blocks wanted then).
    /// `Ok` gives the id for [`BlockClaims::release`].
    pub(super) fn try_hold(
        &mut self,
        blocks: Range<u64>,
        exclusive: bool,
        ticket: Option<u64>,
    ) -> Result<u64, u64> {
        let id = ticket.unwrap_or_else(|| {
            self.next_id += 1;
            self.next_id
        });
        let blocked = self
            .held
            .iter()
            .chain(self.waiting.iter().filter(|waiting| waiting.id < id))
            .any(|claim| claim.conflicts(&blocks, exclusive));
        self.waiting.retain(|waiting| waiting.id != id);
        let claim = Claim {
            id,
            blocks,
            exclusive,
        };
        if blocked {
            self.waiting.push(claim);
            Err(id)
        } else {
            self.held.push(claim);
            Ok(id)
        }
    }

    /// Releases claim `id`; true when claims are waiting (they must be woken to try
    /// again).
    pub(super) fn release(&mut self, id: u64) -> bool {
        self.held.retain(|claim| claim.id != id);
        !self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_share_and_writers_exclude_overlapping_blocks_only() {
        let mut claims = BlockClaims::default();
        let reader = claims.try_hold(0..4, false, None).unwrap();
        let shared = claims.try_hold(2..6, false, None).expect("readers share");
        assert!(!claims.release(shared), "nobody waits: no wake-up");
        let writer = claims.try_hold(4..8, true, None).expect("disjoint blocks");
        let ticket = claims
            .try_hold(7..9, false, None)
            .expect_err("a reader waits for a writer");
        assert!(claims.release(writer), "the waiting reader is woken");
        let late = claims.try_hold(7..9, false, Some(ticket)).unwrap();
        claims.release(late);
        assert!(
            claims.try_hold(9..9, true, None).is_ok(),
            "an empty range waits for nothing"
        );
        let whole = claims
            .try_hold(WHOLE_FILE, true, None)
            .expect_err("a writer waits for a reader");
        claims.release(reader);
        assert!(claims.try_hold(WHOLE_FILE, true, Some(whole)).is_ok());
    }

    #[test]
    fn a_waiting_writer_goes_before_readers_that_come_after_it() {
        let mut claims = BlockClaims::default();
        let first = claims.try_hold(0..4, false, None).unwrap();
        let writer = claims.try_hold(2..3, true, None).unwrap_err();
        let overlapping = claims
            .try_hold(2..6, false, None)
            .expect_err("a reader queues behind the writer waiting for its blocks");
        let elsewhere = claims
            .try_hold(0..1, false, None)
            .expect("blocks nobody waits for are shared at once");
        claims.release(first);
        let overlapping = claims
            .try_hold(2..6, false, Some(overlapping))
            .expect_err("still behind the writer");
        let writer = claims.try_hold(2..3, true, Some(writer)).unwrap();
        claims.release(writer);
        claims.try_hold(2..6, false, Some(overlapping)).unwrap();
        claims.release(elsewhere);
    }
}
