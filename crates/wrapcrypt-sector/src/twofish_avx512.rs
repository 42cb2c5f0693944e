//! Twofish on AVX-512 without secret memory indices: sixteen blocks per
//! pass (word j of sixteen blocks per zmm register). The g function looks
//! up the four keyed 8-bit S-boxes (256 bytes each, held in sixteen zmm
//! registers) with `vpermi2b`, a register permutation, and multiplies by the
//! MDS matrix with `vpshufb` byte moves and `gf2p8affineqb` (multiplication
//! by 0x5b and 0xef modulo Twofish's x^8 + x^6 + x^5 + x^3 + 1 is linear
//! over GF(2)). No load depends on key or data, so unlike the table engine
//! in `twofish` this one is constant time.

use core::arch::asm;
use core::arch::x86_64::*;

use crate::twofish::{gf_mul, TwofishKey, MDS_POLY};

type V = __m512i;

/// MDS[r][i]: the coefficient of S-box output i in output byte r.
const MDS: [[u8; 4]; 4] = [
    [0x01, 0xef, 0x5b, 0x5b],
    [0x5b, 0xef, 0xef, 0x01],
    [0xef, 0x5b, 0x01, 0xef],
    [0xef, 0x01, 0xef, 0x5b],
];

/// `vpshufb` indices (one 128-bit lane, repeated) that move, for
/// coefficient `c`, the `n`-th input byte i with MDS[r][i] == c of each
/// 32-bit word to byte r of that word (0x80, i.e. zero, where none).
const fn shuffle(c: u8, n: usize) -> [u8; 64] {
    let mut out = [0x80u8; 64];
    let mut p = 0;
    while p < 64 {
        let (word, r) = (p / 4 % 4, p % 4);
        let mut seen = 0;
        let mut i = 0;
        while i < 4 {
            if MDS[r][i] == c {
                if seen == n {
                    out[p] = (4 * word + i) as u8;
                }
                seen += 1;
            }
            i += 1;
        }
        p += 1;
    }
    out
}

static SHUF: [[u8; 64]; 5] = [
    shuffle(0x01, 0),
    shuffle(0x5b, 0),
    shuffle(0x5b, 1),
    shuffle(0xef, 0),
    shuffle(0xef, 1),
];

/// The `gf2p8affineqb` matrix of x -> c·x modulo the MDS polynomial: byte
/// 7 - i selects the input bits whose parity is output bit i.
pub(crate) fn mul_matrix(c: u8) -> u64 {
    let mut a = 0u64;
    for i in 0..8 {
        let mut row = 0u8;
        for j in 0..8 {
            row |= ((gf_mul(1 << j, c, MDS_POLY) >> i) & 1) << j;
        }
        a |= (row as u64) << (8 * (7 - i));
    }
    a
}

/// The keyed S-boxes and the MDS constants, in registers for one batch.
struct Keyed {
    sb: [[V; 4]; 4],
    shuf: [V; 5],
    m5b: V,
    mef: V,
}

/// The g function on sixteen words.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
fn g(ks: &Keyed, x: V) -> V {
    // Byte 4l + i of every lane goes through S-box i: look every byte up in
    // all four, keep S-box i's result at position i.
    let high = _mm512_movepi8_mask(x);
    let mut y = _mm512_setzero_si512();
    for (i, t) in ks.sb.iter().enumerate() {
        let lo = _mm512_permutex2var_epi8(t[0], x, t[1]);
        let hi = _mm512_permutex2var_epi8(t[2], x, t[3]);
        let v = _mm512_mask_blend_epi8(high, lo, hi);
        y = _mm512_mask_blend_epi8(0x1111_1111_1111_1111u64 << i, y, v);
    }
    let z1 = _mm512_shuffle_epi8(y, ks.shuf[0]);
    let z5 = _mm512_xor_si512(
        _mm512_shuffle_epi8(y, ks.shuf[1]),
        _mm512_shuffle_epi8(y, ks.shuf[2]),
    );
    let ze = _mm512_xor_si512(
        _mm512_shuffle_epi8(y, ks.shuf[3]),
        _mm512_shuffle_epi8(y, ks.shuf[4]),
    );
    let p5 = _mm512_gf2p8affine_epi64_epi8::<0>(z5, ks.m5b);
    let pe = _mm512_gf2p8affine_epi64_epi8::<0>(ze, ks.mef);
    _mm512_ternarylogic_epi32::<0x96>(z1, p5, pe)
}

/// `x + k` in every lane, `k` read from the locked schedule inside the asm
/// (never hoisted into a register the compiler could spill).
#[inline]
#[target_feature(enable = "avx512f")]
fn add_key(x: V, k: &u32) -> V {
    let r: V;
    // SAFETY: k is a valid 4-byte read; AVX-512F is enabled.
    unsafe {
        asm!(
            "vpaddd {r}, {x}, dword ptr [{p}]{{1to16}}",
            r = lateout(zmm_reg) r,
            x = in(zmm_reg) x,
            p = in(reg) k,
            options(nostack, preserves_flags, readonly)
        );
    }
    r
}

/// `x ^ k` in every lane, as `add_key`.
#[inline]
#[target_feature(enable = "avx512f")]
fn xor_key(x: V, k: &u32) -> V {
    let r: V;
    // SAFETY: k is a valid 4-byte read; AVX-512F is enabled.
    unsafe {
        asm!(
            "vpxord {r}, {x}, dword ptr [{p}]{{1to16}}",
            r = lateout(zmm_reg) r,
            x = in(zmm_reg) x,
            p = in(reg) k,
            options(nostack, preserves_flags, readonly)
        );
    }
    r
}

#[inline]
#[target_feature(enable = "avx512f")]
fn rotl(x: V, n: u32) -> V {
    _mm512_rolv_epi32(x, _mm512_set1_epi32(n as i32))
}

/// One encryption Feistel step: (a, b) feed g, (c, d) change.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
fn enc_step(ks: &Keyed, k: &[u32; 40], i: usize, a: V, b: V, c: V, d: V) -> (V, V) {
    let t1 = g(ks, rotl(b, 8));
    let t0 = _mm512_add_epi32(g(ks, a), t1);
    let c = rotl(_mm512_xor_si512(c, add_key(t0, &k[i])), 31);
    let d = _mm512_xor_si512(rotl(d, 1), add_key(_mm512_add_epi32(t1, t0), &k[i + 1]));
    (c, d)
}

/// One decryption Feistel step, the inverse of `enc_step`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
fn dec_step(ks: &Keyed, k: &[u32; 40], i: usize, a: V, b: V, c: V, d: V) -> (V, V) {
    let t1 = g(ks, rotl(b, 8));
    let t0 = _mm512_add_epi32(g(ks, a), t1);
    let c = _mm512_xor_si512(rotl(c, 1), add_key(t0, &k[i]));
    let d = rotl(
        _mm512_xor_si512(d, add_key(_mm512_add_epi32(t1, t0), &k[i + 1])),
        31,
    );
    (c, d)
}

/// 4×4 transpose of 32-bit words inside each 128-bit quarter.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose(r: [V; 4]) -> [V; 4] {
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

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
fn run(tk: &TwofishKey, data: &mut [u8], encrypt: bool) {
    // SAFETY: every load reads 64 bytes inside its 256-byte table or static.
    let ks = unsafe {
        Keyed {
            sb: core::array::from_fn(|i| {
                core::array::from_fn(|j| {
                    _mm512_loadu_si512(tk.sb[i].as_ptr().add(64 * j) as *const V)
                })
            }),
            shuf: core::array::from_fn(|i| _mm512_loadu_si512(SHUF[i].as_ptr() as *const V)),
            m5b: _mm512_set1_epi64(mul_matrix(0x5b) as i64),
            mef: _mm512_set1_epi64(mul_matrix(0xef) as i64),
        }
    };
    let k = &tk.k;
    for blk in data.chunks_exact_mut(256) {
        let p = blk.as_mut_ptr() as *mut V;
        // SAFETY: blk is 256 bytes: four unaligned 64-byte loads.
        let x = transpose(unsafe { core::array::from_fn(|i| _mm512_loadu_si512(p.add(i))) });
        let y = if encrypt {
            let mut q = [0, 1, 2, 3].map(|j| xor_key(x[j], &k[j]));
            for r in 0..8 {
                let i = 4 * r + 8;
                (q[2], q[3]) = enc_step(&ks, k, i, q[0], q[1], q[2], q[3]);
                (q[0], q[1]) = enc_step(&ks, k, i + 2, q[2], q[3], q[0], q[1]);
            }
            [
                xor_key(q[2], &k[4]),
                xor_key(q[3], &k[5]),
                xor_key(q[0], &k[6]),
                xor_key(q[1], &k[7]),
            ]
        } else {
            let mut c = [
                xor_key(x[2], &k[6]),
                xor_key(x[3], &k[7]),
                xor_key(x[0], &k[4]),
                xor_key(x[1], &k[5]),
            ];
            for r in (0..8).rev() {
                let i = 4 * r + 8;
                (c[0], c[1]) = dec_step(&ks, k, i + 2, c[2], c[3], c[0], c[1]);
                (c[2], c[3]) = dec_step(&ks, k, i, c[0], c[1], c[2], c[3]);
            }
            [0, 1, 2, 3].map(|j| xor_key(c[j], &k[j]))
        };
        for (i, v) in transpose(y).into_iter().enumerate() {
            // SAFETY: as for the loads.
            unsafe { _mm512_storeu_si512(p.add(i), v) };
        }
    }
}

/// Whether this CPU has what the engine needs.
pub(crate) fn available() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx512f") && has!("avx512bw") && has!("avx512vbmi") && has!("gfni")
}

/// ECB-encrypts `data`, a multiple of 256 bytes (sixteen blocks).
///
/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
pub(crate) unsafe fn encrypt16(tk: &TwofishKey, data: &mut [u8]) {
    run(tk, data, true)
}

/// ECB-decrypts `data`, a multiple of 256 bytes (sixteen blocks).
///
/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
pub(crate) unsafe fn decrypt16(tk: &TwofishKey, data: &mut [u8]) {
    run(tk, data, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_matrices_multiply() {
        if !available() {
            return;
        }
        for c in [0x5bu8, 0xef] {
            let a = mul_matrix(c);
            let x: [u8; 64] = core::array::from_fn(|i| (i * 4 + 3) as u8);
            let mut out = [0u8; 64];
            // SAFETY: available() was checked; 64-byte buffers.
            unsafe { affine(&x, a, &mut out) };
            for (i, &v) in x.iter().enumerate() {
                assert_eq!(out[i], gf_mul(v, c, MDS_POLY), "{c:#x} * {v:#x}");
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
    unsafe fn affine(x: &[u8; 64], a: u64, out: &mut [u8; 64]) {
        // SAFETY: 64-byte buffers.
        unsafe {
            let v = _mm512_loadu_si512(x.as_ptr() as *const V);
            let r = _mm512_gf2p8affine_epi64_epi8::<0>(v, _mm512_set1_epi64(a as i64));
            _mm512_storeu_si512(out.as_mut_ptr() as *mut V, r);
        }
    }
}
