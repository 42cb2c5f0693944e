//! Password-based key derivation as LUKS uses it: PBKDF2-HMAC (keyslots and
//! the volume-key digest) and Argon2i/Argon2id (LUKS2 keyslots), with
//! cryptsetup's parameter limits and its time-based calibration.
//!
//! # Backends
//! * PBKDF2 is computed here over RustCrypto's HMAC and hashes. Output blocks
//!   are independent, so when a key needs several blocks (a 512-bit key with
//!   SHA-256 needs two) and the iteration count is high, the blocks run on
//!   separate threads: unlock then takes the time of one block, where
//!   cryptsetup computes them one after the other.
//! * Argon2 is computed by the system's reference library, libargon2 (the one
//!   cryptsetup links), with one thread per lane as cryptsetup does. RustCrypto's
//!   `argon2` crate is single-threaded, so `p=4` on two cores took about twice
//!   as long; the tests use it as an independent oracle instead. The Argon2
//!   memory matrix is allocated here, outside the heap, excluded from core
//!   dumps and locked when the memory-lock limit allows; libargon2 wipes it
//!   before it is released.
//!
//! # Measured (2-core Xeon 2.5 GHz, AVX2, no SHA-NI; cryptsetup 2.6.1)
//! `benches/kdf_vs_cryptsetup.sh` against `cryptsetup open --test-passphrase`
//! on a header with the same parameters, CPU seconds (the machine was shared,
//! so wall time mostly measured the other tenants):
//! * argon2id m=256 MiB t=4 p=4: 2.09 s vs 2.07 s; peak RSS 264.7 vs 270.2 MiB.
//! * argon2id m=256 MiB t=4 p=2: 1.73–2.05 s vs 1.82–1.85 s.
//! * On a 2-core AMD EPYC (Zen 4) the p=4 unlock took 1.2× cryptsetup's
//!   wall time (`make bench`); 150 ms of it was system time, the page
//!   faults of mlock touching 65,536 4 KiB pages before the first pass.
//!   The matrix is now advised `MADV_HUGEPAGE` (transparent huge pages are
//!   `madvise` on Debian): system time 150 → 77 ms (hyperfine, 10 runs,
//!   cryptsetup 117 ms in the same run).
//! * PBKDF2, 10^6 iterations, one block, against `openssl kdf` (cryptsetup's
//!   backend): sha256 0.77–0.81 s vs 0.87–0.88 s; sha512 0.85 vs 0.98–1.11 s;
//!   sha1 0.65–0.69 vs 1.26–1.33 s. A 512-bit sha256 key is two blocks,
//!   which run on two threads here and one after the other in cryptsetup.
//!
//! # Limits (cryptsetup 2.6, `crypt_pbkdf_get_limits`)
//! | KDF | iterations / time cost | memory (KiB) | parallel |
//! |---|---|---|---|
//! | pbkdf2 | ≥ 1000 | – | – |
//! | argon2i, argon2id | ≥ 4 | 32 ..= 4194304 | 1 ..= 4 |
//!
//! [`KdfParams::validate_new`] applies them to parameters that are about to be
//! written (a new keyslot, forced values). Unlocking an existing header only
//! needs parameters the algorithm can compute ([`KdfParams::check_computable`]):
//! cryptsetup's own test images carry values below the creation limits.
//!
//! # Calibration rules (what [`calibrate`] implements)
//! * **PBKDF2** (cryptsetup's `crypt_pbkdf_check` + `crypt_benchmark_pbkdf_internal`):
//!   time a single-threaded derivation of the full key length (password
//!   `foo`, salt `bar`) starting at 2^15 iterations, multiplying the count by
//!   16, 8, 4 or 2 when the run took ≤ 62, ≤ 125, ≤ 250 or ≤ 500 ms, until a
//!   run takes more than 500 ms; then `iterations = measured rate × target_ms`,
//!   at least 1000. CPU time of the calling thread is measured (cryptsetup
//!   uses process CPU time), so a busy machine does not inflate the count of
//!   a single run, and the multi-threaded unlock above does not deflate it.
//! * **Argon2** (cryptsetup's `crypt_argon2_check`): wall-clock time, since
//!   lanes run in parallel. Start at time cost 4 and memory `max(32, 8·p)` KiB.
//!   Phase 1 grows memory first (×16 while a run is under 10 ms, else scaled
//!   to reach 250 ms, capped at the maximum), then time cost, until a run
//!   takes ≥ 250 ms (best of 3 samples). Phase 2 rescales towards the target:
//!   when too slow lower the time cost, and below 4 lower memory instead (not
//!   below the minimum); when too fast raise memory, and past the maximum keep
//!   the maximum and raise the time cost. It stops once a run lands within
//!   95 %–110 % of the target or the parameters stop changing.
//! * The LUKS2 volume-key digest uses PBKDF2 with a 125 ms target
//!   ([`DIGEST_TARGET_MS`]), benchmarked for the volume key's length, at least
//!   1000 iterations; with forced KDF parameters (no benchmark) cryptsetup
//!   writes exactly 1000 ([`PBKDF2_MIN_ITERATIONS`]).
//! * Defaults (cryptsetup 2.6 `luksFormat`): `--iter-time` 2000 ms
//!   ([`DEFAULT_ITER_TIME_MS`]); `--pbkdf-memory` 1 GiB capped by
//!   [`default_max_memory_kib`]; `--pbkdf-parallel` 4 capped by the online
//!   CPUs ([`default_parallel`]).

use std::fmt;
use std::time::{Duration, Instant};

use hmac::Hmac;
use sha2::digest::{FixedOutput, KeyInit, Update};
use zeroize::Zeroize;

use crate::hash::HashAlg;

/// cryptsetup's minimum PBKDF2 iteration count (NIST SP 800-132).
pub const PBKDF2_MIN_ITERATIONS: u32 = 1000;
/// cryptsetup's minimum Argon2 time cost for new keyslots.
pub const ARGON2_MIN_TIME: u32 = 4;
/// cryptsetup's minimum Argon2 memory cost in KiB.
pub const ARGON2_MIN_MEMORY_KIB: u32 = 32;
/// cryptsetup's maximum Argon2 memory cost in KiB (4 GiB).
pub const ARGON2_MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
/// cryptsetup's minimum Argon2 parallelism.
pub const ARGON2_MIN_PARALLEL: u32 = 1;
/// cryptsetup's maximum Argon2 parallelism.
pub const ARGON2_MAX_PARALLEL: u32 = 4;
/// cryptsetup's default `--iter-time` in milliseconds.
pub const DEFAULT_ITER_TIME_MS: u32 = 2000;
/// cryptsetup's default `--pbkdf-memory` in KiB (1 GiB).
pub const DEFAULT_MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// cryptsetup's default `--pbkdf-parallel`.
pub const DEFAULT_PARALLEL: u32 = 4;
/// Target time of the LUKS2/LUKS1 volume-key digest's PBKDF2 in milliseconds.
pub const DIGEST_TARGET_MS: u32 = 125;

/// Argon2 variants LUKS2 allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Argon2Variant {
    /// Argon2i (data-independent addressing).
    I,
    /// Argon2id (hybrid; LUKS2's default).
    Id,
}

impl Argon2Variant {
    /// The LUKS2 `kdf.type` string.
    pub const fn name(self) -> &'static str {
        match self {
            Argon2Variant::I => "argon2i",
            Argon2Variant::Id => "argon2id",
        }
    }

    /// Parses a LUKS2 `kdf.type` string.
    pub fn from_name(name: &str) -> Option<Argon2Variant> {
        match name {
            "argon2i" => Some(Argon2Variant::I),
            "argon2id" => Some(Argon2Variant::Id),
            _ => None,
        }
    }
}

/// Parameters of one key derivation, as stored in a keyslot or digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KdfParams {
    /// PBKDF2-HMAC.
    Pbkdf2 {
        /// Hash under HMAC.
        hash: HashAlg,
        /// Iteration count.
        iterations: u32,
    },
    /// Argon2, version 0x13.
    Argon2 {
        /// Argon2i or Argon2id.
        variant: Argon2Variant,
        /// Time cost (passes), LUKS2 `time`.
        time: u32,
        /// Memory cost in KiB, LUKS2 `memory`.
        memory_kib: u32,
        /// Lanes (and threads), LUKS2 `cpus`.
        parallel: u32,
    },
}

/// Which KDF to calibrate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KdfKind {
    /// PBKDF2-HMAC with this hash.
    Pbkdf2(HashAlg),
    /// Argon2 of this variant.
    Argon2(Argon2Variant),
}

/// Parameters outside what cryptsetup accepts or the algorithm can compute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// PBKDF2 iteration count below the minimum.
    #[error("PBKDF2 iteration count {iterations} is too low (minimum {min})")]
    Pbkdf2IterationsTooLow {
        /// The count given.
        iterations: u32,
        /// The minimum.
        min: u32,
    },
    /// Argon2 time cost below the minimum.
    #[error("Argon2 time cost {time} is too low (minimum {min})")]
    Argon2TimeTooLow {
        /// The time cost given.
        time: u32,
        /// The minimum.
        min: u32,
    },
    /// Argon2 memory cost below the minimum.
    #[error("Argon2 memory cost {memory_kib} KiB is too low (minimum {min_kib} KiB)")]
    Argon2MemoryTooLow {
        /// The memory cost given.
        memory_kib: u32,
        /// The minimum.
        min_kib: u32,
    },
    /// Argon2 memory cost above the maximum.
    #[error("Argon2 memory cost {memory_kib} KiB is too high (maximum {max_kib} KiB)")]
    Argon2MemoryTooHigh {
        /// The memory cost given.
        memory_kib: u32,
        /// The maximum.
        max_kib: u32,
    },
    /// Argon2 parallelism outside the allowed range.
    #[error("Argon2 parallelism {parallel} is out of range ({min}..={max})")]
    Argon2ParallelOutOfRange {
        /// The parallelism given.
        parallel: u32,
        /// The minimum.
        min: u32,
        /// The maximum.
        max: u32,
    },
}

/// Why a derivation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KdfError {
    /// The parameters cannot be computed.
    #[error("invalid KDF parameters: {0}")]
    Params(#[from] ParamsError),
    /// The output buffer has a length the KDF cannot produce.
    #[error("{kdf} cannot produce a {len}-byte key (allowed {min}..={max})")]
    OutputLength {
        /// KDF name.
        kdf: &'static str,
        /// Requested length.
        len: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// The salt is shorter than the KDF accepts.
    #[error("{kdf} salt of {len} bytes is too short (minimum {min})")]
    SaltTooShort {
        /// KDF name.
        kdf: &'static str,
        /// Salt length.
        len: usize,
        /// Minimum.
        min: usize,
    },
    /// An input is longer than the KDF's length fields allow.
    #[error("{what} of {len} bytes is too long for {kdf}")]
    InputTooLong {
        /// KDF name.
        kdf: &'static str,
        /// Which input.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// The Argon2 memory matrix could not be allocated.
    #[error("cannot allocate {memory_kib} KiB for Argon2")]
    OutOfMemory {
        /// Memory cost requested.
        memory_kib: u32,
    },
    /// libargon2 returned an error.
    #[error("libargon2 argon2_ctx failed: {message} ({code})")]
    Argon2 {
        /// libargon2's error code.
        code: i32,
        /// libargon2's message for it.
        message: String,
    },
}

/// Why a calibration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrateError {
    /// Target time of zero.
    #[error("the KDF target time cannot be zero")]
    ZeroTarget,
    /// Key length of zero.
    #[error("the key length cannot be zero")]
    ZeroKeyLength,
    /// Memory or parallelism out of range.
    #[error("invalid calibration limits: {0}")]
    Params(#[from] ParamsError),
    /// A trial derivation failed.
    #[error("benchmark derivation failed: {0}")]
    Derive(#[from] KdfError),
    /// The hash is so fast that the iteration count would overflow 32 bits,
    /// or too slow for the benchmark to progress.
    #[error("PBKDF2 benchmark out of range for {hash}")]
    Pbkdf2OutOfRange {
        /// The hash benchmarked.
        hash: HashAlg,
    },
}

impl KdfParams {
    /// The LUKS2 `kdf.type` string (`pbkdf2`, `argon2i`, `argon2id`).
    pub const fn type_name(&self) -> &'static str {
        match self {
            KdfParams::Pbkdf2 { .. } => "pbkdf2",
            KdfParams::Argon2 { variant, .. } => variant.name(),
        }
    }

    /// Checks cryptsetup's limits for parameters about to be written to a
    /// new keyslot or forced by the user (`--pbkdf-force-iterations`).
    pub fn validate_new(&self) -> Result<(), ParamsError> {
        match *self {
            KdfParams::Pbkdf2 { iterations, .. } => {
                if iterations < PBKDF2_MIN_ITERATIONS {
                    return Err(ParamsError::Pbkdf2IterationsTooLow {
                        iterations,
                        min: PBKDF2_MIN_ITERATIONS,
                    });
                }
                Ok(())
            }
            KdfParams::Argon2 {
                time,
                memory_kib,
                parallel,
                ..
            } => {
                check_parallel(parallel, ARGON2_MAX_PARALLEL)?;
                if time < ARGON2_MIN_TIME {
                    return Err(ParamsError::Argon2TimeTooLow {
                        time,
                        min: ARGON2_MIN_TIME,
                    });
                }
                check_memory(memory_kib, ARGON2_MIN_MEMORY_KIB.max(8 * parallel))
            }
        }
    }

    /// Checks that the parameters can be computed at all: what unlocking an
    /// existing header needs. Argon2 memory stays capped at cryptsetup's
    /// 4 GiB so a hostile header cannot ask for terabytes; parallelism may
    /// exceed 4 (the thread count is capped instead).
    pub fn check_computable(&self) -> Result<(), ParamsError> {
        match *self {
            KdfParams::Pbkdf2 { iterations, .. } => {
                if iterations == 0 {
                    return Err(ParamsError::Pbkdf2IterationsTooLow { iterations, min: 1 });
                }
                Ok(())
            }
            KdfParams::Argon2 {
                time,
                memory_kib,
                parallel,
                ..
            } => {
                check_parallel(parallel, ARGON2_MAX_LANES)?;
                if time == 0 {
                    return Err(ParamsError::Argon2TimeTooLow { time, min: 1 });
                }
                check_memory(memory_kib, 8 * parallel)
            }
        }
    }
}

const ARGON2_MAX_LANES: u32 = 0x00FF_FFFF;

fn check_parallel(parallel: u32, max: u32) -> Result<(), ParamsError> {
    if !(ARGON2_MIN_PARALLEL..=max).contains(&parallel) {
        return Err(ParamsError::Argon2ParallelOutOfRange {
            parallel,
            min: ARGON2_MIN_PARALLEL,
            max,
        });
    }
    Ok(())
}

fn check_memory(memory_kib: u32, min_kib: u32) -> Result<(), ParamsError> {
    if memory_kib < min_kib {
        return Err(ParamsError::Argon2MemoryTooLow {
            memory_kib,
            min_kib,
        });
    }
    if memory_kib > ARGON2_MAX_MEMORY_KIB {
        return Err(ParamsError::Argon2MemoryTooHigh {
            memory_kib,
            max_kib: ARGON2_MAX_MEMORY_KIB,
        });
    }
    Ok(())
}

impl fmt::Display for KdfParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KdfParams::Pbkdf2 { hash, iterations } => {
                write!(f, "pbkdf2-{hash} iterations={iterations}")
            }
            KdfParams::Argon2 {
                variant,
                time,
                memory_kib,
                parallel,
            } => write!(
                f,
                "{} t={time} m={memory_kib}KiB p={parallel}",
                variant.name()
            ),
        }
    }
}

/// Derives `out.len()` bytes from `password` and `salt` into `out` (normally
/// the inside of a `wrapcrypt_secret::SecretBytes`).
pub fn derive(
    params: &KdfParams,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), KdfError> {
    derive_keyed(params, password, salt, &[], &[], out)
}

/// [`derive()`] with Argon2's optional secret key and associated data (empty
/// in LUKS; here for RFC 9106's test vectors). PBKDF2 takes neither: both
/// must be empty.
pub fn derive_keyed(
    params: &KdfParams,
    password: &[u8],
    salt: &[u8],
    secret: &[u8],
    ad: &[u8],
    out: &mut [u8],
) -> Result<(), KdfError> {
    params.check_computable()?;
    match *params {
        KdfParams::Pbkdf2 { hash, iterations } => {
            if !secret.is_empty() || !ad.is_empty() {
                return Err(KdfError::InputTooLong {
                    kdf: "pbkdf2",
                    what: "Argon2 secret or associated data",
                    len: secret.len() + ad.len(),
                });
            }
            pbkdf2(hash, password, salt, iterations, out, true)
        }
        KdfParams::Argon2 {
            variant,
            time,
            memory_kib,
            parallel,
        } => argon2::hash(
            variant, time, memory_kib, parallel, password, salt, secret, ad, out,
        ),
    }
}

/// Computes PBKDF2-HMAC-`hash`. With `threads`, independent output blocks
/// of a long derivation run concurrently.
fn pbkdf2(
    hash: HashAlg,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    out: &mut [u8],
    threads: bool,
) -> Result<(), KdfError> {
    let max = (u32::MAX as usize).saturating_mul(hash.digest_len());
    if out.is_empty() || out.len() > max {
        return Err(KdfError::OutputLength {
            kdf: "pbkdf2",
            len: out.len(),
            min: 1,
            max,
        });
    }
    let threads = if threads {
        pbkdf2_threads(hash, iterations, out.len())
    } else {
        1
    };
    macro_rules! run {
        ($d:ty) => {
            pbkdf2_prf::<Hmac<$d>>(password, salt, iterations, out, hash.digest_len(), threads)
        };
    }
    match hash {
        HashAlg::Sha1 => run!(sha1::Sha1),
        HashAlg::Sha224 => run!(sha2::Sha224),
        HashAlg::Sha256 => run!(sha2::Sha256),
        HashAlg::Sha384 => run!(sha2::Sha384),
        HashAlg::Sha512 => run!(sha2::Sha512),
        HashAlg::Ripemd160 => run!(ripemd::Ripemd160),
        HashAlg::Whirlpool => run!(whirlpool::Whirlpool),
    }
    Ok(())
}

/// Below this many iterations a thread costs more than it saves.
const PBKDF2_THREAD_MIN_ITERATIONS: u32 = 20_000;

fn pbkdf2_threads(hash: HashAlg, iterations: u32, out_len: usize) -> usize {
    let blocks = out_len.div_ceil(hash.digest_len());
    if blocks < 2 || iterations < PBKDF2_THREAD_MIN_ITERATIONS {
        return 1;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    blocks.min(cpus).min(16)
}

fn pbkdf2_prf<P>(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    out: &mut [u8],
    hlen: usize,
    threads: usize,
) where
    P: KeyInit + Update + FixedOutput + Clone + Sync,
{
    // HMAC accepts keys of any length.
    let prf = P::new_from_slice(password).expect("HMAC takes any key length");
    if threads <= 1 {
        for (i, chunk) in out.chunks_mut(hlen).enumerate() {
            pbkdf2_block(&prf, salt, iterations, i as u32 + 1, chunk);
        }
        return;
    }
    let mut groups: Vec<Vec<(u32, &mut [u8])>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, chunk) in out.chunks_mut(hlen).enumerate() {
        groups[i % threads].push((i as u32 + 1, chunk));
    }
    std::thread::scope(|s| {
        let mut groups = groups.into_iter();
        let own = groups.next().unwrap_or_default();
        for g in groups {
            let prf = &prf;
            s.spawn(move || {
                for (idx, chunk) in g {
                    pbkdf2_block(prf, salt, iterations, idx, chunk);
                }
            });
        }
        for (idx, chunk) in own {
            pbkdf2_block(&prf, salt, iterations, idx, chunk);
        }
    });
}

/// One PBKDF2 block `T_idx`, written into `chunk` (a prefix of it for the
/// last, partial block).
fn pbkdf2_block<P>(prf: &P, salt: &[u8], iterations: u32, idx: u32, chunk: &mut [u8])
where
    P: Update + FixedOutput + Clone,
{
    let mut h = prf.clone();
    h.update(salt);
    h.update(&idx.to_be_bytes());
    let mut u = h.finalize_fixed();
    let mut t = u.clone();
    for _ in 1..iterations {
        let mut h = prf.clone();
        h.update(&u);
        let mut next = h.finalize_fixed();
        std::mem::swap(&mut u, &mut next);
        next.as_mut_slice().zeroize();
        for (a, b) in t.iter_mut().zip(u.iter()) {
            *a ^= b;
        }
    }
    chunk.copy_from_slice(&t[..chunk.len()]);
    u.as_mut_slice().zeroize();
    t.as_mut_slice().zeroize();
}

mod argon2 {
    //! libargon2 through its C API.

    use std::ffi::{c_char, c_int, CStr};

    use super::{Argon2Variant, KdfError, ARGON2_MAX_PARALLEL};

    type AllocateFn = unsafe extern "C" fn(memory: *mut *mut u8, bytes: usize) -> c_int;
    type DeallocateFn = unsafe extern "C" fn(memory: *mut u8, bytes: usize);

    /// `argon2_context` of argon2.h (stable since the 2016 releases).
    #[repr(C)]
    struct Context {
        out: *mut u8,
        outlen: u32,
        pwd: *mut u8,
        pwdlen: u32,
        salt: *mut u8,
        saltlen: u32,
        secret: *mut u8,
        secretlen: u32,
        ad: *mut u8,
        adlen: u32,
        t_cost: u32,
        m_cost: u32,
        lanes: u32,
        threads: u32,
        version: u32,
        allocate_cbk: Option<AllocateFn>,
        free_cbk: Option<DeallocateFn>,
        flags: u32,
    }

    #[link(name = "argon2")]
    extern "C" {
        fn argon2_ctx(context: *mut Context, kind: c_int) -> c_int;
        fn argon2_error_message(code: c_int) -> *const c_char;
    }

    const ARGON2_OK: c_int = 0;
    const ARGON2_MEMORY_ALLOCATION_ERROR: c_int = -22;
    const ARGON2_VERSION_13: u32 = 0x13;
    const ARGON2_I: c_int = 1;
    const ARGON2_ID: c_int = 2;

    /// Allocates the memory matrix outside the heap: private, excluded from
    /// core dumps, and locked when RLIMIT_MEMLOCK allows.
    unsafe extern "C" fn allocate(memory: *mut *mut u8, bytes: usize) -> c_int {
        // SAFETY: anonymous private mapping, result checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return ARGON2_MEMORY_ALLOCATION_ERROR;
        }
        // SAFETY: p/bytes is the mapping just made; memory is libargon2's
        // out-pointer.
        unsafe {
            libc::madvise(p, bytes, libc::MADV_DONTDUMP);
            // Huge pages: 512 times fewer page faults when the matrix is
            // first touched (by mlock below, or by the first pass).
            libc::madvise(p, bytes, libc::MADV_HUGEPAGE);
            if super::LOCK_ARGON2_MEMORY {
                // Best effort: an unprivileged user's lock limit is usually
                // far below the memory cost.
                libc::mlock(p, bytes);
            }
            *memory = p as *mut u8;
        }
        ARGON2_OK
    }

    unsafe extern "C" fn deallocate(memory: *mut u8, bytes: usize) {
        if memory.is_null() {
            return;
        }
        // SAFETY: memory/bytes come from `allocate`; libargon2 has already
        // wiped the matrix. munlock of an unlocked range is harmless.
        unsafe {
            if super::LOCK_ARGON2_MEMORY {
                libc::munlock(memory as *const libc::c_void, bytes);
            }
            libc::munmap(memory as *mut libc::c_void, bytes);
        }
    }

    fn len32(kdf: &'static str, what: &'static str, len: usize) -> Result<u32, KdfError> {
        u32::try_from(len).map_err(|_| KdfError::InputTooLong { kdf, what, len })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn hash(
        variant: Argon2Variant,
        time: u32,
        memory_kib: u32,
        parallel: u32,
        password: &[u8],
        salt: &[u8],
        secret: &[u8],
        ad: &[u8],
        out: &mut [u8],
    ) -> Result<(), KdfError> {
        let kdf = variant.name();
        if out.len() < 4 || out.len() > u32::MAX as usize {
            return Err(KdfError::OutputLength {
                kdf,
                len: out.len(),
                min: 4,
                max: u32::MAX as usize,
            });
        }
        if salt.len() < 8 {
            return Err(KdfError::SaltTooShort {
                kdf,
                len: salt.len(),
                min: 8,
            });
        }
        // Threads never change the result; capping them keeps a header with
        // thousands of lanes from spawning thousands of threads at once.
        let threads = parallel.min(ARGON2_MAX_PARALLEL.max(num_cpus()));
        let mut ctx = Context {
            out: out.as_mut_ptr(),
            outlen: out.len() as u32,
            // libargon2 writes to these only with the CLEAR_* flags, not set.
            pwd: password.as_ptr() as *mut u8,
            pwdlen: len32(kdf, "password", password.len())?,
            salt: salt.as_ptr() as *mut u8,
            saltlen: len32(kdf, "salt", salt.len())?,
            secret: if secret.is_empty() {
                std::ptr::null_mut()
            } else {
                secret.as_ptr() as *mut u8
            },
            secretlen: len32(kdf, "secret", secret.len())?,
            ad: if ad.is_empty() {
                std::ptr::null_mut()
            } else {
                ad.as_ptr() as *mut u8
            },
            adlen: len32(kdf, "associated data", ad.len())?,
            t_cost: time,
            m_cost: memory_kib,
            lanes: parallel,
            threads,
            version: ARGON2_VERSION_13,
            allocate_cbk: Some(allocate),
            free_cbk: Some(deallocate),
            flags: 0,
        };
        let kind = match variant {
            Argon2Variant::I => ARGON2_I,
            Argon2Variant::Id => ARGON2_ID,
        };
        // SAFETY: every pointer in ctx is valid for its stated length for
        // the duration of the call; out is writable; inputs are only read.
        let rc = unsafe { argon2_ctx(&mut ctx, kind) };
        match rc {
            ARGON2_OK => Ok(()),
            ARGON2_MEMORY_ALLOCATION_ERROR => Err(KdfError::OutOfMemory { memory_kib }),
            code => {
                // SAFETY: argon2_error_message returns a static C string.
                let message = unsafe {
                    let p = argon2_error_message(code);
                    if p.is_null() {
                        String::from("unknown error")
                    } else {
                        CStr::from_ptr(p).to_string_lossy().into_owned()
                    }
                };
                Err(KdfError::Argon2 { code, message })
            }
        }
    }

    fn num_cpus() -> u32 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    }
}

/// Whether the Argon2 matrix is mlock'ed (best effort). Locking keeps
/// passphrase-derived memory out of swap; it showed no measurable cost next
/// to cryptsetup, which does not lock (module docs, "Measured").
const LOCK_ARGON2_MEMORY: bool = true;

/// cryptsetup's default parallelism: 4, capped by the online CPUs.
pub fn default_parallel() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let cpus = if cpus < 1 {
        1
    } else {
        cpus.min(u32::MAX as i64) as u32
    };
    DEFAULT_PARALLEL.min(cpus)
}

/// cryptsetup's default Argon2 memory limit: 1 GiB, but never more than
/// half the physical memory, and on a system without swap never more than
/// half the free memory (when that is above 64 MiB).
pub fn default_max_memory_kib() -> u32 {
    // SAFETY: sysinfo fills the struct it is given.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sysinfo(&mut si) } != 0 {
        return DEFAULT_MAX_MEMORY_KIB;
    }
    let unit = u64::from(si.mem_unit.max(1));
    let total_kib = si.totalram as u64 * unit / 1024;
    let free_kib = si.freeram as u64 * unit / 1024;
    let swap_kib = si.totalswap as u64 * unit / 1024;
    DEFAULT_MAX_MEMORY_KIB.min(adjusted_memory_kib(total_kib, free_kib, swap_kib))
}

/// The memory rule of [`default_max_memory_kib`] as a pure function.
fn adjusted_memory_kib(total_kib: u64, free_kib: u64, swap_kib: u64) -> u32 {
    if total_kib < 128 * 1024 || total_kib > u64::from(u32::MAX) {
        return DEFAULT_MAX_MEMORY_KIB;
    }
    let half = total_kib / 2;
    if swap_kib == 0 {
        let half_free = free_kib / 2;
        if half_free > 64 * 1024 && half_free < half {
            return half_free as u32;
        }
    }
    half as u32
}

/// Finds KDF parameters for which one derivation of a `key_len`-byte key
/// takes about `target_ms` on this machine, by cryptsetup's rules (module
/// docs). `max_memory_kib` and `parallel` apply to Argon2 only.
pub fn calibrate(
    kind: KdfKind,
    target_ms: u32,
    max_memory_kib: u32,
    parallel: u32,
    key_len: usize,
) -> Result<KdfParams, CalibrateError> {
    match kind {
        KdfKind::Pbkdf2(hash) => {
            let iterations = calibrate_pbkdf2(hash, target_ms, key_len, &mut |iters| {
                let mut key = vec![0u8; key_len];
                let t0 = thread_cpu_time();
                pbkdf2(hash, b"foo", b"bar", iters, &mut key, false)?;
                Ok(thread_cpu_time().saturating_sub(t0))
            })?;
            Ok(KdfParams::Pbkdf2 { hash, iterations })
        }
        KdfKind::Argon2(variant) => {
            let mut key = vec![0u8; key_len.max(4)];
            calibrate_argon2(
                variant,
                target_ms,
                max_memory_kib,
                parallel,
                key_len,
                &mut |p: &KdfParams| {
                    let t0 = Instant::now();
                    derive(p, b"foo", b"0123456789abcdef0123456789abcdef", &mut key)?;
                    Ok(t0.elapsed())
                },
            )
        }
    }
}

/// Iterations for a new `pbkdf2` volume-key digest: [`DIGEST_TARGET_MS`],
/// benchmarked (as cryptsetup does) for the volume key's length even though
/// the digest itself is one hash long; at least 1000.
pub fn calibrate_digest_iterations(
    hash: HashAlg,
    volume_key_len: usize,
) -> Result<u32, CalibrateError> {
    match calibrate(
        KdfKind::Pbkdf2(hash),
        DIGEST_TARGET_MS,
        0,
        0,
        volume_key_len,
    )? {
        KdfParams::Pbkdf2 { iterations, .. } => Ok(iterations),
        KdfParams::Argon2 { .. } => unreachable!("PBKDF2 calibration returns PBKDF2"),
    }
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

type MeasureIters<'a> = dyn FnMut(u32) -> Result<Duration, KdfError> + 'a;
type MeasureParams<'a> = dyn FnMut(&KdfParams) -> Result<Duration, KdfError> + 'a;

/// PBKDF2 calibration over a measuring function (tests drive it with a
/// cost model).
fn calibrate_pbkdf2(
    hash: HashAlg,
    target_ms: u32,
    key_len: usize,
    measure: &mut MeasureIters<'_>,
) -> Result<u32, CalibrateError> {
    if target_ms == 0 {
        return Err(CalibrateError::ZeroTarget);
    }
    if key_len == 0 {
        return Err(CalibrateError::ZeroKeyLength);
    }
    let mut iterations: u32 = 1 << 15;
    for _ in 0..=10 {
        let ms = measure(iterations)?.as_millis() as u64;
        if ms > 500 {
            // Rate per ms times target.
            let n = u64::from(iterations) * u64::from(target_ms) / ms;
            let n = u32::try_from(n).map_err(|_| CalibrateError::Pbkdf2OutOfRange { hash })?;
            return Ok(n.max(PBKDF2_MIN_ITERATIONS));
        }
        let shift = match ms {
            0..=62 => 4,
            63..=125 => 3,
            126..=250 => 2,
            _ => 1,
        };
        iterations = iterations
            .checked_shl(shift)
            .filter(|&n| n >> shift == iterations)
            .ok_or(CalibrateError::Pbkdf2OutOfRange { hash })?;
    }
    Err(CalibrateError::Pbkdf2OutOfRange { hash })
}

const BENCH_MIN_MS: u64 = 250;
const BENCH_MIN_MS_FAST: u64 = 10;
const BENCH_SAMPLES_FAST: usize = 3;

fn calibrate_argon2(
    variant: Argon2Variant,
    target_ms: u32,
    max_memory_kib: u32,
    parallel: u32,
    key_len: usize,
    measure: &mut MeasureParams<'_>,
) -> Result<KdfParams, CalibrateError> {
    if target_ms == 0 {
        return Err(CalibrateError::ZeroTarget);
    }
    if key_len == 0 {
        return Err(CalibrateError::ZeroKeyLength);
    }
    check_parallel(parallel, ARGON2_MAX_PARALLEL)?;
    let min_m = ARGON2_MIN_MEMORY_KIB.max(8 * parallel);
    check_memory(max_memory_kib, min_m)?;
    let max_m = max_memory_kib;
    let params = |t: u32, m: u32| KdfParams::Argon2 {
        variant,
        time: t,
        memory_kib: m,
        parallel,
    };
    let mut run = |t: u32, m: u32, samples: usize, at_least: u64| -> Result<u64, KdfError> {
        let mut best = u64::MAX;
        for _ in 0..samples {
            let ms = measure(&params(t, m))?.as_millis() as u64;
            best = best.min(ms);
            if ms < at_least {
                break;
            }
        }
        Ok(best)
    };

    let (mut t, mut m) = (ARGON2_MIN_TIME, min_m);
    // Phase 1: reach a measurable run.
    let mut ms;
    loop {
        ms = run(t, m, BENCH_SAMPLES_FAST, BENCH_MIN_MS)?;
        if ms >= BENCH_MIN_MS {
            break;
        }
        if m == max_m {
            let next = if ms < BENCH_MIN_MS_FAST {
                t.saturating_mul(16)
            } else {
                scale(t, BENCH_MIN_MS, ms)
            };
            if next == t {
                break;
            }
            t = next;
        } else {
            let next = if ms < BENCH_MIN_MS_FAST {
                m.saturating_mul(16)
            } else {
                scale(m, BENCH_MIN_MS, ms)
            };
            if next == m {
                break;
            }
            m = next.min(max_m);
        }
    }
    // Phase 2: converge on the target.
    let target = u64::from(target_ms);
    let (lo, hi) = (target * 95 / 100, target * 110 / 100);
    // Noise on a busy machine could keep runs outside the window; the cap
    // ends the search with the latest estimate.
    for _ in 0..PHASE2_MAX_STEPS {
        match next_argon2(t, m, ARGON2_MIN_TIME, min_m, max_m, ms, target) {
            Step::Final(nt, nm) => return Ok(params(nt, nm)),
            Step::Again(nt, nm) => {
                t = nt;
                m = nm;
            }
        }
        ms = run(t, m, 1, lo)?;
        if (lo..=hi).contains(&ms) {
            break;
        }
    }
    Ok(params(t, m))
}

const PHASE2_MAX_STEPS: usize = 16;

/// `v * num / den`, saturating at u32::MAX, at least 1.
fn scale(v: u32, num: u64, den: u64) -> u32 {
    let r = u64::from(v) * num / den.max(1);
    r.clamp(1, u64::from(u32::MAX)) as u32
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Again(u32, u32),
    Final(u32, u32),
}

/// One estimation step of phase 2 (see module docs).
fn next_argon2(t: u32, m: u32, min_t: u32, min_m: u32, max_m: u32, ms: u64, target: u64) -> Step {
    let ms = ms.max(1);
    let (nt, nm);
    if ms > target {
        let cand_t = u64::from(t) * target / ms;
        if cand_t < u64::from(min_t) {
            let cand_m = u64::from(t) * u64::from(m) * target / (u64::from(min_t) * ms);
            if cand_m < u64::from(min_m) {
                return Step::Final(min_t, min_m);
            }
            nt = min_t;
            nm = cand_m as u32;
        } else {
            nt = cand_t as u32;
            nm = m;
        }
    } else {
        let cand_m = u64::from(m) * target / ms;
        if cand_m > u64::from(max_m) {
            let cand_t = u64::from(t) * u64::from(m) * target / (u64::from(max_m) * ms);
            if cand_t <= u64::from(min_t) {
                return Step::Final(min_t, max_m);
            }
            nt = cand_t.min(u64::from(u32::MAX)) as u32;
            nm = max_m;
        } else if cand_m < u64::from(min_m) {
            return Step::Final(t, min_m);
        } else {
            nt = t;
            nm = cand_m as u32;
        }
    }
    if nt == t && nm == m {
        Step::Final(nt, nm)
    } else {
        Step::Again(nt, nm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_rule() {
        // 24 GiB, no swap, 22 GiB free: half the free memory is below half the RAM.
        assert_eq!(adjusted_memory_kib(24 << 20, 22 << 20, 0), 11 << 20);
        // With swap, half the RAM.
        assert_eq!(adjusted_memory_kib(24 << 20, 1 << 20, 4 << 20), 12 << 20);
        // No swap but under 128 MiB free: half free ignored.
        assert_eq!(adjusted_memory_kib(2 << 20, 100 << 10, 0), 1 << 20);
        // Bogus totals fall back to the default.
        assert_eq!(adjusted_memory_kib(64 << 10, 0, 0), DEFAULT_MAX_MEMORY_KIB);
    }

    #[test]
    fn pbkdf2_calibration_scales_rate() {
        // A hash doing 1000 iterations per ms.
        let mut seen = Vec::new();
        let n = calibrate_pbkdf2(HashAlg::Sha256, 2000, 64, &mut |i| {
            seen.push(i);
            Ok(Duration::from_millis(u64::from(i) / 1000))
        })
        .unwrap();
        // 524288 iterations in 524 ms, scaled to 2000 ms.
        assert_eq!(n, 524288 * 2000 / 524);
        // 32768 (32 ms) -> x16 = 524288 (524 ms) stops.
        assert_eq!(seen, vec![32768, 524288]);
        // A very slow hash is clamped to the minimum.
        let n = calibrate_pbkdf2(HashAlg::Whirlpool, 1, 64, &mut |i| {
            Ok(Duration::from_millis(u64::from(i)))
        })
        .unwrap();
        assert_eq!(n, PBKDF2_MIN_ITERATIONS);
        // A hash too fast to ever measure gives an error, not a loop.
        assert!(matches!(
            calibrate_pbkdf2(HashAlg::Sha1, 2000, 32, &mut |_| Ok(Duration::ZERO)),
            Err(CalibrateError::Pbkdf2OutOfRange { .. })
        ));
    }

    /// A machine where Argon2 costs `t * m / rate` ms.
    fn model(rate: u64) -> impl FnMut(&KdfParams) -> Result<Duration, KdfError> {
        move |p| match *p {
            KdfParams::Argon2 {
                time, memory_kib, ..
            } => Ok(Duration::from_millis(
                u64::from(time) * u64::from(memory_kib) / rate,
            )),
            KdfParams::Pbkdf2 { .. } => unreachable!(),
        }
    }

    #[test]
    fn argon2_calibration_prefers_memory_then_time() {
        // 4 passes over 1 GiB take 2000 ms when rate = 2097.
        let p =
            calibrate_argon2(Argon2Variant::Id, 2000, 1 << 20, 4, 64, &mut model(2097)).unwrap();
        match p {
            KdfParams::Argon2 {
                time, memory_kib, ..
            } => {
                assert_eq!(memory_kib, 1 << 20);
                assert_eq!(time, 4);
            }
            _ => unreachable!(),
        }
        // Memory capped at 64 MiB: time cost rises to reach the target.
        let p =
            calibrate_argon2(Argon2Variant::I, 2000, 64 << 10, 2, 32, &mut model(2097)).unwrap();
        match p {
            KdfParams::Argon2 {
                time,
                memory_kib,
                parallel,
                variant,
            } => {
                assert_eq!(
                    (variant, parallel, memory_kib),
                    (Argon2Variant::I, 2, 64 << 10)
                );
                let ms = u64::from(time) * u64::from(memory_kib) / 2097;
                assert!((1900..=2200).contains(&ms), "t={time} -> {ms} ms");
            }
            _ => unreachable!(),
        }
        // A slow machine: memory shrinks below the cap, time stays 4.
        let p = calibrate_argon2(Argon2Variant::Id, 1000, 1 << 20, 4, 64, &mut model(500)).unwrap();
        match p {
            KdfParams::Argon2 {
                time, memory_kib, ..
            } => {
                assert_eq!(time, 4);
                let ms = u64::from(time) * u64::from(memory_kib) / 500;
                assert!((950..=1100).contains(&ms), "m={memory_kib} -> {ms} ms");
            }
            _ => unreachable!(),
        }
        // Limits are checked first.
        assert!(matches!(
            calibrate_argon2(Argon2Variant::Id, 1000, 16, 4, 64, &mut model(1)),
            Err(CalibrateError::Params(
                ParamsError::Argon2MemoryTooLow { .. }
            ))
        ));
        assert!(matches!(
            calibrate_argon2(Argon2Variant::Id, 1000, 1 << 20, 5, 64, &mut model(1)),
            Err(CalibrateError::Params(
                ParamsError::Argon2ParallelOutOfRange { .. }
            ))
        ));
    }

    #[test]
    fn next_step_rules() {
        // Too slow at t=8: halve time.
        assert_eq!(
            next_argon2(8, 1024, 4, 32, 4096, 2000, 1000),
            Step::Again(4, 1024)
        );
        // Too slow at min t: memory shrinks instead.
        assert_eq!(
            next_argon2(4, 1024, 4, 32, 4096, 2000, 1000),
            Step::Again(4, 512)
        );
        // Too slow even at the minimum: final minimum.
        assert_eq!(
            next_argon2(4, 32, 4, 32, 4096, 100_000, 10),
            Step::Final(4, 32)
        );
        // Too fast: memory grows to the cap, then time.
        assert_eq!(
            next_argon2(4, 1024, 4, 32, 4096, 250, 1000),
            Step::Again(4, 4096)
        );
        assert_eq!(
            next_argon2(4, 4096, 4, 32, 4096, 250, 1000),
            Step::Again(16, 4096)
        );
        // Unchanged parameters end the search.
        assert_eq!(
            next_argon2(4, 4096, 4, 32, 4096, 1000, 1000),
            Step::Final(4, 4096)
        );
    }
}
