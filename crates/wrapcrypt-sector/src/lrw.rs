//! LRW tweak arithmetic as the Linux `lrw` template does it: the tweak key
//! and the IV are big-endian 128-bit polynomials ("bbe"), T = K2 * I, and
//! consecutive blocks use I + 1.

use wrapcrypt_secret::SecretBox;

/// Multiplication by x modulo x^128 + x^7 + x^2 + x + 1, big-endian form.
fn mul_x(a: u128) -> u128 {
    (a << 1) ^ ((a >> 127).wrapping_neg() & 0x87)
}

/// Constant-time carry-less product a * b in GF(2^128).
pub(crate) fn gf_mul(mut a: u128, b: u128) -> u128 {
    let mut r = 0u128;
    for i in 0..128 {
        r ^= a & ((b >> i) & 1).wrapping_neg();
        a = mul_x(a);
    }
    r
}

/// Per-key table: `inc[k] = K2 * (2^(k+1) - 1)`, the tweak change when an
/// index with k trailing one bits is incremented.
pub(crate) struct LrwKey {
    inc: SecretBox<[u128; 129]>,
}

impl LrwKey {
    /// `k2` is the 16-byte tweak key (the last 16 bytes of the volume key).
    pub(crate) fn new(k2: &[u8]) -> LrwKey {
        let inc = SecretBox::init_with_mut(|t: &mut [u128; 129]| {
            // Slot 128 holds K2 itself, kept only for the first-tweak product.
            t[128] = u128::from_be_bytes(k2.try_into().expect("16-byte tweak key"));
            let mut ones = 0u128;
            for k in 0..128 {
                ones |= 1 << k;
                t[k] = gf_mul(t[128], ones);
            }
        });
        crate::locked::burn_stack();
        LrwKey { inc }
    }

    /// Tweak of the block with index `i`.
    pub(crate) fn first(&self, i: u128) -> u128 {
        gf_mul(self.inc.expose_secret()[128], i)
    }

    /// Tweak of block `i + 1` given the tweak `t` of block `i`.
    pub(crate) fn next(&self, t: u128, i: u128) -> u128 {
        t ^ self.inc.expose_secret()[(i.trailing_ones() as usize).min(127)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_match_products() {
        let k2 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        let key = LrwKey::new(&k2.to_be_bytes());
        for start in [0u128, 1, 7, 0xff, u64::MAX as u128, u128::MAX - 2] {
            let mut t = key.first(start);
            let mut i = start;
            for _ in 0..5 {
                assert_eq!(t, gf_mul(k2, i));
                t = key.next(t, i);
                i = i.wrapping_add(1);
            }
        }
    }
}
