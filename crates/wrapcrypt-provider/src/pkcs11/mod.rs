//! The `pkcs11` provider: a non-extractable AES-256 wrapping key in a
//! PKCS#11 token; volume keys generated in the token and wrapped with
//! CKM_AES_KEY_WRAP_PAD (RFC 5649); opened keys unwrapped into sensitive,
//! non-extractable session objects; XTS composed from the token's AES-ECB.
//! Where the module cannot wrap (p11-kit's client forwards no AES key
//! wrap), volume keys are held in the token instead (WKB mechanism 3).
//! Rules, naming and the p11-kit findings: docs/pkcs11.md.

mod error;
pub mod uri;
mod xts;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::SectorCipher;
use zeroize::Zeroize;

use crate::error::{ErrorCode, ProviderError};
use crate::types::{
    KeyAlgorithm, KeySpec, KeyState, KeyStatus, Protection, Register, RewrapDirection,
};
use crate::wkb::{Mechanism as WkbMechanism, Wkb, WrappingKeyId, MAX_IDENTITY};
use crate::KeyProvider;

pub(crate) use error::p11_err;
pub use uri::{Pkcs11Uri, UriError};

/// Provider name written into `pkcs11` blobs.
pub const PKCS11: &str = "pkcs11";
/// RFC 5649 output for one 32-byte AES key: 8 bytes longer.
const WRAPPED_HALF: usize = 40;
/// Identity of a token-held key: random, so two volumes never meet.
const HELD_ID: usize = 16;
/// A token-held blob's payload: the key's verification pattern.
const HELD_VP: usize = 32;

/// State shared by the provider and every cipher it opened: the module, the
/// slot and a session that holds the login for as long as any of them lives.
pub(crate) struct Inner {
    pub(crate) ctx: Pkcs11,
    pub(crate) slot: Slot,
    uri: Pkcs11Uri,
    module: PathBuf,
    protection: Protection,
    /// Key management runs here, one operation at a time.
    main: Mutex<Session>,
}

/// The `pkcs11` key provider over one token and one wrapping-key label.
pub struct Pkcs11Provider {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Provider")
            .field("token", &self.inner.uri.token)
            .field("object", &self.inner.uri.object)
            .field("module", &self.inner.module)
            .field("protection", &self.inner.protection)
            .finish()
    }
}

fn refused(code: ErrorCode, message: impl Into<String>) -> ProviderError {
    ProviderError::refused(PKCS11, code, message)
}

/// One initialised context per module (and p11-kit server address): a
/// module may be initialised once per process, and SoftHSM reads its
/// configuration only then. Contexts are never finalised.
fn context(module: &Path) -> Result<Pkcs11, ProviderError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<(PathBuf, String), Pkcs11>>> = OnceLock::new();
    // p11-kit's client module reads the server address when loaded.
    let address = std::env::var("P11_KIT_SERVER_ADDRESS").unwrap_or_default();
    let key = (module.to_path_buf(), address);
    let mut map = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| refused(ErrorCode::Internal, "PKCS#11 context registry poisoned"))?;
    if let Some(c) = map.get(&key) {
        return Ok(c.clone());
    }
    if !module.exists() {
        return Err(refused(
            ErrorCode::InvalidArgument,
            format!(
                "PKCS#11 module {} does not exist (set module-path in the URI)",
                module.display()
            ),
        ));
    }
    let ctx = Pkcs11::new(module).map_err(|e| {
        refused(
            ErrorCode::Internal,
            format!("cannot load PKCS#11 module {}: {e}", module.display()),
        )
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(p11_err(
                format!("initialising PKCS#11 module {}", module.display()),
                e,
            ))
        }
    }
    map.insert(key, ctx.clone());
    Ok(ctx)
}

fn read_pin_file(path: &Path) -> Result<SecretBytes, ProviderError> {
    let raw = std::fs::read(path).map_err(|e| {
        refused(
            ErrorCode::InvalidArgument,
            format!("cannot read the PIN file {}: {e}", path.display()),
        )
    })?;
    let mut pin = SecretBytes::take_vec(raw);
    let len = pin
        .expose_secret()
        .iter()
        .rposition(|&b| b != b'\n' && b != b'\r');
    pin.truncate(len.map_or(0, |l| l + 1));
    Ok(pin)
}

fn secret_key_template(label: Option<&str>) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
    ];
    if let Some(l) = label {
        t.push(Attribute::Label(l.as_bytes().to_vec()));
    }
    t
}

/// Attributes of a volume-key half while it exists in the token: a session
/// object, sensitive; extractable only when it is about to be wrapped.
fn half_template(extractable: bool, decrypt: bool) -> Vec<Attribute> {
    let mut t = secret_key_template(None);
    t.extend([
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
        Attribute::Encrypt(!extractable),
        Attribute::Decrypt(!extractable && decrypt),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]);
    t
}

/// A session object destroyed when dropped (on every error path too).
struct Temp<'a> {
    s: &'a Session,
    h: ObjectHandle,
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        let _ = self.s.destroy_object(self.h);
    }
}

/// A wrapping key found in the token.
struct Kek {
    handle: ObjectHandle,
    label: String,
    identity: WrappingKeyId,
}

impl Pkcs11Provider {
    /// Opens the token named by `uri` and logs in with `pin` (else the URI's
    /// `pin-source` file; a token with a protected authentication path
    /// needs neither). The PIN never comes from argv or the environment.
    pub fn open(uri: &str, pin: Option<&SecretBytes>) -> Result<Pkcs11Provider, ProviderError> {
        let uri = Pkcs11Uri::parse(uri)
            .map_err(|e| refused(ErrorCode::InvalidArgument, format!("PKCS#11 URI: {e}")))?;
        let file_pin = match (&pin, &uri.pin_source) {
            (None, Some(p)) => Some(read_pin_file(p)?),
            _ => None,
        };
        let pin = pin.or(file_pin.as_ref());
        let module = uri.module();
        let ctx = context(&module)?;
        let slot = find_slot(&ctx, &uri, &module)?;
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| p11_err("reading token information", e))?;
        let main = ctx
            .open_rw_session(slot)
            .map_err(|e| p11_err(format!("opening a session on token '{}'", uri.token), e))?;
        let login = match pin {
            Some(p) => main.login_with_raw(
                UserType::User,
                &RawAuthPin::new(p.expose_secret().to_vec().into()),
            ),
            None if info.protected_authentication_path() => main.login(UserType::User, None),
            None if info.login_required() => {
                return Err(refused(
                    ErrorCode::PermissionDenied,
                    format!(
                        "token '{}' needs its user PIN (--pin-file or pin-source=file:PATH)",
                        uri.token
                    ),
                ))
            }
            None => Ok(()),
        };
        match login {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(p11_err(format!("logging in to token '{}'", uri.token), e)),
        }
        let protection = protection_of(&ctx, slot, &module);
        Ok(Pkcs11Provider {
            inner: Arc::new(Inner {
                ctx,
                slot,
                uri,
                module,
                protection,
                main: Mutex::new(main),
            }),
        })
    }

    /// The URI this provider was opened with (parsed).
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.inner.uri
    }

    /// The module loaded.
    pub fn module(&self) -> &Path {
        &self.inner.module
    }

    /// Whether the token offers CKM_AES_KEY_WRAP_PAD (p11-kit's client
    /// module hides it: docs/pkcs11.md).
    pub fn supports_wrap_pad(&self) -> Result<bool, ProviderError> {
        let list = self
            .inner
            .ctx
            .get_mechanism_list(self.inner.slot)
            .map_err(|e| p11_err("listing mechanisms", e))?;
        Ok(list.contains(&MechanismType::AES_KEY_WRAP_PAD))
    }

    /// Runs `f` on the provider's logged-in session, for callers that use
    /// other objects of the same token (the `systemd-pkcs11` unlock token's
    /// RSA key) without loading the module a second time.
    pub fn with_session<R>(&self, f: impl FnOnce(&Session) -> R) -> Result<R, ProviderError> {
        let s = self.main()?;
        Ok(f(&s))
    }

    fn main(&self) -> Result<std::sync::MutexGuard<'_, Session>, ProviderError> {
        self.inner
            .main
            .lock()
            .map_err(|_| refused(ErrorCode::Internal, "PKCS#11 session poisoned"))
    }

    /// Admin: creates the AES-256 wrapping key `label` with CKA_ID `id` in the
    /// token (token object; sensitive, never extractable; wrap/unwrap only).
    /// Use the URI's `object` label for the CURRENT key and `LABEL.new` for a
    /// rotation target.
    pub fn create_wrapping_key(
        &self,
        label: &str,
        id: &[u8],
    ) -> Result<WrappingKeyId, ProviderError> {
        if id.is_empty() || id.len() > MAX_IDENTITY || label.is_empty() {
            return Err(refused(
                ErrorCode::InvalidArgument,
                format!("a wrapping key needs a label and a CKA_ID of 1..={MAX_IDENTITY} bytes"),
            ));
        }
        let s = self.main()?;
        if !find_keys(&s, label, None)?.is_empty() {
            return Err(refused(
                ErrorCode::AlreadyInitialized,
                format!(
                    "token '{}' already holds a key labelled '{label}'",
                    self.inner.uri.token
                ),
            ));
        }
        let mut t = secret_key_template(Some(label));
        t.extend([
            Attribute::Id(id.to_vec()),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
        ]);
        s.generate_key(&Mechanism::AesKeyGen, &t)
            .map_err(|e| p11_err(format!("generating wrapping key '{label}'"), e))?;
        Ok(WrappingKeyId::Pkcs11Id(id.to_vec()))
    }

    /// Admin, after every blob was re-wrapped `--to-new`: `LABEL` becomes
    /// `LABEL.old` and `LABEL.new` becomes `LABEL`. Refused while a
    /// `LABEL.old` exists (its blobs would become unreachable by label; they
    /// stay reachable by CKA_ID, so delete it deliberately first).
    pub fn promote_new_wrapping_key(&self) -> Result<(), ProviderError> {
        let u = &self.inner.uri;
        let s = self.main()?;
        let new = find_keys(&s, &u.new_label(), None)?;
        let cur = find_keys(&s, &u.object, u.id.as_deref())?;
        if !find_keys(&s, &u.old_label(), None)?.is_empty() && !cur.is_empty() {
            return Err(refused(
                ErrorCode::AlreadyInitialized,
                format!(
                    "'{}' exists; remove it before promoting '{}'",
                    u.old_label(),
                    u.new_label()
                ),
            ));
        }
        let [new] = new.as_slice() else {
            return Err(refused(
                ErrorCode::EmptyRegister,
                format!("no single key labelled '{}' to promote", u.new_label()),
            ));
        };
        // A crash between the two steps leaves no CURRENT but both others:
        // running the promotion again completes it.
        for (h, l) in cur
            .iter()
            .map(|h| (h, u.old_label()))
            .chain([(new, u.object.clone())])
        {
            s.update_attributes(*h, &[Attribute::Label(l.into_bytes())])
                .map_err(|e| p11_err("relabelling a wrapping key", e))?;
        }
        Ok(())
    }

    fn current_kek(&self, s: &Session) -> Result<Kek, ProviderError> {
        let u = &self.inner.uri;
        self.single_kek(s, &u.object, u.id.as_deref())?.ok_or_else(|| {
            refused(
                ErrorCode::NotInitialized,
                format!(
                    "token '{}' has no wrapping key labelled '{}' (create it with the admin helper, or fix object= in the URI)",
                    u.token, u.object
                ),
            )
        })
    }

    fn single_kek(
        &self,
        s: &Session,
        label: &str,
        id: Option<&[u8]>,
    ) -> Result<Option<Kek>, ProviderError> {
        match find_keys(s, label, id)?.as_slice() {
            [] => Ok(None),
            [h] => kek_of(s, *h).map(Some),
            _ => Err(refused(
                ErrorCode::InvalidArgument,
                format!(
                    "several keys labelled '{label}' in token '{}'; add id= to the URI",
                    self.inner.uri.token
                ),
            )),
        }
    }

    /// The wrapping key named by a blob's identity, if the token holds it.
    fn kek_for(&self, s: &Session, id: &WrappingKeyId) -> Result<Option<Kek>, ProviderError> {
        let mut t = secret_key_template(None);
        match id {
            WrappingKeyId::Pkcs11Id(b) => t.push(Attribute::Id(b.clone())),
            WrappingKeyId::Pkcs11Label(l) => t.push(Attribute::Label(l.as_bytes().to_vec())),
            other => {
                return Err(refused(
                    ErrorCode::BadWkb,
                    format!("a pkcs11 blob cannot name wrapping key {other}"),
                ))
            }
        }
        let found = s
            .find_objects(&t)
            .map_err(|e| p11_err("searching the token for the wrapping key", e))?;
        match found.as_slice() {
            [] => Ok(None),
            [h] => kek_of(s, *h).map(Some),
            _ => Err(refused(
                ErrorCode::InvalidArgument,
                format!(
                    "several keys in token '{}' match wrapping key {id}",
                    self.inner.uri.token
                ),
            )),
        }
    }

    /// A token-held key is `current` when both objects are there, safe,
    /// and compute the blob's VP; it has no wrapping key and no register.
    fn validate_held(&self, wkb: &Wkb) -> Result<KeyStatus, ProviderError> {
        let id = held_id(wkb);
        let status = |state| {
            KeyStatus::new(
                state,
                None,
                format!("token-held id:{}", hex::encode(id)),
                self.inner.protection,
            )
        };
        let checked = self
            .held_xts(id, 32)
            .and_then(|x| self.check_held_vp(&x, wkb));
        Ok(match checked {
            Ok(()) => status(KeyState::Current),
            Err(e) => status(KeyState::Invalid(e.to_string())),
        })
    }

    fn register_of(&self, k: &Kek) -> Option<Register> {
        let u = &self.inner.uri;
        if k.label == u.object {
            Some(Register::Current)
        } else if k.label == u.new_label() {
            Some(Register::New)
        } else if k.label == u.old_label() {
            Some(Register::Old)
        } else {
            None
        }
    }

    fn check_blob(&self, wkb: &Wkb) -> Result<(), ProviderError> {
        if wkb.provider() != PKCS11 {
            return Err(ProviderError::WrongProvider {
                expected: PKCS11.into(),
                found: wkb.provider().into(),
            });
        }
        let len = wkb.expose_payload().len();
        let ok = wkb.algorithm() == KeyAlgorithm::Aes256Xts
            && match wkb.mechanism() {
                WkbMechanism::AesKwp256 => len == 2 * WRAPPED_HALF,
                WkbMechanism::Pkcs11TokenHeld => {
                    len == HELD_VP
                        && matches!(wkb.wrapping_key(), WrappingKeyId::Pkcs11Id(id) if id.len() == HELD_ID)
                }
                _ => false,
            };
        if !ok {
            return Err(refused(
                ErrorCode::BadWkb,
                "a pkcs11 blob holds two RFC 5649 wraps (80 bytes) of AES-256 keys, or names a token-held key (16-byte id, 32-byte verification pattern)",
            ));
        }
        Ok(())
    }

    fn blob_kek(&self, s: &Session, wkb: &Wkb) -> Result<Kek, ProviderError> {
        self.check_blob(wkb)?;
        self.kek_for(s, wkb.wrapping_key())?
            .ok_or_else(|| self.missing_kek(wkb.wrapping_key()))
    }

    fn missing_kek(&self, id: &WrappingKeyId) -> ProviderError {
        refused(
            ErrorCode::UnknownWrappingKey,
            format!(
                "wrapping key {id} is not in token '{}' (deleted, or the volume belongs to another token)",
                self.inner.uri.token
            ),
        )
    }

    /// Unwraps both halves into session objects of `s`.
    fn unwrap_halves(
        &self,
        s: &Session,
        kek: &Kek,
        wkb: &Wkb,
        extractable: bool,
    ) -> Result<[ObjectHandle; 2], ProviderError> {
        let p = wkb.expose_payload();
        let k1 = s
            .unwrap_key(
                &Mechanism::AesKeyWrapPad,
                kek.handle,
                &p[..WRAPPED_HALF],
                &half_template(extractable, true),
            )
            .map_err(|e| {
                p11_err(
                    format!("unwrapping K1 under wrapping key {}", kek.identity),
                    e,
                )
            })?;
        let k2 = s
            .unwrap_key(
                &Mechanism::AesKeyWrapPad,
                kek.handle,
                &p[WRAPPED_HALF..],
                &half_template(extractable, false),
            )
            .map_err(|e| {
                let _ = s.destroy_object(k1);
                p11_err(
                    format!("unwrapping K2 under wrapping key {}", kek.identity),
                    e,
                )
            })?;
        Ok([k1, k2])
    }

    /// Wraps two extractable halves under `kek` into a blob.
    fn wrap_halves(
        &self,
        s: &Session,
        kek: &Kek,
        halves: [ObjectHandle; 2],
    ) -> Result<Wkb, ProviderError> {
        let mut payload = SecretBytes::zeroed(2 * WRAPPED_HALF);
        for (i, h) in halves.into_iter().enumerate() {
            let w = s
                .wrap_key(&Mechanism::AesKeyWrapPad, kek.handle, h)
                .map_err(|e| {
                    p11_err(
                        format!(
                            "wrapping the volume key under {} with CKM_AES_KEY_WRAP_PAD",
                            kek.identity
                        ),
                        e,
                    )
                })?;
            if w.len() != WRAPPED_HALF {
                return Err(refused(
                    ErrorCode::Internal,
                    format!(
                        "C_WrapKey returned {} bytes, RFC 5649 of a 32-byte key is 40",
                        w.len()
                    ),
                ));
            }
            payload.expose_secret_mut()[i * WRAPPED_HALF..(i + 1) * WRAPPED_HALF]
                .copy_from_slice(&w);
        }
        Ok(Wkb::new(
            PKCS11,
            KeyAlgorithm::Aes256Xts,
            WkbMechanism::AesKwp256,
            kek.identity.clone(),
            payload,
        )?)
    }

    /// An XTS engine over the blob's key, unwrapped (or, for a token-held
    /// key, copied) into a fresh session.
    fn token_xts(&self, wkb: &Wkb, unit: usize) -> Result<xts::TokenXts, ProviderError> {
        if wkb.mechanism() == WkbMechanism::Pkcs11TokenHeld {
            self.check_blob(wkb)?;
            let x = self.held_xts(held_id(wkb), 32)?;
            self.check_held_vp(&x, wkb)?;
            return Ok(x.with_unit(unit));
        }
        let kek = {
            let s = self.main()?;
            self.blob_kek(&s, wkb)?
        };
        let owner = self
            .inner
            .ctx
            .open_ro_session(self.inner.slot)
            .map_err(|e| p11_err("opening a PKCS#11 session", e))?;
        let [k1, k2] = self.unwrap_halves(&owner, &kek, wkb, false)?;
        Ok(xts::TokenXts::new(self.inner.clone(), owner, k1, k2, unit))
    }

    /// Whether new keys are token-held (WKB mechanism 3) rather than
    /// wrapped: only when the module does not offer CKM_AES_KEY_WRAP_PAD.
    fn holds_keys(&self) -> Result<bool, ProviderError> {
        Ok(!self.supports_wrap_pad()?)
    }

    /// Finds the token objects K1 and K2 of a token-held key; `None` if
    /// either is missing. Refuses objects that are not sensitive,
    /// non-extractable AES token keys.
    fn held_halves(
        &self,
        s: &Session,
        id: &[u8],
    ) -> Result<Option<[ObjectHandle; 2]>, ProviderError> {
        let mut out: Vec<ObjectHandle> = Vec::with_capacity(2);
        for i in 0..2 {
            let found = s
                .find_objects(&held_search(id, i))
                .map_err(|e| p11_err("searching the token for a token-held volume key", e))?;
            let [h] = found.as_slice() else {
                if found.is_empty() {
                    return Ok(None);
                }
                return Err(refused(
                    ErrorCode::InvalidArgument,
                    format!(
                        "several objects in token '{}' have the CKA_ID of token-held key id:{}",
                        self.inner.uri.token,
                        hex::encode(id)
                    ),
                ));
            };
            let attrs = s
                .get_attributes(*h, &[AttributeType::Sensitive, AttributeType::Extractable])
                .map_err(|e| p11_err("reading a token-held key's attributes", e))?;
            let safe = attrs.contains(&Attribute::Sensitive(true))
                && attrs.contains(&Attribute::Extractable(false));
            if !safe {
                return Err(refused(
                    ErrorCode::IntegrityFailure,
                    format!(
                        "token-held key id:{} in token '{}' is not sensitive and non-extractable; refusing it",
                        hex::encode(id),
                        self.inner.uri.token
                    ),
                ));
            }
            out.push(*h);
        }
        Ok(Some([out[0], out[1]]))
    }

    fn missing_held(&self, id: &[u8]) -> ProviderError {
        refused(
            ErrorCode::UnknownWrappingKey,
            format!(
                "token-held key id:{} is not in token '{}' (deleted, or the volume belongs to another token)",
                hex::encode(id),
                self.inner.uri.token
            ),
        )
    }

    /// An XTS engine over session copies of a token-held key (the copies,
    /// sensitive and non-extractable like the originals, go when it drops).
    fn held_xts(&self, id: &[u8], unit: usize) -> Result<xts::TokenXts, ProviderError> {
        let [h1, h2] = {
            let s = self.main()?;
            self.held_halves(&s, id)?
                .ok_or_else(|| self.missing_held(id))?
        };
        let owner = self
            .inner
            .ctx
            .open_ro_session(self.inner.slot)
            .map_err(|e| p11_err("opening a PKCS#11 session", e))?;
        let copy = |h| {
            owner
                .copy_object(h, &[Attribute::Token(false)])
                .map_err(|e| p11_err("copying a token-held volume key into a session", e))
        };
        let k1 = copy(h1)?;
        let k2 = copy(h2).inspect_err(|_| {
            let _ = owner.destroy_object(k1);
        })?;
        Ok(xts::TokenXts::new(self.inner.clone(), owner, k1, k2, unit))
    }

    /// The blob's payload is the key's VP: a different key under the same
    /// id (or an altered payload) is refused before any data is touched.
    fn check_held_vp(&self, x: &xts::TokenXts, wkb: &Wkb) -> Result<(), ProviderError> {
        let vp = held_vp(x)?;
        if !wrapcrypt_secret::ct_eq(&vp, wkb.expose_payload()) {
            return Err(refused(
                ErrorCode::IntegrityFailure,
                format!(
                    "token-held key id:{} in token '{}' is not the key this blob names (verification pattern differs: altered blob, or another key with the same id)",
                    hex::encode(held_id(wkb)),
                    self.inner.uri.token
                ),
            ));
        }
        Ok(())
    }

    /// Creates K1 and K2 as token objects (generated in the token, or from
    /// `clear`) and returns the blob naming them.
    fn store_held(&self, clear: Option<&SecretBytes>) -> Result<Wkb, ProviderError> {
        let mut id = [0u8; HELD_ID];
        wrapcrypt_secret::fill_random(&mut id)
            .map_err(|e| refused(ErrorCode::Internal, format!("no randomness: {e}")))?;
        {
            let s = self.main()?;
            let mut made: Vec<ObjectHandle> = Vec::with_capacity(2);
            for i in 0..2 {
                let mut t = held_template(&id, i);
                let r = match clear {
                    None => {
                        t.push(Attribute::ValueLen(32.into()));
                        s.generate_key(&Mechanism::AesKeyGen, &t)
                            .map_err(|e| p11_err("generating a volume key half in the token", e))
                    }
                    Some(c) => {
                        t.push(Attribute::Value(
                            c.expose_secret()[i * 32..(i + 1) * 32].to_vec(),
                        ));
                        let r = s.create_object(&t);
                        // The template's copy of the key bytes is plain heap memory.
                        for a in t.iter_mut() {
                            if let Attribute::Value(v) = a {
                                v.zeroize();
                            }
                        }
                        r.map_err(|e| p11_err("creating a token-held volume key half", e))
                    }
                };
                match r {
                    Ok(h) => made.push(h),
                    Err(e) => {
                        for h in made {
                            let _ = s.destroy_object(h);
                        }
                        return Err(e);
                    }
                }
            }
        }
        let vp = self
            .held_xts(&id, 32)
            .and_then(|x| held_vp(&x))
            .inspect_err(|_| {
                let _ = self.destroy_held(&id);
            })?;
        Ok(Wkb::new(
            PKCS11,
            KeyAlgorithm::Aes256Xts,
            WkbMechanism::Pkcs11TokenHeld,
            WrappingKeyId::Pkcs11Id(id.to_vec()),
            SecretBytes::copy_from(&vp),
        )?)
    }

    fn destroy_held(&self, id: &[u8]) -> Result<bool, ProviderError> {
        let s = self.main()?;
        let mut any = false;
        for i in 0..2 {
            for h in s
                .find_objects(&held_search(id, i))
                .map_err(|e| p11_err("searching the token for a token-held volume key", e))?
            {
                s.destroy_object(h)
                    .map_err(|e| p11_err("destroying a token-held volume key", e))?;
                any = true;
            }
        }
        Ok(any)
    }

    /// Admin (erase): destroys the token objects of a token-held key (WKB
    /// mechanism 3). Returns whether any existed. Every volume using the
    /// key becomes unreadable; wrapped blobs (mechanism 2) are refused.
    pub fn destroy_token_held_key(&self, wkb: &Wkb) -> Result<bool, ProviderError> {
        self.check_blob(wkb)?;
        if wkb.mechanism() != WkbMechanism::Pkcs11TokenHeld {
            return Err(refused(
                ErrorCode::InvalidArgument,
                "the blob holds a wrapped key, not a token-held one: nothing in the token to destroy",
            ));
        }
        self.destroy_held(held_id(wkb))
    }

    /// A sector cipher over a clear key put into the token as two sensitive,
    /// non-extractable session objects, without any wrapping: for modules
    /// that cannot unwrap (p11-kit's client) and for measurements. The clear
    /// key passes through this process, as with `import`.
    pub fn open_cipher_from_clear_key(
        &self,
        clear: &SecretBytes,
        sector_size: usize,
    ) -> Result<Arc<dyn SectorCipher>, ProviderError> {
        check_sector_size(sector_size)?;
        check_clear(clear)?;
        let owner = self
            .inner
            .ctx
            .open_ro_session(self.inner.slot)
            .map_err(|e| p11_err("opening a PKCS#11 session", e))?;
        let [k1, k2] = create_halves(&owner, clear, false)?;
        Ok(Arc::new(xts::TokenXts::new(
            self.inner.clone(),
            owner,
            k1,
            k2,
            sector_size,
        )))
    }
}

/// The id of a checked token-held blob.
fn held_id(wkb: &Wkb) -> &[u8] {
    match wkb.wrapping_key() {
        WrappingKeyId::Pkcs11Id(id) => id,
        _ => &[],
    }
}

/// `CKA_ID` of half `i` (0 = K1, 1 = K2) of token-held key `id`.
fn held_half_id(id: &[u8], i: usize) -> Vec<u8> {
    let mut v = id.to_vec();
    v.push(i as u8 + 1);
    v
}

/// Search template for the token object of half `i` of token-held key `id`.
fn held_search(id: &[u8], i: usize) -> Vec<Attribute> {
    let mut t = secret_key_template(None);
    t.extend([Attribute::Token(true), Attribute::Id(held_half_id(id, i))]);
    t
}

/// Attributes of a token-held half: a private token object, sensitive,
/// never extractable (no wrap can take it out), ECB only (K1 both ways,
/// K2 encrypt for the tweaks). Modifiable, because SoftHSM2 refuses
/// C_CopyObject of an unmodifiable object (CKR_ATTRIBUTE_READ_ONLY) and
/// opening copies it into a session; sensitivity and extractability can
/// only ever tighten, and whoever can modify it (the PIN holder) can use
/// it anyway.
fn held_template(id: &[u8], i: usize) -> Vec<Attribute> {
    let label = format!("wrapcrypt-vk-{}-K{}", hex::encode(id), i + 1);
    let mut t = secret_key_template(Some(&label));
    t.extend([
        Attribute::Id(held_half_id(id, i)),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(i == 0),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]);
    t
}

/// The VP (XTS of 32 zero bytes, tweak 0) computed in the token.
fn held_vp(x: &xts::TokenXts) -> Result<[u8; HELD_VP], ProviderError> {
    let mut buf = [0u8; HELD_VP];
    x.run(0, &mut buf, true)
        .map_err(|e| refused(ErrorCode::Internal, e.to_string()))?;
    Ok(buf)
}

fn check_sector_size(sector_size: usize) -> Result<(), ProviderError> {
    if !(sector_size.is_power_of_two() && (512..=4096).contains(&sector_size)) {
        return Err(refused(
            ErrorCode::InvalidArgument,
            format!("sector size {sector_size} is not a power of two in 512..=4096"),
        ));
    }
    Ok(())
}

fn check_clear(clear: &SecretBytes) -> Result<(), ProviderError> {
    if clear.len() != 64 {
        return Err(refused(
            ErrorCode::InvalidArgument,
            format!("aes-256-xts needs a 64-byte key, got {} bytes", clear.len()),
        ));
    }
    Ok(())
}

/// Creates K1 and K2 from a clear 64-byte key as session objects of `s`.
fn create_halves(
    s: &Session,
    clear: &SecretBytes,
    extractable: bool,
) -> Result<[ObjectHandle; 2], ProviderError> {
    let mut out: Vec<ObjectHandle> = Vec::with_capacity(2);
    for (i, half) in clear.expose_secret().chunks_exact(32).enumerate() {
        let mut t = half_template(extractable, i == 0);
        t.push(Attribute::Value(half.to_vec()));
        let r = s.create_object(&t);
        // The template's copy of the key bytes is plain heap memory.
        for a in t.iter_mut() {
            if let Attribute::Value(v) = a {
                v.zeroize();
            }
        }
        match r {
            Ok(h) => out.push(h),
            Err(e) => {
                for h in out {
                    let _ = s.destroy_object(h);
                }
                return Err(p11_err("creating a session key from the clear key", e));
            }
        }
    }
    Ok([out[0], out[1]])
}

fn find_keys(
    s: &Session,
    label: &str,
    id: Option<&[u8]>,
) -> Result<Vec<ObjectHandle>, ProviderError> {
    let mut t = secret_key_template(Some(label));
    if let Some(id) = id {
        t.push(Attribute::Id(id.to_vec()));
    }
    s.find_objects(&t)
        .map_err(|e| p11_err(format!("searching the token for key '{label}'"), e))
}

fn kek_of(s: &Session, h: ObjectHandle) -> Result<Kek, ProviderError> {
    let attrs = s
        .get_attributes(h, &[AttributeType::Id, AttributeType::Label])
        .map_err(|e| p11_err("reading the wrapping key's CKA_ID and CKA_LABEL", e))?;
    let (mut id, mut label) = (Vec::new(), String::new());
    for a in attrs {
        match a {
            Attribute::Id(v) => id = v,
            Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
            _ => {}
        }
    }
    // CKA_ID is the stable identity (labels move during rotation).
    let identity = if !id.is_empty() && id.len() <= MAX_IDENTITY {
        WrappingKeyId::Pkcs11Id(id)
    } else if !label.is_empty() && label.len() <= MAX_IDENTITY {
        WrappingKeyId::Pkcs11Label(label.clone())
    } else {
        return Err(refused(
            ErrorCode::InvalidArgument,
            format!("wrapping key '{label}' needs a CKA_ID of 1..={MAX_IDENTITY} bytes"),
        ));
    };
    Ok(Kek {
        handle: h,
        label,
        identity,
    })
}

fn find_slot(ctx: &Pkcs11, uri: &Pkcs11Uri, module: &Path) -> Result<Slot, ProviderError> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| p11_err(format!("listing the slots of {}", module.display()), e))?;
    let mut seen = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let label = info.label().trim_end().to_string();
        let ok = label == uri.token
            && uri
                .manufacturer
                .as_deref()
                .is_none_or(|m| info.manufacturer_id().trim_end() == m)
            && uri
                .model
                .as_deref()
                .is_none_or(|m| info.model().trim_end() == m)
            && uri
                .serial
                .as_deref()
                .is_none_or(|m| info.serial_number().trim_end() == m);
        if ok {
            return Ok(slot);
        }
        seen.push(format!("'{label}'"));
    }
    Err(refused(
        ErrorCode::NotInitialized,
        format!(
            "no token labelled '{}' in PKCS#11 module {} (tokens present: {})",
            uri.token,
            module.display(),
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        ),
    ))
}

/// docs/pkcs11.md §Protection: p11-kit's client module → the token lives in
/// the p11-kit server's process; SoftHSM (or any module whose slot is not a
/// hardware slot) → in this process; a hardware slot → hardware.
fn protection_of(ctx: &Pkcs11, slot: Slot, module: &Path) -> Protection {
    let name = module
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.contains("p11-kit-client") {
        return Protection::SeparateProcess;
    }
    let softhsm = ctx
        .get_token_info(slot)
        .map(|t| t.manufacturer_id().starts_with("SoftHSM") || t.model().starts_with("SoftHSM"))
        .unwrap_or(false);
    let hw = ctx
        .get_slot_info(slot)
        .map(|s| s.hardware_slot())
        .unwrap_or(false);
    if !softhsm && hw {
        Protection::Hardware
    } else {
        Protection::InProcess
    }
}

impl KeyProvider for Pkcs11Provider {
    fn name(&self) -> &str {
        PKCS11
    }

    fn protection(&self) -> Protection {
        self.inner.protection
    }

    fn generate(&self, spec: &KeySpec) -> Result<Wkb, ProviderError> {
        if spec.algorithm != KeyAlgorithm::Aes256Xts {
            return Err(refused(ErrorCode::Unsupported, "only aes-256-xts keys"));
        }
        if self.holds_keys()? {
            return self.store_held(None);
        }
        let s = self.main()?;
        let kek = self.current_kek(&s)?;
        let mut t = half_template(true, true);
        t.push(Attribute::ValueLen(32.into()));
        let gen = || {
            s.generate_key(&Mechanism::AesKeyGen, &t)
                .map(|h| Temp { s: &s, h })
                .map_err(|e| p11_err("generating a volume key half in the token", e))
        };
        let (a, b) = (gen()?, gen()?);
        self.wrap_halves(&s, &kek, [a.h, b.h])
    }

    fn import(&self, clear: &SecretBytes, spec: &KeySpec) -> Result<Wkb, ProviderError> {
        if spec.algorithm != KeyAlgorithm::Aes256Xts {
            return Err(refused(ErrorCode::Unsupported, "only aes-256-xts keys"));
        }
        check_clear(clear)?;
        if self.holds_keys()? {
            return self.store_held(Some(clear));
        }
        let s = self.main()?;
        let kek = self.current_kek(&s)?;
        let [a, b] = create_halves(&s, clear, true)?;
        let (a, b) = (Temp { s: &s, h: a }, Temp { s: &s, h: b });
        self.wrap_halves(&s, &kek, [a.h, b.h])
    }

    fn validate(&self, wkb: &Wkb) -> Result<KeyStatus, ProviderError> {
        self.check_blob(wkb)?;
        if wkb.mechanism() == WkbMechanism::Pkcs11TokenHeld {
            return self.validate_held(wkb);
        }
        let s = self.main()?;
        let id = wkb.wrapping_key();
        let status = |state, register| {
            KeyStatus::new(state, register, id.to_string(), self.inner.protection)
        };
        let Some(kek) = self.kek_for(&s, id)? else {
            return Ok(status(
                KeyState::Invalid(self.missing_kek(id).to_string()),
                None,
            ));
        };
        // The key is there; prove that the blob unwraps under it.
        match self.unwrap_halves(&s, &kek, wkb, false) {
            Ok([a, b]) => {
                let _ = (Temp { s: &s, h: a }, Temp { s: &s, h: b });
            }
            Err(e) => return Ok(status(KeyState::Invalid(e.to_string()), None)),
        }
        Ok(match self.register_of(&kek) {
            Some(Register::Current) => status(KeyState::Current, Some(Register::Current)),
            Some(Register::New) => status(KeyState::New, Some(Register::New)),
            Some(Register::Old) => status(KeyState::Old, Some(Register::Old)),
            // Present under another label: usable, but not this URI's key.
            _ => status(KeyState::NeedsRewrap, None),
        })
    }

    fn verification_pattern(&self, wkb: &Wkb) -> Result<String, ProviderError> {
        let x = self.token_xts(wkb, 32)?;
        let mut buf = [0u8; 32];
        x.run(0, &mut buf, true)
            .map_err(|e| refused(ErrorCode::Internal, e.to_string()))?;
        Ok(hex::encode(buf))
    }

    fn rewrap(&self, wkb: &Wkb, direction: RewrapDirection) -> Result<Wkb, ProviderError> {
        self.check_blob(wkb)?;
        if wkb.mechanism() == WkbMechanism::Pkcs11TokenHeld {
            return Err(refused(
                ErrorCode::Unsupported,
                format!(
                    "token-held key id:{} is not wrapped under any wrapping key, so there is nothing to re-wrap (it never leaves token '{}'; docs/pkcs11.md §3)",
                    hex::encode(held_id(wkb)),
                    self.inner.uri.token
                ),
            ));
        }
        let s = self.main()?;
        let from = self.blob_kek(&s, wkb)?;
        let u = &self.inner.uri;
        let to = match direction {
            RewrapDirection::ToNew => self.single_kek(&s, &u.new_label(), None)?.ok_or_else(|| {
                refused(
                    ErrorCode::EmptyRegister,
                    format!(
                        "token '{}' has no wrapping key labelled '{}' to re-wrap to; create it first",
                        u.token,
                        u.new_label()
                    ),
                )
            })?,
            RewrapDirection::FromOld => {
                let cur = self.current_kek(&s)?;
                if cur.identity == from.identity {
                    return Err(refused(
                        ErrorCode::InvalidArgument,
                        format!("the blob is already wrapped under the current key {}", cur.identity),
                    ));
                }
                cur
            }
        };
        let [a, b] = self.unwrap_halves(&s, &from, wkb, true)?;
        let (a, b) = (Temp { s: &s, h: a }, Temp { s: &s, h: b });
        self.wrap_halves(&s, &to, [a.h, b.h])
    }

    fn open_cipher(
        &self,
        wkb: &Wkb,
        sector_size: usize,
    ) -> Result<Arc<dyn SectorCipher>, ProviderError> {
        check_sector_size(sector_size)?;
        Ok(Arc::new(self.token_xts(wkb, sector_size)?))
    }

    fn discard(&self, wkb: &Wkb) -> Result<(), ProviderError> {
        if wkb.mechanism() == WkbMechanism::Pkcs11TokenHeld {
            self.destroy_token_held_key(wkb)?;
        }
        Ok(())
    }
}
