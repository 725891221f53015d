//! Key rotation policies: when the vault rotates a key by itself, and the expiry it
//! gives new versions. Durations are ISO 8601 (`P90D`, `P1Y`, `PT12H`).

use serde::{Deserialize, Serialize};

/// A key's rotation policy: when the vault rotates it by itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicy {
    /// `{vault}/keys/{name}/rotationpolicy` (set by the vault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What to do when.
    #[serde(default)]
    pub lifetime_actions: Vec<LifetimeAction>,
    /// The expiry given to new versions, and timestamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<RotationPolicyAttributes>,
}

/// One trigger/action pair of a rotation policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifetimeAction {
    /// When the action fires.
    pub trigger: LifetimeTrigger,
    /// What happens.
    pub action: LifetimeActionKind,
}

/// When a lifetime action fires: ISO 8601 durations such as `P90D`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifetimeTrigger {
    /// Time after the current version's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_after_create: Option<String>,
    /// Time before the current version's expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_before_expiry: Option<String>,
}

/// The action of a lifetime action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifetimeActionKind {
    /// `Rotate` or `Notify`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Rotation policy attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicyAttributes {
    /// ISO 8601 duration given as expiry to each new version, e.g. `P1Y`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_time: Option<String>,
    /// Created at (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    /// Last updated at (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_policy_round_trips_in_akv_shape() {
        let body = r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P30D"},"action":{"type":"Rotate"}}],
            "attributes":{"expiryTime":"P90D"}}"#;
        let p: RotationPolicy = serde_json::from_str(body).unwrap();
        assert_eq!(p.lifetime_actions[0].action.kind, "Rotate");
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(
            back["lifetimeActions"][0]["trigger"]["timeAfterCreate"],
            "P30D"
        );
        assert_eq!(back["attributes"]["expiryTime"], "P90D");
    }
}
