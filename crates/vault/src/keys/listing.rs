//! Paged lists of keys, deleted keys and versions, with absolute `nextLink`s.

use serde_json::{json, Value};

use super::model::KeyRecord;
use super::ops::{active_key, version_record, Ctx, Outcome};
use super::request;
use crate::http::{form_value, ApiError};
use crate::storage::KEYS;

/// Page size when the caller gives no `maxresults`.
const DEFAULT_PAGE: usize = 25;

fn page_size(ctx: &Ctx<'_>) -> Result<usize, ApiError> {
    match form_value(ctx.query, "maxresults") {
        None | Some("") => Ok(DEFAULT_PAGE),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=25).contains(n))
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "maxresults must be a number from 1 to 25, not '{s}'"
                ))
            }),
    }
}

fn next_link(ctx: &Ctx<'_>, path: &str, max: usize, token: &str) -> String {
    let api = form_value(ctx.query, "api-version").unwrap_or("7.5");
    let api: String = api
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    format!(
        "{}{path}?api-version={api}&maxresults={max}&$skiptoken={token}",
        ctx.url
    )
}

pub(super) fn list(ctx: &Ctx<'_>, deleted: bool) -> Result<Outcome, ApiError> {
    let max = page_size(ctx)?;
    let prefix = format!("{}/", ctx.vault.name);
    let mut after = match form_value(ctx.query, "$skiptoken") {
        Some(t) if !t.is_empty() => {
            request::check_key_name(t)
                .map_err(|_| ApiError::bad("$skiptoken is invalid: follow nextLink as given"))?;
            Some(format!("{prefix}{t}"))
        }
        _ => None,
    };
    let mut items = Vec::new();
    let mut more = false;
    'scan: loop {
        let batch: Vec<(String, KeyRecord)> =
            ctx.service
                .store
                .scan(KEYS, &prefix, after.as_deref(), 256)?;
        let Some((last, _)) = batch.last() else { break };
        after = Some(last.clone());
        for (_, key) in batch {
            if key.deleted.is_some() != deleted {
                continue;
            }
            if items.len() == max {
                more = true;
                break 'scan;
            }
            let v = version_record(ctx, &key, "")?;
            items.push((key.name.clone(), ctx.view().item(&key, &v, false)));
        }
    }
    let path = if deleted { "/deletedkeys" } else { "/keys" };
    let next = match (more, items.last()) {
        (true, Some((name, _))) => json!(next_link(ctx, path, max, name)),
        _ => Value::Null,
    };
    let value: Vec<Value> = items.into_iter().map(|(_, v)| v).collect();
    Ok(Outcome::new(
        json!({ "value": value, "nextLink": next }),
        None,
    ))
}

pub(super) fn list_versions(ctx: &Ctx<'_>, name: &str) -> Result<Outcome, ApiError> {
    let max = page_size(ctx)?;
    let key = active_key(ctx, name)?;
    let start =
        match form_value(ctx.query, "$skiptoken") {
            Some(t) if !t.is_empty() => {
                key.versions.iter().position(|v| v == t).ok_or_else(|| {
                    ApiError::bad("$skiptoken is invalid: follow nextLink as given")
                })? + 1
            }
            _ => 0,
        };
    let mut value = Vec::new();
    for version in key.versions.iter().skip(start).take(max) {
        let v = version_record(ctx, &key, version)?;
        value.push(ctx.view().item(&key, &v, true));
    }
    let next = if start + max < key.versions.len() {
        json!(next_link(
            ctx,
            &format!("/keys/{name}/versions"),
            max,
            &key.versions[start + max - 1]
        ))
    } else {
        Value::Null
    };
    Ok(Outcome::new(
        json!({ "value": value, "nextLink": next }),
        None,
    ))
}
