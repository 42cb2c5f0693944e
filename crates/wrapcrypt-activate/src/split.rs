//! The data path of a volume in mid-reencryption: the part before the
//! boundary is in the new layout, the rest still in the old one (forward
//! direction, same data offset: LUKS2 in-place reencryption), or, for a
//! backward run (a decryption with a detached header), the part before
//! the boundary is still old and the rest new. The boundary moves one way
//! (up forward, down backward), between requests, never inside one.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use wrapcrypt_sector::{IoTicket, SectorCipher, SectorError};

/// New cipher below the boundary, old cipher from it on (backward: the
/// other way round).
pub struct SplitCipher {
    new: Arc<dyn SectorCipher>,
    old: Arc<dyn SectorCipher>,
    /// IV sector (512-byte units, iv_tweak included) where the old layout
    /// begins (backward: where the new one begins).
    boundary: AtomicU64,
    sector: usize,
    backward: bool,
}

impl SplitCipher {
    /// A split at IV sector `boundary`; it must fall on a sector of both
    /// layouts, and requests then come in sectors of the larger size.
    pub fn new(
        new: Arc<dyn SectorCipher>,
        old: Arc<dyn SectorCipher>,
        boundary: u64,
    ) -> Result<Self, SectorError> {
        Self::with_direction(new, old, boundary, false)
    }

    /// A backward split: old cipher below IV sector `boundary`, new from it on.
    pub fn backward(
        new: Arc<dyn SectorCipher>,
        old: Arc<dyn SectorCipher>,
        boundary: u64,
    ) -> Result<Self, SectorError> {
        Self::with_direction(new, old, boundary, true)
    }

    fn with_direction(
        new: Arc<dyn SectorCipher>,
        old: Arc<dyn SectorCipher>,
        boundary: u64,
        backward: bool,
    ) -> Result<Self, SectorError> {
        let sector = new.sector_size().max(old.sector_size());
        let s = SplitCipher {
            new,
            old,
            boundary: AtomicU64::new(0),
            sector,
            backward,
        };
        s.set_boundary(boundary)?;
        Ok(s)
    }

    /// A backward split (old layout below the boundary).
    pub fn is_backward(&self) -> bool {
        self.backward
    }

    /// Where the old layout begins now (IV sector).
    pub fn boundary(&self) -> u64 {
        self.boundary.load(Ordering::Acquire)
    }

    /// Moves the boundary (after a hotzone is in the new layout).
    pub fn set_boundary(&self, boundary: u64) -> Result<(), SectorError> {
        if (boundary * 512) % self.sector as u64 != 0 {
            return Err(SectorError::Misaligned {
                len: (boundary * 512) as usize,
                sector_size: self.sector,
            });
        }
        self.boundary.store(boundary, Ordering::Release);
        Ok(())
    }

    fn run(&self, iv_sector: u64, data: &mut [u8], enc: bool) -> Result<(), SectorError> {
        if data.len() % self.sector != 0 {
            return Err(SectorError::Misaligned {
                len: data.len(),
                sector_size: self.sector,
            });
        }
        let b = self.boundary();
        let low = if iv_sector >= b {
            0
        } else {
            (((b - iv_sector) * 512) as usize).min(data.len())
        };
        let (lo, hi) = data.split_at_mut(low);
        let go = |c: &Arc<dyn SectorCipher>, s: u64, d: &mut [u8]| {
            if d.is_empty() {
                Ok(())
            } else if enc {
                c.encrypt(s, d)
            } else {
                c.decrypt(s, d)
            }
        };
        let (below, above) = if self.backward {
            (&self.old, &self.new)
        } else {
            (&self.new, &self.old)
        };
        go(below, iv_sector, lo)?;
        go(above, iv_sector + (low / 512) as u64, hi)
    }
}

impl SectorCipher for SplitCipher {
    fn sector_size(&self) -> usize {
        self.sector
    }
    fn encrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.run(iv_sector, data, true)
    }
    fn decrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.run(iv_sector, data, false)
    }
}

/// Which sectors may not start a request: the hotzone moving now, and
/// the requests in flight (IV-sector ranges), so a hotzone waits only for
/// requests that touch it and only those wait for it.
#[derive(Default)]
struct Hot {
    zone: Option<(u64, u64)>,
    in_flight: Vec<(u64, u64)>,
    /// `luksSuspend`: the zone covers the whole device until resumed.
    suspended: bool,
    /// The session ended: requests held by a suspend go on (and fail).
    aborted: bool,
}

/// What a suspended device serves: no key, every request fails.
struct NoKey(usize);

impl SectorCipher for NoKey {
    fn sector_size(&self) -> usize {
        self.0
    }
    fn encrypt(&self, _: u64, _: &mut [u8]) -> Result<(), SectorError> {
        Err(SectorError::Provider("the device is suspended".into()))
    }
    fn decrypt(&self, _: u64, _: &mut [u8]) -> Result<(), SectorError> {
        Err(SectorError::Provider("the device is suspended".into()))
    }
}

/// Why [`LiveCipher::suspend`] or [`LiveCipher::resume`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SuspendError {
    /// Suspend of a suspended device.
    AlreadySuspended,
    /// Resume of a device that is not suspended.
    NotSuspended,
    /// The session is ending.
    Aborted,
    /// The new cipher's sector size differs from the device's.
    SectorSize,
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// `io_begin` admitted the request without a lock (no zone was armed).
const FAST: IoTicket = IoTicket(0);
/// `io_begin` registered the request's range in `Hot::in_flight`.
const REGISTERED: IoTicket = IoTicket(1);

/// The cipher a server serves, replaceable while it runs: a volume opened
/// before its reencryption began switches to a [`SplitCipher`], and the
/// reencryption moves each hotzone while requests that touch it wait
/// ([`LiveCipher::exclusive`]); requests elsewhere go on.
///
/// The gate costs two atomic additions per request while no zone is set
/// (every open volume, almost all the time): a request counts itself in
/// `fast`, then reads `armed`; a zone sets `armed`, then waits for `fast`
/// to drain. Both sides use sequentially consistent order, so either the
/// request sees `armed` (it backs out and takes the locked path, which
/// sees the zone) or the zone sees the request counted and waits for it
/// (Dekker's handshake).
pub struct LiveCipher {
    cur: RwLock<Arc<dyn SectorCipher>>,
    hot: Mutex<Hot>,
    moved: Condvar,
    sector: usize,
    /// Set (under `hot`) from before a zone waits for the requests in
    /// flight until it is cleared: `hot.zone.is_some()`, readable without
    /// the lock.
    armed: AtomicBool,
    /// Requests admitted lock-free and not yet ended, plus, for a moment,
    /// those that are checking `armed`.
    fast: AtomicUsize,
}

impl LiveCipher {
    /// Serves `c` until replaced.
    pub fn new(c: Arc<dyn SectorCipher>) -> Self {
        LiveCipher {
            sector: c.sector_size(),
            cur: RwLock::new(c),
            hot: Mutex::new(Hot::default()),
            moved: Condvar::new(),
            armed: AtomicBool::new(false),
            fast: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Hot> {
        self.hot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, h: MutexGuard<'a, Hot>) -> MutexGuard<'a, Hot> {
        self.moved.wait(h).unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the zone (the caller holds `hot` and saw no zone) and arms
    /// the gate, so new requests take the locked path from now on.
    fn arm(&self, h: &mut Hot, zone: (u64, u64)) {
        h.zone = Some(zone);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Clears the zone and disarms the gate (the caller holds `hot`).
    fn disarm(&self, h: &mut Hot) {
        h.zone = None;
        self.armed.store(false, Ordering::SeqCst);
    }

    /// Lock-free requests still in flight (or about to back out).
    fn fast_in_flight(&self) -> bool {
        self.fast.load(Ordering::SeqCst) != 0
    }

    /// Ends a lock-free admission; the last one wakes an armed zone that
    /// waits for them (under the lock, so its wait cannot miss it).
    fn end_fast(&self) {
        if self.fast.fetch_sub(1, Ordering::SeqCst) == 1 && self.armed.load(Ordering::SeqCst) {
            drop(self.lock());
            self.moved.notify_all();
        }
    }

    fn current(&self) -> Arc<dyn SectorCipher> {
        self.cur.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Serves `c` from the next request on; its sector size must be the
    /// one the device was set up with.
    pub fn replace(&self, c: Arc<dyn SectorCipher>) -> Result<(), SectorError> {
        if c.sector_size() != self.sector {
            return Err(SectorError::Misaligned {
                len: c.sector_size(),
                sector_size: self.sector,
            });
        }
        self.exclusive(0, u64::MAX, || {
            *self.cur.write().unwrap_or_else(|p| p.into_inner()) = c
        });
        Ok(())
    }

    /// `luksSuspend`: waits until no request is in flight, then holds every
    /// new one and drops the cipher (a soft key is zeroized as its last
    /// `Arc` goes; a provider session is closed).
    pub fn suspend(&self) -> Result<(), SuspendError> {
        let mut h = self.lock();
        loop {
            if h.aborted {
                return Err(SuspendError::Aborted);
            }
            if h.suspended {
                return Err(SuspendError::AlreadySuspended);
            }
            if h.zone.is_none() {
                break;
            }
            h = self.wait(h);
        }
        self.arm(&mut h, (0, u64::MAX));
        h.suspended = true;
        while (!h.in_flight.is_empty() || self.fast_in_flight()) && !h.aborted {
            h = self.wait(h);
        }
        drop(h);
        let old = std::mem::replace(
            &mut *self.cur.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(NoKey(self.sector)),
        );
        drop(old);
        Ok(())
    }

    /// Whether the device is suspended.
    pub fn is_suspended(&self) -> bool {
        self.lock().suspended
    }

    /// `luksResume`: serves `c` and lets the held requests go on.
    pub fn resume(&self, c: Arc<dyn SectorCipher>) -> Result<(), SuspendError> {
        if c.sector_size() != self.sector {
            return Err(SuspendError::SectorSize);
        }
        let mut h = self.lock();
        if !h.suspended {
            return Err(SuspendError::NotSuspended);
        }
        if h.aborted {
            return Err(SuspendError::Aborted);
        }
        *self.cur.write().unwrap_or_else(|p| p.into_inner()) = c;
        h.suspended = false;
        self.disarm(&mut h);
        drop(h);
        self.moved.notify_all();
        Ok(())
    }

    /// The session ended: requests held by a suspend are let go and fail
    /// (EIO), so the workers can end; a suspend is refused from now on.
    pub fn abort(&self) {
        self.lock().aborted = true;
        self.moved.notify_all();
    }

    /// Runs `f` while no request touches IV sectors `[start, end)`: new
    /// ones wait, and `f` starts once those in flight have ended.
    pub fn exclusive<T>(&self, start: u64, end: u64, f: impl FnOnce() -> T) -> T {
        let zone = (start, end);
        let mut h = self.lock();
        // A suspended device holds its zone until resumed.
        while h.zone.is_some() {
            h = self.wait(h);
        }
        self.arm(&mut h, zone);
        // Lock-free requests do not say where they are: wait for all of
        // them (new ones register now); registered ones only if they touch
        // the zone.
        while self.fast_in_flight() || h.in_flight.iter().any(|r| overlaps(*r, zone)) {
            h = self.wait(h);
        }
        drop(h);
        let r = f();
        self.disarm(&mut self.lock());
        self.moved.notify_all();
        r
    }
}

impl SectorCipher for LiveCipher {
    fn sector_size(&self) -> usize {
        self.sector
    }
    fn encrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.current().encrypt(iv_sector, data)
    }
    fn decrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.current().decrypt(iv_sector, data)
    }
    fn shared_buffer(&self, len: usize) -> Option<wrapcrypt_sector::SharedBuffer> {
        self.current().shared_buffer(len)
    }
    fn io_begin(&self, iv_sector: u64, len: usize) -> IoTicket {
        self.fast.fetch_add(1, Ordering::SeqCst);
        if !self.armed.load(Ordering::SeqCst) {
            return FAST;
        }
        // A zone is (being) set: back out and register under the lock.
        self.end_fast();
        let r = (iv_sector, iv_sector + (len as u64).div_ceil(512));
        let mut h = self.lock();
        while h.zone.is_some_and(|z| overlaps(z, r)) && !(h.suspended && h.aborted) {
            h = self.wait(h);
        }
        h.in_flight.push(r);
        REGISTERED
    }
    fn io_end(&self, iv_sector: u64, len: usize, ticket: IoTicket) {
        if ticket == FAST {
            self.end_fast();
            return;
        }
        let r = (iv_sector, iv_sector + (len as u64).div_ceil(512));
        let mut h = self.lock();
        if let Some(i) = h.in_flight.iter().position(|x| *x == r) {
            h.in_flight.swap_remove(i);
        }
        let waiting = h.zone.is_some_and(|z| overlaps(z, r)) || h.suspended;
        drop(h);
        if waiting {
            self.moved.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds a per-cipher constant to every byte (enough to tell which
    /// cipher ran where).
    struct Add(u8, usize);
    impl SectorCipher for Add {
        fn sector_size(&self) -> usize {
            self.1
        }
        fn encrypt(&self, _: u64, d: &mut [u8]) -> Result<(), SectorError> {
            d.iter_mut().for_each(|b| *b = b.wrapping_add(self.0));
            Ok(())
        }
        fn decrypt(&self, _: u64, d: &mut [u8]) -> Result<(), SectorError> {
            d.iter_mut().for_each(|b| *b = b.wrapping_sub(self.0));
            Ok(())
        }
    }

    #[test]
    fn new_below_old_from_the_boundary_on() {
        let s = SplitCipher::new(Arc::new(Add(1, 512)), Arc::new(Add(2, 4096)), 16).unwrap();
        assert_eq!(s.sector_size(), 4096);
        // A request over sectors 8..24: 8..16 new, 16..24 old.
        let mut d = vec![0u8; 8192];
        s.encrypt(8, &mut d).unwrap();
        assert!(d[..4096].iter().all(|&b| b == 1));
        assert!(d[4096..].iter().all(|&b| b == 2));
        s.decrypt(8, &mut d).unwrap();
        assert!(d.iter().all(|&b| b == 0));
        // All new after the boundary passes the request.
        s.set_boundary(64).unwrap();
        s.encrypt(8, &mut d).unwrap();
        assert!(d.iter().all(|&b| b == 1));
        assert!(s.set_boundary(3).is_err(), "not on a 4096-byte sector");
        assert!(s.encrypt(0, &mut [0u8; 512]).is_err(), "partial sector");
    }

    #[test]
    fn backward_old_below_new_from_the_boundary_on() {
        let s = SplitCipher::backward(Arc::new(Add(1, 512)), Arc::new(Add(2, 512)), 16).unwrap();
        assert!(s.is_backward());
        let mut d = vec![0u8; 8192];
        s.encrypt(8, &mut d).unwrap();
        assert!(d[..4096].iter().all(|&b| b == 2), "old below");
        assert!(
            d[4096..].iter().all(|&b| b == 1),
            "new from the boundary on"
        );
        // The boundary moves down: all new.
        s.set_boundary(0).unwrap();
        let mut d = vec![0u8; 8192];
        s.encrypt(8, &mut d).unwrap();
        assert!(d.iter().all(|&b| b == 1));
    }

    #[test]
    fn suspend_holds_requests_until_resume_and_abort_fails_them() {
        use std::time::{Duration, Instant};
        let live = Arc::new(LiveCipher::new(Arc::new(Add(1, 512))));
        live.suspend().unwrap();
        assert_eq!(live.suspend(), Err(SuspendError::AlreadySuspended));
        assert!(
            live.decrypt(0, &mut [0u8; 512]).is_err(),
            "no key while suspended"
        );
        let l = live.clone();
        let t = std::thread::spawn(move || {
            let k = l.io_begin(8, 512);
            let mut d = [0u8; 512];
            let r = l.encrypt(8, &mut d).map(|()| d[0]);
            l.io_end(8, 512, k);
            (Instant::now(), r)
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!t.is_finished(), "a request ran while suspended");
        let t0 = Instant::now();
        live.resume(Arc::new(Add(3, 512))).unwrap();
        let (ran, r) = t.join().unwrap();
        assert!(ran >= t0);
        assert_eq!(r.unwrap(), 3, "served by the new cipher");
        assert_eq!(
            live.resume(Arc::new(Add(3, 512))),
            Err(SuspendError::NotSuspended)
        );
        // Abort lets a held request go, and it fails.
        live.suspend().unwrap();
        let l = live.clone();
        let t = std::thread::spawn(move || {
            let k = l.io_begin(0, 512);
            let r = l.decrypt(0, &mut [0u8; 512]);
            l.io_end(0, 512, k);
            r
        });
        std::thread::sleep(Duration::from_millis(100));
        live.abort();
        assert!(t.join().unwrap().is_err());
        assert!(live.resume(Arc::new(Add(1, 512))).is_err());
    }

    #[test]
    fn a_hotzone_holds_off_only_the_requests_that_touch_it() {
        use std::time::{Duration, Instant};
        let live = Arc::new(LiveCipher::new(Arc::new(Add(1, 512))));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = live.clone();
        let t = std::thread::spawn(move || {
            l.exclusive(0, 8, || {
                tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(300));
            })
        });
        rx.recv().unwrap();
        let t0 = Instant::now();
        let k = live.io_begin(8, 4096); // sectors 8..16: outside the zone
        assert!(
            t0.elapsed() < Duration::from_millis(200),
            "waited outside the zone"
        );
        live.io_end(8, 4096, k);
        let k = live.io_begin(4, 512); // inside
        assert!(
            t0.elapsed() >= Duration::from_millis(250),
            "did not wait inside the zone"
        );
        live.io_end(4, 512, k);
        t.join().unwrap();
        // A zone waits for a request in flight that touches it.
        let k = live.io_begin(0, 512);
        assert_eq!(k, FAST, "no zone: admitted without the lock");
        let l = live.clone();
        let t0 = Instant::now();
        let t = std::thread::spawn(move || l.exclusive(0, 8, Instant::now));
        std::thread::sleep(Duration::from_millis(200));
        live.io_end(0, 512, k);
        let ran = t.join().unwrap();
        assert!(ran.duration_since(t0) >= Duration::from_millis(190));
    }

    /// Many request threads against a thread that keeps moving zones (and
    /// now and then replaces the cipher): no request is in flight on a
    /// sector while a zone that covers it runs, and every request sees a
    /// whole cipher. A gate that admits a request without waiting for the
    /// zone, or a zone that starts before the requests in it ended, fails.
    #[test]
    fn stress_no_request_overlaps_a_running_zone() {
        use std::sync::atomic::AtomicU32;
        use std::time::{Duration, Instant};
        const SECTORS: u64 = 64;
        struct Shared {
            live: LiveCipher,
            /// Requests in flight per sector.
            busy: Vec<AtomicU32>,
            /// 1 while a zone covering the sector runs.
            moving: Vec<AtomicU32>,
            stop: AtomicBool,
            requests: AtomicU64,
            fast: AtomicU64,
            failure: Mutex<Option<String>>,
        }
        impl Shared {
            fn fail(&self, what: String) {
                self.failure.lock().unwrap().get_or_insert(what);
            }
        }
        let sh = Arc::new(Shared {
            live: LiveCipher::new(Arc::new(Add(1, 512))),
            busy: (0..SECTORS).map(|_| AtomicU32::new(0)).collect(),
            moving: (0..SECTORS).map(|_| AtomicU32::new(0)).collect(),
            stop: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            fast: AtomicU64::new(0),
            failure: Mutex::new(None),
        });
        // A small xorshift per thread: no dependency for randomness.
        let next = |x: &mut u64| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x
        };
        let workers: Vec<_> = (0..6u64)
            .map(|t| {
                let sh = sh.clone();
                std::thread::spawn(move || {
                    let mut x = 0x9e37_79b9_7f4a_7c15 ^ (t + 1);
                    while !sh.stop.load(Ordering::Relaxed) {
                        let n = 1 + next(&mut x) % 8;
                        let s = next(&mut x) % (SECTORS - n + 1);
                        let k = sh.live.io_begin(s, (n * 512) as usize);
                        for i in s..s + n {
                            sh.busy[i as usize].fetch_add(1, Ordering::SeqCst);
                        }
                        // Failures are recorded, not panicked, so the
                        // request still ends and nothing waits for it.
                        if let Some(i) =
                            (s..s + n).find(|&i| sh.moving[i as usize].load(Ordering::SeqCst) != 0)
                        {
                            sh.fail(format!("request on sector {i} inside a running zone"));
                        }
                        let mut d = [0u8; 512];
                        sh.live.encrypt(s, &mut d).unwrap();
                        if next(&mut x) % 4 == 0 {
                            std::thread::yield_now();
                        }
                        let mut e = [0u8; 512];
                        sh.live.encrypt(s, &mut e).unwrap();
                        if d[0] != e[0] {
                            sh.fail("the cipher was replaced under a request".into());
                        }
                        for i in s..s + n {
                            sh.busy[i as usize].fetch_sub(1, Ordering::SeqCst);
                        }
                        sh.live.io_end(s, (n * 512) as usize, k);
                        sh.requests.fetch_add(1, Ordering::Relaxed);
                        if k == FAST {
                            sh.fast.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        // The zones move on a thread of their own: a gate that never lets
        // a zone start fails by the deadline instead of hanging the test.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mover = {
            let sh = sh.clone();
            std::thread::spawn(move || {
                let next = next;
                let mut x = 0x2545_f491_4f6c_dd1du64;
                let t0 = Instant::now();
                let mut zones = 0u32;
                while t0.elapsed() < Duration::from_millis(1500) || zones < 200 {
                    let n = 1 + next(&mut x) % 16;
                    let s = next(&mut x) % (SECTORS - n + 1);
                    if zones % 50 == 49 {
                        sh.live
                            .replace(Arc::new(Add(1 + (zones % 7) as u8, 512)))
                            .unwrap();
                    }
                    sh.live.exclusive(s, s + n, || {
                        for i in s..s + n {
                            sh.moving[i as usize].store(1, Ordering::SeqCst);
                        }
                        let busy = |sh: &Shared| {
                            (s..s + n).find(|&i| sh.busy[i as usize].load(Ordering::SeqCst) != 0)
                        };
                        if let Some(i) = busy(&sh) {
                            sh.fail(format!(
                                "zone {s}..{} ran while a request was on sector {i}",
                                s + n
                            ));
                        }
                        std::thread::sleep(Duration::from_micros(50));
                        if let Some(i) = busy(&sh) {
                            sh.fail(format!(
                                "request on sector {i} began inside zone {s}..{}",
                                s + n
                            ));
                        }
                        for i in s..s + n {
                            sh.moving[i as usize].store(0, Ordering::SeqCst);
                        }
                    });
                    zones += 1;
                    if sh.failure.lock().unwrap().is_some() {
                        break;
                    }
                    // Time without a zone, so the lock-free path is exercised too.
                    if zones % 2 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                done_tx.send(zones).ok();
            })
        };
        let zones = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the zones stopped moving: a zone waits forever for requests");
        mover.join().expect("the zone thread failed");
        sh.stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().expect("a request thread failed");
        }
        if let Some(f) = sh.failure.lock().unwrap().take() {
            panic!("{f}");
        }
        let (req, fast) = (
            sh.requests.load(Ordering::Relaxed),
            sh.fast.load(Ordering::Relaxed),
        );
        assert!(req > 1000, "only {req} requests ran");
        assert!(zones >= 200, "only {zones} zones moved");
        assert!(
            fast > 0 && fast < req,
            "both paths ran: {fast} of {req} lock-free"
        );
        assert_eq!(sh.live.fast.load(Ordering::SeqCst), 0, "the count drained");
    }
}
