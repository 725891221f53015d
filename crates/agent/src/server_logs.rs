//! Reading a log that grows: the last lines of it, then what is appended.
//!
//! A log is one file (the agent's `agent.log`) or a directory of files whose names
//! sort in the order they were written (PostgreSQL's logging collector names them
//! `postgresql-YYYY-MM-DD_HHMMSS.log`). A follower remembers the newest file and how
//! far it has read; when a newer file appears it finishes the old one and moves on.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Where a log's files are.
#[derive(Clone, Debug)]
enum LogFiles {
    File(PathBuf),
    Directory(PathBuf),
}

impl LogFiles {
    /// The files, oldest first; none when the file or directory does not exist yet.
    fn list(&self) -> io::Result<Vec<PathBuf>> {
        match self {
            LogFiles::File(path) => Ok(if path.is_file() {
                vec![path.clone()]
            } else {
                Vec::new()
            }),
            LogFiles::Directory(dir) => {
                let entries = match fs::read_dir(dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                };
                let mut files = Vec::new();
                for entry in entries {
                    let entry = entry?;
                    if entry.file_type()?.is_file() {
                        files.push(entry.path());
                    }
                }
                files.sort();
                Ok(files)
            }
        }
    }
}

/// Follows one log: [`LogFollower::tail`] once, then [`LogFollower::poll`].
#[derive(Debug)]
pub struct LogFollower {
    files: LogFiles,
    /// The file being followed and the offset read up to.
    position: Option<(PathBuf, u64)>,
    /// The start of a line whose end has not been written yet.
    partial: Vec<u8>,
}

impl LogFollower {
    /// A log kept in one file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::new(LogFiles::File(path.into()))
    }

    /// A log kept in the files of a directory, whose names sort oldest first.
    pub fn directory(dir: impl Into<PathBuf>) -> Self {
        Self::new(LogFiles::Directory(dir.into()))
    }

    fn new(files: LogFiles) -> Self {
        Self {
            files,
            position: None,
            partial: Vec::new(),
        }
    }

    /// The last `n` complete lines, oldest first (from earlier files too when the
    /// newest has fewer). Following continues after them.
    pub fn tail(&mut self, n: usize) -> io::Result<Vec<String>> {
        let files = self.files.list()?;
        let mut lines: Vec<String> = Vec::new();
        for (i, path) in files.iter().enumerate().rev() {
            let bytes = fs::read(path)?;
            let mut text = bytes.as_slice();
            if i + 1 == files.len() {
                let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
                self.partial = text[complete..].to_vec();
                self.position = Some((path.clone(), bytes.len() as u64));
                text = &text[..complete];
            }
            let mut older = split_lines(text);
            let keep = n.saturating_sub(lines.len()).min(older.len());
            older.drain(..older.len() - keep);
            older.append(&mut lines);
            lines = older;
            if lines.len() >= n {
                break;
            }
        }
        Ok(lines)
    }

    /// The lines completed since the last call (or since [`LogFollower::tail`]).
    pub fn poll(&mut self) -> io::Result<Vec<String>> {
        let files = self.files.list()?;
        let start = match &self.position {
            // A file removed or truncated under us: start again from the newest.
            Some((current, _)) if !files.contains(current) => files.len().saturating_sub(1),
            Some((current, _)) => files.iter().position(|f| f == current).unwrap_or(0),
            None => 0,
        };
        let mut bytes = std::mem::take(&mut self.partial);
        for path in files.iter().skip(start) {
            let from = match &self.position {
                Some((current, offset)) if current == path => *offset,
                _ => 0,
            };
            let mut file = File::open(path)?;
            let len = file.metadata()?.len();
            let from = if len < from {
                bytes.clear();
                0
            } else {
                from
            };
            file.seek(SeekFrom::Start(from))?;
            let read = file.take(len - from).read_to_end(&mut bytes)?;
            self.position = Some((path.clone(), from + read as u64));
        }
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        self.partial = bytes.split_off(complete);
        Ok(split_lines(&bytes))
    }

    /// Where the log is, for messages.
    pub fn location(&self) -> &Path {
        match &self.files {
            LogFiles::File(path) | LogFiles::Directory(path) => path,
        }
    }
}

/// Complete lines (each ended by `\n`) as text; bytes that are not UTF-8 are replaced.
fn split_lines(bytes: &[u8]) -> Vec<String> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(|line| {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    #[test]
    fn tail_takes_the_last_lines_across_files_and_follow_goes_on_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut follower = LogFollower::directory(&log);
        assert!(follower.tail(5).unwrap().is_empty(), "no directory yet");
        fs::create_dir(&log).unwrap();
        append(&log.join("postgresql-1.log"), "a1\na2\na3\n");
        append(&log.join("postgresql-2.log"), "b1\nb2\nb3 (partial");
        let mut follower = LogFollower::directory(&log);
        assert_eq!(follower.tail(4).unwrap(), ["a2", "a3", "b1", "b2"]);
        assert!(follower.poll().unwrap().is_empty());
        append(&log.join("postgresql-2.log"), ")\nb4\n");
        assert_eq!(follower.poll().unwrap(), ["b3 (partial)", "b4"]);
        // A newer file: the rest of the old one first, then the new one.
        append(&log.join("postgresql-2.log"), "b5\n");
        append(&log.join("postgresql-3.log"), "c1\r\nc2\n");
        assert_eq!(follower.poll().unwrap(), ["b5", "c1", "c2"]);
        assert!(follower.poll().unwrap().is_empty());

        let mut all = LogFollower::directory(&log);
        assert_eq!(all.tail(100).unwrap().len(), 10);
        assert!(LogFollower::directory(&log).tail(0).unwrap().is_empty());
    }

    #[test]
    fn a_single_file_is_followed_until_it_appears_and_after_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let mut follower = LogFollower::file(&path);
        assert!(follower.tail(10).unwrap().is_empty());
        append(&path, "one\ntwo\n");
        assert_eq!(follower.poll().unwrap(), ["one", "two"]);
        fs::write(&path, "new\n").unwrap();
        assert_eq!(follower.poll().unwrap(), ["new"]);
        assert_eq!(follower.location(), path);
    }
}
