//! AES-XTS on 512-bit registers (VAES, VPCLMULQDQ, AVX-512 F/BW/VL).
//!
//! One zmm register holds four consecutive blocks, and eight registers are
//! in flight: 32 blocks, a whole 512-byte sector, per pipeline step. The
//! tweaks of four blocks are derived in one VPCLMULQDQ, so the AES units
//! never wait for the serial multiply-by-x chain.
//!
//! Round keys come from the caller's locked schedule through `asm!` loads on
//! every use: the compiler can neither hoist them into long-lived registers
//! nor spill them to the stack. The registers they pass through are cleared
//! after each batch (`crate::wipe`).

use core::arch::asm;
use core::arch::x86_64::*;

use crate::BLOCK;

/// zmm registers in flight per step.
const LANES: usize = 8;
/// Bytes per step: four blocks per register.
const STEP: usize = LANES * 4 * BLOCK;

/// Round key `k` in all four 128-bit lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq")]
unsafe fn round_key(k: &[u32; 4]) -> __m512i {
    let r: __m512i;
    // SAFETY: `k` is a valid 16-byte read; the caller has AVX-512F. The asm
    // is not `pure`, so every use loads again from locked memory.
    unsafe {
        asm!(
            "vbroadcasti32x4 {r}, xmmword ptr [{p}]",
            r = out(zmm_reg) r,
            p = in(reg) k.as_ptr(),
            options(nostack, preserves_flags, readonly)
        );
    }
    r
}

/// Multiplies each 128-bit lane by x^n (XTS's little-endian GF(2^128)),
/// where `n` holds the lane's count (0..=63) in both of its qwords. The bits
/// shifted out of the top come back reduced by x^7 + x^2 + x + 1 through one
/// carry-less multiply, so no lane waits on another.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq")]
unsafe fn mul_xn(t: __m512i, n: __m512i, poly: __m512i) -> __m512i {
    let carry = _mm512_srlv_epi64(t, _mm512_sub_epi64(_mm512_set1_epi64(64), n));
    let shifted = _mm512_or_si512(_mm512_sllv_epi64(t, n), _mm512_bslli_epi128::<8>(carry));
    let red = _mm512_clmulepi64_epi128::<0x00>(_mm512_bsrli_epi128::<8>(carry), poly);
    _mm512_xor_si512(shifted, red)
}

/// Multiplies each lane by x^(8 L), a byte shift plus the reduction of the
/// L bytes shifted out (`R` = 16 - L, which const generics cannot compute).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq")]
unsafe fn mul_xbytes<const L: i32, const R: i32>(t: __m512i, poly: __m512i) -> __m512i {
    let red = _mm512_clmulepi64_epi128::<0x00>(_mm512_bsrli_epi128::<R>(t), poly);
    _mm512_xor_si512(_mm512_bslli_epi128::<L>(t), red)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq")]
unsafe fn round<const DECRYPT: bool>(b: __m512i, k: __m512i) -> __m512i {
    if DECRYPT {
        _mm512_aesdec_epi128(b, k)
    } else {
        _mm512_aesenc_epi128(b, k)
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq")]
unsafe fn last_round<const DECRYPT: bool>(b: __m512i, k: __m512i) -> __m512i {
    if DECRYPT {
        _mm512_aesdeclast_epi128(b, k)
    } else {
        _mm512_aesenclast_epi128(b, k)
    }
}

/// XTS-encrypts one data unit of whole blocks; `keys` is an encryption
/// schedule of `rounds` rounds and `tweak` the unit's first tweak.
///
/// # Safety
/// The CPU must have VAES, VPCLMULQDQ and AVX-512 F/BW/VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq")]
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
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq")]
pub(crate) unsafe fn xts_decrypt(
    keys: &[[u32; 4]; 15],
    rounds: usize,
    tweak: &[u8; BLOCK],
    data: &mut [u8],
) {
    // SAFETY: same features as this function.
    unsafe { xts::<true>(keys, rounds, tweak, data) }
}

/// Both directions share one body (`DECRYPT` is a constant, so each
/// instance is straight-line code); only the schedule and the round
/// instructions differ. No branch or address depends on key or data.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq")]
unsafe fn xts<const DECRYPT: bool>(
    keys: &[[u32; 4]; 15],
    rounds: usize,
    tweak: &[u8; BLOCK],
    data: &mut [u8],
) {
    debug_assert_eq!(data.len() % BLOCK, 0);
    // Always 10, 12 or 14; the clamp lets the compiler drop bounds checks.
    let nr = rounds.clamp(10, 14);
    let poly = _mm512_set1_epi64(0x87);
    // SAFETY: `tweak` is 16 readable bytes.
    let t = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(tweak.as_ptr().cast()) });
    // Register j, lane l holds the tweak of block 4j + l: t * x^(4j + l).
    // Two variable shifts give registers 0 and 1; the others are byte
    // shifts of those (x^8, x^16, x^24), all independent, so a sector's
    // set-up takes few of the vector ports the AES rounds need.
    let t0 = mul_xn(t, _mm512_set_epi64(3, 3, 2, 2, 1, 1, 0, 0), poly);
    let t1 = mul_xn(t, _mm512_set_epi64(7, 7, 6, 6, 5, 5, 4, 4), poly);
    let mut tw = [
        t0,
        t1,
        mul_xbytes::<1, 15>(t0, poly),
        mul_xbytes::<1, 15>(t1, poly),
        mul_xbytes::<2, 14>(t0, poly),
        mul_xbytes::<2, 14>(t1, poly),
        mul_xbytes::<3, 13>(t0, poly),
        mul_xbytes::<3, 13>(t1, poly),
    ];

    // The last step skips advancing the tweaks (a 512-byte sector is one
    // step); the length is public, so this branch leaks nothing.
    let steps = data.len() / STEP;
    let more_after_last = !data.len().is_multiple_of(STEP);
    let mut chunks = data.chunks_exact_mut(STEP);
    for (n, c) in (&mut chunks).enumerate() {
        let p = c.as_mut_ptr() as *mut __m512i;
        let k0 = round_key(&keys[0]);
        let mut b = [_mm512_setzero_si512(); LANES];
        unroll8!(I => {
            // SAFETY: the chunk is STEP bytes, LANES registers of 64.
            let v = unsafe { _mm512_loadu_si512(p.add(I)) };
            b[I] = _mm512_ternarylogic_epi64::<0x96>(v, tw[I], k0);
        });
        for key in &keys[1..nr] {
            let k = round_key(key);
            unroll8!(I => { b[I] = round::<DECRYPT>(b[I], k); });
        }
        // The output whitening rides on the last round's key XOR.
        let kl = round_key(&keys[nr]);
        unroll8!(I => {
            let o = last_round::<DECRYPT>(b[I], _mm512_xor_si512(tw[I], kl));
            // SAFETY: as for the load.
            unsafe { _mm512_storeu_si512(p.add(I), o) };
        });
        if n + 1 < steps || more_after_last {
            unroll8!(I => { tw[I] = mul_xbytes::<4, 12>(tw[I], poly); });
        }
    }

    // Units that are not a multiple of 32 blocks (encrypt_unit): up to four
    // blocks at a time under a write mask, so no byte past the end is read
    // or written.
    let four = _mm512_set1_epi64(4);
    let mut t = tw[0];
    for c in chunks.into_remainder().chunks_mut(4 * BLOCK) {
        let p = c.as_mut_ptr() as *mut i64;
        let m: __mmask8 = ((1u32 << (c.len() / 8)) - 1) as u8;
        // SAFETY: the mask covers exactly the c.len() bytes of this chunk.
        let v = unsafe { _mm512_maskz_loadu_epi64(m, p) };
        let mut x = _mm512_ternarylogic_epi64::<0x96>(v, t, round_key(&keys[0]));
        for key in &keys[1..nr] {
            x = round::<DECRYPT>(x, round_key(key));
        }
        let o = last_round::<DECRYPT>(x, _mm512_xor_si512(t, round_key(&keys[nr])));
        // SAFETY: as for the load.
        unsafe { _mm512_mask_storeu_epi64(p, m, o) };
        t = mul_xn(t, four, poly);
    }
}
