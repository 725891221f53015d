//! The console's pages: the vaults — settings, keys with their state and rotation
//! policy, access policies ("who can unwrap what") — a key's versions, and the
//! audit trail with the result of verifying its chain.

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use pgcmk_akv_model::{KeyBundle, KeyItem, ListPage, RotationPolicy};
use time::OffsetDateTime;

use pgcmk_console::{action_button, csrf_field, esc, path_segment, CsrfToken, Page};

use super::api::{Caller, Refusal, Target};
use super::views::{ChainCheck, IdentityView, Listing, VaultView};
use super::{Console, Officer, Shared, BASE, NAME};
use crate::audit::StoredEntry;
use crate::policy::Permission;

/// Audit entries shown, newest first.
const AUDIT_SHOWN: usize = 200;

/// Permissions a new access policy offers checked: what a server's identity needs.
const SERVER_PERMISSIONS: &[&str] = &["get", "wrapKey", "unwrapKey"];

const NAV: &[(&str, &str)] = &[("", "Vaults"), ("/audit", "Audit trail")];

fn page<'a>(officer: &'a Officer, title: &'a str) -> Page<'a> {
    Page {
        console: NAME,
        base: BASE,
        title,
        nav: NAV,
        signed_in: Some(officer.signed_in()),
        refresh_secs: None,
    }
}

/// A page saying what failed, with the API's status.
pub(super) fn failure(refusal: &Refusal) -> Response {
    Page::failure(NAME, BASE, refusal.status, &refusal.message)
}

fn when(unix: Option<i64>) -> String {
    unix.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .unwrap_or_else(|| "–".into())
}

fn enabled_badge(enabled: Option<bool>) -> &'static str {
    match enabled {
        Some(false) => "<span class='badge bad'>Disabled</span>",
        _ => "<span class='badge ok'>Enabled</span>",
    }
}

/// The last path segment of a key id (`…/keys/{name}` or `…/keys/{name}/{version}`).
fn last_segment(kid: &str) -> &str {
    kid.rsplit('/').next().unwrap_or(kid)
}

/// A rotation policy in words.
fn rotation_in_words(policy: &RotationPolicy) -> String {
    let mut parts: Vec<String> = policy
        .lifetime_actions
        .iter()
        .map(|a| {
            let kind = a.action.kind.to_lowercase();
            match (&a.trigger.time_after_create, &a.trigger.time_before_expiry) {
                (Some(after), _) => format!("{kind} {after} after creation"),
                (None, Some(before)) => format!("{kind} {before} before expiry"),
                (None, None) => kind,
            }
        })
        .collect();
    if let Some(expiry) = policy
        .attributes
        .as_ref()
        .and_then(|a| a.expiry_time.as_ref())
    {
        parts.push(format!("new versions expire after {expiry}"));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("; ")
    }
}

/// One key as the vault page lists it.
struct KeyRow {
    name: String,
    current: Result<KeyBundle, Refusal>,
    rotation: Result<RotationPolicy, Refusal>,
}

async fn keys_of(c: &Console, caller: &Caller, vault: &str) -> Result<Vec<KeyRow>, Refusal> {
    let listed: ListPage<KeyItem> = c.api.get(caller, Target::Vault(vault), "/keys").await?;
    let mut rows = Vec::new();
    for item in listed.value {
        let name = last_segment(&item.kid).to_string();
        let at = format!("/keys/{}", path_segment(&name));
        rows.push(KeyRow {
            current: c
                .api
                .get(caller, Target::Vault(vault), &format!("{at}/"))
                .await,
            rotation: c
                .api
                .get(
                    caller,
                    Target::Vault(vault),
                    &format!("{at}/rotationpolicy"),
                )
                .await,
            name,
        });
    }
    Ok(rows)
}

/// `GET /console`: every vault with its settings, keys and access policies.
pub(super) async fn vaults(State(c): Shared, officer: Officer) -> Response {
    let caller = &officer.caller;
    let vaults: Listing<VaultView> = match c.api.get(caller, Target::Manage, "/admin/vaults").await
    {
        Ok(v) => v,
        Err(e) => return failure(&e),
    };
    let identities: Listing<IdentityView> =
        match c.api.get(caller, Target::Manage, "/admin/identities").await {
            Ok(v) => v,
            Err(e) => return failure(&e),
        };
    let csrf = &officer.visit.session.csrf;
    let mut main = String::new();
    if vaults.value.is_empty() {
        main.push_str("<section><p>No vaults yet: create one with <code>pgcmk keyvault create</code>.</p></section>");
    }
    for v in &vaults.value {
        let keys = keys_of(&c, caller, &v.name).await;
        vault_section(&mut main, v, keys, &identities.value, csrf);
    }
    page(&officer, "Vaults").render(StatusCode::OK, &main)
}

fn vault_section(
    main: &mut String,
    v: &VaultView,
    keys: Result<Vec<KeyRow>, Refusal>,
    identities: &[IdentityView],
    csrf: &CsrfToken,
) {
    let at = format!("{BASE}/vaults/{}", path_segment(&v.name));
    let id = format!("vault-{}", esc(&v.name));
    let _ = write!(
        main,
        "<section aria-labelledby='{id}' data-vault='{0}'><h2 id='{id}'>Vault {0}</h2><dl class='facts'>\
         <dt>Location</dt><dd>{1}</dd><dt>URL</dt><dd><code>{2}</code></dd>\
         <dt>Soft delete</dt><dd>deleted keys kept {3} days</dd><dt>Purge protection</dt><dd>{4}</dd>\
         <dt>Administrators</dt><dd>{5}</dd></dl>",
        esc(&v.name),
        esc(&v.location),
        esc(&v.url),
        v.retention_days,
        if v.purge_protection {
            "<span class='badge ok'>On</span> (no key can be purged before its retention ends)"
        } else {
            "<span class='badge warn'>Off</span> (a deleted key can be purged at once)"
        },
        esc(&v.administrators.join(", "))
    );
    let _ = write!(main, "<h3>Keys</h3>");
    match keys {
        Err(e) => {
            let _ = write!(main, "<p class='notice failed'>{}</p>", esc(&e.message));
        }
        Ok(keys) => {
            main.push_str(
                "<table><thead><tr><th scope='col'>Key</th><th scope='col'>State</th>\
                 <th scope='col'>Current version</th><th scope='col'>Rotation policy</th>\
                 <th scope='col'>Actions</th></tr></thead><tbody>",
            );
            for k in &keys {
                let key_at = format!("{at}/keys/{}", path_segment(&k.name));
                let (state, version, enabled) = match &k.current {
                    Ok(b) => (
                        enabled_badge(b.attributes.enabled).to_string(),
                        format!("<code>{}</code>", esc(last_segment(&b.key.kid))),
                        b.attributes.enabled != Some(false),
                    ),
                    Err(e) => (esc(&e.message).to_string(), String::new(), true),
                };
                let rotation = match &k.rotation {
                    Ok(p) => rotation_in_words(p),
                    Err(e) => e.message.clone(),
                };
                let toggle = match enabled {
                    true => {
                        action_button(&format!("{key_at}/disable"), "Disable", csrf, "secondary")
                    }
                    false => {
                        action_button(&format!("{key_at}/enable"), "Enable", csrf, "secondary")
                    }
                };
                let _ = write!(
                    main,
                    "<tr data-key='{0}'><th scope='row'><a href='{key_at}'>{0}</a></th><td>{state}</td>\
                     <td>{version}</td><td>{1}</td><td>{2}{toggle}</td></tr>",
                    esc(&k.name),
                    esc(&rotation),
                    action_button(&format!("{key_at}/rotate"), "Rotate", csrf, "secondary"),
                );
            }
            main.push_str("</tbody></table>");
        }
    }
    let _ = write!(
        main,
        "<form class='actions' method='post' action='{at}/keys'>{}\
         <label for='{id}-key'>New key</label><input id='{id}-key' name='name' required>\
         <label for='{id}-size'>Size</label><select id='{id}-size' name='size'>\
         <option>2048</option><option selected>3072</option><option>4096</option></select>\
         <button type='submit'>Create key</button></form>",
        csrf_field(csrf)
    );
    let _ = write!(
        main,
        "<h3>Access policies: who can unwrap what</h3><table><thead><tr><th scope='col'>Identity</th>\
         <th scope='col'>Can unwrap the keys</th><th scope='col'>Key permissions</th>\
         <th scope='col'>Actions</th></tr></thead><tbody>"
    );
    for p in &v.policies {
        let unwraps = p
            .key_permissions
            .iter()
            .any(|k| k == Permission::UnwrapKey.name());
        let _ = write!(
            main,
            "<tr data-policy='{0}'><th scope='row'>{0}</th><td>{1}</td><td>{2}</td><td>{3}</td></tr>",
            esc(&p.identity),
            if unwraps { "<span class='badge ok'>Yes</span>" } else { "<span class='badge'>No</span>" },
            esc(&p.key_permissions.join(", ")),
            action_button(
                &format!("{at}/policies/{}/delete", path_segment(&p.identity)),
                "Remove",
                csrf,
                "danger"
            )
        );
    }
    main.push_str("</tbody></table>");
    let _ = write!(
        main,
        "<form class='stack' method='post' action='{at}/policies'>{}<fieldset><legend>Grant an identity</legend>\
         <label for='{id}-identity'>Identity<select id='{id}-identity' name='identity'>",
        csrf_field(csrf)
    );
    for i in identities {
        let _ = write!(
            main,
            "<option value='{0}'>{0} ({1}{2})</option>",
            esc(&i.name),
            esc(&i.kind),
            if i.service_admin {
                ", service administrator"
            } else {
                ""
            }
        );
    }
    main.push_str("</select></label><div class='actions'>");
    for p in Permission::ALL {
        let name = p.name();
        let checked = if SERVER_PERMISSIONS.contains(&name) {
            " checked"
        } else {
            ""
        };
        let _ = write!(
            main,
            "<label><input type='checkbox' name='key_permissions' value='{name}'{checked}> {name}</label>"
        );
    }
    main.push_str("</div><button type='submit'>Set policy</button></fieldset></form></section>");
}

/// `GET /console/vaults/{vault}/keys/{key}`: the key's versions and their state.
pub(super) async fn key(
    State(c): Shared,
    officer: Officer,
    Path((vault, key)): Path<(String, String)>,
) -> Response {
    let caller = &officer.caller;
    let path = format!("/keys/{}/versions", path_segment(&key));
    let versions: ListPage<KeyItem> = match c.api.get(caller, Target::Vault(&vault), &path).await {
        Ok(v) => v,
        Err(e) => return failure(&e),
    };
    let key_at = format!(
        "{BASE}/vaults/{}/keys/{}",
        path_segment(&vault),
        path_segment(&key)
    );
    let csrf = &officer.visit.session.csrf;
    let mut items = versions.value;
    items.sort_by_key(|i| std::cmp::Reverse(i.attributes.created));
    let mut main = format!(
        "<section><p>Vault <a href='{BASE}#vault-{0}'>{0}</a>. A server needs the version that wraps \
         its DEK enabled; after a rotation the old version can be disabled once every server adopted the new one.</p>\
         <table><thead><tr><th scope='col'>Version</th><th scope='col'>State</th><th scope='col'>Created</th>\
         <th scope='col'>Expires</th><th scope='col'>Actions</th></tr></thead><tbody>",
        esc(&vault)
    );
    for item in &items {
        let version = last_segment(&item.kid);
        let enabled = item.attributes.enabled != Some(false);
        let (action, label) = if enabled {
            ("disable", "Disable")
        } else {
            ("enable", "Enable")
        };
        let _ = write!(
            main,
            "<tr><th scope='row'><code>{}</code></th><td>{}</td><td>{}</td><td>{}</td><td>\
             <form class='inline' method='post' action='{key_at}/{action}'>{}<input type='hidden' \
             name='version' value='{}'><button type='submit' class='secondary'>{label}</button></form></td></tr>",
            esc(version),
            enabled_badge(item.attributes.enabled),
            when(item.attributes.created),
            when(item.attributes.exp),
            csrf_field(csrf),
            esc(version)
        );
    }
    main.push_str("</tbody></table></section>");
    let title = format!("Key {key}");
    page(&officer, &title).render(StatusCode::OK, &main)
}

/// `GET /console/audit`: the newest entries and whether the chain is intact.
pub(super) async fn audit(State(c): Shared, officer: Officer) -> Response {
    let caller = &officer.caller;
    let check: ChainCheck = match c
        .api
        .get(caller, Target::Manage, "/admin/audit/verify")
        .await
    {
        Ok(v) => v,
        Err(e) => return failure(&e),
    };
    let path = format!("/admin/audit?limit={AUDIT_SHOWN}");
    let entries: Listing<StoredEntry> = match c.api.get(caller, Target::Manage, &path).await {
        Ok(v) => v,
        Err(e) => return failure(&e),
    };
    let mut main = match check {
        ChainCheck { ok: true, entries, .. } => format!(
            "<p class='notice' role='status' data-chain='intact'>Chain verified: all {} entries are \
             in order and unaltered.</p>",
            entries.unwrap_or_default()
        ),
        ChainCheck { entry, problem, .. } => format!(
            "<p class='notice failed' role='alert' data-chain='broken'>Chain broken: entry {} {}. \
             Entries from there on cannot be trusted; restore the data directory from a backup.</p>",
            entry.unwrap_or_default(),
            esc(problem.as_deref().unwrap_or("is not what was written"))
        ),
    };
    let _ = write!(
        main,
        "<table><caption class='muted'>The newest {AUDIT_SHOWN} entries, newest first (times in UTC)</caption><thead><tr>\
         <th scope='col'>#</th><th scope='col'>Time</th><th scope='col'>Caller</th>\
         <th scope='col'>Operation</th><th scope='col'>Vault</th><th scope='col'>Key</th>\
         <th scope='col'>About</th><th scope='col'>Result</th></tr></thead><tbody>"
    );
    for s in entries.value.iter().rev() {
        let e = &s.entry;
        let class = if e.status < 400 { "ok" } else { "bad" };
        let about = match (&e.target, &e.permissions) {
            (Some(t), Some(p)) => format!("{t}: {}", p.join(", ")),
            (Some(t), None) => t.clone(),
            _ => String::new(),
        };
        let _ = write!(
            main,
            "<tr><td>{}</td><td><time datetime='{}'>{}</time></td><td>{}</td><th scope='row'>{}</th><td>{}</td><td>{}</td><td>{}</td>\
             <td><span class='badge {class}'>{} {}</span></td></tr>",
            s.seq,
            esc(&e.time),
            esc(&e.time.get(..19).unwrap_or(&e.time).replace('T', " ")),
            esc(e.caller_name.as_deref().unwrap_or(&e.caller)),
            esc(&e.operation),
            esc(&e.vault),
            esc(e.key.as_deref().unwrap_or("")),
            esc(&about),
            e.status,
            esc(&e.result)
        );
    }
    main.push_str("</tbody></table>");
    page(&officer, "Audit trail").render(StatusCode::OK, &main)
}
