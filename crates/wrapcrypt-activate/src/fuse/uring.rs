//! FUSE over io_uring (kernel 6.14+, `FUSE_OVER_IO_URING`): ring threads
//! that receive requests in entries registered once with the kernel and
//! answer them with `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`.
//!
//! One thread per entry, each with its own small ring: the request handling
//! blocks on backing I/O like a `/dev/fuse` worker, so an entry per thread
//! gives the same queue depth as today's worker pool. The entry's payload
//! buffer is the thread's data buffer: WRITE data arrives in it and is
//! encrypted there, READ data is decrypted there and committed from there.
//! Interface facts: docs/fuse-io-uring.md (read from include/uapi/linux/fuse.h
//! and fs/fuse/dev_uring.c; no kernel code copied).

use super::proto::{self, *};
use super::worker::{self, Body, Bufs, Chan, Pending};
use super::{FileServer, MAX_IO};
use crate::volume::AlignedBuf;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::cell::RefCell;
use std::io;
use std::os::unix::io::RawFd;
use std::sync::mpsc::Sender;

/// `FUSE_IO_URING_CMD_REGISTER`.
const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`.
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// `sizeof(struct fuse_uring_req_header)`: in/out header 128, op header 128,
/// `fuse_uring_ent_in_out` 32.
const HEADER_LEN: usize = 288;
const OP_IN: usize = 128;
const ENT_IN_OUT: usize = 256;
/// Byte offset of `len` in a kernel `io_uring_sqe`.
const SQE_LEN_OFFSET: usize = 24;

/// The module parameter that lets servers negotiate io_uring.
pub(crate) const ENABLE_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// Number of FUSE queues the kernel expects: one per possible CPU.
pub(crate) fn possible_cpus() -> usize {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let n: usize = s
        .trim()
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap_or(0) + 1 - a.parse::<usize>().unwrap_or(0),
            None => 1,
        })
        .sum();
    n.max(1)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// A `fuse_uring_cmd_req` in the SQE command area.
fn cmd(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut c = [0u8; 80];
    c[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    c[16..18].copy_from_slice(&qid.to_ne_bytes());
    c
}

fn sqe_with_len(mut e: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // SAFETY: Entry128 is repr(C) starting with the kernel's io_uring_sqe,
    // whose `len` is the u32 at byte 24 (the crate has no setter for it on
    // URING_CMD); checked by `sqe_len_offset` below.
    unsafe {
        let p = (&mut e as *mut squeue::Entry128).cast::<u8>();
        std::ptr::write_unaligned(p.add(SQE_LEN_OFFSET).cast::<u32>(), len);
    }
    e
}

/// Whether this process can create a 128-byte-SQE ring. Checked before the
/// mount: once our INIT reply accepted io_uring, the kernel blocks requests
/// until the ring is ready, so ring creation must not be what fails later.
pub(crate) fn probe() -> Result<(), String> {
    IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .build(4)
        .map(drop)
        .map_err(|e| format!("cannot create an io_uring: {e}"))
}

/// Test hook: `WRAPCRYPT_FUSE_URING_FAULT=short-payload` registers a
/// payload buffer smaller than the kernel requires, so REGISTER fails and
/// the fallback to `/dev/fuse` can be tested on a kernel that has io_uring.
fn payload_len(len: usize) -> usize {
    match std::env::var("WRAPCRYPT_FUSE_URING_FAULT").as_deref() {
        Ok("short-payload") => 4096,
        _ => len,
    }
}

/// Registers one entry for queue `qid` on `dev_fd` (a fd of the mounted
/// connection) and serves requests in it until the connection ends.
/// `registered` gets `Ok` once the kernel accepted the entry, or the errno.
pub(crate) fn serve(
    dev_fd: RawFd,
    qid: u16,
    fs: &FileServer,
    registered: Sender<Result<(), i32>>,
) -> io::Result<()> {
    let fail = |e: io::Error| {
        let _ = registered.send(Err(e.raw_os_error().unwrap_or(libc::EIO)));
        e
    };
    let mut ring: IoUring<squeue::Entry128, cqueue::Entry> =
        IoUring::builder().build(4).map_err(fail)?;
    ring.submitter().register_files(&[dev_fd]).map_err(fail)?;
    let len = fs.vol.buf_len(MAX_IO);
    let mut header = AlignedBuf::new(4096);
    let mut b = Bufs {
        head: [0; WRITE_DATA_OFFSET],
        data: fs.vol.alloc_buf(len),
        scratch: None,
    };
    let iov = Box::new([
        libc::iovec {
            iov_base: header.as_mut_ptr().cast(),
            iov_len: HEADER_LEN,
        },
        libc::iovec {
            iov_base: b.data.as_mut_ptr().cast(),
            iov_len: payload_len(b.data.len()),
        },
    ]);
    let register = sqe_with_len(
        opcode::UringCmd80::new(types::Fixed(0), CMD_REGISTER)
            .cmd(cmd(0, qid))
            .addr(Some(iov.as_ptr() as u64))
            .build()
            .user_data(1),
        2,
    );
    // An error from REGISTER completes at once (inside the submit); an
    // accepted entry completes only when a request arrives.
    loop {
        // SAFETY: the iovecs and both buffers live until this function
        // returns, which is after the kernel released the entry (its last
        // CQE is ENOTCONN at teardown).
        unsafe { ring.submission().push(&register) }.expect("ring has room");
        ring.submit().map_err(fail)?;
        let first = ring.completion().next();
        match first {
            Some(c) if c.result() == -libc::EAGAIN || c.result() == -libc::EINTR => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Some(c) if c.result() < 0 => {
                let _ = registered.send(Err(-c.result()));
                return Err(io::Error::from_raw_os_error(-c.result()));
            }
            Some(c) => {
                // A request arrived already: handle it below.
                let _ = registered.send(Ok(()));
                return run(ring, qid, fs, &mut header, &mut b, Some(c), &iov);
            }
            None => {
                let _ = registered.send(Ok(()));
                return run(ring, qid, fs, &mut header, &mut b, None, &iov);
            }
        }
    }
}

fn run(
    mut ring: IoUring<squeue::Entry128, cqueue::Entry>,
    qid: u16,
    fs: &FileServer,
    header: &mut AlignedBuf,
    b: &mut Bufs,
    mut first: Option<cqueue::Entry>,
    _iov: &[libc::iovec; 2],
) -> io::Result<()> {
    loop {
        let c = match first.take() {
            Some(c) => c,
            None => {
                match ring.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) => return Err(e),
                }
                match ring.completion().next() {
                    Some(c) => c,
                    None => continue,
                }
            }
        };
        match -c.result() {
            0 => {}
            // The connection is gone (unmount, abort, server exit).
            libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED => return Ok(()),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
        let commit_id = u64_at(header, ENT_IN_OUT + 8);
        let out_sz = handle(fs, header, b);
        header[ENT_IN_OUT + 16..ENT_IN_OUT + 20].copy_from_slice(&(out_sz as u32).to_ne_bytes());
        let commit = opcode::UringCmd80::new(types::Fixed(0), CMD_COMMIT_AND_FETCH)
            .cmd(cmd(commit_id, qid))
            .build()
            .user_data(2);
        // SAFETY: COMMIT_AND_FETCH carries no pointers; the entry's buffers
        // were registered above and outlive the ring.
        unsafe { ring.submission().push(&commit) }.expect("ring has room");
    }
}

/// Serves the request in the entry; writes the out header and returns the
/// reply payload size (the payload is at the start of `b.data`).
fn handle(fs: &FileServer, header: &mut [u8], b: &mut Bufs) -> usize {
    let h = proto::read::<InHeader>(&header[..size_of::<InHeader>()]).unwrap_or_default();
    let payload_sz = (u32_at(header, ENT_IN_OUT + 16) as usize).min(b.data.len());
    let pending = Pending {
        payload: b.data.as_ptr(),
        payload_len: b.data.len(),
        state: RefCell::new(None),
    };
    let chan = Chan::Ring(&pending);
    if h.opcode == WRITE {
        let wi = proto::read::<RwIn>(&header[OP_IN..OP_IN + 128]).unwrap_or_default();
        let size = (wi.size as usize).min(payload_sz);
        worker::write(&chan, fs, &h, &wi, size, b);
    } else {
        // The first argument is in `op_in`, the rest in the payload.
        let op_len = (h.len as usize)
            .saturating_sub(size_of::<InHeader>() + payload_sz)
            .min(128);
        let mut arg = Vec::with_capacity(op_len + payload_sz);
        arg.extend_from_slice(&header[OP_IN..OP_IN + op_len]);
        arg.extend_from_slice(&b.data[..payload_sz]);
        worker::dispatch(&chan, fs, &h, &arg, b);
    }
    let (unique, errno, body) =
        pending
            .state
            .into_inner()
            .unwrap_or((h.unique, libc::ENOSYS, Body::Bytes(Vec::new())));
    let n = match body {
        Body::InPayload(off, n) => {
            if off != 0 {
                b.data.copy_within(off..off + n, 0);
            }
            n
        }
        Body::Bytes(v) => {
            let n = v.len().min(b.data.len());
            b.data[..n].copy_from_slice(&v[..n]);
            n
        }
    };
    let n = if errno == 0 { n } else { 0 };
    let hdr = OutHeader {
        len: (size_of::<OutHeader>() + n) as u32,
        error: -errno,
        unique,
    };
    header[..size_of::<OutHeader>()].copy_from_slice(bytes(&hdr));
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqe_len_offset() {
        let e = opcode::Readv::new(types::Fd(3), std::ptr::null(), 2).build();
        let e = squeue::Entry128::from(e);
        // SAFETY: reading the bytes of a repr(C) plain struct.
        let raw = unsafe {
            std::slice::from_raw_parts((&e as *const squeue::Entry128).cast::<u8>(), 128)
        };
        assert_eq!(u32_at(raw, SQE_LEN_OFFSET), 2);
        let c = sqe_with_len(opcode::UringCmd80::new(types::Fixed(0), 7).build(), 9);
        // SAFETY: as above.
        let raw = unsafe {
            std::slice::from_raw_parts((&c as *const squeue::Entry128).cast::<u8>(), 128)
        };
        assert_eq!(u32_at(raw, SQE_LEN_OFFSET), 9);
        assert_eq!(u32_at(raw, 8), 7, "cmd_op");
    }

    #[test]
    fn cmd_req_layout() {
        let c = cmd(0x1122, 3);
        assert_eq!(u64_at(&c, 0), 0);
        assert_eq!(u64_at(&c, 8), 0x1122);
        assert_eq!(u16::from_ne_bytes([c[16], c[17]]), 3);
        assert_eq!(FUSE_OVER_IO_URING2, 1 << 9);
    }
}
