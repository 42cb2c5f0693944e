//! The decrypted view of the data segment: positioned reads and writes of
//! plaintext at any byte offset, done as whole-sector crypto on the backing.

use std::alloc::{self, Layout};
use std::fs::File;
use std::ops::{Deref, DerefMut, Range};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use wrapcrypt_sector::{IoTicket, SectorCipher, SharedBuffer};

/// Alignment of I/O buffers: enough for O_DIRECT on any device.
pub(crate) const BUF_ALIGN: usize = 4096;

/// A zero-initialised buffer aligned for O_DIRECT: heap memory, or memory
/// the cipher processes without copying (a provider's shared memory).
pub(crate) struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    /// Set when the memory belongs to the cipher's provider.
    shared: Option<SharedBuffer>,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>; a
// shared buffer is Send itself.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes (pages touched, so RSS is predictable).
    pub(crate) fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len.max(1), BUF_ALIGN).expect("valid layout");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf {
            ptr,
            len,
            shared: None,
        }
    }

    /// `len` bytes from `cipher`'s shared memory when it offers some (so
    /// sectors are encrypted where they lie), else from the heap.
    pub(crate) fn for_cipher(cipher: &dyn SectorCipher, len: usize) -> Self {
        match cipher.shared_buffer(len) {
            Some(mut b) if b.len() >= len && b.as_ptr() as usize % BUF_ALIGN == 0 => {
                let ptr = std::ptr::NonNull::new(b.as_mut_ptr()).expect("non-null buffer");
                AlignedBuf {
                    ptr,
                    len,
                    shared: Some(b),
                }
            }
            _ => AlignedBuf::new(len),
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.shared.take().is_some() {
            return;
        }
        let layout = Layout::from_size_align(self.len.max(1), BUF_ALIGN).expect("valid layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes, owned by self
        // (the heap block, or the shared buffer kept in `shared`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// One request's sectors between `io_begin` and `io_end` (their layout
/// cannot move meanwhile), ended on every path out.
struct InFlight<'a> {
    cipher: &'a dyn SectorCipher,
    iv: u64,
    len: usize,
    ticket: IoTicket,
}

impl<'a> InFlight<'a> {
    fn new(cipher: &'a dyn SectorCipher, iv: u64, len: usize) -> Self {
        let ticket = cipher.io_begin(iv, len);
        InFlight {
            cipher,
            iv,
            len,
            ticket,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.cipher.io_end(self.iv, self.len, self.ticket);
    }
}

/// An errno to return to the FUSE client.
pub(crate) type Errno = i32;

/// Plaintext access to `[data_offset, data_offset + size)` of the backing.
pub(crate) struct Volume {
    backing: File,
    data_offset: u64,
    /// Changed by `resize` while the device is served.
    size: AtomicU64,
    iv_tweak: u64,
    sector: usize,
    cipher: Arc<dyn SectorCipher>,
    read_only: bool,
    /// Changed by `refresh` while the device is served.
    allow_discards: AtomicBool,
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
            size: AtomicU64::new(size),
            iv_tweak,
            sector,
            cipher,
            read_only,
            allow_discards: AtomicBool::new(allow_discards),
            rmw: RwLock::new(()),
        }
    }

    /// Plaintext size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Serves `size` bytes from now on (a multiple of the sector size).
    pub(crate) fn set_size(&self, size: u64) {
        debug_assert_eq!(size % self.sector as u64, 0);
        self.size.store(size, Ordering::Release);
    }

    /// Byte offset of the data in the backing.
    pub(crate) fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The backing's current length in bytes (it may have grown since
    /// activation).
    pub(crate) fn backing_len(&self) -> std::io::Result<u64> {
        use std::io::Seek;
        (&self.backing).seek(std::io::SeekFrom::End(0))
    }

    /// Whether discards are accepted.
    pub(crate) fn allow_discards(&self) -> bool {
        self.allow_discards.load(Ordering::Acquire)
    }

    /// Accepts discards from now on, or refuses them.
    pub(crate) fn set_allow_discards(&self, on: bool) {
        self.allow_discards.store(on, Ordering::Release);
    }

    /// Encryption sector size.
    pub(crate) fn sector_size(&self) -> usize {
        self.sector
    }

    /// Whether writes are refused.
    pub(crate) fn read_only(&self) -> bool {
        self.read_only
    }

    /// A request buffer of `len` bytes, in the cipher's shared memory if it has some.
    pub(crate) fn alloc_buf(&self, len: usize) -> AlignedBuf {
        AlignedBuf::for_cipher(&*self.cipher, len)
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
        let _layout = InFlight::new(&*self.cipher, self.iv(start), buf.len());
        read_full(&self.backing, buf, self.data_offset + start)?;
        self.cipher
            .decrypt(self.iv(start), buf)
            .map_err(|_| libc::EIO)
    }

    fn write_sectors(&self, start: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let _layout = InFlight::new(&*self.cipher, self.iv(start), buf.len());
        // Encrypt the whole batch first: a cipher failure writes nothing.
        self.cipher
            .encrypt(self.iv(start), buf)
            .map_err(|_| libc::EIO)?;
        write_full(&self.backing, buf, self.data_offset + start)
    }

    /// Reads plaintext at `off`; returns where in `buf` it landed (empty at EOF).
    pub(crate) fn read(&self, off: u64, len: usize, buf: &mut [u8]) -> Result<Range<usize>, Errno> {
        let size = self.size();
        if off >= size || len == 0 {
            return Ok(0..0);
        }
        let len = len.min((size - off) as usize);
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
        let size = self.size();
        if off >= size {
            return Err(libc::ENOSPC);
        }
        let len = data.len().min((size - off) as usize);
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
        if !self.allow_discards() {
            return Err(libc::EOPNOTSUPP);
        }
        let end = off.saturating_add(len).min(self.size());
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

#[cfg(test)]
mod tests {
    use super::*;
    use wrapcrypt_sector::SectorError;

    /// Adds (iv_sector + position) to each byte: a bijection tied to the IV.
    struct AddCipher(usize);
    impl AddCipher {
        fn key(iv: u64, i: usize, sector: usize) -> u8 {
            (iv + (i / sector * sector / 512) as u64)
                .wrapping_mul(31)
                .wrapping_add(i as u64) as u8
        }
    }
    impl SectorCipher for AddCipher {
        fn sector_size(&self) -> usize {
            self.0
        }
        fn encrypt(&self, iv: u64, d: &mut [u8]) -> Result<(), SectorError> {
            d.iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = b.wrapping_add(Self::key(iv, i, self.0)));
            Ok(())
        }
        fn decrypt(&self, iv: u64, d: &mut [u8]) -> Result<(), SectorError> {
            d.iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = b.wrapping_sub(Self::key(iv, i, self.0)));
            Ok(())
        }
    }

    fn vol(sector: usize, read_only: bool, discards: bool) -> (tempfile::NamedTempFile, Volume) {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(4096 + 64 * 1024).unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .open(f.path())
            .unwrap();
        let v = Volume::new(
            file,
            4096,
            64 * 1024,
            5,
            Arc::new(AddCipher(sector)),
            read_only,
            discards,
        );
        (f, v)
    }

    #[test]
    fn unaligned_writes_and_reads_round_trip_like_a_plain_file() {
        for sector in [512, 4096] {
            let (_f, v) = vol(sector, false, false);
            let mut model = vec![0u8; 64 * 1024];
            let mut buf = AlignedBuf::new(v.buf_len(64 * 1024));
            let mut initial = vec![0u8; 64 * 1024];
            let r = v.read(0, initial.len(), &mut buf).unwrap();
            initial.copy_from_slice(&buf[r]);
            model.copy_from_slice(&initial);
            let mut scratch = AlignedBuf::new(v.buf_len(32 * 1024));
            for (k, (off, len)) in [
                (0u64, 4096usize),
                (100, 1),
                (511, 2),
                (4000, 9000),
                (65535, 1),
                (8192, 512),
            ]
            .into_iter()
            .enumerate()
            {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + k) as u8).collect();
                let mut d = AlignedBuf::new(len);
                d.copy_from_slice(&data);
                assert_eq!(v.write(off, &mut d, &mut scratch).unwrap(), len);
                model[off as usize..off as usize + len].copy_from_slice(&data);
            }
            for (off, len) in [(0u64, 65536usize), (1, 3), (4095, 2), (60000, 10000)] {
                let r = v.read(off, len, &mut buf).unwrap();
                let end = (off as usize + len).min(model.len());
                assert_eq!(
                    &buf[r],
                    &model[off as usize..end],
                    "sector {sector} off {off}"
                );
            }
        }
    }

    #[test]
    fn bounds_read_only_and_discard_policy() {
        let (_f, v) = vol(512, false, false);
        let mut buf = AlignedBuf::new(v.buf_len(4096));
        let mut s = AlignedBuf::new(v.buf_len(4096));
        assert_eq!(v.read(64 * 1024, 10, &mut buf).unwrap(), 0..0);
        assert_eq!(v.write(64 * 1024, &mut [1u8; 4], &mut s), Err(libc::ENOSPC));
        assert_eq!(v.write(64 * 1024 - 2, &mut [1u8; 4], &mut s), Ok(2));
        assert_eq!(
            v.zero_range(0, 512, &mut buf, &mut s),
            Err(libc::EOPNOTSUPP)
        );
        let (_f, v) = vol(512, true, true);
        assert_eq!(v.write(0, &mut [1u8; 512], &mut s), Err(libc::EROFS));
        assert_eq!(v.zero_range(0, 512, &mut buf, &mut s), Err(libc::EROFS));
        let (_f, v) = vol(4096, false, true);
        v.write(0, &mut [0xaa; 12288], &mut s).unwrap();
        v.zero_range(100, 8000, &mut buf, &mut s).unwrap();
        let r = v.read(0, 12288, &mut buf).unwrap();
        let got = &buf[r];
        assert!(got[..100].iter().all(|&b| b == 0xaa));
        assert!(got[100..8100].iter().all(|&b| b == 0));
        assert!(got[8100..].iter().all(|&b| b == 0xaa));
    }
}
