//! The unlock policy of `open` and `open --test-passphrase`: which tokens
//! are tried, in which order, and when the passphrase is asked for.
//!
//! As cryptsetup does with token plugins: tokens are tried first (all of
//! them with `--token-only`, `--token-id` or `--token-type`; otherwise when
//! no key file is given and the header has a token a handler serves). With
//! `--token-only` the passphrase is never asked; otherwise a failed token
//! falls back to it. Tokens that need a PIN ask for it only with
//! `--token-only`; otherwise only a PIN given up front is used.

use wrapcrypt_format::luks2::Luks2Header;
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_volume::{Unlocked, Volume, VolumeError};

use crate::error::{TokenError, UnlockError};
use crate::handler::ReleaseContext;
use crate::prompt::Prompter;
use crate::registry::Registry;

/// What the caller asked for.
#[derive(Default, Clone)]
pub struct UnlockRequest<'a> {
    /// `--token-id`.
    pub token_id: Option<u32>,
    /// `--token-type`.
    pub token_type: Option<&'a str>,
    /// `--token-only`: never ask for a passphrase.
    pub token_only: bool,
    /// `--key-slot`.
    pub key_slot: Option<u32>,
    /// A key file is given: tokens are not tried unless asked for.
    pub has_key_file: bool,
    /// Only keyslots bound to the segment count.
    pub need_bound: bool,
    /// `--pin-file`, already read.
    pub pin: Option<&'a SecretBytes>,
    /// `--tpm2-device`.
    pub tpm2_device: Option<&'a str>,
    /// The passphrase prompt.
    pub prompt: &'a str,
    /// `--verbose`: say which token opened which keyslot.
    pub verbose: bool,
}

/// One token to try: its id, the keyslots it may open.
struct Candidate {
    id: u32,
    kind: String,
    keyslots: Vec<u32>,
}

fn candidates(
    reg: &Registry,
    req: &UnlockRequest,
    h: &Luks2Header,
) -> (Vec<Candidate>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (&id, t) in &h.meta.tokens {
        if req.token_id.is_some_and(|w| w != id) || req.token_type.is_some_and(|w| w != t.kind) {
            continue;
        }
        match reg.get(&t.kind).map(|hd| hd.check(t)) {
            Some(Ok(())) => {
                let keyslots: Vec<u32> = t
                    .keyslots
                    .iter()
                    .copied()
                    .filter(|k| req.key_slot.is_none_or(|w| w == *k))
                    .collect();
                if !keyslots.is_empty() {
                    out.push(Candidate {
                        id,
                        kind: t.kind.clone(),
                        keyslots,
                    });
                }
            }
            None if req.token_id == Some(id) => problems.push(format!(
                "Token {id} of type {} cannot unlock keyslots.",
                t.kind
            )),
            None => {}
            Some(Err(e)) => problems.push(format!("Token {id} ({}): {e}", t.kind)),
        }
    }
    (out, problems)
}

fn try_token(
    reg: &Registry,
    req: &UnlockRequest,
    vol: &Volume,
    h: &Luks2Header,
    c: &Candidate,
    prompter: &mut dyn Prompter,
) -> Result<Unlocked, TokenError> {
    let token = &h.meta.tokens[&c.id];
    let handler = reg
        .get(&c.kind)
        .ok_or_else(|| TokenError::Json(format!("no handler for {}", c.kind)))?;
    let mut ctx = ReleaseContext {
        pin: req.pin,
        interactive: req.token_only,
        tpm2_device: req.tpm2_device,
        prompter,
    };
    let p = handler.release(token, &mut ctx)?;
    for &slot in &c.keyslots {
        match vol.unlock(p.expose_secret(), Some(slot), req.need_bound) {
            Ok(u) => return Ok(u),
            Err(VolumeError::NoMatchingKeyslot)
            | Err(VolumeError::NoUsableKeyslot)
            | Err(VolumeError::KeyslotInactive(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(TokenError::Keyslot(c.keyslots[0]))
}

/// Unlocks `vol` as `open` does: tokens, then the passphrase (see the
/// module documentation for the order).
pub fn unlock(
    vol: &Volume,
    req: &UnlockRequest,
    reg: &Registry,
    prompter: &mut dyn Prompter,
) -> Result<Unlocked, UnlockError> {
    let explicit = req.token_only || req.token_id.is_some() || req.token_type.is_some();
    // LUKS1 headers have no tokens.
    let h = vol.luks2_header().ok();
    let servable = |h: &Luks2Header| h.meta.tokens.values().any(|t| reg.handles(&t.kind));
    let try_tokens = explicit || (!req.has_key_file && h.is_some_and(servable));
    if try_tokens {
        let Some(h) = h else {
            return Err(UnlockError::NoTokensOnLuks1);
        };
        let (cands, problems) = candidates(reg, req, h);
        let mut last: Option<(u32, TokenError)> = None;
        for c in &cands {
            log::debug!(
                "Checking volume passphrase using token {} ({}).",
                c.id,
                c.kind
            );
            match try_token(reg, req, vol, h, c, prompter) {
                Ok(u) => {
                    if req.verbose {
                        prompter.info(&format!("Token {} unlocked keyslot {}.", c.id, u.keyslot));
                    }
                    log::info!("Key slot {} unlocked.", u.keyslot);
                    return Ok(u);
                }
                Err(e) => {
                    if !req.token_only {
                        prompter.warn(&format!("Token {} ({}) failed: {e}", c.id, c.kind));
                    }
                    last = Some((c.id, e));
                }
            }
        }
        if req.token_only {
            for p in &problems {
                prompter.warn(p);
            }
            return Err(match last {
                Some((id, source)) => UnlockError::TokenFailed { id, source },
                None => UnlockError::NoUsableToken,
            });
        }
    }
    if h.is_some() {
        // LUKS1 has no tokens; cryptsetup says nothing about them there.
        log::info!("No usable token is available.");
    }
    log::debug!(
        "Checking volume passphrase [keyslot {}] using passphrase.",
        req.key_slot.map_or(-1, i64::from)
    );
    let p = prompter.passphrase(req.prompt)?;
    let u = vol.unlock(p.expose_secret(), req.key_slot, req.need_bound)?;
    log::info!("Key slot {} unlocked.", u.keyslot);
    Ok(u)
}
