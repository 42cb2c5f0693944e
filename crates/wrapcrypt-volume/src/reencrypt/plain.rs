//! The "cipher" of a `linear` segment: the plaintext side of an
//! encryption (`reencrypt --encrypt`), whose old layout has no key.

use wrapcrypt_sector::{SectorCipher, SectorError};

/// Identity transform over whole sectors of `sector` bytes.
pub(crate) struct Linear {
    pub sector: usize,
}

impl SectorCipher for Linear {
    fn sector_size(&self) -> usize {
        self.sector
    }
    fn encrypt(&self, _iv_sector: u64, _data: &mut [u8]) -> Result<(), SectorError> {
        Ok(())
    }
    fn decrypt(&self, _iv_sector: u64, _data: &mut [u8]) -> Result<(), SectorError> {
        Ok(())
    }
}
