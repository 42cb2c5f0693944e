//! Shared by the format test files: Python and cryptsetup as independent
//! oracles, and deterministic test bytes.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use wrapcrypt_format::hash::HashAlg;

/// Runs `python3 -c script` with `input` on stdin and returns stdout.
pub fn python(script: &str, input: &str) -> String {
    python_args(script, &[], input)
}

/// Runs `python3 -c script ARGS…` with `input` on stdin and returns stdout.
pub fn python_args(script: &str, args: &[&str], input: &str) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is installed by scripts/install-deps.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Deterministic test bytes.
pub fn bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut ctr = 0u32;
    while out.len() < len {
        let mut b = seed.to_be_bytes().to_vec();
        b.extend_from_slice(&ctr.to_be_bytes());
        out.extend(HashAlg::Sha256.digest(&b));
        ctr += 1;
    }
    out.truncate(len);
    out
}

/// The passphrase of the images the cryptsetup tests make.
pub const PASS: &str = "testpass";
/// Fast keyslots for images made at test time.
pub const FAST: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

/// Runs cryptsetup with `args`, asserts success, returns stdout.
pub fn cryptsetup(args: &[&str]) -> Vec<u8> {
    let out = Command::new("cryptsetup")
        .args(args)
        .output()
        .expect("cryptsetup runs");
    assert!(
        out.status.success(),
        "cryptsetup {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
