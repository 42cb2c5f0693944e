//! The wrapped-key lifecycle, as zkey-cryptsetup does it for `paes`:
//! `validate`, `reencipher [--staged|--in-place|--complete]
//! [--to-new|--from-old]`, `setvp`, `setkey`, and `convert --cipher
//! waes-xts-plain64`. The workflows are `wrapcrypt_ops`; this prints
//! their results. docs/reencipher.md has the procedure.

use serde_json::json;
use wrapcrypt_ops::convert::{self, ConvertOptions};
use wrapcrypt_ops::progress::Unit;
use wrapcrypt_ops::reencipher::{
    self, direction_name, ReencipherMode, ReencipherOptions, Reenciphered,
};
use wrapcrypt_ops::setkey::{self, SetKeyOptions, VpSet};
use wrapcrypt_ops::validate;
use wrapcrypt_provider::{KeyState, RewrapDirection, Wkb};

use super::common::{
    key_source, load, pbkdf_chosen, prompter, provider_choice, read_file, read_pin,
};
use crate::cli::opts::Global;
use crate::cli::{ConvertArgs, ReencipherArgs, SetKeyArgs, SetVpArgs, ValidateArgs};
use crate::exit::CliError;
use crate::progress::Reporter;

/// reencipher DEVICE [--to-new|--from-old] [--staged|--in-place|--complete]
pub fn reencipher(g: &Global, a: &ReencipherArgs) -> Result<(), CliError> {
    let dev = a.on.dev.device.as_str();
    let modes = [a.staged, a.in_place, a.complete];
    if modes.iter().filter(|m| **m).count() > 1 {
        return Err(CliError::usage(
            "Use only one of --staged, --in-place, --complete.",
        ));
    }
    if a.to_new && a.from_old {
        return Err(CliError::usage("Use only one of --to-new, --from-old."));
    }
    let mode = match modes {
        [true, _, _] => Some(ReencipherMode::Staged),
        [_, true, _] => Some(ReencipherMode::InPlace),
        [_, _, true] => Some(ReencipherMode::Complete),
        _ => None,
    };
    let direction = match (a.to_new, a.from_old) {
        (true, _) => Some(RewrapDirection::ToNew),
        (_, true) => Some(RewrapDirection::FromOld),
        _ => None,
    };
    let vol = load(&a.on.dev, true)?;
    let pin = read_pin(a.provider.pin.pin_file.as_deref())?;
    let opts = ReencipherOptions {
        device: dev,
        mode,
        direction,
        force: a.force,
        key_slot: a.on.slot.key_slot,
        pbkdf: pbkdf_chosen(&a.pbkdf),
        provider: provider_choice(&a.provider, &pin),
    };
    let mut p = prompter(g, key_source(&a.on.key, None), None);
    let mut bar = Reporter::new(g, Unit::Items("keyslots"), dev);
    let done = reencipher::reencipher_with_progress(vol, &opts, &mut p, &mut bar)?;
    drop(bar);
    match done {
        Reenciphered::Staged { direction, pairs } => {
            println!(
                "Staged re-encipher ({}) of {dev}: {}.",
                direction_name(direction),
                pairs
                    .iter()
                    .map(|(o, u)| format!("keyslot {o} -> unbound keyslot {u}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("Next: set the new master key (wrapcrypt custodian set-master-key), then wrapcrypt reencipher --complete {dev}.");
        }
        Reenciphered::InPlace {
            direction,
            keyslots,
            removed,
        } => println!(
            "Re-enciphered {dev} in place ({}): keyslot(s) {keyslots:?} hold the re-wrapped key; keyslot(s) {removed:?} removed.",
            direction_name(direction),
        ),
        Reenciphered::Completed { keyslots, removed } => println!(
            "Re-encipher of {dev} completed: keyslot(s) {keyslots:?} hold the volume key; keyslot(s) {removed:?} removed."
        ),
    }
    Ok(())
}

/// validate DEVICE [--json]: exit 0 when the key is usable and its
/// verification pattern matches the stored one, 2 on a mismatch, 1 else.
pub fn validate(g: &Global, a: &ValidateArgs) -> Result<(), CliError> {
    let dev = a.on.dev.device.as_str();
    let vol = load(&a.on.dev, false)?;
    let pin = read_pin(a.provider.pin.pin_file.as_deref())?;
    let mut p = prompter(g, key_source(&a.on.key, None), None);
    let r = validate::validate(
        &vol,
        dev,
        a.on.slot.key_slot,
        provider_choice(&a.provider, &pin),
        &mut p,
    )?;
    let matches = r.matches();
    if a.json {
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
pub fn setvp(g: &Global, a: &SetVpArgs) -> Result<(), CliError> {
    let vol = load(&a.on.dev, true)?;
    let pin = read_pin(a.provider.pin.pin_file.as_deref())?;
    let mut p = prompter(g, key_source(&a.on.key, None), None);
    match setkey::setvp(
        vol,
        &a.on.dev.device,
        a.on.slot.key_slot,
        provider_choice(&a.provider, &pin),
        &mut p,
    )? {
        VpSet::Unchanged(vp) => println!("Verification pattern unchanged: {vp}"),
        VpSet::Set(vp) => println!("Verification pattern set: {vp}"),
    }
    Ok(())
}

/// setkey DEVICE --volume-key-file WKB [--force]
pub fn setkey(g: &Global, a: &SetKeyArgs) -> Result<(), CliError> {
    let file = a
        .volume_key_file
        .as_deref()
        .ok_or_else(|| CliError::usage("Command setkey requires --volume-key-file WKB."))?;
    let raw = read_file(file)?;
    let new = Wkb::parse(raw.expose_secret())
        .map_err(|e| CliError::usage(format!("{file} is not a wrapped-key blob: {e}")))?;
    let vol = load(&a.on.dev, true)?;
    let pin = read_pin(a.provider.pin.pin_file.as_deref())?;
    let opts = SetKeyOptions {
        device: &a.on.dev.device,
        file,
        force: a.force,
        key_slot: a.on.slot.key_slot,
        provider: provider_choice(&a.provider, &pin),
    };
    let mut p = prompter(g, key_source(&a.on.key, None), None);
    let done = setkey::setkey(vol, &new, &opts, &mut p)?;
    println!(
        "Volume key set: keyslot(s) {:?} hold the new wrapped key; keyslot(s) {:?} removed.",
        done.keyslots, done.removed
    );
    Ok(())
}

/// convert DEVICE --cipher waes-xts-plain64 [--key-provider …]
pub fn convert(g: &Global, a: &ConvertArgs) -> Result<(), CliError> {
    let dev = a.dev.device.as_str();
    let cipher = a.cipher.as_deref().unwrap_or_default();
    let vol = load(&a.dev, true)?;
    let pin = read_pin(a.provider.pin.pin_file.as_deref())?;
    let opts = ConvertOptions {
        device: dev,
        cipher,
        backup: a.header_backup_file.as_deref(),
        key_slot: a.slot.key_slot,
        provider: provider_choice(&a.provider, &pin),
    };
    let mut p = prompter(g, key_source(&a.key, None), None);
    let done = convert::convert(vol, &opts, &mut p)?;
    println!(
        "Converted {dev} to {cipher} (provider {}, verification pattern {}); keyslot(s) {:?} re-sealed, {:?} removed; UUID and data offset unchanged.",
        done.provider, done.vp, done.keyslots, done.removed
    );
    Ok(())
}
