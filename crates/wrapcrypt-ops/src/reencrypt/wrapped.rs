//! Reencryption onto (and from) wrapped keys: the new key is generated
//! inside its provider and only its blob reaches this process; the data
//! moves through the provider's cipher session (for the custodian: its
//! shared-memory data path), so the new effective key never exists here.
//!
//! While the reencryption runs, the new key's `waes-provider` and
//! `waes-verification-pattern` tokens are bound to its keyslot and the old
//! key's (if it is wrapped too) stay unbound; the final header keeps only
//! the new ones, unbound (docs/reencrypt.md, "Wrapped keys").

use std::sync::Arc;

use serde_json::Value;
use wrapcrypt_format::luks2::{Luks2Header, Segment};
use wrapcrypt_provider::{KeyProvider, KeySpec, Wkb};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::SectorCipher;
use wrapcrypt_volume::reencrypt::{Side, WrappedCiphers};

use crate::error::OpsError;
use crate::providers::{self, PAES_VP_TOKEN, PROVIDER_TOKEN, VP_TOKEN};
use crate::wrapped::{MadeKey, ProviderChoice};

/// A key made in a provider for the new layout: its blob, the tokens that
/// go with it, and the guard that discards it if the init fails.
pub struct NewWrappedKey {
    /// The blob, the new LUKS2 volume key.
    pub blob: SecretBytes,
    /// Tokens of the new key (provider, verification pattern).
    pub tokens: Vec<Value>,
    made: MadeKey,
}

impl NewWrappedKey {
    /// The header now records the key: it stays in its provider.
    pub fn keep(self) {
        self.made.keep();
    }
}

/// Generates the new key of a reencryption to `cipher` (waes only) in the
/// provider `--key-provider` names, else the one the volume records, else
/// the custodian.
pub fn generate(
    h: &Luks2Header,
    cipher: &str,
    choice: ProviderChoice,
    key_bits: Option<usize>,
) -> Result<NewWrappedKey, OpsError> {
    if cipher != "waes-xts-plain64" {
        return Err(OpsError::usage(format!(
            "Cipher {cipher} is not supported as a reencryption target; use waes-xts-plain64 (paes keys come from IBM hardware)."
        )));
    }
    let (prov, name, locator): (Arc<dyn KeyProvider>, String, Option<String>) =
        match (choice.key_provider, providers::recorded(h)) {
            (None, Some((name, loc))) => (
                providers::by_name(&name, loc.as_deref(), choice.pin)?,
                name,
                loc,
            ),
            (opt, _) => providers::from_option(opt, choice.pin)?,
        };
    let wkb = prov.generate(&KeySpec::aes_256_xts())?;
    let made = MadeKey::new(&prov, &wkb);
    let blob = wkb.encode();
    if let Some(bits) = key_bits {
        if bits != 512 && bits != blob.len() * 8 {
            return Err(OpsError::usage(format!(
                "Key size {bits} does not apply: waes-xts-plain64 uses AES-256-XTS (512 bits) inside the provider."
            )));
        }
    }
    let vp = prov.verification_pattern(&wkb)?;
    let mut tokens = providers::tokens(&name, locator.as_deref(), &vp)?;
    providers::note_wrapping_key(&mut tokens, &wkb);
    Ok(NewWrappedKey {
        blob: SecretBytes::copy_from(&blob),
        tokens: tokens.iter().map(|t| t.to_json()).collect(),
        made,
    })
}

fn is_key_token(kind: &str) -> bool {
    kind == PROVIDER_TOKEN || kind == VP_TOKEN || kind == PAES_VP_TOKEN
}

/// The providers of both layouts of a reencryption, found from the
/// tokens of the header it started with.
pub struct Providers<'a> {
    header: Luks2Header,
    choice: ProviderChoice<'a>,
}

impl<'a> Providers<'a> {
    /// Providers as `h` records them; `choice` supplies the PIN and a
    /// `pkcs11:` URI where a token has none.
    pub fn new(h: &Luks2Header, choice: ProviderChoice<'a>) -> Self {
        Providers {
            header: h.clone(),
            choice,
        }
    }

    /// The member `field` of the `kind` token of one side: the new key's
    /// tokens are bound to its keyslots, the old key's are unbound.
    pub(crate) fn token_field(&self, side: Side, kind: &str, field: &str) -> Option<String> {
        let m = &self.header.meta;
        let info = m.reencrypt_state().ok().flatten()?;
        let new_slots: Vec<u32> = info
            .new_digest
            .and_then(|d| m.digests.get(&d))
            .map(|d| d.keyslots.clone())
            .unwrap_or_default();
        let bound =
            |t: &&wrapcrypt_format::luks2::Token| t.keyslots.iter().any(|k| new_slots.contains(k));
        let of_kind: Vec<_> = m.tokens.values().filter(|t| t.kind == kind).collect();
        let pick = match side {
            Side::New => of_kind
                .iter()
                .find(|t| bound(t))
                .or_else(|| of_kind.iter().find(|t| t.keyslots.is_empty())),
            Side::Old => of_kind.iter().find(|t| t.keyslots.is_empty()),
        };
        pick.and_then(|t| t.json.get(field))
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

impl WrappedCiphers for Providers<'_> {
    fn open(
        &self,
        side: Side,
        segment: &Segment,
        blob: &SecretBytes,
    ) -> Result<Arc<dyn SectorCipher>, String> {
        let wkb = Wkb::parse(blob.expose_secret())
            .map_err(|e| format!("stored wrapped key is invalid: {e}"))?;
        let name = self
            .token_field(side, PROVIDER_TOKEN, "provider")
            .unwrap_or_else(|| wkb.provider().to_string());
        let locator = self.token_field(side, PROVIDER_TOKEN, "uri").or_else(|| {
            self.choice
                .key_provider
                .filter(|k| k.starts_with("pkcs11:"))
                .map(str::to_string)
        });
        let prov = providers::by_name(&name, locator.as_deref(), self.choice.pin)
            .map_err(|e| e.to_string())?;
        if wkb.provider() != prov.name() {
            return Err(format!(
                "wrapped key belongs to provider {}, but the volume names {name}",
                wkb.provider()
            ));
        }
        if let Some(stored) = self.token_field(side, VP_TOKEN, "verification-pattern") {
            let vp = prov.verification_pattern(&wkb).map_err(|e| e.to_string())?;
            if !vp.eq_ignore_ascii_case(&stored) {
                return Err("verification pattern mismatch: the provider's key is not the key this reencryption was started with".into());
            }
        }
        prov.open_cipher(&wkb, segment.sector_size as usize)
            .map_err(|e| e.to_string())
    }

    fn finalize(&self, h: &mut Luks2Header) {
        let m = &mut h.meta;
        let wrapped = m
            .segments
            .values()
            .next()
            .and_then(|s| s.encryption.as_deref())
            .is_some_and(|c| c.starts_with("waes-") || c.starts_with("paes-"));
        let live: Vec<u32> = m
            .digest_of_segment(0)
            .and_then(|d| m.digests.get(&d))
            .map(|d| d.keyslots.clone())
            .unwrap_or_default();
        let has_bound = m
            .tokens
            .values()
            .any(|t| is_key_token(&t.kind) && t.keyslots.iter().any(|k| live.contains(k)));
        m.tokens.retain(|_, t| {
            if !is_key_token(&t.kind) {
                return true;
            }
            if !wrapped {
                return false;
            }
            !has_bound || !t.keyslots.is_empty()
        });
        for t in m.tokens.values_mut().filter(|t| is_key_token(&t.kind)) {
            t.keyslots.clear();
        }
    }
}
