//! Write-behind for large direct-I/O writes (PostgreSQL zero-filling a new WAL
//! segment, 256 KiB per request, its caller waiting for each in turn): their backing
//! pages start going to the disk while the daemon seals the next request, so the
//! segment's `fsync` waits for less.
//!
//! `sync_file_range(SYNC_FILE_RANGE_WRITE)` allocates blocks and submits the I/O in
//! the calling thread, and waits when the disk's queue is full: called by the request
//! thread itself, it delayed the segment's next write as much as it sped up the sync
//! (`bench/RESULTS.md`), so one worker per process does it for every file; a hint that
//! finds the queue full is dropped (the sync writes those pages anyway). Writes from
//! the page cache get none: files that PostgreSQL fills and soon drops (its regression
//! suites) would be sent to the disk for nothing (`bench/RESULTS.md`, 2026-12-08).

use std::fs::File;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::OnceLock;

/// Ranges waiting for the worker: a few WAL segments' worth.
const QUEUED: usize = 64;

type Range = (File, u64, u64);

/// Asks the worker to start writing `len` bytes at `offset` of `file` to the disk.
/// Best effort: nothing happens if the descriptor cannot be duplicated, the worker
/// cannot be started or its queue is full. Makes nothing durable.
pub(crate) fn start(file: &File, offset: u64, len: u64) {
    let Some(worker) = worker() else {
        return;
    };
    // The worker's own descriptor of the file, closed when done: the request's may be
    // closed meanwhile (the file released).
    if let Ok(file) = file.try_clone() {
        let _ = worker.try_send((file, offset, len));
    }
}

fn worker() -> Option<&'static SyncSender<Range>> {
    static WORKER: OnceLock<Option<SyncSender<Range>>> = OnceLock::new();
    WORKER
        .get_or_init(|| {
            let (sender, receiver) = sync_channel::<Range>(QUEUED);
            std::thread::Builder::new()
                .name("cryptfs-write-behind".into())
                .spawn(move || {
                    for (file, offset, len) in receiver {
                        let _ = crate::sys::start_writeback(&file, offset, len);
                    }
                })
                .ok()
                .map(|_| sender)
        })
        .as_ref()
}
