//! The `reencrypt` keyslot type: no key, but the state of a reencryption
//! in progress (mode, direction) and its resilience area, which protects
//! the hotzone being rewritten (checksums, a journal copy, or the room left
//! by a data shift).
//!
//! Rules follow cryptsetup 2.6's reencrypt keyslot validation, taken from
//! headers it writes and from its behaviour on edited ones.

use std::fmt;

use super::{Keyslot, KeyslotHandler};
use crate::luks2::error::{Section, ValidateError};
use crate::luks2::jsonutil::{parse_u64_str, Obj};

/// What the reencryption does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReencryptMode {
    /// Old key (and cipher) to new.
    Reencrypt,
    /// Plain data to encrypted.
    Encrypt,
    /// Encrypted data to plain.
    Decrypt,
}

impl ReencryptMode {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReencryptMode::Reencrypt => "reencrypt",
            ReencryptMode::Encrypt => "encrypt",
            ReencryptMode::Decrypt => "decrypt",
        }
    }
}

/// Which way the hotzone moves over the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReencryptDirection {
    /// From the start of the data towards its end.
    Forward,
    /// From the end of the data towards its start.
    Backward,
}

impl ReencryptDirection {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReencryptDirection::Forward => "forward",
            ReencryptDirection::Backward => "backward",
        }
    }
}

/// How the hotzone is protected against a crash (the area `type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resilience {
    /// Checksums of the hotzone's blocks are kept in the area.
    Checksum {
        /// Checksum hash.
        hash: String,
        /// Bytes covered by each checksum.
        sector_size: u32,
    },
    /// A copy of the hotzone is kept in the area.
    Journal,
    /// No protection.
    None,
    /// Data is moved by `shift_size`, so the hotzone never overwrites
    /// itself (encryption or reencryption that moves the data).
    Datashift {
        /// Bytes the data moves.
        shift_size: u64,
    },
    /// Decryption that moves the data: the moved first part is protected by
    /// the data shift, the rest by checksums.
    DatashiftChecksum {
        /// Checksum hash.
        hash: String,
        /// Bytes covered by each checksum.
        sector_size: u32,
        /// Bytes the data moves. cryptsetup's validator does not require it
        /// for this type (its loader does).
        shift_size: Option<u64>,
    },
    /// Like `DatashiftChecksum`, with a journal for the rest.
    DatashiftJournal {
        /// Bytes the data moves.
        shift_size: u64,
    },
    /// An area type cryptsetup's validator lets through without a meaning.
    Other(String),
}

impl Resilience {
    /// The area `type` string.
    pub fn as_str(&self) -> &str {
        match self {
            Resilience::Checksum { .. } => "checksum",
            Resilience::Journal => "journal",
            Resilience::None => "none",
            Resilience::Datashift { .. } => "datashift",
            Resilience::DatashiftChecksum { .. } => "datashift-checksum",
            Resilience::DatashiftJournal { .. } => "datashift-journal",
            Resilience::Other(s) => s,
        }
    }

    /// Bytes the data moves, for the datashift types.
    pub fn shift_size(&self) -> Option<u64> {
        match self {
            Resilience::Datashift { shift_size } | Resilience::DatashiftJournal { shift_size } => {
                Some(*shift_size)
            }
            Resilience::DatashiftChecksum { shift_size, .. } => *shift_size,
            _ => None,
        }
    }
}

impl fmt::Display for Resilience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Typed view of a `reencrypt` keyslot. Its members stay in
/// [`Keyslot::extra`] and [`super::KeyslotArea::extra`], so a rewrite
/// keeps them exactly as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReencryptKeyslot {
    /// What the reencryption does.
    pub mode: ReencryptMode,
    /// Which way it goes.
    pub direction: ReencryptDirection,
    /// How the hotzone is protected.
    pub resilience: Resilience,
}

impl KeyslotHandler for ReencryptKeyslot {
    const TYPE: &'static str = "reencrypt";
    const MEMBERS: &'static [&'static str] = &[];

    fn from_keyslot(id: u32, ks: &Keyslot) -> Result<Self, ValidateError> {
        let o = Obj {
            section: Section::Keyslots,
            id: Some(id),
            map: &ks.extra,
        };
        let area = Obj {
            section: Section::Keyslots,
            id: Some(id),
            map: &ks.area.extra,
        };
        if ks.key_size != 1 {
            return Err(o.err("key_size", "a reencrypt keyslot has key_size 1"));
        }
        let mode = match o.req_str("mode")? {
            "reencrypt" => ReencryptMode::Reencrypt,
            "encrypt" => ReencryptMode::Encrypt,
            "decrypt" => ReencryptMode::Decrypt,
            m => return Err(o.err("mode", &format!("unknown reencryption mode \"{m}\""))),
        };
        let direction = match o.req_str("direction")? {
            "forward" => ReencryptDirection::Forward,
            "backward" => ReencryptDirection::Backward,
            d => {
                return Err(o.err(
                    "direction",
                    &format!("unknown reencryption direction \"{d}\""),
                ))
            }
        };
        let checksum = || -> Result<(String, u32), ValidateError> {
            let hash = area.req_str("hash")?.to_string();
            let sector_size = area.req_u32("sector_size")?;
            if sector_size < 512 || !sector_size.is_power_of_two() {
                return Err(area.err(
                    "sector_size",
                    "checksum block size must be a power of 2, at least 512",
                ));
            }
            Ok((hash, sector_size))
        };
        let shift = || -> Result<u64, ValidateError> {
            let s = area.req_str("shift_size")?;
            match parse_u64_str(s) {
                Some(v) if v > 0 && v.is_multiple_of(512) => Ok(v),
                _ => Err(area.err("shift_size", "must be a non-zero multiple of 512 bytes")),
            }
        };
        let resilience = match ks.area.kind.as_str() {
            "checksum" => {
                let (hash, sector_size) = checksum()?;
                Resilience::Checksum { hash, sector_size }
            }
            "datashift-checksum" => {
                let (hash, sector_size) = checksum()?;
                let shift_size = area
                    .get("shift_size")
                    .and_then(|v| v.as_str())
                    .and_then(parse_u64_str);
                Resilience::DatashiftChecksum {
                    hash,
                    sector_size,
                    shift_size,
                }
            }
            "journal" => Resilience::Journal,
            "none" => Resilience::None,
            "datashift" => Resilience::Datashift {
                shift_size: shift()?,
            },
            "datashift-journal" => Resilience::DatashiftJournal {
                shift_size: shift()?,
            },
            other => Resilience::Other(other.to_string()),
        };
        Ok(ReencryptKeyslot {
            mode,
            direction,
            resilience,
        })
    }
}
