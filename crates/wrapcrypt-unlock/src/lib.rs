#![doc = include_str!("../README.md")]

pub mod enroll;
pub mod error;
pub mod external;
pub mod handler;
pub mod pkcs11;
pub mod policy;
pub mod prompt;
pub mod registry;
pub mod systemd;
pub mod tpm2;

pub use error::{TokenError, UnlockError};
pub use handler::{ReleaseContext, TokenHandler};
pub use policy::{unlock, UnlockRequest};
pub use prompt::{PromptError, Prompter, Scripted};
pub use registry::Registry;
