//! `validate`: what state a waes volume's wrapped key is in, whether its
//! provider computes the stored verification pattern, and whether a
//! staged re-encipher is pending.

use wrapcrypt_provider::Wkb;
use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::rewrap::{self, ReencipherToken};
use wrapcrypt_volume::Volume;

use crate::error::OpsError;
use crate::keyholders::{provider_of, require_waes, segment_cipher, wkb_of};
use crate::wrapped::ProviderChoice;

/// What validate found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The segment cipher.
    pub cipher: String,
    /// The provider's name.
    pub provider: String,
    /// Where the effective key lives.
    pub protection: String,
    /// The wrapping key's identity.
    pub wrapping_key: String,
    /// The master-key register holding it (custodian).
    pub register: Option<String>,
    /// The key's state (current / old / …).
    pub state: String,
    /// Whether the provider can use the key.
    pub usable: bool,
    /// The verification pattern the provider computes now.
    pub vp_now: Option<String>,
    /// The stored verification pattern.
    pub vp_stored: Option<String>,
    /// The keyslot the passphrase opened.
    pub keyslot: u32,
    /// A staged re-encipher, and its new key's state when this passphrase
    /// opens its copy.
    pub staged: Option<(ReencipherToken, Option<String>)>,
}

impl Report {
    /// Whether the patterns match (`None`: one of them is not known).
    pub fn matches(&self) -> Option<bool> {
        match (&self.vp_now, &self.vp_stored) {
            (Some(n), Some(s)) => Some(n.eq_ignore_ascii_case(s)),
            _ => None,
        }
    }
}

/// Runs `validate` on a volume opened for reading.
pub fn validate(
    vol: &Volume,
    device: &str,
    key_slot: Option<u32>,
    choice: ProviderChoice,
    prompter: &mut dyn Prompter,
) -> Result<Report, OpsError> {
    let h = vol.luks2_header()?.clone();
    require_waes(&h)?;
    let p = prompter.passphrase(&format!("Enter passphrase for {device}: "))?;
    let u = vol.unlock(p.expose_secret(), key_slot, true)?;
    let wkb = wkb_of(&u.key)?;
    let prov = provider_of(&h, &wkb, choice)?;
    let status = prov.validate(&wkb)?;
    let usable = status.state.is_usable();
    let vp_now = if usable {
        Some(prov.verification_pattern(&wkb)?)
    } else {
        None
    };
    let staged = match ReencipherToken::find(&h)? {
        None => None,
        Some(t) => {
            let state = t.unbound_keyslots().into_iter().find_map(|k| {
                let s = vol.unlock(p.expose_secret(), Some(k), false).ok()?;
                let w = Wkb::parse(s.key.expose_secret()).ok()?;
                let st = prov.validate(&w).ok()?;
                Some(format!(
                    "{}{}",
                    st.state,
                    st.register.map(|r| format!(" ({r})")).unwrap_or_default()
                ))
            });
            Some((t, state))
        }
    };
    Ok(Report {
        cipher: segment_cipher(&h),
        provider: prov.name().to_string(),
        protection: status.protection.to_string(),
        wrapping_key: status.wrapping_key.clone(),
        register: status.register.map(|r| r.to_string()),
        state: status.state.to_string(),
        usable,
        vp_now,
        vp_stored: rewrap::stored_vp(&h),
        keyslot: u.keyslot,
        staged,
    })
}
