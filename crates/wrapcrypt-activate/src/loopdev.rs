//! Loop devices: attach a file with LOOP_CONFIGURE, detach with LOOP_CLR_FD.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device.
#[derive(Debug)]
pub(crate) struct Attached {
    /// `/dev/loopN`.
    pub(crate) path: PathBuf,
    /// Whether the kernel does direct I/O to the backing file.
    pub(crate) direct_io: bool,
}

fn sys_dir(dev: &Path) -> PathBuf {
    Path::new("/sys/block").join(dev.file_name().unwrap_or_default())
}

/// The backing file the kernel records for `dev`, if it is attached.
pub(crate) fn backing_file(dev: &Path) -> Option<PathBuf> {
    let s = fs::read_to_string(sys_dir(dev).join("loop/backing_file")).ok()?;
    Some(PathBuf::from(s.trim_end_matches('\n')))
}

/// Creates `/dev/loopN` if no device manager did (containers, minimal VMs).
fn ensure_node(index: u32) -> io::Result<PathBuf> {
    let path = PathBuf::from(format!("/dev/loop{index}"));
    if fs::metadata(&path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
    {
        return Ok(path);
    }
    let devno = fs::read_to_string(format!("/sys/block/loop{index}/dev"))?;
    let (maj, min) = devno
        .trim()
        .split_once(':')
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let (maj, min): (u32, u32) = (
        maj.parse()
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        min.parse()
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
    );
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: valid path; creates a device node.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o660, libc::makedev(maj, min)) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    Ok(path)
}

/// Attaches `file` to a free loop device with the given logical block size,
/// asking for direct I/O (and read-only when `read_only`).
pub(crate) fn attach(
    file: &File,
    block_size: u32,
    read_only: bool,
    label: &str,
) -> io::Result<Attached> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")?;
    let mut flags = LO_FLAGS_DIRECT_IO;
    if read_only {
        flags |= LO_FLAGS_READ_ONLY;
    }
    let mut name = [0u8; 64];
    let l = label.len().min(63);
    name[..l].copy_from_slice(&label.as_bytes()[..l]);
    let mut last = io::Error::from_raw_os_error(libc::EBUSY);
    // Another process may grab the free device between GET_FREE and CONFIGURE.
    for _ in 0..32 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument.
        let idx = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if idx < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = ensure_node(idx as u32)?;
        let dev = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)?;
        let cfg = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: flags,
                lo_file_name: name,
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a struct loop_config.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg) } == 0 {
            let dio = fs::read_to_string(sys_dir(&path).join("loop/dio"))
                .map(|s| s.trim() == "1")
                .unwrap_or(false);
            return Ok(Attached {
                path,
                direct_io: dio,
            });
        }
        last = io::Error::last_os_error();
        if last.raw_os_error() != Some(libc::EBUSY) {
            return Err(last);
        }
    }
    Err(last)
}

/// Whether the device is mounted or otherwise held exclusively.
pub(crate) fn is_claimed(dev: &Path) -> bool {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(dev)
    {
        Ok(_) => false,
        Err(e) => e.raw_os_error() == Some(libc::EBUSY),
    }
}

/// Flushes and detaches `dev` if it is still backed by `expected`.
///
/// Returns `Err(EBUSY)` when the device is mounted or held exclusively.
/// Other openers delay the detach until they close (the kernel turns it
/// into auto-clear); we wait up to `wait` for it.
pub(crate) fn detach(dev: &Path, expected: &Path, wait: std::time::Duration) -> io::Result<()> {
    if backing_file(dev).as_deref() != Some(expected) {
        return Ok(());
    }
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(dev)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    // Flush dirty buffered pages of the block device through the server;
    // an error here (dead server) must not block the detach.
    let _ = f.sync_all();
    // SAFETY: LOOP_CLR_FD takes no argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD, 0) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENXIO) {
            return Err(e);
        }
    }
    drop(f);
    let until = std::time::Instant::now() + wait;
    while backing_file(dev).is_some() {
        if std::time::Instant::now() > until {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}
