//! Offline LUKS2 reencryption, interoperable with cryptsetup 2.6: the data
//! moves hotzone by hotzone from the old segment's cipher and key to the
//! new one's, and the header records every step the way cryptsetup does,
//! so either tool finishes what the other started. Write order, state
//! machine and compatibility notes: `docs/reencrypt.md`.
//!
//! * [`unlock_keys`] opens the old and the new volume key with one
//!   passphrase (both keyslots of a key change share it).
//! * [`init`] writes the initial reencryption header of a key change
//!   (`reencrypt --init-only`).
//! * [`init_encrypt`] writes the initial detached header of an
//!   encryption in place (`reencrypt --encrypt --header`).
//! * [`init_encrypt_shift`] writes the initial header of an encryption in
//!   place with the header at the start (`--reduce-device-size`).
//! * [`resume`] verifies the metadata digest, recovers an interrupted
//!   hotzone, runs the remaining hotzones and finalizes the header.

mod backward;
mod datashift;
mod datashift_init;
mod decrypt_init;
mod encrypt_init;
mod engine;
mod init;
mod layout;
mod plain;
mod verify;

use std::sync::Arc;

use wrapcrypt_format::luks2::{Luks2Header, ReencryptInfo, Segment, ValidateError};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::SectorCipher;

use crate::{Header, Volume, VolumeError};

pub use datashift_init::init_encrypt_shift;
pub use decrypt_init::init_decrypt;
pub use encrypt_init::{init_encrypt, EncryptInitOptions};
pub use engine::{Finished, ResumeOptions};
pub use init::{init, InitOptions, InitResilience};

/// Why a reencryption could not start or go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReencryptError {
    /// Reading, writing or unlocking the volume failed.
    #[error("{0}")]
    Volume(#[from] VolumeError),
    /// The header records no reencryption.
    #[error("Device is not in reencryption.")]
    NotInReencryption,
    /// The header already records a reencryption (init refused).
    #[error("Device is already in reencryption; use --resume-only to finish it.")]
    InReencryption,
    /// The header records a reencryption that cannot be resumed.
    #[error("{0}")]
    Metadata(#[from] ValidateError),
    /// Metadata inconsistent with the keys or the device.
    #[error("{0}")]
    Invalid(String),
    /// A reencryption this engine does not do (yet).
    #[error("Unsupported reencryption: {0}.")]
    Unsupported(String),
    /// Stopped on request after a whole hotzone; the header records the
    /// progress and `--resume-only` goes on.
    #[error("Reencryption interrupted.")]
    Interrupted {
        /// Bytes in the new layout.
        done: u64,
        /// Data bytes in all.
        total: u64,
    },
    /// Another process (cryptsetup or wrapcrypt) runs a reencryption of
    /// this volume: it holds cryptsetup's reencryption lock.
    #[error("Reencryption process is already running.")]
    Busy,
    /// A segment cipher cannot be built.
    #[error("Cipher {cipher}: {reason}")]
    Cipher {
        /// The cipher spec.
        cipher: String,
        /// Why.
        reason: String,
    },
}

/// Which layout of a reencryption a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The layout the data leaves (`backup-previous`).
    Old,
    /// The layout the data moves to (`backup-final`).
    New,
}

/// The ciphers of wrapped-key segments (`waes-xts-plain64`): their keys
/// live in a provider, which the caller chooses (DESIGN.md §3: a backend
/// is a value passed in), so the engine asks for them here. The volume
/// key the engine holds for such a segment is the wrapped blob.
pub trait WrappedCiphers {
    /// A sector cipher over `blob`, the volume key of `segment`, run
    /// inside its provider.
    fn open(
        &self,
        side: Side,
        segment: &Segment,
        blob: &SecretBytes,
    ) -> Result<Arc<dyn SectorCipher>, String>;
    /// Adjusts the header that ends the reencryption before it is written
    /// (the new key's tokens take the place of the old key's).
    fn finalize(&self, header: &mut Luks2Header);
}

/// The data path of an open volume, for online reencryption: each
/// hotzone moves while no request runs between its cipher and its
/// backing I/O, and the served layout moves with it.
pub trait OnlineGate {
    /// Runs `step` (one hotzone `[start, done)` in data bytes, or the
    /// recovery of one) while no request touches those bytes; once it
    /// succeeded, the data before `done` is served in the new layout
    /// (backward: the data from `start` on).
    fn exclusive(
        &self,
        start: u64,
        done: u64,
        step: &mut dyn FnMut() -> Result<(), ReencryptError>,
    ) -> Result<(), ReencryptError>;
}

/// The old and new volume keys of a reencryption (either may be absent
/// when its layout is plain).
#[derive(Debug, Default)]
pub struct ReencryptKeys {
    /// Key of the backup-previous segment's digest.
    pub old: Option<SecretBytes>,
    /// Key of the backup-final segment's digest.
    pub new: Option<SecretBytes>,
}

impl ReencryptKeys {
    pub(crate) fn old_key(&self) -> Result<&SecretBytes, ReencryptError> {
        self.old
            .as_ref()
            .ok_or_else(|| ReencryptError::Invalid("the old volume key is not unlocked".into()))
    }

    pub(crate) fn new_key(&self) -> Result<&SecretBytes, ReencryptError> {
        self.new
            .as_ref()
            .ok_or_else(|| ReencryptError::Invalid("the new volume key is not unlocked".into()))
    }
}

/// Finishes the reencryption recorded in `vol`'s header with `keys`: a
/// decryption runs backward (`backward.rs`), an encryption with a data
/// shift backward with its moved segment (`datashift.rs`), everything
/// else forward (`engine.rs`).
pub fn resume(
    vol: &mut Volume,
    keys: &ReencryptKeys,
    opts: ResumeOptions,
) -> Result<Finished, ReencryptError> {
    // cryptsetup's reencryption lock, for the whole run (cryptsetup holds
    // the metadata lock only around header writes).
    let _run = lock_run(vol.uuid())?;
    let info = state(vol)?;
    match info {
        Some(i)
            if i.mode == wrapcrypt_format::luks2::ReencryptMode::Decrypt
                && i.direction == wrapcrypt_format::luks2::ReencryptDirection::Backward =>
        {
            vol.require_writable()?;
            backward::resume_decrypt(vol, keys, opts)
        }
        Some(i)
            if i.mode == wrapcrypt_format::luks2::ReencryptMode::Encrypt
                && i.direction == wrapcrypt_format::luks2::ReencryptDirection::Backward =>
        {
            datashift::resume_encrypt_shift(vol, keys, opts)
        }
        _ => engine::resume(vol, keys, opts),
    }
}

/// Takes cryptsetup's reencryption lock of volume `uuid` (no waiting).
pub fn lock_run(uuid: &str) -> Result<crate::ReencryptLock, ReencryptError> {
    crate::ReencryptLock::try_acquire(uuid)
        .map_err(|e| ReencryptError::Invalid(format!("Cannot take the reencryption lock: {e}")))?
        .ok_or(ReencryptError::Busy)
}

/// The reencryption the header of `vol` records.
pub fn state(vol: &Volume) -> Result<Option<ReencryptInfo>, ReencryptError> {
    match &vol.hdr {
        Header::Luks2(h) => Ok(h.meta.reencrypt_state()?),
        Header::Luks1(_) => Ok(None),
    }
}

/// Opens the old and the new volume key of the reencryption in progress
/// with `passphrase`, trying every `luks2` keyslot (or only `keyslot` and
/// then the others for the second key). `NoMatchingKeyslot` if neither
/// opens; both are needed where both layouts are encrypted.
pub fn unlock_keys(
    vol: &Volume,
    passphrase: &[u8],
    keyslot: Option<u32>,
) -> Result<ReencryptKeys, ReencryptError> {
    let h = vol.luks2_header()?;
    let info = h
        .meta
        .reencrypt_state()?
        .ok_or(ReencryptError::NotInReencryption)?;
    let mut keys = ReencryptKeys::default();
    let mut order: Vec<u32> = keyslot.into_iter().collect();
    order.extend(
        h.meta
            .keyslots
            .iter()
            .filter(|(id, k)| k.kind == "luks2" && Some(**id) != keyslot)
            .map(|(id, _)| *id),
    );
    for id in order {
        let Some(did) = h.meta.digest_of_keyslot(id) else {
            continue;
        };
        let want_old = Some(did) == info.old_digest && keys.old.is_none();
        let want_new = Some(did) == info.new_digest && keys.new.is_none();
        if !want_old && !want_new {
            continue;
        }
        match vol.luks2_unlock(h, passphrase, Some(id), false) {
            Ok((_, key)) => {
                if want_old && want_new {
                    keys.new = Some(SecretBytes::copy_from(key.expose_secret()));
                    keys.old = Some(key);
                } else if want_old {
                    keys.old = Some(key);
                } else {
                    keys.new = Some(key);
                }
            }
            Err(VolumeError::NoMatchingKeyslot | VolumeError::NoUsableKeyslot) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let need_old = info.old_digest.is_some() && keys.old.is_none();
    let need_new = info.new_digest.is_some() && keys.new.is_none();
    if (need_old && need_new) || (keys.old.is_none() && keys.new.is_none()) {
        return Err(VolumeError::NoMatchingKeyslot.into());
    }
    if need_old || need_new {
        return Err(ReencryptError::Invalid(format!(
            "No keyslot opens the {} volume key with this passphrase.",
            if need_old { "old" } else { "new" }
        )));
    }
    Ok(keys)
}
