//! A 16-byte block as four little-endian `u32` words, the form Serpent and
//! Twofish compute on.

/// The four little-endian words of a 16-byte block.
#[inline(always)]
pub(crate) fn load(b: &[u8]) -> [u32; 4] {
    let w = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    [w(0), w(1), w(2), w(3)]
}

/// Writes four words back as a little-endian 16-byte block.
#[inline(always)]
pub(crate) fn store(b: &mut [u8], x: [u32; 4]) {
    for (c, w) in b.chunks_exact_mut(4).zip(x) {
        c.copy_from_slice(&w.to_le_bytes());
    }
}
