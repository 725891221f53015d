//! Highly available servers in tests: their nodes as `server show` lists them,
//! SQL through the connection string that reaches the primary, a node's crash
//! (agent, Patroni, PostgreSQL: kill -9 together), and the local etcd cluster's
//! members, ended by pid when the control plane goes.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pgcmk_control::etcd::running_member;
use pgcmk_testkit::process::{children_of, is_gone, kill9, pause, resume, terminate};
use pgcmk_testkit::wait::wait_for;
use serde_json::Value;

use super::{agent_pid, versionless, ControlPlane, CustomerKey, Vault};

/// One node as `server show -o json` lists it.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub address: String,
    pub port: u64,
    pub state: String,
    pub role: Option<String>,
    pub dir: PathBuf,
    /// The enrolled host it runs on (none: the control plane's machine).
    pub host: Option<String>,
}

/// A highly available server and its superuser's password.
pub struct HaServer {
    pub name: String,
    pub password: String,
    pub connection_string: String,
}

impl HaServer {
    /// Creates `name` with `--high-availability` and `more` arguments.
    pub fn create(cp: &ControlPlane, name: &str, more: &[&str]) -> Self {
        let mut args = vec!["create", name, "-l", "westeurope", "--high-availability"];
        args.extend(more);
        let created = cp
            .try_server(&args)
            .unwrap_or_else(|e| panic!("{e}\ncontrol log:\n{}", cp.log()));
        let connection_string = cp.server(&["connection-string", name])["connection_string"]
            .as_str()
            .unwrap()
            .to_string();
        Self {
            name: name.into(),
            password: created["password"].as_str().unwrap().into(),
            connection_string,
        }
    }

    /// Creates `name` under a new customer's key (versionless: it follows
    /// rotation) in `vault`; returns the key too.
    pub fn customer_managed(cp: &ControlPlane, vault: &Vault, name: &str) -> (CustomerKey, Self) {
        let key = vault.customer_key(name);
        let credential = key.identity.credential_file.to_str().unwrap().to_string();
        let server = Self::create(
            cp,
            name,
            &[
                "--identity",
                &key.identity.name,
                "--identity-credential-file",
                &credential,
                "--key",
                &versionless(&key.kid),
            ],
        );
        (key, server)
    }

    /// Runs `sql` through the connection string (the primary, whichever it is).
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        psql_at(&self.connection_string, &self.password, sql)
    }

    /// Runs `sql` on `node` itself (over TLS, verified as the connection string says).
    pub fn sql_on(&self, node: &Node, sql: &str) -> Result<String, String> {
        psql_at(&self.uri_of(node), &self.password, sql)
    }

    /// The connection string with `node` as its one host.
    pub fn uri_of(&self, node: &Node) -> String {
        let (user, rest) = self.connection_string.split_once('@').unwrap();
        let (_, query) = rest.split_once('?').unwrap();
        let query = query.replace("target_session_attrs=read-write&", "");
        format!("{user}@{}:{}/postgres?{query}", node.address, node.port)
    }

    /// The nodes as `server show` lists them now.
    pub fn nodes(&self, cp: &ControlPlane) -> Vec<Node> {
        self.nodes_under(cp, &[cp.state_dir.join("servers")])
    }

    /// The nodes as `server show` lists them now, their directories found under
    /// `servers` (the control plane's `servers/`, or its hosts').
    pub fn nodes_under(&self, cp: &ControlPlane, servers: &[PathBuf]) -> Vec<Node> {
        let show = cp.server(&["show", &self.name]);
        let dirs: Vec<(String, PathBuf)> = servers
            .iter()
            .flat_map(|servers| fs::read_dir(servers).unwrap())
            .filter_map(|e| {
                let dir = e.ok()?.path();
                let config: Value =
                    serde_json::from_slice(&fs::read(dir.join("agent.json")).ok()?).ok()?;
                Some((config["ha"]["name"].as_str()?.to_string(), dir))
            })
            .collect();
        show["nodes"]
            .as_array()
            .expect("nodes in server show")
            .iter()
            .map(|n| {
                let name = n["name"].as_str().unwrap().to_string();
                Node {
                    dir: dirs
                        .iter()
                        .find(|(d, _)| *d == name)
                        .map(|(_, dir)| dir.clone())
                        .expect("the node's directory"),
                    name,
                    address: n["address"].as_str().unwrap().into(),
                    port: n["port"].as_u64().unwrap(),
                    state: n["state"].as_str().unwrap().into(),
                    role: n["role"].as_str().map(str::to_string),
                    host: n["host"].as_str().map(str::to_string),
                }
            })
            .collect()
    }

    /// Switches the primary to a new WAL segment and waits (up to `limit`) until
    /// the one it was writing is archived.
    pub fn archive_current_segment(&self, limit: Duration) {
        let segment = self
            .sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
            .unwrap();
        self.sql("SELECT pg_switch_wal()").unwrap();
        wait_for(&format!("{segment} archived"), limit, || {
            self.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
                .is_ok_and(|last| last.as_str() >= segment.as_str())
        });
    }

    /// Waits until one node is the primary and the other its running synchronous
    /// standby, both Ready; returns (primary, standby).
    pub fn wait_healthy(&self, cp: &ControlPlane, limit: Duration) -> (Node, Node) {
        self.wait_healthy_under(cp, &[cp.state_dir.join("servers")], limit)
    }

    /// [`HaServer::wait_healthy`], the nodes' directories under `servers`
    /// ([`HaServer::nodes_under`]).
    pub fn wait_healthy_under(
        &self,
        cp: &ControlPlane,
        servers: &[PathBuf],
        limit: Duration,
    ) -> (Node, Node) {
        let mut pair = None;
        wait_for(
            &format!("{}: a primary and a synchronous standby", self.name),
            limit,
            || {
                let nodes = self.nodes_under(cp, servers);
                let role = |r: &str| nodes.iter().find(|n| n.role.as_deref() == Some(r)).cloned();
                if let (Some(p), Some(s)) = (role("leader"), role("sync_standby")) {
                    if p.state == "Ready" && s.state == "Ready" {
                        pair = Some((p, s));
                    }
                }
                pair.is_some()
            },
        );
        pair.unwrap()
    }
}

/// Runs `sql` with `psql` on the libpq URI `uri` as `postgres` with `password`.
pub fn psql_at(uri: &str, password: &str, sql: &str) -> Result<String, String> {
    pgcmk_agent::postgres::PgInstall::discover()
        .unwrap()
        .psql_at(uri, password, sql)
}

/// A node's processes: its agent, Patroni, the postmaster and every PostgreSQL
/// process under it. Patroni starts the postmaster detached (its parent is init),
/// so it is found by its lock file.
pub fn node_processes(node_dir: &Path) -> Vec<u32> {
    let agent = agent_pid(node_dir).expect("a running agent");
    let postmaster = fs::read_to_string(node_dir.join("mnt/pgdata/postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok());
    let mut pids = vec![agent];
    pids.extend(postmaster);
    let mut parents = pids.clone();
    while let Some(parent) = parents.pop() {
        for child in children_of(parent) {
            pids.push(child);
            parents.push(child);
        }
    }
    pids
}

/// The processes that carry a node's WAL to the archive: PostgreSQL's archiver
/// and every pgBackRest process of the node's configuration (the asynchronous
/// pusher pushes whatever segment is ready, not only the one it was asked for).
pub fn archive_pushers(node_dir: &Path) -> Vec<u32> {
    let config = format!(
        "--config={}",
        node_dir.join("mnt/pgbackrest/pgbackrest.conf").display()
    );
    let cmdline = |pid: u32| fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let archiver = node_processes(node_dir).into_iter().filter(|&pid| {
        cmdline(pid).starts_with(b"postgres: ") && {
            String::from_utf8_lossy(&cmdline(pid)).contains("archiver")
        }
    });
    let pushers = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            cmdline(pid)
                .split(|b| *b == 0)
                .any(|arg| arg == config.as_bytes())
        });
    archiver.chain(pushers).collect()
}

/// A host that hangs: every process of the node stopped (SIGSTOP) at once, so
/// nothing more leaves it (one that exited meanwhile, a backend or a probe, is
/// skipped); resumed when the guard drops.
pub fn freeze(pids: &[u32]) -> Frozen {
    Frozen(pids.iter().copied().filter(|&pid| pause(pid)).collect())
}

/// Processes stopped by [`freeze`], resumed on drop (also when a test fails).
pub struct Frozen(Vec<u32>);

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.0 {
            resume(pid);
        }
    }
}

/// A host crash of one node: kill -9 of `pids` ([`node_processes`]) at once;
/// returns when they are all gone.
pub fn crash(pids: &[u32]) {
    for &pid in pids {
        kill9(pid);
    }
    wait_for(
        "the node's processes to be gone",
        Duration::from_secs(30),
        || pids.iter().all(|&pid| is_gone(pid)),
    );
}

/// Ends the local etcd cluster's members (by their pid files) after the control
/// plane that ran them is gone, and removes their keys (on tmpfs).
pub fn stop_etcd(state_dir: &Path) {
    let dir = state_dir.join("etcd");
    let keys_dir = fs::read(dir.join("cluster.json"))
        .ok()
        .and_then(|json| serde_json::from_slice::<Value>(&json).ok())
        .and_then(|layout| layout["keys_dir"].as_str().map(PathBuf::from));
    for m in ["m1", "m2", "m3"] {
        if let Some(pid) = running_member(&dir.join(format!("{m}.pid")), &dir.join(m)) {
            if terminate(pid) {
                wait_for("an etcd member to exit", Duration::from_secs(30), || {
                    is_gone(pid)
                });
            }
        }
    }
    if let Some(keys) = keys_dir {
        let _ = fs::remove_dir_all(keys);
    }
}

/// A client inserting ids 1, 2, ... into `table (id int)` through a server's
/// connection string, one statement at a time, on a thread of its own; only the
/// inserts PostgreSQL acknowledged are recorded, with when each was sent and when
/// it was acknowledged.
pub struct AckedInserts {
    acked: Arc<Mutex<Vec<(i64, Instant, Instant)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AckedInserts {
    /// Starts inserting into `table` of `server`.
    pub fn start(server: &HaServer, table: &str) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (acked, stop) = (acked.clone(), stop.clone());
            let (uri, password) = (server.connection_string.clone(), server.password.clone());
            let table = table.to_string();
            std::thread::spawn(move || {
                let mut id = 0;
                while !stop.load(Ordering::SeqCst) {
                    id += 1;
                    let sql = format!("INSERT INTO {table} VALUES ({id})");
                    let sent = Instant::now();
                    let answered = pgcmk_agent::postgres::PgInstall::discover()
                        .unwrap()
                        .psql_within(&uri, &password, &sql, Duration::from_secs(10));
                    if answered.is_ok() {
                        acked.lock().unwrap().push((id, sent, Instant::now()));
                    }
                }
            })
        };
        Self {
            acked,
            stop,
            thread: Some(thread),
        }
    }

    /// How many inserts were acknowledged so far.
    pub fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// How long after `t` the first insert sent after it was acknowledged (one in
    /// flight at `t` may have been committed before it).
    pub fn first_after(&self, t: Instant) -> Option<Duration> {
        let acked = self.acked.lock().unwrap();
        acked
            .iter()
            .find(|(_, sent, _)| *sent > t)
            .map(|(_, _, at)| *at - t)
    }

    /// Stops inserting; the acknowledged ids.
    pub fn finish(mut self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.acked
            .lock()
            .unwrap()
            .iter()
            .map(|(id, ..)| *id)
            .collect()
    }
}

impl Drop for AckedInserts {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The ids of `acked` that `table` of `server` does not hold.
pub fn lost(server: &HaServer, table: &str, acked: &[i64]) -> Vec<i64> {
    let present: HashSet<i64> = server
        .sql(&format!("SELECT id FROM {table}"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    acked
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect()
}

/// The primary node goes away while `inserts` run: all its processes frozen (a
/// host gone) until the standby took over and acknowledged an insert, then killed
/// (-9) and brought back by the control plane. Returns the time from the freeze to
/// that first insert, and the nodes as (new primary, standby) once the old primary
/// rejoined.
pub fn lose_primary(
    cp: &ControlPlane,
    server: &HaServer,
    primary: &Node,
    inserts: &AckedInserts,
    limit: Duration,
) -> (Duration, (Node, Node)) {
    let before = inserts.count();
    wait_for("inserts before the primary goes", limit, || {
        inserts.count() >= before + 5
    });
    let pids = node_processes(&primary.dir);
    let down_at = Instant::now();
    let frozen = freeze(&pids);
    wait_for("an insert acknowledged by the new primary", limit, || {
        inserts.first_after(down_at).is_some()
    });
    let took = inserts.first_after(down_at).unwrap();
    crash(&pids);
    drop(frozen);
    (took, server.wait_healthy(cp, limit))
}

/// How nodes (re)joined as standbys, counted in their Patroni logs (on their
/// mounts, read through them): `pg_rewind` runs, rewinds that failed, and clones
/// by `pg_basebackup` (the first standby's included).
#[derive(Debug, Default)]
pub struct Rejoins {
    pub rewinds: usize,
    pub rewind_failures: usize,
    pub clones: usize,
}

impl Rejoins {
    pub fn of(nodes: &[Node]) -> Self {
        let mut counted = Self::default();
        for node in nodes {
            let log = fs::read_to_string(node.dir.join("mnt/patroni/log/patroni.log"))
                .unwrap_or_default();
            counted.rewinds += log.matches("running pg_rewind from").count();
            counted.rewind_failures += log.matches("Failed to rewind").count();
            counted.clones += log
                .matches("replica has been created using basebackup")
                .count();
        }
        counted
    }
}
