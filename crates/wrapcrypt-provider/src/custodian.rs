//! The `custodian` provider: a client of `wrapcrypt-custodiand`.
//!
//! Every key operation opens a short connection; a sector session keeps a
//! small pool of connections, each with its own sealed memfd, so several
//! threads (the FUSE workers) run sectors at once.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{SectorCipher, SectorError, SharedBuffer};

use crate::error::ProviderError;
use crate::protocol::{CryptOp, Request, Response, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION};
use crate::shm::Shm;
use crate::transport::{recv_frame, send_frame};
use crate::types::{KeySpec, KeyStatus, KmipStatus, MasterKeyStatus, Protection, RewrapDirection};
use crate::wkb::Wkb;
use crate::KeyProvider;

/// Provider name written into custodian blobs.
pub const CUSTODIAN: &str = "custodian";
/// The daemon's socket when nothing else is configured.
pub const DEFAULT_SOCKET: &str = "/run/wrapcrypt/custodian.sock";
/// The daemon's executable name.
pub const DAEMON_NAME: &str = "wrapcrypt-custodiand";

/// How to start the daemon when its socket does not answer.
#[derive(Clone, Debug)]
pub struct Autostart {
    /// The `wrapcrypt-custodiand` executable.
    pub program: PathBuf,
    /// Arguments before `--daemonize` (state dir, socket, TCTI).
    pub args: Vec<OsString>,
}

/// Where the custodian is and how to talk to it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CustodianConfig {
    /// The daemon's Unix socket.
    pub socket: PathBuf,
    /// Start the daemon on demand (None: only connect).
    pub autostart: Option<Autostart>,
    /// Connections (and shm slots) per sector session at most.
    pub connections: usize,
    /// Bytes of shared memory per connection.
    pub shm_len: usize,
}

impl CustodianConfig {
    /// Connects to `socket` only, never starting a daemon.
    pub fn new(socket: impl Into<PathBuf>) -> CustodianConfig {
        CustodianConfig {
            socket: socket.into(),
            autostart: None,
            connections: 4,
            shm_len: 1 << 20,
        }
    }

    /// The system custodian, started on demand from the executable found
    /// next to this program or on `PATH`.
    pub fn system_default() -> CustodianConfig {
        let mut c = CustodianConfig::new(DEFAULT_SOCKET);
        c.autostart = find_daemon().map(|program| Autostart {
            program,
            args: Vec::new(),
        });
        c
    }

    /// Starts `program args… --daemonize` when the socket does not answer.
    pub fn with_autostart(mut self, program: impl Into<PathBuf>, args: Vec<OsString>) -> Self {
        self.autostart = Some(Autostart {
            program: program.into(),
            args,
        });
        self
    }
}

/// `wrapcrypt-custodiand` next to the current executable, else on `PATH`.
pub fn find_daemon() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(DAEMON_NAME)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(DAEMON_NAME));
    beside.into_iter().chain(on_path).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// One authenticated, version-negotiated connection.
struct Conn {
    sock: UnixStream,
}

impl Conn {
    fn open(cfg: &CustodianConfig) -> Result<Conn, ProviderError> {
        let sock = match UnixStream::connect(&cfg.socket) {
            Ok(s) => s,
            Err(e) if absent(&e) && cfg.autostart.is_some() => {
                start_daemon(cfg)?;
                connect_retry(&cfg.socket)?
            }
            Err(source) => {
                return Err(ProviderError::Connect {
                    path: cfg.socket.clone(),
                    source,
                })
            }
        };
        check_server(&cfg.socket, &sock)?;
        let c = Conn { sock };
        match c.call(
            &Request::Hello {
                min: PROTOCOL_MIN_VERSION,
                max: PROTOCOL_VERSION,
            },
            None,
        )? {
            Response::Hello { version, .. }
                if (PROTOCOL_MIN_VERSION..=PROTOCOL_VERSION).contains(&version) =>
            {
                Ok(c)
            }
            other => Err(ProviderError::Protocol(format!(
                "unexpected answer to HELLO: {other:?}"
            ))),
        }
    }

    fn call(
        &self,
        req: &Request,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<Response, ProviderError> {
        let mut body = req.encode();
        let sent = send_frame(&self.sock, &body, fd);
        zeroize::Zeroize::zeroize(&mut body);
        sent?;
        let (frame, _) = recv_frame(&self.sock)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the key custodian closed the connection",
            )
        })?;
        match Response::decode(req.opcode(), &frame.0) {
            Err(e) => Err(ProviderError::Protocol(e.to_string())),
            Ok(Err((code, message))) => Err(ProviderError::refused(CUSTODIAN, code, message)),
            Ok(Ok(r)) => Ok(r),
        }
    }
}

/// The custodian holds master keys and receives clear keys (IMPORT): only a
/// daemon run by root or by this user may be it. Another user's process
/// listening on the path (a stale socket taken over, a wrong
/// WRAPCRYPT_CUSTODIAN_SOCKET) is refused before anything is sent.
fn check_server(path: &Path, sock: &UnixStream) -> Result<(), ProviderError> {
    let (uid, _, pid) =
        crate::transport::peer_credentials(sock).map_err(|source| ProviderError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    // SAFETY: geteuid has no failure mode.
    let me = unsafe { libc::geteuid() };
    if uid == 0 || uid == me {
        return Ok(());
    }
    Err(ProviderError::refused(
        CUSTODIAN,
        crate::ErrorCode::PermissionDenied,
        format!(
            "the process serving {} (pid {pid}) runs as uid {uid}, neither root nor you; \
             refusing to use it as the key custodian",
            path.display()
        ),
    ))
}

fn absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

fn start_daemon(cfg: &CustodianConfig) -> Result<(), ProviderError> {
    let a = cfg.autostart.as_ref().expect("checked by caller");
    let spawn_err = |source| ProviderError::Spawn {
        program: a.program.clone(),
        source,
    };
    // The daemon forks once its socket is bound and the parent exits, so
    // waiting here means "ready" and leaves no zombie behind. Its stderr
    // is captured: a failed start becomes this error's one line instead of
    // extra lines on the client's terminal.
    let mut child = Command::new(&a.program)
        .args(&a.args)
        .arg("--daemonize")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let pipe = child.stderr.take();
    let status = child.wait().map_err(spawn_err)?;
    if !status.success() {
        let said = pipe.map(read_available).unwrap_or_default();
        let said = said
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.strip_prefix("wrapcrypt-custodiand: ").unwrap_or(l));
        return Err(spawn_err(io::Error::other(match said {
            Some(line) => line.to_string(),
            None => format!("it exited with {status}; see its log in the state directory"),
        })));
    }
    Ok(())
}

/// What a daemon that has exited left in its stderr pipe, without waiting
/// for the end of the pipe: a forked child that failed to redirect its
/// stderr could hold the write end open for ever.
fn read_available(pipe: std::process::ChildStderr) -> String {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fd = pipe.as_raw_fd();
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let mut buf = Vec::new();
    let _ = pipe.take(4096).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn connect_retry(path: &Path) -> Result<UnixStream, ProviderError> {
    let mut last = None;
    for _ in 0..100 {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if absent(&e) => last = Some(e),
            Err(e) => {
                last = Some(e);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(ProviderError::Connect {
        path: path.to_path_buf(),
        source: last.unwrap_or_else(|| io::ErrorKind::TimedOut.into()),
    })
}

/// Client of the key custodian daemon.
#[derive(Clone, Debug)]
pub struct CustodianProvider {
    cfg: CustodianConfig,
}

impl CustodianProvider {
    /// A provider using `cfg`.
    pub fn new(cfg: CustodianConfig) -> CustodianProvider {
        CustodianProvider { cfg }
    }

    fn call(&self, req: &Request) -> Result<Response, ProviderError> {
        Conn::open(&self.cfg)?.call(req, None)
    }

    fn check(wkb: &Wkb) -> Result<Vec<u8>, ProviderError> {
        if wkb.provider() != CUSTODIAN {
            return Err(ProviderError::WrongProvider {
                expected: CUSTODIAN.into(),
                found: wkb.provider().into(),
            });
        }
        Ok(wkb.encode())
    }

    fn wkb(&self, req: &Request) -> Result<Wkb, ProviderError> {
        match self.call(req)? {
            Response::Wkb(b) => Ok(Wkb::parse(&b)?),
            other => Err(unexpected(other)),
        }
    }

    fn done(&self, req: &Request) -> Result<(), ProviderError> {
        match self.call(req)? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The master-key registers with their MKVPs, and how they are sealed.
    pub fn status(&self) -> Result<MasterKeyStatus, ProviderError> {
        match self.call(&Request::Status)? {
            Response::MasterKeys(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }

    /// Creates the CURRENT master key (admin).
    pub fn init(&self) -> Result<(), ProviderError> {
        self.done(&Request::Init)
    }

    /// Loads a random NEW master key (admin).
    pub fn load_new_master_key(&self) -> Result<(), ProviderError> {
        self.done(&Request::LoadNewMasterKey)
    }

    /// NEW becomes CURRENT, CURRENT becomes OLD, OLD is destroyed (admin).
    pub fn set_master_key(&self) -> Result<(), ProviderError> {
        self.done(&Request::SetMasterKey)
    }

    /// Which key-manager objects back NEW / CURRENT / OLD, and their states.
    pub fn kmip_status(&self) -> Result<KmipStatus, ProviderError> {
        match self.call(&Request::KmipStatus)? {
            Response::Kmip(k) => Ok(k),
            other => Err(unexpected(other)),
        }
    }

    /// Gets the existing key-manager object `id` into NEW (admin).
    pub fn stage_kmip_key(&self, id: &str) -> Result<(), ProviderError> {
        self.done(&Request::StageKmipKey(id.to_string()))
    }
}

fn unexpected(r: Response) -> ProviderError {
    ProviderError::Protocol(format!("unexpected response {r:?}"))
}

impl KeyProvider for CustodianProvider {
    fn name(&self) -> &str {
        CUSTODIAN
    }

    fn protection(&self) -> Protection {
        Protection::SeparateProcess
    }

    fn generate(&self, spec: &KeySpec) -> Result<Wkb, ProviderError> {
        self.wkb(&Request::Generate(*spec))
    }

    fn import(&self, clear: &SecretBytes, spec: &KeySpec) -> Result<Wkb, ProviderError> {
        self.wkb(&Request::Import(
            *spec,
            SecretBytes::copy_from(clear.expose_secret()),
        ))
    }

    fn validate(&self, wkb: &Wkb) -> Result<KeyStatus, ProviderError> {
        match self.call(&Request::Validate(Self::check(wkb)?))? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    fn verification_pattern(&self, wkb: &Wkb) -> Result<String, ProviderError> {
        match self.call(&Request::VerificationPattern(Self::check(wkb)?))? {
            Response::Vp(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    fn rewrap(&self, wkb: &Wkb, direction: RewrapDirection) -> Result<Wkb, ProviderError> {
        self.wkb(&Request::Rewrap(direction, Self::check(wkb)?))
    }

    fn open_cipher(
        &self,
        wkb: &Wkb,
        sector_size: usize,
    ) -> Result<Arc<dyn SectorCipher>, ProviderError> {
        let s = CustodianSession {
            cfg: self.cfg.clone(),
            wkb: Self::check(wkb)?,
            sector_size,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                total: 0,
            }),
            freed: Condvar::new(),
            shared: Mutex::new(Vec::new()),
        };
        // Open one slot now so a bad blob or sector size fails here, not on
        // the first read.
        let first = s.new_slot()?;
        s.pool.lock().expect("pool lock").put_new(first);
        Ok(Arc::new(s))
    }
}

/// One connection with its shared memory and daemon-side session.
struct Slot {
    conn: Conn,
    shm: Shm,
    session: u32,
}

struct Pool {
    idle: Vec<Slot>,
    total: usize,
}

impl Pool {
    fn put_new(&mut self, s: Slot) {
        self.idle.push(s);
        self.total += 1;
    }
}

/// A sector session in the custodian (`SectorCipher` for the data path).
pub struct CustodianSession {
    cfg: CustodianConfig,
    wkb: Vec<u8>,
    sector_size: usize,
    pool: Mutex<Pool>,
    freed: Condvar,
    /// Buffers handed out by `shared_buffer`: data inside one of them is
    /// processed in place, without the copies through a pool slot.
    shared: Mutex<Vec<Weak<SharedLink>>>,
}

/// A caller-owned shared-memory buffer's own connection and daemon session.
struct SharedLink {
    shm: Shm,
    chan: Mutex<Option<(Conn, u32)>>,
}

impl SharedLink {
    fn contains(&self, data: &[u8]) -> Option<usize> {
        let base = self.shm.as_ptr() as usize;
        let start = data.as_ptr() as usize;
        (start >= base && start + data.len() <= base + self.shm.len()).then(|| start - base)
    }
}

/// The memory of a [`SharedLink`], owned by the caller (a FUSE worker).
struct SharedBuf {
    link: Arc<SharedLink>,
}

impl std::ops::Deref for SharedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the mapping lives as long as the link; only this owner
        // touches it, and the daemon only while a CRYPT of ours is pending.
        unsafe { std::slice::from_raw_parts(self.link.shm.as_ptr(), self.link.shm.len()) }
    }
}

impl std::ops::DerefMut for SharedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref; &mut self makes this the only slice.
        unsafe { std::slice::from_raw_parts_mut(self.link.shm.as_ptr(), self.link.shm.len()) }
    }
}

impl CustodianSession {
    fn new_slot(&self) -> Result<Slot, ProviderError> {
        let shm_len = (self.cfg.shm_len / self.sector_size.max(1)).max(1) * self.sector_size;
        let shm = Shm::create(shm_len)?;
        let (conn, session) = self.open_session(&shm)?;
        Ok(Slot { conn, shm, session })
    }

    /// A new connection with a daemon session over `shm`.
    fn open_session(&self, shm: &Shm) -> Result<(Conn, u32), ProviderError> {
        let conn = Conn::open(&self.cfg)?;
        let req = Request::OpenSession {
            wkb: self.wkb.clone(),
            sector_size: self.sector_size as u32,
            shm_len: shm.len() as u64,
        };
        match conn.call(&req, Some(shm.fd().as_fd()))? {
            Response::Session(session) => Ok((conn, session)),
            other => Err(unexpected(other)),
        }
    }

    fn new_shared(&self, len: usize) -> Result<SharedBuffer, ProviderError> {
        let s = self.sector_size.max(1);
        let shm = Shm::create(len.div_ceil(s).max(1) * s)?;
        let chan = self.open_session(&shm)?;
        let link = Arc::new(SharedLink {
            shm,
            chan: Mutex::new(Some(chan)),
        });
        let mut reg = self.shared.lock().expect("shared lock");
        reg.retain(|w| w.strong_count() > 0);
        reg.push(Arc::downgrade(&link));
        Ok(Box::new(SharedBuf { link }))
    }

    /// The shared buffer `data` lies in, with its offset there.
    fn shared_of(&self, data: &[u8]) -> Option<(Arc<SharedLink>, usize)> {
        let reg = self.shared.lock().expect("shared lock");
        reg.iter()
            .filter_map(Weak::upgrade)
            .find_map(|l| l.contains(data).map(|off| (l, off)))
    }

    /// CRYPT in place in a shared buffer: no copies.
    fn crypt_shared(
        &self,
        link: &SharedLink,
        op: CryptOp,
        iv_sector: u64,
        offset: usize,
        len: usize,
    ) -> Result<(), ProviderError> {
        let mut chan = link.chan.lock().expect("channel lock");
        // A daemon restart drops sessions; one retry on a fresh connection.
        for attempt in 0..2 {
            if chan.is_none() {
                *chan = Some(self.open_session(&link.shm)?);
            }
            let (conn, session) = chan.as_ref().expect("set above");
            let req = Request::Crypt {
                session: *session,
                op,
                iv_sector,
                offset: offset as u64,
                len: len as u64,
            };
            match conn.call(&req, None) {
                Ok(_) => return Ok(()),
                Err(ProviderError::Transport(_)) if attempt == 0 => *chan = None,
                Err(e) => {
                    if matches!(e, ProviderError::Transport(_)) {
                        *chan = None;
                    }
                    return Err(e);
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Takes an idle slot, opens a new one under the limit, or waits.
    fn take(&self) -> Result<Slot, ProviderError> {
        let mut p = self.pool.lock().expect("pool lock");
        loop {
            if let Some(s) = p.idle.pop() {
                return Ok(s);
            }
            if p.total < self.cfg.connections.max(1) {
                p.total += 1;
                drop(p);
                return self.new_slot().inspect_err(|_| self.forget());
            }
            p = self.freed.wait(p).expect("pool lock");
        }
    }

    fn give_back(&self, s: Slot) {
        self.pool.lock().expect("pool lock").idle.push(s);
        self.freed.notify_one();
    }

    fn forget(&self) {
        self.pool.lock().expect("pool lock").total -= 1;
        self.freed.notify_one();
    }

    fn crypt(&self, op: CryptOp, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        if !data.len().is_multiple_of(self.sector_size) {
            return Err(SectorError::Misaligned {
                len: data.len(),
                sector_size: self.sector_size,
            });
        }
        if let Some((link, off)) = self.shared_of(data) {
            return self
                .crypt_shared(&link, op, iv_sector, off, data.len())
                .map_err(|e| SectorError::Provider(e.to_string()));
        }
        let chunk = (self.cfg.shm_len / self.sector_size).max(1) * self.sector_size;
        for (i, part) in data.chunks_mut(chunk).enumerate() {
            let iv = iv_sector.wrapping_add((i * chunk / 512) as u64);
            self.crypt_chunk(op, iv, part)
                .map_err(|e| SectorError::Provider(e.to_string()))?;
        }
        Ok(())
    }

    fn crypt_chunk(&self, op: CryptOp, iv: u64, part: &mut [u8]) -> Result<(), ProviderError> {
        // A daemon restart drops sessions; one retry on a fresh slot reopens it.
        let mut attempt = 0;
        loop {
            let mut slot = self.take()?;
            slot.shm.as_mut_slice()[..part.len()].copy_from_slice(part);
            let req = Request::Crypt {
                session: slot.session,
                op,
                iv_sector: iv,
                offset: 0,
                len: part.len() as u64,
            };
            match slot.conn.call(&req, None) {
                Ok(_) => {
                    part.copy_from_slice(&slot.shm.as_mut_slice()[..part.len()]);
                    self.give_back(slot);
                    return Ok(());
                }
                Err(ProviderError::Transport(e)) if attempt == 0 => {
                    drop(slot);
                    self.forget();
                    attempt += 1;
                    let _ = e;
                }
                Err(e) => {
                    if matches!(e, ProviderError::Transport(_)) {
                        drop(slot);
                        self.forget();
                    } else {
                        self.give_back(slot);
                    }
                    return Err(e);
                }
            }
        }
    }
}

impl SectorCipher for CustodianSession {
    fn sector_size(&self) -> usize {
        self.sector_size
    }

    fn encrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.crypt(CryptOp::Encrypt, iv_sector, data)
    }

    fn decrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.crypt(CryptOp::Decrypt, iv_sector, data)
    }

    fn shared_buffer(&self, len: usize) -> Option<SharedBuffer> {
        // Beyond the daemon's limit, or if it cannot be reached now, the
        // caller's own memory and the copying path still work.
        if len as u64 > MAX_SHARED {
            return None;
        }
        self.new_shared(len).ok()
    }
}

/// Largest buffer `shared_buffer` hands out (the daemon maps at most 64 MiB).
const MAX_SHARED: u64 = 64 << 20;
