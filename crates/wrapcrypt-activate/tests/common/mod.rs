//! Shared test plumbing: test-only ciphers, a server child process (the
//! test binary re-executed, as the CLI re-executes itself), and guards
//! that tear volumes down even when a test fails.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use wrapcrypt_activate::{ActivateError, ActiveInfo, ReadyPipe, ServeConfig};
use wrapcrypt_sector::{SectorCipher, SectorError};

/// A keyed XOR by IV sector: a bijection whose output depends on the IV, so
/// a sector written to or read from the wrong place decrypts wrongly.
pub struct XorCipher {
    pub key: u64,
    pub sector: usize,
    /// IV sectors in this range fail, as a vanished key provider would.
    pub poison: Option<(u64, u64)>,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl XorCipher {
    pub fn apply(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        if data.len() % self.sector != 0 {
            return Err(SectorError::Misaligned {
                len: data.len(),
                sector_size: self.sector,
            });
        }
        let step = (self.sector / 512) as u64;
        for (i, sec) in data.chunks_mut(self.sector).enumerate() {
            let iv = iv_sector + i as u64 * step;
            if let Some((a, b)) = self.poison {
                if (a..b).contains(&iv) {
                    return Err(SectorError::Provider("poisoned sector".into()));
                }
            }
            let seed = mix(self.key ^ mix(iv));
            for (j, w) in sec.chunks_mut(8).enumerate() {
                let k = mix(seed.wrapping_add(j as u64)).to_ne_bytes();
                for (x, y) in w.iter_mut().zip(k) {
                    *x ^= y;
                }
            }
        }
        Ok(())
    }
}

impl SectorCipher for XorCipher {
    fn sector_size(&self) -> usize {
        self.sector
    }
    fn encrypt(&self, iv: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.apply(iv, data)
    }
    fn decrypt(&self, iv: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.apply(iv, data)
    }
}

/// The identity cipher (dm-crypt's `cipher_null`).
pub struct NullCipher(pub usize);

impl SectorCipher for NullCipher {
    fn sector_size(&self) -> usize {
        self.0
    }
    fn encrypt(&self, _: u64, _: &mut [u8]) -> Result<(), SectorError> {
        Ok(())
    }
    fn decrypt(&self, _: u64, _: &mut [u8]) -> Result<(), SectorError> {
        Ok(())
    }
}

/// What the test client sends the server child on stdin.
#[derive(Serialize, Deserialize)]
pub struct Payload {
    pub cfg: ServeConfig,
    /// "xor" or "null"
    pub cipher: String,
    pub key: u64,
    pub sector: usize,
    pub poison: Option<(u64, u64)>,
    /// For cipher "engine": the dm-crypt spec and the key in hex.
    pub spec: Option<String>,
    pub key_hex: Option<String>,
}

impl Payload {
    pub fn build(&self) -> Arc<dyn SectorCipher> {
        match self.cipher.as_str() {
            "null" => Arc::new(NullCipher(self.sector)),
            "engine" => {
                let spec =
                    wrapcrypt_sector::CipherSpec::parse(self.spec.as_deref().unwrap()).unwrap();
                let hex = self.key_hex.as_deref().unwrap();
                let key: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                let key = wrapcrypt_secret::SecretBytes::copy_from(&key);
                Arc::from(wrapcrypt_sector::new_soft_cipher(&spec, &key, self.sector).unwrap())
            }
            _ => Arc::new(XorCipher {
                key: self.key,
                sector: self.sector,
                poison: self.poison,
            }),
        }
    }
}

pub const SERVER_ENV: &str = "WRAPCRYPT_ACTIVATE_TEST_SERVER";

/// Body of each test binary's `server_child` test: when re-executed as a
/// server, serve and exit; otherwise do nothing.
pub fn server_child_main() {
    if std::env::var_os(SERVER_ENV).is_none() {
        return;
    }
    let ready = ReadyPipe::stdout().expect("stdout");
    let mut buf = vec![0u8; 64 * 1024];
    let n = ReadyPipe::read_secret(&mut buf).expect("stdin");
    let p: Payload = serde_json::from_slice(&buf[..n]).expect("payload");
    let cipher = p.build();
    let mut ready = Some(ready);
    let r = wrapcrypt_activate::run_server(p.cfg, cipher, |res| {
        let _ = ready.take().unwrap().send(res);
    });
    std::process::exit(if r.is_ok() { 0 } else { 1 });
}

/// Starts a server child for `p` through the library's `spawn`.
pub fn open(p: &Payload) -> Result<ActiveInfo, ActivateError> {
    open_with(p, &[])
}

/// [`open`] with extra environment for the server (e.g. the FUSE transport).
pub fn open_with(p: &Payload, env: &[(&str, &str)]) -> Result<ActiveInfo, ActivateError> {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "server_child", "--test-threads=1", "-q"])
        .env(SERVER_ENV, "1")
        .envs(env.iter().copied());
    wrapcrypt_activate::spawn(
        cmd,
        &serde_json::to_vec(p).unwrap(),
        Duration::from_secs(30),
    )
}

/// A unique mapping name per test and process.
pub fn unique(tag: &str) -> String {
    format!("wct-{}-{tag}", std::process::id())
}

/// Tears down (unmount, close, or kill + status-cleanup) on drop.
pub struct Guard {
    pub name: String,
    pub mounts: Vec<PathBuf>,
}

impl Guard {
    pub fn new(name: &str) -> Self {
        Guard {
            name: name.to_owned(),
            mounts: Vec::new(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for m in self.mounts.drain(..).rev() {
            let _ = sh("umount", &[m.to_str().unwrap()]);
        }
        if wrapcrypt_activate::close(&self.name).is_err() {
            if let Ok(st) = wrapcrypt_activate::status(&self.name) {
                unsafe { libc::kill(st.info.pid as i32, libc::SIGKILL) };
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = wrapcrypt_activate::status(&self.name);
        }
    }
}

/// Runs a command, returning (exit code, stdout+stderr).
pub fn sh(cmd: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), s)
}

/// Runs a command that must succeed.
pub fn must(cmd: &str, args: &[&str]) -> String {
    let (rc, out) = sh(cmd, args);
    assert_eq!(rc, 0, "{cmd} {args:?} failed: {out}");
    out
}

/// A sparse image file of `size` bytes.
pub fn image(dir: &Path, size: u64) -> PathBuf {
    let p = dir.join("image.img");
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

pub fn payload(name: &str, backing: &Path, cipher: &str, sector: usize) -> Payload {
    let mut cfg = ServeConfig::new(name, backing);
    cfg.cipher_desc = format!("test-{cipher}");
    Payload {
        cfg,
        cipher: cipher.into(),
        key: 0x5eed_c0de_1234_5678,
        sector,
        poison: None,
        spec: None,
        key_hex: None,
    }
}
