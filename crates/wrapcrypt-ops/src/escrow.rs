//! Header-backup escrow in the KMIP key manager (issue 13 item 3,
//! docs/fleet.md "Header escrow").
//!
//! `escrow` takes the bytes `luksHeaderBackup` would write (metadata and
//! keyslots area), keeps only the 4 KiB blocks that are not all zero
//! (an unused keyslots area is zeros; a 16 MiB backup of a volume with one
//! keyslot shrinks to its two metadata copies and that keyslot), splits the
//! encoding into parts small enough for the key manager (PyKMIP takes
//! seconds for a 1 MiB byte string and caps answers at 1 MiB) and stores
//! each part as an Opaque Object, then an index object naming the parts and
//! the SHA-256 of the whole backup. Older escrows of the same UUID are
//! destroyed only after the new index is stored: a crash leaves the old
//! escrow, the new one, or both, never none. `fetch` reassembles the newest
//! escrow and checks every digest before anything is written;
//! `restore` then writes it like `luksHeaderRestore` (keyslots first,
//! secondary copy, primary last).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wrapcrypt_kmip::{KmipClient, LocateQuery, ObjectType};
use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::{ExitClass, Volume, VolumeError};

use crate::fleet::kmip_error;
use crate::OpsError;

/// The `format` member of an escrow index.
pub const INDEX_FORMAT: &str = "wrapcrypt-header-escrow/1";
/// The first bytes of the sparse encoding.
const MAGIC: &[u8; 8] = b"WCHBKP\x00\x01";
/// Block size of the sparse encoding.
const BLOCK: usize = 4096;
/// Bytes per part object (PyKMIP registers 64 KiB in about 0.3 s, 1 MiB
/// not within 20 s).
pub const PART_BYTES: usize = 48 * 1024;

/// The Name of a volume's escrow index.
pub fn index_name(uuid: &str) -> String {
    format!("wrapcrypt-hdr-{uuid}")
}

/// The Name shared by every part of a volume's escrows.
pub fn part_name(uuid: &str) -> String {
    format!("wrapcrypt-hdr-{uuid}-part")
}

/// The Object Group of a host group's escrows.
pub fn escrow_group(group: &str) -> String {
    format!("{group}-escrow")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `data` as (MAGIC, total length, count, then offset/length/bytes of each
/// run of non-zero 4 KiB blocks), all integers little-endian.
pub fn encode(data: &[u8]) -> Vec<u8> {
    let mut runs: Vec<(usize, usize)> = vec![];
    for (i, b) in data.chunks(BLOCK).enumerate() {
        if b.iter().all(|&x| x == 0) {
            continue;
        }
        let off = i * BLOCK;
        match runs.last_mut() {
            Some((o, l)) if *o + *l == off => *l += b.len(),
            _ => runs.push((off, b.len())),
        }
    }
    let mut out = Vec::with_capacity(24 + runs.iter().map(|r| 12 + r.1).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    for (o, l) in runs {
        out.extend_from_slice(&(o as u64).to_le_bytes());
        out.extend_from_slice(&(l as u32).to_le_bytes());
        out.extend_from_slice(&data[o..o + l]);
    }
    out
}

/// The inverse of [`encode`]; `None` for anything malformed.
pub fn decode(enc: &[u8]) -> Option<Vec<u8>> {
    let rest = enc.strip_prefix(MAGIC)?;
    let u64_at = |b: &[u8], i: usize| Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
    let u32_at = |b: &[u8], i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let total = usize::try_from(u64_at(rest, 0)?).ok()?;
    // A LUKS2 backup is at most the metadata and keyslots area (< 4 GiB here).
    if total > 1 << 32 {
        return None;
    }
    let count = u32_at(rest, 8)? as usize;
    let mut out = vec![0u8; total];
    let mut i = 12;
    for _ in 0..count {
        let off = usize::try_from(u64_at(rest, i)?).ok()?;
        let len = u32_at(rest, i + 8)? as usize;
        i += 12;
        let src = rest.get(i..i.checked_add(len)?)?;
        out.get_mut(off..off.checked_add(len)?)?
            .copy_from_slice(src);
        i += len;
    }
    (i == rest.len()).then_some(out)
}

/// What `escrow` stored for one volume.
#[derive(Clone, Debug)]
pub struct Escrowed {
    pub uuid: String,
    /// Unique Identifier of the new index object.
    pub index: String,
    pub parts: usize,
    /// Bytes of the backup (as luksHeaderBackup writes it).
    pub backup_bytes: usize,
    /// Bytes stored in the parts (the sparse encoding).
    pub stored_bytes: usize,
    pub sha256: String,
    /// Objects of earlier escrows destroyed after the new index was stored.
    pub replaced: Vec<String>,
}

/// The backup bytes of `device` (shared metadata lock), as luksHeaderBackup.
pub fn read_backup(device: &Path) -> Result<(String, Vec<u8>), OpsError> {
    let vol = Volume::open(device, None, false)?;
    let data = vol
        .meta_device()
        .read_at(0, usize::try_from(vol.backup_len()).unwrap_or(usize::MAX))
        .map_err(|e| VolumeError::Io {
            op: "reading header",
            path: device.display().to_string(),
            source: e,
        })?;
    Ok((vol.uuid().to_string(), data))
}

fn locate(client: &mut KmipClient, name: String, group: &str) -> Result<Vec<String>, OpsError> {
    client
        .locate(&LocateQuery {
            name: Some(name),
            group: Some(group.to_string()),
            object_type: Some(ObjectType::OpaqueObject),
            ..LocateQuery::default()
        })
        .map_err(kmip_error)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Stores the backup `data` of volume `uuid` (read from `device` on `host`).
pub fn escrow(
    client: &mut KmipClient,
    group: &str,
    host: &str,
    device: &str,
    uuid: &str,
    data: &[u8],
) -> Result<Escrowed, OpsError> {
    let grp = escrow_group(group);
    let old_index = locate(client, index_name(uuid), &grp)?;
    let old_parts = locate(client, part_name(uuid), &grp)?;
    let enc = encode(data);
    let mut parts = vec![];
    let mut part_sha = vec![];
    for chunk in enc.chunks(PART_BYTES) {
        parts.push(
            client
                .register_opaque(&part_name(uuid), &[&grp], chunk)
                .map_err(kmip_error)?,
        );
        part_sha.push(hex(&Sha256::digest(chunk)));
    }
    let sha256 = hex(&Sha256::digest(data));
    let index = json!({
        "format": INDEX_FORMAT,
        "uuid": uuid,
        "host": host,
        "device": device,
        "backup-bytes": data.len(),
        "backup-sha256": sha256,
        "parts": parts,
        "part-sha256": part_sha,
        "escrowed-at": now(),
    });
    let id = client
        .register_opaque(&index_name(uuid), &[&grp], index.to_string().as_bytes())
        .map_err(kmip_error)?;
    // Only now the earlier escrows go: their indexes, then every part no
    // longer named by the new index (also parts a crash left without one).
    let mut replaced = vec![];
    for o in old_index
        .into_iter()
        .chain(old_parts)
        .filter(|o| *o != id && !parts.contains(o))
    {
        client.destroy(&o).map_err(kmip_error)?;
        replaced.push(o);
    }
    Ok(Escrowed {
        uuid: uuid.to_string(),
        index: id,
        parts: parts.len(),
        backup_bytes: data.len(),
        stored_bytes: enc.len(),
        sha256,
        replaced,
    })
}

/// An escrow found in the key manager, checked and reassembled.
pub struct Fetched {
    pub index: String,
    pub host: String,
    pub device: String,
    pub escrowed_at: u64,
    pub data: Vec<u8>,
}

fn damaged(uuid: &str, id: &str, what: &str) -> OpsError {
    OpsError::refused(
        ExitClass::WrongDevice,
        format!("Header escrow {id} of {uuid} is damaged: {what}."),
    )
}

/// The newest escrow of `uuid` whose index parses (a crash between storing
/// a new escrow and destroying the old one leaves two).
pub fn fetch(client: &mut KmipClient, group: &str, uuid: &str) -> Result<Fetched, OpsError> {
    let grp = escrow_group(group);
    let mut best: Option<(u64, String, Value)> = None;
    for id in locate(client, index_name(uuid), &grp)? {
        let bytes = client.get_opaque(&id).map_err(kmip_error)?;
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        if v["format"] != INDEX_FORMAT || v["uuid"] != uuid {
            continue;
        }
        let at = v["escrowed-at"].as_u64().unwrap_or(0);
        let newer = match &best {
            None => true,
            Some((t, i, _)) => (at, &id) > (*t, i),
        };
        if newer {
            best = Some((at, id, v));
        }
    }
    let Some((at, id, v)) = best else {
        return Err(OpsError::refused(
            ExitClass::WrongDevice,
            format!(
                "No header escrow of {uuid} in {grp} (run `wrapcrypt fleet escrow DEVICE` first)."
            ),
        ));
    };
    let strs = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (parts, sums) = (strs("parts"), strs("part-sha256"));
    if parts.is_empty() || parts.len() != sums.len() {
        return Err(damaged(uuid, &id, "its index lists no parts"));
    }
    let mut enc = vec![];
    for (p, sum) in parts.iter().zip(&sums) {
        let chunk = client.get_opaque(p).map_err(|e| {
            OpsError::refused(
                ExitClass::WrongDevice,
                format!("Header escrow {id} of {uuid}: part {p}: {e}"),
            )
        })?;
        if hex(&Sha256::digest(&chunk)) != *sum {
            return Err(damaged(
                uuid,
                &id,
                &format!("part {p} does not match its digest"),
            ));
        }
        enc.extend_from_slice(&chunk);
    }
    let data = decode(&enc).ok_or_else(|| damaged(uuid, &id, "its encoding does not parse"))?;
    if Some(data.len() as u64) != v["backup-bytes"].as_u64()
        || v["backup-sha256"].as_str() != Some(hex(&Sha256::digest(&data)).as_str())
    {
        return Err(damaged(uuid, &id, "the backup does not match its digest"));
    }
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    Ok(Fetched {
        index: id,
        host: s("host"),
        device: s("device"),
        escrowed_at: at,
        data,
    })
}

/// Writes a fetched backup to `target` with luksHeaderRestore's checks,
/// confirmation and write order.
pub fn restore(
    target: &Path,
    fetched: &Fetched,
    prompter: &mut dyn Prompter,
) -> Result<(), OpsError> {
    crate::backup::restore_bytes(
        target,
        &fetched.data,
        &format!("header escrow {}", fetched.index),
        prompter,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_encoding_round_trips() {
        let mut d = vec![0u8; 64 * 1024 + 100];
        d[5] = 1;
        d[4096 * 3 + 7] = 2;
        d[4096 * 4] = 3; // adjacent to the previous block: one run
        *d.last_mut().unwrap() = 4; // a short last block
        let e = encode(&d);
        assert_eq!(decode(&e).unwrap(), d);
        // three runs: block 0, blocks 3-4, the last partial block
        assert_eq!(u32::from_le_bytes(e[16..20].try_into().unwrap()), 3);
        assert!(e.len() < 4 * 4096 + 100);
        assert_eq!(decode(&encode(&[0u8; 8192])).unwrap(), vec![0u8; 8192]);
        // truncated, trailing bytes, a run past the end: refused
        assert!(decode(&e[..e.len() - 1]).is_none());
        let mut longer = e.clone();
        longer.push(0);
        assert!(decode(&longer).is_none());
        let mut past = encode(&[1u8; 10]);
        past[8] = 5; // total 5 < run length 10
        assert!(decode(&past).is_none());
        assert!(decode(b"garbage").is_none());
    }
}
