//! The io_uring transport: one queue per possible CPU (the kernel sends a request to the
//! queue of the CPU its caller runs on), each served by one thread pinned to that CPU
//! with its own ring. Every queue entry is a header buffer and a payload buffer that the
//! kernel fills with a request; the reply goes back in the same buffers with
//! COMMIT_AND_FETCH, which also hands the entry back for the next request — one
//! io_uring_enter(2) per request instead of a read(2) and a write(2).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::abi::{self, ring, u32_at, u64_at, Encoder, InHeader};
use crate::dispatch::{serve, Answer, Filesystem};
use crate::sys;

/// One ring entry's buffers. The kernel keeps pointers to them from REGISTER until the
/// connection ends, so they live as long as the ring does (see `run_queue`). It writes into
/// them only in this thread's task context, inside `io_uring_enter` (the ring is set up with
/// DEFER_TASKRUN), when no Rust reference to them is live.
struct RingEntry {
    header: Vec<u8>,
    payload: Vec<u8>,
    /// The two iovecs REGISTER points at (header, payload).
    iov: Box<[libc::iovec; 2]>,
}

impl RingEntry {
    fn new(payload_len: usize) -> RingEntry {
        let mut header = vec![0u8; ring::HEADER_LEN];
        let mut payload = vec![0u8; payload_len];
        let iov = Box::new([
            libc::iovec {
                iov_base: header.as_mut_ptr().cast(),
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload.len(),
            },
        ]);
        RingEntry {
            header,
            payload,
            iov,
        }
    }
}

/// The 80-byte command area of a FUSE ring SQE: `struct fuse_uring_cmd_req`.
fn command(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    Encoder::new(&mut cmd).u64(0).u64(commit_id).u16(qid);
    cmd
}

/// The SQE's `len` field is at byte 24 of `struct io_uring_sqe` (uapi).
const SQE_LEN_OFFSET: usize = 24;

fn register_sqe(device: &File, entry: &RingEntry, index: usize, qid: u16) -> squeue::Entry128 {
    let mut sqe = opcode::UringCmd80::new(types::Fd(device.as_raw_fd()), ring::CMD_REGISTER)
        .cmd(command(0, qid))
        .addr(Some(entry.iov.as_ptr() as u64))
        .build()
        .user_data(index as u64);
    // REGISTER needs len = 2 (the iovec count), which the crate's UringCmd80 builder does
    // not set. SAFETY: Entry128 is #[repr(C)] and begins with the kernel's 64-byte
    // io_uring_sqe, whose u32 `len` is at offset 24; the write stays inside the entry.
    unsafe {
        let bytes = (&mut sqe as *mut squeue::Entry128).cast::<u8>();
        bytes.add(SQE_LEN_OFFSET).cast::<u32>().write_unaligned(2);
    }
    sqe
}

fn commit_sqe(device: &File, commit_id: u64, index: usize, qid: u16) -> squeue::Entry128 {
    opcode::UringCmd80::new(types::Fd(device.as_raw_fd()), ring::CMD_COMMIT_AND_FETCH)
        .cmd(command(commit_id, qid))
        .build()
        .user_data(index as u64)
}

fn push(ring: &mut IoUring<squeue::Entry128, cqueue::Entry>, sqe: &squeue::Entry128) {
    // SAFETY: the SQE points at an entry's iovecs and buffers, which live until the ring
    // is dropped (RingEntry values are dropped after it, see `run_queue`). The queue has
    // room: it holds one SQE per entry and each entry has at most one in flight.
    unsafe { ring.submission().push(sqe) }.expect("one SQE per entry fits the ring");
}

/// Which queue a thread serves, with how many entries of what payload size.
pub struct QueueConfig {
    pub qid: u16,
    pub depth: usize,
    pub payload_len: usize,
    pub pin: bool,
}

/// Creates the ring a queue will use, to learn whether this process may: INIT must not ask
/// for io_uring otherwise, as the kernel would then hold every request for queues that can
/// never register. `io_uring_setup` fails e.g. with EPERM under `kernel.io_uring_disabled`.
pub fn probe() -> io::Result<()> {
    new_ring(1).map(drop)
}

fn new_ring(depth: u32) -> io::Result<IoUring<squeue::Entry128, cqueue::Entry>> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(depth)
}

/// Registers `depth` entries for queue `qid`, reports the outcome on `registered`, then
/// serves requests until the connection ends, counting them in `served`.
pub fn run_queue(
    device: Arc<File>,
    fs: Arc<dyn Filesystem>,
    config: QueueConfig,
    registered: Sender<Result<(), io::Error>>,
    served: Arc<AtomicU64>,
) -> io::Result<()> {
    let QueueConfig {
        qid,
        depth,
        payload_len,
        pin,
    } = config;
    // A possible CPU may be offline; the queue still has to register for the ring to be
    // ready, it just runs unpinned.
    if pin {
        let _ = sys::pin_current_thread(usize::from(qid));
    }
    let mut entries: Vec<RingEntry> = (0..depth).map(|_| RingEntry::new(payload_len)).collect();
    // Declared after `entries`, so dropped before them: the kernel lets go of the buffers
    // when the ring closes.
    let mut uring = match new_ring(depth as u32) {
        Ok(uring) => uring,
        Err(e) => {
            let _ = registered.send(Err(io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
    };
    for (index, entry) in entries.iter().enumerate() {
        push(&mut uring, &register_sqe(&device, entry, index, qid));
    }
    // A refused REGISTER completes at once with its error; an accepted one completes only
    // when a request arrives.
    let refused = uring.submit().err().or_else(|| {
        uring
            .completion()
            .find(|cqe| cqe.result() < 0)
            .map(|cqe| io::Error::from_raw_os_error(-cqe.result()))
    });
    if let Some(e) = refused {
        let _ = registered.send(Err(io::Error::new(e.kind(), e.to_string())));
        return Err(e);
    }
    let _ = registered.send(Ok(()));

    let mut live = depth;
    let mut ready = Vec::with_capacity(depth);
    while live > 0 {
        match uring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        ready.extend(
            uring
                .completion()
                .map(|cqe| (cqe.user_data() as usize, cqe.result())),
        );
        for (index, result) in ready.drain(..) {
            if result < 0 {
                // ENOTCONN/ECONNABORTED/ECANCELED: the connection ended; this entry is done.
                live -= 1;
                continue;
            }
            served.fetch_add(1, Ordering::Relaxed);
            let entry = &mut entries[index];
            let commit_id = serve_entry(&*fs, entry);
            push(&mut uring, &commit_sqe(&device, commit_id, index, qid));
        }
    }
    drop(uring);
    drop(entries);
    Ok(())
}

/// Serves the request in `entry`'s buffers and writes the reply into them; returns the
/// commit id to send it back with.
fn serve_entry(fs: &dyn Filesystem, entry: &mut RingEntry) -> u64 {
    let header = InHeader::parse(&entry.header).expect("header buffer holds fuse_in_header");
    let commit_id = u64_at(&entry.header, ring::COMMIT_ID_OFFSET);
    let payload_len = u32_at(&entry.header, ring::PAYLOAD_SZ_OFFSET) as usize;
    let op_in = &entry.header[ring::OP_IN_OFFSET..ring::OP_IN_OFFSET + ring::OP_IN_LEN];
    let (error, body_len) = match serve(fs, &header, op_in, &mut entry.payload, payload_len) {
        Answer::Reply { error, body_len } => (error, body_len),
        // FORGET and INTERRUPT travel over /dev/fuse; a no-reply request here still has
        // to be committed to get the entry back.
        Answer::None => (0, 0),
    };
    abi::encode_out_header(
        &mut entry.header[ring::IN_OUT_OFFSET..],
        header.unique,
        error,
        body_len,
    );
    Encoder::new(&mut entry.header[ring::PAYLOAD_SZ_OFFSET..]).u32(body_len as u32);
    commit_id
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields REGISTER depends on, read back from the SQE's bytes at their uapi offsets.
    #[test]
    fn register_sqe_has_the_kernel_layout() {
        let device = File::open("/dev/null").unwrap();
        let entry = RingEntry::new(4096);
        let sqe = register_sqe(&device, &entry, 5, 1);
        // SAFETY: Entry128 is #[repr(C)], 128 bytes of plain data.
        let bytes: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
        assert_eq!(bytes[0], 46, "opcode IORING_OP_URING_CMD");
        assert_eq!(u32_at(4) as i32, device.as_raw_fd());
        assert_eq!(u32_at(8), ring::CMD_REGISTER, "cmd_op");
        assert_eq!(u64_at(16), entry.iov.as_ptr() as u64, "addr: the iovecs");
        assert_eq!(u32_at(SQE_LEN_OFFSET), 2, "len: two iovecs");
        assert_eq!(u64_at(32), 5, "user_data");
        // fuse_uring_cmd_req at the command area (byte 48): flags, commit_id, qid.
        assert_eq!((u64_at(48), u64_at(56), bytes[64]), (0, 0, 1));
    }
}
