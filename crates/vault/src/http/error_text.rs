//! Error messages as JSON strings that need no escape sequence.
//!
//! The Azure SDK for Rust reads an error body's `code` and `message` as borrowed
//! strings, which fail on any escape sequence: a 403 whose message held `\"` was
//! reported as code `403` instead of `Forbidden`. The vault's own messages are written
//! without such characters; this is the guarantee for text that comes from elsewhere
//! (serde's explanation of a bad body, a name taken from the request).

/// `message` with every character JSON must escape replaced: `"` by `'`, `\` by `/`,
/// control characters (newlines included) by a space.
pub fn without_json_escapes(message: &str) -> String {
    message
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// Whether `text` serializes as a JSON string without an escape sequence.
pub fn needs_no_json_escape(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c == '"' || c == '\\' || (c as u32) < 0x20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ApiError;
    use crate::keys::error::{KeyConflict, KeyOpError, Unusable};
    use crate::token::{AuthError, TokenError};

    #[test]
    fn every_character_json_escapes_is_replaced_and_others_are_kept() {
        let hostile: String = (0u32..0x80)
            .filter_map(char::from_u32)
            .chain("‘purge’ é ✓".chars())
            .collect();
        let clean = without_json_escapes(&hostile);
        assert!(needs_no_json_escape(&clean), "{clean:?}");
        let serialized = serde_json::to_string(&clean).unwrap();
        assert!(
            !serialized[1..serialized.len() - 1].contains('\\'),
            "{serialized}"
        );
        assert!(clean.contains("'"), "quotes become apostrophes: {clean}");
        assert!(clean.ends_with("‘purge’ é ✓"), "{clean}");
        assert_eq!(
            without_json_escapes("Operation \"purge\" at C:\\x\n"),
            "Operation 'purge' at C:/x "
        );
    }

    /// One value of every keys-domain error; the matches have no wildcard, so a
    /// new variant does not compile until it is listed here.
    fn every_key_op_error() -> Vec<KeyOpError> {
        let name = || "k1".to_string();
        let mut all = vec![
            KeyOpError::BadParameter("'count' is required".into()),
            KeyOpError::KeyNotFound { name: name() },
            KeyOpError::VersionNotFound {
                name: name(),
                version: "0".repeat(32),
            },
            KeyOpError::DeletedKeyNotFound { name: name() },
            KeyConflict::DeletedButRecoverable { name: name() }.into(),
            KeyConflict::AlreadyExists { name: name() }.into(),
            KeyOpError::PurgeProtected {
                vault: "v1".into(),
                name: name(),
                scheduled_purge_date: 1_767_225_600,
            },
            KeyOpError::Internal(crate::StorageError::AuditWriterStopped.into()),
            KeyOpError::Token(pgcmk_pkcs11::TokenError::Denied {
                reason: "finding token 't1': no such token is present".into(),
            }),
        ];
        for reason in [
            Unusable::Disabled,
            Unusable::NotYetValid,
            Unusable::Expired,
            Unusable::OperationNotPermitted,
            Unusable::NotExportable,
        ] {
            match reason {
                Unusable::Disabled
                | Unusable::NotYetValid
                | Unusable::Expired
                | Unusable::OperationNotPermitted
                | Unusable::NotExportable => {}
            }
            all.push(KeyOpError::Unusable {
                operation: "wrapKey",
                reason,
            });
        }
        for e in &all {
            match e {
                KeyOpError::BadParameter(_)
                | KeyOpError::KeyNotFound { .. }
                | KeyOpError::VersionNotFound { .. }
                | KeyOpError::DeletedKeyNotFound { .. }
                | KeyOpError::Conflict(
                    KeyConflict::DeletedButRecoverable { .. } | KeyConflict::AlreadyExists { .. },
                )
                | KeyOpError::Unusable { .. }
                | KeyOpError::PurgeProtected { .. }
                | KeyOpError::Token(_)
                | KeyOpError::Internal(_) => {}
            }
        }
        all
    }

    /// Every 401 reason a token check gives.
    fn every_auth_error() -> Vec<AuthError> {
        let mut all = vec![AuthError::MissingToken, AuthError::PrincipalGone];
        for t in [
            TokenError::Malformed,
            TokenError::BadSignature,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::WrongAudience,
        ] {
            match t {
                TokenError::Malformed
                | TokenError::BadSignature
                | TokenError::Expired
                | TokenError::NotYetValid
                | TokenError::WrongAudience => {}
            }
            all.push(AuthError::InvalidToken(t));
        }
        for e in &all {
            match e {
                AuthError::MissingToken | AuthError::InvalidToken(_) | AuthError::PrincipalGone => {
                }
            }
        }
        all
    }

    #[test]
    fn every_domain_error_message_is_written_without_json_escapes() {
        let mut messages: Vec<String> = Vec::new();
        for e in every_key_op_error() {
            messages.push(e.to_string());
            messages.push(ApiError::from(e).message);
        }
        messages.extend(every_auth_error().iter().map(ToString::to_string));
        messages.push(crate::Error::IdentityExists("app1".into()).to_string());
        for m in &messages {
            assert!(needs_no_json_escape(m), "{m:?}");
        }
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("Operation purge is not allowed")),
            "{messages:?}"
        );
    }

    /// The message literals in the crate's source: any `\"` in one would be a
    /// message that needs an escape. HTTP headers quote by rule (RFC 7235), so the
    /// one challenge header is the exception.
    #[test]
    fn no_message_literal_in_the_source_contains_an_escaped_quote() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root];
        let mut offending = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Tests come last in each file and build JSON with quotes on purpose.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                let header = line.contains("Bearer authorization=")
                    || line.contains("error=\\\"invalid_token\\\"");
                let comment = line.trim_start().starts_with("//");
                if line.contains("\\\"") && !header && !comment {
                    offending.push(format!("{}:{}: {line}", path.display(), n + 1));
                }
            }
        }
        assert!(offending.is_empty(), "{offending:#?}");
    }
}
