//! The key monitor's check against the server's KEK.

use pgcmk_crypto::Dek;
use pgcmk_keyprovider::{KeyEncryptionKey, KeyError, WrappedDek};

use crate::monitor::CheckResult;

/// One key-monitor check: a real unwrap of `wrapped`, then a read of the key's
/// current version. Returns the unwrapped DEK when the unwrap succeeded.
pub fn check(kek: &dyn KeyEncryptionKey, wrapped: &WrappedDek) -> (CheckResult, Option<Dek>) {
    let dek = match kek.unwrap(wrapped) {
        Ok(dek) => dek,
        Err(e) => return (classify(e), None),
    };
    let result = match kek.info() {
        Ok(info) if !info.enabled => {
            CheckResult::Denied(format!("key {} is disabled", info.current))
        }
        Ok(info) => CheckResult::Ok {
            current: info.current,
        },
        Err(e) => classify(e),
    };
    (result, Some(dek))
}

/// Maps a key error onto the monitor's two kinds of failure. An invalid request
/// cannot heal by retrying, so it counts as a denial.
fn classify(e: KeyError) -> CheckResult {
    if e.is_retryable() {
        CheckResult::Transient(e.to_string())
    } else {
        CheckResult::Denied(e.to_string())
    }
}
