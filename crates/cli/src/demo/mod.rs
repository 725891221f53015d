//! `pgcmk demo`: the whole story on one machine with embedded defaults. It starts a
//! key vault and the control plane in a temporary directory, walks through the four
//! steps a customer follows, stores rows, shows that the disk holds only
//! ciphertext, revokes and restores access, rotates the key, and cleans up.
//!
//! Every step runs the same `pgcmk` commands a person would type (printed as it
//! goes), against real processes: nothing is simulated.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use pgcmk_agent::postgres::PgInstall;

mod story;

use story::story;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// A step did not go as the story says; the message says which and why.
    #[error("{0}")]
    Step(String),
    /// Running a program or touching a file failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Lets `?` turn an I/O error into [`Error::Io`] with context.
trait IoContext<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T, Error>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            context: context().into(),
            source,
        })
    }
}

/// The key check interval the demo runs with.
const INTERVAL_SECS: u64 = 3;
const MARKER: &str = "pgcmk-demo-secret-order";

/// A child process stopped (SIGKILL for the vault, SIGTERM-then-wait for the control
/// plane is done explicitly) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Demo {
    program: PathBuf,
    dir: PathBuf,
    vault_dir: PathBuf,
    endpoint: String,
    /// Wait for Enter before each step of the story (`--pause`).
    pause: bool,
}

fn say(text: &str) {
    println!("\n== {text}");
}

fn explain(text: &str) {
    println!("   {text}");
}

impl Demo {
    /// Announces the next step of the story; with `--pause` on a terminal, waits for
    /// Enter first, so that the web consoles can be looked at between steps.
    fn step(&self, text: &str) {
        if self.pause && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            print!("\n   (Enter: {text}) ");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            let _ = std::io::stdin().read_line(&mut String::new());
        }
        say(text);
    }

    /// Runs `pgcmk ARGS --output json` (shown to the user), returns its JSON.
    fn pgcmk(&self, args: &[&str]) -> Result<Value, Error> {
        println!("   $ pgcmk {}", args.join(" "));
        let out = Command::new(&self.program)
            .args(args)
            .args(["--output", "json"])
            .env("PGCMK_VAULT_SERVICE_DIR", &self.vault_dir)
            .env("PGCMK_CONTROL_DIR", self.control_dir())
            .env_remove("PGCMK_CREDENTIALS")
            .stdin(Stdio::null())
            .output()
            .ctx(|| "running pgcmk")?;
        if !out.status.success() {
            return Err(Error::Step(format!(
                "`pgcmk {}` failed: {}",
                args.join(" "),
                error_message(&out.stderr)
            )));
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    }

    /// The demo's control-plane directory: its state directory, where `pgcmk server`
    /// finds the API's URL, CA certificate and the DBA credential (`PGCMK_CONTROL_DIR`).
    fn control_dir(&self) -> PathBuf {
        self.dir.join("control")
    }

    /// The DBA credential the demo's control plane writes on its first start.
    fn dba_credential(&self) -> PathBuf {
        self.control_dir()
            .join(pgcmk_control::auth::CREDENTIAL_FILE)
    }

    /// The CA certificate of the demo's control plane: the only one its API's clients trust.
    fn ca_cert(&self) -> PathBuf {
        self.control_dir().join(pgcmk_control::api_tls::CA_FILE)
    }

    fn spawn(&self, args: &[&str], log: &str) -> Result<Process, Error> {
        let log = fs::File::create(self.dir.join(log)).ctx(|| "creating a log file")?;
        let err = log.try_clone().ctx(|| "duplicating a log handle")?;
        let child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .ctx(|| "starting pgcmk")?;
        Ok(Process(child))
    }

    fn state(&self, server: &str) -> Result<(String, String), Error> {
        let v = self.quiet(&["server", "show", server])?;
        Ok((
            v["server"]["state"].as_str().unwrap_or("").to_string(),
            v["server"]["reason"].as_str().unwrap_or("").to_string(),
        ))
    }

    /// Like [`Demo::pgcmk`] without echoing the command (for polling).
    fn quiet(&self, args: &[&str]) -> Result<Value, Error> {
        let out = Command::new(&self.program)
            .args(args)
            .args(["--output", "json"])
            .env("PGCMK_CONTROL_DIR", self.control_dir())
            .stdin(Stdio::null())
            .output()
            .ctx(|| "running pgcmk")?;
        serde_json::from_slice(&out.stdout).map_err(|_| Error::Step(error_message(&out.stderr)))
    }
}

/// The message of the JSON error (`--output json`) a failed command printed on stderr.
fn error_message(stderr: &[u8]) -> String {
    serde_json::from_slice::<Value>(stderr)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(stderr).trim().to_string())
}

/// Gives the database's identity get, wrapKey and unwrapKey on its vault.
fn grant(demo: &Demo) -> Result<Value, Error> {
    demo.pgcmk(&[
        "keyvault",
        "set-policy",
        "--name",
        "orders-kv",
        "--identity",
        "orders-mi",
        "--key-permissions",
        "get",
        "wrapKey",
        "unwrapKey",
    ])
}

/// Waits for `condition`, polling every 100 ms, up to `limit`; returns the time taken.
fn wait(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<Duration, Error> {
    let start = Instant::now();
    while !condition() {
        if start.elapsed() > limit {
            return Err(Error::Step(format!(
                "timed out after {limit:?} waiting for {what}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(start.elapsed())
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

fn psql(port: u64, password: &str, sql: &str) -> Result<String, String> {
    let port = u16::try_from(port).map_err(|_| format!("bad port {port}"))?;
    PgInstall::discover()
        .map_err(|e| e.to_string())?
        .psql(port, password, sql)
}

/// Counts the files under `dir` and those whose bytes contain `needle`.
fn scan(dir: &Path, needle: &[u8]) -> (usize, usize) {
    let (mut files, mut hits) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = fs::read(&path) {
                files += 1;
                hits += usize::from(bytes.windows(needle.len()).any(|w| w == needle));
            }
        }
    }
    (files, hits)
}

/// Runs the demo; `program` is the `pgcmk` binary; `pause`: wait for Enter before
/// each step. Everything it creates is removed.
pub fn run(program: &Path, pause: bool) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("pgcmk-demo-{}", std::process::id()));
    fs::create_dir_all(&dir)
        .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)))
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut demo = Demo {
        program: program.to_path_buf(),
        vault_dir: dir.join("vault"),
        dir: dir.clone(),
        endpoint: String::new(),
        pause,
    };
    let result = story(&mut demo);
    say("Cleaning up");
    let _ = fs::remove_dir_all(&dir);
    explain(&format!("removed {}", dir.display()));
    result.map_err(|e| e.to_string())
}
