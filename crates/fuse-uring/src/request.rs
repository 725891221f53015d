//! Typed requests, decoded the same way for both transports: the caller hands over the
//! operation header (`op_in`) and the payload, wherever its transport keeps them.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::abi::{self, opcode, u32_at, u64_at, InHeader};

/// One request from the kernel, borrowing its name or data from the transport's buffer.
#[derive(Debug)]
pub struct Request<'a> {
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub op: Operation<'a>,
}

/// The operations the spike serves; anything else is answered `ENOSYS`.
#[derive(Debug)]
pub enum Operation<'a> {
    Lookup {
        name: &'a OsStr,
    },
    /// FORGET and BATCH_FORGET: the kernel expects no reply.
    Forget,
    Getattr,
    /// Only a size change is served (truncate); other attributes are `EPERM`.
    Setattr {
        size: Option<u64>,
        other: bool,
    },
    Open {
        flags: i32,
    },
    /// `buf` is where the reply's data goes: the transport's payload buffer, so the data
    /// is read from the backing file straight into what the kernel copies from.
    Read {
        fh: u64,
        offset: u64,
        buf: &'a mut [u8],
    },
    Write {
        fh: u64,
        offset: u64,
        data: &'a [u8],
    },
    Fsync {
        fh: u64,
        datasync: bool,
    },
    Flush {
        fh: u64,
    },
    Release {
        fh: u64,
    },
    Statfs,
    /// INTERRUPT: requests here are short and never cancelled; no reply.
    Interrupt,
    Destroy,
    Unsupported {
        opcode: u32,
    },
}

/// Why a request could not be decoded: the kernel sent fewer bytes than the operation
/// needs. Answered `EINVAL`.
#[derive(Debug, PartialEq, Eq)]
pub struct Truncated {
    pub opcode: u32,
}

/// Decodes a request from its header, operation header and payload (`payload_len` bytes
/// of `payload` came from the kernel; the rest is room for the reply).
pub fn decode<'a>(
    header: &InHeader,
    op_in: &[u8],
    payload: &'a mut [u8],
    payload_len: usize,
) -> Result<Request<'a>, Truncated> {
    let need = abi::op_header_len(header.opcode);
    if op_in.len() < need || payload_len > payload.len() {
        return Err(Truncated {
            opcode: header.opcode,
        });
    }
    let op = match header.opcode {
        opcode::LOOKUP => {
            let name = &payload[..payload_len];
            let name = name.strip_suffix(&[0]).unwrap_or(name);
            Operation::Lookup {
                name: OsStr::from_bytes(name),
            }
        }
        opcode::FORGET | opcode::BATCH_FORGET => Operation::Forget,
        opcode::GETATTR => Operation::Getattr,
        opcode::SETATTR => {
            let valid = u32_at(op_in, 0);
            Operation::Setattr {
                size: (valid & abi::FATTR_SIZE != 0).then(|| u64_at(op_in, 16)),
                other: valid & !(abi::FATTR_SIZE | SETATTR_IGNORED) != 0,
            }
        }
        opcode::OPEN => Operation::Open {
            flags: u32_at(op_in, 0) as i32,
        },
        opcode::READ => {
            let size = (u32_at(op_in, 16) as usize).min(payload.len());
            Operation::Read {
                fh: u64_at(op_in, 0),
                offset: u64_at(op_in, 8),
                buf: &mut payload[..size],
            }
        }
        opcode::WRITE => {
            let size = u32_at(op_in, 16) as usize;
            if size > payload_len {
                return Err(Truncated {
                    opcode: header.opcode,
                });
            }
            Operation::Write {
                fh: u64_at(op_in, 0),
                offset: u64_at(op_in, 8),
                data: &payload[..size],
            }
        }
        opcode::FSYNC => Operation::Fsync {
            fh: u64_at(op_in, 0),
            datasync: u32_at(op_in, 8) & abi::FSYNC_FDATASYNC != 0,
        },
        opcode::FLUSH => Operation::Flush {
            fh: u64_at(op_in, 0),
        },
        opcode::RELEASE => Operation::Release {
            fh: u64_at(op_in, 0),
        },
        opcode::STATFS => Operation::Statfs,
        opcode::INTERRUPT => Operation::Interrupt,
        opcode::DESTROY => Operation::Destroy,
        other => Operation::Unsupported { opcode: other },
    };
    Ok(Request {
        nodeid: header.nodeid,
        uid: header.uid,
        gid: header.gid,
        op,
    })
}

/// SETATTR bits that carry no change of their own: the file handle, the lock owner, and
/// "ctime/kill suid" bits the kernel adds to a truncate.
const SETATTR_IGNORED: u32 = (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::Encoder;

    fn header(op: u32) -> InHeader {
        InHeader {
            len: 0,
            opcode: op,
            unique: 1,
            nodeid: 2,
            uid: 0,
            gid: 0,
            pid: 1,
        }
    }

    #[test]
    fn write_takes_its_data_from_the_payload_and_refuses_a_short_one() {
        let mut op_in = [0u8; 40];
        Encoder::new(&mut op_in).u64(9).u64(8192).u32(4);
        let mut payload = *b"abcdXXXX";
        match decode(&header(opcode::WRITE), &op_in, &mut payload, 4)
            .unwrap()
            .op
        {
            Operation::Write { fh, offset, data } => {
                assert_eq!((fh, offset, data), (9, 8192, &b"abcd"[..]))
            }
            other => panic!("decoded {other:?}"),
        }
        assert_eq!(
            decode(&header(opcode::WRITE), &op_in, &mut payload, 3).unwrap_err(),
            Truncated {
                opcode: opcode::WRITE
            }
        );
    }

    #[test]
    fn lookup_name_drops_the_trailing_nul() {
        let mut payload = *b"data\0";
        match decode(&header(opcode::LOOKUP), &[], &mut payload, 5)
            .unwrap()
            .op
        {
            Operation::Lookup { name } => assert_eq!(name, "data"),
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn setattr_other_than_size_is_flagged() {
        let mut op_in = [0u8; 88];
        Encoder::new(&mut op_in)
            .u32(abi::FATTR_SIZE | (1 << 0))
            .u32(0)
            .u64(0)
            .u64(100);
        match decode(&header(opcode::SETATTR), &op_in, &mut [], 0)
            .unwrap()
            .op
        {
            Operation::Setattr { size, other } => assert_eq!((size, other), (Some(100), true)),
            op => panic!("decoded {op:?}"),
        }
        Encoder::new(&mut op_in).u32(abi::FATTR_SIZE | (1 << 9));
        match decode(&header(opcode::SETATTR), &op_in, &mut [], 0)
            .unwrap()
            .op
        {
            Operation::Setattr { size, other } => assert_eq!((size, other), (Some(100), false)),
            op => panic!("decoded {op:?}"),
        }
    }
}
