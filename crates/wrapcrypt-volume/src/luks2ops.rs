//! LUKS2 operations: unlock, keyslot add/remove/change, header writes.

use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::keyslot_crypto::{self, SlotParams};
use wrapcrypt_format::luks2::{
    AfParams, Copy, Digest, Keyslot, KeyslotArea, Luks2Header, KEYSLOTS_MAX,
};
use wrapcrypt_secret::SecretBytes;

use crate::pbkdf::{kdf_params, PbkdfOptions};
use crate::{Volume, VolumeError};

/// Keyslot area cipher and size used for new keyslots, as cryptsetup does.
pub(crate) fn area_cipher_for(segment_cipher: &str, key_size: usize) -> (String, u32) {
    // Wrapped-key ciphers cannot encrypt keyslot areas (their keys live in
    // hardware); cryptsetup uses aes-xts-plain64 512-bit for paes, and so do
    // we for waes.
    if segment_cipher.starts_with("paes-")
        || segment_cipher.starts_with("waes-")
        || segment_cipher.starts_with("capi:")
    {
        return ("aes-xts-plain64".into(), 64);
    }
    if segment_cipher.starts_with("cipher_null") {
        return ("aes-xts-plain64".into(), 64);
    }
    (segment_cipher.to_string(), key_size as u32)
}

pub(crate) fn slot_params<'a>(ks: &'a Keyslot) -> Result<SlotParams<'a>, VolumeError> {
    let kdf = ks
        .kdf
        .as_ref()
        .ok_or_else(|| VolumeError::Unsupported("keyslot has no KDF".into()))?;
    let af = ks
        .af
        .as_ref()
        .ok_or_else(|| VolumeError::Unsupported("keyslot has no AF".into()))?;
    Ok(SlotParams {
        kdf: kdf_params(kdf)?,
        salt: kdf.salt(),
        area_cipher: ks.area.encryption.as_deref().unwrap_or(""),
        area_key_size: ks.area.key_size.unwrap_or(0) as usize,
        stripes: af.stripes,
        af_hash: &af.hash,
    })
}

/// Order in which keyslots are tried: high priority first, "ignore" (0)
/// only when named explicitly.
pub(crate) fn try_order(h: &Luks2Header, only: Option<u32>) -> Vec<u32> {
    if let Some(s) = only {
        return vec![s];
    }
    let mut v: Vec<(i32, u32)> = h
        .meta
        .keyslots
        .iter()
        .filter(|(_, k)| k.kind == "luks2")
        .map(|(&id, k)| (k.priority.unwrap_or(1), id))
        .filter(|(p, _)| *p != 0)
        .collect();
    v.sort_by_key(|&(p, id)| (-p, id));
    v.into_iter().map(|(_, id)| id).collect()
}

impl Volume {
    /// Verifies a key against the digest of keyslot `ks`.
    pub(crate) fn luks2_check_key(
        h: &Luks2Header,
        digest_id: u32,
        key: &SecretBytes,
    ) -> Result<bool, VolumeError> {
        let d = &h.meta.digests[&digest_id];
        Ok(keyslot_crypto::verify_key(
            &d.hash,
            key,
            &d.salt,
            d.iterations,
            &d.digest,
        )?)
    }

    pub(crate) fn luks2_unlock(
        &self,
        h: &Luks2Header,
        passphrase: &[u8],
        only: Option<u32>,
        need_bound: bool,
    ) -> Result<(u32, SecretBytes), VolumeError> {
        if let Some(s) = only {
            if s >= KEYSLOTS_MAX {
                return Err(VolumeError::KeyslotInvalid(s));
            }
            if !h.meta.keyslots.contains_key(&s) {
                return Err(VolumeError::KeyslotInactive(s));
            }
        }
        let seg_digest = h
            .meta
            .crypt_segment_id()
            .and_then(|s| h.meta.digest_of_segment(s));
        let mut tried = false;
        for id in try_order(h, only) {
            let ks = &h.meta.keyslots[&id];
            let Some(did) = h.meta.digest_of_keyslot(id) else {
                continue;
            };
            if need_bound && Some(did) != seg_digest {
                log::debug!("Keyslot {id} is not bound to the data segment, skipped.");
                continue;
            }
            tried = true;
            log::debug!("Trying to open LUKS2 keyslot {id}.");
            let p = slot_params(ks)?;
            log::debug!("Reading keyslot area [0x{:x}].", ks.area.offset);
            let area = self.read_keyslot_area(ks)?;
            let key = keyslot_crypto::open(&p, passphrase, &area, ks.key_size as usize)?;
            log::debug!("Verifying key from keyslot {id}, digest {did}.");
            if Self::luks2_check_key(h, did, &key)? {
                return Ok((id, key));
            }
            log::debug!("Digest {did} (pbkdf2) verify failed for keyslot {id}.");
        }
        // A keyslot named with -S that cannot serve is a wrong passphrase
        // for cryptsetup (exit 2); none at all to try is exit 1.
        if !tried && only.is_none() {
            return Err(VolumeError::NoUsableKeyslot);
        }
        Err(VolumeError::NoMatchingKeyslot)
    }

    fn read_keyslot_area(&self, ks: &Keyslot) -> Result<Vec<u8>, VolumeError> {
        let n = keyslot_crypto::split_size(
            ks.key_size as usize,
            ks.af.as_ref().map(|a| a.stripes).unwrap_or(4000),
        );
        let len = n.min(ks.area.size as usize);
        let mut buf = vec![0u8; len];
        self.meta_dev
            .read_exact_at(ks.area.offset, &mut buf)
            .map_err(|e| VolumeError::io("reading keyslot area", self.meta_dev.path(), e))?;
        Ok(buf)
    }

    /// Writes a new header: seqid + 1, primary copy then secondary, each
    /// made durable before the next write. A crash leaves one valid copy
    /// with the old or the new content, and load picks the newer valid one.
    pub(crate) fn luks2_write(&mut self, mut new: Luks2Header) -> Result<(), VolumeError> {
        self.require_writable()?;
        new.validate(!self.detached)?;
        let old_seqid = match &self.hdr {
            crate::Header::Luks2(h) => h.seqid,
            crate::Header::Luks1(_) => 0,
        };
        new.seqid = old_seqid.max(new.seqid) + 1;
        let p = new.encode_copy(Copy::Primary)?;
        let s = new.encode_copy(Copy::Secondary)?;
        let path = self.meta_dev.path().to_path_buf();
        log::debug!(
            "Trying to write LUKS2 header ({} bytes, seqid {}) at offset 0 and at offset {}.",
            p.len(),
            new.seqid,
            new.hdr_size
        );
        self.meta_dev
            .write_at(0, &p)
            .map_err(|e| VolumeError::io("writing primary header", &path, e))?;
        self.meta_dev
            .sync()
            .map_err(|e| VolumeError::io("syncing header", &path, e))?;
        self.meta_dev
            .write_at(new.hdr_size, &s)
            .map_err(|e| VolumeError::io("writing secondary header", &path, e))?;
        self.meta_dev
            .sync()
            .map_err(|e| VolumeError::io("syncing header", &path, e))?;
        self.hdr = crate::Header::Luks2(new);
        self.repair = None;
        Ok(())
    }

    /// Finds room for a keyslot area of `size` bytes in the keyslots area.
    pub(crate) fn luks2_alloc_area(
        h: &Luks2Header,
        size: u64,
        exclude: Option<u32>,
    ) -> Option<u64> {
        let start = 2 * h.hdr_size;
        let end = h.meta.keyslots_end(h.hdr_size);
        let mut used: Vec<(u64, u64)> = h
            .meta
            .keyslots
            .iter()
            .filter(|(id, _)| Some(**id) != exclude)
            .map(|(_, k)| (k.area.offset, k.area.offset + k.area.size))
            .collect();
        used.sort();
        let mut cur = start;
        for (a, b) in used {
            if a >= cur + size {
                break;
            }
            cur = cur.max(b);
        }
        (cur + size <= end).then_some(cur)
    }

    /// Stores `key` in a new keyslot (LUKS2). The keyslot material goes to an
    /// area no header references yet, then the header is written: a crash in
    /// between leaves the old header, and the volume opens as before.
    pub(crate) fn luks2_add_keyslot(
        &mut self,
        key: &SecretBytes,
        passphrase: &[u8],
        slot: Option<u32>,
        pbkdf: &PbkdfOptions,
        digest_id: DigestChoice,
        replace: Option<u32>,
    ) -> Result<u32, VolumeError> {
        let h = self.luks2_header()?.clone();
        let id = match slot {
            Some(s) if s >= KEYSLOTS_MAX => return Err(VolumeError::KeyslotInvalid(s)),
            Some(s) if h.meta.keyslots.contains_key(&s) && Some(s) != replace => {
                return Err(VolumeError::KeyslotFull(s))
            }
            Some(s) => s,
            None => match replace {
                Some(r) => r,
                None => (0..KEYSLOTS_MAX)
                    .find(|i| !h.meta.keyslots.contains_key(i))
                    .ok_or(VolumeError::NoFreeKeyslot)?,
            },
        };
        let seg = h
            .meta
            .crypt_segment_id()
            .and_then(|s| h.meta.segments.get(&s));
        let seg_cipher = seg
            .and_then(|s| s.encryption.clone())
            .unwrap_or_else(|| "aes-xts-plain64".into());
        // Take area parameters from an existing keyslot when there is one, so
        // a volume stays uniform, else derive them from the segment.
        let template = replace
            .and_then(|r| h.meta.keyslots.get(&r))
            .or_else(|| h.meta.keyslots.values().find(|k| k.kind == "luks2"));
        let (area_cipher, area_key_size) =
            match template.and_then(|t| Some((t.area.encryption.clone()?, t.area.key_size?))) {
                Some((c, k)) if key.len() == template.map(|t| t.key_size as usize).unwrap_or(0) => {
                    (c, k)
                }
                _ => area_cipher_for(&seg_cipher, key.len()),
            };
        let af_hash = template
            .and_then(|t| t.af.as_ref().map(|a| a.hash.clone()))
            .unwrap_or_else(|| pbkdf.hash.clone().unwrap_or_else(|| "sha256".into()));
        let af_hash = pbkdf.hash.clone().unwrap_or(af_hash);
        let kdf = pbkdf.resolve(area_key_size as usize)?;
        let priority = replace
            .and_then(|r| h.meta.keyslots.get(&r))
            .and_then(|k| k.priority);
        let (ks, material) = seal_keyslot(
            &h,
            &[],
            key,
            passphrase,
            kdf,
            &area_cipher,
            area_key_size,
            &af_hash,
            priority,
        )?;
        let (offset, area_size) = (ks.area.offset, ks.area.size);
        log::debug!("Keyslot {id} allocated, area [0x{offset:x}] of {area_size} bytes.");
        let mut new = h.clone();
        let old_area = replace
            .and_then(|r| h.meta.keyslots.get(&r))
            .map(|k| (k.area.offset, k.area.size));
        if let Some(r) = replace {
            new.meta.keyslots.remove(&r);
            for d in new.meta.digests.values_mut() {
                d.keyslots.retain(|&k| k != r);
            }
            for t in new.meta.tokens.values_mut() {
                if r != id {
                    t.keyslots.retain(|&k| k != r);
                }
            }
        }
        new.meta.keyslots.insert(id, ks);
        match digest_id {
            DigestChoice::Existing(did) => {
                let d = new
                    .meta
                    .digests
                    .get_mut(&did)
                    .ok_or_else(|| VolumeError::Param("digest missing".into()))?;
                d.keyslots.push(id);
                d.keyslots.sort();
            }
            DigestChoice::NewUnbound { hash } => {
                let did = (0..8)
                    .find(|i| !new.meta.digests.contains_key(i))
                    .ok_or(VolumeError::NoFreeKeyslot)?;
                let d = make_digest(key, hash, vec![id], vec![], pbkdf.force_iterations)?;
                new.meta.digests.insert(did, d);
            }
        }
        new.validate(!self.detached)?;
        // Material first (to an area unreferenced by the current header).
        debug_assert_eq!(material.len() as u64, area_size);
        self.write_area(offset, &material)?;
        self.luks2_write(new)?;
        if let Some((off, size)) = old_area {
            self.wipe_area(off, size)?;
        }
        Ok(id)
    }

    /// Removes keyslot `id`: header first, then the area is wiped, so a
    /// crash never leaves a header pointing to wiped material.
    pub(crate) fn luks2_remove_keyslot(&mut self, id: u32) -> Result<(), VolumeError> {
        let h = self.luks2_header()?.clone();
        let ks = h
            .meta
            .keyslots
            .get(&id)
            .ok_or(VolumeError::KeyslotInactive(id))?;
        let (off, size) = (ks.area.offset, ks.area.size);
        let mut new = h.clone();
        new.meta.keyslots.remove(&id);
        for t in new.meta.tokens.values_mut() {
            t.keyslots.retain(|&k| k != id);
        }
        let mut empty_digests = vec![];
        for (&did, d) in new.meta.digests.iter_mut() {
            d.keyslots.retain(|&k| k != id);
            if d.keyslots.is_empty() && d.segments.is_empty() {
                empty_digests.push(did);
            }
        }
        for did in empty_digests {
            new.meta.digests.remove(&did);
        }
        self.luks2_write(new)?;
        self.wipe_area(off, size)
    }

    /// Writes keyslot material and makes it durable.
    pub(crate) fn write_area(&mut self, offset: u64, material: &[u8]) -> Result<(), VolumeError> {
        log::debug!("Updating keyslot area [0x{offset:x}].");
        let path = self.meta_dev.path().to_path_buf();
        self.meta_dev
            .write_at(offset, material)
            .map_err(|e| VolumeError::io("writing keyslot area", &path, e))?;
        self.meta_dev
            .sync()
            .map_err(|e| VolumeError::io("syncing keyslot area", &path, e))
    }

    pub(crate) fn wipe_area(&mut self, off: u64, size: u64) -> Result<(), VolumeError> {
        log::debug!("Wiping keyslot area [0x{off:x}] ({size} bytes).");
        let path = self.meta_dev.path().to_path_buf();
        let mut buf = vec![0u8; size as usize];
        wrapcrypt_secret::fill_random(&mut buf).map_err(|e| VolumeError::io("random", &path, e))?;
        self.meta_dev
            .write_at(off, &buf)
            .map_err(|e| VolumeError::io("wiping keyslot area", &path, e))?;
        self.meta_dev
            .sync()
            .map_err(|e| VolumeError::io("syncing keyslot area", &path, e))
    }
}

/// Seals `key` under `passphrase` into a keyslot whose area lies in free
/// space of `h`, avoiding also the `planned` areas (offset, size) of other
/// keyslots being prepared in the same change. Returns the keyslot object
/// and its area material, padded to the area size.
#[allow(clippy::too_many_arguments)]
pub(crate) fn seal_keyslot(
    h: &Luks2Header,
    planned: &[(u64, u64)],
    key: &SecretBytes,
    passphrase: &[u8],
    kdf: wrapcrypt_format::luks2::KeyslotKdf,
    area_cipher: &str,
    area_key_size: u32,
    af_hash: &str,
    priority: Option<i32>,
) -> Result<(Keyslot, Vec<u8>), VolumeError> {
    let stripes = 4000;
    let area_size = (keyslot_crypto::split_size(key.len(), stripes) as u64).div_ceil(4096) * 4096;
    let mut scratch = h.clone();
    for (i, &(off, size)) in planned.iter().enumerate() {
        // Placeholder entries so the allocator steps around planned areas.
        let mut ks = h
            .meta
            .keyslots
            .values()
            .next()
            .cloned()
            .ok_or_else(|| VolumeError::Param("no keyslot to model".into()))?;
        ks.area.offset = off;
        ks.area.size = size;
        scratch.meta.keyslots.insert(KEYSLOTS_MAX + i as u32, ks);
    }
    let offset =
        Volume::luks2_alloc_area(&scratch, area_size, None).ok_or(VolumeError::NoFreeKeyslot)?;
    let params = SlotParams {
        kdf: kdf_params(&kdf)?,
        salt: kdf.salt(),
        area_cipher,
        area_key_size: area_key_size as usize,
        stripes,
        af_hash,
    };
    let mut material = keyslot_crypto::seal(&params, passphrase, key)?;
    material.resize(area_size as usize, 0);
    let ks = Keyslot {
        kind: "luks2".into(),
        key_size: key.len() as u32,
        area: KeyslotArea {
            kind: "raw".into(),
            offset,
            size: area_size,
            encryption: Some(area_cipher.to_string()),
            key_size: Some(area_key_size),
            extra: Default::default(),
        },
        kdf: Some(kdf),
        af: Some(AfParams {
            stripes,
            hash: af_hash.to_string(),
        }),
        priority,
        extra: Default::default(),
    };
    Ok((ks, material))
}

/// Which digest a new keyslot joins.
#[derive(Debug, Clone)]
pub enum DigestChoice {
    /// The digest that certifies the key already (usually segment 0's).
    Existing(u32),
    /// A new digest with no segment: an unbound keyslot.
    NewUnbound {
        /// digest hash
        hash: HashAlg,
    },
}

/// A new `pbkdf2` digest for `key`.
pub fn make_digest(
    key: &SecretBytes,
    hash: HashAlg,
    keyslots: Vec<u32>,
    segments: Vec<u32>,
    force_iterations: Option<u32>,
) -> Result<Digest, VolumeError> {
    let mut salt = vec![0u8; 32];
    wrapcrypt_secret::fill_random(&mut salt).map_err(|e| VolumeError::Param(e.to_string()))?;
    let iterations = crate::pbkdf::digest_iterations(hash, key.len(), force_iterations);
    let digest =
        keyslot_crypto::key_digest(hash.name(), key, &salt, iterations, hash.digest_len())?;
    Ok(Digest {
        kind: "pbkdf2".into(),
        keyslots,
        segments,
        hash: hash.name().to_string(),
        iterations,
        salt,
        digest,
        extra: Default::default(),
    })
}
