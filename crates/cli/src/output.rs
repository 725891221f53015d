//! Printing results: human text by default, JSON with `--output json`.
//!
//! Every command prints the same shapes: a list is a bare JSON array, and every time
//! is an RFC 3339 string. The vault's APIs give some times as Unix seconds (the Azure
//! Key Vault wire format keeps them so for its SDKs) and lists as `{"value": [...]}`;
//! they are turned into the common shapes here, before printing.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::Format;

/// Fields that hold a time; the vault's APIs give them as Unix seconds.
const TIME_FIELDS: [&str; 6] = [
    "created",
    "updated",
    "nbf",
    "exp",
    "deletedDate",
    "scheduledPurgeDate",
];

/// Prints `value` as pretty JSON, or as the text `human` renders from it.
pub fn print(format: Format, value: &Value, human: impl FnOnce(&Value) -> String) {
    let mut value = value.clone();
    rfc3339_times(&mut value);
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("a JSON value always serializes")
        ),
        Format::Human => println!("{}", human(&value)),
    }
}

/// Prints a list the vault answered as `{"value": [...]}`: a bare array in JSON, one
/// `line` per item (or "(none)") in text.
pub fn print_list(format: Format, answer: &Value, line: fn(&Value) -> String) {
    let items = answer
        .get("value")
        .cloned()
        .unwrap_or_else(|| Value::Array(Vec::new()));
    print(format, &items, |items| {
        let items = items.as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return "(none)".into();
        }
        items.iter().map(line).collect::<Vec<_>>().join("\n")
    });
}

/// Rewrites every time field holding Unix seconds, at any depth, as RFC 3339.
fn rfc3339_times(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if TIME_FIELDS.contains(&name.as_str()) {
                    if let Some(text) = field.as_i64().and_then(rfc3339) {
                        *field = Value::String(text);
                        continue;
                    }
                }
                rfc3339_times(field);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rfc3339_times),
        _ => {}
    }
}

fn rfc3339(unix_seconds: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unix_seconds_become_rfc3339_at_any_depth() {
        let mut v = json!({
            "attributes": { "created": 1_700_000_000, "exp": null, "enabled": true },
            "value": [{ "deletedDate": 0, "name": "k" }],
            "created_at": "2026-01-01T00:00:00Z",
        });
        rfc3339_times(&mut v);
        assert_eq!(v["attributes"]["created"], "2023-11-14T22:13:20Z");
        assert_eq!(v["attributes"]["exp"], Value::Null);
        assert_eq!(v["value"][0]["deletedDate"], "1970-01-01T00:00:00Z");
        assert_eq!(v["created_at"], "2026-01-01T00:00:00Z");
    }
}
