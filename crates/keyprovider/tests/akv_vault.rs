//! The AKV REST client and [`AkvKek`] against a real `pgcmk vault serve`, over HTTPS,
//! with tokens from the managed-identity endpoint or the client-credentials grant.

mod support;

use std::collections::BTreeMap;

use pgcmk_crypto::{Dek, SecretBytes};
use pgcmk_keyprovider::akv::AkvKeyReference;
use pgcmk_keyprovider::akv::{
    AkvClient, AkvKek, ClientOptions, KeyUpdate, LifetimeAction, LifetimeActionKind,
    LifetimeTrigger, NewRsaKey, RotationPolicy, RotationPolicyAttributes, SignatureAlgorithm,
    TokenSource, WrapAlgorithm,
};
use pgcmk_keyprovider::{DeletionProtection, KeyEncryptionKey, KeyError, KeyType, KeyVersionId};
use support::{pgcmk_binary, Identity, VaultService, ALL_KEY_PERMISSIONS};

fn managed_tokens(vault: &VaultService, identity: &Identity) -> TokenSource {
    TokenSource::managed_identity(
        &vault.info.identity_endpoint,
        SecretBytes::new(vault.identity_header(identity).into_bytes()),
        &identity.client_id,
    )
    .unwrap()
}

fn client(vault: &VaultService, url: &str, tokens: TokenSource) -> AkvClient {
    AkvClient::new(
        url,
        tokens,
        &ClientOptions::trusting_only(&vault.info.ca_file),
    )
    .unwrap()
}

/// A vault `name` and a managed identity holding `permissions` on it.
fn setup(
    vault: &VaultService,
    name: &str,
    purge_protection: bool,
    permissions: &[&str],
) -> (AkvClient, Identity) {
    let identity = vault.create_identity(&format!("{name}-mi"));
    let url = vault.create_vault(name, purge_protection);
    vault.set_policy(name, &identity.name, permissions);
    (
        client(vault, &url, managed_tokens(vault, &identity)),
        identity,
    )
}

fn assert_denied(result: Result<impl std::fmt::Debug, KeyError>, says: &str) {
    match result {
        Err(e @ KeyError::Denied { .. }) => {
            assert!(
                e.to_string().to_lowercase().contains(&says.to_lowercase()),
                "{e}"
            )
        }
        other => panic!("expected a denial mentioning '{says}', got {other:?}"),
    }
}

#[test]
fn key_lifecycle_over_https() {
    let vault = VaultService::start(pgcmk_binary(false));
    let (c, _) = setup(&vault, "lifevault", true, &ALL_KEY_PERMISSIONS);

    let mut new = NewRsaKey::new(2048);
    new.tags = BTreeMap::from([("owner".to_string(), "security".to_string())]);
    let v1 = c.create_rsa_key("k1", &new).unwrap();
    let v1_id = v1.version_id().unwrap();
    assert_eq!(v1.size_bits(), Some(2048));
    assert_eq!(v1.tags["owner"], "security");
    assert_eq!(v1_id.vault_url, c.vault_url());
    assert_eq!(c.get_key("k1", None).unwrap().key.kid, v1.key.kid);
    assert_eq!(
        c.get_key("k1", Some(&v1_id.version)).unwrap().key.n,
        v1.key.n
    );
    assert_denied(c.get_key("nosuchkey", None), "404");
    assert!(c
        .list_keys()
        .unwrap()
        .iter()
        .any(|k| k.kid.ends_with("/keys/k1")));

    let updated = c
        .update_key(
            "k1",
            None,
            &KeyUpdate {
                tags: Some(BTreeMap::from([("owner".into(), "dba".into())])),
                key_ops: Some(vec![
                    "wrapKey".into(),
                    "unwrapKey".into(),
                    "sign".into(),
                    "verify".into(),
                ]),
                ..KeyUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(updated.tags["owner"], "dba");
    assert_eq!(updated.key.key_ops.len(), 4);

    let v2 = c.rotate_key("k1").unwrap();
    assert_ne!(v2.key.kid, v1.key.kid);
    assert_eq!(c.get_key("k1", None).unwrap().key.kid, v2.key.kid);
    let versions = c.list_key_versions("k1").unwrap();
    assert_eq!(versions.len(), 2, "{versions:?}");

    let digest = [0x5a; 32];
    for alg in [SignatureAlgorithm::Rs256, SignatureAlgorithm::Ps256] {
        let sig = c.sign("k1", None, alg, &digest).unwrap();
        assert_eq!(sig.kid.to_string(), v2.key.kid);
        assert_eq!(sig.value.len(), 256);
        assert!(c
            .verify("k1", Some(&sig.kid.version), alg, &digest, &sig.value)
            .unwrap());
        assert!(!c
            .verify("k1", Some(&sig.kid.version), alg, &[0x5b; 32], &sig.value)
            .unwrap());
    }
    let err = c
        .sign("k1", None, SignatureAlgorithm::Rs512, &digest)
        .unwrap_err();
    assert!(err.to_string().contains("64-byte digest"), "{err}");

    let policy = RotationPolicy {
        lifetime_actions: vec![LifetimeAction {
            trigger: LifetimeTrigger {
                time_after_create: Some("P30D".into()),
                time_before_expiry: None,
            },
            action: LifetimeActionKind {
                kind: "Rotate".into(),
            },
        }],
        attributes: Some(RotationPolicyAttributes {
            expiry_time: Some("P90D".into()),
            ..RotationPolicyAttributes::default()
        }),
        ..RotationPolicy::default()
    };
    c.set_rotation_policy("k1", &policy).unwrap();
    let read = c.get_rotation_policy("k1").unwrap();
    assert_eq!(read.lifetime_actions, policy.lifetime_actions);
    assert_eq!(
        read.attributes.and_then(|a| a.expiry_time).as_deref(),
        Some("P90D")
    );

    let disable = KeyUpdate {
        enabled: Some(false),
        ..KeyUpdate::default()
    };
    assert_eq!(
        c.update_key("k1", None, &disable)
            .unwrap()
            .attributes
            .enabled,
        Some(false)
    );
    assert_denied(
        c.wrap_key("k1", None, WrapAlgorithm::RsaOaep256, &[1; 32]),
        "disabled",
    );
    let enable = KeyUpdate {
        enabled: Some(true),
        ..KeyUpdate::default()
    };
    c.update_key("k1", None, &enable).unwrap();
    c.wrap_key("k1", None, WrapAlgorithm::RsaOaep256, &[1; 32])
        .unwrap();

    let deleted = c.delete_key("k1").unwrap();
    assert!(deleted
        .deletion
        .recovery_id
        .as_deref()
        .unwrap()
        .ends_with("/deletedkeys/k1"));
    assert!(deleted.deletion.scheduled_purge_date > deleted.deletion.deleted_date);
    assert_denied(c.get_key("k1", None), "404");
    assert_eq!(c.get_deleted_key("k1").unwrap().bundle.key.kid, v2.key.kid);
    assert!(c
        .list_deleted_keys()
        .unwrap()
        .iter()
        .any(|d| d.item.kid.ends_with("/keys/k1")));
    assert_eq!(c.recover_deleted_key("k1").unwrap().key.kid, v2.key.kid);
    c.delete_key("k1").unwrap();
    let refused = c.purge_deleted_key("k1").unwrap_err();
    assert!(
        !refused.is_retryable() && refused.to_string().to_lowercase().contains("purge"),
        "{refused}"
    );
    assert!(
        c.get_deleted_key("k1").is_ok(),
        "purge protection must keep the key"
    );
}

#[test]
fn purge_without_protection_destroys_the_key() {
    let vault = VaultService::start(pgcmk_binary(false));
    let (c, _) = setup(&vault, "plainvault", false, &ALL_KEY_PERMISSIONS);
    c.create_rsa_key("gone", &NewRsaKey::new(2048)).unwrap();
    c.delete_key("gone").unwrap();
    c.purge_deleted_key("gone").unwrap();
    assert_denied(c.get_deleted_key("gone"), "404");
    assert_denied(c.recover_deleted_key("gone"), "404");
}

#[test]
fn kek_follows_rotation_and_unwraps_every_version() {
    let vault = VaultService::start(pgcmk_binary(false));
    let (c, identity) = setup(&vault, "kekvault", true, &ALL_KEY_PERMISSIONS);
    let v1_in_vault = c
        .create_rsa_key("kek", &NewRsaKey::new(3072))
        .unwrap()
        .version_id()
        .unwrap();
    let v1 = KeyVersionId::Azure(v1_in_vault.clone());
    let tokens = managed_tokens(&vault, &identity);
    let options = ClientOptions::trusting_only(&vault.info.ca_file);

    let versionless = AkvKeyReference::parse(&format!("{}/keys/kek", c.vault_url())).unwrap();
    let kek = AkvKek::connect(versionless, tokens.clone(), &options).unwrap();
    let info = kek.info().unwrap();
    assert_eq!(
        (info.current.clone(), info.size_bits, info.enabled),
        (v1.clone(), 3072, true)
    );
    let dek = Dek::generate().unwrap();
    let wrapped_v1 = kek.wrap(&dek).unwrap();
    assert_eq!(wrapped_v1.kek, v1);
    assert_eq!(wrapped_v1.algorithm, "RSA-OAEP-256");
    assert_eq!(wrapped_v1.ciphertext.len(), 384);

    let v2 = KeyVersionId::Azure(c.rotate_key("kek").unwrap().version_id().unwrap());
    assert_eq!(kek.info().unwrap().current, v2);
    let wrapped_v2 = kek.wrap(&dek).unwrap();
    assert_eq!(wrapped_v2.kek, v2);
    for wrapped in [&wrapped_v1, &wrapped_v2] {
        assert_eq!(
            kek.unwrap(wrapped).unwrap().expose_secret(),
            dek.expose_secret()
        );
    }

    let pinned = AkvKeyReference::parse(&v1.to_string()).unwrap();
    let pinned = AkvKek::connect(pinned, tokens, &options).unwrap();
    assert_eq!(pinned.info().unwrap().current, v1);
    assert_eq!(pinned.wrap(&dek).unwrap().kek, v1);

    // Disabling the old version leaves DEKs wrapped by the new one readable.
    c.update_key(
        "kek",
        Some(&v1_in_vault.version),
        &KeyUpdate {
            enabled: Some(false),
            ..KeyUpdate::default()
        },
    )
    .unwrap();
    assert_denied(kek.unwrap(&wrapped_v1), "disabled");
    assert_eq!(
        kek.unwrap(&wrapped_v2).unwrap().expose_secret(),
        dek.expose_secret()
    );

    let mut tampered = wrapped_v2.clone();
    tampered.ciphertext[10] ^= 1;
    assert!(
        kek.unwrap(&tampered).is_err(),
        "a tampered wrapped DEK must not unwrap"
    );
}

#[test]
fn revocation_is_a_denial_and_an_outage_is_transient() {
    let vault = VaultService::start(pgcmk_binary(false));
    let (admin_view, _) = setup(&vault, "revvault", true, &ALL_KEY_PERMISSIONS);
    admin_view
        .create_rsa_key("kek", &NewRsaKey::new(2048))
        .unwrap();
    let wrapped = admin_view
        .wrap_key("kek", None, WrapAlgorithm::RsaOaep256, &[3; 32])
        .unwrap();

    // An identity granted get and wrapKey only cannot unwrap.
    let (limited, limited_id) = {
        let identity = vault.create_identity("wrap-only");
        vault.set_policy("revvault", "wrap-only", &["get", "wrapKey"]);
        (
            client(
                &vault,
                admin_view.vault_url(),
                managed_tokens(&vault, &identity),
            ),
            identity,
        )
    };
    limited
        .wrap_key("kek", None, WrapAlgorithm::RsaOaep256, &[3; 32])
        .unwrap();
    assert_denied(limited.unwrap_key(&wrapped), "403");

    // Its policy removed: even get is refused, with the token it already holds.
    vault.cli(&[
        "keyvault",
        "delete-policy",
        "--name",
        "revvault",
        "--identity",
        &limited_id.name,
    ]);
    assert_denied(limited.get_key("kek", None), "403");

    // A wrong identity header gets no token at all.
    let impostor = TokenSource::managed_identity(
        &vault.info.identity_endpoint,
        SecretBytes::new(b"not-the-header".to_vec()),
        &limited_id.client_id,
    )
    .unwrap();
    let impostor = client(&vault, admin_view.vault_url(), impostor);
    assert!(matches!(
        impostor.get_key("kek", None),
        Err(KeyError::Denied { .. })
    ));

    // The vault gone is an outage, not a revocation.
    let url = admin_view.vault_url().to_string();
    drop(vault);
    let err = admin_view.get_key("kek", None).unwrap_err();
    assert!(err.is_retryable(), "{err} ({url})");
}

#[test]
fn client_credentials_principal_uses_the_token_endpoint() {
    let vault = VaultService::start(pgcmk_binary(false));
    let url = vault.create_vault("ccvault", true);
    let cred = vault.scratch("app.credential");
    let app = vault.cli(&[
        "identity",
        "create",
        "--name",
        "app",
        "--kind",
        "user",
        "--credential-file",
        cred.to_str().unwrap(),
    ]);
    vault.set_policy("ccvault", "app", &["create", "get", "list"]);
    let secret: serde_json::Value = serde_json::from_slice(&std::fs::read(&cred).unwrap()).unwrap();
    let tokens = TokenSource::client_secret(
        &vault.info.token_endpoint,
        app["client_id"].as_str().unwrap(),
        SecretBytes::new(
            secret["client_secret"]
                .as_str()
                .unwrap()
                .as_bytes()
                .to_vec(),
        ),
    )
    .unwrap();
    let c = client(&vault, &url, tokens);
    let created = c.create_rsa_key("app-key", &NewRsaKey::new(4096)).unwrap();
    assert_eq!(created.size_bits(), Some(4096));
    assert_eq!(c.list_keys().unwrap().len(), 1);
    assert_denied(
        c.wrap_key("app-key", None, WrapAlgorithm::RsaOaep256, &[0; 32]),
        "403",
    );

    let wrong = TokenSource::client_secret(
        &vault.info.token_endpoint,
        app["client_id"].as_str().unwrap(),
        SecretBytes::new(b"wrong".to_vec()),
    )
    .unwrap();
    assert!(matches!(
        client(&vault, &url, wrong).list_keys(),
        Err(KeyError::Denied { .. })
    ));
}

/// A managed identity with the grants a server's KEK needs (get, wrapKey, unwrapKey)
/// on a purge-protected vault with a key `kek`, as its security officer sets it up.
fn kek_identity(vault: &VaultService, name: &str) -> (AkvKek, Identity) {
    let (officer, _) = setup(vault, name, true, &ALL_KEY_PERMISSIONS);
    officer
        .create_rsa_key("kek", &NewRsaKey::new(3072))
        .unwrap();
    let identity = vault.create_identity(&format!("{name}-server"));
    vault.set_policy(name, &identity.name, &["get", "wrapKey", "unwrapKey"]);
    let reference = AkvKeyReference::parse(&format!("{}/keys/kek", officer.vault_url())).unwrap();
    let kek = AkvKek::connect(
        reference,
        managed_tokens(vault, &identity),
        &ClientOptions::trusting_only(&vault.info.ca_file),
    )
    .unwrap();
    (kek, identity)
}

#[test]
fn describe_as_the_managed_identity_reports_type_state_protection_and_location() {
    let vault = VaultService::start(pgcmk_binary(false));
    let (kek, _) = kek_identity(&vault, "descvault");
    let d = kek.describe().unwrap();
    assert_eq!(d.key_type, KeyType::Rsa);
    assert!(d.key_type.is_rsa());
    assert_eq!(d.size_bits, Some(3072));
    assert!(d.enabled);
    assert_eq!((d.not_before, d.expires), (None, None));
    assert_eq!(d.current, kek.info().unwrap().current);
    let vault_facts = d.vault.expect("a key vault tells its protections");
    assert_eq!(
        vault_facts.protection,
        DeletionProtection {
            // The test kit's vaults keep deleted keys 7 days (AKV: "customized").
            recovery_level: Some("CustomizedRecoverable".into()),
            recoverable_days: Some(7),
        }
    );
    let p = &vault_facts.protection;
    assert!(p.soft_delete() && p.purge_protection());
    assert_eq!(vault_facts.location.as_deref(), Some("local"));
}

#[test]
fn describe_reports_a_vault_without_purge_protection() {
    let vault = VaultService::start(pgcmk_binary(false));
    let (c, identity) = setup(&vault, "softvault", false, &["get", "create"]);
    c.create_rsa_key("k", &NewRsaKey::new(2048)).unwrap();
    let reference = AkvKeyReference::parse(&format!("{}/keys/k", c.vault_url())).unwrap();
    let kek = AkvKek::connect(
        reference,
        managed_tokens(&vault, &identity),
        &ClientOptions::trusting_only(&vault.info.ca_file),
    )
    .unwrap();
    let d = kek
        .describe()
        .unwrap()
        .vault
        .expect("a key vault tells its protections");
    assert_eq!(
        d.protection.recovery_level.as_deref(),
        Some("CustomizedRecoverable+Purgeable")
    );
    assert!(d.protection.soft_delete() && !d.protection.purge_protection());
    assert_eq!(d.location.as_deref(), Some("local"));
}

/// The managed identity's own token for the vault service's management API.
fn management_token(vault: &VaultService, identity: &Identity) -> String {
    let reply: serde_json::Value = https(vault)
        .get(&vault.info.identity_endpoint)
        .query(&[
            ("api-version", "2019-08-01"),
            ("resource", vault.info.url.as_str()),
            ("client_id", identity.client_id.as_str()),
        ])
        .header("X-IDENTITY-HEADER", vault.identity_header(identity))
        .send()
        .unwrap()
        .json()
        .unwrap();
    reply["access_token"].as_str().unwrap().to_string()
}

fn https(vault: &VaultService) -> reqwest::blocking::Client {
    let pem = std::fs::read(&vault.info.ca_file).unwrap();
    reqwest::blocking::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .build()
        .unwrap()
}

#[test]
fn the_managed_identity_cannot_create_or_delete_vaults_identities_policies_or_keys() {
    let vault = VaultService::start(pgcmk_binary(false));
    let (kek, identity) = kek_identity(&vault, "sodvault");
    let token = management_token(&vault, &identity);
    let http = https(&vault);
    let url = |path: &str| format!("{}{path}", vault.info.url);
    let me = identity.name.as_str();
    let body = serde_json::json!({
        "name": "intruder", "location": "local", "key_permissions": ["all"]
    });
    // Reading its own vault is allowed (that is how describe() learns the location) ...
    let read = http
        .get(url("/admin/vaults/sodvault"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(read.status(), 200);
    // ... changing anything is not.
    for (method, path) in [
        (reqwest::Method::POST, "/admin/vaults".to_string()),
        (reqwest::Method::PATCH, "/admin/vaults/sodvault".into()),
        (reqwest::Method::POST, "/admin/identities".into()),
        (reqwest::Method::DELETE, format!("/admin/identities/{me}")),
        (reqwest::Method::DELETE, "/admin/identities/admin".into()),
        (
            reqwest::Method::PUT,
            format!("/admin/vaults/sodvault/policies/{me}"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/admin/vaults/sodvault/policies/{me}"),
        ),
    ] {
        let answer = http
            .request(method.clone(), url(&path))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(answer.status(), 403, "{method} {path}");
    }
    // Vaults cannot be deleted through the API at all: no route, whoever asks.
    let delete_vault = http
        .delete(url("/admin/vaults/sodvault"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(delete_vault.status(), 404);
    // Keys: the data plane refuses what the identity's policy does not grant.
    assert_denied(
        kek.client().create_rsa_key("more", &NewRsaKey::new(2048)),
        "403",
    );
    assert_denied(kek.client().delete_key("kek"), "403");
    assert!(kek.describe().is_ok(), "the key is still there and usable");
}
