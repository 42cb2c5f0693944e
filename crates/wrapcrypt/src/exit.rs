//! One place that maps errors to cryptsetup's exit codes and messages.

use wrapcrypt_volume::VolumeError;

/// An error the CLI reports: one line and an exit code.
#[derive(Debug)]
pub struct CliError {
    /// Exit code (cryptsetup's: 1 params, 2 permission/passphrase, 3 memory,
    /// 4 wrong device, 5 busy/exists).
    pub code: i32,
    /// The line printed on stderr.
    pub msg: String,
}

impl CliError {
    /// Wrong parameters (exit 1).
    pub fn usage(msg: impl Into<String>) -> CliError {
        CliError {
            code: 1,
            msg: msg.into(),
        }
    }

    /// A specific exit code.
    pub fn new(code: i32, msg: impl Into<String>) -> CliError {
        CliError {
            code,
            msg: msg.into(),
        }
    }
}

impl From<VolumeError> for CliError {
    fn from(e: VolumeError) -> CliError {
        CliError {
            code: e.class() as i32,
            msg: e.to_string(),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => 4,
            std::io::ErrorKind::PermissionDenied => 2,
            std::io::ErrorKind::OutOfMemory => 3,
            _ => 1,
        };
        CliError {
            code,
            msg: e.to_string(),
        }
    }
}
