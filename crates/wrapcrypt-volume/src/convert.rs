//! In-place conversion between LUKS1 and LUKS2 (cryptsetup's `convert`),
//! with cryptsetup's layout and rules and a write order that keeps the
//! volume openable after a crash at any write (docs/luks1-conversion.md).
//!
//! Both directions move keyslot material, and the source and target areas
//! of one keyslot overlap. Each keyslot therefore moves through a scratch
//! area no header references: the material is copied there, the header in
//! force (still the old format) is rewritten to point at the copy, the
//! material is copied to its target, the header points there, and the
//! scratch copy is wiped. The format switch itself is one header write at
//! offset 0 made after every keyslot is in its final place.

use std::collections::BTreeMap;
use std::ops::Range;

use wrapcrypt_format::keyslot_crypto;
use wrapcrypt_format::luks1::{
    af_sectors, luks1_layout, Luks1Header, Luks1Keyslot, Luks1KeyslotState, Luks1Params,
    LUKS1_DIGEST_SIZE, LUKS1_NUM_KEYSLOTS, LUKS1_SALT_SIZE, LUKS1_STRIPES,
};
use wrapcrypt_format::luks2::{
    AfParams, Config, Copy, Digest, Keyslot, KeyslotArea, KeyslotKdf, Luks2Header, Metadata,
    Segment, SegmentSize,
};

use crate::{Header, Volume, VolumeError};

/// Metadata size of a converted LUKS2 header (cryptsetup's choice).
pub const CONVERT_METADATA_SIZE: u64 = 0x4000;
const SECTOR: u64 = 512;
const ALIGN: u64 = 4096;

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

fn to_luks2_invalid() -> VolumeError {
    VolumeError::Param("Cannot convert to LUKS2 format - invalid metadata.".into())
}

fn to_luks1_err(why: impl std::fmt::Display) -> VolumeError {
    VolumeError::Param(format!("Cannot convert to LUKS1 format - {why}"))
}

/// Lowest 4096-aligned start in `within` for `len` bytes that overlaps
/// none of `avoid`.
fn find_free(len: u64, within: Range<u64>, avoid: &[Range<u64>]) -> Option<u64> {
    let mut cur = align_up(within.start, ALIGN);
    let mut sorted: Vec<&Range<u64>> = avoid.iter().filter(|r| r.start < r.end).collect();
    sorted.sort_by_key(|r| r.start);
    loop {
        if cur + len > within.end {
            return None;
        }
        let cand = cur..cur + len;
        match sorted.iter().find(|r| overlaps(r, &cand)) {
            None => return Some(cur),
            Some(r) => cur = align_up(r.end, ALIGN),
        }
    }
}

impl Volume {
    fn read_material(&self, off: u64, len: usize) -> Result<Vec<u8>, VolumeError> {
        let mut buf = vec![0u8; len];
        self.meta_dev
            .read_exact_at(off, &mut buf)
            .map_err(|e| VolumeError::io("reading keyslot area", self.meta_dev.path(), e))?;
        Ok(buf)
    }

    /// The LUKS2 header cryptsetup makes from a LUKS1 one: PBKDF2 keyslots
    /// keep their numbers and move by the same distance so that the first
    /// area starts right after two 16 KiB metadata copies; the keyslots
    /// area reaches the payload.
    fn luks2_from_luks1(h: &Luks1Header, detached: bool) -> Result<Luks2Header, VolumeError> {
        let md = CONVERT_METADATA_SIZE;
        let area_size = align_up(u64::from(h.key_bytes()) * u64::from(LUKS1_STRIPES), ALIGN);
        let offs: Vec<u64> = h
            .keyslots()
            .iter()
            .map(|k| u64::from(k.key_material_offset) * SECTOR)
            .collect();
        let first = *offs.iter().min().ok_or_else(to_luks2_invalid)?;
        if offs.iter().any(|o| !o.is_multiple_of(ALIGN)) || first > 2 * md || detached {
            return Err(to_luks2_invalid());
        }
        let shift = 2 * md - first;
        let payload = h.payload_offset_bytes();
        let end = offs
            .iter()
            .map(|o| o + shift + area_size)
            .max()
            .unwrap_or(0);
        if end > payload {
            return Err(to_luks2_invalid());
        }
        let cipher = h.cipher_spec();
        let mut keyslots = BTreeMap::new();
        for k in h.active_keyslots() {
            let ks = &h.keyslots()[k];
            keyslots.insert(
                k as u32,
                Keyslot {
                    kind: "luks2".into(),
                    key_size: h.key_bytes(),
                    area: KeyslotArea {
                        kind: "raw".into(),
                        offset: offs[k] + shift,
                        size: area_size,
                        encryption: Some(cipher.clone()),
                        key_size: Some(h.key_bytes()),
                        extra: Default::default(),
                    },
                    kdf: Some(KeyslotKdf::Pbkdf2 {
                        hash: h.hash_spec().to_string(),
                        iterations: ks.iterations,
                        salt: ks.salt.to_vec(),
                    }),
                    af: Some(AfParams {
                        stripes: ks.stripes,
                        hash: h.hash_spec().to_string(),
                    }),
                    priority: None,
                    extra: Default::default(),
                },
            );
        }
        let mut digests = BTreeMap::new();
        digests.insert(
            0,
            Digest {
                kind: "pbkdf2".into(),
                keyslots: keyslots.keys().copied().collect(),
                segments: vec![0],
                hash: h.hash_spec().to_string(),
                iterations: h.mk_digest_iter(),
                salt: h.mk_digest_salt().to_vec(),
                digest: h.mk_digest().to_vec(),
                extra: Default::default(),
            },
        );
        let mut segments = BTreeMap::new();
        segments.insert(
            0,
            Segment {
                kind: "crypt".into(),
                offset: payload,
                size: SegmentSize::Dynamic,
                iv_tweak: 0,
                encryption: Some(cipher),
                sector_size: 512,
                flags: None,
                extra: Default::default(),
            },
        );
        let mut salts = [[0u8; 64]; 2];
        for s in salts.iter_mut() {
            wrapcrypt_secret::fill_random(s).map_err(|e| VolumeError::Param(e.to_string()))?;
        }
        let new = Luks2Header {
            hdr_size: md,
            seqid: 1,
            label: String::new(),
            subsystem: String::new(),
            uuid: h.uuid().to_string(),
            checksum_alg: "sha256".into(),
            salts,
            meta: Metadata {
                keyslots,
                tokens: Default::default(),
                segments,
                digests,
                config: Config {
                    json_size: md - 4096,
                    keyslots_size: (payload - 2 * md) / ALIGN * ALIGN,
                    flags: None,
                    requirements: None,
                    requirements_extra: Default::default(),
                    extra: Default::default(),
                },
                extra: Default::default(),
            },
            original: Default::default(),
        };
        new.validate(true).map_err(|_| to_luks2_invalid())?;
        Ok(new)
    }

    /// Converts a LUKS1 volume to LUKS2 in place (`convert --type luks2`).
    ///
    /// Keyslots move from the highest area down; each one goes through a
    /// scratch area (a free keyslot's area, else free room before the
    /// payload) with a phdr write after each copy, so the LUKS1 header in
    /// force always points at intact material. Only when all eight slots
    /// are active and no room is free does a slot move in place (a crash
    /// then can lose that one slot; the others stay usable). Then the
    /// LUKS2 secondary copy is written, and last the primary, whose write
    /// replaces the LUKS1 phdr.
    pub fn convert_to_luks2(&mut self) -> Result<(), VolumeError> {
        self.require_writable()?;
        let h = match &self.hdr {
            Header::Luks1(h) => h.clone(),
            Header::Luks2(_) => {
                return Err(VolumeError::Param("Device is already LUKS2 type.".into()))
            }
        };
        let new = Self::luks2_from_luks1(&h, self.detached)?;
        let len = af_sectors(h.key_bytes(), LUKS1_STRIPES) * SECTOR;
        let target = |k: usize| new_offset_sectors(&h, k);
        let mut cur = h.clone();
        let mut order: Vec<usize> = (0..LUKS1_NUM_KEYSLOTS).collect();
        order.sort_by_key(|&k| std::cmp::Reverse(h.keyslots()[k].key_material_offset));
        for k in order {
            let t = target(k);
            if !cur.keyslots()[k].is_active() {
                let mut ks = cur.keyslots()[k].clone();
                ks.key_material_offset = t;
                cur.set_keyslot(k, ks).map_err(VolumeError::Luks1)?;
                continue;
            }
            let from = u64::from(cur.keyslots()[k].key_material_offset) * SECTOR;
            let material = self.read_material(from, len as usize)?;
            let at = |c: &Luks1Header, slot: usize, off: u32| {
                let mut ks = c.keyslots()[slot].clone();
                ks.key_material_offset = off;
                (slot, ks)
            };
            let t_area = new_area(&h, k, len);
            let spare = (0..LUKS1_NUM_KEYSLOTS).find(|&j| {
                !cur.keyslots()[j].is_active() && !overlaps(&cur.keyslot_area(j), &t_area)
            });
            if let Some(j) = spare {
                // Trade places with a free slot: its area holds the copy.
                let d = cur.keyslots()[j].key_material_offset;
                let c_k = cur.keyslots()[k].key_material_offset;
                self.write_durable("writing keyslot area", u64::from(d) * SECTOR, &material)?;
                let mut step = cur.clone();
                step.set_keyslots(&[at(&cur, k, d), at(&cur, j, c_k)])
                    .map_err(VolumeError::Luks1)?;
                self.luks1_write(step.clone())?;
                self.write_durable("writing keyslot area", u64::from(t) * SECTOR, &material)?;
                let mut done = step.clone();
                done.set_keyslots(&[at(&step, k, t), at(&step, j, d)])
                    .map_err(VolumeError::Luks1)?;
                self.luks1_write(done.clone())?;
                self.wipe_area(u64::from(d) * SECTOR, len)?;
                cur = done;
            } else {
                let areas: Vec<Range<u64>> = (0..LUKS1_NUM_KEYSLOTS)
                    .flat_map(|s| [cur.keyslot_area(s), new_area(&h, s, len)])
                    .collect();
                let room = find_free(
                    len,
                    2 * CONVERT_METADATA_SIZE..h.payload_offset_bytes(),
                    &areas,
                );
                if let Some(g) = room {
                    self.write_durable("writing keyslot area", g, &material)?;
                    let mut step = cur.clone();
                    step.set_keyslots(&[at(&cur, k, (g / SECTOR) as u32)])
                        .map_err(VolumeError::Luks1)?;
                    self.luks1_write(step.clone())?;
                    cur = step;
                }
                self.write_durable("writing keyslot area", u64::from(t) * SECTOR, &material)?;
                let mut done = cur.clone();
                done.set_keyslots(&[at(&cur, k, t)])
                    .map_err(VolumeError::Luks1)?;
                self.luks1_write(done.clone())?;
                if let Some(g) = room {
                    self.wipe_area(g, len)?;
                }
                cur = done;
            }
        }
        self.luks2_switch(new)
    }

    /// Writes both copies of a LUKS2 header over a LUKS1 volume whose
    /// keyslots are already in place: secondary first (ignored while the
    /// phdr says version 1), then the primary, which replaces the phdr.
    fn luks2_switch(&mut self, new: Luks2Header) -> Result<(), VolumeError> {
        let s = new.encode_copy(Copy::Secondary)?;
        let p = new.encode_copy(Copy::Primary)?;
        self.write_durable("writing secondary header", new.hdr_size, &s)?;
        self.write_durable("writing primary header", 0, &p)?;
        self.hdr = Header::Luks2(new);
        self.repair = None;
        Ok(())
    }

    /// The LUKS1 header cryptsetup makes from a LUKS2 one, after checking
    /// cryptsetup's conditions (one 512-byte-sector segment, no tokens, a
    /// single PBKDF2 digest, PBKDF2 keyslots 0–7 with the digest's hash,
    /// area cipher and key size equal to the segment's).
    fn luks1_from_luks2(&self, h: &Luks2Header) -> Result<Luks1Header, VolumeError> {
        if self.detached {
            return Err(to_luks1_err("detached headers are not converted in place."));
        }
        if !h.meta.tokens.is_empty() {
            return Err(to_luks1_err(format!(
                "LUKS2 header contains {} token(s).",
                h.meta.tokens.len()
            )));
        }
        if h.meta.segments.len() != 1 {
            return Err(to_luks1_err("device uses more segments."));
        }
        let seg = h.meta.segments.values().next().expect("one segment");
        let cipher = seg.encryption.clone().unwrap_or_default();
        if seg.kind != "crypt" || seg.sector_size != 512 {
            return Err(to_luks1_err(
                "default segment encryption sector size is not 512 bytes.",
            ));
        }
        if cipher.starts_with("paes-") || cipher.starts_with("waes-") {
            return Err(to_luks1_err(format!(
                "device uses wrapped key cipher {cipher}."
            )));
        }
        let bad_digest = || to_luks1_err("key slot digests are not LUKS1 compatible.");
        if h.meta.digests.len() != 1 {
            return Err(bad_digest());
        }
        let d = h.meta.digests.values().next().expect("one digest");
        if d.kind != "pbkdf2"
            || d.salt.len() != LUKS1_SALT_SIZE
            || d.digest.len() < LUKS1_DIGEST_SIZE
            || d.segments != [0]
            || seg.iv_tweak != 0
            || !matches!(seg.size, SegmentSize::Dynamic)
        {
            return Err(bad_digest());
        }
        let (name, mode) = cipher.split_once('-').ok_or_else(bad_digest)?;
        let key_bytes = h
            .meta
            .keyslots
            .values()
            .next()
            .map(|k| k.key_size)
            .ok_or_else(|| to_luks1_err("keyslot 0 is in invalid state."))?;
        let mut active = vec![];
        for (&id, ks) in &h.meta.keyslots {
            if id as usize >= LUKS1_NUM_KEYSLOTS {
                return Err(to_luks1_err(format!(
                    "slot {id} (over maximum slots) is still active."
                )));
            }
            if ks.kind != "luks2" || !d.keyslots.contains(&id) {
                return Err(to_luks1_err(format!("keyslot {id} is in invalid state.")));
            }
            let ok = match (&ks.kdf, &ks.af) {
                (
                    Some(KeyslotKdf::Pbkdf2 {
                        hash,
                        iterations,
                        salt,
                    }),
                    Some(af),
                ) => {
                    hash.eq_ignore_ascii_case(&d.hash)
                        && af.hash.eq_ignore_ascii_case(&d.hash)
                        && af.stripes == LUKS1_STRIPES
                        && salt.len() == LUKS1_SALT_SIZE
                        && *iterations > 0
                        && ks.key_size == key_bytes
                        && ks.area.encryption.as_deref() == Some(cipher.as_str())
                        && ks.area.key_size == Some(key_bytes)
                }
                _ => false,
            };
            if !ok {
                return Err(to_luks1_err(format!(
                    "keyslot {id} is not LUKS1 compatible."
                )));
            }
            active.push(id as usize);
        }
        let (offsets, ks_end) = luks1_layout(key_bytes);
        if ks_end * SECTOR > seg.offset || !seg.offset.is_multiple_of(SECTOR) {
            return Err(VolumeError::Param(
                "Unable to move keyslot area. Not enough space.".into(),
            ));
        }
        let payload = u32::try_from(seg.offset / SECTOR).map_err(|_| bad_digest())?;
        let offsets = luks1_positions(h, &active, offsets);
        let mut mk_digest = [0u8; LUKS1_DIGEST_SIZE];
        mk_digest.copy_from_slice(&d.digest[..LUKS1_DIGEST_SIZE]);
        let mut mk_salt = [0u8; LUKS1_SALT_SIZE];
        mk_salt.copy_from_slice(&d.salt);
        let mut new = Luks1Header::new(&Luks1Params {
            cipher_name: name,
            cipher_mode: mode,
            hash_spec: &d.hash,
            payload_offset: payload,
            key_bytes,
            mk_digest,
            mk_digest_salt: mk_salt,
            mk_digest_iter: d.iterations,
            uuid: &h.uuid,
            key_material_offsets: offsets,
        })
        .map_err(|_| bad_digest())?;
        for k in active {
            let ks = &h.meta.keyslots[&(k as u32)];
            let Some(KeyslotKdf::Pbkdf2 {
                iterations, salt, ..
            }) = &ks.kdf
            else {
                unreachable!("checked above");
            };
            let mut s = [0u8; LUKS1_SALT_SIZE];
            s.copy_from_slice(salt);
            new.set_keyslot(
                k,
                Luks1Keyslot {
                    state: Luks1KeyslotState::Active,
                    iterations: *iterations,
                    salt: s,
                    key_material_offset: offsets[k],
                    stripes: LUKS1_STRIPES,
                },
            )
            .map_err(VolumeError::Luks1)?;
        }
        Ok(new)
    }

    /// Converts a LUKS2 volume to LUKS1 in place (`convert --type luks1`).
    ///
    /// Keyslots whose LUKS1 area lies in the LUKS2 keyslots area move there
    /// first, each through a scratch area, with a LUKS2 header write after
    /// each copy. A keyslot whose LUKS1 area overlaps the LUKS2 metadata
    /// (slot 0) is first parked clear of it; its material is written last,
    /// over the secondary LUKS2 copy (the primary still works), and then
    /// the 592-byte phdr replaces the primary. Leftover LUKS2 metadata and
    /// keyslot material are wiped after the switch.
    pub fn convert_to_luks1(&mut self) -> Result<(), VolumeError> {
        self.require_writable()?;
        self.check_requirements()?;
        let h = match &self.hdr {
            Header::Luks2(h) => h.clone(),
            Header::Luks1(_) => {
                return Err(VolumeError::Param("Device is already LUKS1 type.".into()))
            }
        };
        let target = self.luks1_from_luks2(&h)?;
        if crate::luks1_backup_len(&target) > 2 * h.hdr_size + h.meta.config.keyslots_size {
            return Err(VolumeError::Param(
                "Unable to move keyslot area. LUKS2 keyslots area too small.".into(),
            ));
        }
        let len = keyslot_crypto::split_size(target.key_bytes() as usize, LUKS1_STRIPES) as u64;
        let asz = align_up(len, ALIGN);
        let ks_start = 2 * h.hdr_size;
        let ks_end = ks_start + h.meta.config.keyslots_size;
        let slots: Vec<u32> = h.meta.keyslots.keys().copied().collect();
        let tgt = |id: u32| {
            let s = target.keyslot_area(id as usize).start;
            s..s + asz
        };
        let all_targets: Vec<Range<u64>> = slots.iter().map(|&id| tgt(id)).collect();
        let mut material = BTreeMap::new();
        for &id in &slots {
            let off = h.meta.keyslots[&id].area.offset;
            material.insert(id, self.read_material(off, len as usize)?);
        }
        let mut cur = h.clone();
        let area_of = |c: &Luks2Header, id: u32| {
            let a = &c.meta.keyslots[&id].area;
            a.offset..a.offset + a.size
        };
        let mut scratch_used: Vec<Range<u64>> = vec![];
        // Moves keyslot `id` to `to` under the LUKS2 header in force.
        let step = |vol: &mut Volume, c: &mut Luks2Header, id: u32, to: u64| {
            vol.write_durable("writing keyslot area", to, &material[&id])?;
            let mut n = c.clone();
            let a = &mut n.meta.keyslots.get_mut(&id).expect("keyslot").area;
            a.offset = to;
            a.size = asz;
            vol.luks2_write(n.clone())?;
            *c = n;
            Ok::<(), VolumeError>(())
        };
        let others = |c: &Luks2Header, id: u32| -> Vec<Range<u64>> {
            slots
                .iter()
                .filter(|&&o| o != id)
                .map(|&o| area_of(c, o))
                .collect()
        };
        for &id in &slots {
            let t = tgt(id);
            let low = t.start < ks_start;
            // Another keyslot still sitting on this target is parked first.
            for &m in &slots {
                if m != id
                    && overlaps(&area_of(&cur, m), &t)
                    && area_of(&cur, m).start != tgt(m).start
                {
                    let mut avoid = others(&cur, m);
                    avoid.extend(all_targets.iter().cloned());
                    avoid.push(area_of(&cur, m));
                    let s = find_free(asz, ks_start..ks_end, &avoid).ok_or_else(|| {
                        VolumeError::Param("Unable to move keyslot area. Not enough space.".into())
                    })?;
                    let old = area_of(&cur, m);
                    step(self, &mut cur, m, s)?;
                    scratch_used.push(s..s + asz);
                    scratch_used.push(old);
                }
            }
            let here = area_of(&cur, id);
            if low {
                if overlaps(&here, &(0..t.end)) {
                    let mut avoid = others(&cur, id);
                    avoid.extend(all_targets.iter().cloned());
                    avoid.push(here.clone());
                    if let Some(s) = find_free(asz, ks_start..ks_end, &avoid) {
                        step(self, &mut cur, id, s)?;
                        scratch_used.push(s..s + asz);
                    }
                }
                continue;
            }
            if here.start == t.start {
                continue;
            }
            if overlaps(&here, &t) {
                let mut avoid = others(&cur, id);
                avoid.push(t.clone());
                avoid.push(here.clone());
                if let Some(s) = find_free(asz, ks_start..ks_end, &avoid) {
                    step(self, &mut cur, id, s)?;
                    scratch_used.push(s..s + asz);
                }
            }
            let before = area_of(&cur, id);
            step(self, &mut cur, id, t.start)?;
            if !all_targets.iter().any(|a| overlaps(a, &before)) {
                scratch_used.push(before);
            }
        }
        // Keyslot material below the keyslots area goes last. The part past
        // the primary copy overwrites only the secondary LUKS2 copy (the
        // primary stays in force); the part inside the primary copy goes
        // out in the same single write as the phdr, which is the switch.
        let hs = h.hdr_size;
        let mut head = vec![0u8; hs as usize];
        head[..592].copy_from_slice(&target.encode());
        for &id in &slots {
            let t = tgt(id);
            if t.start >= ks_start {
                continue;
            }
            let m = &material[&id];
            let mend = t.start + m.len() as u64;
            if mend > hs {
                let from = t.start.max(hs);
                let part = &m[(from - t.start) as usize..];
                self.write_durable("writing keyslot area", from, part)?;
            }
            if t.start < hs {
                let n = (hs.min(mend) - t.start) as usize;
                head[t.start as usize..t.start as usize + n].copy_from_slice(&m[..n]);
            }
        }
        let path = self.meta_dev.path().to_path_buf();
        self.write_durable("writing LUKS1 header", 0, &head)?;
        self.hdr = Header::Luks1(target.clone());
        self.repair = None;
        // Clean-up: stale LUKS2 JSON after the phdr, unused LUKS1 areas
        // (which may hold LUKS2 metadata), and the old keyslots area.
        let first = (0..LUKS1_NUM_KEYSLOTS)
            .map(|k| target.keyslot_area(k).start)
            .min()
            .unwrap_or(ALIGN);
        if first > hs {
            let zero = vec![0u8; (first - hs) as usize];
            self.write_durable("wiping old metadata", hs, &zero)?;
        }
        for k in 0..LUKS1_NUM_KEYSLOTS {
            if !target.keyslots()[k].is_active() {
                let a = target.keyslot_area(k);
                self.wipe_area(a.start, a.end - a.start)?;
            }
        }
        let l1_end = crate::luks1_backup_len(&target);
        let mut wipe: Vec<Range<u64>> = scratch_used
            .into_iter()
            .chain(
                h.meta
                    .keyslots
                    .values()
                    .map(|k| k.area.offset..k.area.offset + k.area.size),
            )
            .map(|r| r.start.max(l1_end)..r.end.min(ks_end))
            .filter(|r| r.start < r.end)
            .collect();
        wipe.sort_by_key(|r| r.start);
        wipe.dedup();
        for r in wipe {
            self.wipe_area(r.start, r.end - r.start)
                .map_err(|e| match e {
                    VolumeError::Io { source, .. } => {
                        VolumeError::io("wiping old keyslot area", &path, source)
                    }
                    other => other,
                })?;
        }
        Ok(())
    }
}

/// Sector of keyslot `k`'s area in the LUKS2 layout of a converted header.
fn new_offset_sectors(h: &Luks1Header, k: usize) -> u32 {
    let first = h
        .keyslots()
        .iter()
        .map(|s| s.key_material_offset)
        .min()
        .unwrap_or(8);
    let shift = (2 * CONVERT_METADATA_SIZE / SECTOR) as u32 - first;
    h.keyslots()[k].key_material_offset + shift
}

fn new_area(h: &Luks1Header, k: usize, len: u64) -> Range<u64> {
    let s = u64::from(new_offset_sectors(h, k)) * SECTOR;
    s..s + len
}

/// LUKS1 key material offsets for the keyslots of a LUKS2 header, as
/// cryptsetup assigns them: an active keyslot keeps its place relative to
/// the start of the keyslots area (the inverse of the LUKS1 -> LUKS2
/// shift) when that is a slot position of the LUKS1 layout; the other
/// positions go to the remaining keyslots in order.
fn luks1_positions(
    h: &Luks2Header,
    active: &[usize],
    layout: [u32; LUKS1_NUM_KEYSLOTS],
) -> [u32; LUKS1_NUM_KEYSLOTS] {
    let base = u64::from(layout[0]) * SECTOR;
    let mut taken = [false; LUKS1_NUM_KEYSLOTS];
    let mut out = [u32::MAX; LUKS1_NUM_KEYSLOTS];
    for &k in active {
        let off = h.meta.keyslots[&(k as u32)].area.offset;
        let want = (off + base).checked_sub(2 * h.hdr_size).map(|b| b / SECTOR);
        if let Some(p) = layout
            .iter()
            .position(|&l| Some(u64::from(l)) == want)
            .filter(|&p| !taken[p])
        {
            taken[p] = true;
            out[k] = layout[p];
        }
    }
    let mut free = (0..LUKS1_NUM_KEYSLOTS).filter(|&p| !taken[p]);
    for slot in out.iter_mut() {
        if *slot == u32::MAX {
            *slot = layout[free.next().expect("eight positions for eight slots")];
        }
    }
    out
}
