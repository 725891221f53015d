//! The plain side of the benchmark: a PostgreSQL cluster in an ordinary directory
//! and pgBackRest configured by hand beside it with pgcmk's settings.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::support::free_port;
use super::{pgbench, BIN};

/// Runs `program` as the postgres user; panics with its stderr when it fails.
pub fn as_postgres(program: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--", program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A plain PostgreSQL cluster and a pgBackRest repository beside it, with the
/// settings pgcmk uses.
pub struct Plain {
    pub root: PathBuf,
    pub port: u16,
}

impl Plain {
    pub fn config(&self) -> String {
        format!("--config={}", self.root.join("pgbackrest.conf").display())
    }

    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn setup(root: &Path, scale: u32) -> Self {
        let plain = Self {
            root: root.to_path_buf(),
            port: free_port(),
        };
        for d in ["spool", "lock", "log", "repo"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let conf = format!(
            "[global]\nrepo1-path={r}/repo\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={pass}\n\
             compress-type=zst\narchive-async=y\nspool-path={r}/spool\nlock-path={r}/lock\n\
             log-path={r}/log\nlog-level-console=off\nstart-fast=y\n\n[plain]\npg1-path={r}/data\n\
             pg1-port={port}\npg1-socket-path={r}\n",
            r = root.display(),
            pass = "b".repeat(64),
            port = plain.port,
        );
        fs::write(root.join("pgbackrest.conf"), conf).unwrap();
        chown_postgres(root);
        as_postgres(
            &format!("{BIN}/initdb"),
            &[
                "-D",
                plain.data().to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
            ],
        );
        plain.start(&plain.data(), plain.port, true);
        as_postgres(
            "pgbackrest",
            &[&plain.config(), "--stanza=plain", "stanza-create"],
        );
        pgbench(
            u64::from(plain.port),
            "",
            &["-i", "-q", "-s", &scale.to_string()],
        );
        plain
    }

    /// Starts the cluster in `data` on `port` (archiving to the repository when
    /// `archive`), waiting until it accepts connections.
    pub fn start(&self, data: &Path, port: u16, archive: bool) {
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            self.root.display()
        );
        if archive {
            options.push_str(&format!(
                " -c archive_mode=on -c \"archive_command=pgbackrest {} --stanza=plain archive-push %p\"",
                self.config()
            ));
        } else {
            options.push_str(" -c hot_standby=off");
        }
        let log = data.with_extension("log");
        as_postgres(
            &format!("{BIN}/pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-w",
                "-t",
                "3600",
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "start",
            ],
        );
    }

    pub fn stop(&self, data: &Path) {
        as_postgres(
            &format!("{BIN}/pg_ctl"),
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }
}

impl Drop for Plain {
    /// The plain cluster is a daemon (pg_ctl): stopped here, so that it does not
    /// outlive the benchmark.
    fn drop(&mut self) {
        // Never a panic here (a failed run is unwinding already).
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{BIN}/pg_ctl"), "-D"])
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}
