//! `reencrypt` of a plaintext device into LUKS2 with a detached header
//! (cryptsetup's `reencrypt --encrypt --header FILE`, no data shift):
//! cryptsetup 2.6.1 starts it (`--init-only`), wrapcrypt finishes it, also
//! after being killed before each of its writes (`WRAPCRYPT_FAULT_AT`), and
//! the device then decrypts (Python `cryptography` AES-XTS under the key
//! cryptsetup dumps) to the plaintext it held before.

mod common;
mod reencrypt_common;

use common::*;
use reencrypt_common::*;

/// A 4 MiB image of random plaintext and a cryptsetup `--encrypt
/// --header` init of it. Returns (data, header, key file, plaintext hash).
fn cs_encrypt_init(s: &Scratch, resilience: &str) -> (String, String, String, String) {
    let kf = s.key("pw", b"encrypt test passphrase");
    let (img, plain) = random_file(s, "data.img", 4 << 20);
    let hdr = s.p("hdr.img");
    let mut a = vec![
        "reencrypt",
        "--encrypt",
        "--header",
        &hdr,
        "-q",
        "--force-offline-reencrypt",
        "--init-only",
        "--resilience",
        resilience,
        "-d",
        &kf,
    ];
    a.extend_from_slice(FAST);
    a.push(&img);
    CS.ok(&a);
    // cryptsetup's init does not touch the data.
    assert_eq!(sha256_file(&img), plain, "init left the data alone");
    let j = json(&hdr);
    assert_eq!(j["segments"]["0"]["type"], "linear", "{j}");
    (img, hdr, kf, plain)
}

/// The header is a plain LUKS2 header with one crypt segment at 0; both
/// tools open it; the data decrypts to `plain` and is no longer plaintext.
fn assert_encrypted(img: &str, hdr: &str, kf: &str, plain: &str) {
    let j = json(hdr);
    assert_eq!(j["segments"].as_object().unwrap().len(), 1, "{j}");
    assert_eq!(j["segments"]["0"]["type"], "crypt", "{j}");
    assert_eq!(j["segments"]["0"]["offset"], "0", "{j}");
    assert!(j["config"].get("requirements").is_none(), "{j}");
    for t in BOTH {
        assert_eq!(test_pass(t, img, kf, &["--header", hdr]), 0, "{t:?} opens");
    }
    let key = volume_key(CS, hdr, kf, &[]);
    assert_eq!(xts(&["dec", img, "0", "512"], &key), plain, "data decrypts");
    assert_ne!(sha256_file(img), plain, "data is encrypted");
}

fn finished_by_wrapcrypt(resilience: &str) {
    let s = Scratch::new();
    let (img, hdr, kf, plain) = cs_encrypt_init(&s, resilience);
    let o = wc_resume(&img, &kf, &["--header", &hdr, "--hotzone-size", "1M"]);
    assert_eq!(o.code, 0, "{o}");
    assert_encrypted(&img, &hdr, &kf, &plain);
}

#[test]
fn cryptsetup_encrypt_init_finished_by_wrapcrypt_checksum() {
    finished_by_wrapcrypt("checksum");
}

#[test]
fn cryptsetup_encrypt_init_finished_by_wrapcrypt_journal() {
    finished_by_wrapcrypt("journal");
}

#[test]
fn cryptsetup_encrypt_init_finished_by_wrapcrypt_none() {
    finished_by_wrapcrypt("none");
}

/// wrapcrypt's resume of cryptsetup's encrypt init is killed before each
/// of its device writes in turn; cryptsetup (`repair`, then
/// `--resume-only`) finishes every other one, wrapcrypt the rest.
fn killed_at_every_write(resilience: &str) {
    let s = Scratch::new();
    let (base, base_hdr, kf, plain) = cs_encrypt_init(&s, resilience);
    let mut points = 0;
    for k in 1.. {
        let img = s.copy(&base, &format!("k{k}.img"));
        let hdr = s.copy(&base_hdr, &format!("k{k}.hdr"));
        let args = [
            "reencrypt",
            "--resume-only",
            "--header",
            &hdr,
            "--hotzone-size",
            "1M",
            "-d",
            &kf,
            &img,
        ];
        let mut c = WC.cmd(&args);
        c.env("WRAPCRYPT_FAULT_AT", k.to_string());
        let o = run_cmd(&mut c, None, WC);
        if o.signal.is_none() {
            // Fewer than k writes: the run completed.
            assert_eq!(o.code, 0, "run past the last write point: {o}");
            assert_encrypted(&img, &hdr, &kf, &plain);
            break;
        }
        assert_eq!(o.signal, Some(libc::SIGKILL), "kill point {k}: {o}");
        points += 1;
        let wd = WC.run(&["luksDump", &hdr]);
        let cd = CS.run(&["luksDump", &hdr]);
        assert_eq!(
            (wd.code, &wd.stdout),
            (cd.code, &cd.stdout),
            "luksDump after kill point {k}"
        );
        let in_reencryption = json(&hdr)["config"].get("requirements").is_some();
        if in_reencryption {
            if k % 2 == 0 {
                CS.ok(&["repair", "-q", "--header", &hdr, "-d", &kf, &img]);
                // repair finalizes when the cut hotzone was the last.
                let still = json(&hdr)["config"].get("requirements").is_some();
                if still {
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
            } else {
                let o = WC.run(&args);
                assert_eq!(o.code, 0, "wrapcrypt resume after kill point {k}: {o}");
            }
        }
        assert_encrypted(&img, &hdr, &kf, &plain);
    }
    assert!(points >= 6, "only {points} kill points");
    println!("{resilience}: {points} kill points exercised, all recovered");
}

#[test]
fn encrypt_killed_at_every_write_then_resumed_checksum() {
    killed_at_every_write("checksum");
}

#[test]
fn encrypt_killed_at_every_write_then_resumed_journal() {
    killed_at_every_write("journal");
}
