//! Master-key registers (NEW / CURRENT / OLD) and the volume-key wrap.

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use wrapcrypt_provider::{
    ErrorCode, KeySpec, KeyState, KeyStatus, Mechanism, Protection, ProviderError, Register,
    RegisterStatus, Wkb, WrappingKeyId, CUSTODIAN,
};
use wrapcrypt_secret::SecretBytes;

/// Master keys are AES-256 keys.
pub const MASTER_KEY_LEN: usize = 32;
/// Bytes of a master-key verification pattern.
pub const MKVP_LEN: usize = 16;
const MKVP_LABEL: &[u8] = b"wrapcrypt custodian master key verification pattern v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// One master key with its verification pattern.
pub struct MasterKey {
    key: SecretBytes,
    mkvp: [u8; MKVP_LEN],
}

impl MasterKey {
    /// A fresh random master key.
    pub fn random() -> std::io::Result<MasterKey> {
        Ok(MasterKey::from_secret(SecretBytes::random(MASTER_KEY_LEN)?))
    }

    /// Wraps key bytes (from the sealed state) as a master key.
    pub fn from_secret(key: SecretBytes) -> MasterKey {
        // The MKVP is a keyed hash: it identifies the key without helping
        // anyone compute it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret())
            .expect("HMAC takes any key length");
        mac.update(MKVP_LABEL);
        let full = mac.finalize().into_bytes();
        let mut mkvp = [0u8; MKVP_LEN];
        mkvp.copy_from_slice(&full[..MKVP_LEN]);
        MasterKey { key, mkvp }
    }

    /// The verification pattern bytes.
    pub fn mkvp(&self) -> &[u8; MKVP_LEN] {
        &self.mkvp
    }

    /// The key bytes, for sealing at rest.
    pub fn expose_secret(&self) -> &[u8] {
        self.key.expose_secret()
    }

    fn aead(&self) -> Aes256GcmSiv {
        Aes256GcmSiv::new_from_slice(self.key.expose_secret()).expect("32-byte key")
    }

    /// Wraps `clear` under this master key with the blob's attributes as AAD.
    pub fn wrap(&self, spec: &KeySpec, clear: &SecretBytes) -> Result<Wkb, ProviderError> {
        let n = clear.len();
        let mut payload = SecretBytes::zeroed(NONCE_LEN + n + TAG_LEN);
        // The attributes do not depend on the payload, so a placeholder blob
        // yields the AAD.
        let attrs = Wkb::new(
            CUSTODIAN,
            spec.algorithm,
            Mechanism::AesGcmSiv256,
            WrappingKeyId::MasterKeyVp(self.mkvp.to_vec()),
            SecretBytes::zeroed(payload.len()),
        )?
        .attributes();
        {
            let p = payload.expose_secret_mut();
            wrapcrypt_secret::fill_random(&mut p[..NONCE_LEN])?;
            let (nonce, rest) = p.split_at_mut(NONCE_LEN);
            let (body, tag) = rest.split_at_mut(n);
            body.copy_from_slice(clear.expose_secret());
            let t = self
                .aead()
                .encrypt_in_place_detached(Nonce::from_slice(nonce), &attrs, body)
                .map_err(|_| internal("AES-GCM-SIV encryption failed"))?;
            tag.copy_from_slice(&t);
        }
        Ok(Wkb::new(
            CUSTODIAN,
            spec.algorithm,
            Mechanism::AesGcmSiv256,
            WrappingKeyId::MasterKeyVp(self.mkvp.to_vec()),
            payload,
        )?)
    }

    /// Unwraps a blob made by [`MasterKey::wrap`] under this key.
    pub fn unwrap(&self, wkb: &Wkb) -> Result<SecretBytes, ProviderError> {
        let p = wkb.expose_payload();
        let n = wkb.algorithm().key_len();
        if wkb.mechanism() != Mechanism::AesGcmSiv256 || p.len() != NONCE_LEN + n + TAG_LEN {
            return Err(ProviderError::refused(
                CUSTODIAN,
                ErrorCode::BadWkb,
                "the custodian wraps with AES-256-GCM-SIV; this blob uses another mechanism or length",
            ));
        }
        let mut clear = SecretBytes::copy_from(&p[NONCE_LEN..NONCE_LEN + n]);
        self.aead()
            .decrypt_in_place_detached(
                Nonce::from_slice(&p[..NONCE_LEN]),
                &wkb.attributes(),
                clear.expose_secret_mut(),
                Tag::from_slice(&p[NONCE_LEN + n..]),
            )
            .map_err(|_| {
                ProviderError::refused(
                    CUSTODIAN,
                    ErrorCode::IntegrityFailure,
                    "the wrapped key fails authentication: the blob or its attributes were altered",
                )
            })?;
        Ok(clear)
    }
}

pub(crate) fn internal(msg: &str) -> ProviderError {
    ProviderError::refused(CUSTODIAN, ErrorCode::Internal, msg)
}

/// A register whose master key is a key-manager object: its KMIP Unique
/// Identifier and the MKVP of the key it held when loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmipRef {
    /// KMIP Unique Identifier.
    pub id: String,
    /// MKVP of the key (known even while the key is not loaded).
    pub mkvp: [u8; MKVP_LEN],
}

/// The three registers, like a CCA coprocessor's.
#[derive(Default)]
pub struct Registers {
    /// Loaded, not yet in use.
    pub new: Option<MasterKey>,
    /// Wraps new keys.
    pub current: Option<MasterKey>,
    /// The previous CURRENT.
    pub old: Option<MasterKey>,
    /// Key-manager backing of NEW, CURRENT, OLD (index [`slot`]); a
    /// register may be backed while its key is not loaded (no TPM copy,
    /// key manager unreachable since the start).
    pub kmip: [Option<KmipRef>; 3],
}

/// Index of a register in [`Registers::kmip`].
pub fn slot(r: Register) -> usize {
    match r {
        Register::New => 0,
        Register::Current => 1,
        Register::Old => 2,
    }
}

/// The registers in slot order.
pub const SLOTS: [Register; 3] = [Register::New, Register::Current, Register::Old];

const STATE_MAGIC: &[u8; 4] = b"WCMR";
/// Version 1: three fixed slots of keys; written while no register is
/// KMIP-backed, so an older daemon still reads the state.
const STATE_VERSION: u16 = 1;
/// Version 2: per slot flags, optional key, optional KMIP reference.
const STATE_VERSION_KMIP: u16 = 2;
/// Length of the serialised registers (version 1).
pub const STATE_LEN: usize = 6 + 3 * (1 + MASTER_KEY_LEN);
const HAS_KEY: u8 = 1;
const HAS_KMIP: u8 = 2;

impl Registers {
    /// The key in register `r`.
    pub fn key(&self, r: Register) -> &Option<MasterKey> {
        match r {
            Register::New => &self.new,
            Register::Current => &self.current,
            Register::Old => &self.old,
        }
    }

    /// The key in register `r`, mutable.
    pub fn key_mut(&mut self, r: Register) -> &mut Option<MasterKey> {
        match r {
            Register::New => &mut self.new,
            Register::Current => &mut self.current,
            Register::Old => &mut self.old,
        }
    }

    /// The MKVP of register `r`: of its key, else of its KMIP reference.
    pub fn mkvp(&self, r: Register) -> Option<[u8; MKVP_LEN]> {
        self.key(r)
            .as_ref()
            .map(|k| *k.mkvp())
            .or_else(|| self.kmip[slot(r)].as_ref().map(|k| k.mkvp))
    }

    /// The register holding a master key with this MKVP.
    pub fn find(&self, mkvp: &[u8]) -> Option<(Register, &MasterKey)> {
        [
            (Register::Current, &self.current),
            (Register::New, &self.new),
            (Register::Old, &self.old),
        ]
        .into_iter()
        .find_map(|(r, k)| k.as_ref().filter(|k| k.mkvp()[..] == *mkvp).map(|k| (r, k)))
    }

    /// Status of each register (NEW, CURRENT, OLD).
    pub fn status(&self) -> Vec<RegisterStatus> {
        [
            (Register::New, &self.new),
            (Register::Current, &self.current),
            (Register::Old, &self.old),
        ]
        .into_iter()
        .map(|(r, _)| RegisterStatus::new(r, self.mkvp(r).map(hex::encode)))
        .collect()
    }

    /// The master key a blob names, with its register, or a clear refusal.
    pub fn key_for(&self, wkb: &Wkb) -> Result<(Register, &MasterKey), ProviderError> {
        let mkvp = mkvp_of(wkb)?;
        self.find(mkvp).ok_or_else(|| {
            ProviderError::refused(
                CUSTODIAN,
                ErrorCode::UnknownWrappingKey,
                self.unknown_reason(mkvp),
            )
        })
    }

    fn unknown_reason(&self, mkvp: &[u8]) -> String {
        format!(
            "the key is wrapped under master key {} which is in no register of this custodian \
             (NEW {}, CURRENT {}, OLD {}); it was retired by a later master-key change and the \
             key cannot be recovered from this blob: use a blob re-wrapped before that change",
            hex::encode(mkvp),
            show(&self.new),
            show(&self.current),
            show(&self.old)
        )
    }

    /// What `validate` reports for a blob.
    pub fn validate(&self, wkb: &Wkb) -> Result<KeyStatus, ProviderError> {
        let mkvp = mkvp_of(wkb)?;
        let ident = wkb.wrapping_key().to_string();
        let prot = Protection::SeparateProcess;
        let Some((reg, mk)) = self.find(mkvp) else {
            let why = self.unknown_reason(mkvp);
            return Ok(KeyStatus::new(KeyState::Invalid(why), None, ident, prot));
        };
        if let Err(e) = mk.unwrap(wkb) {
            return Ok(KeyStatus::new(
                KeyState::Invalid(e.to_string()),
                Some(reg),
                ident,
                prot,
            ));
        }
        let state = match reg {
            Register::Current => KeyState::Current,
            Register::New => KeyState::New,
            Register::Old => KeyState::Old,
        };
        Ok(KeyStatus::new(state, Some(reg), ident, prot))
    }

    /// Serialises the registers (plaintext; sealed by the caller). With
    /// `omit_kmip_keys`, the key bytes of KMIP-backed registers are left
    /// out (only their id and MKVP are kept): without a TPM they live in
    /// locked memory only and are fetched again after a restart.
    pub fn to_secret(&self, omit_kmip_keys: bool) -> SecretBytes {
        if self.kmip.iter().all(Option::is_none) {
            return self.to_secret_v1();
        }
        let mut len = 6;
        for (i, r) in SLOTS.into_iter().enumerate() {
            len += 1;
            if self.key(r).is_some() && !(omit_kmip_keys && self.kmip[i].is_some()) {
                len += MASTER_KEY_LEN;
            }
            if let Some(k) = &self.kmip[i] {
                len += MKVP_LEN + 2 + k.id.len();
            }
        }
        let mut s = SecretBytes::zeroed(len);
        let b = s.expose_secret_mut();
        b[..4].copy_from_slice(STATE_MAGIC);
        b[4..6].copy_from_slice(&STATE_VERSION_KMIP.to_be_bytes());
        let mut off = 6;
        for (i, r) in SLOTS.into_iter().enumerate() {
            let key = self
                .key(r)
                .as_ref()
                .filter(|_| !(omit_kmip_keys && self.kmip[i].is_some()));
            let flags_at = off;
            off += 1;
            let mut flags = 0;
            if let Some(k) = key {
                flags |= HAS_KEY;
                b[off..off + MASTER_KEY_LEN].copy_from_slice(k.expose_secret());
                off += MASTER_KEY_LEN;
            }
            if let Some(k) = &self.kmip[i] {
                flags |= HAS_KMIP;
                b[off..off + MKVP_LEN].copy_from_slice(&k.mkvp);
                off += MKVP_LEN;
                b[off..off + 2].copy_from_slice(&(k.id.len() as u16).to_be_bytes());
                off += 2;
                b[off..off + k.id.len()].copy_from_slice(k.id.as_bytes());
                off += k.id.len();
            }
            b[flags_at] = flags;
        }
        s
    }

    fn to_secret_v1(&self) -> SecretBytes {
        let mut s = SecretBytes::zeroed(STATE_LEN);
        let b = s.expose_secret_mut();
        b[..4].copy_from_slice(STATE_MAGIC);
        b[4..6].copy_from_slice(&STATE_VERSION.to_be_bytes());
        for (i, k) in [&self.new, &self.current, &self.old]
            .into_iter()
            .enumerate()
        {
            let off = 6 + i * (1 + MASTER_KEY_LEN);
            if let Some(k) = k {
                b[off] = 1;
                b[off + 1..off + 1 + MASTER_KEY_LEN].copy_from_slice(k.expose_secret());
            }
        }
        s
    }

    /// Parses what [`Registers::to_secret`] wrote.
    pub fn from_secret(s: &SecretBytes) -> Option<Registers> {
        let b = s.expose_secret();
        if b.len() >= 6 && &b[..4] == STATE_MAGIC && b[4..6] == STATE_VERSION_KMIP.to_be_bytes() {
            return Self::from_v2(&b[6..]);
        }
        if b.len() != STATE_LEN || &b[..4] != STATE_MAGIC || b[4..6] != STATE_VERSION.to_be_bytes()
        {
            return None;
        }
        let slot = |i: usize| -> Option<Option<MasterKey>> {
            let off = 6 + i * (1 + MASTER_KEY_LEN);
            match b[off] {
                0 => Some(None),
                1 => Some(Some(MasterKey::from_secret(SecretBytes::copy_from(
                    &b[off + 1..off + 1 + MASTER_KEY_LEN],
                )))),
                _ => None,
            }
        };
        Some(Registers {
            new: slot(0)?,
            current: slot(1)?,
            old: slot(2)?,
            kmip: Default::default(),
        })
    }

    fn from_v2(mut b: &[u8]) -> Option<Registers> {
        let mut take = |n: usize| -> Option<&[u8]> {
            let (a, rest) = (b.get(..n)?, b.get(n..)?);
            b = rest;
            Some(a)
        };
        let mut r = Registers::default();
        for (i, reg) in SLOTS.into_iter().enumerate() {
            let flags = take(1)?[0];
            if flags & !(HAS_KEY | HAS_KMIP) != 0 {
                return None;
            }
            if flags & HAS_KEY != 0 {
                *r.key_mut(reg) = Some(MasterKey::from_secret(SecretBytes::copy_from(take(
                    MASTER_KEY_LEN,
                )?)));
            }
            if flags & HAS_KMIP != 0 {
                let mkvp: [u8; MKVP_LEN] = take(MKVP_LEN)?.try_into().ok()?;
                let n = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
                let id = String::from_utf8(take(n)?.to_vec()).ok()?;
                // A sealed key must be the one the reference names.
                if r.key(reg).as_ref().is_some_and(|k| *k.mkvp() != mkvp) {
                    return None;
                }
                r.kmip[i] = Some(KmipRef { id, mkvp });
            }
        }
        b.is_empty().then_some(r)
    }
}

fn show(k: &Option<MasterKey>) -> String {
    k.as_ref()
        .map_or_else(|| "empty".into(), |k| hex::encode(k.mkvp))
}

pub fn mkvp_of(wkb: &Wkb) -> Result<&[u8], ProviderError> {
    if wkb.provider() != CUSTODIAN {
        return Err(ProviderError::WrongProvider {
            expected: CUSTODIAN.into(),
            found: wkb.provider().into(),
        });
    }
    match wkb.wrapping_key() {
        WrappingKeyId::MasterKeyVp(v) if v.len() == MKVP_LEN => Ok(v),
        other => Err(ProviderError::refused(
            CUSTODIAN,
            ErrorCode::BadWkb,
            format!("a custodian blob names a master-key VP, not {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(byte: u8) -> MasterKey {
        MasterKey::from_secret(SecretBytes::copy_from(&[byte; 32]))
    }

    /// MKVP vector: HMAC-SHA256(key = 32 × 0x00, label)[..16], as
    /// `python3 -c "import hmac,hashlib;print(hmac.new(bytes(32),b'wrapcrypt custodian master key verification pattern v1',hashlib.sha256).hexdigest()[:32])"` prints.
    #[test]
    fn mkvp_vector() {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import hmac,hashlib;print(hmac.new(bytes(32),b'wrapcrypt custodian master key verification pattern v1',hashlib.sha256).hexdigest()[:32],end='')",
            ])
            .output()
            .unwrap();
        assert_eq!(
            hex::encode(mk(0).mkvp()),
            String::from_utf8(out.stdout).unwrap()
        );
    }

    #[test]
    fn wrap_binds_attributes() {
        let k = mk(1);
        let clear = SecretBytes::copy_from(&[0x5a; 64]);
        let w = k.wrap(&KeySpec::aes_256_xts(), &clear).unwrap();
        assert_eq!(w.encode().len(), 256);
        assert_eq!(k.unwrap(&w).unwrap().expose_secret(), clear.expose_secret());
        assert!(!w.encode().windows(8).any(|x| x == [0x5a; 8]));
        // Same payload under another master key's identity: refused.
        let other = mk(2);
        assert!(other.unwrap(&w).is_err());
        // Flip one payload bit and fix the checksum: authentication fails.
        let mut e = w.encode();
        e[120] ^= 1;
        let fixed = Wkb::new(
            CUSTODIAN,
            w.algorithm(),
            w.mechanism(),
            w.wrapping_key().clone(),
            SecretBytes::copy_from(&e[104..104 + 92]),
        )
        .unwrap();
        let err = k.unwrap(&fixed).unwrap_err();
        assert_eq!(err.code(), ErrorCode::IntegrityFailure);
    }

    #[test]
    fn registers_serialise() {
        let mut r = Registers {
            new: None,
            current: Some(mk(3)),
            old: Some(mk(4)),
            kmip: Default::default(),
        };
        let v1 = r.to_secret(true);
        assert_eq!(v1.len(), STATE_LEN);
        let back = Registers::from_secret(&v1).unwrap();
        assert!(back.new.is_none());
        assert_eq!(back.current.unwrap().mkvp(), mk(3).mkvp());
        assert_eq!(back.old.unwrap().mkvp(), mk(4).mkvp());
        // KMIP-backed CURRENT: with omit, only id and MKVP are kept.
        r.kmip[1] = Some(KmipRef {
            id: "17".into(),
            mkvp: *mk(3).mkvp(),
        });
        let kept = Registers::from_secret(&r.to_secret(false)).unwrap();
        assert_eq!(kept.current.unwrap().mkvp(), mk(3).mkvp());
        assert_eq!(kept.kmip[1].as_ref().unwrap().id, "17");
        let omitted = r.to_secret(true);
        assert!(!omitted.expose_secret().windows(32).any(|w| w == [3u8; 32]));
        let back = Registers::from_secret(&omitted).unwrap();
        assert!(back.current.is_none());
        assert_eq!(back.mkvp(Register::Current), Some(*mk(3).mkvp()));
        assert_eq!(back.old.unwrap().mkvp(), mk(4).mkvp());
        // A reference that names another key than the sealed one: refused.
        r.kmip[1].as_mut().unwrap().mkvp = *mk(9).mkvp();
        assert!(Registers::from_secret(&r.to_secret(false)).is_none());
    }
}
