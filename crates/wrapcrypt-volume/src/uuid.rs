//! LUKS UUIDs: random version 4 ones, and cryptsetup's format check.

/// A random RFC 4122 version 4 UUID.
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    wrapcrypt_secret::fill_random(&mut b).expect("getrandom");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Checks a UUID text as cryptsetup does (canonical 8-4-4-4-12 hex).
pub fn valid_uuid(u: &str) -> bool {
    let parts: Vec<&str> = u.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(&n, p)| p.len() == n && p.bytes().all(|c| c.is_ascii_hexdigit()))
}
