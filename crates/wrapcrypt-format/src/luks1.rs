//! The LUKS1 partition header (`phdr`): 592 big-endian bytes at offset 0.
//!
//! Parsing keeps every byte (including whatever follows the NUL of a string
//! field and the fields of disabled keyslots), so [`Luks1Header::encode`]
//! returns exactly the bytes [`Luks1Header::parse`] was given.

use std::ops::Range;

/// Size of the binary LUKS1 header in bytes.
pub const LUKS1_HEADER_SIZE: usize = 592;
/// The LUKS magic, shared with LUKS2.
pub const LUKS_MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
/// Number of keyslots in a LUKS1 header.
pub const LUKS1_NUM_KEYSLOTS: usize = 8;
/// The only AF stripe count cryptsetup accepts.
pub const LUKS1_STRIPES: u32 = 4000;
/// LUKS1 counts offsets in 512-byte sectors.
pub const LUKS1_SECTOR_SIZE: u64 = 512;
/// Length of the master-key digest.
pub const LUKS1_DIGEST_SIZE: usize = 20;
/// Length of the salts (MK digest and keyslots).
pub const LUKS1_SALT_SIZE: usize = 32;
/// Marker of an active keyslot.
pub const KEYSLOT_ACTIVE: u32 = 0x00AC_71F3;
/// Marker of a disabled keyslot.
pub const KEYSLOT_DISABLED: u32 = 0x0000_DEAD;
/// Largest volume key cryptsetup handles (bytes).
pub const LUKS1_MAX_KEY_BYTES: u32 = 512;

/// Hash names the project's KDF code implements (same set as
/// `crate::hash::HashAlg`); compared case-insensitively like cryptsetup.
const KNOWN_HASHES: [&str; 7] = [
    "sha1",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "ripemd160",
    "whirlpool",
];

const SECTORS_OF_HEADER: u64 = (LUKS1_HEADER_SIZE as u64).div_ceil(LUKS1_SECTOR_SIZE);

/// A NUL-terminated text field of the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Luks1Field {
    /// `cipher-name[32]`.
    CipherName,
    /// `cipher-mode[32]`.
    CipherMode,
    /// `hash-spec[32]`.
    HashSpec,
    /// `uuid[40]`.
    Uuid,
}

/// Why a LUKS1 header was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Luks1Error {
    /// Fewer than 592 bytes were given.
    #[error("LUKS1 header truncated: {len} bytes, need 592")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// The first six bytes are not `LUKS\xba\xbe`.
    #[error("not a LUKS header (bad magic)")]
    BadMagic,
    /// The version field is not 1.
    #[error("unsupported LUKS version {0} (expected 1)")]
    UnsupportedVersion(u16),
    /// A string field is not valid UTF-8.
    #[error("LUKS1 header field {0:?} is not valid UTF-8")]
    NotUtf8(Luks1Field),
    /// `hash-spec` names no hash the project implements.
    #[error("unknown LUKS1 hash {0:?}")]
    UnknownHash(String),
    /// `cipher-name` or `cipher-mode` is empty.
    #[error("LUKS1 header has an empty cipher field {0:?}")]
    EmptyCipher(Luks1Field),
    /// `key-bytes` is 0 or larger than 512.
    #[error("invalid LUKS1 key size {0} bytes")]
    InvalidKeyBytes(u32),
    /// The MK digest iteration count is 0.
    #[error("LUKS1 MK digest iteration count is 0")]
    ZeroDigestIterations,
    /// An active keyslot has 0 PBKDF2 iterations.
    #[error("LUKS1 keyslot {slot} has 0 iterations")]
    ZeroKeyslotIterations {
        /// Keyslot number.
        slot: usize,
    },
    /// A keyslot's stripe count is not 4000.
    #[error("LUKS1 keyslot {slot} has {stripes} AF stripes (expected 4000)")]
    InvalidStripes {
        /// Keyslot number.
        slot: usize,
        /// Stripes found.
        stripes: u32,
    },
    /// A keyslot's key material starts inside the binary header.
    #[error("LUKS1 keyslot {slot} key material at sector {offset} overlaps the header")]
    KeyslotOverlapsHeader {
        /// Keyslot number.
        slot: usize,
        /// Its start sector.
        offset: u32,
    },
    /// A keyslot's key material reaches into the data payload.
    #[error("LUKS1 keyslot {slot} key material (sectors {start}..{end}) overlaps the payload at sector {payload}")]
    KeyslotOverlapsPayload {
        /// Keyslot number.
        slot: usize,
        /// First sector of the keyslot area.
        start: u64,
        /// End sector (exclusive).
        end: u64,
        /// Payload offset in sectors.
        payload: u32,
    },
    /// A text does not fit its fixed-width field (with the NUL).
    #[error("LUKS1 header field {0:?} is too long")]
    FieldTooLong(Luks1Field),
    /// Keyslot number past 7.
    #[error("LUKS1 keyslot {0} does not exist")]
    NoSuchKeyslot(usize),
    /// Two keyslot areas share sectors.
    #[error("LUKS1 keyslots {a} and {b} have overlapping key material")]
    KeyslotsOverlap {
        /// Lower keyslot number.
        a: usize,
        /// Higher keyslot number.
        b: usize,
    },
}

/// State of a LUKS1 keyslot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Luks1KeyslotState {
    /// `0x00AC71F3`: holds a key.
    Active,
    /// `0x0000DEAD`: free.
    Disabled,
    /// Any other word: cryptsetup loads the header but never uses the slot
    /// (and dumps it as DISABLED); kept for the exact round trip.
    Other(u32),
}

/// One of the eight LUKS1 keyslot descriptors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Luks1Keyslot {
    /// Active or disabled.
    pub state: Luks1KeyslotState,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// PBKDF2 salt.
    pub salt: [u8; LUKS1_SALT_SIZE],
    /// Start of the key material, in 512-byte sectors.
    pub key_material_offset: u32,
    /// AF stripes (always 4000 in a valid header).
    pub stripes: u32,
}

impl Luks1Keyslot {
    /// Whether the slot holds a key.
    pub fn is_active(&self) -> bool {
        self.state == Luks1KeyslotState::Active
    }
}

/// A parsed LUKS1 binary header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Luks1Header {
    cipher_name: [u8; 32],
    cipher_mode: [u8; 32],
    hash_spec: [u8; 32],
    payload_offset: u32,
    key_bytes: u32,
    mk_digest: [u8; LUKS1_DIGEST_SIZE],
    mk_digest_salt: [u8; LUKS1_SALT_SIZE],
    mk_digest_iter: u32,
    uuid: [u8; 40],
    keyslots: [Luks1Keyslot; LUKS1_NUM_KEYSLOTS],
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

/// The text of a fixed-width field. Like cryptsetup, the last byte is taken
/// as the terminator whatever it holds, so a field without a NUL reads as its
/// first `width - 1` bytes.
fn field_bytes(raw: &[u8]) -> &[u8] {
    let raw = &raw[..raw.len() - 1];
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    &raw[..end]
}

fn c_str(raw: &[u8], field: Luks1Field) -> Result<&str, Luks1Error> {
    std::str::from_utf8(field_bytes(raw)).map_err(|_| Luks1Error::NotUtf8(field))
}

/// Text of a field already checked by `validate`.
fn text(raw: &[u8]) -> &str {
    std::str::from_utf8(field_bytes(raw)).unwrap_or("")
}

/// Number of 512-byte sectors the AF-split key material of one keyslot
/// occupies: `key_bytes * stripes` rounded up to whole sectors.
pub fn af_sectors(key_bytes: u32, stripes: u32) -> u64 {
    (u64::from(key_bytes) * u64::from(stripes)).div_ceil(LUKS1_SECTOR_SIZE)
}

/// Alignment of LUKS1 keyslot areas, in sectors (4096 bytes), as
/// cryptsetup lays them out.
pub const LUKS1_KEYSLOT_ALIGN: u64 = 8;
/// cryptsetup's default payload alignment, in sectors (1 MiB).
pub const LUKS1_DEFAULT_ALIGN_PAYLOAD: u64 = 2048;

fn round_up(v: u64, a: u64) -> u64 {
    if a == 0 {
        v
    } else {
        v.div_ceil(a) * a
    }
}

/// cryptsetup's LUKS1 layout for a key of `key_bytes`: the eight keyslot
/// offsets (sectors, 4096-byte aligned, back to back) and the end of the
/// last keyslot area (sectors), before any payload alignment.
pub fn luks1_layout(key_bytes: u32) -> ([u32; LUKS1_NUM_KEYSLOTS], u64) {
    let stride = round_up(af_sectors(key_bytes, LUKS1_STRIPES), LUKS1_KEYSLOT_ALIGN);
    let base = round_up(SECTORS_OF_HEADER, LUKS1_KEYSLOT_ALIGN);
    let offsets = std::array::from_fn(|k| (base + k as u64 * stride) as u32);
    (offsets, base + LUKS1_NUM_KEYSLOTS as u64 * stride)
}

/// Payload offset of a new header on the data device: the end of the
/// keyslot areas rounded up to `align` sectors (cryptsetup's
/// `--align-payload`, default 2048).
pub fn luks1_payload_offset(key_bytes: u32, align: u64) -> u64 {
    round_up(luks1_layout(key_bytes).1, align.max(1))
}

/// Fields of a new LUKS1 header (all keyslots disabled).
#[derive(Debug, Clone)]
pub struct Luks1Params<'a> {
    /// Cipher name, e.g. `aes`.
    pub cipher_name: &'a str,
    /// Cipher mode, e.g. `xts-plain64`.
    pub cipher_mode: &'a str,
    /// Hash spec, e.g. `sha256`.
    pub hash_spec: &'a str,
    /// Payload offset in sectors (0: detached header).
    pub payload_offset: u32,
    /// Volume key length.
    pub key_bytes: u32,
    /// MK digest (PBKDF2 of the volume key).
    pub mk_digest: [u8; LUKS1_DIGEST_SIZE],
    /// MK digest salt.
    pub mk_digest_salt: [u8; LUKS1_SALT_SIZE],
    /// MK digest iterations.
    pub mk_digest_iter: u32,
    /// UUID text.
    pub uuid: &'a str,
    /// Key material offset of each keyslot (sectors).
    pub key_material_offsets: [u32; LUKS1_NUM_KEYSLOTS],
}

fn put_field<const N: usize>(text: &str, field: Luks1Field) -> Result<[u8; N], Luks1Error> {
    let b = text.as_bytes();
    if b.len() >= N || b.contains(&0) {
        return Err(Luks1Error::FieldTooLong(field));
    }
    let mut out = [0u8; N];
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}

impl Luks1Header {
    /// Builds and validates a new header whose keyslots are all disabled.
    pub fn new(p: &Luks1Params<'_>) -> Result<Luks1Header, Luks1Error> {
        let keyslots = std::array::from_fn(|k| Luks1Keyslot {
            state: Luks1KeyslotState::Disabled,
            iterations: 0,
            salt: [0; LUKS1_SALT_SIZE],
            key_material_offset: p.key_material_offsets[k],
            stripes: LUKS1_STRIPES,
        });
        let h = Luks1Header {
            cipher_name: put_field(p.cipher_name, Luks1Field::CipherName)?,
            cipher_mode: put_field(p.cipher_mode, Luks1Field::CipherMode)?,
            hash_spec: put_field(p.hash_spec, Luks1Field::HashSpec)?,
            payload_offset: p.payload_offset,
            key_bytes: p.key_bytes,
            mk_digest: p.mk_digest,
            mk_digest_salt: p.mk_digest_salt,
            mk_digest_iter: p.mk_digest_iter,
            uuid: put_field(p.uuid, Luks1Field::Uuid)?,
            keyslots,
        };
        h.validate()?;
        Ok(h)
    }

    /// Replaces one keyslot descriptor; the result must stay valid.
    pub fn set_keyslot(&mut self, slot: usize, ks: Luks1Keyslot) -> Result<(), Luks1Error> {
        let old = self
            .keyslots
            .get_mut(slot)
            .ok_or(Luks1Error::NoSuchKeyslot(slot))?;
        let prev = std::mem::replace(old, ks);
        if let Err(e) = self.validate() {
            self.keyslots[slot] = prev;
            return Err(e);
        }
        Ok(())
    }

    /// Replaces several keyslot descriptors at once (areas that trade
    /// places would overlap if set one by one).
    pub fn set_keyslots(&mut self, slots: &[(usize, Luks1Keyslot)]) -> Result<(), Luks1Error> {
        let prev = self.keyslots.clone();
        for (slot, ks) in slots {
            match self.keyslots.get_mut(*slot) {
                Some(k) => *k = ks.clone(),
                None => {
                    self.keyslots = prev;
                    return Err(Luks1Error::NoSuchKeyslot(*slot));
                }
            }
        }
        if let Err(e) = self.validate() {
            self.keyslots = prev;
            return Err(e);
        }
        Ok(())
    }

    /// Sets the UUID text.
    pub fn set_uuid(&mut self, uuid: &str) -> Result<(), Luks1Error> {
        self.uuid = put_field(uuid, Luks1Field::Uuid)?;
        Ok(())
    }

    /// Parses and validates the first 592 bytes of `bytes` (more may follow).
    pub fn parse(bytes: &[u8]) -> Result<Luks1Header, Luks1Error> {
        if bytes.len() < LUKS1_HEADER_SIZE {
            return Err(Luks1Error::Truncated { len: bytes.len() });
        }
        let b = &bytes[..LUKS1_HEADER_SIZE];
        if b[..6] != LUKS_MAGIC {
            return Err(Luks1Error::BadMagic);
        }
        let version = u16::from_be_bytes([b[6], b[7]]);
        if version != 1 {
            return Err(Luks1Error::UnsupportedVersion(version));
        }
        let keyslots = std::array::from_fn(|slot| {
            let o = 208 + slot * 48;
            Luks1Keyslot {
                state: match be32(b, o) {
                    KEYSLOT_ACTIVE => Luks1KeyslotState::Active,
                    KEYSLOT_DISABLED => Luks1KeyslotState::Disabled,
                    word => Luks1KeyslotState::Other(word),
                },
                iterations: be32(b, o + 4),
                salt: arr(b, o + 8),
                key_material_offset: be32(b, o + 40),
                stripes: be32(b, o + 44),
            }
        });
        let hdr = Luks1Header {
            cipher_name: arr(b, 8),
            cipher_mode: arr(b, 40),
            hash_spec: arr(b, 72),
            payload_offset: be32(b, 104),
            key_bytes: be32(b, 108),
            mk_digest: arr(b, 112),
            mk_digest_salt: arr(b, 132),
            mk_digest_iter: be32(b, 164),
            uuid: arr(b, 168),
            keyslots,
        };
        hdr.validate()?;
        Ok(hdr)
    }

    /// Checks the rules cryptsetup applies when it loads a LUKS1 header.
    pub fn validate(&self) -> Result<(), Luks1Error> {
        let name = c_str(&self.cipher_name, Luks1Field::CipherName)?;
        let mode = c_str(&self.cipher_mode, Luks1Field::CipherMode)?;
        let hash = c_str(&self.hash_spec, Luks1Field::HashSpec)?;
        c_str(&self.uuid, Luks1Field::Uuid)?;
        if name.is_empty() {
            return Err(Luks1Error::EmptyCipher(Luks1Field::CipherName));
        }
        if mode.is_empty() {
            return Err(Luks1Error::EmptyCipher(Luks1Field::CipherMode));
        }
        if !KNOWN_HASHES.iter().any(|h| h.eq_ignore_ascii_case(hash)) {
            return Err(Luks1Error::UnknownHash(hash.chars().take(32).collect()));
        }
        if self.key_bytes == 0 || self.key_bytes > LUKS1_MAX_KEY_BYTES {
            return Err(Luks1Error::InvalidKeyBytes(self.key_bytes));
        }
        if self.mk_digest_iter == 0 {
            return Err(Luks1Error::ZeroDigestIterations);
        }
        // cryptsetup lays out (and checks) all eight areas, active or not.
        for (slot, ks) in self.keyslots.iter().enumerate() {
            if ks.stripes != LUKS1_STRIPES {
                return Err(Luks1Error::InvalidStripes {
                    slot,
                    stripes: ks.stripes,
                });
            }
            if ks.is_active() && ks.iterations == 0 {
                return Err(Luks1Error::ZeroKeyslotIterations { slot });
            }
            if u64::from(ks.key_material_offset) < SECTORS_OF_HEADER {
                return Err(Luks1Error::KeyslotOverlapsHeader {
                    slot,
                    offset: ks.key_material_offset,
                });
            }
            let r = self.keyslot_sectors(slot);
            // A payload offset of 0 means a detached header: no data follows.
            if self.payload_offset != 0 && r.end > u64::from(self.payload_offset) {
                return Err(Luks1Error::KeyslotOverlapsPayload {
                    slot,
                    start: r.start,
                    end: r.end,
                    payload: self.payload_offset,
                });
            }
        }
        for a in 0..LUKS1_NUM_KEYSLOTS {
            for b in a + 1..LUKS1_NUM_KEYSLOTS {
                let (ra, rb) = (self.keyslot_sectors(a), self.keyslot_sectors(b));
                if ra.start < rb.end && rb.start < ra.end {
                    return Err(Luks1Error::KeyslotsOverlap { a, b });
                }
            }
        }
        Ok(())
    }

    /// The 592 header bytes, identical to the parsed input.
    pub fn encode(&self) -> [u8; LUKS1_HEADER_SIZE] {
        let mut b = [0u8; LUKS1_HEADER_SIZE];
        b[..6].copy_from_slice(&LUKS_MAGIC);
        b[6..8].copy_from_slice(&1u16.to_be_bytes());
        b[8..40].copy_from_slice(&self.cipher_name);
        b[40..72].copy_from_slice(&self.cipher_mode);
        b[72..104].copy_from_slice(&self.hash_spec);
        b[104..108].copy_from_slice(&self.payload_offset.to_be_bytes());
        b[108..112].copy_from_slice(&self.key_bytes.to_be_bytes());
        b[112..132].copy_from_slice(&self.mk_digest);
        b[132..164].copy_from_slice(&self.mk_digest_salt);
        b[164..168].copy_from_slice(&self.mk_digest_iter.to_be_bytes());
        b[168..208].copy_from_slice(&self.uuid);
        for (i, ks) in self.keyslots.iter().enumerate() {
            let o = 208 + i * 48;
            let word = match ks.state {
                Luks1KeyslotState::Active => KEYSLOT_ACTIVE,
                Luks1KeyslotState::Disabled => KEYSLOT_DISABLED,
                Luks1KeyslotState::Other(word) => word,
            };
            b[o..o + 4].copy_from_slice(&word.to_be_bytes());
            b[o + 4..o + 8].copy_from_slice(&ks.iterations.to_be_bytes());
            b[o + 8..o + 40].copy_from_slice(&ks.salt);
            b[o + 40..o + 44].copy_from_slice(&ks.key_material_offset.to_be_bytes());
            b[o + 44..o + 48].copy_from_slice(&ks.stripes.to_be_bytes());
        }
        b
    }

    /// Cipher name, e.g. `aes`.
    pub fn cipher_name(&self) -> &str {
        text(&self.cipher_name)
    }
    /// Cipher mode, e.g. `xts-plain64`.
    pub fn cipher_mode(&self) -> &str {
        text(&self.cipher_mode)
    }
    /// Hash of PBKDF2, AF and the MK digest, e.g. `sha256`.
    pub fn hash_spec(&self) -> &str {
        text(&self.hash_spec)
    }
    /// Start of the data payload in 512-byte sectors (0: detached header).
    pub fn payload_offset(&self) -> u32 {
        self.payload_offset
    }
    /// Start of the data payload in bytes.
    pub fn payload_offset_bytes(&self) -> u64 {
        u64::from(self.payload_offset) * LUKS1_SECTOR_SIZE
    }
    /// Volume key length in bytes.
    pub fn key_bytes(&self) -> u32 {
        self.key_bytes
    }
    /// PBKDF2 output that certifies the volume key.
    pub fn mk_digest(&self) -> &[u8; LUKS1_DIGEST_SIZE] {
        &self.mk_digest
    }
    /// Salt of the MK digest.
    pub fn mk_digest_salt(&self) -> &[u8; LUKS1_SALT_SIZE] {
        &self.mk_digest_salt
    }
    /// Iterations of the MK digest.
    pub fn mk_digest_iter(&self) -> u32 {
        self.mk_digest_iter
    }
    /// UUID text.
    pub fn uuid(&self) -> &str {
        text(&self.uuid)
    }
    /// The eight keyslot descriptors.
    pub fn keyslots(&self) -> &[Luks1Keyslot; LUKS1_NUM_KEYSLOTS] {
        &self.keyslots
    }
    /// One keyslot descriptor (`None` past slot 7).
    pub fn keyslot(&self, slot: usize) -> Option<&Luks1Keyslot> {
        self.keyslots.get(slot)
    }
    /// Slots that hold a key.
    pub fn active_keyslots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..LUKS1_NUM_KEYSLOTS).filter(|&i| self.keyslots[i].is_active())
    }

    /// Sectors (512 bytes) of a keyslot's key material; empty past slot 7.
    pub fn keyslot_sectors(&self, slot: usize) -> Range<u64> {
        match self.keyslots.get(slot) {
            Some(ks) => {
                let start = u64::from(ks.key_material_offset);
                start..start + af_sectors(self.key_bytes, ks.stripes)
            }
            None => 0..0,
        }
    }

    /// Byte range of a keyslot's key material on the device.
    pub fn keyslot_area(&self, slot: usize) -> Range<u64> {
        let s = self.keyslot_sectors(slot);
        s.start * LUKS1_SECTOR_SIZE..s.end * LUKS1_SECTOR_SIZE
    }

    /// Exact length of the AF-split material (`key_bytes * stripes`), without
    /// the rounding to sectors.
    pub fn keyslot_material_len(&self, slot: usize) -> u64 {
        self.keyslots
            .get(slot)
            .map_or(0, |ks| u64::from(self.key_bytes) * u64::from(ks.stripes))
    }

    /// Full cipher spec as dm-crypt takes it: `name-mode`.
    pub fn cipher_spec(&self) -> String {
        format!("{}-{}", self.cipher_name(), self.cipher_mode())
    }

    /// Whether `key` is this volume's key: compares the MK digest with
    /// PBKDF2(hash_spec, key, mk_digest_salt, mk_digest_iter, 20 bytes).
    ///
    /// The PBKDF2 maths is the caller's `pbkdf2(hash_name, password, salt,
    /// iterations, out)`, normally a call into `crate::kdf::derive`.
    pub fn verify_volume_key<E>(
        &self,
        key: &[u8],
        pbkdf2: impl FnOnce(&str, &[u8], &[u8], u32, &mut [u8]) -> Result<(), E>,
    ) -> Result<bool, E> {
        if key.len() != self.key_bytes as usize {
            return Ok(false);
        }
        let mut out = [0u8; LUKS1_DIGEST_SIZE];
        pbkdf2(
            self.hash_spec(),
            key,
            &self.mk_digest_salt,
            self.mk_digest_iter,
            &mut out,
        )?;
        // Constant time, and the derived bytes are wiped.
        let diff = out
            .iter()
            .zip(self.mk_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        zeroize::Zeroize::zeroize(&mut out);
        Ok(diff == 0)
    }
}
