//! `tokens` section: opaque objects for external unlock methods. Every
//! member, known type or not, survives a rewrite unchanged.

use serde_json::{Map, Value};

use super::error::{Section, ValidateError};
use super::jsonutil::{ids, Obj};
use super::keyslot::KEYSLOTS_MAX;

/// Maximum token id + 1.
pub const TOKENS_MAX: u32 = 32;

/// One token object.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Token type, e.g. "luks2-keyring", "systemd-tpm2", "waes-verification-pattern".
    pub kind: String,
    /// Keyslots the token is assigned to.
    pub keyslots: Vec<u32>,
    /// The whole object as read (or imported), member order kept, so a
    /// token is exported exactly as it was imported.
    pub json: Map<String, Value>,
}

impl Token {
    /// Decodes a token object (also used by `token import`).
    pub fn from_json(id: u32, v: &Value) -> Result<Token, ValidateError> {
        let o = Obj::of(Section::Tokens, Some(id), v, "token")?;
        Ok(Token {
            kind: o.req_str("type")?.to_string(),
            keyslots: o.req_ids("keyslots", Section::Keyslots, KEYSLOTS_MAX)?,
            json: o.map.clone(),
        })
    }

    /// Encodes the token object.
    pub fn to_json(&self) -> Value {
        let mut m = self.json.clone();
        m.insert("type".into(), self.kind.clone().into());
        m.insert("keyslots".into(), ids(&self.keyslots));
        Value::Object(m)
    }
}
