#![doc = include_str!("../README.md")]

pub mod convert;
pub mod device;
pub mod error;
pub mod faults;
pub mod format;
pub mod lock;
mod luks1format;
mod luks1ops;
mod luks2ops;
pub mod pbkdf;
pub mod reencrypt;
pub mod rewrap;
mod uuid;
pub mod wrap_convert;

use std::path::{Path, PathBuf};

use wrapcrypt_format::luks1::{Luks1Header, LUKS1_NUM_KEYSLOTS};
use wrapcrypt_format::luks2::{self, Copy, Luks2Header, RepairReason};
use wrapcrypt_secret::SecretBytes;

pub use device::Device;
pub use error::{ExitClass, VolumeError};
pub use lock::{MetadataLock, ReencryptLock};
pub use luks2ops::{make_digest, DigestChoice};
pub use pbkdf::PbkdfOptions;

/// The decoded header of a LUKS device.
#[derive(Debug, Clone)]
pub enum Header {
    /// LUKS1 (the 592-byte phdr).
    Luks1(Luks1Header),
    /// LUKS2.
    Luks2(Luks2Header),
}

/// A LUKS device opened for inspection or change, with its metadata lock
/// held for the lifetime of the value.
#[derive(Debug)]
pub struct Volume {
    meta_dev: Device,
    data_path: PathBuf,
    detached: bool,
    _lock: MetadataLock,
    /// The header in force.
    pub hdr: Header,
    /// A header copy that is damaged or stale, and why.
    pub repair: Option<(Copy, RepairReason)>,
    /// Binary fields of the primary copy as read (for luksDump).
    pub primary_binary: Option<luks2::BinaryHeader>,
}

/// The result of a successful passphrase unlock.
#[derive(Debug)]
pub struct Unlocked {
    /// The keyslot that opened.
    pub keyslot: u32,
    /// The volume key (or, for wrapped volumes, the wrapped-key blob).
    pub key: SecretBytes,
}

impl Volume {
    /// Opens a LUKS device: `device` holds the data; `header` is a detached
    /// header file, if any. Takes the metadata lock (exclusive for writers)
    /// and reads the header, recovering from a damaged copy in memory.
    pub fn open(
        device: &Path,
        header: Option<&Path>,
        writable: bool,
    ) -> Result<Volume, VolumeError> {
        let meta_path = header.unwrap_or(device);
        log::debug!(
            "Trying to open device {} ({}).",
            meta_path.display(),
            if writable { "read-write" } else { "read-only" }
        );
        let meta_dev = Device::open(meta_path, writable).map_err(|source| VolumeError::Device {
            path: meta_path.display().to_string(),
            source,
        })?;
        let lock = MetadataLock::acquire(&meta_dev, writable)
            .map_err(|e| VolumeError::io("locking metadata", meta_path, e))?;
        log::debug!(
            "Device {} {} lock taken.",
            meta_path.display(),
            if writable { "WRITE" } else { "READ" }
        );
        let read = |len| {
            meta_dev
                .read_at(0, len)
                .map_err(|e| VolumeError::io("reading header", meta_path, e))
        };
        // A healthy LUKS2 header is read as exactly its two copies, as
        // cryptsetup does; the 8 MiB scan is for recovery only.
        let head = read(4096)?;

        // The version word of the primary header decides, as in cryptsetup:
        // a LUKS1 phdr wins over whatever follows it (a LUKS2 secondary
        // copy written by an interrupted conversion, say).
        if head.len() >= 8
            && head[..6] == wrapcrypt_format::luks1::LUKS_MAGIC
            && head[6..8] == [0, 1]
        {
            let h = Luks1Header::parse(&head).map_err(VolumeError::Luks1)?;
            log::debug!("LUKS1 header read from {}.", meta_path.display());
            return Ok(Volume {
                meta_dev,
                data_path: device.to_path_buf(),
                detached: header.is_some(),
                _lock: lock,
                hdr: Header::Luks1(h),
                repair: None,
                primary_binary: None,
            });
        }
        let mut prefix = match luks2::metadata_prefix_len(&head) {
            Some(len) => read(len)?,
            None => read(luks2::MAX_METADATA_PREFIX)?,
        };
        // Anything but a valid primary: scan the whole prefix, so recovery
        // and errors are exactly those of the full read.
        let primary_ok = |r: &Result<luks2::Loaded, luks2::ParseError>| matches!(r, Ok(l) if !matches!(l.needs_repair, Some((luks2::Copy::Primary, _))));
        let mut parsed = Luks2Header::parse(&prefix);
        if !primary_ok(&parsed) && prefix.len() < luks2::MAX_METADATA_PREFIX {
            prefix = read(luks2::MAX_METADATA_PREFIX)?;
            parsed = Luks2Header::parse(&prefix);
        }
        let loaded = match parsed {
            Ok(l) => l,
            Err(luks2::ParseError::NotLuks2) => {
                return Err(VolumeError::NotLuks(meta_path.display().to_string()))
            }
            Err(e) => return Err(VolumeError::Parse(e)),
        };
        log::debug!(
            "LUKS2 header version 2 of size {} bytes, checksum {}, seqid {}.",
            loaded.header.hdr_size,
            loaded.header.checksum_alg,
            loaded.header.seqid
        );
        if let Some((copy, why)) = &loaded.needs_repair {
            log::debug!("LUKS2 header copy {copy:?} needs repair ({why:?}); using the other copy.");
        }
        Ok(Volume {
            meta_dev,
            data_path: device.to_path_buf(),
            detached: header.is_some(),
            _lock: lock,
            hdr: Header::Luks2(loaded.header),
            repair: loaded.needs_repair,
            primary_binary: loaded.primary_binary,
        })
    }

    /// The LUKS2 header, or an error for other formats.
    pub fn luks2_header(&self) -> Result<&Luks2Header, VolumeError> {
        match &self.hdr {
            Header::Luks2(h) => Ok(h),
            Header::Luks1(_) => Err(VolumeError::Unsupported(format!(
                "Device {} is not a valid LUKS2 device.",
                self.meta_dev.path().display()
            ))),
        }
    }

    /// The metadata device.
    pub fn meta_device(&self) -> &Device {
        &self.meta_dev
    }

    /// The data device path.
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// Whether the header is detached from the data device.
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// LUKS version (1 or 2).
    pub fn version(&self) -> u32 {
        match &self.hdr {
            Header::Luks2(_) => 2,
            Header::Luks1(_) => 1,
        }
    }

    /// UUID of the volume.
    pub fn uuid(&self) -> &str {
        match &self.hdr {
            Header::Luks2(h) => &h.uuid,
            Header::Luks1(h) => h.uuid(),
        }
    }

    pub(crate) fn require_writable(&self) -> Result<(), VolumeError> {
        if !self.meta_dev.writable() {
            return Err(VolumeError::Param("device opened read-only".into()));
        }
        Ok(())
    }

    /// Refuses changes while unknown mandatory requirements are present.
    pub fn check_requirements(&self) -> Result<(), VolumeError> {
        match &self.hdr {
            Header::Luks2(h) => {
                let r = h.meta.config.unknown_requirements();
                if r.is_empty() {
                    Ok(())
                } else {
                    Err(VolumeError::Requirements(r.join(", ")))
                }
            }
            Header::Luks1(_) => Ok(()),
        }
    }

    /// Unlocks a keyslot with a passphrase. With `need_bound`, unbound
    /// keyslots (whose key is not the segment's) are skipped: they never
    /// activate a volume.
    pub fn unlock(
        &self,
        passphrase: &[u8],
        keyslot: Option<u32>,
        need_bound: bool,
    ) -> Result<Unlocked, VolumeError> {
        match &self.hdr {
            Header::Luks2(h) => {
                let (keyslot, key) = self.luks2_unlock(h, passphrase, keyslot, need_bound)?;
                Ok(Unlocked { keyslot, key })
            }
            Header::Luks1(h) => {
                let (keyslot, key) = self.luks1_unlock(h, passphrase, keyslot)?;
                Ok(Unlocked { keyslot, key })
            }
        }
    }

    /// Checks a volume key against the segment digest.
    pub fn verify_volume_key(&self, key: &SecretBytes) -> Result<bool, VolumeError> {
        match &self.hdr {
            Header::Luks2(h) => {
                let Some(did) = h
                    .meta
                    .crypt_segment_id()
                    .and_then(|s| h.meta.digest_of_segment(s))
                else {
                    return Ok(false);
                };
                Volume::luks2_check_key(h, did, key)
            }
            Header::Luks1(h) => luks1ops::luks1_check_key(h, key),
        }
    }

    /// Adds a keyslot holding `key` (which must be the volume key unless
    /// `unbound`).
    pub fn add_keyslot(
        &mut self,
        key: &SecretBytes,
        passphrase: &[u8],
        slot: Option<u32>,
        pbkdf: &PbkdfOptions,
        unbound: bool,
    ) -> Result<u32, VolumeError> {
        self.check_requirements()?;
        if let Header::Luks1(_) = self.hdr {
            if unbound {
                return Err(VolumeError::Unsupported(
                    "Unbound keyslots are not supported by LUKS1.".into(),
                ));
            }
            return self.luks1_add_keyslot(key, passphrase, slot, pbkdf, None);
        }
        let h = self.luks2_header()?;
        let choice = if unbound {
            DigestChoice::NewUnbound {
                hash: wrapcrypt_format::hash::HashAlg::Sha256,
            }
        } else {
            let did = h
                .meta
                .crypt_segment_id()
                .and_then(|s| h.meta.digest_of_segment(s))
                .ok_or_else(|| VolumeError::Unsupported("volume has no segment digest".into()))?;
            if !self.verify_volume_key(key)? {
                return Err(VolumeError::VolumeKeyMismatch);
            }
            DigestChoice::Existing(did)
        };
        self.luks2_add_keyslot(key, passphrase, slot, pbkdf, choice, None)
    }

    /// Replaces keyslot `old` with one protected by a new passphrase
    /// (luksChangeKey). The new material goes to a fresh area first.
    pub fn change_keyslot(
        &mut self,
        old: u32,
        key: &SecretBytes,
        new_passphrase: &[u8],
        new_slot: Option<u32>,
        pbkdf: &PbkdfOptions,
    ) -> Result<u32, VolumeError> {
        self.check_requirements()?;
        if let Header::Luks1(h) = &self.hdr {
            if old as usize >= LUKS1_NUM_KEYSLOTS || !h.keyslots()[old as usize].is_active() {
                return Err(VolumeError::KeyslotInactive(old));
            }
            return self.luks1_add_keyslot(key, new_passphrase, new_slot, pbkdf, Some(old));
        }
        let h = self.luks2_header()?;
        let did = h
            .meta
            .digest_of_keyslot(old)
            .ok_or(VolumeError::KeyslotInactive(old))?;
        self.luks2_add_keyslot(
            key,
            new_passphrase,
            new_slot,
            pbkdf,
            DigestChoice::Existing(did),
            Some(old),
        )
    }

    /// Removes keyslot `slot`.
    pub fn remove_keyslot(&mut self, slot: u32) -> Result<(), VolumeError> {
        self.check_requirements()?;
        match self.hdr {
            Header::Luks1(_) => self.luks1_remove_keyslot(slot),
            Header::Luks2(_) => self.luks2_remove_keyslot(slot),
        }
    }

    /// Active keyslot numbers.
    pub fn active_keyslots(&self) -> Vec<u32> {
        match &self.hdr {
            Header::Luks1(h) => h.active_keyslots().map(|s| s as u32).collect(),
            Header::Luks2(h) => h.meta.keyslots.keys().copied().collect(),
        }
    }

    /// Volume key length in bytes.
    pub fn key_size(&self) -> Option<usize> {
        match &self.hdr {
            Header::Luks1(h) => Some(h.key_bytes() as usize),
            Header::Luks2(h) => h.meta.keyslots.values().next().map(|k| k.key_size as usize),
        }
    }

    /// Sets the UUID (luksUUID --uuid).
    pub fn set_uuid(&mut self, uuid: &str) -> Result<(), VolumeError> {
        self.check_requirements()?;
        match &self.hdr {
            Header::Luks1(h) => {
                let mut n = h.clone();
                n.set_uuid(uuid).map_err(VolumeError::Luks1)?;
                self.luks1_write(n)
            }
            Header::Luks2(h) => {
                let mut n = h.clone();
                n.uuid = uuid.to_string();
                self.luks2_write(n)
            }
        }
    }

    /// Bytes a header backup holds: the LUKS2 metadata and keyslots area,
    /// or for LUKS1 the phdr and keyslot areas rounded up to 4096 bytes
    /// (cryptsetup's size, which may reach past the payload offset of a
    /// version 1.0 layout).
    pub fn backup_len(&self) -> u64 {
        match &self.hdr {
            Header::Luks1(h) => luks1_backup_len(h),
            Header::Luks2(h) => h.meta.keyslots_end(h.hdr_size),
        }
    }

    /// Writes a modified LUKS2 header (tokens, config, labels…).
    pub fn write_luks2(&mut self, new: Luks2Header) -> Result<(), VolumeError> {
        self.luks2_write(new)
    }

    /// Rewrites a damaged or stale copy from the copy in force.
    pub fn repair(&mut self) -> Result<bool, VolumeError> {
        if self.repair.is_none() || matches!(self.hdr, Header::Luks1(_)) {
            return Ok(false);
        }
        let h = self.luks2_header()?.clone();
        // Writing both copies with a fresh seqid makes them agree again.
        self.luks2_write(h)?;
        Ok(true)
    }
}

/// Size of a LUKS1 header backup: end of the last keyslot area, 4096-byte
/// aligned.
pub fn luks1_backup_len(h: &Luks1Header) -> u64 {
    let end = (0..LUKS1_NUM_KEYSLOTS)
        .map(|k| h.keyslot_sectors(k).end)
        .max()
        .unwrap_or(0);
    end.div_ceil(8) * 8 * 512
}
