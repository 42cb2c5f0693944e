//! What every action family shares: the device and header, option groups
//! turned into library options, the prompter, PIN and key files.

use std::path::Path;

use wrapcrypt_ops::ProviderChoice;
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_volume::{PbkdfOptions, Volume};

use crate::cli::opts::{Global, KeyFileOpts, NewKeyOpts, PbkdfOpts, ProviderOpts};
use crate::cli::Dev;
use crate::exit::CliError;
use crate::prompt::{self, CliPrompter, KeySource};

/// The device and its detached header.
pub fn paths(d: &Dev) -> (&Path, Option<&Path>) {
    (
        Path::new(&d.device),
        d.header.header.as_deref().map(Path::new),
    )
}

/// Opens the volume for reading (shared lock) or writing (exclusive).
pub fn load(d: &Dev, writable: bool) -> Result<Volume, CliError> {
    let (dev, hdr) = paths(d);
    Ok(Volume::open(dev, hdr, writable)?)
}

/// The `--pbkdf*`, `--iter-time` and `--hash` options.
pub fn pbkdf(o: &PbkdfOpts) -> PbkdfOptions {
    PbkdfOptions {
        kind: o.pbkdf.clone(),
        hash: o.hash.clone(),
        iter_time_ms: o.iter_time,
        memory_kib: o.pbkdf_memory,
        parallel: o.pbkdf_parallel,
        force_iterations: o.pbkdf_force_iterations,
    }
}

/// The PBKDF options if the user chose any (else the workflow's default).
pub fn pbkdf_chosen(o: &PbkdfOpts) -> Option<PbkdfOptions> {
    let p = pbkdf(o);
    let any = p.kind.is_some() || p.iter_time_ms.is_some() || p.force_iterations.is_some();
    any.then_some(p)
}

/// An existing passphrase's key file: `--key-file`, else a positional one.
pub fn key_source(k: &KeyFileOpts, positional: Option<&str>) -> Option<KeySource> {
    let path = k.key_file.as_deref().or(positional)?;
    Some(KeySource {
        path: path.to_string(),
        offset: k.keyfile_offset.unwrap_or(0),
        size: k.keyfile_size,
    })
}

/// A new passphrase's key file: `--new-keyfile`, else a positional one.
pub fn new_key_source(n: &NewKeyOpts, positional: Option<&str>) -> Option<KeySource> {
    let path = n.new_keyfile.as_deref().or(positional)?;
    Some(KeySource {
        path: path.to_string(),
        offset: n.new_keyfile_offset.unwrap_or(0),
        size: n.new_keyfile_size,
    })
}

/// The prompter for an action.
pub fn prompter(g: &Global, key: Option<KeySource>, new: Option<KeySource>) -> CliPrompter {
    let ask = (g.ask_password || prompt::ask_password_wanted()).then_some(prompt::AskPassword {
        timeout: g.timeout.unwrap_or(0),
    });
    CliPrompter {
        batch: g.batch_mode,
        key_file: key,
        new_key_file: new,
        ask,
    }
}

/// A whole file (a volume key or wrapped-key blob) into locked memory.
pub fn read_file(path: &str) -> Result<SecretBytes, CliError> {
    prompt::read_keyfile(path, 0, None)
}

/// The PIN from `--pin-file`, trailing newline dropped; never from argv or
/// the environment.
pub fn read_pin(path: Option<&str>) -> Result<Option<SecretBytes>, CliError> {
    let Some(f) = path else {
        return Ok(None);
    };
    let mut p = read_file(f)?;
    let n = p
        .expose_secret()
        .iter()
        .rposition(|&c| c != b'\n' && c != b'\r')
        .map_or(0, |i| i + 1);
    p.truncate(n);
    Ok(Some(p))
}

/// `--key-provider` and the PIN read from `--pin-file`.
pub fn provider_choice<'a>(
    o: &'a ProviderOpts,
    pin: &'a Option<SecretBytes>,
) -> ProviderChoice<'a> {
    ProviderChoice {
        key_provider: o.key_provider.as_deref(),
        pin: pin.as_ref(),
    }
}
