//! `spikefs`: mounts the spike's passthrough filesystem and serves it until unmounted.
//!
//! ```text
//! spikefs BACKING_DIR MOUNTPOINT [--transport auto|devfuse] [--threads N] [--depth N] [--no-pin]
//! ```
//! Serves the regular files of BACKING_DIR (present at mount time) at MOUNTPOINT, over
//! io_uring when the kernel offers it (`--transport auto`, the default) or over
//! /dev/fuse; `--no-pin` leaves the ring's queue threads unpinned. Prints the transport in use on one line, then serves until
//! `umount MOUNTPOINT`. Needs root. Example:
//! ```text
//! echo Y > /sys/module/fuse/parameters/enable_uring
//! spikefs /dev/shm/backing /mnt/spike &
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use pgcmk_fuse_uring::{Options, Passthrough, Session};

const USAGE: &str =
    "usage: spikefs BACKING_DIR MOUNTPOINT [--transport auto|devfuse] [--threads N] [--depth N] [--no-pin]";

fn parse(args: &[String]) -> Result<(PathBuf, PathBuf, Options), String> {
    let mut options = Options::default();
    let mut paths = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value; {USAGE}"))
                .cloned()
        };
        match arg.as_str() {
            "--transport" => match value("--transport")?.as_str() {
                "auto" => options.prefer_uring = true,
                "devfuse" => options.prefer_uring = false,
                other => return Err(format!("unknown transport '{other}': use auto or devfuse")),
            },
            "--threads" => options.threads = number(&value("--threads")?)?,
            "--depth" => options.queue_depth = number(&value("--depth")?)?,
            "--no-pin" => options.pin_queues = false,
            path => paths.push(PathBuf::from(path)),
        }
    }
    match <[PathBuf; 2]>::try_from(paths) {
        Ok([backing, mountpoint]) => Ok((backing, mountpoint, options)),
        Err(_) => Err(USAGE.to_string()),
    }
}

fn number(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{text}' is not a positive integer")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&args).and_then(|(backing, mountpoint, options)| {
        let fs = Passthrough::open(&backing)
            .map_err(|e| format!("cannot open backing directory {}: {e}", backing.display()))?;
        let session =
            Session::start(&mountpoint, Arc::new(fs), options).map_err(|e| e.to_string())?;
        println!(
            "spikefs: mounted at {}, {}",
            mountpoint.display(),
            session.transport()
        );
        session.wait().map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("spikefs: {message}");
            ExitCode::FAILURE
        }
    }
}
