//! `convert --cipher waes-xts-plain64`: a clear-key `aes-xts-plain64`
//! volume becomes a wrapped one without re-encrypting data. The clear key
//! is imported into the provider, equal verification patterns are proven,
//! and the header is rewritten (same UUID, same data offset) after a
//! header backup.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use wrapcrypt_provider::KeySpec;
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::rewrap::RewrapError;
use wrapcrypt_volume::{ExitClass, Volume, VolumeError};

use crate::error::OpsError;
use crate::keyholders::{confirm_drop, segment_cipher, unlock_all};
use crate::providers;
use crate::wrapped::{MadeKey, ProviderChoice};

/// What convert is asked to do.
pub struct ConvertOptions<'a> {
    /// The device as named (for prompts and messages).
    pub device: &'a str,
    /// The target cipher (only `waes-xts-plain64`).
    pub cipher: &'a str,
    /// `--header-backup-file`; default `DEVICE.wrapcrypt-convert.bak`
    /// beside an image file.
    pub backup: Option<&'a str>,
    /// `--key-slot` of the first passphrase.
    pub key_slot: Option<u32>,
    /// The provider to import into.
    pub provider: ProviderChoice<'a>,
}

/// What convert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// The provider's name.
    pub provider: String,
    /// The verification pattern (the clear key's, proven equal).
    pub vp: String,
    /// Where the header backup went.
    pub backup: String,
    /// Keyslots re-sealed with the blob.
    pub keyslots: Vec<u32>,
    /// Keyslots removed (no passphrase given).
    pub removed: Vec<u32>,
}

/// Where convert writes its header backup: the option, else
/// `DEVICE.wrapcrypt-convert.bak` beside an image file (a block device
/// needs the option: /dev is no place for backups).
fn backup_path(opt: Option<&str>, vol: &Volume) -> Result<String, OpsError> {
    if let Some(f) = opt {
        return Ok(f.to_string());
    }
    if vol.meta_device().is_block() {
        return Err(OpsError::usage(
            "Converting a block device needs --header-backup-file FILE (on another device).",
        ));
    }
    Ok(format!(
        "{}.wrapcrypt-convert.bak",
        vol.meta_device().path().display()
    ))
}

fn write_backup(vol: &Volume, path: &str) -> Result<(), OpsError> {
    let h = vol.luks2_header()?;
    let len = h.meta.keyslots_end(h.hdr_size) as usize;
    let data = vol
        .meta_device()
        .read_at(0, len)
        .map_err(|e| VolumeError::Io {
            op: "reading header",
            path: vol.meta_device().path().display().to_string(),
            source: e,
        })?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(|e| {
            OpsError::refused(
                ExitClass::WrongDevice,
                format!("Cannot create header backup file {path}: {e}"),
            )
        })?;
    f.write_all(&data)?;
    f.sync_all()?;
    if let Some(d) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// Runs convert on a volume opened for writing.
pub fn convert(
    mut vol: Volume,
    opts: &ConvertOptions,
    prompter: &mut dyn Prompter,
) -> Result<Converted, OpsError> {
    let (dev, cipher) = (opts.device, opts.cipher);
    if cipher != "waes-xts-plain64" {
        return Err(OpsError::usage(format!(
            "convert --cipher {cipher}: only waes-xts-plain64 (from aes-xts-plain64) is supported."
        )));
    }
    vol.check_requirements()?;
    let h = vol.luks2_header()?.clone();
    let found = segment_cipher(&h);
    if found != wrapcrypt_volume::wrap_convert::CONVERTIBLE {
        return Err(OpsError::usage(format!(
            "Cannot convert {dev}: its cipher is {found}; only aes-xts-plain64 volumes convert to {cipher} without re-encryption."
        )));
    }
    let backup = backup_path(opts.backup, &vol)?;
    prompter.confirm(&format!("\nWARNING!\n========\nThis converts {dev} to {cipher}: the volume key moves into the key provider.\nA header backup goes to {backup} first.\n"))?;
    write_backup(&vol, &backup)?;
    prompter.warn(&format!("Header backup written to {backup}. It holds the clear volume key under the old passphrases: keep it safe, and destroy it once the converted volume is checked."));
    let un = unlock_all(&vol, dev, opts.key_slot, prompter)?;
    let (prov, name, locator) =
        providers::from_option(opts.provider.key_provider, opts.provider.pin)?;
    let wkb = prov.import(un.key(), &KeySpec::aes_256_xts())?;
    // Until the header write starts, a failure takes the imported key out
    // of the provider again.
    let made = MadeKey::new(&prov, &wkb);
    let vp = prov.verification_pattern(&wkb)?;
    let clear_vp = wrapcrypt_provider::clear_key_vp(un.key())?;
    if !vp.eq_ignore_ascii_case(&clear_vp) {
        return Err(RewrapError::VpMismatch {
            expected: clear_vp,
            got: vp,
        }
        .into());
    }
    let drop = confirm_drop(prompter, &un.skipped, "now")?;
    let mut tokens = providers::tokens(&name, locator.as_deref(), &vp)?;
    providers::note_wrapping_key(&mut tokens, &wkb);
    let tokens: Vec<serde_json::Value> = tokens.iter().map(|t| t.to_json()).collect();
    let blob = SecretBytes::copy_from(&wkb.encode());
    made.keep();
    let done = wrapcrypt_volume::wrap_convert::convert_to_wrapped(
        &mut vol,
        cipher,
        &blob,
        &un.passes(),
        &tokens,
        drop,
    )?;
    Ok(Converted {
        provider: name,
        vp,
        backup,
        keyslots: done.keyslots,
        removed: done.removed,
    })
}
