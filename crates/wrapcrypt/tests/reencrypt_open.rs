//! `open` of a volume in mid-reencryption (issue 11 item 2: every action
//! cryptsetup allows on it works): reads return the plaintext in both
//! layouts, writes land in the layout of their side of the boundary, and
//! the reencryption then finishes (by cryptsetup or wrapcrypt) with the
//! data written while open.

mod common;
mod reencrypt_common;
mod wrapped_common;

use std::process::Command;

use common::*;
use reencrypt_common::*;
use wrapped_common::*;

fn dd_to(src: &str, name: &str) {
    let st = Command::new("dd")
        .args(["bs=1M", "oflag=direct", "status=none"])
        .arg(format!("if={src}"))
        .arg(format!("of=/dev/mapper/{name}"))
        .status()
        .unwrap();
    assert!(st.success(), "dd to {name}");
}

/// Bytes of the data area already in the new layout (the first segment's
/// fixed length), from cryptsetup's JSON.
fn boundary(img: &str) -> u64 {
    let j = json(img);
    assert!(
        j["config"].get("requirements").is_some(),
        "not in reencryption: {j}"
    );
    j["segments"]["0"]["size"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn open_mid_reencryption_by_cryptsetup_reads_and_writes_both_layouts() {
    let s = Scratch::new();
    let (img, kf, h) = seeded(&s, "m.img", 48, "4096");
    let mut a = vec![
        "reencrypt",
        "-q",
        "--force-offline-reencrypt",
        "--hotzone-size",
        "1M",
        "-d",
        &kf,
    ];
    a.extend_from_slice(FAST);
    a.push(&img);
    interrupt(&a, &img, 8);
    let done = boundary(&img);
    assert!(done > 0 && done < 32 << 20, "boundary {done}");

    let name = format!("wcro{}", std::process::id());
    WC.ok(&["open", &img, &name, "--key-file", &kf]);
    let st = WC.ok(&["status", &name]);
    assert!(st.stdout.contains("reencryption: in progress"), "{st}");
    assert_eq!(
        sha256_file(&format!("/dev/mapper/{name}")),
        h,
        "reads across the boundary"
    );
    let (p2, h2) = random_file(&s, "p2.bin", 32 << 20);
    dd_to(&p2, &name);
    assert_eq!(sha256_file(&format!("/dev/mapper/{name}")), h2);
    WC.ok(&["close", &name]);
    // Still the same reencryption: cryptsetup finishes it, and the data
    // written through the split view decrypts under the final key.
    assert_eq!(boundary(&img), done);
    CS.ok(&[
        "reencrypt",
        "-q",
        "--force-offline-reencrypt",
        "--resume-only",
        "-d",
        &kf,
        &img,
    ]);
    assert_eq!(
        data_hash(&img, &kf, "4096"),
        h2,
        "data after cryptsetup finished"
    );
    println!("opened at boundary {done} of {} bytes", 32u64 << 20);
}

#[test]
fn open_mid_reencryption_onto_a_custodian_key() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let (img, kf, h) = seeded(&s, "w.img", 48, "4096");
    let mut a = vec![
        "reencrypt",
        "-q",
        "--cipher",
        "waes-xts-plain64",
        "--hotzone-size",
        "1M",
        "-d",
        &kf,
    ];
    a.extend_from_slice(FAST);
    a.push(&img);
    // Init (2 header writes) and a few hotzones.
    interrupt_cmd(c.cmd(&a), &img, 9);
    let done = boundary(&img);
    assert!(done > 0 && done < 32 << 20, "boundary {done}");

    let name = format!("wcrw{}", std::process::id());
    c.ok(&["open", &img, &name, "--key-file", &kf]);
    let st = c.ok(&["status", &name]);
    assert!(st.stdout.contains("reencryption: in progress"), "{st}");
    assert!(st.stdout.contains("provider: custodian"), "{st}");
    assert_eq!(
        sha256_file(&format!("/dev/mapper/{name}")),
        h,
        "reads across the boundary"
    );
    let (p2, h2) = random_file(&s, "p2.bin", 32 << 20);
    dd_to(&p2, &name);
    c.ok(&["close", &name]);
    assert_eq!(boundary(&img), done);
    c.ok(&["reencrypt", "-q", "--resume-only", "-d", &kf, &img]);
    c.ok(&["open", &img, &name, "--key-file", &kf]);
    let got = sha256_file(&format!("/dev/mapper/{name}"));
    c.ok(&["close", &name]);
    assert_eq!(
        got, h2,
        "data written while split, after the reencryption ended"
    );
}

#[test]
fn open_refuses_an_interrupted_hotzone_and_changes_nothing() {
    let s = Scratch::new();
    let (img, kf, _) = seeded(&s, "h.img", 24, "4096");
    let mut a = vec!["reencrypt", "-q", "--hotzone-size", "1M", "-d", &kf];
    a.extend_from_slice(FAST);
    a.push(&img);
    // Write 9: the first hotzone's data, after its hot header.
    let mut c = WC.cmd(&a);
    c.env("WRAPCRYPT_FAULT_AT", "9");
    assert_eq!(run_cmd(&mut c, None, WC).signal, Some(libc::SIGKILL));
    let before = sha256_file(&img);
    let name = format!("wcrh{}", std::process::id());
    let o = WC.run(&["open", &img, &name, "--key-file", &kf]);
    assert_ne!(o.code, 0, "{o}");
    assert_eq!(o.stderr.trim().lines().count(), 1, "{o}");
    assert!(o.stderr.contains("requires reencryption recovery"), "{o}");
    assert!(!std::path::Path::new(&format!("/dev/mapper/{name}")).exists());
    assert_eq!(sha256_file(&img), before, "image unchanged");
}
