//! A server's state is a fact about now, and recovery needs no operator: with real
//! parts (`pgcmk vault serve`, `pgcmk serve`, node agents, cryptfs over /dev/fuse,
//! PostgreSQL 15), each process is killed or starved and the state and the event
//! trail are checked against what is true.
//!
//! The key-check interval is long on purpose: recovery must not wait for a check.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::{poll, wait_for};
use serde_json::Value;
use support::*;

const INTERVAL: u64 = 60;
/// How long a killed process may take to be serving again (DESIGN.md: seconds, not
/// the next key check).
const RECOVERY: Duration = Duration::from_secs(5);

/// The servers of the tests on the shared stack, made at once when it starts.
const SERVERS: [&str; 5] = [
    "killed-agent",
    "unwritable",
    "five-kills",
    "killed-postmaster",
    "crash-restart",
];

/// One vault and control plane for the binary, the servers no test has taken yet,
/// and the turn each test takes: the recovery times these tests assert are taken
/// with the machine to one test at a time.
struct Fixture {
    stack: Stack,
    servers: MadeFor<Created>,
    turn: Mutex<()>,
}

fn fixture() -> Held<Fixture> {
    static FIXTURE: Shared<Fixture> = Shared::new();
    FIXTURE.get(|| {
        let stack = Stack::start(INTERVAL, 300, None);
        let servers = MadeFor::at_once(&SERVERS, |name| committed_server(&stack.cp, name));
        Fixture {
            stack,
            servers,
            turn: Mutex::new(()),
        }
    })
}

/// A service-managed server `name` holding a committed row.
fn committed_server(cp: &ControlPlane, name: &str) -> Created {
    let server = Created::from(&cp.server(&["create", "--name", name, "--location", "local"]));
    server
        .sql("CREATE TABLE t AS SELECT 'committed' AS v")
        .unwrap();
    server
}

impl Fixture {
    /// Waits for the test's turn (held first, so the fixture stays up meanwhile).
    fn turn(&self) -> MutexGuard<'_, ()> {
        self.turn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The server made for the test `name`, once it is the test's turn.
    fn take(&self, name: &'static str) -> Served<'_> {
        let turn = self.turn();
        let server = self.servers.take(name);
        Served::new(&self.stack.cp, server, turn)
    }
}

/// A test's server, with the machine to that test until dropped; it is deleted then
/// (also when the test fails), before the next test's turn.
struct Served<'a> {
    cp: &'a ControlPlane,
    name: String,
    dir: PathBuf,
    server: Created,
    _turn: MutexGuard<'a, ()>,
}

impl<'a> Served<'a> {
    fn new(cp: &'a ControlPlane, server: Created, turn: MutexGuard<'a, ()>) -> Self {
        Self {
            cp,
            name: server.name.clone(),
            dir: server.dir.clone(),
            server,
            _turn: turn,
        }
    }

    fn sql(&self, sql: &str) -> Result<String, String> {
        self.server.sql(sql)
    }

    fn state(&self) -> (String, String) {
        self.cp.state(&self.name)
    }

    /// Ready in the control plane, and PostgreSQL answers with the committed row.
    fn serving(&self) -> bool {
        self.state().0 == "Ready" && self.sql("SELECT v FROM t").is_ok_and(|v| v == "committed")
    }

    /// The first event `what` by `who`, when there is one.
    fn event(&self, who: &str, what: &str) -> Option<Value> {
        self.cp
            .events(&self.name)
            .into_iter()
            .find(|e| e["who"] == who && e["what"] == what)
    }
}

impl Drop for Served<'_> {
    fn drop(&mut self) {
        let _ = self.cp.try_server(&["delete", &self.name, "--yes"]);
    }
}

#[test]
fn a_killed_agent_is_not_ready_within_a_second_and_comes_back_without_an_operator() {
    let f = fixture();
    let s = f.take("killed-agent");
    let agent = agent_pid(&s.dir).expect("a running agent");
    kill(agent, "-9");
    let noticed = wait_for("the state to leave Ready", Duration::from_secs(1), || {
        s.state().0 != "Ready"
    });
    eprintln!("agent kill -9 -> not Ready in {noticed:?}");
    let back = wait_for("Ready with a new agent", Duration::from_secs(30), || {
        s.serving()
    });
    eprintln!("agent kill -9 -> Ready in {back:?}");
    assert!(
        agent_pid(&s.dir).is_some_and(|new| new != agent),
        "no new agent"
    );
    let down = s
        .event("agent", "state Ready -> Failed")
        .unwrap_or_else(|| panic!("no Failed event by the agent: {:?}", s.cp.events(&s.name)));
    assert!(down["why"].as_str().unwrap().contains("SIGKILL"), "{down}");
    assert!(s.event("control-plane", "agent restarted").is_some());
}

/// Makes a directory immutable (`chattr +i`: nothing can be created, renamed or
/// removed in it) until dropped, also when the test fails.
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Self {
        chattr("+i", dir);
        Self(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

fn chattr(flag: &str, dir: &Path) {
    let status = Command::new("chattr").arg(flag).arg(dir).status().unwrap();
    assert!(status.success(), "chattr {flag} {}", dir.display());
}

#[test]
fn an_agent_that_cannot_write_its_directory_is_failed_with_the_reason_and_recovers() {
    let f = fixture();
    let s = f.take("unwritable");
    let immutable = Immutable::set(&s.dir);
    wait_for("Failed", Duration::from_secs(15), || {
        s.state().0 == "Failed"
    });
    let (_, reason) = s.state();
    assert!(reason.contains("status.json"), "{reason}");
    assert!(reason.contains("restart"), "{reason}");
    // The agent is restarted with back-off and keeps failing: never Ready meanwhile.
    let ready = poll(Duration::from_secs(4), Duration::from_millis(100), || {
        s.state().0 == "Ready"
    });
    assert!(ready.is_none(), "Ready while the directory is unwritable");
    s.sql("SELECT 1").unwrap_err();

    drop(immutable);
    let back = wait_for(
        "Ready once the directory is writable",
        Duration::from_secs(45),
        || s.serving(),
    );
    eprintln!("writable again -> Ready in {back:?}");
}

#[test]
fn five_agent_kills_in_a_row_are_each_ready_again_within_seconds() {
    let f = fixture();
    let s = f.take("five-kills");
    let mut took = Vec::new();
    for round in 1..=5 {
        let agent = agent_pid(&s.dir).expect("a running agent");
        kill(agent, "-9");
        let killed = Instant::now();
        poll(RECOVERY, Duration::from_millis(50), || {
            agent_pid(&s.dir) != Some(agent) && s.serving()
        })
        .unwrap_or_else(|| {
            panic!(
                "round {round}: not Ready within {RECOVERY:?} of kill -9 (state {:?})\n\
                 events: {:#?}\nagent log:\n{}",
                s.state(),
                s.cp.events(&s.name),
                std::fs::read_to_string(s.dir.join("agent.log")).unwrap_or_default()
            )
        });
        took.push(killed.elapsed());
    }
    eprintln!("agent kill -9 -> Ready, 5 rounds (interval {INTERVAL} s): {took:?}");
}

#[test]
fn a_reattached_agent_that_is_killed_is_noticed_within_a_second() {
    // Its own stack: the control plane goes away for a moment.
    let f = fixture();
    let turn = f.turn();
    let mut stack = Stack::start(INTERVAL, 300, None);
    let server = committed_server(&stack.cp, "reattached");
    stack.cp.restart();
    let s = Served::new(&stack.cp, server, turn);
    assert!(s.cp.has_event(&s.name, "agent re-attached"));
    wait_for("Ready after re-attaching", Duration::from_secs(10), || {
        s.serving()
    });
    kill(agent_pid(&s.dir).expect("a running agent"), "-9");
    let noticed = wait_for("the state to leave Ready", Duration::from_secs(1), || {
        s.state().0 != "Ready"
    });
    eprintln!("re-attached agent kill -9 -> not Ready in {noticed:?}");
    wait_for("Ready with a new agent", RECOVERY, || s.serving());
}

#[test]
fn a_killed_postmaster_is_an_event_and_serves_again() {
    let f = fixture();
    let s = f.take("killed-postmaster");
    let postmaster = agent_status(&s.dir)["postgres_pid"].as_u64().unwrap();
    kill(u32::try_from(postmaster).unwrap(), "-9");
    let killed = Instant::now();
    wait_for("Ready with a new postmaster", RECOVERY, || {
        agent_status(&s.dir)["postgres_pid"].as_u64() != Some(postmaster) && s.serving()
    });
    eprintln!("postmaster kill -9 -> Ready in {:?}", killed.elapsed());
    let exited = s
        .event("postgres", "postgres exited")
        .unwrap_or_else(|| panic!("no event: {:?}", s.cp.events(&s.name)));
    assert!(
        exited["why"].as_str().unwrap().contains("SIGKILL"),
        "{exited}"
    );
}

#[test]
fn a_crash_restart_of_postgres_is_an_event_with_its_message() {
    let f = fixture();
    let s = f.take("crash-restart");
    let postmaster = agent_status(&s.dir)["postgres_pid"].as_u64().unwrap();
    // Any child of the postmaster dying by a signal makes PostgreSQL reinitialize
    // (crash recovery) without the postmaster exiting.
    let children =
        std::fs::read_to_string(format!("/proc/{postmaster}/task/{postmaster}/children")).unwrap();
    let checkpointer = children
        .split_whitespace()
        .map(|pid| pid.parse::<u32>().unwrap())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("checkpointer"))
        })
        .expect("a checkpointer");
    kill(checkpointer, "-9");
    let event = wait_for("the crash restart event", RECOVERY, || {
        s.event("postgres", "postgres restarted after a crash")
            .is_some()
    });
    eprintln!("checkpointer kill -9 -> event in {event:?}");
    let restarted = s
        .event("postgres", "postgres restarted after a crash")
        .unwrap();
    let why = restarted["why"].as_str().unwrap();
    assert!(
        why.contains(&format!(
            "checkpointer process (PID {checkpointer}) was terminated by signal 9"
        )),
        "{why}"
    );
    wait_for("Ready after crash recovery", RECOVERY, || s.serving());
    assert_eq!(
        agent_status(&s.dir)["postgres_pid"].as_u64(),
        Some(postmaster)
    );
}

#[test]
fn a_create_cut_short_by_a_control_plane_kill_is_failed_and_never_started() {
    // Its own stack: the control plane is killed.
    let f = fixture();
    let _turn = f.turn();
    let mut stack = Stack::start(INTERVAL, 300, None);
    let name = "cut-short";
    let mut create = stack
        .cp
        .spawn_server(&["create", "--name", name, "--location", "local"]);
    let mut dir = PathBuf::new();
    wait_for("the new server's record", Duration::from_secs(30), || {
        let shown = stack.cp.try_server(&["show", name]);
        if let Ok(v) = shown {
            dir = v["server"]["dir"].as_str().unwrap().into();
        }
        !dir.as_os_str().is_empty()
    });
    // The agent has begun making the volume: it is frozen there, then the control
    // plane and the agent are killed, as a power cut would.
    let mut agent = None;
    poll(Duration::from_secs(30), Duration::from_millis(2), || {
        agent = agent_pid(&dir).filter(|_| dir.join("cipher").exists());
        agent.is_some()
    })
    .expect("the first start to begin provisioning");
    let agent = agent.unwrap();
    kill(agent, "-STOP");
    stack.cp.kill();
    kill(agent, "-9");
    assert!(
        !create.0.wait().unwrap().success(),
        "the create was cut short"
    );
    stack.cp.start_again();

    let (state, reason) = stack.cp.state(name);
    assert_eq!(state, "Failed", "{reason}");
    assert!(
        reason.contains("first start ended before the server was provisioned"),
        "{reason}"
    );
    assert!(!stack.cp.has_event(name, "agent started"));
    assert_eq!(
        agent_pid(&dir),
        None,
        "no agent runs on the half-made volume"
    );
    let refused = stack.cp.try_server(&["start", name]).unwrap_err();
    assert!(refused.contains("was never provisioned"), "{refused}");
    stack.cp.server(&["delete", name, "--yes"]);
    assert!(!dir.exists());
}
