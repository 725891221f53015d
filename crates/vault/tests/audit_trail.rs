//! The audit trail records every request and detects any edit, deletion, insertion
//! or reordering of its entries, naming the first bad one.

mod support;

use pgcmk_vault::audit::StoredEntry;
use pgcmk_vault::storage::AUDIT;
use redb::ReadableTable;
use reqwest::Method;
use serde_json::json;
use support::Vault;

/// Applies `change` to the raw audit table while the service is stopped, checks that
/// `audit verify` reports `expected` (a substring), then puts the original database back.
fn tamper(v: &mut Vault, expected: &str, change: impl FnOnce(&mut redb::Table<u64, &[u8]>)) {
    v.stop();
    let db_path = v.data_dir().join("vault.redb");
    let pristine = v.dir.path().join("pristine.redb");
    std::fs::copy(&db_path, &pristine).unwrap();
    {
        let db = redb::Database::open(&db_path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(AUDIT).unwrap();
            change(&mut table);
        }
        txn.commit().unwrap();
    }
    v.restart();
    let problem = v.audit_verify().expect_err("tampering must be detected");
    assert!(
        problem.contains(expected),
        "expected '{expected}' in: {problem}"
    );
    // The CLI exits non-zero and names the entry.
    let out = std::process::Command::new(support::pgcmk_binary())
        .args(["audit", "verify"])
        .env("PGCMK_VAULT_SERVICE_DIR", v.data_dir())
        .env_remove("PGCMK_CREDENTIALS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(expected));
    v.stop();
    std::fs::copy(&pristine, &db_path).unwrap();
    v.restart();
    assert!(v.audit_verify().is_ok());
}

fn read(table: &redb::Table<u64, &[u8]>, seq: u64) -> StoredEntry {
    serde_json::from_slice(table.get(seq).unwrap().unwrap().value()).unwrap()
}

fn write(table: &mut redb::Table<u64, &[u8]>, seq: u64, e: &StoredEntry) {
    table
        .insert(seq, serde_json::to_vec(e).unwrap().as_slice())
        .unwrap();
}

#[test]
fn every_request_is_recorded_and_tampering_is_named() {
    let mut v = Vault::start();
    let url = v.vault("audited", false);
    let t = v.admin_token(&url);
    let kid = v.create_key(&url, &t, "k", 2048);
    let version = kid.rsplit('/').next().unwrap().to_string();
    let wrap = v.akv(
        Method::POST,
        &kid,
        "/wrapkey",
        &t,
        Some(json!({ "alg": "RSA-OAEP-256", "value": support::b64(&[1; 32]) })),
    );
    assert_eq!(wrap.status, 200);
    let _denied = v.raw(
        Method::GET,
        &format!("{url}/keys?api-version=7.5"),
        None,
        None,
    );

    let wraps = v.audit("operation=KeyWrap&vault=audited&key=k&result=allowed");
    assert_eq!(wraps.len(), 1);
    let e = &wraps[0]["entry"];
    assert_eq!(e["version"], version);
    assert_eq!(e["caller_name"], "admin");
    assert_eq!(e["status"], 200);
    assert!(e["request_id"].as_str().unwrap().len() == 36);
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
    let challenges = v.audit("operation=KeyList&result=denied&include_challenges=true");
    assert_eq!(challenges[0]["entry"]["caller"], "anonymous");
    assert_eq!(challenges[0]["entry"]["challenge"], true);
    assert!(
        v.audit("operation=VaultCreate").len() == 1
            && v.audit("operation=ClientCredentialsToken").len() >= 2
    );
    let later = v.audit("since=2999-01-01T00:00:00Z");
    assert!(later.is_empty());
    assert!(v
        .admin
        .call(Method::GET, "/admin/audit?since=yesterday", None)
        .is_err());
    assert!(v
        .admin
        .call(Method::GET, "/admin/audit?include_challenges=maybe", None)
        .is_err());
    assert!(v.audit_verify().unwrap() >= 6);

    tamper(&mut v, "entry 3 was edited", |t| {
        let mut e = read(t, 3);
        e.entry.status = 200;
        e.entry.caller = "someone-else".into();
        write(t, 3, &e);
    });
    tamper(
        &mut v,
        "entry 4 is preceded by a gap: entries 3..3 were deleted",
        |t| {
            t.remove(3).unwrap();
        },
    );
    tamper(&mut v, "entry 2 claims sequence number 3", |t| {
        let (two, three) = (read(t, 2), read(t, 3));
        write(t, 2, &three);
        write(t, 3, &two);
    });
    tamper(&mut v, "entry 3 was inserted", |t| {
        // An inserted entry: everything after is shifted and renumbered.
        let last = t.last().unwrap().unwrap().0.value();
        for seq in (3..=last).rev() {
            let mut e = read(t, seq);
            e.seq = seq + 1;
            write(t, seq + 1, &e);
        }
        let mut fake = read(t, 2);
        fake.seq = 3;
        write(t, 3, &fake);
    });
    // Entries cut from the end: the restarted service appends after its recorded
    // head, so the cut shows as a gap before the new entries.
    tamper(&mut v, "were deleted", |t| {
        let last = t.last().unwrap().unwrap().0.value();
        t.remove(last).unwrap();
    });
}

#[test]
fn administrative_changes_name_whose_access_changed_and_to_what() {
    let v = Vault::start();
    let mi = v.identity("audited-mi", "managed");
    v.vault("audited-kv", true);
    v.set_policy("audited-kv", "audited-mi", &["get", "wrapKey", "unwrapKey"]);
    v.manage(
        Method::DELETE,
        "/admin/vaults/audited-kv/policies/audited-mi",
        None,
    );
    v.manage(Method::DELETE, "/admin/identities/audited-mi", None);
    let target = format!("audited-mi ({})", mi.object_id);
    for operation in [
        "IdentityCreate",
        "SetPolicy",
        "DeletePolicy",
        "IdentityDelete",
    ] {
        let entries = v.audit(&format!("operation={operation}"));
        let entry = &entries.last().unwrap_or_else(|| panic!("no {operation}"))["entry"];
        assert_eq!(entry["target"], json!(target), "{operation}: {entry}");
    }
    let set = &v.audit("operation=SetPolicy").last().unwrap()["entry"].clone();
    let mut granted: Vec<&str> = set["permissions"]
        .as_array()
        .unwrap_or_else(|| panic!("no permissions: {set}"))
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    granted.sort_unstable();
    assert_eq!(granted, ["get", "unwrapKey", "wrapKey"], "{set}");
    v.audit_verify()
        .expect("the chain verifies with the new fields");
}
