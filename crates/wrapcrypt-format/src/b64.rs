//! Standard base64 with padding, as LUKS2 JSON uses for salts and digests.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Encodes bytes.
pub fn encode(b: &[u8]) -> String {
    STANDARD.encode(b)
}

/// Decodes text; `None` if it is not valid base64.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}
