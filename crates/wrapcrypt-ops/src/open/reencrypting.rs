//! `open` of a volume in mid-reencryption (what cryptsetup allows too):
//! the data below the boundary is in the new layout, the rest in the old
//! one. Both volume keys are unlocked with one passphrase, as `reencrypt
//! --resume-only` does, and the server serves a [`SplitCipher`] of the
//! two. Only a clean state opens: an interrupted hotzone needs recovery
//! first, as in cryptsetup.
//!
//! [`SplitCipher`]: wrapcrypt_activate::SplitCipher

use wrapcrypt_activate::ServeConfig;
use wrapcrypt_format::luks2::{ReencryptDirection, ReencryptInfo, Segment, SegmentSize};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::reencrypt::{self, Side, WrappedCiphers};
use wrapcrypt_volume::{Volume, VolumeError};

use super::payload::{self, KeySource, Part};
use super::{check_cipher, check_free, OpenOptions};
use crate::error::OpsError;
use crate::providers::PROVIDER_TOKEN;
use crate::reencrypt::wrapped::Providers;
use crate::wrapped::ProviderChoice;

fn unsupported(what: &str) -> OpsError {
    OpsError::usage(format!(
        "Cannot activate a device in reencryption with {what} yet; finish it first with wrapcrypt reencrypt --resume-only."
    ))
}

/// How the server builds one side's cipher.
fn source(
    provs: &Providers,
    side: Side,
    seg: &Segment,
    key: Option<&SecretBytes>,
    choice: ProviderChoice,
) -> Result<KeySource, OpsError> {
    if seg.kind == "linear" {
        return Ok(KeySource::Linear);
    }
    let enc = seg.encryption.clone().unwrap_or_default();
    let spec = check_cipher(&enc)?;
    if !spec.is_wrapped() {
        return Ok(KeySource::Clear);
    }
    if !crate::wrapped::is_waes(&enc) {
        return Err(OpsError::usage(format!(
            "Cipher {enc} needs the kernel's paes cipher through device-mapper, which this host does not have."
        )));
    }
    let key = key.ok_or_else(|| unsupported("a missing key"))?;
    // Proves the provider holds the key this side was made with (its
    // verification pattern), as a plain open does.
    provs
        .open(side, seg, key)
        .map_err(|e| OpsError::usage(format!("Cannot open the {side:?} key: {e}.")))?;
    let wkb = wrapcrypt_provider::Wkb::parse(key.expose_secret())
        .map_err(|e| OpsError::usage(format!("Stored wrapped key is invalid: {e}")))?;
    let provider = provs
        .token_field(side, PROVIDER_TOKEN, "provider")
        .unwrap_or_else(|| wkb.provider().to_string());
    let locator = provs
        .token_field(side, PROVIDER_TOKEN, "uri")
        .or_else(|| {
            choice
                .key_provider
                .filter(|k| k.starts_with("pkcs11:"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    Ok(KeySource::Wrapped {
        pin: (provider == "pkcs11")
            .then(|| {
                choice
                    .pin
                    .map(|p| SecretBytes::copy_from(p.expose_secret()))
            })
            .flatten(),
        provider,
        locator,
    })
}

/// Unlocks both keys and returns the server's payload.
pub(super) fn prepare(
    vol: Volume,
    opts: &OpenOptions,
    info: ReencryptInfo,
    prompter: &mut dyn Prompter,
) -> Result<SecretBytes, OpsError> {
    let h = vol.luks2_header()?.clone();
    let unknown: Vec<&str> = h
        .meta
        .config
        .unknown_requirements()
        .into_iter()
        .filter(|r| *r != info.requirement)
        .collect();
    if !unknown.is_empty() || info.version != 2 {
        return Err(OpsError::Volume(VolumeError::Requirements(
            h.meta.config.unknown_requirements().join(", "),
        )));
    }
    if info.hotzone.is_some() {
        return Err(OpsError::usage(
            "Device requires reencryption recovery: run wrapcrypt reencrypt --resume-only (or cryptsetup repair) first.",
        ));
    }
    // Backward runs (decryption with a detached header) open too: the old
    // layout below the boundary. One with a data shift is refused below.
    if info.moved_segment.is_some() || info.resilience.shift_size().is_some() {
        return Err(unsupported("a data shift"));
    }
    let old = h.meta.segments[&info.previous_segment].clone();
    let new = h.meta.segments[&info.final_segment].clone();
    if old.offset != new.offset || old.iv_tweak != new.iv_tweak {
        return Err(unsupported("different data offsets"));
    }
    check_free(opts.name, opts.device)?;
    let prompt = format!("Enter passphrase for {}: ", opts.device);
    let pass = prompter.passphrase(&prompt)?;
    let keys =
        reencrypt::unlock_keys(&vol, pass.expose_secret(), opts.unlock.key_slot).map_err(|e| {
            match e {
                reencrypt::ReencryptError::Volume(v) => OpsError::Volume(v),
                other => OpsError::usage(other.to_string()),
            }
        })?;
    drop(pass);
    let mut cfg = ServeConfig::new(opts.name, opts.device);
    cfg.read_only = opts.read_only;
    cfg.allow_discards = opts.allow_discards;
    drop(vol);
    split_payload(&h, &info, &keys, opts.provider, cfg)
}

/// The payload of a server that serves `h` in mid-reencryption with both
/// keys: `cfg` gets the data offset, the layouts and the status facts.
pub(crate) fn split_payload(
    h: &wrapcrypt_format::luks2::Luks2Header,
    info: &ReencryptInfo,
    keys: &reencrypt::ReencryptKeys,
    choice: ProviderChoice,
    mut cfg: ServeConfig,
) -> Result<SecretBytes, OpsError> {
    let old = h.meta.segments[&info.previous_segment].clone();
    let new = h.meta.segments[&info.final_segment].clone();
    let backward = info.direction != ReencryptDirection::Forward;
    // Forward: bytes in the new layout, up to the first old segment.
    // Backward: bytes still old, up to the end of the last old segment
    // (they are at the start; the header holds their sizes).
    let done = if backward {
        info.old_segments
            .iter()
            .map(|id| {
                let sg = &h.meta.segments[id];
                match sg.size {
                    SegmentSize::Fixed(n) => sg.offset - old.offset + n,
                    // Not started yet: the old part runs to the device's end.
                    SegmentSize::Dynamic => wrapcrypt_volume::Device::open(&cfg.backing, false)
                        .and_then(|d| d.size())
                        .map_or(u64::MAX, |n| n.saturating_sub(sg.offset)),
                }
            })
            .max()
            .unwrap_or(0)
    } else {
        info.old_segments
            .iter()
            .map(|id| h.meta.segments[id].offset - old.offset)
            .min()
            .unwrap_or(u64::MAX)
    };
    if backward && done == u64::MAX {
        return Err(unsupported(
            "a backward run on a device whose size cannot be read",
        ));
    }
    let provs = Providers::new(h, choice);
    let new_src = source(&provs, Side::New, &new, keys.new.as_ref(), choice)?;
    let old_src = source(&provs, Side::Old, &old, keys.old.as_ref(), choice)?;
    let none = SecretBytes::copy_from(&[]);
    // What status says: the new layout's provider and key size; the
    // weaker side's protection (a clear key on either side lives in this
    // server).
    let clear_side = matches!(new_src, KeySource::Clear) || matches!(old_src, KeySource::Clear);
    let (keysize, provider, mut protection) = match &new_src {
        KeySource::Wrapped {
            provider, locator, ..
        } => {
            let loc = Some(locator.as_str()).filter(|l| !l.is_empty());
            let p = crate::providers::by_name(provider, loc, choice.pin)?;
            (
                "512 bits (wrapped)".to_string(),
                provider.clone(),
                p.protection().to_string(),
            )
        }
        _ => (
            format!("{} bits", keys.new.as_ref().map_or(0, |k| k.len() * 8)),
            "soft".to_string(),
            "in-process".to_string(),
        ),
    };
    if clear_side && protection != "in-process" {
        protection = format!(
            "in-process (the old clear key until the reencryption ends; new key {protection})"
        );
    }
    let new_spec = new
        .encryption
        .clone()
        .unwrap_or_else(|| "cipher_null".into());
    let old_spec = old
        .encryption
        .clone()
        .unwrap_or_else(|| "cipher_null".into());
    cfg.data_offset = old.offset;
    cfg.data_size = None;
    cfg.iv_tweak = old.iv_tweak;
    cfg.cipher_desc = new_spec.clone();
    for (k, v) in [
        ("type", "LUKS2".to_string()),
        ("uuid", h.uuid.clone()),
        (
            "reencryption",
            if backward {
                format!(
                    "in progress ({}, backward): the first {done} bytes still in {old_spec}, the rest in {new_spec}",
                    info.mode.as_str()
                )
            } else {
                format!(
                    "in progress ({}): {done} bytes in {new_spec}, the rest still in {old_spec}",
                    info.mode.as_str()
                )
            },
        ),
        ("keysize", keysize),
        ("provider", provider),
        ("protection", protection),
    ] {
        cfg.extra_status.insert(k.into(), v);
    }
    Ok(payload::encode(
        &cfg,
        &[
            Part {
                spec: &new_spec,
                sector_size: new.sector_size,
                src: new_src,
                key: keys.new.as_ref().unwrap_or(&none),
            },
            Part {
                spec: &old_spec,
                sector_size: old.sector_size,
                src: old_src,
                key: keys.old.as_ref().unwrap_or(&none),
            },
        ],
        old.iv_tweak + done / 512,
        backward,
    ))
}
