//! Re-wrap of a wrapped volume key without re-encrypting data (DESIGN.md
//! §2; the write sequences and why each crash point is safe are in
//! `docs/reencipher.md`).
//!
//! The states are types that consume each other, and each one is
//! recoverable from what is on disk:
//!
//! * idle: no `waes-reencipher` token; the segment's digest certifies the
//!   old blob ([`recover`] returns [`OnDisk::Idle`]);
//! * [`Staged`]: the new blob sits in unbound keyslots (same passphrases)
//!   under its own digest, and a `waes-reencipher` token records the pairs;
//! * [`Completed`]: the new blob's digest is the segment's, the old
//!   keyslots and the token are gone.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use wrapcrypt_format::keyslot_crypto;
use wrapcrypt_format::luks2::{Digest, KeyslotKdf, Luks2Header, Token, KEYSLOTS_MAX, TOKENS_MAX};
use wrapcrypt_provider::{KeyProvider, ProviderError, Wkb, WkbError};
use wrapcrypt_secret::SecretBytes;

use crate::luks2ops::seal_keyslot;
use crate::{PbkdfOptions, Unlocked, Volume, VolumeError};

/// Token type of a staged re-wrap.
pub const REENCIPHER_TOKEN: &str = "waes-reencipher";
/// Token type of the verification pattern of a `waes` volume.
pub const VP_TOKEN: &str = "waes-verification-pattern";
/// Token type naming a wrapped volume's provider.
pub const PROVIDER_TOKEN: &str = "waes-provider";
/// The same for IBM `paes` volumes (zkey).
pub const PAES_VP_TOKEN: &str = "paes-verification-pattern";

/// Errors of re-wrap, setkey and convert.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RewrapError {
    /// A volume operation failed.
    #[error("{0}")]
    Volume(#[from] VolumeError),
    /// The key provider refused or failed.
    #[error("key provider: {0}")]
    Provider(#[from] ProviderError),
    /// A stored or given blob is not a wrapped-key blob.
    #[error("not a wrapped-key blob: {0}")]
    Wkb(#[from] WkbError),
    /// The segment cipher is not the one this operation needs.
    #[error("segment cipher is {found}; this operation needs {want}")]
    WrongCipher {
        /// the segment's cipher
        found: String,
        /// what the operation needs
        want: &'static str,
    },
    /// A re-wrap is staged already.
    #[error("a re-encipher is already staged (keyslot {original} -> unbound keyslot {unbound}); complete it first")]
    AlreadyStaged {
        /// keyslot whose blob was re-wrapped
        original: u32,
        /// unbound keyslot holding the new blob
        unbound: u32,
    },
    /// `complete` without a staged re-wrap.
    #[error("no re-encipher is staged on this volume")]
    NotStaged,
    /// The `waes-reencipher` token does not describe the header.
    #[error("waes-reencipher token {id} is damaged: {why}")]
    BadToken {
        /// token id
        id: u32,
        /// what is wrong
        why: String,
    },
    /// Two verification patterns differ.
    #[error("verification pattern mismatch: expected {expected}, the provider computes {got} for the new key")]
    VpMismatch {
        /// the pattern the volume (or the staged token) records
        expected: String,
        /// the pattern of the new blob
        got: String,
    },
    /// The volume records no verification pattern to compare with.
    #[error("the volume has no waes-verification-pattern token; run setvp first")]
    NoStoredVp,
    /// A key does not match the digest it should.
    #[error("keyslot {0} does not hold this volume's key")]
    NotVolumeKey(u32),
    /// The passphrase opens none of the staged keyslots.
    #[error("the passphrase opens none of the staged keyslots {0:?}")]
    NoStagedKeyslot(Vec<u32>),
    /// Keyslots still bound to the old key have no re-wrapped copy.
    #[error("keyslots {0:?} hold the old key and were not re-wrapped (their passphrases were not given); they would be removed")]
    UnstagedKeyslots(Vec<u32>),
    /// The provider says the new blob cannot be used.
    #[error("the new wrapped key is not usable: {0}")]
    Unusable(String),
    /// Nothing to do (e.g. no keyslot given).
    #[error("{0}")]
    Param(String),
}

/// What a `waes-reencipher` token records (docs/tokens.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReencipherToken {
    /// Token id in the header.
    pub id: u32,
    /// Verification pattern of the staged blob (64 hex).
    pub vp: String,
    /// Keyslot whose passphrase staged the re-wrap.
    pub original: u32,
    /// Unbound keyslot holding the new blob under the same passphrase.
    pub unbound: u32,
    /// Further (original, unbound) pairs when more keyslots were re-wrapped.
    pub more: Vec<(u32, u32)>,
}

fn id_str(v: &Value) -> Option<u32> {
    v.as_str()?.parse().ok()
}

impl ReencipherToken {
    /// The staged re-wrap recorded in `h`, if any.
    pub fn find(h: &Luks2Header) -> Result<Option<ReencipherToken>, RewrapError> {
        let Some((&id, t)) = h
            .meta
            .tokens
            .iter()
            .find(|(_, t)| t.kind == REENCIPHER_TOKEN)
        else {
            return Ok(None);
        };
        let bad = |why: &str| RewrapError::BadToken {
            id,
            why: why.into(),
        };
        let vp = t
            .json
            .get("verification-pattern")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no verification-pattern"))?
            .to_string();
        let original = t
            .json
            .get("original-keyslot")
            .and_then(id_str)
            .ok_or_else(|| bad("no original-keyslot"))?;
        let unbound = t
            .json
            .get("unbound-keyslot")
            .and_then(id_str)
            .ok_or_else(|| bad("no unbound-keyslot"))?;
        let mut more = vec![];
        if let Some(v) = t.json.get("more-keyslots") {
            for p in v
                .as_array()
                .ok_or_else(|| bad("more-keyslots is not an array"))?
            {
                let pair = p
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .and_then(|a| Some((id_str(&a[0])?, id_str(&a[1])?)))
                    .ok_or_else(|| bad("more-keyslots entry is not a pair of keyslot ids"))?;
                more.push(pair);
            }
        }
        Ok(Some(ReencipherToken {
            id,
            vp,
            original,
            unbound,
            more,
        }))
    }

    /// All (original, unbound) pairs, the first one first.
    pub fn pairs(&self) -> Vec<(u32, u32)> {
        let mut v = vec![(self.original, self.unbound)];
        v.extend(self.more.iter().copied());
        v
    }

    /// The unbound keyslots holding the new blob.
    pub fn unbound_keyslots(&self) -> Vec<u32> {
        self.pairs().into_iter().map(|p| p.1).collect()
    }

    fn to_token(&self) -> Result<Token, RewrapError> {
        let mut v = json!({
            "type": REENCIPHER_TOKEN,
            "keyslots": [],
            "verification-pattern": self.vp,
            "original-keyslot": self.original.to_string(),
            "unbound-keyslot": self.unbound.to_string(),
        });
        if !self.more.is_empty() {
            v["more-keyslots"] = self
                .more
                .iter()
                .map(|(o, u)| json!([o.to_string(), u.to_string()]))
                .collect();
        }
        Ok(Token::from_json(self.id, &v).map_err(VolumeError::from)?)
    }

    /// Checks the token against the header it came from.
    fn check(&self, h: &Luks2Header) -> Result<u32, RewrapError> {
        let bad = |why: String| RewrapError::BadToken { id: self.id, why };
        let unbound = self.unbound_keyslots();
        let did = h.meta.digest_of_keyslot(self.unbound).ok_or_else(|| {
            bad(format!(
                "unbound keyslot {} is not in the header",
                self.unbound
            ))
        })?;
        for &u in &unbound {
            if h.meta.digest_of_keyslot(u) != Some(did) {
                return Err(bad(format!("keyslot {u} is not a staged keyslot")));
            }
        }
        if !h.meta.digests[&did].segments.is_empty() {
            return Err(bad(format!(
                "keyslot {} is bound to a segment",
                self.unbound
            )));
        }
        Ok(did)
    }
}

/// The verification pattern stored in the header, if any.
pub fn stored_vp(h: &Luks2Header) -> Option<String> {
    h.meta
        .tokens
        .values()
        .find(|t| t.kind == VP_TOKEN || t.kind == PAES_VP_TOKEN)
        .and_then(|t| t.json.get("verification-pattern"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Sets (or adds) the `waes-verification-pattern` token of `h`.
pub fn set_vp_token(h: &mut Luks2Header, vp: &str) -> Result<(), RewrapError> {
    if let Some(t) = h.meta.tokens.values_mut().find(|t| t.kind == VP_TOKEN) {
        t.json.insert("verification-pattern".into(), vp.into());
        return Ok(());
    }
    let id = free_token_id(h)?;
    let v = json!({"type": VP_TOKEN, "keyslots": [], "verification-pattern": vp});
    h.meta
        .tokens
        .insert(id, Token::from_json(id, &v).map_err(VolumeError::from)?);
    Ok(())
}

pub(crate) fn free_token_id(h: &Luks2Header) -> Result<u32, RewrapError> {
    (0..TOKENS_MAX)
        .find(|i| !h.meta.tokens.contains_key(i))
        .ok_or_else(|| RewrapError::Param("no free token id".into()))
}

/// The segment's cipher and the id of the digest that certifies its key.
pub(crate) fn segment_digest(h: &Luks2Header) -> Result<(u32, String, u32), RewrapError> {
    let seg = h
        .meta
        .crypt_segment_id()
        .ok_or_else(|| VolumeError::Unsupported("volume has no crypt segment".into()))?;
    let cipher = h.meta.segments[&seg].encryption.clone().unwrap_or_default();
    let did = h
        .meta
        .digest_of_segment(seg)
        .ok_or_else(|| VolumeError::Unsupported("volume has no segment digest".into()))?;
    Ok((seg, cipher, did))
}

/// The same KDF with a fresh salt: a re-sealed keyslot costs what the
/// original did, which its owner chose.
pub(crate) fn fresh_kdf(k: &KeyslotKdf) -> Result<KeyslotKdf, RewrapError> {
    let mut k = k.clone();
    let salt = match &mut k {
        KeyslotKdf::Pbkdf2 { salt, .. } | KeyslotKdf::Argon2 { salt, .. } => salt,
    };
    wrapcrypt_secret::fill_random(salt).map_err(|e| RewrapError::Param(e.to_string()))?;
    Ok(k)
}

/// A digest of `key` with the hash and cost of `like` and a fresh salt.
pub(crate) fn digest_like(
    like: &Digest,
    key: &SecretBytes,
    keyslots: Vec<u32>,
    segments: Vec<u32>,
) -> Result<Digest, RewrapError> {
    let mut salt = vec![0u8; 32];
    wrapcrypt_secret::fill_random(&mut salt).map_err(|e| RewrapError::Param(e.to_string()))?;
    let digest =
        keyslot_crypto::key_digest(&like.hash, key, &salt, like.iterations, like.digest.len())
            .map_err(VolumeError::from)?;
    Ok(Digest {
        kind: "pbkdf2".into(),
        keyslots,
        segments,
        hash: like.hash.clone(),
        iterations: like.iterations,
        salt,
        digest,
        extra: Default::default(),
    })
}

/// One keyslot to re-seal: proof that `passphrase` opened it.
pub struct SlotPass<'a> {
    /// What unlocking the keyslot returned (its id and key).
    pub unlocked: &'a Unlocked,
    /// The passphrase that opened it; the new keyslot uses it too.
    pub passphrase: &'a [u8],
}

/// Keyslots prepared for one header change: ids, objects, area material.
pub(crate) struct Sealed {
    pub(crate) ids: Vec<u32>,
    pub(crate) areas: Vec<(u64, Vec<u8>)>,
}

/// How [`seal_all`] seals: the keyslot area cipher (default: each
/// original's), the PBKDF (default: a fresh one like each original's), and
/// the progress hook (keyslots sealed, keyslots).
pub(crate) struct SealHow<'a> {
    pub(crate) area: Option<(&'a str, u32)>,
    pub(crate) pbkdf: Option<&'a PbkdfOptions>,
    pub(crate) progress: &'a mut dyn FnMut(u64, u64),
}

/// Seals `key` for each of `slots` into new keyslots of `new` (ids from
/// `ids`, areas in free space of `h`), with each original keyslot's KDF,
/// area cipher and priority unless `pbkdf` overrides the KDF.
pub(crate) fn seal_all(
    h: &Luks2Header,
    new: &mut Luks2Header,
    key: &SecretBytes,
    slots: &[SlotPass<'_>],
    ids: &[u32],
    how: SealHow<'_>,
) -> Result<Sealed, RewrapError> {
    let SealHow {
        area,
        pbkdf,
        progress,
    } = how;
    let mut planned: Vec<(u64, u64)> = vec![];
    let total = slots.len().min(ids.len()) as u64;
    progress(0, total);
    let mut out = Sealed {
        ids: vec![],
        areas: vec![],
    };
    for (s, &id) in slots.iter().zip(ids) {
        let orig = h
            .meta
            .keyslots
            .get(&s.unlocked.keyslot)
            .ok_or(VolumeError::KeyslotInactive(s.unlocked.keyslot))?;
        let (cipher, ksize) = match area {
            Some((c, k)) => (c.to_string(), k),
            None => (
                orig.area
                    .encryption
                    .clone()
                    .unwrap_or_else(|| "aes-xts-plain64".into()),
                orig.area.key_size.unwrap_or(64),
            ),
        };
        let kdf = match (pbkdf, &orig.kdf) {
            (Some(p), _) => p.resolve(ksize as usize)?,
            (None, Some(k)) => fresh_kdf(k)?,
            (None, None) => {
                return Err(VolumeError::Unsupported("keyslot has no KDF".into()).into())
            }
        };
        let af_hash = orig
            .af
            .as_ref()
            .map_or("sha256".to_string(), |a| a.hash.clone());
        let (ks, material) = seal_keyslot(
            h,
            &planned,
            key,
            s.passphrase,
            kdf,
            &cipher,
            ksize,
            &af_hash,
            orig.priority,
        )?;
        planned.push((ks.area.offset, ks.area.size));
        out.areas.push((ks.area.offset, material));
        new.meta.keyslots.insert(id, ks);
        out.ids.push(id);
        progress(out.ids.len() as u64, total);
    }
    Ok(out)
}

fn require_waes(h: &Luks2Header) -> Result<(u32, u32), RewrapError> {
    let (seg, cipher, did) = segment_digest(h)?;
    if !cipher.starts_with("waes-") {
        return Err(RewrapError::WrongCipher {
            found: cipher,
            want: "waes-xts-plain64",
        });
    }
    Ok((seg, did))
}

/// What is on disk: nothing staged, or a staged re-wrap.
pub enum OnDisk {
    /// No `waes-reencipher` token.
    Idle(Volume),
    /// A staged re-wrap.
    Staged(Staged),
}

/// Reads the re-wrap state of a wrapped volume from its header.
pub fn recover(vol: Volume) -> Result<OnDisk, RewrapError> {
    let h = vol.luks2_header()?;
    require_waes(h)?;
    match ReencipherToken::find(h)? {
        None => Ok(OnDisk::Idle(vol)),
        Some(token) => {
            let digest = token.check(h)?;
            Ok(OnDisk::Staged(Staged { vol, token, digest }))
        }
    }
}

/// A staged re-wrap: the new blob in unbound keyslots, recorded by a token.
pub struct Staged {
    vol: Volume,
    token: ReencipherToken,
    digest: u32,
}

/// Options of [`Staged::complete`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CompleteOptions {
    /// Accept a new blob whose VP differs from the stored one and store its
    /// VP (setkey --force).
    pub replace_vp: bool,
    /// Remove keyslots of the old key that have no re-wrapped copy.
    pub drop_unstaged: bool,
}

/// A completed re-wrap.
pub struct Completed {
    vol: Volume,
    /// Keyslots now holding the volume key.
    pub keyslots: Vec<u32>,
    /// Keyslots of the old key that were removed (and wiped).
    pub removed: Vec<u32>,
}

impl Completed {
    /// The volume, for further work.
    pub fn into_volume(self) -> Volume {
        self.vol
    }
}

impl Staged {
    /// Stages `new_blob` (whose provider-computed VP is `new_vp`): for each
    /// of `slots` a new unbound keyslot with the same passphrase, one new
    /// digest, and the `waes-reencipher` token, in one header write after
    /// the keyslot material is durable.
    pub fn stage(
        vol: Volume,
        new_blob: &SecretBytes,
        new_vp: &str,
        slots: &[SlotPass<'_>],
        pbkdf: Option<&PbkdfOptions>,
    ) -> Result<Staged, RewrapError> {
        Self::stage_with_progress(vol, new_blob, new_vp, slots, pbkdf, &mut |_, _| {})
    }

    /// [`Staged::stage`], reporting `progress(keyslots sealed, keyslots)`:
    /// each new keyslot runs its PBKDF, seconds apiece with argon2.
    pub fn stage_with_progress(
        mut vol: Volume,
        new_blob: &SecretBytes,
        new_vp: &str,
        slots: &[SlotPass<'_>],
        pbkdf: Option<&PbkdfOptions>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Staged, RewrapError> {
        vol.check_requirements()?;
        let h = vol.luks2_header()?.clone();
        let (_, seg_did) = require_waes(&h)?;
        if let Some(t) = ReencipherToken::find(&h)? {
            return Err(RewrapError::AlreadyStaged {
                original: t.original,
                unbound: t.unbound,
            });
        }
        if slots.is_empty() {
            return Err(RewrapError::Param("no keyslot to re-wrap".into()));
        }
        Wkb::parse(new_blob.expose_secret())?;
        for s in slots {
            if h.meta.digest_of_keyslot(s.unlocked.keyslot) != Some(seg_did)
                || !Volume::luks2_check_key(&h, seg_did, &s.unlocked.key)?
            {
                return Err(RewrapError::NotVolumeKey(s.unlocked.keyslot));
            }
        }
        let ids: Vec<u32> = (0..KEYSLOTS_MAX)
            .filter(|i| !h.meta.keyslots.contains_key(i))
            .take(slots.len())
            .collect();
        if ids.len() < slots.len() {
            return Err(VolumeError::NoFreeKeyslot.into());
        }
        let mut new = h.clone();
        let how = SealHow {
            area: None,
            pbkdf,
            progress,
        };
        let sealed = seal_all(&h, &mut new, new_blob, slots, &ids, how)?;
        let did = (0..u32::MAX)
            .find(|i| !h.meta.digests.contains_key(i))
            .expect("a free digest id");
        new.meta.digests.insert(
            did,
            digest_like(
                &h.meta.digests[&seg_did],
                new_blob,
                sealed.ids.clone(),
                vec![],
            )?,
        );
        let pairs: Vec<(u32, u32)> = slots
            .iter()
            .map(|s| s.unlocked.keyslot)
            .zip(sealed.ids.iter().copied())
            .collect();
        let token = ReencipherToken {
            id: free_token_id(&h)?,
            vp: new_vp.to_string(),
            original: pairs[0].0,
            unbound: pairs[0].1,
            more: pairs[1..].to_vec(),
        };
        new.meta.tokens.insert(token.id, token.to_token()?);
        new.validate(!vol.detached).map_err(VolumeError::from)?;
        // Keyslot material first, to areas the current header does not
        // reference; then the header that references it.
        for (off, material) in &sealed.areas {
            vol.write_area(*off, material)?;
        }
        vol.luks2_write(new)?;
        Ok(Staged {
            vol,
            token,
            digest: did,
        })
    }

    /// The token of this staged re-wrap.
    pub fn token(&self) -> &ReencipherToken {
        &self.token
    }

    /// The volume (read access).
    pub fn volume(&self) -> &Volume {
        &self.vol
    }

    /// Keyslots of the old key that have no staged copy.
    pub fn unstaged(&self) -> Result<Vec<u32>, RewrapError> {
        let h = self.vol.luks2_header()?;
        let (_, old_did) = require_waes(h)?;
        let orig: BTreeSet<u32> = self.token.pairs().iter().map(|p| p.0).collect();
        Ok(h.meta.digests[&old_did]
            .keyslots
            .iter()
            .copied()
            .filter(|k| !orig.contains(k))
            .collect())
    }

    /// Opens a staged keyslot with `passphrase` and completes with its blob.
    pub fn complete(
        self,
        passphrase: &[u8],
        provider: &dyn KeyProvider,
        opts: CompleteOptions,
    ) -> Result<Completed, RewrapError> {
        let unbound = self.token.unbound_keyslots();
        let mut found = None;
        for &u in &unbound {
            match self.vol.unlock(passphrase, Some(u), false) {
                Ok(un) => {
                    found = Some(un.key);
                    break;
                }
                Err(VolumeError::NoMatchingKeyslot | VolumeError::NoUsableKeyslot) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let blob = found.ok_or(RewrapError::NoStagedKeyslot(unbound))?;
        self.complete_with_blob(&blob, provider, opts)
    }

    /// Completes with a blob already in hand (in-place re-wrap, setkey),
    /// after checking it against the staged digest.
    pub fn complete_with_blob(
        mut self,
        blob: &SecretBytes,
        provider: &dyn KeyProvider,
        opts: CompleteOptions,
    ) -> Result<Completed, RewrapError> {
        self.vol.check_requirements()?;
        let h = self.vol.luks2_header()?.clone();
        if !Volume::luks2_check_key(&h, self.digest, blob)? {
            return Err(RewrapError::NotVolumeKey(self.token.unbound));
        }
        let wkb = Wkb::parse(blob.expose_secret())?;
        let vp = provider.verification_pattern(&wkb)?;
        if !vp.eq_ignore_ascii_case(&self.token.vp) {
            return Err(RewrapError::VpMismatch {
                expected: self.token.vp.clone(),
                got: vp,
            });
        }
        let status = provider.validate(&wkb)?;
        if !status.state.is_usable() {
            return Err(RewrapError::Unusable(status.state.to_string()));
        }
        match stored_vp(&h) {
            Some(s) if s.eq_ignore_ascii_case(&vp) => {}
            Some(s) if !opts.replace_vp => {
                return Err(RewrapError::VpMismatch {
                    expected: s,
                    got: vp,
                })
            }
            None if !opts.replace_vp => return Err(RewrapError::NoStoredVp),
            _ => {}
        }
        let unstaged = self.unstaged()?;
        if !unstaged.is_empty() && !opts.drop_unstaged {
            return Err(RewrapError::UnstagedKeyslots(unstaged));
        }
        let (seg, old_did) = require_waes(&h)?;
        let mut new = h.clone();
        let old = new.meta.digests.remove(&old_did).expect("segment digest");
        if old.segments != [seg] {
            return Err(VolumeError::Unsupported(
                "the volume key digest covers more than the data segment (reencryption in progress?)".into(),
            )
            .into());
        }
        let mut wipe = vec![];
        for r in &old.keyslots {
            if let Some(ks) = new.meta.keyslots.remove(r) {
                wipe.push((ks.area.offset, ks.area.size));
            }
        }
        new.meta
            .digests
            .get_mut(&self.digest)
            .expect("staged digest")
            .segments = vec![seg];
        new.meta.tokens.remove(&self.token.id);
        let pairs = self.token.pairs();
        for t in new.meta.tokens.values_mut() {
            // Tokens of an old keyslot (e.g. an unlock token) follow its
            // re-wrapped copy.
            t.keyslots = t
                .keyslots
                .iter()
                .filter_map(|k| match pairs.iter().find(|p| p.0 == *k) {
                    Some(p) => Some(p.1),
                    None if old.keyslots.contains(k) => None,
                    None => Some(*k),
                })
                .collect();
            t.keyslots.sort();
            t.keyslots.dedup();
        }
        if opts.replace_vp {
            set_vp_token(&mut new, &vp)?;
        }
        // Informational, for `keys list` without passphrases.
        if let Some(t) = new
            .meta
            .tokens
            .values_mut()
            .find(|t| t.kind == PROVIDER_TOKEN)
        {
            t.json
                .insert("wrapping-key".into(), wkb.wrapping_key().to_string().into());
        }
        new.validate(!self.vol.detached)
            .map_err(VolumeError::from)?;
        // One header write switches the segment to the new blob; the old
        // keyslots are wiped only once no header references them.
        self.vol.luks2_write(new)?;
        for (off, size) in wipe {
            self.vol.wipe_area(off, size)?;
        }
        Ok(Completed {
            vol: self.vol,
            keyslots: self.token.unbound_keyslots(),
            removed: old.keyslots,
        })
    }

    /// Drops the staged blob: its keyslots, digest and token go in one
    /// header write, then their areas are wiped.
    pub fn cancel(mut self) -> Result<Volume, RewrapError> {
        let h = self.vol.luks2_header()?.clone();
        let mut new = h.clone();
        let mut wipe = vec![];
        for u in self.token.unbound_keyslots() {
            if let Some(ks) = new.meta.keyslots.remove(&u) {
                wipe.push((ks.area.offset, ks.area.size));
            }
            for t in new.meta.tokens.values_mut() {
                t.keyslots.retain(|&k| k != u);
            }
        }
        new.meta.digests.remove(&self.digest);
        new.meta.tokens.remove(&self.token.id);
        self.vol.luks2_write(new)?;
        for (off, size) in wipe {
            self.vol.wipe_area(off, size)?;
        }
        Ok(self.vol)
    }
}
