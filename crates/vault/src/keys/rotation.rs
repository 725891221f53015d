//! Key rotation policies: lifetime actions (rotate or notify) triggered a time after
//! the current version's creation or before its expiry, and the expiry that new
//! versions get. Durations are ISO 8601 (`P90D`, `P1Y2M`, `PT12H`).

use pgcmk_akv_model as wire;
use serde::{Deserialize, Serialize};

/// What a lifetime action does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Create a new key version.
    Rotate,
    /// Record a near-expiry notification in the audit trail.
    Notify,
}

/// When a lifetime action fires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// This long after the current version was created.
    TimeAfterCreate(String),
    /// This long before the current version expires.
    TimeBeforeExpiry(String),
}

/// One lifetime action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifetimeAction {
    /// When.
    pub trigger: Trigger,
    /// What.
    pub action: ActionType,
}

/// A key's rotation policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicy {
    /// The lifetime actions.
    pub actions: Vec<LifetimeAction>,
    /// Expiry given to new versions (ISO 8601 duration from creation).
    pub expiry_time: Option<String>,
    /// Created (unix seconds).
    pub created: i64,
    /// Updated (unix seconds).
    pub updated: i64,
}

/// Azure Key Vault's documented minimums for a rotation policy: a trigger at least 7
/// days after creation or before expiry (so a policy cannot mint a version per
/// maintenance run), and versions that live at least 28 days.
const MIN_TRIGGER_SECS: i64 = 7 * 86_400;
const MIN_EXPIRY_SECS: i64 = 28 * 86_400;

/// Checks that the duration `text` of `field` is at least `min_secs` (`min` in ISO 8601).
fn at_least(text: &str, min_secs: i64, field: &str, min: &str) -> Result<(), String> {
    if parse_duration(text)? < min_secs {
        return Err(format!("{field} {text} is too short: the minimum is {min}"));
    }
    Ok(())
}

/// Parses an ISO 8601 duration into seconds (years = 365 days, months = 30 days).
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let bad = || format!("'{text}' is not an ISO 8601 duration such as P90D, P1Y or PT12H");
    let rest = text.strip_prefix('P').ok_or_else(bad)?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, t),
        Some(_) => return Err(bad()),
        None => (rest, ""),
    };
    let mut total: i64 = 0;
    let mut any = false;
    for (part, units) in [
        (
            date,
            &[
                ('Y', 365 * 86_400),
                ('M', 30 * 86_400),
                ('W', 7 * 86_400),
                ('D', 86_400),
            ][..],
        ),
        (time, &[('H', 3600), ('M', 60), ('S', 1)][..]),
    ] {
        let mut number = String::new();
        let mut unit_index = 0;
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let pos = units[unit_index..]
                .iter()
                .position(|(u, _)| *u == c)
                .ok_or_else(bad)?
                + unit_index;
            let n: i64 = number.parse().map_err(|_| bad())?;
            total = total
                .checked_add(n.checked_mul(units[pos].1).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            number.clear();
            unit_index = pos + 1;
            any = true;
        }
        if !number.is_empty() {
            return Err(bad());
        }
    }
    if !any || total == 0 {
        return Err(bad());
    }
    Ok(total)
}

impl RotationPolicy {
    /// Validates the body of a policy PUT.
    pub fn from_wire(
        body: &wire::RotationPolicy,
        now: i64,
        previous: Option<&RotationPolicy>,
    ) -> Result<Self, String> {
        let mut actions = Vec::new();
        for item in &body.lifetime_actions {
            let kind = item.action.kind.as_str();
            let action = if kind.eq_ignore_ascii_case("rotate") {
                ActionType::Rotate
            } else if kind.eq_ignore_ascii_case("notify") {
                ActionType::Notify
            } else {
                return Err(format!(
                    "lifetime action type must be Rotate or Notify, not '{kind}'"
                ));
            };
            let trigger = match (&item.trigger.time_after_create, &item.trigger.time_before_expiry) {
                (Some(a), None) => {
                    at_least(a, MIN_TRIGGER_SECS, "trigger.timeAfterCreate", "P7D")?;
                    Trigger::TimeAfterCreate(a.to_string())
                }
                (None, Some(b)) => {
                    at_least(b, MIN_TRIGGER_SECS, "trigger.timeBeforeExpiry", "P7D")?;
                    Trigger::TimeBeforeExpiry(b.to_string())
                }
                _ => return Err("each lifetime action needs exactly one of trigger.timeAfterCreate or trigger.timeBeforeExpiry".into()),
            };
            actions.push(LifetimeAction { trigger, action });
        }
        if actions
            .iter()
            .filter(|a| a.action == ActionType::Rotate)
            .count()
            > 1
        {
            return Err("a policy may have at most one Rotate action".into());
        }
        let expiry_time = body.attributes.as_ref().and_then(|a| a.expiry_time.clone());
        if let Some(e) = &expiry_time {
            at_least(e, MIN_EXPIRY_SECS, "attributes.expiryTime", "P28D")?;
        }
        let needs_expiry = actions
            .iter()
            .any(|a| matches!(a.trigger, Trigger::TimeBeforeExpiry(_)));
        if needs_expiry && expiry_time.is_none() {
            return Err("a timeBeforeExpiry trigger needs attributes.expiryTime".into());
        }
        Ok(Self {
            actions,
            expiry_time,
            created: previous.map_or(now, |p| p.created),
            updated: now,
        })
    }

    /// The policy in AKV's shape, with its id.
    pub fn to_wire(&self, id: &str) -> wire::RotationPolicy {
        let lifetime_actions = self
            .actions
            .iter()
            .map(|a| {
                let trigger = match &a.trigger {
                    Trigger::TimeAfterCreate(d) => wire::LifetimeTrigger {
                        time_after_create: Some(d.clone()),
                        time_before_expiry: None,
                    },
                    Trigger::TimeBeforeExpiry(d) => wire::LifetimeTrigger {
                        time_after_create: None,
                        time_before_expiry: Some(d.clone()),
                    },
                };
                let kind = match a.action {
                    ActionType::Rotate => "Rotate",
                    ActionType::Notify => "Notify",
                };
                wire::LifetimeAction {
                    trigger,
                    action: wire::LifetimeActionKind { kind: kind.into() },
                }
            })
            .collect();
        wire::RotationPolicy {
            id: Some(id.to_string()),
            lifetime_actions,
            attributes: Some(wire::RotationPolicyAttributes {
                expiry_time: self.expiry_time.clone(),
                created: Some(self.created),
                updated: Some(self.updated),
            }),
        }
    }

    /// The policy a key has before one is set (Azure's default: notify 30 days before expiry).
    pub fn default_wire(id: &str) -> wire::RotationPolicy {
        wire::RotationPolicy {
            id: Some(id.to_string()),
            lifetime_actions: vec![wire::LifetimeAction {
                trigger: wire::LifetimeTrigger {
                    time_after_create: None,
                    time_before_expiry: Some("P30D".into()),
                },
                action: wire::LifetimeActionKind {
                    kind: "Notify".into(),
                },
            }],
            attributes: Some(wire::RotationPolicyAttributes::default()),
        }
    }

    /// Expiry for a version created at `created`, if the policy sets one.
    pub fn expiry_for(&self, created: i64) -> Option<i64> {
        self.expiry_time
            .as_deref()
            .and_then(|d| parse_duration(d).ok())
            .map(|d| created + d)
    }

    /// The first action due now for a current version created at `created` expiring at `exp`.
    pub fn due(&self, created: i64, exp: Option<i64>, now: i64) -> Option<ActionType> {
        self.actions.iter().find_map(|a| {
            let fires = match &a.trigger {
                Trigger::TimeAfterCreate(d) => parse_duration(d).is_ok_and(|d| now >= created + d),
                Trigger::TimeBeforeExpiry(d) => {
                    exp.is_some_and(|exp| parse_duration(d).is_ok_and(|d| now >= exp - d))
                }
            };
            fires.then_some(a.action)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_nonsense_is_refused() {
        assert_eq!(parse_duration("P90D"), Ok(90 * 86_400));
        assert_eq!(parse_duration("P1Y2M"), Ok(365 * 86_400 + 60 * 86_400));
        assert_eq!(parse_duration("PT1H30M5S"), Ok(5405));
        assert_eq!(parse_duration("P1DT2S"), Ok(86_402));
        for bad in [
            "", "P", "90D", "PT", "P1H", "PD", "P-1D", "P1D2", "P0D", "PT1S1H",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    fn policy(json: &str) -> wire::RotationPolicy {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn policies_round_trip_and_fire_when_due() {
        let body = policy(
            r#"{
            "lifetimeActions": [
                { "trigger": { "timeAfterCreate": "P8D" }, "action": { "type": "rotate" } },
                { "trigger": { "timeBeforeExpiry": "P7D" }, "action": { "type": "Notify" } }
            ],
            "attributes": { "expiryTime": "P28D" }
        }"#,
        );
        let p = RotationPolicy::from_wire(&body, 1000, None).unwrap();
        assert_eq!(p.due(1000, None, 1000 + 8 * 86_400 - 1), None);
        assert_eq!(
            p.due(1000, None, 1000 + 8 * 86_400),
            Some(ActionType::Rotate)
        );
        assert_eq!(p.expiry_for(0), Some(28 * 86_400));
        let v = p.to_wire("id");
        assert_eq!(v.lifetime_actions[0].action.kind, "Rotate");
        assert_eq!(
            RotationPolicy::from_wire(&v, 2000, Some(&p))
                .unwrap()
                .actions,
            p.actions
        );
        let no_expiry = policy(
            r#"{ "lifetimeActions": [{ "trigger": { "timeBeforeExpiry": "P7D" }, "action": { "type": "Rotate" } }] }"#,
        );
        assert!(RotationPolicy::from_wire(&no_expiry, 0, None).is_err());
        let bad_type = policy(
            r#"{ "lifetimeActions": [{ "trigger": { "timeAfterCreate": "P7D" }, "action": { "type": "Explode" } }] }"#,
        );
        assert!(RotationPolicy::from_wire(&bad_type, 0, None).is_err());
    }

    #[test]
    fn triggers_and_expiries_below_azures_minimums_are_refused() {
        for (body, says) in [
            (
                r#"{ "lifetimeActions": [{ "trigger": { "timeAfterCreate": "PT1S" }, "action": { "type": "Rotate" } }] }"#,
                "trigger.timeAfterCreate PT1S is too short: the minimum is P7D",
            ),
            (
                r#"{ "lifetimeActions": [{ "trigger": { "timeBeforeExpiry": "P6D" }, "action": { "type": "Notify" } }], "attributes": { "expiryTime": "P90D" } }"#,
                "trigger.timeBeforeExpiry P6D is too short",
            ),
            (
                r#"{ "lifetimeActions": [], "attributes": { "expiryTime": "P27D" } }"#,
                "attributes.expiryTime P27D is too short: the minimum is P28D",
            ),
        ] {
            let e = RotationPolicy::from_wire(&policy(body), 0, None).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
