//! luksHeaderBackup and luksHeaderRestore (LUKS1 and LUKS2), with
//! cryptsetup's checks. A restore writes the keyslot areas first and the
//! header last (for LUKS2 the secondary copy before the primary), each step
//! durable, so a crash leaves the old header or the restored one.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use wrapcrypt_format::luks1::{Luks1Header, LUKS_MAGIC};
use wrapcrypt_format::luks2::{self, Luks2Header};
use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::{Device, ExitClass, MetadataLock, Volume, VolumeError};

use crate::error::OpsError;

fn required(file: Option<&str>) -> Result<&str, OpsError> {
    file.ok_or_else(|| OpsError::usage("Option --header-backup-file is required."))
}

/// Writes the header and keyslot areas to a new file (mode 0400).
pub fn backup(vol: &Volume, file: Option<&str>) -> Result<(), OpsError> {
    let file = required(file)?;
    let data = vol
        .meta_device()
        .read_at(0, vol.backup_len() as usize)
        .map_err(|e| VolumeError::Io {
            op: "reading header",
            path: vol.meta_device().path().display().to_string(),
            source: e,
        })?;
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(OpsError::usage(format!(
                "Requested header backup file {file} already exists."
            )))
        }
        Err(e) => {
            return Err(OpsError::refused(
                ExitClass::WrongDevice,
                format!("Cannot create header backup file {file}: {e}"),
            ))
        }
    };
    f.write_all(&data)?;
    f.sync_all()?;
    Ok(())
}

/// The restore target, locked, holding at least `need` bytes.
fn open_target(target: &Path, need: usize) -> Result<(Device, MetadataLock), OpsError> {
    let dev = Device::open(target, true).map_err(|source| VolumeError::Device {
        path: target.display().to_string(),
        source,
    })?;
    let lock = MetadataLock::acquire(&dev, true)?;
    if dev.size()? < need as u64 {
        return Err(OpsError::refused(
            ExitClass::WrongDevice,
            format!("Device {} is too small.", target.display()),
        ));
    }
    Ok((dev, lock))
}

/// Restores `target` (the header device) from a backup file.
pub fn restore(
    target: &Path,
    file: Option<&str>,
    prompter: &mut dyn Prompter,
) -> Result<(), OpsError> {
    let file = required(file)?;
    let mut data = Vec::new();
    std::fs::File::open(file)
        .map_err(|e| {
            OpsError::refused(
                ExitClass::WrongDevice,
                format!("Cannot open header backup file {file}: {e}"),
            )
        })?
        .read_to_end(&mut data)?;
    restore_bytes(target, &data, &format!("Backup file {file}"), prompter)
}

/// Restores `target` from backup bytes (a file's, or an escrow's named by
/// `source` in messages).
pub fn restore_bytes(
    target: &Path,
    data: &[u8],
    source: &str,
    prompter: &mut dyn Prompter,
) -> Result<(), OpsError> {
    if data.len() >= 8 && data[..6] == LUKS_MAGIC && data[6..8] == [0, 1] {
        return restore1(target, data, prompter);
    }
    let invalid = || OpsError::usage(format!("{source} doesn't contain valid LUKS header."));
    let loaded = Luks2Header::parse(&data[..data.len().min(luks2::MAX_METADATA_PREFIX)])
        .map_err(|_| invalid())?;
    let need = loaded.header.meta.keyslots_end(loaded.header.hdr_size) as usize;
    if data.len() < need {
        return Err(invalid());
    }
    let (dev, _lock) = open_target(target, need)?;
    // Replacing an existing LUKS header destroys its keyslots: confirm.
    let prefix = dev.read_at(0, luks2::MAX_METADATA_PREFIX)?;
    if let Ok(cur) = Luks2Header::parse(&prefix) {
        let msg = if cur.header.uuid != loaded.header.uuid {
            format!("\nWARNING!\n========\nDevice {} already contains LUKS2 header with different UUID.\nReplacing header will destroy existing keyslots.\n", target.display())
        } else {
            format!("\nWARNING!\n========\nDevice {} already contains LUKS2 header.\nReplacing header will destroy existing keyslots.\n", target.display())
        };
        prompter.confirm(&msg)?;
    }
    // Keyslots area first, then the header copies (primary last), each durable.
    let hs = loaded.header.hdr_size as usize;
    let io = |e| VolumeError::Io {
        op: "restoring header",
        path: target.display().to_string(),
        source: e,
    };
    dev.write_at(2 * hs as u64, &data[2 * hs..need])
        .map_err(io)?;
    dev.sync().map_err(io)?;
    dev.write_at(hs as u64, &data[hs..2 * hs]).map_err(io)?;
    dev.sync().map_err(io)?;
    dev.write_at(0, &data[..hs]).map_err(io)?;
    dev.sync().map_err(io)?;
    Ok(())
}

/// A LUKS1 backup: cryptsetup's checks (a LUKS header on the device must
/// have the same payload offset and key size), then the keyslot areas, and
/// the phdr last.
fn restore1(target: &Path, data: &[u8], prompter: &mut dyn Prompter) -> Result<(), OpsError> {
    let bad = || OpsError::usage("Header backup file does not contain compatible LUKS header.");
    let b = Luks1Header::parse(data).map_err(|_| bad())?;
    let need = wrapcrypt_volume::luks1_backup_len(&b) as usize;
    if data.len() < need {
        return Err(bad());
    }
    let (dev, _lock) = open_target(target, need)?;
    let differs =
        || OpsError::usage("Data offset or key size differs on device and backup, restore failed.");
    let prefix = dev.read_at(0, luks2::MAX_METADATA_PREFIX)?;
    if prefix.len() >= 8 && prefix[..6] == LUKS_MAGIC {
        match Luks1Header::parse(&prefix) {
            Ok(cur) => {
                if cur.payload_offset() != b.payload_offset() || cur.key_bytes() != b.key_bytes() {
                    return Err(differs());
                }
                let msg = if cur.uuid() != b.uuid() {
                    format!("\nWARNING!\n========\nDevice {} already contains LUKS header with different UUID.\nReplacing header will destroy existing keyslots.\n", target.display())
                } else {
                    format!("\nWARNING!\n========\nDevice {} already contains LUKS header.\nReplacing header will destroy existing keyslots.\n", target.display())
                };
                prompter.confirm(&msg)?;
            }
            Err(_) => return Err(differs()),
        }
    }
    let io = |e| VolumeError::Io {
        op: "restoring header",
        path: target.display().to_string(),
        source: e,
    };
    // Keyslot areas first, the sector with the phdr last.
    dev.write_at(512, &data[512..need]).map_err(io)?;
    dev.sync().map_err(io)?;
    dev.write_at(0, &data[..512]).map_err(io)?;
    dev.sync().map_err(io)?;
    Ok(())
}
