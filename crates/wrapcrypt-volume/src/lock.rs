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

/// cryptsetup's reencryption lock: an exclusive flock on
/// `/run/cryptsetup/LN_LUKS2-reencryption-<UUID>`, taken without waiting
/// and held for a whole reencryption run. cryptsetup takes the metadata
/// lock only around each header write and this lock for the run, so
/// without it a second process could resume a reencryption another one is
/// running. Released on drop.
#[derive(Debug)]
pub struct ReencryptLock {
    _file: File,
}

impl ReencryptLock {
    /// Takes the lock of the volume `uuid`; `Ok(None)` when another
    /// process (cryptsetup or wrapcrypt) holds it.
    pub fn try_acquire(uuid: &str) -> io::Result<Option<ReencryptLock>> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(LOCK_DIR)?;
        let path = format!("{LOCK_DIR}/LN_LUKS2-reencryption-{uuid}");
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)?;
            // SAFETY: flock on a valid fd.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EWOULDBLOCK) => return Ok(None),
                    Some(libc::EINTR) => continue,
                    _ => return Err(e),
                }
            }
            // The holder before us may have removed the file as it let go:
            // the lock counts only on the file the path names now.
            use std::os::unix::fs::MetadataExt;
            let held = file.metadata()?;
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => {
                    return Ok(Some(ReencryptLock { _file: file }))
                }
                _ => continue,
            }
        }
    }
}
