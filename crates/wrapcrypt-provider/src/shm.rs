//! Shared memory for bulk sector data: a sealed memfd mapped by both sides.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// A `MAP_SHARED` mapping of a memfd whose size is sealed, so neither side
/// can shrink it under the other (which would turn accesses into SIGBUS).
pub struct Shm {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned; access goes through &self/&mut self.
unsafe impl Send for Shm {}
// SAFETY: shared access hands out only shared slices.
unsafe impl Sync for Shm {}

const REQUIRED_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

impl Shm {
    /// Creates a sealed memfd of `len` bytes and maps it.
    pub fn create(len: usize) -> io::Result<Shm> {
        // SAFETY: the name is a valid C string; flags are constants.
        let raw = unsafe {
            libc::memfd_create(
                c"wrapcrypt-sectors".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscalls on our descriptor.
        unsafe {
            if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) != 0
                || libc::fcntl(
                    fd.as_raw_fd(),
                    libc::F_ADD_SEALS,
                    REQUIRED_SEALS | libc::F_SEAL_SEAL,
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Shm::map(fd, len)
    }

    /// Maps a descriptor received from a peer after checking that it is a
    /// memfd of at least `len` bytes sealed against shrinking and growing.
    pub fn from_peer(fd: OwnedFd, len: usize) -> io::Result<Shm> {
        // SAFETY: plain syscalls on a descriptor we own.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & REQUIRED_SEALS != REQUIRED_SEALS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shared memory must be a memfd sealed with F_SEAL_SHRINK|F_SEAL_GROW",
            ));
        }
        // SAFETY: st is plain data filled by fstat.
        let size = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd.as_raw_fd(), &mut st) != 0 {
                return Err(io::Error::last_os_error());
            }
            st.st_size as u64
        };
        if size != len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("shared memory is {size} bytes, the request says {len}"),
            ));
        }
        Shm::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Shm> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty shm"));
        }
        // SAFETY: shared mapping of a descriptor we own; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Sector plaintext passes through here: keep it out of core dumps.
        // SAFETY: p/len is the mapping just made.
        unsafe { libc::madvise(p, len, libc::MADV_DONTDUMP) };
        Ok(Shm {
            fd,
            ptr: NonNull::new(p as *mut u8).expect("mmap returned null"),
            len,
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (empty mappings are refused).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The descriptor, to pass to the peer.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Start of the mapping (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The whole mapping. The peer may write it concurrently; callers only
    /// exchange data through it between request and response.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is len bytes and lives as long as self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; clear first so plaintext does not
        // linger in the memfd's pages (the peer may still hold it).
        unsafe {
            std::ptr::write_bytes(self.ptr.as_ptr(), 0, self.len);
            libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_memfd_is_shared_and_cannot_shrink() {
        let mut a = Shm::create(8192).unwrap();
        let dup = a.fd().try_clone().unwrap();
        let mut b = Shm::from_peer(dup, 8192).unwrap();
        a.as_mut_slice()[100] = 42;
        assert_eq!(b.as_mut_slice()[100], 42);
        // SAFETY: plain syscall on our descriptor.
        let r = unsafe { libc::ftruncate(a.fd().as_raw_fd(), 4096) };
        assert_ne!(r, 0, "shrinking a sealed memfd must fail");
        let wrong = a.fd().try_clone().unwrap();
        assert!(Shm::from_peer(wrong, 4096).is_err());
    }

    #[test]
    fn unsealed_fd_is_refused() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(4096).unwrap();
        assert!(Shm::from_peer(OwnedFd::from(f), 4096).is_err());
    }
}
