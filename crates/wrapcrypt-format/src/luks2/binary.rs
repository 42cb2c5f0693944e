//! The 4096-byte binary header that starts each LUKS2 metadata copy.

use sha2::{Digest, Sha256};

pub use super::copy::Copy;
use super::error::BinaryError;

/// Size of the binary header.
pub const BIN_HDR_SIZE: usize = 4096;
/// Magic of the primary copy.
pub const MAGIC_PRIMARY: [u8; 6] = *b"LUKS\xba\xbe";
/// Magic of the secondary copy.
pub const MAGIC_SECONDARY: [u8; 6] = *b"SKUL\xba\xbe";
/// The nine metadata (binary + JSON) sizes LUKS2 allows, in bytes.
pub const METADATA_SIZES: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];

const OFF_VERSION: usize = 6;
const OFF_HDR_SIZE: usize = 8;
const OFF_SEQID: usize = 16;
const OFF_LABEL: usize = 24;
const LEN_LABEL: usize = 48;
const OFF_CSUM_ALG: usize = 72;
const LEN_CSUM_ALG: usize = 32;
const OFF_SALT: usize = 104;
const OFF_UUID: usize = 168;
const LEN_UUID: usize = 40;
const OFF_SUBSYSTEM: usize = 208;
const LEN_SUBSYSTEM: usize = 48;
const OFF_HDR_OFFSET: usize = 256;
const OFF_CSUM: usize = 448;
const LEN_CSUM: usize = 64;

/// Decoded fields of a binary header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryHeader {
    /// Which copy this is (from its magic).
    pub copy: Copy,
    /// Header format version (2).
    pub version: u16,
    /// Metadata size of this copy: binary header plus JSON area.
    pub hdr_size: u64,
    /// Sequence id, incremented on every update.
    pub seqid: u64,
    /// Label (up to 47 bytes).
    pub label: String,
    /// Checksum algorithm name, "sha256".
    pub checksum_alg: String,
    /// Per-copy salt.
    pub salt: [u8; 64],
    /// Volume UUID text.
    pub uuid: String,
    /// Subsystem (up to 47 bytes).
    pub subsystem: String,
    /// Offset of this copy from the device start.
    pub hdr_offset: u64,
    /// Stored checksum (first 32 bytes used by sha256).
    pub csum: [u8; 64],
}

fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn c_string(b: &[u8], off: usize, len: usize, field: &'static str) -> Result<String, BinaryError> {
    let raw = &b[off..off + len];
    let end = raw
        .iter()
        .position(|&c| c == 0)
        .ok_or(BinaryError::Unterminated { field })?;
    String::from_utf8(raw[..end].to_vec()).map_err(|_| BinaryError::NotUtf8 { field })
}

fn put_c_string(
    b: &mut [u8],
    off: usize,
    len: usize,
    s: &str,
    field: &'static str,
) -> Result<(), BinaryError> {
    if s.len() >= len || s.as_bytes().contains(&0) {
        return Err(BinaryError::TooLong {
            field,
            max: len - 1,
        });
    }
    b[off..off + len].fill(0);
    b[off..off + s.len()].copy_from_slice(s.as_bytes());
    Ok(())
}

impl BinaryHeader {
    /// Decodes the first 4096 bytes of a metadata copy (no checksum check).
    pub fn parse(b: &[u8]) -> Result<BinaryHeader, BinaryError> {
        if b.len() < BIN_HDR_SIZE {
            return Err(BinaryError::Truncated { len: b.len() });
        }
        let copy = if b[..6] == MAGIC_PRIMARY {
            Copy::Primary
        } else if b[..6] == MAGIC_SECONDARY {
            Copy::Secondary
        } else {
            return Err(BinaryError::BadMagic);
        };
        let version = u16::from_be_bytes([b[OFF_VERSION], b[OFF_VERSION + 1]]);
        if version != 2 {
            return Err(BinaryError::BadVersion(version));
        }
        let hdr_size = be64(b, OFF_HDR_SIZE);
        if !METADATA_SIZES.contains(&hdr_size) {
            return Err(BinaryError::BadHdrSize(hdr_size));
        }
        let mut salt = [0u8; 64];
        salt.copy_from_slice(&b[OFF_SALT..OFF_SALT + 64]);
        let mut csum = [0u8; 64];
        csum.copy_from_slice(&b[OFF_CSUM..OFF_CSUM + LEN_CSUM]);
        Ok(BinaryHeader {
            copy,
            version,
            hdr_size,
            seqid: be64(b, OFF_SEQID),
            label: c_string(b, OFF_LABEL, LEN_LABEL, "label")?,
            checksum_alg: c_string(b, OFF_CSUM_ALG, LEN_CSUM_ALG, "checksum_alg")?,
            salt,
            uuid: c_string(b, OFF_UUID, LEN_UUID, "uuid")?,
            subsystem: c_string(b, OFF_SUBSYSTEM, LEN_SUBSYSTEM, "subsystem")?,
            hdr_offset: be64(b, OFF_HDR_OFFSET),
            csum,
        })
    }

    /// Encodes into `out[..4096]` with a zero checksum field.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<(), BinaryError> {
        let b = &mut out[..BIN_HDR_SIZE];
        b.fill(0);
        b[..6].copy_from_slice(match self.copy {
            Copy::Primary => &MAGIC_PRIMARY,
            Copy::Secondary => &MAGIC_SECONDARY,
        });
        b[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&self.version.to_be_bytes());
        b[OFF_HDR_SIZE..OFF_HDR_SIZE + 8].copy_from_slice(&self.hdr_size.to_be_bytes());
        b[OFF_SEQID..OFF_SEQID + 8].copy_from_slice(&self.seqid.to_be_bytes());
        put_c_string(b, OFF_LABEL, LEN_LABEL, &self.label, "label")?;
        put_c_string(
            b,
            OFF_CSUM_ALG,
            LEN_CSUM_ALG,
            &self.checksum_alg,
            "checksum_alg",
        )?;
        b[OFF_SALT..OFF_SALT + 64].copy_from_slice(&self.salt);
        put_c_string(b, OFF_UUID, LEN_UUID, &self.uuid, "uuid")?;
        put_c_string(
            b,
            OFF_SUBSYSTEM,
            LEN_SUBSYSTEM,
            &self.subsystem,
            "subsystem",
        )?;
        b[OFF_HDR_OFFSET..OFF_HDR_OFFSET + 8].copy_from_slice(&self.hdr_offset.to_be_bytes());
        Ok(())
    }
}

/// Checksum of a whole metadata copy (`hdr_size` bytes) with the checksum
/// field taken as zero.
pub fn checksum(alg: &str, area: &[u8]) -> Result<Vec<u8>, BinaryError> {
    if alg != "sha256" {
        return Err(BinaryError::UnsupportedChecksum(alg.to_string()));
    }
    let mut h = Sha256::new();
    h.update(&area[..OFF_CSUM]);
    h.update([0u8; LEN_CSUM]);
    h.update(&area[OFF_CSUM + LEN_CSUM..]);
    Ok(h.finalize().to_vec())
}

/// Writes the checksum of `area` (a full metadata copy) into its csum field.
pub fn seal(alg: &str, area: &mut [u8]) -> Result<(), BinaryError> {
    let c = checksum(alg, area)?;
    area[OFF_CSUM..OFF_CSUM + LEN_CSUM].fill(0);
    area[OFF_CSUM..OFF_CSUM + c.len()].copy_from_slice(&c);
    Ok(())
}

/// Verifies the stored checksum of a full metadata copy.
pub fn verify(alg: &str, area: &[u8]) -> Result<(), BinaryError> {
    let c = checksum(alg, area)?;
    if area[OFF_CSUM..OFF_CSUM + c.len()] != c[..] {
        return Err(BinaryError::ChecksumMismatch);
    }
    Ok(())
}
