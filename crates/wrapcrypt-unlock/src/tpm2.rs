//! TPM 2.0 sealing for the `systemd-tpm2` token (tss-esapi).
//!
//! Same construction as systemd-cryptenroll (docs/unlock-tokens.md): a
//! transient storage primary in the owner hierarchy from the well-known
//! ECC P-256 template (RSA 2048 where ECC is missing), a keyed-hash object
//! holding 32 random bytes whose only authorisation is a policy
//! (PolicyPCR over the chosen PCRs, plus PolicyAuthValue with a PIN), and
//! a salted HMAC session that encrypts the secret on the wire.

use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Auth, Digest, EccPoint, KeyedHashScheme, PcrSelectSize, PcrSelectionList,
    PcrSelectionListBuilder, PcrSlot, Private, Public, PublicBuilder, PublicEccParametersBuilder,
    PublicKeyRsa, PublicKeyedHashParameters, PublicRsaParametersBuilder, RsaExponent,
    SensitiveData, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::{Context, TctiNameConf};
use wrapcrypt_secret::SecretBytes;

/// Bytes of the sealed secret (systemd seals 32).
pub const SECRET_LEN: usize = 32;

/// Why sealing or unsealing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Tpm2Error {
    /// No TPM at the TCTI (not running, wrong port, no device).
    #[error("cannot reach the TPM at {tcti}: {message}")]
    Connect {
        /// TCTI string
        tcti: String,
        /// cause
        message: String,
    },
    /// The PCRs no longer have the values the secret was sealed to.
    #[error(
        "the TPM2 PCR policy does not match (PCR {pcrs} of bank {bank} changed since enrollment)"
    )]
    PolicyMismatch {
        /// PCR list, e.g. "7+11"
        pcrs: String,
        /// PCR bank
        bank: String,
    },
    /// The TPM2 PIN is wrong.
    #[error("wrong TPM2 PIN")]
    BadPin,
    /// The TPM refuses authorisations until its lockout ends.
    #[error("the TPM is in dictionary-attack lockout mode")]
    Lockout,
    /// The token's blob or fields cannot be used.
    #[error("invalid systemd-tpm2 token: {0}")]
    Token(String),
    /// Another TPM command failed.
    #[error("TPM2 {op} failed: {message}")]
    Tpm {
        /// what was being done
        op: &'static str,
        /// TPM's message
        message: String,
    },
}

fn tpm(op: &'static str) -> impl Fn(tss_esapi::Error) -> Tpm2Error {
    move |e| {
        if let tss_esapi::Error::Tss2Error(rc) = e {
            match rc.kind() {
                Some(Tss2ResponseCodeKind::AuthFail) | Some(Tss2ResponseCodeKind::BadAuth) => {
                    return Tpm2Error::BadPin
                }
                Some(Tss2ResponseCodeKind::Lockout) => return Tpm2Error::Lockout,
                _ => {}
            }
        }
        Tpm2Error::Tpm {
            op,
            message: e.to_string(),
        }
    }
}

/// Resolves `--tpm2-device`: `auto` (the one /dev/tpmrm*), a device path,
/// or a TCTI string (`swtpm:port=N`, `device:/dev/tpmrm0`, `mssim:…`).
pub fn tcti_for(device: Option<&str>) -> Result<String, Tpm2Error> {
    match device {
        None | Some("auto") => {
            let found: Vec<String> = std::fs::read_dir("/sys/class/tpmrm")
                .map(|d| {
                    d.filter_map(Result::ok)
                        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
                        .collect()
                })
                .unwrap_or_default();
            match found.as_slice() {
                [one] => Ok(format!("device:{one}")),
                [] => Err(Tpm2Error::Connect {
                    tcti: "auto".into(),
                    message: "no TPM2 device (/dev/tpmrm*) found; pass --tpm2-device".into(),
                }),
                _ => Err(Tpm2Error::Connect {
                    tcti: "auto".into(),
                    message: "more than one TPM2 device found; pass --tpm2-device".into(),
                }),
            }
        }
        Some(p) if p.starts_with('/') => Ok(format!("device:{p}")),
        Some(t) => Ok(t.to_string()),
    }
}

/// Parses a PCR list in systemd's syntax: indexes 0–23 separated by `+`
/// or `,` (`7`, `0+7+11`); empty means no PCR.
pub fn parse_pcrs(s: &str) -> Result<u32, String> {
    let mut mask = 0u32;
    for part in s.split(['+', ',']).filter(|p| !p.is_empty()) {
        // systemd also accepts "7:sha256=…" literal values and names; not these.
        let n: u32 = part
            .parse()
            .map_err(|_| format!("invalid PCR index {part:?} (use numbers 0-23 joined by +)"))?;
        if n > 23 {
            return Err(format!("PCR index {n} out of range 0-23"));
        }
        mask |= 1 << n;
    }
    Ok(mask)
}

/// PCR indexes of a mask, ascending.
pub fn pcr_list(mask: u32) -> Vec<u32> {
    (0..24).filter(|i| mask & (1 << i) != 0).collect()
}

/// `bank` name as systemd writes it.
pub fn bank_alg(bank: &str) -> Result<HashingAlgorithm, Tpm2Error> {
    match bank {
        "sha256" => Ok(HashingAlgorithm::Sha256),
        "sha1" => Ok(HashingAlgorithm::Sha1),
        "sha384" => Ok(HashingAlgorithm::Sha384),
        "sha512" => Ok(HashingAlgorithm::Sha512),
        other => Err(Tpm2Error::Token(format!("unknown PCR bank {other:?}"))),
    }
}

fn context(tcti: &str) -> Result<Context, Tpm2Error> {
    // The TSS logs every failed connect and TPM error on stderr; the CLI
    // prints one line itself. TSS2_LOG set by the user still wins.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+none");
    }
    let conn = |message: String| Tpm2Error::Connect {
        tcti: tcti.to_string(),
        message: format!("{message} (is the TPM or swtpm running? see --tpm2-device)"),
    };
    let conf = TctiNameConf::from_str(tcti).map_err(|e| conn(e.to_string()))?;
    Context::new(conf).map_err(|e| conn(e.to_string()))
}

/// Primary key algorithm of the storage primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrimaryAlg {
    /// ECC NIST P-256.
    Ecc,
    /// RSA 2048.
    Rsa,
}

impl PrimaryAlg {
    /// Name in the token (`tpm2-primary-alg`).
    pub fn name(self) -> &'static str {
        match self {
            PrimaryAlg::Ecc => "ecc",
            PrimaryAlg::Rsa => "rsa",
        }
    }
}

fn primary_template(alg: PrimaryAlg) -> Result<Public, Tpm2Error> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_decrypt(true)
        .with_restricted(true)
        .build()
        .map_err(tpm("building the primary template"))?;
    let b = PublicBuilder::new()
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs);
    let b = match alg {
        PrimaryAlg::Ecc => b
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_restricted_decryption_key(
                    SymmetricDefinitionObject::AES_128_CFB,
                    EccCurve::NistP256,
                )
                .build()
                .map_err(tpm("building the primary template"))?,
            )
            .with_ecc_unique_identifier(EccPoint::default()),
        PrimaryAlg::Rsa => b
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new_restricted_decryption_key(
                    SymmetricDefinitionObject::AES_128_CFB,
                    RsaKeyBits::Rsa2048,
                    RsaExponent::default(),
                )
                .build()
                .map_err(tpm("building the primary template"))?,
            )
            .with_rsa_unique_identifier(PublicKeyRsa::default()),
    };
    b.build().map_err(tpm("building the primary template"))
}

/// The storage primary, re-derived from the template: ECC first unless the
/// token names one, falling back to RSA as systemd does.
fn primary(
    ctx: &mut Context,
    want: Option<PrimaryAlg>,
) -> Result<(KeyHandle, PrimaryAlg), Tpm2Error> {
    let order: &[PrimaryAlg] = match want {
        Some(PrimaryAlg::Ecc) => &[PrimaryAlg::Ecc],
        Some(PrimaryAlg::Rsa) => &[PrimaryAlg::Rsa],
        None => &[PrimaryAlg::Ecc, PrimaryAlg::Rsa],
    };
    let mut last = None;
    for &alg in order {
        let t = primary_template(alg)?;
        match ctx.execute_with_nullauth_session(|c| {
            c.create_primary(Hierarchy::Owner, t, None, None, None, None)
        }) {
            Ok(r) => return Ok((r.key_handle, alg)),
            Err(e) => last = Some(e),
        }
    }
    Err(tpm("creating the storage primary key")(
        last.expect("at least one algorithm tried"),
    ))
}

/// A salted HMAC session with parameter encryption both ways, so the
/// secret and the PIN never cross the bus in clear.
fn encryption_session(ctx: &mut Context, primary: KeyHandle) -> Result<AuthSession, Tpm2Error> {
    let s = ctx
        .start_auth_session(
            Some(primary),
            None,
            None,
            SessionType::Hmac,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(tpm("starting the encryption session"))?
        .ok_or_else(|| Tpm2Error::Tpm {
            op: "starting the encryption session",
            message: "no session returned".into(),
        })?;
    let (attrs, mask) = SessionAttributesBuilder::new()
        .with_decrypt(true)
        .with_encrypt(true)
        .with_continue_session(true)
        .build();
    ctx.tr_sess_set_attributes(s, attrs, mask)
        .map_err(tpm("configuring the encryption session"))?;
    Ok(s)
}

fn selection(mask: u32, bank: HashingAlgorithm) -> Result<PcrSelectionList, Tpm2Error> {
    let slots = pcr_list(mask)
        .into_iter()
        .map(|i| PcrSlot::try_from(1u32 << i).map_err(tpm("selecting PCRs")))
        .collect::<Result<Vec<_>, _>>()?;
    // Three octets, as PC-client TPMs and systemd use: the size is part of
    // the policy digest.
    PcrSelectionListBuilder::new()
        .with_size_of_select(PcrSelectSize::ThreeOctets)
        .with_selection(bank, &slots)
        .build()
        .map_err(tpm("selecting PCRs"))
}

/// A policy session holding PolicyPCR (+ PolicyAuthValue), and its digest.
fn policy_session(
    ctx: &mut Context,
    primary: KeyHandle,
    mask: u32,
    bank: HashingAlgorithm,
    pin: bool,
) -> Result<(PolicySession, Digest), Tpm2Error> {
    let s = ctx
        .start_auth_session(
            Some(primary),
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(tpm("starting the policy session"))?
        .ok_or_else(|| Tpm2Error::Tpm {
            op: "starting the policy session",
            message: "no session returned".into(),
        })?;
    let ps = PolicySession::try_from(s).map_err(tpm("starting the policy session"))?;
    let sel = selection(mask, bank)?;
    ctx.execute_without_session(|c| c.policy_pcr(ps, Digest::default(), sel))
        .map_err(tpm("PolicyPCR"))?;
    if pin {
        ctx.execute_without_session(|c| c.policy_auth_value(ps))
            .map_err(tpm("PolicyAuthValue"))?;
    }
    let d = ctx
        .execute_without_session(|c| c.policy_get_digest(ps))
        .map_err(tpm("PolicyGetDigest"))?;
    Ok((ps, d))
}

/// systemd's PIN authValue: SHA-256 of the PIN bytes (tokens without
/// `tpm2_salt`).
fn pin_auth(pin: &SecretBytes) -> Result<Auth, Tpm2Error> {
    let d: [u8; 32] = Sha256::digest(pin.expose_secret()).into();
    let mut v = d.to_vec();
    let a = Auth::try_from(v.clone()).map_err(tpm("setting the PIN"));
    zeroize::Zeroize::zeroize(&mut v);
    a
}

fn sealed_template(policy: Digest) -> Result<Public, Tpm2Error> {
    // No userWithAuth: the policy is the only way to use the object.
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .build()
        .map_err(tpm("building the sealed-object template"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_auth_policy(policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(tpm("building the sealed-object template"))
}

/// What sealing produced: the token fields and the secret itself.
pub struct Sealed {
    /// TPM2B_PRIVATE ‖ TPM2B_PUBLIC, as systemd marshals them.
    pub blob: Vec<u8>,
    /// The policy digest the object is bound to.
    pub policy_hash: Vec<u8>,
    /// Primary key algorithm used.
    pub primary_alg: PrimaryAlg,
    /// The sealed secret.
    pub secret: SecretBytes,
}

/// Drops every transient handle we created, also on error paths.
struct Flush<'a> {
    ctx: &'a mut Context,
    handles: Vec<ObjectHandle>,
}

impl Drop for Flush<'_> {
    fn drop(&mut self) {
        for h in self.handles.drain(..) {
            let _ = self.ctx.flush_context(h);
        }
    }
}

/// Seals a fresh random secret to the TPM at `tcti` under PCRs `mask` of
/// `bank`, with a PIN if given.
pub fn seal(
    tcti: &str,
    mask: u32,
    bank: &str,
    pin: Option<&SecretBytes>,
) -> Result<Sealed, Tpm2Error> {
    let bank_alg = bank_alg(bank)?;
    let mut ctx = context(tcti)?;
    let (prim, alg) = primary(&mut ctx, None)?;
    let mut f = Flush {
        ctx: &mut ctx,
        handles: vec![prim.into()],
    };
    let hmac = encryption_session(f.ctx, prim)?;
    f.handles.push(hmac_handle(hmac));
    let (ps, digest) = policy_session(f.ctx, prim, mask, bank_alg, pin.is_some())?;
    f.handles.push(policy_handle(ps));
    let secret = SecretBytes::random(SECRET_LEN).map_err(|e| Tpm2Error::Tpm {
        op: "generating the secret",
        message: e.to_string(),
    })?;
    let data = SensitiveData::try_from(secret.expose_secret().to_vec())
        .map_err(tpm("preparing the secret"))?;
    let auth = pin.map(pin_auth).transpose()?;
    let template = sealed_template(digest.clone())?;
    let created = f
        .ctx
        .execute_with_session(Some(hmac), |c| {
            c.create(prim, template, auth, Some(data), None, None)
        })
        .map_err(tpm("creating the sealed object"))?;
    let public = created
        .out_public
        .marshall()
        .map_err(tpm("marshalling the public area"))?;
    let private = created.out_private.value();
    let mut blob = Vec::with_capacity(4 + private.len() + public.len());
    blob.extend_from_slice(&(private.len() as u16).to_be_bytes());
    blob.extend_from_slice(private);
    blob.extend_from_slice(&(public.len() as u16).to_be_bytes());
    blob.extend_from_slice(&public);
    drop(f);
    Ok(Sealed {
        blob,
        policy_hash: digest.value().to_vec(),
        primary_alg: alg,
        secret,
    })
}

fn hmac_handle(s: AuthSession) -> ObjectHandle {
    tss_esapi::handles::SessionHandle::from(s).into()
}

fn policy_handle(s: PolicySession) -> ObjectHandle {
    hmac_handle(AuthSession::from(s))
}

/// Splits a systemd `tpm2-blob` into its private and public parts.
pub fn split_blob(blob: &[u8]) -> Result<(Private, Public), Tpm2Error> {
    let bad = |what: &str| Tpm2Error::Token(format!("tpm2-blob: {what}"));
    let take = |b: &[u8]| -> Option<(Vec<u8>, usize)> {
        let n = u16::from_be_bytes(b.get(..2)?.try_into().ok()?) as usize;
        Some((b.get(2..2 + n)?.to_vec(), 2 + n))
    };
    let (private, n) = take(blob).ok_or_else(|| bad("truncated private part"))?;
    let (public, m) = take(&blob[n..]).ok_or_else(|| bad("truncated public part"))?;
    if n + m != blob.len() {
        return Err(bad("trailing bytes"));
    }
    let private = Private::try_from(private).map_err(|e| bad(&e.to_string()))?;
    let public = Public::unmarshall(&public).map_err(|e| bad(&e.to_string()))?;
    Ok((private, public))
}

/// What unsealing needs from a token.
pub struct UnsealParams<'a> {
    /// TCTI string.
    pub tcti: &'a str,
    /// `tpm2-blob`, decoded.
    pub blob: &'a [u8],
    /// `tpm2-pcrs` as a mask.
    pub mask: u32,
    /// `tpm2-pcr-bank` (systemd's default: sha256).
    pub bank: &'a str,
    /// `tpm2-primary-alg`, if recorded.
    pub primary_alg: Option<PrimaryAlg>,
    /// `tpm2-policy-hash`, decoded (empty: unknown).
    pub policy_hash: &'a [u8],
    /// The PIN, for `tpm2-pin: true` tokens.
    pub pin: Option<&'a SecretBytes>,
}

/// Unseals a token's secret, checking the current policy digest against
/// the recorded one first so that a PCR change gives a clear error.
pub fn unseal(p: &UnsealParams) -> Result<SecretBytes, Tpm2Error> {
    let bank_alg = bank_alg(p.bank)?;
    let (private, public) = split_blob(p.blob)?;
    let mut ctx = context(p.tcti)?;
    let (prim, _) = primary(&mut ctx, p.primary_alg)?;
    let mut f = Flush {
        ctx: &mut ctx,
        handles: vec![prim.into()],
    };
    let hmac = encryption_session(f.ctx, prim)?;
    f.handles.push(hmac_handle(hmac));
    let (ps, digest) = policy_session(f.ctx, prim, p.mask, bank_alg, p.pin.is_some())?;
    f.handles.push(policy_handle(ps));
    let mismatch = || Tpm2Error::PolicyMismatch {
        pcrs: pcr_list(p.mask)
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("+"),
        bank: p.bank.to_string(),
    };
    if !p.policy_hash.is_empty() && digest.value() != p.policy_hash {
        return Err(mismatch());
    }
    let obj = f
        .ctx
        .execute_with_session(Some(hmac), |c| c.load(prim, private, public))
        .map_err(tpm("loading the sealed object"))?;
    f.handles.push(obj.into());
    if let Some(pin) = p.pin {
        let a = pin_auth(pin)?;
        f.ctx
            .tr_set_auth(obj.into(), a)
            .map_err(tpm("setting the PIN"))?;
    }
    let data = f
        .ctx
        .execute_with_sessions((Some(ps.into()), Some(hmac), None), |c| {
            c.unseal(obj.into())
        })
        .map_err(|e| match e {
            tss_esapi::Error::Tss2Error(rc)
                if rc.kind() == Some(Tss2ResponseCodeKind::PolicyFail) =>
            {
                mismatch()
            }
            other => tpm("unsealing")(other),
        })?;
    Ok(SecretBytes::copy_from(data.value()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_lists_parse_like_systemd() {
        assert_eq!(parse_pcrs("7").unwrap(), 1 << 7);
        assert_eq!(parse_pcrs("0+7,11").unwrap(), 1 | 1 << 7 | 1 << 11);
        assert_eq!(parse_pcrs("").unwrap(), 0);
        assert!(parse_pcrs("24").is_err());
        assert!(parse_pcrs("seven").is_err());
        assert_eq!(pcr_list(1 << 7 | 1 << 11), vec![7, 11]);
    }

    #[test]
    fn tcti_forms() {
        assert_eq!(tcti_for(Some("swtpm:port=1")).unwrap(), "swtpm:port=1");
        assert_eq!(tcti_for(Some("/dev/tpmrm0")).unwrap(), "device:/dev/tpmrm0");
    }

    #[test]
    fn bad_blobs_are_token_errors() {
        assert!(matches!(split_blob(&[0, 5, 1]), Err(Tpm2Error::Token(_))));
        assert!(matches!(
            split_blob(&[0, 0, 0, 0, 9]),
            Err(Tpm2Error::Token(_))
        ));
    }
}
