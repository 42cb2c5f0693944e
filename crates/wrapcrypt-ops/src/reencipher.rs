//! `reencipher`: re-wraps a waes volume's key under another master key
//! without re-encrypting data, staged (new blob in unbound keyslots, made
//! current by `--complete` after the master-key change) or in place. The
//! on-disk state machine is `wrapcrypt_volume::rewrap`; docs/reencipher.md
//! has the procedure and the write sequences.

use wrapcrypt_provider::{KeyState, RewrapDirection};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::rewrap::{self, CompleteOptions, OnDisk, RewrapError, Staged};
use wrapcrypt_volume::{PbkdfOptions, Volume};

use crate::error::OpsError;
use crate::keyholders::{confirm_drop, require_waes, stored_vp_of, unlock_all, wkb_of};
use crate::progress::Progress;
use crate::providers;
use crate::wrapped::{self, ProviderChoice};

/// `--staged`, `--in-place` or `--complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReencipherMode {
    /// New blob into unbound keyslots; completed later.
    Staged,
    /// Stage and complete at once.
    InPlace,
    /// Complete a staged re-encipher.
    Complete,
}

/// What `reencipher` is asked to do.
pub struct ReencipherOptions<'a> {
    /// The device as named (for prompts).
    pub device: &'a str,
    /// The mode; `None`: complete a staged one, else stage (`--to-new`) or
    /// re-wrap in place (`--from-old`).
    pub mode: Option<ReencipherMode>,
    /// `--to-new` / `--from-old`; `None`: from the key's register.
    pub direction: Option<RewrapDirection>,
    /// `--force`: discard an earlier staged re-encipher.
    pub force: bool,
    /// `--key-slot` of the first passphrase.
    pub key_slot: Option<u32>,
    /// The PBKDF of the new keyslots, if the user chose one.
    pub pbkdf: Option<PbkdfOptions>,
    /// The provider options.
    pub provider: ProviderChoice<'a>,
}

/// What `reencipher` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reenciphered {
    /// Staged: (original keyslot, unbound keyslot) pairs.
    Staged {
        /// The re-wrap direction.
        direction: RewrapDirection,
        /// Each original keyslot and the unbound one holding its new blob.
        pairs: Vec<(u32, u32)>,
    },
    /// Re-wrapped in place.
    InPlace {
        /// The re-wrap direction.
        direction: RewrapDirection,
        /// Keyslots holding the re-wrapped key.
        keyslots: Vec<u32>,
        /// Keyslots removed.
        removed: Vec<u32>,
    },
    /// A staged re-encipher completed.
    Completed {
        /// Keyslots holding the volume key.
        keyslots: Vec<u32>,
        /// Keyslots removed.
        removed: Vec<u32>,
    },
}

/// The register move a direction means.
pub fn direction_name(d: RewrapDirection) -> &'static str {
    match d {
        RewrapDirection::ToNew => "CURRENT -> NEW",
        RewrapDirection::FromOld => "OLD -> CURRENT",
    }
}

/// Runs `reencipher` on a volume opened for writing.
pub fn reencipher(
    vol: Volume,
    opts: &ReencipherOptions,
    prompter: &mut dyn Prompter,
) -> Result<Reenciphered, OpsError> {
    reencipher_with_progress(vol, opts, prompter, &mut crate::progress::Silent)
}

/// [`reencipher`], reporting the keyslots sealed under the re-wrapped key
/// (one PBKDF each) as `progress.update(sealed, keyslots)`.
pub fn reencipher_with_progress(
    vol: Volume,
    opts: &ReencipherOptions,
    prompter: &mut dyn Prompter,
    progress: &mut dyn Progress,
) -> Result<Reenciphered, OpsError> {
    require_waes(vol.luks2_header()?)?;
    let complete_asked = opts.mode == Some(ReencipherMode::Complete);
    let vol = match rewrap::recover(vol)? {
        OnDisk::Staged(st) => {
            if complete_asked || opts.mode.is_none() {
                return complete(opts, st, prompter);
            }
            if !opts.force {
                let t = st.token();
                return Err(RewrapError::AlreadyStaged {
                    original: t.original,
                    unbound: t.unbound,
                }
                .into());
            }
            prompter.warn("Discarding the earlier staged re-encipher (--force).");
            st.cancel()?
        }
        OnDisk::Idle(vol) => {
            if complete_asked {
                return Err(RewrapError::NotStaged.into());
            }
            vol
        }
    };
    let h = vol.luks2_header()?.clone();
    let stored = stored_vp_of(&h)?;
    let un = unlock_all(&vol, opts.device, opts.key_slot, prompter)?;
    let old = wkb_of(un.key())?;
    let prov = wrapped::resolve(&h, un.key(), opts.provider)?.provider;
    let dir = match opts.direction {
        Some(d) => d,
        None => match prov.validate(&old)?.state {
            KeyState::Old => RewrapDirection::FromOld,
            _ => RewrapDirection::ToNew,
        },
    };
    let in_place = match opts.mode {
        Some(ReencipherMode::InPlace) => true,
        Some(ReencipherMode::Staged) => false,
        _ => dir == RewrapDirection::FromOld,
    };
    if in_place && dir == RewrapDirection::ToNew {
        return Err(OpsError::usage(
            "An in-place re-encipher --to-new would make the volume depend on the NEW register, which a later load-new-master-key replaces; use --staged (then --complete after set-master-key).",
        ));
    }
    let new = prov.rewrap(&old, dir)?;
    let new_vp = prov.verification_pattern(&new)?;
    if !new_vp.eq_ignore_ascii_case(&stored) {
        return Err(RewrapError::VpMismatch {
            expected: stored,
            got: new_vp,
        }
        .into());
    }
    let when = if in_place { "now" } else { "at --complete" };
    let drop = confirm_drop(prompter, &un.skipped, when)?;
    let blob = SecretBytes::copy_from(&new.encode());
    let mut hook = crate::progress::as_fn(progress);
    let passes = un.passes();
    let staged =
        Staged::stage_with_progress(vol, &blob, &new_vp, &passes, opts.pbkdf.as_ref(), &mut hook)?;
    if !in_place {
        return Ok(Reenciphered::Staged {
            direction: dir,
            pairs: staged.token().pairs(),
        });
    }
    let done = staged.complete_with_blob(
        &blob,
        prov.as_ref(),
        CompleteOptions {
            replace_vp: false,
            drop_unstaged: drop,
        },
    )?;
    Ok(Reenciphered::InPlace {
        direction: dir,
        keyslots: done.keyslots,
        removed: done.removed,
    })
}

fn complete(
    opts: &ReencipherOptions,
    st: Staged,
    prompter: &mut dyn Prompter,
) -> Result<Reenciphered, OpsError> {
    let h = st.volume().luks2_header()?.clone();
    let (name, locator) = providers::recorded_or(&h, "custodian", opts.provider.key_provider);
    let pin = if name == "pkcs11" {
        opts.provider.pin
    } else {
        None
    };
    let prov = providers::by_name(&name, locator.as_deref(), pin)?;
    let unstaged = st.unstaged()?;
    let p = prompter.passphrase(&format!("Enter passphrase for {}: ", opts.device))?;
    let drop = confirm_drop(prompter, &unstaged, "now")?;
    let done = st.complete(
        p.expose_secret(),
        prov.as_ref(),
        CompleteOptions {
            replace_vp: false,
            drop_unstaged: drop,
        },
    )?;
    Ok(Reenciphered::Completed {
        keyslots: done.keyslots,
        removed: done.removed,
    })
}
