//! One request, start to finish, for either transport: decode from the transport's
//! buffers, hand to the filesystem, encode the reply into the same payload buffer.

use crate::abi::InHeader;
use crate::reply::{Errno, Reply};
use crate::request::{decode, Operation, Request};

/// The request handlers: what a filesystem implements, unaware of the transport.
pub trait Filesystem: Send + Sync + 'static {
    fn handle(&self, request: Request<'_>) -> Result<Reply, Errno>;
}

/// What the transport sends back: nothing, or an out header with this error and a body
/// of `body_len` bytes at the start of the payload buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    None,
    Reply { error: i32, body_len: usize },
}

/// Serves one request whose `payload_len` first bytes of `payload` came from the kernel.
pub fn serve(
    fs: &dyn Filesystem,
    header: &InHeader,
    op_in: &[u8],
    payload: &mut [u8],
    payload_len: usize,
) -> Answer {
    let reply = match decode(header, op_in, payload, payload_len) {
        Ok(request) if matches!(request.op, Operation::Unsupported { .. }) => {
            Err(Errno(libc::ENOSYS))
        }
        Ok(request) => fs.handle(request),
        Err(_) => Err(Errno(libc::EINVAL)),
    };
    match reply {
        Ok(Reply::NoReply) => Answer::None,
        Ok(reply) => Answer::Reply {
            error: 0,
            body_len: reply.encode(payload),
        },
        Err(Errno(errno)) => Answer::Reply {
            error: -errno,
            body_len: 0,
        },
    }
}
