//! The digest that authenticates reencryption metadata (metadata version 2
//! and later): a `pbkdf2` digest, assigned to the `reencrypt` keyslot, over
//! a byte string built from the volume keys, the reencrypt keyslot and the
//! backup segments. A header edited by someone without the keys (to send
//! the engine over the wrong data with the wrong key) fails it.
//!
//! The byte string, as cryptsetup 2.6 builds it: `'v'`, `'0' + version`,
//! the old key (if the old layout is encrypted), the new key (if encrypted
//! and a different digest), then the keyslot fields and each backup segment
//! (previous, final, moved if any). Strings are written without
//! terminator, 64-bit numbers (JSON strings) as big-endian u64, 32-bit JSON
//! integers as big-endian u32, a `dynamic` size as the word itself.

use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::keyslot_crypto;
use wrapcrypt_format::luks2::{Digest, Metadata, ReencryptInfo, Resilience, Segment, SegmentSize};
use wrapcrypt_secret::SecretBytes;

use super::{ReencryptError, ReencryptKeys};

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_segment(out: &mut Vec<u8>, s: &Segment) {
    put_str(out, &s.kind);
    put_u64(out, s.offset);
    match s.size {
        SegmentSize::Dynamic => put_str(out, "dynamic"),
        SegmentSize::Fixed(v) => put_u64(out, v),
    }
    if s.kind == "crypt" {
        put_u64(out, s.iv_tweak);
        put_str(out, s.encryption.as_deref().unwrap_or(""));
        out.extend_from_slice(&s.sector_size.to_be_bytes());
    }
}

/// The metadata part of the verification data (no keys).
fn metadata_bytes(meta: &Metadata, info: &ReencryptInfo) -> Result<Vec<u8>, ReencryptError> {
    let ks = meta
        .keyslots
        .get(&info.keyslot)
        .ok_or_else(|| ReencryptError::Invalid("the reencrypt keyslot is missing".into()))?;
    let mut out = Vec::new();
    put_str(&mut out, info.mode.as_str());
    put_str(&mut out, info.direction.as_str());
    put_str(&mut out, info.resilience.as_str());
    put_u64(&mut out, ks.area.offset);
    put_u64(&mut out, ks.area.size);
    match &info.resilience {
        Resilience::Checksum { hash, sector_size } => {
            put_str(&mut out, hash);
            out.extend_from_slice(&sector_size.to_be_bytes());
        }
        Resilience::DatashiftChecksum {
            hash,
            sector_size,
            shift_size,
        } => {
            put_str(&mut out, hash);
            out.extend_from_slice(&sector_size.to_be_bytes());
            put_u64(&mut out, shift_size.unwrap_or(0));
        }
        Resilience::Datashift { shift_size } | Resilience::DatashiftJournal { shift_size } => {
            put_u64(&mut out, *shift_size);
        }
        _ => {}
    }
    put_segment(&mut out, &meta.segments[&info.previous_segment]);
    put_segment(&mut out, &meta.segments[&info.final_segment]);
    if let Some(m) = info.moved_segment {
        put_segment(&mut out, &meta.segments[&m]);
    }
    Ok(out)
}

/// The bytes the verification digest is computed over, in locked memory.
pub(crate) fn verification_data(
    meta: &Metadata,
    info: &ReencryptInfo,
    keys: &ReencryptKeys,
) -> Result<SecretBytes, ReencryptError> {
    let tail = metadata_bytes(meta, info)?;
    let mut len = 2 + tail.len();
    let old = info.old_digest.map(|_| keys.old_key()).transpose()?;
    let new = match info.new_digest {
        Some(d) if Some(d) != info.old_digest => Some(keys.new_key()?),
        _ => None,
    };
    len += old.map_or(0, |k| k.len()) + new.map_or(0, |k| k.len());
    let mut data = SecretBytes::zeroed(len);
    let buf = data.expose_secret_mut();
    // Version 1 metadata has no digest; the tag works up to version 207.
    let version = u8::try_from(info.version)
        .ok()
        .filter(|v| *v < 0xff - 0x2f)
        .ok_or_else(|| ReencryptError::Invalid("reencryption metadata version".into()))?;
    buf[0] = b'v';
    buf[1] = 0x30 + version;
    let mut at = 2;
    for k in [old, new].into_iter().flatten() {
        buf[at..at + k.len()].copy_from_slice(k.expose_secret());
        at += k.len();
    }
    buf[at..].copy_from_slice(&tail);
    Ok(data)
}

/// Checks the verification digest of the reencryption metadata.
pub(crate) fn verify(
    meta: &Metadata,
    info: &ReencryptInfo,
    keys: &ReencryptKeys,
) -> Result<(), ReencryptError> {
    if info.version < 2 {
        return Err(ReencryptError::Unsupported(format!(
            "reencryption metadata {} (without a verification digest)",
            info.requirement
        )));
    }
    let did = info
        .verification_digest
        .ok_or_else(|| ReencryptError::Invalid("Reencryption metadata is invalid.".into()))?;
    let d = &meta.digests[&did];
    let data = verification_data(meta, info, keys)?;
    let ok = keyslot_crypto::verify_key(&d.hash, &data, &d.salt, d.iterations, &d.digest)
        .map_err(|e| ReencryptError::Invalid(e.to_string()))?;
    if ok {
        Ok(())
    } else {
        Err(ReencryptError::Invalid(
            "Reencryption metadata is invalid.".into(),
        ))
    }
}

/// A new verification digest for the metadata in `meta`, assigned to the
/// reencrypt keyslot.
pub(crate) fn create(
    meta: &Metadata,
    info: &ReencryptInfo,
    keys: &ReencryptKeys,
    force_iterations: Option<u32>,
) -> Result<Digest, ReencryptError> {
    let data = verification_data(meta, info, keys)?;
    Ok(crate::make_digest(
        &data,
        HashAlg::Sha256,
        vec![info.keyslot],
        vec![],
        force_iterations,
    )?)
}
