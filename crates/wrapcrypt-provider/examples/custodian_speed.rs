//! Sector throughput through the custodian (memfd sessions) against the
//! in-process software engine, for `make bench`.
//!
//! Needs a built `wrapcrypt-custodiand` (next to `target/*/examples/`, or
//! `WRAPCRYPT_CUSTODIAND`). Starts its own daemon on a temporary socket.
//!
//! For each buffer size and thread count it measures, interleaved and
//! best of `--rounds N` (default 5): the in-process engine, the custodian
//! with the caller's own buffer (copied through a pool slot), and the
//! custodian with a buffer from `SectorCipher::shared_buffer` (encrypted in
//! place in the memfd, as the FUSE server does). Wall-clock MB/s is the
//! headline; the CPU seconds of this process and of the daemon are printed
//! too, since a faster wall clock can come from using more cores.
//! The last line is JSON for scripts.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use wrapcrypt_provider::xts::aes_256_xts;
use wrapcrypt_provider::{CustodianConfig, CustodianProvider, KeyProvider, KeySpec};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::SectorCipher;

/// Bytes per measurement by default (`--total-mib` sets it: short runs
/// scatter by tens of percent on a loaded host).
const TOTAL: usize = 256 << 20;
const SECTOR: usize = 4096;

fn daemon() -> PathBuf {
    if let Some(p) = std::env::var_os("WRAPCRYPT_CUSTODIAND") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("wrapcrypt-custodiand")
}

/// CPU seconds (user + system) of this process.
fn self_cpu() -> f64 {
    // SAFETY: getrusage fills the zeroed struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds (user + system) of process `pid`, from /proc.
fn pid_cpu(pid: i32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of the command name: state is field 3, utime 14.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

#[derive(Clone, Copy, Default)]
struct Run {
    mb_s: f64,
    cpu_s: f64,
}

/// Encrypt + decrypt of TOTAL bytes in `call`-byte requests over `threads`
/// threads; `shared` takes each thread's buffer from the cipher.
fn speed(
    c: &Arc<dyn SectorCipher>,
    total: usize,
    call: usize,
    threads: usize,
    shared: bool,
    daemon: i32,
) -> Run {
    let per = total / threads;
    let bufs: Vec<_> = (0..threads)
        .map(|_| {
            let b = if shared { c.shared_buffer(call) } else { None };
            if shared {
                assert!(b.is_some(), "the custodian offers shared buffers");
            }
            b
        })
        .collect();
    let cpu0 = self_cpu() + pid_cpu(daemon);
    let t = Instant::now();
    let hs: Vec<_> = bufs
        .into_iter()
        .enumerate()
        .map(|(i, sb)| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut own = vec![0x5au8; call];
                let mut sb = sb;
                let buf: &mut [u8] = match sb.as_mut() {
                    Some(b) => {
                        b[..call].fill(0x5a);
                        &mut b[..call]
                    }
                    None => &mut own,
                };
                let mut done = 0;
                while done < per {
                    let iv = ((i * per + done) / 512) as u64;
                    c.encrypt(iv, buf).expect("encrypt");
                    c.decrypt(iv, buf).expect("decrypt");
                    done += call;
                }
                assert!(buf.iter().all(|&b| b == 0x5a));
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().expect("thread"));
    let wall = t.elapsed().as_secs_f64();
    Run {
        mb_s: 2.0 * total as f64 / wall / 1e6,
        cpu_s: self_cpu() + pid_cpu(daemon) - cpu0,
    }
}

fn best(a: Run, b: Run) -> Run {
    if b.mb_s > a.mb_s {
        b
    } else {
        a
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("custodian.sock");
    let dargs: Vec<OsString> = vec![
        "--state-dir".into(),
        dir.path().join("state").into(),
        "--socket".into(),
        sock.clone().into(),
        "--tcti".into(),
        "none".into(),
    ];
    let daemon = daemon();
    let p = CustodianProvider::new(CustodianConfig::new(&sock).with_autostart(&daemon, dargs));
    let key = SecretBytes::random(64).expect("random");
    let wkb = p
        .import(&key, &KeySpec::aes_256_xts())
        .unwrap_or_else(|e| panic!("custodian at {}: {e}", daemon.display()));
    let dpid: i32 = std::fs::read_to_string(dir.path().join("state/custodiand.lock"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let soft: Arc<dyn SectorCipher> = Arc::new(aes_256_xts(&key, SECTOR).expect("xts"));
    let cust = p.open_cipher(&wkb, SECTOR).expect("session");
    let mut json = Vec::new();
    // `--only soft|copy|shared` runs one mode (for profiling).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let on = |m: &str| only.as_deref().is_none_or(|o| o == m);
    let total = args
        .iter()
        .position(|a| a == "--total-mib")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(TOTAL, |m| m << 20);
    // `--call-kib N` measures only calls of N KiB.
    let only_call = args
        .iter()
        .position(|a| a == "--call-kib")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok());
    for (call, threads) in [(128 << 10, 1), (1 << 20, 1), (128 << 10, 2), (1 << 20, 2)] {
        if only_call.is_some_and(|k| k << 10 != call) {
            continue;
        }
        let (mut s, mut c, mut z) = (Run::default(), Run::default(), Run::default());
        for _ in 0..rounds {
            if on("soft") {
                s = best(s, speed(&soft, total, call, threads, false, dpid));
            }
            if on("copy") {
                c = best(c, speed(&cust, total, call, threads, false, dpid));
            }
            if on("shared") {
                z = best(z, speed(&cust, total, call, threads, true, dpid));
            }
        }
        println!(
            "custodian_speed: {:>4} KiB calls, {threads} thread(s): in-process {:6.0} MB/s ({:.2} CPU s), \
             custodian copying {:6.0} MB/s ({:.2} CPU s) ratio {:.2}, \
             custodian shared buffer {:6.0} MB/s ({:.2} CPU s) ratio {:.2}",
            call >> 10,
            s.mb_s,
            s.cpu_s,
            c.mb_s,
            c.cpu_s,
            c.mb_s / s.mb_s,
            z.mb_s,
            z.cpu_s,
            z.mb_s / s.mb_s
        );
        json.push(format!(
            "{{\"call\":{call},\"threads\":{threads},\"inprocess_mb_s\":{:.1},\"inprocess_cpu_s\":{:.3},\
             \"copy_mb_s\":{:.1},\"copy_cpu_s\":{:.3},\"shared_mb_s\":{:.1},\"shared_cpu_s\":{:.3},\
             \"copy_ratio\":{:.3},\"shared_ratio\":{:.3}}}",
            s.mb_s,
            s.cpu_s,
            c.mb_s,
            c.cpu_s,
            z.mb_s,
            z.cpu_s,
            c.mb_s / s.mb_s,
            z.mb_s / s.mb_s
        ));
    }
    println!("[{}]", json.join(","));
    if dpid > 0 {
        // SAFETY: signalling the daemon this example started.
        unsafe { libc::kill(dpid, libc::SIGTERM) };
    }
}
