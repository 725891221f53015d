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
//! one: a pgcmk server always archives), in alternating rounds.
//!
//! The machine is shared: backups and TPC-B runs alternate their order from round to
//! round, and each row says the load average when it ran.
//!
//! Options: --scale N (140: about 2.1 GB), --rounds R (2: backups of each side),
//! --pgbench-secs S (300), --tpcb-secs S (60, each TPC-B run), --tpcb-rounds R (3
//! pairs).

#[path = "../../tests/support/mod.rs"]
mod support;

mod archive_lag;
mod plain;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use archive_lag::Lag;
use plain::{as_postgres, chown_postgres, Plain};
use support::backups::*;
use support::cpu::machine_cpu;
use support::*;

const BIN: &str = "/usr/lib/postgresql/15/bin";

struct Args {
    scale: u32,
    rounds: u32,
    pgbench_secs: u32,
    tpcb_secs: u32,
    tpcb_rounds: u32,
}

fn parse_args() -> Args {
    let mut args = Args {
        scale: 140,
        rounds: 2,
        pgbench_secs: 300,
        tpcb_secs: 60,
        tpcb_rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--scale" => args.scale = value.parse().expect("--scale N"),
            "--pgbench-secs" => args.pgbench_secs = value.parse().expect("--pgbench-secs S"),
            "--rounds" => args.rounds = value.parse().expect("--rounds R"),
            "--tpcb-secs" => args.tpcb_secs = value.parse().expect("--tpcb-secs S"),
            "--tpcb-rounds" => args.tpcb_rounds = value.parse().expect("--tpcb-rounds R"),
            other => panic!(
                "unknown option {other}: use --scale N --rounds R --pgbench-secs S \
                 --tpcb-secs S --tpcb-rounds R"
            ),
        }
    }
    args
}

/// CPU seconds (user + system) of process `pid` itself, or of the children it
/// waited for.
fn cpu_seconds(pid: u32, children: bool) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis: utime and stime are the 14th
    // and 15th of the whole line, cutime and cstime the 16th and 17th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let i = if children { 13 } else { 11 };
    (f[i].parse::<f64>().unwrap() + f[i + 1].parse::<f64>().unwrap()) / 100.0
}

/// CPU seconds of the waited-for children of process `pid`.
fn children_cpu(pid: u32) -> f64 {
    cpu_seconds(pid, true)
}

/// Wall seconds and children CPU seconds of `work`, the children counted being
/// those `pid` waits for.
fn measure(pid: u32, work: impl FnOnce()) -> (f64, f64) {
    let cpu = children_cpu(pid);
    let t = Instant::now();
    work();
    (t.elapsed().as_secs_f64(), children_cpu(pid) - cpu)
}

/// The client options that reach database `postgres` as `postgres` on `port`.
fn on_port(port: u64) -> [String; 7] {
    [
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "postgres",
    ]
    .map(String::from)
}

fn pgbench(port: u64, password: &str, args: &[&str]) -> String {
    let out = Command::new(format!("{BIN}/pgbench"))
        .args(args)
        .args(on_port(port))
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

fn row(what: &str, bytes: u64, wall: f64, cpu: String) {
    println!(
        "| {what} | {wall:.1} s | {:.1} MB/s | {cpu} | {} |",
        bytes as f64 / 1e6 / wall,
        load_average()
    );
}

/// The machine's one-minute load average.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// CPU seconds process `pid` itself spent so far.
fn own_cpu(pid: u32) -> f64 {
    cpu_seconds(pid, false)
}

/// The pid of the serving agent of the server in `dir` (`pgcmk agent --server-dir
/// DIR --instance NAME`): its cryptfs threads serve every read of a backup.
fn serving_agent(dir: &std::path::Path) -> u32 {
    let dir = dir.as_os_str().as_encoded_bytes();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .find_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            (args.contains(&dir) && args.contains(&b"--instance".as_slice())).then_some(pid)
        })
        .expect("the server's agent is running")
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
/// asynchronous archiving on and off, `rounds` pairs, the order alternating (a
/// restart and a checkpoint before each run), so that neither side always runs on
/// the warmer cache or the quieter minute.
fn tpcb_with_and_without_archiving(plain: &Plain, secs: u32, rounds: u32) {
    let port = u64::from(plain.port);
    let secs = secs.to_string();
    let run = |archive: bool| {
        plain.stop(&plain.data());
        plain.start(&plain.data(), plain.port, archive);
        let mut checkpoint = on_port(port).to_vec();
        checkpoint.extend(["-c".into(), "CHECKPOINT".into()]);
        let checkpoint: Vec<&str> = checkpoint.iter().map(String::as_str).collect();
        as_postgres(&format!("{BIN}/psql"), &checkpoint);
        let load = load_average();
        let tps = tps_of(&pgbench(port, "", &["-c", "4", "-j", "2", "-T", &secs]));
        println!(
            "| {} | {tps:.0} | {load} |",
            if archive { "with archiving" } else { "without" }
        );
        tps
    };
    eprintln!("TPC-B with and without archiving, {rounds} pairs of {secs} s");
    println!("\npgbench TPC-B -c4 -j2, {secs} s per run, on the plain cluster:\n");
    println!("| run | tps | load |");
    println!("|---|---|---|");
    let (mut with, mut without) = (0.0, 0.0);
    for round in 0..rounds {
        for archive in [round % 2 == 0, round % 2 != 0] {
            let tps = run(archive);
            if archive {
                with += tps;
            } else {
                without += tps;
            }
        }
    }
    println!(
        "\nover {rounds} pairs: {:.0} tps with pgBackRest's asynchronous archiving, {:.0} \
         tps without: {:.1} %",
        with / f64::from(rounds),
        without / f64::from(rounds),
        100.0 * with / without
    );
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
    let agent = serving_agent(&s.dir);
    println!(
        "database: {:.2} GB (pgbench scale {})\n",
        bytes as f64 / 1e9,
        args.scale
    );
    println!("| operation | wall | throughput | CPU | load |");
    println!("|---|---|---|---|---|");

    let pgcmk_backup = || {
        let before = own_cpu(agent);
        let mut backup = serde_json::Value::Null;
        let (wall, cpu) = measure(plane, || {
            backup = stack
                .cp
                .try_backup(&["create", "bench", "--type", "full"])
                .unwrap();
        });
        let gb = bytes as f64 / 1e9;
        row(
            &format!(
                "full backup, pgcmk (pgBackRest's own start to stop: {} s)",
                backup["duration_secs"]
            ),
            bytes,
            wall,
            format!(
                "{cpu:.1} s ({:.1} s/GB) + serving agent (cryptfs) {:.1} s/GB",
                cpu / gb,
                (own_cpu(agent) - before) / gb
            ),
        );
    };
    let plain_backup = || {
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
            format!("{cpu:.1} s ({:.1} s/GB)", cpu / (bytes as f64 / 1e9)),
        );
    };
    for round in 0..args.rounds {
        if round % 2 == 0 {
            pgcmk_backup();
            plain_backup();
        } else {
            plain_backup();
            pgcmk_backup();
        }
    }

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
    let lag = Lag::sample(&s, Duration::from_millis(200), || !load.is_finished());
    let report = load.join().unwrap();
    let tps = report
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or("tps = ?")
        .to_string();
    println!(
        "\nWAL archive lag under pgbench -c4 -j2 for {} s ({tps}, load {}): {}",
        args.pgbench_secs,
        load_average(),
        lag.report()
    );

    tpcb_with_and_without_archiving(&plain, args.tpcb_secs, args.tpcb_rounds);

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
