//! A KMIP 1.2 client for wrapcrypt.
//!
//! * [`ttlv`] — the sans-I/O Tag-Type-Length-Value codec: bytes in, items out,
//!   typed errors for every malformed input, never a panic (fuzzable).
//! * [`tag`] and [`enums`] — the numeric values of the KMIP 1.2 specification
//!   that this client uses.
//! * [`message`] — request messages and response batch items (still sans-I/O).
//! * [`ops`] — the payloads of the operations implemented (Create, Activate,
//!   Get, Get Attributes, Locate, Revoke, Destroy).
//! * [`client`] — [`KmipClient`], which sends them over TLS with a client
//!   certificate.
//!
//! Key bytes only ever leave this crate inside a
//! [`wrapcrypt_secret::SecretBytes`]; `Debug` of a byte string prints its
//! length, never its content. See docs/kmip.md.

pub mod client;
pub mod config;
pub mod enums;
pub mod error;
pub mod message;
pub mod ops;
pub mod tag;
pub mod ttlv;

pub use client::{ClientConfig, KmipClient};
pub use config::KmipConfig;
pub use enums::{
    CryptographicAlgorithm, ObjectType, Operation, ResultReason, ResultStatus,
    RevocationReasonCode, State,
};
pub use error::KmipError;
pub use ops::{Attributes, GcmSealed, KeySpec, LocateQuery};
pub use ttlv::{CodecError, ItemType, Tag, Ttlv, Value};
