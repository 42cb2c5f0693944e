//! Enrolling a hardware token (`wrapcrypt enroll`): a keyslot whose
//! passphrase only a TPM or a PKCS#11 token can release, and the
//! `systemd-tpm2` / `systemd-pkcs11` token that says how
//! (docs/unlock-tokens.md). Like systemd-cryptenroll: the passphrase is the
//! base64 of a random secret, the keyslot uses minimal PBKDF2 (the secret
//! has 256 bits or more of entropy), and an existing passphrase authorises
//! the change.

use wrapcrypt_format::b64;
use wrapcrypt_format::luks2::{Token, TOKENS_MAX};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_volume::{ExitClass, PbkdfOptions, Volume, VolumeError};

use crate::error::TokenError;
use crate::pkcs11::{self, KeyAlgorithm};
use crate::prompt::Prompter;
use crate::systemd::{HwToken, Pkcs11Token, Tpm2Token};
use crate::tpm2;

/// Which hardware releases the new keyslot's passphrase.
pub enum EnrollMethod<'a> {
    /// A TPM 2.0 (`--tpm2-device`), sealed to PCRs, optionally with a PIN.
    Tpm2 {
        /// `--tpm2-device` (a device path or `swtpm:…` TCTI).
        device: &'a str,
        /// `--tpm2-pcrs` as a mask.
        pcr_mask: u32,
        /// `--tpm2-with-pin`: also require a PIN.
        with_pin: bool,
        /// The PIN given up front (`--pin-file`); else it is asked for.
        pin: Option<SecretBytes>,
    },
    /// A PKCS#11 token holding an RSA key pair (`--pkcs11-token-uri`).
    Pkcs11 {
        /// The token URI.
        uri: &'a str,
        /// The user PIN, if the token needs a login.
        pin: Option<SecretBytes>,
    },
}

/// What `enroll` changes besides the method.
pub struct EnrollOptions<'a> {
    /// The hardware.
    pub method: EnrollMethod<'a>,
    /// `--key-slot` for the new keyslot.
    pub key_slot: Option<u32>,
    /// `--token-id` for the new token.
    pub token_id: Option<u32>,
    /// The user's PBKDF options; without a chosen PBKDF, iteration time or
    /// count, systemd's minimal PBKDF2 (1000 iterations, `--hash` or sha512).
    pub pbkdf: PbkdfOptions,
}

/// What was enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The new token's id.
    pub token_id: u32,
    /// The new keyslot.
    pub keyslot: u32,
    /// "TPM2" or "PKCS#11".
    pub what: &'static str,
}

/// Why enrolling failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// A parameter does not fit this header.
    #[error("{0}")]
    Params(String),
    /// The hardware refused.
    #[error("Enrollment failed: {0}.")]
    Token(#[from] TokenError),
    /// The volume refused (wrong existing passphrase, I/O).
    #[error("{0}")]
    Volume(#[from] VolumeError),
}

impl EnrollError {
    /// cryptsetup's exit class.
    pub fn class(&self) -> ExitClass {
        match self {
            EnrollError::Params(_) => ExitClass::WrongParams,
            EnrollError::Token(e) => e.class(),
            EnrollError::Volume(e) => e.class(),
        }
    }
}

/// The token id to use: the one asked for if free, else the first free.
pub fn free_token_id(vol: &Volume, want: Option<u32>) -> Result<u32, EnrollError> {
    let h = vol.luks2_header()?;
    match want {
        Some(id) if id >= TOKENS_MAX => Err(EnrollError::Params(format!("Token {id} is invalid."))),
        Some(id) if h.meta.tokens.contains_key(&id) => {
            Err(EnrollError::Params(format!("Token {id} in use.")))
        }
        Some(id) => Ok(id),
        None => (0..TOKENS_MAX)
            .find(|i| !h.meta.tokens.contains_key(i))
            .ok_or_else(|| EnrollError::Params("No free token slot.".into())),
    }
}

/// Checks the options against the header before anything is asked.
pub fn check(vol: &Volume, opts: &EnrollOptions) -> Result<u32, EnrollError> {
    vol.check_requirements()?;
    if let Some(s) = opts.key_slot {
        if vol.luks2_header()?.meta.keyslots.contains_key(&s) {
            return Err(EnrollError::Params(format!(
                "Key slot {s} is full, please select another one."
            )));
        }
    }
    free_token_id(vol, opts.token_id)
}

fn token_pbkdf(user: &PbkdfOptions) -> PbkdfOptions {
    if user.kind.is_some() || user.iter_time_ms.is_some() || user.force_iterations.is_some() {
        return user.clone();
    }
    PbkdfOptions {
        kind: Some("pbkdf2".into()),
        hash: Some(user.hash.clone().unwrap_or_else(|| "sha512".into())),
        force_iterations: Some(1000),
        ..Default::default()
    }
}

/// Enrolls: asks for an existing passphrase and unlocks with it, makes the
/// secret in the hardware (asking for a new TPM2 PIN if needed), proves the
/// hardware gives it back, adds the keyslot, writes the token.
pub fn enroll(
    vol: &mut Volume,
    opts: EnrollOptions,
    device: &str,
    prompter: &mut dyn Prompter,
) -> Result<Enrolled, EnrollError> {
    let token_id = check(vol, &opts)?;
    let existing = prompter
        .passphrase(&format!(
            "Please enter current passphrase for disk {device}: "
        ))
        .map_err(TokenError::from)?;
    let u = vol.unlock(existing.expose_secret(), None, true)?;
    drop(existing);
    let (token, secret) = match opts.method {
        EnrollMethod::Tpm2 {
            device,
            pcr_mask,
            with_pin,
            pin,
        } => {
            let pin = match (with_pin, pin) {
                (false, _) => None,
                (true, Some(p)) => Some(p),
                (true, None) => Some(
                    prompter
                        .new_secret("Please enter TPM2 PIN: ")
                        .map_err(TokenError::from)?,
                ),
            };
            if pin.as_ref().is_some_and(|p| p.is_empty()) {
                return Err(EnrollError::Params(
                    "The TPM2 PIN must not be empty.".into(),
                ));
            }
            enroll_tpm2(device, pcr_mask, pin.as_ref())?
        }
        EnrollMethod::Pkcs11 { uri, pin } => enroll_pkcs11(uri, pin.as_ref())?,
    };
    let passphrase = b64::encode_secret(&secret);
    drop(secret);
    let pb = token_pbkdf(&opts.pbkdf);
    let new_slot = vol.add_keyslot(
        &u.key,
        passphrase.expose_secret(),
        opts.key_slot,
        &pb,
        false,
    )?;
    drop(passphrase);
    let mut h = vol.luks2_header()?.clone();
    let t = Token::from_json(token_id, &token.to_json(new_slot))
        .map_err(|e| EnrollError::Params(format!("internal token error: {e}")))?;
    h.meta.tokens.insert(token_id, t);
    vol.write_luks2(h)?;
    let what = match token {
        HwToken::Tpm2(_) => "TPM2",
        HwToken::Pkcs11(_) => "PKCS#11",
    };
    Ok(Enrolled {
        token_id,
        keyslot: new_slot,
        what,
    })
}

fn enroll_tpm2(
    device: &str,
    mask: u32,
    pin: Option<&SecretBytes>,
) -> Result<(HwToken, SecretBytes), TokenError> {
    let tcti = tpm2::tcti_for(Some(device))?;
    let bank = "sha256";
    let sealed = tpm2::seal(&tcti, mask, bank, pin)?;
    let token = Tpm2Token {
        blob: sealed.blob,
        pcr_mask: mask,
        bank: bank.into(),
        primary_alg: Some(sealed.primary_alg),
        policy_hash: sealed.policy_hash,
        pin: pin.is_some(),
    };
    // Prove the TPM gives the secret back before a keyslot depends on it.
    let back = tpm2::unseal(&tpm2::UnsealParams {
        tcti: &tcti,
        blob: &token.blob,
        mask,
        bank,
        primary_alg: token.primary_alg,
        policy_hash: &token.policy_hash,
        pin,
    })?;
    if !back.ct_eq(sealed.secret.expose_secret()) {
        return Err(TokenError::Json(
            "TPM2 seal/unseal verification failed".into(),
        ));
    }
    Ok((HwToken::Tpm2(token), sealed.secret))
}

fn enroll_pkcs11(
    uri: &str,
    pin: Option<&SecretBytes>,
) -> Result<(HwToken, SecretBytes), TokenError> {
    let e = pkcs11::enroll(uri, pin)?;
    let token = Pkcs11Token {
        uri: pkcs11::stored_uri(uri),
        key: e.encrypted,
        alg: KeyAlgorithm::Pkcs1v15,
    };
    Ok((HwToken::Pkcs11(token), e.secret))
}
