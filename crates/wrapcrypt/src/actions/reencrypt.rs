//! reencrypt: the command-line side of `wrapcrypt_ops::reencrypt`.

use std::sync::atomic::{AtomicBool, Ordering};

use wrapcrypt_ops::progress::Unit;
use wrapcrypt_ops::reencrypt::{self, ReencryptOptions, ReencryptOutcome};

use super::common::{key_source, load, paths, pbkdf, prompter, provider_choice, read_pin};
use crate::cli::opts::Global;
use crate::cli::ReencryptArgs;
use crate::exit::CliError;
use crate::progress::Reporter;

/// Set by SIGINT / SIGTERM: the engine stops after the hotzone in flight.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM finish the hotzone in flight, record it and end the
/// run ("Reencryption interrupted.", exit 1), as in cryptsetup.
fn on_interrupt() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

/// reencrypt DEVICE
pub fn run(g: &Global, a: &ReencryptArgs) -> Result<(), CliError> {
    if a.encrypt && a.decrypt {
        return Err(CliError::usage(
            "Options --encrypt and --decrypt cannot be combined.",
        ));
    }
    let (device, _) = paths(&a.on.dev);
    let pin = read_pin(a.provider.pin.pin_file.as_deref())?;
    let opts = ReencryptOptions {
        provider: provider_choice(&a.provider, &pin),
        device,
        init_only: a.init_only,
        resume_only: a.resume_only,
        key_slot: a.on.slot.key_slot,
        hotzone_size: a.hotzone_size,
        resilience: a.resilience.as_deref(),
        resilience_hash: a.resilience_hash.as_deref(),
        cipher: a.cipher.as_deref(),
        key_bits: a.key_size,
        sector_size: a.sector_size,
        pbkdf: pbkdf(&a.pbkdf),
        key_file: a.on.key.key_file.is_some(),
        mode_change: if a.decrypt { Some("--decrypt") } else { None },
    };
    let encrypt_init = a.encrypt && !a.resume_only;
    if !a.encrypt && (a.reduce_device_size.is_some() || a.uuid.is_some() || a.label.is_some()) {
        return Err(CliError::usage(
            "Options --reduce-device-size, --uuid and --label are for --encrypt.",
        ));
    }
    // --encrypt asks for the new keyslot's passphrase (a key file, or a
    // prompt asked twice on a terminal).
    let key = key_source(&a.on.key, None);
    let mut p = if encrypt_init {
        prompter(g, None, key)
    } else {
        prompter(g, key, None)
    };
    let mut bar = Reporter::new(g, Unit::Bytes, &a.on.dev.device);
    on_interrupt();
    let out = if encrypt_init {
        let enc = reencrypt::EncryptOptions {
            header: a.on.dev.header.header.as_deref().map(std::path::Path::new),
            reduce_device_size: a.reduce_device_size,
            uuid: a.uuid.as_deref(),
            label: a.label.as_deref(),
            subsystem: a.subsystem.as_deref(),
        };
        reencrypt::encrypt(&opts, &enc, &mut p, Some(&mut bar), Some(&STOP))?
    } else {
        let mut vol = load(&a.on.dev, true)?;
        match a.active_name.as_deref() {
            Some(name) => {
                if a.force_offline_reencrypt {
                    return Err(CliError::usage(
                        "Options --active-name and --force-offline-reencrypt cannot be combined.",
                    ));
                }
                wrapcrypt_ops::online::reencrypt(
                    vol,
                    name,
                    &opts,
                    paths(&a.on.dev).1,
                    &mut p,
                    &mut bar,
                    &STOP,
                )?
            }
            None => {
                // An open device is reencrypted only through its server.
                if let Some(name) = wrapcrypt_activate::is_backing_in_use(vol.data_path()) {
                    return Err(CliError::new(5, format!(
                        "Device {} is in use (active as {name}): reencrypt it online with --active-name {name}, or close it first.",
                        device.display()
                    )));
                }
                reencrypt::reencrypt(&mut vol, &opts, &mut p, Some(&mut bar), Some(&STOP))?
            }
        }
    };
    if crate::msg::verbose() {
        match out {
            ReencryptOutcome::Initialized => eprintln!("Reencryption initialized."),
            ReencryptOutcome::Finished(f) => eprintln!(
                "Reencryption finished: {} bytes in {} hotzones{}.",
                f.bytes,
                f.steps,
                if f.recovered {
                    ", after recovering an interrupted hotzone"
                } else {
                    ""
                }
            ),
        }
    }
    Ok(())
}
