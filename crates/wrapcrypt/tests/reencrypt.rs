//! Offline `reencrypt` (key change) against cryptsetup 2.6.1, the oracle:
//! each tool finishes what the other started, the header afterwards is a
//! plain LUKS2 header that both open with the passphrase, and the data
//! decrypts (Python `cryptography`, i.e. OpenSSL's AES-XTS, under the key
//! `cryptsetup luksDump --dump-volume-key` prints) to the plaintext written
//! before the reencryption.

mod common;
mod reencrypt_common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use reencrypt_common::*;

#[test]
fn cryptsetup_init_finished_by_wrapcrypt() {
    let s = Scratch::new();
    let (img, kf, h) = seeded(&s, "a.img", 24, "4096");
    let old = volume_key(CS, &img, &kf, &[]);
    cs_init(&img, &kf, &[]);
    let o = wc_resume(&img, &kf, &["--hotzone-size", "1M"]);
    assert_eq!(o.code, 0, "{o}");
    assert_finished(&img, &kf, &old);
    assert_eq!(data_hash(&img, &kf, "4096"), h, "data unchanged");
}

#[test]
fn cryptsetup_interrupted_finished_by_wrapcrypt() {
    let s = Scratch::new();
    let (img, kf, h) = seeded(&s, "a.img", 48, "512");
    let old = volume_key(CS, &img, &kf, &[]);
    let mut a = vec![
        "reencrypt",
        "-q",
        "--force-offline-reencrypt",
        "--hotzone-size",
        "512k",
        "-d",
        &kf,
    ];
    a.extend_from_slice(FAST);
    a.push(&img);
    // init: 2 header writes (keyslot, metadata); then 2 per hotzone.
    interrupt(&a, &img, 2 + 2 * 5);
    let mid = json(&img);
    assert!(mid["segments"].as_object().unwrap().len() >= 4, "{mid}");
    let o = wc_resume(&img, &kf, &[]);
    assert_eq!(o.code, 0, "{o}");
    assert_finished(&img, &kf, &old);
    assert_eq!(data_hash(&img, &kf, "512"), h, "data unchanged");
}

/// From the same init state, cryptsetup's and wrapcrypt's completion leave
/// the same header but for salts and digests.
#[test]
fn final_header_as_cryptsetup_writes_it() {
    let s = Scratch::new();
    let (img, kf, _) = seeded(&s, "a.img", 20, "4096");
    cs_init(&img, &kf, &[]);
    let other = s.copy(&img, "b.img");
    let o = wc_resume(&img, &kf, &[]);
    assert_eq!(o.code, 0, "{o}");
    CS.ok(&[
        "reencrypt",
        "-q",
        "--force-offline-reencrypt",
        "--resume-only",
        "-d",
        &kf,
        &other,
    ]);
    assert_eq!(mask_random(&raw_json(&img)), mask_random(&raw_json(&other)));
}

/// wrapcrypt's init header is cryptsetup's (luksDump and JSON, but for the
/// random members), for a plain key change and cipher parameter changes.
#[test]
fn wrapcrypt_init_header_as_cryptsetup_writes_it() {
    let s = Scratch::new();
    let (img, kf, _) = seeded(&s, "base.img", 20, "4096");
    let variants: &[&[&str]] = &[
        &[],
        &["--sector-size", "512"],
        &["--key-size", "256"],
        &["--resilience", "journal"],
        &["--resilience", "none"],
        &["--resilience-hash", "sha512"],
        &[
            "--cipher",
            "aes-xts-plain64",
            "--key-size",
            "256",
            "--sector-size",
            "1024",
        ],
    ];
    for (i, v) in variants.iter().enumerate() {
        let w = s.copy(&img, &format!("w{i}.img"));
        let c = s.copy(&img, &format!("c{i}.img"));
        let o = wc_init(&w, &kf, v);
        assert_eq!(o.code, 0, "{v:?}: {o}");
        cs_init(&c, &kf, v);
        assert_eq!(masked_dump(&w), masked_dump(&c), "luksDump, {v:?}");
        assert_eq!(masked_json(&w), masked_json(&c), "JSON, {v:?}");
    }
}

/// cryptsetup finishes a reencryption wrapcrypt initialized (it accepts
/// wrapcrypt's verification digest), with and without a sector size change.
#[test]
fn wrapcrypt_init_finished_by_cryptsetup() {
    for (sector, extra) in [("4096", &[][..]), ("512", &["--sector-size", "512"][..])] {
        let s = Scratch::new();
        let (img, kf, h) = seeded(&s, "a.img", 20, "4096");
        let old = volume_key(CS, &img, &kf, &[]);
        let o = wc_init(&img, &kf, extra);
        assert_eq!(o.code, 0, "{o}");
        CS.ok(&[
            "reencrypt",
            "-q",
            "--force-offline-reencrypt",
            "--resume-only",
            "-d",
            &kf,
            &img,
        ]);
        assert_finished(&img, &kf, &old);
        assert_eq!(data_hash(&img, &kf, sector), h, "data unchanged, {extra:?}");
    }
}

/// `wrapcrypt reencrypt DEVICE` from start to end, in each resilience mode
/// and with cipher parameter changes.
#[test]
fn wrapcrypt_full_reencryption() {
    let cases: &[(&str, &[&str])] = &[
        ("4096", &["--hotzone-size", "1M"]),
        ("4096", &["--resilience", "journal", "--hotzone-size", "1M"]),
        ("4096", &["--resilience", "none"]),
        (
            "4096",
            &["--force-offline-reencrypt", "--batch-mode", "-S", "0"],
        ),
        ("512", &["--sector-size", "512", "--hotzone-size", "256k"]),
        ("4096", &["--key-size", "256", "--resilience-hash", "sha1"]),
    ];
    for (sector, extra) in cases {
        let s = Scratch::new();
        let (img, kf, h) = seeded(&s, "a.img", 20, "4096");
        let old = volume_key(CS, &img, &kf, &[]);
        let mut a = vec!["reencrypt", "-d", &kf];
        a.extend_from_slice(FAST);
        a.extend_from_slice(extra);
        a.push(&img);
        let o = WC.run(&a);
        assert_eq!(o.code, 0, "{extra:?}: {o}");
        assert_finished(&img, &kf, &old);
        assert_eq!(data_hash(&img, &kf, sector), h, "data unchanged, {extra:?}");
    }
}

/// Runs wrapcrypt reencrypt with `args` and asserts: exit `code`, one
/// stderr line containing `msg`, and not one byte of the image changed.
fn refused(img: &str, args: &[&str], code: i32, msg: &str) {
    let before = std::fs::read(img).unwrap();
    let mut a = vec!["reencrypt"];
    a.extend_from_slice(args);
    a.extend_from_slice(FAST);
    a.push(img);
    let o = WC.run(&a);
    assert_eq!(o.code, code, "{args:?}: {o}");
    assert_eq!(o.stderr.lines().count(), 1, "{args:?}: one line: {o}");
    assert!(o.stderr.contains(msg), "{args:?}: {o}");
    assert!(
        std::fs::read(img).unwrap() == before,
        "{args:?} changed the image"
    );
}

#[test]
fn bad_input_is_refused_without_change() {
    let s = Scratch::new();
    let (img, kf, h) = seeded(&s, "a.img", 20, "4096");
    let wrong = s.key("wrong", b"not the passphrase");
    let nope = "No key available with this passphrase.";
    refused(&img, &["-d", &wrong], 2, nope);
    refused(
        &img,
        &["-d", &kf, "--resilience", "foo"],
        1,
        "Unsupported resilience mode foo",
    );
    let none = "Device reencryption not in progress.";
    refused(&img, &["-d", &kf, "--resume-only"], 1, none);
    refused(
        &img,
        &["-d", &kf, "--encrypt"],
        1,
        "Encryption without detached header",
    );
    refused(
        &img,
        &["-d", &kf, "--init-only", "--resume-only"],
        1,
        "cannot be combined",
    );
    refused(
        &img,
        &["-d", &kf, "--cipher", "aes-nope-plain64"],
        1,
        "aes-nope-plain64",
    );
    refused(
        &img,
        &["-d", &kf, "--hotzone-size", "1000"],
        1,
        "--hotzone-size",
    );
    // The same passphrase check while a reencryption is in progress.
    cs_init(&img, &kf, &[]);
    refused(&img, &["-d", &wrong, "--resume-only"], 2, nope);
    refused(&img, &["-d", &kf, "--init-only"], 1, "already initialized");
    // And it still finishes.
    assert_eq!(wc_resume(&img, &kf, &[]).code, 0);
    assert_eq!(data_hash(&img, &kf, "4096"), h);

    // Two keyslots and a key file: name the keyslot (cryptsetup's rule);
    // with -S, only it survives, under the new key.
    let two = s.copy(&img, "two.img");
    let kf2 = s.key("pw2", b"second passphrase");
    assert_eq!(add_key(CS, &two, &kf, &kf2, Some(0)).code, 0);
    refused(
        &two,
        &["-d", &kf2],
        1,
        "Key file can be used only with --key-slot",
    );
    let mut a = vec!["reencrypt", "-S", "0", "-d", &kf2];
    a.extend_from_slice(FAST);
    a.push(&two);
    WC.ok(&a);
    assert_eq!(test_pass(CS, &two, &kf2, &[]), 0);
    assert_eq!(
        test_pass(CS, &two, &kf, &[]),
        2,
        "the other keyslot is gone"
    );
    assert_eq!(data_hash(&two, &kf2, "4096"), h);

    // LUKS1: nothing to resume (cryptsetup's line), and no LUKS1 reencryption.
    let l1 = s.image("l1.img", 8);
    let mut o = FAST.to_vec();
    o.extend(["--type", "luks1"]);
    format(CS, &l1, &kf, &o);
    refused(&l1, &["-d", &kf, "--resume-only"], 1, none);
    refused(&l1, &["-d", &kf], 1, "LUKS1");
}

/// cryptsetup killed mid-hotzone (checksum and journal resilience):
/// wrapcrypt's --resume-only recovers the hotzone and finishes.
#[test]
fn cryptsetup_killed_mid_hotzone_recovered_by_wrapcrypt() {
    for res in ["checksum", "journal"] {
        let s = Scratch::new();
        let (img, kf, h) = seeded(&s, "a.img", 48, "4096");
        let old = volume_key(CS, &img, &kf, &[]);
        let mut a = vec![
            "reencrypt",
            "-q",
            "--force-offline-reencrypt",
            "--resilience",
            res,
            "--hotzone-size",
            "2M",
            "-d",
            &kf,
        ];
        a.extend_from_slice(FAST);
        a.push(&img);
        kill_mid_hotzone(&a, &img);
        assert!(hot_on_disk(&img), "{res}: a hotzone was cut off");
        let o = wc_resume(&img, &kf, &["-v"]);
        assert_eq!(o.code, 0, "{res}: {o}");
        assert!(o.stderr.contains("recovering"), "{res}: {o}");
        assert_finished(&img, &kf, &old);
        assert_eq!(data_hash(&img, &kf, "4096"), h, "{res}: data unchanged");
    }
}

/// SIGINT stops wrapcrypt after the hotzone in flight, as it stops
/// cryptsetup: "Reencryption interrupted.", exit 1, no hotzone left cut off,
/// and cryptsetup's --resume-only (no repair needed) finishes.
#[test]
fn wrapcrypt_interrupted_finished_by_cryptsetup() {
    let s = Scratch::new();
    let (img, kf, h) = seeded(&s, "a.img", 48, "4096");
    let old = volume_key(CS, &img, &kf, &[]);
    let start = seqid(&img);
    let mut a = vec!["reencrypt", "--hotzone-size", "256k", "-d", &kf];
    a.extend_from_slice(FAST);
    a.push(&img);
    let mut child = WC
        .cmd(&a)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrapcrypt runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    // init (2 header writes) and a few hotzones (2 each).
    while seqid(&img) < start + 2 + 2 * 4 {
        assert!(child.try_wait().expect("wait").is_none(), "ended too early");
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Reencryption interrupted."), "{err}");
    assert!(!hot_on_disk(&img), "a hotzone was left cut off");
    let j = json(&img);
    assert!(
        j["config"].get("requirements").is_some(),
        "still in progress: {j}"
    );
    CS.ok(&[
        "reencrypt",
        "-q",
        "--force-offline-reencrypt",
        "--resume-only",
        "-d",
        &kf,
        &img,
    ]);
    assert_finished(&img, &kf, &old);
    assert_eq!(data_hash(&img, &kf, "4096"), h);
}

/// A detached header (data from offset 0 of its own device): cryptsetup's
/// init finished by wrapcrypt, and a whole wrapcrypt run; the later
/// segments of the reencryption then start inside what would be the
/// keyslots area of an attached header.
#[test]
fn detached_header() {
    for cs_first in [true, false] {
        let s = Scratch::new();
        let kf = s.key("pw", b"detached passphrase");
        let hdr = s.image("hdr.img", 16);
        let dev = s.image("dev.img", 4);
        let mut o = FAST.to_vec();
        o.extend(["--header", &hdr]);
        format(CS, &dev, &kf, &o);
        let plain = s.p("plain.bin");
        std::fs::write(
            &plain,
            (0..4u32 << 20)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        let key = volume_key(CS, &dev, &kf, &["--header", &hdr]);
        xts(&["enc", &dev, "0", "4096", &plain], &key);
        let want = sha256_file(&plain);
        if cs_first {
            cs_init(&dev, &kf, &["--header", &hdr]);
            let o = wc_resume(&dev, &kf, &["--header", &hdr, "--hotzone-size", "1M"]);
            assert_eq!(o.code, 0, "{o}");
        } else {
            let mut a = vec![
                "reencrypt",
                "--header",
                &hdr,
                "--hotzone-size",
                "1M",
                "-d",
                &kf,
            ];
            a.extend_from_slice(FAST);
            a.push(&dev);
            WC.ok(&a);
        }
        assert_eq!(test_pass(CS, &dev, &kf, &["--header", &hdr]), 0);
        let new = volume_key(CS, &dev, &kf, &["--header", &hdr]);
        assert_ne!(new, key);
        assert_eq!(
            xts(&["dec", &dev, "0", "4096"], &new),
            want,
            "cs_first {cs_first}"
        );
    }
}

/// Several keyslots and no `--key-slot`, passphrases on stdin one per
/// line: each keyslot's passphrase is asked and each gets a keyslot of the
/// new key, as cryptsetup does (same header from both tools' init); after
/// the run every passphrase opens the new key and the data is unchanged.
#[test]
fn several_keyslots_each_passphrase_asked_as_cryptsetup_does() {
    let s = Scratch::new();
    let (img, kf, h) = seeded(&s, "m.img", 20, "4096");
    let kf2 = s.key("pw2", b"second passphrase");
    assert_eq!(add_key(CS, &img, &kf, &kf2, Some(1)).code, 0);
    let stdin = b"reencrypt test passphrase\nsecond passphrase\n";
    let init = |tool: Tool, img: &str| {
        let mut a = vec!["reencrypt", "-q", "--init-only"];
        a.extend_from_slice(FAST);
        a.push(img);
        let o = tool.run_stdin(&a, Some(stdin));
        assert_eq!(o.code, 0, "{tool:?} init: {o}");
    };
    let (w, c) = (s.copy(&img, "w.img"), s.copy(&img, "c.img"));
    init(WC, &w);
    init(CS, &c);
    assert_eq!(masked_dump(&w), masked_dump(&c), "luksDump");
    assert_eq!(masked_json(&w), masked_json(&c), "JSON");
    // Either passphrase resumes; both open the new key afterwards.
    assert_eq!(wc_resume(&w, &kf2, &[]).code, 0);
    let j = json(&w);
    let slots: Vec<&String> = j["keyslots"].as_object().unwrap().keys().collect();
    assert_eq!(slots, ["2", "3"], "{j}");
    for (slot, k) in [("2", &kf), ("3", &kf2)] {
        assert_eq!(test_pass(CS, &w, k, &["-S", slot]), 0, "slot {slot}");
        assert_eq!(test_pass(WC, &w, k, &["-S", slot]), 0, "slot {slot}");
    }
    assert_eq!(data_hash(&w, &kf, "4096"), h);
}

/// A reencryption that cryptsetup is running holds cryptsetup's
/// reencryption lock (`/run/cryptsetup/LN_LUKS2-reencryption-UUID`):
/// wrapcrypt's `--resume-only` meanwhile is refused with cryptsetup's line
/// and exit code 5 (before the lock it would have joined the run between
/// two hotzones); after cryptsetup is stopped, wrapcrypt finishes and the
/// data is intact.
#[test]
fn resume_while_cryptsetup_runs_is_refused() {
    let s = Scratch::new();
    let (img, kf, h) = seeded(&s, "busy.img", 16 + 64, "4096");
    let mut a = vec![
        "reencrypt",
        "-q",
        "--force-offline-reencrypt",
        "--resilience",
        "journal",
        "--hotzone-size",
        "4K",
        "-d",
        &kf,
    ];
    a.extend_from_slice(FAST);
    a.push(&img);
    let start = seqid(&img);
    let mut cs = std::process::Command::new("cryptsetup")
        .args(&a)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seqid(&img) < start + 8 {
        assert!(cs.try_wait().unwrap().is_none(), "cryptsetup ended early");
        assert!(std::time::Instant::now() < deadline, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let o = wc_resume(&img, &kf, &["-q"]);
    let still_running = cs.try_wait().unwrap().is_none();
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    unsafe { libc::kill(cs.id() as libc::pid_t, libc::SIGINT) };
    let _ = cs.wait_with_output();
    assert!(still_running, "cryptsetup finished before the check");
    assert_eq!(o.code, 5, "{o}");
    assert_eq!(
        o.stderr.trim(),
        "Reencryption process is already running.",
        "{o}"
    );
    assert_eq!(wc_resume(&img, &kf, &["-q"]).code, 0);
    assert_eq!(data_hash(&img, &kf, "4096"), h);
}
