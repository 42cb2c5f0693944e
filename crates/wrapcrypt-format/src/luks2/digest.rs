//! `digests` section: PBKDF2 digests that certify a volume key.

use serde_json::{Map, Value};

use super::error::{Section, ValidateError};
use super::jsonutil::{ids, Obj};
use super::keyslot::KEYSLOTS_MAX;
use super::segment::SEGMENTS_MAX;

/// Maximum digest id + 1.
pub const DIGESTS_MAX: u32 = 8;

/// One digest object (type "pbkdf2").
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    /// Digest type, "pbkdf2".
    pub kind: String,
    /// Keyslots whose key this digest certifies.
    pub keyslots: Vec<u32>,
    /// Segments that use that key.
    pub segments: Vec<u32>,
    /// PBKDF2 hash.
    pub hash: String,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// PBKDF2 salt.
    pub salt: Vec<u8>,
    /// Expected PBKDF2 output.
    pub digest: Vec<u8>,
    /// Unknown members, preserved.
    pub extra: Map<String, Value>,
}

impl Digest {
    pub(crate) fn from_json(id: u32, v: &Value) -> Result<Digest, ValidateError> {
        let o = Obj::of(Section::Digests, Some(id), v, "digest")?;
        let kind = o.req_str("type")?.to_string();
        if kind != "pbkdf2" {
            return Err(o.err("type", &format!("unknown digest type \"{kind}\"")));
        }
        let d = Digest {
            keyslots: o.req_ids("keyslots", Section::Keyslots, KEYSLOTS_MAX)?,
            segments: o.req_ids("segments", Section::Segments, SEGMENTS_MAX)?,
            hash: o.req_str("hash")?.to_string(),
            iterations: o.req_u32("iterations")?,
            salt: o.req_b64("salt")?,
            digest: o.req_b64("digest")?,
            extra: o.rest(&[
                "type",
                "keyslots",
                "segments",
                "hash",
                "iterations",
                "salt",
                "digest",
            ]),
            kind,
        };
        if d.digest.is_empty() || d.digest.len() > 64 {
            return Err(o.err("digest", "bad digest length"));
        }
        Ok(d)
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), self.kind.clone().into());
        m.insert("keyslots".into(), ids(&self.keyslots));
        m.insert("segments".into(), ids(&self.segments));
        m.insert("hash".into(), self.hash.clone().into());
        m.insert("iterations".into(), self.iterations.into());
        m.insert("salt".into(), crate::b64::encode(&self.salt).into());
        m.insert("digest".into(), crate::b64::encode(&self.digest).into());
        m.extend(self.extra.clone());
        Value::Object(m)
    }
}
