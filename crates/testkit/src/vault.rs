//! A real `pgcmk vault serve` child: on a free loopback port chosen by the service on
//! its first start (and kept by it afterwards), ready once it has written
//! `service.json` naming its own pid (a file left by an earlier run names another),
//! and killed by its handle when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use pgcmk_vault::client::{read_credential, ServiceDir};
use pgcmk_vault::identity::Credential;

use crate::process::{kill_quietly, spawn_logged, terminate, wait_exit};
use crate::wait::poll;

/// How long the service may take to write `service.json`.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a SIGTERMed service may take to exit.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// The `pgcmk vault serve` command line, kept so the same service can start again.
#[derive(Clone, Debug)]
pub struct ServeCommand {
    /// The `pgcmk` binary.
    pub bin: PathBuf,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// Where stdout and stderr are appended.
    pub log_file: PathBuf,
    /// `--listen`, when given; without it the service picks a free loopback port
    /// on its first start and keeps it.
    pub listen: Option<String>,
    /// More `serve` arguments.
    pub args: Vec<String>,
    /// Environment for the child (e.g. a passphrase variable).
    pub env: Vec<(String, String)>,
}

impl ServeCommand {
    /// `pgcmk vault serve --data-dir DATA_DIR`, logging to `log_file`.
    pub fn new(bin: &Path, data_dir: PathBuf, log_file: PathBuf) -> Self {
        Self {
            bin: bin.to_path_buf(),
            data_dir,
            log_file,
            listen: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Starts the service; it is not ready yet (see [`wait_ready`]).
    pub fn spawn(&self) -> Child {
        let mut command = Command::new(&self.bin);
        command
            .args(["vault", "serve", "--data-dir"])
            .arg(&self.data_dir)
            .args(self.listen.iter().flat_map(|l| ["--listen", l.as_str()]))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        spawn_logged(&mut command, &self.log_file)
    }

    /// Everything the service printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }
}

/// Waits until `child` has written `service.json` into the data directory of
/// `command`; panics with its log if it exits first or takes too long.
pub fn wait_ready(child: &mut Child, command: &ServeCommand) -> ServiceDir {
    let mut service = None;
    poll(START_DEADLINE, Duration::from_millis(20), || {
        if let Some(status) = child.try_wait().expect("check the vault") {
            panic!("the vault exited early ({status}):\n{}", command.log());
        }
        service = ServiceDir::open(&command.data_dir)
            .ok()
            .filter(|s| s.info.pid == child.id());
        service.is_some()
    });
    service.unwrap_or_else(|| {
        panic!(
            "the vault wrote no service.json in {}s:\n{}",
            START_DEADLINE.as_secs(),
            command.log()
        )
    })
}

/// A running (or deliberately stopped) vault service; killed on drop.
pub struct VaultProcess {
    child: Option<Child>,
    /// How it was started; a restart uses it again.
    pub command: ServeCommand,
    /// What it wrote to `service.json` on its last start.
    pub service: ServiceDir,
}

impl VaultProcess {
    /// Starts the service and waits until it is ready.
    pub fn start(command: ServeCommand) -> Self {
        let mut child = command.spawn();
        let service = wait_ready(&mut child, &command);
        Self {
            child: Some(child),
            command,
            service,
        }
    }

    /// The service's process id (0 while it is stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Everything the service printed so far.
    pub fn log(&self) -> String {
        self.command.log()
    }

    /// The bootstrap administrator's credential, written on first start.
    pub fn admin_credential(&self) -> Credential {
        read_credential(&self.service.admin_credential()).expect("read admin.credential")
    }

    /// SIGKILL: an outage with no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill the vault");
            child.wait().expect("reap the vault");
        }
    }

    /// SIGTERM, and asserts a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            assert!(terminate(child.id()), "could not signal the vault");
            match wait_exit(&mut child, STOP_DEADLINE) {
                Some(status) => assert!(
                    status.success(),
                    "vault exited with {status}:\n{}",
                    self.log()
                ),
                None => {
                    kill_quietly(&mut child);
                    panic!("vault did not stop after SIGTERM");
                }
            }
        }
    }

    /// Starts the stopped service again with the same command.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the service first");
        let mut child = self.command.spawn();
        self.service = wait_ready(&mut child, &self.command);
        self.child = Some(child);
    }

    /// Starts the stopped service expecting it to refuse; returns its log.
    pub fn start_expecting_failure(&self) -> String {
        assert!(self.child.is_none(), "stop or kill the service first");
        let mut child = self.command.spawn();
        match wait_exit(&mut child, START_DEADLINE) {
            Some(status) => {
                assert!(
                    !status.success(),
                    "the service should have refused to start"
                );
                self.log()
            }
            None => {
                kill_quietly(&mut child);
                panic!(
                    "the service started although it should have refused:\n{}",
                    self.log()
                );
            }
        }
    }
}

impl Drop for VaultProcess {
    fn drop(&mut self) {
        // Only the process this harness started, by its handle.
        if let Some(child) = self.child.as_mut() {
            kill_quietly(child);
        }
    }
}
