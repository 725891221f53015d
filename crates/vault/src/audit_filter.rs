//! Which audit entries `audit list` returns: the query's filter, checked before use.

use serde::{Deserialize, Serialize};

use crate::audit::AuditEntry;

/// Which entries `audit list` returns.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Vault name.
    pub vault: Option<String>,
    /// Key name.
    pub key: Option<String>,
    /// Caller object id or name.
    pub principal: Option<String>,
    /// Operation name (case-insensitive).
    pub operation: Option<String>,
    /// Only entries at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only entries before this RFC 3339 time.
    pub until: Option<String>,
    /// `allowed` or `denied`.
    pub result: Option<String>,
    /// Whether anonymous challenges ([`AuditEntry::challenge`]) are listed; off by
    /// default, since every SDK client's first request is one.
    #[serde(default)]
    pub include_challenges: bool,
    /// Newest entries kept when more match.
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    1000
}

/// Parses an RFC 3339 time, saying what is expected when it is not one.
pub fn parse_time(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("'{s}' is not an RFC 3339 time such as 2026-01-31T12:00:00Z"))
}

impl AuditFilter {
    /// Checks the filter's values before use.
    pub fn validate(&self) -> Result<(), String> {
        for t in [&self.since, &self.until].into_iter().flatten() {
            parse_time(t)?;
        }
        match self.result.as_deref() {
            None | Some("allowed") | Some("denied") => Ok(()),
            Some(other) => Err(format!(
                "result must be 'allowed' or 'denied', not '{other}'"
            )),
        }
    }

    pub(crate) fn matches(&self, e: &AuditEntry) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let time = parse_time(&e.time).ok();
        let after = |bound: &Option<String>| match (bound.as_deref().map(parse_time), time) {
            (Some(Ok(b)), Some(t)) => t >= b,
            _ => true,
        };
        eq(&self.vault, &e.vault)
            && self
                .key
                .as_deref()
                .is_none_or(|k| e.key.as_deref() == Some(k))
            && self
                .principal
                .as_deref()
                .is_none_or(|p| e.caller == p || e.caller_name.as_deref() == Some(p))
            && self
                .operation
                .as_deref()
                .is_none_or(|o| o.eq_ignore_ascii_case(&e.operation))
            && eq(&self.result, &e.result)
            && (self.include_challenges || !e.challenge)
            && after(&self.since)
            && (self.until.is_none() || !after(&self.until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16, challenge: bool) -> AuditEntry {
        AuditEntry {
            time: "2026-01-31T12:00:00Z".into(),
            operation: "KeyList".into(),
            caller: "anonymous".into(),
            status,
            result: AuditEntry::result_for(status).into(),
            challenge,
            ..AuditEntry::default()
        }
    }

    #[test]
    fn challenges_are_left_out_unless_included() {
        let challenge = entry(401, true);
        let refused_token = entry(401, false);
        let default = AuditFilter::default();
        assert!(!default.matches(&challenge));
        assert!(default.matches(&refused_token));
        let denied = AuditFilter {
            result: Some("denied".into()),
            include_challenges: true,
            ..AuditFilter::default()
        };
        assert!(denied.matches(&challenge) && denied.matches(&refused_token));
    }

    #[test]
    fn entries_that_are_not_challenges_serialize_as_before_the_field_existed() {
        // The chain's mac covers the entry's JSON: old entries must not change.
        let json = serde_json::to_value(entry(401, false)).unwrap();
        assert!(json.get("challenge").is_none(), "{json}");
        let json = serde_json::to_value(entry(401, true)).unwrap();
        assert_eq!(json["challenge"], true);
        let old: AuditEntry = serde_json::from_str(r#"{"time":"t","vault":"","operation":"KeyList","key":null,"version":null,"caller":"anonymous","caller_name":null,"client":"","status":401,"result":"denied","duration_us":1,"request_id":"r"}"#).unwrap();
        assert!(!old.challenge);
    }
}
