//! Provider faults at the command line (issue 4, item 6): the custodian not
//! running and not startable, a peer uid the custodian does not serve, a
//! wrong PKCS#11 PIN, a missing token or wrapping key, another provider's
//! blob, a blob under a master key the custodian no longer has, and a
//! corrupted blob. Each runs the real binary and checks cryptsetup's exit
//! code (table in docs/provider-protocol.md §9), exactly one line on stderr
//! naming the cause, and that no byte of any image changed and nothing was
//! left activated. (The custodian killed while a volume is open is
//! wrapped_faults.rs.)

mod common;
mod wrapped_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::{Digest, Sha256};
use wrapped_common::*;

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "fault-4711";

/// sha256 (hex) of a whole file.
fn hash(path: &str) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read image")))
}

/// Asserts the exit code, that stderr is exactly one line (no panic, no
/// backtrace, no Debug dump) and that it names the cause: every word of
/// `words` appears in it (case-insensitive).
fn assert_fault(o: &Out, code: i32, words: &[&str], what: &str) {
    println!("{what}: exit {}: {}", o.code, o.stderr.trim_end());
    assert_eq!(o.code, code, "{what}: wrong exit code: {o}");
    assert!(
        o.stderr.ends_with('\n') && o.stderr.lines().count() == 1,
        "{what}: stderr is not exactly one line: {o}"
    );
    let line = o.stderr.trim_end();
    for bad in [
        "panicked",
        "RUST_BACKTRACE",
        "Os {",
        "Custom {",
        "kind:",
        "Error {",
    ] {
        assert!(!line.contains(bad), "{what}: debug output on stderr: {o}");
    }
    let lower = line.to_lowercase();
    for w in words {
        assert!(
            lower.contains(&w.to_lowercase()),
            "{what}: stderr does not name the cause ({w:?}): {o}"
        );
    }
}

/// Asserts that a failed open left no mapping and no server state behind.
fn assert_not_active(name: &str) {
    assert!(
        !Path::new("/run/wrapcrypt").join(name).exists(),
        "/run/wrapcrypt/{name} left behind"
    );
    assert!(
        std::fs::symlink_metadata(Path::new("/dev/mapper").join(name)).is_err(),
        "/dev/mapper/{name} left behind"
    );
}

/// A mapping name unique to this test process.
fn map_name(tag: &str) -> String {
    format!("wcpf{tag}{}", std::process::id())
}

/// Runs `cmd` and checks a fault on `open` (activation) of `img`: exit
/// code, one line, image unchanged, nothing activated.
fn check_open(mut cmd: Command, img: &str, name: &str, code: i32, words: &[&str], what: &str) {
    let before = hash(img);
    let o = run_cmd(&mut cmd, None, WC);
    assert_fault(&o, code, words, what);
    assert_eq!(hash(img), before, "{what}: the image changed");
    assert_not_active(name);
}

/// Runs `cmd` and checks a fault on a command that must not write `img`.
fn check_unchanged(mut cmd: Command, img: &str, code: i32, words: &[&str], what: &str) {
    let before = hash(img);
    let o = run_cmd(&mut cmd, None, WC);
    assert_fault(&o, code, words, what);
    assert_eq!(hash(img), before, "{what}: the image changed");
}

/// luksFormat arguments for a waes volume on `img` with passphrase file `kf`.
fn format_args<'a>(img: &'a str, kf: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["luksFormat", "-q", "--cipher", "waes-xts-plain64"];
    v.extend_from_slice(FAST);
    v.extend_from_slice(extra);
    v.extend_from_slice(&[img, kf]);
    v
}

/// A test image of 20 MiB filled with a pattern (so "unchanged" means
/// something: a zeroed header area would hide a partial write of zeros).
fn patterned_image(s: &Scratch, name: &str) -> String {
    let data: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(s.path(name), data).expect("write image");
    s.p(name)
}

// ---------------------------------------------------------------- custodian

#[test]
fn custodian_not_running_and_not_installed() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let kf = s.key("pass", b"fault-pass");
    let img = s.image("w.img", 20);
    format_waes(&c, &img, &kf);
    // The binary alone, with no wrapcrypt-custodiand beside it or on PATH,
    // pointed at a socket where nothing listens.
    let dir = s.path("bin");
    std::fs::create_dir(&dir).unwrap();
    let lone = dir.join("wrapcrypt");
    std::fs::copy(wrapcrypt_bin(), &lone).unwrap();
    let cmd = |args: &[&str]| {
        let mut c = Command::new(&lone);
        c.args(args)
            .env("LC_ALL", "C")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("WRAPCRYPT_CUSTODIAN_SOCKET", s.path("nobody-home.sock"));
        c
    };
    let name = map_name("nr");
    let words = ["custodian", "not running", "wrapcrypt-custodiand"];
    check_open(
        cmd(&["open", &img, &name, "--key-file", &kf]),
        &img,
        &name,
        1,
        &words,
        "open, custodian absent",
    );
    let target = patterned_image(&s, "t.img");
    check_unchanged(
        cmd(&format_args(&target, &kf, &[])),
        &target,
        1,
        &words,
        "luksFormat, custodian absent",
    );
    // The passphrase test checks the keyslot only, as cryptsetup's does.
    let o = run_cmd(
        &mut cmd(&["open", "--test-passphrase", &img, "--key-file", &kf]),
        None,
        WC,
    );
    assert_eq!(o.code, 0, "--test-passphrase needs no provider: {o}");
}

#[test]
fn custodian_not_startable() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let kf = s.key("pass", b"fault-pass");
    let img = s.image("w.img", 20);
    format_waes(&c, &img, &kf);
    let target = patterned_image(&s, "t.img");
    let name = map_name("ns");
    // The daemon is installed, but its state directory is a regular file,
    // so the on-demand start fails; then a socket path whose parent is a
    // regular file, which no daemon could ever listen on.
    std::fs::write(s.path("file"), b"not a directory").unwrap();
    std::fs::write(s.path("d.state"), b"not a directory").unwrap();
    for (sock, words) in [
        (
            s.path("d.sock"),
            &["custodian", "could not be started", "d.state"][..],
        ),
        (
            s.path("file").join("c.sock"),
            &["custodian", "file/c.sock", "not a directory"][..],
        ),
    ] {
        let cmd = |args: &[&str]| {
            let mut c = WC.cmd(args);
            c.env("WRAPCRYPT_CUSTODIAN_SOCKET", &sock);
            c
        };
        check_open(
            cmd(&["open", &img, &name, "--key-file", &kf]),
            &img,
            &name,
            1,
            words,
            &format!("open, custodian at {} not startable", sock.display()),
        );
        check_unchanged(
            cmd(&format_args(&target, &kf, &[])),
            &target,
            1,
            words,
            &format!("luksFormat, custodian at {} not startable", sock.display()),
        );
    }
}

/// Makes `p` readable (and for dirs searchable) by everyone.
fn open_up(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn custodian_of_another_user() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    // The image and key file live where `nobody` can read them; the
    // custodian's socket stays in root's 0700 scratch dir for now.
    let pub_dir = Scratch::new();
    open_up(pub_dir.dir.path(), 0o755);
    let kf = pub_dir.key("pass", b"fault-pass");
    let img = pub_dir.image("w.img", 20);
    format_waes(&c, &img, &kf);
    open_up(Path::new(&kf), 0o644);
    open_up(Path::new(&img), 0o644);
    let target = patterned_image(&pub_dir, "t.img");
    open_up(Path::new(&target), 0o666);
    open_up(s.dir.path(), 0o700);
    // The CLI as `nobody` against root's custodian.
    let as_nobody = |args: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(wrapcrypt_bin())
            .args(args)
            .env("LC_ALL", "C")
            .env("WRAPCRYPT_CUSTODIAN_SOCKET", s.path("c.sock"));
        cmd
    };
    let name = map_name("uid");
    // 1. The socket is another user's and out of reach (EACCES).
    // 2. The socket is reachable, but the custodian serves uid 0 and its
    //    own uid only, and refuses the peer by SO_PEERCRED.
    for (reachable, words) in [
        (
            false,
            &["custodian", "c.sock", "permission denied", "another user"][..],
        ),
        (true, &["custodian", "uid 65534", "allow_uids"][..]),
    ] {
        if reachable {
            open_up(s.dir.path(), 0o755);
        }
        check_open(
            as_nobody(&["open", "--readonly", &img, &name, "--key-file", &kf]),
            &img,
            &name,
            2,
            words,
            &format!("open as another uid (socket reachable: {reachable})"),
        );
        check_unchanged(
            as_nobody(&format_args(&target, &kf, &[])),
            &target,
            2,
            words,
            &format!("luksFormat as another uid (socket reachable: {reachable})"),
        );
    }
}

/// A process of another user listening where the custodian should be (a
/// stale socket path taken over, a wrong WRAPCRYPT_CUSTODIAN_SOCKET): the
/// CLI checks the server's uid (SO_PEERCRED) and sends it nothing, not
/// even HELLO — an IMPORT would otherwise hand it a clear key.
#[test]
fn custodian_socket_served_by_another_user() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let kf = s.key("pass", b"fault-pass");
    let img = s.image("w.img", 20);
    format_waes(&c, &img, &kf);
    let pub_dir = Scratch::new();
    open_up(pub_dir.dir.path(), 0o777);
    let sock = pub_dir.path("impostor.sock");
    let got = pub_dir.path("received");
    // The impostor records every byte a client sends it.
    let script = format!(
        "import socket,os\n\
         s=socket.socket(socket.AF_UNIX); s.bind({sock:?}); s.listen(8)\n\
         open({ready:?},'w').close()\n\
         while True:\n    c,_=s.accept(); d=c.recv(65536); open({got:?},'ab').write(d); c.close()\n",
        ready = pub_dir.path("ready"),
    );
    let mut imp = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .spawn()
        .expect("python3 and setpriv are installed");
    for _ in 0..200 {
        if Path::new(&pub_dir.path("ready")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        Path::new(&pub_dir.path("ready")).exists(),
        "the impostor (python3 as uid 65534) did not start"
    );
    let name = map_name("imp");
    let words = &[
        "custodian",
        "impostor.sock",
        "uid 65534",
        "neither root nor you",
    ][..];
    let with_impostor = |args: &[&str]| {
        let mut cmd = Command::new(wrapcrypt_bin());
        cmd.args(args)
            .env("LC_ALL", "C")
            .env("WRAPCRYPT_CUSTODIAN_SOCKET", &sock);
        cmd
    };
    check_open(
        with_impostor(&["open", "--readonly", &img, &name, "--key-file", &kf]),
        &img,
        &name,
        2,
        words,
        "open against another user's socket",
    );
    let target = patterned_image(&s, "t.img");
    check_unchanged(
        with_impostor(&format_args(&target, &kf, &[])),
        &target,
        2,
        words,
        "luksFormat against another user's socket",
    );
    let _ = imp.kill();
    let _ = imp.wait();
    let sent = std::fs::read(&got).unwrap_or_default();
    assert!(
        sent.is_empty(),
        "the CLI sent {} bytes to the impostor",
        sent.len()
    );
}

#[test]
fn blob_under_a_destroyed_master_key() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let kf = s.key("pass", b"fault-pass");
    let img = s.image("w.img", 20);
    format_waes(&c, &img, &kf);
    // NEW -> CURRENT -> OLD twice: the volume's master key is destroyed.
    for _ in 0..2 {
        c.ok(&["custodian", "load-new-master-key"]);
        c.ok(&["custodian", "set-master-key"]);
    }
    let name = map_name("mk");
    check_open(
        c.cmd(&["open", &img, &name, "--key-file", &kf]),
        &img,
        &name,
        1,
        &["custodian", "master key"],
        "open, master key gone",
    );
    // Keyslot commands handle the blob, not the key, and need no provider,
    // as cryptsetup's do on a paes volume whose secure key is gone: the
    // passphrase test and luksAddKey still work.
    let o = c.wc(
        &["open", "--test-passphrase", &img, "--key-file", &kf],
        None,
    );
    assert_eq!(o.code, 0, "--test-passphrase checks the keyslot only: {o}");
    let kf2 = s.key("pass2", b"second-pass");
    let mut add = vec!["luksAddKey", "-q"];
    add.extend_from_slice(FAST);
    add.extend_from_slice(&[&img, "--key-file", &kf, &kf2]);
    c.ok(&add);
    let o = c.wc(
        &["open", "--test-passphrase", &img, "--key-file", &kf2],
        None,
    );
    assert_eq!(o.code, 0, "the added passphrase unlocks the keyslot: {o}");
}

// ---------------------------------------------------------------- corrupted and foreign blobs

/// A fresh custodian blob (256 bytes), made through the library client.
fn custodian_blob(s: &Scratch) -> Vec<u8> {
    use wrapcrypt_provider::{CustodianConfig, CustodianProvider, KeyProvider, KeySpec};
    let p = CustodianProvider::new(CustodianConfig::new(s.path("c.sock")));
    p.generate(&KeySpec::aes_256_xts()).unwrap().encode()
}

/// `blob` with one payload bit flipped; `fix_check` recomputes the SHA-256
/// check so the blob parses and only the provider's unwrap can tell.
fn flipped(blob: &[u8], fix_check: bool) -> Vec<u8> {
    let mut b = blob.to_vec();
    b[104 + 20] ^= 0x01;
    if fix_check {
        let d = Sha256::digest(&b[..224]);
        b[224..].copy_from_slice(&d);
    }
    b
}

/// Formats `img` as a waes volume whose keyslot holds `blob` as it is
/// (the digest certifies it), with the tokens the CLI writes.
fn format_with_blob(img: &str, kf: &[u8], blob: &[u8]) {
    use wrapcrypt_format::luks2::Token;
    use wrapcrypt_volume::format::{format_luks2, FormatParams};
    use wrapcrypt_volume::pbkdf::PbkdfOptions;
    let tokens = vec![
        Token::from_json(
            0,
            &serde_json::json!({"type": "waes-verification-pattern", "keyslots": [],
                "verification-pattern": "00".repeat(32)}),
        )
        .unwrap(),
        Token::from_json(
            1,
            &serde_json::json!({"type": "waes-provider", "keyslots": [], "provider": "custodian"}),
        )
        .unwrap(),
    ];
    let params = FormatParams {
        cipher: "waes-xts-plain64".into(),
        key_size: blob.len(),
        pbkdf: PbkdfOptions {
            kind: Some("pbkdf2".into()),
            force_iterations: Some(1000),
            ..Default::default()
        },
        tokens,
        ..Default::default()
    };
    let key = wrapcrypt_secret::SecretBytes::copy_from(blob);
    format_luks2(Path::new(img), None, &params, &key, kf).unwrap();
}

#[test]
fn corrupted_blob() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let kf = s.key("pass", b"fault-pass");
    let good = custodian_blob(&s);
    let target = patterned_image(&s, "t.img");
    // luksFormat --volume-key-file: a bit flip the blob's check catches,
    // then one only the custodian's authenticated unwrap catches.
    for (fix, words) in [
        (false, &["wrapped-key blob", "check"][..]),
        (true, &["custodian", "fails authentication", "altered"][..]),
    ] {
        let vk = s.key("vk", &flipped(&good, fix));
        check_unchanged(
            c.cmd(&format_args(&target, &kf, &["--volume-key-file", &vk])),
            &target,
            1,
            words,
            &format!("luksFormat with a flipped blob (check fixed: {fix})"),
        );
    }
    // A volume whose keyslot holds the flipped blob (its digest matches:
    // the damage happened before the volume was made).
    for (fix, words) in [
        (false, &["wrapped key", "check"][..]),
        (true, &["custodian", "fails authentication", "altered"][..]),
    ] {
        let img = s.image(&format!("bad{fix}.img"), 20);
        format_with_blob(&img, b"fault-pass", &flipped(&good, fix));
        let name = map_name("cb");
        check_open(
            c.cmd(&["open", &img, &name, "--key-file", &kf]),
            &img,
            &name,
            1,
            words,
            &format!("open with a flipped blob (check fixed: {fix})"),
        );
    }
    // The unflipped blob opens as the control: the faults above are the flips.
    let img = s.image("good.img", 20);
    let vk = s.key("vk", &good);
    c.ok(&format_args(&img, &kf, &["--volume-key-file", &vk]));
    let o = c.wc(
        &["open", "--test-passphrase", &img, "--key-file", &kf],
        None,
    );
    assert_eq!(o.code, 0, "control volume: {o}");
}

// ---------------------------------------------------------------- pkcs11

/// A SoftHSM2 directory with token `label` (user PIN `PIN`) holding an
/// AES-256 wrapping key "kek" (CKA_ID 01), written by OpenSC's pkcs11-tool.
fn softhsm(dir: &Path, label: &str, with_key: bool) -> PathBuf {
    let conf = softhsm_token(dir, label, "so-0815", PIN);
    let run = |prog: &str, args: &[&str]| softhsm_run(&conf, prog, args);
    if with_key {
        run(
            "pkcs11-tool",
            &[
                "--module",
                SOFTHSM,
                "--token-label",
                label,
                "--login",
                "--pin",
                PIN,
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
    }
    conf
}

fn p11_uri(token: &str, object: &str) -> String {
    format!("pkcs11:token={token};object={object}?module-path={SOFTHSM}")
}

/// A pkcs11 waes volume on token "flt": (scratch, conf, image, key file, pin file).
struct P11 {
    s: Scratch,
    conf: PathBuf,
    img: String,
    kf: String,
    pin: String,
}

impl P11 {
    fn new() -> P11 {
        let s = Scratch::new();
        let conf = softhsm(&s.path("hsm"), "flt", true);
        let kf = s.key("pass", b"fault-pass");
        let pin = s.key("pin", format!("{PIN}\n").as_bytes());
        let img = s.image("p.img", 20);
        let uri = p11_uri("flt", "kek");
        let p = P11 {
            s,
            conf,
            img,
            kf,
            pin,
        };
        let o = run_cmd(&mut p.format(&p.img, &uri, &p.pin), None, WC);
        assert_eq!(o.code, 0, "pkcs11 luksFormat: {o}");
        p
    }

    /// `luksFormat` of `target` as a pkcs11 waes volume on `uri`.
    fn format(&self, target: &str, uri: &str, pin_file: &str) -> Command {
        self.cmd(&format_args(
            target,
            &self.kf,
            &["--key-provider", uri, "--pin-file", pin_file],
        ))
    }

    /// `open` of the test volume as `name` with the PIN from `pin_file`.
    fn open(&self, name: &str, pin_file: &str) -> Command {
        self.cmd(&[
            "open",
            &self.img,
            name,
            "--key-file",
            &self.kf,
            "--pin-file",
            pin_file,
        ])
    }

    fn cmd<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = WC.cmd(args);
        c.env("SOFTHSM2_CONF", &self.conf)
            .env("WRAPCRYPT_CUSTODIAN_SOCKET", self.s.path("c.sock"));
        c
    }
}

#[test]
fn pkcs11_wrong_pin() {
    let p = P11::new();
    let bad = p.s.key("badpin", b"0000\n");
    let name = map_name("pin");
    let words = ["wrong pin", "flt"];
    check_open(
        p.open(&name, &bad),
        &p.img,
        &name,
        2,
        &words,
        "open, wrong PIN",
    );
    let target = patterned_image(&p.s, "t.img");
    let uri = p11_uri("flt", "kek");
    check_unchanged(
        p.format(&target, &uri, &bad),
        &target,
        2,
        &words,
        "luksFormat, wrong PIN",
    );
}

#[test]
fn pkcs11_missing_token() {
    let p = P11::new();
    // The token is unplugged: the module now shows another one only.
    let other = softhsm(&p.s.path("hsm2"), "spare", false);
    let name = map_name("tok");
    let mut cmd = p.open(&name, &p.pin);
    cmd.env("SOFTHSM2_CONF", &other);
    let words = ["no token labelled 'flt'", "spare"];
    check_open(cmd, &p.img, &name, 1, &words, "open, token missing");
    let target = patterned_image(&p.s, "t.img");
    let uri = p11_uri("nosuch", "kek");
    check_unchanged(
        p.format(&target, &uri, &p.pin),
        &target,
        1,
        &["no token labelled 'nosuch'", "flt"],
        "luksFormat, token missing",
    );
}

#[test]
fn pkcs11_missing_wrapping_key() {
    let p = P11::new();
    let target = patterned_image(&p.s, "t.img");
    let uri = p11_uri("flt", "nokey");
    check_unchanged(
        p.format(&target, &uri, &p.pin),
        &target,
        1,
        &["no wrapping key labelled 'nokey'"],
        "luksFormat, wrapping key missing",
    );
    // The volume's wrapping key is deleted from the token.
    let o = Command::new("pkcs11-tool")
        .args([
            "--module",
            SOFTHSM,
            "--token-label",
            "flt",
            "--login",
            "--pin",
            PIN,
            "--delete-object",
            "--type",
            "secrkey",
            "--id",
            "01",
        ])
        .env("SOFTHSM2_CONF", &p.conf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let name = map_name("kek");
    check_open(
        p.open(&name, &p.pin),
        &p.img,
        &name,
        1,
        &["wrapping key", "not in token 'flt'"],
        "open, wrapping key deleted",
    );
}

/// Swaps the volume's `waes-provider` token (id 1) for the JSON in file
/// `tok`, with the CLI's own token commands.
fn replace_provider_token(p: &P11, img: &str, tok: &str) {
    for args in [
        vec!["token", "remove", "--token-id", "1", img],
        vec![
            "token",
            "import",
            "--json-file",
            tok,
            "--token-id",
            "1",
            img,
        ],
    ] {
        let o = run_cmd(&mut p.cmd(&args), None, WC);
        assert_eq!(o.code, 0, "{args:?}: {o}");
    }
}

#[test]
fn blob_of_another_provider() {
    let p = P11::new();
    let c = Custodian::new(&p.s);
    let blob = custodian_blob(&p.s);
    // luksFormat for the token, handed the custodian's blob.
    let vk = p.s.key("vk", &blob);
    let target = patterned_image(&p.s, "t.img");
    let uri = p11_uri("flt", "kek");
    check_unchanged(
        p.cmd(&format_args(
            &target,
            &p.kf,
            &[
                "--key-provider",
                &uri,
                "--pin-file",
                &p.pin,
                "--volume-key-file",
                &vk,
            ],
        )),
        &target,
        1,
        &["belongs to provider custodian", "pkcs11"],
        "luksFormat, custodian blob for pkcs11",
    );
    // A custodian volume whose provider token was replaced to name the
    // PKCS#11 token: the blob and the volume disagree.
    let img = p.s.image("c.img", 20);
    format_waes(&c, &img, &p.kf);
    let tok = p.s.key(
        "tok.json",
        serde_json::json!({"type": "waes-provider", "keyslots": [], "provider": "pkcs11", "uri": uri})
            .to_string()
            .as_bytes(),
    );
    replace_provider_token(&p, &img, &tok);
    let name = map_name("wp");
    check_open(
        p.cmd(&[
            "open",
            &img,
            &name,
            "--key-file",
            &p.kf,
            "--pin-file",
            &p.pin,
        ]),
        &img,
        &name,
        1,
        &["belongs to provider custodian", "pkcs11"],
        "open, volume names pkcs11, blob is the custodian's",
    );
    // A provider this wrapcrypt does not have.
    let tok = p.s.key(
        "tok2.json",
        serde_json::json!({"type": "waes-provider", "keyslots": [], "provider": "tpm9"})
            .to_string()
            .as_bytes(),
    );
    replace_provider_token(&p, &img, &tok);
    check_open(
        p.cmd(&["open", &img, &name, "--key-file", &p.kf]),
        &img,
        &name,
        1,
        &["provider", "tpm9"],
        "open, volume names an unknown provider",
    );
}

/// A key made for a luksFormat that then does not happen leaves nothing in
/// the provider: through p11-kit's client the key is token-held (WKB
/// mechanism 3, two token objects), and a declined confirmation must not
/// leave those objects behind. The control formats for real: two objects.
#[test]
fn declined_pkcs11_format_leaves_no_token_objects() {
    let p11 = P11KitServer::start("fmt");
    let s = Scratch::new();
    let kf = s.key("pass", b"fault-pass");
    let img = patterned_image(&s, "t.img");
    let before = p11.objects();
    let pin = p11.pin_file.to_str().unwrap().to_string();
    let uri = p11.uri("kek");
    let args = |batch: bool| {
        let mut v = vec![
            "luksFormat",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--cipher",
            "waes-xts-plain64",
            "--key-provider",
            &uri,
            "--pin-file",
            &pin,
            "--key-file",
            &kf,
            &img,
        ];
        if batch {
            v.insert(1, "-q");
        }
        v
    };
    let h0 = hash(&img);
    let mut cmd = p11.wc(&args(false));
    let o = run_cmd(&mut cmd, Some(b"no\n"), Tool::Wrapcrypt);
    assert_ne!(o.code, 0, "declined luksFormat succeeded: {}", o.stderr);
    assert_eq!(hash(&img), h0, "declined luksFormat changed the image");
    assert_eq!(
        p11.objects(),
        before,
        "declined luksFormat left token objects behind"
    );
    let o = run_cmd(&mut p11.wc(&args(true)), None, Tool::Wrapcrypt);
    assert_eq!(o.code, 0, "luksFormat: {}", o.stderr);
    let after = p11.objects();
    assert_eq!(after.len(), before.len() + 2, "objects: {after:?}");
    // luksDump takes no PIN; the token needs one: it says so.
    let o = run_cmd(&mut p11.wc(&["luksDump", &img]), None, Tool::Wrapcrypt);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let prot = o.stdout.lines().find(|l| l.contains("Protection:"));
    assert!(
        prot.is_some_and(|l| l.contains("not known") && l.contains("PIN")),
        "{}",
        o.stdout
    );
    let o = run_cmd(
        &mut p11.wc(&["open", "--test-passphrase", "--key-file", &kf, &img]),
        None,
        Tool::Wrapcrypt,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
}
