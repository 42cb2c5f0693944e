//! The error type of activation, close and status.

use std::io;
use std::path::PathBuf;

/// Why opening, closing or querying an activated volume failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActivateError {
    /// The mapping name is empty, too long, or has characters other than
    /// `A-Z a-z 0-9 . _ + -` (or starts with `.`).
    #[error("invalid device name {0:?}")]
    InvalidName(String),
    /// A volume with this name is already active (or `/dev/mapper/NAME` exists).
    #[error("device {0} already exists")]
    AlreadyActive(String),
    /// No volume with this name is active.
    #[error("device {0} is not active")]
    NotActive(String),
    /// The server of this volume had died; its leftovers were removed.
    #[error("device {0} was not active any more (its server had died); cleaned up")]
    ServerDied(String),
    /// The backing device is already used by another active volume.
    #[error("backing device {backing} is already in use by {by}")]
    BackingInUse {
        /// the backing path given
        backing: PathBuf,
        /// the active volume's name, or what holds it
        by: String,
    },
    /// The block device is still in use (mounted, or held open).
    #[error("device {0} is still in use")]
    Busy(String),
    /// The backing device is smaller than `data_offset + data_size`, or the
    /// data area is not a whole number of sectors.
    #[error("backing device {backing} has {have} bytes, the data segment needs {need}")]
    BackingTooSmall {
        /// the backing path
        backing: PathBuf,
        /// bytes present
        have: u64,
        /// bytes needed
        need: u64,
    },
    /// The sector size of the cipher is not 512..=4096, a power of two.
    #[error("unsupported sector size {0}")]
    SectorSize(usize),
    /// The kernel speaks a FUSE protocol older than 7.28 (no 1 MiB requests).
    #[error("kernel FUSE protocol 7.{0} is too old (need 7.28)")]
    FuseProtocol(u32),
    /// A system call failed; `what` names it and `path` the object.
    #[error("{what} {path}: {source}")]
    Io {
        /// the failed operation, e.g. "mount FUSE on"
        what: &'static str,
        /// the file or device it acted on
        path: PathBuf,
        /// the OS error
        #[source]
        source: io::Error,
    },
    /// The state file is unreadable.
    #[error("state file {path}: {source}")]
    State {
        /// the state file
        path: PathBuf,
        /// the parse error
        #[source]
        source: serde_json::Error,
    },
    /// The server process did not report readiness in time.
    #[error("the volume server did not become ready within {0:?}")]
    Timeout(std::time::Duration),
    /// The server process exited or failed before becoming ready.
    #[error("volume server failed: {message}")]
    Server {
        /// cryptsetup-style exit code the server chose for its error
        code: i32,
        /// the server's one-line reason
        message: String,
    },
}

impl ActivateError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ActivateError::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// The cryptsetup exit code for this error (1 wrong parameters, 2 no
    /// permission, 3 out of memory, 4 wrong device, 5 busy or exists).
    pub fn exit_code(&self) -> i32 {
        match self {
            ActivateError::InvalidName(_) | ActivateError::SectorSize(_) => 1,
            ActivateError::AlreadyActive(_)
            | ActivateError::BackingInUse { .. }
            | ActivateError::Busy(_) => 5,
            ActivateError::NotActive(_)
            | ActivateError::ServerDied(_)
            | ActivateError::BackingTooSmall { .. } => 4,
            ActivateError::Io { source, .. } => match source.raw_os_error() {
                Some(libc::EBUSY) | Some(libc::EEXIST) => 5,
                Some(libc::EACCES) | Some(libc::EPERM) => 2,
                Some(libc::ENOMEM) => 3,
                Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) => 4,
                _ => 1,
            },
            ActivateError::Server { code, .. } => *code,
            _ => 1,
        }
    }
}
