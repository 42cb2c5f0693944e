//! The wrapped-key lifecycle, as zkey-cryptsetup does it for `paes`:
//! `validate`, `reencipher [--staged|--in-place|--complete]
//! [--to-new|--from-old]`, `setvp`, `setkey`, and `convert --cipher
//! waes-xts-plain64`. The on-disk state machine is
//! `wrapcrypt_volume::rewrap`; docs/reencipher.md has the procedure, the
//! write sequences and the keyslot policy.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use wrapcrypt_format::luks2::Luks2Header;
use wrapcrypt_provider::{KeyProvider, KeySpec, KeyState, RewrapDirection, Wkb};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_volume::rewrap::{
    self, CompleteOptions, OnDisk, ReencipherToken, RewrapError, SlotPass, Staged,
};
use wrapcrypt_volume::{Unlocked, Volume, VolumeError};

use crate::args::Args;
use crate::exit::CliError;
use crate::{keys, pass, provider};

impl From<RewrapError> for CliError {
    fn from(e: RewrapError) -> CliError {
        match e {
            RewrapError::Volume(v) => v.into(),
            RewrapError::Provider(p) => p.into(),
            e @ (RewrapError::VpMismatch { .. }
            | RewrapError::NotVolumeKey(_)
            | RewrapError::NoStagedKeyslot(_)) => CliError::new(2, e.to_string()),
            e => CliError::usage(e.to_string()),
        }
    }
}

fn wkb_of(blob: &SecretBytes) -> Result<Wkb, CliError> {
    Wkb::parse(blob.expose_secret())
        .map_err(|e| CliError::usage(format!("Stored wrapped key is invalid: {e}")))
}

/// The provider of a wrapped volume (no VP check: setvp and validate
/// compare themselves).
fn provider_of(a: &Args, h: &Luks2Header, wkb: &Wkb) -> Result<Arc<dyn KeyProvider>, CliError> {
    let (name, locator) =
        provider::recorded(h).unwrap_or_else(|| (wkb.provider().to_string(), None));
    let locator = a
        .get("key-provider")
        .filter(|k| k.starts_with("pkcs11:"))
        .map(str::to_string)
        .or(locator);
    let prov = provider::by_name(&name, locator.as_deref(), a.get("pin-file"))?;
    if wkb.provider() != prov.name() {
        return Err(CliError::usage(format!(
            "Wrapped key belongs to provider {}, but the volume names {name}.",
            wkb.provider()
        )));
    }
    Ok(prov)
}

fn segment_cipher(h: &Luks2Header) -> String {
    h.meta
        .crypt_segment_id()
        .and_then(|s| h.meta.segments[&s].encryption.clone())
        .unwrap_or_default()
}

fn require_waes(h: &Luks2Header) -> Result<(), CliError> {
    let c = segment_cipher(h);
    if c.starts_with("waes-") {
        Ok(())
    } else if c.starts_with("paes-") {
        Err(CliError::usage(format!(
            "Cipher {c}: IBM secure keys are re-enciphered by the CCA/EP11 coprocessor (zkey-cryptsetup); wrapcrypt manages only their header."
        )))
    } else {
        Err(CliError::usage(format!(
            "Cipher {c} is not a wrapped-key cipher (convert it with wrapcrypt convert --cipher waes-xts-plain64)."
        )))
    }
}

/// Keyslots unlocked with their passphrases, and bound keyslots of the
/// same key whose passphrase was not given.
struct Unlocks {
    slots: Vec<(Unlocked, SecretBytes)>,
    skipped: Vec<u32>,
}

impl Unlocks {
    fn passes(&self) -> Vec<SlotPass<'_>> {
        self.slots
            .iter()
            .map(|(u, p)| SlotPass {
                unlocked: u,
                passphrase: p.expose_secret(),
            })
            .collect()
    }

    fn key(&self) -> &SecretBytes {
        &self.slots[0].0.key
    }
}

/// Unlocks with the given passphrase, then asks for the passphrase of
/// every other keyslot bound to the volume key (one line each; an empty
/// line or end of input leaves that keyslot out).
fn unlock_all(a: &Args, vol: &Volume) -> Result<Unlocks, CliError> {
    let dev = a.pos(0, "<device>")?;
    let p = keys::existing_passphrase(a, &format!("Enter passphrase for {dev}: "), None)?;
    let first = vol.unlock(p.expose_secret(), keys::key_slot(a)?, true)?;
    let h = vol.luks2_header()?;
    let did = h
        .meta
        .digest_of_keyslot(first.keyslot)
        .expect("unlocked keyslot has a digest");
    let others: Vec<u32> = h.meta.digests[&did]
        .keyslots
        .iter()
        .copied()
        .filter(|&k| k != first.keyslot)
        .collect();
    let mut out = Unlocks {
        slots: vec![(first, p)],
        skipped: vec![],
    };
    for k in others {
        let line = pass::read_line(&format!(
            "Enter passphrase for key slot {k} (empty line: leave it out): "
        ));
        match line {
            Ok(p) if !p.is_empty() => {
                let u = vol.unlock(p.expose_secret(), Some(k), true)?;
                out.slots.push((u, p));
            }
            _ => out.skipped.push(k),
        }
    }
    Ok(out)
}

fn confirm_drop(a: &Args, skipped: &[u32], when: &str) -> Result<bool, CliError> {
    if skipped.is_empty() {
        return Ok(false);
    }
    pass::confirm(
        &format!(
            "\nWARNING!\n========\nKeyslot(s) {skipped:?} hold the volume key but their passphrases were not given;\nthey will be removed {when}. Re-add passphrases afterwards with luksAddKey.\n"
        ),
        a.batch(),
    )?;
    Ok(true)
}

fn stored_vp_of(h: &Luks2Header) -> Result<String, CliError> {
    rewrap::stored_vp(h).ok_or_else(|| {
        CliError::usage(
            "The volume has no waes-verification-pattern token; run wrapcrypt setvp first.",
        )
    })
}

fn dir_name(d: RewrapDirection) -> &'static str {
    match d {
        RewrapDirection::ToNew => "CURRENT -> NEW",
        RewrapDirection::FromOld => "OLD -> CURRENT",
    }
}

/// reencipher DEVICE [--to-new|--from-old] [--staged|--in-place|--complete]
pub fn reencipher(a: &Args) -> Result<(), CliError> {
    let dev = a.pos(0, "<device>")?.to_string();
    let modes = ["staged", "in-place", "complete"]
        .iter()
        .filter(|m| a.flag(m))
        .count();
    if modes > 1 {
        return Err(CliError::usage(
            "Use only one of --staged, --in-place, --complete.",
        ));
    }
    if a.flag("to-new") && a.flag("from-old") {
        return Err(CliError::usage("Use only one of --to-new, --from-old."));
    }
    let vol = keys::load(a, true)?;
    require_waes(vol.luks2_header()?)?;
    let vol = match rewrap::recover(vol)? {
        OnDisk::Staged(st) => {
            if a.flag("complete") || modes == 0 {
                return complete(a, &dev, st);
            }
            if !a.flag("force") {
                let t = st.token();
                return Err(RewrapError::AlreadyStaged {
                    original: t.original,
                    unbound: t.unbound,
                }
                .into());
            }
            eprintln!("Discarding the earlier staged re-encipher (--force).");
            st.cancel()?
        }
        OnDisk::Idle(vol) => {
            if a.flag("complete") {
                return Err(RewrapError::NotStaged.into());
            }
            vol
        }
    };
    let h = vol.luks2_header()?.clone();
    let stored = stored_vp_of(&h)?;
    let un = unlock_all(a, &vol)?;
    let old = wkb_of(un.key())?;
    let prov = crate::wrapped::resolve(a, &h, un.key())?.provider;
    let dir = if a.flag("to-new") {
        RewrapDirection::ToNew
    } else if a.flag("from-old") {
        RewrapDirection::FromOld
    } else {
        match prov.validate(&old)?.state {
            KeyState::Old => RewrapDirection::FromOld,
            _ => RewrapDirection::ToNew,
        }
    };
    let in_place = match (a.flag("in-place"), a.flag("staged")) {
        (true, _) => true,
        (_, true) => false,
        _ => dir == RewrapDirection::FromOld,
    };
    if in_place && dir == RewrapDirection::ToNew {
        return Err(CliError::usage(
            "An in-place re-encipher --to-new would make the volume depend on the NEW register, which a later load-new-master-key replaces; use --staged (then --complete after set-master-key).",
        ));
    }
    let new = prov.rewrap(&old, dir)?;
    let new_vp = prov.verification_pattern(&new)?;
    if !new_vp.eq_ignore_ascii_case(&stored) {
        return Err(RewrapError::VpMismatch {
            expected: stored,
            got: new_vp,
        }
        .into());
    }
    let when = if in_place { "now" } else { "at --complete" };
    let drop = confirm_drop(a, &un.skipped, when)?;
    let blob = SecretBytes::copy_from(&new.encode());
    let pb = pbkdf_override(a)?;
    let staged = Staged::stage(vol, &blob, &new_vp, &un.passes(), pb.as_ref())?;
    let pairs = staged.token().pairs();
    if !in_place {
        println!(
            "Staged re-encipher ({}) of {dev}: {}.",
            dir_name(dir),
            pairs
                .iter()
                .map(|(o, u)| format!("keyslot {o} -> unbound keyslot {u}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("Next: set the new master key (wrapcrypt custodian set-master-key), then wrapcrypt reencipher --complete {dev}.");
        return Ok(());
    }
    let done = staged.complete_with_blob(
        &blob,
        prov.as_ref(),
        CompleteOptions {
            replace_vp: false,
            drop_unstaged: drop,
        },
    )?;
    println!(
        "Re-enciphered {dev} in place ({}): keyslot(s) {:?} hold the re-wrapped key; keyslot(s) {:?} removed.",
        dir_name(dir),
        done.keyslots,
        done.removed
    );
    Ok(())
}

fn pbkdf_override(a: &Args) -> Result<Option<wrapcrypt_volume::PbkdfOptions>, CliError> {
    let p = keys::pbkdf_opts(a)?;
    let any = p.kind.is_some() || p.iter_time_ms.is_some() || p.force_iterations.is_some();
    Ok(any.then_some(p))
}

fn complete(a: &Args, dev: &str, st: Staged) -> Result<(), CliError> {
    let h = st.volume().luks2_header()?.clone();
    let (name, locator) = provider::recorded(&h).unwrap_or_else(|| ("custodian".into(), None));
    let locator = a
        .get("key-provider")
        .filter(|k| k.starts_with("pkcs11:"))
        .map(str::to_string)
        .or(locator);
    let prov = provider::by_name(&name, locator.as_deref(), a.get("pin-file"))?;
    let unstaged = st.unstaged()?;
    let p = keys::existing_passphrase(a, &format!("Enter passphrase for {dev}: "), None)?;
    let drop = confirm_drop(a, &unstaged, "now")?;
    let done = st.complete(
        p.expose_secret(),
        prov.as_ref(),
        CompleteOptions {
            replace_vp: false,
            drop_unstaged: drop,
        },
    )?;
    println!(
        "Re-encipher of {dev} completed: keyslot(s) {:?} hold the volume key; keyslot(s) {:?} removed.",
        done.keyslots, done.removed
    );
    Ok(())
}

/// What validate found.
struct Report {
    cipher: String,
    provider: String,
    protection: String,
    wrapping_key: String,
    register: Option<String>,
    state: String,
    usable: bool,
    vp_now: Option<String>,
    vp_stored: Option<String>,
    keyslot: u32,
    staged: Option<(ReencipherToken, Option<String>)>,
}

/// validate DEVICE [--json]
pub fn validate(a: &Args) -> Result<(), CliError> {
    let dev = a.pos(0, "<device>")?.to_string();
    let vol = keys::load(a, false)?;
    let h = vol.luks2_header()?.clone();
    require_waes(&h)?;
    let p = keys::existing_passphrase(a, &format!("Enter passphrase for {dev}: "), None)?;
    let u = vol.unlock(p.expose_secret(), keys::key_slot(a)?, true)?;
    let wkb = wkb_of(&u.key)?;
    let prov = provider_of(a, &h, &wkb)?;
    let status = prov.validate(&wkb)?;
    let usable = status.state.is_usable();
    let vp_now = if usable {
        Some(prov.verification_pattern(&wkb)?)
    } else {
        None
    };
    let staged = match ReencipherToken::find(&h)? {
        None => None,
        Some(t) => {
            // The staged blob's state, when this passphrase opens its copy.
            let state = t.unbound_keyslots().into_iter().find_map(|k| {
                let s = vol.unlock(p.expose_secret(), Some(k), false).ok()?;
                let w = Wkb::parse(s.key.expose_secret()).ok()?;
                let st = prov.validate(&w).ok()?;
                Some(format!(
                    "{}{}",
                    st.state,
                    st.register.map(|r| format!(" ({r})")).unwrap_or_default()
                ))
            });
            Some((t, state))
        }
    };
    let r = Report {
        cipher: segment_cipher(&h),
        provider: prov.name().to_string(),
        protection: status.protection.to_string(),
        wrapping_key: status.wrapping_key.clone(),
        register: status.register.map(|r| r.to_string()),
        state: status.state.to_string(),
        usable,
        vp_now,
        vp_stored: rewrap::stored_vp(&h),
        keyslot: u.keyslot,
        staged,
    };
    let matches = match (&r.vp_now, &r.vp_stored) {
        (Some(n), Some(s)) => Some(n.eq_ignore_ascii_case(s)),
        _ => None,
    };
    if a.flag("json") {
        let staged = r.staged.as_ref().map(|(t, st)| {
            json!({"original-keyslot": t.original, "unbound-keyslot": t.unbound,
                   "more-keyslots": t.more, "verification-pattern": t.vp, "state": st})
        });
        println!(
            "{}",
            json!({
                "device": dev, "cipher": r.cipher, "provider": r.provider,
                "protection": r.protection, "wrapping-key": r.wrapping_key,
                "register": r.register, "state": r.state, "usable": r.usable,
                "keyslot": r.keyslot,
                "verification-pattern": r.vp_now, "stored-verification-pattern": r.vp_stored,
                "verification-pattern-matches": matches, "reencipher-staged": staged,
            })
        );
    } else {
        println!("Validation of the wrapped volume key of {dev}:");
        println!(
            "  Status:                {}",
            if r.usable { "Valid" } else { "Invalid" }
        );
        println!("  State:                 {}", r.state);
        println!("  Cipher:                {}", r.cipher);
        println!("  Provider:              {}", r.provider);
        println!("  Protection:            {}", r.protection);
        println!("  Wrapping key:          {}", r.wrapping_key);
        println!(
            "  Register:              {}",
            r.register.as_deref().unwrap_or("-")
        );
        println!("  Keyslot:               {}", r.keyslot);
        println!(
            "  Verification pattern:  {}",
            r.vp_now.as_deref().unwrap_or("(not computable)")
        );
        println!(
            "  Stored pattern:        {}",
            r.vp_stored.as_deref().unwrap_or("(none: run setvp)")
        );
        println!(
            "  Pattern matches:       {}",
            match matches {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "unknown",
            }
        );
        match &r.staged {
            None => println!("  Re-encipher pending:   no"),
            Some((t, st)) => println!(
                "  Re-encipher pending:   yes: {} (new key {}); run reencipher --complete after set-master-key",
                t.pairs()
                    .iter()
                    .map(|(o, u)| format!("keyslot {o} -> {u}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                st.as_deref().unwrap_or("not opened by this passphrase")
            ),
        }
        if r.state == KeyState::Old.to_string() {
            println!("  Note: the key is wrapped under the OLD master key; it stops working at the next master-key change: run wrapcrypt reencipher --from-old {dev}.");
        }
    }
    match (r.usable, matches) {
        (false, _) => Err(CliError::new(1, "")),
        (true, Some(true)) => Ok(()),
        (true, Some(false)) => Err(CliError::new(2, "")),
        (true, None) => Err(CliError::new(1, "")),
    }
}

/// setvp DEVICE: computes the VP through the provider and stores it.
pub fn setvp(a: &Args) -> Result<(), CliError> {
    let mut vol = keys::load(a, true)?;
    vol.check_requirements()?;
    let mut h = vol.luks2_header()?.clone();
    require_waes(&h)?;
    let dev = a.pos(0, "<device>")?;
    let p = keys::existing_passphrase(a, &format!("Enter passphrase for {dev}: "), None)?;
    let u = vol.unlock(p.expose_secret(), keys::key_slot(a)?, true)?;
    let wkb = wkb_of(&u.key)?;
    let prov = provider_of(a, &h, &wkb)?;
    let vp = prov.verification_pattern(&wkb)?;
    match rewrap::stored_vp(&h) {
        Some(s) if s.eq_ignore_ascii_case(&vp) => {
            println!("Verification pattern unchanged: {vp}");
            return Ok(());
        }
        Some(s) => pass::confirm(
            &format!("\nWARNING!\n========\nThe stored verification pattern {s} differs from the key's {vp}.\nIt will be replaced.\n"),
            a.batch(),
        )?,
        None => {}
    }
    rewrap::set_vp_token(&mut h, &vp)?;
    vol.write_luks2(h)?;
    println!("Verification pattern set: {vp}");
    Ok(())
}

/// setkey DEVICE --volume-key-file WKB [--force]
pub fn setkey(a: &Args) -> Result<(), CliError> {
    let file = a
        .get("volume-key-file")
        .ok_or_else(|| CliError::usage("Command setkey requires --volume-key-file WKB."))?;
    let raw = pass::read_keyfile(file, 0, None)?;
    let new = Wkb::parse(raw.expose_secret())
        .map_err(|e| CliError::usage(format!("{file} is not a wrapped-key blob: {e}")))?;
    let vol = keys::load(a, true)?;
    require_waes(vol.luks2_header()?)?;
    let vol = match rewrap::recover(vol)? {
        OnDisk::Idle(v) => v,
        OnDisk::Staged(st) if a.flag("force") => {
            eprintln!("Discarding the staged re-encipher (--force).");
            st.cancel()?
        }
        OnDisk::Staged(st) => {
            let t = st.token();
            return Err(RewrapError::AlreadyStaged {
                original: t.original,
                unbound: t.unbound,
            }
            .into());
        }
    };
    let h = vol.luks2_header()?.clone();
    let prov = provider_of(a, &h, &new)?;
    let status = prov.validate(&new)?;
    if !status.state.is_usable() {
        return Err(CliError::usage(format!(
            "The wrapped key in {file} is not usable: {}",
            status.state
        )));
    }
    let new_vp = prov.verification_pattern(&new)?;
    let same = rewrap::stored_vp(&h).is_some_and(|s| s.eq_ignore_ascii_case(&new_vp));
    if !same {
        let stored = rewrap::stored_vp(&h).unwrap_or_else(|| "(none)".into());
        if !a.flag("force") {
            return Err(CliError::new(
                2,
                format!("The key in {file} is not this volume's key: its verification pattern {new_vp} differs from the stored {stored}. Refusing (--force replaces it, and data written under the old key becomes unreadable)."),
            ));
        }
        pass::confirm(
            &format!("\nWARNING!\n========\nThe new key's verification pattern {new_vp} differs from the stored {stored}.\nData encrypted under the old key will be unreadable.\n"),
            a.batch(),
        )?;
    }
    let un = unlock_all(a, &vol)?;
    let drop = confirm_drop(a, &un.skipped, "now")?;
    let blob = SecretBytes::copy_from(&new.encode());
    let staged = Staged::stage(vol, &blob, &new_vp, &un.passes(), None)?;
    let done = staged.complete_with_blob(
        &blob,
        prov.as_ref(),
        CompleteOptions {
            replace_vp: !same,
            drop_unstaged: drop,
        },
    )?;
    println!(
        "Volume key set: keyslot(s) {:?} hold the new wrapped key; keyslot(s) {:?} removed.",
        done.keyslots, done.removed
    );
    Ok(())
}

/// Where convert writes its header backup: `--header-backup-file`, else
/// `DEVICE.wrapcrypt-convert.bak` beside an image file (a block device
/// needs the option: /dev is no place for backups).
fn backup_path(a: &Args, vol: &Volume) -> Result<String, CliError> {
    if let Some(f) = a.get("header-backup-file") {
        return Ok(f.to_string());
    }
    if vol.meta_device().is_block() {
        return Err(CliError::usage(
            "Converting a block device needs --header-backup-file FILE (on another device).",
        ));
    }
    Ok(format!(
        "{}.wrapcrypt-convert.bak",
        vol.meta_device().path().display()
    ))
}

fn write_backup(vol: &Volume, path: &str) -> Result<(), CliError> {
    let h = vol.luks2_header()?;
    let len = h.meta.keyslots_end(h.hdr_size) as usize;
    let data = vol
        .meta_device()
        .read_at(0, len)
        .map_err(|e| VolumeError::Io {
            op: "reading header",
            path: vol.meta_device().path().display().to_string(),
            source: e,
        })?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(|e| CliError::new(4, format!("Cannot create header backup file {path}: {e}")))?;
    f.write_all(&data)?;
    f.sync_all()?;
    if let Some(d) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// convert DEVICE --cipher waes-xts-plain64 [--key-provider …]
pub fn convert(a: &Args) -> Result<(), CliError> {
    let cipher = a.get("cipher").unwrap_or_default();
    if cipher != "waes-xts-plain64" {
        return Err(CliError::usage(format!(
            "convert --cipher {cipher}: only waes-xts-plain64 (from aes-xts-plain64) is supported."
        )));
    }
    let dev = a.pos(0, "<device>")?.to_string();
    let mut vol = keys::load(a, true)?;
    vol.check_requirements()?;
    let h = vol.luks2_header()?.clone();
    let found = segment_cipher(&h);
    if found != wrapcrypt_volume::wrap_convert::CONVERTIBLE {
        return Err(CliError::usage(format!(
            "Cannot convert {dev}: its cipher is {found}; only aes-xts-plain64 volumes convert to {cipher} without re-encryption."
        )));
    }
    let backup = backup_path(a, &vol)?;
    pass::confirm(
        &format!("\nWARNING!\n========\nThis converts {dev} to {cipher}: the volume key moves into the key provider.\nA header backup goes to {backup} first.\n"),
        a.batch(),
    )?;
    write_backup(&vol, &backup)?;
    eprintln!("Header backup written to {backup}. It holds the clear volume key under the old passphrases: keep it safe, and destroy it once the converted volume is checked.");
    let un = unlock_all(a, &vol)?;
    let (prov, name, locator) = provider::from_option(a.get("key-provider"), a.get("pin-file"))?;
    let wkb = prov.import(un.key(), &KeySpec::aes_256_xts())?;
    // Until the header write starts, a failure takes the imported key out
    // of the provider again.
    let made = crate::wrapped::MadeKey::new(&prov, &wkb);
    let vp = prov.verification_pattern(&wkb)?;
    let clear_vp = wrapcrypt_provider::clear_key_vp(un.key())?;
    if !vp.eq_ignore_ascii_case(&clear_vp) {
        return Err(RewrapError::VpMismatch {
            expected: clear_vp,
            got: vp,
        }
        .into());
    }
    let drop = confirm_drop(a, &un.skipped, "now")?;
    let mut tokens: Vec<serde_json::Value> = provider::tokens(&name, locator.as_deref(), &vp)?
        .iter()
        .map(|t| t.to_json())
        .collect();
    for t in &mut tokens {
        if t["type"] == provider::PROVIDER_TOKEN {
            t["wrapping-key"] = wkb.wrapping_key().to_string().into();
        }
    }
    let blob = SecretBytes::copy_from(&wkb.encode());
    made.keep();
    let done = wrapcrypt_volume::wrap_convert::convert_to_wrapped(
        &mut vol,
        cipher,
        &blob,
        &un.passes(),
        &tokens,
        drop,
    )?;
    println!(
        "Converted {dev} to {cipher} (provider {name}, verification pattern {vp}); keyslot(s) {:?} re-sealed, {:?} removed; UUID and data offset unchanged.",
        done.keyslots, done.removed
    );
    Ok(())
}
