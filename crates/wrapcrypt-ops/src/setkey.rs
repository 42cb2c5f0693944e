//! `setvp` (store the verification pattern the provider computes) and
//! `setkey` (make a given wrapped blob the volume key, only if its pattern
//! matches unless forced), as zkey-cryptsetup has them.

use wrapcrypt_provider::Wkb;
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::rewrap::{self, CompleteOptions, OnDisk, RewrapError, Staged};
use wrapcrypt_volume::{ExitClass, Volume};

use crate::error::OpsError;
use crate::keyholders::{confirm_drop, provider_of, require_waes, unlock_all, wkb_of};
use crate::wrapped::ProviderChoice;

/// What setvp did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VpSet {
    /// The stored pattern already was the key's.
    Unchanged(String),
    /// The pattern was stored (or replaced).
    Set(String),
}

/// Runs `setvp` on a volume opened for writing.
pub fn setvp(
    mut vol: Volume,
    device: &str,
    key_slot: Option<u32>,
    choice: ProviderChoice,
    prompter: &mut dyn Prompter,
) -> Result<VpSet, OpsError> {
    vol.check_requirements()?;
    let mut h = vol.luks2_header()?.clone();
    require_waes(&h)?;
    let p = prompter.passphrase(&format!("Enter passphrase for {device}: "))?;
    let u = vol.unlock(p.expose_secret(), key_slot, true)?;
    let wkb = wkb_of(&u.key)?;
    let prov = provider_of(&h, &wkb, choice)?;
    let vp = prov.verification_pattern(&wkb)?;
    match rewrap::stored_vp(&h) {
        Some(s) if s.eq_ignore_ascii_case(&vp) => return Ok(VpSet::Unchanged(vp)),
        Some(s) => prompter.confirm(&format!("\nWARNING!\n========\nThe stored verification pattern {s} differs from the key's {vp}.\nIt will be replaced.\n"))?,
        None => {}
    }
    rewrap::set_vp_token(&mut h, &vp)?;
    vol.write_luks2(h)?;
    Ok(VpSet::Set(vp))
}

/// What setkey is given.
pub struct SetKeyOptions<'a> {
    /// The device as named (for prompts).
    pub device: &'a str,
    /// The new blob's file name (for messages).
    pub file: &'a str,
    /// `--force`: accept another key (data under the old one is lost) and
    /// discard a staged re-encipher.
    pub force: bool,
    /// `--key-slot` of the first passphrase.
    pub key_slot: Option<u32>,
    /// The provider options.
    pub provider: ProviderChoice<'a>,
}

/// What setkey did: keyslots holding the new blob, keyslots removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    /// Keyslots holding the new wrapped key.
    pub keyslots: Vec<u32>,
    /// Keyslots removed.
    pub removed: Vec<u32>,
}

/// Runs `setkey` with the blob `new` on a volume opened for writing.
pub fn setkey(
    vol: Volume,
    new: &Wkb,
    opts: &SetKeyOptions,
    prompter: &mut dyn Prompter,
) -> Result<KeySet, OpsError> {
    let file = opts.file;
    require_waes(vol.luks2_header()?)?;
    let vol = match rewrap::recover(vol)? {
        OnDisk::Idle(v) => v,
        OnDisk::Staged(st) if opts.force => {
            prompter.warn("Discarding the staged re-encipher (--force).");
            st.cancel()?
        }
        OnDisk::Staged(st) => {
            let t = st.token();
            return Err(RewrapError::AlreadyStaged {
                original: t.original,
                unbound: t.unbound,
            }
            .into());
        }
    };
    let h = vol.luks2_header()?.clone();
    let prov = provider_of(&h, new, opts.provider)?;
    let status = prov.validate(new)?;
    if !status.state.is_usable() {
        return Err(OpsError::usage(format!(
            "The wrapped key in {file} is not usable: {}",
            status.state
        )));
    }
    let new_vp = prov.verification_pattern(new)?;
    let same = rewrap::stored_vp(&h).is_some_and(|s| s.eq_ignore_ascii_case(&new_vp));
    if !same {
        let stored = rewrap::stored_vp(&h).unwrap_or_else(|| "(none)".into());
        if !opts.force {
            return Err(OpsError::refused(
                ExitClass::Permission,
                format!("The key in {file} is not this volume's key: its verification pattern {new_vp} differs from the stored {stored}. Refusing (--force replaces it, and data written under the old key becomes unreadable)."),
            ));
        }
        prompter.confirm(&format!("\nWARNING!\n========\nThe new key's verification pattern {new_vp} differs from the stored {stored}.\nData encrypted under the old key will be unreadable.\n"))?;
    }
    let un = unlock_all(&vol, opts.device, opts.key_slot, prompter)?;
    let drop = confirm_drop(prompter, &un.skipped, "now")?;
    let blob = SecretBytes::copy_from(&new.encode());
    let staged = Staged::stage(vol, &blob, &new_vp, &un.passes(), None)?;
    let done = staged.complete_with_blob(
        &blob,
        prov.as_ref(),
        CompleteOptions {
            replace_vp: !same,
            drop_unstaged: drop,
        },
    )?;
    Ok(KeySet {
        keyslots: done.keyslots,
        removed: done.removed,
    })
}
