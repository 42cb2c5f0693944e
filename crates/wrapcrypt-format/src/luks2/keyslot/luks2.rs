//! The `luks2` keyslot type: a passphrase-protected, AF-split volume key.

use super::{AfParams, Keyslot, KeyslotHandler, KeyslotKdf};
use crate::luks2::error::{Section, ValidateError};
use crate::luks2::jsonutil::{invalid, Obj};

/// Typed view of a `luks2` keyslot.
#[derive(Debug, Clone, PartialEq)]
pub struct Luks2Keyslot {
    /// Size of the stored key in bytes.
    pub key_size: u32,
    /// Key derivation function.
    pub kdf: KeyslotKdf,
    /// Anti-forensic splitter parameters.
    pub af: AfParams,
    /// Cipher of the keyslot area.
    pub cipher: String,
    /// Key size of the area cipher in bytes.
    pub cipher_key_size: u32,
}

impl KeyslotHandler for Luks2Keyslot {
    const TYPE: &'static str = "luks2";
    const MEMBERS: &'static [&'static str] = &["kdf", "af"];

    fn from_keyslot(id: u32, ks: &Keyslot) -> Result<Self, ValidateError> {
        let missing = |field| ValidateError::Missing {
            section: Section::Keyslots,
            id: Some(id),
            field,
        };
        if ks.area.kind != "raw" {
            return Err(invalid(
                Section::Keyslots,
                Some(id),
                "type",
                "a luks2 keyslot area must be of type \"raw\"",
            ));
        }
        Ok(Luks2Keyslot {
            key_size: ks.key_size,
            kdf: ks.kdf.clone().ok_or_else(|| missing("kdf"))?,
            af: ks.af.clone().ok_or_else(|| missing("af"))?,
            cipher: ks
                .area
                .encryption
                .clone()
                .ok_or_else(|| missing("encryption"))?,
            cipher_key_size: ks.area.key_size.ok_or_else(|| missing("key_size"))?,
        })
    }
}

/// Decodes the `kdf` and `af` members of a `luks2` keyslot object.
pub(super) fn decode(o: &Obj<'_>) -> Result<(KeyslotKdf, AfParams), ValidateError> {
    let k = Obj::of(o.section, o.id, o.req("kdf")?, "kdf")?;
    let salt = k.req_b64("salt")?;
    let kdf = match k.req_str("type")? {
        "pbkdf2" => KeyslotKdf::Pbkdf2 {
            hash: k.req_str("hash")?.to_string(),
            iterations: k.req_u32("iterations")?,
            salt,
        },
        t @ ("argon2i" | "argon2id") => KeyslotKdf::Argon2 {
            id: t == "argon2id",
            time: k.req_u32("time")?,
            memory: k.req_u32("memory")?,
            cpus: k.req_u32("cpus")?,
            salt,
        },
        other => return Err(k.err("type", &format!("unknown KDF \"{other}\""))),
    };
    let f = Obj::of(o.section, o.id, o.req("af")?, "af")?;
    if f.req_str("type")? != "luks1" {
        return Err(f.err("af", "unknown AF type"));
    }
    let af = AfParams {
        stripes: f.req_u32("stripes")?,
        hash: f.req_str("hash")?.to_string(),
    };
    Ok((kdf, af))
}
