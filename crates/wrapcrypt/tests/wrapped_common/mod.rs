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
        let v = serde_json::from_str(o.stdout.trim()).unwrap_or(serde_json::Value::Null);
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
