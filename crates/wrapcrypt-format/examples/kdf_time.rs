//! Times one key derivation, for comparison with
//! `cryptsetup open --test-passphrase` on a header with the same parameters.
//!
//! ```text
//! kdf_time argon2id TIME MEMORY_KIB PARALLEL [KEY_BYTES]
//! kdf_time argon2i  TIME MEMORY_KIB PARALLEL [KEY_BYTES]
//! kdf_time pbkdf2   HASH ITERATIONS [KEY_BYTES]
//! kdf_time calibrate argon2id|argon2i|pbkdf2-HASH TARGET_MS [MEMORY_KIB PARALLEL]
//! ```
//! Prints `seconds=<wall> cpu=<process cpu> maxrss_kib=<peak RSS>` (and the
//! parameters for `calibrate`). The passphrase is a fixed dummy: this is a
//! benchmark, not a tool.

use std::process::ExitCode;
use std::time::Instant;

use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::kdf::{self, Argon2Variant, KdfKind, KdfParams};
use wrapcrypt_secret::SecretBytes;

fn usage() -> ExitCode {
    eprintln!(
        "usage: kdf_time argon2id|argon2i TIME MEMORY_KIB PARALLEL [KEY_BYTES]\n       \
         kdf_time pbkdf2 HASH ITERATIONS [KEY_BYTES]\n       \
         kdf_time calibrate argon2id|argon2i|pbkdf2-HASH TARGET_MS [MEMORY_KIB PARALLEL]"
    );
    ExitCode::from(1)
}

fn num(s: Option<&String>) -> Option<u32> {
    s?.parse().ok()
}

fn usage_stats() -> (f64, i64) {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let cpu = ru.ru_utime.tv_sec as f64
        + ru.ru_utime.tv_usec as f64 / 1e6
        + ru.ru_stime.tv_sec as f64
        + ru.ru_stime.tv_usec as f64 / 1e6;
    (cpu, ru.ru_maxrss)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(kind) = args.first() else {
        return usage();
    };
    if kind == "calibrate" {
        return calibrate(&args[1..]);
    }
    let (params, key_len) = match kind.as_str() {
        "argon2id" | "argon2i" => {
            let variant = Argon2Variant::from_name(kind).expect("matched above");
            let (Some(time), Some(memory_kib), Some(parallel)) =
                (num(args.get(1)), num(args.get(2)), num(args.get(3)))
            else {
                return usage();
            };
            let params = KdfParams::Argon2 {
                variant,
                time,
                memory_kib,
                parallel,
            };
            (params, num(args.get(4)).unwrap_or(64))
        }
        "pbkdf2" => {
            let Some(Ok(hash)) = args.get(1).map(|h| HashAlg::from_name(h)) else {
                return usage();
            };
            let Some(iterations) = num(args.get(2)) else {
                return usage();
            };
            (
                KdfParams::Pbkdf2 { hash, iterations },
                num(args.get(3)).unwrap_or(64),
            )
        }
        _ => return usage(),
    };
    let mut key = SecretBytes::zeroed(key_len as usize);
    let salt = [0x5au8; 32];
    let t0 = Instant::now();
    if let Err(e) = kdf::derive(&params, b"benchpass", &salt, key.expose_secret_mut()) {
        eprintln!("kdf_time: {e}");
        return ExitCode::from(1);
    }
    let wall = t0.elapsed().as_secs_f64();
    let (cpu, rss) = usage_stats();
    println!("seconds={wall:.3} cpu={cpu:.3} maxrss_kib={rss} params=\"{params}\"");
    ExitCode::SUCCESS
}

fn calibrate(args: &[String]) -> ExitCode {
    let Some(kind) = args.first() else {
        return usage();
    };
    let kind = if let Some(h) = kind.strip_prefix("pbkdf2-") {
        match HashAlg::from_name(h) {
            Ok(h) => KdfKind::Pbkdf2(h),
            Err(e) => {
                eprintln!("kdf_time: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        match Argon2Variant::from_name(kind) {
            Some(v) => KdfKind::Argon2(v),
            None => return usage(),
        }
    };
    let Some(target) = num(args.get(1)) else {
        return usage();
    };
    let memory = num(args.get(2)).unwrap_or_else(kdf::default_max_memory_kib);
    let parallel = num(args.get(3)).unwrap_or_else(kdf::default_parallel);
    let t0 = Instant::now();
    match kdf::calibrate(kind, target, memory, parallel, 64) {
        Ok(p) => {
            println!(
                "calibrated=\"{p}\" calibration_seconds={:.3}",
                t0.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kdf_time: {e}");
            ExitCode::from(1)
        }
    }
}
