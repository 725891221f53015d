//! How vault and transport failures map onto [`KeyError`]: definitive denials
//! (the customer's switch) versus transient trouble (retry) versus bad requests.

use pgcmk_akv_model::ErrorBody;

use crate::KeyError;

/// AKV error codes that mean "this key cannot be used by you now", whatever the
/// HTTP status the server chose for them.
const DENIAL_CODES: [&str; 9] = [
    "Unauthorized",
    "Forbidden",
    "AccessDenied",
    "KeyDisabled",
    "KeyNotFound",
    "KeyExpired",
    "KeyNotYetValid",
    "ObjectIsDeletedButRecoverable",
    "ForbiddenByPolicy",
];

/// Longest server message quoted in an error, so a hostile server cannot flood logs
/// and state stores; far above what a vault's explanation with its fix command needs
/// (which must reach the operator whole: a reason is never cut mid-command).
const MAX_MESSAGE: usize = 2048;

/// The AKV error code (the innermost one when nested) and message of an error body.
fn akv_error(body: &[u8]) -> Option<(String, String)> {
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    let mut detail = parsed.error;
    let message = detail.message.clone();
    let mut codes = vec![detail.code.clone()];
    while let Some(inner) = detail.inner.take() {
        codes.push(inner.code.clone());
        detail = *inner;
    }
    codes.retain(|c| !c.is_empty());
    Some((codes.join("/"), message))
}

/// `text` without control characters, cut after at most [`MAX_MESSAGE`] bytes at a
/// word boundary (with `…`) when it is longer.
fn clip(text: &str) -> String {
    let cleaned: String = text.chars().filter(|c| !c.is_control()).collect();
    if cleaned.len() <= MAX_MESSAGE {
        return cleaned;
    }
    let mut end = MAX_MESSAGE;
    while !cleaned.is_char_boundary(end) {
        end -= 1;
    }
    let cut = cleaned[..end]
        .rfind(char::is_whitespace)
        .filter(|at| *at > 0)
        .unwrap_or(end);
    format!("{}…", cleaned[..cut].trim_end())
}

/// Maps a non-success HTTP response of `operation` to a [`KeyError`]. The body is
/// whatever the server sent: a hostile or broken one must still yield a bounded,
/// printable reason.
pub fn from_response(operation: &str, status: u16, body: &[u8]) -> KeyError {
    let (code, message) = akv_error(body).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        (String::new(), text.trim().to_string())
    });
    let said = match (code.is_empty(), message.is_empty()) {
        (true, true) => format!("HTTP {status}"),
        (true, false) => format!("HTTP {status}: {}", clip(&message)),
        (false, _) => format!("HTTP {status} {}: {}", clip(&code), clip(&message)),
    };
    let denial_code = code.split('/').any(|c| DENIAL_CODES.contains(&c));
    match status {
        404 => KeyError::Denied {
            reason: format!(
                "{operation}: the vault has no such key ({said}); check the key's name and \
                 vault in its URL (`pgcmk key list --vault VAULT` lists the vault's keys, \
                 `--deleted` the deleted ones, which `pgcmk key recover` brings back)"
            ),
        },
        401 => KeyError::Denied {
            reason: format!(
                "{operation}: the vault did not accept the identity's token ({said}); check \
                 that the identity exists and its credential is current"
            ),
        },
        403 => KeyError::Denied {
            reason: format!(
                "{operation} refused by the vault ({said}); check the key's state and the \
                 identity's access policy (`pgcmk keyvault set-policy VAULT --identity \
                 IDENTITY --key-permissions get wrapKey unwrapKey`)"
            ),
        },
        408 | 429 | 500..=599 => KeyError::Transient {
            reason: format!("{operation} failed at the vault ({said}); retry later"),
        },
        _ if denial_code => KeyError::Denied {
            reason: format!("{operation} refused by the vault ({said})"),
        },
        _ => KeyError::Invalid {
            reason: format!("{operation} was rejected by the vault ({said})"),
        },
    }
}

/// Maps a transport failure (no usable HTTP response) to a [`KeyError`]. The URL is
/// left out: it may carry a client id in its query.
pub(crate) fn from_transport(operation: &str, err: reqwest::Error) -> KeyError {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_decode() || err.is_body() {
        "sent an unreadable response"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&err);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    let detail = if detail.is_empty() {
        err.without_url().to_string()
    } else {
        detail
    };
    KeyError::Transient {
        reason: format!("{operation}: {kind} ({}); retry later", clip(&detail)),
    }
}

/// A 2xx response whose body is not what AKV sends.
pub(crate) fn unexpected_body(operation: &str, err: &serde_json::Error) -> KeyError {
    KeyError::Transient {
        reason: format!("{operation}: the vault sent an unexpected response ({err}); retry later"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(e: &KeyError) -> &'static str {
        match e {
            KeyError::Denied { .. } => "denied",
            KeyError::Transient { .. } => "transient",
            KeyError::Invalid { .. } => "invalid",
        }
    }

    #[test]
    fn statuses_and_codes_map_to_denied_transient_invalid() {
        let body = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m {code}"}}}}"#);
        for (status, code, want) in [
            (401, "Unauthorized", "denied"),
            (403, "Forbidden", "denied"),
            (404, "KeyNotFound", "denied"),
            (400, "KeyDisabled", "denied"),
            (409, "ObjectIsDeletedButRecoverable", "denied"),
            (400, "BadParameter", "invalid"),
            (409, "Conflict", "invalid"),
            (429, "Throttled", "transient"),
            (500, "InternalError", "transient"),
            (503, "ServiceUnavailable", "transient"),
        ] {
            let e = from_response("KeyUnwrap", status, body(code).as_bytes());
            assert_eq!(kind(&e), want, "{status} {code}: {e}");
            let text = e.to_string();
            assert!(
                text.contains(code) && text.contains(&format!("m {code}")),
                "{text}"
            );
        }
    }

    #[test]
    fn inner_error_codes_are_reported() {
        let body = br#"{"error":{"code":"Forbidden","message":"Operation unwrapKey is not allowed on a disabled key.","innererror":{"code":"KeyDisabled"}}}"#;
        let e = from_response("KeyUnwrap", 403, body);
        assert!(e.to_string().contains("Forbidden/KeyDisabled"), "{e}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn non_json_bodies_are_quoted_clipped_and_cleaned() {
        let long = format!("oops\n{}", "x".repeat(100_000));
        let e = from_response("KeyGet", 502, long.as_bytes());
        let text = e.to_string();
        assert!(e.is_retryable());
        assert!(
            text.contains("oopsxxx") && text.contains('…') && text.len() < MAX_MESSAGE + 200,
            "{text}"
        );
    }

    /// A refusal's explanation reaches the operator whole, fix command included (it was
    /// cut at 300 bytes, in the middle of `--key-permissions`).
    #[test]
    fn a_refusal_with_its_fix_command_is_not_cut() {
        let message = "The user, group or application 'orders-mi' \
            (appid=a939c6cb-3655-9c59-17bb-1dfcb49af98d;oid=7ab0c66a-3aef-9115-30a0-2e8dd543b83d) \
            does not have keys unwrapKey permission on key vault 'orders-kv'. Ask a vault \
            administrator to grant it with: pgcmk keyvault set-policy orders-kv --identity \
            orders-mi --key-permissions get wrapKey unwrapKey";
        let body = serde_json::json!({ "error": { "code": "Forbidden", "message": message } });
        let e = from_response("KeyUnwrap", 403, body.to_string().as_bytes());
        assert!(e.to_string().contains(message), "{e}");
    }

    #[test]
    fn a_long_message_is_cut_at_a_word() {
        let long = "word ".repeat(1000);
        let cut = clip(&long);
        assert!(cut.len() <= MAX_MESSAGE + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.ends_with("word…"), "{cut}");
    }
}
