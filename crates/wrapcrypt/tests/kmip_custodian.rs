//! The custodian's master keys in a KMIP key manager, end to end: a real
//! PyKMIP server (scripts/kmip-server.sh), real `wrapcrypt-custodiand`
//! processes started on demand by the CLI with a private socket, state dir
//! and `--kmip-config` (WRAPCRYPT_CUSTODIAN_KMIP_CONFIG), swtpm for the
//! TPM case, and waes volumes opened through FUSE + loop.

mod common;
#[path = "../../wrapcrypt-kmip/tests/common/mod.rs"]
mod kmip_common;
mod wrapped_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kmip_common::KmipServer;
use wrapcrypt_kmip::{KmipClient, LocateQuery, RevocationReasonCode};
use wrapped_common::*;

/// One simulated host: a custodian with its own socket, state and KMIP config.
struct Host {
    sock: PathBuf,
    conf: PathBuf,
    tcti: Option<String>,
    group: String,
}

impl Host {
    fn new(s: &Scratch, kms: &KmipServer, group: &str, tcti: Option<String>) -> Host {
        ensure_daemon();
        let h = Host {
            sock: s.path("c.sock"),
            conf: s.path("kmip.conf"),
            tcti,
            group: group.into(),
        };
        h.write_conf(kms);
        h
    }

    /// The configuration file: no secret in it, the key file stays apart.
    fn write_conf(&self, kms: &KmipServer) {
        std::fs::write(
            &self.conf,
            format!(
                "# key manager of host group {g}\nserver = 127.0.0.1:{port}\nca = {ca}\ncert = {cert}\nkey = {key}\ngroup = {g}\ntimeout = 10\n",
                g = self.group,
                port = kms.port,
                ca = kms.path("ca.pem").display(),
                cert = kms.path("client.pem").display(),
                key = kms.path("client.key").display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&self.conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = WC.cmd(args);
        c.env("WRAPCRYPT_CUSTODIAN_SOCKET", &self.sock)
            .env("WRAPCRYPT_CUSTODIAN_KMIP_CONFIG", &self.conf);
        if let Some(t) = &self.tcti {
            c.env("WRAPCRYPT_CUSTODIAN_TCTI", t);
        }
        c
    }

    fn wc(&self, args: &[&str]) -> Out {
        run_cmd(&mut self.cmd(args), None, WC)
    }

    fn ok(&self, args: &[&str]) -> Out {
        let o = self.wc(args);
        assert_eq!(o.code, 0, "wrapcrypt {}: {o}", args.join(" "));
        o
    }

    fn state(&self) -> PathBuf {
        self.sock.with_extension("state")
    }

    fn status(&self) -> serde_json::Value {
        let o = self.ok(&["custodian", "status", "--json"]);
        serde_json::from_str(o.stdout.trim()).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state().join("custodiand.log")).unwrap_or_default()
    }

    /// SIGTERM to the daemon; the next command starts it again.
    fn stop(&self) {
        let Some(pid) = std::fs::read_to_string(self.state().join("custodiand.lock"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            return;
        };
        // SAFETY: stopping the daemon this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t = Instant::now();
        while self.sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "custodian did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens the volume, optionally writes `data` at its start, reads
    /// `len` bytes back, closes it.
    fn through_open(
        &self,
        img: &str,
        kf: &str,
        name: &str,
        data: Option<&[u8]>,
        len: usize,
    ) -> Vec<u8> {
        self.ok(&["open", img, name, "--key-file", kf]);
        let dev = format!("/dev/mapper/{name}");
        let res = std::panic::catch_unwind(|| {
            use std::io::{Read, Write};
            if let Some(d) = data {
                let mut f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
                f.write_all(d).unwrap();
                f.sync_all().unwrap();
            }
            let mut buf = vec![0u8; len];
            std::fs::File::open(&dev)
                .unwrap()
                .read_exact(&mut buf)
                .unwrap();
            buf
        });
        self.ok(&["close", name]);
        res.unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kmip_reg<'a>(st: &'a serde_json::Value, reg: &str) -> &'a serde_json::Value {
    &st["kmip"]["registers"][reg]
}

fn object_id(st: &serde_json::Value, reg: &str) -> String {
    kmip_reg(st, reg)["object-id"]
        .as_str()
        .unwrap_or_else(|| panic!("{reg} is not KMIP-backed: {st}"))
        .to_string()
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8 ^ 0x5c).collect()
}

fn sha(d: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(d))
}

/// No file under `dir` holds `key`, neither as bytes nor as hex.
fn assert_key_absent(dir: &Path, key: &[u8], what: &str) {
    let hexes = [hex::encode(key), hex::encode_upper(key)];
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let Ok(b) = std::fs::read(&p) else { continue };
            files += 1;
            assert!(
                !b.windows(key.len()).any(|w| w == key),
                "{what}: {} holds the master key in the clear",
                p.display()
            );
            for h in &hexes {
                assert!(
                    !b.windows(h.len()).any(|w| w == h.as_bytes()),
                    "{what}: {} holds the master key in hex",
                    p.display()
                );
            }
        }
    }
    assert!(files >= 2, "{what}: state dir {} is empty", dir.display());
}

fn one_line(o: &Out) -> String {
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {o}");
    lines[0].to_string()
}

fn group_ids(kms: &KmipServer, group: &str) -> Vec<String> {
    KmipClient::connect(&kms.config())
        .unwrap()
        .locate(&LocateQuery {
            group: Some(group.into()),
            ..Default::default()
        })
        .unwrap()
}

fn kmip_key(kms: &KmipServer, id: &str) -> wrapcrypt_secret::SecretBytes {
    KmipClient::connect(&kms.config())
        .unwrap()
        .get_symmetric_key(id, 32)
        .unwrap()
}

/// Without a TPM: the key lives only in the custodian's memory, comes
/// back with Get after a restart, and without the key manager the volume
/// does not open (one line); then a full master-key change through KMIP,
/// revoking the old object, and a revoked CURRENT.
#[test]
fn kmip_master_keys_without_tpm() {
    let t0 = Instant::now();
    let mut kms = KmipServer::start("kcust-notpm");
    let s = Scratch::new();
    let h = Host::new(&s, &kms, "web", None);

    // First use starts the daemon, which creates CURRENT in the key manager.
    let st = h.status();
    let cur = object_id(&st, "CURRENT");
    assert_eq!(kmip_reg(&st, "CURRENT")["source"], "kmip", "{st}");
    assert_eq!(kmip_reg(&st, "CURRENT")["kmip-state"], "Active", "{st}");
    assert_eq!(kmip_reg(&st, "CURRENT")["loaded"], true, "{st}");
    assert_eq!(st["kmip"]["reachable"], true, "{st}");
    assert!(
        st["seal"].as_str().unwrap().contains("locked memory only"),
        "{st}"
    );
    assert!(
        group_ids(&kms, "web").contains(&cur),
        "Locate by group finds kmip:{cur}"
    );
    let k_cur = kmip_key(&kms, &cur);
    // The daemon got a path, not a secret: argv and environment hold no key.
    let pid = std::fs::read_to_string(h.state().join("custodiand.lock")).unwrap();
    let argv = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap();
    let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
    assert!(
        argv.contains(&format!("--kmip-config {}", h.conf.display())),
        "{argv}"
    );
    for f in ["cmdline", "environ"] {
        let b = std::fs::read(format!("/proc/{}/{f}", pid.trim())).unwrap();
        let hx = hex::encode(k_cur.expose_secret());
        assert!(!b.windows(32).any(|w| w == k_cur.expose_secret()), "{f}");
        assert!(!b.windows(hx.len()).any(|w| w == hx.as_bytes()), "{f}");
    }

    let ka = s.key("ka", b"passphrase A");
    let img = s.image("v.img", 20);
    format_waes_kmip(&h, &img, &ka);
    let d = data(256 << 10);
    let back = h.through_open(&img, &ka, "kcust-a", Some(&d), d.len());
    assert_eq!(sha(&back), sha(&d));
    assert_key_absent(&h.state(), k_cur.expose_secret(), "after format");

    // Restart: the key is fetched again with Get.
    h.stop();
    assert_eq!(
        sha(&h.through_open(&img, &ka, "kcust-a", None, d.len())),
        sha(&d)
    );
    assert!(
        h.log().contains(&format!(
            "fetched the CURRENT master key kmip:{cur} with Get"
        )),
        "{}",
        h.log()
    );

    // Restart with the key manager down: no copy, so no open; one line.
    h.stop();
    kms.stop();
    let o = h.wc(&["open", &img, "kcust-a", "--key-file", &ka]);
    assert_eq!(o.code, 1, "{o}");
    let line = one_line(&o);
    assert!(
        line.contains(&format!("master key kmip:{cur} (CURRENT) is not loaded"))
            && line.contains("unreachable"),
        "{line}"
    );
    assert!(!Path::new("/dev/mapper/kcust-a").exists());
    let o = h.ok(&["custodian", "status"]);
    assert!(o.stdout.contains("unreachable"), "{o}");
    assert!(o.stdout.contains("NOT loaded"), "{o}");
    let st = h.status();
    assert_eq!(st["kmip"]["reachable"], false, "{st}");
    assert_eq!(kmip_reg(&st, "CURRENT")["loaded"], false, "{st}");

    // The key manager is back (on another port): restart, it opens again.
    kms.restart();
    h.write_conf(&kms);
    h.stop();
    assert_eq!(
        sha(&h.through_open(&img, &ka, "kcust-a", None, d.len())),
        sha(&d)
    );

    // Master-key change through the key manager.
    let o = h.ok(&["custodian", "load-new-master-key"]);
    assert!(o.stdout.contains("kmip:"), "{o}");
    let st = h.status();
    let new = object_id(&st, "NEW");
    assert_ne!(new, cur);
    assert_eq!(kmip_reg(&st, "NEW")["kmip-state"], "Active", "{st}");
    let ids = group_ids(&kms, "web");
    assert!(ids.contains(&cur) && ids.contains(&new), "{ids:?}");
    let k_new = kmip_key(&kms, &new);
    h.ok(&["reencipher", "--staged", &img, "--key-file", &ka]);
    h.ok(&["custodian", "set-master-key"]);
    h.ok(&["reencipher", "--complete", &img, "--key-file", &ka]);
    let st = h.status();
    assert_eq!(object_id(&st, "CURRENT"), new, "{st}");
    assert_eq!(object_id(&st, "OLD"), cur, "{st}");
    let (code, v) = validate_kmip(&h, &img, &ka);
    assert_eq!((code, v["register"].as_str()), (0, Some("CURRENT")), "{v}");

    // The old object can now be revoked; the volume still opens.
    KmipClient::connect(&kms.config())
        .unwrap()
        .revoke(
            &cur,
            RevocationReasonCode::CessationOfOperation,
            Some("rotated"),
        )
        .unwrap();
    let st = h.status();
    assert_eq!(kmip_reg(&st, "OLD")["kmip-state"], "Deactivated", "{st}");
    // Destroyed (PyKMIP deletes the row): unknown to the key manager.
    KmipClient::connect(&kms.config())
        .unwrap()
        .destroy(&cur)
        .unwrap();
    let o = h.ok(&["custodian", "status"]);
    assert!(
        o.stdout.contains(&format!(
            "master key kmip:{cur} (OLD) is unknown to the key manager"
        )) && o.stdout.contains("Item Not Found"),
        "{o}"
    );
    h.stop();
    assert_eq!(
        sha(&h.through_open(&img, &ka, "kcust-a", None, d.len())),
        sha(&d)
    );
    // After a restart the destroyed OLD key cannot come back: one line.
    let o = h.ok(&["custodian", "status"]);
    assert!(
        o.stdout
            .contains(&format!("master key kmip:{cur} (OLD) is not loaded"))
            && o.stdout.contains("Item Not Found"),
        "{o}"
    );
    assert_key_absent(&h.state(), k_cur.expose_secret(), "after the change");
    assert_key_absent(&h.state(), k_new.expose_secret(), "after the change");

    // A revoked CURRENT: one clear line, no new keys under it, old ones open.
    KmipClient::connect(&kms.config())
        .unwrap()
        .revoke(
            &new,
            RevocationReasonCode::CessationOfOperation,
            Some("test"),
        )
        .unwrap();
    let o = h.ok(&["custodian", "status"]);
    let want = format!("master key kmip:{new} (CURRENT) is Deactivated in the key manager");
    assert!(o.stdout.contains(&want), "{o}");
    let img2 = s.image("w.img", 20);
    let o = h.wc(&[
        "luksFormat",
        "-q",
        "--cipher",
        "waes-xts-plain64",
        &img2,
        &ka,
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
    ]);
    assert_eq!(o.code, 1, "{o}");
    assert!(one_line(&o).contains(&want), "{o}");
    assert!(bytes(&img2).iter().all(|b| *b == 0), "nothing written");
    assert_eq!(
        sha(&h.through_open(&img, &ka, "kcust-a", None, d.len())),
        sha(&d)
    );
    eprintln!("kmip_master_keys_without_tpm: {:.1?}", t0.elapsed());
}

fn format_waes_kmip(h: &Host, img: &str, kf: &str) {
    let mut args = vec!["luksFormat", "-q", "--cipher", "waes-xts-plain64", img, kf];
    args.extend(FAST);
    h.ok(&args);
}

fn validate_kmip(h: &Host, img: &str, kf: &str) -> (i32, serde_json::Value) {
    let o = h.wc(&["validate", "--json", img, "--key-file", kf]);
    (
        o.code,
        serde_json::from_str(o.stdout.trim()).unwrap_or(serde_json::Value::Null),
    )
}

/// swtpm, killed on drop.
struct Swtpm(Child, u16);

impl Swtpm {
    fn start(dir: &Path) -> Swtpm {
        std::fs::create_dir_all(dir).unwrap();
        let port = (0..200)
            .find_map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
                let p = l.local_addr().ok()?.port();
                let l2 = std::net::TcpListener::bind(("127.0.0.1", p.checked_add(1)?)).ok()?;
                drop((l, l2));
                Some(p)
            })
            .expect("two free ports");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", dir.display()))
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
        Swtpm(child, port)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With a TPM: a sealed copy serves after a restart without the key
/// manager, and status says it is unreachable; a coordinator's key is
/// staged by id into NEW.
#[test]
fn kmip_master_keys_with_tpm_and_staging() {
    let t0 = Instant::now();
    let kms = KmipServer::start("kcust-tpm");
    let s = Scratch::new();
    let tpm = Swtpm::start(&s.path("tpm"));
    let h = Host::new(&s, &kms, "db", Some(format!("swtpm:port={}", tpm.1)));
    let st = h.status();
    let cur = object_id(&st, "CURRENT");
    assert!(st["seal"].as_str().unwrap().starts_with("tpm2 ("), "{st}");
    assert!(
        st["seal"].as_str().unwrap().contains("sealed by the TPM"),
        "{st}"
    );
    let k_cur = kmip_key(&kms, &cur);

    // A coordinator creates a key for the group once; the host stages it.
    let mut kc = KmipClient::connect(&kms.config()).unwrap();
    let staged = kc
        .create(&wrapcrypt_kmip::KeySpec::aes256_kek(
            "wrapcrypt-mk-db-fleet",
            &["db"],
        ))
        .unwrap();
    let o = h.ok(&["custodian", "stage-kmip-key", &staged]);
    assert!(o.stdout.contains(&format!("kmip:{staged}")), "{o}");
    let st = h.status();
    assert_eq!(object_id(&st, "NEW"), staged, "{st}");
    assert_eq!(kmip_reg(&st, "NEW")["kmip-state"], "Pre-Active", "{st}");
    let o = h.wc(&["custodian", "stage-kmip-key", "999999"]);
    assert_eq!(o.code, 1, "{o}");
    assert!(one_line(&o).contains("Item Not Found"), "{o}");

    let ka = s.key("ka", b"passphrase B");
    let img = s.image("v.img", 20);
    format_waes_kmip(&h, &img, &ka);
    let d = data(128 << 10);
    assert_eq!(
        sha(&h.through_open(&img, &ka, "kcust-t", Some(&d), d.len())),
        sha(&d)
    );
    h.ok(&["reencipher", "--staged", &img, "--key-file", &ka]);
    assert_key_absent(&h.state(), k_cur.expose_secret(), "TPM-sealed state");

    // Restart with the key manager down: the TPM copy serves.
    h.stop();
    kms.stop();
    assert_eq!(
        sha(&h.through_open(&img, &ka, "kcust-t", None, d.len())),
        sha(&d)
    );
    let o = h.ok(&["custodian", "status"]);
    assert!(o.stdout.contains("unreachable"), "{o}");
    assert!(!o.stdout.contains("NOT loaded"), "{o}");
    let st = h.status();
    assert_eq!(st["kmip"]["reachable"], false, "{st}");
    assert_eq!(object_id(&st, "CURRENT"), cur);
    assert_eq!(object_id(&st, "NEW"), staged);
    assert_eq!(kmip_reg(&st, "NEW")["loaded"], true, "{st}");
    // The staged change completes without the key manager.
    h.ok(&["custodian", "set-master-key"]);
    h.ok(&["reencipher", "--complete", &img, "--key-file", &ka]);
    assert_eq!(
        sha(&h.through_open(&img, &ka, "kcust-t", None, d.len())),
        sha(&d)
    );
    assert_eq!(object_id(&h.status(), "CURRENT"), staged);
    eprintln!(
        "kmip_master_keys_with_tpm_and_staging: {:.1?}",
        t0.elapsed()
    );
}
