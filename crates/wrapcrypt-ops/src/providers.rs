//! Choosing the key provider of a wrapped-key volume. Only the CLI picks a
//! default (DESIGN.md §3): the custodian, started on demand.
//!
//! Which provider a volume uses is recorded in its `waes-provider` token
//! (docs/tokens.md): a provider name and, for PKCS#11, a URI without PIN.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use wrapcrypt_format::luks2::{Luks2Header, Token};
use wrapcrypt_provider::{CustodianConfig, CustodianProvider, KeyProvider, ProviderError};
use wrapcrypt_secret::SecretBytes;

use crate::exit::CliError;

/// Token type that names a wrapped volume's provider.
pub const PROVIDER_TOKEN: &str = "waes-provider";
/// Token type that stores the verification pattern of a waes volume.
pub const VP_TOKEN: &str = "waes-verification-pattern";
/// The same for IBM paes volumes, as zkey writes it.
pub const PAES_VP_TOKEN: &str = "paes-verification-pattern";

impl From<ProviderError> for CliError {
    fn from(e: ProviderError) -> CliError {
        use std::io::ErrorKind;
        use wrapcrypt_provider::ErrorCode;
        // cryptsetup's codes (docs/provider-protocol.md §9): 2 where a
        // permission or a PIN is wrong, 1 for everything else, which is
        // what its translate_errno gives for EINVAL, ENOENT and the rest.
        match &e {
            ProviderError::Connect { path, source } => {
                let code = match source.kind() {
                    ErrorKind::PermissionDenied => 2,
                    _ => 1,
                };
                let absent = matches!(
                    source.kind(),
                    ErrorKind::NotFound | ErrorKind::ConnectionRefused
                );
                let msg = if absent && wrapcrypt_provider::custodian::find_daemon().is_none() {
                    format!(
                        "The key custodian is not running (nothing listens on {}) and cannot be started: wrapcrypt-custodiand is not installed beside wrapcrypt or on PATH.",
                        path.display()
                    )
                } else if code == 2 {
                    format!(
                        "Cannot reach the key custodian at {}: permission denied (the socket or its directory belongs to another user).",
                        path.display()
                    )
                } else {
                    format!(
                        "Cannot reach the key custodian at {}: {}.",
                        path.display(),
                        io_text(source)
                    )
                };
                CliError::new(code, msg)
            }
            ProviderError::Spawn { program, source } => CliError::new(
                1,
                format!(
                    "The key custodian is not running and could not be started ({}): {}.",
                    program.display(),
                    io_text(source)
                ),
            ),
            _ => {
                let code = match e.code() {
                    ErrorCode::PermissionDenied => 2,
                    _ => 1,
                };
                CliError::new(code, format!("Key provider error: {e}"))
            }
        }
    }
}

/// An I/O error as a user reads it: "Permission denied", without Rust's
/// "(os error 13)" suffix; one line even if a daemon's message had more.
fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    };
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The custodian client. `WRAPCRYPT_CUSTODIAN_SOCKET` (a path, not a
/// secret) points it at another daemon instance, e.g. in tests; the daemon
/// started on demand then keeps its state beside that socket.
pub fn custodian() -> CustodianProvider {
    match std::env::var_os("WRAPCRYPT_CUSTODIAN_SOCKET") {
        None => CustodianProvider::new(CustodianConfig::system_default()),
        Some(sock) => {
            let sock = PathBuf::from(sock);
            let state = sock.with_extension("state");
            let mut cfg = CustodianConfig::new(&sock);
            if let Some(prog) = wrapcrypt_provider::custodian::find_daemon() {
                let args: Vec<OsString> = vec![
                    "--socket".into(),
                    sock.clone().into_os_string(),
                    "--state-dir".into(),
                    state.into_os_string(),
                    "--tcti".into(),
                    std::env::var_os("WRAPCRYPT_CUSTODIAN_TCTI").unwrap_or_else(|| "none".into()),
                ];
                cfg = cfg.with_autostart(prog, args);
            }
            CustodianProvider::new(cfg)
        }
    }
}

/// A provider by name (and locator: a PKCS#11 URI).
pub fn by_name(
    name: &str,
    locator: Option<&str>,
    pin_file: Option<&str>,
) -> Result<Arc<dyn KeyProvider>, CliError> {
    match name {
        "pkcs11" => by_name_with_pin(name, locator, pin_from_file(pin_file)?.as_ref()),
        _ => by_name_with_pin(name, locator, None),
    }
}

/// A provider by name with the PIN already in memory: the FUSE server
/// receives it on its payload pipe, as it receives the blob.
pub fn by_name_with_pin(
    name: &str,
    locator: Option<&str>,
    pin: Option<&SecretBytes>,
) -> Result<Arc<dyn KeyProvider>, CliError> {
    match name {
        "custodian" => Ok(Arc::new(custodian())),
        "pkcs11" => pkcs11(locator.unwrap_or(""), pin),
        other => Err(CliError::usage(format!(
            "Unknown key provider {other} (this wrapcrypt has custodian and pkcs11)."
        ))),
    }
}

/// A chosen provider, its name and (for PKCS#11) its URI.
pub type Chosen = (Arc<dyn KeyProvider>, String, Option<String>);

/// The `--key-provider` option: `custodian` (default) or a PKCS#11 URI.
pub fn from_option(opt: Option<&str>, pin_file: Option<&str>) -> Result<Chosen, CliError> {
    match opt {
        None | Some("custodian") => Ok((Arc::new(custodian()), "custodian".into(), None)),
        Some(uri) if uri.starts_with("pkcs11:") => Ok((
            pkcs11(uri, pin_from_file(pin_file)?.as_ref())?,
            "pkcs11".into(),
            Some(uri.to_string()),
        )),
        Some(other) => Err(CliError::usage(format!(
            "Unknown key provider {other} (use custodian or a pkcs11: URI)."
        ))),
    }
}

/// The PIN from `--pin-file`, read into locked memory, trailing newline
/// dropped; never from argv or the environment.
pub fn pin_from_file(pin_file: Option<&str>) -> Result<Option<SecretBytes>, CliError> {
    let Some(f) = pin_file else {
        return Ok(None);
    };
    let mut p = crate::pass::read_keyfile(f, 0, None)?;
    let trimmed = p
        .expose_secret()
        .iter()
        .rposition(|&c| c != b'\n' && c != b'\r')
        .map_or(0, |i| i + 1);
    p.truncate(trimmed);
    Ok(Some(p))
}

fn pkcs11(uri: &str, pin: Option<&SecretBytes>) -> Result<Arc<dyn KeyProvider>, CliError> {
    if uri.is_empty() {
        return Err(CliError::usage(
            "The volume names a PKCS#11 provider but no URI; pass --key-provider pkcs11:…",
        ));
    }
    Ok(Arc::new(wrapcrypt_provider::Pkcs11Provider::open(
        uri, pin,
    )?))
}

/// The provider recorded in a header's `waes-provider` token.
pub fn recorded(h: &Luks2Header) -> Option<(String, Option<String>)> {
    h.meta
        .tokens
        .values()
        .find(|t| t.kind == PROVIDER_TOKEN)
        .map(|t| {
            let name = t
                .json
                .get("provider")
                .and_then(|v| v.as_str())
                .unwrap_or("custodian")
                .to_string();
            let loc = t
                .json
                .get("uri")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            (name, loc)
        })
}

/// The stored verification pattern, if any.
pub fn stored_vp(h: &Luks2Header) -> Option<String> {
    h.meta
        .tokens
        .values()
        .find(|t| t.kind == VP_TOKEN || t.kind == PAES_VP_TOKEN)
        .and_then(|t| t.json.get("verification-pattern"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Tokens a new waes volume carries.
pub fn tokens(name: &str, locator: Option<&str>, vp: &str) -> Result<Vec<Token>, CliError> {
    let mut p = json!({"type": PROVIDER_TOKEN, "keyslots": [], "provider": name});
    if let Some(l) = locator {
        p["uri"] = l.into();
    }
    let v = json!({"type": VP_TOKEN, "keyslots": [], "verification-pattern": vp});
    let bad = |e| CliError::usage(format!("internal token error: {e}"));
    Ok(vec![
        Token::from_json(0, &v).map_err(bad)?,
        Token::from_json(1, &p).map_err(bad)?,
    ])
}
