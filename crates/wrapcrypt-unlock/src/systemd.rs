//! The tokens systemd-cryptenroll writes, `systemd-tpm2` and
//! `systemd-pkcs11` (docs/unlock-tokens.md): their JSON layout, and the
//! handlers that release their keyslot passphrase (the base64 of a secret
//! only the TPM or the PKCS#11 token can recover).

use serde_json::{json, Map, Value};
use wrapcrypt_format::b64;
use wrapcrypt_format::luks2::Token;
use wrapcrypt_secret::SecretBytes;

use crate::error::TokenError;
use crate::handler::{ReleaseContext, TokenHandler};
use crate::pkcs11::{self, KeyAlgorithm, Pkcs11TokenError};
use crate::tpm2::{self, PrimaryAlg};

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
                    Value::String(s) => b64::decode_relaxed(s).ok_or("tpm2-blob is not base64")?,
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
                let key = b64::decode_relaxed(str_field(m, "pkcs11-key")?)
                    .ok_or("pkcs11-key is not base64")?;
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
                "tpm2-pcrs": tpm2::pcr_list(t.pcr_mask),
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

fn parsed(t: &Token) -> Result<HwToken, TokenError> {
    match HwToken::parse(t) {
        Ok(Some(h)) => Ok(h),
        Ok(None) => Err(TokenError::Json(format!("not a {} token", t.kind))),
        Err(e) => Err(TokenError::Json(e)),
    }
}

/// Releases the tokens systemd-cryptenroll writes: `systemd-tpm2` through
/// tss-esapi, `systemd-pkcs11` through the PKCS#11 provider's module.
pub struct SystemdHandler {
    kind: &'static str,
}

impl SystemdHandler {
    /// The `systemd-tpm2` handler.
    pub const TPM2: SystemdHandler = SystemdHandler { kind: TPM2_TOKEN };
    /// The `systemd-pkcs11` handler.
    pub const PKCS11: SystemdHandler = SystemdHandler { kind: PKCS11_TOKEN };
}

fn release_tpm2(t: &Tpm2Token, ctx: &mut ReleaseContext<'_>) -> Result<SecretBytes, TokenError> {
    let asked;
    let pin = match (t.pin, ctx.pin) {
        (false, _) => None,
        (true, Some(p)) => Some(p),
        (true, None) if ctx.interactive => {
            asked = ctx.prompter.line("Please enter TPM2 PIN: ")?;
            Some(&asked)
        }
        (true, None) => return Err(TokenError::NeedPin),
    };
    let tcti = tpm2::tcti_for(ctx.tpm2_device)?;
    Ok(tpm2::unseal(&tpm2::UnsealParams {
        tcti: &tcti,
        blob: &t.blob,
        mask: t.pcr_mask,
        bank: &t.bank,
        primary_alg: t.primary_alg,
        policy_hash: &t.policy_hash,
        pin,
    })?)
}

fn release_pkcs11(
    t: &Pkcs11Token,
    ctx: &mut ReleaseContext<'_>,
) -> Result<SecretBytes, TokenError> {
    match pkcs11::unlock(&t.uri, &t.key, t.alg, ctx.pin) {
        Err(Pkcs11TokenError::Provider(e))
            if ctx.pin.is_none()
                && ctx.interactive
                && e.code() == wrapcrypt_provider::ErrorCode::PermissionDenied =>
        {
            let asked = ctx.prompter.line("Please enter security token PIN: ")?;
            Ok(pkcs11::unlock(&t.uri, &t.key, t.alg, Some(&asked))?)
        }
        r => Ok(r?),
    }
}

impl TokenHandler for SystemdHandler {
    fn kind(&self) -> &str {
        self.kind
    }

    fn check(&self, token: &Token) -> Result<(), TokenError> {
        parsed(token).map(drop)
    }

    fn release(
        &self,
        token: &Token,
        ctx: &mut ReleaseContext<'_>,
    ) -> Result<SecretBytes, TokenError> {
        let secret = match parsed(token)? {
            HwToken::Tpm2(t) => release_tpm2(&t, ctx)?,
            HwToken::Pkcs11(t) => release_pkcs11(&t, ctx)?,
        };
        Ok(b64::encode_secret(&secret))
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
