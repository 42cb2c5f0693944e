//! reencrypt: offline key change (and cipher / key size / sector size
//! change) of a LUKS2 volume, cryptsetup's `reencrypt` with `--init-only`,
//! `--resume-only`, `--resilience checksum|journal|none`, `--hotzone-size`
//! and `--key-slot`. Every option is checked before anything is written.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::reencrypt::{
    self, Finished, InitOptions, InitResilience, ReencryptError, ReencryptKeys, ResumeOptions,
};
use wrapcrypt_volume::{PbkdfOptions, Volume, VolumeError};

use crate::error::OpsError;
use crate::progress::Progress;
use crate::wrapped::ProviderChoice;
use wrapcrypt_volume::ExitClass;

mod encrypt;
pub(crate) mod wrapped;

pub use encrypt::{encrypt, EncryptOptions};

/// What `reencrypt` is asked to do.
pub struct ReencryptOptions<'a> {
    /// The device (for messages).
    pub device: &'a Path,
    /// `--init-only`: write the initial metadata and stop.
    pub init_only: bool,
    /// `--resume-only`: only finish a reencryption already in the header.
    pub resume_only: bool,
    /// `--key-slot`.
    pub key_slot: Option<u32>,
    /// `--hotzone-size` in bytes.
    pub hotzone_size: Option<u64>,
    /// `--resilience` (default checksum).
    pub resilience: Option<&'a str>,
    /// `--resilience-hash` (default sha256).
    pub resilience_hash: Option<&'a str>,
    /// `--cipher`.
    pub cipher: Option<&'a str>,
    /// `--key-size` in bits.
    pub key_bits: Option<usize>,
    /// `--sector-size`.
    pub sector_size: Option<u32>,
    /// KDF of the new keyslot.
    pub pbkdf: PbkdfOptions,
    /// The passphrase comes from a key file (not a prompt).
    pub key_file: bool,
    /// `--encrypt` / `--decrypt` asked for (not supported yet).
    pub mode_change: Option<&'static str>,
    /// `--key-provider` and PIN: where a wrapped-key target's new key is
    /// generated, and the PIN of a PKCS#11 provider on either side.
    pub provider: ProviderChoice<'a>,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReencryptOutcome {
    /// Metadata initialized, no data moved (`--init-only`).
    Initialized,
    /// The reencryption finished.
    Finished(Finished),
}

pub(crate) fn map(e: ReencryptError) -> OpsError {
    match e {
        ReencryptError::Volume(v) => OpsError::Volume(v),
        ReencryptError::NotInReencryption => {
            OpsError::usage("Device reencryption not in progress.")
        }
        ReencryptError::Busy => {
            OpsError::refused(ExitClass::Busy, ReencryptError::Busy.to_string())
        }
        other => OpsError::usage(other.to_string()),
    }
}

fn resilience(opts: &ReencryptOptions) -> Result<InitResilience, OpsError> {
    let hash = opts.resilience_hash.unwrap_or("sha256");
    match opts.resilience.unwrap_or("checksum") {
        "checksum" => {
            wrapcrypt_format::hash::HashAlg::from_name(hash).map_err(|_| {
                OpsError::usage(format!("Hash algorithm {hash} is not available."))
            })?;
            Ok(InitResilience::Checksum { hash: hash.into() })
        }
        "journal" => Ok(InitResilience::Journal),
        "none" => Ok(InitResilience::None),
        "datashift" | "datashift-checksum" | "datashift-journal" => Err(OpsError::usage(
            format!(
                "Resilience mode {} needs a data shift: wrapcrypt shifts data only for --encrypt --reduce-device-size (which takes datashift whatever --resilience says).",
                opts.resilience.unwrap_or_default()
            ),
        )),
        other => Err(OpsError::usage(format!("Unsupported resilience mode {other}"))),
    }
}

/// `reencrypt`: init (unless `--resume-only`), then run (unless
/// `--init-only`).
pub fn reencrypt<'a>(
    vol: &mut Volume,
    opts: &ReencryptOptions,
    prompter: &mut dyn Prompter,
    progress: Option<&'a mut dyn Progress>,
    stop: Option<&'a AtomicBool>,
) -> Result<ReencryptOutcome, OpsError> {
    let Some(keys) = start(vol, opts, prompter)? else {
        return Ok(ReencryptOutcome::Initialized);
    };
    let provs = wrapped::Providers::new(vol.luks2_header()?, opts.provider);
    let mut hook = progress.map(crate::progress::as_fn);
    let done = reencrypt::resume(
        vol,
        &keys,
        ResumeOptions {
            hotzone_size: opts.hotzone_size,
            progress: hook.as_mut().map(|f| f as &mut dyn FnMut(u64, u64)),
            stop,
            wrapped: Some(&provs),
            online: None,
        },
    )
    .map_err(map)?;
    Ok(ReencryptOutcome::Finished(done))
}

/// Checks the options, initializes the reencryption unless the header
/// already records one, and unlocks both keys; `None` after `--init-only`.
pub(crate) fn start(
    vol: &mut Volume,
    opts: &ReencryptOptions,
    prompter: &mut dyn Prompter,
) -> Result<Option<ReencryptKeys>, OpsError> {
    let decrypt = opts.mode_change == Some("--decrypt");
    if let Some(m) = opts.mode_change.filter(|_| !decrypt) {
        return Err(OpsError::usage(format!(
            "reencrypt {m} is not supported yet; only key, cipher and sector size changes are."
        )));
    }
    if decrypt && !vol.is_detached() {
        return Err(OpsError::usage(
            "LUKS2 decryption requires --header option.",
        ));
    }
    if opts.init_only && opts.resume_only {
        return Err(OpsError::usage(
            "Options --init-only and --resume-only cannot be combined.",
        ));
    }
    // The engine rounds a hotzone down to its alignment (4096 bytes for
    // checksums); less than that is refused before anything is written.
    if opts.hotzone_size.is_some_and(|h| h < 4096) {
        return Err(OpsError::usage(
            "Invalid --hotzone-size value: at least 4096 bytes.",
        ));
    }
    // Options first: nothing is written if one is wrong.
    let res = resilience(opts)?;
    if vol.version() == 1 {
        if opts.resume_only {
            return Err(OpsError::usage("Device reencryption not in progress."));
        }
        return Err(OpsError::usage(format!(
            "Device {} is a LUKS1 device; wrapcrypt reencrypts LUKS2 only (convert it first: wrapcrypt convert --type luks2 {}).",
            opts.device.display(),
            opts.device.display()
        )));
    }
    let in_progress = reencrypt::state(vol).map_err(map)?;
    if opts.resume_only && in_progress.is_none() {
        return Err(OpsError::usage("Device reencryption not in progress."));
    }
    if in_progress.is_some() && !opts.resume_only && opts.init_only {
        return Err(OpsError::usage(
            "LUKS2 reencryption already initialized in metadata.",
        ));
    }
    let prompt = format!("Enter passphrase for {}: ", opts.device.display());
    let keys = if in_progress.is_some() {
        let pass = prompter.passphrase(&prompt)?;
        reencrypt::unlock_keys(vol, pass.expose_secret(), opts.key_slot).map_err(map)?
    } else {
        if decrypt {
            let pass = prompter.passphrase(&prompt)?;
            let keys = reencrypt::init_decrypt(vol, pass.expose_secret(), opts.key_slot, &res)
                .map_err(map)?;
            if opts.init_only {
                return Ok(None);
            }
            return Ok(Some(keys));
        }
        let unknown = vol
            .luks2_header()?
            .meta
            .config
            .unknown_requirements()
            .join(", ");
        if !unknown.is_empty() {
            return Err(OpsError::Volume(VolumeError::Requirements(unknown)));
        }
        // As cryptsetup: with --key-slot (or one keyslot) the new key gets
        // that keyslot's passphrase and the others go at the end; without
        // it, interactively, every keyslot's passphrase is asked and each
        // gets a keyslot of the new key.
        let h = vol.luks2_header()?;
        let bound: Vec<u32> = h
            .meta
            .keyslots
            .iter()
            .filter(|(id, k)| k.kind == "luks2" && h.meta.keyslot_is_bound(**id))
            .map(|(id, _)| *id)
            .collect();
        let every = bound.len() > 1 && opts.key_slot.is_none();
        if every && opts.key_file {
            return Err(OpsError::usage(
                "Key file can be used only with --key-slot or with exactly one key slot active.",
            ));
        }
        if h.meta
            .tokens
            .values()
            .any(|t| t.kind == wrapcrypt_volume::rewrap::REENCIPHER_TOKEN)
        {
            return Err(OpsError::usage(
                "A re-wrap is staged on this volume (waes-reencipher token): finish it with reencipher --complete first.",
            ));
        }
        let cipher = opts.cipher.map(str::to_string);
        let key_size = opts.key_bits.map(|b| b / 8);
        if let Some(b) = opts.key_bits {
            if b == 0 || b % 8 != 0 {
                return Err(OpsError::usage("Key size must be a multiple of 8 bits"));
            }
        }
        // A wrapped-key target gets a key generated inside its provider
        // before the passphrase is asked: a provider that is not there
        // fails first, and nothing is written.
        let target = cipher.clone().or_else(|| {
            h.meta
                .segments
                .values()
                .next()
                .and_then(|s| s.encryption.clone())
        });
        let new_wrapped = match target.as_deref() {
            Some(c) if crate::wrapped::is_waes(c) || c.starts_with("paes-") => {
                Some(wrapped::generate(h, c, opts.provider, opts.key_bits)?)
            }
            _ => None,
        };
        let mut passes = Vec::new();
        if every {
            for id in &bound {
                passes.push((
                    *id,
                    prompter.passphrase(&format!("Enter passphrase for key slot {id}: "))?,
                ));
            }
        } else {
            passes.push((
                opts.key_slot.unwrap_or(u32::MAX),
                prompter.passphrase(&prompt)?,
            ));
        }
        let init = InitOptions {
            passphrase: passes[0].1.expose_secret(),
            keyslot: if every {
                Some(passes[0].0)
            } else {
                opts.key_slot
            },
            more_keyslots: passes[1..]
                .iter()
                .map(|(id, p)| (*id, p.expose_secret()))
                .collect(),
            cipher,
            key_size,
            sector_size: opts.sector_size,
            resilience: res,
            pbkdf: opts.pbkdf.clone(),
            new_key: new_wrapped
                .as_ref()
                .map(|k| SecretBytes::copy_from(k.blob.expose_secret())),
            new_tokens: new_wrapped
                .as_ref()
                .map(|k| k.tokens.clone())
                .unwrap_or_default(),
        };
        let keys = reencrypt::init(vol, &init).map_err(map)?;
        if let Some(k) = new_wrapped {
            k.keep();
        }
        if opts.init_only {
            return Ok(None);
        }
        keys
    };
    Ok(Some(keys))
}
