//! The fleet's central inventory in the KMIP key manager (docs/fleet.md).
//!
//! `register` reads a LUKS2 header without unlocking it (tokens only, as
//! `keys list` does), makes a JSON record of the volume and stores it as a
//! KMIP Opaque Object named `wrapcrypt-vol-<uuid>` in the Object Group
//! `<group>-inventory`, replacing the record registered before.
//! `inventory` fetches every record of the group and flags VP collisions,
//! volumes on an old master key and headers changed since registering.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wrapcrypt_kmip::{
    ops, KmipClient, KmipConfig, KmipError, LocateQuery, ObjectType, Operation, ResultReason,
};
use wrapcrypt_volume::rewrap;
use wrapcrypt_volume::{ExitClass, Volume};

use crate::providers;
use crate::OpsError;

/// The `format` member of every record.
pub const RECORD_FORMAT: &str = "wrapcrypt-fleet-record/1";

/// Flag: another UUID has the same verification pattern (same effective key).
pub const VP_COLLISION: &str = "vp-collision";
/// Flag: the wrapping key is not the reference master key.
pub const OLD_MASTER_KEY: &str = "old-master-key";
/// Flag: the header on this host differs from the registered one.
pub const HEADER_CHANGED: &str = "header-changed";

/// One volume as registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub host: String,
    pub device: String,
    pub uuid: String,
    pub cipher: String,
    pub provider: Option<String>,
    pub vp: Option<String>,
    pub wrapping_key: Option<String>,
    /// Bytes hashed: both metadata copies, 2 × hdr_size.
    pub header_bytes: u64,
    /// sha256 hex of those bytes.
    pub header_sha256: String,
    /// Unix seconds.
    pub registered_at: u64,
}

/// The KMIP Name of a volume's record.
pub fn record_name(uuid: &str) -> String {
    format!("wrapcrypt-vol-{uuid}")
}

/// The Object Group of a host group's records.
pub fn inventory_group(group: &str) -> String {
    format!("{group}-inventory")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// This machine's host name (the default `--host`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Reads `device`'s LUKS2 header (shared lock, no passphrase) into a record.
pub fn read_record(device: &Path, host: &str) -> Result<Record, OpsError> {
    let vol = Volume::open(device, None, false)?;
    let h = vol.luks2_header()?;
    let cipher = h
        .meta
        .crypt_segment_id()
        .and_then(|s| h.meta.segments[&s].encryption.clone())
        .unwrap_or_default();
    let len = 2 * h.hdr_size;
    let bytes = vol
        .meta_device()
        .read_at(0, usize::try_from(len).unwrap_or(usize::MAX))
        .map_err(|e| {
            OpsError::refused(
                ExitClass::WrongDevice,
                format!("{}: cannot read the header: {e}", device.display()),
            )
        })?;
    Ok(Record {
        host: host.to_string(),
        device: device.display().to_string(),
        uuid: h.uuid.clone(),
        cipher,
        provider: providers::recorded(h).map(|(n, _)| n),
        vp: rewrap::stored_vp(h),
        wrapping_key: providers::recorded_wrapping_key(h),
        header_bytes: len,
        header_sha256: hex(&Sha256::digest(&bytes)),
        registered_at: now(),
    })
}

impl Record {
    /// The JSON stored in the key manager (docs/fleet.md).
    pub fn to_json(&self) -> Value {
        json!({
            "format": RECORD_FORMAT,
            "host": self.host,
            "device": self.device,
            "uuid": self.uuid,
            "cipher": self.cipher,
            "provider": self.provider,
            "verification-pattern": self.vp,
            "wrapping-key": self.wrapping_key,
            "header-bytes": self.header_bytes,
            "header-sha256": self.header_sha256,
            "registered-at": self.registered_at,
        })
    }

    /// Parses a stored record; `None` when it is not one of ours.
    pub fn from_json(v: &Value) -> Option<Record> {
        if v.get("format")?.as_str()? != RECORD_FORMAT {
            return None;
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Record {
            host: s("host")?,
            device: s("device")?,
            uuid: s("uuid")?,
            cipher: s("cipher")?,
            provider: s("provider"),
            vp: s("verification-pattern"),
            wrapping_key: s("wrapping-key"),
            header_bytes: v.get("header-bytes")?.as_u64()?,
            header_sha256: s("header-sha256")?,
            registered_at: v.get("registered-at")?.as_u64()?,
        })
    }
}

/// A key-manager failure as one line with cryptsetup's exit class:
/// refused credentials or permission → 2, anything else (unreachable,
/// timeout, malformed answer) → 1.
pub fn kmip_error(e: KmipError) -> OpsError {
    let class = match &e {
        KmipError::Tls { .. } => ExitClass::Permission,
        KmipError::Operation {
            reason: ResultReason::PermissionDenied,
            ..
        } => ExitClass::Permission,
        _ => ExitClass::WrongParams,
    };
    OpsError::refused(class, e.to_string())
}

/// Reads the configuration file and connects (mutual TLS).
pub fn connect(cfg_path: &Path) -> Result<(KmipConfig, KmipClient), OpsError> {
    let cfg = KmipConfig::read(cfg_path).map_err(OpsError::usage)?;
    let client = KmipClient::connect(&cfg.client).map_err(kmip_error)?;
    Ok((cfg, client))
}

/// What `register` did for one volume.
#[derive(Clone, Debug)]
pub struct Registered {
    pub uuid: String,
    /// Unique Identifier of the new record.
    pub id: String,
    /// Records of the same name destroyed after the new one was stored.
    pub replaced: Vec<String>,
}

/// Stores `rec`, then destroys the older records of the same name (the new
/// one is stored first, so a crash in between leaves two, never none;
/// `inventory` keeps the newest).
pub fn register(
    client: &mut KmipClient,
    group: &str,
    rec: &Record,
) -> Result<Registered, OpsError> {
    let name = record_name(&rec.uuid);
    let grp = inventory_group(group);
    let old = client
        .locate(&LocateQuery {
            name: Some(name.clone()),
            group: Some(grp.clone()),
            object_type: Some(ObjectType::OpaqueObject),
            ..LocateQuery::default()
        })
        .map_err(kmip_error)?;
    let data = rec.to_json().to_string();
    let id = client
        .register_opaque(&name, &[&grp], data.as_bytes())
        .map_err(kmip_error)?;
    let mut replaced = vec![];
    for o in old.into_iter().filter(|o| *o != id) {
        client.destroy(&o).map_err(kmip_error)?;
        replaced.push(o);
    }
    Ok(Registered {
        uuid: rec.uuid.clone(),
        id,
        replaced,
    })
}

/// Records per batch message of [`register_all`]: small enough to stay far
/// below PyKMIP's 1 MiB response cap (records are ~600 bytes).
pub const REGISTER_BATCH: usize = 50;

/// [`register`] for many records in few round trips: per chunk of
/// [`REGISTER_BATCH`], one message with every Locate, then one message
/// with every Register followed by the Destroys of the older records (new
/// ones first, as in `register`: a crash in between leaves duplicates,
/// never none).
pub fn register_all(
    client: &mut KmipClient,
    group: &str,
    records: &[Record],
) -> Result<Vec<Registered>, OpsError> {
    let grp = inventory_group(group);
    let mut out = vec![];
    for chunk in records.chunks(REGISTER_BATCH) {
        let locates = chunk
            .iter()
            .map(|r| {
                (
                    Operation::Locate,
                    ops::locate(&LocateQuery {
                        name: Some(record_name(&r.uuid)),
                        group: Some(grp.clone()),
                        object_type: Some(ObjectType::OpaqueObject),
                        ..LocateQuery::default()
                    }),
                )
            })
            .collect();
        let old: Vec<Vec<String>> = client
            .call_batch(locates)
            .map_err(kmip_error)?
            .into_iter()
            .map(|r| r.map(|p| ops::located_ids(&p)).map_err(kmip_error))
            .collect::<Result<_, _>>()?;
        let mut items: Vec<(Operation, Vec<wrapcrypt_kmip::Ttlv>)> = chunk
            .iter()
            .map(|r| {
                let data = r.to_json().to_string();
                (
                    Operation::Register,
                    ops::register_opaque(&record_name(&r.uuid), &[&grp], data.as_bytes()),
                )
            })
            .collect();
        for ids in &old {
            items.extend(ids.iter().map(|o| (Operation::Destroy, ops::by_id(o))));
        }
        let res = client.call_batch(items).map_err(kmip_error)?;
        let mut res = res.into_iter();
        for (r, replaced) in chunk.iter().zip(old) {
            let p = res
                .next()
                .unwrap_or(Err(KmipError::Skipped {
                    op: Operation::Register,
                }))
                .map_err(kmip_error)?;
            let id = ops::unique_id(&p, Operation::Register).map_err(kmip_error)?;
            out.push(Registered {
                uuid: r.uuid.clone(),
                id,
                replaced,
            });
        }
        for d in res {
            d.map_err(kmip_error)?;
        }
    }
    Ok(out)
}

/// One inventory line.
#[derive(Clone, Debug)]
pub struct Row {
    /// Unique Identifier of the record.
    pub id: String,
    pub record: Record,
    /// The header was read on this host and compared.
    pub checked: bool,
    pub flags: Vec<&'static str>,
}

/// Where the reference master key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    /// `--current-mkvp HEX`.
    Given,
    /// The wrapping key most records use (ties: the most recently registered).
    MostCommon,
}

/// The whole inventory.
#[derive(Clone, Debug)]
pub struct Inventory {
    pub group: String,
    pub rows: Vec<Row>,
    /// The wrapping key others are compared with (`mkvp:HEX`), if any.
    pub reference: Option<(String, Reference)>,
    /// Objects of the group that are not records (id, why).
    pub skipped: Vec<(String, String)>,
    /// Older duplicates of a UUID left by an interrupted register (ids).
    pub stale: Vec<String>,
}

fn same_key(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Fetches every record of `group` and computes the flags; headers of
/// `this_host`'s devices are re-read and compared.
pub fn inventory(
    client: &mut KmipClient,
    group: &str,
    this_host: &str,
    current_mkvp: Option<&str>,
) -> Result<Inventory, OpsError> {
    let grp = inventory_group(group);
    let ids = client
        .locate(&LocateQuery {
            group: Some(grp.clone()),
            object_type: Some(ObjectType::OpaqueObject),
            ..LocateQuery::default()
        })
        .map_err(kmip_error)?;
    let mut skipped = vec![];
    let mut by_uuid: BTreeMap<String, Vec<(String, Record)>> = BTreeMap::new();
    for id in ids {
        let data = client.get_opaque(&id).map_err(kmip_error)?;
        match serde_json::from_slice::<Value>(&data)
            .ok()
            .as_ref()
            .and_then(Record::from_json)
        {
            Some(r) => by_uuid.entry(r.uuid.clone()).or_default().push((id, r)),
            None => skipped.push((id, "not a wrapcrypt fleet record".to_string())),
        }
    }
    let mut stale = vec![];
    let mut rows = vec![];
    for (_, mut v) in by_uuid {
        v.sort_by_key(|(_, r)| r.registered_at);
        let (id, record) = v.pop().expect("non-empty");
        stale.extend(v.into_iter().map(|(id, _)| id));
        rows.push(Row {
            id,
            record,
            checked: false,
            flags: vec![],
        });
    }
    rows.sort_by(|a, b| {
        (&a.record.host, &a.record.device).cmp(&(&b.record.host, &b.record.device))
    });

    // VP collisions: one VP, several UUIDs.
    let mut vps: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        if let Some(vp) = &r.record.vp {
            *vps.entry(vp.to_ascii_lowercase()).or_default() += 1;
        }
    }
    // Reference master key.
    let reference = match current_mkvp {
        Some(m) => Some((
            format!("mkvp:{}", m.trim_start_matches("mkvp:")),
            Reference::Given,
        )),
        None => {
            let mut count: HashMap<String, (usize, u64)> = HashMap::new();
            for r in &rows {
                if let Some(k) = &r.record.wrapping_key {
                    let e = count.entry(k.to_ascii_lowercase()).or_default();
                    e.0 += 1;
                    e.1 = e.1.max(r.record.registered_at);
                }
            }
            count
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
                .map(|(k, _)| (k, Reference::MostCommon))
        }
    };
    for r in &mut rows {
        if let Some(vp) = &r.record.vp {
            if vps[&vp.to_ascii_lowercase()] > 1 {
                r.flags.push(VP_COLLISION);
            }
        }
        if let (Some(k), Some((refk, _))) = (&r.record.wrapping_key, &reference) {
            if !same_key(k, refk) {
                r.flags.push(OLD_MASTER_KEY);
            }
        }
        if r.record.host == this_host {
            if let Ok(now) = read_record(Path::new(&r.record.device), this_host) {
                r.checked = true;
                if now.header_sha256 != r.record.header_sha256 || now.uuid != r.record.uuid {
                    r.flags.push(HEADER_CHANGED);
                }
            }
        }
    }
    Ok(Inventory {
        group: grp,
        rows,
        reference,
        skipped,
        stale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let r = Record {
            host: "h1".into(),
            device: "/dev/sda2".into(),
            uuid: "u".into(),
            cipher: "waes-xts-plain64".into(),
            provider: Some("custodian".into()),
            vp: Some("ab".into()),
            wrapping_key: Some("mkvp:01".into()),
            header_bytes: 32768,
            header_sha256: "00".into(),
            registered_at: 5,
        };
        assert_eq!(Record::from_json(&r.to_json()), Some(r.clone()));
        let mut v = r.to_json();
        v["format"] = "other".into();
        assert_eq!(Record::from_json(&v), None);
        assert_eq!(record_name("u"), "wrapcrypt-vol-u");
        assert_eq!(inventory_group("web"), "web-inventory");
    }
}
