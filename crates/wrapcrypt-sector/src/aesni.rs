//! AES with x86_64 AES-NI: own key expansion into locked memory and
//! 8-block pipelines for XTS, ECB and CBC decryption.
//!
//! The same code is compiled twice: with SSE encodings and with VEX (AVX)
//! encodings, which saves register copies; the CPU picks at key set-up.

use core::arch::x86_64::*;

use wrapcrypt_secret::{SecretBox, Zeroable};

use crate::locked::burn_stack;
use crate::path::XtsPath;
use crate::BLOCK;

/// Expanded AES key: encryption round keys and the equivalent-inverse
/// decryption round keys (FIPS-197 §5.3.5), as little-endian words.
#[repr(C, align(16))]
pub(crate) struct AesSchedule {
    enc: [[u32; 4]; 15],
    dec: [[u32; 4]; 15],
    rounds: usize,
}

// SAFETY: integers only; all-zero is a valid (if useless) schedule.
unsafe impl Zeroable for AesSchedule {}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isa {
    Sse,
    Avx,
}

/// An AES key for the AES-NI engine. Exists only on CPUs with AES-NI.
pub(crate) struct AesKey {
    sched: SecretBox<AesSchedule>,
    isa: Isa,
    /// AesNi, Vaes256 or Vaes512, and never above what the CPU has.
    xts: XtsPath,
}

/// Whether this CPU can run the AES-NI engine.
pub(crate) fn available() -> bool {
    crate::path::aes_ni()
}

impl AesKey {
    /// Expands `key` (16, 24 or 32 bytes) in place for XTS on `xts` (or the
    /// fastest path below it that this CPU has); `None` without AES-NI, for
    /// the portable path or for another key length.
    pub(crate) fn new(key: &[u8], xts: XtsPath) -> Option<AesKey> {
        let xts = crate::path::clamp(xts);
        if xts < XtsPath::AesNi || !available() || !matches!(key.len(), 16 | 24 | 32) {
            return None;
        }
        let isa = if std::arch::is_x86_feature_detected!("avx") {
            Isa::Avx
        } else {
            Isa::Sse
        };
        // SAFETY: AES-NI and SSE2 were detected above.
        let sched = SecretBox::init_with_mut(|s: &mut AesSchedule| unsafe { expand(key, s) });
        burn_stack();
        Some(AesKey { sched, isa, xts })
    }

    /// The XTS implementation this key runs.
    pub(crate) fn xts_path(&self) -> XtsPath {
        self.xts
    }

    fn s(&self) -> &AesSchedule {
        self.sched.expose_secret()
    }

    pub(crate) fn ecb_encrypt(&self, data: &mut [u8]) {
        // SAFETY: AesKey exists only where `available()` held (and AVX for Isa::Avx).
        unsafe {
            match self.isa {
                Isa::Avx => avx::ecb_encrypt(self.s(), data),
                Isa::Sse => sse::ecb_encrypt(self.s(), data),
            }
        }
    }

    pub(crate) fn ecb_decrypt(&self, data: &mut [u8]) {
        // SAFETY: as in ecb_encrypt.
        unsafe {
            match self.isa {
                Isa::Avx => avx::ecb_decrypt(self.s(), data),
                Isa::Sse => sse::ecb_decrypt(self.s(), data),
            }
        }
    }

    pub(crate) fn cbc_encrypt(&self, iv: &[u8; BLOCK], data: &mut [u8]) {
        // SAFETY: as in ecb_encrypt.
        unsafe {
            match self.isa {
                Isa::Avx => avx::cbc_encrypt(self.s(), iv, data),
                Isa::Sse => sse::cbc_encrypt(self.s(), iv, data),
            }
        }
    }

    pub(crate) fn cbc_decrypt(&self, iv: &[u8; BLOCK], data: &mut [u8]) {
        // SAFETY: as in ecb_encrypt.
        unsafe {
            match self.isa {
                Isa::Avx => avx::cbc_decrypt(self.s(), iv, data),
                Isa::Sse => sse::cbc_decrypt(self.s(), iv, data),
            }
        }
    }

    pub(crate) fn xts_encrypt(&self, tweak: &[u8; BLOCK], data: &mut [u8]) {
        let s = self.s();
        // SAFETY: as in ecb_encrypt; `xts` was clamped to the CPU's best
        // path in `new`, so a wide path runs only where its features exist.
        unsafe {
            match (self.xts, self.isa) {
                (XtsPath::Vaes512, _) => crate::vaes512::xts_encrypt(&s.enc, s.rounds, tweak, data),
                (XtsPath::Vaes256, _) => crate::vaes256::xts_encrypt(&s.enc, s.rounds, tweak, data),
                (_, Isa::Avx) => avx::xts_encrypt(s, tweak, data),
                (_, Isa::Sse) => sse::xts_encrypt(s, tweak, data),
            }
        }
    }

    pub(crate) fn xts_decrypt(&self, tweak: &[u8; BLOCK], data: &mut [u8]) {
        let s = self.s();
        // SAFETY: as in xts_encrypt.
        unsafe {
            match (self.xts, self.isa) {
                (XtsPath::Vaes512, _) => crate::vaes512::xts_decrypt(&s.dec, s.rounds, tweak, data),
                (XtsPath::Vaes256, _) => crate::vaes256::xts_decrypt(&s.dec, s.rounds, tweak, data),
                (_, Isa::Avx) => avx::xts_decrypt(s, tweak, data),
                (_, Isa::Sse) => sse::xts_decrypt(s, tweak, data),
            }
        }
    }
}

/// SubWord of one 32-bit word through AESKEYGENASSIST (constant time, no tables).
#[target_feature(enable = "aes,sse2")]
unsafe fn sub_word(w: u32) -> u32 {
    // AESKEYGENASSIST puts SubWord(dword 1) in dword 0.
    let r = _mm_aeskeygenassist_si128::<0>(_mm_set_epi32(0, 0, w as i32, 0));
    _mm_cvtsi128_si32(r) as u32
}

/// FIPS-197 key expansion written straight into the locked schedule.
#[target_feature(enable = "aes,sse2")]
unsafe fn expand(key: &[u8], s: &mut AesSchedule) {
    let nk = key.len() / 4;
    let nr = nk + 6;
    s.rounds = nr;
    let total = 4 * (nr + 1);
    for (i, w) in key.chunks_exact(4).enumerate() {
        s.enc[i / 4][i % 4] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    }
    let mut rcon: u32 = 1;
    for i in nk..total {
        let mut t = s.enc[(i - 1) / 4][(i - 1) % 4];
        if i % nk == 0 {
            // RotWord on a little-endian word is a right rotation by 8.
            t = sub_word(t).rotate_right(8) ^ rcon;
            rcon = (rcon << 1) ^ (if rcon & 0x80 != 0 { 0x11b } else { 0 });
        } else if nk > 6 && i % nk == 4 {
            t = sub_word(t);
        }
        s.enc[i / 4][i % 4] = s.enc[(i - nk) / 4][(i - nk) % 4] ^ t;
    }
    s.dec[0] = s.enc[nr];
    for r in 1..nr {
        let k = _mm_load_si128(s.enc[nr - r].as_ptr().cast());
        _mm_store_si128(s.dec[r].as_mut_ptr().cast(), _mm_aesimc_si128(k));
    }
    s.dec[nr] = s.enc[0];
}

macro_rules! aes_engine {
    ($name:ident, $feat:literal) => {
        mod $name {
            use super::*;

            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn rk(k: &[[u32; 4]; 15], r: usize) -> __m128i {
                _mm_load_si128(k[r].as_ptr().cast())
            }

            /// Multiplies an XTS tweak by x (little-endian GF(2^128)).
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn mul_x(t: __m128i) -> __m128i {
                // Sign of dword 3 -> reduction 0x87 into byte 0; sign of
                // dword 1 -> carry into bit 64.
                let m = _mm_shuffle_epi32::<0x13>(_mm_srai_epi32::<31>(t));
                let m = _mm_and_si128(m, _mm_set_epi32(0, 1, 0, 0x87));
                _mm_xor_si128(_mm_add_epi64(t, t), m)
            }

            /// Multiplies an XTS tweak by x^8: a byte shift plus a carry-less
            /// reduction of the byte shifted out. Eight of these run in
            /// parallel and keep the AES port free (PCLMULQDQ and byte shifts
            /// issue elsewhere), where the x-by-x chain is serial.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn mul_x8(t: __m128i) -> __m128i {
                let top = _mm_srli_si128::<15>(t);
                let red = _mm_clmulepi64_si128::<0x00>(top, _mm_cvtsi32_si128(0x87));
                _mm_xor_si128(_mm_slli_si128::<1>(t), red)
            }

            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn first_tweaks(t: __m128i) -> [__m128i; 8] {
                let mut tw = [t; 8];
                for i in 1..8 {
                    tw[i] = mul_x(tw[i - 1]);
                }
                tw
            }

            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn enc1(s: &AesSchedule, b: __m128i) -> __m128i {
                let nr = s.rounds.min(14);
                let mut b = _mm_xor_si128(b, rk(&s.enc, 0));
                for r in 1..nr {
                    b = _mm_aesenc_si128(b, rk(&s.enc, r));
                }
                _mm_aesenclast_si128(b, rk(&s.enc, nr))
            }

            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn dec1(s: &AesSchedule, b: __m128i) -> __m128i {
                let nr = s.rounds.min(14);
                let mut b = _mm_xor_si128(b, rk(&s.dec, 0));
                for r in 1..nr {
                    b = _mm_aesdec_si128(b, rk(&s.dec, r));
                }
                _mm_aesdeclast_si128(b, rk(&s.dec, nr))
            }

            /// Eight blocks through all encryption rounds; `first` and `last`
            /// are XORed into round key 0 and the last round key per block.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn enc8(s: &AesSchedule, b: &mut [__m128i; 8], last: &[__m128i; 8]) {
                let nr = s.rounds.min(14);
                for r in 1..nr {
                    let k = rk(&s.enc, r);
                    b[0] = _mm_aesenc_si128(b[0], k);
                    b[1] = _mm_aesenc_si128(b[1], k);
                    b[2] = _mm_aesenc_si128(b[2], k);
                    b[3] = _mm_aesenc_si128(b[3], k);
                    b[4] = _mm_aesenc_si128(b[4], k);
                    b[5] = _mm_aesenc_si128(b[5], k);
                    b[6] = _mm_aesenc_si128(b[6], k);
                    b[7] = _mm_aesenc_si128(b[7], k);
                }
                for i in 0..8 {
                    b[i] = _mm_aesenclast_si128(b[i], last[i]);
                }
            }

            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn dec8(s: &AesSchedule, b: &mut [__m128i; 8], last: &[__m128i; 8]) {
                let nr = s.rounds.min(14);
                for r in 1..nr {
                    let k = rk(&s.dec, r);
                    b[0] = _mm_aesdec_si128(b[0], k);
                    b[1] = _mm_aesdec_si128(b[1], k);
                    b[2] = _mm_aesdec_si128(b[2], k);
                    b[3] = _mm_aesdec_si128(b[3], k);
                    b[4] = _mm_aesdec_si128(b[4], k);
                    b[5] = _mm_aesdec_si128(b[5], k);
                    b[6] = _mm_aesdec_si128(b[6], k);
                    b[7] = _mm_aesdec_si128(b[7], k);
                }
                for i in 0..8 {
                    b[i] = _mm_aesdeclast_si128(b[i], last[i]);
                }
            }

            #[target_feature(enable = $feat)]
            pub(super) unsafe fn xts_encrypt(
                s: &AesSchedule,
                tweak: &[u8; BLOCK],
                data: &mut [u8],
            ) {
                xts::<false>(s, tweak, data)
            }

            #[target_feature(enable = $feat)]
            pub(super) unsafe fn xts_decrypt(
                s: &AesSchedule,
                tweak: &[u8; BLOCK],
                data: &mut [u8],
            ) {
                xts::<true>(s, tweak, data)
            }

            /// XTS in either direction: the structure is the same, only the
            /// schedule and the round instructions differ (`DECRYPT` is a
            /// constant, so each instance is straight-line code).
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn xts<const DECRYPT: bool>(
                s: &AesSchedule,
                tweak: &[u8; BLOCK],
                data: &mut [u8],
            ) {
                let keys = if DECRYPT { &s.dec } else { &s.enc };
                let nr = s.rounds.min(14);
                let k0 = rk(keys, 0);
                let kl = rk(keys, nr);
                let mut tw = first_tweaks(_mm_loadu_si128(tweak.as_ptr().cast()));
                let mut chunks = data.chunks_exact_mut(8 * BLOCK);
                for c in &mut chunks {
                    let p = c.as_mut_ptr() as *mut __m128i;
                    let mut b = [_mm_setzero_si128(); 8];
                    let mut last = [_mm_setzero_si128(); 8];
                    for i in 0..8 {
                        b[i] = _mm_xor_si128(_mm_loadu_si128(p.add(i)), _mm_xor_si128(tw[i], k0));
                        // The output whitening rides on the last round's key XOR.
                        last[i] = _mm_xor_si128(tw[i], kl);
                        tw[i] = mul_x8(tw[i]);
                    }
                    if DECRYPT {
                        dec8(s, &mut b, &last);
                    } else {
                        enc8(s, &mut b, &last);
                    }
                    for i in 0..8 {
                        _mm_storeu_si128(p.add(i), b[i]);
                    }
                }
                let mut t = tw[0];
                for c in chunks.into_remainder().chunks_exact_mut(BLOCK) {
                    let p = c.as_mut_ptr() as *mut __m128i;
                    let x = _mm_xor_si128(_mm_loadu_si128(p), t);
                    let b = if DECRYPT { dec1(s, x) } else { enc1(s, x) };
                    _mm_storeu_si128(p, _mm_xor_si128(b, t));
                    t = mul_x(t);
                }
            }

            #[target_feature(enable = $feat)]
            pub(super) unsafe fn ecb_encrypt(s: &AesSchedule, data: &mut [u8]) {
                let nr = s.rounds.min(14);
                let k0 = rk(&s.enc, 0);
                let last = [rk(&s.enc, nr); 8];
                let mut chunks = data.chunks_exact_mut(8 * BLOCK);
                for c in &mut chunks {
                    let p = c.as_mut_ptr() as *mut __m128i;
                    let mut b = [_mm_setzero_si128(); 8];
                    for i in 0..8 {
                        b[i] = _mm_xor_si128(_mm_loadu_si128(p.add(i)), k0);
                    }
                    enc8(s, &mut b, &last);
                    for i in 0..8 {
                        _mm_storeu_si128(p.add(i), b[i]);
                    }
                }
                for c in chunks.into_remainder().chunks_exact_mut(BLOCK) {
                    let p = c.as_mut_ptr() as *mut __m128i;
                    _mm_storeu_si128(p, enc1(s, _mm_loadu_si128(p)));
                }
            }

            #[target_feature(enable = $feat)]
            pub(super) unsafe fn ecb_decrypt(s: &AesSchedule, data: &mut [u8]) {
                let nr = s.rounds.min(14);
                let k0 = rk(&s.dec, 0);
                let last = [rk(&s.dec, nr); 8];
                let mut chunks = data.chunks_exact_mut(8 * BLOCK);
                for c in &mut chunks {
                    let p = c.as_mut_ptr() as *mut __m128i;
                    let mut b = [_mm_setzero_si128(); 8];
                    for i in 0..8 {
                        b[i] = _mm_xor_si128(_mm_loadu_si128(p.add(i)), k0);
                    }
                    dec8(s, &mut b, &last);
                    for i in 0..8 {
                        _mm_storeu_si128(p.add(i), b[i]);
                    }
                }
                for c in chunks.into_remainder().chunks_exact_mut(BLOCK) {
                    let p = c.as_mut_ptr() as *mut __m128i;
                    _mm_storeu_si128(p, dec1(s, _mm_loadu_si128(p)));
                }
            }

            #[target_feature(enable = $feat)]
            pub(super) unsafe fn cbc_encrypt(s: &AesSchedule, iv: &[u8; BLOCK], data: &mut [u8]) {
                // Inherently serial: each block waits for the previous one.
                let mut prev = _mm_loadu_si128(iv.as_ptr().cast());
                for c in data.chunks_exact_mut(BLOCK) {
                    let p = c.as_mut_ptr() as *mut __m128i;
                    prev = enc1(s, _mm_xor_si128(_mm_loadu_si128(p), prev));
                    _mm_storeu_si128(p, prev);
                }
            }

            #[target_feature(enable = $feat)]
            pub(super) unsafe fn cbc_decrypt(s: &AesSchedule, iv: &[u8; BLOCK], data: &mut [u8]) {
                let nr = s.rounds.min(14);
                let k0 = rk(&s.dec, 0);
                let kl = rk(&s.dec, nr);
                let mut prev = _mm_loadu_si128(iv.as_ptr().cast());
                let mut chunks = data.chunks_exact_mut(8 * BLOCK);
                for c in &mut chunks {
                    let p = c.as_mut_ptr() as *mut __m128i;
                    let mut ct = [_mm_setzero_si128(); 8];
                    let mut b = [_mm_setzero_si128(); 8];
                    let mut last = [_mm_setzero_si128(); 8];
                    for i in 0..8 {
                        ct[i] = _mm_loadu_si128(p.add(i));
                        b[i] = _mm_xor_si128(ct[i], k0);
                    }
                    // P_i = D(C_i) ^ C_(i-1), folded into the last round key.
                    last[0] = _mm_xor_si128(kl, prev);
                    for i in 1..8 {
                        last[i] = _mm_xor_si128(kl, ct[i - 1]);
                    }
                    prev = ct[7];
                    dec8(s, &mut b, &last);
                    for i in 0..8 {
                        _mm_storeu_si128(p.add(i), b[i]);
                    }
                }
                for c in chunks.into_remainder().chunks_exact_mut(BLOCK) {
                    let p = c.as_mut_ptr() as *mut __m128i;
                    let ct = _mm_loadu_si128(p);
                    _mm_storeu_si128(p, _mm_xor_si128(dec1(s, ct), prev));
                    prev = ct;
                }
            }
        }
    };
}

aes_engine!(sse, "aes,pclmulqdq,sse2,ssse3,sse4.1");
aes_engine!(avx, "aes,pclmulqdq,sse2,ssse3,sse4.1,avx");

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};

    #[test]
    fn fips197_appendix_c() {
        // FIPS-197 Appendix C: plaintext 00112233..ff, key 000102..
        if !available() {
            eprintln!("skipping: no AES-NI on this CPU");
            return;
        }
        let pt: Vec<u8> = (0..16u8).map(|i| i * 0x11).collect();
        let key: Vec<u8> = (0..32u8).collect();
        for (klen, ct) in [
            (16, "69c4e0d86a7b0430d8cdb78070b4c55a"),
            (24, "dda97ca4864cdfe06eaf70a0ec0d7191"),
            (32, "8ea2b7ca516745bfeafc49904b496089"),
        ] {
            let k = AesKey::new(&key[..klen], XtsPath::AesNi).unwrap();
            let mut b = pt.clone();
            k.ecb_encrypt(&mut b);
            assert_eq!(hex::encode(&b), ct, "AES-{}", klen * 8);
            k.ecb_decrypt(&mut b);
            assert_eq!(b, pt);
        }
    }

    #[test]
    fn matches_rustcrypto_on_random_keys() {
        if !available() {
            eprintln!("skipping: no AES-NI on this CPU");
            return;
        }
        let mut seed = [0u8; 32 + 16 * 19];
        wrapcrypt_secret::fill_random(&mut seed).unwrap();
        for klen in [16, 24, 32] {
            let k = AesKey::new(&seed[..klen], XtsPath::AesNi).unwrap();
            let mut ours = seed[32..].to_vec();
            k.ecb_encrypt(&mut ours);
            for (i, blk) in seed[32..].chunks(16).enumerate() {
                let mut b = GenericArray::clone_from_slice(blk);
                match klen {
                    16 => aes::Aes128::new_from_slice(&seed[..16])
                        .unwrap()
                        .encrypt_block(&mut b),
                    24 => aes::Aes192::new_from_slice(&seed[..24])
                        .unwrap()
                        .encrypt_block(&mut b),
                    _ => aes::Aes256::new_from_slice(&seed[..32])
                        .unwrap()
                        .encrypt_block(&mut b),
                }
                assert_eq!(&ours[i * 16..i * 16 + 16], b.as_slice());
            }
            k.ecb_decrypt(&mut ours);
            assert_eq!(ours, &seed[32..]);
        }
    }
}
