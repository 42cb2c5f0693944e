//! Actions that read or rewrite header metadata: dump, UUID, backup and
//! restore, tokens, config, repair.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use wrapcrypt_format::dump;
use wrapcrypt_format::luks2::{self, Luks2Header, Token, TOKENS_MAX};
use wrapcrypt_volume::{Volume, VolumeError};

use crate::args::Args;
use crate::exit::CliError;
use crate::keys::{self, load};

fn verbose_ok(a: &Args) {
    if a.flag("verbose") {
        println!("Command successful.");
    }
}

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
pub fn dump(a: &Args) -> Result<(), CliError> {
    let vol = load(a, false)?;
    if vol.version() == 1 {
        return crate::luks1cmd::dump(a, &vol);
    }
    let h = vol.luks2_header()?;
    let json = h.json_value();
    let mut out = String::new();
    if a.flag("dump-json-metadata") {
        dump::luks2_json_dump(&json, &mut out);
        print!("{out}");
        return Ok(());
    }
    if a.flag("dump-volume-key") || a.flag("unbound") {
        return dump_key(a, &vol);
    }
    dump::luks2_dump(&bin_info(&vol, h), &json, &mut out);
    if let Some(extra) = crate::wrapped::dump_lines(h) {
        out.push_str(&extra);
    }
    print!("{out}");
    Ok(())
}

fn dump_key(a: &Args, vol: &Volume) -> Result<(), CliError> {
    let dev = a.pos(0, "<device>")?;
    let h = vol.luks2_header()?;
    let unbound = a.flag("unbound");
    let slot = keys::key_slot(a)?;
    if unbound && slot.is_none() {
        return Err(CliError::usage("Option --unbound requires --key-slot."));
    }
    crate::pass::confirm(
        "\nWARNING!\n========\nHeader dump with volume key is sensitive information\nthat allows access to encrypted partition without a passphrase.\nThis dump should be stored encrypted in a safe place.\n",
        a.batch(),
    )?;
    let p = keys::existing_passphrase(a, &format!("Enter passphrase for {dev}: "), None)?;
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
pub fn is_luks(a: &Args) -> Result<(), CliError> {
    match load(a, false) {
        Ok(v) => {
            if let Some(t) = a.get("type") {
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
            verbose_ok(a);
            Ok(())
        }
        Err(e) if e.code == 1 => Err(CliError::new(
            1,
            if a.flag("verbose") {
                e.msg
            } else {
                String::new()
            },
        )),
        Err(e) => Err(e),
    }
}

/// luksUUID (with `--uuid`, sets it).
pub fn uuid(a: &Args) -> Result<(), CliError> {
    match a.get("uuid") {
        None => {
            let v = load(a, false)?;
            println!("{}", v.uuid());
            Ok(())
        }
        Some(u) => {
            if !wrapcrypt_volume::format::valid_uuid(u) {
                return Err(CliError::usage("Wrong LUKS UUID format provided."));
            }
            let mut v = load(a, true)?;
            v.set_uuid(&u.to_lowercase())?;
            Ok(())
        }
    }
}

/// luksHeaderBackup --header-backup-file FILE.
pub fn backup(a: &Args) -> Result<(), CliError> {
    let file = a
        .get("header-backup-file")
        .ok_or_else(|| CliError::usage("Option --header-backup-file is required."))?;
    let vol = load(a, false)?;
    let data = vol
        .meta_device()
        .read_at(0, vol.backup_len() as usize)
        .map_err(|e| VolumeError::Io {
            op: "reading header",
            path: vol.meta_device().path().display().to_string(),
            source: e,
        })?;
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CliError::usage(format!(
                "Requested header backup file {file} already exists."
            )))
        }
        Err(e) => {
            return Err(CliError::new(
                4,
                format!("Cannot create header backup file {file}: {e}"),
            ))
        }
    };
    use std::io::Write;
    f.write_all(&data)?;
    f.sync_all()?;
    verbose_ok(a);
    Ok(())
}

/// luksHeaderRestore --header-backup-file FILE.
pub fn restore(a: &Args) -> Result<(), CliError> {
    let file = a
        .get("header-backup-file")
        .ok_or_else(|| CliError::usage("Option --header-backup-file is required."))?;
    let (dev, hdr) = keys::device(a)?;
    let target = hdr.unwrap_or(dev);
    let mut data = Vec::new();
    std::fs::File::open(file)
        .map_err(|e| CliError::new(4, format!("Cannot open header backup file {file}: {e}")))?
        .read_to_end(&mut data)?;
    if data.len() >= 8 && data[..6] == wrapcrypt_format::luks1::LUKS_MAGIC && data[6..8] == [0, 1] {
        crate::luks1cmd::restore(a, target, &data, file)?;
        verbose_ok(a);
        return Ok(());
    }
    let loaded =
        Luks2Header::parse(&data[..data.len().min(luks2::MAX_METADATA_PREFIX)]).map_err(|_| {
            CliError::usage(format!(
                "Backup file {file} doesn't contain valid LUKS header."
            ))
        })?;
    let need = loaded.header.meta.keyslots_end(loaded.header.hdr_size) as usize;
    if data.len() < need {
        return Err(CliError::usage(format!(
            "Backup file {file} doesn't contain valid LUKS header."
        )));
    }
    let dev_handle =
        wrapcrypt_volume::Device::open(target, true).map_err(|source| VolumeError::Device {
            path: target.display().to_string(),
            source,
        })?;
    let _lock = wrapcrypt_volume::MetadataLock::acquire(&dev_handle, true)?;
    if dev_handle.size()? < need as u64 {
        return Err(CliError::new(
            4,
            format!("Device {} is too small.", target.display()),
        ));
    }
    // Replacing an existing LUKS header destroys its keyslots: confirm.
    let prefix = dev_handle.read_at(0, luks2::MAX_METADATA_PREFIX)?;
    if let Ok(cur) = Luks2Header::parse(&prefix) {
        let msg = if cur.header.uuid != loaded.header.uuid {
            format!("\nWARNING!\n========\nDevice {} already contains LUKS2 header with different UUID.\nReplacing header will destroy existing keyslots.\n", target.display())
        } else {
            format!("\nWARNING!\n========\nDevice {} already contains LUKS2 header.\nReplacing header will destroy existing keyslots.\n", target.display())
        };
        crate::pass::confirm(&msg, a.batch())?;
    }
    // Keyslots area first, then the header copies (primary last), each durable.
    let hs = loaded.header.hdr_size as usize;
    let io = |e| VolumeError::Io {
        op: "restoring header",
        path: target.display().to_string(),
        source: e,
    };
    dev_handle
        .write_at(2 * hs as u64, &data[2 * hs..need])
        .map_err(io)?;
    dev_handle.sync().map_err(io)?;
    dev_handle
        .write_at(hs as u64, &data[hs..2 * hs])
        .map_err(io)?;
    dev_handle.sync().map_err(io)?;
    dev_handle.write_at(0, &data[..hs]).map_err(io)?;
    dev_handle.sync().map_err(io)?;
    verbose_ok(a);
    Ok(())
}

/// token add|remove|import|export.
pub fn token(a: &Args) -> Result<(), CliError> {
    let sub = a.pos(0, "<add|remove|import|export>")?;
    let dev = a.pos(1, "<device>")?;
    let hdr = a.get("header").map(Path::new);
    let token_id: Option<u32> = a.num("token-id")?;
    match sub {
        "export" => {
            let id = token_id
                .ok_or_else(|| CliError::usage("Option --token-id is required for this action."))?;
            let v = Volume::open(Path::new(dev), hdr, false)?;
            let h = v.luks2_header()?;
            let t = h
                .meta
                .tokens
                .get(&id)
                .ok_or_else(|| CliError::usage(format!("Token {id} is not in use.")))?;
            print!("{}", serde_json::to_string(&t.to_json()).expect("JSON"));
            Ok(())
        }
        "remove" => {
            let id = token_id
                .ok_or_else(|| CliError::usage("Option --token-id is required for this action."))?;
            let mut v = Volume::open(Path::new(dev), hdr, true)?;
            v.check_requirements()?;
            let mut h = v.luks2_header()?.clone();
            if h.meta.tokens.remove(&id).is_none() {
                return Err(CliError::usage(format!("Token {id} is not in use.")));
            }
            v.write_luks2(h)?;
            if a.flag("verbose") {
                println!("Token {id} removed.");
            }
            verbose_ok(a);
            Ok(())
        }
        "import" | "add" => {
            let mut v = Volume::open(Path::new(dev), hdr, true)?;
            v.check_requirements()?;
            let mut h = v.luks2_header()?.clone();
            let mut value: serde_json::Value = if sub == "import" {
                let mut text = String::new();
                match a.get("json-file") {
                    Some(f) if f != "-" => {
                        std::fs::File::open(f)?.read_to_string(&mut text)?;
                    }
                    _ => {
                        std::io::stdin().read_to_string(&mut text)?;
                    }
                }
                serde_json::from_str(&text)
                    .map_err(|e| CliError::usage(format!("Failed to parse token JSON: {e}")))?
            } else {
                let desc = a.get("key-description").ok_or_else(|| {
                    CliError::usage("Option --key-description is required for this action.")
                })?;
                serde_json::json!({"type": "luks2-keyring", "keyslots": [], "key_description": desc})
            };
            if let Some(ks) = keys::key_slot(a)? {
                if !h.meta.keyslots.contains_key(&ks) {
                    return Err(VolumeError::KeyslotInactive(ks).into());
                }
                if let Some(arr) = value.get_mut("keyslots").and_then(|k| k.as_array_mut()) {
                    let s = serde_json::Value::String(ks.to_string());
                    if !arr.contains(&s) {
                        arr.push(s);
                    }
                }
            }
            let id = match token_id {
                Some(id) => {
                    if h.meta.tokens.contains_key(&id) && !a.flag("token-replace") {
                        return Err(CliError::usage(format!("Token {id} in use.")));
                    }
                    id
                }
                None => (0..TOKENS_MAX)
                    .find(|i| !h.meta.tokens.contains_key(i))
                    .ok_or_else(|| CliError::usage("No free token slot."))?,
            };
            if id >= TOKENS_MAX {
                return Err(CliError::usage(format!("Token {id} is invalid.")));
            }
            let t = Token::from_json(id, &value)
                .map_err(|e| CliError::usage(format!("Invalid token: {e}")))?;
            h.meta.tokens.insert(id, t);
            v.write_luks2(h)?;
            if a.flag("verbose") {
                println!("Token {id} created.");
            }
            verbose_ok(a);
            Ok(())
        }
        other => Err(CliError::usage(format!("Unknown token action {other}."))),
    }
}

/// config: --label, --subsystem, --priority with --key-slot.
pub fn config(a: &Args) -> Result<(), CliError> {
    let mut v = load(a, true)?;
    v.check_requirements()?;
    let mut h = v.luks2_header()?.clone();
    if let Some(l) = a.get("label") {
        h.label = l.to_string();
    }
    if let Some(s) = a.get("subsystem") {
        h.subsystem = s.to_string();
    }
    if let Some(p) = a.get("priority") {
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
        let ks = keys::key_slot(a)?
            .ok_or_else(|| CliError::usage("Keyslot specification is required."))?;
        let k = h
            .meta
            .keyslots
            .get_mut(&ks)
            .ok_or(VolumeError::KeyslotInactive(ks))?;
        k.priority = if prio == 1 { None } else { Some(prio) };
    }
    v.write_luks2(h)?;
    verbose_ok(a);
    Ok(())
}

/// repair: rewrites a damaged or stale header copy from the good one.
pub fn repair(a: &Args) -> Result<(), CliError> {
    let mut v = load(a, true)?;
    if v.repair.is_none() {
        println!("No known problems detected for LUKS header.");
    } else {
        v.repair()?;
    }
    verbose_ok(a);
    Ok(())
}
