//! Supervising one real PostgreSQL 15 server: `initdb`, start as a child process
//! (never daemonized, so its supervisor notices a crash at once), readiness,
//! fast or immediate stop.
//!
//! PostgreSQL refuses to run as root, so every PostgreSQL program runs as the
//! `postgres` system user: the child drops to that user's uid and gid (and clears
//! supplementary groups) before exec.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use pgcmk_crypto::SecretBytes;

use crate::contract::server_dir::write_private_file;
use crate::error::IoContext;
use crate::own_mount;
use crate::pg_lock;
use crate::pg_log::{self, Notable, ServerLog};
use crate::sys::{self, Signal};
use crate::Error;

mod install;
mod password;
mod role;
mod settings;
pub mod standby;
pub mod tls;

pub use install::{OsUser, PgInstall};
pub use password::SUPERUSER;
pub use settings::base_settings;

/// How often readiness and exit are polled.
const POLL: Duration = Duration::from_millis(50);
/// The line of `postmaster.pid` (from 0) where the postmaster says whether it is
/// `starting`, `ready` or `stopping`.
const LOCK_FILE_STATUS_LINE: usize = 7;
/// How long the stderr of a postmaster that exited during startup is read on.
const STDERR_DRAIN: Duration = Duration::from_millis(500);
/// How long an earlier postmaster of the data directory may take to exit (after
/// its agent died it got SIGQUIT, immediate shutdown).
const EARLIER_POSTMASTER_GRACE: Duration = Duration::from_secs(5);

/// Where one server keeps its files and where it listens.
#[derive(Clone, Debug)]
pub struct PgLayout {
    /// The data directory (on the cryptfs mount in production).
    pub data_dir: PathBuf,
    /// The directory holding the Unix-domain socket.
    pub socket_dir: PathBuf,
    /// The TCP port (on 127.0.0.1 unless [`tls`] settings say otherwise).
    pub port: u16,
}

/// How to stop PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Roll back open transactions, checkpoint, exit (SIGINT).
    Fast,
    /// Exit at once; the next start replays WAL (SIGQUIT). Committed data is safe.
    Immediate,
}

/// One PostgreSQL server supervised as a child process.
#[derive(Debug)]
pub struct Postgres {
    install: PgInstall,
    layout: PgLayout,
    child: Option<Child>,
    /// The server log since the last start.
    log: Option<ServerLog>,
    /// Settings given on the command line at every start (`-c NAME=VALUE`).
    settings: Vec<(&'static str, String)>,
}

/// Asks whether a server accepts connections; cheap to clone, so another thread
/// can ask while the server is supervised.
#[derive(Clone, Debug)]
pub struct ReadinessProbe {
    install: PgInstall,
    layout: PgLayout,
}

impl ReadinessProbe {
    /// True when the server accepts connections: `pg_isready` connects on its
    /// socket as the `postgres` role to the `postgres` database. That connection
    /// is trusted and succeeds without a line in the server log; as another role
    /// (`pg_isready`'s default is the OS user, root) it would log a FATAL for every
    /// probe. While the server starts or recovers, PostgreSQL refuses it with a
    /// logged FATAL, so [`Postgres::start`] waits for "ready" in the lock file
    /// before it probes.
    pub fn accepts_connections(&self) -> bool {
        Command::new(self.install.program("pg_isready"))
            .arg("-q")
            .arg("-h")
            .arg(&self.layout.socket_dir)
            .arg("-p")
            .arg(self.layout.port.to_string())
            .args(["-U", "postgres", "-d", "postgres", "-t", "2"])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Postgres {
    /// Describes a server; nothing runs until [`Postgres::start`].
    pub fn new(install: PgInstall, layout: PgLayout) -> Self {
        Self {
            install,
            layout,
            child: None,
            log: None,
            settings: Vec::new(),
        }
    }

    /// Sets `name` to `value` from the next start on (`-c NAME=VALUE`: no secret).
    pub fn set(&mut self, name: &'static str, value: String) {
        self.settings.retain(|(n, _)| *n != name);
        self.settings.push((name, value));
    }

    /// Where PostgreSQL is installed.
    pub fn install(&self) -> &PgInstall {
        &self.install
    }

    /// The settings given on the command line at every start, besides the base ones.
    pub fn settings(&self) -> &[(&'static str, String)] {
        &self.settings
    }

    /// Sets each of `settings` from the next start on ([`Postgres::set`]).
    pub fn set_all(&mut self, settings: Vec<(&'static str, String)>) {
        for (name, value) in settings {
            self.set(name, value);
        }
    }

    /// The server's layout.
    pub fn layout(&self) -> &PgLayout {
        &self.layout
    }

    /// True when the data directory holds an initialized cluster.
    pub fn is_initialized(&self) -> bool {
        self.layout.data_dir.join("PG_VERSION").exists()
    }

    /// Creates the cluster with superuser `postgres` whose password for TCP
    /// connections is `password` (SCRAM-SHA-256). Unix-socket connections, whose
    /// directory only root and the PostgreSQL user can reach, are trusted.
    pub fn initdb(&self, password: &SecretBytes) -> Result<(), Error> {
        let user = self.install.user();
        let data = &self.layout.data_dir;
        let parent = data
            .parent()
            .ok_or_else(|| Error::Postgres(format!("{} has no parent", data.display())))?;
        fs::create_dir_all(data).ctx(|| format!("creating {}", data.display()))?;
        fs::set_permissions(data, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("setting permissions of {}", data.display()))?;
        user.chown(data)?;
        // initdb reads the password from a file; it lives beside the data directory
        // (on the encrypted mount in production) only while initdb runs.
        let pwfile = parent.join(".initdb-password");
        write_private_file(&pwfile, password.expose_secret())?;
        user.chown(&pwfile)?;
        let result = self
            .install
            .command_as_postgres("initdb")
            .arg("-D")
            .arg(data)
            .args(["--username=postgres", "--encoding=UTF8", "--locale=C.UTF-8"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output();
        let removed = fs::remove_file(&pwfile);
        let out = result.ctx(|| "running initdb")?;
        removed.ctx(|| format!("removing {}", pwfile.display()))?;
        succeeded("initdb", &out)
    }

    /// Starts PostgreSQL as a child and waits until it accepts connections.
    ///
    /// A lock file left by an earlier postmaster that is gone is removed first
    /// ([`pg_lock`]). The child gets SIGQUIT (immediate shutdown) if the calling
    /// thread dies, so call this from a thread that lives as long as the server
    /// should.
    pub fn start(&mut self, timeout: Duration) -> Result<(), Error> {
        if self.child.is_some() {
            return Err(Error::Postgres("already started".into()));
        }
        let user = self.install.user();
        let sockets = &self.layout.socket_dir;
        fs::create_dir_all(sockets).ctx(|| format!("creating {}", sockets.display()))?;
        fs::set_permissions(sockets, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("setting permissions of {}", sockets.display()))?;
        user.chown(sockets)?;
        pg_lock::clear_stale(&self.layout.data_dir, EARLIER_POSTMASTER_GRACE)?;
        let mut cmd = self.install.command_as_postgres("postgres");
        cmd.arg("-D")
            .arg(&self.layout.data_dir)
            .arg("-p")
            .arg(self.layout.port.to_string())
            .arg("-k")
            .arg(sockets)
            // Loopback unless the settings below say otherwise ([`tls`]).
            .args(
                base_settings("127.0.0.1")
                    .iter()
                    .chain(&self.settings)
                    .flat_map(|(name, value)| ["-c".to_string(), format!("{name}={value}")]),
            )
            .stdin(Stdio::null())
            // What goes wrong before the logging collector runs (a lock file, a
            // port in use) is said on stderr only.
            .stderr(Stdio::piped());
        sys::die_with_parent(&mut cmd, Signal::Quit);
        let mut child = cmd.spawn().ctx(|| "starting postgres")?;
        let postmaster = child.id();
        self.log = Some(ServerLog::follow(&self.layout.data_dir, postmaster));
        let early_fatal = child
            .stderr
            .take()
            .map(|stderr| forward_stderr(stderr, postmaster));
        self.child = Some(child);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll_exit() {
                let said = early_fatal
                    .and_then(|fatal| last_of(&fatal))
                    .or_else(|| self.last_fatal());
                return Err(Error::Postgres(match said {
                    Some(said) => format!("postgres exited during startup ({status}): {said}"),
                    None => format!("postgres exited during startup ({status})"),
                }));
            }
            if self.lock_file_says_ready() && self.is_ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop(StopMode::Immediate)?;
                return Err(Error::Postgres(format!(
                    "postgres did not accept connections within {timeout:?}"
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// True when the server accepts connections (see [`ReadinessProbe`]).
    pub fn is_ready(&self) -> bool {
        self.readiness_probe().accepts_connections()
    }

    /// True when the postmaster has written "ready" in its lock file, as it does
    /// once it accepts connections (what `pg_ctl start` waits for).
    fn lock_file_says_ready(&self) -> bool {
        own_mount::read_to_string(&self.layout.data_dir.join("postmaster.pid")).is_some_and(
            |text| text.lines().nth(LOCK_FILE_STATUS_LINE).map(str::trim) == Some("ready"),
        )
    }

    /// A probe of this server's readiness for another thread.
    pub fn readiness_probe(&self) -> ReadinessProbe {
        ReadinessProbe {
            install: self.install.clone(),
            layout: self.layout.clone(),
        }
    }

    /// Reads the server log written since the last call; each crash restart
    /// (PostgreSQL reinitializing after one of its processes died) with its cause.
    pub fn crash_restarts(&mut self) -> Vec<String> {
        self.log
            .as_mut()
            .map(ServerLog::crash_restarts)
            .unwrap_or_default()
    }

    /// The last PANIC (or FATAL of the postmaster) in the server log not yet told
    /// as the cause of a crash restart: why the postmaster exited, when it said so.
    pub fn last_fatal(&mut self) -> Option<String> {
        self.log.as_mut()?.last_fatal()
    }

    /// The postmaster's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Reaps the child if it has exited and returns how; `None` while it runs (or
    /// was never started).
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Stops the server and waits for the postmaster to exit, escalating from fast
    /// to immediate shutdown to SIGKILL if it lingers. A no-op when not running.
    pub fn stop(&mut self, mode: StopMode) -> Result<(), Error> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let steps: &[(Signal, Duration)] = match mode {
            StopMode::Fast => &[
                (Signal::Int, Duration::from_secs(30)),
                (Signal::Quit, Duration::from_secs(10)),
                (Signal::Kill, Duration::from_secs(10)),
            ],
            StopMode::Immediate => &[
                (Signal::Quit, Duration::from_secs(10)),
                (Signal::Kill, Duration::from_secs(10)),
            ],
        };
        for &(signal, grace) in steps {
            // ESRCH means it already exited; the wait below reaps it.
            let _ = sys::send_signal(child.id(), signal);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if child.try_wait().ctx(|| "waiting for postgres")?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(POLL);
            }
        }
        Err(Error::Postgres(format!(
            "postgres (pid {}) did not exit after SIGKILL",
            child.id()
        )))
    }
}

/// Ok when a PostgreSQL program exited successfully, else its exit status and
/// stderr as the error of `what`.
fn succeeded(what: &str, out: &std::process::Output) -> Result<(), Error> {
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Postgres(format!(
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Copies the postmaster's stderr to the agent's log line by line, each as an event
/// (so that a JSON log stays one object per line), on a thread of its own; sends on
/// each FATAL or PANIC it carried. The channel closes
/// when the postmaster and every child that kept its stderr have exited.
fn forward_stderr(stderr: ChildStderr, postmaster: u32) -> Receiver<String> {
    let (fatal, said) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            tracing::info!(target: "postgres", "{line}");
            if let Some(Notable::Fatal(text)) = pg_log::classify(&line, postmaster) {
                let _ = fatal.send(text);
            }
        }
    });
    said
}

/// The last FATAL or PANIC of an exited postmaster's stderr: waits for the lines
/// still in the pipe, at most [`STDERR_DRAIN`] (the logging collector, if it
/// started, keeps the pipe open).
fn last_of(said: &Receiver<String>) -> Option<String> {
    let deadline = Instant::now() + STDERR_DRAIN;
    let mut last = None;
    loop {
        match said.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(text) => last = Some(text),
            Err(_) => return last,
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop(StopMode::Immediate) {
            tracing::error!("stopping postgres on drop: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_postgres_user() {
        let user = OsUser::lookup("postgres").unwrap();
        assert_ne!(user.uid, 0);
        let err = OsUser::lookup("no-such-user-pgcmk")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn discovers_postgres_15() {
        let install = PgInstall::discover().unwrap();
        assert!(install.program("postgres").exists());
    }
}
