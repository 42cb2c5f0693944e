//! `refresh NAME [--allow-discards] [--persistent]`: new activation flags
//! for an open volume without closing it (docs/actions.md). As cryptsetup
//! does for LUKS, the volume is unlocked again first (the passphrase or a
//! token proves the caller may change it; the key is dropped at once: the
//! server keeps serving with its own cipher). Then the server is told the
//! flags on its control socket, and with `--persistent` they are written
//! into the LUKS2 header's config flags, after the refresh succeeded, with
//! the usual crash-safe two-copy write.

use wrapcrypt_unlock::{Prompter, Registry, UnlockRequest};
use wrapcrypt_volume::{ExitClass, Volume};

use crate::error::OpsError;

/// The LUKS2 config flag for discards (cryptsetup's name).
pub const ALLOW_DISCARDS: &str = "allow-discards";

/// What `refresh` is asked to do.
pub struct RefreshOptions<'a> {
    /// The mapping name.
    pub name: &'a str,
    /// `--allow-discards`.
    pub allow_discards: bool,
    /// `--persistent`.
    pub persistent: bool,
    /// `--readonly` (must match the activation).
    pub read_only: bool,
}

/// What the refresh did.
#[derive(Debug, PartialEq, Eq)]
pub struct Refreshed {
    /// Discards accepted from now on.
    pub allow_discards: bool,
    /// The header's flags were rewritten.
    pub stored: bool,
    /// Discards are on, but the loop device stopped sending them (see
    /// [`loop_discards_off`]).
    pub loop_discards_off: bool,
}

/// Whether the kernel's loop device of `st` has stopped passing discards:
/// since Linux 6.10 it turns discard and write-zeroes off for good when
/// its backing file (our FUSE file) refuses one (EOPNOTSUPP, a discard
/// while discards were off), and no loop ioctl turns them on again
/// (LOOP_SET_BLOCK_SIZE and LOOP_SET_STATUS64 with the same values were
/// tried: `discard_max_bytes` stays 0). Only close and open restore it.
pub fn loop_discards_off(st: &wrapcrypt_activate::Status) -> bool {
    let Some(dev) = st.info.loop_device.as_deref().and_then(|d| d.file_name()) else {
        return false;
    };
    let p = std::path::Path::new("/sys/block")
        .join(dev)
        .join("queue/discard_max_bytes");
    std::fs::read_to_string(p)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        == Some(0)
}

/// The header's persistent `allow-discards` flag.
pub fn header_discards(vol: &Volume) -> bool {
    vol.luks2_header()
        .map(|h| {
            h.meta
                .config
                .flags
                .iter()
                .flatten()
                .any(|f| f == ALLOW_DISCARDS)
        })
        .unwrap_or(false)
}

/// Checks the options against the active device and returns its status.
pub fn check(opts: &RefreshOptions) -> Result<wrapcrypt_activate::Status, OpsError> {
    let name = opts.name;
    let st = match wrapcrypt_activate::status(name) {
        Ok(s) => s,
        Err(
            wrapcrypt_activate::ActivateError::NotActive(_)
            | wrapcrypt_activate::ActivateError::ServerDied(_),
        ) => {
            return Err(OpsError::refused(
                ExitClass::WrongDevice,
                format!("Device {name} is not active."),
            ))
        }
        Err(e) => return Err(OpsError::usage(e.to_string())),
    };
    if opts.read_only != st.info.read_only {
        return Err(OpsError::usage(format!(
            "Cannot change the read-only mode of {name} with refresh; close it and open it again."
        )));
    }
    let kind = st.info.extra.get("type").cloned().unwrap_or_default();
    if opts.persistent && kind != "LUKS2" {
        return Err(OpsError::usage(format!(
            "Persistent flags can be stored only in a LUKS2 header ({name} is {kind})."
        )));
    }
    Ok(st)
}

/// Refreshes a LUKS volume: unlocks `vol` (the volume `name` serves, read
/// from its backing or `--header`), tells the server the flags, and with
/// `--persistent` stores them. Without `--persistent` the header's flag
/// counts, as at `open`.
pub fn refresh_luks(
    vol: Volume,
    opts: &RefreshOptions,
    st: &wrapcrypt_activate::Status,
    req: &UnlockRequest,
    reg: &Registry,
    prompter: &mut dyn Prompter,
) -> Result<Refreshed, OpsError> {
    let name = opts.name;
    if st.info.extra.get("uuid").map(String::as_str) != Some(vol.uuid()) {
        return Err(OpsError::refused(
            ExitClass::WrongDevice,
            format!("The volume given is not the one {name} was activated from."),
        ));
    }
    let req = UnlockRequest {
        need_bound: true,
        ..req.clone()
    };
    drop(wrapcrypt_unlock::unlock(&vol, &req, reg, prompter)?);
    let on = opts.allow_discards || (!opts.persistent && header_discards(&vol));
    crate::resize::set_flags(name, on)?;
    let loop_off = on && loop_discards_off(st);
    if !opts.persistent {
        return Ok(Refreshed {
            allow_discards: on,
            stored: false,
            loop_discards_off: loop_off,
        });
    }
    // Shared lock for the unlock; the header write takes it exclusively.
    let data = vol.data_path().to_path_buf();
    let meta = vol
        .is_detached()
        .then(|| vol.meta_device().path().to_path_buf());
    drop(vol);
    store_discards(&data, meta.as_deref(), on)?;
    Ok(Refreshed {
        allow_discards: on,
        stored: true,
        loop_discards_off: loop_off,
    })
}

/// Writes (or removes) the LUKS2 header's `allow-discards` flag, other
/// flags untouched, with the crash-safe two-copy header write
/// (`refresh --persistent`, `open --persistent`).
pub fn store_discards(
    data: &std::path::Path,
    header: Option<&std::path::Path>,
    on: bool,
) -> Result<(), OpsError> {
    let mut vol = Volume::open(data, header, true)?;
    vol.check_requirements()?;
    let mut h = vol.luks2_header()?.clone();
    let mut flags: Vec<String> = h
        .meta
        .config
        .flags
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != ALLOW_DISCARDS)
        .collect();
    if on {
        flags.push(ALLOW_DISCARDS.to_string());
    }
    h.meta.config.flags = (!flags.is_empty()).then_some(flags);
    vol.write_luks2(h)?;
    Ok(())
}

/// Refreshes a plain mapping: no header to unlock or write; the server
/// keeps the key it derived at open.
pub fn refresh_plain(
    opts: &RefreshOptions,
    st: &wrapcrypt_activate::Status,
) -> Result<Refreshed, OpsError> {
    crate::resize::set_flags(opts.name, opts.allow_discards)?;
    Ok(Refreshed {
        allow_discards: opts.allow_discards,
        stored: false,
        loop_discards_off: opts.allow_discards && loop_discards_off(st),
    })
}
