//! dm-crypt `aes-xts-plain64` composed from the token's CKM_AES_ECB: the
//! tweaks are ECB-encrypted under K2 in the token, multiplied by α in
//! software, and the whitened data is ECB-encrypted under K1 in the token.
//! K1 and K2 never leave the token; the tweak values pass through this
//! process (they are E_K2(sector), from which K2 cannot be computed) and are
//! zeroized after each batch.

use std::sync::{Arc, Mutex};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use wrapcrypt_sector::{SectorCipher, SectorError};
use zeroize::Zeroize;

use super::Inner;

const BLOCK: usize = 16;
/// Bytes per pair of token calls: large enough that call overhead (and
/// p11-kit's socket round trips) fade, small enough to keep buffers modest.
const CHUNK: usize = 256 * 1024;

/// Three sessions, each holding one multi-part ECB operation open for its
/// lifetime, so a batch costs one update call per key (a session runs one
/// operation at a time).
struct Lane {
    tweak: Session,
    enc: Session,
    dec: Session,
    tweak_on: bool,
    enc_on: bool,
    dec_on: bool,
}

/// An XTS engine over two sensitive session objects in the token.
pub(crate) struct TokenXts {
    inner: Arc<Inner>,
    /// The session that created K1 and K2: they live as long as it does.
    owner: Mutex<Option<Session>>,
    k1: ObjectHandle,
    k2: ObjectHandle,
    /// Idle lanes; a caller takes one (or opens a new one) per batch, so
    /// concurrent FUSE workers never share a session.
    lanes: Mutex<Vec<Lane>>,
    unit: usize,
}

fn provider_err(what: &str, e: cryptoki::error::Error) -> SectorError {
    SectorError::Provider(super::error::p11_err(what.to_string(), e).to_string())
}

impl TokenXts {
    /// Takes ownership of `owner`, the session in which `k1` and `k2` were
    /// created; `unit` is the sector size (32 for the verification pattern).
    pub(crate) fn new(
        inner: Arc<Inner>,
        owner: Session,
        k1: ObjectHandle,
        k2: ObjectHandle,
        unit: usize,
    ) -> TokenXts {
        TokenXts {
            inner,
            owner: Mutex::new(Some(owner)),
            k1,
            k2,
            lanes: Mutex::new(Vec::new()),
            unit,
        }
    }

    /// The same keys for another sector size (after the VP check, which
    /// runs on 32-byte units).
    pub(crate) fn with_unit(mut self, unit: usize) -> TokenXts {
        self.unit = unit;
        self
    }

    fn new_lane(&self) -> Result<Lane, SectorError> {
        let open = || {
            self.inner
                .ctx
                .open_ro_session(self.inner.slot)
                .map_err(|e| provider_err("opening a PKCS#11 session", e))
        };
        Ok(Lane {
            tweak: open()?,
            enc: open()?,
            dec: open()?,
            tweak_on: false,
            enc_on: false,
            dec_on: false,
        })
    }

    fn check(&self, data: &[u8]) -> Result<(), SectorError> {
        if !data.len().is_multiple_of(self.unit) {
            return Err(SectorError::Misaligned {
                len: data.len(),
                sector_size: self.unit,
            });
        }
        Ok(())
    }

    /// Runs XTS over `data` (whole units) in the token.
    pub(crate) fn run(
        &self,
        iv_sector: u64,
        data: &mut [u8],
        encrypt: bool,
    ) -> Result<(), SectorError> {
        self.check(data)?;
        let lane = self.lanes.lock().map_err(poisoned)?.pop();
        let mut lane = match lane {
            Some(l) => l,
            None => self.new_lane()?,
        };
        let r = self.run_on(&mut lane, iv_sector, data, encrypt);
        self.lanes.lock().map_err(poisoned)?.push(lane);
        r
    }

    fn run_on(
        &self,
        lane: &mut Lane,
        iv_sector: u64,
        data: &mut [u8],
        encrypt: bool,
    ) -> Result<(), SectorError> {
        let step = (self.unit / 512).max(1) as u64;
        let per_chunk = (CHUNK / self.unit).max(1) * self.unit;
        let mut tweaks = vec![0u8; per_chunk.min(data.len())];
        let mut result = Ok(());
        for (c, chunk) in data.chunks_mut(per_chunk).enumerate() {
            let first = iv_sector.wrapping_add((c * per_chunk / self.unit) as u64 * step);
            result = self.chunk(
                lane,
                first,
                step,
                chunk,
                &mut tweaks[..chunk.len()],
                encrypt,
            );
            if result.is_err() {
                break;
            }
        }
        tweaks.zeroize();
        result
    }

    fn chunk(
        &self,
        lane: &mut Lane,
        first: u64,
        step: u64,
        chunk: &mut [u8],
        tweaks: &mut [u8],
        encrypt: bool,
    ) -> Result<(), SectorError> {
        let n = chunk.len() / self.unit;
        let mut ivs = vec![0u8; n * BLOCK];
        for (i, b) in ivs.chunks_exact_mut(BLOCK).enumerate() {
            b.copy_from_slice(&(first.wrapping_add(i as u64 * step) as u128).to_le_bytes());
        }
        let t0 = ecb(
            &lane.tweak,
            &mut lane.tweak_on,
            self.k2,
            true,
            &ivs,
            "encrypting XTS tweaks under K2",
        )?;
        for (s, tw) in tweaks.chunks_exact_mut(self.unit).enumerate() {
            let mut t = u128::from_le_bytes(t0[s * BLOCK..(s + 1) * BLOCK].try_into().expect("16"));
            for b in tw.chunks_exact_mut(BLOCK) {
                b.copy_from_slice(&t.to_le_bytes());
                // Multiply by α in GF(2^128), little-endian (IEEE P1619).
                t = (t << 1) ^ ((t >> 127) * 0x87);
            }
        }
        let mut t0 = t0;
        t0.zeroize();
        xor(chunk, tweaks);
        let (session, on, what) = if encrypt {
            (&lane.enc, &mut lane.enc_on, "encrypting data under K1")
        } else {
            (&lane.dec, &mut lane.dec_on, "decrypting data under K1")
        };
        let out = ecb(session, on, self.k1, encrypt, chunk, what)?;
        chunk.copy_from_slice(&out);
        xor(chunk, tweaks);
        Ok(())
    }
}

/// One ECB update in a session whose operation is kept open across calls.
fn ecb(
    session: &Session,
    on: &mut bool,
    key: ObjectHandle,
    encrypt: bool,
    data: &[u8],
    what: &str,
) -> Result<Vec<u8>, SectorError> {
    if !*on {
        let r = if encrypt {
            session.encrypt_init(&Mechanism::AesEcb, key)
        } else {
            session.decrypt_init(&Mechanism::AesEcb, key)
        };
        r.map_err(|e| provider_err(what, e))?;
        *on = true;
    }
    let r = if encrypt {
        session.encrypt_update(data)
    } else {
        session.decrypt_update(data)
    };
    match r {
        Ok(out) if out.len() == data.len() => Ok(out),
        Ok(out) => {
            // ECB must be length-preserving; anything else leaves the
            // operation in an unknown state: start it again next time.
            *on = false;
            Err(SectorError::Provider(format!(
                "pkcs11 provider: {what}: the token returned {} bytes for {}",
                out.len(),
                data.len()
            )))
        }
        Err(e) => {
            // A failed update ends the operation (PKCS#11 §5.2).
            *on = false;
            Err(provider_err(what, e))
        }
    }
}

fn xor(a: &mut [u8], b: &[u8]) {
    for (x, y) in a.chunks_exact_mut(BLOCK).zip(b.chunks_exact(BLOCK)) {
        let v = u128::from_ne_bytes(x[..].try_into().expect("16"))
            ^ u128::from_ne_bytes(y.try_into().expect("16"));
        x.copy_from_slice(&v.to_ne_bytes());
    }
}

fn poisoned<T>(_: T) -> SectorError {
    SectorError::Provider(
        "pkcs11 provider: a worker panicked while holding the session pool".into(),
    )
}

impl SectorCipher for TokenXts {
    fn sector_size(&self) -> usize {
        self.unit
    }

    fn encrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.run(iv_sector, data, true)
    }

    fn decrypt(&self, iv_sector: u64, data: &mut [u8]) -> Result<(), SectorError> {
        self.run(iv_sector, data, false)
    }
}

impl Drop for TokenXts {
    fn drop(&mut self) {
        // Close the lanes first (their operations reference the keys), then
        // destroy the keys; closing the owner would destroy them anyway.
        if let Ok(mut l) = self.lanes.lock() {
            l.clear();
        }
        if let Ok(mut o) = self.owner.lock() {
            if let Some(s) = o.take() {
                let _ = s.destroy_object(self.k1);
                let _ = s.destroy_object(self.k2);
            }
        }
    }
}
