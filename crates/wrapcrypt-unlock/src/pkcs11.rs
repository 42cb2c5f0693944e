//! The `systemd-pkcs11` token's cryptography: a random secret encrypted to
//! an RSA key pair in a PKCS#11 token; only the token can decrypt it.
//!
//! As systemd-cryptenroll: the secret is half the modulus length
//! (128 bytes for RSA-2048), encrypted with RSA PKCS#1 v1.5 (CKM_RSA_PKCS,
//! which every released systemd-cryptsetup decrypts); tokens marked
//! `"pkcs11-key-algorithm": "rsa-oaep-sha256"` are decrypted with OAEP.
//! Sessions come from the `pkcs11` key provider, so a module is loaded
//! and initialised once per process.

use cryptoki::error::Error;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use wrapcrypt_provider::{Pkcs11Provider, ProviderError};
use wrapcrypt_secret::SecretBytes;

/// Why the PKCS#11 token could not enroll or release its secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11TokenError {
    /// Opening the token or logging in failed (wrong PIN: exit 2).
    #[error("{0}")]
    Provider(#[from] ProviderError),
    /// No matching key object in the token.
    #[error("no RSA {class} key matching {uri} in the token")]
    NoKey {
        /// "public" or "private"
        class: &'static str,
        /// the URI searched
        uri: String,
    },
    /// More than one key matches.
    #[error("{uri} matches several RSA {class} keys; add id= or object= to the URI")]
    Ambiguous {
        /// "public" or "private"
        class: &'static str,
        /// the URI searched
        uri: String,
    },
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {function} failed: {rv}")]
    Call {
        /// the call
        function: &'static str,
        /// its return value
        rv: String,
    },
    /// The token JSON is unusable.
    #[error("invalid systemd-pkcs11 token: {0}")]
    Token(String),
}

impl Pkcs11TokenError {
    /// Whether this means "wrong credentials" (exit 2) rather than a fault.
    pub fn is_permission(&self) -> bool {
        match self {
            Pkcs11TokenError::Provider(e) => {
                e.code() == wrapcrypt_provider::ErrorCode::PermissionDenied
            }
            Pkcs11TokenError::Call { rv, .. } => rv.contains("PIN") || rv.contains("NOT_LOGGED"),
            _ => false,
        }
    }
}

fn call(function: &'static str) -> impl Fn(Error) -> Pkcs11TokenError {
    move |e| Pkcs11TokenError::Call {
        function,
        rv: match e {
            Error::Pkcs11(rv, _) => format!("{rv:?}"),
            other => other.to_string(),
        },
    }
}

/// Padding of the encrypted secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA PKCS#1 v1.5 (systemd's scheme; no field in the token).
    Pkcs1v15,
    /// RSA-OAEP with SHA-256, MGF1-SHA-256, empty label.
    OaepSha256,
}

impl KeyAlgorithm {
    /// From the optional `pkcs11-key-algorithm` field.
    pub fn from_field(v: Option<&str>) -> Result<KeyAlgorithm, Pkcs11TokenError> {
        match v {
            None | Some("rsa-pkcs1-v1.5") => Ok(KeyAlgorithm::Pkcs1v15),
            Some("rsa-oaep-sha256") => Ok(KeyAlgorithm::OaepSha256),
            Some(o) => Err(Pkcs11TokenError::Token(format!(
                "unknown pkcs11-key-algorithm {o:?}"
            ))),
        }
    }

    fn mechanism(self) -> Mechanism<'static> {
        match self {
            KeyAlgorithm::Pkcs1v15 => Mechanism::RsaPkcs,
            KeyAlgorithm::OaepSha256 => Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
                MechanismType::SHA256,
                PkcsMgfType::MGF1_SHA256,
                PkcsOaepSource::empty(),
            )),
        }
    }
}

/// A URI the provider accepts: systemd's URIs may name the key by `id=`
/// alone, the provider's parser wants an `object=` attribute (empty: any).
fn provider_uri(uri: &str) -> String {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let has_object = path
        .trim_start_matches("pkcs11:")
        .split(';')
        .any(|a| a.starts_with("object="));
    let mut out = path.to_string();
    if !has_object {
        if !out.ends_with(':') && !out.ends_with(';') {
            out.push(';');
        }
        out.push_str("object=");
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The URI systemd stores: the same, with `type=private` (it rewrites
/// `type=cert`/`type=public`, so tools' output can be pasted as is).
pub fn stored_uri(uri: &str) -> String {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let body = path.trim_start_matches("pkcs11:");
    let mut attrs: Vec<String> = body
        .split(';')
        .filter(|a| !a.is_empty() && !a.starts_with("type="))
        .map(str::to_string)
        .collect();
    attrs.push("type=private".into());
    let mut out = format!("pkcs11:{}", attrs.join(";"));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn open(uri: &str, pin: Option<&SecretBytes>) -> Result<Pkcs11Provider, Pkcs11TokenError> {
    Ok(Pkcs11Provider::open(&provider_uri(uri), pin)?)
}

fn find_one(
    s: &Session,
    p: &Pkcs11Provider,
    class: ObjectClass,
    uri: &str,
) -> Result<ObjectHandle, Pkcs11TokenError> {
    let name = if class == ObjectClass::PUBLIC_KEY {
        "public"
    } else {
        "private"
    };
    let mut t = vec![Attribute::Class(class), Attribute::KeyType(KeyType::RSA)];
    let u = p.uri();
    if !u.object.is_empty() {
        t.push(Attribute::Label(u.object.as_bytes().to_vec()));
    }
    if let Some(id) = &u.id {
        t.push(Attribute::Id(id.clone()));
    }
    let found = s.find_objects(&t).map_err(call("C_FindObjects"))?;
    match found.as_slice() {
        [h] => Ok(*h),
        [] => Err(Pkcs11TokenError::NoKey {
            class: name,
            uri: uri.to_string(),
        }),
        _ => Err(Pkcs11TokenError::Ambiguous {
            class: name,
            uri: uri.to_string(),
        }),
    }
}

/// What enrollment produced.
pub struct Enrolled {
    /// The secret (its base64 is the keyslot passphrase).
    pub secret: SecretBytes,
    /// The secret encrypted to the token's public key (`pkcs11-key`).
    pub encrypted: Vec<u8>,
}

/// Generates a secret and encrypts it to the RSA public key named by
/// `uri`, then proves the token's private key decrypts it.
pub fn enroll(uri: &str, pin: Option<&SecretBytes>) -> Result<Enrolled, Pkcs11TokenError> {
    let p = open(uri, pin)?;
    p.with_session(|s| {
        let public = find_one(s, &p, ObjectClass::PUBLIC_KEY, uri)?;
        let attrs = s
            .get_attributes(public, &[AttributeType::Modulus])
            .map_err(call("C_GetAttributeValue"))?;
        let bits = attrs
            .iter()
            .find_map(|a| match a {
                Attribute::Modulus(m) => {
                    let lead = m.iter().take_while(|&&b| b == 0).count();
                    Some((m.len() - lead) * 8)
                }
                _ => None,
            })
            .ok_or_else(|| Pkcs11TokenError::Call {
                function: "C_GetAttributeValue",
                rv: "no CKA_MODULUS".into(),
            })?;
        // Half the modulus leaves room for PKCS#1 padding (systemd's size).
        let len = bits / 8 / 2;
        if len < 16 {
            return Err(Pkcs11TokenError::Token(format!(
                "RSA key of {bits} bits is too small"
            )));
        }
        let secret = SecretBytes::random(len).map_err(|e| Pkcs11TokenError::Call {
            function: "getrandom",
            rv: e.to_string(),
        })?;
        let encrypted = s
            .encrypt(&Mechanism::RsaPkcs, public, secret.expose_secret())
            .map_err(call("C_Encrypt"))?;
        let private = find_one(s, &p, ObjectClass::PRIVATE_KEY, uri)?;
        let back = decrypt_with(s, private, &encrypted, KeyAlgorithm::Pkcs1v15)?;
        if !back.ct_eq(secret.expose_secret()) {
            return Err(Pkcs11TokenError::Token(
                "the token's private key does not decrypt what its public key encrypted (mismatched pair?)".into(),
            ));
        }
        Ok(Enrolled { secret, encrypted })
    })?
}

fn decrypt_with(
    s: &Session,
    key: ObjectHandle,
    data: &[u8],
    alg: KeyAlgorithm,
) -> Result<SecretBytes, Pkcs11TokenError> {
    s.decrypt(&alg.mechanism(), key, data)
        .map(SecretBytes::take_vec)
        .map_err(call("C_Decrypt"))
}

/// Decrypts a token's `pkcs11-key` inside the token.
pub fn unlock(
    uri: &str,
    encrypted: &[u8],
    alg: KeyAlgorithm,
    pin: Option<&SecretBytes>,
) -> Result<SecretBytes, Pkcs11TokenError> {
    let p = open(uri, pin)?;
    p.with_session(|s| {
        let private = find_one(s, &p, ObjectClass::PRIVATE_KEY, uri)?;
        decrypt_with(s, private, encrypted, alg)
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_rewritten_as_systemd_and_the_provider_need() {
        assert_eq!(
            stored_uri("pkcs11:token=T;object=k;type=public?module-path=/m.so"),
            "pkcs11:token=T;object=k;type=private?module-path=/m.so"
        );
        assert_eq!(
            stored_uri("pkcs11:token=T;id=%01"),
            "pkcs11:token=T;id=%01;type=private"
        );
        assert_eq!(
            provider_uri("pkcs11:token=T;id=%01"),
            "pkcs11:token=T;id=%01;object="
        );
        assert_eq!(
            provider_uri("pkcs11:token=T;object=k?x=1"),
            "pkcs11:token=T;object=k?x=1"
        );
    }

    #[test]
    fn key_algorithm_field() {
        assert_eq!(
            KeyAlgorithm::from_field(None).unwrap(),
            KeyAlgorithm::Pkcs1v15
        );
        assert_eq!(
            KeyAlgorithm::from_field(Some("rsa-oaep-sha256")).unwrap(),
            KeyAlgorithm::OaepSha256
        );
        assert!(KeyAlgorithm::from_field(Some("ecdh")).is_err());
    }
}
