//! Key management through `KeyClient`: create, get, list, update, rotate, rotation
//! policy, delete/recover/purge, backup/restore, import, and what the vault refuses.

use std::collections::HashMap;

use azure_security_keyvault_keys::models::{
    CreateKeyParameters, ImportKeyParameters, KeyAttributes, KeyClientGetKeyOptions,
    KeyClientListKeyPropertiesOptions, KeyClientListKeyPropertiesVersionsOptions,
    KeyClientUpdateKeyPropertiesOptions, KeyOperation, KeyRotationPolicy, KeyRotationPolicyAction,
    KeyRotationPolicyAttributes, KeyType, LifetimeAction, LifetimeActionTrigger,
    LifetimeActionType, ReleaseParameters, RestoreKeyParameters, SignParameters,
    SignatureAlgorithm, UpdateKeyPropertiesParameters,
};
use azure_security_keyvault_keys::{KeyClient, ResourceExt};
use futures::TryStreamExt;

use crate::{ensure, expect_error, http_error, model, Context, Env, Outcome};

/// Creates an RSA key with every operation this vault offers; its versioned kid.
pub async fn create(client: &KeyClient, name: &str, size: i32) -> Result<String, String> {
    let body = CreateKeyParameters {
        kty: Some(KeyType::Rsa),
        key_size: Some(size),
        key_ops: Some(vec![
            KeyOperation::WrapKey,
            KeyOperation::UnwrapKey,
            KeyOperation::Encrypt,
            KeyOperation::Decrypt,
            KeyOperation::Sign,
            KeyOperation::Verify,
        ]),
        tags: Some(HashMap::from([("purpose".into(), "sdk-test".into())])),
        ..CreateKeyParameters::default()
    };
    let key = model(
        client.create_key(name, body.try_into().context("create body")?, None),
        "create_key",
    )
    .await?;
    key.key
        .and_then(|k| k.kid)
        .ok_or_else(|| format!("create_key {name}: no kid"))
}

fn version_of(kid: &str) -> String {
    kid.rsplit('/').next().unwrap_or_default().to_string()
}

pub async fn create_get_and_list_in_pages(env: &Env) -> Outcome {
    let c = &env.protected;
    let kid = create(c, "sdk-life", 3072).await?;
    create(c, "sdk-life-other", 2048).await?;
    let key = model(c.get_key("sdk-life", None), "get_key").await?;
    let jwk = key.key.clone().unwrap_or_default();
    ensure(jwk.kid.as_deref() == Some(kid.as_str()), || {
        format!("get_key gave {:?}, created {kid}", jwk.kid)
    })?;
    ensure(jwk.kty == Some(KeyType::Rsa), || {
        format!("kty {:?}", jwk.kty)
    })?;
    ensure(jwk.n.as_ref().map(Vec::len) == Some(384), || {
        "a 3072-bit modulus is 384 bytes".into()
    })?;
    ensure(jwk.d.is_none(), || "the private part was returned".into())?;
    let attributes = key.attributes.unwrap_or_default();
    ensure(attributes.enabled == Some(true), || {
        format!("enabled {:?}", attributes.enabled)
    })?;
    ensure(
        key.tags
            .unwrap_or_default()
            .get("purpose")
            .map(String::as_str)
            == Some("sdk-test"),
        || "the tag set at create is missing".into(),
    )?;
    let exact = model(
        c.get_key(
            "sdk-life",
            Some(KeyClientGetKeyOptions {
                key_version: Some(version_of(&kid)),
                ..KeyClientGetKeyOptions::default()
            }),
        ),
        "get_key of a version",
    )
    .await?;
    ensure(exact.key.and_then(|k| k.n) == jwk.n, || {
        "the exact version has another modulus".into()
    })?;
    expect_error(
        c.get_key("sdk-missing", None).await,
        "get_key of no key",
        404,
        "KeyNotFound",
    )?;

    // One key per page: the pager must follow nextLink across pages.
    let options = KeyClientListKeyPropertiesOptions {
        maxresults: Some(1),
        ..KeyClientListKeyPropertiesOptions::default()
    };
    let mut pager = c
        .list_key_properties(Some(options))
        .context("list_key_properties")?;
    let mut names = Vec::new();
    while let Some(item) = pager.try_next().await.context("list_key_properties page")? {
        names.push(item.resource_id().context("listed kid")?.name);
    }
    ensure(
        names.contains(&"sdk-life".to_string()) && names.contains(&"sdk-life-other".to_string()),
        || format!("listed {names:?}"),
    )
}

pub async fn update_properties_disables_a_version(env: &Env) -> Outcome {
    let c = &env.protected;
    let kid = create(c, "sdk-update", 2048).await?;
    let update = |enabled: bool| UpdateKeyPropertiesParameters {
        key_attributes: Some(KeyAttributes {
            enabled: Some(enabled),
            ..KeyAttributes::default()
        }),
        tags: Some(HashMap::from([("state".into(), enabled.to_string())])),
        ..UpdateKeyPropertiesParameters::default()
    };
    let options = || KeyClientUpdateKeyPropertiesOptions {
        key_version: Some(version_of(&kid)),
        ..KeyClientUpdateKeyPropertiesOptions::default()
    };
    let disabled = model(
        c.update_key_properties(
            "sdk-update",
            update(false).try_into().context("body")?,
            Some(options()),
        ),
        "update_key_properties",
    )
    .await?;
    ensure(
        disabled.attributes.and_then(|a| a.enabled) == Some(false),
        || "the version is still enabled".into(),
    )?;
    ensure(
        disabled
            .tags
            .unwrap_or_default()
            .get("state")
            .map(String::as_str)
            == Some("false"),
        || "the tags were not updated".into(),
    )?;
    let sign = SignParameters {
        algorithm: Some(SignatureAlgorithm::Rs256),
        value: Some(vec![7; 32]),
    };
    expect_error(
        c.sign("sdk-update", sign.clone().try_into().context("body")?, None)
            .await,
        "sign with a disabled key",
        403,
        "Forbidden",
    )?;
    c.update_key_properties(
        "sdk-update",
        update(true).try_into().context("body")?,
        Some(options()),
    )
    .await
    .context("enabling again")?;
    c.sign("sdk-update", sign.try_into().context("body")?, None)
        .await
        .context("sign once enabled again")?;
    Ok(())
}

pub async fn rotate_adds_a_version_listed_with_the_others(env: &Env) -> Outcome {
    let c = &env.protected;
    let first = create(c, "sdk-rotate", 2048).await?;
    let rotated = model(c.rotate_key("sdk-rotate", None), "rotate_key").await?;
    let second = rotated.key.and_then(|k| k.kid).unwrap_or_default();
    ensure(
        second.starts_with(first.trim_end_matches(&version_of(&first))) && second != first,
        || format!("rotation gave {second}, first was {first}"),
    )?;
    let mut pager = c
        .list_key_properties_versions(
            "sdk-rotate",
            Some(KeyClientListKeyPropertiesVersionsOptions::default()),
        )
        .context("list_key_properties_versions")?;
    let mut kids = Vec::new();
    while let Some(item) = pager.try_next().await.context("versions page")? {
        kids.push(item.kid.unwrap_or_default());
    }
    kids.sort();
    let mut expected = vec![first, second];
    expected.sort();
    ensure(kids == expected, || {
        format!("versions {kids:?}, expected {expected:?}")
    })
}

pub async fn rotation_policy_reads_back_as_set(env: &Env) -> Outcome {
    let c = &env.protected;
    create(c, "sdk-policy", 2048).await?;
    let default = model(
        c.get_key_rotation_policy("sdk-policy", None),
        "get_key_rotation_policy",
    )
    .await?;
    let kinds = |p: &KeyRotationPolicy| -> Vec<Option<KeyRotationPolicyAction>> {
        p.lifetime_actions
            .iter()
            .flatten()
            .map(|a| a.action.as_ref().and_then(|t| t.type_prop))
            .collect()
    };
    ensure(
        kinds(&default) == vec![Some(KeyRotationPolicyAction::Notify)],
        || format!("default policy actions {:?}", kinds(&default)),
    )?;
    let policy = KeyRotationPolicy {
        lifetime_actions: Some(vec![LifetimeAction {
            action: Some(LifetimeActionType {
                type_prop: Some(KeyRotationPolicyAction::Rotate),
            }),
            trigger: Some(LifetimeActionTrigger {
                time_after_create: Some("P90D".into()),
                ..LifetimeActionTrigger::default()
            }),
        }]),
        attributes: Some(KeyRotationPolicyAttributes {
            expiry_time: Some("P1Y".into()),
            ..KeyRotationPolicyAttributes::default()
        }),
        ..KeyRotationPolicy::default()
    };
    c.update_key_rotation_policy("sdk-policy", policy.try_into().context("body")?, None)
        .await
        .context("update_key_rotation_policy")?;
    let read = model(
        c.get_key_rotation_policy("sdk-policy", None),
        "get_key_rotation_policy after set",
    )
    .await?;
    let trigger = read
        .lifetime_actions
        .iter()
        .flatten()
        .filter_map(|a| a.trigger.as_ref()?.time_after_create.clone())
        .collect::<Vec<_>>();
    ensure(
        kinds(&read) == vec![Some(KeyRotationPolicyAction::Rotate)] && trigger == ["P90D"],
        || format!("read back {:?} after {trigger:?}", kinds(&read)),
    )?;
    let expiry = read.attributes.and_then(|a| a.expiry_time);
    ensure(expiry.as_deref() == Some("P1Y"), || {
        format!("expiry {expiry:?}")
    })
}

pub async fn delete_get_deleted_list_deleted_and_recover(env: &Env) -> Outcome {
    let c = &env.protected;
    let kid = create(c, "sdk-recover", 2048).await?;
    let deleted = model(c.delete_key("sdk-recover", None), "delete_key").await?;
    ensure(
        deleted
            .recovery_id
            .as_deref()
            .is_some_and(|r| r.ends_with("/deletedkeys/sdk-recover")),
        || format!("recovery id {:?}", deleted.recovery_id),
    )?;
    ensure(
        matches!((deleted.deleted_date, deleted.scheduled_purge_date), (Some(d), Some(p)) if p > d),
        || "the deleted key has no scheduled purge date after its deletion".into(),
    )?;
    expect_error(
        c.get_key("sdk-recover", None).await,
        "get_key of a deleted key",
        404,
        "KeyNotFound",
    )?;
    let got = model(c.get_deleted_key("sdk-recover", None), "get_deleted_key").await?;
    ensure(
        got.key.and_then(|k| k.kid).as_deref() == Some(kid.as_str()),
        || "get_deleted_key names another version".into(),
    )?;
    let mut pager = c
        .list_deleted_key_properties(None)
        .context("list_deleted_key_properties")?;
    let mut names = Vec::new();
    while let Some(item) = pager.try_next().await.context("deleted page")? {
        names.push(item.resource_id().context("deleted kid")?.name);
    }
    ensure(names.contains(&"sdk-recover".to_string()), || {
        format!("deleted list {names:?}")
    })?;
    c.recover_deleted_key("sdk-recover", None)
        .await
        .context("recover_deleted_key")?;
    let back = model(c.get_key("sdk-recover", None), "get_key after recovery").await?;
    ensure(back.key.and_then(|k| k.kid) == Some(kid), || {
        "recovered another version".into()
    })
}

pub async fn purge_is_refused_under_purge_protection_as_forbidden(env: &Env) -> Outcome {
    let c = &env.protected;
    create(c, "sdk-protected", 2048).await?;
    c.delete_key("sdk-protected", None)
        .await
        .context("delete_key")?;
    // Its message once carried escaped quotes, which made the SDK report code "403".
    expect_error(
        c.purge_deleted_key("sdk-protected", None).await,
        "purge under purge protection",
        403,
        "Forbidden",
    )?;
    c.get_deleted_key("sdk-protected", None)
        .await
        .context("the refused purge must leave the deleted key")?;
    Ok(())
}

pub async fn purge_removes_a_deleted_key(env: &Env) -> Outcome {
    let c = &env.plain;
    create(c, "sdk-purge", 2048).await?;
    c.delete_key("sdk-purge", None)
        .await
        .context("delete_key")?;
    c.purge_deleted_key("sdk-purge", None)
        .await
        .context("purge_deleted_key")?;
    expect_error(
        c.get_deleted_key("sdk-purge", None).await,
        "get_deleted_key after purge",
        404,
        "KeyNotFound",
    )
}

pub async fn backup_restores_into_another_vault(env: &Env) -> Outcome {
    let kid = create(&env.protected, "sdk-backup", 2048).await?;
    let blob = model(env.protected.backup_key("sdk-backup", None), "backup_key")
        .await?
        .value
        .ok_or("backup_key returned no blob")?;
    let restore = RestoreKeyParameters {
        key_backup: Some(blob),
    };
    let restored = model(
        env.plain
            .restore_key(restore.clone().try_into().context("body")?, None),
        "restore_key",
    )
    .await?;
    let restored_kid = restored.key.and_then(|k| k.kid).unwrap_or_default();
    ensure(
        restored_kid.ends_with(&format!("/keys/sdk-backup/{}", version_of(&kid)))
            && restored_kid != kid,
        || format!("restored as {restored_kid} from {kid}"),
    )?;
    expect_error(
        env.plain
            .restore_key(restore.try_into().context("body")?, None)
            .await,
        "restore over an existing key",
        409,
        "Conflict",
    )
}

pub async fn import_keeps_the_private_key_usable(env: &Env) -> Outcome {
    let c = &env.protected;
    let body = ImportKeyParameters {
        key: Some(env.import_jwk.clone()),
        tags: Some(HashMap::from([("source".into(), "byok".into())])),
        ..ImportKeyParameters::default()
    };
    let imported = model(
        c.import_key("sdk-import", body.try_into().context("body")?, None),
        "import_key",
    )
    .await?;
    let jwk = imported.key.unwrap_or_default();
    ensure(jwk.n == env.import_jwk.n && jwk.d.is_none(), || {
        "the imported key has another modulus, or its private part came back".into()
    })?;
    // The vault signs with the imported private key: the local public key verifies it.
    let digest = crate::crypto_checks::sha256(b"imported");
    let signed = model(
        c.sign(
            "sdk-import",
            SignParameters {
                algorithm: Some(SignatureAlgorithm::Rs256),
                value: Some(digest),
            }
            .try_into()
            .context("body")?,
            None,
        ),
        "sign with the imported key",
    )
    .await?;
    crate::crypto_checks::verify_locally(
        &env.import_jwk,
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        b"imported",
        &signed.result.unwrap_or_default(),
    )
}

/// Key attestation is a Managed HSM feature and release needs an exportable key,
/// which this vault never makes: both are refused, saying so.
pub async fn attestation_and_release_are_refused(env: &Env) -> Outcome {
    let c = &env.protected;
    create(c, "sdk-release", 2048).await?;
    let refused = |result: Result<(), azure_core::Error>, what: &str| match result {
        Ok(()) => Err(format!("{what}: succeeded, expected 404 NotFound")),
        Err(e) => ensure(
            http_error(&e) == Some((404, Some("NotFound".into())))
                && e.to_string().contains("is not offered by this vault"),
            || format!("{what}: expected 404 NotFound saying it is not offered, got {e}"),
        ),
    };
    let attestation = c.get_key_attestation("sdk-release", None).await;
    refused(attestation.map(drop), "get_key_attestation")?;
    let release = ReleaseParameters {
        target_attestation_token: Some("not-an-attestation".into()),
        ..ReleaseParameters::default()
    };
    let released = c
        .release("sdk-release", release.try_into().context("body")?, None)
        .await;
    refused(released.map(drop), "release")
}
