//! The socket server: one thread per connection, peer-credential checks,
//! and every operation of docs/provider-protocol.md.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use wrapcrypt_provider::protocol::{
    encode_error, CryptOp, Request, Response, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION, RING_VERSION,
};
use wrapcrypt_provider::ring::{self, Ring, RingRequest};
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

/// Most memfds one session may map (OPEN_SESSION's and ATTACH_SHM's).
const MAX_BUFFERS: usize = 1024;
/// Most daemon threads serving one ring.
const MAX_RING_THREADS: u8 = 4;
/// Longest time a ring thread keeps polling after its last request before
/// it sleeps on the doorbell (the client asks for less or more, up to
/// this): back-to-back requests then need no wake-up.
const MAX_RING_SPIN_US: u16 = 50;
/// Longest doorbell sleep: a ring thread checks for its connection's end
/// at least this often.
const RING_NAP: Duration = Duration::from_millis(200);

/// A sector session: the unwrapped key, the client's memfds, its ring.
struct Session {
    cipher: Arc<SoftCipher>,
    bufs: Arc<RwLock<Vec<Arc<Shm>>>>,
    ring: Option<RingRunner>,
}

/// The threads serving one session's ring; stopped and joined on drop
/// (CLOSE_SESSION, or the connection's end when the client exits).
struct RingRunner {
    ring: Arc<Ring>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for RingRunner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.ring.wake_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Runs one ring request on the session's buffers; 0 or an error code.
fn ring_crypt(cipher: &SoftCipher, bufs: &RwLock<Vec<Arc<Shm>>>, r: &RingRequest) -> u16 {
    let Some(shm) = bufs
        .read()
        .expect("buffers lock")
        .get(r.buffer as usize)
        .cloned()
    else {
        return ErrorCode::NoSuchSession.code();
    };
    let Some(end) = r
        .offset
        .checked_add(r.len)
        .filter(|&e| e <= shm.len() as u64)
    else {
        return ErrorCode::InvalidArgument.code();
    };
    // SAFETY: offset..end lies inside the mapping, which the Arc keeps
    // alive; the client leaves the region alone while the request is
    // outstanding (as for a socket CRYPT).
    let data = unsafe {
        std::slice::from_raw_parts_mut(
            shm.as_ptr().add(r.offset as usize),
            (end - r.offset) as usize,
        )
    };
    let res = match r.op {
        1 => cipher.encrypt(r.iv_sector, data),
        2 => cipher.decrypt(r.iv_sector, data),
        _ => return ErrorCode::BadRequest.code(),
    };
    match res {
        Ok(()) => 0,
        Err(_) => ErrorCode::InvalidArgument.code(),
    }
}

/// One ring thread: takes submitted slots, polls briefly after each
/// request for the next one, then sleeps on the doorbell.
fn ring_loop(
    ring: &Ring,
    cipher: &SoftCipher,
    bufs: &RwLock<Vec<Arc<Shm>>>,
    stop: &AtomicBool,
    first: u32,
    spin: Duration,
) {
    let mut cursor = first;
    // Some(deadline) while polling (announced in the ring's header).
    let mut polling: Option<Instant> = None;
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        if let Some((i, req)) = ring.take(&mut cursor) {
            if polling.take().is_some() {
                ring.set_polling(false);
            }
            let status = ring_crypt(cipher, bufs, &req);
            ring.complete(i, u32::from(status));
            // Poll for the client's next request: it is woken now and
            // usually submits again before a sleeping thread could be
            // woken (measured: sleeping at once after large requests,
            // a wake-up more per request, halved 1 MiB throughput).
            if !spin.is_zero() {
                polling = Some(Instant::now() + spin);
                ring.set_polling(true);
            }
        } else if let Some(deadline) = polling {
            n = n.wrapping_add(1);
            // The clock only every 8th scan: reading it cost more than
            // the scan.
            if n.is_multiple_of(8) && Instant::now() >= deadline {
                polling = None;
                ring.set_polling(false);
            } else {
                std::hint::spin_loop();
            }
        } else {
            ring.sleep(RING_NAP);
        }
    }
    if polling.is_some() {
        ring.set_polling(false);
    }
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
                c.version = v;
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
                c.sessions.insert(
                    id,
                    Session {
                        cipher: Arc::new(cipher),
                        bufs: Arc::new(RwLock::new(vec![Arc::new(shm)])),
                        ring: None,
                    },
                );
                Ok(Response::Session(id))
            }
            Request::Crypt {
                session,
                op,
                iv_sector,
                offset,
                len,
            } => {
                let s = c.sessions.get(&session).ok_or_else(|| {
                    refused(ErrorCode::NoSuchSession, format!("no session {session}"))
                })?;
                let shm = s.bufs.read().expect("buffers lock")[0].clone();
                let end = offset
                    .checked_add(len)
                    .filter(|&e| e <= shm.len() as u64)
                    .ok_or_else(|| {
                        refused(
                            ErrorCode::InvalidArgument,
                            "offset/length outside the shared memory",
                        )
                    })?;
                // SAFETY: offset..end is inside the mapping the Arc keeps alive.
                let data = unsafe {
                    std::slice::from_raw_parts_mut(
                        shm.as_ptr().add(offset as usize),
                        (end - offset) as usize,
                    )
                };
                let r = match op {
                    CryptOp::Encrypt => s.cipher.encrypt(iv_sector, data),
                    CryptOp::Decrypt => s.cipher.decrypt(iv_sector, data),
                };
                r.map_err(|e| refused(ErrorCode::InvalidArgument, e.to_string()))?;
                Ok(Response::Done)
            }
            Request::AttachShm { session, shm_len } => {
                if c.version < RING_VERSION {
                    return Err(refused(
                        ErrorCode::BadRequest,
                        "ATTACH_SHM needs protocol version 2",
                    ));
                }
                let fd = fd.ok_or_else(|| {
                    refused(
                        ErrorCode::BadRequest,
                        "ATTACH_SHM needs a memfd (SCM_RIGHTS)",
                    )
                })?;
                let s = c.sessions.get(&session).ok_or_else(|| {
                    refused(ErrorCode::NoSuchSession, format!("no session {session}"))
                })?;
                if shm_len == 0 || shm_len > MAX_SHM {
                    return Err(refused(
                        ErrorCode::InvalidArgument,
                        format!("shared memory of {shm_len} bytes is not 1..=64 MiB"),
                    ));
                }
                let shm = Shm::from_peer(fd, shm_len as usize)
                    .map_err(|e| refused(ErrorCode::InvalidArgument, e.to_string()))?;
                let mut bufs = s.bufs.write().expect("buffers lock");
                if bufs.len() >= MAX_BUFFERS {
                    return Err(refused(
                        ErrorCode::InvalidArgument,
                        format!("a session maps at most {MAX_BUFFERS} buffers"),
                    ));
                }
                bufs.push(Arc::new(shm));
                Ok(Response::Session((bufs.len() - 1) as u32))
            }
            Request::StartRing {
                session,
                entries,
                threads,
                spin_us,
            } => {
                if c.version < RING_VERSION {
                    return Err(refused(
                        ErrorCode::BadRequest,
                        "START_RING needs protocol version 2",
                    ));
                }
                let fd = fd.ok_or_else(|| {
                    refused(
                        ErrorCode::BadRequest,
                        "START_RING needs a memfd (SCM_RIGHTS)",
                    )
                })?;
                let s = c.sessions.get_mut(&session).ok_or_else(|| {
                    refused(ErrorCode::NoSuchSession, format!("no session {session}"))
                })?;
                if s.ring.is_some() {
                    return Err(refused(
                        ErrorCode::InvalidArgument,
                        format!("session {session} already has a ring"),
                    ));
                }
                if entries == 0 || entries > ring::MAX_ENTRIES {
                    return Err(refused(
                        ErrorCode::InvalidArgument,
                        format!(
                            "a ring has 1..={} entries, not {entries}",
                            ring::MAX_ENTRIES
                        ),
                    ));
                }
                let shm = Shm::from_peer(fd, ring::ring_len(entries))
                    .map_err(|e| refused(ErrorCode::InvalidArgument, e.to_string()))?;
                let ring = Arc::new(
                    Ring::new(shm, entries, false)
                        .map_err(|e| refused(ErrorCode::InvalidArgument, e.to_string()))?,
                );
                let stop = Arc::new(AtomicBool::new(false));
                let mut runner = RingRunner {
                    ring: ring.clone(),
                    stop: stop.clone(),
                    threads: Vec::new(),
                };
                let n = threads.clamp(1, MAX_RING_THREADS);
                let spin = Duration::from_micros(spin_us.min(MAX_RING_SPIN_US).into());
                ring.set_threads(u32::from(n));
                for k in 0..n {
                    let (ring, stop) = (ring.clone(), stop.clone());
                    let (cipher, bufs) = (s.cipher.clone(), s.bufs.clone());
                    let first = entries / u32::from(n) * u32::from(k);
                    // Only the first thread polls; helpers (woken for large
                    // requests, or when it is busy) sleep as soon as idle.
                    let spin_k = if k == 0 { spin } else { Duration::ZERO };
                    let t = std::thread::Builder::new()
                        .name("custodian-ring".into())
                        .stack_size(256 << 10)
                        .spawn(move || ring_loop(&ring, &cipher, &bufs, &stop, first, spin_k))
                        .map_err(|e| refused(ErrorCode::Internal, format!("ring thread: {e}")))?;
                    runner.threads.push(t);
                }
                s.ring = Some(runner);
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
            version: 0,
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
    /// The version HELLO chose.
    version: u16,
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
