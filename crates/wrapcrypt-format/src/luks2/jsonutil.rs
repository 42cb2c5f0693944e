//! Typed access to JSON objects with errors that name section, id and field.

use serde_json::{Map, Value};

use super::error::{Section, ValidateError};

/// A JSON object being decoded, with the position used in error messages.
pub(crate) struct Obj<'a> {
    pub section: Section,
    pub id: Option<u32>,
    pub map: &'a Map<String, Value>,
}

pub(crate) fn invalid(
    section: Section,
    id: Option<u32>,
    field: &str,
    reason: &str,
) -> ValidateError {
    ValidateError::Invalid {
        section,
        id,
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// Parses a LUKS2 uint64 JSON string: decimal digits only, no sign, no overflow.
pub(crate) fn parse_u64_str(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses an object id ("0".."n"), rejecting leading zeros and signs.
pub(crate) fn parse_id(section: Section, s: &str, max: u32) -> Result<u32, ValidateError> {
    let bad = || ValidateError::BadId {
        section,
        id: s.to_string(),
    };
    let v = parse_u64_str(s).ok_or_else(bad)?;
    if (s.len() > 1 && s.starts_with('0')) || v >= max as u64 {
        return Err(bad());
    }
    Ok(v as u32)
}

impl<'a> Obj<'a> {
    pub fn of(
        section: Section,
        id: Option<u32>,
        v: &'a Value,
        what: &str,
    ) -> Result<Obj<'a>, ValidateError> {
        match v {
            Value::Object(map) => Ok(Obj { section, id, map }),
            _ => Err(invalid(section, id, what, "not a JSON object")),
        }
    }

    fn missing(&self, field: &'static str) -> ValidateError {
        ValidateError::Missing {
            section: self.section,
            id: self.id,
            field,
        }
    }

    pub fn err(&self, field: &str, reason: &str) -> ValidateError {
        invalid(self.section, self.id, field, reason)
    }

    pub fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field)
    }

    pub fn req(&self, field: &'static str) -> Result<&'a Value, ValidateError> {
        self.map.get(field).ok_or_else(|| self.missing(field))
    }

    pub fn req_str(&self, field: &'static str) -> Result<&'a str, ValidateError> {
        self.req(field)?
            .as_str()
            .ok_or_else(|| self.err(field, "not a string"))
    }

    pub fn opt_str(&self, field: &'static str) -> Result<Option<&'a str>, ValidateError> {
        match self.map.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(field, "not a string")),
        }
    }

    /// A uint64 stored as a JSON string (LUKS2 convention for 64-bit values).
    pub fn req_u64s(&self, field: &'static str) -> Result<u64, ValidateError> {
        match self.req(field)? {
            Value::String(s) => parse_u64_str(s)
                .ok_or_else(|| self.err(field, "not an unsigned 64-bit decimal string")),
            _ => Err(self.err(field, "64-bit values must be JSON strings")),
        }
    }

    /// A non-negative JSON integer that fits in u32.
    pub fn req_u32(&self, field: &'static str) -> Result<u32, ValidateError> {
        let v = self.req(field)?;
        v.as_u64()
            .filter(|&n| n <= u32::MAX as u64)
            .map(|n| n as u32)
            .ok_or_else(|| self.err(field, "not an unsigned 32-bit integer"))
    }

    pub fn opt_i32(&self, field: &'static str) -> Result<Option<i32>, ValidateError> {
        match self.map.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|&n| (i32::MIN as i64..=i32::MAX as i64).contains(&n))
                .map(|n| Some(n as i32))
                .ok_or_else(|| self.err(field, "not a 32-bit integer")),
        }
    }

    pub fn req_b64(&self, field: &'static str) -> Result<Vec<u8>, ValidateError> {
        let s = self.req_str(field)?;
        crate::b64::decode(s).ok_or_else(|| self.err(field, "not valid base64"))
    }

    /// An array of decimal id strings (references to other sections).
    pub fn req_ids(
        &self,
        field: &'static str,
        target: Section,
        max: u32,
    ) -> Result<Vec<u32>, ValidateError> {
        let arr = self
            .req(field)?
            .as_array()
            .ok_or_else(|| self.err(field, "not an array"))?;
        let mut out = Vec::with_capacity(arr.len());
        for v in arr {
            let s = v
                .as_str()
                .ok_or_else(|| self.err(field, "array member is not a string"))?;
            let id = parse_id(target, s, max)
                .map_err(|_| self.err(field, &format!("invalid reference \"{s}\"")))?;
            if out.contains(&id) {
                return Err(self.err(field, &format!("duplicate reference \"{s}\"")));
            }
            out.push(id);
        }
        Ok(out)
    }

    pub fn opt_str_array(&self, field: &'static str) -> Result<Option<Vec<String>>, ValidateError> {
        match self.map.get(field) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.err(field, "array member is not a string"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.err(field, "not an array")),
        }
    }

    /// Members other than `known`, kept so that a rewrite preserves them.
    pub fn rest(&self, known: &[&str]) -> Map<String, Value> {
        self.map
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

pub(crate) fn u64s(v: u64) -> Value {
    Value::String(v.to_string())
}

pub(crate) fn ids(v: &[u32]) -> Value {
    Value::Array(v.iter().map(|i| Value::String(i.to_string())).collect())
}
