//! The kernel's FUSE wire format (`include/uapi/linux/fuse.h`, protocol 7.42), as byte
//! offsets: requests are decoded field by field from the buffers the kernel filled, and
//! replies are encoded the same way, so no struct is ever transmuted from kernel bytes.

/// Protocol version this daemon speaks; 7.42 added `FUSE_OVER_IO_URING`.
pub const KERNEL_MAJOR: u32 = 7;
pub const KERNEL_MINOR: u32 = 42;

pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
}

/// `fuse_init_in.flags` / `fuse_init_out.flags` bits (flags2 holds bits 32..63).
pub mod init_flags {
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const INIT_EXT: u64 = 1 << 30;
    pub const OVER_IO_URING: u64 = 1 << 41;
}

/// `fuse_open_out.open_flags`: bypass the page cache for this open file.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
/// `fuse_fsync_in.fsync_flags`: fdatasync rather than fsync.
pub const FSYNC_FDATASYNC: u32 = 1 << 0;
/// `fuse_setattr_in.valid`: the size field is set (truncate).
pub const FATTR_SIZE: u32 = 1 << 3;

pub const IN_HEADER_LEN: usize = 40;
pub const OUT_HEADER_LEN: usize = 16;
pub const INIT_OUT_LEN: usize = 64;
pub const ATTR_LEN: usize = 88;
pub const ATTR_OUT_LEN: usize = 16 + ATTR_LEN;
pub const ENTRY_OUT_LEN: usize = 40 + ATTR_LEN;
pub const OPEN_OUT_LEN: usize = 16;
pub const WRITE_OUT_LEN: usize = 8;
pub const STATFS_OUT_LEN: usize = 80;

/// The ring's per-entry header buffer (`struct fuse_uring_req_header`): the in/out header,
/// the operation's own header (`op_in`), then `fuse_uring_ent_in_out`.
pub mod ring {
    pub const IN_OUT_OFFSET: usize = 0;
    pub const OP_IN_OFFSET: usize = 128;
    pub const OP_IN_LEN: usize = 128;
    pub const ENT_IN_OUT_OFFSET: usize = 256;
    /// `fuse_uring_ent_in_out`: flags u64, commit_id u64, payload_sz u32, padding, reserved.
    pub const COMMIT_ID_OFFSET: usize = ENT_IN_OUT_OFFSET + 8;
    pub const PAYLOAD_SZ_OFFSET: usize = ENT_IN_OUT_OFFSET + 16;
    pub const HEADER_LEN: usize = ENT_IN_OUT_OFFSET + 32;
    /// `enum fuse_uring_cmd`, the SQE's `cmd_op`.
    pub const CMD_REGISTER: u32 = 1;
    pub const CMD_COMMIT_AND_FETCH: u32 = 2;
}

/// Size of the operation-specific header that follows `fuse_in_header` on /dev/fuse and
/// that the ring transport puts in `op_in` instead (the kernel's `in_args[0]`); the rest
/// of a request (names, write data) is the payload on both transports.
pub fn op_header_len(opcode: u32) -> usize {
    match opcode {
        opcode::LOOKUP | opcode::STATFS | opcode::DESTROY => 0,
        opcode::FORGET | opcode::OPEN | opcode::INTERRUPT | opcode::BATCH_FORGET => 8,
        opcode::GETATTR | opcode::FSYNC => 16,
        opcode::RELEASE | opcode::FLUSH => 24,
        opcode::READ | opcode::WRITE => 40,
        opcode::INIT => 64,
        opcode::SETATTR => 88,
        _ => 0,
    }
}

pub fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(buf[at..at + 2].try_into().expect("2 bytes"))
}

pub fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

pub fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Little writer over a reply buffer: each `put` writes a field at the next offset.
pub struct Encoder<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Encoder<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Encoder { buf, at: 0 }
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_ne_bytes())
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_ne_bytes())
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_ne_bytes())
    }

    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf[self.at..self.at + n].fill(0);
        self.at += n;
        self
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
        self
    }

    pub fn written(&self) -> usize {
        self.at
    }
}

/// `fuse_in_header`: which request, on which node, from whom.
#[derive(Debug, Clone, Copy)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl InHeader {
    /// Decodes the header at the start of `buf`; `None` if `buf` is too short.
    pub fn parse(buf: &[u8]) -> Option<InHeader> {
        (buf.len() >= IN_HEADER_LEN).then(|| InHeader {
            len: u32_at(buf, 0),
            opcode: u32_at(buf, 4),
            unique: u64_at(buf, 8),
            nodeid: u64_at(buf, 16),
            uid: u32_at(buf, 24),
            gid: u32_at(buf, 28),
            pid: u32_at(buf, 32),
        })
    }
}

/// Writes `fuse_out_header` (`len` counts header and body, as /dev/fuse needs it).
pub fn encode_out_header(buf: &mut [u8], unique: u64, error: i32, body_len: usize) {
    Encoder::new(buf)
        .u32((OUT_HEADER_LEN + body_len) as u32)
        .u32(error as u32)
        .u64(unique);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_header_decodes_every_field_at_its_uapi_offset() {
        let mut buf = [0u8; IN_HEADER_LEN];
        Encoder::new(&mut buf)
            .u32(80)
            .u32(opcode::READ)
            .u64(7)
            .u64(2)
            .u32(1000)
            .u32(1001)
            .u32(4242);
        let h = InHeader::parse(&buf).unwrap();
        assert_eq!(
            (h.len, h.opcode, h.unique, h.nodeid, h.uid, h.gid, h.pid),
            (80, opcode::READ, 7, 2, 1000, 1001, 4242)
        );
        assert!(InHeader::parse(&buf[..39]).is_none());
    }

    #[test]
    fn ring_header_is_the_size_the_kernel_checks_at_register() {
        // fuse_uring_create_ring_ent() refuses iov[0] shorter than the header struct.
        assert_eq!(ring::HEADER_LEN, 288);
    }
}
