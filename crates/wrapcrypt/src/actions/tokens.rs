//! `token add|remove|import|export` and `enroll`: the command-line side of
//! `wrapcrypt_ops::tokens` and `wrapcrypt_unlock::enroll`.

use std::io::Read;

use wrapcrypt_ops::tokens::{self, Placement};
use wrapcrypt_unlock::enroll::{self, EnrollMethod, EnrollOptions};
use wrapcrypt_unlock::tpm2;
use wrapcrypt_volume::Volume;

use super::common::{key_source, load, paths, pbkdf, prompter, read_pin};
use crate::cli::opts::Global;
use crate::cli::{EnrollArgs, TokenArgs};
use crate::exit::CliError;

/// token add|remove|import|export DEVICE
pub fn token(a: &TokenArgs) -> Result<(), CliError> {
    let (dev, hdr) = paths(&a.dev);
    match a.sub.as_str() {
        "export" => {
            let v = Volume::open(dev, hdr, false)?;
            print!("{}", tokens::export(&v, a.id.token_id)?);
            Ok(())
        }
        "remove" => {
            if a.id.token_id.is_none() {
                return Err(CliError::usage(
                    "Option --token-id is required for this action.",
                ));
            }
            let mut v = Volume::open(dev, hdr, true)?;
            let id = tokens::remove(&mut v, a.id.token_id)?;
            if crate::msg::verbose() {
                println!("Token {id} removed.");
            }
            Ok(())
        }
        sub @ ("import" | "add") => {
            let mut v = Volume::open(dev, hdr, true)?;
            let value = if sub == "import" {
                let mut text = String::new();
                match a.json_file.as_deref() {
                    Some(f) if f != "-" => {
                        std::fs::File::open(f)?.read_to_string(&mut text)?;
                    }
                    _ => {
                        std::io::stdin().read_to_string(&mut text)?;
                    }
                }
                tokens::parse_json(&text)?
            } else {
                tokens::keyring_token(a.key_description.as_deref())?
            };
            let at = Placement {
                id: a.id.token_id,
                replace: a.token_replace,
                key_slot: a.slot.key_slot,
            };
            let id = tokens::import(&mut v, value, at)?;
            if crate::msg::verbose() {
                println!("Token {id} created.");
            }
            Ok(())
        }
        other => Err(CliError::usage(format!("Unknown token action {other}."))),
    }
}

/// enroll DEVICE (--tpm2-device D [--tpm2-pcrs L] [--tpm2-with-pin] | --pkcs11-token-uri U)
pub fn enroll(g: &Global, a: &EnrollArgs) -> Result<(), CliError> {
    let dev = a.on.dev.device.as_str();
    let (tpm2_dev, p11) = (a.tpm2.tpm2_device.as_deref(), a.pkcs11_token_uri.as_deref());
    if tpm2_dev.is_some() == p11.is_some() {
        return Err(CliError::usage(
            "Command enroll needs exactly one of --tpm2-device or --pkcs11-token-uri.",
        ));
    }
    if a.tpm2_with_pin && tpm2_dev.is_none() {
        return Err(CliError::usage(
            "Option --tpm2-with-pin needs --tpm2-device.",
        ));
    }
    let mut vol = load(&a.on.dev, true)?;
    let mut pr = prompter(g, key_source(&a.on.key, None), None);
    let pin = read_pin(a.pin.pin_file.as_deref())?;
    let method = match (tpm2_dev, p11) {
        (Some(device), _) => {
            let pcr_mask = tpm2::parse_pcrs(a.tpm2_pcrs.as_deref().unwrap_or(""))
                .map_err(|e| CliError::usage(format!("Invalid --tpm2-pcrs: {e}.")))?;
            EnrollMethod::Tpm2 {
                device,
                pcr_mask,
                with_pin: a.tpm2_with_pin,
                pin,
            }
        }
        (_, Some(uri)) => {
            if !uri.starts_with("pkcs11:") {
                return Err(CliError::usage("--pkcs11-token-uri must be a pkcs11: URI."));
            }
            EnrollMethod::Pkcs11 { uri, pin }
        }
        _ => unreachable!("checked above"),
    };
    let opts = EnrollOptions {
        method,
        key_slot: a.on.slot.key_slot,
        token_id: a.id.token_id,
        pbkdf: pbkdf(&a.pbkdf),
    };
    let done = enroll::enroll(&mut vol, opts, dev, &mut pr)?;
    println!(
        "New {} token {} enrolled as key slot {}.",
        done.what, done.token_id, done.keyslot
    );
    Ok(())
}
