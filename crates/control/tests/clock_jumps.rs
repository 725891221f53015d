//! The wall clock of the control plane and its agents jumps (an NTP step, a wrong
//! clock corrected, a virtual machine resumed). The key monitor goes by the
//! monotonic clock, so a jump neither hides a revocation nor cuts the grace period
//! of an outage short, and a vault token is reused for the lifetime the vault gave
//! it, whatever the local wall clock says.
//!
//! libfaketime (Debian `faketime`) moves the wall clock of `pgcmk serve` and of the
//! agents it starts, as a real step of the system clock does: the monotonic clock,
//! the vault's clock and PostgreSQL's (started with a clean environment) stay.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgcmk_testkit::wait::wait_for;
use support::*;

const INTERVAL: u64 = 1;
const GRACE: u64 = 8;
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// How often the faked processes re-read the offset file, in seconds.
const REREAD_SECS: u64 = 1;

/// The wall-clock offset of the control plane and its agents.
struct WallClock {
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl WallClock {
    fn new() -> Self {
        assert!(
            Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} is missing: apt-get install faketime (scripts/setup does)"
        );
        let dir = scratch();
        let file = dir.path().join("offset");
        std::fs::write(&file, "+0").unwrap();
        Self { file, _dir: dir }
    }

    /// The environment that puts a process on this clock.
    fn env(&self) -> [(&str, &str); 4] {
        [
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", self.file.to_str().unwrap()),
            ("FAKETIME_CACHE_DURATION", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
    }

    /// Steps the clock to `offset` (libfaketime's form: `+2d`, `-1d`, `+3h`) and
    /// waits until every process has read it.
    fn jump(&self, offset: &str) {
        std::fs::write(&self.file, offset).unwrap();
        std::thread::sleep(Duration::from_secs(REREAD_SECS + 1));
    }
}

/// A stack whose control plane and agents run on `clock`.
fn stack_on(clock: &WallClock) -> Stack {
    Stack::start_in_env(INTERVAL, GRACE, &clock.env())
}

/// A customer-managed server `name` on `stack`, holding one row.
fn customer_server(stack: &Stack, name: &str) -> (CustomerKey, Created) {
    let key = stack.vault.customer_key(name);
    let server = Created::from(&stack.cp.create_with(name, &key, &versionless(&key.kid)));
    server.sql("CREATE TABLE t AS SELECT 1 AS v").unwrap();
    (key, server)
}

#[test]
fn the_faked_clock_reaches_the_control_plane_and_its_agents() {
    // Without this, every other test here would pass for the wrong reason.
    let clock = WallClock::new();
    let stack = stack_on(&clock);
    let (_, server) = customer_server(&stack, "faked");
    let agent = agent_pid(&server.dir).expect("a running agent");
    for pid in [stack.cp.pid(), agent] {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(
            environ
                .windows(LIBFAKETIME.len())
                .any(|w| w == LIBFAKETIME.as_bytes()),
            "process {pid} is not on the faked clock"
        );
    }
}

#[test]
fn a_clock_set_back_a_day_does_not_delay_noticing_a_revocation() {
    let clock = WallClock::new();
    let stack = stack_on(&clock);
    let (key, server) = customer_server(&stack, "back");
    clock.jump("-1d");
    stack.vault.revoke(&key.vault, &key.identity);
    wait_refused(
        &stack.cp,
        &server,
        Duration::from_secs(INTERVAL + 5),
        "a revoke with the clock a day back",
    );
    stack
        .vault
        .grant(&key.vault, &key.identity, &["get", "wrapKey", "unwrapKey"]);
    wait_for(
        "Ready after the grant, the clock a day back",
        Duration::from_secs(INTERVAL + 30),
        || stack.cp.state("back").0 == "Ready",
    );
    assert_eq!(server.sql("SELECT v FROM t").unwrap(), "1");
}

#[test]
fn a_clock_jumped_a_day_forward_does_not_cut_an_outage_grace_short() {
    let clock = WallClock::new();
    let mut stack = stack_on(&clock);
    let (_, server) = customer_server(&stack, "ahead");
    stack.vault.kill();
    let outage = Instant::now();
    clock.jump("+1d");
    // Well inside the grace period in real time, a day after it on the wall clock.
    while outage.elapsed() < Duration::from_secs(GRACE - 2) {
        assert_eq!(
            server.sql("SELECT v FROM t").as_deref(),
            Ok("1"),
            "locked {:?} into an outage of grace {GRACE} s after a jump forward",
            outage.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(stack.cp.state("ahead").0, "Ready");
}

#[test]
fn a_clock_jumped_forward_does_not_make_every_check_fetch_a_token() {
    let clock = WallClock::new();
    let started = pgcmk_control::model::now_rfc3339();
    let stack = stack_on(&clock);
    let (key, _server) = customer_server(&stack, "tokens");
    // The count below is of something that happens: the server's first check took one.
    assert!(tokens_since(&stack, &key, &started) >= 1);
    clock.jump("+2d");
    let since = pgcmk_control::model::now_rfc3339();
    // Ten intervals: each a check, with its unwrap.
    wait_for(
        "ten key checks",
        Duration::from_secs(INTERVAL * 10 + 10),
        || stack.vault.calls_since(&key.identity, "KeyUnwrap", &since) >= 10,
    );
    let tokens = tokens_since(&stack, &key, &since);
    // The token in hand lasts an hour by the vault's clock: at most one new one
    // (the agent's first check after the jump may race the read of the offset).
    assert!(
        tokens <= 1,
        "{tokens} tokens for 10 checks after the wall clock jumped 2 days forward"
    );
}

/// Tokens the key's identity obtained since `since`, by either protocol.
fn tokens_since(stack: &Stack, key: &CustomerKey, since: &str) -> usize {
    ["ManagedIdentityToken", "ClientCredentialsToken"]
        .iter()
        .map(|op| stack.vault.calls_since(&key.identity, op, since))
        .sum()
}
