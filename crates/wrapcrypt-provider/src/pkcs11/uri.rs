//! The part of RFC 7512 PKCS#11 URIs the provider needs: which module,
//! which token, which wrapping key, where the PIN comes from.

use std::path::PathBuf;

/// SoftHSM2's module on Debian, used when no `module-path` is given and
/// p11-kit's proxy is absent.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// p11-kit's proxy module (every module registered with p11-kit).
pub const P11_KIT_PROXY: &str = "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so";

/// A parsed `pkcs11:` URI naming a token and a wrapping key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pkcs11Uri {
    /// `token=`: the token label (required).
    pub token: String,
    /// `object=`: the label of the CURRENT wrapping key (required).
    pub object: String,
    /// `id=`: the CKA_ID of the CURRENT wrapping key, if the label is not enough.
    pub id: Option<Vec<u8>>,
    /// `manufacturer=`, `model=`, `serial=`: further token filters.
    pub manufacturer: Option<String>,
    /// Token model filter.
    pub model: Option<String>,
    /// Token serial number filter.
    pub serial: Option<String>,
    /// `?module-path=`: the module to load.
    pub module_path: Option<PathBuf>,
    /// `?pin-source=`: a file holding the user PIN (`file:` prefix optional).
    pub pin_source: Option<PathBuf>,
}

/// Why a URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// It does not start with `pkcs11:`.
    #[error("not a PKCS#11 URI (must start with \"pkcs11:\")")]
    Scheme,
    /// A `%` escape is not two hex digits, or the value is not UTF-8.
    #[error("bad percent-encoding in {0:?}")]
    Encoding(String),
    /// An attribute appears without `=`, or twice.
    #[error("malformed or repeated attribute {0:?}")]
    Attribute(String),
    /// A required attribute is missing.
    #[error("the URI needs {0}")]
    Missing(&'static str),
    /// `pin-value` would put the PIN into argv; refused.
    #[error(
        "pin-value is refused (it would expose the PIN); use pin-source=file:PATH or --pin-file"
    )]
    PinValue,
}

fn decode(s: &str) -> Result<Vec<u8>, UriError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UriError::Encoding(s.to_string()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn decode_str(s: &str) -> Result<String, UriError> {
    String::from_utf8(decode(s)?).map_err(|_| UriError::Encoding(s.to_string()))
}

fn set<T>(slot: &mut Option<T>, name: &str, v: T) -> Result<(), UriError> {
    if slot.is_some() {
        return Err(UriError::Attribute(name.to_string()));
    }
    *slot = Some(v);
    Ok(())
}

impl Pkcs11Uri {
    /// Parses `pkcs11:token=T;object=K[;id=%01][?module-path=M&pin-source=file:P]`.
    /// Unknown path and query attributes are ignored, as RFC 7512 allows.
    pub fn parse(uri: &str) -> Result<Pkcs11Uri, UriError> {
        let rest = uri.strip_prefix("pkcs11:").ok_or(UriError::Scheme)?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut object, mut id) = (None, None, None);
        let (mut manufacturer, mut model, mut serial) = (None, None, None);
        let (mut module_path, mut pin_source) = (None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| UriError::Attribute(attr.to_string()))?;
            match k {
                "token" => set(&mut token, k, decode_str(v)?)?,
                "object" => set(&mut object, k, decode_str(v)?)?,
                "id" => set(&mut id, k, decode(v)?)?,
                "manufacturer" => set(&mut manufacturer, k, decode_str(v)?)?,
                "model" => set(&mut model, k, decode_str(v)?)?,
                "serial" => set(&mut serial, k, decode_str(v)?)?,
                _ => {}
            }
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| UriError::Attribute(attr.to_string()))?;
            match k {
                "module-path" => set(&mut module_path, k, PathBuf::from(decode_str(v)?))?,
                "pin-source" => {
                    let v = decode_str(v)?;
                    let p = v.strip_prefix("file:").unwrap_or(&v);
                    // RFC 7512 pin-source is a URI: file:///path or a plain path.
                    let p = p.strip_prefix("//").unwrap_or(p);
                    set(&mut pin_source, k, PathBuf::from(p))?
                }
                "pin-value" => return Err(UriError::PinValue),
                _ => {}
            }
        }
        Ok(Pkcs11Uri {
            token: token.ok_or(UriError::Missing("token=LABEL"))?,
            object: object.ok_or(UriError::Missing("object=WRAPPING-KEY-LABEL"))?,
            id,
            manufacturer,
            model,
            serial,
            module_path,
            pin_source,
        })
    }

    /// The module to load: `module-path`, else p11-kit's proxy, else SoftHSM2.
    pub fn module(&self) -> PathBuf {
        if let Some(p) = &self.module_path {
            return p.clone();
        }
        if std::path::Path::new(P11_KIT_PROXY).exists() {
            return PathBuf::from(P11_KIT_PROXY);
        }
        PathBuf::from(SOFTHSM2_MODULE)
    }

    /// Label of the NEW wrapping key (the target of a `--to-new` re-wrap).
    pub fn new_label(&self) -> String {
        format!("{}.new", self.object)
    }

    /// Label of the OLD wrapping key (after a promotion).
    pub fn old_label(&self) -> String {
        format!("{}.old", self.object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uri() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=My%20Token;object=vol-kek;id=%01%a2;type=secret-key\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
        )
        .unwrap();
        assert_eq!(u.token, "My Token");
        assert_eq!(u.object, "vol-kek");
        assert_eq!(u.id, Some(vec![0x01, 0xa2]));
        assert_eq!(u.module(), PathBuf::from(SOFTHSM2_MODULE));
        assert_eq!(u.pin_source, Some(PathBuf::from("/run/pin")));
        assert_eq!(u.new_label(), "vol-kek.new");
    }

    #[test]
    fn refusals() {
        assert_eq!(Pkcs11Uri::parse("pkcs12:token=a"), Err(UriError::Scheme));
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:object=k"),
            Err(UriError::Missing("token=LABEL"))
        );
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:token=t"),
            Err(UriError::Missing("object=WRAPPING-KEY-LABEL"))
        );
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:token=t;object=k?pin-value=1234"),
            Err(UriError::PinValue)
        );
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:token=t;token=u;object=k"),
            Err(UriError::Attribute(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:token=%zz;object=k"),
            Err(UriError::Encoding(_))
        ));
        let u = Pkcs11Uri::parse("pkcs11:token=t;object=k?pin-source=file:///etc/pin").unwrap();
        assert_eq!(u.pin_source, Some(PathBuf::from("/etc/pin")));
    }
}
