//! `token add|import|remove|export`: LUKS2 tokens as JSON, with
//! cryptsetup's checks (free ids, `--token-replace`, keyslot references).

use serde_json::Value;
use wrapcrypt_format::luks2::{Token, TOKENS_MAX};
use wrapcrypt_volume::{Volume, VolumeError};

use crate::error::OpsError;

fn required(id: Option<u32>) -> Result<u32, OpsError> {
    id.ok_or_else(|| OpsError::usage("Option --token-id is required for this action."))
}

/// The JSON of token `id`.
pub fn export(vol: &Volume, id: Option<u32>) -> Result<String, OpsError> {
    let id = required(id)?;
    let h = vol.luks2_header()?;
    let t = h
        .meta
        .tokens
        .get(&id)
        .ok_or_else(|| OpsError::usage(format!("Token {id} is not in use.")))?;
    Ok(serde_json::to_string(&t.to_json()).expect("JSON"))
}

/// Removes token `id`; returns it.
pub fn remove(vol: &mut Volume, id: Option<u32>) -> Result<u32, OpsError> {
    let id = required(id)?;
    vol.check_requirements()?;
    let mut h = vol.luks2_header()?.clone();
    if h.meta.tokens.remove(&id).is_none() {
        return Err(OpsError::usage(format!("Token {id} is not in use.")));
    }
    vol.write_luks2(h)?;
    Ok(id)
}

/// The JSON of a `luks2-keyring` token (`token add --key-description`).
pub fn keyring_token(description: Option<&str>) -> Result<Value, OpsError> {
    let desc = description
        .ok_or_else(|| OpsError::usage("Option --key-description is required for this action."))?;
    Ok(serde_json::json!({"type": "luks2-keyring", "keyslots": [], "key_description": desc}))
}

/// Parses token JSON given by the user (`token import`).
pub fn parse_json(text: &str) -> Result<Value, OpsError> {
    serde_json::from_str(text)
        .map_err(|e| OpsError::usage(format!("Failed to parse token JSON: {e}")))
}

/// Where and how a token goes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Placement {
    /// `--token-id` (default: the first free one).
    pub id: Option<u32>,
    /// `--token-replace`.
    pub replace: bool,
    /// `--key-slot`: the token also names this keyslot.
    pub key_slot: Option<u32>,
}

/// Adds (or with `replace`, replaces) a token; returns its id.
pub fn import(vol: &mut Volume, mut value: Value, at: Placement) -> Result<u32, OpsError> {
    vol.check_requirements()?;
    let mut h = vol.luks2_header()?.clone();
    if let Some(ks) = at.key_slot {
        if !h.meta.keyslots.contains_key(&ks) {
            return Err(VolumeError::KeyslotInactive(ks).into());
        }
        if let Some(arr) = value.get_mut("keyslots").and_then(|k| k.as_array_mut()) {
            let s = Value::String(ks.to_string());
            if !arr.contains(&s) {
                arr.push(s);
            }
        }
    }
    let id = match at.id {
        Some(id) => {
            if h.meta.tokens.contains_key(&id) && !at.replace {
                return Err(OpsError::usage(format!("Token {id} in use.")));
            }
            id
        }
        None => (0..TOKENS_MAX)
            .find(|i| !h.meta.tokens.contains_key(i))
            .ok_or_else(|| OpsError::usage("No free token slot."))?,
    };
    if id >= TOKENS_MAX {
        return Err(OpsError::usage(format!("Token {id} is invalid.")));
    }
    let t =
        Token::from_json(id, &value).map_err(|e| OpsError::usage(format!("Invalid token: {e}")))?;
    h.meta.tokens.insert(id, t);
    vol.write_luks2(h)?;
    Ok(id)
}
