//! The hash algorithms LUKS names in its headers (`"hash"` of PBKDF2
//! keyslots and digests, the AF splitter's `"hash"`, the LUKS1 `hash-spec`).

use std::fmt;

use sha2::digest::{Digest, FixedOutputReset};
use zeroize::Zeroize;

/// The largest digest any [`HashAlg`] produces (SHA-512, Whirlpool).
pub const MAX_DIGEST_LEN: usize = 64;

/// A hash algorithm by its cryptsetup name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashAlg {
    /// SHA-1 (LUKS1's historical default).
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256 (LUKS2's default).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
    /// RIPEMD-160.
    Ripemd160,
    /// Whirlpool (ISO/IEC 10118-3, the final 2003 version, as OpenSSL has it).
    Whirlpool,
}

/// A hash name that is not one of [`HashAlg`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported hash algorithm {name:?} (known: sha1, sha224, sha256, sha384, sha512, ripemd160, whirlpool)")]
#[non_exhaustive]
pub struct UnknownHash {
    /// The name as found (truncated to 64 characters so a hostile header
    /// cannot blow up an error message).
    pub name: String,
}

impl HashAlg {
    /// Every supported algorithm, in a stable order.
    pub const ALL: [HashAlg; 7] = [
        HashAlg::Sha1,
        HashAlg::Sha224,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
        HashAlg::Ripemd160,
        HashAlg::Whirlpool,
    ];

    /// Looks up a cryptsetup hash name. cryptsetup's backends compare names
    /// case-insensitively, so "SHA256" found in an old header is accepted too.
    pub fn from_name(name: &str) -> Result<HashAlg, UnknownHash> {
        HashAlg::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownHash {
                name: name.chars().take(64).collect(),
            })
    }

    /// The cryptsetup name, as written into headers.
    pub const fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha224 => "sha224",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
            HashAlg::Ripemd160 => "ripemd160",
            HashAlg::Whirlpool => "whirlpool",
        }
    }

    /// Digest length in bytes.
    pub const fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha1 | HashAlg::Ripemd160 => 20,
            HashAlg::Sha224 => 28,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 | HashAlg::Whirlpool => 64,
        }
    }

    /// Block length in bytes (the HMAC block size).
    pub const fn block_len(self) -> usize {
        match self {
            HashAlg::Sha1 | HashAlg::Sha224 | HashAlg::Sha256 | HashAlg::Ripemd160 => 64,
            HashAlg::Sha384 | HashAlg::Sha512 | HashAlg::Whirlpool => 128,
        }
    }

    /// One-shot digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        let mut out = vec![0u8; self.digest_len()];
        h.finalize_into(&mut out);
        out
    }

    /// A fresh incremental hasher.
    pub fn hasher(self) -> Hasher {
        Hasher(match self {
            HashAlg::Sha1 => Inner::Sha1(sha1::Sha1::new()),
            HashAlg::Sha224 => Inner::Sha224(sha2::Sha224::new()),
            HashAlg::Sha256 => Inner::Sha256(sha2::Sha256::new()),
            HashAlg::Sha384 => Inner::Sha384(sha2::Sha384::new()),
            HashAlg::Sha512 => Inner::Sha512(sha2::Sha512::new()),
            HashAlg::Ripemd160 => Inner::Ripemd160(ripemd::Ripemd160::new()),
            HashAlg::Whirlpool => Inner::Whirlpool(whirlpool::Whirlpool::new()),
        })
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for HashAlg {
    type Err = UnknownHash;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashAlg::from_name(s)
    }
}

#[derive(Clone)]
enum Inner {
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    Ripemd160(ripemd::Ripemd160),
    Whirlpool(whirlpool::Whirlpool),
}

/// An incremental hash computation for one [`HashAlg`].
///
/// The RustCrypto cores behind it do not wipe their state on drop; callers
/// hashing key material should keep hashers short-lived (the AF splitter
/// does) and rely on the outputs, which this type writes straight into the
/// caller's buffer, never into a temporary of its own.
pub struct Hasher(Inner);

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The state may be derived from secrets.
        f.write_str("Hasher([REDACTED])")
    }
}

macro_rules! each {
    ($self:expr, $h:ident => $e:expr) => {
        match $self {
            Inner::Sha1($h) => $e,
            Inner::Sha224($h) => $e,
            Inner::Sha256($h) => $e,
            Inner::Sha384($h) => $e,
            Inner::Sha512($h) => $e,
            Inner::Ripemd160($h) => $e,
            Inner::Whirlpool($h) => $e,
        }
    };
}

impl Hasher {
    /// The algorithm this hasher computes.
    pub fn alg(&self) -> HashAlg {
        match self.0 {
            Inner::Sha1(_) => HashAlg::Sha1,
            Inner::Sha224(_) => HashAlg::Sha224,
            Inner::Sha256(_) => HashAlg::Sha256,
            Inner::Sha384(_) => HashAlg::Sha384,
            Inner::Sha512(_) => HashAlg::Sha512,
            Inner::Ripemd160(_) => HashAlg::Ripemd160,
            Inner::Whirlpool(_) => HashAlg::Whirlpool,
        }
    }

    /// Feeds more data.
    pub fn update(&mut self, data: &[u8]) {
        each!(&mut self.0, h => Digest::update(h, data));
    }

    /// Writes the first `out.len()` bytes of the digest into `out` (a prefix
    /// when `out` is shorter than the digest, as the AF splitter's last
    /// partial block needs) and resets the hasher for reuse.
    ///
    /// # Panics
    /// If `out` is longer than [`HashAlg::digest_len`] (a programming error).
    pub fn finalize_into_reset(&mut self, out: &mut [u8]) {
        let n = self.alg().digest_len();
        assert!(out.len() <= n, "digest output longer than the digest");
        let mut full = [0u8; MAX_DIGEST_LEN];
        each!(&mut self.0, h => {
            let d = FixedOutputReset::finalize_fixed_reset(h);
            full[..n].copy_from_slice(&d);
            let mut d = d;
            d.as_mut_slice().zeroize();
        });
        out.copy_from_slice(&full[..out.len()]);
        full.zeroize();
    }

    /// Like [`Hasher::finalize_into_reset`], consuming the hasher.
    pub fn finalize_into(mut self, out: &mut [u8]) {
        self.finalize_into_reset(out);
    }
}
