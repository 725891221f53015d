//! What a token's refusal means for a server: a definitive denial (the customer
//! changed the PIN, deleted or restricted the key: Inaccessible at once) or a
//! failure that may pass (the device is busy, unplugged or failing: retry).

use cryptoki::error::{Error as CkError, RvError};

use crate::KeyError;

/// `err` from doing `what` (e.g. "logging in to token 't1'"), classified.
pub(super) fn key_error(what: &str, err: CkError) -> KeyError {
    let reason = format!("{what}: {}", short(&err));
    match err {
        CkError::Pkcs11(rv, _) if denial(rv) => KeyError::Denied { reason },
        CkError::Pkcs11(..) => KeyError::Transient { reason },
        _ => KeyError::Invalid { reason },
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
        let e = key_error(
            "logging in",
            CkError::Pkcs11(RvError::PinIncorrect, Function::Login),
        );
        assert!(matches!(e, KeyError::Denied { .. }), "{e}");
        assert!(e.to_string().contains("Login returned PinIncorrect"), "{e}");
        let e = key_error(
            "decrypting",
            CkError::Pkcs11(RvError::DeviceRemoved, Function::Decrypt),
        );
        assert!(e.is_retryable(), "{e}");
    }
}
