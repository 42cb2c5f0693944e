//! One keyed block cipher (16-byte blocks) with batch helpers for the modes.

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, BlockEncrypt, KeyInit};
use zeroize::Zeroize;

use crate::locked::Locked;
use crate::path::XtsPath;
use crate::spec::{Cipher, SpecError};
use crate::BLOCK;

/// Which implementation to use for AES.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// The fastest available (VAES, then AES-NI, where the CPU has them),
    /// lowered by `WRAPCRYPT_XTS_PATH` if that is set.
    #[default]
    Auto,
    /// The portable RustCrypto implementations only (reference and fallback).
    Portable,
}

impl Backend {
    /// The XTS path this backend stands for.
    pub(crate) fn xts_path(self) -> XtsPath {
        match self {
            Backend::Auto => crate::path::selected(),
            Backend::Portable => XtsPath::Portable,
        }
    }
}

/// A keyed block cipher whose schedule lives in locked memory.
pub(crate) enum BlockKey {
    #[cfg(target_arch = "x86_64")]
    AesNi(crate::aesni::AesKey),
    Aes128(Locked<aes::Aes128>),
    Aes192(Locked<aes::Aes192>),
    Aes256(Locked<aes::Aes256>),
    /// RustCrypto's Serpent: the reference (`XtsPath::Portable`).
    Serpent(Locked<serpent::Serpent>),
    /// Bitsliced Serpent, up to 32 blocks per vector pass where the CPU has one.
    SerpentFast(Locked<crate::serpent::SerpentKey>, Wide),
    /// RustCrypto's Twofish: the reference (`XtsPath::Portable`).
    Twofish(Locked<twofish::Twofish>),
    /// Twofish with full-key tables, four blocks interleaved; sixteen blocks
    /// per pass on AVX-512 (VBMI, GFNI) when the flag is set.
    TwofishFast(Locked<crate::twofish::TwofishKey>, bool),
}

/// The vector unit the Serpent batches use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Wide {
    /// Scalar code only.
    None,
    /// ymm registers (AVX2).
    Avx2,
    /// zmm registers (AVX-512F).
    Avx512,
}

impl Wide {
    /// The widest unit at or below `path` (vaes512 allows AVX-512, vaes256
    /// AVX2) that this CPU has.
    fn for_path(path: XtsPath) -> Wide {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if path >= XtsPath::Vaes512 && has!("avx512f") && has!("avx2") {
                return Wide::Avx512;
            }
            if path >= XtsPath::Vaes256 && has!("avx2") {
                return Wide::Avx2;
            }
        }
        let _ = path;
        Wide::None
    }
}

/// Blocks per call into the block cipher in the generic CBC-decrypt and XEX
/// loops: one pass of the 32-block Serpent engine on AVX-512 (64 measured
/// no faster).
const CHUNK: usize = 32;

type Block = GenericArray<u8, aes::cipher::consts::U16>;

fn as_blocks(data: &mut [u8]) -> &mut [Block] {
    debug_assert_eq!(data.len() % BLOCK, 0);
    // SAFETY: GenericArray<u8, U16> is a repr(transparent) [u8; 16] with
    // alignment 1; the length is rounded down to whole blocks.
    unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr() as *mut Block, data.len() / BLOCK) }
}

fn locked<T: KeyInit>(key: &[u8]) -> Result<Locked<T>, aes::cipher::InvalidLength> {
    Locked::try_new(|| T::new_from_slice(key))
}

impl BlockKey {
    /// Keys `cipher` with `key` (one block-cipher key, already split by the
    /// mode); AES runs XTS on `path` or the fastest path below it.
    pub(crate) fn new(cipher: Cipher, key: &[u8], path: XtsPath) -> Result<BlockKey, SpecError> {
        let bad = || SpecError::InvalidKeySize {
            spec: cipher.to_string(),
            bits: key.len() * 8,
        };
        if !cipher.accepts_key_len(key.len()) {
            return Err(bad());
        }
        match cipher {
            Cipher::Aes => {
                #[cfg(target_arch = "x86_64")]
                if let Some(k) = crate::aesni::AesKey::new(key, path) {
                    return Ok(BlockKey::AesNi(k));
                }
                let _ = path;
                Ok(match key.len() {
                    16 => BlockKey::Aes128(locked(key).map_err(|_| bad())?),
                    24 => BlockKey::Aes192(locked(key).map_err(|_| bad())?),
                    _ => BlockKey::Aes256(locked(key).map_err(|_| bad())?),
                })
            }
            Cipher::Serpent => Ok(match engine_limit(path) {
                None => BlockKey::Serpent(locked(key).map_err(|_| bad())?),
                Some(limit) => BlockKey::SerpentFast(
                    Locked::new(|| crate::serpent::SerpentKey::new(key)),
                    Wide::for_path(limit),
                ),
            }),
            Cipher::Twofish => Ok(match engine_limit(path) {
                None => BlockKey::Twofish(locked(key).map_err(|_| bad())?),
                Some(limit) => BlockKey::TwofishFast(
                    Locked::new(|| crate::twofish::TwofishKey::new(key)),
                    twofish_wide(limit),
                ),
            }),
            Cipher::Null => Err(SpecError::Unsupported {
                spec: cipher.to_string(),
                what: "cipher_null has no block cipher",
            }),
            Cipher::Waes | Cipher::Paes => Err(SpecError::WrappedKey { cipher }),
        }
    }

    /// True when this key runs on the AES-NI fast path.
    pub(crate) fn accelerated(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if let BlockKey::AesNi(_) = self {
            return true;
        }
        false
    }

    /// The XTS implementation this key runs (portable for every cipher but
    /// accelerated AES).
    pub(crate) fn xts_path(&self) -> XtsPath {
        #[cfg(target_arch = "x86_64")]
        if let BlockKey::AesNi(k) = self {
            return k.xts_path();
        }
        XtsPath::Portable
    }

    /// Which implementation runs this key, for benchmarks and tests.
    pub(crate) fn engine_name(&self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            BlockKey::AesNi(k) => k.xts_path().name(),
            BlockKey::Aes128(_) | BlockKey::Aes192(_) | BlockKey::Aes256(_) => "portable",
            BlockKey::Serpent(_) | BlockKey::Twofish(_) => "portable",
            BlockKey::SerpentFast(_, Wide::Avx512) => "avx512",
            BlockKey::SerpentFast(_, Wide::Avx2) => "avx2",
            BlockKey::SerpentFast(_, Wide::None) => "bitsliced",
            BlockKey::TwofishFast(_, false) => "tables",
            BlockKey::TwofishFast(_, true) => "avx512",
        }
    }

    /// ECB-encrypts whole blocks in place.
    pub(crate) fn encrypt_blocks(&self, data: &mut [u8]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            BlockKey::AesNi(k) => k.ecb_encrypt(data),
            BlockKey::Aes128(k) => k.get().encrypt_blocks(as_blocks(data)),
            BlockKey::Aes192(k) => k.get().encrypt_blocks(as_blocks(data)),
            BlockKey::Aes256(k) => k.get().encrypt_blocks(as_blocks(data)),
            BlockKey::Serpent(k) => k.get().encrypt_blocks(as_blocks(data)),
            BlockKey::SerpentFast(k, wide) => serpent_blocks(k.get(), *wide, data, true),
            BlockKey::Twofish(k) => k.get().encrypt_blocks(as_blocks(data)),
            BlockKey::TwofishFast(k, wide) => twofish_blocks(k.get(), *wide, data, true),
        }
    }

    /// ECB-decrypts whole blocks in place.
    pub(crate) fn decrypt_blocks(&self, data: &mut [u8]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            BlockKey::AesNi(k) => k.ecb_decrypt(data),
            BlockKey::Aes128(k) => k.get().decrypt_blocks(as_blocks(data)),
            BlockKey::Aes192(k) => k.get().decrypt_blocks(as_blocks(data)),
            BlockKey::Aes256(k) => k.get().decrypt_blocks(as_blocks(data)),
            BlockKey::Serpent(k) => k.get().decrypt_blocks(as_blocks(data)),
            BlockKey::SerpentFast(k, wide) => serpent_blocks(k.get(), *wide, data, false),
            BlockKey::Twofish(k) => k.get().decrypt_blocks(as_blocks(data)),
            BlockKey::TwofishFast(k, wide) => twofish_blocks(k.get(), *wide, data, false),
        }
    }

    /// CBC-encrypts one data unit in place.
    pub(crate) fn cbc_encrypt(&self, iv: &[u8; BLOCK], data: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if let BlockKey::AesNi(k) = self {
            return k.cbc_encrypt(iv, data);
        }
        let mut prev = *iv;
        for b in data.chunks_exact_mut(BLOCK) {
            xor_into(b, &prev);
            self.encrypt_blocks(b);
            prev.copy_from_slice(b);
        }
    }

    /// CBC-decrypts one data unit in place.
    pub(crate) fn cbc_decrypt(&self, iv: &[u8; BLOCK], data: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if let BlockKey::AesNi(k) = self {
            return k.cbc_decrypt(iv, data);
        }
        // Batches keep the block cipher's parallelism; ciphertext is kept in
        // `ct` because decryption overwrites it.
        let mut prev = *iv;
        let mut ct = [0u8; CHUNK * BLOCK];
        for chunk in data.chunks_mut(CHUNK * BLOCK) {
            let n = chunk.len();
            ct[..n].copy_from_slice(chunk);
            self.decrypt_blocks(chunk);
            xor_into(&mut chunk[..BLOCK], &prev);
            for i in 1..n / BLOCK {
                xor_into(
                    &mut chunk[i * BLOCK..(i + 1) * BLOCK],
                    &ct[(i - 1) * BLOCK..i * BLOCK],
                );
            }
            prev.copy_from_slice(&ct[n - BLOCK..n]);
        }
    }

    /// XTS-encrypts one data unit whose first tweak (already E_K2(IV)) is `tweak`.
    pub(crate) fn xts_encrypt(&self, tweak: &[u8; BLOCK], data: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if let BlockKey::AesNi(k) = self {
            return k.xts_encrypt(tweak, data);
        }
        let mut t = u128::from_le_bytes(*tweak);
        self.xex(data, true, || {
            let cur = t;
            t = xts_mul_x(t);
            cur
        });
        t.zeroize();
    }

    /// XTS-decrypts one data unit whose first tweak (already E_K2(IV)) is `tweak`.
    pub(crate) fn xts_decrypt(&self, tweak: &[u8; BLOCK], data: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if let BlockKey::AesNi(k) = self {
            return k.xts_decrypt(tweak, data);
        }
        let mut t = u128::from_le_bytes(*tweak);
        self.xex(data, false, || {
            let cur = t;
            t = xts_mul_x(t);
            cur
        });
        t.zeroize();
    }

    /// C = E(P ^ T) ^ T with tweaks from `next` (each the 16 tweak bytes
    /// read as a little-endian number), in batches of [`CHUNK`] blocks.
    pub(crate) fn xex(&self, data: &mut [u8], encrypt: bool, mut next: impl FnMut() -> u128) {
        let mut tw = [0u128; CHUNK];
        for chunk in data.chunks_mut(CHUNK * BLOCK) {
            let n = chunk.len() / BLOCK;
            for (b, t) in chunk.chunks_exact_mut(BLOCK).zip(tw.iter_mut()) {
                *t = next();
                xor_block(b, *t);
            }
            if encrypt {
                self.encrypt_blocks(chunk);
            } else {
                self.decrypt_blocks(chunk);
            }
            for (b, t) in chunk.chunks_exact_mut(BLOCK).zip(&tw[..n]) {
                xor_block(b, *t);
            }
        }
        for t in tw.iter_mut() {
            // SAFETY: t is a valid, aligned u128.
            unsafe { std::ptr::write_volatile(t, 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// Serpent ECB on `data`: 32- and 16-block passes on zmm (AVX-512), then
/// 16- and 8-block passes on ymm (AVX2) for what is left, then one block at
/// a time.
fn serpent_blocks(k: &crate::serpent::SerpentKey, wide: Wide, data: &mut [u8], encrypt: bool) {
    #[allow(unused_mut)]
    let mut rest = data;
    #[cfg(target_arch = "x86_64")]
    {
        if wide >= Wide::Avx512 {
            let (head, tail) = rest.split_at_mut(rest.len() / 256 * 256);
            // SAFETY: Wide::Avx512 is only chosen when the CPU has AVX-512F.
            unsafe {
                if encrypt {
                    crate::serpent_avx512::encrypt16(k, head)
                } else {
                    crate::serpent_avx512::decrypt16(k, head)
                }
            }
            rest = tail;
        }
        if wide >= Wide::Avx2 {
            let (head, tail) = rest.split_at_mut(rest.len() / 128 * 128);
            // SAFETY: Wide::Avx2 and above are only chosen with AVX2.
            unsafe {
                if encrypt {
                    crate::serpent_avx2::encrypt8(k, head)
                } else {
                    crate::serpent_avx2::decrypt8(k, head)
                }
            }
            rest = tail;
        }
    }
    if encrypt {
        k.encrypt_blocks(rest)
    } else {
        k.decrypt_blocks(rest)
    }
}

/// How far `path` lets Serpent and Twofish go: `None` for the RustCrypto
/// reference (`portable` on a CPU that has more); the AES path at the top
/// of what this CPU has sets no limit, since the AES choice says nothing
/// about AVX2 or AVX-512 (a CPU with AVX2 but no VAES still runs the AVX2
/// Serpent); a lower one (forced for tests and benchmarks) limits the
/// vector unit: `aesni` scalar, `vaes256` AVX2, `vaes512` AVX-512.
fn engine_limit(path: XtsPath) -> Option<XtsPath> {
    let top = crate::path::best();
    if path == XtsPath::Portable && top != XtsPath::Portable {
        None
    } else if path >= top {
        Some(XtsPath::Vaes512)
    } else {
        Some(path)
    }
}

/// Whether Twofish at `path` runs the AVX-512 engine (path vaes512 and a
/// CPU with AVX-512 F/BW, VBMI and GFNI).
fn twofish_wide(path: XtsPath) -> bool {
    #[cfg(target_arch = "x86_64")]
    return path >= XtsPath::Vaes512 && crate::twofish_avx512::available();
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = path;
        false
    }
}

/// Twofish ECB on `data`: sixteen-block passes on AVX-512 where `wide`,
/// then the four-way scalar code.
fn twofish_blocks(k: &crate::twofish::TwofishKey, wide: bool, data: &mut [u8], encrypt: bool) {
    #[allow(unused_mut)]
    let mut rest = data;
    #[cfg(target_arch = "x86_64")]
    if wide {
        let (head, tail) = rest.split_at_mut(rest.len() / 256 * 256);
        // SAFETY: `wide` is only set when twofish_avx512::available().
        unsafe {
            if encrypt {
                crate::twofish_avx512::encrypt16(k, head)
            } else {
                crate::twofish_avx512::decrypt16(k, head)
            }
        }
        rest = tail;
    }
    let _ = wide;
    if encrypt {
        k.encrypt_blocks(rest)
    } else {
        k.decrypt_blocks(rest)
    }
}

/// XTS multiplication by x (little-endian, reduction x^128 + x^7 + x^2 + x + 1).
pub(crate) fn xts_mul_x(t: u128) -> u128 {
    (t << 1) ^ ((t >> 127).wrapping_neg() & 0x87)
}

/// XORs a 16-byte block with `t`'s little-endian bytes, as two words.
#[inline(always)]
fn xor_block(b: &mut [u8], t: u128) {
    let v = u128::from_le_bytes(b[..BLOCK].try_into().expect("16 bytes")) ^ t;
    b[..BLOCK].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}
