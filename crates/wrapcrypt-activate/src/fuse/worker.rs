//! One worker: reads requests from its `/dev/fuse` fd and answers them.

use super::proto::{self, *};
use super::{FILE_NAME, MAX_IO};
use crate::volume::{AlignedBuf, Errno, Volume};
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

pub(crate) const FILE_INO: u64 = 2;
/// Attributes never change behind the kernel's back: cache them long.
const TTL_SECS: u64 = 3600;
/// Async direct I/O requests the kernel may have in flight.
const MAX_BACKGROUND: u16 = 64;

/// The file system state shared by all workers.
pub(crate) struct FileServer {
    pub(super) vol: Volume,
    /// Negotiated protocol minor, 0 until INIT.
    minor: AtomicU32,
    started: u64,
    /// Offer FUSE over io_uring in the INIT reply when the kernel does.
    pub(crate) want_uring: AtomicBool,
    /// The kernel offered FUSE_OVER_IO_URING in INIT.
    pub(crate) uring_offered: AtomicBool,
    /// Our INIT reply accepted it: the kernel now waits for the ring.
    pub(crate) uring_accepted: AtomicBool,
    /// The INIT reply has been written.
    pub(crate) init_done: AtomicBool,
}

impl FileServer {
    pub(crate) fn new(vol: Volume) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        FileServer {
            vol,
            minor: AtomicU32::new(0),
            started,
            want_uring: AtomicBool::new(false),
            uring_offered: AtomicBool::new(false),
            uring_accepted: AtomicBool::new(false),
            init_done: AtomicBool::new(false),
        }
    }

    /// The volume served.
    pub(crate) fn volume(&self) -> &Volume {
        &self.vol
    }

    /// Minor protocol version the kernel agreed on (0 before INIT).
    pub(crate) fn protocol_minor(&self) -> u32 {
        self.minor.load(Ordering::Acquire)
    }

    fn attr(&self, ino: u64) -> Attr {
        let t = self.started;
        let mut a = Attr {
            ino,
            atime: t,
            mtime: t,
            ctime: t,
            uid: 0,
            gid: 0,
            ..Attr::default()
        };
        if ino == FUSE_ROOT_ID {
            a.mode = libc::S_IFDIR | 0o755;
            a.nlink = 2;
            a.blksize = 4096;
        } else {
            let perm = if self.vol.read_only() { 0o400 } else { 0o600 };
            a.mode = libc::S_IFREG | perm;
            a.nlink = 1;
            a.size = self.vol.size();
            a.blocks = self.vol.size() / 512;
            a.blksize = self.vol.sector_size().max(4096) as u32;
        }
        a
    }
}

/// Per-worker buffers.
pub(super) struct Bufs {
    /// Request header area: exactly header + `fuse_write_in`, so WRITE
    /// payloads land page-aligned in `data`.
    pub(super) head: [u8; WRITE_DATA_OFFSET],
    pub(super) data: AlignedBuf,
    pub(super) scratch: Option<AlignedBuf>,
}

/// Where a reply goes: written to `/dev/fuse`, or left in an io_uring
/// entry's buffers for its COMMIT_AND_FETCH.
pub(super) enum Chan<'a> {
    Dev(&'a File),
    Ring(&'a Pending),
}

/// What a handler replied, kept until the COMMIT (the READ data may still be
/// borrowed from the payload buffer while the reply is recorded).
pub(super) struct Pending {
    pub(super) payload: *const u8,
    pub(super) payload_len: usize,
    pub(super) state: RefCell<Option<(u64, Errno, Body)>>,
}

pub(super) enum Body {
    /// Already in the payload buffer at this offset.
    InPayload(usize, usize),
    Bytes(Vec<u8>),
}

impl Pending {
    pub(super) fn set(&self, unique: u64, errno: Errno, parts: &[&[u8]]) {
        let body = if errno != 0 {
            Body::Bytes(Vec::new())
        } else if let [p] = parts {
            let off = (p.as_ptr() as usize).wrapping_sub(self.payload as usize);
            if off <= self.payload_len && p.len() <= self.payload_len - off {
                Body::InPayload(off, p.len())
            } else {
                Body::Bytes(p.to_vec())
            }
        } else {
            Body::Bytes(parts.concat())
        };
        *self.state.borrow_mut() = Some((unique, errno, body));
    }
}

/// Serves requests on `dev` until the connection goes away (unmount/abort).
pub(crate) fn serve(file: File, fs: &FileServer) -> io::Result<()> {
    let dev = &Chan::Dev(&file);
    let len = fs.vol.buf_len(MAX_IO);
    let mut b = Bufs {
        head: [0; WRITE_DATA_OFFSET],
        data: fs.vol.alloc_buf(len),
        scratch: None,
    };
    loop {
        let iov = [
            libc::iovec {
                iov_base: b.head.as_mut_ptr().cast(),
                iov_len: b.head.len(),
            },
            libc::iovec {
                iov_base: b.data.as_mut_ptr().cast(),
                iov_len: b.data.len(),
            },
        ];
        // SAFETY: both iovecs point into buffers we own exclusively.
        let n = unsafe { libc::readv(file.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The request was interrupted before we read it, or a signal.
                Some(libc::ENOENT) | Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
                Some(libc::ENODEV) => return Ok(()),
                _ => return Err(e),
            }
        }
        let n = n as usize;
        let Some(h) = proto::read::<InHeader>(&b.head[..n.min(WRITE_DATA_OFFSET)]) else {
            continue;
        };
        if h.opcode == WRITE && n >= WRITE_DATA_OFFSET {
            let wi = proto::read::<RwIn>(&b.head[size_of::<InHeader>()..]).unwrap_or_default();
            let size = (wi.size as usize).min(n - WRITE_DATA_OFFSET);
            write(dev, fs, &h, &wi, size, &mut b);
            continue;
        }
        // Every other request is small: make it contiguous.
        let mut msg = Vec::with_capacity(n);
        msg.extend_from_slice(&b.head[..n.min(WRITE_DATA_OFFSET)]);
        if n > WRITE_DATA_OFFSET {
            msg.extend_from_slice(&b.data[..n - WRITE_DATA_OFFSET]);
        }
        let arg = &msg[size_of::<InHeader>()..];
        dispatch(dev, fs, &h, arg, &mut b);
    }
}

/// WRITE of `size` bytes that lie at the start of `b.data`.
pub(super) fn write(
    dev: &Chan,
    fs: &FileServer,
    h: &InHeader,
    wi: &RwIn,
    size: usize,
    b: &mut Bufs,
) {
    let len = b.data.len();
    let res = if h.nodeid != FILE_INO {
        Err(libc::EISDIR)
    } else {
        let scratch = b.scratch.get_or_insert_with(|| fs.vol.alloc_buf(len));
        fs.vol.write(wi.offset, &mut b.data[..size], scratch)
    };
    match res {
        Ok(done) => reply(
            dev,
            h.unique,
            0,
            &[bytes(&WriteOut {
                size: done as u32,
                padding: 0,
            })],
        ),
        Err(e) => reply(dev, h.unique, e, &[]),
    }
}

pub(super) fn dispatch(dev: &Chan, fs: &FileServer, h: &InHeader, arg: &[u8], b: &mut Bufs) {
    let u = h.unique;
    let ino = h.nodeid;
    match h.opcode {
        INIT => init(dev, fs, u, arg),
        LOOKUP => {
            let name = arg.split(|&c| c == 0).next().unwrap_or(&[]);
            if ino == FUSE_ROOT_ID && name == FILE_NAME.as_bytes() {
                let e = EntryOut {
                    nodeid: FILE_INO,
                    generation: 1,
                    entry_valid: TTL_SECS,
                    attr_valid: TTL_SECS,
                    attr: fs.attr(FILE_INO),
                    ..EntryOut::default()
                };
                reply(dev, u, 0, &[bytes(&e)]);
            } else {
                reply(dev, u, libc::ENOENT, &[]);
            }
        }
        GETATTR | SETATTR => {
            if h.opcode == SETATTR {
                let s = proto::read::<SetattrIn>(arg).unwrap_or_default();
                if s.valid & FATTR_SIZE != 0 && (ino != FILE_INO || s.size != fs.vol.size()) {
                    return reply(dev, u, libc::EPERM, &[]);
                }
            }
            let a = AttrOut {
                attr_valid: TTL_SECS,
                attr: fs.attr(ino),
                ..AttrOut::default()
            };
            reply(dev, u, 0, &[bytes(&a)]);
        }
        OPEN => {
            let o = proto::read::<OpenIn>(arg).unwrap_or_default();
            if ino != FILE_INO {
                return reply(dev, u, libc::EISDIR, &[]);
            }
            if fs.vol.read_only() && (o.flags as i32 & libc::O_ACCMODE) != libc::O_RDONLY {
                return reply(dev, u, libc::EROFS, &[]);
            }
            // Direct I/O always: no page cache of plaintext in the kernel,
            // and parallel writes from the loop driver's workers.
            let out = OpenOut {
                fh: 0,
                open_flags: FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES,
                padding: 0,
            };
            reply(dev, u, 0, &[bytes(&out)]);
        }
        OPENDIR => reply(dev, u, 0, &[bytes(&OpenOut::default())]),
        READ => {
            let r = proto::read::<RwIn>(arg).unwrap_or_default();
            if ino != FILE_INO {
                return reply(dev, u, libc::EISDIR, &[]);
            }
            match fs
                .vol
                .read(r.offset, (r.size as usize).min(MAX_IO), &mut b.data)
            {
                Ok(range) => reply(dev, u, 0, &[&b.data[range]]),
                Err(e) => reply(dev, u, e, &[]),
            }
        }
        READDIR => {
            let r = proto::read::<RwIn>(arg).unwrap_or_default();
            let out = readdir(r.offset, r.size as usize);
            reply(dev, u, 0, &[&out]);
        }
        STATFS => {
            let s = StatfsOut {
                bsize: 4096,
                frsize: 4096,
                namelen: 255,
                ..StatfsOut::default()
            };
            reply(dev, u, 0, &[bytes(&s)]);
        }
        FLUSH | FSYNC => {
            let rc = if ino == FILE_INO {
                fs.vol.sync().err().unwrap_or(0)
            } else {
                0
            };
            reply(dev, u, rc, &[]);
        }
        FALLOCATE => {
            let f = proto::read::<FallocateIn>(arg).unwrap_or_default();
            let rc = fallocate(fs, ino, &f, b).err().unwrap_or(0);
            reply(dev, u, rc, &[]);
        }
        RELEASE | RELEASEDIR | FSYNCDIR | ACCESS | DESTROY => reply(dev, u, 0, &[]),
        // No reply expected; our requests finish quickly, so interrupts are moot.
        FORGET | BATCH_FORGET | INTERRUPT => {}
        _ => reply(dev, u, libc::ENOSYS, &[]),
    }
}

fn init(dev: &Chan, fs: &FileServer, u: u64, arg: &[u8]) {
    let Some(i) = proto::read::<InitIn>(arg) else {
        return reply(dev, u, libc::EINVAL, &[]);
    };
    if i.major != KERNEL_VERSION || i.minor < MIN_MINOR_VERSION {
        // Record what the kernel offered so the caller can report it.
        fs.minor.store(i.minor.max(1), Ordering::Release);
        return reply(dev, u, libc::EPROTO, &[]);
    }
    let minor = i.minor.min(KERNEL_MINOR_VERSION);
    let want = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_ASYNC_DIO | FUSE_MAX_PAGES;
    let out = InitOut {
        major: KERNEL_VERSION,
        minor,
        max_readahead: i.max_readahead,
        flags: i.flags & want,
        max_background: MAX_BACKGROUND,
        congestion_threshold: MAX_BACKGROUND * 3 / 4,
        max_write: MAX_IO as u32,
        time_gran: 1,
        max_pages: (MAX_IO / 4096) as u16,
        ..InitOut::default()
    };
    let mut out = out;
    // flags2 (bits 32..63) is at offset 16 of fuse_init_in, valid with INIT_EXT.
    let flags2 = arg
        .get(16..20)
        .map(|f| u32::from_ne_bytes(f.try_into().expect("4 bytes")))
        .unwrap_or(0);
    let offered = i.flags & FUSE_INIT_EXT != 0 && flags2 & FUSE_OVER_IO_URING2 != 0;
    fs.uring_offered.store(offered, Ordering::Release);
    if offered && fs.want_uring.load(Ordering::Acquire) {
        out.flags |= FUSE_INIT_EXT;
        out.flags2 = FUSE_OVER_IO_URING2;
        fs.uring_accepted.store(true, Ordering::Release);
    }
    fs.minor.store(minor, Ordering::Release);
    reply(dev, u, 0, &[bytes(&out)]);
    fs.init_done.store(true, Ordering::Release);
}

fn fallocate(fs: &FileServer, ino: u64, f: &FallocateIn, b: &mut Bufs) -> Result<(), Errno> {
    if ino != FILE_INO {
        return Err(libc::EISDIR);
    }
    let mode = f.mode as i32;
    let zeroing = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
    if mode & zeroing != 0 && mode & !(zeroing | libc::FALLOC_FL_KEEP_SIZE) == 0 {
        let len = b.data.len();
        let scratch = b.scratch.get_or_insert_with(|| fs.vol.alloc_buf(len));
        return fs.vol.zero_range(f.offset, f.length, &mut b.data, scratch);
    }
    if mode & !libc::FALLOC_FL_KEEP_SIZE == 0 && f.offset.saturating_add(f.length) <= fs.vol.size()
    {
        // Plain preallocation inside the file: the space exists already.
        return Ok(());
    }
    Err(libc::EOPNOTSUPP)
}

/// `.`, `..` and the volume, as `fuse_dirent` records from `offset` on.
fn readdir(offset: u64, size: usize) -> Vec<u8> {
    let entries: [(u64, &str, u32); 3] = [
        (FUSE_ROOT_ID, ".", libc::DT_DIR as u32),
        (FUSE_ROOT_ID, "..", libc::DT_DIR as u32),
        (FILE_INO, FILE_NAME, libc::DT_REG as u32),
    ];
    let mut out = Vec::new();
    for (i, (ino, name, typ)) in entries.iter().enumerate().skip(offset as usize) {
        let rec = (24 + name.len()).div_ceil(8) * 8;
        if out.len() + rec > size {
            break;
        }
        out.extend_from_slice(&ino.to_ne_bytes());
        out.extend_from_slice(&(i as u64 + 1).to_ne_bytes());
        out.extend_from_slice(&(name.len() as u32).to_ne_bytes());
        out.extend_from_slice(&typ.to_ne_bytes());
        out.extend_from_slice(name.as_bytes());
        out.resize(out.len() + rec - 24 - name.len(), 0);
    }
    out
}

/// Sends one reply; a vanished request (ENOENT) or connection is not our problem.
fn reply(dev: &Chan, unique: u64, errno: Errno, parts: &[&[u8]]) {
    let dev = match dev {
        Chan::Dev(f) => f,
        Chan::Ring(p) => return p.set(unique, errno, parts),
    };
    let body: usize = if errno == 0 {
        parts.iter().map(|p| p.len()).sum()
    } else {
        0
    };
    let hdr = OutHeader {
        len: (size_of::<OutHeader>() + body) as u32,
        error: -errno,
        unique,
    };
    let mut iov = vec![libc::iovec {
        iov_base: bytes(&hdr).as_ptr() as *mut _,
        iov_len: size_of::<OutHeader>(),
    }];
    if errno == 0 {
        iov.extend(parts.iter().map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        }));
    }
    // SAFETY: the iovecs point to live buffers for the duration of the call;
    // the kernel only reads them.
    unsafe { libc::writev(dev.as_raw_fd(), iov.as_ptr(), iov.len() as i32) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readdir_lists_three_entries_and_resumes_at_offset() {
        let all = readdir(0, 4096);
        assert_eq!(all.len(), 32 + 32 + 32);
        assert_eq!(&all[24..25], b".");
        assert_eq!(&all[64 + 24..64 + 30], b"volume");
        let rest = readdir(2, 4096);
        assert_eq!(rest, all[64..]);
        assert!(readdir(0, 40).len() == 32);
        assert!(readdir(3, 4096).is_empty());
    }
}
