//! Shared helpers: the binaries under test and the generator run.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The generator binary cargo built for this test run.
pub fn generator() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wrapcrypt-generator"))
}

/// A release binary (`wrapcrypt`, `wrapcrypt-custodiand`): beside
/// `$WRAPCRYPT_BIN`, else in `$CARGO_TARGET_DIR/release`, else in the
/// workspace's `target/release`.
pub fn release_bin(name: &str) -> PathBuf {
    let mut dirs = Vec::new();
    if let Some(p) = std::env::var_os("WRAPCRYPT_BIN") {
        dirs.push(PathBuf::from(p).parent().unwrap().to_path_buf());
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(t).join("release"));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release"));
    for d in &dirs {
        let p = d.join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{name} not found in {dirs:?}: run `cargo build --release -p wrapcrypt -p wrapcrypt-custodian` or set WRAPCRYPT_BIN"
    );
}

/// The golden files' folder.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The packaging/systemd folder.
pub fn packaging_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/systemd")
}

/// Runs the generator on `crypttab` into `out/{normal,early,late}` with a
/// clean environment, as systemd runs generators; `bin` sets WRAPCRYPT_BIN.
pub fn run_generator(crypttab: &Path, out: &Path, bin: Option<&Path>) -> Output {
    let dirs: Vec<PathBuf> = ["normal", "early", "late"]
        .iter()
        .map(|d| out.join(d))
        .collect();
    for d in &dirs {
        fs::create_dir_all(d).unwrap();
    }
    let mut c = Command::new(generator());
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("SYSTEMD_CRYPTTAB", crypttab)
        .args(&dirs);
    if let Some(b) = bin {
        c.env("WRAPCRYPT_BIN", b);
    }
    c.output().expect("run wrapcrypt-generator")
}

/// Every file and symlink under `root`, sorted, as `(relative path, entry)`.
pub fn walk(root: &Path) -> Vec<(String, PathBuf)> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
        let mut es: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        es.sort();
        for p in es {
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                go(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, p));
            }
        }
    }
    let mut out = Vec::new();
    go(root, root, &mut out);
    out
}
