//! The provider protocol codec (docs/provider-protocol.md), shared by the
//! custodian client, the daemon and external providers. Sans-I/O: bodies
//! are encoded to and decoded from byte slices; [`crate::transport`] frames them.

use wrapcrypt_secret::SecretBytes;

use crate::error::ErrorCode;
use crate::types::{
    KeyAlgorithm, KeySpec, KeyState, KeyStatus, KmipRegister, KmipStatus, MasterKeyStatus,
    Protection, Register, RegisterStatus, RewrapDirection,
};

/// Highest protocol version this crate speaks (2: version 1 plus the
/// shared-memory request ring, ATTACH_SHM and START_RING).
pub const PROTOCOL_VERSION: u16 = 2;
/// First version with ATTACH_SHM and START_RING (docs/provider-protocol.md §3a).
pub const RING_VERSION: u16 = 2;
/// Lowest protocol version this crate speaks.
pub const PROTOCOL_MIN_VERSION: u16 = 1;
/// Largest frame body.
pub const MAX_FRAME: usize = 65536;

/// Operation codes.
#[allow(missing_docs)]
pub mod op {
    pub const HELLO: u16 = 0x0001;
    pub const GENERATE: u16 = 0x0010;
    pub const IMPORT: u16 = 0x0011;
    pub const VALIDATE: u16 = 0x0012;
    pub const VERIFICATION_PATTERN: u16 = 0x0013;
    pub const REWRAP: u16 = 0x0014;
    pub const OPEN_SESSION: u16 = 0x0020;
    pub const CRYPT: u16 = 0x0021;
    pub const CLOSE_SESSION: u16 = 0x0022;
    pub const ATTACH_SHM: u16 = 0x0023;
    pub const START_RING: u16 = 0x0024;
    pub const STATUS: u16 = 0x0030;
    pub const INIT: u16 = 0x0031;
    pub const LOAD_NEW_MASTER_KEY: u16 = 0x0032;
    pub const SET_MASTER_KEY: u16 = 0x0033;
    pub const KMIP_STATUS: u16 = 0x0034;
    pub const STAGE_KMIP_KEY: u16 = 0x0035;
}

/// Direction of a CRYPT request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptOp {
    /// Encrypt in place.
    Encrypt,
    /// Decrypt in place.
    Decrypt,
}

/// A request body.
#[derive(Debug)]
#[non_exhaustive]
pub enum Request {
    /// Version negotiation; first request on every connection.
    Hello {
        /// lowest version the client speaks
        min: u16,
        /// highest version the client speaks
        max: u16,
    },
    /// Generate a key inside the provider.
    Generate(KeySpec),
    /// Wrap a clear key.
    Import(KeySpec, SecretBytes),
    /// Report a blob's status.
    Validate(Vec<u8>),
    /// Verification pattern of a blob.
    VerificationPattern(Vec<u8>),
    /// Re-wrap a blob.
    Rewrap(RewrapDirection, Vec<u8>),
    /// Open a sector session; the shared-memory fd travels with it.
    OpenSession {
        /// encoded blob
        wkb: Vec<u8>,
        /// sector size in bytes
        sector_size: u32,
        /// bytes of the shared memory the client maps
        shm_len: u64,
    },
    /// Encrypt or decrypt whole sectors in place in the session's shm.
    Crypt {
        /// session handle
        session: u32,
        /// direction
        op: CryptOp,
        /// IV sector (512-byte units) of the first sector
        iv_sector: u64,
        /// byte offset in the shm
        offset: u64,
        /// byte length
        len: u64,
    },
    /// Close a session.
    CloseSession(u32),
    /// Version 2: map one more memfd into a session (another request
    /// buffer); the fd travels with it. Answered with `Response::Session`
    /// holding the buffer number (1, 2, …; 0 is OPEN_SESSION's memfd).
    AttachShm {
        /// session handle
        session: u32,
        /// bytes of the memfd
        shm_len: u64,
    },
    /// Version 2: serve the session's request ring, a memfd of
    /// `64 × (entries + 1)` bytes that travels with the request.
    StartRing {
        /// session handle
        session: u32,
        /// ring entries (1..=1024)
        entries: u32,
        /// daemon threads serving the ring (1..=4; the daemon may use fewer)
        threads: u8,
        /// µs a ring thread polls for more work before it sleeps (the
        /// daemon caps it at 50)
        spin_us: u16,
    },
    /// Master-key registers and seal (admin).
    Status,
    /// Create the CURRENT master key (admin).
    Init,
    /// Load a random NEW master key (admin).
    LoadNewMasterKey,
    /// NEW → CURRENT → OLD (admin).
    SetMasterKey,
    /// The key-manager objects behind the registers.
    KmipStatus,
    /// Get an existing key-manager object by id into NEW (admin).
    StageKmipKey(String),
}

/// A successful response body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// Negotiated version and who answers.
    Hello {
        /// chosen version
        version: u16,
        /// provider name
        provider: String,
        /// protection of keys in use
        protection: Protection,
    },
    /// An encoded blob.
    Wkb(Vec<u8>),
    /// A blob's status.
    Status(KeyStatus),
    /// A verification pattern (64 hex).
    Vp(String),
    /// A session handle.
    Session(u32),
    /// The master-key registers.
    MasterKeys(MasterKeyStatus),
    /// The key-manager backing of the registers.
    Kmip(KmipStatus),
    /// Done, nothing to return.
    Done,
}

/// A body that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}")]
pub struct DecodeError {
    /// what was malformed
    pub what: &'static str,
}

fn bad(what: &'static str) -> DecodeError {
    DecodeError { what }
}

/// Appends big-endian fields.
#[derive(Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u16(v.len() as u16);
        self.0.extend_from_slice(v);
        self
    }
    fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
}

/// Reads big-endian fields, refusing short or trailing input.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(bad("body (truncated)"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| bad("string (not UTF-8)"))
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(bad("body (trailing bytes)"))
        }
    }
}

fn alg(r: &mut Reader) -> Result<KeySpec, DecodeError> {
    let a = KeyAlgorithm::from_code(r.u16()?).ok_or(bad("key algorithm"))?;
    Ok(KeySpec { algorithm: a })
}

impl Request {
    /// Operation code.
    pub fn opcode(&self) -> u16 {
        match self {
            Request::Hello { .. } => op::HELLO,
            Request::Generate(_) => op::GENERATE,
            Request::Import(..) => op::IMPORT,
            Request::Validate(_) => op::VALIDATE,
            Request::VerificationPattern(_) => op::VERIFICATION_PATTERN,
            Request::Rewrap(..) => op::REWRAP,
            Request::OpenSession { .. } => op::OPEN_SESSION,
            Request::Crypt { .. } => op::CRYPT,
            Request::CloseSession(_) => op::CLOSE_SESSION,
            Request::AttachShm { .. } => op::ATTACH_SHM,
            Request::StartRing { .. } => op::START_RING,
            Request::Status => op::STATUS,
            Request::Init => op::INIT,
            Request::LoadNewMasterKey => op::LOAD_NEW_MASTER_KEY,
            Request::SetMasterKey => op::SET_MASTER_KEY,
            Request::KmipStatus => op::KMIP_STATUS,
            Request::StageKmipKey(_) => op::STAGE_KMIP_KEY,
        }
    }

    /// Whether the request changes master keys (root or the daemon's own uid only).
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Request::Init
                | Request::LoadNewMasterKey
                | Request::SetMasterKey
                | Request::StageKmipKey(_)
        )
    }

    /// The frame body: opcode, status 0, payload. An IMPORT body holds a
    /// clear key; the caller zeroizes it after sending.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u16(self.opcode()).u16(0);
        match self {
            Request::Hello { min, max } => {
                w.u16(*min).u16(*max);
            }
            Request::Generate(s) => {
                w.u16(s.algorithm.code());
            }
            Request::Import(s, k) => {
                w.u16(s.algorithm.code()).bytes(k.expose_secret());
            }
            Request::Validate(b) | Request::VerificationPattern(b) => {
                w.bytes(b);
            }
            Request::Rewrap(d, b) => {
                w.u8(d.code()).bytes(b);
            }
            Request::OpenSession {
                wkb,
                sector_size,
                shm_len,
            } => {
                w.bytes(wkb).u32(*sector_size).u64(*shm_len);
            }
            Request::Crypt {
                session,
                op,
                iv_sector,
                offset,
                len,
            } => {
                let o = match op {
                    CryptOp::Encrypt => 1,
                    CryptOp::Decrypt => 2,
                };
                w.u32(*session).u8(o).u64(*iv_sector).u64(*offset).u64(*len);
            }
            Request::CloseSession(s) => {
                w.u32(*s);
            }
            Request::AttachShm { session, shm_len } => {
                w.u32(*session).u64(*shm_len);
            }
            Request::StartRing {
                session,
                entries,
                threads,
                spin_us,
            } => {
                w.u32(*session).u32(*entries).u8(*threads).u16(*spin_us);
            }
            Request::StageKmipKey(id) => {
                w.str(id);
            }
            Request::Status
            | Request::Init
            | Request::LoadNewMasterKey
            | Request::SetMasterKey
            | Request::KmipStatus => {}
        }
        w.0
    }

    /// Decodes a request body. A clear key goes straight to locked memory.
    pub fn decode(body: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader(body);
        let opcode = r.u16()?;
        if r.u16()? != 0 {
            return Err(bad("request (non-zero status)"));
        }
        let req = match opcode {
            op::HELLO => Request::Hello {
                min: r.u16()?,
                max: r.u16()?,
            },
            op::GENERATE => Request::Generate(alg(&mut r)?),
            op::IMPORT => {
                let s = alg(&mut r)?;
                Request::Import(s, SecretBytes::copy_from(r.bytes()?))
            }
            op::VALIDATE => Request::Validate(r.bytes()?.to_vec()),
            op::VERIFICATION_PATTERN => Request::VerificationPattern(r.bytes()?.to_vec()),
            op::REWRAP => {
                let d = RewrapDirection::from_code(r.u8()?).ok_or(bad("re-wrap direction"))?;
                Request::Rewrap(d, r.bytes()?.to_vec())
            }
            op::OPEN_SESSION => Request::OpenSession {
                wkb: r.bytes()?.to_vec(),
                sector_size: r.u32()?,
                shm_len: r.u64()?,
            },
            op::CRYPT => {
                let session = r.u32()?;
                let op = match r.u8()? {
                    1 => CryptOp::Encrypt,
                    2 => CryptOp::Decrypt,
                    _ => return Err(bad("crypt direction")),
                };
                Request::Crypt {
                    session,
                    op,
                    iv_sector: r.u64()?,
                    offset: r.u64()?,
                    len: r.u64()?,
                }
            }
            op::CLOSE_SESSION => Request::CloseSession(r.u32()?),
            op::ATTACH_SHM => Request::AttachShm {
                session: r.u32()?,
                shm_len: r.u64()?,
            },
            op::START_RING => Request::StartRing {
                session: r.u32()?,
                entries: r.u32()?,
                threads: r.u8()?,
                spin_us: r.u16()?,
            },
            op::STATUS => Request::Status,
            op::INIT => Request::Init,
            op::LOAD_NEW_MASTER_KEY => Request::LoadNewMasterKey,
            op::SET_MASTER_KEY => Request::SetMasterKey,
            op::KMIP_STATUS => Request::KmipStatus,
            op::STAGE_KMIP_KEY => Request::StageKmipKey(r.str()?),
            _ => return Err(bad("request (unknown opcode)")),
        };
        r.end()?;
        Ok(req)
    }
}

/// Encodes an error response for `opcode`.
pub fn encode_error(opcode: u16, code: ErrorCode, message: &str) -> Vec<u8> {
    let mut w = Writer::default();
    w.u16(opcode).u16(code.code()).str(message);
    w.0
}

impl Response {
    /// The frame body answering a request with `opcode`.
    pub fn encode(&self, opcode: u16) -> Vec<u8> {
        let mut w = Writer::default();
        w.u16(opcode).u16(0);
        match self {
            Response::Hello {
                version,
                provider,
                protection,
            } => {
                w.u16(*version).str(provider).u8(protection.code());
            }
            Response::Wkb(b) => {
                w.bytes(b);
            }
            Response::Status(s) => {
                let reason = match &s.state {
                    KeyState::Invalid(r) => r.as_str(),
                    _ => "",
                };
                w.u8(s.state.code())
                    .u8(s.register.map_or(0, Register::code))
                    .str(&s.wrapping_key)
                    .u8(s.protection.code())
                    .str(reason);
            }
            Response::Vp(v) => {
                w.str(v);
            }
            Response::Session(s) => {
                w.u32(*s);
            }
            Response::MasterKeys(m) => {
                w.u8(m.protection.code())
                    .str(&m.seal)
                    .u8(m.registers.len() as u8);
                for r in &m.registers {
                    w.u8(r.register.code())
                        .u8(r.mkvp.is_some() as u8)
                        .str(r.mkvp.as_deref().unwrap_or(""));
                }
            }
            Response::Kmip(k) => {
                w.str(&k.backend)
                    .str(&k.unreachable)
                    .u8(k.registers.len() as u8);
                for r in &k.registers {
                    w.u8(r.register.code())
                        .str(&r.object_id)
                        .str(&r.mkvp)
                        .u8(r.loaded as u8)
                        .str(&r.state)
                        .str(&r.problem);
                }
            }
            Response::Done => {}
        }
        w.0
    }

    /// Decodes a response to a request with `opcode`: `Ok(Err((code,
    /// message)))` is the provider's refusal.
    pub fn decode(
        opcode: u16,
        body: &[u8],
    ) -> Result<Result<Response, (ErrorCode, String)>, DecodeError> {
        let mut r = Reader(body);
        if r.u16()? != opcode {
            return Err(bad("response (opcode does not match the request)"));
        }
        let status = r.u16()?;
        if status != 0 {
            let msg = r.str()?;
            r.end()?;
            return Ok(Err((ErrorCode::from_code(status), msg)));
        }
        let prot = |c: u8| Protection::from_code(c).ok_or(bad("protection"));
        let resp = match opcode {
            op::HELLO => Response::Hello {
                version: r.u16()?,
                provider: r.str()?,
                protection: prot(r.u8()?)?,
            },
            op::GENERATE | op::IMPORT | op::REWRAP => Response::Wkb(r.bytes()?.to_vec()),
            op::VALIDATE => {
                let state = r.u8()?;
                let reg = r.u8()?;
                let wrapping_key = r.str()?;
                let protection = prot(r.u8()?)?;
                let reason = r.str()?;
                let state = match state {
                    1 => KeyState::Current,
                    2 => KeyState::New,
                    3 => KeyState::Old,
                    4 => KeyState::NeedsRewrap,
                    5 => KeyState::Invalid(reason),
                    _ => return Err(bad("key state")),
                };
                let register = match reg {
                    0 => None,
                    c => Some(Register::from_code(c).ok_or(bad("register"))?),
                };
                Response::Status(KeyStatus::new(state, register, wrapping_key, protection))
            }
            op::VERIFICATION_PATTERN => Response::Vp(r.str()?),
            op::OPEN_SESSION | op::ATTACH_SHM => Response::Session(r.u32()?),
            op::STATUS => {
                let protection = prot(r.u8()?)?;
                let seal = r.str()?;
                let n = r.u8()?;
                let mut regs = Vec::new();
                for _ in 0..n {
                    let reg = Register::from_code(r.u8()?).ok_or(bad("register"))?;
                    let present = r.u8()? != 0;
                    let mkvp = r.str()?;
                    regs.push(RegisterStatus::new(reg, present.then_some(mkvp)));
                }
                Response::MasterKeys(MasterKeyStatus::new(regs, seal, protection))
            }
            op::KMIP_STATUS => {
                let backend = r.str()?;
                let unreachable = r.str()?;
                let n = r.u8()?;
                let mut regs = Vec::new();
                for _ in 0..n {
                    let reg = Register::from_code(r.u8()?).ok_or(bad("register"))?;
                    let object_id = r.str()?;
                    let mkvp = r.str()?;
                    let loaded = r.u8()? != 0;
                    let state = r.str()?;
                    let problem = r.str()?;
                    regs.push(KmipRegister::new(
                        reg, object_id, mkvp, loaded, state, problem,
                    ));
                }
                Response::Kmip(KmipStatus::new(backend, unreachable, regs))
            }
            op::CRYPT
            | op::CLOSE_SESSION
            | op::START_RING
            | op::INIT
            | op::LOAD_NEW_MASTER_KEY
            | op::SET_MASTER_KEY
            | op::STAGE_KMIP_KEY => Response::Done,
            _ => return Err(bad("response (unknown opcode)")),
        };
        r.end()?;
        Ok(Ok(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors printed in docs/provider-protocol.md §6.
    #[test]
    fn documented_vectors() {
        let hello = Request::Hello { min: 1, max: 1 }.encode();
        assert_eq!(hex::encode(&hello), "0001000000010001");
        let crypt = Request::Crypt {
            session: 1,
            op: CryptOp::Encrypt,
            iv_sector: 8,
            offset: 0,
            len: 4096,
        }
        .encode();
        assert_eq!(
            hex::encode(&crypt),
            "002100000000000101000000000000000800000000000000000000000000001000"
        );
        let err = encode_error(op::OPEN_SESSION, ErrorCode::UnknownWrappingKey, "gone");
        assert_eq!(hex::encode(&err), "002000060004676f6e65");
        let attach = Request::AttachShm {
            session: 1,
            shm_len: 0x40000,
        }
        .encode();
        assert_eq!(hex::encode(&attach), "00230000000000010000000000040000");
        let ring = Request::StartRing {
            session: 1,
            entries: 64,
            threads: 2,
            spin_us: 30,
        }
        .encode();
        assert_eq!(hex::encode(&ring), "00240000000000010000004002001e");
        let r = Response::Hello {
            version: 1,
            provider: "custodian".into(),
            protection: Protection::SeparateProcess,
        };
        let b = r.encode(op::HELLO);
        assert_eq!(hex::encode(&b), "0001000000010009637573746f6469616e02");
        assert_eq!(Response::decode(op::HELLO, &b).unwrap().unwrap(), r);
    }

    #[test]
    fn every_request_roundtrips() {
        let reqs = vec![
            Request::Hello { min: 1, max: 3 },
            Request::Generate(KeySpec::aes_256_xts()),
            Request::Import(KeySpec::aes_256_xts(), SecretBytes::copy_from(&[9; 64])),
            Request::Validate(vec![1, 2]),
            Request::VerificationPattern(vec![3]),
            Request::Rewrap(RewrapDirection::FromOld, vec![4]),
            Request::OpenSession {
                wkb: vec![5; 256],
                sector_size: 4096,
                shm_len: 1 << 20,
            },
            Request::CloseSession(7),
            Request::AttachShm {
                session: 1,
                shm_len: 4096,
            },
            Request::StartRing {
                session: 1,
                entries: 64,
                threads: 2,
                spin_us: 30,
            },
            Request::Status,
            Request::Init,
            Request::LoadNewMasterKey,
            Request::SetMasterKey,
            Request::KmipStatus,
            Request::StageKmipKey("42".into()),
        ];
        for q in reqs {
            let e = q.encode();
            let d = Request::decode(&e).unwrap();
            assert_eq!(d.encode(), e, "{q:?}");
            assert!(Request::decode(&e[..e.len() - 1]).is_err() || e.len() == 4);
            let mut long = e.clone();
            long.push(0);
            assert!(Request::decode(&long).is_err());
        }
    }

    #[test]
    fn responses_roundtrip() {
        let st = Response::Status(KeyStatus::new(
            KeyState::Invalid("gone".into()),
            None,
            "mkvp:00".into(),
            Protection::SeparateProcess,
        ));
        let b = st.encode(op::VALIDATE);
        assert_eq!(Response::decode(op::VALIDATE, &b).unwrap().unwrap(), st);
        assert!(Response::decode(op::VERIFICATION_PATTERN, &b).is_err());
        let mk = Response::MasterKeys(MasterKeyStatus::new(
            vec![
                RegisterStatus::new(Register::New, None),
                RegisterStatus::new(Register::Current, Some("ab".into())),
            ],
            "file".into(),
            Protection::SeparateProcess,
        ));
        let b = mk.encode(op::STATUS);
        assert_eq!(Response::decode(op::STATUS, &b).unwrap().unwrap(), mk);
        let k = Response::Kmip(KmipStatus::new(
            "127.0.0.1:5696 group web".into(),
            String::new(),
            vec![KmipRegister::new(
                Register::Current,
                "7".into(),
                "ab".into(),
                true,
                "Active".into(),
                String::new(),
            )],
        ));
        let b = k.encode(op::KMIP_STATUS);
        assert_eq!(Response::decode(op::KMIP_STATUS, &b).unwrap().unwrap(), k);
        let e = encode_error(op::STATUS, ErrorCode::PermissionDenied, "no");
        assert_eq!(
            Response::decode(op::STATUS, &e).unwrap().unwrap_err(),
            (ErrorCode::PermissionDenied, "no".to_string())
        );
    }
}
