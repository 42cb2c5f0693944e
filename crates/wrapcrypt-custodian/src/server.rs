//! The socket server: one thread per connection, peer-credential checks,
//! and every operation of docs/provider-protocol.md.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use wrapcrypt_provider::protocol::{
    encode_error, CryptOp, Request, Response, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION,
};
use wrapcrypt_provider::shm::Shm;
use wrapcrypt_provider::transport::{peer_credentials, recv_frame, send_frame};
use wrapcrypt_provider::xts::aes_256_xts;
use wrapcrypt_provider::{
    clear_key_vp, ErrorCode, KeySpec, MasterKeyStatus, Protection, ProviderError, Register,
    RewrapDirection, Wkb, CUSTODIAN,
};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{SectorCipher, SoftCipher};

use crate::kmip::{KmipBackend, KmipSeen};
use crate::registers::{mkvp_of, MasterKey, Registers};
use crate::seal::Store;

/// Largest shared-memory window a session may map.
const MAX_SHM: u64 = 64 << 20;

/// Set by SIGTERM/SIGINT.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// The daemon's state shared by all connections.
pub struct Daemon {
    pub(crate) store: Store,
    pub(crate) regs: RwLock<Registers>,
    allow_uids: Vec<u32>,
    own_uid: u32,
    /// The key manager holding the master keys, if configured.
    pub(crate) kmip: Option<KmipBackend>,
    /// Lock order: `regs` before `seen`, never the reverse.
    pub(crate) seen: Mutex<KmipSeen>,
}

pub(crate) fn refused(code: ErrorCode, msg: impl Into<String>) -> ProviderError {
    ProviderError::refused(CUSTODIAN, code, msg)
}

pub(crate) fn seal_err(e: crate::seal::SealError) -> ProviderError {
    refused(ErrorCode::SealFailure, e.to_string())
}

/// A sector session: the unwrapped key and the client's memfd.
struct Session {
    cipher: SoftCipher,
    shm: Shm,
}

impl Daemon {
    /// A daemon over loaded registers.
    pub fn new(
        store: Store,
        regs: Registers,
        allow_uids: Vec<u32>,
        kmip: Option<KmipBackend>,
    ) -> Daemon {
        Daemon {
            store,
            regs: RwLock::new(regs),
            allow_uids,
            // SAFETY: geteuid has no preconditions.
            own_uid: unsafe { libc::geteuid() },
            kmip,
            seen: Mutex::new(KmipSeen::default()),
        }
    }

    fn current(regs: &Registers) -> Result<&MasterKey, ProviderError> {
        regs.current.as_ref().ok_or_else(|| {
            refused(
                ErrorCode::NotInitialized,
                "the custodian has no CURRENT master key: run its init operation",
            )
        })
    }

    fn unwrap(&self, wkb: &Wkb) -> Result<SecretBytes, ProviderError> {
        self.load_if_missing(wkb);
        let regs = self.regs.read().expect("registers lock");
        if let Some(e) = self.not_loaded(&regs, mkvp_of(wkb)?) {
            return Err(e);
        }
        let (_, mk) = regs.key_for(wkb)?;
        mk.unwrap(wkb)
    }

    fn rewrap(&self, dir: RewrapDirection, wkb: &Wkb) -> Result<Wkb, ProviderError> {
        self.load_if_missing(wkb);
        let target_reg = match dir {
            RewrapDirection::ToNew => Register::New,
            RewrapDirection::FromOld => Register::Current,
        };
        self.refresh(&[target_reg]);
        let regs = self.regs.read().expect("registers lock");
        if let Some(e) = self.not_loaded(&regs, mkvp_of(wkb)?) {
            return Err(e);
        }
        if let Some(m) = regs.mkvp(target_reg) {
            if let Some(e) = self.not_loaded(&regs, &m) {
                return Err(e);
            }
        }
        self.check_wrap(&regs, target_reg)?;
        let (from, mk) = regs.key_for(wkb)?;
        let (want, target, target_reg) = match dir {
            RewrapDirection::ToNew => (Register::Current, &regs.new, Register::New),
            RewrapDirection::FromOld => (Register::Old, &regs.current, Register::Current),
        };
        if from != want {
            return Err(refused(
                ErrorCode::InvalidArgument,
                format!(
                    "this key is wrapped under the {from} master key; a re-wrap {} takes keys under {want}",
                    match dir {
                        RewrapDirection::ToNew => "to NEW",
                        RewrapDirection::FromOld => "from OLD",
                    }
                ),
            ));
        }
        let target = target.as_ref().ok_or_else(|| {
            refused(
                ErrorCode::EmptyRegister,
                format!("the {target_reg} master-key register is empty"),
            )
        })?;
        let clear = mk.unwrap(wkb)?;
        target.wrap(&KeySpec::new(wkb.algorithm()), &clear)
    }

    /// Changes the registers with `f`, persists them, and rolls back in
    /// memory if sealing fails.
    pub(crate) fn change(
        &self,
        f: impl FnOnce(&mut Registers) -> Result<Box<dyn FnOnce(&mut Registers)>, ProviderError>,
    ) -> Result<(), ProviderError> {
        let mut regs = self.regs.write().expect("registers lock");
        let undo = f(&mut regs)?;
        if let Err(e) = self.store.save(&regs) {
            undo(&mut regs);
            return Err(seal_err(e));
        }
        Ok(())
    }

    /// A master-key change, through the key manager when one is configured.
    pub(crate) fn admin_request(&self, req: &Request) -> Result<Response, ProviderError> {
        if self.kmip.is_some() || matches!(req, Request::StageKmipKey(_)) {
            return self.kmip_admin(req);
        }
        self.plain_admin(req)
    }

    /// A master-key change with random keys (no key manager), and
    /// SET_MASTER_KEY in both cases.
    pub(crate) fn plain_admin(&self, req: &Request) -> Result<Response, ProviderError> {
        let random = || MasterKey::random().map_err(ProviderError::Transport);
        match req {
            Request::Init => self.change(|r| {
                // A KMIP-backed CURRENT that is not loaded still counts.
                if r.mkvp(Register::Current).is_some() {
                    return Err(refused(
                        ErrorCode::AlreadyInitialized,
                        "the custodian already has a CURRENT master key",
                    ));
                }
                r.current = Some(random()?);
                Ok(Box::new(|r: &mut Registers| r.current = None))
            }),
            Request::LoadNewMasterKey => self.change(|r| {
                let prev = r.new.replace(random()?);
                let prev_ref = r.kmip[0].take();
                Ok(Box::new(move |r: &mut Registers| {
                    r.new = prev;
                    r.kmip[0] = prev_ref;
                }))
            }),
            Request::SetMasterKey => self.change(|r| {
                if r.new.is_none() {
                    return Err(refused(
                        ErrorCode::EmptyRegister,
                        "the NEW master-key register is empty: load a new master key first",
                    ));
                }
                let dropped = r.old.take();
                r.old = r.current.take();
                r.current = r.new.take();
                let refs = r.kmip.clone();
                r.kmip = [None, refs[0].clone(), refs[1].clone()];
                Ok(Box::new(move |r: &mut Registers| {
                    r.new = r.current.take();
                    r.current = r.old.take();
                    r.old = dropped;
                    r.kmip = refs;
                }))
            }),
            _ => unreachable!("admin() is called for admin requests only"),
        }?;
        Ok(Response::Done)
    }

    fn dispatch(
        &self,
        c: &mut ConnState,
        req: Request,
        fd: Option<OwnedFd>,
    ) -> Result<Response, ProviderError> {
        if !c.hello && !matches!(req, Request::Hello { .. }) {
            return Err(refused(ErrorCode::BadRequest, "HELLO must come first"));
        }
        if req.is_admin() && !c.admin {
            return Err(refused(
                ErrorCode::PermissionDenied,
                format!(
                    "uid {} may use keys but not change master keys (root only)",
                    c.uid
                ),
            ));
        }
        match req {
            Request::Hello { min, max } => {
                let v = max.min(PROTOCOL_VERSION);
                if v < min.max(PROTOCOL_MIN_VERSION) {
                    return Err(refused(
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "client speaks versions {min}..={max}, the custodian {PROTOCOL_MIN_VERSION}..={PROTOCOL_VERSION}"
                        ),
                    ));
                }
                c.hello = true;
                Ok(Response::Hello {
                    version: v,
                    provider: CUSTODIAN.into(),
                    protection: Protection::SeparateProcess,
                })
            }
            Request::Generate(spec) => {
                self.refresh(&[Register::Current]);
                let regs = self.regs.read().expect("registers lock");
                self.check_current(&regs)?;
                let cur = Self::current(&regs)?;
                let key = SecretBytes::random(spec.algorithm.key_len())?;
                Ok(Response::Wkb(cur.wrap(&spec, &key)?.encode()))
            }
            Request::Import(spec, key) => {
                if key.len() != spec.algorithm.key_len() {
                    return Err(refused(
                        ErrorCode::InvalidArgument,
                        format!(
                            "{} needs a {}-byte key, got {}",
                            spec.algorithm.name(),
                            spec.algorithm.key_len(),
                            key.len()
                        ),
                    ));
                }
                self.refresh(&[Register::Current]);
                let regs = self.regs.read().expect("registers lock");
                self.check_current(&regs)?;
                Ok(Response::Wkb(
                    Self::current(&regs)?.wrap(&spec, &key)?.encode(),
                ))
            }
            Request::Validate(b) => {
                let w = Wkb::parse(&b)?;
                self.load_if_missing(&w);
                let regs = self.regs.read().expect("registers lock");
                if let Some(e) = self.not_loaded(&regs, mkvp_of(&w)?) {
                    return Err(e);
                }
                Ok(Response::Status(regs.validate(&w)?))
            }
            Request::VerificationPattern(b) => {
                let key = self.unwrap(&Wkb::parse(&b)?)?;
                Ok(Response::Vp(clear_key_vp(&key)?))
            }
            Request::Rewrap(dir, b) => {
                Ok(Response::Wkb(self.rewrap(dir, &Wkb::parse(&b)?)?.encode()))
            }
            Request::OpenSession {
                wkb,
                sector_size,
                shm_len,
            } => {
                let fd = fd.ok_or_else(|| {
                    refused(
                        ErrorCode::BadRequest,
                        "OPEN_SESSION needs a memfd (SCM_RIGHTS)",
                    )
                })?;
                if shm_len == 0 || shm_len > MAX_SHM || shm_len % sector_size.max(1) as u64 != 0 {
                    return Err(refused(
                        ErrorCode::InvalidArgument,
                        format!(
                            "shared memory of {shm_len} bytes is not 1..=64 MiB of whole sectors"
                        ),
                    ));
                }
                let key = self.unwrap(&Wkb::parse(&wkb)?)?;
                let cipher = aes_256_xts(&key, sector_size as usize)
                    .map_err(|e| refused(ErrorCode::InvalidArgument, e.to_string()))?;
                let shm = Shm::from_peer(fd, shm_len as usize)
                    .map_err(|e| refused(ErrorCode::InvalidArgument, e.to_string()))?;
                let id = c.next_session;
                c.next_session = c.next_session.wrapping_add(1).max(1);
                c.sessions.insert(id, Session { cipher, shm });
                Ok(Response::Session(id))
            }
            Request::Crypt {
                session,
                op,
                iv_sector,
                offset,
                len,
            } => {
                let s = c.sessions.get_mut(&session).ok_or_else(|| {
                    refused(ErrorCode::NoSuchSession, format!("no session {session}"))
                })?;
                let end = offset
                    .checked_add(len)
                    .filter(|&e| e <= s.shm.len() as u64)
                    .ok_or_else(|| {
                        refused(
                            ErrorCode::InvalidArgument,
                            "offset/length outside the shared memory",
                        )
                    })?;
                let data = &mut s.shm.as_mut_slice()[offset as usize..end as usize];
                let r = match op {
                    CryptOp::Encrypt => s.cipher.encrypt(iv_sector, data),
                    CryptOp::Decrypt => s.cipher.decrypt(iv_sector, data),
                };
                r.map_err(|e| refused(ErrorCode::InvalidArgument, e.to_string()))?;
                Ok(Response::Done)
            }
            Request::CloseSession(id) => {
                c.sessions
                    .remove(&id)
                    .ok_or_else(|| refused(ErrorCode::NoSuchSession, format!("no session {id}")))?;
                Ok(Response::Done)
            }
            Request::Status => {
                let regs = self.regs.read().expect("registers lock");
                Ok(Response::MasterKeys(MasterKeyStatus::new(
                    regs.status(),
                    self.seal_text(),
                    Protection::SeparateProcess,
                )))
            }
            Request::KmipStatus => Ok(Response::Kmip(self.kmip_status())),
            ref admin => {
                let r = self.admin_request(admin);
                eprintln!(
                    "wrapcrypt-custodiand: uid {} op 0x{:04x}: {}",
                    c.uid,
                    admin.opcode(),
                    match &r {
                        Ok(_) => "done".to_string(),
                        Err(e) => e.to_string(),
                    }
                );
                r
            }
        }
    }

    /// Serves one connection until the peer closes it.
    fn handle(&self, sock: UnixStream) {
        let Ok((uid, _, _)) = peer_credentials(&sock) else {
            return;
        };
        let admin = uid == 0 || uid == self.own_uid;
        let allowed = admin || self.allow_uids.contains(&uid);
        let mut c = ConnState {
            uid,
            admin,
            hello: false,
            sessions: HashMap::new(),
            next_session: 1,
        };
        while let Ok(Some((frame, mut fds))) = recv_frame(&sock) {
            let opcode = frame
                .0
                .get(..2)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            let result = if !allowed {
                Err(refused(
                    ErrorCode::PermissionDenied,
                    format!(
                        "uid {uid} may not use the key custodian; root can allow it with \
                         allow_uids in the custodian's config file"
                    ),
                ))
            } else {
                match Request::decode(&frame.0) {
                    Err(e) => Err(refused(ErrorCode::BadRequest, e.to_string())),
                    Ok(req) => self.dispatch(&mut c, req, fds.pop()),
                }
            };
            drop(frame);
            let body = match result {
                Ok(r) => r.encode(opcode),
                Err(e) => encode_error(opcode, e.code(), &wire_message(&e)),
            };
            if send_frame(&sock, &body, None).is_err() || !allowed {
                break;
            }
        }
    }
}

fn wire_message(e: &ProviderError) -> String {
    match e {
        ProviderError::Refused { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

struct ConnState {
    uid: u32,
    admin: bool,
    hello: bool,
    sessions: HashMap<u32, Session>,
    next_session: u32,
}

/// Accepts connections until SIGTERM.
pub fn serve(listener: UnixListener, d: Arc<Daemon>) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    while !STOP.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 200) };
        match listener.accept() {
            Ok((sock, _)) => {
                sock.set_nonblocking(false)?;
                let d = d.clone();
                // Small stacks: every page is locked (mlockall).
                let spawned = std::thread::Builder::new()
                    .name("custodian-conn".into())
                    .stack_size(256 << 10)
                    .spawn(move || d.handle(sock));
                if let Err(e) = spawned {
                    eprintln!("wrapcrypt-custodiand: cannot start a connection thread: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
