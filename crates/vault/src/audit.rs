//! The audit trail: every request, allowed or denied, appended to an HMAC chain.
//!
//! Entry `n` stores `mac_n = HMAC(audit_key, n ‖ mac_{n-1} ‖ entry_json)`, and the
//! chain head (last sequence number and mac) is kept in the same transaction, so an
//! edited, deleted, inserted, reordered or truncated entry breaks verification. The
//! key is derived from the root key: whoever can write the database file but lacks
//! the root key cannot forge a consistent chain.
//!
//! Appends are group-committed by one writer thread: a request waits until its
//! entry is durable, and many concurrent requests share one fsync. While other
//! requests are still on their way to the trail, the writer paces its commits
//! (see [`commit_pace`]), so that under load each commit carries many entries; with
//! few requests in flight an entry is committed at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgcmk_crypto::mac::MacKey;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use crate::audit_filter::{parse_time, AuditFilter};
use crate::storage::{Store, WriteTx, AUDIT, META, PENDING_AUDIT};
use crate::{Error, StorageError};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited request.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    /// When the request finished (RFC 3339, UTC).
    pub time: String,
    /// Vault name ("" for service-wide operations).
    pub vault: String,
    /// Operation, Azure style: `KeyCreate`, `KeyUnwrap`, `SetPolicy`, …
    pub operation: String,
    /// Key name, when the request names one.
    pub key: Option<String>,
    /// Key version, when known.
    pub version: Option<String>,
    /// Caller's object id, or `anonymous`.
    pub caller: String,
    /// Caller's name, when known.
    pub caller_name: Option<String>,
    /// Client address.
    pub client: String,
    /// HTTP status returned.
    pub status: u16,
    /// `allowed` or `denied` (401/403).
    pub result: String,
    /// A 401 to a request that carried no bearer token: the challenge every Azure SDK
    /// meets first, by design, before it fetches a token; not a refusal of anyone.
    /// Written only when true, so entries from before it existed keep their mac.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub challenge: bool,
    /// Time spent, in microseconds.
    pub duration_us: u64,
    /// The request id returned in `x-ms-request-id`.
    pub request_id: String,
    /// Appended at a start from the copy committed with its state change: the vault
    /// stopped after the change and before this entry reached the chain.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    /// The identity an administrative change was about (`IdentityCreate`,
    /// `IdentityDelete`, `SetPolicy`, `DeletePolicy`): `NAME (OBJECT_ID)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The key permissions a `SetPolicy` granted (replacing the identity's previous ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// On an anonymous request's entry: how many anonymous requests before it were
    /// left out, over the budget of [`crate::anonymous_budget`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_left_out: Option<u64>,
}

impl AuditEntry {
    /// `denied` for 401/403, else `allowed`.
    pub fn result_for(status: u16) -> &'static str {
        if status == 401 || status == 403 {
            "denied"
        } else {
            "allowed"
        }
    }
}

/// An entry as stored, with its place in the chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredEntry {
    /// Sequence number (1, 2, …).
    pub seq: u64,
    /// The previous entry's mac.
    pub prev: String,
    /// This entry's mac.
    pub mac: String,
    /// The entry.
    pub entry: AuditEntry,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Head {
    seq: u64,
    mac: String,
}

fn chain_mac(key: &MacKey, seq: u64, prev: &str, entry: &AuditEntry) -> String {
    let entry = serde_json::to_vec(entry).unwrap_or_default();
    hex::encode(key.sign_parts(&[&seq.to_be_bytes(), prev.as_bytes(), &entry]))
}

/// Time allowed between commits per announced entry still on its way beyond
/// [`UNPACED_COMING`]: about what one RSA-2048 private-key operation adds to a queue
/// served by two cores.
const PACE_PER_COMING: Duration = Duration::from_micros(250);

/// Entries on their way that never delay a commit. With few requests in flight,
/// holding finished ones back would leave the crypto workers idle (at 8 clients a
/// pace cost ~40 % of RSA-2048 unwrap throughput); with many, the rest keep them busy.
const UNPACED_COMING: usize = 16;

/// Longest time between commits while entries are on their way.
const MAX_PACE: Duration = Duration::from_millis(8);

/// Shortest time between two commits while `coming` entries are on their way.
/// Each commit costs an fsync and about ten page writes (~0.4 ms of CPU here), so
/// with many requests in flight waiting for more of them lets one commit carry many
/// entries, while the requests still queued keep the CPU busy. With few coming an
/// entry is committed at once.
pub fn commit_pace(coming: usize) -> Duration {
    let paced = coming.saturating_sub(UNPACED_COMING);
    PACE_PER_COMING
        .saturating_mul(u32::try_from(paced).unwrap_or(u32::MAX))
        .min(MAX_PACE)
}

/// Longest nap of the writer while it paces a commit: it looks again this often
/// whether the requests it waits for are still on their way.
const MAX_NAP: Duration = Duration::from_millis(2);

/// Most entries in one commit.
const MAX_BATCH: usize = 512;

/// A request in progress that will append an entry (see [`AuditLog::entry_coming`]).
/// The writer stops counting it once the entry reaches it, or when this is dropped.
pub struct EntryComing(Arc<AtomicUsize>);

impl Drop for EntryComing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Told when a job's entry is durable, or why not (shared by the whole batch).
type Done = oneshot::Sender<Result<(), Arc<Error>>>;

struct Job {
    entry: AuditEntry,
    done: Done,
    coming: Option<EntryComing>,
}

/// Commits, in the transaction `tx` of a state change, the entry `intent` of the
/// request making it (with the `version` it creates or changes), so that the change
/// never exists without its entry: the writer deletes this copy when it appends the
/// entry to the chain, and a start appends any copy left by a crash in between.
pub fn commit_with_change(
    tx: &WriteTx<'_>,
    intent: &AuditEntry,
    version: Option<&str>,
) -> Result<(), Error> {
    let mut pending = intent.clone();
    if let Some(v) = version {
        pending.version = Some(v.to_string());
    }
    pending.time = crate::now_rfc3339();
    pending.status = 200;
    pending.result = AuditEntry::result_for(200).into();
    tx.put(PENDING_AUDIT, &pending.request_id, &pending)
}

/// Appends `entry` after `head` in the open table, and moves `head` to it.
fn append(
    key: &MacKey,
    table: &mut redb::Table<'_, u64, &'static [u8]>,
    head: &mut Head,
    entry: &AuditEntry,
) -> Result<(), Error> {
    let seq = head.seq + 1;
    let mac = chain_mac(key, seq, &head.mac, entry);
    let stored = StoredEntry {
        seq,
        prev: head.mac.clone(),
        mac: mac.clone(),
        entry: entry.clone(),
    };
    table.insert(seq, serde_json::to_vec(&stored)?.as_slice())?;
    *head = Head { seq, mac };
    Ok(())
}

/// Appends, as `recovered`, the entries committed with a state change whose own
/// append a crash cut off; returns the new head.
fn recover_pending(store: &Store, key: &MacKey, mut head: Head) -> Result<Head, Error> {
    let pending: Vec<(String, AuditEntry)> = store.scan(PENDING_AUDIT, "", None, usize::MAX)?;
    if pending.is_empty() {
        return Ok(head);
    }
    let mut entries: Vec<AuditEntry> = pending.into_iter().map(|(_, e)| e).collect();
    entries.sort_by(|a, b| a.time.cmp(&b.time));
    store.write(|tx| {
        let mut table = tx.raw().open_table(AUDIT)?;
        for mut entry in entries.iter().cloned() {
            entry.recovered = true;
            append(key, &mut table, &mut head, &entry)?;
            tx.delete(PENDING_AUDIT, &entry.request_id)?;
        }
        drop(table);
        tx.put(META, "audit_head", &head)
    })?;
    tracing::warn!(
        "appended {} audit entries of changes committed before the last stop cut off their append",
        entries.len()
    );
    Ok(head)
}

/// Handle to the audit writer.
pub struct AuditLog {
    jobs: mpsc::Sender<Job>,
    store: Arc<Store>,
    key: MacKey,
    coming: Arc<AtomicUsize>,
}

impl AuditLog {
    /// Starts the writer thread.
    pub fn start(store: Arc<Store>, key: MacKey) -> Result<Self, Error> {
        let head = store.get::<Head>(META, "audit_head")?.unwrap_or(Head {
            seq: 0,
            mac: GENESIS.into(),
        });
        let head = recover_pending(&store, &key, head)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let coming = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            store: store.clone(),
            key: key.clone(),
            coming: coming.clone(),
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(head, &rx))
            .map_err(|e| Error::io("starting audit writer", "audit", e))?;
        Ok(Self {
            jobs,
            store,
            key,
            coming,
        })
    }

    /// Announces an entry that a request in progress will append, so that the
    /// writer waits for it (briefly) rather than committing just before it arrives.
    pub fn entry_coming(&self) -> EntryComing {
        self.coming.fetch_add(1, Ordering::AcqRel);
        EntryComing(self.coming.clone())
    }

    /// Appends `entry` (announced by `coming`, if it was) and waits until it is durable.
    pub async fn record(
        &self,
        entry: AuditEntry,
        coming: Option<EntryComing>,
    ) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        self.jobs
            .send(Job {
                entry,
                done,
                coming,
            })
            .map_err(|_| StorageError::AuditWriterStopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageError::AuditWrite(e).into()),
            Err(_) => Err(StorageError::AuditWriterStopped.into()),
        }
    }

    /// Entries matching `filter`, oldest first: the newest `filter.limit` of them.
    pub fn list(&self, filter: &AuditFilter) -> Result<Vec<StoredEntry>, Error> {
        let mut out = std::collections::VecDeque::new();
        let mut next = 1;
        loop {
            let batch = self.store.audit_range(next, 1000)?;
            let Some((last, _)) = batch.last() else { break };
            next = last + 1;
            for (_, bytes) in batch {
                let stored: StoredEntry = serde_json::from_slice(&bytes)?;
                if filter.matches(&stored.entry) {
                    if out.len() == filter.limit {
                        out.pop_front();
                    }
                    out.push_back(stored);
                }
            }
        }
        Ok(out.into())
    }

    /// Entries in the chain (its head's sequence number).
    pub fn chain_length(&self) -> Result<u64, Error> {
        Ok(self
            .store
            .get::<Head>(META, "audit_head")?
            .map_or(0, |h| h.seq))
    }

    /// Checks the whole chain. `Ok(n)` is the number of entries verified.
    pub fn verify(&self) -> Result<Result<u64, ChainBreak>, Error> {
        let head = self.store.get::<Head>(META, "audit_head")?;
        let mut expected = 1u64;
        let mut prev = GENESIS.to_string();
        loop {
            let batch = self.store.audit_range(expected, 1000)?;
            if batch.is_empty() {
                break;
            }
            for (position, bytes) in batch {
                let Ok(stored) = serde_json::from_slice::<StoredEntry>(&bytes) else {
                    return Ok(Err(ChainBreak::new(
                        position,
                        "is not a readable audit entry (edited)",
                    )));
                };
                if position > expected {
                    let msg = format!(
                        "is preceded by a gap: entries {expected}..{} were deleted",
                        position - 1
                    );
                    return Ok(Err(ChainBreak::new(position, &msg)));
                }
                if stored.seq != position {
                    let msg = format!(
                        "claims sequence number {} (entries were reordered or moved)",
                        stored.seq
                    );
                    return Ok(Err(ChainBreak::new(position, &msg)));
                }
                if chain_mac(&self.key, stored.seq, &stored.prev, &stored.entry) != stored.mac {
                    // If the next entry chains to the one before this, this one was slipped in.
                    let next = self.store.audit_range(position + 1, 1)?;
                    let skipped = next
                        .first()
                        .and_then(|(_, b)| serde_json::from_slice::<StoredEntry>(b).ok())
                        .is_some_and(|n| n.prev == prev);
                    let problem = if skipped {
                        "was inserted: the entry after it follows the entry before it"
                    } else {
                        "was edited: its contents do not match its mac"
                    };
                    return Ok(Err(ChainBreak::new(position, problem)));
                }
                if stored.prev != prev {
                    return Ok(Err(ChainBreak::new(
                        position,
                        "does not follow the entry before it (an entry was inserted, deleted or reordered)",
                    )));
                }
                prev = stored.mac;
                expected = position + 1;
            }
        }
        let last = expected - 1;
        match head {
            Some(h) if h.seq > last => Ok(Err(ChainBreak::new(
                last + 1,
                &format!(
                    "is missing: entries {}..{} were deleted from the end",
                    last + 1,
                    h.seq
                ),
            ))),
            Some(h) if h.seq < last || (h.seq == last && h.mac != prev) => {
                Ok(Err(ChainBreak::new(
                    h.seq + 1,
                    "was added outside the service (inserted after the recorded head)",
                )))
            }
            None if last > 0 => Ok(Err(ChainBreak::new(
                1,
                "exists but the chain head is missing (tampered)",
            ))),
            _ => Ok(Ok(last)),
        }
    }
}

/// Where and how the chain is broken.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainBreak {
    /// The first bad entry's sequence number.
    pub entry: u64,
    /// What is wrong with it.
    pub problem: String,
}

impl ChainBreak {
    fn new(entry: u64, problem: &str) -> Self {
        Self {
            entry,
            problem: format!("entry {entry} {problem}"),
        }
    }
}

/// The writer thread's state.
struct Writer {
    store: Arc<Store>,
    key: MacKey,
    coming: Arc<AtomicUsize>,
}

impl Writer {
    fn run(&self, mut head: Head, rx: &mpsc::Receiver<Job>) {
        let mut last_commit = Instant::now();
        while let Ok(first) = rx.recv() {
            let pace = commit_pace(self.coming.load(Ordering::Acquire));
            let batch = self.gather(first, rx, last_commit + pace);
            last_commit = Instant::now();
            let start = head.clone();
            let committing = Instant::now();
            let result = self.store.write(|tx| {
                let mut table = tx.raw().open_table(AUDIT)?;
                // Copies committed with the requests' state changes, if any: one open
                // table for the batch (most entries, such as unwraps, have none).
                let mut pending = tx.raw().open_table(PENDING_AUDIT)?;
                for (entry, _) in &batch {
                    append(&self.key, &mut table, &mut head, entry)?;
                    pending.remove(entry.request_id.as_str())?;
                }
                drop((table, pending));
                tx.put(META, "audit_head", &head)
            });
            if result.is_ok() {
                crate::metrics::audit_commit(batch.len(), committing.elapsed());
            }
            let outcome = result.map_err(|e| {
                head = start;
                tracing::error!("audit append failed: {e}");
                Arc::new(e)
            });
            for (_, done) in batch {
                let _ = done.send(outcome.clone());
            }
        }
    }

    /// The next batch: whatever is queued, and, while announced entries are still
    /// on their way, whatever arrives before `deadline`. The writer naps while it
    /// waits rather than blocking on the queue: a blocked receiver is woken by every
    /// entry sent (a futex wake and two context switches per request), a napping one
    /// takes all that arrived in one pass.
    fn gather(
        &self,
        first: Job,
        rx: &mpsc::Receiver<Job>,
        deadline: Instant,
    ) -> Vec<(AuditEntry, Done)> {
        let mut batch = Vec::new();
        let mut next = Some(first);
        loop {
            while let Some(job) = next.take() {
                let Job {
                    entry,
                    done,
                    coming,
                } = job;
                drop(coming); // this entry has arrived
                batch.push((entry, done));
                if batch.len() >= MAX_BATCH {
                    return batch;
                }
                next = rx.try_recv().ok();
            }
            let now = Instant::now();
            if now >= deadline || self.coming.load(Ordering::Acquire) <= UNPACED_COMING {
                return batch;
            }
            std::thread::sleep(deadline.saturating_duration_since(now).min(MAX_NAP));
            next = rx.try_recv().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgcmk_crypto::SymmetricKey;

    #[test]
    fn pace_grows_with_entries_coming_and_is_capped() {
        assert_eq!(commit_pace(0), Duration::ZERO);
        assert_eq!(commit_pace(UNPACED_COMING), Duration::ZERO);
        assert!(commit_pace(UNPACED_COMING + 1) < commit_pace(UNPACED_COMING + 8));
        assert_eq!(commit_pace(10_000), MAX_PACE);
    }

    /// A writer and its queue, with `announced` requests on their way.
    fn writer_with(
        announced: usize,
    ) -> (
        tempfile::TempDir,
        Writer,
        mpsc::Sender<Job>,
        mpsc::Receiver<Job>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db.redb")).unwrap());
        let writer = Writer {
            store,
            key: MacKey::new(&SymmetricKey::from_bytes([3; 32])),
            coming: Arc::new(AtomicUsize::new(announced)),
        };
        let (jobs, rx) = mpsc::channel();
        (dir, writer, jobs, rx)
    }

    fn job() -> Job {
        Job {
            entry: AuditEntry::default(),
            done: oneshot::channel().0,
            coming: None,
        }
    }

    #[test]
    fn a_paced_batch_takes_what_arrives_before_its_deadline() {
        let (_dir, writer, jobs, rx) = writer_with(UNPACED_COMING + 10);
        let late = jobs.clone();
        let sender = std::thread::spawn(move || {
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(3));
                late.send(job()).unwrap();
            }
        });
        let started = Instant::now();
        let batch = writer.gather(job(), &rx, started + Duration::from_millis(60));
        assert_eq!(
            batch.len(),
            4,
            "the first entry and the three sent while it napped"
        );
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert!(started.elapsed() < Duration::from_secs(5));
        sender.join().unwrap();
        // With few requests on their way, what is queued commits at once.
        writer.coming.store(UNPACED_COMING, Ordering::Release);
        jobs.send(job()).unwrap();
        let started = Instant::now();
        let batch = writer.gather(job(), &rx, started + Duration::from_secs(30));
        assert_eq!(batch.len(), 2, "the first entry and the one queued");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn announced_entries_are_counted_until_they_arrive_or_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db.redb")).unwrap());
        let log = AuditLog::start(store, MacKey::new(&SymmetricKey::from_bytes([3; 32]))).unwrap();
        let first = log.entry_coming();
        let abandoned = log.entry_coming();
        assert_eq!(log.coming.load(Ordering::Acquire), 2);
        drop(abandoned); // a request that ended without an entry
        assert_eq!(log.coming.load(Ordering::Acquire), 1);
        log.record(AuditEntry::default(), Some(first))
            .await
            .unwrap();
        log.record(AuditEntry::default(), None).await.unwrap();
        assert_eq!(log.coming.load(Ordering::Acquire), 0);
        assert_eq!(log.verify().unwrap(), Ok(2));
    }

    fn change_with_entry(store: &Store, request_id: &str) {
        let intent = AuditEntry {
            operation: "KeyCreate".into(),
            key: Some("k".into()),
            request_id: request_id.into(),
            ..AuditEntry::default()
        };
        store
            .write(|tx| {
                tx.put(crate::storage::KEYS, "v/k", &1u32)?;
                commit_with_change(tx, &intent, Some("0123"))
            })
            .unwrap();
    }

    #[tokio::test]
    async fn an_entry_committed_with_its_change_reaches_the_chain_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let key = MacKey::new(&SymmetricKey::from_bytes([3; 32]));
        {
            // The change commits; the vault stops before the entry's own append.
            let store = Arc::new(Store::open(&path).unwrap());
            change_with_entry(&store, "cut-off");
        }
        let store = Arc::new(Store::open(&path).unwrap());
        let log = AuditLog::start(store.clone(), key).unwrap();
        let all = AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        };
        let listed = log.list(&all).unwrap();
        assert_eq!(listed.len(), 1);
        let recovered = &listed[0].entry;
        assert!(recovered.recovered);
        assert_eq!(
            (recovered.key.as_deref(), recovered.version.as_deref()),
            (Some("k"), Some("0123"))
        );
        // A change whose entry is appended as usual leaves no copy behind.
        change_with_entry(&store, "normal");
        let appended = AuditEntry {
            request_id: "normal".into(),
            ..AuditEntry::default()
        };
        log.record(appended, None).await.unwrap();
        let left: Vec<(String, AuditEntry)> =
            store.scan(PENDING_AUDIT, "", None, usize::MAX).unwrap();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(log.verify().unwrap(), Ok(2));
    }
}
