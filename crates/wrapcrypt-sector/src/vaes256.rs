//! AES-XTS on 256-bit registers (VAES, VPCLMULQDQ, AVX2), for CPUs with
//! VAES but without AVX-512.
//!
//! One ymm register holds two consecutive blocks, and eight registers are in
//! flight: 16 blocks per pipeline step, which covers the AES latency on both
//! AES units of current cores. The tweaks of two blocks are derived in one
//! VPCLMULQDQ.
//!
//! Round keys are loaded through `asm!` on every use, as in `vaes512`: with
//! only 16 ymm registers the compiler would otherwise spill hoisted keys to
//! the stack.

use core::arch::asm;
use core::arch::x86_64::*;

use crate::BLOCK;

/// ymm registers in flight per step.
const LANES: usize = 8;
/// Bytes per step: two blocks per register.
const STEP: usize = LANES * 2 * BLOCK;

/// Round key `k` in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
unsafe fn round_key(k: &[u32; 4]) -> __m256i {
    let r: __m256i;
    // SAFETY: `k` is a valid 16-byte read; the caller has AVX2. Not `pure`,
    // so every use loads again from locked memory.
    unsafe {
        asm!(
            "vbroadcasti128 {r}, xmmword ptr [{p}]",
            r = out(ymm_reg) r,
            p = in(reg) k.as_ptr(),
            options(nostack, preserves_flags, readonly)
        );
    }
    r
}

/// Multiplies each 128-bit lane by x^n (`n` per lane in both qwords,
/// 0..=63); see `vaes512::mul_xn`.
#[inline]
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
unsafe fn mul_xn(t: __m256i, n: __m256i, poly: __m256i) -> __m256i {
    let carry = _mm256_srlv_epi64(t, _mm256_sub_epi64(_mm256_set1_epi64x(64), n));
    let shifted = _mm256_or_si256(_mm256_sllv_epi64(t, n), _mm256_bslli_epi128::<8>(carry));
    let red = _mm256_clmulepi64_epi128::<0x00>(_mm256_bsrli_epi128::<8>(carry), poly);
    _mm256_xor_si256(shifted, red)
}

/// Multiplies each lane by x^(8 L), a byte shift plus the reduction of the
/// L bytes shifted out (`R` = 16 - L).
#[inline]
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
unsafe fn mul_xbytes<const L: i32, const R: i32>(t: __m256i, poly: __m256i) -> __m256i {
    let red = _mm256_clmulepi64_epi128::<0x00>(_mm256_bsrli_epi128::<R>(t), poly);
    _mm256_xor_si256(_mm256_bslli_epi128::<L>(t), red)
}

#[inline]
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
unsafe fn round<const DECRYPT: bool>(b: __m256i, k: __m256i) -> __m256i {
    if DECRYPT {
        _mm256_aesdec_epi128(b, k)
    } else {
        _mm256_aesenc_epi128(b, k)
    }
}

#[inline]
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
unsafe fn last_round<const DECRYPT: bool>(b: __m256i, k: __m256i) -> __m256i {
    if DECRYPT {
        _mm256_aesdeclast_epi128(b, k)
    } else {
        _mm256_aesenclast_epi128(b, k)
    }
}

/// XTS-encrypts one data unit of whole blocks; `keys` is an encryption
/// schedule of `rounds` rounds and `tweak` the unit's first tweak.
///
/// # Safety
/// The CPU must have VAES, VPCLMULQDQ and AVX2.
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
pub(crate) unsafe fn xts_encrypt(
    keys: &[[u32; 4]; 15],
    rounds: usize,
    tweak: &[u8; BLOCK],
    data: &mut [u8],
) {
    // SAFETY: same features as this function.
    unsafe { xts::<false>(keys, rounds, tweak, data) }
}

/// XTS-decrypts; `keys` is the equivalent-inverse decryption schedule.
///
/// # Safety
/// As for [`xts_encrypt`].
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
pub(crate) unsafe fn xts_decrypt(
    keys: &[[u32; 4]; 15],
    rounds: usize,
    tweak: &[u8; BLOCK],
    data: &mut [u8],
) {
    // SAFETY: same features as this function.
    unsafe { xts::<true>(keys, rounds, tweak, data) }
}

/// One body for both directions, as in `vaes512`; no branch or address
/// depends on key or data.
#[inline]
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
unsafe fn xts<const DECRYPT: bool>(
    keys: &[[u32; 4]; 15],
    rounds: usize,
    tweak: &[u8; BLOCK],
    data: &mut [u8],
) {
    debug_assert_eq!(data.len() % BLOCK, 0);
    // Always 10, 12 or 14; the clamp lets the compiler drop bounds checks.
    let nr = rounds.clamp(10, 14);
    let poly = _mm256_set1_epi64x(0x87);
    // SAFETY: `tweak` is 16 readable bytes.
    let t = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(tweak.as_ptr().cast()) });
    // Register j, lane l holds the tweak of block 2j + l: t * x^(2j + l).
    // Variable shifts give registers 0-3, one byte shift (x^8) each of the
    // others, all independent of one another.
    let t0 = mul_xn(t, _mm256_set_epi64x(1, 1, 0, 0), poly);
    let t1 = mul_xn(t, _mm256_set_epi64x(3, 3, 2, 2), poly);
    let t2 = mul_xn(t, _mm256_set_epi64x(5, 5, 4, 4), poly);
    let t3 = mul_xn(t, _mm256_set_epi64x(7, 7, 6, 6), poly);
    let mut tw = [
        t0,
        t1,
        t2,
        t3,
        mul_xbytes::<1, 15>(t0, poly),
        mul_xbytes::<1, 15>(t1, poly),
        mul_xbytes::<1, 15>(t2, poly),
        mul_xbytes::<1, 15>(t3, poly),
    ];

    // The last step skips advancing the tweaks; the length is public.
    let steps = data.len() / STEP;
    let more_after_last = !data.len().is_multiple_of(STEP);
    let mut chunks = data.chunks_exact_mut(STEP);
    for (n, c) in (&mut chunks).enumerate() {
        let p = c.as_mut_ptr() as *mut __m256i;
        let k0 = round_key(&keys[0]);
        let mut b = [_mm256_setzero_si256(); LANES];
        unroll8!(I => {
            // SAFETY: the chunk is STEP bytes, LANES registers of 32.
            let v = unsafe { _mm256_loadu_si256(p.add(I)) };
            b[I] = _mm256_xor_si256(v, _mm256_xor_si256(tw[I], k0));
        });
        for key in &keys[1..nr] {
            let k = round_key(key);
            unroll8!(I => { b[I] = round::<DECRYPT>(b[I], k); });
        }
        let kl = round_key(&keys[nr]);
        unroll8!(I => {
            let o = last_round::<DECRYPT>(b[I], _mm256_xor_si256(tw[I], kl));
            // SAFETY: as for the load.
            unsafe { _mm256_storeu_si256(p.add(I), o) };
        });
        if n + 1 < steps || more_after_last {
            unroll8!(I => { tw[I] = mul_xbytes::<2, 14>(tw[I], poly); });
        }
    }

    // Units that are not a multiple of 16 blocks (encrypt_unit): two blocks
    // at a time, then a last single block in the low lane.
    let two = _mm256_set1_epi64x(2);
    let mut t = tw[0];
    let mut pairs = chunks.into_remainder().chunks_exact_mut(2 * BLOCK);
    for c in &mut pairs {
        let p = c.as_mut_ptr() as *mut __m256i;
        // SAFETY: the chunk is 32 bytes.
        let v = unsafe { _mm256_loadu_si256(p) };
        let mut x = _mm256_xor_si256(v, _mm256_xor_si256(t, round_key(&keys[0])));
        for key in &keys[1..nr] {
            x = round::<DECRYPT>(x, round_key(key));
        }
        let o = last_round::<DECRYPT>(x, _mm256_xor_si256(t, round_key(&keys[nr])));
        // SAFETY: as for the load.
        unsafe { _mm256_storeu_si256(p, o) };
        t = mul_xn(t, two, poly);
    }
    if let Some(c) = pairs.into_remainder().chunks_exact_mut(BLOCK).next() {
        // The last block's tweak is the low lane of the pair's tweak; the
        // high lane of the register computes a block nobody stores.
        let p = c.as_mut_ptr() as *mut __m128i;
        // SAFETY: the chunk is 16 bytes.
        let v = _mm256_zextsi128_si256(unsafe { _mm_loadu_si128(p) });
        let mut x = _mm256_xor_si256(v, _mm256_xor_si256(t, round_key(&keys[0])));
        for key in &keys[1..nr] {
            x = round::<DECRYPT>(x, round_key(key));
        }
        let o = last_round::<DECRYPT>(x, _mm256_xor_si256(t, round_key(&keys[nr])));
        // SAFETY: as for the load.
        unsafe { _mm_storeu_si128(p, _mm256_castsi256_si128(o)) };
    }
}
