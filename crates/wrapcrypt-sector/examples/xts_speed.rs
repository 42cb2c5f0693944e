//! Prints one JSON line with aes-xts-plain64 (512-bit key, 4096-byte sectors)
//! encrypt/decrypt speed on one core, in MB/s: 10^6 bytes per second of this
//! thread's CPU time, which is what `openssl speed` reports by default (it
//! divides by CPU user time), plus the wall-clock figures.
//!
//! `--openssl` also runs `openssl speed -evp aes-256-xts -bytes 4096` in the
//! same run and adds its MB/s and our ratio to it.
//! `--seconds N` sets the time per direction (default 1); `--rounds N` takes
//! the best of N alternating runs (default 3), which tames a loaded machine.
//! `--portable` measures the RustCrypto fallback instead of AES-NI.

use std::process::Command;
use std::time::{Duration, Instant};

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{Backend, CipherSpec, SectorCipher, SoftCipher};

const SECTOR: usize = 4096;
const BUFFER: usize = 64 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let backend = if args.iter().any(|a| a == "--portable") {
        Backend::Portable
    } else {
        Backend::Auto
    };
    let budget = Duration::from_secs_f64(seconds);

    let spec = CipherSpec::parse("aes-xts-plain64").expect("spec");
    let key = SecretBytes::random(64).expect("random key");
    let c = SoftCipher::with_backend(&spec, &key, SECTOR, backend).expect("cipher");
    let mut buf = vec![0u8; BUFFER];
    wrapcrypt_secret::fill_random(&mut buf).expect("random data");

    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let with_openssl = args.iter().any(|a| a == "--openssl");
    // Best of N, alternating with openssl, so both see the same machine load.
    let (mut enc, mut dec, mut enc_wall, mut dec_wall) = (0f64, 0f64, 0f64, 0f64);
    let mut ossl: Option<f64> = None;
    for _ in 0..rounds.max(1) {
        let (e, ew) = measure(budget, &mut buf, |s, b| c.encrypt(s, b).expect("encrypt"));
        let (d, dw) = measure(budget, &mut buf, |s, b| c.decrypt(s, b).expect("decrypt"));
        enc = enc.max(e);
        dec = dec.max(d);
        enc_wall = enc_wall.max(ew);
        dec_wall = dec_wall.max(dw);
        if with_openssl {
            if let Some(o) = openssl_speed(seconds.ceil().max(1.0) as u32) {
                ossl = Some(ossl.unwrap_or(0.0).max(o));
            }
        }
    }

    let mut line = format!(
        "{{\"cipher\":\"aes-xts-plain64\",\"key_bits\":512,\"sector_size\":{SECTOR},\"buffer\":{BUFFER},\"accelerated\":{},\"best_of\":{rounds},\"unit\":\"MB/s (1e6 bytes per CPU second, as openssl speed)\",\"encrypt_mb_s\":{enc:.1},\"decrypt_mb_s\":{dec:.1},\"encrypt_wall_mb_s\":{enc_wall:.1},\"decrypt_wall_mb_s\":{dec_wall:.1}",
        c.accelerated()
    );
    if with_openssl {
        match ossl {
            Some(o) => {
                line += &format!(
                    ",\"openssl_mb_s\":{o:.1},\"encrypt_ratio\":{:.3},\"decrypt_ratio\":{:.3}",
                    enc / o,
                    dec / o
                )
            }
            None => line += ",\"openssl_mb_s\":null",
        }
    }
    println!("{line}}}");
}

/// CPU time of this thread: `openssl speed` divides by CPU time too, so both
/// numbers mean the same on a loaded machine.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Returns (MB/s per CPU second, MB/s per wall-clock second).
fn measure(budget: Duration, buf: &mut [u8], mut f: impl FnMut(u64, &mut [u8])) -> (f64, f64) {
    f(0, buf);
    let wall = Instant::now();
    let cpu = thread_cpu();
    let mut bytes = 0usize;
    let mut sector = 0u64;
    while thread_cpu() - cpu < budget {
        for _ in 0..16 {
            f(sector, buf);
            sector += (buf.len() / 512) as u64;
            bytes += buf.len();
        }
    }
    let b = bytes as f64 / 1e6;
    (
        b / (thread_cpu() - cpu).as_secs_f64(),
        b / wall.elapsed().as_secs_f64(),
    )
}

/// `openssl speed` reports 1000s of bytes per second; returns MB/s.
fn openssl_speed(seconds: u32) -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-evp", "aes-256-xts", "-bytes", "4096", "-seconds"])
        .arg(seconds.to_string())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with("AES-256-XTS"))?;
    let k: f64 = line
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse()
        .ok()?;
    Some(k / 1000.0)
}
