//! wrapcrypt's own `reencrypt --encrypt --header FILE` (no data shift):
//! the detached header it writes equals cryptsetup 2.6.1's for the same
//! options (luksDump text and JSON, random members masked); the run leaves
//! data that decrypts (Python `cryptography` AES-XTS under the dumped key)
//! to the plaintext; a run killed before any of its writes is finished by
//! cryptsetup or wrapcrypt; bad input gets cryptsetup's exit code and
//! changes nothing on disk.

mod common;
mod reencrypt_common;

use common::*;
use reencrypt_common::*;

const MIB4: u64 = 4 << 20;

/// A plaintext image of random data; returns its path and hash.
fn plaintext(s: &Scratch, name: &str, size: u64) -> (String, String) {
    let img = s.p(name);
    let st = std::process::Command::new("head")
        .args(["-c", &size.to_string(), "/dev/urandom"])
        .stdout(std::fs::File::create(&img).expect("data"))
        .status()
        .expect("head");
    assert!(st.success());
    let h = sha256_file(&img);
    (img, h)
}

fn encrypt_args<'a>(tool: Tool, hdr: &'a str, kf: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["reencrypt", "--encrypt", "--header", hdr, "-q", "-d", kf];
    if tool == CS {
        a.push("--force-offline-reencrypt");
    }
    a.extend_from_slice(FAST);
    a.extend_from_slice(extra);
    a
}

/// Finished: one crypt segment at 0, both tools open it, the data
/// decrypts to `plain` and is no longer the plaintext.
fn assert_encrypted(img: &str, hdr: &str, kf: &str, plain: &str, sector: &str) {
    let j = json(hdr);
    assert_eq!(j["segments"].as_object().unwrap().len(), 1, "{j}");
    assert_eq!(j["segments"]["0"]["type"], "crypt", "{j}");
    assert_eq!(j["segments"]["0"]["offset"], "0", "{j}");
    assert_eq!(j["segments"]["0"]["sector_size"].to_string(), sector, "{j}");
    assert!(j["config"].get("requirements").is_none(), "{j}");
    for t in BOTH {
        assert_eq!(test_pass(t, img, kf, &["--header", hdr]), 0, "{t:?} opens");
    }
    let key = volume_key(CS, hdr, kf, &[]);
    assert_eq!(volume_key(WC, hdr, kf, &[]), key, "same key for both");
    assert_eq!(
        xts(&["dec", img, "0", sector], &key),
        plain,
        "data decrypts"
    );
    assert_ne!(sha256_file(img), plain, "data is encrypted");
}

const OPTION_SETS: &[&[&str]] = &[
    &[],
    &["--resilience", "journal"],
    &["--resilience", "none"],
    &["--resilience-hash", "sha512"],
    &[
        "--cipher",
        "aes-cbc-essiv:sha256",
        "--key-size",
        "256",
        "--sector-size",
        "4096",
        "--uuid",
        "12345678-1234-1234-1234-123456789abc",
        "--label",
        "enc-label",
        "--subsystem",
        "enc-sub",
    ],
    &["--key-size", "256", "--sector-size", "2048"],
];

/// For each option set both tools init a copy of the same plaintext: the
/// headers agree (masked luksDump text and JSON, epoch included), the
/// data is untouched; cryptsetup then finishes wrapcrypt's init.
#[test]
fn wrapcrypt_encrypt_init_equals_cryptsetups() {
    let s = Scratch::new();
    let kf = s.key("pw", b"encrypt init passphrase");
    let (base, plain) = plaintext(&s, "base.img", MIB4);
    for (i, extra) in OPTION_SETS.iter().enumerate() {
        let mut hdrs = Vec::new();
        for t in BOTH {
            let img = s.copy(&base, &format!("{i}-{t:?}.img"));
            let hdr = s.p(&format!("{i}-{t:?}.hdr"));
            let mut a = encrypt_args(t, &hdr, &kf, extra);
            a.push("--init-only");
            a.push(&img);
            t.ok(&a);
            assert_eq!(sha256_file(&img), plain, "{t:?} init left the data alone");
            hdrs.push((img, hdr));
        }
        let (w, c) = (&hdrs[0].1, &hdrs[1].1);
        assert_eq!(
            masked_dump(w),
            masked_dump(c),
            "luksDump, options {extra:?}"
        );
        assert_eq!(masked_json(w), masked_json(c), "JSON, options {extra:?}");
        let wd = WC.run(&["luksDump", w]);
        assert_eq!(
            wd.stdout,
            CS.ok(&["luksDump", w]).stdout,
            "wrapcrypt's luksDump"
        );
        let (img, hdr) = &hdrs[0];
        CS.ok(&[
            "reencrypt",
            "--resume-only",
            "-q",
            "--force-offline-reencrypt",
            "--header",
            hdr,
            "-d",
            &kf,
            img,
        ]);
        let j = json(hdr);
        if j["segments"]["0"]["encryption"] == "aes-xts-plain64" {
            let sector = j["segments"]["0"]["sector_size"].to_string();
            assert_encrypted(img, hdr, &kf, &plain, &sector);
        } else {
            // No independent CBC-ESSIV here: both tools open it.
            for t in BOTH {
                assert_eq!(test_pass(t, img, &kf, &["--header", hdr]), 0, "{t:?} opens");
            }
            assert_ne!(sha256_file(img), plain, "data is encrypted");
        }
    }
    println!("{} option sets compared", OPTION_SETS.len());
}

/// An existing header file larger than 16 MiB is used as cryptsetup uses
/// it (same keyslots area), and the file keeps its size.
#[test]
fn wrapcrypt_encrypt_into_existing_header_file() {
    let s = Scratch::new();
    let kf = s.key("pw", b"encrypt init passphrase");
    let (base, plain) = plaintext(&s, "base.img", MIB4);
    let mut hdrs = Vec::new();
    for t in BOTH {
        let img = s.copy(&base, &format!("{t:?}.img"));
        let hdr = s.image(&format!("{t:?}.hdr"), 20);
        let mut a = encrypt_args(t, &hdr, &kf, &["--init-only"]);
        a.push(&img);
        t.ok(&a);
        assert_eq!(std::fs::metadata(&hdr).unwrap().len(), 20 << 20);
        hdrs.push((img, hdr));
    }
    assert_eq!(masked_json(&hdrs[0].1), masked_json(&hdrs[1].1));
    assert_eq!(masked_dump(&hdrs[0].1), masked_dump(&hdrs[1].1));
    let (img, hdr) = &hdrs[0];
    let o = wc_resume(img, &kf, &["--header", hdr]);
    assert_eq!(o.code, 0, "{o}");
    assert_encrypted(img, hdr, &kf, &plain, "512");
}

/// Whole runs (several hotzones) in each resilience mode and two sector
/// sizes.
#[test]
fn wrapcrypt_encrypt_whole_run() {
    let s = Scratch::new();
    let kf = s.key("pw", b"encrypt run passphrase");
    for (i, (res, sector)) in [
        ("checksum", "512"),
        ("journal", "512"),
        ("none", "512"),
        ("checksum", "4096"),
    ]
    .iter()
    .enumerate()
    {
        let (img, plain) = plaintext(&s, &format!("{i}.img"), MIB4);
        let hdr = s.p(&format!("{i}.hdr"));
        let mut a = encrypt_args(
            WC,
            &hdr,
            &kf,
            &[
                "--resilience",
                res,
                "--sector-size",
                sector,
                "--hotzone-size",
                "1M",
            ],
        );
        a.push(&img);
        WC.ok(&a);
        assert_encrypted(&img, &hdr, &kf, &plain, sector);
    }
}

/// The passphrase comes from the key file (`-d`), from stdin when it is
/// not a terminal, and a terminal would be asked twice (not tested: no
/// TTY); without `-q` a missing header is created only after YES.
#[test]
fn wrapcrypt_encrypt_passphrase_from_stdin_and_confirmation() {
    let s = Scratch::new();
    let kf = s.key("pw", b"stdin passphrase");
    let (img, plain) = plaintext(&s, "a.img", MIB4);
    let hdr = s.p("a.hdr");
    let mut a = vec!["reencrypt", "--encrypt", "--header", &hdr];
    a.extend_from_slice(FAST);
    a.push(&img);
    let o = WC.run_stdin(&a, Some(b"no\n"));
    assert_eq!(o.code, 1, "{o}");
    assert!(!std::path::Path::new(&hdr).exists(), "no header after no");
    let o = WC.run_stdin(&a, Some(b"YES\nstdin passphrase\n"));
    assert_eq!(o.code, 0, "{o}");
    assert_encrypted(&img, &hdr, &kf, &plain, "512");
}

/// A wrapcrypt `--encrypt` killed before each of its writes in turn: if
/// it got as far as the reencryption metadata, cryptsetup (every other
/// point: `repair`, then `--resume-only`) or wrapcrypt finishes it;
/// before that the data is still the plaintext and a new init (after
/// removing the half-written header file) works. luksDump of both tools
/// agree after every kill.
#[test]
fn wrapcrypt_encrypt_killed_at_every_write_then_finished() {
    let s = Scratch::new();
    let kf = s.key("pw", b"encrypt kill passphrase");
    let (base, plain) = plaintext(&s, "base.img", MIB4);
    let (mut points, mut resumed, mut restarted, mut finished) = (0, 0, 0, 0);
    for k in 1.. {
        let img = s.copy(&base, &format!("k{k}.img"));
        let hdr = s.p(&format!("k{k}.hdr"));
        let mut args = encrypt_args(WC, &hdr, &kf, &["--hotzone-size", "1M"]);
        args.push(&img);
        let mut c = WC.cmd(&args);
        c.env("WRAPCRYPT_FAULT_AT", k.to_string());
        let o = run_cmd(&mut c, None, WC);
        if o.signal.is_none() {
            assert_eq!(o.code, 0, "run past the last write point: {o}");
            assert_encrypted(&img, &hdr, &kf, &plain, "512");
            break;
        }
        assert_eq!(o.signal, Some(libc::SIGKILL), "kill point {k}: {o}");
        points += 1;
        let cd = CS.run(&["luksDump", &hdr]);
        let in_reencryption = cd.code == 0 && json(&hdr)["config"].get("requirements").is_some();
        if cd.code == 0 {
            let wd = WC.run(&["luksDump", &hdr]);
            assert_eq!(
                (wd.code, &wd.stdout),
                (0, &cd.stdout),
                "luksDump after kill point {k}"
            );
        }
        // The format's two header writes (seqid 1, 2) precede the metadata.
        let before_metadata = cd.code != 0 || seqid(&hdr) <= 2;
        if before_metadata {
            assert!(!in_reencryption, "kill point {k}");
            assert_eq!(sha256_file(&img), plain, "kill point {k}: data untouched");
            let _ = std::fs::remove_file(&hdr);
            let o = WC.run(&args);
            assert_eq!(o.code, 0, "new init after kill point {k}: {o}");
            restarted += 1;
        } else if !in_reencryption {
            // Killed after the final header, while wiping the areas.
            finished += 1;
        } else if k % 2 == 0 {
            CS.ok(&["repair", "-q", "--header", &hdr, "-d", &kf, &img]);
            if json(&hdr)["config"].get("requirements").is_some() {
                CS.ok(&[
                    "reencrypt",
                    "--resume-only",
                    "-q",
                    "--force-offline-reencrypt",
                    "--header",
                    &hdr,
                    "-d",
                    &kf,
                    &img,
                ]);
            }
            resumed += 1;
        } else {
            let o = wc_resume(&img, &kf, &["--header", &hdr]);
            assert_eq!(o.code, 0, "wrapcrypt resume after kill point {k}: {o}");
            resumed += 1;
        }
        assert_encrypted(&img, &hdr, &kf, &plain, "512");
    }
    assert!(resumed >= 6, "only {resumed} kill points in the run");
    println!(
        "{points} kill points exercised: {resumed} mid-reencryption (finished by cryptsetup or wrapcrypt), {restarted} before the metadata (data untouched, init rerun), {finished} after the final header"
    );
}

/// Bad input: exit code and first line as cryptsetup's, nothing written
/// (the data's hash, and no header file where none was).
#[test]
fn wrapcrypt_encrypt_bad_input_changes_nothing() {
    let s = Scratch::new();
    let kf = s.key("pw", b"bad input passphrase");
    let (plain_img, plain) = plaintext(&s, "plain.img", MIB4);
    let luks = s.image("luks.img", 20);
    format(CS, &luks, &kf, &[]);
    let luks_hash = sha256_file(&luks);
    let luks_hdr = s.p("luks.hdr");
    format(CS, &plain_img, &kf, &["--header", &luks_hdr]);
    let luks_hdr_hash = sha256_file(&luks_hdr);
    assert_eq!(
        sha256_file(&plain_img),
        plain,
        "a detached format leaves data"
    );
    let new_hdr = s.p("new.hdr");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "no --header, no --reduce-device-size",
            vec!["reencrypt", "--encrypt", "-q", "-d", &kf, &plain_img],
            "Encryption without detached header",
        ),
        (
            "a LUKS data device",
            vec![
                "reencrypt",
                "--encrypt",
                "-q",
                "--header",
                &new_hdr,
                "-d",
                &kf,
                &luks,
            ],
            "is already LUKS device",
        ),
        (
            "a LUKS header file",
            vec![
                "reencrypt",
                "--encrypt",
                "-q",
                "--header",
                &luks_hdr,
                "-d",
                &kf,
                &plain_img,
            ],
            "is already LUKS device",
        ),
    ];
    for (what, args, msg) in &cases {
        let mut outs = Vec::new();
        for t in BOTH {
            let mut a = args.clone();
            if t == CS {
                a.insert(1, "--force-offline-reencrypt");
            }
            let o = t.run(&a);
            assert_eq!(o.code, 1, "{t:?} {what}: {o}");
            assert!(o.stderr.contains(msg), "{t:?} {what}: {o}");
            outs.push(o.stderr.lines().next().unwrap_or_default().to_string());
            assert_eq!(sha256_file(&plain_img), plain, "{t:?} {what}: data");
            assert_eq!(sha256_file(&luks), luks_hash, "{t:?} {what}: LUKS device");
            assert_eq!(
                sha256_file(&luks_hdr),
                luks_hdr_hash,
                "{t:?} {what}: header"
            );
            assert!(!std::path::Path::new(&new_hdr).exists(), "{t:?} {what}");
        }
        assert_eq!(outs[0], outs[1], "{what}: same message");
    }
    // Refused before writing, where cryptsetup exits 1 after writing the
    // header file (datashift needs a shift) or refuses too (unknown mode).
    for res in ["datashift", "foo"] {
        let o = WC.run(&[
            "reencrypt",
            "--encrypt",
            "-q",
            "--header",
            &new_hdr,
            "--resilience",
            res,
            "-d",
            &kf,
            &plain_img,
        ]);
        assert_eq!(o.code, 1, "--resilience {res}: {o}");
        assert!(
            !std::path::Path::new(&new_hdr).exists(),
            "--resilience {res}"
        );
        assert_eq!(sha256_file(&plain_img), plain);
    }
    println!(
        "{} bad inputs compared with cryptsetup, 2 refused before any write",
        cases.len()
    );
}
