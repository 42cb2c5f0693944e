//! A small, optional look at a LUKS2 header: does it describe a volume
//! only wrapcrypt can open? Sans-I/O: the caller reads the first bytes of
//! the device (at most [`PROBE_MAX`]) and passes them in. Only the primary
//! header is read and its checksum is not verified: the answer is a hint
//! for the generator, and `wrapcrypt open` does the real validation.

use serde_json::Value;

/// How many bytes the probe may need (the largest LUKS2 header area).
pub const PROBE_MAX: usize = 4 << 20;
/// Bytes needed to learn the header size.
pub const PROBE_MIN: usize = 4096;

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A LUKS2 header with a wrapped-key cipher or a wrapcrypt token.
    Wrapcrypt,
    /// A LUKS header that does not need wrapcrypt.
    Other,
    /// Not a LUKS2 header, or too short to tell.
    Unknown,
}

/// The size of the header area (binary header + JSON), if `b` starts
/// with a LUKS2 binary header.
pub fn header_size(b: &[u8]) -> Option<usize> {
    if b.len() < PROBE_MIN || &b[..6] != b"LUKS\xba\xbe" {
        return None;
    }
    if u16::from_be_bytes([b[6], b[7]]) != 2 {
        return None;
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&b[8..16]);
    let size = u64::from_be_bytes(s) as usize;
    (16384..=PROBE_MAX).contains(&size).then_some(size)
}

/// Decides from the header bytes (at least [`header_size`] of them).
pub fn probe(b: &[u8]) -> Probe {
    if b.len() >= 8 && &b[..6] == b"LUKS\xba\xbe" && b[6..8] == [0, 1] {
        return Probe::Other;
    }
    let Some(size) = header_size(b) else {
        return Probe::Unknown;
    };
    if b.len() < size {
        return Probe::Unknown;
    }
    let json = &b[4096..size];
    let end = json.iter().position(|&c| c == 0).unwrap_or(json.len());
    let Ok(v) = serde_json::from_slice::<Value>(&json[..end]) else {
        return Probe::Unknown;
    };
    let wrapped = |s: &str| s.starts_with("waes-") || s.starts_with("paes-");
    let cipher = v["segments"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|s| s["encryption"].as_str())
        .any(wrapped);
    let token = v["tokens"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|t| t["type"].as_str())
        .any(|t| wrapped(t) || t.starts_with("wrapcrypt"));
    if cipher || token {
        Probe::Wrapcrypt
    } else {
        Probe::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(json: &str) -> Vec<u8> {
        let mut b = vec![0u8; 16384];
        b[..6].copy_from_slice(b"LUKS\xba\xbe");
        b[6..8].copy_from_slice(&2u16.to_be_bytes());
        b[8..16].copy_from_slice(&16384u64.to_be_bytes());
        b[4096..4096 + json.len()].copy_from_slice(json.as_bytes());
        b
    }

    #[test]
    fn ciphers_and_tokens_decide() {
        let seg =
            |c: &str| format!(r#"{{"segments":{{"0":{{"encryption":"{c}"}}}},"tokens":{{}}}}"#);
        assert_eq!(probe(&header(&seg("waes-xts-plain64"))), Probe::Wrapcrypt);
        assert_eq!(probe(&header(&seg("paes-xts-plain64"))), Probe::Wrapcrypt);
        assert_eq!(probe(&header(&seg("aes-xts-plain64"))), Probe::Other);
        let tok = r#"{"segments":{},"tokens":{"0":{"type":"waes-verification-pattern"}}}"#;
        assert_eq!(probe(&header(tok)), Probe::Wrapcrypt);
        let sd = r#"{"segments":{},"tokens":{"0":{"type":"systemd-tpm2"}}}"#;
        assert_eq!(probe(&header(sd)), Probe::Other);
        assert_eq!(probe(&[0u8; 5000]), Probe::Unknown);
        assert_eq!(probe(&header("{not json")), Probe::Unknown);
    }
}
