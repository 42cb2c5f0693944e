//! The actions, grouped by family; each maps its options to a library
//! workflow, prints the result and returns a [`crate::exit::CliError`].

pub mod activation;
pub mod bench;
pub mod common;
pub mod custodian;
pub mod fleet;
pub mod generate;
pub mod header;
pub mod inventory;
pub mod keyslots;
pub mod reencrypt;
pub mod rotate;
pub mod tokens;
pub mod wrapped;
