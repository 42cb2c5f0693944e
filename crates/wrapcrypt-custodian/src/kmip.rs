//! The key-manager backend of the master keys: Create + Activate + Get of
//! AES-256 keys in a KMIP server, Get of an existing object by id, and the
//! objects' states for `status`. One short TLS session per operation.

use wrapcrypt_kmip::ops::attr;
use wrapcrypt_kmip::{KeySpec, KmipClient, KmipError, State};
use wrapcrypt_secret::SecretBytes;

use crate::registers::MASTER_KEY_LEN;
use wrapcrypt_kmip::KmipConfig;

/// What the key manager says about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectState {
    /// The object's KMIP State.
    Known(State),
    /// The server answered, but not with the object (Item Not Found,
    /// Permission Denied): the line it gave.
    Gone(String),
}

impl ObjectState {
    /// Whether new keys may be wrapped under the object (KMIP: only an
    /// Active key protects; a Pre-Active one staged by a coordinator is
    /// allowed too, since it becomes Active when the group switches to it).
    pub fn may_wrap(&self) -> bool {
        matches!(self, ObjectState::Known(State::Active | State::PreActive))
    }

    /// Text for `status`.
    pub fn text(&self) -> String {
        match self {
            ObjectState::Known(s) => s.to_string(),
            ObjectState::Gone(_) => "unknown".into(),
        }
    }
}

/// Whether a client error means "could not ask" (transport) rather than an
/// answer about the object.
pub fn is_unreachable(e: &KmipError) -> bool {
    !matches!(
        e,
        KmipError::Operation { .. } | KmipError::WrongObject { .. }
    )
}

/// A configured key manager.
pub struct KmipBackend {
    cfg: KmipConfig,
}

impl KmipBackend {
    /// A backend over a parsed configuration.
    pub fn new(cfg: KmipConfig) -> KmipBackend {
        KmipBackend { cfg }
    }

    /// `kmip HOST:PORT group G`, for `status`.
    pub fn describe(&self) -> String {
        format!(
            "kmip {}:{} group {}",
            self.cfg.client.host, self.cfg.client.port, self.cfg.group
        )
    }

    /// A new TLS session.
    pub fn connect(&self) -> Result<KmipClient, KmipError> {
        KmipClient::connect(&self.cfg.client)
    }

    /// Creates an AES-256 key (Name, Object Group, wrap/unwrap/encrypt/
    /// decrypt), activates it and gets its bytes into locked memory.
    pub fn create(&self) -> Result<(String, SecretBytes), KmipError> {
        let mut c = self.connect()?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut rnd = [0u8; 4];
        // A name collision only costs clarity; the id is what counts.
        let _ = wrapcrypt_secret::fill_random(&mut rnd);
        let name = format!(
            "{}-{}-{secs}-{}",
            self.cfg.prefix,
            self.cfg.group,
            hex::encode(rnd)
        );
        let id = c.create(&KeySpec::aes256_kek(&name, &[&self.cfg.group]))?;
        c.activate(&id)?;
        let key = c.get_symmetric_key(&id, MASTER_KEY_LEN)?;
        Ok((id, key))
    }

    /// Gets an existing AES-256 key by id (type, algorithm, format and
    /// length checked by the client).
    pub fn get(c: &mut KmipClient, id: &str) -> Result<SecretBytes, KmipError> {
        c.get_symmetric_key(id, MASTER_KEY_LEN)
    }

    /// The object's state, or the server's answer about it. `Err` only when
    /// the server could not be asked.
    pub fn state(c: &mut KmipClient, id: &str) -> Result<ObjectState, KmipError> {
        match c.get_attributes(id, &[attr::STATE]) {
            Ok(a) => Ok(match a.state() {
                Some(s) => ObjectState::Known(s),
                None => ObjectState::Gone(format!("KMIP object {id} has no State attribute")),
            }),
            Err(e) if !is_unreachable(&e) => Ok(ObjectState::Gone(e.to_string())),
            Err(e) => Err(e),
        }
    }
}

/// What the daemon last learnt from the key manager (no key material).
#[derive(Default)]
pub struct KmipSeen {
    /// Last known state of each object, by id.
    pub states: std::collections::HashMap<String, ObjectState>,
    /// Why the last attempt to reach the key manager failed; empty if it answered.
    pub unreachable: String,
    /// Why a register's key could not be fetched, by object id.
    pub load_errors: std::collections::HashMap<String, String>,
}
