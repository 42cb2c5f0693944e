//! Standard base64 (RFC 4648 alphabet), the one implementation in the
//! workspace: strict with padding for LUKS2 JSON salts and digests, relaxed
//! for systemd's token fields, and into locked memory for secrets (a token
//! passphrase is the base64 of a secret).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use wrapcrypt_secret::SecretBytes;

/// Padding optional, as systemd's reader accepts it.
const RELAXED: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes bytes.
pub fn encode(b: &[u8]) -> String {
    STANDARD.encode(b)
}

/// Decodes text; `None` if it is not valid padded base64.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}

/// Decodes as systemd does: ASCII white space ignored, padding optional.
pub fn decode_relaxed(s: &str) -> Option<Vec<u8>> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    RELAXED.decode(compact).ok()
}

/// Base64 text of a secret, built in locked memory (itself a secret).
pub fn encode_secret(src: &SecretBytes) -> SecretBytes {
    let mut out = SecretBytes::zeroed(src.len().div_ceil(3) * 4);
    let n = STANDARD
        .encode_slice(src.expose_secret(), out.expose_secret_mut())
        .expect("output sized for the input");
    debug_assert_eq!(n, out.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(decode(enc).unwrap(), plain.as_bytes());
            assert_eq!(decode_relaxed(enc).unwrap(), plain.as_bytes());
            let s = encode_secret(&SecretBytes::copy_from(plain.as_bytes()));
            assert_eq!(s.expose_secret(), enc.as_bytes());
        }
    }

    #[test]
    fn relaxed_takes_systemd_forms_and_refuses_junk() {
        assert_eq!(decode_relaxed("Zm9v\nYmFy").unwrap(), b"foobar");
        assert_eq!(decode_relaxed("Zg").unwrap(), b"f");
        assert!(decode("Zg").is_none());
        assert!(decode_relaxed("Zm9v!").is_none());
        assert!(decode_relaxed("Zg=a").is_none());
        assert!(decode_relaxed("Z").is_none());
    }

    #[test]
    fn binary_round_trip() {
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
        assert_eq!(decode_relaxed(&encode(&all)).unwrap(), all);
    }
}
