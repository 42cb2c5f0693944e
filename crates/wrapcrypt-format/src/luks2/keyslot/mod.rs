//! `keyslots` section: where each keyslot's encrypted, AF-split key lives.

use serde_json::{Map, Value};

mod luks2;
mod reencrypt;

pub use luks2::Luks2Keyslot;
pub use reencrypt::{ReencryptDirection, ReencryptKeyslot, ReencryptMode, Resilience};

use super::error::{Section, ValidateError};
use super::jsonutil::{u64s, Obj};

/// A keyslot type, looked up by the keyslot's JSON `"type"` (cryptsetup's
/// keyslot handler table): it decodes and validates the members only that
/// type has. Types without a handler are kept as they are, unvalidated, as
/// cryptsetup does.
pub trait KeyslotHandler: Sized {
    /// The JSON `"type"` string.
    const TYPE: &'static str;
    /// Keyslot members decoded into [`Keyslot`]'s own fields for this type;
    /// every other member stays in [`Keyslot::extra`].
    const MEMBERS: &'static [&'static str];
    /// The typed view of keyslot `id`, validated as cryptsetup's handler does.
    fn from_keyslot(id: u32, ks: &Keyslot) -> Result<Self, ValidateError>;
}

/// The handler registry: validates `ks` with the handler of its type.
fn check_by_type(id: u32, ks: &Keyslot) -> Result<(), ValidateError> {
    match ks.kind.as_str() {
        Luks2Keyslot::TYPE => Luks2Keyslot::from_keyslot(id, ks).map(drop),
        ReencryptKeyslot::TYPE => ReencryptKeyslot::from_keyslot(id, ks).map(drop),
        _ => Ok(()),
    }
}

/// Maximum number of LUKS2 keyslots.
pub const KEYSLOTS_MAX: u32 = 32;

/// A keyslot's binary area.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyslotArea {
    /// Area type: "raw" for luks2 keyslots; reencrypt keyslots use others.
    pub kind: String,
    /// Byte offset from the device start.
    pub offset: u64,
    /// Byte size.
    pub size: u64,
    /// Cipher spec used to encrypt the area ("raw" only).
    pub encryption: Option<String>,
    /// Key size of the area cipher in bytes ("raw" only).
    pub key_size: Option<u32>,
    /// Unknown members, preserved.
    pub extra: Map<String, Value>,
}

/// The key derivation function of a keyslot.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyslotKdf {
    /// PBKDF2 with a hash.
    Pbkdf2 {
        /// hash name
        hash: String,
        /// iteration count
        iterations: u32,
        /// salt bytes
        salt: Vec<u8>,
    },
    /// Argon2i or Argon2id.
    Argon2 {
        /// true for argon2id
        id: bool,
        /// time cost
        time: u32,
        /// memory cost in KiB
        memory: u32,
        /// lanes/threads
        cpus: u32,
        /// salt bytes
        salt: Vec<u8>,
    },
}

impl KeyslotKdf {
    /// The JSON `type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            KeyslotKdf::Pbkdf2 { .. } => "pbkdf2",
            KeyslotKdf::Argon2 { id: false, .. } => "argon2i",
            KeyslotKdf::Argon2 { id: true, .. } => "argon2id",
        }
    }

    /// The salt.
    pub fn salt(&self) -> &[u8] {
        match self {
            KeyslotKdf::Pbkdf2 { salt, .. } | KeyslotKdf::Argon2 { salt, .. } => salt,
        }
    }
}

/// Anti-forensic splitter parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct AfParams {
    /// Number of stripes (4000).
    pub stripes: u32,
    /// Diffusion hash.
    pub hash: String,
}

/// One keyslot object.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyslot {
    /// Keyslot type: "luks2" or "reencrypt".
    pub kind: String,
    /// Size of the key stored in this keyslot, in bytes.
    pub key_size: u32,
    /// The binary area.
    pub area: KeyslotArea,
    /// KDF (luks2 keyslots).
    pub kdf: Option<KeyslotKdf>,
    /// AF parameters (luks2 keyslots).
    pub af: Option<AfParams>,
    /// Priority: 0 ignore, 1 normal, 2 high.
    pub priority: Option<i32>,
    /// Unknown members (and type-specific members of other keyslot types).
    pub extra: Map<String, Value>,
}

impl Keyslot {
    pub(crate) fn from_json(id: u32, v: &Value) -> Result<Keyslot, ValidateError> {
        let o = Obj::of(Section::Keyslots, Some(id), v, "keyslot")?;
        let kind = o.req_str("type")?.to_string();
        let key_size = o.req_u32("key_size")?;
        let a = Obj::of(Section::Keyslots, Some(id), o.req("area")?, "area")?;
        let area_kind = a.req_str("type")?.to_string();
        let (encryption, area_key_size) = if area_kind == "raw" {
            (
                Some(a.req_str("encryption")?.to_string()),
                Some(a.req_u32("key_size")?),
            )
        } else {
            (a.opt_str("encryption")?.map(str::to_string), None)
        };
        let area = KeyslotArea {
            offset: a.req_u64s("offset")?,
            size: a.req_u64s("size")?,
            kind: area_kind,
            encryption,
            key_size: area_key_size,
            extra: a.rest(&["type", "offset", "size", "encryption", "key_size"]),
        };
        if area.kind == "raw" && area.size == 0 {
            return Err(a.err("size", "must not be zero"));
        }
        let (kdf, af) = if kind == Luks2Keyslot::TYPE {
            let (kdf, af) = luks2::decode(&o)?;
            (Some(kdf), Some(af))
        } else {
            (None, None)
        };
        let priority = o.opt_i32("priority")?;
        if let Some(p) = priority {
            if !(0..=2).contains(&p) {
                return Err(o.err("priority", "must be 0, 1 or 2"));
            }
        }
        let mut known = vec!["type", "key_size", "area", "priority"];
        if kind == Luks2Keyslot::TYPE {
            known.extend_from_slice(Luks2Keyslot::MEMBERS);
        }
        let ks = Keyslot {
            extra: o.rest(&known),
            kind,
            key_size,
            area,
            kdf,
            af,
            priority,
        };
        check_by_type(id, &ks)?;
        Ok(ks)
    }

    /// The typed view of a `luks2` keyslot (`None` for other types).
    pub fn luks2(&self, id: u32) -> Option<Result<Luks2Keyslot, ValidateError>> {
        (self.kind == Luks2Keyslot::TYPE).then(|| Luks2Keyslot::from_keyslot(id, self))
    }

    /// The typed view of a `reencrypt` keyslot (`None` for other types).
    pub fn reencrypt(&self, id: u32) -> Option<Result<ReencryptKeyslot, ValidateError>> {
        (self.kind == ReencryptKeyslot::TYPE).then(|| ReencryptKeyslot::from_keyslot(id, self))
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), self.kind.clone().into());
        m.insert("key_size".into(), self.key_size.into());
        if let Some(af) = &self.af {
            m.insert(
                "af".into(),
                serde_json::json!({"type": "luks1", "stripes": af.stripes, "hash": af.hash}),
            );
        }
        let mut a = Map::new();
        a.insert("type".into(), self.area.kind.clone().into());
        a.insert("offset".into(), u64s(self.area.offset));
        a.insert("size".into(), u64s(self.area.size));
        if let Some(e) = &self.area.encryption {
            a.insert("encryption".into(), e.clone().into());
        }
        if let Some(k) = self.area.key_size {
            a.insert("key_size".into(), k.into());
        }
        a.extend(self.area.extra.clone());
        m.insert("area".into(), Value::Object(a));
        if let Some(kdf) = &self.kdf {
            let salt = crate::b64::encode(kdf.salt());
            let k = match kdf {
                KeyslotKdf::Pbkdf2 {
                    hash, iterations, ..
                } => {
                    serde_json::json!({"type": "pbkdf2", "hash": hash, "iterations": iterations, "salt": salt})
                }
                KeyslotKdf::Argon2 {
                    time, memory, cpus, ..
                } => {
                    serde_json::json!({"type": kdf.type_name(), "time": time, "memory": memory, "cpus": cpus, "salt": salt})
                }
            };
            m.insert("kdf".into(), k);
        }
        if let Some(p) = self.priority {
            m.insert("priority".into(), p.into());
        }
        m.extend(self.extra.clone());
        Value::Object(m)
    }
}
