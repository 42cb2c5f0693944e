//! The decrypted view of the data segment: positioned reads and writes of
//! plaintext at any byte offset, done as whole-sector crypto on the backing.

use std::alloc::{self, Layout};
use std::fs::File;
use std::ops::{Deref, DerefMut, Range};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, RwLock};
use wrapcrypt_sector::SectorCipher;

/// Alignment of I/O buffers: enough for O_DIRECT on any device.
pub(crate) const BUF_ALIGN: usize = 4096;

/// A zero-initialised heap buffer aligned for O_DIRECT.
pub(crate) struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes (pages touched, so RSS is predictable).
    pub(crate) fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len.max(1), BUF_ALIGN).expect("valid layout");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len.max(1), BUF_ALIGN).expect("valid layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes, owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// An errno to return to the FUSE client.
pub(crate) type Errno = i32;

/// Plaintext access to `[data_offset, data_offset + size)` of the backing.
pub(crate) struct Volume {
    backing: File,
    data_offset: u64,
    size: u64,
    iv_tweak: u64,
    sector: usize,
    cipher: Arc<dyn SectorCipher>,
    read_only: bool,
    allow_discards: bool,
    /// Whole-sector writes share it; read-modify-write of partial sectors
    /// takes it exclusively, so no concurrent write is lost in between.
    rmw: RwLock<()>,
}

impl Volume {
    /// Wraps an opened backing file; `size` must be a multiple of the sector size.
    pub(crate) fn new(
        backing: File,
        data_offset: u64,
        size: u64,
        iv_tweak: u64,
        cipher: Arc<dyn SectorCipher>,
        read_only: bool,
        allow_discards: bool,
    ) -> Self {
        let sector = cipher.sector_size();
        debug_assert_eq!(size % sector as u64, 0);
        Volume {
            backing,
            data_offset,
            size,
            iv_tweak,
            sector,
            cipher,
            read_only,
            allow_discards,
            rmw: RwLock::new(()),
        }
    }

    /// Plaintext size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Encryption sector size.
    pub(crate) fn sector_size(&self) -> usize {
        self.sector
    }

    /// Whether writes are refused.
    pub(crate) fn read_only(&self) -> bool {
        self.read_only
    }

    /// Bytes of buffer needed for requests of up to `max` bytes at any offset.
    pub(crate) fn buf_len(&self, max: usize) -> usize {
        max + 2 * self.sector.max(BUF_ALIGN)
    }

    fn iv(&self, off: u64) -> u64 {
        (off / 512).wrapping_add(self.iv_tweak)
    }

    fn sector_range(&self, off: u64, len: usize) -> (u64, usize) {
        let s = self.sector as u64;
        let start = off / s * s;
        let end = (off + len as u64).div_ceil(s) * s;
        (start, (end - start) as usize)
    }

    fn read_sectors(&self, start: u64, buf: &mut [u8]) -> Result<(), Errno> {
        read_full(&self.backing, buf, self.data_offset + start)?;
        self.cipher
            .decrypt(self.iv(start), buf)
            .map_err(|_| libc::EIO)
    }

    fn write_sectors(&self, start: u64, buf: &mut [u8]) -> Result<(), Errno> {
        // Encrypt the whole batch first: a cipher failure writes nothing.
        self.cipher
            .encrypt(self.iv(start), buf)
            .map_err(|_| libc::EIO)?;
        write_full(&self.backing, buf, self.data_offset + start)
    }

    /// Reads plaintext at `off`; returns where in `buf` it landed (empty at EOF).
    pub(crate) fn read(&self, off: u64, len: usize, buf: &mut [u8]) -> Result<Range<usize>, Errno> {
        if off >= self.size || len == 0 {
            return Ok(0..0);
        }
        let len = len.min((self.size - off) as usize);
        let (start, n) = self.sector_range(off, len);
        if n > buf.len() {
            return Err(libc::EINVAL);
        }
        self.read_sectors(start, &mut buf[..n])?;
        let skip = (off - start) as usize;
        Ok(skip..skip + len)
    }

    /// Writes plaintext `data` at `off`. `data` is clobbered (encrypted in
    /// place) when whole sectors are written; `scratch` serves partial ones.
    pub(crate) fn write(
        &self,
        off: u64,
        data: &mut [u8],
        scratch: &mut [u8],
    ) -> Result<usize, Errno> {
        if self.read_only {
            return Err(libc::EROFS);
        }
        if data.is_empty() {
            return Ok(0);
        }
        if off >= self.size {
            return Err(libc::ENOSPC);
        }
        let len = data.len().min((self.size - off) as usize);
        let s = self.sector as u64;
        if off % s == 0 && len as u64 % s == 0 {
            let _shared = self.rmw.read().unwrap_or_else(|p| p.into_inner());
            self.write_sectors(off, &mut data[..len])?;
            return Ok(len);
        }
        let _excl = self.rmw.write().unwrap_or_else(|p| p.into_inner());
        let (start, n) = self.sector_range(off, len);
        if n > scratch.len() {
            return Err(libc::EINVAL);
        }
        let buf = &mut scratch[..n];
        self.read_sectors(start, buf)?;
        let skip = (off - start) as usize;
        buf[skip..skip + len].copy_from_slice(&data[..len]);
        self.write_sectors(start, buf)?;
        Ok(len)
    }

    /// Makes `[off, off+len)` read as zeros, by writing encrypted zeros:
    /// a punched ciphertext range would decrypt to garbage, and the loop
    /// driver turns write-zeroes requests into punch-hole.
    pub(crate) fn zero_range(
        &self,
        off: u64,
        len: u64,
        zeros: &mut [u8],
        scratch: &mut [u8],
    ) -> Result<(), Errno> {
        if self.read_only {
            return Err(libc::EROFS);
        }
        if !self.allow_discards {
            return Err(libc::EOPNOTSUPP);
        }
        let end = off.saturating_add(len).min(self.size);
        let chunk = (zeros.len() / self.sector * self.sector).max(self.sector);
        let mut pos = off;
        while pos < end {
            let n = ((end - pos) as usize).min(chunk);
            let z = &mut zeros[..n];
            z.fill(0);
            pos += self.write(pos, z, scratch)? as u64;
        }
        Ok(())
    }

    /// Makes written data durable (fdatasync of the backing).
    pub(crate) fn sync(&self) -> Result<(), Errno> {
        // SAFETY: fdatasync on an fd we own.
        if unsafe { libc::fdatasync(self.backing.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(libc::EIO)
        }
    }
}

fn read_full(f: &File, mut buf: &mut [u8], mut off: u64) -> Result<(), Errno> {
    while !buf.is_empty() {
        match f.read_at(buf, off) {
            Ok(0) => return Err(libc::EIO),
            Ok(n) => {
                buf = &mut buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(libc::EIO),
        }
    }
    Ok(())
}

fn write_full(f: &File, mut buf: &[u8], mut off: u64) -> Result<(), Errno> {
    while !buf.is_empty() {
        match f.write_at(buf, off) {
            Ok(0) => return Err(libc::EIO),
            Ok(n) => {
                buf = &buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Err(libc::ENOSPC),
            Err(_) => return Err(libc::EIO),
        }
    }
    Ok(())
}
