//! Backup benchmark (bench/backup/run.sh): on a pgbench database of the given
//! scale, side by side in one run,
//! - full backup and full restore through pgcmk (a service-managed server: cryptfs,
//!   the agent's pgBackRest, repository encrypted under the server's key), and
//! - pgBackRest run by hand on the same data in a plain directory with the same
//!   settings (zstd, aes-256-cbc, one process),
//!
//! with wall time, throughput (database bytes per second) and CPU seconds (of
//! pgBackRest and what drives it: the children the control plane waited for, or
//! those this program waited for); then the WAL archive's lag behind
//! `pg_current_wal_lsn()` while pgbench -c4 runs, and a point-in-time restore.
//!
//! Then pgbench TPC-B with archiving on against the same cluster without (the plain
//! one: a pgcmk server always archives).
//!
//! Options: --scale N (140: about 2.1 GB), --pgbench-secs S (300), --tpcb-secs S
//! (120, each of the two TPC-B runs).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::backups::*;
use support::*;

const BIN: &str = "/usr/lib/postgresql/15/bin";

struct Args {
    scale: u32,
    pgbench_secs: u32,
    tpcb_secs: u32,
}

fn parse_args() -> Args {
    let mut args = Args {
        scale: 140,
        pgbench_secs: 300,
        tpcb_secs: 120,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--scale" => args.scale = value.parse().expect("--scale N"),
            "--pgbench-secs" => args.pgbench_secs = value.parse().expect("--pgbench-secs S"),
            "--tpcb-secs" => args.tpcb_secs = value.parse().expect("--tpcb-secs S"),
            other => {
                panic!("unknown option {other}: use --scale N --pgbench-secs S --tpcb-secs S")
            }
        }
    }
    args
}

/// CPU seconds (user + system) of the waited-for children of process `pid`.
fn children_cpu(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis; cutime and cstime are the
    // 16th and 17th of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[13].parse::<f64>().unwrap() + f[14].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Wall seconds and children CPU seconds of `work`, the children counted being
/// those `pid` waits for.
fn measure(pid: u32, work: impl FnOnce()) -> (f64, f64) {
    let cpu = children_cpu(pid);
    let t = Instant::now();
    work();
    (t.elapsed().as_secs_f64(), children_cpu(pid) - cpu)
}

fn pgbench(port: u64, password: &str, args: &[&str]) -> String {
    let out = Command::new(format!("{BIN}/pgbench"))
        .args(args)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "postgres",
        ])
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgbench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.contains("progress"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `program` as the postgres user; panics with its stderr when it fails.
fn as_postgres(program: &str, args: &[&str]) {
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

/// CPU seconds (user + nice + system) the whole machine spent so far.
fn machine_cpu() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|v| v.parse().unwrap())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// A plain PostgreSQL cluster and a pgBackRest repository beside it, with the
/// settings pgcmk uses.
struct Plain {
    root: PathBuf,
    port: u16,
}

impl Plain {
    fn config(&self) -> String {
        format!("--config={}", self.root.join("pgbackrest.conf").display())
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn setup(root: &Path, scale: u32) -> Self {
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
    fn start(&self, data: &Path, port: u16, archive: bool) {
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

    fn stop(&self, data: &Path) {
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

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn row(what: &str, bytes: u64, wall: f64, cpu: String) {
    println!(
        "| {what} | {wall:.1} s | {:.1} MB/s | {cpu} |",
        bytes as f64 / 1e6 / wall
    );
}

/// The tps pgbench reports.
fn tps_of(report: &str) -> f64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// pgbench -c4 -j2 TPC-B for `secs` on the plain cluster with pgBackRest's
/// asynchronous archiving on, then on the same cluster restarted without it; each
/// run after a checkpoint.
fn tpcb_with_and_without_archiving(plain: &Plain, secs: u32) {
    let port = u64::from(plain.port);
    let secs = secs.to_string();
    let run = || {
        as_postgres(
            &format!("{BIN}/psql"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-c",
                "CHECKPOINT",
            ],
        );
        tps_of(&pgbench(port, "", &["-c", "4", "-j", "2", "-T", &secs]))
    };
    eprintln!("TPC-B with archiving, then without, {secs} s each");
    let with = run();
    plain.stop(&plain.data());
    plain.start(&plain.data(), plain.port, false);
    let without = run();
    println!(
        "\npgbench TPC-B -c4 -j2 for {secs} s on the plain cluster: {with:.0} tps with \
         pgBackRest's asynchronous archiving, {without:.0} tps without: {:.0} %",
        100.0 * with / without
    );
}

/// The segment number of WAL file `name` (16 MB segments).
fn segment_number(name: &str) -> u64 {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    log * 0x100 + seg
}

fn main() {
    let args = parse_args();
    let stack = Stack::start(60, 300, None);
    let plane = stack.cp.pid();
    let me = std::process::id();

    eprintln!("pgcmk server: pgbench -i -s {}", args.scale);
    let s = create_backed_up(&stack, "bench");
    pgbench(
        s.port,
        &s.password,
        &["-i", "-q", "-s", &args.scale.to_string()],
    );
    let bytes: u64 = s
        .sql("SELECT pg_database_size('postgres')")
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("plain cluster: pgbench -i -s {}", args.scale);
    let plain = Plain::setup(&stack.root.path().join("plain"), args.scale);
    println!(
        "database: {:.2} GB (pgbench scale {})\n",
        bytes as f64 / 1e9,
        args.scale
    );
    println!("| operation | wall | throughput | CPU |");
    println!("|---|---|---|---|");

    let (wall, cpu) = measure(plane, || {
        stack
            .cp
            .try_backup(&["create", "bench", "--type", "full"])
            .unwrap();
    });
    row("full backup, pgcmk", bytes, wall, format!("{cpu:.1} s"));
    let (wall, cpu) = measure(me, || {
        as_postgres(
            "pgbackrest",
            &[&plain.config(), "--stanza=plain", "--type=full", "backup"],
        );
    });
    row(
        "full backup, plain pgBackRest",
        bytes,
        wall,
        format!("{cpu:.1} s"),
    );

    // The restores run in processes nobody waits for yet (the new server's agent,
    // PostgreSQL): their CPU is the machine's, other work included.
    let machine = machine_cpu();
    let t = Instant::now();
    stack.cp.server(&[
        "restore",
        "--source",
        "bench",
        "--name",
        "bench-copy",
        "--point-in-time",
        "latest",
    ]);
    let (wall, cpu) = (t.elapsed().as_secs_f64(), machine_cpu() - machine);
    row(
        "full restore to Ready (new server), pgcmk",
        bytes,
        wall,
        format!("{cpu:.1} s (machine)"),
    );
    stack.cp.server(&["delete", "bench-copy", "--yes"]);
    let restored = plain.root.join("restored");
    fs::create_dir_all(&restored).unwrap();
    chown_postgres(&restored);
    let port = free_port();
    let machine = machine_cpu();
    let t = Instant::now();
    let target = format!("--pg1-path={}", restored.display());
    as_postgres(
        "pgbackrest",
        &[
            &plain.config(),
            "--stanza=plain",
            &target,
            "--type=default",
            "restore",
        ],
    );
    plain.start(&restored, port, false);
    let (wall, cpu) = (t.elapsed().as_secs_f64(), machine_cpu() - machine);
    row(
        "full restore to accepting connections, plain pgBackRest",
        bytes,
        wall,
        format!("{cpu:.1} s (machine)"),
    );
    plain.stop(&restored);

    eprintln!("archive lag: pgbench -c4 -j2 -T {}", args.pgbench_secs);
    let secs = args.pgbench_secs.to_string();
    let (port, password) = (s.port, s.password.clone());
    let load =
        std::thread::spawn(move || pgbench(port, &password, &["-c", "4", "-j", "2", "-T", &secs]));
    let mut lags = Vec::new();
    while !load.is_finished() {
        let sample = s.sql("SELECT pg_walfile_name(pg_current_wal_lsn()) || ' ' || coalesce(last_archived_wal, '') FROM pg_stat_archiver");
        if let Ok(line) = sample {
            if let Some((current, archived)) = line.split_once(' ') {
                if archived.len() == 24 {
                    lags.push(segment_number(current) - segment_number(archived));
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let report = load.join().unwrap();
    let tps = report
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or("tps = ?")
        .to_string();
    lags.sort_unstable();
    println!(
        "\nWAL archive lag under pgbench -c4 -j2 for {} s ({tps}): segments between the current one and the \
         last archived, over {} one-second samples: median {}, max {} (1 = only the segment being written)",
        args.pgbench_secs,
        lags.len(),
        lags.get(lags.len() / 2).copied().unwrap_or(0),
        lags.last().copied().unwrap_or(0)
    );

    tpcb_with_and_without_archiving(&plain, args.tpcb_secs);

    let at = s.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')").unwrap();
    archive_marker(&s, "after-the-target");
    let t = Instant::now();
    stack.cp.server(&[
        "restore",
        "--source",
        "bench",
        "--name",
        "bench-pitr",
        "--point-in-time",
        &at,
    ]);
    println!(
        "point-in-time restore to Ready (new server), pgcmk: {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
