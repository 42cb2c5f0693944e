//! Why a token or an unlock failed, with cryptsetup's exit class.

use wrapcrypt_volume::{ExitClass, VolumeError};

use crate::pkcs11::Pkcs11TokenError;
use crate::prompt::PromptError;
use crate::tpm2::Tpm2Error;

/// Why a token did not release its passphrase.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The TPM refused or was unreachable.
    #[error("{0}")]
    Tpm2(#[from] Tpm2Error),
    /// The PKCS#11 token refused or was unreachable.
    #[error("{0}")]
    Pkcs11(#[from] Pkcs11TokenError),
    /// The token's secret did not open the keyslot it names.
    #[error("keyslot {0} does not open with the token's secret")]
    Keyslot(u32),
    /// A credential was refused (an external handler's exit 2).
    #[error("{0}")]
    Denied(String),
    /// A PIN is needed and none was given.
    #[error("a PIN is needed (--pin-file, or --token-only to be asked)")]
    NeedPin,
    /// The token JSON is unusable.
    #[error("{0}")]
    Json(String),
    /// A question could not be answered.
    #[error("{0}")]
    Prompt(#[from] PromptError),
    /// Unlocking the keyslot failed otherwise.
    #[error("{0}")]
    Volume(#[from] VolumeError),
}

impl TokenError {
    /// cryptsetup's exit class: permission when a credential (PCR state,
    /// PIN, secret) is wrong, wrong parameters when the hardware or the
    /// token is unusable.
    pub fn class(&self) -> ExitClass {
        match self {
            TokenError::Tpm2(Tpm2Error::PolicyMismatch { .. })
            | TokenError::Tpm2(Tpm2Error::BadPin)
            | TokenError::Tpm2(Tpm2Error::Lockout)
            | TokenError::Keyslot(_)
            | TokenError::Denied(_)
            | TokenError::NeedPin => ExitClass::Permission,
            TokenError::Pkcs11(e) if e.is_permission() => ExitClass::Permission,
            TokenError::Volume(e) => e.class(),
            TokenError::Prompt(e) => e.class,
            _ => ExitClass::WrongParams,
        }
    }
}

/// Why `unlock` found no volume key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnlockError {
    /// A token was asked for on a LUKS1 header.
    #[error("LUKS1 devices have no tokens.")]
    NoTokensOnLuks1,
    /// `--token-only`: the last token tried failed.
    #[error("Token {id} cannot unlock the volume: {source}.")]
    TokenFailed {
        /// The token id.
        id: u32,
        /// Why.
        source: TokenError,
    },
    /// `--token-only` and no token could be tried.
    #[error("No usable token is available.")]
    NoUsableToken,
    /// The passphrase could not be read.
    #[error("{0}")]
    Prompt(#[from] PromptError),
    /// The keyslot did not open (wrong passphrase and the rest).
    #[error("{0}")]
    Volume(#[from] VolumeError),
}

impl UnlockError {
    /// cryptsetup's exit class.
    pub fn class(&self) -> ExitClass {
        match self {
            UnlockError::NoTokensOnLuks1 | UnlockError::NoUsableToken => ExitClass::WrongParams,
            UnlockError::TokenFailed { source, .. } => source.class(),
            UnlockError::Prompt(e) => e.class,
            UnlockError::Volume(e) => e.class(),
        }
    }
}
