//! wrapcrypt-format (see README.md).

pub mod af;
pub mod hash;
pub mod kdf;
