//! The WAL archive's lag behind `pg_current_wal_lsn()`, sampled while pgbench runs.
//!
//! Three views of the same samples, because "segments behind" alone hides what
//! bounds it: a segment can be archived only once it is complete, so right after
//! each segment switch there is a completed segment waiting for the archiver, for as
//! long as `archive-push` takes (pgBackRest's foreground `archive-push` polls for
//! its asynchronous pusher's answer after 100, 200, 400, 700 ms ...).
//! - segments: the segment being written minus the last archived (1 = only the one
//!   being written is not in the archive);
//! - bytes: `pg_current_wal_lsn()` minus the end of the last archived segment, in
//!   segments (below 1.0: nothing complete is waiting);
//! - wait: per segment, from the first sample after its completion to the first
//!   sample showing it archived (the sampling period is the resolution).

use std::time::{Duration, Instant};

use super::support::backups::lsn;
use super::support::Created;

/// pgcmk's (and PostgreSQL's default) WAL segment size.
const SEGMENT_BYTES: u64 = 16 << 20;

/// One sample: when, the current WAL position, and the last archived segment.
struct Sample {
    at: Duration,
    current: u64,
    archived: u64,
}

/// The samples taken every `period` while `running` says so.
pub struct Lag {
    samples: Vec<Sample>,
    period: Duration,
}

impl Lag {
    pub fn sample(s: &Created, period: Duration, running: impl Fn() -> bool) -> Self {
        let t0 = Instant::now();
        let mut samples = Vec::new();
        while running() {
            let next = Instant::now() + period;
            let row = s.sql(
                "SELECT pg_current_wal_lsn() || ' ' || coalesce(last_archived_wal, '') \
                 FROM pg_stat_archiver",
            );
            if let Ok(line) = row {
                if let Some((current, archived)) = line.split_once(' ') {
                    if archived.len() == 24 {
                        samples.push(Sample {
                            at: t0.elapsed(),
                            current: lsn(current),
                            archived: segment_number(archived),
                        });
                    }
                }
            }
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Self { samples, period }
    }

    /// Segments between the one being written and the last archived, per sample.
    fn segments(&self) -> Vec<u64> {
        self.samples
            .iter()
            .map(|s| s.current / SEGMENT_BYTES - s.archived)
            .collect()
    }

    /// Bytes of WAL after the end of the last archived segment, in segments.
    fn bytes_behind(&self) -> Vec<f64> {
        self.samples
            .iter()
            .map(|s| {
                let end = (s.archived + 1) * SEGMENT_BYTES;
                s.current.saturating_sub(end) as f64 / SEGMENT_BYTES as f64
            })
            .collect()
    }

    /// Per completed segment: the time between the first sample after its
    /// completion and the first showing it archived.
    fn waits(&self) -> Vec<Duration> {
        let mut waits = Vec::new();
        let Some(first) = self.samples.first() else {
            return waits;
        };
        let mut segment = first.archived + 1;
        let mut completed_at = None;
        for s in &self.samples {
            while segment <= s.archived {
                if let Some(at) = completed_at.take() {
                    waits.push(s.at - at);
                }
                segment += 1;
            }
            if completed_at.is_none() && s.current / SEGMENT_BYTES > segment {
                completed_at = Some(s.at);
            }
        }
        waits
    }

    /// The three views as report lines.
    pub fn report(&self) -> String {
        let mut segments = self.segments();
        segments.sort_unstable();
        let mut bytes = self.bytes_behind();
        bytes.sort_by(f64::total_cmp);
        let mut waits = self.waits();
        waits.sort_unstable();
        let waiting = segments.iter().filter(|&&n| n > 1).count();
        let ms = |d: Option<&Duration>| d.map_or(0, Duration::as_millis);
        format!(
            "{n} samples every {period} ms: segments behind median {seg_med}, max {seg_max} \
             ({waiting} samples, {pct:.1} %, saw a completed segment waiting); bytes behind the \
             end of the last archived segment: median {b_med:.2}, p99 {b_p99:.2}, max {b_max:.2} \
             segments; a completed segment waited for the archive median {w_med} ms, max {w_max} ms \
             over {segs} segments",
            n = self.samples.len(),
            period = self.period.as_millis(),
            seg_med = segments.get(segments.len() / 2).copied().unwrap_or(0),
            seg_max = segments.last().copied().unwrap_or(0),
            pct = 100.0 * waiting as f64 / segments.len().max(1) as f64,
            b_med = bytes.get(bytes.len() / 2).copied().unwrap_or(0.0),
            b_p99 = bytes.get(bytes.len() * 99 / 100).copied().unwrap_or(0.0),
            b_max = bytes.last().copied().unwrap_or(0.0),
            w_med = ms(waits.get(waits.len() / 2)),
            w_max = ms(waits.last()),
            segs = waits.len(),
        )
    }
}

/// The segment number of WAL file `name` (16 MB segments).
fn segment_number(name: &str) -> u64 {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    log * 0x100 + seg
}
