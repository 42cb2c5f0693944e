//! Twofish with full-key tables, as the kernel's `twofish_common` and every
//! fast implementation use: the key-dependent S-boxes and the MDS matrix are
//! folded into four tables of 256 words when the key is set, so the g
//! function is four loads and three XORs.
//!
//! RustCrypto's `twofish` recomputes the whole keyed S-box chain (q
//! permutations from nibble tables) and the MDS product (a bit-serial
//! GF(2^8) multiply with branches on the data) for every byte of every
//! round, which is why it runs at 2–3 MiB/s.
//!
//! The tables are secret (they are a function of the key) and the encryption
//! indexes them with secret bytes, so this engine is **not** constant time
//! against an attacker who can observe the cache (the same holds for the
//! kernel's generic and AVX2 Twofish); `twofish_avx512` is. The key schedule itself is branch-free
//! and reads its small tables by scanning every entry.

use crate::words::{load, store};

/// The q0 and q1 permutations as four nibble tables each (the Twofish paper).
const QBOX: [[[u8; 16]; 4]; 2] = [
    [
        [8, 1, 7, 13, 6, 15, 3, 2, 0, 11, 5, 9, 14, 12, 10, 4],
        [14, 12, 11, 8, 1, 2, 3, 5, 15, 4, 10, 6, 7, 0, 9, 13],
        [11, 10, 5, 14, 6, 13, 9, 0, 12, 8, 15, 3, 2, 4, 7, 1],
        [13, 7, 15, 4, 1, 2, 6, 14, 9, 11, 3, 0, 8, 5, 12, 10],
    ],
    [
        [2, 8, 11, 13, 15, 7, 6, 14, 3, 1, 9, 4, 0, 10, 12, 5],
        [1, 14, 2, 11, 4, 12, 3, 7, 6, 13, 10, 5, 15, 9, 0, 8],
        [4, 12, 7, 5, 1, 6, 9, 10, 0, 14, 13, 8, 2, 11, 3, 15],
        [11, 9, 5, 1, 12, 3, 13, 14, 6, 4, 7, 15, 2, 0, 8, 10],
    ],
];

/// Which q permutation each byte position passes through at each stage.
const QORD: [[usize; 5]; 4] = [
    [1, 1, 0, 0, 1],
    [0, 1, 1, 0, 0],
    [0, 0, 0, 1, 1],
    [1, 0, 1, 1, 0],
];

/// The Reed–Solomon matrix that derives the S-box key from the key.
const RS: [[u8; 8]; 4] = [
    [0x01, 0xa4, 0x55, 0x87, 0x5a, 0x58, 0xdb, 0x9e],
    [0xa4, 0x56, 0x82, 0xf3, 0x1e, 0xc6, 0x68, 0xe5],
    [0x02, 0xa1, 0xfc, 0xc1, 0x47, 0xae, 0x3d, 0x19],
    [0xa4, 0x55, 0x87, 0x5a, 0x58, 0xdb, 0x9e, 0x03],
];

/// x^8 + x^6 + x^5 + x^3 + 1 (MDS) and x^8 + x^6 + x^3 + x^2 + 1 (RS), low bytes.
pub(crate) const MDS_POLY: u8 = 0x69;
const RS_POLY: u8 = 0x4d;

/// GF(2^8) product without branches on either operand.
pub(crate) fn gf_mul(a: u8, mut b: u8, poly: u8) -> u8 {
    let mut r = 0u8;
    for i in 0..8 {
        r ^= b & ((a >> i) & 1).wrapping_neg();
        b = (b << 1) ^ (poly & (b >> 7).wrapping_neg());
    }
    r
}

/// `table[i]` for a secret nibble `i`, reading every entry.
fn ct_lookup(table: &[u8; 16], i: u8) -> u8 {
    let mut r = 0u8;
    for (j, &v) in table.iter().enumerate() {
        let eq = ((j as u8 ^ i) as u32).wrapping_sub(1) >> 31;
        r |= v & (eq as u8).wrapping_neg();
    }
    r
}

/// The q0 (`i` = 0) or q1 permutation, constant time.
fn q(i: usize, x: u8) -> u8 {
    let (a0, b0) = (x >> 4, x & 15);
    let a1 = a0 ^ b0;
    let b1 = (a0 ^ ror4(b0) ^ (a0 << 3)) & 15;
    let (a2, b2) = (ct_lookup(&QBOX[i][0], a1), ct_lookup(&QBOX[i][1], b1));
    let a3 = a2 ^ b2;
    let b3 = (a2 ^ ror4(b2) ^ (a2 << 3)) & 15;
    let (a4, b4) = (ct_lookup(&QBOX[i][2], a3), ct_lookup(&QBOX[i][3], b3));
    (b4 << 4) | a4
}

/// Rotates a nibble right by one bit.
fn ror4(x: u8) -> u8 {
    ((x >> 1) | (x << 3)) & 15
}

/// Column `col` of the MDS matrix times `x`, as a little-endian word.
fn mds_column(x: u8, col: usize) -> u32 {
    let x5b = gf_mul(x, 0x5b, MDS_POLY);
    let xef = gf_mul(x, 0xef, MDS_POLY);
    let v = match col {
        0 => [x, x5b, xef, xef],
        1 => [xef, xef, x5b, x],
        2 => [x5b, xef, x, xef],
        _ => [x5b, x, xef, x5b],
    };
    u32::from_le_bytes(v)
}

/// The h function of the key schedule on the words of `m` at `offset`
/// (0: even words, 1: odd words); `k` is the key length in 64-bit units.
fn h(x: u32, m: &[u8], k: usize, offset: usize) -> u32 {
    let mut y = x.to_le_bytes();
    let w = |j: usize, b: usize| m[4 * (2 * j + offset) + b];
    if k == 4 {
        y = [
            q(1, y[0]) ^ w(3, 0),
            q(0, y[1]) ^ w(3, 1),
            q(0, y[2]) ^ w(3, 2),
            q(1, y[3]) ^ w(3, 3),
        ];
    }
    if k >= 3 {
        y = [
            q(1, y[0]) ^ w(2, 0),
            q(1, y[1]) ^ w(2, 1),
            q(0, y[2]) ^ w(2, 2),
            q(0, y[3]) ^ w(2, 3),
        ];
    }
    let y = [
        q(1, q(0, q(0, y[0]) ^ w(1, 0)) ^ w(0, 0)),
        q(0, q(0, q(1, y[1]) ^ w(1, 1)) ^ w(0, 1)),
        q(1, q(1, q(0, y[2]) ^ w(1, 2)) ^ w(0, 2)),
        q(0, q(1, q(1, y[3]) ^ w(1, 3)) ^ w(0, 3)),
    ];
    (0..4).fold(0, |z, i| z ^ mds_column(y[i], i))
}

/// Blocks interleaved round by round in the scalar code.
const WAYS: usize = 4;

/// The expanded key: 40 subkeys and the four keyed S-box/MDS tables. Kept
/// in locked memory ([`crate::locked::Locked`]).
pub(crate) struct TwofishKey {
    pub(crate) t: [[u32; 256]; 4],
    pub(crate) k: [u32; 40],
    /// The keyed S-boxes before the MDS matrix: `t[y][x]` is MDS column `y`
    /// times `sb[y][x]` (the AVX-512 engine looks these up in registers).
    pub(crate) sb: [[u8; 256]; 4],
}

impl TwofishKey {
    /// Expands a 16-, 24- or 32-byte key (checked by the caller).
    pub(crate) fn new(key: &[u8]) -> TwofishKey {
        let k = key.len() / 8;
        let mut out = TwofishKey {
            t: [[0; 256]; 4],
            sb: [[0; 256]; 4],
            k: [0; 40],
        };
        let rho = 0x0101_0101u32;
        for x in 0..20u32 {
            let a = h(rho * (2 * x), key, k, 0);
            let b = h(rho * (2 * x + 1), key, k, 1).rotate_left(8);
            let v = a.wrapping_add(b);
            out.k[2 * x as usize] = v;
            out.k[2 * x as usize + 1] = v.wrapping_add(b).rotate_left(9);
        }
        let mut s = [0u8; 16];
        for i in 0..k {
            for (r, row) in RS.iter().enumerate() {
                s[4 * i + r] =
                    (0..8).fold(0, |acc, j| acc ^ gf_mul(key[8 * i + j], row[j], RS_POLY));
            }
        }
        let start = 4 - k;
        for (y, (table, sb)) in out.t.iter_mut().zip(out.sb.iter_mut()).enumerate() {
            for (x, (e, b)) in table.iter_mut().zip(sb.iter_mut()).enumerate() {
                let mut g = q(QORD[y][start], x as u8);
                for z in start + 1..5 {
                    g ^= s[4 * (z - start - 1) + y];
                    g = q(QORD[y][z], g);
                }
                *b = g;
                *e = mds_column(g, y);
            }
        }
        zeroize::Zeroize::zeroize(&mut s);
        out
    }

    /// The g function: four table loads indexed by the bytes of `x`.
    #[inline(always)]
    fn g(&self, x: u32) -> u32 {
        self.t[0][(x & 255) as usize]
            ^ self.t[1][((x >> 8) & 255) as usize]
            ^ self.t[2][((x >> 16) & 255) as usize]
            ^ self.t[3][(x >> 24) as usize]
    }

    /// Encrypts `N` blocks given as little-endian words, round by round
    /// across the blocks so their table loads overlap.
    #[inline(always)]
    fn encrypt_words<const N: usize>(&self, b: [[u32; 4]; N]) -> [[u32; 4]; N] {
        let k = &self.k;
        let mut p = b.map(|b| [b[0] ^ k[0], b[1] ^ k[1], b[2] ^ k[2], b[3] ^ k[3]]);
        for r in 0..8 {
            let i = 4 * r + 8;
            for p in p.iter_mut() {
                let t1 = self.g(p[1].rotate_left(8));
                let t0 = self.g(p[0]).wrapping_add(t1);
                p[2] = (p[2] ^ t0.wrapping_add(k[i])).rotate_right(1);
                p[3] = p[3].rotate_left(1) ^ t1.wrapping_add(t0).wrapping_add(k[i + 1]);
            }
            for p in p.iter_mut() {
                let t1 = self.g(p[3].rotate_left(8));
                let t0 = self.g(p[2]).wrapping_add(t1);
                p[0] = (p[0] ^ t0.wrapping_add(k[i + 2])).rotate_right(1);
                p[1] = p[1].rotate_left(1) ^ t1.wrapping_add(t0).wrapping_add(k[i + 3]);
            }
        }
        p.map(|p| [p[2] ^ k[4], p[3] ^ k[5], p[0] ^ k[6], p[1] ^ k[7]])
    }

    /// Decrypts `N` blocks given as little-endian words, interleaved.
    #[inline(always)]
    fn decrypt_words<const N: usize>(&self, b: [[u32; 4]; N]) -> [[u32; 4]; N] {
        let k = &self.k;
        let mut c = b.map(|b| [b[2] ^ k[6], b[3] ^ k[7], b[0] ^ k[4], b[1] ^ k[5]]);
        for r in (0..8).rev() {
            let i = 4 * r + 8;
            for c in c.iter_mut() {
                let t1 = self.g(c[3].rotate_left(8));
                let t0 = self.g(c[2]).wrapping_add(t1);
                c[0] = c[0].rotate_left(1) ^ t0.wrapping_add(k[i + 2]);
                c[1] = (c[1] ^ t1.wrapping_add(t0).wrapping_add(k[i + 3])).rotate_right(1);
            }
            for c in c.iter_mut() {
                let t1 = self.g(c[1].rotate_left(8));
                let t0 = self.g(c[0]).wrapping_add(t1);
                c[2] = c[2].rotate_left(1) ^ t0.wrapping_add(k[i]);
                c[3] = (c[3] ^ t1.wrapping_add(t0).wrapping_add(k[i + 1])).rotate_right(1);
            }
        }
        c.map(|c| [c[0] ^ k[0], c[1] ^ k[1], c[2] ^ k[2], c[3] ^ k[3]])
    }

    /// ECB-encrypts whole 16-byte blocks, four interleaved at a time so the
    /// table loads of one block overlap the others'.
    pub(crate) fn encrypt_blocks(&self, data: &mut [u8]) {
        let mut quads = data.chunks_exact_mut(16 * WAYS);
        for p in &mut quads {
            let x: [[u32; 4]; WAYS] = std::array::from_fn(|i| load(&p[16 * i..]));
            let y = self.encrypt_words(x);
            for (i, w) in y.into_iter().enumerate() {
                store(&mut p[16 * i..], w);
            }
        }
        for b in quads.into_remainder().chunks_exact_mut(16) {
            let [y] = self.encrypt_words([load(b)]);
            store(b, y);
        }
    }

    /// ECB-decrypts whole 16-byte blocks, four interleaved at a time.
    pub(crate) fn decrypt_blocks(&self, data: &mut [u8]) {
        let mut quads = data.chunks_exact_mut(16 * WAYS);
        for p in &mut quads {
            let x: [[u32; 4]; WAYS] = std::array::from_fn(|i| load(&p[16 * i..]));
            let y = self.decrypt_words(x);
            for (i, w) in y.into_iter().enumerate() {
                store(&mut p[16 * i..], w);
            }
        }
        for b in quads.into_remainder().chunks_exact_mut(16) {
            let [y] = self.decrypt_words([load(b)]);
            store(b, y);
        }
    }
}

impl Drop for TwofishKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.t.as_flattened_mut());
        zeroize::Zeroize::zeroize(&mut self.k);
        zeroize::Zeroize::zeroize(self.sb.as_flattened_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};

    #[test]
    fn equals_rustcrypto() {
        for len in [16, 24, 32] {
            let key: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(59) ^ 0xa7).collect();
            let ours = TwofishKey::new(&key);
            let theirs = twofish::Twofish::new_from_slice(&key).unwrap();
            let plain: Vec<u8> = (0..80u8).map(|i| i.wrapping_mul(113)).collect();
            let (mut a, mut b) = (plain.clone(), plain.clone());
            ours.encrypt_blocks(&mut a);
            for blk in b.chunks_exact_mut(16) {
                theirs.encrypt_block(GenericArray::from_mut_slice(blk));
            }
            assert_eq!(a, b, "key of {len} bytes");
            ours.decrypt_blocks(&mut a);
            assert_eq!(a, plain);
        }
    }

    #[test]
    fn q_and_gf_helpers() {
        // Byte 0 of q0 and q1 from the Twofish paper's tables.
        assert_eq!((q(0, 0), q(1, 0)), (0xa9, 0x75));
        assert_eq!(gf_mul(0x02, 0x80, MDS_POLY), 0x69);
        for i in 0..16 {
            assert_eq!(ct_lookup(&QBOX[0][0], i), QBOX[0][0][i as usize]);
        }
    }
}
