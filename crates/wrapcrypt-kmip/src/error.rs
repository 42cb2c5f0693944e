//! One error type for every client call. Transport (`Connect`, `Tls`, `Io`),
//! encoding (`Codec`, `Malformed`) and protocol results (`Operation`) stay
//! apart, so a caller can tell "key manager unreachable" from "object revoked".
//! No variant carries key material.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::enums::{ObjectType, Operation, ResultReason};
use crate::ttlv::CodecError;

#[derive(Debug)]
#[non_exhaustive]
pub enum KmipError {
    /// A certificate, key or CA file could not be loaded.
    Config { path: PathBuf, detail: String },
    /// The TCP connection could not be made.
    Connect { addr: String, source: io::Error },
    /// The TLS handshake failed: a certificate refused by either side, or a
    /// protocol mismatch. `detail` is OpenSSL's reason.
    Tls { addr: String, detail: String },
    /// Reading or writing the connection failed after the handshake (a server
    /// that closes the connection here usually refused the client).
    Io { op: Operation, source: io::Error },
    /// The server's bytes are not valid TTLV.
    Codec { op: Operation, source: CodecError },
    /// Valid TTLV that lacks what the operation's response must hold.
    Malformed { op: Operation, what: String },
    /// The server answered the operation with a failure.
    Operation {
        op: Operation,
        reason: ResultReason,
        message: String,
    },
    /// The object is not what the caller asked for (type or length).
    WrongObject { id: String, what: String },
    /// A batch item the server did not run because an earlier one failed.
    Skipped { op: Operation },
}

impl KmipError {
    /// The server's result reason, when the server answered with one.
    pub fn reason(&self) -> Option<ResultReason> {
        match self {
            KmipError::Operation { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    pub(crate) fn wrong_type(id: &str, want: ObjectType, got: ObjectType) -> KmipError {
        KmipError::WrongObject {
            id: id.to_owned(),
            what: format!("is of type {got}, not {want}"),
        }
    }
}

impl fmt::Display for KmipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmipError::Config { path, detail } => {
                write!(f, "KMIP client: cannot load {}: {detail}", path.display())
            }
            KmipError::Connect { addr, source } => write!(
                f,
                "KMIP server {addr} unreachable: {source} (is the key manager running?)"
            ),
            KmipError::Tls { addr, detail } => write!(
                f,
                "KMIP server {addr}: TLS handshake failed: {detail} (check the client certificate, its key and the CA)"
            ),
            KmipError::Io { op, source }
                if matches!(
                    source.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                write!(f, "KMIP {op}: no answer from the key manager within the timeout")
            }
            KmipError::Io { op, source } => write!(f, "KMIP {op}: connection failed: {source}"),
            KmipError::Codec { op, source } => write!(f, "KMIP {op}: bad response: {source}"),
            KmipError::Malformed { op, what } => write!(f, "KMIP {op}: bad response: {what}"),
            KmipError::Operation { op, reason, message } => {
                write!(f, "KMIP {op} failed: {reason}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            KmipError::WrongObject { id, what } => write!(f, "KMIP object {id} {what}"),
            KmipError::Skipped { op } => {
                write!(f, "KMIP {op} not run: an earlier operation of its batch failed")
            }
        }
    }
}

impl std::error::Error for KmipError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KmipError::Connect { source, .. } | KmipError::Io { source, .. } => Some(source),
            KmipError::Codec { source, .. } => Some(source),
            _ => None,
        }
    }
}
