//! reencrypt --encrypt: a plaintext device becomes LUKS2 in place with a
//! detached header (cryptsetup's `reencrypt --encrypt --header FILE`).
//! Every refusal comes before anything is written.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::reencrypt::{self, EncryptInitOptions, ResumeOptions};
use wrapcrypt_volume::Volume;

use super::{map, resilience, ReencryptOptions, ReencryptOutcome};
use crate::error::OpsError;
use crate::progress::Progress;

/// The options only `--encrypt` takes.
#[derive(Debug, Default, Clone, Copy)]
pub struct EncryptOptions<'a> {
    /// `--header`: the detached header file (created if missing).
    pub header: Option<&'a Path>,
    /// `--reduce-device-size` in bytes (data shift; not done yet).
    pub reduce_device_size: Option<u64>,
    /// `--uuid`.
    pub uuid: Option<&'a str>,
    /// `--label`.
    pub label: Option<&'a str>,
    /// `--subsystem`.
    pub subsystem: Option<&'a str>,
}

/// Whether `path` holds a LUKS header (either copy).
fn is_luks(path: &Path) -> bool {
    path.exists() && Volume::open(path, None, false).is_ok()
}

/// `reencrypt --encrypt`: init (the new header), then run unless
/// `--init-only`.
pub fn encrypt<'a>(
    opts: &ReencryptOptions,
    enc: &EncryptOptions,
    prompter: &mut dyn Prompter,
    progress: Option<&'a mut dyn Progress>,
    stop: Option<&'a AtomicBool>,
) -> Result<ReencryptOutcome, OpsError> {
    let Some(header) = enc.header else {
        if enc.reduce_device_size.is_some() {
            return Err(OpsError::usage(
                "reencrypt --encrypt --reduce-device-size (data shift) is not supported yet; use a detached header (--header).",
            ));
        }
        return Err(OpsError::usage(
            "Encryption without detached header (--header) is not possible without data device size reduction (--reduce-device-size).",
        ));
    };
    if enc.reduce_device_size.is_some() {
        return Err(OpsError::usage(
            "reencrypt --encrypt --reduce-device-size (data shift) is not supported yet.",
        ));
    }
    if opts.init_only && opts.resume_only {
        return Err(OpsError::usage(
            "Options --init-only and --resume-only cannot be combined.",
        ));
    }
    if opts.hotzone_size.is_some_and(|h| h < 4096) {
        return Err(OpsError::usage(
            "Invalid --hotzone-size value: at least 4096 bytes.",
        ));
    }
    if opts.key_slot.is_some_and(|k| k != 0) {
        return Err(OpsError::usage(
            "reencrypt --encrypt puts the new key in keyslot 0.",
        ));
    }
    let res = resilience(opts)?;
    if let Some(b) = opts.key_bits {
        if b == 0 || b % 8 != 0 {
            return Err(OpsError::usage("Key size must be a multiple of 8 bits"));
        }
    }
    for p in [opts.device, header] {
        if is_luks(p) {
            return Err(OpsError::usage(format!(
                "Device {} is already LUKS device. Aborting operation.",
                p.display()
            )));
        }
    }
    if !opts.device.exists() {
        return Err(OpsError::Volume(wrapcrypt_volume::VolumeError::Device {
            path: opts.device.display().to_string(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }));
    }
    prompter.confirm(&if header.exists() {
        format!(
            "\nWARNING!\n========\nThis will overwrite data on {} irrevocably.\n",
            header.display()
        )
    } else {
        "\nWARNING!\n========\nHeader file does not exist, do you want to create it?\n".into()
    })?;
    let pass = prompter.new_secret(&format!("Enter passphrase for {}: ", header.display()))?;
    let init = EncryptInitOptions {
        passphrase: pass.expose_secret(),
        cipher: opts.cipher.map(str::to_string),
        key_size: opts.key_bits.map(|b| b / 8),
        sector_size: opts.sector_size,
        resilience: res,
        pbkdf: opts.pbkdf.clone(),
        uuid: enc.uuid.map(str::to_string),
        label: enc.label.unwrap_or("").to_string(),
        subsystem: enc.subsystem.unwrap_or("").to_string(),
    };
    let (mut vol, keys) = reencrypt::init_encrypt(opts.device, header, &init).map_err(map)?;
    if opts.init_only {
        return Ok(ReencryptOutcome::Initialized);
    }
    let mut hook = progress.map(crate::progress::as_fn);
    let done = reencrypt::resume(
        &mut vol,
        &keys,
        ResumeOptions {
            hotzone_size: opts.hotzone_size,
            progress: hook.as_mut().map(|f| f as &mut dyn FnMut(u64, u64)),
            stop,
            wrapped: None,
            online: None,
        },
    )
    .map_err(map)?;
    Ok(ReencryptOutcome::Finished(done))
}
