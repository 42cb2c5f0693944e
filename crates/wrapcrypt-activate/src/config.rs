//! What the caller asks for ([`ServeConfig`]) and what an active volume is
//! ([`ActiveInfo`], the state file, and [`Status`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Parameters of one activation (everything but the key). Serializable so
/// the CLI can hand it to the server process along with the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeConfig {
    /// Mapping name: `/dev/mapper/NAME`, `/run/wrapcrypt/NAME`.
    pub name: String,
    /// Image file or block device holding the encrypted data.
    pub backing: PathBuf,
    /// Byte offset of the data segment in `backing`.
    pub data_offset: u64,
    /// Size of the data segment in bytes; `None` runs to the end of the
    /// device as it is at activation ("dynamic"), rounded down to sectors.
    pub data_size: Option<u64>,
    /// Added to every IV sector number (512-byte units).
    pub iv_tweak: u64,
    /// Refuse writes; the loop device is read-only too.
    pub read_only: bool,
    /// Accept discard / write-zeroes requests (done as encrypted zero writes).
    pub allow_discards: bool,
    /// Cipher string for status, e.g. `aes-xts-plain64`.
    pub cipher_desc: String,
    /// Free-form facts for status, e.g. `provider`, `protection`.
    pub extra_status: BTreeMap<String, String>,
}

impl ServeConfig {
    /// A configuration with the given name and backing device and defaults
    /// (offset 0, dynamic size, no tweak, read-write, no discards).
    pub fn new(name: impl Into<String>, backing: impl Into<PathBuf>) -> Self {
        ServeConfig {
            name: name.into(),
            backing: backing.into(),
            data_offset: 0,
            data_size: None,
            iv_tweak: 0,
            read_only: false,
            allow_discards: false,
            cipher_desc: String::new(),
            extra_status: BTreeMap::new(),
        }
    }
}

/// An active volume as recorded in `/run/wrapcrypt/NAME/state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveInfo {
    /// State file layout version (1).
    pub version: u32,
    /// Mapping name.
    pub name: String,
    /// Process id of the server.
    pub pid: u32,
    /// Start time of the server (clock ticks after boot, `/proc/PID/stat`
    /// field 22), so a reused pid is not mistaken for the server.
    pub pid_start: u64,
    /// The loop device, e.g. `/dev/loop3` (`None` while starting).
    pub loop_device: Option<PathBuf>,
    /// `/dev/mapper/NAME`.
    pub mapper_path: PathBuf,
    /// The decrypted file the loop device reads (inside the FUSE mount).
    pub fuse_file: PathBuf,
    /// Backing device as given.
    pub backing: PathBuf,
    /// Device number and inode of the backing (for block devices: rdev, 0).
    pub backing_id: (u64, u64),
    /// Data segment offset in bytes.
    pub data_offset: u64,
    /// Data segment size in bytes.
    pub data_size: u64,
    /// Whether the size was "dynamic" (to the end of the device).
    pub dynamic_size: bool,
    /// IV offset in 512-byte sectors.
    pub iv_tweak: u64,
    /// Cipher string.
    pub cipher: String,
    /// Encryption sector size in bytes.
    pub sector_size: u32,
    /// Read-only activation.
    pub read_only: bool,
    /// Discards accepted.
    pub allow_discards: bool,
    /// Whether the loop device does direct I/O to the FUSE file.
    pub loop_direct_io: bool,
    /// Whether the server does O_DIRECT I/O to the backing device.
    pub backing_direct_io: bool,
    /// Caller-provided facts (provider, protection, ...).
    pub extra: BTreeMap<String, String>,
    /// How the FUSE server talks to the kernel, e.g. `io_uring (2 queues,
    /// 32 entries)` or `/dev/fuse (io_uring: why not)`.
    #[serde(default)]
    pub fuse_transport: String,
}

/// What [`crate::status`] reports about a live volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The recorded state.
    pub info: ActiveInfo,
    /// The block device is mounted or held exclusively.
    pub in_use: bool,
}
