//! Workflows driven through the libraries alone, without the command line:
//! format, add a key, add a token and unlock through a token handler of
//! this test's own JSON type, checked against the bytes on disk and
//! against cryptsetup where it is installed.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use wrapcrypt_format::luks2::Token;
use wrapcrypt_ops::keyslots::{self, AddKeyOptions, FormatOptions};
use wrapcrypt_ops::tokens::{self, Placement};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_unlock::{
    PromptError, Registry, ReleaseContext, Scripted, TokenError, TokenHandler, UnlockError,
    UnlockRequest,
};
use wrapcrypt_volume::{ExitClass, PbkdfOptions, Volume};

fn fast() -> PbkdfOptions {
    PbkdfOptions {
        kind: Some("pbkdf2".into()),
        force_iterations: Some(1000),
        ..Default::default()
    }
}

fn secret(s: &str) -> SecretBytes {
    SecretBytes::copy_from(s.as_bytes())
}

fn image(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("disk.img");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    p
}

fn formatted(dir: &Path) -> std::path::PathBuf {
    let img = image(dir);
    let opts = FormatOptions {
        device: &img,
        header: None,
        kind: None,
        cipher: None,
        key_bits: None,
        sector_size: None,
        metadata_size: None,
        keyslots_size: None,
        offset_sectors: None,
        align_payload: None,
        uuid: None,
        label: Some("library"),
        subsystem: None,
        pbkdf: fast(),
        key_slot: None,
        allow_discards: false,
        volume_key: None,
        provider: Default::default(),
    };
    keyslots::format(&opts, &mut Scripted::new([secret("first pass")])).unwrap();
    img
}

/// `cryptsetup open --test-passphrase` with `pass`, or None without cryptsetup.
fn cryptsetup_accepts(img: &Path, pass: &str) -> Option<bool> {
    let out = Command::new("cryptsetup")
        .args(["open", "--test-passphrase", "--key-file", "-"])
        .arg(img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()
        .map(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(pass.as_bytes()).unwrap();
            c.wait().unwrap()
        })?;
    Some(out.success())
}

#[test]
fn format_and_add_key_through_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let img = formatted(dir.path());
    let mut vol = Volume::open(&img, None, true).unwrap();
    let opts = AddKeyOptions {
        new_slot: Some(3),
        pbkdf: fast(),
        ..Default::default()
    };
    let mut p = Scripted::new([secret("first pass"), secret("second pass")]);
    assert_eq!(keyslots::add_key(&mut vol, &opts, &mut p).unwrap(), 3);
    drop(vol);
    let vol = Volume::open(&img, None, false).unwrap();
    assert_eq!(vol.luks2_header().unwrap().label, "library");
    let a = vol.unlock(b"first pass", None, true).unwrap();
    let b = vol.unlock(b"second pass", None, true).unwrap();
    assert_eq!((a.keyslot, b.keyslot), (0, 3));
    assert_eq!(a.key.expose_secret(), b.key.expose_secret());
    drop(vol);
    // A wrong passphrase is refused with cryptsetup's class, nothing asked twice.
    let mut vol = Volume::open(&img, None, true).unwrap();
    let e = keyslots::remove_key(&mut vol, None, &mut Scripted::new([secret("nope")])).unwrap_err();
    assert_eq!(CliClass::of(&e), ExitClass::Permission);
    // cryptsetup takes the same lock: let go first.
    drop(vol);
    match cryptsetup_accepts(&img, "second pass") {
        Some(ok) => {
            assert!(ok, "cryptsetup refuses the keyslot the library added");
            assert_eq!(cryptsetup_accepts(&img, "nope"), Some(false));
        }
        None => println!("skipped the cryptsetup check: cryptsetup is not installed"),
    }
}

/// The exit class of a workflow error (as the CLI maps it).
struct CliClass;

impl CliClass {
    fn of(e: &wrapcrypt_ops::OpsError) -> ExitClass {
        match e {
            wrapcrypt_ops::OpsError::Volume(v) => v.class(),
            wrapcrypt_ops::OpsError::Unlock(u) => u.class(),
            wrapcrypt_ops::OpsError::Prompt(p) => p.class,
            _ => ExitClass::WrongParams,
        }
    }
}

/// A token type of this test: the passphrase stands in the token JSON
/// (only a test would do this; a real handler asks hardware).
struct InlineToken;

const INLINE: &str = "wrapcrypt-test-inline";

impl TokenHandler for InlineToken {
    fn kind(&self) -> &'static str {
        INLINE
    }

    fn check(&self, token: &Token) -> Result<(), TokenError> {
        match token.json.get("passphrase").and_then(|v| v.as_str()) {
            Some(_) => Ok(()),
            None => Err(TokenError::Json("missing passphrase".into())),
        }
    }

    fn release(
        &self,
        token: &Token,
        _ctx: &mut ReleaseContext<'_>,
    ) -> Result<SecretBytes, TokenError> {
        self.check(token)?;
        Ok(secret(token.json["passphrase"].as_str().unwrap()))
    }
}

fn add_inline(img: &Path, pass: &str) {
    let mut vol = Volume::open(img, None, true).unwrap();
    let t = json!({"type": INLINE, "keyslots": [], "passphrase": pass});
    let at = Placement {
        id: Some(4),
        replace: true,
        key_slot: Some(0),
    };
    assert_eq!(tokens::import(&mut vol, t, at).unwrap(), 4);
}

#[test]
fn unlock_policy_tries_handlers_by_json_type_then_the_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let img = formatted(dir.path());
    add_inline(&img, "first pass");
    let reg = Registry::empty().with(Box::new(InlineToken));
    let req = UnlockRequest {
        need_bound: true,
        prompt: "Enter passphrase: ",
        ..Default::default()
    };
    let vol = Volume::open(&img, None, false).unwrap();
    // The token opens keyslot 0 and no passphrase is asked (none is queued).
    let mut p = Scripted::new([]);
    let u = wrapcrypt_unlock::unlock(&vol, &req, &reg, &mut p).unwrap();
    assert_eq!(u.keyslot, 0);
    // The default registry has no handler for this type: the passphrase is asked.
    let e = wrapcrypt_unlock::unlock(&vol, &req, &Registry::default(), &mut Scripted::new([]))
        .unwrap_err();
    assert!(matches!(e, UnlockError::Prompt(PromptError { .. })), "{e}");
    drop(vol);

    // A token whose secret is wrong: --token-only fails with permission…
    add_inline(&img, "wrong");
    let vol = Volume::open(&img, None, false).unwrap();
    let only = UnlockRequest {
        token_only: true,
        ..req.clone()
    };
    let e = wrapcrypt_unlock::unlock(&vol, &only, &reg, &mut Scripted::new([])).unwrap_err();
    assert!(matches!(e, UnlockError::TokenFailed { id: 4, .. }), "{e}");
    assert_eq!(e.class(), ExitClass::Permission);
    // …and without it the passphrase is the fallback, the failure said once.
    let mut p = Scripted::new([secret("first pass")]);
    let u = wrapcrypt_unlock::unlock(&vol, &req, &reg, &mut p).unwrap();
    assert_eq!(u.keyslot, 0);
    assert_eq!(p.said.len(), 1, "{:?}", p.said);
    assert!(p.said[0].starts_with("Token 4 (wrapcrypt-test-inline) failed"));
    // A key file given means tokens are not tried unless asked for.
    let kf = UnlockRequest {
        has_key_file: true,
        ..req.clone()
    };
    let mut p = Scripted::new([secret("first pass")]);
    wrapcrypt_unlock::unlock(&vol, &kf, &reg, &mut p).unwrap();
    assert!(p.said.is_empty(), "{:?}", p.said);
}

fn handler_script(dir: &Path, kind: &str, body: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(format!("wrapcrypt-token-{kind}"));
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn external_handlers_follow_their_protocol() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let img = formatted(dir.path());
    let plugins = dir.path().join("tokens");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The PIN follows the JSON line on stdin; the passphrase is the PIN here.
    handler_script(&plugins, "t-pin", "read -r json\ncat", 0o755);
    handler_script(&plugins, "t-deny", "exit 2", 0o755);
    handler_script(&plugins, "t-empty", "exit 0", 0o755);
    let mut vol = Volume::open(&img, None, true).unwrap();
    for (id, kind) in [(1, "t-pin"), (2, "t-deny"), (3, "t-empty")] {
        let t = json!({"type": kind, "keyslots": []});
        let at = Placement {
            id: Some(id),
            replace: false,
            key_slot: Some(0),
        };
        tokens::import(&mut vol, t, at).unwrap();
    }
    drop(vol);
    let vol = Volume::open(&img, None, false).unwrap();
    let reg = Registry::with_external(std::slice::from_ref(&plugins));
    let pin = secret("first pass");
    let only = |id| UnlockRequest {
        token_id: Some(id),
        token_only: true,
        need_bound: true,
        pin: Some(&pin),
        ..Default::default()
    };
    let u = wrapcrypt_unlock::unlock(&vol, &only(1), &reg, &mut Scripted::new([])).unwrap();
    assert_eq!(u.keyslot, 0);
    let e = wrapcrypt_unlock::unlock(&vol, &only(2), &reg, &mut Scripted::new([])).unwrap_err();
    assert_eq!(e.class(), ExitClass::Permission, "{e}");
    let e = wrapcrypt_unlock::unlock(&vol, &only(3), &reg, &mut Scripted::new([])).unwrap_err();
    assert_eq!(e.class(), ExitClass::WrongParams, "{e}");
    assert!(e.to_string().contains("returned no passphrase"), "{e}");
    // A built-in type is never served by an external handler.
    handler_script(&plugins, "systemd-tpm2", "printf x", 0o755);
    let reg = Registry::with_external(std::slice::from_ref(&plugins));
    let served: Vec<&str> = ["systemd-tpm2", "t-pin"]
        .into_iter()
        .filter(|k| reg.get(k).is_some_and(|h| h.kind() == *k))
        .collect();
    assert_eq!(served, ["systemd-tpm2", "t-pin"]);
    assert!(!format!("{:?}", reg.get("systemd-tpm2").map(|h| h.kind())).is_empty());
}
