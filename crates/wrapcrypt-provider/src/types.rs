//! Plain value types shared by the trait, the codecs and the daemon.

use std::fmt;

/// Where the effective key lives while it is in use, reported honestly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protection {
    /// Inside hardware (HSM, TPM, CPU firmware); no process ever holds it.
    Hardware,
    /// In another, hardened process (the custodian); never in this one.
    SeparateProcess,
    /// In this process's locked, non-dumpable memory.
    InProcess,
}

impl Protection {
    /// Wire code (docs/provider-protocol.md).
    pub fn code(self) -> u8 {
        match self {
            Protection::Hardware => 1,
            Protection::SeparateProcess => 2,
            Protection::InProcess => 3,
        }
    }

    /// From a wire code.
    pub fn from_code(c: u8) -> Option<Protection> {
        match c {
            1 => Some(Protection::Hardware),
            2 => Some(Protection::SeparateProcess),
            3 => Some(Protection::InProcess),
            _ => None,
        }
    }
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protection::Hardware => "hardware",
            Protection::SeparateProcess => "separate-process",
            Protection::InProcess => "in-process",
        })
    }
}

/// Algorithm of the effective key a blob wraps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// AES-256 in XTS mode: two AES-256 keys, 64 bytes.
    Aes256Xts,
}

impl KeyAlgorithm {
    /// Wire / WKB code.
    pub fn code(self) -> u16 {
        match self {
            KeyAlgorithm::Aes256Xts => 0x0001,
        }
    }

    /// From a wire / WKB code.
    pub fn from_code(c: u16) -> Option<KeyAlgorithm> {
        match c {
            0x0001 => Some(KeyAlgorithm::Aes256Xts),
            _ => None,
        }
    }

    /// Length of the effective key in bytes.
    pub fn key_len(self) -> usize {
        match self {
            KeyAlgorithm::Aes256Xts => 64,
        }
    }

    /// The dm-crypt style cipher name of the effective key.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::Aes256Xts => "aes-256-xts",
        }
    }
}

/// What key to generate or import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeySpec {
    /// Algorithm and size of the effective key.
    pub algorithm: KeyAlgorithm,
}

impl KeySpec {
    /// A spec for `algorithm`.
    pub fn new(algorithm: KeyAlgorithm) -> KeySpec {
        KeySpec { algorithm }
    }

    /// AES-256-XTS (64-byte effective key), the `waes-xts-plain64` key.
    pub fn aes_256_xts() -> KeySpec {
        KeySpec {
            algorithm: KeyAlgorithm::Aes256Xts,
        }
    }
}

/// A master-key register of the custodian (as in a CCA coprocessor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Register {
    /// Loaded but not yet in use; re-wraps `--to-new` target it.
    New,
    /// Wraps every newly generated or imported key.
    Current,
    /// The previous CURRENT; its blobs still open until the next change.
    Old,
}

impl Register {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            Register::New => 1,
            Register::Current => 2,
            Register::Old => 3,
        }
    }

    /// From a wire code.
    pub fn from_code(c: u8) -> Option<Register> {
        match c {
            1 => Some(Register::New),
            2 => Some(Register::Current),
            3 => Some(Register::Old),
            _ => None,
        }
    }
}

impl fmt::Display for Register {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Register::New => "NEW",
            Register::Current => "CURRENT",
            Register::Old => "OLD",
        })
    }
}

/// Direction of a re-wrap, as in zkey's `reencipher`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewrapDirection {
    /// From the CURRENT wrapping key to the NEW one (before a master-key change).
    ToNew,
    /// From the OLD wrapping key to the CURRENT one (after a master-key change).
    FromOld,
}

impl RewrapDirection {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            RewrapDirection::ToNew => 1,
            RewrapDirection::FromOld => 2,
        }
    }

    /// From a wire code.
    pub fn from_code(c: u8) -> Option<RewrapDirection> {
        match c {
            1 => Some(RewrapDirection::ToNew),
            2 => Some(RewrapDirection::FromOld),
            _ => None,
        }
    }
}

/// Where a blob stands with respect to the provider's wrapping keys.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyState {
    /// Wrapped under the current wrapping key.
    Current,
    /// Wrapped under the NEW register (a staged re-wrap); current after the
    /// next master-key change.
    New,
    /// Wrapped under the OLD register: usable, but lost at the next
    /// master-key change unless re-wrapped `--from-old`.
    Old,
    /// Usable, but the provider asks for a re-wrap (deprecated mechanism,
    /// wrapping key scheduled for rotation).
    NeedsRewrap,
    /// Not usable with this provider; the reason says why.
    Invalid(String),
}

impl KeyState {
    /// Wire code.
    pub fn code(&self) -> u8 {
        match self {
            KeyState::Current => 1,
            KeyState::New => 2,
            KeyState::Old => 3,
            KeyState::NeedsRewrap => 4,
            KeyState::Invalid(_) => 5,
        }
    }

    /// Whether the blob can be opened now.
    pub fn is_usable(&self) -> bool {
        !matches!(self, KeyState::Invalid(_))
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyState::Current => f.write_str("current"),
            KeyState::New => f.write_str("new"),
            KeyState::Old => f.write_str("old"),
            KeyState::NeedsRewrap => f.write_str("needs re-wrap"),
            KeyState::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

/// Result of [`crate::KeyProvider::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyStatus {
    /// Current, old, needs re-wrap or invalid.
    pub state: KeyState,
    /// Register holding the wrapping key, for register-based providers.
    pub register: Option<Register>,
    /// Wrapping-key identity in text (master-key VP hex, PKCS#11 id/label).
    pub wrapping_key: String,
    /// Where the effective key lives while in use.
    pub protection: Protection,
}

impl KeyStatus {
    /// A status value (for provider implementations).
    pub fn new(
        state: KeyState,
        register: Option<Register>,
        wrapping_key: String,
        protection: Protection,
    ) -> KeyStatus {
        KeyStatus {
            state,
            register,
            wrapping_key,
            protection,
        }
    }
}

/// One master-key register as `status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegisterStatus {
    /// Which register.
    pub register: Register,
    /// Its master-key verification pattern (hex), if loaded.
    pub mkvp: Option<String>,
}

/// The custodian's `status`: its registers and how they are sealed at rest.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MasterKeyStatus {
    /// NEW, CURRENT, OLD in this order.
    pub registers: Vec<RegisterStatus>,
    /// How the registers are sealed at rest (`tpm2 …` or `file …`).
    pub seal: String,
    /// Where volume keys live while in use.
    pub protection: Protection,
}

impl MasterKeyStatus {
    /// A status value (for the daemon).
    pub fn new(registers: Vec<RegisterStatus>, seal: String, protection: Protection) -> Self {
        MasterKeyStatus {
            registers,
            seal,
            protection,
        }
    }

    /// The MKVP in `register`, if loaded.
    pub fn mkvp(&self, register: Register) -> Option<&str> {
        self.registers
            .iter()
            .find(|r| r.register == register)
            .and_then(|r| r.mkvp.as_deref())
    }
}

impl RegisterStatus {
    /// A register status value.
    pub fn new(register: Register, mkvp: Option<String>) -> Self {
        RegisterStatus { register, mkvp }
    }
}

/// One register's key-manager backing, as KMIP_STATUS reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KmipRegister {
    /// Which register.
    pub register: Register,
    /// The KMIP Unique Identifier backing it (empty: not a KMIP key).
    pub object_id: String,
    /// Its master-key verification pattern (hex), empty if the register is empty.
    pub mkvp: String,
    /// Whether the custodian holds the key in memory now.
    pub loaded: bool,
    /// The object's KMIP State (`Active`, `Deactivated`, …), empty if unknown.
    pub state: String,
    /// One line saying why the register cannot wrap or serve, empty if fine.
    pub problem: String,
}

/// The custodian's key-manager backend and the objects behind its registers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KmipStatus {
    /// `host:port group G`, or empty when no key manager is configured.
    pub backend: String,
    /// Empty when the key manager answered just now, else why it did not.
    pub unreachable: String,
    /// NEW, CURRENT, OLD in this order.
    pub registers: Vec<KmipRegister>,
}

impl KmipRegister {
    /// A register value (for the daemon and the codec).
    pub fn new(
        register: Register,
        object_id: String,
        mkvp: String,
        loaded: bool,
        state: String,
        problem: String,
    ) -> Self {
        KmipRegister {
            register,
            object_id,
            mkvp,
            loaded,
            state,
            problem,
        }
    }
}

impl KmipStatus {
    /// A status value (for the daemon and the codec).
    pub fn new(backend: String, unreachable: String, registers: Vec<KmipRegister>) -> Self {
        KmipStatus {
            backend,
            unreachable,
            registers,
        }
    }

    /// The KMIP object id behind `register`, if it is KMIP-backed.
    pub fn object_id(&self, register: Register) -> Option<&str> {
        self.registers
            .iter()
            .find(|r| r.register == register)
            .map(|r| r.object_id.as_str())
            .filter(|s| !s.is_empty())
    }
}
