//! Facts about other processes, read from `/proc`: whether a process still runs
//! (a zombie does not, though `kill(pid, 0)` succeeds on it until it is reaped)
//! and what it was started as.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The scheduler state of a process (`/proc/PID/stat`, field 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunState {
    /// Running, sleeping, stopped, traced...: it may still act.
    Alive,
    /// Exited, waiting for its parent to reap it (`Z`), or being torn down (`X`).
    Exited,
}

/// `/proc/PID/stat` of a process that exists (a zombie included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: RunState,
    /// Its parent's pid.
    pub ppid: u32,
}

impl ProcStat {
    /// Reads process `pid`'s stat; `None` when there is no such process.
    pub fn read(pid: u32) -> Option<Self> {
        if pid == 0 {
            return None;
        }
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// Parses a stat line: `PID (COMM) STATE PPID ...`. COMM may hold spaces and
    /// parentheses, so the fields are counted from the last `)`.
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.get(line.rfind(')')? + 1..)?.split_ascii_whitespace();
        let state = match fields.next()? {
            "Z" | "X" | "x" => RunState::Exited,
            _ => RunState::Alive,
        };
        let ppid = fields.next()?.parse().ok()?;
        Some(Self { state, ppid })
    }
}

/// True while process `pid` exists and has not exited (a zombie has).
pub(crate) fn is_running(pid: u32) -> bool {
    ProcStat::read(pid).is_some_and(|s| s.state == RunState::Alive)
}

/// The arguments process `pid` was started with (empty for a zombie or a kernel
/// thread); `None` when there is no such process.
pub(crate) fn cmdline(pid: u32) -> Option<Vec<Vec<u8>>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
    )
}

/// The value following `flag` in `args` (`--flag VALUE`).
pub(crate) fn arg_after<'a>(args: &'a [Vec<u8>], flag: &str) -> Option<&'a [u8]> {
    let at = args.iter().position(|a| a == flag.as_bytes())?;
    args.get(at + 1).map(Vec::as_slice)
}

/// True when `arg` names `path`.
pub(crate) fn arg_is_path(arg: &[u8], path: &Path) -> bool {
    Path::new(OsStr::from_bytes(arg)) == path
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn stat_lines_are_read_from_the_last_parenthesis() {
        let s = ProcStat::parse("42 (a) (b) c) S 7 42 42 0 -1").unwrap();
        assert_eq!(
            s,
            ProcStat {
                state: RunState::Alive,
                ppid: 7
            }
        );
        let z = ProcStat::parse("43 (postgres) Z 1 43 43 0").unwrap();
        assert_eq!(z.state, RunState::Exited);
        assert!(ProcStat::parse("garbage").is_none());
    }

    #[test]
    fn a_zombie_is_not_running() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(is_running(pid));
        let deadline = Instant::now() + Duration::from_secs(10);
        // Until the child has called exec, it has its parent's command line.
        while arg_after(&cmdline(pid).unwrap(), "sleep") != Some(&b"30"[..]) {
            assert!(Instant::now() < deadline, "sleep did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        // Not reaped yet: a zombie, which kill(pid, 0) would still find.
        while is_running(pid) {
            assert!(Instant::now() < deadline, "the killed child still runs");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(ProcStat::read(pid).unwrap().state, RunState::Exited);
        child.wait().unwrap();
        assert!(ProcStat::read(pid).is_none());
        assert!(!is_running(pid));
    }
}
