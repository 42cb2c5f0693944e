//! Choosing the key provider of a wrapped-key volume: by the name a
//! volume records, or by `--key-provider`, whose default (DESIGN.md §3:
//! only the command line picks one) is the custodian, started on demand.
//!
//! Which provider a volume uses is recorded in its `waes-provider` token
//! (docs/tokens.md): a provider name and, for PKCS#11, a URI without PIN.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use wrapcrypt_format::luks2::{Luks2Header, Token};
use wrapcrypt_provider::{CustodianConfig, CustodianProvider, KeyProvider, Wkb};
use wrapcrypt_secret::SecretBytes;

use crate::error::OpsError;

pub use wrapcrypt_volume::rewrap::{stored_vp, PAES_VP_TOKEN, PROVIDER_TOKEN, VP_TOKEN};

/// The custodian client. `WRAPCRYPT_CUSTODIAN_SOCKET` (a path, not a
/// secret) points it at another daemon instance, e.g. in tests; the daemon
/// started on demand then keeps its state beside that socket, uses the TPM
/// `WRAPCRYPT_CUSTODIAN_TCTI` and the key manager configured in the file
/// `WRAPCRYPT_CUSTODIAN_KMIP_CONFIG` (paths and names, never secrets).
pub fn custodian() -> CustodianProvider {
    match std::env::var_os("WRAPCRYPT_CUSTODIAN_SOCKET") {
        None => CustodianProvider::new(CustodianConfig::system_default()),
        Some(sock) => {
            let sock = PathBuf::from(sock);
            let state = sock.with_extension("state");
            let mut cfg = CustodianConfig::new(&sock);
            if let Some(prog) = wrapcrypt_provider::custodian::find_daemon() {
                let mut args: Vec<OsString> = vec![
                    "--socket".into(),
                    sock.clone().into_os_string(),
                    "--state-dir".into(),
                    state.into_os_string(),
                    "--tcti".into(),
                    std::env::var_os("WRAPCRYPT_CUSTODIAN_TCTI").unwrap_or_else(|| "none".into()),
                ];
                // A path, not a secret: the daemon reads the key manager's
                // address and certificate files from it.
                if let Some(k) = std::env::var_os("WRAPCRYPT_CUSTODIAN_KMIP_CONFIG") {
                    args.extend(["--kmip-config".into(), k]);
                }
                cfg = cfg.with_autostart(prog, args);
            }
            CustodianProvider::new(cfg)
        }
    }
}

/// A provider by name with the PIN already in memory: the FUSE server
/// receives it on its payload pipe, as it receives the blob.
pub fn by_name(
    name: &str,
    locator: Option<&str>,
    pin: Option<&SecretBytes>,
) -> Result<Arc<dyn KeyProvider>, OpsError> {
    match name {
        "custodian" => Ok(Arc::new(custodian())),
        "pkcs11" => pkcs11(locator.unwrap_or(""), pin),
        other => Err(OpsError::usage(format!(
            "Unknown key provider {other} (this wrapcrypt has custodian and pkcs11)."
        ))),
    }
}

/// A chosen provider, its name and (for PKCS#11) its URI.
pub type Chosen = (Arc<dyn KeyProvider>, String, Option<String>);

/// The `--key-provider` option: `custodian` (default) or a PKCS#11 URI.
pub fn from_option(opt: Option<&str>, pin: Option<&SecretBytes>) -> Result<Chosen, OpsError> {
    match opt {
        None | Some("custodian") => Ok((Arc::new(custodian()), "custodian".into(), None)),
        Some(uri) if uri.starts_with("pkcs11:") => {
            Ok((pkcs11(uri, pin)?, "pkcs11".into(), Some(uri.to_string())))
        }
        Some(other) => Err(OpsError::usage(format!(
            "Unknown key provider {other} (use custodian or a pkcs11: URI)."
        ))),
    }
}

fn pkcs11(uri: &str, pin: Option<&SecretBytes>) -> Result<Arc<dyn KeyProvider>, OpsError> {
    if uri.is_empty() {
        return Err(OpsError::usage(
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

/// The provider a volume records (else `fallback`, the blob's provider),
/// with a `pkcs11:` URI given by `--key-provider` taking the place of the
/// recorded one (the token may have moved).
pub fn recorded_or(
    h: &Luks2Header,
    fallback: &str,
    key_provider: Option<&str>,
) -> (String, Option<String>) {
    let (name, locator) = recorded(h).unwrap_or_else(|| (fallback.to_string(), None));
    let locator = key_provider
        .filter(|k| k.starts_with("pkcs11:"))
        .map(str::to_string)
        .or(locator);
    (name, locator)
}

/// The wrapping-key identity the `waes-provider` token records (written at
/// format, convert and re-wrap; `validate` confirms it with the provider).
pub fn recorded_wrapping_key(h: &Luks2Header) -> Option<String> {
    h.meta
        .tokens
        .values()
        .find(|t| t.kind == PROVIDER_TOKEN)
        .and_then(|t| t.json.get("wrapping-key"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Records the blob's wrapping-key identity in the `waes-provider` token.
pub fn note_wrapping_key(tokens: &mut [Token], wkb: &Wkb) {
    for t in tokens.iter_mut().filter(|t| t.kind == PROVIDER_TOKEN) {
        t.json
            .insert("wrapping-key".into(), wkb.wrapping_key().to_string().into());
    }
}

/// Tokens a new waes volume carries.
pub fn tokens(name: &str, locator: Option<&str>, vp: &str) -> Result<Vec<Token>, OpsError> {
    let mut p = json!({"type": PROVIDER_TOKEN, "keyslots": [], "provider": name});
    if let Some(l) = locator {
        p["uri"] = l.into();
    }
    let v = json!({"type": VP_TOKEN, "keyslots": [], "verification-pattern": vp});
    let bad = |e| OpsError::usage(format!("internal token error: {e}"));
    Ok(vec![
        Token::from_json(0, &v).map_err(bad)?,
        Token::from_json(1, &p).map_err(bad)?,
    ])
}
