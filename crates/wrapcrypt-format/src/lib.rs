//! wrapcrypt-format (see README.md).

pub mod dump;
pub mod luks1;
