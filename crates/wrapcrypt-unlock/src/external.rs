//! External token handlers: an executable `wrapcrypt-token-TYPE` serves
//! tokens of JSON type TYPE, as external providers do (DESIGN.md §3).
//! cryptsetup's plugins are shared objects that need a libcryptsetup
//! device handle, which wrapcrypt has none of (docs/unlock-tokens.md §5).
//!
//! Protocol (version 1): the token's JSON on one line of standard input,
//! then, if a PIN was given, the PIN's bytes up to end of input. The
//! handler writes the keyslot passphrase, exactly (no newline processing),
//! on standard output and exits 0; exit 2 means a credential was wrong
//! (PIN, hardware state), anything else that the token is unusable. Its
//! standard error goes to the user. Nothing travels in argv or the
//! environment but `WRAPCRYPT_TOKEN_PROTOCOL=1`.
//!
//! Handlers are found in the directories of `WRAPCRYPT_TOKEN_PATH` (a
//! colon-separated list of paths, not secrets), else `/usr/lib/wrapcrypt/tokens`
//! and `/usr/local/lib/wrapcrypt/tokens`. A handler, and the directory holding
//! it, must belong to root or to the caller and be writable by no one else:
//! anything else could read the passphrases it is asked for.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use wrapcrypt_format::luks2::Token;
use wrapcrypt_secret::SecretBytes;

use crate::error::TokenError;
use crate::handler::{ReleaseContext, TokenHandler};

/// File-name prefix of an external token handler.
pub const PREFIX: &str = "wrapcrypt-token-";
/// Longest passphrase a handler may return.
const MAX_PASSPHRASE: usize = 64 << 10;

/// The directories searched for handlers.
pub fn search_path() -> Vec<PathBuf> {
    match std::env::var_os("WRAPCRYPT_TOKEN_PATH") {
        Some(p) => std::env::split_paths(&p).collect(),
        None => vec![
            "/usr/lib/wrapcrypt/tokens".into(),
            "/usr/local/lib/wrapcrypt/tokens".into(),
        ],
    }
}

/// Why a file may not serve as a handler, if it may not.
fn unsafe_owner(p: &Path) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let m = std::fs::metadata(p).ok()?;
    if m.uid() != 0 && m.uid() != me {
        return Some(format!("{} belongs to uid {}", p.display(), m.uid()));
    }
    if m.mode() & 0o022 != 0 {
        return Some(format!("{} is writable by group or others", p.display()));
    }
    None
}

fn valid_kind(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// Every handler in `dirs`, the first of a type winning.
pub fn discover(dirs: &[PathBuf]) -> Vec<ExternalHandler> {
    let mut out: Vec<ExternalHandler> = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let Some(kind) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(PREFIX))
                .filter(|k| valid_kind(k))
            else {
                continue;
            };
            if out.iter().all(|h| h.kind != kind) {
                out.push(ExternalHandler {
                    kind: kind.to_string(),
                    path: p.clone(),
                });
            }
        }
    }
    out
}

/// One external handler.
#[derive(Debug, Clone)]
pub struct ExternalHandler {
    kind: String,
    path: PathBuf,
}

impl ExternalHandler {
    /// The executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn refuse_unsafe(&self) -> Result<(), TokenError> {
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        for p in [self.path.as_path(), dir] {
            if let Some(why) = unsafe_owner(p) {
                return Err(TokenError::Json(format!(
                    "external token handler refused: {why}"
                )));
            }
        }
        Ok(())
    }
}

impl TokenHandler for ExternalHandler {
    fn kind(&self) -> &str {
        &self.kind
    }

    fn check(&self, _token: &Token) -> Result<(), TokenError> {
        self.refuse_unsafe()
    }

    fn release(
        &self,
        token: &Token,
        ctx: &mut ReleaseContext<'_>,
    ) -> Result<SecretBytes, TokenError> {
        self.refuse_unsafe()?;
        let failed = |e: std::io::Error| {
            TokenError::Json(format!(
                "external token handler {}: {e}",
                self.path.display()
            ))
        };
        let mut child = Command::new(&self.path)
            .env_clear()
            .env("WRAPCRYPT_TOKEN_PROTOCOL", "1")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(failed)?;
        {
            let mut stdin = child.stdin.take().expect("piped");
            let mut line = serde_json::to_vec(&token.to_json()).expect("JSON");
            line.push(b'\n');
            // A handler that does not read its input is not an error.
            let _ = stdin.write_all(&line);
            if let Some(pin) = ctx.pin {
                let _ = stdin.write_all(pin.expose_secret());
            }
        }
        let mut out = SecretBytes::zeroed(MAX_PASSPHRASE + 1);
        let mut n = 0;
        let mut stdout = child.stdout.take().expect("piped");
        loop {
            let got = stdout
                .read(&mut out.expose_secret_mut()[n..])
                .map_err(failed)?;
            if got == 0 {
                break;
            }
            n += got;
            if n > MAX_PASSPHRASE {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TokenError::Json(format!(
                    "external token handler {} returned more than {MAX_PASSPHRASE} bytes",
                    self.path.display()
                )));
            }
        }
        let status = child.wait().map_err(failed)?;
        match status.code() {
            Some(0) if n > 0 => {
                out.truncate(n);
                Ok(out)
            }
            Some(0) => Err(TokenError::Json(format!(
                "external token handler {} returned no passphrase",
                self.path.display()
            ))),
            Some(2) => Err(TokenError::Denied(format!(
                "external token handler {} refused the credentials",
                self.path.display()
            ))),
            _ => Err(TokenError::Json(format!(
                "external token handler {} failed ({status})",
                self.path.display()
            ))),
        }
    }
}
