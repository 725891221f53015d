//! `iobench drops`: what PostgreSQL's DROP TABLE does to each fork it drops — the file,
//! written and fsynced by an earlier checkpoint, is opened, truncated to 0 and closed at
//! commit; the unlink follows at the next checkpoint (not timed here).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use crate::io_err;

/// Bytes of every file before it is dropped (one 8 KiB page).
const FILE_BYTES: usize = 8192;

/// Creates `files` files of 8 KiB under `root` (each fsynced), then times opening,
/// truncating to 0 and closing each; removes them. Prints the mean time of one drop.
pub fn drop_files(root: &str, files: u64) -> Result<String, String> {
    let dir = Path::new(root).join("iobench-drops");
    let name = dir.display().to_string();
    fs::create_dir(&dir).map_err(io_err("mkdir", &name))?;
    let data = [0x5au8; FILE_BYTES];
    for i in 0..files {
        let path = dir.join(i.to_string());
        let name = path.display().to_string();
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|f| f.write_all_at(&data, 0).and_then(|()| f.sync_all()))
            .map_err(io_err("create", &name))?;
    }
    let start = Instant::now();
    for i in 0..files {
        let path = dir.join(i.to_string());
        let name = path.display().to_string();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
            .map_err(io_err("truncate", &name))?;
    }
    let dropped = start.elapsed();
    fs::remove_dir_all(&dir).map_err(io_err("rm -r", &name))?;
    Ok(format!(
        "drop_us={:.0}",
        dropped.as_secs_f64() * 1e6 / files.max(1) as f64
    ))
}
