//! The classic transport: a thread reads one request from /dev/fuse, serves it and writes
//! the reply back with writev(2). Several threads read the same descriptor.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::abi::{self, InHeader};
use crate::dispatch::{serve, Answer, Filesystem};

/// Serves requests from `device` until the connection ends (unmount: ENODEV), counting
/// them in `served`.
pub fn run_worker(
    device: Arc<File>,
    fs: Arc<dyn Filesystem>,
    max_write: u32,
    served: Arc<AtomicU64>,
) -> io::Result<()> {
    // The kernel refuses reads into a buffer that could not hold a WRITE of max_write.
    let mut buf = vec![0u8; max_write as usize + 4096];
    loop {
        let n = match (&*device).read(&mut buf) {
            Ok(n) => n,
            // ENOENT: the request was interrupted before we read it.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::EINTR | libc::EAGAIN)
                ) =>
            {
                continue
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(header) = InHeader::parse(&buf[..n]) else {
            continue;
        };
        served.fetch_add(1, Ordering::Relaxed);
        let split = (abi::IN_HEADER_LEN + abi::op_header_len(header.opcode)).min(n);
        let (head, payload) = buf.split_at_mut(split);
        let op_in = &head[abi::IN_HEADER_LEN..];
        let answer = serve(&*fs, &header, op_in, payload, n - split);
        let Answer::Reply { error, body_len } = answer else {
            continue;
        };
        let mut out_header = [0u8; abi::OUT_HEADER_LEN];
        abi::encode_out_header(&mut out_header, header.unique, error, body_len);
        let reply = [
            IoSlice::new(&out_header),
            IoSlice::new(&payload[..body_len]),
        ];
        match (&*device).write_vectored(&reply) {
            Ok(_) => {}
            // ENOENT: nobody waits for this reply any more (interrupted or aborted).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
