//! Why the custodian's sealed state could not be loaded or saved (shared
//! by the file and TPM sealers).

use std::io;
use std::path::PathBuf;

/// Why master keys could not be sealed or unsealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// A state file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// the file
        path: PathBuf,
        /// why
        source: io::Error,
    },
    /// A state file has the wrong size or fails authentication.
    #[error("{0}: damaged, or sealed under another storage key")]
    Corrupt(PathBuf),
    /// A state file is readable by others than its owner.
    #[error("{0}: must be mode 0600 (0700 for the directory) and owned by this user")]
    Permissions(PathBuf),
    /// The TPM refused or failed.
    #[error("TPM ({tcti}): {message}")]
    Tpm {
        /// which TPM
        tcti: String,
        /// what failed
        message: String,
    },
}
