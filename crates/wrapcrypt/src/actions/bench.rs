//! `benchmark`: cryptsetup's layout, measured with wrapcrypt's own KDFs and
//! sector engine (cryptsetup needs AF_ALG for cipher rows; we do not).

use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::kdf::{self, Argon2Variant, KdfKind, KdfParams};
use wrapcrypt_sector::CipherSpec;

use crate::cli::BenchArgs;
use crate::exit::CliError;

const CIPHERS: &[(&str, usize)] = &[
    ("aes-cbc", 128),
    ("serpent-cbc", 128),
    ("twofish-cbc", 128),
    ("aes-cbc", 256),
    ("serpent-cbc", 256),
    ("twofish-cbc", 256),
    ("aes-xts", 256),
    ("serpent-xts", 256),
    ("twofish-xts", 256),
    ("aes-xts", 512),
    ("serpent-xts", 512),
    ("twofish-xts", 512),
];

fn cipher_row(name: &str, bits: usize, sector: usize) -> Result<String, CliError> {
    let full = if name.contains("-xts") || name.contains("-cbc") {
        format!("{name}-plain64")
    } else {
        name.to_string()
    };
    let spec = CipherSpec::parse(&full).map_err(|e| CliError::usage(e.to_string()))?;
    let per_direction = std::time::Duration::from_millis(500);
    let (enc, dec) = wrapcrypt_sector::benchmark_with(&spec, bits, 1 << 20, sector, per_direction)
        .map_err(|e| {
            CliError::usage(format!(
                "Cipher {full} (with {bits} bits key) is not available: {e}"
            ))
        })?;
    Ok(format!(
        "{name:>15} {bits:>9}b {enc:>11.1} MiB/s {dec:>11.1} MiB/s"
    ))
}

/// benchmark [--cipher C] [--key-size BITS] [--pbkdf P]
pub fn run(a: &BenchArgs) -> Result<(), CliError> {
    // The cipher rows run on whole sectors of this size, as dm-crypt would.
    let sector = a.sector_size.unwrap_or(512) as usize;
    if !matches!(sector, 512 | 1024 | 2048 | 4096) {
        return Err(CliError::usage("Unsupported encryption sector size."));
    }
    println!("# Tests are approximate using memory only (no storage IO).");
    // Which AES-XTS implementation ran matters for comparing figures across
    // machines (and under WRAPCRYPT_XTS_PATH); a comment line keeps
    // cryptsetup's layout for anything that parses the rows.
    println!("# AES-XTS implementation: {}", wrapcrypt_sector::xts_path());
    if let Some(c) = a.cipher.as_deref() {
        let bits = a
            .key_size
            .unwrap_or(if c.contains("xts") { 512 } else { 256 });
        let short: String = c.split('-').take(2).collect::<Vec<_>>().join("-");
        println!("#     Algorithm |       Key |      Encryption |      Decryption");
        println!("{}", cipher_row(&short, bits, sector)?);
        return Ok(());
    }
    let want = a.pbkdf.pbkdf.as_deref();
    let ms = a.pbkdf.iter_time.unwrap_or(2000);
    for h in [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha512,
        HashAlg::Ripemd160,
        HashAlg::Whirlpool,
    ] {
        if want.is_some_and(|w| w != "pbkdf2") {
            break;
        }
        match kdf::calibrate(KdfKind::Pbkdf2(h), 1000, 0, 0, 32) {
            Ok(KdfParams::Pbkdf2 { iterations, .. }) => {
                println!(
                    "PBKDF2-{:<9} {iterations:>7} iterations per second for 256-bit key",
                    h.name()
                )
            }
            _ => println!("PBKDF2-{:<9}     N/A", h.name()),
        }
    }
    for v in [Argon2Variant::I, Argon2Variant::Id] {
        if want.is_some_and(|w| w != v.name()) {
            continue;
        }
        let par = a.pbkdf.pbkdf_parallel.unwrap_or(4);
        let mem = a
            .pbkdf
            .pbkdf_memory
            .unwrap_or_else(kdf::default_max_memory_kib);
        match kdf::calibrate(KdfKind::Argon2(v), ms, mem, par, 32) {
            Ok(KdfParams::Argon2 {
                time,
                memory_kib,
                parallel,
                ..
            }) => println!(
                "{:<10} {time:>4} iterations, {memory_kib:>5} memory, {parallel} parallel threads (CPUs) for 256-bit key (requested {ms} ms time)",
                v.name()
            ),
            _ => println!("{:<10} N/A", v.name()),
        }
    }
    if want.is_some() {
        return Ok(());
    }
    println!("#     Algorithm |       Key |      Encryption |      Decryption");
    for (name, bits) in CIPHERS {
        println!("{}", cipher_row(name, *bits, sector)?);
    }
    Ok(())
}
