//! Serpent and Twofish against AES in one run: prints one JSON line per
//! cipher with XTS (512-bit key, 4096-byte sectors in batches of 256 per
//! call, or `--sector-size N` in 1 MiB calls; one thread) on the default engine and, for serpent and twofish, on
//! the portable RustCrypto reference (`--path portable`), plus the ratios
//! serpent-xts ÷ aes-xts, twofish-xts ÷ aes-xts and each ÷ its reference.
//! MB/s are 10^6 bytes per second of this thread's CPU time; every figure is
//! the best of `--rounds N` (default 3) alternating runs of `--seconds S`
//! (default 0.5) each, so all share the machine's load.

use std::time::Duration;

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{CipherSpec, SectorCipher, SoftCipher, XtsPath};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: f64 = arg(&args, "--seconds").unwrap_or(0.5);
    let rounds: usize = arg::<usize>(&args, "--rounds").unwrap_or(3).max(1);
    let budget = Duration::from_secs_f64(seconds);
    // `--sector-size 512` measures the shape `wrapcrypt benchmark` uses
    // (512-byte sectors, 1 MiB per call).
    let sector: usize = arg(&args, "--sector-size").unwrap_or(4096);
    let batch: usize = (1 << 20) / sector;
    let key = SecretBytes::random(64).expect("random key");
    let engine = |name: &str, path: Option<XtsPath>| {
        let spec = CipherSpec::parse(name).expect("spec");
        match path {
            Some(p) => SoftCipher::with_xts_path(&spec, &key, sector, p),
            None => SoftCipher::new(&spec, &key, sector),
        }
        .expect("cipher")
    };
    // (label, engine): the default engine of each cipher, then the references.
    let rows = [
        ("aes-xts-plain64", engine("aes-xts-plain64", None)),
        ("serpent-xts-plain64", engine("serpent-xts-plain64", None)),
        ("twofish-xts-plain64", engine("twofish-xts-plain64", None)),
        (
            "serpent-xts-plain64 [portable reference]",
            engine("serpent-xts-plain64", Some(XtsPath::Portable)),
        ),
        (
            "twofish-xts-plain64 [portable reference]",
            engine("twofish-xts-plain64", Some(XtsPath::Portable)),
        ),
    ];
    let mut buf = vec![0u8; batch * sector];
    wrapcrypt_secret::fill_random(&mut buf).expect("random data");
    let mut best = vec![(0f64, 0f64); rows.len()];
    for _ in 0..rounds {
        for ((_, c), b) in rows.iter().zip(best.iter_mut()) {
            let e = measure(budget, &mut buf, |s, d| c.encrypt(s, d).expect("encrypt"));
            let d = measure(budget, &mut buf, |s, d| c.decrypt(s, d).expect("decrypt"));
            b.0 = b.0.max(e);
            b.1 = b.1.max(d);
        }
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let aes_engine = rows[0].1.engine_name();
    for ((name, c), (e, d)) in rows.iter().zip(&best) {
        let (ae, ad) = best[0];
        let mut line = format!(
            "{{\"cipher\":\"{name}\",\"key_bits\":512,\"sector_size\":{sector},\"batch_sectors\":{batch},\"engine\":\"{}\",\"aes_engine\":\"{aes_engine}\",\"best_of\":{rounds},\"encrypt_mb_s\":{e:.1},\"decrypt_mb_s\":{d:.1},\"aes_encrypt_mb_s\":{ae:.1},\"aes_decrypt_mb_s\":{ad:.1},\"encrypt_vs_aes\":{:.4},\"decrypt_vs_aes\":{:.4}",
            c.engine_name(),
            e / ae,
            d / ad
        );
        if let Some(r) = rows
            .iter()
            .position(|(n, _)| n.starts_with(name) && n.ends_with("reference]"))
        {
            if !name.ends_with(']') {
                let (re, rd) = best[r];
                line += &format!(
                    ",\"reference_encrypt_mb_s\":{re:.1},\"reference_decrypt_mb_s\":{rd:.1},\"encrypt_vs_reference\":{:.1},\"decrypt_vs_reference\":{:.1}",
                    e / re,
                    d / rd
                );
            }
        }
        println!("{line},\"loadavg\":\"{}\"}}", loadavg.trim());
    }
}

/// CPU time of this thread, so a loaded machine does not count against us.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// MB/s per CPU second; at least one call even for the slow references.
fn measure(budget: Duration, buf: &mut [u8], mut f: impl FnMut(u64, &mut [u8])) -> f64 {
    let cpu = thread_cpu();
    let mut bytes = 0usize;
    let mut sector = 0u64;
    loop {
        f(sector, buf);
        sector += (buf.len() / 512) as u64;
        bytes += buf.len();
        let el = thread_cpu() - cpu;
        if el >= budget {
            return bytes as f64 / 1e6 / el.as_secs_f64();
        }
    }
}
