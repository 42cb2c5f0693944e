//! Wrapped-key volumes (`waes-xts-plain64`; IBM `paes-xts-plain64`): the
//! LUKS2 volume key is the wrapped-key blob; the effective key exists only
//! inside the provider.

use std::sync::Arc;

use wrapcrypt_format::luks2::Luks2Header;
use wrapcrypt_provider::{KeyProvider, KeySpec, Wkb};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::SectorCipher;
use wrapcrypt_volume::format::FormatParams;
use wrapcrypt_volume::ExitClass;

use crate::error::OpsError;
use crate::providers;

/// Whether a segment cipher is wrapcrypt's wrapped AES.
pub fn is_waes(cipher: &str) -> bool {
    cipher.starts_with("waes-")
}

/// A key a provider just made (generate/import) for a volume that is not
/// written yet. Dropped without [`MadeKey::keep`], it is discarded from the
/// provider again (token-held PKCS#11 keys leave no objects behind).
pub struct MadeKey(Option<(Arc<dyn KeyProvider>, Wkb)>);

impl MadeKey {
    /// Tracks `wkb`, just made by `prov`.
    pub fn new(prov: &Arc<dyn KeyProvider>, wkb: &Wkb) -> Self {
        MadeKey(Some((prov.clone(), wkb.try_clone())))
    }

    /// The volume is being written with this key: it stays.
    pub fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for MadeKey {
    fn drop(&mut self) {
        if let Some((prov, wkb)) = self.0.take() {
            if let Err(e) = prov.discard(&wkb) {
                eprintln!("Could not remove the unused new key from the provider: {e}");
            }
        }
    }
}

/// A volume key for luksFormat, and the provider key made for it, if any.
pub struct FormatKey {
    /// The LUKS2 volume key: the blob (or an IBM secure key).
    pub key: SecretBytes,
    made: Option<MadeKey>,
}

impl FormatKey {
    /// Nothing can stop the format any more: the key stays in its provider.
    pub fn keep(mut self) -> SecretBytes {
        if let Some(m) = self.made.take() {
            m.keep();
        }
        std::mem::replace(&mut self.key, SecretBytes::copy_from(&[]))
    }
}

/// `--key-provider` and the PIN read from `--pin-file`.
#[derive(Clone, Copy, Default)]
pub struct ProviderChoice<'a> {
    /// `custodian` (the default) or a `pkcs11:` URI.
    pub key_provider: Option<&'a str>,
    /// The PKCS#11 user PIN.
    pub pin: Option<&'a SecretBytes>,
}

/// A `--volume-key-file` the caller read: its name (for messages) and bytes.
#[derive(Clone, Copy)]
pub struct KeyFile<'a> {
    /// The path as given.
    pub path: &'a str,
    /// Its contents.
    pub bytes: &'a SecretBytes,
}

/// Produces the volume key (the blob) for luksFormat of a wrapped volume
/// and sets key size and tokens in `params`: a key generated in the
/// provider, or the blob (waes) or IBM secure key (paes) in `key_file`.
pub fn format_key(
    cipher: &str,
    choice: ProviderChoice,
    key_file: Option<KeyFile>,
    key_bits: Option<usize>,
    params: &mut FormatParams,
) -> Result<FormatKey, OpsError> {
    if !is_waes(cipher) {
        // paes: an IBM secure key file made by zkey / CCA tools. wrapcrypt
        // stores it and manages the header; only a kernel with paes can use it.
        let k = key_file.ok_or_else(|| {
            OpsError::usage(format!(
                "Cipher {cipher} needs --volume-key-file with a secure key."
            ))
        })?;
        let k = SecretBytes::copy_from(k.bytes.expose_secret());
        if k.is_empty() {
            return Err(OpsError::usage("Secure key file is empty."));
        }
        params.key_size = k.len();
        return Ok(FormatKey { key: k, made: None });
    }
    if cipher != "waes-xts-plain64" {
        return Err(OpsError::usage(format!(
            "Cipher {cipher} is not supported; use waes-xts-plain64."
        )));
    }
    let (prov, name, locator) = providers::from_option(choice.key_provider, choice.pin)?;
    let mut made = None;
    let wkb = match key_file {
        Some(KeyFile { path, bytes }) => {
            let w = Wkb::parse(bytes.expose_secret())
                .map_err(|e| OpsError::usage(format!("{path} is not a wrapped-key blob: {e}")))?;
            if w.provider() != prov.name() {
                return Err(OpsError::usage(format!(
                    "Wrapped key in {path} belongs to provider {}, not {}.",
                    w.provider(),
                    prov.name()
                )));
            }
            w
        }
        None => {
            let w = prov.generate(&KeySpec::aes_256_xts())?;
            made = Some(MadeKey::new(&prov, &w));
            w
        }
    };
    // From here on, an error drops `fk` and with it the generated key.
    let mut fk = FormatKey {
        key: SecretBytes::copy_from(&[]),
        made,
    };
    let vp = prov.verification_pattern(&wkb)?;
    let blob = wkb.encode();
    if let Some(bits) = key_bits {
        if bits != 512 && bits != blob.len() * 8 {
            return Err(OpsError::usage(format!(
                "Key size {bits} does not apply: waes-xts-plain64 uses AES-256-XTS (512 bits) inside the provider; the stored key is its {}-bit wrapped blob.",
                blob.len() * 8
            )));
        }
    }
    params.key_size = blob.len();
    params.tokens = providers::tokens(&name, locator.as_deref(), &vp)?;
    providers::note_wrapping_key(&mut params.tokens, &wkb);
    fk.key = SecretBytes::copy_from(&blob);
    Ok(fk)
}

/// The provider of a wrapped volume, checked against the stored
/// verification pattern.
pub struct Opened {
    /// The provider.
    pub provider: Arc<dyn KeyProvider>,
    /// Provider name and locator for the server process.
    pub name: String,
    /// PKCS#11 URI, if any.
    pub locator: Option<String>,
    /// The PKCS#11 PIN read from --pin-file, for the server process.
    pub pin: Option<SecretBytes>,
}

/// Resolves the provider for an unlocked blob and proves it holds the key
/// the volume was made with (equal verification patterns).
pub fn resolve(
    h: &Luks2Header,
    blob: &SecretBytes,
    choice: ProviderChoice,
) -> Result<Opened, OpsError> {
    let wkb = Wkb::parse(blob.expose_secret())
        .map_err(|e| OpsError::usage(format!("Stored wrapped key is invalid: {e}")))?;
    let (name, locator) = providers::recorded_or(h, wkb.provider(), choice.key_provider);
    let pin = match name.as_str() {
        "pkcs11" => choice
            .pin
            .map(|p| SecretBytes::copy_from(p.expose_secret())),
        _ => None,
    };
    let prov = providers::by_name(&name, locator.as_deref(), pin.as_ref())?;
    if wkb.provider() != prov.name() {
        return Err(OpsError::usage(format!(
            "Wrapped key belongs to provider {}, but the volume names {name}.",
            wkb.provider()
        )));
    }
    if let Some(stored) = providers::stored_vp(h) {
        let vp = prov.verification_pattern(&wkb)?;
        if !vp.eq_ignore_ascii_case(&stored) {
            return Err(OpsError::refused(
                ExitClass::Permission,
                "Verification pattern mismatch: the provider's key is not the key this volume was made with.",
            ));
        }
    }
    Ok(Opened {
        provider: prov,
        name,
        locator,
        pin,
    })
}

/// In the server process: a sector cipher over the provider session.
pub fn server_cipher(
    name: &str,
    locator: Option<&str>,
    pin: Option<&SecretBytes>,
    blob: &[u8],
    sector: usize,
) -> Result<Arc<dyn SectorCipher>, OpsError> {
    let wkb = Wkb::parse(blob).map_err(|e| OpsError::usage(format!("wrapped key: {e}")))?;
    let prov = providers::by_name(name, locator, pin)?;
    Ok(prov.open_cipher(&wkb, sector)?)
}

/// What luksDump shows of a wrapped volume's key.
pub struct WrappedDump {
    /// Provider name (`custodian`, `pkcs11`, …), or IBM's for `paes`.
    pub provider: Option<String>,
    /// Provider locator (URI) recorded in the header.
    pub uri: Option<String>,
    /// Where the provider keeps keys, or why that is not known.
    pub protection: Result<String, String>,
    /// The verification pattern of the effective key stored in the header.
    pub vp: Option<String>,
}

/// The wrapped-key facts of a header (None: not a wrapped cipher).
/// `describe` turns a provider failure into the text shown.
pub fn dump_info(h: &Luks2Header, describe: impl Fn(&OpsError) -> String) -> Option<WrappedDump> {
    let seg = h.meta.crypt_segment_id().map(|s| &h.meta.segments[&s])?;
    let cipher = seg.encryption.as_deref()?;
    if !is_waes(cipher) && !cipher.starts_with("paes-") {
        return None;
    }
    let (provider, uri, protection) = if let Some((name, loc)) = providers::recorded(h) {
        // luksDump takes no PIN: a token that needs a login (or a provider
        // that is down) cannot say where it keeps keys.
        let prot = providers::by_name(&name, loc.as_deref(), None)
            .map(|p| p.protection().to_string())
            .map_err(|e| (describe)(&e));
        (Some(name), loc, prot)
    } else if cipher.starts_with("paes-") {
        (
            Some("IBM CCA/EP11 secure key (kernel paes)".to_string()),
            None,
            Ok("hardware".to_string()),
        )
    } else {
        (None, None, Err("no provider recorded".to_string()))
    };
    Some(WrappedDump {
        provider,
        uri,
        protection,
        vp: providers::stored_vp(h),
    })
}

/// Extra luksDump lines for wrapped volumes (after cryptsetup's layout).
/// `describe` turns a provider failure into the line the caller prints.
pub fn dump_lines(h: &Luks2Header, describe: impl Fn(&OpsError) -> String) -> Option<String> {
    let d = dump_info(h, describe)?;
    let mut out = String::from("Wrapped key:\n");
    if let Some(name) = &d.provider {
        out.push_str(&format!("\tProvider:   {name}\n"));
        if let Some(l) = &d.uri {
            out.push_str(&format!("\tURI:        {l}\n"));
        }
        match &d.protection {
            Ok(p) => out.push_str(&format!("\tProtection: {p}\n")),
            Err(e) => out.push_str(&format!("\tProtection: not known ({e})\n")),
        }
    }
    if let Some(vp) = &d.vp {
        out.push_str(&format!("\tVerification pattern: {vp}\n"));
    }
    Some(out)
}
