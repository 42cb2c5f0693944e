//! `/run/wrapcrypt/NAME/` bookkeeping: paths, the state file, liveness.

use crate::config::ActiveInfo;
use crate::error::ActivateError;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where activation state lives.
pub const RUN_DIR: &str = "/run/wrapcrypt";
/// Where the block device links are published.
pub const MAPPER_DIR: &str = "/dev/mapper";

/// Checks a mapping name: 1..=127 bytes of `A-Za-z0-9._+-`, not starting with `.`.
pub(crate) fn check_name(name: &str) -> Result<(), ActivateError> {
    let ok = !name.is_empty()
        && name.len() <= 127
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ActivateError::InvalidName(name.to_owned()))
    }
}

pub(crate) fn state_dir(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}
pub(crate) fn state_file(name: &str) -> PathBuf {
    state_dir(name).join("state.json")
}
pub(crate) fn mount_point(name: &str) -> PathBuf {
    state_dir(name).join("fuse")
}
pub(crate) fn fuse_file(name: &str) -> PathBuf {
    mount_point(name).join(crate::fuse::FILE_NAME)
}
pub(crate) fn mapper_path(name: &str) -> PathBuf {
    Path::new(MAPPER_DIR).join(name)
}

/// Reads a state file; `Ok(None)` when there is none.
pub(crate) fn read_state(name: &str) -> Result<Option<ActiveInfo>, ActivateError> {
    let path = state_file(name);
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| ActivateError::State { path, source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ActivateError::io("read", path, e)),
    }
}

/// Writes the state file atomically (temp file + rename).
pub(crate) fn write_state(info: &ActiveInfo) -> Result<(), ActivateError> {
    let path = state_file(&info.name);
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(info).expect("state serializes");
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        fs::rename(&tmp, &path)
    })();
    res.map_err(|e| ActivateError::io("write", path, e))
}

/// Sets one status fact of an active volume (`status` shows it), from
/// the server that serves it: e.g. the progress of an online reencryption.
pub fn set_status(name: &str, key: &str, value: &str) -> Result<(), ActivateError> {
    let mut info = read_state(name)?.ok_or_else(|| ActivateError::NotActive(name.to_owned()))?;
    info.extra.insert(key.to_owned(), value.to_owned());
    write_state(&info)
}

/// The control socket of an active volume's server (online reencryption).
pub fn control_socket(name: &str) -> PathBuf {
    state_dir(name).join("control")
}

/// The start time (field 22 of `/proc/PID/stat`) of a running, non-zombie
/// process, or `None`.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    // Reap it if it is our own exited child, so it does not linger as a zombie.
    // SAFETY: waitpid with WNOHANG on a specific pid has no memory effects.
    unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3; field 22 is the 20th from here.
    fields.nth(18)?.parse().ok()
}

/// Whether the server recorded in `info` is still running.
pub(crate) fn server_alive(info: &ActiveInfo) -> bool {
    process_start(info.pid) == Some(info.pid_start)
}

/// Identity of a backing path: (rdev, 0) for block devices, else (dev, ino).
pub(crate) fn backing_id(path: &Path) -> io::Result<(u64, u64)> {
    let m = fs::metadata(path)?;
    Ok(if m.file_type().is_block_device() {
        (m.rdev(), 0)
    } else {
        (m.dev(), m.ino())
    })
}

/// Names of all volumes with a state directory, sorted.
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(RUN_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("state.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| check_name(n).is_ok())
        .collect();
    names.sort();
    names
}

/// The name of the active volume whose backing is `path` (same file or
/// same block device), if any.
pub fn is_backing_in_use(path: &Path) -> Option<String> {
    let id = backing_id(path).ok()?;
    list().into_iter().find(|name| {
        matches!(read_state(name), Ok(Some(info)) if info.backing_id == id && server_alive(&info))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "vol-1", "x.y_z+1", &"n".repeat(127)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "ä",
            &"n".repeat(128),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_process_is_alive_and_bogus_pid_is_not() {
        let me = std::process::id();
        assert!(process_start(me).is_some());
        assert!(process_start(u32::MAX / 2).is_none());
    }
}
