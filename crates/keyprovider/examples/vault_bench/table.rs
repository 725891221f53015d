//! The benchmark's table: each cell's median over the rounds, beside the bare RSA rate,
//! and the targets of issue 14 (CPU per unwrap, throughput against the ceiling the
//! load generator leaves, p99 against Little's law).

use crate::bare_rsa::BareRsa;
use crate::{Op, Settings};

/// One table cell's measurements.
#[derive(Clone, Copy)]
pub struct Cell {
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
    /// Requests the CPU columns are divided by: the timed ones plus one warm-up per client.
    pub requests: usize,
    /// CPU the vault process spent per completed operation.
    pub vault_cpu_ms: f64,
    /// CPU this load generator spent per completed operation.
    pub client_cpu_ms: f64,
}

/// One row of the table: the median of a cell's rounds and of the bare rate's.
pub struct Row {
    pub op: Op,
    pub size: u32,
    pub clients: usize,
    pub cell: Cell,
    pub bare: BareRsa,
    /// p99 over the mean latency of a FIFO queue of bare decryptions with as many
    /// closed-loop clients as the row with the most (see `BareKey::fifo_tail`).
    pub fifo_tail: f64,
}

impl Row {
    /// Little's law: with `clients` requests always in flight the mean latency is
    /// clients / throughput; no queue discipline makes the p99 lower than that mean.
    fn little_ms(&self) -> f64 {
        1000.0 * self.clients as f64 / self.cell.ops_per_sec
    }

    /// The most a server could do with the bare decryption rate on the cores the load
    /// generator leaves it (its CPU per operation times the throughput, over the cores).
    fn ceiling(&self, cores: usize) -> f64 {
        let client_cores = self.cell.client_cpu_ms * self.cell.ops_per_sec / 1000.0;
        self.bare.rate * (1.0 - client_cores / cores as f64).max(0.0)
    }

    /// Vault CPU per operation over the bare decryption's.
    fn cpu_ratio(&self) -> f64 {
        self.cell.vault_cpu_ms / self.bare.cpu_ms
    }

    fn private_key_op(&self) -> bool {
        matches!(self.op, Op::Unwrap | Op::Sign)
    }
}

/// The median of `values` (NaN for none).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Each column's median over the rounds (so a median row need not be one round).
pub fn median_cell(rounds: &[Cell]) -> Cell {
    let of = |f: fn(&Cell) -> f64| median(rounds.iter().map(f).collect());
    Cell {
        ops_per_sec: of(|c| c.ops_per_sec),
        p50_ms: of(|c| c.p50_ms),
        p99_ms: of(|c| c.p99_ms),
        errors: rounds.iter().map(|c| c.errors).sum(),
        requests: rounds.iter().map(|c| c.requests).sum(),
        vault_cpu_ms: of(|c| c.vault_cpu_ms),
        client_cpu_ms: of(|c| c.client_cpu_ms),
    }
}

pub fn median_bare(rounds: &[BareRsa]) -> BareRsa {
    BareRsa {
        rate: median(rounds.iter().map(|b| b.rate).collect()),
        cpu_ms: median(rounds.iter().map(|b| b.cpu_ms).collect()),
    }
}

/// The table, its legend and the targets.
pub fn print(rows: &[Row], settings: &Settings, cores: usize, load_before: &str) {
    let seconds = settings.seconds;
    println!(
        "\nKey vault over HTTPS (loopback; load generator on the same {cores} cores), {seconds} s per cell, median of {} rounds",
        settings.rounds
    );
    println!("bare = RSA-OAEP-256 decrypt with aws-lc-rs (the vault's library) on {cores} threads, no HTTP, measured at the start of every round");
    println!("ceiling = bare rate x (1 - the load generator's share of the {cores} cores); Little = clients / throughput (the mean latency)");
    println!("FIFO tail = p99 / mean latency of bare decrypts queued FIFO to {cores} threads by the most clients, in this process: the tail the machine's scheduling alone gives");
    println!(
        "load average before/after: {load_before} / {}\n",
        crate::cpu::load_average()
    );
    println!("| op | RSA | clients | ops/s | p50 ms | p99 ms | Little ms | errors | vault CPU ms/op | client CPU ms/op | bare decrypt/s | bare CPU ms/op | vault CPU / bare | ceiling ops/s | ops / ceiling |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let cell = &row.cell;
        let (ratio, ceiling, share) = if row.private_key_op() {
            let ceiling = row.ceiling(cores);
            (
                format!("{:.2}", row.cpu_ratio()),
                format!("{ceiling:.0}"),
                format!("{:.0} %", 100.0 * cell.ops_per_sec / ceiling),
            )
        } else {
            ("(public-key op)".into(), "".into(), "".into())
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.3} | {:.3} | {:.0} | {:.3} | {ratio} | {ceiling} | {share} |",
            row.op.name(),
            row.size,
            row.clients,
            cell.ops_per_sec,
            cell.p50_ms,
            cell.p99_ms,
            row.little_ms(),
            cell.errors,
            cell.vault_cpu_ms,
            cell.client_cpu_ms,
            row.bare.rate,
            row.bare.cpu_ms,
        );
    }
    check_targets(rows, cores);
}

/// The issue-14 targets, on the unwrap rows with the most clients.
fn check_targets(rows: &[Row], cores: usize) {
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    let most = rows.iter().map(|r| r.clients).max().unwrap_or(0);
    println!("\nTargets:");
    for row in rows
        .iter()
        .filter(|r| r.op == Op::Unwrap && r.clients == most)
    {
        let (size, ratio) = (row.size, row.cpu_ratio());
        println!(
            "- RSA-{size} unwrap: vault CPU per op = {ratio:.2} x the bare decrypt's (target <= 1.2): {}",
            verdict(ratio <= 1.2)
        );
        let (little, p99) = (row.little_ms(), row.cell.p99_ms);
        println!(
            "- RSA-{size} unwrap p99 at {most} clients = {p99:.2} ms = {:.2} x Little's {little:.2} ms (target <= 1.5 x): {}; a FIFO queue of bare decrypts with {most} clients, same machine and rounds: p99 = {:.2} x its mean",
            p99 / little,
            verdict(p99 <= 1.5 * little),
            row.fifo_tail
        );
        if size == 2048 {
            let (ops, ceiling) = (row.cell.ops_per_sec, row.ceiling(cores));
            println!(
                "- RSA-2048 unwrap at {most} clients = {ops:.0}/s = {:.0} % of the ceiling {ceiling:.0}/s (bare {:.0}/s less the load generator's share; target >= 80 %): {}",
                100.0 * ops / ceiling,
                row.bare.rate,
                verdict(ops >= 0.8 * ceiling)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ops_per_sec: f64, client_cpu_ms: f64) -> Row {
        let cell = Cell {
            ops_per_sec,
            p50_ms: 0.0,
            p99_ms: 0.0,
            errors: 0,
            requests: 0,
            vault_cpu_ms: 0.6,
            client_cpu_ms,
        };
        Row {
            op: Op::Unwrap,
            size: 2048,
            clients: 64,
            cell,
            bare: BareRsa {
                rate: 1000.0,
                cpu_ms: 0.5,
            },
            fifo_tail: 1.0,
        }
    }

    #[test]
    fn ceiling_little_and_cpu_ratio_follow_their_definitions() {
        // 2,000 ops/s at 0.1 ms of client CPU each: 0.2 of 2 cores are the client's.
        assert!((row(2000.0, 0.1).ceiling(2) - 900.0).abs() < 1e-9);
        assert!((row(500.0, 0.0).ceiling(2) - 1000.0).abs() < 1e-9);
        assert_eq!(row(100_000.0, 1.0).ceiling(2), 0.0);
        assert!((row(2000.0, 0.1).little_ms() - 32.0).abs() < 1e-9);
        assert!((row(2000.0, 0.1).cpu_ratio() - 1.2).abs() < 1e-9);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
