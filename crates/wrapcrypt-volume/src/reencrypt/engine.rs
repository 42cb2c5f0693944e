//! The step loop: recover an interrupted hotzone, move the remaining data
//! hotzone by hotzone, finalize. Each step, in cryptsetup's order:
//!
//! 1. read the hotzone as stored (old ciphertext);
//! 2. protect it: its per-block checksums (or, journal, the bytes
//!    themselves) into the reencrypt keyslot area, made durable;
//! 3. write the header with the hotzone flagged `in-reencryption`;
//! 4. decrypt with the old key, encrypt with the new, write, make durable;
//! 5. write the header with the hotzone in the new layout (after the last
//!    hotzone: the final plain header instead, see `Run::step`).
//!
//! A crash before 3 leaves the previous state (the area holds data no
//! header refers to); between 3 and 5 the hotzone is recovered on resume:
//! blocks whose hash still matches the stored checksum are old and are
//! rewritten, the others are already new.

use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Arc;

use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::luks2::{
    Luks2Header, ReencryptDirection, ReencryptInfo, ReencryptMode, Resilience, Segment, SegmentSize,
};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{new_soft_cipher, CipherSpec, SectorCipher};

use super::layout::{self, Layouts};
use super::{plain, verify, OnlineGate, ReencryptError, ReencryptKeys, Side, WrappedCiphers};
use crate::{Device, Volume, VolumeError};

/// Largest hotzone moved at once when none is asked for (bytes).
pub const DEFAULT_HOTZONE: u64 = 32 << 20;

/// How to run the remaining hotzones.
#[derive(Default)]
pub struct ResumeOptions<'a> {
    /// Largest hotzone in bytes (`--hotzone-size`); default 32 MiB, and
    /// never more than the resilience area protects.
    pub hotzone_size: Option<u64>,
    /// Called after each hotzone with (bytes done, bytes total).
    pub progress: Option<&'a mut dyn FnMut(u64, u64)>,
    /// Set (by a signal handler) to stop after the hotzone in flight, with
    /// the header recording the progress, as cryptsetup does on SIGINT.
    pub stop: Option<&'a AtomicBool>,
    /// Opens the ciphers of wrapped-key segments; without it such a
    /// segment is refused.
    pub wrapped: Option<&'a dyn WrappedCiphers>,
    /// Online: the open volume's data path, held off during each hotzone.
    pub online: Option<&'a dyn OnlineGate>,
}

/// A finished reencryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Bytes of data rewritten by this run.
    pub bytes: u64,
    /// Total data bytes of the volume.
    pub data_size: u64,
    /// Whether an interrupted hotzone was recovered first.
    pub recovered: bool,
    /// Hotzones this run moved.
    pub steps: u64,
}

/// Protection of the hotzone being rewritten.
enum Guard {
    Checksum { hash: HashAlg, block: u64 },
    Journal,
    None,
}

/// Everything one run of the engine holds.
struct Run<'v> {
    vol: &'v mut Volume,
    data: Device,
    info: ReencryptInfo,
    l: Layouts,
    old: Arc<dyn SectorCipher>,
    new: Arc<dyn SectorCipher>,
    guard: Guard,
    area_offset: u64,
    area_size: u64,
    buf: Vec<u8>,
}

pub(super) fn cipher(
    seg: &Segment,
    key: &SecretBytes,
    side: Side,
    wrapped: Option<&dyn WrappedCiphers>,
) -> Result<Arc<dyn SectorCipher>, ReencryptError> {
    let enc = seg.encryption.clone().unwrap_or_default();
    let err = |reason: String| ReencryptError::Cipher {
        cipher: enc.clone(),
        reason,
    };
    let spec = CipherSpec::parse(&enc).map_err(|e| err(e.to_string()))?;
    if spec.is_wrapped() {
        let w = wrapped.ok_or_else(|| {
            ReencryptError::Unsupported(format!(
                "wrapped-key cipher {enc} without its key provider"
            ))
        })?;
        return w.open(side, seg, key).map_err(err);
    }
    new_soft_cipher(&spec, key, seg.sector_size as usize)
        .map(Arc::from)
        .map_err(|e| err(e.to_string()))
}

/// One hash per `block` bytes of `buf` (the checksum resilience).
pub(super) fn checksums(hash: HashAlg, block: u64, buf: &[u8]) -> Vec<u8> {
    Run::checksums(hash, block, buf)
}

fn io(op: &'static str, dev: &Device, e: std::io::Error) -> ReencryptError {
    VolumeError::io(op, dev.path(), e).into()
}

/// `len` bytes of `dev` at byte `at`.
pub(super) fn read_data(dev: &Device, at: u64, len: u64) -> Result<Vec<u8>, ReencryptError> {
    let mut buf = vec![0u8; len as usize];
    dev.read_exact_at(at, &mut buf)
        .map_err(|e| io("reading data", dev, e))?;
    Ok(buf)
}

/// Writes `buf` to `dev` at byte `at`, made durable with `sync`.
pub(super) fn write_data(
    dev: &Device,
    at: u64,
    buf: &[u8],
    sync: bool,
) -> Result<(), ReencryptError> {
    dev.write_at(at, buf)
        .map_err(|e| io("writing data", dev, e))?;
    if sync {
        dev.sync().map_err(|e| io("syncing data", dev, e))?;
    }
    Ok(())
}

impl Run<'_> {
    fn header(&self) -> Result<Luks2Header, ReencryptError> {
        Ok(self.vol.luks2_header()?.clone())
    }

    fn read(&self, off: u64, len: u64) -> Result<Vec<u8>, ReencryptError> {
        read_data(&self.data, self.l.data_offset + off, len)
    }

    fn write(&self, off: u64, buf: &[u8], sync: bool) -> Result<(), ReencryptError> {
        write_data(&self.data, self.l.data_offset + off, buf, sync)
    }

    /// Old ciphertext of data bytes from `off` becomes new ciphertext.
    fn transform(&self, off: u64, buf: &mut [u8]) -> Result<(), ReencryptError> {
        let sector = |s: &Segment| s.iv_tweak + off / 512;
        let e = |e: wrapcrypt_sector::SectorError| ReencryptError::Invalid(e.to_string());
        self.old.decrypt(sector(&self.l.old), buf).map_err(e)?;
        self.new.encrypt(sector(&self.l.new), buf).map_err(e)?;
        Ok(())
    }

    /// One hash per `block` bytes, in order; large hotzones are hashed on
    /// two threads (hashing is most of the CPU time of a checksum run).
    fn checksums(hash: HashAlg, block: u64, buf: &[u8]) -> Vec<u8> {
        let n = hash.digest_len();
        // A last hotzone shorter than a block (data sizes need only be
        // whole sectors) gets a checksum of its partial block too.
        let blocks = buf.len().div_ceil(block as usize);
        let mut out = vec![0u8; blocks * n];
        let run = |data: &[u8], dst: &mut [u8]| {
            let mut h = hash.hasher();
            for (chunk, d) in data.chunks(block as usize).zip(dst.chunks_mut(n)) {
                h.update(chunk);
                h.finalize_into_reset(d);
            }
        };
        if blocks >= 64 && buf.len().is_multiple_of(block as usize) {
            let half = blocks / 2;
            let (a, b) = buf.split_at(half * block as usize);
            let (oa, ob) = out.split_at_mut(half * n);
            std::thread::scope(|sc| {
                sc.spawn(|| run(b, ob));
                run(a, oa);
            });
        } else {
            run(buf, &mut out);
        }
        out
    }

    fn write_area(&mut self, bytes: &[u8]) -> Result<(), ReencryptError> {
        let off = self.area_offset;
        Ok(self.vol.write_area(off, bytes)?)
    }

    /// One hotzone, `[off, off + len)`.
    fn step(&mut self, off: u64, len: u64) -> Result<(), ReencryptError> {
        // One buffer for the whole run: no fresh 32 MiB to fault in and
        // zero per hotzone.
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(len as usize, 0);
        self.data
            .read_exact_at(self.l.data_offset + off, &mut buf)
            .map_err(|e| io("reading data", &self.data, e))?;
        let r = self.step_with(off, len, &mut buf);
        self.buf = buf;
        r
    }

    fn step_with(&mut self, off: u64, len: u64, buf: &mut [u8]) -> Result<(), ReencryptError> {
        let guarded = !matches!(self.guard, Guard::None);
        match self.guard {
            Guard::Checksum { hash, block } => {
                let sums = Self::checksums(hash, block, buf);
                self.write_area(&sums)?;
            }
            Guard::Journal => self.write_area(buf)?,
            Guard::None => {}
        }
        let h = self.header()?;
        if guarded {
            self.vol
                .luks2_write(layout::hot_header(&h, &self.info, &self.l, off, len))?;
        }
        self.transform(off, buf)?;
        self.write(off, buf, guarded)?;
        // After the last hotzone the final header comes next, without the
        // post state cryptsetup writes first: that state (the whole device
        // in one segment of the new layout, backups beside it) reads to
        // cryptsetup 2.6.1 as "nothing done", and its resume after a crash
        // there would reencrypt new data again.
        if guarded && off + len < self.l.data_size {
            self.vol
                .luks2_write(layout::post_header(&h, &self.info, &self.l, off + len))?;
        }
        Ok(())
    }

    /// Finishes the hotzone a crash interrupted.
    fn recover(&mut self, hot: &Segment) -> Result<(), ReencryptError> {
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
        match self.guard {
            Guard::Checksum { hash, block } => {
                let sums = len.div_ceil(block) * hash.digest_len() as u64;
                if sums > self.area_size {
                    return Err(ReencryptError::Invalid(
                        "hotzone does not fit the checksum area".into(),
                    ));
                }
                let mut stored = vec![0u8; sums as usize];
                let meta = self.vol.meta_device();
                meta.read_exact_at(self.area_offset, &mut stored)
                    .map_err(|e| io("reading reencrypt area", meta, e))?;
                let mut buf = self.read(off, len)?;
                let now = Self::checksums(hash, block, &buf);
                let n = hash.digest_len();
                // Blocks whose hash still matches are old ciphertext, not yet
                // rewritten; each run of them is moved with one write.
                let old: Vec<bool> = now
                    .chunks(n)
                    .zip(stored.chunks(n))
                    .map(|(a, b)| a == b)
                    .collect();
                let bs = block as usize;
                let mut i = 0;
                while i < old.len() {
                    if !old[i] {
                        i += 1;
                        continue;
                    }
                    let start = i;
                    while i < old.len() && old[i] {
                        i += 1;
                    }
                    let run = &mut buf[start * bs..(i * bs).min(len as usize)];
                    let r_off = off + (start * bs) as u64;
                    self.transform(r_off, run)?;
                    self.write(r_off, run, false)?;
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
                let meta = self.vol.meta_device();
                let mut buf = vec![0u8; len as usize];
                meta.read_exact_at(self.area_offset, &mut buf)
                    .map_err(|e| io("reading reencrypt journal", meta, e))?;
                self.transform(off, &mut buf)?;
                self.write(off, &buf, true)?;
            }
            Guard::None => {
                return Err(ReencryptError::Invalid(
                    "an interrupted hotzone without resilience cannot be recovered".into(),
                ))
            }
        }
        if off + len < self.l.data_size {
            let h = self.header()?;
            self.vol
                .luks2_write(layout::post_header(&h, &self.info, &self.l, off + len))?;
        }
        Ok(())
    }
}

/// Finishes the forward reencryption recorded in `vol`'s header with
/// `keys` (see [`super::resume`]).
pub fn resume(
    vol: &mut Volume,
    keys: &ReencryptKeys,
    mut opts: ResumeOptions,
) -> Result<Finished, ReencryptError> {
    vol.require_writable()?;
    let h = vol.luks2_header()?.clone();
    let info = h
        .meta
        .reencrypt_state()?
        .ok_or(ReencryptError::NotInReencryption)?;
    // Encryption forward without a data shift (`--encrypt --header`) runs
    // the key-change loop with a linear (identity) old layout.
    let encrypt = info.mode == ReencryptMode::Encrypt;
    if info.mode != ReencryptMode::Reencrypt && !encrypt {
        return Err(ReencryptError::Unsupported(format!(
            "mode {}",
            info.mode.as_str()
        )));
    }
    if info.direction != ReencryptDirection::Forward {
        return Err(ReencryptError::Unsupported("backward direction".into()));
    }
    if info.moved_segment.is_some() || info.resilience.shift_size().is_some() {
        return Err(ReencryptError::Unsupported("data shift".into()));
    }
    verify::verify(&h.meta, &info, keys)?;
    let (old_seg, new_seg) = (
        h.meta.segments[&info.previous_segment].clone(),
        h.meta.segments[&info.final_segment].clone(),
    );
    if old_seg.offset != new_seg.offset {
        return Err(ReencryptError::Unsupported(
            "old and new data offsets differ".into(),
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
    let align = old_seg.sector_size.max(new_seg.sector_size) as u64;
    let data_size = dev_size.saturating_sub(data_offset);
    if data_size == 0 || data_size % align != 0 {
        return Err(ReencryptError::Invalid(format!(
            "Data size {data_size} is not a multiple of the sector size {align}."
        )));
    }
    let ks = &h.meta.keyslots[&info.keyslot];
    let (area_offset, area_size) = (ks.area.offset, ks.area.size);
    let (guard, protect_max) = match &info.resilience {
        Resilience::Checksum { hash, sector_size } => {
            let alg =
                HashAlg::from_name(hash).map_err(|e| ReencryptError::Invalid(e.to_string()))?;
            let block = *sector_size as u64;
            if !block.is_multiple_of(align) {
                return Err(ReencryptError::Unsupported(format!(
                    "checksum block {block} smaller than the sector size {align}"
                )));
            }
            let max = area_size / alg.digest_len() as u64 * block;
            (Guard::Checksum { hash: alg, block }, max)
        }
        Resilience::Journal => (Guard::Journal, area_size),
        Resilience::None => (Guard::None, u64::MAX),
        other => return Err(ReencryptError::Unsupported(format!("resilience {other}"))),
    };
    let align = match guard {
        Guard::Checksum { block, .. } => block.max(align),
        _ => align,
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
    let (old, new) = (
        match info.old_digest {
            Some(_) => cipher(&old_seg, keys.old_key()?, Side::Old, opts.wrapped)?,
            None if encrypt && old_seg.kind == "linear" => Arc::new(plain::Linear {
                sector: new_seg.sector_size as usize,
            }),
            None => return Err(ReencryptError::Unsupported("encryption".into())),
        },
        match info.new_digest {
            Some(_) => cipher(&new_seg, keys.new_key()?, Side::New, opts.wrapped)?,
            None => return Err(ReencryptError::Unsupported("decryption".into())),
        },
    );
    let l = Layouts {
        old: old_seg,
        new: new_seg,
        data_offset,
        data_size,
    };
    let mut run = Run {
        vol,
        data,
        info,
        l,
        old,
        new,
        guard,
        area_offset,
        area_size,
        buf: Vec::new(),
    };
    let mut recovered = false;
    if let Some(hid) = run.info.hotzone {
        let hot = h.meta.segments[&hid].clone();
        let start = hot.offset.saturating_sub(run.l.data_offset);
        let end = match hot.size {
            SegmentSize::Fixed(n) => start + n,
            SegmentSize::Dynamic => run.l.data_size,
        };
        match opts.online {
            Some(g) => g.exclusive(start, end, &mut || run.recover(&hot))?,
            None => run.recover(&hot)?,
        }
        recovered = true;
    }
    let cur = run.header()?;
    let now = cur
        .meta
        .reencrypt_state()?
        .ok_or(ReencryptError::NotInReencryption)?;
    let mut done = now
        .old_segments
        .iter()
        .map(|id| cur.meta.segments[id].offset - data_offset)
        .min()
        .unwrap_or(data_size);
    let (start, mut steps) = (done, 0u64);
    while done < data_size {
        let len = hotzone.min(data_size - done);
        match opts.online {
            Some(g) => g.exclusive(done, done + len, &mut || run.step(done, len))?,
            None => run.step(done, len)?,
        }
        done += len;
        steps += 1;
        if let Some(p) = opts.progress.as_mut() {
            p(done, data_size);
        }
        if done < data_size && opts.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            if matches!(run.guard, Guard::None) {
                // No per-hotzone commits without resilience: record now.
                let h = run.header()?;
                run.vol
                    .luks2_write(layout::post_header(&h, &run.info, &run.l, done))?;
            }
            return Err(ReencryptError::Interrupted {
                done,
                total: data_size,
            });
        }
    }
    // One header write ends the reencryption; areas are wiped only after
    // it, so a crash never leaves a header that refers to wiped keys.
    let h = run.header()?;
    let (mut fin, wipe) = layout::final_header(&h, &run.info, &run.l);
    if let Some(w) = opts.wrapped {
        w.finalize(&mut fin);
    }
    run.vol.luks2_write(fin)?;
    for (off, size) in wipe {
        run.vol.wipe_area(off, size)?;
    }
    Ok(Finished {
        bytes: data_size - start,
        data_size,
        recovered,
        steps,
    })
}
