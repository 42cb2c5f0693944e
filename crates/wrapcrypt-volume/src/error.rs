//! Errors of volume operations, with cryptsetup's exit-code classes.

use wrapcrypt_format::keyslot_crypto::KeyslotCryptoError;
use wrapcrypt_format::luks1::Luks1Error;
use wrapcrypt_format::luks2::{EncodeError, ParseError, ValidateError};

/// cryptsetup's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    /// 1: wrong parameters.
    WrongParams = 1,
    /// 2: no permission (bad passphrase).
    Permission = 2,
    /// 3: out of memory.
    OutOfMemory = 3,
    /// 4: wrong device specified.
    WrongDevice = 4,
    /// 5: device already exists or device is busy.
    Busy = 5,
}

/// Errors of operations on a LUKS device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// The device could not be opened or read.
    #[error("Device {path} {}.", device_problem(.source))]
    Device {
        /// device path
        path: String,
        /// cause
        source: std::io::Error,
    },
    /// I/O failed during an operation.
    #[error("{op} failed on {path}: {source}")]
    Io {
        /// what was being done
        op: &'static str,
        /// device path
        path: String,
        /// cause
        source: std::io::Error,
    },
    /// Not a LUKS device.
    #[error("Device {0} is not a valid LUKS device.")]
    NotLuks(String),
    /// Both header copies are damaged.
    #[error("{0}")]
    Parse(ParseError),
    /// A LUKS1 header is invalid (on disk, or as it would be written).
    #[error("{0}")]
    Luks1(Luks1Error),
    /// Metadata would be invalid.
    #[error("invalid metadata: {0}")]
    Validate(#[from] ValidateError),
    /// Metadata does not fit.
    #[error("{0}")]
    Encode(#[from] EncodeError),
    /// No keyslot opened with the passphrase.
    #[error("No key available with this passphrase.")]
    NoMatchingKeyslot,
    /// No keyslot could be tried at all (none active, or none bound to the
    /// data segment): cryptsetup's -ENOENT, exit 1.
    #[error("No usable keyslot is available.")]
    NoUsableKeyslot,
    /// The given keyslot is not active.
    #[error("Keyslot {0} is not active.")]
    KeyslotInactive(u32),
    /// The given keyslot is already active.
    #[error("Key slot {0} is full, please select another one.")]
    KeyslotFull(u32),
    /// Keyslot number out of range.
    #[error("Key slot {0} is invalid.")]
    KeyslotInvalid(u32),
    /// No free keyslot (or no room in the keyslots area).
    #[error("All key slots full.")]
    NoFreeKeyslot,
    /// Keyslot crypto failure.
    #[error("{0}")]
    Crypto(#[from] KeyslotCryptoError),
    /// The header has mandatory requirements this version cannot meet.
    #[error("Unmet LUKS2 requirements detected ({0}).")]
    Requirements(String),
    /// The device is too small for the requested layout.
    #[error("Device {path} is too small. (LUKS2 requires at least {need} bytes.)")]
    TooSmall {
        /// device path
        path: String,
        /// bytes needed
        need: u64,
    },
    /// A parameter is wrong.
    #[error("{0}")]
    Param(String),
    /// The operation does not apply to this format.
    #[error("{0}")]
    Unsupported(String),
    /// A volume key does not match the header's digest.
    #[error("Volume key does not match the volume.")]
    VolumeKeyMismatch,
    /// Busy or exists.
    #[error("{0}")]
    Busy(String),
}

fn device_problem(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            "does not exist or access denied".into()
        }
        std::io::ErrorKind::InvalidInput => "is not compatible".into(),
        _ => format!("cannot be used: {e}"),
    }
}

impl VolumeError {
    /// The cryptsetup exit code class.
    pub fn class(&self) -> ExitClass {
        use VolumeError::*;
        match self {
            Device { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                ExitClass::Permission
            }
            Device { .. } | TooSmall { .. } => ExitClass::WrongDevice,
            NotLuks(_) => ExitClass::WrongParams,
            Io { .. } | Parse(_) => ExitClass::WrongDevice,
            Luks1(_) => ExitClass::WrongParams,
            NoMatchingKeyslot | VolumeKeyMismatch => ExitClass::Permission,
            Busy(_) => ExitClass::Busy,
            Crypto(KeyslotCryptoError::Kdf(m)) if m.contains("memory") => ExitClass::OutOfMemory,
            _ => ExitClass::WrongParams,
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> VolumeError {
        VolumeError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }
}
