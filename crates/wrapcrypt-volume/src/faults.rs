//! Fault injection for crash-safety tests: with
//! `WRAPCRYPT_FAULT_AT=N` in the environment the process is killed
//! (SIGKILL, no clean-up) right before its N-th device write (1-based),
//! and `WRAPCRYPT_FAULT_COUNT=FILE` appends one line per write so a test
//! harness learns how many write points an operation has. Both are test
//! hooks; neither carries a secret.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static WRITES: AtomicU64 = AtomicU64::new(0);

/// Called before every device write.
pub fn write_point(path: &Path) -> io::Result<()> {
    let n = WRITES.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(f) = std::env::var_os("WRAPCRYPT_FAULT_COUNT") {
        if let Ok(mut out) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(f)
        {
            let _ = writeln!(out, "{n} {}", path.display());
        }
    }
    if let Some(at) = std::env::var_os("WRAPCRYPT_FAULT_AT") {
        if at.to_str().and_then(|s| s.parse::<u64>().ok()) == Some(n) {
            // SAFETY: raising SIGKILL on ourselves.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
    Ok(())
}
