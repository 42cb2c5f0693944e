//! LUKS1 parts of the actions (luksFormat --type luks1, luksDump, open,
//! header backup/restore) and `convert` in both directions. The other
//! action modules call in here when the volume is LUKS1.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use wrapcrypt_activate::ServeConfig;
use wrapcrypt_format::luks1::Luks1Header;
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_volume::format::{format_luks1, Luks1FormatParams};
use wrapcrypt_volume::{Volume, VolumeError};

use crate::args::Args;
use crate::exit::CliError;
use crate::{keys, pass};

/// luksFormat --type luks1.
pub fn format(a: &Args) -> Result<(), CliError> {
    let (dev, hdr) = keys::device(a)?;
    let cipher = a.get("cipher").unwrap_or("aes-xts-plain64").to_string();
    let spec =
        wrapcrypt_sector::CipherSpec::parse(&cipher).map_err(|e| CliError::usage(e.to_string()))?;
    let key_bits: usize = match a.num::<usize>("key-size")? {
        Some(b) => b,
        None if cipher.contains("-xts-") => 512,
        None => 256,
    };
    if !key_bits.is_multiple_of(8) || key_bits == 0 {
        return Err(CliError::usage("Key size must be a multiple of 8 bits"));
    }
    if !spec.key_len_valid(key_bits / 8) {
        return Err(CliError::usage(format!(
            "Cipher {cipher} (key size {key_bits} bits) is not available."
        )));
    }
    if a.get("sector-size").is_some_and(|s| s != "512") {
        return Err(CliError::usage("Unsupported encryption sector size."));
    }
    let pbkdf = keys::pbkdf_opts(a)?;
    if pbkdf.kind.as_deref().is_some_and(|k| k != "pbkdf2") {
        return Err(CliError::usage(
            "Requested PBKDF type is not supported for LUKS1.",
        ));
    }
    let params = Luks1FormatParams {
        cipher,
        key_size: key_bits / 8,
        hash: a.get("hash").unwrap_or("sha256").to_string(),
        align_payload: a.num("align-payload")?,
        offset: a.num("offset")?,
        uuid: a.get("uuid").map(str::to_string),
        pbkdf,
        keyslot: keys::key_slot(a)?,
    };
    let passphrase = keys::confirm_format_and_read_passphrase(a, dev, hdr)?;
    let key = match a.get("volume-key-file") {
        Some(p) => keys::volume_key_file(p, params.key_size)?,
        None => SecretBytes::random(params.key_size)?,
    };
    format_luks1(dev, hdr, &params, &key, passphrase.expose_secret())?;
    Ok(())
}

/// luksDump of a LUKS1 header (with `--dump-volume-key`, after unlocking).
pub fn dump(a: &Args, vol: &Volume) -> Result<(), CliError> {
    let h = vol.luks1_header()?;
    let dev = a.pos(0, "<device>")?;
    if a.flag("dump-json-metadata") {
        return Err(CliError::usage(format!(
            "Device {dev} is not a valid LUKS2 device."
        )));
    }
    let mut out = String::new();
    if a.flag("dump-volume-key") {
        pass::confirm(
            "\nWARNING!\n========\nHeader dump with volume key is sensitive information\nthat allows access to encrypted partition without a passphrase.\nThis dump should be stored encrypted in a safe place.\n",
            a.batch(),
        )?;
        let p = keys::existing_passphrase(a, &format!("Enter passphrase for {dev}: "), None)?;
        let u = vol.unlock(p.expose_secret(), keys::key_slot(a)?, true)?;
        wrapcrypt_format::dump::luks1_volume_key_dump(dev, h, u.key.expose_secret(), &mut out);
        let r = std::io::stdout().write_all(out.as_bytes());
        zeroize::Zeroize::zeroize(&mut out);
        r?;
        return Ok(());
    }
    wrapcrypt_format::dump::luks1_dump(dev, h, &mut out);
    print!("{out}");
    Ok(())
}

/// open of a LUKS1 volume: dm-crypt's LUKS1 mapping (payload at
/// `payload_offset` sectors, cipher `name-mode`, 512-byte sectors).
pub fn open(a: &Args, vol: Volume, dev: &str) -> Result<(), CliError> {
    let h: Luks1Header = vol.luks1_header()?.clone();
    let name = a.pos(1, "<name>")?.to_string();
    let enc = h.cipher_spec();
    crate::activate::check_cipher(&enc)?;
    if wrapcrypt_activate::list().contains(&name) || Path::new("/dev/mapper").join(&name).exists() {
        return Err(CliError::new(5, format!("Device {name} already exists.")));
    }
    if let Some(other) = wrapcrypt_activate::is_backing_in_use(Path::new(dev)) {
        return Err(CliError::new(
            5,
            format!("Cannot use device {dev} which is in use (already mapped as {other})."),
        ));
    }
    let p = keys::existing_passphrase(a, &format!("Enter passphrase for {dev}: "), None)?;
    let u = vol.unlock(p.expose_secret(), keys::key_slot(a)?, true)?;
    drop(p);
    let mut cfg = ServeConfig::new(&name, dev);
    // A detached header's payload offset counts on the data device too.
    cfg.data_offset = h.payload_offset_bytes();
    cfg.data_size = None;
    cfg.iv_tweak = 0;
    cfg.read_only = a.flag("readonly");
    cfg.allow_discards = a.flag("allow-discards");
    cfg.cipher_desc = enc.clone();
    cfg.extra_status.insert("type".into(), "LUKS1".into());
    cfg.extra_status
        .insert("keysize".into(), format!("{} bits", u.key.len() * 8));
    cfg.extra_status.insert("uuid".into(), h.uuid().to_string());
    cfg.extra_status
        .insert("keyslot".into(), u.keyslot.to_string());
    cfg.extra_status
        .insert("protection".into(), "in-process".into());
    cfg.extra_status.insert("provider".into(), "soft".into());
    drop(vol);
    let pl = crate::activate::payload(&cfg, &enc, 512, &crate::activate::KeySource::Clear, &u.key);
    drop(u);
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("__serve");
    wrapcrypt_activate::spawn(cmd, pl.expose_secret(), Duration::from_secs(30))?;
    Ok(())
}

/// luksHeaderRestore from a LUKS1 backup: cryptsetup's checks (a LUKS
/// header on the device must have the same payload offset and key size),
/// then the keyslot areas, and the phdr last.
pub fn restore(a: &Args, target: &Path, data: &[u8], file: &str) -> Result<(), CliError> {
    let bad = || CliError::usage("Header backup file does not contain compatible LUKS header.");
    let b = Luks1Header::parse(data).map_err(|_| bad())?;
    let need = wrapcrypt_volume::luks1_backup_len(&b) as usize;
    if data.len() < need {
        return Err(bad());
    }
    let dev =
        wrapcrypt_volume::Device::open(target, true).map_err(|source| VolumeError::Device {
            path: target.display().to_string(),
            source,
        })?;
    let _lock = wrapcrypt_volume::MetadataLock::acquire(&dev, true)?;
    if dev.size()? < need as u64 {
        return Err(CliError::new(
            4,
            format!("Device {} is too small.", target.display()),
        ));
    }
    let differs =
        || CliError::usage("Data offset or key size differs on device and backup, restore failed.");
    let prefix = dev.read_at(0, wrapcrypt_format::luks2::MAX_METADATA_PREFIX)?;
    if prefix.len() >= 8 && prefix[..6] == wrapcrypt_format::luks1::LUKS_MAGIC {
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
                pass::confirm(&msg, a.batch())?;
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
    let _ = file;
    Ok(())
}

/// convert --type luks1|luks2 DEVICE.
pub fn convert(a: &Args) -> Result<(), CliError> {
    let to = match a.get("type") {
        Some("luks1") => 1,
        Some("luks2") => 2,
        _ => {
            return Err(CliError::usage(
                "Invalid LUKS type, only luks1 and luks2 are supported.",
            ))
        }
    };
    let dev = a.pos(0, "<device>")?.to_string();
    let mut vol = keys::load(a, true)?;
    if vol.version() == to {
        return Err(CliError::usage(format!("Device is already LUKS{to} type.")));
    }
    if let Some(other) = wrapcrypt_activate::is_backing_in_use(Path::new(&dev)) {
        let _ = other;
        return Err(CliError::new(
            5,
            format!("Cannot convert device {dev} which is still in use."),
        ));
    }
    pass::confirm(
        &format!("\nWARNING!\n========\nThis operation will convert {dev} to LUKS{to} format.\n"),
        a.batch(),
    )?;
    if to == 2 {
        vol.convert_to_luks2()?;
    } else {
        vol.convert_to_luks1()?;
    }
    Ok(())
}
