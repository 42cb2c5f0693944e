//! `luksDump` text, byte for byte as cryptsetup 2.6.1 prints it.
//!
//! The layout was derived from cryptsetup's output on headers made at test
//! time (see `tests/dump_cryptsetup.rs`), not from its source. LUKS2 input is
//! the binary header fields plus the JSON area as a [`serde_json::Value`]
//! (parsed with `preserve_order`, so `--dump-json-metadata` keeps the on-disk
//! member order), which keeps this module independent of the LUKS2 model.
//!
//! Known departures: cryptsetup hands `systemd-*` tokens to the systemd
//! plugins installed on the host, which add their own lines; we print such
//! tokens like any unknown type (cryptsetup's `--disable-external-tokens`
//! output). A non-integer JSON number prints in serde_json's shortest form,
//! where cryptsetup repeats the on-disk spelling (`1.50` stays `1.50`);
//! serde_json's `arbitrary_precision` feature would close that gap.
//!
//! Functions append to a `String`; none of them fails: a member that is
//! missing or of the wrong JSON type prints as cryptsetup's validator would
//! never let it through, i.e. it is skipped.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::luks1::Luks1Header;

/// The binary-header fields `luks2_dump` prints (from the first copy).
#[derive(Clone, Copy, Debug)]
pub struct Luks2BinaryInfo<'a> {
    /// Header version (2).
    pub version: u16,
    /// Binary header + JSON area size (the "Metadata area").
    pub hdr_size: u64,
    /// Sequence id (the "Epoch").
    pub seqid: u64,
    /// Label text (empty: none).
    pub label: &'a str,
    /// Checksum algorithm (not printed by 2.6.1; kept for callers).
    pub checksum_alg: &'a str,
    /// Salt of the first copy (not printed by 2.6.1).
    pub salt: [u8; 64],
    /// UUID text.
    pub uuid: &'a str,
    /// Subsystem text (empty: none).
    pub subsystem: &'a str,
    /// Offset of this header copy (not printed by 2.6.1).
    pub hdr_offset: u64,
}

/// Hex bytes as cryptsetup prints them: `"xx "` each, a line break plus
/// `cont` before every further row of `per_row` bytes, and a final newline.
fn hex_rows(out: &mut String, bytes: &[u8], per_row: usize, cont: &str) {
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % per_row == 0 {
            out.push('\n');
            out.push_str(cont);
        }
        let _ = write!(out, "{b:02x} ");
    }
    out.push('\n');
}

/// Hex bytes on one line, each followed by a space, then a newline.
fn hex_line(out: &mut String, bytes: &[u8]) {
    hex_rows(out, bytes, usize::MAX, "");
}

fn b64(v: Option<&Value>) -> Vec<u8> {
    use base64_lite::decode;
    v.and_then(Value::as_str)
        .and_then(decode)
        .unwrap_or_default()
}

/// Minimal standard-alphabet base64 decoder (LUKS2 salts and digests).
mod base64_lite {
    pub(super) fn decode(s: &str) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(s.len() / 4 * 3);
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in s.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' => break,
                _ => return None,
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Some(out)
    }
}

/// A JSON scalar as cryptsetup prints it (strings unquoted).
fn scalar(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

/// Members of a LUKS2 section whose keys are decimal ids, in numeric order
/// (cryptsetup walks ids 0, 1, 2 … whatever the JSON order is).
fn by_id(section: Option<&Map<String, Value>>) -> Vec<(u64, &Value)> {
    let mut v: Vec<(u64, &Value)> = section
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let canonical = !k.is_empty()
                && k.bytes().all(|c| c.is_ascii_digit())
                && (k == "0" || !k.starts_with('0'));
            if canonical {
                k.parse().ok().map(|id| (id, v))
            } else {
                None
            }
        })
        .collect();
    v.sort_by_key(|(id, _)| *id);
    v
}

fn str_array(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(|x| scalar(Some(x))).collect())
        .unwrap_or_default()
}

/// Id of the digest whose `keyslots` lists `keyslot`.
fn digest_of_keyslot(json: &Value, keyslot: u64) -> Option<(u64, &Value)> {
    let id = keyslot.to_string();
    by_id(obj(json, "digests"))
        .into_iter()
        .find(|(_, d)| str_array(d.get("keyslots")).contains(&id))
}

fn is_backup_segment(seg: &Value) -> bool {
    str_array(seg.get("flags"))
        .iter()
        .any(|f| f.starts_with("backup-"))
}

/// A keyslot is bound when its digest is *the* digest of a segment that is
/// not a reencryption backup segment, where a segment's digest is the first
/// (lowest id) listing it, as cryptsetup looks it up. The hotzone of a
/// reencryption is listed by both digests and so counts for the old one:
/// cryptsetup 2.6.1 shows the new key's keyslot "(unbound)" while the only
/// regular segment holding new data is a hotzone.
fn keyslot_is_bound(json: &Value, keyslot: u64) -> bool {
    let Some((did, _)) = digest_of_keyslot(json, keyslot) else {
        return false;
    };
    let digests = by_id(obj(json, "digests"));
    by_id(obj(json, "segments"))
        .into_iter()
        .filter(|(_, seg)| !is_backup_segment(seg))
        .any(|(sid, _)| {
            let sid = sid.to_string();
            digests
                .iter()
                .find(|(_, d)| str_array(d.get("segments")).contains(&sid))
                .is_some_and(|(id, _)| *id == did)
        })
}

/// The `cryptsetup luksDump` text of a LUKS2 header.
pub fn luks2_dump(bin: &Luks2BinaryInfo<'_>, json: &Value, out: &mut String) {
    let or = |s: &str, none: &str| {
        if s.is_empty() {
            none.to_string()
        } else {
            s.to_string()
        }
    };
    let config = json.get("config");
    out.push_str("LUKS header information\n");
    let _ = writeln!(out, "Version:       \t{}", bin.version);
    let _ = writeln!(out, "Epoch:         \t{}", bin.seqid);
    let _ = writeln!(out, "Metadata area: \t{} [bytes]", bin.hdr_size);
    let _ = writeln!(
        out,
        "Keyslots area: \t{} [bytes]",
        scalar(config.and_then(|c| c.get("keyslots_size")))
    );
    let _ = writeln!(out, "UUID:          \t{}", or(bin.uuid, "(no UUID)"));
    let _ = writeln!(out, "Label:         \t{}", or(bin.label, "(no label)"));
    let _ = writeln!(
        out,
        "Subsystem:     \t{}",
        or(bin.subsystem, "(no subsystem)")
    );
    dump_config(config, out);
    dump_segments(json, out);
    dump_keyslots(json, out);
    dump_tokens(json, out);
    dump_digests(json, out);
}

fn dump_config(config: Option<&Value>, out: &mut String) {
    let flags = str_array(config.and_then(|c| c.get("flags")));
    out.push_str("Flags:       \t");
    if flags.is_empty() {
        out.push_str("(no flags)");
    }
    for f in &flags {
        let _ = write!(out, "{f} ");
    }
    out.push('\n');
    let reqs = str_array(
        config
            .and_then(|c| c.get("requirements"))
            .and_then(|r| r.get("mandatory")),
    );
    if !reqs.is_empty() {
        out.push_str("Requirements:\t");
        for r in &reqs {
            let _ = write!(out, "{r} ");
        }
        out.push('\n');
    }
    out.push('\n');
}

fn dump_segments(json: &Value, out: &mut String) {
    out.push_str("Data segments:\n");
    for (id, seg) in by_id(obj(json, "segments")) {
        let ty = scalar(seg.get("type"));
        let _ = writeln!(out, "  {id}: {ty}");
        let _ = writeln!(out, "\toffset: {} [bytes]", scalar(seg.get("offset")));
        let size = scalar(seg.get("size"));
        if size == "dynamic" {
            out.push_str("\tlength: (whole device)\n");
        } else {
            let _ = writeln!(out, "\tlength: {size} [bytes]");
        }
        if ty == "crypt" {
            let _ = writeln!(out, "\tcipher: {}", scalar(seg.get("encryption")));
            let _ = writeln!(out, "\tsector: {} [bytes]", scalar(seg.get("sector_size")));
            if let Some(integrity) = seg.get("integrity") {
                let _ = writeln!(out, "\tintegrity: {}", scalar(integrity.get("type")));
            }
        }
        let flags = str_array(seg.get("flags"));
        if !flags.is_empty() {
            let _ = writeln!(out, "\tflags : {}", flags.join(", "));
        }
        out.push('\n');
    }
}

fn bits(v: Option<&Value>) -> String {
    match v.and_then(Value::as_u64) {
        Some(n) => (n * 8).to_string(),
        None => String::new(),
    }
}

fn dump_keyslots(json: &Value, out: &mut String) {
    out.push_str("Keyslots:\n");
    for (id, ks) in by_id(obj(json, "keyslots")) {
        let ty = scalar(ks.get("type"));
        let unbound = if keyslot_is_bound(json, id) {
            ""
        } else {
            " (unbound)"
        };
        let _ = writeln!(out, "  {id}: {ty}{unbound}");
        let _ = writeln!(out, "\tKey:        {} bits", bits(ks.get("key_size")));
        let priority = match ks.get("priority").and_then(Value::as_i64) {
            Some(0) => "ignored",
            Some(2) => "preferred",
            _ => "normal",
        };
        let _ = writeln!(out, "\tPriority:   {priority}");
        let area = ks.get("area");
        let area_get = |k: &str| area.and_then(|a| a.get(k));
        match ty.as_str() {
            "luks2" => {
                let _ = writeln!(out, "\tCipher:     {}", scalar(area_get("encryption")));
                let _ = writeln!(out, "\tCipher key: {} bits", bits(area_get("key_size")));
                let kdf = ks.get("kdf");
                let kdf_get = |k: &str| kdf.and_then(|a| a.get(k));
                let kdf_type = scalar(kdf_get("type"));
                let _ = writeln!(out, "\tPBKDF:      {kdf_type}");
                if kdf_type == "pbkdf2" {
                    let _ = writeln!(out, "\tHash:       {}", scalar(kdf_get("hash")));
                    let _ = writeln!(out, "\tIterations: {}", scalar(kdf_get("iterations")));
                } else {
                    let _ = writeln!(out, "\tTime cost:  {}", scalar(kdf_get("time")));
                    let _ = writeln!(out, "\tMemory:     {}", scalar(kdf_get("memory")));
                    let _ = writeln!(out, "\tThreads:    {}", scalar(kdf_get("cpus")));
                }
                out.push_str("\tSalt:       ");
                hex_rows(out, &b64(kdf_get("salt")), 16, "\t            ");
                let af = ks.get("af");
                let af_get = |k: &str| af.and_then(|a| a.get(k));
                let _ = writeln!(out, "\tAF stripes: {}", scalar(af_get("stripes")));
                let _ = writeln!(out, "\tAF hash:    {}", scalar(af_get("hash")));
            }
            "reencrypt" => {
                let _ = writeln!(out, "\tMode:       {}", scalar(ks.get("mode")));
                let _ = writeln!(out, "\tDirection:  {}", scalar(ks.get("direction")));
                let resilience = scalar(area_get("type"));
                let _ = writeln!(out, "\tResilience: {resilience}");
                if resilience == "checksum" {
                    let _ = writeln!(out, "\tHash:       {}", scalar(area_get("hash")));
                    let _ = writeln!(
                        out,
                        "\tHash data:  {} [bytes]",
                        scalar(area_get("sector_size"))
                    );
                } else if resilience == "datashift" {
                    let _ = writeln!(
                        out,
                        "\tShift size: {}[bytes]",
                        scalar(area_get("shift_size"))
                    );
                }
            }
            _ => {}
        }
        let _ = writeln!(out, "\tArea offset:{} [bytes]", scalar(area_get("offset")));
        let _ = writeln!(out, "\tArea length:{} [bytes]", scalar(area_get("size")));
        if let Some((digest, _)) = digest_of_keyslot(json, id) {
            let _ = writeln!(out, "\tDigest ID:  {digest}");
        }
    }
}

fn dump_tokens(json: &Value, out: &mut String) {
    out.push_str("Tokens:\n");
    for (id, tok) in by_id(obj(json, "tokens")) {
        let ty = scalar(tok.get("type"));
        let _ = writeln!(out, "  {id}: {ty}");
        if ty == "luks2-keyring" {
            let _ = writeln!(
                out,
                "\tKey description: {}",
                scalar(tok.get("key_description"))
            );
        }
        for k in str_array(tok.get("keyslots")) {
            let _ = writeln!(out, "\tKeyslot:    {k}");
        }
    }
}

fn dump_digests(json: &Value, out: &mut String) {
    out.push_str("Digests:\n");
    for (id, d) in by_id(obj(json, "digests")) {
        let _ = writeln!(out, "  {id}: {}", scalar(d.get("type")));
        let _ = writeln!(out, "\tHash:       {}", scalar(d.get("hash")));
        let _ = writeln!(out, "\tIterations: {}", scalar(d.get("iterations")));
        out.push_str("\tSalt:       ");
        hex_rows(out, &b64(d.get("salt")), 16, "\t            ");
        out.push_str("\tDigest:     ");
        hex_rows(out, &b64(d.get("digest")), 16, "\t            ");
    }
}

/// The `cryptsetup luksDump DEVICE` text of a LUKS1 header; `device` is the
/// path as the user typed it (cryptsetup repeats it in the title line).
pub fn luks1_dump(device: &str, hdr: &Luks1Header, out: &mut String) {
    let _ = writeln!(out, "LUKS header information for {device}\n");
    out.push_str("Version:       \t1\n");
    let _ = writeln!(out, "Cipher name:   \t{}", hdr.cipher_name());
    let _ = writeln!(out, "Cipher mode:   \t{}", hdr.cipher_mode());
    let _ = writeln!(out, "Hash spec:     \t{}", hdr.hash_spec());
    let _ = writeln!(out, "Payload offset:\t{}", hdr.payload_offset());
    let _ = writeln!(out, "MK bits:       \t{}", u64::from(hdr.key_bytes()) * 8);
    out.push_str("MK digest:     \t");
    hex_line(out, hdr.mk_digest());
    out.push_str("MK salt:       \t");
    hex_rows(out, hdr.mk_digest_salt(), 16, "               \t");
    let _ = writeln!(out, "MK iterations: \t{}", hdr.mk_digest_iter());
    let _ = writeln!(out, "UUID:          \t{}\n", hdr.uuid());
    for (i, ks) in hdr.keyslots().iter().enumerate() {
        if !ks.is_active() {
            let _ = writeln!(out, "Key Slot {i}: DISABLED");
            continue;
        }
        let _ = writeln!(out, "Key Slot {i}: ENABLED");
        let _ = writeln!(out, "\tIterations:         \t{}", ks.iterations);
        out.push_str("\tSalt:               \t");
        hex_rows(out, &ks.salt, 16, "\t                      \t");
        let _ = writeln!(out, "\tKey material offset:\t{}", ks.key_material_offset);
        let _ = writeln!(out, "\tAF stripes:            \t{}", ks.stripes);
    }
}

/// Common head of the `--dump-volume-key` text.
fn volume_key_head(
    out: &mut String,
    device: &str,
    cipher: &str,
    payload_sectors: u64,
    uuid: &str,
    key: &[u8],
) {
    let (name, mode) = cipher.split_once('-').unwrap_or((cipher, ""));
    let _ = writeln!(out, "LUKS header information for {device}");
    let _ = writeln!(out, "Cipher name:   \t{name}");
    let _ = writeln!(out, "Cipher mode:   \t{mode}");
    let _ = writeln!(out, "Payload offset:\t{payload_sectors}");
    let _ = writeln!(out, "UUID:          \t{uuid}");
    let _ = writeln!(out, "MK bits:       \t{}", key.len() * 8);
}

/// `cryptsetup luksDump --dump-volume-key DEVICE` on LUKS1. `key` is the
/// unlocked volume key; the text holds it in clear, so `out` should be a
/// buffer the caller wipes.
pub fn luks1_volume_key_dump(device: &str, hdr: &Luks1Header, key: &[u8], out: &mut String) {
    let cipher = hdr.cipher_spec();
    volume_key_head(
        out,
        device,
        &cipher,
        u64::from(hdr.payload_offset()),
        hdr.uuid(),
        key,
    );
    out.push_str("MK dump:\t");
    hex_rows(out, key, 16, "\t\t");
}

/// The segment whose cipher and offset `--dump-volume-key` shows: the
/// lowest-numbered segment that is not a reencryption backup.
fn default_segment(json: &Value) -> Option<&Value> {
    by_id(obj(json, "segments"))
        .into_iter()
        .map(|(_, s)| s)
        .find(|s| !is_backup_segment(s))
}

/// `cryptsetup luksDump --dump-volume-key DEVICE` on LUKS2 (the key of the
/// data segment). See [`luks1_volume_key_dump`] about `out`.
pub fn luks2_volume_key_dump(
    device: &str,
    bin: &Luks2BinaryInfo<'_>,
    json: &Value,
    key: &[u8],
    out: &mut String,
) {
    let seg = default_segment(json);
    let cipher = scalar(seg.and_then(|s| s.get("encryption")));
    let offset = scalar(seg.and_then(|s| s.get("offset")))
        .parse::<u64>()
        .unwrap_or(0);
    volume_key_head(out, device, &cipher, offset / 512, bin.uuid, key);
    out.push_str("MK dump:\t");
    hex_rows(out, key, 16, "\t\t");
}

/// `cryptsetup luksDump --unbound -S KEYSLOT DEVICE`: the key stored in an
/// unbound LUKS2 keyslot. See [`luks1_volume_key_dump`] about `out`.
pub fn luks2_unbound_key_dump(
    device: &str,
    bin: &Luks2BinaryInfo<'_>,
    keyslot: u32,
    key: &[u8],
    out: &mut String,
) {
    let _ = writeln!(out, "LUKS header information for {device}");
    let _ = writeln!(out, "UUID:    \t{}", bin.uuid);
    let _ = writeln!(out, "Keyslot: \t{keyslot}");
    let _ = writeln!(out, "Key bits:\t{}", key.len() * 8);
    out.push_str("Unbound Key:\t");
    hex_rows(out, key, 16, "\t\t");
}

/// `cryptsetup luksDump --dump-json-metadata`: the JSON area pretty-printed
/// the way cryptsetup's JSON library does it (two-space indent, no space
/// after `:`, `/` not escaped, no final newline).
pub fn luks2_json_dump(json: &Value, out: &mut String) {
    json_value(json, 0, out);
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn json_value(v: &Value, level: usize, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // Integers print exactly; a non-integer prints in serde_json's
        // shortest form, where cryptsetup would repeat the on-disk spelling.
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => json_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                indent(out, level + 1);
                json_value(x, level + 1, out);
            }
            out.push('\n');
            indent(out, level);
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                indent(out, level + 1);
                json_string(k, out);
                out.push(':');
                json_value(x, level + 1, out);
            }
            out.push('\n');
            indent(out, level);
            out.push('}');
        }
    }
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_rows_wrap_every_16_bytes() {
        let mut s = String::new();
        hex_rows(&mut s, &[0xab; 20], 16, "\t  ");
        assert_eq!(
            s,
            "ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab \n\t  ab ab ab ab \n"
        );
    }

    #[test]
    fn base64_decodes_padding_and_rejects_junk() {
        assert_eq!(base64_lite::decode("AAAA"), Some(vec![0, 0, 0]));
        assert_eq!(base64_lite::decode("/w=="), Some(vec![0xff]));
        assert_eq!(base64_lite::decode("a!"), None);
    }

    #[test]
    fn json_escapes_like_json_c() {
        let v: Value = serde_json::from_str(r#"{"a":"x/y\u00e9\n\u0001\"\\","e":[],"o":{}}"#)
            .expect("valid json");
        let mut s = String::new();
        luks2_json_dump(&v, &mut s);
        assert_eq!(
            s,
            "{\n  \"a\":\"x/y\u{e9}\\n\\u0001\\\"\\\\\",\n  \"e\":[\n  ],\n  \"o\":{\n  }\n}"
        );
    }

    #[test]
    fn ids_sort_numerically_and_skip_non_canonical_keys() {
        let v: Value =
            serde_json::from_str(r#"{"s":{"10":1,"2":2,"01":3,"x":4}}"#).expect("valid json");
        let ids: Vec<u64> = by_id(obj(&v, "s")).into_iter().map(|(i, _)| i).collect();
        assert_eq!(ids, vec![2, 10]);
    }
}
