//! The software sector engine: a keyed cipher, chaining mode and IV generator.

use zeroize::Zeroize;

use wrapcrypt_secret::SecretBytes;

use crate::block::{Backend, BlockKey};
use crate::iv::IvGen;
use crate::lrw::LrwKey;
use crate::path::XtsPath;
use crate::spec::{Cipher, CipherSpec, Mode, SpecError};
use crate::BLOCK;
use crate::{SectorCipher, SectorError};

/// Sectors whose IVs/tweaks are computed in one batch.
const BATCH: usize = 8;

enum Engine {
    Null,
    Ecb(BlockKey),
    Cbc(BlockKey),
    Xts { data: BlockKey, tweak: BlockKey },
    Lrw { data: BlockKey, tweak: LrwKey },
}

/// dm-crypt compatible software sector cipher (keys in locked memory).
pub struct SoftCipher {
    spec: CipherSpec,
    sector_size: usize,
    engine: Engine,
    iv: IvGen,
}

impl std::fmt::Debug for SoftCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftCipher")
            .field("spec", &self.spec.to_string())
            .field("sector_size", &self.sector_size)
            .field("accelerated", &self.accelerated())
            .field("xts_path", &self.xts_path().map(XtsPath::name))
            .finish_non_exhaustive()
    }
}

/// Builds the software engine for `spec` behind the [`SectorCipher`] trait.
pub fn new_soft_cipher(
    spec: &CipherSpec,
    key: &SecretBytes,
    sector_size: usize,
) -> Result<Box<dyn SectorCipher>, SpecError> {
    Ok(Box::new(SoftCipher::new(spec, key, sector_size)?))
}

/// Checks a dm-crypt sector size: a power of two from 512 to 4096.
pub fn check_sector_size(size: usize) -> Result<(), SpecError> {
    if (512..=4096).contains(&size) && size.is_power_of_two() {
        Ok(())
    } else {
        Err(SpecError::InvalidSectorSize { size })
    }
}

impl SoftCipher {
    /// Keys the engine with the fastest implementation available.
    pub fn new(
        spec: &CipherSpec,
        key: &SecretBytes,
        sector_size: usize,
    ) -> Result<SoftCipher, SpecError> {
        SoftCipher::with_backend(spec, key, sector_size, Backend::Auto)
    }

    /// Keys the engine with a chosen AES implementation.
    pub fn with_backend(
        spec: &CipherSpec,
        key: &SecretBytes,
        sector_size: usize,
        backend: Backend,
    ) -> Result<SoftCipher, SpecError> {
        SoftCipher::with_xts_path(spec, key, sector_size, backend.xts_path())
    }

    /// Keys the engine with AES-XTS on `path`, or on the fastest path below
    /// it that this CPU has (tests and benchmarks compare the paths). AES in
    /// the other modes runs on AES-NI unless `path` is portable.
    pub fn with_xts_path(
        spec: &CipherSpec,
        key: &SecretBytes,
        sector_size: usize,
        path: XtsPath,
    ) -> Result<SoftCipher, SpecError> {
        wrapcrypt_secret::protect_thread_stack();
        check_sector_size(sector_size)?;
        if spec.is_wrapped() {
            return Err(SpecError::WrappedKey {
                cipher: spec.cipher(),
            });
        }
        spec.check_key_len(key.len())?;
        let k = key.expose_secret();
        let c = spec.cipher();
        let engine = if c == Cipher::Null {
            Engine::Null
        } else {
            match spec.mode() {
                Mode::Ecb => Engine::Ecb(BlockKey::new(c, k, path)?),
                Mode::Cbc => Engine::Cbc(BlockKey::new(c, k, path)?),
                Mode::Xts => {
                    let (k1, k2) = k.split_at(k.len() / 2);
                    Engine::Xts {
                        data: BlockKey::new(c, k1, path)?,
                        tweak: BlockKey::new(c, k2, path)?,
                    }
                }
                Mode::Lrw => {
                    let (k1, k2) = k.split_at(k.len() - BLOCK);
                    Engine::Lrw {
                        data: BlockKey::new(c, k1, path)?,
                        tweak: LrwKey::new(k2),
                    }
                }
            }
        };
        let iv = match (c, spec.mode()) {
            (Cipher::Null, _) | (_, Mode::Ecb) => IvGen::None,
            _ => IvGen::new(spec.iv(), c, k, path)?,
        };
        crate::wipe::clear_vector_registers();
        Ok(SoftCipher {
            spec: *spec,
            sector_size,
            engine,
            iv,
        })
    }

    /// The specification this engine runs.
    pub fn spec(&self) -> &CipherSpec {
        &self.spec
    }

    /// True when the bulk cipher runs on the AES-NI fast path.
    pub fn accelerated(&self) -> bool {
        match &self.engine {
            Engine::Null => false,
            Engine::Ecb(k) | Engine::Cbc(k) => k.accelerated(),
            Engine::Xts { data, .. } | Engine::Lrw { data, .. } => data.accelerated(),
        }
    }

    /// The AES-XTS implementation this engine runs; `None` for other
    /// ciphers and modes.
    pub fn xts_path(&self) -> Option<XtsPath> {
        match &self.engine {
            Engine::Xts { data, .. } if self.spec.cipher() == Cipher::Aes => Some(data.xts_path()),
            _ => None,
        }
    }

    /// Which implementation runs the bulk cipher: an [`XtsPath`] name for
    /// AES; `portable` (RustCrypto), `bitsliced`, `avx2` or `avx512` for
    /// Serpent; `portable`, `tables` or `avx512` for Twofish; `none` for
    /// cipher_null.
    pub fn engine_name(&self) -> &'static str {
        match &self.engine {
            Engine::Null => "none",
            Engine::Ecb(k) | Engine::Cbc(k) => k.engine_name(),
            Engine::Xts { data, .. } | Engine::Lrw { data, .. } => data.engine_name(),
        }
    }

    /// Encrypts `data` as one data unit of any whole number of cipher blocks,
    /// with the IV of `iv_sector` (for verification patterns: 32 bytes, tweak 0).
    pub fn encrypt_unit(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.check_blocks(data)?;
        self.run(iv_sector, data, data.len().max(BLOCK), true);
        Ok(())
    }

    /// Decrypts one data unit written by [`SoftCipher::encrypt_unit`].
    pub fn decrypt_unit(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.check_blocks(data)?;
        self.run(iv_sector, data, data.len().max(BLOCK), false);
        Ok(())
    }

    fn check_blocks(&self, data: &[u8]) -> Result<(), SectorError> {
        if !data.len().is_multiple_of(BLOCK) {
            return Err(SectorError::Misaligned {
                len: data.len(),
                sector_size: BLOCK,
            });
        }
        Ok(())
    }

    fn check_sectors(&self, data: &[u8]) -> Result<(), SectorError> {
        if !data.len().is_multiple_of(self.sector_size) {
            return Err(SectorError::Misaligned {
                len: data.len(),
                sector_size: self.sector_size,
            });
        }
        Ok(())
    }

    /// Processes `data` in units of `unit` bytes; IV sectors advance by unit / 512
    /// (at least 1 for the single short unit of encrypt_unit).
    fn run(&self, iv_sector: u64, data: &mut [u8], unit: usize, encrypt: bool) {
        // Register spills of round keys land on this thread's stack: keep
        // that stack out of core dumps too.
        wrapcrypt_secret::protect_thread_stack();
        let step = (unit / 512).max(1) as u64;
        let mut ivs = Ivs([[0u8; BLOCK]; BATCH]);
        let mut used = 0;
        let mut sector = iv_sector;
        for group in data.chunks_mut(unit * BATCH) {
            let n = group.len().div_ceil(unit);
            used = used.max(n);
            let ivs = &mut ivs.0;
            self.iv.fill(sector, step, &mut ivs[..n]);
            sector = sector.wrapping_add(step * n as u64);
            match &self.engine {
                Engine::Null => {}
                Engine::Ecb(k) => {
                    if encrypt {
                        k.encrypt_blocks(group)
                    } else {
                        k.decrypt_blocks(group)
                    }
                }
                Engine::Cbc(k) => {
                    for (u, iv) in group.chunks_mut(unit).zip(ivs.iter()) {
                        if encrypt {
                            k.cbc_encrypt(iv, u)
                        } else {
                            k.cbc_decrypt(iv, u)
                        }
                    }
                }
                Engine::Xts {
                    data: k1,
                    tweak: k2,
                } => {
                    // All first tweaks of the batch in one pipelined call.
                    k2.encrypt_blocks(ivs[..n].as_flattened_mut());
                    for (u, t) in group.chunks_mut(unit).zip(ivs.iter()) {
                        if encrypt {
                            k1.xts_encrypt(t, u)
                        } else {
                            k1.xts_decrypt(t, u)
                        }
                    }
                }
                Engine::Lrw { data: k1, tweak } => {
                    for (u, iv) in group.chunks_mut(unit).zip(ivs.iter()) {
                        let mut i = u128::from_be_bytes(*iv);
                        let mut t = tweak.first(i);
                        k1.xex(u, encrypt, || {
                            // The kernel's lrw XORs T's big-endian bytes.
                            let cur = u128::from_le_bytes(t.to_be_bytes());
                            t = tweak.next(t, i);
                            i = i.wrapping_add(1);
                            cur
                        });
                        t.zeroize();
                    }
                }
            }
        }
        ivs.wipe(used);
        // Round keys stay in SIMD registers after AES-NI and VAES; a core
        // dump would record them with the thread's register state.
        crate::wipe::clear_vector_registers();
    }
}

/// The IVs (then first tweaks) of one batch. Aligned so that a block is
/// wiped with one store: `zeroize` on bytes stores one byte at a time, which
/// cost a single-sector call more than its tweak encryption.
#[repr(C, align(16))]
struct Ivs([[u8; BLOCK]; BATCH]);

impl Ivs {
    /// Zeroes the first `n` blocks (the only ones a call wrote).
    fn wipe(&mut self, n: usize) {
        for b in &mut self.0[..n] {
            // SAFETY: every element starts at a multiple of 16 bytes from
            // the 16-aligned start, so it is a valid, aligned u128.
            unsafe { std::ptr::write_volatile(b.as_mut_ptr() as *mut u128, 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl SectorCipher for SoftCipher {
    fn sector_size(&self) -> usize {
        self.sector_size
    }

    fn encrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.check_sectors(data)?;
        self.run(iv_sector, data, self.sector_size, true);
        Ok(())
    }

    fn decrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.check_sectors(data)?;
        self.run(iv_sector, data, self.sector_size, false);
        Ok(())
    }
}
