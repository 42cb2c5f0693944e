//! The `custodian` provider: a client of `wrapcrypt-custodiand`.
//!
//! Every key operation opens a short connection. A sector session's
//! buffers (the FUSE workers' request buffers, and a small pool of slots
//! for callers' own memory) each have a sealed memfd. With a version-2
//! daemon they are all attached to one connection whose request ring
//! (crate::ring) carries the CRYPTs; with a version-1 peer each buffer has
//! its own connection and daemon session and every CRYPT is a socket round
//! trip.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{SectorCipher, SectorError, SharedBuffer};

use crate::error::ProviderError;
use crate::protocol::{
    CryptOp, Request, Response, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION, RING_VERSION,
};
use crate::ring::{Ring, RingRequest};
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
    /// Daemon threads serving the version-2 request ring; 0 turns the
    /// ring off (every CRYPT a socket round trip, as with a version-1
    /// daemon).
    pub ring_threads: u8,
    /// µs a client spins for its ring answer before it sleeps.
    pub ring_client_spin_us: u16,
    /// µs a daemon ring thread polls for work before it sleeps (≤ 50).
    pub ring_daemon_spin_us: u16,
}

/// Ring threads asked for by default (docs/custodian-ring.md: measured).
pub const DEFAULT_RING_THREADS: u8 = 2;
/// Client spin by default, µs.
pub const DEFAULT_RING_CLIENT_SPIN_US: u16 = 10;
/// Daemon spin by default, µs.
pub const DEFAULT_RING_DAEMON_SPIN_US: u16 = 10;

/// `WRAPCRYPT_CUSTODIAN_RING`: `off`, or `THREADS[,CLIENT_SPIN_US[,DAEMON_SPIN_US]]`
/// (a tuning knob for benchmarks; unset means the defaults).
fn ring_from_env() -> (u8, u16, u16) {
    let d = (
        DEFAULT_RING_THREADS,
        DEFAULT_RING_CLIENT_SPIN_US,
        DEFAULT_RING_DAEMON_SPIN_US,
    );
    let Ok(v) = std::env::var("WRAPCRYPT_CUSTODIAN_RING") else {
        return d;
    };
    if v == "off" || v == "0" {
        return (0, d.1, d.2);
    }
    let mut it = v.split(',').map(|x| x.trim().parse::<u16>().ok());
    let t = it.next().flatten().map_or(d.0, |n| n.min(4) as u8);
    let c = it.next().flatten().unwrap_or(d.1).min(1000);
    let s = it.next().flatten().unwrap_or(d.2);
    (t, c, s)
}

impl CustodianConfig {
    /// Connects to `socket` only, never starting a daemon.
    pub fn new(socket: impl Into<PathBuf>) -> CustodianConfig {
        CustodianConfig {
            socket: socket.into(),
            autostart: None,
            connections: 4,
            shm_len: 1 << 20,
            ring_threads: 0,
            ring_client_spin_us: 0,
            ring_daemon_spin_us: 0,
        }
        .with_ring_env()
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

    fn with_ring_env(mut self) -> Self {
        (
            self.ring_threads,
            self.ring_client_spin_us,
            self.ring_daemon_spin_us,
        ) = ring_from_env();
        self
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
    /// The version HELLO chose.
    version: u16,
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
        let mut c = Conn { sock, version: 0 };
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
                c.version = version;
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
        Ok(self.open_session(wkb, sector_size)?)
    }
}

impl CustodianProvider {
    /// A sector session ([`KeyProvider::open_cipher`]) as its own type, for
    /// callers that read its [`CustodianSession::stats`].
    pub fn open_session(
        &self,
        wkb: &Wkb,
        sector_size: usize,
    ) -> Result<Arc<CustodianSession>, ProviderError> {
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
            ring: Mutex::new(None),
            no_ring: AtomicBool::new(self.cfg.ring_threads == 0),
            ring_requests: AtomicU64::new(0),
            socket_requests: AtomicU64::new(0),
        };
        // Open one slot now so a bad blob or sector size fails here, not on
        // the first read.
        let first = s.new_link(s.slot_len())?;
        s.pool.lock().expect("pool lock").put_new(first);
        Ok(Arc::new(s))
    }
}

struct Pool {
    idle: Vec<Arc<SharedLink>>,
    total: usize,
}

impl Pool {
    fn put_new(&mut self, s: Arc<SharedLink>) {
        self.idle.push(s);
        self.total += 1;
    }
}

/// Slots in the request ring: one per buffer (32 FUSE workers use up to
/// 64); buffers beyond it use a connection of their own.
const RING_ENTRIES: u32 = 128;
/// How often a client sleeping on a ring answer checks that the daemon
/// still holds the connection (a dead daemon gives an error this fast).
const RING_CHECK: Duration = Duration::from_millis(100);

/// A version-2 connection serving a session's request ring: every
/// buffer of the session is attached to it.
struct RingConn {
    /// For ATTACH_SHM (the ring itself needs no socket traffic).
    conn: Mutex<Conn>,
    fd: RawFd,
    session: u32,
    ring: Ring,
    /// OPEN_SESSION's memfd (buffer 0, one sector, unused).
    _first: Shm,
    free: Mutex<Vec<u32>>,
    dead: AtomicBool,
}

impl RingConn {
    /// Whether the daemon still holds the connection: a dead daemon's end
    /// of the socket is closed by the kernel (POLLHUP).
    fn alive(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the descriptor lives as long as self.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        let gone = r > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP) != 0;
        if gone {
            self.dead.store(true, Ordering::SeqCst);
        }
        !gone
    }
}

/// How a buffer reaches the daemon.
enum Chan {
    /// Not connected (yet, or since the daemon went away).
    None,
    /// Version 1: a connection and a daemon session of its own.
    Socket(Conn, u32),
    /// Version 2: attached to the session's ring as `buffer`, owning `slot`.
    Ring {
        rc: Arc<RingConn>,
        buffer: u32,
        slot: u32,
    },
}

/// Counters of a session's data path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// CRYPTs sent through the shared-memory ring.
    pub ring_requests: u64,
    /// CRYPTs sent as socket round trips.
    pub socket_requests: u64,
    /// Requests the daemon reports having served through the current ring.
    pub daemon_served: u64,
    /// Times a client had to wake a sleeping daemon ring thread.
    pub daemon_wakeups: u64,
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
    /// The current ring connection (version 2).
    ring: Mutex<Option<Arc<RingConn>>>,
    /// Set when the daemon speaks only version 1 or refused the ring.
    no_ring: AtomicBool,
    ring_requests: AtomicU64,
    socket_requests: AtomicU64,
}

/// A buffer's shared memory and its way to the daemon.
struct SharedLink {
    shm: Shm,
    chan: Mutex<Chan>,
}

impl SharedLink {
    fn contains(&self, data: &[u8]) -> Option<usize> {
        let base = self.shm.as_ptr() as usize;
        let start = data.as_ptr() as usize;
        (start >= base && start + data.len() <= base + self.shm.len()).then(|| start - base)
    }
}

impl Drop for SharedLink {
    fn drop(&mut self) {
        // The slot goes back to the ring; the daemon keeps the (zeroed)
        // mapping until the session ends.
        if let Chan::Ring { rc, slot, .. } = &*self.chan.get_mut().expect("channel lock") {
            rc.free.lock().expect("free slots").push(*slot);
        }
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
    /// Counters of this session's data path (which path carried the CRYPTs).
    pub fn stats(&self) -> SessionStats {
        let rc = self.ring.lock().expect("ring lock").clone();
        SessionStats {
            ring_requests: self.ring_requests.load(Ordering::Relaxed),
            socket_requests: self.socket_requests.load(Ordering::Relaxed),
            daemon_served: rc.as_ref().map_or(0, |r| r.ring.served()),
            daemon_wakeups: rc.as_ref().map_or(0, |r| r.ring.wakeups()),
        }
    }

    fn slot_len(&self) -> usize {
        (self.cfg.shm_len / self.sector_size.max(1)).max(1) * self.sector_size
    }

    /// A buffer of `len` bytes (whole sectors) with its channel open.
    fn new_link(&self, len: usize) -> Result<Arc<SharedLink>, ProviderError> {
        let s = self.sector_size.max(1);
        let shm = Shm::create(len.div_ceil(s).max(1) * s)?;
        let chan = self.connect(&shm)?;
        Ok(Arc::new(SharedLink {
            shm,
            chan: Mutex::new(chan),
        }))
    }

    /// Attaches `shm` to the ring, or else opens a connection for it.
    fn connect(&self, shm: &Shm) -> Result<Chan, ProviderError> {
        if let Some((rc, buffer, slot)) = self.ring_attach(shm)? {
            return Ok(Chan::Ring { rc, buffer, slot });
        }
        let (conn, session) = self.open_session(shm)?;
        Ok(Chan::Socket(conn, session))
    }

    /// A new connection with a daemon session over `shm`.
    fn open_session(&self, shm: &Shm) -> Result<(Conn, u32), ProviderError> {
        let conn = Conn::open(&self.cfg)?;
        let session = Self::session_on(&conn, &self.wkb, self.sector_size, shm)?;
        Ok((conn, session))
    }

    fn session_on(
        conn: &Conn,
        wkb: &[u8],
        sector_size: usize,
        shm: &Shm,
    ) -> Result<u32, ProviderError> {
        let req = Request::OpenSession {
            wkb: wkb.to_vec(),
            sector_size: sector_size as u32,
            shm_len: shm.len() as u64,
        };
        match conn.call(&req, Some(shm.fd().as_fd()))? {
            Response::Session(session) => Ok(session),
            other => Err(unexpected(other)),
        }
    }

    /// A ring connection, or None when the daemon speaks only version 1
    /// or refuses START_RING (then this session never asks again).
    fn start_ring(&self) -> Result<Option<RingConn>, ProviderError> {
        let conn = Conn::open(&self.cfg)?;
        if conn.version < RING_VERSION {
            return Ok(None);
        }
        let first = Shm::create(self.sector_size.max(512))?;
        let session = Self::session_on(&conn, &self.wkb, self.sector_size, &first)?;
        let ring = Ring::new(
            Shm::create(crate::ring::ring_len(RING_ENTRIES))?,
            RING_ENTRIES,
            true,
        )?;
        let req = Request::StartRing {
            session,
            entries: RING_ENTRIES,
            threads: self.cfg.ring_threads.max(1),
            spin_us: self.cfg.ring_daemon_spin_us,
        };
        match conn.call(&req, Some(ring.shm().fd().as_fd())) {
            Ok(Response::Done) => {}
            Ok(other) => return Err(unexpected(other)),
            Err(ProviderError::Refused { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(Some(RingConn {
            fd: conn.sock.as_raw_fd(),
            conn: Mutex::new(conn),
            session,
            ring,
            _first: first,
            free: Mutex::new((0..RING_ENTRIES).rev().collect()),
            dead: AtomicBool::new(false),
        }))
    }

    /// Attaches `shm` to the current ring (starting one if needed).
    fn ring_attach(&self, shm: &Shm) -> Result<Option<(Arc<RingConn>, u32, u32)>, ProviderError> {
        if self.no_ring.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let rc = {
            let mut cur = self.ring.lock().expect("ring lock");
            if cur.as_ref().is_some_and(|r| r.dead.load(Ordering::SeqCst)) {
                *cur = None;
            }
            if cur.is_none() {
                match self.start_ring()? {
                    Some(r) => *cur = Some(Arc::new(r)),
                    None => {
                        self.no_ring.store(true, Ordering::Relaxed);
                        return Ok(None);
                    }
                }
            }
            cur.clone().expect("set above")
        };
        let Some(slot) = rc.free.lock().expect("free slots").pop() else {
            return Ok(None);
        };
        let req = Request::AttachShm {
            session: rc.session,
            shm_len: shm.len() as u64,
        };
        let r = rc
            .conn
            .lock()
            .expect("ring connection")
            .call(&req, Some(shm.fd().as_fd()));
        match r {
            Ok(Response::Session(buffer)) => {
                rc.ring.claim(slot);
                Ok(Some((rc, buffer, slot)))
            }
            other => {
                rc.free.lock().expect("free slots").push(slot);
                match other {
                    Ok(o) => Err(unexpected(o)),
                    Err(e) => {
                        if matches!(e, ProviderError::Transport(_)) {
                            rc.dead.store(true, Ordering::SeqCst);
                        }
                        Err(e)
                    }
                }
            }
        }
    }

    fn new_shared(&self, len: usize) -> Result<SharedBuffer, ProviderError> {
        let link = self.new_link(len)?;
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

    /// CRYPT in place in a buffer: through the ring, or a socket round trip.
    fn crypt_shared(
        &self,
        link: &SharedLink,
        op: CryptOp,
        iv_sector: u64,
        offset: usize,
        len: usize,
        prepare: &mut dyn FnMut(),
    ) -> Result<(), ProviderError> {
        let mut chan = link.chan.lock().expect("channel lock");
        // A daemon restart drops sessions; one retry on a fresh connection.
        for attempt in 0..2 {
            prepare();
            if let Chan::Ring { rc, .. } = &*chan {
                if rc.dead.load(Ordering::SeqCst) {
                    *chan = Chan::None;
                }
            }
            if matches!(*chan, Chan::None) {
                *chan = self.connect(&link.shm)?;
            }
            let r = match &*chan {
                Chan::None => unreachable!("connected above"),
                Chan::Ring { rc, buffer, slot } => {
                    // No spin for a large request: its crypto alone outlasts
                    // the spin, which would only take CPU from it.
                    let spin = if len < NO_SPIN_FROM {
                        Duration::from_micros(self.cfg.ring_client_spin_us.into())
                    } else {
                        Duration::ZERO
                    };
                    self.ring_requests.fetch_add(1, Ordering::Relaxed);
                    let req = RingRequest {
                        buffer: *buffer,
                        op: match op {
                            CryptOp::Encrypt => 1,
                            CryptOp::Decrypt => 2,
                        },
                        iv_sector,
                        offset: offset as u64,
                        len: len as u64,
                    };
                    rc.ring.submit(*slot, &req);
                    match rc.ring.wait(*slot, spin, RING_CHECK, || rc.alive()) {
                        Ok(0) => Ok(()),
                        Ok(code) => Err(ProviderError::refused(
                            CUSTODIAN,
                            crate::ErrorCode::from_code(code as u16),
                            format!(
                                "the custodian refused a ring request ({len} bytes at {offset} of buffer {buffer})"
                            ),
                        )),
                        Err(e) => {
                            rc.dead.store(true, Ordering::SeqCst);
                            Err(ProviderError::Transport(e))
                        }
                    }
                }
                Chan::Socket(conn, session) => {
                    self.socket_requests.fetch_add(1, Ordering::Relaxed);
                    let req = Request::Crypt {
                        session: *session,
                        op,
                        iv_sector,
                        offset: offset as u64,
                        len: len as u64,
                    };
                    conn.call(&req, None).map(|_| ())
                }
            };
            match r {
                Ok(()) => return Ok(()),
                Err(ProviderError::Transport(_)) if attempt == 0 => self.drop_chan(&mut chan),
                Err(e) => {
                    if matches!(e, ProviderError::Transport(_)) {
                        self.drop_chan(&mut chan);
                    }
                    return Err(e);
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Forgets a channel whose connection failed (its ring slot stays with
    /// the dead ring, which is dropped with its last user).
    fn drop_chan(&self, chan: &mut Chan) {
        *chan = Chan::None;
    }

    /// Takes an idle slot, opens a new one under the limit, or waits.
    fn take(&self) -> Result<Arc<SharedLink>, ProviderError> {
        let mut p = self.pool.lock().expect("pool lock");
        loop {
            if let Some(s) = p.idle.pop() {
                return Ok(s);
            }
            if p.total < self.cfg.connections.max(1) {
                p.total += 1;
                drop(p);
                return self
                    .new_link(self.slot_len())
                    .inspect_err(|_| self.forget());
            }
            p = self.freed.wait(p).expect("pool lock");
        }
    }

    fn give_back(&self, s: Arc<SharedLink>) {
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
                .crypt_shared(&link, op, iv_sector, off, data.len(), &mut || {})
                .map_err(|e| SectorError::Provider(e.to_string()));
        }
        let chunk = self.slot_len();
        for (i, part) in data.chunks_mut(chunk).enumerate() {
            let iv = iv_sector.wrapping_add((i * chunk / 512) as u64);
            self.crypt_chunk(op, iv, part)
                .map_err(|e| SectorError::Provider(e.to_string()))?;
        }
        Ok(())
    }

    /// Caller's memory: copied into a pool slot and back.
    fn crypt_chunk(&self, op: CryptOp, iv: u64, part: &mut [u8]) -> Result<(), ProviderError> {
        let slot = self.take()?;
        let base = slot.shm.as_ptr();
        let (src, n) = (part.as_ptr(), part.len());
        // Copied in before every attempt: a daemon that died half-way
        // left the slot half-done.
        // SAFETY: the slot is ours until given back; n ≤ its size.
        let mut copy_in = || unsafe { std::ptr::copy_nonoverlapping(src, base, n) };
        let r = self.crypt_shared(&slot, op, iv, 0, n, &mut copy_in);
        if r.is_ok() {
            // SAFETY: as above; the daemon is done with the region.
            unsafe { std::ptr::copy_nonoverlapping(base, part.as_mut_ptr(), part.len()) };
        }
        self.give_back(slot);
        r
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

/// Requests of this many bytes or more are not spun for: at the fastest
/// engine measured here (VAES, about 24 GB/s on one core) 256 KiB takes
/// longer than the longest default spin; 128 KiB (≈ 5–11 µs) still gains.
const NO_SPIN_FROM: usize = 256 << 10;

/// Largest buffer `shared_buffer` hands out (the daemon maps at most 64 MiB).
const MAX_SHARED: u64 = 64 << 20;
