//! What the server's control thread may change while the device is
//! served (`resize`, `refresh`): the size the FUSE file has, and whether
//! discards are accepted. docs/actions.md says how each reaches the kernel.

use crate::error::ActivateError;
use crate::fuse::{self, FileServer};
use crate::state;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// `LOOP_SET_CAPACITY`: the loop driver re-reads its backing file's size.
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;

/// Why a resize was refused (nothing changed).
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResizeRefused {
    /// The size is not a multiple of the encryption sector size.
    Misaligned {
        /// Bytes asked for.
        size: u64,
        /// Encryption sector size.
        sector: u64,
    },
    /// Data offset + size lies beyond the backing device (or size is 0).
    TooSmall {
        /// The backing device.
        backing: PathBuf,
        /// Its length in bytes.
        have: u64,
        /// Bytes the new size needs.
        need: u64,
    },
}

impl std::fmt::Display for ResizeRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResizeRefused::Misaligned { .. } => {
                write!(f, "Device size is not aligned to requested sector size.")
            }
            ResizeRefused::TooSmall { backing, .. } => {
                write!(f, "Device {} is too small.", backing.display())
            }
        }
    }
}

/// A served device, for its server's control thread.
pub struct ServerHandle {
    name: String,
    fs: Arc<FileServer>,
    /// A `/dev/fuse` fd of the session, for notifications.
    notify: File,
    loop_device: PathBuf,
    /// One change at a time (size and state file stay in step).
    lock: Mutex<()>,
}

impl ServerHandle {
    pub(crate) fn new(name: &str, fs: Arc<FileServer>, notify: File, loop_device: PathBuf) -> Self {
        ServerHandle {
            name: name.to_owned(),
            fs,
            notify,
            loop_device,
            lock: Mutex::new(()),
        }
    }

    /// Serves `size` bytes of data, or with `None` all the backing has
    /// after the data offset (rounded down to sectors), and makes the loop
    /// device (so `/dev/mapper/NAME`) that size. Refused with nothing
    /// changed when the size is misaligned or does not fit the backing.
    /// Returns the new size in bytes.
    pub fn resize(&self, size: Option<u64>) -> Result<Result<u64, ResizeRefused>, ActivateError> {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let vol = self.fs.volume();
        let info = state::read_state(&self.name)?
            .ok_or_else(|| ActivateError::NotActive(self.name.clone()))?;
        let sector = vol.sector_size() as u64;
        let have = vol
            .backing_len()
            .map_err(|e| ActivateError::io("size of", &info.backing, e))?;
        let room = have.saturating_sub(vol.data_offset());
        let new = match size {
            Some(s) if s % sector != 0 => {
                return Ok(Err(ResizeRefused::Misaligned { size: s, sector }))
            }
            Some(s) => s,
            None => room / sector * sector,
        };
        if new == 0 || new > room {
            return Ok(Err(ResizeRefused::TooSmall {
                backing: info.backing.clone(),
                have,
                need: vol.data_offset().saturating_add(new.max(sector)),
            }));
        }
        let old = vol.size();
        vol.set_size(new);
        if let Err(e) = self.tell_kernel() {
            vol.set_size(old);
            let _ = self.tell_kernel();
            return Err(e);
        }
        let mut info = info;
        info.data_size = new;
        info.dynamic_size = size.is_none();
        state::write_state(&info)?;
        Ok(Ok(new))
    }

    /// The kernel's copy of the FUSE file's size, then the loop device's.
    fn tell_kernel(&self) -> Result<(), ActivateError> {
        let file = state::fuse_file(&self.name);
        fuse::notify_inval_file(&self.notify)
            .map_err(|e| ActivateError::io("notify the kernel of the new size of", &file, e))?;
        // A stat asks us for the attributes the notification dropped.
        let seen = std::fs::metadata(&file)
            .map_err(|e| ActivateError::io("stat", &file, e))?
            .len();
        if seen != self.fs.volume().size() {
            return Err(ActivateError::io(
                "update the size of",
                &file,
                std::io::Error::other(format!(
                    "the kernel still sees {seen} bytes, not {}",
                    self.fs.volume().size()
                )),
            ));
        }
        let dev = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.loop_device)
            .map_err(|e| ActivateError::io("open", &self.loop_device, e))?;
        // SAFETY: an argument-less ioctl on our loop device.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_CAPACITY, 0) } != 0 {
            return Err(ActivateError::io(
                "set the capacity of",
                &self.loop_device,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Accepts discards (as encrypted zero writes) or refuses them from
    /// now on, and records it in the state.
    pub fn set_allow_discards(&self, on: bool) -> Result<(), ActivateError> {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut info = state::read_state(&self.name)?
            .ok_or_else(|| ActivateError::NotActive(self.name.clone()))?;
        self.fs.volume().set_allow_discards(on);
        info.allow_discards = on;
        state::write_state(&info)
    }
}
