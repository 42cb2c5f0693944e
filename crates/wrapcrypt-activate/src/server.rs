//! The server side of an activation: FUSE session, workers, loop device,
//! link and state file.

use crate::config::{ActiveInfo, ServeConfig};
use crate::control::{self, teardown};
use crate::error::ActivateError;
use crate::fuse::{self, FileServer};
use crate::handle::ServerHandle;
use crate::loopdev;
use crate::state::{self, check_name};
use crate::volume::{AlignedBuf, Volume, BUF_ALIGN};
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use wrapcrypt_sector::SectorCipher;

/// `prctl` option (Linux 5.6) missing from the libc crate.
const PR_SET_IO_FLUSHER: libc::c_int = 57;

/// Stack size of worker threads: they keep their buffers on the heap.
const WORKER_STACK: usize = 256 * 1024;

/// Number of FUSE worker threads: sixteen per CPU, between 8 and 64.
/// Each worker serves one request at a time and blocks on backing I/O, so
/// the workers are the queue depth the backing sees; the loop device keeps
/// up to `max_background` (64) requests in flight. Measured on 2 CPUs
/// (scripts/bench.d/NOTES.md): 4 KiB random reads at QD32 reached 0.08 of
/// a raw loop device with 4 workers, 0.48 with 8, 0.61 with 16, 0.81 with
/// 32; sequential 1 MiB and QD1 did not change; RSS 10 → 28 MiB.
fn worker_count() -> usize {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cpus * 16).clamp(8, 64)
}

/// Opens the backing for the server: O_DIRECT when the device accepts
/// aligned direct reads at the data offset, otherwise buffered.
fn open_backing(cfg: &ServeConfig, sector: usize) -> Result<(File, bool), ActivateError> {
    let is_blk = fs::metadata(&cfg.backing)
        .map_err(|e| ActivateError::io("stat", &cfg.backing, e))?
        .file_type()
        .is_block_device();
    // O_EXCL on a block device claims it: it fails while mounted or mapped.
    let excl = if is_blk { libc::O_EXCL } else { 0 };
    let open = |direct: bool| {
        OpenOptions::new()
            .read(true)
            .write(!cfg.read_only)
            .custom_flags(libc::O_CLOEXEC | excl | if direct { libc::O_DIRECT } else { 0 })
            .open(&cfg.backing)
    };
    match open(true) {
        Ok(f) => {
            let mut probe = AlignedBuf::new(sector.max(BUF_ALIGN));
            // SAFETY: pread into our own aligned buffer.
            let n = unsafe {
                libc::pread(
                    f.as_raw_fd(),
                    probe.as_mut_ptr().cast(),
                    sector,
                    cfg.data_offset as libc::off_t,
                )
            };
            if n >= 0 && cfg.data_offset % sector as u64 == 0 {
                return Ok((f, true));
            }
            drop(f);
        }
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            return Err(ActivateError::BackingInUse {
                backing: cfg.backing.clone(),
                by: "another user (mounted or mapped)".into(),
            })
        }
        Err(_) => {}
    }
    open(false)
        .map(|f| (f, false))
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => ActivateError::BackingInUse {
                backing: cfg.backing.clone(),
                by: "another user".into(),
            },
            _ => ActivateError::io("open", &cfg.backing, e),
        })
}

fn data_size(cfg: &ServeConfig, backing: &mut File, sector: u64) -> Result<u64, ActivateError> {
    let have = backing
        .seek(SeekFrom::End(0))
        .map_err(|e| ActivateError::io("size of", &cfg.backing, e))?;
    let too_small = |need| ActivateError::BackingTooSmall {
        backing: cfg.backing.clone(),
        have,
        need,
    };
    let size = match cfg.data_size {
        Some(s) => {
            let need = cfg
                .data_offset
                .checked_add(s)
                .ok_or_else(|| too_small(u64::MAX))?;
            if need > have || s % sector != 0 {
                return Err(too_small(need));
            }
            s
        }
        None => have.saturating_sub(cfg.data_offset) / sector * sector,
    };
    if size == 0 {
        return Err(too_small(cfg.data_offset + sector));
    }
    Ok(size)
}

/// Makes a decrypted block device of `cfg.backing` and serves it until
/// [`crate::close`] (or an unmount/abort of the FUSE connection).
///
/// Runs in the server process. Calls `ready` exactly once: with the state
/// once `/dev/mapper/NAME` is usable, or with the error that prevented it
/// (after removing everything it had set up). Returns when the session ends.
pub fn run_server(
    cfg: ServeConfig,
    cipher: Arc<dyn SectorCipher>,
    ready: impl FnOnce(Result<&ActiveInfo, &ActivateError>),
) -> Result<(), ActivateError> {
    run_server_with_end(cfg, cipher, ready, || {})
}

/// [`run_server`], calling `on_end` as soon as the session is over (the
/// first worker that was serving returns: unmount or abort), before the
/// others are joined: workers held by the cipher (a suspended device)
/// must be let go there, or they are never joined.
pub fn run_server_with_end(
    cfg: ServeConfig,
    cipher: Arc<dyn SectorCipher>,
    ready: impl FnOnce(Result<&ActiveInfo, &ActivateError>),
    on_end: impl FnOnce(),
) -> Result<(), ActivateError> {
    run_server_controlled(cfg, cipher, |r| ready(r.map(|(i, _)| i)), on_end)
}

/// [`run_server_with_end`], handing `ready` a [`ServerHandle`] with which
/// a control thread resizes the device or changes its flags.
pub fn run_server_controlled(
    cfg: ServeConfig,
    cipher: Arc<dyn SectorCipher>,
    ready: impl FnOnce(Result<(&ActiveInfo, ServerHandle), &ActivateError>),
    on_end: impl FnOnce(),
) -> Result<(), ActivateError> {
    let mut ready = Some(ready);
    let started = start(&cfg, cipher);
    let (info, fs, workers, notify) = match started {
        Ok(s) => s,
        Err(e) => {
            (ready.take().expect("once"))(Err(&e));
            return Err(e);
        }
    };
    let handle = ServerHandle::new(
        &info.name,
        fs.clone(),
        notify,
        info.loop_device.clone().unwrap_or_default(),
    );
    (ready.take().expect("once"))(Ok((&info, handle)));
    // Threads that ended during set-up (a ring thread whose REGISTER
    // failed) do not mean the session is over.
    let ended_early = workers.iter().filter(|w| w.is_finished()).count();
    while workers.iter().filter(|w| w.is_finished()).count() == ended_early {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    on_end();
    for w in workers {
        let _ = w.join();
    }
    drop(fs);
    // The session is over (close unmounted it, or the connection was
    // aborted): make sure nothing dangles.
    teardown(&cfg.name, Some(&info))
}

type Started = (
    ActiveInfo,
    Arc<FileServer>,
    Vec<std::thread::JoinHandle<()>>,
    File,
);

fn start(cfg: &ServeConfig, cipher: Arc<dyn SectorCipher>) -> Result<Started, ActivateError> {
    check_name(&cfg.name)?;
    let sector = cipher.sector_size();
    if !(512..=4096).contains(&sector) || !sector.is_power_of_two() {
        return Err(ActivateError::SectorSize(sector));
    }
    let name = cfg.name.as_str();
    // A stale activation of this name is cleaned up; a live one refuses.
    match control::status(name) {
        Ok(_) => return Err(ActivateError::AlreadyActive(name.to_owned())),
        Err(ActivateError::NotActive(_)) | Err(ActivateError::ServerDied(_)) => {}
        Err(e) => return Err(e),
    }
    if control::mapper_exists(name) {
        return Err(ActivateError::AlreadyActive(name.to_owned()));
    }
    if let Some(by) = state::is_backing_in_use(&cfg.backing) {
        return Err(ActivateError::BackingInUse {
            backing: cfg.backing.clone(),
            by,
        });
    }
    let (mut backing, backing_direct) = open_backing(cfg, sector)?;
    let size = data_size(cfg, &mut backing, sector as u64)?;
    let backing_id =
        state::backing_id(&cfg.backing).map_err(|e| ActivateError::io("stat", &cfg.backing, e))?;

    let run = Path::new(state::RUN_DIR);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(run)
        .map_err(|e| ActivateError::io("create", run, e))?;
    let dir = state::state_dir(name);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(ActivateError::AlreadyActive(name.to_owned()))
        }
        Err(e) => return Err(ActivateError::io("create", dir, e)),
    }
    let pid = std::process::id();
    let mut info = ActiveInfo {
        version: 1,
        name: name.to_owned(),
        pid,
        pid_start: state::process_start(pid).unwrap_or(0),
        loop_device: None,
        mapper_path: state::mapper_path(name),
        fuse_file: state::fuse_file(name),
        backing: cfg.backing.clone(),
        backing_id,
        data_offset: cfg.data_offset,
        data_size: size,
        dynamic_size: cfg.data_size.is_none(),
        iv_tweak: cfg.iv_tweak,
        cipher: cfg.cipher_desc.clone(),
        sector_size: sector as u32,
        read_only: cfg.read_only,
        allow_discards: cfg.allow_discards,
        loop_direct_io: false,
        backing_direct_io: backing_direct,
        extra: cfg.extra_status.clone(),
        fuse_transport: String::new(),
    };
    // From here on, a failure undoes what was done.
    let vol = Volume::new(
        backing,
        cfg.data_offset,
        size,
        cfg.iv_tweak,
        cipher,
        cfg.read_only,
        cfg.allow_discards,
    );
    let fs = Arc::new(FileServer::new(vol));
    let mut workers = Vec::new();
    let res = setup(&mut info, &fs, &mut workers);
    match res {
        Ok(notify) => Ok((info, fs, workers, notify)),
        Err(e) => {
            let _ = teardown(name, Some(&info));
            for w in workers {
                let _ = w.join();
            }
            Err(e)
        }
    }
}

fn setup(
    info: &mut ActiveInfo,
    fs: &Arc<FileServer>,
    workers: &mut Vec<std::thread::JoinHandle<()>>,
) -> Result<File, ActivateError> {
    let name = info.name.clone();
    state::write_state(info)?;
    harden_process();
    let mp = state::mount_point(&name);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&mp)
        .map_err(|e| ActivateError::io("create", &mp, e))?;
    // enable_uring must be set before the mount: INIT is built then.
    let policy = transport_policy();
    let mut why_not = match policy {
        Transport::Dev => Some(format!("forced by {TRANSPORT_ENV}=dev")),
        _ => enable_uring().err(),
    };
    let session = fuse::mount(&mp, &format!("wrapcrypt-{name}"))
        .map_err(|e| ActivateError::io("mount FUSE on", &mp, e))?;
    fs.want_uring
        .store(why_not.is_none(), std::sync::atomic::Ordering::Release);
    let mut dev_workers = worker_count();
    if why_not.is_none() {
        // One /dev/fuse reader answers INIT and stays for what never goes
        // through the ring (FORGET, INTERRUPT, requests before the switch).
        spawn_dev_workers(fs, &session, 1, workers, &mp)?;
        dev_workers -= 1;
        why_not = start_ring(fs, &session, workers, &mp).err();
        if why_not.is_none() {
            dev_workers = 0;
        }
    }
    if let (Transport::Uring, Some(why)) = (policy, &why_not) {
        return Err(ActivateError::io(
            "start FUSE over io_uring (WRAPCRYPT_FUSE_TRANSPORT=uring) for",
            &mp,
            std::io::Error::other(why.clone()),
        ));
    }
    info.fuse_transport = match &why_not {
        None => format!(
            "io_uring ({} queues, {} entries)",
            fuse::uring::possible_cpus(),
            worker_count()
        ),
        Some(why) => format!("/dev/fuse (io_uring: {why})"),
    };
    spawn_dev_workers(fs, &session, dev_workers, workers, &mp)?;
    // Kept for notifications (resize); it never reads requests.
    let notify = session;
    let file = state::fuse_file(&name);
    let vol_file = OpenOptions::new()
        .read(true)
        .write(!info.read_only)
        .custom_flags(libc::O_CLOEXEC)
        .open(&file)
        .map_err(|e| match fs.protocol_minor() {
            m if m > 0 && m < crate::fuse::proto::MIN_MINOR_VERSION => {
                ActivateError::FuseProtocol(m)
            }
            _ => ActivateError::io("open", &file, e),
        })?;
    let label = format!("wrapcrypt:{name}");
    let att = loopdev::attach(&vol_file, info.sector_size, info.read_only, &label)
        .map_err(|e| ActivateError::io("attach loop device to", &file, e))?;
    drop(vol_file);
    info.loop_device = Some(att.path.clone());
    info.loop_direct_io = att.direct_io;
    state::write_state(info)?;
    let mapper = Path::new(state::MAPPER_DIR);
    fs::create_dir_all(mapper).map_err(|e| ActivateError::io("create", mapper, e))?;
    std::os::unix::fs::symlink(&att.path, &info.mapper_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => ActivateError::AlreadyActive(name.clone()),
        _ => ActivateError::io("link", &info.mapper_path, e),
    })?;
    Ok(notify)
}

/// Environment variable choosing the FUSE transport: `uring` (must work),
/// `dev` (`/dev/fuse` read/write), `auto` or unset (io_uring when the
/// kernel offers it, else `/dev/fuse`).
pub const TRANSPORT_ENV: &str = "WRAPCRYPT_FUSE_TRANSPORT";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Auto,
    Uring,
    Dev,
}

fn transport_policy() -> Transport {
    match std::env::var(TRANSPORT_ENV).as_deref() {
        Ok("dev") => Transport::Dev,
        Ok("uring") => Transport::Uring,
        _ => Transport::Auto,
    }
}

/// Makes sure `enable_uring` is set (root may set it; it is global and is
/// never cleared again, other servers still have to opt in).
fn enable_uring() -> Result<(), String> {
    let p = fuse::uring::ENABLE_PARAM;
    match fs::read_to_string(p) {
        Ok(v) if v.trim() == "Y" => fuse::uring::probe(),
        Ok(_) => fs::write(p, "Y")
            .map_err(|e| format!("enable_uring is N and setting it failed: {e}"))
            .and_then(|()| fuse::uring::probe()),
        Err(e) => Err(format!("kernel has no {p}: {e}")),
    }
}

/// Starts one io_uring entry thread per worker slot, spread over the
/// kernel's queues, after our INIT reply accepted io_uring. `Err` tells why
/// the connection stays on `/dev/fuse`.
fn start_ring(
    fs: &Arc<FileServer>,
    session: &File,
    workers: &mut Vec<std::thread::JoinHandle<()>>,
    mp: &Path,
) -> Result<(), String> {
    use std::sync::atomic::Ordering::Acquire;
    let t0 = std::time::Instant::now();
    while !fs.init_done.load(Acquire) {
        if t0.elapsed() > std::time::Duration::from_secs(10) {
            return Err("no INIT from the kernel within 10 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if !fs.uring_offered.load(Acquire) {
        return Err("kernel did not offer FUSE_OVER_IO_URING in INIT".into());
    }
    let queues = fuse::uring::possible_cpus();
    let (tx, rx) = std::sync::mpsc::channel();
    let n = worker_count().max(queues);
    let mut started = 0;
    for i in 0..n {
        let dev = fuse::clone_fd(session).map_err(|e| format!("clone /dev/fuse: {e}"))?;
        let fs = Arc::clone(fs);
        let tx = tx.clone();
        let qid = (i % queues) as u16;
        let h = std::thread::Builder::new()
            .name(format!("wrapcrypt-ring{i}"))
            .stack_size(WORKER_STACK)
            .spawn(move || {
                // SAFETY: prctl with integer arguments (see spawn_dev_workers).
                unsafe { libc::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) };
                wrapcrypt_secret::protect_thread_stack();
                let _ = fuse::uring::serve(dev.as_raw_fd(), qid, &fs, tx);
                drop(dev);
            });
        match h {
            Ok(h) => workers.push(h),
            Err(e) => {
                let _ = ActivateError::io("start ring thread for", mp, e);
                break;
            }
        }
        started += 1;
    }
    drop(tx);
    let mut err = None;
    for _ in 0..started {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => err = err.or(Some(e)),
            Err(_) => err = err.or(Some(libc::EIO)),
        }
    }
    match (err, started == n) {
        (None, true) => Ok(()),
        (Some(e), _) => Err(format!(
            "REGISTER failed: {}",
            std::io::Error::from_raw_os_error(e)
        )),
        (None, false) => Err("could not start all ring threads".into()),
    }
}

fn spawn_dev_workers(
    fs: &Arc<FileServer>,
    session: &File,
    count: usize,
    workers: &mut Vec<std::thread::JoinHandle<()>>,
    mp: &Path,
) -> Result<(), ActivateError> {
    let mut devs = Vec::new();
    for _ in 0..count {
        devs.push(
            fuse::clone_fd(session).map_err(|e| ActivateError::io("clone FUSE fd for", mp, e))?,
        );
    }
    for dev in devs {
        let i = workers.len();
        let fs = Arc::clone(fs);
        let h = std::thread::Builder::new()
            .name(format!("wrapcrypt-fuse{i}"))
            .stack_size(WORKER_STACK)
            .spawn(move || {
                // Requests are on the writeback path of the loop device:
                // allocations here must not recurse into that writeback.
                // SAFETY: prctl with integer arguments.
                unsafe { libc::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) };
                // Decrypted data and cipher register spills pass through
                // this stack: keep it out of core dumps from the start.
                wrapcrypt_secret::protect_thread_stack();
                let _ = fuse::serve(dev, &fs);
            })
            .map_err(|e| ActivateError::io("start worker for", mp, e))?;
        workers.push(h);
    }
    Ok(())
}

/// The server holds (access to) keys: keep it out of core dumps and swap.
fn harden_process() {
    // SAFETY: prctl/mlockall with integer arguments; failures only weaken
    // hardening and are not fatal.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT);
    }
}
