//! Keyslot cryptography shared by LUKS1 and LUKS2: KDF, keyslot-area
//! cipher, AF split/merge and the volume-key digest. Sans-I/O: the caller
//! reads and writes the keyslot area.

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::CipherSpec;

use crate::af;
use crate::hash::HashAlg;
use crate::kdf::{self, KdfParams};

/// Errors of keyslot cryptography.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyslotCryptoError {
    /// Unknown hash name.
    #[error("unsupported hash \"{0}\"")]
    Hash(String),
    /// The keyslot area cipher cannot be built.
    #[error("keyslot area cipher {spec}: {reason}")]
    Cipher {
        /// the cipher spec
        spec: String,
        /// why
        reason: String,
    },
    /// KDF failure (parameters out of range, out of memory).
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// The area is smaller than the split key needs.
    #[error("keyslot area too small: {have} bytes, need {need}")]
    AreaTooSmall {
        /// bytes given
        have: usize,
        /// bytes needed
        need: usize,
    },
}

/// Parameters of one keyslot, independent of LUKS version.
pub struct SlotParams<'a> {
    /// KDF and its parameters.
    pub kdf: KdfParams,
    /// KDF salt.
    pub salt: &'a [u8],
    /// Cipher spec of the keyslot area (e.g. "aes-xts-plain64").
    pub area_cipher: &'a str,
    /// Key size of the area cipher in bytes.
    pub area_key_size: usize,
    /// AF stripes.
    pub stripes: u32,
    /// AF hash name.
    pub af_hash: &'a str,
}

fn hash(name: &str) -> Result<HashAlg, KeyslotCryptoError> {
    HashAlg::from_name(name).map_err(|_| KeyslotCryptoError::Hash(name.to_string()))
}

fn area_cipher(
    spec: &str,
    key: &SecretBytes,
) -> Result<Box<dyn wrapcrypt_sector::SectorCipher>, KeyslotCryptoError> {
    let cerr = |reason: String| KeyslotCryptoError::Cipher {
        spec: spec.to_string(),
        reason,
    };
    let cs = CipherSpec::parse(spec).map_err(|e| cerr(e.to_string()))?;
    wrapcrypt_sector::new_soft_cipher(&cs, key, 512).map_err(|e| cerr(e.to_string()))
}

/// Bytes of keyslot area that hold a split key of `key_size` bytes.
pub fn split_size(key_size: usize, stripes: u32) -> usize {
    (key_size * stripes as usize).div_ceil(512) * 512
}

/// Derives the area key from the passphrase (the slow, brute-force
/// resistant step).
pub fn derive_area_key(
    p: &SlotParams,
    passphrase: &[u8],
) -> Result<SecretBytes, KeyslotCryptoError> {
    let mut k = SecretBytes::zeroed(p.area_key_size);
    kdf::derive(&p.kdf, passphrase, p.salt, k.expose_secret_mut())
        .map_err(|e| KeyslotCryptoError::Kdf(e.to_string()))?;
    Ok(k)
}

/// Recovers a candidate key of `key_size` bytes from a keyslot area with
/// an already derived area key. The caller checks it against the digest.
pub fn open_with_area_key(
    p: &SlotParams,
    area_key: &SecretBytes,
    area: &[u8],
    key_size: usize,
) -> Result<SecretBytes, KeyslotCryptoError> {
    let need = split_size(key_size, p.stripes);
    if area.len() < need {
        return Err(KeyslotCryptoError::AreaTooSmall {
            have: area.len(),
            need,
        });
    }
    let h = hash(p.af_hash)?;
    let mut split = SecretBytes::copy_from(&area[..need]);
    area_cipher(p.area_cipher, area_key)?
        .decrypt(0, split.expose_secret_mut())
        .map_err(|e| KeyslotCryptoError::Cipher {
            spec: p.area_cipher.to_string(),
            reason: e.to_string(),
        })?;
    let mut key = SecretBytes::zeroed(key_size);
    af::af_merge(
        &split.expose_secret()[..key_size * p.stripes as usize],
        key_size,
        p.stripes,
        h,
        key.expose_secret_mut(),
    )
    .map_err(|e| KeyslotCryptoError::Kdf(e.to_string()))?;
    Ok(key)
}

/// Recovers a candidate key from a keyslot area and a passphrase.
pub fn open(
    p: &SlotParams,
    passphrase: &[u8],
    area: &[u8],
    key_size: usize,
) -> Result<SecretBytes, KeyslotCryptoError> {
    let ak = derive_area_key(p, passphrase)?;
    open_with_area_key(p, &ak, area, key_size)
}

/// Produces the encrypted keyslot material (split size, 512-byte aligned)
/// that stores `key` under `passphrase`.
pub fn seal(
    p: &SlotParams,
    passphrase: &[u8],
    key: &SecretBytes,
) -> Result<Vec<u8>, KeyslotCryptoError> {
    let h = hash(p.af_hash)?;
    let n = split_size(key.len(), p.stripes);
    let mut split = SecretBytes::zeroed(n);
    af::af_split(
        key.expose_secret(),
        p.stripes,
        h,
        &mut split.expose_secret_mut()[..key.len() * p.stripes as usize],
    )
    .map_err(|e| KeyslotCryptoError::Kdf(e.to_string()))?;
    let ak = derive_area_key(p, passphrase)?;
    area_cipher(p.area_cipher, &ak)?
        .encrypt(0, split.expose_secret_mut())
        .map_err(|e| KeyslotCryptoError::Cipher {
            spec: p.area_cipher.to_string(),
            reason: e.to_string(),
        })?;
    // Encrypted material is no longer secret.
    Ok(split.expose_secret().to_vec())
}

/// PBKDF2 digest of a volume key, as stored in LUKS2 `pbkdf2` digests and
/// the LUKS1 MK digest.
pub fn key_digest(
    hash_name: &str,
    key: &SecretBytes,
    salt: &[u8],
    iterations: u32,
    len: usize,
) -> Result<Vec<u8>, KeyslotCryptoError> {
    let h = hash(hash_name)?;
    let mut out = vec![0u8; len];
    kdf::derive(
        &KdfParams::Pbkdf2 {
            hash: h,
            iterations,
        },
        key.expose_secret(),
        salt,
        &mut out,
    )
    .map_err(|e| KeyslotCryptoError::Kdf(e.to_string()))?;
    Ok(out)
}

/// Checks a candidate key against a stored digest in constant time.
pub fn verify_key(
    hash_name: &str,
    key: &SecretBytes,
    salt: &[u8],
    iterations: u32,
    expected: &[u8],
) -> Result<bool, KeyslotCryptoError> {
    let d = key_digest(hash_name, key, salt, iterations, expected.len())?;
    Ok(wrapcrypt_secret::ct_eq(&d, expected))
}
