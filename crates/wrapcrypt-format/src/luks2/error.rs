//! Typed errors of LUKS2 parsing and validation.

use std::fmt;

use super::copy::Copy;

/// A JSON section of the LUKS2 metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `keyslots`
    Keyslots,
    /// `tokens`
    Tokens,
    /// `segments`
    Segments,
    /// `digests`
    Digests,
    /// `config`
    Config,
    /// The top-level object.
    Root,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Keyslots => "keyslots",
            Section::Tokens => "tokens",
            Section::Segments => "segments",
            Section::Digests => "digests",
            Section::Config => "config",
            Section::Root => "metadata",
        })
    }
}

/// An on-disk area, for overlap reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// The two metadata copies.
    Metadata,
    /// A keyslot's binary area.
    Keyslot(u32),
    /// A data segment.
    Segment(u32),
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Area::Metadata => f.write_str("metadata area"),
            Area::Keyslot(i) => write!(f, "keyslot {i} area"),
            Area::Segment(i) => write!(f, "segment {i}"),
        }
    }
}

/// Errors in the 4096-byte binary header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BinaryError {
    /// Fewer than 4096 bytes.
    #[error("binary header truncated ({len} bytes)")]
    Truncated {
        /// bytes available
        len: usize,
    },
    /// Neither LUKS2 magic.
    #[error("no LUKS2 magic")]
    BadMagic,
    /// Version is not 2.
    #[error("unsupported header version {0}")]
    BadVersion(u16),
    /// hdr_size is not one of the nine allowed sizes.
    #[error("invalid metadata size {0}")]
    BadHdrSize(u64),
    /// A fixed-size string field has no NUL.
    #[error("binary header field {field} is not NUL-terminated")]
    Unterminated {
        /// field name
        field: &'static str,
    },
    /// A string field is not UTF-8.
    #[error("binary header field {field} is not valid UTF-8")]
    NotUtf8 {
        /// field name
        field: &'static str,
    },
    /// A string is too long for its field.
    #[error("{field} is too long (at most {max} bytes)")]
    TooLong {
        /// field name
        field: &'static str,
        /// maximum length
        max: usize,
    },
    /// Checksum algorithm not supported.
    #[error("unsupported header checksum algorithm {0}")]
    UnsupportedChecksum(String),
    /// Stored checksum does not match.
    #[error("header checksum mismatch")]
    ChecksumMismatch,
    /// hdr_offset does not match the copy's position.
    #[error("header offset {found} does not match its position {expected}")]
    WrongOffset {
        /// value in the header
        found: u64,
        /// where the copy was read
        expected: u64,
    },
}

/// Errors in the JSON metadata, naming section, id and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidateError {
    /// JSON text could not be parsed.
    #[error("JSON metadata is malformed: {0}")]
    Json(String),
    /// JSON area is not NUL after the JSON text.
    #[error("JSON area padding is not zero at offset {0}")]
    Padding(usize),
    /// JSON text has no terminating NUL inside its area.
    #[error("JSON area has no terminating NUL")]
    Unterminated,
    /// A required member is missing.
    #[error("{section}{}: missing member \"{field}\"", id_suffix(.id))]
    Missing {
        /// section
        section: Section,
        /// object id within the section
        id: Option<u32>,
        /// member name
        field: &'static str,
    },
    /// A member has the wrong type or an invalid value.
    #[error("{section}{}: invalid \"{field}\": {reason}", id_suffix(.id))]
    Invalid {
        /// section
        section: Section,
        /// object id within the section
        id: Option<u32>,
        /// member name
        field: String,
        /// why
        reason: String,
    },
    /// An object id is not a decimal number in range.
    #[error("{section}: invalid object id \"{id}\"")]
    BadId {
        /// section
        section: Section,
        /// the id text
        id: String,
    },
    /// A reference to an object that does not exist.
    #[error("{section} {id}: \"{field}\" refers to missing {target} {target_id}")]
    Dangling {
        /// section holding the reference
        section: Section,
        /// id of the referring object
        id: u32,
        /// member holding the reference
        field: &'static str,
        /// referenced section
        target: Section,
        /// referenced id
        target_id: String,
    },
    /// Two on-disk areas overlap.
    #[error("{a} overlaps {b}")]
    Overlap {
        /// first area
        a: Area,
        /// second area
        b: Area,
    },
    /// An area lies outside where it must be.
    #[error("{area} [{offset}, +{size}) lies outside its allowed range")]
    OutOfBounds {
        /// the area
        area: Area,
        /// byte offset
        offset: u64,
        /// byte size
        size: u64,
    },
}

fn id_suffix(id: &Option<u32>) -> String {
    match id {
        Some(i) => format!(" {i}"),
        None => String::new(),
    }
}

/// Why one metadata copy could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// Binary header problem.
    #[error("{copy} header: {err}")]
    Binary {
        /// copy
        copy: Copy,
        /// cause
        err: BinaryError,
    },
    /// JSON problem.
    #[error("{copy} header: {err}")]
    Json {
        /// copy
        copy: Copy,
        /// cause
        err: ValidateError,
    },
}

/// Errors loading a LUKS2 header from its two copies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not a LUKS2 device at all (no magic in either place).
    #[error("device is not a valid LUKS2 device")]
    NotLuks2,
    /// Both copies are damaged.
    #[error("both LUKS2 header copies are damaged: {primary}; {secondary}")]
    BothDamaged {
        /// why the primary failed
        primary: Box<CopyError>,
        /// why the secondary failed
        secondary: Box<CopyError>,
    },
    /// The buffer is shorter than the metadata size declared.
    #[error("header buffer too short: need {need} bytes, have {have}")]
    Short {
        /// bytes needed
        need: u64,
        /// bytes given
        have: usize,
    },
}
