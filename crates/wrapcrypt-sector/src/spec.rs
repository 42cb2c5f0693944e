//! dm-crypt cipher specifications: `cipher-mode[-iv[:ivopts]]`.

use std::fmt;
use std::str::FromStr;

/// Why a cipher specification cannot be parsed or built into an engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The specification string is empty.
    #[error("empty cipher specification")]
    Empty,
    /// A kernel crypto API (`capi:`) specification; only dm-crypt's short form is supported.
    #[error("capi: cipher specifications are not supported: {spec}")]
    Capi {
        /// the whole specification
        spec: String,
    },
    /// The string does not have the `cipher-mode[-iv[:ivopts]]` shape.
    #[error("malformed cipher specification {spec:?}: {reason}")]
    Malformed {
        /// the whole specification
        spec: String,
        /// what is wrong with it
        reason: &'static str,
    },
    /// Unknown block cipher name.
    #[error("unknown cipher {name:?} (known: aes, serpent, twofish, cipher_null, waes, paes)")]
    UnknownCipher {
        /// the cipher name as written
        name: String,
    },
    /// Unknown chaining mode.
    #[error("unknown cipher mode {mode:?} (known: xts, cbc, ecb, lrw)")]
    UnknownMode {
        /// the mode as written
        mode: String,
    },
    /// Unknown IV generator.
    #[error(
        "unknown IV generator {iv:?} (known: plain, plain64, plain64be, essiv:HASH, benbi, null)"
    )]
    UnknownIv {
        /// the IV generator as written
        iv: String,
    },
    /// Unknown or unsupported hash for ESSIV.
    #[error("unsupported ESSIV hash {hash:?} (known: sha1, sha224, sha256, sha384, sha512)")]
    UnknownHash {
        /// the hash name as written
        hash: String,
    },
    /// A valid dm-crypt feature this engine does not implement (key count, lmk, tcw, ...).
    #[error("unsupported cipher specification {spec:?}: {what}")]
    Unsupported {
        /// the whole specification
        spec: String,
        /// the feature that is missing
        what: &'static str,
    },
    /// A chaining mode that needs an IV generator was given none.
    #[error("cipher mode {mode} needs an IV generator (for example {mode}-plain64)")]
    MissingIv {
        /// the mode
        mode: Mode,
    },
    /// Wrapped-key ciphers are run by a key provider, never by the software engine.
    #[error("{cipher} is a wrapped-key cipher: its key is a wrapped blob that only a key provider can use")]
    WrappedKey {
        /// the wrapped cipher
        cipher: Cipher,
    },
    /// The key length does not fit the cipher and mode.
    #[error("a {bits}-bit key is not valid for {spec}")]
    InvalidKeySize {
        /// the specification, as text
        spec: String,
        /// key length in bits
        bits: usize,
    },
    /// The ESSIV hash output is not a valid key length for the block cipher.
    #[error("ESSIV with {hash} gives a {bytes}-byte key, which {cipher} does not accept")]
    EssivKeySize {
        /// the hash
        hash: EssivHash,
        /// digest length in bytes
        bytes: usize,
        /// the block cipher
        cipher: Cipher,
    },
    /// The sector size is not a power of two in 512..=4096.
    #[error("invalid sector size {size}: must be a power of two from 512 to 4096")]
    InvalidSectorSize {
        /// the sector size in bytes
        size: usize,
    },
}

/// A block cipher name as dm-crypt spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cipher {
    /// AES (Rijndael, 128-bit blocks).
    Aes,
    /// Serpent, in the Linux kernel's byte order.
    Serpent,
    /// Twofish.
    Twofish,
    /// No encryption (`cipher_null`), for tests and benchmark references.
    Null,
    /// wrapcrypt's wrapped AES: the key is a wrapped-key blob for a key provider.
    Waes,
    /// IBM s390 protected-key AES: the key is a secure-key token.
    Paes,
}

impl Cipher {
    /// The name as written in a specification.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes => "aes",
            Cipher::Serpent => "serpent",
            Cipher::Twofish => "twofish",
            Cipher::Null => "cipher_null",
            Cipher::Waes => "waes",
            Cipher::Paes => "paes",
        }
    }

    fn from_name(name: &str) -> Option<Cipher> {
        Some(match name {
            "aes" => Cipher::Aes,
            "serpent" => Cipher::Serpent,
            "twofish" => Cipher::Twofish,
            "cipher_null" | "null" => Cipher::Null,
            "waes" => Cipher::Waes,
            "paes" => Cipher::Paes,
            _ => return None,
        })
    }

    /// True for ciphers whose key is a wrapped blob (`waes`, `paes`).
    pub fn is_wrapped(self) -> bool {
        matches!(self, Cipher::Waes | Cipher::Paes)
    }

    /// Whether a single block-cipher key of `bytes` bytes is accepted (as the kernel does).
    pub fn accepts_key_len(self, bytes: usize) -> bool {
        match self {
            Cipher::Aes | Cipher::Twofish => matches!(bytes, 16 | 24 | 32),
            // The kernel takes 0..=32; the RustCrypto implementation needs at least 16.
            Cipher::Serpent => (16..=32).contains(&bytes),
            Cipher::Null => true,
            Cipher::Waes | Cipher::Paes => bytes > 0,
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Block chaining mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// XEX with ciphertext stealing (IEEE 1619); key = K1 || K2.
    Xts,
    /// Cipher block chaining, restarted with a new IV for every sector.
    Cbc,
    /// Electronic codebook (no IV).
    Ecb,
    /// Liskov-Rivest-Wagner; key = cipher key || 16-byte tweak key.
    Lrw,
}

impl Mode {
    /// The name as written in a specification.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Xts => "xts",
            Mode::Cbc => "cbc",
            Mode::Ecb => "ecb",
            Mode::Lrw => "lrw",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Hash used by ESSIV to derive the IV key from the volume key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EssivHash {
    /// SHA-1 (20 bytes).
    Sha1,
    /// SHA-224 (28 bytes).
    Sha224,
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl EssivHash {
    /// The name as written in a specification.
    pub fn name(self) -> &'static str {
        match self {
            EssivHash::Sha1 => "sha1",
            EssivHash::Sha224 => "sha224",
            EssivHash::Sha256 => "sha256",
            EssivHash::Sha384 => "sha384",
            EssivHash::Sha512 => "sha512",
        }
    }

    /// Digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            EssivHash::Sha1 => 20,
            EssivHash::Sha224 => 28,
            EssivHash::Sha256 => 32,
            EssivHash::Sha384 => 48,
            EssivHash::Sha512 => 64,
        }
    }

    fn from_name(name: &str) -> Option<EssivHash> {
        Some(match name {
            "sha1" => EssivHash::Sha1,
            "sha224" => EssivHash::Sha224,
            "sha256" => EssivHash::Sha256,
            "sha384" => EssivHash::Sha384,
            "sha512" => EssivHash::Sha512,
            _ => return None,
        })
    }
}

impl fmt::Display for EssivHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// IV generator (dm-crypt's `ivmode[:ivopts]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IvMode {
    /// Low 32 bits of the sector number, little-endian, zero padded.
    Plain,
    /// 64-bit sector number, little-endian, zero padded.
    Plain64,
    /// 64-bit sector number, big-endian, in the last 8 bytes.
    Plain64Be,
    /// plain64 encrypted with the block cipher keyed by HASH(volume key).
    Essiv(EssivHash),
    /// Big-endian 64-bit count of cipher blocks, starting at 1 (for LRW).
    Benbi,
    /// All-zero IV.
    Null,
}

impl IvMode {
    fn parse(s: &str) -> Result<IvMode, SpecError> {
        let (name, opts) = match s.split_once(':') {
            Some((n, o)) => (n, Some(o)),
            None => (s, None),
        };
        let no_opts = |m: IvMode| match opts {
            None => Ok(m),
            Some(_) => Err(SpecError::UnknownIv { iv: s.to_string() }),
        };
        match name {
            "plain" => no_opts(IvMode::Plain),
            "plain64" => no_opts(IvMode::Plain64),
            "plain64be" => no_opts(IvMode::Plain64Be),
            "benbi" => no_opts(IvMode::Benbi),
            "null" => no_opts(IvMode::Null),
            "essiv" => {
                let h = opts.ok_or(SpecError::UnknownIv { iv: s.to_string() })?;
                EssivHash::from_name(h)
                    .map(IvMode::Essiv)
                    .ok_or_else(|| SpecError::UnknownHash {
                        hash: h.to_string(),
                    })
            }
            "lmk" | "tcw" | "eboiv" | "elephant" | "random" => Err(SpecError::Unsupported {
                spec: s.to_string(),
                what: "IV generators lmk, tcw, eboiv, elephant and random are not implemented",
            }),
            _ => Err(SpecError::UnknownIv { iv: s.to_string() }),
        }
    }
}

impl fmt::Display for IvMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IvMode::Plain => f.write_str("plain"),
            IvMode::Plain64 => f.write_str("plain64"),
            IvMode::Plain64Be => f.write_str("plain64be"),
            IvMode::Essiv(h) => write!(f, "essiv:{h}"),
            IvMode::Benbi => f.write_str("benbi"),
            IvMode::Null => f.write_str("null"),
        }
    }
}

/// A parsed dm-crypt cipher specification such as `aes-xts-plain64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CipherSpec {
    cipher: Cipher,
    mode: Mode,
    iv: Option<IvMode>,
}

impl CipherSpec {
    /// Builds a specification from its parts, checking that they fit together.
    pub fn new(cipher: Cipher, mode: Mode, iv: Option<IvMode>) -> Result<CipherSpec, SpecError> {
        match (mode, iv) {
            // dm-crypt ignores an IV generator given with ecb; so do we, but keep it
            // so that the string round-trips.
            (Mode::Ecb, _) => {}
            (m, None) => return Err(SpecError::MissingIv { mode: m }),
            _ => {}
        }
        if cipher == Cipher::Null && mode != Mode::Ecb {
            return Err(SpecError::Unsupported {
                spec: format!("{cipher}-{mode}"),
                what: "cipher_null is only used with mode ecb",
            });
        }
        Ok(CipherSpec { cipher, mode, iv })
    }

    /// Parses a LUKS2 `encryption` string or a dm-crypt cipher argument: `cipher-mode[-iv[:ivopts]]`.
    pub fn parse(spec: &str) -> Result<CipherSpec, SpecError> {
        if spec.is_empty() {
            return Err(SpecError::Empty);
        }
        if spec.starts_with("capi:") {
            return Err(SpecError::Capi {
                spec: spec.to_string(),
            });
        }
        let malformed = |reason| SpecError::Malformed {
            spec: spec.to_string(),
            reason,
        };
        if !spec.is_ascii() || spec.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(malformed("only printable ASCII without spaces is allowed"));
        }
        let (cipher, chain) = spec
            .split_once('-')
            .ok_or_else(|| malformed("expected cipher-mode[-iv], e.g. aes-xts-plain64"))?;
        let (mode, iv) = match chain.split_once('-') {
            Some((m, iv)) => (m, Some(iv)),
            None => (chain, None),
        };
        Self::from_parts(spec, cipher, mode, iv)
    }

    /// Builds a specification from a LUKS1 header's `cipher_name` and `cipher_mode`
    /// (for example `"aes"` and `"cbc-essiv:sha256"`).
    pub fn from_luks1(cipher_name: &str, cipher_mode: &str) -> Result<CipherSpec, SpecError> {
        if cipher_name.starts_with("capi:") {
            return Err(SpecError::Capi {
                spec: format!("{cipher_name}-{cipher_mode}"),
            });
        }
        let whole = format!("{cipher_name}-{cipher_mode}");
        if cipher_name.is_empty() || cipher_mode.is_empty() || cipher_name.contains('-') {
            return Err(SpecError::Malformed {
                spec: whole,
                reason: "LUKS1 needs a cipher name without '-' and a non-empty mode",
            });
        }
        CipherSpec::parse(&whole)
    }

    fn from_parts(
        spec: &str,
        cipher: &str,
        mode: &str,
        iv: Option<&str>,
    ) -> Result<CipherSpec, SpecError> {
        if cipher.is_empty() || mode.is_empty() || iv == Some("") {
            return Err(SpecError::Malformed {
                spec: spec.to_string(),
                reason: "empty cipher, mode or IV part",
            });
        }
        if let Some((_, count)) = cipher.split_once(':') {
            // dm-crypt's "cipher:keycount" (loop-AES multi-key); keycount 1 is plain.
            if count != "1" {
                return Err(SpecError::Unsupported {
                    spec: spec.to_string(),
                    what: "multi-key (cipher:keycount) specifications",
                });
            }
            return Err(SpecError::Malformed {
                spec: spec.to_string(),
                reason: "write the cipher without ':1'",
            });
        }
        let c = Cipher::from_name(cipher).ok_or_else(|| SpecError::UnknownCipher {
            name: cipher.to_string(),
        })?;
        let m = match mode {
            "xts" => Mode::Xts,
            "cbc" => Mode::Cbc,
            "ecb" => Mode::Ecb,
            "lrw" => Mode::Lrw,
            _ => {
                return Err(SpecError::UnknownMode {
                    mode: mode.to_string(),
                })
            }
        };
        let iv = iv.map(IvMode::parse).transpose()?;
        CipherSpec::new(c, m, iv)
    }

    /// The block cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The chaining mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The IV generator, if any (ecb has none).
    pub fn iv(&self) -> Option<IvMode> {
        self.iv
    }

    /// True for wrapped-key ciphers (`waes`, `paes`) that only a key provider can run.
    pub fn is_wrapped(&self) -> bool {
        self.cipher.is_wrapped()
    }

    /// LUKS1 `cipher_name` field.
    pub fn luks1_cipher_name(&self) -> &'static str {
        self.cipher.name()
    }

    /// LUKS1 `cipher_mode` field (`mode[-iv[:ivopts]]`).
    pub fn luks1_cipher_mode(&self) -> String {
        match self.iv {
            Some(iv) => format!("{}-{iv}", self.mode),
            None => self.mode.to_string(),
        }
    }

    /// Whether a volume key of `bytes` bytes fits this cipher and mode (as dm-crypt splits it).
    pub fn key_len_valid(&self, bytes: usize) -> bool {
        if self.cipher.is_wrapped() {
            return bytes > 0;
        }
        if self.cipher == Cipher::Null {
            return true;
        }
        match self.mode {
            Mode::Xts => bytes.is_multiple_of(2) && self.cipher.accepts_key_len(bytes / 2),
            Mode::Lrw => bytes > 16 && self.cipher.accepts_key_len(bytes - 16),
            Mode::Cbc | Mode::Ecb => self.cipher.accepts_key_len(bytes),
        }
    }

    /// Checks a key length, with an error naming the specification.
    pub fn check_key_len(&self, bytes: usize) -> Result<(), SpecError> {
        if self.key_len_valid(bytes) {
            Ok(())
        } else {
            Err(SpecError::InvalidKeySize {
                spec: self.to_string(),
                bits: bytes * 8,
            })
        }
    }
}

impl fmt::Display for CipherSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.cipher, self.luks1_cipher_mode())
    }
}

impl FromStr for CipherSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CipherSpec::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "aes-xts-plain64",
            "aes-cbc-essiv:sha256",
            "aes-cbc-plain",
            "aes-ecb",
            "cipher_null-ecb",
            "serpent-xts-plain64",
            "twofish-cbc-essiv:sha256",
            "aes-lrw-benbi",
            "aes-xts-plain64be",
            "aes-cbc-null",
            "waes-xts-plain64",
            "paes-xts-plain64",
        ] {
            let p = CipherSpec::parse(s).unwrap();
            assert_eq!(p.to_string(), s);
            assert_eq!(
                CipherSpec::from_luks1(p.luks1_cipher_name(), &p.luks1_cipher_mode()).unwrap(),
                p
            );
        }
    }

    #[test]
    fn parts() {
        let p = CipherSpec::from_luks1("aes", "cbc-essiv:sha256").unwrap();
        assert_eq!(p.cipher(), Cipher::Aes);
        assert_eq!(p.mode(), Mode::Cbc);
        assert_eq!(p.iv(), Some(IvMode::Essiv(EssivHash::Sha256)));
        assert!(!p.is_wrapped());
        assert!(CipherSpec::parse("waes-xts-plain64").unwrap().is_wrapped());
        assert!(CipherSpec::parse("paes-xts-plain64").unwrap().is_wrapped());
    }

    #[test]
    fn rejects() {
        let e = CipherSpec::parse("capi:xts(ecb(aes-generic))-plain64").unwrap_err();
        assert_eq!(
            e.to_string(),
            "capi: cipher specifications are not supported: capi:xts(ecb(aes-generic))-plain64"
        );
        assert!(matches!(
            CipherSpec::parse("blowfish-cbc-plain"),
            Err(SpecError::UnknownCipher { .. })
        ));
        assert!(matches!(
            CipherSpec::parse("aes-ctr-plain64"),
            Err(SpecError::UnknownMode { .. })
        ));
        assert!(matches!(
            CipherSpec::parse("aes-cbc-essiv:md5"),
            Err(SpecError::UnknownHash { .. })
        ));
        assert!(matches!(
            CipherSpec::parse("aes-cbc-essiv"),
            Err(SpecError::UnknownIv { .. })
        ));
        assert!(matches!(
            CipherSpec::parse("aes-cbc-lmk"),
            Err(SpecError::Unsupported { .. })
        ));
        assert!(matches!(
            CipherSpec::parse("aes:64-cbc-lmk"),
            Err(SpecError::Unsupported { .. })
        ));
        assert!(matches!(
            CipherSpec::parse("aes-xts"),
            Err(SpecError::MissingIv { mode: Mode::Xts })
        ));
        for bad in [
            "",
            "aes",
            "aes-",
            "-xts-plain64",
            "aes-xts-",
            "aes-xts-plain64 ",
        ] {
            assert!(CipherSpec::parse(bad).is_err(), "{bad:?} must fail");
        }
    }

    #[test]
    fn key_lengths() {
        let xts = CipherSpec::parse("aes-xts-plain64").unwrap();
        assert!(xts.key_len_valid(32) && xts.key_len_valid(48) && xts.key_len_valid(64));
        assert!(!xts.key_len_valid(16) && !xts.key_len_valid(33));
        let cbc = CipherSpec::parse("aes-cbc-essiv:sha256").unwrap();
        assert!(cbc.key_len_valid(16) && cbc.key_len_valid(32) && !cbc.key_len_valid(64));
        let lrw = CipherSpec::parse("aes-lrw-benbi").unwrap();
        assert!(lrw.key_len_valid(32) && lrw.key_len_valid(48) && !lrw.key_len_valid(16));
        assert_eq!(
            xts.check_key_len(20).unwrap_err().to_string(),
            "a 160-bit key is not valid for aes-xts-plain64"
        );
    }
}
