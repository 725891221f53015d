//! AKV's error answer: `{"error":{"code","message","innererror":{"code"}?}}`.

use serde::{Deserialize, Serialize};

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// One level of an error: a code, a message and possibly a more specific inner error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// AKV error code (`BadParameter`, `KeyNotFound`, `Forbidden`, ...).
    #[serde(default)]
    pub code: String,
    /// What went wrong and what to do (empty in inner errors).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// A more specific code (`KeyDisabled`, `ForbiddenByPolicy`, ...).
    #[serde(
        default,
        rename = "innererror",
        skip_serializing_if = "Option::is_none"
    )]
    pub inner: Option<Box<ErrorDetail>>,
}
