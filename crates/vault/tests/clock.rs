//! Time-based behaviour against an in-process service whose clock the test moves:
//! token expiry, key validity windows, rotation policies (time after creation, time
//! before expiry) and purge dates — none of it waits on the wall clock.

use std::sync::Arc;

use pgcmk_vault::client::{read_credential, AdminClient, ServiceDir};
use pgcmk_vault::clock::ManualClock;
use pgcmk_vault::service::{ServeOptions, Service};
use reqwest::Method;
use serde_json::{json, Value};

const DAY: i64 = 86_400;

/// A vault service running in this process on a [`ManualClock`].
struct ClockedVault {
    runtime: tokio::runtime::Runtime,
    service: Arc<Service>,
    clock: Arc<ManualClock>,
    admin: AdminClient,
    data: std::path::PathBuf,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: u16,
    body: Value,
}

impl ClockedVault {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new());
        let mut options = ServeOptions::new(dir.path().join("data"));
        options.clock = clock.clone();
        // Background passes never run during a test; it calls `maintenance()` itself.
        options.maintenance_interval = std::time::Duration::from_secs(3600);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let service = runtime
            .block_on(pgcmk_vault::service::start(options, stopped))
            .unwrap();
        let data = dir.path().join("data");
        Self {
            runtime,
            service,
            clock,
            admin: admin_client(&data),
            data,
            _stop: stop,
            _dir: dir,
        }
    }

    /// Moves the service's clock forward. The admin client is renewed: it caches its
    /// tokens by the wall clock, which did not move.
    fn advance(&mut self, seconds: i64) {
        self.clock.advance(seconds);
        self.admin = admin_client(&self.data);
    }

    /// The admin's token for a vault, valid now by the service's clock.
    fn token(&self, url: &str) -> String {
        self.admin.token_for(url).unwrap()
    }

    /// A vault (7 days' soft-delete retention) and the admin's token for it.
    fn vault(&self, name: &str, purge_protection: bool) -> (String, String) {
        let v = self
            .admin
            .call(
                Method::POST,
                "/admin/vaults",
                Some(&json!({ "name": name, "location": "local", "retention_days": 7, "purge_protection": purge_protection })),
            )
            .unwrap();
        let url = v["url"].as_str().unwrap().to_string();
        let token = self.admin.token_for(&url).unwrap();
        (url, token)
    }

    fn akv(&self, method: Method, url: &str, token: &str, body: Option<Value>) -> Answer {
        let sep = if url.contains('?') { '&' } else { '?' };
        let mut req = self
            .admin
            .http()
            .request(method, format!("{url}{sep}api-version=7.5"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        Answer {
            status,
            body: resp.json().unwrap_or(Value::Null),
        }
    }

    fn create_key(&self, url: &str, token: &str, name: &str) -> Value {
        let a = self.akv(
            Method::POST,
            &format!("{url}/keys/{name}/create"),
            token,
            Some(json!({ "kty": "RSA", "key_size": 2048 })),
        );
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    }

    fn versions(&self, url: &str, name: &str) -> usize {
        let token = &self.token(url);
        let a = self.akv(
            Method::GET,
            &format!("{url}/keys/{name}/versions"),
            token,
            None,
        );
        a.body["value"].as_array().unwrap().len()
    }

    /// One pass of the background maintenance, now by the test's clock.
    fn maintenance(&self) {
        self.runtime
            .block_on(pgcmk_vault::maintenance::run_once(&self.service));
    }

    fn audit(&self, query: &str) -> Vec<Value> {
        let v = self
            .admin
            .call(Method::GET, &format!("/admin/audit?{query}"), None)
            .unwrap();
        v["value"].as_array().unwrap().clone()
    }
}

fn admin_client(data: &std::path::Path) -> AdminClient {
    let credential = read_credential(&data.join("admin.credential")).unwrap();
    AdminClient::new(ServiceDir::open(data).unwrap(), credential).unwrap()
}

#[test]
fn a_token_stops_working_when_the_clock_passes_its_expiry() {
    let mut v = ClockedVault::start();
    let (url, token) = v.vault("tokens", false);
    assert_eq!(
        v.akv(Method::GET, &format!("{url}/keys"), &token, None)
            .status,
        200
    );
    v.advance(pgcmk_vault::token::DEFAULT_LIFETIME_SECS - 1);
    assert_eq!(
        v.akv(Method::GET, &format!("{url}/keys"), &token, None)
            .status,
        200
    );
    v.advance(1);
    let expired = v.akv(Method::GET, &format!("{url}/keys"), &token, None);
    assert_eq!(expired.status, 401, "{}", expired.body);
    assert!(
        expired.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{}",
        expired.body
    );
}

#[test]
fn a_key_is_usable_only_inside_its_validity_window() {
    let mut v = ClockedVault::start();
    let (url, token) = v.vault("window", false);
    v.create_key(&url, &token, "k");
    let now = v.service.now();
    let window = json!({ "attributes": { "nbf": now + DAY, "exp": now + 2 * DAY } });
    assert_eq!(
        v.akv(
            Method::PATCH,
            &format!("{url}/keys/k"),
            &token,
            Some(window)
        )
        .status,
        200
    );
    let wrap = |v: &ClockedVault| {
        v.akv(
            Method::POST,
            &format!("{url}/keys/k/wrapkey"),
            &v.token(&url),
            Some(json!({ "alg": "RSA-OAEP-256", "value": "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA" })),
        )
    };
    let inner = |a: &Answer| a.body["error"]["innererror"]["code"].clone();
    assert_eq!(inner(&wrap(&v)), "KeyNotYetValid");
    v.advance(DAY);
    assert_eq!(wrap(&v).status, 200);
    v.advance(DAY);
    assert_eq!(inner(&wrap(&v)), "KeyExpired");
}

#[test]
fn a_rotate_action_fires_when_the_time_after_creation_has_passed() {
    let mut v = ClockedVault::start();
    let (url, token) = v.vault("rotation", false);
    v.create_key(&url, &token, "k");
    let policy = json!({
        "lifetimeActions": [{ "trigger": { "timeAfterCreate": "P30D" }, "action": { "type": "Rotate" } }],
        "attributes": { "expiryTime": "P90D" }
    });
    let set = v.akv(
        Method::PUT,
        &format!("{url}/keys/k/rotationpolicy"),
        &token,
        Some(policy),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    v.advance(30 * DAY - 1);
    v.maintenance();
    assert_eq!(v.versions(&url, "k"), 1, "not due yet");
    v.advance(1);
    v.maintenance();
    let token = v.token(&url);
    assert_eq!(v.versions(&url, "k"), 2, "due: rotated");
    let current = v.akv(Method::GET, &format!("{url}/keys/k"), &token, None);
    let attributes = &current.body["attributes"];
    assert_eq!(attributes["created"].as_i64(), Some(v.service.now()));
    assert_eq!(
        attributes["exp"].as_i64().unwrap() - attributes["created"].as_i64().unwrap(),
        90 * DAY,
        "new versions get the policy's expiry"
    );
    let auto = v.audit("operation=KeyRotate&principal=system&vault=rotation");
    assert_eq!(auto.len(), 1, "{auto:?}");
    assert_eq!(auto[0]["entry"]["key"], "k");
    v.maintenance();
    assert_eq!(v.versions(&url, "k"), 2, "the new version is not due");
}

#[test]
fn a_notify_action_fires_once_inside_the_window_before_expiry() {
    let mut v = ClockedVault::start();
    let (url, token) = v.vault("notify", false);
    v.create_key(&url, &token, "n");
    let exp = v.service.now() + 10 * DAY;
    let u = v.akv(
        Method::PATCH,
        &format!("{url}/keys/n"),
        &token,
        Some(json!({ "attributes": { "exp": exp } })),
    );
    assert_eq!(u.status, 200);
    let notify = json!({
        "lifetimeActions": [{ "trigger": { "timeBeforeExpiry": "P7D" }, "action": { "type": "Notify" } }],
        "attributes": { "expiryTime": "P30D" }
    });
    assert_eq!(
        v.akv(
            Method::PUT,
            &format!("{url}/keys/n/rotationpolicy"),
            &token,
            Some(notify)
        )
        .status,
        200
    );
    v.advance(3 * DAY - 1);
    v.maintenance();
    assert!(
        v.audit("operation=KeyNearExpiry&key=n").is_empty(),
        "not yet in the window"
    );
    v.advance(1);
    v.maintenance();
    v.maintenance();
    assert_eq!(
        v.audit("operation=KeyNearExpiry&key=n").len(),
        1,
        "once per version"
    );
    assert_eq!(v.versions(&url, "n"), 1, "Notify does not rotate");
}

#[test]
fn soft_deleted_keys_are_purged_when_their_retention_ends_and_protection_lifts_then() {
    let mut v = ClockedVault::start();
    let (url, token) = v.vault("retention", true);
    v.create_key(&url, &token, "kept");
    v.create_key(&url, &token, "gone");
    for name in ["kept", "gone"] {
        assert_eq!(
            v.akv(Method::DELETE, &format!("{url}/keys/{name}"), &token, None)
                .status,
            200
        );
    }
    let purge = |v: &ClockedVault| {
        v.akv(
            Method::DELETE,
            &format!("{url}/deletedkeys/kept"),
            &v.token(&url),
            None,
        )
    };
    let refused = purge(&v);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(
        refused.body["error"]["innererror"]["code"],
        "PurgeProtected"
    );
    v.advance(7 * DAY);
    let token = v.token(&url);
    assert_eq!(
        purge(&v).status,
        204,
        "protection ends at the scheduled purge date"
    );
    v.maintenance();
    let gone = v.akv(
        Method::GET,
        &format!("{url}/deletedkeys/gone"),
        &token,
        None,
    );
    assert_eq!(
        gone.status, 404,
        "purged by the background pass: {}",
        gone.body
    );
    assert_eq!(
        v.audit("operation=KeyPurge&principal=system&key=gone")
            .len(),
        1
    );
}
