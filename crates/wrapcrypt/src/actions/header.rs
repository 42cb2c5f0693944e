//! Actions that read or rewrite header metadata: luksDump, isLuks,
//! luksUUID, luksHeaderBackup/Restore, config, repair, and convert between
//! LUKS1 and LUKS2.

use std::io::Write;
use std::path::Path;

use wrapcrypt_format::dump;
use wrapcrypt_format::luks2::Luks2Header;
use wrapcrypt_ops::{backup, wrapped};
use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::{Volume, VolumeError};

use super::common::{key_source, load, paths, prompter};
use crate::cli::opts::Global;
use crate::cli::{BackupArgs, ConfigArgs, ConvertArgs, DumpArgs, IsLuksArgs, RepairArgs, UuidArgs};
use crate::exit::{ops_message, CliError};

fn bin_info<'a>(vol: &'a Volume, h: &'a Luks2Header) -> dump::Luks2BinaryInfo<'a> {
    dump::Luks2BinaryInfo {
        version: 2,
        hdr_size: h.hdr_size,
        seqid: h.seqid,
        label: &h.label,
        checksum_alg: &h.checksum_alg,
        salt: vol
            .primary_binary
            .as_ref()
            .map(|b| b.salt)
            .unwrap_or(h.salts[0]),
        uuid: &h.uuid,
        subsystem: &h.subsystem,
        hdr_offset: 0,
    }
}

/// luksDump.
pub fn dump(g: &Global, a: &DumpArgs) -> Result<(), CliError> {
    let vol = load(&a.on.dev, false)?;
    if vol.version() == 1 {
        return dump1(g, a, &vol);
    }
    let h = vol.luks2_header()?;
    let json = h.json_value();
    let mut out = String::new();
    if a.json {
        let b = bin_info(&vol, h);
        let wrapped = wrapped::dump_info(h, ops_message).map(|d| {
            serde_json::json!({
                "provider": d.provider, "uri": d.uri,
                "protection": d.protection.as_ref().ok(),
                "protection-error": d.protection.as_ref().err(),
                "verification-pattern": d.vp,
            })
        });
        println!(
            "{}",
            serde_json::json!({
                "version": 2, "epoch": b.seqid, "metadata-area-bytes": b.hdr_size,
                "uuid": b.uuid, "label": b.label, "subsystem": b.subsystem,
                "checksum-algorithm": b.checksum_alg,
                "reencryption": matches!(h.meta.reencrypt_state(), Ok(Some(_))),
                "metadata": json, "wrapped-key": wrapped,
            })
        );
        return Ok(());
    }
    if a.dump_json_metadata {
        dump::luks2_json_dump(&json, &mut out);
        print!("{out}");
        return Ok(());
    }
    if a.dump_volume_key || a.unbound {
        return dump_key(g, a, &vol);
    }
    dump::luks2_dump(&bin_info(&vol, h), &json, &mut out);
    if let Some(extra) = wrapped::dump_lines(h, ops_message) {
        out.push_str(&extra);
    }
    print!("{out}");
    Ok(())
}

const KEY_DUMP_WARNING: &str = "\nWARNING!\n========\nHeader dump with volume key is sensitive information\nthat allows access to encrypted partition without a passphrase.\nThis dump should be stored encrypted in a safe place.\n";

fn dump_key(g: &Global, a: &DumpArgs, vol: &Volume) -> Result<(), CliError> {
    let dev = a.on.dev.device.as_str();
    let h = vol.luks2_header()?;
    let unbound = a.unbound;
    let slot = a.on.slot.key_slot;
    if unbound && slot.is_none() {
        return Err(CliError::usage("Option --unbound requires --key-slot."));
    }
    let mut pr = prompter(g, key_source(&a.on.key, None), None);
    pr.confirm(KEY_DUMP_WARNING)?;
    let p = pr.passphrase(&format!("Enter passphrase for {dev}: "))?;
    let u = vol.unlock(p.expose_secret(), slot, !unbound)?;
    // The text holds the key: build it in locked memory, print, wipe.
    let mut out = String::new();
    if unbound {
        dump::luks2_unbound_key_dump(
            dev,
            &bin_info(vol, h),
            u.keyslot,
            u.key.expose_secret(),
            &mut out,
        );
    } else {
        dump::luks2_volume_key_dump(
            dev,
            &bin_info(vol, h),
            &h.json_value(),
            u.key.expose_secret(),
            &mut out,
        );
    }
    {
        use std::io::Write;
        let mut so = std::io::stdout().lock();
        so.write_all(out.as_bytes())?;
        so.flush()?;
    }
    zeroize::Zeroize::zeroize(&mut out);
    Ok(())
}

/// isLuks: exit 0 for a LUKS device, 1 otherwise.
pub fn is_luks(a: &IsLuksArgs) -> Result<(), CliError> {
    match load(&a.dev, false) {
        Ok(v) => {
            if let Some(t) = a.kind.kind.as_deref() {
                let want = match t {
                    "luks1" => 1,
                    "luks2" => 2,
                    "luks" => v.version(),
                    _ => return Err(CliError::usage(format!("Unknown device type {t}."))),
                };
                if want != v.version() {
                    return Err(CliError::new(1, ""));
                }
            }
            Ok(())
        }
        // Silent even with --verbose, as cryptsetup 2.6.1 is.
        Err(e) if e.code == 1 => Err(CliError::new(1, "")),
        Err(e) => Err(e),
    }
}

/// luksUUID (with `--uuid`, sets it).
pub fn uuid(a: &UuidArgs) -> Result<(), CliError> {
    match a.uuid.as_deref() {
        None => {
            let v = load(&a.dev, false)?;
            println!("{}", v.uuid());
            Ok(())
        }
        Some(u) => {
            if !wrapcrypt_volume::format::valid_uuid(u) {
                return Err(CliError::usage("Wrong LUKS UUID format provided."));
            }
            let mut v = load(&a.dev, true)?;
            v.set_uuid(&u.to_lowercase())?;
            Ok(())
        }
    }
}

/// luksDump of a LUKS1 header (with `--dump-volume-key`, after unlocking).
fn dump1(g: &Global, a: &DumpArgs, vol: &Volume) -> Result<(), CliError> {
    let h = vol.luks1_header()?;
    let dev = a.on.dev.device.as_str();
    if a.dump_json_metadata {
        return Err(CliError::usage(format!(
            "Device {dev} is not a valid LUKS2 device."
        )));
    }
    if a.json {
        let slots: Vec<_> = h
            .keyslots()
            .iter()
            .enumerate()
            .map(|(i, k)| {
                serde_json::json!({
                    "id": i, "active": k.is_active(), "iterations": k.iterations,
                    "key-material-offset-sectors": k.key_material_offset,
                    "stripes": k.stripes,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "version": 1, "uuid": h.uuid(), "cipher": h.cipher_name(),
                "cipher-mode": h.cipher_mode(), "hash": h.hash_spec(),
                "payload-offset-sectors": h.payload_offset(),
                "key-bits": h.key_bytes() * 8, "mk-digest-iterations": h.mk_digest_iter(),
                "keyslots": slots,
            })
        );
        return Ok(());
    }
    let mut out = String::new();
    if a.dump_volume_key {
        let mut pr = prompter(g, key_source(&a.on.key, None), None);
        pr.confirm(KEY_DUMP_WARNING)?;
        let p = pr.passphrase(&format!("Enter passphrase for {dev}: "))?;
        let u = vol.unlock(p.expose_secret(), a.on.slot.key_slot, true)?;
        dump::luks1_volume_key_dump(dev, h, u.key.expose_secret(), &mut out);
        let r = std::io::stdout().write_all(out.as_bytes());
        zeroize::Zeroize::zeroize(&mut out);
        r?;
        return Ok(());
    }
    dump::luks1_dump(dev, h, &mut out);
    print!("{out}");
    Ok(())
}

/// luksHeaderBackup --header-backup-file FILE.
pub fn backup(a: &BackupArgs) -> Result<(), CliError> {
    if a.header_backup_file.is_none() {
        return Err(CliError::usage("Option --header-backup-file is required."));
    }
    let vol = load(&a.dev, false)?;
    backup::backup(&vol, a.header_backup_file.as_deref())?;
    Ok(())
}

/// luksHeaderRestore --header-backup-file FILE.
pub fn restore(g: &Global, a: &BackupArgs) -> Result<(), CliError> {
    let (dev, hdr) = paths(&a.dev);
    let mut p = prompter(g, None, None);
    backup::restore(hdr.unwrap_or(dev), a.header_backup_file.as_deref(), &mut p)?;
    Ok(())
}

/// convert --type luks1|luks2 DEVICE.
pub fn convert(g: &Global, a: &ConvertArgs) -> Result<(), CliError> {
    let to = match a.kind.kind.as_deref() {
        Some("luks1") => 1,
        Some("luks2") => 2,
        _ => {
            return Err(CliError::usage(
                "Invalid LUKS type, only luks1 and luks2 are supported.",
            ))
        }
    };
    let dev = a.dev.device.as_str();
    let mut vol = load(&a.dev, true)?;
    if vol.version() == to {
        return Err(CliError::usage(format!("Device is already LUKS{to} type.")));
    }
    if wrapcrypt_activate::is_backing_in_use(Path::new(dev)).is_some() {
        return Err(CliError::new(
            5,
            format!("Cannot convert device {dev} which is still in use."),
        ));
    }
    prompter(g, None, None).confirm(&format!(
        "\nWARNING!\n========\nThis operation will convert {dev} to LUKS{to} format.\n"
    ))?;
    if to == 2 {
        vol.convert_to_luks2()?;
    } else {
        vol.convert_to_luks1()?;
    }
    Ok(())
}

/// config: --label, --subsystem, --priority with --key-slot.
pub fn config(a: &ConfigArgs) -> Result<(), CliError> {
    let mut v = load(&a.dev, true)?;
    v.check_requirements()?;
    let mut h = v.luks2_header()?.clone();
    if let Some(l) = &a.label {
        h.label = l.to_string();
    }
    if let Some(s) = &a.subsystem {
        h.subsystem = s.to_string();
    }
    if let Some(p) = a.priority.as_deref() {
        let prio = match p {
            "ignore" => 0,
            "normal" => 1,
            "prefer" => 2,
            _ => {
                return Err(CliError::usage(
                    "Option --priority can be only ignore/normal/prefer.",
                ))
            }
        };
        let ks = a
            .slot
            .key_slot
            .ok_or_else(|| CliError::usage("Keyslot specification is required."))?;
        let k = h
            .meta
            .keyslots
            .get_mut(&ks)
            .ok_or(VolumeError::KeyslotInactive(ks))?;
        k.priority = if prio == 1 { None } else { Some(prio) };
    }
    v.write_luks2(h)?;
    Ok(())
}

/// repair: rewrites a damaged or stale header copy from the good one.
pub fn repair(a: &RepairArgs) -> Result<(), CliError> {
    let mut v = load(&a.dev, true)?;
    if v.repair.is_none() {
        println!("No known problems detected for LUKS header.");
    } else {
        v.repair()?;
    }
    Ok(())
}
