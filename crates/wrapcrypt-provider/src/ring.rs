//! The shared-memory request ring of protocol version 2
//! (docs/provider-protocol.md §3a): CRYPT requests written into a memfd
//! and signalled with a futex doorbell instead of a socket round trip.
//!
//! Layout (host byte order: both sides run on one machine): a 64-byte
//! header, then `entries` slots of 64 bytes. Each client buffer owns one
//! slot, so a slot is written by at most one client thread at a time.
//! The daemon copies a slot's fields before it checks and uses them, and
//! writes only `state`, `status` and the header's counters.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::shm::Shm;

/// Bytes of the header and of each slot.
pub const SLOT: usize = 64;
/// Most slots in one ring.
pub const MAX_ENTRIES: u32 = 1024;
/// `WCR2`: the header's first word, written by the client.
pub const MAGIC: u32 = 0x5743_5232;

/// Slot states (the `state` word, also the client's futex).
pub mod state {
    /// No request.
    pub const IDLE: u32 = 0;
    /// Written by the client, not yet taken.
    pub const SUBMITTED: u32 = 1;
    /// Taken by a daemon thread.
    pub const BUSY: u32 = 2;
    /// Done; `status` holds the result.
    pub const DONE: u32 = 3;
}

// Header words (byte offsets).
const H_MAGIC: usize = 0;
const H_ENTRIES: usize = 4;
const H_DOORBELL: usize = 8;
const H_SLEEPERS: usize = 12;
const H_SERVED: usize = 16;
const H_WAKEUPS: usize = 24;
/// Slots at and above this index are unused (client-maintained bound, so
/// the daemon scans only the slots in use).
const H_HIGH: usize = 32;
/// Daemon threads serving the ring (written by the daemon before they run).
const H_THREADS: usize = 36;
/// Daemon threads awake and polling for work (none in progress): such a
/// thread takes the next request within nanoseconds, so a client need
/// not wake another for it. 0 from a daemon that does not keep it.
const H_POLLING: usize = 40;
/// Requests of at least this many bytes wake another sleeping daemon
/// thread even while one is awake (so large requests run in parallel);
/// smaller ones wait for the awake thread, which finds them before it sleeps.
pub const BIG_REQUEST: u64 = 64 << 10;

// Slot words (byte offsets inside a slot).
const S_STATE: usize = 0;
const S_WAITING: usize = 4;
const S_BUFFER: usize = 8;
const S_OP: usize = 12;
const S_IV: usize = 16;
const S_OFFSET: usize = 24;
const S_LEN: usize = 32;
const S_STATUS: usize = 40;

/// Bytes of a ring of `entries` slots.
pub fn ring_len(entries: u32) -> usize {
    SLOT * (entries as usize + 1)
}

/// One request as the daemon read it from a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingRequest {
    /// buffer number (ATTACH_SHM), 0 = the session's first memfd
    pub buffer: u32,
    /// 1 encrypt, 2 decrypt
    pub op: u32,
    /// IV sector (512-byte units) of the first sector
    pub iv_sector: u64,
    /// byte offset in the buffer
    pub offset: u64,
    /// byte length
    pub len: u64,
}

/// A mapped ring, for either side.
pub struct Ring {
    shm: Shm,
    entries: u32,
}

impl Ring {
    /// Wraps a mapping of [`ring_len`]`(entries)` bytes; the client also
    /// writes the header.
    pub fn new(shm: Shm, entries: u32, init: bool) -> io::Result<Ring> {
        if entries == 0 || entries > MAX_ENTRIES || shm.len() != ring_len(entries) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a ring of {entries} entries is not 1..={MAX_ENTRIES} entries of {SLOT} bytes"
                ),
            ));
        }
        let r = Ring { shm, entries };
        if init {
            r.u32(H_ENTRIES).store(entries, Ordering::Relaxed);
            r.u32(H_MAGIC).store(MAGIC, Ordering::Release);
        }
        Ok(r)
    }

    /// The memfd, to pass to the daemon.
    pub fn shm(&self) -> &Shm {
        &self.shm
    }

    /// Number of slots.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    fn u32(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= self.shm.len());
        // SAFETY: aligned (the mapping is page-aligned, offsets are
        // multiples of 4) and inside the mapping, which lives as long as
        // self; all accesses to shared words are atomic.
        unsafe { &*(self.shm.as_ptr().add(off) as *const AtomicU32) }
    }

    fn u64(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= self.shm.len());
        // SAFETY: as in u32, 8-byte aligned.
        unsafe { &*(self.shm.as_ptr().add(off) as *const AtomicU64) }
    }

    fn slot(&self, i: u32, off: usize) -> usize {
        SLOT * (i as usize + 1) + off
    }

    /// Requests the daemon has completed through this ring.
    pub fn served(&self) -> u64 {
        self.u64(H_SERVED).load(Ordering::Relaxed)
    }

    /// Times a client had to wake a sleeping daemon thread.
    pub fn wakeups(&self) -> u64 {
        self.u64(H_WAKEUPS).load(Ordering::Relaxed)
    }

    // ---- client side ----

    /// Announces that slot `i` is in use (the daemon scans up to it).
    pub fn claim(&self, i: u32) {
        self.u32(H_HIGH).fetch_max(i + 1, Ordering::SeqCst);
    }

    fn high(&self) -> u32 {
        self.u32(H_HIGH).load(Ordering::Relaxed).min(self.entries)
    }

    /// Submits a request in slot `i` (owned by the caller, idle) and rings
    /// the doorbell if every daemon thread sleeps, or if one sleeps, none
    /// polls and the request is large (so large requests run in parallel,
    /// and a polling thread is not raced by a needless wake-up).
    pub fn submit(&self, i: u32, req: &RingRequest) {
        self.u32(self.slot(i, S_BUFFER))
            .store(req.buffer, Ordering::Relaxed);
        self.u32(self.slot(i, S_OP))
            .store(req.op, Ordering::Relaxed);
        self.u64(self.slot(i, S_IV))
            .store(req.iv_sector, Ordering::Relaxed);
        self.u64(self.slot(i, S_OFFSET))
            .store(req.offset, Ordering::Relaxed);
        self.u64(self.slot(i, S_LEN))
            .store(req.len, Ordering::Relaxed);
        self.u32(self.slot(i, S_STATUS)).store(0, Ordering::Relaxed);
        self.u32(self.slot(i, S_STATE))
            .store(state::SUBMITTED, Ordering::SeqCst);
        let bell = self.u32(H_DOORBELL);
        bell.fetch_add(1, Ordering::SeqCst);
        let sleepers = self.u32(H_SLEEPERS).load(Ordering::SeqCst);
        let threads = self.u32(H_THREADS).load(Ordering::Relaxed).max(1);
        if sleepers > 0
            && (sleepers >= threads
                || (req.len >= BIG_REQUEST && self.u32(H_POLLING).load(Ordering::SeqCst) == 0))
        {
            self.u64(H_WAKEUPS).fetch_add(1, Ordering::Relaxed);
            futex_wake(bell, 1);
        }
    }

    fn all_asleep(&self) -> bool {
        let threads = self.u32(H_THREADS).load(Ordering::Relaxed).max(1);
        self.u32(H_SLEEPERS).load(Ordering::Relaxed) >= threads
    }

    /// Waits for slot `i` to be done: spins for at most `spin` while a
    /// daemon thread is awake (one that sleeps cannot answer soon), then
    /// sleeps on the slot's futex, calling `alive` every `check` so a dead
    /// daemon is noticed. Returns the status (0 = success) and leaves the
    /// slot idle.
    pub fn wait(
        &self,
        i: u32,
        spin: Duration,
        check: Duration,
        mut alive: impl FnMut() -> bool,
    ) -> io::Result<u32> {
        let st = self.u32(self.slot(i, S_STATE));
        let waiting = self.u32(self.slot(i, S_WAITING));
        let t0 = std::time::Instant::now();
        let mut n = 0u32;
        loop {
            let s = st.load(Ordering::Acquire);
            if s == state::DONE {
                break;
            }
            n = n.wrapping_add(1);
            if n.is_multiple_of(16) && (t0.elapsed() >= spin || self.all_asleep()) {
                waiting.store(1, Ordering::SeqCst);
                let s = st.load(Ordering::SeqCst);
                if s != state::DONE && !futex_wait(st, s, check) && !alive() {
                    waiting.store(0, Ordering::Relaxed);
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the key custodian went away during a request",
                    ));
                }
                continue;
            }
            std::hint::spin_loop();
        }
        waiting.store(0, Ordering::Relaxed);
        let status = self.u32(self.slot(i, S_STATUS)).load(Ordering::Relaxed);
        st.store(state::IDLE, Ordering::Relaxed);
        Ok(status)
    }

    // ---- daemon side ----

    /// Records how many daemon threads serve the ring (before they start).
    pub fn set_threads(&self, n: u32) {
        self.u32(H_THREADS).store(n, Ordering::SeqCst);
    }

    /// A daemon thread starts (`true`) or stops polling for work.
    pub fn set_polling(&self, on: bool) {
        let w = self.u32(H_POLLING);
        if on {
            w.fetch_add(1, Ordering::SeqCst);
        } else {
            w.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Takes the next submitted slot at or after `*cursor`, if any.
    pub fn take(&self, cursor: &mut u32) -> Option<(u32, RingRequest)> {
        let n = self.high();
        for k in 0..n {
            let i = (*cursor + k) % n;
            let st = self.u32(self.slot(i, S_STATE));
            if st.load(Ordering::Relaxed) == state::SUBMITTED
                && st
                    .compare_exchange(
                        state::SUBMITTED,
                        state::BUSY,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                *cursor = (i + 1) % n;
                let req = RingRequest {
                    buffer: self.u32(self.slot(i, S_BUFFER)).load(Ordering::Relaxed),
                    op: self.u32(self.slot(i, S_OP)).load(Ordering::Relaxed),
                    iv_sector: self.u64(self.slot(i, S_IV)).load(Ordering::Relaxed),
                    offset: self.u64(self.slot(i, S_OFFSET)).load(Ordering::Relaxed),
                    len: self.u64(self.slot(i, S_LEN)).load(Ordering::Relaxed),
                };
                return Some((i, req));
            }
        }
        None
    }

    /// Completes slot `i` with `status` and wakes its client if it sleeps.
    pub fn complete(&self, i: u32, status: u32) {
        self.u32(self.slot(i, S_STATUS))
            .store(status, Ordering::Relaxed);
        self.u64(H_SERVED).fetch_add(1, Ordering::Relaxed);
        let st = self.u32(self.slot(i, S_STATE));
        st.store(state::DONE, Ordering::SeqCst);
        if self.u32(self.slot(i, S_WAITING)).load(Ordering::SeqCst) != 0 {
            futex_wake(st, 1);
        }
    }

    /// Sleeps until the doorbell rings or `timeout` passes, unless a slot
    /// was submitted meanwhile (checked after announcing the sleep, so no
    /// doorbell is missed).
    pub fn sleep(&self, timeout: Duration) {
        let bell = self.u32(H_DOORBELL);
        let seen = bell.load(Ordering::SeqCst);
        let sleepers = self.u32(H_SLEEPERS);
        sleepers.fetch_add(1, Ordering::SeqCst);
        let pending = (0..self.high())
            .any(|i| self.u32(self.slot(i, S_STATE)).load(Ordering::SeqCst) == state::SUBMITTED);
        if !pending {
            futex_wait(bell, seen, timeout);
        }
        sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Wakes every daemon thread sleeping on the doorbell (shutdown).
    pub fn wake_all(&self) {
        let bell = self.u32(H_DOORBELL);
        bell.fetch_add(1, Ordering::SeqCst);
        futex_wake(bell, i32::MAX);
    }
}

/// `FUTEX_WAIT` (shared, not private: the word is in a memfd two
/// processes map). False when `timeout` passed.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: word is a live aligned u32; ts outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    !(r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT))
}

fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: word is a live aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn requests_cross_between_two_mappings() {
        let a = Shm::create(ring_len(4)).unwrap();
        let b = Shm::from_peer(a.fd().try_clone().unwrap(), ring_len(4)).unwrap();
        let client = Arc::new(Ring::new(a, 4, true).unwrap());
        let server = Arc::new(Ring::new(b, 4, false).unwrap());
        let s2 = server.clone();
        let t = std::thread::spawn(move || {
            let mut cur = 0;
            let mut got = Vec::new();
            while got.len() < 3 {
                match s2.take(&mut cur) {
                    Some((i, r)) => {
                        got.push(r);
                        s2.complete(i, r.op);
                    }
                    None => s2.sleep(Duration::from_millis(50)),
                }
            }
            got
        });
        for k in 0..3u32 {
            let req = RingRequest {
                buffer: k,
                op: 7 + k,
                iv_sector: 8 * k as u64,
                offset: 4096,
                len: 512,
            };
            client.claim(k % 2);
            client.submit(k % 2, &req);
            let st = client
                .wait(k % 2, Duration::ZERO, Duration::from_millis(20), || true)
                .unwrap();
            assert_eq!(st, 7 + k);
        }
        let got = t.join().unwrap();
        assert_eq!(got[2].iv_sector, 16);
        assert_eq!(client.served(), 3);
    }

    #[test]
    fn a_dead_server_is_noticed() {
        let a = Shm::create(ring_len(1)).unwrap();
        let r = Ring::new(a, 1, true).unwrap();
        r.claim(0);
        r.submit(
            0,
            &RingRequest {
                buffer: 0,
                op: 1,
                iv_sector: 0,
                offset: 0,
                len: 512,
            },
        );
        let e = r.wait(0, Duration::ZERO, Duration::from_millis(5), || false);
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert!(Ring::new(Shm::create(100).unwrap(), 1, false).is_err());
    }
}
