//! Every Serpent and Twofish implementation against the portable RustCrypto
//! one, on random keys and data: 128/192/256-bit block-cipher keys (XTS 256
//! and 512 bits), XTS, CBC, ECB and LRW, batches of 1, 2, 7, 8, 9 and 17
//! blocks, and units of 25 and 49 (remainders of the 8-, 16- and 32-block
//! passes) and 512- to 4096-byte sectors.

mod common;

use common::{cipher_on, compare, random};
use wrapcrypt_sector::XtsPath;

const SPECS: [(&str, &[usize]); 6] = [
    ("xts-plain64", &[32, 48, 64]),
    ("cbc-plain64", &[16, 24, 32]),
    ("cbc-essiv:sha256", &[32]),
    ("ecb", &[16, 24, 32]),
    ("lrw-benbi", &[32, 40, 48]),
    ("xts-essiv:sha256", &[64]),
];

/// The engine each XTS path selects for `cipher` on this CPU: the path at
/// the top of what the CPU has sets no limit; lower ones cap the vector
/// unit (aesni: scalar, vaes256: AVX2, vaes512: AVX-512).
fn fast_paths(cipher: &str) -> Vec<(XtsPath, &'static str)> {
    use std::arch::is_x86_feature_detected as has;
    let paths = XtsPath::available_paths();
    let top = *paths.last().unwrap();
    paths
        .into_iter()
        .filter(|&p| p != XtsPath::Portable || top == XtsPath::Portable)
        .map(|p| {
            let limit = if p >= top { XtsPath::Vaes512 } else { p };
            let name = match cipher {
                "serpent" if limit >= XtsPath::Vaes512 && has!("avx512f") && has!("avx2") => {
                    "avx512"
                }
                "serpent" if limit >= XtsPath::Vaes256 && has!("avx2") => "avx2",
                "serpent" => "bitsliced",
                _ if limit >= XtsPath::Vaes512
                    && has!("avx512f")
                    && has!("avx512bw")
                    && has!("avx512vbmi")
                    && has!("gfni") =>
                {
                    "avx512"
                }
                _ => "tables",
            };
            (p, name)
        })
        .collect()
}

#[test]
fn fast_serpent_and_twofish_equal_rustcrypto() {
    for cipher in ["serpent", "twofish"] {
        for (mode, klens) in SPECS {
            let spec = format!("{cipher}-{mode}");
            for &klen in klens {
                let key = random(klen);
                for ss in [512, 1024, 4096] {
                    // RustCrypto, except on a CPU with no AES-NI, where
                    // `portable` is also the default (the unit tests in
                    // serpent.rs and twofish.rs compare with RustCrypto).
                    let slow = cipher_on(&spec, &key, ss, XtsPath::Portable);
                    for (path, name) in fast_paths(cipher) {
                        let fast = cipher_on(&spec, &key, ss, path);
                        assert_eq!(fast.engine_name(), name, "{spec}");
                        let what = format!("{spec} {}-bit on {name}", klen * 8);
                        for (sectors, blocks) in [
                            (1, 1),
                            (2, 2),
                            (3, 7),
                            (1, 8),
                            (5, 9),
                            (9, 17),
                            (2, 25),
                            (1, 49),
                        ] {
                            compare(&what, &fast, &slow, ss, sectors, blocks);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn serpent_odd_key_lengths_equal_rustcrypto() {
    // The kernel (and this crate) accept any Serpent key of 16..=32 bytes.
    for klen in 16..=32 {
        let key = random(klen);
        let slow = cipher_on("serpent-ecb", &key, 512, XtsPath::Portable);
        for (path, name) in fast_paths("serpent") {
            let fast = cipher_on("serpent-ecb", &key, 512, path);
            compare(
                &format!("serpent-ecb {klen} bytes on {name}"),
                &fast,
                &slow,
                512,
                3,
                17,
            );
        }
    }
}
