//! The server's start-up payload: the activation's configuration and one
//! or two cipher parts (two for a volume in mid-reencryption: the new
//! layout below the boundary, the old one from it on). It travels on a
//! pipe in locked memory, never argv or the environment.
//!
//! Layout: u32 LE length of the ServeConfig JSON, the JSON, a part count
//! (u8: 1, or 2 followed at the end by the boundary as u64 LE IV sector
//! and, for a backward run, one byte 1: the old layout below the boundary),
//! then per part: the cipher spec (u16 LE length + text), the sector size
//! (u32 LE), a kind byte (0 clear key, 1 wrapped: then u16 LE length +
//! provider name, u16 LE length + locator, u16 LE length + PIN; 2 linear,
//! no key) and the key or blob (u32 LE length + bytes).

use std::sync::Arc;

use wrapcrypt_activate::{ServeConfig, SplitCipher};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{SectorCipher, SectorError};

use super::check_cipher;
use crate::error::OpsError;
use crate::wrapped;

/// How the server builds one cipher: from a clear key (soft engine), from
/// a wrapped-key blob through its provider (the server never holds the
/// effective key), or none (the plaintext side of an encryption).
pub(crate) enum KeySource {
    Clear,
    Wrapped {
        provider: String,
        locator: String,
        /// The PKCS#11 user PIN: the server logs in itself.
        pin: Option<SecretBytes>,
    },
    Linear,
}

/// One layout the server serves.
pub(crate) struct Part<'a> {
    pub spec: &'a str,
    pub sector_size: u32,
    pub src: KeySource,
    pub key: &'a SecretBytes,
}

impl Part<'_> {
    fn len(&self) -> usize {
        let extra = match &self.src {
            KeySource::Clear | KeySource::Linear => 1,
            KeySource::Wrapped {
                provider,
                locator,
                pin,
            } => 1 + 6 + provider.len() + locator.len() + pin.as_ref().map_or(0, |p| p.len()),
        };
        2 + self.spec.len() + 4 + extra + 4 + self.key.len()
    }
}

/// Encodes the payload: `parts[0]` is the (new) layout served below
/// `boundary`, `parts[1]`, if any, the old one from it on; `backward`
/// swaps the sides (old below the boundary).
pub(crate) fn encode(
    cfg: &ServeConfig,
    parts: &[Part],
    boundary: u64,
    backward: bool,
) -> SecretBytes {
    let json = serde_json::to_vec(cfg).expect("ServeConfig serializes");
    let len =
        4 + json.len() + 1 + parts.iter().map(Part::len).sum::<usize>() + 8 + usize::from(backward);
    let mut p = SecretBytes::zeroed(len);
    let b = p.expose_secret_mut();
    let mut o = 0;
    let mut put = |x: &[u8]| {
        b[o..o + x.len()].copy_from_slice(x);
        o += x.len();
    };
    put(&(json.len() as u32).to_le_bytes());
    put(&json);
    put(&[parts.len() as u8]);
    for part in parts {
        put(&(part.spec.len() as u16).to_le_bytes());
        put(part.spec.as_bytes());
        put(&part.sector_size.to_le_bytes());
        match &part.src {
            KeySource::Clear => put(&[0]),
            KeySource::Linear => put(&[2]),
            KeySource::Wrapped {
                provider,
                locator,
                pin,
            } => {
                put(&[1]);
                put(&(provider.len() as u16).to_le_bytes());
                put(provider.as_bytes());
                put(&(locator.len() as u16).to_le_bytes());
                put(locator.as_bytes());
                let pin = pin.as_ref().map_or(&[][..], |p| p.expose_secret());
                put(&(pin.len() as u16).to_le_bytes());
                put(pin);
            }
        }
        put(&(part.key.len() as u32).to_le_bytes());
        put(part.key.expose_secret());
    }
    put(&boundary.to_le_bytes());
    if backward {
        put(&[1]);
    }
    p
}

/// What the server process builds from its payload.
pub struct ServerStart {
    /// The server's configuration.
    pub config: ServeConfig,
    /// The cipher spec (for messages).
    pub spec: String,
    /// The sector cipher, or why it could not be built.
    pub cipher: Result<Arc<dyn SectorCipher>, OpsError>,
}

/// The plaintext side of an encryption (a `linear` segment).
struct Linear(usize);

impl SectorCipher for Linear {
    fn sector_size(&self) -> usize {
        self.0
    }
    fn encrypt(&self, _: u64, _: &mut [u8]) -> Result<(), SectorError> {
        Ok(())
    }
    fn decrypt(&self, _: u64, _: &mut [u8]) -> Result<(), SectorError> {
        Ok(())
    }
}

/// A decoded payload: the configuration, each part's spec, cipher and
/// key (the key kept only for an online reencryption, which needs both
/// keys; a plain server drops them), and the boundary.
pub(crate) struct Decoded {
    pub config: ServeConfig,
    pub specs: Vec<String>,
    pub ciphers: Vec<Result<Arc<dyn SectorCipher>, OpsError>>,
    pub keys: Vec<SecretBytes>,
    /// The PKCS#11 PIN a wrapped part came with (an online reencryption's
    /// engine logs in with it to encrypt hotzones under the new key).
    pub pin: Option<SecretBytes>,
    pub boundary: u64,
    /// A backward run: the old layout below the boundary.
    pub backward: bool,
}

/// The cipher of a volume in mid-reencryption.
pub(crate) fn split(
    new: Arc<dyn SectorCipher>,
    old: Arc<dyn SectorCipher>,
    boundary: u64,
    backward: bool,
) -> Result<SplitCipher, SectorError> {
    if backward {
        SplitCipher::backward(new, old, boundary)
    } else {
        SplitCipher::new(new, old, boundary)
    }
}

pub(crate) fn decode(b: &[u8]) -> Result<Decoded, OpsError> {
    let bad = || OpsError::usage("malformed server payload");
    let mut o = 0;
    let mut take = |n: usize| -> Result<&[u8], OpsError> {
        let s = b.get(o..o + n).ok_or_else(bad)?;
        o += n;
        Ok(s)
    };
    let jl = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
    let config: ServeConfig = serde_json::from_slice(take(jl)?).map_err(|_| bad())?;
    let n = take(1)?[0];
    if !(1..=2).contains(&n) {
        return Err(bad());
    }
    let (mut ciphers, mut specs, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    let mut first_pin: Option<SecretBytes> = None;
    for _ in 0..n {
        let u16_at = |t: &[u8]| u16::from_le_bytes(t.try_into().expect("2")) as usize;
        let sl = u16_at(take(2)?);
        let spec = String::from_utf8(take(sl)?.to_vec()).map_err(|_| bad())?;
        let sector = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        let kind = take(1)?[0];
        let mut wrapped_src = None;
        if kind == 1 {
            let pl = u16_at(take(2)?);
            let prov = String::from_utf8(take(pl)?.to_vec()).map_err(|_| bad())?;
            let ll = u16_at(take(2)?);
            let loc = String::from_utf8(take(ll)?.to_vec()).map_err(|_| bad())?;
            let nl = u16_at(take(2)?);
            let pin = take(nl)?;
            let pin = (!pin.is_empty()).then(|| SecretBytes::copy_from(pin));
            if first_pin.is_none() {
                first_pin = pin
                    .as_ref()
                    .map(|p| SecretBytes::copy_from(p.expose_secret()));
            }
            wrapped_src = Some((prov, (!loc.is_empty()).then_some(loc), pin));
        } else if kind > 2 {
            return Err(bad());
        }
        let kl = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        let key = SecretBytes::copy_from(take(kl)?);
        let cipher: Result<Arc<dyn SectorCipher>, OpsError> = match (kind, wrapped_src) {
            (1, Some((prov, loc, pin))) => wrapped::server_cipher(
                &prov,
                loc.as_deref(),
                pin.as_ref(),
                key.expose_secret(),
                sector,
            ),
            (2, _) => Ok(Arc::new(Linear(sector))),
            _ => check_cipher(&spec)
                .and_then(|cs| {
                    wrapcrypt_sector::new_soft_cipher(&cs, &key, sector)
                        .map_err(|e| OpsError::usage(e.to_string()))
                })
                .map(Arc::from),
        };
        ciphers.push(cipher);
        specs.push(spec);
        keys.push(key);
    }
    let boundary = u64::from_le_bytes(take(8)?.try_into().expect("8"));
    let backward = match take(1) {
        Ok([1]) => true,
        Ok(_) => return Err(bad()),
        Err(_) => false,
    };
    Ok(Decoded {
        config,
        specs,
        ciphers,
        keys,
        pin: first_pin,
        boundary,
        backward,
    })
}

/// Decodes the payload [`encode`] made and builds the cipher: the soft
/// engine over a clear key, or a provider session over a blob; two of them
/// behind a [`SplitCipher`] for a volume in mid-reencryption.
pub fn server_start(b: &[u8]) -> Result<ServerStart, OpsError> {
    let d = decode(b)?;
    drop(d.keys);
    let mut ciphers = d.ciphers.into_iter();
    let first = ciphers.next().expect("one part");
    let cipher = match ciphers.next() {
        None => first,
        Some(old) => first.and_then(|new| {
            let old = old?;
            split(new, old, d.boundary, d.backward)
                .map(|s| Arc::new(s) as Arc<dyn SectorCipher>)
                .map_err(|e| OpsError::usage(e.to_string()))
        }),
    };
    Ok(ServerStart {
        config: d.config,
        spec: d.specs.join(" -> "),
        cipher,
    })
}
