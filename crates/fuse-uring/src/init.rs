//! INIT, which always travels over /dev/fuse: the kernel says what it offers, the reply
//! says what this daemon uses. Asking for `FUSE_OVER_IO_URING` here is what lets the ring
//! queues register afterwards.

use std::fs::File;
use std::io::{Read, Write};

use crate::abi::{self, init_flags, opcode, u32_at, Encoder, InHeader};
use crate::Error;

/// Largest READ/WRITE payload: 256 pages, as cryptfs uses.
pub const MAX_WRITE: u32 = 1 << 20;
const MAX_PAGES: u16 = (MAX_WRITE / 4096) as u16;
const MAX_BACKGROUND: u16 = 16;

/// What INIT settled.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    /// The kernel offered FUSE_OVER_IO_URING (module parameter `enable_uring` is Y).
    pub uring_offered: bool,
    /// ... and the reply asked for it: the ring queues must now register.
    pub uring: bool,
    pub max_write: u32,
    pub kernel_minor: u32,
}

/// Reads the INIT request from `device` and answers it, asking for io_uring if the
/// kernel offers it and `want_uring` is set.
pub fn negotiate(device: &File, want_uring: bool) -> Result<Negotiated, Error> {
    // The kernel refuses reads into buffers smaller than FUSE_MIN_READ_BUFFER (8 KiB).
    let mut buf = vec![0u8; 8192];
    let n = (&*device).read(&mut buf).map_err(Error::Device)?;
    let header = InHeader::parse(&buf[..n]).ok_or(Error::Init("short request"))?;
    if header.opcode != opcode::INIT || n < abi::IN_HEADER_LEN + 16 {
        return Err(Error::Init("first request is not INIT"));
    }
    let body = &buf[abi::IN_HEADER_LEN..n];
    let (major, minor, max_readahead) = (u32_at(body, 0), u32_at(body, 4), u32_at(body, 8));
    let mut offered = u64::from(u32_at(body, 12));
    if offered & init_flags::INIT_EXT != 0 && body.len() >= 20 {
        offered |= u64::from(u32_at(body, 16)) << 32;
    }
    if major != abi::KERNEL_MAJOR || minor < 28 {
        return Err(Error::Init("kernel FUSE protocol older than 7.28"));
    }
    let uring_offered = offered & init_flags::OVER_IO_URING != 0;
    let uring = want_uring && uring_offered;
    let mut wanted = init_flags::BIG_WRITES | init_flags::MAX_PAGES | init_flags::INIT_EXT;
    if uring {
        wanted |= init_flags::OVER_IO_URING;
    }
    let flags = wanted & offered;
    let mut out = [0u8; abi::OUT_HEADER_LEN + abi::INIT_OUT_LEN];
    let (head, body) = out.split_at_mut(abi::OUT_HEADER_LEN);
    Encoder::new(body)
        .u32(abi::KERNEL_MAJOR)
        .u32(minor.min(abi::KERNEL_MINOR))
        .u32(max_readahead)
        .u32(flags as u32)
        .u16(MAX_BACKGROUND)
        .u16(MAX_BACKGROUND * 3 / 4)
        .u32(MAX_WRITE)
        .u32(1)
        .u16(MAX_PAGES)
        .u16(0)
        .u32((flags >> 32) as u32)
        .zeros(28);
    abi::encode_out_header(head, header.unique, 0, abi::INIT_OUT_LEN);
    (&*device).write(&out).map_err(Error::Device)?;
    Ok(Negotiated {
        uring_offered,
        uring,
        max_write: MAX_WRITE,
        kernel_minor: minor,
    })
}
