//! LUKS2: two metadata copies, each a binary header plus a JSON area.

pub mod binary;
pub mod config;
pub mod copy;
pub mod digest;
pub mod error;
mod jsonutil;
pub mod keyslot;
pub mod metadata;
pub mod reencrypt;
pub mod segment;
pub mod token;

pub use binary::{BinaryHeader, Copy, BIN_HDR_SIZE, METADATA_SIZES};
pub use config::Config;
pub use digest::Digest;
pub use error::{Area, BinaryError, CopyError, ParseError, Section, ValidateError};
pub use keyslot::{
    AfParams, Keyslot, KeyslotArea, KeyslotHandler, KeyslotKdf, Luks2Keyslot, ReencryptDirection,
    ReencryptKeyslot, ReencryptMode, Resilience, KEYSLOTS_MAX,
};
pub use metadata::Metadata;
pub use reencrypt::ReencryptInfo;
pub use segment::{Segment, SegmentSize};
pub use token::{Token, TOKENS_MAX};

use serde_json::Value;

/// Largest prefix of a device that can hold both metadata copies.
pub const MAX_METADATA_PREFIX: usize = 2 * 0x400000;

/// A decoded LUKS2 header: the fields both copies share plus the JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Luks2Header {
    /// Metadata size of each copy (binary header + JSON area).
    pub hdr_size: u64,
    /// Sequence id.
    pub seqid: u64,
    /// Label.
    pub label: String,
    /// Subsystem.
    pub subsystem: String,
    /// UUID.
    pub uuid: String,
    /// Checksum algorithm.
    pub checksum_alg: String,
    /// Salts of the primary and secondary copy.
    pub salts: [[u8; 64]; 2],
    /// JSON metadata.
    pub meta: Metadata,
    /// The JSON as read, so a rewrite keeps the member order the writer
    /// (any cryptsetup version) chose; not part of equality.
    pub original: OriginalJson,
}

/// JSON as read from disk, used only for member order.
#[derive(Debug, Clone, Default)]
pub struct OriginalJson(pub Option<Value>);

impl PartialEq for OriginalJson {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Reorders the members of `new` (recursively) so that members that also
/// exist in `old` come first, in `old`'s order; new members follow.
pub fn reorder_like(new: &mut Value, old: &Value) {
    if let (Value::Object(n), Value::Object(o)) = (&mut *new, old) {
        let mut taken = std::mem::take(n);
        for (k, ov) in o {
            if let Some(mut v) = taken.shift_remove(k) {
                reorder_like(&mut v, ov);
                n.insert(k.clone(), v);
            }
        }
        for (k, v) in taken {
            n.insert(k, v);
        }
    }
}

/// The result of reading both copies.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The header in force (the valid copy with the higher seqid).
    pub header: Luks2Header,
    /// The copy that is damaged or stale and should be rewritten, and why.
    pub needs_repair: Option<(Copy, RepairReason)>,
    /// Binary fields of the primary copy as read (for dumps).
    pub primary_binary: Option<BinaryHeader>,
}

/// Why a copy needs rewriting.
#[derive(Debug, Clone, PartialEq)]
pub enum RepairReason {
    /// It failed to parse or validate.
    Damaged(CopyError),
    /// It is valid but older (lower seqid) or differs.
    Stale,
}

/// Parses one metadata copy (`area` holds exactly `hdr_size` bytes).
pub fn parse_copy(
    area: &[u8],
    expected_offset: u64,
) -> Result<(BinaryHeader, Metadata, Value), CopyError> {
    let bin = BinaryHeader::parse(area).map_err(|err| CopyError::Binary {
        copy: copy_at(expected_offset),
        err,
    })?;
    let copy = bin.copy;
    // The magic must be the one of the position read: a secondary at
    // offset 0 (or a primary at hdr_size) is not a valid copy there.
    if copy != copy_at(expected_offset) {
        return Err(CopyError::Binary {
            copy: copy_at(expected_offset),
            err: BinaryError::BadMagic,
        });
    }
    let berr = |err| CopyError::Binary { copy, err };
    if area.len() < bin.hdr_size as usize {
        return Err(berr(BinaryError::Truncated { len: area.len() }));
    }
    let area = &area[..bin.hdr_size as usize];
    if bin.hdr_offset != expected_offset {
        return Err(berr(BinaryError::WrongOffset {
            found: bin.hdr_offset,
            expected: expected_offset,
        }));
    }
    binary::verify(&bin.checksum_alg, area).map_err(berr)?;
    let jerr = |err| CopyError::Json { copy, err };
    let json = parse_json_area(&area[BIN_HDR_SIZE..]).map_err(jerr)?;
    let meta = Metadata::from_json(&json).map_err(jerr)?;
    meta.validate_layout(bin.hdr_size, true)
        .or_else(|e| match e {
            // Segment placement depends on whether the header is detached;
            // the volume layer checks that with the device in hand.
            ValidateError::Overlap {
                b: Area::Segment(_),
                ..
            } if matches!(
                e,
                ValidateError::Overlap {
                    a: Area::Metadata,
                    ..
                }
            ) =>
            {
                Ok(())
            }
            e => Err(e),
        })
        .map_err(jerr)?;
    Ok((bin, meta, json))
}

fn copy_at(offset: u64) -> Copy {
    if offset == 0 {
        Copy::Primary
    } else {
        Copy::Secondary
    }
}

/// Decodes a JSON area: JSON text, a NUL, then only NULs.
pub fn parse_json_area(area: &[u8]) -> Result<Value, ValidateError> {
    let end = area
        .iter()
        .position(|&c| c == 0)
        .ok_or(ValidateError::Unterminated)?;
    if let Some(p) = area[end..].iter().position(|&c| c != 0) {
        return Err(ValidateError::Padding(BIN_HDR_SIZE + end + p));
    }
    let text =
        std::str::from_utf8(&area[..end]).map_err(|_| ValidateError::Json("not UTF-8".into()))?;
    let v: Value = serde_json::from_str(text).map_err(|e| ValidateError::Json(e.to_string()))?;
    if !v.is_object() {
        return Err(ValidateError::Json("top level is not an object".into()));
    }
    Ok(v)
}

/// True when the buffer starts with a LUKS2 primary or secondary magic.
pub fn has_magic(buf: &[u8]) -> bool {
    buf.len() >= 8
        && (buf[..6] == binary::MAGIC_PRIMARY || buf[..6] == binary::MAGIC_SECONDARY)
        && buf[6..8] == [0, 2]
}

/// How much of the device a healthy header needs: both copies (2 ×
/// `hdr_size`), if `head` (the first 4 KiB) starts with a primary binary
/// header of a valid size. `None`: read [`MAX_METADATA_PREFIX`] bytes, so a
/// damaged primary can be recovered from any secondary offset.
pub fn metadata_prefix_len(head: &[u8]) -> Option<usize> {
    BinaryHeader::parse(head)
        .ok()
        .filter(|b| b.copy == Copy::Primary && METADATA_SIZES.contains(&b.hdr_size))
        .map(|b| 2 * b.hdr_size as usize)
}

impl Luks2Header {
    /// Reads both copies from a device prefix (up to
    /// [`MAX_METADATA_PREFIX`] bytes), picks the valid copy with the higher
    /// seqid and says which copy needs repair. When the primary is unusable
    /// every possible secondary offset is tried, as cryptsetup does.
    pub fn parse(buf: &[u8]) -> Result<Loaded, ParseError> {
        let primary = parse_copy(buf, 0);
        let primary_binary = BinaryHeader::parse(buf)
            .ok()
            .filter(|b| b.copy == Copy::Primary);
        let sec_offsets: Vec<u64> = match &primary {
            Ok((b, _, _)) => vec![b.hdr_size],
            Err(_) => match &primary_binary {
                Some(b) if METADATA_SIZES.contains(&b.hdr_size) => {
                    let mut v = vec![b.hdr_size];
                    v.extend(METADATA_SIZES.iter().filter(|&&s| s != b.hdr_size));
                    v
                }
                _ => METADATA_SIZES.to_vec(),
            },
        };
        let mut secondary: Result<(BinaryHeader, Metadata, Value), CopyError> =
            Err(CopyError::Binary {
                copy: Copy::Secondary,
                err: BinaryError::BadMagic,
            });
        for off in sec_offsets {
            if (off as usize) + BIN_HDR_SIZE > buf.len() {
                continue;
            }
            let r = parse_copy(&buf[off as usize..], off);
            let found = !matches!(
                r,
                Err(CopyError::Binary {
                    err: BinaryError::BadMagic,
                    ..
                })
            );
            secondary = r;
            if found {
                break;
            }
        }
        match (primary, secondary) {
            (Ok(p), Ok(s)) => {
                let (psalt, ssalt) = (p.0.salt, s.0.salt);
                let (pb, sb) = (&p.0, &s.0);
                let same = pb.seqid == sb.seqid && pb.hdr_size == sb.hdr_size && p.1 == s.1;
                let (winner, repair) = if same {
                    (p, None)
                } else if sb.seqid > pb.seqid {
                    (s, Some((Copy::Primary, RepairReason::Stale)))
                } else {
                    (p, Some((Copy::Secondary, RepairReason::Stale)))
                };
                let mut h = Luks2Header::from_parts(&winner.0, winner.1);
                h.original = OriginalJson(Some(winner.2));
                h.salts = [psalt, ssalt];
                Ok(Loaded {
                    header: h,
                    needs_repair: repair,
                    primary_binary,
                })
            }
            (Ok(p), Err(e)) => {
                if primary_binary.is_none() {
                    return Err(ParseError::NotLuks2);
                }
                let mut h = Luks2Header::from_parts(&p.0, p.1);
                h.original = OriginalJson(Some(p.2));
                Ok(Loaded {
                    header: h,
                    needs_repair: Some((Copy::Secondary, RepairReason::Damaged(e))),
                    primary_binary,
                })
            }
            (Err(e), Ok(s)) => {
                let mut h = Luks2Header::from_parts(&s.0, s.1);
                h.original = OriginalJson(Some(s.2));
                h.salts = [fresh_salt(&s.0.salt), s.0.salt];
                Ok(Loaded {
                    header: h,
                    needs_repair: Some((Copy::Primary, RepairReason::Damaged(e))),
                    primary_binary,
                })
            }
            (Err(pe), Err(se)) => {
                let no_magic = |e: &CopyError| {
                    matches!(
                        e,
                        CopyError::Binary {
                            err: BinaryError::BadMagic
                                | BinaryError::BadVersion(_)
                                | BinaryError::Truncated { .. },
                            ..
                        }
                    )
                };
                if no_magic(&pe) && no_magic(&se) {
                    Err(ParseError::NotLuks2)
                } else {
                    Err(ParseError::BothDamaged {
                        primary: Box::new(pe),
                        secondary: Box::new(se),
                    })
                }
            }
        }
    }

    fn from_parts(b: &BinaryHeader, meta: Metadata) -> Luks2Header {
        Luks2Header {
            hdr_size: b.hdr_size,
            seqid: b.seqid,
            label: b.label.clone(),
            subsystem: b.subsystem.clone(),
            uuid: b.uuid.clone(),
            checksum_alg: b.checksum_alg.clone(),
            salts: [b.salt, b.salt],
            meta,
            original: OriginalJson::default(),
        }
    }

    /// The metadata as a JSON value, members in the order they were read.
    pub fn json_value(&self) -> Value {
        let mut v = self.meta.to_json();
        if let Some(o) = &self.original.0 {
            reorder_like(&mut v, o);
        }
        v
    }

    /// The compact JSON text as written to disk.
    pub fn json_text(&self) -> String {
        serde_json::to_string(&self.json_value()).expect("JSON values always serialize")
    }

    /// Encodes one full metadata copy (`hdr_size` bytes, checksum sealed).
    pub fn encode_copy(&self, copy: Copy) -> Result<Vec<u8>, EncodeError> {
        let json = self.json_text();
        let json_size = (self.hdr_size as usize) - BIN_HDR_SIZE;
        if json.len() >= json_size {
            return Err(EncodeError::JsonTooLarge {
                len: json.len(),
                max: json_size - 1,
            });
        }
        let mut area = vec![0u8; self.hdr_size as usize];
        let bin = BinaryHeader {
            copy,
            version: 2,
            hdr_size: self.hdr_size,
            seqid: self.seqid,
            label: self.label.clone(),
            checksum_alg: self.checksum_alg.clone(),
            salt: self.salts[match copy {
                Copy::Primary => 0,
                Copy::Secondary => 1,
            }],
            uuid: self.uuid.clone(),
            subsystem: self.subsystem.clone(),
            hdr_offset: match copy {
                Copy::Primary => 0,
                Copy::Secondary => self.hdr_size,
            },
            csum: [0; 64],
        };
        bin.encode_into(&mut area).map_err(EncodeError::Binary)?;
        area[BIN_HDR_SIZE..BIN_HDR_SIZE + json.len()].copy_from_slice(json.as_bytes());
        binary::seal(&self.checksum_alg, &mut area).map_err(EncodeError::Binary)?;
        Ok(area)
    }

    /// Validates the metadata as it would be written.
    pub fn validate(&self, attached: bool) -> Result<(), ValidateError> {
        let m = Metadata::from_json(&self.json_value())?;
        m.validate_layout(self.hdr_size, attached)
    }
}

fn fresh_salt(avoid: &[u8; 64]) -> [u8; 64] {
    let mut s = [0u8; 64];
    if getrandom::getrandom(&mut s).is_err() {
        s = *avoid;
        s[0] ^= 0xff;
    }
    s
}

/// Errors encoding a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The JSON text does not fit the JSON area.
    #[error("JSON metadata ({len} bytes) does not fit the metadata area (at most {max} bytes); use a larger --luks2-metadata-size")]
    JsonTooLarge {
        /// JSON length
        len: usize,
        /// room available
        max: usize,
    },
    /// A binary header field does not fit.
    #[error("{0}")]
    Binary(BinaryError),
}
