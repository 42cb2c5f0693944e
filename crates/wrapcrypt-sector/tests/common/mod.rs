//! Helpers shared by the integration tests.
#![allow(dead_code)]

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::SectorCipher;
use wrapcrypt_sector::{Backend, CipherSpec, SoftCipher, XtsPath};

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

/// Builds a cipher whose AES-XTS runs on `path`, checking that it does.
pub fn cipher_on(spec: &str, key: &[u8], sector_size: usize, path: XtsPath) -> SoftCipher {
    let parsed = CipherSpec::parse(spec).unwrap();
    let c = SoftCipher::with_xts_path(&parsed, &SecretBytes::copy_from(key), sector_size, path)
        .unwrap();
    if spec.starts_with("aes-xts") {
        assert_eq!(
            c.xts_path(),
            Some(path),
            "{spec} runs on the path asked for"
        );
    }
    c
}

/// Every XTS path this CPU runs, slowest (portable) first.
pub fn paths() -> Vec<XtsPath> {
    let p = XtsPath::available_paths();
    assert_eq!(p[0], XtsPath::Portable);
    p
}

/// Encrypts and decrypts `sectors` sectors and one odd unit of `blocks`
/// blocks on `fast` and `slow`, and asserts equal bytes both ways.
pub fn compare(
    what: &str,
    fast: &wrapcrypt_sector::SoftCipher,
    slow: &wrapcrypt_sector::SoftCipher,
    ss: usize,
    sectors: usize,
    blocks: usize,
) {
    let data = random(sectors * ss);
    let s = random_u64();
    let (mut a, mut b) = (data.clone(), data.clone());
    fast.encrypt(s, &mut a).unwrap();
    slow.encrypt(s, &mut b).unwrap();
    assert!(a == b, "{what} ss {ss} n {sectors}: encrypt differs");
    fast.decrypt(s, &mut a).unwrap();
    slow.decrypt(s, &mut b).unwrap();
    assert!(
        a == data && b == data,
        "{what} ss {ss} n {sectors}: decrypt differs"
    );

    let unit = random(blocks * 16);
    let (mut a, mut b) = (unit.clone(), unit.clone());
    fast.encrypt_unit(s, &mut a).unwrap();
    slow.encrypt_unit(s, &mut b).unwrap();
    assert!(a == b, "{what}: unit of {blocks} blocks differs");
    fast.decrypt_unit(s, &mut a).unwrap();
    slow.decrypt_unit(s, &mut b).unwrap();
    assert!(
        a == unit && b == unit,
        "{what}: unit of {blocks} blocks does not decrypt"
    );
}
