//! Unlock tokens end to end with real hardware stand-ins: swtpm started by
//! each test (TCTI `swtpm:port=N`), a SoftHSM2 token created by the test
//! with an RSA key pair made by pkcs11-tool. Compatibility is checked with
//! the real other side: cryptsetup's luksDump / token export / import and
//! its systemd-pkcs11 plugin, systemd-cryptenroll, tpm2-tools.

mod common;
mod wrapped_common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use wrapped_common::*;

/// A running swtpm, killed on drop.
struct Swtpm {
    child: Child,
    port: u16,
}

impl Swtpm {
    fn start(s: &Scratch) -> Swtpm {
        let state = s.path("tpm");
        std::fs::create_dir_all(&state).unwrap();
        // Two adjacent free ports (server, control).
        let port = (0..200)
            .find_map(|_| {
                let l = TcpListener::bind("127.0.0.1:0").ok()?;
                let p = l.local_addr().ok()?.port();
                let l2 = TcpListener::bind(("127.0.0.1", p.checked_add(1)?)).ok()?;
                drop((l, l2));
                Some(p)
            })
            .expect("two free ports");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .args(["--server", &format!("type=tcp,port={port}")])
            .args(["--ctrl", &format!("type=tcp,port={}", port + 1)])
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm is installed (scripts/install-deps.sh)");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "swtpm did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Swtpm { child, port }
    }

    fn tcti(&self) -> String {
        format!("swtpm:port={}", self.port)
    }

    fn tools(&self, args: &[&str]) -> String {
        let o = Command::new(args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .expect("tpm2-tools installed");
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Closes a mapping when the test ends, also on failure.
struct Mapped(String);

impl Drop for Mapped {
    fn drop(&mut self) {
        let _ = WC.run(&["close", &self.0]);
    }
}

fn mapper_name(tag: &str) -> String {
    format!("wctok-{tag}-{}", std::process::id())
}

/// Writes `data` to /dev/mapper/NAME with direct I/O and returns what
/// reading it back gives.
fn write_read(name: &str, data: &[u8], s: &Scratch) -> Vec<u8> {
    let src = s.key("payload", data);
    let dev = format!("/dev/mapper/{name}");
    let st = Command::new("dd")
        .args([
            &format!("if={src}"),
            &format!("of={dev}"),
            "bs=1M",
            "oflag=direct",
            "status=none",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "dd to {dev}");
    read_mapped(name, data.len())
}

fn read_mapped(name: &str, len: usize) -> Vec<u8> {
    let o = Command::new("dd")
        .args([
            &format!("if=/dev/mapper/{name}"),
            "bs=1M",
            &format!("count={}", len >> 20),
            "iflag=direct",
            "status=none",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    o.stdout
}

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut v))
        .unwrap();
    v
}

fn token_json(tool: Tool, img: &str, id: u32) -> serde_json::Value {
    let o = tool.ok(&["token", "export", img, "--token-id", &id.to_string()]);
    serde_json::from_str(o.stdout.trim()).unwrap()
}

fn clear_volume(s: &Scratch, kf: &str) -> String {
    let img = s.image("disk.img", 40);
    let mut args = vec!["luksFormat", "-q", img.as_str(), kf];
    args.extend(FAST);
    WC.ok(&args);
    img
}

#[test]
fn tpm2_token_only_open_pcr_change_and_tpm_gone() {
    let s = Scratch::new();
    let mut tpm = Swtpm::start(&s);
    let kf = s.key("pass", b"correct horse");
    let img = clear_volume(&s, &kf);
    let tcti = tpm.tcti();
    let o = WC.ok(&[
        "enroll",
        &img,
        "--tpm2-device",
        &tcti,
        "--tpm2-pcrs",
        "7",
        "--key-file",
        &kf,
    ]);
    assert!(o.stdout.contains("enrolled as key slot 1"), "{o}");

    // The token is systemd's: fields, and the policy digest that tpm2-tools
    // computes for PCR 7 of the sha256 bank as it is now.
    let t = token_json(WC, &img, 0);
    assert_eq!(t["type"], "systemd-tpm2");
    assert_eq!(t["keyslots"], serde_json::json!(["1"]));
    assert_eq!(t["tpm2-pcrs"], serde_json::json!([7]));
    assert_eq!(t["tpm2-pcr-bank"], "sha256");
    assert_eq!(t["tpm2-primary-alg"], "ecc");
    assert_eq!(t["tpm2-pin"], false);
    let pol = s.p("policy.bin");
    tpm.tools(&[
        "tpm2_createpolicy",
        "--policy-pcr",
        "-l",
        "sha256:7",
        "-L",
        &pol,
    ]);
    assert_eq!(t["tpm2-policy-hash"], hex_of(&std::fs::read(&pol).unwrap()));
    // Keyslot 1 uses systemd's minimal PBKDF for a 256-bit secret.
    let dump = CS.ok(&["luksDump", &img]).stdout;
    assert!(dump.contains("systemd-tpm2"), "{dump}");
    assert!(dump.contains("PBKDF:      pbkdf2"), "{dump}");

    // cryptsetup round trip: export, remove, import; wrapcrypt still unlocks.
    assert_eq!(token_json(CS, &img, 0), t);
    let exported = s.key(
        "tok.json",
        CS.ok(&["token", "export", &img, "--token-id", "0"])
            .stdout
            .as_bytes(),
    );
    CS.ok(&["token", "remove", &img, "--token-id", "0"]);
    CS.ok(&[
        "token",
        "import",
        &img,
        "--json-file",
        &exported,
        "--token-id",
        "0",
    ]);
    assert_eq!(token_json(WC, &img, 0), t);

    // Hardware alone: no passphrase anywhere, stdin closed.
    let name = mapper_name("tpm");
    WC.ok(&["open", "--token-only", "--tpm2-device", &tcti, &img, &name]);
    let guard = Mapped(name.clone());
    let data = random(4 << 20);
    assert!(
        write_read(&name, &data, &s) == data,
        "data read back differs"
    );
    WC.ok(&["close", &name]);
    WC.ok(&["open", "--token-only", "--tpm2-device", &tcti, &img, &name]);
    assert!(
        read_mapped(&name, data.len()) == data,
        "data differs after close/open"
    );
    let st = WC.ok(&["status", &name]).stdout;
    assert!(st.contains("keyslot") || st.contains("active"), "{st}");
    WC.ok(&["close", &name]);
    drop(guard);
    // The token keyslot's passphrase is what systemd would use too: the
    // same data reads back through the typed passphrase.
    WC.ok(&["open", "--key-file", &kf, &img, &name]);
    let guard = Mapped(name.clone());
    assert!(read_mapped(&name, data.len()) == data);
    WC.ok(&["close", &name]);
    drop(guard);

    // A PCR 7 extension (a different boot chain) stops the token.
    tpm.tools(&["tpm2_pcrextend", &format!("7:sha256={}", "11".repeat(32))]);
    let o = WC.run(&[
        "open",
        "--test-passphrase",
        "--token-only",
        "--tpm2-device",
        &tcti,
        &img,
    ]);
    assert_eq!(o.code, 2, "{o}");
    assert!(
        o.stderr.contains("PCR 7") && o.stderr.contains("changed"),
        "{o}"
    );
    // Without --token-only the passphrase still opens (keyslot 0).
    let o = WC.run_stdin(
        &[
            "open",
            "--test-passphrase",
            "--tpm2-device",
            &tcti,
            "-v",
            &img,
        ],
        Some(b"correct horse\n"),
    );
    assert_eq!(o.code, 0, "{o}");
    assert!(o.stderr.contains("Token 0 (systemd-tpm2) failed"), "{o}");
    assert_eq!(test_pass(WC, &img, &kf, &[]), 0);

    // No TPM at all: one clear line, no TSS log noise, not exit 0.
    tpm.stop();
    let o = WC.run(&[
        "open",
        "--test-passphrase",
        "--token-only",
        "--tpm2-device",
        &tcti,
        &img,
    ]);
    assert_eq!(o.code, 1, "{o}");
    assert!(
        o.stderr.contains("cannot reach the TPM at swtpm:port="),
        "{o}"
    );
    assert_eq!(o.stderr.lines().count(), 1, "{o}");
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn tpm2_pin_needs_both_factors() {
    let s = Scratch::new();
    let tpm = Swtpm::start(&s);
    let kf = s.key("pass", b"pw");
    let img = clear_volume(&s, &kf);
    let pin = s.key("pin", b"2468\n");
    let bad = s.key("bad", b"1111");
    let tcti = tpm.tcti();
    WC.ok(&[
        "enroll",
        &img,
        "--tpm2-device",
        &tcti,
        "--tpm2-with-pin",
        "--pin-file",
        &pin,
        "--key-file",
        &kf,
    ]);
    assert_eq!(token_json(WC, &img, 0)["tpm2-pin"], true);
    let base = [
        "open",
        "--test-passphrase",
        "--token-only",
        "--tpm2-device",
        &tcti,
        &img,
    ];
    let with = |extra: &[&str], stdin: Option<&[u8]>| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend(extra);
        WC.run_stdin(&a, stdin)
    };
    assert_eq!(with(&["--pin-file", &pin], None).code, 0);
    // The PIN may be typed (here: stdin) with --token-only.
    assert_eq!(with(&[], Some(b"2468\n")).code, 0);
    let o = with(&["--pin-file", &bad], None);
    assert_eq!(o.code, 2, "{o}");
    assert!(o.stderr.contains("wrong TPM2 PIN"), "{o}");
    // The TPM alone (no PIN) is not enough.
    assert_ne!(with(&[], None).code, 0);
}

#[test]
fn systemd_cryptenroll_tpm2_tokens_open_with_wrapcrypt() {
    let s = Scratch::new();
    let tpm = Swtpm::start(&s);
    let kf = s.key("pass", b"pw");
    let img = clear_volume(&s, &kf);
    let tcti = tpm.tcti();
    // systemd 252 enrolls (PIN 1357, PCR 7); wrapcrypt unseals its token.
    let o = Command::new("systemd-cryptenroll")
        .args([
            &format!("--tpm2-device={tcti}"),
            "--tpm2-pcrs=7",
            "--tpm2-with-pin=yes",
            &img,
        ])
        .env("PASSWORD", "pw")
        .env("NEWPIN", "1357")
        .stdin(Stdio::null())
        .output()
        .expect("systemd-cryptenroll is installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = token_json(WC, &img, 0);
    assert_eq!(t["type"], "systemd-tpm2");
    assert_eq!(t["tpm2-pin"], true);
    let pin = s.key("pin", b"1357");
    let o = WC.run(&[
        "open",
        "--test-passphrase",
        "--token-only",
        "--tpm2-device",
        &tcti,
        "--pin-file",
        &pin,
        &img,
    ]);
    assert_eq!(o.code, 0, "{o}");
    let bad = s.key("bad", b"7531");
    let o = WC.run(&[
        "open",
        "--test-passphrase",
        "--token-only",
        "--tpm2-device",
        &tcti,
        "--pin-file",
        &bad,
        &img,
    ]);
    assert_eq!(o.code, 2, "{o}");
    // And systemd recognises wrapcrypt's own enrollment of the same PCRs
    // as the one it would make (it declines to enroll a duplicate).
    let img2 = {
        let p = s.image("disk2.img", 40);
        let mut args = vec!["luksFormat", "-q", p.as_str(), kf.as_str()];
        args.extend(FAST);
        WC.ok(&args);
        p
    };
    WC.ok(&[
        "enroll",
        &img2,
        "--tpm2-device",
        &tcti,
        "--tpm2-pcrs",
        "7",
        "--key-file",
        &kf,
    ]);
    let o = Command::new("systemd-cryptenroll")
        .args([&format!("--tpm2-device={tcti}"), "--tpm2-pcrs=7", &img2])
        .env("PASSWORD", "pw")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("already enrolled"),
        "{err}"
    );
}

/// A SoftHSM2 token "unl" (user PIN 4321) holding RSA-2048 key pair "unlk".
fn softhsm(s: &Scratch) -> (String, String) {
    let dir = s.path("hsm");
    let conf = wrapped_common::softhsm_token(&dir, "unl", "8765", "4321");
    let run = |prog: &str, args: &[&str]| wrapped_common::softhsm_run(&conf, prog, args);
    let module = "/usr/lib/softhsm/libsofthsm2.so";
    run(
        "pkcs11-tool",
        &[
            "--module",
            module,
            "--token-label",
            "unl",
            "--login",
            "--pin",
            "4321",
            "--keypairgen",
            "--key-type",
            "rsa:2048",
            "--label",
            "unlk",
            "--id",
            "01",
            "--usage-decrypt",
        ],
    );
    (
        conf.display().to_string(),
        format!("pkcs11:token=unl;object=unlk?module-path={module}"),
    )
}

#[test]
fn pkcs11_enroll_unlock_wrong_pin_and_cryptsetup_plugin() {
    let s = Scratch::new();
    let (conf, uri) = softhsm(&s);
    let kf = s.key("pass", b"pw");
    let img = clear_volume(&s, &kf);
    let pin = s.key("pin", b"4321\n");
    let bad = s.key("bad", b"0000");
    let wc = |args: &[&str], stdin: Option<&[u8]>| {
        let mut c = WC.cmd(args);
        c.env("SOFTHSM2_CONF", &conf);
        run_cmd(&mut c, stdin, WC)
    };
    let o = wc(
        &[
            "enroll",
            &img,
            "--pkcs11-token-uri",
            &uri,
            "--pin-file",
            &pin,
            "--key-file",
            &kf,
        ],
        None,
    );
    assert_eq!(o.code, 0, "{o}");
    let t = token_json(WC, &img, 0);
    assert_eq!(t["type"], "systemd-pkcs11");
    assert!(
        t["pkcs11-uri"].as_str().unwrap().contains(";type=private"),
        "{t}"
    );
    // 2048-bit key: the secret is encrypted to one 256-byte RSA block.
    let key = t["pkcs11-key"].as_str().unwrap();
    assert_eq!(key.len(), 344, "{key}");

    let o = wc(
        &[
            "open",
            "--test-passphrase",
            "--token-only",
            "--pin-file",
            &pin,
            &img,
        ],
        None,
    );
    assert_eq!(o.code, 0, "{o}");
    let o = wc(
        &["open", "--test-passphrase", "--token-only", &img],
        Some(b"4321\n"),
    );
    assert_eq!(o.code, 0, "{o}");
    let o = wc(
        &[
            "open",
            "--test-passphrase",
            "--token-only",
            "--pin-file",
            &bad,
            &img,
        ],
        None,
    );
    assert_eq!(o.code, 2, "{o}");
    assert!(o.stderr.contains("wrong PIN"), "{o}");

    // cryptsetup with systemd's own systemd-pkcs11 plugin unlocks
    // wrapcrypt's token (PIN from stdin): the scheme is systemd's.
    let mut c = Command::new("cryptsetup");
    c.args(["open", "--test-passphrase", "--token-only", "-v", &img])
        .env("SOFTHSM2_CONF", &conf);
    let o = run_cmd(&mut c, Some(b"4321\n"), CS);
    assert_eq!(o.code, 0, "{o}");
    assert!(o.stdout.contains("Key slot 1 unlocked"), "{o}");
}

#[test]
fn waes_volume_opens_with_the_hardware_alone() {
    let s = Scratch::new();
    let tpm = Swtpm::start(&s);
    let c = Custodian::new(&s);
    let kf = s.key("pass", b"pw");
    let img = s.image("waes.img", 40);
    format_waes(&c, &img, &kf);
    let tcti = tpm.tcti();
    c.ok(&["enroll", &img, "--tpm2-device", &tcti, "--key-file", &kf]);
    let name = mapper_name("waes");
    c.ok(&["open", "--token-only", "--tpm2-device", &tcti, &img, &name]);
    let _guard = Mapped(name.clone());
    let st = c.ok(&["status", &name]).stdout;
    assert!(st.contains("waes-xts-plain64"), "{st}");
    let data = random(2 << 20);
    assert!(write_read(&name, &data, &s) == data);
    c.ok(&["close", &name]);
    c.ok(&["open", "--token-only", "--tpm2-device", &tcti, &img, &name]);
    assert!(read_mapped(&name, data.len()) == data);
    c.ok(&["close", &name]);
    assert!(!Path::new(&format!("/dev/mapper/{name}")).exists());
}

/// An external token handler `wrapcrypt-token-TYPE` in `WRAPCRYPT_TOKEN_PATH`
/// serves a token type wrapcrypt does not know; `--disable-external-tokens`
/// turns it off, and a handler others could replace is refused.
#[test]
fn external_token_handler_unlocks_and_can_be_disabled() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let img = s.image("ext.img", 32);
    let kf = s.key("pass", b"ext passphrase");
    format(WC, &img, &kf, FAST);
    let dir = s.path("tokens");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The handler checks it was given the token JSON, then prints the passphrase.
    let handler = dir.join("wrapcrypt-token-wrapcrypt-test-ext");
    std::fs::write(
        &handler,
        "#!/bin/sh\nread -r line\ncase \"$line\" in *'\"type\":\"wrapcrypt-test-ext\"'*) ;; *) exit 1;; esac\nprintf '%s' 'ext passphrase'\n",
    )
    .unwrap();
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o755)).unwrap();
    let json = s.key(
        "tok.json",
        br#"{"type":"wrapcrypt-test-ext","keyslots":[],"note":"no secret in here"}"#,
    );
    WC.ok(&[
        "token",
        "import",
        "--token-id",
        "2",
        "--json-file",
        &json,
        "--key-slot",
        "0",
        &img,
    ]);
    let open = |extra: &[&str]| {
        let mut args = vec!["open", "--test-passphrase", "--token-only", "-v"];
        args.extend_from_slice(extra);
        args.push(&img);
        WC.cmd(&args)
            .env("WRAPCRYPT_TOKEN_PATH", &dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = open(&[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("Token 2 unlocked keyslot 0."));
    let o = open(&["--disable-external-tokens"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "No usable token is available."
    );
    // Group-writable: another user could swap it for one that keeps passphrases.
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o775)).unwrap();
    let o = open(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("writable by group or others"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // cryptsetup keeps the token it does not know.
    let dump = CS.ok(&["luksDump", &img]).stdout;
    assert!(dump.contains("wrapcrypt-test-ext"), "{dump}");
}
