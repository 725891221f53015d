//! The consensus store of highly available servers: a 3-member etcd cluster that
//! the control plane starts on loopback and supervises like the node agents, or
//! an existing cluster named by `pgcmk serve --etcd-endpoints`.
//!
//! The local cluster is made at the first highly available server and kept in
//! `STATE/etcd/`: `cluster.json` (the members' names and ports, chosen once: an
//! address is an identity, so they never change), and per member its data
//! directory `mN/` and `mN.pid`. A member that dies is restarted with back-off; a
//! control plane that restarts re-attaches to the members still running, so the
//! cluster (and the leader locks of the servers' primaries) outlives it.
//!
//! etcd holds no key and no data: Patroni keeps there the cluster's leader lock,
//! the members' addresses and roles, and its dynamic configuration. Whoever can
//! write there can move a server's primary, so the members speak TLS only, with
//! certificates of the etcd CA, and require one from every client
//! ([`crate::etcd_tls`]). A member's key is made at each of its starts and kept
//! in a directory on tmpfs (`/dev/shm/pgcmk-etcd-*`, 0700), never on the disk.
//! Before a member's certificate expires (once two thirds of its life passed) the
//! member is restarted with a new one, one member at a time and only while every
//! member is healthy, so that a majority always serves.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pgcmk_agent::backoff::{describe_delay, Backoff};
use pgcmk_agent::contract::invocation::{signal, AgentSignal};
use pgcmk_agent::contract::server_dir::{read_json, write_json_atomic};
use pgcmk_agent::contract::ServerDir;
use serde::{Deserialize, Serialize};

use crate::error::IoContext;
use crate::etcd_tls::EtcdCa;
use crate::node_agent::{AgentProcess, NodeAgent};
use crate::Error;

/// The etcd program (Debian's `etcd-server` package).
const ETCD: &str = "/usr/bin/etcd";
/// Members of the local cluster: a majority (2) survives the loss of one.
const MEMBERS: usize = 3;
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_CAP: Duration = Duration::from_secs(30);
/// Where the members' keys are kept while they run: memory, not the disk.
const KEYS_ROOT: &str = "/dev/shm";

/// Where the cluster is kept, and what it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ClusterLayout {
    /// Names the cluster for its members (`--initial-cluster-token`).
    token: String,
    members: Vec<MemberPorts>,
    /// Where the members' certificates and keys are written at their starts (on
    /// tmpfs). `None`: a cluster made before etcd spoke TLS, which keeps speaking
    /// plaintext (its members know each other by `http://` peer URLs).
    #[serde(default)]
    keys_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct MemberPorts {
    name: String,
    client_port: u16,
    peer_port: u16,
}

/// One member: its process (while it runs) and its restart back-off.
struct Member {
    ports: MemberPorts,
    process: Option<AgentProcess>,
    restarts: Backoff,
    restart_at: Option<Instant>,
}

/// The local etcd cluster.
pub struct EtcdCluster {
    dir: PathBuf,
    layout: ClusterLayout,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// The cluster kept in `dir` when there is one.
    pub fn existing(dir: &Path) -> Result<Option<Self>, Error> {
        if !dir.join("cluster.json").exists() {
            return Ok(None);
        }
        let layout: ClusterLayout = read_json(&dir.join("cluster.json"))?;
        Ok(Some(Self::with(dir, layout)))
    }

    /// The cluster kept in `dir`, made (ports chosen, not yet started) when there
    /// is none.
    pub fn open_or_make(dir: &Path) -> Result<Self, Error> {
        if let Some(cluster) = Self::existing(dir)? {
            return Ok(cluster);
        }
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("setting permissions of {}", dir.display()))?;
        // Held together while choosing, so no two members get the same port.
        let listeners = (0..2 * MEMBERS)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .ctx(|| "finding free ports for etcd")?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()
            .ctx(|| "finding free ports for etcd")?;
        let suffix: [u8; 16] = pgcmk_crypto::random::array()?;
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let layout = ClusterLayout {
            token: format!("pgcmk-{}", std::process::id()),
            keys_dir: Some(Path::new(KEYS_ROOT).join(format!("pgcmk-etcd-{suffix}"))),
            members: (0..MEMBERS)
                .map(|i| MemberPorts {
                    name: format!("m{}", i + 1),
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                })
                .collect(),
        };
        drop(listeners);
        write_json_atomic(&dir.join("cluster.json"), &layout)?;
        Ok(Self::with(dir, layout))
    }

    fn with(dir: &Path, layout: ClusterLayout) -> Self {
        let members = layout
            .members
            .iter()
            .map(|ports| Member {
                ports: ports.clone(),
                process: None,
                restarts: Backoff::new(RESTART_FIRST, RESTART_CAP),
                restart_at: Some(Instant::now()),
            })
            .collect();
        Self {
            dir: dir.to_path_buf(),
            layout,
            members,
        }
    }

    /// The client endpoints (`https://127.0.0.1:PORT`).
    pub fn endpoints(&self) -> Vec<String> {
        self.layout
            .members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect()
    }

    /// `https`, or `http` for a cluster made before etcd spoke TLS.
    fn scheme(&self) -> &'static str {
        match self.layout.keys_dir {
            Some(_) => "https",
            None => "http",
        }
    }

    /// One supervision pass at `now`: re-attaches to members still running from an
    /// earlier control plane, notices the ones that died, starts those due with
    /// new certificates of `ca`, and renews one member's certificate when it is
    /// due and `healthy` says of every member's endpoint that it serves.
    pub fn supervise(&mut self, now: Instant, ca: &EtcdCa, healthy: impl Fn(&str) -> bool) {
        self.start_due(now, ca);
        self.renew_one(ca, healthy);
    }

    /// Re-attaches, notices exits, and starts the members due.
    fn start_due(&mut self, now: Instant, ca: &EtcdCa) {
        for i in 0..self.members.len() {
            let data_dir = self.data_dir(&self.members[i].ports);
            let pid_file = self.pid_file(&self.members[i].ports);
            let member = &mut self.members[i];
            if let Some(process) = member.process.as_mut() {
                let Some(exit) = process.exit() else { continue };
                member.process = None;
                let delay = member.restarts.failed();
                member.restart_at = Some(now + delay);
                tracing::warn!(
                    member = %member.ports.name,
                    "etcd member {exit}; restarting it {}",
                    describe_delay(delay)
                );
                continue;
            }
            if member.restart_at.is_none_or(|at| now < at) {
                continue;
            }
            if let Some(pid) = running_member(&pid_file, &data_dir) {
                member.process = Some(AgentProcess::attached(
                    pid,
                    String::new(),
                    ServerDir::new(&data_dir),
                ));
                member.restart_at = None;
                continue;
            }
            match self.spawn(i, ca) {
                Ok(process) => {
                    let member = &mut self.members[i];
                    member.process = Some(process);
                    member.restart_at = None;
                }
                Err(e) => {
                    let member = &mut self.members[i];
                    let delay = member.restarts.failed();
                    member.restart_at = Some(now + delay);
                    tracing::error!(member = %member.ports.name, "{e}; retrying {}", describe_delay(delay));
                }
            }
        }
    }

    /// Restarts the first member whose certificate has lived two thirds of its
    /// life with a new one, if every member runs and `healthy` says each serves
    /// (a majority stays while it restarts). One member per pass: the next waits
    /// until this one serves again.
    fn renew_one(&mut self, ca: &EtcdCa, healthy: impl Fn(&str) -> bool) {
        let Some(keys_dir) = self.layout.keys_dir.clone() else {
            return;
        };
        if self.members.iter().any(|m| m.process.is_none()) {
            return;
        }
        let renew_after = ca.member_lifetime() * 2 / 3;
        let due = self.members.iter().position(|m| {
            let issued = fs::metadata(keys_dir.join(format!("{}.crt", m.ports.name)))
                .and_then(|meta| meta.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            issued.elapsed().unwrap_or_default() >= renew_after
        });
        let Some(i) = due else { return };
        if !self.endpoints().iter().all(|e| healthy(e)) {
            return;
        }
        tracing::info!(
            member = %self.members[i].ports.name,
            "renewing the etcd member's certificate: restarting it with a new one"
        );
        if let Some(process) = self.members[i].process.take() {
            stop_member(process);
        }
        match self.spawn(i, ca) {
            Ok(process) => self.members[i].process = Some(process),
            Err(e) => {
                let member = &mut self.members[i];
                member.restart_at = Some(Instant::now() + member.restarts.failed());
                tracing::error!(member = %member.ports.name, "{e}; retrying");
            }
        }
    }

    /// Records that the cluster served a server: the next crash of a member is
    /// restarted at once.
    pub fn healthy(&mut self) {
        for member in &mut self.members {
            if member.process.is_some() {
                member.restarts.reset();
            }
        }
    }

    fn data_dir(&self, m: &MemberPorts) -> PathBuf {
        self.dir.join(&m.name)
    }

    fn pid_file(&self, m: &MemberPorts) -> PathBuf {
        self.dir.join(format!("{}.pid", m.name))
    }

    /// Starts member `i`, its output in `STATE/etcd/mN.log`.
    fn spawn(&self, i: usize, ca: &EtcdCa) -> Result<AgentProcess, Error> {
        let m = &self.layout.members[i];
        let scheme = self.scheme();
        let peers = self
            .layout
            .members
            .iter()
            .map(|p| format!("{}={scheme}://127.0.0.1:{}", p.name, p.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let client = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer = format!("{scheme}://127.0.0.1:{}", m.peer_port);
        let tls = match &self.layout.keys_dir {
            Some(dir) => member_tls(dir, &m.name, ca)?,
            None => {
                tracing::warn!(
                    member = %m.name,
                    "this etcd cluster was made before etcd spoke TLS: it runs in plaintext \
                     (docs/high-availability.md says how to replace it)"
                );
                Vec::new()
            }
        };
        let log_path = self.dir.join(format!("{}.log", m.name));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .ctx(|| format!("opening {}", log_path.display()))?;
        let err = log.try_clone().ctx(|| "duplicating the log handle")?;
        let child = Command::new(ETCD)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.data_dir(m))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &peers])
            .args(["--initial-cluster-token", &self.layout.token])
            .args(["--initial-cluster-state", "new"])
            .args(tls)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .ctx(|| format!("starting {ETCD} (install etcd-server)"))?;
        fs::write(self.pid_file(m), child.id().to_string())
            .ctx(|| format!("writing {}", self.pid_file(m).display()))?;
        Ok(AgentProcess::spawned(
            child,
            String::new(),
            ServerDir::new(self.data_dir(m)),
        ))
    }

    /// Stops every member (SIGTERM), waits for them to exit, and removes their
    /// keys.
    pub fn stop(&mut self) {
        if let Some(dir) = &self.layout.keys_dir {
            let _ = fs::remove_dir_all(dir);
        }
        for member in &mut self.members {
            if let Some(process) = member.process.take() {
                stop_member(process);
            }
            member.restart_at = None;
        }
    }
}

/// Stops a member (SIGTERM) and waits for it to exit.
fn stop_member(mut process: AgentProcess) {
    let _ = signal(process.pid(), AgentSignal::Stop);
    let deadline = Instant::now() + Duration::from_secs(10);
    while process.exit().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    process.reap();
}

/// The pid in `pid_file` when it is a running etcd whose data directory is
/// `data_dir` (not a recycled pid).
pub fn running_member(pid_file: &Path, data_dir: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let ours = args
        .windows(2)
        .any(|w| w[0] == b"--data-dir" && w[1] == data_dir.as_os_str().as_encoded_bytes());
    (ours && pgcmk_agent::contract::invocation::is_running(pid)).then_some(pid)
}

/// Writes member `name`'s new certificate and key into `dir` (tmpfs, 0700) and
/// returns etcd's TLS flags for them: TLS on the client and peer URLs, a
/// certificate of `ca` required from clients and peers alike.
fn member_tls(dir: &Path, name: &str, ca: &EtcdCa) -> Result<Vec<std::ffi::OsString>, Error> {
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .ctx(|| format!("setting permissions of {}", dir.display()))?;
    let issued = ca.member(name)?;
    let certificate = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    pgcmk_hostkeys::files::write_atomic(&certificate, issued.certificate_pem.as_bytes(), 0o644)?;
    pgcmk_hostkeys::files::write_atomic(&key, issued.key_pem.expose_secret(), 0o600)?;
    let mut flags = Vec::new();
    for (flag, file) in [
        ("--cert-file", &certificate),
        ("--key-file", &key),
        ("--trusted-ca-file", &ca.file().to_path_buf()),
        ("--peer-cert-file", &certificate),
        ("--peer-key-file", &key),
        ("--peer-trusted-ca-file", &ca.file().to_path_buf()),
    ] {
        flags.push(flag.into());
        flags.push(file.clone().into_os_string());
    }
    flags.push("--client-cert-auth".into());
    flags.push("--peer-client-cert-auth".into());
    Ok(flags)
}
