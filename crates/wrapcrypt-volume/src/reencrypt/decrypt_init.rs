//! The initial header of a decryption in place (`reencrypt --decrypt
//! --header FILE`), as cryptsetup 2.6 writes it, in one header write: the
//! crypt segment stays (segment 0) and is copied as `backup-previous`, a
//! `linear` segment at the same offset is `backup-final`, the `reencrypt`
//! keyslot (mode `decrypt`, direction `backward`) takes the largest free
//! gap, plus the verification digest and the `online-reencrypt-v2`
//! requirement. The data is not written.

use wrapcrypt_format::luks2::segment::{FLAG_BACKUP_FINAL, FLAG_BACKUP_PREVIOUS};
use wrapcrypt_format::luks2::{
    ReencryptDirection, ReencryptInfo, ReencryptMode, Segment, SegmentSize,
};

use super::init::{add_reencrypt_keyslot, resilience_of, REQUIREMENT};
use super::{verify, InitResilience, ReencryptError, ReencryptKeys};
use crate::{Volume, VolumeError};

/// Starts the decryption of `vol` (detached header only) with the
/// passphrase of `keyslot` (or any keyslot); returns the key.
pub fn init_decrypt(
    vol: &mut Volume,
    passphrase: &[u8],
    keyslot: Option<u32>,
    resilience: &InitResilience,
) -> Result<ReencryptKeys, ReencryptError> {
    vol.require_writable()?;
    if !vol.is_detached() {
        return Err(ReencryptError::Invalid(
            "LUKS2 decryption requires --header option.".into(),
        ));
    }
    let h = vol.luks2_header()?.clone();
    if h.meta.config.reencrypt_requirement().is_some() || h.meta.reencrypt_state()?.is_some() {
        return Err(ReencryptError::InReencryption);
    }
    vol.check_requirements()?;
    let resilience = resilience_of(resilience)?;
    if h.meta.segments.len() != 1 {
        return Err(ReencryptError::Unsupported(
            "a volume with more than one segment".into(),
        ));
    }
    let (&seg_id, seg) = h.meta.segments.iter().next().expect("one segment");
    if seg.kind != "crypt" {
        return Err(ReencryptError::Invalid("Device is not encrypted.".into()));
    }
    let digest = h
        .meta
        .digest_of_segment(seg_id)
        .ok_or_else(|| ReencryptError::Invalid("the segment has no digest".into()))?;
    let (_, key) = vol.luks2_unlock(&h, passphrase, keyslot, true)?;
    let mut n = h.clone();
    let cur = seg.clone();
    let mut prev = cur.clone();
    prev.flags = Some(vec![FLAG_BACKUP_PREVIOUS.to_string()]);
    let fin = Segment {
        kind: "linear".into(),
        offset: cur.offset,
        size: SegmentSize::Dynamic,
        iv_tweak: 0,
        encryption: None,
        sector_size: 512,
        flags: Some(vec![FLAG_BACKUP_FINAL.to_string()]),
        extra: Default::default(),
    };
    n.meta.segments.clear();
    n.meta.segments.insert(0, cur);
    n.meta.segments.insert(1, prev);
    n.meta.segments.insert(2, fin);
    if let Some(d) = n.meta.digests.get_mut(&digest) {
        d.segments = vec![0, 1];
    }
    let rslot = add_reencrypt_keyslot(
        &mut n,
        &resilience,
        ReencryptMode::Decrypt,
        ReencryptDirection::Backward,
    )?;
    let keys = ReencryptKeys {
        old: Some(key),
        new: None,
    };
    let info = ReencryptInfo {
        keyslot: rslot,
        requirement: REQUIREMENT.into(),
        version: 2,
        mode: ReencryptMode::Decrypt,
        direction: ReencryptDirection::Backward,
        resilience,
        previous_segment: 1,
        final_segment: 2,
        moved_segment: None,
        old_digest: Some(digest),
        new_digest: None,
        verification_digest: None,
        hotzone: None,
        old_segments: vec![0],
        new_segments: vec![],
        processed: Some(0),
        remaining: None,
    };
    // No keyslot is made, so (as in cryptsetup) no forced PBKDF applies:
    // the verification digest's iterations are benchmarked.
    let vd = verify::create(&n.meta, &info, &keys, None)?;
    let vid = (0..8)
        .find(|i| !n.meta.digests.contains_key(i))
        .ok_or(VolumeError::NoFreeKeyslot)?;
    n.meta.digests.insert(vid, vd);
    n.validate(false)?;
    vol.luks2_write(n)?;
    Ok(keys)
}
