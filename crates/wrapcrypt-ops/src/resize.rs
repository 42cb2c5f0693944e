//! `resize NAME [--size S | --device-size B]` and `refresh NAME` of a
//! volume served by a FUSE server (docs/actions.md). The server owns the
//! served size and flags ([`ServerHandle`]); the client asks on the
//! control socket of online.rs and the server answers `ok` or
//! `error CODE MESSAGE`.
//!
//! Wire: `{"op":"resize","size":BYTES|null}` (null: fill the backing),
//! `{"op":"refresh","allow_discards":BOOL}`.

use std::io::Write;
use std::os::unix::net::UnixStream;

use wrapcrypt_activate::{ActivateError, ResizeRefused, ServerHandle};
use wrapcrypt_volume::ExitClass;

use crate::error::OpsError;
use crate::suspend::call_json;

/// In the server: answers one resize or refresh request.
pub(crate) fn handle(mut conn: UnixStream, req: &serde_json::Value, server: &ServerHandle) {
    let line = match run(req, server) {
        Ok(()) => "ok".to_string(),
        Err((code, m)) => format!("error {code} {}", m.replace('\n', " ")),
    };
    let _ = writeln!(conn, "{line}");
}

fn run(req: &serde_json::Value, server: &ServerHandle) -> Result<(), (i32, String)> {
    let failed = |e: ActivateError| (1, e.to_string());
    match req["op"].as_str() {
        Some("resize") => {
            let size = req["size"].as_u64();
            // Both refusals are cryptsetup's -EINVAL: exit 1.
            server
                .resize(size)
                .map_err(failed)?
                .map(|_| ())
                .map_err(|r: ResizeRefused| (1, r.to_string()))
        }
        Some("refresh") => {
            let on = req["allow_discards"].as_bool().unwrap_or(false);
            server.set_allow_discards(on).map_err(failed)
        }
        _ => Err((1, "unknown request".into())),
    }
}

/// The size `resize` asks for, from `--size` (512-byte sectors) or
/// `--device-size` (bytes); `None` fills the backing device.
pub fn requested_size(
    sectors: Option<u64>,
    device_size: Option<u64>,
) -> Result<Option<u64>, OpsError> {
    match (sectors, device_size) {
        (Some(_), Some(_)) => Err(OpsError::usage(
            "Options --size and --device-size cannot be combined.",
        )),
        (Some(0), None) | (None, Some(0)) | (None, None) => Ok(None),
        (Some(s), None) => s
            .checked_mul(512)
            .map(Some)
            .ok_or_else(|| OpsError::usage("Device size is too large.")),
        (None, Some(b)) if b % 512 != 0 => Err(OpsError::usage(
            "Device size must be multiple of 512 bytes sector.",
        )),
        (None, Some(b)) => Ok(Some(b)),
    }
}

fn check_active(name: &str) -> Result<wrapcrypt_activate::Status, OpsError> {
    match wrapcrypt_activate::status(name) {
        Ok(s) => Ok(s),
        Err(ActivateError::NotActive(_) | ActivateError::ServerDied(_)) => Err(OpsError::refused(
            ExitClass::WrongDevice,
            format!("Device {name} is not active."),
        )),
        Err(e) => Err(OpsError::usage(e.to_string())),
    }
}

/// The client: `resize NAME` to `size` bytes (`None`: the backing's size
/// after the data offset). Returns the new size in bytes.
pub fn resize(name: &str, size: Option<u64>) -> Result<u64, OpsError> {
    check_active(name)?;
    call_json(
        name,
        &serde_json::json!({"op": "resize", "size": size}),
        None,
    )?;
    Ok(check_active(name)?.info.data_size)
}

/// The client: tells the server of `name` whether to accept discards.
pub fn set_flags(name: &str, allow_discards: bool) -> Result<(), OpsError> {
    check_active(name)?;
    call_json(
        name,
        &serde_json::json!({"op": "refresh", "allow_discards": allow_discards}),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_options_as_cryptsetup_takes_them() {
        assert_eq!(requested_size(None, None).unwrap(), None);
        assert_eq!(requested_size(Some(0), None).unwrap(), None);
        assert_eq!(requested_size(Some(8), None).unwrap(), Some(4096));
        assert_eq!(requested_size(None, Some(4096)).unwrap(), Some(4096));
        assert!(requested_size(None, Some(4097)).is_err());
        assert!(requested_size(Some(8), Some(4096)).is_err());
        assert!(requested_size(Some(u64::MAX), None).is_err());
    }
}
