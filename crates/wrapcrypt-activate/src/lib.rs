#![doc = include_str!("../README.md")]

mod config;
mod control;
mod error;
mod fuse;
mod handle;
mod loopdev;
mod server;
mod spawn;
mod split;
mod state;
mod volume;

pub use config::{ActiveInfo, ServeConfig, Status};
pub use control::{close, status};
pub use error::ActivateError;
pub use handle::{ResizeRefused, ServerHandle};
pub use server::{run_server, run_server_controlled, run_server_with_end};
pub use spawn::{spawn, ReadyPipe};
pub use split::{LiveCipher, SplitCipher, SuspendError};
pub use state::{control_socket, set_status};
pub use state::{is_backing_in_use, list, MAPPER_DIR, RUN_DIR};
