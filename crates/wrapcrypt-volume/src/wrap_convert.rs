//! Convert a clear-key `aes-xts-plain64` LUKS2 volume to a wrapped-key one
//! without re-encrypting data (DESIGN.md §2; write sequence in
//! `docs/reencipher.md` §4). The caller has already made a header backup,
//! imported the clear key into a provider and proved equal verification
//! patterns; this module rewrites the header crash-safely.

use serde_json::Value;
use wrapcrypt_format::luks2::Token;
use wrapcrypt_secret::SecretBytes;

use crate::luks2ops::area_cipher_for;
use crate::rewrap::{
    digest_like, free_token_id, seal_all, segment_digest, RewrapError, SealHow, SlotPass,
};
use crate::{Volume, VolumeError};

/// The clear cipher a volume must have to be converted.
pub const CONVERTIBLE: &str = "aes-xts-plain64";

/// What a conversion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// Keyslots now holding the wrapped blob (the same ids as before).
    pub keyslots: Vec<u32>,
    /// Keyslots of the clear key that were removed (no passphrase given).
    pub removed: Vec<u32>,
}

/// Rewrites the header of `vol` so that `blob` (the wrapped form of the
/// clear key every one of `slots` unlocked) is the volume key of a
/// `cipher` segment: each given keyslot is re-sealed with its passphrase
/// (same id, same KDF, fresh salt, new area), other keyslots of the clear
/// key are removed when `drop_others`, the digest is replaced, `tokens`
/// are added. Same UUID, data offset, sector size and IV tweak.
pub fn convert_to_wrapped(
    vol: &mut Volume,
    cipher: &str,
    blob: &SecretBytes,
    slots: &[SlotPass<'_>],
    tokens: &[Value],
    drop_others: bool,
) -> Result<Converted, RewrapError> {
    vol.check_requirements()?;
    let h = vol.luks2_header()?.clone();
    let (seg, found, did) = segment_digest(&h)?;
    if found != CONVERTIBLE {
        return Err(RewrapError::WrongCipher {
            found,
            want: CONVERTIBLE,
        });
    }
    if slots.is_empty() {
        return Err(RewrapError::Param("no keyslot to convert".into()));
    }
    for s in slots {
        if h.meta.digest_of_keyslot(s.unlocked.keyslot) != Some(did)
            || !Volume::luks2_check_key(&h, did, &s.unlocked.key)?
        {
            return Err(RewrapError::NotVolumeKey(s.unlocked.keyslot));
        }
        if s.unlocked.key.len() != 64 {
            return Err(RewrapError::Param(format!(
                "key size {} bits: only AES-256-XTS (512-bit) volumes convert to waes-xts-plain64",
                s.unlocked.key.len() * 8
            )));
        }
    }
    let old = h.meta.digests[&did].clone();
    let given: Vec<u32> = slots.iter().map(|s| s.unlocked.keyslot).collect();
    let others: Vec<u32> = old
        .keyslots
        .iter()
        .copied()
        .filter(|k| !given.contains(k))
        .collect();
    if !others.is_empty() && !drop_others {
        return Err(RewrapError::UnstagedKeyslots(others));
    }
    let mut new = h.clone();
    let mut wipe = vec![];
    for k in &old.keyslots {
        let ks = new.meta.keyslots.remove(k).expect("digest keyslot exists");
        wipe.push((ks.area.offset, ks.area.size));
    }
    let (area_cipher, area_key) = area_cipher_for(cipher, blob.len());
    let sealed = seal_all(
        &h,
        &mut new,
        blob,
        slots,
        &given,
        SealHow {
            area: Some((&area_cipher, area_key)),
            pbkdf: None,
            progress: &mut |_, _| {},
        },
    )?;
    new.meta.digests.insert(
        did,
        digest_like(&old, blob, sealed.ids.clone(), old.segments.clone())?,
    );
    new.meta
        .segments
        .get_mut(&seg)
        .expect("crypt segment")
        .encryption = Some(cipher.to_string());
    for t in new.meta.tokens.values_mut() {
        t.keyslots.retain(|k| !others.contains(k));
    }
    for v in tokens {
        let id = free_token_id(&new)?;
        new.meta
            .tokens
            .insert(id, Token::from_json(id, v).map_err(VolumeError::from)?);
    }
    new.validate(!vol.detached).map_err(VolumeError::from)?;
    // New keyslot material goes to free space (the old areas stay intact),
    // then one header write switches; old areas are wiped last.
    for (off, material) in &sealed.areas {
        vol.write_area(*off, material)?;
    }
    vol.luks2_write(new)?;
    for (off, size) in wipe {
        vol.wipe_area(off, size)?;
    }
    Ok(Converted {
        keyslots: sealed.ids,
        removed: others,
    })
}
