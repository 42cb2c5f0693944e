//! `cryptsetup benchmark`-style throughput measurement.

use std::time::{Duration, Instant};

use wrapcrypt_secret::SecretBytes;

use crate::soft::SoftCipher;
use crate::spec::{CipherSpec, SpecError};
use crate::{SectorCipher, SectorError};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The cipher cannot be built with that key size.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The engine refused the buffer.
    #[error(transparent)]
    Sector(#[from] SectorError),
    /// No random key could be drawn.
    #[error("cannot read random bytes for the benchmark key: {0}")]
    Random(#[from] std::io::Error),
    /// The buffer size is zero or not a multiple of 512 bytes.
    #[error("benchmark buffer of {0} bytes must be a non-zero multiple of 512")]
    BufferSize(usize),
    /// The key size is not a whole number of bytes.
    #[error("key size of {0} bits is not a whole number of bytes")]
    KeyBits(usize),
}

/// Measures encryption and decryption speed in MiB/s (2^20 bytes per second,
/// the unit `cryptsetup benchmark` prints) with a random key, 512-byte
/// sectors and about 0.5 s of work per direction on one core.
pub fn benchmark(
    spec: &CipherSpec,
    key_bits: usize,
    buffer_size: usize,
) -> Result<(f64, f64), BenchError> {
    benchmark_with(spec, key_bits, buffer_size, 512, Duration::from_millis(500))
}

/// [`benchmark`] with a chosen sector size and time per direction.
pub fn benchmark_with(
    spec: &CipherSpec,
    key_bits: usize,
    buffer_size: usize,
    sector_size: usize,
    per_direction: Duration,
) -> Result<(f64, f64), BenchError> {
    if !key_bits.is_multiple_of(8) {
        return Err(BenchError::KeyBits(key_bits));
    }
    if buffer_size == 0 || !buffer_size.is_multiple_of(sector_size.max(512)) {
        return Err(BenchError::BufferSize(buffer_size));
    }
    let key = SecretBytes::random(key_bits / 8)?;
    let c = SoftCipher::new(spec, &key, sector_size)?;
    let mut buf = vec![0u8; buffer_size];
    wrapcrypt_secret::fill_random(&mut buf)?;
    let enc = measure(per_direction, buffer_size, |s| c.encrypt(s, &mut buf))?;
    let dec = measure(per_direction, buffer_size, |s| c.decrypt(s, &mut buf))?;
    Ok((enc, dec))
}

fn measure(
    budget: Duration,
    len: usize,
    mut f: impl FnMut(u64) -> Result<(), SectorError>,
) -> Result<f64, SectorError> {
    // One warm-up pass so page faults and frequency ramp are not timed.
    f(0)?;
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut sector = 0u64;
    loop {
        f(sector)?;
        sector = sector.wrapping_add((len / 512) as u64);
        bytes += len as u64;
        let el = start.elapsed();
        if el >= budget {
            return Ok(bytes as f64 / el.as_secs_f64() / (1024.0 * 1024.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_both_directions() {
        let spec = CipherSpec::parse("aes-xts-plain64").unwrap();
        let (e, d) = benchmark_with(&spec, 512, 64 * 1024, 512, Duration::from_millis(20)).unwrap();
        assert!(e > 1.0 && d > 1.0, "{e} {d}");
        let null = CipherSpec::parse("cipher_null-ecb").unwrap();
        let (e, _) = benchmark_with(&null, 0, 64 * 1024, 512, Duration::from_millis(20)).unwrap();
        assert!(e > 1.0);
    }

    #[test]
    fn rejects_bad_parameters() {
        let spec = CipherSpec::parse("aes-xts-plain64").unwrap();
        assert!(matches!(
            benchmark(&spec, 512, 1000),
            Err(BenchError::BufferSize(1000))
        ));
        assert!(matches!(
            benchmark(&spec, 320, 4096),
            Err(BenchError::Spec(_))
        ));
        assert!(matches!(
            benchmark(&spec, 511, 4096),
            Err(BenchError::KeyBits(511))
        ));
        let w = CipherSpec::parse("waes-xts-plain64").unwrap();
        assert!(matches!(
            benchmark(&w, 512, 4096),
            Err(BenchError::Spec(SpecError::WrappedKey { .. }))
        ));
    }
}
