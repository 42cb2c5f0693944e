//! Serpent on AVX2: eight blocks at a time, bitsliced across four ymm
//! registers (register j holds word j of all eight blocks, one per 32-bit
//! lane), running the same round function as the scalar code in `serpent`.

use core::arch::asm;
use core::arch::x86_64::*;

use crate::serpent::{Lane, SerpentKey};

/// One ymm register of eight 32-bit words.
#[derive(Clone, Copy)]
struct Y(__m256i);

// The methods are only ever inlined into `encrypt8`/`decrypt8`, which enable
// AVX2; that is what makes the intrinsics below sound to call.
impl Lane for Y {
    #[inline(always)]
    fn xor(self, o: Y) -> Y {
        // SAFETY: only reached from AVX2 functions (see above).
        Y(unsafe { _mm256_xor_si256(self.0, o.0) })
    }
    #[inline(always)]
    fn and(self, o: Y) -> Y {
        // SAFETY: as in xor.
        Y(unsafe { _mm256_and_si256(self.0, o.0) })
    }
    #[inline(always)]
    fn not(self) -> Y {
        // SAFETY: as in xor.
        Y(unsafe { _mm256_xor_si256(self.0, _mm256_set1_epi32(-1)) })
    }
    #[inline(always)]
    fn rotl(self, n: u32) -> Y {
        // SAFETY: as in xor; shift counts of 0..32 are defined.
        Y(unsafe {
            _mm256_or_si256(
                _mm256_sll_epi32(self.0, _mm_cvtsi32_si128(n as i32)),
                _mm256_srl_epi32(self.0, _mm_cvtsi32_si128(32 - n as i32)),
            )
        })
    }
    #[inline(always)]
    fn shl(self, n: u32) -> Y {
        // SAFETY: as in rotl.
        Y(unsafe { _mm256_sll_epi32(self.0, _mm_cvtsi32_si128(n as i32)) })
    }
    #[inline(always)]
    fn xor_key(self, k: &u32) -> Y {
        // The key word is broadcast from the locked schedule on every use:
        // an `asm!` load (not `pure`) the compiler cannot hoist out of the
        // loop, so no round key lands in a spill slot on the stack.
        // SAFETY: only reached from AVX2 functions.
        let r = unsafe { broadcast(k) };
        // SAFETY: as in xor.
        Y(unsafe { _mm256_xor_si256(self.0, r) })
    }
}

/// `k` in all eight lanes, loaded from memory through `asm!` (not `pure`:
/// every use loads again).
///
/// # Safety
/// The CPU must have AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn broadcast(k: &u32) -> __m256i {
    let r: __m256i;
    // SAFETY: k is a valid 4-byte read; the caller has AVX2.
    unsafe {
        asm!(
            "vpbroadcastd {r}, dword ptr [{p}]",
            r = out(ymm_reg) r,
            p = in(reg) k,
            options(nostack, preserves_flags, readonly)
        );
    }
    r
}

/// 4×4 transpose of 32-bit words inside each 128-bit half: turns four
/// registers of two blocks each into the bitsliced form, and back.
#[inline(always)]
fn transpose(r: [__m256i; 4]) -> [__m256i; 4] {
    // SAFETY: only reached from AVX2 functions.
    unsafe {
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        [
            _mm256_unpacklo_epi64(t0, t2),
            _mm256_unpackhi_epi64(t0, t2),
            _mm256_unpacklo_epi64(t1, t3),
            _mm256_unpackhi_epi64(t1, t3),
        ]
    }
}

/// Loads eight blocks from `p` in bitsliced form.
///
/// # Safety
/// `p` must point to 128 readable bytes; AVX2 functions only.
#[inline(always)]
unsafe fn load8(p: *const __m256i) -> Y4 {
    // SAFETY: per the contract, four unaligned 32-byte loads.
    let r = unsafe {
        transpose([
            _mm256_loadu_si256(p),
            _mm256_loadu_si256(p.add(1)),
            _mm256_loadu_si256(p.add(2)),
            _mm256_loadu_si256(p.add(3)),
        ])
    };
    [Y(r[0]), Y(r[1]), Y(r[2]), Y(r[3])]
}

/// Stores eight bitsliced blocks to `p`.
///
/// # Safety
/// `p` must point to 128 writable bytes; AVX2 functions only.
#[inline(always)]
unsafe fn store8(p: *mut __m256i, y: Y4) {
    let o = transpose([y[0].0, y[1].0, y[2].0, y[3].0]);
    for (i, v) in o.into_iter().enumerate() {
        // SAFETY: per the contract, four unaligned 32-byte stores.
        unsafe { _mm256_storeu_si256(p.add(i), v) };
    }
}

type Y4 = [Y; 4];

/// Encrypts or decrypts `data` (a multiple of 128 bytes), eight blocks per
/// pass. No closure: the round code must inline into the AVX2 function.
/// (Two interleaved sets of eight measured slower: the compiler then keeps
/// the S-box temporaries on the stack.)
#[inline(always)]
fn groups(k: &SerpentKey, data: &mut [u8], encrypt: bool) {
    for g in data.chunks_exact_mut(128) {
        let p = g.as_mut_ptr() as *mut __m256i;
        // SAFETY: g is 128 bytes; only reached from AVX2 functions.
        unsafe {
            let x = load8(p);
            let y = if encrypt {
                k.encrypt_words(x)
            } else {
                k.decrypt_words(x)
            };
            store8(p, y);
        }
    }
}

/// ECB-encrypts `data`, a multiple of 128 bytes (eight blocks).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn encrypt8(k: &SerpentKey, data: &mut [u8]) {
    groups(k, data, true);
}

/// ECB-decrypts `data`, a multiple of 128 bytes (eight blocks).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn decrypt8(k: &SerpentKey, data: &mut [u8]) {
    groups(k, data, false);
}
