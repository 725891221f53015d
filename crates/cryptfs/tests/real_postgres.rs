//! PostgreSQL 15 on a real cryptfs mount: initdb, a workload, clean restart, remount,
//! pg_amcheck, pgbench; and a marker that PostgreSQL writes into heap, WAL, spill files
//! and logs never reaching the cipher directory in plaintext.

mod real_support;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use real_support::{contains, files_under, CryptMount, PgCluster, TestDir};

/// A data checksum that covers every row and column the workload touched.
const CHECKSUM: &str = "select count(*) || ':' || sum(qty) || ':' || \
    md5(string_agg(id || name || qty || payload, ',' order by id)) from items";

fn pgdata(mount: &CryptMount) -> std::path::PathBuf {
    mount.plain().join("pgdata")
}

#[test]
fn postgres_workload_restart_remount_amcheck_and_pgbench() {
    let _serial = real_support::serial();
    let dir = TestDir::new();
    let aux = dir.subdir("aux", true);
    let mut mount = CryptMount::new(&dir);
    let mut pg = PgCluster::initdb(&pgdata(&mount), &aux);
    pg.start();

    pg.psql(
        "create extension amcheck;
         create table items(id int primary key, name text, qty int, payload text);
         insert into items select g, 'item-' || g, g % 97, repeat(md5(g::text), 1 + g % 40)
           from generate_series(1, 30000) g;
         create index items_name on items(name);
         update items set qty = qty + 1000, name = name || '-u' where id % 3 = 0;
         delete from items where id % 10 = 0;
         vacuum (analyze) items;
         update items set payload = upper(payload) where id % 7 = 0;",
    );
    let before = pg.psql(CHECKSUM);
    assert!(
        before.starts_with("27000:"),
        "unexpected row count: {before}"
    );

    pg.stop();
    pg.start();
    assert_eq!(
        pg.psql(CHECKSUM),
        before,
        "data changed across a clean restart"
    );

    // pg_amcheck: heap and every btree (with heapallindexed), catalogs included; silent and
    // exit 0 when clean.
    let out = pg
        .client("pg_amcheck")
        .args(["--heapallindexed", "--install-missing", "postgres"])
        .output();
    let out = out.expect("run pg_amcheck");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "pg_amcheck found problems: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    real_support::run(pg.client("pgbench").args(["-i", "-q", "-s", "1"]));
    let bench = real_support::run(
        pg.client("pgbench")
            .args(["-c", "2", "-j", "2", "-t", "300"]),
    );
    assert!(
        bench.contains("number of transactions actually processed: 600/600"),
        "{bench}"
    );
    assert!(
        bench.contains("number of failed transactions: 0 (0.000%)"),
        "{bench}"
    );
    // TPC-B keeps this invariant: every balance change is also a history row.
    let balance = "select (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history) \
                   and (select count(*) from pgbench_history) = 600";
    assert_eq!(pg.psql(balance), "t");

    // Unmount and mount again: nothing may come from the kernel's or the daemon's caches.
    pg.stop();
    mount.remount();
    pg.start();
    assert_eq!(
        pg.psql(CHECKSUM),
        before,
        "data changed across unmount/mount"
    );
    assert_eq!(
        pg.psql(balance),
        "t",
        "pgbench data changed across unmount/mount"
    );
    pg.stop();

    mount.unmount();
    let report = pgcmk_cryptfs::fsck(mount.cipher(), mount.key()).expect("fsck");
    assert!(
        report.is_clean(),
        "fsck after a clean run: {:?}",
        report.bad_blocks
    );
    assert!(
        report.files_checked > 900,
        "fsck checked only {} files",
        report.files_checked
    );
}

/// fsyncs every file under the mount so the cipher directory holds everything written so far.
fn flush_mount(root: &Path) {
    for path in files_under(root) {
        File::open(&path)
            .and_then(|f| f.sync_all())
            .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
    }
}

fn files_containing(root: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    files_under(root)
        .into_iter()
        .filter(|p| contains(&fs::read(p).unwrap_or_default(), needle))
        .collect()
}

/// The cipher directory must be free of `marker`, and must hold more bytes than the plaintext
/// view (`plain_bytes`), so the scan is not vacuous because data never reached it.
fn assert_cipher_clean(mount: &CryptMount, marker: &[u8], plain_bytes: u64) {
    let cipher_files = files_under(mount.cipher());
    let mut cipher_bytes = 0u64;
    for path in &cipher_files {
        let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        cipher_bytes += bytes.len() as u64;
        assert!(
            !contains(&bytes, marker),
            "plaintext marker found in cipher file {}",
            path.display()
        );
    }
    assert!(
        cipher_bytes > plain_bytes,
        "cipher directory holds {cipher_bytes} bytes, plaintext {plain_bytes}"
    );
}

#[test]
fn marker_written_by_postgres_never_reaches_the_cipher_directory() {
    let _serial = real_support::serial();
    let marker = format!(
        "pgcmk-marker-{}",
        pgcmk_crypto::random::array::<8>()
            .expect("rng")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let needle = marker.as_bytes();
    let dir = TestDir::new();
    let aux = dir.subdir("aux", true);
    let mut mount = CryptMount::new(&dir);

    // A plain write, with the marker straddling the first block boundary and deep in the file.
    let mut text = vec![b'.'; 3 * 4096];
    text[4090..4090 + needle.len()].copy_from_slice(needle);
    text[9000..9000 + needle.len()].copy_from_slice(needle);
    fs::write(mount.plain().join("plain-marker.txt"), &text).expect("write marker file");

    let mut pg = PgCluster::initdb(&pgdata(&mount), &aux);
    pg.configure(&[
        ("work_mem", "64kB"),
        ("log_temp_files", "0"),
        ("logging_collector", "on"),
        ("log_directory", "log"),
        ("log_statement", "all"),
    ]);
    pg.start();
    pg.psql(&format!(
        "create table notes(id int, note text);
         insert into notes select g, '{marker}' || g from generate_series(1, 50000) g;
         checkpoint;"
    ));
    let temp_files =
        || pg.psql("select temp_files from pg_stat_database where datname = 'postgres'");
    let temp_before: i64 = temp_files().parse().expect("temp_files");

    // A sort far larger than work_mem spills to base/pgsql_tmp.
    let sorted = pg.psql(&format!(
        "select count(*) from (select note from notes where note like '{marker}%' order by note desc offset 0) s"
    ));
    assert_eq!(sorted, "50000");
    assert!(
        real_support::wait_until(Duration::from_secs(10), || temp_files()
            .parse::<i64>()
            .unwrap()
            > temp_before),
        "the sort did not spill to a temporary file (pg_stat_database.temp_files unchanged)"
    );

    // A WITH HOLD cursor keeps its spilled tuplestore in pgsql_tmp while the session lives:
    // catch that temp file on disk, readable through the mount, ciphertext underneath.
    let mut session = pg
        .client("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start psql session");
    let mut stdin = session.stdin.take().expect("psql stdin");
    writeln!(
        stdin,
        "set work_mem = '64kB'; begin; declare held cursor with hold for \
         select note from notes order by note; commit; \\echo held-ready"
    )
    .expect("send to psql");
    let mut stdout = BufReader::new(session.stdout.take().expect("psql stdout"));
    let mut line = String::new();
    while line.trim() != "held-ready" {
        line.clear();
        assert!(
            stdout.read_line(&mut line).expect("read psql") > 0,
            "psql session ended early"
        );
    }
    let tmp_dir = pgdata(&mount).join("base/pgsql_tmp");
    let spilled = files_containing(&tmp_dir, needle);
    assert!(
        !spilled.is_empty(),
        "no pgsql_tmp file holds the held cursor's rows"
    );
    flush_mount(&tmp_dir);
    for path in &spilled {
        let relative = path.strip_prefix(mount.plain()).expect("under mount");
        let cipher = fs::read(mount.cipher().join(relative)).expect("cipher twin of the temp file");
        let plain_len = fs::metadata(path).expect("stat").len();
        assert!(
            cipher.len() as u64 > plain_len,
            "temp file not (fully) in the cipher directory yet"
        );
        assert!(
            !contains(&cipher, needle),
            "marker in plaintext in cipher temp file {}",
            relative.display()
        );
    }
    drop(stdin);
    assert!(session.wait().expect("psql exit").success());

    pg.stop();
    flush_mount(mount.plain());

    // Through the mount the marker is everywhere PostgreSQL put it ...
    let plain_hits = files_containing(mount.plain(), needle);
    for place in [
        "plain-marker.txt",
        "pgdata/base/",
        "pgdata/pg_wal/",
        "pgdata/log/",
    ] {
        assert!(
            plain_hits
                .iter()
                .any(|p| p.strip_prefix(mount.plain()).unwrap().starts_with(place)),
            "marker not readable through the mount under {place}: {plain_hits:?}"
        );
    }
    let log_text: String = files_under(&pgdata(&mount).join("log"))
        .iter()
        .map(|p| fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(
        log_text.contains("temporary file"),
        "no log file inside the data directory records the temporary file"
    );

    // ... and in no byte of the cipher directory, mounted or not.
    let plain_bytes = files_under(mount.plain())
        .iter()
        .map(|p| fs::metadata(p).expect("stat").len())
        .sum();
    assert_cipher_clean(&mount, needle, plain_bytes);
    mount.unmount();
    assert_cipher_clean(&mount, needle, plain_bytes);
}
