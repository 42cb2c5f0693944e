//! The initial header of an encryption in place with the header at the
//! start of the device (`reencrypt --encrypt --reduce-device-size R`), as
//! cryptsetup 2.6 writes it. With `s = R / 2` (the new data offset and the
//! data shift) and a device of `D` bytes, the plaintext kept is its first
//! `D - R` bytes; its first `s` bytes must make room for the header, so:
//!
//! 1. the header is built in a temporary file (`LUKS2-temp-<uuid>.new`, as
//!    cryptsetup names it): a LUKS2 header with data offset `s` and the new
//!    key in keyslot 0, then the reencryption metadata (mode `encrypt`,
//!    direction `backward`, resilience `datashift` with `shift_size` s, a
//!    4096-byte area; segments: the moved head, linear at `D - s`; the rest
//!    of the plaintext, linear at `s`; the backups `backup-moved-segment`,
//!    `backup-previous` (linear at 0) and `backup-final` (crypt at `s`));
//! 2. the first `s` bytes of the plaintext are copied to `[D - s, D)` (the
//!    end of the sacrificed tail) and made durable;
//! 3. the temporary header (exactly `s` bytes) is written over `[0, s)` in
//!    one write, as cryptsetup restores it, and made durable.
//!
//! A crash before 3 leaves the plaintext `[0, D - R)` untouched (only the
//! tail beyond it changed): the init can simply be run again. A crash in
//! the middle of 3 (a torn write) leaves a device whose head is partly
//! header, with the head's copy at `[D - s, D)`; neither tool resumes
//! that (no valid keyslot), the data is recovered by copying the copy back
//! (`docs/reencrypt.md`). cryptsetup has the same window.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use wrapcrypt_format::luks2::segment::{
    FLAG_BACKUP_FINAL, FLAG_BACKUP_MOVED, FLAG_BACKUP_PREVIOUS,
};
use wrapcrypt_format::luks2::{
    ReencryptDirection, ReencryptInfo, ReencryptMode, Resilience, Segment, SegmentSize,
};
use wrapcrypt_secret::SecretBytes;

use super::encrypt_init::checked_params;
use super::init::{add_reencrypt_keyslot, REQUIREMENT};
use super::{verify, EncryptInitOptions, ReencryptError, ReencryptKeys};
use crate::format::{format_luks2, FormatParams};
use crate::{Device, Volume, VolumeError};

/// Size of the `datashift` reencrypt keyslot area (cryptsetup's).
const DATASHIFT_AREA: u64 = 4096;
/// Binary header + JSON area of both copies (16 KiB metadata).
const METADATA: u64 = 2 * 0x4000;
/// Anti-forensic stripes of a keyslot.
const STRIPES: u64 = 4000;

fn linear(offset: u64, size: u64, flag: Option<&str>) -> Segment {
    Segment {
        kind: "linear".into(),
        offset,
        size: SegmentSize::Fixed(size),
        iv_tweak: 0,
        encryption: None,
        sector_size: 512,
        flags: flag.map(|f| vec![f.to_string()]),
        extra: Default::default(),
    }
}

/// The checks cryptsetup makes before it writes anything, with its
/// messages; returns (device size, shift).
fn check(
    device: &Path,
    reduce: u64,
    key_len: usize,
    sector_size: u32,
) -> Result<(u64, u64), ReencryptError> {
    if reduce == 0 || !reduce.is_multiple_of(512) {
        return Err(ReencryptError::Invalid(
            "Reduce size must be multiple of 512 bytes sector.".into(),
        ));
    }
    let shift = reduce / 2;
    if !shift.is_multiple_of(4096) {
        return Err(ReencryptError::Invalid(
            "Data offset is not multiple of 4096 bytes.".into(),
        ));
    }
    if !shift.is_multiple_of(sector_size as u64) {
        return Err(ReencryptError::Invalid(format!(
            "Data shift is not aligned to requested encryption sector size ({sector_size} bytes)."
        )));
    }
    let area = (key_len as u64 * STRIPES).div_ceil(4096) * 4096;
    if shift < METADATA + area {
        return Err(ReencryptError::Invalid("No space for new keyslot.".into()));
    }
    if shift < METADATA + area + DATASHIFT_AREA {
        return Err(ReencryptError::Invalid(
            "Failed to initialize LUKS2 reencryption in metadata.".into(),
        ));
    }
    let size = Device::open(device, false)
        .and_then(|d| d.size())
        .map_err(|e| VolumeError::io("sizing data device", device, e))?;
    if size < reduce {
        return Err(ReencryptError::Invalid(format!(
            "Device {} is too small.",
            device.display()
        )));
    }
    if size == reduce {
        return Err(ReencryptError::Invalid(
            "Failed to initialize LUKS2 reencryption in metadata.".into(),
        ));
    }
    if !(size - shift).is_multiple_of(sector_size as u64) {
        return Err(ReencryptError::Invalid(format!(
            "Data device is not aligned to requested encryption sector size ({sector_size} bytes)."
        )));
    }
    Ok((size, shift))
}

/// Removes the temporary header file when dropped (also on errors).
struct TempHeader(PathBuf);

impl Drop for TempHeader {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the initial header of an encryption with a data shift of
/// `reduce / 2` onto the plaintext `device`; returns the volume (its
/// header on the device) and its new key.
pub fn init_encrypt_shift(
    device: &Path,
    opts: &EncryptInitOptions,
    reduce: u64,
) -> Result<(Volume, ReencryptKeys), ReencryptError> {
    let (cipher, key_len, sector_size) = checked_params(opts)?;
    let (dev_size, shift) = check(device, reduce, key_len, sector_size)?;
    let uuid = match &opts.uuid {
        Some(u) if !crate::format::valid_uuid(u) => {
            return Err(VolumeError::Param("Wrong LUKS UUID format provided.".into()).into())
        }
        Some(u) => u.to_lowercase(),
        None => crate::format::random_uuid(),
    };
    let tmp = TempHeader(std::env::temp_dir().join(format!("LUKS2-temp-{uuid}.new")));
    if tmp.0.exists() {
        return Err(ReencryptError::Invalid(format!(
            "Temporary header file {} already exists. Aborting.",
            tmp.0.display()
        )));
    }
    let key = SecretBytes::random(key_len)
        .map_err(|e| VolumeError::Param(format!("random volume key: {e}")))?;
    let params = FormatParams {
        cipher: cipher.clone(),
        key_size: key_len,
        hash: opts.pbkdf.hash.clone().unwrap_or_else(|| "sha256".into()),
        sector_size: Some(sector_size),
        data_offset: Some(shift),
        uuid: Some(uuid),
        label: opts.label.clone(),
        subsystem: opts.subsystem.clone(),
        pbkdf: opts.pbkdf.clone(),
        ..FormatParams::default()
    };
    // 1. The header, in the temporary file (the device is not written).
    let mut tvol = format_luks2(device, Some(&tmp.0), &params, &key, opts.passphrase)?;
    let h = tvol.luks2_header()?.clone();
    let mut n = h.clone();
    let (&digest, _) = n
        .meta
        .digests
        .iter()
        .next()
        .ok_or_else(|| ReencryptError::Invalid("the new header has no digest".into()))?;
    let mut fin = n.meta.segments[&0].clone();
    fin.flags = Some(vec![FLAG_BACKUP_FINAL.to_string()]);
    // cryptsetup's layout: [header (s)][rest of the data][gap (s)][head (s)].
    let data_size = dev_size - 2 * shift;
    let moved_at = dev_size - shift;
    let head = data_size.min(shift);
    let mut segs = vec![linear(moved_at, head, None)];
    if data_size > shift {
        segs.push(linear(shift, data_size - shift, None));
    }
    let first_backup = segs.len() as u32;
    let mut map: BTreeMap<u32, Segment> = segs
        .into_iter()
        .enumerate()
        .map(|(i, s)| (i as u32, s))
        .collect();
    map.insert(
        first_backup,
        linear(moved_at, head, Some(FLAG_BACKUP_MOVED)),
    );
    map.insert(
        first_backup + 1,
        linear(0, data_size, Some(FLAG_BACKUP_PREVIOUS)),
    );
    map.insert(first_backup + 2, fin);
    n.meta.segments = map;
    if let Some(d) = n.meta.digests.get_mut(&digest) {
        d.segments = vec![first_backup + 2];
    }
    let resilience = Resilience::Datashift { shift_size: shift };
    let rslot = add_reencrypt_keyslot(
        &mut n,
        &resilience,
        ReencryptMode::Encrypt,
        ReencryptDirection::Backward,
    )?;
    if let Some(k) = n.meta.keyslots.get_mut(&rslot) {
        k.area.size = DATASHIFT_AREA;
    }
    let keys = ReencryptKeys {
        old: None,
        new: Some(key),
    };
    let info = ReencryptInfo {
        keyslot: rslot,
        requirement: REQUIREMENT.into(),
        version: 2,
        mode: ReencryptMode::Encrypt,
        direction: ReencryptDirection::Backward,
        resilience,
        previous_segment: first_backup + 1,
        final_segment: first_backup + 2,
        moved_segment: Some(first_backup),
        old_digest: None,
        new_digest: Some(digest),
        verification_digest: None,
        hotzone: None,
        old_segments: vec![],
        new_segments: vec![],
        processed: Some(0),
        remaining: None,
    };
    let vd = verify::create(&n.meta, &info, &keys, opts.pbkdf.force_iterations)?;
    let vid = (0..8)
        .find(|i| !n.meta.digests.contains_key(i))
        .ok_or(VolumeError::NoFreeKeyslot)?;
    n.meta.digests.insert(vid, vd);
    // cryptsetup's init ends at epoch 4, as for --encrypt --header.
    n.seqid = h.seqid + 1;
    n.validate(false)?;
    tvol.luks2_write(n)?;
    let image = std::fs::read(&tmp.0).map_err(|e| VolumeError::io("reading", &tmp.0, e))?;
    drop(tvol);
    if image.len() as u64 != shift {
        return Err(ReencryptError::Invalid(format!(
            "the temporary header has {} bytes, not the data offset {shift}",
            image.len()
        )));
    }
    let dev = Device::open(device, true).map_err(|source| VolumeError::Device {
        path: device.display().to_string(),
        source,
    })?;
    let io = |op: &'static str, e| VolumeError::io(op, device, e);
    let lock =
        crate::lock::MetadataLock::acquire(&dev, true).map_err(|e| io("locking metadata", e))?;
    // 2. The head of the plaintext to the end of the device.
    let mut buf = vec![0u8; head as usize];
    dev.read_exact_at(0, &mut buf)
        .map_err(|e| io("reading the data head", e))?;
    dev.write_at(moved_at, &buf)
        .map_err(|e| io("moving the data head", e))?;
    dev.sync().map_err(|e| io("syncing data", e))?;
    // 3. The header over the old head, in one write.
    dev.write_at(0, &image)
        .map_err(|e| io("writing the header", e))?;
    dev.sync().map_err(|e| io("syncing the header", e))?;
    drop(lock);
    drop(dev);
    drop(tmp);
    let vol = Volume::open(device, None, true)?;
    Ok((vol, keys))
}
