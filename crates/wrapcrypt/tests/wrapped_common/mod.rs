//! Helpers for wrapped-key CLI tests: a private custodian daemon per test
//! (WRAPCRYPT_CUSTODIAN_SOCKET in a scratch dir, autostarted by the CLI from
//! `wrapcrypt-custodiand` beside the binary under test), and commands run
//! against it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

use crate::common::*;

static BUILD: Once = Once::new();

/// Makes sure `wrapcrypt-custodiand` sits beside the wrapcrypt binary
/// (cargo builds only this package's binaries for its tests): builds it
/// with the same profile once if it is missing.
pub fn ensure_daemon() -> PathBuf {
    let bin = wrapcrypt_bin();
    let daemon = bin.with_file_name("wrapcrypt-custodiand");
    BUILD.call_once(|| {
        if daemon.exists() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "-p", "wrapcrypt-custodian"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if bin.to_string_lossy().contains("/release/") {
            c.arg("--release");
        }
        let st = c.status().expect("run cargo build -p wrapcrypt-custodian");
        assert!(st.success(), "cargo build -p wrapcrypt-custodian failed");
    });
    assert!(
        daemon.exists(),
        "{} missing: run cargo build -p wrapcrypt-custodian",
        daemon.display()
    );
    daemon
}

/// A custodian daemon private to one test, stopped on drop.
pub struct Custodian {
    sock: PathBuf,
}

impl Custodian {
    /// A custodian whose socket lives in `s` (started on first use).
    pub fn new(s: &Scratch) -> Custodian {
        ensure_daemon();
        let c = Custodian {
            sock: s.path("c.sock"),
        };
        let o = c.wc(&["custodian", "status"], None);
        assert_eq!(o.code, 0, "custodian status: {o}");
        c
    }

    /// The wrapcrypt command with this custodian.
    pub fn cmd<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = WC.cmd(args);
        c.env("WRAPCRYPT_CUSTODIAN_SOCKET", &self.sock);
        c
    }

    /// Runs wrapcrypt with this custodian.
    pub fn wc<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], stdin: Option<&[u8]>) -> Out {
        run_cmd(&mut self.cmd(args), stdin, WC)
    }

    /// Runs wrapcrypt and requires exit 0.
    pub fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Out {
        let o = self.wc(args, None);
        assert_eq!(o.code, 0, "wrapcrypt {}: {o}", show(args));
        o
    }

    /// `validate --json` with key file `kf`: (exit code, parsed report).
    pub fn validate(&self, img: &str, kf: &str) -> (i32, serde_json::Value) {
        let o = self.wc(&["validate", "--json", img, "--key-file", kf], None);
        let v: serde_json::Value =
            serde_json::from_str(o.stdout.trim()).unwrap_or(serde_json::Value::Null);
        // luksDump --json reports the same stored verification pattern.
        let stored = &v["stored-verification-pattern"];
        if !stored.is_null() {
            let d = self.wc(&["luksDump", "--json", img], None);
            let d: serde_json::Value = serde_json::from_str(d.stdout.trim()).unwrap();
            assert_eq!(&d["wrapped-key"]["verification-pattern"], stored, "{d}");
            assert_eq!(d["wrapped-key"]["provider"], v["provider"], "{d}");
        }
        (o.code, v)
    }
}

impl Drop for Custodian {
    fn drop(&mut self) {
        let lock = self.sock.with_extension("state").join("custodiand.lock");
        if let Some(pid) = std::fs::read_to_string(lock)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            // SAFETY: stopping the daemon this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

fn show<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A waes volume of `mib` MiB with passphrase file `kf` (fast PBKDF2).
pub fn format_waes(c: &Custodian, img: &str, kf: &str) {
    let mut args = vec!["luksFormat", "-q", "--cipher", "waes-xts-plain64", img, kf];
    args.extend(FAST);
    c.ok(&args);
}

/// sha256 (hex) of a file's bytes from `offset` to the end.
pub fn sha256_from(path: &str, offset: u64) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("tail -c +{} '{path}' | sha256sum", offset + 1))
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The VP of a clear AES-256-XTS key (hex), computed by Python
/// `cryptography` (OpenSSL), independent of wrapcrypt.
pub fn python_vp(key_hex: &str) -> String {
    let o = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\
             e = Cipher(algorithms.AES(bytes.fromhex('{key_hex}')), modes.XTS(bytes(16))).encryptor()\n\
             print(e.update(bytes(32)).hex())"
        ))
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// SoftHSM2's module, loaded by `p11-kit server` (never by the CLI here).
pub const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// p11-kit's client module: the token lives in the `p11-kit server` process.
pub const P11_KIT_CLIENT: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";
/// The user PIN of tokens made by [`P11KitServer::start`].
pub const P11_PIN: &str = "4711-user";

/// A SoftHSM2 configuration in `dir` (its own token directory) with one
/// initialised token `label` (SO PIN `so_pin`, user PIN `pin`); returns the
/// configuration file for SOFTHSM2_CONF.
pub fn softhsm_token(dir: &std::path::Path, label: &str, so_pin: &str, pin: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    softhsm_run(
        &conf,
        "softhsm2-util",
        &[
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            so_pin,
            "--pin",
            pin,
        ],
    );
    conf
}

/// Runs a token tool (softhsm2-util, pkcs11-tool) against `conf`; it must succeed.
pub fn softhsm_run(conf: &std::path::Path, prog: &str, args: &[&str]) {
    let o = Command::new(prog)
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e} (scripts/install-deps.sh installs it)"));
    assert!(
        o.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A fresh SoftHSM2 token exported by a real `p11-kit server` on a private
/// socket; the CLI reaches it through p11-kit's client module, so the token
/// (and every key in it) lives in another process. Killed on drop.
pub struct P11KitServer {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub pin_file: PathBuf,
    pub address: String,
    pub label: String,
    child: std::process::Child,
}

impl P11KitServer {
    pub fn start(label: &str) -> P11KitServer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let conf = softhsm_token(d, label, "so-0815", P11_PIN);
        let pin_file = d.join("pin");
        std::fs::write(&pin_file, format!("{P11_PIN}\n")).unwrap();
        let sock = d.join("p11.sock");
        let mut cmd = Command::new("p11-kit");
        cmd.env("SOFTHSM2_CONF", &conf)
            .args(["server", "-f", "-n"])
            .arg(&sock)
            .args(["--provider", SOFTHSM])
            .arg(format!("pkcs11:token={label}"))
            .stdout(std::process::Stdio::null());
        // SAFETY: prctl in the child before exec; no allocation.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("p11-kit is installed");
        let t = std::time::Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(20),
                "p11-kit server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let address = format!("unix:path={}", sock.display());
        P11KitServer {
            dir,
            conf,
            pin_file,
            address,
            label: label.to_string(),
            child,
        }
    }

    /// The `p11-kit server` process (the key holder's process tree root).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CLI's provider URI for wrapping key `object` through the client.
    pub fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={};object={object}?module-path={P11_KIT_CLIENT}",
            self.label
        )
    }

    /// The wrapcrypt CLI with the environment that reaches the server.
    pub fn wc<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(wrapcrypt_bin());
        c.args(args)
            .env("LC_ALL", "C")
            .env("SOFTHSM2_CONF", &self.conf)
            .env("P11_KIT_SERVER_ADDRESS", &self.address);
        c
    }

    /// Labels/ids of every object in the token, read straight from
    /// SoftHSM2 (not through wrapcrypt), one line per object.
    pub fn objects(&self) -> Vec<String> {
        let o = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--module", SOFTHSM, "--token-label", &self.label])
            .args(["--login", "--pin", P11_PIN, "--list-objects"])
            .output()
            .expect("pkcs11-tool (opensc) is installed");
        assert!(o.status.success(), "pkcs11-tool: {o:?}");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.ends_with("Object") || l.contains("Object;"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for P11KitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
