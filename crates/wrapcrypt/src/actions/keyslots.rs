//! luksFormat, luksAddKey, luksRemoveKey, luksChangeKey, luksKillSlot,
//! luksConvertKey, erase: the command-line side of `wrapcrypt_ops::keyslots`.

use wrapcrypt_ops::keyslots::{self, AddKeyOptions, FormatOptions};
use wrapcrypt_ops::progress::Unit;
use wrapcrypt_ops::KeyFile;

use super::common::{
    key_source, load, new_key_source, paths, pbkdf, prompter, provider_choice, read_file, read_pin,
};
use crate::cli::opts::Global;
use crate::cli::{
    AddKeyArgs, ChangeKeyArgs, ConvertKeyArgs, EraseArgs, FormatArgs, KillSlotArgs, RemoveKeyArgs,
};
use crate::exit::CliError;
use crate::progress::Reporter;

/// luksFormat DEVICE [KEYFILE]
pub fn format(g: &Global, a: &FormatArgs) -> Result<(), CliError> {
    let (device, header) = paths(&a.on.dev);
    let vk = a.volume_key.volume_key_file.as_deref();
    let vk_bytes = vk.map(read_file).transpose()?;
    let pin = read_pin(a.provider.pin.pin_file.as_deref())?;
    let l = &a.layout;
    let opts = FormatOptions {
        device,
        header,
        kind: a.kind.kind.as_deref(),
        cipher: l.cipher.as_deref(),
        key_bits: a.volume_key.key_size,
        sector_size: l.sector_size,
        metadata_size: l.luks2_metadata_size,
        keyslots_size: l.luks2_keyslots_size,
        offset_sectors: l.offset,
        align_payload: l.align_payload,
        uuid: l.uuid.as_deref(),
        label: l.label.as_deref(),
        subsystem: l.subsystem.as_deref(),
        pbkdf: pbkdf(&a.pbkdf),
        key_slot: a.on.slot.key_slot,
        allow_discards: a.allow_discards,
        volume_key: vk
            .zip(vk_bytes.as_ref())
            .map(|(path, bytes)| KeyFile { path, bytes }),
        provider: provider_choice(&a.provider, &pin),
    };
    // The first passphrase is a new one, but comes from --key-file (or the
    // positional key file), as in cryptsetup.
    let mut p = prompter(g, None, key_source(&a.on.key, a.keyfile.as_deref()));
    let mut bar = Reporter::new(g, Unit::Bytes, &a.on.dev.device);
    keyslots::format_with_progress(&opts, &mut p, &mut bar)?;
    Ok(())
}

/// luksAddKey DEVICE [NEW_KEYFILE]
pub fn add_key(g: &Global, a: &AddKeyArgs) -> Result<(), CliError> {
    let mut vol = load(&a.on.dev, true)?;
    let vk = a.volume_key.volume_key_file.as_deref();
    let vk_bytes = vk.map(read_file).transpose()?;
    let opts = AddKeyOptions {
        new_slot: a.new.new_key_slot.or(a.on.slot.key_slot),
        unbound: a.unbound,
        key_bits: a.volume_key.key_size,
        volume_key: vk
            .zip(vk_bytes.as_ref())
            .map(|(path, bytes)| KeyFile { path, bytes }),
        pbkdf: pbkdf(&a.pbkdf),
    };
    let mut p = prompter(
        g,
        key_source(&a.on.key, None),
        new_key_source(&a.new, a.new_keyfile_pos.as_deref()),
    );
    keyslots::add_key(&mut vol, &opts, &mut p)?;
    Ok(())
}

/// luksRemoveKey DEVICE [KEYFILE]
pub fn remove_key(g: &Global, a: &RemoveKeyArgs) -> Result<(), CliError> {
    let mut vol = load(&a.on.dev, true)?;
    let mut p = prompter(g, key_source(&a.on.key, a.keyfile.as_deref()), None);
    keyslots::remove_key(&mut vol, a.on.slot.key_slot, &mut p)?;
    Ok(())
}

/// luksChangeKey DEVICE [NEW_KEYFILE]
pub fn change_key(g: &Global, a: &ChangeKeyArgs) -> Result<(), CliError> {
    let mut vol = load(&a.on.dev, true)?;
    let mut p = prompter(
        g,
        key_source(&a.on.key, None),
        new_key_source(&a.new, a.new_keyfile_pos.as_deref()),
    );
    keyslots::change_key(
        &mut vol,
        a.on.slot.key_slot,
        a.new.new_key_slot,
        &pbkdf(&a.pbkdf),
        &mut p,
    )?;
    Ok(())
}

/// luksConvertKey DEVICE [KEYFILE]: same passphrase, new KDF parameters.
pub fn convert_key(g: &Global, a: &ConvertKeyArgs) -> Result<(), CliError> {
    let mut vol = load(&a.on.dev, true)?;
    let mut p = prompter(g, key_source(&a.on.key, a.keyfile.as_deref()), None);
    keyslots::convert_key(&mut vol, a.on.slot.key_slot, &pbkdf(&a.pbkdf), &mut p)?;
    Ok(())
}

/// luksKillSlot DEVICE SLOT [KEYFILE]
pub fn kill_slot(g: &Global, a: &KillSlotArgs) -> Result<(), CliError> {
    let mut vol = load(&a.dev, true)?;
    let slot: u32 = a
        .slot_number
        .parse()
        .map_err(|_| CliError::usage("Invalid key slot number."))?;
    let key = key_source(&a.key, a.keyfile.as_deref());
    // A key file is checked even with --batch-mode, as cryptsetup does.
    let batch = g.batch_mode && key.is_none();
    let mut p = prompter(g, key, None);
    keyslots::kill_slot(&mut vol, slot, batch, &mut p)?;
    Ok(())
}

/// erase / luksErase DEVICE: removes every keyslot.
pub fn erase(g: &Global, a: &EraseArgs) -> Result<(), CliError> {
    let mut vol = load(&a.dev, true)?;
    let mut p = prompter(g, None, None);
    keyslots::erase(&mut vol, &a.dev.device, &mut p)?;
    Ok(())
}
