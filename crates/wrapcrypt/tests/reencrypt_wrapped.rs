//! `reencrypt` onto wrapped keys (issue 11 item 3): a clear-key volume,
//! or a waes volume, moves onto a fresh key generated inside a provider
//! (the custodian, or a PKCS#11 token through SoftHSM2). The data hash is
//! checked through `open` (the provider's data path) against the
//! plaintext written before; cryptsetup reads every header; a kill at
//! every write point is resumed. The memory proof of the reencrypting
//! process is in `memory_proof.rs`.

mod common;
mod reencrypt_common;
mod wrapped_common;

use std::path::Path;
use std::process::Command;

use common::*;
use reencrypt_common::*;
use wrapped_common::*;

/// SHA-256 of the whole opened volume, through `open` with `extra`
/// options and environment `envs`.
fn opened_hash(
    c: &Custodian,
    img: &str,
    kf: &str,
    extra: &[&str],
    envs: &[(&str, &Path)],
) -> String {
    let name = format!(
        "wcrw{}x{}",
        std::process::id(),
        img.len() + img.bytes().map(u32::from).sum::<u32>() as usize
    );
    let mut a = vec!["open", img, &name, "--key-file", kf];
    a.extend_from_slice(extra);
    let mut o = c.cmd(&a);
    for (k, v) in envs {
        o.env(k, v);
    }
    let r = run_cmd(&mut o, None, WC);
    assert_eq!(r.code, 0, "open {img}: {r}");
    let h = sha256_file(&format!("/dev/mapper/{name}"));
    c.ok(&["close", &name]);
    h
}

fn data_area(img: &str) -> Vec<u8> {
    bytes(img)[DATA_OFFSET as usize..].to_vec()
}

fn reencrypt_args<'a>(kf: &'a str, img: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["reencrypt", "-q", "--key-file", kf];
    a.extend_from_slice(extra);
    a.extend_from_slice(FAST);
    a.push(img);
    a
}

/// The key tokens of a finished header: one VP and one provider token,
/// unbound; `provider` names the provider.
fn assert_key_tokens(img: &str, provider: &str) {
    let j = json(img);
    let tokens = j["tokens"].as_object().unwrap();
    let kinds: Vec<&str> = tokens
        .values()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{j}");
    assert!(kinds.contains(&"waes-verification-pattern"), "{j}");
    assert!(kinds.contains(&"waes-provider"), "{j}");
    for t in tokens.values() {
        assert_eq!(t["keyslots"], serde_json::json!([]), "{j}");
        if t["type"] == "waes-provider" {
            assert_eq!(t["provider"], provider, "{j}");
        }
    }
}

#[test]
fn clear_volume_moves_onto_a_key_generated_in_the_custodian() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let (img, kf, h) = seeded(&s, "a.img", 48, "4096");
    let old_key = volume_key(CS, &img, &kf, &[]);
    let before = data_area(&img);
    c.ok(&reencrypt_args(
        &kf,
        &img,
        &["--cipher", "waes-xts-plain64", "--hotzone-size", "4M"],
    ));

    // cryptsetup reads the finished header: one waes segment, keyslots
    // holding the 2048-bit blob, no reencryption left.
    let j = json(&img);
    let segs = j["segments"].as_object().unwrap();
    assert_eq!(segs.len(), 1, "{j}");
    assert_eq!(segs["0"]["encryption"], "waes-xts-plain64", "{j}");
    assert!(j["config"].get("requirements").is_none(), "{j}");
    for k in j["keyslots"].as_object().unwrap().values() {
        assert_eq!(
            (k["type"].as_str(), k["key_size"].as_u64()),
            (Some("luks2"), Some(256)),
            "{j}"
        );
    }
    assert_key_tokens(&img, "custodian");
    assert_eq!(
        test_pass(CS, &img, &kf, &[]),
        0,
        "cryptsetup opens the keyslot"
    );

    // The provider holds the key the header names.
    let (code, v) = c.validate(&img, &kf);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verification-pattern-matches"], true, "{v}");
    assert_eq!(v["usable"], true, "{v}");

    // Data: unchanged through the provider; every 4 KiB block rewritten;
    // the old key no longer decrypts it.
    assert_eq!(opened_hash(&c, &img, &kf, &[], &[]), h, "data through open");
    let after = data_area(&img);
    let same = before
        .chunks(4096)
        .zip(after.chunks(4096))
        .filter(|(a, b)| a == b)
        .count();
    assert_eq!(same, 0, "{same} blocks still hold the old ciphertext");
    assert_ne!(
        xts(&["dec", &img, &DATA_OFFSET.to_string(), "4096"], &old_key),
        h,
        "the old key still decrypts the data"
    );
}

/// A SoftHSM2 token "rw" with AES-256 wrapping key "kek" (pkcs11-tool).
fn softhsm(dir: &Path) -> std::path::PathBuf {
    let conf = softhsm_token(dir, "rw", "so-4711", "1234");
    softhsm_run(
        &conf,
        "pkcs11-tool",
        &[
            "--module",
            SOFTHSM,
            "--token-label",
            "rw",
            "--login",
            "--pin",
            "1234",
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            "kek",
            "--id",
            "01",
            "--usage-wrap",
            "--sensitive",
        ],
    );
    conf
}

#[test]
fn waes_volume_moves_onto_a_pkcs11_key() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let conf = softhsm(&s.path("hsm"));
    let pin = s.key("pin", b"1234\n");
    let uri = format!("pkcs11:token=rw;object=kek?module-path={SOFTHSM}");
    let kf = s.key("pw", b"waes to pkcs11");
    let img = s.image("w.img", 40);
    format_waes(&c, &img, &kf);
    // Data written through the custodian's engine.
    let name = format!("wcrwp{}", std::process::id());
    c.ok(&["open", &img, &name, "--key-file", &kf]);
    let st = Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "oflag=direct", "status=none"])
        .arg(format!("of=/dev/mapper/{name}"))
        .status()
        .unwrap();
    // dd ends with "No space left on device" once the volume is full.
    assert!(st.code().is_some(), "dd: {st}");
    let h = sha256_file(&format!("/dev/mapper/{name}"));
    c.ok(&["close", &name]);
    let (_, v0) = c.validate(&img, &kf);
    let old_vp = v0["verification-pattern"].as_str().unwrap().to_string();

    let env = [("SOFTHSM2_CONF", conf.as_path())];
    let mut r = c.cmd(&reencrypt_args(
        &kf,
        &img,
        &[
            "--cipher",
            "waes-xts-plain64",
            "--key-provider",
            &uri,
            "--pin-file",
            &pin,
        ],
    ));
    r.env("SOFTHSM2_CONF", &conf);
    let o = run_cmd(&mut r, None, WC);
    assert_eq!(o.code, 0, "reencrypt onto pkcs11: {o}");

    assert_key_tokens(&img, "pkcs11");
    let mut vcmd = c.cmd(&[
        "validate",
        "--json",
        &img,
        "--key-file",
        &kf,
        "--pin-file",
        &pin,
    ]);
    vcmd.env("SOFTHSM2_CONF", &conf);
    let o = run_cmd(&mut vcmd, None, WC);
    assert_eq!(o.code, 0, "validate: {o}");
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["provider"], "pkcs11", "{v}");
    assert_eq!(v["verification-pattern-matches"], true, "{v}");
    assert_ne!(
        v["verification-pattern"].as_str().unwrap(),
        old_vp,
        "new key, new VP"
    );
    assert_eq!(
        test_pass(CS, &img, &kf, &[]),
        0,
        "cryptsetup opens the keyslot"
    );
    assert_eq!(
        opened_hash(&c, &img, &kf, &["--pin-file", &pin], &env),
        h,
        "data through the token"
    );
}

/// A kill before each write of a reencryption onto a custodian key
/// (`WRAPCRYPT_FAULT_AT=k`; with `torn`, the first quarter of the write
/// lands), then `--resume-only`: the data opens unchanged, with the old
/// clear key (killed before the reencryption header) or the new one.
fn killed_onto_custodian_key(torn: bool) {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let (base, kf, h) = seeded(&s, "base.img", 20, "4096");
    let extra = ["--cipher", "waes-xts-plain64", "--hotzone-size", "1M"];
    let count = s.p("count");
    let img = s.copy(&base, "count.img");
    let mut r = c.cmd(&reencrypt_args(&kf, &img, &extra));
    r.env("WRAPCRYPT_FAULT_COUNT", &count);
    let o = run_cmd(&mut r, None, WC);
    assert_eq!(o.code, 0, "clean run: {o}");
    let writes = std::fs::read_to_string(&count).unwrap().lines().count();
    assert!(writes >= 20, "only {writes} write points");
    let (mut resumed, mut before, mut after) = (0, 0, 0);
    for k in 1..=writes {
        let img = s.copy(&base, &format!("k{k}.img"));
        let mut r = c.cmd(&reencrypt_args(&kf, &img, &extra));
        r.env("WRAPCRYPT_FAULT_AT", k.to_string());
        if torn {
            r.env("WRAPCRYPT_FAULT_TORN", "1");
        }
        let o = run_cmd(&mut r, None, WC);
        assert_eq!(o.signal, Some(libc::SIGKILL), "kill point {k}: {o}");
        // Both tools print the same luksDump; wrapcrypt's ends with its
        // "Wrapped key:" section on a waes volume.
        let wd = WC.run(&["luksDump", &img]);
        let cd = CS.run(&["luksDump", &img]);
        let w = wd.stdout.split("Wrapped key:\n").next().unwrap();
        assert_eq!(
            (wd.code, w),
            (cd.code, cd.stdout.as_str()),
            "luksDump after kill point {k}"
        );
        if json(&img)["config"].get("requirements").is_some() {
            let o = c.wc(
                &[
                    "reencrypt",
                    "--resume-only",
                    "-q",
                    "--hotzone-size",
                    "1M",
                    "-d",
                    &kf,
                    &img,
                ],
                None,
            );
            assert_eq!(o.code, 0, "resume after kill point {k}: {o}");
            resumed += 1;
        }
        let j = json(&img);
        assert!(
            j["config"].get("requirements").is_none(),
            "kill point {k}: {j}"
        );
        if j["segments"]["0"]["encryption"] == "waes-xts-plain64" {
            assert_key_tokens(&img, "custodian");
            assert_eq!(
                opened_hash(&c, &img, &kf, &[], &[]),
                h,
                "data after kill point {k}"
            );
            after += 1;
        } else {
            assert_eq!(data_hash(&img, &kf, "4096"), h, "data after kill point {k}");
            before += 1;
        }
        std::fs::remove_file(&img).unwrap();
    }
    println!(
        "reencrypt onto a custodian key{}: {writes} kill points exercised; resumed {resumed}; clear volume as before {before}; waes volume {after}",
        if torn { ", torn writes" } else { "" }
    );
    assert!(resumed > 0 && before > 0);
    assert_eq!(before + after, writes);
}

#[test]
fn killed_at_every_write_onto_a_custodian_key_then_resumed() {
    killed_onto_custodian_key(false);
}

#[test]
fn torn_at_every_write_onto_a_custodian_key_then_resumed() {
    killed_onto_custodian_key(true);
}

/// Online (issue 11 items 3 and 4) onto a key generated in a PKCS#11 token:
/// the client sends the PIN with the keys on the control socket (locked
/// memory), so the server's engine logs in to encrypt each hotzone under
/// the new key. The data read through the open device is the same before,
/// during and after; then through a fresh open on the token.
#[test]
fn clear_volume_moves_online_onto_a_pkcs11_key() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let conf = softhsm(&s.path("hsm"));
    let pin = s.key("pin", b"1234\n");
    let uri = format!("pkcs11:token=rw;object=kek?module-path={SOFTHSM}");
    let kf = s.key("pw", b"clear to pkcs11 online");
    let img = s.image("o.img", 40);
    format(CS, &img, &kf, FAST);
    let old_key = volume_key(CS, &img, &kf, &[]);
    let name = format!("wcrwo{}", std::process::id());
    let mut o = c.cmd(&["open", &img, &name, "--key-file", &kf]);
    o.env("SOFTHSM2_CONF", &conf);
    let r = run_cmd(&mut o, None, WC);
    assert_eq!(r.code, 0, "open: {r}");
    let dev = format!("/dev/mapper/{name}");
    let st = Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "oflag=direct", "status=none"])
        .arg(format!("of={dev}"))
        .status()
        .unwrap();
    assert!(st.code().is_some(), "dd: {st}");
    let h = sha256_file(&dev);
    let mut r = c.cmd(&[
        "reencrypt",
        "-q",
        "--active-name",
        &name,
        "--key-file",
        &kf,
        "--cipher",
        "waes-xts-plain64",
        "--key-provider",
        &uri,
        "--pin-file",
        &pin,
        "--hotzone-size",
        "1M",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        &img,
    ]);
    r.env("SOFTHSM2_CONF", &conf);
    let out = run_cmd(&mut r, None, WC);
    let served = sha256_file(&dev);
    c.ok(&["close", &name]);
    assert_eq!(out.code, 0, "online reencrypt onto pkcs11: {out}");
    assert_eq!(served, h, "data served by the open device after the run");
    assert_key_tokens(&img, "pkcs11");
    assert_ne!(volume_key(CS, &img, &kf, &[]), old_key);
    let env = [("SOFTHSM2_CONF", conf.as_path())];
    assert_eq!(
        opened_hash(&c, &img, &kf, &["--pin-file", &pin], &env),
        h,
        "data through the token after a reopen"
    );
}
