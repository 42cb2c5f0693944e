//! reencrypt: the command-line side of `wrapcrypt_ops::reencrypt`.

use std::sync::atomic::{AtomicBool, Ordering};

use wrapcrypt_ops::progress::Unit;
use wrapcrypt_ops::reencrypt::{self, ReencryptOptions, ReencryptOutcome};

use wrapcrypt_ops::open::{self, OpenOptions};
use wrapcrypt_unlock::{Registry, UnlockRequest};

use super::common::{key_source, load, paths, pbkdf, prompter, provider_choice, read_pin};
use crate::cli::opts::Global;
use crate::cli::ReencryptArgs;
use crate::exit::CliError;
use crate::progress::Reporter;
use crate::prompt::{CliPrompter, Remembering};

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
    if a.new_name.is_some() && !encrypt_init {
        return Err(CliError::usage(
            "NEW_NAME is for --encrypt (to activate the device after initialization); use --active-name NAME to go on online.",
        ));
    }
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
        if let (None, Some(r)) = (&a.on.dev.header.header, a.reduce_device_size) {
            // cryptsetup's luksFormat warning for the header it will write.
            let ks = (r / 2).saturating_sub(32 << 10);
            if r.is_multiple_of(8192) && ks < (4 << 20) - (32 << 10) {
                println!("WARNING: keyslots area ({ks} bytes) is very small, available LUKS2 keyslot count is very limited.");
            }
        }
        let enc = reencrypt::EncryptOptions {
            header: a.on.dev.header.header.as_deref().map(std::path::Path::new),
            reduce_device_size: a.reduce_device_size,
            uuid: a.uuid.as_deref(),
            label: a.label.as_deref(),
            subsystem: a.subsystem.as_deref(),
        };
        match a.new_name.as_deref() {
            None => reencrypt::encrypt(&opts, &enc, &mut p, Some(&mut bar), Some(&STOP))?,
            Some(name) => encrypt_online(g, a, opts, &enc, name, std::mem::take(&mut p), &mut bar)?,
        }
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

/// `reencrypt --encrypt --header H DEVICE NAME`: initialize, activate the
/// device as NAME (the volume in mid-encryption: ciphertext below the
/// boundary, plaintext above), then, unless `--init-only`, encrypt it
/// online through NAME's server, with the one passphrase given for the new
/// keyslot.
fn encrypt_online(
    g: &Global,
    a: &ReencryptArgs,
    mut opts: ReencryptOptions,
    enc: &reencrypt::EncryptOptions,
    name: &str,
    p: CliPrompter,
    bar: &mut dyn wrapcrypt_ops::progress::Progress,
) -> Result<ReencryptOutcome, CliError> {
    let header = paths(&a.on.dev).1;
    if header.is_none() {
        return Err(CliError::usage(
            "Online encryption needs a detached --header here (the data shift of --reduce-device-size runs offline only).",
        ));
    }
    if a.force_offline_reencrypt || a.active_name.is_some() {
        return Err(CliError::usage(
            "NEW_NAME cannot be combined with --active-name or --force-offline-reencrypt.",
        ));
    }
    let dev = a.on.dev.device.as_str();
    open::check_free(name, dev)?;
    let mut rp = Remembering::new(p);
    let resume_after = !opts.init_only;
    opts.init_only = true;
    reencrypt::encrypt(&opts, enc, &mut rp, None, Some(&STOP))?;

    // Activate: the same unlock `open --header H DEVICE NAME` does.
    let pin = read_pin(a.provider.pin.pin_file.as_deref())?;
    let prompt = format!("Enter passphrase for {dev}: ");
    let req = UnlockRequest {
        token_id: None,
        token_type: None,
        token_only: false,
        key_slot: a.on.slot.key_slot,
        has_key_file: a.on.key.key_file.is_some(),
        need_bound: true,
        pin: pin.as_ref(),
        tpm2_device: None,
        prompt: &prompt,
        verbose: g.verbose,
    };
    let oo = OpenOptions {
        device: dev,
        name,
        read_only: false,
        allow_discards: false,
        unlock: req,
        provider: provider_choice(&a.provider, &pin),
    };
    let pl = open::prepare(load(&a.on.dev, false)?, &oo, &Registry::default(), &mut rp)?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("__serve");
    wrapcrypt_activate::spawn(cmd, pl.expose_secret(), std::time::Duration::from_secs(30))?;
    drop(pl);
    if !resume_after {
        return Ok(ReencryptOutcome::Initialized);
    }
    opts.init_only = false;
    opts.resume_only = true;
    let vol = load(&a.on.dev, true)?;
    Ok(wrapcrypt_ops::online::reencrypt(
        vol, name, &opts, header, &mut rp, bar, &STOP,
    )?)
}
