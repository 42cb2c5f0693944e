//! Serpent on AVX-512: 32 blocks per pass as two independent sets of 16,
//! each bitsliced across four zmm registers, running the same round
//! function as `serpent`. Each S-box output bit is two three-input
//! functions and a mux, three `vpternlogd` (twelve per S-box); three-way
//! XORs are one `vpternlogd`, rotations one `vprold`, and the 32 registers
//! hold the state and every temporary.

use core::arch::asm;
use core::arch::x86_64::*;

use crate::serpent::{Lane, SerpentKey, TERNARY};

/// `vpternlogd` with an immediate from `TERNARY` (or the mux 0xca).
macro_rules! tern {
    ($a:expr, $b:expr, $c:expr, $imm:expr) => {{
        const IMM: i32 = $imm as i32;
        // SAFETY: only reached from AVX-512F functions.
        unsafe { _mm512_ternarylogic_epi32::<IMM>($a, $b, $c) }
    }};
}

/// S-box `$s` in twelve `vpternlogd`: each output bit is x3 ? f1 : f0 with
/// f0, f1 three-input functions of (x2, x1, x0), then one mux.
macro_rules! sbox_fn {
    ($name:ident, $s:literal) => {
        #[inline(always)]
        fn $name(x: [Z; 4]) -> [Z; 4] {
            let (x0, x1, x2, x3) = (x[0].0, x[1].0, x[2].0, x[3].0);
            let bit = |f0: __m512i, f1: __m512i| Z(tern!(x3, f1, f0, 0xca));
            [
                bit(
                    tern!(x2, x1, x0, TERNARY[$s][0][0]),
                    tern!(x2, x1, x0, TERNARY[$s][0][1]),
                ),
                bit(
                    tern!(x2, x1, x0, TERNARY[$s][1][0]),
                    tern!(x2, x1, x0, TERNARY[$s][1][1]),
                ),
                bit(
                    tern!(x2, x1, x0, TERNARY[$s][2][0]),
                    tern!(x2, x1, x0, TERNARY[$s][2][1]),
                ),
                bit(
                    tern!(x2, x1, x0, TERNARY[$s][3][0]),
                    tern!(x2, x1, x0, TERNARY[$s][3][1]),
                ),
            ]
        }
    };
}

sbox_fn!(s0, 0);
sbox_fn!(s1, 1);
sbox_fn!(s2, 2);
sbox_fn!(s3, 3);
sbox_fn!(s4, 4);
sbox_fn!(s5, 5);
sbox_fn!(s6, 6);
sbox_fn!(s7, 7);
sbox_fn!(i0, 8);
sbox_fn!(i1, 9);
sbox_fn!(i2, 10);
sbox_fn!(i3, 11);
sbox_fn!(i4, 12);
sbox_fn!(i5, 13);
sbox_fn!(i6, 14);
sbox_fn!(i7, 15);

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
    fn sbox(s: usize, x: [Z; 4]) -> [Z; 4] {
        // `s` is a constant in every caller; the match folds away.
        match s {
            0 => s0(x),
            1 => s1(x),
            2 => s2(x),
            3 => s3(x),
            4 => s4(x),
            5 => s5(x),
            6 => s6(x),
            7 => s7(x),
            8 => i0(x),
            9 => i1(x),
            10 => i2(x),
            11 => i3(x),
            12 => i4(x),
            13 => i5(x),
            14 => i6(x),
            _ => i7(x),
        }
    }
    #[inline(always)]
    fn xor_key(self, k: &u32) -> Z {
        // XOR with the key word broadcast from the locked schedule on every
        // use (an `asm!` load, not `pure`, so it is never hoisted or spilled).
        // SAFETY: only reached from AVX-512F functions.
        Z(unsafe { xor_broadcast(self.0, k) })
    }
}

/// Two zmm sets: thirty-two blocks per pass, two independent chains.
#[derive(Clone, Copy)]
struct Z2(Z, Z);

impl Lane for Z2 {
    #[inline(always)]
    fn xor(self, o: Z2) -> Z2 {
        Z2(self.0.xor(o.0), self.1.xor(o.1))
    }
    #[inline(always)]
    fn xor3(self, a: Z2, b: Z2) -> Z2 {
        Z2(self.0.xor3(a.0, b.0), self.1.xor3(a.1, b.1))
    }
    #[inline(always)]
    fn and(self, o: Z2) -> Z2 {
        Z2(self.0.and(o.0), self.1.and(o.1))
    }
    #[inline(always)]
    fn not(self) -> Z2 {
        Z2(self.0.not(), self.1.not())
    }
    #[inline(always)]
    fn rotl(self, n: u32) -> Z2 {
        Z2(self.0.rotl(n), self.1.rotl(n))
    }
    #[inline(always)]
    fn shl(self, n: u32) -> Z2 {
        Z2(self.0.shl(n), self.1.shl(n))
    }
    #[inline(always)]
    fn xor_key(self, k: &u32) -> Z2 {
        Z2(self.0.xor_key(k), self.1.xor_key(k))
    }
    #[inline(always)]
    fn sbox(s: usize, x: [Z2; 4]) -> [Z2; 4] {
        let a = Z::sbox(s, x.map(|v| v.0));
        let b = Z::sbox(s, x.map(|v| v.1));
        [
            Z2(a[0], b[0]),
            Z2(a[1], b[1]),
            Z2(a[2], b[2]),
            Z2(a[3], b[3]),
        ]
    }
}

/// `x` XOR `k` in all sixteen lanes, `k` read from memory through `asm!`
/// (not `pure`: every use loads again).
///
/// # Safety
/// The CPU must have AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn xor_broadcast(x: __m512i, k: &u32) -> __m512i {
    let r: __m512i;
    // SAFETY: k is a valid 4-byte read; the caller has AVX-512F.
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

/// Loads sixteen blocks at `p` in bitsliced form.
///
/// # Safety
/// `p` must point to 256 readable bytes; AVX-512F functions only.
#[inline(always)]
unsafe fn load16(p: *const __m512i) -> [Z; 4] {
    // SAFETY: per the contract.
    let r = unsafe {
        transpose([
            _mm512_loadu_si512(p),
            _mm512_loadu_si512(p.add(1)),
            _mm512_loadu_si512(p.add(2)),
            _mm512_loadu_si512(p.add(3)),
        ])
    };
    [Z(r[0]), Z(r[1]), Z(r[2]), Z(r[3])]
}

/// Stores sixteen bitsliced blocks at `p`.
///
/// # Safety
/// `p` must point to 256 writable bytes; AVX-512F functions only.
#[inline(always)]
unsafe fn store16(p: *mut __m512i, y: [Z; 4]) {
    let o = transpose([y[0].0, y[1].0, y[2].0, y[3].0]);
    for (i, v) in o.into_iter().enumerate() {
        // SAFETY: per the contract.
        unsafe { _mm512_storeu_si512(p.add(i), v) };
    }
}

/// Encrypts or decrypts `data`, a multiple of 256 bytes: thirty-two blocks
/// per pass, then sixteen.
#[inline(always)]
fn groups(k: &SerpentKey, data: &mut [u8], encrypt: bool) {
    let mut big = data.chunks_exact_mut(512);
    for g in &mut big {
        let p = g.as_mut_ptr() as *mut __m512i;
        // SAFETY: g is 512 bytes; only reached from AVX-512F functions.
        unsafe {
            let (a, b) = (load16(p), load16(p.add(4)));
            let x = [
                Z2(a[0], b[0]),
                Z2(a[1], b[1]),
                Z2(a[2], b[2]),
                Z2(a[3], b[3]),
            ];
            let y = if encrypt {
                k.encrypt_words(x)
            } else {
                k.decrypt_words(x)
            };
            store16(p, y.map(|v| v.0));
            store16(p.add(4), y.map(|v| v.1));
        }
    }
    for g in big.into_remainder().chunks_exact_mut(256) {
        let p = g.as_mut_ptr() as *mut __m512i;
        // SAFETY: g is 256 bytes; only reached from AVX-512F functions.
        unsafe {
            let x = load16(p);
            let y = if encrypt {
                k.encrypt_words(x)
            } else {
                k.decrypt_words(x)
            };
            store16(p, y);
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
