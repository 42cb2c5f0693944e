//! The wrapped-key lifecycle through the real binary and a private
//! custodian: validate, the master-key change procedure over several
//! volumes, keys under OLD, several keyslots, setvp/setkey, convert (data
//! read back identically through `open`), keys list and crypttab.

mod common;
mod wrapped_common;

use common::*;
use wrapped_common::*;

fn reg(v: &serde_json::Value) -> &str {
    v["register"].as_str().unwrap_or("-")
}

#[test]
fn validate_reports_provider_register_and_vp() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let ka = s.key("ka", b"passphrase A");
    let img = s.image("v.img", 20);
    format_waes(&c, &img, &ka);
    let (code, v) = c.validate(&img, &ka);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["provider"], "custodian");
    assert_eq!(v["protection"], "separate-process");
    assert_eq!(reg(&v), "CURRENT");
    assert_eq!(v["verification-pattern-matches"], true);
    let status = c.ok(&["custodian", "status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(status.stdout.trim()).unwrap();
    assert_eq!(
        v["wrapping-key"].as_str().unwrap(),
        format!("mkvp:{}", st["registers"]["CURRENT"].as_str().unwrap())
    );
    // cryptsetup sees the same stored pattern in the token.
    let j: serde_json::Value =
        serde_json::from_str(&CS.ok(&["luksDump", "--dump-json-metadata", &img]).stdout).unwrap();
    let tok = j["tokens"]
        .as_object()
        .unwrap()
        .values()
        .find(|t| t["type"] == "waes-verification-pattern")
        .unwrap();
    assert_eq!(tok["verification-pattern"], v["verification-pattern"]);
    // A wrong stored pattern: exit 2; none stored: exit 1; setvp restores.
    let id = j["tokens"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, t)| t["type"] == "waes-verification-pattern")
        .map(|(k, _)| k.clone())
        .unwrap();
    CS.ok(&["token", "remove", "--token-id", &id, &img]);
    let (code, v2) = c.validate(&img, &ka);
    assert_eq!(code, 1, "{v2}");
    let fake = s.key(
        "fake.json",
        format!(
            r#"{{"type":"waes-verification-pattern","keyslots":[],"verification-pattern":"{}"}}"#,
            "00".repeat(32)
        )
        .as_bytes(),
    );
    CS.ok(&["token", "import", "--json-file", &fake, &img]);
    let (code, v2) = c.validate(&img, &ka);
    assert_eq!(code, 2, "{v2}");
    assert_eq!(v2["verification-pattern-matches"], false);
    c.ok(&["setvp", "-q", &img, "--key-file", &ka]);
    let (code, v3) = c.validate(&img, &ka);
    assert_eq!(code, 0, "{v3}");
    assert_eq!(v3["stored-verification-pattern"], v["verification-pattern"]);
    // wrong passphrase
    let bad = s.key("bad", b"nope");
    assert_eq!(c.validate(&img, &bad).0, 2);
}

#[test]
fn master_key_change_procedure_over_several_volumes() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let ka = s.key("ka", b"passphrase A");
    let vols: Vec<String> = (0..5).map(|i| s.image(&format!("v{i}.img"), 20)).collect();
    for v in &vols {
        format_waes(&c, v, &ka);
    }
    let vp: Vec<String> = vols
        .iter()
        .map(|v| {
            c.validate(v, &ka).1["verification-pattern"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    c.ok(&["custodian", "load-new-master-key"]);
    // Stage the first three; v3 and v4 are forgotten.
    for v in &vols[..3] {
        c.ok(&["reencipher", "--staged", v, "--key-file", &ka]);
        let (code, r) = c.validate(v, &ka);
        assert_eq!(code, 0, "staged volume still opens: {r}");
        assert_eq!(reg(&r), "CURRENT");
        assert!(
            r["reencipher-staged"]["state"]
                .as_str()
                .unwrap()
                .contains("NEW"),
            "{r}"
        );
    }
    c.ok(&["custodian", "set-master-key"]);
    for v in &vols {
        // Before completion every volume still opens (old blob, now under OLD).
        let (code, r) = c.validate(v, &ka);
        assert_eq!(code, 0, "{r}");
        assert_eq!(reg(&r), "OLD");
    }
    for v in &vols[..3] {
        // Bare `reencipher` on a staged volume completes it (zkey's default).
        c.ok(&["reencipher", v, "--key-file", &ka]);
    }
    for (i, v) in vols.iter().enumerate() {
        let (code, r) = c.validate(v, &ka);
        assert_eq!(code, 0, "{r}");
        assert_eq!(reg(&r), if i < 3 { "CURRENT" } else { "OLD" }, "volume {i}");
        assert_eq!(
            r["verification-pattern"],
            vp[i].as_str(),
            "same effective key"
        );
        assert!(r["reencipher-staged"].is_null());
        assert_eq!(test_pass(WC, v, &ka, &[]), 0);
        assert_eq!(test_pass(CS, v, &ka, &[]), 0);
    }
    // keys list sees the registers and who uses them, without passphrases.
    let l = c.ok(&["keys", "list", "--json", &vols[0], &vols[3]]);
    let l: serde_json::Value = serde_json::from_str(l.stdout.trim()).unwrap();
    assert_eq!(l["volumes"][0]["register"], "CURRENT", "{l}");
    assert_eq!(l["volumes"][1]["register"], "OLD", "{l}");
    assert_eq!(l["volumes"][0]["verification-pattern"], vp[0].as_str());
    // --from-old fixes v3 in place (the default mode for keys under OLD).
    c.ok(&["reencipher", &vols[3], "--key-file", &ka]);
    let (code, r) = c.validate(&vols[3], &ka);
    assert_eq!((code, reg(&r)), (0, "CURRENT"), "{r}");
    // The next change without staging: v4 (still under OLD) is lost, the
    // others are now under OLD and still open.
    c.ok(&["custodian", "load-new-master-key"]);
    c.ok(&["custodian", "set-master-key"]);
    for v in &vols[..4] {
        let (code, r) = c.validate(v, &ka);
        assert_eq!((code, reg(&r)), (0, "OLD"), "{r}");
    }
    let (code, r) = c.validate(&vols[4], &ka);
    assert_eq!(code, 1, "a key under a dropped master key is invalid: {r}");
    assert_eq!(r["usable"], false);
    c.ok(&[
        "reencipher",
        "--from-old",
        "--in-place",
        &vols[0],
        "--key-file",
        &ka,
    ]);
    assert_eq!(reg(&c.validate(&vols[0], &ka).1), "CURRENT");
}

#[test]
fn refusals() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let ka = s.key("ka", b"passphrase A");
    let img = s.image("v.img", 20);
    format_waes(&c, &img, &ka);
    // nothing staged
    assert_eq!(
        c.wc(&["reencipher", "--complete", &img, "--key-file", &ka], None)
            .code,
        1
    );
    // NEW empty
    assert_ne!(
        c.wc(&["reencipher", "--to-new", &img, "--key-file", &ka], None)
            .code,
        0
    );
    c.ok(&["custodian", "load-new-master-key"]);
    // in-place to NEW is refused; nothing written
    let before = bytes(&img);
    let o = c.wc(
        &[
            "reencipher",
            "--to-new",
            "--in-place",
            &img,
            "--key-file",
            &ka,
        ],
        None,
    );
    assert_eq!(o.code, 1, "{o}");
    assert_same_bytes(&before, &bytes(&img), "refused in-place --to-new wrote");
    // wrong passphrase
    let bad = s.key("bad", b"nope");
    assert_eq!(
        c.wc(&["reencipher", "--staged", &img, "--key-file", &bad], None)
            .code,
        2
    );
    assert_same_bytes(&before, &bytes(&img), "bad passphrase wrote");
    // staged twice needs --force
    c.ok(&["reencipher", "--staged", &img, "--key-file", &ka]);
    assert_eq!(
        c.wc(&["reencipher", "--staged", &img, "--key-file", &ka], None)
            .code,
        1
    );
    c.ok(&["reencipher", "--staged", "--force", &img, "--key-file", &ka]);
    let j: serde_json::Value =
        serde_json::from_str(&CS.ok(&["luksDump", "--dump-json-metadata", &img]).stdout).unwrap();
    assert_eq!(
        j["keyslots"].as_object().unwrap().len(),
        2,
        "old staging discarded: {j}"
    );
    // a clear volume is not re-enciphered; a wrapped one is not converted again
    let clear = s.image("c.img", 20);
    format(WC, &clear, &ka, &[]);
    assert_eq!(
        c.wc(&["reencipher", &clear, "--key-file", &ka], None).code,
        1
    );
    assert_eq!(
        c.wc(
            &[
                "convert",
                "-q",
                &img,
                "--cipher",
                "waes-xts-plain64",
                "--key-file",
                &ka
            ],
            None
        )
        .code,
        1
    );
}

#[test]
fn several_keyslots_each_passphrase_or_removed() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let ka = s.key("ka", b"passphrase A");
    let kb = s.key("kb", b"passphrase B");
    let kc = s.key("kc", b"passphrase C");
    let img = s.image("v.img", 20);
    format_waes(&c, &img, &ka);
    for k in [&kb, &kc] {
        let mut a = vec![
            "luksAddKey",
            img.as_str(),
            "--key-file",
            ka.as_str(),
            k.as_str(),
        ];
        a.extend(FAST);
        c.ok(&a);
    }
    c.ok(&["custodian", "load-new-master-key"]);
    // Passphrase of keyslot 1 given on stdin, keyslot 2 left out.
    let o = c.wc(
        &["reencipher", "-q", "--staged", &img, "--key-file", &ka],
        Some(b"passphrase B\n\n"),
    );
    assert_eq!(o.code, 0, "{o}");
    let j: serde_json::Value =
        serde_json::from_str(&CS.ok(&["luksDump", "--dump-json-metadata", &img]).stdout).unwrap();
    let t = j["tokens"]
        .as_object()
        .unwrap()
        .values()
        .find(|t| t["type"] == "waes-reencipher")
        .unwrap()
        .clone();
    assert_eq!(t["original-keyslot"], "0");
    assert_eq!(t["unbound-keyslot"], "3");
    assert_eq!(t["more-keyslots"], serde_json::json!([["1", "4"]]));
    c.ok(&["custodian", "set-master-key"]);
    // Completion asks before removing keyslot 2 (refused without a YES) …
    let o = c.wc(
        &["reencipher", "--complete", &img, "--key-file", &kb],
        Some(b"no\n"),
    );
    assert_ne!(o.code, 0, "{o}");
    // … and removes it with -q.
    c.ok(&["reencipher", "-q", "--complete", &img, "--key-file", &kb]);
    for (k, want) in [(&ka, 0), (&kb, 0), (&kc, 2)] {
        assert_eq!(test_pass(CS, &img, k, &[]), want, "{k}");
        assert_eq!(c.validate(&img, k).0, want, "{k}");
    }
    assert_eq!(reg(&c.validate(&img, &kb).1), "CURRENT");
}

#[test]
fn setkey_accepts_same_key_and_refuses_another_unless_forced() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let ka = s.key("ka", b"passphrase A");
    let a = s.image("a.img", 20);
    let b = s.image("b.img", 20);
    format_waes(&c, &a, &ka);
    format_waes(&c, &b, &ka);
    let dump = |img: &str, out: &str| {
        CS.ok(&[
            "luksDump",
            "-q",
            "--dump-volume-key",
            "--volume-key-file",
            out,
            "--key-file",
            &ka,
            img,
        ]);
    };
    dump(&a, &s.p("a.wkb"));
    dump(&b, &s.p("b.wkb"));
    assert_eq!(std::fs::read(s.path("a.wkb")).unwrap().len(), 256);
    let vp_a = c.validate(&a, &ka).1["verification-pattern"].clone();
    let vp_b = c.validate(&b, &ka).1["verification-pattern"].clone();
    // Same key (a re-wrapped copy would do too): accepted.
    c.ok(&[
        "setkey",
        "-q",
        &a,
        "--volume-key-file",
        &s.p("a.wkb"),
        "--key-file",
        &ka,
    ]);
    assert_eq!(c.validate(&a, &ka).0, 0);
    // Another key: refused, nothing written.
    let before = bytes(&a);
    let o = c.wc(
        &[
            "setkey",
            "-q",
            &a,
            "--volume-key-file",
            &s.p("b.wkb"),
            "--key-file",
            &ka,
        ],
        None,
    );
    assert_eq!(o.code, 2, "{o}");
    assert_same_bytes(&before, &bytes(&a), "refused setkey wrote");
    // --force without -q asks; a "no" aborts.
    let o = c.wc(
        &[
            "setkey",
            "--force",
            &a,
            "--volume-key-file",
            &s.p("b.wkb"),
            "--key-file",
            &ka,
        ],
        Some(b"no\n"),
    );
    assert_ne!(o.code, 0, "{o}");
    assert_same_bytes(&before, &bytes(&a), "aborted setkey wrote");
    c.ok(&[
        "setkey",
        "--force",
        "-q",
        &a,
        "--volume-key-file",
        &s.p("b.wkb"),
        "--key-file",
        &ka,
    ]);
    let (code, r) = c.validate(&a, &ka);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["verification-pattern"], vp_b);
    assert_ne!(vp_a, vp_b);
    // The keyslot now holds exactly b's blob.
    dump(&a, &s.p("a2.wkb"));
    assert_eq!(
        std::fs::read(s.path("a2.wkb")).unwrap(),
        std::fs::read(s.path("b.wkb")).unwrap()
    );
}

#[test]
fn crypttab_line() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let ka = s.key("ka", b"passphrase A");
    let img = s.image("v.img", 20);
    format_waes(&c, &img, &ka);
    let uuid = CS.ok(&["luksUUID", &img]).stdout.trim().to_string();
    let o = c.ok(&["crypttab", &img, "secret"]);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(lines[0].starts_with("# waes-xts-plain64"), "{o}");
    assert_eq!(lines[1], format!("secret UUID={uuid} none luks"));
    let o = c.ok(&["crypttab", &img]);
    assert_eq!(
        o.stdout.lines().last().unwrap(),
        format!("luks-{uuid} UUID={uuid} none luks")
    );
}

/// Writes `data` through an opened volume, or None when this host cannot
/// open volumes (no FUSE / loop devices).
fn through_open(
    c: &Custodian,
    img: &str,
    kf: &str,
    name: &str,
    write: Option<&[u8]>,
    len: usize,
) -> Vec<u8> {
    c.ok(&["open", img, name, "--key-file", kf]);
    let dev = format!("/dev/mapper/{name}");
    let res = std::panic::catch_unwind(|| {
        if let Some(d) = write {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
            f.write_all(d).unwrap();
            f.sync_all().unwrap();
        }
        use std::io::Read;
        let mut f = std::fs::File::open(&dev).unwrap();
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).unwrap();
        buf
    });
    c.ok(&["close", name]);
    res.unwrap()
}

#[test]
fn convert_keeps_data_uuid_and_offset() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let ka = s.key("ka", b"passphrase A");
    let kb = s.key("kb", b"passphrase B");
    let img = s.image("v.img", 24);
    format(WC, &img, &ka, &[]);
    let o = add_key(CS, &img, &ka, &kb, Some(3));
    assert_eq!(o.code, 0, "{o}");
    let clear_key = volume_key(CS, &img, &ka, &[]);
    let before: serde_json::Value =
        serde_json::from_str(&CS.ok(&["luksDump", "--dump-json-metadata", &img]).stdout).unwrap();
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let name = format!("wc-conv-{}", std::process::id());
    let wrote = through_open(&c, &img, &ka, &name, Some(&data), data.len());
    assert_eq!(wrote, data);
    // Second keyslot's passphrase on stdin.
    let o = c.wc(
        &[
            "convert",
            "-q",
            &img,
            "--cipher",
            "waes-xts-plain64",
            "--key-file",
            &ka,
        ],
        Some(b"passphrase B\n"),
    );
    assert_eq!(o.code, 0, "{o}");
    let bak = format!("{img}.wrapcrypt-convert.bak");
    assert!(std::path::Path::new(&bak).exists());
    let after: serde_json::Value =
        serde_json::from_str(&CS.ok(&["luksDump", "--dump-json-metadata", &img]).stdout).unwrap();
    let (sb, sa) = (&before["segments"]["0"], &after["segments"]["0"]);
    assert_eq!(sa["encryption"], "waes-xts-plain64");
    for f in ["offset", "size", "iv_tweak", "sector_size"] {
        assert_eq!(sa[f], sb[f], "{f}");
    }
    assert_eq!(CS.ok(&["luksUUID", &img]).stdout, {
        let b = s.copy(&bak, "bak-as-img");
        CS.ok(&["luksUUID", &b]).stdout
    });
    // Both passphrases, same keyslot ids; the effective key is the clear key.
    for k in [&ka, &kb] {
        let (code, r) = c.validate(&img, k);
        assert_eq!(code, 0, "{r}");
        assert_eq!(r["verification-pattern"], python_vp(&clear_key).as_str());
    }
    let mut ids: Vec<&String> = after["keyslots"].as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(ids, ["0", "3"]);
    // The data reads identically through the wrapped key.
    assert_eq!(through_open(&c, &img, &kb, &name, None, data.len()), data);
    // … and still after a re-encipher.
    c.ok(&["custodian", "load-new-master-key"]);
    let o = c.wc(
        &["reencipher", "--staged", &img, "--key-file", &ka],
        Some(b"passphrase B\n"),
    );
    assert_eq!(o.code, 0, "{o}");
    c.ok(&["custodian", "set-master-key"]);
    c.ok(&["reencipher", "--complete", &img, "--key-file", &kb]);
    assert_eq!(through_open(&c, &img, &ka, &name, None, data.len()), data);
    // The backup restores the clear volume (cryptsetup agrees).
    CS.ok(&[
        "luksHeaderRestore",
        "-q",
        "--header-backup-file",
        &bak,
        &img,
    ]);
    assert_eq!(volume_key(CS, &img, &kb, &[]), clear_key);
}
