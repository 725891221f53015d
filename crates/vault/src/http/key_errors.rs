//! Keys domain errors as Azure Key Vault answers them: status, error code, inner code.

use axum::http::StatusCode;

use pgcmk_pkcs11::TokenError;

use super::ApiError;
use crate::keys::error::{KeyConflict, KeyOpError, Unusable};

/// The HTTP status AKV uses for `e`.
pub fn status(e: &KeyOpError) -> StatusCode {
    match e {
        KeyOpError::BadParameter(_) => StatusCode::BAD_REQUEST,
        KeyOpError::KeyNotFound { .. }
        | KeyOpError::VersionNotFound { .. }
        | KeyOpError::DeletedKeyNotFound { .. } => StatusCode::NOT_FOUND,
        KeyOpError::Conflict(_) => StatusCode::CONFLICT,
        KeyOpError::Unusable { .. } | KeyOpError::PurgeProtected { .. } => StatusCode::FORBIDDEN,
        KeyOpError::Token(TokenError::Denied { .. }) => StatusCode::FORBIDDEN,
        KeyOpError::Token(TokenError::Transient { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        KeyOpError::Token(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// AKV's error code and inner error code for `e`.
fn codes(e: &KeyOpError) -> (&'static str, Option<&'static str>) {
    match e {
        KeyOpError::BadParameter(_) => ("BadParameter", None),
        KeyOpError::KeyNotFound { .. }
        | KeyOpError::VersionNotFound { .. }
        | KeyOpError::DeletedKeyNotFound { .. } => ("KeyNotFound", None),
        KeyOpError::Conflict(KeyConflict::DeletedButRecoverable { .. }) => {
            ("Conflict", Some("ObjectIsDeletedButRecoverable"))
        }
        KeyOpError::Conflict(_) => ("Conflict", None),
        KeyOpError::Unusable { reason, .. } => (
            "Forbidden",
            Some(match reason {
                Unusable::Disabled => "KeyDisabled",
                Unusable::NotYetValid => "KeyNotYetValid",
                Unusable::Expired => "KeyExpired",
                _ => "KeyOperationForbidden",
            }),
        ),
        KeyOpError::PurgeProtected { .. } => ("Forbidden", Some("PurgeProtected")),
        KeyOpError::Token(TokenError::Denied { .. }) => ("Forbidden", None),
        KeyOpError::Token(TokenError::Transient { .. }) => ("ServiceUnavailable", None),
        KeyOpError::Token(_) => ("BadParameter", None),
        _ => ("InternalServerError", None),
    }
}

impl From<KeyOpError> for ApiError {
    fn from(e: KeyOpError) -> Self {
        let status = status(&e);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            return ApiError::internal(e);
        }
        let (code, inner) = codes(&e);
        let mut answer = ApiError::new(status, code, e.to_string());
        answer.inner = inner;
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_keep_akv_statuses_and_codes() {
        let cases: Vec<(KeyOpError, u16, &str, Option<&str>)> = vec![
            (
                KeyOpError::BadParameter("x".into()),
                400,
                "BadParameter",
                None,
            ),
            (
                KeyOpError::KeyNotFound { name: "k".into() },
                404,
                "KeyNotFound",
                None,
            ),
            (
                KeyOpError::DeletedKeyNotFound { name: "k".into() },
                404,
                "KeyNotFound",
                None,
            ),
            (
                KeyConflict::DeletedButRecoverable { name: "k".into() }.into(),
                409,
                "Conflict",
                Some("ObjectIsDeletedButRecoverable"),
            ),
            (
                KeyConflict::AlreadyExists { name: "k".into() }.into(),
                409,
                "Conflict",
                None,
            ),
            (
                KeyOpError::Unusable {
                    operation: "wrapKey",
                    reason: Unusable::Expired,
                },
                403,
                "Forbidden",
                Some("KeyExpired"),
            ),
            (
                KeyOpError::PurgeProtected {
                    vault: "v".into(),
                    name: "k".into(),
                    scheduled_purge_date: 1,
                },
                403,
                "Forbidden",
                Some("PurgeProtected"),
            ),
            (
                KeyOpError::Internal(crate::StorageError::AuditWriterStopped.into()),
                500,
                "InternalServerError",
                None,
            ),
            (
                KeyOpError::Unusable {
                    operation: "backup",
                    reason: Unusable::NotExportable,
                },
                403,
                "Forbidden",
                Some("KeyOperationForbidden"),
            ),
            (
                KeyOpError::Token(TokenError::Transient {
                    reason: "Decrypt returned DeviceError".into(),
                }),
                503,
                "ServiceUnavailable",
                None,
            ),
        ];
        for (e, status, code, inner) in cases {
            let what = format!("{e:?}");
            let answer = ApiError::from(e);
            assert_eq!(
                (answer.status.as_u16(), answer.code, answer.inner),
                (status, code, inner),
                "{what}"
            );
        }
        let disabled = ApiError::from(KeyOpError::Unusable {
            operation: "wrapKey",
            reason: Unusable::Disabled,
        });
        assert_eq!(
            disabled.message,
            "Operation wrapKey is not allowed on a disabled key."
        );
    }
}
