//! LUKS1 through the real binary, with cryptsetup-bin 2.6.1 as the oracle:
//! cryptsetup's reference images, format/keyslot interop in both
//! directions, header backup/restore, conversion LUKS1 <-> LUKS2 with both
//! tools, cryptsetup's exit codes and messages, and crash points
//! (WRAPCRYPT_FAULT_AT) in every write of the keyslot and convert actions.
//! Opening as a block device needs root, FUSE and loop devices.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TESTDATA: &str = "/work/shared/testdata/cryptsetup";
const FAST: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wrapcrypt"))
}

fn wc() -> Command {
    Command::new(bin())
}

fn cs() -> Command {
    Command::new("cryptsetup")
}

fn out(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

fn ok(cmd: &mut Command) -> Output {
    let o = out(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed ({:?}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Exit code and first stderr line.
fn fails(cmd: &mut Command) -> (i32, String) {
    let o = out(cmd);
    assert!(!o.status.success(), "{cmd:?} unexpectedly succeeded");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    )
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let e = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        for (n, p) in [
            ("pw", "first pass"),
            ("pw2", "second pass"),
            ("pw3", "third pass"),
            ("compatkey", "compatkey"),
        ] {
            std::fs::write(e.p(n), p).unwrap();
        }
        e
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.p(name).display().to_string()
    }
    fn image(&self, name: &str, mib: u64) -> String {
        let f = std::fs::File::create(self.p(name)).unwrap();
        f.set_len(mib << 20).unwrap();
        self.s(name)
    }
    fn xz(&self, file: &str, name: &str) -> String {
        let o = ok(Command::new("xz")
            .arg("-dkc")
            .arg(Path::new(TESTDATA).join(file)));
        std::fs::write(self.p(name), o.stdout).unwrap();
        self.s(name)
    }
    fn copy(&self, from: &str, to: &str) -> String {
        std::fs::copy(from, self.p(to)).unwrap();
        self.s(to)
    }
    /// Whether `tool` opens `img` with passphrase file `pw`.
    fn opens(&self, tool: fn() -> Command, img: &str, pw: &str) -> bool {
        out(tool()
            .args(["open", "--test-passphrase", "--key-file"])
            .arg(self.p(pw))
            .arg(img))
        .status
        .success()
    }
    fn both_open(&self, img: &str, pw: &str) -> bool {
        let a = self.opens(wc, img, pw);
        let b = self.opens(cs, img, pw);
        assert_eq!(a, b, "wrapcrypt and cryptsetup disagree on {img} with {pw}");
        a
    }
    fn volume_key(&self, tool: fn() -> Command, img: &str, pw: &str) -> String {
        let o = ok(tool()
            .args(["luksDump", "-q", "--dump-volume-key", "--key-file"])
            .arg(self.p(pw))
            .arg(img));
        let t = String::from_utf8_lossy(&o.stdout);
        let i = t.find("MK dump:").expect("MK dump line");
        t[i..]
            .split_whitespace()
            .skip(2)
            .collect::<Vec<_>>()
            .join("")
    }
}

/// Reads keyslot offsets, payload offset and key bytes from a LUKS1 phdr.
fn phdr(img: &str) -> (Vec<u32>, u32, u32) {
    let b = std::fs::read(img).unwrap();
    let be = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
    assert_eq!(&b[..8], b"LUKS\xba\xbe\0\x01", "not LUKS1");
    (
        (0..8).map(|k| be(208 + k * 48 + 40)).collect(),
        be(104),
        be(108),
    )
}

fn version(img: &str) -> u16 {
    let b = std::fs::read(img).unwrap();
    u16::from_be_bytes([b[6], b[7]])
}

fn sha(cmd: &str, path: &str) -> String {
    let o = ok(Command::new(cmd).arg(path));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

struct Mapped(String);
impl Drop for Mapped {
    fn drop(&mut self) {
        let _ = wc().args(["close", &self.0]).status();
    }
}

#[test]
fn compat_images_open_as_block_devices_with_known_payload_hashes() {
    let e = Env::new();
    for (file, hashcmd, want) in [
        (
            "compatimage.img.xz",
            "sha256sum",
            "7428e8f2436882a07eb32765086f5c899474c08b5576f556b573d2aabdf923e8",
        ),
        (
            "compatv10image.img.xz",
            "sha1sum",
            "51b48c2471a7593ceaf14dc5e66bca86ed05f6cc",
        ),
    ] {
        let img = e.xz(file, file.trim_end_matches(".xz"));
        assert!(e.opens(wc, &img, "compatkey"));
        let (code, msg) = fails(
            wc().args(["open", "--test-passphrase", "-d"])
                .arg(e.p("pw"))
                .arg(&img),
        );
        assert_eq!(
            (code, msg.as_str()),
            (2, "No key available with this passphrase.")
        );
        let name = format!("wcl1{}{}", std::process::id(), want.len());
        ok(wc()
            .arg("open")
            .arg(&img)
            .arg(&name)
            .arg("-d")
            .arg(e.p("compatkey")));
        let guard = Mapped(name.clone());
        let st = ok(wc().args(["status", &name]));
        assert!(String::from_utf8_lossy(&st.stdout).contains("type:    LUKS1"));
        // The same through `status --json` (docs/json-output.md): the size
        // it reports is the opened device's.
        let j: serde_json::Value =
            serde_json::from_slice(&ok(wc().args(["status", "--json", &name])).stdout).unwrap();
        let dev_bytes = std::fs::File::open(format!("/dev/mapper/{name}"))
            .and_then(|mut f| std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)))
            .unwrap();
        assert_eq!(
            (&j["active"], &j["type"], &j["size-bytes"], &j["read-only"]),
            (
                &serde_json::json!(true),
                &serde_json::json!("LUKS1"),
                &serde_json::json!(dev_bytes),
                &serde_json::json!(false)
            ),
            "{j}"
        );
        let got = sha(hashcmd, &format!("/dev/mapper/{name}"));
        drop(guard);
        assert_eq!(got, want, "{file}: decrypted payload hash");
        // Dump texts agree byte for byte with cryptsetup's.
        let a = ok(wc().arg("luksDump").arg(&img)).stdout;
        let b = ok(cs().arg("luksDump").arg(&img)).stdout;
        assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
        assert_eq!(
            e.volume_key(wc, &img, "compatkey"),
            e.volume_key(cs, &img, "compatkey")
        );
    }
}

#[test]
fn valid_header_file_add_key_with_volume_key() {
    let e = Env::new();
    let img = e.xz("valid_header_file.xz", "vh.img");
    let key =
        hex::decode("bb21158c733229347bd4e681891e213d94c685be6a5b84818afe7a78a6de7a1a").unwrap();
    std::fs::write(e.p("vk"), &key).unwrap();
    let mut bad = key.clone();
    bad[31] ^= 1;
    std::fs::write(e.p("badvk"), &bad).unwrap();
    let (code, msg) = fails(
        wc().args(["luksAddKey", "-q"])
            .args(FAST)
            .arg("--volume-key-file")
            .arg(e.p("badvk"))
            .arg(&img)
            .arg(e.p("pw")),
    );
    assert_eq!(
        (code, msg.as_str()),
        (2, "Volume key does not match the volume.")
    );
    ok(wc()
        .args(["luksAddKey", "-q", "-S", "5"])
        .args(FAST)
        .arg("--volume-key-file")
        .arg(e.p("vk"))
        .arg(&img)
        .arg(e.p("pw")));
    assert!(e.both_open(&img, "pw"));
    assert_eq!(e.volume_key(cs, &img, "pw"), hex::encode(&key));
    let dump = String::from_utf8_lossy(&ok(cs().arg("luksDump").arg(&img)).stdout).to_string();
    assert!(dump.contains("Key Slot 5: ENABLED"), "{dump}");
}

#[test]
fn format_layout_matches_cryptsetup() {
    let e = Env::new();
    for extra in [
        vec!["-s", "256", "-c", "aes-cbc-essiv:sha256"],
        vec!["-s", "512"],
        vec!["-s", "128", "-c", "aes-cbc-plain"],
        vec!["-s", "256", "--align-payload", "100"],
        vec!["-s", "512", "--align-payload", "8192"],
        vec!["-s", "256", "--offset", "5000"],
    ] {
        let a = e.image("a.img", 8);
        let b = e.image("b.img", 8);
        for (tool, img) in [(wc as fn() -> Command, &a), (cs as fn() -> Command, &b)] {
            ok(tool()
                .args(["luksFormat", "-q", "--type", "luks1"])
                .args(FAST)
                .args(&extra)
                .arg("-d")
                .arg(e.p("pw"))
                .arg(img));
        }
        assert_eq!(phdr(&a), phdr(&b), "layout with {extra:?}");
        assert!(e.both_open(&a, "pw"));
        // Same header backup size as cryptsetup's.
        let _ = std::fs::remove_file(e.p("hb_a"));
        let _ = std::fs::remove_file(e.p("hb_b"));
        ok(wc()
            .arg("luksHeaderBackup")
            .arg(&a)
            .arg("--header-backup-file")
            .arg(e.p("hb_a")));
        ok(cs()
            .arg("luksHeaderBackup")
            .arg(&b)
            .arg("--header-backup-file")
            .arg(e.p("hb_b")));
        assert_eq!(
            std::fs::metadata(e.p("hb_a")).unwrap().len(),
            std::fs::metadata(e.p("hb_b")).unwrap().len()
        );
    }
}

#[test]
fn keyslot_interop_both_directions() {
    let e = Env::new();
    // wrapcrypt formats, cryptsetup adds, wrapcrypt removes.
    let a = e.image("a.img", 4);
    ok(wc()
        .args(["luksFormat", "-q", "--type", "luks1"])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&a));
    ok(cs()
        .args(["luksAddKey", "-q"])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&a)
        .arg(e.p("pw2")));
    assert!(e.both_open(&a, "pw2"));
    ok(wc().args(["luksRemoveKey", "-q"]).arg(&a).arg(e.p("pw")));
    assert!(!e.both_open(&a, "pw"));
    assert!(e.both_open(&a, "pw2"));
    // cryptsetup formats, wrapcrypt adds, changes and kills.
    let b = e.image("b.img", 4);
    ok(cs()
        .args([
            "luksFormat",
            "-q",
            "--type",
            "luks1",
            "-c",
            "aes-cbc-essiv:sha256",
            "-s",
            "256",
            "--hash",
            "sha1",
        ])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&b));
    ok(wc()
        .args(["luksAddKey", "-q"])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&b)
        .arg(e.p("pw2")));
    assert!(e.both_open(&b, "pw2"));
    ok(wc()
        .args(["luksChangeKey", "-q"])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw2"))
        .arg(&b)
        .arg(e.p("pw3")));
    assert!(!e.both_open(&b, "pw2"));
    assert!(e.both_open(&b, "pw3"));
    let vk = e.volume_key(cs, &b, "pw3");
    assert_eq!(vk, e.volume_key(wc, &b, "pw"));
    let dump = String::from_utf8_lossy(&ok(cs().arg("luksDump").arg(&b)).stdout).to_string();
    assert!(
        dump.contains("Key Slot 0: ENABLED") && dump.contains("Key Slot 2: ENABLED"),
        "{dump}"
    );
    ok(wc().args(["luksKillSlot", "-q"]).arg(&b).arg("0"));
    assert!(!e.both_open(&b, "pw"));
    assert!(e.both_open(&b, "pw3"));
    // UUID set by wrapcrypt, read by cryptsetup.
    let u = "12345678-1234-4234-8234-123456789abc";
    ok(wc().arg("luksUUID").arg(&b).arg("--uuid").arg(u));
    let o = ok(cs().arg("luksUUID").arg(&b));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), u);
    ok(wc().args(["isLuks", "--type", "luks1"]).arg(&b));
    assert_eq!(fails(wc().args(["isLuks", "--type", "luks2"]).arg(&b)).0, 1);
    // erase removes every keyslot.
    ok(wc().args(["erase", "-q"]).arg(&b));
    assert!(!e.both_open(&b, "pw3"));
}

#[test]
fn cryptsetup_exit_codes_and_messages() {
    let e = Env::new();
    let a = e.image("a.img", 4);
    ok(wc()
        .args(["luksFormat", "-q", "--type", "luks1"])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&a));
    let dev = a.clone();
    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            vec![
                "luksConvertKey".into(),
                "-q".into(),
                "-d".into(),
                e.s("pw"),
                dev.clone(),
            ],
            1,
            format!("Device {dev} is not a valid LUKS2 device."),
        ),
        (
            vec!["luksKillSlot".into(), "-q".into(), dev.clone(), "3".into()],
            1,
            "Keyslot 3 is not active.".into(),
        ),
        (
            vec![
                "luksAddKey".into(),
                "-q".into(),
                "-S".into(),
                "8".into(),
                "-d".into(),
                e.s("pw"),
                dev.clone(),
                e.s("pw2"),
            ],
            1,
            "Key slot 8 is invalid, please select between 0 and 7.".into(),
        ),
        (
            vec![
                "luksAddKey".into(),
                "-q".into(),
                "--pbkdf".into(),
                "argon2id".into(),
                "-d".into(),
                e.s("pw"),
                dev.clone(),
                e.s("pw2"),
            ],
            1,
            "Requested PBKDF type is not supported for LUKS1.".into(),
        ),
        (
            vec!["luksRemoveKey".into(), "-q".into(), dev.clone(), e.s("pw2")],
            2,
            "No key available with this passphrase.".into(),
        ),
        (
            vec![
                "convert".into(),
                "-q".into(),
                "--type".into(),
                "luks1".into(),
                dev.clone(),
            ],
            1,
            "Device is already LUKS1 type.".into(),
        ),
        (
            vec![
                "convert".into(),
                "-q".into(),
                "--type".into(),
                "luks3".into(),
                dev.clone(),
            ],
            1,
            "Invalid LUKS type, only luks1 and luks2 are supported.".into(),
        ),
    ];
    for (args, code, msg) in cases {
        let mine = fails(wc().args(&args));
        let theirs = fails(cs().args(&args));
        assert_eq!(mine, (code, msg.clone()), "wrapcrypt {args:?}");
        assert_eq!(theirs.0, code, "cryptsetup {args:?}");
        // cryptsetup may print the same line after others (PBKDF case).
        let all = String::from_utf8_lossy(&out(cs().args(&args)).stderr).to_string();
        assert!(all.contains(&msg), "cryptsetup {args:?}: {all}");
    }
    // LUKS2 -> LUKS1 refusals: 4096-byte sectors, Argon2 keyslots.
    let b = e.image("b.img", 20);
    ok(cs()
        .args(["luksFormat", "-q", "--type", "luks2"])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&b));
    let args = ["convert", "-q", "--type", "luks1", b.as_str()];
    let want =
        "Cannot convert to LUKS1 format - default segment encryption sector size is not 512 bytes.";
    assert_eq!(fails(wc().args(args)), (1, want.to_string()));
    assert_eq!(fails(cs().args(args)), (1, want.to_string()));
    ok(cs()
        .args([
            "luksFormat",
            "-q",
            "--type",
            "luks2",
            "--sector-size",
            "512",
            "--pbkdf",
            "argon2id",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "32",
        ])
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&b));
    let want = "Cannot convert to LUKS1 format - keyslot 0 is not LUKS1 compatible.";
    assert_eq!(fails(wc().args(args)), (1, want.to_string()));
    assert_eq!(fails(cs().args(args)).0, 1);
}

#[test]
fn header_backup_and_restore() {
    let e = Env::new();
    let a = e.image("a.img", 4);
    ok(wc()
        .args(["luksFormat", "-q", "--type", "luks1"])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&a));
    ok(wc()
        .arg("luksHeaderBackup")
        .arg(&a)
        .arg("--header-backup-file")
        .arg(e.p("hb_w")));
    ok(cs()
        .arg("luksHeaderBackup")
        .arg(&a)
        .arg("--header-backup-file")
        .arg(e.p("hb_c")));
    assert_eq!(
        std::fs::read(e.p("hb_w")).unwrap(),
        std::fs::read(e.p("hb_c")).unwrap()
    );
    ok(wc().args(["luksKillSlot", "-q"]).arg(&a).arg("0"));
    assert!(!e.both_open(&a, "pw"));
    ok(wc()
        .args(["luksHeaderRestore", "-q"])
        .arg(&a)
        .arg("--header-backup-file")
        .arg(e.p("hb_w")));
    assert!(e.both_open(&a, "pw"));
    // cryptsetup restores wrapcrypt's backup into a blank device too.
    let z = e.image("z.img", 4);
    ok(cs()
        .args(["luksHeaderRestore", "-q"])
        .arg(&z)
        .arg("--header-backup-file")
        .arg(e.p("hb_w")));
    assert!(e.both_open(&z, "pw"));
    // A backup whose payload offset differs is refused, as cryptsetup does.
    let b = e.image("b.img", 4);
    ok(cs()
        .args([
            "luksFormat",
            "-q",
            "--type",
            "luks1",
            "--align-payload",
            "8",
        ])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&b));
    let args = |t: &str| {
        vec![
            "luksHeaderRestore".to_string(),
            "-q".into(),
            t.to_string(),
            "--header-backup-file".into(),
            e.s("hb_w"),
        ]
    };
    let want = "Data offset or key size differs on device and backup, restore failed.";
    assert_eq!(fails(wc().args(args(&b))), (1, want.to_string()));
    assert_eq!(fails(cs().args(args(&b))), (1, want.to_string()));
}

#[test]
fn conversion_both_ways_with_both_tools() {
    let e = Env::new();
    for (ks, cipher) in [("512", "aes-xts-plain64"), ("256", "aes-cbc-essiv:sha256")] {
        let a = e.image("l1.img", 8);
        ok(cs()
            .args([
                "luksFormat",
                "-q",
                "--type",
                "luks1",
                "-s",
                ks,
                "-c",
                cipher,
            ])
            .args(FAST)
            .arg("-d")
            .arg(e.p("pw"))
            .arg(&a));
        ok(cs()
            .args(["luksAddKey", "-q", "-S", "3"])
            .args(FAST)
            .arg("-d")
            .arg(e.p("pw"))
            .arg(&a)
            .arg(e.p("pw2")));
        let vk = e.volume_key(cs, &a, "pw");
        let by_cs = e.copy(&a, "cs2.img");
        let by_wc = e.copy(&a, "wc2.img");
        ok(cs().args(["convert", "-q", "--type", "luks2"]).arg(&by_cs));
        ok(wc().args(["convert", "-q", "--type", "luks2"]).arg(&by_wc));
        assert_eq!(version(&by_wc), 2);
        let meta = |img: &str| {
            let o = ok(cs().args(["luksDump", "--dump-json-metadata"]).arg(img));
            let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            v.as_object_mut().unwrap().remove("tokens");
            v
        };
        assert_eq!(
            meta(&by_wc),
            meta(&by_cs),
            "LUKS2 metadata of the conversion"
        );
        for img in [&by_cs, &by_wc] {
            for pw in ["pw", "pw2"] {
                assert!(e.both_open(img, pw), "{img} {pw}");
            }
            assert_eq!(e.volume_key(cs, img, "pw2"), vk);
            assert_eq!(e.volume_key(wc, img, "pw"), vk);
        }
        // And back, each tool on the other's output.
        ok(wc().args(["convert", "-q", "--type", "luks1"]).arg(&by_cs));
        ok(cs().args(["convert", "-q", "--type", "luks1"]).arg(&by_wc));
        assert_eq!(phdr(&by_cs), phdr(&a));
        assert_eq!(phdr(&by_wc), phdr(&a));
        for img in [&by_cs, &by_wc] {
            for pw in ["pw", "pw2"] {
                assert!(e.both_open(img, pw), "{img} {pw}");
            }
            assert_eq!(e.volume_key(cs, img, "pw2"), vk);
        }
    }
    // A native LUKS2 volume (PBKDF2, 512-byte sectors) to LUKS1 and back.
    let n = e.image("n.img", 20);
    // Keyslots 3 and 6 in the first two areas: cryptsetup gives them LUKS1
    // areas by position (sectors 8 and 512), the free slots the rest.
    ok(cs()
        .args([
            "luksFormat",
            "-q",
            "--type",
            "luks2",
            "--sector-size",
            "512",
            "-S",
            "3",
        ])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&n));
    ok(cs()
        .args(["luksAddKey", "-q", "-S", "6"])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&n)
        .arg(e.p("pw2")));
    let vk = e.volume_key(cs, &n, "pw");
    let by_cs = e.copy(&n, "ncs.img");
    ok(wc().args(["convert", "-q", "--type", "luks1"]).arg(&n));
    ok(cs().args(["convert", "-q", "--type", "luks1"]).arg(&by_cs));
    let (wo, wp, wk) = phdr(&n);
    assert_eq!((wo, wp, wk), phdr(&by_cs));
    for pw in ["pw", "pw2"] {
        assert!(e.both_open(&n, pw));
    }
    assert_eq!(e.volume_key(cs, &n, "pw2"), vk);
    ok(wc().args(["convert", "-q", "--type", "luks2"]).arg(&n));
    assert!(e.both_open(&n, "pw2"));
}

/// Runs `args` once to count its device writes, then once per write with a
/// kill before it, on a fresh copy of `base`; `check` judges each result.
fn crash_points(e: &Env, base: &str, args: &[String], check: &dyn Fn(&str, u64)) -> u64 {
    let count_file = e.p("writes");
    let _ = std::fs::remove_file(&count_file);
    let probe = e.copy(base, "probe.img");
    let a: Vec<String> = args.iter().map(|x| x.replace("@IMG", &probe)).collect();
    ok(wc().args(&a).env("WRAPCRYPT_FAULT_COUNT", &count_file));
    let n = std::fs::read_to_string(&count_file)
        .unwrap()
        .lines()
        .count() as u64;
    assert!(n > 0);
    for k in 1..=n {
        let img = e.copy(base, "crash.img");
        let a: Vec<String> = args.iter().map(|x| x.replace("@IMG", &img)).collect();
        let st = out(wc().args(&a).env("WRAPCRYPT_FAULT_AT", k.to_string()));
        assert!(
            st.status.code().is_none(),
            "not killed at write {k}: {st:?}"
        );
        check(&img, k);
    }
    n
}

#[test]
fn crash_points_luks1_keyslot_actions() {
    let e = Env::new();
    let base = e.image("base.img", 4);
    ok(wc()
        .args(["luksFormat", "-q", "--type", "luks1"])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&base));
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let f = FAST.map(String::from);
    // luksAddKey: the old passphrase opens at every point.
    let mut add = s(&["luksAddKey", "-q", "-d", &e.s("pw"), "@IMG", &e.s("pw2")]);
    add.extend(f.clone());
    let n_add = crash_points(&e, &base, &add, &|img, k| {
        assert!(e.both_open(img, "pw"), "add, crash at {k}");
    });
    // luksChangeKey on the only keyslot: old or new opens.
    let mut chg = s(&["luksChangeKey", "-q", "-d", &e.s("pw"), "@IMG", &e.s("pw3")]);
    chg.extend(f.clone());
    let n_chg = crash_points(&e, &base, &chg, &|img, k| {
        assert!(
            e.both_open(img, "pw") || e.both_open(img, "pw3"),
            "change, crash at {k}"
        );
    });
    // luksRemoveKey: the other keyslot opens at every point.
    let two = e.copy(&base, "two.img");
    ok(wc()
        .args(["luksAddKey", "-q"])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&two)
        .arg(e.p("pw2")));
    let rm = s(&["luksRemoveKey", "-q", "@IMG", &e.s("pw")]);
    let n_rm = crash_points(&e, &two, &rm, &|img, k| {
        assert!(e.both_open(img, "pw2"), "remove, crash at {k}");
    });
    println!("write points: luksAddKey {n_add}, luksChangeKey {n_chg}, luksRemoveKey {n_rm}");
    assert!(n_add >= 2 && n_chg >= 3 && n_rm >= 2);
}

#[test]
fn crash_points_convert_both_ways() {
    let e = Env::new();
    let l1 = e.image("l1.img", 8);
    ok(cs()
        .args(["luksFormat", "-q", "--type", "luks1"])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&l1));
    ok(cs()
        .args(["luksAddKey", "-q", "-S", "3"])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&l1)
        .arg(e.p("pw2")));
    let args: Vec<String> = ["convert", "-q", "--type", "luks2", "@IMG"]
        .map(String::from)
        .to_vec();
    let n12 = crash_points(&e, &l1, &args, &|img, k| {
        for pw in ["pw", "pw2"] {
            assert!(e.both_open(img, pw), "to LUKS2, crash at {k}, {pw}");
        }
    });
    let l2 = e.image("l2.img", 20);
    ok(cs()
        .args([
            "luksFormat",
            "-q",
            "--type",
            "luks2",
            "--sector-size",
            "512",
        ])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&l2));
    ok(cs()
        .args(["luksAddKey", "-q", "-S", "1"])
        .args(FAST)
        .arg("-d")
        .arg(e.p("pw"))
        .arg(&l2)
        .arg(e.p("pw2")));
    let args: Vec<String> = ["convert", "-q", "--type", "luks1", "@IMG"]
        .map(String::from)
        .to_vec();
    let n21 = crash_points(&e, &l2, &args, &|img, k| {
        for pw in ["pw", "pw2"] {
            assert!(e.both_open(img, pw), "to LUKS1, crash at {k}, {pw}");
        }
    });
    println!("write points: convert to LUKS2 {n12}, to LUKS1 {n21}");
}
