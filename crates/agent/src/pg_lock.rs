//! PostgreSQL's lock file (`postmaster.pid`) when an earlier postmaster did not
//! remove it: after its agent was killed, the postmaster gets SIGQUIT (parent-death
//! signal) and exits, but its lock file stays on the volume, and PostgreSQL's own
//! check (`kill(pid, 0)`) takes the pid for a running postmaster while it is a
//! zombie nobody has reaped yet, or once another program of the PostgreSQL user
//! has the pid. Either way the next start would fail until the next key check.
//!
//! Before a start, the lock file is removed when its postmaster is really gone
//! (exited, or its pid now another program's); a postmaster of this data directory
//! that still runs is waited for, never removed from under. The file is on the
//! agent's own mount, so it is read and removed through [`own_mount`].

use std::path::Path;
use std::time::{Duration, Instant};

use crate::own_mount;
use crate::process::{self, ProcStat, RunState};
use crate::sys::{self, Signal};
use crate::Error;

/// How often a postmaster that is shutting down is looked at.
const POLL: Duration = Duration::from_millis(50);

/// What has the pid written in a lock file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    /// No process: PostgreSQL removes the stale file itself.
    Nobody,
    /// A process that has exited but not been reaped (a zombie).
    Exited,
    /// A running process that is not a postmaster of this data directory.
    Unrelated,
    /// A running postmaster of this data directory.
    Postmaster,
}

fn holder(pid: u32, data_dir: &Path) -> Holder {
    match ProcStat::read(pid) {
        None => Holder::Nobody,
        Some(stat) if stat.state == RunState::Exited => Holder::Exited,
        Some(_) => {
            // A postmaster keeps its command line (`postgres -D DATA_DIR ...`);
            // its children rename themselves (`postgres: checkpointer`).
            let is_ours = process::cmdline(pid).is_some_and(|args| {
                args.first().is_some_and(|a| a.ends_with(b"postgres"))
                    && process::arg_after(&args, "-D")
                        .is_some_and(|dir| process::arg_is_path(dir, data_dir))
            });
            if is_ours {
                Holder::Postmaster
            } else {
                Holder::Unrelated
            }
        }
    }
}

/// Ends a postmaster of `data_dir` that outlived its supervisor: on a node of a
/// highly available server the postmaster is Patroni's child, not the agent's, so
/// it gets no signal when the agent dies. SIGQUIT (immediate shutdown), SIGKILL
/// after `grace`; then its lock file goes as [`clear_stale`] says.
pub(crate) fn end_orphan(data_dir: &Path, grace: Duration) -> Result<(), Error> {
    let lock_file = data_dir.join("postmaster.pid");
    let pid = own_mount::read_to_string(&lock_file).and_then(|text| {
        text.lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
    });
    if let Some(pid) = pid.filter(|&pid| holder(pid, data_dir) == Holder::Postmaster) {
        tracing::warn!(
            pid,
            "ending a postmaster of this data directory that outlived its supervisor"
        );
        let _ = sys::send_signal(pid, Signal::Quit);
        let deadline = Instant::now() + grace;
        while holder(pid, data_dir) == Holder::Postmaster && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        if holder(pid, data_dir) == Holder::Postmaster {
            let _ = sys::send_signal(pid, Signal::Kill);
        }
    }
    clear_stale(data_dir, grace)
}

/// Makes way for a new postmaster in `data_dir` (see the module's documentation),
/// waiting up to `grace` for an earlier postmaster of it that is still exiting.
pub(crate) fn clear_stale(data_dir: &Path, grace: Duration) -> Result<(), Error> {
    let lock_file = data_dir.join("postmaster.pid");
    let Some(text) = own_mount::read_to_string(&lock_file) else {
        return Ok(());
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
    else {
        // Not a pid: PostgreSQL says what is wrong with it.
        return Ok(());
    };
    let deadline = Instant::now() + grace;
    let mut told = false;
    loop {
        match holder(pid, data_dir) {
            Holder::Nobody => return Ok(()),
            Holder::Exited | Holder::Unrelated => {
                tracing::info!(
                    pid,
                    "removing the lock file of a postmaster that is gone (exited, or its pid reused)"
                );
                return own_mount::remove(&lock_file);
            }
            Holder::Postmaster if Instant::now() >= deadline => {
                return Err(Error::Postgres(format!(
                    "an earlier postmaster (pid {pid}) of {} still runs after {grace:?}: \
                     it holds the lock file and the port; it must exit first",
                    data_dir.display()
                )))
            }
            Holder::Postmaster => {
                if !std::mem::replace(&mut told, true) {
                    tracing::info!(
                        pid,
                        "waiting for an earlier postmaster of this data directory to exit"
                    );
                }
                std::thread::sleep(POLL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn lock_file_naming(pid: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("postmaster.pid"),
            format!("{pid}\n{}\n", dir.path().display()),
        )
        .unwrap();
        dir
    }

    #[test]
    fn a_lock_file_of_a_gone_process_is_removed_and_one_of_nobody_left() {
        let mut unrelated = Command::new("sleep").arg("30").spawn().unwrap();
        let dir = lock_file_naming(unrelated.id());
        clear_stale(dir.path(), Duration::ZERO).unwrap();
        assert!(!dir.path().join("postmaster.pid").exists());

        // A zombie: exited, not reaped.
        unrelated.kill().unwrap();
        let dir = lock_file_naming(unrelated.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while process::is_running(unrelated.id()) {
            assert!(Instant::now() < deadline);
            std::thread::sleep(POLL);
        }
        clear_stale(dir.path(), Duration::ZERO).unwrap();
        assert!(!dir.path().join("postmaster.pid").exists());

        unrelated.wait().unwrap();
        let dir = lock_file_naming(unrelated.id());
        clear_stale(dir.path(), Duration::ZERO).unwrap();
        assert!(dir.path().join("postmaster.pid").exists());
    }

    #[test]
    fn a_running_postmaster_of_the_data_directory_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // Stands in for a postmaster: one process whose command line is
        // `postgres ... -D DATA`.
        let mut postmaster = Command::new("bash")
            .arg("-c")
            .arg(r#"exec -a postgres perl -e 'sleep 30' -- -D "$0""#)
            .arg(&data)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while holder(postmaster.id(), &data) != Holder::Postmaster {
            assert!(Instant::now() < deadline, "the stand-in did not start");
            std::thread::sleep(POLL);
        }
        std::fs::write(
            data.join("postmaster.pid"),
            format!("{}\n", postmaster.id()),
        )
        .unwrap();
        let err = clear_stale(&data, Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("still runs"), "{err}");
        assert!(data.join("postmaster.pid").exists());
        postmaster.kill().unwrap();
        postmaster.wait().unwrap();
        clear_stale(&data, Duration::ZERO).unwrap();
    }
}
