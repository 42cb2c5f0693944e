//! Cross-checks against Python `cryptography` (OpenSSL's AES-XTS and AES-CBC)
//! with random keys, data and sector numbers generated at test time. The IVs
//! are computed by tests/py/sector_oracle.py from dm-crypt's definitions
//! (XTS tweak = little-endian 16-byte sector number for plain64).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{cipher, cipher_on, paths, random, random_u64};
use wrapcrypt_sector::{Backend, SectorCipher};

struct Case {
    spec: &'static str,
    key: Vec<u8>,
    sector_size: usize,
    iv_sector: u64,
    data: Vec<u8>,
}

/// Runs all cases through one Python process (keys go through stdin).
fn oracle(cases: &[Case]) -> Vec<Vec<u8>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/sector_oracle.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with the cryptography package is needed for this test");
    let mut stdin = child.stdin.take().unwrap();
    let input: String = cases
        .iter()
        .map(|c| {
            format!(
                "{{\"spec\":\"{}\",\"key\":\"{}\",\"sector_size\":{},\"iv_sector\":{},\"data\":\"{}\"}}\n",
                c.spec,
                hex::encode(&c.key),
                c.sector_size,
                c.iv_sector,
                hex::encode(&c.data)
            )
        })
        .collect();
    let writer = std::thread::spawn(move || {
        stdin.write_all(input.as_bytes()).unwrap();
    });
    let out: Vec<Vec<u8>> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| hex::decode(l.unwrap().trim()).unwrap())
        .collect();
    writer.join().unwrap();
    assert!(child.wait().unwrap().success(), "python oracle failed");
    assert_eq!(out.len(), cases.len(), "python oracle answered every case");
    out
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let specs: &[(&str, &[usize])] = &[
        ("aes-xts-plain64", &[32, 64]),
        ("aes-xts-plain", &[32, 64]),
        ("aes-xts-plain64be", &[64]),
        ("aes-cbc-essiv:sha256", &[16, 32]),
        ("aes-cbc-plain64", &[16, 24, 32]),
        ("aes-cbc-plain", &[32]),
        ("aes-cbc-null", &[32]),
    ];
    for &(spec, keys) in specs {
        for &klen in keys {
            for sector_size in [512usize, 4096] {
                for iv_sector in [0u64, random_u64() >> 20, u64::MAX - 7, 0xffff_fff0] {
                    let sectors = 1 + (random(1)[0] as usize % 5);
                    v.push(Case {
                        spec,
                        key: random(klen),
                        sector_size,
                        iv_sector,
                        data: random(sectors * sector_size),
                    });
                }
            }
        }
    }
    v
}

/// AES-XTS cases for every path: both key sizes OpenSSL's XTS takes, every
/// sector size, and batch lengths around the engine's 8-sector batches.
fn xts_cases() -> Vec<Case> {
    let mut v = Vec::new();
    for klen in [32, 64] {
        for sector_size in [512usize, 1024, 2048, 4096] {
            for sectors in [1usize, 2, 3, 7, 8, 9, 17] {
                v.push(Case {
                    spec: "aes-xts-plain64",
                    key: random(klen),
                    sector_size,
                    iv_sector: random_u64() >> (random(1)[0] % 64),
                    data: random(sectors * sector_size),
                });
            }
        }
    }
    v
}

/// Checks `cases` against OpenSSL's answers on the engine `make` builds.
fn check(
    cases: &[Case],
    expected: &[Vec<u8>],
    what: &str,
    make: impl Fn(&Case) -> wrapcrypt_sector::SoftCipher,
) {
    for (c, want) in cases.iter().zip(expected) {
        let e = make(c);
        let mut buf = c.data.clone();
        e.encrypt(c.iv_sector, &mut buf).unwrap();
        assert!(
            buf == *want,
            "{} key {} bits, {} sectors of {} at {}: encryption differs from OpenSSL ({what})",
            c.spec,
            c.key.len() * 8,
            c.data.len() / c.sector_size,
            c.sector_size,
            c.iv_sector
        );
        // Decrypt what OpenSSL wrote.
        let mut back = want.clone();
        e.decrypt(c.iv_sector, &mut back).unwrap();
        assert!(
            back == c.data,
            "{}: decryption of OpenSSL output differs ({what})",
            c.spec
        );
    }
}

#[test]
fn encrypt_and_decrypt_match_python_cryptography() {
    let cases = cases();
    let expected = oracle(&cases);
    for backend in [Backend::Auto, Backend::Portable] {
        check(&cases, &expected, &format!("{backend:?}"), |c| {
            cipher(c.spec, &c.key, c.sector_size, backend)
        });
    }
}

#[test]
fn every_xts_path_matches_python_cryptography() {
    let cases = xts_cases();
    let expected = oracle(&cases);
    for path in paths() {
        check(&cases, &expected, path.name(), |c| {
            cipher_on(c.spec, &c.key, c.sector_size, path)
        });
    }
}

#[test]
fn split_calls_equal_one_call() {
    // Encrypting sector by sector (advancing iv_sector by sector_size/512)
    // must equal one batched call: the batching is invisible on disk.
    for path in paths() {
        for (spec, klen) in [("aes-xts-plain64", 64), ("aes-cbc-essiv:sha256", 32)] {
            for ss in [512usize, 1024, 2048, 4096] {
                let key = random(klen);
                let e = cipher_on(spec, &key, ss, path);
                let data = random(ss * 19);
                let start = random_u64() >> 8;
                let mut whole = data.clone();
                e.encrypt(start, &mut whole).unwrap();
                let mut parts = data.clone();
                for (i, s) in parts.chunks_mut(ss).enumerate() {
                    e.encrypt(start + (i * ss / 512) as u64, s).unwrap();
                }
                assert_eq!(whole, parts, "{spec} sector size {ss} {path:?}");
            }
        }
    }
}
