//! Key inventory like zkey's repository: `wrapcrypt keys list [DEVICE…]`
//! shows the custodian's master-key registers and, for each volume named
//! or found in /etc/crypttab, its provider, verification pattern,
//! wrapping key and register; `wrapcrypt crypttab DEVICE [NAME]` prints
//! the volume's /etc/crypttab line. Neither needs a passphrase: they read
//! headers (tokens) only, so the register comes from the `wrapping-key`
//! member of the `waes-provider` token, which `validate` confirms.

use std::path::{Path, PathBuf};

use serde_json::json;
use wrapcrypt_format::luks2::Luks2Header;
use wrapcrypt_provider::{MasterKeyStatus, Register};
use wrapcrypt_volume::rewrap::{self, ReencipherToken};
use wrapcrypt_volume::Volume;

use wrapcrypt_ops::providers;

use super::common::paths;
use crate::cli::{CrypttabArgs, KeysArgs};
use crate::exit::CliError;

/// One volume as the inventory sees it.
struct Entry {
    device: String,
    uuid: String,
    cipher: String,
    provider: Option<String>,
    vp: Option<String>,
    wrapping_key: Option<String>,
    staged: bool,
}

fn entry(device: &str) -> Result<Entry, CliError> {
    let vol = Volume::open(Path::new(device), None, false)?;
    let h = vol.luks2_header()?;
    let cipher = h
        .meta
        .crypt_segment_id()
        .and_then(|s| h.meta.segments[&s].encryption.clone())
        .unwrap_or_default();
    let wrapping_key = providers::recorded_wrapping_key(h);
    Ok(Entry {
        device: device.to_string(),
        uuid: h.uuid.clone(),
        cipher,
        provider: providers::recorded(h).map(|(n, _)| n),
        vp: rewrap::stored_vp(h),
        wrapping_key,
        staged: ReencipherToken::find(h).ok().flatten().is_some(),
    })
}

/// Devices listed in /etc/crypttab (UUID=… resolved through /dev/disk/by-uuid).
fn crypttab_devices() -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/etc/crypttab") else {
        return vec![];
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|spec| match spec.strip_prefix("UUID=") {
            Some(u) => PathBuf::from("/dev/disk/by-uuid")
                .join(u)
                .display()
                .to_string(),
            None => spec.to_string(),
        })
        .collect()
}

fn register_of(st: Option<&MasterKeyStatus>, wk: Option<&str>) -> Option<Register> {
    let (st, wk) = (st?, wk?);
    let mkvp = wk.strip_prefix("mkvp:")?;
    st.registers
        .iter()
        .find(|r| {
            r.mkvp
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(mkvp))
        })
        .map(|r| r.register)
}

/// keys list [DEVICE…] [--json]
pub fn keys(a: &KeysArgs) -> Result<(), CliError> {
    match a.sub.as_str() {
        "list" => {}
        other => {
            return Err(CliError::usage(format!(
                "Unknown keys action {other} (use list)."
            )))
        }
    }
    let custodian = providers::custodian().status();
    let st = custodian.as_ref().ok();
    let mut devices: Vec<String> = a.devices.clone();
    for d in crypttab_devices() {
        if !devices.contains(&d) {
            devices.push(d);
        }
    }
    let mut rows = vec![];
    for d in &devices {
        match entry(d) {
            Ok(e) => rows.push(Ok(e)),
            Err(e) => rows.push(Err((d.clone(), e.msg))),
        }
    }
    if a.json {
        let regs: Vec<_> = st
            .map(|s| {
                s.registers
                    .iter()
                    .map(|r| json!({"register": r.register.to_string(), "mkvp": r.mkvp}))
                    .collect()
            })
            .unwrap_or_default();
        let vols: Vec<_> = rows
            .iter()
            .map(|r| match r {
                Ok(e) => json!({
                    "device": e.device, "uuid": e.uuid, "cipher": e.cipher,
                    "provider": e.provider, "verification-pattern": e.vp,
                    "wrapping-key": e.wrapping_key,
                    "register": register_of(st, e.wrapping_key.as_deref()).map(|r| r.to_string()),
                    "reencipher-staged": e.staged,
                }),
                Err((d, msg)) => json!({"device": d, "error": msg}),
            })
            .collect();
        println!(
            "{}",
            json!({"custodian": {"registers": regs, "error": custodian.as_ref().err().map(|e| e.to_string())},
                   "volumes": vols})
        );
        return Ok(());
    }
    println!("Custodian master keys:");
    match &custodian {
        Ok(s) => {
            for r in &s.registers {
                let users = rows
                    .iter()
                    .filter_map(|r| r.as_ref().ok())
                    .filter(|e| register_of(st, e.wrapping_key.as_deref()) == Some(r.register))
                    .count();
                println!(
                    "  {:<8} {:<34} {users} volume(s)",
                    r.register.to_string(),
                    r.mkvp.as_deref().unwrap_or("(empty)")
                );
            }
        }
        Err(e) => println!("  unavailable: {e}"),
    }
    println!("Volumes:");
    for r in &rows {
        match r {
            Ok(e) => {
                let reg = register_of(st, e.wrapping_key.as_deref())
                    .map(|r| r.to_string())
                    .or_else(|| e.wrapping_key.as_ref().map(|_| "unknown".into()))
                    .unwrap_or_else(|| "-".into());
                println!("  {}", e.device);
                println!("    UUID:                 {}", e.uuid);
                println!("    Cipher:               {}", e.cipher);
                println!(
                    "    Provider:             {}",
                    e.provider.as_deref().unwrap_or("-")
                );
                println!(
                    "    Verification pattern: {}",
                    e.vp.as_deref().unwrap_or("-")
                );
                println!(
                    "    Wrapping key:         {}",
                    e.wrapping_key.as_deref().unwrap_or("-")
                );
                println!("    Register:             {reg}");
                println!(
                    "    Re-encipher staged:   {}",
                    if e.staged { "yes" } else { "no" }
                );
            }
            Err((d, msg)) => println!("  {d}: {msg}"),
        }
    }
    Ok(())
}

fn has_token(h: &Luks2Header, kind: &str) -> bool {
    h.meta.tokens.values().any(|t| t.kind == kind)
}

/// crypttab DEVICE [NAME]: the /etc/crypttab line for the volume.
pub fn crypttab(a: &CrypttabArgs) -> Result<(), CliError> {
    let (dev, hdr) = paths(&a.dev);
    let vol = Volume::open(dev, hdr, false)?;
    let h = vol.luks2_header()?;
    let name = a.name.clone().unwrap_or_else(|| format!("luks-{}", h.uuid));
    let mut opts = vec!["luks".to_string()];
    if let Some(hdr) = &a.dev.header.header {
        opts.push(format!("header={hdr}"));
    }
    if h.meta
        .config
        .flags
        .iter()
        .flatten()
        .any(|f| f == "allow-discards")
    {
        opts.push("discard".into());
    }
    if has_token(h, "systemd-tpm2") {
        opts.push("tpm2-device=auto".into());
    }
    if has_token(h, "systemd-pkcs11") {
        opts.push("pkcs11-uri=auto".into());
    }
    let cipher = h
        .meta
        .crypt_segment_id()
        .and_then(|s| h.meta.segments[&s].encryption.clone())
        .unwrap_or_default();
    if cipher.starts_with("waes-") {
        let p = providers::recorded(h)
            .map(|(n, _)| n)
            .unwrap_or_else(|| "custodian".into());
        println!("# {cipher} (wrapped key, provider {p}): opened by wrapcrypt open, not by the kernel's dm-crypt alone");
    }
    let keyfile = a.key.key_file.as_deref().unwrap_or("none");
    println!("{name} UUID={} {keyfile} {}", h.uuid, opts.join(","));
    Ok(())
}
