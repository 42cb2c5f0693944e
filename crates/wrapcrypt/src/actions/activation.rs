//! open / close / status: the volume becomes /dev/mapper/NAME through a
//! FUSE + loop server (wrapcrypt-activate). The server is this binary
//! re-executed with the hidden action `__serve`; the key reaches it on a
//! pipe, never argv or environment (`wrapcrypt_ops::open` makes and reads
//! that payload).

use std::process::Command;
use std::time::Duration;

use wrapcrypt_activate::{ActivateError, ReadyPipe};
use wrapcrypt_ops::open::{self, OpenOptions};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_unlock::{external, Registry, UnlockRequest};

use super::common::{key_source, load, prompter, provider_choice, read_pin};
use crate::cli::opts::Global;
use crate::cli::{Dev, NameArgs, OpenArgs, ResumeArgs, StatusArgs, SuspendArgs};
use crate::exit::CliError;

/// open / luksOpen DEVICE NAME (or --test-passphrase DEVICE).
pub fn open(g: &Global, a: &OpenArgs) -> Result<(), CliError> {
    if let Some(t) = a.kind.kind.as_deref() {
        if !matches!(t, "luks" | "luks1" | "luks2") {
            return Err(CliError::usage(format!(
                "Device type {t} is not supported (wrapcrypt opens luks, luks1 and luks2)."
            )));
        }
    }
    // --tries: a wrong passphrase (exit 2) is asked again, as cryptsetup
    // does; 0 is unlimited. Key files and tokens give the same answer
    // every time, so they get one try.
    let tries = match g.tries {
        _ if a.on.key.key_file.is_some() => 1,
        Some(0) => u32::MAX,
        Some(n) => n,
        None => 1,
    };
    let mut attempt = 1;
    loop {
        match open_once(g, a) {
            Err(e) if e.code == 2 && attempt < tries => {
                eprintln!("{}", e.msg);
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// One unlock attempt of `open`.
fn open_once(g: &Global, a: &OpenArgs) -> Result<(), CliError> {
    let vol = load(&a.on.dev, false)?;
    let dev = a.on.dev.device.as_str();
    let pin = read_pin(a.provider.pin.pin_file.as_deref())?;
    let prompt = format!("Enter passphrase for {dev}: ");
    let req = UnlockRequest {
        token_id: a.tokens.id.token_id,
        token_type: a.tokens.token_type.as_deref(),
        token_only: a.tokens.token_only,
        key_slot: a.on.slot.key_slot,
        has_key_file: a.on.key.key_file.is_some(),
        need_bound: true,
        pin: pin.as_ref(),
        tpm2_device: a.tokens.tpm2.tpm2_device.as_deref(),
        prompt: &prompt,
        verbose: crate::msg::verbose(),
    };
    let reg = if g.disable_external_tokens {
        Registry::default()
    } else {
        Registry::with_external(&external::search_path())
    };
    let mut p = prompter(g, key_source(&a.on.key, None), None);
    if a.test_passphrase {
        open::test_passphrase(&vol, &req, &reg, &mut p)?;
        return Ok(());
    }
    let name = a
        .name
        .as_deref()
        .ok_or_else(|| CliError::usage("Command open requires <name> as argument."))?;
    let opts = OpenOptions {
        device: dev,
        name,
        read_only: a.readonly,
        allow_discards: a.allow_discards,
        unlock: req,
        provider: provider_choice(&a.provider, &pin),
    };
    let pl = open::prepare(vol, &opts, &reg, &mut p)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("__serve");
    wrapcrypt_activate::spawn(cmd, pl.expose_secret(), Duration::from_secs(30))?;
    Ok(())
}

/// The server process (hidden action `__serve`).
pub fn serve() -> Result<(), CliError> {
    let ready = ReadyPipe::stdout()?;
    let mut buf = SecretBytes::zeroed(1 << 20);
    let n = ReadyPipe::read_secret(buf.expose_secret_mut())?;
    buf.truncate(n);
    let start = open::server_start(buf.expose_secret())?;
    drop(buf);
    let cipher = match start.cipher {
        Ok(c) => c,
        Err(e) => {
            let err = ActivateError::Server {
                code: 1,
                message: format!(
                    "cannot build cipher {}: {}",
                    start.spec,
                    CliError::from(e).msg
                ),
            };
            let _ = ready.send(Err(&err));
            return Err(err.into());
        }
    };
    // Served through a replaceable cipher, so that an online reencryption
    // can switch the layout while the device stays open.
    let live = std::sync::Arc::new(wrapcrypt_activate::LiveCipher::new(cipher));
    let name = start.config.name.clone();
    let ending = live.clone();
    let r = wrapcrypt_activate::run_server_with_end(
        start.config,
        live.clone(),
        |r| {
            if r.is_ok() {
                if let Err(e) = wrapcrypt_ops::online::serve(&name, live.clone()) {
                    eprintln!(
                    "wrapcrypt server {name}: no control socket, so no online reencryption or suspend: {e}"
                );
                }
            }
            let _ = ready.send(r);
        },
        // Requests a suspend holds fail (EIO) once the session is over,
        // so the workers end and close does not hang.
        move || ending.abort(),
    );
    // A reencryption in flight finishes its hotzone before the server goes.
    wrapcrypt_ops::online::shutdown();
    r?;
    Ok(())
}

/// close NAME.
pub fn close(a: &NameArgs) -> Result<(), CliError> {
    let name = &a.name;
    if wrapcrypt_ops::suspend::is_suspended(name) {
        // The loop detach flushes and waits for requests the suspend
        // holds: the server fails them first (no key to serve them).
        wrapcrypt_ops::suspend::abort(name)?;
    }
    wrapcrypt_activate::close(name)?;
    Ok(())
}

/// luksSuspend NAME.
pub fn suspend(a: &SuspendArgs) -> Result<(), CliError> {
    wrapcrypt_ops::suspend::suspend(&a.name)?;
    Ok(())
}

/// luksResume NAME: unlocks the volume the server serves, as open does.
pub fn resume(g: &Global, a: &ResumeArgs) -> Result<(), CliError> {
    let name = a.name.as_str();
    let st = wrapcrypt_ops::suspend::check_resumable(name)?;
    let device = st.info.backing.to_string_lossy().into_owned();
    let dev = Dev {
        device: device.clone(),
        header: a.header.clone(),
    };
    let vol = load(&dev, false)?;
    let pin = read_pin(a.provider.pin.pin_file.as_deref())?;
    let prompt = format!("Enter passphrase for {device}: ");
    let req = UnlockRequest {
        token_id: a.tokens.id.token_id,
        token_type: a.tokens.token_type.as_deref(),
        token_only: a.tokens.token_only,
        key_slot: a.slot.key_slot,
        has_key_file: a.key.key_file.is_some(),
        need_bound: true,
        pin: pin.as_ref(),
        tpm2_device: a.tokens.tpm2.tpm2_device.as_deref(),
        prompt: &prompt,
        verbose: crate::msg::verbose(),
    };
    let reg = if g.disable_external_tokens {
        Registry::default()
    } else {
        Registry::with_external(&external::search_path())
    };
    let mut p = prompter(g, key_source(&a.key, None), None);
    let opts = OpenOptions {
        device: &device,
        name,
        read_only: st.info.read_only,
        allow_discards: st.info.allow_discards,
        unlock: req,
        provider: provider_choice(&a.provider, &pin),
    };
    let pl = open::prepare_resume(vol, &opts, &reg, &mut p)?;
    wrapcrypt_ops::suspend::resume(name, &pl)?;
    Ok(())
}

/// status NAME, in cryptsetup's layout.
pub fn status(a: &StatusArgs) -> Result<(), CliError> {
    let name = &a.name;
    let st = match wrapcrypt_activate::status(name) {
        Ok(s) => s,
        Err(ActivateError::NotActive(_)) => {
            if a.json {
                println!("{}", serde_json::json!({"name": name, "active": false}));
            } else {
                println!("/dev/mapper/{name} is inactive.");
            }
            return Err(CliError::new(4, ""));
        }
        Err(e) => return Err(e.into()),
    };
    let i = &st.info;
    let x = |k: &str| i.extra.get(k).cloned().unwrap_or_default();
    if a.json {
        let keysize: Option<u64> = x("keysize")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok());
        println!(
            "{}",
            serde_json::json!({
                "name": name, "active": true, "in-use": st.in_use,
                "type": x("type"), "cipher": i.cipher, "key-bits": keysize,
                "provider": x("provider"), "protection": x("protection"),
                "device": format!("/dev/mapper/{name}"),
                "loop-device": i.loop_device, "backing": i.backing,
                "sector-size": i.sector_size, "offset-bytes": i.data_offset,
                "size-bytes": i.data_size, "read-only": i.read_only,
                "discards": i.allow_discards,
                "fuse-transport": (!i.fuse_transport.is_empty()).then_some(&i.fuse_transport),
                "reencryption": i.extra.get("reencryption"),
                "suspended": !x("suspended").is_empty(),
            })
        );
        return Ok(());
    }
    println!(
        "/dev/mapper/{name} is active{}{}.",
        if x("suspended").is_empty() {
            ""
        } else {
            " (suspended)"
        },
        if st.in_use { " and is in use" } else { "" }
    );
    println!("  type:    {}", x("type"));
    println!("  cipher:  {}", i.cipher);
    println!("  keysize: {}", x("keysize"));
    println!(
        "  key location: {}",
        if x("provider") == "soft" {
            "server memory (locked)".to_string()
        } else {
            x("provider")
        }
    );
    println!("  provider: {}", x("provider"));
    println!("  protection: {}", x("protection"));
    if let Some(l) = &i.loop_device {
        println!("  device:  {}", l.display());
    }
    println!("  loop:    {}", i.backing.display());
    println!("  sector size:  {}", i.sector_size);
    println!("  offset:  {} sectors", i.data_offset / 512);
    println!("  size:    {} sectors", i.data_size / 512);
    println!(
        "  mode:    {}",
        if i.read_only {
            "readonly"
        } else {
            "read/write"
        }
    );
    if i.allow_discards {
        println!("  flags:   discards");
    }
    if !x("suspended").is_empty() {
        println!("  suspended: yes (I/O blocked, key dropped; luksResume {name})");
    }
    if !x("reencryption").is_empty() {
        println!("  reencryption: {}", x("reencryption"));
    }
    if !i.fuse_transport.is_empty() {
        println!("  fuse:    {}", i.fuse_transport);
    }
    Ok(())
}
