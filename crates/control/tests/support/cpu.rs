//! CPU time the whole machine spent, for benchmarks whose work runs in processes
//! nobody waits for (agents, PostgreSQL, pgBackRest): their CPU is the machine's,
//! other work included, so a benchmark reports it beside the load average.

/// CPU seconds (user + nice + system) the whole machine spent so far.
pub fn machine_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|v| v.parse().unwrap())
        .collect();
    fields.iter().sum::<f64>() / 100.0
}
