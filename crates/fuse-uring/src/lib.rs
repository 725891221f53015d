//! A spike: one FUSE filesystem served over the kernel's io_uring transport
//! (`FUSE_OVER_IO_URING`, Linux 6.14+) or over classic read/write on /dev/fuse, with the
//! same request handlers, so that the two can be measured side by side
//! (`bench/cryptfs/uring.sh`; design and findings in `docs/fuse.md`, "FUSE over io_uring").
//!
//! - `mount`: /dev/fuse and mount(2); `init`: the INIT exchange, which always uses
//!   /dev/fuse and is where io_uring is asked for;
//! - `ring`: the per-CPU queues; `devfuse`: the classic readers;
//! - `request`, `reply`, `dispatch`: decoding and encoding shared by both transports;
//! - `passthrough`: the spike's filesystem (files of a backing directory, unencrypted);
//! - `session`: all of it together, and which transport is in use.
#![deny(unsafe_code)]

pub mod abi;
mod devfuse;
pub mod dispatch;
pub mod init;
pub mod kernel;
mod mount;
pub mod passthrough;
pub mod reply;
pub mod request;
mod ring;
pub mod session;
mod sys;

use std::io;
use std::path::PathBuf;

pub use dispatch::Filesystem;
pub use passthrough::Passthrough;
pub use session::{Fallback, Options, Served, Session, Transport};

/// What can go wrong serving a mount.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// /dev/fuse could not be opened, read or written.
    #[error("/dev/fuse: {0} (is the fuse module loaded, and are we root?)")]
    Device(#[source] io::Error),
    /// mount(2) failed.
    #[error("cannot mount at {mountpoint}: {source} (needs root and an existing directory)")]
    Mount {
        mountpoint: PathBuf,
        #[source]
        source: io::Error,
    },
    /// umount2(2) failed.
    #[error("cannot unmount {mountpoint}: {source}")]
    Unmount {
        mountpoint: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The kernel's INIT request was not one this daemon can answer.
    #[error("FUSE INIT: {0}")]
    Init(&'static str),
    /// A transport thread stopped with an error.
    #[error("transport thread: {0}")]
    Transport(#[source] io::Error),
}
