//! `benchmark`: cryptsetup's layout, measured with wrapcrypt's own KDFs and
//! sector engine (cryptsetup needs AF_ALG for cipher rows; we do not).

use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::kdf::{self, Argon2Variant, KdfKind, KdfParams};
use wrapcrypt_sector::CipherSpec;

use serde_json::{json, Value};

use crate::cli::opts::Global;
use crate::cli::BenchArgs;
use crate::exit::CliError;
use crate::progress::Reporter;
use wrapcrypt_ops::progress::{Progress, Unit};

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

/// One measured cipher: (encrypt, decrypt) MiB/s.
fn cipher_speed(name: &str, bits: usize, sector: usize) -> Result<(f64, f64), CliError> {
    let full = if name.contains("-xts") || name.contains("-cbc") {
        format!("{name}-plain64")
    } else {
        name.to_string()
    };
    let spec = CipherSpec::parse(&full).map_err(|e| CliError::usage(e.to_string()))?;
    let per_direction = std::time::Duration::from_millis(500);
    wrapcrypt_sector::benchmark_with(&spec, bits, 1 << 20, sector, per_direction).map_err(|e| {
        CliError::usage(format!(
            "Cipher {full} (with {bits} bits key) is not available: {e}"
        ))
    })
}

/// Prints results as cryptsetup's text layout, or collects them for
/// `--json` (field names in docs/json-output.md).
struct Out {
    json: Option<serde_json::Map<String, Value>>,
    header_done: bool,
    /// Rows measured so far and in all: the progress line between rows.
    bar: Reporter,
    rows: (u64, u64),
}

impl Out {
    fn comment(&mut self, text: &str) {
        if self.json.is_none() {
            self.line(&format!("# {text}"));
        }
    }

    /// One line of the table, at column 0 even under a progress line.
    fn line(&mut self, text: &str) {
        self.bar.clear();
        println!("{text}");
    }

    /// A row is measured: the progress line moves on.
    fn row_done(&mut self) {
        self.rows.0 += 1;
        self.bar.update(self.rows.0, self.rows.1);
    }

    fn push(&mut self, list: &str, v: Value) {
        if let Some(m) = self.json.as_mut() {
            m.entry(list)
                .or_insert_with(|| Value::Array(Vec::new()))
                .as_array_mut()
                .expect("list")
                .push(v);
        }
    }

    fn cipher(&mut self, name: &str, bits: usize, sector: usize) -> Result<(), CliError> {
        let (enc, dec) = cipher_speed(name, bits, sector)?;
        if self.json.is_some() {
            self.push(
                "ciphers",
                json!({
                    "cipher": name,
                    "key-bits": bits,
                    "encrypt-mib-per-s": round1(enc),
                    "decrypt-mib-per-s": round1(dec),
                }),
            );
        } else {
            if !self.header_done {
                self.line("#     Algorithm |       Key |      Encryption |      Decryption");
                self.header_done = true;
            }
            self.line(&format!(
                "{name:>15} {bits:>9}b {enc:>11.1} MiB/s {dec:>11.1} MiB/s"
            ));
        }
        self.row_done();
        Ok(())
    }

    fn finish(mut self) {
        self.bar.clear();
        if let Some(m) = self.json.take() {
            println!("{}", Value::Object(m));
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// benchmark [--cipher C] [--key-size BITS] [--pbkdf P] [--json]
pub fn run(g: &Global, a: &BenchArgs) -> Result<(), CliError> {
    // The cipher rows run on whole sectors of this size, as dm-crypt would.
    let sector = a.sector_size.unwrap_or(512) as usize;
    if !matches!(sector, 512 | 1024 | 2048 | 4096) {
        return Err(CliError::usage("Unsupported encryption sector size."));
    }
    let mut out = Out {
        json: a.json.then(|| {
            let mut m = serde_json::Map::new();
            m.insert(
                "xts-implementation".into(),
                json!(wrapcrypt_sector::xts_path()),
            );
            m.insert("sector-size".into(), json!(sector));
            m
        }),
        header_done: false,
        bar: Reporter::new(g, Unit::Items("tests"), "benchmark"),
        rows: (0, 0),
    };
    let want = a.pbkdf.pbkdf.as_deref();
    out.rows.1 = match (a.cipher.is_some(), want) {
        (true, _) => 1,
        (false, None) => (5 + 2 + CIPHERS.len()) as u64,
        (false, Some("pbkdf2")) => 5,
        (false, Some(_)) => 1,
    };
    out.bar.update(0, out.rows.1);
    out.comment("Tests are approximate using memory only (no storage IO).");
    // Which AES-XTS implementation ran matters for comparing figures across
    // machines (and under WRAPCRYPT_XTS_PATH); a comment line keeps
    // cryptsetup's layout for anything that parses the rows.
    out.comment(&format!(
        "AES-XTS implementation: {}",
        wrapcrypt_sector::xts_path()
    ));
    if let Some(c) = a.cipher.as_deref() {
        let bits = a
            .key_size
            .unwrap_or(if c.contains("xts") { 512 } else { 256 });
        let short: String = c.split('-').take(2).collect::<Vec<_>>().join("-");
        out.cipher(&short, bits, sector)?;
        out.finish();
        return Ok(());
    }
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
        let r = match kdf::calibrate(KdfKind::Pbkdf2(h), 1000, 0, 0, 32) {
            Ok(KdfParams::Pbkdf2 { iterations, .. }) => Some(iterations),
            _ => None,
        };
        match (&out.json, r) {
            (Some(_), r) => out.push(
                "pbkdf",
                json!({"kdf": "pbkdf2", "hash": h.name(), "key-bits": 256,
                       "iterations-per-second": r}),
            ),
            (None, Some(iterations)) => out.line(&format!(
                "PBKDF2-{:<9} {iterations:>7} iterations per second for 256-bit key",
                h.name()
            )),
            (None, None) => out.line(&format!("PBKDF2-{:<9}     N/A", h.name())),
        }
        out.row_done();
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
        let r = match kdf::calibrate(KdfKind::Argon2(v), ms, mem, par, 32) {
            Ok(KdfParams::Argon2 {
                time,
                memory_kib,
                parallel,
                ..
            }) => Some((time, memory_kib, parallel)),
            _ => None,
        };
        match (&out.json, r) {
            (Some(_), r) => out.push(
                "pbkdf",
                json!({"kdf": v.name(), "key-bits": 256, "requested-ms": ms,
                       "time": r.map(|x| x.0), "memory-kib": r.map(|x| x.1),
                       "parallel": r.map(|x| x.2)}),
            ),
            (None, Some((time, memory_kib, parallel))) => out.line(&format!(
                "{:<10} {time:>4} iterations, {memory_kib:>5} memory, {parallel} parallel threads (CPUs) for 256-bit key (requested {ms} ms time)",
                v.name()
            )),
            (None, None) => out.line(&format!("{:<10} N/A", v.name())),
        }
        out.row_done();
    }
    if want.is_none() {
        for (name, bits) in CIPHERS {
            out.cipher(name, *bits, sector)?;
        }
    }
    out.finish();
    Ok(())
}
