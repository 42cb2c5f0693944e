//! Mapping of `cryptoki` errors to [`ProviderError`], naming the failing call.

use cryptoki::context::Function;
use cryptoki::error::{Error, RvError};

use crate::error::{ErrorCode, ProviderError};
use crate::pkcs11::PKCS11;

/// `PinIncorrect` → `CKR_PIN_INCORRECT`.
pub(crate) fn ckr_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn code_of(rv: RvError) -> ErrorCode {
    match rv {
        RvError::PinIncorrect
        | RvError::PinLocked
        | RvError::PinLenRange
        | RvError::PinExpired
        | RvError::UserNotLoggedIn => ErrorCode::PermissionDenied,
        RvError::MechanismInvalid | RvError::FunctionNotSupported => ErrorCode::Unsupported,
        RvError::WrappedKeyInvalid
        | RvError::WrappedKeyLenRange
        | RvError::EncryptedDataInvalid
        | RvError::EncryptedDataLenRange => ErrorCode::IntegrityFailure,
        RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid => ErrorCode::UnknownWrappingKey,
        _ => ErrorCode::Internal,
    }
}

/// A `ProviderError` for a failed cryptoki call; `what` says what wrapcrypt
/// was doing, in words a user can act on.
pub(crate) fn p11_err(what: impl Into<String>, e: Error) -> ProviderError {
    let what = what.into();
    match e {
        Error::Pkcs11(rv, f) => {
            // SoftHSM2 reports a failed RFC 5649 integrity check as
            // CKR_GENERAL_ERROR; for an unwrap that is what it means.
            let unwrap_failed = matches!(f, Function::UnwrapKey)
                && matches!(
                    rv,
                    RvError::GeneralError
                        | RvError::WrappedKeyInvalid
                        | RvError::EncryptedDataInvalid
                );
            let hint = match rv {
                _ if unwrap_failed => {
                    ": the wrapped key does not unwrap under this wrapping key (altered blob, or another key with the same identity)"
                }
                RvError::PinIncorrect => ": wrong PIN",
                RvError::PinLocked => ": the PIN is locked; the security officer must reset it",
                RvError::MechanismInvalid => {
                    ": the module does not offer this mechanism (p11-kit's RPC forwards no AES key wrap, see docs/pkcs11.md)"
                }
                _ => "",
            };
            ProviderError::Pkcs11 {
                function: format!("C_{f:?}"),
                rv: ckr_name(rv),
                code: if unwrap_failed {
                    ErrorCode::IntegrityFailure
                } else {
                    code_of(rv)
                },
                message: format!("{what}{hint}"),
            }
        }
        other => ProviderError::refused(PKCS11, ErrorCode::Internal, format!("{what}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(ckr_name(RvError::MechanismInvalid), "CKR_MECHANISM_INVALID");
        let e = p11_err(
            "logging in to token 't'",
            Error::Pkcs11(RvError::PinIncorrect, Function::Login),
        );
        assert_eq!(e.code(), ErrorCode::PermissionDenied);
        assert_eq!(
            e.to_string(),
            "pkcs11 provider: logging in to token 't': wrong PIN (C_Login returned CKR_PIN_INCORRECT)"
        );
    }
}
