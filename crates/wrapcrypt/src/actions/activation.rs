//! open / close / status: the volume becomes /dev/mapper/NAME through a
//! FUSE + loop server (wrapcrypt-activate). The server is this binary
//! re-executed with the hidden action `__serve`; the key reaches it on a
//! pipe, never argv or environment.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use wrapcrypt_activate::{ActivateError, ReadyPipe, ServeConfig};
use wrapcrypt_format::luks2::SegmentSize;
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{CipherSpec, SectorCipher};

use crate::args::Args;
use crate::exit::CliError;
use crate::keys;

impl From<ActivateError> for CliError {
    fn from(e: ActivateError) -> CliError {
        CliError::new(e.exit_code(), e.to_string())
    }
}

/// How the server builds its cipher: from a clear key (soft engine), or
/// from a wrapped-key blob through its provider (the server never holds
/// the effective key).
pub(crate) enum KeySource<'a> {
    Clear,
    Wrapped {
        provider: &'a str,
        locator: &'a str,
        /// The PKCS#11 user PIN from --pin-file: the server logs in itself.
        pin: Option<&'a SecretBytes>,
    },
}

/// What the server needs besides its ServeConfig: how to build the cipher.
/// Payload layout on the pipe: u32 LE length of the ServeConfig JSON, the
/// JSON, the cipher spec length (u16 LE) and text, the sector size (u32 LE),
/// a kind byte (0 clear key, 1 wrapped: then u16 LE length + provider name,
/// u16 LE length + locator, u16 LE length + PIN), then the key or blob
/// bytes up to the end.
pub(crate) fn payload(
    cfg: &ServeConfig,
    spec: &str,
    sector_size: u32,
    src: &KeySource,
    key: &SecretBytes,
) -> SecretBytes {
    let json = serde_json::to_vec(cfg).expect("ServeConfig serializes");
    let extra = match src {
        KeySource::Clear => 1,
        KeySource::Wrapped {
            provider,
            locator,
            pin,
        } => 1 + 6 + provider.len() + locator.len() + pin.map_or(0, |p| p.len()),
    };
    let len = 4 + json.len() + 2 + spec.len() + 4 + extra + key.len();
    let mut p = SecretBytes::zeroed(len);
    let b = p.expose_secret_mut();
    let mut o = 0;
    let mut put = |x: &[u8]| {
        b[o..o + x.len()].copy_from_slice(x);
        o += x.len();
    };
    put(&(json.len() as u32).to_le_bytes());
    put(&json);
    put(&(spec.len() as u16).to_le_bytes());
    put(spec.as_bytes());
    put(&sector_size.to_le_bytes());
    match src {
        KeySource::Clear => put(&[0]),
        KeySource::Wrapped {
            provider,
            locator,
            pin,
        } => {
            put(&[1]);
            put(&(provider.len() as u16).to_le_bytes());
            put(provider.as_bytes());
            put(&(locator.len() as u16).to_le_bytes());
            put(locator.as_bytes());
            let pin = pin.map_or(&[][..], |p| p.expose_secret());
            put(&(pin.len() as u16).to_le_bytes());
            put(pin);
        }
    }
    put(key.expose_secret());
    p
}

pub(crate) fn check_cipher(spec: &str) -> Result<CipherSpec, CliError> {
    CipherSpec::parse(spec)
        .map_err(|e| CliError::usage(format!("Cannot activate with cipher {spec}: {e}")))
}

/// open / luksOpen DEVICE NAME.
pub fn open(a: &Args) -> Result<(), CliError> {
    let vol = keys::load(a, false)?;
    let dev = a.pos(0, "<device>")?.to_string();
    if a.flag("test-passphrase") {
        // As cryptsetup: a keyslot named with --key-slot may be unbound (testing
        // its passphrase activates nothing); without it only bound ones count.
        let slot = keys::key_slot(a)?;
        crate::unlock_tokens::unlock(
            a,
            &vol,
            slot.is_none(),
            &format!("Enter passphrase for {dev}: "),
        )?;
        return Ok(());
    }
    if vol.version() == 1 {
        return crate::luks1cmd::open(a, vol, &dev);
    }
    let name = a.pos(1, "<name>")?.to_string();
    vol.check_requirements()?;
    let h = vol.luks2_header()?.clone();
    let seg_id = h
        .meta
        .crypt_segment_id()
        .ok_or_else(|| CliError::usage("Volume has no crypt segment."))?;
    let seg = h.meta.segments[&seg_id].clone();
    let enc = seg.encryption.clone().unwrap_or_default();
    let spec = check_cipher(&enc)?;
    if spec.is_wrapped() && !crate::wrapped::is_waes(&enc) {
        return Err(CliError::usage(format!(
            "Cipher {enc} needs the kernel's paes cipher through device-mapper, which this host does not have."
        )));
    }
    if wrapcrypt_activate::list().contains(&name) || Path::new("/dev/mapper").join(&name).exists() {
        return Err(CliError::new(5, format!("Device {name} already exists.")));
    }
    if let Some(other) = wrapcrypt_activate::is_backing_in_use(Path::new(&dev)) {
        return Err(CliError::new(
            5,
            format!("Cannot use device {dev} which is in use (already mapped as {other})."),
        ));
    }
    let u = crate::unlock_tokens::unlock(a, &vol, true, &format!("Enter passphrase for {dev}: "))?;
    let mut cfg = ServeConfig::new(&name, &dev);
    cfg.data_offset = if vol.is_detached() || seg.offset > 0 {
        seg.offset
    } else {
        0
    };
    cfg.data_size = match seg.size {
        SegmentSize::Dynamic => None,
        SegmentSize::Fixed(s) => Some(s),
    };
    cfg.iv_tweak = seg.iv_tweak;
    cfg.read_only = a.flag("readonly");
    let persistent_discards = h
        .meta
        .config
        .flags
        .iter()
        .flatten()
        .any(|f| f == "allow-discards");
    cfg.allow_discards = a.flag("allow-discards") || persistent_discards;
    cfg.cipher_desc = enc.clone();
    cfg.extra_status
        .insert("type".into(), format!("LUKS{}", vol.version()));
    cfg.extra_status
        .insert("keysize".into(), format!("{} bits", u.key.len() * 8));
    cfg.extra_status.insert("uuid".into(), h.uuid.clone());
    cfg.extra_status
        .insert("keyslot".into(), u.keyslot.to_string());
    let wrapped = if spec.is_wrapped() {
        let o = crate::wrapped::resolve(a, &h, &u.key)?;
        cfg.extra_status
            .insert("protection".into(), o.provider.protection().to_string());
        cfg.extra_status.insert("provider".into(), o.name.clone());
        cfg.extra_status
            .insert("keysize".into(), "512 bits (wrapped)".into());
        Some((o.name, o.locator.unwrap_or_default(), o.pin))
    } else {
        cfg.extra_status
            .insert("protection".into(), "in-process".into());
        cfg.extra_status.insert("provider".into(), "soft".into());
        None
    };
    drop(vol);
    let src = match &wrapped {
        None => KeySource::Clear,
        Some((p, l, pin)) => KeySource::Wrapped {
            provider: p,
            locator: l,
            pin: pin.as_ref(),
        },
    };
    let pl = payload(&cfg, &enc, seg.sector_size, &src, &u.key);
    drop(u);
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
    let b = buf.expose_secret();
    let bad = || CliError::usage("malformed server payload");
    let take = |o: &mut usize, n: usize| -> Result<&[u8], CliError> {
        let s = b.get(*o..*o + n).ok_or_else(bad)?;
        *o += n;
        Ok(s)
    };
    let mut o = 0;
    let jl = u32::from_le_bytes(take(&mut o, 4)?.try_into().expect("4")) as usize;
    let cfg: ServeConfig = serde_json::from_slice(take(&mut o, jl)?).map_err(|_| bad())?;
    let sl = u16::from_le_bytes(take(&mut o, 2)?.try_into().expect("2")) as usize;
    let spec = std::str::from_utf8(take(&mut o, sl)?)
        .map_err(|_| bad())?
        .to_string();
    let sector = u32::from_le_bytes(take(&mut o, 4)?.try_into().expect("4")) as usize;
    let kind = take(&mut o, 1)?[0];
    let built: Result<Arc<dyn SectorCipher>, String> = if kind == 1 {
        let pl = u16::from_le_bytes(take(&mut o, 2)?.try_into().expect("2")) as usize;
        let prov = std::str::from_utf8(take(&mut o, pl)?)
            .map_err(|_| bad())?
            .to_string();
        let ll = u16::from_le_bytes(take(&mut o, 2)?.try_into().expect("2")) as usize;
        let loc = std::str::from_utf8(take(&mut o, ll)?)
            .map_err(|_| bad())?
            .to_string();
        let loc = (!loc.is_empty()).then_some(loc);
        let nl = u16::from_le_bytes(take(&mut o, 2)?.try_into().expect("2")) as usize;
        let pin = take(&mut o, nl)?;
        let pin = (!pin.is_empty()).then(|| SecretBytes::copy_from(pin));
        crate::wrapped::server_cipher(&prov, loc.as_deref(), pin.as_ref(), &b[o..], sector)
            .map_err(|e| e.msg)
    } else {
        let key = SecretBytes::copy_from(&b[o..]);
        check_cipher(&spec)
            .map_err(|e| e.msg)
            .and_then(|cs| {
                wrapcrypt_sector::new_soft_cipher(&cs, &key, sector).map_err(|e| e.to_string())
            })
            .map(Arc::from)
    };
    drop(buf);
    let cipher = match built {
        Ok(c) => c,
        Err(message) => {
            let err = ActivateError::Server {
                code: 1,
                message: format!("cannot build cipher {spec}: {message}"),
            };
            let _ = ready.send(Err(&err));
            return Err(err.into());
        }
    };
    wrapcrypt_activate::run_server(cfg, cipher, |r| {
        let _ = ready.send(r);
    })?;
    Ok(())
}

/// close NAME.
pub fn close(a: &Args) -> Result<(), CliError> {
    let name = a.pos(0, "<name>")?;
    wrapcrypt_activate::close(name)?;
    Ok(())
}

/// status NAME, in cryptsetup's layout.
pub fn status(a: &Args) -> Result<(), CliError> {
    let name = a.pos(0, "<name>")?;
    let st = match wrapcrypt_activate::status(name) {
        Ok(s) => s,
        Err(ActivateError::NotActive(_)) => {
            println!("/dev/mapper/{name} is inactive.");
            return Err(CliError::new(4, ""));
        }
        Err(e) => return Err(e.into()),
    };
    let i = &st.info;
    let x = |k: &str| i.extra.get(k).cloned().unwrap_or_default();
    println!(
        "/dev/mapper/{name} is active{}.",
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
    Ok(())
}
