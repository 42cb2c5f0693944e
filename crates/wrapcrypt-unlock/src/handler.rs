//! The token handler trait: one implementation per LUKS2 token JSON
//! `"type"` that can release a keyslot passphrase, looked up by that string
//! (as cryptsetup keys its token handlers).

use wrapcrypt_format::luks2::Token;
use wrapcrypt_secret::SecretBytes;

use crate::error::TokenError;
use crate::prompt::Prompter;

/// What a handler may use to release its secret.
pub struct ReleaseContext<'a> {
    /// The PIN given up front (`--pin-file`), if any.
    pub pin: Option<&'a SecretBytes>,
    /// Whether the handler may ask for a PIN (`--token-only` on a
    /// terminal); otherwise a token needing one fails with `NeedPin`.
    pub interactive: bool,
    /// The TPM to use (`--tpm2-device`), if not the default.
    pub tpm2_device: Option<&'a str>,
    /// Where questions go.
    pub prompter: &'a mut dyn Prompter,
}

/// A token type that releases a keyslot passphrase.
pub trait TokenHandler: Send + Sync {
    /// The JSON `"type"` this handler serves.
    fn kind(&self) -> &str;
    /// Checks the token's fields; the error says why it is unusable.
    fn check(&self, token: &Token) -> Result<(), TokenError>;
    /// Releases the keyslot passphrase (in locked memory).
    fn release(
        &self,
        token: &Token,
        ctx: &mut ReleaseContext<'_>,
    ) -> Result<SecretBytes, TokenError>;
}
