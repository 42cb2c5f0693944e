//! What the wrapped-key workflows share: the blob of an unlocked volume,
//! its provider, and the passphrases of every keyslot bound to its key.

use std::sync::Arc;

use wrapcrypt_format::luks2::Luks2Header;
use wrapcrypt_provider::{KeyProvider, Wkb};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::rewrap::{self, SlotPass};
use wrapcrypt_volume::{Unlocked, Volume};

use crate::error::OpsError;
use crate::providers;
use crate::wrapped::ProviderChoice;

/// The blob an unlocked keyslot holds.
pub fn wkb_of(blob: &SecretBytes) -> Result<Wkb, OpsError> {
    Wkb::parse(blob.expose_secret())
        .map_err(|e| OpsError::usage(format!("Stored wrapped key is invalid: {e}")))
}

/// The provider of a wrapped volume (no VP check: setvp and validate
/// compare themselves).
pub fn provider_of(
    h: &Luks2Header,
    wkb: &Wkb,
    choice: ProviderChoice,
) -> Result<Arc<dyn KeyProvider>, OpsError> {
    let (name, locator) = providers::recorded_or(h, wkb.provider(), choice.key_provider);
    let pin = if name == "pkcs11" { choice.pin } else { None };
    let prov = providers::by_name(&name, locator.as_deref(), pin)?;
    if wkb.provider() != prov.name() {
        return Err(OpsError::usage(format!(
            "Wrapped key belongs to provider {}, but the volume names {name}.",
            wkb.provider()
        )));
    }
    Ok(prov)
}

/// The segment's cipher.
pub fn segment_cipher(h: &Luks2Header) -> String {
    h.meta
        .crypt_segment_id()
        .and_then(|s| h.meta.segments[&s].encryption.clone())
        .unwrap_or_default()
}

/// Refuses anything but a waes volume, saying what to do instead.
pub fn require_waes(h: &Luks2Header) -> Result<(), OpsError> {
    let c = segment_cipher(h);
    if c.starts_with("waes-") {
        Ok(())
    } else if c.starts_with("paes-") {
        Err(OpsError::usage(format!(
            "Cipher {c}: IBM secure keys are re-enciphered by the CCA/EP11 coprocessor (zkey-cryptsetup); wrapcrypt manages only their header."
        )))
    } else {
        Err(OpsError::usage(format!(
            "Cipher {c} is not a wrapped-key cipher (convert it with wrapcrypt convert --cipher waes-xts-plain64)."
        )))
    }
}

/// The stored verification pattern, or what to do without one.
pub fn stored_vp_of(h: &Luks2Header) -> Result<String, OpsError> {
    rewrap::stored_vp(h).ok_or_else(|| {
        OpsError::usage(
            "The volume has no waes-verification-pattern token; run wrapcrypt setvp first.",
        )
    })
}

/// Keyslots unlocked with their passphrases, and bound keyslots of the
/// same key whose passphrase was not given.
pub struct Unlocks {
    /// Each unlocked keyslot with the passphrase that opened it.
    pub slots: Vec<(Unlocked, SecretBytes)>,
    /// Bound keyslots left out.
    pub skipped: Vec<u32>,
}

impl Unlocks {
    /// The keyslots and passphrases, as the re-wrap state machine takes them.
    pub fn passes(&self) -> Vec<SlotPass<'_>> {
        self.slots
            .iter()
            .map(|(u, p)| SlotPass {
                unlocked: u,
                passphrase: p.expose_secret(),
            })
            .collect()
    }

    /// The volume key (the blob).
    pub fn key(&self) -> &SecretBytes {
        &self.slots[0].0.key
    }
}

/// Unlocks with the given passphrase, then asks for the passphrase of
/// every other keyslot bound to the volume key (one line each; an empty
/// line or end of input leaves that keyslot out).
pub fn unlock_all(
    vol: &Volume,
    device: &str,
    key_slot: Option<u32>,
    prompter: &mut dyn Prompter,
) -> Result<Unlocks, OpsError> {
    let p = prompter.passphrase(&format!("Enter passphrase for {device}: "))?;
    let first = vol.unlock(p.expose_secret(), key_slot, true)?;
    let h = vol.luks2_header()?;
    let did = h
        .meta
        .digest_of_keyslot(first.keyslot)
        .expect("unlocked keyslot has a digest");
    let others: Vec<u32> = h.meta.digests[&did]
        .keyslots
        .iter()
        .copied()
        .filter(|&k| k != first.keyslot)
        .collect();
    let mut out = Unlocks {
        slots: vec![(first, p)],
        skipped: vec![],
    };
    for k in others {
        let line = prompter.line(&format!(
            "Enter passphrase for key slot {k} (empty line: leave it out): "
        ));
        match line {
            Ok(p) if !p.is_empty() => {
                let u = vol.unlock(p.expose_secret(), Some(k), true)?;
                out.slots.push((u, p));
            }
            _ => out.skipped.push(k),
        }
    }
    Ok(out)
}

/// Asks before keyslots whose passphrase was not given are removed;
/// whether any will be.
pub fn confirm_drop(
    prompter: &mut dyn Prompter,
    skipped: &[u32],
    when: &str,
) -> Result<bool, OpsError> {
    if skipped.is_empty() {
        return Ok(false);
    }
    prompter.confirm(&format!(
        "\nWARNING!\n========\nKeyslot(s) {skipped:?} hold the volume key but their passphrases were not given;\nthey will be removed {when}. Re-add passphrases afterwards with luksAddKey.\n"
    ))?;
    Ok(true)
}
