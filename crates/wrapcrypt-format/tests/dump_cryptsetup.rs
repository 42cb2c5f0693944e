//! `luksDump` text compared byte for byte with cryptsetup 2.6.1's, on
//! LUKS2 headers made at test time by cryptsetup (and some of them then
//! edited in their JSON, checksums recomputed, to reach layouts no
//! cryptsetup command writes on an image file) and on the reference images
//! in `/work/shared/testdata/cryptsetup`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};
use wrapcrypt_format::dump::{
    luks2_dump, luks2_json_dump, luks2_unbound_key_dump, luks2_volume_key_dump, Luks2BinaryInfo,
};
use wrapcrypt_secret::SecretBytes;

mod oracle;
use oracle::{cryptsetup as run, FAST, PASS};

const TESTDATA: &str = "/work/shared/testdata/cryptsetup";

/// Tiny local LUKS2 reader: binary fields of the first copy and its JSON area.
struct Raw {
    bytes: Vec<u8>,
}

impl Raw {
    fn load(p: &Path) -> Raw {
        let mut bytes = std::fs::read(p).expect("read image");
        let hs = Raw::be64(&bytes, 8) as usize;
        bytes.truncate(2 * hs);
        Raw { bytes }
    }
    fn be64(b: &[u8], o: usize) -> u64 {
        u64::from_be_bytes(b[o..o + 8].try_into().expect("8 bytes"))
    }
    fn text(&self, r: std::ops::Range<usize>) -> &str {
        let f = &self.bytes[r];
        let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
        std::str::from_utf8(&f[..end]).expect("utf8")
    }
    fn hdr_size(&self) -> usize {
        Raw::be64(&self.bytes, 8) as usize
    }
    fn info(&self) -> Luks2BinaryInfo<'_> {
        Luks2BinaryInfo {
            version: u16::from_be_bytes([self.bytes[6], self.bytes[7]]),
            hdr_size: self.hdr_size() as u64,
            seqid: Raw::be64(&self.bytes, 16),
            label: self.text(24..72),
            checksum_alg: self.text(72..104),
            salt: self.bytes[104..168].try_into().expect("64 bytes"),
            uuid: self.text(168..208),
            subsystem: self.text(208..256),
            hdr_offset: Raw::be64(&self.bytes, 256),
        }
    }
    fn json(&self) -> Value {
        let area = &self.bytes[4096..self.hdr_size()];
        let end = area.iter().position(|&c| c == 0).unwrap_or(area.len());
        serde_json::from_slice(&area[..end]).expect("json area")
    }
}

/// Rewrites both header copies of `img` with `json` (as compact text),
/// recomputing the sha256 checksums, as a crafted-header tool would.
fn rewrite_json(img: &Path, json: &str) {
    let mut data = std::fs::read(img).expect("read");
    let hs = Raw::be64(&data, 8) as usize;
    for copy in [0, hs] {
        let area = &mut data[copy + 4096..copy + hs];
        area.fill(0);
        area[..json.len()].copy_from_slice(json.as_bytes());
        data[copy + 0x1c0..copy + 0x200].fill(0);
        let sum = Sha256::digest(&data[copy..copy + hs]);
        data[copy + 0x1c0..copy + 0x1e0].copy_from_slice(&sum);
    }
    std::fs::write(img, data).expect("write");
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pw"), PASS).expect("pw");
        std::fs::write(dir.path().join("pw2"), "second").expect("pw2");
        Dir { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf8 path").to_string()
    }
    /// A fresh LUKS2 image made by `cryptsetup luksFormat` with `extra`.
    fn format(&self, name: &str, size_mib: u64, extra: &[&str]) -> PathBuf {
        let img = self.path(name);
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(size_mib << 20))
            .expect("image");
        let pw = self.s("pw");
        let imgs = self.s(name);
        let mut args = vec!["luksFormat", "-q", "--type", "luks2", "--key-file", &pw];
        args.extend_from_slice(extra);
        args.push(&imgs);
        run(&args);
        img
    }
}

/// Asserts our dump, JSON dump and (given a passphrase) volume key dump
/// equal cryptsetup's on `img`.
fn assert_same(img: &Path, keyfile: Option<&Path>) {
    let imgs = img.to_str().expect("utf8");
    let raw = Raw::load(img);
    let json = raw.json();
    let mut ours = String::new();
    luks2_dump(&raw.info(), &json, &mut ours);
    let theirs = String::from_utf8(run(&["luksDump", imgs])).expect("utf8");
    assert_eq!(ours, theirs, "luksDump of {imgs}");

    let mut ours = String::new();
    luks2_json_dump(&json, &mut ours);
    let theirs = String::from_utf8(run(&["luksDump", "--dump-json-metadata", imgs])).expect("utf8");
    assert_eq!(ours, theirs, "--dump-json-metadata of {imgs}");

    if let Some(kf) = keyfile {
        let kfs = kf.to_str().expect("utf8");
        let vkf = kf.with_extension("vk");
        let vkfs = vkf.to_str().expect("utf8");
        let _ = std::fs::remove_file(&vkf);
        let args = ["luksDump", "-q", "--dump-volume-key", "--key-file", kfs];
        run(&[&args[..], &["--volume-key-file", vkfs, imgs]].concat());
        let key = SecretBytes::take_vec(std::fs::read(&vkf).expect("volume key file"));
        let theirs = String::from_utf8(run(&[&args[..], &[imgs]].concat())).expect("utf8");
        let mut ours = String::new();
        luks2_volume_key_dump(imgs, &raw.info(), &json, key.expose_secret(), &mut ours);
        assert_eq!(ours, theirs, "--dump-volume-key of {imgs}");
    }
}

/// Tokens of types that cryptsetup hands to its external plugins
/// (systemd-*): with plugins disabled cryptsetup prints them as any unknown
/// type, which is what we print.
#[test]
fn external_token_types_without_plugins() {
    let d = Dir::new();
    let img = d.format("ext.img", 20, &FAST);
    let imgs = d.s("ext.img");
    let json = d.path("t.json");
    for (id, tok) in [
        (
            "0",
            r#"{"type":"systemd-tpm2","keyslots":["0"],"tpm2-blob":"AAAA","tpm2-pcrs":[7],"tpm2-pcr-bank":"sha256","tpm2-primary-alg":"ecc","tpm2-policy-hash":"00112233","tpm2-pin":false}"#,
        ),
        (
            "4",
            r#"{"type":"systemd-pkcs11","keyslots":["0"],"pkcs11-uri":"pkcs11:token=x","pkcs11-key":"AAAA"}"#,
        ),
    ] {
        std::fs::write(&json, tok).expect("token");
        run(&[
            "token",
            "import",
            "--token-id",
            id,
            "--json-file",
            json.to_str().expect("utf8"),
            &imgs,
        ]);
    }
    let raw = Raw::load(&img);
    let mut ours = String::new();
    luks2_dump(&raw.info(), &raw.json(), &mut ours);
    let theirs = run(&["luksDump", "--disable-external-tokens", &imgs]);
    assert_eq!(ours, String::from_utf8(theirs).expect("utf8"));
}

fn assert_unbound_key(img: &Path, keyfile: &Path, slot: u32) {
    let imgs = img.to_str().expect("utf8");
    let kfs = keyfile.to_str().expect("utf8");
    let slots = slot.to_string();
    let base = [
        "luksDump",
        "-q",
        "--unbound",
        "-S",
        &slots,
        "--key-file",
        kfs,
    ];
    let vkf = keyfile.with_extension("ub");
    let vkfs = vkf.to_str().expect("utf8");
    let _ = std::fs::remove_file(&vkf);
    run(&[&base[..], &["--volume-key-file", vkfs, imgs]].concat());
    let key = SecretBytes::take_vec(std::fs::read(&vkf).expect("unbound key file"));
    let theirs = String::from_utf8(run(&[&base[..], &[imgs]].concat())).expect("utf8");
    let raw = Raw::load(img);
    let mut ours = String::new();
    luks2_unbound_key_dump(imgs, &raw.info(), slot, key.expose_secret(), &mut ours);
    assert_eq!(ours, theirs, "--unbound dump of {imgs}");
}

#[test]
fn pbkdf2_hashes() {
    let d = Dir::new();
    for hash in ["sha1", "sha256", "sha512", "ripemd160", "whirlpool"] {
        let img = d.format(
            &format!("{hash}.img"),
            20,
            &[&FAST[..], &["--hash", hash]].concat(),
        );
        assert_same(&img, Some(&d.path("pw")));
    }
}

#[test]
fn argon2_label_subsystem_sector_size() {
    let d = Dir::new();
    let img = d.format(
        "a2i.img",
        20,
        &[
            "--pbkdf",
            "argon2i",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "32",
            "--pbkdf-parallel",
            "1",
            "--label",
            "my label",
            "--subsystem",
            "sub/sys",
            "--sector-size",
            "512",
            "--cipher",
            "aes-cbc-essiv:sha256",
            "--key-size",
            "256",
        ],
    );
    assert_same(&img, Some(&d.path("pw")));
    let img = d.format(
        "a2id.img",
        20,
        &[
            "--pbkdf",
            "argon2id",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "1024",
            "--pbkdf-parallel",
            "4",
            "--sector-size",
            "4096",
            "--key-size",
            "256",
        ],
    );
    assert_same(&img, Some(&d.path("pw")));
}

#[test]
fn metadata_and_keyslots_area_sizes() {
    let d = Dir::new();
    for (md, ks) in [
        ("16k", "256k"),
        ("32k", "1m"),
        ("256k", "4m"),
        ("1024k", "8m"),
        ("4096k", "2m"),
    ] {
        let img = d.format(
            &format!("md{md}.img"),
            24,
            &[
                &FAST[..],
                &["--luks2-metadata-size", md, "--luks2-keyslots-size", ks],
            ]
            .concat(),
        );
        assert_same(&img, None);
    }
}

#[test]
fn keyslots_tokens_priorities_unbound() {
    let d = Dir::new();
    let img = d.format("m.img", 20, &FAST);
    let (imgs, pw, pw2) = (d.s("m.img"), d.s("pw"), d.s("pw2"));
    let add = |extra: &[&str]| {
        let mut a = vec!["luksAddKey", "-q", "--key-file", &pw];
        a.extend_from_slice(extra);
        a.push(&imgs);
        a.push(&pw2);
        run(&a);
    };
    add(&[&FAST[..], &["-S", "5"]].concat());
    add(&[&FAST[..], &["-S", "31", "--unbound", "--key-size", "256"]].concat());
    add(&[
        "-S",
        "12",
        "--unbound",
        "--key-size",
        "128",
        "--pbkdf",
        "argon2i",
        "--pbkdf-force-iterations",
        "4",
        "--pbkdf-memory",
        "64",
    ]);
    run(&[
        "token",
        "add",
        "--key-description",
        "my:key",
        "--key-slot",
        "5",
        &imgs,
    ]);
    run(&[
        "token",
        "add",
        "--key-description",
        "other",
        "--key-slot",
        "0",
        "--token-id",
        "20",
        &imgs,
    ]);
    run(&["config", "--priority", "ignore", "-S", "5", &imgs]);
    run(&["config", "--priority", "prefer", "-S", "0", &imgs]);
    run(&["config", "--label", "lbl x", "--subsystem", "s/y", &imgs]);
    let json = d.path("tok.json");
    std::fs::write(
        &json,
        r#"{"type":"ext","keyslots":["31","0","5"],"data":"x/y","n":-5,"big":18446744073709551615,"t":true,"z":null,"a":[[],{}],"s":"tab\there \"q\" \\ é \u0001"}"#,
    )
    .expect("token json");
    run(&[
        "token",
        "import",
        "--token-id",
        "7",
        "--json-file",
        json.to_str().expect("utf8"),
        &imgs,
    ]);
    assert_same(&img, Some(&d.path("pw")));
    assert_unbound_key(&img, &d.path("pw2"), 31);
    assert_unbound_key(&img, &d.path("pw2"), 12);
}

#[test]
fn detached_header() {
    let d = Dir::new();
    let data = d.path("data.img");
    std::fs::File::create(&data)
        .and_then(|f| f.set_len(20 << 20))
        .expect("data");
    let hdr = d.path("hdr.img");
    std::fs::File::create(&hdr)
        .and_then(|f| f.set_len(16 << 20))
        .expect("hdr");
    let (pw, hs, ds) = (d.s("pw"), d.s("hdr.img"), d.s("data.img"));
    let mut a = vec![
        "luksFormat",
        "-q",
        "--type",
        "luks2",
        "--key-file",
        &pw,
        "--header",
        &hs,
    ];
    a.extend_from_slice(&FAST);
    a.push(&ds);
    run(&a);
    assert_same(&hdr, Some(&d.path("pw")));
}

#[test]
fn reencryption_states() {
    let d = Dir::new();
    let pw = d.s("pw");
    for res in ["checksum", "journal", "none"] {
        let name = format!("r-{res}.img");
        d.format(&name, 20, &FAST);
        let imgs = d.s(&name);
        let mut a = vec![
            "reencrypt",
            "--init-only",
            "-q",
            "--key-file",
            &pw,
            "--resilience",
            res,
        ];
        a.extend_from_slice(&FAST);
        a.push(&imgs);
        run(&a);
        assert_same(&d.path(&name), None);
    }
    // Encryption of a plain device: linear segments, datashift resilience.
    let img = d.path("e.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(40 << 20))
        .expect("image");
    let imgs = d.s("e.img");
    let mut a = vec![
        "reencrypt",
        "--encrypt",
        "--init-only",
        "-q",
        "--key-file",
        &pw,
    ];
    a.extend_from_slice(&["--reduce-device-size", "32M"]);
    a.extend_from_slice(&FAST);
    a.push(&imgs);
    run(&a);
    assert_same(&img, None);
}

/// Layouts reached by editing the JSON of a cryptsetup-made header.
#[test]
fn crafted_json_variants() {
    let d = Dir::new();
    let base = d.format("base.img", 20, &FAST);
    let json = Raw::load(&base).json();
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit); 6] = [
        ("flags-requirements", |j| {
            j["config"]["flags"] = serde_json::json!(["allow-discards", "same-cpu-crypt", "zzz"]);
            j["config"]["requirements"] =
                serde_json::json!({"mandatory": ["req0", "req1"], "optional": ["o"]});
        }),
        ("empty-lists", |j| {
            j["config"]["flags"] = serde_json::json!([]);
            j["config"]["requirements"] = serde_json::json!({"mandatory": []});
        }),
        ("segment-integrity-flags-size", |j| {
            let s = &mut j["segments"]["0"];
            s["size"] = "1048576".into();
            s["iv_tweak"] = "12".into();
            s["flags"] = serde_json::json!(["foo", "bar"]);
            s["integrity"] = serde_json::json!({"type": "hmac(sha256)", "journal_encryption": "none", "journal_integrity": "none"});
        }),
        ("priority-and-short-salt", |j| {
            j["keyslots"]["0"]["priority"] = 2.into();
            j["keyslots"]["0"]["kdf"]["salt"] = "AAAA".into();
            j["digests"]["0"]["salt"] = "AAE=".into();
        }),
        ("tokens", |j| {
            j["tokens"]["3"] = serde_json::json!({"type": "luks2-keyring", "keyslots": [], "key_description": "abc"});
            j["tokens"]["1"] = serde_json::json!({"type": "weird", "keyslots": ["0"], "o": {"p": [1, "2", {"q": []}]}});
        }),
        ("reordered-members", |j| {
            let ks = j["keyslots"]["0"].as_object_mut().expect("object");
            let kdf = ks.remove("kdf").expect("kdf");
            ks.insert("kdf".into(), kdf);
            let cfg = j["config"].take();
            let obj = j.as_object_mut().expect("object");
            let digests = obj.remove("digests").expect("digests");
            obj.insert("config".into(), cfg);
            obj.insert("digests".into(), digests);
        }),
    ];
    for (name, edit) in edits {
        let img = d.path(&format!("{name}.img"));
        std::fs::copy(&base, &img).expect("copy");
        let mut j = json.clone();
        edit(&mut j);
        rewrite_json(&img, &serde_json::to_string(&j).expect("json"));
        // A changed salt no longer opens the keyslot: no volume key there.
        let opens = name != "priority-and-short-salt";
        assert_same(&img, opens.then(|| d.path("pw")).as_deref());
    }
}

fn unpack(d: &Dir, file: &str) -> PathBuf {
    let out = d.path(file.trim_end_matches(".xz"));
    let data = Command::new("xz")
        .args(["-dkc", &format!("{TESTDATA}/{file}")])
        .output()
        .expect("xz");
    assert!(data.status.success());
    std::fs::write(&out, data.stdout).expect("write");
    out
}

#[test]
fn reference_images() {
    let d = Dir::new();
    for (file, pass) in [
        ("compatimage2.img.xz", "compatkey"),
        ("luks2_keyslot_unassigned.img.xz", "compatkey"),
        ("luks2_invalid_cipher.img.xz", "93R4P4pIqAH8"),
    ] {
        let img = unpack(&d, file);
        let kf = d.path(&format!("{file}.pass"));
        std::fs::write(&kf, pass).expect("pass");
        assert_same(&img, Some(&kf));
    }
    let img = d.path("luks2_keyslot_unassigned.img");
    let kf = d.path("unbound.pass");
    std::fs::write(&kf, "93R4P4pIqAH8").expect("pass");
    assert_unbound_key(&img, &kf, 1);

    for tar in [
        "luks2_header_requirements.tar.xz",
        "luks2_mda_images.tar.xz",
    ] {
        let st = Command::new("tar")
            .args(["xJf", &format!("{TESTDATA}/{tar}"), "-C"])
            .arg(d.dir.path())
            .status()
            .expect("tar");
        assert!(st.success());
    }
    assert_same(&d.path("luks2_header_requirements"), None);
    assert_same(&d.path("luks2_header_requirements_free"), None);
    for kib in [16, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
        let img = d.path(&format!("test_image_{kib}"));
        let kf = d.path("mda.pass");
        std::fs::write(&kf, "Qx3qn46vq0v").expect("pass");
        assert_same(&img, Some(&kf));
    }
}
