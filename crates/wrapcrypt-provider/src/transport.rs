//! Frames on a Unix stream socket: a 4-byte big-endian length, then the
//! body; a file descriptor may ride along with a frame (SCM_RIGHTS).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use zeroize::Zeroize;

use crate::protocol::MAX_FRAME;

/// A received frame body, zeroized on drop (an IMPORT body holds a key).
pub struct Frame(pub Vec<u8>);

impl Drop for Frame {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Sends one frame, with `fd` attached to its first byte if given.
pub fn send_frame(sock: &UnixStream, body: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "frame too large",
        ));
    }
    let mut msg = Vec::with_capacity(4 + body.len());
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes());
    msg.extend_from_slice(body);
    // sendmsg with MSG_NOSIGNAL: a vanished peer is an error, not SIGPIPE.
    let mut sent = 0;
    let mut fd = fd.map(|f| f.as_raw_fd());
    let r = loop {
        if sent == msg.len() {
            break Ok(());
        }
        match sendmsg_fd(sock.as_raw_fd(), &msg[sent..], fd.take()) {
            Ok(n) => sent += n,
            Err(e) => break Err(e),
        }
    };
    msg.zeroize();
    r
}

fn sendmsg_fd(sock: RawFd, data: &[u8], fd: Option<RawFd>) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; the pointers stay valid for the call and
    // CMSG_SPACE(sizeof(int)) fits in 64 bytes.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(fd) = fd {
            msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = space as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
        }
        loop {
            let r = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Receives into `buf` with recvmsg, collecting any passed descriptor.
fn recv_some(sock: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: as in sendmsg_fd; the kernel writes at most msg_controllen bytes.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        let r = loop {
            let r = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..n {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many descriptors",
            ));
        }
        Ok(r)
    }
}

/// Receives one frame and the descriptors that came with it. `Ok(None)` is
/// a clean end of stream before a frame started.
pub fn recv_frame(sock: &UnixStream) -> io::Result<Option<(Frame, Vec<OwnedFd>)>> {
    let mut fds = Vec::new();
    let mut hdr = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = recv_some(sock.as_raw_fd(), &mut hdr[got..], &mut fds)?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let len = u32::from_be_bytes(hdr) as usize;
    if !(4..=MAX_FRAME).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {len} out of range"),
        ));
    }
    let mut body = Frame(vec![0u8; len]);
    let mut got = 0;
    while got < len {
        let n = recv_some(sock.as_raw_fd(), &mut body.0[got..], &mut fds)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    Ok(Some((body, fds)))
}

/// Reads exactly one frame from a plain reader (tests, pipes).
pub fn read_frame_from(r: &mut impl Read) -> io::Result<Frame> {
    let mut hdr = [0u8; 4];
    r.read_exact(&mut hdr)?;
    let len = u32::from_be_bytes(hdr) as usize;
    if !(4..=MAX_FRAME).contains(&len) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame length"));
    }
    let mut body = Frame(vec![0u8; len]);
    r.read_exact(&mut body.0)?;
    Ok(body)
}

/// The uid, gid and pid of the process at the other end (SO_PEERCRED).
pub fn peer_credentials(sock: &UnixStream) -> io::Result<(u32, u32, i32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writing.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.uid, cred.gid, cred.pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn frame_with_fd_roundtrip() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        send_frame(&a, b"\x00\x01\x00\x00hello", Some(f.as_fd())).unwrap();
        send_frame(&a, b"\x00\x02\x00\x00", None).unwrap();
        let (body, fds) = recv_frame(&b).unwrap().unwrap();
        assert_eq!(body.0, b"\x00\x01\x00\x00hello");
        assert_eq!(fds.len(), 1);
        let (body, fds) = recv_frame(&b).unwrap().unwrap();
        assert_eq!(body.0, b"\x00\x02\x00\x00");
        assert!(fds.is_empty());
        drop(a);
        assert!(recv_frame(&b).unwrap().is_none());
    }

    #[test]
    fn oversized_length_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
        assert!(recv_frame(&b).is_err());
    }
}
