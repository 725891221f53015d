//! cryptfs: an authenticated, encrypting FUSE filesystem for PostgreSQL data directories.
//!
//! Every file is stored as a header plus 4 KiB blocks, each with two slots sealed
//! with AES-256-GCM-SIV under a per-file key derived from the master key; the
//! associated data binds file id, block number and generation, so altered, swapped,
//! moved or truncated blocks read as `EIO`, never as wrong bytes. A write goes to
//! the slot that does not hold the block's durable version, so a crash never
//! destroys synced bytes; crash recovery at the next mount repairs torn slots. The
//! byte-for-byte format is in `docs/format.md`.
//!
//! - [`init`] prepares an empty cipher directory for a master key.
//! - [`mount`] serves it through FUSE (multi-threaded, writeback cache) until the
//!   returned [`MountHandle`] is unmounted or dropped.
//! - [`fsck`] lists every block that fails authentication, and after a crash the
//!   torn blocks that the next mount's recovery repairs.
//!
//! Unsafe code lives only in the `sys` module (libc calls std does not wrap).

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod cipher_tree;
mod config;
pub mod content;
mod crash_recovery;
pub mod crash_sim;
pub mod encrypted_file;
mod error;
pub mod format;
mod fsck;
mod fuse;
pub mod key_file;
mod mount;
pub mod storage;
mod sys;
mod write_behind;

pub use config::{init, VolumeConfig, CONFIG_FILE_NAME};
pub use crash_recovery::{RecoveryReport, DIRTY_MARKER_NAME};
pub use error::Error;
pub use fsck::{fsck, BadBlock, FsckReport};
pub use mount::{mount, unmount, MountHandle, MountOptions, TerminationSignals};

/// `tracing` filter directives for a process that serves a mount. fuser logs an ERROR
/// whenever the kernel no longer wants a reply: it answers FUSE_INTERRUPT with ENOSYS
/// itself, and when the interrupted request has finished first the kernel refuses
/// that reply (ENOENT) — routine under PostgreSQL, whose backends are signalled all
/// the time. Nothing else is lost by not logging fuser's reply failures: a request
/// whose reply cannot be delivered has no one waiting for it. fuser's warnings are
/// about requests cryptfs answers itself or an unmount of a mount already gone.
pub const LOG_DIRECTIVES: &str = "fuser=error,fuser::reply=off";
