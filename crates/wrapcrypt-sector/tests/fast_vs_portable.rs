//! The AES-NI engine against the portable RustCrypto path on many random
//! shapes: sector sizes, batch lengths (1..=40 sectors, so batches of 8
//! sectors split unevenly), unit lengths of any block count (remainders of
//! the 8-block pipeline), key sizes and modes.

mod common;

use common::{cipher, random, random_u64};
use wrapcrypt_sector::{aes_ni_available, Backend, SectorCipher};

const SPECS: [(&str, &[usize]); 7] = [
    ("aes-xts-plain64", &[32, 48, 64]),
    ("aes-xts-essiv:sha256", &[64]),
    ("aes-cbc-essiv:sha256", &[16, 24, 32]),
    ("aes-cbc-plain64", &[32]),
    ("aes-ecb", &[16, 32]),
    ("aes-lrw-benbi", &[32, 48]),
    ("aes-cbc-benbi", &[32]),
];

#[test]
fn fast_path_equals_portable_path() {
    if !aes_ni_available() {
        eprintln!("no AES-NI on this CPU: both paths are the portable one, nothing to compare");
    }
    let mut rounds = 0;
    for (spec, keys) in SPECS {
        for &klen in keys {
            for _ in 0..12 {
                let ss = 512 << (random(1)[0] % 4);
                let sectors = 1 + random(1)[0] as usize % 40;
                let key = random(klen);
                let fast = cipher(spec, &key, ss, Backend::Auto);
                let slow = cipher(spec, &key, ss, Backend::Portable);
                assert_eq!(fast.accelerated(), aes_ni_available());
                assert!(!slow.accelerated());
                let data = random(sectors * ss);
                let s = random_u64();
                let (mut a, mut b) = (data.clone(), data.clone());
                fast.encrypt(s, &mut a).unwrap();
                slow.encrypt(s, &mut b).unwrap();
                assert!(a == b, "{spec} {klen} ss {ss} n {sectors}: encrypt differs");
                fast.decrypt(s, &mut a).unwrap();
                slow.decrypt(s, &mut b).unwrap();
                assert!(a == data && b == data, "{spec}: decrypt differs");

                let blocks = 1 + random(1)[0] as usize % 37;
                let unit = random(blocks * 16);
                let (mut a, mut b) = (unit.clone(), unit.clone());
                fast.encrypt_unit(s, &mut a).unwrap();
                slow.encrypt_unit(s, &mut b).unwrap();
                assert!(a == b, "{spec}: unit of {blocks} blocks differs");
                fast.decrypt_unit(s, &mut a).unwrap();
                assert!(a == unit);
                rounds += 1;
            }
        }
    }
    assert_eq!(rounds, 12 * 13);
}
