//! A real Prometheus (the Debian package) scrapes the vault service, the control
//! plane and — found through the control plane's `/agents` — every node agent, each
//! on its own loopback `--metrics-listen`, with the documented alert rules loaded;
//! PromQL over its HTTP API sees what the tests did: FUSE writes, a revoke as a state
//! transition, a vault denial, a failing key check and a pending alert.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgcmk_testkit::binary::pgcmk;
use pgcmk_testkit::process::spawn_logged;
use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use serde_json::Value;
use support::*;

const INTERVAL: u64 = 1;
/// How long a scrape, a rule evaluation and a discovery refresh take together, with room.
const SEEN_WITHIN: Duration = Duration::from_secs(20);

/// The alert rules operators are given (docs/operations.md).
fn alert_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/prometheus/pgcmk-alerts.yml")
}

/// A `prometheus` child on a free loopback port, killed on drop.
struct Prometheus {
    _child: KilledOnDrop,
    url: String,
    http: reqwest::blocking::Client,
}

impl Prometheus {
    /// Scrapes `vault` and `control` (HOST:PORT) and the agents that `control`'s
    /// `/agents` lists, every second.
    fn start(root: &Path, vault: &str, control: &str) -> Self {
        let config = format!(
            r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{rules}"]
scrape_configs:
  - job_name: vault
    static_configs: [{{targets: ["{vault}"]}}]
  - job_name: control-plane
    static_configs: [{{targets: ["{control}"]}}]
  - job_name: agents
    http_sd_configs: [{{url: "http://{control}/agents", refresh_interval: 1s}}]
"#,
            rules = alert_rules().display()
        );
        let config_file = root.join("prometheus.yml");
        fs::write(&config_file, config).unwrap();
        let port = free_port();
        let child = spawn_logged(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    root.join("prometheus-data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn"),
            &root.join("prometheus.log"),
        );
        let prometheus = Self {
            _child: KilledOnDrop(child),
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::blocking::Client::new(),
        };
        wait_for("Prometheus ready", Duration::from_secs(60), || {
            prometheus
                .http
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        prometheus
    }

    /// The samples of an instant query: each series' labels and value.
    fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let body: Value = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("querying {promql}: {e}"));
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str().unwrap().parse().unwrap();
                (s["metric"].clone(), value)
            })
            .collect()
    }

    /// The one value of a query that sums to a single series, if it has one yet.
    fn value(&self, promql: &str) -> Option<f64> {
        self.query(promql).first().map(|(_, v)| *v)
    }

    /// Waits until `promql` has a value satisfying `holds`; returns it.
    fn wait_value(&self, promql: &str, holds: impl Fn(f64) -> bool) -> f64 {
        let mut seen = None;
        wait_for(promql, SEEN_WITHIN, || {
            seen = self.value(promql);
            seen.is_some_and(&holds)
        });
        seen.unwrap()
    }
}

/// A stack whose three kinds of service serve metrics, and the Prometheus scraping them.
struct Observed {
    prometheus: Prometheus,
    vault_metrics: String,
    control_metrics: String,
    stack: Stack,
}

fn observed() -> Held<Observed> {
    static OBSERVED: Shared<Observed> = Shared::new();
    OBSERVED.get(|| {
        let vault_metrics = format!("127.0.0.1:{}", free_port());
        let control_metrics = format!("127.0.0.1:{}", free_port());
        let stack = Stack::start_with_vault(
            INTERVAL,
            300,
            None,
            &["--metrics-listen", &control_metrics],
            &["--metrics-listen", &vault_metrics],
        );
        let prometheus = Prometheus::start(stack.root.path(), &vault_metrics, &control_metrics);
        Observed {
            prometheus,
            vault_metrics,
            control_metrics,
            stack,
        }
    })
}

/// The text a service's `/metrics` answers now.
fn scrape(address: &str) -> String {
    reqwest::blocking::get(format!("http://{address}/metrics"))
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .unwrap_or_else(|e| panic!("scraping {address}: {e}"))
}

#[test]
fn fuse_request_counters_grow_with_writes() {
    let observed = observed();
    let (prometheus, cp) = (&observed.prometheus, &observed.stack.cp);
    let server = Created::from(&cp.server(&["create", "--name", "writes", "--location", "local"]));
    let writes = r#"sum(pgcmk_cryptfs_requests_total{job="agents",server="writes",op="write"})"#;
    let bytes = r#"sum(pgcmk_cryptfs_written_bytes_total{job="agents",server="writes"})"#;
    // Found through /agents and scraped.
    let before = prometheus.wait_value(writes, |_| true);
    let bytes_before = prometheus.wait_value(bytes, |_| true);
    server
        .sql("CREATE TABLE t AS SELECT g, repeat('x', 200) AS v FROM generate_series(1, 20000) g; CHECKPOINT")
        .unwrap();
    prometheus.wait_value(writes, |n| n > before);
    // 20,000 rows of 200 bytes reached the mount (and its WAL) as at least 4 MB.
    prometheus.wait_value(bytes, |n| n >= bytes_before + 4e6);
    let latency =
        r#"sum(pgcmk_cryptfs_request_duration_seconds_count{server="writes",op="write"})"#;
    prometheus.wait_value(latency, |n| n > 0.0);
    // The agent has proved key access within the last interval or so.
    prometheus.wait_value(
        r#"pgcmk_control_seconds_since_last_unwrap{server="writes"}"#,
        |s| s < (INTERVAL + 10) as f64,
    );
    cp.server(&["delete", "writes", "--yes"]);
}

#[test]
fn a_revoke_shows_up_as_a_transition_a_vault_denial_and_a_pending_alert() {
    let observed = observed();
    let (prometheus, vault, cp) = (
        &observed.prometheus,
        &observed.stack.vault,
        &observed.stack.cp,
    );
    let key = vault.customer_key("revoked");
    let server = Created::from(&cp.create_with("revoked", &key, &versionless(&key.kid)));
    prometheus.wait_value(
        r#"pgcmk_control_server_state{server="revoked",state="Ready"}"#,
        |v| v == 1.0,
    );
    vault.revoke(&key.vault, &key.identity);
    wait_refused(cp, &server, Duration::from_secs(INTERVAL + 10), "revoke");

    prometheus.wait_value(
        r#"pgcmk_control_server_state{server="revoked",state="Inaccessible"}"#,
        |v| v == 1.0,
    );
    prometheus.wait_value(
        r#"sum(pgcmk_control_state_transitions_total{from="Ready",to="Inaccessible"})"#,
        |n| n >= 1.0,
    );
    prometheus.wait_value(
        r#"sum(pgcmk_vault_denials_total{operation="KeyUnwrap",reason="ForbiddenByPolicy"})"#,
        |n| n >= 1.0,
    );
    prometheus.wait_value(
        r#"sum(pgcmk_agent_key_checks_total{server="revoked",outcome="denied"})"#,
        |n| n >= 1.0,
    );
    for alert in ["PgcmkServerInaccessible", "PgcmkKeyCheckFailing"] {
        prometheus.wait_value(
            &format!(r#"count(ALERTS{{alertname="{alert}",server="revoked"}})"#),
            |n| n >= 1.0,
        );
    }

    vault.grant(&key.vault, &key.identity, &["get", "wrapKey", "unwrapKey"]);
    wait_for("Ready after the grant", Duration::from_secs(60), || {
        cp.state("revoked").0 == "Ready"
    });
    // Back through Provisioning (unwrapping, mounting, starting PostgreSQL) to Ready.
    prometheus.wait_value(
        r#"sum(pgcmk_control_state_transitions_total{from="Inaccessible"})"#,
        |n| n >= 1.0,
    );
    prometheus.wait_value(
        r#"pgcmk_control_server_state{server="revoked",state="Ready"}"#,
        |v| v == 1.0,
    );
    cp.server(&["delete", "revoked", "--yes"]);
}

/// The host administrator who scrapes sees counts, not who holds which key: no
/// identity, vault or key name and no identity's ids are in any label.
#[test]
fn metrics_name_no_identity_vault_or_key() {
    let observed = observed();
    let vault = &observed.stack.vault;
    let key = vault.customer_key("discreet");
    vault.revoke(&key.vault, &key.identity);
    let text = scrape(&observed.vault_metrics) + &scrape(&observed.control_metrics);
    assert!(text.contains("pgcmk_vault_requests_total"), "{text}");
    for name in [
        key.identity.name.as_str(),
        key.identity.client_id.as_str(),
        key.vault.as_str(),
        key.key.as_str(),
        version_of(&key.kid),
        "platform-mi",
        "platform-key",
    ] {
        assert!(!text.contains(name), "'{name}' is in the metrics:\n{text}");
    }
}

#[test]
fn a_metrics_listener_off_loopback_is_refused_with_what_to_do() {
    let root = scratch();
    let out = Command::new(pgcmk())
        .args(["vault", "serve", "--data-dir"])
        .arg(root.path().join("vault"))
        .args(["--metrics-listen", "0.0.0.0:9480"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("127.0.0.1"),
        "{stderr}"
    );
    assert!(!root.path().join("vault").exists(), "nothing is created");
}

#[test]
fn the_documented_alert_rules_pass_promtool() {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(alert_rules())
        .output()
        .expect("promtool (Debian package prometheus; scripts/setup installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
