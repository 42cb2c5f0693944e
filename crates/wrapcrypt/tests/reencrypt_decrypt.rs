//! `reencrypt --decrypt --header FILE` (backward, no data shift): a
//! device that cryptsetup 2.6.1 encrypted in place is decrypted back, the
//! run started by either tool and finished by either, also after
//! wrapcrypt is killed before each of its writes; afterwards the device
//! holds the original plaintext (its SHA-256) and the header file is the
//! one cryptsetup leaves (no keyslots, no digests, one linear segment).

mod common;
mod reencrypt_common;

use common::*;
use reencrypt_common::*;

/// A 4 MiB plaintext image encrypted in place by cryptsetup (`--encrypt
/// --header`). Returns (image, header, key file, plaintext hash).
fn encrypted(s: &Scratch) -> (String, String, String, String) {
    let kf = s.key("pw", b"decrypt test passphrase");
    let (img, plain) = random_file(s, "data.img", 4 << 20);
    let hdr = s.p("hdr.img");
    let mut a = vec![
        "reencrypt",
        "--encrypt",
        "--header",
        &hdr,
        "-q",
        "--force-offline-reencrypt",
        "-d",
        &kf,
    ];
    a.extend_from_slice(FAST);
    a.push(&img);
    CS.ok(&a);
    assert_ne!(sha256_file(&img), plain, "encrypted");
    (img, hdr, kf, plain)
}

fn cs_decrypt(hdr: &str, kf: &str, img: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "reencrypt",
        "--decrypt",
        "--header",
        hdr,
        "-q",
        "--force-offline-reencrypt",
        "-d",
        kf,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push(img.to_string());
    a
}

/// The device holds the plaintext; the header is cryptsetup's final one.
fn assert_decrypted(img: &str, hdr: &str, plain: &str) {
    assert_eq!(sha256_file(img), plain, "device holds the plaintext");
    let j = json(hdr);
    assert!(j["keyslots"].as_object().unwrap().is_empty(), "{j}");
    assert!(j["digests"].as_object().unwrap().is_empty(), "{j}");
    assert_eq!(j["segments"].as_object().unwrap().len(), 1, "{j}");
    assert_eq!(j["segments"]["0"]["type"], "linear", "{j}");
    assert_eq!(j["segments"]["0"]["size"], "dynamic", "{j}");
    assert!(j["config"].get("requirements").is_none(), "{j}");
    let (w, c) = (WC.run(&["luksDump", hdr]), CS.ok(&["luksDump", hdr]));
    assert_eq!((w.code, &w.stdout), (0, &c.stdout), "luksDump");
}

#[test]
fn cryptsetup_decrypt_init_finished_by_wrapcrypt() {
    for res in ["checksum", "journal", "none"] {
        let s = Scratch::new();
        let (img, hdr, kf, plain) = encrypted(&s);
        let a = cs_decrypt(&hdr, &kf, &img, &["--init-only", "--resilience", res]);
        CS.ok(&a);
        let o = wc_resume(&img, &kf, &["--header", &hdr, "--hotzone-size", "1M"]);
        assert_eq!(o.code, 0, "{res}: {o}");
        assert_decrypted(&img, &hdr, &plain);
    }
}

/// cryptsetup stopped by SIGINT after some hotzones (backward: the end
/// of the device is plaintext already); wrapcrypt finishes.
#[test]
fn cryptsetup_decrypt_interrupted_finished_by_wrapcrypt() {
    for steps in [2, 5] {
        let s = Scratch::new();
        let (img, hdr, kf, plain) = encrypted(&s);
        let a = cs_decrypt(&hdr, &kf, &img, &["--hotzone-size", "512K"]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        interrupt(&a, &hdr, steps);
        let j = json(&hdr);
        assert_eq!(j["keyslots"]["1"]["mode"], "decrypt", "{j}");
        assert_ne!(
            j["segments"]["0"]["size"], "dynamic",
            "progress recorded: {j}"
        );
        let (w, c) = (WC.run(&["luksDump", &hdr]), CS.ok(&["luksDump", &hdr]));
        assert_eq!((w.code, &w.stdout), (0, &c.stdout), "luksDump mid-decrypt");
        let o = wc_resume(&img, &kf, &["--header", &hdr, "--hotzone-size", "1M"]);
        assert_eq!(o.code, 0, "{o}");
        assert_decrypted(&img, &hdr, &plain);
    }
}

/// wrapcrypt's init equals cryptsetup's (masked; the verification
/// digest's iterations are benchmarked by both), cryptsetup finishes it.
#[test]
fn wrapcrypt_decrypt_init_equals_cryptsetups_and_is_finished_by_it() {
    let s = Scratch::new();
    let (img, hdr, kf, plain) = encrypted(&s);
    let mask = |h: &str| {
        let mut j = masked_json(h);
        for d in j["digests"].as_object_mut().unwrap().values_mut() {
            d["iterations"] = "*".into();
        }
        j
    };
    let mut outs = Vec::new();
    for t in BOTH {
        let (i, h) = (
            s.copy(&img, &format!("{t:?}.img")),
            s.copy(&hdr, &format!("{t:?}.hdr")),
        );
        let mut a = cs_decrypt(&h, &kf, &i, &["--init-only"]);
        if t == WC {
            a.retain(|x| x != "--force-offline-reencrypt");
        }
        t.ok(&a);
        assert_eq!(
            sha256_file(&i),
            sha256_file(&img),
            "{t:?} init left the data"
        );
        outs.push((i, h));
    }
    assert_eq!(mask(&outs[0].1), mask(&outs[1].1), "JSON");
    let dump = |h: &str| {
        masked_dump(h)
            .lines()
            .filter(|l| !l.contains("Iterations"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(dump(&outs[0].1), dump(&outs[1].1), "luksDump");
    let (i, h) = &outs[0];
    let a = cs_decrypt(h, &kf, i, &["--resume-only"]);
    CS.ok(&a);
    assert_decrypted(i, h, &plain);
}

#[test]
fn wrapcrypt_decrypt_whole_run_and_bad_input() {
    let s = Scratch::new();
    let (img, hdr, kf, plain) = encrypted(&s);
    // An attached header: cryptsetup's refusal, nothing written.
    let luks = s.image("luks.img", 20);
    format(CS, &luks, &kf, &[]);
    let before = sha256_file(&luks);
    let mut msgs = Vec::new();
    for t in BOTH {
        let o = t.run(&[
            "reencrypt",
            "--decrypt",
            "-q",
            "--force-offline-reencrypt",
            "-d",
            &kf,
            &luks,
        ]);
        assert_eq!(o.code, 1, "{t:?}: {o}");
        msgs.push(o.stderr.trim().to_string());
        assert_eq!(sha256_file(&luks), before, "{t:?} left the device");
    }
    assert_eq!(msgs[0], msgs[1], "same message");
    assert_eq!(msgs[0], "LUKS2 decryption requires --header option.");
    let mut a = cs_decrypt(&hdr, &kf, &img, &["--hotzone-size", "1M"]);
    a.retain(|x| x != "--force-offline-reencrypt");
    WC.ok(&a);
    assert_decrypted(&img, &hdr, &plain);
}

/// wrapcrypt's decrypt (init and 4 hotzones) killed before each of its
/// writes; cryptsetup (`repair`, then `--resume-only`) or wrapcrypt
/// finishes.
fn killed_at_every_write(res: &str) {
    let s = Scratch::new();
    let (base, base_hdr, kf, plain) = encrypted(&s);
    let (mut points, mut finished_by_cs, mut post_last) = (0, 0, 0);
    for k in 1.. {
        let img = s.copy(&base, &format!("k{k}.img"));
        let hdr = s.copy(&base_hdr, &format!("k{k}.hdr"));
        let mut a = cs_decrypt(
            &hdr,
            &kf,
            &img,
            &["--hotzone-size", "1M", "--resilience", res],
        );
        a.retain(|x| x != "--force-offline-reencrypt");
        let mut c = WC.cmd(&a);
        c.env("WRAPCRYPT_FAULT_AT", k.to_string());
        let o = run_cmd(&mut c, None, WC);
        if o.signal.is_none() {
            assert_eq!(o.code, 0, "run past the last write point: {o}");
            assert_decrypted(&img, &hdr, &plain);
            break;
        }
        assert_eq!(o.signal, Some(libc::SIGKILL), "kill point {k}: {o}");
        points += 1;
        let (w, c) = (WC.run(&["luksDump", &hdr]), CS.run(&["luksDump", &hdr]));
        assert_eq!(
            (w.code, &w.stdout),
            (c.code, &c.stdout),
            "luksDump after kill point {k}"
        );
        let j = json(&hdr);
        if j["config"].get("requirements").is_none() {
            if j["segments"]["0"]["type"] == "crypt" {
                // Killed before the init's write: still encrypted, intact.
                assert_eq!(sha256_file(&img), sha256_file(&base), "kill point {k}");
                continue;
            }
            // Killed while wiping after the final header.
            assert_decrypted(&img, &hdr, &plain);
            continue;
        }
        if k % 2 == 0 {
            CS.ok(&["repair", "-q", "--header", &hdr, "-d", &kf, &img]);
            let j = json(&hdr);
            let crypt_left = j["segments"]
                .as_object()
                .unwrap()
                .values()
                .any(|s| s["type"] == "crypt" && s.get("flags").is_none());
            if j["config"].get("requirements").is_none() {
                finished_by_cs += 1;
            } else if crypt_left {
                let r = cs_decrypt(&hdr, &kf, &img, &["--resume-only"]);
                CS.ok(&r);
                finished_by_cs += 1;
            } else {
                // repair of a cut last hotzone leaves the post-last state
                // (all linear, backups beside it); cryptsetup 2.6.1's
                // resume of that state computes progress 0 and decrypts
                // the plaintext again (docs/reencrypt.md): wrapcrypt
                // finalizes it.
                let o = wc_resume(&img, &kf, &["--header", &hdr]);
                assert_eq!(o.code, 0, "wrapcrypt after repair, kill point {k}: {o}");
                post_last += 1;
            }
        } else {
            let o = wc_resume(&img, &kf, &["--header", &hdr]);
            assert_eq!(o.code, 0, "wrapcrypt resume after kill point {k}: {o}");
        }
        assert_decrypted(&img, &hdr, &plain);
    }
    assert!(points >= 8, "only {points} kill points");
    println!("{res}: {points} kill points exercised, {finished_by_cs} finished by cryptsetup, {post_last} repaired by cryptsetup and finalized by wrapcrypt, the rest by wrapcrypt");
}

#[test]
fn wrapcrypt_decrypt_killed_at_every_write_checksum() {
    killed_at_every_write("checksum");
}

#[test]
fn wrapcrypt_decrypt_killed_at_every_write_journal() {
    killed_at_every_write("journal");
}

/// cryptsetup killed (SIGKILL, after SIGSTOP shows both header copies
/// flagging a hotzone) inside a decrypt hotzone: wrapcrypt recovers the
/// cut hotzone from cryptsetup's checksums or journal and finishes.
#[test]
fn cryptsetup_killed_mid_decrypt_hotzone_recovered_by_wrapcrypt() {
    for res in ["checksum", "journal"] {
        let s = Scratch::new();
        let (img, hdr, kf, plain) = encrypted(&s);
        let a = cs_decrypt(
            &hdr,
            &kf,
            &img,
            &["--hotzone-size", "512K", "--resilience", res],
        );
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        kill_mid_hotzone(&a, &hdr);
        assert!(hot_on_disk(&hdr), "{res}: a hotzone was cut off");
        let (w, c) = (WC.run(&["luksDump", &hdr]), CS.ok(&["luksDump", &hdr]));
        assert_eq!((w.code, &w.stdout), (0, &c.stdout), "{res}: luksDump");
        let o = wc_resume(&img, &kf, &["--header", &hdr, "-v"]);
        assert_eq!(o.code, 0, "{res}: {o}");
        assert!(o.stderr.contains("recovering"), "{res}: {o}");
        assert_decrypted(&img, &hdr, &plain);
    }
}

/// SIGINT stops wrapcrypt's decrypt after the hotzone in flight
/// ("Reencryption interrupted.", exit 1), the header records the
/// progress, and cryptsetup's `--resume-only` (no repair) finishes.
#[test]
fn wrapcrypt_decrypt_interrupted_finished_by_cryptsetup() {
    use std::process::Stdio;
    let s = Scratch::new();
    let (img, hdr, kf, plain) = encrypted(&s);
    let start = seqid(&hdr);
    let mut a = cs_decrypt(&hdr, &kf, &img, &["--hotzone-size", "256K"]);
    a.retain(|x| x != "--force-offline-reencrypt" && x != "-q");
    let mut child = WC
        .cmd(&a)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrapcrypt runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    // init (1 header write) and two hotzones (2 each).
    while seqid(&hdr) < start + 1 + 2 * 2 {
        assert!(child.try_wait().expect("wait").is_none(), "ended too early");
        assert!(std::time::Instant::now() < deadline, "no progress");
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Reencryption interrupted."));
    let j = json(&hdr);
    assert!(j["config"].get("requirements").is_some(), "{j}");
    assert!(!hot_on_disk(&hdr), "no hotzone left cut off");
    let r = cs_decrypt(&hdr, &kf, &img, &["--resume-only"]);
    CS.ok(&r);
    assert_decrypted(&img, &hdr, &plain);
}
