//! A throwaway PostgreSQL 15 cluster run as the `postgres` user on a free loopback port.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::{as_postgres, chown_postgres, output, run, run_with_input, wait_until};

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub fn pg_bin(tool: &str) -> PathBuf {
    Path::new(BIN).join(tool)
}

/// A cluster whose data directory may live on the mount; the unix socket and the server log
/// stay in `aux` (outside the mount) so that a broken mount still leaves a readable log.
pub struct PgCluster {
    data: PathBuf,
    aux: PathBuf,
    port: u16,
    running: bool,
}

impl PgCluster {
    /// `initdb` into `data` (created, owned by postgres) with trust auth on loopback only.
    pub fn initdb(data: &Path, aux: &Path) -> Self {
        fs::create_dir_all(data).expect("create data dir");
        chown_postgres(data);
        chown_postgres(aux);
        run(as_postgres(pg_bin("initdb"))
            .current_dir(aux)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "-D",
            ])
            .arg(data));
        Self {
            data: data.to_path_buf(),
            aux: aux.to_path_buf(),
            port: free_port(),
            running: false,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Appends settings to postgresql.conf (takes effect at the next start).
    pub fn configure(&self, settings: &[(&str, &str)]) {
        let mut conf = OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        for (name, value) in settings {
            writeln!(conf, "{name} = '{value}'").expect("write postgresql.conf");
        }
    }

    pub fn start(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.aux.display()
        );
        let out = output(
            as_postgres(pg_bin("pg_ctl"))
                .current_dir(&self.aux)
                .args(["start", "-w", "-t", "120", "-D"])
                .arg(&self.data)
                .arg("-l")
                .arg(self.server_log())
                .args(["-o", &opts]),
        );
        self.running = out.status.success() || self.postmaster_pid().is_some();
        assert!(
            out.status.success(),
            "pg_ctl start failed:\n{}",
            self.log_tail()
        );
    }

    /// Clean (fast) shutdown: a checkpoint is written and every file synced.
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    /// Returns once the postmaster has exited. pg_ctl returns when postmaster.pid is gone,
    /// which the postmaster removes on its way out, still holding its working directory (the
    /// data directory): unmounting right then would fail with EBUSY.
    fn pg_ctl_stop(&mut self, mode: &str) -> Output {
        let pid = self.postmaster_pid();
        let out = output(
            as_postgres(pg_bin("pg_ctl"))
                .current_dir(&self.aux)
                .args(["stop", "-w", "-t", "120", "-m", mode, "-D"])
                .arg(&self.data),
        );
        if out.status.success() {
            self.running = false;
        }
        assert!(
            out.status.success() || std::thread::panicking(),
            "pg_ctl stop -m {mode} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        if let Some(pid) = pid.filter(|_| out.status.success()) {
            let exited = wait_until(Duration::from_secs(30), || !process_alive(pid));
            assert!(
                exited || std::thread::panicking(),
                "postmaster {pid} still running 30 s after pg_ctl stop"
            );
        }
        out
    }

    /// The postmaster's pid, from postmaster.pid, while it exists.
    fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    pub fn server_log(&self) -> PathBuf {
        self.aux.join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = fs::read(self.server_log()).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(4000)..]).into_owned()
    }

    /// A client command (psql, pgbench, pg_amcheck) aimed at this server over loopback TCP.
    pub fn client(&self, tool: &str) -> Command {
        let mut cmd = Command::new(pg_bin(tool));
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres");
        cmd
    }

    /// Runs an SQL script, each statement in its own transaction (stops at the first error),
    /// and returns unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        run_with_input(&mut self.psql_command(), sql.as_bytes())
            .trim()
            .to_string()
    }

    /// Like [`Self::psql`], for a script file that reads psql variables (`-v name=value`).
    pub fn psql_file(&self, script: &Path, vars: &[(&str, &str)]) -> String {
        let mut cmd = self.psql_command();
        for (name, value) in vars {
            cmd.arg("-v").arg(format!("{name}={value}"));
        }
        run(cmd.arg("-f").arg(script)).trim().to_string()
    }

    fn psql_command(&self) -> Command {
        let mut cmd = self.client("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
        cmd
    }

    /// `pg_amcheck --heapallindexed` over every database (amcheck installed where missing):
    /// heap and every btree, catalogs included. Returns what it reported; empty when clean.
    pub fn amcheck_all(&self) -> String {
        let out = output(self.client("pg_amcheck").args([
            "--heapallindexed",
            "--install-missing",
            "--all",
        ]));
        if out.status.success() && out.stdout.is_empty() {
            return String::new();
        }
        format!(
            "pg_amcheck exited with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let out = self.pg_ctl_stop("immediate");
        if !out.status.success() {
            if let Some(pid) = self.postmaster_pid() {
                // SIGQUIT is PostgreSQL's immediate shutdown; we only signal our own postmaster.
                let _ = Command::new("kill")
                    .args(["-QUIT", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Whether `pid` runs: a zombie has exited (and closed its files and working directory) but
/// stays in /proc until its parent reaps it.
fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(") ")?.1.starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// A loopback port that was free a moment ago (the OS picks it; we release it for postgres).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback port 0");
    listener.local_addr().expect("local addr").port()
}
