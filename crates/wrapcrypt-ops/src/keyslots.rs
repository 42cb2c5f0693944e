//! Volumes and their keyslots: luksFormat (LUKS1 and LUKS2, clear or
//! wrapped key), luksAddKey, luksRemoveKey, luksChangeKey, luksKillSlot,
//! luksConvertKey and erase, with cryptsetup's checks, confirmations and
//! messages. Passphrases and confirmations come from the [`Prompter`].

use std::path::Path;

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::CipherSpec;
use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::format::{
    format_luks1, format_luks2_with_progress, FormatParams, Luks1FormatParams,
};
use wrapcrypt_volume::{PbkdfOptions, Unlocked, Volume, VolumeError};

use crate::error::OpsError;
use crate::progress::{self, Progress, Silent};
use crate::wrapped::{self, KeyFile, ProviderChoice};

const LAST_KEYSLOT: &str = "\nWARNING!\n========\nThis is the last keyslot. Device will become unusable after purging this key.\n";

/// What luksFormat is asked to make.
pub struct FormatOptions<'a> {
    /// The data device (or image file).
    pub device: &'a Path,
    /// A detached header.
    pub header: Option<&'a Path>,
    /// `--type`: luks, luks1, luks2 (default luks2).
    pub kind: Option<&'a str>,
    /// `--cipher` (default aes-xts-plain64).
    pub cipher: Option<&'a str>,
    /// `--key-size` in bits.
    pub key_bits: Option<usize>,
    /// `--sector-size`.
    pub sector_size: Option<u32>,
    /// `--luks2-metadata-size`.
    pub metadata_size: Option<u64>,
    /// `--luks2-keyslots-size`.
    pub keyslots_size: Option<u64>,
    /// `--offset`, in 512-byte sectors.
    pub offset_sectors: Option<u64>,
    /// `--align-payload` (LUKS1), in 512-byte sectors.
    pub align_payload: Option<u64>,
    /// `--uuid`.
    pub uuid: Option<&'a str>,
    /// `--label`.
    pub label: Option<&'a str>,
    /// `--subsystem`.
    pub subsystem: Option<&'a str>,
    /// `--pbkdf*`, `--iter-time`, `--hash`.
    pub pbkdf: PbkdfOptions,
    /// `--key-slot`.
    pub key_slot: Option<u32>,
    /// `--allow-discards` stored as a persistent flag.
    pub allow_discards: bool,
    /// `--volume-key-file` as read.
    pub volume_key: Option<KeyFile<'a>>,
    /// The provider of a wrapped key.
    pub provider: ProviderChoice<'a>,
}

/// The cipher (default aes-xts-plain64), its spec and the key size in
/// bits (default 512 for XTS, else 256), checked as cryptsetup does; a
/// wrapped cipher's key size is its provider's business.
fn cipher_and_bits(opts: &FormatOptions) -> Result<(String, CipherSpec, usize), OpsError> {
    let cipher = opts.cipher.unwrap_or("aes-xts-plain64").to_string();
    let spec = CipherSpec::parse(&cipher).map_err(|e| OpsError::usage(e.to_string()))?;
    let bits = match opts.key_bits {
        Some(b) => b,
        None if cipher.contains("-xts-") => 512,
        None => 256,
    };
    if !bits.is_multiple_of(8) || bits == 0 {
        return Err(OpsError::usage("Key size must be a multiple of 8 bits"));
    }
    if !spec.is_wrapped() && !spec.key_len_valid(bits / 8) {
        return Err(OpsError::usage(format!(
            "Cipher {cipher} (key size {bits} bits) is not available."
        )));
    }
    Ok((cipher, spec, bits))
}

fn exact_key(k: &KeyFile, len: usize) -> Result<SecretBytes, OpsError> {
    if k.bytes.len() != len {
        return Err(OpsError::usage(format!(
            "Cannot read {len} bytes from volume key file {}.",
            k.path
        )));
    }
    Ok(SecretBytes::copy_from(k.bytes.expose_secret()))
}

/// luksFormat's overwrite confirmation, then the first passphrase.
fn confirm_and_passphrase(
    opts: &FormatOptions,
    prompter: &mut dyn Prompter,
) -> Result<SecretBytes, OpsError> {
    prompter.confirm(&format!(
        "\nWARNING!\n========\nThis will overwrite data on {} irrevocably.\n",
        opts.header.unwrap_or(opts.device).display()
    ))?;
    Ok(prompter.new_secret(&format!("Enter passphrase for {}: ", opts.device.display()))?)
}

/// luksFormat.
pub fn format(opts: &FormatOptions, prompter: &mut dyn Prompter) -> Result<(), OpsError> {
    format_with_progress(opts, prompter, &mut Silent)
}

/// luksFormat, reporting the wipe of the new header's metadata and
/// keyslots area (LUKS2; the LUKS1 wipe is a few hundred KiB and silent).
pub fn format_with_progress(
    opts: &FormatOptions,
    prompter: &mut dyn Prompter,
    progress: &mut dyn Progress,
) -> Result<(), OpsError> {
    let kind = opts.kind.unwrap_or("luks2");
    if kind == "luks1" {
        return format1(opts, prompter);
    }
    if kind != "luks2" && kind != "luks" {
        return Err(OpsError::usage(format!("Unknown device type {kind}.")));
    }
    let (cipher, spec, bits) = cipher_and_bits(opts)?;
    let wrapped = spec.is_wrapped();
    let mut params = FormatParams {
        cipher: cipher.clone(),
        key_size: bits / 8,
        hash: opts.pbkdf.hash.clone().unwrap_or_else(|| "sha256".into()),
        sector_size: opts.sector_size,
        metadata_size: opts.metadata_size.unwrap_or(0x4000),
        keyslots_size: opts.keyslots_size,
        data_offset: opts.offset_sectors.map(|s| s * 512),
        uuid: opts.uuid.map(str::to_string),
        label: opts.label.unwrap_or("").to_string(),
        subsystem: opts.subsystem.unwrap_or("").to_string(),
        pbkdf: opts.pbkdf.clone(),
        keyslot: opts.key_slot,
        flags: vec![],
        tokens: vec![],
    };
    if opts.allow_discards {
        params.flags.push("allow-discards".into());
    }
    // A wrapped volume's key is made (or checked) by its provider before
    // anything is written.
    let wrapped_key = if wrapped {
        Some(wrapped::format_key(
            &cipher,
            opts.provider,
            opts.volume_key,
            opts.key_bits,
            &mut params,
        )?)
    } else {
        None
    };
    write_new(opts, Layout::Luks2(params), wrapped_key, prompter, progress)
}

/// A new header's parameters.
enum Layout {
    Luks1(Luks1FormatParams),
    Luks2(FormatParams),
}

/// Both formats' end: confirm, read the first passphrase, choose the key
/// (the provider's, the key file's, or random), write.
fn write_new(
    opts: &FormatOptions,
    layout: Layout,
    wrapped: Option<wrapped::FormatKey>,
    prompter: &mut dyn Prompter,
    progress: &mut dyn Progress,
) -> Result<(), OpsError> {
    let passphrase = confirm_and_passphrase(opts, prompter)?;
    let len = match &layout {
        Layout::Luks1(p) => p.key_size,
        Layout::Luks2(p) => p.key_size,
    };
    let key = match (wrapped, &opts.volume_key) {
        (Some(k), _) => k.keep(),
        (None, Some(k)) => exact_key(k, len)?,
        (None, None) => SecretBytes::random(len)?,
    };
    let (dev, hdr, pass) = (opts.device, opts.header, passphrase.expose_secret());
    let target = hdr.unwrap_or(dev);
    if log::log_enabled!(log::Level::Info) {
        for _ in 0..luks_signatures(target) {
            log::info!(
                "Existing 'crypto_LUKS' superblock signature on device {} will be wiped.",
                target.display()
            );
        }
    }
    let vol = match &layout {
        Layout::Luks1(p) => format_luks1(dev, hdr, p, &key, pass)?,
        Layout::Luks2(p) => {
            let mut hook = progress::as_fn(progress);
            format_luks2_with_progress(dev, hdr, p, &key, pass, &mut hook)?
        }
    };
    for slot in vol.active_keyslots() {
        log::info!("Key slot {slot} created.");
    }
    Ok(())
}

/// How many LUKS signatures blkid would find (and cryptsetup wipe, one
/// message each) on `path`: the primary magic at 0 and LUKS2 secondary
/// magics at the offsets a secondary header can have.
fn luks_signatures(path: &Path) -> usize {
    use std::os::unix::fs::FileExt;
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    let magic_at = |off: u64, m: &[u8; 6]| {
        let mut b = [0u8; 6];
        f.read_exact_at(&mut b, off).is_ok() && &b == m
    };
    let primary = usize::from(magic_at(0, b"LUKS\xba\xbe"));
    let secondaries = (14..=22)
        .filter(|&shift| magic_at(1u64 << shift, b"SKUL\xba\xbe"))
        .count();
    primary + secondaries
}

/// luksFormat --type luks1.
fn format1(opts: &FormatOptions, prompter: &mut dyn Prompter) -> Result<(), OpsError> {
    let (cipher, spec, bits) = cipher_and_bits(opts)?;
    if spec.is_wrapped() {
        return Err(OpsError::usage(format!(
            "Cipher {cipher} needs LUKS2 (its volume key is a wrapped-key blob)."
        )));
    }
    if opts.sector_size.is_some_and(|s| s != 512) {
        return Err(OpsError::usage("Unsupported encryption sector size."));
    }
    if opts.pbkdf.kind.as_deref().is_some_and(|k| k != "pbkdf2") {
        return Err(OpsError::usage(
            "Requested PBKDF type is not supported for LUKS1.",
        ));
    }
    let params = Luks1FormatParams {
        cipher,
        key_size: bits / 8,
        hash: opts.pbkdf.hash.clone().unwrap_or_else(|| "sha256".into()),
        align_payload: opts.align_payload,
        offset: opts.offset_sectors,
        uuid: opts.uuid.map(str::to_string),
        pbkdf: opts.pbkdf.clone(),
        keyslot: opts.key_slot,
    };
    write_new(opts, Layout::Luks1(params), None, prompter, &mut Silent)
}

/// What luksAddKey adds.
#[derive(Default)]
pub struct AddKeyOptions<'a> {
    /// `--new-key-slot` (or `--key-slot`): the new keyslot.
    pub new_slot: Option<u32>,
    /// `--unbound`: a keyslot of a new key not bound to the segment.
    pub unbound: bool,
    /// `--key-size` in bits (required with `--unbound`).
    pub key_bits: Option<usize>,
    /// `--volume-key-file` as read: authorises instead of a passphrase.
    pub volume_key: Option<KeyFile<'a>>,
    /// The new keyslot's PBKDF.
    pub pbkdf: PbkdfOptions,
}

/// luksAddKey: returns the new keyslot.
pub fn add_key(
    vol: &mut Volume,
    opts: &AddKeyOptions,
    prompter: &mut dyn Prompter,
) -> Result<u32, OpsError> {
    vol.check_requirements()?;
    let new_prompt = "Enter new passphrase for key slot: ";
    if opts.unbound {
        let bits = opts
            .key_bits
            .ok_or_else(|| OpsError::usage("Key size is required with --unbound."))?;
        let key = match &opts.volume_key {
            Some(k) => exact_key(k, bits / 8)?,
            None => SecretBytes::random(bits / 8)?,
        };
        let newp = prompter.new_secret(new_prompt)?;
        let slot = vol.add_keyslot(&key, newp.expose_secret(), opts.new_slot, &opts.pbkdf, true)?;
        log::info!("Key slot {slot} created.");
        return Ok(slot);
    }
    let key = match &opts.volume_key {
        Some(k) => {
            let len = vol
                .key_size()
                .or(opts.key_bits.map(|b| b / 8))
                .unwrap_or(64);
            let k = exact_key(k, len)?;
            if !vol.verify_volume_key(&k)? {
                return Err(VolumeError::VolumeKeyMismatch.into());
            }
            k
        }
        None => {
            let p = prompter.passphrase("Enter any existing passphrase: ")?;
            // The existing passphrase may be in any keyslot (-S names the new one).
            vol.unlock(p.expose_secret(), None, true)?.key
        }
    };
    let newp = prompter.new_secret(new_prompt)?;
    let slot = vol.add_keyslot(
        &key,
        newp.expose_secret(),
        opts.new_slot,
        &opts.pbkdf,
        false,
    )?;
    log::info!("Key slot {slot} created.");
    Ok(slot)
}

fn unlock_existing(
    vol: &Volume,
    prompt: &str,
    key_slot: Option<u32>,
    prompter: &mut dyn Prompter,
) -> Result<(Unlocked, SecretBytes), OpsError> {
    let p = prompter.passphrase(prompt)?;
    let u = vol.unlock(p.expose_secret(), key_slot, false)?;
    log::debug!("Keyslot {} unlocked by passphrase.", u.keyslot);
    Ok((u, p))
}

/// luksRemoveKey: returns the removed keyslot.
pub fn remove_key(
    vol: &mut Volume,
    key_slot: Option<u32>,
    prompter: &mut dyn Prompter,
) -> Result<u32, OpsError> {
    vol.check_requirements()?;
    let (u, _) = unlock_existing(vol, "Enter passphrase to be deleted: ", key_slot, prompter)?;
    log::info!("Key slot {} unlocked.", u.keyslot);
    if vol.active_keyslots().len() == 1 {
        prompter.confirm(LAST_KEYSLOT)?;
    }
    log::info!("Keyslot {} is selected for deletion.", u.keyslot);
    vol.remove_keyslot(u.keyslot)?;
    log::info!("Key slot {} removed.", u.keyslot);
    Ok(u.keyslot)
}

/// luksChangeKey: returns the keyslot holding the new passphrase.
pub fn change_key(
    vol: &mut Volume,
    key_slot: Option<u32>,
    new_slot: Option<u32>,
    pbkdf: &PbkdfOptions,
    prompter: &mut dyn Prompter,
) -> Result<u32, OpsError> {
    vol.check_requirements()?;
    let (u, _) = unlock_existing(vol, "Enter passphrase to be changed: ", key_slot, prompter)?;
    log::info!("Key slot {} unlocked.", u.keyslot);
    let newp = prompter.new_secret("Enter new passphrase: ")?;
    let slot = vol.change_keyslot(u.keyslot, &u.key, newp.expose_secret(), new_slot, pbkdf)?;
    log::info!("Key slot {slot} created.");
    Ok(slot)
}

/// luksConvertKey: same passphrase, new KDF parameters.
pub fn convert_key(
    vol: &mut Volume,
    key_slot: Option<u32>,
    pbkdf: &PbkdfOptions,
    prompter: &mut dyn Prompter,
) -> Result<u32, OpsError> {
    // LUKS1 keyslots have one KDF; cryptsetup refuses them here.
    vol.luks2_header()?;
    vol.check_requirements()?;
    let (u, p) = unlock_existing(
        vol,
        "Enter passphrase for keyslot to be converted: ",
        key_slot,
        prompter,
    )?;
    let slot = vol.change_keyslot(u.keyslot, &u.key, p.expose_secret(), Some(u.keyslot), pbkdf)?;
    log::info!("Key slot {slot} created.");
    Ok(slot)
}

/// luksKillSlot: wipes `slot`. Outside batch mode (or with a key file, as
/// the CLI passes `batch` false then) cryptsetup asks for a remaining
/// passphrase (or, for the last keyslot, a confirmation).
pub fn kill_slot(
    vol: &mut Volume,
    slot: u32,
    batch: bool,
    prompter: &mut dyn Prompter,
) -> Result<(), OpsError> {
    vol.check_requirements()?;
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
    log::info!("Keyslot {slot} is selected for deletion.");
    if !batch {
        if active.len() == 1 {
            prompter.confirm(LAST_KEYSLOT)?;
        } else {
            let p = prompter.passphrase("Enter any remaining passphrase: ")?;
            let u = vol.unlock(p.expose_secret(), None, false)?;
            if u.keyslot == slot {
                return Err(OpsError::usage(
                    "Cannot verify with the passphrase of the keyslot being killed.",
                ));
            }
            log::info!("Key slot {} unlocked.", u.keyslot);
        }
    }
    vol.remove_keyslot(slot)?;
    log::info!("Key slot {slot} removed.");
    Ok(())
}

/// erase / luksErase: removes every keyslot.
pub fn erase(vol: &mut Volume, device: &str, prompter: &mut dyn Prompter) -> Result<(), OpsError> {
    prompter.confirm(&format!(
        "\nWARNING!\n========\nThis operation will erase all keyslots on device {device}.\nDevice will become unusable after this operation.\n"
    ))?;
    for id in vol.active_keyslots() {
        vol.remove_keyslot(id)?;
        log::info!("Key slot {id} removed.");
    }
    Ok(())
}
