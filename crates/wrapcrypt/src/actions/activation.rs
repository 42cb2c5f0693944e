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
use crate::cli::{
    Dev, NameArgs, OpenArgs, RefreshArgs, ResizeArgs, ResumeArgs, StatusArgs, SuspendArgs,
};
use crate::exit::CliError;

/// open / luksOpen DEVICE NAME (or --test-passphrase DEVICE).
pub fn open(g: &Global, a: &OpenArgs) -> Result<(), CliError> {
    if let Some(t) = a.kind.kind.as_deref() {
        if t == "plain" {
            return open_plain(g, a);
        }
        if !matches!(t, "luks" | "luks1" | "luks2") {
            return Err(CliError::usage(format!(
                "Device type {t} is not supported (wrapcrypt opens luks, luks1, luks2 and plain)."
            )));
        }
    }
    let p = &a.plain;
    if p.cipher.is_some()
        || p.key_size.is_some()
        || p.hash.is_some()
        || p.offset.is_some()
        || p.skip.is_some()
        || p.size.is_some()
        || p.device_size.is_some()
        || p.sector_size.is_some()
    {
        return Err(CliError::usage(
            "Options --cipher, --key-size, --hash, --offset, --skip, --size, --device-size and --sector-size of open apply to --type plain only.",
        ));
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

/// plainOpen DEVICE NAME (cryptsetup's old spelling of open --type plain).
pub fn plain_open(g: &Global, a: &OpenArgs) -> Result<(), CliError> {
    match a.kind.kind.as_deref() {
        None | Some("plain") => open_plain(g, a),
        Some(t) => Err(CliError::usage(format!(
            "Option --type {t} is not allowed with plainOpen."
        ))),
    }
}

/// open --type plain DEVICE NAME: cryptsetup's plain mapping.
fn open_plain(g: &Global, a: &OpenArgs) -> Result<(), CliError> {
    use wrapcrypt_ops::open::plain::{self, PlainKeyInput, PlainOptions};
    let name = a
        .name
        .as_deref()
        .ok_or_else(|| CliError::usage("Command open requires <name> as argument."))?;
    if a.test_passphrase || a.on.dev.header.header.is_some() || a.persistent {
        return Err(CliError::usage(
            "Options --test-passphrase, --header and --persistent do not apply to --type plain.",
        ));
    }
    let p = &a.plain;
    let size = match (p.size, p.device_size) {
        (Some(_), Some(_)) => {
            return Err(CliError::usage(
                "Options --size and --device-size cannot be combined.",
            ))
        }
        (Some(s), None) => Some(
            s.checked_mul(512)
                .ok_or_else(|| CliError::usage("Device size is too large."))?,
        ),
        (None, Some(b)) if b % 512 != 0 => {
            return Err(CliError::usage(
                "Device size must be multiple of 512 bytes sector.",
            ))
        }
        (None, b) => b,
    };
    let input = match a.on.key.key_file.as_deref() {
        None => PlainKeyInput::Passphrase,
        Some("-") => PlainKeyInput::Stdin,
        Some(_) => PlainKeyInput::KeyFile,
    };
    let opts = PlainOptions {
        device: &a.on.dev.device,
        name,
        cipher: p.cipher.as_deref(),
        key_bits: p.key_size,
        hash: p.hash.as_deref(),
        offset: p.offset.unwrap_or(0),
        skip: p.skip.unwrap_or(0),
        size: size.filter(|&s| s > 0),
        sector_size: p.sector_size,
        read_only: a.readonly,
        allow_discards: a.allow_discards,
        input,
    };
    // A key file is read up to --keyfile-size, else the key size (cryptsetup
    // reads no more than the key from it).
    let mut key = a.on.key.clone();
    if input == PlainKeyInput::KeyFile && key.keyfile_size.is_none() {
        key.keyfile_size = Some(p.key_size.unwrap_or(plain::DEFAULT_KEY_BITS) / 8);
    }
    let mut pr = prompter(g, key_source(&key, None), None);
    let pl = plain::prepare(&opts, &mut pr)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("__serve");
    wrapcrypt_activate::spawn(cmd, pl.expose_secret(), Duration::from_secs(30))?;
    Ok(())
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
    if a.persistent && vol.version() != 2 {
        return Err(CliError::usage(
            "Persistent flags can be stored only in a LUKS2 header.",
        ));
    }
    let pl = open::prepare(vol, &opts, &reg, &mut p)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("__serve");
    wrapcrypt_activate::spawn(cmd, pl.expose_secret(), Duration::from_secs(30))?;
    if a.persistent {
        // As cryptsetup: stored only once the activation succeeded.
        let hdr = a.on.dev.header.header.as_deref().map(std::path::Path::new);
        wrapcrypt_ops::refresh::store_discards(std::path::Path::new(dev), hdr, a.allow_discards)?;
    }
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
    let r = wrapcrypt_activate::run_server_controlled(
        start.config,
        live.clone(),
        |r| {
            let (r, handle) = match r {
                Ok((i, h)) => (Ok(i), Some(h)),
                Err(e) => (Err(e), None),
            };
            if r.is_ok() {
                if let Err(e) = wrapcrypt_ops::online::serve(&name, live.clone(), handle) {
                    eprintln!(
                    "wrapcrypt server {name}: no control socket, so no online reencryption, suspend, resize or refresh: {e}"
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

/// resize NAME [--size S | --device-size B].
pub fn resize(a: &ResizeArgs) -> Result<(), CliError> {
    let size = wrapcrypt_ops::resize::requested_size(a.size, a.device_size)?;
    wrapcrypt_ops::resize::resize(&a.name, size)?;
    Ok(())
}

/// refresh NAME [--allow-discards] [--persistent]: unlocks as open does
/// (LUKS), then the server takes the new flags.
pub fn refresh(g: &Global, a: &RefreshArgs) -> Result<(), CliError> {
    use wrapcrypt_ops::refresh::{self, RefreshOptions};
    let opts = RefreshOptions {
        name: &a.name,
        allow_discards: a.allow_discards,
        persistent: a.persistent,
        read_only: a.readonly,
    };
    let st = refresh::check(&opts)?;
    let warn = |r: &refresh::Refreshed| {
        if r.loop_discards_off {
            eprintln!(
                "WARNING: {}: the loop device stopped passing discards after one was refused; they reach the device again after close and open.",
                a.name
            );
        }
    };
    if st.info.extra.get("type").map(String::as_str) == Some("PLAIN") {
        warn(&refresh::refresh_plain(&opts, &st)?);
        return Ok(());
    }
    let device = st.info.backing.to_string_lossy().into_owned();
    let dev = Dev {
        device: device.clone(),
        header: a.header.clone(),
    };
    let vol = load(&dev, false)?;
    let prompt = format!("Enter passphrase for {device}: ");
    let req = UnlockRequest {
        token_id: a.tokens.id.token_id,
        token_type: a.tokens.token_type.as_deref(),
        token_only: a.tokens.token_only,
        key_slot: a.slot.key_slot,
        has_key_file: a.key.key_file.is_some(),
        need_bound: true,
        pin: None,
        tpm2_device: a.tokens.tpm2.tpm2_device.as_deref(),
        prompt: &prompt,
        verbose: g.verbose,
    };
    let reg = if g.disable_external_tokens {
        Registry::default()
    } else {
        Registry::with_external(&external::search_path())
    };
    let mut p = prompter(g, key_source(&a.key, None), None);
    warn(&refresh::refresh_luks(vol, &opts, &st, &req, &reg, &mut p)?);
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
