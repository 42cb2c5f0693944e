#![doc = include_str!("../README.md")]

pub mod backup;
pub mod convert;
pub mod error;
pub mod escrow;
pub mod fleet;
pub mod keyholders;
pub mod keyslots;
pub mod online;
pub mod open;
pub mod progress;
pub mod providers;
pub mod reencipher;
pub mod reencrypt;
pub mod refresh;
pub mod resize;
pub mod rotate;
pub mod setkey;
pub mod suspend;
pub mod tokens;
pub mod validate;
pub mod wrapped;

pub use error::OpsError;
pub use wrapped::{KeyFile, ProviderChoice};
