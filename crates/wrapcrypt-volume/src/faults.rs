//! Fault injection for crash-safety tests: with
//! `WRAPCRYPT_FAULT_AT=N` in the environment the process is killed
//! (SIGKILL, no clean-up) right before its N-th device write (1-based),
//! and `WRAPCRYPT_FAULT_COUNT=FILE` appends one line per write so a test
//! harness learns how many write points an operation has. With
//! `WRAPCRYPT_FAULT_TORN=1` as well, the N-th write is torn instead: its
//! first quarter, in whole 4096-byte blocks (at least one block when the
//! write has more), reaches the device and is synced, then the process is
//! killed, as when power fails in the middle of a multi-block write. 4096
//! bytes is the unit LUKS2 checksum resilience takes as written whole (the
//! reencryption alignment); a quarter of a 16 KiB header write is its
//! binary header alone, new seqid and checksum over a JSON area still old,
//! so that copy no longer verifies.
//! All are test hooks; none carries a secret.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static WRITES: AtomicU64 = AtomicU64::new(0);

/// What the caller of [`write_point`] does with the write.
pub enum Fault {
    /// Write it whole.
    Proceed,
    /// Write only the first `n` bytes, sync, then call [`die`].
    Torn(usize),
}

/// Called before every device write of `len` bytes.
pub fn write_point(path: &Path, len: usize) -> io::Result<Fault> {
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
            if std::env::var_os("WRAPCRYPT_FAULT_TORN").is_some() {
                return Ok(Fault::Torn(torn_prefix(len)));
            }
            die();
        }
    }
    Ok(Fault::Proceed)
}

/// How much of a torn write of `len` bytes lands: a quarter, in whole
/// 4096-byte blocks.
fn torn_prefix(len: usize) -> usize {
    const BLOCK: usize = 4096;
    let quarter = (len / 4) / BLOCK * BLOCK;
    if quarter == 0 && len > BLOCK {
        BLOCK
    } else {
        quarter
    }
}

/// Kills the process at once (SIGKILL: no destructor, no clean-up).
pub fn die() -> ! {
    // SAFETY: raising SIGKILL on ourselves.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL returned")
}

#[cfg(test)]
mod tests {
    #[test]
    fn torn_prefix_is_whole_blocks_and_short() {
        assert_eq!(super::torn_prefix(512), 0);
        assert_eq!(super::torn_prefix(4096), 0);
        assert_eq!(super::torn_prefix(8192), 4096);
        assert_eq!(super::torn_prefix(16384), 4096);
        assert_eq!(super::torn_prefix(1 << 20), 1 << 18);
        assert_eq!(super::torn_prefix(70000), 16384);
    }
}
