//! Twofish on AVX2: sixteen blocks per pass as two interleaved sets of
//! eight (word j of eight blocks per ymm register), the g function as four
//! `vpgatherdd` from the key's tables, so the gathers of one set overlap the
//! other's.
//!
//! A gather reads the tables at secret indices exactly as the scalar loads
//! do; it does not make Twofish constant time (see `twofish`).

use core::arch::x86_64::*;

use crate::serpent_avx2::transpose;
use crate::twofish::TwofishKey;

type V = __m256i;

/// The g function on eight words: T0[b0] ^ T1[b1] ^ T2[b2] ^ T3[b3].
#[inline]
#[target_feature(enable = "avx2")]
fn g(t: &[[u32; 256]; 4], x: V) -> V {
    let m = _mm256_set1_epi32(0xff);
    let b0 = _mm256_and_si256(x, m);
    let b1 = _mm256_and_si256(_mm256_srli_epi32::<8>(x), m);
    let b2 = _mm256_and_si256(_mm256_srli_epi32::<16>(x), m);
    let b3 = _mm256_srli_epi32::<24>(x);
    // SAFETY: every index is below 256, inside its 256-word table.
    unsafe {
        let g0 = _mm256_i32gather_epi32::<4>(t[0].as_ptr() as *const i32, b0);
        let g1 = _mm256_i32gather_epi32::<4>(t[1].as_ptr() as *const i32, b1);
        let g2 = _mm256_i32gather_epi32::<4>(t[2].as_ptr() as *const i32, b2);
        let g3 = _mm256_i32gather_epi32::<4>(t[3].as_ptr() as *const i32, b3);
        _mm256_xor_si256(_mm256_xor_si256(g0, g1), _mm256_xor_si256(g2, g3))
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn rotl<const L: i32, const R: i32>(x: V) -> V {
    _mm256_or_si256(_mm256_slli_epi32::<L>(x), _mm256_srli_epi32::<R>(x))
}

/// Rotation left by 8 bits as one byte shuffle.
#[inline]
#[target_feature(enable = "avx2")]
fn rotl8(x: V) -> V {
    let s = _mm256_setr_epi8(
        3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14, 3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10,
        15, 12, 13, 14,
    );
    _mm256_shuffle_epi8(x, s)
}

/// A round-key word broadcast from the locked schedule where it is used.
#[inline]
#[target_feature(enable = "avx2")]
fn key(k: &u32) -> V {
    _mm256_set1_epi32(*k as i32)
}

#[inline]
#[target_feature(enable = "avx2")]
fn add(a: V, b: V) -> V {
    _mm256_add_epi32(a, b)
}

#[inline]
#[target_feature(enable = "avx2")]
fn xor(a: V, b: V) -> V {
    _mm256_xor_si256(a, b)
}

/// One Feistel half-round of encryption on one set: (a, b) feed g, (c, d)
/// are updated with subkeys k[i] and k[i + 1].
#[inline]
#[target_feature(enable = "avx2")]
fn enc_half(tk: &TwofishKey, i: usize, a: V, b: V, c: V, d: V) -> (V, V) {
    let t1 = g(&tk.t, rotl8(b));
    let t0 = add(g(&tk.t, a), t1);
    let c = rotl::<31, 1>(xor(c, add(t0, key(&tk.k[i]))));
    let d = xor(rotl::<1, 31>(d), add(add(t1, t0), key(&tk.k[i + 1])));
    (c, d)
}

/// One Feistel half-round of decryption on one set (the inverse of `enc_half`).
#[inline]
#[target_feature(enable = "avx2")]
fn dec_half(tk: &TwofishKey, i: usize, a: V, b: V, c: V, d: V) -> (V, V) {
    let t1 = g(&tk.t, rotl8(b));
    let t0 = add(g(&tk.t, a), t1);
    let c = xor(rotl::<1, 31>(c), add(t0, key(&tk.k[i])));
    let d = rotl::<31, 1>(xor(d, add(add(t1, t0), key(&tk.k[i + 1]))));
    (c, d)
}

#[inline]
#[target_feature(enable = "avx2")]
fn whiten(x: [V; 4], tk: &TwofishKey, first: usize) -> [V; 4] {
    let k = &tk.k[first..first + 4];
    [
        xor(x[0], key(&k[0])),
        xor(x[1], key(&k[1])),
        xor(x[2], key(&k[2])),
        xor(x[3], key(&k[3])),
    ]
}

/// Encrypts `n` (1 or 2) bitsliced sets of eight blocks in lock step.
#[inline]
#[target_feature(enable = "avx2")]
fn encrypt_sets<const N: usize>(tk: &TwofishKey, s: [[V; 4]; N]) -> [[V; 4]; N] {
    let mut p = s.map(|x| whiten(x, tk, 0));
    for r in 0..8 {
        let i = 4 * r + 8;
        for q in p.iter_mut() {
            (q[2], q[3]) = enc_half(tk, i, q[0], q[1], q[2], q[3]);
        }
        for q in p.iter_mut() {
            (q[0], q[1]) = enc_half(tk, i + 2, q[2], q[3], q[0], q[1]);
        }
    }
    // Undo the last swap, then output whitening with k[4..8].
    p.map(|q| whiten([q[2], q[3], q[0], q[1]], tk, 4))
}

/// Decrypts `N` bitsliced sets of eight blocks in lock step.
#[inline]
#[target_feature(enable = "avx2")]
fn decrypt_sets<const N: usize>(tk: &TwofishKey, s: [[V; 4]; N]) -> [[V; 4]; N] {
    let mut c = s.map(|x| {
        let w = whiten(x, tk, 4);
        [w[2], w[3], w[0], w[1]]
    });
    for r in (0..8).rev() {
        let i = 4 * r + 8;
        for q in c.iter_mut() {
            (q[0], q[1]) = dec_half(tk, i + 2, q[2], q[3], q[0], q[1]);
        }
        for q in c.iter_mut() {
            (q[2], q[3]) = dec_half(tk, i, q[0], q[1], q[2], q[3]);
        }
    }
    c.map(|q| whiten(q, tk, 0))
}

/// Loads eight blocks at `p` in bitsliced form.
///
/// # Safety
/// `p` must point to 128 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load8(p: *const V) -> [V; 4] {
    // SAFETY: per the contract, four unaligned 32-byte loads.
    unsafe {
        transpose([
            _mm256_loadu_si256(p),
            _mm256_loadu_si256(p.add(1)),
            _mm256_loadu_si256(p.add(2)),
            _mm256_loadu_si256(p.add(3)),
        ])
    }
}

/// Stores eight bitsliced blocks at `p`.
///
/// # Safety
/// `p` must point to 128 writable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store8(p: *mut V, y: [V; 4]) {
    for (i, v) in transpose(y).into_iter().enumerate() {
        // SAFETY: per the contract, four unaligned 32-byte stores.
        unsafe { _mm256_storeu_si256(p.add(i), v) };
    }
}

/// ECB on `data` in passes of `N` sets of eight blocks; returns the rest.
#[inline]
#[target_feature(enable = "avx2")]
fn passes<'a, const N: usize>(tk: &TwofishKey, data: &'a mut [u8], encrypt: bool) -> &'a mut [u8] {
    let mut it = data.chunks_exact_mut(128 * N);
    for g in &mut it {
        let p = g.as_mut_ptr() as *mut V;
        // SAFETY: g is 128 * N bytes.
        unsafe {
            let mut x = [[_mm256_setzero_si256(); 4]; N];
            for (i, s) in x.iter_mut().enumerate() {
                *s = load8(p.add(4 * i));
            }
            let y = if encrypt {
                encrypt_sets(tk, x)
            } else {
                decrypt_sets(tk, x)
            };
            for (i, s) in y.into_iter().enumerate() {
                store8(p.add(4 * i), s);
            }
        }
    }
    it.into_remainder()
}

/// ECB on `data`, a multiple of 128 bytes: two sets of eight blocks per
/// pass, then one. (Four sets measured no faster: on Zen 4 the gathers'
/// throughput, not their latency, is the limit.)
#[inline]
#[target_feature(enable = "avx2")]
fn run(tk: &TwofishKey, data: &mut [u8], encrypt: bool) {
    let rest = passes::<2>(tk, data, encrypt);
    passes::<1>(tk, rest, encrypt);
}

/// ECB-encrypts `data`, a multiple of 128 bytes (eight blocks).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn encrypt8(tk: &TwofishKey, data: &mut [u8]) {
    run(tk, data, true)
}

/// ECB-decrypts `data`, a multiple of 128 bytes (eight blocks).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn decrypt8(tk: &TwofishKey, data: &mut [u8]) {
    run(tk, data, false)
}
