//! reencrypt --encrypt: a plaintext device becomes LUKS2 in place, with a
//! detached header (cryptsetup's `reencrypt --encrypt --header FILE`) or
//! with the header at its start and the data shifted
//! (`--reduce-device-size`).
//! Every refusal comes before anything is written.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::reencrypt::{self, EncryptInitOptions, ResumeOptions};
use wrapcrypt_volume::Volume;

use super::{map, resilience, ReencryptOptions, ReencryptOutcome};
use crate::error::OpsError;
use crate::progress::Progress;
use wrapcrypt_volume::reencrypt::InitResilience;

/// The options only `--encrypt` takes.
#[derive(Debug, Default, Clone, Copy)]
pub struct EncryptOptions<'a> {
    /// `--header`: the detached header file (created if missing).
    pub header: Option<&'a Path>,
    /// `--reduce-device-size` in bytes (data offset and shift: half of it).
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
    if enc.header.is_some() && enc.reduce_device_size.is_some() {
        return Err(OpsError::usage(
            "reencrypt --encrypt --header with --reduce-device-size (a data shift with a detached header) is not supported.",
        ));
    }
    if enc.header.is_none() && enc.reduce_device_size.is_none() {
        return Err(OpsError::usage(
            "Encryption without detached header (--header) is not possible without data device size reduction (--reduce-device-size).",
        ));
    }
    if enc
        .reduce_device_size
        .is_some_and(|r| !r.is_multiple_of(512))
    {
        return Err(OpsError::usage(
            "Reduce size must be multiple of 512 bytes sector.",
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
    let res = match enc.reduce_device_size {
        // With a data shift cryptsetup writes `datashift` whatever
        // --resilience says (checksum, journal, none, datashift).
        Some(_) => match opts.resilience.unwrap_or("checksum") {
            "checksum" | "journal" | "none" | "datashift" => InitResilience::None,
            other => {
                return Err(OpsError::usage(format!(
                    "Unsupported resilience mode {other}"
                )))
            }
        },
        None => resilience(opts)?,
    };
    if let Some(b) = opts.key_bits {
        if b == 0 || b % 8 != 0 {
            return Err(OpsError::usage("Key size must be a multiple of 8 bits"));
        }
    }
    for p in std::iter::once(opts.device).chain(enc.header) {
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
    let target = enc.header.unwrap_or(opts.device);
    prompter.confirm(&if enc.header.is_none() || target.exists() {
        format!(
            "\nWARNING!\n========\nThis will overwrite data on {} irrevocably.\n",
            target.display()
        )
    } else {
        "\nWARNING!\n========\nHeader file does not exist, do you want to create it?\n".into()
    })?;
    let pass = prompter.new_secret(&format!("Enter passphrase for {}: ", target.display()))?;
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
    let (mut vol, keys) = match (enc.header, enc.reduce_device_size) {
        (Some(header), _) => reencrypt::init_encrypt(opts.device, header, &init),
        (None, Some(reduce)) => reencrypt::init_encrypt_shift(opts.device, &init, reduce),
        (None, None) => unreachable!("refused above"),
    }
    .map_err(map)?;
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
