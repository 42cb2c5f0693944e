//! The initial header of a key change, as `cryptsetup reencrypt
//! --init-only` writes it, in two writes:
//!
//! 1. a new keyslot with a fresh volume key under the same passphrase,
//!    unbound (its own digest): material to a free area, then the header;
//! 2. one header write that adds the `reencrypt` keyslot (its area is the
//!    largest free gap of the keyslots area), the backup segments
//!    (`backup-previous`: the current segment, `backup-final`: the new
//!    cipher and sector size), the digest assignments, the verification
//!    digest and the `online-reencrypt-v2` requirement.
//!
//! A crash after 1 leaves an ordinary volume with an extra unbound keyslot.

use serde_json::{Map, Value};
use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::luks2::segment::{FLAG_BACKUP_FINAL, FLAG_BACKUP_PREVIOUS};
use wrapcrypt_format::luks2::{
    Keyslot, KeyslotArea, Luks2Header, ReencryptDirection, ReencryptInfo, ReencryptMode,
    Resilience, SegmentSize, KEYSLOTS_MAX,
};
use wrapcrypt_secret::SecretBytes;

use super::{verify, ReencryptError, ReencryptKeys};
use crate::luks2ops::seal_keyslot;
use crate::{PbkdfOptions, Volume, VolumeError};

/// The requirement cryptsetup 2.6 writes for this metadata.
pub const REQUIREMENT: &str = "online-reencrypt-v2";

/// Hotzone protection chosen at init (`--resilience`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitResilience {
    /// Checksums of the hotzone blocks (`--resilience-hash`, default sha256).
    Checksum {
        /// Hash name.
        hash: String,
    },
    /// A copy of the hotzone.
    Journal,
    /// No protection: a crash mid-hotzone loses data.
    None,
}

/// What a key change starts with.
pub struct InitOptions<'a> {
    /// The passphrase of the keyslot to carry over; the new keyslot gets it too.
    pub passphrase: &'a [u8],
    /// `--key-slot`: the keyslot to open (default: any that opens).
    pub keyslot: Option<u32>,
    /// `--cipher` of the new layout (default: the current one).
    pub cipher: Option<String>,
    /// `--key-size` in bytes (default: the current key's).
    pub key_size: Option<usize>,
    /// `--sector-size` of the new layout (default: the current one).
    pub sector_size: Option<u32>,
    /// `--resilience`.
    pub resilience: InitResilience,
    /// KDF of the new keyslot.
    pub pbkdf: PbkdfOptions,
    /// The new volume key, made by the caller: a wrapped-key cipher's blob,
    /// generated inside its provider. Default: random bytes (a clear key).
    pub new_key: Option<SecretBytes>,
    /// Further keyslots of the old key to carry over, each with its own
    /// passphrase (cryptsetup asks for every keyslot's): the new key gets
    /// a keyslot for each.
    pub more_keyslots: Vec<(u32, &'a [u8])>,
    /// Tokens of the new key (a wrapped key's provider and verification
    /// pattern), added with the reencryption metadata and bound to the new
    /// keyslot; the caller's `WrappedCiphers::finalize` unbinds them.
    pub new_tokens: Vec<Value>,
}

/// Checksum block size cryptsetup stores (its reencryption alignment).
const CHECKSUM_BLOCK: u32 = 4096;

/// The largest gap of the keyslots area no keyslot uses: (offset, size).
fn largest_gap(h: &Luks2Header) -> Option<(u64, u64)> {
    let end = h.meta.keyslots_end(h.hdr_size);
    let mut used: Vec<(u64, u64)> = h
        .meta
        .keyslots
        .values()
        .map(|k| (k.area.offset, k.area.offset + k.area.size))
        .collect();
    used.sort();
    let (mut cur, mut best) = (2 * h.hdr_size, None::<(u64, u64)>);
    for (a, b) in used.into_iter().chain([(end, end)]) {
        if a > cur && best.is_none_or(|(_, s)| a - cur > s) {
            best = Some((cur, a - cur));
        }
        cur = cur.max(b);
    }
    best
}

/// The on-disk resilience of `r` (checksums in 4096-byte blocks).
pub(super) fn resilience_of(r: &InitResilience) -> Result<Resilience, ReencryptError> {
    Ok(match r {
        InitResilience::Checksum { hash } => {
            HashAlg::from_name(hash).map_err(|e| ReencryptError::Invalid(e.to_string()))?;
            Resilience::Checksum {
                hash: hash.clone(),
                sector_size: CHECKSUM_BLOCK,
            }
        }
        InitResilience::Journal => Resilience::Journal,
        InitResilience::None => Resilience::None,
    })
}

/// Adds the `reencrypt` keyslot to `n`, in the first free id, over the
/// largest free gap of the keyslots area (as cryptsetup places it), and
/// marks the header with the `online-reencrypt-v2` requirement.
pub(super) fn add_reencrypt_keyslot(
    n: &mut Luks2Header,
    resilience: &Resilience,
    mode: ReencryptMode,
    direction: ReencryptDirection,
) -> Result<u32, VolumeError> {
    let rslot = (0..KEYSLOTS_MAX)
        .find(|i| !n.meta.keyslots.contains_key(i))
        .ok_or(VolumeError::NoFreeKeyslot)?;
    let (offset, size) = largest_gap(n).ok_or(VolumeError::NoFreeKeyslot)?;
    n.meta.keyslots.insert(
        rslot,
        reencrypt_keyslot(offset, size, resilience, mode, direction),
    );
    n.meta
        .config
        .requirements
        .get_or_insert_with(Vec::new)
        .push(REQUIREMENT.to_string());
    Ok(rslot)
}

/// The `reencrypt` keyslot over the area `[offset, offset + size)`.
fn reencrypt_keyslot(
    offset: u64,
    size: u64,
    resilience: &Resilience,
    mode: ReencryptMode,
    direction: ReencryptDirection,
) -> Keyslot {
    let mut area_extra = Map::new();
    if let Resilience::Checksum { hash, sector_size } = resilience {
        area_extra.insert("hash".into(), Value::from(hash.clone()));
        area_extra.insert("sector_size".into(), Value::from(*sector_size));
    }
    if let Some(shift) = resilience.shift_size() {
        area_extra.insert("shift_size".into(), Value::from(shift.to_string()));
    }
    let mut ks_extra = Map::new();
    ks_extra.insert("mode".into(), mode.as_str().into());
    ks_extra.insert("direction".into(), direction.as_str().into());
    Keyslot {
        kind: "reencrypt".into(),
        key_size: 1,
        area: KeyslotArea {
            kind: resilience.as_str().to_string(),
            offset,
            size,
            encryption: None,
            key_size: None,
            extra: area_extra,
        },
        kdf: None,
        af: None,
        priority: Some(0),
        extra: ks_extra,
    }
}

/// Starts a key change on `vol` (`reencrypt --init-only`); returns the keys
/// the engine then needs.
pub fn init(vol: &mut Volume, opts: &InitOptions) -> Result<ReencryptKeys, ReencryptError> {
    vol.require_writable()?;
    let h = vol.luks2_header()?.clone();
    if h.meta.config.reencrypt_requirement().is_some() || h.meta.reencrypt_state()?.is_some() {
        return Err(ReencryptError::InReencryption);
    }
    vol.check_requirements()?;
    if h.meta.segments.len() != 1 {
        return Err(ReencryptError::Unsupported(
            "a volume with more than one segment".into(),
        ));
    }
    let (&seg_id, seg) = h.meta.segments.iter().next().expect("one segment");
    if seg.kind != "crypt" {
        return Err(ReencryptError::Unsupported(
            "encryption of plain data".into(),
        ));
    }
    let old_digest = h
        .meta
        .digest_of_segment(seg_id)
        .ok_or_else(|| ReencryptError::Invalid("the segment has no digest".into()))?;
    let (opened, old_key) = vol.luks2_unlock(&h, opts.passphrase, opts.keyslot, true)?;
    let key_len = match &opts.new_key {
        Some(k) => k.len(),
        None => opts.key_size.unwrap_or(old_key.len()),
    };
    let cipher = opts
        .cipher
        .clone()
        .unwrap_or_else(|| seg.encryption.clone().unwrap_or_default());
    let sector_size = opts.sector_size.unwrap_or(seg.sector_size);
    let spec =
        wrapcrypt_sector::CipherSpec::parse(&cipher).map_err(|e| ReencryptError::Cipher {
            cipher: cipher.clone(),
            reason: e.to_string(),
        })?;
    if spec.is_wrapped() != opts.new_key.is_some() {
        return Err(ReencryptError::Cipher {
            cipher: cipher.clone(),
            reason: if spec.is_wrapped() {
                "a wrapped-key cipher needs a key generated by its provider".into()
            } else {
                "a clear-key cipher takes a random key".into()
            },
        });
    }
    if !spec.key_len_valid(key_len) {
        return Err(ReencryptError::Cipher {
            cipher: cipher.clone(),
            reason: format!("key size {} bits is not available", key_len * 8),
        });
    }
    if !matches!(sector_size, 512 | 1024 | 2048 | 4096) {
        return Err(ReencryptError::Invalid(format!(
            "Unsupported encryption sector size {sector_size}."
        )));
    }
    let resilience = resilience_of(&opts.resilience)?;
    let new_key = match &opts.new_key {
        Some(k) => SecretBytes::copy_from(k.expose_secret()),
        None => SecretBytes::random(key_len)
            .map_err(|e| VolumeError::Param(format!("random volume key: {e}")))?,
    };

    // Write 1: a new keyslot per passphrase (the opened one, then
    // `more_keyslots`), unbound, each under the area cipher of the keyslot
    // it replaces (as cryptsetup does, whatever the new key size): areas
    // first, then one header write.
    let mut sources: Vec<(u32, &[u8])> = vec![(opened, opts.passphrase)];
    for &(slot, pass) in &opts.more_keyslots {
        if slot == opened || sources.iter().any(|(s, _)| *s == slot) {
            continue;
        }
        let (_, key) = vol.luks2_unlock(&h, pass, Some(slot), true)?;
        if !key.ct_eq(old_key.expose_secret()) {
            return Err(ReencryptError::Invalid(format!(
                "keyslot {slot} holds another volume key"
            )));
        }
        sources.push((slot, pass));
    }
    let af_hash = opts.pbkdf.hash.clone().unwrap_or_else(|| "sha256".into());
    let new_digest = (0..8)
        .find(|i| !h.meta.digests.contains_key(i))
        .ok_or(VolumeError::NoFreeKeyslot)?;
    // One header write per keyslot, as cryptsetup does (its epoch
    // counts them): each step leaves an ordinary volume with one more
    // unbound keyslot of the new key.
    let mut new_slots = Vec::new();
    for (from_slot, pass) in &sources {
        let cur = vol.luks2_header()?.clone();
        let from = &cur.meta.keyslots[from_slot];
        let (area_cipher, area_key_size) = match (&from.area.encryption, from.area.key_size) {
            (Some(c), Some(k)) if !c.starts_with("cipher_null") => (c.clone(), k),
            _ => ("aes-xts-plain64".to_string(), 64),
        };
        let kdf = opts.pbkdf.resolve(area_key_size as usize)?;
        let (ks, material) = seal_keyslot(
            &cur,
            &[],
            &new_key,
            pass,
            kdf,
            &area_cipher,
            area_key_size,
            &af_hash,
            None,
        )?;
        let slot = (0..KEYSLOTS_MAX)
            .find(|i| !cur.meta.keyslots.contains_key(i))
            .ok_or(VolumeError::NoFreeKeyslot)?;
        let mut n = cur.clone();
        let area_offset = ks.area.offset;
        n.meta.keyslots.insert(slot, ks);
        new_slots.push(slot);
        match n.meta.digests.get_mut(&new_digest) {
            Some(d) => d.keyslots.push(slot),
            None => {
                n.meta.digests.insert(
                    new_digest,
                    crate::make_digest(
                        &new_key,
                        HashAlg::Sha256,
                        vec![slot],
                        vec![],
                        opts.pbkdf.force_iterations,
                    )?,
                );
            }
        }
        n.validate(!vol.is_detached())?;
        vol.write_area(area_offset, &material)?;
        vol.luks2_write(n)?;
    }
    let new_slot = new_slots[0];
    let h = vol.luks2_header()?.clone();

    // Write 2: the reencryption metadata.
    let mut n = h.clone();
    let rslot = add_reencrypt_keyslot(
        &mut n,
        &resilience,
        ReencryptMode::Reencrypt,
        ReencryptDirection::Forward,
    )?;
    for v in &opts.new_tokens {
        let id = (0..wrapcrypt_format::luks2::TOKENS_MAX)
            .find(|i| !n.meta.tokens.contains_key(i))
            .ok_or_else(|| VolumeError::Param("no free token id".into()))?;
        let mut v = v.clone();
        v["keyslots"] = Value::from(vec![new_slot.to_string()]);
        n.meta.tokens.insert(
            id,
            wrapcrypt_format::luks2::Token::from_json(id, &v).map_err(VolumeError::from)?,
        );
    }
    let cur = seg.clone();
    let mut prev = cur.clone();
    prev.flags = Some(vec![FLAG_BACKUP_PREVIOUS.to_string()]);
    let mut fin = cur.clone();
    fin.encryption = Some(cipher);
    fin.sector_size = sector_size;
    fin.size = SegmentSize::Dynamic;
    fin.iv_tweak = 0;
    fin.flags = Some(vec![FLAG_BACKUP_FINAL.to_string()]);
    n.meta.segments.clear();
    n.meta.segments.insert(0, cur);
    n.meta.segments.insert(1, prev);
    n.meta.segments.insert(2, fin);
    for (&id, d) in n.meta.digests.iter_mut() {
        if id == old_digest {
            d.segments = vec![0, 1];
        } else if id == new_digest {
            d.segments = vec![2];
        }
    }
    let keys = ReencryptKeys {
        old: Some(old_key),
        new: Some(new_key),
    };
    let info = ReencryptInfo {
        keyslot: rslot,
        requirement: REQUIREMENT.into(),
        version: 2,
        mode: ReencryptMode::Reencrypt,
        direction: ReencryptDirection::Forward,
        resilience,
        previous_segment: 1,
        final_segment: 2,
        moved_segment: None,
        old_digest: Some(old_digest),
        new_digest: Some(new_digest),
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
    vol.luks2_write(n)?;
    Ok(keys)
}
