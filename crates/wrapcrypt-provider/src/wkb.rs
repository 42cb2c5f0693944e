//! The wrapped-key blob (WKB) codec; layout in docs/wrapped-key-blob.md.
//!
//! Sans-I/O: [`Wkb::parse`] and [`Wkb::encode`] work on byte slices only.

use std::fmt;

use sha2::{Digest, Sha256};
use wrapcrypt_secret::SecretBytes;

use crate::types::KeyAlgorithm;

/// Magic at offset 0: "WCWK" (wrapcrypt wrapped key).
pub const WKB_MAGIC: [u8; 4] = *b"WCWK";
/// The only layout version defined so far.
pub const WKB_VERSION: u16 = 1;
/// Size of every version-1 blob (2048 bits as a LUKS2 volume key).
pub const WKB_LEN: usize = 256;
/// Bytes `0..WKB_AAD_LEN` are the blob's attributes, bound into the wrap.
pub const WKB_AAD_LEN: usize = 96;
/// Longest provider name.
pub const MAX_PROVIDER_NAME: usize = 16;
/// Longest wrapping-key identity.
pub const MAX_IDENTITY: usize = 62;
/// Longest wrapped payload.
pub const MAX_PAYLOAD: usize = 120;

const OFF_PROVIDER: usize = 8;
const OFF_ALG: usize = 24;
const OFF_KEYLEN: usize = 26;
const OFF_MECH: usize = 28;
const OFF_FLAGS: usize = 30;
const OFF_ID_KIND: usize = 32;
const OFF_ID_LEN: usize = 33;
const OFF_ID: usize = 34;
const OFF_PAYLOAD_LEN: usize = 96;
const OFF_RESERVED: usize = 98;
const OFF_PAYLOAD: usize = 104;
const OFF_CHECK: usize = 224;

/// How the effective key is wrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mechanism {
    /// Not wrapped: the payload is the clear key (`soft` provider, memory only).
    Clear,
    /// AES-256-GCM-SIV (RFC 8452): payload = nonce(12) ‖ ciphertext ‖ tag(16),
    /// AAD = blob bytes 0..96.
    AesGcmSiv256,
    /// RFC 5649 AES key wrap with padding under an AES-256 KEK
    /// (PKCS#11 `CKM_AES_KEY_WRAP_PAD`): payload = wrap(K1) ‖ wrap(K2).
    AesKwp256,
    /// Not wrapped, held: K1 and K2 are non-extractable PKCS#11 token
    /// objects named by the identity (`CKA_ID` = identity ‖ 1, identity ‖ 2);
    /// payload = the key's verification pattern (32 bytes), checked in the
    /// token. For modules that cannot unwrap (p11-kit's client).
    Pkcs11TokenHeld,
}

impl Mechanism {
    /// WKB code.
    pub fn code(self) -> u16 {
        match self {
            Mechanism::Clear => 0,
            Mechanism::AesGcmSiv256 => 1,
            Mechanism::AesKwp256 => 2,
            Mechanism::Pkcs11TokenHeld => 3,
        }
    }

    /// From a WKB code.
    pub fn from_code(c: u16) -> Option<Mechanism> {
        match c {
            0 => Some(Mechanism::Clear),
            1 => Some(Mechanism::AesGcmSiv256),
            2 => Some(Mechanism::AesKwp256),
            3 => Some(Mechanism::Pkcs11TokenHeld),
            _ => None,
        }
    }
}

/// Which wrapping key a blob is wrapped under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WrappingKeyId {
    /// No wrapping key (clear blobs).
    None,
    /// Custodian master-key verification pattern (16 bytes).
    MasterKeyVp(Vec<u8>),
    /// PKCS#11 `CKA_ID` of the wrapping key.
    Pkcs11Id(Vec<u8>),
    /// PKCS#11 `CKA_LABEL` of the wrapping key.
    Pkcs11Label(String),
}

impl WrappingKeyId {
    fn kind(&self) -> u8 {
        match self {
            WrappingKeyId::None => 0,
            WrappingKeyId::MasterKeyVp(_) => 1,
            WrappingKeyId::Pkcs11Id(_) => 2,
            WrappingKeyId::Pkcs11Label(_) => 3,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            WrappingKeyId::None => &[],
            WrappingKeyId::MasterKeyVp(b) | WrappingKeyId::Pkcs11Id(b) => b,
            WrappingKeyId::Pkcs11Label(s) => s.as_bytes(),
        }
    }
}

impl fmt::Display for WrappingKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WrappingKeyId::None => f.write_str("none"),
            WrappingKeyId::MasterKeyVp(b) => write!(f, "mkvp:{}", hex::encode(b)),
            WrappingKeyId::Pkcs11Id(b) => write!(f, "id:{}", hex::encode(b)),
            WrappingKeyId::Pkcs11Label(s) => write!(f, "label:{s}"),
        }
    }
}

/// Why bytes are not a valid WKB.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WkbError {
    /// Wrong total length.
    #[error("blob is {0} bytes, a version-1 wrapped key is {WKB_LEN}")]
    Length(usize),
    /// Magic is not "WCWK".
    #[error("not a wrapcrypt wrapped key (bad magic)")]
    Magic,
    /// Unknown layout version.
    #[error("unsupported wrapped-key blob version {0}")]
    Version(u16),
    /// The length field disagrees with the blob length.
    #[error("length field says {0} bytes")]
    LengthField(u16),
    /// The SHA-256 check value does not match: the blob is damaged.
    #[error("integrity check failed: the blob is damaged")]
    Checksum,
    /// Provider name empty, too long or with characters outside [a-z0-9-].
    #[error("invalid provider name")]
    ProviderName,
    /// Unknown key algorithm code.
    #[error("unknown key algorithm 0x{0:04x}")]
    Algorithm(u16),
    /// Effective key length does not fit the algorithm.
    #[error("key length {found} does not match the algorithm ({expected})")]
    KeyLength {
        /// field value
        found: u16,
        /// what the algorithm needs
        expected: usize,
    },
    /// Unknown wrapping mechanism code.
    #[error("unknown wrapping mechanism 0x{0:04x}")]
    Mechanism(u16),
    /// Unknown wrapping-key identity kind, or bad length.
    #[error("invalid wrapping-key identity (kind {kind}, {len} bytes)")]
    Identity {
        /// kind byte
        kind: u8,
        /// length byte
        len: u8,
    },
    /// Payload length field out of range.
    #[error("wrapped payload length {0} out of range")]
    PayloadLength(u16),
    /// A reserved field or padding is not zero.
    #[error("reserved byte at offset {0} is not zero")]
    Reserved(usize),
}

/// A parsed wrapped-key blob. Holds no clear key unless its mechanism is
/// [`Mechanism::Clear`] (the `soft` provider's in-memory form); the payload
/// lives in locked memory either way, so `Wkb` is not `Clone`.
pub struct Wkb {
    provider: String,
    algorithm: KeyAlgorithm,
    mechanism: Mechanism,
    wrapping_key: WrappingKeyId,
    payload: SecretBytes,
}

impl fmt::Debug for Wkb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wkb")
            .field("provider", &self.provider)
            .field("algorithm", &self.algorithm)
            .field("mechanism", &self.mechanism)
            .field("wrapping_key", &self.wrapping_key)
            .field("payload", &"[REDACTED]")
            .finish()
    }
}

fn valid_provider_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PROVIDER_NAME
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

impl Wkb {
    /// Builds a blob from its parts, checking every limit of the layout.
    pub fn new(
        provider: &str,
        algorithm: KeyAlgorithm,
        mechanism: Mechanism,
        wrapping_key: WrappingKeyId,
        payload: SecretBytes,
    ) -> Result<Wkb, WkbError> {
        if !valid_provider_name(provider) {
            return Err(WkbError::ProviderName);
        }
        let id = wrapping_key.bytes();
        if id.len() > MAX_IDENTITY || (wrapping_key == WrappingKeyId::None) != id.is_empty() {
            return Err(WkbError::Identity {
                kind: wrapping_key.kind(),
                len: id.len().min(255) as u8,
            });
        }
        if payload.len() > MAX_PAYLOAD || payload.is_empty() {
            return Err(WkbError::PayloadLength(payload.len().min(65535) as u16));
        }
        Ok(Wkb {
            provider: provider.to_string(),
            algorithm,
            mechanism,
            wrapping_key,
            payload,
        })
    }

    /// Parses and checks an encoded blob (the LUKS2 volume key of a wrapped volume).
    pub fn parse(b: &[u8]) -> Result<Wkb, WkbError> {
        if b.len() < 8 {
            return Err(WkbError::Length(b.len()));
        }
        if b[0..4] != WKB_MAGIC {
            return Err(WkbError::Magic);
        }
        let version = be16(b, 4);
        if version != WKB_VERSION {
            return Err(WkbError::Version(version));
        }
        if b.len() != WKB_LEN {
            return Err(WkbError::Length(b.len()));
        }
        let len_field = be16(b, 6);
        if len_field as usize != WKB_LEN {
            return Err(WkbError::LengthField(len_field));
        }
        let check: [u8; 32] = Sha256::digest(&b[..OFF_CHECK]).into();
        if !wrapcrypt_secret::ct_eq(&check, &b[OFF_CHECK..]) {
            return Err(WkbError::Checksum);
        }
        let name_field = &b[OFF_PROVIDER..OFF_ALG];
        let name_len = name_field.iter().position(|&c| c == 0).unwrap_or(16);
        if let Some(i) = name_field[name_len..].iter().position(|&c| c != 0) {
            return Err(WkbError::Reserved(OFF_PROVIDER + name_len + i));
        }
        let provider = std::str::from_utf8(&name_field[..name_len])
            .ok()
            .filter(|s| valid_provider_name(s))
            .ok_or(WkbError::ProviderName)?
            .to_string();
        let alg_code = be16(b, OFF_ALG);
        let algorithm = KeyAlgorithm::from_code(alg_code).ok_or(WkbError::Algorithm(alg_code))?;
        let key_len = be16(b, OFF_KEYLEN);
        if key_len as usize != algorithm.key_len() {
            return Err(WkbError::KeyLength {
                found: key_len,
                expected: algorithm.key_len(),
            });
        }
        let mech_code = be16(b, OFF_MECH);
        let mechanism = Mechanism::from_code(mech_code).ok_or(WkbError::Mechanism(mech_code))?;
        check_zero(b, OFF_FLAGS, OFF_ID_KIND)?;
        let kind = b[OFF_ID_KIND];
        let id_len = b[OFF_ID_LEN];
        let bad_id = WkbError::Identity { kind, len: id_len };
        if id_len as usize > MAX_IDENTITY {
            return Err(bad_id);
        }
        let id = &b[OFF_ID..OFF_ID + id_len as usize];
        check_zero(b, OFF_ID + id_len as usize, OFF_PAYLOAD_LEN)?;
        let wrapping_key = match (kind, id_len) {
            (0, 0) => WrappingKeyId::None,
            (1, 16) => WrappingKeyId::MasterKeyVp(id.to_vec()),
            (2, 1..) => WrappingKeyId::Pkcs11Id(id.to_vec()),
            (3, 1..) => {
                WrappingKeyId::Pkcs11Label(std::str::from_utf8(id).map_err(|_| bad_id)?.to_string())
            }
            _ => return Err(bad_id),
        };
        let plen = be16(b, OFF_PAYLOAD_LEN);
        if plen == 0 || plen as usize > MAX_PAYLOAD {
            return Err(WkbError::PayloadLength(plen));
        }
        check_zero(b, OFF_RESERVED, OFF_PAYLOAD)?;
        check_zero(b, OFF_PAYLOAD + plen as usize, OFF_CHECK)?;
        let payload = SecretBytes::copy_from(&b[OFF_PAYLOAD..OFF_PAYLOAD + plen as usize]);
        Ok(Wkb {
            provider,
            algorithm,
            mechanism,
            wrapping_key,
            payload,
        })
    }

    /// Encodes the blob: always [`WKB_LEN`] bytes. For a `Clear` blob the
    /// result holds the clear key; the caller must treat it as a secret.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.attributes().to_vec();
        b.resize(WKB_LEN, 0);
        b[OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 2]
            .copy_from_slice(&(self.payload.len() as u16).to_be_bytes());
        b[OFF_PAYLOAD..OFF_PAYLOAD + self.payload.len()]
            .copy_from_slice(self.payload.expose_secret());
        let check: [u8; 32] = Sha256::digest(&b[..OFF_CHECK]).into();
        b[OFF_CHECK..].copy_from_slice(&check);
        b
    }

    /// Bytes 0..96 of the encoding: every attribute of the key (magic,
    /// version, provider, algorithm, mechanism, wrapping-key identity). The
    /// custodian binds them into the wrap as AAD.
    pub fn attributes(&self) -> [u8; WKB_AAD_LEN] {
        let mut b = [0u8; WKB_AAD_LEN];
        b[0..4].copy_from_slice(&WKB_MAGIC);
        b[4..6].copy_from_slice(&WKB_VERSION.to_be_bytes());
        b[6..8].copy_from_slice(&(WKB_LEN as u16).to_be_bytes());
        b[OFF_PROVIDER..OFF_PROVIDER + self.provider.len()]
            .copy_from_slice(self.provider.as_bytes());
        b[OFF_ALG..OFF_ALG + 2].copy_from_slice(&self.algorithm.code().to_be_bytes());
        b[OFF_KEYLEN..OFF_KEYLEN + 2]
            .copy_from_slice(&(self.algorithm.key_len() as u16).to_be_bytes());
        b[OFF_MECH..OFF_MECH + 2].copy_from_slice(&self.mechanism.code().to_be_bytes());
        let id = self.wrapping_key.bytes();
        b[OFF_ID_KIND] = self.wrapping_key.kind();
        b[OFF_ID_LEN] = id.len() as u8;
        b[OFF_ID..OFF_ID + id.len()].copy_from_slice(id);
        b
    }

    /// The provider that made the blob (e.g. "custodian").
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Algorithm of the effective key.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// Wrapping mechanism.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Identity of the wrapping key.
    pub fn wrapping_key(&self) -> &WrappingKeyId {
        &self.wrapping_key
    }

    /// The wrapped bytes (the clear key for `Clear` blobs).
    pub fn expose_payload(&self) -> &[u8] {
        self.payload.expose_secret()
    }

    /// A second copy (the payload is copied locked memory to locked memory).
    pub fn try_clone(&self) -> Wkb {
        Wkb {
            provider: self.provider.clone(),
            algorithm: self.algorithm,
            mechanism: self.mechanism,
            wrapping_key: self.wrapping_key.clone(),
            payload: SecretBytes::copy_from(self.payload.expose_secret()),
        }
    }
}

fn check_zero(b: &[u8], from: usize, to: usize) -> Result<(), WkbError> {
    match b[from..to].iter().position(|&c| c != 0) {
        Some(i) => Err(WkbError::Reserved(from + i)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Wkb {
        let payload: Vec<u8> = (0..92u8).collect();
        Wkb::new(
            "custodian",
            KeyAlgorithm::Aes256Xts,
            Mechanism::AesGcmSiv256,
            WrappingKeyId::MasterKeyVp((0x10..0x20u8).collect()),
            SecretBytes::copy_from(&payload),
        )
        .unwrap()
    }

    #[test]
    fn roundtrip_and_fixed_size() {
        let e = sample().encode();
        assert_eq!(e.len(), WKB_LEN);
        let p = Wkb::parse(&e).unwrap();
        assert_eq!(p.provider(), "custodian");
        assert_eq!(p.mechanism(), Mechanism::AesGcmSiv256);
        assert_eq!(
            p.wrapping_key().to_string(),
            "mkvp:101112131415161718191a1b1c1d1e1f"
        );
        assert_eq!(p.encode(), e);
    }

    /// The vector printed in docs/wrapped-key-blob.md §4.
    #[test]
    fn documented_vector() {
        let e = sample().encode();
        let want = concat!(
            "5743574b00010100637573746f6469616e000000000000000001004000010000",
            "0110101112131415161718191a1b1c1d1e1f0000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "005c000000000000000102030405060708090a0b0c0d0e0f1011121314151617",
            "18191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637",
            "38393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f5051525354555657",
            "58595a5b0000000000000000000000000000000000000000000000000000000",
            "0",
        );
        assert_eq!(hex::encode(&e[..224]), want);
        let check = hex::encode(&e[224..]);
        assert_eq!(check, hex::encode(Sha256::digest(&e[..224])));
        assert_eq!(check, DOC_CHECK);
    }

    /// The mechanism-3 vector of docs/wrapped-key-blob.md §4: identity
    /// 00..0f, payload = VP of key 00..3f, whole blob as Python computes it
    /// (`cryptography` AES-XTS for the VP, `hashlib` for the check).
    #[test]
    fn token_held_vector() {
        let vp = hex::decode("cd6b103236fbd87dba93e9001e29bc3d5e885d6abd1577e3e0e0a5f49e444894")
            .unwrap();
        let w = Wkb::new(
            "pkcs11",
            KeyAlgorithm::Aes256Xts,
            Mechanism::Pkcs11TokenHeld,
            WrappingKeyId::Pkcs11Id((0..16).collect()),
            SecretBytes::copy_from(&vp),
        )
        .unwrap();
        let e = w.encode();
        let want = concat!(
            "5743574b00010100706b63733131000000000000000000000001004000030000",
            "0210000102030405060708090a0b0c0d0e0f0000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0020000000000000cd6b103236fbd87dba93e9001e29bc3d5e885d6abd1577e3",
            "e0e0a5f49e444894000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "8bb8670cb43014343bdd2a1f9635363ea0a541545022edd9802df9d3e2a9106d",
        );
        assert_eq!(hex::encode(&e), want);
        let p = Wkb::parse(&e).unwrap();
        assert_eq!(p.mechanism(), Mechanism::Pkcs11TokenHeld);
        assert_eq!(Mechanism::from_code(3), Some(Mechanism::Pkcs11TokenHeld));
        assert_eq!(p.expose_payload(), &vp[..]);
    }

    const DOC_CHECK: &str = "d8c8e599a31b22ab287378e347f1f340698483076fe6f005321dfe7626f47894";

    #[test]
    fn every_corruption_is_refused() {
        let e = sample().encode();
        for i in 0..e.len() {
            let mut c = e.clone();
            c[i] ^= 0x01;
            assert!(Wkb::parse(&c).is_err(), "flip at {i} accepted");
        }
        assert_eq!(Wkb::parse(&e[..255]).unwrap_err(), WkbError::Length(255));
        assert_eq!(
            Wkb::parse(b"LUKS\xba\xbe").unwrap_err(),
            WkbError::Length(6)
        );
        assert_eq!(Wkb::parse(&[0u8; 256]).unwrap_err(), WkbError::Magic);
    }

    #[test]
    fn limits_are_checked_when_building() {
        let mk = |name: &str, id: WrappingKeyId, n: usize| {
            Wkb::new(
                name,
                KeyAlgorithm::Aes256Xts,
                Mechanism::AesKwp256,
                id,
                SecretBytes::zeroed(n),
            )
        };
        assert!(mk("Bad Name", WrappingKeyId::Pkcs11Id(vec![1]), 72).is_err());
        assert!(mk("pkcs11", WrappingKeyId::Pkcs11Id(vec![1; 63]), 72).is_err());
        assert!(mk("pkcs11", WrappingKeyId::Pkcs11Id(vec![1]), 121).is_err());
        let ok = mk("pkcs11", WrappingKeyId::Pkcs11Label("vol".into()), 72).unwrap();
        let p = Wkb::parse(&ok.encode()).unwrap();
        assert_eq!(p.wrapping_key(), &WrappingKeyId::Pkcs11Label("vol".into()));
        assert_eq!(p.expose_payload().len(), 72);
    }
}
