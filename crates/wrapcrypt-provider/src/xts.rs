//! Software AES-256-XTS (dm-crypt `aes-xts-plain64`) and the verification
//! pattern.
//!
//! TODO(sector): switch to `wrapcrypt_sector::new_soft_cipher` once the
//! sector engine lands in main; this interim engine exists so the custodian
//! and the `soft` provider work before then.

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes256;
use cipher::generic_array::GenericArray;
use cipher::inout::InOutBuf;
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{SectorCipher, SectorError};

const BLOCK: usize = 16;

/// AES-256-XTS with a 128-bit little-endian sector-number tweak (plain64).
///
/// The expanded keys are zeroized on drop (`aes` with `zeroize`).
pub struct SoftXts {
    data: Box<Aes256>,
    tweak: Box<Aes256>,
    sector_size: usize,
}

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
}

impl SoftXts {
    /// An engine over the 64-byte key `key` (K1 ‖ K2) for `sector_size`-byte
    /// sectors; sizes below 512 are allowed only for the VP's 32-byte unit.
    pub fn new(key: &SecretBytes, sector_size: usize) -> Result<SoftXts, XtsError> {
        if !(sector_size.is_power_of_two() && (512..=4096).contains(&sector_size)) {
            return Err(XtsError::SectorSize(sector_size));
        }
        Self::with_unit(key, sector_size)
    }

    fn with_unit(key: &SecretBytes, unit: usize) -> Result<SoftXts, XtsError> {
        let k = key.expose_secret();
        if k.len() != 64 {
            return Err(XtsError::KeyLength(k.len()));
        }
        Ok(SoftXts {
            data: Box::new(Aes256::new(GenericArray::from_slice(&k[..32]))),
            tweak: Box::new(Aes256::new(GenericArray::from_slice(&k[32..]))),
            sector_size: unit,
        })
    }

    fn check(&self, data: &[u8]) -> Result<(), SectorError> {
        if !data.len().is_multiple_of(self.sector_size) {
            return Err(SectorError::Misaligned {
                len: data.len(),
                sector_size: self.sector_size,
            });
        }
        Ok(())
    }

    fn run(&self, iv_sector: u64, data: &mut [u8], encrypt: bool) {
        let step = (self.sector_size / 512).max(1) as u64;
        // The tweaks of one sector, kept so the post-whitening needs no
        // second tweak walk.
        let mut tweaks = [0u8; 4096];
        for (i, sector) in data.chunks_exact_mut(self.sector_size).enumerate() {
            let iv = iv_sector.wrapping_add(i as u64 * step);
            let mut t = GenericArray::from((iv as u128).to_le_bytes());
            self.tweak.encrypt_block(&mut t);
            let mut t = u128::from_le_bytes(t.into());
            let tw = &mut tweaks[..sector.len()];
            for (blk, tws) in sector
                .chunks_exact_mut(BLOCK)
                .zip(tw.chunks_exact_mut(BLOCK))
            {
                let tb = t.to_le_bytes();
                tws.copy_from_slice(&tb);
                xor16(blk, &tb);
                // Multiply by alpha in GF(2^128), little-endian convention.
                t = (t << 1) ^ ((t >> 127) * 0x87);
            }
            let (blocks, _) = InOutBuf::from(&mut sector[..]).into_chunks();
            if encrypt {
                self.data.encrypt_blocks_inout(blocks);
            } else {
                self.data.decrypt_blocks_inout(blocks);
            }
            for (blk, tws) in sector.chunks_exact_mut(BLOCK).zip(tw.chunks_exact(BLOCK)) {
                xor16(blk, tws);
            }
        }
        zeroize::Zeroize::zeroize(&mut tweaks[..]);
    }
}

fn xor16(a: &mut [u8], b: &[u8]) {
    let x = u128::from_ne_bytes(a[..16].try_into().expect("16-byte block"))
        ^ u128::from_ne_bytes(b[..16].try_into().expect("16-byte block"));
    a.copy_from_slice(&x.to_ne_bytes());
}

impl SectorCipher for SoftXts {
    fn sector_size(&self) -> usize {
        self.sector_size
    }

    fn encrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.check(data)?;
        self.run(iv_sector, data, true);
        Ok(())
    }

    fn decrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.check(data)?;
        self.run(iv_sector, data, false);
        Ok(())
    }
}

/// Verification pattern of a clear AES-256-XTS key: hex of the XTS
/// encryption of 32 zero bytes with tweak 0 (zkey's definition).
pub fn clear_key_vp(key: &SecretBytes) -> Result<String, XtsError> {
    let x = SoftXts::with_unit(key, 32)?;
    let mut buf = [0u8; 32];
    x.run(0, &mut buf, true);
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_0_63() -> SecretBytes {
        SecretBytes::copy_from(&(0..64u8).collect::<Vec<_>>())
    }

    /// Python `cryptography` (OpenSSL's AES-XTS) as an independent oracle:
    /// three 512-byte sectors from IV 0xff.
    #[test]
    fn matches_python_cryptography() {
        let key = key_0_63();
        let x = SoftXts::new(&key, 512).unwrap();
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
    fn large_sectors_advance_iv_by_eight() {
        let key = key_0_63();
        let big = SoftXts::new(&key, 4096).unwrap();
        let small = SoftXts::new(&key, 512).unwrap();
        let mut a = vec![7u8; 8192];
        big.encrypt(16, &mut a).unwrap();
        // sector 2 of a 4096-byte-sector device has IV 24 in 512-byte units
        let mut b = vec![7u8; 4096];
        big.encrypt(24, &mut b).unwrap();
        assert_eq!(&a[4096..], &b[..]);
        assert!(small.encrypt(0, &mut [0u8; 100]).is_err());
        assert_eq!(
            SoftXts::new(&key, 1000).err(),
            Some(XtsError::SectorSize(1000))
        );
    }
}
