//! Serpent on AVX2: sixteen blocks per pass as two sets of eight, each
//! bitsliced across four ymm registers (register j holds word j of eight
//! blocks, one per 32-bit lane), running the same round function as the
//! scalar code in `serpent`; a last pass of eight.

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
        // The key word is broadcast from the locked schedule and XORed in
        // one `asm!` block (not `pure`): the compiler can neither hoist the
        // load nor spill the broadcast key to the stack.
        // SAFETY: only reached from AVX2 functions.
        Y(unsafe { xor_broadcast(self.0, k) })
    }
}

/// Two ymm sets: sixteen blocks in two independent halves, so the chains
/// of one half overlap the other's. Its S-box runs the circuit on each half
/// separately (one circuit over the pair does not fold at compile time).
#[derive(Clone, Copy)]
struct Y2(Y, Y);

impl Lane for Y2 {
    #[inline(always)]
    fn xor(self, o: Y2) -> Y2 {
        Y2(self.0.xor(o.0), self.1.xor(o.1))
    }
    #[inline(always)]
    fn and(self, o: Y2) -> Y2 {
        Y2(self.0.and(o.0), self.1.and(o.1))
    }
    #[inline(always)]
    fn not(self) -> Y2 {
        Y2(self.0.not(), self.1.not())
    }
    #[inline(always)]
    fn rotl(self, n: u32) -> Y2 {
        Y2(self.0.rotl(n), self.1.rotl(n))
    }
    #[inline(always)]
    fn shl(self, n: u32) -> Y2 {
        Y2(self.0.shl(n), self.1.shl(n))
    }
    #[inline(always)]
    fn xor_key(self, k: &u32) -> Y2 {
        Y2(self.0.xor_key(k), self.1.xor_key(k))
    }
    #[inline(always)]
    fn sbox(s: usize, x: [Y2; 4]) -> [Y2; 4] {
        let a = Y::sbox(s, x.map(|v| v.0));
        let b = Y::sbox(s, x.map(|v| v.1));
        [
            Y2(a[0], b[0]),
            Y2(a[1], b[1]),
            Y2(a[2], b[2]),
            Y2(a[3], b[3]),
        ]
    }
}

/// `x` XOR `k` in all eight lanes; the broadcast key lives only in a
/// scratch register inside the `asm!` block.
///
/// # Safety
/// The CPU must have AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn xor_broadcast(x: __m256i, k: &u32) -> __m256i {
    let r: __m256i;
    // SAFETY: k is a valid 4-byte read; the caller has AVX2.
    unsafe {
        asm!(
            "vpbroadcastd {t}, dword ptr [{p}]",
            "vpxor {r}, {x}, {t}",
            r = lateout(ymm_reg) r,
            x = in(ymm_reg) x,
            t = out(ymm_reg) _,
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

/// Encrypts or decrypts `data` (a multiple of 128 bytes): sixteen blocks
/// per pass, then eight. No closure: the round code must inline into the
/// AVX2 function. With sixteen blocks the compiler spills S-box and state
/// temporaries (data, never a round key: see `xor_broadcast`) to the
/// locked stack, and still runs faster than one set of eight.
#[inline(always)]
fn groups(k: &SerpentKey, data: &mut [u8], encrypt: bool) {
    let mut big = data.chunks_exact_mut(256);
    for g in &mut big {
        let p = g.as_mut_ptr() as *mut __m256i;
        // SAFETY: g is 256 bytes; only reached from AVX2 functions.
        unsafe {
            let (a, b) = (load8(p), load8(p.add(4)));
            let x = [
                Y2(a[0], b[0]),
                Y2(a[1], b[1]),
                Y2(a[2], b[2]),
                Y2(a[3], b[3]),
            ];
            let y = if encrypt {
                k.encrypt_words(x)
            } else {
                k.decrypt_words(x)
            };
            store8(p, y.map(|v| v.0));
            store8(p.add(4), y.map(|v| v.1));
        }
    }
    for g in big.into_remainder().chunks_exact_mut(128) {
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
