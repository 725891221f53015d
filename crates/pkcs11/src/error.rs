//! What a token's refusal means: a definitive denial (the PIN changed, the key was
//! deleted or restricted: a server goes Inaccessible at once, a vault answers 403),
//! a failure that may pass (the device is busy, unplugged or failing: retry), or a
//! request the token cannot serve as asked.

use cryptoki::error::{Error as CkError, RvError};

/// A token operation's failure; messages name the operation and the return value,
/// never a PIN or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token refuses this user or this key for good.
    #[error("{reason}")]
    Denied {
        /// What was refused and what to do.
        reason: String,
    },
    /// The device is busy, unplugged or failing: retrying may succeed.
    #[error("{reason}")]
    Transient {
        /// What failed.
        reason: String,
    },
    /// The request or the configuration is wrong (missing module, unusable key).
    #[error("{reason}")]
    Invalid {
        /// What is wrong and how to fix it.
        reason: String,
    },
}

impl TokenError {
    /// The message, whatever the kind.
    pub fn reason(&self) -> &str {
        match self {
            Self::Denied { reason } | Self::Transient { reason } | Self::Invalid { reason } => {
                reason
            }
        }
    }
}

/// `err` from doing `what` (e.g. "logging in to token 't1'"), classified.
pub fn classify(what: &str, err: CkError) -> TokenError {
    let reason = format!("{what}: {}", short(&err));
    match err {
        CkError::Pkcs11(rv, _) if denial(rv) => TokenError::Denied { reason },
        CkError::Pkcs11(..) => TokenError::Transient { reason },
        _ => TokenError::Invalid { reason },
    }
}

/// Return values that say the token refuses this user or this key for good.
fn denial(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::PinIncorrect
            | RvError::PinLocked
            | RvError::PinExpired
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::UserPinNotInitialized
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
            | RvError::KeyFunctionNotPermitted
            | RvError::KeyTypeInconsistent
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
    )
}

/// The return value's name (`CKR_PIN_INCORRECT` reads as `PinIncorrect`), not the
/// paragraph cryptoki's `Display` gives for some.
fn short(err: &CkError) -> String {
    match err {
        CkError::Pkcs11(rv, function) => format!("{function:?} returned {rv:?}"),
        CkError::LibraryLoading(e) => format!("the module cannot be loaded ({e})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn a_wrong_pin_is_a_denial_and_a_failing_device_is_transient() {
        let e = classify(
            "logging in",
            CkError::Pkcs11(RvError::PinIncorrect, Function::Login),
        );
        assert!(matches!(e, TokenError::Denied { .. }), "{e}");
        assert!(e.to_string().contains("Login returned PinIncorrect"), "{e}");
        let e = classify(
            "decrypting",
            CkError::Pkcs11(RvError::DeviceRemoved, Function::Decrypt),
        );
        assert!(matches!(e, TokenError::Transient { .. }), "{e}");
    }
}
