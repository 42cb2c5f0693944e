#![doc = include_str!("../README.md")]

pub mod af;
pub mod b64;
pub mod hash;
pub mod kdf;
pub mod keyslot_crypto;
pub mod luks2;
