//! The one size parser: cryptsetup's optional unit suffixes.

/// A size in bytes with cryptsetup's optional unit suffix: K, M, G, T, P, E
/// (any case) alone or with "iB" are powers of 1024, with "B" powers of
/// 1000 (`16k`, `4MiB`, `1GB`).
pub fn parse_size(v: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {v:?} (a number with an optional K, M, G, T suffix)");
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = v.split_at(digits);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mut chars = unit.chars();
    let exp = match chars.next().map(|c| c.to_ascii_uppercase()) {
        None => return Ok(n),
        Some(c) => "KMGTPE".find(c).ok_or_else(bad)? as u32 + 1,
    };
    let base: u64 = match chars.as_str() {
        "" | "iB" => 1024,
        "B" => 1000,
        _ => return Err(bad()),
    };
    base.checked_pow(exp)
        .and_then(|m| n.checked_mul(m))
        .ok_or_else(bad)
}

/// `--device-size`: [`parse_size`], or a number of 512-byte sectors with
/// the suffix `S`.
pub fn parse_device_size(v: &str) -> Result<u64, String> {
    match v.strip_suffix(['S', 's']) {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(512))
            .ok_or_else(|| format!("invalid size {v:?}")),
        _ => parse_size(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_cryptsetup_units() {
        let cases = [
            ("16384", Some(16384)),
            ("16k", Some(16384)),
            ("16K", Some(16384)),
            ("16KiB", Some(16384)),
            ("4m", Some(4 << 20)),
            ("4MiB", Some(4 << 20)),
            ("16KB", Some(16000)),
            ("16b", None),
            ("0x4000", None),
            ("16k5", None),
            ("k", None),
            ("99999999999E", None),
        ];
        for (v, want) in cases {
            assert_eq!(parse_size(v).ok(), want, "{v}");
        }
        assert_eq!(parse_device_size("8S"), Ok(4096));
        assert_eq!(parse_device_size("4k"), Ok(4096));
        assert!(parse_device_size("S").is_err());
    }
}
