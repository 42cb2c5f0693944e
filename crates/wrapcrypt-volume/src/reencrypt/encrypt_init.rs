//! The initial header of an encryption in place with a detached header
//! (`reencrypt --encrypt --header FILE`, no data shift), as cryptsetup 2.6
//! writes it:
//!
//! 1. a LUKS2 header in FILE (data offset 0) with the new key in keyslot
//!    0, written as luksFormat writes it (header, then keyslot);
//! 2. one header write that makes segment 0 `linear` (the plaintext),
//!    adds the backups (`backup-previous` linear, `backup-final` the new
//!    crypt segment), the `reencrypt` keyslot in the largest free gap, the
//!    verification digest and the `online-reencrypt-v2` requirement.
//!
//! The data device is not written. A crash before 2 leaves a header that
//! claims the plaintext is encrypted (as cryptsetup's own init would); the
//! data is intact and the init can simply be run again.

use std::collections::BTreeMap;
use std::path::Path;

use wrapcrypt_format::luks2::segment::{FLAG_BACKUP_FINAL, FLAG_BACKUP_PREVIOUS};
use wrapcrypt_format::luks2::{
    ReencryptDirection, ReencryptInfo, ReencryptMode, Segment, SegmentSize,
};
use wrapcrypt_secret::SecretBytes;

use super::init::{add_reencrypt_keyslot, resilience_of, REQUIREMENT};
use super::{verify, InitResilience, ReencryptError, ReencryptKeys};
use crate::format::{format_luks2, FormatParams};
use crate::{PbkdfOptions, Volume, VolumeError};

/// What an encryption in place starts with.
pub struct EncryptInitOptions<'a> {
    /// The passphrase of the new keyslot.
    pub passphrase: &'a [u8],
    /// `--cipher` (default aes-xts-plain64).
    pub cipher: Option<String>,
    /// `--key-size` in bytes (default 64).
    pub key_size: Option<usize>,
    /// `--sector-size` (default 512, as cryptsetup 2.6.1 writes for
    /// `--encrypt`, whatever the device's optimum).
    pub sector_size: Option<u32>,
    /// `--resilience`.
    pub resilience: InitResilience,
    /// KDF of the keyslot.
    pub pbkdf: PbkdfOptions,
    /// `--uuid`.
    pub uuid: Option<String>,
    /// `--label`.
    pub label: String,
    /// `--subsystem`.
    pub subsystem: String,
}

/// A plaintext segment over the whole device.
fn linear(flags: Option<Vec<String>>) -> Segment {
    Segment {
        kind: "linear".into(),
        offset: 0,
        size: SegmentSize::Dynamic,
        iv_tweak: 0,
        encryption: None,
        sector_size: 512,
        flags,
        extra: Default::default(),
    }
}

/// The cipher, key size (bytes) and sector size of the new layout, checked.
pub(super) fn checked_params(
    opts: &EncryptInitOptions,
) -> Result<(String, usize, u32), ReencryptError> {
    let cipher = opts
        .cipher
        .clone()
        .unwrap_or_else(|| "aes-xts-plain64".into());
    let key_len = opts.key_size.unwrap_or(64);
    let sector_size = opts.sector_size.unwrap_or(512);
    let spec =
        wrapcrypt_sector::CipherSpec::parse(&cipher).map_err(|e| ReencryptError::Cipher {
            cipher: cipher.clone(),
            reason: e.to_string(),
        })?;
    if spec.is_wrapped() {
        return Err(ReencryptError::Unsupported(
            "--encrypt onto a wrapped-key cipher (encrypt with a clear key, then reencrypt onto waes-xts-plain64)"
                .into(),
        ));
    }
    if !spec.key_len_valid(key_len) {
        return Err(ReencryptError::Cipher {
            cipher,
            reason: format!("key size {} bits is not available", key_len * 8),
        });
    }
    if !matches!(sector_size, 512 | 1024 | 2048 | 4096) {
        return Err(ReencryptError::Invalid(format!(
            "Unsupported encryption sector size {sector_size}."
        )));
    }
    Ok((cipher, key_len, sector_size))
}

/// Writes the initial encryption header for the plaintext `device` into
/// `header` (created if missing); returns the volume and its new key.
pub fn init_encrypt(
    device: &Path,
    header: &Path,
    opts: &EncryptInitOptions,
) -> Result<(Volume, ReencryptKeys), ReencryptError> {
    let (cipher, key_len, sector_size) = checked_params(opts)?;
    let resilience = resilience_of(&opts.resilience)?;
    let size = crate::Device::open(device, false)
        .and_then(|d| d.size())
        .map_err(|e| VolumeError::io("sizing data device", device, e))?;
    if size == 0 || !size.is_multiple_of(sector_size as u64) {
        return Err(ReencryptError::Invalid(format!(
            "Device {} size is not aligned to requested sector size.",
            device.display()
        )));
    }
    let key = SecretBytes::random(key_len)
        .map_err(|e| VolumeError::Param(format!("random volume key: {e}")))?;
    let params = FormatParams {
        cipher: cipher.clone(),
        key_size: key_len,
        hash: opts.pbkdf.hash.clone().unwrap_or_else(|| "sha256".into()),
        sector_size: Some(sector_size),
        data_offset: Some(0),
        uuid: opts.uuid.clone(),
        label: opts.label.clone(),
        subsystem: opts.subsystem.clone(),
        pbkdf: opts.pbkdf.clone(),
        ..FormatParams::default()
    };
    // Writes 1: header and keyslot 0 (bound to segment 0 for now).
    let mut vol = format_luks2(device, Some(header), &params, &key, opts.passphrase)?;
    let h = vol.luks2_header()?.clone();
    let mut n = h.clone();
    let crypt = n.meta.segments[&0].clone();
    let (&digest, _) = n
        .meta
        .digests
        .iter()
        .next()
        .ok_or_else(|| ReencryptError::Invalid("the new header has no digest".into()))?;
    let mut fin = crypt;
    fin.flags = Some(vec![FLAG_BACKUP_FINAL.to_string()]);
    n.meta.segments = BTreeMap::from([
        (0, linear(None)),
        (1, linear(Some(vec![FLAG_BACKUP_PREVIOUS.to_string()]))),
        (2, fin),
    ]);
    if let Some(d) = n.meta.digests.get_mut(&digest) {
        d.segments = vec![2];
    }
    let rslot = add_reencrypt_keyslot(
        &mut n,
        &resilience,
        ReencryptMode::Encrypt,
        ReencryptDirection::Forward,
    )?;
    let keys = ReencryptKeys {
        old: None,
        new: Some(key),
    };
    let info = ReencryptInfo {
        keyslot: rslot,
        requirement: REQUIREMENT.into(),
        version: 2,
        mode: ReencryptMode::Encrypt,
        direction: ReencryptDirection::Forward,
        resilience,
        previous_segment: 1,
        final_segment: 2,
        moved_segment: None,
        old_digest: None,
        new_digest: Some(digest),
        verification_digest: None,
        hotzone: None,
        old_segments: vec![0],
        new_segments: vec![],
        processed: Some(0),
        remaining: None,
    };
    let vd = verify::create(&n.meta, &info, &keys, opts.pbkdf.force_iterations)?;
    let vid = (0..8)
        .find(|i| !n.meta.digests.contains_key(i))
        .ok_or(VolumeError::NoFreeKeyslot)?;
    n.meta.digests.insert(vid, vd);
    // cryptsetup's format takes one header write more than ours: its
    // init ends at seqid 4, and so does this one (luksDump prints it).
    n.seqid = h.seqid + 1;
    n.validate(!vol.is_detached())?;
    // Write 2: the reencryption metadata.
    vol.luks2_write(n)?;
    Ok((vol, keys))
}
