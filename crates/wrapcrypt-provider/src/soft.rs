//! The `soft` provider: clear keys in this process's locked memory.

use std::sync::Arc;

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::SectorCipher;

use crate::error::{ErrorCode, ProviderError};
use crate::types::{KeySpec, KeyState, KeyStatus, Protection, RewrapDirection};
use crate::wkb::{Mechanism, Wkb, WrappingKeyId};
use crate::xts::{aes_256_xts, clear_key_vp};
use crate::KeyProvider;

/// Provider name written into `soft` blobs.
pub const SOFT: &str = "soft";

/// Clear keys for ordinary LUKS volumes. Its blobs carry the clear key
/// (mechanism `Clear`) and exist only in memory: an ordinary volume stores
/// the raw key as its LUKS2 volume key, and [`SoftProvider::from_clear_key`]
/// turns that into a blob for the uniform API.
#[derive(Debug, Default, Clone, Copy)]
pub struct SoftProvider;

impl SoftProvider {
    /// The provider.
    pub fn new() -> SoftProvider {
        SoftProvider
    }

    /// A `soft` blob holding a copy of `key` (a raw LUKS2 volume key).
    pub fn from_clear_key(key: &SecretBytes, spec: &KeySpec) -> Result<Wkb, ProviderError> {
        if key.len() != spec.algorithm.key_len() {
            return Err(ProviderError::refused(
                SOFT,
                ErrorCode::InvalidArgument,
                format!(
                    "{} needs a {}-byte key, got {} bytes",
                    spec.algorithm.name(),
                    spec.algorithm.key_len(),
                    key.len()
                ),
            ));
        }
        Ok(Wkb::new(
            SOFT,
            spec.algorithm,
            Mechanism::Clear,
            WrappingKeyId::None,
            SecretBytes::copy_from(key.expose_secret()),
        )?)
    }

    fn key_of(&self, wkb: &Wkb) -> Result<SecretBytes, ProviderError> {
        if wkb.provider() != SOFT {
            return Err(ProviderError::WrongProvider {
                expected: SOFT.into(),
                found: wkb.provider().into(),
            });
        }
        if wkb.mechanism() != Mechanism::Clear
            || wkb.expose_payload().len() != wkb.algorithm().key_len()
        {
            return Err(ProviderError::refused(
                SOFT,
                ErrorCode::BadWkb,
                "a soft blob must hold a clear key of the algorithm's length",
            ));
        }
        Ok(SecretBytes::copy_from(wkb.expose_payload()))
    }
}

pub(crate) fn xts_err(provider: &str, e: crate::xts::XtsError) -> ProviderError {
    ProviderError::refused(provider, ErrorCode::InvalidArgument, e.to_string())
}

impl KeyProvider for SoftProvider {
    fn name(&self) -> &str {
        SOFT
    }

    fn protection(&self) -> Protection {
        Protection::InProcess
    }

    fn generate(&self, spec: &KeySpec) -> Result<Wkb, ProviderError> {
        let key = SecretBytes::random(spec.algorithm.key_len())?;
        Self::from_clear_key(&key, spec)
    }

    fn import(&self, clear: &SecretBytes, spec: &KeySpec) -> Result<Wkb, ProviderError> {
        Self::from_clear_key(clear, spec)
    }

    fn validate(&self, wkb: &Wkb) -> Result<KeyStatus, ProviderError> {
        self.key_of(wkb)?;
        Ok(KeyStatus::new(
            KeyState::Current,
            None,
            WrappingKeyId::None.to_string(),
            Protection::InProcess,
        ))
    }

    fn verification_pattern(&self, wkb: &Wkb) -> Result<String, ProviderError> {
        clear_key_vp(&self.key_of(wkb)?).map_err(|e| xts_err(SOFT, e))
    }

    fn rewrap(&self, wkb: &Wkb, _direction: RewrapDirection) -> Result<Wkb, ProviderError> {
        self.key_of(wkb)?;
        Err(ProviderError::refused(
            SOFT,
            ErrorCode::Unsupported,
            "clear keys have no wrapping key to change; convert the volume to a wrapped key instead",
        ))
    }

    fn open_cipher(
        &self,
        wkb: &Wkb,
        sector_size: usize,
    ) -> Result<Arc<dyn SectorCipher>, ProviderError> {
        let key = self.key_of(wkb)?;
        Ok(Arc::new(
            aes_256_xts(&key, sector_size).map_err(|e| xts_err(SOFT, e))?,
        ))
    }
}
