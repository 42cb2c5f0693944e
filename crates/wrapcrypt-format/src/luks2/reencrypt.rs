//! The state of a reencryption in progress, as the header records it: the
//! `reencrypt` keyslot, the backup segments that describe the previous and
//! the final layout, the regular segments (the data layout right now, part
//! old, part new), the digests of both keys and the requirement that stops
//! tools unaware of reencryption from using the volume.
//!
//! cryptsetup accepts a header (and prints it with `luksDump`) on its
//! structural rules alone and checks these relations only when it loads the
//! reencryption; [`Metadata::reencrypt_state`] does the same, so a header
//! that fails here still parses.

use super::error::{Section, ValidateError};
use super::keyslot::{ReencryptDirection, ReencryptMode, Resilience};
use super::metadata::Metadata;
use super::segment::{
    Segment, SegmentSize, FLAG_BACKUP_FINAL, FLAG_BACKUP_MOVED, FLAG_BACKUP_PREVIOUS,
    FLAG_IN_REENCRYPTION,
};

/// A reencryption in progress, for the reencryption engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReencryptInfo {
    /// The `reencrypt` keyslot.
    pub keyslot: u32,
    /// The mandatory requirement that marks it (`online-reencrypt-v2`, …).
    pub requirement: String,
    /// Reencryption metadata version the requirement names (1, 2, 3, …).
    pub version: u32,
    /// What it does.
    pub mode: ReencryptMode,
    /// Which way it goes.
    pub direction: ReencryptDirection,
    /// How the hotzone is protected.
    pub resilience: Resilience,
    /// The `backup-previous` segment: the layout being left.
    pub previous_segment: u32,
    /// The `backup-final` segment: the layout being reached.
    pub final_segment: u32,
    /// The `backup-moved-segment` segment, when data is shifted.
    pub moved_segment: Option<u32>,
    /// Digest of the old volume key (`None`: the old layout is plain).
    pub old_digest: Option<u32>,
    /// Digest of the new volume key (`None`: the new layout is plain).
    pub new_digest: Option<u32>,
    /// Digest assigned to the reencrypt keyslot, which authenticates the
    /// reencryption metadata (version 2 and later).
    pub verification_digest: Option<u32>,
    /// The regular segment flagged `in-reencryption`: a hotzone whose
    /// rewrite was cut off (the process died), under both keys; it must be
    /// recovered from the resilience area before anything else.
    pub hotzone: Option<u32>,
    /// Regular segments still in the previous layout, by id.
    pub old_segments: Vec<u32>,
    /// Regular segments already in the final layout, by id.
    pub new_segments: Vec<u32>,
    /// Bytes already in the final layout (`None` if such a segment runs to
    /// the end of the device, whose size the header does not hold).
    pub processed: Option<u64>,
    /// Bytes still in the previous layout (`None` likewise).
    pub remaining: Option<u64>,
}

impl ReencryptInfo {
    /// Nothing has been rewritten yet (the state `reencrypt --init-only`
    /// leaves).
    pub fn is_initial(&self) -> bool {
        self.new_segments.is_empty() && self.hotzone.is_none()
    }

    /// A hotzone was being rewritten when the process died: the data there
    /// needs recovery from the resilience area.
    pub fn needs_recovery(&self) -> bool {
        self.hotzone.is_some()
    }
}

fn seg_err(id: Option<u32>, field: &str, reason: String) -> ValidateError {
    ValidateError::Invalid {
        section: Section::Segments,
        id,
        field: field.into(),
        reason,
    }
}

impl Metadata {
    /// The reencryption in progress, if the header records one; an error if
    /// it records one that cannot be resumed (a missing or duplicated backup
    /// segment, a regular segment in neither layout, a missing digest).
    pub fn reencrypt_state(&self) -> Result<Option<ReencryptInfo>, ValidateError> {
        let Some((keyslot, typed)) = self
            .keyslots
            .iter()
            .find_map(|(&id, k)| k.reencrypt(id).map(|r| (id, r)))
        else {
            return Ok(None);
        };
        let typed = typed?;
        if let Resilience::Other(t) = &typed.resilience {
            return Err(ValidateError::Invalid {
                section: Section::Keyslots,
                id: Some(keyslot),
                field: "type".into(),
                reason: format!("unknown resilience type \"{t}\""),
            });
        }
        let (requirement, version) = self
            .config
            .reencrypt_requirement()
            .map(|(r, v)| (r.to_string(), v))
            .ok_or_else(|| ValidateError::Invalid {
                section: Section::Config,
                id: None,
                field: "requirements".into(),
                reason: "reencrypt keyslot without the online-reencrypt requirement".into(),
            })?;
        let previous_segment = self.flagged(FLAG_BACKUP_PREVIOUS)?.ok_or_else(|| {
            seg_err(
                None,
                "flags",
                format!("no segment flagged {FLAG_BACKUP_PREVIOUS}"),
            )
        })?;
        let final_segment = self.flagged(FLAG_BACKUP_FINAL)?.ok_or_else(|| {
            seg_err(
                None,
                "flags",
                format!("no segment flagged {FLAG_BACKUP_FINAL}"),
            )
        })?;
        let moved_segment = self.flagged(FLAG_BACKUP_MOVED)?;
        if typed.resilience.shift_size().is_some() != moved_segment.is_some()
            && !matches!(typed.mode, ReencryptMode::Reencrypt)
        {
            // Encryption and decryption that shift data describe the moved
            // data in a backup segment; without a shift there is none.
            return Err(seg_err(
                moved_segment,
                "flags",
                format!(
                    "{FLAG_BACKUP_MOVED} segment and {} resilience disagree",
                    typed.resilience
                ),
            ));
        }
        let verification_digest = self.digest_of_keyslot(keyslot);
        if version >= 2 && verification_digest.is_none() {
            return Err(ValidateError::Invalid {
                section: Section::Keyslots,
                id: Some(keyslot),
                field: "digests".into(),
                reason: format!(
                    "{requirement} metadata needs a digest assigned to the reencrypt keyslot"
                ),
            });
        }
        let (prev, fin) = (
            &self.segments[&previous_segment],
            &self.segments[&final_segment],
        );
        // Encryption starts from a plain layout, decryption ends in one.
        let plain_ok = |s: &Segment, plain: bool, id: u32| {
            if (s.kind == "linear") == plain {
                Ok(())
            } else {
                Err(seg_err(
                    Some(id),
                    "type",
                    format!(
                        "{} reencryption needs a {} segment here",
                        typed.mode.as_str(),
                        if plain { "linear" } else { "crypt" }
                    ),
                ))
            }
        };
        plain_ok(prev, typed.mode == ReencryptMode::Encrypt, previous_segment)?;
        plain_ok(fin, typed.mode == ReencryptMode::Decrypt, final_segment)?;
        let old_digest = self.digest_of_segment(previous_segment);
        let new_digest = self.digest_of_segment(final_segment);
        // The header validation checked the layouts; the key tells apart
        // the sides of a key change with the same cipher.
        let same_layout = |s: &Segment, sid: u32, b: &Segment, bid: u32| {
            s.same_layout(b)
                && (s.kind != "crypt" || self.digest_of_segment(sid) == self.digest_of_segment(bid))
        };
        let (mut old_segments, mut new_segments) = (Vec::new(), Vec::new());
        let (mut processed, mut remaining) = (Some(0u64), Some(0u64));
        let mut hotzone = None;
        for (&id, s) in self.segments.iter().filter(|(_, s)| !s.is_backup()) {
            if s.has_flag(FLAG_IN_REENCRYPTION) {
                if let Some(first) = hotzone {
                    return Err(seg_err(
                        Some(id),
                        "flags",
                        format!("a second {FLAG_IN_REENCRYPTION} segment (segment {first} is one)"),
                    ));
                }
                hotzone = Some(id);
                continue;
            }
            let size = match s.size {
                SegmentSize::Fixed(v) => Some(v),
                SegmentSize::Dynamic => None,
            };
            // With the same key and cipher on both sides (only the data
            // moves) a segment matches both; it counts as rewritten only
            // where it does not also match the previous layout.
            let new = same_layout(s, id, fin, final_segment);
            let old = same_layout(s, id, prev, previous_segment);
            let (list, total) = match (new, old) {
                (true, false) => (&mut new_segments, &mut processed),
                (_, true) => (&mut old_segments, &mut remaining),
                (false, false) => {
                    return Err(seg_err(
                        Some(id),
                        "type",
                        "segment matches neither the previous nor the final layout".into(),
                    ))
                }
            };
            list.push(id);
            *total = total.zip(size).map(|(t, v)| t + v);
        }
        Ok(Some(ReencryptInfo {
            keyslot,
            requirement,
            version,
            mode: typed.mode,
            direction: typed.direction,
            resilience: typed.resilience,
            previous_segment,
            final_segment,
            moved_segment,
            old_digest,
            new_digest,
            verification_digest,
            hotzone,
            old_segments,
            new_segments,
            processed,
            remaining,
        }))
    }

    /// The one segment with `flag`; an error if two have it.
    fn flagged(&self, flag: &str) -> Result<Option<u32>, ValidateError> {
        let mut it = self.segments.iter().filter(|(_, s)| s.has_flag(flag));
        let first = it.next().map(|(&id, _)| id);
        if let Some((&id, _)) = it.next() {
            return Err(seg_err(
                Some(id),
                "flags",
                format!(
                    "a second {flag} segment (segment {} is one)",
                    first.unwrap_or(0)
                ),
            ));
        }
        Ok(first)
    }
}
