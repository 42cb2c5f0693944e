//! Actions that create volumes and manage keyslots.

use std::path::Path;

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_volume::format::{format_luks2, FormatParams};
use wrapcrypt_volume::{PbkdfOptions, Volume, VolumeError};

use crate::args::Args;
use crate::exit::CliError;
use crate::pass;

/// The `--pbkdf*`, `--iter-time` and `--hash` options.
pub fn pbkdf_opts(a: &Args) -> Result<PbkdfOptions, CliError> {
    Ok(PbkdfOptions {
        kind: a.get("pbkdf").map(str::to_string),
        hash: a.get("hash").map(str::to_string),
        iter_time_ms: a.num("iter-time")?,
        memory_kib: a.num("pbkdf-memory")?,
        parallel: a.num("pbkdf-parallel")?,
        force_iterations: a.num("pbkdf-force-iterations")?,
    })
}

/// The `--key-slot` option.
pub fn key_slot(a: &Args) -> Result<Option<u32>, CliError> {
    a.num("key-slot")
}

/// The header path (`--header`) and data device.
pub fn device(a: &Args) -> Result<(&Path, Option<&Path>), CliError> {
    Ok((
        Path::new(a.pos(0, "<device>")?),
        a.get("header").map(Path::new),
    ))
}

/// Opens the volume for reading (shared lock) or writing (exclusive).
pub fn load(a: &Args, writable: bool) -> Result<Volume, CliError> {
    let (dev, hdr) = device(a)?;
    Ok(Volume::open(dev, hdr, writable)?)
}

/// An existing passphrase: `--key-file` (or a positional key file at
/// `pos_keyfile`), else a prompt.
pub fn existing_passphrase(
    a: &Args,
    prompt: &str,
    pos_keyfile: Option<usize>,
) -> Result<SecretBytes, CliError> {
    let kf = a
        .get("key-file")
        .or_else(|| pos_keyfile.and_then(|i| a.pos.get(i)).map(String::as_str));
    match kf {
        Some(path) => pass::read_keyfile(
            path,
            a.num("keyfile-offset")?.unwrap_or(0),
            a.num("keyfile-size")?,
        ),
        None => pass::read_line(prompt),
    }
}

/// A new passphrase: `--new-keyfile`, a positional key file, or a prompt
/// (verified on a terminal).
pub fn new_passphrase(
    a: &Args,
    prompt: &str,
    pos_keyfile: Option<usize>,
) -> Result<SecretBytes, CliError> {
    let kf = a
        .get("new-keyfile")
        .or_else(|| pos_keyfile.and_then(|i| a.pos.get(i)).map(String::as_str));
    match kf {
        Some(path) => pass::read_keyfile(
            path,
            a.num("new-keyfile-offset")?.unwrap_or(0),
            a.num("new-keyfile-size")?,
        ),
        None => pass::read_new(prompt, true),
    }
}

/// Reads `--volume-key-file` (exactly `len` bytes).
pub fn volume_key_file(path: &str, len: usize) -> Result<SecretBytes, CliError> {
    let k = pass::read_keyfile(path, 0, None)?;
    if k.len() != len {
        return Err(CliError::usage(format!(
            "Cannot read {len} bytes from volume key file {path}."
        )));
    }
    Ok(k)
}

fn unlock_existing(
    a: &Args,
    vol: &Volume,
    prompt: &str,
    pos_keyfile: Option<usize>,
) -> Result<wrapcrypt_volume::Unlocked, CliError> {
    let p = existing_passphrase(a, prompt, pos_keyfile)?;
    Ok(vol.unlock(p.expose_secret(), key_slot(a)?, false)?)
}

/// luksFormat's overwrite confirmation, then the first passphrase (key
/// file, positional key file, or a verified prompt). Shared by LUKS1/LUKS2.
pub fn confirm_format_and_read_passphrase(
    a: &Args,
    dev: &Path,
    hdr: Option<&Path>,
) -> Result<SecretBytes, CliError> {
    pass::confirm(
        &format!(
            "\nWARNING!\n========\nThis will overwrite data on {} irrevocably.\n",
            hdr.unwrap_or(dev).display()
        ),
        a.batch(),
    )?;
    match a
        .get("key-file")
        .or_else(|| a.pos.get(1).map(String::as_str))
    {
        Some(path) => pass::read_keyfile(
            path,
            a.num("keyfile-offset")?.unwrap_or(0),
            a.num("keyfile-size")?,
        ),
        None => pass::read_new(&format!("Enter passphrase for {}: ", dev.display()), true),
    }
}

/// luksFormat.
pub fn luks_format(a: &Args) -> Result<(), CliError> {
    let (dev, hdr) = device(a)?;
    let kind = a.get("type").unwrap_or("luks2");
    if kind == "luks1" {
        return crate::luks1cmd::format(a);
    }
    if kind != "luks2" && kind != "luks" {
        return Err(CliError::usage(format!("Unknown device type {kind}.")));
    }
    let cipher = a.get("cipher").unwrap_or("aes-xts-plain64").to_string();
    let spec =
        wrapcrypt_sector::CipherSpec::parse(&cipher).map_err(|e| CliError::usage(e.to_string()))?;
    let wrapped = spec.is_wrapped();
    let key_bits: usize = match a.num::<usize>("key-size")? {
        Some(b) => b,
        None if cipher.contains("-xts-") => 512,
        None => 256,
    };
    if !key_bits.is_multiple_of(8) || key_bits == 0 {
        return Err(CliError::usage("Key size must be a multiple of 8 bits"));
    }
    if !wrapped && !spec.key_len_valid(key_bits / 8) {
        return Err(CliError::usage(format!(
            "Cipher {cipher} (key size {key_bits} bits) is not available."
        )));
    }
    let mut params = FormatParams {
        cipher: cipher.clone(),
        key_size: key_bits / 8,
        hash: a.get("hash").unwrap_or("sha256").to_string(),
        sector_size: a.num("sector-size")?,
        metadata_size: a.size("luks2-metadata-size")?.unwrap_or(0x4000),
        keyslots_size: a.size("luks2-keyslots-size")?,
        data_offset: a.num::<u64>("offset")?.map(|s| s * 512),
        uuid: a.get("uuid").map(str::to_string),
        label: a.get("label").unwrap_or("").to_string(),
        subsystem: a.get("subsystem").unwrap_or("").to_string(),
        pbkdf: pbkdf_opts(a)?,
        keyslot: key_slot(a)?,
        flags: vec![],
        tokens: vec![],
    };
    if a.flag("allow-discards") {
        params.flags.push("allow-discards".into());
    }
    // A wrapped volume's key is made (or checked) by its provider before
    // anything is written.
    let wrapped_key = if wrapped {
        Some(crate::wrapped::format_key(a, &cipher, &mut params)?)
    } else {
        None
    };
    let passphrase = confirm_format_and_read_passphrase(a, dev, hdr)?;
    let key = match (wrapped_key, a.get("volume-key-file")) {
        (Some(k), _) => k.keep(),
        (None, Some(p)) => volume_key_file(p, params.key_size)?,
        (None, None) => SecretBytes::random(params.key_size)?,
    };
    format_luks2(dev, hdr, &params, &key, passphrase.expose_secret())?;
    Ok(())
}

/// luksAddKey.
pub fn add_key(a: &Args) -> Result<(), CliError> {
    let mut vol = load(a, true)?;
    vol.check_requirements()?;
    let pb = pbkdf_opts(a)?;
    let slot = a.num::<u32>("new-key-slot")?.or(key_slot(a)?);
    if a.flag("unbound") {
        let bits: usize = a
            .num("key-size")?
            .ok_or_else(|| CliError::usage("Key size is required with --unbound."))?;
        let key = match a.get("volume-key-file") {
            Some(p) => volume_key_file(p, bits / 8)?,
            None => SecretBytes::random(bits / 8)?,
        };
        let newp = new_passphrase(a, "Enter new passphrase for key slot: ", Some(1))?;
        vol.add_keyslot(&key, newp.expose_secret(), slot, &pb, true)?;
        return Ok(());
    }
    let key = match a.get("volume-key-file") {
        Some(p) => {
            let len = vol
                .key_size()
                .or(a.num::<usize>("key-size")?.map(|b| b / 8))
                .unwrap_or(64);
            let k = volume_key_file(p, len)?;
            if !vol.verify_volume_key(&k)? {
                return Err(VolumeError::VolumeKeyMismatch.into());
            }
            k
        }
        None => {
            let p = existing_passphrase(a, "Enter any existing passphrase: ", None)?;
            // The existing passphrase may be in any keyslot (-S names the new one).
            vol.unlock(p.expose_secret(), None, true)?.key
        }
    };
    let newp = new_passphrase(a, "Enter new passphrase for key slot: ", Some(1))?;
    vol.add_keyslot(&key, newp.expose_secret(), slot, &pb, false)?;
    Ok(())
}

/// luksRemoveKey.
pub fn remove_key(a: &Args) -> Result<(), CliError> {
    let mut vol = load(a, true)?;
    vol.check_requirements()?;
    let u = unlock_existing(a, &vol, "Enter passphrase to be deleted: ", Some(1))?;
    if vol.active_keyslots().len() == 1 {
        pass::confirm(
            "\nWARNING!\n========\nThis is the last keyslot. Device will become unusable after purging this key.\n",
            a.batch(),
        )?;
    }
    vol.remove_keyslot(u.keyslot)?;
    Ok(())
}

/// luksChangeKey.
pub fn change_key(a: &Args) -> Result<(), CliError> {
    let mut vol = load(a, true)?;
    vol.check_requirements()?;
    let u = unlock_existing(a, &vol, "Enter passphrase to be changed: ", None)?;
    let newp = new_passphrase(a, "Enter new passphrase: ", Some(1))?;
    let pb = pbkdf_opts(a)?;
    vol.change_keyslot(
        u.keyslot,
        &u.key,
        newp.expose_secret(),
        a.num("new-key-slot")?,
        &pb,
    )?;
    Ok(())
}

/// luksConvertKey: same passphrase, new KDF parameters.
pub fn convert_key(a: &Args) -> Result<(), CliError> {
    let mut vol = load(a, true)?;
    // LUKS1 keyslots have one KDF; cryptsetup refuses them here.
    vol.luks2_header()?;
    vol.check_requirements()?;
    let p = existing_passphrase(a, "Enter passphrase for keyslot to be converted: ", Some(1))?;
    let u = vol.unlock(p.expose_secret(), key_slot(a)?, false)?;
    let pb = pbkdf_opts(a)?;
    vol.change_keyslot(u.keyslot, &u.key, p.expose_secret(), Some(u.keyslot), &pb)?;
    Ok(())
}

/// luksKillSlot DEVICE SLOT.
pub fn kill_slot(a: &Args) -> Result<(), CliError> {
    let mut vol = load(a, true)?;
    vol.check_requirements()?;
    let slot: u32 = a
        .pos(1, "<key slot>")?
        .parse()
        .map_err(|_| CliError::usage("Invalid key slot number."))?;
    let max = if vol.version() == 1 {
        wrapcrypt_format::luks1::LUKS1_NUM_KEYSLOTS as u32
    } else {
        wrapcrypt_format::luks2::KEYSLOTS_MAX
    };
    if slot >= max {
        return Err(VolumeError::KeyslotInvalid(slot).into());
    }
    let active = vol.active_keyslots();
    if !active.contains(&slot) {
        return Err(VolumeError::KeyslotInactive(slot).into());
    }
    let last = active.len() == 1;
    if !a.batch() {
        if last {
            pass::confirm(
                "\nWARNING!\n========\nThis is the last keyslot. Device will become unusable after purging this key.\n",
                false,
            )?;
        } else {
            // cryptsetup asks for a remaining passphrase unless in batch mode.
            let p = existing_passphrase(a, "Enter any remaining passphrase: ", Some(2))?;
            let u = vol.unlock(p.expose_secret(), None, false)?;
            if u.keyslot == slot {
                return Err(CliError::usage(
                    "Cannot verify with the passphrase of the keyslot being killed.",
                ));
            }
        }
    }
    vol.remove_keyslot(slot)?;
    Ok(())
}

/// erase / luksErase: removes every keyslot.
pub fn erase(a: &Args) -> Result<(), CliError> {
    let mut vol = load(a, true)?;
    pass::confirm(
        &format!(
            "\nWARNING!\n========\nThis operation will erase all keyslots on device {}.\nDevice will become unusable after this operation.\n",
            a.pos(0, "<device>")?
        ),
        a.batch(),
    )?;
    let ids: Vec<u32> = vol.active_keyslots();
    for id in ids {
        vol.remove_keyslot(id)?;
    }
    Ok(())
}
