//! `open`: everything between the command line and the FUSE server. It
//! checks the volume can be activated under that name, unlocks it (tokens,
//! then passphrase), resolves a wrapped volume's provider, and encodes the
//! server's start-up payload. The server is started by the caller (the CLI
//! re-executes itself); the payload reaches it on a pipe, never argv or
//! environment.

use std::path::Path;

use wrapcrypt_activate::ServeConfig;
use wrapcrypt_format::luks2::SegmentSize;
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::CipherSpec;
use wrapcrypt_unlock::{Prompter, Registry, UnlockRequest};
use wrapcrypt_volume::{ExitClass, Volume};

use crate::error::OpsError;
use crate::wrapped::{self, ProviderChoice};

pub(crate) mod payload;
pub mod plain;
pub(crate) mod reencrypting;

pub use payload::{server_start, ServerStart};
use payload::{KeySource, Part};

/// What `open` is asked to do.
pub struct OpenOptions<'a> {
    /// The device as named (also the server's backing file).
    pub device: &'a str,
    /// The name under /dev/mapper.
    pub name: &'a str,
    /// `--readonly`.
    pub read_only: bool,
    /// `--allow-discards` (the header's flag counts too).
    pub allow_discards: bool,
    /// How to unlock.
    pub unlock: UnlockRequest<'a>,
    /// A wrapped volume's provider options.
    pub provider: ProviderChoice<'a>,
}

/// Parses a segment cipher as the server will.
pub fn check_cipher(spec: &str) -> Result<CipherSpec, OpsError> {
    CipherSpec::parse(spec)
        .map_err(|e| OpsError::usage(format!("Cannot activate with cipher {spec}: {e}")))
}

/// `name` is not active and `dev` is not served by another activation.
pub fn check_free(name: &str, dev: &str) -> Result<(), OpsError> {
    if wrapcrypt_activate::list().iter().any(|n| n == name)
        || Path::new("/dev/mapper").join(name).exists()
    {
        return Err(OpsError::refused(
            ExitClass::Busy,
            format!("Device {name} already exists."),
        ));
    }
    if let Some(other) = wrapcrypt_activate::is_backing_in_use(Path::new(dev)) {
        return Err(OpsError::refused(
            ExitClass::Busy,
            format!("Cannot use device {dev} which is in use (already mapped as {other})."),
        ));
    }
    Ok(())
}

/// `open --test-passphrase`: unlocks and activates nothing. As cryptsetup:
/// a keyslot named with `--key-slot` may be unbound; without it only bound
/// ones count.
pub fn test_passphrase(
    vol: &Volume,
    req: &UnlockRequest,
    reg: &Registry,
    prompter: &mut dyn Prompter,
) -> Result<(), OpsError> {
    let req = UnlockRequest {
        need_bound: req.key_slot.is_none(),
        ..req.clone()
    };
    wrapcrypt_unlock::unlock(vol, &req, reg, prompter)?;
    Ok(())
}

/// Unlocks and returns the server's start-up payload (in locked memory).
pub fn prepare(
    vol: Volume,
    opts: &OpenOptions,
    reg: &Registry,
    prompter: &mut dyn Prompter,
) -> Result<SecretBytes, OpsError> {
    prepare_with(vol, opts, reg, prompter, false)
}

/// `luksResume`: unlocks as [`prepare`] does and returns the same payload,
/// for the server that already serves `opts.name` (so the name is not
/// checked to be free).
pub fn prepare_resume(
    vol: Volume,
    opts: &OpenOptions,
    reg: &Registry,
    prompter: &mut dyn Prompter,
) -> Result<SecretBytes, OpsError> {
    prepare_with(vol, opts, reg, prompter, true)
}

fn prepare_with(
    vol: Volume,
    opts: &OpenOptions,
    reg: &Registry,
    prompter: &mut dyn Prompter,
    resume: bool,
) -> Result<SecretBytes, OpsError> {
    let (dev, name) = (opts.device, opts.name);
    let mut req = opts.unlock.clone();
    req.need_bound = true;
    if vol.version() == 1 {
        return prepare_luks1(vol, opts, &req, reg, prompter, resume);
    }
    if let Some(info) =
        wrapcrypt_volume::reencrypt::state(&vol).map_err(|e| OpsError::usage(e.to_string()))?
    {
        if resume {
            return Err(OpsError::usage(
                "Resume of a device in reencryption is not supported; close it and open it again.",
            ));
        }
        return reencrypting::prepare(vol, opts, info, prompter);
    }
    vol.check_requirements()?;
    let h = vol.luks2_header()?.clone();
    let seg_id = h
        .meta
        .crypt_segment_id()
        .ok_or_else(|| OpsError::usage("Volume has no crypt segment."))?;
    let seg = h.meta.segments[&seg_id].clone();
    let enc = seg.encryption.clone().unwrap_or_default();
    let spec = check_cipher(&enc)?;
    if spec.is_wrapped() && !wrapped::is_waes(&enc) {
        return Err(OpsError::usage(format!(
            "Cipher {enc} needs the kernel's paes cipher through device-mapper, which this host does not have."
        )));
    }
    if !resume {
        check_free(name, dev)?;
    }
    let u = wrapcrypt_unlock::unlock(&vol, &req, reg, prompter)?;
    let mut cfg = ServeConfig::new(name, dev);
    cfg.data_offset = if vol.is_detached() || seg.offset > 0 {
        seg.offset
    } else {
        0
    };
    cfg.data_size = match seg.size {
        SegmentSize::Dynamic => None,
        SegmentSize::Fixed(s) => Some(s),
    };
    cfg.iv_tweak = seg.iv_tweak;
    cfg.read_only = opts.read_only;
    let persistent_discards = h
        .meta
        .config
        .flags
        .iter()
        .flatten()
        .any(|f| f == "allow-discards");
    cfg.allow_discards = opts.allow_discards || persistent_discards;
    cfg.cipher_desc = enc.clone();
    let status = |cfg: &mut ServeConfig, k: &str, v: String| {
        cfg.extra_status.insert(k.into(), v);
    };
    status(&mut cfg, "type", format!("LUKS{}", vol.version()));
    status(&mut cfg, "keysize", format!("{} bits", u.key.len() * 8));
    status(&mut cfg, "uuid", h.uuid.clone());
    status(&mut cfg, "keyslot", u.keyslot.to_string());
    let src = if spec.is_wrapped() {
        let o = wrapped::resolve(&h, &u.key, opts.provider)?;
        status(&mut cfg, "protection", o.provider.protection().to_string());
        status(&mut cfg, "provider", o.name.clone());
        status(&mut cfg, "keysize", "512 bits (wrapped)".into());
        KeySource::Wrapped {
            provider: o.name,
            locator: o.locator.unwrap_or_default(),
            pin: o.pin,
        }
    } else {
        status(&mut cfg, "protection", "in-process".into());
        status(&mut cfg, "provider", "soft".into());
        KeySource::Clear
    };
    drop(vol);
    Ok(payload::encode(
        &cfg,
        &[Part {
            spec: &enc,
            sector_size: seg.sector_size,
            src,
            key: &u.key,
        }],
        0,
        false,
    ))
}

/// A LUKS1 volume: dm-crypt's LUKS1 mapping (payload at `payload_offset`
/// sectors, cipher `name-mode`, 512-byte sectors), passphrase only.
fn prepare_luks1(
    vol: Volume,
    opts: &OpenOptions,
    req: &UnlockRequest,
    reg: &Registry,
    prompter: &mut dyn Prompter,
    resume: bool,
) -> Result<SecretBytes, OpsError> {
    let h = vol.luks1_header()?.clone();
    let enc = h.cipher_spec();
    check_cipher(&enc)?;
    if !resume {
        check_free(opts.name, opts.device)?;
    }
    let u = wrapcrypt_unlock::unlock(&vol, req, reg, prompter)?;
    let mut cfg = ServeConfig::new(opts.name, opts.device);
    // A detached header's payload offset counts on the data device too.
    cfg.data_offset = h.payload_offset_bytes();
    cfg.data_size = None;
    cfg.iv_tweak = 0;
    cfg.read_only = opts.read_only;
    cfg.allow_discards = opts.allow_discards;
    cfg.cipher_desc = enc.clone();
    for (k, v) in [
        ("type", "LUKS1".to_string()),
        ("keysize", format!("{} bits", u.key.len() * 8)),
        ("uuid", h.uuid().to_string()),
        ("keyslot", u.keyslot.to_string()),
        ("protection", "in-process".into()),
        ("provider", "soft".into()),
    ] {
        cfg.extra_status.insert(k.into(), v);
    }
    drop(vol);
    Ok(payload::encode(
        &cfg,
        &[Part {
            spec: &enc,
            sector_size: 512,
            src: KeySource::Clear,
            key: &u.key,
        }],
        0,
        false,
    ))
}
