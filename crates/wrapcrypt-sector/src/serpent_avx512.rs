//! Serpent on AVX-512: sixteen blocks per pass, bitsliced across four zmm
//! registers, running the same round function as `serpent`. Three-way XORs
//! and NOT are one `vpternlogd`, rotations one `vprold`, and 32 registers
//! hold the whole state and every temporary without spilling.

use core::arch::x86_64::*;

use crate::serpent::{Lane, SerpentKey};

/// One zmm register of sixteen 32-bit words.
#[derive(Clone, Copy)]
struct Z(__m512i);

// The methods are only ever inlined into `encrypt16`/`decrypt16`, which
// enable AVX-512F; that is what makes the intrinsics below sound to call.
impl Lane for Z {
    #[inline(always)]
    fn xor(self, o: Z) -> Z {
        // SAFETY: only reached from AVX-512F functions (see above).
        Z(unsafe { _mm512_xor_si512(self.0, o.0) })
    }
    #[inline(always)]
    fn xor3(self, a: Z, b: Z) -> Z {
        // SAFETY: as in xor. 0x96 is the truth table of a ^ b ^ c.
        Z(unsafe { _mm512_ternarylogic_epi32::<0x96>(self.0, a.0, b.0) })
    }
    #[inline(always)]
    fn and(self, o: Z) -> Z {
        // SAFETY: as in xor.
        Z(unsafe { _mm512_and_si512(self.0, o.0) })
    }
    #[inline(always)]
    fn not(self) -> Z {
        // SAFETY: as in xor. 0x55 is the truth table of !c.
        Z(unsafe { _mm512_ternarylogic_epi32::<0x55>(self.0, self.0, self.0) })
    }
    #[inline(always)]
    fn rotl(self, n: u32) -> Z {
        // A constant splat count becomes `vprold zmm, zmm, imm`.
        // SAFETY: as in xor.
        Z(unsafe { _mm512_rolv_epi32(self.0, _mm512_set1_epi32(n as i32)) })
    }
    #[inline(always)]
    fn shl(self, n: u32) -> Z {
        // SAFETY: as in xor; counts of 0..32 are defined.
        Z(unsafe { _mm512_sll_epi32(self.0, _mm_cvtsi32_si128(n as i32)) })
    }
    #[inline(always)]
    fn xor_key(self, k: &u32) -> Z {
        // Broadcast from the locked schedule where it is used.
        // SAFETY: as in xor; k is a valid, aligned u32.
        Z(unsafe { _mm512_xor_si512(self.0, _mm512_set1_epi32(*k as i32)) })
    }
}

/// 4×4 transpose of 32-bit words inside each 128-bit quarter: four
/// registers of four blocks each to the bitsliced form, and back.
#[inline(always)]
fn transpose(r: [__m512i; 4]) -> [__m512i; 4] {
    // SAFETY: only reached from AVX-512F functions.
    unsafe {
        let t0 = _mm512_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm512_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm512_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm512_unpackhi_epi32(r[2], r[3]);
        [
            _mm512_unpacklo_epi64(t0, t2),
            _mm512_unpackhi_epi64(t0, t2),
            _mm512_unpacklo_epi64(t1, t3),
            _mm512_unpackhi_epi64(t1, t3),
        ]
    }
}

/// Encrypts or decrypts `data`, a multiple of 256 bytes (sixteen blocks).
#[inline(always)]
fn groups(k: &SerpentKey, data: &mut [u8], encrypt: bool) {
    for g in data.chunks_exact_mut(256) {
        let p = g.as_mut_ptr() as *mut __m512i;
        // SAFETY: g is 256 bytes, four unaligned 64-byte loads and stores;
        // only reached from AVX-512F functions.
        unsafe {
            let r = transpose([
                _mm512_loadu_si512(p),
                _mm512_loadu_si512(p.add(1)),
                _mm512_loadu_si512(p.add(2)),
                _mm512_loadu_si512(p.add(3)),
            ]);
            let x = [Z(r[0]), Z(r[1]), Z(r[2]), Z(r[3])];
            let y = if encrypt {
                k.encrypt_words(x)
            } else {
                k.decrypt_words(x)
            };
            let o = transpose([y[0].0, y[1].0, y[2].0, y[3].0]);
            for (i, v) in o.into_iter().enumerate() {
                _mm512_storeu_si512(p.add(i), v);
            }
        }
    }
}

/// ECB-encrypts `data`, a multiple of 256 bytes.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn encrypt16(k: &SerpentKey, data: &mut [u8]) {
    groups(k, data, true);
}

/// ECB-decrypts `data`, a multiple of 256 bytes.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn decrypt16(k: &SerpentKey, data: &mut [u8]) {
    groups(k, data, false);
}
