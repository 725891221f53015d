//! A highly available server's keys in etcd: Patroni keeps its cluster under
//! `/service/SCOPE/` (its default namespace; the scope is the server's id). When
//! the server is a single one again they are removed, so that nothing of the old
//! cluster (its system identifier, its last known position, its leader) is taken
//! for the truth if the server is made highly available once more.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Serialize;

use crate::Error;

/// Patroni's default namespace.
const NAMESPACE: &str = "/service/";

/// etcd v3's `DeleteRange` through its JSON gateway (keys in base64).
#[derive(Serialize)]
struct DeleteRange {
    key: String,
    range_end: String,
}

/// The keys of cluster `scope`: `[start, end)`, every key with its prefix.
fn cluster_range(scope: &str) -> (String, String) {
    let start = format!("{NAMESPACE}{scope}/");
    // The prefix's last byte ('/') plus one ('0') ends the range.
    let end = format!("{NAMESPACE}{scope}0");
    (start, end)
}

/// Removes every key of Patroni cluster `scope` from the etcd cluster at
/// `endpoints` through `client` (HTTPS with the control plane's client
/// certificate, [`crate::etcd_tls`]), asking each endpoint in turn until one
/// answers.
pub(super) fn forget_cluster(
    client: &reqwest::blocking::Client,
    endpoints: &[String],
    scope: &str,
) -> Result<(), Error> {
    let (start, end) = cluster_range(scope);
    let request = DeleteRange {
        key: B64.encode(start),
        range_end: B64.encode(end),
    };
    let mut failures = Vec::new();
    for endpoint in endpoints {
        let url = format!("{}/v3/kv/deleterange", endpoint.trim_end_matches('/'));
        match client.post(&url).json(&request).send() {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => failures.push(format!("{endpoint} answered {}", answer.status())),
            Err(e) => failures.push(format!("{endpoint}: {e}")),
        }
    }
    Err(Error::Unreachable(format!(
        "removing the keys of cluster {scope} from etcd failed ({}); retry when etcd answers",
        failures.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_holds_the_cluster_and_no_other() {
        let (start, end) = cluster_range("abc");
        let inside = |key: &str| key >= start.as_str() && key < end.as_str();
        assert!(inside("/service/abc/initialize"));
        assert!(inside("/service/abc/members/n-node-1"));
        assert!(!inside("/service/abcd/initialize"));
        assert!(!inside("/service/ab/initialize"));
        assert!(!inside("/service/abc"));
    }
}
