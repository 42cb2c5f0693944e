//! Bitsliced Serpent: one round function written once over a [`Lane`] of
//! 32-bit words, run on `u32` (one block) and on AVX2 ymm registers (eight
//! blocks, `serpent_avx2`).
//!
//! RustCrypto's `serpent` evaluates each S-box one bit at a time through a
//! table (32 lookups per word per round) and copies the whole 528-byte key
//! schedule into every round call, which is why it runs at a few MiB/s. Here
//! the S-boxes are boolean circuits in algebraic normal form: the monomial
//! coefficients are computed from the published S-box tables at compile
//! time, so every S-box is a fixed sequence of AND/XOR/NOT with no table
//! lookup and no branch on data. The byte order is the kernel's (and
//! RustCrypto's): little-endian words, word 0 holding the low bit of each
//! S-box input.

use crate::words::{load, store};

/// Serpent-1 S-boxes S0..S7 (the kernel's and the AES submission's tables).
const S: [[u8; 16]; 8] = [
    [3, 8, 15, 1, 10, 6, 5, 11, 14, 13, 4, 2, 7, 0, 9, 12],
    [15, 12, 2, 7, 9, 0, 5, 10, 1, 11, 14, 8, 6, 13, 3, 4],
    [8, 6, 7, 9, 3, 12, 10, 15, 13, 1, 14, 4, 0, 11, 5, 2],
    [0, 15, 11, 8, 12, 9, 6, 3, 13, 1, 2, 4, 10, 7, 5, 14],
    [1, 15, 8, 3, 12, 0, 11, 6, 2, 5, 4, 10, 9, 14, 7, 13],
    [15, 5, 2, 11, 4, 10, 9, 12, 0, 3, 14, 8, 13, 6, 7, 1],
    [7, 2, 12, 5, 8, 4, 6, 11, 14, 9, 1, 15, 13, 3, 10, 0],
    [1, 13, 15, 0, 14, 8, 2, 11, 7, 4, 12, 10, 9, 3, 5, 6],
];

const PHI: u32 = 0x9e37_79b9;

/// `S` followed by its inverses (index 8 + i is S_i^-1).
const fn all_sboxes() -> [[u8; 16]; 16] {
    let mut t = [[0u8; 16]; 16];
    let mut i = 0;
    while i < 8 {
        t[i] = S[i];
        let mut x = 0;
        while x < 16 {
            t[8 + i][S[i][x] as usize] = x as u8;
            x += 1;
        }
        i += 1;
    }
    t
}

/// ANF[s][j]: bit u set when monomial u (the AND of the inputs whose bits
/// are set in u; u = 0 is the constant 1) is a term of output bit j of
/// S-box s (Möbius transform of the truth table).
const ANF: [[u16; 4]; 16] = {
    let t = all_sboxes();
    let mut anf = [[0u16; 4]; 16];
    let mut s = 0;
    while s < 16 {
        let mut j = 0;
        while j < 4 {
            let mut a = [0u8; 16];
            let mut x = 0;
            while x < 16 {
                a[x] = (t[s][x] >> j) & 1;
                x += 1;
            }
            let mut i = 0;
            while i < 4 {
                let mut x = 0;
                while x < 16 {
                    if x & (1 << i) != 0 {
                        a[x] ^= a[x ^ (1 << i)];
                    }
                    x += 1;
                }
                i += 1;
            }
            let mut u = 0;
            while u < 16 {
                anf[s][j] |= (a[u] as u16) << u;
                u += 1;
            }
            j += 1;
        }
        s += 1;
    }
    anf
};

/// Four 32-bit words (one block) or four registers of words (many blocks),
/// with the operations Serpent needs. Every method must compile to a
/// constant-time instruction sequence.
pub(crate) trait Lane: Copy {
    fn xor(self, o: Self) -> Self;
    /// Three-way XOR (one `vpternlogd` on AVX-512).
    #[inline(always)]
    fn xor3(self, a: Self, b: Self) -> Self {
        self.xor(a).xor(b)
    }
    fn and(self, o: Self) -> Self;
    fn not(self) -> Self;
    fn rotl(self, n: u32) -> Self;
    fn shl(self, n: u32) -> Self;
    /// XOR with a round-key word, read from the (locked) schedule.
    fn xor_key(self, k: &u32) -> Self;
    /// S-box `s` (0..8; 8 + i for S_i^-1) on bitsliced words; the AND/XOR
    /// circuit unless the lane has something better.
    #[inline(always)]
    fn sbox(s: usize, x: [Self; 4]) -> [Self; 4] {
        sbox(s, x)
    }
}

/// TERNARY[s][j] = (f0, f1): the truth tables of output bit j of S-box s
/// with input bit 3 clear and set, as functions of (x2, x1, x0) in the bit
/// order of `vpternlogd` (index x2·4 + x1·2 + x0).
pub(crate) const TERNARY: [[[u8; 2]; 4]; 16] = {
    let t = all_sboxes();
    let mut r = [[[0u8; 2]; 4]; 16];
    let mut s = 0;
    while s < 16 {
        let mut j = 0;
        while j < 4 {
            let mut v = 0;
            while v < 8 {
                r[s][j][0] |= ((t[s][v] >> j) & 1) << v;
                r[s][j][1] |= ((t[s][v + 8] >> j) & 1) << v;
                v += 1;
            }
            j += 1;
        }
        s += 1;
    }
    r
};

impl Lane for u32 {
    #[inline(always)]
    fn xor(self, o: u32) -> u32 {
        self ^ o
    }
    #[inline(always)]
    fn and(self, o: u32) -> u32 {
        self & o
    }
    #[inline(always)]
    fn not(self) -> u32 {
        !self
    }
    #[inline(always)]
    fn rotl(self, n: u32) -> u32 {
        self.rotate_left(n)
    }
    #[inline(always)]
    fn shl(self, n: u32) -> u32 {
        self << n
    }
    #[inline(always)]
    fn xor_key(self, k: &u32) -> u32 {
        self ^ *k
    }
}

/// Applies S-box `s` (0..8; 8 + i for S_i^-1) to bitsliced words. With a
/// constant `s` the coefficient tests fold away at compile time and the
/// compiler drops the monomials no output uses, leaving about a dozen ANDs
/// and thirty XORs.
#[inline(always)]
pub(crate) fn sbox<W: Lane>(s: usize, x: [W; 4]) -> [W; 4] {
    // m[u] = AND of x[i] for the bits i of u (m[0] is unused).
    let mut m = [x[0]; 16];
    let mut u: usize = 1;
    while u < 16 {
        let low = u.trailing_zeros() as usize;
        let rest = u & (u - 1);
        m[u] = if rest == 0 {
            x[low]
        } else {
            m[rest].and(x[low])
        };
        u += 1;
    }
    let mut out = x;
    let mut j = 0;
    while j < 4 {
        // The terms of output j, two at a time into three-way XORs (one
        // instruction on AVX-512). Every test is on constants and folds.
        let mut acc: Option<W> = None;
        let mut pending: Option<W> = None;
        let mut u = 1;
        while u < 16 {
            if ANF[s][j] & (1 << u) != 0 {
                match pending {
                    None => pending = Some(m[u]),
                    Some(p) => {
                        acc = Some(match acc {
                            None => p.xor(m[u]),
                            Some(a) => a.xor3(p, m[u]),
                        });
                        pending = None;
                    }
                }
            }
            u += 1;
        }
        // Every output bit of a bijective S-box depends on some input.
        let t = match (acc, pending) {
            (Some(a), Some(p)) => a.xor(p),
            (Some(a), None) => a,
            (None, Some(p)) => p,
            (None, None) => unreachable!("constant S-box output"),
        };
        out[j] = if ANF[s][j] & 1 != 0 { t.not() } else { t };
        j += 1;
    }
    out
}

#[inline(always)]
fn lt<W: Lane>(x: [W; 4]) -> [W; 4] {
    let x0 = x[0].rotl(13);
    let x2 = x[2].rotl(3);
    let x1 = x[1].xor3(x0, x2);
    let x3 = x[3].xor3(x2, x0.shl(3));
    let x1 = x1.rotl(1);
    let x3 = x3.rotl(7);
    let x0 = x0.xor3(x1, x3);
    let x2 = x2.xor3(x3, x1.shl(7));
    [x0.rotl(5), x1, x2.rotl(22), x3]
}

#[inline(always)]
fn lt_inv<W: Lane>(x: [W; 4]) -> [W; 4] {
    let x2 = x[2].rotl(32 - 22);
    let x0 = x[0].rotl(32 - 5);
    let x2 = x2.xor3(x[3], x[1].shl(7));
    let x0 = x0.xor3(x[1], x[3]);
    let x3 = x[3].rotl(32 - 7);
    let x1 = x[1].rotl(32 - 1);
    let x3 = x3.xor3(x2, x0.shl(3));
    let x1 = x1.xor3(x0, x2);
    [x0.rotl(32 - 13), x1, x2.rotl(32 - 3), x3]
}

#[inline(always)]
fn add_key<W: Lane>(x: [W; 4], k: &[u32; 4]) -> [W; 4] {
    [
        x[0].xor_key(&k[0]),
        x[1].xor_key(&k[1]),
        x[2].xor_key(&k[2]),
        x[3].xor_key(&k[3]),
    ]
}

/// Repeats `$body` with `$s` = 0..8 as a constant (the S-box of the round).
macro_rules! eight {
    ($s:ident => $body:block) => {{
        {
            const $s: usize = 0;
            $body
        }
        {
            const $s: usize = 1;
            $body
        }
        {
            const $s: usize = 2;
            $body
        }
        {
            const $s: usize = 3;
            $body
        }
        {
            const $s: usize = 4;
            $body
        }
        {
            const $s: usize = 5;
            $body
        }
        {
            const $s: usize = 6;
            $body
        }
        {
            const $s: usize = 7;
            $body
        }
    }};
}

/// The 33 round keys, in locked memory (see [`crate::locked::Locked`]).
pub(crate) struct SerpentKey {
    k: [[u32; 4]; 33],
}

impl SerpentKey {
    /// The kernel's key schedule: keys shorter than 256 bits are padded with
    /// a single 1 bit. `key` is 16..=32 bytes (checked by the caller).
    pub(crate) fn new(key: &[u8]) -> SerpentKey {
        let mut kb = [0u8; 32];
        kb[..key.len()].copy_from_slice(key);
        if key.len() < 32 {
            kb[key.len()] = 1;
        }
        let mut w = [0u32; 140];
        for (i, c) in kb.chunks_exact(4).enumerate() {
            w[i] = u32::from_le_bytes(c.try_into().expect("4 bytes"));
        }
        for i in 0..132 {
            let j = i + 8;
            w[j] = (w[j - 8] ^ w[j - 5] ^ w[j - 3] ^ w[j - 1] ^ PHI ^ i as u32).rotate_left(11);
        }
        let mut k = [[0u32; 4]; 33];
        for (i, ki) in k.iter_mut().enumerate() {
            let x = [w[8 + 4 * i], w[9 + 4 * i], w[10 + 4 * i], w[11 + 4 * i]];
            // The index is public (the round number), never data.
            *ki = match (3 + 32 - i) % 8 {
                0 => sbox(0, x),
                1 => sbox(1, x),
                2 => sbox(2, x),
                3 => sbox(3, x),
                4 => sbox(4, x),
                5 => sbox(5, x),
                6 => sbox(6, x),
                _ => sbox(7, x),
            };
        }
        zeroize::Zeroize::zeroize(&mut w[..]);
        zeroize::Zeroize::zeroize(&mut kb[..]);
        SerpentKey { k }
    }

    /// Round key `i` (0..=32).
    #[inline(always)]
    pub(crate) fn round_key(&self, i: usize) -> &[u32; 4] {
        &self.k[i]
    }

    /// Encrypts bitsliced state `x` (word j of every block in `x[j]`).
    #[inline(always)]
    pub(crate) fn encrypt_words<W: Lane>(&self, mut x: [W; 4]) -> [W; 4] {
        for r in 0..4 {
            eight!(S => {
                let i = 8 * r + S;
                x = W::sbox(S, add_key(x, self.round_key(i)));
                x = if i == 31 { add_key(x, self.round_key(32)) } else { lt(x) };
            });
        }
        x
    }

    /// Decrypts bitsliced state `x`.
    #[inline(always)]
    pub(crate) fn decrypt_words<W: Lane>(&self, mut x: [W; 4]) -> [W; 4] {
        for r in (0..4).rev() {
            eight!(T => {
                const S: usize = 7 - T;
                let i = 8 * r + S;
                x = if i == 31 { add_key(x, self.round_key(32)) } else { lt_inv(x) };
                x = add_key(W::sbox(8 + S, x), self.round_key(i));
            });
        }
        x
    }

    /// ECB-encrypts whole 16-byte blocks one at a time on `u32` words.
    pub(crate) fn encrypt_blocks(&self, data: &mut [u8]) {
        for b in data.chunks_exact_mut(16) {
            let y = self.encrypt_words(load(b));
            store(b, y);
        }
    }

    /// ECB-decrypts whole 16-byte blocks one at a time on `u32` words.
    pub(crate) fn decrypt_blocks(&self, data: &mut [u8]) {
        for b in data.chunks_exact_mut(16) {
            let y = self.decrypt_words(load(b));
            store(b, y);
        }
    }
}

impl Drop for SerpentKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.k.as_flattened_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};

    #[test]
    fn sbox_circuits_match_tables() {
        let t = all_sboxes();
        for (s, row) in t.iter().enumerate() {
            for v in 0..16u32 {
                let x = [v & 1, (v >> 1) & 1, (v >> 2) & 1, (v >> 3) & 1].map(|b| b.wrapping_neg());
                let y = sbox(s, x);
                let got = (0..4).fold(0, |a, j| a | ((y[j] & 1) << j));
                assert_eq!(got, row[v as usize] as u32, "S-box {s} input {v}");
                assert!(y.iter().all(|&w| w == 0 || w == !0));
            }
        }
    }

    #[test]
    fn equals_rustcrypto_on_every_key_length() {
        for len in 16..=32 {
            let key: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37) ^ 0x5c).collect();
            let ours = SerpentKey::new(&key);
            let theirs = serpent::Serpent::new_from_slice(&key).unwrap();
            let mut a: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(91)).collect();
            let mut b = a.clone();
            ours.encrypt_blocks(&mut a);
            for blk in b.chunks_exact_mut(16) {
                theirs.encrypt_block(GenericArray::from_mut_slice(blk));
            }
            assert_eq!(a, b, "key of {len} bytes");
            ours.decrypt_blocks(&mut a);
            assert_eq!(a, (0..64u8).map(|i| i.wrapping_mul(91)).collect::<Vec<_>>());
        }
    }
}
