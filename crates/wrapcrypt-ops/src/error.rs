//! Why a workflow failed. Provider, volume and re-wrap errors stay typed so
//! that the command line maps each to cryptsetup's exit code in one place.

use wrapcrypt_provider::ProviderError;
use wrapcrypt_unlock::{PromptError, UnlockError};
use wrapcrypt_volume::rewrap::RewrapError;
use wrapcrypt_volume::{ExitClass, VolumeError};

/// An error of a workflow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The request does not fit the volume or the options (exit 1).
    #[error("{0}")]
    Usage(String),
    /// Refused with another exit class, with the line to print.
    #[error("{message}")]
    Refused {
        /// cryptsetup's exit class.
        class: ExitClass,
        /// The line a user reads.
        message: String,
    },
    /// The key provider failed.
    #[error("{0}")]
    Provider(#[from] ProviderError),
    /// The volume failed.
    #[error("{0}")]
    Volume(#[from] VolumeError),
    /// A re-wrap step failed.
    #[error("{0}")]
    Rewrap(#[from] RewrapError),
    /// A question was not answered.
    #[error("{0}")]
    Prompt(#[from] PromptError),
    /// Unlocking failed.
    #[error("{0}")]
    Unlock(#[from] UnlockError),
    /// A file outside the volume (a header backup) failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl OpsError {
    /// Wrong parameters, with the line to print.
    pub fn usage(message: impl Into<String>) -> Self {
        OpsError::Usage(message.into())
    }

    /// Refused with `class`.
    pub fn refused(class: ExitClass, message: impl Into<String>) -> Self {
        OpsError::Refused {
            class,
            message: message.into(),
        }
    }
}
