#![doc = include_str!("../README.md")]

pub mod b64;
pub mod luks2;
