//! Crash safety of `wrapcrypt reencrypt`: the whole run (init, every
//! hotzone, finalization) is killed with SIGKILL right before each of its
//! device writes in turn (`WRAPCRYPT_FAULT_AT=k`), on a fresh copy of the
//! same seeded volume. After each kill:
//!
//! * if the header records a reencryption, `--resume-only` finishes it
//!   (wrapcrypt for most kill points, cryptsetup for every third one,
//!   after `cryptsetup repair` where a hotzone was cut off);
//! * otherwise the volume is a plain LUKS2 volume, before or after the
//!   reencryption as a whole;
//!
//! and in every case both tools print the same luksDump of the state the
//! kill left, both open the finished volume and the data decrypts to the
//! plaintext written before the run.

mod common;
mod reencrypt_common;

use common::*;
use reencrypt_common::*;

#[test]
fn killed_at_every_write_then_resumed_checksum() {
    killed_at_every_write("checksum", false);
}

#[test]
fn killed_at_every_write_then_resumed_journal() {
    killed_at_every_write("journal", false);
}

/// Torn writes: at each write point the first quarter of the write (whole
/// 4096-byte blocks) lands and is synced before the kill
/// (`WRAPCRYPT_FAULT_TORN`): a header copy whose new binary header no
/// longer verifies against its old JSON area, a hotzone partly in the new
/// key, a partly written checksum or journal area.
#[test]
fn torn_at_every_write_then_resumed_checksum() {
    killed_at_every_write("checksum", true);
}

#[test]
fn torn_at_every_write_then_resumed_journal() {
    killed_at_every_write("journal", true);
}

fn killed_at_every_write(resilience: &str, torn: bool) {
    let s = Scratch::new();
    // 4 MiB of data, 1 MiB hotzones: 4 steps.
    let (base, kf, h) = seeded(&s, "base.img", 20, "4096");
    let old = volume_key(CS, &base, &kf, &[]);
    let args = |img: &str| {
        let mut a: Vec<String> = [
            "reencrypt",
            "-q",
            "--resilience",
            resilience,
            "--hotzone-size",
            "1M",
            "-d",
            &kf,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        a.extend(FAST.iter().map(|x| x.to_string()));
        a.push(img.to_string());
        a
    };

    // A clean run, counting its write points.
    let count = s.p("count");
    let img = s.copy(&base, "count.img");
    let mut c = WC.cmd(&args(&img));
    c.env("WRAPCRYPT_FAULT_COUNT", &count);
    let o = run_cmd(&mut c, None, WC);
    assert_eq!(o.code, 0, "clean run: {o}");
    let writes = std::fs::read_to_string(&count).unwrap().lines().count();
    // init: keyslot area + header + header; per hotzone: resilience area
    // + header + data + header (the last without its post header); final
    // header + 2 area wipes.
    assert!(writes >= 5 + 4 * 6 - 2 + 4, "only {writes} write points");
    assert_eq!(data_hash(&img, &kf, "4096"), h);

    let (mut resumed_wc, mut resumed_cs, mut repaired_cs, mut plain) = (0, 0, 0, 0);
    for k in 1..=writes {
        let img = s.copy(&base, &format!("k{k}.img"));
        let mut c = WC.cmd(&args(&img));
        c.env("WRAPCRYPT_FAULT_AT", k.to_string());
        if torn {
            c.env("WRAPCRYPT_FAULT_TORN", "1");
        }
        let o = run_cmd(&mut c, None, WC);
        assert_eq!(o.signal, Some(libc::SIGKILL), "kill point {k}: {o}");
        // Whatever state the kill left, both tools print the same luksDump.
        let wd = WC.run(&["luksDump", &img]);
        let cd = CS.run(&["luksDump", &img]);
        assert_eq!(
            (wd.code, &wd.stdout),
            (cd.code, &cd.stdout),
            "luksDump after kill point {k}"
        );
        let j = json(&img);
        let in_progress = j["config"].get("requirements").is_some();
        if in_progress {
            if k % 3 == 0 {
                // cryptsetup recovers an interrupted hotzone only in
                // `repair` (its resume refuses: "Device requires
                // reencryption recovery. Run repair first.").
                let hot = j["segments"]
                    .as_object()
                    .unwrap()
                    .values()
                    .any(|g| g["flags"].to_string().contains("in-reencryption"));
                if hot {
                    CS.ok(&["repair", "-q", "-d", &kf, &img]);
                    repaired_cs += 1;
                }
                // Its repair of the last hotzone also finalizes.
                let still = json(&img)["config"].get("requirements").is_some();
                if still {
                    CS.ok(&[
                        "reencrypt",
                        "-q",
                        "--force-offline-reencrypt",
                        "--resume-only",
                        "-d",
                        &kf,
                        &img,
                    ]);
                }
                resumed_cs += 1;
            } else {
                let o = wc_resume(&img, &kf, &["--hotzone-size", "1M"]);
                assert_eq!(o.code, 0, "resume after kill point {k}: {o}");
                resumed_wc += 1;
            }
            assert_finished(&img, &kf, &old);
        } else {
            plain += 1;
            assert_eq!(test_pass(CS, &img, &kf, &[]), 0, "kill point {k}");
            assert_eq!(test_pass(WC, &img, &kf, &[]), 0, "kill point {k}");
        }
        assert_eq!(data_hash(&img, &kf, "4096"), h, "data after kill point {k}");
        std::fs::remove_file(&img).unwrap();
    }
    println!(
        "reencrypt crash test ({resilience}{}): {writes} kill points exercised; resumed by wrapcrypt {resumed_wc}, by cryptsetup {resumed_cs} ({repaired_cs} after its hotzone repair); plain LUKS2 (before or after) {plain}",
        if torn { ", torn writes" } else { "" }
    );
    assert_eq!(resumed_wc + resumed_cs + plain, writes);
    assert!(resumed_wc > 0 && resumed_cs > 0);
}

/// A resume killed at each of its own write points (starting from a run
/// cut off mid-hotzone, so the first writes are the recovery's) is resumed
/// again: recovery of a recovery.
#[test]
fn resume_killed_at_every_write_then_resumed_again() {
    let s = Scratch::new();
    let (base, kf, h) = seeded(&s, "base.img", 20, "4096");
    let old = volume_key(CS, &base, &kf, &[]);
    let mut a = vec!["reencrypt", "-q", "--hotzone-size", "1M", "-d", &kf];
    a.extend_from_slice(FAST);
    a.push(&base);
    // Write 9: the first hotzone's data, after its hot header.
    let mut c = WC.cmd(&a);
    c.env("WRAPCRYPT_FAULT_AT", "9");
    assert_eq!(run_cmd(&mut c, None, WC).signal, Some(libc::SIGKILL));
    let resume = |img: &str| -> Vec<String> {
        [
            "reencrypt",
            "--resume-only",
            "--hotzone-size",
            "1M",
            "-d",
            &kf,
            img,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let count = s.p("count");
    let probe = s.copy(&base, "probe.img");
    let mut c = WC.cmd(&resume(&probe));
    c.env("WRAPCRYPT_FAULT_COUNT", &count);
    assert_eq!(run_cmd(&mut c, None, WC).code, 0);
    let writes = std::fs::read_to_string(&count).unwrap().lines().count();
    assert!(writes >= 10, "{writes}");
    for k in 1..=writes {
        let img = s.copy(&base, &format!("r{k}.img"));
        let mut c = WC.cmd(&resume(&img));
        c.env("WRAPCRYPT_FAULT_AT", k.to_string());
        assert_eq!(run_cmd(&mut c, None, WC).signal, Some(libc::SIGKILL), "{k}");
        if json(&img)["config"].get("requirements").is_some() {
            let o = wc_resume(&img, &kf, &[]);
            assert_eq!(o.code, 0, "second resume after kill point {k}: {o}");
        }
        assert_finished(&img, &kf, &old);
        assert_eq!(data_hash(&img, &kf, "4096"), h, "data after kill point {k}");
        std::fs::remove_file(&img).unwrap();
    }
    println!("reencrypt resume crash test: {writes} kill points of a recovering resume exercised");
}

/// Data that ends in a part of a checksum block (4 MiB + 512 bytes of
/// 512-byte sectors): the last, partial hotzone is protected too, and a
/// kill before or after its data write is recovered.
#[test]
fn partial_last_hotzone_recovered() {
    let s = Scratch::new();
    let kf = s.key("pw", b"partial hotzone");
    let base = s.p("base.img");
    std::fs::File::create(&base)
        .and_then(|f| f.set_len((20 << 20) + 512))
        .unwrap();
    let mut o = FAST.to_vec();
    o.extend(["--sector-size", "512"]);
    format(CS, &base, &kf, &o);
    let plain = s.p("plain.bin");
    std::fs::write(
        &plain,
        (0..(4u32 << 20) + 512)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let key = volume_key(CS, &base, &kf, &[]);
    xts(
        &["enc", &base, &DATA_OFFSET.to_string(), "512", &plain],
        &key,
    );
    let h = sha256_file(&plain);
    let args = |img: &str| -> Vec<String> {
        let mut a: Vec<String> = ["reencrypt", "-q", "--hotzone-size", "1M", "-d", &kf]
            .iter()
            .map(|x| x.to_string())
            .collect();
        a.extend(FAST.iter().map(|x| x.to_string()));
        a.push(img.to_string());
        a
    };
    let count = s.p("count");
    let probe = s.copy(&base, "probe.img");
    let mut c = WC.cmd(&args(&probe));
    c.env("WRAPCRYPT_FAULT_COUNT", &count);
    assert_eq!(run_cmd(&mut c, None, WC).code, 0);
    assert_eq!(data_hash(&probe, &kf, "512"), h);
    let n = std::fs::read_to_string(&count).unwrap().lines().count();
    // ... last hotzone: area, hot header x2, data (n-4); then the final
    // header x2 and 2 wipes. Kill before and after the data write.
    for k in [n - 4, n - 3] {
        let img = s.copy(&base, &format!("k{k}.img"));
        let mut c = WC.cmd(&args(&img));
        c.env("WRAPCRYPT_FAULT_AT", k.to_string());
        assert_eq!(run_cmd(&mut c, None, WC).signal, Some(libc::SIGKILL));
        let j = json(&img);
        assert!(
            j["segments"].to_string().contains("in-reencryption"),
            "kill point {k} cut a hotzone: {j}"
        );
        let o = wc_resume(&img, &kf, &[]);
        assert_eq!(o.code, 0, "{o}");
        assert_finished(&img, &kf, &key);
        assert_eq!(data_hash(&img, &kf, "512"), h, "data after kill point {k}");
    }
}
