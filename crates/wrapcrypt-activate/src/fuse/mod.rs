//! A small FUSE file system serving one file, spoken directly over
//! `/dev/fuse` (no libfuse): mount by `mount(2)`, one worker thread per
//! cloned device fd.

pub(crate) mod proto;
pub(crate) mod uring;
mod worker;

pub(crate) use worker::{serve, FileServer};

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// The one file in the mount.
pub const FILE_NAME: &str = "volume";

/// Largest READ/WRITE payload we negotiate (64 pages). The kernel splits a
/// larger direct I/O into requests of this size and sends them at once
/// (async direct I/O), so one 1 MiB loop request keeps four workers busy:
/// while some wait for the backing, others run the cipher. With 1 MiB
/// requests (two per MiB as the loop driver splits them) the disk idled
/// during the crypto; 256 KiB measured faster for both aes and cipher_null
/// (scripts/bench.d/NOTES.md), and each worker's buffers shrink fourfold.
pub(crate) const MAX_IO: usize = 256 * 1024;

/// `FUSE_NOTIFY_INVAL_INODE` (fuse_notify_code).
const NOTIFY_INVAL_INODE: i32 = 2;

/// Tells the kernel that the served file's attributes (its size) changed:
/// a notification (`unique` 0) invalidating the inode's cached attributes,
/// and no page cache range (offset -1; the file is direct I/O only). The
/// next stat asks us again. A kernel that never looked the file up has
/// nothing cached (ENOENT): that is success too.
pub(crate) fn notify_inval_file(dev: &File) -> io::Result<()> {
    use std::io::Write;
    let mut msg = Vec::with_capacity(40);
    msg.extend_from_slice(&40u32.to_le_bytes());
    msg.extend_from_slice(&NOTIFY_INVAL_INODE.to_le_bytes());
    msg.extend_from_slice(&0u64.to_le_bytes());
    msg.extend_from_slice(&worker::FILE_INO.to_le_bytes());
    msg.extend_from_slice(&(-1i64).to_le_bytes());
    msg.extend_from_slice(&0i64.to_le_bytes());
    match (&*dev).write(&msg) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `_IOR(229, 0, uint32_t)`.
const FUSE_DEV_IOC_CLONE: libc::c_ulong = 0x8004_e500;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens `/dev/fuse` and mounts a `fuse.wrapcrypt` file system on `mountpoint`.
pub(crate) fn mount(mountpoint: &Path, source: &str) -> io::Result<File> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")?;
    let opts = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,default_permissions,max_read={}",
        dev.as_raw_fd(),
        MAX_IO
    );
    let src = CString::new(source).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let target = cstr(mountpoint)?;
    let fstype = c"fuse.wrapcrypt";
    let data = CString::new(opts).expect("no NUL");
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_NOATIME;
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(dev)
}

/// A second `/dev/fuse` fd on the same connection, so another thread can
/// read requests without contending on one fd.
pub(crate) fn clone_fd(session: &File) -> io::Result<File> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")?;
    let mut src: u32 = session.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the source fd).
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), FUSE_DEV_IOC_CLONE, &mut src) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(dev)
}

/// Unmounts; `lazy` detaches even while busy. Not mounted is success.
pub(crate) fn unmount(mountpoint: &Path, lazy: bool) -> io::Result<()> {
    let target = cstr(mountpoint)?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 } | libc::UMOUNT_NOFOLLOW;
    // SAFETY: valid C string.
    if unsafe { libc::umount2(target.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
        _ => Err(e),
    }
}

/// Whether `mountpoint` is a mount point (its device differs from its parent's).
pub(crate) fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mountpoint.as_os_str().as_bytes();
    mounts.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(|m| m.as_bytes() == want)
            .unwrap_or(false)
    })
}
