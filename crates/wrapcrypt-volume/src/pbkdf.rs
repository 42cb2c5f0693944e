//! Choosing keyslot KDF parameters from cryptsetup's options.

use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::kdf::{self, Argon2Variant, KdfKind, KdfParams};
use wrapcrypt_format::luks2::KeyslotKdf;

use crate::VolumeError;

/// The `--pbkdf*` / `--iter-time` / `--hash` options.
#[derive(Debug, Clone, Default)]
pub struct PbkdfOptions {
    /// "pbkdf2", "argon2i" or "argon2id" (default argon2id for LUKS2).
    pub kind: Option<String>,
    /// Hash for PBKDF2 (default sha256).
    pub hash: Option<String>,
    /// Target unlock time in ms (default 2000).
    pub iter_time_ms: Option<u32>,
    /// Argon2 maximum memory in KiB (default 1 GiB, at most half of RAM).
    pub memory_kib: Option<u32>,
    /// Argon2 threads (default min(4, CPUs)).
    pub parallel: Option<u32>,
    /// Fixed iterations / time cost, skipping calibration.
    pub force_iterations: Option<u32>,
}

impl PbkdfOptions {
    fn hash_alg(&self) -> Result<HashAlg, VolumeError> {
        let name = self.hash.as_deref().unwrap_or("sha256");
        HashAlg::from_name(name)
            .map_err(|_| VolumeError::Param(format!("Hash algorithm {name} is not supported.")))
    }

    /// Resolves the options into concrete keyslot KDF parameters (calibrating
    /// against this machine when no fixed cost is given) and a fresh salt.
    pub fn resolve(&self, key_len: usize) -> Result<KeyslotKdf, VolumeError> {
        let mut salt = vec![0u8; 32];
        wrapcrypt_secret::fill_random(&mut salt).map_err(|e| VolumeError::Param(e.to_string()))?;
        let kind = self.kind.as_deref().unwrap_or("argon2id");
        let ms = self.iter_time_ms.unwrap_or(2000);
        match kind {
            "pbkdf2" => {
                let hash = self.hash_alg()?;
                let iterations = match self.force_iterations {
                    Some(i) => i,
                    None => match kdf::calibrate(KdfKind::Pbkdf2(hash), ms, 0, 0, key_len) {
                        Ok(KdfParams::Pbkdf2 { iterations, .. }) => iterations,
                        Ok(_) => unreachable!("PBKDF2 calibration returns PBKDF2"),
                        Err(e) => return Err(VolumeError::Param(e.to_string())),
                    },
                };
                KdfParams::Pbkdf2 { hash, iterations }
                    .validate_new()
                    .map_err(|e| VolumeError::Param(e.to_string()))?;
                Ok(KeyslotKdf::Pbkdf2 {
                    hash: hash.name().to_string(),
                    iterations,
                    salt,
                })
            }
            "argon2i" | "argon2id" => {
                let variant = if kind == "argon2id" {
                    Argon2Variant::Id
                } else {
                    Argon2Variant::I
                };
                let parallel = self.parallel.unwrap_or_else(kdf::default_parallel);
                let memory = self.memory_kib.unwrap_or_else(kdf::default_max_memory_kib);
                let (time, memory) = match self.force_iterations {
                    Some(t) => (t, memory),
                    None => match kdf::calibrate(
                        KdfKind::Argon2(variant),
                        ms,
                        memory,
                        parallel,
                        key_len,
                    ) {
                        Ok(KdfParams::Argon2 {
                            time, memory_kib, ..
                        }) => (time, memory_kib),
                        Ok(_) => unreachable!("Argon2 calibration returns Argon2"),
                        Err(e) => return Err(VolumeError::Param(e.to_string())),
                    },
                };
                let p = KdfParams::Argon2 {
                    variant,
                    time,
                    memory_kib: memory,
                    parallel,
                };
                p.validate_new()
                    .map_err(|e| VolumeError::Param(e.to_string()))?;
                Ok(KeyslotKdf::Argon2 {
                    id: variant == Argon2Variant::Id,
                    time,
                    memory,
                    cpus: parallel,
                    salt,
                })
            }
            other => Err(VolumeError::Param(format!("Unknown PBKDF type {other}."))),
        }
    }
}

/// The KDF parameters of a stored keyslot KDF.
pub fn kdf_params(k: &KeyslotKdf) -> Result<KdfParams, VolumeError> {
    Ok(match k {
        KeyslotKdf::Pbkdf2 {
            hash, iterations, ..
        } => KdfParams::Pbkdf2 {
            hash: HashAlg::from_name(hash).map_err(|_| {
                VolumeError::Param(format!("Hash algorithm {hash} is not supported."))
            })?,
            iterations: *iterations,
        },
        KeyslotKdf::Argon2 {
            id,
            time,
            memory,
            cpus,
            ..
        } => KdfParams::Argon2 {
            variant: if *id {
                Argon2Variant::Id
            } else {
                Argon2Variant::I
            },
            time: *time,
            memory_kib: *memory,
            parallel: *cpus,
        },
    })
}

/// Iterations for a new volume-key digest: PBKDF2 calibrated to 125 ms as
/// cryptsetup does, never below 1000; with forced KDF costs (tests,
/// benchmarks) cryptsetup uses the minimum, 1000, and so do we.
pub fn digest_iterations(hash: HashAlg, key_len: usize, force: Option<u32>) -> u32 {
    match force {
        Some(_) => 1000,
        None => kdf::calibrate_digest_iterations(hash, key_len)
            .unwrap_or(1000)
            .max(1000),
    }
}
