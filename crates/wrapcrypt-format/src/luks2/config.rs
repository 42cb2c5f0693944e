//! `config` section: sizes, persistent flags and requirements.

use serde_json::{Map, Value};

use super::error::{Section, ValidateError};
use super::jsonutil::{u64s, Obj};

/// Requirements this implementation understands. wrapcrypt does not do
/// online reencryption, so even cryptsetup's own requirements block it.
pub const KNOWN_REQUIREMENTS: &[&str] = &[];

/// The config object.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Size of the JSON area (hdr_size - 4096).
    pub json_size: u64,
    /// Size of the keyslots area.
    pub keyslots_size: u64,
    /// Persistent activation flags (allow-discards, …).
    pub flags: Option<Vec<String>>,
    /// `requirements.mandatory`.
    pub requirements: Option<Vec<String>>,
    /// Unknown members of `requirements`, preserved.
    pub requirements_extra: Map<String, Value>,
    /// Unknown members, preserved.
    pub extra: Map<String, Value>,
}

impl Config {
    pub(crate) fn from_json(v: &Value) -> Result<Config, ValidateError> {
        let o = Obj::of(Section::Config, None, v, "config")?;
        let (requirements, requirements_extra) = match o.get("requirements") {
            None => (None, Map::new()),
            Some(r) => {
                let ro = Obj::of(Section::Config, None, r, "requirements")?;
                (ro.opt_str_array("mandatory")?, ro.rest(&["mandatory"]))
            }
        };
        Ok(Config {
            json_size: o.req_u64s("json_size")?,
            keyslots_size: o.req_u64s("keyslots_size")?,
            flags: o.opt_str_array("flags")?,
            requirements,
            requirements_extra,
            extra: o.rest(&["json_size", "keyslots_size", "flags", "requirements"]),
        })
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("json_size".into(), u64s(self.json_size));
        m.insert("keyslots_size".into(), u64s(self.keyslots_size));
        if let Some(f) = &self.flags {
            m.insert("flags".into(), f.clone().into());
        }
        if self.requirements.is_some() || !self.requirements_extra.is_empty() {
            let mut r = Map::new();
            if let Some(req) = &self.requirements {
                r.insert("mandatory".into(), req.clone().into());
            }
            r.extend(self.requirements_extra.clone());
            m.insert("requirements".into(), Value::Object(r));
        }
        m.extend(self.extra.clone());
        Value::Object(m)
    }

    /// The mandatory requirement that marks a reencryption in progress
    /// (`online-reencrypt`, or `online-reencrypt-vN` as cryptsetup 2.4.3+
    /// writes it) and the metadata version it names, if any.
    pub fn reencrypt_requirement(&self) -> Option<(&str, u32)> {
        self.requirements
            .iter()
            .flatten()
            .find_map(|r| reencrypt_version(r).map(|v| (r.as_str(), v)))
    }

    /// Mandatory requirements this implementation does not know: they block
    /// every change and activation.
    pub fn unknown_requirements(&self) -> Vec<&str> {
        self.requirements
            .iter()
            .flatten()
            .map(String::as_str)
            .filter(|r| !KNOWN_REQUIREMENTS.contains(r))
            .collect()
    }
}

/// The reencryption metadata version a requirement names: 1 for
/// `online-reencrypt` (cryptsetup 2.2 to 2.4.2, no verification digest), N
/// for `online-reencrypt-vN`.
pub fn reencrypt_version(requirement: &str) -> Option<u32> {
    if requirement == "online-reencrypt" {
        return Some(1);
    }
    let n = requirement.strip_prefix("online-reencrypt-v")?;
    if n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::reencrypt_version;

    #[test]
    fn reencrypt_requirement_versions() {
        assert_eq!(reencrypt_version("online-reencrypt"), Some(1));
        assert_eq!(reencrypt_version("online-reencrypt-v2"), Some(2));
        assert_eq!(reencrypt_version("online-reencrypt-v3"), Some(3));
        assert_eq!(reencrypt_version("online-reencrypt-v12"), Some(12));
        for r in [
            "online-reencrypt-v",
            "online-reencrypt-vx",
            "online-reencrypt-v2 ",
            "offline-reencrypt",
            "online-reencrypt2",
        ] {
            assert_eq!(reencrypt_version(r), None, "{r}");
        }
    }
}
