//! `segments` section: where the encrypted data lives and how.

use serde_json::{Map, Value};

use super::error::{Section, ValidateError};
use super::jsonutil::{u64s, Obj};

/// Maximum segment id + 1.
pub const SEGMENTS_MAX: u32 = 32;

/// Flag of the segment that holds the old key's (or plain) layout during
/// a reencryption.
pub const FLAG_BACKUP_PREVIOUS: &str = "backup-previous";
/// Flag of the segment that holds the new key's (or plain) layout.
pub const FLAG_BACKUP_FINAL: &str = "backup-final";
/// Flag of the segment that describes data moved by a data shift.
pub const FLAG_BACKUP_MOVED: &str = "backup-moved-segment";
/// Flag of a regular segment being rewritten (the hotzone).
pub const FLAG_IN_REENCRYPTION: &str = "in-reencryption";
/// Prefix that makes a segment a backup segment: a description kept for
/// the reencryption, outside the data layout.
pub const BACKUP_PREFIX: &str = "backup-";

/// Size of a data segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentSize {
    /// Up to the end of the device.
    Dynamic,
    /// A fixed size in bytes.
    Fixed(u64),
}

/// One segment object.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// "crypt" or "linear".
    pub kind: String,
    /// Byte offset of the data from the device start.
    pub offset: u64,
    /// Size.
    pub size: SegmentSize,
    /// IV offset in 512-byte sectors (crypt).
    pub iv_tweak: u64,
    /// Cipher spec (crypt).
    pub encryption: Option<String>,
    /// Encryption sector size (crypt).
    pub sector_size: u32,
    /// Segment flags (e.g. in-reencryption markers).
    pub flags: Option<Vec<String>>,
    /// Unknown members (integrity, …), preserved.
    pub extra: Map<String, Value>,
}

impl Segment {
    pub(crate) fn from_json(id: u32, v: &Value) -> Result<Segment, ValidateError> {
        let o = Obj::of(Section::Segments, Some(id), v, "segment")?;
        let kind = o.req_str("type")?.to_string();
        let offset = o.req_u64s("offset")?;
        let size = match o.req("size")? {
            Value::String(s) if s == "dynamic" => SegmentSize::Dynamic,
            _ => SegmentSize::Fixed(o.req_u64s("size")?),
        };
        let flags = o.opt_str_array("flags")?;
        let (iv_tweak, encryption, sector_size) = if kind == "crypt" {
            let ss = o.req_u32("sector_size")?;
            if !matches!(ss, 512 | 1024 | 2048 | 4096) {
                return Err(o.err("sector_size", "must be 512, 1024, 2048 or 4096"));
            }
            (
                o.req_u64s("iv_tweak")?,
                Some(o.req_str("encryption")?.to_string()),
                ss,
            )
        } else {
            (0, None, 512)
        };
        if !offset.is_multiple_of(512) {
            return Err(o.err("offset", "not aligned to 512 bytes"));
        }
        if let SegmentSize::Fixed(s) = size {
            if s == 0 {
                return Err(o.err("size", "must not be zero"));
            }
            if !s.is_multiple_of(sector_size as u64) {
                return Err(o.err("size", "not a multiple of the sector size"));
            }
        }
        Ok(Segment {
            extra: o.rest(&[
                "type",
                "offset",
                "size",
                "iv_tweak",
                "encryption",
                "sector_size",
                "flags",
            ]),
            kind,
            offset,
            size,
            iv_tweak,
            encryption,
            sector_size,
            flags,
        })
    }

    /// Whether the segment has flag `flag`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().flatten().any(|f| f == flag)
    }

    /// A backup segment (a flag starting with `backup-`) describes a layout
    /// for the reencryption; it is not part of the data layout, so the
    /// ordering and overlap rules do not apply to it.
    pub fn is_backup(&self) -> bool {
        self.flags
            .iter()
            .flatten()
            .any(|f| f.starts_with(BACKUP_PREFIX))
    }

    /// Same layout as `other` (cryptsetup's segment comparison): same type
    /// and, for crypt segments, same cipher and sector size.
    pub fn same_layout(&self, other: &Segment) -> bool {
        self.kind == other.kind
            && (self.kind != "crypt"
                || (self.encryption == other.encryption && self.sector_size == other.sector_size))
    }

    /// End offset in bytes; `None` for a dynamic segment.
    pub fn end(&self) -> Option<u64> {
        match self.size {
            SegmentSize::Fixed(s) => self.offset.checked_add(s),
            SegmentSize::Dynamic => None,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), self.kind.clone().into());
        m.insert("offset".into(), u64s(self.offset));
        m.insert(
            "size".into(),
            match self.size {
                SegmentSize::Dynamic => "dynamic".into(),
                SegmentSize::Fixed(s) => u64s(s),
            },
        );
        if self.kind == "crypt" {
            m.insert("iv_tweak".into(), u64s(self.iv_tweak));
            m.insert(
                "encryption".into(),
                self.encryption.clone().unwrap_or_default().into(),
            );
            m.insert("sector_size".into(), self.sector_size.into());
        }
        if let Some(f) = &self.flags {
            m.insert("flags".into(), f.clone().into());
        }
        m.extend(self.extra.clone());
        Value::Object(m)
    }
}
