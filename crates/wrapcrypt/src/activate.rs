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

/// What the server needs besides its ServeConfig: how to build the cipher.
/// Payload layout on the pipe: u32 LE length of the ServeConfig JSON, the
/// JSON, the cipher spec length (u16 LE) and text, the sector size (u32 LE),
/// then the key bytes up to the end.
pub(crate) fn payload(
    cfg: &ServeConfig,
    spec: &str,
    sector_size: u32,
    key: &SecretBytes,
) -> SecretBytes {
    let json = serde_json::to_vec(cfg).expect("ServeConfig serializes");
    let len = 4 + json.len() + 2 + spec.len() + 4 + key.len();
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
        let p = keys::existing_passphrase(a, &format!("Enter passphrase for {dev}: "), None)?;
        vol.unlock(p.expose_secret(), keys::key_slot(a)?, true)?;
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
    if spec.is_wrapped() {
        return Err(CliError::usage(format!(
            "Cipher {enc} needs a key provider; wrapped-key activation is not available in this build yet."
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
    let p = keys::existing_passphrase(a, &format!("Enter passphrase for {dev}: "), None)?;
    let u = vol.unlock(p.expose_secret(), keys::key_slot(a)?, true)?;
    drop(p);
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
    cfg.extra_status
        .insert("protection".into(), "in-process".into());
    cfg.extra_status.insert("provider".into(), "soft".into());
    drop(vol);
    let pl = payload(&cfg, &enc, seg.sector_size, &u.key);
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
    let key = SecretBytes::copy_from(&b[o..]);
    drop(buf);
    let cs = check_cipher(&spec)?;
    let cipher: Arc<dyn SectorCipher> = match wrapcrypt_sector::new_soft_cipher(&cs, &key, sector) {
        Ok(c) => Arc::from(c),
        Err(e) => {
            let err = ActivateError::Server {
                code: 1,
                message: format!("cannot build cipher {spec}: {e}"),
            };
            let _ = ready.send(Err(&err));
            return Err(err.into());
        }
    };
    drop(key);
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
