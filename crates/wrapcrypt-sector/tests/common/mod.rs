//! Helpers shared by the integration tests.
#![allow(dead_code)]

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{Backend, CipherSpec, SoftCipher};

/// Random bytes from the kernel (test data and test keys).
pub fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    wrapcrypt_secret::fill_random(&mut v).unwrap();
    v
}

/// A random u64.
pub fn random_u64() -> u64 {
    u64::from_le_bytes(random(8).try_into().unwrap())
}

/// Builds a cipher from a spec string and raw key bytes.
pub fn cipher(spec: &str, key: &[u8], sector_size: usize, backend: Backend) -> SoftCipher {
    let spec = CipherSpec::parse(spec).unwrap();
    SoftCipher::with_backend(&spec, &SecretBytes::copy_from(key), sector_size, backend).unwrap()
}

/// Decodes hex that may contain whitespace.
pub fn unhex(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(clean).unwrap()
}
