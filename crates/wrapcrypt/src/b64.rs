//! Standard base64 (RFC 4648, with `=` padding), as systemd writes it into
//! tokens and uses it for token passphrases. Encoding a secret builds the
//! text in locked memory, so no copy of a passphrase lands on the heap.

use wrapcrypt_secret::SecretBytes;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn encode_into(src: &[u8], out: &mut [u8]) {
    for (i, chunk) in src.chunks(3).enumerate() {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let o = &mut out[i * 4..i * 4 + 4];
        for (j, c) in o.iter_mut().enumerate() {
            *c = ALPHABET[((n >> (18 - 6 * j)) & 63) as usize];
        }
        if chunk.len() < 3 {
            o[3] = b'=';
        }
        if chunk.len() < 2 {
            o[2] = b'=';
        }
    }
}

fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Base64 text of public bytes.
pub fn encode(src: &[u8]) -> String {
    let mut out = vec![0u8; encoded_len(src.len())];
    encode_into(src, &mut out);
    String::from_utf8(out).expect("base64 alphabet is ASCII")
}

/// Base64 text of a secret, itself a secret (a token passphrase).
pub fn encode_secret(src: &SecretBytes) -> SecretBytes {
    let mut out = SecretBytes::zeroed(encoded_len(src.len()));
    encode_into(src.expose_secret(), out.expose_secret_mut());
    out
}

fn value(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
}

/// Decodes base64 (padding optional; ASCII whitespace ignored, as systemd's
/// reader does). `None` on any other character or a dangling sextet.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    let mut pad = false;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            pad = true;
            continue;
        }
        if pad {
            return None;
        }
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return None;
    }
    Some(out)
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
            let s = encode_secret(&SecretBytes::copy_from(plain.as_bytes()));
            assert_eq!(s.expose_secret(), enc.as_bytes());
        }
        assert_eq!(decode("Zm9v\nYmFy").unwrap(), b"foobar");
        assert!(decode("Zm9v!").is_none());
        assert!(decode("Zg=a").is_none());
        assert!(decode("Z").is_none());
    }

    #[test]
    fn binary_round_trip() {
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
    }
}
