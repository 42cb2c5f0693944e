//! `wrapcrypt fleet register DEVICE…` and `wrapcrypt fleet inventory`: the
//! central volume inventory in the KMIP key manager; `fleet escrow
//! DEVICE…` and `fleet restore-header DEVICE`: header backups kept there
//! (docs/fleet.md). The workflows are `wrapcrypt_ops::fleet` and
//! `wrapcrypt_ops::escrow`; this maps options and prints.

use std::path::{Path, PathBuf};

use serde_json::json;
use wrapcrypt_ops::escrow;
use wrapcrypt_ops::fleet::{self, Reference};

use super::common::prompter;
use crate::cli::opts::Global;
use crate::cli::FleetArgs;
use crate::exit::CliError;

/// `--kmip-config FILE`, else the custodian's (WRAPCRYPT_CUSTODIAN_KMIP_CONFIG),
/// else /etc/wrapcrypt/kmip.conf.
fn config_path(a: &FleetArgs) -> PathBuf {
    a.kmip_config
        .as_ref()
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("WRAPCRYPT_CUSTODIAN_KMIP_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/wrapcrypt/kmip.conf"))
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

/// fleet register|inventory|escrow|restore-header
pub fn run(g: &Global, a: &FleetArgs) -> Result<(), CliError> {
    let host = a.host.clone().unwrap_or_else(fleet::host_name);
    match a.sub.as_str() {
        "register" => register(a, &host),
        "inventory" => inventory(a, &host),
        "escrow" => escrow(a, &host),
        "restore-header" => restore_header(g, a),
        "rotate" => super::rotate::run(a, &config_path(a)),
        other => Err(CliError::usage(format!(
            "Unknown fleet action {other} (use register, inventory, escrow, restore-header or rotate)."
        ))),
    }
}

fn escrow(a: &FleetArgs, host: &str) -> Result<(), CliError> {
    if a.devices.is_empty() {
        return Err(CliError::usage("fleet escrow needs at least one DEVICE."));
    }
    // Read every backup first: a bad device changes nothing in the key manager.
    let backups = a
        .devices
        .iter()
        .map(|d| escrow::read_backup(Path::new(d)))
        .collect::<Result<Vec<_>, _>>()?;
    let (cfg, mut client) = fleet::connect(&config_path(a))?;
    let mut done = vec![];
    for (dev, (uuid, data)) in a.devices.iter().zip(&backups) {
        let e = escrow::escrow(&mut client, &cfg.group, host, dev, uuid, data)?;
        if !a.json {
            println!(
                "{dev} {uuid} escrowed as {} in {} ({} bytes of backup in {} parts, {} bytes stored){}",
                e.index,
                escrow::escrow_group(&cfg.group),
                e.backup_bytes,
                e.parts,
                e.stored_bytes,
                if e.replaced.is_empty() {
                    String::new()
                } else {
                    format!(" (replaced {})", e.replaced.join(", "))
                }
            );
        }
        done.push(json!({
            "device": dev, "uuid": uuid, "index": e.index, "parts": e.parts,
            "backup-bytes": e.backup_bytes, "stored-bytes": e.stored_bytes,
            "backup-sha256": e.sha256, "replaced": e.replaced,
        }));
    }
    if a.json {
        println!(
            "{}",
            json!({"group": escrow::escrow_group(&cfg.group), "escrowed": done})
        );
    }
    Ok(())
}

fn restore_header(g: &Global, a: &FleetArgs) -> Result<(), CliError> {
    let [target] = a.devices.as_slice() else {
        return Err(CliError::usage(
            "fleet restore-header needs exactly one DEVICE.",
        ));
    };
    let target = Path::new(target);
    let uuid = match &a.uuid {
        Some(u) => u.clone(),
        None => escrow::read_backup(target).map(|(u, _)| u).map_err(|_| {
            CliError::usage(format!(
                "Device {} has no readable LUKS header: name the volume with --uuid UUID.",
                target.display()
            ))
        })?,
    };
    let (cfg, mut client) = fleet::connect(&config_path(a))?;
    let f = escrow::fetch(&mut client, &cfg.group, &uuid)?;
    let mut p = prompter(g, None, None);
    escrow::restore(target, &f, &mut p)?;
    if a.json {
        println!(
            "{}",
            json!({"device": target.display().to_string(), "uuid": uuid, "index": f.index,
                   "escrowed-from": {"host": f.host, "device": f.device}, "escrowed-at": f.escrowed_at,
                   "backup-bytes": f.data.len()})
        );
    } else {
        println!(
            "{} restored from header escrow {} of {uuid} (escrowed from {}:{} at {}).",
            target.display(),
            f.index,
            f.host,
            f.device,
            f.escrowed_at
        );
    }
    Ok(())
}

fn register(a: &FleetArgs, host: &str) -> Result<(), CliError> {
    if a.devices.is_empty() {
        return Err(CliError::usage("fleet register needs at least one DEVICE."));
    }
    // Read every header first: a bad device changes nothing in the key manager.
    let records = a
        .devices
        .iter()
        .map(|d| fleet::read_record(Path::new(d), host))
        .collect::<Result<Vec<_>, _>>()?;
    let (cfg, mut client) = fleet::connect(&config_path(a))?;
    let mut done = vec![];
    let regs = fleet::register_all(&mut client, &cfg.group, &records)?;
    for (r, reg) in records.iter().zip(regs) {
        if !a.json {
            println!(
                "{} {} registered as {} in {}{}",
                r.device,
                r.uuid,
                reg.id,
                fleet::inventory_group(&cfg.group),
                if reg.replaced.is_empty() {
                    String::new()
                } else {
                    format!(" (replaced {})", reg.replaced.join(", "))
                }
            );
        }
        done.push(
            json!({"device": r.device, "uuid": r.uuid, "id": reg.id, "replaced": reg.replaced}),
        );
    }
    if a.json {
        println!(
            "{}",
            json!({"group": fleet::inventory_group(&cfg.group), "registered": done})
        );
    }
    Ok(())
}

fn inventory(a: &FleetArgs, host: &str) -> Result<(), CliError> {
    if !a.devices.is_empty() {
        return Err(CliError::usage("fleet inventory takes no DEVICE."));
    }
    if let Some(m) = &a.current_mkvp {
        let m = m.trim_start_matches("mkvp:");
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(CliError::usage("--current-mkvp must be hex digits."));
        }
    }
    let (cfg, mut client) = fleet::connect(&config_path(a))?;
    let inv = fleet::inventory(&mut client, &cfg.group, host, a.current_mkvp.as_deref())?;
    if a.json {
        let vols: Vec<_> = inv
            .rows
            .iter()
            .map(|r| {
                let mut v = r.record.to_json();
                v["id"] = r.id.clone().into();
                v["header-checked"] = r.checked.into();
                v["flags"] = r.flags.clone().into();
                v
            })
            .collect();
        let (rk, rs) = match &inv.reference {
            Some((k, Reference::Given)) => (Some(k.clone()), Some("current-mkvp")),
            Some((k, Reference::MostCommon)) => (Some(k.clone()), Some("most-common")),
            None => (None, None),
        };
        let skipped: Vec<_> = inv
            .skipped
            .iter()
            .map(|(id, why)| json!({"id": id, "error": why}))
            .collect();
        println!(
            "{}",
            json!({
                "group": inv.group, "host": host,
                "reference-wrapping-key": rk, "reference": rs,
                "volumes": vols, "stale": inv.stale, "skipped": skipped,
            })
        );
        return Ok(());
    }
    println!(
        "{:<12} {:<24} {:<36} {:<18} {:<10} {:<16} {:<18} FLAGS",
        "HOST", "DEVICE", "UUID", "CIPHER", "PROVIDER", "VP", "MASTER KEY"
    );
    let short = |s: &Option<String>, n: usize| -> String {
        let s = opt(s);
        if s.len() > n {
            format!("{}…", &s[..n - 1])
        } else {
            s.to_string()
        }
    };
    for r in &inv.rows {
        let x = &r.record;
        println!(
            "{:<12} {:<24} {:<36} {:<18} {:<10} {:<16} {:<18} {}",
            x.host,
            x.device,
            x.uuid,
            x.cipher,
            opt(&x.provider),
            short(&x.vp, 16),
            short(&x.wrapping_key, 18),
            if r.flags.is_empty() {
                "-".to_string()
            } else {
                r.flags.join(",")
            }
        );
    }
    match &inv.reference {
        Some((k, Reference::Given)) => println!("Reference master key (--current-mkvp): {k}"),
        Some((k, Reference::MostCommon)) => {
            println!("Reference master key (the most common one): {k}")
        }
        None => {}
    }
    for (id, why) in &inv.skipped {
        println!("Skipped object {id}: {why}");
    }
    Ok(())
}
