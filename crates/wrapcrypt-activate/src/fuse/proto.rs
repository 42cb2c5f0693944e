//! The FUSE kernel protocol structures this server speaks (protocol 7.x,
//! native byte order), written from the layout in `<linux/fuse.h>`.

/// Protocol major version.
pub const KERNEL_VERSION: u32 = 7;
/// Highest minor version whose `fuse_init_out` layout we send (64 bytes).
pub const KERNEL_MINOR_VERSION: u32 = 38;
/// Oldest minor with `max_pages` (needed for 1 MiB requests).
pub const MIN_MINOR_VERSION: u32 = 28;

pub const FUSE_ROOT_ID: u64 = 1;

// Opcodes.
pub const LOOKUP: u32 = 1;
pub const FORGET: u32 = 2;
pub const GETATTR: u32 = 3;
pub const SETATTR: u32 = 4;
pub const OPEN: u32 = 14;
pub const READ: u32 = 15;
pub const WRITE: u32 = 16;
pub const STATFS: u32 = 17;
pub const RELEASE: u32 = 18;
pub const FSYNC: u32 = 20;
pub const FLUSH: u32 = 25;
pub const INIT: u32 = 26;
pub const OPENDIR: u32 = 27;
pub const READDIR: u32 = 28;
pub const RELEASEDIR: u32 = 29;
pub const FSYNCDIR: u32 = 30;
pub const ACCESS: u32 = 34;
pub const INTERRUPT: u32 = 36;
pub const DESTROY: u32 = 38;
pub const BATCH_FORGET: u32 = 42;
pub const FALLOCATE: u32 = 43;

// INIT flags.
pub const FUSE_ASYNC_READ: u32 = 1 << 0;
pub const FUSE_BIG_WRITES: u32 = 1 << 5;
pub const FUSE_ASYNC_DIO: u32 = 1 << 15;
pub const FUSE_MAX_PAGES: u32 = 1 << 22;
/// `flags2` is valid (both directions).
pub const FUSE_INIT_EXT: u32 = 1 << 30;
/// `FUSE_OVER_IO_URING` (flag bit 41) as its bit in `flags2`.
pub const FUSE_OVER_IO_URING2: u32 = 1 << (41 - 32);

// OPEN reply flags.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
pub const FOPEN_PARALLEL_DIRECT_WRITES: u32 = 1 << 6;

// SETATTR valid bits we accept as no-ops or check.
pub const FATTR_SIZE: u32 = 1 << 3;

/// `struct fuse_in_header`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub total_extlen: u16,
    pub padding: u16,
}

/// `struct fuse_out_header`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OutHeader {
    pub len: u32,
    pub error: i32,
    pub unique: u64,
}

/// `struct fuse_init_in` (the first 16 bytes are all older kernels send).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InitIn {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u32,
}

/// `struct fuse_init_out`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InitOut {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u32,
    pub max_background: u16,
    pub congestion_threshold: u16,
    pub max_write: u32,
    pub time_gran: u32,
    pub max_pages: u16,
    pub map_alignment: u16,
    pub flags2: u32,
    pub unused: [u32; 7],
}

/// `struct fuse_attr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    pub flags: u32,
}

/// `struct fuse_entry_out`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EntryOut {
    pub nodeid: u64,
    pub generation: u64,
    pub entry_valid: u64,
    pub attr_valid: u64,
    pub entry_valid_nsec: u32,
    pub attr_valid_nsec: u32,
    pub attr: Attr,
}

/// `struct fuse_attr_out`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AttrOut {
    pub attr_valid: u64,
    pub attr_valid_nsec: u32,
    pub dummy: u32,
    pub attr: Attr,
}

/// `struct fuse_open_in`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenIn {
    pub flags: u32,
    pub open_flags: u32,
}

/// `struct fuse_open_out`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOut {
    pub fh: u64,
    pub open_flags: u32,
    pub padding: u32,
}

/// `struct fuse_read_in` and `struct fuse_write_in` share one layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RwIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub flags_rw: u32,
    pub lock_owner: u64,
    pub flags: u32,
    pub padding: u32,
}

/// `struct fuse_write_out`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOut {
    pub size: u32,
    pub padding: u32,
}

/// `struct fuse_fallocate_in`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FallocateIn {
    pub fh: u64,
    pub offset: u64,
    pub length: u64,
    pub mode: u32,
    pub padding: u32,
}

/// `struct fuse_setattr_in`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SetattrIn {
    pub valid: u32,
    pub padding: u32,
    pub fh: u64,
    pub size: u64,
    pub rest: [u64; 8],
}

/// `struct fuse_kstatfs` inside `fuse_statfs_out`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StatfsOut {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
    pub padding: u32,
    pub spare: [u32; 6],
}

/// Size in bytes of the in-header plus `fuse_write_in`: where WRITE data starts.
pub const WRITE_DATA_OFFSET: usize = size_of::<InHeader>() + size_of::<RwIn>();

/// Plain-old-data protocol structs: any byte pattern is a valid value.
///
/// # Safety
/// Implementors are `#[repr(C)]` structs of integers without padding holes
/// that matter for reading.
pub unsafe trait Pod: Copy + Default {}
unsafe impl Pod for InHeader {}
unsafe impl Pod for OutHeader {}
unsafe impl Pod for InitIn {}
unsafe impl Pod for InitOut {}
unsafe impl Pod for Attr {}
unsafe impl Pod for EntryOut {}
unsafe impl Pod for AttrOut {}
unsafe impl Pod for OpenIn {}
unsafe impl Pod for OpenOut {}
unsafe impl Pod for RwIn {}
unsafe impl Pod for WriteOut {}
unsafe impl Pod for FallocateIn {}
unsafe impl Pod for SetattrIn {}
unsafe impl Pod for StatfsOut {}

/// Reads a protocol struct from the start of `buf`, or `None` if too short.
pub fn read<T: Pod>(buf: &[u8]) -> Option<T> {
    if buf.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is Pod, so any bytes are a valid T.
    Some(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

/// The bytes of a protocol struct, for sending.
pub fn bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: T is a repr(C) integer struct; reading its bytes is defined.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel_abi() {
        assert_eq!(size_of::<InHeader>(), 40);
        assert_eq!(size_of::<OutHeader>(), 16);
        assert_eq!(size_of::<InitOut>(), 64);
        assert_eq!(size_of::<Attr>(), 88);
        assert_eq!(size_of::<EntryOut>(), 128);
        assert_eq!(size_of::<AttrOut>(), 104);
        assert_eq!(size_of::<OpenOut>(), 16);
        assert_eq!(size_of::<RwIn>(), 40);
        assert_eq!(size_of::<FallocateIn>(), 32);
        assert_eq!(size_of::<SetattrIn>(), 88);
        assert_eq!(size_of::<StatfsOut>(), 80);
        assert_eq!(WRITE_DATA_OFFSET, 80);
    }

    #[test]
    fn read_rejects_short_buffers() {
        assert!(read::<InHeader>(&[0u8; 39]).is_none());
        let mut b = [0u8; 40];
        b[4..8].copy_from_slice(&16u32.to_ne_bytes());
        assert_eq!(read::<InHeader>(&b).unwrap().opcode, 16);
    }
}
