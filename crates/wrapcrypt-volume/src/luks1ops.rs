//! LUKS1 operations: unlock, keyslot add/remove/change, phdr writes.
//!
//! LUKS1 has one 592-byte header and eight fixed keyslot areas, so crash
//! safety comes from ordering alone: new key material always goes to an
//! area the header on disk does not reference, the header write is a
//! single sector write that switches from the old to the new state, and
//! material that is no longer referenced is wiped only afterwards.

use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::kdf::KdfParams;
use wrapcrypt_format::keyslot_crypto::{self, SlotParams};
use wrapcrypt_format::luks1::{
    Luks1Header, Luks1Keyslot, Luks1KeyslotState, LUKS1_NUM_KEYSLOTS, LUKS1_SALT_SIZE,
    LUKS1_STRIPES,
};
use wrapcrypt_format::luks2::KeyslotKdf;
use wrapcrypt_secret::SecretBytes;

use crate::pbkdf::PbkdfOptions;
use crate::{Volume, VolumeError};

/// Keyslot parameters of LUKS1 slot `ks`: PBKDF2 and AF with the header's
/// hash, area encrypted with the volume cipher and key size.
pub(crate) fn luks1_slot_params<'a>(
    h: &'a Luks1Header,
    ks: &'a Luks1Keyslot,
    cipher: &'a str,
) -> Result<SlotParams<'a>, VolumeError> {
    let hash = HashAlg::from_name(h.hash_spec()).map_err(|_| {
        VolumeError::Param(format!(
            "Hash algorithm {} is not supported.",
            h.hash_spec()
        ))
    })?;
    Ok(SlotParams {
        kdf: KdfParams::Pbkdf2 {
            hash,
            iterations: ks.iterations,
        },
        salt: &ks.salt,
        area_cipher: cipher,
        area_key_size: h.key_bytes() as usize,
        stripes: ks.stripes,
        af_hash: h.hash_spec(),
    })
}

/// Checks a candidate key against the LUKS1 MK digest.
pub(crate) fn luks1_check_key(h: &Luks1Header, key: &SecretBytes) -> Result<bool, VolumeError> {
    if key.len() != h.key_bytes() as usize {
        return Ok(false);
    }
    Ok(keyslot_crypto::verify_key(
        h.hash_spec(),
        key,
        h.mk_digest_salt(),
        h.mk_digest_iter(),
        h.mk_digest(),
    )?)
}

/// PBKDF2 parameters for a new LUKS1 keyslot: the header's hash, the
/// caller's iteration count or calibration.
pub(crate) fn luks1_kdf(
    h: &Luks1Header,
    pbkdf: &PbkdfOptions,
) -> Result<(u32, [u8; LUKS1_SALT_SIZE]), VolumeError> {
    if let Some(k) = pbkdf.kind.as_deref() {
        if k != "pbkdf2" {
            return Err(VolumeError::Param(
                "Requested PBKDF type is not supported for LUKS1.".into(),
            ));
        }
    }
    let mut pb = pbkdf.clone();
    pb.kind = Some("pbkdf2".into());
    pb.hash = Some(h.hash_spec().to_string());
    match pb.resolve(h.key_bytes() as usize)? {
        KeyslotKdf::Pbkdf2 {
            iterations, salt, ..
        } => {
            let mut s = [0u8; LUKS1_SALT_SIZE];
            s.copy_from_slice(&salt[..LUKS1_SALT_SIZE]);
            Ok((iterations, s))
        }
        KeyslotKdf::Argon2 { .. } => Err(VolumeError::Param(
            "Requested PBKDF type is not supported for LUKS1.".into(),
        )),
    }
}

impl Volume {
    /// The LUKS1 header, or an error for other formats.
    pub fn luks1_header(&self) -> Result<&Luks1Header, VolumeError> {
        match &self.hdr {
            crate::Header::Luks1(h) => Ok(h),
            crate::Header::Luks2(_) => Err(VolumeError::Unsupported(format!(
                "Device {} is not a valid LUKS1 device.",
                self.meta_dev.path().display()
            ))),
        }
    }

    pub(crate) fn luks1_unlock(
        &self,
        h: &Luks1Header,
        passphrase: &[u8],
        only: Option<u32>,
    ) -> Result<(u32, SecretBytes), VolumeError> {
        if let Some(s) = only {
            if s as usize >= LUKS1_NUM_KEYSLOTS {
                return Err(VolumeError::KeyslotInvalid(s));
            }
            if !h.keyslots()[s as usize].is_active() {
                return Err(VolumeError::KeyslotInactive(s));
            }
        }
        let cipher = h.cipher_spec();
        let slots: Vec<usize> = match only {
            Some(s) => vec![s as usize],
            None => h.active_keyslots().collect(),
        };
        if slots.is_empty() {
            return Err(VolumeError::NoUsableKeyslot);
        }
        for slot in slots {
            let ks = &h.keyslots()[slot];
            log::debug!("Trying to open LUKS1 keyslot {slot}.");
            let p = luks1_slot_params(h, ks, &cipher)?;
            let area = self.luks1_read_area(h, slot)?;
            let key = keyslot_crypto::open(&p, passphrase, &area, h.key_bytes() as usize)?;
            if luks1_check_key(h, &key)? {
                return Ok((slot as u32, key));
            }
            log::debug!("Volume key digest verify failed for keyslot {slot}.");
        }
        Err(VolumeError::NoMatchingKeyslot)
    }

    pub(crate) fn luks1_read_area(
        &self,
        h: &Luks1Header,
        slot: usize,
    ) -> Result<Vec<u8>, VolumeError> {
        let r = h.keyslot_area(slot);
        let mut buf = vec![0u8; (r.end - r.start) as usize];
        self.meta_dev
            .read_exact_at(r.start, &mut buf)
            .map_err(|e| VolumeError::io("reading keyslot area", self.meta_dev.path(), e))?;
        Ok(buf)
    }

    /// Writes the 592-byte phdr at offset 0 and makes it durable: the one
    /// write that switches a LUKS1 volume from its old state to its new.
    pub(crate) fn luks1_write(&mut self, new: Luks1Header) -> Result<(), VolumeError> {
        self.require_writable()?;
        new.validate().map_err(VolumeError::Luks1)?;
        let path = self.meta_dev.path().to_path_buf();
        self.meta_dev
            .write_at(0, &new.encode())
            .map_err(|e| VolumeError::io("writing LUKS1 header", &path, e))?;
        self.meta_dev
            .sync()
            .map_err(|e| VolumeError::io("syncing header", &path, e))?;
        self.hdr = crate::Header::Luks1(new);
        Ok(())
    }

    /// Writes `data` at `off` and makes it durable.
    pub(crate) fn write_durable(
        &mut self,
        op: &'static str,
        off: u64,
        data: &[u8],
    ) -> Result<(), VolumeError> {
        let path = self.meta_dev.path().to_path_buf();
        self.meta_dev
            .write_at(off, data)
            .map_err(|e| VolumeError::io(op, &path, e))?;
        self.meta_dev
            .sync()
            .map_err(|e| VolumeError::io(op, &path, e))
    }

    /// Stores `key` under `passphrase` in a LUKS1 keyslot. With `replace`,
    /// the same phdr write that activates the new slot disables the old
    /// one, whose area is wiped afterwards (luksChangeKey).
    pub(crate) fn luks1_add_keyslot(
        &mut self,
        key: &SecretBytes,
        passphrase: &[u8],
        slot: Option<u32>,
        pbkdf: &PbkdfOptions,
        replace: Option<u32>,
    ) -> Result<u32, VolumeError> {
        let h = self.luks1_header()?.clone();
        if !luks1_check_key(&h, key)? {
            return Err(VolumeError::VolumeKeyMismatch);
        }
        let free = |i: usize| !h.keyslots()[i].is_active();
        let id = match slot {
            Some(s) if s as usize >= LUKS1_NUM_KEYSLOTS => {
                return Err(VolumeError::Param(format!(
                    "Key slot {s} is invalid, please select between 0 and 7."
                )))
            }
            Some(s) if !free(s as usize) && Some(s) != replace => {
                return Err(VolumeError::KeyslotFull(s))
            }
            Some(s) => s as usize,
            // A fresh slot keeps the old key usable until the header write;
            // only with all eight slots in use does a change go in place.
            None => match (0..LUKS1_NUM_KEYSLOTS).find(|&i| free(i)) {
                Some(i) => i,
                None => match replace {
                    Some(r) => r as usize,
                    None => return Err(VolumeError::NoFreeKeyslot),
                },
            },
        };
        let (iterations, salt) = luks1_kdf(&h, pbkdf)?;
        let cipher = h.cipher_spec();
        let mut ks = Luks1Keyslot {
            state: Luks1KeyslotState::Active,
            iterations,
            salt,
            key_material_offset: h.keyslots()[id].key_material_offset,
            stripes: LUKS1_STRIPES,
        };
        let material = {
            let p = luks1_slot_params(&h, &ks, &cipher)?;
            keyslot_crypto::seal(&p, passphrase, key)?
        };
        let mut new = h.clone();
        let mut changes = vec![];
        let old = replace.filter(|&r| r as usize != id);
        if let Some(r) = old {
            changes.push((r as usize, disabled(&h.keyslots()[r as usize])));
        }
        ks.stripes = LUKS1_STRIPES;
        changes.push((id, ks));
        new.set_keyslots(&changes).map_err(VolumeError::Luks1)?;
        let area = h.keyslot_area(id);
        let mut padded = material;
        padded.resize((area.end - area.start) as usize, 0);
        self.write_durable("writing keyslot area", area.start, &padded)?;
        self.luks1_write(new)?;
        if let Some(r) = old {
            let a = h.keyslot_area(r as usize);
            self.wipe_area(a.start, a.end - a.start)?;
        }
        Ok(id as u32)
    }

    /// Disables LUKS1 keyslot `slot`: phdr first, then the area is wiped.
    pub(crate) fn luks1_remove_keyslot(&mut self, slot: u32) -> Result<(), VolumeError> {
        let h = self.luks1_header()?.clone();
        let s = slot as usize;
        if s >= LUKS1_NUM_KEYSLOTS {
            return Err(VolumeError::KeyslotInvalid(slot));
        }
        if !h.keyslots()[s].is_active() {
            return Err(VolumeError::KeyslotInactive(slot));
        }
        let mut new = h.clone();
        new.set_keyslot(s, disabled(&h.keyslots()[s]))
            .map_err(VolumeError::Luks1)?;
        self.luks1_write(new)?;
        let a = h.keyslot_area(s);
        self.wipe_area(a.start, a.end - a.start)
    }
}

/// A disabled copy of a slot descriptor (area kept, secrets cleared).
pub(crate) fn disabled(ks: &Luks1Keyslot) -> Luks1Keyslot {
    Luks1Keyslot {
        state: Luks1KeyslotState::Disabled,
        iterations: 0,
        salt: [0; LUKS1_SALT_SIZE],
        key_material_offset: ks.key_material_offset,
        stripes: ks.stripes,
    }
}
