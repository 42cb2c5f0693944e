//! The LUKS anti-forensic information splitter (LUKS1 on-disk format
//! specification, "AF-Splitter"; LUKS2 keyslot `af.type = "luks1"`).
//!
//! A key of `n` bytes becomes `stripes` stripes of `n` bytes: all but the last
//! are random, and the last is the key XOR the running diffusion of the
//! others, so losing any single stripe loses the key.
//!
//! The diffusion `H` of an `n`-byte buffer hashes it block by block: block
//! `i` (digest-size bytes) is replaced by `hash(be32(i) || block_i)`; a final
//! partial block of `r` bytes is replaced by the first `r` bytes of
//! `hash(be32(i) || those r bytes)`.
//!
//! The running XOR/diffusion buffer holds a key-equivalent value, so it lives
//! in locked memory ([`wrapcrypt_secret::SecretBytes`]).

use wrapcrypt_secret::SecretBytes;
use zeroize::Zeroize;

use crate::hash::{HashAlg, MAX_DIGEST_LEN};

/// LUKS's stripe count (cryptsetup never writes another).
pub const LUKS_STRIPES: u32 = 4000;

/// Why a split or merge was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AfError {
    /// A stripe count of zero.
    #[error("AF stripe count cannot be zero")]
    ZeroStripes,
    /// An empty key.
    #[error("AF key length cannot be zero")]
    ZeroKeyLength,
    /// `key_len × stripes` does not fit in memory.
    #[error("AF material of {key_len} bytes × {stripes} stripes is too large")]
    TooLarge {
        /// Key length.
        key_len: usize,
        /// Stripe count.
        stripes: u32,
    },
    /// A buffer has the wrong length.
    #[error("AF {buffer} buffer is {len} bytes, expected {expected}")]
    Length {
        /// Which buffer: "split material" or "key".
        buffer: &'static str,
        /// Its length.
        len: usize,
        /// The length required.
        expected: usize,
    },
    /// The kernel's random generator failed.
    #[error("getrandom failed for AF stripes: {0}")]
    Random(#[source] std::io::Error),
}

/// Bytes of split material: `key_len × stripes` (no rounding).
pub fn af_split_len(key_len: usize, stripes: u32) -> Result<usize, AfError> {
    if stripes == 0 {
        return Err(AfError::ZeroStripes);
    }
    if key_len == 0 {
        return Err(AfError::ZeroKeyLength);
    }
    key_len
        .checked_mul(stripes as usize)
        .ok_or(AfError::TooLarge { key_len, stripes })
}

/// Size of the area holding the split material, rounded up to whole
/// `sector`s: 512 gives LUKS1's key-material sector count × 512 (and LUKS2's
/// minimum), 4096 gives the keyslot area size cryptsetup writes into LUKS2
/// headers (258048 bytes for a 512-bit key).
///
/// # Panics
/// If `sector` is zero or the size overflows `usize` (both programming errors).
pub fn af_split_size(key_len: usize, stripes: u32, sector: usize) -> usize {
    assert!(sector > 0, "sector size cannot be zero");
    let bytes = key_len
        .checked_mul(stripes as usize)
        .expect("AF size overflows usize");
    bytes
        .checked_next_multiple_of(sector)
        .expect("AF size overflows usize")
}

/// Splits `src` (the key) into `out`, which must be `src.len() × stripes`
/// bytes; the random stripes come from getrandom(2).
pub fn af_split(src: &[u8], stripes: u32, hash: HashAlg, out: &mut [u8]) -> Result<(), AfError> {
    let n = check(src.len(), stripes, out.len())?;
    let random_len = n - src.len();
    wrapcrypt_secret::fill_random(&mut out[..random_len]).map_err(AfError::Random)?;
    split_filled(src, hash, out);
    Ok(())
}

/// [`af_split`] with caller-supplied stripes: `out`'s first `stripes - 1`
/// stripes must already hold the random material; only the last stripe is
/// written. For known-answer tests and callers with their own generator.
pub fn af_split_with_stripes(
    src: &[u8],
    stripes: u32,
    hash: HashAlg,
    out: &mut [u8],
) -> Result<(), AfError> {
    check(src.len(), stripes, out.len())?;
    split_filled(src, hash, out);
    Ok(())
}

/// Recovers the `key_len`-byte key from split material `src`
/// (`key_len × stripes` bytes) into `out` (`key_len` bytes).
pub fn af_merge(
    src: &[u8],
    key_len: usize,
    stripes: u32,
    hash: HashAlg,
    out: &mut [u8],
) -> Result<(), AfError> {
    check(key_len, stripes, src.len())?;
    if out.len() != key_len {
        return Err(AfError::Length {
            buffer: "key",
            len: out.len(),
            expected: key_len,
        });
    }
    let mut acc = SecretBytes::zeroed(key_len);
    let buf = acc.expose_secret_mut();
    let mut stripes_iter = src.chunks_exact(key_len);
    let last = stripes_iter.next_back().expect("at least one stripe");
    for stripe in stripes_iter {
        xor_into(buf, stripe);
        diffuse(buf, hash);
    }
    for ((o, a), l) in out.iter_mut().zip(buf.iter()).zip(last) {
        *o = a ^ l;
    }
    Ok(())
}

fn check(key_len: usize, stripes: u32, material_len: usize) -> Result<usize, AfError> {
    let n = af_split_len(key_len, stripes)?;
    if material_len != n {
        return Err(AfError::Length {
            buffer: "split material",
            len: material_len,
            expected: n,
        });
    }
    Ok(n)
}

/// Computes the last stripe of `out` from the ones before it.
fn split_filled(src: &[u8], hash: HashAlg, out: &mut [u8]) {
    let key_len = src.len();
    let mut acc = SecretBytes::zeroed(key_len);
    let buf = acc.expose_secret_mut();
    let (random, last) = out.split_at_mut(out.len() - key_len);
    for stripe in random.chunks_exact(key_len) {
        xor_into(buf, stripe);
        diffuse(buf, hash);
    }
    for ((l, a), s) in last.iter_mut().zip(buf.iter()).zip(src) {
        *l = a ^ s;
    }
}

fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

/// LUKS's diffusion function, in place.
fn diffuse(buf: &mut [u8], hash: HashAlg) {
    let ds = hash.digest_len();
    let mut h = hash.hasher();
    let mut digest = [0u8; MAX_DIGEST_LEN];
    for (i, block) in buf.chunks_mut(ds).enumerate() {
        h.update(&(i as u32).to_be_bytes());
        h.update(block);
        h.finalize_into_reset(&mut digest[..block.len()]);
        block.copy_from_slice(&digest[..block.len()]);
    }
    digest.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(af_split_size(64, 4000, 4096), 258_048);
        assert_eq!(af_split_size(32, 4000, 512), 128_000);
        assert_eq!(af_split_size(16, 4000, 512), 64_000);
        assert_eq!(af_split_size(20, 3, 512), 512);
        assert_eq!(af_split_size(0, 4000, 512), 0);
        assert!(matches!(af_split_len(32, 0), Err(AfError::ZeroStripes)));
        assert!(matches!(af_split_len(0, 1), Err(AfError::ZeroKeyLength)));
        assert!(matches!(
            af_split_len(usize::MAX, 2),
            Err(AfError::TooLarge { .. })
        ));
    }

    #[test]
    fn one_stripe_is_the_key() {
        let key = [7u8; 32];
        let mut out = [0u8; 32];
        af_split(&key, 1, HashAlg::Sha256, &mut out).unwrap();
        assert_eq!(out, key);
    }
}
