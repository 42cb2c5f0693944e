//! luksFormat --type luks1, with cryptsetup 2.6's layout: keyslot areas
//! back to back from sector 8, each rounded up to 4096 bytes, and the
//! payload at the end of the last area rounded up to `--align-payload`
//! (default 2048 sectors) or at `--offset`.

use std::path::Path;

use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::keyslot_crypto;
use wrapcrypt_format::luks1::{
    luks1_layout, luks1_payload_offset, Luks1Header, Luks1Params, LUKS1_DEFAULT_ALIGN_PAYLOAD,
    LUKS1_DIGEST_SIZE, LUKS1_SALT_SIZE,
};
use wrapcrypt_secret::SecretBytes;

use crate::device::Device;
use crate::pbkdf::PbkdfOptions;
use crate::uuid::{random_uuid, valid_uuid};
use crate::{Volume, VolumeError};

/// Parameters of luksFormat --type luks1.
#[derive(Debug, Clone)]
pub struct Luks1FormatParams {
    /// Cipher spec `name-mode` (e.g. "aes-xts-plain64").
    pub cipher: String,
    /// Volume key size in bytes.
    pub key_size: usize,
    /// Hash of PBKDF2, AF and the MK digest (default sha256).
    pub hash: String,
    /// `--align-payload` in sectors (None: 2048).
    pub align_payload: Option<u64>,
    /// `--offset`: the payload offset in sectors.
    pub offset: Option<u64>,
    /// UUID (None = random).
    pub uuid: Option<String>,
    /// Keyslot PBKDF2 options (the hash comes from `hash`).
    pub pbkdf: PbkdfOptions,
    /// Keyslot for the first passphrase.
    pub keyslot: Option<u32>,
}

impl Default for Luks1FormatParams {
    fn default() -> Self {
        Luks1FormatParams {
            cipher: "aes-xts-plain64".into(),
            key_size: 64,
            hash: "sha256".into(),
            align_payload: None,
            offset: None,
            uuid: None,
            pbkdf: PbkdfOptions::default(),
            keyslot: None,
        }
    }
}

fn param(msg: impl Into<String>) -> VolumeError {
    VolumeError::Param(msg.into())
}

/// Formats `device` (header in `header` when detached) as LUKS1 with `key`
/// as the volume key and `passphrase` in the first keyslot. The header
/// area is zeroed, the keyslot material written, and the phdr last.
pub fn format_luks1(
    device: &Path,
    header: Option<&Path>,
    params: &Luks1FormatParams,
    key: &SecretBytes,
    passphrase: &[u8],
) -> Result<Volume, VolumeError> {
    let hash = HashAlg::from_name(&params.hash)
        .map_err(|_| param(format!("Hash algorithm {} is not supported.", params.hash)))?;
    wrapcrypt_sector::CipherSpec::parse(&params.cipher)
        .map_err(|e| param(format!("Cipher {} is not available: {e}", params.cipher)))?;
    let (name, mode) = params.cipher.split_once('-').ok_or_else(|| {
        param(format!(
            "No known cipher specification pattern detected for {}.",
            params.cipher
        ))
    })?;
    if params.pbkdf.kind.as_deref().is_some_and(|k| k != "pbkdf2") {
        return Err(param("Requested PBKDF type is not supported for LUKS1."));
    }
    if params.key_size == 0 || params.key_size > 512 {
        return Err(param(format!("Invalid key size {}.", params.key_size * 8)));
    }
    let uuid = match &params.uuid {
        Some(u) if !valid_uuid(u) => return Err(param("Wrong LUKS UUID format provided.")),
        Some(u) => u.to_lowercase(),
        None => random_uuid(),
    };
    let key_bytes = params.key_size as u32;
    let (offsets, ks_end) = luks1_layout(key_bytes);
    let payload = match (params.offset, header.is_some()) {
        (Some(o), _) if o != 0 && o < ks_end && header.is_none() => {
            return Err(param(
                "Data offset for LUKS header must be either 0 or higher than header size.",
            ))
        }
        (Some(o), _) => o,
        (None, true) => 0,
        (None, false) => luks1_payload_offset(
            key_bytes,
            params.align_payload.unwrap_or(LUKS1_DEFAULT_ALIGN_PAYLOAD),
        ),
    };
    let payload32 = u32::try_from(payload).map_err(|_| param("Data offset is too large."))?;
    let open_rw = |p: &Path| {
        Device::open(p, true).map_err(|source| VolumeError::Device {
            path: p.display().to_string(),
            source,
        })
    };
    let data_dev = open_rw(device)?;
    let meta_path = header.unwrap_or(device);
    let meta_dev = open_rw(meta_path)?;
    let lock = crate::lock::MetadataLock::acquire(&meta_dev, true)
        .map_err(|e| VolumeError::io("locking metadata", meta_path, e))?;
    let hdr_bytes = ks_end * 512;
    let meta_size = meta_dev
        .size()
        .map_err(|e| VolumeError::io("reading size", meta_path, e))?;
    let data_size = data_dev
        .size()
        .map_err(|e| VolumeError::io("reading size", device, e))?;
    if meta_size < hdr_bytes || (header.is_none() && data_size <= payload * 512) {
        return Err(VolumeError::TooSmall {
            path: meta_path.display().to_string(),
            need: hdr_bytes.max(payload * 512 + 512),
        });
    }
    let mut salt = [0u8; LUKS1_SALT_SIZE];
    wrapcrypt_secret::fill_random(&mut salt)
        .map_err(|e| VolumeError::io("random", meta_path, e))?;
    let iter = crate::pbkdf::digest_iterations(hash, key.len(), params.pbkdf.force_iterations);
    let d = keyslot_crypto::key_digest(hash.name(), key, &salt, iter, LUKS1_DIGEST_SIZE)?;
    let mut mk_digest = [0u8; LUKS1_DIGEST_SIZE];
    mk_digest.copy_from_slice(&d);
    let hdr = Luks1Header::new(&Luks1Params {
        cipher_name: name,
        cipher_mode: mode,
        hash_spec: hash.name(),
        payload_offset: payload32,
        key_bytes,
        mk_digest,
        mk_digest_salt: salt,
        mk_digest_iter: iter,
        uuid: &uuid,
        key_material_offsets: offsets,
    })
    .map_err(VolumeError::Luks1)?;
    // Zero the header and keyslot areas first, so no stale header or
    // keyslot survives a crash part way.
    let zero = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < hdr_bytes {
        let n = (hdr_bytes - off).min(zero.len() as u64) as usize;
        meta_dev
            .write_at(off, &zero[..n])
            .map_err(|e| VolumeError::io("wiping header area", meta_path, e))?;
        off += n as u64;
    }
    let mut vol = Volume {
        meta_dev,
        data_path: device.to_path_buf(),
        detached: header.is_some(),
        _lock: lock,
        hdr: crate::Header::Luks1(hdr),
        repair: None,
        primary_binary: None,
    };
    let mut pb = params.pbkdf.clone();
    pb.kind = Some("pbkdf2".into());
    vol.luks1_add_keyslot(key, passphrase, params.keyslot, &pb, None)?;
    drop(data_dev);
    Ok(vol)
}
