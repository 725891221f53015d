//! Paged lists of keys, deleted keys and versions, with absolute `nextLink`s.

use pgcmk_akv_model::{DeletedKeyItem, ListPage};

use super::error::{bad, KeyOpError};
use super::model::KeyRecord;
use super::ops::{active_key, version_record, Ctx, Outcome};
use super::request;
use crate::storage::KEYS;

/// Page size when the caller gives no `maxresults`.
const DEFAULT_PAGE: usize = 25;

/// The query-string parameters of a listing, as given.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// `maxresults`.
    pub max_results: Option<String>,
    /// `$skiptoken` (from a `nextLink`).
    pub skip_token: Option<String>,
    /// `api-version`, repeated in `nextLink`s.
    pub api_version: Option<String>,
}

fn page_size(ctx: &Ctx<'_>) -> Result<usize, KeyOpError> {
    match ctx.query.max_results.as_deref() {
        None | Some("") => Ok(DEFAULT_PAGE),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=25).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "maxresults must be a number from 1 to 25, not '{s}'"
                ))
            }),
    }
}

fn next_link(ctx: &Ctx<'_>, path: &str, max: usize, token: &str) -> String {
    let api = ctx.query.api_version.as_deref().unwrap_or("7.5");
    let api: String = api
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    format!(
        "{}{path}?api-version={api}&maxresults={max}&$skiptoken={token}",
        ctx.url
    )
}

fn page(value: Vec<DeletedKeyItem>, next_link: Option<String>) -> Result<Outcome, KeyOpError> {
    Outcome::new(ListPage { value, next_link }, None)
}

pub(super) fn list(ctx: &Ctx<'_>, deleted: bool) -> Result<Outcome, KeyOpError> {
    let max = page_size(ctx)?;
    let prefix = format!("{}/", ctx.vault.name);
    let mut after = match ctx.query.skip_token.as_deref() {
        Some(t) if !t.is_empty() => {
            request::check_key_name(t)
                .map_err(|_| bad("$skiptoken is invalid: follow nextLink as given"))?;
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
        (true, Some((name, _))) => Some(next_link(ctx, path, max, name)),
        _ => None,
    };
    page(items.into_iter().map(|(_, v)| v).collect(), next)
}

pub(super) fn list_versions(ctx: &Ctx<'_>, name: &str) -> Result<Outcome, KeyOpError> {
    let max = page_size(ctx)?;
    let key = active_key(ctx, name)?;
    let start = match ctx.query.skip_token.as_deref() {
        Some(t) if !t.is_empty() => {
            key.versions
                .iter()
                .position(|v| v == t)
                .ok_or_else(|| bad("$skiptoken is invalid: follow nextLink as given"))?
                + 1
        }
        _ => 0,
    };
    let mut value = Vec::new();
    for version in key.versions.iter().skip(start).take(max) {
        let v = version_record(ctx, &key, version)?;
        value.push(ctx.view().item(&key, &v, true));
    }
    let next = (start + max < key.versions.len()).then(|| {
        next_link(
            ctx,
            &format!("/keys/{name}/versions"),
            max,
            &key.versions[start + max - 1],
        )
    });
    page(value, next)
}
