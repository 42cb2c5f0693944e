//! `open --type plain`: a dm-crypt plain mapping (no header) with
//! cryptsetup 2.6.1's defaults (docs/actions.md): cipher
//! `aes-cbc-essiv:sha256`, a 256-bit key, passphrase hashing `ripemd160`,
//! 512-byte sectors, data from `--offset`, IV from `--skip`.
//!
//! The key: a passphrase typed or read from standard input is hashed
//! once, without salt or iterations; when the key is longer than the hash,
//! round `i` hashes `i` bytes `A` followed by the passphrase and the
//! rounds are concatenated (cryptsetup's, after hashalot). Hash `plain`
//! uses the passphrase itself, zero padded or truncated. A key file
//! (other than `-`) is the key itself: its first key-size bytes.

use wrapcrypt_activate::ServeConfig;
use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::ExitClass;

use super::payload::{self, KeySource, Part};
use super::{check_cipher, check_free};
use crate::error::OpsError;

/// cryptsetup 2.6.1's plain cipher (`cryptsetup --help`).
pub const DEFAULT_CIPHER: &str = "aes-cbc-essiv:sha256";
/// cryptsetup 2.6.1's plain key size in bits.
pub const DEFAULT_KEY_BITS: usize = 256;
/// cryptsetup 2.6.1's plain passphrase hash.
pub const DEFAULT_HASH: &str = "ripemd160";

/// Where the passphrase or key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlainKeyInput {
    /// A terminal or standard input without `--key-file`: hashed.
    Passphrase,
    /// `--key-file -`: all of standard input, hashed.
    Stdin,
    /// `--key-file FILE`: used as the key, not hashed.
    KeyFile,
}

/// What `open --type plain` is asked to do.
pub struct PlainOptions<'a> {
    /// The device (the server's backing).
    pub device: &'a str,
    /// The name under /dev/mapper.
    pub name: &'a str,
    /// `--cipher`.
    pub cipher: Option<&'a str>,
    /// `--key-size` in bits.
    pub key_bits: Option<usize>,
    /// `--hash`.
    pub hash: Option<&'a str>,
    /// `--offset` in 512-byte sectors.
    pub offset: u64,
    /// `--skip` in 512-byte sectors.
    pub skip: u64,
    /// `--size` / `--device-size` in bytes (`None`: to the end).
    pub size: Option<u64>,
    /// `--sector-size`.
    pub sector_size: Option<u32>,
    /// `--readonly`.
    pub read_only: bool,
    /// `--allow-discards`.
    pub allow_discards: bool,
    /// Where the key comes from.
    pub input: PlainKeyInput,
}

/// The plain key from `input` bytes (see the module docs).
pub fn derive_key(
    input: &SecretBytes,
    how: PlainKeyInput,
    hash: &str,
    key_len: usize,
) -> Result<SecretBytes, OpsError> {
    let mut key = SecretBytes::zeroed(key_len);
    let src = input.expose_secret();
    if how == PlainKeyInput::KeyFile {
        if src.len() < key_len {
            return Err(OpsError::usage(format!(
                "Cannot read {key_len} bytes from keyfile."
            )));
        }
        key.expose_secret_mut().copy_from_slice(&src[..key_len]);
        return Ok(key);
    }
    if hash == "plain" {
        let n = src.len().min(key_len);
        key.expose_secret_mut()[..n].copy_from_slice(&src[..n]);
        return Ok(key);
    }
    let alg = HashAlg::from_name(hash)
        .map_err(|_| OpsError::usage(format!("Hash algorithm {hash} not supported.")))?;
    let mut h = alg.hasher();
    let dlen = alg.digest_len();
    let mut digest = SecretBytes::zeroed(dlen);
    let out = key.expose_secret_mut();
    for (round, chunk) in out.chunks_mut(dlen).enumerate() {
        for _ in 0..round {
            h.update(b"A");
        }
        h.update(src);
        h.finalize_into_reset(digest.expose_secret_mut());
        chunk.copy_from_slice(&digest.expose_secret()[..chunk.len()]);
    }
    Ok(key)
}

/// Reads the passphrase or key, derives the key and returns the server's
/// start-up payload.
pub fn prepare(opts: &PlainOptions, prompter: &mut dyn Prompter) -> Result<SecretBytes, OpsError> {
    let cipher = opts.cipher.unwrap_or(DEFAULT_CIPHER);
    let spec = check_cipher(cipher)?;
    if spec.is_wrapped() {
        return Err(OpsError::usage(format!(
            "Cipher {cipher} needs a LUKS2 header (a wrapped key cannot be derived from a passphrase)."
        )));
    }
    let bits = opts.key_bits.unwrap_or(DEFAULT_KEY_BITS);
    if bits == 0 || bits & 7 != 0 {
        return Err(OpsError::usage(
            "Key size in bits must be a multiple of 8 bits",
        ));
    }
    let sector = opts.sector_size.unwrap_or(512);
    if !(512..=4096).contains(&sector) || !sector.is_power_of_two() {
        return Err(OpsError::usage(format!(
            "Unsupported encryption sector size {sector}."
        )));
    }
    if opts.size.is_some_and(|s| s == 0 || s % sector as u64 != 0) {
        return Err(OpsError::usage(
            "Device size is not aligned to requested sector size.",
        ));
    }
    let hash = opts.hash.unwrap_or(DEFAULT_HASH);
    if opts.input == PlainKeyInput::KeyFile && opts.hash.is_some() {
        prompter.warn(
            "WARNING: The --hash parameter is being ignored in plain mode with keyfile specified.",
        );
    }
    if opts.input != PlainKeyInput::KeyFile && hash != "plain" && HashAlg::from_name(hash).is_err()
    {
        return Err(OpsError::usage(format!(
            "Hash algorithm {hash} not supported."
        )));
    }
    let meta = std::fs::metadata(opts.device).map_err(|e| {
        OpsError::refused(
            ExitClass::WrongDevice,
            format!(
                "Device {} does not exist or access denied. ({e})",
                opts.device
            ),
        )
    })?;
    let offset = opts
        .offset
        .checked_mul(512)
        .ok_or_else(|| OpsError::usage("Offset is too large."))?;
    if meta.is_file() && offset >= meta.len() {
        return Err(OpsError::usage(format!(
            "Requested offset is beyond real size of device {}.",
            opts.device
        )));
    }
    check_free(opts.name, opts.device)?;
    let input = prompter.passphrase(&format!("Enter passphrase for {}: ", opts.device))?;
    let key = derive_key(&input, opts.input, hash, bits / 8)?;
    drop(input);
    let mut cfg = ServeConfig::new(opts.name, opts.device);
    cfg.data_offset = offset;
    cfg.data_size = opts.size;
    cfg.iv_tweak = opts.skip;
    cfg.read_only = opts.read_only;
    cfg.allow_discards = opts.allow_discards;
    cfg.cipher_desc = cipher.to_string();
    for (k, v) in [
        ("type", "PLAIN".to_string()),
        ("keysize", format!("{bits} bits")),
        ("protection", "in-process".into()),
        ("provider", "soft".into()),
    ] {
        cfg.extra_status.insert(k.into(), v);
    }
    Ok(payload::encode(
        &cfg,
        &[Part {
            spec: cipher,
            sector_size: sector,
            src: KeySource::Clear,
            key: &key,
        }],
        0,
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: &[u8]) -> SecretBytes {
        let mut x = SecretBytes::zeroed(b.len());
        x.expose_secret_mut().copy_from_slice(b);
        x
    }

    #[test]
    fn passphrase_hashing_rounds_prefix_a() {
        let p = s(b"secret");
        let k = derive_key(&p, PlainKeyInput::Passphrase, "ripemd160", 32).unwrap();
        let r = HashAlg::from_name("ripemd160").unwrap();
        let mut want = r.digest(b"secret");
        want.extend_from_slice(&r.digest(b"Asecret")[..12]);
        assert_eq!(k.expose_secret(), &want[..]);
        let k = derive_key(&p, PlainKeyInput::Stdin, "sha256", 16).unwrap();
        assert_eq!(
            k.expose_secret(),
            &HashAlg::from_name("sha256").unwrap().digest(b"secret")[..16]
        );
        let k = derive_key(&p, PlainKeyInput::Passphrase, "plain", 8).unwrap();
        assert_eq!(k.expose_secret(), b"secret\0\0");
    }

    #[test]
    fn key_files_are_the_key_and_must_be_long_enough() {
        let f = s(&[7u8; 40]);
        let k = derive_key(&f, PlainKeyInput::KeyFile, "ripemd160", 32).unwrap();
        assert_eq!(k.expose_secret(), &[7u8; 32]);
        assert!(derive_key(&s(&[1u8; 31]), PlainKeyInput::KeyFile, "sha256", 32).is_err());
    }
}
