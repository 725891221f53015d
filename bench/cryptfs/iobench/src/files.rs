//! `iobench files`: what PostgreSQL's DDL, temporary files and regression suite do to a
//! filesystem's metadata path — many small files created (`O_CREAT | O_EXCL`, one small
//! write, close) in a set of directories, then every one removed.
//!
//! Nothing is fsynced: PostgreSQL syncs files and directories itself where it needs
//! them, so what this measures is the cost a filesystem adds to a create and an unlink
//! on its own behalf.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::io_err;

/// Bytes written into every file (a small relation fork, a temporary file's first row).
const FILE_BYTES: usize = 100;

/// Creates `files` files of 100 B spread over `dirs` new directories under `root`,
/// then removes them (and the directories); prints the time of each phase and the
/// caller's CPU time for both.
pub fn create_remove(root: &str, files: u64, dirs: u64) -> Result<String, String> {
    if dirs == 0 || files < dirs {
        return Err(format!(
            "need at least one directory and one file per directory (got {files} files in {dirs} directories)"
        ));
    }
    let dir_paths: Vec<PathBuf> = (0..dirs)
        .map(|d| Path::new(root).join(format!("iobench-files-{d}")))
        .collect();
    let file_path = |i: u64| dir_paths[(i % dirs) as usize].join(format!("{}", i / dirs));
    let data = [0x5au8; FILE_BYTES];
    let cpu0 = own_cpu_ns()?;
    let start = Instant::now();
    for dir in &dir_paths {
        let name = dir.display().to_string();
        fs::create_dir(dir).map_err(io_err("mkdir", &name))?;
    }
    for i in 0..files {
        let path = file_path(i);
        let name = path.display().to_string();
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&data))
            .map_err(io_err("create", &name))?;
    }
    let created = start.elapsed();
    let start = Instant::now();
    for i in 0..files {
        let path = file_path(i);
        let name = path.display().to_string();
        fs::remove_file(&path).map_err(io_err("unlink", &name))?;
    }
    for dir in &dir_paths {
        let name = dir.display().to_string();
        fs::remove_dir(dir).map_err(io_err("rmdir", &name))?;
    }
    let removed = start.elapsed();
    let cpu = own_cpu_ns()? - cpu0;
    Ok(format!(
        "files_create_s={:.2} files_remove_s={:.2} files_caller_cpu_s={:.2}",
        created.as_secs_f64(),
        removed.as_secs_f64(),
        cpu as f64 / 1e9
    ))
}

/// CPU time of this (single-threaded) process so far, in nanoseconds: the first field
/// of `/proc/self/schedstat`.
pub fn own_cpu_ns() -> Result<u64, String> {
    let text = fs::read_to_string("/proc/self/schedstat")
        .map_err(|e| format!("reading /proc/self/schedstat: {e}"))?;
    text.split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .ok_or_else(|| format!("unexpected /proc/self/schedstat: {text:?}"))
}
