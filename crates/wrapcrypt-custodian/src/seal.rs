//! Master keys at rest: the registers are encrypted (AES-256-GCM-SIV) under
//! a storage key, and the storage key is sealed by a TPM 2.0 or, without
//! one, kept in a root-only 0600 file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};
use wrapcrypt_secret::SecretBytes;

use crate::registers::Registers;
pub use crate::seal_error::SealError;
use crate::tpm;

const REGISTERS_FILE: &str = "registers.bin";
const KEY_FILE: &str = "storage.key";
const TPM_FILE: &str = "storage.tpm";
const REG_MAGIC: &[u8; 6] = b"WCMS\x00\x01";
const STORAGE_KEY_LEN: usize = 32;

/// How the storage key is protected.
enum Sealer {
    File,
    Tpm(String),
}

/// The state directory with its unsealed storage key.
pub struct Store {
    dir: PathBuf,
    sealer: Sealer,
    storage_key: SecretBytes,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SealError + '_ {
    move |source| SealError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` to `path` atomically with mode 0600.
fn write_private(path: &Path, data: &[u8]) -> Result<(), SealError> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(d) = path.parent() {
        File::open(d)
            .and_then(|d| d.sync_all())
            .map_err(io_err(d))?;
    }
    Ok(())
}

/// Refuses state readable by group or others (or owned by someone else).
fn check_private(path: &Path, dir: bool) -> Result<(), SealError> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).map_err(io_err(path))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let allowed = if dir { 0o700 } else { 0o600 };
    if m.uid() != me || m.permissions().mode() & 0o777 & !allowed != 0 {
        return Err(SealError::Permissions(path.to_path_buf()));
    }
    Ok(())
}

impl Store {
    /// Opens the state directory, unsealing the storage key; creates one
    /// (sealed by the TPM at `tcti` if given) when the directory is new.
    pub fn open(dir: &Path, tcti: Option<&str>) -> Result<Store, SealError> {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        }
        check_private(dir, true)?;
        let tpm_path = dir.join(TPM_FILE);
        let key_path = dir.join(KEY_FILE);
        // Existing state decides how it was sealed.
        if tpm_path.exists() {
            check_private(&tpm_path, false)?;
            let tcti = tcti.ok_or_else(|| SealError::Tpm {
                tcti: "none".into(),
                message: format!(
                    "{} is sealed by a TPM, but no TCTI is configured",
                    tpm_path.display()
                ),
            })?;
            let blob = fs::read(&tpm_path).map_err(io_err(&tpm_path))?;
            let storage_key = tpm::unseal(tcti, &blob)?;
            return Ok(Store {
                dir: dir.into(),
                sealer: Sealer::Tpm(tcti.into()),
                storage_key,
            });
        }
        if key_path.exists() {
            check_private(&key_path, false)?;
            let mut raw = fs::read(&key_path).map_err(io_err(&key_path))?;
            if raw.len() != STORAGE_KEY_LEN {
                zeroize::Zeroize::zeroize(&mut raw);
                return Err(SealError::Corrupt(key_path));
            }
            return Ok(Store {
                dir: dir.into(),
                sealer: Sealer::File,
                storage_key: SecretBytes::take_vec(raw),
            });
        }
        let storage_key = SecretBytes::random(STORAGE_KEY_LEN).map_err(io_err(dir))?;
        let sealer = match tcti {
            Some(t) => {
                let blob = tpm::seal(t, &storage_key)?;
                write_private(&tpm_path, &blob)?;
                Sealer::Tpm(t.into())
            }
            None => {
                write_private(&key_path, storage_key.expose_secret())?;
                Sealer::File
            }
        };
        Ok(Store {
            dir: dir.into(),
            sealer,
            storage_key,
        })
    }

    /// How the master keys are sealed, for `status`.
    pub fn describe(&self) -> String {
        match &self.sealer {
            Sealer::Tpm(t) => format!("tpm2 ({t})"),
            Sealer::File => format!(
                "file ({}, root-only 0600, no TPM)",
                self.dir.join(KEY_FILE).display()
            ),
        }
    }

    /// Whether the storage key is sealed by a TPM (then KMIP-backed master
    /// keys keep a sealed copy; without one they are never written).
    pub fn is_tpm(&self) -> bool {
        matches!(self.sealer, Sealer::Tpm(_))
    }

    fn aead(&self) -> Aes256GcmSiv {
        Aes256GcmSiv::new_from_slice(self.storage_key.expose_secret()).expect("32-byte key")
    }

    /// The saved registers, or empty ones if none were saved yet.
    pub fn load(&self) -> Result<Registers, SealError> {
        let path = self.dir.join(REGISTERS_FILE);
        let raw = match fs::read(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Registers::default()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        check_private(&path, false)?;
        let hdr = REG_MAGIC.len();
        // Version 1 registers have a fixed length, version 2 (KMIP
        // references) a variable one; the plaintext says which.
        if raw.len() < hdr + 12 + 6 + 16 || raw.len() > 1 << 16 || &raw[..hdr] != REG_MAGIC {
            return Err(SealError::Corrupt(path));
        }
        let body = raw.len() - hdr - 12 - 16;
        let mut plain = SecretBytes::copy_from(&raw[hdr + 12..hdr + 12 + body]);
        self.aead()
            .decrypt_in_place_detached(
                Nonce::from_slice(&raw[hdr..hdr + 12]),
                REG_MAGIC,
                plain.expose_secret_mut(),
                Tag::from_slice(&raw[hdr + 12 + body..]),
            )
            .map_err(|_| SealError::Corrupt(path.clone()))?;
        Registers::from_secret(&plain).ok_or(SealError::Corrupt(path))
    }

    /// Saves the registers (atomically; a crash leaves the old or new set).
    /// KMIP-backed keys are written (sealed) only when a TPM seals the
    /// storage key; otherwise just their ids and MKVPs.
    pub fn save(&self, regs: &Registers) -> Result<(), SealError> {
        let path = self.dir.join(REGISTERS_FILE);
        let mut plain = regs.to_secret(!self.is_tpm());
        let mut nonce = [0u8; 12];
        wrapcrypt_secret::fill_random(&mut nonce).map_err(io_err(&path))?;
        let tag = self
            .aead()
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                REG_MAGIC,
                plain.expose_secret_mut(),
            )
            .map_err(|_| SealError::Corrupt(path.clone()))?;
        let mut out = Vec::with_capacity(REG_MAGIC.len() + 12 + plain.len() + 16);
        out.extend_from_slice(REG_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain.expose_secret());
        out.extend_from_slice(&tag);
        write_private(&path, &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::MasterKey;

    #[test]
    fn file_store_roundtrip_and_tamper() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let s = Store::open(&dir, None).unwrap();
        assert!(s.describe().starts_with("file ("));
        assert!(s.load().unwrap().current.is_none());
        let regs = Registers {
            current: Some(MasterKey::random().unwrap()),
            ..Default::default()
        };
        s.save(&regs).unwrap();
        let s2 = Store::open(&dir, None).unwrap();
        let back = s2.load().unwrap();
        assert_eq!(
            back.current.unwrap().mkvp(),
            regs.current.as_ref().unwrap().mkvp()
        );
        let mode = fs::metadata(dir.join(REGISTERS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut raw = fs::read(dir.join(REGISTERS_FILE)).unwrap();
        raw[30] ^= 1;
        fs::write(dir.join(REGISTERS_FILE), &raw).unwrap();
        assert!(matches!(s2.load(), Err(SealError::Corrupt(_))));
        fs::set_permissions(dir.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Store::open(&dir, None),
            Err(SealError::Permissions(_))
        ));
    }
}
