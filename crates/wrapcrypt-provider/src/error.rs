//! The provider error type and its wire codes.

use std::io;
use std::path::PathBuf;

use crate::wkb::WkbError;

/// Error code on the provider protocol (docs/provider-protocol.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Malformed or unexpected request.
    BadRequest,
    /// No protocol version in common.
    UnsupportedVersion,
    /// The peer's uid may not use this provider, or this operation.
    PermissionDenied,
    /// The blob does not parse or fails its integrity check.
    BadWkb,
    /// The blob names another provider.
    WrongProvider,
    /// The blob's wrapping key is in no register / not in the token.
    UnknownWrappingKey,
    /// The provider has no CURRENT wrapping key yet.
    NotInitialized,
    /// The register the operation needs is empty.
    EmptyRegister,
    /// Unwrapping failed authentication: the blob was altered.
    IntegrityFailure,
    /// The provider does not offer this operation (or policy forbids it).
    Unsupported,
    /// A parameter is out of range (sector size, key length, shm bounds).
    InvalidArgument,
    /// No such session.
    NoSuchSession,
    /// The provider is already initialised.
    AlreadyInitialized,
    /// Sealing or unsealing master keys at rest failed.
    SealFailure,
    /// Anything else inside the provider.
    Internal,
}

impl ErrorCode {
    /// Numeric wire value.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::PermissionDenied => 3,
            ErrorCode::BadWkb => 4,
            ErrorCode::WrongProvider => 5,
            ErrorCode::UnknownWrappingKey => 6,
            ErrorCode::NotInitialized => 7,
            ErrorCode::EmptyRegister => 8,
            ErrorCode::IntegrityFailure => 9,
            ErrorCode::Unsupported => 10,
            ErrorCode::InvalidArgument => 11,
            ErrorCode::NoSuchSession => 12,
            ErrorCode::AlreadyInitialized => 13,
            ErrorCode::SealFailure => 14,
            ErrorCode::Internal => 15,
        }
    }

    /// From a numeric wire value; unknown values become `Internal`.
    pub fn from_code(c: u16) -> ErrorCode {
        match c {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::PermissionDenied,
            4 => ErrorCode::BadWkb,
            5 => ErrorCode::WrongProvider,
            6 => ErrorCode::UnknownWrappingKey,
            7 => ErrorCode::NotInitialized,
            8 => ErrorCode::EmptyRegister,
            9 => ErrorCode::IntegrityFailure,
            10 => ErrorCode::Unsupported,
            11 => ErrorCode::InvalidArgument,
            12 => ErrorCode::NoSuchSession,
            13 => ErrorCode::AlreadyInitialized,
            14 => ErrorCode::SealFailure,
            _ => ErrorCode::Internal,
        }
    }
}

/// Error of a key-provider operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The blob does not parse.
    #[error("wrapped-key blob: {0}")]
    Wkb(#[from] WkbError),
    /// The blob was made by another provider.
    #[error("the wrapped key belongs to provider {found:?}, not {expected:?}")]
    WrongProvider {
        /// this provider
        expected: String,
        /// the blob's provider
        found: String,
    },
    /// The provider refused or failed the operation; `code` says why.
    #[error("{provider} provider: {message}")]
    Refused {
        /// which provider
        provider: String,
        /// typed reason
        code: ErrorCode,
        /// what failed and what to do, for a user
        message: String,
    },
    /// Could not reach the provider's daemon.
    #[error("cannot connect to the key custodian at {path}: {source}")]
    Connect {
        /// socket path
        path: PathBuf,
        /// why
        source: io::Error,
    },
    /// Could not start the provider's daemon.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// the executable
        program: PathBuf,
        /// why
        source: io::Error,
    },
    /// The connection to the provider failed mid-operation.
    #[error("key provider connection: {0}")]
    Transport(#[from] io::Error),
    /// The provider sent something this client does not understand.
    #[error("key provider protocol: {0}")]
    Protocol(String),
    /// A PKCS#11 call failed; `function` names it (`C_UnwrapKey`), `rv` is
    /// the module's return value (`CKR_PIN_INCORRECT`).
    #[error("pkcs11 provider: {message} ({function} returned {rv})")]
    Pkcs11 {
        /// the failing PKCS#11 function
        function: String,
        /// its CKR_ return value
        rv: String,
        /// typed reason
        code: ErrorCode,
        /// what failed and what to do, for a user
        message: String,
    },
}

impl ProviderError {
    /// A refusal with a typed code.
    pub fn refused(provider: &str, code: ErrorCode, message: impl Into<String>) -> Self {
        ProviderError::Refused {
            provider: provider.to_string(),
            code,
            message: message.into(),
        }
    }

    /// The wire code that describes this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProviderError::Wkb(_) => ErrorCode::BadWkb,
            ProviderError::WrongProvider { .. } => ErrorCode::WrongProvider,
            ProviderError::Refused { code, .. } | ProviderError::Pkcs11 { code, .. } => *code,
            ProviderError::Protocol(_) => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }
}
