//! The JSON metadata object and its cross-section validation.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::binary::BIN_HDR_SIZE;
use super::config::Config;
use super::digest::{Digest, DIGESTS_MAX};
use super::error::{Area, Section, ValidateError};
use super::jsonutil::{parse_id, Obj};
use super::keyslot::{Keyslot, KeyslotHandler, Luks2Keyslot, ReencryptKeyslot, KEYSLOTS_MAX};
use super::segment::{
    Segment, SegmentSize, FLAG_BACKUP_FINAL, FLAG_BACKUP_PREVIOUS, FLAG_IN_REENCRYPTION,
    SEGMENTS_MAX,
};
use super::token::{Token, TOKENS_MAX};

/// The whole LUKS2 JSON metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// Keyslots by id.
    pub keyslots: BTreeMap<u32, Keyslot>,
    /// Tokens by id.
    pub tokens: BTreeMap<u32, Token>,
    /// Segments by id.
    pub segments: BTreeMap<u32, Segment>,
    /// Digests by id.
    pub digests: BTreeMap<u32, Digest>,
    /// Config.
    pub config: Config,
    /// Unknown top-level members, preserved.
    pub extra: Map<String, Value>,
}

fn section<'a, T>(
    root: &Obj<'a>,
    name: &'static str,
    sec: Section,
    max: u32,
    f: impl Fn(u32, &Value) -> Result<T, ValidateError>,
) -> Result<BTreeMap<u32, T>, ValidateError> {
    let o = Obj::of(sec, None, root.req(name)?, name)?;
    let mut out = BTreeMap::new();
    for (k, v) in o.map {
        let id = parse_id(sec, k, max)?;
        if out.insert(id, f(id, v)?).is_some() {
            return Err(ValidateError::BadId {
                section: sec,
                id: k.clone(),
            });
        }
    }
    Ok(out)
}

impl Metadata {
    /// Decodes and validates the JSON value (structure and references; the
    /// on-disk layout is checked by [`Metadata::validate_layout`]).
    pub fn from_json(v: &Value) -> Result<Metadata, ValidateError> {
        let root = Obj::of(Section::Root, None, v, "metadata")?;
        let m = Metadata {
            keyslots: section(
                &root,
                "keyslots",
                Section::Keyslots,
                KEYSLOTS_MAX,
                Keyslot::from_json,
            )?,
            tokens: section(
                &root,
                "tokens",
                Section::Tokens,
                TOKENS_MAX,
                Token::from_json,
            )?,
            segments: section(
                &root,
                "segments",
                Section::Segments,
                SEGMENTS_MAX,
                Segment::from_json,
            )?,
            digests: section(
                &root,
                "digests",
                Section::Digests,
                DIGESTS_MAX,
                Digest::from_json,
            )?,
            config: Config::from_json(root.req("config")?)?,
            extra: root.rest(&["keyslots", "tokens", "segments", "digests", "config"]),
        };
        // cryptsetup: segment ids run 0..n without gaps.
        if let Some((_, &id)) = m
            .segments
            .keys()
            .enumerate()
            .find(|&(i, &id)| id as usize != i)
        {
            return Err(ValidateError::BadId {
                section: Section::Segments,
                id: id.to_string(),
            });
        }
        m.validate_segment_roles()?;
        m.validate_reencrypt_segments()?;
        m.validate_references()?;
        m.validate_reencrypt_keyslots()?;
        Ok(m)
    }

    /// Encodes to a JSON value, sections in cryptsetup's order.
    pub fn to_json(&self) -> Value {
        fn sec<T>(m: &BTreeMap<u32, T>, f: impl Fn(&T) -> Value) -> Value {
            Value::Object(m.iter().map(|(k, v)| (k.to_string(), f(v))).collect())
        }
        let mut m = Map::new();
        m.insert("keyslots".into(), sec(&self.keyslots, Keyslot::to_json));
        m.insert("tokens".into(), sec(&self.tokens, Token::to_json));
        m.insert("segments".into(), sec(&self.segments, Segment::to_json));
        m.insert("digests".into(), sec(&self.digests, Digest::to_json));
        m.insert("config".into(), self.config.to_json());
        m.extend(self.extra.clone());
        Value::Object(m)
    }

    fn validate_references(&self) -> Result<(), ValidateError> {
        let mut ks_owner: BTreeMap<u32, u32> = BTreeMap::new();
        let mut seg_owner: BTreeMap<u32, u32> = BTreeMap::new();
        for (&id, d) in &self.digests {
            for &k in &d.keyslots {
                if !self.keyslots.contains_key(&k) {
                    return Err(dangling(
                        Section::Digests,
                        id,
                        "keyslots",
                        Section::Keyslots,
                        k,
                    ));
                }
                if ks_owner.insert(k, id).is_some() {
                    return Err(ValidateError::Invalid {
                        section: Section::Digests,
                        id: Some(id),
                        field: "keyslots".into(),
                        reason: format!("keyslot {k} is assigned to more than one digest"),
                    });
                }
            }
            for &s in &d.segments {
                if !self.segments.contains_key(&s) {
                    return Err(dangling(
                        Section::Digests,
                        id,
                        "segments",
                        Section::Segments,
                        s,
                    ));
                }
                // The hotzone of a reencryption interrupted mid-write (flag
                // in-reencryption) holds data under both keys: cryptsetup
                // assigns it to the old and the new digest.
                let hot = self.segments[&s].has_flag(FLAG_IN_REENCRYPTION);
                if seg_owner.insert(s, id).is_some() && !hot {
                    return Err(ValidateError::Invalid {
                        section: Section::Digests,
                        id: Some(id),
                        field: "segments".into(),
                        reason: format!("segment {s} is assigned to more than one digest"),
                    });
                }
            }
        }
        for (&id, t) in &self.tokens {
            for &k in &t.keyslots {
                if !self.keyslots.contains_key(&k) {
                    return Err(dangling(
                        Section::Tokens,
                        id,
                        "keyslots",
                        Section::Keyslots,
                        k,
                    ));
                }
            }
        }
        // cryptsetup: every luks2 keyslot belongs to exactly one digest and
        // every crypt segment (backup segments too) to one; otherwise the
        // header is invalid. A reencrypt keyslot's digest (verification of
        // the reencryption metadata) is checked by the reencryption state.
        if let Some((&k, _)) = self
            .keyslots
            .iter()
            .find(|(k, ks)| ks.kind == Luks2Keyslot::TYPE && !ks_owner.contains_key(k))
        {
            return Err(ValidateError::Invalid {
                section: Section::Keyslots,
                id: Some(k),
                field: "digests".into(),
                reason: "keyslot is not assigned to any digest".into(),
            });
        }
        if let Some((&s, _)) = self
            .segments
            .iter()
            .find(|(s, seg)| seg.kind == "crypt" && !seg_owner.contains_key(s))
        {
            return Err(ValidateError::Invalid {
                section: Section::Segments,
                id: Some(s),
                field: "digests".into(),
                reason: "crypt segment is not assigned to any digest".into(),
            });
        }
        for (&id, k) in &self.keyslots {
            if k.key_size == 0 && k.kind != ReencryptKeyslot::TYPE {
                return Err(ValidateError::Invalid {
                    section: Section::Keyslots,
                    id: Some(id),
                    field: "key_size".into(),
                    reason: "must not be zero".into(),
                });
            }
        }
        Ok(())
    }

    /// cryptsetup: regular segments come first (ids 0..k), backup segments
    /// after them, and there is at least one regular segment.
    fn validate_segment_roles(&self) -> Result<(), ValidateError> {
        let Some(first_backup) = self
            .segments
            .iter()
            .find(|(_, s)| s.is_backup())
            .map(|(&id, _)| id)
        else {
            return Ok(());
        };
        if first_backup == 0 {
            return Err(ValidateError::Invalid {
                section: Section::Segments,
                id: Some(0),
                field: "flags".into(),
                reason: "segment 0 is a backup segment: no regular segment".into(),
            });
        }
        if let Some((&id, _)) = self
            .segments
            .range(first_backup..)
            .find(|(_, s)| !s.is_backup())
        {
            return Err(ValidateError::Invalid {
                section: Section::Segments,
                id: Some(id),
                field: "flags".into(),
                reason: format!("regular segment after backup segment {first_backup}"),
            });
        }
        Ok(())
    }

    /// cryptsetup: while the reencryption requirement is set, backup
    /// segments `backup-previous` and `backup-final` exist, and each regular
    /// segment has the layout (type; cipher and sector size for crypt) of
    /// one of them (of the final one if flagged `in-reencryption`).
    fn validate_reencrypt_segments(&self) -> Result<(), ValidateError> {
        if self.config.reencrypt_requirement().is_none() {
            return Ok(());
        }
        let (mut previous, mut fin) = (None, None);
        for s in self.segments.values().filter(|s| s.is_backup()) {
            if s.has_flag(FLAG_BACKUP_FINAL) {
                fin = Some(s);
            } else if s.has_flag(FLAG_BACKUP_PREVIOUS) {
                previous = Some(s);
            }
        }
        let (Some(previous), Some(fin)) = (previous, fin) else {
            return Err(ValidateError::Invalid {
                section: Section::Segments,
                id: None,
                field: "flags".into(),
                reason: format!(
                    "reencryption needs a {FLAG_BACKUP_PREVIOUS} and a {FLAG_BACKUP_FINAL} segment"
                ),
            });
        };
        for (&id, s) in self.segments.iter().filter(|(_, s)| !s.is_backup()) {
            if s.has_flag(FLAG_IN_REENCRYPTION) {
                if !s.same_layout(fin) {
                    return Err(ValidateError::Invalid {
                        section: Section::Segments,
                        id: Some(id),
                        field: "flags".into(),
                        reason: format!(
                            "{FLAG_IN_REENCRYPTION} segment does not have the {FLAG_BACKUP_FINAL} layout"
                        ),
                    });
                }
            } else if !s.same_layout(fin) && !s.same_layout(previous) {
                return Err(ValidateError::Invalid {
                    section: Section::Segments,
                    id: Some(id),
                    field: "type".into(),
                    reason: format!(
                        "segment has neither the {FLAG_BACKUP_PREVIOUS} nor the {FLAG_BACKUP_FINAL} layout"
                    ),
                });
            }
        }
        Ok(())
    }

    /// cryptsetup's checks of reencrypt keyslots across the header: at most
    /// one, present exactly when the reencryption requirement is.
    fn validate_reencrypt_keyslots(&self) -> Result<(), ValidateError> {
        let mut reenc = self
            .keyslots
            .iter()
            .filter(|(_, k)| k.kind == ReencryptKeyslot::TYPE)
            .map(|(&id, _)| id);
        let first = reenc.next();
        if let Some(second) = reenc.next() {
            return Err(ValidateError::Invalid {
                section: Section::Keyslots,
                id: Some(second),
                field: "type".into(),
                reason: format!("a second reencrypt keyslot (keyslot {first:?} is one)"),
            });
        }
        match (first, self.config.reencrypt_requirement()) {
            (Some(id), None) => Err(ValidateError::Invalid {
                section: Section::Keyslots,
                id: Some(id),
                field: "type".into(),
                reason: "reencrypt keyslot without the online-reencrypt requirement".into(),
            }),
            (None, Some((r, _))) => Err(ValidateError::Invalid {
                section: Section::Config,
                id: None,
                field: "requirements".into(),
                reason: format!("requirement {r} without a reencrypt keyslot"),
            }),
            _ => Ok(()),
        }
    }

    /// Checks the on-disk layout for a header of `hdr_size`: config sizes,
    /// keyslot areas inside the keyslots area and disjoint, segments ordered
    /// and disjoint, and (for a header on the data device) segments clear
    /// of the metadata and keyslot areas.
    pub fn validate_layout(&self, hdr_size: u64, attached: bool) -> Result<(), ValidateError> {
        let cfg_err = |field: &str, reason: String| ValidateError::Invalid {
            section: Section::Config,
            id: None,
            field: field.into(),
            reason,
        };
        if self.config.json_size != hdr_size - BIN_HDR_SIZE as u64 {
            return Err(cfg_err(
                "json_size",
                format!(
                    "{} does not match metadata size {hdr_size}",
                    self.config.json_size
                ),
            ));
        }
        if !self.config.keyslots_size.is_multiple_of(4096) {
            return Err(cfg_err("keyslots_size", "not aligned to 4096 bytes".into()));
        }
        let ks_start = 2 * hdr_size;
        let ks_end = ks_start
            .checked_add(self.config.keyslots_size)
            .ok_or_else(|| cfg_err("keyslots_size", "overflows".into()))?;
        let mut areas: Vec<(u64, u64, Area)> = Vec::new();
        for (&id, k) in &self.keyslots {
            let (off, size) = (k.area.offset, k.area.size);
            let end = off.checked_add(size);
            if end.is_none_or(|e| off < ks_start || e > ks_end) {
                return Err(ValidateError::OutOfBounds {
                    area: Area::Keyslot(id),
                    offset: off,
                    size,
                });
            }
            areas.push((off, size, Area::Keyslot(id)));
        }
        // cryptsetup: the regular segments are the data layout; backup
        // segments describe layouts for the reencryption and are exempt.
        let regular: Vec<(u32, &Segment)> = self
            .segments
            .iter()
            .filter(|(_, s)| !s.is_backup())
            .map(|(&id, s)| (id, s))
            .collect();
        let n = regular.len();
        let data_start = regular.iter().map(|(_, s)| s.offset).min().unwrap_or(0);
        let mut spans: Vec<(u64, u64, u32)> = Vec::with_capacity(n);
        for (i, &(id, s)) in regular.iter().enumerate() {
            let size = match s.size {
                SegmentSize::Fixed(v) => v,
                SegmentSize::Dynamic if i + 1 == n => u64::MAX - s.offset,
                SegmentSize::Dynamic => {
                    return Err(ValidateError::Invalid {
                        section: Section::Segments,
                        id: Some(id),
                        field: "size".into(),
                        reason: "only the last regular segment may be dynamic".into(),
                    })
                }
            };
            // cryptsetup: data starts at 0 (detached header) or after the
            // keyslots area, never inside the metadata or keyslots area.
            // Only the start of the data counts: the later segments of a
            // reencryption on a detached header's device (data from 0)
            // start wherever the hotzone has got to.
            if s.offset != 0 && s.offset < ks_end && s.offset == data_start {
                return Err(ValidateError::OutOfBounds {
                    area: Area::Segment(id),
                    offset: s.offset,
                    size,
                });
            }
            let end = s
                .offset
                .checked_add(size)
                .ok_or(ValidateError::OutOfBounds {
                    area: Area::Segment(id),
                    offset: s.offset,
                    size,
                })?;
            spans.push((s.offset, end, id));
            if attached {
                if s.offset < ks_start {
                    return Err(ValidateError::Overlap {
                        a: Area::Metadata,
                        b: Area::Segment(id),
                    });
                }
                areas.push((s.offset, size, Area::Segment(id)));
            }
        }
        // Regular segments need not be in offset order (a backward
        // reencryption numbers them from the end), but must not overlap.
        spans.sort_by_key(|&(off, _, id)| (off, id));
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(ValidateError::Overlap {
                    a: Area::Segment(w[0].2),
                    b: Area::Segment(w[1].2),
                });
            }
        }
        areas.sort_by_key(|a| a.0);
        for w in areas.windows(2) {
            if w[0].0 + w[0].1 > w[1].0 {
                return Err(ValidateError::Overlap {
                    a: w[0].2,
                    b: w[1].2,
                });
            }
        }
        Ok(())
    }

    /// The digest id that certifies keyslot `ks`, if any.
    pub fn digest_of_keyslot(&self, ks: u32) -> Option<u32> {
        self.digests
            .iter()
            .find(|(_, d)| d.keyslots.contains(&ks))
            .map(|(&id, _)| id)
    }

    /// The digest id of segment `seg`, if any.
    pub fn digest_of_segment(&self, seg: u32) -> Option<u32> {
        self.digests
            .iter()
            .find(|(_, d)| d.segments.contains(&seg))
            .map(|(&id, _)| id)
    }

    /// Whether keyslot `ks` can unlock segment 0's key (is not unbound).
    pub fn keyslot_is_bound(&self, ks: u32) -> bool {
        match (
            self.digest_of_keyslot(ks),
            self.digest_of_segment(self.crypt_segment_id().unwrap_or(0)),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// The id of the (first) crypt segment.
    pub fn crypt_segment_id(&self) -> Option<u32> {
        self.segments
            .iter()
            .find(|(_, s)| s.kind == "crypt")
            .map(|(&id, _)| id)
    }

    /// End of the keyslots area in bytes.
    pub fn keyslots_end(&self, hdr_size: u64) -> u64 {
        2 * hdr_size + self.config.keyslots_size
    }
}

fn dangling(
    section: Section,
    id: u32,
    field: &'static str,
    target: Section,
    target_id: u32,
) -> ValidateError {
    ValidateError::Dangling {
        section,
        id,
        field,
        target,
        target_id: target_id.to_string(),
    }
}
