//! One place that maps errors to cryptsetup's exit codes and messages.

use wrapcrypt_activate::ActivateError;
use wrapcrypt_ops::OpsError;
use wrapcrypt_provider::ProviderError;
use wrapcrypt_unlock::enroll::EnrollError;
use wrapcrypt_unlock::{PromptError, UnlockError};
use wrapcrypt_volume::rewrap::RewrapError;
use wrapcrypt_volume::{ExitClass, VolumeError};

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

/// The exit class of a code (anything unknown counts as wrong parameters).
pub fn class_of(code: i32) -> ExitClass {
    match code {
        2 => ExitClass::Permission,
        3 => ExitClass::OutOfMemory,
        4 => ExitClass::WrongDevice,
        5 => ExitClass::Busy,
        _ => ExitClass::WrongParams,
    }
}

impl From<PromptError> for CliError {
    fn from(e: PromptError) -> CliError {
        CliError::new(e.class as i32, e.message)
    }
}

impl From<UnlockError> for CliError {
    fn from(e: UnlockError) -> CliError {
        match e {
            UnlockError::Volume(v) => v.into(),
            UnlockError::Prompt(p) => p.into(),
            e => CliError::new(e.class() as i32, e.to_string()),
        }
    }
}

impl From<EnrollError> for CliError {
    fn from(e: EnrollError) -> CliError {
        match e {
            EnrollError::Volume(v) => v.into(),
            e => CliError::new(e.class() as i32, e.to_string()),
        }
    }
}

impl From<ActivateError> for CliError {
    fn from(e: ActivateError) -> CliError {
        CliError::new(e.exit_code(), e.to_string())
    }
}

impl From<RewrapError> for CliError {
    fn from(e: RewrapError) -> CliError {
        match e {
            RewrapError::Volume(v) => v.into(),
            RewrapError::Provider(p) => p.into(),
            e @ (RewrapError::VpMismatch { .. }
            | RewrapError::NotVolumeKey(_)
            | RewrapError::NoStagedKeyslot(_)) => CliError::new(2, e.to_string()),
            e => CliError::usage(e.to_string()),
        }
    }
}

impl From<OpsError> for CliError {
    fn from(e: OpsError) -> CliError {
        match e {
            OpsError::Usage(m) => CliError::usage(m),
            OpsError::Refused { class, message } => CliError::new(class as i32, message),
            OpsError::Provider(p) => p.into(),
            OpsError::Volume(v) => v.into(),
            OpsError::Rewrap(r) => r.into(),
            OpsError::Prompt(p) => p.into(),
            OpsError::Unlock(u) => u.into(),
            OpsError::Io(i) => i.into(),
            e => CliError::usage(e.to_string()),
        }
    }
}

impl From<ProviderError> for CliError {
    fn from(e: ProviderError) -> CliError {
        provider_error(&e)
    }
}

/// The one line (and exit code) of a workflow error, without consuming it.
pub fn ops_message(e: &OpsError) -> String {
    match e {
        OpsError::Provider(p) => provider_error(p).msg,
        other => other.to_string(),
    }
}

/// A provider error as the CLI reports it.
fn provider_error(e: &ProviderError) -> CliError {
    use std::io::ErrorKind;
    use wrapcrypt_provider::ErrorCode;
    // cryptsetup's codes (docs/provider-protocol.md §9): 2 where a
    // permission or a PIN is wrong, 1 for everything else, which is
    // what its translate_errno gives for EINVAL, ENOENT and the rest.
    match e {
        ProviderError::Connect { path, source } => {
            let code = match source.kind() {
                ErrorKind::PermissionDenied => 2,
                _ => 1,
            };
            let absent = matches!(
                source.kind(),
                ErrorKind::NotFound | ErrorKind::ConnectionRefused
            );
            let msg = if absent && wrapcrypt_provider::custodian::find_daemon().is_none() {
                format!(
                        "The key custodian is not running (nothing listens on {}) and cannot be started: wrapcrypt-custodiand is not installed beside wrapcrypt or on PATH.",
                        path.display()
                    )
            } else if code == 2 {
                format!(
                        "Cannot reach the key custodian at {}: permission denied (the socket or its directory belongs to another user).",
                        path.display()
                    )
            } else {
                format!(
                    "Cannot reach the key custodian at {}: {}.",
                    path.display(),
                    io_text(source)
                )
            };
            CliError::new(code, msg)
        }
        ProviderError::Spawn { program, source } => CliError::new(
            1,
            format!(
                "The key custodian is not running and could not be started ({}): {}.",
                program.display(),
                io_text(source)
            ),
        ),
        _ => {
            let code = match e.code() {
                ErrorCode::PermissionDenied => 2,
                _ => 1,
            };
            CliError::new(code, format!("Key provider error: {e}"))
        }
    }
}

/// An I/O error as a user reads it: "Permission denied", without Rust's
/// "(os error 13)" suffix; one line even if a daemon's message had more.
fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    };
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
