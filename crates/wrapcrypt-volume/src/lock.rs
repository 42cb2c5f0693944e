//! Metadata locking compatible with cryptsetup: an flock on the image file
//! itself, or on `/run/cryptsetup/L_MAJOR:MINOR` for a block device, shared
//! for readers and exclusive for writers. cryptsetup and wrapcrypt thus
//! serialise against each other.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use crate::device::Device;

/// A held metadata lock; released on drop.
#[derive(Debug)]
pub struct MetadataLock {
    _file: File,
    exclusive: bool,
}

const LOCK_DIR: &str = "/run/cryptsetup";

fn flock(f: &File, exclusive: bool) -> io::Result<()> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    loop {
        // SAFETY: flock on a valid fd.
        let r = unsafe { libc::flock(f.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl MetadataLock {
    /// Takes the metadata lock of `dev`, waiting for other holders.
    pub fn acquire(dev: &Device, exclusive: bool) -> io::Result<MetadataLock> {
        let file = if dev.is_block() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(LOCK_DIR)?;
            let major = libc::major(dev.rdev());
            let minor = libc::minor(dev.rdev());
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(format!("{LOCK_DIR}/L_{major}:{minor}"))?
        } else {
            dev.file().try_clone()?
        };
        flock(&file, exclusive)?;
        Ok(MetadataLock {
            _file: file,
            exclusive,
        })
    }

    /// Whether this is a writer's lock.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
}
