//! Every fast path against the portable RustCrypto path on many random
//! shapes: sector sizes, batch lengths (so batches of 8 sectors split
//! unevenly), unit lengths of any block count (remainders of the 8-, 16- and
//! 32-block pipelines), key sizes and modes. Each XTS path this CPU has is
//! forced in turn; `WRAPCRYPT_XTS_PATH` itself is checked in a child process.

mod common;

use std::process::Command;

use common::{cipher, cipher_on, compare, paths, random, random_u64};
use wrapcrypt_sector::{aes_ni_available, xts_path, Backend, XtsPath, XTS_PATH_ENV};

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
                // Backend::Auto follows WRAPCRYPT_XTS_PATH if the run sets it.
                assert_eq!(fast.accelerated(), xts_path() != "portable");
                assert!(!slow.accelerated());
                let blocks = 1 + random(1)[0] as usize % 37;
                compare(spec, &fast, &slow, ss, sectors, blocks);
                rounds += 1;
            }
        }
    }
    assert_eq!(rounds, 12 * 13);
}

#[test]
fn every_xts_path_equals_portable() {
    let avail = paths();
    if avail.len() == 1 {
        eprintln!("only the portable path on this CPU: nothing to compare");
    }
    let mut checked = 0;
    for &path in &avail[1..] {
        for (spec, klen) in [
            ("aes-xts-plain64", 32),
            ("aes-xts-plain64", 48),
            ("aes-xts-plain64", 64),
            ("aes-xts-essiv:sha256", 64),
            ("aes-xts-plain", 64),
        ] {
            for ss in [512usize, 1024, 2048, 4096] {
                for sectors in [1usize, 2, 3, 7, 8, 9, 17] {
                    let key = random(klen);
                    let fast = cipher_on(spec, &key, ss, path);
                    let slow = cipher_on(spec, &key, ss, XtsPath::Portable);
                    // Odd units: every remainder of the 8/16/32-block steps,
                    // one to 67 blocks.
                    let blocks = 1 + (ss / 512 + sectors * 7) % 67;
                    compare(
                        &format!("{spec} {path:?}"),
                        &fast,
                        &slow,
                        ss,
                        sectors,
                        blocks,
                    );
                    checked += 1;
                }
            }
        }
        // Each unit length of 1..=70 blocks once, for the masked and
        // single-block tails.
        let key = random(64);
        let fast = cipher_on("aes-xts-plain64", &key, 512, path);
        let slow = cipher_on("aes-xts-plain64", &key, 512, XtsPath::Portable);
        for blocks in 1..=70 {
            let unit = random(blocks * 16);
            let s = random_u64();
            let (mut a, mut b) = (unit.clone(), unit.clone());
            fast.encrypt_unit(s, &mut a).unwrap();
            slow.encrypt_unit(s, &mut b).unwrap();
            assert!(a == b, "{path:?}: unit of {blocks} blocks differs");
            fast.decrypt_unit(s, &mut a).unwrap();
            assert!(
                a == unit,
                "{path:?}: unit of {blocks} blocks does not decrypt"
            );
        }
    }
    assert_eq!(checked, (avail.len() - 1) * 5 * 4 * 7);
}

/// Run by `forced_path_is_used` in a child process with `WRAPCRYPT_XTS_PATH`
/// set; `WRAPCRYPT_TEST_EXPECT_PATH` names the path it must then report.
#[test]
#[ignore = "run as a child by forced_path_is_used"]
fn child_reports_forced_path() {
    let want = std::env::var("WRAPCRYPT_TEST_EXPECT_PATH").expect("run by forced_path_is_used");
    assert_eq!(xts_path(), want);
    let c = cipher("aes-xts-plain64", &random(64), 4096, Backend::Auto);
    assert_eq!(c.xts_path().map(XtsPath::name), Some(want.as_str()));
    println!("child-ok {want}");
}

#[test]
fn forced_path_is_used() {
    let best = *paths().last().unwrap();
    if std::env::var_os(XTS_PATH_ENV).is_none() {
        assert_eq!(xts_path(), best.name(), "the default is the fastest path");
    }
    let mut cases: Vec<(String, &str)> = XtsPath::ALL
        .iter()
        // A path the CPU lacks falls back to the best it has.
        .map(|p| (p.name().to_string(), p.min(&best).name()))
        .collect();
    cases.push(("no-such-path".to_string(), best.name()));
    for (set, want) in cases {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "child_reports_forced_path",
                "--nocapture",
            ])
            .env(XTS_PATH_ENV, &set)
            .env("WRAPCRYPT_TEST_EXPECT_PATH", want)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("child-ok {want}")),
            "{XTS_PATH_ENV}={set} should run {want}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
