#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod config;
mod kmip;
mod registers;
mod seal;
mod seal_error;
mod server;
mod server_kmip;
mod tpm;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use config::Config;
use kmip::KmipBackend;
use seal::Store;
use server::{Daemon, STOP};
use wrapcrypt_kmip::KmipConfig;

fn main() {
    // Before anything else: no core dumps, no ptrace by other users.
    wrapcrypt_secret::harden_process();
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("wrapcrypt-custodiand: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn run() -> Result<(), String> {
    let cfg = match Config::invocation(std::env::args_os().skip(1))? {
        config::Invocation::Run(c) => c,
        config::Invocation::Print(text) => {
            print!("{text}");
            return Ok(());
        }
    };
    if !cfg.state_dir.exists() {
        fs::create_dir_all(&cfg.state_dir)
            .and_then(|_| fs::set_permissions(&cfg.state_dir, fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("{}: {e}", cfg.state_dir.display()))?;
    }
    let lock = lock_state(&cfg.state_dir)?;
    let Some(lock) = lock else {
        // Another custodian owns this state: an on-demand start lost a race,
        // which is fine, the client connects to the winner.
        if cfg.daemonize {
            return Ok(());
        }
        return Err(format!(
            "another custodian is running on {}",
            cfg.state_dir.display()
        ));
    };
    let ready = if cfg.daemonize {
        Some(daemonize(&cfg.state_dir.join("custodiand.log"))?)
    } else {
        None
    };
    // The pid in the lock file tells an administrator (and tests) whom to stop.
    let mut lock = lock;
    let _ = lock
        .set_len(0)
        .and_then(|_| writeln!(lock, "{}", std::process::id()));
    let result = start(&cfg, ready);
    drop(lock);
    result
}

/// Everything after the (optional) fork: keys are only ever loaded here,
/// because MADV_WIPEONFORK and mlock do not survive a fork.
fn start(cfg: &Config, ready: Option<OwnedFd>) -> Result<(), String> {
    let report = |ready: &Option<OwnedFd>, msg: &str| {
        if let Some(fd) = ready {
            // SAFETY: fd is the pipe's write end we own.
            let mut f = unsafe { File::from_raw_fd(libc::dup(fd.as_raw_fd())) };
            let _ = f.write_all(msg.as_bytes());
        }
    };
    let setup = || -> Result<(Arc<Daemon>, UnixListener), String> {
        if let Err(e) = wrapcrypt_secret::lock_all_memory() {
            eprintln!("wrapcrypt-custodiand: warning: mlockall failed ({e}); keys are still in locked buffers");
        }
        install_signal_handlers();
        let kmip = match &cfg.kmip_config {
            Some(p) => Some(KmipBackend::new(KmipConfig::read(p)?)),
            None => None,
        };
        let store = Store::open(&cfg.state_dir, cfg.tcti.as_deref()).map_err(|e| e.to_string())?;
        let regs = store.load().map_err(|e| e.to_string())?;
        let d = Arc::new(Daemon::new(store, regs, cfg.allow_uids.clone(), kmip));
        // Keys that were not sealed (no TPM) come back from the key
        // manager; if it is unreachable the daemon still serves the others.
        for line in d.fetch_missing() {
            eprintln!("wrapcrypt-custodiand: {line}");
        }
        if cfg.auto_init && d.auto_init().map_err(|e| e.to_string())? {
            eprintln!("wrapcrypt-custodiand: created the CURRENT master key");
        }
        let listener = bind(&cfg.socket)?;
        Ok((d, listener))
    };
    let (d, listener) = match setup() {
        Ok(x) => x,
        Err(e) => {
            report(&ready, &format!("error: {e}"));
            return Err(e);
        }
    };
    report(&ready, "ok");
    drop(ready);
    eprintln!(
        "wrapcrypt-custodiand: serving {} (pid {})",
        cfg.socket.display(),
        std::process::id()
    );
    let r = server::serve(listener, d).map_err(|e| e.to_string());
    let _ = fs::remove_file(&cfg.socket);
    eprintln!("wrapcrypt-custodiand: stopped");
    r
}

/// Takes the state directory's lock; `None` if another daemon holds it.
fn lock_state(dir: &Path) -> Result<Option<File>, String> {
    let p = dir.join("custodiand.lock");
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(None);
    }
    Ok(Some(f))
}

fn bind(socket: &Path) -> Result<UnixListener, String> {
    let show = |e: std::io::Error| format!("{}: {e}", socket.display());
    if let Some(parent) = socket.parent() {
        fs::create_dir_all(parent).map_err(show)?;
    }
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Err(format!(
                "{}: another key custodian answers there",
                socket.display()
            ));
        }
        fs::remove_file(socket).map_err(show)?;
    }
    let l = UnixListener::bind(socket).map_err(show)?;
    // Anyone may connect; SO_PEERCRED decides who is served.
    fs::set_permissions(socket, fs::Permissions::from_mode(0o666)).map_err(show)?;
    Ok(l)
}

/// Forks; the parent waits until the child reports "ok" (socket bound,
/// keys unsealed) and exits with the child's verdict. Returns, in the
/// child, the pipe to report on.
fn daemonize(log: &Path) -> Result<OwnedFd, String> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both are fresh descriptors we own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet; the child continues normally.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(rd);
            // SAFETY: plain syscalls in the child.
            unsafe { libc::setsid() };
            redirect_stdio(log);
            Ok(wr)
        }
        _ => {
            drop(wr);
            let mut msg = String::new();
            let _ = File::from(rd).read_to_string(&mut msg);
            if msg == "ok" {
                // SAFETY: leave without running the parent's destructors.
                unsafe { libc::_exit(0) }
            }
            eprintln!(
                "wrapcrypt-custodiand: {}",
                msg.strip_prefix("error: ")
                    .unwrap_or("the daemon died while starting")
            );
            // SAFETY: as above.
            unsafe { libc::_exit(1) }
        }
    }
}

fn redirect_stdio(log: &Path) {
    let null = File::open("/dev/null");
    let out = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(log);
    // SAFETY: dup2 onto the standard descriptors.
    unsafe {
        if let Ok(n) = &null {
            libc::dup2(n.as_raw_fd(), 0);
            libc::dup2(n.as_raw_fd(), 1);
        }
        if let Ok(l) = &out {
            libc::dup2(l.as_raw_fd(), 2);
        }
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        // A client vanishing mid-reply must not kill the daemon.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}
