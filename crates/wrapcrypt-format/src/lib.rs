#![doc = include_str!("../README.md")]

pub mod af;
pub mod b64;
pub mod dump;
pub mod hash;
pub mod kdf;
pub mod keyslot_crypto;
pub mod luks1;
pub mod luks2;
