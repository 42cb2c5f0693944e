//! Encryption in place with a data shift (`reencrypt --encrypt
//! --reduce-device-size`), the backward, moved-segment loop as cryptsetup
//! 2.6 runs it. The plaintext (logical bytes `[0, data)`) lies at the
//! same physical offsets, except its first `shift` bytes, which the init
//! copied to the moved segment at the end of the device; the ciphertext
//! of logical byte `o` goes to physical `data_offset + o`, `shift` bytes
//! further on. Hotzones are `shift` bytes (the last but one may be
//! shorter) and go from the end towards the start, so a hotzone's write
//! never touches its own source, nor any source still to be read: the
//! source is intact after any crash, and recovering a cut hotzone is
//! doing it again (cryptsetup's `datashift` resilience). Per hotzone
//! `[o, o + len)`:
//!
//! 1. the `hot` header: the linear segments before it (the last one
//!    shrunk by `len`), the hotzone as a crypt segment flagged
//!    `in-reencryption`, then the crypt segment already done;
//! 2. the plaintext read from physical `o` (from the moved segment when
//!    `o` = 0), encrypted, written to `data_offset + o`, made durable;
//! 3. the `post` header: the hotzone merged into the crypt segment.
//!
//! After the last hotzone (`o` = 0) the final header comes straight after
//! it (cryptsetup writes a post state first, then wipes the moved segment,
//! then writes the final header; a crash after its wipe would leave a
//! header whose resume reads the wiped copy). Then the moved segment (the
//! plaintext copy of the head) and the reencrypt area are wiped.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use wrapcrypt_format::luks2::segment::FLAG_IN_REENCRYPTION;
use wrapcrypt_format::luks2::{
    Luks2Header, ReencryptDirection, ReencryptInfo, ReencryptMode, Resilience, Segment, SegmentSize,
};
use wrapcrypt_sector::SectorCipher;

use super::engine::{cipher, read_data, write_data};
use super::layout::{self, Layouts};
use super::{verify, Finished, ReencryptError, ReencryptKeys, ResumeOptions, Side};
use crate::{Device, Volume, VolumeError};

fn invalid(s: &str) -> ReencryptError {
    ReencryptError::Invalid(s.to_string())
}

fn fixed(s: &Segment) -> Result<u64, ReencryptError> {
    match s.size {
        SegmentSize::Fixed(v) => Ok(v),
        SegmentSize::Dynamic => Err(invalid(
            "a linear segment of a data shift has no fixed size",
        )),
    }
}

/// The regular (non-backup) segments of `h`, in id order.
fn regular(h: &Luks2Header) -> Vec<Segment> {
    h.meta
        .segments
        .values()
        .filter(|s| !s.is_backup())
        .cloned()
        .collect()
}

/// The next hotzone (offset, length) of the regular segments `regs`, as
/// cryptsetup computes it on load; `None` once no linear segment is left.
fn next_hotzone(regs: &[Segment], shift: u64) -> Result<Option<(u64, u64)>, ReencryptError> {
    let mut linear = 0;
    for s in regs.iter().filter(|s| s.kind == "linear") {
        linear += fixed(s)?;
    }
    if linear == 0 {
        return Ok(None);
    }
    if regs.len() == 1 {
        // Less data than one shift: the moved head is all of it.
        return Ok(Some((0, shift)));
    }
    let tmp = linear
        .checked_sub(shift)
        .ok_or_else(|| invalid("the linear segments are shorter than the data shift"))?;
    Ok(Some(if tmp > 0 && tmp < shift {
        (shift, tmp)
    } else {
        (tmp, shift)
    }))
}

/// The segments while `[o, o + len)` is being encrypted.
fn hot_segments(
    regs: &[Segment],
    fin: &Segment,
    data_offset: u64,
    o: u64,
    len: u64,
) -> Result<Vec<Segment>, ReencryptError> {
    let crypt = regs.iter().position(|s| s.kind == "crypt");
    let sg = regs
        .iter()
        .rposition(|s| s.kind == "linear")
        .ok_or_else(|| invalid("no linear segment left to encrypt"))?;
    let mut out = regs[..sg].to_vec();
    let size = fixed(&regs[sg])?;
    if size > len {
        let mut s = regs[sg].clone();
        s.size = SegmentSize::Fixed(size - len);
        out.push(s);
    }
    out.push(Segment {
        kind: "crypt".into(),
        offset: data_offset + o,
        size: SegmentSize::Fixed(len),
        iv_tweak: o / 512,
        encryption: fin.encryption.clone(),
        sector_size: fin.sector_size,
        flags: Some(vec![FLAG_IN_REENCRYPTION.to_string()]),
        extra: Default::default(),
    });
    if let Some(c) = crypt {
        out.push(regs[c].clone());
    }
    Ok(out)
}

/// The segments once `[o, o + len)` is encrypted: it joins the crypt
/// segment after it (dynamic once nothing linear is left before it).
fn post_segments(
    hot: &[Segment],
    data_offset: u64,
    o: u64,
    len: u64,
) -> Result<Vec<Segment>, ReencryptError> {
    let r = hot
        .iter()
        .position(|s| s.has_flag(FLAG_IN_REENCRYPTION))
        .ok_or_else(|| invalid("no segment in reencryption"))?;
    let mut out = hot[..r].to_vec();
    let (mut new, total) = match hot.get(r + 1) {
        Some(next) => {
            let mut n = next.clone();
            n.offset = data_offset + o;
            n.iv_tweak = o / 512;
            let total = match next.size {
                SegmentSize::Fixed(v) => v + len,
                SegmentSize::Dynamic => len,
            };
            (n, total)
        }
        None => {
            let mut n = hot[r].clone();
            n.flags = None;
            (n, len)
        }
    };
    new.size = if r > 0 {
        SegmentSize::Fixed(total)
    } else {
        SegmentSize::Dynamic
    };
    out.push(new);
    Ok(out)
}

struct Shift<'v> {
    vol: &'v mut Volume,
    data: Device,
    info: ReencryptInfo,
    prev: Segment,
    fin: Segment,
    moved: Segment,
    data_offset: u64,
    new: Arc<dyn SectorCipher>,
}

impl Shift<'_> {
    /// The header with regular segments `regs`, then the backups in
    /// cryptsetup's order; the new digest holds `backup-final`, then every
    /// regular crypt segment.
    fn header(&self, regs: Vec<Segment>) -> Result<Luks2Header, ReencryptError> {
        let mut n = self.vol.luks2_header()?.clone();
        let crypt: Vec<u32> = regs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == "crypt")
            .map(|(i, _)| i as u32)
            .collect();
        let mut map: BTreeMap<u32, Segment> = regs
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i as u32, s))
            .collect();
        let b = map.len() as u32;
        map.insert(b, self.prev.clone());
        map.insert(b + 1, self.fin.clone());
        map.insert(b + 2, self.moved.clone());
        n.meta.segments = map;
        if let Some(d) = self
            .info
            .new_digest
            .and_then(|d| n.meta.digests.get_mut(&d))
        {
            d.segments = std::iter::once(b + 1).chain(crypt).collect();
        }
        Ok(n)
    }

    /// Encrypts the plaintext of `[o, o + len)` to its shifted place.
    fn move_zone(&self, o: u64, len: u64) -> Result<(), ReencryptError> {
        let src = if o == 0 {
            self.moved.offset
        } else {
            self.prev.offset + o
        };
        let mut buf = read_data(&self.data, src, len)?;
        self.new
            .encrypt(self.fin.iv_tweak + o / 512, &mut buf)
            .map_err(|e| ReencryptError::Invalid(e.to_string()))?;
        write_data(&self.data, self.data_offset + o, &buf, true)
    }
}

/// Finishes the encryption with a data shift recorded in `vol`'s header.
pub(super) fn resume_encrypt_shift(
    vol: &mut Volume,
    keys: &ReencryptKeys,
    mut opts: ResumeOptions,
) -> Result<Finished, ReencryptError> {
    vol.require_writable()?;
    if opts.online.is_some() {
        return Err(ReencryptError::Unsupported(
            "online encryption with a data shift".into(),
        ));
    }
    let h = vol.luks2_header()?.clone();
    let info = h
        .meta
        .reencrypt_state()?
        .ok_or(ReencryptError::NotInReencryption)?;
    let shift = match (&info.resilience, info.mode, info.direction) {
        (
            Resilience::Datashift { shift_size },
            ReencryptMode::Encrypt,
            ReencryptDirection::Backward,
        ) => *shift_size,
        _ => {
            return Err(ReencryptError::Unsupported(format!(
                "{} {} with {} resilience",
                info.mode.as_str(),
                info.direction.as_str(),
                info.resilience
            )))
        }
    };
    let moved_id = info.moved_segment.ok_or_else(|| {
        ReencryptError::Unsupported(
            "encryption with a data shift and a detached header (no moved segment)".into(),
        )
    })?;
    verify::verify(&h.meta, &info, keys)?;
    let seg = |id: u32| h.meta.segments[&id].clone();
    let (prev, fin, moved) = (
        seg(info.previous_segment),
        seg(info.final_segment),
        seg(moved_id),
    );
    if fin.kind != "crypt" || prev.kind != "linear" || moved.kind != "linear" {
        return Err(invalid("unexpected backup segment types for an encryption"));
    }
    let data_offset = fin.offset;
    if data_offset < shift {
        return Err(ReencryptError::Unsupported(
            "a data shift larger than the data offset (detached header)".into(),
        ));
    }
    let data = Device::open(vol.data_path(), true).map_err(|source| VolumeError::Device {
        path: vol.data_path().display().to_string(),
        source,
    })?;
    let dev_size = data
        .size()
        .map_err(|e| VolumeError::io("sizing data device", data.path(), e))?;
    let device_size = dev_size
        .checked_sub(data_offset)
        .filter(|&s| s > 0)
        .ok_or_else(|| invalid("the device is smaller than the data offset"))?;
    if !device_size.is_multiple_of(fin.sector_size as u64)
        || moved.offset + fixed(&moved)? > dev_size
    {
        return Err(invalid(
            "the device size does not match the reencryption metadata",
        ));
    }
    let new = cipher(&fin, keys.new_key()?, Side::New, opts.wrapped)?;
    let run = Shift {
        vol,
        data,
        info,
        prev,
        fin,
        moved,
        data_offset,
        new,
    };
    let mut regs = regular(&h);
    let mut recovered = false;
    let mut steps = 0u64;
    let (mut o, mut len, mut progress, start);
    if let Some(hid) = run.info.hotzone {
        // A cut hotzone: its source is intact, do it again.
        let hot = &h.meta.segments[&hid];
        o = hot
            .offset
            .checked_sub(data_offset)
            .ok_or_else(|| invalid("hotzone before the data"))?;
        len = fixed(hot)?;
        if o + len > device_size {
            return Err(invalid("hotzone beyond the end of the device"));
        }
        run.move_zone(o, len)?;
        recovered = true;
        progress = device_size - o;
        start = device_size - o - len;
        if progress < device_size {
            regs = post_segments(&regs, data_offset, o, len)?;
            let n = run.header(regs.clone())?;
            run.vol.luks2_write(n)?;
        }
    } else {
        match next_hotzone(&regs, shift)? {
            Some((a, b)) => {
                o = a;
                len = b.min(device_size.saturating_sub(a));
                progress = device_size - o - len;
            }
            // Nothing left in the plaintext layout (cryptsetup's state
            // after the last hotzone): only the final header is missing.
            None => {
                o = 0;
                len = 0;
                progress = device_size;
            }
        }
        start = progress;
    }
    if progress < device_size {
        // Where the loop goes on from (after a recovery: the next one).
        if recovered {
            advance(&mut o, &mut len, shift);
        }
        loop {
            if let Some(p) = opts.progress.as_mut() {
                p(progress, device_size);
            }
            let hot = hot_segments(&regs, &run.fin, data_offset, o, len)?;
            let n = run.header(hot.clone())?;
            run.vol.luks2_write(n)?;
            run.move_zone(o, len)?;
            steps += 1;
            progress += len;
            if progress >= device_size {
                break;
            }
            regs = post_segments(&hot, data_offset, o, len)?;
            let n = run.header(regs.clone())?;
            run.vol.luks2_write(n)?;
            if opts.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                if let Some(p) = opts.progress.as_mut() {
                    p(progress, device_size);
                }
                return Err(ReencryptError::Interrupted {
                    done: progress,
                    total: device_size,
                });
            }
            advance(&mut o, &mut len, shift);
        }
    }
    if let Some(p) = opts.progress.as_mut() {
        p(device_size, device_size);
    }
    let l = Layouts {
        old: run.prev.clone(),
        new: run.fin.clone(),
        data_offset,
        data_size: device_size,
    };
    let cur = run.vol.luks2_header()?.clone();
    let (mut fin, wipe) = layout::final_header(&cur, &run.info, &l);
    if let Some(w) = opts.wrapped {
        w.finalize(&mut fin);
    }
    run.vol.luks2_write(fin)?;
    // The plaintext copy of the head, then the reencrypt area.
    let size = fixed(&run.moved)?;
    let mut noise = vec![0u8; size as usize];
    wrapcrypt_secret::fill_random(&mut noise)
        .map_err(|e| VolumeError::io("random", run.data.path(), e))?;
    write_data(&run.data, run.moved.offset, &noise, true)?;
    for (off, size) in wipe {
        run.vol.wipe_area(off, size)?;
    }
    Ok(Finished {
        bytes: device_size - start,
        data_size: device_size,
        recovered,
        steps,
    })
}

/// The hotzone after `[o, o + len)`, as cryptsetup steps backward with a
/// data shift: `shift` bytes further down; the one above the moved head
/// takes what is left; the moved head (`o` = 0) is `shift` bytes.
fn advance(o: &mut u64, len: &mut u64, shift: u64) {
    if *o > 0 {
        *o -= shift.min(*o);
    }
    if *o > 0 && *o < shift {
        *len = *o;
        *o = shift;
    }
    if *o == 0 {
        *len = shift;
    }
}
