//! Starting a server process and learning whether it came up.
//!
//! Protocol: the client writes the secret payload to the child's stdin and
//! closes it; the child answers with one line on its stdout,
//! `OK <ActiveInfo JSON>` or `ERR <exit code> <message>`, then closes it.
//! Other lines before it (noise from a test harness) are skipped.

use crate::config::ActiveInfo;
use crate::control::teardown;
use crate::error::ActivateError;
use crate::state;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest readiness line accepted.
const MAX_LINE: usize = 64 * 1024;

/// Starts `cmd` as a detached server (new session; stdin, stdout piped,
/// stderr to /dev/null so it holds none of the caller's pipes), sends
/// `secret` on its stdin and waits up to `timeout` for its readiness line.
///
/// On any failure the child is killed and whatever it had set up is removed.
pub fn spawn(
    mut cmd: Command,
    secret: &[u8],
    timeout: Duration,
) -> Result<ActiveInfo, ActivateError> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; it detaches the server from the
    // caller's terminal and process group.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| ActivateError::io("start", cmd.get_program(), e))?;
    let res = handshake(&mut child, secret, timeout);
    if res.is_err() {
        abandon(&mut child);
    }
    res
}

fn handshake(
    child: &mut Child,
    secret: &[u8],
    timeout: Duration,
) -> Result<ActiveInfo, ActivateError> {
    let mut stdin = child.stdin.take().expect("piped");
    // A child that dies early closes the pipe: its exit is reported below.
    let _ = stdin.write_all(secret);
    drop(stdin);
    let stdout = child.stdout.take().expect("piped");
    let until = Instant::now() + timeout;
    let mut buf = Vec::new();
    let line = loop {
        match read_line(&stdout, &mut buf, until, timeout)? {
            Some(l) if !l.starts_with("OK ") && !l.starts_with("ERR ") => continue,
            other => break other,
        }
    };
    let Some(line) = line else {
        let status = child
            .wait()
            .map_err(|e| ActivateError::io("wait for", "server", e))?;
        return Err(ActivateError::Server {
            code: 1,
            message: format!("exited without reporting ({status})"),
        });
    };
    if let Some(json) = line.strip_prefix("OK ") {
        return serde_json::from_str(json).map_err(|e| ActivateError::Server {
            code: 1,
            message: format!("bad readiness report: {e}"),
        });
    }
    let rest = line.strip_prefix("ERR ").unwrap_or(&line);
    let (code, msg) = rest.split_once(' ').unwrap_or(("1", rest));
    Err(ActivateError::Server {
        code: code.parse().unwrap_or(1),
        message: msg.to_owned(),
    })
}

/// Reads the next line (buffered in `buf`) before `until`; `None` at EOF.
fn read_line(
    pipe: &impl AsRawFd,
    buf: &mut Vec<u8>,
    until: Instant,
    timeout: Duration,
) -> Result<Option<String>, ActivateError> {
    loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            return Ok(Some(String::from_utf8_lossy(&line[..i]).into_owned()));
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || buf.len() > MAX_LINE {
            return Err(ActivateError::Timeout(timeout));
        }
        let mut pfd = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ActivateError::io("wait for", "server readiness", e));
        }
        if rc == 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        // SAFETY: read into a local buffer from a pipe we own.
        let n = unsafe { libc::read(pipe.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
        match n {
            0 => return Ok(None),
            n if n > 0 => buf.extend_from_slice(&chunk[..n as usize]),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(ActivateError::io("read", "server readiness", e));
                }
            }
        }
    }
}

/// Kills a child that failed or hung, and removes what it left behind.
fn abandon(child: &mut Child) {
    let pid = child.id();
    let _ = child.kill();
    let _ = child.wait();
    for name in state::list() {
        if let Ok(Some(info)) = state::read_state(&name) {
            if info.pid == pid {
                let _ = teardown(&name, Some(&info));
            }
        }
    }
}

/// The server side of the readiness protocol, on the process's stdout.
pub struct ReadyPipe {
    out: File,
}

impl ReadyPipe {
    /// Takes over fd 1 (stdout) for the readiness line.
    pub fn stdout() -> io::Result<Self> {
        // SAFETY: dup of fd 1 gives us an fd we own.
        let fd = unsafe { libc::dup(1) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(ReadyPipe {
            out: unsafe { File::from_raw_fd(fd) },
        })
    }

    /// Reads the secret payload from stdin (to EOF, at most `max` bytes)
    /// into `buf`, returning its length, then points stdin at /dev/null.
    pub fn read_secret(buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: fd 0 stays open; ManuallyDrop keeps File from closing it.
        let mut stdin = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
        let mut n = 0;
        loop {
            if n == buf.len() {
                let mut extra = [0u8; 1];
                if stdin.read(&mut extra)? != 0 {
                    return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
                }
                break;
            }
            match stdin.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        redirect_null(0)?;
        Ok(n)
    }

    /// Sends the outcome, then points stdout (and stdin) at /dev/null so the
    /// server holds none of the caller's pipes.
    pub fn send(mut self, result: Result<&ActiveInfo, &ActivateError>) -> io::Result<()> {
        let line = match result {
            Ok(info) => format!("OK {}\n", serde_json::to_string(info).expect("serializes")),
            Err(e) => format!(
                "ERR {} {}\n",
                e.exit_code(),
                e.to_string().replace('\n', " ")
            ),
        };
        let r = self.out.write_all(line.as_bytes());
        drop(self);
        redirect_null(1)?;
        redirect_null(0)?;
        r
    }
}

fn redirect_null(fd: i32) -> io::Result<()> {
    let null = File::options().read(true).write(true).open("/dev/null")?;
    // SAFETY: dup2 onto a standard descriptor.
    if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
