//! Mounting and unmounting: key check first, then a multi-threaded FUSE session.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption, Session, SessionACL};
use pgcmk_crypto::SymmetricKey;

use crate::crash_recovery::{self, RecoveryReport};
use crate::fuse::{CryptFs, FsOptions};
use crate::{config, sys, Error};

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Let users other than root use the mount (PostgreSQL runs as `postgres`).
    /// Permissions are still checked by the kernel against each file's mode.
    pub allow_other: bool,
    /// FUSE request threads, each with its own cloned `/dev/fuse` descriptor (1–64).
    /// Default: the number of CPUs, within 2–4 (more threads than cores only add
    /// context switches to every commit; one thread would stall all I/O behind
    /// one fsync).
    pub threads: usize,
    /// Serve files directly under a `pg_wal` directory with direct I/O: saves a
    /// round trip per WAL flush. On by default.
    pub direct_io_wal: bool,
    /// Mount read-only, for inspecting a volume whose owner is not serving it: the
    /// kernel refuses every change, and the volume itself is left as it is — no
    /// dirty marker, and no crash recovery (on a volume that did not unmount
    /// cleanly, blocks torn by the crash read as `EIO` until the next read-write
    /// mount repairs them). Off by default.
    pub read_only: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            allow_other: false,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)),
            direct_io_wal: true,
            read_only: false,
        }
    }
}

/// A live mount. Unmounts on [`MountHandle::unmount`] or when dropped.
#[derive(Debug)]
pub struct MountHandle {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    cipher_dir: PathBuf,
    recovery: Option<RecoveryReport>,
    read_only: bool,
    /// Tells the request threads to give up long requests (see `abort_and_detach`).
    stopping: Arc<AtomicBool>,
}

/// Mounts the cipher directory `cipher_dir` at `mountpoint`.
///
/// The key is checked before anything is mounted (a wrong key is
/// [`Error::WrongKey`]). If the last session did not end with a clean unmount,
/// crash recovery runs first (see [`MountHandle::recovery`]), unless the mount is
/// read-only ([`MountOptions::read_only`]). Returns once the
/// kernel has completed the FUSE handshake, so the mount is usable immediately.
pub fn mount(
    cipher_dir: &Path,
    mountpoint: &Path,
    master_key: SymmetricKey,
    options: MountOptions,
) -> Result<MountHandle, Error> {
    if !(1..=64).contains(&options.threads) {
        return Err(Error::InvalidArgument(format!(
            "threads must be between 1 and 64, got {}",
            options.threads
        )));
    }
    let cipher_dir = fs::canonicalize(cipher_dir).map_err(Error::path("opening", cipher_dir))?;
    let mountpoint_abs =
        fs::canonicalize(mountpoint).map_err(Error::path("opening mountpoint", mountpoint))?;
    if !mountpoint_abs.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "mountpoint {} is not a directory",
            mountpoint.display()
        )));
    }
    if mountpoint_abs.starts_with(&cipher_dir) || cipher_dir.starts_with(&mountpoint_abs) {
        return Err(Error::InvalidArgument(format!(
            "mountpoint {} and cipher directory {} must not contain each other",
            mountpoint_abs.display(),
            cipher_dir.display()
        )));
    }
    let volume = config::open(&cipher_dir, &master_key)?;
    drop(master_key);
    // aws-lc seeds its random generator from CPU-jitter entropy at the process's first
    // draw (about 80 ms of CPU): pay it here rather than in the first write through the
    // mount (every write draws its nonces).
    pgcmk_crypto::random::array::<16>()?;
    // The daemon holds one backing descriptor per file open through the mount, and
    // PostgreSQL keeps up to max_files_per_process open in every backend.
    match crate::sys::raise_open_file_limit() {
        Ok(limit) if limit < 4096 => tracing::warn!(
            limit,
            "cryptfs: the daemon may open only {limit} files; raise the hard RLIMIT_NOFILE"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cryptfs: cannot raise the open file limit: {e}"),
    }
    let recovery = if options.read_only {
        None
    } else {
        crash_recovery::begin_session(&cipher_dir, &Arc::new(volume.clone()))?
    };
    let root_dir = fs::File::open(&cipher_dir).map_err(Error::path("opening", &cipher_dir))?;
    let stopping = Arc::new(AtomicBool::new(false));
    let fs = CryptFs::new(
        cipher_dir.clone(),
        root_dir,
        volume,
        FsOptions {
            direct_io_wal: options.direct_io_wal,
        },
        stopping.clone(),
    )
    .map_err(Error::path("opening", &cipher_dir))?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("pgcmk-cryptfs".into()),
        MountOption::Subtype("pgcmk-cryptfs".into()),
        // The daemon runs as root: let the kernel enforce each file's mode and owner.
        MountOption::DefaultPermissions,
    ];
    if options.read_only {
        config.mount_options.push(MountOption::RO);
    }
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(options.threads);
    config.clone_fd = true;
    let mount_error = |source| Error::Mount {
        mountpoint: mountpoint_abs.clone(),
        source,
    };
    let session = Session::new(fs, &mountpoint_abs, &config)
        .and_then(Session::spawn)
        .map_err(mount_error)?;
    lift_dirty_limit(&mountpoint_abs);
    Ok(MountHandle {
        session: Some(session),
        mountpoint: mountpoint_abs,
        cipher_dir,
        recovery,
        read_only: options.read_only,
        stopping,
    })
}

/// The kernel caps a FUSE mount's dirty pages at 1 % of the dirty limit, strictly,
/// which throttles every writer to the daemon's round-trip rate (random 8 KiB
/// writes measured at ~17 % of the plain disk). This daemon is trusted (root, in
/// pgcmk's own process), so the mount may buffer dirty pages like a disk does.
/// Best effort: without /sys write access the kernel default stays.
fn lift_dirty_limit(mountpoint: &Path) {
    let Ok(meta) = fs::metadata(mountpoint) else {
        return;
    };
    let bdi = format!(
        "/sys/class/bdi/{}:{}",
        libc::major(meta.dev()),
        libc::minor(meta.dev())
    );
    for (knob, value) in [("strict_limit", "0"), ("max_ratio", "100")] {
        if let Err(e) = fs::write(format!("{bdi}/{knob}"), value) {
            tracing::debug!(%bdi, knob, "cryptfs: cannot tune the mount's dirty limit: {e}");
        }
    }
}

impl MountHandle {
    /// The mountpoint (absolute).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// What crash recovery did at mount; `None` when the last session ended with a
    /// clean unmount (no recovery ran).
    pub fn recovery(&self) -> Option<&RecoveryReport> {
        self.recovery.as_ref()
    }

    /// True while the filesystem is still being served (false after an external
    /// `umount` / `pgcmk fs unmount`).
    pub fn is_mounted(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| !s.guard.is_finished())
    }

    /// Unmounts and waits for the request threads to finish. Fails (and stays
    /// mounted) while files under the mountpoint are in use.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.try_unmount()
    }

    /// Like [`MountHandle::unmount`], but keeps the handle on failure so it can retry.
    pub fn try_unmount(&mut self) -> Result<(), Error> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if !session.guard.is_finished() {
            if let Err(source) = sys::umount(&self.mountpoint, false) {
                // Already unmounted from outside: nothing left to do but join.
                if source.raw_os_error() != Some(libc::EINVAL) {
                    self.session = Some(session);
                    return Err(Error::Unmount {
                        mountpoint: self.mountpoint.clone(),
                        source,
                    });
                }
            }
        }
        match session.join() {
            Ok(()) => {}
            // The kernel ends an unmounted filesystem's channel with ENODEV, or with
            // ECONNABORTED when it aborted the connection (a forced unmount, or an
            // unmount meeting the last requests): the session is over either way, and
            // what follows makes it durable.
            Err(source) if source.raw_os_error() == Some(libc::ECONNABORTED) => {
                tracing::debug!("cryptfs: the FUSE connection ended aborted");
            }
            Err(source) => {
                return Err(Error::Unmount {
                    mountpoint: self.mountpoint.clone(),
                    source,
                })
            }
        }
        if self.read_only {
            return Ok(());
        }
        // No request runs any more: make everything durable and drop the marker. If
        // this fails the marker stays, and the next mount runs crash recovery.
        if let Err(e) = crash_recovery::end_session(&self.cipher_dir) {
            tracing::warn!("cryptfs: unmounted, but could not record the clean unmount: {e}");
        }
        Ok(())
    }

    /// Like [`MountHandle::try_unmount`], retrying while the mount is busy, for up to
    /// `patience`: processes that are exiting (or a fork on its way to exec that
    /// inherited a descriptor) hold a mount for a moment after their last use of it.
    pub fn try_unmount_within(&mut self, patience: Duration) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match self.try_unmount() {
                Err(Error::Unmount { source, .. })
                    if source.raw_os_error() == Some(libc::EBUSY)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// Serves until the filesystem is unmounted from outside or one of `signals`
    /// arrives; then unmounts. If files under the mountpoint are still in use, the
    /// mount is stopped anyway: the FUSE connection is aborted (requests in flight
    /// and every later request of those users fail with `ENOTCONN`) and the mount
    /// detached; the daemon finishes the requests it was serving, makes everything
    /// durable and records the clean end. A stop must not wait for clients — the
    /// process manager that sent SIGTERM is about to send SIGKILL.
    pub fn serve_until_signal(mut self, signals: &TerminationSignals) -> Result<(), Error> {
        loop {
            if !self.is_mounted() {
                return self.try_unmount();
            }
            if let Some(signal) = signals.blocked.wait(Duration::from_millis(250)) {
                tracing::info!(signal, "cryptfs: termination signal, unmounting");
                return match self.try_unmount() {
                    Err(Error::Unmount { source, .. })
                        if source.raw_os_error() == Some(libc::EBUSY) =>
                    {
                        self.abort_and_detach()
                    }
                    other => other,
                };
            }
        }
    }

    /// Stops a busy mount: aborts its FUSE connection, detaches it, and ends the
    /// session as [`MountHandle::try_unmount`] does once the request threads are done.
    fn abort_and_detach(&mut self) -> Result<(), Error> {
        tracing::warn!(
            mountpoint = %self.mountpoint.display(),
            "cryptfs: files are still in use; aborting the FUSE connection and detaching"
        );
        // A request extending a file by gigabytes gives up (and undoes its work).
        self.stopping.store(true, Ordering::Relaxed);
        let detached = match sys::umount_force(&self.mountpoint) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => sys::umount(&self.mountpoint, true),
            other => other,
        };
        if let Err(source) = detached {
            return Err(Error::Unmount {
                mountpoint: self.mountpoint.clone(),
                source,
            });
        }
        self.try_unmount()
    }
}

/// How long dropping a [`MountHandle`] waits for a busy mount to be left before it
/// detaches it lazily (which leaves the volume to crash recovery at the next mount).
const DROP_PATIENCE: Duration = Duration::from_secs(5);

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.try_unmount_within(DROP_PATIENCE) {
            // Busy: detach lazily so the mountpoint does not stay wedged; the request
            // threads finish once the last user closes its files.
            tracing::warn!("cryptfs: {e}; detaching lazily");
            self.stopping.store(true, Ordering::Relaxed);
            let _ = sys::umount(&self.mountpoint, true);
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, blocked for synchronous waiting.
///
/// Create it before [`mount`] so the FUSE threads inherit the blocked mask and the
/// signals are delivered to [`MountHandle::serve_until_signal`] instead of killing
/// the process with the filesystem still mounted.
pub struct TerminationSignals {
    blocked: sys::BlockedSignals,
}

impl TerminationSignals {
    /// Blocks the signals in the calling thread and threads it starts later.
    pub fn block() -> Result<Self, Error> {
        Ok(Self {
            blocked: sys::BlockedSignals::block()?,
        })
    }
}

/// Unmounts the filesystem mounted at `mountpoint` (e.g. by `pgcmk fs mount` in
/// another process), which then exits.
pub fn unmount(mountpoint: &Path) -> Result<(), Error> {
    sys::umount(mountpoint, false).map_err(|source| match source.raw_os_error() {
        Some(libc::EINVAL) => Error::InvalidArgument(format!(
            "{} is not a mountpoint (nothing is mounted there)",
            mountpoint.display()
        )),
        _ => Error::Unmount {
            mountpoint: mountpoint.to_path_buf(),
            source,
        },
    })
}
