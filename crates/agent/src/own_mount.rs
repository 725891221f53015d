//! Files on the agent's own cryptfs mount (PostgreSQL's lock file and server
//! log), read and removed by child processes, never by the agent itself.
//!
//! The agent is the mount's FUSE daemon. A thread of it blocked on a request to
//! its own mount cannot be killed once a FUSE thread has taken the request: if
//! the agent is killed then (`kill -9`, which recovery must survive), that thread
//! waits for an answer that its dead FUSE threads will never give, the process
//! never exits, and the mount stays wedged with it. Seen in testing: an agent
//! left in state D on `request_wait_answer`. A child blocked the same way is
//! freed (ENOTCONN) as soon as the agent is gone.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::IoContext;
use crate::Error;

/// The bytes of `path` from `offset` on; `None` when it cannot be read (it does
/// not exist, or the mount is gone).
pub(crate) fn read_from(path: &Path, offset: u64) -> Option<Vec<u8>> {
    let out = Command::new("tail")
        .arg("-c")
        .arg(format!("+{}", offset + 1))
        .arg("--")
        .arg(path)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// The text of `path`; `None` when it cannot be read.
pub(crate) fn read_to_string(path: &Path) -> Option<String> {
    read_from(path, 0).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// The size of `path` in bytes; `None` when it cannot be read.
pub(crate) fn size(path: &Path) -> Option<u64> {
    let out = Command::new("stat")
        .args(["--format=%s", "--"])
        .arg(path)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Removes `path` if it exists.
pub(crate) fn remove(path: &Path) -> Result<(), Error> {
    let out = Command::new("rm")
        .args(["-f", "--"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .ctx(|| format!("running rm for {}", path.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::io(
            format!("removing {}", path.display()),
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_from_an_offset_sizes_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "hello\nworld\n").unwrap();
        assert_eq!(read_from(&file, 6).unwrap(), b"world\n");
        assert_eq!(read_from(&file, 12).unwrap(), b"");
        assert_eq!(read_to_string(&file).unwrap(), "hello\nworld\n");
        assert_eq!(size(&file), Some(12));
        remove(&file).unwrap();
        assert_eq!(read_from(&file, 0), None);
        assert_eq!(size(&file), None);
        remove(&file).unwrap();
    }
}
