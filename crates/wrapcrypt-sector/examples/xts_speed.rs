//! Prints one JSON line per AES-XTS path with aes-xts-plain64 (512-bit key)
//! speed on one core, in MB/s: 10^6 bytes per second of this thread's CPU
//! time, which is what `openssl speed` reports by default (it divides by CPU
//! user time), plus the wall-clock figures. Two shapes are measured:
//! 4096-byte sectors in batches of `--batch` sectors (default 256) per call,
//! and one 512-byte sector per call (where per-call costs show).
//!
//! `--openssl` also runs `openssl speed -evp aes-256-xts -bytes 4096` and
//! `-bytes 512` (`-seconds 3` each) in the same run and adds their MB/s and
//! our ratios to them. `--path NAME` measures one path (default: the one
//! `xts_path()` names), `--path all` every path this CPU has.
//! `--seconds N` sets our time per measurement (default 1); `--rounds N`
//! takes the best of N alternating runs (default 3), which tames a loaded
//! machine. `--portable` is `--path portable`.

use std::process::Command;
use std::time::{Duration, Instant};

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{xts_path, CipherSpec, SectorCipher, SoftCipher, XtsPath};

const SECTOR: usize = 4096;
const SMALL: usize = 512;
const OPENSSL_SECONDS: u32 = 3;

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

/// Best figures of one path over all rounds.
#[derive(Default)]
struct Best {
    enc: f64,
    dec: f64,
    enc_wall: f64,
    dec_wall: f64,
    enc_512: f64,
    dec_512: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: f64 = arg(&args, "--seconds").unwrap_or(1.0);
    let rounds: usize = arg::<usize>(&args, "--rounds").unwrap_or(3).max(1);
    let batch: usize = arg::<usize>(&args, "--batch").unwrap_or(256).max(1);
    let with_openssl = args.iter().any(|a| a == "--openssl");
    let wanted: String = if args.iter().any(|a| a == "--portable") {
        "portable".into()
    } else {
        arg(&args, "--path").unwrap_or_else(|| xts_path().to_string())
    };
    let paths: Vec<XtsPath> = if wanted == "all" {
        XtsPath::available_paths()
    } else {
        match XtsPath::from_name(&wanted) {
            Some(p) if p.available() => vec![p],
            _ => {
                eprintln!(
                    "xts_speed: no path {wanted:?} on this CPU (have: {:?})",
                    names()
                );
                std::process::exit(1);
            }
        }
    };
    let budget = Duration::from_secs_f64(seconds);

    let spec = CipherSpec::parse("aes-xts-plain64").expect("spec");
    let key = SecretBytes::random(64).expect("random key");
    let engines: Vec<(XtsPath, SoftCipher, SoftCipher)> = paths
        .iter()
        .map(|&p| {
            let big = SoftCipher::with_xts_path(&spec, &key, SECTOR, p).expect("cipher");
            let small = SoftCipher::with_xts_path(&spec, &key, SMALL, p).expect("cipher");
            assert_eq!(big.xts_path(), Some(p), "engine runs the path measured");
            (p, big, small)
        })
        .collect();
    let mut buf = vec![0u8; batch * SECTOR];
    wrapcrypt_secret::fill_random(&mut buf).expect("random data");
    let mut one = [0u8; SMALL];
    wrapcrypt_secret::fill_random(&mut one).expect("random data");

    // Best of N, alternating with openssl, so both see the same machine load.
    let mut best: Vec<Best> = paths.iter().map(|_| Best::default()).collect();
    let (mut ossl, mut ossl_512): (Option<f64>, Option<f64>) = (None, None);
    for _ in 0..rounds {
        for ((_, big, small), b) in engines.iter().zip(best.iter_mut()) {
            let (e, ew) = measure(budget, &mut buf, |s, d| big.encrypt(s, d).expect("encrypt"));
            let (d, dw) = measure(budget, &mut buf, |s, d| big.decrypt(s, d).expect("decrypt"));
            let (e1, _) = measure(budget, &mut one, |s, d| {
                small.encrypt(s, d).expect("encrypt")
            });
            let (d1, _) = measure(budget, &mut one, |s, d| {
                small.decrypt(s, d).expect("decrypt")
            });
            b.enc = b.enc.max(e);
            b.dec = b.dec.max(d);
            b.enc_wall = b.enc_wall.max(ew);
            b.dec_wall = b.dec_wall.max(dw);
            b.enc_512 = b.enc_512.max(e1);
            b.dec_512 = b.dec_512.max(d1);
        }
        if with_openssl {
            if let Some(o) = openssl_speed(SECTOR, OPENSSL_SECONDS) {
                ossl = Some(ossl.unwrap_or(0.0).max(o));
            }
            if let Some(o) = openssl_speed(SMALL, OPENSSL_SECONDS) {
                ossl_512 = Some(ossl_512.unwrap_or(0.0).max(o));
            }
        }
    }

    for ((p, big, _), b) in engines.iter().zip(&best) {
        let mut line = format!(
            "{{\"cipher\":\"aes-xts-plain64\",\"key_bits\":512,\"path\":\"{}\",\"default_path\":\"{}\",\"sector_size\":{SECTOR},\"batch_sectors\":{batch},\"buffer\":{},\"accelerated\":{},\"best_of\":{rounds},\"unit\":\"MB/s (1e6 bytes per CPU second, as openssl speed)\",\"encrypt_mb_s\":{:.1},\"decrypt_mb_s\":{:.1},\"encrypt_wall_mb_s\":{:.1},\"decrypt_wall_mb_s\":{:.1},\"encrypt_512_mb_s\":{:.1},\"decrypt_512_mb_s\":{:.1}",
            p.name(),
            xts_path(),
            buf.len(),
            big.accelerated(),
            b.enc,
            b.dec,
            b.enc_wall,
            b.dec_wall,
            b.enc_512,
            b.dec_512,
        );
        if with_openssl {
            match (ossl, ossl_512) {
                (Some(o), Some(o1)) => {
                    line += &format!(
                        ",\"openssl_mb_s\":{o:.1},\"openssl_512_mb_s\":{o1:.1},\"encrypt_ratio\":{:.3},\"decrypt_ratio\":{:.3},\"encrypt_512_ratio\":{:.3},\"decrypt_512_ratio\":{:.3}",
                        b.enc / o,
                        b.dec / o,
                        b.enc_512 / o1,
                        b.dec_512 / o1
                    )
                }
                _ => line += ",\"openssl_mb_s\":null,\"openssl_512_mb_s\":null",
            }
        }
        println!("{line}}}");
    }
}

fn names() -> Vec<&'static str> {
    XtsPath::available_paths()
        .into_iter()
        .map(XtsPath::name)
        .collect()
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
    // About 1 MiB between clock reads: reading the thread's CPU clock is a
    // system call, which would weigh on 512-byte calls.
    let calls = (1 << 20) / buf.len().max(1);
    let wall = Instant::now();
    let cpu = thread_cpu();
    let mut bytes = 0usize;
    let mut sector = 0u64;
    while thread_cpu() - cpu < budget {
        for _ in 0..calls.max(1) {
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
fn openssl_speed(bytes: usize, seconds: u32) -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-evp", "aes-256-xts", "-bytes"])
        .arg(bytes.to_string())
        .arg("-seconds")
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
