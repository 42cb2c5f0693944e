//! Block devices and image files: positioned I/O, size, durability.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// An open device or image file.
#[derive(Debug)]
pub struct Device {
    file: File,
    path: PathBuf,
    is_block: bool,
    rdev: u64,
    writable: bool,
}

const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

impl Device {
    /// Opens `path` read-only or read-write.
    pub fn open(path: &Path, writable: bool) -> io::Result<Device> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let md = file.metadata()?;
        let ft = md.file_type();
        if !(ft.is_file() || ft.is_block_device()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a block device or regular file",
            ));
        }
        Ok(Device {
            file,
            path: path.to_path_buf(),
            is_block: ft.is_block_device(),
            rdev: md.rdev(),
            writable,
        })
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is a block device (else a regular file).
    pub fn is_block(&self) -> bool {
        self.is_block
    }

    /// Device number of a block device.
    pub fn rdev(&self) -> u64 {
        self.rdev
    }

    /// Whether it was opened for writing.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The underlying file (for locking).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Size in bytes.
    pub fn size(&self) -> io::Result<u64> {
        if self.is_block {
            let mut sz: u64 = 0;
            // SAFETY: BLKGETSIZE64 writes one u64 into sz.
            let r = unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(&self.file),
                    BLKGETSIZE64,
                    &mut sz,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(sz)
        } else {
            Ok(self.file.metadata()?.len())
        }
    }

    /// Reads up to `len` bytes at `off`; shorter at end of device.
    pub fn read_at(&self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = self.file.read_at(&mut buf[done..], off + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// Reads exactly `buf.len()` bytes at `off`.
    pub fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, off)
    }

    /// Writes all of `data` at `off`.
    pub fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        match crate::faults::write_point(self.path(), data.len())? {
            crate::faults::Fault::Proceed => self.file.write_all_at(data, off),
            crate::faults::Fault::Torn(n) => {
                self.file.write_all_at(&data[..n], off)?;
                self.file.sync_data()?;
                crate::faults::die()
            }
        }
    }

    /// Flushes written data to stable storage.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}
