#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

use std::sync::Arc;

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::SectorCipher;

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod custodian;
mod error;
pub mod pkcs11;
pub mod protocol;
pub mod ring;
pub mod shm;
pub mod soft;
pub mod transport;
mod types;
pub mod wkb;
pub mod xts;

pub use custodian::{CustodianConfig, CustodianProvider, CUSTODIAN};
pub use error::{ErrorCode, ProviderError};
pub use pkcs11::{Pkcs11Provider, Pkcs11Uri, PKCS11};
pub use soft::{SoftProvider, SOFT};
pub use types::{
    KeyAlgorithm, KeySpec, KeyState, KeyStatus, KmipRegister, KmipStatus, MasterKeyStatus,
    Protection, Register, RegisterStatus, RewrapDirection,
};
pub use wkb::{Mechanism, Wkb, WkbError, WrappingKeyId};

/// Verification pattern of a clear AES-256-XTS key (64 hex), computed in
/// software: equal to what a provider reports for the same effective key.
pub fn clear_key_vp(key: &SecretBytes) -> Result<String, ProviderError> {
    xts::clear_key_vp(key).map_err(|e| soft::xts_err(SOFT, e))
}

/// A source of wrapped keys and of sector ciphers that use them. The volume
/// code holds an `Arc<dyn KeyProvider>` and never learns which one it is.
pub trait KeyProvider: Send + Sync {
    /// Provider name, as written into its blobs ("custodian", "soft", …).
    fn name(&self) -> &str;
    /// Where effective keys live while in use.
    fn protection(&self) -> Protection;
    /// Generates a key inside the provider and returns it wrapped.
    fn generate(&self, spec: &KeySpec) -> Result<Wkb, ProviderError>;
    /// Wraps an existing clear key (volume conversion), where policy allows.
    fn import(&self, clear: &SecretBytes, spec: &KeySpec) -> Result<Wkb, ProviderError>;
    /// Reports whether the blob is wrapped under a current, old or unknown key.
    fn validate(&self, wkb: &Wkb) -> Result<KeyStatus, ProviderError>;
    /// The effective key's verification pattern (64 hex), computed inside.
    fn verification_pattern(&self, wkb: &Wkb) -> Result<String, ProviderError>;
    /// The same effective key wrapped under another wrapping key.
    fn rewrap(&self, wkb: &Wkb, direction: RewrapDirection) -> Result<Wkb, ProviderError>;
    /// A dm-crypt `plain64` AES-XTS engine over the blob's effective key.
    fn open_cipher(
        &self,
        wkb: &Wkb,
        sector_size: usize,
    ) -> Result<Arc<dyn SectorCipher>, ProviderError>;
    /// Forgets a key this provider just made (`generate`/`import`) for a
    /// volume that was then not written: whatever the provider keeps
    /// besides the blob goes. A wrapped blob needs nothing (the default);
    /// a token-held PKCS#11 key's token objects are destroyed. Never call
    /// it for a blob a volume may already use.
    fn discard(&self, _wkb: &Wkb) -> Result<(), ProviderError> {
        Ok(())
    }
}
