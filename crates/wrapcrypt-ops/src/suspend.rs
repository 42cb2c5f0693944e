//! `luksSuspend` / `luksResume` of a volume served by a FUSE server
//! (docs/suspend.md). The server's [`LiveCipher`] holds every new request
//! and drops the cipher (the key, or the provider session) on `suspend`;
//! `resume` brings a cipher built from a fresh unlock, in the payload
//! encoding `open` uses, and lets the held requests go on.
//!
//! Wire, on the control socket of online.rs: `{"op":"suspend"}`, or
//! `{"op":"abort"}` (close of a suspended device), or
//! `{"op":"resume"}` followed by a u32 LE payload length and the payload;
//! the server answers one line, `ok` or `error CODE MESSAGE` (CODE a
//! cryptsetup exit code).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use wrapcrypt_activate::{LiveCipher, SuspendError};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_volume::ExitClass;

use crate::error::OpsError;
use crate::open::payload;

/// The status field a suspended server sets (`yes`; empty when resumed).
pub const STATUS_KEY: &str = "suspended";

/// In the server: answers one suspend or resume request.
pub(crate) fn handle(conn: UnixStream, op: &str, name: &str, live: &LiveCipher) {
    let mut out = match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    };
    let line = match run(conn, op, name, live) {
        Ok(()) => "ok".to_string(),
        Err((code, m)) => format!("error {code} {}", m.replace('\n', " ")),
    };
    let _ = writeln!(out, "{line}");
}

fn run(conn: UnixStream, op: &str, name: &str, live: &LiveCipher) -> Result<(), (i32, String)> {
    let refused = |e: SuspendError| match e {
        SuspendError::AlreadySuspended => (5, format!("Volume {name} is already suspended.")),
        SuspendError::NotSuspended => (1, format!("Volume {name} is not suspended.")),
        SuspendError::Aborted => (4, format!("Device {name} is being closed.")),
        _ => (1, format!("Volume {name} cannot change its sector size.")),
    };
    if op == "abort" {
        // `close` of a suspended device: held requests fail from now on.
        live.abort();
        return Ok(());
    }
    if op == "suspend" {
        live.suspend().map_err(refused)?;
        let _ = wrapcrypt_activate::set_status(name, STATUS_KEY, "yes");
        return Ok(());
    }
    if !live.is_suspended() {
        return Err(refused(SuspendError::NotSuspended));
    }
    let bad = |m: &str| (1, m.to_string());
    let mut rd = BufReader::new(conn);
    let mut len = [0u8; 4];
    rd.read_exact(&mut len).map_err(|_| bad("no payload"))?;
    let mut p = SecretBytes::zeroed(u32::from_le_bytes(len) as usize);
    rd.read_exact(p.expose_secret_mut())
        .map_err(|_| bad("short payload"))?;
    let d = payload::decode(p.expose_secret()).map_err(|e| (1, e.to_string()))?;
    drop(p);
    drop(d.keys);
    let st = wrapcrypt_activate::status(name).map_err(|e| (4, e.to_string()))?;
    let (i, c) = (&st.info, &d.config);
    let same_path = |a: &Path, b: &Path| a.canonicalize().ok() == b.canonicalize().ok();
    let same = same_path(&i.backing, &c.backing)
        && i.data_offset == c.data_offset
        && i.iv_tweak == c.iv_tweak
        && i.cipher == c.cipher_desc
        && i.extra.get("uuid") == c.extra_status.get("uuid")
        && d.ciphers.len() == 1;
    if !same {
        return Err((
            4,
            format!("The volume given is not the one {name} was activated from."),
        ));
    }
    let cipher = d
        .ciphers
        .into_iter()
        .next()
        .expect("one part")
        .map_err(|e| (1, format!("Cannot build the cipher of {name}: {e}")))?;
    live.resume(cipher).map_err(refused)?;
    let _ = wrapcrypt_activate::set_status(name, STATUS_KEY, "");
    Ok(())
}

fn not_active(name: &str) -> OpsError {
    OpsError::refused(
        ExitClass::WrongDevice,
        format!("Device {name} is not active."),
    )
}

/// Whether the server of `name` reports itself suspended.
pub fn is_suspended(name: &str) -> bool {
    wrapcrypt_activate::status(name)
        .ok()
        .and_then(|s| s.info.extra.get(STATUS_KEY).cloned())
        .is_some_and(|v| !v.is_empty())
}

fn call(name: &str, op: &str, payload: Option<&SecretBytes>) -> Result<(), OpsError> {
    call_json(name, &serde_json::json!({ "op": op }), payload)
}

/// Sends one request line (and a payload) to the server of `name` and
/// reads its `ok` / `error CODE MESSAGE` answer.
pub(crate) fn call_json(
    name: &str,
    req: &serde_json::Value,
    payload: Option<&SecretBytes>,
) -> Result<(), OpsError> {
    match wrapcrypt_activate::status(name) {
        Ok(_) => {}
        Err(
            wrapcrypt_activate::ActivateError::NotActive(_)
            | wrapcrypt_activate::ActivateError::ServerDied(_),
        ) => return Err(not_active(name)),
        Err(e) => return Err(OpsError::usage(e.to_string())),
    }
    let mut c = UnixStream::connect(wrapcrypt_activate::control_socket(name)).map_err(|e| {
        OpsError::refused(
            ExitClass::WrongDevice,
            format!("Cannot reach the server of {name} ({e}); is it a wrapcrypt activation?"),
        )
    })?;
    let io = |e: std::io::Error| OpsError::usage(format!("Lost the server of {name}: {e}"));
    writeln!(c, "{req}").map_err(io)?;
    if let Some(p) = payload {
        c.write_all(&(p.expose_secret().len() as u32).to_le_bytes())
            .map_err(io)?;
        c.write_all(p.expose_secret()).map_err(io)?;
    }
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).map_err(io)?;
    let line = line.trim();
    if line == "ok" {
        return Ok(());
    }
    let Some(rest) = line.strip_prefix("error ") else {
        return Err(OpsError::usage(format!("The server of {name} went away.")));
    };
    let (code, msg) = rest.split_once(' ').unwrap_or(("1", rest));
    let class = match code {
        "2" => ExitClass::Permission,
        "4" => ExitClass::WrongDevice,
        "5" => ExitClass::Busy,
        _ => return Err(OpsError::usage(msg.to_string())),
    };
    Err(OpsError::refused(class, msg.to_string()))
}

/// The client, in `close` of a suspended device: the server fails the
/// requests it holds, so the loop device can be detached.
pub fn abort(name: &str) -> Result<(), OpsError> {
    call(name, "abort", None)
}

/// The client: `luksSuspend NAME`.
pub fn suspend(name: &str) -> Result<(), OpsError> {
    call(name, "suspend", None)
}

/// The client: `luksResume NAME`, with the payload of
/// [`crate::open::prepare_resume`].
pub fn resume(name: &str, payload: &SecretBytes) -> Result<(), OpsError> {
    call(name, "resume", Some(payload))
}

/// Checks `name` is active and suspended before anything is asked.
pub fn check_resumable(name: &str) -> Result<wrapcrypt_activate::Status, OpsError> {
    let st = match wrapcrypt_activate::status(name) {
        Ok(s) => s,
        Err(
            wrapcrypt_activate::ActivateError::NotActive(_)
            | wrapcrypt_activate::ActivateError::ServerDied(_),
        ) => return Err(not_active(name)),
        Err(e) => return Err(OpsError::usage(e.to_string())),
    };
    if !is_suspended(name) {
        return Err(OpsError::usage(format!("Volume {name} is not suspended.")));
    }
    Ok(st)
}
