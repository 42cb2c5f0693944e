//! luksFormat for LUKS2, with cryptsetup 2.6's defaults and layout.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::luks2::{
    Config, Luks2Header, Metadata, Segment, SegmentSize, METADATA_SIZES,
};
use wrapcrypt_secret::SecretBytes;

use crate::device::Device;
use crate::pbkdf::PbkdfOptions;
use crate::{Volume, VolumeError};

/// Default data offset: 16 MiB, as cryptsetup.
pub const DEFAULT_DATA_OFFSET: u64 = 16 << 20;

/// Alignment of a data offset derived from an explicit keyslots size (1 MiB).
pub const DATA_ALIGNMENT: u64 = 1 << 20;

/// Parameters of luksFormat.
#[derive(Debug, Clone)]
pub struct FormatParams {
    /// Segment cipher spec (e.g. "aes-xts-plain64").
    pub cipher: String,
    /// Volume key size in bytes (for wrapped volumes: the blob size).
    pub key_size: usize,
    /// Hash for the digest and AF (default sha256).
    pub hash: String,
    /// Encryption sector size (None = 4096 on files, the device's physical
    /// sector size on block devices).
    pub sector_size: Option<u32>,
    /// Metadata size per copy.
    pub metadata_size: u64,
    /// Keyslots area size (None = up to the data offset).
    pub keyslots_size: Option<u64>,
    /// Data offset in bytes (None = 16 MiB, or 0 with a detached header).
    pub data_offset: Option<u64>,
    /// UUID (None = random).
    pub uuid: Option<String>,
    /// Label.
    pub label: String,
    /// Subsystem.
    pub subsystem: String,
    /// Keyslot KDF options.
    pub pbkdf: PbkdfOptions,
    /// Keyslot for the first passphrase.
    pub keyslot: Option<u32>,
    /// Persistent flags.
    pub flags: Vec<String>,
    /// Tokens written with the header (e.g. a wrapped key's verification
    /// pattern), numbered from 0.
    pub tokens: Vec<wrapcrypt_format::luks2::Token>,
}

impl Default for FormatParams {
    fn default() -> Self {
        FormatParams {
            cipher: "aes-xts-plain64".into(),
            key_size: 64,
            hash: "sha256".into(),
            sector_size: None,
            metadata_size: 0x4000,
            keyslots_size: None,
            data_offset: None,
            uuid: None,
            label: String::new(),
            subsystem: String::new(),
            pbkdf: PbkdfOptions::default(),
            keyslot: None,
            flags: vec![],
            tokens: vec![],
        }
    }
}

pub use crate::uuid::{random_uuid, valid_uuid};

const BLKPBSZGET: libc::c_ulong = 0x127b;

fn physical_sector_size(dev: &Device) -> u32 {
    if !dev.is_block() {
        return 4096;
    }
    let mut v: libc::c_uint = 0;
    // SAFETY: BLKPBSZGET writes one unsigned int.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(dev.file()),
            BLKPBSZGET,
            &mut v,
        )
    };
    if r < 0 || !(512..=4096).contains(&v) || !v.is_power_of_two() {
        512
    } else {
        v
    }
}

/// Formats `device` (and `header`, when detached) as LUKS2 with `key` as
/// the volume key and `passphrase` in the first keyslot. The header is
/// built and validated in memory, then written: keyslot material first,
/// then both header copies.
pub fn format_luks2(
    device: &Path,
    header: Option<&Path>,
    params: &FormatParams,
    key: &SecretBytes,
    passphrase: &[u8],
) -> Result<Volume, VolumeError> {
    format_luks2_with_progress(device, header, params, key, passphrase, &mut |_, _| {})
}

/// [`format_luks2`], reporting the wipe of the metadata and keyslots area
/// as `progress(bytes done, bytes total)`.
pub fn format_luks2_with_progress(
    device: &Path,
    header: Option<&Path>,
    params: &FormatParams,
    key: &SecretBytes,
    passphrase: &[u8],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Volume, VolumeError> {
    if !METADATA_SIZES.contains(&params.metadata_size) {
        return Err(VolumeError::Param(format!(
            "Unsupported LUKS2 metadata size {}.",
            params.metadata_size
        )));
    }
    let hash = HashAlg::from_name(&params.hash).map_err(|_| {
        VolumeError::Param(format!("Hash algorithm {} is not supported.", params.hash))
    })?;
    wrapcrypt_sector::CipherSpec::parse(&params.cipher).map_err(|e| {
        VolumeError::Param(format!("Cipher {} is not available: {e}", params.cipher))
    })?;
    let uuid = match &params.uuid {
        Some(u) if !valid_uuid(u) => {
            return Err(VolumeError::Param(
                "Wrong LUKS UUID format provided.".into(),
            ))
        }
        Some(u) => u.to_lowercase(),
        None => random_uuid(),
    };
    let open_rw = |p: &Path| {
        Device::open(p, true).map_err(|source| VolumeError::Device {
            path: p.display().to_string(),
            source,
        })
    };
    let data_dev = open_rw(device)?;
    let meta_path = header.unwrap_or(device);
    let meta_dev = if header.is_some() {
        // cryptsetup creates a missing detached header file (mode 0600).
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(meta_path)
        {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(VolumeError::Device {
                    path: meta_path.display().to_string(),
                    source: e,
                });
            }
        }
        open_rw(meta_path)?
    } else {
        open_rw(device)?
    };
    let lock = crate::lock::MetadataLock::acquire(&meta_dev, true)
        .map_err(|e| VolumeError::io("locking metadata", meta_path, e))?;

    let sector_size = params
        .sector_size
        .unwrap_or_else(|| physical_sector_size(&data_dev));
    if !matches!(sector_size, 512 | 1024 | 2048 | 4096) {
        return Err(VolumeError::Param(format!(
            "Unsupported encryption sector size {sector_size}."
        )));
    }
    let md = params.metadata_size;
    // As cryptsetup: an explicit keyslots area size puts the data right after
    // the metadata, aligned to 1 MiB; otherwise the data starts at 16 MiB.
    let data_offset = params
        .data_offset
        .unwrap_or(match (header, params.keyslots_size) {
            (Some(_), _) => 0,
            (None, Some(ks)) => (2 * md + ks).div_ceil(DATA_ALIGNMENT) * DATA_ALIGNMENT,
            (None, None) => DEFAULT_DATA_OFFSET,
        });
    if !data_offset.is_multiple_of(sector_size as u64) {
        return Err(VolumeError::Param(
            "Data offset is not aligned to the encryption sector size.".into(),
        ));
    }
    let keyslots_size = match params.keyslots_size {
        Some(k) => k,
        None if header.is_none() => data_offset
            .checked_sub(2 * md)
            .filter(|&k| k > 0)
            .ok_or_else(|| {
                VolumeError::Param("Data offset is too small for the LUKS2 metadata.".into())
            })?,
        // Detached: the data is elsewhere, but a segment offset inside the
        // keyslots area is still refused on load (by cryptsetup too), so the
        // area shrinks to end at the data offset, as cryptsetup does.
        None if data_offset > 0 && data_offset < DEFAULT_DATA_OFFSET => data_offset
            .checked_sub(2 * md)
            .filter(|&k| k >= 4096)
            .map(|k| k / 4096 * 4096)
            .ok_or_else(|| {
                VolumeError::Param("Data offset is too small for the LUKS2 metadata.".into())
            })?,
        None => DEFAULT_DATA_OFFSET - 2 * md,
    };
    if !keyslots_size.is_multiple_of(4096) || keyslots_size > (128 << 20) {
        return Err(VolumeError::Param(format!(
            "Unsupported LUKS2 keyslots size {keyslots_size}."
        )));
    }
    let meta_end = 2 * md + keyslots_size;
    if header.is_none() && data_offset < meta_end {
        return Err(VolumeError::Param(
            "Data offset overlaps the keyslots area.".into(),
        ));
    }
    let dev_size = data_dev
        .size()
        .map_err(|e| VolumeError::io("reading size", device, e))?;
    if dev_size < data_offset + sector_size as u64 || (header.is_none() && dev_size < meta_end) {
        return Err(VolumeError::TooSmall {
            path: device.display().to_string(),
            need: data_offset.max(meta_end) + sector_size as u64,
        });
    }
    if header.is_some() {
        // A detached header file grows to hold its keyslots area.
        let hs = meta_dev
            .size()
            .map_err(|e| VolumeError::io("reading size", meta_path, e))?;
        if hs < meta_end {
            if meta_dev.is_block() {
                return Err(VolumeError::TooSmall {
                    path: meta_path.display().to_string(),
                    need: meta_end,
                });
            }
            meta_dev
                .file()
                .set_len(meta_end)
                .map_err(|e| VolumeError::io("extending header file", meta_path, e))?;
        }
    }
    let mut salts = [[0u8; 64]; 2];
    for s in salts.iter_mut() {
        wrapcrypt_secret::fill_random(s).map_err(|e| VolumeError::io("random", meta_path, e))?;
    }
    let mut segments = std::collections::BTreeMap::new();
    segments.insert(
        0,
        Segment {
            kind: "crypt".into(),
            offset: data_offset,
            size: SegmentSize::Dynamic,
            iv_tweak: 0,
            encryption: Some(params.cipher.clone()),
            sector_size,
            flags: None,
            extra: Default::default(),
        },
    );
    let mut digests = std::collections::BTreeMap::new();
    let force = params.pbkdf.force_iterations;
    digests.insert(0, crate::make_digest(key, hash, vec![], vec![0], force)?);
    let hdr = Luks2Header {
        hdr_size: md,
        seqid: 0,
        label: params.label.clone(),
        subsystem: params.subsystem.clone(),
        uuid,
        checksum_alg: "sha256".into(),
        salts,
        meta: Metadata {
            keyslots: Default::default(),
            tokens: params
                .tokens
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, t)| (i as u32, t))
                .collect(),
            segments,
            digests,
            config: Config {
                json_size: md - 4096,
                keyslots_size,
                flags: (!params.flags.is_empty()).then(|| params.flags.clone()),
                requirements: None,
                requirements_extra: Default::default(),
                extra: Default::default(),
            },
            extra: Default::default(),
        },
        original: Default::default(),
    };
    hdr.validate(header.is_none())?;
    // Wipe any old signatures in the metadata + keyslots area first, so a
    // stale header can never be found after a crash mid-format.
    let zero = vec![0u8; 1 << 20];
    let mut off = 0;
    progress(0, meta_end);
    while off < meta_end {
        let n = (meta_end - off).min(zero.len() as u64) as usize;
        meta_dev
            .write_at(off, &zero[..n])
            .map_err(|e| VolumeError::io("wiping header area", meta_path, e))?;
        off += n as u64;
        progress(off, meta_end);
    }
    let mut vol = Volume {
        meta_dev,
        data_path: device.to_path_buf(),
        detached: header.is_some(),
        _lock: lock,
        hdr: crate::Header::Luks2(hdr.clone()),
        repair: None,
        primary_binary: None,
    };
    vol.luks2_write(hdr)?;
    let mut pb = params.pbkdf.clone();
    if pb.hash.is_none() {
        pb.hash = Some(params.hash.clone());
    }
    vol.luks2_add_keyslot(
        key,
        passphrase,
        params.keyslot,
        &pb,
        crate::DigestChoice::Existing(0),
        None,
    )?;
    drop(data_dev);
    Ok(vol)
}

pub use crate::luks1format::{format_luks1, Luks1FormatParams};
