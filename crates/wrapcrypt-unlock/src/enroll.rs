//! `wrapcrypt enroll DEVICE`: adds a keyslot whose passphrase only a TPM
//! (`--tpm2-device`) or a PKCS#11 token (`--pkcs11-token-uri`) can
//! release, and the `systemd-tpm2` / `systemd-pkcs11` token that says how
//! (docs/unlock-tokens.md). Like systemd-cryptenroll: the passphrase is the
//! base64 of a random secret, the keyslot uses minimal PBKDF2 (the secret
//! has 256 bits or more of entropy), and an existing passphrase authorises
//! the change.

use wrapcrypt_format::luks2::{Token, TOKENS_MAX};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_volume::PbkdfOptions;

use crate::args::Args;
use crate::exit::CliError;
use crate::pkcs11_token::{self, KeyAlgorithm};
use crate::tpm2_token;
use crate::unlock_tokens::{self, HwToken, Pkcs11Token, TokenError, Tpm2Token};
use crate::{b64, keys, pass};

fn token_err(e: impl Into<TokenError>) -> CliError {
    let e = e.into();
    CliError::new(e.exit_code(), format!("Enrollment failed: {e}."))
}

/// The PBKDF of a token keyslot: the user's `--pbkdf*` options if any, else
/// systemd's minimal PBKDF2-SHA512 with 1000 iterations.
fn token_pbkdf(a: &Args) -> Result<PbkdfOptions, CliError> {
    let user = keys::pbkdf_opts(a)?;
    if user.kind.is_some() || user.iter_time_ms.is_some() || user.force_iterations.is_some() {
        return Ok(user);
    }
    Ok(PbkdfOptions {
        kind: Some("pbkdf2".into()),
        hash: Some(user.hash.unwrap_or_else(|| "sha512".into())),
        force_iterations: Some(1000),
        ..Default::default()
    })
}

/// enroll DEVICE (--tpm2-device D [--tpm2-pcrs L] [--tpm2-with-pin] | --pkcs11-token-uri U)
pub fn run(a: &Args) -> Result<(), CliError> {
    let dev = a.pos(0, "<device>")?.to_string();
    let tpm2 = a.get("tpm2-device");
    let p11 = a.get("pkcs11-token-uri");
    if tpm2.is_some() == p11.is_some() {
        return Err(CliError::usage(
            "Command enroll needs exactly one of --tpm2-device or --pkcs11-token-uri.",
        ));
    }
    if a.flag("tpm2-with-pin") && tpm2.is_none() {
        return Err(CliError::usage(
            "Option --tpm2-with-pin needs --tpm2-device.",
        ));
    }
    let mut vol = keys::load(a, true)?;
    vol.check_requirements()?;
    let slot = keys::key_slot(a)?;
    if let Some(s) = slot {
        if vol.luks2_header()?.meta.keyslots.contains_key(&s) {
            return Err(CliError::usage(format!(
                "Key slot {s} is full, please select another one."
            )));
        }
    }
    let token_id: Option<u32> = a.num("token-id")?;
    let h = vol.luks2_header()?;
    let token_id = match token_id {
        Some(id) if id >= TOKENS_MAX => {
            return Err(CliError::usage(format!("Token {id} is invalid.")))
        }
        Some(id) if h.meta.tokens.contains_key(&id) => {
            return Err(CliError::usage(format!("Token {id} in use.")))
        }
        Some(id) => id,
        None => (0..TOKENS_MAX)
            .find(|i| !h.meta.tokens.contains_key(i))
            .ok_or_else(|| CliError::usage("No free token slot."))?,
    };
    let existing = keys::existing_passphrase(
        a,
        &format!("Please enter current passphrase for disk {dev}: "),
        None,
    )?;
    let u = vol.unlock(existing.expose_secret(), None, true)?;
    drop(existing);

    let (token, secret) = match (tpm2, p11) {
        (Some(device), _) => enroll_tpm2(a, device)?,
        (_, Some(uri)) => enroll_pkcs11(a, uri)?,
        _ => unreachable!("checked above"),
    };
    let passphrase = b64::encode_secret(&secret);
    drop(secret);
    let new_slot = vol.add_keyslot(
        &u.key,
        passphrase.expose_secret(),
        slot,
        &token_pbkdf(a)?,
        false,
    )?;
    drop(passphrase);
    let mut h = vol.luks2_header()?.clone();
    let t = Token::from_json(token_id, &token.to_json(new_slot))
        .map_err(|e| CliError::usage(format!("internal token error: {e}")))?;
    h.meta.tokens.insert(token_id, t);
    vol.write_luks2(h)?;
    let what = match token {
        HwToken::Tpm2(_) => "TPM2",
        HwToken::Pkcs11(_) => "PKCS#11",
    };
    println!("New {what} token {token_id} enrolled as key slot {new_slot}.");
    Ok(())
}

fn enroll_tpm2(a: &Args, device: &str) -> Result<(HwToken, SecretBytes), CliError> {
    let tcti = tpm2_token::tcti_for(Some(device)).map_err(token_err)?;
    let mask = tpm2_token::parse_pcrs(a.get("tpm2-pcrs").unwrap_or(""))
        .map_err(|e| CliError::usage(format!("Invalid --tpm2-pcrs: {e}.")))?;
    let pin = if a.flag("tpm2-with-pin") {
        let p = match unlock_tokens::pin_file(a)? {
            Some(p) => p,
            None => pass::read_new("Please enter TPM2 PIN: ", true)?,
        };
        if p.is_empty() {
            return Err(CliError::usage("The TPM2 PIN must not be empty."));
        }
        Some(p)
    } else {
        None
    };
    let bank = "sha256";
    let sealed = tpm2_token::seal(&tcti, mask, bank, pin.as_ref()).map_err(token_err)?;
    let token = Tpm2Token {
        blob: sealed.blob,
        pcr_mask: mask,
        bank: bank.into(),
        primary_alg: Some(sealed.primary_alg),
        policy_hash: sealed.policy_hash,
        pin: pin.is_some(),
    };
    // Prove the TPM gives the secret back before a keyslot depends on it.
    let back = tpm2_token::unseal(&tpm2_token::UnsealParams {
        tcti: &tcti,
        blob: &token.blob,
        mask,
        bank,
        primary_alg: token.primary_alg,
        policy_hash: &token.policy_hash,
        pin: pin.as_ref(),
    })
    .map_err(token_err)?;
    if !back.ct_eq(sealed.secret.expose_secret()) {
        return Err(CliError::new(
            1,
            "Enrollment failed: TPM2 seal/unseal verification failed.",
        ));
    }
    Ok((HwToken::Tpm2(token), sealed.secret))
}

fn enroll_pkcs11(a: &Args, uri: &str) -> Result<(HwToken, SecretBytes), CliError> {
    if !uri.starts_with("pkcs11:") {
        return Err(CliError::usage("--pkcs11-token-uri must be a pkcs11: URI."));
    }
    let pin = unlock_tokens::pin_file(a)?;
    let e = pkcs11_token::enroll(uri, pin.as_ref()).map_err(token_err)?;
    let token = Pkcs11Token {
        uri: pkcs11_token::stored_uri(uri),
        key: e.encrypted,
        alg: KeyAlgorithm::Pkcs1v15,
    };
    Ok((HwToken::Pkcs11(token), e.secret))
}
