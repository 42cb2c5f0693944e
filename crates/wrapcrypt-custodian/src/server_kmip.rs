//! The daemon's key-manager side: master keys created, fetched and checked
//! in a KMIP server (docs/kmip.md, "Custodian backend").
//!
//! Policy: a register whose KMIP object is not Active (or Pre-Active, as
//! staged by a coordinator) wraps no new keys; unwrapping under a key the
//! custodian holds always works, so volumes stay readable while they are
//! moved off a revoked key. A key that is not loaded (no TPM copy, and the
//! key manager unreachable) is fetched again on the next request needing it.

use wrapcrypt_kmip::KmipError;
use wrapcrypt_provider::protocol::{Request, Response};
use wrapcrypt_provider::{ErrorCode, KmipRegister, KmipStatus, ProviderError, Register, Wkb};

use crate::kmip::{is_unreachable, KmipBackend, ObjectState};
use crate::registers::{mkvp_of, slot, KmipRef, MasterKey, Registers, SLOTS};
use crate::server::{refused, Daemon};

fn kmip_err(e: &KmipError) -> ProviderError {
    let code = match e.reason() {
        Some(wrapcrypt_kmip::ResultReason::PermissionDenied) => ErrorCode::PermissionDenied,
        Some(_) => ErrorCode::InvalidArgument,
        None if matches!(e, KmipError::WrongObject { .. }) => ErrorCode::InvalidArgument,
        None => ErrorCode::Internal,
    };
    refused(code, e.to_string())
}

fn problem_line(r: Register, k: &KmipRef, s: &ObjectState) -> String {
    match s {
        ObjectState::Known(st) => {
            format!("master key kmip:{} ({r}) is {st} in the key manager", k.id)
        }
        ObjectState::Gone(why) => format!(
            "master key kmip:{} ({r}) is unknown to the key manager ({why})",
            k.id
        ),
    }
}

impl Daemon {
    fn note(&self, e: Option<&KmipError>) {
        let mut s = self.seen.lock().expect("kmip lock");
        s.unreachable = e.map(ToString::to_string).unwrap_or_default();
    }

    /// Fetches, with Get, the keys of KMIP-backed registers that are not
    /// loaded; returns one log line per register tried.
    pub fn fetch_missing(&self) -> Vec<String> {
        let Some(k) = &self.kmip else {
            return Vec::new();
        };
        let want: Vec<(Register, KmipRef)> = {
            let regs = self.regs.read().expect("registers lock");
            SLOTS
                .into_iter()
                .filter(|r| regs.key(*r).is_none())
                .filter_map(|r| regs.kmip[slot(r)].clone().map(|k| (r, k)))
                .collect()
        };
        if want.is_empty() {
            return Vec::new();
        }
        let mut c = match k.connect() {
            Ok(c) => c,
            Err(e) => {
                self.note(Some(&e));
                let mut s = self.seen.lock().expect("kmip lock");
                for (_, kr) in &want {
                    s.load_errors.insert(kr.id.clone(), e.to_string());
                }
                return vec![format!("cannot fetch master keys: {e}")];
            }
        };
        self.note(None);
        let mut out = Vec::new();
        for (r, kr) in want {
            let got = KmipBackend::get(&mut c, &kr.id).map(MasterKey::from_secret);
            let err = match got {
                Ok(mk) if *mk.mkvp() != kr.mkvp => format!(
                    "KMIP object {} holds another key (MKVP {}) than the one recorded for {r} ({})",
                    kr.id,
                    hex::encode(mk.mkvp()),
                    hex::encode(kr.mkvp)
                ),
                Ok(mk) => {
                    let mut regs = self.regs.write().expect("registers lock");
                    if regs.kmip[slot(r)].as_ref() == Some(&kr) && regs.key(r).is_none() {
                        *regs.key_mut(r) = Some(mk);
                    }
                    drop(regs);
                    self.seen
                        .lock()
                        .expect("kmip lock")
                        .load_errors
                        .remove(&kr.id);
                    out.push(format!(
                        "fetched the {r} master key kmip:{} with Get",
                        kr.id
                    ));
                    continue;
                }
                Err(e) => {
                    let mut s = self.seen.lock().expect("kmip lock");
                    if is_unreachable(&e) {
                        s.unreachable = e.to_string();
                    } else {
                        s.states
                            .insert(kr.id.clone(), ObjectState::Gone(e.to_string()));
                    }
                    e.to_string()
                }
            };
            out.push(format!(
                "cannot fetch the {r} master key kmip:{}: {err}",
                kr.id
            ));
            self.seen
                .lock()
                .expect("kmip lock")
                .load_errors
                .insert(kr.id.clone(), err);
        }
        out
    }

    /// Tries the key manager again when `wkb` names a KMIP-backed key that
    /// is not loaded.
    pub(crate) fn load_if_missing(&self, wkb: &Wkb) {
        let need = {
            let regs = self.regs.read().expect("registers lock");
            mkvp_of(wkb).is_ok_and(|m| self.not_loaded(&regs, m).is_some())
        };
        if need {
            for l in self.fetch_missing() {
                eprintln!("wrapcrypt-custodiand: {l}");
            }
        }
    }

    /// The refusal for a KMIP-backed register with this MKVP whose key is
    /// not loaded, if there is one.
    pub(crate) fn not_loaded(&self, regs: &Registers, mkvp: &[u8]) -> Option<ProviderError> {
        let r = SLOTS.into_iter().find(|r| {
            regs.key(*r).is_none()
                && regs.kmip[slot(*r)]
                    .as_ref()
                    .is_some_and(|k| k.mkvp[..] == *mkvp)
        })?;
        let k = regs.kmip[slot(r)].as_ref()?;
        let why = if self.kmip.is_none() {
            "this custodian has no key manager configured (--kmip-config FILE)".to_string()
        } else {
            self.seen
                .lock()
                .expect("kmip lock")
                .load_errors
                .get(&k.id)
                .cloned()
                .unwrap_or_else(|| "not fetched yet".into())
        };
        let copy = if self.store.is_tpm() {
            "its TPM-sealed copy is missing"
        } else {
            "without a TPM the custodian keeps no copy at rest"
        };
        Some(refused(
            ErrorCode::EmptyRegister,
            format!(
                "master key kmip:{} ({r}) is not loaded: {why}; {copy}: make the key manager reachable and retry",
                k.id
            ),
        ))
    }

    /// Asks the key manager for the states of these registers' objects.
    pub(crate) fn refresh(&self, which: &[Register]) {
        let Some(k) = &self.kmip else {
            return;
        };
        let ids: Vec<String> = {
            let regs = self.regs.read().expect("registers lock");
            which
                .iter()
                .filter_map(|r| regs.kmip[slot(*r)].as_ref().map(|k| k.id.clone()))
                .collect()
        };
        if ids.is_empty() {
            return;
        }
        let mut c = match k.connect() {
            Ok(c) => c,
            Err(e) => return self.note(Some(&e)),
        };
        for id in ids {
            match KmipBackend::state(&mut c, &id) {
                Ok(st) => {
                    let mut s = self.seen.lock().expect("kmip lock");
                    s.unreachable.clear();
                    s.states.insert(id, st);
                }
                Err(e) => return self.note(Some(&e)),
            }
        }
    }

    /// Refuses to wrap new keys under register `r` when its object is, as
    /// last seen, not usable for that. Never seen: the key held is used.
    pub(crate) fn check_wrap(&self, regs: &Registers, r: Register) -> Result<(), ProviderError> {
        let Some(k) = &regs.kmip[slot(r)] else {
            return Ok(());
        };
        let seen = self.seen.lock().expect("kmip lock");
        match seen.states.get(&k.id) {
            Some(s) if !s.may_wrap() => Err(refused(
                ErrorCode::Unsupported,
                format!(
                    "{}: the custodian wraps no new keys under it; load and set a new master key \
                     (wrapcrypt custodian load-new-master-key, then set-master-key)",
                    problem_line(r, k, s)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// [`Daemon::check_wrap`] for CURRENT, and its key loaded.
    pub(crate) fn check_current(&self, regs: &Registers) -> Result<(), ProviderError> {
        if regs.current.is_none() {
            if let Some(m) = regs.mkvp(Register::Current) {
                if let Some(e) = self.not_loaded(regs, &m) {
                    return Err(e);
                }
            }
        }
        self.check_wrap(regs, Register::Current)
    }

    /// How the master keys are kept at rest, for STATUS.
    pub(crate) fn seal_text(&self) -> String {
        let base = self.store.describe();
        match &self.kmip {
            None => base,
            Some(_) if self.store.is_tpm() => {
                format!("{base}; KMIP-backed keys: a copy sealed by the TPM")
            }
            Some(_) => format!(
                "{base}; KMIP-backed keys: in locked memory only, fetched with Get after a restart"
            ),
        }
    }

    /// KMIP_STATUS: the objects behind the registers, their states asked now.
    pub(crate) fn kmip_status(&self) -> KmipStatus {
        if self.kmip.is_some() {
            for l in self.fetch_missing() {
                eprintln!("wrapcrypt-custodiand: {l}");
            }
        }
        self.refresh(&SLOTS);
        let regs = self.regs.read().expect("registers lock");
        let mut out = Vec::new();
        for r in SLOTS {
            let mkvp = regs.mkvp(r).map(hex::encode).unwrap_or_default();
            let loaded = regs.key(r).is_some();
            let Some(k) = &regs.kmip[slot(r)] else {
                out.push(KmipRegister::new(
                    r,
                    String::new(),
                    mkvp,
                    loaded,
                    String::new(),
                    String::new(),
                ));
                continue;
            };
            let problem = match regs.mkvp(r).and_then(|m| self.not_loaded(&regs, &m)) {
                Some(e) => wire(&e),
                None if r == Register::Old => {
                    let seen = self.seen.lock().expect("kmip lock");
                    match seen.states.get(&k.id) {
                        Some(s) if !s.may_wrap() => format!(
                            "{}: volumes still wrapped under it open while this custodian holds it; \
                             re-wrap any that are left (wrapcrypt reencipher --from-old DEVICE)",
                            problem_line(r, k, s)
                        ),
                        _ => String::new(),
                    }
                }
                None => match self.check_wrap(&regs, r) {
                    Err(e) => wire(&e),
                    Ok(()) => String::new(),
                },
            };
            let state = self
                .seen
                .lock()
                .expect("kmip lock")
                .states
                .get(&k.id)
                .map(ObjectState::text)
                .unwrap_or_default();
            out.push(KmipRegister::new(
                r,
                k.id.clone(),
                mkvp,
                loaded,
                state,
                problem,
            ));
        }
        drop(regs);
        let s = self.seen.lock().expect("kmip lock");
        KmipStatus::new(
            self.kmip
                .as_ref()
                .map(KmipBackend::describe)
                .unwrap_or_default(),
            s.unreachable.clone(),
            out,
        )
    }

    /// Creates CURRENT at first start (in the key manager if configured).
    pub fn auto_init(&self) -> Result<bool, ProviderError> {
        let empty = {
            let regs = self.regs.read().expect("registers lock");
            regs.mkvp(Register::Current).is_none()
        };
        if !empty {
            return Ok(false);
        }
        self.admin_request(&Request::Init)?;
        Ok(true)
    }

    /// INIT, LOAD_NEW_MASTER_KEY, SET_MASTER_KEY and STAGE_KMIP_KEY with a
    /// key manager configured.
    pub(crate) fn kmip_admin(&self, req: &Request) -> Result<Response, ProviderError> {
        let Some(k) = &self.kmip else {
            return Err(refused(
                ErrorCode::Unsupported,
                "no key manager is configured: start the custodian with --kmip-config FILE",
            ));
        };
        let fresh = |r: Register| -> Result<(MasterKey, KmipRef), ProviderError> {
            let (id, key) = k.create().map_err(|e| kmip_err(&e))?;
            let mk = MasterKey::from_secret(key);
            eprintln!(
                "wrapcrypt-custodiand: created master key kmip:{id} for {r} in the key manager"
            );
            let kr = KmipRef {
                id,
                mkvp: *mk.mkvp(),
            };
            Ok((mk, kr))
        };
        let fill = |reg: Register, mk: MasterKey, kr: KmipRef| {
            self.change(|r| {
                if reg == Register::Current && r.mkvp(Register::Current).is_some() {
                    return Err(refused(
                        ErrorCode::AlreadyInitialized,
                        "the custodian already has a CURRENT master key",
                    ));
                }
                if let Some(other) = SLOTS
                    .into_iter()
                    .find(|o| *o != reg && r.mkvp(*o) == Some(kr.mkvp))
                {
                    return Err(refused(
                        ErrorCode::InvalidArgument,
                        format!("kmip:{} is already the {other} master key", kr.id),
                    ));
                }
                let prev = r.key_mut(reg).replace(mk);
                let prev_ref = r.kmip[slot(reg)].replace(kr);
                Ok(Box::new(move |r: &mut Registers| {
                    *r.key_mut(reg) = prev;
                    r.kmip[slot(reg)] = prev_ref;
                }))
            })
        };
        match req {
            Request::Init => {
                if self
                    .regs
                    .read()
                    .expect("registers lock")
                    .mkvp(Register::Current)
                    .is_some()
                {
                    return Err(refused(
                        ErrorCode::AlreadyInitialized,
                        "the custodian already has a CURRENT master key",
                    ));
                }
                let (mk, kr) = fresh(Register::Current)?;
                fill(Register::Current, mk, kr)?;
            }
            Request::LoadNewMasterKey => {
                let (mk, kr) = fresh(Register::New)?;
                fill(Register::New, mk, kr)?;
            }
            Request::StageKmipKey(id) => {
                let mut c = k.connect().map_err(|e| kmip_err(&e))?;
                let key = KmipBackend::get(&mut c, id).map_err(|e| kmip_err(&e))?;
                if let Ok(st) = KmipBackend::state(&mut c, id) {
                    self.seen
                        .lock()
                        .expect("kmip lock")
                        .states
                        .insert(id.clone(), st);
                }
                let mk = MasterKey::from_secret(key);
                let kr = KmipRef {
                    id: id.clone(),
                    mkvp: *mk.mkvp(),
                };
                fill(Register::New, mk, kr)?;
                eprintln!("wrapcrypt-custodiand: staged kmip:{id} in NEW");
            }
            Request::SetMasterKey => {
                let regs = self.regs.read().expect("registers lock");
                if let Some(e) = regs
                    .mkvp(Register::New)
                    .and_then(|m| self.not_loaded(&regs, &m))
                {
                    return Err(e);
                }
                drop(regs);
                return self.plain_admin(req);
            }
            other => return self.plain_admin(other),
        }
        Ok(Response::Done)
    }
}

fn wire(e: &ProviderError) -> String {
    match e {
        ProviderError::Refused { message, .. } => message.clone(),
        other => other.to_string(),
    }
}
