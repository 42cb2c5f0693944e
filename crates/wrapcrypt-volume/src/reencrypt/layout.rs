//! The segments a forward reencryption writes, as cryptsetup 2.6 lays them
//! out: before a hotzone is rewritten (`hot`: new part, the hotzone flagged
//! `in-reencryption` under the new layout, old rest), after it (`post`: new
//! part, old rest), each followed by the backup segments; and the plain
//! header a finished reencryption leaves.

use std::collections::BTreeMap;

use wrapcrypt_format::luks2::segment::{
    FLAG_BACKUP_FINAL, FLAG_BACKUP_MOVED, FLAG_BACKUP_PREVIOUS, FLAG_IN_REENCRYPTION,
};
use wrapcrypt_format::luks2::{Luks2Header, ReencryptInfo, Segment, SegmentSize};

/// What a step needs to know of the layouts.
#[derive(Debug, Clone)]
pub(crate) struct Layouts {
    /// The backup-previous segment (the old layout).
    pub old: Segment,
    /// The backup-final segment (the new layout).
    pub new: Segment,
    /// Byte offset of the data on the device.
    pub data_offset: u64,
    /// Bytes of data (device size minus data offset).
    pub data_size: u64,
}

/// A regular segment of `template`'s layout over data bytes
/// `[start, start + size)`.
pub(crate) fn part(
    l: &Layouts,
    template: &Segment,
    start: u64,
    size: SegmentSize,
    flags: Option<Vec<String>>,
) -> Segment {
    Segment {
        kind: template.kind.clone(),
        offset: l.data_offset + start,
        size,
        iv_tweak: template.iv_tweak + start / 512,
        encryption: template.encryption.clone(),
        sector_size: template.sector_size,
        flags,
        extra: Default::default(),
    }
}

/// Regular segments, by id, with the digest each is assigned to (a
/// hotzone is assigned to both).
struct Plan {
    segs: Vec<Segment>,
    /// (segment index, digest is new?) in cryptsetup's assignment order.
    assign: Vec<(u32, bool)>,
}

fn hot(l: &Layouts, off: u64, len: u64) -> Plan {
    let mut segs = Vec::new();
    let mut assign = Vec::new();
    let hot_id = u32::from(off > 0);
    assign.push((hot_id, true));
    assign.push((hot_id, false));
    if off > 0 {
        segs.push(part(l, &l.new, 0, SegmentSize::Fixed(off), None));
        assign.push((0, true));
    }
    segs.push(part(
        l,
        &l.new,
        off,
        SegmentSize::Fixed(len),
        Some(vec![FLAG_IN_REENCRYPTION.to_string()]),
    ));
    if off + len < l.data_size {
        assign.push((segs.len() as u32, false));
        segs.push(part(l, &l.old, off + len, SegmentSize::Dynamic, None));
    }
    Plan { segs, assign }
}

fn post(l: &Layouts, end: u64) -> Plan {
    if end < l.data_size {
        Plan {
            segs: vec![
                part(l, &l.new, 0, SegmentSize::Fixed(end), None),
                part(l, &l.old, end, SegmentSize::Dynamic, None),
            ],
            assign: vec![(0, true), (1, false)],
        }
    } else {
        Plan {
            segs: vec![part(l, &l.new, 0, SegmentSize::Dynamic, None)],
            assign: vec![(0, true)],
        }
    }
}

/// The segment of `h` with `flag` (backup ids move as the regular
/// segments before them change in number).
fn flagged(h: &Luks2Header, flag: &str) -> Option<Segment> {
    h.meta.segments.values().find(|s| s.has_flag(flag)).cloned()
}

fn apply(h: &Luks2Header, info: &ReencryptInfo, plan: Plan) -> Luks2Header {
    let mut n = h.clone();
    let prev = flagged(h, FLAG_BACKUP_PREVIOUS).expect("backup-previous checked at load");
    let fin = flagged(h, FLAG_BACKUP_FINAL).expect("backup-final checked at load");
    let moved = flagged(h, FLAG_BACKUP_MOVED);
    let mut segs = BTreeMap::new();
    for (i, s) in plan.segs.into_iter().enumerate() {
        segs.insert(i as u32, s);
    }
    let prev_id = segs.len() as u32;
    segs.insert(prev_id, prev);
    segs.insert(prev_id + 1, fin);
    if let Some(m) = moved {
        segs.insert(prev_id + 2, m);
    }
    n.meta.segments = segs;
    let (old_d, new_d) = (info.old_digest, info.new_digest);
    for (&id, d) in n.meta.digests.iter_mut() {
        if Some(id) == old_d || Some(id) == new_d {
            d.segments.clear();
        }
    }
    let mut assign = plan.assign;
    assign.push((prev_id, false));
    assign.push((prev_id + 1, true));
    for (seg, is_new) in assign {
        let did = if is_new { new_d } else { old_d };
        if let Some(d) = did.and_then(|d| n.meta.digests.get_mut(&d)) {
            if !d.segments.contains(&seg) {
                d.segments.push(seg);
            }
        }
    }
    n
}

/// The header while the hotzone `[off, off + len)` is being rewritten.
pub(crate) fn hot_header(
    h: &Luks2Header,
    info: &ReencryptInfo,
    l: &Layouts,
    off: u64,
    len: u64,
) -> Luks2Header {
    apply(h, info, hot(l, off, len))
}

/// The header once data up to `end` is in the new layout.
pub(crate) fn post_header(
    h: &Luks2Header,
    info: &ReencryptInfo,
    l: &Layouts,
    end: u64,
) -> Luks2Header {
    apply(h, info, post(l, end))
}

/// The plain LUKS2 header a finished reencryption leaves: one segment in
/// the new layout, the keyslots of the new key, no reencrypt keyslot, no
/// requirement. Returns it with the keyslot areas to wipe afterwards.
pub(crate) fn final_header(
    h: &Luks2Header,
    info: &ReencryptInfo,
    l: &Layouts,
) -> (Luks2Header, Vec<(u64, u64)>) {
    let mut n = h.clone();
    let mut wipe = Vec::new();
    let mut gone: Vec<u32> = vec![info.keyslot];
    if info.old_digest != info.new_digest {
        if let Some(d) = info.old_digest.and_then(|d| h.meta.digests.get(&d)) {
            gone.extend(d.keyslots.iter().copied());
        }
    }
    for id in &gone {
        if let Some(ks) = n.meta.keyslots.remove(id) {
            wipe.push((ks.area.offset, ks.area.size));
        }
    }
    for t in n.meta.tokens.values_mut() {
        t.keyslots.retain(|k| !gone.contains(k));
    }
    let mut seg = part(l, &l.new, 0, SegmentSize::Dynamic, None);
    seg.extra = l.new.extra.clone();
    n.meta.segments = BTreeMap::from([(0, seg)]);
    for (&id, d) in n.meta.digests.iter_mut() {
        d.keyslots.retain(|k| !gone.contains(k));
        d.segments = if Some(id) == info.new_digest {
            vec![0]
        } else {
            vec![]
        };
    }
    n.meta
        .digests
        .retain(|_, d| !d.keyslots.is_empty() || !d.segments.is_empty());
    if let Some(r) = n.meta.config.requirements.as_mut() {
        r.retain(|x| *x != info.requirement);
        if r.is_empty() && n.meta.config.requirements_extra.is_empty() {
            n.meta.config.requirements = None;
        }
    }
    (n, wipe)
}
