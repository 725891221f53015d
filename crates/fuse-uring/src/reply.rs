//! Typed replies, encoded into the transport's payload buffer after the request that
//! borrowed that buffer is done with it.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::abi::{self, Encoder};

/// An errno to answer with (positive, as in `libc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// The attributes the kernel caches for a node.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
}

/// What a handler answers.
#[derive(Debug)]
pub enum Reply {
    /// LOOKUP: the node, its attributes, and how long the kernel may cache both.
    Entry {
        attr: Attr,
        ttl_secs: u64,
    },
    Attr {
        attr: Attr,
        ttl_secs: u64,
    },
    Opened {
        fh: u64,
        direct_io: bool,
    },
    /// READ: this many bytes of the request's `buf` hold the data.
    Data(usize),
    Written(u32),
    Statfs {
        blocks: u64,
        free: u64,
        block_size: u32,
    },
    /// Success without a body (FSYNC, FLUSH, RELEASE, SETATTR has its own).
    Empty,
    /// FORGET, INTERRUPT: the kernel waits for no reply.
    NoReply,
}

impl Reply {
    /// Encodes the body into `buf`, returning its length. `Data` is already in place.
    pub fn encode(&self, buf: &mut [u8]) -> usize {
        match *self {
            Reply::Entry { attr, ttl_secs } => {
                let mut e = Encoder::new(buf);
                e.u64(attr.ino)
                    .u64(0)
                    .u64(ttl_secs)
                    .u64(ttl_secs)
                    .u32(0)
                    .u32(0);
                encode_attr(&mut e, &attr);
                e.written()
            }
            Reply::Attr { attr, ttl_secs } => {
                let mut e = Encoder::new(buf);
                e.u64(ttl_secs).u32(0).u32(0);
                encode_attr(&mut e, &attr);
                e.written()
            }
            Reply::Opened { fh, direct_io } => {
                let flags = if direct_io { abi::FOPEN_DIRECT_IO } else { 0 };
                Encoder::new(buf).u64(fh).u32(flags).u32(0).written()
            }
            Reply::Data(n) => n,
            Reply::Written(n) => Encoder::new(buf).u32(n).u32(0).written(),
            Reply::Statfs {
                blocks,
                free,
                block_size,
            } => Encoder::new(buf)
                .u64(blocks)
                .u64(free)
                .u64(free)
                .u64(0)
                .u64(0)
                .u32(block_size)
                .u32(255)
                .u32(block_size)
                .zeros(4 + 24)
                .written(),
            Reply::Empty | Reply::NoReply => 0,
        }
    }
}

fn encode_attr(e: &mut Encoder<'_>, a: &Attr) {
    let mtime = a.mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    e.u64(a.ino).u64(a.size).u64(a.blocks);
    for _ in 0..3 {
        e.u64(mtime.as_secs());
    }
    for _ in 0..3 {
        e.u32(mtime.subsec_nanos());
    }
    e.u32(a.mode).u32(a.nlink).u32(a.uid).u32(a.gid);
    // rdev, blksize, flags
    e.u32(0).u32(4096).u32(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_uapi_sizes() {
        let attr = Attr {
            ino: 2,
            size: 3,
            blocks: 0,
            mode: 0o100644,
            nlink: 1,
            uid: 0,
            gid: 0,
            mtime: UNIX_EPOCH,
        };
        let mut buf = [0u8; 256];
        let sizes = [
            Reply::Entry { attr, ttl_secs: 1 }.encode(&mut buf),
            Reply::Attr { attr, ttl_secs: 1 }.encode(&mut buf),
            Reply::Opened {
                fh: 1,
                direct_io: true,
            }
            .encode(&mut buf),
            Reply::Written(5).encode(&mut buf),
            Reply::Statfs {
                blocks: 1,
                free: 1,
                block_size: 4096,
            }
            .encode(&mut buf),
        ];
        assert_eq!(
            sizes,
            [
                abi::ENTRY_OUT_LEN,
                abi::ATTR_OUT_LEN,
                abi::OPEN_OUT_LEN,
                abi::WRITE_OUT_LEN,
                abi::STATFS_OUT_LEN
            ]
        );
    }
}
