//! Unlocking with hardware tokens: `systemd-tpm2` and `systemd-pkcs11`
//! LUKS2 tokens (docs/unlock-tokens.md) release a keyslot passphrase (the
//! base64 of a secret only the TPM or the PKCS#11 token can recover), then
//! the keyslot the token names opens as with a typed passphrase.
//!
//! `open` tries tokens before prompting, as cryptsetup does with token
//! plugins: `--token-only` never prompts for a passphrase; otherwise a
//! failed token falls back to the passphrase prompt. Tokens that need a
//! PIN are tried without `--token-only` only when `--pin-file` gives it.

use serde_json::{json, Map, Value};
use wrapcrypt_format::luks2::{Luks2Header, Token};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_volume::{Unlocked, Volume, VolumeError};

use crate::args::Args;
use crate::exit::CliError;
use crate::pkcs11_token::{self, KeyAlgorithm, Pkcs11TokenError};
use crate::tpm2_token::{self, PrimaryAlg, Tpm2Error};
use crate::{b64, keys, pass};

/// systemd-cryptenroll's TPM2 token type.
pub const TPM2_TOKEN: &str = "systemd-tpm2";
/// systemd-cryptenroll's PKCS#11 token type.
pub const PKCS11_TOKEN: &str = "systemd-pkcs11";

/// The fields of a `systemd-tpm2` token that unsealing uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tpm2Token {
    /// `tpm2-blob`, decoded.
    pub blob: Vec<u8>,
    /// `tpm2-pcrs` as a mask.
    pub pcr_mask: u32,
    /// `tpm2-pcr-bank` (default sha256).
    pub bank: String,
    /// `tpm2-primary-alg`, if present.
    pub primary_alg: Option<PrimaryAlg>,
    /// `tpm2-policy-hash`, decoded.
    pub policy_hash: Vec<u8>,
    /// `tpm2-pin`.
    pub pin: bool,
}

/// The fields of a `systemd-pkcs11` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Token {
    /// `pkcs11-uri`.
    pub uri: String,
    /// `pkcs11-key`, decoded.
    pub key: Vec<u8>,
    /// Padding (`pkcs11-key-algorithm`, absent: PKCS#1 v1.5).
    pub alg: KeyAlgorithm,
}

/// A hardware token this build can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HwToken {
    /// `systemd-tpm2`.
    Tpm2(Tpm2Token),
    /// `systemd-pkcs11`.
    Pkcs11(Pkcs11Token),
}

fn field<'a>(m: &'a Map<String, Value>, k: &str) -> Result<&'a Value, String> {
    m.get(k).ok_or_else(|| format!("missing {k}"))
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Result<&'a str, String> {
    field(m, k)?
        .as_str()
        .ok_or_else(|| format!("{k} is not a string"))
}

impl HwToken {
    /// Reads a token's JSON; `Ok(None)` for other token types.
    pub fn parse(t: &Token) -> Result<Option<HwToken>, String> {
        let m = &t.json;
        match t.kind.as_str() {
            TPM2_TOKEN => {
                if m.contains_key("tpm2_salt") || m.contains_key("tpm2-salt") {
                    return Err("salted TPM2 PIN (tpm2_salt) is not supported yet".into());
                }
                if m.contains_key("tpm2_pubkey") || m.contains_key("tpm2_pcrlock") {
                    return Err("signed PCR policies and pcrlock are not supported".into());
                }
                let blob = match field(m, "tpm2-blob")? {
                    Value::String(s) => b64::decode(s).ok_or("tpm2-blob is not base64")?,
                    _ => return Err("tpm2-blob must be one base64 string".into()),
                };
                let mut pcr_mask = 0u32;
                for v in field(m, "tpm2-pcrs")?
                    .as_array()
                    .ok_or("tpm2-pcrs is not an array")?
                {
                    let n = v
                        .as_u64()
                        .filter(|&n| n < 24)
                        .ok_or("tpm2-pcrs holds a value that is not a PCR index")?;
                    pcr_mask |= 1 << n;
                }
                let bank = match m.get("tpm2-pcr-bank") {
                    None => "sha256".to_string(),
                    Some(v) => v
                        .as_str()
                        .ok_or("tpm2-pcr-bank is not a string")?
                        .to_string(),
                };
                let primary_alg = match m.get("tpm2-primary-alg").and_then(Value::as_str) {
                    None => None,
                    Some("ecc") => Some(PrimaryAlg::Ecc),
                    Some("rsa") => Some(PrimaryAlg::Rsa),
                    Some(o) => return Err(format!("unknown tpm2-primary-alg {o:?}")),
                };
                let policy_hash = match m.get("tpm2-policy-hash").and_then(Value::as_str) {
                    None => Vec::new(),
                    Some(h) => hex::decode(h).map_err(|_| "tpm2-policy-hash is not hex")?,
                };
                let pin = m.get("tpm2-pin").and_then(Value::as_bool).unwrap_or(false);
                Ok(Some(HwToken::Tpm2(Tpm2Token {
                    blob,
                    pcr_mask,
                    bank,
                    primary_alg,
                    policy_hash,
                    pin,
                })))
            }
            PKCS11_TOKEN => {
                let uri = str_field(m, "pkcs11-uri")?.to_string();
                let key =
                    b64::decode(str_field(m, "pkcs11-key")?).ok_or("pkcs11-key is not base64")?;
                let alg =
                    KeyAlgorithm::from_field(m.get("pkcs11-key-algorithm").and_then(Value::as_str))
                        .map_err(|e| e.to_string())?;
                Ok(Some(HwToken::Pkcs11(Pkcs11Token { uri, key, alg })))
            }
            _ => Ok(None),
        }
    }

    /// The token JSON as systemd-cryptenroll writes it.
    pub fn to_json(&self, keyslot: u32) -> Value {
        match self {
            HwToken::Tpm2(t) => json!({
                "type": TPM2_TOKEN,
                "keyslots": [keyslot.to_string()],
                "tpm2-blob": b64::encode(&t.blob),
                "tpm2-pcrs": tpm2_token::pcr_list(t.pcr_mask),
                "tpm2-pcr-bank": t.bank,
                "tpm2-primary-alg": t.primary_alg.map(PrimaryAlg::name),
                "tpm2-policy-hash": hex::encode(&t.policy_hash),
                "tpm2-pin": t.pin,
            }),
            HwToken::Pkcs11(t) => {
                let mut v = json!({
                    "type": PKCS11_TOKEN,
                    "keyslots": [keyslot.to_string()],
                    "pkcs11-uri": t.uri,
                    "pkcs11-key": b64::encode(&t.key),
                });
                if t.alg == KeyAlgorithm::OaepSha256 {
                    v["pkcs11-key-algorithm"] = "rsa-oaep-sha256".into();
                }
                v
            }
        }
    }
}

/// Why a token did not release its passphrase.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The TPM refused or was unreachable.
    #[error("{0}")]
    Tpm2(#[from] Tpm2Error),
    /// The PKCS#11 token refused or was unreachable.
    #[error("{0}")]
    Pkcs11(#[from] Pkcs11TokenError),
    /// The token's secret did not open the keyslot it names.
    #[error("keyslot {0} does not open with the token's secret")]
    Keyslot(u32),
    /// A PIN is needed and none was given.
    #[error("a PIN is needed (--pin-file, or --token-only to be asked)")]
    NeedPin,
    /// The token JSON is unusable.
    #[error("{0}")]
    Json(String),
    /// Unlocking the keyslot failed otherwise.
    #[error("{0}")]
    Volume(#[from] VolumeError),
}

impl TokenError {
    /// cryptsetup's exit code: 2 when a credential (PCR state, PIN,
    /// secret) is wrong, 1 when the hardware or the token is unusable.
    pub fn exit_code(&self) -> i32 {
        match self {
            TokenError::Tpm2(Tpm2Error::PolicyMismatch { .. })
            | TokenError::Tpm2(Tpm2Error::BadPin)
            | TokenError::Tpm2(Tpm2Error::Lockout)
            | TokenError::Keyslot(_)
            | TokenError::NeedPin => 2,
            TokenError::Pkcs11(e) if e.is_permission() => 2,
            TokenError::Volume(e) => e.class() as i32,
            _ => 1,
        }
    }
}

/// Reads `--pin-file` (trailing newline dropped).
pub fn pin_file(a: &Args) -> Result<Option<SecretBytes>, CliError> {
    let Some(f) = a.get("pin-file") else {
        return Ok(None);
    };
    let mut p = pass::read_keyfile(f, 0, None)?;
    let n = p
        .expose_secret()
        .iter()
        .rposition(|&c| c != b'\n' && c != b'\r')
        .map_or(0, |i| i + 1);
    p.truncate(n);
    Ok(Some(p))
}

/// One token to try: its id, keyslots and content.
struct Candidate {
    id: u32,
    keyslots: Vec<u32>,
    token: HwToken,
}

fn candidates(a: &Args, h: &Luks2Header) -> Result<(Vec<Candidate>, Vec<String>), CliError> {
    let want_id: Option<u32> = a.num("token-id")?;
    let want_type = a.get("token-type");
    let want_slot = keys::key_slot(a)?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (&id, t) in &h.meta.tokens {
        if want_id.is_some_and(|w| w != id) || want_type.is_some_and(|w| w != t.kind) {
            continue;
        }
        match HwToken::parse(t) {
            Ok(Some(token)) => {
                let keyslots: Vec<u32> = t
                    .keyslots
                    .iter()
                    .copied()
                    .filter(|k| want_slot.is_none_or(|w| w == *k))
                    .collect();
                if !keyslots.is_empty() {
                    out.push(Candidate {
                        id,
                        keyslots,
                        token,
                    });
                }
            }
            Ok(None) if want_id == Some(id) => problems.push(format!(
                "Token {id} of type {} cannot unlock keyslots.",
                t.kind
            )),
            Ok(None) => {}
            Err(e) => problems.push(format!("Token {id} ({}): {e}", t.kind)),
        }
    }
    Ok((out, problems))
}

/// Whether this header has a token `open` should try.
fn has_hw_tokens(h: &Luks2Header) -> bool {
    h.meta
        .tokens
        .values()
        .any(|t| t.kind == TPM2_TOKEN || t.kind == PKCS11_TOKEN)
}

/// The passphrase a token releases (base64 of its secret).
fn token_passphrase(
    a: &Args,
    c: &Candidate,
    pin: Option<&SecretBytes>,
    interactive: bool,
) -> Result<SecretBytes, TokenError> {
    let secret = match &c.token {
        HwToken::Tpm2(t) => {
            let asked;
            let pin = match (t.pin, pin) {
                (false, _) => None,
                (true, Some(p)) => Some(p),
                (true, None) if interactive => {
                    asked = pass::read_line("Please enter TPM2 PIN: ")
                        .map_err(|e| TokenError::Json(e.msg))?;
                    Some(&asked)
                }
                (true, None) => return Err(TokenError::NeedPin),
            };
            let tcti = tpm2_token::tcti_for(a.get("tpm2-device"))?;
            tpm2_token::unseal(&tpm2_token::UnsealParams {
                tcti: &tcti,
                blob: &t.blob,
                mask: t.pcr_mask,
                bank: &t.bank,
                primary_alg: t.primary_alg,
                policy_hash: &t.policy_hash,
                pin,
            })?
        }
        HwToken::Pkcs11(t) => match pkcs11_token::unlock(&t.uri, &t.key, t.alg, pin) {
            Err(Pkcs11TokenError::Provider(e))
                if pin.is_none()
                    && interactive
                    && e.code() == wrapcrypt_provider::ErrorCode::PermissionDenied =>
            {
                let asked = pass::read_line("Please enter security token PIN: ")
                    .map_err(|e| TokenError::Json(e.msg))?;
                pkcs11_token::unlock(&t.uri, &t.key, t.alg, Some(&asked))?
            }
            r => r?,
        },
    };
    Ok(b64::encode_secret(&secret))
}

fn try_token(
    a: &Args,
    vol: &Volume,
    c: &Candidate,
    need_bound: bool,
    pin: Option<&SecretBytes>,
    interactive: bool,
) -> Result<Unlocked, TokenError> {
    let p = token_passphrase(a, c, pin, interactive)?;
    for &slot in &c.keyslots {
        match vol.unlock(p.expose_secret(), Some(slot), need_bound) {
            Ok(u) => return Ok(u),
            Err(VolumeError::NoMatchingKeyslot) | Err(VolumeError::KeyslotInactive(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(TokenError::Keyslot(c.keyslots[0]))
}

/// Unlocks for `open`: tokens first (all of them with `--token-only`,
/// `--token-id` or `--token-type`; otherwise when no `--key-file` is given),
/// then the passphrase unless `--token-only`.
pub fn unlock(
    a: &Args,
    vol: &Volume,
    need_bound: bool,
    prompt: &str,
) -> Result<Unlocked, CliError> {
    let token_only = a.flag("token-only");
    let explicit = token_only || a.get("token-id").is_some() || a.get("token-type").is_some();
    // LUKS1 headers have no tokens.
    let h = vol.luks2_header().ok();
    let try_tokens = explicit || (a.get("key-file").is_none() && h.is_some_and(has_hw_tokens));
    if try_tokens {
        let Some(h) = h else {
            return Err(CliError::usage("LUKS1 devices have no tokens."));
        };
        let (cands, problems) = candidates(a, h)?;
        let pin = pin_file(a)?;
        let mut last: Option<(u32, TokenError)> = None;
        for c in &cands {
            match try_token(a, vol, c, need_bound, pin.as_ref(), token_only) {
                Ok(u) => {
                    if a.flag("verbose") {
                        println!("Token {} unlocked keyslot {}.", c.id, u.keyslot);
                    }
                    return Ok(u);
                }
                Err(e) => {
                    if !token_only {
                        eprintln!("Token {} ({}) failed: {e}", c.id, kind_name(&c.token));
                    }
                    last = Some((c.id, e));
                }
            }
        }
        if token_only {
            for p in &problems {
                eprintln!("{p}");
            }
            return Err(match last {
                Some((id, e)) => CliError::new(
                    e.exit_code(),
                    format!("Token {id} cannot unlock the volume: {e}."),
                ),
                None => CliError::new(1, "No usable token is available."),
            });
        }
    }
    let p = keys::existing_passphrase(a, prompt, None)?;
    Ok(vol.unlock(p.expose_secret(), keys::key_slot(a)?, need_bound)?)
}

fn kind_name(t: &HwToken) -> &'static str {
    match t {
        HwToken::Tpm2(_) => TPM2_TOKEN,
        HwToken::Pkcs11(_) => PKCS11_TOKEN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(v: Value) -> Token {
        Token::from_json(0, &v).unwrap()
    }

    #[test]
    fn tpm2_token_round_trips_in_systemd_layout() {
        let t = HwToken::Tpm2(Tpm2Token {
            blob: vec![0, 2, 9, 9, 0, 1, 7],
            pcr_mask: 1 << 7 | 1 << 11,
            bank: "sha256".into(),
            primary_alg: Some(PrimaryAlg::Ecc),
            policy_hash: vec![0xab; 32],
            pin: false,
        });
        let v = t.to_json(3);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "type",
                "keyslots",
                "tpm2-blob",
                "tpm2-pcrs",
                "tpm2-pcr-bank",
                "tpm2-primary-alg",
                "tpm2-policy-hash",
                "tpm2-pin"
            ]
        );
        assert_eq!(v["keyslots"], json!(["3"]));
        assert_eq!(v["tpm2-pcrs"], json!([7, 11]));
        assert_eq!(v["tpm2-blob"], "AAIJCQABBw==");
        assert_eq!(HwToken::parse(&tok(v)).unwrap().unwrap(), t);
    }

    #[test]
    fn pkcs11_token_round_trips_and_defaults() {
        let v = json!({"type": "systemd-pkcs11", "keyslots": ["1"],
            "pkcs11-uri": "pkcs11:token=T;type=private", "pkcs11-key": "AQID"});
        let Some(HwToken::Pkcs11(p)) = HwToken::parse(&tok(v.clone())).unwrap() else {
            panic!("not pkcs11")
        };
        assert_eq!(p.key, [1, 2, 3]);
        assert_eq!(p.alg, KeyAlgorithm::Pkcs1v15);
        assert_eq!(HwToken::Pkcs11(p).to_json(1), v);
    }

    #[test]
    fn unusable_tokens_say_why() {
        let salted = json!({"type": "systemd-tpm2", "keyslots": [], "tpm2-blob": "AA==",
            "tpm2-pcrs": [], "tpm2_salt": "x"});
        assert!(HwToken::parse(&tok(salted)).unwrap_err().contains("salt"));
        let bad_pcr = json!({"type": "systemd-tpm2", "keyslots": [], "tpm2-blob": "AA==",
            "tpm2-pcrs": [24]});
        assert!(HwToken::parse(&tok(bad_pcr)).is_err());
        let other = json!({"type": "luks2-keyring", "keyslots": [], "key_description": "k"});
        assert_eq!(HwToken::parse(&tok(other)).unwrap(), None);
    }
}
