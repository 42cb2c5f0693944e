//! Serpent and Twofish against libgcrypt (cryptsetup's gcrypt backend),
//! called from tests/py/gcrypt_oracle.py through ctypes, on random keys,
//! data and sector numbers: XTS (256- and 512-bit keys; 384 for Serpent),
//! CBC-plain64 and ECB, 512- to 4096-byte sectors, on every engine this CPU
//! has. An oracle independent of RustCrypto, whose crates are the reference
//! the other tests compare with.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{cipher_on, random, random_u64};
use wrapcrypt_sector::{SectorCipher, XtsPath};

struct Case {
    spec: String,
    key: Vec<u8>,
    sector_size: usize,
    iv_sector: u64,
    data: Vec<u8>,
}

/// Runs all cases through one Python process; `None` when libgcrypt is missing.
fn oracle(cases: &[Case]) -> Option<Vec<Vec<u8>>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/gcrypt_oracle.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test");
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
        // The oracle may exit early ("skip") and close its stdin.
        let _ = stdin.write_all(input.as_bytes());
    });
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| l.unwrap().trim().to_string())
        .collect();
    writer.join().unwrap();
    assert!(child.wait().unwrap().success(), "gcrypt oracle failed");
    if lines.first().map(String::as_str) == Some("skip") {
        return None;
    }
    assert_eq!(
        lines.len(),
        cases.len(),
        "gcrypt oracle answered every case"
    );
    Some(lines.iter().map(|l| hex::decode(l).unwrap()).collect())
}

#[test]
fn serpent_and_twofish_equal_libgcrypt() {
    let specs: &[(&str, &[usize])] = &[
        ("serpent-xts-plain64", &[32, 48, 64]),
        ("serpent-cbc-plain64", &[16, 24, 32]),
        ("serpent-ecb", &[16, 32]),
        ("twofish-xts-plain64", &[32, 64]),
        ("twofish-cbc-plain64", &[16, 32]),
        ("twofish-ecb", &[16, 32]),
    ];
    let mut cases = Vec::new();
    for &(spec, klens) in specs {
        for &klen in klens {
            for (ss, n) in [(512, 3), (1024, 1), (4096, 2)] {
                cases.push(Case {
                    spec: spec.to_string(),
                    key: random(klen),
                    sector_size: ss,
                    iv_sector: random_u64() >> 8,
                    data: random(ss * n),
                });
            }
        }
    }
    let Some(want) = oracle(&cases) else {
        eprintln!("libgcrypt not found: skipped (install libgcrypt20)");
        return;
    };
    for (c, w) in cases.iter().zip(&want) {
        for path in XtsPath::available_paths() {
            let e = cipher_on(&c.spec, &c.key, c.sector_size, path);
            let mut buf = c.data.clone();
            e.encrypt(c.iv_sector, &mut buf).unwrap();
            assert!(
                &buf == w,
                "{} {}-bit, {}-byte sectors on {} ({}): differs from libgcrypt",
                c.spec,
                c.key.len() * 8,
                c.sector_size,
                e.engine_name(),
                path.name()
            );
            e.decrypt(c.iv_sector, &mut buf).unwrap();
            assert!(buf == c.data, "{}: does not decrypt", c.spec);
        }
    }
}
