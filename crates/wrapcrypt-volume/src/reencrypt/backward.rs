//! Decryption in place (`reencrypt --decrypt --header FILE`), the backward
//! direction as cryptsetup 2.6 runs it: hotzones from the end of the
//! device towards its start, so the plaintext grows from the end. Per
//! hotzone `[off, off + len)`, in cryptsetup's order:
//!
//! 1. its checksums (or, journal, the bytes) into the reencrypt area;
//! 2. the `hot` header: `crypt` [0, off) (old key), `linear` [off, off +
//!    len) flagged `in-reencryption`, `linear` [off + len, end) dynamic,
//!    then the backups; the old digest holds `backup-previous` and segment 0;
//! 3. the hotzone decrypted and written, made durable;
//! 4. the `post` header: `crypt` [0, off), `linear` [off, end) dynamic.
//!
//! After the last hotzone (off = 0) the final header comes straight after
//! it (as in the forward engine, no post state): one `linear` segment, no
//! keyslots, no digests, no requirement, as cryptsetup leaves it. The
//! keyslot areas are wiped afterwards.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::luks2::segment::{
    FLAG_BACKUP_FINAL, FLAG_BACKUP_PREVIOUS, FLAG_IN_REENCRYPTION,
};
use wrapcrypt_format::luks2::{
    Luks2Header, ReencryptInfo, ReencryptMode, Resilience, Segment, SegmentSize,
};
use wrapcrypt_sector::SectorCipher;

use super::engine::{checksums, cipher, read_data, write_data, DEFAULT_HOTZONE};
use super::layout::{part, Layouts};
use super::{verify, Finished, ReencryptError, ReencryptKeys, ResumeOptions, Side};
use crate::{Device, Volume, VolumeError};

enum Guard {
    Checksum { hash: HashAlg, block: u64 },
    Journal,
    None,
}

struct Back<'v> {
    vol: &'v mut Volume,
    data: Device,
    info: ReencryptInfo,
    l: Layouts,
    old: Arc<dyn SectorCipher>,
    guard: Guard,
    area_offset: u64,
    area_size: u64,
}

fn io(op: &'static str, dev: &Device, e: std::io::Error) -> ReencryptError {
    VolumeError::io(op, dev.path(), e).into()
}

/// The header with regular segments `segs`; the old digest gets
/// `backup-previous` and then, if `crypt_head`, segment 0.
fn apply(
    h: &Luks2Header,
    info: &ReencryptInfo,
    segs: Vec<Segment>,
    crypt_head: bool,
) -> Luks2Header {
    let mut n = h.clone();
    // Backup ids move as the regular segments change in number.
    let flagged = |f: &str| h.meta.segments.values().find(|s| s.has_flag(f)).cloned();
    let prev = flagged(FLAG_BACKUP_PREVIOUS).expect("backup-previous checked at load");
    let fin = flagged(FLAG_BACKUP_FINAL).expect("backup-final checked at load");
    let mut map: BTreeMap<u32, Segment> = segs
        .into_iter()
        .enumerate()
        .map(|(i, s)| (i as u32, s))
        .collect();
    let prev_id = map.len() as u32;
    map.insert(prev_id, prev);
    map.insert(prev_id + 1, fin);
    n.meta.segments = map;
    if let Some(d) = info.old_digest.and_then(|d| n.meta.digests.get_mut(&d)) {
        d.segments = vec![prev_id];
        if crypt_head {
            d.segments.push(0);
        }
    }
    n
}

impl Back<'_> {
    fn header(&self) -> Result<Luks2Header, ReencryptError> {
        Ok(self.vol.luks2_header()?.clone())
    }

    fn hot_header(&self, off: u64, len: u64) -> Result<Luks2Header, ReencryptError> {
        let l = &self.l;
        let mut segs = Vec::new();
        if off > 0 {
            segs.push(part(l, &l.old, 0, SegmentSize::Fixed(off), None));
        }
        segs.push(part(
            l,
            &l.new,
            off,
            SegmentSize::Fixed(len),
            Some(vec![FLAG_IN_REENCRYPTION.to_string()]),
        ));
        if off + len < l.data_size {
            segs.push(part(l, &l.new, off + len, SegmentSize::Dynamic, None));
        }
        Ok(apply(&self.header()?, &self.info, segs, off > 0))
    }

    fn post_header(&self, off: u64) -> Result<Luks2Header, ReencryptError> {
        let l = &self.l;
        let mut segs = Vec::new();
        if off > 0 {
            segs.push(part(l, &l.old, 0, SegmentSize::Fixed(off), None));
        }
        segs.push(part(l, &l.new, off, SegmentSize::Dynamic, None));
        Ok(apply(&self.header()?, &self.info, segs, off > 0))
    }

    fn read(&self, off: u64, len: u64) -> Result<Vec<u8>, ReencryptError> {
        read_data(&self.data, self.l.data_offset + off, len)
    }

    fn write(&self, off: u64, buf: &[u8], sync: bool) -> Result<(), ReencryptError> {
        write_data(&self.data, self.l.data_offset + off, buf, sync)
    }

    fn decrypt(&self, off: u64, buf: &mut [u8]) -> Result<(), ReencryptError> {
        self.old
            .decrypt(self.l.old.iv_tweak + off / 512, buf)
            .map_err(|e| ReencryptError::Invalid(e.to_string()))
    }

    fn step(&mut self, off: u64, len: u64) -> Result<(), ReencryptError> {
        let mut buf = self.read(off, len)?;
        let guarded = !matches!(self.guard, Guard::None);
        match self.guard {
            Guard::Checksum { hash, block } => {
                let sums = checksums(hash, block, &buf);
                self.vol.write_area(self.area_offset, &sums)?;
            }
            Guard::Journal => self.vol.write_area(self.area_offset, &buf)?,
            Guard::None => {}
        }
        if guarded {
            let h = self.hot_header(off, len)?;
            self.vol.luks2_write(h)?;
        }
        self.decrypt(off, &mut buf)?;
        self.write(off, &buf, guarded)?;
        if guarded && off > 0 {
            let h = self.post_header(off)?;
            self.vol.luks2_write(h)?;
        }
        Ok(())
    }

    /// Finishes the hotzone a crash interrupted; returns its start.
    fn recover(&mut self, hot: &Segment) -> Result<u64, ReencryptError> {
        let SegmentSize::Fixed(len) = hot.size else {
            return Err(ReencryptError::Invalid(
                "the in-reencryption segment has no fixed size".into(),
            ));
        };
        let off = hot
            .offset
            .checked_sub(self.l.data_offset)
            .ok_or_else(|| ReencryptError::Invalid("hotzone before the data".into()))?;
        if off + len > self.l.data_size {
            return Err(ReencryptError::Invalid(
                "hotzone beyond the end of the device".into(),
            ));
        }
        let meta = self.vol.meta_device();
        match self.guard {
            Guard::Checksum { hash, block } => {
                let n = hash.digest_len();
                let sums = len.div_ceil(block) as usize * n;
                if sums as u64 > self.area_size {
                    return Err(ReencryptError::Invalid(
                        "hotzone does not fit the checksum area".into(),
                    ));
                }
                let mut stored = vec![0u8; sums];
                meta.read_exact_at(self.area_offset, &mut stored)
                    .map_err(|e| io("reading reencrypt area", meta, e))?;
                let mut buf = self.read(off, len)?;
                let now = checksums(hash, block, &buf);
                let bs = block as usize;
                for (i, (a, b)) in now.chunks(n).zip(stored.chunks(n)).enumerate() {
                    // A block whose hash still matches is old ciphertext.
                    if a == b {
                        let end = ((i + 1) * bs).min(len as usize);
                        let chunk = &mut buf[i * bs..end];
                        let at = off + (i * bs) as u64;
                        self.decrypt(at, chunk)?;
                        self.write(at, chunk, false)?;
                    }
                }
                self.data
                    .sync()
                    .map_err(|e| io("syncing data", &self.data, e))?;
            }
            Guard::Journal => {
                if len > self.area_size {
                    return Err(ReencryptError::Invalid(
                        "hotzone does not fit the journal area".into(),
                    ));
                }
                let mut buf = vec![0u8; len as usize];
                meta.read_exact_at(self.area_offset, &mut buf)
                    .map_err(|e| io("reading reencrypt journal", meta, e))?;
                self.decrypt(off, &mut buf)?;
                self.write(off, &buf, true)?;
            }
            Guard::None => {
                return Err(ReencryptError::Invalid(
                    "an interrupted hotzone without resilience cannot be recovered".into(),
                ))
            }
        }
        if off > 0 {
            let h = self.post_header(off)?;
            self.vol.luks2_write(h)?;
        }
        Ok(off)
    }

    /// The plain header a finished decryption leaves, and the areas to wipe.
    fn final_header(&self) -> Result<(Luks2Header, Vec<(u64, u64)>), ReencryptError> {
        let mut n = self.header()?;
        let wipe = n
            .meta
            .keyslots
            .values()
            .map(|k| (k.area.offset, k.area.size))
            .collect();
        n.meta.keyslots.clear();
        n.meta.digests.clear();
        for t in n.meta.tokens.values_mut() {
            t.keyslots.clear();
        }
        let seg = part(&self.l, &self.l.new, 0, SegmentSize::Dynamic, None);
        n.meta.segments = BTreeMap::from([(0, seg)]);
        if let Some(r) = n.meta.config.requirements.as_mut() {
            r.retain(|x| *x != self.info.requirement);
            if r.is_empty() && n.meta.config.requirements_extra.is_empty() {
                n.meta.config.requirements = None;
            }
        }
        Ok((n, wipe))
    }
}

/// Finishes the decryption recorded in `vol`'s header (backward, no data
/// shift) with the old key.
pub(super) fn resume_decrypt(
    vol: &mut Volume,
    keys: &ReencryptKeys,
    mut opts: ResumeOptions,
) -> Result<Finished, ReencryptError> {
    let h = vol.luks2_header()?.clone();
    let info = h
        .meta
        .reencrypt_state()?
        .ok_or(ReencryptError::NotInReencryption)?;
    if info.mode != ReencryptMode::Decrypt || info.moved_segment.is_some() {
        return Err(ReencryptError::Unsupported(format!(
            "backward {} with a data shift",
            info.mode.as_str()
        )));
    }
    verify::verify(&h.meta, &info, keys)?;
    let (old_seg, new_seg) = (
        h.meta.segments[&info.previous_segment].clone(),
        h.meta.segments[&info.final_segment].clone(),
    );
    if old_seg.offset != new_seg.offset || new_seg.kind != "linear" {
        return Err(ReencryptError::Unsupported(
            "decryption to another data offset".into(),
        ));
    }
    let data = Device::open(vol.data_path(), true).map_err(|source| VolumeError::Device {
        path: vol.data_path().display().to_string(),
        source,
    })?;
    let dev_size = data
        .size()
        .map_err(|e| io("sizing data device", &data, e))?;
    let data_offset = old_seg.offset;
    let data_size = dev_size.saturating_sub(data_offset);
    let sector = old_seg.sector_size as u64;
    if data_size == 0 || !data_size.is_multiple_of(sector) {
        return Err(ReencryptError::Invalid(format!(
            "Data size {data_size} is not a multiple of the sector size {sector}."
        )));
    }
    let ks = &h.meta.keyslots[&info.keyslot];
    let (area_offset, area_size) = (ks.area.offset, ks.area.size);
    let (guard, protect_max, align) = match &info.resilience {
        Resilience::Checksum { hash, sector_size } => {
            let alg =
                HashAlg::from_name(hash).map_err(|e| ReencryptError::Invalid(e.to_string()))?;
            let block = *sector_size as u64;
            if !block.is_multiple_of(sector) {
                return Err(ReencryptError::Unsupported(format!(
                    "checksum block {block} smaller than the sector size {sector}"
                )));
            }
            let max = area_size / alg.digest_len() as u64 * block;
            (Guard::Checksum { hash: alg, block }, max, block)
        }
        Resilience::Journal => (Guard::Journal, area_size, sector),
        Resilience::None => (Guard::None, u64::MAX, sector),
        other => return Err(ReencryptError::Unsupported(format!("resilience {other}"))),
    };
    let max = opts
        .hotzone_size
        .unwrap_or(DEFAULT_HOTZONE)
        .min(protect_max)
        .min(1 << 30);
    let hotzone = max - max % align;
    if hotzone == 0 {
        return Err(ReencryptError::Invalid(format!(
            "Hotzone size must be a multiple of {align} bytes."
        )));
    }
    let old = cipher(&old_seg, keys.old_key()?, Side::Old, opts.wrapped)?;
    let l = Layouts {
        old: old_seg,
        new: new_seg,
        data_offset,
        data_size,
    };
    let mut run = Back {
        vol,
        data,
        info,
        l,
        old,
        guard,
        area_offset,
        area_size,
    };
    let mut recovered = false;
    // The boundary: everything from `left` to the end is plaintext.
    let mut left = if let Some(hid) = run.info.hotzone {
        let hot = h.meta.segments[&hid].clone();
        recovered = true;
        match opts.online {
            // Online: requests touching the hotzone wait while it is
            // recovered; the boundary then moves down to its start.
            Some(g) => {
                let start = hot.offset - data_offset;
                let end = match hot.size {
                    SegmentSize::Fixed(n) => start + n,
                    SegmentSize::Dynamic => data_size,
                };
                let mut at = start;
                g.exclusive(start, end, &mut || {
                    at = run.recover(&hot)?;
                    Ok(())
                })?;
                at
            }
            None => run.recover(&hot)?,
        }
    } else {
        run.info
            .old_segments
            .iter()
            .map(|id| {
                let s = &h.meta.segments[id];
                match s.size {
                    SegmentSize::Fixed(v) => s.offset - data_offset + v,
                    SegmentSize::Dynamic => data_size,
                }
            })
            .max()
            .unwrap_or(0)
    };
    // Hotzones end on the boundary; the last one (at the start) takes
    // what is left, as cryptsetup does.
    let start = left;
    let mut steps = 0u64;
    while left > 0 {
        let len = hotzone.min(left);
        let off = left - len;
        match opts.online {
            Some(g) => g.exclusive(off, left, &mut || run.step(off, len))?,
            None => run.step(off, len)?,
        }
        left = off;
        steps += 1;
        if let Some(p) = opts.progress.as_mut() {
            p(data_size - left, data_size);
        }
        if left > 0 && opts.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            if matches!(run.guard, Guard::None) {
                let h = run.post_header(left)?;
                run.vol.luks2_write(h)?;
            }
            return Err(ReencryptError::Interrupted {
                done: data_size - left,
                total: data_size,
            });
        }
    }
    let (fin, wipe) = run.final_header()?;
    run.vol.luks2_write(fin)?;
    for (off, size) in wipe {
        run.vol.wipe_area(off, size)?;
    }
    Ok(Finished {
        bytes: start,
        data_size,
        recovered,
        steps,
    })
}
