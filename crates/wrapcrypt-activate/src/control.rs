//! `close`, `status` and the teardown they share with the server.

use crate::config::{ActiveInfo, Status};
use crate::error::ActivateError;
use crate::state::{self, check_name};
use crate::{fuse, loopdev};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a detach may wait for other (non-exclusive) openers to close.
const DETACH_WAIT: Duration = Duration::from_secs(5);
/// How long `close` waits for the server to exit after unmount.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// Removes everything an activation left: loop device (if still ours),
/// FUSE mount, `/dev/mapper/NAME` (if it points to our loop device) and
/// the state directory. Idempotent; used after the server is gone.
pub(crate) fn teardown(name: &str, info: Option<&ActiveInfo>) -> Result<(), ActivateError> {
    let fuse_file = state::fuse_file(name);
    if let Some(dev) = info.and_then(|i| i.loop_device.as_deref()) {
        loopdev::detach(dev, &fuse_file, DETACH_WAIT)
            .map_err(|e| ActivateError::io("detach loop device", dev, e))?;
        let link = state::mapper_path(name);
        if fs::read_link(&link).ok().as_deref() == Some(dev) {
            let _ = fs::remove_file(&link);
        }
    }
    let mp = state::mount_point(name);
    if fuse::is_mounted(&mp) {
        fuse::unmount(&mp, true).map_err(|e| ActivateError::io("unmount FUSE at", &mp, e))?;
    }
    let dir = state::state_dir(name);
    let _ = fs::remove_file(dir.join("state.json"));
    let _ = fs::remove_file(dir.join("state.json.tmp"));
    let _ = fs::remove_file(state::control_socket(name));
    let _ = fs::remove_dir(&mp);
    match fs::remove_dir(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ActivateError::io("remove", dir, e))
        }
        _ => Ok(()),
    }
}

/// Whether the FUSE side of a live-looking server is dead (connection aborted).
fn transport_dead(name: &str) -> bool {
    matches!(fs::metadata(state::fuse_file(name)), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
}

fn kill(info: &ActiveInfo) {
    if state::server_alive(info) {
        // SAFETY: plain kill(2) of the verified server pid.
        unsafe { libc::kill(info.pid as libc::pid_t, libc::SIGKILL) };
        wait_exit(info, Duration::from_secs(5));
    }
}

fn wait_exit(info: &ActiveInfo, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while state::server_alive(info) {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Loads the state of a live volume, cleaning up after a dead server.
fn live_state(name: &str) -> Result<ActiveInfo, ActivateError> {
    check_name(name)?;
    let Some(info) = state::read_state(name)? else {
        if state::state_dir(name).exists() {
            // A server that died before writing its state: remove the leftovers.
            teardown(name, None)?;
        }
        return Err(ActivateError::NotActive(name.to_owned()));
    };
    if !state::server_alive(&info) || transport_dead(name) {
        kill(&info);
        teardown(name, Some(&info))?;
        return Err(ActivateError::ServerDied(name.to_owned()));
    }
    Ok(info)
}

/// Reports an active volume; a volume whose server died is cleaned up and
/// reported as [`ActivateError::ServerDied`].
pub fn status(name: &str) -> Result<Status, ActivateError> {
    let info = live_state(name)?;
    let in_use = info
        .loop_device
        .as_deref()
        .map(loopdev::is_claimed)
        .unwrap_or(false);
    Ok(Status { info, in_use })
}

/// Flushes, detaches the loop device, unmounts FUSE, stops the server and
/// removes the link and state. Fails with [`ActivateError::Busy`] while the
/// device is mounted or held open exclusively.
pub fn close(name: &str) -> Result<(), ActivateError> {
    let info = match live_state(name) {
        Ok(i) => i,
        // Nothing left to close: the dead server was just cleaned up.
        Err(ActivateError::ServerDied(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let fuse_file = state::fuse_file(name);
    if let Some(dev) = info.loop_device.as_deref() {
        match loopdev::detach(dev, &fuse_file, DETACH_WAIT) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(ActivateError::Busy(name.to_owned()))
            }
            Err(e) => return Err(ActivateError::io("detach loop device", dev, e)),
        }
        let link = state::mapper_path(name);
        if fs::read_link(&link).ok().as_deref() == Some(dev) {
            let _ = fs::remove_file(&link);
        }
    }
    stop_server(name, &info)?;
    teardown(name, Some(&info))
}

/// Unmounts the FUSE file system, which ends the server's session, and
/// waits for the server to exit (killing it if it hangs).
fn stop_server(name: &str, info: &ActiveInfo) -> Result<(), ActivateError> {
    let mp = state::mount_point(name);
    if let Err(e) = fuse::unmount(&mp, false) {
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(ActivateError::io("unmount FUSE at", &mp, e));
        }
        // Someone holds the decrypted file open: detach the mount now; the
        // server ends when they close it.
        fuse::unmount(&mp, true).map_err(|e| ActivateError::io("unmount FUSE at", &mp, e))?;
    }
    if !wait_exit(info, EXIT_WAIT) {
        kill(info);
    }
    Ok(())
}

/// Whether a `/dev/mapper` entry of this name exists (link or device).
pub(crate) fn mapper_exists(name: &str) -> bool {
    fs::symlink_metadata(Path::new(state::MAPPER_DIR).join(name)).is_ok()
}
