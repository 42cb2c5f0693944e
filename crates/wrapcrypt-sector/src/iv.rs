//! dm-crypt IV generators.

use sha2::digest::{generic_array::GenericArray, Digest};
use wrapcrypt_secret::SecretBytes;

use crate::block::BlockKey;
use crate::locked::{burn_stack, Locked};
use crate::path::XtsPath;
use crate::spec::{Cipher, EssivHash, IvMode, SpecError};
use crate::BLOCK;

/// A keyed IV generator for one cipher.
pub(crate) enum IvGen {
    /// No IV (ecb).
    None,
    Null,
    Plain,
    Plain64,
    Plain64Be,
    /// Block count shift: 9 - log2(block size).
    Benbi(u32),
    Essiv(BlockKey),
}

impl IvGen {
    pub(crate) fn new(
        iv: Option<IvMode>,
        cipher: Cipher,
        volume_key: &[u8],
        path: XtsPath,
    ) -> Result<IvGen, SpecError> {
        Ok(match iv {
            None => IvGen::None,
            Some(IvMode::Null) => IvGen::Null,
            Some(IvMode::Plain) => IvGen::Plain,
            Some(IvMode::Plain64) => IvGen::Plain64,
            Some(IvMode::Plain64Be) => IvGen::Plain64Be,
            // All supported ciphers have 16-byte blocks: 512 / 16 = 2^5 blocks per sector.
            Some(IvMode::Benbi) => IvGen::Benbi(9 - BLOCK.trailing_zeros()),
            Some(IvMode::Essiv(h)) => {
                if !cipher.accepts_key_len(h.output_len()) {
                    return Err(SpecError::EssivKeySize {
                        hash: h,
                        bytes: h.output_len(),
                        cipher,
                    });
                }
                let salt = essiv_salt(h, volume_key);
                IvGen::Essiv(BlockKey::new(cipher, salt.expose_secret(), path)?)
            } // IvMode is non_exhaustive only for other crates.
        })
    }

    /// Fills `ivs[i]` with the IV of sector `first + i * step` (512-byte units).
    pub(crate) fn fill(&self, first: u64, step: u64, ivs: &mut [[u8; BLOCK]]) {
        for (i, iv) in ivs.iter_mut().enumerate() {
            let s = first.wrapping_add(step.wrapping_mul(i as u64));
            *iv = [0; BLOCK];
            match self {
                IvGen::None | IvGen::Null => {}
                IvGen::Plain => iv[..4].copy_from_slice(&(s as u32).to_le_bytes()),
                IvGen::Plain64 | IvGen::Essiv(_) => iv[..8].copy_from_slice(&s.to_le_bytes()),
                IvGen::Plain64Be => iv[8..].copy_from_slice(&s.to_be_bytes()),
                IvGen::Benbi(shift) => {
                    iv[8..].copy_from_slice(&((s << shift).wrapping_add(1)).to_be_bytes())
                }
            }
        }
        if let IvGen::Essiv(k) = self {
            k.encrypt_blocks(ivs.as_flattened_mut());
        }
    }
}

/// HASH(volume key), computed with the hash state in locked memory.
fn essiv_salt(h: EssivHash, key: &[u8]) -> SecretBytes {
    let mut salt = SecretBytes::zeroed(h.output_len());
    macro_rules! digest {
        ($t:ty) => {{
            let mut st = Locked::new(<$t>::new);
            Digest::update(st.get_mut(), key);
            Digest::finalize_into_reset(
                st.get_mut(),
                GenericArray::from_mut_slice(salt.expose_secret_mut()),
            );
        }};
    }
    match h {
        EssivHash::Sha1 => digest!(sha1::Sha1),
        EssivHash::Sha224 => digest!(sha2::Sha224),
        EssivHash::Sha256 => digest!(sha2::Sha256),
        EssivHash::Sha384 => digest!(sha2::Sha384),
        EssivHash::Sha512 => digest!(sha2::Sha512),
    }
    burn_stack();
    salt
}
