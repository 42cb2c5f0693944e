//! Software AES-256-XTS (dm-crypt `aes-xts-plain64`) on wrapcrypt-sector's
//! engine (AES-NI where available, round keys in locked memory), and the
//! verification pattern.

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{CipherSpec, SoftCipher};

/// The one dm-crypt spec wrapped AES-XTS keys run as.
const SPEC: &str = "aes-xts-plain64";

/// Why a software XTS engine could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XtsError {
    /// The key is not 64 bytes.
    #[error("AES-256-XTS needs a 64-byte key, got {0} bytes")]
    KeyLength(usize),
    /// The sector size is not 512..=4096, a power of two.
    #[error("sector size {0} is not a power of two in 512..=4096")]
    SectorSize(usize),
    /// The sector engine refused the key (cannot lock its memory, …).
    #[error("sector engine: {0}")]
    Engine(String),
}

/// AES-256-XTS with a 128-bit little-endian sector-number tweak (plain64)
/// over the 64-byte key `key` (K1 ‖ K2), for `sector_size`-byte sectors.
pub fn aes_256_xts(key: &SecretBytes, sector_size: usize) -> Result<SoftCipher, XtsError> {
    if key.len() != 64 {
        return Err(XtsError::KeyLength(key.len()));
    }
    if wrapcrypt_sector::check_sector_size(sector_size).is_err() {
        return Err(XtsError::SectorSize(sector_size));
    }
    let spec = CipherSpec::parse(SPEC).map_err(|e| XtsError::Engine(e.to_string()))?;
    SoftCipher::new(&spec, key, sector_size).map_err(|e| XtsError::Engine(e.to_string()))
}

/// Verification pattern of a clear AES-256-XTS key: hex of the XTS
/// encryption of 32 zero bytes with tweak 0 (zkey's definition).
pub fn clear_key_vp(key: &SecretBytes) -> Result<String, XtsError> {
    let x = aes_256_xts(key, 512)?;
    let mut buf = [0u8; 32];
    x.encrypt_unit(0, &mut buf)
        .map_err(|e| XtsError::Engine(e.to_string()))?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wrapcrypt_sector::SectorCipher;

    fn key_0_63() -> SecretBytes {
        SecretBytes::copy_from(&(0..64u8).collect::<Vec<_>>())
    }

    /// Python `cryptography` (OpenSSL's AES-XTS) as an independent oracle:
    /// three 512-byte sectors from IV 0xff.
    #[test]
    fn matches_python_cryptography() {
        let key = key_0_63();
        let x = aes_256_xts(&key, 512).unwrap();
        let plain: Vec<u8> = (0..1536).map(|i| (i * 7) as u8).collect();
        let mut d = plain.clone();
        x.encrypt(0xff, &mut d).unwrap();
        let script = "import sys\nfrom cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\
            k=bytes(range(64)); p=bytes((i*7)&255 for i in range(1536)); out=b''\n\
            for s in range(3):\n    e=Cipher(algorithms.AES(k),modes.XTS((0xff+s).to_bytes(16,'little'))).encryptor()\n    out+=e.update(p[s*512:(s+1)*512])\n\
            sys.stdout.write(out.hex())\n";
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), hex::encode(&d));
        x.decrypt(0xff, &mut d).unwrap();
        assert_eq!(d, plain);
    }

    /// Value computed with Python `cryptography` (OpenSSL) AES-XTS over 32
    /// zero bytes, tweak 0, key bytes 00..3f; see docs/wrapped-key-blob.md §5.
    #[test]
    fn vp_vector() {
        assert_eq!(clear_key_vp(&key_0_63()).unwrap(), VP_KEY_0_63);
    }

    pub(crate) const VP_KEY_0_63: &str =
        "cd6b103236fbd87dba93e9001e29bc3d5e885d6abd1577e3e0e0a5f49e444894";

    #[test]
    fn large_sectors_advance_iv_by_eight_and_bad_input_is_refused() {
        let key = key_0_63();
        let big = aes_256_xts(&key, 4096).unwrap();
        let small = aes_256_xts(&key, 512).unwrap();
        let mut a = vec![7u8; 8192];
        big.encrypt(16, &mut a).unwrap();
        // sector 2 of a 4096-byte-sector device has IV 24 in 512-byte units
        let mut b = vec![7u8; 4096];
        big.encrypt(24, &mut b).unwrap();
        assert_eq!(&a[4096..], &b[..]);
        assert!(small.encrypt(0, &mut [0u8; 100]).is_err());
        assert_eq!(
            aes_256_xts(&key, 1000).err(),
            Some(XtsError::SectorSize(1000))
        );
        let short = SecretBytes::copy_from(&[1u8; 32]);
        assert_eq!(
            aes_256_xts(&short, 512).err(),
            Some(XtsError::KeyLength(32))
        );
    }
}
