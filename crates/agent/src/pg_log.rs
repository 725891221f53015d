//! What PostgreSQL says that the node agent passes on to the control plane: that
//! it reinitialized after a crash, and why (the child that died, the PANIC before
//! it), and the FATAL or PANIC that ended a start.
//!
//! The server log lives on the encrypted volume, but events are stored by the
//! control plane in the clear, so only lines PostgreSQL composes from its own
//! vocabulary are passed on: the postmaster's own lines (its pid is known, so a
//! client's `RAISE LOG` cannot pose as one) and PANICs. A client can put any text
//! in a FATAL (a role or database name), so FATALs of other processes, and every
//! ERROR, DETAIL and STATEMENT line, stay on the volume.
//!
//! The log is on the agent's own mount, so it is read through [`own_mount`].

use std::path::{Path, PathBuf};

use crate::own_mount;

/// Longest message passed on; PostgreSQL's own messages are far shorter.
const MAX_MESSAGE: usize = 300;

/// A line of the server log that the agent passes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Notable {
    /// `PANIC:  ...` from any process, or `FATAL:  ...` from the postmaster:
    /// severity and message, as PostgreSQL wrote them.
    Fatal(String),
    /// The postmaster saw a child die abnormally, e.g. `checkpointer process (PID
    /// 77) was terminated by signal 9: Killed`.
    ChildDied(String),
    /// The postmaster reinitializes after a crash (crash recovery follows).
    Reinitializing,
}

/// Classifies one line in PostgreSQL's default `log_line_prefix` (`%m [%p] `), as
/// written by `postmaster` (pid) or one of its children.
pub(crate) fn classify(line: &str, postmaster: u32) -> Option<Notable> {
    let (_, after_time) = line.split_once(" [")?;
    let (pid, rest) = after_time.split_once("] ")?;
    let from_postmaster = pid.parse::<u32>().ok() == Some(postmaster);
    let (severity, message) = rest.split_once(":  ")?;
    let message = clip(message.trim_end());
    let text = format!("{severity}: {message}");
    match severity {
        "PANIC" => Some(Notable::Fatal(text)),
        "FATAL" if from_postmaster => Some(Notable::Fatal(text)),
        "LOG" if from_postmaster => {
            if message == "all server processes terminated; reinitializing" {
                Some(Notable::Reinitializing)
            } else if message.contains(" (PID ")
                && (message.contains(") was terminated by ") || message.contains(") exited with "))
            {
                Some(Notable::ChildDied(message.to_string()))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// `text` cut to [`MAX_MESSAGE`] characters.
fn clip(text: &str) -> &str {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Follows the server log of one postmaster (the file named in
/// `current_logfiles`, across rotations), reading only what was written since the
/// last look.
#[derive(Debug)]
pub(crate) struct ServerLog {
    data_dir: PathBuf,
    postmaster: u32,
    file: Option<PathBuf>,
    offset: u64,
    /// The start of a line whose end was not written yet.
    partial: String,
    /// What died since the last reinitialization.
    child_died: Option<String>,
    /// The last PANIC or FATAL not yet told.
    last_fatal: Option<String>,
    /// Crash restarts not yet told, each with its cause.
    restarts: Vec<String>,
}

impl ServerLog {
    /// Starts following the log of `postmaster` in `data_dir` at its current end:
    /// what is there is history.
    pub fn follow(data_dir: &Path, postmaster: u32) -> Self {
        let mut log = Self {
            data_dir: data_dir.to_path_buf(),
            postmaster,
            file: None,
            offset: 0,
            partial: String::new(),
            child_died: None,
            last_fatal: None,
            restarts: Vec::new(),
        };
        if let Some(file) = log.current_file() {
            log.offset = own_mount::size(&file).unwrap_or(0);
            log.file = Some(file);
        }
        log
    }

    /// The file `current_logfiles` names (`stderr log/postgresql-....log`).
    fn current_file(&self) -> Option<PathBuf> {
        let named = own_mount::read_to_string(&self.data_dir.join("current_logfiles"))?;
        let relative = named.lines().find_map(|l| l.strip_prefix("stderr "))?;
        Some(self.data_dir.join(relative.trim()))
    }

    /// The crash restarts logged since the last call, each with its cause (what
    /// died; the PANIC or FATAL before it).
    pub fn crash_restarts(&mut self) -> Vec<String> {
        self.read();
        std::mem::take(&mut self.restarts)
    }

    /// The last PANIC or FATAL logged and not yet told (as the cause of a crash
    /// restart, or by an earlier call).
    pub fn last_fatal(&mut self) -> Option<String> {
        self.read();
        self.last_fatal.take()
    }

    fn read(&mut self) {
        for line in self.new_lines() {
            match classify(&line, self.postmaster) {
                Some(Notable::Fatal(text)) => self.last_fatal = Some(text),
                Some(Notable::ChildDied(what)) => {
                    self.child_died.get_or_insert(what);
                }
                Some(Notable::Reinitializing) => {
                    let cause = match (self.child_died.take(), self.last_fatal.take()) {
                        (Some(died), Some(fatal)) => format!("{died} ({fatal})"),
                        (Some(died), None) => died,
                        (None, Some(fatal)) => fatal,
                        (None, None) => "a PostgreSQL process died".into(),
                    };
                    self.restarts.push(cause);
                }
                None => {}
            }
        }
    }

    /// Complete lines written since the last call. A new log file (rotation, or a
    /// new postmaster) is read from its start.
    fn new_lines(&mut self) -> Vec<String> {
        let Some(current) = self.current_file() else {
            return Vec::new();
        };
        if self.file.as_ref() != Some(&current) {
            self.file = Some(current.clone());
            self.offset = 0;
            self.partial.clear();
        }
        let Some(bytes) = own_mount::read_from(&current, self.offset) else {
            return Vec::new();
        };
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        match self.partial.rfind('\n') {
            Some(end) => self
                .partial
                .drain(..=end)
                .collect::<String>()
                .lines()
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PM: u32 = 100;

    fn line(pid: u32, rest: &str) -> String {
        format!("2026-12-07 03:46:22.550 UTC [{pid}] {rest}")
    }

    #[test]
    fn only_the_postmasters_own_lines_and_panics_are_notable() {
        let died = "checkpointer process (PID 7) was terminated by signal 9: Killed";
        assert_eq!(
            classify(&line(PM, &format!("LOG:  {died}")), PM),
            Some(Notable::ChildDied(died.into()))
        );
        assert_eq!(
            classify(
                &line(PM, "LOG:  all server processes terminated; reinitializing"),
                PM
            ),
            Some(Notable::Reinitializing)
        );
        assert_eq!(
            classify(
                &line(42, "PANIC:  could not write to file \"pg_wal/x\""),
                PM
            ),
            Some(Notable::Fatal(
                "PANIC: could not write to file \"pg_wal/x\"".into()
            ))
        );
        assert_eq!(
            classify(
                &line(PM, "FATAL:  lock file \"postmaster.pid\" already exists"),
                PM
            ),
            Some(Notable::Fatal(
                "FATAL: lock file \"postmaster.pid\" already exists".into()
            ))
        );
        // A client chooses the text of these: they stay on the volume.
        for other in [
            line(42, "FATAL:  role \"secret-name\" does not exist"),
            line(42, "LOG:  all server processes terminated; reinitializing"),
            line(
                42,
                "LOG:  x process (PID 1) was terminated by signal 9: Killed",
            ),
            line(
                PM,
                "ERROR:  invalid input syntax for type integer: \"secret\"",
            ),
            line(PM, "DETAIL:  Failed process was running: SELECT 'secret'"),
            line(PM, "LOG:  database system is ready to accept connections"),
            "no prefix at all".to_string(),
        ] {
            assert_eq!(classify(&other, PM), None, "{other}");
        }
    }

    use std::fs;

    #[test]
    fn follows_the_current_file_from_its_end_and_reports_crash_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        fs::create_dir(data.join("log")).unwrap();
        fs::write(data.join("current_logfiles"), "stderr log/a.log\n").unwrap();
        let old_crash = line(
            PM,
            "LOG:  all server processes terminated; reinitializing\n",
        );
        fs::write(data.join("log/a.log"), &old_crash).unwrap();
        let mut log = ServerLog::follow(data, PM);
        assert!(log.crash_restarts().is_empty(), "history was reported");

        let append = |file: &str, text: &str| {
            use std::io::Write;
            fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(data.join(file))
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        };
        append("log/a.log", &line(42, "PANIC:  out of luck\n"));
        append(
            "log/a.log",
            &line(
                PM,
                "LOG:  server process (PID 42) was terminated by signal 6: Aborted\n",
            ),
        );
        // Half a line: not read until it is complete.
        let reinit = line(
            PM,
            "LOG:  all server processes terminated; reinitializing\n",
        );
        let (head, tail) = reinit.split_at(20);
        append("log/a.log", head);
        assert!(log.crash_restarts().is_empty());
        append("log/a.log", tail);
        assert_eq!(
            log.crash_restarts(),
            ["server process (PID 42) was terminated by signal 6: Aborted (PANIC: out of luck)"]
        );

        // A new postmaster logs to a new file, read from its start.
        fs::write(data.join("current_logfiles"), "stderr log/b.log\n").unwrap();
        append(
            "log/b.log",
            &line(PM, "FATAL:  could not load pg_hba.conf\n"),
        );
        assert_eq!(
            log.last_fatal().as_deref(),
            Some("FATAL: could not load pg_hba.conf")
        );
        assert_eq!(log.last_fatal(), None);
    }
}
