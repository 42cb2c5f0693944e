//! Sector throughput through the custodian (memfd sessions) against the
//! in-process software engine, for `make bench`.
//!
//! Needs a built `wrapcrypt-custodiand` (next to `target/*/examples/`, or
//! `WRAPCRYPT_CUSTODIAND`). Starts its own daemon on a temporary socket.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use wrapcrypt_provider::xts::SoftXts;
use wrapcrypt_provider::{CustodianConfig, CustodianProvider, KeyProvider, KeySpec};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::SectorCipher;

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

/// MB/s of encrypt + decrypt of TOTAL bytes in `call`-byte requests over
/// `threads` threads.
fn speed(c: &Arc<dyn SectorCipher>, call: usize, threads: usize) -> f64 {
    let per = TOTAL / threads;
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0x5au8; call];
                let mut done = 0;
                while done < per {
                    let iv = ((i * per + done) / 512) as u64;
                    c.encrypt(iv, &mut buf).expect("encrypt");
                    c.decrypt(iv, &mut buf).expect("decrypt");
                    done += call;
                }
                assert!(buf.iter().all(|&b| b == 0x5a));
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().expect("thread"));
    2.0 * TOTAL as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("custodian.sock");
    let args: Vec<OsString> = vec![
        "--state-dir".into(),
        dir.path().join("state").into(),
        "--socket".into(),
        sock.clone().into(),
        "--tcti".into(),
        "none".into(),
    ];
    let daemon = daemon();
    let p = CustodianProvider::new(CustodianConfig::new(&sock).with_autostart(&daemon, args));
    let key = SecretBytes::random(64).expect("random");
    let wkb = p
        .import(&key, &KeySpec::aes_256_xts())
        .unwrap_or_else(|e| panic!("custodian at {}: {e}", daemon.display()));
    let soft: Arc<dyn SectorCipher> = Arc::new(SoftXts::new(&key, SECTOR).expect("xts"));
    let cust = p.open_cipher(&wkb, SECTOR).expect("session");
    for (call, threads) in [(128 << 10, 1), (1 << 20, 1), (128 << 10, 2)] {
        let s = speed(&soft, call, threads);
        let c = speed(&cust, call, threads);
        println!(
            "custodian_speed: {:>4} KiB calls, {threads} thread(s): in-process {s:7.0} MB/s, \
             custodian via memfd {c:7.0} MB/s, ratio {:.2}",
            call >> 10,
            c / s
        );
    }
    // Stop the daemon this run started (its pid is in the state lock file).
    if let Ok(pid) = std::fs::read_to_string(dir.path().join("state/custodiand.lock")) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // SAFETY: signalling the daemon this example started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}
