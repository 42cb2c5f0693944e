//! Temporary stand-in until wrapcrypt-format's dump module lands.
#![allow(dead_code)]
pub struct Luks2BinaryInfo<'a> {
    pub version: u16,
    pub hdr_size: u64,
    pub seqid: u64,
    pub label: &'a str,
    pub checksum_alg: &'a str,
    pub salt: [u8; 64],
    pub uuid: &'a str,
    pub subsystem: &'a str,
    pub hdr_offset: u64,
}
pub fn json_pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}
pub fn luks2_dump(b: &Luks2BinaryInfo, v: &serde_json::Value, out: &mut String) {
    out.push_str(&format!("LUKS header information\nVersion:       \t2\nEpoch:         \t{}\nUUID:          \t{}\n{}\n", b.seqid, b.uuid, json_pretty(v)));
}
pub fn luks2_dump_volume_key(
    _h: &wrapcrypt_format::luks2::Luks2Header,
    key: &[u8],
    out: &mut String,
) {
    out.push_str(&format!("MK dump:\t{}\n", hex::encode(key)));
}
