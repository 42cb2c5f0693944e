//! Online reencryption: the volume stays open and the reencryption runs
//! inside its FUSE server, the process that owns the data path, so no
//! request sees a half-moved hotzone (docs/reencrypt.md, "Online").
//!
//! * The client (`wrapcrypt reencrypt --active-name NAME`) checks the
//!   options, initializes the header if needed (data untouched), unlocks
//!   both keys and sends them to the server on its control socket
//!   (`/run/wrapcrypt/NAME/control`, root only, peer credentials checked),
//!   in the same payload encoding `open` uses on its pipe.
//! * The server switches its [`LiveCipher`] to a [`SplitCipher`] at the
//!   recorded boundary and runs the offline engine with an [`OnlineGate`]:
//!   each hotzone moves while no request is between its cipher and its
//!   backing I/O, and the boundary moves with it. Progress goes to the
//!   client and into `status`.
//! * The client's SIGINT (or its end) stops the run after the hotzone in
//!   flight; `close` does too. The header records the progress, so a later
//!   run, online or offline, goes on.
//!
//! Wire: the client sends one JSON line (`{"op":"reencrypt","device":…,
//! "header":…,"hotzone":…}`), a u32 LE payload length and the payload; the
//! server answers `progress DONE TOTAL` lines and one final line `done
//! BYTES STEPS RECOVERED`, `interrupted DONE TOTAL` or `error MESSAGE`. A
//! `stop` line (or EOF) from the client stops the run.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use wrapcrypt_activate::{LiveCipher, ServeConfig, SplitCipher};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::SectorCipher;
use wrapcrypt_unlock::Prompter;
use wrapcrypt_volume::reencrypt::{self, OnlineGate, ReencryptError, ReencryptKeys, ResumeOptions};
use wrapcrypt_volume::{ExitClass, Volume};

use crate::error::OpsError;
use crate::open::payload;
use crate::open::reencrypting::split_payload;
use crate::progress::Progress;
use crate::reencrypt::{
    self as ops_reencrypt, wrapped::Providers, ReencryptOptions, ReencryptOutcome,
};

/// The run in progress in this server, stopped and waited for by
/// [`shutdown`] before the server exits.
static RUNNING: Mutex<Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>> = Mutex::new(None);

/// In the server: listens on the control socket of `name` for online
/// reencryption requests, serving them through `live`.
pub fn serve(
    name: &str,
    live: Arc<LiveCipher>,
    server: Option<wrapcrypt_activate::ServerHandle>,
) -> std::io::Result<()> {
    let server = server.map(Arc::new);
    let path = wrapcrypt_activate::control_socket(name);
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let name = name.to_string();
    std::thread::Builder::new()
        .name("wc-control".into())
        .spawn(move || {
            for mut conn in l.incoming().flatten() {
                if !peer_allowed(&conn) {
                    continue;
                }
                let Some(line) = request_line(&mut conn) else {
                    continue;
                };
                let op = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v["op"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
                let busy = running.as_ref().is_some_and(|(_, h)| !h.is_finished());
                if op == "resize" || op == "refresh" {
                    let Some(server) = server.clone() else {
                        let _ = writeln!(conn, "error 1 This server cannot change its size or flags.");
                        continue;
                    };
                    if busy && op == "resize" {
                        let _ = writeln!(conn, "error 5 Device {name} is in online reencryption; wait for it or stop it before resize.");
                        continue;
                    }
                    let req = serde_json::from_str(&line).unwrap_or_default();
                    std::thread::spawn(move || crate::resize::handle(conn, &req, &server));
                    continue;
                }
                if op == "suspend" || op == "resume" || op == "abort" {
                    if busy && op != "abort" {
                        let _ = writeln!(conn, "error 5 Device {name} is in online reencryption; wait for it or stop it before luksSuspend.");
                        continue;
                    }
                    let (name, live) = (name.clone(), live.clone());
                    std::thread::spawn(move || crate::suspend::handle(conn, &op, &name, &live));
                    continue;
                }
                if busy {
                    let _ = writeln!(conn, "error A reencryption of this device is already running.");
                    continue;
                }
                if live.is_suspended() {
                    let _ = writeln!(conn, "error Device {name} is suspended; luksResume it first.");
                    continue;
                }
                let stop = Arc::new(AtomicBool::new(false));
                let (name, live, s) = (name.clone(), live.clone(), stop.clone());
                let h = std::thread::spawn(move || handle(conn, line, &name, &live, s));
                *running = Some((stop, h));
            }
        })?;
    Ok(())
}

/// In the server, as the session ends: stops a run after its hotzone in
/// flight and waits for it.
pub fn shutdown() {
    let r = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((stop, h)) = r {
        stop.store(true, Ordering::SeqCst);
        let _ = h.join();
    }
}

/// The request's first line, read byte by byte so that the payload after
/// it stays in the socket; a client that sends none within 5 s is dropped.
fn request_line(c: &mut UnixStream) -> Option<String> {
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 64 * 1024 {
        match c.read(&mut b) {
            Ok(1) if b[0] == b'\n' => {
                c.set_read_timeout(None).ok()?;
                return String::from_utf8(line).ok();
            }
            Ok(1) => line.push(b[0]),
            _ => return None,
        }
    }
    None
}

/// Root, or the server's own user (SO_PEERCRED).
fn peer_allowed(c: &UnixStream) -> bool {
    use std::os::unix::io::AsRawFd;
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt into a ucred of the given size on our socket.
    let r = unsafe {
        libc::getsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    // SAFETY: geteuid has no preconditions.
    r == 0 && (cred.uid == 0 || cred.uid == unsafe { libc::geteuid() })
}

struct Gate<'a> {
    live: &'a LiveCipher,
    split: &'a SplitCipher,
    iv_tweak: u64,
}

impl OnlineGate for Gate<'_> {
    fn exclusive(
        &self,
        start: u64,
        done: u64,
        step: &mut dyn FnMut() -> Result<(), ReencryptError>,
    ) -> Result<(), ReencryptError> {
        let iv = |b: u64| self.iv_tweak + b / 512;
        // Forward the boundary moves up to the hotzone's end, backward
        // down to its start.
        let to = if self.split.is_backward() {
            start
        } else {
            done
        };
        self.live.exclusive(iv(start), iv(done), || {
            step()?;
            self.split
                .set_boundary(iv(to))
                .map_err(|e| ReencryptError::Invalid(e.to_string()))
        })
    }
}

fn handle(conn: UnixStream, line: String, name: &str, live: &LiveCipher, stop: Arc<AtomicBool>) {
    let mut out = match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    };
    let r = run_request(conn, line, name, live, stop, &mut out);
    let line = match r {
        Ok(f) => format!("done {} {} {}", f.bytes, f.steps, f.recovered as u8),
        Err(ReencryptError::Interrupted { done, total }) => format!("interrupted {done} {total}"),
        Err(e) => format!("error {}", e.to_string().replace('\n', " ")),
    };
    let _ = writeln!(out, "{line}");
}

fn run_request(
    conn: UnixStream,
    line: String,
    name: &str,
    live: &LiveCipher,
    stop: Arc<AtomicBool>,
    out: &mut UnixStream,
) -> Result<reencrypt::Finished, ReencryptError> {
    let bad = |m: &str| ReencryptError::Invalid(m.to_string());
    let mut rd = BufReader::new(conn);
    let req: serde_json::Value = serde_json::from_str(&line).map_err(|_| bad("bad request"))?;
    let mut len = [0u8; 4];
    rd.read_exact(&mut len).map_err(|_| bad("no payload"))?;
    let mut p = SecretBytes::zeroed(u32::from_le_bytes(len) as usize);
    rd.read_exact(p.expose_secret_mut())
        .map_err(|_| bad("short payload"))?;
    let d =
        payload::decode(p.expose_secret()).map_err(|e| ReencryptError::Invalid(e.to_string()))?;
    drop(p);
    // Later lines: `stop`, or the client went away.
    let watch = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut l = String::new();
            while !stop.load(Ordering::SeqCst) {
                l.clear();
                match rd.read_line(&mut l) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if l.trim() == "stop" => break,
                    Ok(_) => continue,
                }
            }
            stop.store(true, Ordering::SeqCst);
        }
    });
    let r = (|| {
        let device = PathBuf::from(req["device"].as_str().ok_or_else(|| bad("no device"))?);
        let header = req["header"].as_str().map(PathBuf::from);
        let hotzone = req["hotzone"].as_u64();
        let mut ciphers = d.ciphers.into_iter();
        let new = ciphers.next().ok_or_else(|| bad("no new layout"))?;
        let old = ciphers.next().ok_or_else(|| bad("no old layout"))?;
        let e = |e: OpsError| ReencryptError::Invalid(e.to_string());
        let split = Arc::new(
            payload::split(new.map_err(e)?, old.map_err(e)?, d.boundary, d.backward)
                .map_err(|x| ReencryptError::Invalid(x.to_string()))?,
        );
        live.replace(split.clone() as Arc<dyn SectorCipher>)
            .map_err(|_| bad("online reencryption cannot change the sector size"))?;
        let mut vol = Volume::open(&device, header.as_deref(), true)?;
        let h = vol.luks2_header()?.clone();
        let info = h
            .meta
            .reencrypt_state()?
            .ok_or(ReencryptError::NotInReencryption)?;
        let mut k = d.keys.into_iter();
        let (kn, ko) = (k.next(), k.next());
        let keys = ReencryptKeys {
            new: info.new_digest.and(kn),
            old: info.old_digest.and(ko),
        };
        // The PIN the client sent with the keys (locked memory): the
        // engine's own session on a PKCS#11 side logs in with it.
        let provs = Providers::new(
            &h,
            crate::wrapped::ProviderChoice {
                key_provider: None,
                pin: d.pin.as_ref(),
            },
        );
        let gate = Gate {
            live,
            split: &split,
            iv_tweak: d.config.iv_tweak,
        };
        let mut last = std::time::Instant::now();
        let mut progress = |done: u64, total: u64| {
            let _ = writeln!(out, "progress {done} {total}");
            if done == total || last.elapsed().as_millis() >= 500 {
                last = std::time::Instant::now();
                let _ = wrapcrypt_activate::set_status(
                    name,
                    "reencryption",
                    &format!(
                        "online, {:.1}% ({done} of {total} bytes)",
                        done as f64 * 100.0 / total.max(1) as f64
                    ),
                );
            }
        };
        let r = reencrypt::resume(
            &mut vol,
            &keys,
            ResumeOptions {
                hotzone_size: hotzone,
                progress: Some(&mut progress),
                stop: Some(&stop),
                wrapped: Some(&provs),
                online: Some(&gate),
            },
        );
        let _ = wrapcrypt_activate::set_status(
            name,
            "reencryption",
            &match &r {
                Ok(_) => "finished".to_string(),
                Err(ReencryptError::Interrupted { done, total }) => format!(
                    "paused at {:.1}% ({done} of {total} bytes); resume with reencrypt --resume-only --active-name {name}",
                    *done as f64 * 100.0 / (*total).max(1) as f64
                ),
                Err(e) => format!("stopped: {e}"),
            },
        );
        r
    })();
    stop.store(true, Ordering::SeqCst);
    // Unblock the watcher's read.
    let _ = out.shutdown(std::net::Shutdown::Read);
    let _ = watch.join();
    r
}

/// The client: `reencrypt --active-name NAME` of the volume `vol` (its
/// header) served as NAME.
pub fn reencrypt(
    mut vol: Volume,
    name: &str,
    opts: &ReencryptOptions,
    header: Option<&Path>,
    prompter: &mut dyn Prompter,
    progress: &mut dyn Progress,
    stop: &AtomicBool,
) -> Result<ReencryptOutcome, OpsError> {
    let st = wrapcrypt_activate::status(name).map_err(|e| OpsError::usage(e.to_string()))?;
    let dev = vol.data_path().to_path_buf();
    let same = |a: &Path, b: &Path| a.canonicalize().ok() == b.canonicalize().ok();
    if !same(&st.info.backing, &dev) {
        return Err(OpsError::usage(format!(
            "Device {name} is not an activation of {}.",
            dev.display()
        )));
    }
    // Online: key, cipher and wrapped-key changes, encryption (resumed
    // with a detached header: forward) and decryption (detached header:
    // backward, no data shift). A data shift runs offline only.
    let shifted = reencrypt::state(&vol)
        .map_err(|e| OpsError::usage(e.to_string()))?
        .is_some_and(|i| {
            i.direction != wrapcrypt_format::luks2::ReencryptDirection::Forward
                && (i.moved_segment.is_some()
                    || i.mode != wrapcrypt_format::luks2::ReencryptMode::Decrypt)
        });
    if opts.mode_change.is_some_and(|m| m != "--decrypt") || shifted {
        return Err(OpsError::usage(
            "Online reencryption cannot shift data (--reduce-device-size); close the device and run it offline.",
        ));
    }
    // The open device keeps its block size: the sector size stays.
    let cur_sector = vol
        .luks2_header()?
        .meta
        .segments
        .values()
        .next()
        .map(|s| s.sector_size);
    if opts.sector_size.is_some() && opts.sector_size != cur_sector {
        return Err(OpsError::usage(
            "Online reencryption cannot change the sector size (the open device keeps its block size); close the device and reencrypt offline.",
        ));
    }
    let Some(keys) = ops_reencrypt::start(&mut vol, opts, prompter)? else {
        return Ok(ReencryptOutcome::Initialized);
    };
    let h = vol.luks2_header()?.clone();
    let info = h
        .meta
        .reencrypt_state()
        .map_err(|e| OpsError::usage(e.to_string()))?
        .ok_or_else(|| OpsError::usage("Device reencryption not in progress."))?;
    // A hotzone a crash interrupted is recovered by the server's run
    // first, under the gate, like every hotzone.
    let p = split_payload(
        &h,
        &info,
        &keys,
        opts.provider,
        ServeConfig::new(name, &dev),
    )?;
    drop(keys);
    // The server takes the header lock for the run.
    drop(vol);
    let mut c = UnixStream::connect(wrapcrypt_activate::control_socket(name)).map_err(|e| {
        OpsError::refused(
            ExitClass::Busy,
            format!("Cannot reach the server of {name} ({e}); is it a wrapcrypt activation?"),
        )
    })?;
    let req = json!({
        "op": "reencrypt",
        "device": dev,
        "header": header,
        "hotzone": opts.hotzone_size,
    });
    let io = |e: std::io::Error| OpsError::usage(format!("Lost the server of {name}: {e}"));
    writeln!(c, "{req}").map_err(io)?;
    c.write_all(&(p.expose_secret().len() as u32).to_le_bytes())
        .map_err(io)?;
    c.write_all(p.expose_secret()).map_err(io)?;
    drop(p);
    c.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .map_err(io)?;
    let mut w = c.try_clone().map_err(io)?;
    let mut rd = BufReader::new(c);
    let mut sent_stop = false;
    let mut total = 0;
    let mut line = String::new();
    loop {
        if stop.load(Ordering::SeqCst) && !sent_stop {
            let _ = writeln!(w, "stop");
            sent_stop = true;
        }
        match rd.read_line(&mut line) {
            Ok(0) => return Err(OpsError::usage(format!("The server of {name} went away."))),
            Ok(_) if line.ends_with('\n') => {}
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(e) => return Err(io(e)),
        }
        let l = std::mem::take(&mut line);
        let f: Vec<&str> = l.trim().splitn(2, ' ').collect();
        let nums = |s: &str| -> Vec<u64> { s.split(' ').filter_map(|x| x.parse().ok()).collect() };
        match (f[0], f.get(1).copied().unwrap_or("")) {
            ("progress", rest) => {
                let n = nums(rest);
                if n.len() == 2 {
                    total = n[1];
                    progress.update(n[0], n[1]);
                }
            }
            ("done", rest) => {
                let n = nums(rest);
                return Ok(ReencryptOutcome::Finished(reencrypt::Finished {
                    bytes: n.first().copied().unwrap_or(0),
                    data_size: total,
                    recovered: n.get(2) == Some(&1),
                    steps: n.get(1).copied().unwrap_or(0),
                }));
            }
            ("interrupted", rest) => {
                let n = nums(rest);
                return Err(ops_reencrypt::map(ReencryptError::Interrupted {
                    done: n.first().copied().unwrap_or(0),
                    total: n.get(1).copied().unwrap_or(0),
                }));
            }
            ("error", msg) => return Err(OpsError::usage(msg.to_string())),
            _ => continue,
        }
    }
}
