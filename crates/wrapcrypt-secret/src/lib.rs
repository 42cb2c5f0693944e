#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

use zeroize::Zeroize;

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        4096
    } else {
        p as usize
    }
}

/// One private anonymous mapping, locked and excluded from core dumps.
struct Region {
    ptr: NonNull<u8>,
    map_len: usize,
    locked: bool,
}

impl Region {
    fn new(len: usize) -> Region {
        let ps = page_size();
        let map_len = len.max(1).div_ceil(ps) * ps;
        // SAFETY: anonymous private mapping with no address hint; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            // Allocation failure is treated like the global allocator does.
            std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(map_len, ps).expect("page layout"),
            );
        }
        // SAFETY: ptr/map_len describe the mapping just created.
        let locked = unsafe {
            libc::madvise(ptr, map_len, libc::MADV_DONTDUMP);
            libc::madvise(ptr, map_len, libc::MADV_WIPEONFORK);
            libc::mlock(ptr, map_len) == 0
        };
        Region {
            ptr: NonNull::new(ptr as *mut u8).expect("mmap returned null"),
            map_len,
            locked,
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping is owned by this Region and still valid.
        unsafe {
            let s = std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.map_len);
            s.zeroize();
            if self.locked {
                libc::munlock(self.ptr.as_ptr() as *const libc::c_void, self.map_len);
            }
            libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.map_len);
        }
    }
}

// SAFETY: Region is a uniquely owned allocation.
unsafe impl Send for Region {}
// SAFETY: shared access only hands out shared slices.
unsafe impl Sync for Region {}

/// A secret byte string in locked, non-dumpable memory, zeroized on drop.
pub struct SecretBytes {
    region: Region,
    len: usize,
}

impl SecretBytes {
    /// A zero-filled secret of `len` bytes, to be filled in place.
    pub fn zeroed(len: usize) -> SecretBytes {
        SecretBytes {
            region: Region::new(len),
            len,
        }
    }

    /// Copies `src` into a new secret. The caller remains responsible for
    /// zeroizing `src`.
    pub fn copy_from(src: &[u8]) -> SecretBytes {
        let mut s = SecretBytes::zeroed(src.len());
        s.expose_secret_mut().copy_from_slice(src);
        s
    }

    /// Moves a vector's content into a new secret and zeroizes the vector.
    pub fn take_vec(mut v: Vec<u8>) -> SecretBytes {
        let s = SecretBytes::copy_from(&v);
        v.zeroize();
        s
    }

    /// Random bytes from the kernel, generated directly in locked memory.
    pub fn random(len: usize) -> std::io::Result<SecretBytes> {
        let mut s = SecretBytes::zeroed(len);
        fill_random(s.expose_secret_mut())?;
        Ok(s)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shortens the secret (the dropped tail is zeroized).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            let l = self.len;
            self.expose_secret_mut()[len..l].zeroize();
            self.len = len;
        }
    }

    /// Whether `mlock` succeeded for this buffer.
    pub fn is_locked(&self) -> bool {
        self.region.locked
    }

    /// The secret bytes. Callers must not copy them into ordinary memory.
    pub fn expose_secret(&self) -> &[u8] {
        // SAFETY: the region holds at least len initialised bytes.
        unsafe { std::slice::from_raw_parts(self.region.ptr.as_ptr(), self.len) }
    }

    /// Mutable access for building the secret in place.
    pub fn expose_secret_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees uniqueness.
        unsafe { std::slice::from_raw_parts_mut(self.region.ptr.as_ptr(), self.len) }
    }

    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        ct_eq(self.expose_secret(), other)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED]; {} bytes)", self.len)
    }
}

/// A value of type `T` living in locked, non-dumpable memory. `T` must be
/// valid when all-zero (plain old data such as key schedules).
pub struct SecretBox<T> {
    region: Region,
    _t: PhantomData<T>,
}

/// Marker for types whose all-zero bit pattern is a valid value and which own
/// no heap memory, so they can live in a [`SecretBox`].
///
/// # Safety
/// Implementors guarantee that all-zero bytes are a valid `Self` and that
/// `Self` has no drop glue that frees memory.
pub unsafe trait Zeroable {}

// SAFETY: integers and arrays of them are valid when zero.
unsafe impl Zeroable for u8 {}
// SAFETY: as above.
unsafe impl Zeroable for u32 {}
// SAFETY: as above.
unsafe impl Zeroable for u64 {}
// SAFETY: as above.
unsafe impl Zeroable for u128 {}
// SAFETY: arrays of zeroable values are zeroable.
unsafe impl<T: Zeroable, const N: usize> Zeroable for [T; N] {}

impl<T: Zeroable> SecretBox<T> {
    /// An all-zero `T` in locked memory.
    pub fn new_zeroed() -> SecretBox<T> {
        assert!(std::mem::align_of::<T>() <= page_size());
        SecretBox {
            region: Region::new(std::mem::size_of::<T>()),
            _t: PhantomData,
        }
    }

    /// Builds the value in place; the closure gets the zeroed value.
    pub fn init_with_mut(f: impl FnOnce(&mut T)) -> SecretBox<T> {
        let mut b = SecretBox::new_zeroed();
        f(b.expose_secret_mut());
        b
    }

    /// Shared access to the secret value.
    pub fn expose_secret(&self) -> &T {
        // SAFETY: the region is page aligned, large enough and zero-valid.
        unsafe { &*(self.region.ptr.as_ptr() as *const T) }
    }

    /// Mutable access to the secret value.
    pub fn expose_secret_mut(&mut self) -> &mut T {
        // SAFETY: as above, unique through &mut self.
        unsafe { &mut *(self.region.ptr.as_ptr() as *mut T) }
    }

    /// Whether `mlock` succeeded.
    pub fn is_locked(&self) -> bool {
        self.region.locked
    }
}

impl<T> fmt::Debug for SecretBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox([REDACTED])")
    }
}

/// Fills `buf` from the kernel's CSPRNG (getrandom(2)).
pub fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: writes at most buf.len()-off bytes into buf.
        let r = unsafe {
            libc::getrandom(
                buf[off..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - off,
                0,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        off += r as usize;
    }
    Ok(())
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    // Prevent the compiler from short-circuiting on d.
    std::hint::black_box(d) == 0
}

/// Makes this process non-dumpable and non-ptraceable by other users, and
/// disables core files. Key-holding processes call this first.
pub fn harden_process() {
    // SAFETY: plain syscalls with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        let lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &lim);
    }
}

thread_local! {
    static STACK_PROTECTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread's stack `MADV_DONTDUMP` and locks it, once per
/// thread. Compiled crypto spills round keys and key words from registers
/// onto the stack; this keeps those spills out of core dumps and swap.
/// Cheap after the first call (a thread-local flag).
pub fn protect_thread_stack() {
    STACK_PROTECTED.with(|done| {
        if done.get() {
            return;
        }
        done.set(true);
        // SAFETY: pthread calls on the current thread with a zeroed attr
        // that is destroyed after use; madvise/mlock only change flags of
        // pages in the thread's own stack range.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                return;
            }
            let mut addr: *mut libc::c_void = std::ptr::null_mut();
            let mut size: libc::size_t = 0;
            let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
            libc::pthread_attr_destroy(&mut attr);
            if !ok || addr.is_null() || size == 0 {
                return;
            }
            // The main thread's reported range can include not-yet-mapped
            // pages; madvise still applies to the mapped part (ENOMEM for
            // the holes is expected and ignored). Pages the stack grows into
            // later join the same mapping and inherit the flag.
            libc::madvise(addr, size, libc::MADV_DONTDUMP);
            let ps = page_size();
            let sp = &size as *const _ as usize;
            let lo = (sp & !(ps - 1))
                .saturating_sub(64 * 1024)
                .max(addr as usize);
            let hi = addr as usize + size;
            libc::mlock(lo as *const libc::c_void, hi - lo);
        }
    });
}

/// Zeroes the SIMD registers (xmm0–xmm15 and their upper halves). AES-NI
/// code leaves round keys in them after it returns, and a core dump records
/// every thread's register state: call this after a batch of crypto.
#[inline(never)]
pub fn clear_vector_registers() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: only clears registers the asm declares as clobbered.
    unsafe {
        if std::arch::is_x86_feature_detected!("avx") {
            std::arch::asm!(
                "vzeroall",
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
                out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
                options(nostack, preserves_flags)
            );
        } else {
            std::arch::asm!(
                "xorps xmm0, xmm0", "xorps xmm1, xmm1", "xorps xmm2, xmm2", "xorps xmm3, xmm3",
                "xorps xmm4, xmm4", "xorps xmm5, xmm5", "xorps xmm6, xmm6", "xorps xmm7, xmm7",
                "xorps xmm8, xmm8", "xorps xmm9, xmm9", "xorps xmm10, xmm10", "xorps xmm11, xmm11",
                "xorps xmm12, xmm12", "xorps xmm13, xmm13", "xorps xmm14, xmm14", "xorps xmm15, xmm15",
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
                out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
                options(nostack, preserves_flags)
            );
        }
    }
}

/// Locks all current and future pages of this process (key custodian).
pub fn lock_all_memory() -> std::io::Result<()> {
    // SAFETY: plain syscall.
    let r = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_roundtrip_and_redacted_debug() {
        let mut s = SecretBytes::copy_from(b"hunter2hunter2");
        assert_eq!(s.expose_secret(), b"hunter2hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        s.truncate(7);
        assert_eq!(s.expose_secret(), b"hunter2");
        assert!(s.ct_eq(b"hunter2"));
        assert!(!s.ct_eq(b"hunter3"));
    }

    #[test]
    fn box_builds_in_place() {
        let b: SecretBox<[u32; 60]> = SecretBox::init_with_mut(|k: &mut [u32; 60]| k[59] = 7);
        assert_eq!(b.expose_secret()[59], 7);
        assert_eq!(b.expose_secret()[0], 0);
    }

    #[test]
    fn random_is_not_zero() {
        let r = SecretBytes::random(64).unwrap();
        assert!(r.expose_secret().iter().any(|&b| b != 0));
    }
}
